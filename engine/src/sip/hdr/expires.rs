//! `delta-seconds` values: Expires (RFC 3261 §20.19), Min-Expires (§20.23), and the Contact
//! `expires` parameter (§20.10).

use super::HeaderError;

/// Parses `delta-seconds = 1*DIGIT`.
///
/// Values above 2^32-1 (the range §20.19 gives) saturate at `u32::MAX` instead of failing:
/// RFC 4475 §3.1.2.4 lets the element choose, and the registrar caps any expiry at its own
/// maximum anyway, so an overlarge request simply gets the longest registration allowed.
pub fn parse_delta_seconds(v: &[u8]) -> Option<u32> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &c in v {
        n = n * 10 + u64::from(c - b'0');
        if n > u64::from(u32::MAX) {
            return Some(u32::MAX);
        }
    }
    u32::try_from(n).ok()
}

/// [`parse_delta_seconds`] for a whole header value; errors name `header`.
pub fn parse_expires(v: &[u8], header: &'static str) -> Result<u32, HeaderError> {
    parse_delta_seconds(v).ok_or(HeaderError::Malformed(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_seconds() {
        assert_eq!(parse_delta_seconds(b"3600"), Some(3600));
        assert_eq!(parse_delta_seconds(b"0"), Some(0));
        assert_eq!(parse_delta_seconds(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_delta_seconds(b"4294967296"), Some(u32::MAX));
        assert_eq!(parse_delta_seconds(&[b'1'; 100]), Some(u32::MAX));
        assert_eq!(parse_delta_seconds(b""), None);
        assert_eq!(parse_delta_seconds(b"3600s"), None);
        assert_eq!(parse_delta_seconds(b"Thu, 01 Dec 1994 16:00:00 GMT"), None);
        assert_eq!(
            parse_expires(b"x", "Expires"),
            Err(HeaderError::Malformed("Expires"))
        );
    }
}
