//! `options`: one OPTIONS transaction per session (RFC 3261 §11); a 2xx is a success. The
//! simplest probe of a server's (or a `uas`'s) transaction rate.

use std::net::SocketAddr;

use cpm_engine::sip::transaction::ClientTxId;
use cpm_engine::sip::{Message, Method};

use super::{Outcome, RequestSpec, Scenario, SessionId, SocketId, SocketKind, Target};
use crate::driver::Ctx;
use crate::metrics::Quantity;

/// OPTIONS to `sip:<to>@<domain>`, one per session, from one socket.
#[derive(Debug)]
pub struct Options {
    target: Target,
    socket: Option<(SocketId, SocketAddr)>,
}

impl Options {
    /// A scenario sending to `target`.
    pub fn new(target: Target) -> Options {
        Options {
            target,
            socket: None,
        }
    }
}

impl Scenario for Options {
    fn name(&self) -> &'static str {
        "options"
    }

    fn primary(&self) -> Quantity {
        Quantity::Request("OPTIONS")
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
        let req = RequestSpec {
            method: Method::Options,
            uri: &uri,
            via: local,
            from: &self.target.from_uri(n),
            to: &uri,
            call_id: &call_id,
            cseq: 1,
        }
        .build(ctx);
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
