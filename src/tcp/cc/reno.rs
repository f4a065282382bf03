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
        let _ = mss;
        todo!("Reno::new")
    }
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
        now: Instant,
        bytes_acked: usize,
        srtt: Option<Duration>,
        app_limited: bool,
    ) {
        let _ = (
            now,
            bytes_acked,
            srtt,
            app_limited,
            self.bytes_acked,
            self.mss,
        );
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
