//! The network storage HTTP API (issue 5, CM-5) against the real cpmd: data filled through the
//! real paths (pager MESSAGEs to an offline user are held and a copy is kept for both parties),
//! history with paging, flags, delete, files (seeded with the `--test-hooks` hook), sessions,
//! contacts, settings (which steer what the next MESSAGE keeps), authentication by bearer token
//! and by HTTP digest (RFC 7616, SHA-256 and MD5), access control, the 401 and 503 shapes.

use std::time::Duration;

use cpm_engine::sip::digest::{respond, Challenge};
use cpm_tests::http::{self, Response};
use cpm_tests::util::poll_until;
use cpm_tests::{Cpmd, Ua};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);
const USERS: &str = "alice alice-pw\nbob bob-pw\ncarol carol-pw\n";
const TOKENS: &str = "# user token\nalice tok-alice-0001\nbob tok-bob-0002\n";

/// How a test client authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// user, password, algorithm (`SHA-256` or `MD5`).
    Digest(&'a str, &'a str, &'a str),
}

/// An API client of one cpmd.
struct Api<'a> {
    cpmd: &'a Cpmd,
    auth: Auth<'a>,
}

impl Api<'_> {
    fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        http::request(self.cpmd.http_addr(), method, path, headers, body, WAIT)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Sends a request, answering a digest challenge once (RFC 7616 §3.4).
    fn send(&self, method: &str, path: &str, ctype: Option<&str>, body: &[u8]) -> Response {
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(c) = ctype {
            headers.push(("Content-Type", c.to_string()));
        }
        let with = |extra: Option<String>| {
            let mut h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            if let Some(a) = &extra {
                h.push(("Authorization", a));
            }
            self.raw(method, path, &h, body)
        };
        match self.auth {
            Auth::None => with(None),
            Auth::Bearer(t) => with(Some(format!("Bearer {t}"))),
            Auth::Digest(user, pw, alg) => {
                let first = with(None);
                assert_eq!(first.status, 401, "{method} {path} without credentials");
                let ch = digest_challenge(&first, alg);
                let creds = respond(&ch, user, pw, method, path, "0a4f113b", 1).unwrap();
                with(Some(creds.to_string()))
            }
        }
    }

    fn get(&self, path: &str) -> Response {
        self.send("GET", path, None, b"")
    }

    fn json(&self, method: &str, path: &str, body: &Value) -> Response {
        let b = body.to_string();
        self.send(method, path, Some("application/json"), b.as_bytes())
    }

    fn delete(&self, path: &str) -> Response {
        self.send("DELETE", path, None, b"")
    }

    /// GET expecting 200, returning the JSON.
    fn ok(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }
}

fn digest_challenge(r: &Response, alg: &str) -> Challenge {
    r.header_all("WWW-Authenticate")
        .into_iter()
        .filter(|v| v.starts_with("Digest"))
        .map(|v| Challenge::parse(v.as_bytes()).expect("a valid Digest challenge"))
        .find(|c| c.algorithm.as_str().eq_ignore_ascii_case(alg))
        .unwrap_or_else(|| panic!("no {alg} challenge in {:?}", r.headers))
}

fn cpmd_with_api(extra: &[&str]) -> Cpmd {
    let b = Cpmd::builder().users(USERS);
    let tokens = b.file("tokens", TOKENS);
    b.args(&["--api-tokens", tokens.to_str().unwrap()])
        .args(extra)
        .spawn()
}

/// alice sends `texts` to offline `to` (each answered 202: held, and kept for both). She
/// registers first: the sender's copy is kept only for a MESSAGE from an address the sender
/// registered from (MESSAGE itself is not authenticated).
fn send_held(cpmd: &Cpmd, alice: &mut Ua, to: &str, texts: &[&str]) {
    let reg = alice.register(300);
    assert_eq!(reg.status(), Some(200), "{reg}");
    for t in texts {
        let req = alice
            .req("MESSAGE", &format!("sip:{to}@localhost"))
            .body("text/plain", *t);
        let status = alice.request(&req).status();
        assert_eq!(status, Some(202), "MESSAGE to offline {to}: {}", cpmd.log());
    }
}

/// Polls the caller's conversations until `conv` has `count` messages.
fn wait_count(api: &Api<'_>, conv: &str, count: u64) -> Value {
    poll_until(WAIT, || {
        let list = api.ok("/api/v1/conversations");
        list["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == conv && c["count"] == count)
            .cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "{conv} never had {count} messages: {}",
            api.ok("/api/v1/conversations")
        )
    })
}

fn ids(page: &Value) -> Vec<i64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

/// Five held messages: bob (token) pages through them newest first, two at a time; flags and
/// delete change what he sees; alice (digest) sees her sent copies in her own conversation.
#[test]
fn history_is_paged_flagged_and_deleted() {
    let cpmd = cpmd_with_api(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice").password("alice-pw");
    let texts = ["m1", "m2", "m3", "m4", "m5"];
    send_held(&cpmd, &mut alice, "bob", &texts);
    let bob = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-bob-0002"),
    };
    let conv = wait_count(&bob, "sip:alice@localhost", 5);
    assert_eq!(conv["unread"], 5);
    assert_eq!(conv["peer"], "sip:alice@localhost");

    // Percent-encoded and plain conversation ids name the same conversation.
    let base = "/api/v1/conversations/sip%3Aalice%40localhost/messages";
    let p1 = bob.ok(&format!("{base}?limit=2"));
    let plain = bob.ok("/api/v1/conversations/sip:alice@localhost/messages?limit=2");
    assert_eq!(p1, plain);
    let m = &p1["messages"][0];
    assert_eq!(m["body"], "m5", "newest first: {p1}");
    assert_eq!(m["body_encoding"], "utf8");
    assert_eq!(m["content_type"], "text/plain");
    assert_eq!(m["direction"], "in");
    assert_eq!(m["sender"], "sip:alice@localhost");
    assert_eq!(m["recipient"], "sip:bob@localhost");
    assert_eq!(m["state"], "stored");
    assert_eq!(
        (m["seen"].clone(), m["flagged"].clone()),
        (json!(false), json!(false))
    );
    let next = p1["next_before"].as_i64().expect("more pages");
    assert_eq!(next, ids(&p1)[1]);
    let p2 = bob.ok(&format!("{base}?limit=2&before={next}"));
    let p3 = bob.ok(&format!(
        "{base}?limit=2&before={}",
        p2["next_before"].as_i64().unwrap()
    ));
    let bodies: Vec<Value> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| {
            p["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["body"].clone())
        })
        .collect();
    assert_eq!(bodies, vec!["m5", "m4", "m3", "m2", "m1"]);
    assert!(p3.get("next_before").is_none(), "last page: {p3}");
    let all = bob.ok(&format!("{base}?limit=5"));
    assert!(all.get("next_before").is_none(), "exactly 5: {all}");
    // Time range: everything is in [0, now+1h); nothing before 0.
    assert_eq!(ids(&bob.ok(&format!("{base}?to=0"))), Vec::<i64>::new());
    assert_eq!(bob.get(&format!("{base}?limit=0")).status, 400);
    assert_eq!(bob.get(&format!("{base}?limit=x")).status, 400);

    // Flags: set, read back, reflected in the unread count; clear one.
    let id = ids(&p1)[0];
    let r = bob.json(
        "PATCH",
        &format!("/api/v1/messages/{id}"),
        &json!({"seen": true, "flagged": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["seen"].clone(), r.json()["flagged"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(wait_count(&bob, "sip:alice@localhost", 5)["unread"], 4);
    let r = bob.json(
        "PATCH",
        &format!("/api/v1/messages/{id}"),
        &json!({"flagged": false}),
    );
    assert_eq!(
        (r.json()["seen"].clone(), r.json()["flagged"].clone()),
        (json!(true), json!(false))
    );
    let one = bob.ok(&format!("/api/v1/messages/{id}"));
    assert_eq!(one["body"], "m5");
    assert_eq!(one["flagged"], false);
    let r = bob.json("PATCH", &format!("/api/v1/messages/{id}"), &json!({}));
    assert_eq!(r.status, 400);
    let r = bob.json(
        "PATCH",
        &format!("/api/v1/messages/{id}"),
        &json!({"seen": 1}),
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("JSON"));

    // Delete: gone, and the conversation shrinks.
    assert_eq!(bob.delete(&format!("/api/v1/messages/{id}")).status, 204);
    let r = bob.get(&format!("/api/v1/messages/{id}"));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "message not found");
    assert_eq!(bob.delete(&format!("/api/v1/messages/{id}")).status, 404);
    wait_count(&bob, "sip:alice@localhost", 4);

    // alice (digest, SHA-256) has her sent copies, under bob.
    let alice_api = Api {
        cpmd: &cpmd,
        auth: Auth::Digest("alice", "alice-pw", "SHA-256"),
    };
    wait_count(&alice_api, "sip:bob@localhost", 5);
    let mine = alice_api.ok("/api/v1/conversations/sip%3Abob%40localhost/messages");
    assert!(mine["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["direction"] == "out"));
}

/// bob can neither see nor change alice's data, by token or digest; a foreign id answers 404
/// exactly like an unknown one.
#[test]
fn one_user_never_reaches_another_users_data() {
    let cpmd = cpmd_with_api(&["--test-hooks", "true"]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice").password("alice-pw");
    send_held(&cpmd, &mut alice, "carol", &["secret for carol"]);
    let alice_api = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-alice-0001"),
    };
    wait_count(&alice_api, "sip:carol@localhost", 1);
    let page = alice_api.ok("/api/v1/conversations/sip:carol@localhost/messages");
    let msg = ids(&page)[0];
    // A file of alice's (the storage layer's row, through the test hook).
    let png = b"\x89PNG\r\n\x1a\nnot really";
    let r = alice_api.send(
        "POST",
        "/api/v1/test/files?name=pic%20%22a%22.png",
        Some("image/png"),
        png,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let file = r.json()["id"].as_i64().unwrap();
    assert_eq!(r.json()["size"], png.len());

    for bob in [
        Api {
            cpmd: &cpmd,
            auth: Auth::Bearer("tok-bob-0002"),
        },
        Api {
            cpmd: &cpmd,
            auth: Auth::Digest("bob", "bob-pw", "MD5"),
        },
    ] {
        assert_eq!(bob.ok("/api/v1/conversations")["conversations"], json!([]));
        assert_eq!(
            bob.ok("/api/v1/conversations/sip:carol@localhost/messages")["messages"],
            json!([])
        );
        let unknown = bob.get("/api/v1/messages/999999");
        for r in [
            bob.get(&format!("/api/v1/messages/{msg}")),
            bob.json(
                "PATCH",
                &format!("/api/v1/messages/{msg}"),
                &json!({"seen": true}),
            ),
            bob.delete(&format!("/api/v1/messages/{msg}")),
        ] {
            assert_eq!((r.status, r.json()), (unknown.status, unknown.json()));
        }
        assert_eq!(bob.get(&format!("/api/v1/files/{file}")).status, 404);
        assert_eq!(bob.delete(&format!("/api/v1/files/{file}")).status, 404);
        assert_eq!(bob.get("/api/v1/messages/not-a-number").status, 404);
    }
    // Untouched for alice.
    let m = alice_api.ok(&format!("/api/v1/messages/{msg}"));
    assert_eq!(
        (m["seen"].clone(), m["body"].clone()),
        (json!(false), json!("secret for carol"))
    );
    let f = alice_api.get(&format!("/api/v1/files/{file}"));
    assert_eq!(f.status, 200);
    assert_eq!(f.body, png);
    assert_eq!(f.header("Content-Type"), Some("image/png"));
    assert_eq!(
        f.header("Content-Disposition"),
        Some("attachment; filename=\"pic _a_.png\"")
    );
    assert_eq!(
        alice_api.delete(&format!("/api/v1/files/{file}")).status,
        204
    );
    assert_eq!(alice_api.get(&format!("/api/v1/files/{file}")).status, 404);
}

/// Without credentials: 401 naming both schemes; a wrong token, a wrong password, a digest for
/// another URI are refused alike; both digest algorithms work; unknown paths are JSON 404s.
#[test]
fn authentication_shapes() {
    let cpmd = cpmd_with_api(&[]);
    let anon = Api {
        cpmd: &cpmd,
        auth: Auth::None,
    };
    let r = anon.get("/api/v1/settings");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "authentication required");
    let www = r.header_all("WWW-Authenticate");
    assert_eq!(www.len(), 3, "{www:?}");
    assert_eq!(www[0], "Bearer realm=\"localhost\"");
    for (v, alg) in www[1..].iter().zip(["SHA-256", "MD5"]) {
        let c = Challenge::parse(v.as_bytes()).unwrap();
        assert_eq!(c.algorithm.as_str(), alg);
        assert_eq!(c.realm, "localhost");
        assert!(c.offers_auth(), "{v}");
    }
    let wrong = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-nobody-99"),
    };
    let r = wrong.get("/api/v1/settings");
    assert_eq!(r.status, 401);
    assert!(r.header_all("WWW-Authenticate")[0].contains("error=\"invalid_token\""));
    let bad_pw = Api {
        cpmd: &cpmd,
        auth: Auth::Digest("alice", "nope", "SHA-256"),
    };
    assert_eq!(bad_pw.get("/api/v1/settings").status, 401);
    let unknown = Api {
        cpmd: &cpmd,
        auth: Auth::Digest("mallory", "x", "MD5"),
    };
    assert_eq!(unknown.get("/api/v1/settings").status, 401);
    // Credentials computed for one request-target do not open another (RFC 7616 §3.4.6).
    let first = anon.get("/api/v1/settings");
    let ch = digest_challenge(&first, "SHA-256");
    let creds = respond(&ch, "alice", "alice-pw", "GET", "/api/v1/settings", "c1", 1).unwrap();
    let h = creds.to_string();
    let r = anon.raw("GET", "/api/v1/contacts", &[("Authorization", &h)], b"");
    assert_eq!(r.status, 401);
    let r = anon.raw("GET", "/api/v1/settings", &[("Authorization", &h)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    for alg in ["SHA-256", "MD5"] {
        let a = Api {
            cpmd: &cpmd,
            auth: Auth::Digest("alice", "alice-pw", alg),
        };
        assert_eq!(a.ok("/api/v1/settings")["storage"], "all", "{alg}");
    }
    let alice = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-alice-0001"),
    };
    let r = alice.get("/api/v1/nothing-here");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "endpoint not found");
    // Test hooks are off by default.
    assert_eq!(
        alice
            .send(
                "POST",
                "/api/v1/test/files?name=x",
                Some("text/plain"),
                b"x"
            )
            .status,
        404
    );
}

/// Tokens alone (no users file) enable the API with Bearer only; neither gives 503.
#[test]
fn api_is_disabled_without_users_and_bearer_only_with_tokens() {
    let cpmd = Cpmd::spawn(&[]);
    let r = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-alice-0001"),
    }
    .get("/api/v1/conversations");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "API disabled: no users configured");
    assert_eq!(cpmd.http_get("/health").status, 200);

    let b = Cpmd::builder();
    let tokens = b.file("tokens", TOKENS);
    let cpmd = b.args(&["--api-tokens", tokens.to_str().unwrap()]).spawn();
    let r = Api {
        cpmd: &cpmd,
        auth: Auth::None,
    }
    .get("/api/v1/contacts");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header_all("WWW-Authenticate"),
        vec!["Bearer realm=\"localhost\""]
    );
    let bob = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-bob-0002"),
    };
    assert_eq!(bob.ok("/api/v1/contacts"), json!({"contacts": []}));
}

/// The contact list: add, replace, list by URI, delete (404 the second time).
#[test]
fn contacts_are_put_listed_and_deleted() {
    let cpmd = cpmd_with_api(&[]);
    let bob = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-bob-0002"),
    };
    let alice = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-alice-0001"),
    };
    for body in [
        json!({"uri": "sip:carol@localhost", "display_name": "Carol"}),
        json!({"uri": "sip:alice@localhost"}),
        json!({"uri": "sip:carol@localhost", "display_name": "Carol C."}),
    ] {
        let r = bob.json("PUT", "/api/v1/contacts", &body);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        bob.ok("/api/v1/contacts"),
        json!({"contacts": [
            {"uri": "sip:alice@localhost", "display_name": null},
            {"uri": "sip:carol@localhost", "display_name": "Carol C."},
        ]})
    );
    assert_eq!(alice.ok("/api/v1/contacts"), json!({"contacts": []}));
    assert_eq!(
        alice
            .delete("/api/v1/contacts?uri=sip%3Acarol%40localhost")
            .status,
        404
    );
    assert_eq!(
        bob.delete("/api/v1/contacts?uri=sip%3Acarol%40localhost")
            .status,
        204
    );
    assert_eq!(
        bob.delete("/api/v1/contacts?uri=sip%3Acarol%40localhost")
            .status,
        404
    );
    assert_eq!(bob.delete("/api/v1/contacts").status, 400);
    assert_eq!(
        bob.json("PUT", "/api/v1/contacts", &json!({"uri": ""}))
            .status,
        400
    );
    assert_eq!(
        bob.json("PUT", "/api/v1/contacts", &json!({"url": "x"}))
            .status,
        400
    );
    assert_eq!(
        bob.ok("/api/v1/contacts")["contacts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Settings: defaults, set, read back, refused values; "none" stops bob's copies of the next
/// MESSAGE at once (the message controller's cache), while alice keeps hers.
#[test]
fn settings_steer_what_is_kept() {
    let cpmd = cpmd_with_api(&[]);
    let bob = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-bob-0002"),
    };
    let alice = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-alice-0001"),
    };
    assert_eq!(
        bob.ok("/api/v1/settings"),
        json!({"storage": "all", "record_sessions": false})
    );
    let want = json!({"storage": "none", "record_sessions": true});
    let r = bob.json("PUT", "/api/v1/settings", &want);
    assert_eq!((r.status, r.json()), (200, want.clone()));
    assert_eq!(bob.ok("/api/v1/settings"), want);
    assert_eq!(alice.ok("/api/v1/settings")["storage"], "all");
    for bad in [
        json!({"storage": "some", "record_sessions": false}),
        json!({"storage": "all"}),
    ] {
        assert_eq!(
            bob.json("PUT", "/api/v1/settings", &bad).status,
            400,
            "{bad}"
        );
    }
    let mut ua = Ua::udp(cpmd.sip_addr()).user("alice").password("alice-pw");
    send_held(&cpmd, &mut ua, "bob", &["not kept for bob"]);
    wait_count(&alice, "sip:bob@localhost", 1);
    assert_eq!(bob.ok("/api/v1/conversations")["conversations"], json!([]));
    // Back to all: the next one is kept.
    let r = bob.json(
        "PUT",
        "/api/v1/settings",
        &json!({"storage": "all", "record_sessions": false}),
    );
    assert_eq!(r.status, 200);
    send_held(&cpmd, &mut ua, "bob", &["kept for bob"]);
    wait_count(&bob, "sip:alice@localhost", 1);
    let page = bob.ok("/api/v1/conversations/sip:alice@localhost/messages");
    assert_eq!(page["messages"][0]["body"], "kept for bob");
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
}

/// Session history (seeded with the test hook) is paged newest first; a binary message body
/// comes as base64.
#[test]
fn sessions_are_paged_and_binary_bodies_are_base64() {
    let cpmd = cpmd_with_api(&["--test-hooks", "true"]);
    let bob = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-bob-0002"),
    };
    for (i, kind) in ["chat", "call", "conference"].iter().enumerate() {
        let r = bob.json(
            "POST",
            "/api/v1/test/sessions",
            &json!({"conversation": "sip:alice@localhost", "peer": "sip:alice@localhost",
                    "kind": kind, "started_at": 1000 + i, "ended_at": 2000 + i,
                    "end_reason": "bye-callee"}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let p1 = bob.ok("/api/v1/sessions?limit=2");
    let kinds: Vec<&Value> = p1["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["kind"])
        .collect();
    assert_eq!(kinds, vec!["conference", "call"]);
    assert_eq!(p1["sessions"][0]["end_reason"], "bye-callee");
    let p2 = bob.ok(&format!(
        "/api/v1/sessions?limit=2&before={}",
        p1["next_before"]
    ));
    assert_eq!(p2["sessions"][0]["kind"], "chat");
    assert_eq!(p2["sessions"][0]["started_at"], 1000);
    assert!(p2.get("next_before").is_none());
    let alice = Api {
        cpmd: &cpmd,
        auth: Auth::Bearer("tok-alice-0001"),
    };
    assert_eq!(alice.ok("/api/v1/sessions"), json!({"sessions": []}));

    let mut ua = Ua::udp(cpmd.sip_addr()).user("alice").password("alice-pw");
    let req = ua
        .req("MESSAGE", "sip:bob@localhost")
        .body("application/octet-stream", &b"\x00\x01\xfe\xff"[..]);
    assert_eq!(ua.request(&req).status(), Some(202));
    wait_count(&bob, "sip:alice@localhost", 1);
    let m = &bob.ok("/api/v1/conversations/sip:alice@localhost/messages")["messages"][0];
    assert_eq!(m["body_encoding"], "base64");
    assert_eq!(m["body"], "AAH+/w==");
}
