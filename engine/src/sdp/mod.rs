//! SDP, the Session Description Protocol (RFC 8866, formerly RFC 4566), and the offer/answer
//! model on top of it (RFC 3264).
//!
//! The model is lossless: a [`SessionDescription`] keeps every line in its order, the
//! session-level lines and then one [`MediaSection`] per `m=` line. Lines of unknown types and
//! attributes nobody here reads pass through unchanged, so a B2BUA can rewrite `c=`, `m=` ports
//! and `a=rtcp` toward its own addresses and forward the rest as it came. Typed views (origin,
//! connection, media line, `rtpmap`, `fmtp`, `ptime`, `rtcp`, direction) are parsed on demand
//! from the kept bytes; values are [`Bytes`] slices of the received body.
//!
//! Printing a parsed description gives back the received bytes, with these normalisations:
//! every line ends in CRLF (bare LF is accepted, RFC 8866 §5), blank lines are dropped, and the
//! last line gets a line end if it had none. A rewritten line is printed from its parts with
//! single spaces.
//!
//! Parsing checks what a 400 needs (RFC 8866 §5): `v=0` first, `o=` and `s=` at session level,
//! every line `<letter>=<value>`, well-formed `o=`, `c=` and `m=` lines. The order of the other
//! session-level lines is not enforced and `t=` is not required, since real endpoints get both
//! wrong. Input never panics the parser.

mod attr;
mod codec;
mod fields;
mod line;
mod media;
mod offer_answer;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use bytes::{Bytes, BytesMut};

pub use attr::{Attribute, Direction, Fmtp, Rtcp, RtpMap};
pub use codec::{Codec, CodecSpecError, FIRST_DYNAMIC_PT};
pub use fields::{AddrType, Connection, MediaLine, Origin, Proto};
pub use line::Line;
pub use media::MediaSection;
pub use offer_answer::{answer, NoCommonCodec};

use line::{split_lines, valid_value, Level, Lines};

/// Why a session description was refused: a reason phrase for the 400 (or 488) that answers
/// it. [`SdpError::InvalidValue`] is the one API-misuse case, for values given to mutators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpError {
    /// The body has no line at all.
    Empty,
    /// A required line is absent: `v=` first, `o=` or `s=` at session level (RFC 8866 §5).
    Missing(&'static str),
    /// A line does not follow its grammar (`o=`, `c=`, `m=`).
    Malformed(&'static str),
    /// A line is not `<letter>=<value>` (RFC 8866 §5).
    MalformedLine,
    /// `v=` is not 0 (RFC 8866 §5.1).
    UnsupportedVersion,
    /// A value given to a constructor or mutator would not survive printing (a line end, NUL,
    /// or a space in a token).
    InvalidValue,
}

impl SdpError {
    /// A reason phrase naming the problem.
    pub fn reason(&self) -> String {
        match self {
            SdpError::Empty => "Empty SDP".to_string(),
            SdpError::Missing(l) => format!("Missing {l} Line in SDP"),
            SdpError::Malformed(l) => format!("Malformed {l} Line in SDP"),
            SdpError::MalformedLine => "Malformed SDP Line".to_string(),
            SdpError::UnsupportedVersion => "Unsupported SDP Version".to_string(),
            SdpError::InvalidValue => "Invalid SDP Value".to_string(),
        }
    }
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for SdpError {}

/// A session description (RFC 8866 §5): the session-level lines in order and the media
/// sections. The origin is kept parsed beside its line, since offer/answer reads its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    session: Lines,
    origin: Origin,
    media: Vec<MediaSection>,
}

impl SessionDescription {
    /// Parses an SDP body (see the module docs for what is checked and what is normalised).
    pub fn parse(body: &Bytes) -> Result<SessionDescription, SdpError> {
        let mut session = Lines::new(Level::Session);
        let mut media: Vec<MediaSection> = Vec::new();
        let mut origin = None;
        let mut has_name = false;
        let mut first = true;
        for raw in split_lines(body) {
            let kind = match raw.as_ref() {
                [k, b'=', ..] if k.is_ascii_alphabetic() => *k,
                _ => return Err(SdpError::MalformedLine),
            };
            let value = raw.slice(2..);
            if first {
                if kind != b'v' {
                    return Err(SdpError::Missing("v="));
                }
                if value.trim_ascii() != b"0" {
                    return Err(SdpError::UnsupportedVersion);
                }
                first = false;
            }
            let at_session = media.is_empty();
            match kind {
                b'm' => {
                    media.push(MediaSection::received(MediaLine::parse(&value)?, value));
                    continue;
                }
                b'c' => {
                    Connection::parse(&value)?;
                }
                b'o' if at_session && origin.is_none() => origin = Some(Origin::parse(&value)?),
                b's' if at_session => has_name = true,
                _ => {}
            }
            let line = Line::known(kind, value);
            match media.last_mut() {
                Some(m) => m.push_received(line),
                None => session.push_received(line),
            }
        }
        if first {
            return Err(SdpError::Empty);
        }
        let origin = origin.ok_or(SdpError::Missing("o="))?;
        if !has_name {
            return Err(SdpError::Missing("s="));
        }
        Ok(SessionDescription {
            session,
            origin,
            media,
        })
    }

    /// A description made here: `v=0`, `o=`, `s=-`, `c=` to `ip`, `t=<timing>`, then `media`.
    pub(crate) fn local(
        origin: Origin,
        ip: IpAddr,
        timing: Bytes,
        media: Vec<MediaSection>,
    ) -> SessionDescription {
        let mut session = Lines::new(Level::Session);
        for (kind, value) in [
            (b'v', Bytes::from_static(b"0")),
            (b'o', origin.to_bytes()),
            (b's', Bytes::from_static(b"-")),
            (b'c', Connection::from_ip(ip).to_bytes()),
            (b't', timing),
        ] {
            session.push_received(Line::known(kind, value));
        }
        SessionDescription {
            session,
            origin,
            media,
        }
    }

    /// Appends the description, every line ending in CRLF.
    pub fn write_to(&self, out: &mut BytesMut) {
        self.session.write_to(out);
        for m in &self.media {
            m.write_to(out);
        }
    }

    /// The description as a body.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(256 + 256 * self.media.len());
        self.write_to(&mut out);
        out.freeze()
    }

    /// The session-level lines, in order.
    pub fn lines(&self) -> &[Line] {
        self.session.as_slice()
    }

    /// The origin (`o=`, RFC 8866 §5.2).
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The session name (`s=`, RFC 8866 §5.3).
    pub fn session_name(&self) -> Option<&Bytes> {
        self.session.first(b's')
    }

    /// The first timing line's value (`t=<start> <stop>`, RFC 8866 §5.9).
    pub fn timing(&self) -> Option<&Bytes> {
        self.session.first(b't')
    }

    /// The session-level connection (`c=`, RFC 8866 §5.7), the default for every media.
    pub fn connection(&self) -> Option<Connection> {
        self.session
            .values(b'c')
            .find_map(|v| Connection::parse(v).ok())
    }

    /// The session-level attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute> + '_ {
        self.session.attributes()
    }

    /// The first session-level attribute called `name` (ASCII case-insensitively).
    pub fn attribute(&self, name: &str) -> Option<Attribute> {
        self.session.attribute(name)
    }

    /// The session-level direction attribute, the default for every media (RFC 8866 §6.7).
    pub fn direction(&self) -> Option<Direction> {
        self.attributes()
            .find_map(|a| Direction::from_attribute(&a))
    }

    /// The media sections, in order.
    pub fn media(&self) -> &[MediaSection] {
        &self.media
    }

    /// The media sections, to rewrite them (m-lines are never removed: RFC 3264 §8.1).
    pub fn media_mut(&mut self) -> &mut [MediaSection] {
        &mut self.media
    }

    /// Appends a media section (RFC 3264 §8.1: new streams go after the existing ones).
    pub fn push_media(&mut self, media: MediaSection) {
        self.media.push(media);
    }

    /// The direction of `media`: its own attribute, else the session's, else sendrecv.
    pub fn direction_of(&self, media: &MediaSection) -> Direction {
        media
            .direction()
            .or_else(|| self.direction())
            .unwrap_or_default()
    }

    /// The connection of `media`: its own `c=`, else the session's (RFC 8866 §5.7).
    pub fn connection_of(&self, media: &MediaSection) -> Option<Connection> {
        media.connection().or_else(|| self.connection())
    }

    /// Where `media` wants its RTP (or MSRP) sent: connection IP and port. `None` when the
    /// port is 0 or the address is a host name; `0.0.0.0` (old-style hold) is returned as is.
    pub fn media_address(&self, media: &MediaSection) -> Option<SocketAddr> {
        if media.port() == 0 {
            return None;
        }
        Some(SocketAddr::new(
            self.connection_of(media)?.ip()?,
            media.port(),
        ))
    }

    /// Replaces the origin. Fails when a part would not print and parse back the same.
    pub fn set_origin(&mut self, origin: Origin) -> Result<(), SdpError> {
        let raw = origin.to_bytes();
        let reparsed = Origin::parse(&raw).map(|o| o.to_bytes());
        if !valid_value(&raw) || reparsed.as_ref() != Ok(&raw) {
            return Err(SdpError::InvalidValue);
        }
        self.set_origin_unchecked(origin);
        Ok(())
    }

    fn set_origin_unchecked(&mut self, origin: Origin) {
        let line = Line::known(b'o', origin.to_bytes());
        self.session.replace(line, |l| l.kind() == b'o');
        self.origin = origin;
    }

    /// Sets the origin's address to `ip` (a B2BUA presents its own), keeping id and version.
    pub fn set_origin_address(&mut self, ip: IpAddr) {
        let mut o = self.origin.clone();
        o.addrtype = AddrType::of(ip);
        o.address = Bytes::from(ip.to_string());
        self.set_origin_unchecked(o);
    }

    /// Increments the origin's version (RFC 3264 §8: every changed description sent in the
    /// same session) and returns it. Wraps at 2^64 so it still differs from the previous one.
    pub fn bump_version(&mut self) -> u64 {
        let mut o = self.origin.clone();
        o.session_version = o.session_version.wrapping_add(1);
        let v = o.session_version;
        self.set_origin_unchecked(o);
        v
    }

    /// Makes this description the next one of a session whose last description was
    /// `previous` (RFC 3264 §8): the same origin, with the version incremented when anything
    /// else differs and kept when nothing does.
    pub fn follow(&mut self, previous: &SessionDescription) {
        let others = |s: &SessionDescription| {
            s.session
                .as_slice()
                .iter()
                .filter(|l| l.kind() != b'o')
                .cloned()
                .collect::<Vec<_>>()
        };
        let same = others(self) == others(previous) && self.media == previous.media;
        let mut o = previous.origin.clone();
        if !same {
            o.session_version = o.session_version.wrapping_add(1);
        }
        self.set_origin_unchecked(o);
    }

    /// Sets the session-level connection to `IN IP4|IP6 <ip>`: replaces the first `c=` line
    /// in place and drops the others, or inserts one before `b=`/`t=`.
    pub fn set_connection(&mut self, ip: IpAddr) {
        let line = Line::known(b'c', Connection::from_ip(ip).to_bytes());
        self.session.replace(line, |l| l.kind() == b'c');
    }

    /// Points every connection at `ip`: sets the session-level `c=` and rewrites each
    /// media-level `c=` that is present (what a media relay presents, CPM.md media plane).
    pub fn set_all_connections(&mut self, ip: IpAddr) {
        self.set_connection(ip);
        for m in &mut self.media {
            if m.connection().is_some() {
                m.set_connection(ip);
            }
        }
    }

    /// Sets a session-level attribute: replaces the first of that name in place and drops
    /// the others of that name, or appends it after the last session-level attribute.
    pub fn set_attribute(&mut self, attr: Attribute) {
        self.session.set_attribute(attr);
    }

    /// Appends a session-level attribute, keeping any of the same name.
    pub fn push_attribute(&mut self, attr: Attribute) {
        self.session.insert(attr.into_line());
    }

    /// Removes the session-level attributes called `name`; returns how many were removed.
    pub fn remove_attribute(&mut self, name: &str) -> usize {
        self.session.remove_attribute(name)
    }

    /// Inserts a session-level line in the grammar's order (`v o s i u e p c b t r z k a`;
    /// other types at the end). An `o=` line is refused: use [`Self::set_origin`].
    pub fn push_line(&mut self, line: Line) -> Result<(), SdpError> {
        if line.kind() == b'o' {
            return Err(SdpError::InvalidValue);
        }
        self.session.insert(line);
        Ok(())
    }
}
