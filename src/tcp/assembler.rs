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

    /// Record that bytes `offset..offset+len` arrived. Overlaps and adjacency
    /// merge. Err if that would exceed the range limit (nothing is changed then).
    pub fn add(&mut self, offset: usize, len: usize) -> Result<(), TooManyHoles> {
        let _ = (offset, len);
        todo!()
    }

    /// If a range starts at offset 0, remove it and return its length; shift
    /// all other ranges down by that amount. Otherwise return 0.
    /// Call after RCV.NXT advanced by in-order data of length `n` via
    /// [`Assembler::advance`] first.
    pub fn remove_front(&mut self) -> usize {
        todo!()
    }

    /// RCV.NXT moved forward by `n` bytes of in-order data: shift all ranges
    /// down by `n`, dropping (parts of) ranges that fall below zero.
    pub fn advance(&mut self, n: usize) {
        let _ = n;
        todo!()
    }

    /// Ranges currently held, in order (for SACK blocks in issue 6, and for tests).
    pub fn ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.ranges.iter().copied()
    }
}
