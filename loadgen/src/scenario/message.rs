//! `message`: one pager-mode MESSAGE per session (RFC 3428) to `sip:<to>@<domain>`; a 2xx is a
//! success. The body carries the send time ([`crate::stamp`]) so that the receiving `uas`
//! measures delivery latency ([`Quantity::MessageDelivery`]); the sender measures the request
//! latency (send → final response).
//!
//! For store and forward (CPM.md §7, RFC 3428 §7: a `202 Accepted` means the server took the
//! message to deliver later): `--expect 202` makes a 202 the success; every 202 is counted
//! apart ("stored", note `messages_stored`) from the 200s (`messages_delivered`), and the
//! summary gives both rates over the window of final responses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use cpm_engine::sip::transaction::ClientTxId;
use cpm_engine::sip::{Message, Method};

use super::{status_line, Outcome, Scenario, SessionId, SocketId, Target};
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
    /// Final codes that count as success (empty: any 2xx).
    expect: Vec<u16>,
    /// Final responses by code.
    finals: BTreeMap<u16, u64>,
    /// The first and last final response.
    window: Option<(Instant, Instant)>,
}

impl MessageScenario {
    /// A scenario sending to `target`.
    pub fn new(target: Target, body: Body) -> MessageScenario {
        MessageScenario {
            target,
            body,
            socket: None,
            expect: Vec::new(),
            finals: BTreeMap::new(),
            window: None,
        }
    }

    /// Only these final codes count as success (`--expect`; empty: any 2xx).
    pub fn expecting(mut self, codes: &[u16]) -> MessageScenario {
        self.expect = codes.to_vec();
        self
    }

    /// The outcome of a final response.
    fn outcome(&self, response: &Message) -> Outcome {
        match response.status() {
            Some(c) if self.expect.contains(&c) => Outcome::Success,
            Some(_) if !self.expect.is_empty() => Outcome::Failure(status_line(response)),
            _ => Outcome::of_response(response),
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
        let Some(code) = response.status().filter(|c| *c >= 200) else {
            return;
        };
        if !ctx.is_active(session) {
            return;
        }
        match code {
            202 => ctx.recorder().note("messages_stored", 1),
            200 => ctx.recorder().note("messages_delivered", 1),
            _ => {}
        }
        *self.finals.entry(code).or_default() += 1;
        let now = ctx.now();
        self.window = Some(self.window.map_or((now, now), |(a, _)| (a, now)));
        let outcome = self.outcome(response);
        ctx.finish(session, outcome);
    }

    fn summary_lines(&self) -> Vec<String> {
        let secs = self
            .window
            .map_or(0.0, |(a, b)| b.duration_since(a).as_secs_f64());
        let per_s = |n: u64| {
            if secs > 0.0 {
                format!(" ({:.0}/s)", n as f64 / secs)
            } else {
                String::new()
            }
        };
        let get = |c| self.finals.get(&c).copied().unwrap_or(0);
        let mut out = vec![format!(
            "final responses over {secs:.3} s: 200 delivered {}{}, 202 stored {}{}",
            get(200),
            per_s(get(200)),
            get(202),
            per_s(get(202))
        )];
        let others: Vec<String> = self
            .finals
            .iter()
            .filter(|(c, _)| !matches!(c, 200 | 202))
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        if !others.is_empty() {
            out.push(format!("other final responses: {}", others.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Pattern, RequestSpec};
    use cpm_engine::sip::builder;

    #[test]
    fn expect_sets_what_succeeds() {
        let target = Target {
            addr: "127.0.0.1:5060".parse().unwrap(),
            domain: "d".into(),
            to: Pattern::parse("u").unwrap(),
            from: Pattern::parse("f").unwrap(),
            users: 1,
            local_ip: [127, 0, 0, 1].into(),
        };
        let req = RequestSpec {
            method: Method::Message,
            uri: "sip:u@d",
            via: "127.0.0.1:1".parse().unwrap(),
            from: "sip:f@d",
            to: "sip:u@d",
            call_id: "c",
            cseq: 1,
        }
        .build_with(b"z9hG4bKx", b"t");
        let ok = builder::response_to(&req, 200, "OK");
        let stored = builder::response_to(&req, 202, "Accepted");
        let any = MessageScenario::new(target.clone(), Body::default());
        assert_eq!(any.outcome(&ok), Outcome::Success);
        assert_eq!(any.outcome(&stored), Outcome::Success);
        let s = MessageScenario::new(target, Body::default()).expecting(&[202]);
        assert_eq!(s.outcome(&stored), Outcome::Success);
        assert_eq!(s.outcome(&ok), Outcome::Failure("200 OK".into()));
    }
}
