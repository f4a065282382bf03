//! CUBIC congestion control (RFC 9438): the cubic window function
//! W_cubic(t) = C·(t − K)^3 + W_max with C = 0.4 and β_cubic = 0.7, the
//! Reno-friendly region (§4.3), fast convergence (§4.7), and slow start below
//! ssthresh.

use super::CongestionControl;
use crate::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Cubic {
    mss: usize,
    cwnd: usize,
    ssthresh: usize,
}

impl Cubic {
    pub fn new(mss: usize, now: Instant) -> Cubic {
        let _ = (mss, now);
        todo!("Cubic::new")
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
        let _ = (now, bytes_acked, srtt, app_limited, self.mss);
        todo!()
    }
    fn on_congestion_event(&mut self, now: Instant, bytes_in_flight: usize) {
        let _ = (now, bytes_in_flight);
        todo!()
    }
    fn on_retransmission_timeout(&mut self, now: Instant, bytes_in_flight: usize) {
        let _ = (now, bytes_in_flight);
        todo!()
    }
    fn set_mss(&mut self, mss: usize) {
        let _ = mss;
        todo!()
    }
}
