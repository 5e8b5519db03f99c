//! Runs our parser and `ezk-sip-types` over every RFC 4475/5118 torture message and prints a
//! table (docs/decisions/0001-sip-parser.md):
//!
//! `cargo test -p cpm-perf --test torture_compare -- --ignored --nocapture`
//!
//! The vectors are read from `<workspace>/../shared/vectors/sip-torture` (or
//! `<workspace>/../../shared/...`, or `$CPM_VECTORS/sip-torture`). Columns:
//! - `ours parse`: `sip::parse` alone (structural);
//! - `ours receive`: what our receive path does: `validate_request` / `validate_response` after
//!   a parse, `reject_unparsable` after a failed one. engine/tests/torture.rs asserts that this
//!   is what RFC 4475/5118 expect, so it is the reference column;
//! - `ezk parse`: `ezk-sip-types` through [`cpm_perf::ezk::parse`];
//! - `ezk + hdrs`: also decodes what any stack reads to process a message (every Via, From,
//!   To, CSeq, Call-ID, Max-Forwards, Contact) with ezk's typed headers;
//! - `agree`: whether ezk accepts exactly the messages the reference accepts.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cpm_engine::sip::validate::{reject_unparsable, validate_request, validate_response};
use cpm_perf::ezk;
use ezk_sip_types::header::typed::{CSeq, CallID, Contact, FromTo, MaxForwards, Via};
use ezk_sip_types::Name;

fn vectors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CPM_VECTORS") {
        return PathBuf::from(dir).join("sip-torture");
    }
    // `<workspace>/../shared` in CI and the main checkout; one level up from a worktree.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["../shared/vectors", "../../shared/vectors"]
        .iter()
        .map(|rel| workspace.join(rel).join("sip-torture"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| workspace.join("../shared/vectors/sip-torture"))
}

fn vectors() -> Vec<(String, Vec<u8>)> {
    let dir = vectors_dir();
    let mut out = Vec::new();
    for set in ["rfc4475", "rfc5118"] {
        let entries = std::fs::read_dir(dir.join(set))
            .unwrap_or_else(|e| panic!("{}/{set}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            out.push((format!("{set}/{name}"), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

/// One parser's verdict on one vector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Parsed (and for `hdrs`, every header decoded).
    Ok,
    /// Rejected, with the reason the parser gives.
    Rejected(String),
    /// The parser panicked: a bug, whatever the input.
    Panicked,
}

impl Verdict {
    fn cell(&self) -> String {
        match self {
            Verdict::Ok => "ok".into(),
            // nom's verbose errors span lines: keep the first.
            Verdict::Rejected(r) => format!("rej: {}", r.lines().next().unwrap_or_default()),
            Verdict::Panicked => "PANIC".into(),
        }
    }
}

fn guarded(f: impl FnOnce() -> Result<(), String>) -> Verdict {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Verdict::Ok,
        Ok(Err(reason)) => Verdict::Rejected(reason),
        Err(_) => Verdict::Panicked,
    }
}

fn ours(raw: &[u8]) -> (Verdict, Verdict) {
    let buf = Bytes::copy_from_slice(raw);
    let parse = guarded(|| {
        cpm_engine::sip::parse(buf.clone())
            .map(drop)
            .map_err(|e| e.reason().to_string())
    });
    let hdrs = guarded(|| {
        let m = cpm_engine::sip::parse(buf.clone()).map_err(|e| e.reason().to_string())?;
        let e = |e: cpm_engine::sip::hdr::HeaderError| e.reason();
        m.vias().map_err(e)?;
        m.from().map_err(e)?;
        m.to().map_err(e)?;
        m.cseq().map_err(e)?;
        m.call_id().ok_or("Missing Call-ID Header")?;
        m.max_forwards().map_err(e)?;
        m.contacts().map_err(e)?;
        Ok(())
    });
    (parse, hdrs)
}

/// Our receive path: "accept", the status a request is refused with, or "drop".
fn receive(raw: &[u8]) -> String {
    let buf = Bytes::copy_from_slice(raw);
    match cpm_engine::sip::parse(buf.clone()) {
        Ok(m) if m.is_request() => match validate_request(&m) {
            Ok(()) => "accept".into(),
            Err(r) => format!("{} {}", r.status, r.reason),
        },
        Ok(m) => match validate_response(&m) {
            Ok(()) => "accept".into(),
            Err(r) => format!("drop ({})", r.reason),
        },
        Err(e) => match reject_unparsable(&buf, e) {
            Some((_, r)) => format!("{} {}", r.status, r.reason),
            None => format!("drop ({})", e.reason()),
        },
    }
}

fn theirs(raw: &[u8]) -> (Verdict, Verdict) {
    let buf = Bytes::copy_from_slice(raw);
    let parse = guarded(|| {
        ezk::parse(buf.clone())
            .map(drop)
            .map_err(|e| format!("{e:?}"))
    });
    let hdrs = guarded(|| {
        let m = ezk::parse(buf.clone()).map_err(|e| format!("{e:?}"))?;
        let h = &m.headers;
        let e = |e: ezk_sip_types::header::HeaderError| e.to_string();
        h.get_named::<Vec<Via>>().map_err(e)?;
        h.get::<FromTo>(Name::FROM).map_err(e)?;
        h.get::<FromTo>(Name::TO).map_err(e)?;
        h.get_named::<CSeq>().map_err(e)?;
        h.get_named::<CallID>().map_err(e)?;
        if h.contains(&Name::MAX_FORWARDS) {
            h.get_named::<MaxForwards>().map_err(e)?;
        }
        if h.contains(&Name::CONTACT) {
            h.get_named::<Vec<Contact>>().map_err(e)?;
        }
        Ok(())
    });
    (parse, hdrs)
}

#[test]
#[ignore = "needs ../shared/vectors"]
fn torture_compare() {
    let vectors = vectors();
    assert!(vectors.len() >= 60, "only {} vectors found", vectors.len());
    println!("| vector | ours parse | ours receive | ezk parse | ezk + hdrs | agree |");
    println!("|---|---|---|---|---|---|");
    let mut panics = Vec::new();
    let (mut agree, mut ours_accepts, mut ezk_accepts) = (0, 0, 0);
    for (name, raw) in &vectors {
        let (op, _) = ours(raw);
        let reference = match catch_unwind(|| receive(raw)) {
            Ok(r) => r,
            Err(_) => "PANIC".into(),
        };
        let (ep, eh) = theirs(raw);
        let same = (reference == "accept") == (eh == Verdict::Ok);
        agree += usize::from(same);
        ours_accepts += usize::from(reference == "accept");
        ezk_accepts += usize::from(eh == Verdict::Ok);
        println!(
            "| {name} | {} | {reference} | {} | {} | {} |",
            op.cell(),
            ep.cell(),
            eh.cell(),
            if same { "yes" } else { "**no**" }
        );
        if op == Verdict::Panicked || reference == "PANIC" {
            panics.push(name.clone());
        }
    }
    println!(
        "\n{} vectors: reference accepts {ours_accepts}, ezk accepts {ezk_accepts}, \
         ezk agrees with the reference on {agree}",
        vectors.len()
    );
    assert!(panics.is_empty(), "our parser panicked on {panics:?}");
}
