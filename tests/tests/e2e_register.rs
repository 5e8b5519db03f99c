//! REGISTER against the real cpmd (RFC 3261 §10): bindings, refresh, expiry, removal, the
//! Min-Expires floor, and the listen/config flags that shape them.

use std::thread::sleep;
use std::time::Duration;

use cpm_tests::check::{binding, bindings};
use cpm_tests::{assert_echoes, assert_status, header, over_udp_and_tcp, Cpmd, Transport, Ua};

over_udp_and_tcp!(
    register_lists_binding_and_fetch_returns_it,
    refresh_updates_expiry,
    binding_expires,
    unregister_one_contact_keeps_the_other,
    several_contacts_in_one_request,
    wildcard_removes_all_bindings,
    expires_below_minimum_is_423,
);

/// RFC 3261 §10.3 step 8: the 200 lists every current binding with its expiry; a REGISTER
/// without Contact fetches them (§10.2.3).
fn register_lists_binding_and_fetch_returns_it(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr()).user("alice");
    let req = ua.register_req(Some(300));
    let resp = ua.request(&req);
    assert_status(&resp, 200);
    assert_echoes(&req, &resp);
    assert_eq!(bindings(&resp).len(), 1, "one binding in:\n{resp}");
    let b = binding(&resp, &ua.contact_uri());
    assert!(matches!(b.expires, Some(1..=300)), "expires of {b:?}");

    let fetch = ua.register_req(None).remove("Contact");
    let resp = ua.request(&fetch);
    assert_status(&resp, 200);
    assert_eq!(bindings(&resp).len(), 1, "one binding in:\n{resp}");
    let b = binding(&resp, &ua.contact_uri());
    assert!(matches!(b.expires, Some(1..=300)), "expires of {b:?}");
}

/// RFC 3261 §10.2.1 / §10.3 step 7: registering the same contact again updates its expiry
/// instead of adding a binding.
fn refresh_updates_expiry(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr()).user("alice");
    assert_status(&ua.register(300), 200);
    let resp = ua.register(900);
    assert_status(&resp, 200);
    assert_eq!(
        bindings(&resp).len(),
        1,
        "refresh must not add a binding:\n{resp}"
    );
    let b = binding(&resp, &ua.contact_uri());
    assert!(
        matches!(b.expires, Some(301..=900)),
        "refreshed expires of {b:?}"
    );
    let resp = ua.register(120);
    assert_status(&resp, 200);
    let b = binding(&resp, &ua.contact_uri());
    assert!(
        matches!(b.expires, Some(1..=120)),
        "shortened expires of {b:?}"
    );
}

/// RFC 3261 §10.2.1: a binding disappears when its expiry passes.
fn binding_expires(t: Transport) {
    let cpmd = Cpmd::spawn(&["--min-expires", "1"]);
    let mut ua = Ua::new(t, cpmd.sip_addr()).user("alice");
    let resp = ua.register(2);
    assert_status(&resp, 200);
    let b = binding(&resp, &ua.contact_uri());
    assert!(matches!(b.expires, Some(1..=2)), "expires of {b:?}");
    // The periodic sweep frees the binding without any further request.
    cpmd.wait_metric("cpm_registered_contacts", Duration::from_secs(5), |v| {
        v == 0.0
    });
    sleep(Duration::from_millis(500));
    let fetch = ua.register_req(None).remove("Contact");
    let resp = ua.request(&fetch);
    assert_status(&resp, 200);
    assert!(
        bindings(&resp).is_empty(),
        "binding should have expired:\n{resp}"
    );
}

/// RFC 3261 §10.2.2: `expires=0` on one contact removes that binding only.
fn unregister_one_contact_keeps_the_other(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut phone = Ua::new(t, cpmd.sip_addr()).user("bob");
    let mut laptop = Ua::new(t, cpmd.sip_addr()).user("bob");
    assert_status(&phone.register(300), 200);
    let resp = laptop.register(300);
    assert_status(&resp, 200);
    assert_eq!(bindings(&resp).len(), 2, "both devices bound:\n{resp}");
    binding(&resp, &phone.contact_uri());
    binding(&resp, &laptop.contact_uri());

    let req = phone
        .register_req(None)
        .set("Contact", format!("<{}>;expires=0", phone.contact_uri()));
    let resp = phone.request(&req);
    assert_status(&resp, 200);
    let left = bindings(&resp);
    assert_eq!(left.len(), 1, "only the laptop is left:\n{resp}");
    assert!(
        left[0].uri.eq_ignore_ascii_case(&laptop.contact_uri()),
        "left: {left:?}"
    );
}

/// RFC 3261 §10.2.1.2: one REGISTER may carry several contacts, each with its own expiry.
fn several_contacts_in_one_request(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr()).user("carol");
    let other = "sip:carol@127.0.0.1:5999";
    let req = ua.register_req(Some(600)).set(
        "Contact",
        format!("<{}>, <{other}>;expires=100", ua.contact_uri()),
    );
    let resp = ua.request(&req);
    assert_status(&resp, 200);
    assert_eq!(bindings(&resp).len(), 2, "two bindings in:\n{resp}");
    let mine = binding(&resp, &ua.contact_uri());
    assert!(
        matches!(mine.expires, Some(101..=600)),
        "Expires header applies: {mine:?}"
    );
    let b = binding(&resp, other);
    assert!(
        matches!(b.expires, Some(1..=100)),
        "contact parameter wins: {b:?}"
    );
}

/// RFC 3261 §10.2.2: `Contact: *` with `Expires: 0` removes every binding of the AOR.
fn wildcard_removes_all_bindings(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr()).user("dave");
    let req = ua.register_req(Some(300)).set(
        "Contact",
        format!("<{}>, <sip:dave@127.0.0.1:5998>", ua.contact_uri()),
    );
    assert_eq!(bindings(&ua.request(&req)).len(), 2);

    let req = ua.register_req(Some(0)).set("Contact", "*");
    let resp = ua.request(&req);
    assert_status(&resp, 200);
    assert!(bindings(&resp).is_empty(), "no binding left:\n{resp}");
    let fetch = ua.register_req(None).remove("Contact");
    let resp = ua.request(&fetch);
    assert_status(&resp, 200);
    assert!(bindings(&resp).is_empty(), "no binding left:\n{resp}");
}

/// RFC 3261 §10.3 step 6: `*` with a non-zero expiry is a bad request.
#[test]
fn wildcard_with_nonzero_expires_is_400() {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::udp(cpmd.sip_addr()).user("dave");
    let req = ua.register_req(Some(60)).set("Contact", "*");
    assert_status(&ua.request(&req), 400);
}

/// RFC 3261 §10.3 step 7: an expiry below the minimum gets 423 with Min-Expires (default 60).
fn expires_below_minimum_is_423(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr()).user("erin");
    let resp = ua.register(10);
    assert_status(&resp, 423);
    assert_eq!(
        header(&resp, "Min-Expires").as_deref(),
        Some("60"),
        "in:\n{resp}"
    );
    assert_status(&ua.register(60), 200);
}

/// `--min-expires` moves the floor.
#[test]
fn min_expires_flag() {
    let cpmd = Cpmd::spawn(&["--min-expires", "120"]);
    let mut ua = Ua::udp(cpmd.sip_addr());
    let resp = ua.register(90);
    assert_status(&resp, 423);
    assert_eq!(
        header(&resp, "Min-Expires").as_deref(),
        Some("120"),
        "in:\n{resp}"
    );
}

/// `--max-expires` caps the granted expiry (RFC 3261 §10.3 step 7: the registrar MAY shorten).
#[test]
fn max_expires_flag() {
    let cpmd = Cpmd::spawn(&["--max-expires", "600"]);
    let mut ua = Ua::udp(cpmd.sip_addr());
    let resp = ua.register(7200);
    assert_status(&resp, 200);
    let b = binding(&resp, &ua.contact_uri());
    assert!(
        matches!(b.expires, Some(1..=600)),
        "capped expires of {b:?}"
    );
}

/// `--default-expires` applies when the request names no expiry (RFC 3261 §10.2.1).
#[test]
fn default_expires_flag() {
    let cpmd = Cpmd::spawn(&["--default-expires", "200"]);
    let mut ua = Ua::udp(cpmd.sip_addr());
    let req = ua.register_req(None);
    let resp = ua.request(&req);
    assert_status(&resp, 200);
    let b = binding(&resp, &ua.contact_uri());
    assert!(
        matches!(b.expires, Some(100..=200)),
        "default expires of {b:?}"
    );
}

/// `--config FILE` takes the flags' names with `_` as TOML keys.
#[test]
fn config_file_sets_min_expires() {
    let builder = Cpmd::builder();
    let path = builder.file("cpmd.toml", "min_expires = 90\n");
    let cpmd = builder.args(&["--config", path.to_str().unwrap()]).spawn();
    let mut ua = Ua::udp(cpmd.sip_addr());
    let resp = ua.register(70);
    assert_status(&resp, 423);
    assert_eq!(
        header(&resp, "Min-Expires").as_deref(),
        Some("90"),
        "in:\n{resp}"
    );
}

/// `--domain` adds a served domain (repeatable).
#[test]
fn extra_domain_is_served() {
    let cpmd = Cpmd::spawn(&["--domain", "localhost", "--domain", "example.org"]);
    let mut ua = Ua::udp(cpmd.sip_addr()).user("frank").domain("example.org");
    let resp = ua.register(300);
    assert_status(&resp, 200);
    binding(&resp, &ua.contact_uri());
}
