//! ICMPv4 (RFC 792): echo request/reply and destination unreachable.

use super::WireError;

pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
pub const TYPE_ECHO_REQUEST: u8 = 8;
pub const TYPE_TIME_EXCEEDED: u8 = 11;

pub const CODE_PROTOCOL_UNREACHABLE: u8 = 2;
pub const CODE_PORT_UNREACHABLE: u8 = 3;
pub const CODE_FRAG_NEEDED: u8 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpRepr<'a> {
    EchoRequest {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    /// Destination unreachable; `original` is the offending IP header plus
    /// (at least) the first 8 bytes of its payload.
    DestUnreachable {
        code: u8,
        next_hop_mtu: u16,
        original: &'a [u8],
    },
    /// Any other type we parse but do not act on.
    Other { icmp_type: u8, code: u8 },
}

impl<'a> IcmpRepr<'a> {
    /// Parse an ICMP message (the IPv4 payload), verifying its checksum.
    pub fn parse(msg: &'a [u8]) -> Result<IcmpRepr<'a>, WireError> {
        let _ = msg;
        todo!()
    }

    pub fn buffer_len(&self) -> usize {
        todo!()
    }

    /// Write the message with checksum into `buf[..buffer_len()]`.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let _ = buf;
        todo!()
    }
}
