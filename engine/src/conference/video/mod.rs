//! Active-speaker video switching (ISSUE 6 "forwarded, not mixed"; RFC 7667 §3.7): the
//! speaker's video goes to everyone else, the speaker sees the previous speaker. Each
//! receiver gets one continuous stream from an [`RtpRewriter`]; a newly shown source is asked
//! for a key frame ([`KeyframeRequest`]: PLI and FIR).
//!
//! Drive loop: `set_speaker(now, p)` from the mixer's talker detection; every received video
//! packet through [`VideoSwitch::forward`], which says to whom it goes with which 12-byte header
//! (the rest of the datagram is shared, see [`RtpRewriter::rewrite_header`]); key-frame requests
//! from [`VideoSwitch::poll_keyframe_request`]; [`VideoSwitch::next_deadline`] /
//! [`VideoSwitch::handle_timeout`] for a speaker change held back by the hysteresis.
//!
//! Switches happen at frame boundaries: a receiver keeps the old source until the new one
//! starts a frame (its previous packet had the marker bit, or the timestamp changed), so no
//! receiver gets half a frame of the new source.

mod keyframe;
mod rewrite;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use keyframe::{fir, pli, KeyframeRequest};
pub use rewrite::RtpRewriter;

use super::roster::ParticipantId;
use crate::rtp::{RtpPacket, Ssrc, FIXED_HEADER_LEN};

/// Video switching settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    /// The shortest time between two speaker switches (hysteresis).
    pub min_switch_interval: Duration,
    /// The video clock rate (90 kHz for every common video payload, RFC 3551 §5).
    pub clock_rate: u32,
    /// The smallest timestamp step at a switch, in ticks (3000: one frame at 30 fps).
    pub frame_gap: u32,
    /// The SSRC our key-frame requests come from.
    pub rtcp_ssrc: Ssrc,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            min_switch_interval: Duration::from_secs(1),
            clock_rate: 90_000,
            frame_gap: 3000,
            rtcp_ssrc: Ssrc(0x6370_6d76),
        }
    }
}

/// One receiver's copy of a forwarded packet: send `header` then the packet's bytes after the
/// fixed header (`packet.as_bytes().slice(12..)`) to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The receiver.
    pub to: ParticipantId,
    /// The rewritten fixed header.
    pub header: [u8; FIXED_HEADER_LEN],
}

#[derive(Debug)]
struct Party {
    id: ParticipantId,
    /// The SSRC of the video it sends, if it sends video.
    sends: Option<Ssrc>,
    /// Its receive side, if it receives video.
    rewriter: Option<RtpRewriter>,
    /// The source being forwarded to it now.
    current: Option<ParticipantId>,
    /// The source it should see (switched to at that source's next frame start).
    selected: Option<ParticipantId>,
    /// Sender side: whether its next packet starts a frame.
    frame_start: bool,
    last_ts: Option<u32>,
    fir_seq: u8,
    /// Sender side: how many receivers show it now or soon (0: its packets are dropped).
    viewers: usize,
}

/// The video switch of one conference. Time is an input; nothing here reads a clock.
#[derive(Debug)]
pub struct VideoSwitch {
    cfg: VideoConfig,
    parties: Vec<Party>,
    speaker: Option<ParticipantId>,
    previous: Option<ParticipantId>,
    wanted: Option<ParticipantId>,
    last_switch: Option<Instant>,
    keyframes: VecDeque<KeyframeRequest>,
}

impl VideoSwitch {
    /// A switch with nobody in it.
    pub fn new(cfg: VideoConfig) -> VideoSwitch {
        VideoSwitch {
            cfg,
            parties: Vec::new(),
            speaker: None,
            previous: None,
            wanted: None,
            last_switch: None,
            keyframes: VecDeque::new(),
        }
    }

    /// Adds a participant that sends video as `sends` and/or receives it under the fixed
    /// output SSRC `receives_as`. The first video sender becomes the speaker at once.
    pub fn add_participant(
        &mut self,
        p: ParticipantId,
        sends: Option<Ssrc>,
        receives_as: Option<Ssrc>,
    ) {
        self.parties.retain(|x| x.id != p);
        self.parties.push(Party {
            id: p,
            sends,
            rewriter: receives_as
                .map(|s| RtpRewriter::new(s, self.cfg.clock_rate, self.cfg.frame_gap)),
            current: None,
            selected: None,
            frame_start: true,
            last_ts: None,
            fir_seq: 0,
            viewers: 0,
        });
        if self.speaker.is_none() && sends.is_some() {
            self.speaker = Some(p);
        }
        self.reselect();
    }

    /// Sets the SSRC a participant's video comes from (learnt from its first packet when its
    /// SDP names none; `None`: it stopped sending), keeping what it receives unchanged. The
    /// first video sender becomes the speaker.
    pub fn set_sends(&mut self, p: ParticipantId, sends: Option<Ssrc>) {
        let Some(x) = self.parties.iter_mut().find(|x| x.id == p) else {
            return;
        };
        if x.sends == sends {
            return;
        }
        x.sends = sends;
        x.frame_start = true;
        x.last_ts = None;
        if self.speaker.is_none() && sends.is_some() {
            self.speaker = Some(p);
        }
        self.reselect();
    }

    /// Removes a participant. If it was the speaker, the previous speaker takes its place.
    pub fn remove_participant(&mut self, p: ParticipantId) {
        self.parties.retain(|x| x.id != p);
        if self.previous == Some(p) {
            self.previous = None;
        }
        if self.wanted == Some(p) {
            self.wanted = None;
        }
        if self.speaker == Some(p) {
            self.speaker = self.previous.take().or_else(|| {
                self.parties
                    .iter()
                    .find(|x| x.sends.is_some())
                    .map(|x| x.id)
            });
        }
        for r in &mut self.parties {
            if r.current == Some(p) {
                r.current = None;
            }
        }
        self.reselect();
    }

    /// The participant whose video everyone else sees.
    pub fn speaker(&self) -> Option<ParticipantId> {
        self.speaker
    }

    /// The source `receiver` is shown now.
    pub fn shown_to(&self, receiver: ParticipantId) -> Option<ParticipantId> {
        self.party(receiver).and_then(|r| r.current)
    }

    /// The active speaker changed (talker detection). Applied at once unless the last switch
    /// was less than `min_switch_interval` ago; then at [`VideoSwitch::next_deadline`]. A
    /// speaker without video does not switch video. Returns whether it switched now.
    pub fn set_speaker(&mut self, now: Instant, p: ParticipantId) -> bool {
        if self.speaker == Some(p) || self.party(p).and_then(|x| x.sends).is_none() {
            self.wanted = None;
            return false;
        }
        self.wanted = Some(p);
        if self.next_deadline().is_some_and(|due| now < due) {
            return false;
        }
        self.switch_to(now, p);
        true
    }

    /// When a held-back speaker change is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.wanted?;
        Some(self.last_switch? + self.cfg.min_switch_interval)
    }

    /// Applies a held-back speaker change if it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let (Some(p), Some(due)) = (self.wanted, self.next_deadline()) {
            if now >= due {
                self.switch_to(now, p);
            }
        }
    }

    /// The next key-frame request to send.
    pub fn poll_keyframe_request(&mut self) -> Option<KeyframeRequest> {
        self.keyframes.pop_front()
    }

    /// A receiver asked us for a key frame (its PLI/FIR on the stream we send it): ask the
    /// source it is shown.
    pub fn on_receiver_keyframe_request(&mut self, receiver: ParticipantId) {
        if let Some(src) = self.shown_to(receiver) {
            self.request_keyframe(src);
        }
    }

    /// Routes a video packet received from `from`: appends one [`Forward`] per receiver shown
    /// `from`. Packets nobody is shown are dropped after one lookup.
    pub fn forward(
        &mut self,
        now: Instant,
        from: ParticipantId,
        packet: &RtpPacket,
        out: &mut Vec<Forward>,
    ) {
        let Some(sender) = self.parties.iter_mut().find(|x| x.id == from) else {
            return;
        };
        let ts = packet.timestamp();
        let starts_frame = sender.frame_start || sender.last_ts != Some(ts);
        sender.frame_start = packet.marker();
        sender.last_ts = Some(ts);
        if sender.viewers == 0 || sender.sends != Some(packet.ssrc()) {
            return;
        }
        for r in &mut self.parties {
            if r.id == from {
                continue;
            }
            let shown = r.current == Some(from);
            let switch_now = !shown && r.selected == Some(from) && starts_frame;
            if !(shown || switch_now) {
                continue;
            }
            let Some(rw) = r.rewriter.as_mut() else {
                continue;
            };
            if switch_now {
                r.current = Some(from);
            }
            out.push(Forward {
                to: r.id,
                header: rw.rewrite_header(now, packet),
            });
        }
    }

    fn switch_to(&mut self, now: Instant, p: ParticipantId) {
        tracing::debug!(speaker = %p, "video switch");
        self.previous = self.speaker;
        self.speaker = Some(p);
        self.wanted = None;
        self.last_switch = Some(now);
        self.reselect();
    }

    /// Recomputes what every receiver should see, asks new sources for key frames and
    /// recounts viewers.
    fn reselect(&mut self) {
        let (speaker, previous) = (self.speaker, self.previous);
        let mut newly: Vec<ParticipantId> = Vec::new();
        for r in &mut self.parties {
            if r.rewriter.is_none() {
                continue;
            }
            let want = if speaker != Some(r.id) {
                speaker
            } else {
                previous
            };
            if want != r.selected {
                r.selected = want;
                if let Some(w) = want.filter(|w| r.current != Some(*w)) {
                    if !newly.contains(&w) {
                        newly.push(w);
                    }
                }
                if want.is_none() {
                    r.current = None;
                }
            }
        }
        let counts: Vec<usize> = self
            .parties
            .iter()
            .map(|s| {
                self.parties
                    .iter()
                    .filter(|r| r.current == Some(s.id) || r.selected == Some(s.id))
                    .count()
            })
            .collect();
        for (s, n) in self.parties.iter_mut().zip(counts) {
            s.viewers = n;
        }
        for w in newly {
            self.request_keyframe(w);
        }
    }

    fn request_keyframe(&mut self, p: ParticipantId) {
        let sender = self.cfg.rtcp_ssrc;
        if let Some(x) = self.parties.iter_mut().find(|x| x.id == p) {
            if let Some(media) = x.sends {
                x.fir_seq = x.fir_seq.wrapping_add(1);
                self.keyframes.push_back(KeyframeRequest {
                    to: p,
                    media,
                    sender,
                    fir_seq: x.fir_seq,
                });
            }
        }
    }

    fn party(&self, p: ParticipantId) -> Option<&Party> {
        self.parties.iter().find(|x| x.id == p)
    }
}

#[cfg(test)]
mod tests;
