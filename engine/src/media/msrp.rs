//! MSRP streams anchored in the media plane (RFC 4975 §8.1, RFC 4976, RFC 6135; CPM.md §5
//! fig. 6): an `m=message <port> TCP/MSRP *` stream becomes an MSRP leg whose two sides talk
//! to our shared MSRP listener, each with a fresh session-id of ours in its `a=path`.
//!
//! ```text
//!   A ──TCP── msrp://<media-ip>:<port>/<sid A-facing>;tcp ═ leg ═ msrp://…/<sid B-facing>;tcp ──TCP── B
//! ```
//!
//! Who opens each connection follows `a=setup` (RFC 6135, RFC 4145 §4): we answer A
//! `passive` unless A offered `passive` (or no `a=setup`: RFC 4975 §5.4 makes the answerer
//! connect), and offer B `actpass`, taking the role B's answer leaves us (`passive` from B, or
//! none from an RFC 4975-only answerer which then connects, ...). A stream kept by a re-offer
//! keeps its session-ids and its roles. MSRP over TLS (`TCP/TLS/MSRP`, msrps) is not anchored:
//! it passes through unchanged, end to end between the peers.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::sdp::{Attribute, MediaSection};

/// The proto anchored (RFC 4975 §8.1); `TCP/TLS/MSRP` passes through.
pub(super) const ANCHORED_PROTO: &[u8] = b"TCP/MSRP";

/// The MSRP side of the media plane's configuration: the shared listening port (every leg's
/// URIs name it, RFC 4976-style) and the secret the session-ids are derived from.
///
/// Clones share one id sequence: build it once per process and clone it into every worker's
/// [`super::MediaConfig`], so no two legs ever get the same session-id.
#[derive(Clone)]
pub struct MsrpConfig {
    /// The port of the MSRP listener (`--msrp-listen`), on the media IP.
    pub port: u16,
    key: [u8; 32],
    next: Arc<AtomicU64>,
}

impl MsrpConfig {
    /// Anchor MSRP on `port`, session-ids keyed by `key` (random, secret: it makes the
    /// session-ids unguessable, RFC 4975 §14.1).
    pub fn new(port: u16, key: [u8; 32]) -> MsrpConfig {
        MsrpConfig {
            port,
            key,
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A fresh session-id (RFC 4975 §6: `1*(unreserved / "+" / "=" / "/")`): 128 bits of
    /// SHA-256(key, sequence number), as 32 lowercase hex digits.
    pub fn fresh_session_id(&self) -> Bytes {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(n.to_be_bytes());
        let digest = h.finalize();
        let mut out = Vec::with_capacity(32);
        for b in digest.iter().take(16) {
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        }
        Bytes::from(out)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Equal when they name the same port and key and share the id sequence.
impl PartialEq for MsrpConfig {
    fn eq(&self, other: &MsrpConfig) -> bool {
        self.port == other.port && self.key == other.key && Arc::ptr_eq(&self.next, &other.next)
    }
}

impl Eq for MsrpConfig {}

/// The key stays out of logs.
impl fmt::Debug for MsrpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsrpConfig")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// An `a=setup` value (RFC 4145 §4, for MSRP RFC 6135 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Active,
    Passive,
    ActPass,
    HoldConn,
}

impl Setup {
    fn of(m: &MediaSection) -> Option<Setup> {
        let v = m.attribute("setup")?.value()?.clone();
        let v = crate::sip::message::trim(&v);
        [
            (&b"active"[..], Setup::Active),
            (b"passive", Setup::Passive),
            (b"actpass", Setup::ActPass),
            (b"holdconn", Setup::HoldConn),
        ]
        .into_iter()
        .find(|(name, _)| v.eq_ignore_ascii_case(name))
        .map(|(_, s)| s)
    }
}

/// Whether we connect to the side that sent `m` as an offer (we answer it): only when it
/// offered `passive`, or no `a=setup` at all (RFC 4975 §5.4: the answerer connects).
fn we_connect_to_offerer(m: &MediaSection) -> bool {
    matches!(Setup::of(m), Some(Setup::Passive) | None)
}

/// Whether we connect to the side that sent `m` as an answer to our offer: when it answered
/// `passive`. `active`, or none (RFC 4975 §5.4: the answerer connects), means it connects.
fn we_connect_to_answerer(m: &MediaSection) -> bool {
    Setup::of(m) == Some(Setup::Passive)
}

/// Where one side of an MSRP leg is, from its SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsrpPeer {
    /// Its `a=path` value as received: the URIs to put in the To-Path of what we send it
    /// (RFC 4975 §8.1), the first one being where to connect.
    pub path: Bytes,
    /// Whether we open the TCP connection to it (else it connects to our listener).
    pub we_connect: bool,
}

/// The state of one anchored MSRP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MsrpLeg {
    /// Our URI facing each side (index: [`super::Side::index`]).
    pub(super) local: [Bytes; 2],
    /// Each side's path and role, once its SDP named them.
    pub(super) peers: [Option<MsrpPeer>; 2],
}

impl MsrpLeg {
    /// A leg with fresh session-ids on `host:port`.
    pub(super) fn new(config: &MsrpConfig, host: &str) -> MsrpLeg {
        let uri = |sid: Bytes| {
            let mut s = format!("msrp://{host}:{}/", config.port).into_bytes();
            s.extend_from_slice(&sid);
            s.extend_from_slice(b";tcp");
            Bytes::from(s)
        };
        MsrpLeg {
            local: [
                uri(config.fresh_session_id()),
                uri(config.fresh_session_id()),
            ],
            peers: [None, None],
        }
    }
}

/// The peer named by `m` (its `a=path`), `we_connect` from its `a=setup` read as an offer or
/// as an answer. `None` without a usable `a=path`.
pub(super) fn peer_of(m: &MediaSection, offer: bool) -> Option<MsrpPeer> {
    let path = path_of(m)?;
    let we_connect = if offer {
        we_connect_to_offerer(m)
    } else {
        we_connect_to_answerer(m)
    };
    Some(MsrpPeer { path, we_connect })
}

/// The `a=path` value of `m`, trimmed; `None` when absent or empty (RFC 4975 §8.1: required).
pub(super) fn path_of(m: &MediaSection) -> Option<Bytes> {
    let v = m.attribute("path")?.value()?.clone();
    let v = crate::sip::message::trim(&v);
    (!v.is_empty()).then_some(v)
}

/// Whether `m` is an MSRP stream we anchor: `TCP/MSRP`, an active port, an `a=path`.
pub(super) fn anchorable(m: &MediaSection) -> bool {
    m.media_line()
        .proto
        .as_bytes()
        .eq_ignore_ascii_case(ANCHORED_PROTO)
}

/// Points an anchored stream at us for the side `to`: the `m=` port, the media-level `c=`
/// (added when the session has none), `a=path` our URI facing `to`, and `a=setup`: `offer`
/// says whether `m` is sent as an offer (`actpass` for a side whose role is not set yet).
pub(super) fn point(
    m: &mut MediaSection,
    config: &MsrpConfig,
    ip: std::net::IpAddr,
    session_c: bool,
    leg: &MsrpLeg,
    to: super::Side,
    offer: bool,
) {
    m.set_port(config.port);
    if m.connection().is_some() || !session_c {
        m.set_connection(ip);
    }
    let attr =
        |name: &'static str, value: &[u8]| Attribute::new(name, Bytes::copy_from_slice(value));
    if let Ok(a) = attr("path", &leg.local[to.index()]) {
        m.set_attribute(a);
    }
    let setup: &[u8] = match &leg.peers[to.index()] {
        Some(p) if p.we_connect => b"active",
        Some(_) => b"passive",
        None if offer => b"actpass",
        // An answer always follows the offerer's peer being known; be passive if not.
        None => b"passive",
    };
    if let Ok(a) = attr("setup", setup) {
        m.set_attribute(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::SessionDescription;

    fn section(lines: &str) -> SessionDescription {
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n{lines}"
        );
        SessionDescription::parse(&Bytes::from(body)).unwrap()
    }

    #[test]
    fn session_ids_are_fresh_hex_and_keyed() {
        let a = MsrpConfig::new(2855, [1; 32]);
        let b = MsrpConfig::new(2855, [2; 32]);
        let a1 = a.fresh_session_id();
        let a2 = a.clone().fresh_session_id();
        assert_eq!(a1.len(), 32);
        assert!(a1.iter().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a1, a2, "clones share the sequence");
        assert_ne!(a1, b.fresh_session_id(), "another key, other ids");
        assert_eq!(a, a.clone());
        assert_ne!(a, MsrpConfig::new(2855, [1; 32]), "another sequence");
        assert!(!format!("{a:?}").contains("key"));
    }

    #[test]
    fn roles_follow_setup_and_rfc4975_defaults() {
        let d = section(concat!(
            "m=message 9 TCP/MSRP *\r\na=path:msrp://h:9/x;tcp\r\na=setup:passive\r\n",
            "m=message 9 TCP/MSRP *\r\na=path:msrp://h:9/x;tcp\r\na=setup:active\r\n",
            "m=message 9 TCP/MSRP *\r\na=path:msrp://h:9/x;tcp\r\na=setup:actpass\r\n",
            "m=message 9 TCP/MSRP *\r\na=path: msrp://h:9/x;tcp \r\n",
            "m=message 9 TCP/TLS/MSRP *\r\n",
        ));
        let m = d.media();
        let roles = |offer| {
            m[..4]
                .iter()
                .map(|s| peer_of(s, offer).unwrap().we_connect)
                .collect::<Vec<_>>()
        };
        assert_eq!(roles(true), [true, false, false, true]);
        assert_eq!(roles(false), [true, false, false, false]);
        assert_eq!(path_of(&m[3]).unwrap(), "msrp://h:9/x;tcp");
        assert_eq!(peer_of(&m[4], true), None, "no path");
        assert!(anchorable(&m[0]) && !anchorable(&m[4]));
    }
}
