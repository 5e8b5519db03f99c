//! [`BytesBatch`]: receive slots that are pooled [`BytesMut`] buffers, so a received datagram
//! can leave as a [`Bytes`] (a reference-counted view of the slot, no copy) and the slot is
//! reused by a later receive once every view of it was dropped.

use std::io;
use std::net::UdpSocket;

use bytes::{Bytes, BytesMut};

use crate::{RecvMeta, MAX_BATCH};

/// Preallocated, reusable receive buffers for [`crate::BatchSocket::recv_bytes`].
///
/// Each slot is a [`BytesMut`] of `slot_size` bytes. [`BytesBatch::take`] splits the received
/// datagram off its slot as a [`Bytes`] without copying; before the next receive every slot is
/// reclaimed in place when nothing references its memory any more (the usual case: a relay
/// sends the datagram on and drops it), or replaced by a fresh buffer when a taken `Bytes` is
/// still held elsewhere (counted by [`BytesBatch::replaced`]). In steady state a receive
/// allocates nothing.
#[derive(Debug)]
pub struct BytesBatch {
    slots: Vec<BytesMut>,
    slot_size: usize,
    meta: Vec<RecvMeta>,
    replaced: u64,
}

impl BytesBatch {
    /// `slots` buffers (clamped to 1..=[`MAX_BATCH`]) of `slot_size` bytes (at least 1).
    pub fn new(slots: usize, slot_size: usize) -> Self {
        let slots = slots.clamp(1, MAX_BATCH);
        let slot_size = slot_size.max(1);
        BytesBatch {
            slots: (0..slots)
                .map(|_| BytesMut::with_capacity(slot_size))
                .collect(),
            slot_size,
            meta: Vec::with_capacity(slots),
            replaced: 0,
        }
    }

    /// How many datagrams one call can receive.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The size of each buffer.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// How many datagrams the last call received.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// True when the last call received nothing.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// The length and sender of the `i`-th datagram of the last call.
    pub fn meta(&self, i: usize) -> Option<RecvMeta> {
        self.meta.get(i).copied()
    }

    /// The `i`-th received datagram, unless it was taken.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.meta.get(i)?;
        self.slots.get(i).map(|s| &s[..])
    }

    /// Takes the `i`-th received datagram as [`Bytes`], sharing the slot's memory (no copy).
    /// A second call for the same `i` returns an empty `Bytes`.
    pub fn take(&mut self, i: usize) -> Option<Bytes> {
        self.meta.get(i)?;
        self.slots.get_mut(i).map(|s| s.split().freeze())
    }

    /// Slots that had to be allocated anew because a taken [`Bytes`] was still alive at the
    /// next receive (a pool miss).
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// Empties the slots the last receive used (the others are still empty), reclaiming each
    /// one's memory in place when unreferenced, and returns the first `max` slots and the
    /// metadata list to fill (cleared).
    pub(crate) fn prepare(&mut self, max: usize) -> (&mut [BytesMut], &mut Vec<RecvMeta>) {
        let used = self.meta.len();
        self.meta.clear();
        for slot in &mut self.slots[..used] {
            slot.clear();
            if !slot.try_reclaim(self.slot_size) {
                *slot = BytesMut::with_capacity(self.slot_size);
                self.replaced += 1;
            }
        }
        let max = max.clamp(1, self.slots.len());
        (&mut self.slots[..max], &mut self.meta)
    }
}

/// The portable receive path: one `recv_from` per slot until the queue is empty. The slot is
/// zero-filled first (safe code cannot hand uninitialised memory to `recv_from`).
pub(crate) fn recv_loop(
    socket: &UdpSocket,
    slots: &mut [BytesMut],
    meta: &mut Vec<RecvMeta>,
) -> io::Result<usize> {
    for slot in slots {
        let size = slot.capacity();
        slot.resize(size, 0);
        match socket.recv_from(slot) {
            Ok((len, source)) => {
                slot.truncate(len);
                meta.push(RecvMeta {
                    len,
                    source,
                    truncated: false,
                    stamp: None,
                });
            }
            Err(e) => {
                slot.clear();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    _ if meta.is_empty() => return Err(e),
                    _ => break,
                }
            }
        }
    }
    Ok(meta.len())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{BatchSocket, Batching, SocketConfig};

    const MODES: [Batching; 2] = [Batching::Mmsg, Batching::Loop];

    fn bind(mode: Batching) -> BatchSocket {
        let config = SocketConfig {
            batching: mode,
            ..SocketConfig::default()
        };
        BatchSocket::bind_with("127.0.0.1:0".parse().unwrap(), config).unwrap()
    }

    /// Receives into `batch` until something arrives (or 2 s pass).
    fn recv_some(sock: &BatchSocket, batch: &mut BytesBatch) -> usize {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match sock.recv_bytes(batch) {
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv_bytes: {e}"),
            }
        }
    }

    #[test]
    fn taken_bytes_share_the_slot_and_the_slot_is_reused() {
        for mode in MODES {
            let (a, b) = (bind(mode), bind(mode));
            let to = b.local_addr().unwrap();
            let from = a.local_addr().unwrap();
            let mut batch = BytesBatch::new(8, 256);
            let mut first_ptr = None;
            for round in 0..5u8 {
                let data = [[round; 20], [round + 100; 20]];
                a.send_batch(&[(to, &data[0][..]), (to, &data[1][..])])
                    .unwrap();
                std::thread::sleep(Duration::from_millis(2));
                assert_eq!(recv_some(&b, &mut batch), 2, "{mode:?}");
                assert_eq!(batch.get(1), Some(&data[1][..]));
                assert_eq!(batch.meta(0).unwrap().source, from);
                let taken = batch.take(0).unwrap();
                assert_eq!(&taken[..], &data[0][..]);
                // The same memory every round: the slot was reclaimed, not reallocated.
                let ptr = taken.as_ptr();
                assert_eq!(*first_ptr.get_or_insert(ptr), ptr, "{mode:?} round {round}");
                assert_eq!(batch.take(0).unwrap().len(), 0);
            }
            assert_eq!(batch.replaced(), 0, "{mode:?}");
        }
    }

    #[test]
    fn a_held_datagram_survives_the_next_receive() {
        for mode in MODES {
            let (a, b) = (bind(mode), bind(mode));
            let to = b.local_addr().unwrap();
            let mut batch = BytesBatch::new(4, 64);
            a.send_batch(&[(to, b"kept")]).unwrap();
            assert_eq!(recv_some(&b, &mut batch), 1);
            let kept = batch.take(0).unwrap();
            a.send_batch(&[(to, b"next one")]).unwrap();
            assert_eq!(recv_some(&b, &mut batch), 1);
            assert_eq!(batch.get(0), Some(&b"next one"[..]));
            assert_eq!(&kept[..], b"kept", "{mode:?}");
            assert_eq!(batch.replaced(), 1, "{mode:?}");
            assert_eq!(batch.get(1), None);
        }
    }

    #[test]
    fn empty_socket_would_block_and_batches_are_clamped() {
        for mode in MODES {
            let s = bind(mode);
            let mut batch = BytesBatch::new(8, 64);
            let e = s.recv_bytes(&mut batch).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{mode:?}");
            assert!(batch.is_empty());
            assert_eq!(batch.take(0), None);
        }
        assert_eq!(BytesBatch::new(0, 0).capacity(), 1);
        assert_eq!(BytesBatch::new(0, 0).slot_size(), 1);
        assert_eq!(BytesBatch::new(1000, 8).capacity(), MAX_BATCH);
    }

    #[test]
    fn a_receive_can_offer_fewer_slots() {
        for mode in MODES {
            let (a, b) = (bind(mode), bind(mode));
            let to = b.local_addr().unwrap();
            let data: Vec<[u8; 3]> = (0..5u8).map(|i| [i; 3]).collect();
            let packets: Vec<_> = data.iter().map(|d| (to, &d[..])).collect();
            a.send_batch(&packets).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            let mut batch = BytesBatch::new(8, 16);
            assert_eq!(b.recv_bytes_upto(&mut batch, 2).unwrap(), 2, "{mode:?}");
            let first = batch.take(0).unwrap();
            assert_eq!(b.recv_bytes_upto(&mut batch, 2).unwrap(), 2);
            assert_eq!(b.recv_bytes(&mut batch).unwrap(), 1);
            assert_eq!(batch.get(0), Some(&[4u8; 3][..]));
            assert_eq!(&first[..], &[0u8; 3]);
            assert_eq!(batch.replaced(), 1, "the held slot was replaced, once");
        }
    }

    #[test]
    fn oversized_datagrams_are_cut() {
        for mode in MODES {
            let (a, b) = (bind(mode), bind(mode));
            let to = b.local_addr().unwrap();
            a.send_batch(&[(to, &[9u8; 100][..])]).unwrap();
            let mut batch = BytesBatch::new(2, 16);
            assert_eq!(recv_some(&b, &mut batch), 1);
            assert_eq!(batch.get(0), Some(&[9u8; 16][..]));
            assert_eq!(batch.meta(0).unwrap().truncated, mode == Batching::Mmsg);
        }
    }
}
