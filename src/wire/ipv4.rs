//! IPv4 header (RFC 791) parse and emit.

use super::WireError;
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// The fields the stack needs from an IPv4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub ident: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// Fragment offset in bytes (multiple of 8).
    pub frag_offset: usize,
    /// Header length in bytes (20..=60).
    pub header_len: usize,
    /// Payload length in bytes (total length - header length).
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Parse and validate (version, IHL, total length vs. buffer, header
    /// checksum). Trailing bytes beyond total length are ignored.
    pub fn parse(packet: &[u8]) -> Result<Ipv4Repr, WireError> {
        let _ = packet;
        todo!()
    }

    /// Write a 20-byte header (no options) with checksum into `buf[..20]`;
    /// `header_len` is ignored (always 20). Returns 20.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let _ = buf;
        todo!()
    }
}
