//! Talking to a conference mixer from tests: each party sends a G.711 µ-law tone (or silence)
//! every 20 ms from its RTP socket to the focus and records what comes back, and the
//! recordings are checked for the tones they should and should not hold (Goertzel).

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use cpm_engine::conference::audio::{g711, tone};

/// Every party sends its tone (`None`: silence) from its socket to its focus address for
/// `dur`, each from a thread of its own with SSRC `ssrc_base + index`; returns what each heard
/// (decoded µ-law samples of the PCMU packets received).
pub fn play(
    parties: &[(UdpSocket, SocketAddr)],
    freqs: &[Option<f64>],
    dur: Duration,
    ssrc_base: u32,
) -> Vec<Vec<i16>> {
    let handles: Vec<_> = parties
        .iter()
        .zip(freqs)
        .enumerate()
        .map(|(i, ((sock, dest), &f))| {
            let sock = sock.try_clone().expect("clone the RTP socket");
            let dest = *dest;
            thread::spawn(move || tone_loop(sock, dest, f, dur, ssrc_base + i as u32))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("tone thread"))
        .collect()
}

/// Sends a tone at `freq` (-15 dBov; `None`: silence) every 20 ms to `dest` for `dur`, and
/// returns what arrived meanwhile.
pub fn tone_loop(
    sock: UdpSocket,
    dest: SocketAddr,
    freq: Option<f64>,
    dur: Duration,
    ssrc: u32,
) -> Vec<i16> {
    sock.set_read_timeout(Some(Duration::from_millis(2)))
        .expect("read timeout");
    let mut sine = freq.map(|f| tone::Sine::new(f, -15.0));
    let start = Instant::now();
    let mut next = start;
    let (mut seq, mut ts) = (0u16, 0u32);
    let (mut heard, mut buf) = (Vec::new(), [0u8; 2048]);
    while start.elapsed() < dur {
        if Instant::now() >= next {
            let mut frame = [0i16; 160];
            if let Some(s) = sine.as_mut() {
                s.fill(&mut frame);
            }
            let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            pkt[4..8].copy_from_slice(&ts.to_be_bytes());
            pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
            let mut payload = [0u8; 160];
            g711::ulaw_encode(&frame, &mut payload);
            pkt.extend_from_slice(&payload);
            let _ = sock.send_to(&pkt, dest);
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
            next += Duration::from_millis(20);
        }
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n > 12 && buf[1] & 0x7f == 0 {
                let mut out = vec![0i16; n - 12];
                g711::ulaw_decode(&buf[12..n], &mut out);
                heard.extend_from_slice(&out);
            }
        }
    }
    heard
}

/// The level (dBov) of `freq` in the last second of `heard`.
pub fn level(heard: &[i16], freq: f64) -> f64 {
    let n = heard.len().min(8000);
    tone::goertzel_dbov(&heard[heard.len() - n..], freq)
}

/// `heard` (at least a second of it) holds every tone of `present` (over -35 dBov) and none
/// of `absent` (under -45 dBov).
#[track_caller]
pub fn assert_hears(heard: &[i16], present: &[f64], absent: &[f64], who: &str) {
    assert!(
        heard.len() >= 8000,
        "{who} heard only {} samples",
        heard.len()
    );
    for &f in present {
        let l = level(heard, f);
        assert!(l > -35.0, "{who} should hear {f} Hz, level {l:.1} dBov");
    }
    for &f in absent {
        let l = level(heard, f);
        assert!(l < -45.0, "{who} should not hear {f} Hz, level {l:.1} dBov");
    }
}
