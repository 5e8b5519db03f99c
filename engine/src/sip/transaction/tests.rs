//! The transaction layer on virtual time: every timer path of figures 5-8 (with RFC 6026),
//! matching, and the absence of leaks after each path.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::sip::builder::{ack_for_non_2xx, cancel_for, response_to_with_tag};
use crate::sip::{parse, HeaderName, Method};

const PEER: &str = "192.0.2.1:5060";

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A request as a UA at `client.atlanta.example:5060` (source 192.0.2.1:5060) sends it.
fn request(method: &str, via_params: &str) -> Message {
    request_with(
        method,
        &format!("SIP/2.0/UDP client.atlanta.example:5060{via_params}"),
        "",
    )
}

fn request_with(method: &str, via: &str, extra: &str) -> Message {
    let raw = format!(
        "{method} sip:bob@biloxi.example SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: Alice <sip:alice@atlanta.example>;tag=1928301774\r\n\
         To: Bob <sip:bob@biloxi.example>\r\n\
         Call-ID: a84b4c76e66710@atlanta.example\r\n\
         CSeq: 314159 {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    parse(Bytes::from(raw)).unwrap()
}

fn reply(req: &Message, code: u16, tag: &str) -> Message {
    response_to_with_tag(req, code, "Reason", Some(tag))
}

/// A layer stepped on virtual time.
struct Sim {
    layer: TransactionLayer,
    t0: Instant,
    now: Instant,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(LayerConfig::default())
    }

    fn with(config: LayerConfig) -> Sim {
        let t0 = Instant::now();
        Sim {
            layer: TransactionLayer::new(config, 1),
            t0,
            now: t0,
        }
    }

    fn at(&self, ms_since_start: u64) -> Instant {
        self.t0 + ms(ms_since_start)
    }

    fn elapsed_ms(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    /// Jumps to `ms_since_start` (firing due timers).
    fn set_time(&mut self, ms_since_start: u64) {
        let t = self.at(ms_since_start);
        assert!(t >= self.now);
        self.now = t;
        self.layer.handle_timeout(t);
        self.layer.check_invariants();
    }

    /// Runs the drive loop up to `end_ms`, waking exactly at each deadline; returns every
    /// transmit with the time (ms since start) it left.
    fn run_until(&mut self, end_ms: u64) -> Vec<(u64, Transmit)> {
        let end = self.at(end_ms);
        let mut out = self
            .transmits()
            .into_iter()
            .map(|t| (self.elapsed_ms(), t))
            .collect::<Vec<_>>();
        while let Some(deadline) = self.layer.poll_timeout() {
            if deadline > end {
                break;
            }
            assert!(deadline >= self.now, "deadline in the past");
            self.now = deadline;
            self.layer.handle_timeout(deadline);
            self.layer.check_invariants();
            let at = self.elapsed_ms();
            out.extend(self.transmits().into_iter().map(|t| (at, t)));
        }
        self.now = end;
        self.layer.handle_timeout(end);
        out
    }

    fn transmits(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.layer.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<TxEvent> {
        std::iter::from_fn(|| self.layer.poll_event()).collect()
    }

    fn recv_request(&mut self, msg: Message) -> RequestOutcome {
        self.recv_request_from(msg, peer(), false)
    }

    fn recv_request_from(
        &mut self,
        msg: Message,
        from: SocketAddr,
        reliable: bool,
    ) -> RequestOutcome {
        let out = self.layer.handle_request(msg, from, reliable, self.now);
        self.layer.check_invariants();
        out
    }

    fn new_server(&mut self, msg: Message) -> (ServerTxId, Message) {
        match self.recv_request(msg) {
            RequestOutcome::New { id, request } => (id, request),
            other => panic!("expected a new transaction, got {other:?}"),
        }
    }

    fn respond(&mut self, id: ServerTxId, resp: &Message) {
        self.layer.respond(id, resp, self.now).unwrap();
        self.layer.check_invariants();
    }

    fn send(&mut self, req: Message, reliable: bool) -> ClientTxId {
        let id = self
            .layer
            .send_request(req, peer(), reliable, self.now)
            .unwrap();
        self.layer.check_invariants();
        id
    }

    fn recv_response(&mut self, msg: Message) -> ResponseOutcome {
        let out = self.layer.handle_response(msg, peer(), self.now);
        self.layer.check_invariants();
        out
    }

    /// The layer holds nothing: no transaction, no key, no deadline.
    fn assert_empty(&self) {
        self.layer.check_invariants();
        assert!(
            self.layer.is_empty(),
            "{} transactions left",
            self.layer.len()
        );
        assert_eq!(self.layer.len(), 0);
        assert_eq!(self.layer.poll_timeout(), None);
    }
}

fn times(sent: &[(u64, Transmit)]) -> Vec<u64> {
    sent.iter().map(|(t, _)| *t).collect()
}

fn parsed(t: &Transmit) -> Message {
    parse(t.payload.clone()).unwrap()
}

fn status_of(t: &Transmit) -> Option<u16> {
    parsed(t).status()
}

fn failed_with(events: &[TxEvent], id: ClientTxId, reason: Failure, code: u16) {
    let found = events.iter().any(|e| match e {
        TxEvent::ClientFailed {
            id: i,
            reason: r,
            response,
        } => {
            *i == id
                && *r == reason
                && response.status() == Some(code)
                && response.call_id().map(|c| &c[..])
                    == Some(&b"a84b4c76e66710@atlanta.example"[..])
        }
        _ => false,
    });
    assert!(found, "no {code} failure for {id:?} in {events:?}");
    assert!(events.contains(&TxEvent::Terminated(TxId::Client(id))));
}

// ---- INVITE client (figure 5) ----------------------------------------------------------

#[test]
fn invite_client_timer_a_doubles_without_cap_then_timer_b_gives_408() {
    let mut s = Sim::new();
    let id = s.send(request("INVITE", ";branch=z9hG4bKc1"), false);
    let sent = s.run_until(31_999);
    // A: 0.5 s, then 1, 2, 4, 8, 16 s apart: past T2 (4 s), no cap for INVITE.
    assert_eq!(times(&sent), vec![0, 500, 1500, 3500, 7500, 15_500, 31_500]);
    assert!(sent
        .iter()
        .all(|(_, t)| t.payload == sent[0].1.payload && t.dest == peer() && !t.reliable));
    assert_eq!(
        s.layer.invite_client(id).unwrap().state(),
        InviteClientState::Calling
    );
    assert!(s.events().is_empty());
    s.set_time(32_000); // Timer B = 64*T1
    failed_with(&s.events(), id, Failure::Timeout, 408);
    assert!(s.transmits().is_empty());
    let st = s.layer.stats();
    assert_eq!((st.retransmissions_sent, st.timeouts), (6, 1));
    s.assert_empty();
}

#[test]
fn invite_client_on_reliable_transport_has_no_timer_a() {
    let mut s = Sim::new();
    let id = s.send(request("INVITE", ";branch=z9hG4bKc2"), true);
    let sent = s.run_until(31_999);
    assert_eq!(times(&sent), vec![0]);
    assert!(sent[0].1.reliable);
    assert_eq!(s.layer.invite_client(id).unwrap().timer(Timer::A), None);
    s.set_time(32_000);
    failed_with(&s.events(), id, Failure::Timeout, 408);
    s.assert_empty();
}

#[test]
fn invite_client_non_2xx_is_acked_and_timer_d_absorbs_retransmissions() {
    let mut s = Sim::new();
    let invite = request("INVITE", ";branch=z9hG4bKc3");
    let id = s.send(invite.clone(), false);
    s.run_until(1000);
    // A provisional stops A and B: Proceeding has no timer.
    let r180 = reply(&invite, 180, "uas");
    assert_eq!(
        s.recv_response(r180.clone()),
        ResponseOutcome::Response { id, response: r180 }
    );
    assert_eq!(
        s.layer.invite_client(id).unwrap().state(),
        InviteClientState::Proceeding
    );
    assert_eq!(s.layer.poll_timeout(), None);
    assert!(s.run_until(100_000).is_empty());
    assert!(s.events().is_empty());

    let busy = reply(&invite, 486, "uas");
    assert_eq!(
        s.recv_response(busy.clone()),
        ResponseOutcome::Response {
            id,
            response: busy.clone()
        }
    );
    let ack = s.transmits();
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].dest, peer());
    let ack_msg = parsed(&ack[0]);
    assert_eq!(ack_msg, ack_for_non_2xx(&invite, &busy));
    assert_eq!(ack_msg.method(), Some(&Method::Ack));
    assert_eq!(
        &ack_msg.headers.get(&HeaderName::CSeq).unwrap()[..],
        b"314159 ACK"
    );
    assert_eq!(
        &ack_msg.headers.get(&HeaderName::To).unwrap()[..],
        b"Bob <sip:bob@biloxi.example>;tag=uas"
    );
    assert_eq!(
        ack_msg.top_via().unwrap().branch(),
        invite.top_via().unwrap().branch()
    );
    assert_eq!(
        s.layer.invite_client(id).unwrap().state(),
        InviteClientState::Completed
    );
    assert_eq!(
        s.layer.invite_client(id).unwrap().timer(Timer::D),
        Some(s.at(132_000))
    );

    // A retransmitted 486 is absorbed and acknowledged again.
    assert_eq!(s.layer.stats().retransmissions_sent, 1); // Timer A at 0.5 s
    assert_eq!(s.recv_response(busy.clone()), ResponseOutcome::Absorbed(id));
    let again = s.transmits();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].payload, ack[0].payload);
    assert_eq!(s.layer.stats().retransmissions_sent, 2);

    s.set_time(131_999);
    assert_eq!(s.layer.len(), 1);
    s.set_time(132_000); // Timer D = 32 s
    assert_eq!(s.events(), vec![TxEvent::Terminated(TxId::Client(id))]);
    s.assert_empty();
    assert!(matches!(s.recv_response(busy), ResponseOutcome::Stray(_)));
}

#[test]
fn invite_client_on_reliable_transport_ends_with_the_ack() {
    let mut s = Sim::new();
    let invite = request("INVITE", ";branch=z9hG4bKc4");
    let id = s.send(invite.clone(), true);
    s.transmits();
    let busy = reply(&invite, 603, "uas");
    assert!(matches!(
        s.recv_response(busy),
        ResponseOutcome::Response { .. }
    ));
    let ack = s.transmits();
    assert_eq!(ack.len(), 1);
    assert_eq!(parsed(&ack[0]).method(), Some(&Method::Ack));
    assert_eq!(s.events(), vec![TxEvent::Terminated(TxId::Client(id))]); // Timer D = 0
    s.assert_empty();
}

#[test]
fn invite_client_2xx_enters_accepted_until_timer_m() {
    let mut s = Sim::new();
    let invite = request("INVITE", ";branch=z9hG4bKc5");
    let id = s.send(invite.clone(), false);
    s.set_time(700);
    s.transmits();
    let ok1 = reply(&invite, 200, "fork1");
    assert!(matches!(
        s.recv_response(ok1.clone()),
        ResponseOutcome::Response { .. }
    ));
    assert_eq!(
        s.layer.invite_client(id).unwrap().state(),
        InviteClientState::Accepted
    );
    // Every 2xx goes up (a retransmission, another fork); the transaction sends no ACK.
    assert_eq!(
        s.recv_response(ok1.clone()),
        ResponseOutcome::Response {
            id,
            response: ok1.clone()
        }
    );
    let ok2 = reply(&invite, 200, "fork2");
    assert_eq!(
        s.recv_response(ok2.clone()),
        ResponseOutcome::Response { id, response: ok2 }
    );
    // Neither retransmissions of the INVITE nor ACKs.
    assert!(s.run_until(32_699).is_empty());
    assert_eq!(s.layer.len(), 1);
    s.set_time(32_700); // Timer M = 64*T1 after the first 2xx
    assert_eq!(s.events(), vec![TxEvent::Terminated(TxId::Client(id))]);
    s.assert_empty();
    assert_eq!(s.recv_response(ok1.clone()), ResponseOutcome::Stray(ok1));
    assert_eq!(s.layer.stats().stray_responses, 1);
}

#[test]
fn invite_client_transport_error_gives_503() {
    let mut s = Sim::new();
    let id = s.send(request("INVITE", ";branch=z9hG4bKc6"), true);
    let t = s.transmits().pop().unwrap();
    assert_eq!(t.tx, Some(TxId::Client(id)));
    s.layer.handle_transport_error(t.tx.unwrap(), s.now);
    failed_with(&s.events(), id, Failure::Transport, 503);
    assert_eq!(s.layer.stats().transport_errors, 1);
    s.assert_empty();
}

// ---- non-INVITE client (figure 6) ------------------------------------------------------

#[test]
fn non_invite_client_timer_e_caps_at_t2_then_timer_f_gives_408() {
    let mut s = Sim::new();
    let id = s.send(request("OPTIONS", ";branch=z9hG4bKn1"), false);
    let sent = s.run_until(31_999);
    // E: 0.5, 1, 2, then T2 = 4 s apart.
    assert_eq!(
        times(&sent),
        vec![0, 500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    assert!(s.events().is_empty());
    s.set_time(32_000); // Timer F
    failed_with(&s.events(), id, Failure::Timeout, 408);
    assert_eq!(s.layer.stats().retransmissions_sent, 10);
    s.assert_empty();
}

#[test]
fn non_invite_client_proceeding_retransmits_every_t2_then_timer_k() {
    let mut s = Sim::new();
    let req = request("REGISTER", ";branch=z9hG4bKn2");
    let id = s.send(req.clone(), false);
    s.set_time(200);
    s.transmits();
    assert!(matches!(
        s.recv_response(reply(&req, 100, "x")),
        ResponseOutcome::Response { .. }
    ));
    assert_eq!(
        s.layer.non_invite_client(id).unwrap().state(),
        NonInviteClientState::Proceeding
    );
    // The E armed in Trying fires at 0.5 s; from then on T2.
    let sent = s.run_until(10_000);
    assert_eq!(times(&sent), vec![500, 4500, 8500]);
    let ok = reply(&req, 200, "x");
    assert_eq!(
        s.recv_response(ok.clone()),
        ResponseOutcome::Response {
            id,
            response: ok.clone()
        }
    );
    assert_eq!(
        s.layer.non_invite_client(id).unwrap().state(),
        NonInviteClientState::Completed
    );
    assert_eq!(s.recv_response(ok.clone()), ResponseOutcome::Absorbed(id));
    assert!(
        s.run_until(14_999).is_empty(),
        "no retransmission in Completed"
    );
    s.set_time(15_000); // Timer K = T4
    assert_eq!(s.events(), vec![TxEvent::Terminated(TxId::Client(id))]);
    s.assert_empty();
}

#[test]
fn non_invite_client_on_reliable_transport_ends_with_the_final_response() {
    let mut s = Sim::new();
    let req = request("MESSAGE", ";branch=z9hG4bKn3");
    let id = s.send(req.clone(), true);
    assert_eq!(times(&s.run_until(20_000)), vec![0]);
    assert!(matches!(
        s.recv_response(reply(&req, 202, "x")),
        ResponseOutcome::Response { .. }
    ));
    assert_eq!(s.events(), vec![TxEvent::Terminated(TxId::Client(id))]); // Timer K = 0
    s.assert_empty();
}

// ---- INVITE server (figure 7) ----------------------------------------------------------

#[test]
fn invite_server_sends_100_at_once_and_repeats_the_last_provisional() {
    let mut s = Sim::new();
    let invite = request("INVITE", ";branch=z9hG4bKs1");
    let (id, stamped) = s.new_server(invite.clone());
    assert_eq!(
        &stamped.top_via().unwrap().received().unwrap()[..],
        b"192.0.2.1"
    );
    let trying = s.transmits();
    assert_eq!(trying.len(), 1);
    assert_eq!(trying[0].dest, peer());
    let t = parsed(&trying[0]);
    assert_eq!(t.status(), Some(100));
    assert_eq!(
        t.headers.get(&HeaderName::To),
        invite.headers.get(&HeaderName::To),
        "no tag on 100"
    );
    // A retransmitted INVITE gets the 100 again.
    assert_eq!(
        s.recv_request(invite.clone()),
        RequestOutcome::Retransmission(id)
    );
    assert_eq!(s.transmits()[0].payload, trying[0].payload);
    // ... and after a 180, the 180.
    s.respond(id, &reply(&stamped, 180, "uas"));
    let ringing = s.transmits();
    assert_eq!(status_of(&ringing[0]), Some(180));
    assert_eq!(
        s.recv_request(invite.clone()),
        RequestOutcome::Retransmission(id)
    );
    assert_eq!(s.transmits()[0].payload, ringing[0].payload);
    assert_eq!(s.layer.stats().retransmissions_sent, 2);
    assert_eq!(
        s.layer.invite_server(id).unwrap().state(),
        InviteServerState::Proceeding
    );
    assert_eq!(s.layer.poll_timeout(), None, "Proceeding has no timer");
    assert!(s.layer.abandon(TxId::Server(id)));
    assert!(!s.layer.abandon(TxId::Server(id)));
    s.assert_empty();
}

#[test]
fn invite_server_without_auto_trying_stays_silent() {
    let mut s = Sim::with(LayerConfig {
        auto_trying: false,
        ..LayerConfig::default()
    });
    let invite = request("INVITE", ";branch=z9hG4bKs2");
    let (id, _) = s.new_server(invite.clone());
    assert!(s.transmits().is_empty());
    assert_eq!(s.recv_request(invite), RequestOutcome::Retransmission(id));
    assert!(s.transmits().is_empty());
    s.layer.abandon(TxId::Server(id));
    s.assert_empty();
}

#[test]
fn invite_server_timer_g_retransmits_until_the_ack_then_timer_i() {
    let mut s = Sim::new();
    let invite = request("INVITE", ";branch=z9hG4bKs3");
    let (id, stamped) = s.new_server(invite.clone());
    s.transmits();
    let busy = reply(&stamped, 486, "uas");
    s.respond(id, &busy);
    let sent = s.run_until(12_000);
    // G: T1, then doubling up to T2.
    assert_eq!(times(&sent), vec![0, 500, 1500, 3500, 7500, 11_500]);
    assert!(sent.iter().all(|(_, t)| status_of(t) == Some(486)));
    // A retransmitted INVITE gets the final response again.
    assert_eq!(
        s.recv_request(invite.clone()),
        RequestOutcome::Retransmission(id)
    );
    assert_eq!(status_of(&s.transmits()[0]), Some(486));

    let ack = ack_for_non_2xx(&invite, &busy);
    assert_eq!(
        s.recv_request(ack.clone()),
        RequestOutcome::AckForInvite(id)
    );
    assert_eq!(
        s.layer.invite_server(id).unwrap().state(),
        InviteServerState::Confirmed
    );
    assert_eq!(
        s.recv_request(ack.clone()),
        RequestOutcome::Retransmission(id)
    );
    assert_eq!(
        s.recv_request(invite.clone()),
        RequestOutcome::Retransmission(id)
    );
    assert!(
        s.run_until(16_999).is_empty(),
        "no G after the ACK, nothing re-sent in Confirmed"
    );
    s.set_time(17_000); // Timer I = T4 after the ACK
    assert_eq!(s.events(), vec![TxEvent::Terminated(TxId::Server(id))]);
    s.assert_empty();
    // A late ACK matches nothing any more: it goes to the TU.
    assert_eq!(s.recv_request(ack.clone()), RequestOutcome::Ack2xx(ack));
}

#[test]
fn invite_server_timer_h_gives_up_without_ack() {
    let mut s = Sim::new();
    let (id, stamped) = s.new_server(request("INVITE", ";branch=z9hG4bKs4"));
    s.transmits();
    s.respond(id, &reply(&stamped, 480, "uas"));
    let sent = s.run_until(31_999);
    assert_eq!(
        times(&sent),
        vec![0, 500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    assert!(s.events().is_empty());
    s.set_time(32_000); // Timer H = 64*T1
    assert_eq!(
        s.events(),
        vec![
            TxEvent::ServerFailed {
                id,
                reason: Failure::Timeout
            },
            TxEvent::Terminated(TxId::Server(id))
        ]
    );
    assert_eq!(s.layer.stats().timeouts, 1);
    s.assert_empty();
}

#[test]
fn invite_server_on_reliable_transport_has_no_timer_g_and_no_timer_i() {
    let mut s = Sim::new();
    let invite = request_with(
        "INVITE",
        "SIP/2.0/TCP client.atlanta.example;branch=z9hG4bKs5",
        "",
    );
    let src: SocketAddr = "192.0.2.1:40001".parse().unwrap();
    let RequestOutcome::New {
        id,
        request: stamped,
    } = s.recv_request_from(invite.clone(), src, true)
    else {
        panic!("new transaction expected");
    };
    let busy = reply(&stamped, 486, "uas");
    s.respond(id, &busy);
    let sent = s.run_until(20_000);
    assert_eq!(times(&sent), vec![0, 0]); // 100 Trying and 486, over the connection
    assert!(sent.iter().all(|(_, t)| t.reliable && t.dest == src));
    assert_eq!(
        s.recv_request_from(ack_for_non_2xx(&invite, &busy), src, true),
        RequestOutcome::AckForInvite(id)
    );
    assert_eq!(s.events(), vec![TxEvent::Terminated(TxId::Server(id))]);
    s.assert_empty();

    // Timer H still applies on a reliable transport.
    let invite = request_with(
        "INVITE",
        "SIP/2.0/TCP client.atlanta.example;branch=z9hG4bKs6",
        "",
    );
    let RequestOutcome::New {
        id,
        request: stamped,
    } = s.recv_request_from(invite, src, true)
    else {
        panic!("new transaction expected");
    };
    s.respond(id, &reply(&stamped, 486, "uas"));
    assert_eq!(s.run_until(s.elapsed_ms() + 32_000).len(), 2);
    assert!(s.events().contains(&TxEvent::ServerFailed {
        id,
        reason: Failure::Timeout
    }));
    s.assert_empty();
}

#[test]
fn invite_server_2xx_enters_accepted_and_absorbs_invite_retransmissions() {
    let mut s = Sim::new();
    let invite = request("INVITE", ";branch=z9hG4bKs7");
    let (id, stamped) = s.new_server(invite.clone());
    s.transmits();
    s.set_time(1000);
    let ok = reply(&stamped, 200, "uas");
    s.respond(id, &ok);
    assert_eq!(status_of(&s.transmits()[0]), Some(200));
    assert_eq!(
        s.layer.invite_server(id).unwrap().state(),
        InviteServerState::Accepted
    );
    // An INVITE retransmission is absorbed: no new transaction, nothing re-sent (RFC 6026).
    assert_eq!(
        s.recv_request(invite.clone()),
        RequestOutcome::Retransmission(id)
    );
    assert!(s.transmits().is_empty());
    // The TU's own 2xx retransmission goes out; other responses are refused.
    s.respond(id, &ok);
    assert_eq!(s.transmits().len(), 1);
    assert_eq!(
        s.layer.respond(id, &reply(&stamped, 486, "uas"), s.now),
        Err(TxError::FinalResponseSent)
    );
    // The ACK for the 2xx (a new branch) and even one on the INVITE's branch go to the TU.
    let mut ack = ack_for_non_2xx(&invite, &ok);
    assert_eq!(
        s.recv_request(ack.clone()),
        RequestOutcome::Ack2xx(ack.clone())
    );
    ack.headers.set(
        HeaderName::Via,
        "SIP/2.0/UDP client.atlanta.example:5060;branch=z9hG4bKnew",
    );
    assert_eq!(s.recv_request(ack.clone()), RequestOutcome::Ack2xx(ack));
    assert!(
        s.run_until(32_999).is_empty(),
        "the transaction never retransmits a 2xx"
    );
    s.set_time(33_000); // Timer L = 64*T1
    assert_eq!(s.events(), vec![TxEvent::Terminated(TxId::Server(id))]);
    s.assert_empty();
}

#[test]
fn server_transport_error_ends_the_transaction() {
    let mut s = Sim::new();
    let (id, _) = s.new_server(request("INVITE", ";branch=z9hG4bKs8"));
    let t = s.transmits().pop().unwrap();
    s.layer.handle_transport_error(t.tx.unwrap(), s.now);
    assert_eq!(
        s.events(),
        vec![
            TxEvent::ServerFailed {
                id,
                reason: Failure::Transport
            },
            TxEvent::Terminated(TxId::Server(id))
        ]
    );
    s.assert_empty();
}

// ---- non-INVITE server (figure 8) ------------------------------------------------------

#[test]
fn non_invite_server_absorbs_retransmissions_then_timer_j() {
    let mut s = Sim::new();
    let req = request("OPTIONS", ";branch=z9hG4bKs9");
    let (id, stamped) = s.new_server(req.clone());
    assert!(s.transmits().is_empty(), "no automatic 100 for non-INVITE");
    // Trying: retransmissions are dropped.
    assert_eq!(
        s.recv_request(req.clone()),
        RequestOutcome::Retransmission(id)
    );
    assert!(s.transmits().is_empty());
    // Proceeding: the provisional is re-sent.
    s.respond(id, &reply(&stamped, 100, "x"));
    assert_eq!(
        s.layer.non_invite_server(id).unwrap().state(),
        NonInviteServerState::Proceeding
    );
    s.transmits();
    assert_eq!(
        s.recv_request(req.clone()),
        RequestOutcome::Retransmission(id)
    );
    assert_eq!(status_of(&s.transmits()[0]), Some(100));
    // Completed: the final is re-sent.
    s.set_time(2000);
    s.respond(id, &reply(&stamped, 200, "x"));
    assert_eq!(status_of(&s.transmits()[0]), Some(200));
    assert_eq!(
        s.recv_request(req.clone()),
        RequestOutcome::Retransmission(id)
    );
    assert_eq!(status_of(&s.transmits()[0]), Some(200));
    assert_eq!(
        s.layer.respond(id, &reply(&stamped, 500, "x"), s.now),
        Err(TxError::FinalResponseSent)
    );
    assert!(
        s.run_until(33_999).is_empty(),
        "no retransmission on its own"
    );
    assert_eq!(s.layer.len(), 1);
    s.set_time(34_000); // Timer J = 64*T1
    assert_eq!(s.events(), vec![TxEvent::Terminated(TxId::Server(id))]);
    s.assert_empty();
    assert_eq!(
        s.layer.respond(id, &reply(&stamped, 200, "x"), s.now),
        Err(TxError::UnknownTransaction)
    );
}

#[test]
fn non_invite_server_on_reliable_transport_ends_with_the_final_response() {
    let mut s = Sim::new();
    let src: SocketAddr = "192.0.2.1:40002".parse().unwrap();
    let req = request_with(
        "BYE",
        "SIP/2.0/TCP client.atlanta.example;branch=z9hG4bKs10",
        "",
    );
    let RequestOutcome::New {
        id,
        request: stamped,
    } = s.recv_request_from(req, src, true)
    else {
        panic!("new transaction expected");
    };
    s.respond(id, &reply(&stamped, 200, "x"));
    assert_eq!(s.transmits().len(), 1);
    assert_eq!(s.events(), vec![TxEvent::Terminated(TxId::Server(id))]); // Timer J = 0
    s.assert_empty();
}

// ---- matching (§17.1.3, §17.2.3, §9) ---------------------------------------------------

#[test]
fn cancel_gets_its_own_transaction_and_names_the_invite() {
    let mut s = Sim::new();
    let invite = request("INVITE", ";branch=z9hG4bKm1");
    let (inv, inv_req) = s.new_server(invite.clone());
    let cancel = cancel_for(&invite);
    let (cancel_tx, cancel_req) = match s.recv_request(cancel.clone()) {
        RequestOutcome::Cancel {
            cancel_tx,
            invite_tx,
            request,
        } => {
            assert_eq!(invite_tx, Some(inv));
            assert_ne!(cancel_tx, inv);
            (cancel_tx, request)
        }
        other => panic!("expected a CANCEL, got {other:?}"),
    };
    assert_eq!(
        s.recv_request(cancel.clone()),
        RequestOutcome::Retransmission(cancel_tx)
    );
    // A CANCEL on another branch, or from another sent-by, targets nothing.
    let other = cancel_for(&request("INVITE", ";branch=z9hG4bKm2"));
    let moved = cancel_for(&request_with(
        "INVITE",
        "SIP/2.0/UDP elsewhere.example;branch=z9hG4bKm1",
        "",
    ));
    for unmatched in [other, moved] {
        match s.recv_request(unmatched) {
            RequestOutcome::Cancel {
                cancel_tx,
                invite_tx: None,
                request,
            } => {
                s.respond(cancel_tx, &reply(&request, 481, "uas"));
            }
            other => panic!("expected an unmatched CANCEL, got {other:?}"),
        }
    }
    // The TU answers both; the INVITE with 487, then the ACK ends it.
    s.respond(cancel_tx, &reply(&cancel_req, 200, "uas"));
    let terminated = reply(&inv_req, 487, "uas");
    s.respond(inv, &terminated);
    assert_eq!(
        s.recv_request(ack_for_non_2xx(&invite, &terminated)),
        RequestOutcome::AckForInvite(inv)
    );
    s.run_until(40_000);
    s.assert_empty();
}

#[test]
fn rfc2543_requests_match_without_the_magic_cookie() {
    for via_params in ["", ";branch=1234-old"] {
        let mut s = Sim::new();
        let invite = request("INVITE", via_params);
        let (id, stamped) = s.new_server(invite.clone());
        s.transmits();
        assert_eq!(
            s.recv_request(invite.clone()),
            RequestOutcome::Retransmission(id)
        );
        assert_eq!(s.transmits().len(), 1, "100 re-sent");
        // CANCEL: same identity except the method.
        match s.recv_request(cancel_for(&invite)) {
            RequestOutcome::Cancel {
                cancel_tx,
                invite_tx,
                request,
            } => {
                assert_eq!(invite_tx, Some(id));
                s.respond(cancel_tx, &reply(&request, 200, "uas-tag"));
            }
            other => panic!("expected a CANCEL, got {other:?}"),
        }
        // Another CSeq is another transaction.
        let mut later = invite.clone();
        later.headers.set(HeaderName::CSeq, "314160 INVITE");
        let (id2, _) = s.new_server(later);
        assert_ne!(id, id2);

        let busy = reply(&stamped, 486, "uas-tag");
        s.respond(id, &busy);
        // The ACK must carry the To tag of the response.
        let wrong = ack_for_non_2xx(&invite, &reply(&stamped, 486, "other"));
        assert!(matches!(s.recv_request(wrong), RequestOutcome::Ack2xx(_)));
        assert_eq!(
            s.recv_request(ack_for_non_2xx(&invite, &busy)),
            RequestOutcome::AckForInvite(id)
        );
        s.layer.abandon(TxId::Server(id2));
        s.run_until(100_000);
        s.assert_empty();
    }
}

#[test]
fn same_branch_from_another_sent_by_is_another_transaction() {
    let mut s = Sim::new();
    let (a, _) = s.new_server(request("OPTIONS", ";branch=z9hG4bKm3"));
    let (b, _) = s.new_server(request_with(
        "OPTIONS",
        "SIP/2.0/UDP other.example:5060;branch=z9hG4bKm3",
        "",
    ));
    let (c, _) = s.new_server(request("MESSAGE", ";branch=z9hG4bKm3"));
    assert!(a != b && b != c && a != c);
    assert_eq!(s.layer.in_flight().server_non_invite, 3);
    for id in [a, b, c] {
        s.layer.abandon(TxId::Server(id));
    }
    s.assert_empty();
}

#[test]
fn stray_responses_are_counted() {
    let mut s = Sim::new();
    let invite = request("INVITE", ";branch=z9hG4bKm4");
    let id = s.send(invite.clone(), false);
    // Unknown branch.
    let unknown = reply(&request("INVITE", ";branch=z9hG4bKzz"), 180, "x");
    assert!(matches!(
        s.recv_response(unknown),
        ResponseOutcome::Stray(_)
    ));
    // Same branch, CSeq method of another transaction (a CANCEL's response).
    let mut wrong_method = reply(&invite, 200, "x");
    wrong_method.headers.set(HeaderName::CSeq, "314159 CANCEL");
    assert!(matches!(
        s.recv_response(wrong_method),
        ResponseOutcome::Stray(_)
    ));
    // Same branch, another sent-by (§18.1.2).
    let mut wrong_via = reply(&invite, 180, "x");
    wrong_via.headers.set(
        HeaderName::Via,
        "SIP/2.0/UDP evil.example:5060;branch=z9hG4bKm4",
    );
    assert!(matches!(
        s.recv_response(wrong_via),
        ResponseOutcome::Stray(_)
    ));
    // No Via, or a request.
    let mut no_via = reply(&invite, 180, "x");
    no_via.headers.remove(&HeaderName::Via);
    assert!(matches!(s.recv_response(no_via), ResponseOutcome::Stray(_)));
    assert!(matches!(
        s.recv_response(invite.clone()),
        ResponseOutcome::Stray(_)
    ));
    assert_eq!(s.layer.stats().stray_responses, 5);
    assert_eq!(
        s.layer.invite_client(id).unwrap().state(),
        InviteClientState::Calling
    );
    s.layer.abandon(TxId::Client(id));
    s.assert_empty();
}

#[test]
fn an_ack_without_transaction_goes_to_the_tu() {
    let mut s = Sim::new();
    let ack = request("ACK", ";branch=z9hG4bKm5");
    assert_eq!(s.recv_request(ack.clone()), RequestOutcome::Ack2xx(ack));
    let ack = request("ACK", ";branch=oldstyle");
    assert_eq!(s.recv_request(ack.clone()), RequestOutcome::Ack2xx(ack));
    // An ACK before any final response is absorbed.
    let (id, _) = s.new_server(request("INVITE", ";branch=z9hG4bKm6"));
    assert_eq!(
        s.recv_request(request("ACK", ";branch=z9hG4bKm6")),
        RequestOutcome::Retransmission(id)
    );
    s.layer.abandon(TxId::Server(id));
    s.assert_empty();
}

#[test]
fn requests_without_a_key_are_invalid() {
    let mut s = Sim::new();
    let mut no_via = request("OPTIONS", ";branch=z9hG4bKm7");
    no_via.headers.remove(&HeaderName::Via);
    assert!(matches!(
        s.recv_request(no_via),
        RequestOutcome::Invalid {
            error: TxError::Header(crate::sip::hdr::HeaderError::Missing("Via")),
            ..
        }
    ));
    let mut no_cseq = request("OPTIONS", "");
    no_cseq.headers.remove(&HeaderName::CSeq);
    assert!(matches!(
        s.recv_request(no_cseq),
        RequestOutcome::Invalid { .. }
    ));
    let resp = reply(&request("OPTIONS", ";branch=z9hG4bKm8"), 200, "x");
    assert!(matches!(
        s.recv_request(resp),
        RequestOutcome::Invalid {
            error: TxError::NotARequest,
            ..
        }
    ));
    s.assert_empty();
}

#[test]
fn responses_go_where_18_2_2_says() {
    let mut s = Sim::new();
    let src: SocketAddr = "198.51.100.9:61000".parse().unwrap();
    let cases = [
        (
            "SIP/2.0/UDP client.example:5070;branch=z9hG4bKd1",
            false,
            "198.51.100.9:5070",
        ),
        (
            "SIP/2.0/UDP client.example;branch=z9hG4bKd2",
            false,
            "198.51.100.9:5060",
        ),
        (
            "SIP/2.0/UDP client.example:5070;rport;branch=z9hG4bKd3",
            false,
            "198.51.100.9:61000",
        ),
        (
            "SIP/2.0/TCP client.example:5070;branch=z9hG4bKd4",
            true,
            "198.51.100.9:61000",
        ),
    ];
    for (via, reliable, want) in cases {
        let RequestOutcome::New { id, request } =
            s.recv_request_from(request_with("OPTIONS", via, ""), src, reliable)
        else {
            panic!("new transaction expected");
        };
        if via.contains("rport") {
            assert_eq!(request.top_via().unwrap().rport(), Some(Some(61000)));
        }
        s.respond(id, &reply(&request, 200, "x"));
        let t = s.transmits().pop().unwrap();
        assert_eq!(t.dest, want.parse::<SocketAddr>().unwrap(), "{via}");
        assert_eq!(t.reliable, reliable);
        // The response carries the stamped Via.
        assert_eq!(
            &parsed(&t).top_via().unwrap().received().unwrap()[..],
            b"198.51.100.9"
        );
    }
    s.run_until(40_000);
    s.assert_empty();
}

// ---- CANCEL from the client side (§9.1) -------------------------------------------------

#[test]
fn cancel_waits_for_a_provisional_response() {
    let mut s = Sim::new();
    let invite = request("INVITE", ";branch=z9hG4bKx1");
    let id = s.send(invite.clone(), false);
    s.transmits();
    assert_eq!(s.layer.cancel(id, s.now), Ok(CancelOutcome::Deferred));
    assert!(s.transmits().is_empty(), "no CANCEL before a provisional");
    s.set_time(300);
    assert!(matches!(
        s.recv_response(reply(&invite, 100, "x")),
        ResponseOutcome::Response { .. }
    ));
    let cancel = s.transmits();
    assert_eq!(cancel.len(), 1);
    assert_eq!(parsed(&cancel[0]), cancel_for(&invite));
    let ev = s.events();
    let [TxEvent::CancelSent {
        invite: i,
        cancel: c,
    }] = ev[..]
    else {
        panic!("expected CancelSent, got {ev:?}");
    };
    assert_eq!(i, id);
    assert_eq!(cancel[0].tx, Some(TxId::Client(c)));
    // The CANCEL's 200 and the INVITE's 487 share the branch; CSeq tells them apart.
    let c200 = reply(&cancel_for(&invite), 200, "uas");
    assert_eq!(
        s.recv_response(c200.clone()),
        ResponseOutcome::Response {
            id: c,
            response: c200
        }
    );
    let r487 = reply(&invite, 487, "uas");
    assert_eq!(
        s.recv_response(r487.clone()),
        ResponseOutcome::Response { id, response: r487 }
    );
    assert_eq!(parsed(&s.transmits()[0]).method(), Some(&Method::Ack));
    assert_eq!(s.layer.cancel(id, s.now), Err(TxError::NotCancellable));
    s.run_until(40_000);
    s.assert_empty();
}

#[test]
fn cancel_in_proceeding_goes_out_at_once_and_a_final_makes_a_deferred_one_moot() {
    let mut s = Sim::new();
    let invite = request("INVITE", ";branch=z9hG4bKx2");
    let id = s.send(invite.clone(), false);
    assert!(matches!(
        s.recv_response(reply(&invite, 180, "x")),
        ResponseOutcome::Response { .. }
    ));
    s.transmits();
    let Ok(CancelOutcome::Sent(c)) = s.layer.cancel(id, s.now) else {
        panic!("CANCEL expected at once");
    };
    assert_eq!(parsed(&s.transmits()[0]).method(), Some(&Method::Cancel));
    assert_eq!(
        s.layer.cancel(id, s.now),
        Err(TxError::DuplicateTransaction)
    );
    assert_eq!(s.layer.in_flight().client_non_invite, 1);
    s.layer.abandon(TxId::Client(c));
    s.layer.abandon(TxId::Client(id));

    let invite = request("INVITE", ";branch=z9hG4bKx3");
    let id = s.send(invite.clone(), false);
    assert_eq!(s.layer.cancel(id, s.now), Ok(CancelOutcome::Deferred));
    assert!(matches!(
        s.recv_response(reply(&invite, 200, "x")),
        ResponseOutcome::Response { .. }
    ));
    assert!(s.recv_response(reply(&invite, 180, "x")) == ResponseOutcome::Absorbed(id));
    s.transmits();
    let opts = s.send(request("OPTIONS", ";branch=z9hG4bKx4"), false);
    assert_eq!(s.layer.cancel(opts, s.now), Err(TxError::NotCancellable));
    let sent = s.run_until(100_000);
    assert!(!sent.is_empty(), "the OPTIONS is retransmitted");
    assert!(sent
        .iter()
        .all(|(_, t)| parsed(t).method() == Some(&Method::Options)));
    assert!(!s
        .events()
        .iter()
        .any(|e| matches!(e, TxEvent::CancelSent { .. })));
    s.assert_empty();
}

#[test]
fn send_request_refuses_what_is_not_a_transaction() {
    let mut s = Sim::new();
    let now = s.now;
    let l = &mut s.layer;
    assert_eq!(
        l.send_request(request("ACK", ";branch=z9hG4bKr1"), peer(), false, now),
        Err(TxError::AckIsNotATransaction)
    );
    assert_eq!(
        l.send_request(request("BYE", ";branch=old"), peer(), false, now),
        Err(TxError::MissingBranch)
    );
    assert_eq!(
        l.send_request(request("BYE", ""), peer(), false, now),
        Err(TxError::MissingBranch)
    );
    let resp = reply(&request("BYE", ";branch=z9hG4bKr2"), 200, "x");
    assert_eq!(
        l.send_request(resp, peer(), false, now),
        Err(TxError::NotARequest)
    );
    let bye = request("BYE", ";branch=z9hG4bKr3");
    assert!(l.send_request(bye.clone(), peer(), false, now).is_ok());
    assert_eq!(
        l.send_request(bye, peer(), false, now),
        Err(TxError::DuplicateTransaction)
    );
    // The ACK for a 2xx goes out without a transaction.
    l.send_stateless(&request("ACK", ";branch=z9hG4bKr4"), peer(), false);
    let sent = s.transmits();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].tx, None);
    s.run_until(40_000);
    s.assert_empty();
}

#[test]
fn new_branches_carry_the_cookie_and_differ() {
    let mut s = Sim::new();
    let a = s.layer.new_branch();
    let b = s.layer.new_branch();
    assert!(a.starts_with(b"z9hG4bK") && b.starts_with(b"z9hG4bK"));
    assert_ne!(a, b);
    assert_ne!(s.layer.new_tag(), s.layer.new_tag());
}

// ---- the layer as a whole --------------------------------------------------------------

#[test]
fn poll_timeout_is_the_earliest_deadline_of_all_transactions() {
    let mut s = Sim::new();
    let inv = s.send(request("INVITE", ";branch=z9hG4bKt1"), false);
    assert_eq!(s.layer.poll_timeout(), Some(s.at(500))); // Timer A
    s.set_time(100);
    let opt = s.send(request("OPTIONS", ";branch=z9hG4bKt2"), true);
    assert_eq!(s.layer.poll_timeout(), Some(s.at(500)));
    s.layer.abandon(TxId::Client(inv));
    assert_eq!(s.layer.poll_timeout(), Some(s.at(32_100))); // Timer F of the OPTIONS
    let st = s.layer.in_flight();
    assert_eq!((st.client_invite, st.client_non_invite), (0, 1));
    s.layer.abandon(TxId::Client(opt));
    s.assert_empty();
}

#[test]
fn a_late_wake_up_fires_everything_due_once() {
    let mut s = Sim::new();
    let id = s.send(request("INVITE", ";branch=z9hG4bKt3"), false);
    s.transmits();
    // The driver oversleeps past A, A, A and B: B wins, nothing is re-sent.
    s.set_time(40_000);
    assert!(s.transmits().is_empty());
    failed_with(&s.events(), id, Failure::Timeout, 408);
    s.assert_empty();
}

#[test]
fn many_transactions_of_every_kind_all_end() {
    let mut s = Sim::new();
    let mut finals = Vec::new();
    for i in 0..50u32 {
        let reliable = i % 3 == 0;
        let inv = request("INVITE", &format!(";branch=z9hG4bKcl{i}"));
        let id = s.send(inv.clone(), reliable);
        let opt = request("OPTIONS", &format!(";branch=z9hG4bKco{i}"));
        let oid = s.send(opt.clone(), reliable);
        finals.push((inv, opt, id, oid));
        let (sid, sreq) = s.new_server(request("INVITE", &format!(";branch=z9hG4bKsi{i}")));
        let code = [200, 486, 180][i as usize % 3];
        s.respond(sid, &reply(&sreq, code, "t"));
        let (nid, nreq) = s.new_server(request("MESSAGE", &format!(";branch=z9hG4bKsn{i}")));
        if i % 2 == 0 {
            s.respond(nid, &reply(&nreq, 202, "t"));
        }
    }
    assert_eq!(s.layer.len(), 200);
    for (i, (inv, opt, _, _)) in finals.iter().enumerate() {
        match i % 4 {
            0 => assert!(matches!(
                s.recv_response(reply(inv, 200, "t")),
                ResponseOutcome::Response { .. }
            )),
            1 => assert!(matches!(
                s.recv_response(reply(inv, 404, "t")),
                ResponseOutcome::Response { .. }
            )),
            2 => assert!(matches!(
                s.recv_response(reply(inv, 180, "t")),
                ResponseOutcome::Response { .. }
            )),
            _ => {} // Timer B
        }
        if i % 2 == 0 {
            assert!(matches!(
                s.recv_response(reply(opt, 200, "t")),
                ResponseOutcome::Response { .. }
            ));
        }
    }
    s.run_until(200_000);
    // Left: INVITE clients in Proceeding, INVITE servers that only sent a 180, unanswered
    // MESSAGE servers: none of them has a timer (the TU must finish or abandon them).
    let st = s.layer.in_flight();
    assert_eq!(s.layer.poll_timeout(), None);
    assert_eq!((st.client_invite, st.client_non_invite), (12, 0));
    assert_eq!((st.server_invite, st.server_non_invite), (16, 25));
    let ids: Vec<TxId> = finals.iter().map(|f| TxId::Client(f.2)).collect();
    for id in ids {
        s.layer.abandon(id);
    }
    for n in 0..=s.layer.next_id_for_tests() {
        s.layer.abandon(TxId::Server(ServerTxId(n)));
    }
    s.assert_empty();
}

#[test]
fn the_machines_work_on_their_own() {
    let t0 = Instant::now();
    let cfg = TimerConfig {
        t1: ms(100),
        ..TimerConfig::default()
    };
    let invite = request("INVITE", ";branch=z9hG4bKu1");
    let (mut c, first) = InviteClient::start(invite.clone(), false, cfg, t0);
    assert_eq!(first.send, Some(invite.to_bytes()));
    assert_eq!(c.timer(Timer::A), Some(t0 + ms(100)));
    assert_eq!(c.timer(Timer::B), Some(t0 + ms(6400)));
    assert!(c.handle_response(&reply(&invite, 100, "x"), t0).to_tu);
    assert_eq!(c.poll_timeout(), None);

    let (mut srv, trying) = InviteServer::start(&invite, false, cfg, true, t0);
    assert_eq!(
        trying.send.map(|b| parse(b).unwrap().status()),
        Some(Some(100))
    );
    assert_eq!(srv.respond(&invite, t0), Err(TxError::NotAResponse));
    let busy = srv.respond(&reply(&invite, 486, "t"), t0).unwrap();
    assert!(busy.send.is_some() && !busy.retransmission);
    assert_eq!(srv.timer(Timer::G), Some(t0 + ms(100)));
    assert_eq!(srv.timer(Timer::H), Some(t0 + ms(6400)));
    let g = srv.handle_timeout(t0 + ms(100));
    assert!(g.retransmission && g.send == busy.send);
    assert_eq!(srv.timer(Timer::G), Some(t0 + ms(300)));
    assert_eq!(srv.handle_ack(t0 + ms(150)), AckDisposition::Confirmed);
    assert_eq!(srv.handle_ack(t0 + ms(160)), AckDisposition::Absorbed);
    assert_eq!(srv.poll_timeout(), Some(t0 + ms(150) + cfg.t4));

    let mut n = NonInviteServer::start(false, cfg, t0);
    assert_eq!(n.handle_retransmission(t0), Actions::default());
    assert!(n.handle_transport_error().failed == Some(Failure::Transport));
    assert_eq!(n.state(), NonInviteServerState::Terminated);
}
