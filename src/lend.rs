//! Zero-copy hand-offs between the device and the sockets' buffers.
//!
//! Sending: send-buffer bytes lent to a device write, so a segment's
//! payload goes from the socket's send buffer to the kernel with no copy in
//! between. Receiving: a large packet's buffer kept by the receive buffer
//! ([`PacketBuf`]), so the application reads the payload from where the
//! device wrote it (see [`crate::tcp::buffer::RecvBuffer`]).
//!
//! A TCP send buffer ([`crate::tcp::buffer::RingBuffer`]) keeps its bytes
//! in a [`Backing`]: one allocation behind an `Arc`. When the stack emits a
//! data segment to a device that [`crate::phy::Device::lends`], it builds
//! only the headers and hands the device a [`Lent`]: a reference to the
//! payload's bytes that also holds the allocation alive. The runtime then
//! writes headers and payload with one `writev`, after it has released the
//! stack lock, and drops the loan. Without it, each payload was copied into
//! a packet buffer under the lock and then copied again by the kernel
//! (that first copy was 21% of the event loop's samples sending at 64 KB
//! segments through the offload device).
//!
//! The rule that makes it sound: lent bytes are never written while a loan
//! is alive. A send buffer only ever writes into its free space, and lent
//! bytes are queued (unacknowledged) bytes when lent. They can become free
//! space only through an acknowledgment or a reset; the buffer remembers
//! if it freed bytes while a loan of its storage was alive (the `Arc` not
//! unique, [`Backing::is_unique`]), and then before it next writes it
//! checks again that no loan is left or, if one is, moves to a fresh copy
//! of its storage. The runtime drops
//! every loan at the end of the pass that made it, before its next stack
//! poll, so in practice the copy happens only when a sending thread's write
//! and the loop's processing of an acknowledgment race.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

/// One heap allocation of bytes, written only through [`Backing`] by its
/// single owner and read by loans ([`Lent`]) of ranges the owner no longer
/// writes.
struct Storage {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the storage is a plain byte allocation. Who writes which bytes
// when is the owner's rule (see the module docs); the allocation itself
// may be freed from any thread.
unsafe impl Send for Storage {}
unsafe impl Sync for Storage {}

impl Drop for Storage {
    fn drop(&mut self) {
        // SAFETY: ptr and len came from `Box::into_raw` of a boxed slice
        // of exactly this length, freed only here.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            )));
        }
    }
}

/// A send buffer's storage: zero-filled bytes its owner reads and writes
/// through raw ranges (never a reference to the whole, which would alias a
/// range the kernel is reading for a loan).
pub struct Backing(Arc<Storage>);

impl Backing {
    /// `len` zeroed bytes.
    pub fn zeroed(len: usize) -> Backing {
        Backing::from_box(vec![0u8; len].into_boxed_slice())
    }

    fn from_box(b: Box<[u8]>) -> Backing {
        let len = b.len();
        // SAFETY: Box::into_raw never returns null.
        let ptr = unsafe { NonNull::new_unchecked(Box::into_raw(b).cast::<u8>()) };
        Backing(Arc::new(Storage { ptr, len }))
    }

    pub fn len(&self) -> usize {
        self.0.len
    }

    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// True if no loan of these bytes is alive: the owner may write any of
    /// them. One load of the count, no atomic write: loans are made only
    /// through the owner (`lend` on a `Backing` it lent out), so no other
    /// thread can raise the count meanwhile; the acquire fence pairs with
    /// the release decrement of the last loan's drop (as `Arc` does), so
    /// that loan's reads happen before the owner's next write.
    pub fn is_unique(&self) -> bool {
        let unique = Arc::strong_count(&self.0) == 1;
        if unique {
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        }
        unique
    }

    /// Bytes `start..start + n`.
    pub fn range(&self, start: usize, n: usize) -> &[u8] {
        assert!(start <= self.0.len && n <= self.0.len - start);
        // SAFETY: in bounds (checked); nobody writes these bytes while
        // `&self` is held: the owner writes only through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.0.ptr.as_ptr().add(start), n) }
    }

    /// Bytes `start..start + n`, to write. The caller (the ring) keeps the
    /// rule of the module docs: no loan alive covers them.
    pub fn range_mut(&mut self, start: usize, n: usize) -> &mut [u8] {
        assert!(start <= self.0.len && n <= self.0.len - start);
        // SAFETY: in bounds (checked); exclusive to us through `&mut self`
        // except for ranges lent, which the caller does not ask for.
        unsafe { std::slice::from_raw_parts_mut(self.0.ptr.as_ptr().add(start), n) }
    }

    /// A copy, for an owner that must write where a loan may still be read.
    pub fn copied(&self) -> Backing {
        Backing::from_box(self.range(0, self.len()).into())
    }

    /// Lend `bytes`, which must lie inside this storage (`None` otherwise).
    /// The owner must have recorded that it lends (see the module docs).
    pub fn lend(&self, bytes: &[u8]) -> Option<Lent> {
        let base = self.0.ptr.as_ptr() as usize;
        let at = (bytes.as_ptr() as usize).checked_sub(base)?;
        if at > self.0.len || bytes.len() > self.0.len - at {
            return None;
        }
        Some(Lent {
            keep: self.0.clone(),
            at,
            len: bytes.len(),
        })
    }
}

impl fmt::Debug for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backing({} bytes)", self.0.len)
    }
}

impl PartialEq for Backing {
    fn eq(&self, other: &Backing) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Backing {}

/// Bytes of a send buffer on loan to a device write ([`Backing::lend`]):
/// unchanged, and their storage alive, until this is dropped.
pub struct Lent {
    keep: Arc<Storage>,
    at: usize,
    len: usize,
}

impl Lent {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: in bounds (checked by `Backing::lend`); the owner does
        // not write lent bytes while a loan is alive (module docs), and
        // `keep` holds the allocation.
        unsafe { std::slice::from_raw_parts(self.keep.ptr.as_ptr().add(self.at), self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Lent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lent({} bytes)", self.len)
    }
}

/// A received packet's buffer, shared so that a receive buffer can keep
/// it and let the application read its payload from it, instead of copying
/// the payload into its ring ([`crate::tcp::buffer::RecvBuffer`]). The
/// stack gives buffers back to the device once nothing holds them.
#[derive(Clone)]
pub struct PacketBuf(Arc<Vec<u8>>);

impl PacketBuf {
    pub fn new(packet: Vec<u8>) -> PacketBuf {
        PacketBuf(Arc::new(packet))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Where `part` starts in this buffer, if it lies inside it.
    pub fn offset_of(&self, part: &[u8]) -> Option<usize> {
        let at = (part.as_ptr() as usize).checked_sub(self.0.as_ptr() as usize)?;
        (at <= self.0.len() && part.len() <= self.0.len() - at).then_some(at)
    }

    /// The buffer back, if nothing else holds it.
    pub fn into_inner(self) -> Option<Vec<u8>> {
        Arc::try_unwrap(self.0).ok()
    }
}

/// Part of a received packet's payload, taken out of a receive buffer for
/// the application to copy without holding the stack
/// ([`crate::tcp::buffer::RecvBuffer::take_kept`]).
#[derive(Debug)]
pub struct PacketSlice {
    packet: PacketBuf,
    at: usize,
    end: usize,
}

impl PacketSlice {
    pub(crate) fn new(packet: PacketBuf, at: usize, end: usize) -> PacketSlice {
        assert!(at <= end && end <= packet.bytes().len());
        PacketSlice { packet, at, end }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.packet.bytes()[self.at..self.end]
    }

    /// The packet's buffer, if this held the last reference to it.
    pub fn into_buffer(self) -> Option<Vec<u8>> {
        self.packet.into_inner()
    }
}

impl fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PacketBuf({} bytes)", self.0.len())
    }
}

impl PartialEq for PacketBuf {
    fn eq(&self, other: &PacketBuf) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PacketBuf {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loan_keeps_its_bytes_alive_and_makes_the_storage_shared() {
        let mut b = Backing::zeroed(16);
        b.range_mut(4, 4).copy_from_slice(b"abcd");
        assert!(b.is_unique());
        let lent = b.lend(b.range(4, 4)).unwrap();
        assert!(!b.is_unique());
        drop(b);
        assert_eq!(lent.bytes(), b"abcd");
    }

    #[test]
    fn only_bytes_inside_the_storage_can_be_lent() {
        let b = Backing::zeroed(8);
        let other = [0u8; 4];
        assert!(b.lend(&other).is_none());
        assert!(b.lend(b.range(8, 0)).is_some());
        let whole = b.range(0, 8);
        assert!(b.lend(whole).is_some());
        let b2 = b.copied();
        assert!(b2.is_unique());
        assert_ne!(b, b2);
        assert!(b2.lend(b.range(0, 1)).is_none());
    }
}
