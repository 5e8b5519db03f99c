//! One media description (RFC 8866 §5.14): its `m=` line and the lines after it, with the
//! accessors offer/answer reads and the rewrites a B2BUA makes.

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};

use super::attr::{Attribute, Direction, Fmtp, Rtcp, RtpMap};
use super::codec::Codec;
use super::fields::{Connection, MediaLine};
use super::line::{split_field, Level, Line, Lines};
use super::SdpError;

/// A media section: the `m=` line (kept as received until changed) and its other lines in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    media: MediaLine,
    raw: Bytes,
    lines: Lines,
}

impl MediaSection {
    /// A new section with `media` as its `m=` line and no other line. Fails when a part would
    /// not survive printing (spaces or line ends inside media, proto or a format).
    pub fn new(media: MediaLine) -> Result<MediaSection, SdpError> {
        let raw = media.to_bytes();
        if !super::line::valid_value(&raw) || MediaLine::parse(&raw).as_ref() != Ok(&media) {
            return Err(SdpError::InvalidValue);
        }
        Ok(MediaSection::received(media, raw))
    }

    /// A new section for an `m=` line this module built from valid parts.
    pub(crate) fn local(media: MediaLine) -> MediaSection {
        let raw = media.to_bytes();
        MediaSection::received(media, raw)
    }

    /// A section starting at a received `m=` line (`media` parsed from `raw`).
    pub(crate) fn received(media: MediaLine, raw: Bytes) -> MediaSection {
        MediaSection {
            media,
            raw,
            lines: Lines::new(Level::Media),
        }
    }

    pub(crate) fn push_received(&mut self, line: Line) {
        self.lines.push_received(line);
    }

    /// The parsed `m=` line.
    pub fn media_line(&self) -> &MediaLine {
        &self.media
    }

    /// The media type (`audio`, `video`, `message`, ...).
    pub fn kind(&self) -> &Bytes {
        &self.media.media
    }

    /// The port; 0 when the stream is rejected or disabled (RFC 3264 §5.1).
    pub fn port(&self) -> u16 {
        self.media.port
    }

    /// The lines after the `m=` line, in order.
    pub fn lines(&self) -> &[Line] {
        self.lines.as_slice()
    }

    /// The first media-level connection line (`c=`, RFC 8866 §5.7), if any.
    pub fn connection(&self) -> Option<Connection> {
        self.lines
            .values(b'c')
            .find_map(|v| Connection::parse(v).ok())
    }

    /// The attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute> + '_ {
        self.lines.attributes()
    }

    /// The first attribute called `name` (ASCII case-insensitively).
    pub fn attribute(&self, name: &str) -> Option<Attribute> {
        self.lines.attribute(name)
    }

    /// The values of the attributes called `name`, in order.
    pub fn attribute_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Bytes> + 'a {
        self.attributes()
            .filter(move |a| a.is(name))
            .filter_map(|a| a.value().cloned())
    }

    /// The well-formed `rtpmap` attributes, in order.
    pub fn rtpmaps(&self) -> impl Iterator<Item = RtpMap> + '_ {
        self.attribute_values("rtpmap")
            .filter_map(|v| RtpMap::parse(&v))
    }

    /// The `rtpmap` of payload type `pt`.
    pub fn rtpmap(&self, pt: u8) -> Option<RtpMap> {
        self.rtpmaps().find(|r| r.payload_type == pt)
    }

    /// The `fmtp` parameters of `format`.
    pub fn fmtp(&self, format: &[u8]) -> Option<Bytes> {
        self.attribute_values("fmtp")
            .filter_map(|v| Fmtp::parse(&v))
            .find(|f| f.format == format)
            .map(|f| f.params)
    }

    /// The packet time in milliseconds (`a=ptime`, RFC 8866 §6.4).
    pub fn ptime(&self) -> Option<u32> {
        self.attribute_values("ptime")
            .find_map(|v| super::line::decimal(&v))
    }

    /// The RTCP port and address (`a=rtcp`, RFC 3605).
    pub fn rtcp(&self) -> Option<Rtcp> {
        self.attribute_values("rtcp").find_map(|v| Rtcp::parse(&v))
    }

    /// Whether RTP and RTCP share the port (`a=rtcp-mux`, RFC 5761 §5.1.1).
    pub fn rtcp_mux(&self) -> bool {
        self.attribute("rtcp-mux").is_some()
    }

    /// The media-level direction attribute, if any (see
    /// [`super::SessionDescription::direction_of`] for the effective one).
    pub fn direction(&self) -> Option<Direction> {
        self.attributes()
            .find_map(|a| Direction::from_attribute(&a))
    }

    /// The formats that are RTP payload types, resolved to codecs: by `rtpmap`, else by the
    /// static table of RFC 3551 §6; formats neither names are left out.
    pub fn codecs(&self) -> Vec<Codec> {
        self.media
            .payload_types()
            .filter_map(|pt| self.codec(pt))
            .collect()
    }

    /// Payload type `pt` of this section as a codec (see [`MediaSection::codecs`]).
    pub fn codec(&self, pt: u8) -> Option<Codec> {
        let codec = match self.rtpmap(pt) {
            Some(map) => Codec::from_rtpmap(&map),
            None => Codec::from_static(pt)?,
        };
        let pt_text = pt.to_string();
        Some(match self.fmtp(pt_text.as_bytes()) {
            Some(f) => codec.with_fmtp_bytes(f),
            None => codec,
        })
    }

    /// Replaces the `m=` line (the B2BUA rewrites port and formats through this).
    fn set_media_line(&mut self, media: MediaLine) {
        self.raw = media.to_bytes();
        self.media = media;
    }

    /// Sets the port, keeping the port count, proto and formats.
    pub fn set_port(&mut self, port: u16) {
        let mut m = self.media.clone();
        m.port = port;
        self.set_media_line(m);
    }

    /// Sets the media-level connection to `IN IP4|IP6 <ip>`: replaces the first `c=` line in
    /// place and drops the others, or inserts one after `i=`.
    pub fn set_connection(&mut self, ip: IpAddr) {
        let line = Line::known(b'c', Connection::from_ip(ip).to_bytes());
        self.lines.replace(line, |l| l.kind() == b'c');
    }

    /// Removes the media-level connection lines (the session-level one then applies).
    pub fn remove_connection(&mut self) -> usize {
        self.lines.remove(|l| l.kind() == b'c')
    }

    /// Sets `attr`: replaces the first attribute of that name in place and drops the others of
    /// that name, or appends it after the last attribute.
    pub fn set_attribute(&mut self, attr: Attribute) {
        self.lines.set_attribute(attr);
    }

    /// Appends `attr` after the last attribute, keeping any of the same name.
    pub fn push_attribute(&mut self, attr: Attribute) {
        self.lines.insert(attr.into_line());
    }

    /// Removes the attributes called `name`; returns how many were removed.
    pub fn remove_attribute(&mut self, name: &str) -> usize {
        self.lines.remove_attribute(name)
    }

    /// Inserts `line` in the grammar's order (`i c b k a`; other types at the end).
    pub fn push_line(&mut self, line: Line) {
        self.lines.insert(line);
    }

    /// Sets `a=rtcp` (RFC 3605) to `port` and, when given, `ip`.
    pub fn set_rtcp(&mut self, port: u16, ip: Option<IpAddr>) {
        self.set_attribute(Rtcp::new(port, ip).to_attribute());
    }

    /// Sets the media-level direction: replaces the first direction attribute in place and
    /// drops any other.
    pub fn set_direction(&mut self, dir: Direction) {
        self.lines.replace(dir.to_attribute().into_line(), |l| {
            l.attribute()
                .is_some_and(|a| Direction::from_attribute(&a).is_some())
        });
    }

    /// Removes the formats for which `remove` is true from the `m=` line, with the `rtpmap`,
    /// `fmtp` and `rtcp-fb` attributes naming them. Returns how many formats were removed.
    /// Removing every format leaves an `m=` line without formats, which is not valid SDP: to
    /// reject a stream set its port to 0 instead (RFC 3264 §6).
    pub fn remove_formats(&mut self, mut remove: impl FnMut(&[u8]) -> bool) -> usize {
        let mut m = self.media.clone();
        let (gone, kept): (Vec<Bytes>, Vec<Bytes>) = m.formats.drain(..).partition(|f| remove(f));
        if gone.is_empty() {
            return 0;
        }
        m.formats = kept;
        self.set_media_line(m);
        self.lines.remove(|l| {
            let Some(a) = l.attribute() else { return false };
            let per_format = ["rtpmap", "fmtp", "rtcp-fb"].iter().any(|n| a.is(n));
            per_format && a.value().is_some_and(|v| gone.contains(&split_field(v).0))
        });
        gone.len()
    }

    pub(crate) fn write_to(&self, out: &mut BytesMut) {
        out.extend_from_slice(b"m=");
        out.extend_from_slice(&self.raw);
        out.extend_from_slice(b"\r\n");
        self.lines.write_to(out);
    }
}
