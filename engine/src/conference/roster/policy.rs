//! The conference control policy (CPM.md §5): whether the server grants the resources of a new
//! conference or of one more participant.

use super::Roster;

/// Who may create an ad-hoc conference (INVITE to the factory URI, RFC 4579 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creators {
    /// Any user of our domains (authenticated, or registered when nobody authenticates).
    AnyLocalUser,
    /// Only these addresses of record.
    Listed(Vec<String>),
    /// Nobody: only predefined conferences.
    Nobody,
}

/// Who may join a conference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRule {
    /// Anyone who knows the focus URI (ad-hoc conferences).
    Anyone,
    /// Only these addresses of record (a predefined conference's participant list).
    Listed(Vec<String>),
}

/// The policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Granted.
    Allow,
    /// The server runs its maximum number of conferences.
    TooManyConferences,
    /// The conference holds its maximum number of participants.
    TooManyParticipants,
    /// The requester may not create conferences.
    NotAllowedToCreate,
    /// The requester is not on the conference's list (predefined conference).
    NotInvited,
}

impl Decision {
    /// Whether the request is granted.
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }

    /// The SIP response refusing the INVITE (RFC 3261 §21), `None` when granted: 503 when the
    /// server lacks resources, 486 when the conference is full, 403 when not permitted.
    pub fn sip_status(self) -> Option<(u16, &'static str)> {
        match self {
            Decision::Allow => None,
            Decision::TooManyConferences => Some((503, "Too Many Conferences")),
            Decision::TooManyParticipants => Some((486, "Conference Full")),
            Decision::NotAllowedToCreate => Some((403, "Not Allowed To Create Conferences")),
            Decision::NotInvited => Some((403, "Not Invited")),
        }
    }
}

/// Limits and permissions for conferences on this server (CPM.md §5 "conference control
/// policy").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferencePolicy {
    /// Most conferences at once.
    pub max_conferences: usize,
    /// Most participants in one conference (a conference's own limit may be lower).
    pub max_participants: usize,
    /// Who may create ad-hoc conferences.
    pub creators: Creators,
}

impl Default for ConferencePolicy {
    /// 100 conferences of at most 100 participants, created by any local user.
    fn default() -> Self {
        ConferencePolicy {
            max_conferences: 100,
            max_participants: 100,
            creators: Creators::AnyLocalUser,
        }
    }
}

impl ConferencePolicy {
    /// May `aor` (a local user or not) create a conference while `active` ones run?
    pub fn may_create(&self, aor: &str, is_local_user: bool, active: usize) -> Decision {
        let permitted = match &self.creators {
            Creators::AnyLocalUser => is_local_user,
            Creators::Listed(list) => list.iter().any(|a| same_aor(a, aor)),
            Creators::Nobody => false,
        };
        if !permitted {
            Decision::NotAllowedToCreate
        } else if active >= self.max_conferences {
            Decision::TooManyConferences
        } else {
            Decision::Allow
        }
    }

    /// May `aor` join the conference of `roster` under `rule`?
    pub fn may_join(&self, roster: &Roster, rule: &JoinRule, aor: &str) -> Decision {
        if let JoinRule::Listed(list) = rule {
            if !list.iter().any(|a| same_aor(a, aor)) {
                return Decision::NotInvited;
            }
        }
        let own = roster.max_participants().map_or(usize::MAX, |m| m as usize);
        if roster.len() >= self.max_participants.min(own) {
            Decision::TooManyParticipants
        } else {
            Decision::Allow
        }
    }
}

/// Addresses of record compare with the scheme and host case-insensitive; we compare the
/// whole string ignoring ASCII case, which is what configured lists need.
fn same_aor(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::super::{EndpointStatus, JoiningMethod};
    use super::*;

    #[test]
    fn creation_needs_permission_then_capacity() {
        let p = ConferencePolicy {
            max_conferences: 2,
            ..ConferencePolicy::default()
        };
        assert_eq!(p.may_create("sip:a@x", true, 0), Decision::Allow);
        assert_eq!(
            p.may_create("sip:a@x", false, 0),
            Decision::NotAllowedToCreate
        );
        assert_eq!(
            p.may_create("sip:a@x", true, 2),
            Decision::TooManyConferences
        );
        let listed = ConferencePolicy {
            creators: Creators::Listed(vec!["sip:Boss@x".into()]),
            ..p.clone()
        };
        assert!(listed.may_create("sip:boss@x", false, 0).is_allowed());
        assert_eq!(
            listed.may_create("sip:a@x", true, 0),
            Decision::NotAllowedToCreate
        );
        let none = ConferencePolicy {
            creators: Creators::Nobody,
            ..p
        };
        assert_eq!(
            none.may_create("sip:a@x", true, 0).sip_status(),
            Some((403, "Not Allowed To Create Conferences"))
        );
    }

    #[test]
    fn joining_checks_list_and_both_limits() {
        let p = ConferencePolicy {
            max_participants: 2,
            ..ConferencePolicy::default()
        };
        let mut r = Roster::new("sip:c@x");
        let rule = JoinRule::Listed(vec!["sip:a@x".into(), "sip:b@x".into(), "sip:c@x".into()]);
        assert_eq!(p.may_join(&r, &rule, "sip:z@x"), Decision::NotInvited);
        assert_eq!(p.may_join(&r, &rule, "sip:a@x"), Decision::Allow);
        for u in ["sip:a@x", "sip:b@x"] {
            r.join(
                u,
                None,
                None,
                JoiningMethod::DialedOut,
                EndpointStatus::Connected,
            )
            .unwrap();
        }
        assert_eq!(
            p.may_join(&r, &rule, "sip:c@x"),
            Decision::TooManyParticipants
        );
        r.set_max_participants(Some(1));
        let big = ConferencePolicy::default();
        assert_eq!(
            big.may_join(&r, &JoinRule::Anyone, "sip:q@x").sip_status(),
            Some((486, "Conference Full"))
        );
    }
}
