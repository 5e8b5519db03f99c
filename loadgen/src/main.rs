//! `cpm-loadgen`: the bundled load generator. Its scenarios arrive with their own issue; this
//! binary only reports that so far.

mod net;

fn main() {
    eprintln!("cpm-loadgen: no scenario is implemented yet");
    std::process::exit(2);
}
