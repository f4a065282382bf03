//! HyStart++ (RFC 9406): leave slow start before it overflows a bottleneck
//! queue. Each round trip (a window of data: from an ACK until one covers
//! the SND.NXT of that moment) keeps its smallest RTT sample; once the
//! round has [`N_RTT_SAMPLE`] samples and its minimum is a threshold above
//! the last round's, the queue is filling: growth slows to a quarter
//! (Conservative Slow Start) and, unless the RTT falls back, slow start
//! ends after [`CSS_ROUNDS`] such rounds with ssthresh = cwnd.
//!
//! Sans-IO and independent of the algorithm: the connection asks
//! [`HyStart::on_ack`] what to do with each ACK of its initial slow start.

use crate::tcp::seq::SeqNum;
use crate::time::Duration;

/// RFC 9406 §4.3 constants.
pub const MIN_RTT_THRESH: Duration = Duration::from_millis(4);
pub const MAX_RTT_THRESH: Duration = Duration::from_millis(16);
pub const MIN_RTT_DIVISOR: u32 = 8;
pub const N_RTT_SAMPLE: u32 = 8;
pub const CSS_GROWTH_DIVISOR: usize = 4;
pub const CSS_ROUNDS: u32 = 5;

/// What the window should do for one ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Grow as slow start does.
    SlowStart,
    /// Grow by a quarter of what slow start would (`bytes / CSS_GROWTH_DIVISOR`).
    Conservative,
    /// Slow start is over: ssthresh = cwnd, congestion avoidance from now.
    Exit,
}

#[derive(Clone, Debug, Default)]
pub struct HyStart {
    /// SND.NXT when this round began; an ACK at or above it ends the round.
    window_end: Option<SeqNum>,
    last_round_min: Option<Duration>,
    round_min: Option<Duration>,
    samples: u32,
    /// In Conservative Slow Start: the round minimum that started it.
    css_baseline: Option<Duration>,
    css_rounds: u32,
    /// Slow start has ended (by HyStart++ or by loss): no more advice.
    done: bool,
    css_entries: u32,
    exits: u32,
}

impl HyStart {
    pub fn new() -> HyStart {
        HyStart::default()
    }

    /// Times Conservative Slow Start began.
    pub fn css_entries(&self) -> u32 {
        self.css_entries
    }

    /// 1 if HyStart++ ended slow start (before any loss), else 0.
    pub fn exits(&self) -> u32 {
        self.exits
    }

    /// True while in Conservative Slow Start.
    pub fn in_css(&self) -> bool {
        self.css_baseline.is_some()
    }

    /// Slow start ended another way (a congestion event or a timeout):
    /// RFC 9406 §4.2 applies HyStart++ to the initial slow start only.
    pub fn stop(&mut self) {
        self.done = true;
        self.css_baseline = None;
    }

    /// One ACK of slow start acknowledging up to `ack`, with SND.NXT at
    /// `snd_nxt` and `rtt` the sample it gave, if any.
    pub fn on_ack(&mut self, ack: SeqNum, snd_nxt: SeqNum, rtt: Option<Duration>) -> Phase {
        if self.done {
            return Phase::SlowStart;
        }
        let end = *self.window_end.get_or_insert(snd_nxt);
        if let Some(r) = rtt {
            self.round_min = Some(self.round_min.map_or(r, |m| m.min(r)));
            self.samples += 1;
        }
        if self.samples >= N_RTT_SAMPLE {
            if let (Some(cur), Some(last)) = (self.round_min, self.last_round_min) {
                match self.css_baseline {
                    None => {
                        let thresh = (last / MIN_RTT_DIVISOR).clamp(MIN_RTT_THRESH, MAX_RTT_THRESH);
                        if cur >= last + thresh {
                            self.css_baseline = Some(cur);
                            self.css_rounds = 0;
                            self.css_entries += 1;
                        }
                    }
                    // §4.2: the RTT fell back below where CSS began: the
                    // rise was not the queue; resume slow start.
                    Some(base) if cur < base => self.css_baseline = None,
                    Some(_) => {}
                }
            }
        }
        if ack >= end {
            self.last_round_min = self.round_min.take();
            self.samples = 0;
            self.window_end = Some(snd_nxt);
            if self.in_css() {
                self.css_rounds += 1;
                if self.css_rounds >= CSS_ROUNDS {
                    self.stop();
                    self.exits += 1;
                    return Phase::Exit;
                }
            }
        }
        if self.in_css() {
            Phase::Conservative
        } else {
            Phase::SlowStart
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feed `rounds` rounds of `per_round` ACKs of 1000 bytes each, the RTT
    /// of round i given by `rtt(i)`, with one round of data in flight (the
    /// data sent during round i is acknowledged in round i + 1); returns
    /// the phase of every ACK.
    fn run(
        h: &mut HyStart,
        rounds: u32,
        per_round: u32,
        rtt: impl Fn(u32) -> Duration,
    ) -> Vec<Phase> {
        let mut out = Vec::new();
        for i in 0..rounds {
            for k in 1..=per_round {
                let ack = (i * per_round + k) * 1000;
                let snd_nxt = if i == 0 && k == 1 {
                    per_round * 1000
                } else {
                    (i + 2) * per_round * 1000
                };
                out.push(h.on_ack(SeqNum(ack), SeqNum(snd_nxt), Some(rtt(i))));
            }
        }
        out
    }

    #[test]
    fn rfc9406_steady_rtt_stays_in_slow_start() {
        let mut h = HyStart::new();
        let phases = run(&mut h, 10, 10, |_| ms(20));
        assert!(phases.iter().all(|&p| p == Phase::SlowStart));
    }

    #[test]
    fn rfc9406_rtt_rise_enters_css_then_exits_after_css_rounds() {
        let mut h = HyStart::new();
        // 20 ms for three rounds, then the queue adds 5 ms (>= 20/8, >= 4 ms).
        let phases = run(&mut h, 12, 10, |i| if i < 3 { ms(20) } else { ms(25) });
        let first_css = phases
            .iter()
            .position(|&p| p == Phase::Conservative)
            .expect("CSS");
        // The 8th sample of the first slow round trips the threshold.
        assert_eq!(first_css, 3 * 10 + 7);
        let exit = phases.iter().position(|&p| p == Phase::Exit).expect("exit");
        assert!(exit > first_css);
        assert_eq!(exit, 7 * 10 + 9, "the end of the fifth CSS round");
        assert_eq!(phases.iter().filter(|&&p| p == Phase::Exit).count(), 1);
        assert!(
            phases[exit + 1..].iter().all(|&p| p == Phase::SlowStart),
            "no advice after exit"
        );
    }

    #[test]
    fn rfc9406_small_rise_below_the_4ms_floor_is_not_a_queue() {
        let mut h = HyStart::new();
        // 1 ms RTT (a TUN): +3 ms is below MIN_RTT_THRESH.
        let phases = run(&mut h, 10, 10, |i| if i < 3 { ms(1) } else { ms(4) });
        assert!(phases.iter().all(|&p| p == Phase::SlowStart));
    }

    #[test]
    fn rfc9406_rtt_falling_back_leaves_css() {
        let mut h = HyStart::new();
        let phases = run(&mut h, 8, 10, |i| match i {
            0..=2 => ms(20),
            3 => ms(30),
            _ => ms(20),
        });
        let css = phases
            .iter()
            .position(|&p| p == Phase::Conservative)
            .expect("CSS");
        assert!(css < 40);
        assert_eq!(
            *phases.last().unwrap(),
            Phase::SlowStart,
            "back to slow start"
        );
        assert!(!phases.contains(&Phase::Exit));
    }

    #[test]
    fn rfc9406_too_few_samples_decide_nothing() {
        let mut h = HyStart::new();
        let phases = run(&mut h, 10, 5, |i| if i < 3 { ms(20) } else { ms(40) });
        assert!(phases.iter().all(|&p| p == Phase::SlowStart));
    }
}
