//! One KV node, sans-IO: tikv's raft-rs `RawNode` plus the state machine, client request
//! bookkeeping, failure detection and logical clocks. The driver (process, simulator) hands it
//! frames, requests and the time, and sends what [`Node::poll`] outputs.
//!
//! Driver loop: after any [`Node::on_frame`] or [`Node::submit`], and whenever
//! [`Node::next_deadline`] passes, call [`Node::poll`] and act on every [`Output`].
//!
//! Ready handling, in the order raft-rs 0.7 requires: send the leader's messages at once;
//! install an incoming snapshot; apply committed entries; persist entries and hard state
//! (durable on return, [`LogStore`]); only then send the persisted messages (votes, append
//! responses); record read states; `advance`, persist the new commit index, send and apply what
//! the `LightReady` holds; `advance_apply`.
//!
//! Writes: a follower hands a proposal to raft, which forwards it to the leader; the node
//! answers when it applies the entry (matched by `(client_id, seq)`), or `Unavailable` after
//! `request_timeout` (the write may or may not have taken effect; retry with the same
//! `(client_id, seq)`). `NotLeader { leader: None }` only when no leader is known at all.
//! Session writes in flight are proposed again whenever a (new) leader becomes known, so a
//! write forwarded to a leader that then died is not stuck until its timeout.
//! A request with `client_id == 0` has no session and is given a node-unique id.
//!
//! Reads: `Linearizable` through raft's ReadIndex (a follower's request is forwarded to the
//! leader), answered once this node has applied up to the read index; `Sequential` served here
//! once applied ≥ `min_index`; `Eventual` served here at once. Each answer says the applied
//! index it was served at.
//!
//! Elections: raft's own randomised timeout comes from a thread RNG, which would make the
//! simulator unrepeatable, so whenever raft resets it (every change of term or role) the node
//! replaces it with one drawn from its seeded RNG in `[election_ticks, election_ticks * 3 / 2]`
//! ticks: 500 ms to 750 ms at the defaults (10 ms tick, 50 ticks), so a leader's successor is
//! elected and serving within 1 s of its death. The fine tick gives 26 distinct timeouts, so
//! two followers rarely time out together (which would split the vote and cost a second
//! round). Heartbeats (raft's and ours) go every `heartbeat_ticks` (5: 50 ms); check-quorum
//! deposes a leader that has not heard from a quorum for `election_ticks` (500 ms).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;
use std::time::Duration;

use protobuf::Message as PbMessage;
use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};
use serde::Serialize;
use slog::Drain;

use super::clock::{Lamport, VectorClock};
use super::msg::{Frame, FrameKind};
use super::phi::{PhiAccrual, PhiConfig};
use super::sm::{Command, ConfContext, StateMachine, WriteOp, WriteResult};
use super::storage::LogStore;
pub use super::trace::{EventKind, MsgId, TraceEvent};
use crate::kv::guard;
use crate::rng::Rng;
use crate::time::Instant;

/// A node's settings. [`NodeConfig::new`] gives the defaults the contract names.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    /// The initial voters (the driver initialises a new store with them; the node itself reads
    /// its membership from the store).
    pub voters: Vec<u64>,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Compact the log into a snapshot every this many applied entries.
    pub snapshot_every: u64,
    pub request_timeout: Duration,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Trace every heartbeat frame (and raft heartbeat without a read context) too.
    pub trace_heartbeats: bool,
    /// Most trace events kept between `drain_trace` calls (older ones are dropped and counted).
    pub max_trace: usize,
    /// Seed of the node's RNG (election timeouts). Drivers of real nodes seed it from the OS.
    pub seed: u64,
}

impl NodeConfig {
    pub fn new(id: u64, voters: Vec<u64>) -> Self {
        NodeConfig {
            id,
            voters,
            tick: Duration::from_millis(10),
            election_ticks: 50,
            heartbeat_ticks: 5,
            snapshot_every: 1000,
            request_timeout: Duration::from_secs(2),
            pre_vote: true,
            check_quorum: true,
            trace_heartbeats: false,
            max_trace: 100_000,
            seed: id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed,
        }
    }
}

#[derive(Debug)]
pub enum NodeError {
    Raft(String),
    Store(String),
    Snapshot(String),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Raft(e) => write!(f, "raft: {e}"),
            NodeError::Store(e) => write!(f, "log store: {e}"),
            NodeError::Snapshot(e) => write!(f, "snapshot: {e}"),
        }
    }
}

impl std::error::Error for NodeError {}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Send { to: u64, frame: Vec<u8> },
    Reply { ticket: u64, resp: Response },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub client_id: u64,
    pub seq: u64,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    Cas {
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
    Get {
        key: String,
        consistency: Consistency,
        /// Sequential: the last index the session saw.
        min_index: u64,
    },
    AddNode {
        id: u64,
        addr: String,
    },
    RemoveNode {
        id: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Consistency {
    Linearizable,
    Sequential,
    Eventual,
}

impl FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "linearizable" => Ok(Consistency::Linearizable),
            "sequential" => Ok(Consistency::Sequential),
            "eventual" => Ok(Consistency::Eventual),
            other => Err(format!(
                "unknown consistency {other:?} (linearizable|sequential|eventual)"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Response {
    pub outcome: Outcome,
    pub served_by: u64,
    /// The applied index a read was served at, or the entry index of a write.
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Outcome {
    Done,
    Value(Option<Vec<u8>>),
    CasFailed {
        current: Option<Vec<u8>>,
    },
    NotLeader {
        leader: Option<u64>,
    },
    /// No quorum, no leader, or timed out (a timed-out write may or may not have taken effect).
    Unavailable(String),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit: u64,
    pub applied: u64,
    pub lamport: u64,
    pub members: Vec<Member>,
    pub peers: Vec<PeerStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Member {
    pub id: u64,
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerStatus {
    pub id: u64,
    pub phi: f64,
    pub suspected: bool,
    pub last_heard_ms: Option<u64>,
    pub match_index: u64,
}

/// Counters of what the node dropped or refused (for tests and the status view).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    pub bad_frames: u64,
    pub bad_entries: u64,
    pub step_errors: u64,
    pub trace_dropped: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
}

#[derive(Clone)]
enum Proposal {
    Write(Vec<u8>),
    Conf(ConfChange),
}

struct Waiter {
    ticket: u64,
    deadline: Instant,
}

struct LinRead {
    ticket: u64,
    key: String,
    deadline: Instant,
    /// Set once raft has confirmed the read index.
    index: Option<u64>,
}

struct SeqRead {
    ticket: u64,
    key: String,
    min_index: u64,
    deadline: Instant,
}

struct Peer {
    detector: PhiAccrual,
    last_heard: Option<Instant>,
}

/// A raft-rs node with the KV state machine around it. See the module docs.
pub struct Node<S: LogStore> {
    cfg: NodeConfig,
    raw: RawNode<S>,
    sm: StateMachine,
    rng: Rng,
    lamport: Lamport,
    vclock: VectorClock,
    event_seq: u64,
    trace: Vec<TraceEvent>,
    peers: BTreeMap<u64, Peer>,
    next_tick: Instant,
    /// Ticks so far (heartbeat frames go every `heartbeat_ticks`).
    ticks: u64,
    now: Instant,
    writes: HashMap<(u64, u64), Vec<Waiter>>,
    /// Session writes in flight: their proposals, re-proposed when the leader changes (raft
    /// drops a proposal forwarded to a leader that died; the session makes a repeat harmless).
    proposals: BTreeMap<(u64, u64), Proposal>,
    repropose: bool,
    lin_reads: BTreeMap<u64, LinRead>,
    seq_reads: Vec<SeqRead>,
    outbox: Vec<Output>,
    snap_reports: Vec<u64>,
    next_read_ctx: u64,
    next_anon: u64,
    last_snapshot: u64,
    snapshot_now: bool,
    failed: Option<String>,
    counters: NodeCounters,
    /// (term, role) when the election timeout was last drawn.
    timeout_key: Option<(u64, &'static str)>,
}

/// Election timeouts in ticks, `[lo, hi)`: `[election, election * 3 / 2 + 1)`.
fn election_range(election_ticks: usize) -> (usize, usize) {
    (election_ticks, election_ticks + election_ticks / 2 + 1)
}

fn store_err(e: std::io::Error) -> String {
    format!("log store write failed: {e}")
}

fn role_name(r: StateRole) -> &'static str {
    match r {
        StateRole::Leader => "leader",
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "pre-candidate",
    }
}

fn write_label(op: &WriteOp) -> String {
    match op {
        WriteOp::Put { key, .. } => format!("put {key}"),
        WriteOp::Delete { key } => format!("delete {key}"),
        WriteOp::Cas { key, .. } => format!("cas {key}"),
    }
}

fn msg_label(m: &Message) -> String {
    let t = m.get_msg_type();
    match t {
        MessageType::MsgAppend => {
            let n = m.entries.len();
            match (m.entries.first(), m.entries.last()) {
                (Some(a), Some(b)) if n > 1 => format!(
                    "MsgAppend idx {}..{} commit {} t{}",
                    a.index, b.index, m.commit, m.term
                ),
                (Some(a), _) => {
                    format!("MsgAppend idx {} commit {} t{}", a.index, m.commit, m.term)
                }
                _ => format!("MsgAppend (empty) commit {} t{}", m.commit, m.term),
            }
        }
        MessageType::MsgAppendResponse => {
            if m.reject {
                format!("MsgAppendResponse reject idx {} t{}", m.index, m.term)
            } else {
                format!("MsgAppendResponse idx {} t{}", m.index, m.term)
            }
        }
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
            format!("{t:?} t{} last {}", m.term, m.index)
        }
        MessageType::MsgRequestVoteResponse | MessageType::MsgRequestPreVoteResponse => {
            let v = if m.reject { "reject" } else { "grant" };
            format!("{t:?} {v} t{}", m.term)
        }
        MessageType::MsgSnapshot => format!(
            "MsgSnapshot idx {} t{}",
            m.get_snapshot().get_metadata().index,
            m.term
        ),
        MessageType::MsgReadIndex | MessageType::MsgReadIndexResp => {
            format!("{t:?} idx {} t{}", m.index, m.term)
        }
        MessageType::MsgHeartbeat if !m.context.is_empty() => {
            format!("MsgHeartbeat (read index) commit {} t{}", m.commit, m.term)
        }
        MessageType::MsgHeartbeatResponse if !m.context.is_empty() => {
            format!("MsgHeartbeatResponse (read index) t{}", m.term)
        }
        _ => format!("{t:?} t{}", m.term),
    }
}

/// Raft heartbeats without a read-index context are as frequent as our own heartbeat frames.
fn is_plain_heartbeat(m: &Message) -> bool {
    matches!(
        m.get_msg_type(),
        MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
    ) && m.context.is_empty()
}

impl<S: LogStore> Node<S> {
    /// A node over `store`, with the state machine restored from the store's snapshot; the
    /// committed entries after it are re-applied by raft on the first polls.
    pub fn new(cfg: NodeConfig, store: S, now: Instant) -> Result<Self, NodeError> {
        let first = store
            .first_index()
            .map_err(|e| NodeError::Store(e.to_string()))?;
        let (sm, applied) = if first > 1 {
            let snap = store
                .snapshot(0, cfg.id)
                .map_err(|e| NodeError::Store(e.to_string()))?;
            let sm = StateMachine::restore(&snap.data).map_err(NodeError::Snapshot)?;
            let idx = snap.get_metadata().index.max(sm.applied());
            (sm, idx)
        } else {
            (StateMachine::new(), 0)
        };
        let rc = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            // raft draws from [min, max) with a thread RNG; the node redraws from its own.
            min_election_tick: election_range(cfg.election_ticks).0,
            max_election_tick: election_range(cfg.election_ticks).1,
            applied,
            pre_vote: cfg.pre_vote,
            check_quorum: cfg.check_quorum,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        rc.validate().map_err(|e| NodeError::Raft(e.to_string()))?;
        let logger = slog::Logger::root(slog_stdlog::StdLog.fuse(), slog::o!("node" => cfg.id));
        let raw = RawNode::new(&rc, store, &logger).map_err(|e| NodeError::Raft(e.to_string()))?;
        let mut node = Node {
            rng: Rng::new(cfg.seed),
            next_tick: now + cfg.tick,
            ticks: 0,
            now,
            raw,
            sm,
            lamport: Lamport::default(),
            vclock: VectorClock::default(),
            event_seq: 0,
            trace: Vec::new(),
            peers: BTreeMap::new(),
            writes: HashMap::new(),
            proposals: BTreeMap::new(),
            repropose: false,
            lin_reads: BTreeMap::new(),
            seq_reads: Vec::new(),
            outbox: Vec::new(),
            snap_reports: Vec::new(),
            next_read_ctx: 1,
            next_anon: 1,
            last_snapshot: applied,
            snapshot_now: false,
            failed: None,
            counters: NodeCounters::default(),
            timeout_key: None,
            cfg,
        };
        node.fix_election_timeout();
        node.sync_peers();
        let label = format!("started, applied {applied}");
        node.local_event(label);
        Ok(node)
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    pub fn counters(&self) -> NodeCounters {
        self.counters
    }

    /// The state machine (for tests and the simulator's convergence checks).
    pub fn state_machine(&self) -> &StateMachine {
        &self.sm
    }

    /// `Some(reason)` once the node stopped (a store write failed, or raft panicked); it then
    /// answers every request `Unavailable` and must be restarted from its store.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader(&self) -> Option<u64> {
        match self.raw.raft.leader_id {
            0 => None,
            l => Some(l),
        }
    }

    /// Raft's current election timeout in ticks (randomised by the node's seeded RNG).
    pub fn election_timeout_ticks(&self) -> usize {
        self.raw.raft.randomized_election_timeout()
    }

    fn fix_election_timeout(&mut self) {
        // raft re-randomises on every reset (become follower/candidate/leader), each of which
        // changes the term or the role: redraw from our seeded RNG whenever those change.
        let now = (self.raw.raft.term, role_name(self.raw.raft.state));
        if self.timeout_key != Some(now) {
            self.timeout_key = Some(now);
            let (lo, hi) = election_range(self.cfg.election_ticks);
            let t = self.rng.gen_range(lo as u64, hi as u64) as usize;
            self.raw.raft.set_randomized_election_timeout(t);
        }
    }

    fn members(&self) -> BTreeSet<u64> {
        let conf = self.raw.raft.prs().conf();
        let mut m: BTreeSet<u64> = conf.voters().ids().iter().collect();
        m.extend(conf.learners().iter().copied());
        m
    }

    fn sync_peers(&mut self) {
        let members = self.members();
        let me = self.cfg.id;
        let tick = self.cfg.tick * self.cfg.heartbeat_ticks.max(1) as u32;
        self.peers.retain(|id, _| members.contains(id));
        for id in members {
            if id != me {
                self.peers.entry(id).or_insert_with(|| Peer {
                    detector: PhiAccrual::new(PhiConfig::for_heartbeat(tick)),
                    last_heard: None,
                });
            }
        }
    }

    // ---- logical time and trace ----

    fn push_trace(&mut self, kind: EventKind, label: String) -> u64 {
        self.event_seq += 1;
        if self.trace.len() >= self.cfg.max_trace {
            let drop = self.trace.len() + 1 - self.cfg.max_trace;
            self.trace.drain(..drop);
            self.counters.trace_dropped += drop as u64;
        }
        self.trace.push(TraceEvent {
            node: self.cfg.id,
            seq: self.event_seq,
            lamport: self.lamport.now(),
            vclock: self.vclock.clone(),
            kind,
            label,
            wall_us: self.now.total_micros(),
        });
        self.event_seq
    }

    fn local_event(&mut self, label: String) {
        self.lamport.tick();
        self.vclock.increment(self.cfg.id);
        self.push_trace(EventKind::Local, label);
    }

    fn frame_to(&mut self, to: u64, kind: FrameKind, body: Vec<u8>, label: Option<String>) {
        let event = match label {
            Some(label) => {
                self.lamport.tick();
                self.vclock.increment(self.cfg.id);
                let seq = self.event_seq + 1;
                self.push_trace(
                    EventKind::Send {
                        to,
                        msg: MsgId {
                            from: self.cfg.id,
                            seq,
                        },
                    },
                    label,
                )
            }
            None => 0,
        };
        let mut vc = Vec::new();
        self.vclock.encode(&mut vc);
        let frame = Frame {
            kind,
            sender: self.cfg.id,
            lamport: self.lamport.now(),
            event,
            vclock: vc,
            body,
        };
        self.outbox.push(Output::Send {
            to,
            frame: frame.encode(),
        });
    }

    fn send_msgs(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            let body = match m.write_to_bytes() {
                Ok(b) => b,
                Err(_) => continue,
            };
            let label = if is_plain_heartbeat(&m) && !self.cfg.trace_heartbeats {
                None
            } else {
                Some(msg_label(&m))
            };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snap_reports.push(m.to);
            }
            self.frame_to(m.to, FrameKind::Raft, body, label);
        }
    }

    // ---- inputs ----

    /// One frame from peer `from`. Bad frames are counted and dropped.
    pub fn on_frame(&mut self, from: u64, frame: &[u8], now: Instant) {
        self.now = self.now.max(now);
        if self.failed.is_some() {
            return;
        }
        let f = match Frame::decode(frame) {
            Ok(f) if f.sender == from && from != self.cfg.id => f,
            _ => {
                self.counters.bad_frames += 1;
                return;
            }
        };
        let remote_vc = match VectorClock::decode(&f.vclock) {
            Ok((vc, _)) => vc,
            Err(_) => {
                self.counters.bad_frames += 1;
                return;
            }
        };
        let msg = match f.kind {
            FrameKind::Heartbeat => None,
            FrameKind::Raft => match Message::parse_from_bytes(&f.body) {
                Ok(m) if m.from == from && m.to == self.cfg.id => {
                    // What would make raft panic (and so fail this node) is refused here.
                    if let Err(why) = guard::check(&m, &self.raw.raft.raft_log, self.raw.raft.term)
                    {
                        log::debug!(
                            "node {}: dropped raft message from {from}: {why}",
                            self.cfg.id
                        );
                        self.counters.bad_frames += 1;
                        return;
                    }
                    Some(m)
                }
                _ => {
                    self.counters.bad_frames += 1;
                    return;
                }
            },
        };
        if let Some(p) = self.peers.get_mut(&from) {
            p.last_heard = Some(now);
            if f.kind == FrameKind::Heartbeat {
                p.detector.heartbeat(now);
            }
        }
        let traced = f.event != 0;
        if traced {
            self.lamport.observe(f.lamport);
            self.vclock.merge(&remote_vc);
            self.vclock.increment(self.cfg.id);
            let label = match &msg {
                Some(m) => msg_label(m),
                None => "heartbeat".to_string(),
            };
            self.push_trace(
                EventKind::Recv {
                    from,
                    msg: MsgId { from, seq: f.event },
                },
                label,
            );
        }
        if let Some(m) = msg {
            let raw = &mut self.raw;
            match catch_unwind(AssertUnwindSafe(|| raw.step(m))) {
                Ok(Ok(())) => {}
                Ok(Err(_)) => self.counters.step_errors += 1,
                Err(_) => self.fail(format!("raft panicked on a message from {from}")),
            }
            self.fix_election_timeout();
        }
    }

    /// The driver could not reach peer `id` (raft then probes it gently).
    pub fn peer_unreachable(&mut self, id: u64) {
        if self.failed.is_none() {
            self.raw.report_unreachable(id);
        }
    }

    fn reply(&mut self, ticket: u64, outcome: Outcome, index: u64) {
        self.outbox.push(Output::Reply {
            ticket,
            resp: Response {
                outcome,
                served_by: self.cfg.id,
                index,
            },
        });
    }

    fn not_leader(&self) -> Outcome {
        Outcome::NotLeader {
            leader: self.leader(),
        }
    }

    fn session_key(&mut self, req: &Request) -> (u64, u64) {
        if req.client_id != 0 {
            return (req.client_id, req.seq);
        }
        // No session: a node-unique seq under client 0 (never deduplicated by the state machine).
        let seq = (self.cfg.id << 40) | self.next_anon;
        self.next_anon += 1;
        (0, seq)
    }

    /// A client request; answered later by an `Output::Reply { ticket }` from `poll`.
    pub fn submit(&mut self, ticket: u64, req: Request, now: Instant) {
        self.now = self.now.max(now);
        if let Some(f) = &self.failed {
            let why = format!("node failed: {f}");
            self.reply(ticket, Outcome::Unavailable(why), 0);
            return;
        }
        let deadline = now + self.cfg.request_timeout;
        match req.op.clone() {
            Op::Put { key, value } => {
                self.submit_write(ticket, &req, WriteOp::Put { key, value }, deadline)
            }
            Op::Delete { key } => {
                self.submit_write(ticket, &req, WriteOp::Delete { key }, deadline)
            }
            Op::Cas { key, expected, new } => {
                self.submit_write(ticket, &req, WriteOp::Cas { key, expected, new }, deadline)
            }
            Op::Get {
                key,
                consistency,
                min_index,
            } => self.submit_read(ticket, key, consistency, min_index, deadline),
            Op::AddNode { id, addr } => {
                self.submit_conf(ticket, &req, ConfChangeType::AddNode, id, addr, deadline)
            }
            Op::RemoveNode { id } => self.submit_conf(
                ticket,
                &req,
                ConfChangeType::RemoveNode,
                id,
                String::new(),
                deadline,
            ),
        }
        self.fix_election_timeout();
    }

    fn answer_write(&mut self, ticket: u64, r: WriteResult, index: u64) {
        let outcome = match r {
            WriteResult::Done => Outcome::Done,
            WriteResult::CasFailed { current } => Outcome::CasFailed { current },
            WriteResult::Stale => Outcome::Unavailable(
                "request seq older than the session's remembered window".into(),
            ),
        };
        self.reply(ticket, outcome, index);
    }

    fn submit_write(&mut self, ticket: u64, req: &Request, op: WriteOp, deadline: Instant) {
        let (client_id, seq) = self.session_key(req);
        if let Some((r, idx)) = self.sm.session_result(client_id, seq) {
            self.answer_write(ticket, r, idx);
            return;
        }
        let cmd = Command { client_id, seq, op };
        let data = cmd.encode();
        match self.raw.propose(vec![], data.clone()) {
            Ok(()) => {
                self.writes
                    .entry((client_id, seq))
                    .or_default()
                    .push(Waiter { ticket, deadline });
                if client_id != 0 {
                    self.proposals
                        .insert((client_id, seq), Proposal::Write(data));
                }
            }
            Err(_) => {
                let o = self.not_leader();
                self.reply(ticket, o, 0);
            }
        }
    }

    fn submit_conf(
        &mut self,
        ticket: u64,
        req: &Request,
        change: ConfChangeType,
        id: u64,
        addr: String,
        deadline: Instant,
    ) {
        let (client_id, seq) = self.session_key(req);
        if let Some((r, idx)) = self.sm.session_result(client_id, seq) {
            self.answer_write(ticket, r, idx);
            return;
        }
        if self.is_leader() && self.raw.raft.has_pending_conf() {
            self.reply(
                ticket,
                Outcome::Unavailable("another membership change is in progress".into()),
                0,
            );
            return;
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(change);
        cc.node_id = id;
        cc.context = ConfContext {
            client_id,
            seq,
            addr,
        }
        .encode()
        .into();
        match self.raw.propose_conf_change(vec![], cc.clone()) {
            Ok(()) => {
                self.writes
                    .entry((client_id, seq))
                    .or_default()
                    .push(Waiter { ticket, deadline });
                if client_id != 0 {
                    self.proposals.insert((client_id, seq), Proposal::Conf(cc));
                }
            }
            Err(_) => {
                let o = self.not_leader();
                self.reply(ticket, o, 0);
            }
        }
    }

    fn submit_read(
        &mut self,
        ticket: u64,
        key: String,
        consistency: Consistency,
        min_index: u64,
        deadline: Instant,
    ) {
        match consistency {
            Consistency::Eventual => self.serve_read(ticket, &key),
            Consistency::Sequential => {
                if self.sm.applied() >= min_index {
                    self.serve_read(ticket, &key);
                } else {
                    self.seq_reads.push(SeqRead {
                        ticket,
                        key,
                        min_index,
                        deadline,
                    });
                }
            }
            Consistency::Linearizable => {
                if self.leader().is_none() {
                    self.reply(
                        ticket,
                        Outcome::Unavailable("no leader known (no quorum reachable)".into()),
                        0,
                    );
                    return;
                }
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                self.lin_reads.insert(
                    ctx,
                    LinRead {
                        ticket,
                        key,
                        deadline,
                        index: None,
                    },
                );
                self.request_read_index(ctx);
            }
        }
    }

    fn request_read_index(&mut self, ctx: u64) {
        // A new leader ignores ReadIndex until it has committed an entry of its term; such reads
        // are asked again on the next tick.
        if self.is_leader() && !self.raw.raft.commit_to_current_term() {
            return;
        }
        if self.leader().is_some() {
            self.raw.read_index(ctx.to_be_bytes().to_vec());
        }
    }

    fn serve_read(&mut self, ticket: u64, key: &str) {
        let v = self.sm.get(key).cloned();
        let idx = self.sm.applied();
        self.reply(ticket, Outcome::Value(v), idx);
    }

    // ---- poll ----

    /// Ticks raft, handles every Ready (persist, apply, send), expires requests, and appends
    /// what to send and reply to `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.now = self.now.max(now);
        if self.failed.is_none() {
            let mut ticks = 0;
            while self.next_tick <= now {
                ticks += 1;
                if ticks > 2 * self.cfg.election_ticks {
                    // The driver stalled: do not replay a long backlog of ticks at once.
                    self.next_tick = now + self.cfg.tick;
                    break;
                }
                self.on_tick();
                self.next_tick += self.cfg.tick;
            }
            for _ in 0..64 {
                if self.repropose && self.failed.is_none() {
                    self.repropose = false;
                    self.repropose_all();
                }
                if self.failed.is_some() || !self.raw.has_ready() {
                    break;
                }
                if let Err(e) = self.handle_ready() {
                    self.fail(e);
                }
                self.fix_election_timeout();
            }
            for to in std::mem::take(&mut self.snap_reports) {
                // Optimistic: if the snapshot is lost, the follower rejects the next append and
                // the leader probes back and sends another.
                self.raw.report_snapshot(to, SnapshotStatus::Finish);
            }
        }
        self.expire(now);
        out.append(&mut self.outbox);
    }

    fn repropose_all(&mut self) {
        self.proposals.retain(|k, _| self.writes.contains_key(k));
        let all: Vec<Proposal> = self.proposals.values().cloned().collect();
        for p in all {
            let _ = match p {
                Proposal::Write(data) => self.raw.propose(vec![], data),
                Proposal::Conf(cc) => self.raw.propose_conf_change(vec![], cc),
            };
        }
        self.fix_election_timeout();
    }

    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            self.local_event(format!("failed: {why}"));
            self.failed = Some(why);
        }
    }

    fn on_tick(&mut self) {
        self.raw.tick();
        self.fix_election_timeout();
        self.sync_peers();
        self.ticks += 1;
        if !self
            .ticks
            .is_multiple_of(self.cfg.heartbeat_ticks.max(1) as u64)
        {
            return;
        }
        let peers: Vec<u64> = self.peers.keys().copied().collect();
        for p in peers {
            let label = self.cfg.trace_heartbeats.then(|| "heartbeat".to_string());
            self.frame_to(p, FrameKind::Heartbeat, Vec::new(), label);
        }
        let unconfirmed: Vec<u64> = self
            .lin_reads
            .iter()
            .filter(|(_, r)| r.index.is_none())
            .map(|(c, _)| *c)
            .collect();
        for ctx in unconfirmed {
            self.request_read_index(ctx);
        }
    }

    fn handle_ready(&mut self) -> Result<(), String> {
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            if ss.leader_id != 0 {
                self.repropose = true;
            }
            let label = match ss.raft_state {
                StateRole::Leader => format!("became leader t{}", self.raw.raft.term),
                StateRole::Follower if ss.leader_id != 0 => {
                    format!("follower of n{} t{}", ss.leader_id, self.raw.raft.term)
                }
                r => format!("became {} t{}", role_name(r), self.raw.raft.term),
            };
            self.local_event(label);
        }
        let msgs = rd.take_messages();
        self.send_msgs(msgs);
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.install_snapshot(&snap)?;
        }
        let committed = rd.take_committed_entries();
        self.apply_entries(committed)?;
        // Entries and hard state in one durable write (DiskLog: one fdatasync per Ready).
        if !rd.entries().is_empty() || rd.hs().is_some() {
            self.raw
                .store()
                .persist(rd.entries(), rd.hs())
                .map_err(store_err)?;
        }
        let persisted = rd.take_persisted_messages();
        self.send_msgs(persisted);
        for rs in rd.take_read_states() {
            if rs.request_ctx.len() == 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rs.request_ctx);
                if let Some(r) = self.lin_reads.get_mut(&u64::from_be_bytes(b)) {
                    if r.index.is_none() {
                        r.index = Some(rs.index);
                    }
                }
            }
        }
        let mut light = self.raw.advance(rd);
        if light.commit_index().is_some() {
            let hs = self.raw.raft.hard_state();
            self.raw.store().set_hardstate(&hs).map_err(store_err)?;
        }
        let msgs = light.take_messages();
        self.send_msgs(msgs);
        let committed = light.take_committed_entries();
        self.apply_entries(committed)?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        self.serve_waiting_reads();
        Ok(())
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), String> {
        let sm = StateMachine::restore(&snap.data)?;
        self.raw.store().apply_snapshot(snap).map_err(store_err)?;
        let idx = snap.get_metadata().index;
        self.sm = sm;
        self.sm.set_applied(idx);
        self.last_snapshot = idx;
        self.counters.snapshots_installed += 1;
        self.local_event(format!("installed snapshot @{idx}"));
        self.sync_peers();
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        for e in entries {
            if e.index <= self.sm.applied() {
                continue;
            }
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    if e.data.is_empty() {
                        self.sm.set_applied(e.index);
                        continue;
                    }
                    match Command::decode(&e.data) {
                        Some(cmd) => {
                            let r = self.sm.apply(e.index, &cmd);
                            let label = format!("apply {} @{}", write_label(&cmd.op), e.index);
                            self.local_event(label);
                            if let Some(ws) = self.writes.remove(&(cmd.client_id, cmd.seq)) {
                                for w in ws {
                                    self.answer_write(w.ticket, r.clone(), e.index);
                                }
                            }
                        }
                        None => {
                            self.counters.bad_entries += 1;
                            self.sm.set_applied(e.index);
                        }
                    }
                }
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    if cc.merge_from_bytes(&e.data).is_err() {
                        self.counters.bad_entries += 1;
                        self.sm.set_applied(e.index);
                        continue;
                    }
                    let ctx = ConfContext::decode(&cc.context);
                    let applied =
                        catch_unwind(AssertUnwindSafe(|| self.raw.apply_conf_change(&cc)));
                    let outcome = match applied {
                        Ok(Ok(cs)) => {
                            self.raw.store().set_conf_state(&cs).map_err(store_err)?;
                            let (addr, verb) = match cc.get_change_type() {
                                ConfChangeType::RemoveNode => (None, "remove"),
                                _ => (
                                    Some(ctx.as_ref().map(|c| c.addr.as_str()).unwrap_or("")),
                                    "add",
                                ),
                            };
                            self.sm
                                .apply_membership(e.index, cc.node_id, addr, ctx.as_ref());
                            if verb == "add" {
                                // A new member starts empty: compact so raft catches it up by
                                // snapshot (carrying the state machine), not from entry 1.
                                self.snapshot_now = true;
                            }
                            self.sync_peers();
                            self.local_event(format!(
                                "conf change {verb} n{} @{}",
                                cc.node_id, e.index
                            ));
                            Outcome::Done
                        }
                        Ok(Err(err)) => {
                            self.counters.bad_entries += 1;
                            self.sm.set_applied(e.index);
                            Outcome::Unavailable(format!("membership change refused: {err}"))
                        }
                        Err(_) => return Err("raft panicked applying a conf change".into()),
                    };
                    if let Some(c) = ctx {
                        if let Some(ws) = self.writes.remove(&(c.client_id, c.seq)) {
                            for w in ws {
                                self.reply(w.ticket, outcome.clone(), e.index);
                            }
                        }
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    // We never propose joint changes.
                    self.counters.bad_entries += 1;
                    self.sm.set_applied(e.index);
                }
            }
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let applied = self.sm.applied();
        let due = applied >= self.last_snapshot + self.cfg.snapshot_every.max(1);
        if !(due || self.snapshot_now) || applied <= self.last_snapshot {
            self.snapshot_now = false;
            return Ok(());
        }
        self.snapshot_now = false;
        let cs = self.raw.raft.prs().conf().to_conf_state();
        self.raw
            .store()
            .compact(applied, &cs, self.sm.snapshot())
            .map_err(store_err)?;
        self.last_snapshot = applied;
        self.counters.snapshots_taken += 1;
        self.local_event(format!("snapshot @{applied}"));
        Ok(())
    }

    fn serve_waiting_reads(&mut self) {
        let applied = self.sm.applied();
        let ready: Vec<u64> = self
            .lin_reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(c, _)| *c)
            .collect();
        for c in ready {
            if let Some(r) = self.lin_reads.remove(&c) {
                self.serve_read(r.ticket, &r.key);
            }
        }
        let (ready, waiting): (Vec<SeqRead>, Vec<SeqRead>) = std::mem::take(&mut self.seq_reads)
            .into_iter()
            .partition(|r| r.min_index <= applied);
        self.seq_reads = waiting;
        for r in ready {
            self.serve_read(r.ticket, &r.key);
        }
    }

    fn expire(&mut self, now: Instant) {
        let why = |what: &str, t: Duration| {
            Outcome::Unavailable(format!("{what} timed out after {} ms", t.as_millis()))
        };
        let t = self.cfg.request_timeout;
        let mut expired = Vec::new();
        self.writes.retain(|_, ws| {
            ws.retain(|w| {
                if w.deadline <= now {
                    expired.push(w.ticket);
                    false
                } else {
                    true
                }
            });
            !ws.is_empty()
        });
        for ticket in expired {
            self.reply(ticket, why("write (outcome unknown)", t), 0);
        }
        let gone: Vec<u64> = self
            .lin_reads
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in gone {
            if let Some(r) = self.lin_reads.remove(&c) {
                self.reply(r.ticket, why("linearizable read", t), 0);
            }
        }
        let (gone, keep): (Vec<SeqRead>, Vec<SeqRead>) = std::mem::take(&mut self.seq_reads)
            .into_iter()
            .partition(|r| r.deadline <= now);
        self.seq_reads = keep;
        for r in gone {
            self.reply(r.ticket, why("sequential read", t), 0);
        }
    }

    /// When `poll` wants to run next: the next tick or request deadline, or now if raft has
    /// work pending.
    pub fn next_deadline(&self) -> Instant {
        if self.failed.is_none() && self.raw.has_ready() {
            return self.now;
        }
        let mut d = self.next_tick;
        for ws in self.writes.values() {
            for w in ws {
                d = d.min(w.deadline);
            }
        }
        for r in self.lin_reads.values() {
            d = d.min(r.deadline);
        }
        for r in &self.seq_reads {
            d = d.min(r.deadline);
        }
        d
    }

    pub fn status(&self, now: Instant) -> Status {
        let raft = &self.raw.raft;
        let members = self
            .members()
            .into_iter()
            .map(|id| Member {
                id,
                addr: self.sm.member_addr(id),
            })
            .collect();
        let leader = raft.state == StateRole::Leader;
        let peers = self
            .peers
            .iter()
            .map(|(&id, p)| {
                let phi = p.detector.phi(now);
                PeerStatus {
                    id,
                    phi,
                    suspected: p.detector.suspected(now),
                    last_heard_ms: p
                        .last_heard
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    match_index: if leader {
                        raft.prs().get(id).map_or(0, |pr| pr.matched)
                    } else {
                        0
                    },
                }
            })
            .collect();
        Status {
            id: self.cfg.id,
            role: match self.failed {
                Some(_) => "failed".to_string(),
                None => role_name(raft.state).to_string(),
            },
            term: raft.term,
            leader: self.leader(),
            commit: raft.raft_log.committed,
            applied: self.sm.applied(),
            lamport: self.lamport.now(),
            members,
            peers,
        }
    }

    /// Moves the trace events recorded since the last call into `out`.
    pub fn drain_trace(&mut self, out: &mut Vec<TraceEvent>) {
        out.append(&mut self.trace);
    }
}
