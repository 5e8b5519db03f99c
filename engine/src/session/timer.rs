//! Session timers (RFC 4028) as the B2BUA applies them: like a proxy (§8), it checks the
//! Session-Expires of each INVITE/UPDATE it relays against its Min-SE (422 below it), inserts
//! one when the requester supports timers but asked for none, and on the 2xx learns the
//! negotiated interval, inserting `Session-Expires;refresher=uac` and `Require: timer` when the
//! answerer does not support timers but the requester does (§8.2). It never refreshes by
//! itself: it ends the session when no refresh arrives before the interval runs out.

use bytes::Bytes;

use crate::sip::hdr::{parse_delta_seconds, HeaderError, Params};
use crate::sip::message::trim;
use crate::sip::{HeaderName, Message};

/// Who refreshes the session (RFC 4028 §4 `refresher` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The UAC of the refresh transaction.
    Uac,
    /// Its UAS.
    Uas,
}

/// A Session-Expires value (RFC 4028 §4): `delta-seconds *(;se-params)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// The session interval in seconds.
    pub delta: u32,
    /// The refresher, if named.
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// Parses one value; an unknown `refresher` value is malformed.
    pub fn parse(raw: &Bytes) -> Result<SessionExpires, HeaderError> {
        const E: HeaderError = HeaderError::Malformed("Session-Expires");
        let (delta, params) = delta_and_params(raw).ok_or(E)?;
        let refresher = match params.value("refresher") {
            None => None,
            Some(v) if v.eq_ignore_ascii_case(b"uac") => Some(Refresher::Uac),
            Some(v) if v.eq_ignore_ascii_case(b"uas") => Some(Refresher::Uas),
            Some(_) => return Err(E),
        };
        Ok(SessionExpires { delta, refresher })
    }

    /// The Session-Expires of `msg`, `None` when absent.
    pub fn of(msg: &Message) -> Result<Option<SessionExpires>, HeaderError> {
        msg.headers
            .get(&HeaderName::SessionExpires)
            .map(SessionExpires::parse)
            .transpose()
    }
}

/// The Min-SE of `msg` in seconds (RFC 4028 §5), `None` when absent.
pub fn min_se(msg: &Message) -> Result<Option<u32>, HeaderError> {
    msg.headers
        .get(&HeaderName::MinSe)
        .map(|v| {
            delta_and_params(v)
                .map(|(d, _)| d)
                .ok_or(HeaderError::Malformed("Min-SE"))
        })
        .transpose()
}

fn delta_and_params(raw: &Bytes) -> Option<(u32, Params)> {
    let v = trim(raw);
    let end = v.iter().position(|&c| c == b';').unwrap_or(v.len());
    let delta = parse_delta_seconds(&trim(&v.slice(..end)))?;
    Some((delta, Params::parse(&v.slice(end..))))
}

/// What a relayed INVITE/UPDATE asked for, kept until its 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerOffer {
    /// The Session-Expires of the relayed request (received or inserted).
    pub se: u32,
    /// Whether the requester listed `timer` in Supported.
    pub requester_supports: bool,
    /// Whether we inserted the Session-Expires (the request had none).
    pub inserted: bool,
}

/// Why a request is refused by the session timer rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerRefusal {
    /// Session-Expires or Min-SE malformed: 400.
    Malformed(HeaderError),
    /// Session-Expires below our Min-SE: 422 with `Min-SE: min` (§8.1, §6).
    TooSmall {
        /// Our Min-SE.
        min: u32,
    },
}

/// Checks a request to relay (§8.1 as a proxy): with a Session-Expires, it must reach our
/// `min_se`; without one, a requester that supports timers gets `default_se` (raised to its
/// Min-SE) inserted. `None`: no session timer asked for.
pub(crate) fn check_request(
    req: &Message,
    min: u32,
    default_se: u32,
) -> Result<Option<TimerOffer>, TimerRefusal> {
    let se = SessionExpires::of(req).map_err(TimerRefusal::Malformed)?;
    let their_min = min_se(req).map_err(TimerRefusal::Malformed)?;
    let supports = req.supported().is_ok_and(|s| s.contains("timer"));
    match se {
        Some(se) if se.delta < min => Err(TimerRefusal::TooSmall { min }),
        Some(se) => Ok(Some(TimerOffer {
            se: se.delta,
            requester_supports: supports,
            inserted: false,
        })),
        None if supports => Ok(Some(TimerOffer {
            se: default_se.max(min).max(their_min.unwrap_or(0)),
            requester_supports: true,
            inserted: true,
        })),
        None => Ok(None),
    }
}

/// Adds what `offer` inserts to the request relayed onward.
pub(crate) fn apply_to_request(offer: Option<TimerOffer>, out: &mut Message) {
    if let Some(o) = offer.filter(|o| o.inserted) {
        out.headers
            .push(HeaderName::SessionExpires, o.se.to_string());
    }
}

/// The 2xx `resp` answered a request relayed with `offer`; `out` is the 2xx we relay back
/// (its Session-Expires and Require already copied from `resp`). Returns the session interval
/// in seconds, or `None` when the session has no timer (§9: a 2xx without Session-Expires, to a
/// requester that does not support timers).
pub(crate) fn on_2xx(offer: Option<TimerOffer>, resp: &Message, out: &mut Message) -> Option<u32> {
    if let Ok(Some(se)) = SessionExpires::of(resp) {
        return Some(se.delta);
    }
    let offer = offer?;
    if !offer.requester_supports {
        return None;
    }
    // §8.2: the answerer does not do timers; the requester does, and refreshes.
    out.headers.push(
        HeaderName::SessionExpires,
        format!("{};refresher=uac", offer.se),
    );
    if !out.require().is_ok_and(|r| r.contains("timer")) {
        out.headers.push(HeaderName::Require, "timer");
    }
    Some(offer.se)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    fn req(extra: &str) -> Message {
        parse(Bytes::from(format!(
            "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )))
        .unwrap()
    }

    #[test]
    fn parses_session_expires_and_min_se() {
        let se = SessionExpires::parse(&Bytes::from_static(b"1800 ; refresher=UAS")).unwrap();
        assert_eq!(se.delta, 1800);
        assert_eq!(se.refresher, Some(Refresher::Uas));
        assert_eq!(
            SessionExpires::parse(&Bytes::from_static(b"90")).unwrap(),
            SessionExpires {
                delta: 90,
                refresher: None
            }
        );
        for bad in ["", "x", "90;refresher=both", "-1"] {
            assert!(SessionExpires::parse(&Bytes::from(bad)).is_err(), "{bad}");
        }
        assert_eq!(min_se(&req("Min-SE: 120;x=y\r\n")), Ok(Some(120)));
        assert_eq!(min_se(&req("")), Ok(None));
        assert!(min_se(&req("Min-SE: soon\r\n")).is_err());
    }

    #[test]
    fn request_checks_follow_8_1() {
        assert_eq!(
            check_request(&req("Session-Expires: 60\r\n"), 90, 1800),
            Err(TimerRefusal::TooSmall { min: 90 })
        );
        let o = check_request(
            &req("Session-Expires: 300\r\nSupported: timer\r\n"),
            90,
            1800,
        )
        .unwrap()
        .unwrap();
        assert_eq!((o.se, o.requester_supports, o.inserted), (300, true, false));
        let o = check_request(&req("Supported: timer\r\nMin-SE: 2000\r\n"), 90, 1800)
            .unwrap()
            .unwrap();
        assert_eq!((o.se, o.inserted), (2000, true));
        assert_eq!(check_request(&req(""), 90, 1800), Ok(None));
        assert!(matches!(
            check_request(&req("Session-Expires: x\r\n"), 90, 1800),
            Err(TimerRefusal::Malformed(_))
        ));

        let mut out = req("");
        apply_to_request(Some(o), &mut out);
        assert_eq!(
            out.headers.get(&HeaderName::SessionExpires).map(|v| &v[..]),
            Some(&b"2000"[..])
        );
    }

    #[test]
    fn the_2xx_sets_the_interval() {
        let base = TimerOffer {
            se: 300,
            requester_supports: true,
            inserted: false,
        };
        let offer = Some(base);
        // The answerer chose: its value counts, nothing is added.
        let resp = req("Session-Expires: 200;refresher=uas\r\n");
        let mut out = req("");
        assert_eq!(on_2xx(offer, &resp, &mut out), Some(200));
        assert!(out.headers.get(&HeaderName::Require).is_none());
        // The answerer does not do timers: the requester refreshes (§8.2).
        let resp = req("");
        let mut out = req("");
        assert_eq!(on_2xx(offer, &resp, &mut out), Some(300));
        assert_eq!(
            out.headers.get(&HeaderName::SessionExpires).map(|v| &v[..]),
            Some(&b"300;refresher=uac"[..])
        );
        assert!(out.require().unwrap().contains("timer"));
        // Nobody does timers.
        let none = Some(TimerOffer {
            requester_supports: false,
            ..base
        });
        assert_eq!(on_2xx(none, &resp, &mut req("")), None);
        assert_eq!(on_2xx(None, &resp, &mut req("")), None);
    }
}
