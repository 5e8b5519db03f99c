//! Crash and restart under load (issue 7, "Faults"): `kill -9` of cpmd while a load generator
//! stores messages for offline users, then a restart on the same data directory: every message
//! cpmd acknowledged with 202 is still there and delivered exactly once when its user
//! registers, and the restarted server answers at once. (The test harness restarts cpmd on a
//! fresh SIP port, so the sender's requests after the kill go unanswered; the users' AORs are
//! `@localhost`, not the port, so their held messages survive the move.)

use std::time::{Duration, Instant};

use cpm_tests::soak::{artifact_dir, bin_dir, Loadgen};
use cpm_tests::{assert_status, Cpmd, Ua};

#[test]
fn kill_9_under_load_loses_no_acknowledged_message() {
    let bins = bin_dir(false);
    let loadgen = bins.join("cpm-loadgen");
    let dir = artifact_dir().join("crash");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create target/soak/crash");
    let cpmd = Cpmd::spawn(&["--workers", "2"]);
    let t0 = Instant::now();
    let spawn = |name: &str, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Loadgen::spawn(&loadgen, &dir, name, &args, t0)
    };
    let target = cpmd.sip_addr().to_string();
    let sender = spawn(
        "sender",
        &[
            "message",
            "--target",
            &target,
            "--to",
            "off%04d",
            "--users",
            "10",
            "--from",
            "sender",
            "--domain",
            "localhost",
            "--expect",
            "202",
            "--rate",
            "200",
            "--duration",
            "4",
            "--drain",
            "3",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    let cpmd = cpmd.crash_and_restart();
    let restart = killed.elapsed();
    // It serves at once.
    let mut ua = Ua::udp(cpmd.sip_addr());
    let probe = ua.req("OPTIONS", "sip:localhost");
    let answered = Instant::now();
    let resp = ua
        .try_request(&probe, Duration::from_secs(1))
        .expect("the restarted cpmd answers within a second");
    assert_status(&resp, 200);
    let first_answer = answered.elapsed();
    let sender = sender.wait(Duration::from_secs(60));
    let acked = sender.num("succeeded");
    assert!(
        acked > 0,
        "nothing was stored before the kill: {}",
        sender.stdout
    );

    // The users register at the restarted cpmd: every held message comes.
    let new_target = cpmd.sip_addr().to_string();
    let mut uas = spawn(
        "uas",
        &[
            "uas",
            "--listen",
            "127.0.0.1:0",
            "--register-to",
            &new_target,
            "--user-pattern",
            "off%04d",
            "--domain",
            "localhost",
            "--users",
            "10",
            "--duration",
            "30",
        ],
    );
    uas.wait_ready(Duration::from_secs(30));
    // Deliveries settle: at least every acknowledged one, then nothing more for a second.
    let series = "cpm_messages_held_done_total{outcome=\"delivered\"}";
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut last = (cpmd.metric(series), Instant::now());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = cpmd.metric(series);
        if now != last.0 {
            last = (now, Instant::now());
        } else if now >= acked as f64 && last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    let held = last.0;
    let uas = uas.stop(Duration::from_secs(30));
    let delivered = uas.count("message_delivery");
    let duplicates = uas.note("messages_duplicate");
    eprintln!(
        "crash: kill -9 after 2 s of 200 messages/s for offline users; restart took {:.0} ms \
         (first answer {:.1} ms after ready); {acked} acknowledged with 202 before and after \
         the kill, {delivered} delivered after the restart, {duplicates} duplicates ({held} \
         counted by cpmd)",
        restart.as_secs_f64() * 1e3,
        first_answer.as_secs_f64() * 1e3,
    );
    assert_eq!(duplicates, 0, "{}", uas.stdout);
    assert!(
        delivered >= acked,
        "{acked} acknowledged but {delivered} delivered:\n{}\n{}",
        sender.stdout,
        uas.stdout
    );
    assert!(delivered <= sender.num("attempted"));
}
