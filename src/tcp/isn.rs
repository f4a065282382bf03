//! Initial sequence numbers per RFC 6528: ISN = M + F(localip, localport,
//! remoteip, remoteport, secretkey), where M is a 4-microsecond timer and F a
//! keyed PRF (SipHash-2-4 here).

use super::seq::SeqNum;
use crate::time::Instant;
use siphasher::sip::SipHasher24;
use std::hash::Hasher;
use std::net::SocketAddrV4;

#[derive(Clone, Debug)]
pub struct IsnGenerator {
    key: [u8; 16],
}

impl IsnGenerator {
    /// `key` must be secret and random (drawn from the owner's RNG).
    pub fn new(key: [u8; 16]) -> IsnGenerator {
        IsnGenerator { key }
    }

    /// ISN = M + F(localip, localport, remoteip, remoteport, key), where M
    /// counts 4-microsecond ticks of `now` (wrapping modulo 2^32, so it
    /// advances 250 000 per second) and F is SipHash-2-4 keyed by `key`,
    /// truncated to 32 bits.
    pub fn isn(&self, now: Instant, local: SocketAddrV4, remote: SocketAddrV4) -> SeqNum {
        let m = (now.total_micros() / 4) as u32;
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write(&local.ip().octets());
        h.write(&local.port().to_be_bytes());
        h.write(&remote.ip().octets());
        h.write(&remote.port().to_be_bytes());
        let f = h.finish() as u32;
        SeqNum(m.wrapping_add(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    const KEY: [u8; 16] = *b"0123456789abcdef";

    #[test]
    fn different_tuples_get_different_isns() {
        let g = IsnGenerator::new(KEY);
        let t = Instant::from_secs(5);
        let base = g.isn(t, addr("10.0.0.1:80"), addr("10.0.0.2:40000"));
        let others = [
            g.isn(t, addr("10.0.0.1:80"), addr("10.0.0.2:40001")),
            g.isn(t, addr("10.0.0.1:81"), addr("10.0.0.2:40000")),
            g.isn(t, addr("10.0.0.3:80"), addr("10.0.0.2:40000")),
            g.isn(t, addr("10.0.0.1:80"), addr("10.0.0.4:40000")),
            // Swapped direction is a different tuple.
            g.isn(t, addr("10.0.0.2:40000"), addr("10.0.0.1:80")),
        ];
        for o in others {
            assert_ne!(o, base);
        }
    }

    #[test]
    fn same_tuple_advances_250k_per_second() {
        let g = IsnGenerator::new(KEY);
        let (l, r) = (addr("192.168.1.1:1234"), addr("192.168.1.2:443"));
        let t0 = Instant::from_secs(100);
        let a = g.isn(t0, l, r);
        assert_eq!(g.isn(t0, l, r), a, "deterministic");
        let b = g.isn(t0 + crate::time::Duration::from_secs(1), l, r);
        assert_eq!(b.raw().wrapping_sub(a.raw()), 250_000);
        let c = g.isn(t0 + crate::time::Duration::from_micros(4), l, r);
        assert_eq!(c.raw().wrapping_sub(a.raw()), 1);
    }

    #[test]
    fn clock_component_wraps_modulo_2_32() {
        let g = IsnGenerator::new(KEY);
        let (l, r) = (addr("1.2.3.4:5"), addr("6.7.8.9:10"));
        // 2^32 ticks of 4 us later the ISN is the same again.
        let t0 = Instant::from_micros(12_345);
        let t1 = Instant::from_micros(12_345 + (1u64 << 32) * 4);
        assert_eq!(g.isn(t0, l, r), g.isn(t1, l, r));
    }

    #[test]
    fn different_keys_give_different_isns() {
        let (l, r) = (addr("10.0.0.1:80"), addr("10.0.0.2:40000"));
        let t = Instant::from_secs(1);
        let a = IsnGenerator::new(KEY).isn(t, l, r);
        let mut k2 = KEY;
        k2[0] ^= 1;
        let b = IsnGenerator::new(k2).isn(t, l, r);
        assert_ne!(a, b);
    }
}
