//! The Max-Forwards header (RFC 3261 §20.22, §8.1.1.6).

use super::HeaderError;

/// Parses `Max-Forwards: 1*DIGIT`. Leading zeros are allowed (RFC 4475 §3.1.1.1).
///
/// The grammar has no upper bound but §20.22 calls it an integer in the range 0-255, and
/// every sender starts at 70; a larger value is treated as malformed (400) rather than
/// clamped, so that a broken sender is told (RFC 4475 §3.1.2.4 allows either).
pub fn parse_max_forwards(v: &[u8]) -> Result<u8, HeaderError> {
    const E: HeaderError = HeaderError::Malformed("Max-Forwards");
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(E);
    }
    let mut n: u32 = 0;
    for &c in v {
        n = n * 10 + u32::from(c - b'0');
        if n > 255 {
            return Err(E);
        }
    }
    u8::try_from(n).map_err(|_| E)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_forwards_range() {
        assert_eq!(parse_max_forwards(b"70"), Ok(70));
        assert_eq!(parse_max_forwards(b"0068"), Ok(68));
        assert_eq!(parse_max_forwards(b"0"), Ok(0));
        assert_eq!(parse_max_forwards(b"255"), Ok(255));
        assert_eq!(parse_max_forwards(b"000000000000000000000255"), Ok(255));
        assert!(parse_max_forwards(b"256").is_err());
        assert!(parse_max_forwards(b"300").is_err());
        assert!(parse_max_forwards(b"99999999999999999999999").is_err());
        assert!(parse_max_forwards(b"").is_err());
        assert!(parse_max_forwards(b"-1").is_err());
        assert!(parse_max_forwards(b"7 0").is_err());
    }
}
