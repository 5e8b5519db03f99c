//! `message`: one pager-mode MESSAGE per session (RFC 3428) to `sip:<to>@<domain>`; a 2xx is a
//! success. The body carries the send time ([`crate::stamp`]) so that the receiving `uas`
//! measures delivery latency ([`Quantity::MessageDelivery`]); the sender measures the request
//! latency (send → final response).

use std::net::SocketAddr;

use cpm_engine::sip::transaction::ClientTxId;
use cpm_engine::sip::{Message, Method};

use super::{finish_on_final, Scenario, SessionId, SocketId, Target};
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
        self.socket = Some(self.target.bind_client(ctx)?);
        Ok(())
    }

    fn start(&mut self, ctx: &mut Ctx<'_>, session: SessionId, n: u64) {
        let body = stamp::body(ctx.unix_us(), n, self.body.size);
        let ct = self.body.content_type.clone();
        self.target.send_one(
            ctx,
            session,
            self.socket,
            Method::Message,
            n,
            Some((body, &ct)),
        );
    }

    fn on_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: SessionId,
        _tx: ClientTxId,
        response: &Message,
    ) {
        finish_on_final(ctx, session, response);
    }
}
