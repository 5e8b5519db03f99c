//! # cpm-engine: the sans-IO core of the CPM server
//!
//! cpm-engine contains the protocol logic of the Converged IP Messaging server: SIP parsing and
//! serialisation on [`bytes::Bytes`], the RFC 3261 transaction state machines, digest
//! authentication, the registrar's binding table, the signaling manager's decision (which
//! controller serves a request, CPM.md §3), SDP offer/answer, and the media capability
//! controller (`media`: relay ports and the SDP rewrite of a B2BUA, CPM.md §5).
//!
//! The crate has _no internal clock calls_, no sockets, no threads and no runtime. All time is
//! external input: every state machine takes `now: Instant` with each input and tells through
//! `poll_timeout()` when it next wants to be woken. What it wants sent comes out of a `poll_*`
//! call. The `cpm-actors` crate owns the sockets, the threads and the real clock, and drives these
//! machines; everything here is tested deterministically on virtual time.
//!
//! ```text
//!   bytes in ──► sip::message::parse ──► transaction layer ──► service::classify ──► controller
//!   now ──────►            (state machines)  ──► poll_transmit() / poll_timeout()
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod conference;
pub mod cpim;
pub mod deferred;
pub mod hash;
pub mod imdn;
pub mod media;
pub mod msrp;
pub mod record;
pub mod registrar;
pub mod rtp;
pub mod sdp;
pub mod service;
pub mod session;
pub mod sip;
pub mod store;
