//! UDP sockets: bounded receive queues of datagrams with their source.

use std::collections::VecDeque;
use std::net::SocketAddrV4;

/// One bound UDP socket's receive side. Datagrams beyond the byte limit are
/// dropped (counted), like a full socket buffer in the kernel.
#[derive(Debug)]
pub struct UdpSocket {
    local_port: u16,
    rx: VecDeque<(SocketAddrV4, Vec<u8>)>,
    rx_bytes: usize,
    rx_limit: usize,
    pub dropped_full: u64,
}

impl UdpSocket {
    pub fn new(local_port: u16, rx_limit: usize) -> UdpSocket {
        UdpSocket {
            local_port,
            rx: VecDeque::new(),
            rx_bytes: 0,
            rx_limit,
            dropped_full: 0,
        }
    }

    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Queue a received datagram; false (and counted) if the queue is full.
    pub fn push(&mut self, from: SocketAddrV4, payload: &[u8]) -> bool {
        let _ = (from, payload, &self.rx, self.rx_bytes, self.rx_limit);
        todo!()
    }

    /// Pop the next datagram into `buf` (truncating like recvfrom); returns
    /// (bytes copied, source) or None if empty.
    pub fn pop(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddrV4)> {
        let _ = buf;
        todo!()
    }

    pub fn can_recv(&self) -> bool {
        !self.rx.is_empty()
    }
}
