//! Peer links between KV nodes: opaque frames (`u32` big-endian length, then the bytes) over
//! TCP with mutual TLS, generic over the network so the same code runs on the stack's sockets
//! ([`StackNet`]) and on the kernel's ([`KernelNet`], the baseline of the benchmark).
//!
//! # Links
//! Every node dials every peer it knows and uses that connection only to *send*; it accepts
//! connections from peers and uses those only to *receive*. Two one-way connections per pair
//! means no tie-breaking between simultaneous dials and no shared state between a link's
//! reader and writer.
//!
//! # Authentication
//! Both ends present a certificate issued by the cluster CA (`CA_FILE` in the cluster
//! directory); rustls' WebPKI verifiers refuse anything else during the handshake. The node
//! certificate for node `N` names `nodeN` (DNS SAN). The dialer verifies the server's name
//! (`ServerName` `nodeN`), then sends a hello frame naming its own id; the acceptor checks
//! that the id matches the name in the client's certificate (so node 3 cannot pose as node 2
//! with its own valid certificate) and answers with its own hello.
//!
//! # Queues and reconnects
//! Each outbound link has a bounded queue of frames (default [`DEFAULT_QUEUE_FRAMES`]). When
//! it is full the **oldest** frame is dropped (Raft retransmits what matters, and the newest
//! heartbeat or append is worth more than the oldest). While a link is down, frames for it
//! are dropped at once and counted (the driver tells the node the peer is unreachable), so a
//! reconnect does not replay a burst of stale messages. A failed dial or a broken link is
//! retried after an exponential backoff: [`Backoff`] starts at 50 ms, doubles, is capped at
//! 2 s, has ±20 % jitter, and resets after a successful handshake.

use crate::rng::Rng;
use crate::runtime::Net;
use crate::tls::{self, ClientTls, Roots, ServerTls};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// ALPN protocol id of peer links (a KV peer never talks to an HTTP endpoint by mistake).
pub const ALPN_KV: &[u8] = b"tunstack-kv/1";
/// Largest frame accepted (snapshots travel as one frame).
pub const MAX_FRAME: usize = 64 << 20;
/// Default bound of an outbound queue, in frames.
pub const DEFAULT_QUEUE_FRAMES: usize = 4096;
const HELLO_MAGIC: &[u8; 4] = b"TSKV";
const HELLO_VERSION: u8 = 1;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// The certificate name of node `id` (its DNS SAN and common name).
pub fn node_name(id: u64) -> String {
    format!("node{id}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Framing

/// Append one frame (length prefix and bytes) to `out`.
pub fn encode_frame(frame: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
}

/// A frame longer than [`MAX_FRAME`] (or the decoder's limit) was announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameTooLarge(pub usize);

impl std::fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peer announced a {} byte frame (limit {MAX_FRAME})",
            self.0
        )
    }
}

/// Incremental frame decoder: push bytes as they arrive, pop whole frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(MAX_FRAME)
    }
}

impl FrameDecoder {
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. After an error the
    /// stream is unusable (the link must be closed).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameTooLarge> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.max {
            return Err(FrameTooLarge(len));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let frame = avail[4..4 + len].to_vec();
        self.start += 4 + len;
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(frame))
    }
}

fn hello(id: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(13);
    h.extend_from_slice(HELLO_MAGIC);
    h.push(HELLO_VERSION);
    h.extend_from_slice(&id.to_be_bytes());
    h
}

/// The node id a hello frame names, or why it is not one.
pub fn parse_hello(frame: &[u8]) -> Result<u64, String> {
    if frame.len() != 13 || &frame[..4] != HELLO_MAGIC {
        return Err("first frame is not a hello".into());
    }
    if frame[4] != HELLO_VERSION {
        return Err(format!("hello version {} (want {HELLO_VERSION})", frame[4]));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&frame[5..13]);
    Ok(u64::from_be_bytes(id))
}

// ---------------------------------------------------------------------------------------------
// Queue and backoff (pure)

/// A bounded FIFO of frames that drops the oldest frame when full.
#[derive(Debug)]
pub struct FrameQueue {
    frames: VecDeque<Vec<u8>>,
    cap: usize,
    /// Frames dropped because the queue was full.
    pub dropped: u64,
}

impl FrameQueue {
    pub fn new(cap: usize) -> FrameQueue {
        FrameQueue {
            frames: VecDeque::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }
    /// Queue `frame`; returns true if an older frame was dropped to make room.
    pub fn push(&mut self, frame: Vec<u8>) -> bool {
        let full = self.frames.len() >= self.cap;
        if full {
            self.frames.pop_front();
            self.dropped += 1;
        }
        self.frames.push_back(frame);
        full
    }
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        self.frames.pop_front()
    }
    pub fn len(&self) -> usize {
        self.frames.len()
    }
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
    pub fn clear(&mut self) -> usize {
        let n = self.frames.len();
        self.frames.clear();
        n
    }
}

/// Exponential reconnect backoff with a cap and jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    cur: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, cur: min }
    }
    /// The next wait: the current delay with ±20 % jitter from `rng`; the delay then
    /// doubles, up to `max`.
    pub fn next_delay(&mut self, rng: &mut Rng) -> Duration {
        let base = self.cur;
        self.cur = (self.cur * 2).min(self.max);
        let us = base.as_micros() as u64;
        let jitter = rng.gen_range(0, us / 5 * 2 + 1);
        Duration::from_micros(us - us / 5 + jitter)
    }
    pub fn reset(&mut self) {
        self.cur = self.min;
    }
}

// ---------------------------------------------------------------------------------------------
// Networks

/// What the transport needs from a network: TCP listen/accept/connect with timeouts.
pub trait Network: Send + Sync + 'static {
    type Stream: Read + Write + Send + 'static;
    type Listener: Send + 'static;
    fn listen(&self, port: u16) -> io::Result<Self::Listener>;
    fn local_addr(&self, l: &Self::Listener) -> io::Result<SocketAddrV4>;
    /// Wait up to `timeout` for a connection: `Ok(None)` when none came.
    fn accept(&self, l: &Self::Listener, timeout: Duration) -> io::Result<Option<Self::Stream>>;
    fn connect(&self, addr: SocketAddrV4, timeout: Duration) -> io::Result<Self::Stream>;
    fn try_clone(&self, s: &Self::Stream) -> io::Result<Self::Stream>;
    fn set_timeouts(
        &self,
        s: &Self::Stream,
        read: Option<Duration>,
        write: Option<Duration>,
    ) -> io::Result<()>;
    fn shutdown(&self, s: &Self::Stream);
}

/// The kernel's TCP (std::net), listening on `bind`.
#[derive(Clone, Debug)]
pub struct KernelNet {
    pub bind: Ipv4Addr,
}

impl Network for KernelNet {
    type Stream = std::net::TcpStream;
    type Listener = std::net::TcpListener;
    fn listen(&self, port: u16) -> io::Result<Self::Listener> {
        let l = std::net::TcpListener::bind((self.bind, port))?;
        l.set_nonblocking(true)?;
        Ok(l)
    }
    fn local_addr(&self, l: &Self::Listener) -> io::Result<SocketAddrV4> {
        match l.local_addr()? {
            SocketAddr::V4(a) => Ok(a),
            SocketAddr::V6(a) => Err(io::Error::other(format!("{a}: not IPv4"))),
        }
    }
    fn accept(&self, l: &Self::Listener, timeout: Duration) -> io::Result<Option<Self::Stream>> {
        let end = Instant::now() + timeout;
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false)?;
                    let _ = s.set_nodelay(true);
                    return Ok(Some(s));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= end {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
    }
    fn connect(&self, addr: SocketAddrV4, timeout: Duration) -> io::Result<Self::Stream> {
        let s = std::net::TcpStream::connect_timeout(&addr.into(), timeout)?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
    fn try_clone(&self, s: &Self::Stream) -> io::Result<Self::Stream> {
        s.try_clone()
    }
    fn set_timeouts(
        &self,
        s: &Self::Stream,
        read: Option<Duration>,
        write: Option<Duration>,
    ) -> io::Result<()> {
        s.set_read_timeout(read)?;
        s.set_write_timeout(write)
    }
    fn shutdown(&self, s: &Self::Stream) {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}

/// The stack's TCP (crate::runtime sockets).
#[derive(Clone)]
pub struct StackNet {
    pub net: Arc<Net>,
}

impl Network for StackNet {
    type Stream = crate::runtime::TcpStream;
    type Listener = crate::runtime::TcpListener;
    fn listen(&self, port: u16) -> io::Result<Self::Listener> {
        crate::runtime::TcpListener::bind(&self.net, port)
    }
    fn local_addr(&self, l: &Self::Listener) -> io::Result<SocketAddrV4> {
        Ok(l.local_addr())
    }
    fn accept(&self, l: &Self::Listener, timeout: Duration) -> io::Result<Option<Self::Stream>> {
        match l.accept_timeout(Some(timeout)) {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                Ok(Some(s))
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn connect(&self, addr: SocketAddrV4, timeout: Duration) -> io::Result<Self::Stream> {
        let s = crate::runtime::TcpStream::connect_timeout(&self.net, addr, timeout)?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
    fn try_clone(&self, s: &Self::Stream) -> io::Result<Self::Stream> {
        s.try_clone()
    }
    fn set_timeouts(
        &self,
        s: &Self::Stream,
        read: Option<Duration>,
        write: Option<Duration>,
    ) -> io::Result<()> {
        s.set_read_timeout(read)?;
        s.set_write_timeout(write)
    }
    fn shutdown(&self, s: &Self::Stream) {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// ---------------------------------------------------------------------------------------------
// TLS identity

/// A node's TLS identity: the cluster CA and its own certificate.
#[derive(Clone)]
pub struct NodeTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

/// File names inside a cluster directory.
pub const CA_FILE: &str = "ca.pem";
pub fn cert_file(id: u64) -> String {
    format!("node{id}.pem")
}
pub fn key_file(id: u64) -> String {
    format!("node{id}-key.pem")
}

impl NodeTls {
    /// Trust only `roots`, present `chain`/`key` both as server and as client.
    pub fn new(
        roots: RootCertStore,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> io::Result<NodeTls> {
        let mut s = ServerTls::new(chain.clone(), key.clone_key());
        s.client_ca = Some(roots.clone());
        s.alpn = vec![ALPN_KV.to_vec()];
        let mut c = ClientTls::new(Roots::Store(roots));
        c.client_cert = Some((chain, key));
        c.alpn = vec![ALPN_KV.to_vec()];
        Ok(NodeTls {
            server: s.build()?,
            client: c.build()?,
        })
    }

    /// Load node `id`'s identity from a cluster directory (`ca.pem`, `nodeID.pem`,
    /// `nodeID-key.pem`).
    pub fn load(dir: &Path, id: u64) -> io::Result<NodeTls> {
        let ctx =
            |p: &Path, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
        let ca = dir.join(CA_FILE);
        let roots = tls::load_roots(&ca).map_err(|e| ctx(&ca, e))?;
        let cp = dir.join(cert_file(id));
        let chain = tls::load_certs(&cp).map_err(|e| ctx(&cp, e))?;
        let kp = dir.join(key_file(id));
        let key = tls::load_private_key(&kp).map_err(|e| ctx(&kp, e))?;
        NodeTls::new(roots, chain, key)
    }
}

/// Create the cluster CA in `dir` if missing and issue node certificates for `nodes`
/// (id, address) that are missing. Returns the store (for issuing more later).
pub fn ensure_cluster_certs(dir: &Path, nodes: &[(u64, Ipv4Addr)]) -> io::Result<tls::CertStore> {
    let store = tls::CertStore::load_or_create(dir, Ipv4Addr::LOCALHOST.into(), "kv-cluster")?;
    for (id, ip) in nodes {
        let cp = dir.join(cert_file(*id));
        let kp = dir.join(key_file(*id));
        if cp.exists() && kp.exists() && !store.created_ca {
            continue;
        }
        let c = store.issue_node_cert((*ip).into(), &node_name(*id))?;
        c.write(&cp, &kp)?;
    }
    Ok(store)
}

/// The DNS names in the peer's leaf certificate.
fn peer_dns_names(conn: &Connection) -> Vec<String> {
    match conn.peer_certificates().and_then(|c| c.first()) {
        Some(der) => tls::describe_cert(der)
            .1
            .into_iter()
            .filter_map(|s| s.strip_prefix("DNS:").map(str::to_string))
            .collect(),
        None => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// A TLS stream driven by hand (handshake and the inbound side)

struct TlsIo<S> {
    sock: S,
    conn: Connection,
    dec: FrameDecoder,
    buf: Vec<u8>,
}

impl<S: Read + Write> TlsIo<S> {
    fn new(sock: S, mut conn: Connection) -> TlsIo<S> {
        conn.set_buffer_limit(None);
        TlsIo {
            sock,
            conn,
            dec: FrameDecoder::default(),
            buf: vec![0u8; 16 * 1024],
        }
    }

    fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            self.conn.complete_io(&mut self.sock)?;
        }
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(frame.len() + 4);
        encode_frame(frame, &mut out);
        self.conn.writer().write_all(&out)?;
        self.flush()
    }

    /// Block (subject to the socket's read timeout) until a whole frame arrived.
    fn read_frame(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(f) = self
                .dec
                .next_frame()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            {
                return Ok(f);
            }
            self.fill()?;
        }
    }

    /// Move plaintext rustls already decrypted into the decoder; true if there was some.
    /// (Records can arrive together with the end of the handshake, so decrypted data may be
    /// waiting before the next socket read.) `UnexpectedEof` once the peer closed.
    fn drain_plaintext(&mut self) -> io::Result<bool> {
        let mut got = false;
        loop {
            match self.conn.reader().read(&mut self.buf) {
                Ok(0) => {
                    return if got {
                        Ok(true)
                    } else {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    }
                }
                Ok(k) => {
                    self.dec.push(&self.buf[..k]);
                    got = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                Err(e) => return Err(e),
            }
        }
    }

    /// Move more plaintext into the decoder: what is already decrypted, else one batch of
    /// TLS records read from the socket (subject to its read timeout).
    fn fill(&mut self) -> io::Result<()> {
        if self.drain_plaintext()? {
            return Ok(());
        }
        let n = self.conn.read_tls(&mut self.sock)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let _ = self.drain_plaintext()?;
        self.flush()
    }
}

// ---------------------------------------------------------------------------------------------
// The transport

/// What the transport reports to its owner.
#[derive(Debug)]
pub enum TransportEvent {
    /// A frame from an authenticated peer.
    Frame { from: u64, frame: Vec<u8> },
    /// The outbound link to `peer` completed its handshake.
    LinkUp { peer: u64 },
    /// The outbound link to `peer` broke or could not be made.
    LinkDown { peer: u64 },
}

pub type EventSink = Arc<dyn Fn(TransportEvent) + Send + Sync>;

#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub id: u64,
    /// Port to listen on (0: any).
    pub port: u16,
    pub queue_frames: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
}

impl TransportConfig {
    pub fn new(id: u64, port: u16) -> TransportConfig {
        TransportConfig {
            id,
            port,
            queue_frames: DEFAULT_QUEUE_FRAMES,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Counters of one outbound link (see [`Transport::link_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    pub peer: u64,
    pub addr: String,
    pub connected: bool,
    pub connects: u64,
    pub connect_failures: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    /// Dropped because the queue was full (oldest first).
    pub dropped_full: u64,
    /// Dropped because the link was down.
    pub dropped_down: u64,
    pub queued: usize,
    pub last_error: Option<String>,
}

/// Transport-wide counters.
#[derive(Debug, Default)]
pub struct TransportCounters {
    pub inbound_accepted: AtomicU64,
    /// Inbound connections refused: TLS handshake failed (no or foreign certificate) or the
    /// hello did not match the certificate.
    pub inbound_refused: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_received: AtomicU64,
}

struct LinkState {
    addr: SocketAddrV4,
    queue: FrameQueue,
    connected: bool,
    /// Raw bytes read from the socket, not yet fed to TLS.
    inbox: Vec<u8>,
    reader_done: bool,
    gen: u64,
    stats: LinkStats,
}

struct Link {
    id: u64,
    st: Mutex<LinkState>,
    cv: Condvar,
}

struct Shared<N: Network> {
    net: N,
    cfg: TransportConfig,
    tls: NodeTls,
    sink: EventSink,
    stop: AtomicBool,
    links: Mutex<BTreeMap<u64, Arc<Link>>>,
    counters: TransportCounters,
    last_refusal: Mutex<Option<String>>,
}

/// Peer links of one node. Dropping it (or [`Transport::stop`]) stops its threads (within
/// about 200 ms; a dial in progress finishes its connect timeout first).
pub struct Transport<N: Network> {
    shared: Arc<Shared<N>>,
    local: SocketAddrV4,
}

impl<N: Network> Transport<N> {
    /// Listen on `cfg.port` and start accepting peers; frames and link events go to `sink`
    /// (called on transport threads: keep it short, e.g. a channel send).
    pub fn start(net: N, cfg: TransportConfig, tls: NodeTls, sink: EventSink) -> io::Result<Self> {
        let listener = net.listen(cfg.port)?;
        let local = net.local_addr(&listener)?;
        let shared = Arc::new(Shared {
            net,
            cfg,
            tls,
            sink,
            stop: AtomicBool::new(false),
            links: Mutex::new(BTreeMap::new()),
            counters: TransportCounters::default(),
            last_refusal: Mutex::new(None),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("kv-accept".into())
            .spawn(move || accept_loop(s, listener))?;
        Ok(Transport { shared, local })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    pub fn id(&self) -> u64 {
        self.shared.cfg.id
    }

    /// Dial `id` at `addr` (and keep redialling). Changing a known peer's address takes
    /// effect at the next reconnect.
    pub fn add_peer(&self, id: u64, addr: SocketAddrV4) {
        if id == self.shared.cfg.id {
            return;
        }
        let mut links = lock(&self.shared.links);
        if let Some(l) = links.get(&id) {
            lock(&l.st).addr = addr;
            return;
        }
        let link = Arc::new(Link {
            id,
            st: Mutex::new(LinkState {
                addr,
                queue: FrameQueue::new(self.shared.cfg.queue_frames),
                connected: false,
                inbox: Vec::new(),
                reader_done: false,
                gen: 0,
                stats: LinkStats {
                    peer: id,
                    addr: addr.to_string(),
                    ..LinkStats::default()
                },
            }),
            cv: Condvar::new(),
        });
        links.insert(id, link.clone());
        let s = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("kv-link-{id}"))
            .spawn(move || dial_loop(s, link));
        if let Err(e) = spawned {
            log::warn!("kv transport: cannot start the link thread to {id}: {e}");
            links.remove(&id);
        }
    }

    /// Stop dialling `id`.
    pub fn remove_peer(&self, id: u64) {
        if let Some(l) = lock(&self.shared.links).remove(&id) {
            lock(&l.st).gen += 1;
            l.cv.notify_all();
        }
    }

    /// Queue `frame` for `to`. Returns false if it was dropped because the link is down or
    /// the peer is unknown (the caller may tell the node the peer is unreachable).
    pub fn send(&self, to: u64, frame: Vec<u8>) -> bool {
        let Some(link) = lock(&self.shared.links).get(&to).cloned() else {
            return false;
        };
        let mut st = lock(&link.st);
        if !st.connected {
            st.stats.dropped_down += 1;
            return false;
        }
        if st.queue.push(frame) {
            st.stats.dropped_full += 1;
        }
        drop(st);
        link.cv.notify_all();
        true
    }

    /// Is the outbound link to `id` up?
    pub fn is_connected(&self, id: u64) -> bool {
        lock(&self.shared.links)
            .get(&id)
            .is_some_and(|l| lock(&l.st).connected)
    }

    pub fn link_stats(&self) -> Vec<LinkStats> {
        lock(&self.shared.links)
            .values()
            .map(|l| {
                let st = lock(&l.st);
                let mut s = st.stats.clone();
                s.connected = st.connected;
                s.queued = st.queue.len();
                s
            })
            .collect()
    }

    pub fn counters(&self) -> &TransportCounters {
        &self.shared.counters
    }

    /// Why the last inbound connection was refused.
    pub fn last_refusal(&self) -> Option<String> {
        lock(&self.shared.last_refusal).clone()
    }

    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for l in lock(&self.shared.links).values() {
            l.cv.notify_all();
        }
    }
}

impl<N: Network> Drop for Transport<N> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop<N: Network>(shared: Arc<Shared<N>>, listener: N::Listener) {
    while !shared.stop.load(Ordering::SeqCst) {
        match shared.net.accept(&listener, POLL) {
            Ok(Some(sock)) => {
                let s = shared.clone();
                let r = std::thread::Builder::new()
                    .name("kv-inbound".into())
                    .spawn(move || inbound(s, sock));
                if let Err(e) = r {
                    log::warn!("kv transport: cannot start an inbound thread: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => {
                log::debug!("kv transport: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn refuse<N: Network>(shared: &Shared<N>, why: String) {
    log::warn!("kv transport: refused an inbound peer: {why}");
    shared
        .counters
        .inbound_refused
        .fetch_add(1, Ordering::Relaxed);
    *lock(&shared.last_refusal) = Some(why);
}

/// One inbound (receive-only) connection: handshake, check the hello against the
/// certificate, answer with our hello, then deliver frames until it breaks.
fn inbound<N: Network>(shared: Arc<Shared<N>>, sock: N::Stream) {
    let net = &shared.net;
    let _ = net.set_timeouts(&sock, Some(HANDSHAKE_TIMEOUT), Some(IO_TIMEOUT));
    let conn = match rustls::ServerConnection::new(shared.tls.server.clone()) {
        Ok(c) => Connection::Server(c),
        Err(e) => return refuse(&shared, format!("TLS setup: {e}")),
    };
    let mut io = TlsIo::new(sock, conn);
    if let Err(e) = io.handshake() {
        return refuse(&shared, format!("TLS handshake: {e}"));
    }
    let from = match io
        .read_frame()
        .map_err(|e| e.to_string())
        .and_then(|f| parse_hello(&f))
    {
        Ok(id) => id,
        Err(e) => return refuse(&shared, format!("hello: {e}")),
    };
    let names = peer_dns_names(&io.conn);
    if !names.iter().any(|n| *n == node_name(from)) {
        return refuse(
            &shared,
            format!(
                "hello names node {from} but the certificate names {}",
                names.join(", ")
            ),
        );
    }
    if let Err(e) = io.write_frame(&hello(shared.cfg.id)) {
        return refuse(&shared, format!("hello reply: {e}"));
    }
    shared
        .counters
        .inbound_accepted
        .fetch_add(1, Ordering::Relaxed);
    log::info!("kv transport: node {from} connected");
    let _ = net.set_timeouts(&io.sock, Some(POLL), Some(IO_TIMEOUT));
    while !shared.stop.load(Ordering::SeqCst) {
        loop {
            match io.dec.next_frame() {
                Ok(Some(frame)) => {
                    let c = &shared.counters;
                    c.frames_received.fetch_add(1, Ordering::Relaxed);
                    c.bytes_received
                        .fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
                    (shared.sink)(TransportEvent::Frame { from, frame });
                }
                Ok(None) => break,
                Err(e) => {
                    log::warn!("kv transport: node {from}: {e}");
                    net.shutdown(&io.sock);
                    return;
                }
            }
        }
        match io.fill() {
            Ok(()) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                log::debug!("kv transport: inbound link from {from} closed: {e}");
                break;
            }
        }
    }
    net.shutdown(&io.sock);
}

/// Dial, handshake, exchange hellos. Returns the connection ready for frames.
fn dial<N: Network>(
    shared: &Shared<N>,
    peer: u64,
    addr: SocketAddrV4,
) -> io::Result<TlsIo<N::Stream>> {
    let net = &shared.net;
    let sock = net.connect(addr, shared.cfg.connect_timeout)?;
    net.set_timeouts(&sock, Some(HANDSHAKE_TIMEOUT), Some(IO_TIMEOUT))?;
    let name = ServerName::try_from(node_name(peer))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = ClientConnection::new(shared.tls.client.clone(), name)
        .map_err(|e| io::Error::other(format!("TLS setup: {e}")))?;
    let mut io = TlsIo::new(sock, Connection::Client(conn));
    io.handshake()?;
    io.write_frame(&hello(shared.cfg.id))?;
    let reply = io.read_frame()?;
    let id = parse_hello(&reply).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if id != peer {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("dialled node {peer} at {addr} but it says it is node {id}"),
        ));
    }
    Ok(io)
}

fn dial_loop<N: Network>(shared: Arc<Shared<N>>, link: Arc<Link>) {
    let mut backoff = Backoff::new(shared.cfg.backoff_min, shared.cfg.backoff_max);
    let mut rng = Rng::from_os();
    let my_gen = lock(&link.st).gen;
    let alive =
        |shared: &Shared<N>| !shared.stop.load(Ordering::SeqCst) && lock(&link.st).gen == my_gen;
    while alive(&shared) {
        let addr = lock(&link.st).addr;
        match dial(&shared, link.id, addr) {
            Ok(io) => {
                backoff.reset();
                {
                    let mut st = lock(&link.st);
                    st.connected = true;
                    st.reader_done = false;
                    st.inbox.clear();
                    st.stats.connects += 1;
                    st.stats.addr = addr.to_string();
                }
                (shared.sink)(TransportEvent::LinkUp { peer: link.id });
                let e = run_outbound(&shared, &link, io, my_gen);
                log::info!("kv transport: link to node {} down: {e}", link.id);
                let mut st = lock(&link.st);
                st.connected = false;
                st.queue.clear();
                st.stats.last_error = Some(e.to_string());
            }
            Err(e) => {
                log::debug!("kv transport: dial node {} at {addr}: {e}", link.id);
                let mut st = lock(&link.st);
                st.stats.connect_failures += 1;
                st.stats.last_error = Some(e.to_string());
            }
        }
        if !alive(&shared) {
            break;
        }
        (shared.sink)(TransportEvent::LinkDown { peer: link.id });
        let wait = backoff.next_delay(&mut rng);
        let st = lock(&link.st);
        let _ = link.cv.wait_timeout(st, wait);
    }
}

/// Drive an established outbound link: a helper thread reads raw bytes from a clone of the
/// socket into `inbox` (session tickets, alerts, EOF); this thread owns the TLS state and
/// writes queued frames. Returns why the link ended.
fn run_outbound<N: Network>(
    shared: &Arc<Shared<N>>,
    link: &Arc<Link>,
    mut io: TlsIo<N::Stream>,
    my_gen: u64,
) -> io::Error {
    let net = &shared.net;
    let reader_sock = match net.try_clone(&io.sock) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let _ = net.set_timeouts(&io.sock, Some(POLL), Some(IO_TIMEOUT));
    let conn_gen = Arc::new(AtomicBool::new(true));
    {
        let link = link.clone();
        let live = conn_gen.clone();
        let shared = shared.clone();
        let r = std::thread::Builder::new()
            .name(format!("kv-link-rd-{}", link.id))
            .spawn(move || {
                let mut sock = reader_sock;
                let mut buf = vec![0u8; 16 * 1024];
                while live.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst) {
                    match sock.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            lock(&link.st).inbox.extend_from_slice(&buf[..n]);
                            link.cv.notify_all();
                        }
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => break,
                    }
                }
                lock(&link.st).reader_done = true;
                link.cv.notify_all();
            });
        if let Err(e) = r {
            return e;
        }
    }
    let end = |e: io::Error| {
        conn_gen.store(false, Ordering::SeqCst);
        e
    };
    let mut out = Vec::new();
    loop {
        let (frames, inbox, reader_done) = {
            let mut st = lock(&link.st);
            loop {
                if shared.stop.load(Ordering::SeqCst) || st.gen != my_gen {
                    drop(st);
                    net.shutdown(&io.sock);
                    return end(io::Error::other("stopped"));
                }
                if !st.queue.is_empty() || !st.inbox.is_empty() || st.reader_done {
                    break;
                }
                st = link
                    .cv
                    .wait_timeout(st, POLL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            let mut frames = Vec::with_capacity(st.queue.len());
            while let Some(f) = st.queue.pop() {
                frames.push(f);
            }
            (frames, std::mem::take(&mut st.inbox), st.reader_done)
        };
        if !inbox.is_empty() {
            let mut rd = &inbox[..];
            while !rd.is_empty() {
                if let Err(e) = io.conn.read_tls(&mut rd) {
                    net.shutdown(&io.sock);
                    return end(e);
                }
                match io.conn.process_new_packets() {
                    Ok(state) => {
                        if state.peer_has_closed() {
                            net.shutdown(&io.sock);
                            return end(io::Error::other("peer closed the link"));
                        }
                        // The acceptor sends nothing after its hello; discard plaintext.
                        let mut sink = [0u8; 4096];
                        while let Ok(n) = io.conn.reader().read(&mut sink) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        net.shutdown(&io.sock);
                        return end(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
            }
        }
        if reader_done && frames.is_empty() {
            net.shutdown(&io.sock);
            return end(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "peer closed the connection",
            ));
        }
        let mut bytes = 0u64;
        out.clear();
        for f in &frames {
            encode_frame(f, &mut out);
            bytes += f.len() as u64 + 4;
        }
        if !out.is_empty() {
            if let Err(e) = io.conn.writer().write_all(&out) {
                return end(e);
            }
        }
        if let Err(e) = io.flush() {
            net.shutdown(&io.sock);
            return end(e);
        }
        if !frames.is_empty() {
            let mut st = lock(&link.st);
            st.stats.frames_sent += frames.len() as u64;
            st.stats.bytes_sent += bytes;
        }
        if reader_done {
            net.shutdown(&io.sock);
            return end(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "peer closed the connection",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn frames_split_anywhere_decode_whole() {
        let frames: Vec<Vec<u8>> = vec![vec![], vec![1], vec![7; 300], (0..=255).collect()];
        let mut wire = Vec::new();
        for f in &frames {
            encode_frame(f, &mut wire);
        }
        for chunk in [1usize, 3, 5, 64, wire.len()] {
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                d.push(c);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "chunk size {chunk}");
        }
    }

    #[test]
    fn frame_over_the_limit_is_an_error_not_an_allocation() {
        let mut d = FrameDecoder::new(1000);
        d.push(&(1001u32).to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameTooLarge(1001)));
        let mut d = FrameDecoder::default();
        d.push(&u32::MAX.to_be_bytes());
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        assert_eq!(parse_hello(&hello(42)), Ok(42));
        assert!(parse_hello(b"GET / HTTP/1.1").is_err());
        let mut h = hello(1);
        h[4] = 9;
        assert!(parse_hello(&h).unwrap_err().contains("version"));
        assert!(parse_hello(&[]).is_err());
    }

    #[test]
    fn full_queue_drops_the_oldest_frame() {
        let mut q = FrameQueue::new(3);
        for i in 0..5u8 {
            q.push(vec![i]);
        }
        assert_eq!(q.dropped, 2);
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), Some(vec![2]));
        assert_eq!(q.pop(), Some(vec![3]));
        assert_eq!(q.pop(), Some(vec![4]));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut rng = Rng::new(1);
        let mut prev_base = 0.0;
        for i in 0..10 {
            let d = b.next_delay(&mut rng).as_secs_f64();
            let base = (0.05 * 2f64.powi(i)).min(2.0);
            assert!(
                d >= base * 0.8 - 1e-6 && d <= base * 1.2 + 1e-6,
                "{i}: {d} vs {base}"
            );
            assert!(base >= prev_base);
            prev_base = base;
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(60));
    }

    // ---- live links over 127.0.0.1 (kernel TCP) ----

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tunstack-kvt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    type Rx = mpsc::Receiver<TransportEvent>;

    fn start_node(dir: &Path, id: u64) -> (Transport<KernelNet>, Rx) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let sink: EventSink = Arc::new(move |e| {
            let _ = lock(&tx).send(e);
        });
        let tls = NodeTls::load(dir, id).unwrap();
        let t = Transport::start(
            KernelNet {
                bind: Ipv4Addr::LOCALHOST,
            },
            TransportConfig::new(id, 0),
            tls,
            sink,
        )
        .unwrap();
        (t, rx)
    }

    fn wait_frame(rx: &Rx, want_from: u64, timeout: Duration) -> Option<Vec<u8>> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(TransportEvent::Frame { from, frame }) if from == want_from => {
                    return Some(frame)
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Send `frame` to `to` until the link is up and it went out.
    fn send_when_up(t: &Transport<KernelNet>, to: u64, frame: &[u8]) {
        let end = Instant::now() + Duration::from_secs(10);
        while !t.send(to, frame.to_vec()) {
            assert!(
                Instant::now() < end,
                "link to {to} never came up: {:?}",
                t.link_stats()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn frames_cross_a_mutual_tls_link_in_order() {
        let dir = tmpdir("order");
        let lo = Ipv4Addr::LOCALHOST;
        ensure_cluster_certs(&dir, &[(1, lo), (2, lo)]).unwrap();
        let (a, _arx) = start_node(&dir, 1);
        let (b, brx) = start_node(&dir, 2);
        a.add_peer(2, b.local_addr());
        send_when_up(&a, 2, b"first");
        for i in 0..200u32 {
            assert!(a.send(2, i.to_be_bytes().to_vec()));
        }
        let big = vec![0xab; 300_000];
        assert!(a.send(2, big.clone()));
        assert_eq!(
            wait_frame(&brx, 1, Duration::from_secs(5)).unwrap(),
            b"first"
        );
        for i in 0..200u32 {
            assert_eq!(
                wait_frame(&brx, 1, Duration::from_secs(5)).unwrap(),
                i.to_be_bytes()
            );
        }
        assert_eq!(wait_frame(&brx, 1, Duration::from_secs(5)).unwrap(), big);
        assert_eq!(b.counters().inbound_refused.load(Ordering::Relaxed), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn peer_with_a_certificate_from_another_ca_is_refused() {
        let dir = tmpdir("foreign-ok");
        let evil = tmpdir("foreign-evil");
        let lo = Ipv4Addr::LOCALHOST;
        ensure_cluster_certs(&dir, &[(1, lo), (2, lo)]).unwrap();
        // Another CA issues a certificate that names node 2 and trusts the real CA's server.
        ensure_cluster_certs(&evil, &[(2, lo)]).unwrap();
        std::fs::copy(dir.join(CA_FILE), evil.join(CA_FILE)).unwrap();
        let (a, arx) = start_node(&dir, 1);
        let (impostor, _irx) = start_node(&evil, 2);
        impostor.add_peer(1, a.local_addr());
        let end = Instant::now() + Duration::from_secs(5);
        while a.counters().inbound_refused.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < end, "node 1 never refused the impostor");
            let _ = impostor.send(1, b"let me in".to_vec());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!impostor.is_connected(1));
        assert!(wait_frame(&arx, 2, Duration::from_millis(300)).is_none());
        assert!(a.last_refusal().unwrap().contains("TLS handshake"));
        assert_eq!(a.counters().inbound_accepted.load(Ordering::Relaxed), 0);
        // And the other direction: node 1 dialling the impostor refuses its server certificate.
        a.add_peer(2, impostor.local_addr());
        std::thread::sleep(Duration::from_millis(500));
        assert!(!a.is_connected(2));
        let st = a.link_stats();
        assert!(st[0].connect_failures >= 1, "{st:?}");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&evil);
    }

    #[test]
    fn hello_that_does_not_match_the_certificate_is_refused() {
        let dir = tmpdir("hello");
        let lo = Ipv4Addr::LOCALHOST;
        ensure_cluster_certs(&dir, &[(1, lo), (2, lo), (3, lo)]).unwrap();
        let (a, arx) = start_node(&dir, 1);
        // Node 3's valid certificate, but the transport says it is node 2.
        let (tx, _rx) = mpsc::channel::<TransportEvent>();
        let tx = Mutex::new(tx);
        let liar = Transport::start(
            KernelNet { bind: lo },
            TransportConfig::new(2, 0),
            NodeTls::load(&dir, 3).unwrap(),
            Arc::new(move |e| {
                let _ = lock(&tx).send(e);
            }),
        )
        .unwrap();
        liar.add_peer(1, a.local_addr());
        let end = Instant::now() + Duration::from_secs(5);
        while a.counters().inbound_refused.load(Ordering::Relaxed) == 0 {
            assert!(
                Instant::now() < end,
                "node 1 accepted a hello naming the wrong node"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(a
            .last_refusal()
            .unwrap()
            .contains("certificate names node3"));
        assert!(wait_frame(&arx, 2, Duration::from_millis(300)).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn link_reconnects_after_the_peer_restarts() {
        let dir = tmpdir("reconnect");
        let lo = Ipv4Addr::LOCALHOST;
        ensure_cluster_certs(&dir, &[(1, lo), (2, lo)]).unwrap();
        let (a, _arx) = start_node(&dir, 1);
        let (b, brx) = start_node(&dir, 2);
        let port = b.local_addr().port();
        a.add_peer(2, b.local_addr());
        send_when_up(&a, 2, b"before");
        assert_eq!(
            wait_frame(&brx, 1, Duration::from_secs(5)).unwrap(),
            b"before"
        );
        b.stop();
        drop(b);
        drop(brx);
        // The link notices (sends fail) ...
        let end = Instant::now() + Duration::from_secs(10);
        while a.is_connected(2) {
            assert!(
                Instant::now() < end,
                "link never noticed the peer went away"
            );
            let _ = a.send(2, b"into the void".to_vec());
            std::thread::sleep(Duration::from_millis(50));
        }
        // ... and comes back when a node 2 listens on the same port again.
        std::thread::sleep(Duration::from_millis(300));
        let (tx, brx2) = mpsc::channel();
        let tx = Mutex::new(tx);
        let b2 = Transport::start(
            KernelNet { bind: lo },
            TransportConfig::new(2, port),
            NodeTls::load(&dir, 2).unwrap(),
            Arc::new(move |e| {
                let _ = lock(&tx).send(e);
            }),
        )
        .unwrap();
        send_when_up(&a, 2, b"after");
        assert_eq!(
            wait_frame(&brx2, 1, Duration::from_secs(5)).unwrap(),
            b"after"
        );
        let st = &a.link_stats()[0];
        assert!(st.connects >= 2, "{st:?}");
        drop(b2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
