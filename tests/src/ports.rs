//! Blocks of consecutive loopback ports from a fixed range, for third-party peers (baresip,
//! SIPp) that need port numbers up front, several at fixed offsets (baresip binds SIP on `P`
//! and TLS on `P+1`). Ports are handed out round-robin within the process and checked free
//! (UDP and TCP on 127.0.0.1) at the time; racy across processes by nature.

use std::net::{TcpListener, UdpSocket};
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

/// The range the interop tests (baresip, SIPp calls) take their ports from.
pub const INTEROP: Range<u16> = 18000..19000;

/// Round-robin cursor into [`INTEROP`], started at a per-process offset.
static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);

/// The first port of `len` consecutive ports of [`INTEROP`] that were all free (UDP and TCP)
/// a moment ago. Panics when none is found after a lap of the range.
pub fn block(len: u16) -> u16 {
    block_in(INTEROP, len)
}

/// [`block`] in another range.
pub fn block_in(range: Range<u16>, len: u16) -> u16 {
    let span = u32::from(range.end - range.start);
    let len32 = u32::from(len.max(1));
    assert!(len32 <= span, "block of {len} ports in {range:?}");
    let slots = span / len32;
    // A per-process start keeps two test binaries run one after the other off the same ports.
    let _ = CURSOR.compare_exchange(
        u32::MAX,
        std::process::id() % slots,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..slots {
        let slot = CURSOR.fetch_add(1, Ordering::Relaxed) % slots;
        let base = range.start + (slot * len32) as u16;
        if (base..base + len.max(1)).all(free) {
            return base;
        }
    }
    panic!("no {len} free consecutive ports in {range:?}");
}

/// Whether `port` can be bound on 127.0.0.1 for UDP and for TCP.
fn free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_free_distinct_and_in_range() {
        let a = block(16);
        let b = block(16);
        assert_ne!(a, b);
        for base in [a, b] {
            assert!(INTEROP.contains(&base) && INTEROP.contains(&(base + 15)));
            assert_eq!((base - INTEROP.start) % 16, 0);
        }
        // A taken port is skipped.
        let held = UdpSocket::bind(("127.0.0.1", block_in(18990..19000, 2))).unwrap();
        let port = held.local_addr().unwrap().port();
        for _ in 0..10 {
            let c = block_in(18990..19000, 2);
            assert!(!(c..c + 2).contains(&port), "{c} overlaps held {port}");
        }
    }
}
