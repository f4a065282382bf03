//! Per-nameserver state: smoothed RTT and a small failure detector.
//!
//! * RTT: an exponentially weighted moving average (α = 1/8, as TCP's SRTT in
//!   RFC 6298) of measured response times. A server never measured gets a small
//!   random initial estimate, so that unknown servers are tried early and in
//!   random order, and the fastest known server wins after that.
//! * A timeout doubles the server's estimate (capped), so a slow or dead server
//!   sinks in the order before it is marked down.
//! * Failure detector: `down_after` consecutive timeouts mark the server down
//!   for `down_for`; each further down-marking without a success in between
//!   doubles the period (capped at `max_down_for`). A down server is skipped
//!   while any other server is available. One answer resets it.

use crate::rng::Rng;
use crate::time::{Duration, Instant};
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    /// Initial RTT for an unknown server is uniform in this range.
    pub initial_rtt: (Duration, Duration),
    /// Cap for the RTT estimate (after timeouts).
    pub max_rtt: Duration,
    /// Consecutive timeouts that mark a server down.
    pub down_after: u32,
    /// The first down period.
    pub down_for: Duration,
    pub max_down_for: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            initial_rtt: (Duration::from_millis(5), Duration::from_millis(30)),
            max_rtt: Duration::from_secs(5),
            down_after: 3,
            down_for: Duration::from_secs(30),
            max_down_for: Duration::from_secs(900),
        }
    }
}

/// What is known about one server address.
#[derive(Clone, Debug)]
pub struct ServerStats {
    pub srtt: Duration,
    /// True once a real measurement replaced the random initial estimate.
    pub measured: bool,
    pub consecutive_timeouts: u32,
    pub down_until: Option<Instant>,
    /// How many times in a row the server was marked down (for backoff).
    pub down_count: u32,
    pub queries: u64,
    pub answers: u64,
    pub timeouts: u64,
}

/// The table of servers seen by a resolver.
#[derive(Debug)]
pub struct ServerTable {
    config: ServerConfig,
    map: HashMap<IpAddr, ServerStats>,
}

impl ServerTable {
    pub fn new(config: ServerConfig) -> ServerTable {
        ServerTable {
            config,
            map: HashMap::new(),
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    fn entry(&mut self, addr: IpAddr, rng: &mut Rng) -> &mut ServerStats {
        let (lo, hi) = self.config.initial_rtt;
        self.map.entry(addr).or_insert_with(|| ServerStats {
            srtt: Duration::from_micros(
                rng.gen_range(lo.as_micros() as u64, hi.as_micros() as u64 + 1),
            ),
            measured: false,
            consecutive_timeouts: 0,
            down_until: None,
            down_count: 0,
            queries: 0,
            answers: 0,
            timeouts: 0,
        })
    }

    pub fn get(&self, addr: IpAddr) -> Option<&ServerStats> {
        self.map.get(&addr)
    }

    /// The smoothed RTT (creating the random initial estimate if unknown).
    pub fn srtt(&mut self, addr: IpAddr, rng: &mut Rng) -> Duration {
        self.entry(addr, rng).srtt
    }

    /// True while the server is marked down.
    pub fn is_down(&self, addr: IpAddr, now: Instant) -> bool {
        self.map
            .get(&addr)
            .and_then(|s| s.down_until)
            .is_some_and(|t| now < t)
    }

    pub fn on_query(&mut self, addr: IpAddr, rng: &mut Rng) {
        self.entry(addr, rng).queries += 1;
    }

    /// An answer arrived after `rtt`.
    pub fn on_answer(&mut self, addr: IpAddr, rtt: Duration, rng: &mut Rng) {
        let s = self.entry(addr, rng);
        s.srtt = if s.measured {
            // srtt = 7/8 srtt + 1/8 rtt
            (s.srtt * 7 + rtt) / 8
        } else {
            rtt
        };
        s.measured = true;
        s.consecutive_timeouts = 0;
        s.down_until = None;
        s.down_count = 0;
        s.answers += 1;
    }

    /// A query timed out (or the server failed to answer usefully).
    pub fn on_timeout(&mut self, addr: IpAddr, now: Instant, rng: &mut Rng) {
        let cfg = self.config;
        let s = self.entry(addr, rng);
        s.timeouts += 1;
        s.consecutive_timeouts += 1;
        s.srtt = (s.srtt * 2).min(cfg.max_rtt);
        if s.consecutive_timeouts >= cfg.down_after {
            let factor = 1u32 << s.down_count.min(16);
            let period = (cfg.down_for * factor).min(cfg.max_down_for);
            s.down_until = Some(now + period);
            s.down_count += 1;
            s.consecutive_timeouts = 0;
        }
    }

    /// Order `addrs` for trying: servers that are up first, fastest first;
    /// down servers are left out.
    pub fn order(&mut self, addrs: &[IpAddr], now: Instant, rng: &mut Rng) -> Vec<IpAddr> {
        let up: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|a| !self.is_down(*a, now))
            .collect();
        let mut v: Vec<(Duration, IpAddr)> =
            up.into_iter().map(|a| (self.srtt(a, rng), a)).collect();
        v.sort();
        v.dedup_by_key(|x| x.1);
        v.into_iter().map(|(_, a)| a).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn unknown_server_gets_small_random_initial_rtt() {
        let mut rng = Rng::new(7);
        let mut t = ServerTable::new(ServerConfig::default());
        let mut seen = std::collections::HashSet::new();
        for i in 0..20 {
            let r = t.srtt(ip(i), &mut rng);
            assert!(
                r >= Duration::from_millis(5) && r <= Duration::from_millis(30),
                "{r:?}"
            );
            seen.insert(r);
        }
        assert!(seen.len() > 10, "initial RTTs should be random");
    }

    #[test]
    fn srtt_is_smoothed_after_the_first_measurement() {
        let mut rng = Rng::new(1);
        let mut t = ServerTable::new(ServerConfig::default());
        t.on_answer(ip(1), Duration::from_millis(80), &mut rng);
        assert_eq!(t.srtt(ip(1), &mut rng), Duration::from_millis(80));
        t.on_answer(ip(1), Duration::from_millis(0), &mut rng);
        assert_eq!(t.srtt(ip(1), &mut rng), Duration::from_millis(70));
    }

    #[test]
    fn fastest_server_is_preferred() {
        let mut rng = Rng::new(1);
        let mut t = ServerTable::new(ServerConfig::default());
        t.on_answer(ip(1), Duration::from_millis(50), &mut rng);
        t.on_answer(ip(2), Duration::from_millis(2), &mut rng);
        t.on_answer(ip(3), Duration::from_millis(20), &mut rng);
        assert_eq!(
            t.order(&[ip(1), ip(2), ip(3)], Instant::ZERO, &mut rng),
            vec![ip(2), ip(3), ip(1)]
        );
    }

    #[test]
    fn consecutive_timeouts_mark_down_for_a_backoff_period() {
        let mut rng = Rng::new(1);
        let mut t = ServerTable::new(ServerConfig::default());
        let now = Instant::from_secs(100);
        t.on_timeout(ip(1), now, &mut rng);
        t.on_timeout(ip(1), now, &mut rng);
        assert!(!t.is_down(ip(1), now));
        t.on_timeout(ip(1), now, &mut rng);
        assert!(t.is_down(ip(1), now));
        assert!(t.is_down(ip(1), now + Duration::from_secs(29)));
        assert!(!t.is_down(ip(1), now + Duration::from_secs(30)));
        assert_eq!(t.order(&[ip(1), ip(2)], now, &mut rng), vec![ip(2)]);
        // Marked down again without an answer in between: twice as long.
        let later = now + Duration::from_secs(30);
        for _ in 0..3 {
            t.on_timeout(ip(1), later, &mut rng);
        }
        assert!(t.is_down(ip(1), later + Duration::from_secs(59)));
        assert!(!t.is_down(ip(1), later + Duration::from_secs(60)));
    }

    #[test]
    fn an_answer_resets_the_failure_detector() {
        let mut rng = Rng::new(1);
        let mut t = ServerTable::new(ServerConfig::default());
        let now = Instant::ZERO;
        t.on_timeout(ip(1), now, &mut rng);
        t.on_timeout(ip(1), now, &mut rng);
        t.on_answer(ip(1), Duration::from_millis(1), &mut rng);
        t.on_timeout(ip(1), now, &mut rng);
        t.on_timeout(ip(1), now, &mut rng);
        assert!(!t.is_down(ip(1), now));
    }

    #[test]
    fn a_timeout_pushes_the_server_back_in_the_order() {
        let mut rng = Rng::new(1);
        let mut t = ServerTable::new(ServerConfig::default());
        t.on_answer(ip(1), Duration::from_millis(10), &mut rng);
        t.on_answer(ip(2), Duration::from_millis(15), &mut rng);
        t.on_timeout(ip(1), Instant::ZERO, &mut rng);
        assert_eq!(
            t.order(&[ip(1), ip(2)], Instant::ZERO, &mut rng),
            vec![ip(2), ip(1)]
        );
    }
}
