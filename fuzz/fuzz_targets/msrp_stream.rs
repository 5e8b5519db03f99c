//! Fuzz the streaming MSRP parser (`cargo fuzz run msrp_stream`): the input is what a TCP
//! connection delivers, fed in reads whose sizes come from the input's first byte.
//!
//! Whatever the bytes and however they are split, nothing panics, the parser stops after a
//! fatal error, and the body bytes it hands out never exceed what was fed (they are slices of
//! the input, RFC 4975 §7 framing).

#![no_main]

use bytes::Bytes;
use cpm_engine::msrp::{Event, Limits, Parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(split % 64) + 1;
    let mut parser = Parser::new(Limits::default());
    let mut body = 0usize;
    for piece in stream.chunks(step) {
        parser.feed(Bytes::copy_from_slice(piece));
        while let Some(ev) = parser.poll() {
            match ev {
                Ok(Event::Body(b)) => body += b.len(),
                Ok(_) => {}
                // A fatal error: the connection would be closed here.
                Err(_) => return,
            }
        }
    }
    assert!(body <= stream.len(), "more body bytes out than fed in");
});
