//! One MSRP leg: its URIs, the two sides' paths and connections, the transactions forwarded
//! to each side, its counters and its tap; and [`MsrpLeg`], the session actor's handle, whose
//! drop closes the leg.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use cpm_engine::media::{MsrpPeer, Side};
use cpm_engine::msrp::{write, ByteRange, FailureReport, Head, Kind, Method, Status, Uri};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::{Plane, Tap};

/// What a connection's writer is sent: parts of a forwarded message (the writer takes nothing
/// else until its `End`), or whole messages of ours (`End` alone: responses, REPORTs).
#[derive(Debug)]
pub(super) enum Frame {
    Part(Bytes),
    End(Bytes),
}

/// The queues into one connection's writer: forwarded messages and our own (responses,
/// REPORTs), both bounded.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) data: mpsc::Sender<Frame>,
    pub(super) ctrl: mpsc::Sender<Bytes>,
}

/// A request forwarded to a side, awaiting its response.
#[derive(Debug, Clone)]
pub(super) struct PendingTx {
    /// Who sent it (where a failure REPORT goes).
    pub(super) origin: Side,
    pub(super) message_id: Option<Bytes>,
    pub(super) range: ByteRange,
    pub(super) failure_report: FailureReport,
    pub(super) deadline: Instant,
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
    pub(super) local: [Bytes; 2],
    pub(super) local_uri: [Uri; 2],
    pub(super) peers: Mutex<[Option<MsrpPeer>; 2]>,
    pub(super) conns: [watch::Sender<Option<Conn>>; 2],
    /// Whether each side was ever connected (a request then fails at once when it is gone).
    pub(super) ever: [AtomicBool; 2],
    /// Requests forwarded to each side, by our transaction id.
    pub(super) pending: [Mutex<HashMap<Bytes, PendingTx>>; 2],
    pub(super) counters: Counters,
    pub(super) tap: Mutex<Option<Arc<dyn Tap>>>,
    pub(super) closed: watch::Sender<bool>,
    /// A connect task runs for the side.
    pub(super) connecting: [AtomicBool; 2],
}

impl LegState {
    /// The side's connection, if up.
    pub(super) fn conn(&self, side: Side) -> Option<Conn> {
        self.conns[side.index()].borrow().clone()
    }

    pub(super) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// A failure REPORT (RFC 4975 §7.1.2, §7.3) to `tx.origin` for a request that failed with
    /// `code`, if its Failure-Report asks for one; counted.
    pub(super) fn failure_report(
        &self,
        plane: &Plane,
        tx: &PendingTx,
        code: u16,
        tid: Bytes,
    ) -> Option<Bytes> {
        if tx.failure_report == FailureReport::No {
            return None;
        }
        let path = self.peers.lock()[tx.origin.index()].as_ref()?.path.clone();
        let mut h = Head::new(
            tid,
            Kind::Request(Method::Report),
            path,
            self.local[tx.origin.index()].clone(),
        );
        h.message_id = tx.message_id.clone();
        h.byte_range = Some(tx.range);
        h.status = Some(Status {
            namespace: 0,
            code,
            reason: Some(Bytes::from_static(write::reason(code).as_bytes())),
        });
        self.counters.reports.fetch_add(1, Relaxed);
        plane.metrics.reports_generated.fetch_add(1, Relaxed);
        Some(write::bodyless(&h, &mut BytesMut::new()))
    }

    /// Sends a REPORT of ours to `side` without waiting: dropped (and logged) when its queue is
    /// full or it is not connected.
    pub(super) fn send_ctrl(&self, side: Side, msg: Bytes) {
        match self.conn(side) {
            Some(c) if c.ctrl.try_send(msg).is_ok() => {}
            _ => tracing::debug!(?side, "MSRP REPORT not sent: side not connected or busy"),
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
    let state = Arc::new(LegState {
        local: [a.clone(), b.clone()],
        local_uri,
        peers: Mutex::new([None, None]),
        conns: [watch::channel(None).0, watch::channel(None).0],
        ever: Default::default(),
        pending: Default::default(),
        counters: Counters::default(),
        tap: Mutex::new(None),
        closed: watch::channel(false).0,
        connecting: Default::default(),
    });
    {
        let mut routes = plane.routes.lock();
        for side in [Side::A, Side::B] {
            let sid = state.local_uri[side.index()].session_id().clone();
            routes.insert(sid, (Arc::downgrade(&state), side));
        }
    }
    plane.metrics.legs.fetch_add(1, Relaxed);
    plane
        .rt
        .spawn(super::conn::timeouts(Arc::downgrade(&state), plane.clone()));
    Ok(MsrpLeg {
        state,
        plane: plane.clone(),
    })
}

impl MsrpLeg {
    /// Where `side` is (from `LegChange::MsrpPeer`); when we are the active party toward it
    /// and it is not connected, a connection to the first URI of its path is opened.
    pub fn set_peer(&self, side: Side, peer: MsrpPeer) {
        let connect = peer.we_connect;
        self.state.peers.lock()[side.index()] = Some(peer);
        if connect
            && self.state.conn(side).is_none()
            && !self.state.connecting[side.index()].swap(true, Relaxed)
        {
            self.plane.rt.spawn(super::conn::connect(
                self.state.clone(),
                self.plane.clone(),
                side,
            ));
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
            for u in &self.state.local_uri {
                routes.remove(u.session_id());
            }
        }
        self.state.closed.send_replace(true);
        for c in &self.state.conns {
            c.send_replace(None);
        }
        self.plane.metrics.legs.fetch_sub(1, Relaxed);
    }
}

/// The leg routed to by a session-id, and the side its URI faces.
pub(super) fn route(plane: &Plane, sid: &Bytes) -> Option<(Arc<LegState>, Side)> {
    let routes = plane.routes.lock();
    let (leg, side) = routes.get(sid)?;
    Some((Weak::upgrade(leg)?, *side))
}
