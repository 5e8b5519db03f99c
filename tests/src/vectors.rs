//! The RFC 4475 / RFC 5118 SIP torture messages, read (never copied) from
//! `<workspace>/../shared/vectors/sip-torture` or `$CPM_VECTORS`.

use std::path::{Path, PathBuf};

/// One torture message.
#[derive(Debug, Clone)]
pub struct Vector {
    /// `rfc4475/<name>` or `rfc5118/<name>`, without extension.
    pub name: String,
    /// The raw bytes, exactly as in the file.
    pub bytes: Vec<u8>,
}

/// The `sip-torture` directory: `$CPM_VECTORS/sip-torture` or `$CPM_VECTORS` when set, else
/// `<workspace>/../shared/vectors/sip-torture`, else `/work/shared/vectors/sip-torture`.
pub fn dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(v) = std::env::var_os("CPM_VECTORS") {
        let v = PathBuf::from(v);
        candidates.push(v.join("sip-torture"));
        candidates.push(v);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    candidates.push(workspace.join("../shared/vectors/sip-torture"));
    candidates.push(PathBuf::from("/work/shared/vectors/sip-torture"));
    candidates.into_iter().find(|d| d.join("rfc4475").is_dir())
}

/// Every vector of `rfc4475/` and `rfc5118/`, sorted by name; panics naming the places looked
/// at when the directory is missing.
pub fn load() -> Vec<Vector> {
    let dir = dir().unwrap_or_else(|| {
        panic!("torture vectors not found: set CPM_VECTORS or provide <workspace>/../shared/vectors/sip-torture")
    });
    let mut out = Vec::new();
    for set in ["rfc4475", "rfc5118"] {
        let entries = std::fs::read_dir(dir.join(set))
            .unwrap_or_else(|e| panic!("{}/{set}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let name = path
                .file_stem()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push(Vector {
                name: format!("{set}/{name}"),
                bytes,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
