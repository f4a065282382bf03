//! A device wrapper that injects seeded faults in either direction: drop,
//! duplicate, reorder, corrupt.
//!
//! Each packet passing through (received from the inner device, or sent to
//! it) is subjected, in this order, to: drop (gone, nothing else happens);
//! corrupt (one random bit flipped); duplicate (a second copy follows it);
//! reorder (held back for a random delay in `1µs..=reorder_delay`, so later
//! packets overtake it). Held received packets become receivable at their
//! due time ([`Device::poll_at`] reports the earliest); held sent packets go
//! to the inner device at the first `recv`/`send` call at or after their due
//! time. All randomness comes from the `Rng` handed in, so the same seed and
//! the same calls give the same faults.

use super::Device;
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};

/// Fault probabilities for one direction (each in [0, 1]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultConfig {
    pub drop: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub corrupt: f64,
    /// Longest time a reordered packet is held back.
    pub reorder_delay: Duration,
}

impl FaultConfig {
    /// No faults.
    pub const NONE: FaultConfig = FaultConfig {
        drop: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        corrupt: 0.0,
        reorder_delay: Duration::from_millis(5),
    };

    /// True if this configuration never alters a packet.
    pub fn is_none(&self) -> bool {
        self.drop <= 0.0 && self.is_drop_only()
    }

    /// Drop only (or nothing): a packet that survives is passed on as it
    /// came, so the injector can use the inner device's copy-free paths.
    pub fn is_drop_only(&self) -> bool {
        self.duplicate <= 0.0 && self.reorder <= 0.0 && self.corrupt <= 0.0
    }

    /// Drop `percent`% of the packets, nothing else.
    pub fn drop_percent(percent: f64) -> FaultConfig {
        FaultConfig {
            drop: percent / 100.0,
            ..FaultConfig::NONE
        }
    }
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig::NONE
    }
}

/// What the injector did in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Packets that entered the injector in this direction.
    pub packets: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
}

/// A packet held back, ordered by due time then arrival.
type Held = Reverse<(Instant, u64, Vec<u8>)>;

pub struct FaultInjector<D> {
    pub inner: D,
    pub rx_config: FaultConfig,
    pub tx_config: FaultConfig,
    rng: Rng,
    rx_stats: FaultStats,
    tx_stats: FaultStats,
    held_rx: BinaryHeap<Held>,
    held_tx: BinaryHeap<Held>,
    seq: u64,
    /// The inner device vouched for the checksum of the packet `recv` last
    /// returned straight through (held or corrupted packets are never trusted).
    rx_trusted: bool,
}

/// Flip one bit of `packet`, chosen by `rng`; returns (byte, bit).
pub fn flip_random_bit(rng: &mut Rng, packet: &mut [u8]) -> Option<(usize, u8)> {
    if packet.is_empty() {
        return None;
    }
    let byte = rng.gen_range(0, packet.len() as u64) as usize;
    let bit = rng.gen_range(0, 8) as u8;
    packet[byte] ^= 1 << bit;
    Some((byte, bit))
}

/// The faults decided for one packet (see [`decide`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub drop: bool,
    pub corrupt: bool,
    pub duplicate: bool,
    /// Hold the packet back this long (reordering).
    pub hold: Option<Duration>,
}

/// Draw the faults for one packet from `rng` under `cfg`, counting them in
/// `stats`. Shared with the simulator's links, so both make the same kind of
/// decisions in the same order.
pub fn decide(rng: &mut Rng, cfg: &FaultConfig, stats: &mut FaultStats) -> Verdict {
    stats.packets += 1;
    if rng.gen_bool(cfg.drop) {
        stats.dropped += 1;
        return Verdict {
            drop: true,
            corrupt: false,
            duplicate: false,
            hold: None,
        };
    }
    let corrupt = rng.gen_bool(cfg.corrupt);
    let duplicate = rng.gen_bool(cfg.duplicate);
    let hold = if rng.gen_bool(cfg.reorder) {
        let max = (cfg.reorder_delay.as_micros() as u64).max(1);
        Some(Duration::from_micros(rng.gen_range(1, max + 1)))
    } else {
        None
    };
    stats.corrupted += corrupt as u64;
    stats.duplicated += duplicate as u64;
    stats.reordered += hold.is_some() as u64;
    Verdict {
        drop: false,
        corrupt,
        duplicate,
        hold,
    }
}

impl<D: Device> FaultInjector<D> {
    /// Wrap `inner` with the same fault configuration in both directions.
    pub fn new(inner: D, rng: Rng, config: FaultConfig) -> FaultInjector<D> {
        FaultInjector::with_directions(inner, rng, config, config)
    }

    /// Wrap `inner`; `rx` applies to packets received from it, `tx` to
    /// packets sent through it.
    pub fn with_directions(
        inner: D,
        rng: Rng,
        rx: FaultConfig,
        tx: FaultConfig,
    ) -> FaultInjector<D> {
        FaultInjector {
            inner,
            rx_config: rx,
            tx_config: tx,
            rng,
            rx_stats: FaultStats::default(),
            tx_stats: FaultStats::default(),
            held_rx: BinaryHeap::new(),
            held_tx: BinaryHeap::new(),
            seq: 0,
            rx_trusted: false,
        }
    }

    pub fn rx_stats(&self) -> FaultStats {
        self.rx_stats
    }

    pub fn tx_stats(&self) -> FaultStats {
        self.tx_stats
    }

    /// Packets currently held back (received, sent).
    pub fn held(&self) -> (usize, usize) {
        (self.held_rx.len(), self.held_tx.len())
    }

    fn hold(heap: &mut BinaryHeap<Held>, seq: &mut u64, due: Instant, p: Vec<u8>) {
        *seq += 1;
        heap.push(Reverse((due, *seq, p)));
    }

    /// Send the held outgoing packets that are due.
    fn release_tx(&mut self, now: Instant) -> io::Result<()> {
        while let Some(Reverse((due, _, _))) = self.held_tx.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, _, p))) = self.held_tx.pop() else {
                break;
            };
            // A refused packet is lost, like any drop.
            self.inner.send(now, &p)?;
        }
        Ok(())
    }
}

impl<D: Device> Device for FaultInjector<D> {
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.release_tx(now)?;
        self.rx_trusted = false;
        if let Some(Reverse((due, _, _))) = self.held_rx.peek() {
            if *due <= now {
                let Some(Reverse((_, _, p))) = self.held_rx.pop() else {
                    unreachable!()
                };
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                return Ok(Some(n));
            }
        }
        loop {
            let Some(n) = self.inner.recv(now, buf)? else {
                return Ok(None);
            };
            if self.rx_config.is_none() {
                self.rx_trusted = self.inner.rx_checksum_trusted();
                return Ok(Some(n));
            }
            let v = decide(&mut self.rng, &self.rx_config, &mut self.rx_stats);
            if v.drop {
                continue;
            }
            if v.corrupt {
                flip_random_bit(&mut self.rng, &mut buf[..n]);
            }
            if v.duplicate {
                // The copy is receivable right after this one.
                Self::hold(&mut self.held_rx, &mut self.seq, now, buf[..n].to_vec());
            }
            match v.hold {
                Some(d) => {
                    Self::hold(&mut self.held_rx, &mut self.seq, now + d, buf[..n].to_vec());
                    continue;
                }
                None => {
                    self.rx_trusted = !v.corrupt && self.inner.rx_checksum_trusted();
                    return Ok(Some(n));
                }
            }
        }
    }

    /// With a drop-only receive configuration and nothing held, receive
    /// through the inner device's `recv_vec` (no copy) and drop there; else
    /// `None`, and the caller uses `recv`.
    fn recv_vec(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> Option<io::Result<Option<usize>>> {
        if !self.rx_config.is_drop_only() || !self.held_rx.is_empty() {
            return None;
        }
        self.rx_trusted = false;
        if let Err(e) = self.release_tx(now) {
            return Some(Err(e));
        }
        loop {
            let n = match self.inner.recv_vec(now, buf, max)? {
                Ok(Some(n)) => n,
                other => return Some(other),
            };
            if !self.rx_config.is_none()
                && decide(&mut self.rng, &self.rx_config, &mut self.rx_stats).drop
            {
                continue;
            }
            self.rx_trusted = self.inner.rx_checksum_trusted();
            return Some(Ok(Some(n)));
        }
    }

    /// The inner device's, when nothing is done to sent packets (receive-
    /// side faults only, as the benchmark's loss rows inject them).
    fn split_tx(&mut self) -> Option<Box<dyn super::TxHalf>> {
        if self.tx_config.is_none() && self.held_tx.is_empty() {
            self.inner.split_tx()
        } else {
            None
        }
    }

    fn send(&mut self, now: Instant, packet: &[u8]) -> io::Result<bool> {
        self.release_tx(now)?;
        if self.tx_config.is_none() {
            return self.inner.send(now, packet);
        }
        let v = decide(&mut self.rng, &self.tx_config, &mut self.tx_stats);
        if v.drop {
            // Lost on the wire: the sender believes it went.
            return Ok(true);
        }
        let mut owned;
        let mut p = packet;
        if v.corrupt {
            owned = packet.to_vec();
            flip_random_bit(&mut self.rng, &mut owned);
            p = &owned[..];
        }
        match v.hold {
            Some(d) => {
                Self::hold(&mut self.held_tx, &mut self.seq, now + d, p.to_vec());
                if v.duplicate {
                    self.inner.send(now, p)?;
                }
                Ok(true)
            }
            None => {
                let sent = self.inner.send(now, p)?;
                if v.duplicate {
                    owned = p.to_vec();
                    self.inner.send(now, &owned)?;
                }
                Ok(sent)
            }
        }
    }

    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    fn poll_at(&self) -> Option<Instant> {
        let rx = self.held_rx.peek().map(|r| r.0 .0);
        let tx = self.held_tx.peek().map(|r| r.0 .0);
        [rx, tx, self.inner.poll_at()].into_iter().flatten().min()
    }

    fn capabilities(&self) -> super::Capabilities {
        self.inner.capabilities()
    }

    fn rx_checksum_trusted(&self) -> bool {
        self.rx_trusted
    }
}

impl<D: AsRawFd> AsRawFd for FaultInjector<D> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phy::queue::QueueDevice;

    fn packet(i: u32) -> Vec<u8> {
        let mut p = vec![0u8; 64];
        p[..4].copy_from_slice(&i.to_be_bytes());
        p
    }

    fn config(drop: f64, duplicate: f64, reorder: f64, corrupt: f64) -> FaultConfig {
        FaultConfig {
            drop,
            duplicate,
            reorder,
            corrupt,
            reorder_delay: Duration::from_millis(5),
        }
    }

    /// Push `n` packets into rx at t=0 and drain everything, advancing time
    /// past every hold. Returns the packets in receive order.
    fn run_rx(seed: u64, cfg: FaultConfig, n: u32) -> (Vec<Vec<u8>>, FaultStats) {
        let mut q = QueueDevice::new(1500);
        for i in 0..n {
            q.rx.push_back(packet(i));
        }
        let mut f = FaultInjector::with_directions(q, Rng::new(seed), cfg, FaultConfig::NONE);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1500];
        let mut now = Instant::ZERO;
        loop {
            while let Some(k) = f.recv(now, &mut buf).unwrap() {
                out.push(buf[..k].to_vec());
            }
            match f.poll_at() {
                Some(t) => {
                    assert!(t > now, "poll_at must be in the future once drained");
                    now = t;
                }
                None => break,
            }
        }
        (out, f.rx_stats())
    }

    fn within(count: u64, n: u64, p: f64) {
        // Binomial: mean np, sd sqrt(np(1-p)); allow 5 sd.
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - mean).abs() <= 5.0 * sd,
            "count {count} of {n} outside 5 sd of p={p}"
        );
    }

    #[test]
    fn fault_rates_within_statistical_bounds() {
        let n = 20_000u32;
        let (out, s) = run_rx(7, config(0.05, 0.05, 0.05, 0.05), n);
        assert_eq!(s.packets, n as u64);
        within(s.dropped, n as u64, 0.05);
        let survivors = n as u64 - s.dropped;
        within(s.duplicated, survivors, 0.05);
        within(s.reordered, survivors, 0.05);
        within(s.corrupted, survivors, 0.05);
        assert_eq!(out.len() as u64, survivors + s.duplicated);
    }

    #[test]
    fn no_faults_passes_everything_in_order() {
        let (out, s) = run_rx(1, FaultConfig::NONE, 100);
        assert_eq!(out, (0..100).map(packet).collect::<Vec<_>>());
        assert_eq!(s, FaultStats::default());
    }

    #[test]
    fn same_seed_same_sequence() {
        let cfg = config(0.1, 0.1, 0.2, 0.1);
        let a = run_rx(42, cfg, 2000);
        let b = run_rx(42, cfg, 2000);
        let c = run_rx(43, cfg, 2000);
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
        assert_ne!(a.0, c.0);
    }

    #[test]
    fn corruption_flips_exactly_one_bit() {
        let (out, s) = run_rx(3, config(0.0, 0.0, 0.0, 1.0), 500);
        assert_eq!(s.corrupted, 500);
        for (i, p) in out.iter().enumerate() {
            let orig = packet(i as u32);
            let bits: u32 = p.iter().zip(&orig).map(|(a, b)| (a ^ b).count_ones()).sum();
            assert_eq!(bits, 1, "packet {i}");
        }
    }

    #[test]
    fn reordered_packets_are_held_until_due_and_overtaken() {
        let (out, s) = run_rx(5, config(0.0, 0.0, 0.3, 0.0), 1000);
        assert!(s.reordered > 0);
        // Nothing lost, nothing added, but the order changed.
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).map(packet).collect::<Vec<_>>());
        assert_ne!(out, sorted);
    }

    #[test]
    fn duplicates_follow_the_original() {
        let (out, s) = run_rx(9, config(0.0, 1.0, 0.0, 0.0), 10);
        assert_eq!(s.duplicated, 10);
        let want: Vec<_> = (0..10).flat_map(|i| [packet(i), packet(i)]).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn tx_faults_apply_to_sent_packets_and_held_ones_release_on_time() {
        let q = QueueDevice::new(1500);
        let mut f = FaultInjector::with_directions(
            q,
            Rng::new(11),
            FaultConfig::NONE,
            config(0.0, 0.0, 1.0, 0.0),
        );
        assert!(f.send(Instant::ZERO, &packet(1)).unwrap());
        assert!(f.inner.tx.is_empty());
        let due = f.poll_at().expect("held packet has a due time");
        assert!(due > Instant::ZERO && due <= Instant::from_millis(5));
        let mut buf = vec![0u8; 1500];
        f.recv(due - Duration::from_micros(1), &mut buf).unwrap();
        assert!(f.inner.tx.is_empty());
        f.recv(due, &mut buf).unwrap();
        assert_eq!(f.inner.tx.pop_front(), Some(packet(1)));
        assert_eq!(f.poll_at(), None);
        assert_eq!(f.tx_stats().reordered, 1);
        assert_eq!(f.rx_stats().packets, 0);
    }

    #[test]
    fn tx_drop_reports_sent_but_delivers_nothing() {
        let mut f = FaultInjector::with_directions(
            QueueDevice::new(1500),
            Rng::new(2),
            FaultConfig::NONE,
            config(1.0, 0.0, 0.0, 0.0),
        );
        for i in 0..10 {
            assert!(f.send(Instant::ZERO, &packet(i)).unwrap());
        }
        assert!(f.inner.tx.is_empty());
        assert_eq!(f.tx_stats().dropped, 10);
    }

    /// A device that can receive into a vector (like the TUN), counting
    /// which path was used.
    struct VecDevice {
        rx: std::collections::VecDeque<Vec<u8>>,
        by_vec: usize,
    }

    impl Device for VecDevice {
        fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
            Ok(self.rx.pop_front().map(|p| {
                buf[..p.len()].copy_from_slice(&p);
                p.len()
            }))
        }
        fn recv_vec(
            &mut self,
            _now: Instant,
            buf: &mut Vec<u8>,
            max: usize,
        ) -> Option<io::Result<Option<usize>>> {
            self.by_vec += 1;
            Some(Ok(self.rx.pop_front().map(|p| {
                buf.clear();
                buf.extend_from_slice(&p[..p.len().min(max)]);
                buf.len()
            })))
        }
        fn send(&mut self, _now: Instant, _packet: &[u8]) -> io::Result<bool> {
            Ok(true)
        }
        fn mtu(&self) -> usize {
            1500
        }
    }

    fn vec_injector(cfg: FaultConfig, n: u32) -> FaultInjector<VecDevice> {
        let inner = VecDevice {
            rx: (0..n).map(packet).collect(),
            by_vec: 0,
        };
        FaultInjector::with_directions(inner, Rng::new(11), cfg, FaultConfig::NONE)
    }

    #[test]
    fn drop_only_receive_uses_recv_vec_and_drops_the_same_packets_as_recv() {
        let n = 5_000;
        let cfg = FaultConfig::drop_percent(3.0);
        let mut a = vec_injector(cfg, n);
        let mut by_recv = Vec::new();
        let mut buf = vec![0u8; 1500];
        while let Some(k) = a.recv(Instant::ZERO, &mut buf).unwrap() {
            by_recv.push(buf[..k].to_vec());
        }
        let mut b = vec_injector(cfg, n);
        let mut by_vec = Vec::new();
        let mut v = Vec::new();
        while let Some(k) = b.recv_vec(Instant::ZERO, &mut v, 1500).unwrap().unwrap() {
            assert_eq!(k, v.len());
            by_vec.push(v.clone());
        }
        assert!(b.inner.by_vec > 0);
        assert_eq!(
            by_recv, by_vec,
            "same seed, same packets dropped on either path"
        );
        assert_eq!(a.rx_stats(), b.rx_stats());
        within(b.rx_stats().dropped, n as u64, 0.03);
        assert_eq!(by_vec.len() as u64 + b.rx_stats().dropped, n as u64);
    }

    #[test]
    fn recv_vec_declines_when_packets_may_be_altered_or_held() {
        let mut f = vec_injector(config(0.0, 0.0, 0.0, 0.1), 10);
        let mut v = Vec::new();
        assert!(f.recv_vec(Instant::ZERO, &mut v, 1500).is_none());
        assert_eq!(f.inner.by_vec, 0);
        assert!(FaultConfig::drop_percent(1.0).is_drop_only());
        assert!(!FaultConfig::drop_percent(1.0).is_none());
    }
}
