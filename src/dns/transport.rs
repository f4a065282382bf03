//! [`StackTransport`]: the resolver's [`Transport`] over the stack's own
//! sockets ([`crate::runtime::UdpSocket`], [`crate::runtime::TcpStream`]),
//! so resolution traffic leaves through the TUN device instead of the
//! kernel's sockets.
//!
//! Each UDP query gets a fresh socket. The resolver picks a random source
//! port per query (`ResolverConfig::random_source_port`); when that port is
//! taken on the stack, or the resolver leaves the choice to us (port 0), the
//! stack's ephemeral allocator picks one. The stack is IPv4 only: an IPv6
//! server is an error (`Unsupported`), which the resolver treats like a
//! failed server.

use super::driver::{datagram_or_timeout, tcp_exchange, Transport};
use crate::runtime::{Net, TcpStream, UdpSocket};
use crate::time::Duration;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};

/// The stack's sockets. Counts what it sends.
pub struct StackTransport<'a> {
    net: &'a Net,
    sock: Option<UdpSocket>,
    /// UDP queries sent.
    pub udp_sent: u64,
    /// TCP queries sent.
    pub tcp_sent: u64,
    /// The source port of the last UDP query (for tests and `dig`).
    pub last_src_port: u16,
    /// Receive buffer, reused for every datagram (a fresh 64 KiB per
    /// answer cost a zeroed allocation each time).
    buf: Vec<u8>,
}

impl std::fmt::Debug for StackTransport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackTransport")
            .field("addr", &self.net.addr())
            .field("udp_sent", &self.udp_sent)
            .field("tcp_sent", &self.tcp_sent)
            .finish()
    }
}

fn v4(server: SocketAddr) -> io::Result<SocketAddrV4> {
    match server {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{a}: the stack speaks IPv4 only"),
        )),
    }
}

impl<'a> StackTransport<'a> {
    pub fn new(net: &'a Net) -> StackTransport<'a> {
        StackTransport {
            net,
            sock: None,
            udp_sent: 0,
            tcp_sent: 0,
            last_src_port: 0,
            buf: Vec::new(),
        }
    }

    pub fn queries_sent(&self) -> u64 {
        self.udp_sent + self.tcp_sent
    }
}

impl Transport for StackTransport<'_> {
    fn udp_send(&mut self, server: SocketAddr, src_port: u16, bytes: &[u8]) -> io::Result<()> {
        let dst = v4(server)?;
        // Close the previous query's socket first so its port is free again.
        self.sock = None;
        let sock = match UdpSocket::bind(self.net, src_port) {
            Ok(s) => s,
            Err(_) if src_port != 0 => UdpSocket::bind(self.net, 0)?,
            Err(e) => return Err(e),
        };
        sock.send_to(bytes, dst)?;
        self.udp_sent += 1;
        self.last_src_port = sock.local_addr().port();
        self.sock = Some(sock);
        Ok(())
    }

    fn udp_recv(&mut self, timeout: Duration) -> io::Result<Option<(SocketAddr, Vec<u8>)>> {
        let Some(sock) = &self.sock else {
            std::thread::sleep(timeout);
            return Ok(None);
        };
        sock.set_read_timeout(Some(timeout.max(Duration::from_micros(1))))?;
        if self.buf.is_empty() {
            self.buf = vec![0u8; 65535];
        }
        match sock.recv_from(&mut self.buf) {
            Ok((n, from)) => Ok(Some((from.into(), self.buf[..n].to_vec()))),
            r => datagram_or_timeout(r, Vec::new()),
        }
    }

    fn tcp_query(
        &mut self,
        server: SocketAddr,
        bytes: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        let dst = v4(server)?;
        let timeout = timeout.max(Duration::from_millis(1));
        let s = TcpStream::connect_timeout(self.net, dst, timeout)?;
        self.tcp_sent += 1;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        let mut r = &s;
        tcp_exchange(&mut r, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_server_is_unsupported_not_a_panic() {
        let a: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
        assert_eq!(v4(a).unwrap_err().kind(), io::ErrorKind::Unsupported);
        let b: SocketAddr = "192.0.2.1:53".parse().unwrap();
        assert_eq!(v4(b).unwrap(), "192.0.2.1:53".parse().unwrap());
    }
}
