//! Identifiers and sequence arithmetic: the [`Ssrc`] newtype and [`SeqNo`], the 16-bit RTP
//! sequence number with wrap-aware comparison and extension to 64 bits (RFC 3550 §5.1, A.1).

use std::fmt;

/// A synchronization source identifier (RFC 3550 §3, §5.1 SSRC / CSRC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ssrc(pub u32);

impl From<u32> for Ssrc {
    fn from(v: u32) -> Self {
        Ssrc(v)
    }
}

impl fmt::Display for Ssrc {
    /// Shown as `0x` and eight hex digits, as RTP tools print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// The number of distinct 16-bit sequence numbers (RFC 3550 A.1 `RTP_SEQ_MOD`).
pub const RTP_SEQ_MOD: u64 = 1 << 16;

/// A 16-bit RTP sequence number (RFC 3550 §5.1), compared modulo 2^16: `a` is after `b` when
/// `a - b` (wrapping) is in 1..=32767.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNo(pub u16);

impl SeqNo {
    /// The sequence number `n` packets later (wrapping past 65535 to 0).
    pub fn wrapping_add(self, n: u16) -> SeqNo {
        SeqNo(self.0.wrapping_add(n))
    }

    /// The next sequence number.
    pub fn next(self) -> SeqNo {
        self.wrapping_add(1)
    }

    /// Signed distance from `earlier` to `self` in packets, in -32768..=32767 (the shortest way
    /// round the 2^16 circle).
    pub fn diff(self, earlier: SeqNo) -> i16 {
        self.0.wrapping_sub(earlier.0) as i16
    }

    /// True when `self` comes after `other` in sequence order (modulo 2^16).
    pub fn is_after(self, other: SeqNo) -> bool {
        self.diff(other) > 0
    }

    /// Extends `self` to the 64-bit sequence number nearest to `reference` (an extended sequence
    /// number already seen, e.g. the highest): the RFC 3550 A.1 cycle count made explicit.
    /// Values before the first cycle saturate at the low 16 bits.
    pub fn extend(self, reference: u64) -> u64 {
        let reference_low = SeqNo(reference as u16);
        let delta = i64::from(self.diff(reference_low));
        if delta < 0 {
            reference
                .checked_sub(delta.unsigned_abs())
                .unwrap_or(u64::from(self.0))
        } else {
            reference + delta.unsigned_abs()
        }
    }
}

impl From<u16> for SeqNo {
    fn from(v: u16) -> Self {
        SeqNo(v)
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssrc_displays_as_hex() {
        assert_eq!(Ssrc(0xdead_beef).to_string(), "0xdeadbeef");
        assert_eq!(Ssrc(1).to_string(), "0x00000001");
    }

    #[test]
    fn seq_order_wraps() {
        assert!(SeqNo(0).is_after(SeqNo(65535)));
        assert!(SeqNo(5).is_after(SeqNo(65530)));
        assert!(!SeqNo(65530).is_after(SeqNo(5)));
        assert!(!SeqNo(7).is_after(SeqNo(7)));
        assert_eq!(SeqNo(65535).next(), SeqNo(0));
        assert_eq!(SeqNo(3).diff(SeqNo(65533)), 6);
        assert_eq!(SeqNo(65533).diff(SeqNo(3)), -6);
        assert_eq!(SeqNo(65530).wrapping_add(10), SeqNo(4));
    }

    #[test]
    fn extend_follows_the_reference_across_wraps() {
        // Just after a wrap: 2 is in the next cycle of 65534.
        assert_eq!(SeqNo(2).extend(65534), 65538);
        // A late packet from the previous cycle.
        assert_eq!(SeqNo(65534).extend(65538), 65534);
        // Same cycle.
        assert_eq!(SeqNo(100).extend(3 * 65536 + 90), 3 * 65536 + 100);
        // Before the first cycle: no negative extended numbers.
        assert_eq!(SeqNo(65535).extend(1), 65535);
    }
}
