//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes) that a TUN
//! device opened with `IFF_VNET_HDR` puts in front of every packet, and the
//! rules for what it means to the stack.
//!
//! Layout (native byte order, the "legacy" virtio order TUN uses unless told
//! otherwise with TUNSETVNETLE/BE; little-endian on the machines we run on):
//!
//! | offset | field | |
//! | --- | --- | --- |
//! | 0 | flags | `NEEDS_CSUM` (1): checksum is partial, `DATA_VALID` (2): checksum verified |
//! | 1 | gso_type | `NONE` (0), `TCPV4` (1), `UDP` (3), `TCPV6` (4), `UDP_L4` (5), `ECN` bit (0x80) |
//! | 2 | hdr_len | length of the headers (a hint: Linux sends its linear part's length) |
//! | 4 | gso_size | payload bytes per segment after segmentation |
//! | 6 | csum_start | where checksumming starts (the transport header) |
//! | 8 | csum_offset | where, from `csum_start`, the checksum goes (TCP 16, UDP 6) |
//!
//! Receive (kernel → stack): a GSO packet (`TCPV4`, up to 64 KB) is taken as
//! one large TCP segment; it and any `NEEDS_CSUM` packet carry only the
//! pseudo-header sum in the TCP checksum field. The kernel built them itself
//! (CHECKSUM_PARTIAL), so the stack trusts such TCP segments and skips the
//! checksum ([`RxInfo::csum_trusted`]); for other protocols (UDP, which the
//! stack verifies) the device completes the checksum ([`complete_checksum`]).
//!
//! Transmit (stack → kernel): a TCP/IPv4 packet longer than the MTU goes out
//! as `TCPV4` GSO with `gso_size` = MTU − IP header − TCP header (so every
//! segment the kernel cuts fits the MTU) and `NEEDS_CSUM`, with the TCP
//! checksum field replaced by the pseudo-header sum, as the virtio spec
//! requires for GSO and as Linux's own drivers always send. The kernel then
//! neither recomputes nor verifies the checksum on local delivery. Packets
//! that fit the MTU go out with a zero header and the full checksum the stack
//! computed.

use crate::wire::checksum;
use crate::wire::ipv4::peek_header as ipv4_info;
use crate::wire::tcp::peek_header_len as tcp_header_len;
use std::sync::atomic::{AtomicU64, Ordering};

/// Size of `struct virtio_net_hdr` (without `num_buffers`); set with TUNSETVNETHDRSZ.
pub const HDR_LEN: usize = 10;

pub const F_NEEDS_CSUM: u8 = 1;
pub const F_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
/// Offset of the checksum inside a TCP header.
pub const TCP_CSUM_OFFSET: u16 = 16;
/// Offset of the checksum inside a UDP header.
pub const UDP_CSUM_OFFSET: u16 = 6;

/// One `struct virtio_net_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// Why a received header (with its packet) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VnetError {
    /// Fewer than [`HDR_LEN`] bytes.
    Truncated,
    /// A GSO type we did not ask for (UDP, TCPv6) or do not know.
    UnsupportedGso(u8),
    /// GSO TCPv4 on something that is not a well-formed TCP/IPv4 packet, or gso_size 0.
    BadGso,
    /// `NEEDS_CSUM` with `csum_start`/`csum_offset` outside the packet or not
    /// at the transport checksum.
    BadCsum,
}

impl std::fmt::Display for VnetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VnetError::Truncated => write!(f, "virtio-net header truncated"),
            VnetError::UnsupportedGso(t) => write!(f, "unsupported GSO type {t:#x}"),
            VnetError::BadGso => write!(f, "GSO header on a packet that is not TCP/IPv4"),
            VnetError::BadCsum => write!(f, "partial checksum offsets outside the packet"),
        }
    }
}

impl std::error::Error for VnetError {}

impl VnetHdr {
    /// Parse the first [`HDR_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<VnetHdr, VnetError> {
        if b.len() < HDR_LEN {
            return Err(VnetError::Truncated);
        }
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header's wire form.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// What a received packet's header means for the stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxInfo {
    /// A GSO packet (one large TCP segment).
    pub gso: bool,
    /// The transport checksum was filled in partially (`NEEDS_CSUM`) or verified
    /// (`DATA_VALID`) by the kernel: the stack may skip verifying it.
    pub csum_trusted: bool,
    /// `NEEDS_CSUM` on a non-TCP packet: the device must complete the
    /// checksum (see [`complete_checksum`]) before the stack sees it.
    pub needs_completion: bool,
}

/// Check a received header against its packet and say what it means.
pub fn check_rx(h: &VnetHdr, packet: &[u8]) -> Result<RxInfo, VnetError> {
    let mut info = RxInfo::default();
    match h.gso_type & !GSO_ECN {
        GSO_NONE => {}
        GSO_TCPV4 => {
            let (ihl, proto) = ipv4_info(packet).ok_or(VnetError::BadGso)?;
            if proto != PROTO_TCP || h.gso_size == 0 || tcp_header_len(packet, ihl).is_none() {
                return Err(VnetError::BadGso);
            }
            info.gso = true;
        }
        t => return Err(VnetError::UnsupportedGso(t)),
    }
    if h.flags & F_NEEDS_CSUM != 0 {
        let start = usize::from(h.csum_start);
        let at = start + usize::from(h.csum_offset);
        if at + 2 > packet.len() {
            return Err(VnetError::BadCsum);
        }
        let (ihl, proto) = ipv4_info(packet).ok_or(VnetError::BadCsum)?;
        match (proto, h.csum_offset) {
            (PROTO_TCP, TCP_CSUM_OFFSET) if start == ihl => info.csum_trusted = true,
            (PROTO_TCP, _) => return Err(VnetError::BadCsum),
            _ => info.needs_completion = true,
        }
    } else if info.gso {
        // Linux always sends GSO with a partial checksum; without one the
        // checksum field of a segment this large cannot be trusted or checked cheaply.
        // Accept it: the stack verifies the full checksum as for any packet.
    } else if h.flags & F_DATA_VALID != 0 {
        info.csum_trusted = ipv4_info(packet).is_some_and(|(_, p)| p == PROTO_TCP);
    }
    Ok(info)
}

/// Finish a partial checksum in place: sum `packet[csum_start..]` (whose
/// checksum field holds the pseudo-header sum) and store the complement at
/// `csum_start + csum_offset`. Offsets must have passed [`check_rx`].
pub fn complete_checksum(h: &VnetHdr, packet: &mut [u8]) -> Result<(), VnetError> {
    let start = usize::from(h.csum_start);
    let at = start + usize::from(h.csum_offset);
    if at + 2 > packet.len() {
        return Err(VnetError::BadCsum);
    }
    let mut c = checksum::finish(checksum::sum(0, &packet[start..]));
    // UDP (RFC 768): a computed zero is sent as all ones; zero means "none".
    if c == 0 && ipv4_info(packet).is_some_and(|(_, p)| p == PROTO_UDP) {
        c = 0xffff;
    }
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// How to write one packet: its header, and for GSO the value to put in the
/// TCP checksum field (at the given offset) in place of the full checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxPlan {
    pub hdr: VnetHdr,
    /// `(offset, big-endian value)`: the pseudo-header sum for `NEEDS_CSUM`.
    pub csum_patch: Option<(usize, [u8; 2])>,
}

/// The header for sending a packet of `len` bytes that starts with
/// `packet` (at least its IP and TCP headers; all of it, or the headers of
/// one whose payload is written from elsewhere) on a device whose MTU is
/// `mtu`: a longer
/// TCP/IPv4 packet as TCPV4 GSO cut at `mtu`. With `partial_csum` the TCP
/// checksum field of `packet` already holds only the pseudo-header sum
/// (`Capabilities::tx_checksum_partial`): every TCP/IPv4 packet then goes
/// out with `NEEDS_CSUM` and the kernel completes (or, delivering locally,
/// skips) the sum. Without it, a packet that fits goes out plain (zero
/// header) and a GSO packet's field is patched to the pseudo-header sum.
/// `None`: longer than the MTU and not TCP/IPv4 (no GSO for it; the caller
/// sends it plain and lets the kernel take it as one packet).
pub fn tx_plan(packet: &[u8], len: usize, mtu: usize, partial_csum: bool) -> Option<TxPlan> {
    let plain = TxPlan {
        hdr: VnetHdr::default(),
        csum_patch: None,
    };
    if len <= mtu && !partial_csum {
        return Some(plain);
    }
    let tcp = ipv4_info(packet)
        .filter(|&(_, proto)| proto == PROTO_TCP)
        .and_then(|(ihl, _)| Some((ihl, tcp_header_len(packet, ihl)?)));
    let Some((ihl, thl)) = tcp else {
        return (len <= mtu).then_some(plain);
    };
    let headers = ihl + thl;
    let csum = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: u16::try_from(headers).ok()?,
        gso_size: 0,
        csum_start: u16::try_from(ihl).ok()?,
        csum_offset: TCP_CSUM_OFFSET,
    };
    if len <= mtu {
        return Some(TxPlan {
            hdr: csum,
            csum_patch: None,
        });
    }
    let gso_size = mtu.checked_sub(headers).filter(|&s| s > 0)?;
    let csum_patch = if partial_csum {
        None
    } else {
        let src = std::net::Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
        let dst = std::net::Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let pseudo = checksum::pseudo_header(src, dst, PROTO_TCP, len - ihl) as u16;
        Some((ihl + usize::from(TCP_CSUM_OFFSET), pseudo.to_be_bytes()))
    };
    Some(TxPlan {
        hdr: VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: u16::try_from(gso_size).ok()?,
            ..csum
        },
        csum_patch,
    })
}

/// Counters of the offload mode, shared between the device (in the stack's
/// thread) and whoever wants to read them.
#[derive(Debug, Default)]
pub struct OffloadStats {
    /// Packets read.
    pub rx_packets: AtomicU64,
    /// GSO packets read (one large TCP segment each).
    pub rx_gso: AtomicU64,
    /// Bytes in GSO packets read.
    pub rx_gso_bytes: AtomicU64,
    /// Packets read with a partial (`NEEDS_CSUM`) checksum.
    pub rx_csum_partial: AtomicU64,
    /// Packets dropped because their header was malformed or unsupported.
    pub rx_bad_header: AtomicU64,
    /// Packets written.
    pub tx_packets: AtomicU64,
    /// GSO packets written (the kernel segments them).
    pub tx_gso: AtomicU64,
    /// Bytes in GSO packets written.
    pub tx_gso_bytes: AtomicU64,
}

/// A plain copy of [`OffloadStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadCounts {
    pub rx_packets: u64,
    pub rx_gso: u64,
    pub rx_gso_bytes: u64,
    pub rx_csum_partial: u64,
    pub rx_bad_header: u64,
    pub tx_packets: u64,
    pub tx_gso: u64,
    pub tx_gso_bytes: u64,
}

impl OffloadStats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> OffloadCounts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OffloadCounts {
            rx_packets: g(&self.rx_packets),
            rx_gso: g(&self.rx_gso),
            rx_gso_bytes: g(&self.rx_gso_bytes),
            rx_csum_partial: g(&self.rx_csum_partial),
            rx_bad_header: g(&self.rx_bad_header),
            tx_packets: g(&self.tx_packets),
            tx_gso: g(&self.tx_gso),
            tx_gso_bytes: g(&self.tx_gso_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp::TcpRepr;
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

    /// A TCP/IPv4 packet with `payload` bytes and a full, valid checksum.
    fn tcp_packet(payload: usize) -> Vec<u8> {
        let tcp_len = 20 + payload;
        let mut p = vec![0u8; 20 + tcp_len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&SRC.octets());
        p[16..20].copy_from_slice(&DST.octets());
        let c = checksum::finish(checksum::sum(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&5000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x10; // ACK
        t[14..16].copy_from_slice(&65535u16.to_be_bytes());
        for (i, b) in t[20..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let c = checksum::finish(checksum::sum(
            checksum::pseudo_header(SRC, DST, PROTO_TCP, tcp_len),
            t,
        ));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The packet as the kernel hands it over with CHECKSUM_PARTIAL: the
    /// checksum field holds only the (uncomplemented) pseudo-header sum.
    fn partial(mut p: Vec<u8>) -> Vec<u8> {
        let len = p.len() - 20;
        let ps = checksum::pseudo_header(SRC, DST, PROTO_TCP, len) as u16;
        p[36..38].copy_from_slice(&ps.to_be_bytes());
        p
    }

    fn needs_csum_tcp() -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_NONE,
            hdr_len: 40,
            gso_size: 0,
            csum_start: 20,
            csum_offset: TCP_CSUM_OFFSET,
        }
    }

    #[test]
    fn header_round_trips_through_its_wire_form() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let b = h.to_bytes();
        assert_eq!(b.len(), HDR_LEN);
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 1);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 1448);
        assert_eq!(VnetHdr::parse(&b), Ok(h));
    }

    #[test]
    fn short_header_is_truncated_not_a_panic() {
        for n in 0..HDR_LEN {
            assert_eq!(VnetHdr::parse(&[0u8; 16][..n]), Err(VnetError::Truncated));
        }
    }

    #[test]
    fn gso_tcpv4_packet_is_one_large_trusted_segment() {
        let p = partial(tcp_packet(60000));
        let h = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1448,
            ..needs_csum_tcp()
        };
        let info = check_rx(&h, &p).unwrap();
        assert!(info.gso && info.csum_trusted && !info.needs_completion);
        // The stack's parser accepts it without verification, and would
        // reject it with: the checksum field holds only the pseudo-header sum.
        let seg = &p[20..];
        assert_eq!(
            TcpRepr::parse(SRC, DST, seg, false).unwrap().payload.len(),
            60000
        );
        assert!(TcpRepr::parse(SRC, DST, seg, true).is_err());
    }

    #[test]
    fn gso_ecn_bit_is_accepted() {
        let p = partial(tcp_packet(3000));
        let h = VnetHdr {
            gso_type: GSO_TCPV4 | GSO_ECN,
            gso_size: 1448,
            ..needs_csum_tcp()
        };
        assert!(check_rx(&h, &p).unwrap().gso);
    }

    #[test]
    fn needs_csum_tcp_is_trusted_and_completing_it_gives_the_full_checksum() {
        let full = tcp_packet(100);
        let mut p = partial(full.clone());
        let h = needs_csum_tcp();
        let info = check_rx(&h, &p).unwrap();
        assert!(info.csum_trusted && !info.gso);
        complete_checksum(&h, &mut p).unwrap();
        assert_eq!(p, full);
    }

    #[test]
    fn needs_csum_udp_asks_for_completion() {
        let mut p = tcp_packet(8);
        p[9] = PROTO_UDP;
        let h = VnetHdr {
            csum_offset: UDP_CSUM_OFFSET,
            ..needs_csum_tcp()
        };
        let info = check_rx(&h, &p).unwrap();
        assert!(info.needs_completion && !info.csum_trusted);
    }

    #[test]
    fn data_valid_tcp_is_trusted() {
        let p = tcp_packet(10);
        let h = VnetHdr {
            flags: F_DATA_VALID,
            ..VnetHdr::default()
        };
        assert!(check_rx(&h, &p).unwrap().csum_trusted);
        assert!(!check_rx(&VnetHdr::default(), &p).unwrap().csum_trusted);
    }

    #[test]
    fn malformed_headers_are_refused() {
        let p = partial(tcp_packet(100));
        let bad = [
            // GSO types we never asked for.
            (
                VnetHdr {
                    gso_type: GSO_TCPV6,
                    gso_size: 1448,
                    ..needs_csum_tcp()
                },
                VnetError::UnsupportedGso(GSO_TCPV6),
            ),
            (
                VnetHdr {
                    gso_type: GSO_UDP,
                    ..needs_csum_tcp()
                },
                VnetError::UnsupportedGso(GSO_UDP),
            ),
            (
                VnetHdr {
                    gso_type: GSO_UDP_L4,
                    ..needs_csum_tcp()
                },
                VnetError::UnsupportedGso(GSO_UDP_L4),
            ),
            (
                VnetHdr {
                    gso_type: 0x42,
                    ..needs_csum_tcp()
                },
                VnetError::UnsupportedGso(0x42),
            ),
            // GSO with a zero segment size.
            (
                VnetHdr {
                    gso_type: GSO_TCPV4,
                    gso_size: 0,
                    ..needs_csum_tcp()
                },
                VnetError::BadGso,
            ),
            // Checksum offsets beyond the packet, or not at the TCP checksum.
            (
                VnetHdr {
                    csum_start: 200,
                    ..needs_csum_tcp()
                },
                VnetError::BadCsum,
            ),
            (
                VnetHdr {
                    csum_start: u16::MAX,
                    csum_offset: u16::MAX,
                    ..needs_csum_tcp()
                },
                VnetError::BadCsum,
            ),
            (
                VnetHdr {
                    csum_offset: 6,
                    ..needs_csum_tcp()
                },
                VnetError::BadCsum,
            ),
        ];
        for (h, e) in bad {
            assert_eq!(check_rx(&h, &p), Err(e), "{h:?}");
        }
        // GSO on a UDP packet, on a non-IPv4 packet, on a cut-off TCP header.
        let gso = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1448,
            ..VnetHdr::default()
        };
        let mut udp = p.clone();
        udp[9] = PROTO_UDP;
        assert_eq!(check_rx(&gso, &udp), Err(VnetError::BadGso));
        let mut v6 = p.clone();
        v6[0] = 0x60;
        assert_eq!(check_rx(&gso, &v6), Err(VnetError::BadGso));
        assert_eq!(check_rx(&gso, &p[..30]), Err(VnetError::BadGso));
        assert_eq!(check_rx(&gso, &[]), Err(VnetError::BadGso));
    }

    #[test]
    fn check_rx_never_panics_on_random_input() {
        let mut rng = crate::rng::Rng::new(7);
        for _ in 0..20000 {
            let mut b = [0u8; 64];
            rng.fill(&mut b);
            let n = (rng.next_u32() % 64) as usize;
            let h = VnetHdr::parse(&b[..HDR_LEN]).unwrap();
            let mut p = b[HDR_LEN..HDR_LEN + n.min(54)].to_vec();
            if let Ok(i) = check_rx(&h, &p) {
                if i.needs_completion {
                    complete_checksum(&h, &mut p).unwrap();
                }
            }
        }
    }

    #[test]
    fn small_packets_are_sent_plain() {
        let p = tcp_packet(1460);
        let plan = tx_plan(&p, p.len(), 1500, false).unwrap();
        assert_eq!(plan.hdr, VnetHdr::default());
        assert_eq!(plan.csum_patch, None);
    }

    #[test]
    fn large_tcp_is_sent_as_gso_cut_at_the_mtu_with_partial_checksum() {
        let p = tcp_packet(60000);
        let plan = tx_plan(&p, p.len(), 1500, false).unwrap();
        assert_eq!(plan.hdr.gso_type, GSO_TCPV4);
        assert_eq!(plan.hdr.flags, F_NEEDS_CSUM);
        assert_eq!(plan.hdr.gso_size, 1460);
        assert_eq!(plan.hdr.hdr_len, 40);
        assert_eq!(plan.hdr.csum_start, 20);
        assert_eq!(plan.hdr.csum_offset, 16);
        // Patched, then completed as the kernel would: the original checksum.
        let (at, v) = plan.csum_patch.unwrap();
        let mut q = p.clone();
        q[at..at + 2].copy_from_slice(&v);
        assert_ne!(q, p);
        complete_checksum(&plan.hdr, &mut q).unwrap();
        assert_eq!(q, p);
    }

    #[test]
    fn gso_size_leaves_room_for_tcp_options() {
        let mut p = tcp_packet(60000);
        p[32] = 8 << 4; // data offset 32: 12 bytes of options
        let plan = tx_plan(&p, p.len(), 1500, false).unwrap();
        assert_eq!(plan.hdr.gso_size, 1448);
        assert_eq!(plan.hdr.hdr_len, 52);
    }

    #[test]
    fn partial_checksums_mark_every_tcp_packet_needs_csum_and_leave_it_unpatched() {
        // As the stack emits with tx_checksum_partial: the pseudo-header sum.
        let full = tcp_packet(1000);
        let mut p = full.clone();
        let pseudo = checksum::pseudo_header(
            std::net::Ipv4Addr::new(p[12], p[13], p[14], p[15]),
            std::net::Ipv4Addr::new(p[16], p[17], p[18], p[19]),
            PROTO_TCP,
            p.len() - 20,
        ) as u16;
        p[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let plan = tx_plan(&p, p.len(), 1500, true).unwrap();
        assert_eq!(plan.hdr.flags, F_NEEDS_CSUM);
        assert_eq!(plan.hdr.gso_type, GSO_NONE);
        assert_eq!((plan.hdr.csum_start, plan.hdr.csum_offset), (20, 16));
        assert_eq!(plan.csum_patch, None);
        // Completed as the kernel would: the full checksum.
        let mut q = p.clone();
        complete_checksum(&plan.hdr, &mut q).unwrap();
        assert_eq!(q, full);
        let big = tcp_packet(60000);
        let plan = tx_plan(&big, big.len(), 1500, true).unwrap();
        assert_eq!((plan.hdr.gso_type, plan.hdr.gso_size), (GSO_TCPV4, 1460));
        assert_eq!(plan.csum_patch, None);
        // Not TCP: plain, or no plan at all beyond the MTU.
        let mut u = tcp_packet(100);
        u[9] = PROTO_UDP;
        assert_eq!(
            tx_plan(&u, u.len(), 1500, true).unwrap().hdr,
            VnetHdr::default()
        );
        let mut u = tcp_packet(3000);
        u[9] = PROTO_UDP;
        assert_eq!(tx_plan(&u, u.len(), 1500, true), None);
    }

    #[test]
    fn large_non_tcp_has_no_gso_plan() {
        let mut p = tcp_packet(3000);
        p[9] = PROTO_UDP;
        assert_eq!(tx_plan(&p, p.len(), 1500, false), None);
        assert_eq!(tx_plan(&[0x45; 3], 3, 2, false), None);
    }
}
