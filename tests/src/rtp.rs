//! RTP for interop tests: the UDP payloads of a pcap capture (what SIPp's `play_pcap_audio`
//! sends), and [`RtpSink`], a UDP socket on a thread that records every datagram it gets and
//! can echo it to its sender (like SIPp's `-rtp_echo`), so a test counts packets exactly;
//! [`RtpEndpoint`], the media socket of a scripted peer that sends numbered RTP and collects
//! what comes back.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The capture SIPp plays in the interop call scenarios (Debian `sip-tester`).
pub const G711A_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

/// The UDP payloads of the IPv4/UDP packets of a classic pcap file (Ethernet or raw-IP link
/// type), in capture order; other packets are skipped.
pub fn pcap_udp_payloads(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_pcap_udp(&b).map_err(|e| format!("{}: {e}", path.display()))
}

/// [`pcap_udp_payloads`] on the bytes of the file.
pub fn parse_pcap_udp(b: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let head = b.get(..24).ok_or("short pcap header")?;
    let le = match head[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err("not a pcap file".into()),
    };
    let u32_at = |s: &[u8], i: usize| -> u32 {
        let v = [s[i], s[i + 1], s[i + 2], s[i + 3]];
        if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        }
    };
    let link = u32_at(head, 20);
    let ip_offset = match link {
        1 => 14,        // Ethernet
        101 | 228 => 0, // raw IP, raw IPv4
        113 => 16,      // Linux cooked capture
        other => return Err(format!("link type {other} not supported")),
    };
    let mut out = Vec::new();
    let mut pos = 24;
    while pos + 16 <= b.len() {
        let incl = u32_at(b, pos + 8) as usize;
        let frame = b
            .get(pos + 16..pos + 16 + incl)
            .ok_or("truncated pcap record")?;
        pos += 16 + incl;
        let Some(ip) = frame.get(ip_offset..) else {
            continue;
        };
        // IPv4 with protocol 17 (UDP) only.
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        if udp.len() < 8 {
            continue;
        }
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        let end = udp_len.clamp(8, udp.len());
        out.push(udp[8..end].to_vec());
    }
    Ok(out)
}

/// The RTP sequence number of a packet (RFC 3550 §5.1), if it is long enough.
pub fn rtp_seq(pkt: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]))
}

/// The payload of an RTP packet after its fixed header and CSRCs (RFC 3550 §5.1).
pub fn rtp_payload(pkt: &[u8]) -> Option<&[u8]> {
    let first = *pkt.first()?;
    if first >> 6 != 2 {
        return None;
    }
    let csrc = usize::from(first & 0x0f);
    pkt.get(12 + 4 * csrc..)
}

/// One datagram an [`RtpSink`] received.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Its source.
    pub from: SocketAddr,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// A UDP socket on 127.0.0.1 served by a thread that records every datagram and, if asked,
/// echoes it back to its source. Stops (and joins) on drop.
#[derive(Debug)]
pub struct RtpSink {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Datagram>>>,
    echoed: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RtpSink {
    /// Binds `127.0.0.1:port` and starts recording; `echo` sends each datagram back.
    pub fn bind(port: u16, echo: bool) -> RtpSink {
        let sock = UdpSocket::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind RTP sink on 127.0.0.1:{port}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set_read_timeout");
        let addr = sock.local_addr().expect("local_addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let echoed = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (got, echoed, stop) = (got.clone(), echoed.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    // Recorded before the echo leaves, so a peer that got its echo sees it.
                    got.lock().expect("datagrams").push(Datagram {
                        from,
                        data: buf[..n].to_vec(),
                    });
                    if echo && sock.send_to(&buf[..n], from).is_ok() {
                        *echoed.lock().expect("echo count") += 1;
                    }
                }
            })
        };
        RtpSink {
            addr,
            got,
            echoed,
            stop,
            thread: Some(thread),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every datagram received so far.
    pub fn received(&self) -> Vec<Datagram> {
        self.got.lock().expect("datagrams").clone()
    }

    /// How many datagrams were echoed.
    pub fn echoed(&self) -> usize {
        *self.echoed.lock().expect("echo count")
    }
}

impl Drop for RtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An RTP packet (RFC 3550 §5.1): version 2, no padding, extension or CSRC, marker clear,
/// then `payload_len` bytes of 0xd5 (G.711 A-law silence).
pub fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload_len);
    p.extend_from_slice(&[0x80, pt & 0x7f]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.resize(12 + payload_len, 0xd5);
    p
}

/// The SSRC of an RTP packet (RFC 3550 §5.1), if it is long enough.
pub fn rtp_ssrc(pkt: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(pkt.get(8..12)?.try_into().ok()?))
}

/// The media socket of a scripted peer: one UDP socket on 127.0.0.1 that sends numbered RTP
/// packets (20 ms of G.711 each) and collects what arrives, so a test counts a stream exactly.
#[derive(Debug)]
pub struct RtpEndpoint {
    sock: UdpSocket,
    addr: SocketAddr,
    ssrc: u32,
    seq: u16,
    ts: u32,
}

impl RtpEndpoint {
    /// Binds an ephemeral port of 127.0.0.1 with a random-looking SSRC.
    pub fn bind() -> RtpEndpoint {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind RTP endpoint on 127.0.0.1:0");
        let addr = sock.local_addr().expect("local_addr");
        let ssrc = u32::from_str_radix(&crate::util::token()[..8], 16).expect("hex token");
        RtpEndpoint {
            sock,
            addr,
            ssrc,
            seq: ssrc as u16,
            ts: ssrc.rotate_left(7),
        }
    }

    /// The bound address (the port to put in an SDP `m=` line).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The SSRC of the packets it sends.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Sends `count` packets of payload type `pt` to `dest`, numbered on from the last one
    /// sent; returns their sequence numbers.
    pub fn send(&mut self, dest: SocketAddr, count: usize, pt: u8) -> Vec<u16> {
        (0..count)
            .map(|_| {
                let seq = self.seq;
                let pkt = rtp_packet(pt, seq, self.ts, self.ssrc, 160);
                self.sock
                    .send_to(&pkt, dest)
                    .unwrap_or_else(|e| panic!("RTP send to {dest}: {e}"));
                self.seq = self.seq.wrapping_add(1);
                self.ts = self.ts.wrapping_add(160);
                seq
            })
            .collect()
    }

    /// Every datagram that arrives until `count` have come or `timeout` passed, and then for
    /// `settle` longer (to see any beyond `count`).
    pub fn recv(&self, count: usize, timeout: Duration, settle: Duration) -> Vec<Datagram> {
        let mut got = Vec::new();
        let mut deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        let mut settling = false;
        loop {
            if !settling && got.len() >= count {
                settling = true;
                deadline = Instant::now() + settle;
            }
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            else {
                return got;
            };
            self.sock
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => got.push(Datagram {
                    from,
                    data: buf[..n].to_vec(),
                }),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // ICMP port unreachable from an earlier send.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => panic!("RTP recv: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap (Ethernet link type) holding `payloads` as UDP datagrams 127.0.0.1:5000 → :6000.
    fn pcap(payloads: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for p in payloads {
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + 8 + p.len()) as u16;
            frame.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
            frame[16..18].copy_from_slice(&total.to_be_bytes());
            frame.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
            frame.extend_from_slice(&5000u16.to_be_bytes());
            frame.extend_from_slice(&6000u16.to_be_bytes());
            frame.extend_from_slice(&((8 + p.len()) as u16).to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(p);
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            b.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            b.extend_from_slice(&frame);
        }
        b
    }

    #[test]
    fn reads_udp_payloads_of_a_pcap() {
        let rtp = [0x80, 8, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0xd5, 0xd5];
        let b = pcap(&[&rtp, b"second"]);
        let p = parse_pcap_udp(&b).unwrap();
        assert_eq!(p, vec![rtp.to_vec(), b"second".to_vec()]);
        assert_eq!(rtp_seq(&p[0]), Some(7));
        assert_eq!(rtp_payload(&p[0]), Some(&[0xd5, 0xd5][..]));
        assert_eq!(rtp_payload(b"second"), None);
        assert!(parse_pcap_udp(&b[..b.len() - 1]).is_err());
        assert!(parse_pcap_udp(b"nonsense").is_err());
    }

    #[test]
    fn endpoints_number_their_packets() {
        let mut a = RtpEndpoint::bind();
        let b = RtpEndpoint::bind();
        let seqs = a.send(b.addr(), 3, 8);
        assert_eq!(seqs.len(), 3);
        assert_eq!(seqs[1], seqs[0].wrapping_add(1));
        let got = b.recv(3, Duration::from_secs(2), Duration::from_millis(50));
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|d| d.from == a.addr()));
        let p = &got[2].data;
        assert_eq!((p.len(), p[1]), (172, 8));
        assert_eq!(rtp_seq(p), Some(seqs[2]));
        assert_eq!(rtp_ssrc(p), Some(a.ssrc()));
        assert_eq!(rtp_payload(p).map(<[u8]>::len), Some(160));
    }

    #[test]
    fn sink_records_and_echoes() {
        let sink = RtpSink::bind(0, true);
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for i in 0..3u8 {
            peer.send_to(&[i], sink.addr()).unwrap();
            let mut buf = [0u8; 8];
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i]);
        }
        let got = sink.received();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].data, vec![2]);
        assert_eq!(got[0].from, peer.local_addr().unwrap());
        // The count is bumped after the echo leaves.
        let echoed = crate::util::poll_until(Duration::from_secs(1), || {
            (sink.echoed() == 3).then_some(())
        });
        assert!(echoed.is_some(), "echoed {}", sink.echoed());
    }
}
