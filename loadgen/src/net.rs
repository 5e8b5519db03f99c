//! Batched UDP I/O (`recvmmsg`/`sendmmsg`): the shared `cpm-netio` crate, re-exported under its
//! old path (docs/decisions/0006-netio-crate.md).

pub use cpm_netio::*;
