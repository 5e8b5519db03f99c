//! Fuzz the BFCP codec (RFC 8855) and the floor control server (`cargo fuzz run bfcp`): the
//! input is a TCP byte stream from a participant, cut into reads at the first byte's value.
//!
//! Whatever the bytes, nothing panics: framing across split reads, decoding, the server's
//! handling (including Error replies). A decoded message encodes back to bytes that decode to
//! the same message.

#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::conference::floor::bfcp::{Framer, Message};
use cpm_engine::conference::floor::{FloorConfig, FloorControl};
use cpm_engine::conference::roster::ParticipantId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let t0 = Instant::now();
    let p = ParticipantId(1);
    let mut floor = FloorControl::new(FloorConfig::default());
    floor.add_participant(p, 1);
    floor.add_participant(ParticipantId(2), 2);
    let mut framer = Framer::new(4096);
    for (i, piece) in stream.chunks(usize::from(cut.max(1))).enumerate() {
        framer.push(piece);
        let now = t0 + Duration::from_millis(100 * i as u64);
        while let Ok(Some(frame)) = framer.next_frame() {
            if let Ok(msg) = Message::decode(frame.clone()) {
                let again = Message::decode(msg.to_bytes().expect("a decoded message encodes"))
                    .expect("an encoded message decodes");
                assert_eq!(again, msg, "encode/decode round trip");
            }
            floor.handle_frame(now, p, Bytes::clone(&frame));
            floor.handle_timeout(now + Duration::from_secs(60));
            while floor.poll_transmit().is_some() {}
            while floor.poll_event().is_some() {}
        }
    }
});
