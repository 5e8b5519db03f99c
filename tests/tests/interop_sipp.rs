//! Interop with SIPp (Debian `sip-tester`) at both ends: OPTIONS over UDP and TCP, and REGISTER
//! plus MESSAGE delivery through cpmd between SIPp user agents. Bounded by `-m` and `-timeout`.

use std::time::Duration;

use cpm_tests::sipp::{scenario, Sipp, SippResult};
use cpm_tests::util::free_udp_port;
use cpm_tests::Cpmd;

/// How long one SIPp run may take (its own `-timeout` is shorter).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Common SIPp arguments: local IP, a free local port, bounds, no stdin.
fn base_args(port: &str) -> Vec<String> {
    [
        "-i",
        "127.0.0.1",
        "-p",
        port,
        "-timeout",
        "20s",
        "-timeout_error",
        "-recv_timeout",
        "10000",
        "-nostdin",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(name: &str, args: Vec<String>) -> Sipp {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Sipp::spawn(name, &refs)
}

#[track_caller]
fn assert_all_succeeded(r: &SippResult, calls: u64, cpmd: &Cpmd) {
    assert!(
        r.status.success() && r.successful == calls && r.failed == 0,
        "sipp: {} ({} successful, {} failed, wanted {calls}); output:\n{}\ncpmd log:\n{}",
        r.status,
        r.successful,
        r.failed,
        r.output,
        cpmd.log()
    );
}

fn options(transport: &str) {
    let cpmd = Cpmd::spawn(&[]);
    let scen = scenario("options.xml");
    let port = free_udp_port().to_string();
    let mut args = base_args(&port);
    args.extend(
        [
            "-sf",
            scen.to_str().unwrap(),
            "-t",
            transport,
            "-m",
            "5",
            "-r",
            "5",
            &cpmd.sip_addr().to_string(),
        ]
        .map(String::from),
    );
    let r = run("options", args).wait(RUN_LIMIT);
    assert_all_succeeded(&r, 5, &cpmd);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_options_udp() {
    options("u1");
}

#[test]
#[ignore = "needs sipp"]
fn sipp_options_tcp() {
    options("t1");
}

/// bob's device (SIPp UAS) is registered by a SIPp UAC; alice (SIPp UAC) registers and sends a
/// MESSAGE to bob through cpmd; bob's device receives it and answers 200, which alice gets.
#[test]
#[ignore = "needs sipp"]
fn sipp_register_and_message() {
    let cpmd = Cpmd::spawn(&[]);
    let target = cpmd.sip_addr().to_string();

    let bob_port = free_udp_port().to_string();
    let uas = scenario("message_uas.xml");
    let mut args = base_args(&bob_port);
    args.extend(["-sf", uas.to_str().unwrap(), "-m", "1"].map(String::from));
    let bob_device = run("bob-device", args);

    let reg = scenario("register.xml");
    let mut args = base_args(&free_udp_port().to_string());
    args.extend(
        [
            "-sf",
            reg.to_str().unwrap(),
            "-key",
            "user",
            "bob",
            "-key",
            "contact_port",
            &bob_port,
            "-m",
            "1",
            &target,
        ]
        .map(String::from),
    );
    let r = run("bob-register", args).wait(RUN_LIMIT);
    assert_all_succeeded(&r, 1, &cpmd);

    let alice = scenario("register_message.xml");
    let mut args = base_args(&free_udp_port().to_string());
    args.extend(
        [
            "-sf",
            alice.to_str().unwrap(),
            "-key",
            "to",
            "bob",
            "-m",
            "1",
            &target,
        ]
        .map(String::from),
    );
    let r = run("alice", args).wait(RUN_LIMIT);
    assert_all_succeeded(&r, 1, &cpmd);

    let r = bob_device.wait(RUN_LIMIT);
    assert_all_succeeded(&r, 1, &cpmd);
}
