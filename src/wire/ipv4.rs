//! IPv4 header (RFC 791) parse and emit.

use super::checksum;
use super::WireError;
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// The header length and protocol of `p`, if it is an IPv4 packet whose
/// header fits: a look at the header without [`Ipv4Repr::parse`]'s
/// validation (for packets of our own making, or before a parse).
pub fn peek_header(p: &[u8]) -> Option<(usize, u8)> {
    let first = *p.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < HEADER_LEN || p.len() < ihl {
        return None;
    }
    Some((ihl, p[9]))
}

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
    ///
    /// Errors: empty or shorter than 20 bytes, than IHL, or than the total
    /// length → `Truncated`; version ≠ 4 → `BadVersion`; IHL < 5 or total
    /// length < IHL → `BadLength`; header checksum → `BadChecksum`.
    pub fn parse(packet: &[u8]) -> Result<Ipv4Repr, WireError> {
        let first = *packet.first().ok_or(WireError::Truncated)?;
        if first >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        if packet.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if header_len > packet.len() {
            return Err(WireError::Truncated);
        }
        let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if total < header_len {
            return Err(WireError::BadLength);
        }
        if total > packet.len() {
            return Err(WireError::Truncated);
        }
        if checksum::finish(checksum::sum(0, &packet[..header_len])) != 0 {
            return Err(WireError::BadChecksum);
        }
        let frag = u16::from_be_bytes([packet[6], packet[7]]);
        Ok(Ipv4Repr {
            src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
            dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
            protocol: packet[9],
            ttl: packet[8],
            ident: u16::from_be_bytes([packet[4], packet[5]]),
            dont_fragment: frag & FLAG_DF != 0,
            more_fragments: frag & FLAG_MF != 0,
            frag_offset: usize::from(frag & OFFSET_MASK) * 8,
            header_len,
            payload_len: total - header_len,
        })
    }

    /// True if this header describes a fragment (MF set or non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_fragments || self.frag_offset != 0
    }

    /// Write a 20-byte header (no options) with checksum into `buf[..20]`;
    /// `header_len` is ignored (always 20). Returns 20.
    /// The total length saturates at 65535; the offset is truncated to 13 bits.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let buf = &mut buf[..HEADER_LEN];
        let total = (HEADER_LEN + self.payload_len).min(usize::from(u16::MAX)) as u16;
        let mut frag = ((self.frag_offset / 8) as u16) & OFFSET_MASK;
        if self.dont_fragment {
            frag |= FLAG_DF;
        }
        if self.more_fragments {
            frag |= FLAG_MF;
        }
        buf[0] = 0x45;
        buf[1] = 0;
        buf[2..4].copy_from_slice(&total.to_be_bytes());
        buf[4..6].copy_from_slice(&self.ident.to_be_bytes());
        buf[6..8].copy_from_slice(&frag.to_be_bytes());
        buf[8] = self.ttl;
        buf[9] = self.protocol;
        buf[10] = 0;
        buf[11] = 0;
        buf[12..16].copy_from_slice(&self.src.octets());
        buf[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::finish(checksum::sum(0, buf));
        buf[10..12].copy_from_slice(&c.to_be_bytes());
        HEADER_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: PROTO_UDP,
            ttl: 64,
            ident: 0x1234,
            dont_fragment: false,
            more_fragments: true,
            frag_offset: 1480,
            header_len: 20,
            payload_len: 12,
        }
    }

    fn packet() -> Vec<u8> {
        let mut p = vec![0u8; 32];
        repr().emit(&mut p);
        p
    }

    #[test]
    fn emit_parse_round_trip() {
        assert_eq!(Ipv4Repr::parse(&packet()), Ok(repr()));
        let mut r = repr();
        r.dont_fragment = true;
        r.more_fragments = false;
        r.frag_offset = 0;
        let mut p = vec![0u8; 32];
        r.emit(&mut p);
        assert_eq!(Ipv4Repr::parse(&p), Ok(r));
    }

    #[test]
    fn emit_matches_etherparse() {
        let mut p = vec![0u8; 32];
        repr().emit(&mut p);
        let (h, _) = etherparse::Ipv4Header::from_slice(&p).unwrap();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(h.total_len, 32);
        assert_eq!(h.fragment_offset.value(), 1480 / 8);
        assert!(h.more_fragments);
    }

    #[test]
    fn trailing_bytes_beyond_total_length_are_ignored() {
        let mut p = packet();
        p.extend_from_slice(&[0xaa; 7]);
        assert_eq!(Ipv4Repr::parse(&p).unwrap().payload_len, 12);
    }

    #[test]
    fn every_truncated_prefix_errs() {
        let p = packet();
        for len in 0..p.len() {
            assert_eq!(
                Ipv4Repr::parse(&p[..len]),
                Err(WireError::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn version_other_than_4_is_bad_version() {
        let mut p = packet();
        p[0] = 0x65;
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::BadVersion));
    }

    #[test]
    fn ihl_below_5_is_bad_length() {
        let mut p = packet();
        p[0] = 0x44;
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::BadLength));
    }

    #[test]
    fn ihl_beyond_buffer_is_truncated() {
        let mut p = packet();
        p[0] = 0x4f; // 60-byte header in a 32-byte packet
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::Truncated));
    }

    fn fix(p: &mut [u8]) {
        p[10] = 0;
        p[11] = 0;
        let c = checksum::finish(checksum::sum(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn total_length_beyond_buffer_is_truncated() {
        let mut p = packet();
        p[2..4].copy_from_slice(&33u16.to_be_bytes());
        fix(&mut p);
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::Truncated));
    }

    #[test]
    fn total_length_below_header_is_bad_length() {
        let mut p = packet();
        p[2..4].copy_from_slice(&19u16.to_be_bytes());
        fix(&mut p);
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::BadLength));
    }

    #[test]
    fn header_checksum_is_verified() {
        let mut p = packet();
        p[8] ^= 1;
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::BadChecksum));
    }

    #[test]
    fn options_are_skipped_via_ihl() {
        let mut p = vec![0u8; 24 + 4];
        repr().emit(&mut p);
        p[0] = 0x46;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[20..24].copy_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        p[10] = 0;
        p[11] = 0;
        let c = checksum::finish(checksum::sum(0, &p[..24]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!((r.header_len, r.payload_len), (24, 4));
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng::new(0x1b4);
        let mut buf = [0u8; 80];
        for _ in 0..100_000 {
            let len = rng.gen_range(0, 81) as usize;
            rng.fill(&mut buf[..len]);
            if rng.gen_bool(0.5) && len > 0 {
                buf[0] = 0x40 | (buf[0] & 0x0f);
            }
            if let Ok(r) = Ipv4Repr::parse(&buf[..len]) {
                assert!(r.header_len + r.payload_len <= len);
            }
        }
    }
}
