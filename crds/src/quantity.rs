//! Kubernetes resource quantities (`500m`, `1.5`, `512Mi`, `1e3`), read as numbers so
//! clients can check them before the API server or the kubelet refuses them: the schema
//! only checks the spelling, and a request above its limit is refused when the
//! ReplicaSet controller creates the pod, which a user sees as a rollout that never ends.

/// The value of a quantity in base units (cores, bytes), or `None` if `s` is not one. The
/// grammar is the API server's: an optional sign, a decimal number, then a binary suffix
/// (`Ki` .. `Ei`), a decimal one (`n u m k M G T P E`) or an exponent (`e3`, `E-2`).
pub fn parse(s: &str) -> Option<f64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1.0, &s[1..]),
        b'-' => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    let digits_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(digits_end);
    if !is_decimal(number) {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let e = exponent.strip_prefix(['e', 'E'])?;
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if !is_decimal(digits) {
                return None;
            }
            10f64.powf(e.parse().ok()?)
        }
    };
    Some(sign * value * scale)
}

/// `12`, `1.5`, `1.`, `.5`; not `` or `.` or `1.2.3`.
fn is_decimal(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    all_digits(whole)
        && fraction.is_none_or(all_digits)
        && (!whole.is_empty() || fraction.is_some_and(|f| !f.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_what_the_api_server_accepts() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1.5"), Some(1.5));
        assert_eq!(parse(".5"), Some(0.5));
        assert_eq!(parse("1."), Some(1.0));
        assert_eq!(parse("512Mi"), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1Gi"), Some(1024f64.powi(3)));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("128k"), Some(128e3));
        assert_eq!(parse("1e3"), Some(1e3));
        assert_eq!(parse("1E-2"), Some(0.01));
        assert_eq!(parse("+1"), Some(1.0));
        assert_eq!(parse("-1"), Some(-1.0));
        assert!(parse("1Gi").unwrap() > parse("1G").unwrap());
    }

    #[test]
    fn refuses_what_it_refuses() {
        for bad in [
            "", ".", "lots", "1GB", "1 Gi", "1.2.3", "Mi", "1gi", "1e", "1e+", "1K", "--1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
