// The user-plane cases, included by `media.rs` (the io_uring path, the default) and
// `media_epoll.rs` (the epoll path), each with its own `IO`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use cpm_actors::media::{
    Close, DropReason, LegHandle, LegSpec, LegStats, MediaConfig, MediaInactive, MediaIo,
    MediaPlane, OpenError, RelayLeg, Side, SidePorts,
};
use cpm_actors::metrics::WorkerMetrics;
use cpm_engine::rtp::{RtpHeader, SeqNo, Ssrc};

const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

fn plane_with(strict: bool) -> (MediaPlane, Arc<WorkerMetrics>) {
    let metrics = Arc::new(WorkerMetrics::default());
    let config = MediaConfig {
        ip: LOOPBACK.into(),
        strict_source: strict,
        timeout: None,
        io: IO,
        ..MediaConfig::default()
    };
    let plane = MediaPlane::start(0, config, None, metrics.clone()).unwrap();
    (plane, metrics)
}

fn plane() -> MediaPlane {
    plane_with(true).0
}

/// Ports chosen by the OS: RTP and RTCP on each side, or one muxed port.
fn spec(a_mux: bool, b_mux: bool) -> LegSpec {
    let side = |mux: bool| {
        if mux {
            SidePorts::mux(0)
        } else {
            SidePorts {
                rtp: 0,
                rtcp: Some(0),
            }
        }
    };
    LegSpec {
        a: side(a_mux),
        b: side(b_mux),
        clock_rate: 8000,
    }
}

/// A UDP endpoint on loopback.
struct Endpoint(UdpSocket);

impl Endpoint {
    fn new() -> Endpoint {
        Endpoint::on(SocketAddr::from((LOOPBACK, 0)))
    }

    fn on(addr: SocketAddr) -> Endpoint {
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        Endpoint(s)
    }

    /// With a receive buffer of `bytes` (for bursts larger than the default holds).
    fn with_buffer(bytes: usize) -> Endpoint {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        s.set_recv_buffer_size(bytes).unwrap();
        s.bind(&SocketAddr::from((LOOPBACK, 0)).into()).unwrap();
        let s = UdpSocket::from(s);
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        Endpoint(s)
    }

    fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }

    fn send(&self, to: SocketAddr, data: &[u8]) {
        self.0.send_to(data, to).unwrap();
    }

    /// Everything that arrives until `n` datagrams came or `wait` passed without one.
    fn recv(&self, n: usize, wait: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut last = Instant::now();
        while got.len() < n && last.elapsed() < wait {
            if let Ok((len, from)) = self.0.recv_from(&mut buf) {
                got.push((buf[..len].to_vec(), from));
                last = Instant::now();
            }
        }
        got
    }

    /// Asserts that nothing arrives for a while.
    fn silent(&self) {
        let got = self.recv(1, Duration::from_millis(60));
        assert!(got.is_empty(), "unexpected datagram: {got:?}");
    }
}

/// An RTP packet (RFC 3550 §5.1) with `len` payload bytes that encode its sequence number.
fn rtp(seq: u16, ssrc: u32, len: usize) -> Vec<u8> {
    let mut b = BytesMut::new();
    RtpHeader::new(8, SeqNo(seq), u32::from(seq) * 160, Ssrc(ssrc))
        .write_to(&mut b)
        .unwrap();
    b.extend((0..len).map(|i| (i as u16 ^ seq) as u8));
    b.to_vec()
}

/// An RTCP receiver report without report blocks (RFC 3550 §6.4.2), with a marker byte.
fn rtcp_rr(mark: u8) -> Vec<u8> {
    vec![0x80, 201, 0, 1, 0, 0, 0, mark]
}

fn stats(leg: &LegHandle) -> LegStats {
    leg.snapshot().wait().expect("the loop answers")
}

/// Snapshots until `done` holds (packets without an observable effect, such as drops, may
/// still be on their way through the loop), at most 1 s.
fn stats_when(leg: &LegHandle, done: impl Fn(&LegStats) -> bool) -> LegStats {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let s = stats(leg);
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `n` RTP packets from `from` to `to` and returns them.
fn send_stream(from: &Endpoint, to: SocketAddr, first_seq: u16, n: u16, ssrc: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let p = rtp(first_seq.wrapping_add(i), ssrc, 160);
            from.send(to, &p);
            p
        })
        .collect()
}

#[test]
fn rtp_is_relayed_both_ways_exactly_and_unchanged() {
    let (plane, metrics) = plane_with(true);
    let leg = plane.open_leg(&spec(false, false)).unwrap();
    let (a, b) = (Endpoint::new(), Endpoint::new());
    leg.set_peer(Side::A, a.addr(), None).unwrap();
    leg.set_peer(Side::B, b.addr(), None).unwrap();
    let sent_a = send_stream(&a, leg.local_rtp(Side::A), 1000, 200, 0xa);
    let sent_b = send_stream(&b, leg.local_rtp(Side::B), 60_000, 150, 0xb);
    let at_b = b.recv(200, Duration::from_millis(500));
    let at_a = a.recv(150, Duration::from_millis(500));
    // Every packet once, in order, byte for byte, from the relay's port facing the receiver.
    assert_eq!(at_b.len(), 200);
    assert!(at_b.iter().map(|(d, _)| d).eq(sent_a.iter()));
    assert!(at_b.iter().all(|(_, from)| *from == leg.local_rtp(Side::B)));
    assert!(at_a.iter().map(|(d, _)| d).eq(sent_b.iter()));
    assert!(at_a.iter().all(|(_, from)| *from == leg.local_rtp(Side::A)));
    let s = stats(&leg);
    assert_eq!((s.from_a.packets, s.from_a.bytes), (200, 200 * 172));
    assert_eq!((s.from_b.packets, s.from_b.bytes), (150, 150 * 172));
    assert_eq!((s.from_a.dropped_total(), s.from_b.dropped_total()), (0, 0));
    let rtp_a = s.from_a.rtp;
    assert_eq!((rtp_a.expected, rtp_a.received, rtp_a.lost), (200, 200, 0));
    assert_eq!(rtp_a.ssrc, Some(Ssrc(0xa)));
    assert_eq!((s.from_b.rtp.received, s.from_b.rtp.lost), (150, 0));
    assert_eq!(s.from_a.latched, Some(a.addr()));
    assert_eq!(s.from_b.latched, Some(b.addr()));
    assert_eq!(metrics.media.packets.load(Relaxed), 350);
    assert_eq!(metrics.media.bytes.load(Relaxed), 350 * 172);
    assert_eq!(metrics.media.legs.load(Relaxed), 1);
    assert_eq!(metrics.media.ports.load(Relaxed), 4);
    // Loss shows in the receiver figures: 10 of the next 50 are never sent.
    for i in 0..50u16 {
        if i % 5 != 0 {
            a.send(leg.local_rtp(Side::A), &rtp(1200 + i, 0xa, 160));
        }
    }
    assert_eq!(b.recv(40, Duration::from_millis(500)).len(), 40);
    let s = stats(&leg);
    assert_eq!((s.from_a.rtp.expected, s.from_a.rtp.lost), (250, 10));
    // The published figures (read without asking the loop) agree with the snapshot.
    assert_eq!(leg.stats().from_a.rtp, s.from_a.rtp);
    let last = leg.close().wait().expect("final figures");
    assert_eq!(last.from_a.packets, 240);
    assert_eq!(metrics.media.legs.load(Relaxed), 0);
    assert_eq!(metrics.media.ports.load(Relaxed), 0);
}

#[test]
fn latches_to_the_real_source_not_the_sdp_address() {
    let p = plane();
    let leg = p.open_leg(&spec(false, false)).unwrap();
    let (a, b, sdp_a) = (Endpoint::new(), Endpoint::new(), Endpoint::new());
    // A's SDP names one address, but A sends from another (a NAT, say).
    leg.set_peer(Side::A, sdp_a.addr(), None).unwrap();
    leg.set_peer(Side::B, b.addr(), None).unwrap();
    // Before A sent anything, B's media goes to A's SDP address.
    b.send(leg.local_rtp(Side::B), &rtp(1, 0xb, 160));
    assert_eq!(sdp_a.recv(1, Duration::from_millis(500)).len(), 1);
    // A's first packet latches its real source; B's media follows it there.
    a.send(leg.local_rtp(Side::A), &rtp(1, 0xa, 160));
    assert_eq!(b.recv(1, Duration::from_millis(500)).len(), 1);
    let sent = send_stream(&b, leg.local_rtp(Side::B), 2, 10, 0xb);
    let at_a = a.recv(10, Duration::from_millis(500));
    assert!(at_a.iter().map(|(d, _)| d).eq(sent.iter()));
    sdp_a.silent();
    let s = stats(&leg);
    assert_eq!(s.from_a.latched, Some(a.addr()));
    assert_eq!(s.from_b.packets, 11);
    // A new SDP address (re-INVITE) unlatches: the next source latches again.
    let a2 = Endpoint::new();
    leg.set_peer(Side::A, a2.addr(), None).unwrap();
    b.send(leg.local_rtp(Side::B), &rtp(12, 0xb, 160));
    assert_eq!(a2.recv(1, Duration::from_millis(500)).len(), 1);
    a2.send(leg.local_rtp(Side::A), &rtp(2, 0xa, 160));
    assert_eq!(b.recv(1, Duration::from_millis(500)).len(), 1);
    assert_eq!(stats(&leg).from_a.latched, Some(a2.addr()));
}

#[test]
fn strict_source_drops_and_counts_other_senders() {
    let p = plane();
    let leg = p.open_leg(&spec(false, false)).unwrap();
    let (a, b, stranger) = (Endpoint::new(), Endpoint::new(), Endpoint::new());
    leg.set_peer(Side::A, a.addr(), None).unwrap();
    leg.set_peer(Side::B, b.addr(), None).unwrap();
    send_stream(&a, leg.local_rtp(Side::A), 1, 5, 0xa);
    assert_eq!(b.recv(5, Duration::from_millis(500)).len(), 5);
    send_stream(&stranger, leg.local_rtp(Side::A), 500, 7, 0x5);
    send_stream(&a, leg.local_rtp(Side::A), 6, 5, 0xa);
    let at_b = b.recv(12, Duration::from_millis(150));
    assert_eq!(at_b.len(), 5, "only A's packets pass");
    let s = stats(&leg);
    assert_eq!(s.from_a.dropped(DropReason::WrongSource), 7);
    assert_eq!(s.from_a.packets, 10);
    assert_eq!(s.from_a.latched, Some(a.addr()));
    assert_eq!(s.from_a.relatches, 0);
    // B's media still goes to A.
    b.send(leg.local_rtp(Side::B), &rtp(1, 0xb, 160));
    assert_eq!(a.recv(1, Duration::from_millis(500)).len(), 1);
    stranger.silent();
}

#[test]
fn without_strict_source_a_new_sender_latches_again() {
    let (p, _) = plane_with(false);
    let leg = p.open_leg(&spec(false, false)).unwrap();
    let (a, b, moved) = (Endpoint::new(), Endpoint::new(), Endpoint::new());
    leg.set_peer(Side::B, b.addr(), None).unwrap();
    send_stream(&a, leg.local_rtp(Side::A), 1, 3, 0xa);
    assert_eq!(b.recv(3, Duration::from_millis(500)).len(), 3);
    // A moves (its NAT binding changed): its packets pass and B's media follows.
    send_stream(&moved, leg.local_rtp(Side::A), 4, 3, 0xa);
    assert_eq!(b.recv(3, Duration::from_millis(500)).len(), 3);
    b.send(leg.local_rtp(Side::B), &rtp(1, 0xb, 160));
    assert_eq!(moved.recv(1, Duration::from_millis(500)).len(), 1);
    a.silent();
    let s = stats(&leg);
    assert_eq!(
        (s.from_a.relatches, s.from_a.latched),
        (1, Some(moved.addr()))
    );
    assert_eq!(s.from_a.dropped_total(), 0);
}

#[test]
fn garbage_is_dropped_counted_and_never_latches() {
    let (p, metrics) = plane_with(true);
    let leg = p.open_leg(&spec(false, false)).unwrap();
    let (a, b, attacker) = (Endpoint::new(), Endpoint::new(), Endpoint::new());
    leg.set_peer(Side::B, b.addr(), None).unwrap();
    let to = leg.local_rtp(Side::A);
    // Not RTP: text, version 1, a header cut short, CSRCs past the end, RTCP on the RTP port.
    let mut csrc = rtp(9, 0xe, 0);
    csrc[0] |= 0x0f;
    for g in [
        &b"hello, relay"[..],
        &[0x40u8; 20][..],
        &rtp(7, 0xe, 0)[..8],
        &csrc[..],
        &rtcp_rr(1)[..],
    ] {
        attacker.send(to, g);
    }
    // Garbage did not latch the attacker: A's first valid packet does.
    send_stream(&a, to, 1, 4, 0xa);
    let at_b = b.recv(10, Duration::from_millis(150));
    assert_eq!(at_b.len(), 4);
    let s = stats(&leg);
    assert_eq!(s.from_a.dropped(DropReason::NotRtp), 5);
    assert_eq!(s.from_a.latched, Some(a.addr()));
    assert_eq!(s.from_a.packets, 4);
    // Garbage on the RTCP port too.
    a.send(leg.local_rtcp(Side::A).unwrap(), b"not rtcp at all");
    let s = stats_when(&leg, |s| s.from_a.dropped(DropReason::NotRtp) == 6);
    assert_eq!(s.from_a.dropped(DropReason::NotRtp), 6);
    assert_eq!(metrics.media.drops_for(DropReason::NotRtp), 6);
}

/// A peer that goes away (its port closed: the kernel answers the relay's sends with ICMP port
/// unreachable, which a connected relay socket then reports as an error on its next receive
/// or send) costs the leg nothing: when the peer is back on its port, both directions flow
/// again, and every datagram toward the gone peer is counted as relayed or as a failed send.
#[test]
fn a_peer_that_goes_away_and_comes_back_is_relayed_again() {
    let p = plane();
    let leg = p.open_leg(&spec(true, true)).unwrap();
    let (a, b) = (Endpoint::new(), Endpoint::new());
    let b_addr = b.addr();
    leg.set_peer(Side::A, a.addr(), None).unwrap();
    leg.set_peer(Side::B, b_addr, None).unwrap();
    // Both sides latch (and, by default, their relay sockets connect).
    a.send(leg.local_rtp(Side::A), &rtp(1, 0xa, 160));
    assert_eq!(b.recv(1, Duration::from_millis(500)).len(), 1);
    b.send(leg.local_rtp(Side::B), &rtp(1, 0xb, 160));
    assert_eq!(a.recv(1, Duration::from_millis(500)).len(), 1);
    drop(b);
    for seq in 2..12 {
        a.send(leg.local_rtp(Side::A), &rtp(seq, 0xa, 160));
        std::thread::sleep(Duration::from_millis(2));
    }
    let s = stats_when(&leg, |s| {
        s.from_a.packets + s.from_a.dropped(DropReason::SendFailed) == 11
    });
    assert_eq!(
        s.from_a.packets + s.from_a.dropped(DropReason::SendFailed),
        11,
        "{s:?}"
    );
    // Back on the same port.
    let b = Endpoint::on(b_addr);
    b.send(leg.local_rtp(Side::B), &rtp(2, 0xb, 160));
    let got = a.recv(1, Duration::from_millis(500));
    assert_eq!(got.len(), 1, "B to A after B came back");
    a.send(leg.local_rtp(Side::A), &rtp(12, 0xa, 160));
    let got = b.recv(1, Duration::from_millis(500));
    assert_eq!(got.len(), 1, "A to B after B came back");
    assert_eq!(got[0].0, rtp(12, 0xa, 160));
}

/// A burst larger than the loop's receive buffers (io_uring: 2,048 slots), reaching many legs
/// while the loop waits out its pace, is relayed whole and in order: on the io_uring path the
/// receives that found no free buffer end (`ENOBUFS`, counted), are armed again at the turn's
/// end, and what they left in their sockets comes in the next turns. Fails if an ended receive
/// is not armed again (its leg goes silent) or if the burst did not exhaust the buffers.
#[test]
fn a_burst_larger_than_the_loops_buffers_is_relayed_whole() {
    const LEGS: usize = 8;
    const BURST: u16 = 500;
    const BUFFER: usize = 4 << 20;
    let metrics = Arc::new(WorkerMetrics::default());
    let config = MediaConfig {
        ip: LOOPBACK.into(),
        timeout: None,
        // Long enough for the whole burst to arrive while the loop sleeps.
        pace: Duration::from_millis(250),
        socket_buffer: BUFFER,
        io: IO,
        ..MediaConfig::default()
    };
    let plane = MediaPlane::start(0, config, None, metrics.clone()).unwrap();
    let mut legs = Vec::new();
    for _ in 0..LEGS {
        let leg = plane.open_leg(&spec(true, true)).unwrap();
        let (a, b) = (Endpoint::with_buffer(BUFFER), Endpoint::with_buffer(BUFFER));
        leg.set_peer(Side::A, a.addr(), None).unwrap();
        leg.set_peer(Side::B, b.addr(), None).unwrap();
        legs.push((leg, a, b));
    }
    let mut sent = Vec::new();
    for (leg, a, _) in &legs {
        sent.push(send_stream(a, leg.local_rtp(Side::A), 1, BURST, 0xa));
    }
    for ((leg, _, b), sent) in legs.iter().zip(&sent) {
        let got = b.recv(BURST.into(), Duration::from_secs(2));
        assert_eq!(got.len(), usize::from(BURST), "{:?}", stats(leg));
        assert!(got.iter().map(|(d, _)| d).eq(sent.iter()), "out of order");
    }
    let exhausted = metrics.media.ring_exhausted.load(Relaxed);
    if IO == MediaIo::IoUring {
        assert!(exhausted > 0, "{} datagrams in one turn did not exhaust the ring", sent.len() * usize::from(BURST));
    } else {
        assert_eq!(exhausted, 0);
    }
    // Every leg still receives, both ways, after its receives were armed again.
    for (leg, a, b) in &legs {
        a.send(leg.local_rtp(Side::A), &rtp(BURST + 1, 0xa, 160));
        let got = b.recv(1, Duration::from_millis(500));
        assert_eq!(got.len(), 1, "A to B after the burst: {:?}", stats(leg));
        b.send(leg.local_rtp(Side::B), &rtp(1, 0xb, 160));
        let got = a.recv(1, Duration::from_millis(500));
        assert_eq!(got.len(), 1, "B to A after the burst: {:?}", stats(leg));
        let s = stats(leg);
        assert_eq!(s.from_a.packets, u64::from(BURST) + 1, "{s:?}");
        assert_eq!((s.from_a.dropped_total(), s.from_a.rtp.lost), (0, 0), "{s:?}");
    }
}

#[test]
fn without_a_peer_packets_are_dropped_and_counted() {
    let p = plane();
    let leg = p.open_leg(&spec(false, false)).unwrap();
    let (a, b) = (Endpoint::new(), Endpoint::new());
    // B is unknown (no answer yet, no packet from B): A's packets have nowhere to go.
    send_stream(&a, leg.local_rtp(Side::A), 1, 3, 0xa);
    let s = stats_when(&leg, |s| s.from_a.dropped(DropReason::NoPeer) == 3);
    assert_eq!(s.from_a.dropped(DropReason::NoPeer), 3);
    assert_eq!(s.from_a.latched, Some(a.addr()), "A latched anyway");
    // B's first packet latches B, and goes to A's latched address.
    b.send(leg.local_rtp(Side::B), &rtp(1, 0xb, 160));
    assert_eq!(a.recv(1, Duration::from_millis(500)).len(), 1);
    send_stream(&a, leg.local_rtp(Side::A), 4, 2, 0xa);
    assert_eq!(b.recv(2, Duration::from_millis(500)).len(), 2);
}

#[test]
fn rtcp_passes_untouched_on_its_own_ports() {
    let p = plane();
    let leg = p.open_leg(&spec(false, false)).unwrap();
    let (a, a_rtcp, b, b_rtcp) = (
        Endpoint::new(),
        Endpoint::new(),
        Endpoint::new(),
        Endpoint::new(),
    );
    leg.set_peer(Side::A, a.addr(), Some(a_rtcp.addr()))
        .unwrap();
    leg.set_peer(Side::B, b.addr(), Some(b_rtcp.addr()))
        .unwrap();
    // A compound RTCP packet: RR + SDES-like trailing bytes, passed as is.
    let mut compound = rtcp_rr(7);
    compound.extend_from_slice(&[0x81, 202, 0, 1, 0, 0, 0, 7]);
    a_rtcp.send(leg.local_rtcp(Side::A).unwrap(), &compound);
    b_rtcp.send(leg.local_rtcp(Side::B).unwrap(), &rtcp_rr(9));
    let at_b = b_rtcp.recv(1, Duration::from_millis(500));
    assert_eq!(at_b, [(compound, leg.local_rtcp(Side::B).unwrap())]);
    let at_a = a_rtcp.recv(1, Duration::from_millis(500));
    assert_eq!(at_a, [(rtcp_rr(9), leg.local_rtcp(Side::A).unwrap())]);
    a.silent();
    b.silent();
    let s = stats(&leg);
    assert_eq!(
        (s.from_a.packets, s.from_a.rtcp_packets, s.from_a.bytes),
        (1, 1, 16)
    );
    assert_eq!((s.from_b.packets, s.from_b.rtcp_packets), (1, 1));
    assert_eq!(s.from_a.rtp.received, 0, "RTCP is not RTP");
    // Without an a=rtcp address, RTCP goes to the RTP port + 1 (RFC 3550 §11).
    let leg = p.open_leg(&spec(false, false)).unwrap();
    let b_rtp = Endpoint::new();
    let next = SocketAddr::from((LOOPBACK, b_rtp.addr().port() + 1));
    if let Ok(b_next) = UdpSocket::bind(next) {
        b_next
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        leg.set_peer(Side::B, b_rtp.addr(), None).unwrap();
        a_rtcp.send(leg.local_rtcp(Side::A).unwrap(), &rtcp_rr(3));
        let mut buf = [0u8; 64];
        let (n, _) = b_next.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &rtcp_rr(3)[..]);
    }
}

#[test]
fn rtcp_mux_on_one_or_both_sides() {
    let p = plane();
    // Both sides multiplex: RTP and RTCP share one port each way.
    let leg = p.open_leg(&spec(true, true)).unwrap();
    assert_eq!(leg.local_rtcp(Side::A), None);
    let (a, b) = (Endpoint::new(), Endpoint::new());
    leg.set_peer(Side::A, a.addr(), None).unwrap();
    leg.set_peer(Side::B, b.addr(), None).unwrap();
    a.send(leg.local_rtp(Side::A), &rtp(1, 0xa, 160));
    a.send(leg.local_rtp(Side::A), &rtcp_rr(1));
    a.send(leg.local_rtp(Side::A), &rtp(2, 0xa, 160));
    let at_b: Vec<_> = b
        .recv(3, Duration::from_millis(500))
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(at_b, [rtp(1, 0xa, 160), rtcp_rr(1), rtp(2, 0xa, 160)]);
    b.send(leg.local_rtp(Side::B), &rtcp_rr(2));
    assert_eq!(a.recv(1, Duration::from_millis(500))[0].0, rtcp_rr(2));
    let s = stats(&leg);
    assert_eq!((s.from_a.packets, s.from_a.rtcp_packets), (3, 1));
    assert_eq!(s.from_a.rtp.received, 2);
    // A multiplexes, B does not: A's RTCP leaves from the B-facing RTCP port to B's RTCP.
    let leg = p.open_leg(&spec(true, false)).unwrap();
    let (b_rtp, b_rtcp) = (Endpoint::new(), Endpoint::new());
    leg.set_peer(Side::A, a.addr(), None).unwrap();
    leg.set_peer(Side::B, b_rtp.addr(), Some(b_rtcp.addr()))
        .unwrap();
    a.send(leg.local_rtp(Side::A), &rtcp_rr(4));
    a.send(leg.local_rtp(Side::A), &rtp(3, 0xa, 160));
    assert_eq!(
        b_rtcp.recv(1, Duration::from_millis(500)),
        [(rtcp_rr(4), leg.local_rtcp(Side::B).unwrap())]
    );
    assert_eq!(
        b_rtp.recv(1, Duration::from_millis(500))[0].0,
        rtp(3, 0xa, 160)
    );
    // And B's RTCP reaches A on A's one port.
    b_rtcp.send(leg.local_rtcp(Side::B).unwrap(), &rtcp_rr(5));
    assert_eq!(
        a.recv(1, Duration::from_millis(500)),
        [(rtcp_rr(5), leg.local_rtp(Side::A))]
    );
}

/// Binds `ports` on loopback, all of them or none.
fn can_bind(ports: &[u16]) -> bool {
    let socks: Vec<_> = ports
        .iter()
        .map_while(|&p| UdpSocket::bind(SocketAddr::from((LOOPBACK, p))).ok())
        .collect();
    socks.len() == ports.len()
}

fn ports_of(leg: &LegHandle) -> Vec<u16> {
    [Side::A, Side::B]
        .into_iter()
        .flat_map(|s| [Some(leg.local_rtp(s)), leg.local_rtcp(s)])
        .flatten()
        .map(|a| a.port())
        .collect()
}

#[test]
fn closing_releases_the_ports_at_once() {
    let (p, metrics) = plane_with(true);
    let leg = p.open_leg(&spec(false, false)).unwrap();
    let ports = ports_of(&leg);
    assert_eq!(ports.len(), 4);
    assert!(!can_bind(&ports[..1]), "the leg holds its ports");
    let last = leg.close().wait().expect("final figures");
    assert_eq!(last.from_a.packets, 0);
    assert!(
        can_bind(&ports),
        "every port can be bound again right after close"
    );
    assert_eq!(metrics.media.ports.load(Relaxed), 0);
    // The same ports, asked for explicitly, open again.
    let spec = LegSpec {
        a: SidePorts {
            rtp: ports[0],
            rtcp: Some(ports[1]),
        },
        b: SidePorts {
            rtp: ports[2],
            rtcp: Some(ports[3]),
        },
        clock_rate: 8000,
    };
    let leg = p.open_leg(&spec).unwrap();
    assert_eq!(ports_of(&leg), ports);
    // A port in use is named, and the ports bound before it are released.
    let busy = UdpSocket::bind(SocketAddr::from((LOOPBACK, 0))).unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    drop(leg);
    let mut spec2 = spec;
    spec2.b.rtp = busy_port;
    let deadline = Instant::now() + Duration::from_secs(1);
    let err = loop {
        match p.open_leg(&spec2) {
            Err(OpenError::Bind { port, .. }) if port == busy_port => break port,
            // The dropped leg's close may still be on its way to the loop.
            Err(OpenError::Bind { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            other => panic!("expected a bind error on {busy_port}: {other:?}"),
        }
    };
    assert_eq!(err, busy_port);
    assert!(can_bind(&ports[..2]));
}

#[test]
fn dropping_the_relay_leg_actor_closes_the_leg() {
    let (p, metrics) = plane_with(true);
    System::new().block_on(async move {
        let leg = p.open_leg(&spec(false, false)).unwrap();
        let ports = ports_of(&leg);
        let addr = RelayLeg::new(leg, None).start();
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(metrics.media.legs.load(Relaxed), 1);
        drop(addr);
        let deadline = Instant::now() + Duration::from_secs(1);
        while !can_bind(&ports) {
            assert!(Instant::now() < deadline, "ports still held");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(metrics.media.legs.load(Relaxed), 0);
        // Close answers with the final figures and stops the actor.
        let leg = p.open_leg(&spec(true, true)).unwrap();
        let ports = ports_of(&leg);
        let addr = RelayLeg::new(leg, None).start();
        let last = addr.send(Close).await.unwrap().expect("final figures");
        assert_eq!(last.from_b.packets, 0);
        assert!(can_bind(&ports));
        actix_rt::time::sleep(Duration::from_millis(10)).await;
        assert!(!addr.connected(), "the actor stopped");
    });
}

/// Collects inactivity notices.
struct Session(Vec<MediaInactive>);

impl Actor for Session {
    type Context = Context<Self>;
}

impl Handler<MediaInactive> for Session {
    type Result = ();
    fn handle(&mut self, m: MediaInactive, _: &mut Context<Self>) {
        self.0.push(m);
    }
}

#[derive(Message)]
#[rtype(result = "Vec<MediaInactive>")]
struct Notices;

impl Handler<Notices> for Session {
    type Result = MessageResult<Notices>;
    fn handle(&mut self, _: Notices, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.0.clone())
    }
}

#[test]
fn an_idle_leg_notifies_its_session_once() {
    let p = plane();
    System::new().block_on(async move {
        let leg = p.open_leg(&spec(true, true)).unwrap();
        let (id, to) = (leg.id(), leg.local_rtp(Side::A));
        let session = Session(Vec::new()).start();
        let timeout = Duration::from_millis(200);
        let _relay = RelayLeg::new(leg, Some(session.clone().recipient()))
            .with_timeout(Some(timeout))
            .start();
        // Media flowing every 50 ms keeps it alive.
        let a = Endpoint::new();
        for i in 0..8 {
            a.send(to, &rtp(i, 0xa, 160));
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(session.send(Notices).await.unwrap().is_empty());
        // Then it stops: one notice after about the timeout, and no more.
        actix_rt::time::sleep(timeout + Duration::from_millis(200)).await;
        let notices = session.send(Notices).await.unwrap();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(notices[0].leg, id);
        assert!(notices[0].idle >= timeout);
        actix_rt::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(session.send(Notices).await.unwrap().len(), 1);
    });
}

#[test]
fn the_engine_runs_one_media_plane_per_worker_and_reports_it() {
    let config = cpm_actors::Config {
        sip_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        pin_workers: false,
        data_dir: std::env::temp_dir().join(format!("cpm-media-test-{}", std::process::id())),
        ..cpm_actors::Config::default()
    };
    let engine = cpm_actors::Engine::start(config).expect("engine starts");
    let planes = &engine.shared().media;
    assert_eq!(planes.len(), 2);
    assert_eq!(planes[1].worker(), 1);
    assert_eq!(planes[1].config().timeout, Some(Duration::from_secs(60)));
    let leg = planes[1].open_leg(&spec(true, false)).unwrap();
    assert_eq!(
        leg.local_rtp(Side::A).ip(),
        std::net::IpAddr::from(LOOPBACK)
    );
    let (a, b) = (Endpoint::new(), Endpoint::new());
    leg.set_peer(Side::B, b.addr(), None).unwrap();
    a.send(leg.local_rtp(Side::A), &rtp(1, 0xa, 160));
    a.send(leg.local_rtp(Side::A), b"junk");
    assert_eq!(b.recv(1, Duration::from_millis(500)).len(), 1);
    // A datagram is counted once its send completed (on the io_uring path, a turn later).
    stats_when(&leg, |s| s.from_a.dropped_total() == 1 && s.from_a.packets == 1);
    let text = engine.metrics_text();
    for line in [
        "cpm_media_legs 1\n",
        "cpm_media_ports_in_use 3\n",
        "cpm_media_packets_relayed_total 1\n",
        "cpm_media_bytes_relayed_total 172\n",
        "cpm_media_dropped_total{reason=\"not_rtp\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    leg.close().wait().expect("closed");
    assert!(engine.metrics_text().contains("cpm_media_legs 0\n"));
    let data_dir = engine.shared().config.data_dir.clone();
    engine.shutdown(Duration::ZERO, Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(data_dir);
}

/// The UDP sockets bound to local `port` (any address) in this network namespace, each with
/// the peer it is connected to, from `/proc/net/udp` and `/proc/net/udp6`.
fn udp_sockets_on(port: u16) -> Vec<Option<SocketAddr>> {
    let mut found = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote)) = (f.get(1), f.get(2)) else {
                continue;
            };
            let port_of = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
            if port_of(local) != Some(port) {
                continue;
            }
            let peer = match (remote.split_once(':'), port_of(remote)) {
                (Some((ip, _)), Some(p)) if p != 0 && ip.len() == 8 => {
                    let ip = u32::from_str_radix(ip, 16).unwrap_or(0).to_ne_bytes();
                    Some(SocketAddr::from((ip, p)))
                }
                _ => None,
            };
            found.push(peer);
        }
    }
    found.sort();
    found
}

/// Waits (at most 1 s) until the sockets on `port` are as `expected` (sorted: `None` first).
fn await_sockets_on(port: u16, expected: &[Option<SocketAddr>]) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let found = udp_sockets_on(port);
        if found == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "port {port}: {found:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A plane with or without the connected fast path; without it also unpaced (the loop as it
/// was before both), with it paced as by default.
fn connected_plane(strict: bool, connect: bool) -> MediaPlane {
    let config = MediaConfig {
        ip: LOOPBACK.into(),
        strict_source: strict,
        timeout: None,
        connect_latched: connect,
        pace: if connect {
            MediaConfig::default().pace
        } else {
            Duration::ZERO
        },
        io: IO,
        ..MediaConfig::default()
    };
    MediaPlane::start(0, config, None, Arc::new(WorkerMetrics::default())).unwrap()
}

#[test]
fn the_connected_fast_path_is_the_default() {
    assert!(MediaConfig::default().connect_latched);
    assert_eq!(MediaConfig::default().pace, Duration::from_micros(500));
}

#[test]
fn connected_sockets_count_strangers_as_wrong_source() {
    for connect in [true, false] {
        let p = connected_plane(true, connect);
        let leg = p.open_leg(&spec(true, true)).unwrap();
        let (a, b, stranger) = (Endpoint::new(), Endpoint::new(), Endpoint::new());
        let port_a = leg.local_rtp(Side::A).port();
        leg.set_peer(Side::B, b.addr(), None).unwrap();
        let sent = send_stream(&a, leg.local_rtp(Side::A), 1, 5, 0xa);
        let at_b = b.recv(5, Duration::from_millis(500));
        assert!(at_b.iter().map(|(d, _)| d).eq(sent.iter()));
        // Latched: the A-facing socket is connected to A, its catch-all to no one.
        if connect {
            await_sockets_on(port_a, &[None, Some(a.addr())]);
        } else {
            await_sockets_on(port_a, &[None]);
        }
        // A stranger's packets reach the catch-all and are counted, A's pass.
        send_stream(&stranger, leg.local_rtp(Side::A), 500, 7, 0x5);
        let sent = send_stream(&a, leg.local_rtp(Side::A), 6, 5, 0xa);
        let at_b = b.recv(12, Duration::from_millis(150));
        assert!(at_b.iter().map(|(d, _)| d).eq(sent.iter()), "only A's pass");
        let s = stats_when(&leg, |s| s.from_a.dropped(DropReason::WrongSource) == 7);
        assert_eq!(
            s.from_a.dropped(DropReason::WrongSource),
            7,
            "connect {connect}"
        );
        assert_eq!((s.from_a.packets, s.from_a.relatches), (10, 0));
        assert_eq!(s.from_a.latched, Some(a.addr()));
        // B's media goes to A (sent on the connected socket), not to the stranger.
        b.send(leg.local_rtp(Side::B), &rtp(1, 0xb, 160));
        assert_eq!(
            a.recv(1, Duration::from_millis(500)),
            [(rtp(1, 0xb, 160), leg.local_rtp(Side::A))]
        );
        stranger.silent();
        // A new SDP address (re-INVITE): the new source latches through the catch-all, and
        // the socket is connected to it.
        let a2 = Endpoint::new();
        leg.set_peer(Side::A, a2.addr(), None).unwrap();
        stats(&leg);
        let sent = send_stream(&a2, leg.local_rtp(Side::A), 11, 3, 0xa);
        let at_b = b.recv(3, Duration::from_millis(500));
        assert!(at_b.iter().map(|(d, _)| d).eq(sent.iter()));
        if connect {
            await_sockets_on(port_a, &[None, Some(a2.addr())]);
        }
        b.send(leg.local_rtp(Side::B), &rtp(2, 0xb, 160));
        assert_eq!(a2.recv(1, Duration::from_millis(500)).len(), 1);
        // The old source is now a stranger.
        send_stream(&a, leg.local_rtp(Side::A), 20, 2, 0xa);
        let s = stats_when(&leg, |s| s.from_a.dropped(DropReason::WrongSource) == 9);
        assert_eq!(s.from_a.dropped(DropReason::WrongSource), 9);
        assert_eq!((s.from_a.latched, s.from_a.packets), (Some(a2.addr()), 13));
        b.silent();
        // Closing releases the port, catch-all included.
        leg.close().wait().expect("closed");
        await_sockets_on(port_a, &[]);
        assert!(can_bind(&[port_a]));
    }
}

#[test]
fn connected_sockets_latch_again_without_strict_source() {
    let p = connected_plane(false, true);
    let leg = p.open_leg(&spec(false, false)).unwrap();
    let (a, b, moved) = (Endpoint::new(), Endpoint::new(), Endpoint::new());
    let port_a = leg.local_rtp(Side::A).port();
    leg.set_peer(Side::B, b.addr(), None).unwrap();
    send_stream(&a, leg.local_rtp(Side::A), 1, 3, 0xa);
    assert_eq!(b.recv(3, Duration::from_millis(500)).len(), 3);
    await_sockets_on(port_a, &[None, Some(a.addr())]);
    // A moves: its packets arrive on the catch-all, pass, and the socket follows them.
    let sent = send_stream(&moved, leg.local_rtp(Side::A), 4, 3, 0xa);
    let at_b = b.recv(3, Duration::from_millis(500));
    assert!(at_b.iter().map(|(d, _)| d).eq(sent.iter()));
    await_sockets_on(port_a, &[None, Some(moved.addr())]);
    b.send(leg.local_rtp(Side::B), &rtp(1, 0xb, 160));
    assert_eq!(moved.recv(1, Duration::from_millis(500)).len(), 1);
    a.silent();
    let s = stats(&leg);
    assert_eq!(
        (s.from_a.relatches, s.from_a.latched, s.from_a.packets),
        (1, Some(moved.addr()), 6)
    );
    assert_eq!(s.from_a.dropped_total(), 0);
    // The RTCP port (not muxed) is not connected: one socket, no peer.
    await_sockets_on(leg.local_rtcp(Side::A).unwrap().port(), &[None]);
}

/// Media floods (issue 7): a stranger flooding a latched leg's port and garbage flooding
/// another's, plus datagrams to a port no leg holds, while both legs carry a paced stream:
/// every packet of both streams is relayed, in order, and the flood is dropped and counted.
#[test]
fn a_flood_of_strangers_and_garbage_disturbs_no_leg() {
    let p = connected_plane(true, true);
    let legs = [
        p.open_leg(&spec(true, true)).unwrap(),
        p.open_leg(&spec(true, true)).unwrap(),
    ];
    let ends: Vec<(Endpoint, Endpoint)> =
        (0..2).map(|_| (Endpoint::new(), Endpoint::new())).collect();
    for (leg, (a, b)) in legs.iter().zip(&ends) {
        leg.set_peer(Side::B, b.addr(), None).unwrap();
        send_stream(a, leg.local_rtp(Side::A), 1, 1, 0xa);
        assert_eq!(b.recv(1, Duration::from_millis(500)).len(), 1, "latched");
        await_sockets_on(leg.local_rtp(Side::A).port(), &[None, Some(a.addr())]);
    }
    let unallocated = UdpSocket::bind(SocketAddr::from((LOOPBACK, 0))).unwrap();
    let nobody = unallocated.local_addr().unwrap();
    drop(unallocated);
    let targets = [
        legs[0].local_rtp(Side::A),
        legs[1].local_rtp(Side::A),
        nobody,
    ];
    let flood = std::thread::spawn(move || {
        let s = UdpSocket::bind(SocketAddr::from((LOOPBACK, 0))).unwrap();
        let valid = rtp(1000, 0x5, 160);
        let mut sent = 0u64;
        for i in 0..30_000u32 {
            let (to, data): (SocketAddr, &[u8]) = match i % 3 {
                0 => (targets[0], &valid),
                1 => (targets[1], b"garbage, not RTP at all"),
                _ => (targets[2], &valid),
            };
            if s.send_to(data, to).is_ok() {
                sent += 1;
            }
        }
        sent
    });
    // Both legs' own streams, paced, during the flood.
    let mut sent: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for seq in 2..202u16 {
        for (k, (leg, (a, _))) in legs.iter().zip(&ends).enumerate() {
            sent[k].extend(send_stream(a, leg.local_rtp(Side::A), seq, 1, 0xa));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    flood.join().unwrap();
    for (k, (_, b)) in ends.iter().enumerate() {
        let got = b.recv(200, Duration::from_millis(500));
        assert!(
            got.iter().map(|(d, _)| d).eq(sent[k].iter()),
            "leg {k}: {} of 200 packets, in order: the flood disturbed it",
            got.len()
        );
    }
    let s0 = stats_when(&legs[0], |s| s.from_a.dropped(DropReason::WrongSource) > 0);
    let s1 = stats_when(&legs[1], |s| s.from_a.dropped_total() > 0);
    assert!(s0.from_a.dropped(DropReason::WrongSource) > 0, "{s0:?}");
    assert!(s1.from_a.dropped_total() > 0, "{s1:?}");
    assert_eq!((s0.from_a.packets, s1.from_a.packets), (201, 201));
    assert_eq!(
        s0.from_a.latched,
        Some(ends[0].0.addr()),
        "the flood never latched"
    );
}
