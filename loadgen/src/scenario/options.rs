//! `options`: one OPTIONS transaction per session (RFC 3261 §11); a 2xx is a success. The
//! simplest probe of a server's (or a `uas`'s) transaction rate.

use std::net::SocketAddr;

use cpm_engine::sip::transaction::ClientTxId;
use cpm_engine::sip::{Message, Method};

use super::{finish_on_final, Scenario, SessionId, SocketId, Target};
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
        self.socket = Some(self.target.bind_client(ctx)?);
        Ok(())
    }

    fn start(&mut self, ctx: &mut Ctx<'_>, session: SessionId, n: u64) {
        self.target
            .send_one(ctx, session, self.socket, Method::Options, n, None);
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
