//! Round-trip time estimation and retransmission timeout, RFC 6298.
//!
//! Karn's rule (never sample a retransmitted segment) is the caller's job:
//! the connection only calls [`RttEstimator::sample`] for segments sent once.

use crate::time::Duration;

#[derive(Clone, Debug)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// RTO before backoff, per §2.2/§2.3 (clamped to min/max).
    base_rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
    /// Number of consecutive backoffs (§5.5); the effective RTO is base_rto << backoff, clamped.
    backoff: u32,
}

/// Clock granularity G of §2.2/§2.3 (our clock ticks in microseconds, but
/// 1 ms keeps the RTO from collapsing onto SRTT on a jitter-free path).
pub const GRANULARITY: Duration = Duration::from_millis(1);

/// The largest backoff shift applied; the RTO is clamped to max long before.
const MAX_BACKOFF_SHIFT: u32 = 31;

impl RttEstimator {
    /// `initial_rto` is used until the first sample (§2.1), clamped to [min, max].
    pub fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> RttEstimator {
        let max_rto = max_rto.max(min_rto);
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            base_rto: initial_rto.clamp(min_rto, max_rto),
            min_rto,
            max_rto,
            backoff: 0,
        }
    }

    /// Feed one RTT measurement (§2.2 first sample, §2.3 later ones, with
    /// alpha = 1/8, beta = 1/4, K = 4, G = 1 ms clock granularity).
    /// Resets the backoff (a fresh sample means the path answers again).
    pub fn sample(&mut self, rtt: Duration) {
        let srtt = match self.srtt {
            None => {
                // §2.2: SRTT <- R, RTTVAR <- R/2.
                self.rttvar = rtt / 2;
                rtt
            }
            Some(srtt) => {
                // §2.3: RTTVAR first, using the old SRTT.
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                (srtt * 7 + rtt) / 8
            }
        };
        self.srtt = Some(srtt);
        // RTO <- SRTT + max(G, K*RTTVAR), then §2.4 floor and §2.5 ceiling.
        let rto = srtt.saturating_add(GRANULARITY.max(self.rttvar.saturating_mul(4)));
        self.base_rto = rto.clamp(self.min_rto, self.max_rto);
        self.backoff = 0;
    }

    /// Feed one of several RTT measurements taken in the same window (RFC
    /// 7323 Appendix G: with timestamps every ACK gives a sample, so the
    /// gains become alpha' = alpha / n and beta' = beta / n for
    /// n = ExpectedSamples = ceil(FlightSize / (2·SMSS)), keeping the
    /// estimator's memory at about one window as RFC 6298 intends).
    pub fn sample_scaled(&mut self, rtt: Duration, expected_samples: u32) {
        let n = i128::from(expected_samples.max(1));
        let Some(srtt) = self.srtt else {
            self.sample(rtt);
            return;
        };
        let (s, v, r) = (
            srtt.as_micros() as i128,
            self.rttvar.as_micros() as i128,
            rtt.as_micros() as i128,
        );
        let v = v + ((s - r).abs() - v) / (4 * n);
        let s = s + (r - s) / (8 * n);
        let micros = |x: i128| Duration::from_micros(x.clamp(0, u64::MAX as i128) as u64);
        self.rttvar = micros(v);
        let srtt = micros(s);
        self.srtt = Some(srtt);
        let rto = srtt.saturating_add(GRANULARITY.max(self.rttvar.saturating_mul(4)));
        self.base_rto = rto.clamp(self.min_rto, self.max_rto);
        self.backoff = 0;
    }

    /// The RTO to arm the timer with now, including backoff, clamped to [min, max].
    pub fn rto(&self) -> Duration {
        let shift = self.backoff.min(MAX_BACKOFF_SHIFT);
        self.base_rto
            .saturating_mul(1u32 << shift)
            .clamp(self.min_rto, self.max_rto)
    }

    /// Double the RTO after a timeout (§5.5), up to the maximum.
    /// The count keeps rising (callers may use it to count retries); the
    /// RTO itself stays at the maximum.
    pub fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
    }

    /// Forget backoff (for example after new data is acknowledged, §5.7 note).
    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }
    pub fn backoff_count(&self) -> u32 {
        self.backoff
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub fn rttvar(&self) -> Option<Duration> {
        self.srtt.map(|_| self.rttvar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    fn est() -> RttEstimator {
        RttEstimator::new(ms(1000), Duration::ZERO, ms(60_000))
    }

    #[test]
    fn rfc7323_appendix_g_scaled_sample_moves_srtt_by_alpha_over_n() {
        let mut e = est();
        e.sample(ms(100));
        let mut f = e.clone();
        // n = 1 is exactly RFC 6298's update.
        e.sample_scaled(ms(180), 1);
        f.sample(ms(180));
        assert_eq!(e.srtt(), f.srtt());
        assert_eq!(e.rttvar(), f.rttvar());
        // n = 10: SRTT moves by (180-100)/80 = 1 ms, RTTVAR by (80-50)/40.
        let mut g = est();
        g.sample(ms(100));
        g.sample_scaled(ms(180), 10);
        assert_eq!(g.srtt(), Some(ms(101)));
        assert_eq!(g.rttvar(), Some(us(50_750)));
    }

    #[test]
    fn rfc6298_2_1_initial_rto_until_first_sample() {
        let e = est();
        assert_eq!(e.rto(), ms(1000));
        assert_eq!(e.srtt(), None);
        assert_eq!(e.rttvar(), None);
        // The initial value is clamped too.
        let e = RttEstimator::new(ms(10), ms(200), ms(60_000));
        assert_eq!(e.rto(), ms(200));
    }

    #[test]
    fn rfc6298_2_2_first_sample_sets_srtt_and_half_rttvar() {
        let mut e = est();
        e.sample(ms(100));
        assert_eq!(e.srtt(), Some(ms(100)));
        assert_eq!(e.rttvar(), Some(ms(50)));
        // RTO = 100 + max(1, 4*50) = 300 ms.
        assert_eq!(e.rto(), ms(300));
    }

    #[test]
    fn rfc6298_2_3_later_samples_use_alpha_and_beta() {
        let mut e = est();
        e.sample(ms(100));
        e.sample(ms(200));
        // RTTVAR = 3/4*50 + 1/4*|100-200| = 62.5; SRTT = 7/8*100 + 1/8*200 = 112.5.
        assert_eq!(e.rttvar(), Some(us(62_500)));
        assert_eq!(e.srtt(), Some(us(112_500)));
        // RTO = 112.5 + 4*62.5 = 362.5 ms.
        assert_eq!(e.rto(), us(362_500));
        e.sample(us(112_500));
        // RTTVAR = 3/4*62.5 + 0 = 46.875; SRTT unchanged.
        assert_eq!(e.rttvar(), Some(us(46_875)));
        assert_eq!(e.srtt(), Some(us(112_500)));
        assert_eq!(e.rto(), us(112_500 + 187_500));
    }

    #[test]
    fn rfc6298_2_3_rttvar_uses_old_srtt() {
        let mut e = est();
        e.sample(ms(80));
        e.sample(ms(160));
        // With the old SRTT (80): |80-160| = 80 -> RTTVAR = 30 + 20 = 50.
        // (With the new SRTT of 90 it would be 30 + 17.5.)
        assert_eq!(e.rttvar(), Some(ms(50)));
        assert_eq!(e.srtt(), Some(ms(90)));
    }

    #[test]
    fn rfc6298_2_2_clock_granularity_bounds_variance_term() {
        let mut e = est();
        e.sample(us(200));
        // 4*RTTVAR = 400 us < G = 1 ms, so RTO = 200 us + 1 ms.
        assert_eq!(e.rto(), us(1_200));
    }

    #[test]
    fn rfc6298_2_4_rto_floor() {
        let mut e = RttEstimator::new(ms(1000), ms(1000), ms(60_000));
        e.sample(ms(10));
        assert_eq!(e.rto(), ms(1000));
    }

    #[test]
    fn rfc6298_2_5_rto_ceiling() {
        let mut e = est();
        e.sample(ms(100_000));
        assert_eq!(e.rto(), ms(60_000));
    }

    #[test]
    fn rfc6298_5_5_backoff_doubles_up_to_max() {
        let mut e = RttEstimator::new(ms(1000), ms(200), ms(5_000));
        e.sample(ms(100)); // RTO 300 ms
        e.back_off();
        assert_eq!(e.rto(), ms(600));
        assert_eq!(e.backoff_count(), 1);
        e.back_off();
        assert_eq!(e.rto(), ms(1200));
        e.back_off();
        assert_eq!(e.rto(), ms(2400));
        e.back_off();
        assert_eq!(e.rto(), ms(4800));
        e.back_off();
        assert_eq!(e.rto(), ms(5000));
        for _ in 0..100 {
            e.back_off();
        }
        assert_eq!(e.rto(), ms(5000));
        assert_eq!(e.backoff_count(), 105);
    }

    #[test]
    fn backoff_applies_before_first_sample() {
        let mut e = est();
        e.back_off();
        e.back_off();
        assert_eq!(e.rto(), ms(4000));
    }

    #[test]
    fn sample_resets_backoff() {
        let mut e = est();
        e.sample(ms(100));
        e.back_off();
        e.back_off();
        e.sample(ms(100));
        assert_eq!(e.backoff_count(), 0);
        // SRTT 100, RTTVAR 3/4*50 = 37.5 -> RTO 250 ms.
        assert_eq!(e.rto(), ms(250));
    }

    #[test]
    fn reset_backoff_restores_base_rto() {
        let mut e = est();
        e.sample(ms(100));
        e.back_off();
        assert_eq!(e.rto(), ms(600));
        e.reset_backoff();
        assert_eq!(e.backoff_count(), 0);
        assert_eq!(e.rto(), ms(300));
    }
}
