//! The conference event package (RFC 4575): `application/conference-info+xml` documents, a
//! full one for a new subscription and partial ones (RFC 4575 §4.6: only the users that
//! changed, a leaver as `state="deleted"`) as participants join, leave or are muted.
//!
//! A participant's endpoint carries its audio stream; a muted participant's audio is
//! `recvonly` (it hears the mix, nothing of it goes in), RFC 4575 §5.8.

use std::fmt::Write as _;

/// What the focus tells subscribers about one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The participant's AOR (the `entity` of its `<user>` and `<endpoint>`).
    pub entity: String,
    /// Its display name, if it gave one.
    pub display: Option<String>,
    /// `connected`, `dialing-out`, `disconnected`, ... (RFC 4575 §5.7.1).
    pub status: &'static str,
    /// Whether its audio is muted.
    pub muted: bool,
    /// Its id in the conference (the `id` of its media element and the API's participant id).
    pub id: u32,
}

/// How a user appears in a partial document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Joined or changed: the whole user element.
    Full,
    /// Left.
    Deleted,
}

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn user(u: &UserInfo, change: Change, out: &mut String) {
    let entity = escape(&u.entity);
    if change == Change::Deleted {
        let _ = writeln!(out, "    <user entity=\"{entity}\" state=\"deleted\"/>");
        return;
    }
    let _ = writeln!(out, "    <user entity=\"{entity}\" state=\"full\">");
    if let Some(d) = &u.display {
        let _ = writeln!(out, "      <display-text>{}</display-text>", escape(d));
    }
    let media = if u.muted { "recvonly" } else { "sendrecv" };
    let _ = write!(
        out,
        "      <endpoint entity=\"{entity}\">\n        <status>{}</status>\n        \
         <media id=\"{}\">\n          <type>audio</type>\n          <status>{media}</status>\n        \
         </media>\n      </endpoint>\n    </user>\n",
        u.status, u.id
    );
}

/// A `conference-info` document for the focus `entity`, version `version`: `full` lists
/// every user (`changes` ignored), partial lists only `changes`. `count` is the user count.
pub fn render(
    entity: &str,
    version: u32,
    users: &[UserInfo],
    changes: Option<&[(UserInfo, Change)]>,
) -> String {
    let state = if changes.is_some() { "partial" } else { "full" };
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<conference-info \
         xmlns=\"urn:ietf:params:xml:ns:conference-info\" entity=\"{}\" state=\"{state}\" \
         version=\"{version}\">\n  <conference-state>\n    <user-count>{}</user-count>\n    \
         <active>true</active>\n  </conference-state>\n  <users>\n",
        escape(entity),
        users.len()
    );
    match changes {
        None => users.iter().for_each(|u| user(u, Change::Full, &mut out)),
        Some(c) => c.iter().for_each(|(u, ch)| user(u, *ch, &mut out)),
    }
    out.push_str("  </users>\n</conference-info>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(entity: &str, id: u32, muted: bool) -> UserInfo {
        UserInfo {
            entity: entity.into(),
            display: Some("A & B".into()),
            status: "connected",
            muted,
            id,
        }
    }

    #[test]
    fn full_and_partial_documents() {
        let users = [u("sip:a@x", 1, false), u("sip:b@x", 2, true)];
        let full = render("sip:conf-1@x", 1, &users, None);
        assert!(full.contains("state=\"full\" version=\"1\""));
        assert!(full.contains("<user-count>2</user-count>"));
        assert_eq!(full.matches("<user entity=").count(), 2);
        assert!(full.contains("<display-text>A &amp; B</display-text>"));
        assert!(full.contains("<status>recvonly</status>"));
        let partial = render(
            "sip:conf-1@x",
            2,
            &users[..1],
            Some(&[(u("sip:b@x", 2, false), Change::Deleted)]),
        );
        assert!(partial.contains("state=\"partial\" version=\"2\""));
        assert!(partial.contains("<user entity=\"sip:b@x\" state=\"deleted\"/>"));
        assert!(!partial.contains("sip:a@x\" state"));
        assert!(partial.contains("<user-count>1</user-count>"));
    }
}
