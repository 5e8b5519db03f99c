//! The registrar's binding table (RFC 3261 §10.3), sans-IO.
//!
//! The table maps an address-of-record to its contact bindings. A REGISTER is applied with
//! [`Registrar::apply`] (all of its updates commit together or none does), the location service
//! reads [`Registrar::lookup`], and the driver calls [`Registrar::expire`] when
//! [`Registrar::poll_timeout`] comes due. Time is an input (`now: Instant`); nothing here reads
//! a clock.
//!
//! Authentication, the Request-URI domain check and AOR canonicalisation (§10.3 steps 1–5)
//! happen before `apply`; steps 6–8 happen here.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::sip::hdr::{Contact, HeaderError, Params};
use crate::sip::uri::Uri;
use crate::sip::Message;

/// An address-of-record in its canonical form (RFC 3261 §10.3 step 5: `sip:user@domain`
/// without parameters), the key of the binding table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aor(Bytes);

impl Aor {
    /// Wraps an already canonical AOR.
    pub fn new(canonical: impl Into<Bytes>) -> Aor {
        Aor(canonical.into())
    }

    /// The canonical AOR of a URI (the To URI of a REGISTER), per [`Uri::aor`].
    pub fn from_uri(uri: &Uri) -> Option<Aor> {
        uri.aor().map(|a| Aor(Bytes::from(a)))
    }

    /// The AOR's bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Display for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// Registrar policy (RFC 3261 §10.3 step 7, §20.19, §20.23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Shortest interval accepted; shorter non-zero requests get 423 with this Min-Expires.
    pub min_expires: u32,
    /// Longest interval granted; longer requests are shortened to it.
    pub max_expires: u32,
    /// The interval when neither the contact nor the request says one.
    pub default_expires: u32,
    /// Most live bindings one AOR may hold; a request that would exceed it is refused whole.
    pub max_contacts_per_aor: usize,
}

impl Default for RegistrarConfig {
    /// 60 s min, 7200 s max, 3600 s default (the RFC 3261 §10.2.1.1 suggestion), 10 contacts.
    fn default() -> RegistrarConfig {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts_per_aor: 10,
        }
    }
}

/// One Contact of a REGISTER, as the caller parsed it (RFC 3261 §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactReq {
    /// The contact URI as the client gave it, without the angle brackets.
    pub uri: Bytes,
    /// The `expires` contact parameter, if any.
    pub expires: Option<u32>,
    /// The `q` parameter in thousandths (0..=1000), if any.
    pub q: Option<u16>,
    /// The `+sip.instance` parameter (RFC 5626 §4.1) without its quotes, if any.
    pub instance: Option<Bytes>,
    /// The `reg-id` parameter (RFC 5626 §4.2), if any.
    pub reg_id: Option<u32>,
    /// The remaining contact parameters (feature tags etc.), kept to be echoed.
    pub params: Params,
}

impl ContactReq {
    /// A contact with just a URI.
    pub fn new(uri: impl Into<Bytes>) -> ContactReq {
        ContactReq {
            uri: uri.into(),
            expires: None,
            q: None,
            instance: None,
            reg_id: None,
            params: Params::default(),
        }
    }
}

/// What a REGISTER asks for, extracted from the message by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// `Contact: *` was present (RFC 3261 §10.2.2: remove all bindings).
    pub wildcard: bool,
    /// The Contact values (empty and no wildcard: a query, §10.2.3).
    pub contacts: Vec<ContactReq>,
    /// The Expires header, if any.
    pub expires: Option<u32>,
    /// The Call-ID.
    pub call_id: Bytes,
    /// The CSeq sequence number.
    pub cseq: u32,
    /// Where the REGISTER came from (for routing to a client behind a NAT).
    pub source: Option<SocketAddr>,
    /// The transport it came over (`UDP`, `TCP`, `TLS`, `WS`, ...), if known.
    pub transport: Option<Bytes>,
}

impl RegisterRequest {
    /// Extracts the request from a REGISTER (Contact, Expires, Call-ID, CSeq; RFC 3261
    /// §10.2). A malformed header is a 400 with [`HeaderError::reason`].
    pub fn from_message(
        msg: &Message,
        source: Option<SocketAddr>,
        transport: Option<Bytes>,
    ) -> Result<RegisterRequest, HeaderError> {
        let call_id = msg
            .call_id()
            .cloned()
            .ok_or(HeaderError::Missing("Call-ID"))?;
        let mut wildcard = false;
        let mut contacts = Vec::new();
        for c in msg.contacts()? {
            let Contact::Addr(addr) = &c else {
                wildcard = true;
                continue;
            };
            let mut params = addr.params.clone();
            for known in ["expires", "q", "+sip.instance", "reg-id"] {
                params.remove(known);
            }
            contacts.push(ContactReq {
                uri: Bytes::from(addr.uri.to_string()),
                expires: c.expires(),
                q: c.q(),
                instance: c.instance(),
                reg_id: c.reg_id(),
                params,
            });
        }
        // A `*` beside other contacts is refused by `Message::contacts` already (400).
        Ok(RegisterRequest {
            wildcard,
            contacts,
            expires: msg.expires()?,
            call_id,
            cseq: msg.cseq()?.seq,
            source,
            transport,
        })
    }
}

/// One binding of an AOR to a contact (RFC 3261 §10.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI as the client gave it.
    pub contact: Bytes,
    /// When the binding lapses.
    pub expires_at: Instant,
    /// The q value in thousandths, if the client gave one.
    pub q: Option<u16>,
    /// `+sip.instance` without its quotes, if any.
    pub instance: Option<Bytes>,
    /// `reg-id`, if any.
    pub reg_id: Option<u32>,
    /// Other contact parameters, echoed in the 200 OK.
    pub params: Params,
    /// The Call-ID of the REGISTER that last wrote it.
    pub call_id: Bytes,
    /// The CSeq of the REGISTER that last wrote it.
    pub cseq: u32,
    /// The source address it registered from.
    pub source: Option<SocketAddr>,
    /// The transport it registered over.
    pub transport: Option<Bytes>,
    id: u64,
}

impl Binding {
    /// Whole seconds left (rounded up), 0 once expired: the `expires` of the 200 OK.
    pub fn expires_in(&self, now: Instant) -> u32 {
        let left = self.expires_at.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// The q value used for ordering: absent counts as 1.0.
    pub fn q_or_default(&self) -> u16 {
        self.q.unwrap_or(1000)
    }

    /// The Contact value for the 200 OK: `<uri>;q=..;params;expires=N` (RFC 3261 §10.3 step 8).
    pub fn contact_value(&self, now: Instant) -> String {
        let mut s = format!("<{}>", String::from_utf8_lossy(&self.contact));
        if let Some(q) = self.q {
            s.push_str(";q=");
            s.push_str(&format_q(q));
        }
        if let Some(i) = &self.instance {
            s.push_str(";+sip.instance=\"");
            s.push_str(&String::from_utf8_lossy(i));
            s.push('"');
        }
        if let Some(r) = self.reg_id {
            s.push_str(&format!(";reg-id={r}"));
        }
        self.params.write(&mut s);
        s.push_str(&format!(";expires={}", self.expires_in(now)));
        s
    }

    fn is_live(&self, now: Instant) -> bool {
        self.expires_at > now
    }

    /// RFC 5626 §6: a contact with the same instance and reg-id replaces the binding even if
    /// its URI changed; otherwise bindings match by URI.
    fn matches(&self, c: &ContactReq) -> bool {
        match (&self.instance, self.reg_id, &c.instance, c.reg_id) {
            (Some(a), Some(ra), Some(b), Some(rb)) => a == b && ra == rb,
            _ => same_uri(&self.contact, &c.uri),
        }
    }
}

/// RFC 3261 §19.1.4 equivalence of two contact URIs; byte equality if one does not parse.
fn same_uri(a: &Bytes, b: &Bytes) -> bool {
    match (Uri::parse(a), Uri::parse(b)) {
        (Ok(x), Ok(y)) => x.equivalent(&y),
        _ => a == b,
    }
}

fn format_q(q: u16) -> String {
    if q >= 1000 {
        "1".into()
    } else {
        let s = format!("0.{q:03}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Why a REGISTER was refused; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// `Contact: *` with other contacts or a non-zero Expires (RFC 3261 §10.3 step 6): 400.
    BadWildcard,
    /// An interval shorter than the minimum (§10.3 step 7): 423, with this Min-Expires.
    IntervalTooBrief {
        /// The value of the Min-Expires header to send (§20.23).
        min_expires: u32,
    },
    /// Same Call-ID and a CSeq not higher than the binding's (§10.3 step 7: "the update MUST
    /// be aborted and the request fails"): 500, the status §10.3 gives a failed update.
    OutOfOrder,
    /// More live bindings than `max_contacts_per_aor`: 403 (a policy refusal; 503 would make
    /// clients fail over as if the server were overloaded).
    TooManyContacts {
        /// The limit.
        max: usize,
    },
}

impl RegisterError {
    /// The response status code.
    pub fn status(&self) -> u16 {
        match self {
            RegisterError::BadWildcard => 400,
            RegisterError::IntervalTooBrief { .. } => 423,
            RegisterError::OutOfOrder => 500,
            RegisterError::TooManyContacts { .. } => 403,
        }
    }

    /// The reason phrase.
    pub fn reason(&self) -> &'static str {
        match self {
            RegisterError::BadWildcard => "Invalid Wildcard Contact",
            RegisterError::IntervalTooBrief { .. } => "Interval Too Brief",
            RegisterError::OutOfOrder => "Out Of Order Request",
            RegisterError::TooManyContacts { .. } => "Too Many Contacts",
        }
    }

    /// The Min-Expires value a 423 must carry.
    pub fn min_expires(&self) -> Option<u32> {
        match self {
            RegisterError::IntervalTooBrief { min_expires } => Some(*min_expires),
            _ => None,
        }
    }
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for RegisterError {}

/// The binding table with its expiry index.
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    table: HashMap<Aor, Vec<Binding>>,
    /// (expiry, binding id) -> AOR: the next deadline is the first key.
    timers: BTreeMap<(Instant, u64), Aor>,
    next_id: u64,
}

impl Registrar {
    /// An empty registrar.
    pub fn new(config: RegistrarConfig) -> Registrar {
        Registrar {
            config,
            table: HashMap::new(),
            timers: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// The policy in force.
    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// Applies a REGISTER to `aor` (RFC 3261 §10.3 steps 6–7) and returns the AOR's bindings
    /// afterwards, for the 200 OK (step 8). On error nothing changed.
    pub fn apply(
        &mut self,
        aor: &Aor,
        req: &RegisterRequest,
        now: Instant,
    ) -> Result<Vec<Binding>, RegisterError> {
        let cfg = &self.config;
        if req.wildcard && (!req.contacts.is_empty() || req.expires != Some(0)) {
            return Err(RegisterError::BadWildcard);
        }
        // Step 7: the interval of each contact; refuse brief ones before touching anything.
        let mut intervals = Vec::with_capacity(req.contacts.len());
        for c in &req.contacts {
            let asked = c.expires.or(req.expires).unwrap_or(cfg.default_expires);
            if asked != 0 && asked < cfg.min_expires {
                return Err(RegisterError::IntervalTooBrief {
                    min_expires: cfg.min_expires,
                });
            }
            intervals.push(asked.min(cfg.max_expires));
        }

        // Tentative state, one slot per binding: the live ones, then those this request adds.
        // A slot keeps its binding's latest data even when removed, so a repeated contact in
        // the same request matches it again.
        struct Slot {
            b: Binding,
            keep: bool,
            touched: bool,
        }
        let mut slots: Vec<Slot> = self
            .table
            .get(aor)
            .into_iter()
            .flatten()
            .filter(|b| b.is_live(now))
            .map(|b| Slot {
                b: b.clone(),
                keep: true,
                touched: false,
            })
            .collect();
        let live_before = slots.len();
        // Step 7: same Call-ID and a CSeq not higher aborts the whole request.
        let in_order = |b: &Binding| b.call_id != req.call_id || req.cseq > b.cseq;

        if req.wildcard {
            for s in &mut slots {
                if !in_order(&s.b) {
                    return Err(RegisterError::OutOfOrder);
                }
                s.keep = false;
                s.touched = true;
            }
        }
        for (c, &secs) in req.contacts.iter().zip(&intervals) {
            let found = slots.iter().position(|s| s.b.matches(c));
            let id = match found {
                Some(i) if !slots[i].touched && !in_order(&slots[i].b) => {
                    return Err(RegisterError::OutOfOrder)
                }
                Some(i) => slots[i].b.id,
                None => {
                    self.next_id += 1;
                    self.next_id
                }
            };
            let slot = Slot {
                b: Binding {
                    contact: c.uri.clone(),
                    expires_at: now + Duration::from_secs(u64::from(secs)),
                    q: c.q,
                    instance: c.instance.clone(),
                    reg_id: c.reg_id,
                    params: c.params.clone(),
                    call_id: req.call_id.clone(),
                    cseq: req.cseq,
                    source: req.source,
                    transport: req.transport.clone(),
                    id,
                },
                keep: secs > 0,
                touched: true,
            };
            match found {
                Some(i) => slots[i] = slot,
                None => slots.push(slot),
            }
        }
        let mut next: Vec<Binding> = slots.into_iter().filter(|s| s.keep).map(|s| s.b).collect();
        if next.len() > live_before && next.len() > self.config.max_contacts_per_aor {
            return Err(RegisterError::TooManyContacts {
                max: self.config.max_contacts_per_aor,
            });
        }

        // Commit: drop the AOR's old timers, set the new ones. Bindings that lapsed before
        // `expire` ran go silently here.
        if let Some(prev) = self.table.remove(aor) {
            for b in prev {
                self.timers.remove(&(b.expires_at, b.id));
            }
        }
        sort_by_q(&mut next);
        for b in &next {
            self.timers.insert((b.expires_at, b.id), aor.clone());
        }
        if !next.is_empty() {
            self.table.insert(aor.clone(), next.clone());
        }
        Ok(next)
    }

    /// The live bindings of an AOR, highest q first (RFC 3261 §10.2.1.2, §16.6).
    pub fn lookup(&self, aor: &Aor, now: Instant) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .table
            .get(aor)
            .map(|v| v.iter().filter(|b| b.is_live(now)).cloned().collect())
            .unwrap_or_default();
        sort_by_q(&mut v);
        v
    }

    /// Removes every binding whose time is up and returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<(Aor, Binding)> {
        let mut out = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, id), aor) = entry.remove_entry();
            if let Some(list) = self.table.get_mut(&aor) {
                if let Some(pos) = list.iter().position(|b| b.id == id) {
                    out.push((aor.clone(), list.remove(pos)));
                }
                if list.is_empty() {
                    self.table.remove(&aor);
                }
            }
        }
        out
    }

    /// When [`Registrar::expire`] next has work: the earliest expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    /// Number of AORs with at least one binding (lapsed ones count until `expire` runs).
    pub fn aor_count(&self) -> usize {
        self.table.len()
    }

    /// Number of bindings (lapsed ones count until `expire` runs).
    pub fn contact_count(&self) -> usize {
        self.timers.len()
    }
}

fn sort_by_q(v: &mut [Binding]) {
    v.sort_by_key(|b| std::cmp::Reverse(b.q_or_default()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registrar {
        Registrar::new(RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
            max_contacts_per_aor: 3,
        })
    }

    fn alice() -> Aor {
        Aor::new("sip:alice@example.com")
    }

    fn req(
        call_id: &str,
        cseq: u32,
        contacts: &[(&str, Option<u32>)],
        expires: Option<u32>,
    ) -> RegisterRequest {
        RegisterRequest {
            wildcard: false,
            contacts: contacts
                .iter()
                .map(|(u, e)| ContactReq {
                    expires: *e,
                    ..ContactReq::new(u.to_string())
                })
                .collect(),
            expires,
            call_id: Bytes::from(call_id.to_string()),
            cseq,
            source: Some("192.0.2.1:5060".parse().unwrap()),
            transport: Some(Bytes::from_static(b"UDP")),
        }
    }

    fn uris(b: &[Binding]) -> Vec<String> {
        b.iter()
            .map(|b| String::from_utf8_lossy(&b.contact).into_owned())
            .collect()
    }

    #[test]
    fn register_refresh_expire() {
        let mut r = reg();
        let t0 = Instant::now();
        let out = r
            .apply(
                &alice(),
                &req("c1", 1, &[("sip:alice@192.0.2.1", None)], None),
                t0,
            )
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].expires_in(t0), 600, "default applies");
        assert_eq!(out[0].source, Some("192.0.2.1:5060".parse().unwrap()));
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(600)));
        assert_eq!((r.aor_count(), r.contact_count()), (1, 1));

        // Refresh at t0+500 with the Expires header, same Call-ID, higher CSeq.
        let t1 = t0 + Duration::from_secs(500);
        let out = r
            .apply(
                &alice(),
                &req("c1", 2, &[("sip:alice@192.0.2.1", None)], Some(300)),
                t1,
            )
            .unwrap();
        assert_eq!(out[0].expires_in(t1), 300);
        assert_eq!(r.contact_count(), 1, "refresh does not add");
        assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(300)));
        assert!(
            r.expire(t0 + Duration::from_secs(600)).is_empty(),
            "the old deadline is gone"
        );

        // Lapses at t1+300.
        let t2 = t1 + Duration::from_secs(300);
        assert_eq!(r.lookup(&alice(), t2 - Duration::from_millis(1)).len(), 1);
        assert!(r.lookup(&alice(), t2).is_empty());
        let gone = r.expire(t2);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, alice());
        assert_eq!(
            (r.aor_count(), r.contact_count(), r.poll_timeout()),
            (0, 0, None)
        );
    }

    #[test]
    fn expires_precedence_and_clamp() {
        let mut r = reg();
        let t0 = Instant::now();
        let out = r
            .apply(
                &alice(),
                &req(
                    "c",
                    1,
                    &[
                        ("sip:a@h1", Some(120)),
                        ("sip:a@h2", None),
                        ("sip:a@h3", Some(99999)),
                    ],
                    Some(200),
                ),
                t0,
            )
            .unwrap();
        let mut e: Vec<(String, u32)> = out
            .iter()
            .map(|b| (String::from_utf8_lossy(&b.contact).into(), b.expires_in(t0)))
            .collect();
        e.sort();
        assert_eq!(
            e,
            [
                ("sip:a@h1".into(), 120),
                ("sip:a@h2".into(), 200),
                ("sip:a@h3".into(), 3600)
            ]
        );
    }

    #[test]
    fn interval_too_brief() {
        let mut r = reg();
        let t0 = Instant::now();
        let err = r
            .apply(
                &alice(),
                &req(
                    "c",
                    1,
                    &[("sip:a@h1", None), ("sip:a@h2", Some(30))],
                    Some(600),
                ),
                t0,
            )
            .unwrap_err();
        assert_eq!(err, RegisterError::IntervalTooBrief { min_expires: 60 });
        assert_eq!((err.status(), err.min_expires()), (423, Some(60)));
        assert_eq!(r.contact_count(), 0, "nothing applied");
        // The Expires header counts too; 0 is removal, not brief.
        assert_eq!(
            r.apply(&alice(), &req("c", 2, &[("sip:a@h1", None)], Some(59)), t0)
                .unwrap_err()
                .status(),
            423
        );
        assert!(r
            .apply(&alice(), &req("c", 3, &[("sip:a@h1", None)], Some(0)), t0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn several_contacts_unregister_one_and_wildcard() {
        let mut r = reg();
        let t0 = Instant::now();
        let mut desk = req("c1", 1, &[("sip:a@desk", None)], None);
        desk.contacts[0].q = Some(500);
        r.apply(&alice(), &desk, t0).unwrap();
        let out = r
            .apply(&alice(), &req("c2", 7, &[("sip:a@phone", None)], None), t0)
            .unwrap();
        // Highest q first; no q counts as 1.0.
        assert_eq!(uris(&out), ["sip:a@phone", "sip:a@desk"]);
        // Another UA's query-only REGISTER lists both and changes nothing.
        assert_eq!(
            uris(&r.apply(&alice(), &req("c3", 1, &[], None), t0).unwrap()),
            uris(&out)
        );
        assert_eq!(uris(&r.lookup(&alice(), t0)), uris(&out));
        assert!(out[1]
            .contact_value(t0)
            .starts_with("<sip:a@desk>;q=0.5;expires=600"));

        // Unregister one: expires=0 from the desk's UA.
        let out = r
            .apply(
                &alice(),
                &req("c1", 2, &[("sip:a@desk", Some(0))], None),
                t0,
            )
            .unwrap();
        assert_eq!(uris(&out), ["sip:a@phone"]);
        assert_eq!(r.contact_count(), 1);

        // Wildcard needs Expires: 0 and no other contact.
        let mut star = req("c9", 1, &[], Some(3600));
        star.wildcard = true;
        assert_eq!(
            r.apply(&alice(), &star, t0),
            Err(RegisterError::BadWildcard)
        );
        let mut star2 = req("c9", 1, &[("sip:a@x", None)], Some(0));
        star2.wildcard = true;
        assert_eq!(r.apply(&alice(), &star2, t0).unwrap_err().status(), 400);
        star.expires = Some(0);
        assert!(r.apply(&alice(), &star, t0).unwrap().is_empty());
        assert_eq!(
            (r.aor_count(), r.contact_count(), r.poll_timeout()),
            (0, 0, None)
        );
    }

    #[test]
    fn out_of_order_cseq() {
        let mut r = reg();
        let t0 = Instant::now();
        r.apply(&alice(), &req("c1", 5, &[("sip:a@h1", None)], None), t0)
            .unwrap();
        // Same Call-ID, same or lower CSeq: the whole request fails, nothing changes.
        for cseq in [5, 4] {
            let err = r
                .apply(
                    &alice(),
                    &req(
                        "c1",
                        cseq,
                        &[("sip:a@h2", None), ("sip:a@h1", Some(0))],
                        None,
                    ),
                    t0,
                )
                .unwrap_err();
            assert_eq!(err, RegisterError::OutOfOrder);
            assert_eq!(err.status(), 500);
        }
        assert_eq!(uris(&r.lookup(&alice(), t0)), ["sip:a@h1"]);
        // Wildcard is checked the same way.
        let mut star = req("c1", 5, &[], Some(0));
        star.wildcard = true;
        assert_eq!(r.apply(&alice(), &star, t0), Err(RegisterError::OutOfOrder));
        // Another Call-ID (a rebooted UA) may update whatever its CSeq.
        let out = r
            .apply(
                &alice(),
                &req("c2", 1, &[("sip:a@h1", Some(120))], None),
                t0,
            )
            .unwrap();
        assert_eq!(
            (out[0].call_id.as_ref(), out[0].cseq, out[0].expires_in(t0)),
            (&b"c2"[..], 1, 120)
        );
    }

    #[test]
    fn max_contacts() {
        let mut r = reg();
        let t0 = Instant::now();
        r.apply(
            &alice(),
            &req(
                "c",
                1,
                &[("sip:a@1", None), ("sip:a@2", None), ("sip:a@3", None)],
                None,
            ),
            t0,
        )
        .unwrap();
        let err = r
            .apply(&alice(), &req("c", 2, &[("sip:a@4", None)], None), t0)
            .unwrap_err();
        assert_eq!(
            (err.clone(), err.status()),
            (RegisterError::TooManyContacts { max: 3 }, 403)
        );
        // Replacing one in the same request fits.
        let out = r
            .apply(
                &alice(),
                &req("c", 3, &[("sip:a@4", None), ("sip:a@1", Some(0))], None),
                t0,
            )
            .unwrap();
        assert_eq!(out.len(), 3);
        // Lapsed bindings do not count against the limit.
        let later = t0 + Duration::from_secs(601);
        assert_eq!(
            r.apply(&alice(), &req("c", 4, &[("sip:a@5", None)], None), later)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            r.contact_count(),
            1,
            "the lapsed ones were dropped with their timers"
        );
    }

    #[test]
    fn instance_id_replaces_binding() {
        let mut r = reg();
        let t0 = Instant::now();
        let mut a = req("c1", 1, &[("sip:a@10.0.0.1:5060", None)], None);
        a.contacts[0].instance = Some(Bytes::from_static(b"<urn:uuid:1>"));
        a.contacts[0].reg_id = Some(1);
        r.apply(&alice(), &a, t0).unwrap();
        // Same instance and reg-id from a new address (another Call-ID): replaced, not added.
        let mut b = a.clone();
        b.call_id = Bytes::from_static(b"c2");
        b.contacts[0].uri = Bytes::from_static(b"sip:a@10.0.0.2:5060");
        let out = r.apply(&alice(), &b, t0).unwrap();
        assert_eq!(uris(&out), ["sip:a@10.0.0.2:5060"]);
        assert!(out[0]
            .contact_value(t0)
            .contains(";+sip.instance=\"<urn:uuid:1>\";reg-id=1;expires=600"));
    }

    #[test]
    fn from_register_message() {
        let raw = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds7\r\n\
To: Bob <sip:Bob@EXAMPLE.com:5060>\r\n\
From: Bob <sip:Bob@example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@192.0.2.4;transport=udp>;expires=7200;+sip.instance=\"<urn:uuid:1>\";reg-id=1;+g.oma.sip-im\r\n\
m: \"Desk\" <sip:bob@198.51.100.2>;q=0.5\r\n\
Expires: 120\r\n\
Content-Length: 0\r\n\r\n";
        let m = crate::sip::parse(Bytes::from(raw)).unwrap();
        let aor = Aor::from_uri(&m.to().unwrap().uri).unwrap();
        assert_eq!(aor.to_string(), "sip:Bob@example.com");
        let src: SocketAddr = "192.0.2.4:5060".parse().unwrap();
        let rq =
            RegisterRequest::from_message(&m, Some(src), Some(Bytes::from_static(b"UDP"))).unwrap();
        assert!(!rq.wildcard);
        assert_eq!(
            (rq.cseq, rq.expires, &rq.call_id[..]),
            (1826, Some(120), &b"843817637684230@998sdasdh09"[..])
        );
        let c = &rq.contacts[0];
        assert_eq!(&c.uri[..], b"sip:bob@192.0.2.4;transport=udp");
        assert_eq!((c.expires, c.q, c.reg_id), (Some(7200), None, Some(1)));
        assert_eq!(c.instance.as_deref(), Some(&b"<urn:uuid:1>"[..]));
        assert_eq!(c.params.len(), 1, "only the feature tag is left");
        assert_eq!(rq.contacts[1].q, Some(500));

        let mut r = reg();
        let t0 = Instant::now();
        let out = r.apply(&aor, &rq, t0).unwrap();
        assert_eq!(
            out[0].contact_value(t0),
            "<sip:bob@192.0.2.4;transport=udp>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;+g.oma.sip-im;expires=3600"
        );
        assert_eq!(
            out[1].contact_value(t0),
            "<sip:bob@198.51.100.2>;q=0.5;expires=120"
        );

        // Wildcard with another contact: a malformed Contact, 400.
        let bad = raw.replace("m: ", "m: *, ");
        let m = crate::sip::parse(Bytes::from(bad)).unwrap();
        assert_eq!(
            RegisterRequest::from_message(&m, None, None),
            Err(HeaderError::Malformed("Contact"))
        );
        let star = raw.replace("m: \"Desk\" <sip:bob@198.51.100.2>;q=0.5", "m: *").replace("Contact: <sip:bob@192.0.2.4;transport=udp>;expires=7200;+sip.instance=\"<urn:uuid:1>\";reg-id=1;+g.oma.sip-im\r\n", "");
        let m = crate::sip::parse(Bytes::from(star)).unwrap();
        let rq = RegisterRequest::from_message(&m, None, None).unwrap();
        assert!(rq.wildcard && rq.contacts.is_empty());
        assert_eq!(
            r.apply(&aor, &rq, t0),
            Err(RegisterError::BadWildcard),
            "Expires: 120 with *"
        );
    }

    #[test]
    fn contacts_match_by_uri_equivalence() {
        let mut r = reg();
        let t0 = Instant::now();
        r.apply(
            &alice(),
            &req(
                "c1",
                1,
                &[("sip:alice@HOST.example.com;transport=TCP", None)],
                None,
            ),
            t0,
        )
        .unwrap();
        // Host case and parameter value case do not matter (RFC 3261 §19.1.4); user case does.
        let out = r
            .apply(
                &alice(),
                &req(
                    "c1",
                    2,
                    &[("sip:alice@host.example.com;transport=tcp", Some(0))],
                    None,
                ),
                t0,
            )
            .unwrap();
        assert!(out.is_empty());
        r.apply(&alice(), &req("c1", 3, &[("sip:alice@h", None)], None), t0)
            .unwrap();
        let out = r
            .apply(&alice(), &req("c1", 4, &[("sip:ALICE@h", None)], None), t0)
            .unwrap();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn qvalue_format() {
        assert_eq!(format_q(500), "0.5");
        assert_eq!(format_q(5), "0.005");
        assert_eq!(format_q(0), "0");
        assert_eq!(format_q(1000), "1");
    }
}
