//! # cpm-loadgen: the bundled load generator
//!
//! One binary, `cpm-loadgen`, plays the client side (`options`, `register`, `message`,
//! `call`, `msrp`, `conference`) and the answering side (`uas`) of SIP workloads, paces them precisely, measures
//! them with hdrhistogram, and reports a text summary, a JSON file and a self-contained HTML
//! page; thresholds set the exit code. The command line is in [`cli`] (a contract: issue 3).
//!
//! It reuses the engine's SIP code (no second SIP stack): [`cpm_engine::sip::parse`] and the
//! serializer, [`cpm_engine::sip::builder`] for responses, the
//! [`TransactionLayer`](cpm_engine::sip::transaction::TransactionLayer) for retransmissions and
//! timeouts (RFC 3261 §17), and [`cpm_engine::sip::digest::respond`] for authentication.
//!
//! ## Design (docs/decisions/0005-loadgen-design.md)
//!
//! ```text
//!  cli ──► run ──► Driver ◄──────────── io::run (one thread: mio poll + timerfd, UDP sockets)
//!                   │  pacer (deadline schedule), sessions, concurrency, drain
//!                   │  TransactionLayer (engine)     Recorder (hdrhistogram, per-second series)
//!                   ▼
//!               Scenario  (options | register | message | uas | call | msrp | conference ...)
//! ```
//!
//! - The [`driver::Driver`] is sans-IO like the engine: datagrams and `now` go in, sends go out
//!   through a [`driver::Net`], and `poll_timeout` says when to wake it. [`io`] runs it on real
//!   UDP sockets with one thread per role; the tests run two drivers against each other on an
//!   in-memory network and virtual time.
//! - The [`pacing::Pacer`] computes the due time of session `k` from `k` (no drift), with a
//!   linear ramp-up; at most `--concurrency` sessions are in flight; a run is always bounded by
//!   `--count` and/or `--duration`, and by the drain time after its last start.
//! - The [`metrics::Recorder`] keeps one histogram per [`metrics::Quantity`] for the whole run
//!   and a per-second point (count, p50, p99, max) of each, per-second counters (sessions,
//!   RTP packets) and failures by reason. [`report`] renders it.
//!
//! ## Adding a scenario ([`scenario::call`] is the worked example)
//!
//! A scenario implements [`scenario::Scenario`]:
//! - `setup` binds its sockets with [`driver::Ctx::bind_udp`] — [`scenario::SocketKind::Sip`]
//!   ones go through the transaction layer, [`scenario::SocketKind::Raw`] ones (RTP, RTCP) come
//!   to `on_datagram` as they are;
//! - `start(ctx, session, n)` begins the `n`-th session when the pacer says so; it sends with
//!   [`driver::Ctx::send_request`] (a client transaction whose latency to the final response
//!   is recorded per method), [`driver::Ctx::send_stateless`] (the ACK for a 2xx) or
//!   [`driver::Ctx::send_raw`] (RTP);
//! - the driver calls back `on_response` (per session), `on_request` (a new server
//!   transaction: answer with [`driver::Ctx::respond`]), `on_ack`, `on_cancel`, `on_stray`
//!   (2xx retransmissions after the INVITE transaction ended), `on_timer` (armed with
//!   [`driver::Ctx::set_timer`]: hold time, RTP packet clock, re-INVITE), `on_datagram`;
//! - it records its own quantities ([`driver::Ctx::record`]: e.g.
//!   [`metrics::Quantity::CallSetup`], [`metrics::Quantity::RtpOwd`],
//!   [`metrics::Quantity::RtpJitter`], or a [`metrics::Quantity::Custom`] one such as
//!   `"msrp_delivery"`) and RTP counters ([`driver::Ctx::recorder`] with
//!   [`metrics::Counter::RtpSent`], `RtpReceived`, `RtpLost`, `RtpDuplicates`,
//!   `RtpReordered`), which the JSON's `rtp` object and the HTML plots show;
//! - it ends each session with [`driver::Ctx::finish`] and an [`scenario::Outcome`];
//!   `on_stop` winds down (BYE the calls still up), `is_idle` holds the run open until then.
//!
//! Then: a variant in [`cli::ScenarioKind`] with its options in [`cli::parse`], a line in
//! [`run::run_client`] building it, and for the answering side a branch in
//! `Uas::on_request` ([`scenario::uas`]; INVITE goes to [`scenario::uas::Uas::on_invite`]; the
//! RTP stream, meter and socket pool both sides share are in [`scenario::media`]). Media at high
//! packet rates can run on a thread of its own with batched I/O ([`net::BatchSocket`]) and
//! merge its [`metrics::Recorder`] at the end ([`metrics::Recorder::merge`]).

pub mod cli;
pub mod driver;
pub mod io;
pub mod metrics;
pub mod msrp;
pub mod net;
pub mod pacing;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stamp;
pub mod sys;

#[cfg(test)]
mod simnet;
