//! One MSRP leg: its URIs, the two sides' paths and connections, the transactions forwarded
//! to each side, its counters and its tap; and [`MsrpLeg`], the session actor's handle, whose
//! drop closes the leg.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};
use cpm_engine::media::{MsrpPeer, Side};
use cpm_engine::msrp::relay::{self, Outcome, Pending, Transactions};
use cpm_engine::msrp::uri::parse_path;
use cpm_engine::msrp::{write, Uri};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};

use super::{Plane, Tap};

/// What a connection's writer is sent: parts of a forwarded message (the writer takes nothing
/// else until its `End`), or whole messages of ours (`End` alone: responses, REPORTs).
#[derive(Debug)]
pub(super) enum Frame {
    Part(Bytes),
    End(Bytes),
}

/// The queues into one connection's writer: forwarded messages and our own (responses,
/// REPORTs), both bounded; `interrupt` is signalled when one of ours waits behind a forwarded
/// chunk, so that its forwarder ends the chunk early (RFC 4975 §7.1.1).
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) data: mpsc::Sender<Frame>,
    pub(super) ctrl: mpsc::Sender<Bytes>,
    pub(super) interrupt: Arc<Notify>,
}

/// The [`Transactions`] tag of a request: the side it came from (where a failure REPORT goes).
pub(super) fn tag(origin: Side) -> u64 {
    origin.index() as u64
}

/// The side a [`Transactions`] tag names.
fn origin(p: &Pending) -> Side {
    if p.tag == tag(Side::A) {
        Side::A
    } else {
        Side::B
    }
}

/// The counters of one leg, per direction (index: the sending side).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) messages: [AtomicU64; 2],
    pub(super) chunks: [AtomicU64; 2],
    pub(super) bytes: [AtomicU64; 2],
    pub(super) reports: AtomicU64,
}

/// A leg's figures so far, per direction (`[from A, from B]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsrpLegStats {
    /// Complete messages (chunks ending in `$`) relayed.
    pub messages: [u64; 2],
    /// SEND chunks relayed.
    pub chunks: [u64; 2],
    /// Body bytes relayed.
    pub bytes: [u64; 2],
    /// REPORTs we generated (failures).
    pub reports_generated: u64,
}

pub(crate) struct LegState {
    /// Each side: our URI facing it and its path (empty until its SDP is known).
    pub(super) sides: Mutex<[relay::Side; 2]>,
    pub(super) conns: [watch::Sender<Option<Conn>>; 2],
    /// Whether each side was ever connected (a request then fails at once when it is gone).
    pub(super) ever: [AtomicBool; 2],
    /// Requests forwarded to each side, by our transaction id, tagged with their origin.
    pub(super) pending: [Mutex<Transactions>; 2],
    pub(super) counters: Counters,
    pub(super) tap: Mutex<Option<Arc<dyn Tap>>>,
    pub(super) closed: watch::Sender<bool>,
    /// A connect task runs for the side.
    pub(super) connecting: [AtomicBool; 2],
    /// Signalled when requests forwarded to a side ended while a reader waited for room
    /// toward it (`held`): see [`LegState::room_toward`].
    room: [Notify; 2],
    held: [AtomicBool; 2],
    /// The plane's shard that runs the leg: its connections and its timeouts.
    pub(super) home: usize,
}

impl LegState {
    /// Waits until fewer than `cap` requests forwarded to `side` wait for their response
    /// ([`MsrpSettings::max_unanswered`](super::MsrpSettings)).
    pub(super) async fn room_toward(&self, side: Side, cap: usize) {
        let i = side.index();
        loop {
            let room = self.room[i].notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.pending[i].lock().len() < cap {
                return;
            }
            // Set only now: `made_room`, called at every response, checks the count only
            // while a reader waits. A response between the check and this line (none can
            // come: everything of a leg runs on its shard's one thread) would leave the wait
            // to the next one.
            self.held[i].store(true, Relaxed);
            room.await;
        }
    }

    /// Requests forwarded to `side` ended (answered, failed, timed out): a reader waiting in
    /// [`LegState::room_toward`] reads again once fewer than `cap` are left.
    pub(super) fn made_room(&self, side: Side, cap: usize) {
        let i = side.index();
        if self.held[i].load(Relaxed) && self.pending[i].lock().len() < cap {
            self.held[i].store(false, Relaxed);
            self.room[i].notify_waiters();
        }
    }

    /// The side's connection, if up.
    pub(super) fn conn(&self, side: Side) -> Option<Conn> {
        self.conns[side.index()].borrow().clone()
    }

    pub(super) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Side `side` as the relay sees it (our URI, its path).
    pub(super) fn side(&self, side: Side) -> relay::Side {
        self.sides.lock()[side.index()].clone()
    }

    /// The failure REPORT (RFC 4975 §7.1.2, §7.3) to the origin of `p`, a request that failed
    /// with `code`, if its Failure-Report asks for one (`relay::failure_report`); counted.
    pub(super) fn failure_report(
        &self,
        plane: &Plane,
        p: &Pending,
        code: u16,
        tid: Bytes,
    ) -> Option<(Side, Bytes)> {
        let to = origin(p);
        let side = self.side(to);
        if !side.peer_known() {
            return None;
        }
        let h = relay::failure_report(p, code, &side, tid)?;
        self.counters.reports.fetch_add(1, Relaxed);
        plane.metrics.reports_generated.fetch_add(1, Relaxed);
        Some((to, write::bodyless(&h, &mut BytesMut::new())))
    }

    /// The failure REPORTs due for ended transactions `outcomes`, each with the connection of
    /// the request's origin it goes to. A REPORT for a side that is not connected has nowhere
    /// to go: logged, dropped.
    pub(super) fn reports(
        &self,
        plane: &Plane,
        outcomes: Vec<Outcome>,
        ids: &mut write::IdGen,
    ) -> Vec<(Conn, Bytes)> {
        let mut out = Vec::new();
        for o in outcomes {
            let Outcome::Failed(p, code) = o else {
                continue;
            };
            let Some((to, r)) = self.failure_report(plane, &p, code, ids.next_id()) else {
                continue;
            };
            match self.conn(to) {
                Some(c) => out.push((c, r)),
                None => tracing::debug!(side = ?to, "MSRP REPORT not sent: side not connected"),
            }
        }
        out
    }

    /// Sends the failure REPORTs due for ended transactions `outcomes` ([`Self::reports`]),
    /// waiting for room in the origin's queue (its writer drains it as its peer reads): a
    /// failure that ends many chunks at once (a connection gone with hundreds forwarded)
    /// reports every one of them.
    pub(super) async fn report(
        &self,
        plane: &Plane,
        outcomes: Vec<Outcome>,
        ids: &mut write::IdGen,
    ) {
        for (c, r) in self.reports(plane, outcomes, ids) {
            if c.ctrl.send(r).await.is_err() {
                tracing::debug!(conn = c.id, "MSRP REPORT not sent: connection gone");
            }
        }
    }
}

/// The session actor's handle of an MSRP leg. Dropping it closes the leg: its connections are
/// closed and its session-ids routed nowhere.
pub struct MsrpLeg {
    state: Arc<LegState>,
    plane: Arc<Plane>,
}

pub(super) fn open(plane: &Arc<Plane>, a: &Bytes, b: &Bytes) -> Result<MsrpLeg, String> {
    let parse = |v: &Bytes| Uri::parse(v).map_err(|e| e.reason().to_string());
    let local_uri = [parse(a)?, parse(b)?];
    let sids = local_uri.clone().map(|u| u.session_id().clone());
    let pending = || Mutex::new(Transactions::new(plane.settings.tx_timeout));
    let state = Arc::new(LegState {
        sides: Mutex::new(local_uri.map(|u| relay::Side::new(u, &[]))),
        conns: [watch::channel(None).0, watch::channel(None).0],
        ever: Default::default(),
        pending: [pending(), pending()],
        counters: Counters::default(),
        tap: Mutex::new(None),
        closed: watch::channel(false).0,
        connecting: Default::default(),
        room: Default::default(),
        held: Default::default(),
        home: plane.next_home(),
    });
    {
        let mut routes = plane.routes.lock();
        for (sid, side) in sids.into_iter().zip([Side::A, Side::B]) {
            routes.insert(sid, super::Route::Leg(Arc::downgrade(&state), side));
        }
    }
    plane.metrics.legs.fetch_add(1, Relaxed);
    plane.spawn_on(
        state.home,
        super::conn::timeouts(Arc::downgrade(&state), plane.clone()),
    );
    Ok(MsrpLeg {
        state,
        plane: plane.clone(),
    })
}

impl MsrpLeg {
    /// Where `side` is (from `LegChange::MsrpPeer`); when we are the active party toward it
    /// and it is not connected, a connection to the first URI of its path is opened. A path
    /// that does not parse leaves the side unknown: what is sent to it fails (481).
    pub fn set_peer(&self, side: Side, peer: MsrpPeer) {
        let path = match parse_path(&peer.path) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(?side, error = e.reason(), "MSRP peer path ignored");
                return;
            }
        };
        {
            let mut sides = self.state.sides.lock();
            let s = &mut sides[side.index()];
            *s = relay::Side::new(s.local().clone(), &path);
        }
        if peer.we_connect
            && self.state.conn(side).is_none()
            && !self.state.connecting[side.index()].swap(true, Relaxed)
        {
            self.plane.spawn_on(
                self.state.home,
                super::conn::connect(self.state.clone(), self.plane.clone(), side),
            );
        }
    }

    /// Hands every relayed SEND chunk to `tap` from now on (`None`: stop).
    pub fn set_tap(&self, tap: Option<Arc<dyn Tap>>) {
        *self.state.tap.lock() = tap;
    }

    /// The figures so far.
    pub fn stats(&self) -> MsrpLegStats {
        let c = &self.state.counters;
        let two = |a: &[AtomicU64; 2]| [a[0].load(Relaxed), a[1].load(Relaxed)];
        MsrpLegStats {
            messages: two(&c.messages),
            chunks: two(&c.chunks),
            bytes: two(&c.bytes),
            reports_generated: c.reports.load(Relaxed),
        }
    }

    /// Whether `side` is connected now.
    pub fn is_connected(&self, side: Side) -> bool {
        self.state.conn(side).is_some()
    }
}

impl Drop for MsrpLeg {
    fn drop(&mut self) {
        {
            let mut routes = self.plane.routes.lock();
            for s in self.state.sides.lock().iter() {
                routes.remove(s.local().session_id());
            }
        }
        self.state.closed.send_replace(true);
        for c in &self.state.conns {
            c.send_replace(None);
        }
        self.plane.metrics.legs.fetch_sub(1, Relaxed);
    }
}

/// What a session-id routes to: a leg and the side its URI faces, or a sink.
pub(super) enum Bound {
    Leg(Arc<LegState>, Side),
    Sink(Arc<super::SinkState>),
}

impl Bound {
    /// The shard that runs it.
    pub(super) fn home(&self) -> usize {
        match self {
            Bound::Leg(leg, _) => leg.home,
            Bound::Sink(sink) => sink.home,
        }
    }
}

/// The leg or sink routed to by a session-id.
pub(super) fn route(plane: &Plane, sid: &Bytes) -> Option<Bound> {
    let routes = plane.routes.lock();
    match routes.get(sid)? {
        super::Route::Leg(leg, side) => Some(Bound::Leg(Weak::upgrade(leg)?, *side)),
        super::Route::Sink(sink) => Some(Bound::Sink(Weak::upgrade(sink)?)),
    }
}
