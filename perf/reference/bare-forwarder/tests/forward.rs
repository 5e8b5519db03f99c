//! The forwarder relays every datagram of two pairs both ways, exactly, and reports it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use cpm_bare_forwarder::Forwarder;

/// Packets each client sends after latching.
const N: u32 = 5000;
/// Packets in flight per client before the peers read them (well below the socket buffers).
const WINDOW: u32 = 50;

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A datagram: who sent it (pair, side) and its number, then filler up to 172 bytes (RTP-sized).
fn packet(pair: u8, side: u8, seq: u32) -> Vec<u8> {
    let mut p = vec![pair, side];
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(172, 0xd5);
    p
}

fn recv(s: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let (n, _) = s
        .recv_from(&mut buf)
        .expect("a forwarded datagram within 5 s");
    buf[..n].to_vec()
}

/// Latches both sides of every pair, then sends N packets each way through each pair and checks
/// that each arrives once, in order, unchanged, at the other side only.
fn exchange(ports: &[SocketAddr]) -> u64 {
    let pairs = ports.len() / 2;
    let clients: Vec<UdpSocket> = (0..ports.len()).map(|_| client()).collect();
    for pair in 0..pairs {
        let (a, b) = (&clients[2 * pair], &clients[2 * pair + 1]);
        // A latches its port first (nothing to forward to yet: dropped), then B's packet
        // latches B's port and is forwarded to A.
        a.send_to(b"latch", ports[2 * pair]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        b.send_to(b"latch", ports[2 * pair + 1]).unwrap();
        assert_eq!(recv(a), b"latch");
    }
    for start in (0..N).step_by(WINDOW as usize) {
        let end = (start + WINDOW).min(N);
        for seq in start..end {
            for (i, c) in clients.iter().enumerate() {
                c.send_to(&packet((i / 2) as u8, (i % 2) as u8, seq), ports[i])
                    .unwrap();
            }
        }
        for seq in start..end {
            for (i, c) in clients.iter().enumerate() {
                // Client i receives what its pair partner (i ^ 1) sent.
                assert_eq!(recv(c), packet((i / 2) as u8, ((i ^ 1) % 2) as u8, seq));
            }
        }
    }
    u64::from(N) * ports.len() as u64
}

#[test]
fn forwards_every_packet_both_ways_through_two_pairs() {
    let sockets: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut fwd = Forwarder::new(sockets, 16).unwrap();
    let ports = fwd.local_addrs().unwrap();
    let stop = fwd.stop_handle().unwrap();
    let relay = std::thread::spawn(move || fwd.run(None, |_| {}).unwrap());

    let forwarded = exchange(&ports);

    // Nothing else arrives anywhere.
    stop.stop().unwrap();
    let report = relay.join().unwrap();
    let c = report.counters;
    let latches = 2 * 2; // two pairs, two latch packets each
    assert_eq!(c.rx_packets, forwarded + latches);
    assert_eq!(
        c.tx_packets,
        forwarded + 2,
        "each pair's first latch packet had nowhere to go"
    );
    assert_eq!(c.dropped_unlatched, 2);
    assert_eq!(c.dropped_full, 0);
    assert_eq!(c.tx_bytes, forwarded * 172 + 2 * 5);
    assert!(c.rx_calls > 0 && c.rx_calls <= c.rx_packets);
}

/// Two consecutive free UDP ports on 127.0.0.1 (probed, then released); each call of this test
/// process starts its search elsewhere, so that tests running in parallel do not pick the same.
fn free_pair() -> u16 {
    static CALLS: AtomicU16 = AtomicU16::new(0);
    let start =
        (std::process::id() % 500) as u16 * 8 + CALLS.fetch_add(1, Ordering::Relaxed) * 4000;
    for k in 0..5000u16 {
        let base = 20000 + (start + 2 * k) % 20000;
        if let (Ok(_a), Ok(_b)) = (
            UdpSocket::bind(("127.0.0.1", base)),
            UdpSocket::bind(("127.0.0.1", base + 1)),
        ) {
            return base;
        }
    }
    panic!("no two free consecutive ports");
}

#[test]
fn the_binary_relays_and_prints_its_counters_on_sigint() {
    let lo = free_pair();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bare-forwarder"))
        .args([
            "--listen",
            &format!("127.0.0.1:{lo}-{}", lo + 1),
            "--batch",
            "8",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once it has announced itself on stderr.
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("on 1 pairs"), "{line}");

    let ports: Vec<SocketAddr> = [lo, lo + 1]
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let forwarded = exchange(&ports);

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!(" tx_packets={} ", forwarded + 1)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(" rx_packets={} ", forwarded + 2)),
        "{stdout}"
    );
}

#[test]
fn rtp_pairs_counts_every_packet_it_sends_through_the_binary() {
    let lo = free_pair();
    let range = format!("127.0.0.1:{lo}-{}", lo + 1);
    let mut fwd = Command::new(env!("CARGO_BIN_EXE_bare-forwarder"))
        .args(["--listen", &range])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(fwd.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();

    let json = std::env::temp_dir().join(format!("rtp-pairs-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_rtp-pairs"))
        .args([
            "--target",
            &range,
            "--streams",
            "1",
            "--duration",
            "1",
            "--pps",
            "200",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    Command::new("kill")
        .args(["-INT", &fwd.id().to_string()])
        .status()
        .unwrap();
    let fwd_out = String::from_utf8(fwd.wait_with_output().unwrap().stdout).unwrap();
    let report = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One stream, both ways, 200 packets/s for 1 s.
    assert!(
        report.contains("\"sent\": 400, \"received\": 400, \"lost\": 0"),
        "{report}"
    );
    // Plus side B's latch packet (side A's had nowhere to go).
    assert!(fwd_out.contains(" tx_packets=401 "), "{fwd_out}");
}
