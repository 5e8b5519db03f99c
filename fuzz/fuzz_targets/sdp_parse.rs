//! Fuzz the SDP model (`cargo fuzz run sdp_parse`): the input is a SIP body.
//!
//! Nothing panics; what parses prints back to text that parses to the same description; the
//! RFC 3264 answer and the rewrites a B2BUA applies never panic, and what they produce parses.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use cpm_engine::sdp::{answer, Codec, SessionDescription};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let Ok(sdp) = SessionDescription::parse(&body) else {
        return;
    };
    let printed = sdp.to_bytes();
    let again = SessionDescription::parse(&printed).expect("printed SDP parses");
    assert_eq!(again.to_bytes(), printed, "print is not stable");

    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if let Ok(ans) = answer(&sdp, local, |i, _| 30_000 + i as u16 * 2, &[Codec::PCMU, Codec::PCMA]) {
        SessionDescription::parse(&ans.to_bytes()).expect("an answer parses");
    }
    let mut rewritten = sdp.clone();
    rewritten.set_all_connections(local);
    SessionDescription::parse(&rewritten.to_bytes()).expect("a rewritten SDP parses");
});
