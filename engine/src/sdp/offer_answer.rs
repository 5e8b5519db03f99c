//! The offer/answer model (RFC 3264 §5-6) for a simple audio endpoint: the offer the load
//! generator sends, and the answer to any offer given the codecs this side supports.

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;

use super::attr::{Attribute, Direction};
use super::codec::Codec;
use super::fields::{MediaLine, Origin, Proto};
use super::media::MediaSection;
use super::SessionDescription;
use crate::hash::{fnv1a, fnv1a_extend};

/// No offered stream has a codec in common with the answerer: answer 488 (RFC 3264 §6,
/// RFC 3261 §21.4.26).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoCommonCodec;

impl NoCommonCodec {
    /// The status code to answer with.
    pub const STATUS: u16 = 488;

    /// A reason phrase naming the problem (the text of warning code 305, RFC 3261 §20.43).
    pub fn reason(&self) -> &'static str {
        "Incompatible Media Format"
    }
}

impl fmt::Display for NoCommonCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for NoCommonCodec {}

/// A session id from `parts`: stable for the same inputs, below 2^62 so versions can grow.
fn session_id(parts: &[&[u8]]) -> u64 {
    parts.iter().fold(fnv1a(b"sdp"), |h, p| fnv1a_extend(h, p)) >> 2
}

fn ip_octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The `rtpmap` and `fmtp` attributes of `codec`.
fn push_codec_attributes(m: &mut MediaSection, codec: &Codec) {
    m.push_attribute(Attribute::known("rtpmap", Some(codec.rtpmap().to_bytes())));
    if let Some(params) = codec.fmtp() {
        let mut v = format!("{} ", codec.payload_type()).into_bytes();
        v.extend_from_slice(params);
        m.push_attribute(Attribute::known("fmtp", Some(Bytes::from(v))));
    }
}

fn ptime_attribute(ms: u32) -> Attribute {
    Attribute::known("ptime", Some(Bytes::from(ms.to_string())))
}

impl SessionDescription {
    /// The offer of a simple audio endpoint (RFC 3264 §5): one `RTP/AVP` audio stream at
    /// `addr:port` with `codecs` in order of preference (an `rtpmap` for each, static ones
    /// too, and its `fmtp`), `a=ptime` when given, `a=sendrecv`. The session id is derived
    /// from address and port; the version starts at 1. Pass at least one codec.
    pub fn audio_offer(
        addr: IpAddr,
        port: u16,
        codecs: &[Codec],
        ptime: Option<u32>,
    ) -> SessionDescription {
        let formats = codecs
            .iter()
            .map(|c| Bytes::from(c.payload_type().to_string()))
            .collect();
        let mut m = MediaSection::local(MediaLine {
            media: Bytes::from_static(b"audio"),
            port,
            port_count: None,
            proto: Proto::RTP_AVP,
            formats,
        });
        for c in codecs {
            push_codec_attributes(&mut m, c);
        }
        if let Some(ms) = ptime {
            m.push_attribute(ptime_attribute(ms));
        }
        m.push_attribute(Direction::SendRecv.to_attribute());
        let id = session_id(&[&ip_octets(addr), &port.to_be_bytes()]);
        let origin = Origin::new(Bytes::from_static(b"-"), id, 1, addr);
        SessionDescription::local(origin, addr, Bytes::from_static(b"0 0"), vec![m])
    }
}

/// The answer to `offer` (RFC 3264 §6) of an endpoint at `local_addr` supporting `supported`.
///
/// Per offered stream, in order: the offered RTP payload types whose format (by `rtpmap`, else
/// the static table, name compared case-insensitively, RFC 3264 §6.1) one of `supported` has
/// are kept, in the offer's order and with the offer's payload type numbers, `rtpmap` and
/// `fmtp`; the offer's `ptime` is echoed and the direction mirrored (sendonly → recvonly,
/// inactive → inactive). Such a stream gets the port `port_for_media(index, offered)` returns.
/// A stream offered with port 0, not in plain RTP (SRTP keys, MSRP, ... are not negotiated
/// here), or where nothing but DTMF or comfort noise matches, is rejected: the answer keeps its m-line with port 0 and the offered formats. The `t=` line
/// is the offer's. Other attributes (`rtcp-mux`, ICE, ...) are not answered: RTCP stays on
/// port + 1. `Err(NoCommonCodec)` when every stream is rejected.
pub fn answer(
    offer: &SessionDescription,
    local_addr: IpAddr,
    mut port_for_media: impl FnMut(usize, &MediaSection) -> u16,
    supported: &[Codec],
) -> Result<SessionDescription, NoCommonCodec> {
    let mut media = Vec::with_capacity(offer.media().len());
    let mut first_port = 0u16;
    for (i, offered) in offer.media().iter().enumerate() {
        let line = offered.media_line();
        let plain_rtp = line.proto.is_rtp() && !line.proto.is_srtp();
        let matched: Vec<Codec> = if offered.port() == 0 || !plain_rtp {
            Vec::new()
        } else {
            offered
                .codecs()
                .into_iter()
                .filter(|c| supported.iter().any(|s| s.same_format(c)))
                .collect()
        };
        if !matched.iter().any(|c| !c.is_auxiliary()) {
            media.push(MediaSection::local(MediaLine {
                port: 0,
                port_count: None,
                ..line.clone()
            }));
            continue;
        }
        let port = port_for_media(i, offered);
        if first_port == 0 {
            first_port = port;
        }
        let mut m = MediaSection::local(MediaLine {
            media: line.media.clone(),
            port,
            port_count: None,
            proto: line.proto.clone(),
            formats: matched
                .iter()
                .map(|c| Bytes::from(c.payload_type().to_string()))
                .collect(),
        });
        for c in &matched {
            push_codec_attributes(&mut m, c);
        }
        if let Some(ms) = offered.ptime() {
            m.push_attribute(ptime_attribute(ms));
        }
        m.push_attribute(offer.direction_of(offered).answer().to_attribute());
        media.push(m);
    }
    if !media.iter().any(|m| m.port() != 0) {
        return Err(NoCommonCodec);
    }
    let id = session_id(&[
        &offer.origin().session_id,
        &ip_octets(local_addr),
        &first_port.to_be_bytes(),
    ]);
    let origin = Origin::new(Bytes::from_static(b"-"), id, 1, local_addr);
    let timing = offer
        .timing()
        .cloned()
        .unwrap_or_else(|| Bytes::from_static(b"0 0"));
    Ok(SessionDescription::local(origin, local_addr, timing, media))
}
