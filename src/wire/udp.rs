//! UDP header (RFC 768) parse and emit.

use super::checksum;
use super::ipv4::PROTO_UDP;
use super::WireError;
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

impl<'a> UdpRepr<'a> {
    /// Parse a UDP datagram (the IPv4 payload); verifies length and, when
    /// non-zero, the checksum.
    ///
    /// Shorter than 8 bytes or than the length field → `Truncated`; length
    /// field < 8 → `BadLength`. Bytes beyond the length field are ignored.
    /// A zero checksum field means the sender computed none (RFC 768).
    pub fn parse(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        datagram: &'a [u8],
    ) -> Result<UdpRepr<'a>, WireError> {
        if datagram.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(u16::from_be_bytes([datagram[4], datagram[5]]));
        if len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if len > datagram.len() {
            return Err(WireError::Truncated);
        }
        let datagram = &datagram[..len];
        if u16::from_be_bytes([datagram[6], datagram[7]]) != 0 {
            let s = checksum::sum(checksum::pseudo_header(src, dst, PROTO_UDP, len), datagram);
            if checksum::finish(s) != 0 {
                return Err(WireError::BadChecksum);
            }
        }
        Ok(UdpRepr {
            src_port: u16::from_be_bytes([datagram[0], datagram[1]]),
            dst_port: u16::from_be_bytes([datagram[2], datagram[3]]),
            payload: &datagram[HEADER_LEN..],
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Write header (with checksum) and payload into `buf[..buffer_len()]`.
    /// A computed checksum of zero is sent as 0xffff (RFC 768).
    /// Panics if `buf` is too short or the datagram exceeds 65535 bytes.
    pub fn emit(&self, src: Ipv4Addr, dst: Ipv4Addr, buf: &mut [u8]) -> usize {
        let len = self.buffer_len();
        let len16 = u16::try_from(len).expect("UDP datagram longer than 65535 bytes");
        let buf = &mut buf[..len];
        buf[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        buf[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        buf[4..6].copy_from_slice(&len16.to_be_bytes());
        buf[6] = 0;
        buf[7] = 0;
        buf[HEADER_LEN..].copy_from_slice(self.payload);
        let s = checksum::sum(checksum::pseudo_header(src, dst, PROTO_UDP, len), buf);
        let c = match checksum::finish(s) {
            0 => 0xffff,
            c => c,
        };
        buf[6..8].copy_from_slice(&c.to_be_bytes());
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn emitted(payload: &[u8]) -> Vec<u8> {
        let r = UdpRepr {
            src_port: 5353,
            dst_port: 53,
            payload,
        };
        let mut buf = vec![0u8; r.buffer_len()];
        assert_eq!(r.emit(SRC, DST, &mut buf), buf.len());
        buf
    }

    #[test]
    fn emit_parse_round_trip() {
        let b = emitted(b"hello, world");
        let r = UdpRepr::parse(SRC, DST, &b).unwrap();
        assert_eq!(
            (r.src_port, r.dst_port, r.payload),
            (5353, 53, &b"hello, world"[..])
        );
    }

    #[test]
    fn checksum_matches_etherparse() {
        let b = emitted(b"odd");
        let h = etherparse::UdpHeader::from_slice(&b).unwrap().0;
        let want = h
            .calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), b"odd")
            .unwrap();
        assert_eq!(h.checksum, want);
    }

    #[test]
    fn checksum_is_verified() {
        let mut b = emitted(b"data");
        b[9] ^= 0x10;
        assert_eq!(UdpRepr::parse(SRC, DST, &b), Err(WireError::BadChecksum));
        // The pseudo-header counts: a different destination fails too.
        let b = emitted(b"data");
        assert_eq!(
            UdpRepr::parse(SRC, Ipv4Addr::new(10, 0, 0, 3), &b),
            Err(WireError::BadChecksum)
        );
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut b = emitted(b"data");
        b[6] = 0;
        b[7] = 0;
        b[9] ^= 0x10; // corrupt payload: not detectable without a checksum
        assert!(UdpRepr::parse(SRC, DST, &b).is_ok());
    }

    #[test]
    fn zero_computed_checksum_is_sent_as_ffff() {
        // Find a payload whose checksum computes to zero: choose the last two
        // bytes so that the whole sum is 0xffff.
        let mut payload = [0u8, 0];
        let b = emitted(&payload);
        let c = u16::from_be_bytes([b[6], b[7]]);
        // Adding `c` to the payload raises the sum by c, making it 0xffff.
        payload.copy_from_slice(&c.to_be_bytes());
        let b = emitted(&payload);
        assert_eq!(&b[6..8], &[0xff, 0xff]);
        assert!(UdpRepr::parse(SRC, DST, &b).is_ok());
    }

    #[test]
    fn length_field_checks() {
        let b = emitted(b"hello");
        let mut long = b.clone();
        long[4..6].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(UdpRepr::parse(SRC, DST, &long), Err(WireError::Truncated));
        let mut short = b.clone();
        short[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(UdpRepr::parse(SRC, DST, &short), Err(WireError::BadLength));
        // Trailing bytes beyond the length field are not payload.
        let mut padded = b.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(UdpRepr::parse(SRC, DST, &padded).unwrap().payload, b"hello");
    }

    #[test]
    fn every_truncated_prefix_errs() {
        let b = emitted(b"hello");
        for len in 0..b.len() {
            assert_eq!(
                UdpRepr::parse(SRC, DST, &b[..len]),
                Err(WireError::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng::new(0x0d9);
        let mut buf = [0u8; 64];
        for _ in 0..100_000 {
            let len = rng.gen_range(0, 65) as usize;
            rng.fill(&mut buf[..len]);
            if let Ok(r) = UdpRepr::parse(SRC, DST, &buf[..len]) {
                assert!(r.payload.len() + HEADER_LEN <= len);
            }
        }
    }
}
