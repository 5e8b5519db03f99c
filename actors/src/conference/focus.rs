//! Conference addressing (RFC 4579 §3, decision 0014): which Request-URIs name a conference
//! focus, which worker owns a conference, and the Via branches that bring the responses to a
//! conference's requests back to its worker.
//!
//! A conference is named by the user part of its focus URI: `conf-<hex>` for an ad-hoc one
//! (`sip:conf-1f2e3d4c@example.com`), the configured name for a predefined one. The user part
//! `conf-` is reserved: a request to a `conf-` name that is not running is answered 404.

use std::collections::HashSet;

use cpm_engine::sip::{HeaderName, Message};

/// The user-part prefix of ad-hoc conference names.
pub const PREFIX: &str = "conf-";

/// The branch prefix of requests a conference sends: the RFC 3261 magic cookie, `cf`, the
/// worker's index, a dot, then random hex.
const BRANCH_MARK: &[u8] = b"z9hG4bKcf";

/// The conference names the router must recognise besides `conf-...`: the factory's (routed
/// by Call-ID, since an INVITE to it creates a conference where it lands) and the predefined
/// conferences'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FocusNames {
    /// The factory's user part (`conf-factory` by default).
    pub factory: String,
    /// The predefined conferences' user parts.
    pub predefined: HashSet<String>,
}

impl FocusNames {
    /// The conference a request is for: the user part of its Request-URI when that is a
    /// conference name (`conf-...` or predefined), `None` for the factory and anything else.
    pub fn conference_of<'a>(&self, msg: &'a Message) -> Option<&'a [u8]> {
        let user = uri_user(msg.request_uri()?)?;
        if user == self.factory.as_bytes() {
            return None;
        }
        let named = user.starts_with(PREFIX.as_bytes())
            || (!self.predefined.is_empty()
                && std::str::from_utf8(user).is_ok_and(|u| self.predefined.contains(u)));
        named.then_some(user)
    }

    /// Whether a request goes to the conference factory.
    pub fn is_factory(&self, msg: &Message) -> bool {
        msg.request_uri()
            .and_then(|u| uri_user(u))
            .is_some_and(|u| u == self.factory.as_bytes())
    }
}

/// The user part of a `sip:`/`sips:` URI (bytes between the scheme and `@`), without parsing
/// the rest; `None` without a user part.
pub fn uri_user(uri: &[u8]) -> Option<&[u8]> {
    let rest = uri
        .strip_prefix(b"sip:")
        .or_else(|| uri.strip_prefix(b"sips:"))?;
    let end = rest
        .iter()
        .position(|&c| matches!(c, b'@' | b';' | b'?' | b'>'))?;
    (rest.get(end) == Some(&b'@') && end > 0).then(|| &rest[..end])
}

/// The worker that owns a conference: FNV-1a of its name mod `workers` (as Call-IDs are).
pub fn owner(name: &[u8], workers: usize) -> usize {
    (cpm_engine::hash::fnv1a(name) % workers.max(1) as u64) as usize
}

/// A fresh ad-hoc conference name that `worker` of `workers` owns (about `workers` tries).
pub fn adhoc_name(worker: usize, workers: usize, next: &mut impl FnMut() -> u64) -> String {
    loop {
        let name = format!("{PREFIX}{:012x}", next() & 0xffff_ffff_ffff);
        if owner(name.as_bytes(), workers) == worker {
            return name;
        }
    }
}

/// A Via branch for a request a conference on `worker` sends (RFC 3261 §8.1.1.7: the magic
/// cookie first); its responses are routed back to `worker` ([`branch_worker`]).
pub fn branch(worker: usize, random: u64) -> String {
    format!(
        "{}{worker}.{random:016x}",
        String::from_utf8_lossy(BRANCH_MARK)
    )
}

/// The worker named in the top Via branch of a response to a conference's request.
pub fn branch_worker(msg: &Message) -> Option<usize> {
    let via = msg.headers.get(&HeaderName::Via)?;
    let at = find(via, b"branch=")? + b"branch=".len();
    let digits = via.get(at..)?.strip_prefix(BRANCH_MARK)?;
    let end = digits.iter().position(|c| !c.is_ascii_digit())?;
    if digits.get(end) != Some(&b'.') || end == 0 || end > 6 {
        return None;
    }
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(uri: &str) -> Message {
        cpm_engine::sip::parse(Bytes::from(format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n"
        )))
        .unwrap()
    }

    #[test]
    fn conference_names_are_recognised() {
        let names = FocusNames {
            factory: "conf-factory".into(),
            predefined: ["weekly".to_string()].into_iter().collect(),
        };
        let of = |u: &str| names.conference_of(&req(u)).map(|b| b.to_vec());
        assert_eq!(of("sip:conf-ab12@localhost"), Some(b"conf-ab12".to_vec()));
        assert_eq!(
            of("sips:weekly@x.test;transport=tcp"),
            Some(b"weekly".to_vec())
        );
        assert_eq!(of("sip:conf-factory@localhost"), None);
        assert!(names.is_factory(&req("sip:conf-factory@localhost")));
        assert_eq!(of("sip:alice@localhost"), None);
        assert_eq!(of("sip:localhost;user=conf-x"), None);
        assert_eq!(of("tel:+123"), None);
    }

    #[test]
    fn uri_user_needs_an_at() {
        assert_eq!(uri_user(b"sip:a@b"), Some(&b"a"[..]));
        assert_eq!(uri_user(b"sip:b.test"), None);
        assert_eq!(uri_user(b"sip:@b"), None);
        assert_eq!(uri_user(b"sip:b;x=a@c"), None);
    }

    #[test]
    fn adhoc_names_hash_to_their_worker() {
        let mut n = 7u64;
        let mut next = || {
            n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            n
        };
        for w in 0..4 {
            let name = adhoc_name(w, 4, &mut next);
            assert!(name.starts_with(PREFIX));
            assert_eq!(owner(name.as_bytes(), 4), w);
        }
    }

    #[test]
    fn responses_come_back_by_branch() {
        let b = branch(3, 0xabc);
        let resp = cpm_engine::sip::parse(Bytes::from(format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;rport=5;branch={b}\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n"
        )))
        .unwrap();
        assert_eq!(branch_worker(&resp), Some(3));
        for other in ["z9hG4bKcf.1", "z9hG4bKcfx.1", "z9hG4bK1234", "z9hG4bKcf12"] {
            let resp = cpm_engine::sip::parse(Bytes::from(format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch={other}\r\n\r\n"
            )))
            .unwrap();
            assert_eq!(branch_worker(&resp), None, "{other}");
        }
    }
}
