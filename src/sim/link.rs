//! One direction of a simulated link: serialization at a finite bandwidth
//! behind a tail-drop queue, propagation latency, and seeded faults.

use crate::phy::fault::{self, FaultConfig, FaultStats};
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// How a link behaves (each direction separately, with the same settings
/// unless configured one way with [`super::Sim::link_oneway`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Bits per second; 0 means infinitely fast (no serialization delay, no queue).
    pub bandwidth: u64,
    /// Bytes that may wait for the wire; a packet that would exceed it is dropped (tail drop).
    pub queue_bytes: usize,
    /// Loss (`drop`), duplication, reordering (extra delay up to
    /// `reorder_delay`) and corruption (one bit flipped), per packet.
    pub faults: FaultConfig,
}

impl LinkConfig {
    /// A clean link: `latency` one way, `bandwidth` bits/s, a queue of 256 KiB.
    pub fn new(latency: Duration, bandwidth: u64) -> LinkConfig {
        LinkConfig {
            latency,
            bandwidth,
            queue_bytes: 256 * 1024,
            faults: FaultConfig::NONE,
        }
    }

    pub fn loss(mut self, p: f64) -> LinkConfig {
        self.faults.drop = p;
        self
    }

    pub fn duplicate(mut self, p: f64) -> LinkConfig {
        self.faults.duplicate = p;
        self
    }

    /// Reorder a fraction `p` of packets by delaying each up to `max_delay` extra.
    pub fn reorder(mut self, p: f64, max_delay: Duration) -> LinkConfig {
        self.faults.reorder = p;
        self.faults.reorder_delay = max_delay;
        self
    }

    pub fn corrupt(mut self, p: f64) -> LinkConfig {
        self.faults.corrupt = p;
        self
    }

    pub fn queue_bytes(mut self, bytes: usize) -> LinkConfig {
        self.queue_bytes = bytes;
        self
    }
}

impl Default for LinkConfig {
    /// 10 ms, 100 Mbit/s, no faults.
    fn default() -> Self {
        LinkConfig::new(Duration::from_millis(10), 100_000_000)
    }
}

/// What happened on one direction of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets offered to the link.
    pub sent: u64,
    /// Copies handed to the receiving node (duplicates included).
    pub delivered: u64,
    pub bytes_delivered: u64,
    /// Dropped because the queue was full.
    pub queue_drops: u64,
    /// Dropped because the endpoints were partitioned (at send or on arrival),
    /// or the receiving node was down.
    pub partition_drops: u64,
    /// Random faults (lost, duplicated, reordered, corrupted).
    pub faults: FaultStats,
}

/// One direction of a link.
pub(crate) struct Link {
    pub config: LinkConfig,
    pub rng: Rng,
    /// When the wire finishes serializing what is already queued.
    pub busy_until: Instant,
    pub stats: LinkStats,
}

/// Where a packet offered to a link goes.
pub(crate) enum Fate {
    Dropped,
    /// Arrives at these times (two when duplicated); the packet may have been corrupted.
    Arrives(Instant, Option<Instant>),
}

impl Link {
    pub fn new(config: LinkConfig, rng: Rng) -> Link {
        Link {
            config,
            rng,
            busy_until: Instant::ZERO,
            stats: LinkStats::default(),
        }
    }

    /// Offer `packet` at `now`: queue, serialize, apply faults (corrupting
    /// `packet` in place), and say when it arrives.
    pub fn transmit(&mut self, now: Instant, packet: &mut [u8]) -> Fate {
        self.stats.sent += 1;
        let bw = self.config.bandwidth;
        let on_wire = if bw == 0 {
            now
        } else {
            let start = self.busy_until.max(now);
            let backlog = (start - now).as_micros() * bw as u128 / 8 / 1_000_000;
            if backlog + packet.len() as u128 > self.config.queue_bytes as u128 {
                self.stats.queue_drops += 1;
                return Fate::Dropped;
            }
            let bits = packet.len() as u128 * 8;
            let micros = (bits * 1_000_000).div_ceil(bw as u128) as u64;
            self.busy_until = start + Duration::from_micros(micros);
            self.busy_until
        };
        let v = fault::decide(&mut self.rng, &self.config.faults, &mut self.stats.faults);
        if v.drop {
            return Fate::Dropped;
        }
        if v.corrupt {
            fault::flip_random_bit(&mut self.rng, packet);
        }
        let arrive = on_wire + self.config.latency + v.hold.unwrap_or(Duration::ZERO);
        // A duplicate arrives with the undelayed copy's timing: when the
        // original was held back, the copy overtakes it.
        let dup = v.duplicate.then_some(on_wire + self.config.latency);
        Fate::Arrives(arrive, dup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_delay_follows_bandwidth() {
        // 1000 bytes at 8 Mbit/s = 1 ms on the wire, plus 10 ms latency.
        let mut l = Link::new(
            LinkConfig::new(Duration::from_millis(10), 8_000_000),
            Rng::new(1),
        );
        let mut p = vec![0u8; 1000];
        match l.transmit(Instant::ZERO, &mut p) {
            Fate::Arrives(t, None) => assert_eq!(t, Instant::from_millis(11)),
            _ => panic!("clean link must deliver"),
        }
        // Back to back: the second waits for the first.
        match l.transmit(Instant::ZERO, &mut p) {
            Fate::Arrives(t, None) => assert_eq!(t, Instant::from_millis(12)),
            _ => panic!("clean link must deliver"),
        }
    }

    #[test]
    fn full_queue_tail_drops() {
        let cfg = LinkConfig::new(Duration::from_millis(1), 8_000_000).queue_bytes(3000);
        let mut l = Link::new(cfg, Rng::new(1));
        let mut p = vec![0u8; 1000];
        let mut delivered = 0;
        for _ in 0..10 {
            if let Fate::Arrives(..) = l.transmit(Instant::ZERO, &mut p) {
                delivered += 1;
            }
        }
        // The first starts at once (backlog 0) and two more fit behind it... up to 3000 bytes.
        assert_eq!(delivered, 3);
        assert_eq!(l.stats.queue_drops, 7);
        // Once the wire drains, packets are accepted again.
        assert!(matches!(
            l.transmit(Instant::from_millis(3), &mut p),
            Fate::Arrives(..)
        ));
    }

    #[test]
    fn infinite_bandwidth_has_only_latency() {
        let mut l = Link::new(LinkConfig::new(Duration::from_millis(5), 0), Rng::new(1));
        let mut p = vec![0u8; 60000];
        for _ in 0..100 {
            assert!(matches!(
                l.transmit(Instant::ZERO, &mut p),
                Fate::Arrives(t, None) if t == Instant::from_millis(5)
            ));
        }
    }
}
