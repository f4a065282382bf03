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
}

impl QueueDevice {
    pub fn new(mtu: usize) -> QueueDevice {
        QueueDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            spare: Vec::new(),
            mtu,
            tx_limit: 4096,
        }
    }

    /// A cleared buffer from the spare pool (or a new one).
    pub fn take_buffer(&mut self) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b
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

    fn mtu(&self) -> usize {
        self.mtu
    }
}
