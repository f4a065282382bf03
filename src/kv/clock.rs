//! Logical clocks: Lamport timestamps and vector clocks, with a compact binary encoding for
//! node-to-node frames.
//!
//! Conventions (what the trace merger and the diagram assume):
//! - a node ticks its Lamport clock and increments its own vector-clock entry for every event it
//!   records (local, send, receive);
//! - a send carries the clocks *after* that tick;
//! - a receive first merges the remote clocks (`observe`, `merge`) and then counts itself
//!   ([`Lamport::observe`] already includes the `+1`; for the vector clock call
//!   [`VectorClock::merge`] then [`VectorClock::increment`]).
//!
//! With that, `a` happened before `b` exactly when `a.vclock.compare(&b.vclock) == Before`.
//!
//! Wire format of a vector clock ([`VectorClock::encode`]): a LEB128 entry count, then per entry
//! (sorted by node id) the node id as a gap from the previous id (first: the id itself;
//! then `id - prev - 1`) and the counter, both LEB128. Zero counters are never stored. A
//! three-node clock with small counters takes 7 bytes. [`VectorClock::decode`] rejects truncated
//! input, over-long varints, more than [`MAX_ENTRIES`] entries, zero counters and ids that
//! overflow, and never panics.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The most entries [`VectorClock::decode`] accepts (a cluster has a handful of nodes; this is
/// only a bound against garbage allocating or looping for long).
pub const MAX_ENTRIES: usize = 1024;

/// A Lamport clock. `Copy`: a node keeps one and stamps frames with [`Lamport::now`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lamport {
    time: u64,
}

impl Lamport {
    /// A clock at `time` (e.g. restored after a restart).
    pub const fn at(time: u64) -> Lamport {
        Lamport { time }
    }

    /// The current time, without advancing.
    pub fn now(&self) -> u64 {
        self.time
    }

    /// A local or send event: advance by one and return the event's time.
    pub fn tick(&mut self) -> u64 {
        self.time = self.time.saturating_add(1);
        self.time
    }

    /// A receive event carrying `remote`: `max(local, remote) + 1`, returned.
    pub fn observe(&mut self, remote: u64) -> u64 {
        self.time = self.time.max(remote).saturating_add(1);
        self.time
    }
}

/// How two vector clocks relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Causality {
    /// `self` happened before `other` (every entry ≤, at least one <).
    Before,
    /// `other` happened before `self`.
    After,
    /// Identical clocks.
    Equal,
    /// Neither happened before the other.
    Concurrent,
}

/// Why a vector clock could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockError {
    /// The buffer ended inside the clock.
    Truncated,
    /// A varint longer than 10 bytes or above `u64::MAX`.
    VarintOverflow,
    /// More than [`MAX_ENTRIES`] entries.
    TooManyEntries(u64),
    /// A node id beyond `u64::MAX` after adding the gap.
    NodeOverflow,
    /// A stored counter of zero (the encoding never writes one).
    ZeroCounter,
    /// A varint with redundant trailing zero groups (the encoding is canonical).
    NonMinimalVarint,
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockError::Truncated => write!(f, "vector clock truncated"),
            ClockError::VarintOverflow => write!(f, "vector clock varint overflows u64"),
            ClockError::TooManyEntries(n) => {
                write!(f, "vector clock has {n} entries (max {MAX_ENTRIES})")
            }
            ClockError::NodeOverflow => write!(f, "vector clock node id overflows u64"),
            ClockError::ZeroCounter => write!(f, "vector clock stores a zero counter"),
            ClockError::NonMinimalVarint => write!(f, "vector clock varint is not minimal"),
        }
    }
}

impl std::error::Error for ClockError {}

/// A vector clock: node id → number of events of that node in the causal past (inclusive).
/// Absent entries are zero; zero entries are never stored, so equal clocks compare equal.
/// Serialises (serde) as a map `{"1": 3, "2": 5}`.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct VectorClock {
    entries: BTreeMap<u64, u64>,
}

impl<'de> Deserialize<'de> for VectorClock {
    /// Through [`FromIterator`], so zero entries in the input are dropped (canonical form).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<u64, u64>::deserialize(d)?.into_iter().collect())
    }
}

impl fmt::Debug for VectorClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for VectorClock {
    /// `{1:3, 2:5}`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{")?;
        for (i, (n, c)) in self.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{n}:{c}")?;
        }
        write!(f, "}}")
    }
}

impl VectorClock {
    pub fn new() -> VectorClock {
        VectorClock::default()
    }

    /// Counts one event of `node` (saturating).
    pub fn increment(&mut self, node: u64) {
        let c = self.entries.entry(node).or_insert(0);
        *c = c.saturating_add(1);
    }

    /// Entry-wise maximum with `other` (a receive).
    pub fn merge(&mut self, other: &VectorClock) {
        for (&n, &c) in &other.entries {
            if c == 0 {
                continue;
            }
            let e = self.entries.entry(n).or_insert(0);
            *e = (*e).max(c);
        }
    }

    /// The entry for `node` (0 if absent).
    pub fn get(&self, node: u64) -> u64 {
        self.entries.get(&node).copied().unwrap_or(0)
    }

    /// Sets the entry for `node` (0 removes it).
    pub fn set(&mut self, node: u64, count: u64) {
        if count == 0 {
            self.entries.remove(&node);
        } else {
            self.entries.insert(node, count);
        }
    }

    /// `(node, count)` pairs with non-zero counts, ascending by node.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.entries
            .iter()
            .map(|(&n, &c)| (n, c))
            .filter(|&(_, c)| c != 0)
    }

    /// Number of non-zero entries.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of all entries: the number of events in the causal past (inclusive).
    pub fn total(&self) -> u64 {
        self.iter().fold(0u64, |a, (_, c)| a.saturating_add(c))
    }

    /// How `self` relates to `other` in happens-before.
    pub fn compare(&self, other: &VectorClock) -> Causality {
        let mut less = false; // some entry of self < other
        let mut greater = false; // some entry of self > other
        let mut a = self.iter().peekable();
        let mut b = other.iter().peekable();
        loop {
            let (x, y) = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(&(_, ca)), None) => {
                    a.next();
                    (ca, 0)
                }
                (None, Some(&(_, cb))) => {
                    b.next();
                    (0, cb)
                }
                (Some(&(na, ca)), Some(&(nb, cb))) => match na.cmp(&nb) {
                    Ordering::Less => {
                        a.next();
                        (ca, 0)
                    }
                    Ordering::Greater => {
                        b.next();
                        (0, cb)
                    }
                    Ordering::Equal => {
                        a.next();
                        b.next();
                        (ca, cb)
                    }
                },
            };
            match x.cmp(&y) {
                Ordering::Less => less = true,
                Ordering::Greater => greater = true,
                Ordering::Equal => {}
            }
            if less && greater {
                return Causality::Concurrent;
            }
        }
        match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }

    /// True when `self` happened strictly before `other`.
    pub fn happened_before(&self, other: &VectorClock) -> bool {
        self.compare(other) == Causality::Before
    }

    /// Appends the compact binary form (see the module docs) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        let mut prev: Option<u64> = None;
        for (n, c) in self.iter() {
            let gap = match prev {
                None => n,
                Some(p) => n - p - 1, // ids strictly ascending
            };
            put_varint(out, gap);
            put_varint(out, c);
            prev = Some(n);
        }
    }

    /// The compact binary form as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes a clock from the start of `buf`; returns it and the number of bytes consumed.
    pub fn decode(buf: &[u8]) -> Result<(VectorClock, usize), ClockError> {
        let mut pos = 0usize;
        let count = get_varint(buf, &mut pos)?;
        if count > MAX_ENTRIES as u64 {
            return Err(ClockError::TooManyEntries(count));
        }
        let mut entries = BTreeMap::new();
        let mut prev: Option<u64> = None;
        for _ in 0..count {
            let gap = get_varint(buf, &mut pos)?;
            let node = match prev {
                None => gap,
                Some(p) => p
                    .checked_add(1)
                    .and_then(|x| x.checked_add(gap))
                    .ok_or(ClockError::NodeOverflow)?,
            };
            let c = get_varint(buf, &mut pos)?;
            if c == 0 {
                return Err(ClockError::ZeroCounter);
            }
            entries.insert(node, c);
            prev = Some(node);
        }
        Ok((VectorClock { entries }, pos))
    }
}

impl FromIterator<(u64, u64)> for VectorClock {
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> Self {
        let mut v = VectorClock::new();
        for (n, c) in iter {
            let c = c.max(v.get(n));
            v.set(n, c);
        }
        v
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, ClockError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or(ClockError::Truncated)?;
        *pos += 1;
        let bits = (b & 0x7f) as u64;
        if i == 9 && bits > 1 {
            return Err(ClockError::VarintOverflow);
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(ClockError::NonMinimalVarint);
            }
            return Ok(v);
        }
    }
    Err(ClockError::VarintOverflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn vc(pairs: &[(u64, u64)]) -> VectorClock {
        pairs.iter().copied().collect()
    }

    #[test]
    fn lamport_tick_advances_by_one() {
        let mut l = Lamport::default();
        assert_eq!(l.now(), 0);
        assert_eq!(l.tick(), 1);
        assert_eq!(l.tick(), 2);
        assert_eq!(l.now(), 2);
    }

    #[test]
    fn lamport_observe_is_max_plus_one() {
        let mut l = Lamport::at(5);
        assert_eq!(l.observe(9), 10);
        assert_eq!(l.observe(3), 11);
        assert_eq!(l.now(), 11);
    }

    #[test]
    fn lamport_saturates_instead_of_overflowing() {
        let mut l = Lamport::at(u64::MAX);
        assert_eq!(l.tick(), u64::MAX);
        assert_eq!(l.observe(u64::MAX), u64::MAX);
    }

    #[test]
    fn vector_clock_message_exchange_orders_send_before_receive() {
        // node 1 does a local event, sends to node 2; node 2 had its own event before receiving.
        let mut a = VectorClock::new();
        a.increment(1);
        let local_a = a.clone();
        a.increment(1);
        let send = a.clone();
        let mut b = VectorClock::new();
        b.increment(2);
        let local_b = b.clone();
        b.merge(&send);
        b.increment(2);
        let recv = b.clone();
        assert_eq!(send.compare(&recv), Causality::Before);
        assert_eq!(recv.compare(&send), Causality::After);
        assert_eq!(local_a.compare(&recv), Causality::Before);
        assert_eq!(local_a.compare(&local_b), Causality::Concurrent);
        assert_eq!(send.compare(&local_b), Causality::Concurrent);
        assert_eq!(recv.compare(&recv.clone()), Causality::Equal);
        assert!(local_b.happened_before(&recv));
        assert!(!recv.happened_before(&local_b));
    }

    #[test]
    fn vector_clock_missing_entries_count_as_zero() {
        assert_eq!(
            vc(&[(1, 1)]).compare(&vc(&[(1, 1), (2, 1)])),
            Causality::Before
        );
        assert_eq!(vc(&[(3, 1)]).compare(&vc(&[(1, 1)])), Causality::Concurrent);
        assert_eq!(
            VectorClock::new().compare(&vc(&[(7, 2)])),
            Causality::Before
        );
        // a stored zero (set(n, 0)) is the same as absent
        let mut z = vc(&[(1, 1)]);
        z.set(2, 0);
        assert_eq!(z, vc(&[(1, 1)]));
        assert_eq!(z.compare(&vc(&[(1, 1)])), Causality::Equal);
    }

    #[test]
    fn vector_clock_merge_takes_entrywise_max() {
        let mut a = vc(&[(1, 3), (2, 1)]);
        a.merge(&vc(&[(2, 4), (3, 2)]));
        assert_eq!(a, vc(&[(1, 3), (2, 4), (3, 2)]));
        assert_eq!(a.total(), 9);
        assert_eq!(a.get(9), 0);
    }

    #[test]
    fn encode_decode_round_trips_and_is_compact() {
        let c = vc(&[(1, 3), (2, 5), (3, 1)]);
        let mut buf = c.to_bytes();
        assert_eq!(buf.len(), 7);
        buf.extend_from_slice(b"rest");
        let (d, used) = VectorClock::decode(&buf).unwrap();
        assert_eq!(d, c);
        assert_eq!(used, 7);
        let big = vc(&[(u64::MAX - 1, u64::MAX), (u64::MAX, 1), (0, 1)]);
        let (d, used) = VectorClock::decode(&big.to_bytes()).unwrap();
        assert_eq!(d, big);
        assert_eq!(used, big.to_bytes().len());
        let (d, used) = VectorClock::decode(&[0]).unwrap();
        assert!(d.is_empty());
        assert_eq!(used, 1);
    }

    #[test]
    fn decode_rejects_truncated_input() {
        let c = vc(&[(1, 300), (2, 5)]);
        let buf = c.to_bytes();
        for cut in 0..buf.len() {
            assert_eq!(
                VectorClock::decode(&buf[..cut]),
                Err(ClockError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn decode_rejects_absurd_entry_counts() {
        let mut buf = Vec::new();
        put_varint(&mut buf, 1u64 << 40);
        assert_eq!(
            VectorClock::decode(&buf),
            Err(ClockError::TooManyEntries(1 << 40))
        );
        let mut buf = Vec::new();
        put_varint(&mut buf, MAX_ENTRIES as u64 + 1);
        assert!(matches!(
            VectorClock::decode(&buf),
            Err(ClockError::TooManyEntries(_))
        ));
    }

    #[test]
    fn decode_rejects_overlong_varints_zero_counters_and_id_overflow() {
        assert_eq!(
            VectorClock::decode(&[0xff; 11]),
            Err(ClockError::VarintOverflow)
        );
        // 10th byte carrying more than the top bit of u64
        let mut buf = vec![0xff; 9];
        buf.push(0x02);
        assert_eq!(VectorClock::decode(&buf), Err(ClockError::VarintOverflow));
        assert_eq!(
            VectorClock::decode(&[1, 4, 0]),
            Err(ClockError::ZeroCounter)
        );
        assert_eq!(
            VectorClock::decode(&[0x80, 0x00]),
            Err(ClockError::NonMinimalVarint)
        );
        let mut buf = vec![2];
        put_varint(&mut buf, u64::MAX);
        put_varint(&mut buf, 1);
        put_varint(&mut buf, 0); // gap 0: id = u64::MAX + 1
        put_varint(&mut buf, 1);
        assert_eq!(VectorClock::decode(&buf), Err(ClockError::NodeOverflow));
    }

    #[test]
    fn decode_never_panics_on_random_bytes() {
        let mut rng = Rng::new(7);
        let mut ok = 0;
        for _ in 0..20_000 {
            let len = rng.gen_range(0, 40) as usize;
            let mut buf = vec![0u8; len];
            rng.fill(&mut buf);
            if rng.gen_bool(0.5) && !buf.is_empty() {
                buf[0] = rng.gen_range(0, 6) as u8; // plausible counts
            }
            if let Ok((c, used)) = VectorClock::decode(&buf) {
                ok += 1;
                assert!(used <= buf.len());
                // canonical: re-encoding gives the same bytes back
                assert_eq!(c.to_bytes(), buf[..used].to_vec());
            }
        }
        assert!(ok > 0);
    }

    #[test]
    fn serde_json_round_trips_as_a_map() {
        let c = vc(&[(1, 3), (2, 5)]);
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(s, r#"{"1":3,"2":5}"#);
        let d: VectorClock = serde_json::from_str(&s).unwrap();
        assert_eq!(d, c);
        let z: VectorClock = serde_json::from_str(r#"{"1":3,"2":5,"4":0}"#).unwrap();
        assert_eq!(z, c);
        assert_eq!(format!("{c}"), "{1:3, 2:5}");
    }
}
