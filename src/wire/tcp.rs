//! TCP segment representation, options (MSS, window scale, SACK-permitted,
//! SACK blocks, timestamps), parsing with checksum verification, and emission.

use super::WireError;
use crate::tcp::seq::SeqNum;
use std::net::Ipv4Addr;

/// Fixed TCP header length without options.
pub const HEADER_LEN: usize = 20;
/// Maximum TCP header length (with 40 bytes of options).
pub const MAX_HEADER_LEN: usize = 60;

/// Parsed TCP options. Unknown options are skipped (and counted by the caller
/// if it cares); malformed ones make the whole segment invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpOptions {
    /// Maximum segment size (kind 2), only meaningful on SYN.
    pub mss: Option<u16>,
    /// Window scale shift (kind 3), only meaningful on SYN. Values > 14 are
    /// clamped to 14 on parse (RFC 7323 §2.3).
    pub window_scale: Option<u8>,
    /// SACK permitted (kind 4), only meaningful on SYN.
    pub sack_permitted: bool,
    /// Up to 4 SACK blocks (kind 5): (left edge, right edge), right exclusive.
    /// Unused entries are `None`. Hook for RFC 2018; full use is issue 6.
    pub sack_blocks: [Option<(SeqNum, SeqNum)>; 4],
    /// Timestamps (kind 8): (TSval, TSecr). Hook for RFC 7323; full use is issue 6.
    pub timestamps: Option<(u32, u32)>,
}

/// A TCP segment as the protocol logic sees it. `ack` is `Some` iff the ACK
/// flag is set. `window` is the raw 16-bit field (unscaled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNum,
    pub ack: Option<SeqNum>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub urg: bool,
    pub ece: bool,
    pub cwr: bool,
    pub window: u16,
    pub urgent_ptr: u16,
    pub options: TcpOptions,
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Sequence space consumed: payload length plus one for SYN and one for FIN.
    pub fn segment_len(&self) -> usize {
        self.payload.len() + self.syn as usize + self.fin as usize
    }

    /// Length of the header this repr will emit (20 + padded options).
    pub fn header_len(&self) -> usize {
        HEADER_LEN + options_len(&self.options)
    }

    /// Total bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Parse a TCP segment (the IPv4 payload). With `verify_checksum`, the
    /// pseudo-header checksum over `src`/`dst` must verify.
    pub fn parse(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        segment: &'a [u8],
        verify_checksum: bool,
    ) -> Result<TcpRepr<'a>, WireError> {
        let _ = (src, dst, segment, verify_checksum);
        todo!("wire::tcp::TcpRepr::parse")
    }

    /// Write header, options and payload into `buf[..self.buffer_len()]`,
    /// filling in the checksum over the pseudo-header. Panics if `buf` is too short.
    pub fn emit(&self, src: Ipv4Addr, dst: Ipv4Addr, buf: &mut [u8]) -> usize {
        let _ = (src, dst, buf);
        todo!("wire::tcp::TcpRepr::emit")
    }
}

/// Bytes of options (padded to a multiple of 4) that `emit` writes for `opts`.
pub fn options_len(opts: &TcpOptions) -> usize {
    let _ = opts;
    todo!("wire::tcp::options_len")
}
