//! Reno congestion control (RFC 5681): slow start, congestion avoidance by
//! about one MSS per RTT (byte counting, RFC 3465 with L = 2·MSS).

use super::CongestionControl;
use crate::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Reno {
    mss: usize,
    cwnd: usize,
    ssthresh: usize,
    /// Bytes acknowledged in congestion avoidance since cwnd last grew.
    bytes_acked: usize,
}

impl Reno {
    pub fn new(mss: usize) -> Reno {
        let mss = mss.max(1);
        Reno {
            mss,
            cwnd: super::initial_window(mss),
            ssthresh: usize::MAX,
            bytes_acked: 0,
        }
    }

    /// RFC 5681 eq. (4): ssthresh = max(FlightSize / 2, 2·SMSS).
    fn reduced_ssthresh(&self, bytes_in_flight: usize) -> usize {
        (bytes_in_flight / 2).max(2 * self.mss)
    }
}

/// Rescale a byte count kept in whole segments of `old` MSS to `new` MSS
/// (rounding the segment count up, so a window never collapses to zero).
pub(super) fn rescale(bytes: usize, old: usize, new: usize) -> usize {
    if bytes == usize::MAX {
        return bytes;
    }
    bytes.div_ceil(old).saturating_mul(new)
}

impl CongestionControl for Reno {
    fn name(&self) -> &'static str {
        "reno"
    }
    fn cwnd(&self) -> usize {
        self.cwnd
    }
    fn ssthresh(&self) -> usize {
        self.ssthresh
    }
    fn on_ack(
        &mut self,
        _now: Instant,
        bytes_acked: usize,
        _srtt: Option<Duration>,
        app_limited: bool,
    ) {
        if app_limited || bytes_acked == 0 {
            return;
        }
        if self.cwnd < self.ssthresh {
            // Slow start with appropriate byte counting (RFC 3465 §2.2, L = 2·SMSS).
            self.cwnd = self.cwnd.saturating_add(bytes_acked.min(2 * self.mss));
        } else {
            // Congestion avoidance (RFC 3465 §2.1): one SMSS per cwnd of bytes acked.
            self.bytes_acked = self.bytes_acked.saturating_add(bytes_acked);
            if self.bytes_acked >= self.cwnd {
                let steps = self.bytes_acked / self.cwnd;
                self.bytes_acked -= steps * self.cwnd;
                self.cwnd = self.cwnd.saturating_add(steps.saturating_mul(self.mss));
            }
        }
    }
    fn on_congestion_event(&mut self, _now: Instant, bytes_in_flight: usize) {
        self.ssthresh = self.reduced_ssthresh(bytes_in_flight);
        self.cwnd = self.ssthresh;
        self.bytes_acked = 0;
    }
    fn on_retransmission_timeout(&mut self, _now: Instant, bytes_in_flight: usize) {
        self.ssthresh = self.reduced_ssthresh(bytes_in_flight);
        self.cwnd = self.mss;
        self.bytes_acked = 0;
    }
    fn end_slow_start(&mut self) {
        self.ssthresh = self.cwnd;
    }
    /// Keeps cwnd and ssthresh the same number of segments (rounded up); a
    /// window still at the initial window becomes the new MSS's initial window.
    fn set_mss(&mut self, mss: usize) {
        let mss = mss.max(1);
        if mss == self.mss {
            return;
        }
        let old = self.mss;
        self.cwnd = if self.cwnd == super::initial_window(old) {
            super::initial_window(mss)
        } else {
            rescale(self.cwnd, old, mss)
        };
        if self.ssthresh != usize::MAX {
            self.ssthresh = rescale(self.ssthresh, old, mss).max(2 * mss);
        }
        self.bytes_acked = 0;
        self.mss = mss;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::cc::initial_window;

    const MSS: usize = 1000;
    const T: Instant = Instant::ZERO;

    fn ack(r: &mut Reno, n: usize) {
        r.on_ack(T, n, None, false);
    }

    #[test]
    fn initial_window_per_rfc6928() {
        let r = Reno::new(MSS);
        assert_eq!(r.cwnd(), 10 * MSS);
        assert_eq!(r.ssthresh(), usize::MAX);
        assert_eq!(Reno::new(1460).cwnd(), initial_window(1460));
        assert_eq!(Reno::new(1460).cwnd(), 14600);
        assert_eq!(Reno::new(9000).cwnd(), 18000);
    }

    #[test]
    fn slow_start_grows_by_bytes_acked() {
        let mut r = Reno::new(MSS);
        ack(&mut r, MSS);
        assert_eq!(r.cwnd(), 11 * MSS);
        ack(&mut r, 500);
        assert_eq!(r.cwnd(), 11 * MSS + 500);
    }

    #[test]
    fn abc_limits_slow_start_increase_to_two_mss_per_ack() {
        let mut r = Reno::new(MSS);
        ack(&mut r, 5 * MSS);
        assert_eq!(r.cwnd(), 12 * MSS);
    }

    #[test]
    fn slow_start_doubles_per_rtt() {
        let mut r = Reno::new(MSS);
        // One RTT: every segment of the window acked one at a time.
        for _ in 0..10 {
            ack(&mut r, MSS);
        }
        assert_eq!(r.cwnd(), 20 * MSS);
    }

    #[test]
    fn congestion_avoidance_adds_one_mss_per_cwnd_acked() {
        let mut r = Reno::new(MSS);
        r.on_congestion_event(T, 20 * MSS); // ssthresh = cwnd = 10 MSS
        assert_eq!(r.cwnd(), 10 * MSS);
        for _ in 0..9 {
            ack(&mut r, MSS);
        }
        assert_eq!(r.cwnd(), 10 * MSS, "no growth before a full cwnd is acked");
        ack(&mut r, MSS);
        assert_eq!(r.cwnd(), 11 * MSS);
        // The next step needs 11 MSS of acks.
        for _ in 0..10 {
            ack(&mut r, MSS);
        }
        assert_eq!(r.cwnd(), 11 * MSS);
        ack(&mut r, MSS);
        assert_eq!(r.cwnd(), 12 * MSS);
    }

    #[test]
    fn no_growth_when_app_limited() {
        let mut r = Reno::new(MSS);
        r.on_ack(T, MSS, None, true);
        assert_eq!(r.cwnd(), 10 * MSS);
        r.on_congestion_event(T, 20 * MSS);
        for _ in 0..100 {
            r.on_ack(T, MSS, None, true);
        }
        assert_eq!(r.cwnd(), 10 * MSS);
    }

    #[test]
    fn congestion_event_halves_flight_size() {
        let mut r = Reno::new(MSS);
        r.on_congestion_event(T, 30 * MSS);
        assert_eq!(r.ssthresh(), 15 * MSS);
        assert_eq!(r.cwnd(), 15 * MSS);
    }

    #[test]
    fn ssthresh_is_at_least_two_mss() {
        let mut r = Reno::new(MSS);
        r.on_congestion_event(T, MSS);
        assert_eq!(r.ssthresh(), 2 * MSS);
        assert_eq!(r.cwnd(), 2 * MSS);
        r.on_retransmission_timeout(T, 0);
        assert_eq!(r.ssthresh(), 2 * MSS);
    }

    #[test]
    fn rto_sets_loss_window_of_one_mss() {
        let mut r = Reno::new(MSS);
        r.on_retransmission_timeout(T, 40 * MSS);
        assert_eq!(r.cwnd(), MSS);
        assert_eq!(r.ssthresh(), 20 * MSS);
        // Then slow start again up to ssthresh.
        ack(&mut r, MSS);
        assert_eq!(r.cwnd(), 2 * MSS);
    }

    #[test]
    fn set_mss_rescales_in_segments() {
        let mut r = Reno::new(536);
        r.set_mss(1460);
        assert_eq!(r.cwnd(), initial_window(1460));
        r.on_congestion_event(T, 40 * 1460); // 20 segments
        r.set_mss(1000);
        assert_eq!(r.cwnd(), 20 * 1000);
        assert_eq!(r.ssthresh(), 20 * 1000);
        r.set_mss(0); // never panics; treated as 1
        assert_eq!(r.cwnd(), 20);
    }
}
