//! ICMPv4 (RFC 792): echo request/reply and destination unreachable.

use super::checksum;
use super::WireError;

pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
pub const TYPE_ECHO_REQUEST: u8 = 8;
pub const TYPE_TIME_EXCEEDED: u8 = 11;

pub const CODE_PROTOCOL_UNREACHABLE: u8 = 2;
pub const CODE_PORT_UNREACHABLE: u8 = 3;
pub const CODE_FRAG_NEEDED: u8 = 4;

/// Fixed ICMP header length (type, code, checksum, 4 bytes of rest-of-header).
pub const HEADER_LEN: usize = 8;

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
    /// Shorter than 8 bytes → `Truncated`. The quoted original of a
    /// destination-unreachable message is returned as is; callers validate it.
    pub fn parse(msg: &'a [u8]) -> Result<IcmpRepr<'a>, WireError> {
        if msg.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if checksum::finish(checksum::sum(0, msg)) != 0 {
            return Err(WireError::BadChecksum);
        }
        let (icmp_type, code) = (msg[0], msg[1]);
        let ident = u16::from_be_bytes([msg[4], msg[5]]);
        let seq = u16::from_be_bytes([msg[6], msg[7]]);
        let rest = &msg[HEADER_LEN..];
        Ok(match icmp_type {
            TYPE_ECHO_REQUEST => IcmpRepr::EchoRequest {
                ident,
                seq,
                data: rest,
            },
            TYPE_ECHO_REPLY => IcmpRepr::EchoReply {
                ident,
                seq,
                data: rest,
            },
            TYPE_DEST_UNREACHABLE => IcmpRepr::DestUnreachable {
                code,
                // RFC 1191: the low 16 bits of the unused word carry the MTU.
                next_hop_mtu: seq,
                original: rest,
            },
            _ => IcmpRepr::Other { icmp_type, code },
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                IcmpRepr::EchoRequest { data, .. } | IcmpRepr::EchoReply { data, .. } => data.len(),
                IcmpRepr::DestUnreachable { original, .. } => original.len(),
                IcmpRepr::Other { .. } => 0,
            }
    }

    /// Write the message with checksum into `buf[..buffer_len()]`.
    /// `Other` is written with a zero rest-of-header. Panics if `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let len = self.buffer_len();
        let buf = &mut buf[..len];
        let (icmp_type, code, word, body): (u8, u8, [u8; 4], &[u8]) = match *self {
            IcmpRepr::EchoRequest { ident, seq, data } => {
                (TYPE_ECHO_REQUEST, 0, pair(ident, seq), data)
            }
            IcmpRepr::EchoReply { ident, seq, data } => {
                (TYPE_ECHO_REPLY, 0, pair(ident, seq), data)
            }
            IcmpRepr::DestUnreachable {
                code,
                next_hop_mtu,
                original,
            } => (TYPE_DEST_UNREACHABLE, code, pair(0, next_hop_mtu), original),
            IcmpRepr::Other { icmp_type, code } => (icmp_type, code, [0; 4], &[]),
        };
        buf[0] = icmp_type;
        buf[1] = code;
        buf[2] = 0;
        buf[3] = 0;
        buf[4..8].copy_from_slice(&word);
        buf[HEADER_LEN..].copy_from_slice(body);
        let c = checksum::finish(checksum::sum(0, buf));
        buf[2..4].copy_from_slice(&c.to_be_bytes());
        len
    }
}

fn pair(a: u16, b: u16) -> [u8; 4] {
    let [a0, a1] = a.to_be_bytes();
    let [b0, b1] = b.to_be_bytes();
    [a0, a1, b0, b1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn round_trip(r: IcmpRepr) {
        let mut buf = vec![0u8; r.buffer_len()];
        assert_eq!(r.emit(&mut buf), buf.len());
        assert_eq!(IcmpRepr::parse(&buf), Ok(r));
    }

    #[test]
    fn echo_round_trips() {
        round_trip(IcmpRepr::EchoRequest {
            ident: 7,
            seq: 9,
            data: b"abcdefgh",
        });
        round_trip(IcmpRepr::EchoReply {
            ident: 0xffff,
            seq: 0,
            data: b"odd",
        });
    }

    #[test]
    fn dest_unreachable_round_trips_with_mtu() {
        let original = [0x45u8; 28];
        round_trip(IcmpRepr::DestUnreachable {
            code: CODE_FRAG_NEEDED,
            next_hop_mtu: 1400,
            original: &original,
        });
    }

    #[test]
    fn other_types_parse_as_other() {
        round_trip(IcmpRepr::Other {
            icmp_type: TYPE_TIME_EXCEEDED,
            code: 1,
        });
    }

    #[test]
    fn echo_request_matches_etherparse() {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64)
            .icmpv4_echo_request(0x1234, 0x0102)
            .write(&mut v, b"payload!")
            .unwrap();
        assert_eq!(
            IcmpRepr::parse(&v[20..]),
            Ok(IcmpRepr::EchoRequest {
                ident: 0x1234,
                seq: 0x0102,
                data: b"payload!"
            })
        );
    }

    #[test]
    fn checksum_is_verified() {
        let r = IcmpRepr::EchoRequest {
            ident: 1,
            seq: 1,
            data: b"x",
        };
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut buf);
        buf[8] ^= 1;
        assert_eq!(IcmpRepr::parse(&buf), Err(WireError::BadChecksum));
    }

    #[test]
    fn every_truncated_prefix_errs() {
        let r = IcmpRepr::EchoRequest {
            ident: 1,
            seq: 1,
            data: b"abcdefgh",
        };
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut buf);
        for len in 0..HEADER_LEN {
            assert_eq!(IcmpRepr::parse(&buf[..len]), Err(WireError::Truncated));
        }
        // Longer prefixes cut the data: the checksum no longer verifies.
        for len in HEADER_LEN..buf.len() {
            assert!(IcmpRepr::parse(&buf[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng::new(0x1c3);
        let mut buf = [0u8; 64];
        for _ in 0..100_000 {
            let len = rng.gen_range(0, 65) as usize;
            rng.fill(&mut buf[..len]);
            if let Ok(r) = IcmpRepr::parse(&buf[..len]) {
                assert!(r.buffer_len() <= len.max(HEADER_LEN));
            }
        }
    }
}
