//! `cpm-loadgen`: the bundled load generator (see the `cpm_loadgen` crate documentation and
//! `cpm-loadgen --help`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cpm_loadgen::run::main_with(&args));
}
