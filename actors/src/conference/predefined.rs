//! Predefined conferences (CPM.md §5 fig. 8-9): described in `--conferences-file`, started
//! through the HTTP API (`POST /api/v1/conferences/{name}/start`) or at their `start` time,
//! when the focus INVITEs every participant; only the invited may dial in (others get 403)
//! unless `join = "anyone"`. At `end` the focus BYEs everyone.
//!
//! ```toml
//! [[conference]]
//! name = "weekly"                       # focus URI sip:weekly@<first domain>
//! participants = ["sip:alice@example.com", "sip:bob@example.com"]
//! media = ["audio"]                     # audio only in this version
//! join = "invited"                      # or "anyone"
//! start = "2026-12-01T09:00:00Z"        # optional, RFC 3339 (a TOML date-time works too)
//! end = "2026-12-01T10:00:00+01:00"     # optional
//! floor = "half-duplex"                 # push-to-talk over BFCP; default "full-duplex"
//! max_talk_time = 30                    # seconds one talker may hold the floor (half-duplex)
//! ```
//! A start time already past when cpmd loads the file is ignored (logged): a restart does not
//! start yesterday's meeting again. The worker owning the conference arms the timer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer};

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
    /// When it starts by itself.
    #[serde(default, deserialize_with = "when")]
    pub start: Option<SystemTime>,
    /// When it ends by itself (BYE to everyone).
    #[serde(default, deserialize_with = "when")]
    pub end: Option<SystemTime>,
    /// Full duplex (everyone mixed) or half duplex (BFCP floor control, decision 0015).
    #[serde(default)]
    pub floor: super::floor::FloorMode,
    /// Half duplex: seconds one talker may hold the floor before it is revoked; 0: no limit.
    #[serde(default = "super::floor::default_max_talk_time")]
    pub max_talk_time: u64,
    /// Its group chat is recorded from the start, into each listed participant's network
    /// storage (decision 0014 "Group chat").
    #[serde(default)]
    pub record: bool,
}

/// An optional RFC 3339 time, written as a string or a TOML offset date-time.
fn when<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
    use serde::de::Error;
    let text = match toml::Value::deserialize(d)? {
        toml::Value::String(s) => s,
        toml::Value::Datetime(t) => t.to_string(),
        other => return Err(D::Error::custom(format!("not a time: {other}"))),
    };
    rfc3339(&text)
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{text:?} is not an RFC 3339 date-time")))
}

/// An RFC 3339 date-time with its offset (§5.6 `date-time`), as a system time.
pub fn rfc3339(text: &str) -> Option<SystemTime> {
    let t: toml::value::Datetime = text.trim().parse().ok()?;
    let (date, time, offset) = (t.date?, t.time?, t.offset?);
    let days = days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let offset = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes) * 60,
    };
    let secs = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second)
        - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, time.nanosecond))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
            if let (Some(s), Some(e)) = (c.start, c.end) {
                if e <= s {
                    return Err(format!("conference {:?}: end before start", c.name));
                }
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
        assert_eq!(c[0].floor, super::super::floor::FloorMode::FullDuplex);
        assert!(c[0].invites("sip:alice@x.test"));
        assert!(!c[0].invites("sip:carol@x.test"));
        let ptt = Predefined::parse(
            "[[conference]]\nname = \"ptt\"\nfloor = \"half-duplex\"\nmax_talk_time = 5\n",
        )
        .unwrap();
        assert_eq!(ptt[0].floor, super::super::floor::FloorMode::HalfDuplex);
        assert_eq!(ptt[0].max_talk_time, 5);
        for bad in [
            "[[conference]]\nname = \"conf-x\"\n",
            "[[conference]]\nname = \"a b\"\n",
            "[[conference]]\nname = \"a\"\n[[conference]]\nname = \"a\"\n",
            "[[conference]]\nname = \"a\"\nmedia = [\"video\"]\n",
            "[[conference]]\nname = \"a\"\nbogus = 1\n",
            "[[conference]]\nname = \"a\"\nfloor = \"quarter-duplex\"\n",
        ] {
            assert!(Predefined::parse(bad).is_err(), "{bad}");
        }
        assert!(Predefined::parse("").unwrap().is_empty());
    }

    #[test]
    fn start_and_end_times() {
        let c = Predefined::parse(
            "[[conference]]\nname = \"a\"\nstart = \"2026-12-01T09:00:00Z\"\n\
             end = 2026-12-01T10:30:00.5+01:00\n",
        )
        .unwrap();
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        assert_eq!(secs(c[0].start.unwrap()), 1_796_115_600.0);
        assert_eq!(secs(c[0].end.unwrap()), 1_796_117_400.5);
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(
            rfc3339("2000-03-01T00:00:00-00:30").map(secs),
            Some(951_868_800.0 + 1800.0)
        );
        // A date-time without offset, a date alone, or nonsense: refused.
        for bad in ["2026-12-01T09:00:00", "2026-12-01", "soon"] {
            assert_eq!(rfc3339(bad), None, "{bad}");
            let f = format!("[[conference]]\nname = \"a\"\nstart = \"{bad}\"\n");
            assert!(Predefined::parse(&f).is_err(), "{bad}");
        }
        let f = "[[conference]]\nname = \"a\"\nstart = \"2026-12-01T09:00:00Z\"\n\
                 end = \"2026-12-01T08:00:00Z\"\n";
        assert!(Predefined::parse(f).is_err());
    }
}
