//! Out-of-order segment tracking for the receive side.
//!
//! Offsets are relative to the first byte not yet received in order (RCV.NXT).
//! The assembler records which ranges beyond it have arrived; the receive
//! buffer holds the bytes. The number of ranges is bounded so a hostile peer
//! cannot make it grow without limit: a segment that would need more is
//! refused (the caller drops it; the sender retransmits).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyHoles;

#[derive(Debug, Clone)]
pub struct Assembler {
    /// Sorted, non-overlapping, non-adjacent (start, end) ranges, end exclusive.
    ranges: Vec<(usize, usize)>,
    max_ranges: usize,
}

impl Assembler {
    pub fn new(max_ranges: usize) -> Assembler {
        Assembler {
            ranges: Vec::with_capacity(max_ranges),
            max_ranges,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of disjoint ranges held (at most the limit given to `new`).
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Forget everything (for example when the connection resets).
    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    /// Record that bytes `offset..offset+len` arrived. Overlaps and adjacency
    /// merge. Err if that would exceed the range limit (nothing is changed then).
    /// A zero-length add changes nothing and succeeds.
    pub fn add(&mut self, offset: usize, len: usize) -> Result<(), TooManyHoles> {
        if len == 0 {
            return Ok(());
        }
        let end = offset.saturating_add(len);
        // First range that ends at or after `offset` (could touch or overlap us).
        let first = self.ranges.partition_point(|&(_, e)| e < offset);
        // One past the last range that starts at or before `end`.
        let last = self.ranges.partition_point(|&(s, _)| s <= end);
        if first >= last {
            // Touches nothing: insert a new range at `first`.
            if self.ranges.len() >= self.max_ranges {
                return Err(TooManyHoles);
            }
            self.ranges.insert(first, (offset, end));
        } else {
            let start = offset.min(self.ranges[first].0);
            let stop = end.max(self.ranges[last - 1].1);
            self.ranges[first] = (start, stop);
            self.ranges.drain(first + 1..last);
        }
        Ok(())
    }

    /// If a range starts at offset 0, remove it and return its length; shift
    /// all other ranges down by that amount. Otherwise return 0.
    /// Call after RCV.NXT advanced by in-order data of length `n` via
    /// [`Assembler::advance`] first.
    pub fn remove_front(&mut self) -> usize {
        match self.ranges.first() {
            Some(&(0, end)) => {
                self.ranges.remove(0);
                for r in &mut self.ranges {
                    r.0 -= end;
                    r.1 -= end;
                }
                end
            }
            _ => 0,
        }
    }

    /// RCV.NXT moved forward by `n` bytes of in-order data: shift all ranges
    /// down by `n`, dropping (parts of) ranges that fall below zero.
    pub fn advance(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.ranges.retain_mut(|r| {
            if r.1 <= n {
                return false;
            }
            r.0 = r.0.saturating_sub(n);
            r.1 -= n;
            true
        });
    }

    /// Ranges currently held, in order (for SACK blocks in issue 6, and for tests).
    pub fn ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.ranges.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn ranges(a: &Assembler) -> Vec<(usize, usize)> {
        a.ranges().collect()
    }

    #[test]
    fn add_disjoint_keeps_order() {
        let mut a = Assembler::new(4);
        a.add(10, 2).unwrap();
        a.add(2, 3).unwrap();
        a.add(20, 1).unwrap();
        assert_eq!(ranges(&a), [(2, 5), (10, 12), (20, 21)]);
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn add_merges_overlaps() {
        let mut a = Assembler::new(4);
        a.add(2, 4).unwrap();
        a.add(10, 4).unwrap();
        a.add(4, 8).unwrap();
        assert_eq!(ranges(&a), [(2, 14)]);
        a.add(3, 2).unwrap();
        assert_eq!(ranges(&a), [(2, 14)]);
        a.add(0, 20).unwrap();
        assert_eq!(ranges(&a), [(0, 20)]);
    }

    #[test]
    fn add_merges_adjacent_ranges() {
        let mut a = Assembler::new(4);
        a.add(2, 3).unwrap();
        a.add(5, 2).unwrap();
        assert_eq!(ranges(&a), [(2, 7)]);
        a.add(0, 2).unwrap();
        assert_eq!(ranges(&a), [(0, 7)]);
        a.add(9, 1).unwrap();
        a.add(7, 2).unwrap();
        assert_eq!(ranges(&a), [(0, 10)]);
    }

    #[test]
    fn zero_length_add_changes_nothing() {
        let mut a = Assembler::new(1);
        a.add(5, 0).unwrap();
        assert!(a.is_empty());
        a.add(1, 1).unwrap();
        a.add(9, 0).unwrap();
        assert_eq!(ranges(&a), [(1, 2)]);
    }

    #[test]
    fn too_many_holes_leaves_state_unchanged() {
        let mut a = Assembler::new(2);
        a.add(2, 2).unwrap();
        a.add(8, 2).unwrap();
        assert_eq!(a.add(5, 1), Err(TooManyHoles));
        assert_eq!(a.add(20, 1), Err(TooManyHoles));
        assert_eq!(a.add(0, 1), Err(TooManyHoles));
        assert_eq!(ranges(&a), [(2, 4), (8, 10)]);
        // Merging into an existing range needs no new slot.
        a.add(4, 4).unwrap();
        assert_eq!(ranges(&a), [(2, 10)]);
        assert_eq!(Assembler::new(0).add(0, 1), Err(TooManyHoles));
    }

    #[test]
    fn huge_offset_does_not_overflow() {
        let mut a = Assembler::new(2);
        a.add(usize::MAX - 1, 10).unwrap();
        assert_eq!(ranges(&a), [(usize::MAX - 1, usize::MAX)]);
    }

    #[test]
    fn remove_front_only_takes_a_range_at_zero() {
        let mut a = Assembler::new(4);
        a.add(3, 2).unwrap();
        assert_eq!(a.remove_front(), 0);
        a.add(0, 2).unwrap();
        a.add(8, 2).unwrap();
        assert_eq!(ranges(&a), [(0, 2), (3, 5), (8, 10)]);
        assert_eq!(a.remove_front(), 2);
        assert_eq!(ranges(&a), [(1, 3), (6, 8)]);
        assert_eq!(a.remove_front(), 0);
        assert_eq!(Assembler::new(1).remove_front(), 0);
    }

    #[test]
    fn advance_shifts_and_trims_ranges() {
        let mut a = Assembler::new(4);
        a.add(2, 3).unwrap(); // 2..5
        a.add(7, 3).unwrap(); // 7..10
        a.add(12, 1).unwrap(); // 12..13
        a.advance(0);
        assert_eq!(ranges(&a), [(2, 5), (7, 10), (12, 13)]);
        a.advance(5); // first range falls entirely below zero
        assert_eq!(ranges(&a), [(2, 5), (7, 8)]);
        a.advance(3); // 2..5 becomes 0..2 (partly below zero)
        assert_eq!(ranges(&a), [(0, 2), (4, 5)]);
        assert_eq!(a.remove_front(), 2);
        assert_eq!(ranges(&a), [(2, 3)]);
        a.advance(100);
        assert!(a.is_empty());
    }

    /// Runs of true bits in the bitmap, as ranges.
    fn runs(bits: &[bool]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bits.len() {
            if bits[i] {
                let s = i;
                while i < bits.len() && bits[i] {
                    i += 1;
                }
                out.push((s, i));
            } else {
                i += 1;
            }
        }
        out
    }

    #[test]
    fn random_ops_match_bitmap_model() {
        const W: usize = 96;
        let mut rng = Rng::new(0xa55e_b1e5);
        for round in 0..50 {
            let max = rng.gen_range(1, 8) as usize;
            let mut a = Assembler::new(max);
            let mut bits = vec![false; W + 64];
            for op in 0..400 {
                let ctx = format!("round {round} op {op} max {max}");
                match rng.gen_range(0, 10) {
                    0..=6 => {
                        let off = rng.gen_range(0, W as u64) as usize;
                        let len = rng.gen_range(0, 12) as usize;
                        let mut next = bits.clone();
                        next[off..off + len].iter_mut().for_each(|b| *b = true);
                        let before = ranges(&a);
                        let res = a.add(off, len);
                        if runs(&next).len() > max {
                            assert_eq!(res, Err(TooManyHoles), "{ctx}");
                            assert_eq!(ranges(&a), before, "{ctx}");
                        } else {
                            assert_eq!(res, Ok(()), "{ctx}");
                            bits = next;
                        }
                    }
                    7 | 8 => {
                        let n = rng.gen_range(0, 16) as usize;
                        a.advance(n);
                        bits.drain(..n);
                        bits.resize(W + 64, false);
                    }
                    _ => {
                        let got = a.remove_front();
                        let exp = bits.iter().take_while(|b| **b).count();
                        assert_eq!(got, exp, "{ctx}");
                        bits.drain(..exp);
                        bits.resize(W + 64, false);
                    }
                }
                assert_eq!(ranges(&a), runs(&bits), "{ctx}");
                assert_eq!(a.len(), runs(&bits).len(), "{ctx}");
                assert!(a.len() <= max, "{ctx}");
            }
        }
    }
}
