//! The stack: the socket table, 4-tuple demux, and [`Stack::poll`].
//!
//! `poll(now, device)` drains received packets from the device, hands each to
//! the IPv4 layer and then to the matching socket, runs every socket's
//! timers, transmits what the sockets want to send, and returns the next
//! instant it wants to be polled again. Like raft-rs's `Ready`, it is inputs
//! in, a batch of outputs and a deadline out; nothing here blocks or reads a
//! clock.
//!
//! Sockets are addressed by [`SocketHandle`]s (index + generation, so a stale
//! handle never reaches a recycled slot). The application-facing methods
//! (`tcp_send`, `tcp_recv`, ...) only move bytes between the caller and the
//! socket buffers; the next `poll` puts them on the wire.

use crate::ip::{IpDatagram, IpInput, IpStats, Ipv4Config, Ipv4Layer};
use crate::lend::PacketBuf;
use crate::phy::Device;
use crate::rng::Rng;
use crate::tcp::conn::{reset_for, Tcb};
use crate::tcp::isn::IsnGenerator;
use crate::tcp::seq::SeqNum;
use crate::tcp::syncookie::{self, CookieData, SynCookies};
use crate::tcp::{State, TcpConfig, TcpError, TcpStats};
use crate::time::{Duration, Instant};
use crate::udp::UdpSocket;
use crate::wire::ipv4::{self, PROTO_TCP, PROTO_UDP};
use crate::wire::tcp::TcpRepr;
use crate::wire::udp::UdpRepr;
use crate::wire::WireError;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Configuration of one stack instance.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// The stack's IPv4 address.
    pub addr: Ipv4Addr,
    /// Largest IP packet the device carries; TCP's MSS is derived from it (MTU − 40).
    pub mtu: usize,
    /// Defaults for new TCP connections (`mss` is overridden from `mtu`).
    pub tcp: TcpConfig,
    pub ip: Ipv4Config,
    /// Bytes a UDP socket may queue before arriving datagrams are dropped.
    pub udp_rx_limit: usize,
    /// Ephemeral port range for active opens and `udp_bind(0)` (IANA: 49152–65535).
    pub ephemeral_ports: (u16, u16),
    /// Packets read from the device per `poll` before timers and transmit run.
    pub rx_batch: usize,
    /// Half-open (SYN-RECEIVED) connections a listener holds, at most, on
    /// top of its backlog bound (Linux tcp_max_syn_backlog). When the SYN
    /// queue is full, new SYNs get SYN cookies (or are dropped without them).
    pub syn_backlog: usize,
    /// Answer SYNs with SYN cookies when a listener's SYN queue is full
    /// (RFC 4987 §3.6; Linux tcp_syncookies = 1). See [`crate::tcp::syncookie`].
    pub syn_cookies: bool,
    /// Most TCP connections the stack holds at once (every state, TIME-WAIT
    /// included). Beyond it a SYN is refused with RST and `tcp_connect`
    /// fails; both are counted. Each connection's buffers
    /// (`tcp.send_buffer + tcp.recv_buffer`, out-of-order data included)
    /// bound its memory, so this also bounds the total.
    pub max_tcp_connections: usize,
    /// Abort (RST) a connection after this long without a segment from the
    /// peer or a read/write by the application; `None` (default) never.
    /// The application then sees `TimedOut`.
    pub tcp_idle_timeout: Option<Duration>,
    /// Largest TCP/IPv4 packet the device segments itself (TSO/GSO,
    /// `Device::capabilities`); at or below `mtu`, TCP sends MSS-sized segments.
    pub max_tso_segment: usize,
    /// The device completes TCP checksums ([`crate::phy::Capabilities::tx_checksum_partial`]):
    /// TCP segments go out with only the pseudo-header sum in the field.
    pub tx_checksum_partial: bool,
    /// Received packets at least this long, from a device that hands its
    /// buffers over (`Device::take_rx`), are offered to the receiving
    /// socket to keep ([`PacketBuf`]): an in-order payload is then read by
    /// the application from the packet, not copied into the socket's ring
    /// first. Smaller packets are copied (a shared buffer costs an
    /// allocation, more than a small copy saves). Default [`KEEP_MIN`].
    pub rx_keep_min: usize,
}

impl StackConfig {
    pub fn new(addr: Ipv4Addr) -> StackConfig {
        StackConfig {
            addr,
            mtu: 1500,
            // Offer SACK (RFC 2018; as a sender we recover with RFC 6675)
            // and timestamps (RFC 7323: RTT samples under loss, PAWS).
            tcp: TcpConfig {
                sack: true,
                timestamps: true,
                ..TcpConfig::default()
            },
            ip: Ipv4Config::new(addr),
            udp_rx_limit: 1024 * 1024,
            ephemeral_ports: (49152, 65535),
            rx_batch: 256,
            syn_backlog: 256,
            syn_cookies: true,
            max_tcp_connections: 65_536,
            tcp_idle_timeout: None,
            max_tso_segment: 0,
            tx_checksum_partial: false,
            rx_keep_min: KEEP_MIN,
        }
    }
}

/// Errors from socket-table operations (binding, connecting, handles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackError {
    /// The port is already bound by another socket of that kind.
    AddrInUse(u16),
    /// Every ephemeral port towards that peer is taken.
    NoEphemeralPorts,
    /// The handle does not name a live socket of the expected kind.
    InvalidHandle,
    /// The destination is not a unicast address the stack can reach.
    BadAddress(Ipv4Addr),
    /// A datagram larger than the device MTU allows (no IP fragmentation on send).
    MessageTooLarge(usize),
    /// `max_tcp_connections` connections are open already.
    TooManyConnections(usize),
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackError::AddrInUse(p) => write!(f, "port {p} is already in use on this stack"),
            StackError::NoEphemeralPorts => {
                f.write_str("no free ephemeral port for that destination")
            }
            StackError::InvalidHandle => {
                f.write_str("socket handle is closed or of the wrong kind")
            }
            StackError::BadAddress(a) => write!(f, "{a} is not a unicast destination"),
            StackError::MessageTooLarge(n) => write!(f, "datagram of {n} bytes exceeds the MTU"),
            StackError::TooManyConnections(n) => write!(
                f,
                "the stack already holds {n} TCP connections (max_tcp_connections); close some or raise the limit"
            ),
        }
    }
}

impl std::error::Error for StackError {}

impl From<StackError> for std::io::Error {
    fn from(e: StackError) -> std::io::Error {
        use std::io::ErrorKind as K;
        let kind = match e {
            StackError::AddrInUse(_) => K::AddrInUse,
            StackError::NoEphemeralPorts => K::AddrNotAvailable,
            StackError::InvalidHandle => K::NotConnected,
            StackError::BadAddress(_) => K::InvalidInput,
            StackError::MessageTooLarge(_) => K::InvalidInput,
            StackError::TooManyConnections(_) => K::OutOfMemory,
        };
        std::io::Error::new(kind, e)
    }
}

/// Names a socket in a [`Stack`]. Copyable; stale handles are detected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SocketHandle {
    index: u32,
    generation: u32,
}

impl SocketHandle {
    /// A number unique among live sockets (for maps keyed by socket).
    pub fn index(&self) -> usize {
        self.index as usize
    }
}

/// Stack-level counters (the IP layer's are inside).
#[derive(Clone, Debug, Default)]
pub struct StackStats {
    pub ip: IpStats,
    pub tcp_rx_segments: u64,
    pub tcp_rx_bad_checksum: u64,
    pub tcp_rx_malformed: u64,
    /// Segments for no connection or listener (answered with RST where RFC 9293 says so).
    pub tcp_rx_no_socket: u64,
    /// Of those, segments that carried data: a connection's own traffic
    /// (a cookie ACK's first flight gone wrong, say), not a stray ACK
    /// arriving after the connection ended.
    pub tcp_rx_no_socket_data: u64,
    pub tcp_rst_sent: u64,
    /// SYNs dropped because a listener's backlog was full.
    pub tcp_listen_overflows: u64,
    pub tcp_conns_opened: u64,
    pub tcp_conns_closed: u64,
    /// SYN-ACKs sent with a SYN cookie (the listener's SYN queue was full).
    pub tcp_syncookies_sent: u64,
    /// Connections created from an ACK carrying a valid cookie.
    pub tcp_syncookies_ok: u64,
    /// ACKs to a listener whose cookie did not validate (answered with RST).
    pub tcp_syncookies_failed: u64,
    /// Valid cookie ACKs dropped because the accept queue was full, their
    /// client remembered until `accept` makes room (see `DeferredCookie`).
    pub tcp_syncookies_deferred: u64,
    /// Valid cookie ACKs dropped with the accept queue full and no room to
    /// remember the client (`syn_backlog` deferred already).
    pub tcp_syncookies_deferred_dropped: u64,
    /// SYNs refused with RST (and connects failed) at `max_tcp_connections`.
    pub tcp_conn_limit_refused: u64,
    /// Connections aborted by `tcp_idle_timeout`.
    pub tcp_idle_timeouts: u64,
    pub udp_rx_datagrams: u64,
    pub udp_rx_bad_checksum: u64,
    pub udp_rx_malformed: u64,
    pub udp_rx_no_port: u64,
    pub udp_rx_queue_full: u64,
    pub udp_tx_datagrams: u64,
    pub icmp_errors_rx: u64,
    /// Packets the device refused (full queue); recovered by retransmission.
    pub tx_device_drops: u64,
    pub tx_device_errors: u64,
    pub rx_device_errors: u64,
    /// Received packets a socket kept, its application reading the payload
    /// from the packet rather than from a copy ([`StackConfig::rx_keep_min`]).
    pub rx_packets_kept: u64,
}

struct TcpSocket {
    tcb: Tcb,
    /// The listener this connection was accepted on, until it is accepted.
    listener: Option<SocketHandle>,
    /// The user closed its handle; reap when the TCB reaches CLOSED.
    orphaned: bool,
    /// State seen after the last process/transmit, to detect transitions.
    last_state: State,
    /// Last segment from the peer or application read/write (idle timeout).
    last_active: Instant,
    /// Set when the stack ended the connection for a limit (idle timeout):
    /// what the application is told instead of "not connected".
    limit_error: Option<TcpError>,
}

struct Listener {
    port: u16,
    backlog: usize,
    /// Connections in SYN-RECEIVED spawned by this listener.
    embryonic: usize,
    /// Established connections not yet accepted.
    ready: VecDeque<SocketHandle>,
    /// Cookie connections whose ACK validated while `ready` was full, oldest
    /// first (at most `StackConfig::syn_backlog`): see [`DeferredCookie`].
    deferred: VecDeque<DeferredCookie>,
}

/// A client that returned a valid SYN cookie while the listener's accept
/// queue was full. Its ACK was dropped (as Linux drops it), but the client
/// is ESTABLISHED and may already have sent the rest of its first flight,
/// whose SEQ is no longer ISN + 1, so those segments do not decode as a
/// cookie; without this record they would be answered with RST and the
/// connection lost. The record is what a SYN-queue entry would have held
/// (the peer's ISN, our ISS, the options), and it exists only for a client
/// that has proven its address by returning the cookie, so a spoofed flood
/// cannot fill it. When `accept` makes room the connection is created
/// from it; a later segment of that client finds it too.
#[derive(Clone, Copy, Debug)]
struct DeferredCookie {
    remote: SocketAddrV4,
    peer_isn: SeqNum,
    /// Our ISS (the cookie); the client's ACK is this + 1.
    cookie: SeqNum,
    data: CookieData,
    /// The window of the client's ACK.
    window: u16,
    at: Instant,
}

impl DeferredCookie {
    /// `seg` (ACK-bearing, from `remote`) belongs to this client's first
    /// flight: it acknowledges exactly the cookie (nothing else was ever
    /// sent) and its SEQ lies within what our SYN-ACK's window let it send.
    fn matches(&self, remote: SocketAddrV4, seg: &TcpRepr) -> bool {
        let first = self.peer_isn + 1;
        self.remote == remote
            && seg.ack == Some(self.cookie + 1)
            && seg.seq.in_range_inclusive(first, first + 65535)
    }
}

enum Socket {
    Tcp(Box<TcpSocket>),
    Listener(Listener),
    Udp(UdpSocket),
}

struct Slot {
    generation: u32,
    socket: Option<Socket>,
    /// Wants `poll_transmit` at the next poll (input arrived or the user
    /// acted); set exactly when the index is queued in `Stack::dirty`.
    dirty: bool,
    /// The deadline this socket is filed under in `Stack::timers` (an entry
    /// with another time, or for another generation, is stale).
    timer_at: Option<Instant>,
    /// Already queued in `events` since the last `drain_events`.
    evented: bool,
    /// Readiness bits ([`READABLE`], [`WRITABLE`]) gathered for it since then.
    ready: u8,
}

/// Event bit: the socket may have become readable (data, end of stream,
/// an error, a connection to accept, a datagram).
pub const READABLE: u8 = 1;
/// Event bit: the socket may have become writable (acknowledged data freed
/// send space, the connection was established or ended).
pub const WRITABLE: u8 = 2;

pub struct Stack {
    config: StackConfig,
    ip: Ipv4Layer,
    rng: Rng,
    isn: IsnGenerator,
    cookies: SynCookies,
    /// When the last SYN cookie was sent: cookies are checked only while
    /// one may still be outstanding (as Linux's tcp_synq_no_recent_overflow).
    last_cookie_at: Option<Instant>,
    /// Last time each kind of limit was logged (at most one line a second).
    limit_log: [Option<Instant>; LIMIT_KINDS],
    /// Limit hits not logged since the last line, per kind.
    limit_quiet: [u64; LIMIT_KINDS],
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// (remote, local port) → connection.
    tcp_conns: HashMap<(SocketAddrV4, u16), SocketHandle>,
    /// The entry of `tcp_conns` the last segment found: a batch is mostly
    /// one flow's segments back to back, and this spares them the keyed
    /// hash (SipHash, kept against crafted collisions), 2% of the loop's
    /// samples receiving at MTU 1500. BSD's `tcp_last_inpcb` did the same.
    /// Cleared whenever `tcp_conns` changes.
    last_conn: Option<((SocketAddrV4, u16), SocketHandle)>,
    tcp_listeners: HashMap<u16, SocketHandle>,
    udp_ports: HashMap<u16, SocketHandle>,
    /// Datagrams queued by `udp_send_to`, sent at the next poll.
    udp_tx: VecDeque<(u16, SocketAddrV4, Vec<u8>)>,
    /// Sockets whose readiness may have changed since the last `drain_events`.
    events: Vec<SocketHandle>,
    stats: StackStats,
    rx_buf: Vec<u8>,
    /// The packet being received, when a socket's receive buffer may keep
    /// it ([`RecvBuffer::keep`](crate::tcp::buffer::RecvBuffer::keep)).
    rx_packet: Option<PacketBuf>,
    /// Kept packet buffers the application has read, for the device.
    rx_spent: Vec<Vec<u8>>,
    tx_buf: Vec<u8>,
    /// The device vouches for the checksum of the packet being processed.
    rx_trusted: bool,
    /// Where the IP layer writes ICMP replies (up to 64 KB: an echo of a
    /// reassembled request), fragmented to the MTU on the way out.
    reply_buf: Vec<u8>,
    /// Earliest deadline over all sockets, as of the last poll.
    next_deadline: Option<Instant>,
    /// Slots with pending work (input arrived, the user acted), in the
    /// order they were marked; a poll runs exactly these plus the sockets
    /// whose timer fired, so its cost does not grow with idle connections.
    dirty: Vec<u32>,
    /// Per-socket deadlines, earliest first, with lazy invalidation: an
    /// entry counts only if the slot's `timer_at` and generation still match.
    timers: BinaryHeap<Reverse<TimerEntry>>,
    /// The `now` of the latest poll (the time of application reads/writes).
    now: Instant,
}

/// Kinds of limit hits, for rate-limited log lines.
#[derive(Clone, Copy, Debug)]
enum Limit {
    Connections = 0,
    SynQueue = 1,
    AcceptQueue = 2,
    IdleTimeout = 3,
    BadCookie = 4,
}
const LIMIT_KINDS: usize = 5;

/// The default [`StackConfig::rx_keep_min`]. Measured kernel -> stack
/// on 2 cores, three interleaved pairs, keeping against copying: at MTU
/// 65000 0.36 / 0.24 / 0.26 against 0.41 / 0.25 / 0.29 CPU s/GB (22.9 /
/// 36.9 / 31.3 against 17.2 / 37.0 / 29.0 Gbit/s), through the offload
/// device 0.19 / 0.19 / 0.21 against 0.24 / 0.20 / 0.24 (46.6 / 47.1 /
/// 40.9 against 38.0 / 47.1 / 38.7 Gbit/s).
pub const KEEP_MIN: usize = 4096;

/// Most packet buffers read by applications held for the device between
/// polls (the device's own pool has a bound of its own).
const MAX_RX_SPENT: usize = 512;

/// One filed deadline: (when, slot index, slot generation).
type TimerEntry = (Instant, u32, u32);

impl Stack {
    pub fn new(mut config: StackConfig, mut rng: Rng) -> Stack {
        config.mtu = config.mtu.clamp(576, 65535);
        config.tcp.mss = (config.mtu - ipv4::HEADER_LEN - crate::wire::tcp::HEADER_LEN) as u16;
        config.ip.addr = config.addr;
        config.max_tso_segment = config.max_tso_segment.clamp(config.mtu, 65535);
        // Room for the largest TCP header (60) beside the IP header.
        config.tcp.max_send_segment = config.max_tso_segment - ipv4::HEADER_LEN - 60;
        let mut key = [0u8; 16];
        rng.fill(&mut key);
        let ip = Ipv4Layer::new(config.ip.clone(), rng.next_u32() as u16);
        let mtu = config.mtu;
        let tx_len = config.max_tso_segment;
        Stack {
            config,
            ip,
            rng,
            isn: IsnGenerator::new(key),
            // Derived from the ISN key (no further draws: the RNG's sequence,
            // and so every simulator seed, stays as it was).
            cookies: SynCookies::derive(&key),
            last_cookie_at: None,
            limit_log: [None; LIMIT_KINDS],
            limit_quiet: [0; LIMIT_KINDS],
            slots: Vec::new(),
            free: Vec::new(),
            tcp_conns: HashMap::new(),
            last_conn: None,
            tcp_listeners: HashMap::new(),
            udp_ports: HashMap::new(),
            udp_tx: VecDeque::new(),
            events: Vec::new(),
            stats: StackStats::default(),
            rx_buf: vec![0; mtu.max(65535)],
            rx_packet: None,
            rx_spent: Vec::new(),
            tx_buf: vec![0; tx_len],
            rx_trusted: false,
            reply_buf: vec![0; 65535],
            next_deadline: None,
            dirty: Vec::new(),
            timers: BinaryHeap::new(),
            now: Instant::ZERO,
        }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.config.addr
    }

    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    pub fn stats(&self) -> StackStats {
        let mut s = self.stats.clone();
        s.ip = self.ip.stats().clone();
        s
    }

    /// Number of live sockets of every kind (connections in TIME-WAIT included).
    pub fn socket_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    // ----- the poll loop -------------------------------------------------

    /// Drain received packets, run timers, transmit; return when to poll next
    /// (`None`: nothing scheduled, poll again on input or a user action).
    pub fn poll<D: Device + ?Sized>(&mut self, now: Instant, dev: &mut D) -> Option<Instant> {
        self.now = self.now.max(now);
        for b in self.rx_spent.drain(..) {
            dev.recycle_rx(b);
        }
        let mut rx = std::mem::take(&mut self.rx_buf);
        for _ in 0..self.config.rx_batch {
            // A device that holds packets in memory hands them over whole.
            if let Some((packet, trusted)) = dev.take_rx(now) {
                self.rx_trusted = trusted;
                if packet.len() < self.config.rx_keep_min {
                    self.receive_packet(now, dev, &packet);
                    dev.recycle_rx(packet);
                    continue;
                }
                // Large: a socket may keep it rather than copy its payload.
                let p = PacketBuf::new(packet);
                self.rx_packet = Some(p.clone());
                self.receive_packet(now, dev, p.bytes());
                self.rx_packet = None;
                match p.into_inner() {
                    Some(b) => dev.recycle_rx(b),
                    None => self.stats.rx_packets_kept += 1,
                }
                continue;
            }
            match dev.recv(now, &mut rx) {
                Ok(Some(n)) => {
                    self.rx_trusted = dev.rx_checksum_trusted();
                    self.receive_packet(now, dev, &rx[..n]);
                }
                Ok(None) => break,
                Err(e) => {
                    self.stats.rx_device_errors += 1;
                    log::warn!("device receive failed: {e}");
                    break;
                }
            }
        }
        self.rx_buf = rx;
        self.ip.expire(now);
        self.flush_udp(dev, now);
        self.dispatch(now, dev);
        let dev_at = dev.poll_at();
        [self.next_deadline, self.ip.poll_at(), dev_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The deadline computed by the last `poll` (sockets, reassembly), ignoring the device.
    pub fn poll_at(&self) -> Option<Instant> {
        [self.next_deadline, self.ip.poll_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// True if some socket has work the next `poll` should do right away
    /// (the user wrote, read or closed since the last poll).
    pub fn needs_poll(&self) -> bool {
        !self.dirty.is_empty() || !self.udp_tx.is_empty()
    }

    /// Sockets whose readiness may have changed since the last call; the
    /// runtime wakes the threads waiting on them.
    pub fn drain_events(&mut self, out: &mut Vec<SocketHandle>) {
        for h in self.events.drain(..) {
            if let Some(slot) = self.slots.get_mut(h.index as usize) {
                slot.evented = false;
                slot.ready = 0;
            }
            out.push(h);
        }
    }

    /// Some socket waiting in the event list has readiness bits: a thread
    /// blocked on it may need waking.
    pub fn has_ready_events(&self) -> bool {
        self.events.iter().any(|h| {
            self.slots
                .get(h.index as usize)
                .is_some_and(|s| s.ready != 0)
        })
    }

    /// As [`Stack::drain_events`], with each socket's readiness bits
    /// ([`READABLE`], [`WRITABLE`]) in `ready` beside it. A socket the user
    /// only acted on (a read or write, which changes no other thread's
    /// readiness) comes with no bits: a thread blocked in `read` on it need
    /// not be woken because another thread wrote, nor a reader by each ACK
    /// that carries no data.
    pub fn drain_events_ready(&mut self, out: &mut Vec<SocketHandle>, ready: &mut Vec<u8>) {
        for h in self.events.drain(..) {
            let mut bits = 0;
            if let Some(slot) = self.slots.get_mut(h.index as usize) {
                slot.evented = false;
                bits = std::mem::take(&mut slot.ready);
            }
            out.push(h);
            ready.push(bits);
        }
    }

    fn receive_packet<D: Device + ?Sized>(&mut self, now: Instant, dev: &mut D, packet: &[u8]) {
        let mut tx = std::mem::take(&mut self.tx_buf);
        // A delivered datagram borrows either `packet` (the common case) or
        // the IP layer's reassembly buffer. Record where it lives so the IP
        // layer's borrow ends before the socket table is touched; only
        // reassembled datagrams are copied.
        let mut reply = std::mem::take(&mut self.reply_buf);
        let delivered = match self.ip.receive(now, packet, &mut reply) {
            IpInput::Deliver(d) => {
                let hdr_len = d.raw.len() - d.payload.len();
                let at = match offset_in(packet, d.raw) {
                    Some(off) => Err(off..off + d.raw.len()),
                    None => Ok(d.raw.to_vec()),
                };
                Some((d.src, d.dst, d.protocol, hdr_len, at))
            }
            IpInput::Reply(n) => {
                // An echo reply to a reassembled request can exceed the MTU.
                let mtu = self.config.mtu;
                let stats = &mut self.stats;
                crate::ip::fragment(&reply[..n], mtu, |f| Self::send_raw(stats, dev, now, f));
                None
            }
            IpInput::IcmpError { .. } => {
                // Soft errors (RFC 1122 §4.2.3.9): counted; TCP keeps retrying.
                self.stats.icmp_errors_rx += 1;
                None
            }
            IpInput::None => None,
        };
        if let Some((src, dst, proto, hdr_len, at)) = delivered {
            let raw: &[u8] = match &at {
                Ok(copy) => copy,
                Err(range) => &packet[range.clone()],
            };
            match proto {
                PROTO_TCP => self.tcp_input(now, dev, &mut tx, src, dst, &raw[hdr_len..]),
                PROTO_UDP => self.udp_input(now, dev, &mut tx, src, dst, raw, hdr_len),
                _ => {}
            }
        }
        self.tx_buf = tx;
        self.reply_buf = reply;
    }

    fn send_raw<D: Device + ?Sized>(stats: &mut StackStats, dev: &mut D, now: Instant, pkt: &[u8]) {
        match dev.send(now, pkt) {
            Ok(true) => {}
            Ok(false) => stats.tx_device_drops += 1,
            Err(e) => {
                stats.tx_device_errors += 1;
                log::debug!("device send failed: {e}");
            }
        }
    }

    /// Emit one TCP segment from us to `dst`.
    #[allow(clippy::too_many_arguments)]
    fn emit_tcp<D: Device + ?Sized>(
        ip: &mut Ipv4Layer,
        stats: &mut StackStats,
        dev: &mut D,
        now: Instant,
        tx: &mut [u8],
        dst: Ipv4Addr,
        seg: &TcpRepr,
        partial_csum: bool,
    ) {
        let src = ip.addr();
        let len = seg.buffer_len();
        let hl = ipv4::HEADER_LEN;
        if hl + len > tx.len() {
            log::error!("TCP segment of {len} bytes exceeds the MTU; dropped");
            stats.tx_device_drops += 1;
            return;
        }
        // The payload lent, not copied, where the device takes loans.
        if let Some(lent) = seg
            .backing
            .filter(|_| dev.lend_min().is_some_and(|min| seg.payload.len() >= min))
            .and_then(|b| b.lend(seg.payload))
        {
            let head = &mut tx[..hl + seg.header_len()];
            seg.emit_header(src, dst, &mut head[hl..], !partial_csum);
            ip.emit_header(dst, PROTO_TCP, len, &mut head[..hl]);
            match dev.send_lent(now, head, lent) {
                Ok(true) => {}
                Ok(false) => stats.tx_device_drops += 1,
                Err(e) => {
                    stats.tx_device_errors += 1;
                    log::debug!("device send failed: {e}");
                }
            }
            return;
        }
        let mut build = |buf: &mut [u8]| {
            seg.emit_with(src, dst, &mut buf[hl..hl + len], !partial_csum);
            ip.emit_header(dst, PROTO_TCP, len, &mut buf[..hl]);
        };
        // Built in the device's buffer where it has one (no copy).
        match dev.send_with(now, hl + len, &mut build) {
            Some(Ok(true)) => {}
            Some(Ok(false)) => stats.tx_device_drops += 1,
            Some(Err(e)) => {
                stats.tx_device_errors += 1;
                log::debug!("device send failed: {e}");
            }
            None => {
                build(tx);
                Self::send_raw(stats, dev, now, &tx[..hl + len]);
            }
        }
    }

    fn tcp_input<D: Device + ?Sized>(
        &mut self,
        now: Instant,
        dev: &mut D,
        tx: &mut [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        segment: &[u8],
    ) {
        // Taken: `seg` borrows it while `self` is borrowed mutably.
        let packet = self.rx_packet.take();
        // A segment the device vouches for may carry only a partial
        // checksum (vnet header NEEDS_CSUM): the kernel built it.
        let seg = match TcpRepr::parse(src, dst, segment, !self.rx_trusted) {
            Ok(seg) => TcpRepr {
                packet: packet.as_ref(),
                ..seg
            },
            Err(WireError::BadChecksum) => {
                self.stats.tcp_rx_bad_checksum += 1;
                return;
            }
            Err(_) => {
                self.stats.tcp_rx_malformed += 1;
                return;
            }
        };
        self.stats.tcp_rx_segments += 1;
        let remote = SocketAddrV4::new(src, seg.src_port);
        if let Some(h) = self.find_conn((remote, seg.dst_port)) {
            if let Some(Socket::Tcp(sock)) = self.slots[h.index as usize].socket.as_mut() {
                sock.last_active = now;
                let before = (
                    sock.tcb.state(),
                    sock.tcb.recv_queue(),
                    sock.tcb.can_recv(),
                    sock.tcb.send_queue(),
                );
                sock.tcb.process(now, &seg);
                if sock.tcb.wants_urgent_ack() {
                    // A duplicate ACK (gap, duplicate, filled hole) goes out
                    // now, one per segment, not coalesced with the rest of
                    // the receive batch: the sender counts them.
                    let remote_ip = *sock.tcb.remote().ip();
                    while let Some(out) = sock.tcb.poll_transmit(now) {
                        Self::emit_tcp(
                            &mut self.ip,
                            &mut self.stats,
                            dev,
                            now,
                            tx,
                            remote_ip,
                            &out,
                            self.config.tx_checksum_partial,
                        );
                    }
                }
                if sock.orphaned {
                    discard_received(&mut sock.tcb);
                }
                let changed = sock.tcb.state() != before.0;
                let mut ready = 0;
                if changed || sock.tcb.recv_queue() > before.1 || sock.tcb.can_recv() != before.2 {
                    ready |= READABLE;
                }
                if changed || sock.tcb.send_queue() < before.3 {
                    ready |= WRITABLE;
                }
                self.mark(h, ready);
                return;
            }
        }
        if seg.syn && seg.ack.is_none() && !seg.rst {
            if let Some(&lh) = self.tcp_listeners.get(&seg.dst_port) {
                self.tcp_passive_open(now, dev, tx, lh, remote, &seg);
                return;
            }
        }
        if seg.ack.is_some() && !seg.syn && !seg.rst {
            if let Some(&lh) = self.tcp_listeners.get(&seg.dst_port) {
                if self.tcp_cookie_ack(now, lh, remote, &seg) {
                    return;
                }
            }
        }
        if seg.rst {
            // A deferred cookie client gave up: forget it.
            if let Some(&lh) = self.tcp_listeners.get(&seg.dst_port) {
                if let Some(Socket::Listener(l)) = self.slots[lh.index as usize].socket.as_mut() {
                    l.deferred.retain(|d| {
                        let first = d.peer_isn + 1;
                        !(d.remote == remote && seg.seq.in_range_inclusive(first, first + 65535))
                    });
                }
            }
        }
        self.stats.tcp_rx_no_socket += 1;
        if !seg.payload.is_empty() {
            self.stats.tcp_rx_no_socket_data += 1;
        }
        if let Some(rst) = reset_for(&seg) {
            self.stats.tcp_rst_sent += 1;
            Self::emit_tcp(
                &mut self.ip,
                &mut self.stats,
                dev,
                now,
                tx,
                src,
                &rst,
                self.config.tx_checksum_partial,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp_passive_open<D: Device + ?Sized>(
        &mut self,
        now: Instant,
        dev: &mut D,
        tx: &mut [u8],
        lh: SocketHandle,
        remote: SocketAddrV4,
        syn: &TcpRepr,
    ) {
        let Some(Socket::Listener(l)) = self.slots[lh.index as usize].socket.as_ref() else {
            return;
        };
        let port = l.port;
        if l.ready.len() >= l.backlog {
            // Accept queue full: drop the SYN; the client retransmits (Linux
            // drops here even with cookies: a cookie could not be queued).
            self.stats.tcp_listen_overflows += 1;
            self.limit_hit(now, Limit::AcceptQueue, port, remote);
            return;
        }
        let syn_queue_full =
            l.embryonic + l.ready.len() >= l.backlog || l.embryonic >= self.config.syn_backlog;
        if self.tcp_conns.len() >= self.config.max_tcp_connections {
            self.refuse_for_limit(now, dev, tx, syn, port, remote);
            return;
        }
        let local = SocketAddrV4::new(self.config.addr, port);
        if syn_queue_full {
            if !self.config.syn_cookies {
                // Drop; the client retransmits (as Linux does without cookies).
                self.stats.tcp_listen_overflows += 1;
                self.limit_hit(now, Limit::SynQueue, port, remote);
                return;
            }
            // RFC 4987 §3.6: answer statelessly; the ACK rebuilds the connection.
            let data = CookieData::from_syn(&syn.options);
            let cookie = self.cookies.encode(now, local, remote, syn.seq, data);
            let synack = syncookie::syn_ack(&self.config.tcp, syn, cookie, data);
            Self::emit_tcp(
                &mut self.ip,
                &mut self.stats,
                dev,
                now,
                tx,
                *remote.ip(),
                &synack,
                self.config.tx_checksum_partial,
            );
            self.stats.tcp_syncookies_sent += 1;
            self.last_cookie_at = Some(now);
            self.limit_hit(now, Limit::SynQueue, port, remote);
            return;
        }
        let isn = self.isn.isn(now, local, remote);
        let mut tcb = Tcb::accept(&self.config.tcp, local, remote, syn, isn, now);
        tcb.set_ts_offset(self.rng.next_u32());
        if let Some(Socket::Listener(l)) = self.slots[lh.index as usize].socket.as_mut() {
            l.embryonic += 1;
        }
        self.insert_tcp(now, tcb, Some(lh));
    }

    /// An ACK for no connection arrived at a listening port: if it returns a
    /// valid SYN cookie, or belongs to a client whose cookie ACK had to be
    /// deferred, create the connection from it (established, into the
    /// accept queue). True: taken (or dropped on purpose, the client will
    /// retransmit). False: not a cookie of ours (the caller resets).
    fn tcp_cookie_ack(
        &mut self,
        now: Instant,
        lh: SocketHandle,
        remote: SocketAddrV4,
        seg: &TcpRepr,
    ) -> bool {
        if !self.config.syn_cookies {
            return false;
        }
        let window = Self::cookie_window();
        let recent = self
            .last_cookie_at
            .is_some_and(|t| now.saturating_duration_since(t) < window);
        let Some(Socket::Listener(l)) = self.slots[lh.index as usize].socket.as_mut() else {
            return false;
        };
        let (port, full) = (l.port, l.ready.len() >= l.backlog);
        let Some(ack) = seg.ack else {
            return false;
        };
        // A client already deferred: a later segment of its first flight
        // (or a retransmission of the first).
        l.deferred
            .retain(|d| now.saturating_duration_since(d.at) < window);
        let known = l.deferred.iter().position(|d| d.matches(remote, seg));
        let local = SocketAddrV4::new(self.config.addr, port);
        let (peer_isn, data) = match known {
            Some(i) => {
                let d = l.deferred[i];
                (d.peer_isn, d.data)
            }
            None => {
                if !recent {
                    return false;
                }
                let peer_isn = seg.seq - 1;
                let Some(data) = self.cookies.decode(now, local, remote, peer_isn, ack - 1) else {
                    self.stats.tcp_syncookies_failed += 1;
                    self.limit_hit(now, Limit::BadCookie, port, remote);
                    return false;
                };
                (peer_isn, data)
            }
        };
        if full {
            // As Linux, drop the ACK; unlike a stateless drop, remember the
            // client (it proved its address), so the rest of its first
            // flight is not reset and `accept` can complete it.
            self.stats.tcp_listen_overflows += 1;
            let Some(Socket::Listener(l)) = self.slots[lh.index as usize].socket.as_mut() else {
                return false;
            };
            if known.is_none() {
                if l.deferred.len() < self.config.syn_backlog {
                    l.deferred.push_back(DeferredCookie {
                        remote,
                        peer_isn,
                        cookie: ack - 1,
                        data,
                        window: seg.window,
                        at: now,
                    });
                    self.stats.tcp_syncookies_deferred += 1;
                } else {
                    self.stats.tcp_syncookies_deferred_dropped += 1;
                }
            }
            self.limit_hit(now, Limit::AcceptQueue, port, remote);
            return true;
        }
        if self.tcp_conns.len() >= self.config.max_tcp_connections {
            self.stats.tcp_conn_limit_refused += 1;
            self.limit_hit(now, Limit::Connections, port, remote);
            return false;
        }
        if let (Some(i), Some(Socket::Listener(l))) =
            (known, self.slots[lh.index as usize].socket.as_mut())
        {
            l.deferred.remove(i);
        }
        self.cookie_connection(now, lh, local, remote, peer_isn, seg, data)
    }

    /// How long a cookie (and so a deferred cookie client) stays valid.
    fn cookie_window() -> Duration {
        Duration::from_secs(syncookie::COUNTER_PERIOD_SECS * (syncookie::MAX_AGE_TICKS as u64 + 1))
    }

    /// The connection of a validated cookie, into `lh`'s accept queue.
    #[allow(clippy::too_many_arguments)]
    fn cookie_connection(
        &mut self,
        now: Instant,
        lh: SocketHandle,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        peer_isn: SeqNum,
        seg: &TcpRepr,
        data: CookieData,
    ) -> bool {
        let Some(tcb) =
            syncookie::accept_cookie(&self.config.tcp, local, remote, peer_isn, seg, data, now)
        else {
            return false;
        };
        if matches!(tcb.state(), State::Closed | State::SynReceived) {
            return false;
        }
        self.stats.tcp_syncookies_ok += 1;
        let h = self.insert_tcp(now, tcb, None);
        if let Some(Socket::Listener(l)) = self.slots[lh.index as usize].socket.as_mut() {
            l.ready.push_back(h);
        }
        self.mark_event(lh, READABLE);
        true
    }

    /// `accept` made room in `lh`'s accept queue: complete the oldest
    /// deferred cookie client, as if its handshake ACK arrived now (its
    /// dropped data comes again with its retransmission). A client that
    /// sends nothing after the handshake (the server speaks first) is
    /// served this way too.
    fn promote_deferred_cookie(&mut self, lh: SocketHandle) {
        let now = self.now;
        let window = Self::cookie_window();
        if self.tcp_conns.len() >= self.config.max_tcp_connections {
            return;
        }
        let Some(Some(Socket::Listener(l))) = self.slot_mut(lh).map(|s| s.socket.as_mut()) else {
            return;
        };
        if l.ready.len() >= l.backlog {
            return;
        }
        let port = l.port;
        let d = loop {
            match l.deferred.pop_front() {
                None => return,
                Some(d) if now.saturating_duration_since(d.at) < window => break d,
                Some(_) => {}
            }
        };
        let local = SocketAddrV4::new(self.config.addr, port);
        let ack = TcpRepr {
            src_port: d.remote.port(),
            dst_port: port,
            seq: d.peer_isn + 1,
            ack: Some(d.cookie + 1),
            window: d.window,
            ..TcpRepr::default()
        };
        self.cookie_connection(now, lh, local, d.remote, d.peer_isn, &ack, d.data);
    }

    /// A new connection's TCB into the table and demux map.
    fn insert_tcp(
        &mut self,
        now: Instant,
        tcb: Tcb,
        listener: Option<SocketHandle>,
    ) -> SocketHandle {
        let key = (tcb.remote(), tcb.local().port());
        let state = tcb.state();
        let h = self.alloc(Socket::Tcp(Box::new(TcpSocket {
            tcb,
            listener,
            orphaned: false,
            last_state: state,
            last_active: now,
            limit_error: None,
        })));
        self.tcp_conns.insert(key, h);
        self.last_conn = None;
        self.stats.tcp_conns_opened += 1;
        self.mark(h, READABLE | WRITABLE);
        h
    }

    /// `max_tcp_connections` reached: answer the SYN with RST, count, log.
    fn refuse_for_limit<D: Device + ?Sized>(
        &mut self,
        now: Instant,
        dev: &mut D,
        tx: &mut [u8],
        syn: &TcpRepr,
        port: u16,
        remote: SocketAddrV4,
    ) {
        self.stats.tcp_conn_limit_refused += 1;
        if let Some(rst) = reset_for(syn) {
            self.stats.tcp_rst_sent += 1;
            Self::emit_tcp(
                &mut self.ip,
                &mut self.stats,
                dev,
                now,
                tx,
                *remote.ip(),
                &rst,
                self.config.tx_checksum_partial,
            );
        }
        self.limit_hit(now, Limit::Connections, port, remote);
    }

    /// Log a limit hit, at most one line per kind per second (with the
    /// number of hits since the last line). Counters are kept by callers.
    fn limit_hit(&mut self, now: Instant, kind: Limit, port: u16, remote: SocketAddrV4) {
        let k = kind as usize;
        let due = self.limit_log[k]
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if !due {
            self.limit_quiet[k] += 1;
            return;
        }
        let more = std::mem::take(&mut self.limit_quiet[k]);
        self.limit_log[k] = Some(now);
        let what = match kind {
            Limit::Connections => format!(
                "connection limit reached ({} TCP connections, max_tcp_connections): refused {remote} on port {port} with RST",
                self.tcp_conns.len()
            ),
            Limit::SynQueue if self.config.syn_cookies => format!(
                "SYN queue of port {port} full (possible SYN flood): answering {remote} with a SYN cookie"
            ),
            Limit::SynQueue => format!(
                "SYN queue of port {port} full (possible SYN flood) and SYN cookies are off: dropped SYN from {remote}"
            ),
            Limit::AcceptQueue => format!(
                "accept queue of port {port} full (the application is not accepting fast enough): dropped {remote}"
            ),
            Limit::IdleTimeout => format!(
                "connection {remote} on port {port} idle longer than tcp_idle_timeout: reset"
            ),
            Limit::BadCookie => format!(
                "ACK from {remote} to listening port {port} carries no valid SYN cookie: reset"
            ),
        };
        if more > 0 {
            log::warn!("tcp: {what} ({more} more since the last report)");
        } else {
            log::warn!("tcp: {what}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn udp_input<D: Device + ?Sized>(
        &mut self,
        now: Instant,
        dev: &mut D,
        tx: &mut [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        raw: &[u8],
        hdr_len: usize,
    ) {
        let dgram = match UdpRepr::parse(src, dst, &raw[hdr_len..]) {
            Ok(d) => d,
            Err(WireError::BadChecksum) => {
                self.stats.udp_rx_bad_checksum += 1;
                return;
            }
            Err(_) => {
                self.stats.udp_rx_malformed += 1;
                return;
            }
        };
        self.stats.udp_rx_datagrams += 1;
        match self.udp_ports.get(&dgram.dst_port) {
            Some(&h) => {
                if let Some(Socket::Udp(s)) = self.slots[h.index as usize].socket.as_mut() {
                    if !s.push(SocketAddrV4::new(src, dgram.src_port), dgram.payload) {
                        self.stats.udp_rx_queue_full += 1;
                    }
                    self.mark(h, READABLE);
                }
            }
            None => {
                self.stats.udp_rx_no_port += 1;
                let original = IpDatagram {
                    src,
                    dst,
                    protocol: PROTO_UDP,
                    ttl: 0,
                    raw,
                    payload: &raw[hdr_len..],
                };
                if let Some(n) = self.ip.emit_unreachable(
                    crate::wire::icmp::CODE_PORT_UNREACHABLE,
                    &original,
                    tx,
                ) {
                    Self::send_raw(&mut self.stats, dev, now, &tx[..n]);
                }
            }
        }
    }

    fn flush_udp<D: Device + ?Sized>(&mut self, dev: &mut D, now: Instant) {
        let src = self.config.addr;
        while let Some((sport, dst, payload)) = self.udp_tx.pop_front() {
            let repr = UdpRepr {
                src_port: sport,
                dst_port: dst.port(),
                payload: &payload,
            };
            let hl = ipv4::HEADER_LEN;
            let len = repr.buffer_len();
            repr.emit(src, *dst.ip(), &mut self.tx_buf[hl..hl + len]);
            self.ip
                .emit_header(*dst.ip(), PROTO_UDP, len, &mut self.tx_buf[..hl]);
            self.stats.udp_tx_datagrams += 1;
            Self::send_raw(&mut self.stats, dev, now, &self.tx_buf[..hl + len]);
        }
    }

    /// Run every TCP socket that is dirty or whose timer is due; transmit;
    /// handle state transitions (accept queue, reaping); refile each run
    /// socket's deadline. Idle sockets are not touched: the cost is
    /// O((dirty + expired) · log n), not O(sockets).
    fn dispatch<D: Device + ?Sized>(&mut self, now: Instant, dev: &mut D) {
        // Sockets whose timer fired join the dirty ones.
        while let Some(&Reverse((at, index, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let slot = &mut self.slots[index as usize];
            if slot.generation == generation && slot.timer_at == Some(at) {
                slot.timer_at = None;
                if !slot.dirty {
                    slot.dirty = true;
                    self.dirty.push(index);
                }
            }
        }
        let mut tx = std::mem::take(&mut self.tx_buf);
        let work = std::mem::take(&mut self.dirty);
        for &i in &work {
            let slot = &mut self.slots[i as usize];
            if !slot.dirty {
                continue; // Released (or already run) since it was queued.
            }
            slot.dirty = false;
            let Some(Socket::Tcp(sock)) = slot.socket.as_mut() else {
                continue;
            };
            let idle = self.config.tcp_idle_timeout.filter(|&d| {
                !matches!(sock.tcb.state(), State::Closed | State::TimeWait)
                    && now >= sock.last_active + d
            });
            if idle.is_some() {
                sock.tcb.abort();
                sock.limit_error = Some(TcpError::TimedOut);
                self.stats.tcp_idle_timeouts += 1;
            }
            let remote_ip = *sock.tcb.remote().ip();
            let mut sent = false;
            while let Some(seg) = sock.tcb.poll_transmit(now) {
                Self::emit_tcp(
                    &mut self.ip,
                    &mut self.stats,
                    dev,
                    now,
                    &mut tx,
                    remote_ip,
                    &seg,
                    self.config.tx_checksum_partial,
                );
                sent = true;
            }
            let state = sock.tcb.state();
            let changed = state != sock.last_state;
            sock.last_state = state;
            let h = SocketHandle {
                index: i,
                generation: slot.generation,
            };
            if changed {
                self.mark_event(h, READABLE | WRITABLE);
            } else if sent {
                self.mark_event(h, 0);
            }
            if idle.is_some() {
                if let Some(Socket::Tcp(sock)) = self.slots[i as usize].socket.as_ref() {
                    let (port, remote) = (sock.tcb.local().port(), sock.tcb.remote());
                    self.limit_hit(now, Limit::IdleTimeout, port, remote);
                }
            }
            self.after_transition(h);
            self.reschedule(i);
        }
        // Keep the allocation (the list is usually short but may spike).
        let mut work = work;
        work.clear();
        if self.dirty.is_empty() {
            self.dirty = work;
        }
        self.tx_buf = tx;
        self.compact_timers();
        self.next_deadline = self.timers.peek().map(|e| e.0 .0);
    }

    /// File slot `i`'s next deadline in the timer heap. A deadline that
    /// moved later (or went away) keeps the earlier entry: it fires, the
    /// socket runs once with nothing due, and is refiled then. So a timer
    /// restarted on every ACK (RTO, idle) costs no heap push per segment.
    fn reschedule(&mut self, i: u32) {
        let idle = self.config.tcp_idle_timeout;
        let slot = &mut self.slots[i as usize];
        let at = match slot.socket.as_ref() {
            Some(Socket::Tcp(sock)) => {
                let idle_at = idle
                    .filter(|_| !matches!(sock.tcb.state(), State::Closed | State::TimeWait))
                    .map(|d| sock.last_active + d);
                [sock.tcb.poll_at(), idle_at].into_iter().flatten().min()
            }
            _ => None,
        };
        if let Some(at) = at {
            if slot.timer_at.is_none_or(|filed| at < filed) {
                slot.timer_at = Some(at);
                self.timers.push(Reverse((at, i, slot.generation)));
            }
        }
    }

    /// Drop stale entries from the top of the heap (so its top is the true
    /// next deadline), and rebuild it when stale entries dominate.
    fn compact_timers(&mut self) {
        let valid = |slots: &[Slot], &(at, i, g): &TimerEntry| {
            let s = &slots[i as usize];
            s.generation == g && s.timer_at == Some(at)
        };
        while let Some(Reverse(e)) = self.timers.peek() {
            if valid(&self.slots, e) {
                break;
            }
            self.timers.pop();
        }
        if self.timers.len() > 1024 && self.timers.len() > 4 * self.slots.len() {
            let slots = &self.slots;
            self.timers.retain(|Reverse(e)| valid(slots, e));
        }
    }

    /// Move a connection that just became established into its listener's
    /// accept queue; reap closed connections.
    fn after_transition(&mut self, h: SocketHandle) {
        let Some(Socket::Tcp(sock)) = self.slots[h.index as usize].socket.as_mut() else {
            return;
        };
        let state = sock.tcb.state();
        if let Some(lh) = sock.listener {
            let synchronized = !matches!(
                state,
                State::SynReceived | State::Closed | State::Listen | State::SynSent
            );
            if synchronized || state == State::Closed {
                sock.listener = None;
                let mut listener_gone = true;
                if let Some(Some(Socket::Listener(l))) =
                    self.slot_mut(lh).map(|s| s.socket.as_mut())
                {
                    l.embryonic = l.embryonic.saturating_sub(1);
                    if synchronized {
                        l.ready.push_back(h);
                        listener_gone = false;
                    }
                }
                if synchronized {
                    if listener_gone {
                        if let Some(Socket::Tcp(sock)) =
                            self.slots[h.index as usize].socket.as_mut()
                        {
                            sock.tcb.abort();
                            sock.orphaned = true;
                        }
                        self.set_dirty(h.index);
                    } else {
                        self.mark_event(lh, READABLE);
                    }
                }
            }
        }
        let Some(Socket::Tcp(sock)) = self.slots[h.index as usize].socket.as_ref() else {
            return;
        };
        // Reap: closed and either orphaned by the user or never handed out.
        if sock.tcb.is_closed()
            && (sock.orphaned || sock.listener.is_none() && self.is_unaccepted(h))
        {
            self.free_tcp(h);
        }
    }

    fn is_unaccepted(&self, h: SocketHandle) -> bool {
        // A closed connection still in a listener's ready queue is dropped
        // from it at accept time; nothing to do here.
        let _ = h;
        false
    }

    /// The connection of (remote, local port), if any (see `last_conn`).
    fn find_conn(&mut self, key: (SocketAddrV4, u16)) -> Option<SocketHandle> {
        if let Some((k, h)) = self.last_conn {
            if k == key {
                return Some(h);
            }
        }
        let h = *self.tcp_conns.get(&key)?;
        self.last_conn = Some((key, h));
        Some(h)
    }

    fn free_tcp(&mut self, h: SocketHandle) {
        if let Some(Socket::Tcp(sock)) = self.slots[h.index as usize].socket.take() {
            let key = (sock.tcb.remote(), sock.tcb.local().port());
            if self.tcp_conns.get(&key) == Some(&h) {
                self.tcp_conns.remove(&key);
            }
            self.last_conn = None;
            self.stats.tcp_conns_closed += 1;
        }
        self.release(h);
    }

    // ----- socket table --------------------------------------------------

    fn alloc(&mut self, socket: Socket) -> SocketHandle {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    socket: None,
                    dirty: false,
                    timer_at: None,
                    evented: false,
                    ready: 0,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.socket = Some(socket);
        slot.dirty = false;
        slot.timer_at = None;
        slot.evented = false;
        slot.ready = 0;
        SocketHandle {
            index,
            generation: slot.generation,
        }
    }

    fn release(&mut self, h: SocketHandle) {
        let slot = &mut self.slots[h.index as usize];
        slot.socket = None;
        slot.generation = slot.generation.wrapping_add(1);
        slot.dirty = false;
        slot.timer_at = None;
        self.free.push(h.index);
    }

    fn slot_mut(&mut self, h: SocketHandle) -> Option<&mut Slot> {
        self.slots
            .get_mut(h.index as usize)
            .filter(|s| s.generation == h.generation && s.socket.is_some())
    }

    /// Input or a user action touched this socket: transmit at the next poll
    /// and report it with readiness bits `ready` (0: only the user acted).
    fn mark(&mut self, h: SocketHandle, ready: u8) {
        self.set_dirty(h.index);
        self.mark_event(h, ready);
    }

    /// Queue slot `index` for the next dispatch (once).
    fn set_dirty(&mut self, index: u32) {
        if let Some(slot) = self.slots.get_mut(index as usize) {
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(index);
            }
        }
    }

    fn mark_event(&mut self, h: SocketHandle, ready: u8) {
        if let Some(slot) = self.slots.get_mut(h.index as usize) {
            slot.ready |= ready;
            if !slot.evented {
                slot.evented = true;
                self.events.push(h);
            }
        }
    }

    fn tcp(&mut self, h: SocketHandle) -> Result<&mut TcpSocket, TcpError> {
        match self.slot_mut(h).and_then(|s| s.socket.as_mut()) {
            Some(Socket::Tcp(s)) if !s.orphaned => Ok(s),
            _ => Err(TcpError::NotConnected),
        }
    }

    fn tcp_ref(&self, h: SocketHandle) -> Option<&TcpSocket> {
        match self
            .slots
            .get(h.index as usize)
            .filter(|s| s.generation == h.generation)
            .and_then(|s| s.socket.as_ref())
        {
            Some(Socket::Tcp(s)) if !s.orphaned => Some(s),
            _ => None,
        }
    }

    fn ephemeral_port(&mut self, taken: impl Fn(&Stack, u16) -> bool) -> Result<u16, StackError> {
        let (lo, hi) = self.config.ephemeral_ports;
        let span = (hi as u32 - lo as u32 + 1).max(1);
        let start = self.rng.gen_range(0, span as u64) as u32;
        for k in 0..span {
            let port = (lo as u32 + (start + k) % span) as u16;
            if !taken(self, port) {
                return Ok(port);
            }
        }
        Err(StackError::NoEphemeralPorts)
    }

    // ----- TCP API -------------------------------------------------------

    /// Listen on `port` with room for `backlog` connections that are being
    /// established or waiting to be accepted.
    pub fn tcp_listen(&mut self, port: u16, backlog: usize) -> Result<SocketHandle, StackError> {
        if self.tcp_listeners.contains_key(&port) {
            return Err(StackError::AddrInUse(port));
        }
        let h = self.alloc(Socket::Listener(Listener {
            port,
            backlog: backlog.max(1),
            embryonic: 0,
            ready: VecDeque::new(),
            deferred: VecDeque::new(),
        }));
        self.tcp_listeners.insert(port, h);
        Ok(h)
    }

    /// Take the next established connection, or `WouldBlock`.
    pub fn tcp_accept(&mut self, listener: SocketHandle) -> Result<SocketHandle, TcpError> {
        loop {
            self.promote_deferred_cookie(listener);
            let next = match self.slot_mut(listener).and_then(|s| s.socket.as_mut()) {
                Some(Socket::Listener(l)) => l.ready.pop_front(),
                _ => return Err(TcpError::NotConnected),
            };
            let Some(h) = next else {
                return Err(TcpError::WouldBlock);
            };
            // A connection reset before it was accepted is discarded quietly.
            let closed = matches!(self.slot_mut(h).and_then(|s| s.socket.as_ref()), Some(Socket::Tcp(s)) if s.tcb.is_closed());
            if closed {
                self.free_tcp(h);
                self.promote_deferred_cookie(listener);
                continue;
            }
            self.promote_deferred_cookie(listener);
            return Ok(h);
        }
    }

    /// Start an active open to `remote` from a random ephemeral port.
    pub fn tcp_connect(
        &mut self,
        now: Instant,
        remote: SocketAddrV4,
    ) -> Result<SocketHandle, StackError> {
        let tcp = self.config.tcp.clone();
        self.tcp_connect_with(now, remote, &tcp)
    }

    /// `tcp_connect` with this connection's own TCP settings (keep-alive,
    /// buffers, congestion control...); the MSS still follows the MTU.
    pub fn tcp_connect_with(
        &mut self,
        now: Instant,
        remote: SocketAddrV4,
        tcp: &TcpConfig,
    ) -> Result<SocketHandle, StackError> {
        let mut tcp = tcp.clone();
        tcp.mss = self.config.tcp.mss;
        let tcp = &tcp;
        if self.tcp_conns.len() >= self.config.max_tcp_connections {
            self.stats.tcp_conn_limit_refused += 1;
            return Err(StackError::TooManyConnections(self.tcp_conns.len()));
        }
        let ip = *remote.ip();
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || remote.port() == 0 {
            return Err(StackError::BadAddress(ip));
        }
        let port = self.ephemeral_port(|s, p| {
            s.tcp_conns.contains_key(&(remote, p)) || s.tcp_listeners.contains_key(&p)
        })?;
        let local = SocketAddrV4::new(self.config.addr, port);
        let isn = self.isn.isn(now, local, remote);
        let mut tcb = Tcb::connect(tcp, local, remote, isn, now);
        tcb.set_ts_offset(self.rng.next_u32());
        Ok(self.insert_tcp(now, tcb, None))
    }

    pub fn tcp_send(&mut self, h: SocketHandle, data: &[u8]) -> Result<usize, TcpError> {
        self.tcp_send_by(h, |tcb| tcb.send(data))
    }

    /// Zero-copy [`Stack::tcp_send`] for code on the stack's own thread:
    /// `f` writes into the send buffer (one contiguous run of its free
    /// space) and returns how many bytes it wrote. See [`Tcb::send_with`].
    pub fn tcp_send_with(
        &mut self,
        h: SocketHandle,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, TcpError> {
        self.tcp_send_by(h, |tcb| tcb.send_with(f))
    }

    fn tcp_send_by(
        &mut self,
        h: SocketHandle,
        send: impl FnOnce(&mut Tcb) -> Result<usize, TcpError>,
    ) -> Result<usize, TcpError> {
        let now = self.now;
        let sock = self.tcp(h)?;
        let n = match send(&mut sock.tcb) {
            Ok(n) => n,
            Err(TcpError::NotConnected) => {
                return Err(sock.limit_error.unwrap_or(TcpError::NotConnected))
            }
            Err(e) => return Err(e),
        };
        sock.last_active = now;
        self.mark(h, 0);
        Ok(n)
    }

    /// Read in-order bytes; `Ok(0)` is end of stream.
    pub fn tcp_recv(&mut self, h: SocketHandle, buf: &mut [u8]) -> Result<usize, TcpError> {
        self.tcp_recv_by(h, |tcb| tcb.recv(buf))
    }

    /// Zero-copy [`Stack::tcp_recv`] for code on the stack's own thread: `f`
    /// sees received bytes in place (one contiguous run) and returns how
    /// many it consumed; it is called only when bytes are queued, so
    /// `Ok(0)` without a call is end of stream. See [`Tcb::recv_with`].
    pub fn tcp_recv_with(
        &mut self,
        h: SocketHandle,
        f: impl FnOnce(&[u8]) -> usize,
    ) -> Result<usize, TcpError> {
        self.tcp_recv_by(h, |tcb| tcb.recv_with(f))
    }

    /// [`Stack::tcp_recv`] of up to `max` bytes held as received packets
    /// ([`Tcb::recv_kept`]): appended to `out`, for the caller to copy
    /// without the stack. `Ok(0)`: the next bytes are not held that way
    /// (or there are none); use `tcp_recv`.
    pub fn tcp_recv_kept(
        &mut self,
        h: SocketHandle,
        max: usize,
        out: &mut Vec<crate::lend::PacketSlice>,
    ) -> Result<usize, TcpError> {
        self.tcp_recv_by(h, |tcb| Ok(tcb.recv_kept(max, out)))
    }

    fn tcp_recv_by(
        &mut self,
        h: SocketHandle,
        recv: impl FnOnce(&mut Tcb) -> Result<usize, TcpError>,
    ) -> Result<usize, TcpError> {
        let now = self.now;
        let room = MAX_RX_SPENT.saturating_sub(self.rx_spent.len());
        let mut spent = std::mem::take(&mut self.rx_spent);
        let Ok(sock) = self.tcp(h) else {
            self.rx_spent = spent;
            return Err(TcpError::NotConnected);
        };
        let r = match recv(&mut sock.tcb) {
            Err(TcpError::NotConnected) => Err(sock.limit_error.unwrap_or(TcpError::NotConnected)),
            r => r,
        };
        let read = matches!(r, Ok(n) if n > 0);
        if read {
            sock.last_active = now;
        }
        // Packet buffers read to the end go back to the device next poll.
        spent.extend(sock.tcb.take_spent_rx().take(room));
        self.rx_spent = spent;
        if read {
            // Reading may open the window: let the TCB send an update.
            self.mark(h, 0);
        }
        r
    }

    /// Half-close: FIN after queued data; reading continues.
    pub fn tcp_shutdown(&mut self, h: SocketHandle) -> Result<(), TcpError> {
        self.tcp(h)?.tcb.shutdown();
        self.mark(h, READABLE | WRITABLE);
        Ok(())
    }

    /// Close the handle. Queued data is still delivered and the connection
    /// closes gracefully in the background; unread received data makes it
    /// abort with RST instead, as Linux does (RFC 2525 §2.17).
    pub fn tcp_close(&mut self, h: SocketHandle) {
        if let Ok(sock) = self.tcp(h) {
            let mut probe = [0u8; 1];
            let unread = matches!(sock.tcb.recv(&mut probe), Ok(n) if n > 0);
            if unread {
                sock.tcb.abort();
            } else {
                sock.tcb.shutdown();
            }
            sock.tcb.orphan();
            sock.orphaned = true;
            self.mark(h, READABLE | WRITABLE);
        }
    }

    /// Reset the connection now.
    pub fn tcp_abort(&mut self, h: SocketHandle) {
        if let Ok(sock) = self.tcp(h) {
            sock.tcb.abort();
            self.mark(h, READABLE | WRITABLE);
        }
    }

    pub fn tcp_set_nodelay(&mut self, h: SocketHandle, nodelay: bool) -> Result<(), TcpError> {
        self.tcp(h)?.tcb.set_nodelay(nodelay);
        self.mark(h, 0);
        Ok(())
    }

    pub fn tcp_state(&self, h: SocketHandle) -> Option<State> {
        self.tcp_ref(h).map(|s| s.tcb.state())
    }

    pub fn tcp_error(&self, h: SocketHandle) -> Option<TcpError> {
        self.tcp_ref(h)
            .and_then(|s| s.tcb.error().or(s.limit_error))
    }

    pub fn tcp_can_recv(&self, h: SocketHandle) -> bool {
        self.tcp_ref(h).is_none_or(|s| s.tcb.can_recv())
    }

    pub fn tcp_send_capacity(&self, h: SocketHandle) -> usize {
        self.tcp_ref(h).map_or(0, |s| s.tcb.send_capacity())
    }

    /// The connection has an ACK to send at once (a window update after a
    /// read): the runtime then wakes its loop; an ordinary read does not.
    pub fn tcp_ack_due(&self, h: SocketHandle) -> bool {
        self.tcp_ref(h).is_some_and(|s| s.tcb.ack_due())
    }

    /// Bytes written but not yet acknowledged by the peer.
    pub fn tcp_send_queue(&self, h: SocketHandle) -> usize {
        self.tcp_ref(h).map_or(0, |s| s.tcb.send_queue())
    }

    pub fn tcp_local_addr(&self, h: SocketHandle) -> Option<SocketAddrV4> {
        self.tcp_ref(h).map(|s| s.tcb.local())
    }

    pub fn tcp_peer_addr(&self, h: SocketHandle) -> Option<SocketAddrV4> {
        self.tcp_ref(h).map(|s| s.tcb.remote())
    }

    pub fn tcp_stats(&self, h: SocketHandle) -> Option<TcpStats> {
        self.tcp_ref(h).map(|s| conn_stats(&s.tcb))
    }

    /// Stats of every live TCP connection, with its addresses (like `ss -ti`).
    pub fn tcp_connections(&self) -> Vec<(SocketAddrV4, SocketAddrV4, TcpStats)> {
        self.slots
            .iter()
            .filter_map(|s| match s.socket.as_ref() {
                Some(Socket::Tcp(t)) => Some((t.tcb.local(), t.tcb.remote(), conn_stats(&t.tcb))),
                _ => None,
            })
            .collect()
    }

    /// Connections waiting in a listener's accept queue.
    pub fn tcp_listener_ready(&self, l: SocketHandle) -> usize {
        match self
            .slots
            .get(l.index as usize)
            .filter(|s| s.generation == l.generation)
            .and_then(|s| s.socket.as_ref())
        {
            Some(Socket::Listener(l)) => l.ready.len(),
            _ => 0,
        }
    }

    /// Stop listening; connections not yet accepted are reset.
    pub fn tcp_listener_close(&mut self, l: SocketHandle) {
        let Some(Some(Socket::Listener(listener))) = self.slot_mut(l).map(|s| s.socket.take())
        else {
            return;
        };
        self.tcp_listeners.remove(&listener.port);
        self.release(l);
        for h in listener.ready {
            if let Ok(sock) = self.tcp(h) {
                sock.tcb.abort();
                sock.orphaned = true;
                self.mark(h, READABLE | WRITABLE);
            }
        }
        // Embryonic connections notice the listener is gone when they establish.
    }

    // ----- UDP API -------------------------------------------------------

    /// Bind a UDP socket; port 0 picks an ephemeral port.
    pub fn udp_bind(&mut self, port: u16) -> Result<SocketHandle, StackError> {
        let port = if port == 0 {
            self.ephemeral_port(|s, p| s.udp_ports.contains_key(&p))?
        } else if self.udp_ports.contains_key(&port) {
            return Err(StackError::AddrInUse(port));
        } else {
            port
        };
        let h = self.alloc(Socket::Udp(UdpSocket::new(port, self.config.udp_rx_limit)));
        self.udp_ports.insert(port, h);
        Ok(h)
    }

    pub fn udp_local_port(&self, h: SocketHandle) -> Option<u16> {
        match self
            .slots
            .get(h.index as usize)
            .filter(|s| s.generation == h.generation)
            .and_then(|s| s.socket.as_ref())
        {
            Some(Socket::Udp(u)) => Some(u.local_port()),
            _ => None,
        }
    }

    /// Queue a datagram; it is sent at the next poll.
    pub fn udp_send_to(
        &mut self,
        h: SocketHandle,
        data: &[u8],
        dst: SocketAddrV4,
    ) -> Result<usize, StackError> {
        let port = self.udp_local_port(h).ok_or(StackError::InvalidHandle)?;
        let ip = *dst.ip();
        if ip.is_unspecified() || ip.is_multicast() || dst.port() == 0 {
            return Err(StackError::BadAddress(ip));
        }
        let max = self.config.mtu - ipv4::HEADER_LEN - crate::wire::udp::HEADER_LEN;
        if data.len() > max {
            return Err(StackError::MessageTooLarge(data.len()));
        }
        self.udp_tx.push_back((port, dst, data.to_vec()));
        Ok(data.len())
    }

    /// Next datagram: (bytes copied, source); `WouldBlock` if none.
    pub fn udp_recv_from(
        &mut self,
        h: SocketHandle,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddrV4), TcpError> {
        match self.slot_mut(h).and_then(|s| s.socket.as_mut()) {
            Some(Socket::Udp(u)) => u.pop(buf).ok_or(TcpError::WouldBlock),
            _ => Err(TcpError::NotConnected),
        }
    }

    pub fn udp_can_recv(&self, h: SocketHandle) -> bool {
        match self
            .slots
            .get(h.index as usize)
            .filter(|s| s.generation == h.generation)
            .and_then(|s| s.socket.as_ref())
        {
            Some(Socket::Udp(u)) => u.can_recv(),
            _ => true,
        }
    }

    pub fn udp_close(&mut self, h: SocketHandle) {
        if let Some(Some(Socket::Udp(u))) = self.slot_mut(h).map(|s| s.socket.take()) {
            self.udp_ports.remove(&u.local_port());
            self.release(h);
        }
    }
}

/// A TCB's stats with the queue sizes filled in.
fn conn_stats(tcb: &Tcb) -> TcpStats {
    let mut s = tcb.stats();
    s.send_queue = tcb.send_queue();
    s.recv_queue = tcb.recv_queue();
    s
}

/// Nobody will read an orphaned connection: discard what it received, in
/// place, as after SHUT_RD.
#[cold]
fn discard_received(tcb: &mut Tcb) {
    while let Ok(n) = tcb.recv_with(|b| b.len()) {
        if n == 0 {
            break;
        }
    }
}

/// Where `inner` starts inside `outer`, if it is a sub-slice of it.
fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let o = outer.as_ptr() as usize;
    let i = inner.as_ptr() as usize;
    (i >= o && i + inner.len() <= o + outer.len()).then(|| i - o)
}
