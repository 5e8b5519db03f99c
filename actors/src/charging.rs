//! Charging (CPM.md §7, CH-x): the session controller's charging records written out.
//!
//! A session produces records ([`cpm_engine::session::ChargingRecord`]: start at the answer,
//! interim every `--cdr-interim` seconds, stop at the end) on virtual time; its actor turns
//! each into a [`Cdr`] (wall-clock times, per-leg media counters) and hands it to the
//! [`ChargingWriter`]: one thread that owns the [`ChargingSink`], so a slow disk never blocks
//! a worker. The channel is bounded: when it is full the record is counted as dropped and
//! logged, never waited for. The default sink, [`JsonLines`], appends one JSON object per line
//! to `<data-dir>/cdr.jsonl`, flushed after every batch the thread drains. The message
//! controller writes one [`MessageEvent`] per pager message whose delivery is settled.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use cpm_engine::session::{ChargingKind, ChargingRecord, EndReason, LegUsage};
use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::time::rfc3339;

/// One charging record: a session's (start, interim, stop) or a message's event.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargingEvent {
    /// A session record.
    Session(Cdr),
    /// A pager-mode message event.
    Message(MessageEvent),
}

impl ChargingEvent {
    /// The JSON object of one line.
    pub fn to_json(&self) -> Value {
        match self {
            ChargingEvent::Session(c) => c.to_json(),
            ChargingEvent::Message(m) => m.to_json(),
        }
    }
}

/// The charging event of one pager-mode message (CPM.md §5 fig. 5: the message policy's
/// charging event), written when its delivery is settled: relayed to a device, held, delivered
/// later, refused or expired.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageEvent {
    /// When it happened.
    pub at: SystemTime,
    /// The sender's Call-ID.
    pub call_id: String,
    /// The sender (its From AOR).
    pub from: String,
    /// The recipient (AOR).
    pub to: String,
    /// Body bytes.
    pub size: usize,
    /// `delivered`, `held`, `delivered-held`, `refused`, `expired` or `failed`.
    pub outcome: &'static str,
    /// The final status the sender got, when there was one.
    pub status: Option<u16>,
}

impl MessageEvent {
    /// The JSON object of one line: `{"record":"event","service":"message",...}`.
    pub fn to_json(&self) -> Value {
        json!({
            "record": "event",
            "service": "message",
            "at": rfc3339(self.at),
            "call_id": self.call_id,
            "from": self.from,
            "to": self.to,
            "size": self.size,
            "outcome": self.outcome,
            "status": self.status,
        })
    }
}

/// Records queued for the writer thread at most; beyond, records are dropped and counted.
const QUEUE: usize = 10_000;

/// One charging record as written: wall-clock times and the media of every leg.
#[derive(Debug, Clone, PartialEq)]
pub struct Cdr {
    /// Start, interim or stop.
    pub kind: ChargingKind,
    /// A's Call-ID.
    pub call_id: String,
    /// The calling party (A's From).
    pub from: String,
    /// The called party (A's To).
    pub to: String,
    /// When A's INVITE arrived.
    pub invited: SystemTime,
    /// When the session was answered.
    pub answered: Option<SystemTime>,
    /// When it ended (stop records).
    pub ended: Option<SystemTime>,
    /// The final status sent to A, once known.
    pub final_status: Option<u16>,
    /// Why it ended (stop records).
    pub end_reason: Option<EndReason>,
    /// Per-leg packets, bytes, loss and jitter, each direction.
    pub legs: Vec<LegUsage>,
}

impl Cdr {
    /// The record of `rec`, its instants converted with the pair (`now`, `wall`) read together.
    pub fn from_record(rec: &ChargingRecord, now: Instant, wall: SystemTime) -> Cdr {
        let at = |t: Instant| wall - now.saturating_duration_since(t);
        let text = |b: &bytes::Bytes| String::from_utf8_lossy(b).into_owned();
        Cdr {
            kind: rec.kind,
            call_id: text(&rec.call_id),
            from: text(&rec.from),
            to: text(&rec.to),
            invited: at(rec.invited),
            answered: rec.answered.map(at),
            ended: rec.ended.map(at),
            final_status: rec.final_status,
            end_reason: rec.end_reason,
            legs: rec.legs.clone(),
        }
    }

    /// Seconds from the answer to the end (or to now for start and interim records).
    pub fn duration(&self, wall_now: SystemTime) -> Option<Duration> {
        let answered = self.answered?;
        self.ended.unwrap_or(wall_now).duration_since(answered).ok()
    }

    /// The JSON object of one line.
    pub fn to_json(&self) -> Value {
        let kind = match self.kind {
            ChargingKind::Start => "start",
            ChargingKind::Interim => "interim",
            ChargingKind::Stop => "stop",
        };
        let flow = |f: &cpm_engine::session::FlowCounters| json!({ "packets": f.packets, "bytes": f.bytes, "lost": f.lost, "jitter_ms": f.jitter_ms });
        let legs: Vec<Value> = self
            .legs
            .iter()
            .map(|l| {
                json!({
                    "stream": l.stream,
                    "media": l.media,
                    "codec": l.codec,
                    "from_a": flow(&l.from_a),
                    "from_b": flow(&l.from_b),
                    "msrp": l.msrp.map(|m| json!({
                        "messages": { "from_a": m.messages[0], "from_b": m.messages[1] },
                        "chunks": { "from_a": m.chunks[0], "from_b": m.chunks[1] },
                        "bytes": { "from_a": m.bytes[0], "from_b": m.bytes[1] },
                        "reports_generated": m.reports_generated,
                    })),
                })
            })
            .collect();
        json!({
            "record": kind,
            "call_id": self.call_id,
            "from": self.from,
            "to": self.to,
            "invited": rfc3339(self.invited),
            "answered": self.answered.map(rfc3339),
            "ended": self.ended.map(rfc3339),
            "duration_s": self.duration(SystemTime::now()).map(|d| d.as_secs_f64()),
            "final_status": self.final_status,
            "end_reason": self.end_reason.map(|r| r.as_str()),
            "legs": legs,
        })
    }
}

/// Where charging records go. Implementations run on the writer thread only.
pub trait ChargingSink: Send + 'static {
    /// Writes one record (buffered is fine).
    fn write(&mut self, record: &ChargingEvent) -> io::Result<()>;
    /// Makes what was written durable enough to survive the process.
    fn flush(&mut self) -> io::Result<()>;
}

/// One JSON object per line, appended to a file (the default sink).
pub struct JsonLines {
    out: BufWriter<File>,
}

impl JsonLines {
    /// Appends to `path` (created if missing, with its directory).
    pub fn open(path: &Path) -> io::Result<JsonLines> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonLines {
            out: BufWriter::new(file),
        })
    }
}

impl ChargingSink for JsonLines {
    fn write(&mut self, record: &ChargingEvent) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &record.to_json())?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

enum Cmd {
    Write(Box<ChargingEvent>),
    Stop,
}

/// The handle sessions write through: cheap to clone, never blocks.
#[derive(Clone)]
pub struct ChargingWriter {
    tx: Sender<Cmd>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl ChargingWriter {
    /// Starts the writer thread over `sink`.
    pub fn start(sink: Box<dyn ChargingSink>) -> io::Result<ChargingWriter> {
        let (tx, rx) = channel::bounded(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        let thread = std::thread::Builder::new()
            .name("cpm-charging".into())
            .spawn(move || run(sink, rx, &counter))?;
        Ok(ChargingWriter {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            written,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Queues a session record; a full queue drops it (counted, logged).
    pub fn write(&self, cdr: Cdr) {
        self.submit(ChargingEvent::Session(cdr));
    }

    /// Queues a message event; a full queue drops it (counted, logged).
    pub fn write_message(&self, event: MessageEvent) {
        self.submit(ChargingEvent::Message(event));
    }

    fn submit(&self, record: ChargingEvent) {
        match self.tx.try_send(Cmd::Write(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
                tracing::warn!("charging queue full or closed: a record is dropped");
            }
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Records written to the sink.
    pub fn written(&self) -> u64 {
        self.written.load(Relaxed)
    }

    /// Writes what is queued, flushes and stops the thread (waits for it).
    pub fn stop(&self) {
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        // Blocking here is fine: shutdown, and the thread drains the queue.
        let _ = self.tx.send(Cmd::Stop);
        let _ = thread.join();
    }
}

fn run(mut sink: Box<dyn ChargingSink>, rx: Receiver<Cmd>, written: &AtomicU64) {
    let report = |r: io::Result<()>| {
        if let Err(e) = r {
            tracing::error!(error = %e, "charging sink");
        }
    };
    while let Ok(first) = rx.recv() {
        let mut stop = false;
        for cmd in std::iter::once(first).chain(rx.try_iter()) {
            match cmd {
                Cmd::Write(cdr) => {
                    report(sink.write(&cdr));
                    written.fetch_add(1, Relaxed);
                }
                Cmd::Stop => stop = true,
            }
        }
        report(sink.flush());
        if stop {
            return;
        }
    }
    report(sink.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_engine::session::FlowCounters;
    use std::time::UNIX_EPOCH;

    fn cdr(kind: ChargingKind) -> Cdr {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Cdr {
            kind,
            call_id: "c1@a".into(),
            from: "<sip:alice@x>;tag=1".into(),
            to: "<sip:bob@x>".into(),
            invited: t0,
            answered: Some(t0 + Duration::from_secs(2)),
            ended: Some(t0 + Duration::from_secs(62)),
            final_status: Some(200),
            end_reason: Some(EndReason::Bye(cpm_engine::session::Side::B)),
            legs: vec![LegUsage {
                stream: 0,
                media: "audio".into(),
                codec: Some("PCMU/8000".into()),
                from_a: FlowCounters {
                    packets: 3000,
                    bytes: 516_000,
                    lost: 2,
                    jitter_ms: 0.5,
                },
                from_b: FlowCounters::default(),
                msrp: None,
            }],
        }
    }

    #[test]
    fn an_msrp_leg_carries_its_message_figures() {
        let mut c = cdr(ChargingKind::Stop);
        c.legs.push(LegUsage {
            stream: 1,
            media: "message".into(),
            msrp: Some(cpm_engine::session::MsrpUsage {
                messages: [3, 2],
                chunks: [5, 2],
                bytes: [70_000, 20],
                reports_generated: 1,
            }),
            ..LegUsage::default()
        });
        let v = c.to_json();
        assert!(v["legs"][0]["msrp"].is_null(), "RTP legs have none");
        let m = &v["legs"][1]["msrp"];
        assert_eq!(m["messages"]["from_a"], 3);
        assert_eq!(m["chunks"]["from_a"], 5);
        assert_eq!(m["bytes"]["from_b"], 20);
        assert_eq!(m["reports_generated"], 1);
    }

    #[test]
    fn a_stop_record_as_json() {
        let v = cdr(ChargingKind::Stop).to_json();
        assert_eq!(v["record"], "stop");
        assert_eq!(v["invited"], "2023-11-14T22:13:20Z");
        assert_eq!(v["answered"], "2023-11-14T22:13:22Z");
        assert_eq!(v["duration_s"], 60.0);
        assert_eq!(v["final_status"], 200);
        assert_eq!(v["end_reason"], "bye-callee");
        assert_eq!(v["legs"][0]["from_a"]["packets"], 3000);
        assert_eq!(v["legs"][0]["from_a"]["lost"], 2);
        assert_eq!(v["legs"][0]["codec"], "PCMU/8000");
    }

    #[test]
    fn instants_become_wall_clock_times() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        let rec = ChargingRecord {
            kind: ChargingKind::Start,
            at: now,
            call_id: "c".into(),
            from: "f".into(),
            to: "t".into(),
            invited: now - Duration::from_secs(3),
            answered: Some(now - Duration::from_secs(1)),
            ended: None,
            final_status: Some(200),
            end_reason: None,
            legs: Vec::new(),
        };
        let c = Cdr::from_record(&rec, now, wall);
        assert_eq!(c.invited, wall - Duration::from_secs(3));
        assert_eq!(c.answered, Some(wall - Duration::from_secs(1)));
        assert_eq!(c.ended, None);
    }

    /// A sink that waits until the test lets it go: the queue in front of it fills.
    struct Stuck(std::sync::mpsc::Receiver<()>, Arc<AtomicU64>);

    impl ChargingSink for Stuck {
        fn write(&mut self, _: &ChargingEvent) -> io::Result<()> {
            let _ = self.0.recv();
            self.1.fetch_add(1, Relaxed);
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let (go, wait) = std::sync::mpsc::channel();
        let sunk = Arc::new(AtomicU64::new(0));
        let w = ChargingWriter::start(Box::new(Stuck(wait, sunk.clone()))).unwrap();
        // The thread holds one record in the stuck sink; QUEUE more fill the queue.
        let offered = QUEUE as u64 + 50;
        let start = Instant::now();
        for _ in 0..offered {
            w.write(cdr(ChargingKind::Interim));
        }
        assert!(start.elapsed() < Duration::from_secs(5), "writes blocked");
        let dropped = w.dropped();
        assert!((49..=50).contains(&dropped), "dropped {dropped}");
        for _ in 0..offered {
            let _ = go.send(());
        }
        w.stop();
        assert_eq!(sunk.load(Relaxed) + dropped, offered);
    }

    #[test]
    fn the_writer_appends_lines_and_flushes_on_stop() {
        let dir = std::env::temp_dir().join(format!("cpm-cdr-{}", std::process::id()));
        let path = dir.join("cdr.jsonl");
        let _ = std::fs::remove_file(&path);
        let w = ChargingWriter::start(Box::new(JsonLines::open(&path).unwrap())).unwrap();
        w.write(cdr(ChargingKind::Start));
        w.write(cdr(ChargingKind::Stop));
        w.stop();
        assert_eq!(w.written(), 2);
        assert_eq!(w.dropped(), 0);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["record"], "start");
        assert_eq!(lines[1]["record"], "stop");
        // After stop, writes are dropped and counted, not lost silently.
        w.write(cdr(ChargingKind::Stop));
        assert_eq!(w.dropped(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
