//! Group chat in a conference (issue 6, decision 0014 "Group chat"): the focus is the MSRP
//! endpoint (RFC 4975) of one chat session per participant, on cpmd's MSRP plane, and fans
//! every complete message of one participant out to all the others, re-addressed as
//! `message/cpim` (RFC 3862) `From:` the sender, `To:` the conference (OMA CPM group chat: the
//! focus names the sender), a fresh Message-ID per copy. A recorded conference also stores
//! each message once per owner in network storage, as a conversation of the conference.
//!
//! ```text
//!  participant X ══MSRP══► X's chat sink (plane thread): chunks ─ Assembler ─► complete
//!      ─► fan_out: CPIM From X, To focus ─► every other member's sink queue (bounded,
//!         try_send: full → that copy dropped, counted) ─► its connection's writer ─► Y, Z
//!      ─► recording on: store_copies (one row per owner) ─► 200 to X's last chunk
//! ```
//! The fan-out runs on the MSRP plane's thread, inside the sender's connection task: no
//! actor message per chat message, and per-sender order is kept (one reader, FIFO queues).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use cpm_engine::cpim::{self, CpimBuilder, CpimMessage, CPIM_CONTENT_TYPE};
use cpm_engine::msrp::assemble::Complete;
use cpm_engine::sdp::SessionDescription;
use cpm_engine::store::{DeliveryState, Direction, Flags, StoredMessage};
use parking_lot::Mutex;

use crate::msrp::{ChatMessage, MsrpPlane, MsrpSink, Reply};
use crate::record::{store_copies, unix_ms};
use crate::storage::Storage;

/// The largest chat message the focus takes (`a=max-size`, RFC 4975 §8.6); larger: 413.
pub const MAX_CHAT_MESSAGE: u64 = 1024 * 1024;
/// Copies waiting for one participant at most; more are dropped (and counted).
pub const CHAT_QUEUE: usize = 64;
/// What the focus takes and sends (`a=accept-types`, RFC 4975 §8.6).
pub const ACCEPT_TYPES: &str = "message/cpim text/plain application/im-iscomposing+xml";

/// The chat stream of an offer: the first active `m=message` TCP/MSRP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatOffer {
    /// Its index among the offer's `m=` lines.
    pub index: usize,
    /// The participant's `a=path`.
    pub path: Bytes,
    /// It offered `a=setup:passive`: the focus connects (RFC 6135 §4.1).
    pub passive: bool,
}

/// The chat stream of `offer`, if it has one (a `TCP/MSRP` `m=message` with a port and an
/// `a=path`; `msrps` is not served).
pub fn offered(offer: &Bytes) -> Option<ChatOffer> {
    let sdp = SessionDescription::parse(offer).ok()?;
    sdp.media().iter().enumerate().find_map(|(index, m)| {
        let proto_ok = m
            .media_line()
            .proto
            .as_bytes()
            .eq_ignore_ascii_case(b"TCP/MSRP");
        if &m.kind()[..] != b"message" || m.port() == 0 || !proto_ok {
            return None;
        }
        let path = m.attribute("path")?.value()?.trim_ascii().to_vec();
        let passive = m
            .attribute("setup")
            .and_then(|a| a.value().cloned())
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"passive"));
        (!path.is_empty()).then(|| ChatOffer {
            index,
            path: Bytes::from(path),
            passive,
        })
    })
}

/// Our `m=message` section answering `offer` at our URI `uri` on the plane's `port`:
/// `a=setup:active` when the participant is passive, else `passive` (RFC 6135, as the
/// large-message endpoint does).
pub fn section(port: u16, uri: &Bytes, offer: &ChatOffer) -> String {
    let mut out = String::with_capacity(256);
    let setup = if offer.passive { "active" } else { "passive" };
    let _ = write!(
        out,
        "m=message {port} TCP/MSRP *\r\na=accept-types:{ACCEPT_TYPES}\r\n\
         a=accept-wrapped-types:*\r\na=max-size:{MAX_CHAT_MESSAGE}\r\na=path:{}\r\n\
         a=setup:{setup}\r\na=sendrecv\r\n",
        String::from_utf8_lossy(uri)
    );
    out
}

/// A participant's chat session.
struct Member {
    /// Its AOR: the CPIM From of what it sends.
    aor: String,
    sink: MsrpSink,
}

/// What the fan-out shares with the conference actor.
struct Room {
    focus: String,
    name: String,
    members: BTreeMap<u32, Member>,
    /// Message-IDs of the copies: `<seed>-<n>`.
    seed: u64,
    next_id: u64,
    /// Who gets a copy of each message in its network storage (recording on when any).
    owners: BTreeSet<String>,
    storage: Storage,
}

/// The chat of one conference: its members' sessions and its recording.
pub struct GroupChat {
    room: Arc<Mutex<Room>>,
    plane: MsrpPlane,
    /// The host our MSRP URIs name (the media IP).
    host: String,
}

impl GroupChat {
    /// The chat of the conference `name` with focus URI `focus`.
    pub fn new(
        plane: MsrpPlane,
        host: String,
        focus: String,
        name: String,
        storage: Storage,
        seed: u64,
    ) -> GroupChat {
        GroupChat {
            room: Arc::new(Mutex::new(Room {
                focus,
                name,
                members: BTreeMap::new(),
                seed,
                next_id: 0,
                owners: BTreeSet::new(),
                storage,
            })),
            plane,
            host,
        }
    }

    /// Opens participant `pid`'s chat session for `offer` (its AOR `aor`); the `m=message`
    /// section of our answer, or why not. A member that had one gets a new one.
    pub fn join(&self, pid: u32, aor: String, offer: &ChatOffer) -> Result<String, String> {
        let uri = self.plane.fresh_uri(&self.host);
        let weak = Arc::downgrade(&self.room);
        let on_message = Box::new(move |msg: Complete, reply: Reply| {
            let code = fan_out(&weak, pid, msg);
            let _ = reply.send(code);
        });
        let sink =
            self.plane
                .open_chat(&uri, &offer.path, MAX_CHAT_MESSAGE, CHAT_QUEUE, on_message)?;
        if offer.passive {
            sink.connect();
        }
        let port = self.plane.local_addr().port();
        self.room.lock().members.insert(pid, Member { aor, sink });
        Ok(section(port, &uri, offer))
    }

    /// Our `m=message` section for `offer` when `pid` already has a chat session: the same
    /// URI (a re-offer keeps the session and its connection, as decision 0012 does).
    pub fn section_of(&self, pid: u32, offer: &ChatOffer) -> Option<String> {
        let room = self.room.lock();
        let m = room.members.get(&pid)?;
        let port = self.plane.local_addr().port();
        Some(section(port, m.sink.local_uri(), offer))
    }

    /// Closes `pid`'s chat session (its connection too).
    pub fn leave(&self, pid: u32) {
        let gone = self.room.lock().members.remove(&pid);
        drop(gone);
    }

    /// Closes every session (the conference ended).
    pub fn clear(&self) {
        let gone = std::mem::take(&mut self.room.lock().members);
        drop(gone);
    }

    /// Chat sessions open.
    pub fn len(&self) -> usize {
        self.room.lock().members.len()
    }

    /// No chat session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Turns recording on or off for `owner` (the storage controller joining or leaving at
    /// that participant's REFER, or a predefined conference's `record = true`).
    pub fn record(&self, owner: String, on: bool) {
        let mut room = self.room.lock();
        if on {
            room.owners.insert(owner);
        } else {
            room.owners.remove(&owner);
        }
    }

    /// Whether anyone's storage records the chat.
    pub fn is_recorded(&self) -> bool {
        !self.room.lock().owners.is_empty()
    }
}

impl Drop for GroupChat {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A complete message of member `from`: one copy to every other member, and one per owner
/// into storage when recorded; the status of the 200 (or 481 when `from` left meanwhile).
fn fan_out(room: &Weak<Mutex<Room>>, from: u32, msg: Complete) -> u16 {
    let Some(room) = room.upgrade() else {
        return 481;
    };
    let mut room = room.lock();
    let Some(sender) = room.members.get(&from).map(|m| m.aor.clone()) else {
        return 481;
    };
    let body = readdress(msg.content_type.as_deref(), &msg.body, &sender, &room.focus);
    let ct = Bytes::from_static(CPIM_CONTENT_TYPE.as_bytes());
    let Room {
        members,
        seed,
        next_id,
        name,
        ..
    } = &mut *room;
    for (pid, m) in members.iter() {
        if *pid == from {
            continue;
        }
        *next_id += 1;
        let copy = ChatMessage {
            message_id: Bytes::from(format!("{seed:016x}-{next_id}")),
            content_type: ct.clone(),
            body: body.clone(),
        };
        if !m.sink.send(copy) {
            tracing::debug!(conference = %name, participant = pid, "chat copy dropped: queue full");
        }
    }
    if !room.owners.is_empty() {
        let id = String::from_utf8_lossy(&msg.message_id).into_owned();
        let rows = room
            .owners
            .iter()
            .map(|owner| row(owner, &sender, &room.focus, &room.name, &id))
            .collect();
        store_copies(&room.storage, &room.name, Some(ct), body, false, rows);
    }
    200
}

/// `owner`'s copy of a message `sender` sent to the conference `focus` (type, body and file
/// are filled in by [`store_copies`]).
fn row(owner: &str, sender: &str, focus: &str, name: &str, message_id: &str) -> StoredMessage {
    let sent = owner == sender;
    StoredMessage {
        owner: owner.to_string(),
        conversation: focus.to_string(),
        direction: if sent { Direction::Out } else { Direction::In },
        peer: focus.to_string(),
        sender: sender.to_string(),
        recipient: focus.to_string(),
        time: unix_ms(),
        content_type: String::new(),
        body: Bytes::new(),
        message_id: message_id.to_string(),
        state: DeliveryState::Delivered,
        flags: if sent { Flags::SEEN } else { Flags::NONE },
        session_id: Some(name.to_string()),
        file: None,
    }
}

/// The copy the others get: a `message/cpim` body `From: <sender>`, `To: <focus>` (RFC 3862
/// §3.3; whatever From/To/cc the sender wrote is replaced: the focus vouches for who sent it),
/// with the sender's other CPIM headers (NS, DateTime, imdn.*, ...; header parameters are
/// not kept) and its content; a non-CPIM body becomes the content as it is.
pub fn readdress(content_type: Option<&[u8]>, body: &Bytes, sender: &str, focus: &str) -> Bytes {
    let mut b = CpimBuilder::new(sender, focus);
    let ct = content_type.unwrap_or(b"text/plain");
    if cpim::is_cpim(ct) {
        if let Ok(m) = CpimMessage::parse(body.clone()) {
            for h in m.headers() {
                let name = String::from_utf8_lossy(&h.name);
                let core = h.prefix.is_none()
                    && ["From", "To", "cc"]
                        .iter()
                        .any(|n| name.eq_ignore_ascii_case(n));
                if core {
                    continue;
                }
                let full = match &h.prefix {
                    Some(p) => format!("{}.{name}", String::from_utf8_lossy(p)),
                    None => name.into_owned(),
                };
                b = b.header(&full, h.value_str());
            }
            for (n, v) in m.content_headers() {
                let is = |x: &str| n.eq_ignore_ascii_case(x.as_bytes());
                if !is("Content-Type") && !is("Content-Length") {
                    b = b.content_header(&String::from_utf8_lossy(n), &String::from_utf8_lossy(v));
                }
            }
            return b.build(&String::from_utf8_lossy(m.content_type()), m.body());
        }
    }
    b.build(&String::from_utf8_lossy(ct), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(m: &str) -> Bytes {
        Bytes::from(format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{m}"
        ))
    }

    #[test]
    fn the_chat_stream_of_an_offer() {
        let o = offer(
            "m=audio 4000 RTP/AVP 0\r\nm=message 9 TCP/MSRP *\r\n\
             a=path:msrp://10.0.0.1:9/abc;tcp\r\na=setup:passive\r\n",
        );
        let c = offered(&o).unwrap();
        assert_eq!(c.index, 1);
        assert_eq!(&c.path[..], b"msrp://10.0.0.1:9/abc;tcp");
        assert!(c.passive);
        let s = section(2855, &Bytes::from_static(b"msrp://h:2855/x;tcp"), &c);
        assert!(s.starts_with("m=message 2855 TCP/MSRP *\r\n"), "{s}");
        assert!(s.contains("a=setup:active\r\n") && s.contains("message/cpim text/plain"));
        // Declined, without a path, or secure: not ours.
        assert_eq!(
            offered(&offer("m=message 0 TCP/MSRP *\r\na=path:x\r\n")),
            None
        );
        assert_eq!(offered(&offer("m=message 9 TCP/MSRP *\r\n")), None);
        assert_eq!(
            offered(&offer("m=message 9 TCP/TLS/MSRP *\r\na=path:x\r\n")),
            None
        );
    }

    #[test]
    fn copies_name_the_sender_and_the_conference() {
        let plain = readdress(
            Some(b"text/plain"),
            &Bytes::from_static(b"hi all"),
            "sip:alice@x",
            "sip:conf-1@x",
        );
        let m = CpimMessage::parse(plain).unwrap();
        assert_eq!(m.from().uri_str(), "sip:alice@x");
        assert_eq!(m.to()[0].uri_str(), "sip:conf-1@x");
        assert_eq!(&m.body()[..], b"hi all");
        assert!(m.content_type_is("text/plain"));
        // A CPIM body: its From (a lie) and To replaced, other headers kept.
        let sent = CpimBuilder::new("sip:mallory@x", "sip:bob@x")
            .ns("imdn", "urn:ietf:params:imdn")
            .header("imdn.Message-ID", "m42")
            .header("DateTime", "2026-11-26T10:00:00Z")
            .build("text/plain;charset=utf-8", b"hello");
        let out = readdress(Some(b"message/cpim"), &sent, "sip:alice@x", "sip:conf-1@x");
        let m = CpimMessage::parse(out).unwrap();
        assert_eq!(m.from().uri_str(), "sip:alice@x");
        assert_eq!(m.to().len(), 1);
        assert_eq!(m.to()[0].uri_str(), "sip:conf-1@x");
        assert_eq!(
            m.header_ns("urn:ietf:params:imdn", "Message-ID"),
            Some("m42")
        );
        assert_eq!(m.datetime(), Some("2026-11-26T10:00:00Z"));
        assert_eq!(&m.body()[..], b"hello");
        assert!(m.content_type_is("text/plain"));
    }
}
