//! A participant's media as the focus negotiates it (RFC 3264): one audio stream in G.711
//! µ-law, A-law or L16/8000 (the first of these the offer lists, in its order), and one video
//! stream in the conference's video format (forwarded, not transcoded: the first video
//! participant fixes it, see [`choose_video`]); every other stream is declined with port 0
//! (RFC 3264 §6), except the chat stream (`m=message`, `super::chat`), whose section the
//! caller gives.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use cpm_engine::sdp::SessionDescription;

/// The audio codecs the mixer takes (PCMU, PCMA, L16 at 8 kHz mono).
pub use cpm_engine::conference::audio::Codec as AudioCodec;

/// The mixer's codec of an `rtpmap` encoding name, clock rate and channel count.
fn codec_of(name: &[u8], clock_rate: u32, channels: u16) -> Option<AudioCodec> {
    AudioCodec::from_rtpmap(std::str::from_utf8(name).ok()?, clock_rate, channels)
}

/// The audio stream agreed with one participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Index of the audio `m=` line in the offer.
    pub index: usize,
    /// The codec.
    pub codec: AudioCodec,
    /// Its payload type (as the offer numbered it).
    pub pt: u8,
    /// Where the participant wants its RTP (`None` while on hold with `0.0.0.0` or no
    /// address: it still sends, and the first packet latches).
    pub rtp: Option<SocketAddr>,
    /// Where it wants RTCP (`a=rtcp`, RFC 3605), `None` for the next port.
    pub rtcp: Option<SocketAddr>,
    /// RTP and RTCP on one port (`a=rtcp-mux`, RFC 5761).
    pub mux: bool,
}

/// Why an offer (or answer) gives the conference nothing to mix: answered 488 (RFC 3264 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAudio {
    /// The body is not SDP that parses.
    Malformed,
    /// No active RTP audio stream with PCMU, PCMA or L16/8000.
    NoCodec,
}

impl NoAudio {
    /// The reason phrase of the 488.
    pub fn reason(self) -> &'static str {
        match self {
            NoAudio::Malformed => "Malformed SDP",
            NoAudio::NoCodec => "Not Acceptable Here (PCMU, PCMA or L16/8000 audio needed)",
        }
    }
}

/// Picks the audio stream and codec of an offer (or of the answer to our offer): the first
/// active `m=audio` RTP/AVP stream, and in it the first of PCMU/PCMA/L16-8000 in the
/// offer's order.
pub fn choose(body: &Bytes) -> Result<Negotiated, NoAudio> {
    let sdp = SessionDescription::parse(body).map_err(|_| NoAudio::Malformed)?;
    for (index, m) in sdp.media().iter().enumerate() {
        let line = m.media_line();
        if &line.media[..] != b"audio" || m.port() == 0 || !line.proto.is_rtp() {
            continue;
        }
        if line.proto.is_srtp() {
            continue;
        }
        let Some((codec, pt)) = m.codecs().iter().find_map(|c| {
            codec_of(c.name(), c.clock_rate(), c.channels()).map(|a| (a, c.payload_type()))
        }) else {
            continue;
        };
        let rtp = sdp.media_address(m).filter(|a| !a.ip().is_unspecified());
        let rtcp = m.rtcp().and_then(|r| {
            let ip = r.connection.and_then(|c| c.ip()).or(rtp.map(|a| a.ip()))?;
            Some(SocketAddr::new(ip, r.port))
        });
        return Ok(Negotiated {
            index,
            codec,
            pt,
            rtp,
            rtcp,
            mux: m.rtcp_mux(),
        });
    }
    Err(NoAudio::NoCodec)
}

/// Whether an offer gives the conference something to do: audio [`choose`] takes, or a chat
/// stream (`super::chat::offered`; a chat-only participant needs no room).
pub fn acceptable(body: &Bytes) -> Result<(), NoAudio> {
    match choose(body) {
        Err(NoAudio::NoCodec) if super::chat::offered(body).is_some() => Ok(()),
        r => r.map(|_| ()),
    }
}

/// A conference's video format (video is forwarded as it is, so every participant must send
/// the same): the `a=rtpmap` value (`H264/90000`) and the `a=fmtp` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFormat {
    /// Encoding name and clock rate, as `a=rtpmap` writes them.
    pub rtpmap: String,
    /// The format parameters, if the offer had any.
    pub fmtp: Option<String>,
}

impl VideoFormat {
    /// Whether `other` is the same format: the same encoding name (case-insensitive, RFC
    /// 4855 §3) and clock rate, and the same parameters.
    pub fn matches(&self, other: &VideoFormat) -> bool {
        self.rtpmap.eq_ignore_ascii_case(&other.rtpmap)
            && self.fmtp.as_deref().map(str::trim) == other.fmtp.as_deref().map(str::trim)
    }
}

/// The video stream agreed with one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoNegotiated {
    /// Index of the video `m=` line in the offer.
    pub index: usize,
    /// Its payload type as the offer numbered it (mirrored in the answer).
    pub pt: u8,
    /// The format.
    pub format: VideoFormat,
    /// Where the participant wants its video RTP (`None`: learnt from its first packet).
    pub rtp: Option<SocketAddr>,
    /// Where it wants video RTCP (`a=rtcp`), `None` for the next port.
    pub rtcp: Option<SocketAddr>,
    /// RTP and RTCP on one port (`a=rtcp-mux`).
    pub mux: bool,
}

/// Picks the video stream of an offer: the first active `m=video` RTP/AVP(F) stream, and in
/// it the first format when the conference has none yet (`fixed` `None`), else the format
/// equal to `fixed`. `None`: no video, or not in the conference's format (declined with port
/// 0: forwarding needs every sender to use one codec).
pub fn choose_video(body: &Bytes, fixed: Option<&VideoFormat>) -> Option<VideoNegotiated> {
    let sdp = SessionDescription::parse(body).ok()?;
    let (index, m) = sdp.media().iter().enumerate().find(|(_, m)| {
        let line = m.media_line();
        &line.media[..] == b"video" && m.port() != 0 && line.proto.is_rtp() && !line.proto.is_srtp()
    })?;
    let codecs = m.codecs();
    let (pt, format) = codecs.iter().find_map(|c| {
        let mut rtpmap = format!("{}/{}", String::from_utf8_lossy(c.name()), c.clock_rate());
        if c.channels() > 1 {
            rtpmap = format!("{rtpmap}/{}", c.channels());
        }
        let format = VideoFormat {
            rtpmap,
            fmtp: c.fmtp().map(|f| String::from_utf8_lossy(f).into_owned()),
        };
        match fixed {
            Some(f) if !f.matches(&format) => None,
            _ => Some((c.payload_type(), format)),
        }
    })?;
    let rtp = sdp.media_address(m).filter(|a| !a.ip().is_unspecified());
    let rtcp = m.rtcp().and_then(|r| {
        let ip = r.connection.and_then(|c| c.ip()).or(rtp.map(|a| a.ip()))?;
        Some(SocketAddr::new(ip, r.port))
    });
    Some(VideoNegotiated {
        index,
        pt,
        format,
        rtp,
        rtcp,
        mux: m.rtcp_mux(),
    })
}

/// Our side of the SDP: address, ports and the `o=` session id and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The media IP.
    pub ip: IpAddr,
    /// Our RTP port for this participant.
    pub port: u16,
    /// The session id of our `o=` line.
    pub session: u64,
    /// Its version (bumped for every new description, RFC 3264 §8).
    pub version: u64,
}

fn head(local: &Local, out: &mut String) {
    let family = if local.ip.is_ipv6() { "IP6" } else { "IP4" };
    let _ = write!(
        out,
        "v=0\r\no=cpmd {} {} IN {family} {}\r\ns=cpm conference\r\nc=IN {family} {}\r\nt=0 0\r\n",
        local.session, local.version, local.ip, local.ip
    );
}

fn audio(local: &Local, codec: AudioCodec, pt: u8, mux: bool, out: &mut String) {
    let _ = write!(
        out,
        "m=audio {} RTP/AVP {pt}\r\na=rtpmap:{pt} {}/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        local.port,
        codec.name()
    );
    if mux {
        out.push_str("a=rtcp-mux\r\n");
    }
}

/// Our video stream: the participant's payload type with the conference's format, and the
/// feedback we send and take (RFC 4585 §4.2 `nack pli`, RFC 5104 §7.1 `ccm fir`).
fn video(v: &VideoNegotiated, port: u16, proto: &str, out: &mut String) {
    let pt = v.pt;
    let _ = write!(
        out,
        "m=video {port} {proto} {pt}\r\na=rtpmap:{pt} {}\r\n",
        v.format.rtpmap
    );
    if let Some(f) = &v.format.fmtp {
        let _ = write!(out, "a=fmtp:{pt} {f}\r\n");
    }
    let _ = write!(
        out,
        "a=rtcp-fb:{pt} nack pli\r\na=rtcp-fb:{pt} ccm fir\r\na=sendrecv\r\n"
    );
    if v.mux {
        out.push_str("a=rtcp-mux\r\n");
    }
}

/// The answer to `offer`: the audio stream [`choose`] accepted as `chosen` (none for a
/// chat-only participant) on our port with the chosen codec, the video stream `video` (with
/// our video port) if accepted, the chat stream as `chat` (its index and our section); every
/// other stream declined with port 0 and its first format (RFC 3264 §6).
pub fn answer(
    offer: &Bytes,
    chosen: Option<&Negotiated>,
    video_stream: Option<(&VideoNegotiated, u16)>,
    chat: Option<(usize, &str)>,
    local: &Local,
) -> Bytes {
    let mut out = String::with_capacity(256);
    head(local, &mut out);
    if let Ok(sdp) = SessionDescription::parse(offer) {
        for (i, m) in sdp.media().iter().enumerate() {
            if let Some(chosen) = chosen.filter(|c| c.index == i) {
                audio(local, chosen.codec, chosen.pt, chosen.mux, &mut out);
                continue;
            }
            if let Some((_, section)) = chat.filter(|(c, _)| *c == i) {
                out.push_str(section);
                continue;
            }
            let line = m.media_line();
            if let Some((v, port)) = video_stream.filter(|(v, _)| v.index == i) {
                let proto = String::from_utf8_lossy(line.proto.as_bytes());
                video(v, port, &proto, &mut out);
                continue;
            }
            let first = line
                .formats
                .first()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .unwrap_or_else(|| "0".into());
            let _ = write!(
                out,
                "m={} 0 {} {first}\r\n",
                String::from_utf8_lossy(&line.media),
                String::from_utf8_lossy(line.proto.as_bytes())
            );
        }
    }
    Bytes::from(out)
}

/// The focus's offer when it calls a participant (dial-out, RFC 4579 §5.5): one audio stream
/// with PCMU, PCMA and L16/8000 (payload type 96), in that order of preference.
pub fn offer(local: &Local) -> Bytes {
    let mut out = String::with_capacity(256);
    head(local, &mut out);
    let _ = write!(
        out,
        "m=audio {} RTP/AVP 0 8 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:96 L16/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        local.port
    );
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(m: &str) -> Bytes {
        Bytes::from(format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{m}"
        ))
    }

    const LOCAL: Local = Local {
        ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        port: 30000,
        session: 7,
        version: 1,
    };

    #[test]
    fn first_supported_codec_in_offer_order() {
        let offer = body("m=audio 4000 RTP/AVP 18 8 0\r\na=rtpmap:18 G729/8000\r\n");
        let n = choose(&offer).unwrap();
        assert_eq!((n.codec, n.pt, n.index), (AudioCodec::Pcma, 8, 0));
        assert_eq!(n.rtp, Some("10.0.0.1:4000".parse().unwrap()));
        let offer = body("m=audio 4000 RTP/AVP 97 0\r\na=rtpmap:97 L16/8000\r\n");
        assert_eq!(choose(&offer).unwrap().codec, AudioCodec::L16);
        // L16 at 44.1 kHz and stereo are not taken.
        let offer = body(
            "m=audio 4000 RTP/AVP 97 98\r\na=rtpmap:97 L16/44100\r\na=rtpmap:98 L16/8000/2\r\n",
        );
        assert_eq!(choose(&offer), Err(NoAudio::NoCodec));
        assert_eq!(
            choose(&Bytes::from_static(b"junk")),
            Err(NoAudio::Malformed)
        );
    }

    #[test]
    fn answer_declines_all_but_one_audio_stream() {
        let offer = body(
            "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 4000 RTP/AVP 0 101\r\n\
             a=rtcp-mux\r\na=rtcp:4001\r\nm=audio 4100 RTP/AVP 8\r\nm=message 7 TCP/MSRP *\r\n",
        );
        let n = choose(&offer).unwrap();
        assert_eq!(n.index, 1);
        assert!(n.mux);
        assert_eq!(n.rtcp, Some("10.0.0.1:4001".parse().unwrap()));
        let a = answer(&offer, Some(&n), None, None, &LOCAL);
        let text = std::str::from_utf8(&a).unwrap();
        let m: Vec<&str> = text.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m,
            [
                "m=video 0 RTP/AVP 96",
                "m=audio 30000 RTP/AVP 0",
                "m=audio 0 RTP/AVP 8",
                "m=message 0 TCP/MSRP *"
            ]
        );
        assert!(text.contains("a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\na=rtcp-mux\r\n"));
        // What we answer parses, and our own offer is acceptable to ourselves.
        SessionDescription::parse(&a).unwrap();
        let o = choose(&offer_body()).unwrap();
        assert_eq!((o.codec, o.pt), (AudioCodec::Pcmu, 0));
    }

    fn offer_body() -> Bytes {
        offer(&LOCAL)
    }

    #[test]
    fn on_hold_address_is_not_a_destination() {
        let offer = Bytes::from(
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
        );
        assert_eq!(choose(&offer).unwrap().rtp, None);
    }
}

#[cfg(test)]
mod video_tests {
    use super::*;

    fn body(m: &str) -> Bytes {
        Bytes::from(format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{m}"
        ))
    }

    const LOCAL: Local = Local {
        ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        port: 30000,
        session: 7,
        version: 1,
    };

    #[test]
    fn first_video_format_fixes_the_conference_and_is_mirrored() {
        let offer = body(
            "m=audio 4000 RTP/AVP 0\r\nm=video 5000 RTP/AVPF 97 96\r\na=rtpmap:97 VP8/90000\r\n\
             a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n",
        );
        let v = choose_video(&offer, None).unwrap();
        assert_eq!((v.index, v.pt), (1, 97));
        assert_eq!(v.format.rtpmap, "VP8/90000");
        assert_eq!(v.rtp, Some("10.0.0.1:5000".parse().unwrap()));
        // A conference fixed on H.264 takes the offer's H.264 (its own payload type).
        let h264 = VideoFormat {
            rtpmap: "h264/90000".into(),
            fmtp: Some("packetization-mode=1".into()),
        };
        let v = choose_video(&offer, Some(&h264)).unwrap();
        assert_eq!(v.pt, 96);
        // Another format, or other parameters: no video.
        let other = VideoFormat {
            rtpmap: "H264/90000".into(),
            fmtp: Some("packetization-mode=0".into()),
        };
        assert_eq!(choose_video(&offer, Some(&other)), None);
        assert_eq!(
            choose_video(&body("m=audio 4000 RTP/AVP 0\r\n"), None),
            None
        );
        let audio = choose(&offer).unwrap();
        let a = answer(&offer, Some(&audio), Some((&v, 30002)), None, &LOCAL);
        let text = std::str::from_utf8(&a).unwrap();
        let m: Vec<&str> = text.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(m, ["m=audio 30000 RTP/AVP 0", "m=video 30002 RTP/AVPF 96"]);
        assert!(text.contains("a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"));
        assert!(text.contains("a=rtcp-fb:96 ccm fir"));
        SessionDescription::parse(&a).unwrap();
        // Declined when not chosen.
        let a = answer(&offer, Some(&audio), None, None, &LOCAL);
        assert!(std::str::from_utf8(&a)
            .unwrap()
            .contains("m=video 0 RTP/AVPF 97"));
    }
}
