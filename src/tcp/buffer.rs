//! A fixed-capacity byte ring buffer used for both directions.
//!
//! Send side: the application enqueues at the back; bytes stay until they are
//! acknowledged (`dequeue_allocated`); `get_allocated(offset, n)` reads
//! queued-but-unacknowledged bytes for (re)transmission.
//! Receive side: in-order payload is enqueued at the back; out-of-order payload
//! is written past the end with `write_unallocated` and later made readable by
//! `enqueue_unallocated` once the hole before it fills.

#[derive(Debug)]
pub struct RingBuffer {
    storage: Box<[u8]>,
    read_at: usize,
    len: usize,
}

impl RingBuffer {
    pub fn new(capacity: usize) -> RingBuffer {
        RingBuffer {
            storage: vec![0; capacity].into_boxed_slice(),
            read_at: 0,
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.storage.len()
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
        let _ = data;
        todo!()
    }

    /// Pop up to `buf.len()` bytes from the front; returns bytes copied.
    pub fn dequeue_slice(&mut self, buf: &mut [u8]) -> usize {
        let _ = buf;
        todo!()
    }

    /// Drop up to `count` bytes from the front; returns bytes dropped.
    pub fn dequeue_allocated(&mut self, count: usize) -> usize {
        let _ = count;
        todo!()
    }

    /// The longest contiguous slice of queued bytes starting `offset` bytes
    /// from the front, at most `max` long (may be shorter at the wrap point;
    /// empty if `offset >= len`).
    pub fn get_allocated(&self, offset: usize, max: usize) -> &[u8] {
        let _ = (offset, max);
        todo!()
    }

    /// Write `data` at `offset` bytes past the end of the queued data without
    /// making it readable; returns bytes written (clipped to free space).
    pub fn write_unallocated(&mut self, offset: usize, data: &[u8]) -> usize {
        let _ = (offset, data);
        todo!()
    }

    /// Make `count` bytes previously written by `write_unallocated` readable.
    pub fn enqueue_unallocated(&mut self, count: usize) {
        let _ = count;
        todo!()
    }
}
