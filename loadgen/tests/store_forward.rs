//! Store and forward through the real `cpmd` (issue 5, CPM.md §7): `message --expect 202`
//! to users that are offline (the `uas` registers them only after `--register-after`) gets a
//! 202 per message (durably held); when the users register, cpmd delivers every message once
//! and in the order sent.

mod support;

use std::time::Duration;

use cpm_tests::Cpmd;
use support::{assert_all_succeeded, json, quantity, run, TempDir, Uas};

const T: Duration = Duration::from_secs(60);

#[test]
fn messages_to_offline_users_are_stored_then_delivered_once_in_order() {
    let lines: String = (0..3).map(|i| format!("user{i:04} pw{i:04}\n")).collect();
    let cpmd = Cpmd::builder().users(&lines).spawn();
    let dir = TempDir::new();
    let users = dir.write("users", &lines);
    let (sender, receiver) = (dir.path().join("c.json"), dir.path().join("s.json"));
    let target = cpmd.sip_addr().to_string();
    // Ready at once; registers only after 3 s.
    let uas = Uas::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--register-to",
        &target,
        "--users",
        "3",
        "--users-file",
        users.to_str().unwrap(),
        "--register-after",
        "3",
        "--duration",
        "50",
        "--json",
        receiver.to_str().unwrap(),
    ]);
    let out = run(
        &[
            "message",
            "--target",
            &target,
            "--users",
            "3",
            // 150 ms between two messages to one user: the order cpmd stores them in (its
            // workers take them as they come, each on its own Call-ID) is the order sent.
            "--rate",
            "20",
            "--count",
            "60",
            "--expect",
            "202",
            "--json",
            sender.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(out.code, 0, "{out:?}\ncpmd log:\n{}", cpmd.log());
    let v = json(&sender);
    assert_all_succeeded(&v, "message", 60);
    assert_eq!(v["counters"]["messages_stored"], 60, "{v:#}");
    assert!(v["counters"]["messages_delivered"].is_null(), "{v:#}");
    assert!(out.stdout.contains("202 stored 60"), "{}", out.stdout);
    assert_eq!(cpmd.metric("cpm_messages_held_total"), 60.0);
    // The users register: all 60 come.
    let delivered = cpmd.wait_metric(
        "cpm_messages_held_done_total{outcome=\"delivered\"}",
        Duration::from_secs(30),
        |v| v == 60.0,
    );
    assert_eq!(delivered, 60.0, "{}", cpmd.metrics());
    let u = uas.stop();
    assert_eq!(u.code, 0, "{u:?}");
    let r = json(&receiver);
    assert_all_succeeded(&r, "uas", 60);
    assert_eq!(quantity(&r, "message_delivery"), 60);
    for bad in [
        "messages_duplicate",
        "messages_out_of_order",
        "messages_without_stamp",
    ] {
        assert!(
            r["counters"][bad].is_null(),
            "{bad}: receiver {}\nsender {}",
            r["counters"],
            v["counters"]
        );
    }
}
