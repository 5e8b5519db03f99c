//! Multiparty conferences (CPM.md §5, fig. 8–11): the sans-IO parts of the conference
//! controller and of its media.
//!
//! - [`audio`]: G.711/L16 codecs, per-participant jitter buffers, the mix-minus mixer and
//!   talker detection, run on a 20 ms tick by the media plane.
//! - [`video`]: active-speaker video switching (SSRC/sequence/timestamp rewriting, key-frame
//!   requests).
//! - [`roster`]: the conference's participants and its RFC 4575 `conference-info` documents.
//! - [`floor`]: half-duplex floor control (BFCP, RFC 8855) for push-to-talk conferences.

pub mod audio;
pub mod floor;
pub mod roster;
pub mod video;
