//! `message`: one pager-mode MESSAGE per session (RFC 3428) to `sip:<to>@<domain>`; a 2xx is a
//! success. The body carries the send time ([`crate::stamp`]) so that the receiving `uas`
//! measures delivery latency ([`Quantity::MessageDelivery`]); the sender measures the request
//! latency (send → final response).

use std::net::SocketAddr;

use cpm_engine::sip::transaction::ClientTxId;
use cpm_engine::sip::{Message, Method};

use super::{Outcome, RequestSpec, Scenario, SessionId, SocketId, SocketKind, Target};
use crate::driver::Ctx;
use crate::metrics::Quantity;
use crate::stamp;

/// Body settings of the `message` scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// Bytes per body (the stamp line at least).
    pub size: usize,
    /// Its Content-Type.
    pub content_type: String,
}

impl Default for Body {
    fn default() -> Body {
        Body {
            size: 100,
            content_type: "text/plain".into(),
        }
    }
}

/// MESSAGE requests, one per session, from one socket.
#[derive(Debug)]
pub struct MessageScenario {
    target: Target,
    body: Body,
    socket: Option<(SocketId, SocketAddr)>,
}

impl MessageScenario {
    /// A scenario sending to `target`.
    pub fn new(target: Target, body: Body) -> MessageScenario {
        MessageScenario {
            target,
            body,
            socket: None,
        }
    }
}

impl Scenario for MessageScenario {
    fn name(&self) -> &'static str {
        "message"
    }

    fn primary(&self) -> Quantity {
        Quantity::Request("MESSAGE")
    }

    fn setup(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        let bind = SocketAddr::new(self.target.local_ip, 0);
        let s = ctx
            .bind_udp(bind, SocketKind::Sip)
            .map_err(|e| format!("bind {bind}: {e}"))?;
        self.socket = Some(s);
        Ok(())
    }

    fn start(&mut self, ctx: &mut Ctx<'_>, session: SessionId, n: u64) {
        let Some((socket, local)) = self.socket else {
            return ctx.finish(session, Outcome::Failure("no socket".into()));
        };
        let uri = self.target.to_uri(n);
        let call_id = ctx.new_call_id();
        let mut req = RequestSpec {
            method: Method::Message,
            uri: &uri,
            via: local,
            from: &self.target.from_uri(n),
            to: &uri,
            call_id: &call_id,
            cseq: 1,
        }
        .build(ctx);
        let body = stamp::body(ctx.unix_us(), n, self.body.size);
        req.set_body(body, Some(&self.body.content_type));
        if let Err(e) = ctx.send_request(session, socket, req, self.target.addr) {
            ctx.finish(session, Outcome::Failure(e.reason()));
        }
    }

    fn on_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: SessionId,
        _tx: ClientTxId,
        response: &Message,
    ) {
        if response.status().is_some_and(|c| c >= 200) {
            ctx.finish(session, Outcome::of_response(response));
        }
    }
}
