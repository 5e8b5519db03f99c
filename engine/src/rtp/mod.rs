//! RTP and RTCP (RFC 3550), sans-IO and zero-copy: what a media relay and the load generator
//! need to read, write and account for media packets.
//!
//! - [`parse`] validates a datagram into an [`RtpPacket`], a view whose CSRCs, extension and
//!   payload are slices of the received [`bytes::Bytes`]; [`RtpHeader`] writes a header for
//!   generators and [`rewrite_seq_ts_ssrc`] edits a received packet in place for relays.
//! - [`is_rtcp`] demultiplexes RTP from RTCP on one port (RFC 5761 §4); [`rtcp::packets`] walks
//!   a compound RTCP datagram so relays can pass it on and count garbage.
//! - [`ReceiverStats`] keeps the receiver's sequence, loss and jitter accounting
//!   (RFC 3550 A.1, A.3, A.8). Arrival times are inputs: nothing here reads a clock.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::BytesMut;
//! use cpm_engine::rtp::{self, ReceiverStats, RtpHeader, SeqNo, Ssrc};
//!
//! let mut stats = ReceiverStats::new(8000);
//! let t0 = Instant::now();
//! for i in 0..3u16 {
//!     let mut buf = BytesMut::new();
//!     RtpHeader::new(0, SeqNo(i), u32::from(i) * 160, Ssrc(42)).write_to(&mut buf)?;
//!     buf.extend_from_slice(&[0xff; 160]);
//!     let datagram = buf.freeze();
//!     assert!(!rtp::is_rtcp(&datagram));
//!     let packet = rtp::parse(datagram)?;
//!     stats.on_rtp(&packet, t0 + Duration::from_millis(20) * u32::from(i));
//! }
//! assert_eq!((stats.expected(), stats.received(), stats.lost()), (3, 3, 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod packet;
pub mod rtcp;
mod seq;
mod stats;

pub use packet::{
    parse, rewrite_seq_ts_ssrc, BuildError, HeaderExtension, RtpError, RtpHeader, RtpPacket,
    FIXED_HEADER_LEN, MAX_CSRCS, RTP_VERSION,
};
pub use rtcp::is_rtcp;
pub use seq::{SeqNo, Ssrc, RTP_SEQ_MOD};
pub use stats::{
    IntervalReport, ReceiverStats, SeqVerdict, MAX_DROPOUT, MAX_MISORDER, MIN_SEQUENTIAL,
};
