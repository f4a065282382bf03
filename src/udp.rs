//! UDP sockets: bounded receive queues of datagrams with their source.

use std::collections::VecDeque;
use std::net::SocketAddrV4;

/// Most datagrams one socket queues, whatever their size.
pub const MAX_QUEUED: usize = 4096;

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

    /// Queue a received datagram; false (and counted) if the queue is full:
    /// its payload would take the queued bytes past the limit, or
    /// [`MAX_QUEUED`] datagrams are already waiting (so that a flood of empty
    /// datagrams cannot grow the queue without bound).
    pub fn push(&mut self, from: SocketAddrV4, payload: &[u8]) -> bool {
        if self.rx_bytes + payload.len() > self.rx_limit || self.rx.len() >= MAX_QUEUED {
            self.dropped_full += 1;
            return false;
        }
        self.rx_bytes += payload.len();
        self.rx.push_back((from, payload.to_vec()));
        true
    }

    /// Pop the next datagram into `buf` (truncating like recvfrom); returns
    /// (bytes copied, source) or None if empty.
    /// The rest of a datagram longer than `buf` is discarded.
    pub fn pop(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddrV4)> {
        let (from, data) = self.rx.pop_front()?;
        self.rx_bytes -= data.len();
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Some((n, from))
    }

    /// Bytes of payload queued.
    pub fn rx_queued_bytes(&self) -> usize {
        self.rx_bytes
    }

    pub fn can_recv(&self) -> bool {
        !self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn from(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), port)
    }

    #[test]
    fn datagrams_pop_in_order_with_source() {
        let mut s = UdpSocket::new(7, 1000);
        assert!(!s.can_recv());
        assert!(s.push(from(1), b"one"));
        assert!(s.push(from(2), b"two!"));
        let mut buf = [0u8; 64];
        assert_eq!(s.pop(&mut buf), Some((3, from(1))));
        assert_eq!(&buf[..3], b"one");
        assert_eq!(s.pop(&mut buf), Some((4, from(2))));
        assert_eq!(&buf[..4], b"two!");
        assert_eq!(s.pop(&mut buf), None);
        assert_eq!(s.rx_queued_bytes(), 0);
    }

    #[test]
    fn pop_truncates_like_recvfrom_and_discards_the_rest() {
        let mut s = UdpSocket::new(7, 1000);
        s.push(from(1), b"0123456789");
        s.push(from(1), b"next");
        let mut buf = [0u8; 4];
        assert_eq!(s.pop(&mut buf), Some((4, from(1))));
        assert_eq!(&buf, b"0123");
        assert_eq!(s.pop(&mut buf), Some((4, from(1))));
        assert_eq!(&buf, b"next", "the tail of the first datagram is gone");
    }

    #[test]
    fn byte_limit_drops_and_counts() {
        let mut s = UdpSocket::new(7, 10);
        assert!(s.push(from(1), &[0; 6]));
        assert!(!s.push(from(1), &[0; 5]));
        assert_eq!(s.dropped_full, 1);
        assert!(s.push(from(1), &[0; 4]), "exactly at the limit fits");
        let mut buf = [0u8; 16];
        s.pop(&mut buf);
        assert!(s.push(from(1), &[0; 6]), "popping frees room");
        assert_eq!(s.dropped_full, 1);
    }

    #[test]
    fn empty_datagrams_are_bounded_by_count() {
        let mut s = UdpSocket::new(7, 1000);
        for _ in 0..MAX_QUEUED {
            assert!(s.push(from(1), b""));
        }
        assert!(!s.push(from(1), b""));
        assert_eq!(s.dropped_full, 1);
        let mut buf = [0u8; 1];
        assert_eq!(s.pop(&mut buf), Some((0, from(1))));
    }
}
