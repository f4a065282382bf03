//! Blocking, std-like socket handles over a running [`Net`].
//!
//! `TcpStream` implements `Read + Write` (for `&TcpStream` too), so rustls'
//! `StreamOwned`, `std::io::copy` and ordinary code work on it. Each call
//! locks the stack only to move bytes; waiting happens on a per-socket
//! condition variable that the event loop signals.

use super::{deadline_from, Net, Shared, WaitFor};
use crate::lend::PacketSlice;
use crate::stack::{SocketHandle, StackError};
use crate::tcp::{State, TcpError, TcpStats};
use crate::time::Duration;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddrV4};
use std::sync::{Arc, Mutex};

fn err_would_block<T>(r: Result<T, TcpError>) -> Option<io::Result<T>> {
    match r {
        Err(TcpError::WouldBlock) => None,
        other => Some(other.map_err(io::Error::from)),
    }
}

/// A listening TCP socket on the stack.
pub struct TcpListener {
    shared: Arc<Shared>,
    h: SocketHandle,
    port: u16,
}

impl TcpListener {
    /// Listen on `port` with a backlog of 128 (Linux's default somaxconn is 4096; 128 is the classic value).
    pub fn bind(net: &Net, port: u16) -> io::Result<TcpListener> {
        TcpListener::bind_with_backlog(net, port, 128)
    }

    pub fn bind_with_backlog(net: &Net, port: u16, backlog: usize) -> io::Result<TcpListener> {
        let shared = net.shared().clone();
        let h = shared.lock().stack.tcp_listen(port, backlog)?;
        Ok(TcpListener { shared, h, port })
    }

    pub fn local_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.shared.lock().stack.addr(), self.port)
    }

    /// Wait for the next established connection.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddrV4)> {
        self.accept_timeout(None)
    }

    /// `accept` with a deadline (`TimedOut` when it passes).
    pub fn accept_timeout(
        &self,
        timeout: Option<Duration>,
    ) -> io::Result<(TcpStream, SocketAddrV4)> {
        let h = self
            .shared
            .wait_for(self.h, WaitFor::Read, deadline_from(timeout), |stack| {
                err_would_block(stack.tcp_accept(self.h))
            })?;
        let peer = self
            .shared
            .lock()
            .stack
            .tcp_peer_addr(h)
            .ok_or_else(|| io::Error::from(TcpError::NotConnected))?;
        Ok((TcpStream::from_handle(self.shared.clone(), h), peer))
    }

    /// Accept without blocking: `Ok(None)` if no connection is ready.
    pub fn try_accept(&self) -> io::Result<Option<(TcpStream, SocketAddrV4)>> {
        let mut g = self.shared.lock();
        match g.stack.tcp_accept(self.h) {
            Ok(h) => {
                let peer = g
                    .stack
                    .tcp_peer_addr(h)
                    .ok_or_else(|| io::Error::from(TcpError::NotConnected))?;
                drop(g);
                Ok(Some((TcpStream::from_handle(self.shared.clone(), h), peer)))
            }
            Err(TcpError::WouldBlock) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn incoming(&self) -> impl Iterator<Item = io::Result<TcpStream>> + '_ {
        std::iter::from_fn(move || Some(self.accept().map(|(s, _)| s)))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.shared.lock().stack.tcp_listener_close(self.h);
        self.shared.forget_waiter(self.h);
        self.shared.wake();
    }
}

struct StreamInner {
    shared: Arc<Shared>,
    h: SocketHandle,
    read_timeout: Mutex<Option<Duration>>,
    write_timeout: Mutex<Option<Duration>>,
}

impl Drop for StreamInner {
    fn drop(&mut self) {
        self.shared.lock().stack.tcp_close(self.h);
        self.shared.forget_waiter(self.h);
        self.shared.wake();
    }
}

/// A TCP connection on the stack. Cloning (`try_clone`) shares the
/// connection; it closes when the last clone is dropped.
#[derive(Clone)]
pub struct TcpStream {
    inner: Arc<StreamInner>,
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .field("state", &self.state())
            .finish()
    }
}

impl TcpStream {
    fn from_handle(shared: Arc<Shared>, h: SocketHandle) -> TcpStream {
        TcpStream {
            inner: Arc::new(StreamInner {
                shared,
                h,
                read_timeout: Mutex::new(None),
                write_timeout: Mutex::new(None),
            }),
        }
    }

    /// Connect to `addr` and wait for the handshake (SYN retries bound the wait).
    pub fn connect(net: &Net, addr: SocketAddrV4) -> io::Result<TcpStream> {
        TcpStream::connect_inner(net, addr, None)
    }

    /// Connect, giving up with `TimedOut` after `timeout` (like std's).
    pub fn connect_timeout(
        net: &Net,
        addr: SocketAddrV4,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        TcpStream::connect_inner(net, addr, Some(timeout))
    }

    fn connect_inner(
        net: &Net,
        addr: SocketAddrV4,
        timeout: Option<Duration>,
    ) -> io::Result<TcpStream> {
        let shared = net.shared().clone();
        let h = {
            let mut g = shared.lock();
            let now = shared.clock.now();
            g.stack.tcp_connect(now, addr).map_err(io::Error::from)?
        };
        shared.wake();
        let stream = TcpStream::from_handle(shared.clone(), h);
        let r = shared.wait_for(
            h,
            WaitFor::Write,
            deadline_from(timeout),
            |stack| match stack.tcp_state(h) {
                Some(State::SynSent) | Some(State::SynReceived) => None,
                Some(State::Closed) | None => Some(Err(io::Error::from(
                    stack.tcp_error(h).unwrap_or(TcpError::NotConnected),
                ))),
                Some(_) => Some(Ok(())),
            },
        );
        match r {
            Ok(()) => Ok(stream),
            Err(e) => {
                shared.lock().stack.tcp_abort(h);
                Err(e)
            }
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(self.clone())
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        *self
            .inner
            .read_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = t;
        Ok(())
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        *self
            .inner
            .write_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = t;
        Ok(())
    }

    /// Disable (true) or enable (false) Nagle's algorithm.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.shared()
            .lock()
            .stack
            .tcp_set_nodelay(self.inner.h, nodelay)?;
        self.shared().wake();
        Ok(())
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        self.shared()
            .lock()
            .stack
            .tcp_peer_addr(self.inner.h)
            .ok_or_else(|| TcpError::NotConnected.into())
    }

    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        self.shared()
            .lock()
            .stack
            .tcp_local_addr(self.inner.h)
            .ok_or_else(|| TcpError::NotConnected.into())
    }

    pub fn state(&self) -> Option<State> {
        self.shared().lock().stack.tcp_state(self.inner.h)
    }

    pub fn stats(&self) -> Option<TcpStats> {
        self.shared().lock().stack.tcp_stats(self.inner.h)
    }

    /// `Shutdown::Write` (or `Both`) sends FIN after queued data; `Read` is a no-op.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.shared().lock().stack.tcp_shutdown(self.inner.h)?;
            self.shared().wake();
        }
        Ok(())
    }

    /// Wait until everything written has been acknowledged by the peer.
    pub fn wait_acked(&self, timeout: Option<Duration>) -> io::Result<()> {
        let h = self.inner.h;
        self.shared()
            .wait_for(h, WaitFor::Write, deadline_from(timeout), |stack| {
                if let Some(e) = stack.tcp_error(h) {
                    return Some(Err(e.into()));
                }
                (stack.tcp_send_queue(h) == 0).then_some(Ok(()))
            })
    }

    fn read_inner(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.inner.h;
        let timeout = *self
            .inner
            .read_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Wake the event loop only when the read has something for it to
        // send: a window update (the TCB sets `ack_now` when the window grew
        // enough), or end of stream. A small read that leaves the window
        // about where the peer knows it needs no loop pass; the dirty mark
        // `tcp_recv` left is handled on the loop's next pass. This saves a
        // waker write and a loop wake-up per message received.
        //
        // Bytes the stack holds as received packets (large segments it
        // kept rather than copied) are taken out under the lock and copied
        // after it is released, so the loop is not held up by this copy.
        let mut taken = Vec::new();
        let (n, wake) =
            self.shared()
                .wait_for(h, WaitFor::Read, deadline_from(timeout), |stack| {
                    match stack.tcp_recv_kept(h, buf.len(), &mut taken) {
                        Ok(n) if n > 0 => Some(Ok(n)),
                        _ => err_would_block(stack.tcp_recv(h, buf)),
                    }
                    .map(|r| r.map(|n| (n, n == 0 || stack.tcp_ack_due(h))))
                })?;
        if !taken.is_empty() {
            let mut at = 0;
            for part in &taken {
                let b = part.bytes();
                buf[at..at + b.len()].copy_from_slice(b);
                at += b.len();
            }
            self.shared()
                .return_rx_buffers(taken.into_iter().filter_map(PacketSlice::into_buffer));
        }
        if wake {
            self.shared().kick();
        }
        Ok(n)
    }

    fn write_inner(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.inner.h;
        let timeout = *self
            .inner
            .write_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = self
            .shared()
            .wait_for(h, WaitFor::Write, deadline_from(timeout), |stack| {
                err_would_block(stack.tcp_send(h, buf))
            })?;
        self.shared().kick();
        Ok(n)
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A UDP socket on the stack.
pub struct UdpSocket {
    shared: Arc<Shared>,
    h: SocketHandle,
    port: u16,
    read_timeout: Mutex<Option<Duration>>,
}

impl UdpSocket {
    /// Bind `port` (0 for an ephemeral port).
    pub fn bind(net: &Net, port: u16) -> io::Result<UdpSocket> {
        let shared = net.shared().clone();
        let (h, port) = {
            let mut g = shared.lock();
            let h = g.stack.udp_bind(port)?;
            let port = g.stack.udp_local_port(h).ok_or(StackError::InvalidHandle)?;
            (h, port)
        };
        Ok(UdpSocket {
            shared,
            h,
            port,
            read_timeout: Mutex::new(None),
        })
    }

    pub fn local_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.shared.lock().stack.addr(), self.port)
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        *self.read_timeout.lock().unwrap_or_else(|e| e.into_inner()) = t;
        Ok(())
    }

    pub fn send_to(&self, buf: &[u8], dst: SocketAddrV4) -> io::Result<usize> {
        let n = self.shared.lock().stack.udp_send_to(self.h, buf, dst)?;
        self.shared.wake();
        Ok(n)
    }

    /// Send several datagrams under one lock and one wake of the stack
    /// thread (a server answering a burst). Every datagram is tried; the
    /// first error, if any, is returned.
    pub fn send_to_many<'a>(
        &self,
        dgrams: impl IntoIterator<Item = (&'a [u8], SocketAddrV4)>,
    ) -> io::Result<()> {
        let mut first_err = None;
        {
            let mut g = self.shared.lock();
            for (b, dst) in dgrams {
                if let Err(e) = g.stack.udp_send_to(self.h, b, dst) {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.shared.wake();
        first_err.map_or(Ok(()), |e| Err(io::Error::from(e)))
    }

    /// Receive without waiting: `Ok(None)` when nothing is queued.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddrV4)>> {
        match self.shared.lock().stack.udp_recv_from(self.h, buf) {
            Ok(r) => Ok(Some(r)),
            Err(TcpError::WouldBlock) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        let timeout = *self.read_timeout.lock().unwrap_or_else(|e| e.into_inner());
        self.shared
            .wait_for(self.h, WaitFor::Read, deadline_from(timeout), |stack| {
                err_would_block(stack.udp_recv_from(self.h, buf))
            })
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.shared.lock().stack.udp_close(self.h);
        self.shared.forget_waiter(self.h);
    }
}
