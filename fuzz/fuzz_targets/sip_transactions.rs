//! Structured fuzzing of the SIP transaction layer (`cargo fuzz run sip_transactions`): the
//! input is a script of events (requests and responses from the network, the TU's answers,
//! new client transactions, CANCEL, transport errors, time passing), each built from a few
//! bytes, driven through one [`TransactionLayer`] as a worker drives it.
//!
//! Beyond "no panic", it checks the layer's invariants (RFC 3261 §17):
//! - after `handle_timeout(now)` no deadline is left in the past;
//! - the counters match the transactions held;
//! - every transaction ends: once the script is over, the TU answers every open server
//!   transaction, a final response comes for every client INVITE, and after the timers run out
//!   the layer holds nothing and has no timer armed.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::sip::transaction::{
    ClientTxId, LayerConfig, RequestOutcome, ResponseOutcome, ServerTxId, TransactionLayer, TxId,
};
use cpm_engine::sip::{builder, parse, Message};
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 6] = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE"];
const STATUSES: [u16; 8] = [100, 180, 183, 200, 202, 404, 487, 503];

/// The bytes of the script, read one at a time (zero once exhausted).
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> Option<&'t T> {
        if items.is_empty() {
            return None;
        }
        let i = usize::from(self.byte()) % items.len();
        items.get(i)
    }
}

struct Driver {
    layer: TransactionLayer,
    now: Instant,
    peer: SocketAddr,
    /// Server transactions the TU has not answered finally, with their requests.
    servers: Vec<(ServerTxId, Message)>,
    /// Client transactions not known to be over, with their requests.
    clients: Vec<(ClientTxId, Message)>,
}

impl Driver {
    fn request(&self, method: &str, branch: u8, cseq: u8, call: u8, cseq_method: &str) -> Message {
        let text = format!(
            "{method} sip:bob@cpm.example SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-fz{branch}\r\n\
             From: <sip:alice@example.com>;tag=a{call}\r\n\
             To: <sip:bob@cpm.example>\r\n\
             Call-ID: c{call}@example.com\r\n\
             CSeq: {cseq} {cseq_method}\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        );
        parse(Bytes::from(text)).expect("script requests parse")
    }

    fn drain(&mut self) {
        while self.layer.poll_transmit().is_some() {}
        while let Some(event) = self.layer.poll_event() {
            if let cpm_engine::sip::transaction::TxEvent::Terminated(id) = event {
                match id {
                    TxId::Client(c) => self.clients.retain(|(i, _)| *i != c),
                    TxId::Server(s) => self.servers.retain(|(i, _)| *i != s),
                }
            }
        }
        let n = self.layer.in_flight();
        assert_eq!(
            n.client_invite + n.client_non_invite + n.server_invite + n.server_non_invite,
            self.layer.len(),
            "{n:?}"
        );
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.layer.handle_timeout(self.now);
        self.drain();
        if let Some(at) = self.layer.poll_timeout() {
            assert!(at > self.now, "a deadline left in the past");
        }
    }

    fn respond(&mut self, i: usize, status: u16) {
        let Some((id, req)) = self.servers.get(i).cloned() else {
            return;
        };
        let resp = builder::response_to_with_tag(&req, status, "Fuzz", Some("b1"));
        if self.layer.respond(id, &resp, self.now).is_ok() && status >= 200 {
            self.servers.retain(|(s, _)| *s != id);
        }
        self.drain();
    }

    fn step(&mut self, s: &mut Script) {
        match s.byte() % 9 {
            0 | 1 => {
                let method = *s.pick(&METHODS).unwrap_or(&"OPTIONS");
                let (branch, cseq, call) = (s.byte() % 4, s.byte() % 3 + 1, s.byte() % 2);
                let cseq_method = if method == "ACK" || method == "CANCEL" {
                    if s.byte() % 2 == 0 {
                        "INVITE"
                    } else {
                        method
                    }
                } else {
                    method
                };
                let req = self.request(method, branch, cseq, call, cseq_method);
                let reliable = s.byte() % 4 == 0;
                match self
                    .layer
                    .handle_request(req, self.peer, reliable, self.now)
                {
                    RequestOutcome::New { id, request } => self.servers.push((id, request)),
                    RequestOutcome::Cancel {
                        cancel_tx, request, ..
                    } => self.servers.push((cancel_tx, request)),
                    _ => {}
                }
                self.drain();
            }
            2 => {
                let i = usize::from(s.byte());
                let status = *s.pick(&STATUSES).unwrap_or(&200);
                if !self.servers.is_empty() {
                    self.respond(i % self.servers.len(), status);
                }
            }
            3 => {
                let method = *s
                    .pick(&["INVITE", "BYE", "OPTIONS", "MESSAGE"])
                    .unwrap_or(&"BYE");
                let branch = self.layer.new_branch();
                let cseq = s.byte() % 3 + 1;
                let mut req = self.request(method, 0, cseq, 9, method);
                let via = format!(
                    "SIP/2.0/UDP 198.51.100.1:5060;branch={}",
                    String::from_utf8_lossy(&branch)
                );
                req.headers
                    .set(cpm_engine::sip::HeaderName::Via, Bytes::from(via));
                let reliable = s.byte() % 4 == 0;
                if let Ok(id) = self
                    .layer
                    .send_request(req.clone(), self.peer, reliable, self.now)
                {
                    self.clients.push((id, req));
                }
                self.drain();
            }
            4 => {
                let status = *s.pick(&STATUSES).unwrap_or(&200);
                if let Some((_, req)) = s.pick(&self.clients).cloned() {
                    self.response(&req, status);
                }
            }
            5 => {
                if let Some((id, _)) = s.pick(&self.clients).cloned() {
                    // A CANCEL's own transaction ends by its timers; errors are fine here.
                    let _ = self.layer.cancel(id, self.now);
                    self.drain();
                }
            }
            6 => {
                let ms = u64::from(s.byte()) * 40;
                self.advance(Duration::from_millis(ms));
            }
            7 => {
                let client = s.byte() % 2 == 0;
                let id = if client {
                    s.pick(&self.clients).map(|(c, _)| TxId::Client(*c))
                } else {
                    s.pick(&self.servers).map(|(c, _)| TxId::Server(*c))
                };
                if let Some(id) = id {
                    self.layer.handle_transport_error(id, self.now);
                    self.drain();
                }
            }
            _ => {
                // A garbage response: matches nothing or an existing branch with a bad CSeq.
                let text = format!(
                    "SIP/2.0 {} X\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK{}\r\n\
                     CSeq: {} FOO\r\nCall-ID: x\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\n\
                     Content-Length: 0\r\n\r\n",
                    100 + u16::from(s.byte()) * 3,
                    s.byte(),
                    s.byte()
                );
                if let Ok(msg) = parse(Bytes::from(text)) {
                    let _ = self.layer.handle_response(msg, self.peer, self.now);
                    self.drain();
                }
            }
        }
    }

    fn response(&mut self, req: &Message, status: u16) {
        let resp = builder::response_to_with_tag(req, status, "Fuzz", Some("c1"));
        if let ResponseOutcome::Response { response, .. } =
            self.layer.handle_response(resp, self.peer, self.now)
        {
            assert_eq!(
                response.status(),
                Some(status),
                "the TU gets the response as sent"
            );
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut d = Driver {
        layer: TransactionLayer::new(LayerConfig::default(), 7),
        now: Instant::now(),
        peer: "192.0.2.10:5060".parse().expect("address"),
        servers: Vec::new(),
        clients: Vec::new(),
    };
    let mut script = Script(data);
    for _ in 0..256 {
        if script.0.is_empty() {
            break;
        }
        d.step(&mut script);
    }
    // The end: the TU answers everything, every client INVITE gets its final response, and
    // the timers run out.
    while !d.servers.is_empty() {
        let before = d.servers.len();
        d.respond(0, 500);
        if d.servers.len() == before {
            // The layer refused the answer (its transaction is over): forget it.
            d.servers.remove(0);
        }
    }
    let clients: Vec<Message> = d.clients.iter().map(|(_, r)| r.clone()).collect();
    for req in clients {
        d.response(&req, 487);
    }
    for _ in 0..64 {
        match d.layer.poll_timeout() {
            Some(at) => {
                let by = at.saturating_duration_since(d.now);
                d.advance(by);
            }
            None => break,
        }
    }
    assert!(
        d.layer.is_empty(),
        "transactions left after every timer ran: {:?}",
        d.layer.stats()
    );
    assert!(d.layer.poll_timeout().is_none());
});
