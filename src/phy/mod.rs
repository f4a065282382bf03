//! Devices: moving whole IP packets in and out.
//!
//! [`Device`] is the one seam between the stack and the world. The TUN device
//! ([`tun::TunDevice`]) and the simulator's link endpoint implement it, and so
//! do the wrappers: [`pcap::PcapWriter`] (trace to a file tcpdump reads) and
//! [`fault::FaultInjector`] (seeded drop/duplicate/reorder/corrupt).

pub mod fault;
pub mod pcap;
pub mod queue;
pub mod tun;
pub mod uring;
pub mod vnet;

pub use crate::lend::Lent;
use crate::time::Instant;
use queue::QueueDevice;
use std::io;

pub trait Device {
    /// Receive one packet into `buf` (which is at least `mtu()` long).
    /// `Ok(None)` when nothing is ready now. A packet longer than `buf` is
    /// truncated (the IP layer then counts it as malformed).
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>>;

    /// Send one packet. If the device cannot take it now the packet is
    /// dropped and `Ok(false)` returned; TCP recovers as from any loss.
    fn send(&mut self, now: Instant, packet: &[u8]) -> io::Result<bool>;

    /// Receive one packet straight into `buf`, which is cleared first and
    /// holds the packet (at most `max` bytes) afterwards: the kernel writes
    /// into the vector's spare capacity, sparing both the copy out of a
    /// separate read buffer and the zero-fill a resized vector would need.
    /// `None`: the device cannot (`buf` untouched); use `recv`.
    fn recv_vec(
        &mut self,
        _now: Instant,
        _buf: &mut Vec<u8>,
        _max: usize,
    ) -> Option<io::Result<Option<usize>>> {
        None
    }

    /// Send one packet of `len` bytes that `build` writes in place, in the
    /// device's own buffer (sparing the copy `send` makes). `None`: the
    /// device has no such buffer (`build` was not called); use `send`.
    fn send_with(
        &mut self,
        _now: Instant,
        _len: usize,
        _build: &mut dyn FnMut(&mut [u8]),
    ) -> Option<io::Result<bool>> {
        None
    }

    /// `Some(n)` if [`Device::send_lent`] takes payloads on loan instead of
    /// copying them, and payloads of at least `n` bytes are worth it: the
    /// stack then sends such data segments that way ([`crate::lend`]).
    /// Default: `None`.
    fn lend_min(&self) -> Option<usize> {
        None
    }

    /// Send one packet made of `head` (the IP and TCP headers, the IP
    /// total length counting the payload) and `payload`, bytes on loan
    /// from a send buffer: drop the loan once the packet is written (or
    /// dropped). As [`Device::send`] otherwise. The default copies both
    /// into one buffer and calls `send`.
    fn send_lent(&mut self, now: Instant, head: &[u8], payload: Lent) -> io::Result<bool> {
        send_joined(self, now, head, payload)
    }

    /// Receive up to `max_packets` packets of at most `max_len` bytes into
    /// buffers from `q`'s pool, queued on `q.rx` with their trust flags
    /// ([`QueueDevice::push_rx`]), with as few system calls as the device
    /// can make; returns how many were queued (fewer than `max_packets`:
    /// the device had no more). `None`: the device reads one packet at a
    /// time; use `recv_vec` or `recv`.
    fn recv_batch(
        &mut self,
        _now: Instant,
        _q: &mut QueueDevice,
        _max_packets: usize,
        _max_len: usize,
    ) -> Option<io::Result<usize>> {
        None
    }

    /// Send every packet of `q.tx` in order ([`QueueDevice::pop_tx`]:
    /// headers, and a payload on loan that ends once it is written), as
    /// [`Device::send`] and [`Device::send_lent`] would, with as few system
    /// calls as the device can make, and give the buffers back
    /// ([`QueueDevice::recycle_tx`]). Returns how many were written (the
    /// rest dropped); an error, the last a write met, after every packet
    /// was tried. The default sends one packet at a time.
    fn send_batch(&mut self, now: Instant, q: &mut QueueDevice) -> io::Result<usize> {
        send_each(self, now, q)
    }

    /// Hand over the next received packet held in memory, with its
    /// checksum-trust flag (see [`Device::rx_checksum_trusted`]), sparing
    /// the copy `recv` makes; give the buffer back with
    /// [`Device::recycle_rx`]. `None`: nothing held this way; use `recv`.
    fn take_rx(&mut self, _now: Instant) -> Option<(Vec<u8>, bool)> {
        None
    }

    /// Return a buffer [`Device::take_rx`] handed over.
    fn recycle_rx(&mut self, _buf: Vec<u8>) {}

    /// Largest packet this device carries.
    fn mtu(&self) -> usize;

    /// Earliest time a packet held inside the device (a reordering or delay
    /// wrapper) becomes receivable; `None` if nothing is held.
    fn poll_at(&self) -> Option<Instant> {
        None
    }

    /// What the device can do beyond moving MTU-sized packets.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_tso_segment: self.mtu(),
            tx_checksum_partial: false,
        }
    }

    /// True if the packet the last `recv` returned is a TCP segment whose
    /// checksum the device (the kernel, through a vnet header) vouches for:
    /// it may hold only a partial sum, so the stack must not verify it.
    fn rx_checksum_trusted(&self) -> bool {
        false
    }

    /// A second sender for this device, to write from another thread while
    /// this one goes on receiving ([`TxHalf`]); `None` (the default) where
    /// the device's sends share state with its receives (a trace file, a
    /// fault injector's send-side faults) or it has no such handle.
    fn split_tx(&mut self) -> Option<Box<dyn TxHalf>> {
        None
    }
}

/// [`Device::send_lent`] for a device that takes no loans: headers and
/// payload copied into one buffer, sent with [`Device::send`].
pub fn send_joined<D: Device + ?Sized>(
    dev: &mut D,
    now: Instant,
    head: &[u8],
    payload: Lent,
) -> io::Result<bool> {
    let mut packet = Vec::with_capacity(head.len() + payload.len());
    packet.extend_from_slice(head);
    packet.extend_from_slice(payload.bytes());
    drop(payload);
    dev.send(now, &packet)
}

/// [`Device::send_batch`] one packet at a time.
pub fn send_each<D: Device + ?Sized>(
    dev: &mut D,
    now: Instant,
    q: &mut QueueDevice,
) -> io::Result<usize> {
    let mut written = 0;
    let mut failed = None;
    while let Some((pkt, lent)) = q.pop_tx() {
        let r = match lent {
            None => dev.send(now, &pkt),
            Some(payload) => dev.send_lent(now, &pkt, payload),
        };
        match r {
            Ok(true) => written += 1,
            Ok(false) => {}
            Err(e) => failed = Some(e),
        }
        q.recycle_tx(pkt);
    }
    failed.map_or(Ok(written), Err)
}

/// The transmit side of a device, split off with [`Device::split_tx`]:
/// sends exactly as [`Device::send`] does, from a thread of its own. A TUN
/// device takes concurrent reads and writes on one file description, so
/// the runtime's writer thread can send while the event loop reads.
pub trait TxHalf: Send {
    /// As [`Device::send`].
    fn send(&mut self, packet: &[u8]) -> io::Result<bool>;

    /// Send `packets` in order, as [`Device::send_batch`]: how many were
    /// written, or the last error after every packet was tried.
    fn send_batch(&mut self, packets: &[Vec<u8>]) -> io::Result<usize> {
        send_each_tx(self, packets)
    }
}

/// [`TxHalf::send_batch`] one packet at a time.
pub fn send_each_tx<T: TxHalf + ?Sized>(tx: &mut T, packets: &[Vec<u8>]) -> io::Result<usize> {
    let mut written = 0;
    let mut failed = None;
    for p in packets {
        match tx.send(p) {
            Ok(true) => written += 1,
            Ok(false) => {}
            Err(e) => failed = Some(e),
        }
    }
    failed.map_or(Ok(written), Err)
}

/// Device capabilities the stack asks for (see [`Device::capabilities`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Largest IPv4 packet carrying one TCP segment that `send` accepts; the
    /// device cuts anything beyond the MTU into MTU-sized segments (TSO/GSO).
    /// Equal to the MTU when the device cannot segment.
    pub max_tso_segment: usize,
    /// The device completes TCP checksums (a vnet header with `NEEDS_CSUM`):
    /// whoever drives it must send every TCP segment with only the folded
    /// pseudo-header sum in its checksum field
    /// ([`crate::wire::tcp::TcpRepr::emit_with`]), sparing a pass over the
    /// payload on each side. Wrappers pass it through unchanged (a pcap
    /// trace then shows such checksums as the kernel's own captures do).
    pub tx_checksum_partial: bool,
}

/// A device behind a reference or a box is the device: every method
/// forwards, so a new `Device` method is forwarded in one place.
macro_rules! forward_device {
    ($($ty:ty),*) => {$(
        impl<D: Device + ?Sized> Device for $ty {
            fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
                (**self).recv(now, buf)
            }
            fn recv_vec(
                &mut self,
                now: Instant,
                buf: &mut Vec<u8>,
                max: usize,
            ) -> Option<io::Result<Option<usize>>> {
                (**self).recv_vec(now, buf, max)
            }
            fn send_with(
                &mut self,
                now: Instant,
                len: usize,
                build: &mut dyn FnMut(&mut [u8]),
            ) -> Option<io::Result<bool>> {
                (**self).send_with(now, len, build)
            }
            fn lend_min(&self) -> Option<usize> {
                (**self).lend_min()
            }
            fn send_lent(&mut self, now: Instant, head: &[u8], payload: Lent) -> io::Result<bool> {
                (**self).send_lent(now, head, payload)
            }
            fn recv_batch(
                &mut self,
                now: Instant,
                q: &mut QueueDevice,
                max_packets: usize,
                max_len: usize,
            ) -> Option<io::Result<usize>> {
                (**self).recv_batch(now, q, max_packets, max_len)
            }
            fn send_batch(&mut self, now: Instant, q: &mut QueueDevice) -> io::Result<usize> {
                (**self).send_batch(now, q)
            }
            fn take_rx(&mut self, now: Instant) -> Option<(Vec<u8>, bool)> {
                (**self).take_rx(now)
            }
            fn recycle_rx(&mut self, buf: Vec<u8>) {
                (**self).recycle_rx(buf)
            }
            fn send(&mut self, now: Instant, packet: &[u8]) -> io::Result<bool> {
                (**self).send(now, packet)
            }
            fn mtu(&self) -> usize {
                (**self).mtu()
            }
            fn poll_at(&self) -> Option<Instant> {
                (**self).poll_at()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            fn rx_checksum_trusted(&self) -> bool {
                (**self).rx_checksum_trusted()
            }
            fn split_tx(&mut self) -> Option<Box<dyn TxHalf>> {
                (**self).split_tx()
            }
        }
    )*};
}

forward_device!(&mut D, Box<D>);
