//! Key-frame requests sent to a video sender when it becomes the forwarded source: RTCP PLI
//! (RFC 4585 §6.3.1) and FIR (RFC 5104 §4.3.1), both payload-specific feedback (PT 206).

use crate::rtp::Ssrc;

/// RTCP payload-specific feedback (RFC 4585 §6.1).
const PSFB: u8 = 206;

/// A Picture Loss Indication (RFC 4585 §6.3.1): FMT 1, length 2, no FCI.
pub fn pli(sender: Ssrc, media: Ssrc) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = 0x80 | 1;
    b[1] = PSFB;
    b[2..4].copy_from_slice(&2u16.to_be_bytes());
    b[4..8].copy_from_slice(&sender.0.to_be_bytes());
    b[8..12].copy_from_slice(&media.0.to_be_bytes());
    b
}

/// A Full Intra Request (RFC 5104 §4.3.1): FMT 4, media source 0, one FCI entry naming
/// `media` with command sequence number `seq` (incremented per new request, §4.3.1.2).
pub fn fir(sender: Ssrc, media: Ssrc, seq: u8) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0] = 0x80 | 4;
    b[1] = PSFB;
    b[2..4].copy_from_slice(&4u16.to_be_bytes());
    b[4..8].copy_from_slice(&sender.0.to_be_bytes());
    // Bytes 8..12: "SSRC of media source" is not used by FIR and set to 0.
    b[12..16].copy_from_slice(&media.0.to_be_bytes());
    b[16] = seq;
    b
}

/// A key-frame request to send on `to`'s RTCP: PLI and FIR for its SSRC `media`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeRequest {
    /// The participant whose video is wanted.
    pub to: crate::conference::roster::ParticipantId,
    /// The SSRC of its video.
    pub media: Ssrc,
    /// Our RTCP sender SSRC.
    pub sender: Ssrc,
    /// The FIR command sequence number.
    pub fir_seq: u8,
}

impl KeyframeRequest {
    /// PLI followed by FIR: a reduced-size RTCP datagram (RFC 5506 §3; endpoints that insist
    /// on RFC 3550 compounds need an RR and SDES put before it).
    pub fn datagram(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..12].copy_from_slice(&pli(self.sender, self.media));
        b[12..].copy_from_slice(&fir(self.sender, self.media, self.fir_seq));
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::rtcp;

    #[test]
    fn pli_bytes() {
        assert_eq!(
            pli(Ssrc(0x0102_0304), Ssrc(0xa0b0_c0d0)),
            [0x81, 206, 0, 2, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0]
        );
    }

    #[test]
    fn fir_bytes() {
        assert_eq!(
            fir(Ssrc(0x0102_0304), Ssrc(0xa0b0_c0d0), 7),
            [0x84, 206, 0, 4, 1, 2, 3, 4, 0, 0, 0, 0, 0xa0, 0xb0, 0xc0, 0xd0, 7, 0, 0, 0]
        );
    }

    #[test]
    fn datagram_walks_as_two_rtcp_packets() {
        let req = KeyframeRequest {
            to: crate::conference::roster::ParticipantId(1),
            media: Ssrc(9),
            sender: Ssrc(1),
            fir_seq: 3,
        };
        let d = req.datagram();
        assert!(rtcp::is_rtcp(&d));
        let lens: Vec<usize> = rtcp::packets(&d).map(|p| p.unwrap().len()).collect();
        assert_eq!(lens, vec![12, 20]);
    }
}
