//! A KV node (`kv::node::Node`, raft-rs inside) fed frames from its peers:
//! raw bytes through `Node::on_frame`, and structured raft messages from an
//! "authenticated" peer (right sender, right `from`/`to`, well-formed frame)
//! whose every field comes from the fuzzer: any message type, terms,
//! indexes, commit, entries (commands, conf changes, junk), snapshots (valid
//! state, junk, odd membership), read contexts. Time passes and client
//! requests arrive between them, so the node campaigns, leads, follows and
//! applies. The property: a peer's bytes never move the node into its
//! failed state (raft-rs panics on protocol violations; the node must
//! reject such a message before raft sees it, count it and drop it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protobuf::Message as _;
use protobuf::ProtobufEnum as _;
use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType, Snapshot};
use tunstack::kv::clock::VectorClock;
use tunstack::kv::msg::{Frame, FrameKind};
use tunstack::kv::node::{Consistency, Node, NodeConfig, Op, Request};
use tunstack::kv::sm::{Command, StateMachine, WriteOp};
use tunstack::kv::storage::MemLog;
use tunstack::time::{Duration, Instant};

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn b(&mut self) -> u8 {
        self.u8().unwrap_or(0)
    }
    /// Mostly small values (near the node's own terms and indexes), now
    /// and then anything.
    fn num(&mut self) -> u64 {
        let b = self.b();
        if b == 0xff {
            let mut v = 0u64;
            for _ in 0..8 {
                v = v << 8 | self.b() as u64;
            }
            v
        } else {
            (b % 24) as u64
        }
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        a
    }
}

fn ids(bits: u8) -> Vec<u64> {
    (0..4).filter(|i| bits & (1 << i) != 0).map(|i| i + 1).collect()
}

fn entry_data(r: &mut Bytes, kind: EntryType) -> Vec<u8> {
    match (kind, r.b() % 3) {
        (EntryType::EntryNormal, 0) => Command {
            client_id: r.num(),
            seq: r.num(),
            op: WriteOp::Put {
                key: format!("k{}", r.b() % 4),
                value: vec![r.b()],
            },
        }
        .encode(),
        (EntryType::EntryConfChange, 0) => {
            let mut cc = ConfChange::default();
            cc.node_id = r.num();
            cc.set_change_type(match r.b() % 3 {
                0 => ConfChangeType::AddNode,
                1 => ConfChangeType::RemoveNode,
                _ => ConfChangeType::AddLearnerNode,
            });
            cc.write_to_bytes().unwrap_or_default()
        }
        (_, 1) => Vec::new(),
        _ => {
            let n = r.b() as usize % 16;
            r.take(n).to_vec()
        }
    }
}

fn message(r: &mut Bytes, from: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(match MessageType::from_i32((r.b() % 20) as i32) {
        Some(t) => t,
        None => MessageType::MsgAppend,
    });
    m.from = from;
    m.to = 1;
    m.term = r.num();
    m.log_term = r.num();
    m.index = r.num();
    m.commit = r.num();
    let flags = r.b();
    m.reject = flags & 1 != 0;
    m.reject_hint = if flags & 2 != 0 { r.num() } else { 0 };
    if flags & 4 != 0 {
        let n = r.b() as usize % 9;
        m.context = r.take(n).to_vec().into();
    }
    if flags & 8 != 0 {
        m.commit_term = r.num();
    }
    let n = r.b() % 5;
    let mut index = m.index;
    for _ in 0..n {
        let mut e = Entry::default();
        let kind = match r.b() % 4 {
            0 | 1 => EntryType::EntryNormal,
            2 => EntryType::EntryConfChange,
            _ => EntryType::EntryConfChangeV2,
        };
        e.set_entry_type(kind);
        // Mostly the contiguous indexes a leader sends; sometimes anything.
        let how = r.b();
        index = if how & 0x80 != 0 { r.num() } else { index.wrapping_add(1) };
        e.index = index;
        e.term = if how & 0x40 != 0 { r.num() } else { m.term };
        e.data = entry_data(r, kind).into();
        m.entries.push(e);
    }
    if m.get_msg_type() == MessageType::MsgSnapshot || flags & 16 != 0 {
        let mut s = Snapshot::default();
        let md = s.mut_metadata();
        md.index = r.num();
        md.term = r.num();
        let cs = md.mut_conf_state();
        cs.voters = ids(r.b());
        cs.learners = ids(r.b());
        if flags & 32 != 0 {
            cs.voters_outgoing = ids(r.b());
            cs.learners_next = ids(r.b());
            cs.auto_leave = flags & 64 != 0;
        }
        s.data = match r.b() % 3 {
            0 => StateMachine::new().snapshot(),
            1 => Vec::new(),
            _ => {
                let n = r.b() as usize % 16;
                r.take(n).to_vec()
            }
        }
        .into();
        m.set_snapshot(s);
    }
    m
}

fn frame(from: u64, kind: FrameKind, body: Vec<u8>, event: u64) -> Vec<u8> {
    let mut vc = VectorClock::new();
    vc.increment(from);
    let mut v = Vec::new();
    vc.encode(&mut v);
    Frame {
        kind,
        sender: from,
        lamport: event,
        event,
        vclock: v,
        body,
    }
    .encode()
}

/// `KV_NODE_FUZZ_TRACE=1 cargo fuzz run kv_node CRASH` prints what each step fed the node.
fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("KV_NODE_FUZZ_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let voters = vec![1, 2, 3];
    let cfg = NodeConfig {
        snapshot_every: 4,
        ..NodeConfig::new(1, voters.clone())
    };
    let mut now = Instant::from_secs(1);
    let mut node = Node::new(cfg, MemLog::new_with_voters(&voters), now).expect("a node");
    let mut out = Vec::new();
    let mut r = Bytes(data);
    let mut ticket = 0;
    while let Some(op) = r.u8() {
        // Peers 2 and 3, and 4: authenticated (the cluster CA signed it) but no member.
        let from = [2, 3, 4, 2][(op >> 6) as usize];
        match op % 8 {
            // Time passes: ticks, elections, heartbeats, request timeouts.
            0 => {
                now = now + Duration::from_millis(20 * (1 + r.b() as u64));
                node.poll(now, &mut out);
            }
            // Raw bytes as a frame, from a peer or an unknown sender.
            1 => {
                let n = r.b() as usize;
                let bytes = r.take(n).to_vec();
                let sender = [2, 3, 1, 9][(op >> 5 & 3) as usize];
                node.on_frame(sender, &bytes, now);
            }
            // A raft message from an authenticated peer, body as raft encodes it.
            2..=4 => {
                let m = message(&mut r, from);
                if trace() {
                    eprintln!("{now:?} from {from}: {m:?}");
                }
                let body = m.write_to_bytes().unwrap_or_default();
                node.on_frame(from, &frame(from, FrameKind::Raft, body, op as u64), now);
            }
            // The same, its protobuf body then cut or altered.
            5 => {
                let m = message(&mut r, from);
                let mut body = m.write_to_bytes().unwrap_or_default();
                let at = r.b() as usize;
                if !body.is_empty() {
                    let i = at % body.len();
                    body[i] ^= r.b() | 1;
                    if r.b() & 1 != 0 {
                        body.truncate(i);
                    }
                }
                node.on_frame(from, &frame(from, FrameKind::Raft, body, 0), now);
            }
            6 => {
                ticket += 1;
                let key = format!("k{}", r.b() % 4);
                let op = match r.b() % 3 {
                    0 => Op::Put {
                        key,
                        value: vec![r.b()],
                    },
                    1 => Op::Delete { key },
                    _ => Op::Get {
                        key,
                        min_index: r.num(),
                        consistency: match r.b() % 3 {
                            0 => Consistency::Linearizable,
                            1 => Consistency::Sequential,
                            _ => Consistency::Eventual,
                        },
                    },
                };
                let req = Request {
                    client_id: 1 + (r.b() % 3) as u64,
                    seq: ticket,
                    op,
                };
                node.submit(ticket, req, now);
            }
            _ => {
                if r.b() & 1 != 0 {
                    node.peer_unreachable(from);
                } else {
                    node.on_frame(from, &frame(from, FrameKind::Heartbeat, vec![], 0), now);
                }
            }
        }
        out.clear();
        node.poll(now, &mut out);
        if trace() {
            eprintln!("  op {op}: {:?} {:?} sent {:?}", node.status(now).role, node.counters(), out.iter().filter_map(|o| match o { tunstack::kv::node::Output::Send { to, frame } => Frame::decode(frame).ok().and_then(|f| Message::parse_from_bytes(&f.body).ok().map(|m| (*to, m.get_msg_type(), m.index, m.log_term))), _ => None }).collect::<Vec<_>>());
        }
        out.clear();
        if let Some(why) = node.failed() {
            panic!("a peer's frame failed the node: {why}");
        }
    }
});
