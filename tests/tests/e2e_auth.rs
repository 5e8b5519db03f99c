//! Digest authentication of REGISTER (RFC 3261 §22.4, RFC 8760 SHA-256) with a users file.

use cpm_tests::check::binding;
use cpm_tests::ua::challenges;
use cpm_tests::{assert_echoes, assert_status, over_udp_and_tcp, Cpmd, Transport, Ua};

const USERS: &str = "alice secret\nbob@localhost hunter2\n";

fn cpmd_with_users() -> Cpmd {
    Cpmd::builder().users(USERS).spawn()
}

over_udp_and_tcp!(
    unauthenticated_register_is_challenged,
    sha256_credentials_register,
    md5_credentials_register
);

/// A REGISTER without credentials gets 401 with one challenge per algorithm (RFC 8760 §2.4:
/// SHA-256 first, then MD5), realm = the first domain.
fn unauthenticated_register_is_challenged(t: Transport) {
    let cpmd = cpmd_with_users();
    let mut ua = Ua::new(t, cpmd.sip_addr()).user("alice");
    let req = ua.register_req(Some(300));
    let resp = ua.request(&req);
    assert_status(&resp, 401);
    assert_echoes(&req, &resp);
    let algs: Vec<String> = challenges(&resp)
        .iter()
        .map(|c| c.algorithm.as_str().to_string())
        .collect();
    assert!(
        algs.iter().any(|a| a == "SHA-256"),
        "no SHA-256 challenge ({algs:?}) in:\n{resp}"
    );
    assert!(
        algs.iter().any(|a| a == "MD5"),
        "no MD5 challenge ({algs:?}) in:\n{resp}"
    );
    for c in challenges(&resp) {
        assert_eq!(c.realm, "localhost", "realm in:\n{resp}");
        assert!(!c.nonce.is_empty(), "empty nonce in:\n{resp}");
    }
}

fn sha256_credentials_register(t: Transport) {
    let cpmd = cpmd_with_users();
    let mut ua = Ua::new(t, cpmd.sip_addr())
        .user("alice")
        .password("secret")
        .digest_algorithm("SHA-256");
    let resp = ua.register(300);
    assert_status(&resp, 200);
    binding(&resp, &ua.contact_uri());
}

fn md5_credentials_register(t: Transport) {
    let cpmd = cpmd_with_users();
    let mut ua = Ua::new(t, cpmd.sip_addr())
        .user("alice")
        .password("secret")
        .digest_algorithm("MD5");
    let resp = ua.register(300);
    assert_status(&resp, 200);
    binding(&resp, &ua.contact_uri());
}

/// A `user@domain password` line authenticates `user` in that domain.
#[test]
fn user_at_domain_line_authenticates() {
    let cpmd = cpmd_with_users();
    let mut ua = Ua::udp(cpmd.sip_addr()).user("bob").password("hunter2");
    assert_status(&ua.register(300), 200);
}

/// A wrong password is refused (403, or 401 challenging again) and binds nothing.
#[test]
fn wrong_password_is_refused() {
    let cpmd = cpmd_with_users();
    let mut ua = Ua::udp(cpmd.sip_addr())
        .user("alice")
        .password("not-the-secret");
    let resp = ua.register(300);
    assert!(
        matches!(resp.status(), Some(401 | 403)),
        "expected 401/403, got:\n{resp}"
    );
    assert_eq!(cpmd.metric("cpm_registered_contacts"), 0.0);
}

/// A user not in the users file cannot register, whatever the password.
#[test]
fn unknown_user_is_refused() {
    let cpmd = cpmd_with_users();
    let mut ua = Ua::udp(cpmd.sip_addr()).user("mallory").password("secret");
    let resp = ua.register(300);
    assert!(
        matches!(resp.status(), Some(401 | 403 | 404)),
        "expected refusal, got:\n{resp}"
    );
    assert_eq!(cpmd.metric("cpm_registered_contacts"), 0.0);
}

/// Credentials computed for another realm do not authenticate.
#[test]
fn credentials_for_another_realm_are_refused() {
    let cpmd = cpmd_with_users();
    let mut ua = Ua::udp(cpmd.sip_addr()).user("alice").password("secret");
    let req = ua.register_req(Some(300));
    let resp = ua.request(&req);
    assert_status(&resp, 401);
    let forged = ua.authorize(&req, &resp);
    let cred = forged
        .get("Authorization")
        .unwrap()
        .replace("realm=\"localhost\"", "realm=\"elsewhere\"");
    let forged = forged.set("Authorization", cred);
    let resp = ua.request(&forged);
    assert!(
        matches!(resp.status(), Some(401 | 403)),
        "expected 401/403, got:\n{resp}"
    );
}

/// `--realm` names the protection space in the challenges.
#[test]
fn realm_flag() {
    let cpmd = Cpmd::builder()
        .users(USERS)
        .args(&["--realm", "cpm.example"])
        .spawn();
    let mut ua = Ua::udp(cpmd.sip_addr()).user("alice").password("secret");
    let req = ua.register_req(Some(300));
    let resp = ua.request(&req);
    assert_status(&resp, 401);
    assert!(
        challenges(&resp).iter().all(|c| c.realm == "cpm.example"),
        "realm in:\n{resp}"
    );
    let again = ua.authorize(&req, &resp);
    assert_status(&ua.request(&again), 200);
}
