//! Parses the INVITE const in a loop, for profilers:
//! `cargo build -p cpm-perf --release --example parse_loop &&
//!  valgrind --tool=callgrind target/release/examples/parse_loop 100000`.

use std::hint::black_box;

use bytes::Bytes;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    // Shared like a received buffer (see benches/sip.rs).
    let buf = Bytes::from(cpm_perf::INVITE.to_vec());
    drop(buf.clone());
    for _ in 0..n {
        let m = cpm_engine::sip::parse(black_box(buf.clone())).unwrap();
        black_box(cpm_perf::proxy_keys(&m));
    }
}
