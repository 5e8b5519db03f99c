//! Conferences in cpmd (CPM.md §5 fig. 8-11, issue 6, decision 0014): one
//! [`ConferenceActor`] per conference, on the worker that owns the conference's name, with
//! its participants' media mixed in that worker's media loop.
//!
//! ```text
//!  INVITE sip:conf-factory@dom ─ Router: owner(Call-ID) ─► Worker j ─ creates conf-<id>
//!                                                          (an id that hashes to j)
//!  anything to sip:conf-<id>@dom ─ Router: owner(conf-<id>) = j ─► Worker j ─ ConferenceTable
//!  responses to the focus's requests ─ Router: Via branch z9hG4bKcf<j>. ─► Worker j ─┘
//!                                                                             │ ToConference
//!                                                                             ▼
//!  ConferenceActor (actix, worker j's thread): participants' dialogs (UAS dial-in, UAC dial-out
//!  by REFER or predefined start), RFC 4575 subscriptions, policy, roster ─► FromConference
//!  (respond / send request / ACK / ended) ─► Worker j's transaction layer
//!        │ RoomHandle (commands: add, remove, mute)        ▲ RoomEvent (active speaker)
//!        ▼                                                 │
//!  media loop j: one socket per participant, RTP into the room's mixer, 20 ms tick, mix-minus out
//! ```

pub mod actor;
pub mod chat;
pub mod floor;
pub mod focus;
pub mod predefined;
pub mod registry;
pub mod sdp;

use std::collections::HashMap;
use std::net::SocketAddr;

use actix::prelude::*;
use cpm_engine::session::ReqId;
use cpm_engine::sip::transaction::{ClientTxId, ServerTxId};
use cpm_engine::sip::Message;

pub use actor::{ConfEnv, ConferenceActor};
pub use registry::Registry;

/// A worker-local name of a conference actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfKey(pub u64);

/// What the worker hands a conference.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum ToConference {
    /// A request to the focus (a new server transaction).
    Request {
        /// Its server transaction.
        tx: ServerTxId,
        /// The request.
        request: Message,
        /// Where it came from.
        source: SocketAddr,
        /// Over a reliable transport.
        reliable: bool,
    },
    /// The ACK of a 2xx (no transaction, RFC 3261 §17).
    Ack(Message),
    /// A response to a request the focus sent (also the 408/503 the layer synthesizes).
    Response {
        /// The focus's name for the request.
        id: ReqId,
        /// The response.
        response: Message,
    },
}

/// What a conference asks its worker to do, in order.
#[derive(Debug)]
pub enum ConfAction {
    /// Send `response` on server transaction `tx`.
    Respond {
        /// The server transaction.
        tx: ServerTxId,
        /// The response.
        response: Message,
    },
    /// Start a client transaction; its responses come back as [`ToConference::Response`].
    SendRequest {
        /// The conference's name for it.
        id: ReqId,
        /// Where to send it.
        dest: SocketAddr,
        /// Over a reliable transport.
        reliable: bool,
        /// The request (its top Via carries a [`focus::branch`]).
        request: Message,
    },
    /// Send the ACK of a 2xx outside any transaction.
    SendAck {
        /// Where to send it.
        dest: SocketAddr,
        /// Over a reliable transport.
        reliable: bool,
        /// The ACK.
        ack: Message,
    },
    /// The conference is over: forget its routes.
    Ended,
}

/// A batch of a conference's actions for its worker.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FromConference {
    /// Whose.
    pub key: ConfKey,
    /// What, in order.
    pub actions: Vec<ConfAction>,
}

/// Starts a predefined conference on the worker that owns its name (from the HTTP API); the
/// answer is its focus URI, or why not.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, String>")]
pub struct StartConference {
    /// The predefined conference's name.
    pub name: String,
}

/// Ends a conference: BYE to every participant (from the HTTP API).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EndConference;

/// Mutes or unmutes a participant (from the HTTP API); `false` when there is no such
/// participant.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct MuteParticipant {
    /// The participant's id.
    pub id: u32,
    /// Muted or not.
    pub muted: bool,
}

/// The worker's routing of SIP traffic to its conferences: requests by conference name,
/// responses by client transaction.
#[derive(Default)]
pub struct ConferenceTable {
    next: u64,
    actors: HashMap<ConfKey, (String, Addr<ConferenceActor>)>,
    by_name: HashMap<String, ConfKey>,
    client: HashMap<ClientTxId, (ConfKey, ReqId)>,
}

impl ConferenceTable {
    /// A fresh key.
    pub fn next_key(&mut self) -> ConfKey {
        self.next += 1;
        ConfKey(self.next)
    }

    /// Registers a started conference.
    pub fn insert(&mut self, key: ConfKey, name: String, actor: Addr<ConferenceActor>) {
        self.by_name.insert(name.clone(), key);
        self.actors.insert(key, (name, actor));
    }

    /// The conference named `name` (the focus URI's user part).
    pub fn by_name(&self, name: &[u8]) -> Option<&Addr<ConferenceActor>> {
        let name = std::str::from_utf8(name).ok()?;
        self.actors.get(self.by_name.get(name)?).map(|(_, a)| a)
    }

    /// Every conference's actor.
    pub fn actors(&self) -> impl Iterator<Item = &Addr<ConferenceActor>> {
        self.actors.values().map(|(_, a)| a)
    }

    /// A conference's actor.
    pub fn actor(&self, key: ConfKey) -> Option<&Addr<ConferenceActor>> {
        self.actors.get(&key).map(|(_, a)| a)
    }

    /// The conference and request name of a client transaction.
    pub fn by_client(&self, tx: ClientTxId) -> Option<(&Addr<ConferenceActor>, ReqId)> {
        let (key, id) = self.client.get(&tx)?;
        Some((self.actor(*key)?, *id))
    }

    /// Records the client transaction started for a conference's request.
    pub fn started(&mut self, key: ConfKey, id: ReqId, tx: ClientTxId) {
        self.client.insert(tx, (key, id));
    }

    /// The client transaction of a conference's request (for a CANCEL).
    pub fn client_of(&self, key: ConfKey, id: ReqId) -> Option<ClientTxId> {
        self.client
            .iter()
            .find(|(_, v)| **v == (key, id))
            .map(|(t, _)| *t)
    }

    /// A client transaction is over.
    pub fn tx_ended(&mut self, tx: ClientTxId) {
        self.client.remove(&tx);
    }

    /// Forgets a conference that ended.
    pub fn remove(&mut self, key: ConfKey) {
        if let Some((name, _)) = self.actors.remove(&key) {
            if self.by_name.get(&name) == Some(&key) {
                self.by_name.remove(&name);
            }
        }
        self.client.retain(|_, (k, _)| *k != key);
    }

    /// Conferences alive on this worker.
    pub fn len(&self) -> usize {
        self.actors.len()
    }

    /// No conference is alive here.
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }

    /// Forgets everything (a worker restart).
    pub fn clear(&mut self) {
        *self = ConferenceTable {
            next: self.next,
            ..ConferenceTable::default()
        };
    }
}
