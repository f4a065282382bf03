//! Pieces every measurement shares: the result types, the bulk-transfer
//! parameters, and the sender/receiver loops (generic over `Read`/`Write`,
//! so the kernel's sockets and the stack's handles run the same code).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Which way the bulk data flows over the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// The kernel's TCP sends, the userspace stack receives.
    KernelToStack,
    /// The userspace stack sends, the kernel's TCP receives.
    StackToKernel,
}

impl Dir {
    pub fn label(self) -> &'static str {
        match self {
            Dir::KernelToStack => "kernel→stack",
            Dir::StackToKernel => "stack→kernel",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Dir::KernelToStack => "k2s",
            Dir::StackToKernel => "s2k",
        }
    }
}

/// One bulk transfer: `volume` bytes and at least `min_time`, at most
/// `max_time` (see [`transfer_over`]), with `loss_percent`% of packets
/// dropped in each direction on the device.
#[derive(Clone, Copy, Debug)]
pub struct BulkParams {
    /// MTU of the device (the stack's MTU follows it).
    pub mtu: usize,
    pub dir: Dir,
    pub loss_percent: u32,
    pub volume: u64,
    pub min_time: Duration,
    pub max_time: Duration,
}

impl BulkParams {
    /// [`transfer_over`] with this transfer's bounds.
    pub fn over(&self, got: u64, elapsed: Duration) -> bool {
        transfer_over(got, elapsed, self.volume, self.min_time, self.max_time)
    }
}

/// Whether a transfer that has moved `got` bytes in `elapsed` is over: once
/// it has moved `volume` bytes and lasted `min_time`, or at `max_time`.
/// The floor keeps fast rows honest: 1 GB at 40 Gbit/s is 0.2 s, short
/// enough that start-up (slow start, buffer auto-tuning, the scheduler
/// placing threads) swung such a row by 2× between runs.
pub fn transfer_over(
    got: u64,
    elapsed: Duration,
    volume: u64,
    min_time: Duration,
    max_time: Duration,
) -> bool {
    elapsed >= max_time || (got >= volume && elapsed >= min_time)
}

/// What a bulk transfer achieved, measured at the receiver: bytes delivered
/// to the receiving application and the time from the connection being
/// established to the last of them (or the deadline).
#[derive(Clone, Copy, Debug, Default)]
pub struct Bulk {
    pub bytes: u64,
    pub secs: f64,
    /// CPU seconds the userspace stack spent (its event-loop thread and the
    /// application thread moving the data), if measured.
    pub cpu_secs: Option<f64>,
    /// The kernel's share of those threads' CPU (system calls, the kernel's
    /// TCP/IP work inside them; [`super::env::UserSys`]), if measured.
    pub kernel_share: Option<f64>,
    /// The share of all the machine's CPUs busy over the transfer (every
    /// thread, the kernel's peer and softirqs included), if measured.
    pub machine_busy: Option<f64>,
}

impl Bulk {
    /// Goodput in Gbit/s (10^9 bits per second).
    pub fn gbps(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 * 8.0 / self.secs / 1e9
        } else {
            0.0
        }
    }

    /// CPU seconds per gigabyte (10^9 bytes) moved, if CPU was measured.
    pub fn cpu_secs_per_gb(&self) -> Option<f64> {
        let c = self.cpu_secs?;
        (self.bytes > 0).then(|| c / (self.bytes as f64 / 1e9))
    }

    /// CPU seconds per GB that the whole machine (`cpus` CPUs) spent on the
    /// transfer besides the userspace stack's own code (its threads' user
    /// mode): the kernel's work for both ends, the kernel peer's thread,
    /// softirqs, and the stack's system calls. No userspace stack can do
    /// without most of it: see [`userspace_ceiling_gbps`].
    pub fn other_cpu_secs_per_gb(&self, cpus: usize) -> Option<f64> {
        let gb = self.bytes as f64 / 1e9;
        let machine = self.machine_busy? * cpus as f64 * self.secs;
        let own_user = self.cpu_secs? * (1.0 - self.kernel_share?);
        (gb > 0.0).then(|| (machine - own_user).max(0.0) / gb)
    }
}

/// The goodput, in Gbit/s, of a userspace stack whose own code costs
/// nothing and that keeps all `cpus` CPUs busy, given the least CPU per GB
/// besides a stack's own code ([`Bulk::other_cpu_secs_per_gb`]) that any
/// of `runs` needed. An estimate, not a proof: it assumes that work per GB
/// is fixed (the kernel's per-packet path through the TUN and its TCP on
/// the other end), while a stack can still trim its own system calls, and
/// it takes perfect balance over the CPUs.
pub fn userspace_ceiling_gbps<'a>(
    runs: impl IntoIterator<Item = &'a Bulk>,
    cpus: usize,
) -> Option<f64> {
    let least = runs
        .into_iter()
        .filter_map(|b| b.other_cpu_secs_per_gb(cpus))
        .filter(|&w| w > 0.0)
        .min_by(f64::total_cmp)?;
    Some(cpus as f64 / least * 8.0)
}

/// Round-trip latency of small messages.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Latency {
    /// From round-trip times (any order).
    pub fn from_samples(mut rtts: Vec<Duration>) -> Latency {
        rtts.sort_unstable();
        let pick = |q: f64| -> f64 {
            if rtts.is_empty() {
                return 0.0;
            }
            let i = ((rtts.len() as f64 * q).ceil() as usize).clamp(1, rtts.len()) - 1;
            rtts[i].as_secs_f64() * 1e6
        };
        Latency {
            samples: rtts.len(),
            p50_us: pick(0.50),
            p99_us: pick(0.99),
        }
    }
}

/// New connections per second (connect, one small exchange, close).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnRate {
    pub conns: u64,
    pub secs: f64,
}

impl ConnRate {
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.conns as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Memory the stack's process holds per idle established connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdleMemory {
    /// Connections held open at the same time.
    pub conns: u64,
    /// Growth of the process's heap in use ([`super::env::heap_bytes`]) while they were opened.
    pub heap_delta: u64,
    /// Growth of its resident set meanwhile: buffers are allocated zeroed
    /// (calloc), so pages nothing wrote to are not resident. Not robust on
    /// its own: connections may fit in pages freed earlier.
    pub rss_delta: u64,
}

impl IdleMemory {
    pub fn bytes_per_conn(&self) -> f64 {
        if self.conns > 0 {
            self.heap_delta as f64 / self.conns as f64
        } else {
            0.0
        }
    }

    pub fn resident_bytes_per_conn(&self) -> f64 {
        self.rss_delta as f64 / self.conns.max(1) as f64
    }
}

/// The errors a socket with a read/write timeout reports when it expires.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Read from `r` until the transfer is over ([`transfer_over`]: `volume`
/// bytes and `min_time`, or `max_time` after the call) or the stream ends.
/// `r` must have a read timeout well below `max_time` so the deadline is
/// noticed. Returns (bytes, seconds to the last byte).
pub fn receive_for(
    r: &mut impl Read,
    volume: u64,
    min_time: Duration,
    max_time: Duration,
) -> io::Result<(u64, f64)> {
    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let mut last = start;
    loop {
        let now = Instant::now();
        if transfer_over(got, now - start, volume, min_time, max_time) {
            if now - start >= max_time {
                last = now;
            }
            break;
        }
        // Up to `volume` exactly; past it (waiting out `min_time`), whole buffers.
        let want = volume
            .checked_sub(got)
            .filter(|&left| left > 0)
            .map_or(buf.len(), |left| (left as usize).min(buf.len()));
        match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => {
                got += n as u64;
                last = Instant::now();
            }
            Err(e) if is_timeout(&e) => continue,
            Err(e) if got > 0 => {
                log::debug!("receiver stopped after {got} bytes: {e}");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((got, (last - start).as_secs_f64()))
}

/// Write a fixed pattern to `w` until `stop` is set or the peer goes away.
/// `w` should have a write timeout so `stop` is noticed. Returns bytes written.
pub fn send_until(w: &mut impl Write, stop: &AtomicBool) -> u64 {
    let buf: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match w.write(&buf) {
            Ok(0) => break,
            Ok(n) => sent += n as u64,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => break,
        }
    }
    sent
}

/// Median of `reps` runs of `f` by goodput (the first error is returned).
pub fn median_bulk(reps: usize, f: impl FnMut() -> io::Result<Bulk>) -> io::Result<Bulk> {
    median_bulks_in_turn(reps, vec![Box::new(f)])
        .pop()
        .expect("one result per measurement")
}

/// A measurement taken in turns with others ([`median_bulks_in_turn`]).
pub type BulkRun<'a> = Box<dyn FnMut() -> io::Result<Bulk> + 'a>;

/// Median of `reps` runs of each of `runs`, taken in turn (A B C, A B C,
/// ...) rather than all of A, then all of B: a slow spell of a shared host
/// (this one's figures drift by a third within minutes) then falls on every
/// system compared, not on one. A run that fails ends that measurement's
/// turns with its error; the others go on.
pub fn median_bulks_in_turn(reps: usize, mut runs: Vec<BulkRun<'_>>) -> Vec<io::Result<Bulk>> {
    let mut got: Vec<io::Result<Vec<Bulk>>> = runs.iter().map(|_| Ok(Vec::new())).collect();
    for _ in 0..reps.max(1) {
        for (f, g) in runs.iter_mut().zip(got.iter_mut()) {
            if let Ok(v) = g {
                match f() {
                    Ok(b) => v.push(b),
                    Err(e) => *g = Err(e),
                }
            }
        }
    }
    got.into_iter()
        .map(|g| {
            let mut v = g?;
            v.sort_by(|a, b| a.gbps().total_cmp(&b.gbps()));
            log::debug!(
                "bench: runs {:?} Gbit/s",
                v.iter()
                    .map(|b| (b.gbps() * 100.0).round() / 100.0)
                    .collect::<Vec<_>>()
            );
            Ok(v[v.len() / 2])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(bytes: u64) -> Bulk {
        Bulk {
            bytes,
            secs: 1.0,
            cpu_secs: None,
            kernel_share: None,
            machine_busy: None,
        }
    }

    #[test]
    fn runs_in_turn_alternate_and_each_gets_its_median() {
        let order = std::cell::RefCell::new(Vec::new());
        let mut a = 0;
        let mut b = 0;
        let r = median_bulks_in_turn(
            3,
            vec![
                Box::new(|| {
                    order.borrow_mut().push('a');
                    a += 1;
                    Ok(bulk([30, 10, 20][a - 1]))
                }),
                Box::new(|| {
                    order.borrow_mut().push('b');
                    b += 1;
                    if b == 2 {
                        return Err(io::Error::other("b broke"));
                    }
                    Ok(bulk(5))
                }),
                Box::new(|| {
                    order.borrow_mut().push('c');
                    Ok(bulk(7))
                }),
            ],
        );
        assert_eq!(order.into_inner(), "abcabcac".chars().collect::<Vec<_>>());
        assert_eq!(r[0].as_ref().unwrap().bytes, 20);
        assert_eq!(r[1].as_ref().unwrap_err().to_string(), "b broke");
        assert_eq!(r[2].as_ref().unwrap().bytes, 7);
    }

    #[test]
    fn bulk_gbps_is_bits_per_second_over_1e9() {
        let b = Bulk {
            bytes: 1_000_000_000,
            secs: 2.0,
            cpu_secs: Some(1.0),
            kernel_share: None,
            machine_busy: None,
        };
        assert!((b.gbps() - 4.0).abs() < 1e-9);
        assert_eq!(b.cpu_secs_per_gb(), Some(1.0));
        assert_eq!(Bulk::default().gbps(), 0.0);
    }

    #[test]
    fn the_ceiling_takes_the_least_work_besides_the_stacks_own_code() {
        // 1 GB in 2 s on 2 CPUs 90% busy: 3.6 CPU s; the stack's threads
        // 2 CPU s, 80% in the kernel, so 0.4 s its own code: 3.2 s/GB else.
        let a = Bulk {
            bytes: 1_000_000_000,
            secs: 2.0,
            cpu_secs: Some(2.0),
            kernel_share: Some(0.8),
            machine_busy: Some(0.9),
        };
        assert!((a.other_cpu_secs_per_gb(2).unwrap() - 3.2).abs() < 1e-9);
        // Another stack needed only 1.6 s/GB besides its own code.
        let b = Bulk {
            machine_busy: Some(0.5),
            ..a
        };
        assert!((b.other_cpu_secs_per_gb(2).unwrap() - 1.6).abs() < 1e-9);
        // 2 CPUs / 1.6 s per GB = 1.25 GB/s = 10 Gbit/s.
        let c = userspace_ceiling_gbps([&a, &b], 2).unwrap();
        assert!((c - 10.0).abs() < 1e-9, "{c}");
        let unmeasured = Bulk {
            machine_busy: None,
            ..a
        };
        assert_eq!(userspace_ceiling_gbps([&unmeasured], 2), None);
    }

    #[test]
    fn latency_percentiles_pick_nearest_rank() {
        let v: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = Latency::from_samples(v);
        assert_eq!(l.samples, 100);
        assert!((l.p50_us - 50.0).abs() < 1e-6);
        assert!((l.p99_us - 99.0).abs() < 1e-6);
    }

    #[test]
    fn receive_for_stops_at_volume() {
        let data = vec![1u8; 10_000];
        let (n, _) = receive_for(
            &mut &data[..],
            4_000,
            Duration::ZERO,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(n, 4_000);
        let (n, _) = receive_for(
            &mut &data[..],
            1 << 30,
            Duration::ZERO,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(n, 10_000, "end of stream ends the transfer");
    }

    #[test]
    fn receive_for_reads_past_volume_until_min_time() {
        let min = Duration::from_millis(30);
        let (n, secs) =
            receive_for(&mut io::repeat(7), 1_000, min, Duration::from_secs(5)).unwrap();
        assert!(n > 1_000, "kept reading past the volume: {n}");
        // Seconds run to the last byte, read just before the floor was seen.
        assert!(secs >= 0.9 * min.as_secs_f64(), "lasted the floor: {secs}");
        assert!(secs < 5.0, "ended at the floor, not the deadline: {secs}");
    }

    #[test]
    fn a_transfer_is_over_at_volume_and_floor_or_at_the_deadline() {
        let s = Duration::from_secs;
        let (vol, min, max) = (100, s(2), s(20));
        assert!(
            !transfer_over(100, s(1), vol, min, max),
            "volume, floor not reached"
        );
        assert!(
            !transfer_over(99, s(3), vol, min, max),
            "floor, volume not reached"
        );
        assert!(transfer_over(100, s(2), vol, min, max));
        assert!(
            transfer_over(0, s(20), vol, min, max),
            "the deadline ends it"
        );
        assert!(transfer_over(100, Duration::ZERO, vol, Duration::ZERO, max));
    }

    #[test]
    fn median_bulk_takes_the_middle_run() {
        let mut i = 0;
        let b = median_bulk(3, || {
            i += 1;
            Ok(Bulk {
                bytes: [30, 10, 20][i - 1],
                secs: 1.0,
                cpu_secs: None,
                kernel_share: None,
                machine_busy: None,
            })
        })
        .unwrap();
        assert_eq!(b.bytes, 20);
    }
}
