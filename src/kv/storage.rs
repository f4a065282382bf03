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
    /// Appends `entries` and records `hs` in one durable write: the same as [`LogStore::append`]
    /// then [`LogStore::set_hardstate`], but the on-disk store makes it one fsync instead of
    /// two (what a node wants after each `Ready`). Durable on return.
    fn persist(&self, entries: &[Entry], hs: Option<&HardState>) -> io::Result<()> {
        self.append(entries)?;
        if let Some(hs) = hs {
            self.set_hardstate(hs)?;
        }
        Ok(())
    }
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

// ---------------------------------------------------------------------------------------------
// DiskLog: the crash-safe on-disk store.
//
// Layout of the directory:
//   LOCK                 held with an exclusive file lock while a DiskLog has the directory open
//   snapshot             the newest snapshot, replaced atomically (write snapshot.tmp, fsync,
//                        rename, fsync the directory); absent until the first compaction
//   NNNNNNNNNNNNNNNNNNNN.log
//                        log segments, numbered upwards, each a run of records
//
// A record is `[u32 LE len][u32 LE crc][u8 kind][payload]`, `len` counting kind and payload, and
// `crc` the CRC-32 of the len bytes, the kind and the payload. Kinds in segments: an entry (raft's
// protobuf bytes), an entry copied forward by compaction, a hard state, a conf state. Replaying a segment applies the records in order;
// an entry at index i first drops every entry at or after i, which is how a conflicting suffix
// is replaced on disk without a separate truncation record. One `append`/`persist` call is one
// `write` and one `fdatasync` (group commit).
//
// The snapshot file holds four records: the snapshot (metadata and the state machine's data),
// the hard state and conf state at the time it was written, and `log_from`, the first segment
// that still counts. Segments numbered below `log_from` are garbage (deleted on open), so
// installing a snapshot, which drops the whole log, is one atomic rename. Compaction first
// copies the live entries after the snapshot into a fresh segment (as copy records, which never
// displace an entry already there, so a half-written copy is harmless), then writes the snapshot
// file naming that segment, then deletes the older segments: a crash at any point leaves either
// the old snapshot with every old segment, or the new one with the fresh segment.
//
// Opening replays the snapshot file and the segments. The first record that is cut short, fails
// its checksum or does not decode ends the log: its segment is truncated there, later segments
// are deleted, and `recovery_report()` says what was dropped. Only the tail of the last segment
// can be torn by a crash (every earlier byte was fsynced before the write that follows it); a bad
// record anywhere else is corruption, and is reported the same way.
// ---------------------------------------------------------------------------------------------

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use protobuf::Message as _;

const SNAP_FILE: &str = "snapshot";
const SNAP_TMP: &str = "snapshot.tmp";
const LOCK_FILE: &str = "LOCK";
const SEGMENT_SUFFIX: &str = ".log";
/// `[u32 len][u32 crc]`.
const RECORD_HEADER: usize = 8;
/// The largest record accepted when reading (a snapshot's data included): a length above it is
/// corruption, not a reason to allocate.
const MAX_RECORD: usize = 1 << 30;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;
const KIND_LOG_FROM: u8 = 5;
/// An entry copied forward by compaction: it never replaces what the log already holds at its
/// index (a crash can leave the copy segment partly written while the old segments still count,
/// and a partial copy must not cut the log short the way a conflicting entry would).
const KIND_ENTRY_COPY: u8 = 6;

/// Tuning for [`DiskLog::open_with`].
#[derive(Clone, Debug)]
pub struct DiskLogOptions {
    /// A new segment is started once the current one has reached this many bytes.
    pub segment_bytes: u64,
}

impl Default for DiskLogOptions {
    fn default() -> Self {
        DiskLogOptions {
            segment_bytes: 64 << 20,
        }
    }
}

/// Where recovery stopped reading and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The segment whose tail was cut.
    pub segment: PathBuf,
    /// Bytes of that segment kept (the offset of the first bad record).
    pub offset: u64,
    /// Bytes dropped from that segment and from every later one.
    pub dropped_bytes: u64,
    /// Later segments deleted whole.
    pub dropped_segments: usize,
    /// What was wrong with the first dropped record.
    pub reason: String,
}

/// What [`DiskLog::open`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid records replayed from the segments.
    pub records: u64,
    /// Live entries after replay.
    pub entries: u64,
    /// Segments read.
    pub segments: usize,
    /// Index of the snapshot found, if any.
    pub snapshot_index: Option<u64>,
    /// Segments older than the snapshot deleted (left by a crash during compaction).
    pub stale_segments_removed: usize,
    /// Set when a torn or corrupt tail was cut.
    pub truncation: Option<Truncation>,
    /// Set when the recovered hard state's commit index pointed past the recovered log (only
    /// possible after corruption) and was lowered to the last index.
    pub commit_clamped: Option<(u64, u64)>,
}

impl RecoveryReport {
    /// True when recovery dropped nothing.
    pub fn is_clean(&self) -> bool {
        self.truncation.is_none() && self.commit_clamped.is_none()
    }
}

/// The replayed contents of the store.
#[derive(Default)]
struct LogState {
    hs: HardState,
    cs: ConfState,
    /// The newest snapshot, with its data.
    snap: Option<Snapshot>,
    /// Index and term of the last entry folded into the snapshot (0, 0 without one).
    base_index: u64,
    base_term: u64,
    /// Live entries; `entries[0].index == base_index + 1`.
    entries: Vec<Entry>,
}

impl LogState {
    fn first_index(&self) -> u64 {
        self.base_index + 1
    }
    fn last_index(&self) -> u64 {
        self.base_index + self.entries.len() as u64
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.base_index {
            return Ok(self.base_term);
        }
        if idx < self.base_index {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if idx > self.last_index() {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first_index()) as usize].term)
    }
    /// Puts `e` at its index, dropping any entries at or after it. An entry inside the
    /// snapshot is ignored (a copy made by compaction); one past the end is a gap.
    fn put_entry(&mut self, e: Entry) -> Result<(), String> {
        let idx = e.index;
        if idx <= self.base_index {
            return Ok(());
        }
        if idx > self.last_index() + 1 {
            return Err(format!(
                "entry {idx} leaves a gap after last index {}",
                self.last_index()
            ));
        }
        self.entries.truncate((idx - self.first_index()) as usize);
        self.entries.push(e);
        Ok(())
    }
    /// Applies one segment record.
    fn apply(&mut self, kind: u8, payload: &[u8]) -> Result<(), String> {
        match kind {
            KIND_ENTRY => self.put_entry(decode::<Entry>(payload)?),
            KIND_ENTRY_COPY => {
                let e = decode::<Entry>(payload)?;
                if e.index <= self.last_index() {
                    return Ok(());
                }
                self.put_entry(e)
            }
            KIND_HARD_STATE => {
                self.hs = decode(payload)?;
                Ok(())
            }
            KIND_CONF_STATE => {
                self.cs = decode(payload)?;
                Ok(())
            }
            other => Err(format!("record kind {other} does not belong in a segment")),
        }
    }
}

fn decode<M: protobuf::Message>(payload: &[u8]) -> Result<M, String> {
    M::parse_from_bytes(payload).map_err(|e| format!("undecodable record: {e}"))
}

fn encode<M: protobuf::Message>(m: &M) -> io::Result<Vec<u8>> {
    m.write_to_bytes().map_err(io::Error::other)
}

fn record_crc(len: [u8; 4], kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

fn put_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let len = ((payload.len() + 1) as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&record_crc(len, kind, payload).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

fn put_message<M: protobuf::Message>(out: &mut Vec<u8>, kind: u8, m: &M) -> io::Result<()> {
    put_record(out, kind, &encode(m)?);
    Ok(())
}

/// Walks the records of `buf`, handing each to `f`. Returns the end of the last good record
/// and, if reading stopped early, why.
fn scan_records(
    buf: &[u8],
    mut f: impl FnMut(u8, &[u8]) -> Result<(), String>,
) -> (usize, Option<String>) {
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.len() < RECORD_HEADER {
            return (
                pos,
                Some(format!("partial record header ({} bytes)", rest.len())),
            );
        }
        let len_bytes = [rest[0], rest[1], rest[2], rest[3]];
        let len = u32::from_le_bytes(len_bytes) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len == 0 || len > MAX_RECORD {
            return (pos, Some(format!("bad record length {len}")));
        }
        if rest.len() - RECORD_HEADER < len {
            return (
                pos,
                Some(format!(
                    "partial record ({} of {len} bytes)",
                    rest.len() - RECORD_HEADER
                )),
            );
        }
        let body = &rest[RECORD_HEADER..RECORD_HEADER + len];
        let (kind, payload) = (body[0], &body[1..]);
        if record_crc(len_bytes, kind, payload) != crc {
            return (pos, Some("checksum mismatch".to_string()));
        }
        if let Err(reason) = f(kind, payload) {
            return (pos, Some(reason));
        }
        pos += RECORD_HEADER + len;
    }
    (pos, None)
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The contents of the snapshot file.
struct SnapFile {
    snap: Snapshot,
    hs: HardState,
    cs: ConfState,
    log_from: u64,
}

impl SnapFile {
    fn encode(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.snap.data.len() + 256);
        put_message(&mut out, KIND_SNAPSHOT, &self.snap)?;
        put_message(&mut out, KIND_HARD_STATE, &self.hs)?;
        put_message(&mut out, KIND_CONF_STATE, &self.cs)?;
        put_record(&mut out, KIND_LOG_FROM, &self.log_from.to_le_bytes());
        Ok(out)
    }

    /// The snapshot file is replaced atomically, so anything short of all four records intact
    /// is corruption we cannot repair: an error, not a truncation.
    fn decode(buf: &[u8]) -> io::Result<SnapFile> {
        let (mut snap, mut hs, mut cs, mut log_from) = (None, None, None, None);
        let (_, err) = scan_records(buf, |kind, payload| {
            match kind {
                KIND_SNAPSHOT => snap = Some(decode::<Snapshot>(payload)?),
                KIND_HARD_STATE => hs = Some(decode::<HardState>(payload)?),
                KIND_CONF_STATE => cs = Some(decode::<ConfState>(payload)?),
                KIND_LOG_FROM => {
                    let b: [u8; 8] = payload
                        .try_into()
                        .map_err(|_| "bad log_from record".to_string())?;
                    log_from = Some(u64::from_le_bytes(b));
                }
                other => return Err(format!("record kind {other} in the snapshot file")),
            }
            Ok(())
        });
        if let Some(reason) = err {
            return Err(invalid(format!("snapshot file is corrupt: {reason}")));
        }
        match (snap, hs, cs, log_from) {
            (Some(snap), Some(hs), Some(cs), Some(log_from)) => Ok(SnapFile {
                snap,
                hs,
                cs,
                log_from,
            }),
            _ => Err(invalid("snapshot file is missing records".to_string())),
        }
    }

    /// Writes the file next to its final name, fsyncs it, renames it over the old one and
    /// fsyncs the directory: after a crash either the old or the new file is there, whole.
    fn store(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(SNAP_TMP);
        let mut f = File::create(&tmp)?;
        f.write_all(&self.encode()?)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join(SNAP_FILE))?;
        sync_dir(dir)
    }
}

struct DiskInner {
    dir: PathBuf,
    opts: DiskLogOptions,
    state: LogState,
    /// Live segment numbers, ascending; the last is the one being appended to.
    segments: Vec<u64>,
    active: File,
    active_len: u64,
    /// Set after a write failed part-way: what is on disk may no longer match memory, so every
    /// later write is refused until the directory is reopened (which re-reads the truth).
    poisoned: Option<String>,
    report: RecoveryReport,
    /// Holds the directory's exclusive lock for as long as the store is open.
    _lock: File,
}

/// The crash-safe on-disk [`LogStore`]: segment files of checksummed records, an atomically
/// replaced snapshot file, and every live entry kept in memory for reads. Cloning shares the
/// store. See the comment above for the format and the crash argument.
#[derive(Clone)]
pub struct DiskLog {
    inner: Arc<Mutex<DiskInner>>,
}

impl DiskLog {
    /// Opens the store in `dir`, creating it if needed, with default options.
    pub fn open(dir: &Path) -> io::Result<DiskLog> {
        DiskLog::open_with(dir, DiskLogOptions::default())
    }

    /// Opens (creating or recovering) the store in `dir`. A torn or corrupt tail is cut off and
    /// reported by [`DiskLog::recovery_report`]. Fails if another open store holds the directory.
    pub fn open_with(dir: &Path, opts: DiskLogOptions) -> io::Result<DiskLog> {
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            // The new directory's own entry must be durable too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is in use by another open DiskLog", dir.display()),
            ),
            fs::TryLockError::Error(e) => e,
        })?;
        let _ = fs::remove_file(dir.join(SNAP_TMP));

        let mut report = RecoveryReport::default();
        let mut state = LogState::default();
        let mut log_from = 0;
        match fs::read(dir.join(SNAP_FILE)) {
            Ok(buf) => {
                let sf = SnapFile::decode(&buf)?;
                let meta = sf.snap.get_metadata();
                state.base_index = meta.index;
                state.base_term = meta.term;
                state.hs = sf.hs;
                state.cs = sf.cs;
                report.snapshot_index = Some(meta.index);
                state.snap = Some(sf.snap);
                log_from = sf.log_from;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }

        let mut seqs = Vec::new();
        for ent in fs::read_dir(dir)? {
            let ent = ent?;
            if let Some(seq) = ent.file_name().to_str().and_then(parse_segment_name) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut segments = Vec::new();
        for &seq in &seqs {
            if seq < log_from {
                fs::remove_file(dir.join(segment_name(seq)))?;
                report.stale_segments_removed += 1;
            }
        }
        seqs.retain(|&s| s >= log_from);

        let mut active_len = 0;
        let mut cut: Option<(usize, u64, String)> = None;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = dir.join(segment_name(seq));
            let buf = fs::read(&path)?;
            report.segments += 1;
            let mut records = 0;
            let (end, err) = scan_records(&buf, |kind, payload| {
                state.apply(kind, payload)?;
                records += 1;
                Ok(())
            });
            report.records += records;
            segments.push(seq);
            active_len = end as u64;
            if let Some(reason) = err {
                cut = Some((i, end as u64, reason));
                break;
            }
        }
        if let Some((i, offset, reason)) = cut {
            let path = dir.join(segment_name(seqs[i]));
            let f = OpenOptions::new().write(true).open(&path)?;
            let mut dropped = f.metadata()?.len() - offset;
            f.set_len(offset)?;
            f.sync_all()?;
            let later = &seqs[i + 1..];
            for &seq in later {
                let p = dir.join(segment_name(seq));
                dropped += fs::metadata(&p)?.len();
                fs::remove_file(&p)?;
            }
            sync_dir(dir)?;
            report.truncation = Some(Truncation {
                segment: path,
                offset,
                dropped_bytes: dropped,
                dropped_segments: later.len(),
                reason,
            });
        }

        let active = match segments.last() {
            Some(&seq) => OpenOptions::new()
                .append(true)
                .open(dir.join(segment_name(seq)))?,
            None => {
                let seq = log_from.max(1);
                let f = OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .open(dir.join(segment_name(seq)))?;
                sync_dir(dir)?;
                segments.push(seq);
                active_len = 0;
                f
            }
        };

        // raft refuses to start with a commit index outside [snapshot index, last index].
        // Compaction and snapshot installation record a commit of at least the snapshot's index;
        // a commit past the log can only follow corruption that cut committed entries.
        if state.hs.commit < state.base_index {
            state.hs.commit = state.base_index;
        }
        if state.hs.commit > state.last_index() {
            report.commit_clamped = Some((state.hs.commit, state.last_index()));
            state.hs.commit = state.last_index();
        }
        report.entries = state.entries.len() as u64;
        if let Some(t) = &report.truncation {
            log::warn!(
                "kv storage {}: cut {} bytes at {}:{} ({})",
                dir.display(),
                t.dropped_bytes,
                t.segment.display(),
                t.offset,
                t.reason
            );
        }
        Ok(DiskLog {
            inner: Arc::new(Mutex::new(DiskInner {
                dir: dir.to_path_buf(),
                opts,
                state,
                segments,
                active,
                active_len,
                poisoned: None,
                report,
                _lock: lock,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, DiskInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What opening found and repaired.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.lock().report.clone()
    }

    /// True for a store that has never been written: no configuration, hard state, entries or
    /// snapshot. Such a store needs [`DiskLog::initialize_with_voters`] (or a snapshot).
    pub fn is_empty(&self) -> bool {
        let g = self.lock();
        let s = &g.state;
        s.snap.is_none()
            && s.entries.is_empty()
            && s.hs == HardState::default()
            && s.cs == ConfState::default()
    }

    /// Records the first configuration of a new cluster. Fails on a store that is not empty.
    pub fn initialize_with_voters(&self, voters: &[u64]) -> io::Result<()> {
        if !self.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the store already holds raft state",
            ));
        }
        self.set_conf_state(&ConfState::from((voters.to_vec(), vec![])))
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> PathBuf {
        self.lock().dir.clone()
    }

    /// The live segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        let g = self.lock();
        g.segments
            .iter()
            .map(|&s| g.dir.join(segment_name(s)))
            .collect()
    }
}

impl DiskInner {
    fn check_writable(&self) -> io::Result<()> {
        match &self.poisoned {
            Some(why) => Err(io::Error::other(format!(
                "storage refused writes after an earlier failure ({why}); reopen it"
            ))),
            None => Ok(()),
        }
    }

    /// Runs a multi-step write; a failure poisons the store (see `poisoned`).
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        self.check_writable()?;
        let r = f(self);
        if let Err(e) = &r {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    /// Creates segment `seq` and makes it the active one.
    fn start_segment(&mut self, seq: u64, records: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(self.dir.join(segment_name(seq)))?;
        if !records.is_empty() {
            f.write_all(records)?;
            f.sync_data()?;
        }
        sync_dir(&self.dir)?;
        self.active = f;
        self.active_len = records.len() as u64;
        self.segments.push(seq);
        Ok(())
    }

    /// Appends encoded records to the active segment, durably: one write and one fdatasync.
    fn write_records(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.guarded(|me| {
            if me.active_len >= me.opts.segment_bytes {
                let next = me.segments.last().copied().unwrap_or(0) + 1;
                me.start_segment(next, &[])?;
            }
            me.active.write_all(buf)?;
            me.active.sync_data()?;
            me.active_len += buf.len() as u64;
            Ok(())
        })
    }

    /// Checks that `entries` can go at the end of the log (possibly replacing a suffix) and
    /// encodes them.
    fn encode_entries(&self, entries: &[Entry], out: &mut Vec<u8>) -> io::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if first.index < self.state.first_index() {
            return Err(bad(format!(
                "append at {} would overwrite compacted entries (first index {})",
                first.index,
                self.state.first_index()
            )));
        }
        if first.index > self.state.last_index() + 1 {
            return Err(bad(format!(
                "append at {} leaves a gap after last index {}",
                first.index,
                self.state.last_index()
            )));
        }
        for (k, e) in entries.iter().enumerate() {
            if e.index != first.index + k as u64 {
                return Err(bad(format!(
                    "appended entries not contiguous at {}",
                    e.index
                )));
            }
            put_message(out, KIND_ENTRY, e)?;
        }
        Ok(())
    }

    fn persist(&mut self, entries: &[Entry], hs: Option<&HardState>) -> io::Result<()> {
        let mut buf = Vec::new();
        self.encode_entries(entries, &mut buf)?;
        if let Some(hs) = hs {
            put_message(&mut buf, KIND_HARD_STATE, hs)?;
        }
        self.write_records(&buf)?;
        for e in entries {
            self.state.put_entry(e.clone()).map_err(io::Error::other)?;
        }
        if let Some(hs) = hs {
            self.state.hs = hs.clone();
        }
        Ok(())
    }

    fn compact(&mut self, index: u64, cs: &ConfState, data: Vec<u8>) -> io::Result<()> {
        self.check_writable()?;
        if index <= self.state.base_index {
            return Ok(());
        }
        if index > self.state.last_index() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "compact at {index} is past the last index {}",
                    self.state.last_index()
                ),
            ));
        }
        let term = self.state.term(index).map_err(to_io)?;
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(cs.clone());
        let mut hs = self.state.hs.clone();
        hs.commit = hs.commit.max(index);
        let keep = (index - self.state.base_index) as usize;
        let mut live = Vec::new();
        for e in &self.state.entries[keep..] {
            put_message(&mut live, KIND_ENTRY_COPY, e)?;
        }
        let sf = SnapFile {
            snap,
            hs,
            cs: cs.clone(),
            log_from: self.segments.last().copied().unwrap_or(0) + 1,
        };
        self.guarded(|me| {
            // 1. the entries that outlive the compaction, in a fresh segment;
            me.start_segment(sf.log_from, &live)?;
            // 2. the snapshot naming that segment as the start of the log (the commit point);
            sf.store(&me.dir)?;
            // 3. the segments it made garbage.
            me.drop_segments_before(sf.log_from)
        })?;
        let st = &mut self.state;
        st.entries.drain(..keep);
        st.base_index = index;
        st.base_term = term;
        st.hs = sf.hs;
        st.cs = sf.cs;
        st.snap = Some(sf.snap);
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        self.check_writable()?;
        let meta = snapshot.get_metadata();
        if meta.index < self.state.first_index() {
            return Err(to_io(raft::Error::Store(
                raft::StorageError::SnapshotOutOfDate,
            )));
        }
        let mut hs = self.state.hs.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = meta.index;
        let sf = SnapFile {
            snap: snapshot.clone(),
            hs,
            cs: meta.get_conf_state().clone(),
            log_from: self.segments.last().copied().unwrap_or(0) + 1,
        };
        self.guarded(|me| {
            // The rename is the commit point: from then on the old segments do not count.
            sf.store(&me.dir)?;
            me.start_segment(sf.log_from, &[])?;
            me.drop_segments_before(sf.log_from)
        })?;
        let st = &mut self.state;
        st.entries.clear();
        st.base_index = meta.index;
        st.base_term = meta.term;
        st.hs = sf.hs;
        st.cs = sf.cs;
        st.snap = Some(sf.snap);
        Ok(())
    }

    fn drop_segments_before(&mut self, seq: u64) -> io::Result<()> {
        let old: Vec<u64> = self.segments.iter().copied().filter(|&s| s < seq).collect();
        for s in &old {
            fs::remove_file(self.dir.join(segment_name(*s)))?;
        }
        self.segments.retain(|&s| s >= seq);
        sync_dir(&self.dir)
    }
}

impl raft::Storage for DiskLog {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        let g = self.lock();
        Ok(raft::RaftState::new(g.state.hs.clone(), g.state.cs.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let g = self.lock();
        let st = &g.state;
        if low < st.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > st.last_index() + 1 {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let first = st.first_index();
        let range = &st.entries[(low - first) as usize..(high - first) as usize];
        // raft::util::limit_size's rule, without cloning what it would drop: the first entry
        // always, then entries while the running total stays within max_size.
        let mut n = range.len();
        if let Some(max) = max_size.into().filter(|&m| m != u64::MAX) {
            let mut size = 0u64;
            n = range
                .iter()
                .take_while(|e| {
                    let first = size == 0;
                    size += u64::from(e.compute_size());
                    first || size <= max
                })
                .count()
                .max(1);
        }
        Ok(range[..n].to_vec())
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.lock().state.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.lock().state.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.lock().state.last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match &self.lock().state.snap {
            Some(s) if s.get_metadata().index >= request_index => Ok(s.clone()),
            // Nothing new enough kept: the node has to compact first.
            _ => Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}

impl LogStore for DiskLog {
    fn append(&self, entries: &[Entry]) -> io::Result<()> {
        self.lock().persist(entries, None)
    }
    fn set_hardstate(&self, hs: &HardState) -> io::Result<()> {
        self.lock().persist(&[], Some(hs))
    }
    fn set_conf_state(&self, cs: &ConfState) -> io::Result<()> {
        let mut g = self.lock();
        let mut buf = Vec::new();
        put_message(&mut buf, KIND_CONF_STATE, cs)?;
        g.write_records(&buf)?;
        g.state.cs = cs.clone();
        Ok(())
    }
    fn apply_snapshot(&self, snapshot: &Snapshot) -> io::Result<()> {
        self.lock().apply_snapshot(snapshot)
    }
    fn compact(&self, index: u64, cs: &ConfState, data: Vec<u8>) -> io::Result<()> {
        self.lock().compact(index, cs, data)
    }
    fn persist(&self, entries: &[Entry], hs: Option<&HardState>) -> io::Result<()> {
        self.lock().persist(entries, hs)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use raft::Storage;

    /// An entry with only its index and term set (the guard's tests use it too).
    pub(crate) fn entry(index: u64, term: u64) -> Entry {
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

    // ----- DiskLog -----

    use std::sync::atomic::{AtomicU64, Ordering};

    /// A scratch directory removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "tunstack-disklog-{}-{}-{name}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn data_entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("entry {index} of term {term}").into_bytes().into(),
            ..Default::default()
        }
    }

    fn open(dir: &TempDir) -> DiskLog {
        DiskLog::open(dir.path()).unwrap()
    }

    fn all_entries(log: &DiskLog) -> Vec<Entry> {
        let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
        log.entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
            .unwrap()
    }

    fn voters() -> ConfState {
        ConfState::from((vec![1, 2, 3], vec![]))
    }

    fn snapshot_at(index: u64, term: u64, data: &[u8]) -> Snapshot {
        let mut s = Snapshot {
            data: data.to_vec().into(),
            ..Default::default()
        };
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().set_conf_state(voters());
        s
    }

    /// A store holding a snapshot at 2 (term 2) and entries 3, 4, 5 with terms 3, 4, 5: the
    /// state raft's MemStorage tests start from (their entry 3 is the dummy before the log).
    fn mem_like(dir: &TempDir) -> DiskLog {
        let log = open(dir);
        log.apply_snapshot(&snapshot_at(2, 2, b"s2")).unwrap();
        log.append(&[entry(3, 3), entry(4, 4), entry(5, 5)])
            .unwrap();
        log
    }

    fn is_store_err(r: raft::Result<impl std::fmt::Debug>, want: raft::StorageError) -> bool {
        matches!(r, Err(raft::Error::Store(e)) if e == want)
    }

    #[test]
    fn disklog_reopen_recovers_entries_hard_state_and_conf_state() {
        let dir = TempDir::new("reopen");
        {
            let log = open(&dir);
            assert!(log.is_empty());
            log.initialize_with_voters(&[1, 2, 3]).unwrap();
            assert!(!log.is_empty());
            assert!(log.initialize_with_voters(&[1]).is_err());
            log.append(&[data_entry(1, 1), data_entry(2, 1)]).unwrap();
            let hs = HardState {
                term: 2,
                vote: 3,
                commit: 2,
                ..Default::default()
            };
            log.persist(&[data_entry(3, 2)], Some(&hs)).unwrap();
        }
        let log = open(&dir);
        assert!(
            log.recovery_report().is_clean(),
            "{:?}",
            log.recovery_report()
        );
        let st = log.initial_state().unwrap();
        assert_eq!(st.hard_state.term, 2);
        assert_eq!(st.hard_state.vote, 3);
        assert_eq!(st.hard_state.commit, 2);
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(
            all_entries(&log),
            vec![data_entry(1, 1), data_entry(2, 1), data_entry(3, 2)]
        );
    }

    #[test]
    fn disklog_torn_tail_at_every_byte_offset_of_the_last_record_is_truncated() {
        // Learn where the last record starts and ends.
        let probe = TempDir::new("torn-probe");
        let (seg, before, after) = {
            let log = open(&probe);
            log.append(&[data_entry(1, 1), data_entry(2, 1), data_entry(3, 1)])
                .unwrap();
            let seg = log.segment_paths().pop().unwrap();
            let before = std::fs::metadata(&seg).unwrap().len();
            log.append(&[data_entry(4, 2)]).unwrap();
            let after = std::fs::metadata(&seg).unwrap().len();
            (seg, before, after)
        };
        let name = seg.file_name().unwrap().to_owned();
        let full = std::fs::read(&seg).unwrap();
        assert!(after > before + 8);
        for cut in before..after {
            let dir = TempDir::new("torn");
            std::fs::create_dir_all(dir.path()).unwrap();
            std::fs::write(dir.path().join(&name), &full[..cut as usize]).unwrap();
            let log = open(&dir);
            assert_eq!(log.last_index().unwrap(), 3, "cut at {cut}");
            assert_eq!(
                all_entries(&log),
                vec![data_entry(1, 1), data_entry(2, 1), data_entry(3, 1)],
                "cut at {cut}"
            );
            let report = log.recovery_report();
            if cut == before {
                assert!(report.is_clean(), "cut at a record boundary: {report:?}");
            } else {
                let t = report.truncation.expect("torn tail reported");
                assert_eq!(t.offset, before, "cut at {cut}");
                assert_eq!(t.dropped_bytes, cut - before, "cut at {cut}");
            }
            assert_eq!(
                std::fs::metadata(dir.path().join(&name)).unwrap().len(),
                before
            );
            // The store goes on after the cut, and what it writes next survives.
            log.append(&[data_entry(4, 3)]).unwrap();
            drop(log);
            let log = open(&dir);
            assert!(log.recovery_report().is_clean());
            assert_eq!(log.term(4).unwrap(), 3, "cut at {cut}");
        }
    }

    #[test]
    fn disklog_corrupt_byte_mid_log_truncates_from_there_and_is_reported() {
        for (what, patch) in [
            ("payload", 12usize), // inside record 5's payload
            ("length", 0),        // record 5's length field
        ] {
            let dir = TempDir::new("corrupt");
            let (seg, starts) = {
                let log = open(&dir);
                let seg = log.segment_paths().pop().unwrap();
                let mut starts = Vec::new();
                for i in 1..=10 {
                    starts.push(std::fs::metadata(&seg).unwrap().len());
                    log.append(&[data_entry(i, 1)]).unwrap();
                }
                (seg, starts)
            };
            let mut bytes = std::fs::read(&seg).unwrap();
            let at = starts[4] as usize + patch;
            bytes[at] ^= 0xff;
            if what == "length" {
                bytes[at + 3] = 0x7f; // an absurd length must not be trusted
            }
            std::fs::write(&seg, &bytes).unwrap();
            let log = open(&dir);
            assert_eq!(log.last_index().unwrap(), 4, "{what}");
            let t = log
                .recovery_report()
                .truncation
                .expect("corruption reported");
            assert_eq!(t.offset, starts[4], "{what}");
            assert!(
                t.reason.contains("checksum") || t.reason.contains("length"),
                "{what}: {}",
                t.reason
            );
            assert_eq!(
                all_entries(&log),
                (1..=4).map(|i| data_entry(i, 1)).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn disklog_corruption_in_an_earlier_segment_drops_the_later_segments() {
        let dir = TempDir::new("corrupt-seg");
        let opts = DiskLogOptions { segment_bytes: 100 };
        let segs = {
            let log = DiskLog::open_with(dir.path(), opts.clone()).unwrap();
            for i in 1..=20 {
                log.append(&[data_entry(i, 1)]).unwrap();
            }
            log.segment_paths()
        };
        assert!(segs.len() >= 3, "{segs:?}");
        let mut bytes = std::fs::read(&segs[1]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&segs[1], &bytes).unwrap();
        let log = DiskLog::open_with(dir.path(), opts).unwrap();
        let t = log.recovery_report().truncation.expect("reported");
        assert_eq!(t.segment, segs[1]);
        assert_eq!(t.dropped_segments, segs.len() - 2);
        assert_eq!(log.segment_paths(), segs[..2].to_vec());
        let last = log.last_index().unwrap();
        assert!(last < 20);
        assert_eq!(
            all_entries(&log),
            (1..=last).map(|i| data_entry(i, 1)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn disklog_conflicting_suffix_is_replaced_and_survives_reopen() {
        let dir = TempDir::new("conflict");
        {
            let log = open(&dir);
            log.append(&(1..=6).map(|i| data_entry(i, 1)).collect::<Vec<_>>())
                .unwrap();
            log.append(&[data_entry(4, 2), data_entry(5, 2)]).unwrap();
            assert_eq!(log.last_index().unwrap(), 5);
        }
        let log = open(&dir);
        let want = vec![
            data_entry(1, 1),
            data_entry(2, 1),
            data_entry(3, 1),
            data_entry(4, 2),
            data_entry(5, 2),
        ];
        assert_eq!(all_entries(&log), want);
        assert!(log.recovery_report().is_clean());
    }

    #[test]
    fn disklog_snapshot_survives_reopen_with_its_data() {
        let dir = TempDir::new("snap");
        {
            let log = open(&dir);
            log.initialize_with_voters(&[1]).unwrap();
            log.append(&(1..=3).map(|i| data_entry(i, 1)).collect::<Vec<_>>())
                .unwrap();
            log.apply_snapshot(&snapshot_at(10, 4, b"the state at 10"))
                .unwrap();
            log.append(&[data_entry(11, 4)]).unwrap();
        }
        let log = open(&dir);
        assert_eq!(log.first_index().unwrap(), 11);
        assert_eq!(log.last_index().unwrap(), 11);
        assert_eq!(log.term(10).unwrap(), 4);
        let snap = log.snapshot(0, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 10);
        assert_eq!(&snap.data[..], b"the state at 10");
        let st = log.initial_state().unwrap();
        assert_eq!(st.hard_state.commit, 10);
        assert_eq!(st.hard_state.term, 4);
        assert_eq!(st.conf_state, voters());
        assert_eq!(log.recovery_report().snapshot_index, Some(10));
    }

    #[test]
    fn disklog_compaction_drops_old_segments_and_term_before_first_still_answers() {
        let dir = TempDir::new("compact");
        let opts = DiskLogOptions { segment_bytes: 150 };
        let log = DiskLog::open_with(dir.path(), opts.clone()).unwrap();
        for i in 1..=30 {
            log.append(&[data_entry(i, 1 + i / 10)]).unwrap();
        }
        let before = log.segment_paths();
        assert!(before.len() > 4, "{before:?}");
        log.compact(25, &voters(), b"state at 25".to_vec()).unwrap();
        assert_eq!(log.first_index().unwrap(), 26);
        assert_eq!(log.term(25).unwrap(), 3);
        assert!(is_store_err(log.term(24), raft::StorageError::Compacted));
        for p in &before {
            assert!(!p.exists(), "{} survived compaction", p.display());
        }
        assert_eq!(log.segment_paths().len(), 1);
        // Compacting at or below the snapshot again is a no-op.
        log.compact(20, &voters(), b"older".to_vec()).unwrap();
        assert_eq!(&log.snapshot(0, 0).unwrap().data[..], b"state at 25");
        drop(log);
        let log = DiskLog::open_with(dir.path(), opts).unwrap();
        assert!(log.recovery_report().is_clean());
        assert_eq!(log.first_index().unwrap(), 26);
        assert_eq!(log.term(25).unwrap(), 3);
        assert_eq!(
            all_entries(&log),
            (26..=30)
                .map(|i| data_entry(i, 1 + i / 10))
                .collect::<Vec<_>>()
        );
        let snap = log.snapshot(25, 2).unwrap();
        assert_eq!(&snap.data[..], b"state at 25");
        assert!(is_store_err(
            log.snapshot(26, 2),
            raft::StorageError::SnapshotTemporarilyUnavailable
        ));
    }

    #[test]
    fn disklog_compaction_raises_commit_to_the_snapshot_index() {
        // raft refuses a hard state whose commit is below the snapshot it restarts from.
        let dir = TempDir::new("commit");
        {
            let log = open(&dir);
            log.append(&(1..=5).map(|i| data_entry(i, 1)).collect::<Vec<_>>())
                .unwrap();
            log.set_hardstate(&HardState {
                term: 1,
                commit: 2,
                ..Default::default()
            })
            .unwrap();
            log.compact(4, &voters(), vec![]).unwrap();
        }
        assert_eq!(open(&dir).initial_state().unwrap().hard_state.commit, 4);
    }

    /// Copies the regular files of `dir` (a crash image to restore later).
    fn image(dir: &TempDir) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect()
    }

    fn log_segments(dir: &TempDir) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn disklog_crash_inside_compaction_leaves_the_old_or_the_new_state() {
        let fill = |log: &DiskLog| {
            for i in 1..=12 {
                log.append(&[data_entry(i, 1)]).unwrap();
            }
            log.set_hardstate(&HardState {
                term: 1,
                commit: 12,
                ..Default::default()
            })
            .unwrap();
        };
        let opts = DiskLogOptions { segment_bytes: 120 };
        // Crash after the fresh segment was written, before the snapshot file: the old
        // snapshot file (none here) and old segments come back, plus the fresh segment.
        let dir = TempDir::new("crash-compact-1");
        let log = DiskLog::open_with(dir.path(), opts.clone()).unwrap();
        fill(&log);
        let old = image(&dir);
        log.compact(8, &voters(), b"s8".to_vec()).unwrap();
        drop(log);
        std::fs::remove_file(dir.path().join(SNAP_FILE)).unwrap();
        for (p, b) in &old {
            std::fs::write(p, b).unwrap();
        }
        // ... and the copy segment itself may be cut anywhere by the crash.
        let fresh = log_segments(&dir).pop().unwrap();
        let len = std::fs::metadata(&fresh).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&fresh)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let log = DiskLog::open_with(dir.path(), opts.clone()).unwrap();
        assert!(log.recovery_report().truncation.is_some());
        assert_eq!(log.first_index().unwrap(), 1);
        assert_eq!(
            all_entries(&log),
            (1..=12).map(|i| data_entry(i, 1)).collect::<Vec<_>>()
        );
        assert_eq!(log.initial_state().unwrap().hard_state.commit, 12);
        drop(log);

        // Crash after the snapshot file, before the old segments were deleted: they are stale
        // and go on open.
        let dir = TempDir::new("crash-compact-2");
        let log = DiskLog::open_with(dir.path(), opts.clone()).unwrap();
        fill(&log);
        let old = image(&dir);
        log.compact(8, &voters(), b"s8".to_vec()).unwrap();
        drop(log);
        for (p, b) in &old {
            std::fs::write(p, b).unwrap();
        }
        let log = DiskLog::open_with(dir.path(), opts).unwrap();
        assert!(log.recovery_report().stale_segments_removed > 0);
        assert_eq!(log.first_index().unwrap(), 9);
        assert_eq!(
            all_entries(&log),
            (9..=12).map(|i| data_entry(i, 1)).collect::<Vec<_>>()
        );
        assert_eq!(log.initial_state().unwrap().hard_state.commit, 12);
        assert_eq!(&log.snapshot(8, 0).unwrap().data[..], b"s8");
    }

    #[test]
    fn disklog_crash_after_installing_a_snapshot_does_not_resurrect_the_old_log() {
        let dir = TempDir::new("crash-install");
        let log = open(&dir);
        log.append(&(1..=20).map(|i| data_entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        let old = image(&dir);
        log.apply_snapshot(&snapshot_at(10, 2, b"s10")).unwrap();
        drop(log);
        // Put the old segment back as if the crash came right after the rename.
        for (p, b) in &old {
            std::fs::write(p, b).unwrap();
        }
        let log = open(&dir);
        assert_eq!(log.first_index().unwrap(), 11);
        assert_eq!(
            log.last_index().unwrap(),
            10,
            "entries 11..=20 of term 1 are gone"
        );
        assert_eq!(log.term(10).unwrap(), 2);
    }

    #[test]
    fn disklog_second_open_of_the_same_directory_is_refused() {
        let dir = TempDir::new("lock");
        let log = open(&dir);
        let err = DiskLog::open(dir.path())
            .err()
            .expect("second open refused");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(log);
        open(&dir);
    }

    #[test]
    fn disklog_rejects_appends_that_would_leave_a_gap_or_rewrite_compacted_entries() {
        let dir = TempDir::new("reject");
        let log = mem_like(&dir);
        assert!(log.append(&[entry(7, 5)]).is_err(), "gap");
        assert!(
            log.append(&[entry(2, 3), entry(3, 3)]).is_err(),
            "compacted"
        );
        assert!(
            log.append(&[entry(6, 5), entry(8, 5)]).is_err(),
            "not contiguous"
        );
        assert_eq!(log.last_index().unwrap(), 5);
        // A refused append writes nothing: the store still works and reopens clean.
        log.append(&[entry(6, 6)]).unwrap();
        drop(log);
        let log = open(&dir);
        assert!(log.recovery_report().is_clean());
        assert_eq!(log.last_index().unwrap(), 6);
    }

    // raft-rs's MemStorage tests (storage.rs in raft 0.7), run against DiskLog. MemStorage's
    // entry 3 is the dummy entry before the log; here it is the snapshot at 2/term 2, which
    // is also why term(2) answers instead of being Compacted.

    #[test]
    fn disklog_memstorage_term() {
        let dir = TempDir::new("ms-term");
        let log = mem_like(&dir);
        assert!(is_store_err(log.term(1), raft::StorageError::Compacted));
        assert_eq!(log.term(2), Ok(2));
        assert_eq!(log.term(3), Ok(3));
        assert_eq!(log.term(4), Ok(4));
        assert_eq!(log.term(5), Ok(5));
        assert!(is_store_err(log.term(6), raft::StorageError::Unavailable));
    }

    #[test]
    fn disklog_memstorage_entries_with_max_size() {
        use protobuf::Message;
        let dir = TempDir::new("ms-entries");
        let log = mem_like(&dir);
        log.append(&[entry(6, 6)]).unwrap();
        let size = |i: u64| u64::from(entry(i, i).compute_size());
        let ctx = || raft::GetEntriesContext::empty(false);
        let ents = |v: &[u64]| v.iter().map(|&i| entry(i, i)).collect::<Vec<_>>();
        let max = u64::MAX;
        assert!(is_store_err(
            log.entries(2, 6, max, ctx()),
            raft::StorageError::Compacted
        ));
        let cases: Vec<(u64, u64, u64, Vec<u64>)> = vec![
            (3, 4, max, vec![3]),
            (4, 5, max, vec![4]),
            (4, 6, max, vec![4, 5]),
            (4, 7, max, vec![4, 5, 6]),
            (4, 7, 0, vec![4]),
            (4, 7, size(4) + size(5), vec![4, 5]),
            (4, 7, size(4) + size(5) + size(6) / 2, vec![4, 5]),
            (4, 7, size(4) + size(5) + size(6) - 1, vec![4, 5]),
            (4, 7, size(4) + size(5) + size(6), vec![4, 5, 6]),
        ];
        for (lo, hi, max_size, want) in cases {
            assert_eq!(
                log.entries(lo, hi, max_size, ctx()).unwrap(),
                ents(&want),
                "entries({lo}, {hi}, {max_size})"
            );
        }
        assert_eq!(log.entries(4, 7, None, ctx()).unwrap(), ents(&[4, 5, 6]));
        assert!(log.entries(4, 8, None, ctx()).is_err(), "past the end");
    }

    #[test]
    fn disklog_memstorage_first_and_last_index() {
        let dir = TempDir::new("ms-index");
        let log = mem_like(&dir);
        assert_eq!(log.first_index(), Ok(3));
        assert_eq!(log.last_index(), Ok(5));
        log.append(&[entry(6, 5)]).unwrap();
        assert_eq!(log.last_index(), Ok(6));
        log.compact(4, &voters(), vec![]).unwrap();
        assert_eq!(log.first_index(), Ok(5));
        assert_eq!(log.last_index(), Ok(6));
    }

    #[test]
    fn disklog_memstorage_compact() {
        // (compact at, first index after, its term, live entries); ours drops the compact
        // index itself (its term moves into the snapshot), MemStorage keeps it.
        for (idx, wfirst, wterm, wlen) in [(2, 3, 3, 3), (3, 4, 4, 2), (4, 5, 5, 1), (5, 6, 0, 0)] {
            let dir = TempDir::new("ms-compact");
            let log = mem_like(&dir);
            log.compact(idx, &voters(), vec![]).unwrap();
            assert_eq!(log.first_index().unwrap(), wfirst, "compact {idx}");
            let term = log
                .entries(wfirst, wfirst + 1, 1, raft::GetEntriesContext::empty(false))
                .map_or(0, |v| v.first().map_or(0, |e| e.term));
            assert_eq!(term, wterm, "compact {idx}");
            assert_eq!(log.term(wfirst - 1).unwrap(), wfirst - 1, "compact {idx}");
            let last = log.last_index().unwrap();
            let len = log
                .entries(wfirst, last + 1, 100, raft::GetEntriesContext::empty(false))
                .unwrap()
                .len();
            assert_eq!(len, wlen, "compact {idx}");
        }
        let dir = TempDir::new("ms-compact-past");
        assert!(mem_like(&dir).compact(6, &voters(), vec![]).is_err());
    }

    #[test]
    fn disklog_memstorage_append() {
        let cases: Vec<(Vec<Entry>, Option<Vec<Entry>>)> = vec![
            (
                vec![entry(3, 3), entry(4, 4), entry(5, 5)],
                Some(vec![entry(3, 3), entry(4, 4), entry(5, 5)]),
            ),
            (
                vec![entry(3, 3), entry(4, 6), entry(5, 6)],
                Some(vec![entry(3, 3), entry(4, 6), entry(5, 6)]),
            ),
            (
                vec![entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 5)],
                Some(vec![entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 5)]),
            ),
            (vec![entry(2, 3), entry(3, 3), entry(4, 5)], None),
            (vec![entry(4, 5)], Some(vec![entry(3, 3), entry(4, 5)])),
            (
                vec![entry(6, 6)],
                Some(vec![entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 6)]),
            ),
        ];
        for (i, (ents, want)) in cases.into_iter().enumerate() {
            let dir = TempDir::new("ms-append");
            let log = mem_like(&dir);
            let r = log.append(&ents);
            match want {
                Some(want) => {
                    r.unwrap();
                    assert_eq!(all_entries(&log), want, "#{i}");
                    drop(log);
                    assert_eq!(all_entries(&open(&dir)), want, "#{i} after reopen");
                }
                None => assert!(r.is_err(), "#{i}"),
            }
        }
    }

    #[test]
    fn disklog_memstorage_apply_snapshot() {
        let dir = TempDir::new("ms-apply");
        let log = open(&dir);
        log.apply_snapshot(&snapshot_at(4, 4, b"")).unwrap();
        assert!(
            log.apply_snapshot(&snapshot_at(3, 3, b"")).is_err(),
            "out of date"
        );
        assert_eq!(log.first_index(), Ok(5));
        assert_eq!(log.term(4), Ok(4));
    }

    #[test]
    fn disklog_memstorage_snapshot_is_the_kept_one_or_temporarily_unavailable() {
        let dir = TempDir::new("ms-snap");
        let log = mem_like(&dir);
        log.compact(4, &voters(), b"at 4".to_vec()).unwrap();
        let s = log.snapshot(4, 0).unwrap();
        assert_eq!((s.get_metadata().index, s.get_metadata().term), (4, 4));
        assert_eq!(s.get_metadata().get_conf_state(), &voters());
        assert_eq!(&s.data[..], b"at 4");
        assert!(is_store_err(
            log.snapshot(5, 0),
            raft::StorageError::SnapshotTemporarilyUnavailable
        ));
    }

    /// Drives raft-rs itself over a DiskLog: a one-node cluster elects itself, commits
    /// proposals, compacts, restarts from the directory (raft checks the recovered hard state
    /// against the log and snapshot), and goes on committing.
    #[test]
    fn disklog_carries_a_raft_node_through_compaction_and_restart() {
        let dir = TempDir::new("raft");
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        // Runs ready/advance until quiet; returns the data of the entries applied.
        let drive = |node: &mut raft::RawNode<DiskLog>, store: &DiskLog| -> Vec<Vec<u8>> {
            let mut applied = Vec::new();
            let mut take = |ents: Vec<Entry>| {
                applied.extend(
                    ents.into_iter()
                        .filter(|e| !e.data.is_empty())
                        .map(|e| e.data.to_vec()),
                )
            };
            while node.has_ready() {
                let mut rd = node.ready();
                if !rd.snapshot().is_empty() {
                    store.apply_snapshot(rd.snapshot()).unwrap();
                }
                take(rd.take_committed_entries());
                store.persist(rd.entries(), rd.hs()).unwrap();
                let mut light = node.advance(rd);
                if let Some(commit) = light.commit_index() {
                    let mut hs = store.initial_state().unwrap().hard_state;
                    hs.commit = commit;
                    store.set_hardstate(&hs).unwrap();
                }
                take(light.take_committed_entries());
                node.advance_apply();
            }
            applied
        };
        let config = |applied: u64| raft::Config {
            id: 1,
            election_tick: 10,
            heartbeat_tick: 1,
            applied,
            ..Default::default()
        };

        let store = open(&dir);
        store.initialize_with_voters(&[1]).unwrap();
        let mut node = raft::RawNode::new(&config(0), store.clone(), &logger).unwrap();
        node.campaign().unwrap();
        drive(&mut node, &store);
        for k in 0..5u8 {
            node.propose(vec![], vec![b'a' + k]).unwrap();
        }
        assert_eq!(
            drive(&mut node, &store),
            vec![
                b"a".to_vec(),
                b"b".to_vec(),
                b"c".to_vec(),
                b"d".to_vec(),
                b"e".to_vec()
            ]
        );
        let applied = node.raft.raft_log.applied;
        store
            .compact(
                applied - 1,
                &ConfState::from((vec![1], vec![])),
                b"abcd".to_vec(),
            )
            .unwrap();
        let term = node.raft.term;
        drop(node);
        drop(store);

        let store = open(&dir);
        assert!(store.recovery_report().is_clean());
        let snap_index = store.snapshot(0, 0).unwrap().get_metadata().index;
        let mut node = raft::RawNode::new(&config(snap_index), store.clone(), &logger).unwrap();
        assert_eq!(node.raft.term, term);
        assert_eq!(node.raft.raft_log.committed, applied);
        // The entry after the snapshot is committed and applied again on restart.
        let mut replayed = drive(&mut node, &store);
        node.campaign().unwrap();
        replayed.extend(drive(&mut node, &store));
        node.propose(vec![], b"f".to_vec()).unwrap();
        replayed.extend(drive(&mut node, &store));
        assert_eq!(replayed, vec![b"e".to_vec(), b"f".to_vec()]);
        assert!(node.raft.term > term);
    }
}
