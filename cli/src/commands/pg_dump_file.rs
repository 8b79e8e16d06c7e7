//! The header of a `pg_dump -Fc` (custom format) archive: what `flynn pg restore` reads
//! before it sends a byte to the cluster, to refuse a file that is no dump, or a dump made
//! by another major version of PostgreSQL than the app's database runs.
//!
//! The layout is pg_dump's `WriteHead` (src/bin/pg_dump/pg_backup_archiver.c): the magic
//! `PGDMP`, the archive version (major, minor, revision bytes), the sizes of ints and
//! offsets, the format (1 = custom), the compression (an int up to archive 1.14, a byte from
//! 1.15, PostgreSQL 16), the creation time (7 ints), then strings: the database name, the
//! server's version and pg_dump's own. An int is a sign byte and `intSize` bytes, least
//! significant first; a string is its length as an int (-1: none) and its bytes.

/// The first bytes of every custom-format dump.
pub const MAGIC: &[u8] = b"PGDMP";

/// How much of a file [`parse`] may need (the header is far smaller).
pub const HEADER_MAX: usize = 4096;

/// What a dump's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The archive format version, e.g. (1, 14, 0) from PostgreSQL 15's pg_dump.
    pub archive: (u8, u8, u8),
    /// The database the dump was made from.
    pub database: Option<String>,
    /// The version of the server it was dumped from (`15.18 (Debian 15.18-0+deb12u1)`).
    pub server_version: Option<String>,
    /// The version of the pg_dump that made it (`15.18 (Debian 15.18-0+deb12u1)`).
    pub dump_version: Option<String>,
}

impl Header {
    /// The major version of the pg_dump that made the dump (16, or 906 for 9.6), from its
    /// version string.
    pub fn dump_major(&self) -> Option<u32> {
        self.dump_version.as_deref().and_then(major_of_version)
    }
}

/// Why a file is not a readable custom-format dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("it is not a custom-format PostgreSQL dump (no PGDMP at its start)")]
    NotADump,
    #[error("its dump header is cut short")]
    Truncated,
    #[error("it is a dump in pg_dump's {0} format, not the custom format")]
    OtherFormat(&'static str),
    #[error("its dump header is malformed ({0})")]
    Malformed(&'static str),
}

/// The major version of a PostgreSQL version string: `16.2` → 16, `9.6.24` → 906,
/// `17devel` → 17 (as `server_version_num / 10000`, or `/ 100` before 10).
pub fn major_of_version(version: &str) -> Option<u32> {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let first: u32 = parts.next()?.parse().ok()?;
    if first >= 10 {
        Some(first)
    } else {
        let second: u32 = parts.next()?.parse().ok()?;
        Some(first * 100 + second)
    }
}

/// The major version from `server_version_num` (`150018` → 15, `90624` → 906).
pub fn major_of_version_num(num: u32) -> u32 {
    if num >= 100_000 {
        num / 10_000
    } else {
        num / 100
    }
}

/// A major version as people write it: 15, or 9.6.
pub fn display_major(major: u32) -> String {
    // 9.6 is kept as 906: majors from 10 on are far below 100.
    if major < 100 {
        major.to_string()
    } else {
        format!("{}.{}", major / 100, major % 100)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    int_size: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, HeaderError> {
        let b = *self.bytes.get(self.at).ok_or(HeaderError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn int(&mut self) -> Result<i64, HeaderError> {
        let negative = self.byte()? != 0;
        let mut value: i64 = 0;
        for i in 0..self.int_size {
            let b = i64::from(self.byte()?);
            if i < 8 {
                value |= b << (8 * i);
            }
        }
        Ok(if negative { -value } else { value })
    }

    fn string(&mut self) -> Result<Option<String>, HeaderError> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| HeaderError::Malformed("string length"))?;
        if len > HEADER_MAX {
            return Err(HeaderError::Malformed("string length"));
        }
        let end = self.at + len;
        let s = self.bytes.get(self.at..end).ok_or(HeaderError::Truncated)?;
        self.at = end;
        Ok(Some(String::from_utf8_lossy(s).into_owned()))
    }
}

/// Reads the header from the start of a file (pass up to [`HEADER_MAX`] bytes).
pub fn parse(bytes: &[u8]) -> Result<Header, HeaderError> {
    if bytes.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(bytes) && !bytes.is_empty() {
            HeaderError::Truncated
        } else {
            HeaderError::NotADump
        });
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(HeaderError::NotADump);
    }
    let mut r = Reader {
        bytes,
        at: MAGIC.len(),
        int_size: 4,
    };
    let major = r.byte()?;
    let minor = r.byte()?;
    let revision = if major > 1 || (major == 1 && minor > 0) {
        r.byte()?
    } else {
        0
    };
    let version = (major, minor, revision);
    r.int_size = usize::from(r.byte()?);
    if r.int_size == 0 || r.int_size > 32 {
        return Err(HeaderError::Malformed("integer size"));
    }
    if version >= (1, 7, 0) {
        let _offset_size = r.byte()?;
    }
    match r.byte()? {
        1 => {}
        3 => return Err(HeaderError::OtherFormat("tar")),
        5 => return Err(HeaderError::OtherFormat("directory")),
        _ => return Err(HeaderError::Malformed("format")),
    }
    if version >= (1, 15, 0) {
        let _algorithm = r.byte()?;
    } else if version >= (1, 4, 0) {
        let _level = r.int()?;
    } else if version >= (1, 2, 0) {
        let _level = r.byte()?;
    }
    let mut header = Header {
        archive: version,
        database: None,
        server_version: None,
        dump_version: None,
    };
    if version >= (1, 4, 0) {
        for _ in 0..7 {
            r.int()?; // the creation time: sec, min, hour, mday, mon, year, isdst
        }
        header.database = r.string()?;
    }
    if version >= (1, 10, 0) {
        header.server_version = r.string()?;
        header.dump_version = r.string()?;
    }
    Ok(header)
}

/// Writes a header as pg_dump does (for tests: crafted dumps of other versions).
#[cfg(test)]
pub fn write(header: &Header) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let (major, minor, revision) = header.archive;
    out.extend([major, minor, revision, 4, 8, 1]);
    let int = |out: &mut Vec<u8>, v: i64| {
        out.push(u8::from(v < 0));
        out.extend((v.unsigned_abs() as u32).to_le_bytes());
    };
    if header.archive >= (1, 15, 0) {
        out.push(0);
    } else {
        int(&mut out, -1);
    }
    for v in [5, 4, 3, 2, 0, 126, 0] {
        int(&mut out, v);
    }
    for s in [
        &header.database,
        &header.server_version,
        &header.dump_version,
    ] {
        match s {
            Some(s) => {
                int(&mut out, s.len() as i64);
                out.extend(s.as_bytes());
            }
            None => int(&mut out, -1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of a real dump: `pg_dump -Fc` 15.18 (Debian) of an empty database
    /// `shop` (made with /usr/lib/postgresql/15/bin/pg_dump on the test host).
    const PG15_DUMP_HEAD: &[u8] = include_bytes!("../../tests/fixtures/pg15-empty.dump");

    #[test]
    fn a_real_postgres_15_dump_is_read() {
        let h = parse(PG15_DUMP_HEAD).unwrap();
        assert_eq!(h.archive, (1, 14, 0));
        assert_eq!(h.database.as_deref(), Some("shop"));
        assert!(
            h.dump_version.as_deref().unwrap().starts_with("15."),
            "{h:?}"
        );
        assert!(
            h.server_version.as_deref().unwrap().starts_with("15."),
            "{h:?}"
        );
        assert_eq!(h.dump_major(), Some(15));
    }

    #[test]
    fn a_postgres_16_header_is_read_with_its_compression_byte() {
        let h16 = Header {
            archive: (1, 15, 0),
            database: Some("shop".into()),
            server_version: Some("16.2".into()),
            dump_version: Some("16.2".into()),
        };
        assert_eq!(parse(&write(&h16)).unwrap(), h16);
        assert_eq!(parse(&write(&h16)).unwrap().dump_major(), Some(16));
        // The twin in 1.14's layout (an int for the compression) reads as well.
        let h14 = Header {
            archive: (1, 14, 0),
            dump_version: Some("14.10".into()),
            ..h16
        };
        assert_eq!(parse(&write(&h14)).unwrap(), h14);
    }

    #[test]
    fn what_is_not_a_custom_dump_is_refused() {
        assert_eq!(
            parse(b"--\n-- PostgreSQL database dump\n"),
            Err(HeaderError::NotADump)
        );
        assert_eq!(parse(b""), Err(HeaderError::NotADump));
        assert_eq!(parse(b"PGD"), Err(HeaderError::Truncated));
        assert_eq!(parse(&PG15_DUMP_HEAD[..20]), Err(HeaderError::Truncated));
        let mut tar = PG15_DUMP_HEAD.to_vec();
        tar[10] = 3;
        assert_eq!(parse(&tar), Err(HeaderError::OtherFormat("tar")));
    }

    #[test]
    fn major_versions_read_like_postgres() {
        assert_eq!(major_of_version("15.18 (Debian 15.18-0+deb12u1)"), Some(15));
        assert_eq!(major_of_version("9.6.24"), Some(906));
        assert_eq!(major_of_version("17devel"), Some(17));
        assert_eq!(major_of_version("x"), None);
        assert_eq!(major_of_version_num(150018), 15);
        assert_eq!(major_of_version_num(90624), 906);
        assert_eq!(display_major(906), "9.6");
        assert_eq!(display_major(16), "16");
    }
}
