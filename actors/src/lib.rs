//! # cpm-actors: the runtime of cpm-engine
//!
//! This crate owns what the sans-IO [`cpm_engine`] does not: sockets, threads, mailboxes,
//! supervision and the real clock. It is a library first: a telecom node embeds the CPM server
//! in its own process with [`Engine::start`]; the `cpmd` daemon is a thin `main` over the same
//! API.
//!
//! ## Shape
//! ```text
//!  UDP socket k ─┐ (SO_REUSEPORT, one per worker)        worker j = hash(Call-ID) mod N
//!  TCP conn ─────┼─ parse (zero-copy) ─ Router ─ try_send ─► Worker j (actix actor on Arbiter j,
//!                │                                          pinned to core j, supervised)
//!                │                                            │ engine: transactions, registrar,
//!                │                                            │ service classification
//!  Outbound ◄────┴─────────────── transmits ◄─────────────────┘
//! ```
//! All work of one call stays on one worker thread; the worker's actor is restarted by its
//! [`actix::Supervisor`] if a handler panics, and the other workers go on. Each worker has a
//! media loop thread next to it ([`media`]) that owns the RTP relay sockets of its calls.
//!
//! ## Embedding
//! ```
//! use cpm_actors::{Config, Engine};
//! use std::time::Duration;
//!
//! let mut config = Config::default();
//! config.sip_listen = "127.0.0.1:0".parse().unwrap(); // any free port
//! config.http_listen = "127.0.0.1:0".parse().unwrap();
//! config.domain.push("example.test".into());
//! config.data_dir = std::env::temp_dir().join("cpm-doc-example"); // charging records go here
//! let engine = Engine::start(config).expect("cpm server starts");
//! println!("SIP on {}, metrics on http://{}/metrics", engine.sip_addr(), engine.http_addr());
//! // ... the node runs ...
//! // Sessions get 10 s to end, then a BYE; in-flight transactions 5 s more; then it stops.
//! engine.shutdown(Duration::from_secs(10), Duration::from_secs(5));
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod charging;
pub mod conference;
pub mod config;
pub mod engine;
pub mod http;
pub mod media;
pub mod messaging;
pub mod metrics;
pub mod msrp;
pub mod record;
pub mod routing;
pub mod services;
pub mod session;
pub mod shared;
pub mod storage;
pub mod sys;
pub mod time;
pub mod transport;
pub mod worker;

pub use config::Config;
pub use engine::{Engine, EngineHandle, StartError};
