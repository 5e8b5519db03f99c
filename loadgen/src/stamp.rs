//! The send-time stamp a MESSAGE body carries, so that the receiving side (often another
//! process) measures delivery latency: `ts=<µs since the Unix epoch> seq=<n>` on the first
//! line, then padding up to the requested body size.
//!
//! Both ends read the wall clock, so the figure is exact on one machine and as good as NTP
//! between two.

use bytes::{BufMut, Bytes, BytesMut};

/// The body of the `seq`-th message sent at `unix_us`, padded with `.` to `size` bytes (never
/// shorter than the stamp line itself).
pub fn body(unix_us: u64, seq: u64, size: usize) -> Bytes {
    let line = format!("ts={unix_us} seq={seq}\r\n");
    let mut out = BytesMut::with_capacity(size.max(line.len()));
    out.put_slice(line.as_bytes());
    // One fill, not a byte at a time: a 1 MB file body is built per message sent.
    out.resize(size.max(line.len()), b'.');
    out.freeze()
}

/// The stamp of a body: `(send time in µs since the Unix epoch, sequence number)`.
pub fn read(body: &[u8]) -> Option<(u64, u64)> {
    let rest = body.strip_prefix(b"ts=")?;
    let (ts, rest) = number(rest)?;
    let rest = rest.strip_prefix(b" seq=")?;
    let (seq, _) = number(rest)?;
    Some((ts, seq))
}

fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let v = std::str::from_utf8(&s[..n]).ok()?.parse().ok()?;
    Some((v, &s[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let b = body(1_732_600_000_123_456, 42, 200);
        assert_eq!(b.len(), 200);
        assert_eq!(read(&b), Some((1_732_600_000_123_456, 42)));
        // A size smaller than the stamp gives the stamp alone.
        let short = body(7, 1, 3);
        assert_eq!(&short[..], b"ts=7 seq=1\r\n");
        assert_eq!(read(&short), Some((7, 1)));
    }

    #[test]
    fn foreign_bodies_have_no_stamp() {
        assert_eq!(read(b"hello"), None);
        assert_eq!(read(b"ts=abc seq=1"), None);
        assert_eq!(read(b"ts=1 sq=1"), None);
        assert_eq!(read(b"ts=99999999999999999999 seq=1"), None);
        assert_eq!(read(b""), None);
    }
}
