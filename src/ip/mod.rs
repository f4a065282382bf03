//! The network layer: IPv4 input validation, fragment reassembly, ICMP echo
//! and unreachable generation, and a counter for every drop reason.
//!
//! Sans-IO: `receive` takes a packet and the time, and returns what the
//! transport layer should see (or a reply to send, or nothing).

pub mod frag;

use crate::time::{Duration, Instant};
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
    pub icmp_unreachable_rx: u64,
    pub icmp_unreachable_tx: u64,
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

#[derive(Debug)]
pub struct Ipv4Layer {
    config: Ipv4Config,
    stats: IpStats,
    ident: u16,
    reasm: frag::Reassembler,
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
    pub fn receive<'a>(
        &'a mut self,
        now: Instant,
        packet: &'a [u8],
        out: &mut [u8],
    ) -> IpInput<'a> {
        let _ = (now, packet, out);
        todo!("Ipv4Layer::receive")
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
        let _ = (dst, protocol, payload_len, buf);
        todo!()
    }

    /// Write a complete ICMP destination-unreachable packet (`code`, e.g.
    /// port unreachable) about `dgram` into `out`; returns its length.
    /// Never answers a datagram that is itself an ICMP error, or one sent to
    /// a broadcast/multicast address (RFC 1122 §3.2.2).
    pub fn emit_unreachable(
        &mut self,
        code: u8,
        dgram: &IpDatagram,
        out: &mut [u8],
    ) -> Option<usize> {
        let _ = (code, dgram, out);
        todo!()
    }

    /// Drop reassembly state older than the timeout (counted).
    pub fn expire(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    /// Earliest reassembly timeout, if any datagram is incomplete.
    pub fn poll_at(&self) -> Option<Instant> {
        todo!()
    }
}
