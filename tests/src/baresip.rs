//! Running baresip (Debian package `baresip-core`, v1.0.0 on Debian 12) as a third-party SIP
//! user agent: no sound card, G.711 only, UDP on 127.0.0.1, driven over its `ctrl_tcp` JSON
//! interface.
//!
//! Each instance gets a temp config directory (`config`, empty `accounts` and `contacts`) and a
//! block of [`PORTS`] consecutive ports of [`crate::ports::INTEROP`]:
//!
//! ```text
//!  P      SIP over UDP and TCP (`sip_listen`)      P+1  TLS (baresip binds it unasked)
//!  P+2    ctrl_tcp (netstring-framed JSON)         P+8..P+16  RTP/RTCP (`rtp_ports`)
//! ```
//!
//! Modules: `g711` (PCMU/PCMA), `ausine` as the audio source (a sine at the configured
//! frequency; it wants 48 kHz stereo, which baresip resamples to 8 kHz mono), `sndfile` (an
//! audio filter writing what is sent, `dump-<time>-enc.wav`, and what is received and decoded,
//! `dump-<time>-dec.wav`, as 8 kHz mono 16-bit WAV into the instance's `snd/`), `menu` (the
//! `dial`, `hangup`, `uanew` commands), `contact` (its `message` command sends a pager-mode
//! MESSAGE to the current contact, one of [`BaresipBuilder::contact`]), `ctrl_tcp` and `account`. No audio player module is
//! loaded, so baresip plays nothing (the received audio still goes through the filters); no
//! STUN/TURN/ICE module, so the SDP carries 127.0.0.1.
//!
//! It runs with `-s`: libre's SIP trace, every message sent and received, goes to its log. That
//! is where MESSAGEs are read back ([`Baresip::received_messages`], [`Baresip::sent_messages`],
//! with the final answer to each): baresip 1.0.0 reports none on `ctrl_tcp`, and `menu` prints a
//! received one only to a UI module, of which none is loaded.
//!
//! The account is created after the control connection is up (`uanew`), so its
//! `REGISTER_OK` event cannot be missed; it auto-answers (`answermode=auto`) and offers PCMA
//! only. Every wait is bounded, and baresip quits by itself after its lifetime (`-t`); the
//! process is killed (by pid, through [`Child::kill`]) when the handle drops.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::sip::{self, hdr::Via, Message};
use serde_json::Value;

use crate::audio::{self, ToneReport, Wav};
use crate::ports;
use crate::util::{poll_until, TempDir};
use crate::wire::header;

/// Where Debian installs baresip's modules.
pub const MODULE_PATH: &str = "/usr/lib/baresip/modules";

/// The modules an instance loads (all in `baresip-core`).
pub const MODULES: &[&str] = &[
    "g711", "ausine", "sndfile", "account", "menu", "contact", "ctrl_tcp",
];

/// Ports taken per instance (see the module docs for the layout).
pub const PORTS: u16 = 16;

/// How long baresip may take to open its control port.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one control command may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `baresip` and the modules it needs are installed.
pub fn available() -> bool {
    let runs = Command::new("baresip")
        .arg("-h")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    runs && MODULES
        .iter()
        .all(|m| Path::new(MODULE_PATH).join(format!("{m}.so")).exists())
}

/// Options of an instance; see [`Baresip::builder`].
#[derive(Debug, Clone)]
pub struct BaresipBuilder {
    user: String,
    tone_hz: u32,
    registrar: Option<SocketAddr>,
    password: Option<String>,
    lifetime: Duration,
    contacts: Vec<String>,
}

impl BaresipBuilder {
    /// The frequency of the sine it sends (10..=20000 Hz; `ausine`'s limits). Default 440.
    pub fn tone(mut self, hz: u32) -> BaresipBuilder {
        assert!((10..=20_000).contains(&hz), "ausine takes 10..=20000 Hz");
        self.tone_hz = hz;
        self
    }

    /// Registers (every 60 s) at `registrar` as `sip:USER@IP:PORT` of the registrar, whose
    /// host and port are then its domain.
    pub fn registrar(mut self, registrar: SocketAddr) -> BaresipBuilder {
        self.registrar = Some(registrar);
        self
    }

    /// The digest password (`auth_pass`; the user name is the AOR's user).
    pub fn password(mut self, password: &str) -> BaresipBuilder {
        self.password = Some(password.to_string());
        self
    }

    /// Adds `uri` to its `contacts` file, a peer [`Baresip::send_message`] can write to.
    pub fn contact(mut self, uri: &str) -> BaresipBuilder {
        self.contacts.push(uri.to_string());
        self
    }

    /// Quits by itself after this long (`baresip -t`), a bound on a stuck test. Default 120 s.
    pub fn lifetime(mut self, lifetime: Duration) -> BaresipBuilder {
        self.lifetime = lifetime;
        self
    }

    /// Starts baresip, connects to its control port and creates the account; with a
    /// registrar, waits for `REGISTER_OK` (panics with the log on failure).
    pub fn spawn(self) -> Baresip {
        let dir = TempDir::new();
        let base = ports::block(PORTS);
        let sip = SocketAddr::from(([127, 0, 0, 1], base));
        let ctrl_port = base + 2;
        let rtp = base + 8..base + PORTS;
        let snd = dir.path().join("snd");
        std::fs::create_dir_all(&snd).expect("create snd dir");
        dir.write("config", &config(sip, ctrl_port, &rtp, self.tone_hz, &snd));
        dir.write("accounts", "");
        let contacts: String = self.contacts.iter().map(|c| format!("<{c}>\n")).collect();
        dir.write("contacts", &contacts);

        let log_path = dir.path().join("baresip.log");
        let log = std::fs::File::create(&log_path).expect("create baresip log");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .arg("-t")
            .arg(self.lifetime.as_secs().max(1).to_string())
            .arg("-s")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run baresip: {e}"));
        let mut b = Baresip {
            user: self.user.clone(),
            child,
            sip,
            rtp,
            tone_hz: self.tone_hz,
            registrar: self.registrar,
            contacts: self.contacts.clone(),
            current_contact: 0,
            ctrl: None,
            events: VecDeque::new(),
            seen: Vec::new(),
            status: None,
            log_path,
            dir,
        };
        b.connect(ctrl_port);
        let aor = b.aor();
        let mut account = format!("<{aor}>;answermode=auto;audio_codecs=PCMA");
        match self.registrar {
            Some(_) => account.push_str(";regint=60"),
            None => account.push_str(";regint=0"),
        }
        if let Some(p) = &self.password {
            account.push_str(&format!(";auth_pass={p}"));
        }
        b.command("uanew", &account)
            .unwrap_or_else(|e| panic!("baresip {}: uanew {account}: {e}", b.user));
        if self.registrar.is_some() {
            b.wait_registered(Duration::from_secs(10));
        }
        b
    }
}

/// The `config` file of an instance.
fn config(sip: SocketAddr, ctrl_port: u16, rtp: &Range<u16>, tone_hz: u32, snd: &Path) -> String {
    let mut c = format!(
        "# generated by cpm-tests (tests/src/baresip.rs)\n\
         poll_method\t\tepoll\n\
         sip_listen\t\t{sip}\n\
         call_local_timeout\t30\n\
         call_max_calls\t\t4\n\
         audio_source\t\tausine,{tone_hz}\n\
         ausrc_srate\t\t48000\n\
         ausrc_channels\t\t2\n\
         rtp_ports\t\t{}-{}\n\
         rtcp_mux\t\tno\n\
         jitter_buffer_delay\t5-10\n\
         net_interface\t\t127.0.0.1\n\
         statmode_default\toff\n\
         ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n\
         snd_path\t\t{}\n\
         module_path\t\t{MODULE_PATH}\n",
        rtp.start,
        rtp.end - 1,
        snd.display(),
    );
    for m in ["g711", "ausine", "sndfile"] {
        c.push_str(&format!("module\t\t\t{m}.so\n"));
    }
    c.push_str("module_tmp\t\taccount.so\n");
    for m in ["menu", "contact", "ctrl_tcp"] {
        c.push_str(&format!("module_app\t\t{m}.so\n"));
    }
    c
}

/// One event baresip reported on its control connection (`{"event":true,"type":...}`).
#[derive(Debug, Clone)]
pub struct Event(pub Value);

impl Event {
    /// The event type, e.g. `REGISTER_OK`, `CALL_ESTABLISHED`, `CALL_CLOSED`.
    pub fn kind(&self) -> &str {
        self.get("type").unwrap_or("")
    }

    /// The `param` field (e.g. the reason of `CALL_CLOSED`).
    pub fn param(&self) -> &str {
        self.get("param").unwrap_or("")
    }

    /// A string field.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
}

/// One SIP message in an instance's trace (`baresip -s`), sent or received.
#[derive(Debug, Clone)]
pub struct Traced {
    /// `UDP`, `TCP` or `TLS`.
    pub transport: String,
    /// Where it came from.
    pub src: SocketAddr,
    /// Where it went.
    pub dst: SocketAddr,
    /// The message.
    pub msg: Message,
}

/// What opens each trace entry (libre prints it in cyan), then `TRANSPORT SRC -> DST`.
const TRACE_START: &str = "\x1b[36;1m#\n";
/// What closes each trace entry, right after the message's last byte.
const TRACE_END: &str = "\x1b[;m\n";

/// Every complete entry of a SIP trace in `log` (an entry still being written is skipped;
/// one that does not parse as SIP panics: it means the format assumed here is wrong).
pub fn parse_trace(log: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    for entry in log.split(TRACE_START).skip(1) {
        let Some((head, rest)) = entry.split_once('\n') else {
            continue;
        };
        let Some((raw, _)) = rest.split_once(TRACE_END) else {
            continue;
        };
        let mut words = head.split_whitespace();
        let (Some(transport), Some(src), Some("->"), Some(dst)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            panic!("baresip trace entry with an unknown heading {head:?}");
        };
        let (Ok(src), Ok(dst)) = (src.parse(), dst.parse()) else {
            panic!("baresip trace entry with unknown addresses {head:?}");
        };
        let msg = sip::parse(Bytes::copy_from_slice(raw.as_bytes())).unwrap_or_else(|e| {
            panic!("baresip traced a message that does not parse ({e:?}):\n{raw}")
        });
        out.push(Traced {
            transport: transport.to_string(),
            src,
            dst,
            msg,
        });
    }
    out
}

/// A pager-mode MESSAGE (RFC 3428) in an instance's trace, with the final answer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagerMessage {
    /// The From header.
    pub from: String,
    /// The To header.
    pub to: String,
    /// The Request-URI.
    pub uri: String,
    /// The Content-Type header.
    pub content_type: String,
    /// The body as text.
    pub text: String,
    /// The Call-ID, with the CSeq what tells retransmissions apart from new messages.
    pub call_id: String,
    /// The CSeq header.
    pub cseq: String,
    /// The final status it was answered with (sent by the instance for a message it received,
    /// received for one it sent), once there is one.
    pub status: Option<u16>,
}

impl PagerMessage {
    fn key(msg: &Message) -> (String, String) {
        (
            header(msg, "Call-ID").unwrap_or_default(),
            header(msg, "CSeq").unwrap_or_default(),
        )
    }

    fn is_answered(&self) -> bool {
        self.status.is_some()
    }
}

/// The MESSAGEs of `trace` that `sent` tells (true: those `me` sent, by their top Via's
/// sent-by; false: the others), once each in first-seen order (retransmissions folded), each
/// with the final response to it.
pub fn pager_messages(trace: &[Traced], me: SocketAddr, sent: bool) -> Vec<PagerMessage> {
    let mine = |m: &Message| {
        m.top_via()
            .is_ok_and(|v: Via| v.sent_by() == me.to_string())
    };
    let mut out: Vec<PagerMessage> = Vec::new();
    for t in trace {
        let m = &t.msg;
        if m.method().map(|m| m.as_str()) != Some("MESSAGE") || mine(m) != sent {
            continue;
        }
        let (call_id, cseq) = PagerMessage::key(m);
        if out.iter().any(|p| p.call_id == call_id && p.cseq == cseq) {
            continue;
        }
        out.push(PagerMessage {
            from: header(m, "From").unwrap_or_default(),
            to: header(m, "To").unwrap_or_default(),
            uri: m
                .request_uri()
                .map(|u| String::from_utf8_lossy(u).into_owned())
                .unwrap_or_default(),
            content_type: header(m, "Content-Type").unwrap_or_default(),
            text: String::from_utf8_lossy(&m.body).into_owned(),
            call_id,
            cseq,
            status: None,
        });
    }
    for t in trace {
        let Some(code @ 200..) = t.msg.status() else {
            continue;
        };
        let (call_id, cseq) = PagerMessage::key(&t.msg);
        if let Some(p) = out
            .iter_mut()
            .find(|p| p.call_id == call_id && p.cseq == cseq && p.status.is_none())
        {
            p.status = Some(code);
        }
    }
    out
}

/// Which recording of a call: what baresip sent (`enc`) or what it received (`dec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The audio it encoded and sent.
    Sent,
    /// The audio it received and decoded.
    Received,
}

impl Direction {
    fn suffix(self) -> &'static str {
        match self {
            Direction::Sent => "-enc.wav",
            Direction::Received => "-dec.wav",
        }
    }
}

/// A running baresip; killed on drop if still running, its log printed if the test panics.
#[derive(Debug)]
pub struct Baresip {
    user: String,
    child: Child,
    sip: SocketAddr,
    rtp: Range<u16>,
    tone_hz: u32,
    registrar: Option<SocketAddr>,
    contacts: Vec<String>,
    /// The index in `contacts` of the contact module's current contact.
    current_contact: usize,
    ctrl: Option<Ctrl>,
    events: VecDeque<Event>,
    seen: Vec<Event>,
    status: Option<ExitStatus>,
    log_path: PathBuf,
    // Dropped last: the log and recordings live in it.
    dir: TempDir,
}

impl Baresip {
    /// A builder for user `user` (the AOR's user part), sending a 440 Hz tone.
    pub fn builder(user: &str) -> BaresipBuilder {
        BaresipBuilder {
            user: user.to_string(),
            tone_hz: 440,
            registrar: None,
            password: None,
            lifetime: Duration::from_secs(120),
            contacts: Vec::new(),
        }
    }

    /// The account's address-of-record: `sip:USER@REGISTRAR` when registering, else
    /// `sip:USER@IP:PORT` of its own SIP listener.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.registrar.unwrap_or(self.sip))
    }

    /// The URI that reaches this instance directly, peer to peer: `sip:USER@IP:PORT`.
    pub fn direct_uri(&self) -> String {
        format!("sip:{}@{}", self.user, self.sip)
    }

    /// Its SIP listener (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip
    }

    /// The ports its RTP and RTCP sockets come from.
    pub fn rtp_ports(&self) -> Range<u16> {
        self.rtp.clone()
    }

    /// The frequency of the tone it sends.
    pub fn tone_hz(&self) -> u32 {
        self.tone_hz
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config directory (holds `config`, `baresip.log` and `snd/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything baresip wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Every event seen so far (consumed by a wait or not).
    pub fn events(&self) -> Vec<Event> {
        self.seen
            .iter()
            .chain(self.events.iter())
            .cloned()
            .collect()
    }

    /// Runs a command (`dial`, `hangup`, `uanew`, `reginfo`, `quit`, ...) with `params` ("" for
    /// none) and returns its output, or its error text when baresip says it failed.
    pub fn command(&mut self, cmd: &str, params: &str) -> Result<String, String> {
        let token = crate::util::token();
        let mut msg = serde_json::json!({ "command": cmd, "token": token });
        if !params.is_empty() {
            msg["params"] = Value::String(params.to_string());
        }
        let body = msg.to_string();
        self.ctrl_mut()
            .send(&body)
            .unwrap_or_else(|e| panic!("baresip {}: send {body}: {e}", self.user));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let Some(v) = self.next_message(deadline) else {
                panic!(
                    "baresip {}: no answer to {body} within {COMMAND_TIMEOUT:?}; log:\n{}",
                    self.user,
                    self.log()
                );
            };
            if v.get("response").and_then(Value::as_bool) == Some(true)
                && v.get("token").and_then(Value::as_str) == Some(token.as_str())
            {
                let data = v.get("data").and_then(Value::as_str).unwrap_or("");
                return match v.get("ok").and_then(Value::as_bool) {
                    Some(true) => Ok(data.to_string()),
                    _ => Err(data.to_string()),
                };
            }
        }
    }

    /// Waits for the next event of type `kind`, skipping others; panics after `timeout`, or
    /// at once when an event in `fatal` comes first.
    pub fn wait_event_or(&mut self, kind: &str, fatal: &[&str], timeout: Duration) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(e) = self.events.pop_front() {
                self.seen.push(e.clone());
                if e.kind() == kind {
                    return e;
                }
                if fatal.contains(&e.kind()) {
                    panic!(
                        "baresip {}: {} ({}) while waiting for {kind}; events: {:?}; log:\n{}",
                        self.user,
                        e.kind(),
                        e.param(),
                        self.seen,
                        self.log()
                    );
                }
            }
            if self.next_message(deadline).is_none() {
                panic!(
                    "baresip {}: no {kind} within {timeout:?}; events: {:?}; log:\n{}",
                    self.user,
                    self.seen,
                    self.log()
                );
            }
        }
    }

    /// Waits for the next event of type `kind`, skipping others; panics after `timeout`.
    pub fn wait_event(&mut self, kind: &str, timeout: Duration) -> Event {
        self.wait_event_or(kind, &[], timeout)
    }

    /// Waits for `REGISTER_OK` (panics on `REGISTER_FAIL`).
    pub fn wait_registered(&mut self, timeout: Duration) -> Event {
        self.wait_event_or("REGISTER_OK", &["REGISTER_FAIL"], timeout)
    }

    /// Dials `uri` (the command returns at once; see [`Baresip::wait_established`]).
    pub fn dial(&mut self, uri: &str) {
        if let Err(e) = self.command("dial", uri) {
            panic!(
                "baresip {}: dial {uri}: {e}; log:\n{}",
                self.user,
                self.log()
            );
        }
    }

    /// Waits for the call to be established (panics if it closes first).
    pub fn wait_established(&mut self, timeout: Duration) -> Event {
        self.wait_event_or("CALL_ESTABLISHED", &["CALL_CLOSED"], timeout)
    }

    /// Hangs up the current call.
    pub fn hangup(&mut self) {
        if let Err(e) = self.command("hangup", "") {
            panic!("baresip {}: hangup: {e}; log:\n{}", self.user, self.log());
        }
    }

    /// Waits for `CALL_CLOSED`.
    pub fn wait_closed(&mut self, timeout: Duration) -> Event {
        self.wait_event("CALL_CLOSED", timeout)
    }

    /// Asks baresip to quit and waits for it to exit (killing it after `timeout`); its
    /// recordings are complete afterwards.
    pub fn quit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.try_status().is_none() {
            // The process may close the connection before it answers: ignore the outcome.
            if let Some(c) = self.ctrl.as_mut() {
                let _ = c.send(r#"{"command":"quit"}"#);
            }
            if poll_until(timeout, || self.try_status()).is_none() {
                eprintln!(
                    "[cpm-tests] baresip {} did not quit within {timeout:?}: killing pid {}",
                    self.user,
                    self.child.id()
                );
                let _ = self.child.kill();
                self.status = self.child.wait().ok();
                return None;
            }
        }
        self.status
    }

    /// The exit status if the process has exited (non-blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait baresip");
        }
        self.status
    }

    /// The recordings of one direction, oldest first (one file per call).
    pub fn recordings(&self, dir: Direction) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("snd"))
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.ends_with(dir.suffix()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The one recording of `dir` (panics unless there is exactly one).
    pub fn recording(&self, dir: Direction) -> Wav {
        let files = self.recordings(dir);
        let [file] = files.as_slice() else {
            panic!(
                "baresip {}: expected one {dir:?} recording, found {files:?}; log:\n{}",
                self.user,
                self.log()
            );
        };
        Wav::read(file).unwrap_or_else(|e| panic!("baresip {}: {e}", self.user))
    }

    /// Asserts that the one recording of `dir` holds the sine `tone_hz` for at least `min`,
    /// dominating (see [`audio::detect_tone`]) each of `others` and twice its own frequency,
    /// in at least 90% of its non-silent 20 ms blocks. Returns the analysis.
    #[track_caller]
    pub fn assert_tone(
        &self,
        dir: Direction,
        tone_hz: u32,
        others: &[u32],
        min: Duration,
    ) -> ToneReport {
        let wav = self.recording(dir);
        let mut compare: Vec<f64> = others.iter().map(|&f| f64::from(f)).collect();
        compare.push(2.0 * f64::from(tone_hz));
        let r = audio::detect_tone(&wav.mono(), wav.rate, f64::from(tone_hz), &compare);
        assert!(
            r.toned_secs() >= min.as_secs_f64() && r.toned * 10 >= r.loud * 9,
            "baresip {}: {dir:?} audio ({:?} at {} Hz) lacks a {tone_hz} Hz tone over \
             {compare:?} for {min:?}: {r:?}",
            self.user,
            wav.duration(),
            wav.rate,
        );
        r
    }

    /// The source address of the RTP it received, from its log line `stream: incoming rtp for
    /// 'audio' established, receiving from IP:PORT` (the last one).
    pub fn rtp_source(&self) -> Option<SocketAddr> {
        self.log().lines().rev().find_map(|l| {
            let (_, rest) = l.split_once("established, receiving from ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    /// Every complete SIP message it sent or received so far (it runs with `-s`).
    pub fn sip_trace(&self) -> Vec<Traced> {
        parse_trace(&self.log())
    }

    /// The pager-mode MESSAGEs it received so far, in arrival order, with its answers.
    pub fn received_messages(&self) -> Vec<PagerMessage> {
        pager_messages(&self.sip_trace(), self.sip, false)
    }

    /// The pager-mode MESSAGEs it sent so far, in order, with the final responses it got.
    pub fn sent_messages(&self) -> Vec<PagerMessage> {
        pager_messages(&self.sip_trace(), self.sip, true)
    }

    /// Sends `text` (text/plain) in a MESSAGE to `to`, one of its [`BaresipBuilder::contact`]s
    /// (the `contact` module's `message` command writes to its current contact, chosen first
    /// with `contact_next`/`contact_prev`). Returns at once; see [`Baresip::wait_sent`].
    pub fn send_message(&mut self, to: &str, text: &str) {
        let Some(target) = self.contacts.iter().position(|c| c == to) else {
            panic!(
                "baresip {}: {to} is not among its contacts {:?}",
                self.user, self.contacts
            );
        };
        while self.current_contact != target {
            let cmd = if self.current_contact < target {
                self.current_contact += 1;
                "contact_next"
            } else {
                self.current_contact -= 1;
                "contact_prev"
            };
            let out = self
                .command(cmd, "")
                .unwrap_or_else(|e| panic!("baresip {}: {cmd}: {e}", self.user));
            let want = &self.contacts[self.current_contact];
            assert!(
                out.contains(want.as_str()),
                "baresip {}: {cmd} says {out:?}, not {want}",
                self.user
            );
        }
        if let Err(e) = self.command("message", text) {
            panic!(
                "baresip {}: message {text:?} to {to}: {e}; log:\n{}",
                self.user,
                self.log()
            );
        }
    }

    /// Waits until the MESSAGE it sent with body `text` got a final response (the last such
    /// message if several), and returns it; panics after `timeout`.
    pub fn wait_sent(&self, text: &str, timeout: Duration) -> PagerMessage {
        poll_until(timeout, || {
            self.sent_messages()
                .into_iter()
                .rev()
                .find(|m| m.text == text)
                .filter(PagerMessage::is_answered)
        })
        .unwrap_or_else(|| {
            panic!(
                "baresip {}: no final response to its MESSAGE {text:?} within {timeout:?}; log:\n{}",
                self.user,
                self.log()
            )
        })
    }

    /// Waits until it has received `count` MESSAGEs and answered each finally, and returns
    /// them (all it received, in order); panics after `timeout`.
    pub fn wait_received(&self, count: usize, timeout: Duration) -> Vec<PagerMessage> {
        poll_until(timeout, || {
            let got = self.received_messages();
            (got.len() >= count && got.iter().all(PagerMessage::is_answered)).then_some(got)
        })
        .unwrap_or_else(|| {
            panic!(
                "baresip {}: not {count} MESSAGEs received and answered within {timeout:?}: \
                 {:?}; log:\n{}",
                self.user,
                self.received_messages(),
                self.log()
            )
        })
    }

    fn ctrl_mut(&mut self) -> &mut Ctrl {
        self.ctrl.as_mut().expect("control connection")
    }

    /// Connects to the control port, retrying until baresip listens (panics if it exits or
    /// does not listen within [`READY_TIMEOUT`]).
    fn connect(&mut self, port: u16) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                s.set_read_timeout(Some(Duration::from_millis(50)))
                    .expect("set_read_timeout");
                s.set_nodelay(true).expect("set_nodelay");
                self.ctrl = Some(Ctrl {
                    stream: s,
                    buf: Vec::new(),
                });
                return;
            }
            if let Some(status) = self.try_status() {
                panic!(
                    "baresip {} exited before listening ({status}); log:\n{}",
                    self.user,
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "baresip {}: no control port {addr} within {READY_TIMEOUT:?}; log:\n{}",
                    self.user,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reads one message from the control connection (queuing events), or `None` at
    /// `deadline`.
    fn next_message(&mut self, deadline: Instant) -> Option<Value> {
        let user = self.user.clone();
        let ctrl = self.ctrl.as_mut()?;
        loop {
            if let Some(frame) = ctrl.take_frame() {
                let v: Value = serde_json::from_slice(&frame).unwrap_or_else(|e| {
                    panic!(
                        "baresip {user}: bad control message {:?}: {e}",
                        String::from_utf8_lossy(&frame)
                    )
                });
                if v.get("event").is_some_and(|e| e == true || e == "true") {
                    self.events.push_back(Event(v.clone()));
                }
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            if !ctrl.fill() {
                // Closed: nothing more will come.
                thread::sleep(Duration::from_millis(20));
                if Instant::now() >= deadline {
                    return None;
                }
            }
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "----- baresip {} (sip={} pid={}) log -----\n{}----- end of baresip log -----",
                self.user,
                self.sip,
                self.child.id(),
                self.log()
            );
        }
    }
}

/// The control connection: netstring-framed (`LEN:JSON,`) messages both ways.
#[derive(Debug)]
struct Ctrl {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Ctrl {
    fn send(&mut self, json: &str) -> std::io::Result<()> {
        self.stream
            .write_all(format!("{}:{json},", json.len()).as_bytes())
    }

    /// Reads what is there (up to the read timeout); false when the peer closed or failed.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                true
            }
            Err(_) => false,
        }
    }

    /// Takes one complete netstring from the buffer.
    fn take_frame(&mut self) -> Option<Vec<u8>> {
        let (frame, used) = parse_netstring(&self.buf)?;
        let frame = frame.to_vec();
        self.buf.drain(..used);
        Some(frame)
    }
}

/// One netstring (`LEN:BYTES,`) at the start of `b`: its bytes and the length consumed.
pub fn parse_netstring(b: &[u8]) -> Option<(&[u8], usize)> {
    let colon = b.iter().position(|&c| c == b':')?;
    let len: usize = std::str::from_utf8(&b[..colon]).ok()?.parse().ok()?;
    let start = colon + 1;
    let end = start.checked_add(len)?;
    if b.len() <= end {
        return None;
    }
    (b[end] == b',').then_some((&b[start..end], end + 1))
}

/// A call from `caller` to `callee_uri` held for `hold`, then hung up by the caller; returns
/// when both sides reported the call closed. `callee` must auto-answer (every instance does).
pub fn call(caller: &mut Baresip, callee: &mut Baresip, callee_uri: &str, hold: Duration) {
    caller.dial(callee_uri);
    // The caller first: if the call fails, its CALL_CLOSED says why (e.g. "501 Not Implemented").
    caller.wait_established(Duration::from_secs(10));
    callee.wait_established(Duration::from_secs(10));
    thread::sleep(hold);
    caller.hangup();
    caller.wait_closed(Duration::from_secs(10));
    callee.wait_closed(Duration::from_secs(10));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstrings() {
        assert_eq!(parse_netstring(b"5:hello,rest"), Some((&b"hello"[..], 8)));
        assert_eq!(parse_netstring(b"0:,"), Some((&b""[..], 3)));
        assert_eq!(parse_netstring(b"5:hell"), None);
        assert_eq!(parse_netstring(b"5:hello"), None);
        assert_eq!(parse_netstring(b"5:hellox"), None);
        assert_eq!(parse_netstring(b"x:hello,"), None);
    }

    /// A trace as baresip 1.0.0 writes it (`-s`): one entry per message, `#`, the heading,
    /// the message in CRLF lines, the colour reset right after its body.
    fn traced(transport: &str, src: &str, dst: &str, msg: &str) -> String {
        format!("{TRACE_START}{transport} {src} -> {dst}\n{msg}{TRACE_END}")
    }

    const ME: &str = "127.0.0.1:27000";
    const PEER: &str = "127.0.0.1:5060";

    fn message(via: &str, cseq: u32, text: &str) -> String {
        format!(
            "MESSAGE sip:bob@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {via};branch=z9hG4bK{cseq};rport\r\n\
             To: <sip:bob@127.0.0.1:5060>\r\n\
             From: <sip:alice@127.0.0.1:5060>;tag=a\r\n\
             Call-ID: c1\r\n\
             CSeq: {cseq} MESSAGE\r\n\
             Content-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n{text}",
            text.len()
        )
    }

    fn response(via: &str, cseq: u32, code: u16) -> String {
        format!(
            "SIP/2.0 {code} Whatever\r\n\
             Via: SIP/2.0/UDP {via};branch=z9hG4bK{cseq};rport\r\n\
             To: <sip:bob@127.0.0.1:5060>;tag=b\r\n\
             From: <sip:alice@127.0.0.1:5060>;tag=a\r\n\
             Call-ID: c1\r\n\
             CSeq: {cseq} MESSAGE\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn trace_entries_parse_and_a_partial_one_is_skipped() {
        let mut log = String::from("baresip is ready.\n");
        log += &traced("UDP", ME, PEER, &message(ME, 1, "hi there"));
        log += "ua: some other line\n";
        log += &traced("TCP", PEER, ME, &response(ME, 1, 202));
        // Still being written: no closing reset yet.
        log += &format!("{TRACE_START}UDP {PEER} -> {ME}\nSIP/2.0 200 OK\r\n");
        let t = parse_trace(&log);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0].transport, "UDP");
        assert_eq!(t[0].src, ME.parse().unwrap());
        assert_eq!(t[0].dst, PEER.parse().unwrap());
        assert_eq!(&t[0].msg.body[..], b"hi there");
        assert_eq!(t[1].transport, "TCP");
        assert_eq!(t[1].msg.status(), Some(202));
    }

    #[test]
    fn pager_messages_fold_retransmissions_and_take_the_final_answer() {
        let me: SocketAddr = ME.parse().unwrap();
        let mut log = String::new();
        // Sent by me (my Via), retransmitted, 100 then 202.
        log += &traced("UDP", ME, PEER, &message(ME, 1, "one"));
        log += &traced("UDP", ME, PEER, &message(ME, 1, "one"));
        log += &traced("UDP", PEER, ME, &response(ME, 1, 100));
        log += &traced("UDP", PEER, ME, &response(ME, 1, 202));
        // Received (the proxy's Via on top), answered 200 by me; a second one unanswered.
        log += &traced("UDP", PEER, ME, &message(PEER, 7, "two"));
        log += &traced("UDP", ME, PEER, &response(PEER, 7, 200));
        log += &traced("UDP", PEER, ME, &message(PEER, 8, "three"));
        let t = parse_trace(&log);

        let sent = pager_messages(&t, me, true);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].text, "one");
        assert_eq!(sent[0].status, Some(202));
        assert_eq!(sent[0].cseq, "1 MESSAGE");

        let got = pager_messages(&t, me, false);
        let summary: Vec<(&str, Option<u16>)> =
            got.iter().map(|m| (m.text.as_str(), m.status)).collect();
        assert_eq!(summary, [("two", Some(200)), ("three", None)]);
        assert_eq!(got[0].uri, "sip:bob@127.0.0.1:5060");
        assert_eq!(got[0].content_type, "text/plain");
        assert!(got[0].from.starts_with("<sip:alice@"));
    }

    #[test]
    fn config_names_ports_tone_and_modules() {
        let c = config(
            "127.0.0.1:18000".parse().unwrap(),
            18002,
            &(18008..18016),
            1000,
            Path::new("/tmp/x/snd"),
        );
        for line in [
            "sip_listen\t\t127.0.0.1:18000",
            "ctrl_tcp_listen\t\t127.0.0.1:18002",
            "rtp_ports\t\t18008-18015",
            "audio_source\t\tausine,1000",
            "snd_path\t\t/tmp/x/snd",
            "module\t\t\tsndfile.so",
            "module_app\t\tctrl_tcp.so",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} missing in:\n{c}");
        }
        for m in MODULES {
            assert!(c.contains(&format!("{m}.so")), "{m} not loaded");
        }
    }
}
