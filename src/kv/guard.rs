//! Checks on a peer's raft message before raft-rs sees it.
//!
//! raft-rs trusts its peers: a message that breaks an invariant the
//! protocol guarantees between honest nodes (a vote request for term 0, an
//! empty forwarded proposal, a heartbeat committing past the end of our log,
//! appended entries that skip or repeat indexes, a snapshot whose membership
//! cannot be restored) reaches a `fatal!` inside raft, which panics. The node
//! catches that panic, but a raft that panicked half-way through a step is
//! in an unknown state, so the node stops for good ("failed"). One
//! malformed frame from an authenticated peer (a bug, a bit flip past the
//! TLS record check, a compromised member) would then take a node out of
//! the cluster. [`check`] rejects such a message first; the node counts it
//! (`NodeCounters::bad_frames`) and drops it, as it drops any bad frame.
//!
//! Every rule is one an honest raft-rs peer of this cluster never breaks,
//! so no legitimate message is refused; each is tested in this module and
//! the whole set is fuzzed through `Node::on_frame` (fuzz target `kv_node`).

use crate::kv::sm::StateMachine;
use raft::prelude::{ConfState, Message, MessageType, Snapshot};
use raft::{RaftLog, Storage};
use std::collections::BTreeSet;
use std::fmt;

/// Why a peer's raft message was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A message type raft only makes locally (tick, campaign, reports).
    LocalType(MessageType),
    /// A message type that must carry its sender's term, with term 0.
    NoTerm(MessageType),
    /// A forwarded proposal with no entries.
    EmptyProposal,
    /// Appended entries whose indexes do not follow the message's index one by one.
    EntriesNotContiguous,
    /// Appended entries whose terms go down, start below the message's log term, or exceed the
    /// message's term.
    EntryTerms,
    /// A heartbeat committing an index past the end of our log.
    CommitBeyondLog { commit: u64, last_index: u64 },
    /// A snapshot at index or term 0.
    EmptySnapshot,
    /// A snapshot whose membership this cluster cannot restore (joint, duplicate, overlapping
    /// or no voters).
    SnapshotMembership,
    /// A snapshot whose data is not a state machine.
    SnapshotData(String),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::LocalType(t) => write!(f, "{t:?} is a local message"),
            Rejection::NoTerm(t) => write!(f, "{t:?} without a term"),
            Rejection::EmptyProposal => write!(f, "empty proposal"),
            Rejection::EntriesNotContiguous => write!(f, "entries not contiguous"),
            Rejection::EntryTerms => write!(f, "entry terms out of order"),
            Rejection::CommitBeyondLog { commit, last_index } => {
                write!(f, "commit {commit} beyond our last index {last_index}")
            }
            Rejection::EmptySnapshot => write!(f, "snapshot at index or term 0"),
            Rejection::SnapshotMembership => write!(f, "snapshot membership not restorable"),
            Rejection::SnapshotData(e) => write!(f, "snapshot data: {e}"),
        }
    }
}

/// Message types only raft itself creates, never a peer.
fn is_local(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapStatus
            | MessageType::MsgCheckQuorum
    )
}

/// raft-rs sends these with term 0 (a follower forwards them to the leader as if local).
fn may_lack_term(t: MessageType) -> bool {
    matches!(t, MessageType::MsgPropose | MessageType::MsgReadIndex)
}

/// Check a peer's message against our log before stepping it into raft.
pub fn check<S: Storage>(m: &Message, log: &RaftLog<S>) -> Result<(), Rejection> {
    let t = m.get_msg_type();
    if is_local(t) {
        return Err(Rejection::LocalType(t));
    }
    if m.term == 0 && !may_lack_term(t) {
        return Err(Rejection::NoTerm(t));
    }
    match t {
        MessageType::MsgPropose if m.entries.is_empty() => return Err(Rejection::EmptyProposal),
        MessageType::MsgAppend => check_append(m)?,
        MessageType::MsgHeartbeat => {
            let last_index = log.last_index();
            if m.commit > last_index {
                return Err(Rejection::CommitBeyondLog {
                    commit: m.commit,
                    last_index,
                });
            }
        }
        MessageType::MsgSnapshot => check_snapshot(m.get_snapshot())?,
        _ => {}
    }
    Ok(())
}

/// The entries of an append follow `m.index` one by one, with terms from `m.log_term` up to
/// `m.term` that never go down (raft's log matching relies on it: an append whose indexes jump
/// can overwrite committed entries, which raft treats as fatal).
fn check_append(m: &Message) -> Result<(), Rejection> {
    let mut prev_term = m.log_term;
    for (i, e) in m.entries.iter().enumerate() {
        if Some(e.index) != m.index.checked_add(i as u64 + 1) {
            return Err(Rejection::EntriesNotContiguous);
        }
        if e.term < prev_term || e.term > m.term {
            return Err(Rejection::EntryTerms);
        }
        prev_term = e.term;
    }
    Ok(())
}

fn unique(ids: &[u64]) -> Option<BTreeSet<u64>> {
    let set: BTreeSet<u64> = ids.iter().copied().collect();
    (set.len() == ids.len() && !set.contains(&0)).then_some(set)
}

/// A membership raft can restore: this cluster never uses joint consensus, so no outgoing
/// configuration; voters (at least one) and learners distinct, never id 0.
fn restorable(cs: &ConfState) -> bool {
    if !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() || cs.auto_leave {
        return false;
    }
    match (unique(&cs.voters), unique(&cs.learners)) {
        (Some(v), Some(l)) => !v.is_empty() && v.is_disjoint(&l),
        _ => false,
    }
}

fn check_snapshot(s: &Snapshot) -> Result<(), Rejection> {
    let md = s.get_metadata();
    if md.index == 0 || md.term == 0 {
        return Err(Rejection::EmptySnapshot);
    }
    if !restorable(md.get_conf_state()) {
        return Err(Rejection::SnapshotMembership);
    }
    StateMachine::restore(&s.data).map_err(Rejection::SnapshotData)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Entry;
    use raft::storage::MemStorage;

    fn log() -> RaftLog<MemStorage> {
        let store = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        RaftLog::new(store, logger)
    }

    fn msg(t: MessageType, term: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = 2;
        m.to = 1;
        m.term = term;
        m
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn local_message_types_are_refused() {
        for t in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgCheckQuorum,
        ] {
            assert_eq!(check(&msg(t, 1), &log()), Err(Rejection::LocalType(t)));
        }
    }

    #[test]
    fn vote_without_term_is_refused_but_forwarded_proposal_may_lack_one() {
        let t = MessageType::MsgRequestPreVote;
        assert_eq!(check(&msg(t, 0), &log()), Err(Rejection::NoTerm(t)));
        assert_eq!(check(&msg(t, 3), &log()), Ok(()));
        let mut p = msg(MessageType::MsgPropose, 0);
        assert_eq!(check(&p, &log()), Err(Rejection::EmptyProposal));
        p.entries.push(entry(0, 0));
        assert_eq!(check(&p, &log()), Ok(()));
    }

    #[test]
    fn heartbeat_may_not_commit_past_our_log() {
        let mut m = msg(MessageType::MsgHeartbeat, 2);
        m.commit = 0;
        assert_eq!(check(&m, &log()), Ok(()));
        m.commit = 5;
        assert_eq!(
            check(&m, &log()),
            Err(Rejection::CommitBeyondLog {
                commit: 5,
                last_index: 0
            })
        );
    }

    #[test]
    fn appended_entries_follow_the_index_with_sane_terms() {
        let mut m = msg(MessageType::MsgAppend, 3);
        m.index = 4;
        m.log_term = 2;
        m.entries = vec![entry(5, 2), entry(6, 3)].into();
        assert_eq!(check(&m, &log()), Ok(()));
        m.entries = vec![entry(5, 2), entry(5, 3)].into();
        assert_eq!(check(&m, &log()), Err(Rejection::EntriesNotContiguous));
        m.entries = vec![entry(5, 3), entry(6, 2)].into();
        assert_eq!(check(&m, &log()), Err(Rejection::EntryTerms));
        m.entries = vec![entry(5, 4)].into();
        assert_eq!(
            check(&m, &log()),
            Err(Rejection::EntryTerms),
            "above m.term"
        );
        m.index = u64::MAX;
        m.entries = vec![entry(0, 3)].into();
        assert_eq!(check(&m, &log()), Err(Rejection::EntriesNotContiguous));
    }

    #[test]
    fn snapshot_must_be_restorable() {
        let snap = |voters: Vec<u64>, learners: Vec<u64>, data: Vec<u8>| {
            let mut m = msg(MessageType::MsgSnapshot, 2);
            let s = m.mut_snapshot();
            s.mut_metadata().index = 10;
            s.mut_metadata().term = 2;
            s.mut_metadata()
                .set_conf_state(ConfState::from((voters, learners)));
            s.data = data.into();
            m
        };
        let good = StateMachine::new().snapshot();
        assert_eq!(
            check(&snap(vec![1, 2, 3], vec![], good.clone()), &log()),
            Ok(())
        );
        for (v, l) in [
            (vec![], vec![1]),
            (vec![1, 1], vec![]),
            (vec![1, 2], vec![2]),
        ] {
            assert_eq!(
                check(&snap(v, l, good.clone()), &log()),
                Err(Rejection::SnapshotMembership)
            );
        }
        assert!(matches!(
            check(&snap(vec![1], vec![], b"junk".to_vec()), &log()),
            Err(Rejection::SnapshotData(_))
        ));
        let mut joint = snap(vec![1], vec![], good);
        joint
            .mut_snapshot()
            .mut_metadata()
            .mut_conf_state()
            .voters_outgoing = vec![2];
        assert_eq!(check(&joint, &log()), Err(Rejection::SnapshotMembership));
        let mut zero = snap(vec![1], vec![], vec![]);
        zero.mut_snapshot().mut_metadata().index = 0;
        assert_eq!(check(&zero, &log()), Err(Rejection::EmptySnapshot));
    }

    /// Each of these messages, from member 2 in a well-formed frame, made raft-rs panic inside
    /// `Node::on_frame` (or the node fail installing it), which left the node failed for good.
    /// Now each is counted and dropped, and the node goes on to lead the cluster.
    #[test]
    fn malformed_raft_messages_from_a_member_do_not_fail_the_node() {
        use crate::kv::clock::VectorClock;
        use crate::kv::msg::{Frame, FrameKind};
        use crate::kv::node::{Node, NodeConfig, Output};
        use crate::kv::storage::MemLog;
        use crate::time::{Duration, Instant};
        use protobuf::Message as _;

        let frame = |from: u64, m: &Message| {
            let mut vc = Vec::new();
            VectorClock::new().encode(&mut vc);
            Frame {
                kind: FrameKind::Raft,
                sender: from,
                lamport: 0,
                event: 0,
                vclock: vc,
                body: m.write_to_bytes().unwrap(),
            }
            .encode()
        };
        let mut bad = Vec::new();
        let mut hb = msg(MessageType::MsgHeartbeat, 1);
        hb.commit = 100; // raft: "to_commit 100 is out of range [last_index 0]"
        bad.push(hb);
        bad.push(msg(MessageType::MsgRequestPreVote, 0)); // raft: "term should be set"
        let mut snap = msg(MessageType::MsgSnapshot, 1);
        snap.mut_snapshot().mut_metadata().index = 5;
        snap.mut_snapshot().mut_metadata().term = 1;
        snap.mut_snapshot()
            .mut_metadata()
            .set_conf_state(ConfState::from((vec![1, 1, 2], vec![2])));
        bad.push(snap.clone()); // raft: "unable to restore config"
        snap.mut_snapshot()
            .mut_metadata()
            .set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        snap.mut_snapshot().data = b"not a state machine".to_vec().into();
        bad.push(snap); // the node: "bad state machine snapshot"

        let voters = vec![1, 2, 3];
        let mut now = Instant::from_secs(1);
        let mut node = Node::new(
            NodeConfig::new(1, voters.clone()),
            MemLog::new_with_voters(&voters),
            now,
        )
        .unwrap();
        let mut out = Vec::new();
        for (i, m) in bad.iter().enumerate() {
            node.on_frame(2, &frame(2, m), now);
            node.poll(now, &mut out);
            assert_eq!(node.failed(), None, "message {i}: {m:?}");
            assert_eq!(node.counters().bad_frames, i as u64 + 1);
        }
        // Still a working member: it campaigns, and with 2's votes it leads.
        let mut led = false;
        for _ in 0..100 {
            now += Duration::from_millis(100);
            out.clear();
            node.poll(now, &mut out);
            for o in &out {
                let Output::Send { to: 2, frame: f } = o else {
                    continue;
                };
                let f = Frame::decode(f).unwrap();
                let Ok(m) = Message::parse_from_bytes(&f.body) else {
                    continue;
                };
                let t = match m.get_msg_type() {
                    MessageType::MsgRequestPreVote => MessageType::MsgRequestPreVoteResponse,
                    MessageType::MsgRequestVote => MessageType::MsgRequestVoteResponse,
                    _ => continue,
                };
                let mut r = msg(t, m.term);
                r.from = 2;
                node.on_frame(2, &frame(2, &r), now);
            }
            if node.is_leader() {
                led = true;
                break;
            }
        }
        assert!(led, "the node leads after the bad messages");
        assert_eq!(node.counters().bad_frames, bad.len() as u64);
        // An empty forwarded proposal, to the leader: raft "stepped empty MsgProp".
        node.on_frame(2, &frame(2, &msg(MessageType::MsgPropose, 0)), now);
        node.poll(now, &mut out);
        assert_eq!(node.failed(), None);
        assert!(node.is_leader());
        assert_eq!(node.counters().bad_frames, bad.len() as u64 + 1);
    }
}
