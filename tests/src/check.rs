//! Assertions on responses that print the whole message when they fail.

use cpm_engine::sip::Message;

use crate::wire::{header, header_values, param, Req};

/// Asserts the status code.
#[track_caller]
pub fn assert_status(resp: &Message, code: u16) {
    assert_eq!(resp.status(), Some(code), "expected {code}, got:\n{resp}");
}

/// Asserts what RFC 3261 §8.2.6.2 requires a response to `req` to copy: the top Via's branch,
/// From, Call-ID and CSeq unchanged, the To URI unchanged with a tag added (except on 100).
#[track_caller]
pub fn assert_echoes(req: &Req, resp: &Message) {
    let via = resp
        .top_via()
        .unwrap_or_else(|e| panic!("response without usable Via ({e}):\n{resp}"));
    let branch = via
        .branch()
        .map(|b| String::from_utf8_lossy(b).into_owned());
    assert_eq!(branch, req.branch(), "top Via branch in:\n{resp}");
    for name in ["From", "Call-ID", "CSeq"] {
        assert_eq!(
            header(resp, name).as_deref(),
            req.get(name),
            "{name} in:\n{resp}"
        );
    }
    let to = header(resp, "To").unwrap_or_else(|| panic!("no To in:\n{resp}"));
    let sent_to = req.get("To").expect("request has To");
    assert!(
        to.starts_with(sent_to),
        "To {to:?} does not keep {sent_to:?}"
    );
    if resp.status() != Some(100) {
        assert!(
            param(&to, "tag").is_some_and(|t| !t.is_empty()),
            "no To tag in:\n{resp}"
        );
    }
}

/// A binding listed in a REGISTER response (RFC 3261 §10.3 step 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI, without `<>`.
    pub uri: String,
    /// Its `expires` parameter.
    pub expires: Option<u32>,
}

/// The Contact bindings of a response.
pub fn bindings(resp: &Message) -> Vec<Binding> {
    header_values(resp, "Contact")
        .into_iter()
        .map(|v| {
            let uri = match (v.find('<'), v.find('>')) {
                (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
                _ => v.split(';').next().unwrap_or("").trim().to_string(),
            };
            let expires = param(&v, "expires").and_then(|e| e.parse().ok());
            Binding { uri, expires }
        })
        .collect()
}

/// The binding for `uri` (compared case-insensitively), panicking with the response if absent.
#[track_caller]
pub fn binding(resp: &Message, uri: &str) -> Binding {
    bindings(resp)
        .into_iter()
        .find(|b| b.uri.eq_ignore_ascii_case(uri))
        .unwrap_or_else(|| panic!("no binding for {uri} in:\n{resp}"))
}

/// Whether the comma-separated list header `name` holds `token` (case-insensitive).
pub fn lists(resp: &Message, name: &str, token: &str) -> bool {
    header_values(resp, name)
        .iter()
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn reads_bindings() {
        let m = cpm_engine::sip::parse(Bytes::from_static(
            b"SIP/2.0 200 OK\r\nContact: <sip:a@1.2.3.4:5;transport=tcp>;expires=30, <sip:b@h>;expires=7\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(
            bindings(&m),
            vec![
                Binding {
                    uri: "sip:a@1.2.3.4:5;transport=tcp".into(),
                    expires: Some(30)
                },
                Binding {
                    uri: "sip:b@h".into(),
                    expires: Some(7)
                },
            ]
        );
        assert_eq!(binding(&m, "SIP:b@h").expires, Some(7));
    }
}
