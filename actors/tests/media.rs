//! The user plane over real loopback sockets: two UDP endpoints send RTP and RTCP through a
//! relay leg both ways; counts are exact, bytes arrive unchanged, latching, drops, release.
//!
//! On the media loop's default path, io_uring (`media_epoll.rs` runs the same cases on the
//! epoll path).

const IO: cpm_actors::media::MediaIo = cpm_actors::media::MediaIo::IoUring;

include!("media/cases.rs");
