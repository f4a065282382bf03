//! An in-memory device: two packet queues. The runtime fills `rx` from the
//! TUN fd before taking the stack lock and drains `tx` to the fd after
//! releasing it, so no lock is held across device I/O. Tests use it to feed
//! the stack hand-made packets.

use super::{Device, Lent};
use crate::time::Instant;
use std::collections::VecDeque;
use std::io;

/// The smallest payload a lending queue ([`QueueDevice::lending`]) takes
/// on loan rather than copied. Measured on 2 cores (TUN, the runtime's
/// queue), three interleaved pairs, lending against copying: 64 KB
/// segments sending at MTU 65000 30.5-33.4 against 22.3-25.3 Gbit/s,
/// through the offload device 38.7-44.1 against 24.7-39.0; but 1448-byte
/// segments at MTU 1500 2.0-2.2 against 2.2-2.4 (a segment that small,
/// its checksum still to compute, saves less by skipping the copy than it
/// pays for the loan and a second iovec per write).
pub const LEND_MIN: usize = 4096;

#[derive(Debug, Default)]
pub struct QueueDevice {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
    /// Payloads on loan ([`Device::send_lent`]), front-aligned with `tx`:
    /// `tx_lent[i]` follows the headers `tx[i]` (packets pushed straight
    /// onto `tx` beyond its length have none). Take packets with
    /// [`QueueDevice::pop_tx`] where loans may be queued.
    pub tx_lent: VecDeque<Option<Lent>>,
    /// Take payloads of at least this many bytes on loan
    /// ([`Device::lend_min`]): set by a driver that writes `tx` out soon
    /// and drops each loan then (the runtime, every pass).
    pub lend_min: Option<usize>,
    /// Recycled buffers, so steady state allocates nothing.
    pub spare: Vec<Vec<u8>>,
    /// Recycled transmit buffers, kept at the length of the packet they
    /// last carried ([`QueueDevice::recycle_tx`]): `send_with` then
    /// zero-fills only growth beyond it, where a cleared buffer (a received
    /// ACK's, 52 bytes) cost a 64 KB `memset` before each 64 KB segment
    /// was built over it (1.5% of all samples sending at MTU 65000).
    pub tx_spare: Vec<Vec<u8>>,
    pub mtu: usize,
    /// Packets beyond this many in `tx` are dropped (`send` returns false).
    pub tx_limit: usize,
    /// Per-packet "checksum vouched for" flags, front-aligned with `rx`
    /// (packets pushed straight onto `rx` beyond its length count as false);
    /// filled by [`QueueDevice::push_rx`].
    pub rx_trusted: VecDeque<bool>,
    /// What `rx_checksum_trusted` reports for the last packet `recv` returned.
    last_trusted: bool,
    /// Reported by `capabilities` (default: the MTU, no segmentation).
    pub max_tso_segment: usize,
}

impl QueueDevice {
    pub fn new(mtu: usize) -> QueueDevice {
        QueueDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            tx_lent: VecDeque::new(),
            lend_min: None,
            spare: Vec::new(),
            tx_spare: Vec::new(),
            mtu,
            tx_limit: 4096,
            rx_trusted: VecDeque::new(),
            last_trusted: false,
            max_tso_segment: mtu,
        }
    }

    /// A queue that takes the payloads of data segments on loan
    /// ([`Device::lend_min`]), for a driver that writes each pass's `tx`
    /// out before its next stack poll, with [`QueueDevice::pop_tx`]:
    /// payloads of [`LEND_MIN`] bytes or more.
    pub fn lending(mtu: usize) -> QueueDevice {
        QueueDevice {
            lend_min: Some(LEND_MIN),
            ..QueueDevice::new(mtu)
        }
    }

    /// A cleared buffer from the spare pool (or a new one).
    pub fn take_buffer(&mut self) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Queue a received packet with its checksum-trust flag
    /// (see [`Device::rx_checksum_trusted`]).
    pub fn push_rx(&mut self, packet: Vec<u8>, trusted: bool) {
        while self.rx_trusted.len() < self.rx.len() {
            self.rx_trusted.push_back(false);
        }
        self.rx.push_back(packet);
        self.rx_trusted.push_back(trusted);
    }

    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 4096 {
            self.spare.push(buf);
        }
    }

    /// The next packet to send: its bytes, or its headers and the payload
    /// on loan that follows them.
    pub fn pop_tx(&mut self) -> Option<(Vec<u8>, Option<Lent>)> {
        let p = self.tx.pop_front()?;
        Some((p, self.tx_lent.pop_front().flatten()))
    }

    /// Put a packet [`QueueDevice::pop_tx`] took back in front of `tx`.
    pub fn unpop_tx(&mut self, head: Vec<u8>, lent: Option<Lent>) {
        self.tx.push_front(head);
        // Loans are front-aligned with `tx`; none need be recorded past
        // the last one.
        if lent.is_some() || !self.tx_lent.is_empty() {
            self.tx_lent.push_front(lent);
        }
    }

    /// Give back a packet taken from `tx` once it is written, as it is.
    pub fn recycle_tx(&mut self, buf: Vec<u8>) {
        if self.tx_spare.len() < 4096 {
            self.tx_spare.push(buf);
        }
    }
}

impl Device for QueueDevice {
    fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.rx.pop_front() {
            Some(p) => {
                self.last_trusted = self.rx_trusted.pop_front().unwrap_or(false);
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                self.recycle(p);
                Ok(Some(n))
            }
            None => Ok(None),
        }
    }

    fn send(&mut self, _now: Instant, packet: &[u8]) -> io::Result<bool> {
        if self.tx.len() >= self.tx_limit {
            return Ok(false);
        }
        let mut b = self.tx_spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(packet);
        self.tx.push_back(b);
        Ok(true)
    }

    fn send_with(
        &mut self,
        _now: Instant,
        len: usize,
        build: &mut dyn FnMut(&mut [u8]),
    ) -> Option<io::Result<bool>> {
        if self.tx.len() >= self.tx_limit {
            return Some(Ok(false));
        }
        // A recycled buffer's old bytes are overwritten by `build`; only
        // growth is zero-filled, so a buffer that carried a packet as long
        // costs no fill at all.
        let mut b = self.tx_spare.pop().unwrap_or_default();
        b.resize(len, 0);
        build(&mut b);
        self.tx.push_back(b);
        Some(Ok(true))
    }

    fn lend_min(&self) -> Option<usize> {
        self.lend_min
    }

    fn send_lent(&mut self, now: Instant, head: &[u8], payload: Lent) -> io::Result<bool> {
        if self.lend_min.is_none() {
            return super::send_joined(self, now, head, payload);
        }
        if self.tx.len() >= self.tx_limit {
            return Ok(false);
        }
        while self.tx_lent.len() < self.tx.len() {
            self.tx_lent.push_back(None);
        }
        let mut b = self.tx_spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(head);
        self.tx.push_back(b);
        self.tx_lent.push_back(Some(payload));
        Ok(true)
    }

    fn take_rx(&mut self, _now: Instant) -> Option<(Vec<u8>, bool)> {
        let p = self.rx.pop_front()?;
        self.last_trusted = self.rx_trusted.pop_front().unwrap_or(false);
        Some((p, self.last_trusted))
    }

    fn recycle_rx(&mut self, buf: Vec<u8>) {
        self.recycle(buf);
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn capabilities(&self) -> super::Capabilities {
        super::Capabilities {
            max_tso_segment: self.max_tso_segment.max(self.mtu),
            tx_checksum_partial: false,
        }
    }

    fn rx_checksum_trusted(&self) -> bool {
        self.last_trusted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Instant;

    #[test]
    fn trust_flags_follow_their_packets() {
        let mut q = QueueDevice::new(1500);
        q.rx.push_back(vec![1]); // pushed without a flag: untrusted
        q.push_rx(vec![2], true);
        q.push_rx(vec![3], false);
        q.rx.push_back(vec![4]);
        let mut buf = [0u8; 8];
        let mut got = Vec::new();
        while let Some(n) = q.recv(Instant::ZERO, &mut buf).unwrap() {
            got.push((buf[..n].to_vec(), q.rx_checksum_trusted()));
        }
        assert_eq!(
            got,
            vec![
                (vec![1], false),
                (vec![2], true),
                (vec![3], false),
                (vec![4], false)
            ]
        );
    }

    #[test]
    fn packets_put_back_keep_their_order_and_loans() {
        use crate::lend::Backing;
        let backing = Backing::zeroed(8);
        let loan = |r: std::ops::Range<usize>| backing.lend(backing.range(r.start, r.len()));
        let now = Instant::ZERO;
        let mut q = QueueDevice::lending(1500);
        q.send(now, &[1]).unwrap();
        q.send_lent(now, &[2], loan(0..4).unwrap()).unwrap();
        q.send(now, &[3]).unwrap();
        let taken: Vec<_> = std::iter::from_fn(|| q.pop_tx()).take(2).collect();
        for (h, l) in taken.into_iter().rev() {
            q.unpop_tx(h, l);
        }
        let all: Vec<_> = std::iter::from_fn(|| q.pop_tx())
            .map(|(h, l)| (h, l.map(|l| l.len())))
            .collect();
        assert_eq!(
            all,
            vec![(vec![1], None), (vec![2], Some(4)), (vec![3], None)]
        );
        // Put back into a queue that records no loans: none recorded.
        let mut q = QueueDevice::new(1500);
        q.send(now, &[1]).unwrap();
        q.send(now, &[2]).unwrap();
        let (h, l) = q.pop_tx().unwrap();
        q.unpop_tx(h, l);
        assert!(q.tx_lent.is_empty());
        assert_eq!(q.pop_tx().unwrap().0, vec![1]);
    }

    #[test]
    fn a_written_packet_buffer_is_reused_for_the_next_one_in_place() {
        let mut q = QueueDevice::new(65535);
        let now = Instant::ZERO;
        let fill = |v: u8| move |b: &mut [u8]| b.fill(v);
        assert!(q.send_with(now, 9000, &mut fill(1)).unwrap().unwrap());
        let first = q.tx.pop_front().unwrap();
        let ptr = first.as_ptr();
        q.recycle_tx(first);
        // Same allocation, rebuilt in place (shorter, then as long again).
        q.send_with(now, 40, &mut fill(2));
        let ack = q.tx.pop_front().unwrap();
        assert_eq!((ack.as_ptr(), ack.as_slice()), (ptr, &[2u8; 40][..]));
        q.recycle_tx(ack);
        q.send_with(now, 9000, &mut fill(3));
        let again = q.tx.pop_front().unwrap();
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.len() == 9000 && again.iter().all(|&b| b == 3));
        q.recycle_tx(again);
        // The copying path takes the same pool and leaves no old bytes.
        q.send(now, &[7, 8, 9]).unwrap();
        assert_eq!(q.tx.pop_front().unwrap(), vec![7, 8, 9]);
    }
}
