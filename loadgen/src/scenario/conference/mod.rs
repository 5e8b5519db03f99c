//! `conference`: ad-hoc audio conferences (RFC 4579) against a conference server, each
//! participant a session.
//!
//! Per conference, participant 0 INVITEs the conference factory URI (§5.2) and takes the focus
//! URI from the 200's Contact (which carries `isfocus`, §4.1); participants `1..P` then INVITE
//! the focus URI. Each participant ACKs its 2xx and sends G.711 every 20 ms (paced by one
//! timer per conference) from its own RTP socket. With `--register` each registers first
//! (digest as for `register`).
//!
//! Once every participant of a conference has joined (or failed to), its media phase starts:
//! the first `T` participants talk in bursts of their own tone ([`tones::TonePlan`]: 1 s on,
//! 1 s off, after 0.5 s of settling), the others, and talkers between bursts, send G.711
//! silence. Each participant measures the mix it receives ([`receive::MixerMeter`]): loss,
//! the mixer's tick as seen by the receiver, the delay from a talker's burst onset to the
//! first frame holding that tone, and at each burst's end whether every other talker is
//! heard and itself is not (`tones_ok` / `tones_wrong`). After `--duration` every
//! participant sends BYE; a participant's session succeeds when it joined and its BYE got a
//! 2xx.
//!
//! Sessions are numbered so that the conferences' creators come first (session `c` creates
//! conference `c`), then the joiners, conference after conference; a joiner due before its
//! focus URI is known waits for it.

pub mod dsp;
pub mod receive;
pub mod tones;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_engine::rtp::{self, RtpHeader, SeqNo, Ssrc};
use cpm_engine::sdp::SessionDescription;
use cpm_engine::sip::transaction::ClientTxId;
use cpm_engine::sip::{builder, HeaderName, Message, Method};

use super::call::{in_dialog, set_branch};
use super::media::{self, MediaProfile, SocketPool};
use super::register::{RegFlow, Secrets};
use super::{
    status_line, Incoming, Outcome, RequestSpec, Scenario, SessionId, SocketId, Target, NO_SESSION,
};
use crate::driver::Ctx;
use crate::metrics::{Counter, Quantity};
use receive::{Burst, MixerMeter};
use tones::{Law, TonePlan};

/// INVITE sent → 200 received, per participant.
pub const JOIN: Quantity = Quantity::Custom("conference_join");

/// The media interval.
const PTIME: Duration = Duration::from_millis(20);

/// Named counters of the run (also read by the report).
pub mod notes {
    /// Conferences asked for.
    pub const CONFERENCES: &str = "conferences";
    /// Conferences whose factory INVITE got a 2xx with a focus URI.
    pub const CREATED: &str = "conferences_created";
    /// Participants asked for.
    pub const PARTICIPANTS: &str = "participants";
    /// Participants whose INVITE got a 2xx.
    pub const JOINED: &str = "participants_joined";
    /// Burst-end checks where the tones were as they should be.
    pub const TONES_OK: &str = "tones_ok";
    /// Burst-end checks where they were not.
    pub const TONES_WRONG: &str = "tones_wrong";
    /// Receivers with at least one check and every check right.
    pub const RECEIVERS_OK: &str = "receivers_ok";
    /// Receivers that were checked.
    pub const RECEIVERS_CHECKED: &str = "receivers_checked";
    /// Tone bursts planned, summed over the conferences (a stop cuts them short).
    pub const BURSTS: &str = "bursts";
}

/// Timer kinds (the token is `conference << 8 | kind`).
const TICK: u64 = 0;
const BURST_END: u64 = 1;
const HANGUP: u64 = 2;

/// What a run does.
#[derive(Debug, Clone)]
pub struct ConferenceConfig {
    /// Conferences (`--conferences`).
    pub conferences: usize,
    /// Participants per conference, the creator included (`--participants`).
    pub participants: usize,
    /// Talkers per conference (`--talkers`, at most the participants).
    pub talkers: usize,
    /// How long the conference runs once every participant is in (`--duration`).
    pub duration: Duration,
    /// The factory URI (`--factory`; default `sip:conf-factory@<domain>`).
    pub factory: Option<String>,
    /// The codec (`--codec pcmu|pcma`).
    pub law: Law,
    /// Register every participant first (`--register`), with these secrets.
    pub register: Option<(Secrets, u32)>,
    /// RTP ports (`--rtp-ports`).
    pub rtp_ports: Option<(u16, u16)>,
    /// Tone on, then off, per burst.
    pub burst: (Duration, Duration),
    /// Between the last join and the first burst (ports latch, jitter buffers fill).
    pub settle: Duration,
}

impl ConferenceConfig {
    /// Sessions of the run: every participant of every conference.
    pub fn sessions(&self) -> u64 {
        (self.conferences * self.participants) as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Registering,
    /// Due, waiting for the focus URI.
    Waiting,
    Inviting,
    Joined,
    Leaving,
    Done,
}

/// One participant.
#[derive(Debug)]
struct Participant {
    conf: usize,
    /// Its number in the conference (0 created it).
    index: usize,
    session: SessionId,
    user: String,
    state: State,
    reg: Option<RegFlow>,
    invite: Option<Message>,
    invite_sent: Instant,
    rtp: (SocketId, SocketAddr),
    remote: Option<SocketAddr>,
    ack: Option<Message>,
    bye: Option<Message>,
    ssrc: Ssrc,
    seq: SeqNo,
    ts: u32,
    meter: MixerMeter,
}

impl Participant {
    /// The next packet of its stream, with `payload`.
    fn packet(&mut self, pt: u8, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::with_capacity(12 + payload.len());
        let _ = RtpHeader::new(pt, self.seq, self.ts, self.ssrc).write_to(&mut buf);
        buf.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(payload.len() as u32);
        buf
    }
}

/// One conference.
#[derive(Debug, Default)]
struct Conf {
    /// Its focus URI, once the creator's 2xx named it.
    focus: Option<String>,
    /// Its participants (indices into `Conference::people`).
    members: Vec<usize>,
    /// Participants resolved (joined, or failed to).
    resolved: usize,
    /// The creator failed: nobody can join.
    failed: bool,
    ticking: bool,
    next_tick: Option<Instant>,
    /// Planned bursts (onset, end), from the media phase's start.
    plan: Vec<(Instant, Instant)>,
    /// The burst in progress or last played, with its actual onset.
    burst: Option<Burst>,
    hangup_at: Option<Instant>,
}

/// The `conference` scenario.
#[derive(Debug)]
pub struct Conference {
    target: Target,
    cfg: ConferenceConfig,
    tones: TonePlan,
    profile: MediaProfile,
    socket: Option<(SocketId, SocketAddr)>,
    confs: Vec<Conf>,
    people: Vec<Participant>,
    by_session: HashMap<SessionId, usize>,
    by_call_id: HashMap<Bytes, usize>,
    by_rtp: HashMap<SocketId, usize>,
    pool: SocketPool,
    started: u64,
    stopping: bool,
    /// Whether a SIGINT/SIGTERM makes everyone leave (real runs; not the simulations).
    signals: bool,
}

impl Conference {
    /// Conferences against `target` (the server; its domain names the factory).
    pub fn new(target: Target, mut cfg: ConferenceConfig) -> Result<Conference, String> {
        if cfg.conferences == 0 || cfg.participants == 0 {
            return Err("--conferences and --participants must be at least 1".into());
        }
        cfg.talkers = cfg.talkers.min(cfg.participants);
        let tones = TonePlan::new(cfg.talkers, cfg.law)?;
        let profile = MediaProfile::new(cfg.law.sdp_codec(), 20, None)?;
        Ok(Conference {
            pool: SocketPool::in_range(cfg.rtp_ports),
            confs: (0..cfg.conferences).map(|_| Conf::default()).collect(),
            target,
            cfg,
            tones,
            profile,
            socket: None,
            people: Vec::new(),
            by_session: HashMap::new(),
            by_call_id: HashMap::new(),
            by_rtp: HashMap::new(),
            started: 0,
            stopping: false,
            signals: false,
        })
    }

    /// A SIGINT/SIGTERM during the conferences makes every participant leave (BYE) at once.
    pub fn leaving_on_signals(mut self) -> Conference {
        self.signals = true;
        self
    }

    /// The factory URI.
    pub fn factory(&self) -> String {
        self.cfg
            .factory
            .clone()
            .unwrap_or_else(|| format!("sip:conf-factory@{}", self.target.domain))
    }

    /// Conference and participant number of session `n`: creators first, then joiners.
    fn place(&self, n: u64) -> (usize, usize) {
        let c = self.cfg.conferences as u64;
        if n < c {
            (n as usize, 0)
        } else {
            let j = n - c;
            ((j % c) as usize, (j / c) as usize + 1)
        }
    }

    fn token(conf: usize, kind: u64) -> u64 {
        (conf as u64) << 8 | kind
    }

    /// Ends participant `i`'s session (its RTP socket goes back to the pool).
    fn end(&mut self, ctx: &mut Ctx<'_>, i: usize, outcome: Outcome) {
        let Some(p) = self.people.get_mut(i) else {
            return;
        };
        if p.state == State::Done {
            return;
        }
        let was_pending = matches!(
            p.state,
            State::Registering | State::Waiting | State::Inviting
        );
        p.state = State::Done;
        p.meter.close(ctx);
        self.by_rtp.remove(&p.rtp.0);
        self.pool.give_back(p.rtp);
        let (session, conf) = (p.session, p.conf);
        if let Some(id) = p.invite.as_ref().and_then(|m| m.call_id()) {
            self.by_call_id.remove(id);
        }
        ctx.finish(session, outcome);
        if was_pending {
            self.resolve(ctx, conf);
        }
    }

    /// One more participant of `conf` joined or failed; the last one starts the media phase.
    fn resolve(&mut self, ctx: &mut Ctx<'_>, conf: usize) {
        let want = self.cfg.participants;
        let Some(c) = self.confs.get_mut(conf) else {
            return;
        };
        c.resolved += 1;
        if c.resolved < want || c.hangup_at.is_some() {
            return;
        }
        let now = ctx.now();
        let end = now + self.cfg.duration;
        c.hangup_at = Some(end);
        let (on, off) = self.cfg.burst;
        let mut onset = now + self.cfg.settle;
        while onset + on <= end && self.cfg.talkers > 0 && !on.is_zero() {
            c.plan.push((onset, onset + on));
            ctx.set_timer(onset + on, NO_SESSION, Self::token(conf, BURST_END));
            onset += on + off;
        }
        ctx.recorder().note(notes::BURSTS, c.plan.len() as u64);
        ctx.set_timer(end, NO_SESSION, Self::token(conf, HANGUP));
    }

    /// Sends participant `i`'s INVITE: to the factory for a creator, else to the focus.
    fn invite(&mut self, ctx: &mut Ctx<'_>, i: usize) {
        let Some((socket, local)) = self.socket else {
            return self.end(ctx, i, Outcome::Failure("no socket".into()));
        };
        let factory = self.factory();
        let p = &self.people[i];
        let uri = if p.index == 0 {
            factory
        } else {
            match &self.confs[p.conf].focus {
                Some(f) => f.clone(),
                None if self.confs[p.conf].failed => {
                    return self.end(ctx, i, Outcome::Failure("no conference to join".into()));
                }
                None => {
                    self.people[i].state = State::Waiting;
                    return;
                }
            }
        };
        let call_id = ctx.new_call_id();
        let from = self.target.uri(&p.user);
        let mut invite = RequestSpec {
            method: Method::Invite,
            uri: &uri,
            via: local,
            from: &from,
            to: &uri,
            call_id: &call_id,
            cseq: 1,
        }
        .build(ctx);
        invite.headers.push(
            HeaderName::Contact,
            format!("<sip:{}@{}>", p.user, super::hostport(local)),
        );
        invite.set_body(
            self.profile.offer(p.rtp.1).to_bytes(),
            Some("application/sdp"),
        );
        let p = &mut self.people[i];
        p.state = State::Inviting;
        p.invite = Some(invite.clone());
        p.invite_sent = ctx.now();
        let session = p.session;
        self.by_call_id.insert(Bytes::from(call_id), i);
        if let Err(e) = ctx.send_request(session, socket, invite, self.target.addr) {
            self.end(ctx, i, Outcome::Failure(e.reason()));
        }
    }

    /// The 2xx of participant `i`'s INVITE (again, for a retransmission: ACK again).
    fn on_invite_2xx(&mut self, ctx: &mut Ctx<'_>, i: usize, resp: &Message) {
        let Some((socket, _)) = self.socket else {
            return;
        };
        let p = &mut self.people[i];
        if p.state != State::Inviting {
            if let Some(ack) = &p.ack {
                ctx.send_stateless(socket, ack, self.target.addr);
            }
            return;
        }
        let Some(invite) = p.invite.clone() else {
            return;
        };
        ctx.record(JOIN, ctx.now() - p.invite_sent);
        ctx.recorder().note(notes::JOINED, 1);
        let answer = SessionDescription::parse(&resp.body).ok();
        p.remote = answer.as_ref().and_then(media::remote_media);
        if p.remote.is_none() {
            ctx.recorder().note("answers_without_media", 1);
        }
        let ack = in_dialog(&invite, resp, Method::Ack, 1, ctx.new_branch());
        ctx.send_stateless(socket, &ack, self.target.addr);
        p.ack = Some(ack);
        p.bye = Some(in_dialog(&invite, resp, Method::Bye, 2, Bytes::new()));
        p.state = State::Joined;
        let (conf, index) = (p.conf, p.index);
        if index == 0 {
            self.on_focus(ctx, conf, resp);
        }
        self.start_ticking(ctx, conf);
        if self.stopping {
            self.hang_up(ctx, i);
        }
        self.resolve(ctx, conf);
    }

    /// The creator's 2xx: the focus URI from its Contact (RFC 4579 §4.1); the waiting
    /// joiners INVITE it.
    fn on_focus(&mut self, ctx: &mut Ctx<'_>, conf: usize, resp: &Message) {
        let contact = resp.contacts().ok().and_then(|cs| cs.into_iter().next());
        let focus = contact
            .as_ref()
            .and_then(|c| c.uri().map(|u| u.to_string()));
        let isfocus = contact
            .as_ref()
            .and_then(|c| c.params())
            .is_some_and(|p| p.has("isfocus"));
        if !isfocus {
            ctx.recorder().note("focus_contacts_without_isfocus", 1);
        }
        let Some(focus) = focus else {
            self.confs[conf].failed = true;
            ctx.recorder().note("factory_answers_without_contact", 1);
            return self.fail_waiting(ctx, conf);
        };
        ctx.recorder().note(notes::CREATED, 1);
        self.confs[conf].focus = Some(focus);
        let waiting: Vec<usize> = self.confs[conf]
            .members
            .iter()
            .copied()
            .filter(|&i| self.people[i].state == State::Waiting)
            .collect();
        for i in waiting {
            self.invite(ctx, i);
        }
    }

    fn fail_waiting(&mut self, ctx: &mut Ctx<'_>, conf: usize) {
        let waiting: Vec<usize> = self.confs[conf]
            .members
            .iter()
            .copied()
            .filter(|&i| self.people[i].state == State::Waiting)
            .collect();
        for i in waiting {
            self.end(ctx, i, Outcome::Failure("no conference to join".into()));
        }
    }

    fn start_ticking(&mut self, ctx: &mut Ctx<'_>, conf: usize) {
        let c = &mut self.confs[conf];
        if c.ticking {
            return;
        }
        c.ticking = true;
        let now = ctx.now();
        c.next_tick = Some(now);
        ctx.set_timer(now, NO_SESSION, Self::token(conf, TICK));
    }

    /// One 20 ms tick of a conference: a packet from every joined participant, tone or
    /// silence.
    fn tick(&mut self, ctx: &mut Ctx<'_>, conf: usize) {
        // SIGINT/SIGTERM once every participant was started: the driver is draining already
        // and tells the scenario no more, so the media clock looks at the flag itself.
        if self.signals && !self.stopping && crate::sys::stop_requested() {
            self.leave_all(ctx);
        }
        let now = ctx.now();
        let c = &mut self.confs[conf];
        // The burst (if any) this tick falls in; its onset is this tick's time on its first.
        let playing = c.plan.iter().position(|(on, end)| now >= *on && now < *end);
        if let Some(b) = playing {
            if c.burst.is_none_or(|x| x.index != b) {
                c.burst = Some(Burst {
                    index: b,
                    onset: now,
                });
            }
        }
        let mut any = false;
        let pt = self.tones.law().payload_type();
        for &i in &c.members {
            let p = &mut self.people[i];
            if p.state != State::Joined {
                continue;
            }
            let Some(remote) = p.remote else { continue };
            any = true;
            let payload = match (playing, self.tones.tone(p.index)) {
                (Some(_), Some(tone)) => tone,
                _ => self.tones.silence(),
            };
            let buf = p.packet(pt, payload);
            ctx.send_raw(p.rtp.0, remote, &buf);
            ctx.recorder().add(Counter::RtpSent, 1, now);
        }
        let left = c.members.iter().any(|&i| {
            matches!(
                self.people[i].state,
                State::Registering | State::Waiting | State::Inviting | State::Joined
            )
        });
        if !any && !left {
            c.ticking = false;
            c.next_tick = None;
            return;
        }
        // Paced on the conference's own grid: no drift when a tick is handled late.
        let next = c.next_tick.map_or(now, |t| t) + PTIME;
        let next = if next + PTIME < now {
            now + PTIME
        } else {
            next
        };
        c.next_tick = Some(next);
        ctx.set_timer(next, NO_SESSION, Self::token(conf, TICK));
    }

    /// The end of a burst: every joined participant checks what it heard.
    fn burst_end(&mut self, ctx: &mut Ctx<'_>, conf: usize) {
        let Some(burst) = self.confs[conf].burst else {
            return;
        };
        let members = self.confs[conf].members.clone();
        for i in members {
            let p = &mut self.people[i];
            if p.state != State::Joined {
                continue;
            }
            let me = (p.index < self.tones.talkers()).then_some(p.index);
            let v = p.meter.check(&self.tones, me, burst.index);
            ctx.recorder().note(notes::TONES_OK, v.ok);
            ctx.recorder().note(notes::TONES_WRONG, v.wrong);
        }
    }

    /// Participant `i` leaves: BYE in its dialog.
    fn hang_up(&mut self, ctx: &mut Ctx<'_>, i: usize) {
        let Some((socket, local)) = self.socket else {
            return;
        };
        let p = &mut self.people[i];
        if p.state != State::Joined {
            return;
        }
        p.state = State::Leaving;
        let t = p.meter.totals();
        if t.ok + t.wrong > 0 {
            ctx.recorder().note(notes::RECEIVERS_CHECKED, 1);
            if t.wrong == 0 {
                ctx.recorder().note(notes::RECEIVERS_OK, 1);
            }
        }
        let Some(mut bye) = p.bye.take() else {
            return self.end(ctx, i, Outcome::Failure("no dialog".into()));
        };
        let branch = ctx.new_branch();
        set_branch(&mut bye, local, &branch);
        let session = p.session;
        if let Err(e) = ctx.send_request(session, socket, bye, self.target.addr) {
            self.end(ctx, i, Outcome::Failure(e.reason()));
        }
    }

    fn hang_up_conf(&mut self, ctx: &mut Ctx<'_>, conf: usize) {
        let members = self.confs[conf].members.clone();
        for i in members {
            self.hang_up(ctx, i);
        }
    }

    /// Everyone joined leaves now, those still joining as soon as they are in, those not
    /// yet inviting fail as "interrupted".
    fn leave_all(&mut self, ctx: &mut Ctx<'_>) {
        self.stopping = true;
        for i in 0..self.people.len() {
            match self.people[i].state {
                State::Joined => self.hang_up(ctx, i),
                State::Waiting | State::Registering => {
                    self.end(ctx, i, Outcome::Failure("interrupted".into()))
                }
                _ => {}
            }
        }
    }

    /// A REGISTER's final response (`--register`).
    fn on_register_final(&mut self, ctx: &mut Ctx<'_>, i: usize, resp: &Message) {
        let Some((secrets, _)) = &self.cfg.register else {
            return;
        };
        let session = self.people[i].session;
        let Some(flow) = self.people[i].reg.as_mut() else {
            return;
        };
        match flow.on_final(ctx, session, resp, secrets) {
            None => {}
            Some(Ok(_)) => {
                ctx.record(Quantity::Registration, ctx.now() - flow.started());
                self.invite(ctx, i);
            }
            Some(Err(e)) => self.end(ctx, i, Outcome::Failure(format!("REGISTER: {e}"))),
        }
    }
}

fn is_response_to(resp: &Message, method: Method) -> bool {
    resp.cseq().is_ok_and(|c| c.method == method)
}

impl Scenario for Conference {
    fn name(&self) -> &'static str {
        "conference"
    }

    fn primary(&self) -> Quantity {
        JOIN
    }

    fn setup(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        crate::sys::raise_nofile_limit();
        self.socket = Some(self.target.bind_client(ctx)?);
        ctx.recorder()
            .note(notes::CONFERENCES, self.cfg.conferences as u64);
        ctx.recorder()
            .note(notes::PARTICIPANTS, self.cfg.sessions());
        Ok(())
    }

    fn start(&mut self, ctx: &mut Ctx<'_>, session: SessionId, n: u64) {
        self.started += 1;
        let (conf, index) = self.place(n);
        let Some((socket, local)) = self.socket else {
            return ctx.finish(session, Outcome::Failure("no socket".into()));
        };
        let rtp = match self.pool.take(ctx, self.target.local_ip) {
            Ok(s) => s,
            Err(e) => return ctx.finish(session, Outcome::Failure(e)),
        };
        let r = ctx.random_u64();
        let user = self
            .target
            .from
            .expand((conf * self.cfg.participants + index) as u64);
        let i = self.people.len();
        self.people.push(Participant {
            conf,
            index,
            session,
            user: user.clone(),
            state: State::Registering,
            reg: None,
            invite: None,
            invite_sent: ctx.now(),
            rtp,
            remote: None,
            ack: None,
            bye: None,
            ssrc: Ssrc(r as u32),
            seq: SeqNo((r >> 32) as u16),
            ts: (r >> 48) as u32 * 160,
            meter: MixerMeter::new(&self.tones),
        });
        self.confs[conf].members.push(i);
        self.by_session.insert(session, i);
        self.by_rtp.insert(rtp.0, i);
        match &self.cfg.register {
            Some((_, expires)) => {
                let mut flow = RegFlow::new(
                    ctx,
                    user,
                    socket,
                    local,
                    self.target.addr,
                    self.target.domain.clone(),
                    *expires,
                );
                let sent = flow.send(ctx, session);
                self.people[i].reg = Some(flow);
                if let Err(e) = sent {
                    self.end(ctx, i, Outcome::Failure(format!("REGISTER: {e}")));
                }
            }
            None => self.invite(ctx, i),
        }
    }

    fn on_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: SessionId,
        _tx: ClientTxId,
        response: &Message,
    ) {
        let Some(&i) = self.by_session.get(&session) else {
            return;
        };
        let Some(code) = response.status() else {
            return;
        };
        if code < 200 {
            return;
        }
        if is_response_to(response, Method::Register) {
            return self.on_register_final(ctx, i, response);
        }
        if is_response_to(response, Method::Invite) {
            if (200..300).contains(&code) {
                self.on_invite_2xx(ctx, i, response);
            } else if self.people[i].state == State::Inviting {
                let (conf, index) = (self.people[i].conf, self.people[i].index);
                self.end(
                    ctx,
                    i,
                    Outcome::Failure(format!("INVITE: {}", status_line(response))),
                );
                if index == 0 {
                    self.confs[conf].failed = true;
                    self.fail_waiting(ctx, conf);
                }
            }
            return;
        }
        if is_response_to(response, Method::Bye) {
            let outcome = match Outcome::of_response(response) {
                Outcome::Failure(f) => Outcome::Failure(format!("BYE: {f}")),
                ok => ok,
            };
            self.end(ctx, i, outcome);
        }
    }

    fn on_stray(&mut self, ctx: &mut Ctx<'_>, msg: Message, _socket: SocketId, _src: SocketAddr) {
        if !msg.status().is_some_and(|c| (200..300).contains(&c))
            || !is_response_to(&msg, Method::Invite)
        {
            return;
        }
        let Some(&i) = msg.call_id().and_then(|id| self.by_call_id.get(id)) else {
            return;
        };
        self.on_invite_2xx(ctx, i, &msg);
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_>, inc: Incoming) {
        let req = &inc.request;
        let who = req
            .call_id()
            .and_then(|id| self.by_call_id.get(id))
            .copied();
        match (req.method(), who) {
            (Some(Method::Bye), Some(i)) => {
                ctx.respond(inc.tx, &builder::response_to(req, 200, "OK"));
                ctx.recorder().note("byes_from_focus", 1);
                if matches!(self.people[i].state, State::Joined | State::Leaving) {
                    self.end(ctx, i, Outcome::Failure("BYE from the focus".into()));
                }
            }
            (Some(Method::Notify | Method::Options), _) => {
                ctx.respond(inc.tx, &builder::response_to(req, 200, "OK"));
            }
            (_, None) => {
                let r = builder::local_response(req, 481, "Call/Transaction Does Not Exist");
                ctx.respond(inc.tx, &r);
            }
            _ => {
                let r = builder::response_to(req, 488, "Not Acceptable Here");
                ctx.respond(inc.tx, &r);
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _session: SessionId, token: u64) {
        let conf = (token >> 8) as usize;
        if conf >= self.confs.len() {
            return;
        }
        match token & 0xff {
            TICK => self.tick(ctx, conf),
            BURST_END => self.burst_end(ctx, conf),
            HANGUP => self.hang_up_conf(ctx, conf),
            _ => {}
        }
    }

    fn on_datagram(
        &mut self,
        ctx: &mut Ctx<'_>,
        socket: SocketId,
        source: SocketAddr,
        payload: Bytes,
    ) {
        let Some(&i) = self.by_rtp.get(&socket) else {
            ctx.recorder().note("rtp_after_leaving", 1);
            return;
        };
        let p = &mut self.people[i];
        if rtp::rtcp::is_rtcp(&payload) {
            ctx.recorder().note("rtcp_received", 1);
            return;
        }
        match p.remote {
            // The mix may start before its 2xx is read (another socket).
            None => return ctx.recorder().note("rtp_before_answer", 1),
            Some(r) if r != source => return ctx.recorder().note("rtp_from_elsewhere", 1),
            Some(_) => {}
        }
        let Ok(pkt) = rtp::parse(payload) else {
            ctx.recorder().note("rtp_unparsable", 1);
            return;
        };
        if !matches!(p.state, State::Joined | State::Leaving) {
            return;
        }
        let me = (p.index < self.tones.talkers()).then_some(p.index);
        let burst = self.confs[p.conf].burst;
        p.meter.on_packet(ctx, &pkt, &self.tones, me, burst);
    }

    fn on_stop(&mut self, ctx: &mut Ctx<'_>) {
        // The pacer ends once every participant is started: the conferences go on to their
        // end. Stopped before that (a signal), everyone joined leaves now.
        if self.started >= self.cfg.sessions() {
            return;
        }
        self.leave_all(ctx);
    }

    fn summary_lines(&self) -> Vec<String> {
        let freqs: Vec<String> = self
            .tones
            .freqs()
            .iter()
            .map(|f| format!("{f} Hz"))
            .collect();
        vec![format!(
            "conference: {} x {} participants, {} talkers ({}), {}, factory {}",
            self.cfg.conferences,
            self.cfg.participants,
            self.cfg.talkers,
            freqs.join(", "),
            self.tones.law().name(),
            self.factory()
        )]
    }
}
