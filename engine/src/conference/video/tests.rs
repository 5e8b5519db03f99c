//! Video switching on virtual time: who sees whom, hysteresis, frame-boundary switches,
//! continuity of what a receiver gets, key-frame requests.

use bytes::BytesMut;

use super::*;
use crate::rtp::{self, RtpHeader, SeqNo};

const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);
const C: ParticipantId = ParticipantId(3);

fn ssrc_of(p: ParticipantId) -> Ssrc {
    Ssrc(0x1000 + p.0)
}

fn out_ssrc_of(p: ParticipantId) -> Ssrc {
    Ssrc(0x9000 + p.0)
}

fn setup() -> (VideoSwitch, Instant) {
    let mut v = VideoSwitch::new(VideoConfig::default());
    for p in [A, B, C] {
        v.add_participant(p, Some(ssrc_of(p)), Some(out_ssrc_of(p)));
    }
    (v, Instant::now())
}

fn packet(p: ParticipantId, seq: u16, ts: u32, marker: bool) -> RtpPacket {
    let mut b = BytesMut::new();
    RtpHeader {
        marker,
        ..RtpHeader::new(96, SeqNo(seq), ts, ssrc_of(p))
    }
    .write_to(&mut b)
    .unwrap();
    b.extend_from_slice(&[0xee; 20]);
    rtp::parse(b.freeze()).unwrap()
}

fn keyframes(v: &mut VideoSwitch) -> Vec<(ParticipantId, u8)> {
    std::iter::from_fn(|| v.poll_keyframe_request())
        .map(|k| (k.to, k.fir_seq))
        .collect()
}

/// (seq, ts, ssrc) of the rewritten header.
fn fields(h: &[u8; 12]) -> (u16, u32, u32) {
    (
        u16::from_be_bytes([h[2], h[3]]),
        u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
    )
}

#[test]
fn speaker_to_all_others_and_previous_to_the_speaker() {
    let (mut v, t0) = setup();
    assert_eq!(v.speaker(), Some(A), "the first sender is shown at once");
    // B and C each start receiving A: each needs a key frame.
    assert_eq!(keyframes(&mut v), vec![(A, 1), (A, 2)]);
    assert!(v.set_speaker(t0, B));
    assert_eq!(
        keyframes(&mut v),
        vec![(B, 1)],
        "one request for all receivers"
    );
    // Nothing was forwarded yet, so "current" follows the first frames.
    let mut out = Vec::new();
    v.forward(t0, B, &packet(B, 1, 0, true), &mut out);
    let to: Vec<_> = out.iter().map(|f| f.to).collect();
    assert_eq!(to, vec![A, C]);
    out.clear();
    v.forward(t0, A, &packet(A, 1, 0, true), &mut out);
    assert_eq!(
        out.iter().map(|f| f.to).collect::<Vec<_>>(),
        vec![B],
        "B sees A"
    );
    out.clear();
    v.forward(t0, C, &packet(C, 1, 0, true), &mut out);
    assert!(out.is_empty(), "nobody is shown C");
    // A speaker without video does not switch video.
    v.add_participant(ParticipantId(9), None, Some(Ssrc(5)));
    assert!(!v.set_speaker(t0 + Duration::from_secs(5), ParticipantId(9)));
    assert_eq!(v.speaker(), Some(B));
}

#[test]
fn hysteresis_holds_a_switch_until_due() {
    let (mut v, t0) = setup();
    assert!(v.set_speaker(t0, B));
    assert!(!v.set_speaker(t0 + Duration::from_millis(500), C));
    assert_eq!(v.speaker(), Some(B));
    assert_eq!(v.next_deadline(), Some(t0 + Duration::from_secs(1)));
    v.handle_timeout(t0 + Duration::from_millis(999));
    assert_eq!(v.speaker(), Some(B));
    v.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(v.speaker(), Some(C));
    assert_eq!(v.next_deadline(), None);
    // Back to the current speaker while a change is held: the change is dropped.
    assert!(!v.set_speaker(t0 + Duration::from_millis(1200), A));
    assert!(!v.set_speaker(t0 + Duration::from_millis(1300), C));
    assert_eq!(v.next_deadline(), None);
}

#[test]
fn receiver_stream_is_continuous_and_switches_at_a_frame_start() {
    let (mut v, t0) = setup();
    let mut out = Vec::new();
    let mut got: Vec<(u16, u32, u32)> = Vec::new();
    let mut send = |v: &mut VideoSwitch, at: Instant, p, seq, ts, m| {
        out.clear();
        v.forward(at, p, &packet(p, seq, ts, m), &mut out);
        if let Some(f) = out.iter().find(|f| f.to == C) {
            got.push(fields(&f.header));
        }
    };
    // A's frames (2 packets each) near the top of the sequence space; B's far elsewhere.
    for i in 0..3u16 {
        let at = t0 + Duration::from_millis(33 * u64::from(i));
        send(
            &mut v,
            at,
            A,
            65_533u16.wrapping_add(2 * i),
            3000 * u32::from(i),
            false,
        );
        send(
            &mut v,
            at,
            A,
            65_534u16.wrapping_add(2 * i),
            3000 * u32::from(i),
            true,
        );
    }
    // B sends mid-frame while nobody is shown B: dropped, but its framing is followed.
    send(&mut v, t0, B, 19_999, 777_000, false);
    let t1 = t0 + Duration::from_millis(100);
    assert!(v.set_speaker(t1, B));
    // A's next frame started before B's: still forwarded to C whole.
    send(&mut v, t1, A, 3, 9000, false);
    // B's packets still in that frame (same timestamp, no marker before): not yet.
    send(&mut v, t1, B, 20_000, 777_000, false);
    send(&mut v, t1, B, 20_001, 777_000, true);
    send(&mut v, t1, A, 4, 9000, true);
    // B's next frame starts: C switches.
    let t2 = t1 + Duration::from_millis(33);
    send(&mut v, t2, B, 20_002, 780_000, false);
    send(&mut v, t2, B, 20_003, 780_000, true);
    send(&mut v, t2, A, 5, 12_000, true);
    assert_eq!(v.shown_to(C), Some(B));
    assert_eq!(got.len(), 10);
    let seqs: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        seqs,
        vec![65_533, 65_534, 65_535, 0, 1, 2, 3, 4, 5, 6],
        "{got:?}"
    );
    assert!(got.iter().all(|g| g.2 == out_ssrc_of(C).0));
    for w in got.windows(2) {
        assert!(w[1].1 >= w[0].1, "timestamps never go back: {got:?}");
    }
    // The switch advanced the timestamp by the 33 ms elapsed (2970 ticks, less than a frame
    // gap, so one frame gap).
    assert_eq!(got[8].1 - got[7].1, 3000);
}

#[test]
fn leaving_speaker_hands_over_to_the_previous_one() {
    let (mut v, t0) = setup();
    v.set_speaker(t0, B);
    v.set_speaker(t0 + Duration::from_secs(2), C);
    keyframes(&mut v);
    v.remove_participant(C);
    assert_eq!(v.speaker(), Some(B));
    assert_eq!(
        keyframes(&mut v),
        vec![(B, 2)],
        "A is shown B again; FIR seq counts up"
    );
    let mut out = Vec::new();
    v.forward(t0, B, &packet(B, 1, 0, true), &mut out);
    assert_eq!(out.iter().map(|f| f.to).collect::<Vec<_>>(), vec![A]);
    v.remove_participant(B);
    assert_eq!(v.speaker(), Some(A));
    v.remove_participant(A);
    assert_eq!(v.speaker(), None);
}

#[test]
fn receiver_keyframe_request_goes_to_its_source() {
    let (mut v, t0) = setup();
    keyframes(&mut v);
    let mut out = Vec::new();
    v.forward(t0, A, &packet(A, 1, 0, true), &mut out);
    v.on_receiver_keyframe_request(B);
    let k = v.poll_keyframe_request().unwrap();
    assert_eq!(
        (k.to, k.media, k.sender),
        (A, ssrc_of(A), VideoConfig::default().rtcp_ssrc)
    );
    v.on_receiver_keyframe_request(A);
    assert!(v.poll_keyframe_request().is_none(), "A is shown nobody");
}

#[test]
fn a_sender_learnt_later_keeps_the_receive_side() {
    let mut v = VideoSwitch::new(VideoConfig::default());
    let t0 = Instant::now();
    v.add_participant(A, None, Some(out_ssrc_of(A)));
    v.add_participant(B, None, Some(out_ssrc_of(B)));
    assert_eq!(v.speaker(), None);
    let mut out = Vec::new();
    v.forward(t0, A, &packet(A, 1, 0, true), &mut out);
    assert!(out.is_empty(), "an unknown sender is not forwarded");
    v.set_sends(A, Some(ssrc_of(A)));
    assert_eq!(v.speaker(), Some(A), "the first sender becomes the speaker");
    assert_eq!(keyframes(&mut v), vec![(A, 1)]);
    v.forward(t0, A, &packet(A, 2, 3000, true), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(fields(&out[0].header), (2, 3000, out_ssrc_of(B).0));
    // B's video becomes known: A (the speaker) is shown B, B's receive side goes on.
    v.set_sends(B, Some(ssrc_of(B)));
    assert_eq!(keyframes(&mut v), vec![]);
    out.clear();
    v.forward(t0, A, &packet(A, 3, 6000, true), &mut out);
    assert_eq!(fields(&out[0].header), (3, 6000, out_ssrc_of(B).0));
}
