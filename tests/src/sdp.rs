//! SDP as a test peer writes and reads it (RFC 8866): offers and answers written as text on
//! 127.0.0.1, and the fields a test checks read back (connection address, `m=` lines,
//! direction, origin version). Deliberately independent of `cpm_engine::sdp`, whose output it
//! checks.

use std::net::{IpAddr, SocketAddr};

/// One `m=` line to write: RTP/AVP on `port` with its formats and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// `audio`, `video`, ...
    pub kind: String,
    /// The RTP port (0: rejected, RFC 3264 §6).
    pub port: u16,
    /// The payload type numbers.
    pub formats: Vec<u8>,
    /// The direction attribute (`sendrecv`, `sendonly`, `recvonly`, `inactive`), if written.
    pub direction: Option<String>,
}

impl Stream {
    /// Audio offering PCMU (0), PCMA (8) and telephone-event (101).
    pub fn audio(port: u16) -> Stream {
        Stream {
            kind: "audio".into(),
            port,
            formats: vec![0, 8, 101],
            direction: None,
        }
    }

    /// Video offering H.264 (96).
    pub fn video(port: u16) -> Stream {
        Stream {
            kind: "video".into(),
            port,
            formats: vec![96],
            direction: None,
        }
    }

    /// With this direction attribute (RFC 3264 §5.1).
    pub fn direction(mut self, dir: &str) -> Stream {
        self.direction = Some(dir.into());
        self
    }

    /// With these payload types only.
    pub fn formats(mut self, formats: &[u8]) -> Stream {
        self.formats = formats.to_vec();
        self
    }
}

/// The `a=rtpmap` value of the payload types [`Stream`] uses.
fn rtpmap(pt: u8) -> Option<&'static str> {
    match pt {
        0 => Some("PCMU/8000"),
        8 => Some("PCMA/8000"),
        96 => Some("H264/90000"),
        101 => Some("telephone-event/8000"),
        _ => None,
    }
}

/// An SDP body on 127.0.0.1: origin with `version` (RFC 3264 §8: incremented for every new
/// offer or answer that differs), session `c=`, one `m=` section per stream.
pub fn body(version: u64, streams: &[Stream]) -> String {
    let mut s = format!(
        "v=0\r\no=test 4711 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    );
    for m in streams {
        let fmts: Vec<String> = m.formats.iter().map(u8::to_string).collect();
        s.push_str(&format!(
            "m={} {} RTP/AVP {}\r\n",
            m.kind,
            m.port,
            fmts.join(" ")
        ));
        for pt in &m.formats {
            if let Some(map) = rtpmap(*pt) {
                s.push_str(&format!("a=rtpmap:{pt} {map}\r\n"));
            }
        }
        if let Some(d) = &m.direction {
            s.push_str(&format!("a={d}\r\n"));
        }
    }
    s
}

/// One `m=` section as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// The media type.
    pub kind: String,
    /// The port.
    pub port: u16,
    /// The transport protocol.
    pub proto: String,
    /// The format tokens.
    pub formats: Vec<String>,
    /// Its own `c=` address, if any.
    pub connection: Option<IpAddr>,
    /// Its `a=` lines, without `a=`.
    pub attributes: Vec<String>,
}

impl Media {
    /// The direction attribute, `sendrecv` when none is written (RFC 3264 §5.1; a session-level
    /// one is not looked at: [`body`] never writes one).
    pub fn direction(&self) -> &str {
        self.attributes
            .iter()
            .map(String::as_str)
            .find(|a| matches!(*a, "sendrecv" | "sendonly" | "recvonly" | "inactive"))
            .unwrap_or("sendrecv")
    }
}

/// A session description as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    /// The `o=` session version.
    pub version: u64,
    /// The session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// The `m=` sections in order.
    pub media: Vec<Media>,
}

impl Sdp {
    /// Reads `body`; panics (with the body) on anything a well-formed SDP would not have.
    pub fn parse(body: &[u8]) -> Sdp {
        let text = std::str::from_utf8(body)
            .unwrap_or_else(|_| panic!("SDP is not UTF-8: {body:?}"))
            .to_string();
        let bad = |what: &str| -> ! { panic!("{what} in SDP:\n{text}") };
        let mut sdp = Sdp {
            version: 0,
            connection: None,
            media: Vec::new(),
        };
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                bad("a line without =")
            };
            match k {
                "o" => {
                    sdp.version = v
                        .split_whitespace()
                        .nth(2)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| bad("a bad o= line"))
                }
                "c" => {
                    let addr = v
                        .split_whitespace()
                        .nth(2)
                        .and_then(|a| a.parse().ok())
                        .unwrap_or_else(|| bad("a bad c= line"));
                    match sdp.media.last_mut() {
                        Some(m) => m.connection = Some(addr),
                        None => sdp.connection = Some(addr),
                    }
                }
                "m" => {
                    let mut f = v.split_whitespace();
                    let kind = f.next().unwrap_or_else(|| bad("an empty m= line"));
                    let port = f
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or_else(|| bad("a bad m= port"));
                    let proto = f.next().unwrap_or_else(|| bad("an m= line without proto"));
                    sdp.media.push(Media {
                        kind: kind.into(),
                        port,
                        proto: proto.into(),
                        formats: f.map(String::from).collect(),
                        connection: None,
                        attributes: Vec::new(),
                    });
                }
                "a" => {
                    if let Some(m) = sdp.media.last_mut() {
                        m.attributes.push(v.into());
                    }
                }
                _ => {}
            }
        }
        sdp
    }

    /// Where the RTP of stream `i` goes: its address (own `c=`, else the session's) and port.
    pub fn rtp_addr(&self, i: usize) -> SocketAddr {
        let m = &self.media[i];
        let ip = m
            .connection
            .or(self.connection)
            .unwrap_or_else(|| panic!("stream {i} has no c= address: {self:?}"));
        SocketAddr::new(ip, m.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back() {
        let text = body(
            3,
            &[
                Stream::audio(4000).direction("sendonly"),
                Stream::video(4002).formats(&[96]),
            ],
        );
        let sdp = Sdp::parse(text.as_bytes());
        assert_eq!(sdp.version, 3);
        assert_eq!(sdp.media.len(), 2);
        assert_eq!(sdp.media[0].formats, vec!["0", "8", "101"]);
        assert_eq!(sdp.media[0].direction(), "sendonly");
        assert_eq!(sdp.media[1].direction(), "sendrecv");
        assert_eq!(sdp.media[1].kind, "video");
        assert!(sdp.media[1]
            .attributes
            .contains(&"rtpmap:96 H264/90000".to_string()));
        assert_eq!(sdp.rtp_addr(1), "127.0.0.1:4002".parse().unwrap());
        let own_c = Sdp::parse(b"v=0\r\nm=audio 5 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\n");
        assert_eq!(own_c.rtp_addr(0), "10.0.0.1:5".parse().unwrap());
    }
}
