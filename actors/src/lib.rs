//! cpm-actors (being built).
