//! The conference roster (RFC 4575 §5, RFC 4579 §5): who is in a conference, how they joined,
//! the state of their endpoint and media, and the `conference-info` documents a subscriber to
//! the conference event package receives.
//!
//! Every operation on a [`Roster`] returns a [`ChangeSet`]; the conference actor renders it for
//! each subscriber with [`Roster::render_partial`] (the first document a subscriber gets is
//! full, RFC 4575 §4.6). [`ConferenceInfo::parse`] reads such documents back (tests and the load
//! generator read NOTIFY bodies with it) and [`ConferenceInfo::apply`] folds partial ones in.
//! [`ConferencePolicy`] is the conference control policy of CPM.md §5.

mod policy;
mod xml;

use std::fmt;

pub use policy::{ConferencePolicy, Creators, Decision, JoinRule};
pub use xml::{
    ConferenceInfo, ConferenceInfoError, DocState, EndpointInfo, MediaInfo, SubscriberView,
    UserInfo, CONFERENCE_INFO_CONTENT_TYPE, CONFERENCE_INFO_NS,
};

/// A participant of one conference, shared by the roster, the audio mixer, floor control and
/// video switching. Allocated by [`Roster::join`], never reused within a conference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ParticipantId(pub u32);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// Defines an enum of RFC 4575 tokens with `as_str` and `parse`.
macro_rules! token_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $v,)+
        }

        impl $name {
            /// The token as written in `conference-info+xml`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }

            /// Reads the token (surrounding white space ignored); `None` if unknown.
            pub fn parse(s: &str) -> Option<$name> {
                match s.trim() {
                    $($s => Some($name::$v),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

token_enum! {
    /// The status of an endpoint in the conference (RFC 4575 §5.7.1 `<status>`).
    EndpointStatus {
        /// Not yet dialed out nor dialed in.
        Pending = "pending",
        /// The focus is dialing out to the endpoint (INVITE sent).
        DialingOut = "dialing-out",
        /// The endpoint is dialing in (INVITE received, not answered yet).
        DialingIn = "dialing-in",
        /// The endpoint is ringing (180 received).
        Alerting = "alerting",
        /// The endpoint put the conference on hold.
        OnHold = "on-hold",
        /// In the conference.
        Connected = "connected",
        /// Connected, but the focus mutes its media.
        MutedViaFocus = "muted-via-focus",
        /// Leaving (BYE sent or received, not completed).
        Disconnecting = "disconnecting",
        /// Left the conference.
        Disconnected = "disconnected",
    }
}

token_enum! {
    /// How an endpoint joined (RFC 4575 §5.7.3 `<joining-method>`).
    JoiningMethod {
        /// The endpoint sent the INVITE.
        DialedIn = "dialed-in",
        /// The focus invited the endpoint (predefined conference, REFER dial-out).
        DialedOut = "dialed-out",
        /// The endpoint created the conference (INVITE to the factory URI, RFC 4579 §5.1).
        FocusOwner = "focus-owner",
    }
}

token_enum! {
    /// How an endpoint left (RFC 4575 §5.7.5 `<disconnection-method>`).
    DisconnectionMethod {
        /// It hung up.
        Departed = "departed",
        /// It was removed by the focus or a moderator.
        Booted = "booted",
        /// The dial-out or the session failed.
        Failed = "failed",
        /// It answered busy.
        Busy = "busy",
    }
}

token_enum! {
    /// The kind of a media stream (RFC 4575 §5.7.7 `<type>`, values of SDP `m=`).
    MediaKind {
        /// `m=audio`.
        Audio = "audio",
        /// `m=video`.
        Video = "video",
        /// Group chat over MSRP (`m=message`).
        Chat = "message",
        /// Real-time text (`m=text`).
        Text = "text",
        /// `m=application`, e.g. the BFCP stream.
        Application = "application",
    }
}

token_enum! {
    /// The direction of a media stream as the focus sees it (RFC 4575 §5.7.7 `<status>`).
    MediaStatus {
        /// Both ways.
        SendRecv = "sendrecv",
        /// The focus only sends to the endpoint.
        SendOnly = "sendonly",
        /// The focus only receives from the endpoint.
        RecvOnly = "recvonly",
        /// Neither way.
        Inactive = "inactive",
    }
}

/// One media stream of an endpoint (RFC 4575 §5.7.7 `<media>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// The `id` attribute, unique within the endpoint.
    pub id: u32,
    /// The stream's kind.
    pub kind: MediaKind,
    /// The SDP `a=label` of the stream the focus offers, if any.
    pub label: Option<String>,
    /// The SSRC the focus receives from the endpoint (`<src-id>`), if known.
    pub src_id: Option<u32>,
    /// The stream's direction.
    pub status: MediaStatus,
}

/// A participant: one endpoint of one user (RFC 4575 §5.6 `<user>`, §5.7 `<endpoint>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// The id shared with the mixer, floor control and video switching.
    pub id: ParticipantId,
    /// The user's address of record (the `<user entity>`).
    pub uri: String,
    /// The endpoint's URI (the `<endpoint entity>`; the Contact, or the AOR again).
    pub endpoint: String,
    /// The display name from the From/To header, if any.
    pub display_name: Option<String>,
    /// The endpoint's status.
    pub status: EndpointStatus,
    /// How it joined.
    pub joining: JoiningMethod,
    /// Its media streams.
    pub media: Vec<Media>,
    /// Whether the focus mutes its audio (shown as `muted-via-focus` while connected).
    pub muted: bool,
}

impl Participant {
    /// The status shown in `conference-info`: `muted-via-focus` replaces `connected` while
    /// muted (RFC 4575 §5.7.1).
    pub fn shown_status(&self) -> EndpointStatus {
        match self.status {
            EndpointStatus::Connected if self.muted => EndpointStatus::MutedViaFocus,
            s => s,
        }
    }
}

/// What an operation changed, to render into a partial notification (RFC 4575 §4.6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// The conference description (subject, maximum user count) changed.
    pub description: bool,
    /// The conference state (user count, active, locked) changed.
    pub state: bool,
    /// Participants added or updated, in order of change.
    pub updated: Vec<ParticipantId>,
    /// Participants removed: id, user URI and endpoint URI.
    pub removed: Vec<(ParticipantId, String, String)>,
}

impl ChangeSet {
    /// Whether nothing changed (no notification is due).
    pub fn is_empty(&self) -> bool {
        !self.description && !self.state && self.updated.is_empty() && self.removed.is_empty()
    }

    /// Adds `other`'s changes (for a notification that covers several operations).
    pub fn merge(&mut self, other: ChangeSet) {
        self.description |= other.description;
        self.state |= other.state;
        for id in other.updated {
            self.touch(id);
        }
        for r in other.removed {
            self.updated.retain(|u| *u != r.0);
            self.removed.push(r);
        }
    }

    fn touch(&mut self, id: ParticipantId) {
        if !self.updated.contains(&id) {
            self.updated.push(id);
        }
    }
}

/// Why a roster operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RosterError {
    /// The conference holds its maximum number of participants.
    Full,
    /// No such participant.
    UnknownParticipant,
    /// The endpoint URI is already in the conference.
    AlreadyJoined,
}

impl RosterError {
    /// A reason phrase.
    pub fn reason(&self) -> &'static str {
        match self {
            RosterError::Full => "conference full",
            RosterError::UnknownParticipant => "no such participant",
            RosterError::AlreadyJoined => "endpoint already in the conference",
        }
    }
}

impl fmt::Display for RosterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for RosterError {}

/// A conference's participants and description (RFC 4575 §5): the state behind its
/// `conference-info` documents. Participants are kept in joining order.
#[derive(Debug, Clone)]
pub struct Roster {
    entity: String,
    subject: Option<String>,
    max_participants: Option<u32>,
    locked: bool,
    participants: Vec<Participant>,
    next_id: u32,
    floor_holder: Option<ParticipantId>,
}

impl Roster {
    /// An empty roster for the conference whose focus URI is `entity` (RFC 4579 §3).
    pub fn new(entity: impl Into<String>) -> Roster {
        Roster {
            entity: entity.into(),
            subject: None,
            max_participants: None,
            locked: false,
            participants: Vec::new(),
            next_id: 1,
            floor_holder: None,
        }
    }

    /// The conference (focus) URI, the `entity` of its documents.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The Contact a focus answers with: its URI with the `isfocus` feature tag (RFC 4579 §5).
    pub fn focus_contact(&self) -> String {
        format!("<{}>;isfocus", self.entity)
    }

    /// The subject, if set.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// Sets the subject (`<conference-description><subject>`).
    pub fn set_subject(&mut self, subject: Option<String>) -> ChangeSet {
        let mut c = ChangeSet::default();
        if self.subject != subject {
            self.subject = subject;
            c.description = true;
        }
        c
    }

    /// The maximum number of participants, if limited.
    pub fn max_participants(&self) -> Option<u32> {
        self.max_participants
    }

    /// Limits the number of participants (`<maximum-user-count>`); present ones stay.
    pub fn set_max_participants(&mut self, max: Option<u32>) -> ChangeSet {
        let mut c = ChangeSet::default();
        if self.max_participants != max {
            self.max_participants = max;
            c.description = true;
        }
        c
    }

    /// Whether the conference is locked (`<conference-state><locked>`).
    pub fn locked(&self) -> bool {
        self.locked
    }

    /// Locks or unlocks the conference.
    pub fn set_locked(&mut self, locked: bool) -> ChangeSet {
        let mut c = ChangeSet::default();
        if self.locked != locked {
            self.locked = locked;
            c.state = true;
        }
        c
    }

    /// Adds a participant with no media yet; its id is new within this conference.
    pub fn join(
        &mut self,
        uri: impl Into<String>,
        endpoint: Option<String>,
        display_name: Option<String>,
        joining: JoiningMethod,
        status: EndpointStatus,
    ) -> Result<(ParticipantId, ChangeSet), RosterError> {
        if let Some(max) = self.max_participants {
            if self.participants.len() >= max as usize {
                return Err(RosterError::Full);
            }
        }
        let uri = uri.into();
        let endpoint = endpoint.unwrap_or_else(|| uri.clone());
        if self.participants.iter().any(|p| p.endpoint == endpoint) {
            return Err(RosterError::AlreadyJoined);
        }
        let id = ParticipantId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.participants.push(Participant {
            id,
            uri,
            endpoint,
            display_name,
            status,
            joining,
            media: Vec::new(),
            muted: false,
        });
        let mut c = ChangeSet {
            state: true,
            ..ChangeSet::default()
        };
        c.touch(id);
        Ok((id, c))
    }

    /// Sets a participant's endpoint status.
    pub fn set_status(
        &mut self,
        id: ParticipantId,
        status: EndpointStatus,
    ) -> Result<ChangeSet, RosterError> {
        self.update(id, |p| std::mem::replace(&mut p.status, status) != status)
    }

    /// Mutes or unmutes a participant's audio at the focus.
    pub fn set_muted(&mut self, id: ParticipantId, muted: bool) -> Result<ChangeSet, RosterError> {
        self.update(id, |p| std::mem::replace(&mut p.muted, muted) != muted)
    }

    /// Adds or replaces (same `id`) one media stream of a participant.
    pub fn set_media(&mut self, id: ParticipantId, media: Media) -> Result<ChangeSet, RosterError> {
        self.update(id, |p| {
            match p.media.iter_mut().find(|m| m.id == media.id) {
                Some(m) if *m == media => false,
                Some(m) => {
                    *m = media;
                    true
                }
                None => {
                    p.media.push(media);
                    true
                }
            }
        })
    }

    /// Removes a participant (it left or was removed). `conference-info` shows it deleted.
    pub fn leave(&mut self, id: ParticipantId) -> Result<ChangeSet, RosterError> {
        let i = self
            .participants
            .iter()
            .position(|p| p.id == id)
            .ok_or(RosterError::UnknownParticipant)?;
        let p = self.participants.remove(i);
        if self.floor_holder == Some(id) {
            self.floor_holder = None;
        }
        Ok(ChangeSet {
            state: true,
            removed: vec![(id, p.uri, p.endpoint)],
            ..ChangeSet::default()
        })
    }

    /// Who holds the floor in a half-duplex conference (kept for the HTTP API; RFC 4575 has no
    /// floor element, so no document changes).
    pub fn floor_holder(&self) -> Option<ParticipantId> {
        self.floor_holder
    }

    /// Records the floor holder (from [`crate::conference::floor::FloorControl`] events).
    pub fn set_floor_holder(&mut self, holder: Option<ParticipantId>) {
        self.floor_holder = holder;
    }

    /// A participant.
    pub fn get(&self, id: ParticipantId) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }

    /// The participant at an endpoint URI.
    pub fn by_endpoint(&self, endpoint: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.endpoint == endpoint)
    }

    /// The participants in joining order.
    pub fn iter(&self) -> impl Iterator<Item = &Participant> {
        self.participants.iter()
    }

    /// The number of participants.
    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// Whether nobody is in the conference (an ad-hoc conference then ends, RFC 4579 §5.4).
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    fn update(
        &mut self,
        id: ParticipantId,
        f: impl FnOnce(&mut Participant) -> bool,
    ) -> Result<ChangeSet, RosterError> {
        let p = self
            .participants
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or(RosterError::UnknownParticipant)?;
        let mut c = ChangeSet::default();
        if f(p) {
            c.touch(id);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(r: &mut Roster, uri: &str) -> ParticipantId {
        r.join(
            uri,
            None,
            None,
            JoiningMethod::DialedIn,
            EndpointStatus::Connected,
        )
        .unwrap()
        .0
    }

    #[test]
    fn ids_are_new_and_operations_report_changes() {
        let mut r = Roster::new("sip:conf1@example.com");
        let a = join(&mut r, "sip:a@example.com");
        let b = join(&mut r, "sip:b@example.com");
        assert_ne!(a, b);
        assert_eq!(r.len(), 2);
        let c = r.set_muted(a, true).unwrap();
        assert_eq!(c.updated, vec![a]);
        assert_eq!(
            r.get(a).unwrap().shown_status(),
            EndpointStatus::MutedViaFocus
        );
        // Setting the same value again changes nothing.
        assert!(r.set_muted(a, true).unwrap().is_empty());
        let c = r.leave(a).unwrap();
        assert!(c.state);
        assert_eq!(c.removed[0].0, a);
        assert_eq!(r.leave(a), Err(RosterError::UnknownParticipant));
        let again = join(&mut r, "sip:a@example.com");
        assert!(again.0 > b.0, "ids are not reused");
    }

    #[test]
    fn max_participants_and_duplicates_are_refused() {
        let mut r = Roster::new("sip:c@example.com");
        r.set_max_participants(Some(1));
        join(&mut r, "sip:a@example.com");
        let e = r.join(
            "sip:b@example.com",
            None,
            None,
            JoiningMethod::DialedIn,
            EndpointStatus::Connected,
        );
        assert_eq!(e.unwrap_err(), RosterError::Full);
        r.set_max_participants(None);
        let e = r.join(
            "sip:a@example.com",
            None,
            None,
            JoiningMethod::DialedIn,
            EndpointStatus::Connected,
        );
        assert_eq!(e.unwrap_err(), RosterError::AlreadyJoined);
    }

    #[test]
    fn merge_drops_updates_of_removed_participants() {
        let mut r = Roster::new("sip:c@example.com");
        let (a, mut c) = r
            .join(
                "sip:a@x",
                None,
                None,
                JoiningMethod::DialedOut,
                EndpointStatus::DialingOut,
            )
            .unwrap();
        c.merge(r.set_status(a, EndpointStatus::Alerting).unwrap());
        assert_eq!(c.updated, vec![a]);
        c.merge(r.leave(a).unwrap());
        assert!(c.updated.is_empty());
        assert_eq!(c.removed.len(), 1);
    }

    #[test]
    fn focus_contact_carries_isfocus() {
        assert_eq!(
            Roster::new("sip:conf7@example.com").focus_contact(),
            "<sip:conf7@example.com>;isfocus"
        );
    }

    #[test]
    fn tokens_round_trip() {
        for s in [
            "pending",
            "dialing-out",
            "dialing-in",
            "alerting",
            "on-hold",
            "connected",
            "muted-via-focus",
            "disconnecting",
            "disconnected",
        ] {
            assert_eq!(EndpointStatus::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(MediaKind::parse(" message "), Some(MediaKind::Chat));
        assert_eq!(
            JoiningMethod::parse("focus-owner"),
            Some(JoiningMethod::FocusOwner)
        );
        assert_eq!(MediaStatus::parse("bogus"), None);
    }
}
