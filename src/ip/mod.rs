//! The network layer: IPv4 input validation, fragment reassembly, ICMP echo
//! and unreachable generation, and a counter for every drop reason.
//!
//! Sans-IO: `receive` takes a packet and the time, and returns what the
//! transport layer should see (or a reply to send, or nothing).

pub mod frag;

use crate::time::{Duration, Instant};
use crate::wire::icmp::{self, IcmpRepr};
use crate::wire::ipv4::{self, Ipv4Repr};
use crate::wire::WireError;
use std::net::Ipv4Addr;

#[derive(Clone, Debug)]
pub struct Ipv4Config {
    /// The stack's own address; packets to other addresses are dropped (counted).
    pub addr: Ipv4Addr,
    /// TTL of packets we originate.
    pub ttl: u8,
    /// Reassembly limits: total buffered bytes, concurrent datagrams, and how
    /// long an incomplete datagram is kept (RFC 791 suggests 15 s; Linux 30 s).
    pub reasm_max_bytes: usize,
    pub reasm_max_datagrams: usize,
    pub reasm_timeout: Duration,
}

impl Ipv4Config {
    pub fn new(addr: Ipv4Addr) -> Ipv4Config {
        Ipv4Config {
            addr,
            ttl: 64,
            reasm_max_bytes: 4 * 1024 * 1024,
            reasm_max_datagrams: 64,
            reasm_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters for everything the IPv4 layer sees; every drop has a reason.
#[derive(Clone, Debug, Default)]
pub struct IpStats {
    pub rx_packets: u64,
    /// TCP/UDP datagrams handed up as `IpInput::Deliver`.
    pub rx_delivered: u64,
    /// IPv6 packets (the kernel's router solicitations, MLD): dropped quietly.
    pub rx_ipv6: u64,
    pub rx_bad_version: u64,
    pub rx_truncated: u64,
    pub rx_bad_length: u64,
    pub rx_bad_checksum: u64,
    pub rx_not_for_us: u64,
    pub rx_bad_source: u64,
    pub rx_fragments: u64,
    pub rx_reassembled: u64,
    pub rx_frag_dropped: u64,
    pub rx_frag_timeouts: u64,
    pub rx_unknown_protocol: u64,
    pub icmp_rx: u64,
    pub icmp_rx_malformed: u64,
    pub icmp_echo_replies: u64,
    /// ICMP errors received about our packets (destination unreachable
    /// and time exceeded), handed up as `IpInput::IcmpError`.
    pub icmp_unreachable_rx: u64,
    pub icmp_unreachable_tx: u64,
    /// ICMP errors not sent because of the rate limit.
    pub icmp_rate_limited: u64,
    pub tx_packets: u64,
}

/// A validated datagram for the transport layer.
#[derive(Clone, Copy, Debug)]
pub struct IpDatagram<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// The datagram as received (header + payload; the reassembled one for
    /// fragments). ICMP errors quote its start.
    pub raw: &'a [u8],
    pub payload: &'a [u8],
}

/// What the caller should do with a received packet.
#[derive(Debug)]
pub enum IpInput<'a> {
    /// A TCP or UDP datagram to hand to the transport layer.
    Deliver(IpDatagram<'a>),
    /// An ICMP message was handled and a reply (a full IPv4 packet) was
    /// written to `out[..len]`: send it.
    Reply(usize),
    /// An ICMP error about one of our packets (destination unreachable etc.);
    /// the quoted original lets the transport find the socket.
    IcmpError {
        code: u8,
        icmp_type: u8,
        quoted: &'a [u8],
    },
    /// Nothing to do: dropped (counted) or held for reassembly.
    None,
}

/// Token bucket for outgoing ICMP errors (RFC 1812 §4.3.2.8), like Linux's
/// `icmp_ratelimit`: one token per `INTERVAL_US`, at most `BURST` saved.
/// Credit is kept in microseconds so refilling needs no division.
#[derive(Debug)]
struct IcmpRateLimit {
    credit_us: u64,
    last: Instant,
}

impl IcmpRateLimit {
    /// 1000 errors per second...
    const INTERVAL_US: u64 = 1_000;
    /// ...with bursts of up to 50.
    const BURST: u64 = 50;

    fn new() -> IcmpRateLimit {
        IcmpRateLimit {
            credit_us: Self::INTERVAL_US * Self::BURST,
            last: Instant::ZERO,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.total_micros().saturating_sub(self.last.total_micros());
        self.last = self.last.max(now);
        self.credit_us = (self.credit_us + elapsed).min(Self::INTERVAL_US * Self::BURST);
        if self.credit_us >= Self::INTERVAL_US {
            self.credit_us -= Self::INTERVAL_US;
            true
        } else {
            false
        }
    }
}

/// Most an ICMP error may be, per RFC 1812 §4.3.2.3 (IP header included).
const ICMP_ERROR_MAX: usize = 576;

#[derive(Debug)]
pub struct Ipv4Layer {
    config: Ipv4Config,
    stats: IpStats,
    ident: u16,
    reasm: frag::Reassembler,
    icmp_limit: IcmpRateLimit,
    /// Time of the latest `receive`; `emit_unreachable` has no clock of its own.
    now: Instant,
}

/// Is `a` usable as the source of a packet we accept (a single remote host)?
fn bad_source(a: Ipv4Addr, ours: Ipv4Addr) -> bool {
    a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() || a == ours
}

/// Write a 20-byte header from `config.addr` (split out of `Ipv4Layer` so it
/// can run while the reassembly buffer is borrowed).
fn write_header(
    config: &Ipv4Config,
    ident: &mut u16,
    stats: &mut IpStats,
    dst: Ipv4Addr,
    protocol: u8,
    payload_len: usize,
    buf: &mut [u8],
) -> usize {
    let repr = Ipv4Repr {
        src: config.addr,
        dst,
        protocol,
        ttl: config.ttl,
        ident: *ident,
        dont_fragment: true,
        more_fragments: false,
        frag_offset: 0,
        header_len: ipv4::HEADER_LEN,
        payload_len,
    };
    *ident = ident.wrapping_add(1);
    stats.tx_packets += 1;
    repr.emit(buf)
}

/// Split an IPv4 packet we built (20-byte header, no options) into fragments
/// of at most `mtu` bytes (RFC 791 §3.2), calling `emit` for each. A packet
/// that fits is passed through unchanged. Fragments clear DF, carry the same
/// ident, and have offsets in multiples of 8 bytes. Returns how many packets
/// were emitted (0 if `packet` is not a well-formed IPv4 packet).
pub fn fragment(packet: &[u8], mtu: usize, mut emit: impl FnMut(&[u8])) -> usize {
    if packet.len() <= mtu {
        emit(packet);
        return 1;
    }
    let Ok(repr) = Ipv4Repr::parse(packet) else {
        return 0;
    };
    let hl = repr.header_len;
    let payload = &packet[hl..hl + repr.payload_len];
    // Payload per fragment: what fits after the header, rounded down to 8.
    let per = (mtu.saturating_sub(hl)) & !7;
    if per == 0 {
        return 0;
    }
    // Rare path (oversized echo replies): one allocation per packet is fine.
    let mut buf = vec![0u8; ipv4::HEADER_LEN + per];
    let mut count = 0;
    for (i, chunk) in payload.chunks(per).enumerate() {
        let offset = repr.frag_offset + i * per;
        let last = offset - repr.frag_offset + chunk.len() == payload.len();
        let frag = Ipv4Repr {
            dont_fragment: false,
            more_fragments: !last || repr.more_fragments,
            frag_offset: offset,
            header_len: ipv4::HEADER_LEN,
            payload_len: chunk.len(),
            ..repr
        };
        let n = frag.emit(&mut buf[..ipv4::HEADER_LEN]);
        buf[n..n + chunk.len()].copy_from_slice(chunk);
        emit(&buf[..n + chunk.len()]);
        count += 1;
    }
    count
}

/// Is `quoted` the start of a datagram we sent (IPv4 header from our address
/// plus at least 8 bytes of its payload, RFC 792)?
fn valid_quote(quoted: &[u8], ours: Ipv4Addr) -> bool {
    if quoted.len() < ipv4::HEADER_LEN || quoted[0] >> 4 != 4 {
        return false;
    }
    let ihl = usize::from(quoted[0] & 0x0f) * 4;
    ihl >= ipv4::HEADER_LEN
        && quoted.len() >= ihl + 8
        && Ipv4Addr::new(quoted[12], quoted[13], quoted[14], quoted[15]) == ours
}

/// ICMP types that are errors (never answered with another error,
/// RFC 1122 §3.2.2): anything that is not a query or a reply.
fn is_icmp_query(icmp_type: u8) -> bool {
    matches!(icmp_type, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
}

/// The IPv4 layer's state other than the reassembler, borrowed separately so
/// that replies can be written while a reassembled datagram is borrowed.
struct Ctx<'s> {
    config: &'s Ipv4Config,
    stats: &'s mut IpStats,
    ident: &'s mut u16,
    limit: &'s mut IcmpRateLimit,
    now: Instant,
}

impl Ctx<'_> {
    fn icmp_input<'a>(&mut self, dgram: &IpDatagram<'a>, out: &mut [u8]) -> IpInput<'a> {
        self.stats.icmp_rx += 1;
        let msg = match IcmpRepr::parse(dgram.payload) {
            Ok(m) => m,
            Err(_) => {
                self.stats.icmp_rx_malformed += 1;
                return IpInput::None;
            }
        };
        let (icmp_type, code, quoted) = match msg {
            IcmpRepr::EchoRequest { ident, seq, data } => {
                let reply = IcmpRepr::EchoReply { ident, seq, data };
                let hl = ipv4::HEADER_LEN;
                let len = reply.buffer_len();
                if hl + len > out.len() {
                    log::debug!("echo request of {len} bytes does not fit the MTU; ignored");
                    return IpInput::None;
                }
                reply.emit(&mut out[hl..hl + len]);
                write_header(
                    self.config,
                    self.ident,
                    self.stats,
                    dgram.src,
                    ipv4::PROTO_ICMP,
                    len,
                    &mut out[..hl],
                );
                self.stats.icmp_echo_replies += 1;
                return IpInput::Reply(hl + len);
            }
            IcmpRepr::DestUnreachable { code, original, .. } => {
                (icmp::TYPE_DEST_UNREACHABLE, code, original)
            }
            IcmpRepr::Other {
                icmp_type: icmp::TYPE_TIME_EXCEEDED,
                code,
            } => (
                icmp::TYPE_TIME_EXCEEDED,
                code,
                &dgram.payload[icmp::HEADER_LEN..],
            ),
            IcmpRepr::EchoReply { .. } | IcmpRepr::Other { .. } => return IpInput::None,
        };
        if !valid_quote(quoted, self.config.addr) {
            self.stats.icmp_rx_malformed += 1;
            return IpInput::None;
        }
        self.stats.icmp_unreachable_rx += 1;
        IpInput::IcmpError {
            code,
            icmp_type,
            quoted,
        }
    }

    fn unreachable_into(&mut self, code: u8, dgram: &IpDatagram, out: &mut [u8]) -> Option<usize> {
        if dgram.dst.is_broadcast() || dgram.dst.is_multicast() || dgram.dst.is_unspecified() {
            return None;
        }
        if bad_source(dgram.src, self.config.addr) {
            return None;
        }
        if dgram.protocol == ipv4::PROTO_ICMP
            && !dgram.payload.first().is_some_and(|&t| is_icmp_query(t))
        {
            return None;
        }
        // Only the first fragment (offset 0) may draw an error (RFC 1122 §3.2.2).
        if dgram.raw.len() < ipv4::HEADER_LEN || dgram.raw[6] & 0x1f != 0 || dgram.raw[7] != 0 {
            return None;
        }
        let hl = ipv4::HEADER_LEN;
        let room = out.len().min(ICMP_ERROR_MAX);
        if room < hl + icmp::HEADER_LEN + hl + 8 {
            return None;
        }
        if !self.limit.allow(self.now) {
            self.stats.icmp_rate_limited += 1;
            return None;
        }
        let quote = &dgram.raw[..dgram.raw.len().min(room - hl - icmp::HEADER_LEN)];
        let msg = IcmpRepr::DestUnreachable {
            code,
            next_hop_mtu: 0,
            original: quote,
        };
        let len = msg.emit(&mut out[hl..]);
        write_header(
            self.config,
            self.ident,
            self.stats,
            dgram.src,
            ipv4::PROTO_ICMP,
            len,
            &mut out[..hl],
        );
        self.stats.icmp_unreachable_tx += 1;
        Some(hl + len)
    }
}

impl Ipv4Layer {
    pub fn new(config: Ipv4Config, ident_seed: u16) -> Ipv4Layer {
        let reasm = frag::Reassembler::new(
            config.reasm_max_bytes,
            config.reasm_max_datagrams,
            config.reasm_timeout,
        );
        Ipv4Layer {
            config,
            stats: IpStats::default(),
            ident: ident_seed,
            reasm,
            icmp_limit: IcmpRateLimit::new(),
            now: Instant::ZERO,
        }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.config.addr
    }

    pub fn config(&self) -> &Ipv4Config {
        &self.config
    }

    pub fn stats(&self) -> &IpStats {
        &self.stats
    }

    /// Validate one received packet (any version: IPv6 is counted and
    /// dropped). Answers ICMP echo requests itself (writing the reply to
    /// `out`), answers unknown protocols with ICMP protocol unreachable,
    /// reassembles fragments, and returns TCP/UDP datagrams for delivery.
    /// `out` must be at least as large as the MTU.
    ///
    /// Drops, each counted: not IPv4, malformed header, destination not our
    /// address (broadcast included), source not a single remote host,
    /// fragments refused by reassembly, malformed ICMP. TTL is not checked:
    /// we are the destination, never a router (RFC 1122 §3.2.1.7).
    pub fn receive<'a>(
        &'a mut self,
        now: Instant,
        packet: &'a [u8],
        out: &mut [u8],
    ) -> IpInput<'a> {
        self.now = self.now.max(now);
        self.stats.rx_packets += 1;
        match packet.first().map(|b| b >> 4) {
            Some(6) => {
                self.stats.rx_ipv6 += 1;
                return IpInput::None;
            }
            Some(4) | None => {}
            Some(_) => {
                self.stats.rx_bad_version += 1;
                return IpInput::None;
            }
        }
        let mut repr = match Ipv4Repr::parse(packet) {
            Ok(r) => r,
            Err(e) => {
                let c = match e {
                    WireError::Truncated => &mut self.stats.rx_truncated,
                    WireError::BadVersion => &mut self.stats.rx_bad_version,
                    WireError::BadChecksum => &mut self.stats.rx_bad_checksum,
                    _ => &mut self.stats.rx_bad_length,
                };
                *c += 1;
                return IpInput::None;
            }
        };
        if repr.dst != self.config.addr {
            self.stats.rx_not_for_us += 1;
            return IpInput::None;
        }
        if bad_source(repr.src, self.config.addr) {
            self.stats.rx_bad_source += 1;
            return IpInput::None;
        }
        let mut raw = &packet[..repr.header_len + repr.payload_len];
        if repr.is_fragment() {
            self.stats.rx_fragments += 1;
            match self.reasm.push(now, &repr, raw) {
                frag::FragOutcome::Held => return IpInput::None,
                frag::FragOutcome::Dropped(why) => {
                    log::debug!("fragment from {} dropped: {why:?}", repr.src);
                    self.stats.rx_frag_dropped += 1;
                    return IpInput::None;
                }
                frag::FragOutcome::Complete(whole) => match Ipv4Repr::parse(whole) {
                    Ok(r) => {
                        self.stats.rx_reassembled += 1;
                        repr = r;
                        raw = whole;
                    }
                    Err(_) => {
                        self.stats.rx_frag_dropped += 1;
                        return IpInput::None;
                    }
                },
            }
        }
        let dgram = IpDatagram {
            src: repr.src,
            dst: repr.dst,
            protocol: repr.protocol,
            ttl: repr.ttl,
            raw,
            payload: &raw[repr.header_len..],
        };
        let mut ctx = Ctx {
            config: &self.config,
            stats: &mut self.stats,
            ident: &mut self.ident,
            limit: &mut self.icmp_limit,
            now: self.now,
        };
        match repr.protocol {
            ipv4::PROTO_TCP | ipv4::PROTO_UDP => {
                ctx.stats.rx_delivered += 1;
                IpInput::Deliver(dgram)
            }
            ipv4::PROTO_ICMP => ctx.icmp_input(&dgram, out),
            _ => {
                ctx.stats.rx_unknown_protocol += 1;
                match ctx.unreachable_into(icmp::CODE_PROTOCOL_UNREACHABLE, &dgram, out) {
                    Some(n) => IpInput::Reply(n),
                    None => IpInput::None,
                }
            }
        }
    }

    /// Write an IPv4 header from us to `dst` into `buf[..20]` for a payload of
    /// `payload_len` bytes that the caller has placed (or will place) at
    /// `buf[20..]`. Returns the header length (20). Counts a transmitted packet.
    pub fn emit_header(
        &mut self,
        dst: Ipv4Addr,
        protocol: u8,
        payload_len: usize,
        buf: &mut [u8],
    ) -> usize {
        write_header(
            &self.config,
            &mut self.ident,
            &mut self.stats,
            dst,
            protocol,
            payload_len,
            buf,
        )
    }

    /// Write a complete ICMP destination-unreachable packet (`code`, e.g.
    /// port unreachable) about `dgram` into `out`; returns its length.
    /// Never answers a datagram that is itself an ICMP error, or one sent to
    /// a broadcast/multicast address (RFC 1122 §3.2.2).
    ///
    /// Also never answers a source that is not a single host, a fragment
    /// other than the first, or when the rate limit (1000/s, burst 50,
    /// counted in `icmp_rate_limited`) is exhausted. The quote is as much of
    /// the original as fits in 576 bytes (RFC 1812 §4.3.2.3).
    pub fn emit_unreachable(
        &mut self,
        code: u8,
        dgram: &IpDatagram,
        out: &mut [u8],
    ) -> Option<usize> {
        let mut ctx = Ctx {
            config: &self.config,
            stats: &mut self.stats,
            ident: &mut self.ident,
            limit: &mut self.icmp_limit,
            now: self.now,
        };
        ctx.unreachable_into(code, dgram, out)
    }

    /// Drop reassembly state older than the timeout (counted).
    pub fn expire(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.stats.rx_frag_timeouts += self.reasm.expire(now) as u64;
    }

    /// Earliest reassembly timeout, if any datagram is incomplete.
    pub fn poll_at(&self) -> Option<Instant> {
        self.reasm.poll_at()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::udp::UdpRepr;

    const US: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
    const PEER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
    const T0: Instant = Instant::ZERO;

    fn layer() -> Ipv4Layer {
        Ipv4Layer::new(Ipv4Config::new(US), 100)
    }

    /// An IPv4 packet with the given header fields around `payload`.
    fn packet_with(f: impl FnOnce(&mut Ipv4Repr), payload: &[u8]) -> Vec<u8> {
        let mut r = Ipv4Repr {
            src: PEER,
            dst: US,
            protocol: ipv4::PROTO_UDP,
            ttl: 64,
            ident: 7,
            dont_fragment: false,
            more_fragments: false,
            frag_offset: 0,
            header_len: 20,
            payload_len: payload.len(),
        };
        f(&mut r);
        let mut p = vec![0u8; 20 + payload.len()];
        r.emit(&mut p);
        p[20..].copy_from_slice(payload);
        p
    }

    fn udp_packet(payload: &[u8]) -> Vec<u8> {
        let u = UdpRepr {
            src_port: 40000,
            dst_port: 7,
            payload,
        };
        let mut seg = vec![0u8; u.buffer_len()];
        u.emit(PEER, US, &mut seg);
        packet_with(|_| {}, &seg)
    }

    fn icmp_packet(msg: IcmpRepr) -> Vec<u8> {
        let mut m = vec![0u8; msg.buffer_len()];
        msg.emit(&mut m);
        packet_with(|r| r.protocol = ipv4::PROTO_ICMP, &m)
    }

    /// Feed one packet; returns a summary and the reply bytes if any.
    fn feed(ip: &mut Ipv4Layer, now: Instant, pkt: &[u8]) -> (&'static str, Vec<u8>) {
        let mut out = vec![0u8; 1500];
        match ip.receive(now, pkt, &mut out) {
            IpInput::Deliver(_) => ("deliver", Vec::new()),
            IpInput::Reply(n) => ("reply", out[..n].to_vec()),
            IpInput::IcmpError { .. } => ("icmp-error", Vec::new()),
            IpInput::None => ("none", Vec::new()),
        }
    }

    fn fix_checksum(p: &mut [u8]) {
        let hl = usize::from(p[0] & 0x0f) * 4;
        p[10] = 0;
        p[11] = 0;
        let c = crate::wire::checksum::finish(crate::wire::checksum::sum(0, &p[..hl]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn ipv6_is_dropped_quietly() {
        let mut ip = layer();
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        assert_eq!(feed(&mut ip, T0, &p).0, "none");
        assert_eq!((ip.stats().rx_ipv6, ip.stats().rx_bad_version), (1, 0));
    }

    #[test]
    fn other_versions_are_bad_version() {
        let mut ip = layer();
        let mut p = udp_packet(b"x");
        p[0] = 0x55;
        feed(&mut ip, T0, &p);
        assert_eq!(ip.stats().rx_bad_version, 1);
    }

    #[test]
    fn header_errors_each_have_a_counter() {
        let mut ip = layer();
        let good = udp_packet(b"hello");
        feed(&mut ip, T0, &good[..10]);
        feed(&mut ip, T0, &[]);
        let mut bad_ihl = good.clone();
        bad_ihl[0] = 0x44;
        feed(&mut ip, T0, &bad_ihl);
        let mut bad_sum = good.clone();
        bad_sum[8] ^= 1;
        feed(&mut ip, T0, &bad_sum);
        let st = ip.stats();
        assert_eq!(
            (st.rx_truncated, st.rx_bad_length, st.rx_bad_checksum),
            (2, 1, 1)
        );
        assert_eq!((st.rx_packets, st.rx_delivered), (4, 0));
    }

    #[test]
    fn other_destinations_are_not_for_us() {
        let mut ip = layer();
        for dst in [
            Ipv4Addr::new(198, 19, 0, 3),
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(224, 0, 0, 1),
        ] {
            let p = packet_with(|r| r.dst = dst, b"12345678");
            assert_eq!(feed(&mut ip, T0, &p).0, "none");
        }
        assert_eq!(ip.stats().rx_not_for_us, 3);
    }

    #[test]
    fn martian_sources_are_bad_source() {
        let mut ip = layer();
        let srcs = [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(239, 1, 2, 3),
            Ipv4Addr::LOCALHOST,
            US,
        ];
        for src in srcs {
            let p = packet_with(|r| r.src = src, b"12345678");
            assert_eq!(feed(&mut ip, T0, &p).0, "none");
        }
        assert_eq!(ip.stats().rx_bad_source, srcs.len() as u64);
    }

    #[test]
    fn tcp_and_udp_are_delivered_with_raw_and_payload() {
        let mut ip = layer();
        let mut p = udp_packet(b"hello");
        p.extend_from_slice(&[0xee; 6]); // link padding beyond total length
        let mut out = [0u8; 1500];
        let IpInput::Deliver(d) = ip.receive(T0, &p, &mut out) else {
            panic!("not delivered");
        };
        assert_eq!(
            (d.src, d.dst, d.protocol, d.ttl),
            (PEER, US, ipv4::PROTO_UDP, 64)
        );
        assert_eq!(d.raw, &p[..p.len() - 6]);
        assert_eq!(d.payload, &p[20..p.len() - 6]);
        let p = packet_with(|r| r.protocol = ipv4::PROTO_TCP, &[0u8; 20]);
        assert_eq!(feed(&mut ip, T0, &p).0, "deliver");
        assert_eq!(ip.stats().rx_delivered, 2);
    }

    #[test]
    fn ttl_zero_to_us_is_still_delivered() {
        let mut ip = layer();
        let p = packet_with(|r| r.ttl = 0, b"12345678");
        assert_eq!(feed(&mut ip, T0, &p).0, "deliver");
    }

    #[test]
    fn echo_request_gets_echo_reply() {
        let mut ip = layer();
        let p = icmp_packet(IcmpRepr::EchoRequest {
            ident: 0x4242,
            seq: 3,
            data: b"abcdefgh",
        });
        let (what, reply) = feed(&mut ip, T0, &p);
        assert_eq!(what, "reply");
        let r = Ipv4Repr::parse(&reply).unwrap();
        assert_eq!(
            (r.src, r.dst, r.protocol, r.ident),
            (US, PEER, ipv4::PROTO_ICMP, 100)
        );
        assert_eq!(
            IcmpRepr::parse(&reply[20..]),
            Ok(IcmpRepr::EchoReply {
                ident: 0x4242,
                seq: 3,
                data: b"abcdefgh"
            })
        );
        let st = ip.stats();
        assert_eq!((st.icmp_rx, st.icmp_echo_replies, st.tx_packets), (1, 1, 1));
    }

    #[test]
    fn malformed_icmp_is_counted() {
        let mut ip = layer();
        let mut p = icmp_packet(IcmpRepr::EchoRequest {
            ident: 1,
            seq: 1,
            data: b"abcd",
        });
        p[25] ^= 0x40; // inside the ICMP message: checksum fails
        assert_eq!(feed(&mut ip, T0, &p).0, "none");
        let short = packet_with(|r| r.protocol = ipv4::PROTO_ICMP, &[8, 0, 0]);
        assert_eq!(feed(&mut ip, T0, &short).0, "none");
        assert_eq!(ip.stats().icmp_rx_malformed, 2);
    }

    /// The start of a UDP packet we sent to PEER, as quoted by an ICMP error.
    fn our_packet() -> Vec<u8> {
        packet_with(
            |r| {
                r.src = US;
                r.dst = PEER;
            },
            &[0x9c, 0x40, 0, 53, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
        )
    }

    #[test]
    fn dest_unreachable_and_time_exceeded_surface_as_icmp_errors() {
        let mut ip = layer();
        let orig = our_packet();
        let p = icmp_packet(IcmpRepr::DestUnreachable {
            code: icmp::CODE_PORT_UNREACHABLE,
            next_hop_mtu: 0,
            original: &orig[..28],
        });
        let mut out = [0u8; 1500];
        match ip.receive(T0, &p, &mut out) {
            IpInput::IcmpError {
                code,
                icmp_type,
                quoted,
            } => {
                assert_eq!(
                    (icmp_type, code),
                    (icmp::TYPE_DEST_UNREACHABLE, icmp::CODE_PORT_UNREACHABLE)
                );
                assert_eq!(quoted, &orig[..28]);
            }
            other => panic!("{other:?}"),
        }
        // Time exceeded: type 11 with the same quoting rule.
        let mut m = vec![icmp::TYPE_TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&orig[..28]);
        let c = crate::wire::checksum::finish(crate::wire::checksum::sum(0, &m));
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let p = packet_with(|r| r.protocol = ipv4::PROTO_ICMP, &m);
        match ip.receive(T0, &p, &mut out) {
            IpInput::IcmpError {
                icmp_type, quoted, ..
            } => {
                assert_eq!((icmp_type, quoted), (icmp::TYPE_TIME_EXCEEDED, &orig[..28]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ip.stats().icmp_unreachable_rx, 2);
    }

    #[test]
    fn icmp_error_with_short_or_foreign_quote_is_malformed() {
        let mut ip = layer();
        let orig = our_packet();
        let short = icmp_packet(IcmpRepr::DestUnreachable {
            code: 3,
            next_hop_mtu: 0,
            original: &orig[..27],
        });
        assert_eq!(feed(&mut ip, T0, &short).0, "none");
        let foreign = packet_with(|r| r.src = Ipv4Addr::new(10, 1, 1, 1), &orig[20..28]);
        let p = icmp_packet(IcmpRepr::DestUnreachable {
            code: 3,
            next_hop_mtu: 0,
            original: &foreign,
        });
        assert_eq!(feed(&mut ip, T0, &p).0, "none");
        assert_eq!(
            (ip.stats().icmp_rx_malformed, ip.stats().icmp_unreachable_rx),
            (2, 0)
        );
    }

    #[test]
    fn unknown_protocol_gets_protocol_unreachable() {
        let mut ip = layer();
        let p = packet_with(|r| r.protocol = 132, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let (what, reply) = feed(&mut ip, T0, &p);
        assert_eq!(what, "reply");
        assert_eq!(ip.stats().rx_unknown_protocol, 1);
        let r = Ipv4Repr::parse(&reply).unwrap();
        assert_eq!((r.dst, r.protocol), (PEER, ipv4::PROTO_ICMP));
        assert_eq!(
            IcmpRepr::parse(&reply[20..]),
            Ok(IcmpRepr::DestUnreachable {
                code: icmp::CODE_PROTOCOL_UNREACHABLE,
                next_hop_mtu: 0,
                original: &p
            })
        );
    }

    #[test]
    fn emit_header_increments_ident() {
        let mut ip = layer();
        let mut buf = [0u8; 20];
        for i in 0..3u16 {
            assert_eq!(ip.emit_header(PEER, ipv4::PROTO_TCP, 100, &mut buf), 20);
            let r = Ipv4Repr::parse(&[&buf[..], &[0u8; 100]].concat()).unwrap();
            assert_eq!(
                (r.ident, r.src, r.dst, r.ttl, r.payload_len),
                (100 + i, US, PEER, 64, 100)
            );
        }
        assert_eq!(ip.stats().tx_packets, 3);
    }

    fn dgram_of(p: &[u8]) -> IpDatagram<'_> {
        let r = Ipv4Repr::parse(p).unwrap();
        IpDatagram {
            src: r.src,
            dst: r.dst,
            protocol: r.protocol,
            ttl: r.ttl,
            raw: p,
            payload: &p[r.header_len..],
        }
    }

    #[test]
    fn port_unreachable_quotes_the_original() {
        let mut ip = layer();
        let p = udp_packet(b"a short datagram");
        let mut out = [0u8; 1500];
        let n = ip
            .emit_unreachable(icmp::CODE_PORT_UNREACHABLE, &dgram_of(&p), &mut out)
            .unwrap();
        let r = Ipv4Repr::parse(&out[..n]).unwrap();
        assert_eq!((r.src, r.dst, r.protocol), (US, PEER, ipv4::PROTO_ICMP));
        match IcmpRepr::parse(&out[20..n]).unwrap() {
            IcmpRepr::DestUnreachable { code, original, .. } => {
                assert_eq!(code, icmp::CODE_PORT_UNREACHABLE);
                assert_eq!(original, &p[..], "a small datagram is quoted whole");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ip.stats().icmp_unreachable_tx, 1);
    }

    #[test]
    fn unreachable_is_at_most_576_bytes() {
        let mut ip = layer();
        let p = udp_packet(&[0x55; 1400]);
        let mut out = [0u8; 1500];
        let n = ip
            .emit_unreachable(icmp::CODE_PORT_UNREACHABLE, &dgram_of(&p), &mut out)
            .unwrap();
        assert_eq!(n, 576);
        assert_eq!(&out[28..n], &p[..n - 28]);
    }

    #[test]
    fn no_unreachable_for_icmp_errors_but_for_queries() {
        let mut ip = layer();
        let mut out = [0u8; 1500];
        let orig = our_packet();
        let err = icmp_packet(IcmpRepr::DestUnreachable {
            code: 3,
            next_hop_mtu: 0,
            original: &orig,
        });
        assert_eq!(ip.emit_unreachable(3, &dgram_of(&err), &mut out), None);
        let echo = icmp_packet(IcmpRepr::EchoRequest {
            ident: 1,
            seq: 1,
            data: b"",
        });
        assert!(ip.emit_unreachable(3, &dgram_of(&echo), &mut out).is_some());
    }

    #[test]
    fn no_unreachable_to_broadcast_or_multicast() {
        let mut ip = layer();
        let mut out = [0u8; 1500];
        for dst in [Ipv4Addr::BROADCAST, Ipv4Addr::new(224, 0, 0, 251)] {
            let p = packet_with(|r| r.dst = dst, &[0u8; 8]);
            assert_eq!(ip.emit_unreachable(3, &dgram_of(&p), &mut out), None);
        }
        let p = packet_with(|r| r.src = Ipv4Addr::BROADCAST, &[0u8; 8]);
        assert_eq!(ip.emit_unreachable(3, &dgram_of(&p), &mut out), None);
        assert_eq!(ip.stats().icmp_unreachable_tx, 0);
    }

    #[test]
    fn no_unreachable_for_non_first_fragments() {
        let mut ip = layer();
        let mut out = [0u8; 1500];
        let later = packet_with(|r| r.frag_offset = 8, &[0u8; 8]);
        assert_eq!(ip.emit_unreachable(3, &dgram_of(&later), &mut out), None);
        let first = packet_with(|r| r.more_fragments = true, &[0u8; 8]);
        assert!(ip
            .emit_unreachable(3, &dgram_of(&first), &mut out)
            .is_some());
    }

    #[test]
    fn icmp_errors_are_rate_limited() {
        let mut ip = layer();
        let mut out = [0u8; 1500];
        let p = udp_packet(b"x");
        let d = dgram_of(&p);
        let sent = (0..100)
            .filter(|_| ip.emit_unreachable(3, &d, &mut out).is_some())
            .count();
        assert_eq!(sent, 50, "burst");
        assert_eq!(ip.stats().icmp_rate_limited, 50);
        // Time moves on through receive (the layer's only clock): 3 ms buys 3 more.
        feed(&mut ip, Instant::from_micros(3_000), &udp_packet(b"y"));
        let sent = (0..10)
            .filter(|_| ip.emit_unreachable(3, &d, &mut out).is_some())
            .count();
        assert_eq!(sent, 3);
        // Echo replies are not errors and are not limited.
        let echo = icmp_packet(IcmpRepr::EchoRequest {
            ident: 1,
            seq: 1,
            data: b"",
        });
        assert_eq!(feed(&mut ip, Instant::from_micros(3_000), &echo).0, "reply");
    }

    /// Fragments of a UDP datagram carrying `payload`, `size` payload bytes each.
    fn fragments(ident: u16, payload: &[u8], size: usize) -> Vec<Vec<u8>> {
        let u = UdpRepr {
            src_port: 1,
            dst_port: 7,
            payload,
        };
        let mut seg = vec![0u8; u.buffer_len()];
        u.emit(PEER, US, &mut seg);
        let n = seg.len().div_ceil(size);
        (0..n)
            .map(|i| {
                let chunk = &seg[i * size..((i + 1) * size).min(seg.len())];
                packet_with(
                    |r| {
                        r.ident = ident;
                        r.frag_offset = i * size;
                        r.more_fragments = i + 1 < n;
                    },
                    chunk,
                )
            })
            .collect()
    }

    #[test]
    fn fragments_are_reassembled_and_delivered() {
        let mut ip = layer();
        let payload: Vec<u8> = (0..3000).map(|i| i as u8).collect();
        let frags = fragments(9, &payload, 1480);
        let mut out = [0u8; 1500];
        for f in frags[1..].iter().rev() {
            assert!(matches!(ip.receive(T0, f, &mut out), IpInput::None));
        }
        let IpInput::Deliver(d) = ip.receive(T0, &frags[0], &mut out) else {
            panic!("not delivered");
        };
        let u = UdpRepr::parse(d.src, d.dst, d.payload).unwrap();
        assert_eq!(u.payload, &payload[..]);
        assert_eq!(d.raw.len(), 20 + 8 + 3000);
        let st = ip.stats();
        assert_eq!(
            (st.rx_fragments, st.rx_reassembled, st.rx_delivered),
            (3, 1, 1)
        );
    }

    #[test]
    fn refused_fragments_are_counted() {
        let mut ip = layer();
        let bad = packet_with(|r| r.more_fragments = true, &[0u8; 12]);
        assert_eq!(feed(&mut ip, T0, &bad).0, "none");
        assert_eq!(ip.stats().rx_frag_dropped, 1);
    }

    #[test]
    fn reassembly_timeout_is_counted_and_scheduled() {
        let mut ip = layer();
        let frags = fragments(10, &[1u8; 100], 64);
        feed(&mut ip, Instant::from_secs(1), &frags[0]);
        assert_eq!(ip.poll_at(), Some(Instant::from_secs(31)));
        ip.expire(Instant::from_secs(30));
        assert_eq!(ip.stats().rx_frag_timeouts, 0);
        ip.expire(Instant::from_secs(31));
        assert_eq!((ip.stats().rx_frag_timeouts, ip.poll_at()), (1, None));
        // The late second half alone does not complete anything.
        assert_eq!(feed(&mut ip, Instant::from_secs(31), &frags[1]).0, "none");
    }

    #[test]
    fn oversized_reassembled_echo_is_ignored_not_panicking() {
        let mut ip = layer();
        let big = [7u8; 3000];
        let msg = IcmpRepr::EchoRequest {
            ident: 1,
            seq: 1,
            data: &big,
        };
        let mut m = vec![0u8; msg.buffer_len()];
        msg.emit(&mut m);
        let a = packet_with(
            |r| {
                r.protocol = ipv4::PROTO_ICMP;
                r.more_fragments = true;
            },
            &m[..1600],
        );
        let b = packet_with(
            |r| {
                r.protocol = ipv4::PROTO_ICMP;
                r.frag_offset = 1600;
            },
            &m[1600..],
        );
        feed(&mut ip, T0, &a);
        assert_eq!(feed(&mut ip, T0, &b).0, "none");
        assert_eq!(ip.stats().rx_reassembled, 1);
    }

    #[test]
    fn random_headers_never_panic() {
        let mut rng = crate::rng::Rng::new(0x1f);
        let mut ip = layer();
        let base = udp_packet(b"0123456789");
        let mut out = [0u8; 1500];
        for i in 0..100_000u64 {
            let mut p = base.clone();
            let at = rng.gen_range(0, 20) as usize;
            p[at] = rng.next_u32() as u8;
            if rng.gen_bool(0.5) && p[0] & 0x0f == 5 {
                fix_checksum(&mut p);
            }
            let len = rng.gen_range(0, p.len() as u64 + 1) as usize;
            let _ = ip.receive(Instant::from_micros(i), &p[..len], &mut out);
        }
        assert_eq!(ip.stats().rx_packets, 100_000);
    }

    #[test]
    fn rfc791_outgoing_fragmentation_reassembles_to_the_original() {
        let mut ip = layer();
        let payload: Vec<u8> = (0..4008u32).map(|i| (i * 7) as u8).collect();
        let mut pkt = vec![0u8; 20 + payload.len()];
        ip.emit_header(PEER, ipv4::PROTO_UDP, payload.len(), &mut pkt[..20]);
        pkt[20..].copy_from_slice(&payload);
        let mut frags: Vec<Vec<u8>> = Vec::new();
        let n = fragment(&pkt, 1500, |f| frags.push(f.to_vec()));
        assert_eq!(n, 3);
        let mut got = vec![0u8; payload.len()];
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 1500);
            let r = Ipv4Repr::parse(f).unwrap();
            assert!(!r.dont_fragment);
            assert_eq!(r.more_fragments, i < 2);
            assert_eq!(r.frag_offset % 8, 0);
            got[r.frag_offset..r.frag_offset + r.payload_len].copy_from_slice(&f[20..]);
        }
        assert_eq!(got, payload);
        // A packet that fits passes unchanged.
        let mut one = Vec::new();
        let small = &frags[2];
        assert_eq!(fragment(small, 1500, |f| one = f.to_vec()), 1);
        assert_eq!(&one, small);
    }
}
