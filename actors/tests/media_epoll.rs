//! The user-plane cases of `media.rs` on the media loop's epoll path (`--media-io epoll`).

const IO: cpm_actors::media::MediaIo = cpm_actors::media::MediaIo::Epoll;

include!("media/cases.rs");
