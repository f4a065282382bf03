//! IPv4 fragment reassembly (RFC 791, RFC 815 hole tracking) with limits on
//! bytes held, datagrams in progress and time. Overlapping fragments that
//! disagree are treated as an attack (RFC 5722 spirit): the datagram is dropped.
//!
//! Each datagram in progress keeps its payload in one buffer at the
//! fragments' offsets and a sorted list of the byte ranges received; the
//! holes (RFC 815) are the gaps in that list. Overlaps are allowed only if
//! the overlapping bytes are identical (a retransmitted fragment).

use crate::time::{Duration, Instant};
use crate::wire::checksum;
use crate::wire::ipv4::Ipv4Repr;
use std::net::Ipv4Addr;

/// Largest IPv4 datagram (header + payload).
const MAX_DATAGRAM: usize = 65535;

/// A datagram is identified by source, destination, protocol and ident (RFC 791).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ident: u16,
}

/// Why a fragment was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragDrop {
    /// MF set but the payload is empty or not a multiple of 8 bytes.
    BadLength,
    /// The datagram would exceed 65535 bytes (ping of death): whole datagram dropped.
    TooLarge,
    /// Overlapping bytes differ, or the end of the datagram is inconsistent:
    /// whole datagram dropped.
    Conflict,
    /// Too many datagrams in progress or too many bytes buffered.
    NoRoom,
}

/// The result of offering one fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum FragOutcome<'a> {
    /// Kept; the datagram is still incomplete.
    Held,
    /// The datagram is complete: a contiguous IPv4 packet (first fragment's
    /// header with MF/offset cleared, total length and checksum fixed, then
    /// the payload). Valid until the next call.
    Complete(&'a [u8]),
    /// Dropped (and counted by the caller).
    Dropped(FragDrop),
}

#[derive(Debug)]
struct Partial {
    key: FragKey,
    started: Instant,
    /// The first fragment's header; empty until offset 0 arrives.
    header: Vec<u8>,
    /// Payload bytes at their offsets; bytes outside `have` are filler.
    data: Vec<u8>,
    /// Sorted, disjoint, non-adjacent received ranges `[start, end)`.
    have: Vec<(usize, usize)>,
    /// Payload length, known once the last fragment (MF clear) arrives.
    total: Option<usize>,
}

impl Partial {
    fn bytes(&self) -> usize {
        self.header.len() + self.data.len()
    }

    fn complete(&self) -> bool {
        !self.header.is_empty() && self.total.is_some_and(|t| self.have == [(0, t)])
    }

    /// Does `[off, off + payload.len())` agree with what we already have?
    fn agrees(&self, off: usize, payload: &[u8]) -> bool {
        let end = off + payload.len();
        self.have
            .iter()
            .filter(|&&(s, e)| s < end && off < e)
            .all(|&(s, e)| {
                let (lo, hi) = (s.max(off), e.min(end));
                self.data[lo..hi] == payload[lo - off..hi - off]
            })
    }

    /// Record `[start, end)` as received, merging with touching ranges.
    fn add_range(&mut self, start: usize, end: usize) {
        let (mut start, mut end) = (start, end);
        self.have.retain(|&(s, e)| {
            if s <= end && start <= e {
                start = start.min(s);
                end = end.max(e);
                false
            } else {
                true
            }
        });
        let at = self.have.partition_point(|&(s, _)| s < start);
        self.have.insert(at, (start, end));
    }
}

#[derive(Debug)]
pub struct Reassembler {
    max_bytes: usize,
    max_datagrams: usize,
    timeout: Duration,
    partials: Vec<Partial>,
    /// Bytes held by all partial datagrams (headers + payload buffers).
    used: usize,
    /// The last completed datagram.
    out: Vec<u8>,
}

impl Reassembler {
    pub fn new(max_bytes: usize, max_datagrams: usize, timeout: Duration) -> Reassembler {
        Reassembler {
            max_bytes,
            max_datagrams,
            timeout,
            partials: Vec::new(),
            used: 0,
            out: Vec::new(),
        }
    }

    /// Datagrams currently incomplete.
    pub fn in_progress(&self) -> usize {
        self.partials.len()
    }

    /// Bytes currently buffered.
    pub fn bytes_held(&self) -> usize {
        self.used
    }

    fn remove(&mut self, i: usize) -> Partial {
        let p = self.partials.swap_remove(i);
        self.used -= p.bytes();
        p
    }

    /// Offer one fragment: `repr` is its parsed header and `packet` the
    /// packet itself (header + payload, trailing bytes already cut).
    pub fn push(&mut self, now: Instant, repr: &Ipv4Repr, packet: &[u8]) -> FragOutcome<'_> {
        let header = &packet[..repr.header_len];
        let payload = &packet[repr.header_len..repr.header_len + repr.payload_len];
        let (off, end) = (repr.frag_offset, repr.frag_offset + payload.len());
        if repr.more_fragments && (payload.is_empty() || !payload.len().is_multiple_of(8)) {
            return FragOutcome::Dropped(FragDrop::BadLength);
        }
        let key = FragKey {
            src: repr.src,
            dst: repr.dst,
            protocol: repr.protocol,
            ident: repr.ident,
        };
        let found = self.partials.iter().position(|p| p.key == key);
        if repr.header_len + end > MAX_DATAGRAM {
            if let Some(i) = found {
                self.remove(i);
            }
            return FragOutcome::Dropped(FragDrop::TooLarge);
        }
        let i = match found {
            Some(i) => i,
            None => {
                if self.partials.len() >= self.max_datagrams {
                    return FragOutcome::Dropped(FragDrop::NoRoom);
                }
                self.partials.push(Partial {
                    key,
                    started: now,
                    header: Vec::new(),
                    data: Vec::new(),
                    have: Vec::new(),
                    total: None,
                });
                self.partials.len() - 1
            }
        };
        let p = &self.partials[i];
        let highest = p.have.last().map_or(0, |&(_, e)| e);
        let conflict = if repr.more_fragments {
            p.total.is_some_and(|t| end > t)
        } else {
            p.total.is_some_and(|t| t != end) || highest > end
        };
        if conflict || !p.agrees(off, payload) {
            self.remove(i);
            return FragOutcome::Dropped(FragDrop::Conflict);
        }
        let grow = end.saturating_sub(p.data.len())
            + if off == 0 && p.header.is_empty() {
                header.len()
            } else {
                0
            };
        if self.used + grow > self.max_bytes {
            if p.have.is_empty() {
                self.remove(i);
            }
            return FragOutcome::Dropped(FragDrop::NoRoom);
        }
        self.used += grow;
        let p = &mut self.partials[i];
        if p.data.len() < end {
            p.data.resize(end, 0);
        }
        p.data[off..end].copy_from_slice(payload);
        if off == 0 && p.header.is_empty() {
            p.header.extend_from_slice(header);
        }
        if !repr.more_fragments {
            p.total = Some(end);
        }
        if !payload.is_empty() {
            p.add_range(off, end);
        }
        if !p.complete() {
            return FragOutcome::Held;
        }
        let p = self.remove(i);
        let total = p.total.unwrap_or(0);
        if p.header.len() + total > MAX_DATAGRAM {
            return FragOutcome::Dropped(FragDrop::TooLarge);
        }
        self.out.clear();
        self.out.extend_from_slice(&p.header);
        self.out.extend_from_slice(&p.data[..total]);
        let h = &mut self.out[..p.header.len()];
        h[2..4].copy_from_slice(&((p.header.len() + total) as u16).to_be_bytes());
        h[6] &= 0x40; // keep DF, clear MF and the offset
        h[7] = 0;
        h[10] = 0;
        h[11] = 0;
        let c = checksum::finish(checksum::sum(0, h));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        FragOutcome::Complete(&self.out)
    }

    /// Drop datagrams whose first fragment arrived `timeout` or more before
    /// `now`; returns how many were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.partials.len() {
            if now >= self.partials[i].started + self.timeout {
                self.remove(i);
                n += 1;
            } else {
                i += 1;
            }
        }
        n
    }

    /// When the oldest incomplete datagram times out.
    pub fn poll_at(&self) -> Option<Instant> {
        self.partials.iter().map(|p| p.started + self.timeout).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::PROTO_UDP;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const T0: Instant = Instant::ZERO;

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
    }

    /// A fragment of datagram `ident` carrying `data` at `off`.
    fn frag(ident: u16, off: usize, data: &[u8], mf: bool) -> Vec<u8> {
        let r = Ipv4Repr {
            src: SRC,
            dst: DST,
            protocol: PROTO_UDP,
            ttl: 64,
            ident,
            dont_fragment: false,
            more_fragments: mf,
            frag_offset: off,
            header_len: 20,
            payload_len: data.len(),
        };
        let mut p = vec![0u8; 20 + data.len()];
        r.emit(&mut p);
        p[20..].copy_from_slice(data);
        p
    }

    fn push<'r>(r: &'r mut Reassembler, now: Instant, pkt: &[u8]) -> FragOutcome<'r> {
        let repr = Ipv4Repr::parse(pkt).unwrap();
        r.push(now, &repr, pkt)
    }

    fn reasm() -> Reassembler {
        Reassembler::new(1 << 20, 8, Duration::from_secs(30))
    }

    /// Split `data` into fragments of `size` bytes (a multiple of 8).
    fn split(ident: u16, data: &[u8], size: usize) -> Vec<Vec<u8>> {
        let n = data.len().div_ceil(size);
        (0..n)
            .map(|i| {
                let end = ((i + 1) * size).min(data.len());
                frag(ident, i * size, &data[i * size..end], i + 1 < n)
            })
            .collect()
    }

    fn check_complete(out: FragOutcome, data: &[u8]) {
        let FragOutcome::Complete(pkt) = out else {
            panic!("not complete: {out:?}");
        };
        let r = Ipv4Repr::parse(pkt).expect("reassembled header valid");
        assert!(!r.is_fragment());
        assert_eq!(r.payload_len, data.len());
        assert_eq!(&pkt[20..], data);
    }

    #[test]
    fn in_order_fragments_reassemble() {
        let data = payload(3000);
        let mut r = reasm();
        let frags = split(1, &data, 1480);
        for f in &frags[..frags.len() - 1] {
            assert_eq!(push(&mut r, T0, f), FragOutcome::Held);
        }
        check_complete(push(&mut r, T0, frags.last().unwrap()), &data);
        assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
    }

    #[test]
    fn reverse_order_fragments_reassemble() {
        let data = payload(1001);
        let mut r = reasm();
        let frags = split(2, &data, 200);
        for f in frags[1..].iter().rev() {
            assert_eq!(push(&mut r, T0, f), FragOutcome::Held);
        }
        check_complete(push(&mut r, T0, &frags[0]), &data);
    }

    #[test]
    fn interleaved_datagrams_are_kept_apart_by_key() {
        let (a, b) = (payload(400), vec![0xeeu8; 400]);
        let (fa, fb) = (split(3, &a, 200), split(4, &b, 200));
        let mut r = reasm();
        assert_eq!(push(&mut r, T0, &fa[0]), FragOutcome::Held);
        assert_eq!(push(&mut r, T0, &fb[0]), FragOutcome::Held);
        check_complete(push(&mut r, T0, &fb[1]), &b);
        check_complete(push(&mut r, T0, &fa[1]), &a);
    }

    #[test]
    fn identical_overlap_is_accepted() {
        let data = payload(64);
        let mut r = reasm();
        assert_eq!(
            push(&mut r, T0, &frag(5, 0, &data[..32], true)),
            FragOutcome::Held
        );
        // Overlaps bytes 16..32 with the same content.
        assert_eq!(
            push(&mut r, T0, &frag(5, 16, &data[16..48], true)),
            FragOutcome::Held
        );
        // A duplicate of the first fragment.
        assert_eq!(
            push(&mut r, T0, &frag(5, 0, &data[..32], true)),
            FragOutcome::Held
        );
        check_complete(push(&mut r, T0, &frag(5, 48, &data[48..], false)), &data);
    }

    #[test]
    fn conflicting_overlap_drops_the_datagram() {
        let data = payload(64);
        let mut r = reasm();
        assert_eq!(
            push(&mut r, T0, &frag(6, 0, &data[..32], true)),
            FragOutcome::Held
        );
        let mut evil = data[16..48].to_vec();
        evil[3] ^= 0xff;
        assert_eq!(
            push(&mut r, T0, &frag(6, 16, &evil, true)),
            FragOutcome::Dropped(FragDrop::Conflict)
        );
        assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
        // The rest alone cannot complete it.
        assert_eq!(
            push(&mut r, T0, &frag(6, 32, &data[32..], false)),
            FragOutcome::Held
        );
    }

    #[test]
    fn inconsistent_end_drops_the_datagram() {
        let data = payload(64);
        let mut r = reasm();
        assert_eq!(
            push(&mut r, T0, &frag(7, 32, &data[32..], false)),
            FragOutcome::Held
        );
        assert_eq!(
            push(&mut r, T0, &frag(7, 56, &data[..16], true)),
            FragOutcome::Dropped(FragDrop::Conflict),
            "data beyond the last fragment's end"
        );
        assert_eq!(
            push(&mut r, T0, &frag(8, 32, &data[32..], false)),
            FragOutcome::Held
        );
        assert_eq!(
            push(&mut r, T0, &frag(8, 0, &data[..16], false)),
            FragOutcome::Dropped(FragDrop::Conflict),
            "two different last fragments"
        );
    }

    #[test]
    fn mf_fragment_not_multiple_of_8_is_dropped() {
        let mut r = reasm();
        assert_eq!(
            push(&mut r, T0, &frag(9, 0, &payload(100), true)),
            FragOutcome::Dropped(FragDrop::BadLength)
        );
        assert_eq!(
            push(&mut r, T0, &frag(9, 0, &[], true)),
            FragOutcome::Dropped(FragDrop::BadLength)
        );
        assert_eq!(r.in_progress(), 0);
        // The last fragment may have any length.
        assert_eq!(
            push(&mut r, T0, &frag(9, 8, &payload(5), false)),
            FragOutcome::Held
        );
    }

    #[test]
    fn datagram_over_65535_bytes_is_dropped() {
        let mut r = reasm();
        assert_eq!(
            push(&mut r, T0, &frag(10, 0, &payload(1480), true)),
            FragOutcome::Held
        );
        // Offset 65528 (max) + 16 bytes + 20 header > 65535.
        assert_eq!(
            push(&mut r, T0, &frag(10, 65528, &payload(16), false)),
            FragOutcome::Dropped(FragDrop::TooLarge)
        );
        assert_eq!(r.in_progress(), 0, "the whole datagram is dropped");
        // Exactly 65535 is fine.
        let data = payload(65515);
        let mut r = Reassembler::new(1 << 20, 8, Duration::from_secs(30));
        let frags = split(11, &data, 8192);
        let mut last = FragOutcome::Held;
        for f in &frags {
            last = push(&mut r, T0, f);
        }
        check_complete(last, &data);
    }

    #[test]
    fn timeout_drops_incomplete_datagrams() {
        let mut r = reasm();
        assert_eq!(r.poll_at(), None);
        assert_eq!(
            push(&mut r, T0, &frag(12, 0, &payload(16), true)),
            FragOutcome::Held
        );
        let t1 = Instant::from_secs(10);
        assert_eq!(
            push(&mut r, t1, &frag(13, 0, &payload(16), true)),
            FragOutcome::Held
        );
        // The timer runs from the first fragment and is not refreshed.
        assert_eq!(
            push(&mut r, t1, &frag(12, 16, &payload(16), true)),
            FragOutcome::Held
        );
        assert_eq!(r.poll_at(), Some(Instant::from_secs(30)));
        assert_eq!(r.expire(Instant::from_secs(29)), 0);
        assert_eq!(r.expire(Instant::from_secs(30)), 1);
        assert_eq!(r.poll_at(), Some(Instant::from_secs(40)));
        assert_eq!(r.expire(Instant::from_secs(41)), 1);
        assert_eq!((r.in_progress(), r.bytes_held(), r.poll_at()), (0, 0, None));
    }

    #[test]
    fn concurrent_datagram_limit() {
        let mut r = Reassembler::new(1 << 20, 2, Duration::from_secs(30));
        assert_eq!(
            push(&mut r, T0, &frag(20, 0, &payload(8), true)),
            FragOutcome::Held
        );
        assert_eq!(
            push(&mut r, T0, &frag(21, 0, &payload(8), true)),
            FragOutcome::Held
        );
        assert_eq!(
            push(&mut r, T0, &frag(22, 0, &payload(8), true)),
            FragOutcome::Dropped(FragDrop::NoRoom)
        );
        // Existing datagrams still progress.
        check_complete(push(&mut r, T0, &frag(20, 8, &payload(8), false)), &{
            let mut d = payload(8);
            d.extend(payload(8));
            d
        });
    }

    #[test]
    fn byte_limit() {
        let mut r = Reassembler::new(1000, 8, Duration::from_secs(30));
        assert_eq!(
            push(&mut r, T0, &frag(30, 0, &payload(800), true)),
            FragOutcome::Held
        );
        assert_eq!(r.bytes_held(), 820);
        // A far-away offset would need a buffer up to its end: refused.
        assert_eq!(
            push(&mut r, T0, &frag(31, 4000, &payload(8), true)),
            FragOutcome::Dropped(FragDrop::NoRoom)
        );
        assert_eq!(r.in_progress(), 1, "no empty entry left behind");
        // Growing the held datagram past the limit is refused too...
        assert_eq!(
            push(&mut r, T0, &frag(30, 800, &payload(200), false)),
            FragOutcome::Dropped(FragDrop::NoRoom)
        );
        assert_eq!(r.bytes_held(), 820);
        // ...while a fragment that fits completes it and frees the bytes.
        assert!(matches!(
            push(&mut r, T0, &frag(30, 800, &payload(100), false)),
            FragOutcome::Complete(_)
        ));
        assert_eq!(r.bytes_held(), 0);
    }

    #[test]
    fn header_options_of_first_fragment_are_kept() {
        let data = payload(24);
        let mut first = frag(40, 0, &data[..16], true);
        // Rebuild the first fragment with a 24-byte header (NOP options).
        first.splice(20..20, [1u8, 1, 1, 0]);
        first[0] = 0x46;
        first[2..4].copy_from_slice(&40u16.to_be_bytes());
        first[10] = 0;
        first[11] = 0;
        let c = checksum::finish(checksum::sum(0, &first[..24]));
        first[10..12].copy_from_slice(&c.to_be_bytes());
        let mut r = reasm();
        assert_eq!(
            push(&mut r, T0, &frag(40, 16, &data[16..], false)),
            FragOutcome::Held
        );
        let FragOutcome::Complete(pkt) = push(&mut r, T0, &first) else {
            panic!()
        };
        let rep = Ipv4Repr::parse(pkt).unwrap();
        assert_eq!((rep.header_len, rep.payload_len), (24, 24));
        assert_eq!(&pkt[24..], &data[..]);
    }
}
