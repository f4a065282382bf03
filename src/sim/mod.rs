//! The deterministic simulator: virtual time, several stacks on links with
//! latency, bandwidth, loss, duplication, reordering, corruption and
//! partitions, all from one seed.
//!
//! A [`Sim`] owns nodes (each a [`Stack`] on a simulated link endpoint) and
//! one-directional links between them. Time is virtual: [`Sim::step`] jumps
//! to the next thing that happens — a packet arriving, a stack's timer, a
//! scheduled action, or a node the application just gave work to — runs
//! it, and polls every node that has something to do. Application logic
//! runs between steps: the test calls `sim.stack_mut(node).tcp_send(...)`
//! and friends directly, usually from the closure given to
//! [`Sim::run_until_cond`].
//!
//! Every random choice (each stack's ISNs and ports, each link's faults)
//! comes from generators forked from the one seed given to [`Sim::new`],
//! and every tie is broken by a sequence number, so the same seed and the
//! same application logic give the same run packet for packet
//! ([`Sim::trace_hash`]).

mod link;
mod seeds;

pub use link::{LinkConfig, LinkStats};
pub use seeds::{for_each_seed, nth_seed, parse_seed, seed_count, seed_from_env};

use crate::phy::pcap::PcapWriter;
use crate::phy::{Device, Lent};
use crate::rng::Rng;
use crate::stack::{Stack, StackConfig};
use crate::time::{Duration, Instant};
use link::{Fate, Link};
use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::hash::Hasher;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

/// Names a node of a [`Sim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

/// Packets waiting at a node's endpoint beyond this many are dropped (the
/// node is not polling fast enough; never happens with sane stacks).
const ENDPOINT_RX_LIMIT: usize = 100_000;

/// Polls of one node at one instant before the simulator declares a livelock.
const LIVELOCK_POLLS: u32 = 100_000;

/// A node's side of its links: what the stack sends is collected and routed
/// by the simulator after each poll; what arrives waits in `rx`.
#[derive(Debug, Default)]
pub struct Endpoint {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    /// Payloads on loan ([`Device::send_lent`]), with the index in `tx` of
    /// the headers they follow: joined to them, and the loans ended, when
    /// the simulator routes the poll's output, as the runtime writes a
    /// pass's output after the stack lock is released.
    tx_lent: Vec<(usize, Lent)>,
    mtu: usize,
    spare: Vec<Vec<u8>>,
}

impl Device for Endpoint {
    fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.rx.pop_front() {
            Some(p) => {
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                if self.spare.len() < 1024 {
                    self.spare.push(p);
                }
                Ok(Some(n))
            }
            None => Ok(None),
        }
    }

    fn send(&mut self, _now: Instant, packet: &[u8]) -> io::Result<bool> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(packet);
        self.tx.push(b);
        Ok(true)
    }

    /// Received packets handed over whole, so that a stack may keep them
    /// (every one: see [`Sim::add_node`]).
    fn take_rx(&mut self, _now: Instant) -> Option<(Vec<u8>, bool)> {
        Some((self.rx.pop_front()?, false))
    }

    fn recycle_rx(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 1024 {
            self.spare.push(buf);
        }
    }

    /// Every payload on loan, so that every simulated transfer exercises
    /// the lending path (the runtime lends only large ones).
    fn lend_min(&self) -> Option<usize> {
        Some(1)
    }

    fn send_lent(&mut self, now: Instant, head: &[u8], payload: Lent) -> io::Result<bool> {
        self.send(now, head)?;
        self.tx_lent.push((self.tx.len() - 1, payload));
        Ok(true)
    }

    fn mtu(&self) -> usize {
        self.mtu
    }
}

impl Endpoint {
    /// The packets sent since the last call, each whole (loans ended).
    fn take_tx(&mut self) -> Vec<Vec<u8>> {
        for (i, payload) in self.tx_lent.drain(..) {
            self.tx[i].extend_from_slice(payload.bytes());
        }
        std::mem::take(&mut self.tx)
    }
}

/// The endpoint, optionally traced to a pcap file.
enum NodeDevice {
    Plain(Endpoint),
    Traced(PcapWriter<Endpoint>),
}

impl NodeDevice {
    fn endpoint(&mut self) -> &mut Endpoint {
        match self {
            NodeDevice::Plain(e) => e,
            NodeDevice::Traced(p) => &mut p.inner,
        }
    }

    fn endpoint_ref(&self) -> &Endpoint {
        match self {
            NodeDevice::Plain(e) => e,
            NodeDevice::Traced(p) => &p.inner,
        }
    }

    fn as_device(&mut self) -> &mut dyn Device {
        match self {
            NodeDevice::Plain(e) => e,
            NodeDevice::Traced(p) => p,
        }
    }
}

struct Node {
    config: StackConfig,
    /// `None` while crashed, and always for raw nodes.
    stack: Option<Stack>,
    /// A raw node: no stack; the test sends and receives whole packets
    /// ([`Sim::raw_send`], [`Sim::raw_recv`]).
    raw: bool,
    dev: NodeDevice,
    deadline: Option<Instant>,
    /// Polls at the current instant (livelock detection).
    polls_now: u32,
    polls: u64,
}

/// Something scheduled in virtual time.
enum Event {
    /// A packet arrives at `to` over the link from `from`.
    Deliver {
        from: NodeId,
        to: NodeId,
        packet: Vec<u8>,
    },
    /// A scheduled action (partition, heal, crash, ...).
    Call(Box<dyn FnOnce(&mut Sim)>),
}

struct Scheduled {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the earliest (then first scheduled) is the heap's top.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Simulator-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Packets a stack sent to an address no node has, or with no link to it.
    pub unroutable: u64,
    /// Packets not IPv4 (too short or wrong version) at routing time.
    pub malformed: u64,
    /// Arrivals dropped because the receiver's endpoint queue was full.
    pub endpoint_overflows: u64,
    pub steps: u64,
    pub polls: u64,
}

/// A test's look at every packet entering a link: `(now, from, to,
/// packet)`; returning true drops it (targeted loss, or capture of packets
/// to replay later with [`Sim::raw_send`]).
pub type PacketFilter = Box<dyn FnMut(Instant, NodeId, NodeId, &[u8]) -> bool>;

/// A network of stacks in virtual time. See the module documentation.
pub struct Sim {
    filter: Option<PacketFilter>,
    seed: u64,
    rng: Rng,
    now: Instant,
    nodes: Vec<Node>,
    by_addr: HashMap<Ipv4Addr, NodeId>,
    links: HashMap<(NodeId, NodeId), Link>,
    /// Cut node pairs, stored (smaller, larger).
    cuts: BTreeSet<(NodeId, NodeId)>,
    events: BinaryHeap<Scheduled>,
    seq: u64,
    trace: siphasher::sip::SipHasher13,
    trace_packets: u64,
    stats: SimStats,
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl Sim {
    /// An empty network at virtual time zero; everything random derives from `seed`.
    pub fn new(seed: u64) -> Sim {
        Sim {
            filter: None,
            seed,
            rng: Rng::new(seed),
            now: Instant::ZERO,
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            links: HashMap::new(),
            cuts: BTreeSet::new(),
            events: BinaryHeap::new(),
            seq: 0,
            trace: siphasher::sip::SipHasher13::new(),
            trace_packets: 0,
            stats: SimStats::default(),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn stats(&self) -> SimStats {
        self.stats
    }

    // ----- building the network ------------------------------------------

    /// Add a node running a stack with `config` (its RNG forked from the seed).
    /// Panics if another node already has that address (a test bug).
    ///
    /// Every received packet is offered to its socket to keep
    /// (`rx_keep_min` 1, where the runtime keeps only large ones), so that
    /// every simulated transfer exercises that path.
    pub fn add_node(&mut self, mut config: StackConfig) -> NodeId {
        config.rx_keep_min = 1;
        let id = NodeId(self.nodes.len());
        assert!(
            self.by_addr.insert(config.addr, id).is_none(),
            "two simulated nodes with address {}",
            config.addr
        );
        let stack = Stack::new(config.clone(), self.rng.fork());
        let mtu = stack.config().mtu;
        self.nodes.push(Node {
            config,
            stack: Some(stack),
            dev: NodeDevice::Plain(Endpoint {
                mtu,
                ..Endpoint::default()
            }),
            raw: false,
            deadline: None,
            polls_now: 0,
            polls: 0,
        });
        id
    }

    /// Add a raw node at `addr`: no stack, the test scripts its packets with
    /// [`Sim::raw_send`] and reads what arrives with [`Sim::raw_recv`]
    /// (a packet-script peer, or a source of malformed traffic).
    pub fn add_raw_node(&mut self, addr: Ipv4Addr, mtu: usize) -> NodeId {
        let id = NodeId(self.nodes.len());
        assert!(
            self.by_addr.insert(addr, id).is_none(),
            "two simulated nodes with address {addr}"
        );
        self.nodes.push(Node {
            config: StackConfig::new(addr),
            stack: None,
            raw: true,
            dev: NodeDevice::Plain(Endpoint {
                mtu,
                ..Endpoint::default()
            }),
            deadline: None,
            polls_now: 0,
            polls: 0,
        });
        id
    }

    /// Send `packet` from `node` now, routed by its IPv4 destination like
    /// anything a stack sends (any node may inject, raw or not).
    pub fn raw_send(&mut self, node: NodeId, packet: &[u8]) {
        self.route(node, packet.to_vec());
    }

    /// The next packet that arrived at raw node `node`.
    pub fn raw_recv(&mut self, node: NodeId) -> Option<Vec<u8>> {
        let n = &mut self.nodes[node.0];
        if !n.raw {
            return None;
        }
        n.dev.endpoint().rx.pop_front()
    }

    /// Add a node with the default stack configuration at `addr`.
    pub fn add_host(&mut self, addr: Ipv4Addr) -> NodeId {
        self.add_node(StackConfig::new(addr))
    }

    /// Connect `a` and `b` both ways with `config` (each direction with its
    /// own queue and its own fault generator). Replaces an existing link.
    pub fn link(&mut self, a: NodeId, b: NodeId, config: LinkConfig) {
        self.link_oneway(a, b, config);
        self.link_oneway(b, a, config);
    }

    /// Connect `from` → `to` only (asymmetric links: configure each way).
    pub fn link_oneway(&mut self, from: NodeId, to: NodeId, config: LinkConfig) {
        let rng = self.rng.fork();
        self.links.insert((from, to), Link::new(config, rng));
    }

    /// Change a direction's settings from now on (packets in flight keep
    /// their timing). Returns false if there is no such link.
    pub fn set_link_config(&mut self, from: NodeId, to: NodeId, config: LinkConfig) -> bool {
        match self.links.get_mut(&(from, to)) {
            Some(l) => {
                l.config = config;
                true
            }
            None => false,
        }
    }

    /// Install (or remove) the [`PacketFilter`] that sees each routed packet
    /// before its link does.
    pub fn set_filter(&mut self, filter: Option<PacketFilter>) {
        self.filter = filter;
    }

    pub fn link_stats(&self, from: NodeId, to: NodeId) -> Option<LinkStats> {
        self.links.get(&(from, to)).map(|l| l.stats)
    }

    /// Record everything `node` sends and receives to a pcap file (from now on).
    pub fn capture(&mut self, node: NodeId, path: &Path) -> io::Result<()> {
        let n = &mut self.nodes[node.0];
        let ep = std::mem::take(n.dev.endpoint());
        n.dev = NodeDevice::Traced(PcapWriter::create(ep, path)?);
        Ok(())
    }

    /// Flush every capture file (they are also flushed when the Sim is dropped).
    pub fn flush_captures(&mut self) -> io::Result<()> {
        for n in &mut self.nodes {
            if let NodeDevice::Traced(p) = &mut n.dev {
                p.flush()?;
            }
        }
        Ok(())
    }

    // ----- nodes -----------------------------------------------------------

    pub fn addr(&self, node: NodeId) -> Ipv4Addr {
        self.nodes[node.0].config.addr
    }

    pub fn node_by_addr(&self, addr: Ipv4Addr) -> Option<NodeId> {
        self.by_addr.get(&addr).copied()
    }

    /// The node's stack. Panics if the node is crashed.
    pub fn stack(&self, node: NodeId) -> &Stack {
        self.nodes[node.0]
            .stack
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is crashed", node.0))
    }

    /// The node's stack, for application calls between steps. Panics if the
    /// node is crashed.
    pub fn stack_mut(&mut self, node: NodeId) -> &mut Stack {
        self.nodes[node.0]
            .stack
            .as_mut()
            .unwrap_or_else(|| panic!("node {} is crashed", node.0))
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes[node.0].stack.is_some()
    }

    /// Times the node's stack has been polled.
    pub fn polls(&self, node: NodeId) -> u64 {
        self.nodes[node.0].polls
    }

    /// Crash `node`: its stack and everything queued at it vanish; packets
    /// arriving while it is down are dropped.
    pub fn crash(&mut self, node: NodeId) {
        let n = &mut self.nodes[node.0];
        n.stack = None;
        n.deadline = None;
        let ep = n.dev.endpoint();
        ep.rx.clear();
        ep.tx.clear();
        ep.tx_lent.clear();
    }

    /// Bring a crashed (or running) stack node back with a fresh stack of the same
    /// configuration and a new RNG from the seed: no sockets, no memory.
    pub fn restart(&mut self, node: NodeId) {
        self.crash(node);
        if self.nodes[node.0].raw {
            return;
        }
        let rng = self.rng.fork();
        let n = &mut self.nodes[node.0];
        n.stack = Some(Stack::new(n.config.clone(), rng));
    }

    // ----- partitions --------------------------------------------------------

    /// Cut `a` and `b` apart (both directions): packets between them are
    /// dropped, including those already in flight when they arrive.
    pub fn partition(&mut self, a: NodeId, b: NodeId) {
        self.cuts.insert(pair(a, b));
    }

    /// Cut `a` from every other node.
    pub fn isolate(&mut self, a: NodeId) {
        for i in 0..self.nodes.len() {
            if i != a.0 {
                self.partition(a, NodeId(i));
            }
        }
    }

    /// Restore `a` ↔ `b`.
    pub fn heal_pair(&mut self, a: NodeId, b: NodeId) {
        self.cuts.remove(&pair(a, b));
    }

    /// Restore every cut.
    pub fn heal(&mut self) {
        self.cuts.clear();
    }

    pub fn is_partitioned(&self, a: NodeId, b: NodeId) -> bool {
        self.cuts.contains(&pair(a, b))
    }

    // ----- scheduling and running ----------------------------------------------

    /// Run `f` at virtual time `at` (or at once on the next step if `at` has
    /// passed), e.g. `sim.at(t, |s| s.heal())`.
    pub fn at(&mut self, at: Instant, f: impl FnOnce(&mut Sim) + 'static) {
        self.push(at.max(self.now), Event::Call(Box::new(f)));
    }

    fn push(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    /// When the next thing happens: a scheduled event, a stack deadline, or
    /// now if some node has input waiting or work from the application.
    pub fn next_time(&self) -> Option<Instant> {
        let mut t = self.events.peek().map(|e| e.at);
        for n in &self.nodes {
            let Some(stack) = &n.stack else { continue };
            let at = if !n.dev.endpoint_ref().rx.is_empty() || stack.needs_poll() {
                Some(self.now)
            } else {
                n.deadline
            };
            t = match (t, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        t.map(|t| t.max(self.now))
    }

    /// Advance to the next thing that happens and run everything due then.
    /// Returns false (time unchanged) when nothing is scheduled at all.
    pub fn step(&mut self) -> bool {
        match self.next_time() {
            Some(t) => {
                self.advance_to(t);
                true
            }
            None => false,
        }
    }

    /// Run everything up to and including `t`, then set the clock to `t`.
    pub fn run_until(&mut self, t: Instant) {
        while let Some(next) = self.next_time() {
            if next > t {
                break;
            }
            self.advance_to(next);
        }
        if t > self.now {
            self.set_now(t);
        }
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Step until `cond(self)` is true (checked before the first step and
    /// after each one) or virtual time would pass `limit`. `cond` is also
    /// the place for application logic: it may send, receive, connect and
    /// close on any node. Returns whether `cond` became true; on false the
    /// clock stands at `limit`.
    pub fn run_until_cond(
        &mut self,
        mut cond: impl FnMut(&mut Sim) -> bool,
        limit: Instant,
    ) -> bool {
        loop {
            if cond(self) {
                return true;
            }
            match self.next_time() {
                Some(t) if t <= limit => self.advance_to(t),
                _ => {
                    if limit > self.now {
                        self.set_now(limit);
                    }
                    return cond(self);
                }
            }
        }
    }

    fn set_now(&mut self, t: Instant) {
        if t > self.now {
            self.now = t;
            for n in &mut self.nodes {
                n.polls_now = 0;
            }
        }
    }

    fn advance_to(&mut self, t: Instant) {
        self.set_now(t);
        self.stats.steps += 1;
        let now = self.now;
        while self.events.peek().is_some_and(|e| e.at <= now) {
            let Some(ev) = self.events.pop() else { break };
            match ev.event {
                Event::Deliver { from, to, packet } => self.deliver(from, to, packet),
                Event::Call(f) => f(self),
            }
        }
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            let Some(stack) = &n.stack else { continue };
            let due = !n.dev.endpoint_ref().rx.is_empty()
                || stack.needs_poll()
                || n.deadline.is_some_and(|d| d <= now);
            if due {
                self.poll_node(NodeId(i));
            }
        }
    }

    fn poll_node(&mut self, id: NodeId) {
        let now = self.now;
        let n = &mut self.nodes[id.0];
        let Some(stack) = n.stack.as_mut() else {
            return;
        };
        n.polls += 1;
        n.polls_now += 1;
        if n.polls_now > LIVELOCK_POLLS {
            panic!(
                "livelock: node {} ({}) polled {LIVELOCK_POLLS} times at {now} without time advancing (seed {})",
                id.0, n.config.addr, self.seed
            );
        }
        self.stats.polls += 1;
        let deadline = stack.poll(now, n.dev.as_device());
        // A deadline at or before now means "poll again at once"; the next
        // microsecond keeps virtual time moving.
        n.deadline = deadline.map(|d| d.max(now + Duration::from_micros(1)));
        let mut out = n.dev.endpoint().take_tx();
        for p in out.drain(..) {
            self.route(id, p);
        }
        // Hand the emptied vector back so its capacity is reused.
        self.nodes[id.0].dev.endpoint().tx = out;
    }

    /// Put a packet `from` sent onto the link towards its destination address.
    fn route(&mut self, from: NodeId, mut packet: Vec<u8>) {
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            self.stats.malformed += 1;
            return;
        }
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let Some(to) = self.by_addr.get(&dst).copied() else {
            self.stats.unroutable += 1;
            return;
        };
        let now = self.now;
        if let Some(f) = self.filter.as_mut() {
            if self.links.contains_key(&(from, to)) && f(now, from, to, &packet) {
                self.trace_event(b'f', from, to, &packet);
                return;
            }
        }
        let cut = self.is_partitioned(from, to);
        let Some(link) = self.links.get_mut(&(from, to)) else {
            self.stats.unroutable += 1;
            return;
        };
        if cut {
            link.stats.sent += 1;
            link.stats.partition_drops += 1;
            self.trace_event(b'p', from, to, &packet);
            return;
        }
        match link.transmit(now, &mut packet) {
            Fate::Dropped => self.trace_event(b'd', from, to, &packet),
            Fate::Arrives(at, dup) => {
                self.trace_event(b's', from, to, &packet);
                if let Some(dup_at) = dup {
                    let copy = packet.clone();
                    self.push(
                        dup_at,
                        Event::Deliver {
                            from,
                            to,
                            packet: copy,
                        },
                    );
                }
                self.push(at, Event::Deliver { from, to, packet });
            }
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, packet: Vec<u8>) {
        let cut = self.is_partitioned(from, to);
        let up = self.nodes[to.0].stack.is_some() || self.nodes[to.0].raw;
        let full = self.nodes[to.0].dev.endpoint_ref().rx.len() >= ENDPOINT_RX_LIMIT;
        if let Some(l) = self.links.get_mut(&(from, to)) {
            if cut || !up {
                l.stats.partition_drops += 1;
            } else if !full {
                l.stats.delivered += 1;
                l.stats.bytes_delivered += packet.len() as u64;
            }
        }
        if cut || !up {
            self.trace_event(b'x', from, to, &packet);
            return;
        }
        if full {
            self.stats.endpoint_overflows += 1;
            return;
        }
        self.trace_event(b'r', from, to, &packet);
        self.nodes[to.0].dev.endpoint().rx.push_back(packet);
    }

    fn trace_event(&mut self, kind: u8, from: NodeId, to: NodeId, packet: &[u8]) {
        self.trace_packets += 1;
        self.trace.write_u8(kind);
        self.trace.write_u64(self.now.total_micros());
        self.trace.write_u32(from.0 as u32);
        self.trace.write_u32(to.0 as u32);
        self.trace.write_u32(packet.len() as u32);
        self.trace.write(packet);
    }

    /// A hash of every packet event so far (sent, dropped, delivered: time,
    /// endpoints, bytes). Two runs with the same seed and logic agree.
    pub fn trace_hash(&self) -> u64 {
        self.trace.clone().finish()
    }

    /// Packet events hashed into [`Sim::trace_hash`].
    pub fn trace_events(&self) -> u64 {
        self.trace_packets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::SocketHandle;
    use crate::tcp::{State, TcpError};
    use std::cell::RefCell;
    use std::net::SocketAddrV4;
    use std::rc::Rc;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// An IPv4 header (no payload checks needed by raw nodes) plus a tag.
    fn packet(src: Ipv4Addr, dst: Ipv4Addr, tag: u32, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len.max(24)];
        p[0] = 0x45;
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[20..24].copy_from_slice(&tag.to_be_bytes());
        p
    }

    fn tag(p: &[u8]) -> u32 {
        u32::from_be_bytes([p[20], p[21], p[22], p[23]])
    }

    fn raw_pair(seed: u64, cfg: LinkConfig) -> (Sim, NodeId, NodeId) {
        let mut sim = Sim::new(seed);
        let a = sim.add_raw_node(A, 1500);
        let b = sim.add_raw_node(B, 1500);
        sim.link(a, b, cfg);
        (sim, a, b)
    }

    #[test]
    fn packets_arrive_after_serialization_and_latency() {
        // 1000 bytes at 8 Mbit/s = 1 ms each, then 10 ms of latency.
        let (mut sim, a, b) = raw_pair(1, LinkConfig::new(Duration::from_millis(10), 8_000_000));
        sim.raw_send(a, &packet(A, B, 1, 1000));
        sim.raw_send(a, &packet(A, B, 2, 1000));
        sim.run_until(Instant::from_micros(10_999));
        assert!(sim.raw_recv(b).is_none());
        sim.run_until(Instant::from_millis(11));
        assert_eq!(sim.raw_recv(b).map(|p| tag(&p)), Some(1));
        assert!(sim.raw_recv(b).is_none());
        sim.run_until(Instant::from_millis(12));
        assert_eq!(sim.raw_recv(b).map(|p| tag(&p)), Some(2));
        let st = sim.link_stats(a, b).unwrap();
        assert_eq!((st.sent, st.delivered), (2, 2));
    }

    #[test]
    fn partition_drops_packets_in_flight_and_heal_restores() {
        let (mut sim, a, b) = raw_pair(1, LinkConfig::new(Duration::from_millis(10), 0));
        sim.raw_send(a, &packet(A, B, 1, 100));
        sim.run_until(Instant::from_millis(5));
        sim.partition(a, b);
        assert!(sim.is_partitioned(b, a));
        sim.raw_send(b, &packet(B, A, 2, 100));
        sim.run_until(Instant::from_millis(20));
        assert!(
            sim.raw_recv(b).is_none(),
            "in flight across the cut: dropped"
        );
        assert!(sim.raw_recv(a).is_none(), "sent across the cut: dropped");
        sim.heal();
        sim.raw_send(a, &packet(A, B, 3, 100));
        sim.run_until(Instant::from_millis(40));
        assert_eq!(sim.raw_recv(b).map(|p| tag(&p)), Some(3));
        assert_eq!(sim.link_stats(a, b).unwrap().partition_drops, 1);
        assert_eq!(sim.link_stats(b, a).unwrap().partition_drops, 1);
    }

    #[test]
    fn unroutable_packets_are_counted() {
        let (mut sim, a, _b) = raw_pair(1, LinkConfig::default());
        let c = sim.add_raw_node(Ipv4Addr::new(10, 0, 0, 3), 1500);
        sim.raw_send(a, &packet(A, Ipv4Addr::new(10, 9, 9, 9), 1, 100));
        sim.raw_send(a, &packet(A, sim.addr(c), 2, 100)); // no a→c link
        sim.raw_send(a, &[0x60; 40]); // IPv6
        let st = sim.stats();
        assert_eq!((st.unroutable, st.malformed), (2, 1));
    }

    /// A lossy, duplicating, reordering, corrupting flood; returns what arrived and the trace hash.
    fn flood(seed: u64) -> (Vec<Vec<u8>>, u64, LinkStats) {
        let cfg = LinkConfig::new(Duration::from_millis(10), 100_000_000)
            .loss(0.05)
            .duplicate(0.05)
            .reorder(0.05, Duration::from_millis(5))
            .corrupt(0.05);
        let (mut sim, a, b) = raw_pair(seed, cfg);
        let mut got = Vec::new();
        for i in 0..5000 {
            sim.raw_send(a, &packet(A, B, i, 1000));
            sim.run_for(Duration::from_micros(100));
            while let Some(p) = sim.raw_recv(b) {
                got.push(p);
            }
        }
        sim.run_for(Duration::from_secs(1));
        while let Some(p) = sim.raw_recv(b) {
            got.push(p);
        }
        (got, sim.trace_hash(), sim.link_stats(a, b).unwrap())
    }

    #[test]
    fn same_seed_same_trace() {
        let (p1, h1, s1) = flood(77);
        let (p2, h2, s2) = flood(77);
        assert_eq!(h1, h2);
        assert_eq!(p1, p2);
        assert_eq!(s1, s2);
        let (p3, h3, _) = flood(78);
        assert_ne!(h1, h3);
        assert_ne!(p1, p3);
    }

    #[test]
    fn link_faults_happen_at_their_rates() {
        let (got, _, st) = flood(5);
        let f = st.faults;
        assert_eq!(f.packets, 5000);
        for (what, n) in [
            ("lost", f.dropped),
            ("duplicated", f.duplicated),
            ("reordered", f.reordered),
            ("corrupted", f.corrupted),
        ] {
            // 5% of ~5000: mean ~250, sd ~15.
            assert!((150..350).contains(&n), "{what}: {n}");
        }
        assert_eq!(got.len() as u64, 5000 - f.dropped + f.duplicated);
        assert_eq!(st.delivered, got.len() as u64);
        // Reordering actually changed the order of arrival.
        let tags: Vec<u32> = got.iter().map(|p| tag(p)).collect();
        assert!(tags.windows(2).any(|w| w[1] < w[0]));
    }

    #[test]
    fn scheduled_actions_run_at_their_time_in_order() {
        let mut sim = Sim::new(1);
        let log = Rc::new(RefCell::new(Vec::new()));
        for (t, name) in [(30, "c"), (10, "a"), (10, "b"), (20, "x")] {
            let log = log.clone();
            sim.at(Instant::from_millis(t), move |s| {
                log.borrow_mut().push((s.now().total_millis(), name))
            });
        }
        sim.run_until(Instant::from_millis(25));
        assert_eq!(*log.borrow(), vec![(10, "a"), (10, "b"), (20, "x")]);
        assert_eq!(sim.now(), Instant::from_millis(25));
        assert!(sim.step());
        assert_eq!(log.borrow().last(), Some(&(30, "c")));
        assert!(!sim.step(), "nothing left");
    }

    #[test]
    fn run_until_cond_stops_at_the_limit_when_never_true() {
        let mut sim = Sim::new(1);
        let met = sim.run_until_cond(|_| false, Instant::from_secs(3));
        assert!(!met);
        assert_eq!(sim.now(), Instant::from_secs(3));
        let met = sim.run_until_cond(|s| s.now() >= Instant::from_secs(3), Instant::from_secs(9));
        assert!(met);
    }

    fn stack_pair(seed: u64, cfg: LinkConfig) -> (Sim, NodeId, NodeId) {
        let mut sim = Sim::new(seed);
        let a = sim.add_host(A);
        let b = sim.add_host(B);
        sim.link(a, b, cfg);
        (sim, a, b)
    }

    #[test]
    fn udp_datagram_between_stacks_takes_the_link_latency() {
        let (mut sim, a, b) = stack_pair(1, LinkConfig::new(Duration::from_millis(10), 0));
        let rx = sim.stack_mut(b).udp_bind(9000).unwrap();
        let tx = sim.stack_mut(a).udp_bind(0).unwrap();
        sim.stack_mut(a)
            .udp_send_to(tx, b"hello", SocketAddrV4::new(B, 9000))
            .unwrap();
        let mut buf = [0u8; 64];
        let got = sim.run_until_cond(
            |s| s.stack_mut(b).udp_recv_from(rx, &mut buf).is_ok(),
            Instant::from_secs(1),
        );
        assert!(got);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(sim.now(), Instant::from_millis(10));
    }

    /// Connect a → b:80 and run until both ends are established.
    fn connect(sim: &mut Sim, a: NodeId, b: NodeId) -> (SocketHandle, SocketHandle) {
        let l = sim.stack_mut(b).tcp_listen(80, 4).unwrap();
        let now = sim.now();
        let to = SocketAddrV4::new(sim.addr(b), 80);
        let c = sim.stack_mut(a).tcp_connect(now, to).unwrap();
        let mut accepted = None;
        let ok = sim.run_until_cond(
            |s| {
                if accepted.is_none() {
                    accepted = s.stack_mut(b).tcp_accept(l).ok();
                }
                accepted.is_some() && s.stack(a).tcp_state(c) == Some(State::Established)
            },
            Instant::from_secs(10),
        );
        assert!(ok, "handshake did not complete");
        (c, accepted.unwrap())
    }

    #[test]
    fn crash_drops_arrivals_and_restart_forgets_connections() {
        let (mut sim, a, b) = stack_pair(3, LinkConfig::default());
        let (c, _) = connect(&mut sim, a, b);
        sim.crash(b);
        assert!(!sim.is_up(b));
        sim.stack_mut(a).tcp_send(c, b"into the void").unwrap();
        sim.run_for(Duration::from_millis(100));
        assert!(sim.link_stats(a, b).unwrap().partition_drops > 0);
        sim.restart(b);
        // The next retransmission reaches a stack with no such connection: RST.
        let reset = sim.run_until_cond(
            |s| s.stack(a).tcp_error(c) == Some(TcpError::ConnectionReset),
            Instant::from_secs(30),
        );
        assert!(reset, "state {:?}", sim.stack(a).tcp_state(c));
        assert!(sim.stack(b).stats().tcp_rst_sent > 0);
    }

    #[test]
    fn one_partition_leaves_other_pairs_connected() {
        let mut sim = Sim::new(4);
        let a = sim.add_host(A);
        let b = sim.add_host(B);
        let c = sim.add_host(Ipv4Addr::new(10, 0, 0, 3));
        for (x, y) in [(a, b), (a, c), (b, c)] {
            sim.link(x, y, LinkConfig::default());
        }
        sim.partition(a, b);
        let rx_b = sim.stack_mut(b).udp_bind(7).unwrap();
        let rx_c = sim.stack_mut(c).udp_bind(7).unwrap();
        let tx = sim.stack_mut(a).udp_bind(0).unwrap();
        for dst in [B, Ipv4Addr::new(10, 0, 0, 3)] {
            sim.stack_mut(a)
                .udp_send_to(tx, b"x", SocketAddrV4::new(dst, 7))
                .unwrap();
        }
        sim.run_for(Duration::from_secs(1));
        let mut buf = [0u8; 8];
        assert!(sim.stack_mut(b).udp_recv_from(rx_b, &mut buf).is_err());
        assert!(sim.stack_mut(c).udp_recv_from(rx_c, &mut buf).is_ok());
    }

    #[test]
    fn capture_records_a_nodes_packets_to_pcap() {
        let path = std::env::temp_dir().join(format!("tunstack-sim-{}.pcap", std::process::id()));
        // Infinite bandwidth: no serialization delay, so exactly one RTT.
        let (mut sim, a, b) = stack_pair(5, LinkConfig::new(Duration::from_millis(10), 0));
        sim.capture(a, &path).unwrap();
        connect(&mut sim, a, b);
        sim.flush_captures().unwrap();
        let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let mut n = 0;
        let mut first = None;
        let mut last = None;
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            first.get_or_insert(p.timestamp);
            last = Some(p.timestamp);
            n += 1;
        }
        // SYN out, SYN-ACK in, ACK out; one RTT (20 ms) between first and last.
        assert_eq!(n, 3);
        assert_eq!(last.unwrap() - first.unwrap(), Duration::from_millis(20));
        let _ = std::fs::remove_file(&path);
    }
}
