//! The TCP connection state machine (the TCB of RFC 9293 §3.3.1).
//!
//! Sans-IO: the stack hands a TCB the segments addressed to its 4-tuple
//! ([`Tcb::process`]) and asks it for segments to send
//! ([`Tcb::poll_transmit`]), which also runs any expired timers;
//! [`Tcb::poll_at`] says when to ask again without input.

use super::seq::SeqNum;
use super::{State, TcpConfig, TcpError, TcpStats};
use crate::time::Instant;
use crate::wire::tcp::TcpRepr;
use std::net::SocketAddrV4;

#[derive(Debug)]
pub struct Tcb {
    local: SocketAddrV4,
    remote: SocketAddrV4,
    state: State,
}

impl Tcb {
    /// Active open: a TCB in SYN-SENT whose first `poll_transmit` emits the SYN
    /// (with MSS, and window scale / SACK-permitted / timestamps per config).
    pub fn connect(
        config: &TcpConfig,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        isn: SeqNum,
        now: Instant,
    ) -> Tcb {
        let _ = (config, isn, now);
        Tcb {
            local,
            remote,
            state: State::SynSent,
        }
    }

    /// Passive open: a listener received `syn` (SYN, no ACK, no RST) from
    /// `remote`. Returns a TCB in SYN-RECEIVED whose first `poll_transmit`
    /// emits the SYN-ACK.
    pub fn accept(
        config: &TcpConfig,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        syn: &TcpRepr,
        isn: SeqNum,
        now: Instant,
    ) -> Tcb {
        let _ = (config, syn, isn, now);
        Tcb {
            local,
            remote,
            state: State::SynReceived,
        }
    }

    /// Process one incoming segment for this connection (4-tuple matched,
    /// checksum already verified), per RFC 9293 §3.10.7.
    pub fn process(&mut self, now: Instant, seg: &TcpRepr) {
        let _ = (now, seg);
        todo!("Tcb::process")
    }

    /// Run expired timers, then return the next segment to send now, if any.
    /// The caller sends it (a lost send is recovered like a lost packet).
    /// Call repeatedly until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<TcpRepr<'_>> {
        let _ = now;
        todo!("Tcb::poll_transmit")
    }

    /// When `poll_transmit` must next be called even without new input
    /// (retransmission, delayed ACK, persist, TIME-WAIT, keep-alive timers).
    pub fn poll_at(&self) -> Option<Instant> {
        todo!()
    }

    /// Queue data for sending; returns bytes accepted (0 < n <= data.len()),
    /// `WouldBlock` if the send buffer is full, or the connection's error.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, TcpError> {
        let _ = data;
        todo!()
    }

    /// Read in-order data. `Ok(0)` means end of stream (FIN received and all
    /// data read); `WouldBlock` means nothing yet.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TcpError> {
        let _ = buf;
        todo!()
    }

    /// Half-close: send FIN after all queued data (RFC 9293 CLOSE call).
    pub fn shutdown(&mut self) {
        todo!()
    }

    /// Abort: send RST (if synchronized) and go to CLOSED.
    pub fn abort(&mut self) {
        todo!()
    }

    pub fn set_nodelay(&mut self, nodelay: bool) {
        let _ = nodelay;
        todo!()
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The error that ended (or refused) this connection, if any.
    pub fn error(&self) -> Option<TcpError> {
        todo!()
    }

    /// CLOSED with nothing left to send: the stack may forget this TCB.
    pub fn is_closed(&self) -> bool {
        todo!()
    }

    /// True if `recv` would return data, end of stream, or an error.
    pub fn can_recv(&self) -> bool {
        todo!()
    }

    /// Free space in the send buffer (0 once the write side is shut or failed).
    pub fn send_capacity(&self) -> usize {
        todo!()
    }

    /// Bytes queued but not yet acknowledged plus bytes not yet sent.
    pub fn send_queue(&self) -> usize {
        todo!()
    }

    pub fn local(&self) -> SocketAddrV4 {
        self.local
    }

    pub fn remote(&self) -> SocketAddrV4 {
        self.remote
    }

    pub fn stats(&self) -> TcpStats {
        todo!()
    }
}

/// The reset to send for a segment that matched no connection (RFC 9293
/// §3.10.7.1, CLOSED state): none for an incoming RST; otherwise
/// `<SEQ=SEG.ACK><CTL=RST>` if ACK was set, else `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`.
/// Ports are swapped.
pub fn reset_for(seg: &TcpRepr) -> Option<TcpRepr<'static>> {
    let _ = seg;
    todo!("tcp::conn::reset_for")
}
