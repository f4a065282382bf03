//! The replicated state machine: a key-value map with put, get, delete and compare-and-swap,
//! client sessions for exactly-once writes, and the cluster membership with addresses.
//!
//! Everything here is deterministic: every replica that applies the same committed entries in
//! the same order holds the same state, and [`StateMachine::snapshot`] /
//! [`StateMachine::restore`] move that state between replicas (raft snapshots) and across
//! restarts.
//!
//! Exactly-once: a write carries `(client_id, seq)`. The first time a session's `seq` is
//! applied, its result is remembered; a retry of the same `(client_id, seq)` (after a timeout or
//! a change of leader) is not applied again and returns the remembered result. A client issues
//! its writes one at a time with increasing `seq`, so a session keeps only its last
//! [`SESSION_WINDOW`] results. `client_id == 0` means "no session": applied every time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How many of a session's most recent results are kept for deduplication.
pub const SESSION_WINDOW: usize = 8;

/// A write as it travels through the raft log (serialised as the entry's data).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub client_id: u64,
    pub seq: u64,
    pub op: WriteOp,
}

/// The writes the state machine applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
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
}

/// What applying a write produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResult {
    Done,
    CasFailed {
        current: Option<Vec<u8>>,
    },
    /// A retry of a `seq` older than the session's remembered window: it was applied (or given
    /// up on) long ago and its result is no longer known; it is not applied again.
    Stale,
}

/// A membership change's context (the raft `ConfChange` context bytes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfContext {
    pub client_id: u64,
    pub seq: u64,
    pub addr: String,
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    /// `None` for bytes that are not a command (counted by the caller, never a panic).
    pub fn decode(buf: &[u8]) -> Option<Command> {
        serde_json::from_slice(buf).ok()
    }
}

impl ConfContext {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub fn decode(buf: &[u8]) -> Option<ConfContext> {
        serde_json::from_slice(buf).ok()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Session {
    /// seq → (result, entry index it was applied at), newest last.
    results: BTreeMap<u64, (WriteResult, u64)>,
}

/// The key-value state with its sessions and membership addresses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateMachine {
    data: BTreeMap<String, Vec<u8>>,
    sessions: BTreeMap<u64, Session>,
    /// Addresses of members, as carried in their conf change contexts.
    members: BTreeMap<u64, String>,
    /// Index of the last entry applied.
    applied: u64,
}

impl StateMachine {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Marks `index` applied (also for entries with no effect on the data: empty, conf change).
    pub fn set_applied(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    pub fn get(&self, key: &str) -> Option<&Vec<u8>> {
        self.data.get(key)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The remembered result of `(client_id, seq)`, with the index it was applied at.
    pub fn session_result(&self, client_id: u64, seq: u64) -> Option<(WriteResult, u64)> {
        if client_id == 0 {
            return None;
        }
        let s = self.sessions.get(&client_id)?;
        if let Some(r) = s.results.get(&seq) {
            return Some(r.clone());
        }
        match s.results.keys().next() {
            Some(&oldest) if s.results.len() >= SESSION_WINDOW && seq < oldest => {
                Some((WriteResult::Stale, 0))
            }
            _ => None,
        }
    }

    /// Applies a committed write at `index`; a duplicate `(client_id, seq)` returns the first
    /// result without applying again.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> WriteResult {
        self.set_applied(index);
        if let Some((r, _)) = self.session_result(cmd.client_id, cmd.seq) {
            return r;
        }
        let result = match &cmd.op {
            WriteOp::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                WriteResult::Done
            }
            WriteOp::Delete { key } => {
                self.data.remove(key);
                WriteResult::Done
            }
            WriteOp::Cas { key, expected, new } => {
                let current = self.data.get(key);
                if current == expected.as_ref() {
                    self.data.insert(key.clone(), new.clone());
                    WriteResult::Done
                } else {
                    WriteResult::CasFailed {
                        current: current.cloned(),
                    }
                }
            }
        };
        self.remember(cmd.client_id, cmd.seq, &result, index);
        result
    }

    fn remember(&mut self, client_id: u64, seq: u64, result: &WriteResult, index: u64) {
        if client_id == 0 {
            return;
        }
        let s = self.sessions.entry(client_id).or_default();
        s.results.insert(seq, (result.clone(), index));
        while s.results.len() > SESSION_WINDOW {
            let oldest = *s.results.keys().next().unwrap_or(&0);
            s.results.remove(&oldest);
        }
    }

    /// Records a membership change applied at `index` (addr `None`: the node was removed).
    pub fn apply_membership(
        &mut self,
        index: u64,
        id: u64,
        addr: Option<&str>,
        ctx: Option<&ConfContext>,
    ) {
        self.set_applied(index);
        match addr {
            Some(a) => {
                self.members.insert(id, a.to_string());
            }
            None => {
                self.members.remove(&id);
            }
        }
        if let Some(c) = ctx {
            if self.session_result(c.client_id, c.seq).is_none() {
                self.remember(c.client_id, c.seq, &WriteResult::Done, index);
            }
        }
    }

    /// The address a member was added with ("" if unknown, as for the initial voters whose
    /// addresses only the driver knows).
    pub fn member_addr(&self, id: u64) -> String {
        self.members.get(&id).cloned().unwrap_or_default()
    }

    /// The whole state, serialised (raft snapshot data).
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A state machine from [`StateMachine::snapshot`] bytes; an error for bytes that are not one.
    pub fn restore(buf: &[u8]) -> Result<StateMachine, String> {
        if buf.is_empty() {
            return Ok(StateMachine::default());
        }
        serde_json::from_slice(buf).map_err(|e| format!("bad state machine snapshot: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client_id: u64, seq: u64, key: &str, v: &str) -> Command {
        Command {
            client_id,
            seq,
            op: WriteOp::Put {
                key: key.into(),
                value: v.as_bytes().to_vec(),
            },
        }
    }

    #[test]
    fn duplicate_client_seq_is_applied_once_and_returns_first_result() {
        let mut sm = StateMachine::new();
        let cas = Command {
            client_id: 7,
            seq: 1,
            op: WriteOp::Cas {
                key: "k".into(),
                expected: None,
                new: b"a".to_vec(),
            },
        };
        assert_eq!(sm.apply(1, &cas), WriteResult::Done);
        // The same CAS again would fail if applied twice; the retry answers the first result.
        assert_eq!(sm.apply(2, &cas), WriteResult::Done);
        assert_eq!(sm.get("k").map(|v| &v[..]), Some(&b"a"[..]));
        // A put retried after another client's write does not clobber it.
        sm.apply(3, &put(8, 1, "x", "first"));
        sm.apply(4, &put(9, 1, "x", "other"));
        sm.apply(5, &put(8, 1, "x", "first"));
        assert_eq!(sm.get("x").map(|v| &v[..]), Some(&b"other"[..]));
        assert_eq!(sm.session_result(8, 1), Some((WriteResult::Done, 3)));
    }

    #[test]
    fn no_session_client_zero_applies_every_time() {
        let mut sm = StateMachine::new();
        let c = Command {
            client_id: 0,
            seq: 0,
            op: WriteOp::Cas {
                key: "k".into(),
                expected: None,
                new: b"a".to_vec(),
            },
        };
        assert_eq!(sm.apply(1, &c), WriteResult::Done);
        assert!(matches!(sm.apply(2, &c), WriteResult::CasFailed { .. }));
    }

    #[test]
    fn cas_compares_against_absent_and_present_values() {
        let mut sm = StateMachine::new();
        let cas = |seq, expected: Option<&str>, new: &str| Command {
            client_id: 1,
            seq,
            op: WriteOp::Cas {
                key: "k".into(),
                expected: expected.map(|s| s.as_bytes().to_vec()),
                new: new.as_bytes().to_vec(),
            },
        };
        assert_eq!(sm.apply(1, &cas(1, None, "a")), WriteResult::Done);
        assert_eq!(
            sm.apply(2, &cas(2, None, "b")),
            WriteResult::CasFailed {
                current: Some(b"a".to_vec())
            }
        );
        assert_eq!(sm.apply(3, &cas(3, Some("a"), "c")), WriteResult::Done);
        assert_eq!(sm.get("k").map(|v| &v[..]), Some(&b"c"[..]));
        sm.apply(
            4,
            &Command {
                client_id: 1,
                seq: 4,
                op: WriteOp::Delete { key: "k".into() },
            },
        );
        assert_eq!(sm.get("k"), None);
        assert_eq!(sm.applied(), 4);
    }

    #[test]
    fn session_window_is_bounded_and_older_retries_are_stale() {
        let mut sm = StateMachine::new();
        for seq in 1..=20 {
            sm.apply(seq, &put(3, seq, "k", &seq.to_string()));
        }
        assert_eq!(sm.sessions[&3].results.len(), SESSION_WINDOW);
        assert_eq!(sm.apply(21, &put(3, 2, "k", "old")), WriteResult::Stale);
        assert_eq!(sm.get("k").map(|v| &v[..]), Some(&b"20"[..]));
    }

    #[test]
    fn snapshot_restores_data_sessions_and_members() {
        let mut sm = StateMachine::new();
        sm.apply(1, &put(5, 1, "a", "1"));
        sm.apply_membership(
            2,
            4,
            Some("10.0.0.4:7000"),
            Some(&ConfContext {
                client_id: 6,
                seq: 1,
                addr: "10.0.0.4:7000".into(),
            }),
        );
        let back = StateMachine::restore(&sm.snapshot()).unwrap();
        assert_eq!(back, sm);
        assert_eq!(back.member_addr(4), "10.0.0.4:7000");
        assert_eq!(back.applied(), 2);
        assert_eq!(back.session_result(5, 1), Some((WriteResult::Done, 1)));
        assert!(StateMachine::restore(b"{not json").is_err());
    }

    #[test]
    fn command_decoding_rejects_garbage() {
        assert!(Command::decode(b"\xff\x00garbage").is_none());
        let c = put(1, 2, "k", "v");
        assert_eq!(Command::decode(&c.encode()), Some(c));
    }
}
