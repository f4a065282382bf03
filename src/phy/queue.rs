//! An in-memory device: two packet queues. The runtime fills `rx` from the
//! TUN fd before taking the stack lock and drains `tx` to the fd after
//! releasing it, so no lock is held across device I/O. Tests use it to feed
//! the stack hand-made packets.

use super::Device;
use crate::time::Instant;
use std::collections::VecDeque;
use std::io;

#[derive(Debug, Default)]
pub struct QueueDevice {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
    /// Recycled buffers, so steady state allocates nothing.
    pub spare: Vec<Vec<u8>>,
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
            spare: Vec::new(),
            mtu,
            tx_limit: 4096,
            rx_trusted: VecDeque::new(),
            last_trusted: false,
            max_tso_segment: mtu,
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
        let mut b = self.take_buffer();
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
        // growth is zero-filled.
        let mut b = self.spare.pop().unwrap_or_default();
        b.resize(len, 0);
        build(&mut b);
        self.tx.push_back(b);
        Some(Ok(true))
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
}
