//! Network storage (CPM.md §7 CM-5): the [`Storage`] handle workers and the HTTP API use.
//!
//! ```text
//!  workers ── write(op, done) ── bounded queue ──► writer thread: drain ≤ BATCH ops,
//!  (try_send: full → QueueFull,                    Store::write = ONE transaction, commit,
//!   answered 503 at once)                          then every done(result)   (202 after this)
//!  HTTP API ── read(q, done) ─── bounded queue ──► reader thread: Store::read (WAL: beside
//!                                                   the writer, sees committed data)
//! ```
//! Each thread owns its own backend instance ([`sqlite::SqliteStore`]: its own connection).
//! `done` runs on the storage thread: it must be quick (send a message, wake a task). If a batch
//! fails as a whole it is retried op by op, so one bad op fails alone.

pub mod sqlite;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpm_engine::store::{ReadQuery, ReadResult, Store, StoreError, WriteOp, WriteResult};
use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use parking_lot::{Mutex, RwLock};

pub use sqlite::{Durability, SqliteStore};

/// What a write's `done` is called with, after the commit.
pub type WriteDone = Box<dyn FnOnce(Result<WriteResult, StoreError>) + Send>;
/// What a read's `done` is called with.
pub type ReadDone = Box<dyn FnOnce(Result<ReadResult, StoreError>) + Send>;

/// Sizes of the storage threads' queues and batches.
#[derive(Debug, Clone, Copy)]
pub struct StorageOptions {
    /// Writes queued at most; beyond, `write` fails at once with [`StoreError::QueueFull`].
    /// 0 refuses every write (a test knob: a storage that is always full).
    pub write_queue: usize,
    /// Reads queued at most.
    pub read_queue: usize,
    /// Ops applied in one transaction at most.
    pub batch: usize,
    /// SQLite `synchronous` (see [`Durability`]).
    pub durability: Durability,
    /// Page cache of each connection (the writer's and the reader's), KiB.
    pub cache_kib: u32,
}

impl Default for StorageOptions {
    fn default() -> StorageOptions {
        StorageOptions {
            write_queue: 16_384,
            read_queue: 1_024,
            batch: 512,
            durability: Durability::Full,
            cache_kib: 65_536,
        }
    }
}

/// The storage counters, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct StorageMetrics {
    /// Writes waiting in the queue (gauge).
    pub queued: AtomicU64,
    /// Writes committed.
    pub committed: AtomicU64,
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Writes that failed (their `done` got the error).
    pub errors: AtomicU64,
    /// Writes refused because the queue was full or the storage shut down.
    pub rejected: AtomicU64,
    /// Duration of the last batch (transaction and fsync), microseconds (gauge).
    pub last_batch_us: AtomicU64,
    /// Sum of the durations of every batch, microseconds (with `batches`: the mean).
    pub batch_us_total: AtomicU64,
    /// Reads answered (successfully or not).
    pub reads: AtomicU64,
}

impl StorageMetrics {
    /// Appends the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let series: [(&str, &str, &str, &AtomicU64); 8] = [
            (
                "cpm_storage_queued",
                "gauge",
                "Storage writes queued.",
                &self.queued,
            ),
            (
                "cpm_storage_committed_total",
                "counter",
                "Storage writes committed.",
                &self.committed,
            ),
            (
                "cpm_storage_batches_total",
                "counter",
                "Storage transactions committed.",
                &self.batches,
            ),
            (
                "cpm_storage_errors_total",
                "counter",
                "Storage writes failed.",
                &self.errors,
            ),
            (
                "cpm_storage_rejected_total",
                "counter",
                "Storage writes refused (queue full or shut down).",
                &self.rejected,
            ),
            (
                "cpm_storage_last_batch_seconds",
                "gauge",
                "Duration of the last storage transaction.",
                &self.last_batch_us,
            ),
            (
                "cpm_storage_batch_seconds_total",
                "counter",
                "Time spent in storage transactions.",
                &self.batch_us_total,
            ),
            (
                "cpm_storage_reads_total",
                "counter",
                "Storage reads answered.",
                &self.reads,
            ),
        ];
        for (name, kind, help, v) in series {
            let v = v.load(Relaxed);
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} ");
            let _ = if name.contains("_seconds") {
                writeln!(out, "{:.6}", v as f64 / 1e6)
            } else {
                writeln!(out, "{v}")
            };
        }
    }
}

struct Job<Q, D> {
    q: Q,
    done: D,
}

/// The senders; `None` once shut down (taken under the write lock, so no job slips in after
/// the threads drained their queues).
struct Senders {
    write: Sender<Job<WriteOp, WriteDone>>,
    read: Sender<Job<ReadQuery, ReadDone>>,
}

struct Inner {
    senders: RwLock<Option<Senders>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<StorageMetrics>,
    /// No queue place at all: every write is refused ([`StorageOptions::write_queue`] 0).
    refuse_writes: bool,
    /// Injected read failures (test hooks): `[reads to let through first, reads to fail]`.
    fail_reads: Arc<Mutex<[u64; 2]>>,
    /// Injected slowness (test hooks): no batch commits before this instant.
    hold_writes: Arc<Mutex<Option<Instant>>>,
}

/// The storage handle: cheap to clone, shared by every worker; never blocks its caller.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl Storage {
    /// Opens SQLite storage in `data_dir` (migrating it) and starts the writer and reader
    /// threads, each with its own connection.
    pub fn open(data_dir: &Path, options: StorageOptions) -> Result<Storage, StoreError> {
        // The writer opens first and migrates; the reader then finds the latest schema.
        let writer = SqliteStore::open(data_dir, options.durability)?;
        let reader = SqliteStore::open(data_dir, options.durability)?;
        writer.set_cache_kib(options.cache_kib)?;
        reader.set_cache_kib(options.cache_kib)?;
        Storage::with_backends(Box::new(writer), Box::new(reader), options)
    }

    /// Starts the threads over any pair of backends (the writer's and the reader's instance).
    pub fn with_backends(
        writer: Box<dyn Store>,
        reader: Box<dyn Store>,
        options: StorageOptions,
    ) -> Result<Storage, StoreError> {
        let (wtx, wrx) = channel::bounded(options.write_queue.max(1));
        let (rtx, rrx) = channel::bounded(options.read_queue.max(1));
        let metrics = Arc::new(StorageMetrics::default());
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| StoreError::Io(e.to_string()))
        };
        let m = metrics.clone();
        let batch = options.batch.max(1);
        let hold_writes = Arc::new(Mutex::new(None));
        let hold = hold_writes.clone();
        let w = spawn(
            "cpm-store-write",
            Box::new(move || run_writer(writer, &wrx, batch, &m, &hold)),
        )?;
        let m = metrics.clone();
        let fail_reads = Arc::new(Mutex::new([0u64; 2]));
        let faults = fail_reads.clone();
        let r = spawn(
            "cpm-store-read",
            Box::new(move || run_reader(reader, &rrx, &m, &faults)),
        )?;
        Ok(Storage {
            inner: Arc::new(Inner {
                senders: RwLock::new(Some(Senders {
                    write: wtx,
                    read: rtx,
                })),
                threads: Mutex::new(vec![w, r]),
                metrics,
                refuse_writes: options.write_queue == 0,
                fail_reads,
                hold_writes,
            }),
        })
    }

    /// Queues a write; `done` runs on the writer thread once the op's transaction committed
    /// (or failed). A full queue or a shut-down storage fails at once, without calling `done`.
    pub fn write(
        &self,
        op: WriteOp,
        done: impl FnOnce(Result<WriteResult, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let guard = self.inner.senders.read();
        let m = &self.inner.metrics;
        let Some(s) = guard.as_ref() else {
            m.rejected.fetch_add(1, Relaxed);
            return Err(StoreError::Closed);
        };
        if self.inner.refuse_writes {
            m.rejected.fetch_add(1, Relaxed);
            return Err(StoreError::QueueFull);
        }
        // Counted before the send: the writer may take it (and decrement) at once.
        m.queued.fetch_add(1, Relaxed);
        let job = Job {
            q: op,
            done: Box::new(done) as WriteDone,
        };
        s.write.try_send(job).map_err(|e| {
            m.queued.fetch_sub(1, Relaxed);
            m.rejected.fetch_add(1, Relaxed);
            match e {
                TrySendError::Full(_) => StoreError::QueueFull,
                TrySendError::Disconnected(_) => StoreError::Closed,
            }
        })
    }

    /// Queues a read; `done` runs on the reader thread with the result. A full queue or a
    /// shut-down storage fails at once, without calling `done`.
    pub fn read(
        &self,
        q: ReadQuery,
        done: impl FnOnce(Result<ReadResult, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let guard = self.inner.senders.read();
        let Some(s) = guard.as_ref() else {
            return Err(StoreError::Closed);
        };
        let job = Job {
            q,
            done: Box::new(done) as ReadDone,
        };
        s.read.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => StoreError::QueueFull,
            TrySendError::Disconnected(_) => StoreError::Closed,
        })
    }

    /// Fault injection (`--test-hooks` only): after `after` more reads succeed, the next
    /// `count` reads fail with an I/O error.
    pub fn fail_reads(&self, after: u64, count: u64) {
        *self.inner.fail_reads.lock() = [after, count];
    }

    /// Test hook: writes queued from now on commit no sooner than `for_` from now (a slow
    /// disk), so that what happens while a write is out can be tested.
    pub fn hold_writes(&self, for_: Duration) {
        *self.inner.hold_writes.lock() = Some(Instant::now() + for_);
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<StorageMetrics> {
        &self.inner.metrics
    }

    /// Stops accepting work, lets both threads finish what is queued (every queued write is
    /// committed and its `done` called) and joins them. Later calls do nothing. Not to be called
    /// from a `done` callback (it runs on a thread this joins).
    pub fn shutdown(&self) {
        // Dropping the only senders ends the threads' loops once their queues are empty.
        drop(self.inner.senders.write().take());
        let threads = std::mem::take(&mut *self.inner.threads.lock());
        for t in threads {
            let _ = t.join();
        }
    }
}

/// The writer loop: one transaction per drained batch, callbacks after the commit.
fn run_writer(
    mut store: Box<dyn Store>,
    rx: &Receiver<Job<WriteOp, WriteDone>>,
    batch: usize,
    m: &StorageMetrics,
    hold: &Mutex<Option<Instant>>,
) {
    let mut ops = Vec::with_capacity(batch);
    let mut dones: Vec<WriteDone> = Vec::with_capacity(batch);
    while let Ok(first) = rx.recv() {
        let until = *hold.lock();
        if let Some(wait) = until.and_then(|t| t.checked_duration_since(Instant::now())) {
            std::thread::sleep(wait);
        }
        for job in std::iter::once(first).chain(rx.try_iter().take(batch - 1)) {
            ops.push(job.q);
            dones.push(job.done);
        }
        m.queued.fetch_sub(ops.len() as u64, Relaxed);
        let start = Instant::now();
        match store.write(&ops) {
            Ok(results) if results.len() == ops.len() => {
                let us = start.elapsed().as_micros() as u64;
                m.last_batch_us.store(us, Relaxed);
                m.batch_us_total.fetch_add(us, Relaxed);
                m.batches.fetch_add(1, Relaxed);
                m.committed.fetch_add(ops.len() as u64, Relaxed);
                for (done, r) in dones.drain(..).zip(results) {
                    call(done, Ok(r));
                }
            }
            whole => {
                if let Err(e) = whole {
                    tracing::warn!(error = %e, ops = ops.len(), "storage batch failed, retrying op by op");
                }
                for (op, done) in ops.iter().zip(dones.drain(..)) {
                    let r = store
                        .write(std::slice::from_ref(op))
                        .and_then(|mut v| v.pop().ok_or(StoreError::Invalid("no result")));
                    match &r {
                        Ok(_) => {
                            m.batches.fetch_add(1, Relaxed);
                            m.committed.fetch_add(1, Relaxed);
                        }
                        Err(e) => {
                            m.errors.fetch_add(1, Relaxed);
                            tracing::error!(error = %e, "storage write failed");
                        }
                    }
                    call(done, r);
                }
            }
        }
        ops.clear();
    }
}

/// Runs a caller's callback; one that panics is logged and does not stop the storage thread.
fn call<T>(done: Box<dyn FnOnce(T) + Send>, r: T) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| done(r))).is_err() {
        tracing::error!("a storage callback panicked");
    }
}

/// The reader loop: one query at a time.
fn run_reader(
    mut store: Box<dyn Store>,
    rx: &Receiver<Job<ReadQuery, ReadDone>>,
    m: &StorageMetrics,
    faults: &Mutex<[u64; 2]>,
) {
    while let Ok(job) = rx.recv() {
        let fail = {
            let mut f = faults.lock();
            match *f {
                [0, 0] => false,
                [0, n] => {
                    f[1] = n - 1;
                    true
                }
                [k, _] => {
                    f[0] = k - 1;
                    false
                }
            }
        };
        let r = if fail {
            Err(StoreError::Io("injected read failure".into()))
        } else {
            store.read(&job.q)
        };
        m.reads.fetch_add(1, Relaxed);
        call(job.done, r);
    }
}
