//! Fuzz the RTP/RTCP views (`cargo fuzz run rtp_parse`): the input is one UDP datagram as a
//! media relay receives it.
//!
//! Whatever the bytes, nothing panics; an accepted RTP packet's header, payload and padding
//! add up to the datagram; every RTCP packet the walker yields lies inside the datagram and
//! its typed fields read without panicking.

#![no_main]

use bytes::Bytes;
use cpm_engine::rtp::{self, rtcp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if rtp::is_rtcp(data) {
        let mut total = 0;
        for p in rtcp::packets(data).flatten() {
            total += p.len();
            assert!(total <= data.len(), "RTCP packets overrun the datagram");
            let _ = (p.packet_type(), p.count(), p.body().len(), p.ssrc(), p.sender_info());
            let _ = p.report_blocks().count();
        }
        let _ = rtcp::check_compound(data);
        return;
    }
    let Ok(pkt) = rtp::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert_eq!(pkt.version(), 2);
    assert_eq!(
        pkt.header_len() + pkt.payload_bytes().len() + pkt.padding_len(),
        data.len(),
        "header + payload + padding != datagram"
    );
    assert_eq!(pkt.csrcs().count(), usize::from(pkt.csrc_count()));
    let _ = (pkt.seq(), pkt.timestamp(), pkt.ssrc(), pkt.marker(), pkt.extension());
    // Rewriting the header in place keeps the packet parseable with the new values.
    let mut copy = data.to_vec();
    if rtp::rewrite_seq_ts_ssrc(&mut copy, rtp::SeqNo(1), 2, rtp::Ssrc(3)).is_ok() {
        let again = rtp::parse(Bytes::from(copy)).expect("a rewritten packet still parses");
        assert_eq!((again.seq(), again.timestamp(), again.ssrc()), (rtp::SeqNo(1), 2, rtp::Ssrc(3)));
    }
});
