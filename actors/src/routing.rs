//! How a request reaches a local user: the registered contacts of its target and the copy
//! forwarded to each (RFC 3261 §16.5-16.6), shared by the message controller and the
//! sessions.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use cpm_engine::registrar::{Aor, Binding};
use cpm_engine::sip::transaction::TransactionLayer;
use cpm_engine::sip::uri::Uri;
use cpm_engine::sip::{builder, HeaderName, Message, StartLine};

use crate::shared::Shared;
use crate::transport::Router;

/// Why a request has no contact to go to, as the response to send.
pub type NoTarget = Box<Message>;

/// The local user a request is for: its address-of-record, once the Request-URI named a
/// domain and a user served here. 400 for a malformed Request-URI, 404 for a domain or user
/// not served here (decision 0003).
pub fn local_user(shared: &Shared, req: &Message) -> Result<Aor, NoTarget> {
    let bad = |code: u16, reason: &str| Box::new(builder::local_response(req, code, reason));
    let target = req
        .request_uri()
        .and_then(|u| Uri::parse(u).ok())
        .ok_or_else(|| bad(400, "Malformed Request-URI"))?;
    let sip = target.as_sip().ok_or_else(|| bad(404, "Not Found"))?;
    if !shared.is_local_domain(&sip.host.to_lowercase()) {
        return Err(bad(404, "Domain Not Served"));
    }
    let user = sip
        .user
        .as_ref()
        .map(|u| String::from_utf8_lossy(u).into_owned())
        .unwrap_or_default();
    if user.is_empty() {
        // The server itself: nobody to deliver to (OPTIONS to it is answered elsewhere).
        return Err(bad(404, "Not Found"));
    }
    if let Some(users) = &shared.users {
        if users.lookup(&user, shared.auth.realm()).is_none() {
            return Err(bad(404, "Not Found"));
        }
    }
    Ok(Aor::new(target.aor().ok_or_else(|| bad(404, "Not Found"))?))
}

/// Whether an address-of-record (`sip:user@domain`) names a user served here: a local domain,
/// a user part, and that user in the users file when there is one.
pub fn is_local_aor(shared: &Shared, aor: &str) -> bool {
    let Ok(uri) = Uri::parse(&Bytes::copy_from_slice(aor.as_bytes())) else {
        return false;
    };
    let Some(sip) = uri.as_sip() else {
        return false;
    };
    let user = sip
        .user
        .as_ref()
        .map(|u| String::from_utf8_lossy(u).into_owned())
        .unwrap_or_default();
    shared.is_local_domain(&sip.host.to_lowercase())
        && !user.is_empty()
        && shared
            .users
            .as_ref()
            .is_none_or(|u| u.lookup(&user, shared.auth.realm()).is_some())
}

/// The registered contacts of `aor` that can be reached now, with where each is sent and
/// whether over a reliable transport.
pub fn contacts(shared: &Shared, aor: &Aor, now: Instant) -> Vec<(Binding, SocketAddr, bool)> {
    let bindings = shared.registrar(aor).lock().lookup(aor, now);
    bindings
        .into_iter()
        .filter_map(|b| destination(shared, &b).map(|(d, r)| (b, d, r)))
        .collect()
}

/// The registered contacts of the local user a request is for: the errors of
/// [`local_user`], and 480 when the user has no reachable contact.
pub fn local_targets(
    shared: &Shared,
    req: &Message,
    now: Instant,
) -> Result<Vec<(Binding, SocketAddr, bool)>, NoTarget> {
    let aor = local_user(shared, req)?;
    let targets = contacts(shared, &aor, now);
    if targets.is_empty() {
        return Err(Box::new(builder::local_response(
            req,
            480,
            "Temporarily Unavailable",
        )));
    }
    Ok(targets)
}

/// Where a binding is reached: over the TCP connection it registered on while that is open;
/// else at the contact URI's address when it is an IP literal; else at the address the
/// REGISTER came from (a client behind NAT, RFC 3581 style). Decision 0003.
pub fn destination(shared: &Shared, b: &Binding) -> Option<(SocketAddr, bool)> {
    let registered_tcp = b.transport.as_deref() == Some(&b"TCP"[..]);
    if registered_tcp {
        if let Some(src) = b.source {
            if shared.tcp.get(&src).is_some() {
                return Some((src, true));
            }
        }
    }
    let uri = Uri::parse(&b.contact).ok()?;
    let sip = uri.as_sip()?;
    let reliable = sip
        .transport()
        .is_some_and(|t| t.eq_ignore_ascii_case(b"tcp"))
        || registered_tcp;
    match sip.host.ip() {
        Some(ip) => Some((SocketAddr::new(ip, sip.port.unwrap_or(5060)), reliable)),
        None => b.source.map(|s| (s, reliable)),
    }
}

/// The request as forwarded to one contact (RFC 3261 §16.6): Request-URI = the contact,
/// Max-Forwards decremented, our Via on top with a fresh branch, Routes to us removed.
pub fn forward_copy(
    shared: &Shared,
    req: &Message,
    b: &Binding,
    reliable: bool,
    txn: &mut TransactionLayer,
) -> Message {
    let mut fwd = req.clone();
    if let StartLine::Request { uri, .. } = &mut fwd.start {
        *uri = b.contact.clone();
    }
    let mf = req.max_forwards().ok().flatten().unwrap_or(70);
    fwd.headers
        .set(HeaderName::MaxForwards, (mf.saturating_sub(1)).to_string());
    let routes: Vec<Bytes> = fwd.headers.values(&HeaderName::Route).collect();
    if !routes.is_empty() {
        fwd.headers.remove(&HeaderName::Route);
        for r in routes.into_iter().filter(|r| !is_our_route(shared, r)) {
            fwd.headers.push(HeaderName::Route, r);
        }
    }
    let via = format!(
        "SIP/2.0/{} {};branch={};rport",
        if reliable { "TCP" } else { "UDP" },
        shared.config.sip_listen,
        String::from_utf8_lossy(&txn.new_branch())
    );
    fwd.headers.push_front(HeaderName::Via, via);
    fwd
}

/// A Route naming this server (a local domain, our port or none).
fn is_our_route(shared: &Shared, r: &Bytes) -> bool {
    cpm_engine::sip::hdr::NameAddr::parse(r, "Route")
        .ok()
        .and_then(|na| na.uri.as_sip().map(|s| (s.host.to_lowercase(), s.port)))
        .is_some_and(|(host, port)| {
            shared.is_local_domain(&host)
                && port.is_none_or(|p| p == shared.config.sip_listen.port())
        })
}

/// A fresh Call-ID that worker `worker` of `workers` owns (the router sends the traffic of
/// that Call-ID there), for requests this worker originates: about N tries for N workers.
pub fn owned_call_id(shared: &Shared, worker: usize, workers: usize, salt: &mut u64) -> Bytes {
    loop {
        *salt = salt
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let id = Bytes::from(format!("{:016x}@{}", *salt, shared.config.sip_listen.ip()));
        if Router::owner(Some(&id), workers) == worker {
            return id;
        }
    }
}
