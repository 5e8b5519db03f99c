//! The relay port pool: which local UDP ports of `--media-ports MIN-MAX` are held by legs.
//!
//! Bookkeeping only: the actors bind the sockets. Ports go out as RTP/RTCP pairs (RTP on an even
//! port, RTCP on the next odd one, RFC 3550 §11) or as single ports for streams that multiplex
//! RTCP (RFC 5761, RFC 8858). A round-robin cursor hands out the port after the last one given,
//! so a just-released port comes back only after every other free port has been used: late
//! packets of an ended call do not reach the next one.

use std::ops::RangeInclusive;

/// The local ports of one facing side of a leg: RTP and, unless RTCP is multiplexed on the RTP
/// port, RTCP on RTP + 1 (RFC 3550 §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalPorts {
    /// The RTP port (even for a pair).
    pub rtp: u16,
    /// The RTCP port, `rtp + 1`; `None` for a single port (`a=rtcp-mux-only`, RFC 8858).
    pub rtcp: Option<u16>,
}

impl LocalPorts {
    /// The ports held: RTP, then RTCP if any.
    pub fn iter(&self) -> impl Iterator<Item = u16> {
        std::iter::once(self.rtp).chain(self.rtcp)
    }
}

/// The state of one port of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Can be handed out.
    Free,
    /// Held by a leg.
    Used,
    /// Held by a leg, and binding it failed: becomes `Unusable` when released.
    UsedUnusable,
    /// Binding it failed: skipped until the cursor has passed it once more.
    Unusable,
}

/// The ports of one worker's share of `MIN..=MAX`: the even-aligned pairs `(p, p + 1)` inside
/// the range (port 0 and 1 excluded, since port 0 means "stream rejected" in SDP, RFC 3264 §6).
#[derive(Debug, Clone)]
pub struct PortPool {
    base: u16,
    slots: Vec<Slot>,
    cursor: usize,
    in_use: usize,
}

impl PortPool {
    /// The whole of `min..=max` as one pool.
    pub fn new(min: u16, max: u16) -> PortPool {
        PortPool::partition(min, max, 1, 0)
    }

    /// Worker `index`'s share of `min..=max` split between `workers` (CPM.md, per-core
    /// workers): consecutive, disjoint runs of whole pairs, so workers never coordinate. The
    /// share is empty when `index >= workers` or the range holds too few pairs.
    pub fn partition(min: u16, max: u16, workers: usize, index: usize) -> PortPool {
        let lo = u32::from(min.max(2));
        let lo = lo + (lo & 1);
        let hi = u32::from(max);
        let pairs = ((hi + 1).saturating_sub(lo) / 2) as usize;
        let workers = workers.max(1);
        let (start, end) = if index < workers {
            (pairs * index / workers, pairs * (index + 1) / workers)
        } else {
            (0, 0)
        };
        // `lo + 2 * start` is at most `max - 1` whenever the share is not empty.
        let base = u16::try_from(lo as usize + 2 * start).unwrap_or(0);
        PortPool {
            base,
            slots: vec![Slot::Free; 2 * (end - start)],
            cursor: 0,
            in_use: 0,
        }
    }

    /// The ports of this share; `None` when it is empty.
    pub fn range(&self) -> Option<RangeInclusive<u16>> {
        let last = usize::from(self.base) + self.slots.len().checked_sub(1)?;
        Some(self.base..=u16::try_from(last).ok()?)
    }

    /// Whether `port` belongs to this share.
    pub fn contains(&self, port: u16) -> bool {
        self.index(port).is_some()
    }

    /// The number of ports in this share.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The number of ports held by legs.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Takes an RTP/RTCP pair: RTP on an even port, RTCP on the next (RFC 3550 §11). `None`
    /// when no pair is free.
    pub fn allocate_pair(&mut self) -> Option<LocalPorts> {
        let pairs = self.slots.len() / 2;
        if pairs == 0 {
            return None;
        }
        let first = self.cursor.div_ceil(2) % pairs;
        for k in 0..pairs {
            let p = (first + k) % pairs;
            let (even, odd) = (2 * p, 2 * p + 1);
            let skipped = self.visit(even) | self.visit(odd);
            if !skipped && self.slots[even] == Slot::Free && self.slots[odd] == Slot::Free {
                self.slots[even] = Slot::Used;
                self.slots[odd] = Slot::Used;
                self.in_use += 2;
                self.cursor = (odd + 1) % self.slots.len();
                return Some(LocalPorts {
                    rtp: self.port(even),
                    rtcp: Some(self.port(odd)),
                });
            }
        }
        None
    }

    /// Takes one port, for a stream whose RTCP shares the RTP port (RFC 8858). `None` when no
    /// port is free. Single ports may split pairs: a pool serving both kinds can refuse a pair
    /// while single ports are still free.
    pub fn allocate_single(&mut self) -> Option<LocalPorts> {
        let n = self.slots.len();
        for k in 0..n {
            let i = (self.cursor + k) % n;
            if !self.visit(i) && self.slots[i] == Slot::Free {
                self.slots[i] = Slot::Used;
                self.in_use += 1;
                self.cursor = (i + 1) % n;
                return Some(LocalPorts {
                    rtp: self.port(i),
                    rtcp: None,
                });
            }
        }
        None
    }

    /// Returns the ports to the pool. Ports not held (or not in this share) are ignored, so a
    /// second release is harmless.
    pub fn release(&mut self, ports: LocalPorts) {
        for port in ports.iter() {
            let Some(i) = self.index(port) else { continue };
            match self.slots[i] {
                Slot::Used => self.slots[i] = Slot::Free,
                Slot::UsedUnusable => self.slots[i] = Slot::Unusable,
                Slot::Free | Slot::Unusable => continue,
            }
            self.in_use -= 1;
        }
    }

    /// The caller could not bind `port` (another process holds it): it is not handed out again
    /// until the cursor has passed it once more after its release, i.e. for one full round of
    /// the pool. A held port stays held until released.
    pub fn mark_unusable(&mut self, port: u16) {
        let Some(i) = self.index(port) else { return };
        self.slots[i] = match self.slots[i] {
            Slot::Free | Slot::Unusable => Slot::Unusable,
            Slot::Used | Slot::UsedUnusable => Slot::UsedUnusable,
        };
    }

    /// The cursor passes slot `i`: an unusable port becomes free, but is skipped this time.
    fn visit(&mut self, i: usize) -> bool {
        if self.slots[i] == Slot::Unusable {
            self.slots[i] = Slot::Free;
            return true;
        }
        false
    }

    fn index(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.base)?);
        (i < self.slots.len()).then_some(i)
    }

    fn port(&self, i: usize) -> u16 {
        // `i < slots.len()`, and every slot is a port of `min..=max`.
        self.base.wrapping_add(i as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(rtp: u16) -> LocalPorts {
        LocalPorts {
            rtp,
            rtcp: Some(rtp + 1),
        }
    }

    #[test]
    fn pairs_are_even_and_the_range_is_aligned() {
        let mut p = PortPool::new(30001, 30006);
        assert_eq!(p.range(), Some(30002..=30005));
        assert_eq!(p.capacity(), 4);
        assert_eq!(p.allocate_pair(), Some(pair(30002)));
        assert_eq!(p.allocate_pair(), Some(pair(30004)));
        assert_eq!(p.allocate_pair(), None);
        assert_eq!(p.in_use(), 4);
        assert!(p.contains(30005) && !p.contains(30006) && !p.contains(30001));
    }

    #[test]
    fn ports_zero_and_one_and_tiny_ranges_are_excluded() {
        assert_eq!(PortPool::new(0, 3).range(), Some(2..=3));
        assert_eq!(PortPool::new(0, 1).capacity(), 0);
        assert_eq!(PortPool::new(5, 6).capacity(), 0);
        assert_eq!(PortPool::new(6, 6).capacity(), 0);
        assert_eq!(PortPool::new(40000, 30000).capacity(), 0);
        let mut empty = PortPool::new(6, 6);
        assert_eq!(
            (empty.allocate_pair(), empty.allocate_single()),
            (None, None)
        );
        assert_eq!(empty.range(), None);
        let top = PortPool::new(65534, 65535);
        assert_eq!(top.range(), Some(65534..=65535));
    }

    #[test]
    fn partitions_are_disjoint_and_cover_the_range() {
        let shares: Vec<PortPool> = (0..3)
            .map(|i| PortPool::partition(30000, 30019, 3, i))
            .collect();
        let ranges: Vec<_> = shares.iter().map(|s| s.range().unwrap()).collect();
        assert_eq!(
            ranges,
            vec![30000..=30005, 30006..=30011, 30012..=30019],
            "10 pairs split 3/3/4, each starting on an even port"
        );
        assert_eq!(shares.iter().map(PortPool::capacity).sum::<usize>(), 20);
        assert_eq!(PortPool::partition(30000, 30019, 3, 3).capacity(), 0);
        assert_eq!(PortPool::partition(30000, 30019, 0, 0).capacity(), 20);
        let big: usize = (0..7)
            .map(|i| PortPool::partition(30000, 39999, 7, i).capacity())
            .sum();
        assert_eq!(big, 10000);
    }

    #[test]
    fn released_ports_come_back_only_after_a_full_round() {
        let mut p = PortPool::new(30000, 30007);
        let a = p.allocate_pair().unwrap();
        p.release(a);
        assert_eq!(p.in_use(), 0);
        let order: Vec<u16> = (0..3)
            .map(|_| {
                let x = p.allocate_pair().unwrap();
                p.release(x);
                x.rtp
            })
            .collect();
        assert_eq!(order, vec![30002, 30004, 30006]);
        assert_eq!(p.allocate_pair(), Some(a), "the round wraps to the start");
    }

    #[test]
    fn singles_take_any_port_and_pairs_skip_split_ones() {
        let mut p = PortPool::new(30000, 30003);
        let s = p.allocate_single().unwrap();
        assert_eq!(
            s,
            LocalPorts {
                rtp: 30000,
                rtcp: None
            }
        );
        assert_eq!(p.allocate_pair(), Some(pair(30002)));
        assert_eq!(
            p.allocate_pair(),
            None,
            "30001 is free but its pair is split"
        );
        assert_eq!(p.allocate_single().unwrap().rtp, 30001);
        assert_eq!(p.allocate_single(), None);
        assert_eq!(p.in_use(), 4);
        p.release(s);
        p.release(s);
        assert_eq!(p.in_use(), 3, "a second release is ignored");
    }

    #[test]
    fn unusable_ports_are_skipped_for_a_round() {
        let mut p = PortPool::new(30000, 30005);
        let a = p.allocate_pair().unwrap();
        p.mark_unusable(a.rtp);
        p.release(a);
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.allocate_pair(), Some(pair(30002)));
        assert_eq!(p.allocate_pair(), Some(pair(30004)));
        // The cursor wraps: 30000 is passed (and healed) once, so the pool looks full.
        assert_eq!(p.allocate_pair(), None);
        assert_eq!(p.allocate_pair(), Some(a), "usable again one round later");
        // A free port can be marked too, and an unknown port is ignored.
        p.mark_unusable(30002);
        p.mark_unusable(1);
        p.release(pair(30002));
        assert_eq!(
            p.allocate_single(),
            Some(LocalPorts {
                rtp: 30003,
                rtcp: None
            })
        );
    }
}
