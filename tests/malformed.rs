//! Malformed input into a whole stack: truncated headers, bad checksums,
//! bogus options and lengths are counted and dropped, nothing panics, and
//! the stack keeps working afterwards.

use etherparse::PacketBuilder;
use std::net::Ipv4Addr;
use tunstack::phy::queue::QueueDevice;
use tunstack::rng::Rng;
use tunstack::stack::{Stack, StackConfig};
use tunstack::time::Instant;

const STACK: [u8; 4] = [198, 19, 0, 2];
const PEER: [u8; 4] = [198, 19, 0, 1];

fn stack() -> (Stack, QueueDevice) {
    let s = Stack::new(StackConfig::new(Ipv4Addr::from(STACK)), Rng::new(7));
    (s, QueueDevice::new(1500))
}

fn syn(dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ipv4(PEER, STACK, 64)
        .tcp(40000, dport, 1000, 64240)
        .syn()
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
        .unwrap();
    let mut v = Vec::new();
    b.write(&mut v, &[]).unwrap();
    v
}

fn ping() -> Vec<u8> {
    let b = PacketBuilder::ipv4(PEER, STACK, 64).icmpv4_echo_request(1, 1);
    let mut v = Vec::new();
    b.write(&mut v, b"abcdefgh").unwrap();
    v
}

fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(PEER, STACK, 64).udp(40000, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// Feed one packet, poll, and return what the stack sent.
fn feed(s: &mut Stack, dev: &mut QueueDevice, now: Instant, pkt: Vec<u8>) -> Vec<Vec<u8>> {
    dev.rx.push_back(pkt);
    s.poll(now, dev);
    dev.tx.drain(..).collect()
}

fn tcp_flags(pkt: &[u8]) -> Option<(bool, bool, bool)> {
    let p = etherparse::SlicedPacket::from_ip(pkt).ok()?;
    match p.transport? {
        etherparse::TransportSlice::Tcp(t) => Some((t.syn(), t.ack(), t.rst())),
        _ => None,
    }
}

#[test]
fn valid_packets_get_answers() {
    let (mut s, mut dev) = stack();
    let now = Instant::ZERO;
    let _l = s.tcp_listen(80, 16).unwrap();
    let out = feed(&mut s, &mut dev, now, ping());
    assert_eq!(out.len(), 1, "echo reply");
    let out = feed(&mut s, &mut dev, now, syn(80));
    assert_eq!(out.len(), 1);
    assert_eq!(tcp_flags(&out[0]), Some((true, true, false)), "SYN-ACK");
    let out = feed(&mut s, &mut dev, now, syn(81));
    assert_eq!(
        tcp_flags(&out[0]),
        Some((false, true, true)),
        "RST-ACK for a closed port"
    );
}

#[test]
fn truncated_packets_are_counted_and_dropped() {
    let (mut s, mut dev) = stack();
    let _l = s.tcp_listen(80, 16).unwrap();
    let full = syn(80);
    for len in 0..full.len() {
        let out = feed(&mut s, &mut dev, Instant::ZERO, full[..len].to_vec());
        assert!(
            out.is_empty(),
            "a {len}-byte prefix of a SYN produced output"
        );
    }
    let st = s.stats();
    let ip_drops = st.ip.rx_truncated + st.ip.rx_bad_length + st.ip.rx_bad_version;
    assert_eq!(
        ip_drops + st.tcp_rx_malformed + st.tcp_rx_bad_checksum,
        full.len() as u64,
        "{st:?}"
    );
    assert_eq!(s.tcp_connections().len(), 0);
}

#[test]
fn bad_ip_checksum_is_counted() {
    let (mut s, mut dev) = stack();
    let mut p = ping();
    p[10] ^= 0x55;
    assert!(feed(&mut s, &mut dev, Instant::ZERO, p).is_empty());
    assert_eq!(s.stats().ip.rx_bad_checksum, 1);
}

#[test]
fn bad_tcp_checksum_gets_no_reset() {
    let (mut s, mut dev) = stack();
    let mut p = syn(81);
    let last = p.len() - 1;
    p[last] ^= 0x01; // inside the TCP header (options)
    assert!(feed(&mut s, &mut dev, Instant::ZERO, p).is_empty());
    assert_eq!(s.stats().tcp_rx_bad_checksum, 1);
    assert_eq!(s.stats().tcp_rst_sent, 0);
}

/// Recompute the TCP checksum after editing a segment in place.
fn fix_tcp_checksum(p: &mut [u8]) {
    let ihl = (p[0] & 0x0f) as usize * 4;
    p[ihl + 16] = 0;
    p[ihl + 17] = 0;
    let seg = &p[ihl..];
    let mut sum: u32 = 0;
    for c in [&PEER[..], &STACK[..]] {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]))
            + u32::from(u16::from_be_bytes([c[2], c[3]]));
    }
    sum += 6 + seg.len() as u32;
    for ch in seg.chunks(2) {
        sum += u32::from(u16::from_be_bytes([ch[0], *ch.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    p[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
}

/// A named change to a valid packet.
type Mutation = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn bogus_tcp_options_and_offsets_are_malformed() {
    let (mut s, mut dev) = stack();
    let _l = s.tcp_listen(80, 16).unwrap();
    let base = syn(80); // 20 IP + 20 TCP + 4 options (MSS)
    let cases: Vec<(&str, Mutation)> = vec![
        ("option length 0", Box::new(|p: &mut Vec<u8>| p[41] = 0)),
        ("option length 1", Box::new(|p: &mut Vec<u8>| p[41] = 1)),
        (
            "option overruns the header",
            Box::new(|p: &mut Vec<u8>| p[41] = 40),
        ),
        (
            "data offset below 5",
            Box::new(|p: &mut Vec<u8>| p[32] = 0x40 | (p[32] & 0x0f)),
        ),
        (
            "data offset beyond the segment",
            Box::new(|p: &mut Vec<u8>| p[32] = 0xf0 | (p[32] & 0x0f)),
        ),
        (
            "MSS option with wrong length",
            Box::new(|p: &mut Vec<u8>| p[41] = 3),
        ),
    ];
    for (i, (what, edit)) in cases.iter().enumerate() {
        let mut p = base.clone();
        edit(&mut p);
        fix_tcp_checksum(&mut p);
        let out = feed(&mut s, &mut dev, Instant::ZERO, p);
        assert!(out.is_empty(), "{what}: the stack answered");
        assert_eq!(
            s.stats().tcp_rx_malformed,
            i as u64 + 1,
            "{what}: not counted as malformed"
        );
    }
    assert_eq!(s.tcp_connections().len(), 0);
}

#[test]
fn bad_lengths_are_counted() {
    let (mut s, mut dev) = stack();
    let _u = s.udp_bind(7).unwrap();
    // IP total length larger than the packet.
    let mut p = udp(7, b"hello");
    p[2..4].copy_from_slice(&200u16.to_be_bytes());
    p[10] = 0;
    p[11] = 0;
    let c = ip_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    assert!(feed(&mut s, &mut dev, Instant::ZERO, p).is_empty());
    let st = s.stats();
    assert_eq!(st.ip.rx_bad_length + st.ip.rx_truncated, 1, "{st:?}");
    // UDP length field larger than the IP payload.
    let mut p = udp(7, b"hello");
    p[24..26].copy_from_slice(&100u16.to_be_bytes());
    assert!(feed(&mut s, &mut dev, Instant::ZERO, p).is_empty());
    assert_eq!(s.stats().udp_rx_malformed, 1);
    assert_eq!(s.stats().udp_rx_datagrams, 0);
    // IHL below 5.
    let mut p = ping();
    p[0] = 0x44;
    assert!(feed(&mut s, &mut dev, Instant::ZERO, p).is_empty());
    // An IPv6 packet (the kernel's router solicitations look like this).
    let mut p = vec![0u8; 48];
    p[0] = 0x60;
    assert!(feed(&mut s, &mut dev, Instant::ZERO, p).is_empty());
    assert_eq!(s.stats().ip.rx_ipv6, 1);
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn random_garbage_never_panics_and_the_stack_still_works() {
    let seed = std::env::var("TUNSTACK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng::new(seed);
    let (mut s, mut dev) = stack();
    let _l = s.tcp_listen(80, 1024).unwrap();
    let _u = s.udp_bind(7).unwrap();
    let templates = [syn(80), ping(), udp(7, b"0123456789"), syn(81)];
    let mut now = Instant::ZERO;
    for i in 0..200_000u32 {
        let mut p = templates[i as usize % templates.len()].clone();
        match rng.gen_range(0, 4) {
            0 => {
                // flip a few random bits
                for _ in 0..rng.gen_range(1, 4) {
                    let at = rng.gen_range(0, p.len() as u64) as usize;
                    p[at] ^= 1 << rng.gen_range(0, 8);
                }
            }
            1 => {
                let len = rng.gen_range(0, p.len() as u64 + 1) as usize;
                p.truncate(len);
            }
            2 => {
                // random bytes after a plausible IPv4 header start
                let n = rng.gen_range(0, 100) as usize;
                p.resize(20 + n, 0);
                rng.fill(&mut p[1..]);
            }
            _ => {
                // valid header, then fix the IP checksum after mangling fields
                let at = rng.gen_range(0, 20) as usize;
                p[at] = rng.next_u32() as u8;
                p[10] = 0;
                p[11] = 0;
                if p[0] & 0x0f == 5 {
                    let c = ip_checksum(&p[..20]);
                    p[10..12].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
        dev.rx.push_back(p);
        if i % 64 == 0 {
            now += tunstack::time::Duration::from_millis(1);
            s.poll(now, &mut dev);
            dev.tx.clear();
        }
    }
    s.poll(now, &mut dev);
    dev.tx.clear();
    let out = feed(&mut s, &mut dev, now, ping());
    assert_eq!(out.len(), 1, "the stack still answers ping (seed {seed})");
}

/// A data segment of an established connection whose payload was corrupted
/// in flight: counted as a bad checksum, not acknowledged, not readable,
/// and the real segment after it reads back intact.
#[test]
fn corrupted_data_on_an_established_connection_is_dropped_and_the_real_bytes_read() {
    let (mut s, mut dev) = stack();
    let now = Instant::ZERO;
    let l = s.tcp_listen(80, 16).unwrap();
    let out = feed(&mut s, &mut dev, now, syn(80));
    let synack = etherparse::SlicedPacket::from_ip(&out[0]).unwrap();
    let Some(etherparse::TransportSlice::Tcp(t)) = synack.transport else {
        panic!("no SYN-ACK");
    };
    let our_ack = t.sequence_number().wrapping_add(1);
    let data_seg = |payload: &[u8]| {
        let b = PacketBuilder::ipv4(PEER, STACK, 64)
            .tcp(40000, 80, 1001, 64240)
            .ack(our_ack);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    };
    assert!(feed(&mut s, &mut dev, now, data_seg(&[])).is_empty());
    let conn = s.tcp_accept(l).unwrap();
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let mut bad = data_seg(&data);
    let n = bad.len();
    bad[n - 100] ^= 0x40; // in the payload
    let before = s.stats().tcp_rx_bad_checksum;
    assert!(feed(&mut s, &mut dev, now, bad).is_empty(), "no ACK for it");
    assert_eq!(s.stats().tcp_rx_bad_checksum, before + 1);
    let mut buf = [0u8; 2000];
    assert_eq!(
        s.tcp_recv(conn, &mut buf),
        Err(tunstack::tcp::TcpError::WouldBlock)
    );
    feed(&mut s, &mut dev, now, data_seg(&data));
    assert_eq!(s.tcp_recv(conn, &mut buf), Ok(1000));
    assert_eq!(&buf[..1000], &data[..]);
    assert_eq!(s.stats().tcp_rx_bad_checksum, before + 1);
}
