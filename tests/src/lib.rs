//! # cpm-tests: black-box tests of the real `cpmd`
//!
//! The support library the tests in `tests/tests/` share:
//! - [`Cpmd`] runs the `cpmd` binary on free ports of 127.0.0.1 with a temp data dir, learns
//!   its ports from the ready line, reads `/metrics`, stops it with SIGTERM, and prints its log
//!   when a test fails;
//! - [`Ua`] is a scripted SIP user agent over real UDP/TCP sockets that writes requests as text
//!   ([`Req`]), retransmits over UDP, answers digest challenges with
//!   [`cpm_engine::sip::digest`], and plays a registered contact answering forwarded requests;
//! - [`dialog`] keeps a scripted peer's side of a dialog through cpmd (in-dialog requests,
//!   ACKs); [`sdp`] writes offers and answers and reads cpmd's rewritten SDP back;
//! - [`netns`] runs commands inside a private network namespace, [`sipp`] runs SIPp scenarios;
//! - [`baresip`] runs baresip user agents (no sound card: a sine source, WAV recordings) driven
//!   over their control port; [`audio`] reads WAV files and finds tones in them (Goertzel);
//!   [`rtp`] reads pcap captures, counts/echoes RTP, and sends and collects numbered RTP;
//!   [`ports`] hands out port blocks of the interop range 18000-18999;
//! - [`soak`] runs the soak's `cpm-loadgen` processes, samples cpmd's `/proc` and `/metrics`,
//!   fits trends and writes the soak's artifacts (`tests/tests/soak.rs`).
//!
//! Every wait is bounded; everything listens on 127.0.0.1 only.
//!
//! ```text
//! cargo test -p cpm-tests                          # e2e tests: cpmd on free loopback ports
//! cargo test -p cpm-tests -- --include-ignored     # + SIPp and baresip interop, torture vectors in a netns (root)
//! ```
//!
//! The tests run `target/<profile>/cpmd`, brought up to date once per test binary with
//! `cargo build -p cpm-actors --bin cpmd`; `CPMD_BIN` names another binary. The torture vectors
//! come from `<workspace>/../shared/vectors/sip-torture` or `CPM_VECTORS`.

pub mod audio;
pub mod baresip;
pub mod check;
pub mod cpmd;
pub mod dialog;
pub mod http;
pub mod mixing;
pub mod msrp;
pub mod netns;
pub mod ports;
pub mod rtp;
pub mod sdp;
pub mod seccomp;
pub mod sipp;
pub mod soak;
pub mod torture;
pub mod ua;
pub mod util;
pub mod vectors;
pub mod wire;

pub use check::{assert_echoes, assert_status};
pub use cpmd::Cpmd;
pub use ua::{Received, Transport, Ua};
pub use util::TempDir;
pub use wire::{header, header_values, reason, Req};

/// Declares a `#[test]` per transport for each listed `fn name(t: Transport)`: `name::udp` and
/// `name::tcp`.
#[macro_export]
macro_rules! over_udp_and_tcp {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn udp() {
                    super::$name($crate::Transport::Udp)
                }
                #[test]
                fn tcp() {
                    super::$name($crate::Transport::Tcp)
                }
            }
        )*
    };
}
