//! Support of the soak test (`tests/tests/soak.rs`, issue 7): the knobs, the `cpm-loadgen`
//! processes of the workload, the sampler of cpmd's `/proc` and `/metrics`, the trend check
//! (least squares), the table of checks and the artifacts (`target/soak/soak.json`,
//! `soak.html`).
//!
//! A trend check fits a line to the samples taken after the warm-up and extrapolates it over
//! that window: the growth `slope × window` must stay within `rel × mean + 3 σ`, where σ is
//! the standard error of that growth (from the fit's residuals, counting one independent
//! sample per correlation time, so that a noisy but flat gauge passes and a steady leak of
//! more than `rel` of the level fails once the run is long enough to see it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The soak's knobs, from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Knobs {
    /// `CPM_SOAK_MINUTES` (default 10): how long the load runs.
    pub minutes: f64,
    /// `CPM_SOAK_RELEASE=1`: run the release binaries (else those of the test's profile).
    pub release: bool,
    /// `CPM_SOAK_FRACTION` (default 0.25): the load as a fraction of the measured capacity.
    pub fraction: f64,
}

impl Knobs {
    /// Reads the knobs; panics on a malformed value (a typo must not run a different soak).
    pub fn from_env() -> Knobs {
        Knobs::parse(|k| std::env::var(k).ok())
    }

    /// Reads the knobs through `var`.
    pub fn parse(var: impl Fn(&str) -> Option<String>) -> Knobs {
        let num = |k: &str, default: f64| match var(k) {
            None => default,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && x > 0.0 => x,
                _ => panic!("{k}={v:?} is not a positive number"),
            },
        };
        Knobs {
            minutes: num("CPM_SOAK_MINUTES", 10.0),
            release: var("CPM_SOAK_RELEASE").is_some_and(|v| v.trim() == "1"),
            fraction: num("CPM_SOAK_FRACTION", 0.25),
        }
    }

    /// The load's length.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0)
    }
}

/// The target directory of the running test (`<target>` of `<target>/<profile>/deps/exe`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test binary dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.pop();
    dir
}

/// Where the artifacts go: `<target>/soak`.
pub fn artifact_dir() -> PathBuf {
    let d = target_dir().join("soak");
    std::fs::create_dir_all(&d).expect("create target/soak");
    d
}

/// The directory holding `cpmd` and `cpm-loadgen` of the profile asked for, both brought up
/// to date with one `cargo build [--release] -p cpm-actors -p cpm-loadgen` (a no-op when
/// fresh; CI builds them beforehand).
pub fn bin_dir(release: bool) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut profile = exe.parent().expect("test binary dir").to_path_buf();
    if profile.ends_with("deps") {
        profile.pop();
    }
    let dir = if release {
        target_dir().join("release")
    } else {
        profile
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).args([
        "build",
        "-q",
        "-p",
        "cpm-actors",
        "-p",
        "cpm-loadgen",
        "--bins",
        "--target-dir",
    ]);
    cmd.arg(target_dir());
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => {
            cmd.arg("--release");
        }
        Some("debug") | None => {}
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "building cpmd and cpm-loadgen: {status}");
    dir
}

/// A `cpm-loadgen` process of the workload, its output in files of the artifact dir.
#[derive(Debug)]
pub struct Loadgen {
    name: String,
    child: Child,
    json: PathBuf,
    out: PathBuf,
    err: PathBuf,
    /// Seconds from the soak's start to this process's start.
    offset_s: f64,
}

/// A finished `cpm-loadgen` process.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The name given at spawn (also the stem of its files).
    pub name: String,
    /// Exit code (-1: killed by a signal).
    pub code: i32,
    /// Its `--json` report (`Null` if it wrote none).
    pub json: Value,
    /// Its stdout (text report).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Seconds from the soak's start to its start.
    pub offset_s: f64,
}

impl Loadgen {
    /// Runs `bin SUBCOMMAND ARGS --json DIR/NAME.json --quiet`, stdout and stderr into
    /// `DIR/NAME.out` and `DIR/NAME.err`; `t0` is the soak's start.
    pub fn spawn(bin: &Path, dir: &Path, name: &str, args: &[String], t0: Instant) -> Loadgen {
        let json = dir.join(format!("{name}.json"));
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let _ = std::fs::remove_file(&json);
        let file = |p: &Path| std::fs::File::create(p).expect("create a loadgen log");
        let child = Command::new(bin)
            .args(args)
            .arg("--json")
            .arg(&json)
            .arg("--quiet")
            .stdin(Stdio::null())
            .stdout(file(&out))
            .stderr(file(&err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        Loadgen {
            name: name.to_string(),
            child,
            json,
            out,
            err,
            offset_s: t0.elapsed().as_secs_f64(),
        }
    }

    /// Waits (at most `timeout`) for a `uas`'s ready line; panics with its stderr otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let ok = crate::util::poll_until(timeout, || {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            if text.contains("cpm-loadgen uas ready") {
                return Some(true);
            }
            self.child
                .try_wait()
                .ok()
                .flatten()
                .is_some()
                .then_some(false)
        });
        if ok != Some(true) {
            let _ = self.child.kill();
            panic!(
                "{} not ready within {timeout:?}: {}",
                self.name,
                std::fs::read_to_string(&self.err).unwrap_or_default()
            );
        }
    }

    /// Waits for the process to end by itself; killed (and the test failed) after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let status = crate::util::poll_until(timeout, || self.child.try_wait().ok().flatten());
        let Some(status) = status else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("{} did not end within {timeout:?}", self.name);
        };
        self.finished(status.code().unwrap_or(-1))
    }

    /// SIGTERM (a `uas` unregisters its users and reports), then [`Loadgen::wait`].
    pub fn stop(self, timeout: Duration) -> Finished {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child,
            // not reaped while `self.child` is alive and unwaited.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        self.wait(timeout)
    }

    fn finished(&self, code: i32) -> Finished {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let json = std::fs::read_to_string(&self.json)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        Finished {
            name: self.name.clone(),
            code,
            json,
            stdout: read(&self.out),
            stderr: read(&self.err),
            offset_s: self.offset_s,
        }
    }
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Finished {
    /// A number of the report (`attempted`, `succeeded`, ...; 0 when absent).
    pub fn num(&self, key: &str) -> u64 {
        self.json[key].as_u64().unwrap_or(0)
    }

    /// A note (counter) of the report, 0 when absent.
    pub fn note(&self, name: &str) -> u64 {
        self.json["counters"][name].as_u64().unwrap_or(0)
    }

    /// The sample count of a quantity, 0 when absent.
    pub fn count(&self, quantity: &str) -> u64 {
        self.json["quantities"][quantity]["count"]
            .as_u64()
            .unwrap_or(0)
    }

    /// An RTP total (`sent`, `received`, `lost`, `duplicates`), 0 without RTP.
    pub fn rtp(&self, key: &str) -> u64 {
        self.json["rtp"][key].as_u64().unwrap_or(0)
    }
}

/// One sample of cpmd.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the soak's start.
    pub t: f64,
    /// `VmRSS` in KiB.
    pub rss_kib: f64,
    /// `RssAnon` in KiB: the anonymous part of the resident memory (heap, stacks), without
    /// the file pages of the mapped database (the kernel's page cache, reclaimable).
    pub anon_kib: f64,
    /// Open file descriptors (`/proc/PID/fd` entries).
    pub fds: f64,
    /// Threads (`Threads:` of `/proc/PID/status`).
    pub threads: f64,
    /// CPU time used so far (user + system, `/proc/PID/stat`), seconds.
    pub cpu_s: f64,
    /// Every gauge series of `/metrics` (families of `# TYPE ... gauge`).
    pub gauges: BTreeMap<String, f64>,
}

/// `VmRSS` (KiB) and `Threads` of a process, from `/proc/PID/status`.
pub fn proc_status(pid: u32) -> Option<(f64, f64)> {
    proc_status_fields(pid).map(|(rss, _, threads)| (rss, threads))
}

/// `VmRSS`, `RssAnon` (KiB) and `Threads` of a process, from `/proc/PID/status`.
pub fn proc_status_fields(pid: u32) -> Option<(f64, f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:")?, field("Threads:")?))
}

/// CPU time (user + system) a process used so far, in seconds (`/proc/PID/stat`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf(3) has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    // utime and stime are fields 14 and 15: 12 and 13 after the name.
    Some((ticks(11)? + ticks(12)?) / hz)
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> Option<f64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as f64)
}

/// Every series of the gauge families of a Prometheus text exposition.
pub fn gauges(text: &str) -> BTreeMap<String, f64> {
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                kinds.insert(name, kind);
            }
        }
    }
    let mut out = BTreeMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let family = series.split('{').next().unwrap_or(series);
        if kinds.get(family) == Some(&"gauge") {
            if let Ok(v) = value.trim().parse::<f64>() {
                out.insert(series.to_string(), v);
            }
        }
    }
    out
}

/// Takes one [`Sample`] of cpmd (`pid`, management listener `http`); `None` if it is gone.
pub fn sample(pid: u32, http: SocketAddr, t0: Instant) -> Option<Sample> {
    let (rss_kib, anon_kib, threads) = proc_status_fields(pid)?;
    let fds = fd_count(pid)?;
    let cpu_s = cpu_seconds(pid)?;
    let r = crate::http::get(http, "/metrics", Duration::from_secs(5)).ok()?;
    Some(Sample {
        t: t0.elapsed().as_secs_f64(),
        rss_kib,
        anon_kib,
        fds,
        threads,
        cpu_s,
        gauges: gauges(&r.body),
    })
}

/// A thread sampling cpmd every `every` until [`Sampler::finish`].
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling `pid` / `http` now, times relative to `t0`.
    pub fn start(pid: u32, http: SocketAddr, t0: Instant, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut out = Vec::new();
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                if let Some(s) = sample(pid, http, t0) {
                    out.push(s);
                }
                next += every;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            out
        });
        Sampler { stop, handle }
    }

    /// Stops sampling and returns the samples.
    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler thread")
    }
}

/// A least-squares trend of samples over a window, and whether it is within tolerance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Samples in the window.
    pub n: usize,
    /// Mean of the values.
    pub mean: f64,
    /// Slope per second.
    pub slope: f64,
    /// The slope extrapolated over the window (`slope × window`).
    pub growth: f64,
    /// The standard error of `growth`.
    pub sigma: f64,
    /// `rel × |mean| + 3 σ`.
    pub allowed: f64,
}

impl Trend {
    /// Fits `(t, v)` points: `rel` is the growth allowed as a fraction of the mean,
    /// `corr_s` the time over which samples are correlated (one independent sample per
    /// `corr_s` enters σ). `None` with fewer than 3 points or a zero-length window.
    pub fn fit(points: &[(f64, f64)], rel: f64, corr_s: f64) -> Option<Trend> {
        let n = points.len();
        if n < 3 {
            return None;
        }
        let nf = n as f64;
        let mt = points.iter().map(|p| p.0).sum::<f64>() / nf;
        let mv = points.iter().map(|p| p.1).sum::<f64>() / nf;
        let stt: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
        if stt <= 0.0 {
            return None;
        }
        let stv: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - mv)).sum();
        let slope = stv / stt;
        let window = points[n - 1].0 - points[0].0;
        let rss: f64 = points
            .iter()
            .map(|p| (p.1 - mv - slope * (p.0 - mt)).powi(2))
            .sum();
        // Residual variance per sample; the slope's variance is σ²/Stt for independent
        // samples, inflated by the number of samples per correlation time.
        let spacing = window / (nf - 1.0);
        let inflate = (corr_s / spacing).max(1.0);
        let var_slope = rss / (nf - 2.0) / stt * inflate;
        let sigma = var_slope.sqrt() * window;
        Some(Trend {
            n,
            mean: mv,
            slope,
            growth: slope * window,
            sigma,
            allowed: rel * mv.abs() + 3.0 * sigma,
        })
    }

    /// Whether the growth is within what is allowed (a shrinking level always is).
    pub fn ok(&self) -> bool {
        self.growth <= self.allowed
    }
}

/// One row of the checks table.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// The measured figure.
    pub value: String,
    /// The bound it must meet.
    pub limit: String,
    /// Whether it does.
    pub ok: bool,
}

/// The checks of a run, printed as a table and asserted together at the end.
#[derive(Debug, Clone, Default)]
pub struct Checks(pub Vec<Check>);

impl Checks {
    /// Adds a check.
    pub fn add(&mut self, name: &str, value: impl Into<String>, limit: &str, ok: bool) {
        self.0.push(Check {
            name: name.to_string(),
            value: value.into(),
            limit: limit.to_string(),
            ok,
        });
    }

    /// The failed checks.
    pub fn failed(&self) -> Vec<&Check> {
        self.0.iter().filter(|c| !c.ok).collect()
    }

    /// The table as text.
    pub fn table(&self) -> String {
        let w = |f: fn(&Check) -> &str, min: usize| {
            self.0
                .iter()
                .map(|c| f(c).len())
                .max()
                .unwrap_or(0)
                .max(min)
        };
        let (a, b, c) = (w(|c| &c.name, 5), w(|c| &c.value, 5), w(|c| &c.limit, 5));
        let mut s = format!("{:a$}  {:>b$}  {:c$}  ok\n", "check", "value", "limit");
        for k in &self.0 {
            let _ = writeln!(
                s,
                "{:a$}  {:>b$}  {:c$}  {}",
                k.name,
                k.value,
                k.limit,
                if k.ok { "yes" } else { "NO" }
            );
        }
        s
    }

    /// The checks as JSON rows.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|c| json!({"check": c.name, "value": c.value, "limit": c.limit, "ok": c.ok}))
                .collect(),
        )
    }
}

/// Adds a per-second series of a loadgen report (`series.KEY`, or with `quantity`
/// `series.quantities.QUANTITY.KEY`) into `into`, shifted by the process's start; µs values
/// are turned into ms. Seconds with no data stay `None` unless another process filled them.
pub fn add_series(
    f: &Finished,
    quantity: Option<&str>,
    key: &str,
    into: &mut Vec<Option<f64>>,
    sum: bool,
) {
    let s = match quantity {
        Some(q) => &f.json["series"]["quantities"][q],
        None => &f.json["series"],
    };
    let Some(values) = s[key].as_array() else {
        return;
    };
    let counts = quantity.and_then(|q| f.json["series"]["quantities"][q]["count"].as_array());
    let scale = if key.ends_with("_us") { 1e-3 } else { 1.0 };
    let base = f.offset_s.round() as usize;
    for (i, v) in values.iter().enumerate() {
        let Some(v) = v.as_f64() else { continue };
        // A quantity's percentile of a second without samples is no data.
        if counts.is_some_and(|c| c.get(i).and_then(Value::as_u64) == Some(0)) {
            continue;
        }
        let k = base + i;
        if into.len() <= k {
            into.resize(k + 1, None);
        }
        let v = v * scale;
        into[k] = Some(match (into[k], sum) {
            (Some(old), true) => old + v,
            (Some(old), false) => old.max(v),
            (None, _) => v,
        });
    }
}

/// A sample series as a value per second of the run (the last sample taken in each second;
/// `None` for a second without one), for plots whose x axis is the second of the run.
pub fn per_second(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> Vec<Option<f64>> {
    let Some(last) = samples.last() else {
        return Vec::new();
    };
    let mut out = vec![None; last.t.floor() as usize + 1];
    for s in samples {
        if let Some(slot) = out.get_mut(s.t.floor() as usize) {
            *slot = Some(value(s));
        }
    }
    out
}

/// CPU use between consecutive samples, in percent of one core, per second of the run.
pub fn cpu_per_second(samples: &[Sample]) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for w in samples.windows(2) {
        let dt = w[1].t - w[0].t;
        let k = w[1].t.floor() as usize;
        if dt > 0.0 {
            if out.len() <= k {
                out.resize(k + 1, None);
            }
            out[k] = Some(100.0 * (w[1].cpu_s - w[0].cpu_s) / dt);
        }
    }
    out
}

/// The HTML page: a title, the summary, the checks table and already rendered plots
/// (self-contained: inline CSS and SVG).
pub fn html_page(title: &str, summary: &str, checks: &Checks, plots: &[String]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n\
         <style>body {{ font-family: sans-serif; margin: 2em; color: #222; }}\n\
         table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}\n\
         pre {{ background: #f6f6f6; padding: 1em; }} .no {{ color: #b00; font-weight: bold; }}\n\
         svg {{ display: block; margin: 1em 0; }} svg .title {{ font-size: 14px; font-weight: bold; }}\n\
         svg .tick {{ font-size: 11px; fill: #444; }}</style></head><body>\n<h1>{t}</h1>\n",
        t = esc(title)
    );
    let _ = writeln!(s, "<pre>{}</pre>", esc(summary));
    s.push_str("<table><tr><th>check</th><th>value</th><th>limit</th><th>ok</th></tr>\n");
    for c in &checks.0 {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td></tr>",
            esc(&c.name),
            esc(&c.value),
            esc(&c.limit),
            if c.ok { "" } else { " class=\"no\"" },
            if c.ok { "yes" } else { "NO" }
        );
    }
    s.push_str("</table>\n");
    for p in plots {
        s.push_str(p);
        s.push('\n');
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_default_and_parse() {
        let k = Knobs::parse(|_| None);
        assert_eq!(k.minutes, 10.0);
        assert!(!k.release);
        assert_eq!(k.fraction, 0.25);
        let k = Knobs::parse(|n| match n {
            "CPM_SOAK_MINUTES" => Some("0.5".into()),
            "CPM_SOAK_RELEASE" => Some("1".into()),
            _ => None,
        });
        assert_eq!(k.duration(), Duration::from_secs(30));
        assert!(k.release);
    }

    #[test]
    #[should_panic(expected = "CPM_SOAK_MINUTES")]
    fn a_bad_knob_is_refused() {
        Knobs::parse(|n| (n == "CPM_SOAK_MINUTES").then(|| "ten".into()));
    }

    #[test]
    fn gauges_are_read_and_counters_left_out() {
        let text = "# HELP cpm_sessions x\n# TYPE cpm_sessions gauge\ncpm_sessions 3\n\
                    # TYPE cpm_sip_requests_total counter\ncpm_sip_requests_total{method=\"INVITE\"} 9\n\
                    # TYPE cpm_media_legs gauge\ncpm_media_legs{worker=\"0\"} 2\n";
        let g = gauges(text);
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(g["cpm_sessions"], 3.0);
        assert_eq!(g["cpm_media_legs{worker=\"0\"}"], 2.0);
    }

    #[test]
    fn a_flat_noisy_level_passes_and_a_leak_fails() {
        // ±5 around 100 with no trend.
        let flat: Vec<(f64, f64)> = (0..200)
            .map(|i| (i as f64, 100.0 + if i % 2 == 0 { 5.0 } else { -5.0 }))
            .collect();
        let t = Trend::fit(&flat, 0.1, 1.0).unwrap();
        assert!(t.slope.abs() < 1e-3, "{t:?}");
        assert!(t.ok(), "{t:?}");
        // +0.1 per second over 200 s: growth 20 on a mean of 110, more than 10%.
        let leak: Vec<(f64, f64)> = (0..200)
            .map(|i| (i as f64, 100.0 + 0.1 * i as f64))
            .collect();
        let t = Trend::fit(&leak, 0.1, 1.0).unwrap();
        assert!((t.growth - 19.9).abs() < 1e-6, "{t:?}");
        assert!(t.sigma < 1e-6, "{t:?}");
        assert!(!t.ok(), "{t:?}");
        // Shrinking is fine; too few points give no verdict.
        let down: Vec<(f64, f64)> = leak.iter().map(|&(t, v)| (t, 200.0 - v)).collect();
        assert!(Trend::fit(&down, 0.1, 1.0).unwrap().ok());
        assert!(Trend::fit(&leak[..2], 0.1, 1.0).is_none());
    }

    #[test]
    fn correlated_samples_widen_the_allowance() {
        let pts: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64, ((i / 10) % 2) as f64 * 4.0))
            .collect();
        let a = Trend::fit(&pts, 0.0, 1.0).unwrap();
        let b = Trend::fit(&pts, 0.0, 10.0).unwrap();
        assert!(
            (b.sigma / a.sigma - 10f64.sqrt()).abs() < 1e-9,
            "{a:?} {b:?}"
        );
    }

    #[test]
    fn series_are_shifted_summed_and_skip_empty_seconds() {
        let f = |offset_s: f64, started: Value, p99: Value, count: Value| Finished {
            name: "x".into(),
            code: 0,
            json: json!({"series": {"started": started,
                "quantities": {"q": {"p99_us": p99, "count": count}}}}),
            stdout: String::new(),
            stderr: String::new(),
            offset_s,
        };
        let a = f(0.0, json!([1, 2]), json!([1000, 0]), json!([1, 0]));
        let b = f(1.2, json!([5]), json!([3000]), json!([4]));
        let mut started = Vec::new();
        add_series(&a, None, "started", &mut started, true);
        add_series(&b, None, "started", &mut started, true);
        assert_eq!(started, vec![Some(1.0), Some(7.0)]);
        let mut p99 = Vec::new();
        add_series(&a, Some("q"), "p99_us", &mut p99, false);
        add_series(&b, Some("q"), "p99_us", &mut p99, false);
        assert_eq!(p99, vec![Some(1.0), Some(3.0)]);
    }

    #[test]
    fn our_own_cpu_time_is_read() {
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        let t = cpu_seconds(std::process::id()).unwrap();
        assert!(t > 0.0 && t < 3600.0, "{t}");
    }

    #[test]
    fn samples_become_a_value_per_second() {
        let s = |t: f64, rss: f64| Sample {
            t,
            rss_kib: rss,
            anon_kib: rss,
            fds: 0.0,
            threads: 0.0,
            cpu_s: 0.0,
            gauges: BTreeMap::new(),
        };
        let v = per_second(&[s(0.1, 1.0), s(2.5, 3.0)], |s| s.rss_kib);
        assert_eq!(v, vec![Some(1.0), None, Some(3.0)]);
    }

    #[test]
    fn the_table_marks_failures() {
        let mut c = Checks::default();
        c.add("calls ok", "100.000%", ">= 99.99%", true);
        c.add("rss growth", "12%", "<= 10%", false);
        let t = c.table();
        assert!(t.contains("NO"), "{t}");
        assert_eq!(c.failed().len(), 1);
        let html = html_page("soak", "s", &c, &["<svg></svg>".into()]);
        assert!(html.contains("class=\"no\""), "{html}");
        assert!(html.contains("<svg></svg>"));
    }
}
