//! Recording a session into network storage (CPM.md §5 "Network storage of a session",
//! fig. 12): the sans-IO half. A party of an anchored session sends an in-dialog REFER
//! (RFC 3515) whose `Refer-To` names the storage controller; the session answers it itself
//! (202, then a NOTIFY with the final `message/sipfrag`, RFC 3515 §2.4.4-§2.4.5) instead of
//! relaying it, and tells its runtime to start or stop taping the session's MSRP traffic.
//!
//! The storage controller's URI is `sip:storage@<domain>` where `<domain>` is the domain of
//! either party (the session's own domain; decision 0013):
//!
//! | Refer-To | meaning |
//! |---|---|
//! | `<sip:storage@example.com;method=INVITE>` (or no `method`: INVITE, RFC 3515 §2.4.2) | storage joins as a virtual participant: recording on |
//! | `<sip:storage@example.com;method=BYE>` | storage leaves: recording off |
//! | another method toward storage | 400 (the session goes on) |
//! | any other target | not ours: relayed as before (a transfer) |

use bytes::Bytes;

use crate::media::Side;
use crate::sip::dialog::Dialog;
use crate::sip::uri::Uri;
use crate::sip::{HeaderName, Message, Method};

/// The user part of the storage controller's URI.
pub const STORAGE_USER: &str = "storage";

/// What a REFER to the storage controller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCommand {
    /// `method=INVITE`: the storage joins the session (recording starts).
    Start,
    /// `method=BYE`: the storage leaves (recording stops; the session goes on).
    Stop,
}

/// Why a REFER naming the storage controller is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferError {
    /// More than one Refer-To, or one that does not parse (RFC 3515 §2.4.1: 400).
    BadReferTo,
    /// A method other than INVITE or BYE toward the storage.
    UnsupportedMethod,
}

impl ReferError {
    /// The status of the answer to the REFER.
    pub fn status(&self) -> u16 {
        400
    }

    /// The reason phrase.
    pub fn reason(&self) -> &'static str {
        match self {
            ReferError::BadReferTo => "Bad Refer-To",
            ReferError::UnsupportedMethod => "Storage Supports INVITE And BYE Only",
        }
    }
}

/// Whether a REFER is addressed to the storage controller of `domains` (the parties'
/// domains, lower case) and what it asks. `None`: not a storage REFER (no or an unparsable
/// Refer-To naming someone else, a transfer): it keeps its usual handling.
pub fn classify_refer(
    req: &Message,
    domains: &[&str],
) -> Option<Result<RecordCommand, ReferError>> {
    if req.method() != Some(&Method::Refer) {
        return None;
    }
    if req.headers.count(&HeaderName::ReferTo) > 1 {
        // Several Refer-To values are refused only when one of them names the storage.
        let any = req
            .headers
            .get_all(&HeaderName::ReferTo)
            .any(|v| names_storage_raw(v, domains));
        return any.then_some(Err(ReferError::BadReferTo));
    }
    let raw = req.headers.get(&HeaderName::ReferTo)?;
    let refer_to = crate::sip::hdr::ReferTo::parse(raw).ok()?;
    if !is_storage(&refer_to.addr.uri, domains) {
        return None;
    }
    Some(match refer_to.method() {
        None | Some(Method::Invite) => Ok(RecordCommand::Start),
        Some(Method::Bye) => Ok(RecordCommand::Stop),
        Some(_) => Err(ReferError::UnsupportedMethod),
    })
}

fn names_storage_raw(raw: &Bytes, domains: &[&str]) -> bool {
    crate::sip::hdr::ReferTo::parse(raw).is_ok_and(|r| is_storage(&r.addr.uri, domains))
}

/// `sip:storage@<one of domains>` (any port, parameters aside).
fn is_storage(uri: &Uri, domains: &[&str]) -> bool {
    let Some(sip) = uri.as_sip() else {
        return false;
    };
    let user_ok = sip
        .user
        .as_ref()
        .is_some_and(|u| u.eq_ignore_ascii_case(STORAGE_USER.as_bytes()));
    let host = sip.host.to_lowercase();
    user_ok && domains.iter().any(|d| d.eq_ignore_ascii_case(&host))
}

/// The domain of an AOR-like URI value (`sip:alice@Example.COM` → `example.com`).
pub fn domain_of(uri: &Bytes) -> Option<String> {
    let u = Uri::parse(uri).ok()?;
    Some(u.as_sip()?.host.to_lowercase())
}

/// The final NOTIFY of an accepted REFER (RFC 3515 §2.4.4-§2.4.5): in the referrer's dialog,
/// `Event: refer;id=<REFER CSeq>`, `Subscription-State: terminated;reason=noresource`, and
/// the `message/sipfrag` body `SIP/2.0 <code> <reason>` (RFC 3420).
pub fn refer_notify(
    dialog: &mut Dialog,
    via: Bytes,
    refer_seq: u32,
    code: u16,
    reason: &str,
) -> Message {
    let mut n = dialog.request(Method::Notify, via);
    n.headers
        .push(HeaderName::Event, format!("refer;id={refer_seq}"));
    n.headers.push(
        HeaderName::SubscriptionState,
        "terminated;reason=noresource",
    );
    n.set_body(
        Bytes::from(format!("SIP/2.0 {code} {reason}\r\n")),
        Some("message/sipfrag;version=2.0"),
    );
    n
}

/// A change of a session's recording, for its runtime to carry out (tap the MSRP legs or
/// stop), from [`crate::session::Session::poll_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordChange {
    /// Recording is on from now (`false`: off).
    pub on: bool,
    /// The party whose REFER asked for it.
    pub by: Side,
}

/// Whether a session is being recorded, and who turned it on (fig. 12's state: REFER
/// `method=INVITE` → on, `method=BYE` → off; repeated commands change nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recording {
    by: Option<Side>,
}

impl Recording {
    /// Applies a command from `by`; the change to announce, if the state changed.
    pub fn apply(&mut self, cmd: RecordCommand, by: Side) -> Option<RecordChange> {
        match (cmd, self.by) {
            (RecordCommand::Start, None) => {
                self.by = Some(by);
                Some(RecordChange { on: true, by })
            }
            (RecordCommand::Stop, Some(_)) => {
                self.by = None;
                Some(RecordChange { on: false, by })
            }
            _ => None,
        }
    }

    /// Whether recording is on.
    pub fn is_on(&self) -> bool {
        self.by.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    fn refer(refer_to: &[&str]) -> Message {
        let mut s = String::from(
            "REFER sip:cpmd@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr1\r\n\
             From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>;tag=b\r\n\
             Call-ID: c1\r\nCSeq: 7 REFER\r\nMax-Forwards: 70\r\n",
        );
        for r in refer_to {
            s.push_str(&format!("Refer-To: {r}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        parse(Bytes::from(s)).unwrap()
    }

    const D: &[&str] = &["example.com"];

    #[test]
    fn refer_to_storage_starts_and_stops() {
        let c = |r: &str| classify_refer(&refer(&[r]), D);
        assert_eq!(
            c("<sip:storage@example.com;method=INVITE>"),
            Some(Ok(RecordCommand::Start))
        );
        assert_eq!(
            c("<sip:storage@EXAMPLE.com>"),
            Some(Ok(RecordCommand::Start)),
            "no method: INVITE (RFC 3515 §2.4.2)"
        );
        assert_eq!(
            c("<sip:storage@example.com;method=BYE>"),
            Some(Ok(RecordCommand::Stop))
        );
        assert_eq!(
            c("<sip:storage@example.com;method=MESSAGE>"),
            Some(Err(ReferError::UnsupportedMethod))
        );
    }

    #[test]
    fn other_targets_are_not_ours() {
        let c = |r: &str| classify_refer(&refer(&[r]), D);
        assert_eq!(c("<sip:carol@example.com>"), None, "a transfer");
        assert_eq!(c("<sip:storage@elsewhere.net;method=INVITE>"), None);
        assert_eq!(c("<tel:+15551234>"), None);
        assert_eq!(c("<<<garbage"), None);
        assert_eq!(classify_refer(&refer(&[]), D), None, "no Refer-To");
    }

    #[test]
    fn two_refer_tos_naming_storage_are_refused() {
        let r = refer(&["<sip:storage@example.com>", "<sip:carol@example.com>"]);
        assert_eq!(classify_refer(&r, D), Some(Err(ReferError::BadReferTo)));
        let r = refer(&["<sip:dave@example.com>", "<sip:carol@example.com>"]);
        assert_eq!(classify_refer(&r, D), None);
    }

    #[test]
    fn recording_changes_only_on_state_changes() {
        let mut r = Recording::default();
        assert_eq!(r.apply(RecordCommand::Stop, Side::A), None);
        assert_eq!(
            r.apply(RecordCommand::Start, Side::B),
            Some(RecordChange {
                on: true,
                by: Side::B
            })
        );
        assert!(r.is_on());
        assert_eq!(r.apply(RecordCommand::Start, Side::A), None);
        assert_eq!(
            r.apply(RecordCommand::Stop, Side::A),
            Some(RecordChange {
                on: false,
                by: Side::A
            })
        );
        assert!(!r.is_on());
    }

    #[test]
    fn domains_of_parties() {
        assert_eq!(
            domain_of(&Bytes::from_static(b"sip:alice@Example.COM")).as_deref(),
            Some("example.com")
        );
        assert_eq!(domain_of(&Bytes::from_static(b"tel:+1555")), None);
    }
}
