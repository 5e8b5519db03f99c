//! Fuzz `cpm_engine::sip::framing::StreamFramer` (`cargo fuzz run sip_framing`): the input is a
//! TCP byte stream.
//!
//! Framing must not depend on how the stream was cut into reads: fed at once or one byte at a
//! time, the framer yields the same frames up to its first error, fails in both cases or in
//! neither, and then holds the same number of unframed bytes. Every frame also goes through
//! `sip::parse`, as the transport does.

#![no_main]

use cpm_engine::sip::framing::{Frame, FramingError, StreamFramer};
use libfuzzer_sys::fuzz_target;

/// Small enough that fuzz inputs reach the size limit.
const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut whole = StreamFramer::new(MAX);
    whole.extend(data);
    let (frames, err) = drain(&mut whole, Vec::new());

    let mut bytewise = StreamFramer::new(MAX);
    let mut frames_b = Vec::new();
    let mut err_b = None;
    for &byte in data {
        bytewise.extend(&[byte]);
        let (f, e) = drain(&mut bytewise, frames_b);
        frames_b = f;
        if e.is_some() {
            err_b = e;
            break;
        }
    }

    assert_eq!(frames, frames_b, "frames depend on read boundaries");
    assert_eq!(err.is_some(), err_b.is_some(), "{err:?} vs {err_b:?}");
    if err.is_none() {
        assert_eq!(whole.buffered(), bytewise.buffered());
    }
    for frame in frames {
        if let Frame::Message(msg) = frame {
            assert!(msg.len() <= MAX);
            let _ = cpm_engine::sip::parse(msg);
        }
    }
});

fn drain(f: &mut StreamFramer, mut out: Vec<Frame>) -> (Vec<Frame>, Option<FramingError>) {
    loop {
        match f.next() {
            Ok(Some(frame)) => out.push(frame),
            Ok(None) => return (out, None),
            Err(e) => {
                // Errors are final.
                assert_eq!(f.next(), Err(e));
                return (out, Some(e));
            }
        }
    }
}
