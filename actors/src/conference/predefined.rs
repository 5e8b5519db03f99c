//! Predefined conferences (CPM.md §5 fig. 8-9): described in `--conferences-file`, started
//! through the HTTP API (`POST /api/v1/conferences/{name}/start`), when the focus INVITEs
//! every participant; only the invited may dial in (others get 403) unless `join = "anyone"`.
//!
//! ```toml
//! [[conference]]
//! name = "weekly"                       # focus URI sip:weekly@<first domain>
//! participants = ["sip:alice@example.com", "sip:bob@example.com"]
//! media = ["audio"]                     # audio only in this version
//! join = "invited"                      # or "anyone"
//! ```
//! Scheduled start (a configured time) is not implemented: start them through the API.

use serde::Deserialize;

/// One predefined conference.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predefined {
    /// The user part of its focus URI.
    pub name: String,
    /// The AORs the focus INVITEs when it starts.
    #[serde(default)]
    pub participants: Vec<String>,
    /// Its media: `audio` only in this version.
    #[serde(default = "audio")]
    pub media: Vec<String>,
    /// Who may dial in.
    #[serde(default)]
    pub join: Join,
}

fn audio() -> Vec<String> {
    vec!["audio".into()]
}

/// Who may dial in to a predefined conference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Join {
    /// Only its participants (the From AOR must be in the list), else 403.
    #[default]
    Invited,
    /// Anyone who knows its URI.
    Anyone,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    conference: Vec<Predefined>,
}

impl Predefined {
    /// Parses a conferences file; names must be unique, must not start with `conf-` (ad-hoc
    /// names) and must be valid URI user parts (letters, digits, `-`, `_`, `.`).
    pub fn parse(text: &str) -> Result<Vec<Predefined>, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut seen = std::collections::HashSet::new();
        for c in &file.conference {
            let ok = !c.name.is_empty()
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok || c.name.starts_with(super::focus::PREFIX) {
                return Err(format!("conference name {:?} not allowed", c.name));
            }
            if !seen.insert(c.name.clone()) {
                return Err(format!("conference {:?} defined twice", c.name));
            }
            if let Some(m) = c.media.iter().find(|m| m.as_str() != "audio") {
                return Err(format!(
                    "conference {:?}: media {m:?} not supported",
                    c.name
                ));
            }
        }
        Ok(file.conference)
    }

    /// Whether the AOR `aor` is one of its participants (compared as canonical AORs).
    pub fn invites(&self, aor: &str) -> bool {
        self.participants
            .iter()
            .any(|p| canonical(p).as_deref() == Some(aor))
    }
}

/// A URI's canonical AOR (`sip:user@host`), as the registrar keys bindings.
pub fn canonical(uri: &str) -> Option<String> {
    cpm_engine::sip::uri::Uri::parse(&bytes::Bytes::copy_from_slice(uri.as_bytes()))
        .ok()?
        .aor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let c = Predefined::parse(
            "[[conference]]\nname = \"weekly\"\nparticipants = [\"sip:alice@x.test\", \"<sip:Bob@x.test>\"]\n\
             [[conference]]\nname = \"open\"\njoin = \"anyone\"\n",
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].join, Join::Invited);
        assert_eq!(c[1].join, Join::Anyone);
        assert_eq!(c[0].media, ["audio"]);
        assert!(c[0].invites("sip:alice@x.test"));
        assert!(!c[0].invites("sip:carol@x.test"));
        for bad in [
            "[[conference]]\nname = \"conf-x\"\n",
            "[[conference]]\nname = \"a b\"\n",
            "[[conference]]\nname = \"a\"\n[[conference]]\nname = \"a\"\n",
            "[[conference]]\nname = \"a\"\nmedia = [\"video\"]\n",
            "[[conference]]\nname = \"a\"\nbogus = 1\n",
        ] {
            assert!(Predefined::parse(bad).is_err(), "{bad}");
        }
        assert!(Predefined::parse("").unwrap().is_empty());
    }
}
