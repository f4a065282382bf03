//! Simulator tests of loss recovery and of the defences in the TCP
//! connection: SACK recovery (RFC 6675) repairing several holes in one
//! round trip, PAWS (RFC 7323) dropping an old duplicate, and RFC 5961
//! against a blind attacker injecting RST, SYN and data.
//!
//! Each test shapes traffic with a [`Sim::set_filter`] hook (targeted drops,
//! packet capture) and injects forged packets with [`Sim::raw_send`]. A
//! failing run prints `TUNSTACK_SEED=<n>`; replay with
//! `TUNSTACK_SEED=<n> cargo test --test sim_sack -- <name> --exact`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use tunstack::rng::Rng;
use tunstack::sim::{for_each_seed, LinkConfig, NodeId, Sim};
use tunstack::stack::SocketHandle;
use tunstack::tcp::{SeqNum, State, TcpError, TcpStats};
use tunstack::time::{Duration, Instant};
use tunstack::wire::ipv4::Ipv4Repr;
use tunstack::wire::tcp::TcpRepr;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PORT: u16 = 5001;
/// One-way latency of the links: RTT is 20 ms.
const ONE_WAY: Duration = Duration::from_millis(10);

fn link() -> LinkConfig {
    LinkConfig::new(ONE_WAY, 100_000_000)
}

/// A parsed TCP packet (owned).
#[derive(Clone, Debug)]
struct Pkt {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: SeqNum,
    ack: Option<SeqNum>,
    syn: bool,
    rst: bool,
    ts: Option<(u32, u32)>,
    len: usize,
}

fn parse(packet: &[u8]) -> Option<Pkt> {
    let ip = Ipv4Repr::parse(packet).ok()?;
    let seg = &packet[ip.header_len..ip.header_len + ip.payload_len];
    let t = TcpRepr::parse(ip.src, ip.dst, seg, false).ok()?;
    Some(Pkt {
        src: SocketAddrV4::new(ip.src, t.src_port),
        dst: SocketAddrV4::new(ip.dst, t.dst_port),
        seq: t.seq,
        ack: t.ack,
        syn: t.syn,
        rst: t.rst,
        ts: t.options.timestamps,
        len: t.payload.len(),
    })
}

/// An IPv4 packet carrying `t` from `src` to `dst`.
fn build(src: Ipv4Addr, dst: Ipv4Addr, t: &TcpRepr) -> Vec<u8> {
    let mut buf = vec![0u8; 20 + t.buffer_len()];
    let n = t.emit(src, dst, &mut buf[20..]);
    Ipv4Repr {
        src,
        dst,
        protocol: 6,
        ttl: 64,
        ident: 0,
        dont_fragment: true,
        more_fragments: false,
        frag_offset: 0,
        header_len: 20,
        payload_len: n,
    }
    .emit(&mut buf[..20]);
    buf.truncate(20 + n);
    buf
}

/// A client → server bulk transfer driven between steps; every byte hashed.
struct Bulk {
    client: NodeId,
    server: NodeId,
    listener: SocketHandle,
    conn: SocketHandle,
    accepted: Option<SocketHandle>,
    rng: Rng,
    tx_hash: siphasher::sip::SipHasher13,
    rx_hash: siphasher::sip::SipHasher13,
    chunk: Vec<u8>,
    pos: usize,
    /// Bytes the application may hand to the socket so far (`total` at most).
    allowed: u64,
    sent: u64,
    total: u64,
    received: u64,
    eof: bool,
    shut: bool,
    buf: Vec<u8>,
}

impl Bulk {
    fn start(sim: &mut Sim, seed: u64, total: u64) -> Bulk {
        let client = sim.add_host(CLIENT);
        let server = sim.add_host(SERVER);
        sim.link(client, server, link());
        let listener = sim.stack_mut(server).tcp_listen(PORT, 8).expect("listen");
        let now = sim.now();
        let conn = sim
            .stack_mut(client)
            .tcp_connect(now, SocketAddrV4::new(SERVER, PORT))
            .expect("connect");
        Bulk {
            client,
            server,
            listener,
            conn,
            accepted: None,
            rng: Rng::new(seed ^ 0xb01c),
            tx_hash: siphasher::sip::SipHasher13::new(),
            rx_hash: siphasher::sip::SipHasher13::new(),
            chunk: Vec::new(),
            pos: 0,
            allowed: total,
            sent: 0,
            total,
            received: 0,
            eof: false,
            shut: false,
            buf: vec![0; 64 * 1024],
        }
    }

    /// The applications' turn; true once the server read end of stream.
    fn pump(&mut self, sim: &mut Sim) -> bool {
        let stack = sim.stack_mut(self.client);
        while self.sent < self.allowed {
            if self.pos == self.chunk.len() {
                let n = (self.allowed - self.sent).min(16 * 1024) as usize;
                self.chunk.resize(n, 0);
                self.rng.fill(&mut self.chunk);
                self.tx_hash.write(&self.chunk);
                self.pos = 0;
            }
            match stack.tcp_send(self.conn, &self.chunk[self.pos..]) {
                Ok(0) | Err(TcpError::WouldBlock) | Err(TcpError::NotConnected) => break,
                Ok(n) => {
                    self.pos += n;
                    self.sent += n as u64;
                }
                Err(e) => panic!("client send: {e}"),
            }
        }
        if self.sent == self.total && self.pos == self.chunk.len() && !self.shut {
            let _ = stack.tcp_shutdown(self.conn);
            self.shut = true;
        }
        let stack = sim.stack_mut(self.server);
        if self.accepted.is_none() {
            match stack.tcp_accept(self.listener) {
                Ok(h) => self.accepted = Some(h),
                Err(TcpError::WouldBlock) => return false,
                Err(e) => panic!("accept: {e}"),
            }
        }
        let h = self.accepted.unwrap();
        while !self.eof {
            match stack.tcp_recv(h, &mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.rx_hash.write(&self.buf[..n]);
                    self.received += n as u64;
                    assert!(self.received <= self.total, "more bytes than were sent");
                }
                Err(TcpError::WouldBlock) => break,
                Err(e) => panic!("server recv after {} bytes: {e}", self.received),
            }
        }
        self.eof
    }

    fn check_bytes(&self) {
        assert_eq!(self.received, self.total, "byte count");
        assert_eq!(
            self.rx_hash.finish(),
            self.tx_hash.finish(),
            "received bytes differ from the bytes sent"
        );
    }

    fn client_stats(&self, sim: &Sim) -> TcpStats {
        sim.stack(self.client)
            .tcp_stats(self.conn)
            .unwrap_or_default()
    }

    fn server_stats(&self, sim: &Sim) -> TcpStats {
        self.accepted
            .and_then(|h| sim.stack(self.server).tcp_stats(h))
            .unwrap_or_default()
    }
}

/// Issue 6: "SACK recovery repairs several holes in one round trip".
/// Three separate segments of one window are dropped (first transmission
/// only); all three retransmissions go out within one RTT of each other,
/// and no retransmission timeout fires.
#[test]
fn sack_recovery_repairs_several_holes_in_one_round_trip() {
    for_each_seed(
        "sack_recovery_repairs_several_holes_in_one_round_trip",
        |seed| {
            let mut sim = Sim::new(seed);
            let mut b = Bulk::start(&mut sim, seed, 2 << 20);
            // Client ISN from its SYN; then the first sending of segments
            // 150, 154 and 158 (by MSS offset) is dropped, and every sending
            // of those sequence numbers is timed.
            #[derive(Default)]
            struct Seen {
                isn: Option<SeqNum>,
                mss: usize,
                /// seq → times it was sent (first one dropped).
                sends: BTreeMap<u32, Vec<Instant>>,
            }
            let seen = Rc::new(RefCell::new(Seen::default()));
            let s2 = seen.clone();
            let client = b.client;
            sim.set_filter(Some(Box::new(move |now, from, _to, packet| {
                let Some(p) = parse(packet) else { return false };
                let mut s = s2.borrow_mut();
                if from != client {
                    return false;
                }
                if p.syn {
                    s.isn = Some(p.seq);
                    return false;
                }
                let Some(isn) = s.isn else { return false };
                if p.len == 0 {
                    return false;
                }
                if s.mss == 0 {
                    s.mss = p.len;
                }
                let mss = s.mss;
                let k = (p.seq - (isn + 1)) / mss;
                let aligned = (p.seq - (isn + 1)) % mss == 0;
                if aligned && [150, 154, 158].contains(&k) {
                    let v = s.sends.entry(k as u32).or_default();
                    v.push(now);
                    return v.len() == 1;
                }
                false
            })));
            let done = sim.run_until_cond(|sim| b.pump(sim), Instant::from_secs(30));
            assert!(done, "transfer did not finish: {:?}", b.client_stats(&sim));
            b.check_bytes();
            let st = b.client_stats(&sim);
            let seen = seen.borrow();
            assert_eq!(
                seen.sends.len(),
                3,
                "all three segments were sent: {:?}",
                seen.sends
            );
            let mut rtx = Vec::new();
            for (k, v) in &seen.sends {
                assert!(v.len() >= 2, "segment {k} never retransmitted");
                rtx.push(v[1]);
            }
            let first = *rtx.iter().min().unwrap();
            let last = *rtx.iter().max().unwrap();
            let rtt = ONE_WAY * 2;
            assert!(
                last - first < rtt,
                "holes repaired {:?} apart (RTT {rtt:?}); sends {:?}",
                last - first,
                seen.sends
            );
            assert!(
                rtx.iter()
                    .zip(seen.sends.values())
                    .all(|(r, v)| *r - v[0] < rtt * 3),
                "each retransmission within ~1 RTT of its loss being reported: {:?}",
                seen.sends
            );
            assert_eq!(st.rto_expirations, 0, "no RTO: {st:?}");
            assert_eq!(st.recoveries, 1, "one recovery episode: {st:?}");
        },
    );
}

/// Issue 6: "PAWS drops an old duplicate". An early data segment is
/// captured; once the receiver has everything sent so far, the capture
/// comes back with its old timestamp, sequence number moved to RCV.NXT
/// (as an old duplicate from a wrapped sequence space would have) and
/// other bytes. PAWS drops it; the stream stays intact.
#[test]
fn paws_drops_an_old_duplicate() {
    for_each_seed("paws_drops_an_old_duplicate", |seed| {
        let mut sim = Sim::new(seed);
        let half = 256 * 1024;
        let mut b = Bulk::start(&mut sim, seed, 2 * half as u64);
        b.allowed = half as u64;
        let captured: Rc<RefCell<Option<Vec<u8>>>> = Rc::new(RefCell::new(None));
        let c2 = captured.clone();
        let client = b.client;
        sim.set_filter(Some(Box::new(move |_, from, _, packet| {
            if from == client && c2.borrow().is_none() {
                if let Some(p) = parse(packet) {
                    if p.len > 0 && p.ts.is_some() {
                        *c2.borrow_mut() = Some(packet.to_vec());
                    }
                }
            }
            false
        })));
        // First half, delivered and acknowledged.
        let ok = sim.run_until_cond(
            |sim| {
                b.pump(sim);
                b.received == half as u64 && b.client_stats(sim).bytes_acked == half as u64
            },
            Instant::from_secs(30),
        );
        assert!(ok, "first half not delivered");
        sim.run_for(Duration::from_secs(2));
        // Replay: old TSval, sequence number RCV.NXT, garbage bytes.
        let old = captured
            .borrow()
            .clone()
            .expect("a data segment was captured");
        let ip = Ipv4Repr::parse(&old).unwrap();
        let seg = &old[ip.header_len..ip.header_len + ip.payload_len];
        let t = TcpRepr::parse(ip.src, ip.dst, seg, false).unwrap();
        let garbage = vec![0xa5u8; t.payload.len()];
        // The capture was the first data segment, at ISS+1: RCV.NXT is ISS+1+half.
        let forged = TcpRepr {
            seq: t.seq + half,
            payload: &garbage,
            ..t
        };
        assert!(t.options.timestamps.is_some());
        let pkt = build(ip.src, ip.dst, &forged);
        sim.raw_send(b.client, &pkt);
        sim.run_for(Duration::from_millis(100));
        let st = b.server_stats(&sim);
        assert_eq!(st.paws_rejected, 1, "server dropped it by PAWS: {st:?}");
        assert_eq!(st.bytes_received, half as u64, "no byte accepted");
        // Second half; the stream must be the one the client wrote.
        b.allowed = 2 * half as u64;
        let done = sim.run_until_cond(|sim| b.pump(sim), Instant::from_secs(60));
        assert!(done, "transfer did not finish");
        b.check_bytes();
    });
}

/// Issue 7 / RFC 5961: a blind attacker who knows the 4-tuple (and even
/// roughly where the windows are) injects RSTs, SYNs and data with random
/// in-window and out-of-window sequence numbers and random ACK numbers,
/// towards both ends, throughout a transfer over a lossy link. The
/// connection survives and its bytes are unchanged; challenge ACKs stay
/// within the per-connection limit.
#[test]
fn rfc5961_blind_rst_syn_and_data_do_not_break_the_connection() {
    for_each_seed("rfc5961_blind_rst_syn_and_data", |seed| {
        let mut sim = Sim::new(seed);
        let mut b = Bulk::start(&mut sim, seed, 1 << 20);
        // 10 Mbit/s: the transfer lasts about a second of attacks.
        let slow = LinkConfig::new(ONE_WAY, 10_000_000);
        sim.set_link_config(b.client, b.server, slow.loss(0.01));
        sim.set_link_config(b.server, b.client, slow);
        // Track where each side's receive window is (what an on-path
        // observer would know; the blind attacker only gets it ± 64 KB).
        #[derive(Default, Clone, Copy)]
        struct Win {
            to_server: Option<(SocketAddrV4, SocketAddrV4, SeqNum)>,
            to_client: Option<(SocketAddrV4, SocketAddrV4, SeqNum)>,
        }
        let win = Rc::new(RefCell::new(Win::default()));
        let w2 = win.clone();
        let client = b.client;
        sim.set_filter(Some(Box::new(move |_, from, _, packet| {
            if let Some(p) = parse(packet) {
                if p.rst || p.syn {
                    return false;
                }
                let mut w = w2.borrow_mut();
                // A segment from X acknowledges up to RCV.NXT of X: what
                // the attacker aims at when it spoofs the other side to X.
                if let Some(ack) = p.ack {
                    if from == client {
                        w.to_client = Some((p.dst, p.src, ack));
                    } else {
                        w.to_server = Some((p.dst, p.src, ack));
                    }
                }
            }
            false
        })));
        let mut rng = Rng::new(seed ^ 0xa77ac);
        let mut next_attack = Instant::from_millis(50);
        let mut injected = 0u32;
        let done = sim.run_until_cond(
            |sim| {
                let done = b.pump(sim);
                if sim.now() >= next_attack && !done {
                    next_attack = sim.now() + Duration::from_millis(5);
                    let w = *win.borrow();
                    for target in [w.to_server, w.to_client].into_iter().flatten() {
                        let (spoofed_src, dst, rcv_nxt) = target;
                        let seq = match rng.gen_range(0, 3) {
                            // In window, never exactly RCV.NXT.
                            0 => rcv_nxt + (1 + rng.gen_range(0, 60_000) as usize),
                            // Just below RCV.NXT (old data) or far out.
                            1 => rcv_nxt - (1 + rng.gen_range(0, 60_000) as usize),
                            _ => SeqNum(rng.next_u32()),
                        };
                        let kind = rng.gen_range(0, 3);
                        let payload = [0x5au8; 100];
                        let t = TcpRepr {
                            src_port: spoofed_src.port(),
                            dst_port: dst.port(),
                            seq,
                            ack: (kind != 1).then(|| SeqNum(rng.next_u32())),
                            rst: kind == 0,
                            syn: kind == 1,
                            window: 65535,
                            options: tunstack::wire::tcp::TcpOptions {
                                timestamps: rng.gen_range(0, 2).eq(&0).then(|| (rng.next_u32(), 0)),
                                ..Default::default()
                            },
                            payload: if kind == 2 { &payload } else { &[] },
                            ..TcpRepr::default()
                        };
                        let pkt = build(*spoofed_src.ip(), *dst.ip(), &t);
                        let from = if *spoofed_src.ip() == CLIENT {
                            b.client
                        } else {
                            b.server
                        };
                        sim.raw_send(from, &pkt);
                        injected += 1;
                    }
                }
                done
            },
            Instant::from_secs(60),
        );
        let cs = b.client_stats(&sim);
        let ss = b.server_stats(&sim);
        assert!(done, "transfer did not finish: client {cs:?} server {ss:?}");
        b.check_bytes();
        assert!(injected > 100, "only {injected} forged packets");
        assert_ne!(
            cs.state,
            Some(State::Closed),
            "client was not reset: {cs:?}"
        );
        assert!(
            cs.challenge_acks + ss.challenge_acks > 0,
            "challenge ACKs were sent: {cs:?} {ss:?}"
        );
        let secs = sim.now().total_millis() / 1000 + 1;
        for st in [&cs, &ss] {
            assert!(
                st.challenge_acks <= 10 * secs,
                "challenge ACKs rate-limited: {st:?}"
            );
        }
    });
}
