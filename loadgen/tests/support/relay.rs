//! A small SIP and RTP relay for tests, between a caller (side A: `cpm-loadgen call`) and an
//! answering side B (`cpm-loadgen uas`, or a proxy), on one thread on 127.0.0.1.
//!
//! SIP: a stateless proxy (RFC 3261 §16.11). A request is forwarded to the other side with a
//! Via of the relay's own on top; a response loses that Via and goes to the side its request
//! came from (side A is the last address requests came from, side B the fixed `upstream`).
//! In [`Relay::lossy`] mode it also anchors the media: each call (Call-ID) gets two RTP sockets
//! of the relay; the SDP of the offer and of the answer is rewritten (`c=` and the first `m=`
//! port, RFC 3264 §5/§6) to name them, and the Contact of B's responses is rewritten to the
//! relay so that the dialog's ACK and BYE come through it. RTP is forwarded dropping every Nth
//! packet of each call and direction (the Nth, 2Nth, ..., so never the first). [`Relay::tap`]
//! forwards SIP untouched and relays no media: it only records what passed.
//!
//! Ordering: before each SIP message is handled, every RTP socket is drained, so an RTP packet
//! sent before a BYE (or before the BYE's 200) is forwarded before it, as it would arrive
//! without the relay; receivers thus count every packet of a call before it ends.
//!
//! The relay records every SIP message and, per RTP stream (SSRC), the sequence numbers it
//! dropped and the range it delivered, from which [`RelayLog::detectable_loss`] gives the exact
//! loss a receiver can report (RFC 3550 §6.4.1 / A.3: expected = highest − base + 1, so a
//! packet dropped after the last one delivered cannot be seen as lost).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::rtp;
use cpm_engine::sdp::SessionDescription;
use cpm_engine::sip::{self, HeaderName, Message};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};

/// The relay's thread ends by itself after this long, whatever happens in the test.
const MAX_LIFE: Duration = Duration::from_secs(120);

const SIP_A: Token = Token(0);
const SIP_B: Token = Token(1);
const WAKER: Token = Token(2);

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Which way a message or packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// From side A (the caller) to side B.
    ToCallee = 0,
    /// From side B to side A.
    ToCaller = 1,
}

/// One RTP stream (SSRC) as the relay saw it; sequence numbers are kept as offsets from the
/// first one seen (streams of tests are far shorter than 2^16 packets).
#[derive(Debug, Clone)]
pub struct Stream {
    /// The direction it was first seen in (where its sender is).
    pub origin: Dir,
    first: u16,
    /// (direction, offset) of every packet dropped.
    dropped: Vec<(Dir, u16)>,
    /// Per direction, the lowest and highest offset forwarded.
    delivered: [Option<(u16, u16)>; 2],
}

/// What the relay did, returned by [`Relay::stop`].
#[derive(Debug, Default)]
pub struct RelayLog {
    /// Every SIP message received, in order, with its direction.
    pub sip: Vec<(Dir, Message)>,
    /// Calls whose media were anchored.
    pub calls: usize,
    /// RTP packets forwarded, per direction ([`Dir`] as index).
    pub forwarded: [u64; 2],
    /// RTP packets dropped on purpose, per direction.
    pub dropped: [u64; 2],
    /// Datagrams on an RTP socket with no known destination yet.
    pub unroutable: u64,
    /// SIP datagrams that did not parse (not forwarded).
    pub unparsable: u64,
    /// Per SSRC.
    pub streams: HashMap<u32, Stream>,
}

impl RelayLog {
    /// The loss a receiver at the end of `toward` can count: packets of the streams delivered
    /// to it that were dropped on their way there (in `toward`, or before that in the other
    /// direction for a stream that went out and was echoed back) and precede a packet of the
    /// same stream it did receive.
    pub fn detectable_loss(&self, toward: Dir) -> u64 {
        let t = toward as usize;
        self.streams
            .values()
            .filter_map(|s| {
                let (lo, hi) = s.delivered[t]?;
                let n = s
                    .dropped
                    .iter()
                    .filter(|&&(d, off)| {
                        (d == toward || s.origin != toward) && lo < off && off < hi
                    })
                    .count();
                Some(n as u64)
            })
            .sum()
    }

    /// The SIP messages that travelled `dir`.
    pub fn messages(&self, dir: Dir) -> impl Iterator<Item = &Message> {
        self.sip
            .iter()
            .filter(move |(d, _)| *d == dir)
            .map(|(_, m)| m)
    }
}

/// A relay running on its own thread; stopped (and joined) by [`Relay::stop`] or on drop.
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<RelayLog>>,
}

impl Relay {
    /// A relay toward `upstream` that anchors the media and drops every `drop_every`th RTP
    /// packet of each call and direction (`None`: drops nothing).
    pub fn lossy(upstream: SocketAddr, drop_every: Option<u64>) -> Relay {
        if let Some(n) = drop_every {
            assert!(
                n >= 2,
                "dropping every packet would leave nothing to measure"
            );
        }
        Relay::start(upstream, true, drop_every)
    }

    /// A relay toward `upstream` that forwards SIP unchanged and records it (no media).
    pub fn tap(upstream: SocketAddr) -> Relay {
        Relay::start(upstream, false, None)
    }

    fn start(upstream: SocketAddr, media: bool, drop_every: Option<u64>) -> Relay {
        let poll = Poll::new().expect("mio poll");
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).expect("mio waker"));
        let mut sip_a = UdpSocket::bind(SocketAddr::new(LOCALHOST, 0)).expect("bind relay A");
        let mut sip_b = UdpSocket::bind(SocketAddr::new(LOCALHOST, 0)).expect("bind relay B");
        poll.registry()
            .register(&mut sip_a, SIP_A, Interest::READABLE)
            .unwrap();
        poll.registry()
            .register(&mut sip_b, SIP_B, Interest::READABLE)
            .unwrap();
        let addr = sip_a.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut state = State {
            poll,
            sip: [sip_a, sip_b],
            upstream,
            caller: None,
            media,
            drop_every,
            calls: Vec::new(),
            by_call_id: HashMap::new(),
            log: RelayLog::default(),
            buf: vec![0; 65536],
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("test-relay".into())
            .spawn(move || {
                state.run(&flag);
                state.log
            })
            .expect("spawn relay thread");
        Relay {
            addr,
            stop,
            waker,
            thread: Some(thread),
        }
    }

    /// Where side A sends its requests.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the relay and returns what it did.
    pub fn stop(mut self) -> RelayLog {
        self.halt().expect("relay thread panicked")
    }

    fn halt(&mut self) -> Option<RelayLog> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        self.thread.take()?.join().ok()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// One anchored call: the relay's RTP socket facing each side, and where each side receives.
struct Call {
    /// [0] faces the caller (named in the answer A gets), [1] faces B (named in the offer).
    rtp: [UdpSocket; 2],
    /// Where the caller's media go (its offer), and where B's go (its answer).
    caller_media: Option<SocketAddr>,
    callee_media: Option<SocketAddr>,
    /// Packets seen per direction, for every-Nth.
    seen: [u64; 2],
}

struct State {
    poll: Poll,
    /// [0] faces side A, [1] faces side B.
    sip: [UdpSocket; 2],
    upstream: SocketAddr,
    caller: Option<SocketAddr>,
    media: bool,
    drop_every: Option<u64>,
    calls: Vec<Call>,
    by_call_id: HashMap<Bytes, usize>,
    log: RelayLog,
    buf: Vec<u8>,
}

impl State {
    fn run(&mut self, stop: &AtomicBool) {
        let deadline = Instant::now() + MAX_LIFE;
        let mut events = Events::with_capacity(64);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(100)))
            {
                assert_eq!(e.kind(), ErrorKind::Interrupted, "relay poll: {e}");
            }
            // Edge-triggered: drain every socket until nothing is left.
            loop {
                let mut progress = self.drain_rtp();
                for side in 0..2 {
                    if let Some((msg, src)) = self.recv_sip(side) {
                        progress = true;
                        // RTP sent before this message is forwarded before it.
                        self.drain_rtp();
                        self.on_sip(side, msg, src);
                    }
                }
                if !progress {
                    break;
                }
            }
        }
    }

    fn recv_sip(&mut self, side: usize) -> Option<(Bytes, SocketAddr)> {
        match self.sip[side].recv_from(&mut self.buf) {
            Ok((n, src)) => Some((Bytes::copy_from_slice(&self.buf[..n]), src)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => panic!("relay SIP recv: {e}"),
        }
    }

    fn on_sip(&mut self, side: usize, raw: Bytes, src: SocketAddr) {
        let dir = if side == 0 {
            Dir::ToCallee
        } else {
            Dir::ToCaller
        };
        let Ok(mut msg) = sip::parse(raw) else {
            self.log.unparsable += 1;
            return;
        };
        self.log.sip.push((dir, msg.clone()));
        let out = 1 - side;
        let dest = if msg.is_request() {
            if side == 0 {
                self.caller = Some(src);
            }
            let via = format!(
                "SIP/2.0/UDP {};branch={}",
                self.sip[out].local_addr().unwrap(),
                relay_branch(&msg)
            );
            msg.headers.push_front(HeaderName::Via, via);
            if side == 0 {
                Some(self.upstream)
            } else {
                self.caller
            }
        } else {
            msg.headers.remove_first_value(&HeaderName::Via);
            if side == 0 {
                Some(self.upstream)
            } else {
                self.caller
            }
        };
        if self.media {
            self.anchor(dir, &mut msg);
        }
        if let Some(dest) = dest {
            self.sip[out]
                .send_to(&msg.to_bytes(), dest)
                .expect("relay SIP send");
        }
    }

    /// Rewrites the SDP of `msg` toward the call's relay sockets (creating them for a new
    /// call) and the Contact of B's responses toward the relay.
    fn anchor(&mut self, dir: Dir, msg: &mut Message) {
        if dir == Dir::ToCaller
            && !msg.is_request()
            && msg.headers.get(&HeaderName::Contact).is_some()
        {
            let contact = format!("<sip:relay@{}>", self.sip[0].local_addr().unwrap());
            msg.headers.set(HeaderName::Contact, contact);
        }
        if msg.body.is_empty() {
            return;
        }
        let (Some(call_id), Ok(mut sdp)) =
            (msg.call_id().cloned(), SessionDescription::parse(&msg.body))
        else {
            return;
        };
        let i = match self.by_call_id.get(&call_id) {
            Some(&i) => i,
            None => {
                let i = self.new_call();
                self.by_call_id.insert(call_id, i);
                i
            }
        };
        let theirs = sdp
            .media()
            .iter()
            .filter(|m| m.port() != 0)
            .find_map(|m| sdp.media_address(m));
        // The side that receives this SDP sends its media to the relay socket facing it.
        let facing = match dir {
            Dir::ToCallee => {
                self.calls[i].caller_media = theirs;
                1
            }
            Dir::ToCaller => {
                self.calls[i].callee_media = theirs;
                0
            }
        };
        let ours = self.calls[i].rtp[facing].local_addr().unwrap();
        sdp.set_all_connections(ours.ip());
        if let Some(m) = sdp.media_mut().iter_mut().find(|m| m.port() != 0) {
            m.set_port(ours.port());
        }
        msg.set_body(sdp.to_bytes(), Some("application/sdp"));
    }

    fn new_call(&mut self) -> usize {
        let i = self.calls.len();
        let bind = |k: usize| {
            let mut s = UdpSocket::bind(SocketAddr::new(LOCALHOST, 0)).expect("bind relay RTP");
            self.poll
                .registry()
                .register(&mut s, Token(3 + 2 * i + k), Interest::READABLE)
                .unwrap();
            s
        };
        let rtp = [bind(0), bind(1)];
        self.calls.push(Call {
            rtp,
            caller_media: None,
            callee_media: None,
            seen: [0; 2],
        });
        self.log.calls += 1;
        i
    }

    /// Forwards (or drops) every datagram waiting on an RTP socket; true if there was one.
    fn drain_rtp(&mut self) -> bool {
        let mut any = false;
        for i in 0..self.calls.len() {
            for facing in 0..2 {
                loop {
                    let n = match self.calls[i].rtp[facing].recv_from(&mut self.buf) {
                        Ok((n, _)) => n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("relay RTP recv: {e}"),
                    };
                    any = true;
                    self.forward_rtp(i, facing, n);
                }
            }
        }
        any
    }

    fn forward_rtp(&mut self, i: usize, facing: usize, n: usize) {
        let (dir, out) = if facing == 0 {
            (Dir::ToCallee, 1)
        } else {
            (Dir::ToCaller, 0)
        };
        let call = &mut self.calls[i];
        let dest = match dir {
            Dir::ToCallee => call.callee_media,
            Dir::ToCaller => call.caller_media,
        };
        let Some(dest) = dest else {
            self.log.unroutable += 1;
            return;
        };
        call.seen[dir as usize] += 1;
        let drop = self
            .drop_every
            .is_some_and(|k| call.seen[dir as usize].is_multiple_of(k));
        let pkt = rtp::parse(Bytes::copy_from_slice(&self.buf[..n])).ok();
        if let Some(p) = pkt {
            let s = self.log.streams.entry(p.ssrc().0).or_insert(Stream {
                origin: dir,
                first: p.seq().0,
                dropped: Vec::new(),
                delivered: [None; 2],
            });
            let off = p.seq().0.wrapping_sub(s.first);
            if drop {
                s.dropped.push((dir, off));
            } else {
                let d = &mut s.delivered[dir as usize];
                *d = Some(d.map_or((off, off), |(lo, hi)| (lo.min(off), hi.max(off))));
            }
        }
        if drop {
            self.log.dropped[dir as usize] += 1;
            return;
        }
        call.rtp[out]
            .send_to(&self.buf[..n], dest)
            .expect("relay RTP send");
        self.log.forwarded[dir as usize] += 1;
    }
}

/// The branch of the relay's Via: derived from the request's own top branch, so that a
/// retransmission gets the same one (RFC 3261 §16.11).
fn relay_branch(msg: &Message) -> String {
    let theirs = msg
        .top_via()
        .ok()
        .and_then(|v| v.branch().map(|b| String::from_utf8_lossy(b).into_owned()))
        .unwrap_or_default();
    format!("z9hG4bK-relay-{}", theirs.trim_start_matches("z9hG4bK"))
}
