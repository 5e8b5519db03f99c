//! Writes the message consts of `cpm_perf` into a directory, one file each, as fuzz seeds:
//! `cargo run -p cpm-perf --bin write-seeds -- fuzz/corpus/sip_parse`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: write-seeds DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&dir)?;
    for (name, raw) in cpm_perf::SEEDS {
        std::fs::write(dir.join(format!("perf-{name}")), raw)?;
    }
    Ok(())
}
