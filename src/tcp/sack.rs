//! The sender's SACK scoreboard and the rules of RFC 6675 that read it:
//! `Update()` (record SACK blocks above SND.UNA), `IsLost()` with DupThresh,
//! `SetPipe()` (the pipe estimate of bytes in the network) and `NextSeg()`
//! rules 1–4 (what to send next during loss recovery).
//!
//! The scoreboard keeps SACKed ranges as sorted, disjoint, half-open
//! sequence ranges `[left, right)`, all above HighACK (SND.UNA). Bytes are
//! the unit throughout: a hole between two SACKed ranges has the same
//! IsLost() answer for every byte in it (the SACKed bytes and ranges above
//! are the same), so the rules work hole by hole rather than byte by byte.
//!
//! Sans-IO and allocation-free after construction: at most
//! [`MAX_RANGES`] ranges are kept (more than the 3–4 blocks a peer reports
//! per ACK, to remember earlier ones); beyond that, the new block that
//! does not fit is forgotten, which only makes the sender more
//! conservative (it counts those bytes as still in flight).

use super::seq::SeqNum;

/// RFC 6675 §2: DupThresh, the number of duplicate ACKs (or discontiguous
/// SACKed ranges above a hole) that mark it lost.
pub const DUP_THRESH: usize = 3;

/// SACKed ranges remembered.
pub const MAX_RANGES: usize = 32;

/// What RFC 6675 `NextSeg()` chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextSeg {
    /// Rule 1 (a lost hole) or rule 3 (an unSACKed hole not yet known
    /// lost): retransmit `len` bytes at `seq` (the caller caps at SMSS).
    Retransmit { seq: SeqNum, len: usize },
    /// Rule 2: send new data at SND.NXT if the window allows (the caller checks).
    NewData,
    /// Rule 4: the rescue retransmission of the highest unSACKed segment
    /// (`len` bytes at `seq`), once per recovery.
    Rescue { seq: SeqNum, len: usize },
}

#[derive(Clone, Debug)]
pub struct Scoreboard {
    /// Sorted, disjoint, non-adjacent SACKed ranges, all above SND.UNA.
    ranges: Vec<(SeqNum, SeqNum)>,
    /// HighRxt: highest sequence number (exclusive) retransmitted in this recovery.
    pub high_rxt: SeqNum,
    /// RescueRxt: the RecoveryPoint of the recovery that sent a rescue, if any.
    pub rescue_rxt: Option<SeqNum>,
    /// Every unSACKed byte below this is lost, whatever IsLost() says
    /// (set when a tail loss probe sent later was delivered: RFC 8985's
    /// rule that a segment sent before a delivered one is lost).
    pub lost_below: Option<SeqNum>,
}

impl Scoreboard {
    pub fn new(snd_una: SeqNum) -> Scoreboard {
        Scoreboard {
            ranges: Vec::with_capacity(MAX_RANGES),
            high_rxt: snd_una,
            rescue_rxt: None,
            lost_below: None,
        }
    }

    /// The SACKed ranges, lowest first.
    pub fn ranges(&self) -> &[(SeqNum, SeqNum)] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Forget every SACKed range (RFC 2018 §8 after a retransmission
    /// timeout: the receiver may have reneged).
    pub fn clear(&mut self) {
        self.ranges.clear();
        self.lost_below = None;
    }

    /// Highest SACKed sequence number (exclusive), if any.
    pub fn highest_sacked(&self) -> Option<SeqNum> {
        self.ranges.last().map(|r| r.1)
    }

    /// True if `seq` lies in a SACKed range.
    pub fn is_sacked(&self, seq: SeqNum) -> bool {
        self.ranges.iter().any(|&(l, r)| seq.in_range(l, r))
    }

    /// The SACKed range containing `seq`, if any.
    pub fn range_at(&self, seq: SeqNum) -> Option<(SeqNum, SeqNum)> {
        self.ranges
            .iter()
            .copied()
            .find(|&(l, r)| seq.in_range(l, r))
    }

    /// The first SACKed range starting above `seq` (its left edge).
    pub fn next_sacked_after(&self, seq: SeqNum) -> Option<SeqNum> {
        self.ranges.iter().map(|r| r.0).find(|&l| l > seq)
    }

    /// RFC 6675 `Update()`: record one SACK block. Blocks are clipped to
    /// `[snd_una, snd_max)`; blocks wholly outside are ignored (RFC 2018:
    /// a receiver cannot SACK what was never sent). Returns true if the
    /// block SACKed a byte not SACKed before.
    pub fn add(&mut self, snd_una: SeqNum, snd_max: SeqNum, block: (SeqNum, SeqNum)) -> bool {
        let (mut l, mut r) = block;
        if r <= l || r <= snd_una || l >= snd_max || r > snd_max || r - l > 1 << 30 {
            return false;
        }
        if l < snd_una {
            l = snd_una;
        }
        // Already covered?
        if self.ranges.iter().any(|&(a, b)| a <= l && r <= b) {
            return false;
        }
        // Merge with every range it touches or overlaps.
        let mut i = 0;
        while i < self.ranges.len() {
            let (a, b) = self.ranges[i];
            if a <= r && l <= b {
                l = if a < l { a } else { l };
                r = if b > r { b } else { r };
                self.ranges.remove(i);
            } else {
                i += 1;
            }
        }
        let at = self
            .ranges
            .iter()
            .position(|&(a, _)| a > l)
            .unwrap_or(self.ranges.len());
        if self.ranges.len() >= MAX_RANGES {
            // Full: keep the lowest ranges (they decide what is lost first).
            if at >= MAX_RANGES {
                return false;
            }
            self.ranges.pop();
        }
        self.ranges.insert(at, (l, r));
        true
    }

    /// SND.UNA advanced: drop what the cumulative ACK covers.
    pub fn advance(&mut self, snd_una: SeqNum) {
        self.ranges.retain(|&(_, r)| r > snd_una);
        if let Some(first) = self.ranges.first_mut() {
            if first.0 < snd_una {
                first.0 = snd_una;
            }
        }
        if self.high_rxt < snd_una {
            self.high_rxt = snd_una;
        }
        if self.lost_below.is_some_and(|l| l <= snd_una) {
            self.lost_below = None;
        }
    }

    /// SACKed bytes above `seq` exceed (DupThresh − 1)·SMSS: enough data
    /// sent after `seq` has arrived to call whatever was sent before it lost.
    pub fn sacked_beyond(&self, seq: SeqNum, smss: usize) -> bool {
        self.sacked_above(seq).0 > (DUP_THRESH - 1) * smss
    }

    /// SACKed bytes and SACKed ranges above (at or beyond) `seq`.
    fn sacked_above(&self, seq: SeqNum) -> (usize, usize) {
        let mut bytes = 0;
        let mut n = 0;
        for &(l, r) in &self.ranges {
            if r > seq {
                n += 1;
                bytes += r - if l > seq { l } else { seq };
            }
        }
        (bytes, n)
    }

    /// RFC 6675 `IsLost(seq)`: DupThresh discontiguous SACKed ranges above
    /// `seq`, or more than (DupThresh − 1)·SMSS SACKed bytes above it.
    pub fn is_lost(&self, seq: SeqNum, smss: usize) -> bool {
        if self.lost_below.is_some_and(|l| seq < l) {
            return true;
        }
        let (bytes, n) = self.sacked_above(seq);
        n >= DUP_THRESH || bytes > (DUP_THRESH - 1) * smss
    }

    /// The holes (unSACKed ranges) in `[snd_una, end)`, lowest first.
    fn holes(&self, snd_una: SeqNum, end: SeqNum) -> impl Iterator<Item = (SeqNum, SeqNum)> + '_ {
        let mut at = snd_una;
        let mut i = 0;
        std::iter::from_fn(move || {
            while at < end {
                match self.ranges.get(i) {
                    Some(&(l, r)) if l <= at => {
                        if r > at {
                            at = r;
                        }
                        i += 1;
                    }
                    Some(&(l, _)) => {
                        let hole_end = if l < end { l } else { end };
                        let hole = (at, hole_end);
                        at = hole_end;
                        return Some(hole);
                    }
                    None => {
                        let hole = (at, end);
                        at = end;
                        return Some(hole);
                    }
                }
            }
            None
        })
    }

    /// RFC 6675 `SetPipe()`: bytes presumed in the network. Every unSACKed
    /// byte in `[snd_una, snd_max)` counts once if it is not lost, and once
    /// more if it was retransmitted (at or below HighRxt).
    pub fn pipe(&self, snd_una: SeqNum, snd_max: SeqNum, smss: usize) -> usize {
        let mut pipe = 0;
        for (a, b) in self.holes(snd_una, snd_max) {
            if !self.is_lost(a, smss) {
                pipe += b - a;
            }
            if self.high_rxt > a {
                let rx_end = if self.high_rxt < b { self.high_rxt } else { b };
                pipe += rx_end - a;
            }
        }
        pipe
    }

    /// RFC 6675 `NextSeg()` rules 1–4. `new_data` says whether unsent data
    /// exists and the receive window admits some of it. The caller sets
    /// RescueRxt to RecoveryPoint when it sends a rescue.
    pub fn next_seg(
        &self,
        snd_una: SeqNum,
        snd_max: SeqNum,
        smss: usize,
        new_data: bool,
    ) -> Option<NextSeg> {
        // With no SACK information left (a partial ACK covered it all),
        // rules 1 and 3 have no candidates; rules 2 and 4 still apply.
        let high_sacked = self.highest_sacked().unwrap_or(snd_una);
        let start = if self.high_rxt > snd_una {
            self.high_rxt
        } else {
            snd_una
        };
        // Rule 1: the smallest unSACKed S2 > HighRxt, below the highest
        // SACKed byte, with IsLost(S2).
        let mut rule3 = None;
        for (a, b) in self.holes(start, high_sacked) {
            if self.is_lost(a, smss) {
                return Some(NextSeg::Retransmit {
                    seq: a,
                    len: (b - a).min(smss),
                });
            }
            if rule3.is_none() {
                rule3 = Some((a, (b - a).min(smss)));
            }
        }
        // Rule 2: new data.
        if new_data {
            return Some(NextSeg::NewData);
        }
        // Rule 3: an unSACKed hole that is not (yet) judged lost.
        if let Some((seq, len)) = rule3 {
            return Some(NextSeg::Retransmit { seq, len });
        }
        // Rule 4: rescue retransmission, once per recovery (HighACK >
        // RescueRxt or RescueRxt undefined): the highest unSACKed segment.
        // (Refinement: only if that segment was not retransmitted already,
        // i.e. lies above HighRxt; resending the hole just repaired helps nobody.)
        if self.rescue_rxt.is_none_or(|r| snd_una > r) {
            let last = self.holes(snd_una, snd_max).last()?;
            if last.1 <= self.high_rxt {
                return None;
            }
            let len = (last.1 - last.0).min(smss);
            return Some(NextSeg::Rescue {
                seq: last.1 - len,
                len,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 100;

    fn s(n: u32) -> SeqNum {
        SeqNum(n)
    }

    /// Scoreboard over [1000, 2000) with the given SACKed blocks.
    fn board(blocks: &[(u32, u32)]) -> Scoreboard {
        let mut b = Scoreboard::new(s(1000));
        for &(l, r) in blocks {
            b.add(s(1000), s(2000), (s(l), s(r)));
        }
        b
    }

    #[test]
    fn rfc6675_update_merges_and_orders_blocks() {
        let b = board(&[(1500, 1600), (1200, 1300), (1300, 1400), (1550, 1700)]);
        assert_eq!(b.ranges(), &[(s(1200), s(1400)), (s(1500), s(1700))]);
    }

    #[test]
    fn rfc6675_update_reports_only_new_information() {
        let mut b = board(&[(1200, 1400)]);
        assert!(!b.add(s(1000), s(2000), (s(1250), s(1350))));
        assert!(b.add(s(1000), s(2000), (s(1350), s(1450))));
    }

    #[test]
    fn rfc2018_blocks_outside_what_was_sent_are_ignored() {
        let mut b = board(&[]);
        assert!(!b.add(s(1000), s(2000), (s(900), s(1000))), "below SND.UNA");
        assert!(
            !b.add(s(1000), s(2000), (s(1900), s(2100))),
            "beyond SND.MAX"
        );
        assert!(!b.add(s(1000), s(2000), (s(1500), s(1500))), "empty");
        assert!(b.is_empty());
    }

    #[test]
    fn rfc6675_cumulative_ack_drops_covered_ranges() {
        let mut b = board(&[(1200, 1300), (1500, 1600)]);
        b.advance(s(1250));
        assert_eq!(b.ranges(), &[(s(1250), s(1300)), (s(1500), s(1600))]);
        b.advance(s(1600));
        assert!(b.is_empty());
    }

    #[test]
    fn rfc6675_is_lost_by_sacked_bytes_above() {
        // 201 bytes SACKed above 1000: more than (3-1)·MSS.
        let b = board(&[(1100, 1301)]);
        assert!(b.is_lost(s(1000), MSS));
        let b = board(&[(1100, 1300)]);
        assert!(!b.is_lost(s(1000), MSS), "exactly 2·MSS is not more than");
    }

    #[test]
    fn rfc6675_is_lost_by_dupthresh_discontiguous_ranges() {
        let b = board(&[(1100, 1110), (1200, 1210), (1300, 1310)]);
        assert!(b.is_lost(s(1000), MSS));
        assert!(!b.is_lost(s(1150), MSS), "only two ranges above");
    }

    #[test]
    fn rfc6675_pipe_counts_unsacked_not_lost_and_retransmitted_bytes() {
        // Holes: [1000,1100) lost (300 SACKed above), [1400,1500) not lost
        // (100 above), [1600,2000) tail not lost.
        let mut b = board(&[(1100, 1400), (1500, 1600)]);
        assert_eq!(b.pipe(s(1000), s(2000), MSS), 100 + 400);
        // Retransmitting the lost hole adds it back once.
        b.high_rxt = s(1100);
        assert_eq!(b.pipe(s(1000), s(2000), MSS), 100 + 400 + 100);
    }

    #[test]
    fn rfc6675_next_seg_rule1_lost_holes_first_then_high_rxt_moves_on() {
        let mut b = board(&[(1100, 1200), (1300, 1400), (1500, 1600)]);
        // [1000,1100) and [1200,1300) have 3 ranges / 2 ranges above.
        assert_eq!(
            b.next_seg(s(1000), s(2000), MSS, true),
            Some(NextSeg::Retransmit {
                seq: s(1000),
                len: 100
            })
        );
        b.high_rxt = s(1100);
        // [1200,1300): two ranges (200 bytes) above: not lost: rule 2 (new data) wins.
        assert_eq!(
            b.next_seg(s(1000), s(2000), MSS, true),
            Some(NextSeg::NewData)
        );
    }

    #[test]
    fn rfc6675_next_seg_rule3_unsacked_hole_when_no_new_data() {
        let mut b = board(&[(1100, 1200), (1300, 1400), (1500, 1600)]);
        b.high_rxt = s(1100);
        assert_eq!(
            b.next_seg(s(1000), s(2000), MSS, false),
            Some(NextSeg::Retransmit {
                seq: s(1200),
                len: 100
            })
        );
    }

    #[test]
    fn rfc6675_next_seg_rule4_rescue_once_per_recovery() {
        let mut b = board(&[(1100, 1200)]);
        b.high_rxt = s(1200);
        // Nothing lost or unSACKed below the highest SACK beyond HighRxt, no new data:
        // rescue the highest unSACKed segment.
        assert_eq!(
            b.next_seg(s(1000), s(2000), MSS, false),
            Some(NextSeg::Rescue {
                seq: s(1900),
                len: 100
            })
        );
        b.rescue_rxt = Some(s(2000));
        assert_eq!(b.next_seg(s(1000), s(2000), MSS, false), None);
    }

    #[test]
    fn rfc6675_next_seg_rescue_even_when_no_sack_information_is_left() {
        let mut b = board(&[]);
        b.rescue_rxt = Some(s(1099));
        assert_eq!(
            b.next_seg(s(1500), s(2000), MSS, false),
            Some(NextSeg::Rescue {
                seq: s(1900),
                len: 100
            })
        );
        assert_eq!(
            b.next_seg(s(1500), s(2000), MSS, true),
            Some(NextSeg::NewData)
        );
    }

    #[test]
    fn rfc6675_scoreboard_is_bounded() {
        let mut b = Scoreboard::new(s(0));
        for i in 0..(MAX_RANGES as u32 + 10) {
            b.add(s(0), s(100_000), (s(10 + i * 20), s(20 + i * 20)));
        }
        assert_eq!(b.ranges().len(), MAX_RANGES);
        assert_eq!(b.ranges()[0], (s(10), s(20)));
    }
}
