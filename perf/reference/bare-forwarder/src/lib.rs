//! The bare forwarder: the simplest efficient userspace UDP relay, written to measure the
//! practical limit of a userspace media relay on a machine (issue 3, `perf/reference/`).
//!
//! One thread, one epoll set (mio), `recvmmsg`/`sendmmsg` batches, no parsing: a datagram
//! received on one port of a pair leaves unchanged from the other port, to the address that
//! port latched first ([`relay`]). `rtp-pairs`, the second binary, is its load source: RTP
//! streams both ways through every pair, counted exactly.
//!
//! All `unsafe` code lives in [`sys`].

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod relay;
#[allow(unsafe_code)]
pub mod sys;

pub use relay::{parse_listen, Counters, Forwarder, Report, StopHandle};
