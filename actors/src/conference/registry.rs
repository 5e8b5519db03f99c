//! The process-wide view of conferences (in [`crate::shared::Shared`]): the predefined ones,
//! the running ones (their actors' addresses and a summary the HTTP API lists), the
//! `--conference-max` limit, and each worker's door for starting a predefined conference.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use parking_lot::Mutex;

use super::actor::ConferenceActor;
use super::focus::FocusNames;
use super::predefined::Predefined;
use super::StartConference;
use crate::config::Config;

/// What the API lists of one participant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParticipantSummary {
    /// Its id in the conference.
    pub id: u32,
    /// Its AOR.
    pub uri: String,
    /// Whether it is muted.
    pub muted: bool,
    /// `connected`, `dialing-out`, ...
    pub status: &'static str,
}

/// What the API lists of one running conference (kept up to date by its actor).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Its name (the focus URI's user part; the API's conference id).
    pub id: String,
    /// Its focus URI.
    pub focus: String,
    /// Whether it is a predefined conference.
    pub predefined: bool,
    /// The participant heard loudest, if anyone talks.
    pub active_speaker: Option<u32>,
    /// Its participants.
    pub participants: Vec<ParticipantSummary>,
}

/// A running conference.
#[derive(Clone)]
pub struct Running {
    /// Its actor.
    pub addr: Addr<ConferenceActor>,
    /// Its summary.
    pub summary: Arc<Mutex<Summary>>,
}

/// Why a conference could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `--conference-max` conferences run already.
    TooMany,
    /// A conference of that name runs already.
    Running,
}

/// See the module documentation.
pub struct Registry {
    names: FocusNames,
    factory: String,
    predefined: HashMap<String, Predefined>,
    max: usize,
    running: Mutex<HashMap<String, Running>>,
    workers: Mutex<Vec<Option<Recipient<StartConference>>>>,
}

impl Registry {
    /// The registry of a configuration; reads `--conferences-file`.
    pub fn new(config: &Config, workers: usize) -> Result<Registry, String> {
        let predefined = match &config.conferences_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("conferences file {}: {e}", path.display()))?;
                Predefined::parse(&text)
                    .map_err(|e| format!("conferences file {}: {e}", path.display()))?
            }
            None => Vec::new(),
        };
        let factory = config.conference_factory();
        let factory_user = super::focus::uri_user(factory.as_bytes())
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .ok_or_else(|| format!("conference factory {factory:?}: not a sip: URI with a user"))?;
        let names = FocusNames {
            factory: factory_user,
            predefined: predefined.iter().map(|p| p.name.clone()).collect(),
        };
        Ok(Registry {
            names,
            factory,
            predefined: predefined
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
            max: config.conference_max,
            running: Mutex::new(HashMap::new()),
            workers: Mutex::new(vec![None; workers]),
        })
    }

    /// The names the router recognises.
    pub fn names(&self) -> &FocusNames {
        &self.names
    }

    /// The factory URI.
    pub fn factory(&self) -> &str {
        &self.factory
    }

    /// A predefined conference by name.
    pub fn predefined(&self, name: &str) -> Option<&Predefined> {
        self.predefined.get(name)
    }

    /// Registers a conference that starts now, unless `--conference-max` run already.
    pub fn register(&self, name: &str, running: Running) -> Result<(), Refused> {
        let mut r = self.running.lock();
        if r.contains_key(name) {
            return Err(Refused::Running);
        }
        if r.len() >= self.max {
            return Err(Refused::TooMany);
        }
        r.insert(name.to_string(), running);
        Ok(())
    }

    /// Forgets a conference that ended.
    pub fn remove(&self, name: &str) {
        self.running.lock().remove(name);
    }

    /// A running conference.
    pub fn get(&self, name: &str) -> Option<Running> {
        self.running.lock().get(name).cloned()
    }

    /// Every running conference's summary, by name.
    pub fn list(&self) -> Vec<Summary> {
        let mut v: Vec<Summary> = self
            .running
            .lock()
            .values()
            .map(|r| r.summary.lock().clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Conferences running, and their participants.
    pub fn counts(&self) -> (usize, usize) {
        let r = self.running.lock();
        let participants = r
            .values()
            .map(|c| c.summary.lock().participants.len())
            .sum();
        (r.len(), participants)
    }

    /// Sets worker `k`'s door (when it starts).
    pub fn set_worker(&self, k: usize, door: Recipient<StartConference>) {
        if let Some(slot) = self.workers.lock().get_mut(k) {
            *slot = Some(door);
        }
    }

    /// The door of the worker owning conference `name`.
    pub fn worker_for(&self, name: &str) -> Option<Recipient<StartConference>> {
        let w = self.workers.lock();
        let k = super::focus::owner(name.as_bytes(), w.len());
        w.get(k).cloned().flatten()
    }
}
