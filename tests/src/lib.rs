//! # cpm-tests: black-box tests of the real `cpmd`
//!
//! The support library the tests in `tests/tests/` share:
//! - [`Cpmd`] runs the `cpmd` binary on free ports of 127.0.0.1 with a temp data dir, learns
//!   its ports from the ready line, reads `/metrics`, stops it with SIGTERM, and prints its log
//!   when a test fails;
//! - [`Ua`] is a scripted SIP user agent over real UDP/TCP sockets that writes requests as text
//!   ([`Req`]), retransmits over UDP, answers digest challenges with
//!   [`cpm_engine::sip::digest`], and plays a registered contact answering forwarded requests;
//! - [`netns`] runs commands inside a private network namespace, [`sipp`] runs SIPp scenarios.
//!
//! Every wait is bounded; everything listens on 127.0.0.1 only.

pub mod cpmd;
pub mod http;
pub mod netns;
pub mod sipp;
pub mod ua;
pub mod util;
pub mod wire;

pub use cpmd::Cpmd;
pub use ua::{Received, Transport, Ua};
pub use util::TempDir;
pub use wire::{header, header_values, reason, Req};
