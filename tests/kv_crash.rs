//! `kill -9` at random moments while a child process writes to a [`DiskLog`]: every write the
//! child saw acknowledged (a `LogStore` call that returned `Ok`) must be there when the
//! directory is reopened, with the right term and data, and the log must be consistent.
//!
//! The child is this test binary run again with `crash_child` as the only test and the
//! directory in an environment variable. It appends batches (sometimes replacing a suffix with
//! a higher term, as a follower does), records hard states with them, and compacts now and
//! then; it prints `BEGIN ...` before each call and `ACK ...` after it returned. The parent
//! SIGKILLs it after a seeded random delay, reopens the directory and checks it against what
//! was acknowledged, allowing only the one call in flight to have taken effect partly or whole.
//!
//! `TUNSTACK_KV_CRASH_SEED=N` replays a run. `append_throughput` (ignored: it measures) prints
//! appends per second with fsync.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raft::prelude::{ConfState, Entry, HardState};
use raft::{GetEntriesContext, Storage};
use tunstack::kv::storage::{DiskLog, DiskLogOptions, LogStore};
use tunstack::rng::Rng;

const CHILD_DIR_ENV: &str = "TUNSTACK_KV_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "TUNSTACK_KV_CRASH_CHILD_SEED";
const ROUNDS: u64 = 20;
/// Starts each line the child reports on.
const MARK: &str = "@@ ";

/// The data of entry (index, term): recomputable, so any entry on disk can be checked, with a
/// length that varies so records straddle pages and segments differently.
fn payload(index: u64, term: u64) -> Vec<u8> {
    let mut v = format!("{index}/{term}/").into_bytes();
    let extra = (index.wrapping_mul(7919) ^ term) % 300;
    v.extend((0..extra).map(|k| (index as u8).wrapping_add(k as u8)));
    v
}

fn snap_data(index: u64) -> Vec<u8> {
    format!("state machine at {index}").into_bytes()
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: payload(index, term).into(),
        ..Default::default()
    }
}

fn scratch(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kv-crash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// The child's side: runs only when the parent re-executes this binary.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // an ordinary test run: nothing to do
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // Small segments, so kills also land on segment starts and compaction deletes segments.
    let opts = DiskLogOptions {
        segment_bytes: 16 << 10,
    };
    let log = DiskLog::open_with(Path::new(&dir), opts).expect("child opens the store");
    if log.is_empty() {
        log.initialize_with_voters(&[1, 2, 3]).unwrap();
    }
    let cs = ConfState::from((vec![1, 2, 3], vec![]));
    let mut rng = Rng::new(seed);
    let mut term = log
        .initial_state()
        .unwrap()
        .hard_state
        .term
        .max(log.term(log.last_index().unwrap()).unwrap())
        .max(1);
    let out = std::io::stdout();
    let say = |line: String| {
        let mut o = out.lock();
        // One write per line, flushed before the next storage call.
        o.write_all(line.as_bytes()).unwrap();
        o.flush().unwrap();
    };
    loop {
        let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
        let r = rng.gen_range(0, 100);
        if r < 4 && last >= first + 20 {
            let idx = last - rng.gen_range(0, 10);
            say(format!("{MARK}BEGIN_COMPACT {idx}\n"));
            log.compact(idx, &cs, snap_data(idx)).unwrap();
            say(format!("{MARK}COMPACT {idx}\n"));
            continue;
        }
        let start = if r < 14 && last >= first + 3 {
            term += 1; // a new leader's entries replace an uncommitted suffix
            last - rng.gen_range(0, 3)
        } else {
            last + 1
        };
        let n = if rng.gen_range(0, 2) == 0 {
            1
        } else {
            rng.gen_range(1, 65)
        };
        let batch: Vec<Entry> = (start..start + n).map(|i| entry(i, term)).collect();
        let hs = HardState {
            term,
            vote: 1,
            commit: start.saturating_sub(4).max(first - 1),
            ..Default::default()
        };
        say(format!("{MARK}BEGIN {start} {n} {term}\n"));
        log.persist(&batch, Some(&hs)).unwrap();
        say(format!("{MARK}ACK {start} {n} {term}\n"));
    }
}

/// What the child was doing when it died.
enum InFlight {
    Batch { start: u64, n: u64, term: u64 },
    Compact,
}

/// The log after `batch` (or its first `k` entries) lands on `log`.
fn apply(log: &BTreeMap<u64, u64>, start: u64, k: u64, term: u64) -> BTreeMap<u64, u64> {
    let mut m = log.clone();
    if k > 0 {
        m.retain(|&i, _| i < start);
        m.extend((start..start + k).map(|i| (i, term)));
    }
    m
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_write() {
    let seed: u64 = std::env::var("TUNSTACK_KV_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0005);
    println!("seed {seed} (TUNSTACK_KV_CRASH_SEED to replay)");
    let mut rng = Rng::new(seed);
    let dir = scratch("kill9");
    let exe = std::env::current_exe().unwrap();

    // The log as the parent knows it: index -> term of every live entry (the data follows).
    let mut model: BTreeMap<u64, u64> = BTreeMap::new();
    let mut snap_floor = 0u64;
    let mut hs_term = 0u64;
    let (mut acked_total, mut torn_rounds, mut compactions, mut in_flight_rounds) = (0, 0, 0, 0);
    let mut max_segments = 0;

    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DIR_ENV, &dir)
            .env(
                CHILD_SEED_ENV,
                (seed ^ round.wrapping_mul(0x9e37_79b9)).to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("re-run the test binary as the child");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    // A line cut by the kill is not an acknowledgement.
                    Ok(_) if buf.ends_with(b"\n") => {
                        lines.push(String::from_utf8_lossy(&buf).trim_end().to_string())
                    }
                    Ok(_) => break,
                }
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(30, 400)));
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round}: the child must die by the signal, not exit ({status})"
        );
        let lines = reader.join().unwrap();

        // Replay what the child said onto the model.
        let mut in_flight = None;
        let mut acked = 0;
        for line in &lines {
            // The harness may print "test crash_child ... " on the same line as the first
            // report, so a report is what follows its marker.
            let Some((_, report)) = line.split_once(MARK) else {
                continue;
            };
            let f: Vec<&str> = report.split_whitespace().collect();
            let num = |k: usize| f[k].parse::<u64>().unwrap();
            match f.first().copied() {
                Some("BEGIN") => {
                    in_flight = Some(InFlight::Batch {
                        start: num(1),
                        n: num(2),
                        term: num(3),
                    })
                }
                Some("ACK") => {
                    model = apply(&model, num(1), num(2), num(3));
                    hs_term = num(3);
                    acked += num(2);
                    in_flight = None;
                }
                Some("BEGIN_COMPACT") => in_flight = Some(InFlight::Compact),
                Some("COMPACT") => {
                    snap_floor = snap_floor.max(num(1));
                    compactions += 1;
                    in_flight = None;
                }
                _ => {} // the test harness's own lines
            }
        }
        acked_total += acked;
        in_flight_rounds += u64::from(in_flight.is_some());

        // Reopen and compare.
        let log = DiskLog::open(&dir).unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
        let report = log.recovery_report();
        torn_rounds += u64::from(report.truncation.is_some());
        max_segments = max_segments.max(report.segments);
        let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
        let base = first - 1;
        assert!(
            base >= snap_floor,
            "round {round}: snapshot {base} older than acknowledged {snap_floor}"
        );
        log.term(base)
            .unwrap_or_else(|e| panic!("round {round}: term(first - 1): {e}"));
        if base > 0 {
            let snap = log.snapshot(0, 2).unwrap();
            assert_eq!(snap.get_metadata().index, base, "round {round}");
            assert_eq!(&snap.data[..], &snap_data(base)[..], "round {round}");
        }
        let ents = log
            .entries(first, last + 1, None, GetEntriesContext::empty(false))
            .unwrap();
        let mut disk = BTreeMap::new();
        for (k, e) in ents.iter().enumerate() {
            assert_eq!(
                e.index,
                first + k as u64,
                "round {round}: log not contiguous"
            );
            assert_eq!(
                &e.data[..],
                &payload(e.index, e.term)[..],
                "round {round}: entry {} has the wrong data",
                e.index
            );
            disk.insert(e.index, e.term);
        }
        let live = |m: &BTreeMap<u64, u64>| -> BTreeMap<u64, u64> {
            m.range(first..).map(|(&i, &t)| (i, t)).collect()
        };
        // The acknowledged log, or it plus a prefix of the batch in flight.
        let ok = match in_flight {
            Some(InFlight::Batch { start, n, term }) => {
                (0..=n).any(|k| live(&apply(&model, start, k, term)) == disk)
            }
            _ => live(&model) == disk,
        };
        assert!(
            ok,
            "round {round}: acknowledged log differs from the reopened one\n model tail {:?}\n disk tail {:?}\n report {report:?}\n child's last lines {:?}",
            model.iter().rev().take(8).collect::<Vec<_>>(),
            disk.iter().rev().take(8).collect::<Vec<_>>(),
            &lines[lines.len().saturating_sub(6)..]
        );
        let hs = log.initial_state().unwrap().hard_state;
        let hs_ok = match in_flight {
            Some(InFlight::Batch { term, .. }) => hs.term == hs_term || hs.term == term,
            _ => hs.term == hs_term,
        };
        assert!(
            hs_ok,
            "round {round}: hard state term {} lost ({hs_term} acknowledged)",
            hs.term
        );
        assert!(
            hs.commit >= base && hs.commit <= last.max(base),
            "round {round}: commit {}",
            hs.commit
        );

        // Carry the truth forward (it may hold the in-flight call's effect).
        model = disk;
        snap_floor = base;
        hs_term = hs.term;
        drop(log);
    }
    println!(
        "{ROUNDS} kills: {acked_total} entries acknowledged, {compactions} compactions, \
         {in_flight_rounds} kills with a call in flight, {torn_rounds} torn tails cut, \
         up to {max_segments} segments"
    );
    assert!(acked_total > 0, "the child never got a write acknowledged");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Appends per second with fsync, one entry per call and 64 per call (group commit).
#[test]
#[ignore = "measurement: cargo test --release --test kv_crash append_throughput -- --ignored --nocapture"]
fn append_throughput() {
    let dir = scratch("throughput");
    let log = DiskLog::open(&dir).unwrap();
    let mut next = 1u64;
    let mut rates = Vec::new();
    for batch in [1u64, 64] {
        let calls = 300;
        let t = Instant::now();
        for _ in 0..calls {
            let ents: Vec<Entry> = (next..next + batch)
                .map(|i| Entry {
                    index: i,
                    term: 1,
                    data: vec![0x5a; 100].into(),
                    ..Default::default()
                })
                .collect();
            log.append(&ents).unwrap();
            next += batch;
        }
        let secs = t.elapsed().as_secs_f64();
        let calls_per_s = calls as f64 / secs;
        println!(
            "batch {batch:>2}: {calls_per_s:>8.0} appends/s (fsyncs/s), {:>9.0} entries/s, {:.2} ms per append",
            calls_per_s * batch as f64,
            1000.0 * secs / calls as f64
        );
        rates.push(calls_per_s * batch as f64);
    }
    assert!(
        rates[1] > 4.0 * rates[0],
        "group commit must pay off: {rates:?} entries/s"
    );
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}
