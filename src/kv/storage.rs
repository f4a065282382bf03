//! Raft log storage: what raft-rs reads through [`raft::Storage`], and what the node writes
//! after each `Ready` through [`LogStore`].
//!
//! The contract every implementation keeps: when a write method returns `Ok`, the write is
//! durable (for the on-disk store: fsynced), so the node may then send the messages and
//! acknowledgements that depend on it. Methods take `&self` (interior mutability, like
//! raft-rs's own `MemStorage`) because `RawNode` owns the store and hands out `&T`.

use std::io;

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;

/// A raft log store the KV node can persist into.
pub trait LogStore: raft::Storage {
    /// Appends entries, first discarding any conflicting suffix (entries at or after
    /// `entries[0].index`). Durable on return.
    fn append(&self, entries: &[Entry]) -> io::Result<()>;
    /// Records term, vote and commit. Durable on return.
    fn set_hardstate(&self, hs: &HardState) -> io::Result<()>;
    /// Records the membership the log currently runs with (after a conf change is applied).
    fn set_conf_state(&self, cs: &ConfState) -> io::Result<()>;
    /// Installs a snapshot received from the leader: replaces the log up to its index and
    /// keeps its data, so `raft::Storage::snapshot` can hand it on. Durable on return.
    fn apply_snapshot(&self, snapshot: &Snapshot) -> io::Result<()>;
    /// Takes a snapshot of the state machine at `index` (already applied), with `data` its
    /// serialised state and `cs` the membership at that index, and discards log entries before
    /// `index` (an implementation may keep `index` itself, whose term the snapshot also
    /// records). Durable on return.
    fn compact(&self, index: u64, cs: &ConfState, data: Vec<u8>) -> io::Result<()>;
}

/// raft-rs's in-memory store behind the [`LogStore`] contract: for the simulator and unit tests.
#[derive(Clone, Default)]
pub struct MemLog {
    inner: MemStorage,
    /// The newest snapshot with its data (MemStorage keeps metadata only).
    snap: std::sync::Arc<std::sync::Mutex<Option<Snapshot>>>,
}

impl MemLog {
    /// An empty store whose first configuration has these voters.
    pub fn new_with_voters(voters: &[u64]) -> Self {
        MemLog {
            inner: MemStorage::new_with_conf_state(ConfState::from((voters.to_vec(), vec![]))),
            snap: Default::default(),
        }
    }
}

fn to_io(e: raft::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl raft::Storage for MemLog {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        self.inner.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.inner.entries(low, high, max_size, context)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.inner.term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        self.inner.first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        self.inner.last_index()
    }
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // MemStorage builds a snapshot from metadata alone; ours carries the state machine's
        // data, so hand out the one compact() or apply_snapshot() kept.
        let kept = self.snap.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match kept {
            Some(s) if s.get_metadata().index >= request_index => Ok(s),
            Some(_) => Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            )),
            None => self.inner.snapshot(request_index, to),
        }
    }
}

impl LogStore for MemLog {
    fn append(&self, entries: &[Entry]) -> io::Result<()> {
        self.inner.wl().append(entries).map_err(to_io)
    }
    fn set_hardstate(&self, hs: &HardState) -> io::Result<()> {
        self.inner.wl().set_hardstate(hs.clone());
        Ok(())
    }
    fn set_conf_state(&self, cs: &ConfState) -> io::Result<()> {
        self.inner.wl().set_conf_state(cs.clone());
        Ok(())
    }
    fn apply_snapshot(&self, snapshot: &Snapshot) -> io::Result<()> {
        self.inner
            .wl()
            .apply_snapshot(snapshot.clone())
            .map_err(to_io)?;
        *self.snap.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot.clone());
        Ok(())
    }
    fn compact(&self, index: u64, cs: &ConfState, data: Vec<u8>) -> io::Result<()> {
        let term = raft::Storage::term(&self.inner, index).map_err(to_io)?;
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(cs.clone());
        let mut core = self.inner.wl();
        core.set_conf_state(cs.clone());
        core.compact(index).map_err(to_io)?;
        drop(core);
        *self.snap.lock().unwrap_or_else(|e| e.into_inner()) = Some(snap);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn memlog_snapshot_carries_the_compacted_state_machine_data() {
        let log = MemLog::new_with_voters(&[1, 2, 3]);
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 2)])
            .unwrap();
        let cs = ConfState::from((vec![1, 2, 3], vec![]));
        log.compact(2, &cs, b"state at 2".to_vec()).unwrap();
        let first = log.first_index().unwrap();
        assert!(
            (2..=3).contains(&first),
            "entries before 2 are gone, first is {first}"
        );
        let snap = log.snapshot(2, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 2);
        assert_eq!(snap.get_metadata().term, 1);
        assert_eq!(&snap.data[..], b"state at 2");
        assert!(
            log.snapshot(3, 2).is_err(),
            "a newer snapshot than kept is not available yet"
        );
    }
}
