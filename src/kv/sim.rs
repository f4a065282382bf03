//! A deterministic simulator for KV clusters: virtual time, N [`Node`]s over [`MemLog`]s, a
//! seeded network that delays, drops, duplicates and reorders frames, partitions, crash and
//! restart (a crashed node keeps only its log store), and concurrent clients that retry on
//! timeout or `NotLeader` with the same `(client_id, seq)`. Every client operation is recorded
//! as a history for the linearizability checker. One seed replays one run exactly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use super::node::{Consistency, Node, NodeConfig, Op, Outcome, Request, Response, Status};
use super::storage::MemLog;
use crate::rng::Rng;
use crate::time::Instant;

/// Network and cluster settings of one simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Initial voters are `1..=nodes`.
    pub nodes: u64,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Probability a frame is lost.
    pub drop: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    pub snapshot_every: u64,
    /// Applied to every node's config (after the defaults and `snapshot_every`).
    pub tune: fn(&mut NodeConfig),
}

impl SimConfig {
    /// A quiet network (1–5 ms delays, no loss) with `nodes` voters.
    pub fn new(nodes: u64, seed: u64) -> Self {
        SimConfig {
            seed,
            nodes,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            drop: 0.0,
            duplicate: 0.0,
            snapshot_every: 1000,
            tune: |_| {},
        }
    }
}

pub use super::lincheck::{KvInput as HistInput, KvOutput as HistOutput, Operation};

/// One client operation: invoked at `call`, answered at `ret` (virtual µs; `u64::MAX` for
/// `Unknown`).
#[derive(Clone, Debug, PartialEq)]
pub struct HistOp {
    pub client: u64,
    pub call: u64,
    pub ret: u64,
    pub input: HistInput,
    pub output: HistOutput,
    /// The node and index of the final answer (reads: applied index served at).
    pub served_by: u64,
    pub index: u64,
}

/// How the simulated clients behave.
#[derive(Clone, Debug)]
pub struct Workload {
    pub clients: u64,
    pub keys: u64,
    /// Fractions of reads and CAS among operations (the rest: puts, and a few deletes).
    pub reads: f64,
    pub cas: f64,
    pub read_consistency: Consistency,
    /// Gap between one answer and the client's next operation (uniform up to this).
    pub think: Duration,
    /// A client gives up on an operation after this long (writes are then `Unknown`).
    pub give_up: Duration,
}

impl HistOp {
    /// The operation as the linearizability checker takes it.
    pub fn to_operation(&self) -> Operation {
        Operation {
            client: self.client,
            call: self.call,
            ret: self.ret,
            input: self.input.clone(),
            output: self.output.clone(),
        }
    }
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            clients: 3,
            keys: 3,
            reads: 0.4,
            cas: 0.2,
            read_consistency: Consistency::Linearizable,
            think: Duration::from_millis(30),
            give_up: Duration::from_secs(15),
        }
    }
}

struct Client {
    id: u64,
    seq: u64,
    target: u64,
    /// The operation in flight: (input, first call time, ticket of the current attempt).
    op: Option<(HistInput, Instant, u64)>,
    /// When to (re)submit the current op, or start the next one.
    wake: Option<Instant>,
    /// Last index this client saw (sequential reads).
    seen: u64,
}

struct SimNode {
    store: MemLog,
    node: Option<Node<MemLog>>,
    cfg: NodeConfig,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    at: Instant,
    n: u64,
    from: u64,
    to: u64,
    frame: Vec<u8>,
}

/// Who is waiting for a ticket's reply.
enum Waiting {
    Client(u64),
    Direct,
}

/// Network counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub cut: u64,
}

pub struct Sim {
    pub cfg: SimConfig,
    pub now: Instant,
    rng: Rng,
    nodes: BTreeMap<u64, SimNode>,
    net: BinaryHeap<Reverse<Delivery>>,
    n: u64,
    /// Partition groups; nodes in different groups cannot talk. Empty: fully connected.
    groups: Vec<BTreeSet<u64>>,
    clients: Vec<Client>,
    workload: Workload,
    tickets: BTreeMap<u64, Waiting>,
    next_ticket: u64,
    direct: BTreeMap<u64, Response>,
    history: Vec<HistOp>,
    pub net_stats: NetStats,
    wrote: u64,
}

fn ms(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let mut sim = Sim {
            now: Instant::ZERO,
            rng: Rng::new(cfg.seed),
            nodes: BTreeMap::new(),
            net: BinaryHeap::new(),
            n: 0,
            groups: Vec::new(),
            clients: Vec::new(),
            workload: Workload::default(),
            tickets: BTreeMap::new(),
            next_ticket: 1,
            direct: BTreeMap::new(),
            history: Vec::new(),
            net_stats: NetStats::default(),
            wrote: 0,
            cfg,
        };
        let voters: Vec<u64> = (1..=sim.cfg.nodes).collect();
        for &id in &voters {
            let store = MemLog::new_with_voters(&voters);
            sim.start_node(id, voters.clone(), store);
        }
        sim
    }

    fn node_config(&mut self, id: u64, voters: Vec<u64>) -> NodeConfig {
        let mut c = NodeConfig::new(id, voters);
        c.snapshot_every = self.cfg.snapshot_every;
        c.seed = self.rng.next_u64();
        (self.cfg.tune)(&mut c);
        c
    }

    fn start_node(&mut self, id: u64, voters: Vec<u64>, store: MemLog) {
        let cfg = self.node_config(id, voters);
        let node = Node::new(cfg.clone(), store.clone(), self.now).expect("node starts");
        self.nodes.insert(
            id,
            SimNode {
                store,
                node: Some(node),
                cfg,
            },
        );
    }

    /// Starts a brand-new node with an empty store (it joins once added with `Op::AddNode`).
    pub fn spawn_empty(&mut self, id: u64) {
        self.start_node(id, vec![], MemLog::default());
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: u64) -> Option<&Node<MemLog>> {
        self.nodes.get(&id).and_then(|n| n.node.as_ref())
    }

    pub fn node_mut(&mut self, id: u64) -> Option<&mut Node<MemLog>> {
        self.nodes.get_mut(&id).and_then(|n| n.node.as_mut())
    }

    pub fn is_up(&self, id: u64) -> bool {
        self.node(id).is_some()
    }

    pub fn status(&self, id: u64) -> Option<Status> {
        self.node(id).map(|n| n.status(self.now))
    }

    /// The leader of the highest term among running nodes.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter_map(|n| n.node.as_ref())
            .filter(|n| n.is_leader())
            .max_by_key(|n| n.status(self.now).term)
            .map(|n| n.id())
    }

    /// Crash: the node's process state is lost; its log store survives.
    pub fn crash(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.node = None;
        }
    }

    /// Restart a crashed node from its store.
    pub fn restart(&mut self, id: u64) {
        let now = self.now;
        let seed = self.rng.next_u64();
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.node.is_none() {
                let mut cfg = n.cfg.clone();
                cfg.seed = seed;
                n.node = Some(Node::new(cfg, n.store.clone(), now).expect("node restarts"));
            }
        }
    }

    /// Removes a node from the simulation entirely (after `Op::RemoveNode`).
    pub fn destroy(&mut self, id: u64) {
        self.nodes.remove(&id);
    }

    pub fn partition(&mut self, groups: &[&[u64]]) {
        self.groups = groups.iter().map(|g| g.iter().copied().collect()).collect();
    }

    pub fn heal(&mut self) {
        self.groups.clear();
    }

    fn connected(&self, a: u64, b: u64) -> bool {
        if self.groups.is_empty() {
            return true;
        }
        self.groups.iter().any(|g| g.contains(&a) && g.contains(&b))
    }

    pub fn history(&self) -> &[HistOp] {
        &self.history
    }

    // ---- direct requests (tests) ----

    /// Submits a request to `node` now; its answer is collected by [`Sim::take_response`].
    pub fn submit(&mut self, node: u64, req: Request) -> u64 {
        let t = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.insert(t, Waiting::Direct);
        let now = self.now;
        match self.node_mut(node) {
            Some(n) => n.submit(t, req, now),
            None => {
                self.tickets.remove(&t);
            }
        }
        t
    }

    pub fn take_response(&mut self, ticket: u64) -> Option<Response> {
        self.direct.remove(&ticket)
    }

    /// Submits and runs until answered (or `limit` of virtual time passes).
    pub fn call(&mut self, node: u64, req: Request, limit: Duration) -> Option<Response> {
        let t = self.submit(node, req);
        let end = self.now + limit;
        while self.now < end {
            if let Some(r) = self.take_response(t) {
                return Some(r);
            }
            self.step(end);
        }
        self.take_response(t)
    }

    // ---- clients ----

    /// Starts `w.clients` concurrent clients (ids 1000+), each on a random node.
    pub fn start_clients(&mut self, w: Workload) {
        let ids = self.ids();
        for i in 0..w.clients {
            let target = ids[self.rng.gen_range(0, ids.len() as u64) as usize];
            self.clients.push(Client {
                id: 1000 + i,
                seq: 0,
                target,
                op: None,
                wake: Some(self.now),
                seen: 0,
            });
        }
        self.workload = w;
    }

    /// Stops issuing new operations (ops in flight finish or give up).
    pub fn stop_clients(&mut self) {
        for c in &mut self.clients {
            if c.op.is_none() {
                c.wake = None;
            }
        }
        self.workload.clients = 0;
    }

    pub fn clients_idle(&self) -> bool {
        self.clients.iter().all(|c| c.op.is_none())
    }

    fn new_op(&mut self, key_space: u64) -> HistInput {
        let w = &self.workload;
        let (reads, cas) = (w.reads, w.cas);
        let key = format!("k{}", self.rng.gen_range(0, key_space.max(1)));
        let r = self.rng.next_f64();
        self.wrote += 1;
        let value = format!("v{}", self.wrote).into_bytes();
        if r < reads {
            HistInput::Get { key }
        } else if r < reads + cas {
            let expected = match self.rng.gen_range(0, 3) {
                0 => None,
                _ => Some(format!("v{}", self.rng.gen_range(1, self.wrote.max(2))).into_bytes()),
            };
            HistInput::Cas {
                key,
                expected,
                new: value,
            }
        } else if r < reads + cas + 0.05 {
            HistInput::Delete { key }
        } else {
            HistInput::Put { key, value }
        }
    }

    fn client_request(&self, c: &Client, input: &HistInput) -> Request {
        let op = match input.clone() {
            HistInput::Put { key, value } => Op::Put { key, value },
            HistInput::Delete { key } => Op::Delete { key },
            HistInput::Cas { key, expected, new } => Op::Cas { key, expected, new },
            HistInput::Get { key } => Op::Get {
                key,
                consistency: self.workload.read_consistency,
                min_index: c.seen,
            },
        };
        Request {
            client_id: c.id,
            seq: c.seq,
            op,
        }
    }

    fn wake_clients(&mut self) {
        for i in 0..self.clients.len() {
            match self.clients[i].wake {
                Some(w) if w <= self.now => {}
                _ => continue,
            }
            self.clients[i].wake = None;
            if self.clients[i].op.is_none() {
                if self.workload.clients == 0 {
                    continue;
                }
                let input = self.new_op(self.workload.keys);
                let c = &mut self.clients[i];
                c.seq += 1;
                c.op = Some((input, self.now, 0));
            }
            // (Re)submit.
            let (input, first, _) = self.clients[i].op.clone().expect("op set above");
            if self.now.saturating_duration_since(first) >= self.workload.give_up {
                self.finish(i, HistOutput::Unknown, None);
                continue;
            }
            let req = self.client_request(&self.clients[i], &input);
            let target = self.clients[i].target;
            let t = self.next_ticket;
            self.next_ticket += 1;
            let now = self.now;
            if let Some(n) = self.node_mut(target) {
                n.submit(t, req, now);
                self.tickets.insert(t, Waiting::Client(i as u64));
                if let Some(op) = &mut self.clients[i].op {
                    op.2 = t;
                }
                // The client's own timeout, in case the node crashes with the request.
                let give = now + Duration::from_secs(3);
                self.clients[i].wake = Some(give);
            } else {
                self.retarget(i, None);
            }
        }
    }

    /// Try another node after a short backoff.
    fn retarget(&mut self, i: usize, to: Option<u64>) {
        let ids = self.ids();
        let next = match to {
            Some(l) if self.nodes.contains_key(&l) => l,
            _ => ids[self.rng.gen_range(0, ids.len() as u64) as usize],
        };
        let backoff = Duration::from_millis(if to.is_some() {
            1
        } else {
            50 + self.rng.gen_range(0, 200)
        });
        let c = &mut self.clients[i];
        c.target = next;
        c.wake = Some(self.now + backoff);
    }

    fn finish(&mut self, i: usize, output: HistOutput, resp: Option<&Response>) {
        let now = self.now;
        let c = &mut self.clients[i];
        let (input, call, _) = match c.op.take() {
            Some(op) => op,
            None => return,
        };
        let (served_by, index) = resp.map_or((0, 0), |r| (r.served_by, r.index));
        if resp.is_some() {
            c.seen = c.seen.max(index);
        }
        let ret = if output == HistOutput::Unknown {
            u64::MAX
        } else {
            now.total_micros()
        };
        // A read that never got an answer tells nothing: leave it out.
        let unknown_read = output == HistOutput::Unknown && matches!(input, HistInput::Get { .. });
        if !unknown_read {
            self.history.push(HistOp {
                client: c.id,
                call: call.total_micros(),
                ret,
                input,
                output,
                served_by,
                index,
            });
        }
        let think = self.rng.gen_range(0, ms(self.workload.think).max(1));
        self.clients[i].wake = Some(now + Duration::from_micros(think));
    }

    fn on_client_reply(&mut self, i: usize, ticket: u64, resp: Response) {
        let current = self.clients[i].op.as_ref().map(|o| o.2);
        if current != Some(ticket) {
            return; // an answer to an attempt the client already gave up on
        }
        let input = self.clients[i].op.as_ref().map(|o| o.0.clone());
        let out = match (&resp.outcome, &input) {
            (Outcome::Done, Some(HistInput::Cas { .. })) => HistOutput::CasResult(true),
            (Outcome::Done, _) => HistOutput::Ok,
            (Outcome::CasFailed { .. }, _) => HistOutput::CasResult(false),
            (Outcome::Value(v), _) => HistOutput::Value(v.clone()),
            (Outcome::NotLeader { leader }, _) => {
                let l = *leader;
                self.retarget(i, l);
                return;
            }
            (Outcome::Unavailable(_), _) => {
                self.retarget(i, None);
                return;
            }
        };
        self.finish(i, out, Some(&resp));
    }

    // ---- the event loop ----

    fn next_event(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| {
            t = Some(t.map_or(x, |y: Instant| y.min(x)));
        };
        if let Some(Reverse(d)) = self.net.peek() {
            consider(d.at);
        }
        for n in self.nodes.values() {
            if let Some(node) = &n.node {
                consider(node.next_deadline());
            }
        }
        for c in &self.clients {
            if let Some(w) = c.wake {
                consider(w);
            }
        }
        t
    }

    /// Processes everything due at the next event time (not beyond `limit`).
    pub fn step(&mut self, limit: Instant) {
        let t = match self.next_event() {
            Some(t) if t <= limit => t.max(self.now),
            _ => {
                self.now = limit;
                return;
            }
        };
        self.now = t;
        while let Some(Reverse(d)) = self.net.peek() {
            if d.at > self.now {
                break;
            }
            let Reverse(d) = self.net.pop().expect("peeked");
            if !self.connected(d.from, d.to) {
                self.net_stats.cut += 1;
                continue;
            }
            let now = self.now;
            match self.node_mut(d.to) {
                Some(n) => {
                    n.on_frame(d.from, &d.frame, now);
                    self.net_stats.delivered += 1;
                }
                None => self.net_stats.dropped += 1,
            }
        }
        self.wake_clients();
        let ids = self.ids();
        let mut out = Vec::new();
        for id in ids {
            let now = self.now;
            if let Some(n) = self.node_mut(id) {
                n.poll(now, &mut out);
            }
            for o in out.drain(..) {
                self.route(id, o);
            }
        }
    }

    fn route(&mut self, from: u64, o: super::node::Output) {
        match o {
            super::node::Output::Send { to, frame } => {
                self.net_stats.sent += 1;
                if !self.connected(from, to) {
                    self.net_stats.cut += 1;
                    return;
                }
                if self.rng.gen_bool(self.cfg.drop) {
                    self.net_stats.dropped += 1;
                    return;
                }
                let copies = if self.rng.gen_bool(self.cfg.duplicate) {
                    self.net_stats.duplicated += 1;
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let delay = self
                        .rng
                        .gen_range(ms(self.cfg.min_delay), ms(self.cfg.max_delay).max(1));
                    self.n += 1;
                    self.net.push(Reverse(Delivery {
                        at: self.now + Duration::from_micros(delay),
                        n: self.n,
                        from,
                        to,
                        frame: frame.clone(),
                    }));
                }
            }
            super::node::Output::Reply { ticket, resp } => match self.tickets.remove(&ticket) {
                Some(Waiting::Client(i)) => self.on_client_reply(i as usize, ticket, resp),
                Some(Waiting::Direct) => {
                    self.direct.insert(ticket, resp);
                }
                None => {}
            },
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(end);
        }
    }

    /// Runs until `cond` holds (checked after every event) or `limit` passes; whether it held.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if cond(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            self.step(end);
        }
    }
}
