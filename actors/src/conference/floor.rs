//! Half-duplex (push-to-talk) conferences: the conference's side of BFCP floor control
//! (RFC 8855, SDP RFC 8856; decision 0015).
//!
//! - **Which**: a predefined conference with `floor = "half-duplex"` (and `max_talk_time`
//!   seconds, 30 by default, 0 for no limit), or an ad-hoc one created by an INVITE to the
//!   factory URI with the URI parameter `floor=half-duplex` (and optionally
//!   `max-talk-time=SECS`): `sip:conf-factory@example.com;floor=half-duplex;max-talk-time=20`.
//! - **SDP**: a participant whose offer has `m=application <port> TCP/BFCP *` (client or
//!   client-and-server role, active or actpass) gets the focus's BFCP listener in the answer
//!   as `s-only`, `setup:passive`, with the conference id, its own user id and
//!   `floorid:1 mstrm:<label of the audio stream>`. A participant without BFCP in its offer
//!   joins listen-only: it hears the floor holder and is never heard. The focus's offer
//!   (dial-out) carries the same BFCP stream; an answer accepting it makes the participant a
//!   floor participant.
//! - **Floor**: [`Floor`] owns the conference's [`FloorControl`] (engine, virtual time) on the
//!   conference's worker; the BFCP plane's connections reach it as [`FromBfcp`] messages; its
//!   BFCP messages go back through each connection's writer; the talk-time limit is one actix
//!   timer re-armed at `next_deadline`. A connection is bound to the participant whose user id
//!   its first message names; when a participant's last connection closes, its floor request
//!   is released (a crashed client must not keep the floor).
//! - **Audio follows the floor**: a participant is muted in the mixer when muted through the
//!   API or when it does not hold the floor ([`Floor::muted`]).
//! - **Roster**: conference-info (RFC 4575) has no floor element, and we do not add one: the
//!   floor's state is BFCP's (FloorQuery / FloorStatus); the HTTP API's conference summary
//!   shows it as `floor: {holder, queue}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use cpm_engine::conference::floor::bfcp::{
    Attribute, ErrorCode, Header, Message as BfcpMessage, Primitive,
};
use cpm_engine::conference::floor::{FloorConfig, FloorControl, FloorEvent, DEFAULT_FLOOR_ID};
use cpm_engine::conference::roster::ParticipantId;
use cpm_engine::sdp::SessionDescription;
use serde::Deserialize;

use crate::bfcp::{BfcpPlane, BfcpRoute, ConnId, ConnWriter, FromBfcp};

/// The `a=label` of the conference's audio stream, named by `a=floorid:1 mstrm:` (RFC 8856
/// §5).
pub const AUDIO_LABEL: &str = "1";

/// The talk time of a half-duplex conference that names none.
pub const DEFAULT_MAX_TALK_TIME: u64 = 30;

/// The longest talk time an ad-hoc conference may ask for.
const MAX_ADHOC_TALK_TIME: u64 = 3600;

/// Full duplex or half duplex.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloorMode {
    /// Everyone is mixed.
    #[default]
    FullDuplex,
    /// One talker at a time, by BFCP floor control.
    HalfDuplex,
}

/// The serde default of `max_talk_time`.
pub fn default_max_talk_time() -> u64 {
    DEFAULT_MAX_TALK_TIME
}

/// A half-duplex conference's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloorSettings {
    /// How long one talker may hold the floor; `None`: no limit.
    pub max_talk_time: Option<Duration>,
}

impl FloorSettings {
    /// From a number of seconds (0: no limit).
    pub fn from_secs(secs: u64) -> FloorSettings {
        FloorSettings {
            max_talk_time: (secs > 0).then(|| Duration::from_secs(secs)),
        }
    }

    /// The settings an ad-hoc conference's factory Request-URI asks for: `floor=half-duplex`
    /// and `max-talk-time=SECS` (1..=3600, else the default); `None`: full duplex.
    pub fn of_factory_uri(uri: &[u8]) -> Option<FloorSettings> {
        let uri = cpm_engine::sip::uri::Uri::parse(&Bytes::copy_from_slice(uri)).ok()?;
        let mode = uri.param("floor").flatten()?;
        if !mode.eq_ignore_ascii_case(b"half-duplex") {
            return None;
        }
        let secs = uri
            .param("max-talk-time")
            .flatten()
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
            .filter(|s| (1..=MAX_ADHOC_TALK_TIME).contains(s))
            .unwrap_or(DEFAULT_MAX_TALK_TIME);
        Some(FloorSettings::from_secs(secs))
    }
}

/// What the HTTP API shows of a half-duplex conference's floor.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FloorSummary {
    /// The participant holding the floor.
    pub holder: Option<u32>,
    /// The participants waiting for it, first first.
    pub queue: Vec<u32>,
}

// ---- SDP (RFC 8856) ----------------------------------------------------------------------

/// The index of the `m=application <port> TCP/BFCP *` stream of `body` we can serve: TCP (not
/// TLS), a non-zero port, a client role for the participant (`floorctrl` absent, `c-only` or
/// `c-s`) and a setup that lets us be passive (`active`, `actpass`, or absent).
pub fn offered(body: &Bytes) -> Option<usize> {
    let sdp = SessionDescription::parse(body).ok()?;
    sdp.media().iter().position(|m| {
        let line = m.media_line();
        let attr = |name: &str| {
            m.attribute(name)
                .and_then(|a| a.value().cloned())
                .map(|v| v.to_ascii_lowercase())
        };
        let client = attr("floorctrl").is_none_or(|v| {
            v.split(|c| c.is_ascii_whitespace())
                .any(|r| r == b"c-only" || r == b"c-s")
        });
        let setup_ok = attr("setup").is_none_or(|v| v == b"active" || v == b"actpass");
        &line.media[..] == b"application"
            && line.proto.as_bytes().eq_ignore_ascii_case(b"TCP/BFCP")
            && m.port() != 0
            && client
            && setup_ok
    })
}

/// Whether an answer (to our offer) accepted its BFCP stream: a `TCP/BFCP` stream with a port.
pub fn accepted(body: &Bytes) -> bool {
    SessionDescription::parse(body).is_ok_and(|sdp| {
        sdp.media().iter().any(|m| {
            m.media_line()
                .proto
                .as_bytes()
                .eq_ignore_ascii_case(b"TCP/BFCP")
                && m.port() != 0
        })
    })
}

/// Our BFCP media section (RFC 8856 §5): the listener, server role, passive TCP, the
/// conference and user ids and the floor on the audio stream. `media_ip` is the session's
/// `c=` address: a different listener address gets a media-level `c=`.
pub fn section(listen: SocketAddr, media_ip: IpAddr, conference_id: u32, user_id: u16) -> String {
    let mut s = format!("m=application {} TCP/BFCP *\r\n", listen.port());
    let ip = listen.ip();
    if ip != media_ip && !ip.is_unspecified() {
        let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
        let _ = write!(s, "c=IN {family} {ip}\r\n");
    }
    let _ = write!(
        s,
        "a=setup:passive\r\na=connection:new\r\na=floorctrl:s-only\r\na=confid:{conference_id}\r\n\
         a=userid:{user_id}\r\na=floorid:{DEFAULT_FLOOR_ID} mstrm:{AUDIO_LABEL}\r\na=bfcpver:1\r\n"
    );
    s
}

/// The byte ranges of the media sections of an SDP text (each from its `m=` line to the next).
fn sections(sdp: &str) -> Vec<(usize, usize)> {
    let starts: Vec<usize> = sdp
        .match_indices("m=")
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || sdp[..i].ends_with('\n'))
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| (s, starts.get(k + 1).copied().unwrap_or(sdp.len())))
        .collect()
}

/// `sdp` (our answer or offer) with the audio section `audio` labelled [`AUDIO_LABEL`] and
/// the section `bfcp` replaced by `bfcp_section` (appended when `bfcp` is past the end).
pub fn splice(sdp: &Bytes, audio: usize, bfcp: usize, bfcp_section: &str) -> Bytes {
    let text = String::from_utf8_lossy(sdp);
    let ranges = sections(&text);
    let mut out = String::with_capacity(text.len() + bfcp_section.len() + 16);
    out.push_str(&text[..ranges.first().map_or(text.len(), |r| r.0)]);
    for (i, &(s, e)) in ranges.iter().enumerate() {
        if i == bfcp {
            out.push_str(bfcp_section);
            continue;
        }
        out.push_str(&text[s..e]);
        if i == audio {
            let _ = write!(out, "a=label:{AUDIO_LABEL}\r\n");
        }
    }
    if bfcp >= ranges.len() {
        out.push_str(bfcp_section);
    }
    Bytes::from(out)
}

// ---- the floor ---------------------------------------------------------------------------

struct Conn {
    pid: Option<u32>,
    writer: ConnWriter,
}

/// A half-duplex conference's floor: see the module documentation.
pub struct Floor {
    control: FloorControl,
    route: BfcpRoute,
    listen: SocketAddr,
    conns: BTreeMap<ConnId, Conn>,
    /// Participants whose may-talk changed since the last [`Floor::flush`].
    changed: Vec<u32>,
    timer: Option<SpawnHandle>,
    armed: Option<Instant>,
}

impl Floor {
    /// A free floor with its conference id on `plane`, messages to `to`.
    pub fn new(plane: &BfcpPlane, to: Recipient<FromBfcp>, settings: FloorSettings) -> Floor {
        let route = plane.open(to);
        let control = FloorControl::new(FloorConfig {
            conference_id: route.conference_id(),
            floor_id: DEFAULT_FLOOR_ID,
            max_talk_time: settings.max_talk_time,
        });
        Floor {
            control,
            route,
            listen: plane.local_addr(),
            conns: BTreeMap::new(),
            changed: Vec::new(),
            timer: None,
            armed: None,
        }
    }

    /// The BFCP conference id.
    pub fn conference_id(&self) -> u32 {
        self.route.conference_id()
    }

    /// Our BFCP media section for the participant of `user_id` (from [`Floor::join`]).
    pub fn section(&self, media_ip: IpAddr, user_id: u16) -> String {
        section(self.listen, media_ip, self.conference_id(), user_id)
    }

    /// The BFCP user id of participant `pid` (`None` beyond 65535: listen-only).
    pub fn user_id(pid: u32) -> Option<u16> {
        u16::try_from(pid).ok().filter(|&u| u != 0)
    }

    /// Makes `pid` a floor participant; its user id.
    pub fn join(&mut self, pid: u32) -> Option<u16> {
        let uid = Floor::user_id(pid)?;
        self.control.add_participant(ParticipantId(pid), uid);
        Some(uid)
    }

    /// `pid` left: its request released or cancelled, its connections closed.
    pub fn leave(&mut self, now: Instant, pid: u32) {
        self.control.remove_participant(now, ParticipantId(pid));
        self.conns.retain(|_, c| c.pid != Some(pid));
        self.pump();
    }

    /// Whether `pid` holds the floor.
    pub fn may_talk(&self, pid: u32) -> bool {
        self.control.may_talk(ParticipantId(pid))
    }

    /// Whether the mixer leaves `pid` out: muted through the API, or without the floor.
    pub fn muted(&self, pid: u32, api_muted: bool) -> bool {
        api_muted || !self.may_talk(pid)
    }

    /// The floor as the API shows it.
    pub fn summary(&self) -> FloorSummary {
        FloorSummary {
            holder: self.control.holder().map(|p| p.0),
            queue: self.control.queue().map(|p| p.0).collect(),
        }
    }

    /// BFCP connections open.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// What a connection of the BFCP plane says.
    pub fn on_bfcp(&mut self, now: Instant, msg: FromBfcp) {
        match msg {
            FromBfcp::Opened {
                conn,
                user_id,
                writer,
            } => {
                let pid = self
                    .control
                    .participant_of_user(user_id)
                    .map(|p| p.0)
                    .filter(|_| user_id != 0);
                self.conns.insert(conn, Conn { pid, writer });
            }
            FromBfcp::Frame { conn, frame } => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                match c.pid {
                    Some(pid) => self.control.handle_frame(now, ParticipantId(pid), frame),
                    None => {
                        // RFC 8855 §13.1: Error 2 to a user we do not know; then closed.
                        if let Ok(h) = Header::decode(&frame) {
                            let e = BfcpMessage::new(
                                Primitive::Error,
                                h.conference_id,
                                h.transaction_id,
                                h.user_id,
                            )
                            .with(Attribute::ErrorCode {
                                code: ErrorCode::USER_DOES_NOT_EXIST,
                                details: Bytes::new(),
                            })
                            .with(Attribute::ErrorInfo(Bytes::from_static(b"no such user")));
                            c.writer.send(&e);
                        }
                        self.conns.remove(&conn);
                    }
                }
            }
            FromBfcp::Closed { conn } => {
                if let Some(Conn { pid: Some(pid), .. }) = self.conns.remove(&conn) {
                    if !self.conns.values().any(|c| c.pid == Some(pid)) {
                        let _ = self.control.release(now, ParticipantId(pid));
                    }
                }
            }
        }
        self.pump();
    }

    /// The talk-time timer fired.
    pub fn on_timeout(&mut self, now: Instant) {
        self.armed = None;
        self.timer = None;
        self.control.handle_timeout(now);
        self.pump();
    }

    /// Sends the floor's BFCP messages and notes who gained or lost the floor.
    fn pump(&mut self) {
        while let Some((p, msg)) = self.control.poll_transmit() {
            let mut dead = Vec::new();
            for (id, c) in self.conns.iter().filter(|(_, c)| c.pid == Some(p.0)) {
                if !c.writer.send(&msg) {
                    dead.push(*id);
                }
            }
            for id in dead {
                tracing::debug!(conn = id.0, "BFCP connection not reading: closed");
                self.conns.remove(&id);
            }
        }
        while let Some(ev) = self.control.poll_event() {
            tracing::debug!(conference = self.conference_id(), event = ?ev, "floor");
            match ev {
                FloorEvent::Granted(p) | FloorEvent::Revoked(p) | FloorEvent::Released(p) => {
                    self.changed.push(p.0)
                }
                FloorEvent::Queued(..) | FloorEvent::Cancelled(_) => {}
            }
        }
    }

    /// The participants whose floor changed since the last call (to re-mute in the mixer).
    pub fn flush(&mut self) -> Vec<u32> {
        let mut v = std::mem::take(&mut self.changed);
        v.dedup();
        v
    }

    /// Arms the talk-time timer at the floor's next deadline (once per deadline); `fire` is
    /// to call [`Floor::on_timeout`].
    pub fn rearm<A>(
        &mut self,
        ctx: &mut Context<A>,
        now: Instant,
        fire: fn(&mut A, &mut Context<A>),
    ) where
        A: Actor<Context = Context<A>>,
    {
        let want = self.control.next_deadline();
        if want == self.armed {
            return;
        }
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        self.armed = want;
        if let Some(at) = want {
            let wait = at.saturating_duration_since(now);
            self.timer = Some(ctx.run_later(wait, fire));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(m: &str) -> Bytes {
        Bytes::from(format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{m}"
        ))
    }

    #[test]
    fn factory_uri_asks_for_half_duplex() {
        let s = |u: &str| FloorSettings::of_factory_uri(u.as_bytes());
        assert_eq!(s("sip:conf-factory@x.test"), None);
        assert_eq!(s("sip:conf-factory@x.test;floor=full-duplex"), None);
        assert_eq!(
            s("sip:conf-factory@x.test;floor=half-duplex"),
            Some(FloorSettings::from_secs(30))
        );
        assert_eq!(
            s("sip:conf-factory@x.test;floor=Half-Duplex;max-talk-time=5"),
            Some(FloorSettings::from_secs(5))
        );
        // Out of range: the default.
        assert_eq!(
            s("sip:conf-factory@x.test;floor=half-duplex;max-talk-time=0"),
            Some(FloorSettings::from_secs(30))
        );
        assert_eq!(FloorSettings::from_secs(0).max_talk_time, None);
    }

    #[test]
    fn bfcp_offers_we_serve() {
        let audio = "m=audio 4000 RTP/AVP 0\r\n";
        let ok = body(&format!(
            "{audio}m=application 5000 TCP/BFCP *\r\na=floorctrl:c-only\r\na=setup:active\r\n"
        ));
        assert_eq!(offered(&ok), Some(1));
        let bare = body(&format!("{audio}m=application 5000 TCP/BFCP *\r\n"));
        assert_eq!(offered(&bare), Some(1));
        let cs = body(&format!(
            "m=application 5000 TCP/BFCP *\r\na=floorctrl:c-only s-only\r\na=setup:actpass\r\n{audio}"
        ));
        assert_eq!(offered(&cs), Some(0));
        for bad in [
            "m=application 0 TCP/BFCP *\r\n",
            "m=application 5000 TCP/TLS/BFCP *\r\n",
            "m=application 5000 TCP/BFCP *\r\na=floorctrl:s-only\r\n",
            "m=application 5000 TCP/BFCP *\r\na=setup:passive\r\n",
            "m=application 5000 UDP/BFCP *\r\n",
        ] {
            assert_eq!(offered(&body(&format!("{audio}{bad}"))), None, "{bad}");
        }
        assert_eq!(offered(&body(audio)), None);
    }

    #[test]
    fn answer_gets_our_section_and_the_audio_label() {
        let answer =
            body("m=audio 30000 RTP/AVP 0\r\na=sendrecv\r\nm=application 0 TCP/BFCP *\r\n");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let sec = section("10.0.0.1:7000".parse().unwrap(), ip, 42, 3);
        let out = splice(&answer, 0, 1, &sec);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.ends_with(
                "m=audio 30000 RTP/AVP 0\r\na=sendrecv\r\na=label:1\r\nm=application 7000 TCP/BFCP *\r\n\
                 a=setup:passive\r\na=connection:new\r\na=floorctrl:s-only\r\na=confid:42\r\n\
                 a=userid:3\r\na=floorid:1 mstrm:1\r\na=bfcpver:1\r\n"
            ),
            "{text}"
        );
        // It parses, and an answer like it is read as accepting BFCP.
        SessionDescription::parse(&out).unwrap();
        assert!(accepted(&out));
        assert!(!accepted(&answer));
        // Another address than the session's: a media-level c=; appended past the end.
        let sec = section("10.0.0.9:7000".parse().unwrap(), ip, 42, 3);
        assert!(sec.contains("c=IN IP4 10.0.0.9\r\n"));
        let only_audio = body("m=audio 30000 RTP/AVP 0\r\n");
        let out = splice(&only_audio, 0, 1, &sec);
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .contains("a=label:1\r\nm=application 7000 TCP/BFCP *\r\nc=IN IP4 10.0.0.9\r\n"));
    }

    #[test]
    fn user_ids_fit_bfcp() {
        assert_eq!(Floor::user_id(1), Some(1));
        assert_eq!(Floor::user_id(0), None);
        assert_eq!(Floor::user_id(70_000), None);
    }
}
