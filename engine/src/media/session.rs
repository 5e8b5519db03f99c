//! [`MediaSession`]: the media state of one B2BUA session, driven by the SDP that crosses it
//! (RFC 3264 offer/answer, with the RFC 6337 rollback of a rejected offer).
//!
//! ```text
//!                 offer(X)                       answer(Y)
//!   agreed ───────────────────► offer pending ───────────────► agreed (new)
//!     ▲                              │
//!     └────── rollback() ────────────┘   (a second offer while one is pending: 491)
//! ```
//!
//! The legs the user plane runs are those of the pending offer while there is one (media may
//! flow before the answer: early media, or the offerer's new address), else the agreed ones.
//! Each transition emits the difference as [`LegChange`]s. Ports are released only when no
//! state holds them any more: at the answer (streams the answer or the offer disabled) or at
//! the rollback (legs the offer had added).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::msrp::{self, MsrpLeg};
use super::rewrite::{self, Peer, Plan};
use super::{LegChange, LocalPorts, MediaConfig, MediaKind, MediaReject, PortPool, SdpRelay};
use super::{Side, StreamId};
use crate::hash::{fnv1a, fnv1a_extend};
use crate::sdp::{NoCommonCodec, Origin, SessionDescription};

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

/// The relay of one RTP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leg {
    kind: MediaKind,
    /// The local ports each side sends to (index: [`idx`]).
    ports: [LocalPorts; 2],
    /// Where each side receives, once its SDP named an address.
    peers: [Option<Peer>; 2],
    /// RTCP on the RTP port: offered (while pending), then offered and answered (RFC 5761).
    rtcp_mux: bool,
}

impl Leg {
    /// The `SetPeer` for `side`, if its address is known.
    fn set_peer(&self, stream: StreamId, side: Side) -> Option<LegChange> {
        let p = self.peers[idx(side)]?;
        Some(LegChange::SetPeer {
            stream,
            side,
            rtp: p.rtp,
            rtcp: (!self.rtcp_mux).then_some(p.rtcp),
        })
    }
}

/// An offer sent on, waiting for its answer.
#[derive(Debug, Clone)]
struct Pending {
    from: Side,
    /// The legs as the offer made them, one entry per m-line.
    legs: Vec<Option<Leg>>,
    /// The anchored MSRP streams as the offer made them, one entry per m-line.
    msrp: Vec<Option<MsrpLeg>>,
    /// The m-lines we sent with port 0 (codec policy), which the answer must keep at 0.
    zeroed: Vec<bool>,
}

/// The last offer answered, for a revised answer to it (an answer in an unreliable 18x, then
/// the 2xx; RFC 6337 §3.1): who offered, and the m-lines the offerer must see at port 0 (those
/// the policy or the first answer rejected, whose ports are gone).
#[derive(Debug, Clone)]
struct Answered {
    offerer: Side,
    zeroed: Vec<bool>,
}

/// The origin we present to one side and the fingerprint of what we last sent it.
#[derive(Debug, Clone)]
struct Sent {
    origin: Origin,
    fingerprint: u64,
}

/// The media state of one B2BUA session between [`Side::A`] and [`Side::B`].
///
/// The pool is not owned: every call that can allocate or release takes the worker's
/// `&mut PortPool` (sans-IO, nothing shared); [`MediaSession::with_pool`] borrows one for the
/// [`SdpRelay`] trait. Call [`MediaSession::release_all`] when the session ends, or its ports
/// stay held.
#[derive(Debug)]
pub struct MediaSession {
    config: Arc<MediaConfig>,
    legs: Vec<Option<Leg>>,
    msrp: Vec<Option<MsrpLeg>>,
    pending: Option<Pending>,
    answered: Option<Answered>,
    sent: [Option<Sent>; 2],
    seed: Option<u64>,
    changes: VecDeque<LegChange>,
}

/// A [`MediaSession`] with the worker's pool at hand: the [`SdpRelay`] the session controller
/// drives.
#[derive(Debug)]
pub struct Relay<'a> {
    session: &'a mut MediaSession,
    pool: &'a mut PortPool,
}

impl SdpRelay for Relay<'_> {
    fn offer(&mut self, from: Side, sdp: &Bytes) -> Result<Bytes, MediaReject> {
        self.session.offer(self.pool, from, sdp)
    }

    fn answer(&mut self, from: Side, sdp: &Bytes) -> Result<Bytes, MediaReject> {
        self.session.answer(self.pool, from, sdp)
    }

    fn rollback(&mut self) {
        self.session.rollback(self.pool);
    }
}

fn reject(status: u16, reason: impl Into<String>) -> MediaReject {
    MediaReject {
        status,
        reason: reason.into(),
        retry_after: None,
    }
}

impl MediaSession {
    /// A session with no stream yet.
    pub fn new(config: Arc<MediaConfig>) -> MediaSession {
        MediaSession {
            config,
            legs: Vec::new(),
            msrp: Vec::new(),
            pending: None,
            answered: None,
            sent: [None, None],
            seed: None,
            changes: VecDeque::new(),
        }
    }

    /// This session with `pool` at hand, as the [`SdpRelay`] of the session controller.
    pub fn with_pool<'a>(&'a mut self, pool: &'a mut PortPool) -> Relay<'a> {
        Relay {
            session: self,
            pool,
        }
    }

    /// The configuration this session rewrites with.
    pub fn config(&self) -> &Arc<MediaConfig> {
        &self.config
    }

    /// The next change for the user plane, in order.
    pub fn poll_change(&mut self) -> Option<LegChange> {
        let next = self.changes.pop_front();
        // Freed once drained: an idle session holds none.
        if next.is_none() && self.changes.capacity() > 0 {
            self.changes = VecDeque::new();
        }
        next
    }

    /// Whether an offer was sent on and its answer (or rollback) is awaited.
    pub fn offer_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The number of legs the user plane runs now (RTP and MSRP).
    pub fn leg_count(&self) -> usize {
        self.live().iter().flatten().count() + self.live_msrp().iter().flatten().count()
    }

    /// Our A-facing and B-facing MSRP URIs of `stream`, if it is anchored now.
    pub fn msrp_uris(&self, stream: StreamId) -> Option<(Bytes, Bytes)> {
        let leg = self.live_msrp().get(stream.0)?.as_ref()?;
        let [a, b] = leg.local.clone();
        Some((a, b))
    }

    /// The A-facing and B-facing ports of `stream`'s leg, if it is relayed now.
    pub fn ports(&self, stream: StreamId) -> Option<(LocalPorts, LocalPorts)> {
        let leg = self.live().get(stream.0)?.as_ref()?;
        Some((leg.ports[0], leg.ports[1]))
    }

    /// An offer from `from` (RFC 3264 §5, §8): returns the offer for the other side, every
    /// relayed stream pointed at our ports facing it. Streams matched by m-line index keep
    /// their legs; new RTP streams get one (a port pair or a single port per side); streams
    /// set to port 0 lose theirs once answered.
    ///
    /// A stream the codec policy leaves without a media codec is sent on with port 0, which
    /// rejects it for both sides (RFC 3264 §6: the answerer rejects a stream it has no format
    /// for by port 0); only when that leaves no active stream at all is the offer refused with
    /// 488 (RFC 3261 §21.4.26). Errors leave no port allocated and the state unchanged: 400
    /// (unparsable, with the [`crate::sdp::SdpError`] reason), 488, 491 (an offer is already
    /// pending, RFC 3261 §14.2), 503 with `Retry-After` (no free port).
    pub fn offer(
        &mut self,
        pool: &mut PortPool,
        from: Side,
        sdp: &Bytes,
    ) -> Result<Bytes, MediaReject> {
        if self.pending.is_some() {
            return Err(reject(491, "Request Pending"));
        }
        let offer = parse(sdp)?;
        let to = from.other();
        let allowed = self.config.codecs.as_deref();
        let plans: Vec<Plan> = offer
            .media()
            .iter()
            .map(|m| rewrite::plan(m, allowed, self.config.msrp.is_some()))
            .collect();
        let rejected = plans.contains(&Plan::Reject);
        let active = offer
            .media()
            .iter()
            .zip(&plans)
            .any(|(m, p)| m.port() != 0 && *p != Plan::Reject);
        if rejected && !active {
            tracing::debug!("SDP offer: no stream with an allowed codec");
            return Err(reject(NoCommonCodec::STATUS, NoCommonCodec.reason()));
        }
        let legs = self.plan_legs(pool, &offer, &plans, from)?;
        let msrp = self.plan_msrp(&offer, &plans, from);
        let mut out = offer.clone();
        for (m, plan) in out.media_mut().iter_mut().zip(&plans) {
            match plan {
                Plan::Reject => m.set_port(0),
                Plan::Relay { removed, .. } if !removed.is_empty() => {
                    m.remove_formats(|f| removed.iter().any(|r| r == f));
                }
                _ => {}
            }
        }
        self.point(&mut out, &legs, &msrp, to, true);
        self.seed
            .get_or_insert_with(|| fnv1a(offer.origin().to_bytes().as_ref()));
        let body = self.stamp(to, &mut out);
        emit_changes(&mut self.changes, (&self.legs, &legs), (&self.msrp, &msrp));
        self.answered = None;
        self.pending = Some(Pending {
            from,
            legs,
            msrp,
            zeroed: plans.iter().map(|p| *p == Plan::Reject).collect(),
        });
        Ok(body)
    }

    /// The legs after an offer from `from`: kept, new (allocated here) or none, per m-line.
    /// On exhaustion, what was allocated here is released and 503 returned.
    fn plan_legs(
        &self,
        pool: &mut PortPool,
        offer: &SessionDescription,
        plans: &[Plan],
        from: Side,
    ) -> Result<Vec<Option<Leg>>, MediaReject> {
        let mut legs: Vec<Option<Leg>> = Vec::with_capacity(plans.len());
        for (i, (m, plan)) in offer.media().iter().zip(plans).enumerate() {
            let Plan::Relay { single, .. } = *plan else {
                legs.push(None);
                continue;
            };
            let kept = self.legs.get(i).and_then(Option::as_ref);
            let mut leg = match kept.filter(|l| l.ports[0].rtcp.is_none() == single) {
                Some(l) => l.clone(),
                None => {
                    let Some(ports) = allocate(pool, single) else {
                        self.release_new(pool, &legs);
                        tracing::warn!(
                            capacity = pool.capacity(),
                            in_use = pool.in_use(),
                            "media port pool exhausted: 503"
                        );
                        return Err(MediaReject {
                            retry_after: Some(self.config.retry_after),
                            ..reject(503, "Media Ports Exhausted")
                        });
                    };
                    Leg {
                        kind: MediaKind::from_token(m.kind()),
                        ports,
                        peers: [None, None],
                        rtcp_mux: false,
                    }
                }
            };
            if let Some(p) = rewrite::peer_of(offer, m) {
                leg.peers[idx(from)] = Some(p);
            }
            leg.rtcp_mux = m.rtcp_mux();
            legs.push(Some(leg));
        }
        Ok(legs)
    }

    /// The MSRP legs after an offer from `from`: kept (same m-line, still anchored: same
    /// session-ids, the offerer's path and role updated) or new, per m-line.
    fn plan_msrp(
        &self,
        offer: &SessionDescription,
        plans: &[Plan],
        from: Side,
    ) -> Vec<Option<MsrpLeg>> {
        let Some(config) = &self.config.msrp else {
            return vec![None; plans.len()];
        };
        let host = match self.config.ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        offer
            .media()
            .iter()
            .zip(plans)
            .enumerate()
            .map(|(i, (m, plan))| {
                if *plan != Plan::Msrp {
                    return None;
                }
                let kept = self.msrp.get(i).and_then(Option::as_ref).cloned();
                let mut leg = kept.unwrap_or_else(|| MsrpLeg::new(config, &host));
                leg.peers[idx(from)] = msrp::peer_of(m, true);
                Some(leg)
            })
            .collect()
    }

    /// Releases the ports of `legs` that no agreed leg holds (the new ones of an offer).
    fn release_new(&self, pool: &mut PortPool, legs: &[Option<Leg>]) {
        release_unheld(pool, legs.iter().flatten(), &self.legs);
    }

    /// The answer from `from` to the pending offer (RFC 3264 §6): returns the answer for the
    /// offerer, every relayed stream pointed at our ports facing it. Streams the answer
    /// rejects (port 0) lose their legs.
    ///
    /// A further answer from the same side to the same offer (18x then 2xx, or another fork)
    /// revises it: new peer addresses, streams it rejects are closed, streams rejected before
    /// stay at port 0. Errors leave the state unchanged and an offer pending (call
    /// [`MediaSession::rollback`]): 400 when unparsable or its m-lines do not match the offer,
    /// 500 when `from` has no offer to answer.
    pub fn answer(
        &mut self,
        pool: &mut PortPool,
        from: Side,
        sdp: &Bytes,
    ) -> Result<Bytes, MediaReject> {
        let (to, mut legs, mut msrp, zeroed) = match (&self.pending, &self.answered) {
            (Some(p), _) if p.from == from.other() => {
                (p.from, p.legs.clone(), p.msrp.clone(), p.zeroed.clone())
            }
            (None, Some(a)) if a.offerer == from.other() => (
                a.offerer,
                self.legs.clone(),
                self.msrp.clone(),
                a.zeroed.clone(),
            ),
            _ => return Err(reject(500, "No SDP Offer Pending")),
        };
        let answer = parse(sdp)?;
        if answer.media().len() != legs.len() {
            tracing::debug!("SDP answer: m-lines do not match the offer");
            return Err(reject(400, "SDP Answer Does Not Match Offer"));
        }
        for ((slot, m), &zeroed) in legs.iter_mut().zip(answer.media()).zip(&zeroed) {
            let accepted = m.port() != 0 && !zeroed;
            match slot {
                Some(leg) if accepted => {
                    if let Some(p) = rewrite::peer_of(&answer, m) {
                        leg.peers[idx(from)] = Some(p);
                    }
                    leg.rtcp_mux &= m.rtcp_mux();
                }
                _ => *slot = None,
            }
        }
        for ((slot, m), &zeroed) in msrp.iter_mut().zip(answer.media()).zip(&zeroed) {
            let peer = (m.port() != 0 && !zeroed)
                .then(|| msrp::peer_of(m, false))
                .flatten();
            match (slot.as_mut(), peer) {
                (Some(leg), Some(peer)) => leg.peers[idx(from)] = Some(peer),
                _ => *slot = None,
            }
        }
        let mut out = answer.clone();
        let offered_msrp = self.live_msrp();
        for (i, (m, &zeroed)) in out.media_mut().iter_mut().zip(&zeroed).enumerate() {
            // An anchored stream the answer accepts without a path cannot be relayed.
            let unusable = offered_msrp.get(i).is_some_and(Option::is_some) && msrp[i].is_none();
            if (zeroed || unusable) && m.port() != 0 {
                m.set_port(0);
            }
        }
        self.point(&mut out, &legs, &msrp, to, false);
        let body = self.stamp(to, &mut out);
        let relayed = self.pending.as_ref().map_or(&self.legs, |p| &p.legs);
        let anchored = self.live_msrp();
        let gone = |i: usize| {
            let rtp = relayed.get(i).is_some_and(Option::is_some) && legs[i].is_none();
            let msrp = anchored.get(i).is_some_and(Option::is_some) && msrp[i].is_none();
            rtp || msrp
        };
        let zeroed = zeroed
            .iter()
            .enumerate()
            .map(|(i, &z)| z || gone(i))
            .collect();
        self.answered = Some(Answered {
            offerer: to,
            zeroed,
        });
        self.settle(pool, legs, msrp);
        Ok(body)
    }

    /// Drops the pending offer (rejected, or abandoned by CANCEL): back to the agreed legs,
    /// releasing the ports the offer had taken (RFC 3264 §8, RFC 6337 §3.4). No-op when no
    /// offer is pending.
    pub fn rollback(&mut self, pool: &mut PortPool) {
        if self.pending.is_some() {
            let agreed = self.legs.clone();
            let msrp = self.msrp.clone();
            self.settle(pool, agreed, msrp);
        }
    }

    /// Ends the session's media: a `Close` for every leg, every port back to `pool`.
    pub fn release_all(&mut self, pool: &mut PortPool) {
        self.answered = None;
        self.settle(pool, Vec::new(), Vec::new());
    }

    /// Makes `agreed` the agreed legs with no offer pending: emits the changes from the live
    /// legs and releases the ports no state holds any more.
    fn settle(
        &mut self,
        pool: &mut PortPool,
        agreed: Vec<Option<Leg>>,
        agreed_msrp: Vec<Option<MsrpLeg>>,
    ) {
        let (pending, pending_msrp) = match self.pending.take() {
            Some(p) => (Some(p.legs), Some(p.msrp)),
            None => (None, None),
        };
        let live = pending.as_deref().unwrap_or(&self.legs);
        let live_msrp = pending_msrp.as_deref().unwrap_or(&self.msrp);
        emit_changes(
            &mut self.changes,
            (live, &agreed),
            (live_msrp, &agreed_msrp),
        );
        let held = self.legs.iter().chain(pending.iter().flatten());
        release_unheld(pool, held.flatten(), &agreed);
        self.legs = agreed;
        self.msrp = agreed_msrp;
    }

    /// The legs the user plane runs: the pending offer's, else the agreed ones.
    fn live(&self) -> &[Option<Leg>] {
        match &self.pending {
            Some(p) => &p.legs,
            None => &self.legs,
        }
    }

    /// The MSRP legs the user plane runs: the pending offer's, else the agreed ones.
    fn live_msrp(&self) -> &[Option<MsrpLeg>] {
        match &self.pending {
            Some(p) => &p.msrp,
            None => &self.msrp,
        }
    }

    /// Points the relayed streams of `d` (those with a leg: RTP ports, or our MSRP URI and
    /// role, `offer` telling which `a=setup` to write) and its session `c=` at us facing `to`.
    fn point(
        &self,
        d: &mut SessionDescription,
        legs: &[Option<Leg>],
        msrp: &[Option<MsrpLeg>],
        to: Side,
        offer: bool,
    ) {
        let ip = self.config.ip;
        let session_c = d.connection().is_some();
        for (i, m) in d.media_mut().iter_mut().enumerate() {
            if let Some(Some(leg)) = legs.get(i) {
                rewrite::point_stream(m, leg.ports[idx(to)], ip, session_c);
            }
            if let (Some(Some(leg)), Some(config)) = (msrp.get(i), &self.config.msrp) {
                msrp::point(m, config, ip, session_c, leg, to, offer);
            }
        }
        let relayed: Vec<bool> = (0..d.media().len())
            .map(|i| {
                legs.get(i).is_some_and(Option::is_some) || msrp.get(i).is_some_and(Option::is_some)
            })
            .collect();
        rewrite::point_session(d, &relayed, ip);
    }

    /// Puts our origin for side `to` on `d` and prints it: the same session id every time, the
    /// version incremented exactly when the content differs from what `to` was last sent
    /// (RFC 3264 §8).
    fn stamp(&mut self, to: Side, d: &mut SessionDescription) -> Bytes {
        let fingerprint = rewrite::fingerprint(d);
        let origin = match &self.sent[idx(to)] {
            Some(s) if s.fingerprint == fingerprint => s.origin.clone(),
            Some(s) => {
                let mut o = s.origin.clone();
                o.session_version = o.session_version.wrapping_add(1);
                o
            }
            None => {
                let seed = self.seed.unwrap_or_default();
                let id = fnv1a_extend(seed, &[b'A' + idx(to) as u8]) >> 2;
                Origin::new(Bytes::from_static(b"-"), id, 1, self.config.ip)
            }
        };
        // Our origin is made of a token, two decimals and an IP literal: it always prints.
        let _ = d.set_origin(origin.clone());
        self.sent[idx(to)] = Some(Sent {
            origin,
            fingerprint,
        });
        d.to_bytes()
    }
}

fn parse(sdp: &Bytes) -> Result<SessionDescription, MediaReject> {
    SessionDescription::parse(sdp).map_err(|e| {
        tracing::debug!(error = %e, "unparsable SDP");
        reject(400, e.reason())
    })
}

fn allocate(pool: &mut PortPool, single: bool) -> Option<[LocalPorts; 2]> {
    let take = |pool: &mut PortPool| {
        if single {
            pool.allocate_single()
        } else {
            pool.allocate_pair()
        }
    };
    let a = take(pool)?;
    match take(pool) {
        Some(b) => Some([a, b]),
        None => {
            pool.release(a);
            None
        }
    }
}

/// Releases every port of `held` that no leg of `kept` holds.
fn release_unheld<'a>(
    pool: &mut PortPool,
    held: impl Iterator<Item = &'a Leg>,
    kept: &[Option<Leg>],
) {
    let still = |p: &LocalPorts| kept.iter().flatten().any(|k| k.ports.contains(p));
    for leg in held {
        for p in leg.ports.iter().filter(|p| !still(p)) {
            pool.release(*p);
        }
    }
}

/// The changes that take the user plane from `before` to `after`, stream by stream: `Close`
/// for a leg gone or replaced, `Open` and its known peers for a new one, `SetPeer` for a peer
/// address (or its RTCP multiplexing) that changed.
fn emit_diff(out: &mut VecDeque<LegChange>, before: &[Option<Leg>], after: &[Option<Leg>]) {
    for i in 0..before.len().max(after.len()) {
        let stream = StreamId(i);
        let old = before.get(i).and_then(Option::as_ref);
        let new = after.get(i).and_then(Option::as_ref);
        let same_ports = matches!((old, new), (Some(o), Some(n)) if o.ports == n.ports);
        if old.is_some() && !same_ports {
            out.push_back(LegChange::Close { stream });
        }
        let Some(new) = new else { continue };
        if !same_ports {
            out.push_back(LegChange::Open {
                stream,
                kind: new.kind,
                a_facing: new.ports[0],
                b_facing: new.ports[1],
                rtcp_mux: new.rtcp_mux,
            });
        }
        for side in [Side::A, Side::B] {
            let was = old
                .filter(|_| same_ports)
                .and_then(|o| o.set_peer(stream, side));
            let now = new.set_peer(stream, side);
            if now.is_some() && now != was {
                out.extend(now);
            }
        }
    }
}

/// The changes that take the RTP and the MSRP legs from their `(before, after)`: the MSRP
/// `Close`s first, then the RTP changes, then the other MSRP ones, so a stream that changes
/// from RTP to MSRP at one m-line index (a port-0 m-line reused, RFC 3264 §8.1) or back is
/// closed before it is opened again.
fn emit_changes(
    out: &mut VecDeque<LegChange>,
    rtp: (&[Option<Leg>], &[Option<Leg>]),
    msrp: (&[Option<MsrpLeg>], &[Option<MsrpLeg>]),
) {
    let mut anchored = VecDeque::new();
    emit_msrp_diff(&mut anchored, msrp.0, msrp.1);
    let (closes, rest): (Vec<_>, Vec<_>) = anchored
        .into_iter()
        .partition(|c| matches!(c, LegChange::Close { .. }));
    out.extend(closes);
    emit_diff(out, rtp.0, rtp.1);
    out.extend(rest);
}

/// The changes that take the MSRP legs from `before` to `after`: `Close` for a leg gone or
/// replaced (other session-ids), `OpenMsrp` for a new one, `MsrpPeer` for a side whose path or
/// role is new.
fn emit_msrp_diff(
    out: &mut VecDeque<LegChange>,
    before: &[Option<MsrpLeg>],
    after: &[Option<MsrpLeg>],
) {
    for i in 0..before.len().max(after.len()) {
        let stream = StreamId(i);
        let old = before.get(i).and_then(Option::as_ref);
        let new = after.get(i).and_then(Option::as_ref);
        let same = matches!((old, new), (Some(o), Some(n)) if o.local == n.local);
        if old.is_some() && !same {
            out.push_back(LegChange::Close { stream });
        }
        let Some(new) = new else { continue };
        if !same {
            out.push_back(LegChange::OpenMsrp {
                stream,
                a_facing: new.local[0].clone(),
                b_facing: new.local[1].clone(),
            });
        }
        for side in [Side::A, Side::B] {
            let was = old
                .filter(|_| same)
                .and_then(|o| o.peers[idx(side)].as_ref());
            if let Some(peer) = new.peers[idx(side)].as_ref().filter(|p| Some(*p) != was) {
                out.push_back(LegChange::MsrpPeer {
                    stream,
                    side,
                    peer: peer.clone(),
                });
            }
        }
    }
}
