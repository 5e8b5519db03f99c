//! Receiving into a `BytesBatch`, taking each datagram as `Bytes` and sending it on allocates
//! nothing once the pool is warm: checked with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cpm_netio::{BatchSocket, BytesBatch};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn relaying_through_a_bytes_batch_does_not_allocate() {
    let any = "127.0.0.1:0".parse().unwrap();
    let (src, relay, dst) = (
        BatchSocket::bind(any).unwrap(),
        BatchSocket::bind(any).unwrap(),
        BatchSocket::bind(any).unwrap(),
    );
    let (to_relay, to_dst) = (relay.local_addr().unwrap(), dst.local_addr().unwrap());
    let mut batch = BytesBatch::new(16, 2048);
    let mut sink = BytesBatch::new(16, 2048);
    let mut out = Vec::with_capacity(16);
    let payload = [0x80u8; 172];
    let packets = [(to_relay, &payload[..]); 8];
    let mut relay_round =
        |batch: &mut BytesBatch, out: &mut Vec<(std::net::SocketAddr, bytes::Bytes)>| -> usize {
            src.send_batch(&packets).unwrap();
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut moved = 0;
            while moved < packets.len() && Instant::now() < deadline {
                let Ok(n) = relay.recv_bytes(batch) else {
                    continue;
                };
                out.extend((0..n).filter_map(|i| batch.take(i)).map(|b| (to_dst, b)));
                moved += relay.send_datagrams(out).unwrap();
                out.clear();
            }
            let mut got = 0;
            while got < moved && Instant::now() < deadline {
                got += dst.recv_bytes(&mut sink).unwrap_or(0);
            }
            got
        };
    // Warm up: the first split of each slot allocates its shared header once.
    for _ in 0..4 {
        assert_eq!(relay_round(&mut batch, &mut out), 8);
    }
    let before = ALLOCATIONS.load(Relaxed);
    for _ in 0..50 {
        assert_eq!(relay_round(&mut batch, &mut out), 8);
    }
    let during = ALLOCATIONS.load(Relaxed) - before;
    assert_eq!(during, 0, "allocations while relaying 400 datagrams");
    assert_eq!(batch.replaced(), 0);
}
