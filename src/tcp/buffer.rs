//! A fixed-capacity byte ring buffer used for both directions.
//!
//! Send side: the application enqueues at the back; bytes stay until they are
//! acknowledged (`dequeue_allocated`); `get_allocated(offset, n)` reads
//! queued-but-unacknowledged bytes for (re)transmission, and
//! [`RingBuffer::get_lendable`] the same bytes with the storage they may be
//! lent from to a device write ([`crate::lend`]).
//! Receive side: in-order payload is enqueued at the back; out-of-order payload
//! is written past the end with `write_unallocated` and later made readable by
//! `enqueue_unallocated` once the hole before it fills.

use crate::lend::{Backing, PacketBuf, PacketSlice};
use std::collections::VecDeque;

#[derive(Debug)]
pub struct RingBuffer {
    /// `None` until the first byte is written: an idle connection's two
    /// buffers (256 KiB each by default) cost nothing until data moves.
    storage: Option<Backing>,
    cap: usize,
    read_at: usize,
    len: usize,
    /// Queued bytes were freed (acknowledged or cleared) while a loan of
    /// the storage was alive ([`RingBuffer::get_lendable`]), so free space
    /// may hold bytes a loan still reads: the next write first makes sure
    /// no loan is alive or moves to a copy ([`RingBuffer::writable`]).
    freed_lent: bool,
    /// Copies made because a loan was alive when the buffer had to write.
    unshare_copies: u64,
}

impl RingBuffer {
    pub fn new(capacity: usize) -> RingBuffer {
        RingBuffer {
            storage: None,
            cap: capacity,
            read_at: 0,
            len: 0,
            freed_lent: false,
            unshare_copies: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes of memory the buffer holds now (0 until it is first written).
    pub fn allocated(&self) -> usize {
        self.storage.as_ref().map_or(0, Backing::len)
    }

    /// Times the buffer copied its storage because a device write still
    /// read bytes it was about to overwrite (see [`crate::lend`]).
    pub fn unshare_copies(&self) -> u64 {
        self.unshare_copies
    }

    /// The storage, to write into its free space: allocated on the first
    /// write, and never shared with a loan of bytes that are now free (if
    /// one is alive, the buffer moves to a copy and the loan keeps the old).
    fn writable(&mut self) -> Option<&mut Backing> {
        if self.storage.is_none() {
            if self.cap == 0 {
                return None;
            }
            self.storage = Some(Backing::zeroed(self.cap));
        }
        let s = self.storage.as_mut()?;
        if self.freed_lent {
            if !s.is_unique() {
                *s = s.copied();
                self.unshare_copies += 1;
            }
            self.freed_lent = false;
        }
        Some(s)
    }

    /// Queued bytes were freed: if they may be on loan now, remember it
    /// for the next write ([`RingBuffer::writable`]). Checked now, not at
    /// that write: by then the same pass may have lent other bytes, and a
    /// loan then alive says nothing about the freed ones.
    fn note_freed(&mut self) {
        if self.storage.as_ref().is_some_and(|s| !s.is_unique()) {
            self.freed_lent = true;
        }
    }

    fn bytes(&self, start: usize, n: usize) -> &[u8] {
        match &self.storage {
            Some(s) => s.range(start, n),
            None => &[],
        }
    }

    /// Enlarge to `capacity` bytes (a no-op if not larger), keeping the
    /// queued bytes and anything written past them (`write_unallocated`)
    /// at the same offsets: buffer auto-tuning grows a live connection's
    /// buffers this way. One copy of the old storage, made linear (a loan
    /// of the old keeps it until the write is done).
    pub fn grow(&mut self, capacity: usize) {
        let old = self.cap;
        if capacity <= old {
            return;
        }
        self.cap = capacity;
        let Some(prev) = self.storage.take() else {
            // Never written: nothing to move (read_at is still 0).
            return;
        };
        let mut storage = Backing::zeroed(capacity);
        let back = prev.range(self.read_at, old - self.read_at);
        storage.range_mut(0, back.len()).copy_from_slice(back);
        storage
            .range_mut(back.len(), self.read_at)
            .copy_from_slice(prev.range(0, self.read_at));
        self.storage = Some(storage);
        self.read_at = 0;
        self.freed_lent = false;
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    /// Free space.
    pub fn window(&self) -> usize {
        self.capacity() - self.len
    }

    /// Append as much of `data` as fits; returns bytes taken.
    pub fn enqueue_slice(&mut self, data: &[u8]) -> usize {
        let n = self.write_unallocated(0, data);
        self.len += n;
        n
    }

    /// Pop up to `buf.len()` bytes from the front; returns bytes copied.
    pub fn dequeue_slice(&mut self, buf: &mut [u8]) -> usize {
        let n = self.read_allocated(0, buf);
        self.dequeue_allocated(n)
    }

    /// Copy up to `buf.len()` queued bytes starting `offset` bytes from the
    /// front into `buf` without removing them, across the wrap point; returns
    /// bytes copied (0 if `offset >= len`).
    pub fn read_allocated(&self, offset: usize, buf: &mut [u8]) -> usize {
        let mut copied = 0;
        while copied < buf.len() {
            let chunk = self.get_allocated(offset + copied, buf.len() - copied);
            if chunk.is_empty() {
                break;
            }
            buf[copied..copied + chunk.len()].copy_from_slice(chunk);
            copied += chunk.len();
        }
        copied
    }

    /// Drop up to `count` bytes from the front; returns bytes dropped.
    pub fn dequeue_allocated(&mut self, count: usize) -> usize {
        let n = count.min(self.len);
        if n == 0 {
            return 0;
        }
        self.read_at = (self.read_at + n) % self.capacity();
        self.note_freed();
        // read_at is never reset when the buffer empties: bytes written past
        // the end by `write_unallocated` must stay where they are.
        self.len -= n;
        n
    }

    /// Drop all queued bytes (and anything written past the end).
    pub fn clear(&mut self) {
        if self.len > 0 {
            self.note_freed();
        }
        self.read_at = 0;
        self.len = 0;
    }

    /// The longest contiguous slice of queued bytes starting `offset` bytes
    /// from the front, at most `max` long (may be shorter at the wrap point;
    /// empty if `offset >= len`).
    pub fn get_allocated(&self, offset: usize, max: usize) -> &[u8] {
        if offset >= self.len {
            return &[];
        }
        let cap = self.capacity();
        let start = (self.read_at + offset) % cap;
        let n = max.min(self.len - offset).min(cap - start);
        self.bytes(start, n)
    }

    /// [`RingBuffer::get_allocated`], with the storage the bytes may be
    /// lent from ([`Backing::lend`]) when there are any. The buffer does
    /// not overwrite them while a loan is alive.
    pub fn get_lendable(&mut self, offset: usize, max: usize) -> (&[u8], Option<&Backing>) {
        if offset >= self.len || max == 0 {
            return (&[], None);
        }
        // Bytes freed under earlier loans that have all ended are no
        // concern of the loans made from now on.
        if self.freed_lent && self.storage.as_ref().is_some_and(Backing::is_unique) {
            self.freed_lent = false;
        }
        let cap = self.capacity();
        let start = (self.read_at + offset) % cap;
        let n = max.min(self.len - offset).min(cap - start);
        match &self.storage {
            Some(s) => (s.range(start, n), Some(s)),
            None => (&[], None),
        }
    }

    /// Write `data` at `offset` bytes past the end of the queued data without
    /// making it readable; returns bytes written (clipped to free space).
    pub fn write_unallocated(&mut self, offset: usize, data: &[u8]) -> usize {
        let free = self.window();
        if offset >= free {
            return 0;
        }
        let total = data.len().min(free - offset);
        if total == 0 {
            return 0;
        }
        let cap = self.capacity();
        let end = self.read_at + self.len + offset;
        let Some(storage) = self.writable() else {
            return 0;
        };
        let mut written = 0;
        while written < total {
            let pos = (end + written) % cap;
            let n = (total - written).min(cap - pos);
            storage
                .range_mut(pos, n)
                .copy_from_slice(&data[written..written + n]);
            written += n;
        }
        total
    }

    /// Hand `f` the longest contiguous run of free space at the back (it
    /// ends early at the wrap point) and queue as many bytes as it says it
    /// wrote, clipped to the run; returns that count. `f` is not called when
    /// the buffer is full. For the send side (zero-copy writers): it
    /// overwrites whatever `write_unallocated` left past the end.
    pub fn enqueue_with(&mut self, f: impl FnOnce(&mut [u8]) -> usize) -> usize {
        let free = self.window();
        if free == 0 {
            return 0;
        }
        let cap = self.capacity();
        let pos = (self.read_at + self.len) % cap;
        let run = free.min(cap - pos);
        let Some(storage) = self.writable() else {
            return 0;
        };
        let n = f(storage.range_mut(pos, run)).min(run);
        self.len += n;
        n
    }

    /// Hand `f` the longest contiguous run of queued bytes at the front (it
    /// ends early at the wrap point) and drop as many as it says it
    /// consumed, clipped to the run; returns that count. `f` is not called
    /// when the buffer is empty. For zero-copy readers.
    pub fn dequeue_with(&mut self, f: impl FnOnce(&[u8]) -> usize) -> usize {
        let run = self.get_allocated(0, self.len);
        if run.is_empty() {
            return 0;
        }
        let n = f(run).min(run.len());
        self.dequeue_allocated(n)
    }

    /// Make `count` bytes previously written by `write_unallocated` readable
    /// (clipped to free space).
    pub fn enqueue_unallocated(&mut self, count: usize) {
        self.len += count.min(self.window());
    }
}

/// Most spent packet buffers a receive buffer holds for the stack to give
/// back to the device ([`RecvBuffer::take_spent`]); beyond, they are freed.
const MAX_SPENT: usize = 64;

/// The receive side: a [`RingBuffer`], and in front of its bytes the
/// payloads of received packets kept whole ([`RecvBuffer::keep`]), which
/// the application reads from where the device wrote them. A segment that
/// arrives in order while the ring holds nothing (no bytes, nothing out of
/// order) is kept that way; any other is copied into the ring, behind what
/// is kept. Kept bytes count against the window as the ring's do.
#[derive(Debug)]
pub struct RecvBuffer {
    ring: RingBuffer,
    /// Oldest first: (packet, start, end) of the payload not yet read.
    kept: VecDeque<(PacketBuf, usize, usize)>,
    /// Bytes in `kept`.
    kept_len: usize,
    /// Packet buffers read to the end, for the stack to recycle.
    spent: Vec<Vec<u8>>,
}

impl RecvBuffer {
    pub fn new(capacity: usize) -> RecvBuffer {
        RecvBuffer {
            ring: RingBuffer::new(capacity),
            kept: VecDeque::new(),
            kept_len: 0,
            spent: Vec::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    pub fn grow(&mut self, capacity: usize) {
        self.ring.grow(capacity);
    }

    /// Bytes readable.
    pub fn len(&self) -> usize {
        self.kept_len + self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Free space: the window.
    pub fn window(&self) -> usize {
        self.ring.window().saturating_sub(self.kept_len)
    }

    /// Keep `payload`, which lies in `packet`, as the next readable bytes,
    /// if the ring holds nothing (the caller knows nothing is out of order)
    /// and it fits the window; false (nothing done) otherwise.
    pub fn keep(&mut self, packet: &PacketBuf, payload: &[u8]) -> bool {
        if !self.ring.is_empty() || payload.is_empty() || payload.len() > self.window() {
            return false;
        }
        let Some(at) = packet.offset_of(payload) else {
            return false;
        };
        self.kept
            .push_back((packet.clone(), at, at + payload.len()));
        self.kept_len += payload.len();
        true
    }

    /// As [`RingBuffer::write_unallocated`], `offset` bytes past the last
    /// readable byte, clipped to the window.
    pub fn write_unallocated(&mut self, offset: usize, data: &[u8]) -> usize {
        let free = self.window();
        if offset >= free {
            return 0;
        }
        let n = data.len().min(free - offset);
        self.ring.write_unallocated(offset, &data[..n])
    }

    /// As [`RingBuffer::enqueue_unallocated`], clipped to the window.
    pub fn enqueue_unallocated(&mut self, count: usize) {
        self.ring.enqueue_unallocated(count.min(self.window()));
    }

    /// Pop up to `buf.len()` readable bytes; returns bytes copied.
    pub fn dequeue_slice(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() && !self.kept.is_empty() {
            n += self.dequeue_kept(|run| {
                let k = run.len().min(buf.len() - n);
                buf[n..n + k].copy_from_slice(&run[..k]);
                k
            });
        }
        if n < buf.len() {
            n += self.ring.dequeue_slice(&mut buf[n..]);
        }
        n
    }

    /// Hand `f` the longest contiguous run of readable bytes at the front
    /// and drop as many as it says it consumed (see
    /// [`RingBuffer::dequeue_with`]); `f` is not called when empty.
    pub fn dequeue_with(&mut self, f: impl FnOnce(&[u8]) -> usize) -> usize {
        if self.kept.is_empty() {
            self.ring.dequeue_with(f)
        } else {
            self.dequeue_kept(f)
        }
    }

    /// `f` on the rest of the oldest kept payload (there is one); a payload
    /// read to the end frees its packet.
    fn dequeue_kept(&mut self, f: impl FnOnce(&[u8]) -> usize) -> usize {
        let Some((packet, at, end)) = self.kept.front_mut() else {
            return 0;
        };
        let n = f(&packet.bytes()[*at..*end]).min(*end - *at);
        *at += n;
        self.kept_len -= n;
        if at == end {
            let (packet, _, _) = self.kept.pop_front().expect("front exists");
            if let Some(b) = packet.into_inner() {
                if self.spent.len() < MAX_SPENT {
                    self.spent.push(b);
                }
            }
        }
        n
    }

    /// Take up to `max` readable bytes from the front, if they are kept
    /// packets' (the ring's bytes come after every kept one): whole and
    /// partial payloads appended to `out`, for the application to copy
    /// after the stack is released. Returns the bytes taken (0 when the
    /// front is not kept).
    pub fn take_kept(&mut self, max: usize, out: &mut Vec<PacketSlice>) -> usize {
        let mut n = 0;
        while n < max {
            let Some((packet, at, end)) = self.kept.front_mut() else {
                break;
            };
            let k = (*end - *at).min(max - n);
            if k == *end - *at {
                let (packet, at, end) = self.kept.pop_front().expect("front exists");
                out.push(PacketSlice::new(packet, at, end));
            } else {
                out.push(PacketSlice::new(packet.clone(), *at, *at + k));
                *at += k;
            }
            n += k;
        }
        self.kept_len -= n;
        n
    }

    /// Packet buffers read to the end since the last call, for the device
    /// to reuse ([`crate::phy::Device::recycle_rx`]).
    pub fn take_spent(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.spent.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use std::collections::VecDeque;

    /// The buffer with its read position placed at `read_at` (to test the wrap).
    fn at(capacity: usize, read_at: usize) -> RingBuffer {
        let mut b = RingBuffer::new(capacity);
        b.read_at = read_at;
        b
    }

    #[test]
    fn storage_is_allocated_on_the_first_write_only() {
        let mut b = RingBuffer::new(1 << 18);
        assert_eq!(b.allocated(), 0);
        b.grow(1 << 19);
        assert_eq!((b.allocated(), b.capacity()), (0, 1 << 19));
        assert_eq!(b.write_unallocated(5, &[]), 0);
        assert_eq!(b.allocated(), 0);
        assert_eq!(b.enqueue_slice(&[1, 2, 3]), 3);
        assert_eq!(b.allocated(), 1 << 19);
        b.grow(1 << 20);
        assert_eq!(b.allocated(), 1 << 20);
        let mut out = [0u8; 3];
        assert_eq!(b.dequeue_slice(&mut out), 3);
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn empty_buffer_reports_empty() {
        let mut b = RingBuffer::new(8);
        assert!(b.is_empty());
        assert!(!b.is_full());
        assert_eq!(b.window(), 8);
        assert_eq!(b.get_allocated(0, 8), &[] as &[u8]);
        let mut out = [0u8; 4];
        assert_eq!(b.dequeue_slice(&mut out), 0);
        assert_eq!(b.dequeue_allocated(3), 0);
    }

    #[test]
    fn full_buffer_refuses_more() {
        let mut b = at(8, 5);
        assert_eq!(b.enqueue_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 8);
        assert!(b.is_full());
        assert_eq!(b.window(), 0);
        assert_eq!(b.enqueue_slice(&[11]), 0);
        assert_eq!(b.write_unallocated(0, &[11]), 0);
        let mut out = [0u8; 10];
        assert_eq!(b.dequeue_slice(&mut out), 8);
        assert_eq!(&out[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(b.is_empty());
    }

    #[test]
    fn zero_length_operations_are_no_ops() {
        let mut b = at(8, 6);
        assert_eq!(b.enqueue_slice(&[]), 0);
        assert_eq!(b.dequeue_slice(&mut []), 0);
        assert_eq!(b.write_unallocated(3, &[]), 0);
        b.enqueue_unallocated(0);
        assert_eq!(b.len(), 0);
        b.enqueue_slice(&[1, 2, 3]);
        assert_eq!(b.get_allocated(0, 0), &[] as &[u8]);
        assert_eq!(b.get_allocated(3, 5), &[] as &[u8]);
    }

    #[test]
    fn zero_capacity_never_panics() {
        let mut b = RingBuffer::new(0);
        assert!(b.is_full() && b.is_empty());
        assert_eq!(b.enqueue_slice(&[1]), 0);
        assert_eq!(b.write_unallocated(0, &[1]), 0);
        b.enqueue_unallocated(5);
        assert_eq!(b.len(), 0);
        assert_eq!(b.get_allocated(0, 1), &[] as &[u8]);
        assert_eq!(b.dequeue_allocated(1), 0);
    }

    #[test]
    fn get_allocated_stops_at_wrap_point() {
        let mut b = at(8, 6);
        assert_eq!(b.enqueue_slice(&[1, 2, 3, 4, 5]), 5);
        assert_eq!(b.get_allocated(0, 8), &[1, 2]);
        assert_eq!(b.get_allocated(1, 8), &[2]);
        assert_eq!(b.get_allocated(2, 8), &[3, 4, 5]);
        assert_eq!(b.get_allocated(2, 2), &[3, 4]);
        assert_eq!(b.get_allocated(4, 8), &[5]);
        let mut out = [0u8; 5];
        assert_eq!(b.read_allocated(1, &mut out), 4);
        assert_eq!(out[..4], [2, 3, 4, 5]);
        assert_eq!(b.len(), 5);
    }

    #[test]
    fn unallocated_write_wraps_and_becomes_readable() {
        let mut b = at(8, 5);
        b.enqueue_slice(&[1, 2]);
        // Free space is 6: offset 2 leaves room for 4 bytes, straddling the wrap.
        assert_eq!(b.write_unallocated(2, &[5, 6, 7, 8, 9]), 4);
        assert_eq!(b.len(), 2);
        assert_eq!(b.write_unallocated(0, &[3, 4]), 2);
        b.enqueue_unallocated(6);
        assert!(b.is_full());
        let mut out = [0u8; 8];
        assert_eq!(b.dequeue_slice(&mut out), 8);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(b.write_unallocated(8, &[1]), 0);
    }

    #[test]
    fn unallocated_data_survives_draining_the_buffer() {
        let mut b = RingBuffer::new(8);
        b.enqueue_slice(&[1, 2, 3]);
        b.write_unallocated(2, &[9, 9]);
        let mut out = [0u8; 3];
        assert_eq!(b.dequeue_slice(&mut out), 3);
        assert!(b.is_empty());
        b.write_unallocated(0, &[7, 8]);
        b.enqueue_unallocated(4);
        let mut out = [0u8; 4];
        assert_eq!(b.dequeue_slice(&mut out), 4);
        assert_eq!(out, [7, 8, 9, 9]);
    }

    #[test]
    fn enqueue_unallocated_is_clipped_to_free_space() {
        let mut b = RingBuffer::new(4);
        b.enqueue_slice(&[1, 2, 3]);
        b.enqueue_unallocated(10);
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn clear_empties_the_buffer() {
        let mut b = at(4, 3);
        b.enqueue_slice(&[1, 2, 3]);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.window(), 4);
    }

    /// Random operation sequences against a VecDeque (readable bytes) plus a
    /// sparse map of unallocated bytes past the end.
    #[test]
    fn random_ops_match_vecdeque_model() {
        let mut rng = Rng::new(0x5eed_b0ff);
        for round in 0..20 {
            let mut cap = rng.gen_range(1, 40) as usize;
            let mut b = RingBuffer::new(cap);
            let mut model: VecDeque<u8> = VecDeque::new();
            // Bytes beyond the readable ones: model_un[i] is offset i past the end.
            let mut model_un: Vec<Option<u8>> = vec![None; cap];
            for op in 0..1000 {
                let ctx = format!("round {round} op {op} cap {cap}");
                match rng.gen_range(0, 10) {
                    8 => {
                        // Zero-copy write: f fills a prefix of the run it gets.
                        let claim = rng.gen_range(0, cap as u64 + 5) as usize;
                        let free = cap - model.len();
                        let end = (b.read_at + b.len) % cap;
                        let mut data = Vec::new();
                        let mut called = false;
                        let took = b.enqueue_with(|run| {
                            called = true;
                            assert_eq!(run.len(), free.min(cap - end), "{ctx}");
                            let k = claim.min(run.len());
                            data = vec![0u8; k];
                            rng.fill(&mut data);
                            run[..k].copy_from_slice(&data);
                            claim
                        });
                        assert_eq!(called, free > 0, "{ctx}");
                        assert_eq!(took, data.len(), "{ctx}");
                        model.extend(&data);
                        model_un.drain(..took);
                        model_un.resize(cap, None);
                    }
                    9 => {
                        // Zero-copy read of the contiguous front run.
                        let claim = rng.gen_range(0, cap as u64 + 5) as usize;
                        let whole = model.len().min(cap - b.read_at);
                        let mut seen = Vec::new();
                        let got = b.dequeue_with(|run| {
                            seen = run.to_vec();
                            claim
                        });
                        if !model.is_empty() {
                            assert!(!seen.is_empty(), "{ctx}");
                        }
                        assert_eq!(seen.len(), whole, "{ctx}");
                        let exp: Vec<u8> = model.iter().take(seen.len()).copied().collect();
                        assert_eq!(seen, exp, "{ctx}");
                        assert_eq!(got, claim.min(seen.len()), "{ctx}");
                        model.drain(..got);
                    }
                    7 => {
                        // Auto-tuning: grow now and then (rarely, so the
                        // buffer still fills and wraps at each size).
                        if rng.gen_range(0, 50) == 0 {
                            cap += rng.gen_range(0, 8) as usize;
                            b.grow(cap);
                            model_un.resize(cap, None);
                        }
                    }
                    0 => {
                        let n = rng.gen_range(0, cap as u64 + 5) as usize;
                        let mut data = vec![0u8; n];
                        rng.fill(&mut data);
                        let took = b.enqueue_slice(&data);
                        let exp = n.min(cap - model.len());
                        assert_eq!(took, exp, "{ctx}");
                        model.extend(&data[..took]);
                        model_un.drain(..took);
                        model_un.resize(cap, None);
                    }
                    1 => {
                        let n = rng.gen_range(0, cap as u64 + 5) as usize;
                        let mut out = vec![0u8; n];
                        let got = b.dequeue_slice(&mut out);
                        let exp: Vec<u8> = model.drain(..n.min(model.len())).collect();
                        assert_eq!(&out[..got], &exp[..], "{ctx}");
                    }
                    2 => {
                        let n = rng.gen_range(0, cap as u64 + 5) as usize;
                        let got = b.dequeue_allocated(n);
                        assert_eq!(got, n.min(model.len()), "{ctx}");
                        model.drain(..got);
                    }
                    3 => {
                        let off = rng.gen_range(0, cap as u64 + 2) as usize;
                        let max = rng.gen_range(0, cap as u64 + 2) as usize;
                        let s = b.get_allocated(off, max);
                        if off >= model.len() {
                            assert!(s.is_empty(), "{ctx}");
                        } else {
                            assert!(!s.is_empty() || max == 0, "{ctx}");
                            assert!(s.len() <= max, "{ctx}");
                            let exp: Vec<u8> =
                                model.iter().skip(off).take(s.len()).copied().collect();
                            assert_eq!(s, &exp[..], "{ctx}");
                            // Only the wrap point may shorten it.
                            let full = max.min(model.len() - off);
                            if s.len() < full {
                                assert_eq!((b.read_at + off + s.len()) % cap, 0, "{ctx}");
                            }
                        }
                    }
                    4 => {
                        let free = cap - model.len();
                        let off = rng.gen_range(0, free as u64 + 2) as usize;
                        let n = rng.gen_range(0, cap as u64 + 2) as usize;
                        let mut data = vec![0u8; n];
                        rng.fill(&mut data);
                        let wrote = b.write_unallocated(off, &data);
                        let exp = if off >= free { 0 } else { n.min(free - off) };
                        assert_eq!(wrote, exp, "{ctx}");
                        for i in 0..wrote {
                            model_un[off + i] = Some(data[i]);
                        }
                    }
                    5 => {
                        // Make a fully written prefix of the unallocated area readable.
                        let written = model_un.iter().take_while(|x| x.is_some()).count();
                        let free = cap - model.len();
                        let n = rng.gen_range(0, written.min(free) as u64 + 1) as usize;
                        b.enqueue_unallocated(n);
                        for x in model_un.drain(..n) {
                            model.push_back(x.unwrap());
                        }
                        model_un.resize(cap, None);
                    }
                    _ => {
                        let off = rng.gen_range(0, cap as u64 + 1) as usize;
                        let n = rng.gen_range(0, cap as u64 + 1) as usize;
                        let mut out = vec![0u8; n];
                        let got = b.read_allocated(off, &mut out);
                        let exp: Vec<u8> = model.iter().skip(off).take(n).copied().collect();
                        assert_eq!(&out[..got], &exp[..], "{ctx}");
                    }
                }
                assert_eq!(b.len(), model.len(), "{ctx}");
                assert_eq!(b.window(), cap - model.len(), "{ctx}");
                assert_eq!(b.is_full(), model.len() == cap, "{ctx}");
            }
        }
    }

    /// Send-side operations with loans ([`RingBuffer::get_lendable`]) held
    /// across them, as device writes hold them: a lent byte never changes
    /// while its loan is alive, whatever is acknowledged, written, grown or
    /// cleared meanwhile, and the queued bytes always match a model. The
    /// buffer copies its storage only when bytes were freed while a loan
    /// was alive.
    #[test]
    fn lent_bytes_stay_unchanged_until_the_loan_ends() {
        use crate::lend::Lent;
        let mut rng = Rng::new(0x1e_4d);
        let mut copies = 0;
        for round in 0..40 {
            let mut cap = rng.gen_range(1, 64) as usize;
            let mut b = RingBuffer::new(cap);
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut loans: Vec<(Lent, Vec<u8>)> = Vec::new();
            // Queued bytes were freed while some loan was alive.
            let mut freed_while_lent = false;
            for op in 0..2000 {
                let ctx = format!("round {round} op {op} cap {cap}");
                let before = b.unshare_copies();
                let mut wrote = false;
                match rng.gen_range(0, 12) {
                    0..=2 => {
                        let mut data = vec![0u8; rng.gen_range(0, cap as u64 + 3) as usize];
                        rng.fill(&mut data);
                        let took = b.enqueue_slice(&data);
                        model.extend(&data[..took]);
                        wrote = took > 0;
                    }
                    3 => {
                        let claim = rng.gen_range(0, cap as u64 + 3) as usize;
                        let mut byte = [0u8; 1];
                        rng.fill(&mut byte);
                        // The buffer prepares its free space for `f` even
                        // if `f` then writes nothing.
                        wrote = b.window() > 0;
                        let took = b.enqueue_with(|run| {
                            let k = claim.min(run.len());
                            run[..k].fill(byte[0]);
                            k
                        });
                        model.extend(std::iter::repeat_n(byte[0], took));
                    }
                    4..=6 => {
                        // A segment: lend a run of the queued bytes.
                        let off = rng.gen_range(0, model.len() as u64 + 2) as usize;
                        let n = rng.gen_range(0, cap as u64 + 2) as usize;
                        let (bytes, backing) = b.get_lendable(off, n);
                        if let Some(backing) = backing {
                            let expect = bytes.to_vec();
                            let want: Vec<u8> =
                                model.iter().skip(off).take(expect.len()).copied().collect();
                            assert_eq!(expect, want, "{ctx}");
                            assert!(!expect.is_empty(), "{ctx}");
                            loans.push((backing.lend(bytes).expect("inside"), expect));
                        } else {
                            assert!(bytes.is_empty(), "{ctx}");
                        }
                    }
                    7 | 8 => {
                        // The write is done: a loan ends.
                        if !loans.is_empty() {
                            let i = rng.gen_range(0, loans.len() as u64) as usize;
                            loans.swap_remove(i);
                        }
                    }
                    9 => {
                        // An acknowledgment.
                        let n = rng.gen_range(0, model.len() as u64 + 2) as usize;
                        let dropped = b.dequeue_allocated(n);
                        model.drain(..dropped);
                        freed_while_lent |= dropped > 0 && !loans.is_empty();
                    }
                    10 => {
                        if rng.gen_range(0, 10) == 0 {
                            // A new storage: nothing of it is lent.
                            cap += rng.gen_range(1, 16) as usize;
                            b.grow(cap);
                            freed_while_lent = false;
                        }
                    }
                    _ => {
                        if rng.gen_range(0, 20) == 0 {
                            freed_while_lent |= !model.is_empty() && !loans.is_empty();
                            b.clear();
                            model.clear();
                        }
                    }
                }
                if b.unshare_copies() > before {
                    assert!(
                        wrote && freed_while_lent,
                        "{ctx}: a copy nothing called for"
                    );
                    freed_while_lent = false;
                    copies += 1;
                }
                if loans.is_empty() && !wrote {
                    // Every loan ended: bytes freed meanwhile are safe.
                    freed_while_lent = false;
                }
                for (lent, expect) in &loans {
                    assert_eq!(lent.bytes(), &expect[..], "{ctx}: a lent byte changed");
                }
                let queued: Vec<u8> = (0..model.len()).map(|i| b.get_allocated(i, 1)[0]).collect();
                assert_eq!(queued, model.iter().copied().collect::<Vec<u8>>(), "{ctx}");
            }
        }
        assert!(
            copies > 0,
            "the test never had a loan outlive an acknowledgment"
        );
    }

    /// The receive side against a model: payloads kept as packets
    /// ([`RecvBuffer::keep`], only when the ring is empty and they fit),
    /// copied in order, or written out of order and then completed, read
    /// by copy or in place; the window always counts both, and every kept
    /// packet read to the end comes back for reuse.
    #[test]
    fn kept_packets_and_ring_bytes_read_back_in_order() {
        let mut rng = Rng::new(0x4ee9);
        for round in 0..40 {
            let mut cap = rng.gen_range(1, 200) as usize;
            let mut b = RecvBuffer::new(cap);
            let mut model: VecDeque<u8> = VecDeque::new();
            let (mut kept, mut returned) = (0, 0);
            for op in 0..2000 {
                let ctx = format!("round {round} op {op} cap {cap}");
                let mut data = vec![0u8; rng.gen_range(1, cap as u64 + 20) as usize];
                rng.fill(&mut data);
                match rng.gen_range(0, 9) {
                    8 => {
                        // Taken out to be copied later; only kept bytes.
                        let max = rng.gen_range(1, cap as u64 + 20) as usize;
                        let front_kept = b.kept_len;
                        let mut out = Vec::new();
                        let n = b.take_kept(max, &mut out);
                        assert_eq!(n, max.min(front_kept), "{ctx}");
                        let got: Vec<u8> = out.iter().flat_map(|p| p.bytes().to_vec()).collect();
                        let want: Vec<u8> = model.drain(..n).collect();
                        assert_eq!(got, want, "{ctx}");
                        for p in out {
                            returned += usize::from(p.into_buffer().is_some());
                        }
                    }
                    0 | 1 => {
                        // A packet: some header, then the payload.
                        let hdr = rng.gen_range(0, 60) as usize;
                        let mut pkt = vec![0xee; hdr];
                        pkt.extend_from_slice(&data);
                        let p = PacketBuf::new(pkt);
                        let fits = b.ring.is_empty() && data.len() <= b.window();
                        assert_eq!(b.keep(&p, &p.bytes()[hdr..]), fits, "{ctx}");
                        if fits {
                            model.extend(&data);
                            kept += 1;
                        }
                        // A payload not in the packet is never kept.
                        assert!(!b.keep(&p, &data), "{ctx}");
                    }
                    2 => {
                        let free = b.window();
                        let n = b.write_unallocated(0, &data);
                        assert_eq!(n, data.len().min(free), "{ctx}");
                        b.enqueue_unallocated(n);
                        model.extend(&data[..n]);
                    }
                    3 => {
                        // Out of order, then the hole before it.
                        let m = rng.gen_range(0, data.len() as u64) as usize;
                        let w2 = b.write_unallocated(m, &data[m..]);
                        let w1 = b.write_unallocated(0, &data[..m]);
                        let n = if w1 == m { m + w2 } else { w1 };
                        b.enqueue_unallocated(n);
                        model.extend(&data[..n]);
                    }
                    4 | 5 => {
                        let mut out = vec![0u8; rng.gen_range(0, cap as u64 + 20) as usize];
                        let n = b.dequeue_slice(&mut out);
                        assert_eq!(n, out.len().min(model.len()), "{ctx}");
                        let want: Vec<u8> = model.drain(..n).collect();
                        assert_eq!(&out[..n], &want[..], "{ctx}");
                    }
                    6 => {
                        let claim = rng.gen_range(0, cap as u64 + 5) as usize;
                        let mut seen = Vec::new();
                        let n = b.dequeue_with(|run| {
                            seen = run.to_vec();
                            claim
                        });
                        assert_eq!(seen.is_empty(), model.is_empty(), "{ctx}");
                        assert_eq!(n, claim.min(seen.len()), "{ctx}");
                        let want: Vec<u8> = model.iter().take(seen.len()).copied().collect();
                        assert_eq!(seen, want, "{ctx}");
                        model.drain(..n);
                    }
                    _ => {
                        if rng.gen_range(0, 20) == 0 {
                            cap += rng.gen_range(1, 30) as usize;
                            b.grow(cap);
                        }
                    }
                }
                returned += b.take_spent().count();
                assert_eq!(b.len(), model.len(), "{ctx}");
                assert_eq!(b.window(), cap - model.len(), "{ctx}");
                assert!(b.kept.is_empty() || b.kept_len > 0, "{ctx}");
            }
            let mut rest = vec![0u8; b.len()];
            assert_eq!(b.dequeue_slice(&mut rest), rest.len());
            assert_eq!(rest, model.drain(..).collect::<Vec<u8>>(), "round {round}");
            returned += b.take_spent().count();
            assert_eq!(
                returned, kept,
                "round {round}: every kept packet comes back"
            );
        }
    }
}
