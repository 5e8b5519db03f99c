//! The client scenarios against the real `cpmd` (built and run like `tests/` does): digest
//! registrations from a users file, and MESSAGEs routed by cpmd to `cpm-loadgen uas` users
//! registered there.

mod support;

use std::time::Duration;

use cpm_tests::Cpmd;
use support::{assert_all_succeeded, json, quantity, run, TempDir, Uas};

const T: Duration = Duration::from_secs(60);

/// `user0000 pw0000` .. for `n` users, cpmd's users-file format.
fn users_file(n: u32) -> String {
    (0..n).map(|i| format!("user{i:04} pw{i:04}\n")).collect()
}

#[test]
fn register_with_digest_from_a_users_file() {
    let lines = users_file(20);
    let cpmd = Cpmd::builder().users(&lines).spawn();
    let dir = TempDir::new();
    let users = dir.write("users", &lines);
    let report = dir.path().join("register.json");
    let target = cpmd.sip_addr().to_string();
    let out = run(
        &[
            "register",
            "--target",
            &target,
            "--users",
            "20",
            "--users-file",
            users.to_str().unwrap(),
            "--rate",
            "100",
            "--count",
            "60",
            "--json",
            report.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(out.code, 0, "{out:?}\ncpmd log:\n{}", cpmd.log());
    let v = json(&report);
    assert_all_succeeded(&v, "register", 60);
    assert_eq!(quantity(&v, "registration"), 60);
    // Each registration: challenged once, then accepted.
    assert_eq!(quantity(&v, "request_register"), 120);
    // 20 users, 20 distinct contacts in cpmd's registrar.
    let bindings = cpmd.wait_metric("cpm_registered_contacts", Duration::from_secs(5), |b| {
        b >= 20.0
    });
    assert_eq!(bindings, 20.0, "{}", cpmd.metrics());
}

#[test]
fn register_with_a_wrong_password_fails() {
    let cpmd = Cpmd::builder().users(&users_file(2)).spawn();
    let target = cpmd.sip_addr().to_string();
    let out = run(
        &[
            "register",
            "--target",
            &target,
            "--users",
            "2",
            "--password",
            "nope",
            "--rate",
            "50",
            "--count",
            "4",
        ],
        T,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("4 failed"), "{out:?}");
    assert!(out.stdout.contains("credentials rejected"), "{out:?}");
}

#[test]
fn message_through_cpmd_to_registered_uas_users() {
    let lines = users_file(5);
    let cpmd = Cpmd::builder().users(&lines).spawn();
    let dir = TempDir::new();
    let users = dir.write("users", &lines);
    let sender = dir.path().join("sender.json");
    let receiver = dir.path().join("receiver.json");
    let target = cpmd.sip_addr().to_string();
    let uas = Uas::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--register-to",
        &target,
        "--users",
        "5",
        "--users-file",
        users.to_str().unwrap(),
        "--duration",
        "60",
        "--json",
        receiver.to_str().unwrap(),
    ]);
    let out = run(
        &[
            "message",
            "--target",
            &target,
            "--users",
            "5",
            "--rate",
            "100",
            "--count",
            "100",
            "--json",
            sender.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(out.code, 0, "{out:?}\ncpmd log:\n{}", cpmd.log());
    let v = json(&sender);
    assert_all_succeeded(&v, "message", 100);
    let u = uas.stop();
    assert_eq!(u.code, 0, "{u:?}");
    assert!(
        u.stdout.contains("registered at ") && u.stdout.contains(": 5 ok, 0 failed"),
        "{u:?}"
    );
    let r = json(&receiver);
    // Every MESSAGE reached one of the five users, through cpmd.
    assert_all_succeeded(&r, "uas", 100);
    assert_eq!(quantity(&r, "message_delivery"), 100);
    assert_eq!(quantity(&r, "registration"), 5);
    // The uas unregistered its users when stopped.
    let left = cpmd.wait_metric("cpm_registered_contacts", Duration::from_secs(5), |b| {
        b == 0.0
    });
    assert_eq!(left, 0.0);
}

#[test]
fn message_through_cpmd_with_an_in_process_receiver() {
    let lines = users_file(3);
    let cpmd = Cpmd::builder().users(&lines).spawn();
    let dir = TempDir::new();
    let users = dir.write("users", &lines);
    let report = dir.path().join("message.json");
    let target = cpmd.sip_addr().to_string();
    let out = run(
        &[
            "message",
            "--target",
            &target,
            "--receiver",
            "127.0.0.1:0",
            "--users",
            "3",
            "--users-file",
            users.to_str().unwrap(),
            "--rate",
            "100",
            "--count",
            "60",
            "--json",
            report.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(out.code, 0, "{out:?}\ncpmd log:\n{}", cpmd.log());
    let v = json(&report);
    assert_all_succeeded(&v, "message", 60);
    assert_eq!(quantity(&v, "message_delivery"), 60);
    assert!(
        out.stdout.contains("receiver registered at ") && out.stdout.contains(": 3 ok, 0 failed"),
        "{out:?}"
    );
}
