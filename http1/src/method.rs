//! Request methods, as far as a proxy cares.

/// The methods RFC 9110 calls safe (9.2.1): a proxy may send one again, without the
/// client's consent, when a connection broke before any answer. The one list of them.
pub const SAFE: [&str; 4] = ["GET", "HEAD", "OPTIONS", "TRACE"];

/// Whether `method` (as sent: methods are case-sensitive) is one of [`SAFE`].
pub fn is_safe(method: &str) -> bool {
    SAFE.contains(&method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_methods() {
        for m in SAFE {
            assert!(is_safe(m), "{m}");
        }
        // Unsafe methods, and a safe one in the wrong case (a different method).
        for m in ["POST", "PUT", "DELETE", "PATCH", "CONNECT", "get", "Head"] {
            assert!(!is_safe(m), "{m}");
        }
        assert!(is_safe(http::Method::GET.as_str()));
        assert!(!is_safe(http::Method::POST.as_str()));
    }
}
