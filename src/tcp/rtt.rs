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

impl RttEstimator {
    /// `initial_rto` is used until the first sample (§2.1).
    pub fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> RttEstimator {
        let _ = (initial_rto, min_rto, max_rto);
        todo!("RttEstimator::new")
    }

    /// Feed one RTT measurement (§2.2 first sample, §2.3 later ones, with
    /// alpha = 1/8, beta = 1/4, K = 4, G = 1 ms clock granularity).
    /// Resets the backoff (a fresh sample means the path answers again).
    pub fn sample(&mut self, rtt: Duration) {
        let _ = rtt;
        todo!()
    }

    /// The RTO to arm the timer with now, including backoff, clamped to [min, max].
    pub fn rto(&self) -> Duration {
        todo!()
    }

    /// Double the RTO after a timeout (§5.5), up to the maximum.
    pub fn back_off(&mut self) {
        todo!()
    }

    /// Forget backoff (for example after new data is acknowledged, §5.7 note).
    pub fn reset_backoff(&mut self) {
        todo!()
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
