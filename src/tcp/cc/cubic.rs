//! CUBIC congestion control (RFC 9438): the cubic window function
//! W_cubic(t) = C·(t − K)^3 + W_max with C = 0.4 and β_cubic = 0.7, the
//! Reno-friendly region (§4.3), fast convergence (§4.7), and slow start below
//! ssthresh.
//!
//! Windows are kept internally in bytes as `f64` (the RFC's formulas are in
//! segments; every formula below converts with `mss`). Time only comes from
//! the `now` handed in, so the algorithm is deterministic.

use super::CongestionControl;
use crate::time::{Duration, Instant};

/// C of §4.2, in segments per second cubed.
pub const C: f64 = 0.4;
/// β_cubic of §4.6: multiplicative decrease factor.
pub const BETA: f64 = 0.7;
/// α_cubic of §4.3: the Reno-friendly additive increase, 3·(1−β)/(1+β).
pub const ALPHA: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);

/// Windows never grow past this (far beyond any window a 32-bit sequence
/// space with scaling can use), so the f64 arithmetic stays finite.
const MAX_WINDOW: f64 = (1u64 << 40) as f64;

#[derive(Debug, Clone)]
pub struct Cubic {
    mss: usize,
    cwnd: usize,
    ssthresh: usize,
    /// cwnd in bytes with the fractional part of the per-ACK increments.
    cwnd_f: f64,
    /// W_max of §4.2 in bytes: the window just before the last reduction
    /// (lowered by fast convergence, §4.7). Zero when unknown.
    w_max: f64,
    /// cwnd just before the last congestion event (cwnd_prior of §4.6).
    cwnd_prior: f64,
    /// The current congestion-avoidance epoch: starts at the first ACK in
    /// congestion avoidance after a congestion event (or after slow start).
    epoch: Option<Epoch>,
    /// When the previous ACK arrived (to freeze t while app-limited).
    last_ack: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Epoch {
    start: Instant,
    /// K of §4.2 in seconds.
    k: f64,
    /// W_est of §4.3 in bytes.
    w_est: f64,
}

impl Cubic {
    pub fn new(mss: usize, now: Instant) -> Cubic {
        let _ = now;
        let mss = mss.max(1);
        let cwnd = super::initial_window(mss);
        Cubic {
            mss,
            cwnd,
            ssthresh: usize::MAX,
            cwnd_f: cwnd as f64,
            w_max: 0.0,
            cwnd_prior: 0.0,
            epoch: None,
            last_ack: None,
        }
    }

    /// W_max of §4.2 in bytes (zero before the first congestion event).
    pub fn w_max(&self) -> usize {
        self.w_max as usize
    }

    /// K of §4.2 for the current epoch, if one has started.
    pub fn k(&self) -> Option<Duration> {
        self.epoch.map(|e| Duration::from_secs_f64(e.k))
    }

    /// W_cubic(t) of §4.2 in bytes, `t` seconds into the current epoch.
    fn w_cubic(&self, k: f64, t: f64) -> f64 {
        let mss = self.mss as f64;
        (C * (t - k).powi(3) * mss + self.w_max).clamp(0.0, MAX_WINDOW)
    }

    fn set_cwnd(&mut self, bytes: f64) {
        self.cwnd_f = bytes.clamp(self.mss as f64, MAX_WINDOW);
        self.cwnd = self.cwnd_f as usize;
    }

    /// §4.6 (and §4.7): record W_max, reduce ssthresh; returns the new ssthresh.
    fn reduce(&mut self) -> f64 {
        let cwnd = self.cwnd_f;
        // §4.7 fast convergence: a flow that lost before regaining its old
        // W_max releases bandwidth for newer flows.
        self.w_max = if cwnd < self.w_max {
            cwnd * (1.0 + BETA) / 2.0
        } else {
            cwnd
        };
        self.cwnd_prior = cwnd;
        let ssthresh = (cwnd * BETA).max(2.0 * self.mss as f64);
        self.ssthresh = ssthresh as usize;
        self.epoch = None;
        ssthresh
    }

    fn start_epoch(&mut self, now: Instant) -> Epoch {
        let mss = self.mss as f64;
        let cwnd = self.cwnd_f;
        let k = if self.w_max > cwnd {
            ((self.w_max - cwnd) / mss / C).cbrt()
        } else {
            // No (or a smaller) previous maximum, e.g. after slow start or a
            // timeout (§4.8): grow from the current window with K = 0.
            self.w_max = cwnd;
            0.0
        };
        let e = Epoch {
            start: now,
            k,
            w_est: cwnd,
        };
        self.epoch = Some(e);
        e
    }

    fn congestion_avoidance(&mut self, now: Instant, bytes_acked: usize, srtt: Option<Duration>) {
        let mut e = match self.epoch {
            Some(e) => e,
            None => self.start_epoch(now),
        };
        let mss = self.mss as f64;
        let cwnd = self.cwnd_f;
        let acked = bytes_acked as f64;
        let t = now.saturating_duration_since(e.start).as_secs_f64();
        let rtt = srtt.unwrap_or(Duration::ZERO).as_secs_f64();

        // §4.3 Reno-friendly estimate: α_cubic segments per cwnd acked,
        // α = 1 once W_est has reached cwnd_prior.
        let alpha = if e.w_est >= self.cwnd_prior {
            1.0
        } else {
            ALPHA
        };
        e.w_est = (e.w_est + alpha * mss * acked / cwnd).min(MAX_WINDOW);
        self.epoch = Some(e);

        if self.w_cubic(e.k, t) < e.w_est {
            // Reno-friendly region.
            self.set_cwnd(e.w_est.max(cwnd));
            return;
        }
        // §4.4/§4.5 concave and convex regions: target = W_cubic(t + RTT),
        // kept within [cwnd, 1.5·cwnd]; grow (target − cwnd)/cwnd per MSS acked.
        let target = self.w_cubic(e.k, t + rtt).clamp(cwnd, 1.5 * cwnd);
        self.set_cwnd(cwnd + (target - cwnd) * acked / cwnd);
    }
}

impl CongestionControl for Cubic {
    fn name(&self) -> &'static str {
        "cubic"
    }
    fn cwnd(&self) -> usize {
        self.cwnd
    }
    fn ssthresh(&self) -> usize {
        self.ssthresh
    }
    fn on_ack(
        &mut self,
        now: Instant,
        bytes_acked: usize,
        srtt: Option<Duration>,
        app_limited: bool,
    ) {
        let prev = self.last_ack.replace(now);
        if app_limited {
            // No growth, and the cubic clock stands still while the sender
            // does not use its window (so it cannot jump afterwards).
            if let (Some(e), Some(prev)) = (self.epoch.as_mut(), prev) {
                e.start += now.saturating_duration_since(prev);
            }
            return;
        }
        if bytes_acked == 0 {
            return;
        }
        if self.cwnd < self.ssthresh {
            // Slow start (RFC 5681 with RFC 3465 L = 2·SMSS).
            let inc = bytes_acked.min(2 * self.mss) as f64;
            self.set_cwnd(self.cwnd_f + inc);
            return;
        }
        self.congestion_avoidance(now, bytes_acked, srtt);
    }
    fn on_congestion_event(&mut self, _now: Instant, _bytes_in_flight: usize) {
        // §4.6 reduces from cwnd; the app_limited rule in on_ack keeps cwnd
        // from growing beyond what is actually in flight.
        let ssthresh = self.reduce();
        self.set_cwnd(ssthresh);
    }
    fn on_retransmission_timeout(&mut self, _now: Instant, _bytes_in_flight: usize) {
        // §4.8: ssthresh as in §4.6, cwnd = loss window of one MSS. The next
        // epoch starts from the window at the end of slow start with K = 0.
        self.reduce();
        self.w_max = 0.0;
        self.set_cwnd(self.mss as f64);
    }
    /// RFC 9406 §4.2 with CUBIC: ssthresh = cwnd; the first congestion
    /// avoidance epoch then starts at this window (W_max unset, K = 0).
    fn end_slow_start(&mut self) {
        self.ssthresh = self.cwnd;
    }
    /// Keeps every window the same number of segments; a window still at the
    /// initial window becomes the new MSS's initial window.
    fn set_mss(&mut self, mss: usize) {
        let mss = mss.max(1);
        if mss == self.mss {
            return;
        }
        let ratio = mss as f64 / self.mss as f64;
        let cwnd = if self.cwnd == super::initial_window(self.mss) {
            super::initial_window(mss) as f64
        } else {
            self.cwnd_f * ratio
        };
        if self.ssthresh != usize::MAX {
            self.ssthresh = ((self.ssthresh as f64 * ratio) as usize).max(2 * mss);
        }
        self.w_max *= ratio;
        self.cwnd_prior *= ratio;
        if let Some(e) = self.epoch.as_mut() {
            e.w_est *= ratio;
        }
        self.mss = mss;
        self.set_cwnd(cwnd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::cc::reno::Reno;

    const MSS: usize = 1000;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A CUBIC sender in congestion avoidance with a window of `segs` MSS.
    fn at_window(segs: usize) -> Cubic {
        let mut c = Cubic::new(MSS, Instant::ZERO);
        c.set_cwnd((segs * MSS) as f64);
        c.ssthresh = segs * MSS;
        c
    }

    /// ACK clocking with a fixed RTT: each round the whole window is acked
    /// one MSS at a time, spread evenly over the RTT. Returns the time after
    /// the last round.
    fn run(
        cc: &mut dyn CongestionControl,
        mut now: Instant,
        rtt: Duration,
        until: Instant,
    ) -> Instant {
        while now < until {
            let segs = (cc.cwnd() / MSS).max(1);
            let step = rtt / segs as u32;
            for _ in 0..segs {
                cc.on_ack(now, MSS, Some(rtt), false);
                now += step;
            }
        }
        now
    }

    #[test]
    fn alpha_cubic_per_rfc9438_4_3() {
        assert!((ALPHA - 0.9 / 1.7).abs() < 1e-12);
    }

    #[test]
    fn slow_start_below_ssthresh() {
        let mut c = Cubic::new(MSS, Instant::ZERO);
        assert_eq!(c.cwnd(), 10 * MSS);
        assert_eq!(c.ssthresh(), usize::MAX);
        c.on_ack(Instant::ZERO, MSS, None, false);
        assert_eq!(c.cwnd(), 11 * MSS);
        // RFC 3465 L = 2·MSS.
        c.on_ack(Instant::ZERO, 10 * MSS, None, false);
        assert_eq!(c.cwnd(), 13 * MSS);
    }

    #[test]
    fn congestion_event_reduces_cwnd_to_beta_w() {
        let mut c = at_window(100);
        c.on_congestion_event(Instant::from_secs(1), 100 * MSS);
        assert_eq!(c.cwnd(), 70 * MSS);
        assert_eq!(c.ssthresh(), 70 * MSS);
        assert_eq!(c.w_max(), 100 * MSS);
        // Never below 2 MSS.
        let mut c = at_window(2);
        c.on_congestion_event(Instant::ZERO, 2 * MSS);
        assert_eq!(c.cwnd(), 2 * MSS);
        assert_eq!(c.ssthresh(), 2 * MSS);
    }

    #[test]
    fn k_per_rfc9438_4_2() {
        let mut c = at_window(100);
        c.on_congestion_event(Instant::ZERO, 100 * MSS);
        assert_eq!(c.k(), None, "the epoch starts at the first ACK");
        let t0 = Instant::from_secs(3);
        c.on_ack(t0, MSS, Some(secs(0.1)), false);
        // K = cbrt((W_max - cwnd_epoch) / C) = cbrt(30 / 0.4) = cbrt(75).
        let k = c.k().unwrap().as_secs_f64();
        assert!((k - 75f64.cbrt()).abs() < 1e-6, "{k}");
        assert_eq!(c.epoch.unwrap().start, t0);
    }

    #[test]
    fn window_returns_to_w_max_at_k() {
        let rtt = secs(0.1);
        let mut c = at_window(100);
        let t0 = Instant::from_secs(10);
        c.on_congestion_event(t0, 100 * MSS);
        c.on_ack(t0, MSS, Some(rtt), false);
        let k = 75f64.cbrt();
        let w_max = 100.0 * MSS as f64;
        // RFC 9438 Figure 1, in bytes, independent of the implementation.
        let w_cubic = |now: Instant| {
            let t = (now - t0).as_secs_f64();
            (C * (t - k).powi(3) + 100.0) * MSS as f64
        };

        // Concave region: ACK clocking keeps cwnd on the curve (within a
        // fraction of a segment) halfway to K, about 96 segments.
        let now = run(&mut c, t0, rtt, t0 + secs(k / 2.0));
        let half = c.cwnd() as f64;
        assert!(half < w_max);
        assert!(
            (half - w_cubic(now)).abs() < 0.3 * MSS as f64,
            "cwnd at K/2 = {half}, W_cubic = {}",
            w_cubic(now)
        );

        // Plateau at W_max around t = K.
        let now = run(&mut c, now, rtt, t0 + secs(k));
        let at_k = c.cwnd() as f64;
        assert!((at_k - w_max).abs() < 0.01 * w_max, "cwnd at K = {at_k}");

        // Convex region: past W_max and still on the curve one second later
        // (before the Reno-friendly estimate catches up).
        let now = run(&mut c, now, rtt, t0 + secs(k + 1.0));
        let after = c.cwnd() as f64;
        assert!(after > w_max);
        assert!(
            (after - w_cubic(now)).abs() < 0.3 * MSS as f64,
            "cwnd at K+1 = {after}, W_cubic = {}",
            w_cubic(now)
        );
    }

    #[test]
    fn reno_friendly_region_dominates_small_window_short_rtt() {
        let rtt = secs(0.001);
        let mut c = at_window(10);
        let t0 = Instant::from_secs(1);
        c.on_congestion_event(t0, 10 * MSS);
        let mut reno = Reno::new(MSS);
        reno.on_congestion_event(t0, 14 * MSS); // the same 7-segment start
        assert_eq!(reno.cwnd(), c.cwnd());
        run(&mut c, t0, rtt, t0 + secs(0.1));
        run(&mut reno, t0, rtt, t0 + secs(0.1));
        let k = c.k().unwrap().as_secs_f64();
        // The cubic curve alone would still be below its old maximum.
        let w_cubic = C * (0.101 - k).powi(3) + 10.0;
        let segs = c.cwnd() as f64 / MSS as f64;
        assert!(w_cubic < 8.0, "{w_cubic}");
        assert!(segs > 50.0, "cwnd {segs} segments");
        assert_eq!(c.cwnd_f, c.epoch.unwrap().w_est);
        // About Reno's rate (α_cubic < 1 only until W_est reaches cwnd_prior).
        let r = reno.cwnd() as f64 / MSS as f64;
        assert!(segs <= r + 1.0 && segs > r - 8.0, "cubic {segs} reno {r}");
    }

    #[test]
    fn fast_convergence_lowers_w_max() {
        let mut c = at_window(100);
        c.on_congestion_event(Instant::ZERO, 100 * MSS);
        assert_eq!(c.w_max(), 100 * MSS);
        // Lose again before regaining W_max: W_max = cwnd·(1 + β)/2.
        c.on_congestion_event(Instant::from_secs(1), 70 * MSS);
        assert_eq!(c.w_max(), 59_500);
        assert_eq!(c.cwnd(), 49_000);
        // A loss above the old maximum records the window itself.
        let mut c = at_window(100);
        c.on_congestion_event(Instant::ZERO, 100 * MSS);
        c.set_cwnd(120_000.0);
        c.on_congestion_event(Instant::from_secs(1), 120 * MSS);
        assert_eq!(c.w_max(), 120_000);
    }

    #[test]
    fn no_growth_when_app_limited() {
        let rtt = secs(0.05);
        let mut c = Cubic::new(MSS, Instant::ZERO);
        c.on_ack(Instant::ZERO, MSS, Some(rtt), true);
        assert_eq!(c.cwnd(), 10 * MSS, "slow start");

        let mut a = at_window(100);
        a.on_congestion_event(Instant::ZERO, 100 * MSS);
        let mut b = a.clone();
        a.on_ack(Instant::ZERO, MSS, Some(rtt), false);
        let w = a.cwnd();
        let mut now = Instant::ZERO;
        for _ in 0..10_000 {
            now += Duration::from_millis(1);
            a.on_ack(now, MSS, Some(rtt), true);
        }
        assert_eq!(a.cwnd(), w);
        // The app-limited time does not count: afterwards A grows like a
        // sender B that was never idle.
        let end = run(&mut a, now, rtt, now + secs(2.0));
        b.on_ack(Instant::ZERO, MSS, Some(rtt), false);
        let dt = now - Instant::ZERO;
        run(
            &mut b,
            Instant::ZERO + Duration::from_millis(1),
            rtt,
            end - dt,
        );
        let (wa, wb) = (a.cwnd() as f64, b.cwnd() as f64);
        assert!((wa - wb).abs() < 0.01 * wb, "a {wa} b {wb}");
    }

    #[test]
    fn target_is_capped_at_one_and_a_half_cwnd() {
        let mut c = at_window(70);
        c.on_ack(Instant::ZERO, MSS, Some(secs(0.1)), false);
        let w = c.cwnd_f;
        // Far into the convex region, acking a whole window at once.
        c.on_ack(Instant::from_secs(100), w as usize, Some(secs(0.1)), false);
        assert!(
            (c.cwnd_f - 1.5 * w).abs() < 1.0,
            "{} vs {}",
            c.cwnd_f,
            1.5 * w
        );
    }

    #[test]
    fn rto_sets_loss_window_and_restarts_epoch_with_k_zero() {
        let rtt = secs(0.1);
        let mut c = at_window(100);
        c.on_ack(Instant::ZERO, MSS, Some(rtt), false);
        assert!(c.k().is_some());
        let w = c.cwnd_f;
        c.on_retransmission_timeout(Instant::from_secs(1), 100 * MSS);
        assert_eq!(c.cwnd(), MSS);
        let ssthresh = (w * BETA) as usize;
        assert_eq!(c.ssthresh(), ssthresh);
        assert_eq!(c.k(), None);
        // Slow start back up to ssthresh, then a new epoch from that window.
        let t = Instant::from_secs(2);
        while c.cwnd() < c.ssthresh() {
            c.on_ack(t, MSS, Some(rtt), false);
        }
        let epoch_cwnd = c.cwnd();
        assert!(epoch_cwnd >= ssthresh && epoch_cwnd < ssthresh + 2 * MSS);
        c.on_ack(t, MSS, Some(rtt), false);
        assert_eq!(c.k(), Some(Duration::ZERO));
        assert_eq!(c.w_max(), epoch_cwnd);
    }

    #[test]
    fn first_epoch_after_slow_start_has_k_zero() {
        let mut c = Cubic::new(MSS, Instant::ZERO);
        c.ssthresh = 12 * MSS;
        c.on_ack(Instant::ZERO, 2 * MSS, None, false);
        assert_eq!(c.cwnd(), 12 * MSS);
        c.on_ack(Instant::from_secs(1), MSS, None, false);
        assert_eq!(c.k(), Some(Duration::ZERO));
        assert!(c.cwnd() >= 12 * MSS);
    }

    #[test]
    fn set_mss_rescales_in_segments() {
        let mut c = Cubic::new(536, Instant::ZERO);
        c.set_mss(1460);
        assert_eq!(c.cwnd(), 14_600);
        let mut c = at_window(100);
        c.on_congestion_event(Instant::ZERO, 100 * MSS);
        c.set_mss(2 * MSS);
        assert_eq!(c.cwnd(), 140_000);
        assert_eq!(c.ssthresh(), 140_000);
        assert_eq!(c.w_max(), 200_000);
        c.set_mss(0); // never panics
        assert!(c.cwnd() >= 1);
    }
}
