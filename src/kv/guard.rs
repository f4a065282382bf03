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

/// Largest term accepted. Honest terms grow by one per election; raft-rs adds to them
/// unchecked (a candidate's term + 1), so a term near `u64::MAX` from a peer would overflow.
pub const MAX_TERM: u64 = 1 << 48;
/// Largest log index (or commit) accepted, for the same reason (index + 1, index + entries).
pub const MAX_INDEX: u64 = 1 << 56;

/// Why a peer's raft message was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A message type raft only makes locally (tick, campaign, reports).
    LocalType(MessageType),
    /// Leadership transfer (MsgTransferLeader, MsgTimeoutNow), which this cluster never uses.
    /// raft-rs would panic forwarding a MsgTransferLeader that carries a term, and a
    /// MsgTimeoutNow makes the node campaign at once: a peer could force elections.
    Transfer(MessageType),
    /// A message type that must carry its sender's term, with term 0.
    NoTerm(MessageType),
    /// A forwarded proposal or read request with a term: raft-rs forwards these as local
    /// messages (term 0) and panics sending one on that carries a term.
    ForwardedWithTerm(MessageType),
    /// A term above [`MAX_TERM`] or an index above [`MAX_INDEX`] anywhere in the message.
    OutOfRange,
    /// A forwarded proposal or read request with no entries (raft-rs's leader reads the
    /// read request's context from its first entry, and panics on an empty one).
    EmptyProposal,
    /// Appended entries whose indexes do not follow the message's index one by one.
    EntriesNotContiguous,
    /// Appended entries whose terms go down, start below the message's log term, are 0, or
    /// exceed the message's term (or a log term above the message's term).
    EntryTerms,
    /// An append after index > 0 whose log term is 0: no entry has term 0, and raft-rs takes
    /// term 0 for "beyond my log", so it would match and commit entries we do not have.
    NoLogTerm,
    /// An append from the current leader whose log term is below the term of our last
    /// committed entry, which every current leader's log holds.
    BelowCommitted { log_term: u64, committed_term: u64 },
    /// A heartbeat committing an index past the end of our log.
    CommitBeyondLog { commit: u64, last_index: u64 },
    /// A snapshot at index or term 0.
    EmptySnapshot,
    /// A snapshot whose membership this cluster cannot restore (joint, duplicate, overlapping
    /// or no voters).
    SnapshotMembership,
    /// A snapshot whose data is not a state machine.
    SnapshotData(String),
    /// A snapshot whose last entry's term is above the term of the message carrying it: a
    /// leader's snapshot holds only entries of its own term or earlier.
    SnapshotTermAboveMessage { snapshot_term: u64, term: u64 },
    /// A snapshot at or below our commit index whose term differs from our entry there: it
    /// contradicts a committed entry. raft-rs would try to restore it (its `restore` only
    /// skips snapshots strictly below the commit index), and the log store, already
    /// compacted past that index, refuses it ("snapshot out of date"), failing the node.
    SnapshotConflictsCommitted {
        index: u64,
        snapshot_term: u64,
        our_term: u64,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::LocalType(t) => write!(f, "{t:?} is a local message"),
            Rejection::Transfer(t) => write!(f, "{t:?}: this cluster never transfers leadership"),
            Rejection::NoTerm(t) => write!(f, "{t:?} without a term"),
            Rejection::ForwardedWithTerm(t) => write!(f, "forwarded {t:?} with a term"),
            Rejection::OutOfRange => write!(f, "term or index out of range"),
            Rejection::EmptyProposal => write!(f, "forwarded proposal or read without entries"),
            Rejection::EntriesNotContiguous => write!(f, "entries not contiguous"),
            Rejection::EntryTerms => write!(f, "entry terms out of order"),
            Rejection::NoLogTerm => write!(f, "append after index > 0 with log term 0"),
            Rejection::CommitBeyondLog { commit, last_index } => {
                write!(f, "commit {commit} beyond our last index {last_index}")
            }
            Rejection::BelowCommitted {
                log_term,
                committed_term,
            } => write!(
                f,
                "append after log term {log_term}, below our committed entry's term {committed_term}"
            ),
            Rejection::EmptySnapshot => write!(f, "snapshot at index or term 0"),
            Rejection::SnapshotMembership => write!(f, "snapshot membership not restorable"),
            Rejection::SnapshotData(e) => write!(f, "snapshot data: {e}"),
            Rejection::SnapshotTermAboveMessage {
                snapshot_term,
                term,
            } => write!(
                f,
                "snapshot of term {snapshot_term} in a message of term {term}"
            ),
            Rejection::SnapshotConflictsCommitted {
                index,
                snapshot_term,
                our_term,
            } => write!(
                f,
                "snapshot at committed index {index} with term {snapshot_term}, ours is {our_term}"
            ),
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

/// raft-rs sends these with term 0 (a follower forwards them to the leader as if local), and
/// every other type with its term.
fn forwarded(t: MessageType) -> bool {
    matches!(t, MessageType::MsgPropose | MessageType::MsgReadIndex)
}

/// Check a peer's message against our log and current `term` before stepping it into raft.
pub fn check<S: Storage>(m: &Message, log: &RaftLog<S>, term: u64) -> Result<(), Rejection> {
    let t = m.get_msg_type();
    if is_local(t) {
        return Err(Rejection::LocalType(t));
    }
    if matches!(
        t,
        MessageType::MsgTransferLeader | MessageType::MsgTimeoutNow
    ) {
        return Err(Rejection::Transfer(t));
    }
    match (forwarded(t), m.term) {
        (true, 0) | (false, 1..) => {}
        (true, _) => return Err(Rejection::ForwardedWithTerm(t)),
        (false, 0) => return Err(Rejection::NoTerm(t)),
    }
    if !in_range(m) {
        return Err(Rejection::OutOfRange);
    }
    match t {
        MessageType::MsgPropose | MessageType::MsgReadIndex if m.entries.is_empty() => {
            return Err(Rejection::EmptyProposal)
        }
        MessageType::MsgAppend => {
            check_append(m)?;
            // From the current leader (or a newer one): raft acts on it. A stale leader's
            // message (lower term) is ignored by raft, and may honestly lag our log.
            if m.term >= term {
                check_append_against_log(m, log)?;
            }
        }
        MessageType::MsgHeartbeat if m.term >= term => {
            let last_index = log.last_index();
            if m.commit > last_index {
                return Err(Rejection::CommitBeyondLog {
                    commit: m.commit,
                    last_index,
                });
            }
        }
        MessageType::MsgSnapshot => {
            check_snapshot(m.get_snapshot())?;
            check_snapshot_against_log(m, log)?;
        }
        _ => {}
    }
    Ok(())
}

/// The entry before an append has a real term (only index 0 has term 0), and the entries
/// follow `m.index` one by one, with terms from `m.log_term` (at least 1) up to `m.term` that
/// never go down (raft's log matching relies on it: an append whose indexes jump
/// can overwrite committed entries, which raft treats as fatal).
fn check_append(m: &Message) -> Result<(), Rejection> {
    if m.index > 0 && m.log_term == 0 {
        return Err(Rejection::NoLogTerm);
    }
    if m.log_term > m.term {
        return Err(Rejection::EntryTerms);
    }
    let mut prev_term = m.log_term.max(1);
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

/// A current leader's log holds every committed entry (Leader Completeness), so an append at
/// or after our commit index comes after an entry whose term is at least that of our last
/// committed entry. raft-rs, rejecting an append, walks back from it to the first entry whose
/// term is not above `m.log_term`; with a lower log term that walk passes our commit index
/// into the compacted log, where no term is known: fatal ("term(1) must be valid").
fn check_append_against_log<S: Storage>(m: &Message, log: &RaftLog<S>) -> Result<(), Rejection> {
    if m.index >= log.committed {
        if let Ok(committed_term) = log.term(log.committed) {
            if m.log_term < committed_term {
                return Err(Rejection::BelowCommitted {
                    log_term: m.log_term,
                    committed_term,
                });
            }
        }
    }
    Ok(())
}

fn in_range(m: &Message) -> bool {
    let md = m.get_snapshot().get_metadata();
    let terms = [m.term, m.log_term, m.commit_term, md.term];
    let indexes = [m.index, m.commit, m.reject_hint, md.index];
    terms.iter().all(|&t| t <= MAX_TERM)
        && indexes.iter().all(|&i| i <= MAX_INDEX)
        && m.entries
            .iter()
            .all(|e| e.term <= MAX_TERM && e.index <= MAX_INDEX)
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

/// A snapshot's term is at most the term of the message carrying it, and a snapshot that does
/// not go past our commit index agrees with our committed entry at its index (Log Matching:
/// the same index and term mean the same log up to there). Found by the `kv_node` fuzz
/// target: a second snapshot at our commit index with another term made raft-rs hand the
/// store a snapshot below its first index, and the node failed.
fn check_snapshot_against_log<S: Storage>(m: &Message, log: &RaftLog<S>) -> Result<(), Rejection> {
    let md = m.get_snapshot().get_metadata();
    if md.term > m.term {
        return Err(Rejection::SnapshotTermAboveMessage {
            snapshot_term: md.term,
            term: m.term,
        });
    }
    if md.index <= log.committed {
        if let Ok(our_term) = log.term(md.index) {
            if our_term != md.term {
                return Err(Rejection::SnapshotConflictsCommitted {
                    index: md.index,
                    snapshot_term: md.term,
                    our_term,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::storage::tests::entry;
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

    /// A well-formed raft frame carrying `m` from node `from`.
    fn frame(from: u64, m: &Message) -> Vec<u8> {
        use crate::kv::clock::VectorClock;
        use crate::kv::msg::{Frame, FrameKind};
        use protobuf::Message as _;
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
    }

    /// Node 1 of voters 1, 2 and 3, on an empty in-memory log.
    fn node_1_of_3(now: crate::time::Instant) -> crate::kv::node::Node<crate::kv::storage::MemLog> {
        let voters = vec![1, 2, 3];
        crate::kv::node::Node::new(
            crate::kv::node::NodeConfig::new(1, voters.clone()),
            crate::kv::storage::MemLog::new_with_voters(&voters),
            now,
        )
        .unwrap()
    }

    #[test]
    fn local_message_types_are_refused() {
        for t in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgCheckQuorum,
        ] {
            assert_eq!(check(&msg(t, 1), &log(), 0), Err(Rejection::LocalType(t)));
        }
    }

    #[test]
    fn vote_without_term_is_refused_but_forwarded_proposal_may_lack_one() {
        let t = MessageType::MsgRequestPreVote;
        assert_eq!(check(&msg(t, 0), &log(), 0), Err(Rejection::NoTerm(t)));
        assert_eq!(check(&msg(t, 3), &log(), 0), Ok(()));
        for t in [MessageType::MsgPropose, MessageType::MsgReadIndex] {
            let mut p = msg(t, 0);
            assert_eq!(check(&p, &log(), 0), Err(Rejection::EmptyProposal));
            p.entries.push(entry(0, 0));
            assert_eq!(check(&p, &log(), 0), Ok(()));
        }
    }

    /// Found by the kv_node fuzz target: a MsgReadIndex with term 12 to a follower, which
    /// forwards it to the leader as raft-rs forwards it, as a local message, and raft's send
    /// panics: "term should not be set when sending MsgReadIndex (was 12)".
    #[test]
    fn forwarded_read_index_or_proposal_with_a_term_is_refused() {
        for t in [MessageType::MsgReadIndex, MessageType::MsgPropose] {
            let mut m = msg(t, 12);
            m.entries.push(entry(0, 0));
            assert_eq!(check(&m, &log(), 0), Err(Rejection::ForwardedWithTerm(t)));
        }
    }

    #[test]
    fn heartbeat_may_not_commit_past_our_log() {
        let mut m = msg(MessageType::MsgHeartbeat, 2);
        m.commit = 0;
        assert_eq!(check(&m, &log(), 0), Ok(()));
        m.commit = 5;
        assert_eq!(
            check(&m, &log(), 0),
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
        assert_eq!(check(&m, &log(), 0), Ok(()));
        m.entries = vec![entry(5, 2), entry(5, 3)].into();
        assert_eq!(check(&m, &log(), 0), Err(Rejection::EntriesNotContiguous));
        m.entries = vec![entry(5, 3), entry(6, 2)].into();
        assert_eq!(check(&m, &log(), 0), Err(Rejection::EntryTerms));
        m.entries = vec![entry(5, 4)].into();
        assert_eq!(
            check(&m, &log(), 0),
            Err(Rejection::EntryTerms),
            "above m.term"
        );
        m.entries = vec![entry(5, 0)].into();
        m.log_term = 0;
        m.index = 4;
        assert_eq!(check(&m, &log(), 0), Err(Rejection::NoLogTerm));
        m.index = 0;
        m.entries = vec![entry(1, 0)].into();
        assert_eq!(check(&m, &log(), 0), Err(Rejection::EntryTerms), "term 0");
        m.entries = vec![entry(1, 1)].into();
        assert_eq!(check(&m, &log(), 0), Ok(()), "the first append of a log");
        m.log_term = 4;
        assert_eq!(
            check(&m, &log(), 0),
            Err(Rejection::EntryTerms),
            "log term above m.term"
        );
        m.log_term = 2;
        m.index = MAX_INDEX;
        m.entries = vec![entry(0, 3)].into();
        assert_eq!(check(&m, &log(), 0), Err(Rejection::EntriesNotContiguous));
    }

    /// Found by the kv_node fuzz target: a MsgTransferLeader with term 12 to a follower,
    /// which forwards it to its leader, and raft's send panics: "term should not be set when
    /// sending MsgTransferLeader (was 12)". Also found: a MsgTimeoutNow at term 2^64 - 1.
    #[test]
    fn leadership_transfer_messages_are_refused() {
        for t in [MessageType::MsgTransferLeader, MessageType::MsgTimeoutNow] {
            assert_eq!(check(&msg(t, 12), &log(), 0), Err(Rejection::Transfer(t)));
        }
    }

    /// Found by the kv_node fuzz target: a message at term 2^64 - 1 (adopted, then a
    /// campaign's term + 1 overflowed inside raft-rs: a panic with overflow checks, a wrap to
    /// term 0 without).
    #[test]
    fn terms_and_indexes_near_u64_max_are_refused() {
        let mut m = msg(MessageType::MsgHeartbeat, u64::MAX);
        assert_eq!(check(&m, &log(), 0), Err(Rejection::OutOfRange));
        m.term = MAX_TERM;
        assert_eq!(check(&m, &log(), 0), Ok(()));
        let mut a = msg(MessageType::MsgAppend, 3);
        a.index = u64::MAX - 1;
        a.log_term = 2;
        assert_eq!(check(&a, &log(), 0), Err(Rejection::OutOfRange));
        a.index = 4;
        a.commit = u64::MAX;
        assert_eq!(check(&a, &log(), 0), Err(Rejection::OutOfRange));
    }

    /// Found by the kv_node fuzz target: entries 1 and 2 (term 8) committed and compacted
    /// into a snapshot, then an append from the leader of term 18 after index 16 with log
    /// term 2. raft-rs rejected it and walked back from index 2 for a term not above 2, into
    /// the compacted index 1: fatal "term(1) must be valid". No current leader sends that (its
    /// log holds our committed entry of term 8); a stale one may, and raft ignores it.
    #[test]
    fn append_whose_log_term_is_below_our_committed_entry_is_refused_from_a_current_leader() {
        let store = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        store.wl().append(&[entry(1, 8), entry(2, 8)]).unwrap();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut log = RaftLog::new(store, logger);
        log.committed = 2; // as RawNode loads it from the hard state
        let mut m = msg(MessageType::MsgAppend, 18);
        m.index = 16;
        m.log_term = 2;
        let below = Err(Rejection::BelowCommitted {
            log_term: 2,
            committed_term: 8,
        });
        assert_eq!(check(&m, &log, 8), below);
        assert_eq!(check(&m, &log, 18), below);
        assert_eq!(
            check(&m, &log, 19),
            Ok(()),
            "a stale leader's: raft ignores it"
        );
        m.log_term = 8;
        assert_eq!(check(&m, &log, 8), Ok(()));
        m.index = 1;
        m.log_term = 2;
        assert_eq!(
            check(&m, &log, 8),
            Ok(()),
            "below our commit: raft answers, no walk"
        );
    }

    /// Found by the kv_node fuzz target: an append at index 11 with log term 0 and commit 16
    /// to an empty log. raft-rs reads term 0 for an index beyond its log, so the append
    /// "matched" and raft committed index 11 of a log of 0 entries: fatal ("to_commit 11 is
    /// out of range [last_index 0]").
    #[test]
    fn append_beyond_our_log_with_log_term_0_is_refused() {
        let mut m = msg(MessageType::MsgAppend, 23);
        m.index = 11;
        m.commit = 16;
        assert_eq!(check(&m, &log(), 0), Err(Rejection::NoLogTerm));
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
            check(&snap(vec![1, 2, 3], vec![], good.clone()), &log(), 0),
            Ok(())
        );
        for (v, l) in [
            (vec![], vec![1]),
            (vec![1, 1], vec![]),
            (vec![1, 2], vec![2]),
        ] {
            assert_eq!(
                check(&snap(v, l, good.clone()), &log(), 0),
                Err(Rejection::SnapshotMembership)
            );
        }
        assert!(matches!(
            check(&snap(vec![1], vec![], b"junk".to_vec()), &log(), 0),
            Err(Rejection::SnapshotData(_))
        ));
        let mut joint = snap(vec![1], vec![], good);
        joint
            .mut_snapshot()
            .mut_metadata()
            .mut_conf_state()
            .voters_outgoing = vec![2];
        assert_eq!(check(&joint, &log(), 0), Err(Rejection::SnapshotMembership));
        let mut zero = snap(vec![1], vec![], vec![]);
        zero.mut_snapshot().mut_metadata().index = 0;
        assert_eq!(check(&zero, &log(), 0), Err(Rejection::EmptySnapshot));
    }

    /// Found by the `kv_node` fuzz target: a snapshot at index 2 of term 12 is installed (commit
    /// 2), then one at the same index with term 23 arrives; raft-rs restores it (it is not below
    /// the commit index) and the store, whose first index is now 3, refused it: the node failed.
    #[test]
    fn snapshot_contradicting_a_committed_entry_or_above_its_message_term_is_refused() {
        use crate::time::Instant;

        let snap = |term: u64, index: u64, snap_term: u64| {
            let mut m = msg(MessageType::MsgSnapshot, term);
            let s = m.mut_snapshot();
            s.mut_metadata().index = index;
            s.mut_metadata().term = snap_term;
            s.mut_metadata()
                .set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
            s.data = StateMachine::new().snapshot().into();
            m
        };
        // The guard alone, against a log committed to index 5 of term 3.
        let mut l = log();
        let ents: Vec<Entry> = (1..=5)
            .map(|i| entry(i, if i < 4 { 2 } else { 3 }))
            .collect();
        l.append(&ents);
        l.commit_to(5);
        assert_eq!(
            check(&snap(4, 5, 7), &l, 4),
            Err(Rejection::SnapshotTermAboveMessage {
                snapshot_term: 7,
                term: 4
            })
        );
        assert_eq!(
            check(&snap(4, 5, 4), &l, 4),
            Err(Rejection::SnapshotConflictsCommitted {
                index: 5,
                snapshot_term: 4,
                our_term: 3
            })
        );
        assert_eq!(check(&snap(4, 5, 3), &l, 4), Ok(()), "agrees with our log");
        assert_eq!(check(&snap(4, 3, 2), &l, 4), Ok(()), "below commit, agrees");
        assert_eq!(check(&snap(4, 9, 4), &l, 4), Ok(()), "past our commit");

        // The node: the fuzz target's two snapshots (the first with a sane term).
        let now = Instant::from_secs(1);
        let mut node = node_1_of_3(now);
        let mut out = Vec::new();
        node.on_frame(2, &frame(2, &snap(12, 2, 12)), now);
        node.poll(now, &mut out);
        assert_eq!(node.failed(), None);
        assert_eq!(node.counters().snapshots_installed, 1);
        for m in [snap(23, 2, 23), snap(23, 1, 30)] {
            node.on_frame(2, &frame(2, &m), now);
            node.poll(now, &mut out);
            assert_eq!(node.failed(), None, "{m:?}");
        }
        assert_eq!(node.counters().bad_frames, 2);
        assert_eq!(node.counters().snapshots_installed, 1);
    }

    /// Each of these messages, from member 2 in a well-formed frame, made raft-rs panic inside
    /// `Node::on_frame` (or the node fail installing it), which left the node failed for good.
    /// Now each is counted and dropped, and the node goes on to lead the cluster.
    #[test]
    fn malformed_raft_messages_from_a_member_do_not_fail_the_node() {
        use crate::kv::msg::Frame;
        use crate::kv::node::Output;
        use crate::time::{Duration, Instant};
        use protobuf::Message as _;

        let mut bad = Vec::new();
        let mut hb = msg(MessageType::MsgHeartbeat, 1);
        hb.commit = 100; // raft: "to_commit 100 is out of range [last_index 0]"
        bad.push(hb);
        let mut app = msg(MessageType::MsgAppend, 23);
        app.index = 11;
        app.commit = 16; // raft: "to_commit 11 is out of range [last_index 0]" (fuzz: kv_node)
        bad.push(app);
        // raft: "attempt to add with overflow" in become_candidate (fuzz: kv_node).
        bad.push(msg(MessageType::MsgTimeoutNow, u64::MAX));
        let mut ri = msg(MessageType::MsgReadIndex, 12);
        ri.entries.push(Entry::default());
        bad.push(ri); // raft: "term should not be set when sending MsgReadIndex" (fuzz: kv_node)
                      // raft: "term should not be set when sending MsgTransferLeader" (fuzz: kv_node).
        bad.push(msg(MessageType::MsgTransferLeader, 12));
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

        let mut now = Instant::from_secs(1);
        let mut node = node_1_of_3(now);
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
        // An empty forwarded read request, to the leader: raft-rs indexes its first entry
        // ("index out of bounds" in step_leader; fuzz: kv_node, 2026-12-04).
        node.on_frame(2, &frame(2, &msg(MessageType::MsgReadIndex, 0)), now);
        node.poll(now, &mut out);
        assert_eq!(node.failed(), None);
        assert!(node.is_leader());
        assert_eq!(node.counters().bad_frames, bad.len() as u64 + 2);
    }
}
