//! [`RelayLeg`]: the actix actor a session owns for each media leg. It is the leg's control
//! handle and its lifetime: when the actor stops (asked to, its last `Addr` dropped, or its
//! arbiter going down after a panic) the leg's sockets are closed. It also watches the leg for
//! inactivity and tells the session.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{LegHandle, LegId, LegStats, Side};

/// The leg received no packet from either side for the configured timeout
/// (`--media-timeout`): the session should end (BYE to both sides). Sent once per idle spell.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct MediaInactive {
    /// The leg.
    pub leg: LegId,
    /// How long it has been idle.
    pub idle: Duration,
}

/// Sets where one side's media goes until it latches ([`LegHandle::set_peer`]).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SetPeer {
    /// The side.
    pub side: Side,
    /// Its RTP address from SDP.
    pub rtp: SocketAddr,
    /// Its RTCP address (`a=rtcp`), or `None` for the next port.
    pub rtcp: Option<SocketAddr>,
}

/// The leg's figures as last published ([`LegHandle::stats`]).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "LegStats")]
pub struct GetStats;

/// The leg's exact figures from the media loop ([`LegHandle::snapshot`]).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<LegStats>")]
pub struct Snapshot;

/// Closes the leg and stops the actor; answers with the final figures once the sockets are
/// closed (for the CDR), `None` if the media loop had stopped.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<LegStats>")]
pub struct Close;

/// The actor owning one relay leg.
pub struct RelayLeg {
    handle: Option<LegHandle>,
    id: LegId,
    timeout: Option<Duration>,
    on_inactive: Option<Recipient<MediaInactive>>,
    /// An inactivity notice was sent for the current idle spell.
    notified: bool,
}

impl RelayLeg {
    /// Wraps an open leg; `on_inactive` (usually the session) hears when it goes idle for the
    /// plane's `media_timeout`.
    pub fn new(handle: LegHandle, on_inactive: Option<Recipient<MediaInactive>>) -> RelayLeg {
        RelayLeg {
            timeout: handle.plane().config().timeout,
            id: handle.id(),
            handle: Some(handle),
            on_inactive,
            notified: false,
        }
    }

    /// Overrides the inactivity timeout (`None`: no check).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> RelayLeg {
        self.timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    fn check_inactive(&mut self, now: Instant) {
        let (Some(timeout), Some(handle), Some(to)) =
            (self.timeout, &self.handle, &self.on_inactive)
        else {
            return;
        };
        let idle = now.saturating_duration_since(handle.last_activity());
        if idle < timeout {
            self.notified = false;
        } else if !self.notified {
            // A bounded mailbox: if the session is overloaded, try again at the next check.
            self.notified = to.try_send(MediaInactive { leg: self.id, idle }).is_ok();
        }
    }
}

/// How often the inactivity check runs: a quarter of the timeout, between 10 ms and 1 s.
fn check_period(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

impl Actor for RelayLeg {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let (Some(t), Some(_)) = (self.timeout, &self.on_inactive) {
            ctx.run_interval(check_period(t), |leg, _| leg.check_inactive(Instant::now()));
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Dropping the handle sends the close to the media loop.
        self.handle = None;
    }
}

impl Handler<SetPeer> for RelayLeg {
    type Result = ();

    fn handle(&mut self, m: SetPeer, _: &mut Context<Self>) {
        if let Some(h) = &self.handle {
            if h.set_peer(m.side, m.rtp, m.rtcp).is_err() {
                tracing::warn!(leg = %self.id, "set_peer: the media loop has stopped");
            }
        }
    }
}

impl Handler<GetStats> for RelayLeg {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        // The handle exists until the actor stops; its figures are all a stopped leg has.
        MessageResult(
            self.handle
                .as_ref()
                .map(LegHandle::stats)
                .unwrap_or(LegStats {
                    id: self.id,
                    opened: Instant::now(),
                    from_a: Default::default(),
                    from_b: Default::default(),
                }),
        )
    }
}

impl Handler<Snapshot> for RelayLeg {
    type Result = ResponseFuture<Option<LegStats>>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        match &self.handle {
            Some(h) => Box::pin(h.snapshot()),
            None => Box::pin(async { None }),
        }
    }
}

impl Handler<Close> for RelayLeg {
    type Result = ResponseFuture<Option<LegStats>>;

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) -> Self::Result {
        ctx.stop();
        match self.handle.take() {
            Some(h) => Box::pin(h.close()),
            None => Box::pin(async { None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactivity_is_checked_often_enough() {
        assert_eq!(
            check_period(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(
            check_period(Duration::from_millis(200)),
            Duration::from_millis(50)
        );
        assert_eq!(
            check_period(Duration::from_millis(8)),
            Duration::from_millis(10)
        );
    }
}
