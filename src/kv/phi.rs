//! The phi-accrual failure detector (Hayashibara, Défago, Yared, Katayama, "The φ accrual
//! failure detector", SRDS 2004), as Akka implements it.
//!
//! Instead of a yes/no "is it alive", the detector gives a suspicion level φ for a peer from the
//! time since its last heartbeat: φ = −log10(P(a heartbeat arrives later than this)), where the
//! inter-arrival times are modelled as a normal distribution fitted to a sliding window of the
//! last `window` intervals. φ = 1 means a 10% chance the peer is still fine and merely late,
//! φ = 8 (the default threshold) one in 10⁸. Details, following Akka's
//! `PhiAccrualFailureDetector`:
//! - the window is seeded at the first heartbeat with two intervals `first_interval ± first_interval/4`
//!   so φ is meaningful before real samples exist;
//! - the standard deviation used is at least `min_std` (perfectly regular heartbeats would
//!   otherwise make any jitter look fatal);
//! - `acceptable_pause` is added to the mean (tolerated GC/scheduling pauses);
//! - the interval that ends a period of suspicion (φ ≥ threshold when the heartbeat arrives) is
//!   not added to the window, so one long outage does not teach the detector that outages are
//!   normal;
//! - the normal CDF uses the logistic approximation `1 / (1 + e^(−y(1.5976 + 0.070566 y²)))`
//!   (error < 1.4·10⁻⁴); φ is computed as `log10(1 + e^z)` in a form that cannot overflow, so it
//!   grows smoothly and stays finite (serialisable) however long the silence.
//!
//! Sans-IO: time comes in as [`Instant`]s. Feed it the explicit heartbeat frames (one per tick):
//! heartbeats at the same instant as the previous one, or earlier, are ignored, so a batch of
//! frames read in one poll does not shrink the mean.

use std::collections::VecDeque;

use crate::time::{Duration, Instant};

/// Detector parameters ([`Default`]: Akka's defaults scaled to a 100 ms heartbeat;
/// [`PhiConfig::for_heartbeat`] scales them to another interval).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiConfig {
    /// How many inter-arrival intervals to keep.
    pub window: usize,
    /// Lower bound on the standard deviation.
    pub min_std: Duration,
    /// Added to the mean interval: pauses that are not suspicious.
    pub acceptable_pause: Duration,
    /// Expected interval before any sample exists (seeds the window).
    pub first_interval: Duration,
    /// φ at or above which the peer counts as suspected ([`PhiAccrual::suspected`]).
    pub threshold: f64,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            window: 100,
            min_std: Duration::from_millis(50),
            acceptable_pause: Duration::ZERO,
            first_interval: Duration::from_millis(100),
            threshold: 8.0,
        }
    }
}

impl PhiConfig {
    /// The defaults scaled to heartbeats every `interval`: the window seeded with `interval`,
    /// the standard deviation floored at half of it. φ then crosses the threshold after about
    /// `interval * 3.6` of silence (360 ms at 100 ms heartbeats, 180 ms at the KV node's 50 ms).
    pub fn for_heartbeat(interval: Duration) -> Self {
        PhiConfig {
            min_std: interval / 2,
            first_interval: interval,
            ..PhiConfig::default()
        }
    }
}

/// One peer's detector.
#[derive(Clone, Debug)]
pub struct PhiAccrual {
    cfg: PhiConfig,
    /// Inter-arrival intervals in milliseconds, oldest first.
    intervals: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    last: Option<Instant>,
}

impl PhiAccrual {
    pub fn new(cfg: PhiConfig) -> Self {
        let cfg = PhiConfig {
            window: cfg.window.max(2),
            ..cfg
        };
        PhiAccrual {
            cfg,
            intervals: VecDeque::with_capacity(cfg.window),
            sum: 0.0,
            sum_sq: 0.0,
            last: None,
        }
    }

    pub fn config(&self) -> &PhiConfig {
        &self.cfg
    }

    /// A heartbeat from the peer arrived at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        match self.last {
            None => {
                let mean = ms(self.cfg.first_interval);
                let std = mean / 4.0;
                self.push(mean - std);
                self.push(mean + std);
                self.last = Some(now);
            }
            Some(last) if now > last => {
                if !self.suspected(now) {
                    self.push(ms(now - last));
                }
                self.last = Some(now);
            }
            Some(_) => {} // same instant or earlier: ignore
        }
    }

    /// The suspicion level at `now`: 0.0 before the first heartbeat.
    pub fn phi(&self, now: Instant) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let elapsed = ms(now.saturating_duration_since(last));
        let mean = self.mean_ms() + ms(self.cfg.acceptable_pause);
        let std = self.std_dev_ms().max(ms(self.cfg.min_std)).max(1e-3);
        phi_of(elapsed, mean, std)
    }

    /// `phi(now) >= threshold`.
    pub fn suspected(&self, now: Instant) -> bool {
        self.phi(now) >= self.cfg.threshold
    }

    /// When the last heartbeat arrived.
    pub fn last_heard(&self) -> Option<Instant> {
        self.last
    }

    /// Mean of the window, in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        if self.intervals.is_empty() {
            ms(self.cfg.first_interval)
        } else {
            self.sum / self.intervals.len() as f64
        }
    }

    /// Standard deviation of the window (before the `min_std` floor), in milliseconds.
    pub fn std_dev_ms(&self) -> f64 {
        if self.intervals.is_empty() {
            return 0.0;
        }
        let n = self.intervals.len() as f64;
        let mean = self.sum / n;
        (self.sum_sq / n - mean * mean).max(0.0).sqrt()
    }

    /// Number of intervals in the window.
    pub fn samples(&self) -> usize {
        self.intervals.len()
    }

    /// Forget everything (e.g. the peer was removed and re-added).
    pub fn reset(&mut self) {
        *self = PhiAccrual::new(self.cfg);
    }

    fn push(&mut self, interval_ms: f64) {
        if self.intervals.len() >= self.cfg.window {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.intervals.push_back(interval_ms);
        self.sum += interval_ms;
        self.sum_sq += interval_ms * interval_ms;
        if self.intervals.len() == self.cfg.window {
            // Recompute now and then so floating-point drift from the running sums cannot grow.
            if self.intervals.len() > 1 && self.sum_sq.is_finite() {
                let (s, q) = self
                    .intervals
                    .iter()
                    .fold((0.0, 0.0), |(s, q), &x| (s + x, q + x * x));
                self.sum = s;
                self.sum_sq = q;
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// φ for `elapsed` since the last heartbeat with inter-arrival times ~ N(mean, std²).
///
/// P(later) = 1 − F(elapsed) ≈ 1 / (1 + e^z) with z = y(1.5976 + 0.070566 y²), y = (elapsed −
/// mean)/std, so φ = log10(1 + e^z), computed as softplus without overflow.
fn phi_of(elapsed: f64, mean: f64, std: f64) -> f64 {
    let y = (elapsed - mean) / std;
    let z = y * (1.5976 + 0.070566 * y * y);
    let softplus = if z > 30.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    };
    let phi = softplus / std::f64::consts::LN_10;
    if phi.is_finite() {
        phi
    } else {
        f64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// Heartbeats every `every` ms from 0 up to `until` inclusive.
    fn regular(every: u64, until: u64) -> PhiAccrual {
        let mut d = PhiAccrual::new(PhiConfig::default());
        let mut t = 0;
        while t <= until {
            d.heartbeat(at(t));
            t += every;
        }
        d
    }

    #[test]
    fn no_heartbeat_yet_means_phi_zero() {
        let d = PhiAccrual::new(PhiConfig::default());
        assert_eq!(d.phi(at(10_000)), 0.0);
        assert_eq!(d.last_heard(), None);
        assert!(!d.suspected(at(10_000)));
    }

    #[test]
    fn regular_heartbeats_give_low_phi() {
        let d = regular(100, 10_000);
        assert_eq!(d.last_heard(), Some(at(10_000)));
        assert!((d.mean_ms() - 100.0).abs() < 1.0, "mean {}", d.mean_ms());
        // right after and right on schedule: well below 1
        assert!(d.phi(at(10_010)) < 0.1, "{}", d.phi(at(10_010)));
        assert!(d.phi(at(10_100)) < 0.5, "{}", d.phi(at(10_100)));
        assert!(!d.suspected(at(10_150)));
    }

    #[test]
    fn phi_grows_with_silence() {
        let d = regular(100, 5_000);
        let mut prev = -1.0;
        for ms_after in (0..=1_000).step_by(25) {
            let p = d.phi(at(5_000 + ms_after));
            assert!(p >= prev, "phi fell from {prev} to {p} at +{ms_after} ms");
            prev = p;
        }
        assert!(prev > 50.0, "phi after 1 s of silence: {prev}");
    }

    #[test]
    fn phi_crosses_threshold_after_a_few_intervals() {
        let d = regular(100, 5_000);
        // The first millisecond past the last heartbeat at which phi >= 8.
        let cross = (0..5_000u64)
            .find(|&m| d.suspected(at(5_000 + m)))
            .expect("never suspected");
        // with mean 100 ms and the 50 ms std floor: about 100 + 5.2 * 50 ms
        assert!((250..=500).contains(&cross), "crossed after {cross} ms");
        assert!(!d.suspected(at(5_000 + 200)));
    }

    #[test]
    fn for_heartbeat_scales_the_crossing_with_the_interval() {
        let cross = |every: u64| {
            let interval = Duration::from_millis(every);
            let mut d = PhiAccrual::new(PhiConfig::for_heartbeat(interval));
            let mut t = 0;
            while t <= 5_000 {
                d.heartbeat(at(t));
                t += every;
            }
            (0..5_000u64)
                .find(|&m| d.suspected(at(t - every + m)))
                .expect("never suspected")
        };
        let (c100, c50) = (cross(100), cross(50));
        println!("phi >= 8 after {c100} ms (100 ms heartbeats), {c50} ms (50 ms heartbeats)");
        assert_eq!(
            PhiConfig::for_heartbeat(Duration::from_millis(100)),
            PhiConfig::default()
        );
        assert!((350..=370).contains(&c100), "{c100}");
        assert!((175..=185).contains(&c50), "{c50}");
    }

    #[test]
    fn phi_recovers_after_a_heartbeat() {
        let mut d = regular(100, 5_000);
        assert!(d.suspected(at(6_000)));
        d.heartbeat(at(6_000));
        assert!(d.phi(at(6_010)) < 0.1, "{}", d.phi(at(6_010)));
        assert!(!d.suspected(at(6_100)));
    }

    #[test]
    fn the_interval_ending_a_suspicion_is_not_learned() {
        let mut d = regular(100, 5_000);
        let mean = d.mean_ms();
        let n = d.samples();
        d.heartbeat(at(15_000)); // 10 s outage
        assert_eq!(d.samples(), n);
        assert_eq!(d.mean_ms(), mean);
        // but a merely late heartbeat (not yet suspected) is learned
        d.heartbeat(at(15_150));
        assert!(d.mean_ms() > mean);
    }

    #[test]
    fn first_heartbeat_seeds_the_window_with_first_interval() {
        let mut d = PhiAccrual::new(PhiConfig::default());
        d.heartbeat(at(1_000));
        assert_eq!(d.samples(), 2);
        assert!((d.mean_ms() - 100.0).abs() < 1e-9);
        assert!((d.std_dev_ms() - 25.0).abs() < 1e-9);
        // suspicion builds on the seeded estimate
        assert!(d.phi(at(1_050)) < 1.0);
        assert!(d.suspected(at(2_000)));
    }

    #[test]
    fn window_slides() {
        let cfg = PhiConfig {
            window: 10,
            ..PhiConfig::default()
        };
        let mut d = PhiAccrual::new(cfg);
        let mut t = 0;
        for _ in 0..50 {
            d.heartbeat(at(t));
            t += 100;
        }
        for _ in 0..20 {
            d.heartbeat(at(t));
            t += 200; // slower heartbeats; phi at 200 ms is < threshold with min_std 50
        }
        assert_eq!(d.samples(), 10);
        assert!((d.mean_ms() - 200.0).abs() < 1e-6, "{}", d.mean_ms());
    }

    #[test]
    fn min_std_floors_the_deviation() {
        let lo = regular(100, 5_000);
        let cfg = PhiConfig {
            min_std: Duration::from_millis(200),
            ..PhiConfig::default()
        };
        let mut hi = PhiAccrual::new(cfg);
        let mut t = 0;
        while t <= 5_000 {
            hi.heartbeat(at(t));
            t += 100;
        }
        assert!(lo.std_dev_ms() < 50.0, "{}", lo.std_dev_ms()); // the floor applies
        assert!(hi.phi(at(5_400)) < lo.phi(at(5_400)));
        assert!(!hi.suspected(at(5_400)));
        assert!(lo.suspected(at(5_400)));
    }

    #[test]
    fn acceptable_pause_delays_suspicion() {
        let cfg = PhiConfig {
            acceptable_pause: Duration::from_millis(1_000),
            ..PhiConfig::default()
        };
        let mut d = PhiAccrual::new(cfg);
        let mut t = 0;
        while t <= 5_000 {
            d.heartbeat(at(t));
            t += 100;
        }
        assert!(!d.suspected(at(5_900)));
        assert!(d.suspected(at(6_600)));
    }

    #[test]
    fn duplicate_and_backwards_heartbeats_are_ignored() {
        let mut d = regular(100, 1_000);
        let n = d.samples();
        let mean = d.mean_ms();
        d.heartbeat(at(1_000));
        d.heartbeat(at(900));
        assert_eq!(d.samples(), n);
        assert_eq!(d.mean_ms(), mean);
        assert_eq!(d.last_heard(), Some(at(1_000)));
    }

    #[test]
    fn phi_stays_finite_for_huge_silences() {
        let d = regular(100, 1_000);
        let p = d.phi(Instant::from_micros(u64::MAX));
        assert!(p.is_finite() && p > 1e6, "{p}");
        assert!(serde_json::to_string(&p).unwrap() != "null");
    }

    #[test]
    fn phi_matches_the_normal_tail() {
        // at the mean, P(later) = 1/2 → φ = log10 2
        assert!((phi_of(100.0, 100.0, 10.0) - 2f64.log10()).abs() < 1e-9);
        // one std above: 1 − Φ(1) ≈ 0.1587 → φ ≈ 0.7995
        assert!((phi_of(110.0, 100.0, 10.0) - 0.7995).abs() < 0.01);
        // three std above: ≈ 0.00135 → φ ≈ 2.87
        assert!((phi_of(130.0, 100.0, 10.0) - 2.87).abs() < 0.05);
    }
}
