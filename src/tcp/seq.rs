//! TCP sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4).
//!
//! Comparisons are valid only between numbers less than 2^31 apart, which the
//! window limits guarantee. `a < b` means "a comes before b" across the wrap.

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNum(pub u32);

impl SeqNum {
    pub const fn new(v: u32) -> SeqNum {
        SeqNum(v)
    }

    pub const fn raw(self) -> u32 {
        self.0
    }

    pub fn max(self, other: SeqNum) -> SeqNum {
        if self > other {
            self
        } else {
            other
        }
    }

    pub fn min(self, other: SeqNum) -> SeqNum {
        if self < other {
            self
        } else {
            other
        }
    }

    /// `lo <= self < hi` in sequence space.
    pub fn in_range(self, lo: SeqNum, hi: SeqNum) -> bool {
        lo <= self && self < hi
    }

    /// `lo <= self <= hi` in sequence space.
    pub fn in_range_inclusive(self, lo: SeqNum, hi: SeqNum) -> bool {
        lo <= self && self <= hi
    }
}

impl PartialOrd for SeqNum {
    fn partial_cmp(&self, other: &SeqNum) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeqNum {
    /// Serial-number ordering: `a < b` iff `(b - a) mod 2^32` is in (0, 2^31).
    fn cmp(&self, other: &SeqNum) -> Ordering {
        (self.0.wrapping_sub(other.0) as i32).cmp(&0)
    }
}

impl Add<usize> for SeqNum {
    type Output = SeqNum;
    fn add(self, rhs: usize) -> SeqNum {
        debug_assert!(rhs <= i32::MAX as usize, "sequence step too large: {rhs}");
        SeqNum(self.0.wrapping_add(rhs as u32))
    }
}

impl AddAssign<usize> for SeqNum {
    fn add_assign(&mut self, rhs: usize) {
        *self = *self + rhs;
    }
}

impl Sub<usize> for SeqNum {
    type Output = SeqNum;
    fn sub(self, rhs: usize) -> SeqNum {
        debug_assert!(rhs <= i32::MAX as usize, "sequence step too large: {rhs}");
        SeqNum(self.0.wrapping_sub(rhs as u32))
    }
}

impl Sub<SeqNum> for SeqNum {
    type Output = usize;
    /// Distance from `rhs` forward to `self`. Saturates to 0 if `rhs` is after
    /// `self`: callers compare first when the order is not known.
    fn sub(self, rhs: SeqNum) -> usize {
        let d = self.0.wrapping_sub(rhs.0) as i32;
        if d < 0 {
            0
        } else {
            d as usize
        }
    }
}

impl fmt::Debug for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_across_the_wrap() {
        let near_top = SeqNum(u32::MAX - 10);
        let wrapped = near_top + 20;
        assert_eq!(wrapped, SeqNum(9));
        assert!(near_top < wrapped);
        assert!(wrapped > near_top);
        assert_eq!(wrapped - near_top, 20);
        assert_eq!(near_top - wrapped, 0, "backwards distance saturates");
        assert_eq!(wrapped - 20usize, near_top);
    }

    #[test]
    fn ranges_across_the_wrap() {
        let lo = SeqNum(u32::MAX - 100);
        let hi = lo + 200;
        assert!(SeqNum(u32::MAX).in_range(lo, hi));
        assert!(SeqNum(0).in_range(lo, hi));
        assert!(SeqNum(98).in_range(lo, hi));
        assert!(!SeqNum(99).in_range(lo, hi));
        assert!(SeqNum(99).in_range_inclusive(lo, hi));
        assert!(!SeqNum(u32::MAX - 101).in_range(lo, hi));
    }

    #[test]
    fn max_min_across_the_wrap() {
        let a = SeqNum(u32::MAX);
        let b = SeqNum(1);
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
    }

    #[test]
    fn half_space_is_the_comparison_horizon() {
        let a = SeqNum(0);
        assert!(a < SeqNum((1 << 31) - 1));
        assert!(
            a > SeqNum((1 << 31) + 1),
            "beyond 2^31 the order flips by design"
        );
    }
}
