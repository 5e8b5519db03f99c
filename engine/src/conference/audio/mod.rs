//! Filled by the conference work (issue 6).
