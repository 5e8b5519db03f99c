//! `bare-forwarder --listen IP:LO-HI [--batch N] [--buffer BYTES] [--report SECS] [--pidfile FILE]`
//!
//! Relays UDP between the ports LO↔LO+1, LO+2↔LO+3, ... of IP (see the crate docs), until
//! SIGINT or SIGTERM; then prints one `bare-forwarder: key=value ...` line of counters on stdout.
//! `--report SECS` prints such a line every SECS as well.

use std::process::ExitCode;
use std::time::Duration;

use cpm_bare_forwarder::{parse_listen, Forwarder};
use signal_hook::consts::{SIGINT, SIGTERM};

const USAGE: &str = "usage: bare-forwarder --listen IP:LO-HI [--batch N] [--buffer BYTES] [--report SECS] [--pidfile FILE]
  Relays UDP datagrams between the ports LO<->LO+1, LO+2<->LO+3, ... of IP: a datagram received
  on one port of a pair is sent unchanged from the other port to the first address that other
  port received from. Counters are printed on SIGINT/SIGTERM.
  --batch N        datagrams per recvmmsg/sendmmsg (default 64)
  --buffer BYTES   SO_RCVBUF and SO_SNDBUF of every socket (default 1048576)
  --report SECS    also print the counters every SECS
  --pidfile FILE   write the process id there";

struct Args {
    listen: String,
    batch: usize,
    buffer: usize,
    report: Option<Duration>,
    pidfile: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        listen: String::new(),
        batch: 64,
        buffer: 1 << 20,
        report: None,
        pidfile: None,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => out.listen = value()?,
            "--batch" => out.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--buffer" => out.buffer = value()?.parse().map_err(|e| format!("--buffer: {e}"))?,
            "--report" => {
                let s: f64 = value()?.parse().map_err(|e| format!("--report: {e}"))?;
                out.report =
                    Some(Duration::try_from_secs_f64(s).map_err(|e| format!("--report: {e}"))?);
            }
            "--pidfile" => out.pidfile = Some(value()?),
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if out.listen.is_empty() {
        return Err("--listen is required".into());
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bare-forwarder: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare-forwarder: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let (ip, ports) = parse_listen(&args.listen)?;
    let pairs = ports.len() / 2;
    let mut fwd = Forwarder::bind(ip, ports, args.buffer, args.batch).map_err(|e| e.to_string())?;
    let stop = fwd.stop_handle().map_err(|e| e.to_string())?;
    for sig in [SIGINT, SIGTERM] {
        let pipe = stop.stream().map_err(|e| e.to_string())?;
        signal_hook::low_level::pipe::register(sig, pipe).map_err(|e| e.to_string())?;
    }
    if let Some(p) = &args.pidfile {
        std::fs::write(p, format!("{}\n", std::process::id())).map_err(|e| format!("{p}: {e}"))?;
    }
    eprintln!(
        "bare-forwarder: {} on {} pairs, batch {}",
        args.listen, pairs, args.batch
    );
    let last = fwd
        .run(args.report, |r| println!("bare-forwarder: {r}"))
        .map_err(|e| e.to_string())?;
    println!("bare-forwarder: {last}");
    if let Some(p) = &args.pidfile {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
