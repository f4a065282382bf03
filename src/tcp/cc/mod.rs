//! Congestion control behind one small trait, a file per algorithm
//! (quinn-proto's shape): [`reno`] (RFC 5681) and [`cubic`] (RFC 9438).
//!
//! The connection owns loss detection and the fast-recovery state (RFC 6582
//! NewReno: recover point, partial ACKs, window inflation); an algorithm
//! only decides the window: how it grows on ACKs and how it shrinks on a
//! congestion event or a retransmission timeout.

pub mod cubic;
pub mod hystart;
pub mod reno;

use crate::time::{Duration, Instant};
use std::fmt;

/// Which algorithm a connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CcAlgorithm {
    Reno,
    #[default]
    Cubic,
}

impl std::str::FromStr for CcAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "reno" | "newreno" => Ok(CcAlgorithm::Reno),
            "cubic" => Ok(CcAlgorithm::Cubic),
            other => Err(format!(
                "unknown congestion control {other:?} (expected reno or cubic)"
            )),
        }
    }
}

pub trait CongestionControl: fmt::Debug + Send {
    fn name(&self) -> &'static str;

    /// Congestion window in bytes.
    fn cwnd(&self) -> usize;

    /// Slow-start threshold in bytes (`usize::MAX` until the first congestion event).
    fn ssthresh(&self) -> usize;

    /// New data was cumulatively acknowledged outside fast recovery: grow the
    /// window (slow start below ssthresh, congestion avoidance above).
    /// `srtt` is the current smoothed RTT if known (CUBIC uses it for its
    /// Reno-friendly region); `app_limited` is true when the sender did not
    /// fill the window, in which case the window must not grow (RFC 7661 spirit).
    fn on_ack(
        &mut self,
        now: Instant,
        bytes_acked: usize,
        srtt: Option<Duration>,
        app_limited: bool,
    );

    /// Loss detected by duplicate ACKs (entering fast recovery): set ssthresh
    /// and cwnd per the algorithm (Reno: ssthresh = max(flight/2, 2·MSS),
    /// cwnd = ssthresh; CUBIC: multiplicative decrease by β = 0.7 and record W_max).
    fn on_congestion_event(&mut self, now: Instant, bytes_in_flight: usize);

    /// The retransmission timer expired: ssthresh as for a congestion event,
    /// cwnd = one MSS (RFC 5681 §3.1 loss window).
    fn on_retransmission_timeout(&mut self, now: Instant, bytes_in_flight: usize);

    /// The MSS changed (after the handshake negotiated it).
    fn set_mss(&mut self, mss: usize);

    /// End slow start without a loss (HyStart++, RFC 9406 §4.2): ssthresh
    /// = cwnd, so the next ACKs grow the window by congestion avoidance.
    fn end_slow_start(&mut self);
}

/// Build a congestion controller. The initial window follows RFC 6928
/// (min(10·MSS, max(2·MSS, 14600))).
pub fn new_controller(alg: CcAlgorithm, mss: usize, now: Instant) -> Box<dyn CongestionControl> {
    match alg {
        CcAlgorithm::Reno => Box::new(reno::Reno::new(mss)),
        CcAlgorithm::Cubic => Box::new(cubic::Cubic::new(mss, now)),
    }
}

/// RFC 6928 initial window.
pub fn initial_window(mss: usize) -> usize {
    (10 * mss).min((2 * mss).max(14600))
}
