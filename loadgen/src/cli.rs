//! The command line (a contract other tools rely on; issue 3):
//!
//! ```text
//! cpm-loadgen uas --listen ADDR:PORT [--register-to HOST:PORT --users N] [--rtp echo|sink|generate]
//! cpm-loadgen call|options|register|message|msrp --target HOST:PORT [--to USER_PATTERN] --rate PER_S
//!     (--count N | --duration SECS) [--hold SECS] [--concurrency N] [--ramp-up SECS]
//!     [--json FILE] [--html FILE] [--max-loss PCT] [--max-p99-ms MS] [--min-success PCT]
//! cpm-loadgen conference --target HOST:PORT --conferences C --participants P [--talkers T]
//!     [--duration SECS] [--factory URI] [--codec pcmu|pcma] [--register]
//! ```
//!
//! Flags take their value as the next argument or after `=`. [`USAGE`] lists every option.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::report::Thresholds;
use crate::scenario::conference::tones::Law;
use crate::scenario::media::{self, MediaProfile};
use crate::scenario::uas::RtpMode;
use crate::scenario::Pattern;
use cpm_engine::sdp::Codec;

/// The help text.
pub const USAGE: &str = "\
cpm-loadgen: the load generator of cpm-engine

USAGE:
  cpm-loadgen uas --listen ADDR:PORT [--register-to HOST:PORT --users N] [--rtp echo|sink|generate]
  cpm-loadgen (call|options|register|message|msrp) --target HOST:PORT [--to USER_PATTERN] --rate PER_S
              (--count N | --duration SECS) [--hold SECS] [--concurrency N] [--ramp-up SECS]
              [--json FILE] [--html FILE] [--max-loss PCT] [--max-p99-ms MS] [--min-success PCT]
  cpm-loadgen conference --target HOST:PORT --conferences C --participants P [--talkers T]
              [--duration SECS] [--factory URI] [--codec pcmu|pcma] [--register] [--rate PER_S]

CLIENT OPTIONS (call, options, register, message, msrp):
  --target HOST:PORT     where requests go (a server, or a uas directly)
  --to PATTERN           user of session n: PATTERN with %d / %0Nd = n mod --users [user%04d];
                         '' = the target itself (sip:DOMAIN, e.g. an OPTIONS ping of a proxy)
  --from PATTERN         From user, same expansion [loadgen]
  --users N              users in the patterns' range; register: one socket per user [1]
  --domain NAME          host part of URIs [the target's host:port]
  --rate PER_S           new sessions per second (fractions allowed)
  --count N              sessions in all
  --duration SECS        start sessions for this long (with --count: whichever ends first)
  --ramp-up SECS         rate grows linearly from 0 over this time [0]
  --concurrency N        sessions in flight at most; due sessions wait [10000]
  --drain SECS           after the last start, time for sessions in flight to end [35]
  --hold SECS            call: time between ACK and BYE [5]; msrp: last 200 to BYE [0]
  --codec NAME[/RATE[/CH]]  call: the codec offered: a static RTP payload type (PCMU, PCMA,
                         G722, L16, GSM, G729, ...) or any other as dynamic type 96 (opus/48000/2)
                         [PCMU]
  --ptime MS             call: packetization time, one RTP packet every MS [20]
  --payload-size BYTES   call: RTP payload bytes [what the codec makes in --ptime: PCMU 20 ms
                         160; needed for a dynamic codec]
  --rtp-ports MIN-MAX    call: RTP sockets on even ports of this range [any free port]
  --body-size BYTES      message: body size, send stamp included [100]
  --content-type TYPE    message: body type [text/plain]
  --expect CODES         message: final codes that count as success, comma-separated [2xx];
                         202 (\"stored\" by a store-and-forward server) is counted apart
  --messages M           msrp: messages per session [10]
  --size BYTES           msrp: bytes per message, send stamp included [100]
  --chunk BYTES          msrp: bytes per chunk at most [4096; 65536 with --file]
  --file BYTES           msrp: one message of BYTES per session (a file transfer)
  --relay HOST:PORT      msrp: authenticate at this RFC 4976 relay (AUTH) and put it in our
                         path (Kamailio's msrp module; the uas needs --msrp-relay too)
  --receiver ADDR:PORT   message: run a receiving uas in this process (registered at --target
                         unless --target is omitted or equal), so one run reports delivery
  --password PW          register: digest password of every user
  --users-file FILE      register: `user password` lines (cpmd's format)
  --expires SECS         register: expiry asked for [3600]
  --transport udp        only udp for now
  --local IP             address to bind and put in Via/Contact [the route to the target]

CONFERENCE OPTIONS (ad-hoc conferences, RFC 4579; each participant is a session):
  --conferences C        conferences [1]
  --participants P       participants per conference, the creator included [3]
  --talkers T            participants per conference sending a tone of their own (400 Hz
                         upwards, at most 28) in bursts, 1 s on, 1 s off; the others send
                         G.711 silence [3]
  --duration SECS        how long each conference runs once all its participants are in [10]
  --factory URI          the conference factory URI [sip:conf-factory@DOMAIN]
  --codec pcmu|pcma      the codec offered [pcmu]
  --register             register every participant (sip:<--from>@DOMAIN) first; with
                         --password / --users-file for digest
  --from PATTERN         participant i's user (i = conference * P + n) [part%04d]
  --rate PER_S           participants joining per second [50]
  --rtp-ports MIN-MAX, --local IP, --drain SECS, --expires SECS   as for call
  (participant 0 INVITEs the factory and takes the focus URI from the 200's Contact;
  the others INVITE the focus; after --duration all send BYE. Measured: join time,
  mixer_tick_lateness, mixer_interarrival_dev, mixer_delay (burst onset -> first frame
  with that tone at a receiver), RTP loss, and at each burst's end tones_ok/tones_wrong:
  every other talker present, one's own absent)

UAS OPTIONS:
  --listen ADDR:PORT     user i's socket is PORT+i (all ephemeral with port 0)
  --users N              users user0000.. [1]
  --user-pattern PATTERN user names [user%04d]
  --register-to HOST:PORT  register every user there (refreshed; unregistered at the end)
  --password PW, --users-file FILE, --expires SECS, --domain NAME   as for register
  --register-rate PER_S  registrations per second [500]
  --rtp echo|sink|generate   media of answered calls [generate]
  --codec LIST           codecs accepted, comma-separated, preferred first
                         [PCMU,PCMA,G722,L16/44100/2,L16,GSM,G729]; a generated stream uses the
                         offered ptime
  --payload-size BYTES   payload of a generated stream [the codec's for the ptime; else 160]
  --rtp-ports MIN-MAX    RTP sockets on even ports of this range [any free port]
  --duration SECS        stop after this long [until SIGINT/SIGTERM]
  --register-after SECS  register the users only after this delay (a store-and-forward server
                         holds what comes before and delivers it on REGISTER)
  --msrp-relay HOST:PORT chats: authenticate at this RFC 4976 relay and put it in our path
  (an INVITE with an m=message TCP/MSRP offer is answered a=setup:active: the uas connects to
  the offered path, answers every SEND 200 and checks each message's stamp and bytes)

COMMON:
  --json FILE            JSON report
  --html FILE            self-contained HTML report with plots
  --max-loss PCT         RTP loss at most PCT percent
  --max-p99-ms MS        p99 of the scenario's main latency at most MS
  --min-success PCT      at least PCT percent of sessions succeed [client: 100]
  --quiet                no progress line (it is shown only on a terminal anyway)
  --seed N               seed of branches, tags and Call-IDs [from the clock]

SIGNALS: SIGINT/SIGTERM stops starting sessions (a uas unregisters), drains and reports;
a second one ends the drain at once (sessions in flight fail as \"interrupted\").

EXIT STATUS: 0 thresholds met; 1 not met (reasons on stderr); 2 usage or setup error.
";

/// Which client scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioKind {
    /// INVITE, ACK, hold, RTP, BYE.
    Call,
    /// One OPTIONS transaction.
    Options,
    /// One registration.
    Register,
    /// One pager-mode MESSAGE.
    Message,
    /// INVITE with a chat offer, MSRP messages, BYE.
    Msrp,
    /// Ad-hoc conferences: factory INVITE, joins, tones through the mixer, BYE.
    Conference,
}

impl ScenarioKind {
    /// The subcommand's name.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Call => "call",
            ScenarioKind::Options => "options",
            ScenarioKind::Register => "register",
            ScenarioKind::Message => "message",
            ScenarioKind::Msrp => "msrp",
            ScenarioKind::Conference => "conference",
        }
    }
}

/// Options every role has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Common {
    /// `--json FILE`.
    pub json: Option<PathBuf>,
    /// `--html FILE`.
    pub html: Option<PathBuf>,
    /// `--max-loss`, `--max-p99-ms`, `--min-success`.
    pub thresholds: Thresholds,
    /// `--quiet`.
    pub quiet: bool,
    /// `--seed`.
    pub seed: Option<u64>,
}

/// A client subcommand.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientArgs {
    /// The scenario.
    pub kind: ScenarioKind,
    /// `--target HOST:PORT`, unresolved (optional only with `--receiver`).
    pub target: Option<String>,
    /// `--to`.
    pub to: Pattern,
    /// `--from`.
    pub from: Pattern,
    /// `--users`.
    pub users: u64,
    /// `--domain`.
    pub domain: Option<String>,
    /// `--rate`.
    pub rate: f64,
    /// `--count`.
    pub count: Option<u64>,
    /// `--duration`.
    pub duration: Option<Duration>,
    /// `--ramp-up`.
    pub ramp_up: Duration,
    /// `--concurrency`.
    pub concurrency: usize,
    /// `--drain`.
    pub drain: Duration,
    /// `--hold` (call).
    pub hold: Duration,
    /// `--codec`, `--ptime`, `--payload-size` (call).
    pub media: MediaProfile,
    /// `--rtp-ports` (call).
    pub rtp_ports: Option<(u16, u16)>,
    /// `--body-size` (message).
    pub body_size: usize,
    /// `--content-type` (message).
    pub content_type: String,
    /// `--receiver` (message).
    pub receiver: Option<SocketAddr>,
    /// `--expect` (message): the final codes that count as success (empty: any 2xx).
    pub expect: Vec<u16>,
    /// `--messages`, `--size`, `--chunk`, `--file` (msrp).
    pub msrp: crate::msrp::Load,
    /// `--relay` (msrp): an RFC 4976 relay to authenticate at, unresolved.
    pub relay: Option<String>,
    /// `--password`.
    pub password: Option<String>,
    /// `--users-file`.
    pub users_file: Option<PathBuf>,
    /// `--expires`.
    pub expires: u32,
    /// `--local`.
    pub local: Option<IpAddr>,
    /// `--conferences`, `--participants`, `--talkers`, `--factory`, `--codec`, `--register`
    /// (conference).
    pub conference: ConferenceArgs,
    /// Common options.
    pub common: Common,
}

/// The options of the `conference` scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct ConferenceArgs {
    /// `--conferences`.
    pub conferences: usize,
    /// `--participants`.
    pub participants: usize,
    /// `--talkers`.
    pub talkers: usize,
    /// `--factory`.
    pub factory: Option<String>,
    /// `--codec pcmu|pcma`.
    pub law: Law,
    /// `--register`.
    pub register: bool,
}

impl Default for ConferenceArgs {
    fn default() -> Self {
        ConferenceArgs {
            conferences: 1,
            participants: 3,
            talkers: 3,
            factory: None,
            law: Law::Mu,
            register: false,
        }
    }
}

/// The `uas` subcommand.
#[derive(Debug, Clone, PartialEq)]
pub struct UasArgs {
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--register-to`, unresolved.
    pub register_to: Option<String>,
    /// `--users`.
    pub users: u64,
    /// `--user-pattern`.
    pub pattern: Pattern,
    /// `--domain`.
    pub domain: Option<String>,
    /// `--password`.
    pub password: Option<String>,
    /// `--users-file`.
    pub users_file: Option<PathBuf>,
    /// `--expires`.
    pub expires: u32,
    /// `--register-rate`.
    pub register_rate: f64,
    /// `--rtp`.
    pub rtp: RtpMode,
    /// `--codec` (accepted codecs).
    pub codecs: Vec<Codec>,
    /// `--payload-size`.
    pub payload_len: Option<usize>,
    /// `--rtp-ports`.
    pub rtp_ports: Option<(u16, u16)>,
    /// `--duration`.
    pub duration: Option<Duration>,
    /// `--register-after`.
    pub register_after: Duration,
    /// `--msrp-relay`: the RFC 4976 relay chats authenticate at, unresolved.
    pub msrp_relay: Option<String>,
    /// Common options.
    pub common: Common,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `help`, `--help`, `-h`.
    Help,
    /// `--version`.
    Version,
    /// The answering side.
    Uas(Box<UasArgs>),
    /// A client scenario.
    Client(Box<ClientArgs>),
}

impl Command {
    fn client(a: ClientArgs) -> Command {
        Command::Client(Box::new(a))
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Err("a subcommand is required".into());
    };
    match sub.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "--version" | "-V" => Ok(Command::Version),
        "uas" => parse_uas(rest).map(|a| Command::Uas(Box::new(a))),
        "call" => parse_client(ScenarioKind::Call, rest).map(Command::client),
        "options" => parse_client(ScenarioKind::Options, rest).map(Command::client),
        "register" => parse_client(ScenarioKind::Register, rest).map(Command::client),
        "message" => parse_client(ScenarioKind::Message, rest).map(Command::client),
        "msrp" => parse_client(ScenarioKind::Msrp, rest).map(Command::client),
        "conference" => parse_client(ScenarioKind::Conference, rest).map(Command::client),
        other => Err(format!("unknown subcommand {other:?}")),
    }
}

/// `--flag value` and `--flag=value` pairs, in order.
fn pairs(args: &[String]) -> Result<Vec<(String, Option<String>)>, String> {
    const SWITCHES: [&str; 3] = ["--quiet", "--help", "--register"];
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if !a.starts_with("--") {
            return Err(format!("unexpected argument {a:?}"));
        }
        if let Some((k, v)) = a.split_once('=') {
            out.push((k.to_string(), Some(v.to_string())));
        } else if SWITCHES.contains(&a.as_str()) {
            out.push((a.clone(), None));
        } else {
            let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
            out.push((a.clone(), Some(v.clone())));
        }
    }
    Ok(out)
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

fn positive(flag: &str, v: &str) -> Result<f64, String> {
    let x: f64 = num(flag, v)?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("{flag} must be positive"))
    }
}

fn secs(flag: &str, v: &str) -> Result<Duration, String> {
    let x: f64 = num(flag, v)?;
    if x.is_finite() && x >= 0.0 {
        Ok(Duration::from_secs_f64(x))
    } else {
        Err(format!("{flag} must be a number of seconds"))
    }
}

/// `MIN-MAX` with room for at least one even port.
fn port_range(flag: &str, v: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{flag} {v:?}: MIN-MAX, ports 1..65535 with an even port between");
    let (a, b) = v.split_once('-').ok_or_else(bad)?;
    let (min, max): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if min == 0 || min > max || (min == max && min % 2 == 1) {
        return Err(bad());
    }
    Ok((min, max))
}

fn pct(flag: &str, v: &str) -> Result<f64, String> {
    let x: f64 = num(flag, v)?;
    if (0.0..=100.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{flag} must be a percentage (0..100)"))
    }
}

/// Handles an option every role has; false if `k` is not one.
fn common(c: &mut Common, k: &str, v: &str) -> Result<bool, String> {
    match k {
        "--json" => c.json = Some(PathBuf::from(v)),
        "--html" => c.html = Some(PathBuf::from(v)),
        "--max-loss" => c.thresholds.max_loss_pct = Some(pct(k, v)?),
        "--max-p99-ms" => c.thresholds.max_p99_ms = Some(positive(k, v)?),
        "--min-success" => c.thresholds.min_success_pct = Some(pct(k, v)?),
        "--seed" => c.seed = Some(num(k, v)?),
        "--quiet" => c.quiet = true,
        _ => return Ok(false),
    }
    Ok(true)
}

fn parse_client(kind: ScenarioKind, args: &[String]) -> Result<ClientArgs, String> {
    let mut a = ClientArgs {
        kind,
        target: None,
        to: Pattern::parse("user%04d")?,
        from: Pattern::parse("loadgen")?,
        users: 1,
        domain: None,
        rate: 0.0,
        count: None,
        duration: None,
        ramp_up: Duration::ZERO,
        concurrency: 10_000,
        drain: Duration::from_secs(35),
        hold: Duration::from_secs(5),
        media: MediaProfile::default(),
        rtp_ports: None,
        body_size: 100,
        content_type: "text/plain".into(),
        receiver: None,
        expect: Vec::new(),
        relay: None,
        msrp: crate::msrp::Load {
            messages: 10,
            size: 100,
            chunk: 4096,
        },
        password: None,
        users_file: None,
        expires: 3600,
        local: None,
        conference: ConferenceArgs::default(),
        common: Common {
            thresholds: Thresholds {
                min_success_pct: Some(100.0),
                ..Thresholds::default()
            },
            ..Common::default()
        },
    };
    let mut rate = None;
    let (mut hold, mut chunk, mut file) = (None, None, None);
    let (mut codec, mut ptime, mut payload_len) = (Codec::PCMU, 20, None);
    for (k, v) in pairs(args)? {
        let v = v.unwrap_or_default();
        if common(&mut a.common, &k, &v)? {
            continue;
        }
        if kind == ScenarioKind::Conference && conference_option(&mut a.conference, &k, &v)? {
            continue;
        }
        match k.as_str() {
            "--target" => a.target = Some(v),
            "--to" => a.to = Pattern::parse(&v)?,
            "--from" => a.from = Pattern::parse(&v)?,
            "--users" => a.users = num(&k, &v)?,
            "--domain" => a.domain = Some(v),
            "--rate" => rate = Some(positive(&k, &v)?),
            "--count" => a.count = Some(num(&k, &v)?),
            "--duration" => a.duration = Some(secs(&k, &v)?),
            "--ramp-up" => a.ramp_up = secs(&k, &v)?,
            "--concurrency" => a.concurrency = num(&k, &v)?,
            "--drain" => a.drain = secs(&k, &v)?,
            "--hold" => hold = Some(secs(&k, &v)?),
            "--codec" => codec = media::parse_codec(&v)?,
            "--ptime" => ptime = num(&k, &v)?,
            "--payload-size" => payload_len = Some(num(&k, &v)?),
            "--rtp-ports" => a.rtp_ports = Some(port_range(&k, &v)?),
            "--body-size" => a.body_size = num(&k, &v)?,
            "--content-type" => a.content_type = v,
            "--expect" if kind == ScenarioKind::Message => {
                a.expect = v
                    .split(',')
                    .map(|c| match num::<u16>(&k, c.trim())? {
                        c @ 200..=699 => Ok(c),
                        c => Err(format!("--expect {c}: a final status code")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--messages" if kind == ScenarioKind::Msrp => a.msrp.messages = num(&k, &v)?,
            "--size" if kind == ScenarioKind::Msrp => a.msrp.size = num(&k, &v)?,
            "--chunk" if kind == ScenarioKind::Msrp => chunk = Some(num(&k, &v)?),
            "--file" if kind == ScenarioKind::Msrp => file = Some(num(&k, &v)?),
            "--relay" if kind == ScenarioKind::Msrp => a.relay = Some(v),
            "--receiver" if kind == ScenarioKind::Message => {
                a.receiver = Some(num(&k, &v)?);
            }
            "--password" => a.password = Some(v),
            "--users-file" => a.users_file = Some(PathBuf::from(v)),
            "--expires" => a.expires = num(&k, &v)?,
            "--local" => a.local = Some(num(&k, &v)?),
            "--transport" => {
                if !v.eq_ignore_ascii_case("udp") {
                    return Err(format!("--transport {v}: only udp is supported"));
                }
            }
            _ => return Err(format!("{}: unknown option {k}", kind.name())),
        }
    }
    if kind == ScenarioKind::Conference {
        return finish_conference(a, rate);
    }
    a.rate = rate.ok_or("--rate PER_S is required")?;
    a.hold = hold.unwrap_or(match kind {
        ScenarioKind::Msrp => Duration::ZERO,
        _ => Duration::from_secs(5),
    });
    if let Some(bytes) = file {
        a.msrp.messages = 1;
        a.msrp.size = bytes;
    }
    a.msrp.chunk = chunk.unwrap_or(if file.is_some() { 65_536 } else { 4096 });
    if a.msrp.chunk == 0 || a.msrp.size == 0 {
        return Err("--chunk, --size and --file must be at least 1".into());
    }
    a.media = MediaProfile::new(codec, ptime, payload_len)?;
    if a.count.is_none() && a.duration.is_none() {
        return Err("--count N or --duration SECS is required (runs are always bounded)".into());
    }
    if a.count == Some(0) {
        return Err("--count must be at least 1".into());
    }
    if a.target.is_none() && a.receiver.is_none() {
        return Err("--target HOST:PORT is required".into());
    }
    if a.users == 0 || a.concurrency == 0 {
        return Err("--users and --concurrency must be at least 1".into());
    }
    Ok(a)
}

/// Handles an option of the `conference` scenario; false if `k` is not one.
fn conference_option(c: &mut ConferenceArgs, k: &str, v: &str) -> Result<bool, String> {
    match k {
        "--conferences" => c.conferences = num(k, v)?,
        "--participants" => c.participants = num(k, v)?,
        "--talkers" => c.talkers = num(k, v)?,
        "--factory" => {
            if !v.starts_with("sip:") && !v.starts_with("sips:") {
                return Err(format!("--factory {v:?}: a sip: URI"));
            }
            c.factory = Some(v.to_string())
        }
        "--codec" => {
            c.law = Law::parse(v).ok_or_else(|| format!("--codec {v}: pcmu or pcma"))?;
        }
        "--register" => c.register = true,
        _ => return Ok(false),
    }
    Ok(true)
}

/// The defaults and checks of `conference`: every participant is a session (the count), the
/// run's `--duration` is each conference's, joins at `--rate` (50/s by default).
fn finish_conference(mut a: ClientArgs, rate: Option<f64>) -> Result<ClientArgs, String> {
    let c = &a.conference;
    if c.conferences == 0 || c.participants == 0 {
        return Err("--conferences and --participants must be at least 1".into());
    }
    if c.talkers > crate::scenario::conference::tones::MAX_TALKERS {
        return Err(format!(
            "--talkers {}: at most {}",
            c.talkers,
            crate::scenario::conference::tones::MAX_TALKERS
        ));
    }
    if a.target.is_none() {
        return Err("--target HOST:PORT is required".into());
    }
    let sessions = c.conferences as u64 * c.participants as u64;
    a.rate = rate.unwrap_or(50.0);
    a.count = Some(sessions);
    a.duration = Some(a.duration.unwrap_or(Duration::from_secs(10)));
    a.concurrency = usize::try_from(sessions).unwrap_or(usize::MAX);
    if a.from == Pattern::parse("loadgen")? {
        a.from = Pattern::parse("part%04d")?;
    }
    Ok(a)
}

fn parse_uas(args: &[String]) -> Result<UasArgs, String> {
    let mut listen = None;
    let mut a = UasArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        register_to: None,
        users: 1,
        pattern: Pattern::parse("user%04d")?,
        domain: None,
        password: None,
        users_file: None,
        expires: 3600,
        register_rate: 500.0,
        rtp: RtpMode::default(),
        codecs: media::fixed_rate_codecs(),
        payload_len: None,
        rtp_ports: None,
        duration: None,
        register_after: Duration::ZERO,
        msrp_relay: None,
        common: Common::default(),
    };
    for (k, v) in pairs(args)? {
        let v = v.unwrap_or_default();
        if common(&mut a.common, &k, &v)? {
            continue;
        }
        match k.as_str() {
            "--listen" => listen = Some(num(&k, &v)?),
            "--register-to" => a.register_to = Some(v),
            "--users" => a.users = num(&k, &v)?,
            "--user-pattern" => a.pattern = Pattern::parse(&v)?,
            "--domain" => a.domain = Some(v),
            "--password" => a.password = Some(v),
            "--users-file" => a.users_file = Some(PathBuf::from(v)),
            "--expires" => a.expires = num(&k, &v)?,
            "--register-rate" => a.register_rate = positive(&k, &v)?,
            "--rtp" => {
                a.rtp = RtpMode::parse(&v)
                    .ok_or_else(|| format!("--rtp {v}: echo, sink or generate"))?
            }
            "--duration" => a.duration = Some(secs(&k, &v)?),
            "--register-after" => a.register_after = secs(&k, &v)?,
            "--msrp-relay" => a.msrp_relay = Some(v),
            "--codec" => {
                a.codecs = v
                    .split(',')
                    .map(|c| media::parse_codec(c.trim()))
                    .collect::<Result<_, _>>()?
            }
            "--payload-size" => {
                let n: usize = num(&k, &v)?;
                if !(1..=media::MAX_PAYLOAD).contains(&n) {
                    return Err(format!("--payload-size {n}: 1..{}", media::MAX_PAYLOAD));
                }
                a.payload_len = Some(n);
            }
            "--rtp-ports" => a.rtp_ports = Some(port_range(&k, &v)?),
            "--transport" => {
                if !v.eq_ignore_ascii_case("udp") {
                    return Err(format!("--transport {v}: only udp is supported"));
                }
            }
            _ => return Err(format!("uas: unknown option {k}")),
        }
    }
    a.listen = listen.ok_or("--listen ADDR:PORT is required")?;
    if a.users == 0 {
        return Err("--users must be at least 1".into());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_contract_client_line() {
        let c = parse(&args(
            "call --target 127.0.0.1:5060 --to user%04d --rate 10 --count 100 --hold 2 \
             --concurrency 50 --json r.json --html r.html --max-loss 0.5 --max-p99-ms 20 \
             --min-success 99.5 --ramp-up 3",
        ))
        .unwrap();
        let Command::Client(c) = c else {
            panic!("{c:?}")
        };
        assert_eq!(c.kind, ScenarioKind::Call);
        assert_eq!(c.target.as_deref(), Some("127.0.0.1:5060"));
        assert_eq!(c.to.expand(3), "user0003");
        assert_eq!(c.rate, 10.0);
        assert_eq!(c.count, Some(100));
        assert_eq!(c.hold, Duration::from_secs(2));
        assert_eq!(c.concurrency, 50);
        assert_eq!(c.ramp_up, Duration::from_secs(3));
        assert_eq!(c.common.json, Some(PathBuf::from("r.json")));
        assert_eq!(c.common.html, Some(PathBuf::from("r.html")));
        assert_eq!(
            c.common.thresholds,
            Thresholds {
                max_loss_pct: Some(0.5),
                max_p99_ms: Some(20.0),
                min_success_pct: Some(99.5),
            }
        );
    }

    #[test]
    fn media_options() {
        let Command::Client(c) = parse(&args(
            "call --target 127.0.0.1:5060 --rate 1 --count 1 --codec PCMA --ptime 30",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.media.describe(), "PCMA/8000, 30 ms, 240-byte payload");
        let Command::Client(c) = parse(&args("call --target h:1 --rate 1 --count 1")).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.media, MediaProfile::default());
        let Command::Client(c) = parse(&args(
            "call --target h:1 --rate 1 --count 1 --codec opus/48000/2 --payload-size 90",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.media.describe(), "opus/48000/2, 20 ms, 90-byte payload");
        for bad in [
            "--codec opus",
            "--codec opus/48000",
            "--ptime 0",
            "--payload-size 0",
            "--payload-size 70000",
        ] {
            let line = format!("call --target h:1 --rate 1 --count 1 {bad}");
            assert!(parse(&args(&line)).is_err(), "{bad}");
        }
        let Command::Uas(u) = parse(&args(
            "uas --listen 127.0.0.1:0 --codec PCMA,opus/48000/2 --payload-size 100",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(u.codecs.len(), 2);
        assert_eq!(u.codecs[0], Codec::PCMA);
        assert_eq!(u.payload_len, Some(100));
        assert!(parse(&args("uas --listen 127.0.0.1:0 --codec PCMA,opus")).is_err());
        assert!(parse(&args("uas --listen 127.0.0.1:0 --payload-size 0")).is_err());
        let Command::Uas(u) =
            parse(&args("uas --listen 127.0.0.1:0 --rtp-ports 20000-20099")).unwrap()
        else {
            panic!()
        };
        assert_eq!(u.rtp_ports, Some((20000, 20099)));
        let Command::Client(c) = parse(&args(
            "call --target h:1 --rate 1 --count 1 --rtp-ports 30001-30002",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.rtp_ports, Some((30001, 30002)));
        for bad in ["0-10", "10-5", "7-7", "10", "a-b", "1-70000"] {
            let line = format!("call --target h:1 --rate 1 --count 1 --rtp-ports {bad}");
            assert!(parse(&args(&line)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_contract_uas_line() {
        let c = parse(&args(
            "uas --listen 127.0.0.1:5070 --register-to 127.0.0.1:5060 --users 100 --rtp echo",
        ))
        .unwrap();
        let Command::Uas(u) = c else { panic!("{c:?}") };
        assert_eq!(u.listen, "127.0.0.1:5070".parse().unwrap());
        assert_eq!(u.register_to.as_deref(), Some("127.0.0.1:5060"));
        assert_eq!(u.users, 100);
        assert_eq!(u.rtp, RtpMode::Echo);
        assert_eq!(u.common.thresholds, Thresholds::default());
    }

    #[test]
    fn equals_form_and_defaults() {
        let Command::Client(c) = parse(&args(
            "message --target=h:5060 --rate=0.5 --duration=2.5 --body-size=300",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.rate, 0.5);
        assert_eq!(c.duration, Some(Duration::from_millis(2500)));
        assert_eq!(c.body_size, 300);
        assert_eq!(c.content_type, "text/plain");
        assert_eq!(c.common.thresholds.min_success_pct, Some(100.0));
        assert_eq!(c.concurrency, 10_000);
    }

    #[test]
    fn errors() {
        for (line, want) in [
            ("", "subcommand"),
            ("bogus", "unknown subcommand"),
            ("options --target h:1 --count 1", "--rate"),
            ("options --target h:1 --rate 1", "--count N or --duration"),
            ("options --rate 1 --count 1", "--target"),
            ("options --target h:1 --rate 0 --count 1", "positive"),
            (
                "options --target h:1 --rate 1 --count 1 --frobnicate 2",
                "unknown option",
            ),
            (
                "options --target h:1 --rate 1 --count 1 --transport tcp",
                "only udp",
            ),
            (
                "options --target h:1 --rate 1 --count 1 --receiver 1.2.3.4:5",
                "unknown option",
            ),
            (
                "options --target h:1 --rate 1 --count 1 --min-success 101",
                "percentage",
            ),
            ("options --target h:1 --rate 1 --count", "needs a value"),
            ("uas --users 3", "--listen"),
            (
                "uas --listen 127.0.0.1:0 --rtp loud",
                "echo, sink or generate",
            ),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.contains(want), "{line:?}: {e}");
        }
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&args("--help")).unwrap(), Command::Help);
        assert_eq!(parse(&args("help")).unwrap(), Command::Help);
        assert_eq!(parse(&args("--version")).unwrap(), Command::Version);
        assert!(USAGE.contains("--max-p99-ms"));
    }

    #[test]
    fn the_conference_line() {
        let Command::Client(c) = parse(&args(
            "conference --target 127.0.0.1:5060 --conferences 2 --participants 20 --talkers 3 \
             --duration 4 --factory sip:conf@example.com --codec pcma --register --password pw",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.kind, ScenarioKind::Conference);
        let k = &c.conference;
        assert_eq!((k.conferences, k.participants, k.talkers), (2, 20, 3));
        assert_eq!(k.factory.as_deref(), Some("sip:conf@example.com"));
        assert_eq!(k.law, Law::A);
        assert!(k.register);
        assert_eq!(c.password.as_deref(), Some("pw"));
        // Every participant is a session, all in flight at once; joins at 50/s by default.
        assert_eq!(c.count, Some(40));
        assert_eq!(c.concurrency, 40);
        assert_eq!(c.rate, 50.0);
        assert_eq!(c.duration, Some(Duration::from_secs(4)));
        assert_eq!(c.from.expand(7), "part0007");
        let Command::Client(c) = parse(&args("conference --target h:1")).unwrap() else {
            panic!()
        };
        assert_eq!(c.conference, ConferenceArgs::default());
        assert_eq!(c.duration, Some(Duration::from_secs(10)));
        assert!(!c.conference.register);
        for (bad, want) in [
            ("--codec g722", "pcmu or pcma"),
            ("--talkers 29", "at most 28"),
            ("--participants 0", "at least 1"),
            ("--factory conf@x", "sip: URI"),
        ] {
            let e = parse(&args(&format!("conference --target h:1 {bad}"))).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert!(parse(&args("conference --conferences 1"))
            .unwrap_err()
            .contains("--target"));
        // The conference options belong to it alone.
        assert!(parse(&args("call --target h:1 --rate 1 --count 1 --talkers 3")).is_err());
    }

    #[test]
    fn message_receiver_without_target() {
        let Command::Client(c) =
            parse(&args("message --receiver 127.0.0.1:0 --rate 10 --count 5")).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.target, None);
        assert_eq!(c.receiver, Some("127.0.0.1:0".parse().unwrap()));
    }
}
