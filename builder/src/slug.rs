//! Slugs: gzip'd tarballs of the built app directory, entries relative to it (`./Procfile`),
//! the layout Flynn, Deis and herokuish use, unpacked into `/app`.
//!
//! Both directions stream and hash on the way, so a slug is never held in memory and never
//! read twice.

use std::{
    fs::{self, File},
    io::{self, BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use flate2::{Compression, read::GzDecoder, write::GzEncoder};

use crate::digest::{HashingReader, HashingWriter};

/// Heroku's limit on a compressed slug.
pub const DEFAULT_MAX_SIZE: u64 = 500 * 1024 * 1024;

/// Directories never packed into a slug: the app's git metadata is not part of the app.
const EXCLUDED_TOP_LEVEL: &[&str] = &[".git"];

/// What was packed or unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlugInfo {
    /// SHA-256 of the compressed tarball, lower-case hex.
    pub sha256: String,
    /// Size of the compressed tarball in bytes.
    pub size: u64,
}

/// Packing or unpacking a slug failed.
#[derive(Debug, thiserror::Error)]
pub enum SlugError {
    /// The filesystem failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// To what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The slug is not a gzip'd tarball, or is truncated.
    #[error(
        "the slug is corrupt ({0}): it must be a gzip'd tarball; rebuild the app, or check that SLUG_URL points at a slug"
    )]
    Corrupt(String),
    /// The slug's SHA-256 differs from the one the release recorded.
    #[error(
        "the slug's sha256 is {actual}, but {expected} was expected: it was changed or damaged in the store; rebuild the app or fix SLUG_SHA256"
    )]
    ChecksumMismatch {
        /// What the release says.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The compressed slug exceeds the limit.
    #[error(
        "compiled slug size is {}, over the limit of {}: remove build artifacts with a .slugignore or raise the limit (--max-slug-size)",
        crate::output::human_size(*.size),
        crate::output::human_size(*.max)
    )]
    TooLarge {
        /// The slug's size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SlugError {
    let path = path.to_owned();
    move |source| SlugError::Io {
        action,
        path,
        source,
    }
}

/// Packs `dir` into the gzip'd tarball `out`, refusing results over `max_size` bytes.
/// Blocking: call from `spawn_blocking` in async code.
pub fn pack(dir: &Path, out: &Path, max_size: u64) -> Result<SlugInfo, SlugError> {
    let file = File::create(out).map_err(io_err("creating", out))?;
    let gz = GzEncoder::new(
        HashingWriter::new(BufWriter::new(file)),
        Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    append_tree(&mut tar, dir, Path::new("."), true)?;
    let gz = tar.into_inner().map_err(io_err("writing", out))?;
    let hashing = gz.finish().map_err(io_err("writing", out))?;
    let (mut buf, hash) = hashing.into_parts();
    buf.flush().map_err(io_err("writing", out))?;
    let size = hash.len();
    if size > max_size {
        return Err(SlugError::TooLarge {
            size,
            max: max_size,
        });
    }
    Ok(SlugInfo {
        sha256: hash.finish_hex(),
        size,
    })
}

fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
    top: bool,
) -> Result<(), SlugError> {
    if !top {
        tar.append_path_with_name(dir, name)
            .map_err(io_err("packing", dir))?;
    }
    // Sorted, so the same tree gives the same entry order.
    let mut entries = fs::read_dir(dir)
        .map_err(io_err("reading", dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err("reading", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let file_name = entry.file_name();
        if top && EXCLUDED_TOP_LEVEL.iter().any(|x| file_name == *x) {
            continue;
        }
        let path = entry.path();
        let rel = name.join(&file_name);
        let ty = entry.file_type().map_err(io_err("reading", &path))?;
        if ty.is_dir() {
            append_tree(tar, &path, &rel, false)?;
        } else {
            tar.append_path_with_name(&path, &rel)
                .map_err(io_err("packing", &path))?;
        }
    }
    Ok(())
}

/// Unpacks the gzip'd tarball read from `input` into `dest`, and checks its SHA-256 against
/// `expected` when given. Entries cannot escape `dest` (`..` and absolute paths are refused
/// by the tar crate). Blocking.
pub fn unpack(
    input: impl Read,
    dest: &Path,
    expected: Option<&str>,
) -> Result<SlugInfo, SlugError> {
    fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let mut archive = tar::Archive::new(GzDecoder::new(HashingReader::new(input)));
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    archive
        .unpack(dest)
        .map_err(|e| SlugError::Corrupt(e.to_string()))?;
    // The gzip trailer and anything after it count for the checksum too.
    let hash = archive
        .into_inner()
        .into_inner()
        .drain()
        .map_err(|e| SlugError::Corrupt(e.to_string()))?;
    let info = SlugInfo {
        size: hash.len(),
        sha256: hash.finish_hex(),
    };
    if let Some(expected) = expected
        && !expected.eq_ignore_ascii_case(&info.sha256)
    {
        return Err(SlugError::ChecksumMismatch {
            expected: expected.to_owned(),
            actual: info.sha256,
        });
    }
    Ok(info)
}

/// Unpacks an app source tarball into `dest`: gzip'd or plain (what `git archive` writes
/// by default), told apart by the gzip magic bytes. Blocking.
pub fn unpack_source(input: impl Read, dest: &Path) -> Result<(), SlugError> {
    use std::io::BufRead;
    let mut input = io::BufReader::new(input);
    let gzipped = input
        .fill_buf()
        .map_err(|e| SlugError::Corrupt(e.to_string()))?
        .starts_with(&[0x1f, 0x8b]);
    if gzipped {
        return unpack(input, dest, None).map(|_| ());
    }
    fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_unpack_xattrs(false);
    archive
        .unpack(dest)
        .map_err(|e| SlugError::Corrupt(e.to_string()))
}

/// Packs a directory into an in-memory tarball: for source tarballs in tests and tools.
pub fn tar_gz_dir(dir: &Path) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir)?;
    tar.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn pack_then_unpack_keeps_files_modes_and_symlinks_but_not_git() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("bin")).unwrap();
        fs::create_dir_all(src.path().join(".git")).unwrap();
        fs::write(src.path().join(".git/HEAD"), "ref").unwrap();
        fs::write(src.path().join("Procfile"), "web: bin/web\n").unwrap();
        fs::write(src.path().join("bin/web"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            src.path().join("bin/web"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("bin/web", src.path().join("start")).unwrap();

        let out = tempfile::tempdir().unwrap();
        let slug = out.path().join("slug.tgz");
        let info = pack(src.path(), &slug, DEFAULT_MAX_SIZE).unwrap();
        assert_eq!(info.size, fs::metadata(&slug).unwrap().len());

        let dest = out.path().join("app");
        let got = unpack(File::open(&slug).unwrap(), &dest, Some(&info.sha256)).unwrap();
        assert_eq!(got, info);
        assert_eq!(
            fs::read_to_string(dest.join("Procfile")).unwrap(),
            "web: bin/web\n"
        );
        let mode = fs::metadata(dest.join("bin/web"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(dest.join("start")).unwrap(),
            Path::new("bin/web")
        );
        assert!(!dest.join(".git").exists());
    }

    #[test]
    fn a_wrong_checksum_or_garbage_is_refused() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), "a").unwrap();
        let data = tar_gz_dir(src.path()).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(&data[..], dest.path(), Some(&"0".repeat(64))).unwrap_err();
        assert!(matches!(err, SlugError::ChecksumMismatch { .. }), "{err}");
        let err = unpack(&b"not a tarball"[..], dest.path(), None).unwrap_err();
        assert!(matches!(err, SlugError::Corrupt(_)), "{err}");
        let err = unpack(&data[..data.len() / 2], dest.path(), None).unwrap_err();
        assert!(matches!(err, SlugError::Corrupt(_)), "{err}");
    }

    #[test]
    fn sources_may_be_plain_or_gzipped_tarballs() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("app.py"), "print(1)").unwrap();
        let mut plain = tar::Builder::new(Vec::new());
        plain.append_dir_all(".", src.path()).unwrap();
        let plain = plain.into_inner().unwrap();
        for data in [plain, tar_gz_dir(src.path()).unwrap()] {
            let dest = tempfile::tempdir().unwrap();
            unpack_source(&data[..], dest.path()).unwrap();
            assert_eq!(
                fs::read_to_string(dest.path().join("app.py")).unwrap(),
                "print(1)"
            );
        }
        let err = unpack_source(
            &b"\x1f\x8bnot really"[..],
            tempfile::tempdir().unwrap().path(),
        );
        assert!(matches!(err, Err(SlugError::Corrupt(_))));
    }

    #[test]
    fn an_oversized_slug_is_refused_with_both_sizes() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), "some content").unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = pack(src.path(), &out.path().join("s.tgz"), 10).unwrap_err();
        assert!(err.to_string().contains("over the limit of 10 B"), "{err}");
    }
}
