//! Overload control (issue 7, "Overload and floods"): a worker whose messages queue too long is
//! overloaded; new INVITEs and MESSAGEs for it get 503 with Retry-After from the receiving
//! task, while registrations and everything the other worker owns go on; it recovers by itself.
//!
//! Saturation is injected: `X-Cpm-Test: stall-ms=N` (`--test-hooks`) keeps worker 0's thread
//! busy, while requests for it received by worker 1's socket queue in its mailbox.

use std::time::{Duration, Instant};

use cpm_tests::{assert_status, header, Cpmd, Ua};

const WORKERS: u64 = 2;

/// A fresh Call-ID owned by worker `w` (owner = FNV-1a(Call-ID) mod workers, decision 0002).
fn call_id_of(w: u64, n: &mut u64) -> String {
    loop {
        *n += 1;
        let cid = format!("ov-{n}@test");
        if cpm_engine::hash::fnv1a(cid.as_bytes()) % WORKERS == w {
            return cid;
        }
    }
}

fn message(ua: &mut Ua, call_id: &str) -> cpm_tests::Req {
    ua.req("MESSAGE", "sip:bob@localhost")
        .set("Call-ID", call_id)
        .body("text/plain", "hello")
}

#[test]
fn an_overloaded_worker_sheds_new_work_and_recovers() {
    let cpmd = Cpmd::spawn(&[
        "--test-hooks",
        "true",
        "--workers",
        "2",
        "--overload-delay",
        "100",
    ]);
    let mut n = 0;
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    assert_status(&alice.register(300), 200);

    // Worker 0 is busy for 800 ms; meanwhile requests for it pile up in its mailbox.
    let mut staller = Ua::udp(cpmd.sip_addr());
    let stall = staller
        .req("OPTIONS", "sip:localhost")
        .set("Call-ID", call_id_of(0, &mut n))
        .header("X-Cpm-Test", "stall-ms=800");
    staller.send_req(&stall);
    std::thread::sleep(Duration::from_millis(50));
    let mut crowd: Vec<Ua> = (0..30).map(|_| Ua::udp(cpmd.sip_addr())).collect();
    for ua in &mut crowd {
        let r = ua
            .req("OPTIONS", "sip:localhost")
            .set("Call-ID", call_id_of(0, &mut n));
        ua.send_req(&r);
    }
    assert!(
        staller.recv(Duration::from_secs(5)).is_some(),
        "the stalled request is answered"
    );
    for ua in &mut crowd {
        assert!(
            ua.recv(Duration::from_secs(5)).is_some(),
            "queued OPTIONS answered"
        );
    }

    // Overloaded: a new MESSAGE and a new INVITE for worker 0 get 503 + Retry-After at once.
    let m = message(&mut alice, &call_id_of(0, &mut n));
    let resp = alice.request(&m);
    assert_status(&resp, 503);
    assert!(
        header(&resp, "Retry-After").is_some_and(|v| v.trim().parse::<u32>().is_ok()),
        "no Retry-After:\n{resp}"
    );
    let invite = alice
        .req("INVITE", "sip:bob@localhost")
        .set("Call-ID", call_id_of(0, &mut n))
        .header("Contact", format!("<{}>", alice.contact_uri()));
    let resp = alice.request(&invite);
    assert_status(&resp, 503);
    alice.ack(&invite, &resp);
    bob.expect_silence(
        Duration::from_millis(200),
        "a request shed by overload control",
    );
    assert!(cpmd.metric("cpm_overload_refused_total") >= 2.0);
    assert_eq!(cpmd.metric("cpm_overloaded_workers"), 1.0);

    // Registrations still go through on the overloaded worker.
    let mut carol = Ua::udp(cpmd.sip_addr()).user("carol");
    let reg = carol
        .register_req(Some(300))
        .set("Call-ID", call_id_of(0, &mut n));
    assert_status(&carol.request(&reg), 200);

    // Worker 1 is not overloaded: its new work goes on.
    let m = message(&mut alice, &call_id_of(1, &mut n));
    alice.send_req(&m);
    let got = bob
        .recv_request(Duration::from_secs(5))
        .expect("bob gets the MESSAGE worker 1 owns");
    bob.reply(&got, 200, "OK");
    let resp = alice
        .await_final(&m, Duration::from_secs(5))
        .expect("the 200 relayed to alice");
    assert_status(&resp, 200);

    // A second after the queue drained, worker 0 takes new work again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if cpmd.metric("cpm_overloaded_workers") == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "worker 0 never recovered");
    }
    let m = message(&mut alice, &call_id_of(0, &mut n));
    alice.send_req(&m);
    let got = bob
        .recv_request(Duration::from_secs(5))
        .expect("bob gets the MESSAGE after the recovery");
    bob.reply(&got, 200, "OK");
    let resp = alice
        .await_final(&m, Duration::from_secs(5))
        .expect("the 200 relayed to alice");
    assert_status(&resp, 200);
}
