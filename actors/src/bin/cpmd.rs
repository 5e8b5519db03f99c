//! `cpmd`: the CPM server daemon, a thin `main` over [`cpm_actors::Engine`].

use std::time::Duration;

use cpm_actors::{config::USAGE, Config, Engine};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() {
    let config = match Config::from_args(std::env::args().skip(1)) {
        Ok(Some(c)) => c,
        Ok(None) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("cpmd: {e}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!("cpmd: bad --log filter {:?}: {e}", config.log);
        std::process::exit(2);
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    // Block the signals before any thread starts, so that only this thread receives them.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cpmd: cannot install signal handlers: {e}");
            std::process::exit(1);
        }
    };
    let grace = Duration::from_secs(config.shutdown_grace);
    let drain = Duration::from_secs(config.drain_time);
    let engine = match Engine::start(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cpmd: {e}");
            std::process::exit(1);
        }
    };
    // The line tests and scripts wait for.
    println!(
        "cpmd ready sip={} http={}",
        engine.sip_addr(),
        engine.http_addr()
    );
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    engine.shutdown(drain, grace);
}
