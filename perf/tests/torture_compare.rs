//! Runs our parser and `ezk-sip-types` over every RFC 4475/5118 torture message and prints a
//! table (docs/decisions/0001-sip-parser.md):
//!
//! `cargo test -p cpm-perf --test torture_compare -- --ignored --nocapture`
//!
//! The vectors are read from `<workspace>/../shared/vectors/sip-torture` (or
//! `$CPM_VECTORS/sip-torture`). Columns: `parse` is the structural parse; `hdrs` additionally
//! decodes what any stack must read to process a request (every Via, From, To, CSeq, Call-ID,
//! Max-Forwards, Contact) with each parser's typed headers.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cpm_perf::ezk;
use ezk_sip_types::header::typed::{CSeq, CallID, Contact, FromTo, MaxForwards, Via};
use ezk_sip_types::Name;

fn vectors_dir() -> PathBuf {
    match std::env::var_os("CPM_VECTORS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"),
    }
    .join("sip-torture")
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
    println!("| vector | ours parse | ours hdrs | ezk parse | ezk hdrs |\n|---|---|---|---|---|");
    let mut panics = Vec::new();
    for (name, raw) in &vectors {
        let (op, oh) = ours(raw);
        let (ep, eh) = theirs(raw);
        println!(
            "| {name} | {} | {} | {} | {} |",
            op.cell(),
            oh.cell(),
            ep.cell(),
            eh.cell()
        );
        if [&op, &oh].contains(&&Verdict::Panicked) {
            panics.push(name.clone());
        }
    }
    assert!(panics.is_empty(), "our parser panicked on {panics:?}");
}
