//! The KV store as real processes under faults: three `tunstack kv node` processes, each with
//! its own stack on its own TUN device, in a network namespace each test makes, the kernel
//! routing between the devices.
//!
//! - concurrent clients record a history while the leader is SIGKILLed, restarted, and a node
//!   partitioned and healed; the history is checked for linearizability (`kv::lincheck`);
//! - `kill -9` of a node, or of all of them at once, at seeded random moments under write load:
//!   every write acknowledged to a client is read back after the restarts;
//! - a sequential session never reads backwards (monotonic reads, read-your-writes) across two
//!   real failovers;
//! - `tunstack kv add` and `tunstack kv remove` change the membership while clients are served.
//!
//! `TUNSTACK_SEED=N` replays the random moments of the kill test.

mod common;
use common::kv::{kv_cli, status, EXE};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tunstack::kv::client::{http_call, KvClient};
use tunstack::kv::lincheck::{check, CheckResult, KvInput, KvOutput, Operation};
use tunstack::kv::server::{self, ClusterSpec, KvReply};
use tunstack::netns::test_in_new_netns as in_netns;
use tunstack::rng::Rng;

/// Node processes of one cluster directory; every node (also ones added later) is killed, the
/// partitions removed and the directory deleted on drop.
struct Procs {
    dir: PathBuf,
    spec: ClusterSpec,
    children: Vec<Child>,
}

impl Procs {
    fn start(name: &str, prefix: &str, base: u8) -> Procs {
        let dir = std::env::temp_dir().join(format!("tunstack-kvf-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = ClusterSpec::local(3, prefix, base);
        let nodes: Vec<_> = spec.nodes.iter().map(|n| (n.id, n.addr)).collect();
        tunstack::kv::transport::ensure_cluster_certs(&dir, &nodes).unwrap();
        spec.save(&dir).unwrap();
        let mut p = Procs {
            dir,
            spec,
            children: Vec::new(),
        };
        for id in 1..=3 {
            p.restart(id);
        }
        p
    }

    fn addr(&self, id: u64) -> SocketAddrV4 {
        self.spec.node(id).unwrap().http_addr()
    }

    fn addrs(&self) -> Vec<SocketAddrV4> {
        self.spec.nodes.iter().map(|n| n.http_addr()).collect()
    }

    /// SIGKILL node `id` and wait until the process is gone and its device with it.
    fn kill(&mut self, id: u64) {
        let pid =
            server::kill_node(&self.dir, id).unwrap_or_else(|e| panic!("kill node {id}: {e}"));
        if let Some(c) = self.children.iter_mut().find(|c| c.id() as i32 == pid) {
            let _ = c.wait();
        }
        let tun = &self.spec.node(id).unwrap().tun;
        let end = Instant::now() + Duration::from_secs(5);
        while tunstack::up::device_exists(tun) {
            assert!(Instant::now() < end, "{tun} outlived its process");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn restart(&mut self, id: u64) {
        let c = server::spawn_node(Path::new(EXE), &self.dir, id).unwrap();
        self.children.push(c);
        server::wait_serving(self.spec.node(id).unwrap(), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("node {id} did not come up: {e}"));
    }

    /// The leader every node of `among` agrees on.
    fn leader(&self, among: &[u64]) -> u64 {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let seen: Vec<Option<u64>> = among
                .iter()
                .map(|i| status(self.addr(*i)).and_then(|s| s["leader"].as_u64()))
                .collect();
            if let Some(Some(l)) = seen.first() {
                if seen.iter().all(|x| *x == Some(*l)) && among.contains(l) {
                    return *l;
                }
            }
            assert!(
                Instant::now() < end,
                "no agreed leader among {among:?}: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for id in 1..=9 {
            if let Some(pid) = server::node_pid(&self.dir, id) {
                // SAFETY: SIGKILL to a pid from our own pid file.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = server::heal(&self.dir, None);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn client(nodes: Vec<SocketAddrV4>) -> KvClient {
    let mut c = KvClient::new(nodes);
    c.attempt_timeout = Duration::from_secs(3);
    c.deadline = Duration::from_secs(8);
    c
}

fn seed() -> u64 {
    let s = std::env::var("TUNSTACK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Rng::from_os().next_u64() % 1_000_000);
    eprintln!("seed {s} (TUNSTACK_SEED={s} replays it)");
    s
}

#[test]
fn history_under_leader_kill_restart_and_partition_is_linearizable() {
    in_netns("kv_faults_lincheck", || {
        let mut p = Procs::start("lin", "tkf", 110);
        let l1 = p.leader(&[1, 2, 3]);
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::<Operation>::new()));
        let threads: Vec<_> = (0..4u64)
            .map(|c| {
                let (stop, history) = (stop.clone(), history.clone());
                let mut kv = client(p.addrs());
                std::thread::spawn(move || {
                    let mut rng = Rng::new(c + 1);
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let key = format!("k{}", rng.gen_range(0, 3));
                        let value = format!("c{c}-{i}").into_bytes();
                        let call = t0.elapsed().as_micros() as u64;
                        let (input, output) = match rng.gen_range(0, 3) {
                            0 => {
                                let out = match kv.put(&key, &value) {
                                    Ok(r) if r.status == 200 => KvOutput::Ok,
                                    _ => KvOutput::Unknown,
                                };
                                (KvInput::Put { key, value }, out)
                            }
                            1 => {
                                let out = match kv.get(&key, "linearizable") {
                                    Ok(r) if r.status == 200 => {
                                        KvOutput::Value(r.reply.value.map(String::into_bytes))
                                    }
                                    Ok(r) if r.status == 404 => KvOutput::Value(None),
                                    _ => KvOutput::Unknown,
                                };
                                (KvInput::Get { key }, out)
                            }
                            _ => {
                                let expected = Some(
                                    format!("c{}-{}", rng.gen_range(0, 4), i / 2).into_bytes(),
                                )
                                .filter(|_| rng.gen_range(0, 4) != 0);
                                let out = match kv.cas(&key, expected.as_deref(), &value) {
                                    Ok(r) if r.status == 200 => KvOutput::CasResult(true),
                                    Ok(r) if r.status == 409 => KvOutput::CasResult(false),
                                    _ => KvOutput::Unknown,
                                };
                                (
                                    KvInput::Cas {
                                        key,
                                        expected,
                                        new: value,
                                    },
                                    out,
                                )
                            }
                        };
                        let ret = match output {
                            KvOutput::Unknown => u64::MAX,
                            _ => t0.elapsed().as_micros() as u64,
                        };
                        history.lock().unwrap().push(Operation {
                            client: c,
                            call,
                            ret,
                            input,
                            output,
                        });
                    }
                })
            })
            .collect();
        let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
        pause(800);
        p.kill(l1);
        pause(1500);
        p.restart(l1);
        let l2 = p.leader(&[1, 2, 3]);
        let minority = (1..=3).find(|i| *i != l2).unwrap();
        server::partition_node(&p.dir, minority).unwrap();
        pause(1500);
        server::heal(&p.dir, None).unwrap();
        pause(1000);
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let ops = history.lock().unwrap().clone();
        let known = ops.iter().filter(|o| o.output != KvOutput::Unknown).count();
        eprintln!(
            "{} operations, {known} with a known outcome; leader {l1} killed, node {minority} partitioned",
            ops.len()
        );
        assert!(known > 100, "too few operations were answered: {known}");
        let r = check(&ops, Duration::from_secs(20));
        assert_eq!(r, CheckResult::Linearizable, "history: {ops:?}");
    });
}

#[test]
fn acknowledged_writes_survive_kill_9_at_random_moments() {
    in_netns("kv_faults_kill9", || {
        let mut p = Procs::start("kill9", "tkd", 115);
        p.leader(&[1, 2, 3]);
        let mut rng = Rng::new(seed());
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let mut kv = client(p.addrs());
                kv.deadline = Duration::from_secs(15);
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let (k, v) = (format!("w{w}-{i}"), format!("value {w}/{i}"));
                        if let Ok(r) = kv.put(&k, v.as_bytes()) {
                            if r.status == 200 {
                                acked.lock().unwrap().push((k, v));
                            }
                        }
                    }
                })
            })
            .collect();
        // Four kills: a random node three times (leader or follower), then every node at once.
        for round in 0..4 {
            std::thread::sleep(Duration::from_millis(200 + rng.gen_range(0, 700)));
            let victims: Vec<u64> = if round == 3 {
                vec![1, 2, 3]
            } else {
                vec![1 + rng.gen_range(0, 3)]
            };
            eprintln!(
                "round {round}: kill -9 of {victims:?} after {} acked writes",
                acked.lock().unwrap().len()
            );
            for v in &victims {
                p.kill(*v);
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(0, 300)));
            for v in &victims {
                p.restart(*v);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        assert!(
            acked.len() > 50,
            "too few writes were acknowledged: {}",
            acked.len()
        );
        let mut reader = client(p.addrs());
        for (k, v) in &acked {
            let r = reader.get(k, "linearizable").expect("read back");
            assert_eq!(
                (r.status, r.reply.value.as_deref()),
                (200, Some(v.as_str())),
                "acknowledged write {k}={v} lost after kill -9 ({} acknowledged in all)",
                acked.len()
            );
        }
        eprintln!(
            "all {} acknowledged writes present after the kills",
            acked.len()
        );
    });
}

#[test]
fn sequential_session_never_reads_backwards_across_real_failovers() {
    in_netns("kv_faults_sequential", || {
        let mut p = Procs::start("seq", "tks", 125);
        let l1 = p.leader(&[1, 2, 3]);
        let stop = Arc::new(AtomicBool::new(false));
        // Another client keeps counting up `other`.
        let counter = {
            let stop = stop.clone();
            let mut kv = client(p.addrs());
            std::thread::spawn(move || {
                let mut j = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    j += 1;
                    let _ = kv.put("other", j.to_string().as_bytes());
                }
            })
        };
        // The session: starts on the leader, writes its own counter and reads both keys at
        // sequential consistency wherever it is (`at`: the node that served its last read).
        let mut nodes = p.addrs();
        nodes.rotate_left((l1 - 1) as usize);
        let at = Arc::new(std::sync::atomic::AtomicU64::new(l1));
        let session = {
            let stop = stop.clone();
            let at = at.clone();
            let mut kv = client(nodes);
            std::thread::spawn(move || {
                let (mut mine, mut last_other, mut last_index) = (0u64, 0u64, 0u64);
                let mut reads = 0;
                let mut servers = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    mine += 1;
                    match kv.put("mine", mine.to_string().as_bytes()) {
                        Ok(r) if r.status == 200 => {}
                        _ => {
                            mine -= 1; // outcome unknown: the next write supersedes it
                            continue;
                        }
                    }
                    for key in ["mine", "other"] {
                        let r = match kv.get(key, "sequential") {
                            Ok(r) if r.status == 200 || r.status == 404 => r,
                            _ => continue, // no answer in time: not a read
                        };
                        reads += 1;
                        servers.insert(r.reply.served_by);
                        at.store(r.reply.served_by, Ordering::Relaxed);
                        assert!(
                            r.reply.index >= last_index,
                            "{key}: read at index {} after one at {last_index} (node {})",
                            r.reply.index,
                            r.reply.served_by
                        );
                        last_index = r.reply.index;
                        let v: u64 = r.reply.value.as_deref().map_or(0, |v| v.parse().unwrap());
                        if key == "mine" {
                            assert!(
                                v >= mine,
                                "read {v} after writing {mine} (node {})",
                                r.reply.served_by
                            );
                        } else {
                            assert!(
                                v >= last_other,
                                "other went back from {last_other} to {v} (node {})",
                                r.reply.served_by
                            );
                            last_other = v;
                        }
                    }
                }
                (reads, servers)
            })
        };
        let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
        pause(700);
        p.kill(l1);
        pause(1200);
        p.restart(l1);
        p.leader(&[1, 2, 3]);
        pause(500);
        // Then the node the session is on now (it moved off the dead leader).
        let l2 = at.load(Ordering::Relaxed);
        p.kill(l2);
        pause(1200);
        p.restart(l2);
        pause(700);
        stop.store(true, Ordering::Relaxed);
        counter.join().unwrap();
        let (reads, servers) = session.join().expect("the session read backwards");
        eprintln!(
            "{reads} sequential reads, served by nodes {servers:?}, across kills of {l1} and {l2}"
        );
        assert!(reads > 50, "too few reads: {reads}");
        assert!(servers.len() >= 2, "the session never moved: {servers:?}");
    });
}

#[test]
fn kv_add_and_remove_change_membership_while_serving() {
    in_netns("kv_faults_membership", || {
        let p = Procs::start("members", "tkm", 130);
        let l = p.leader(&[1, 2, 3]);
        // The follower to remove later. The writer asks the leader first and the victim last:
        // what is tested is that the cluster commits writes while its membership changes, not
        // how fast a client leaves a node that was removed under it (a request in flight to
        // the victim when its process stops waits out the 3 s attempt timeout, longer than
        // the window measured after the removal).
        let victim = (1..=3).find(|i| *i != l).unwrap();
        let keep = (1..=3).find(|i| *i != l && *i != victim).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let writer = {
            let (stop, served) = (stop.clone(), served.clone());
            let mut kv = client(vec![p.addr(l), p.addr(keep), p.addr(victim)]);
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if let Ok(r) = kv.put(&format!("m{}", i % 10), b"v") {
                        if r.status == 200 {
                            served.lock().unwrap().push(Instant::now());
                        }
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let t_add = Instant::now();
        let said = kv_cli(&p.dir, &["add", "4"]);
        assert!(said.contains("node 4 added"), "{said}");
        let spec = ClusterSpec::load(&p.dir).unwrap();
        let a4 = spec.node(4).expect("node 4 in cluster.json").http_addr();
        // Node 4 catches up (by snapshot) and serves reads of what was written before it came.
        let mut kv = client(p.addrs());
        let w = kv.put("before-4", b"written before node 4 joined").unwrap();
        assert_eq!(w.status, 200);
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let st = status(a4);
            let members = st
                .as_ref()
                .and_then(|s| s["members"].as_array().map(|m| m.len()))
                .unwrap_or(0);
            let (s, b) = http_call(
                a4,
                "GET",
                "/kv/before-4?consistency=eventual",
                &[],
                None,
                Duration::from_secs(2),
            )
            .unwrap_or((0, Vec::new()));
            let r: Option<KvReply> = serde_json::from_slice(&b).ok();
            if s == 200 && members == 4 && r.is_some_and(|r| r.value.is_some()) {
                break;
            }
            assert!(Instant::now() < end, "node 4 never caught up: {st:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Remove a follower of the original three.
        let t_remove = Instant::now();
        let said = kv_cli(&p.dir, &["remove", &victim.to_string()]);
        assert!(said.contains(&format!("node {victim} removed")), "{said}");
        let leader_addr = p.addr(l);
        let st = status(leader_addr).unwrap();
        let ids: Vec<u64> = st["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        assert!(
            !ids.contains(&victim) && ids.contains(&4) && ids.len() == 3,
            "members {ids:?}"
        );
        let end = Instant::now() + Duration::from_secs(10);
        while server::node_pid(&p.dir, victim).is_some() {
            assert!(
                Instant::now() < end,
                "the removed node's process is still running"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let served = served.lock().unwrap().clone();
        let during_add = served
            .iter()
            .filter(|t| **t >= t_add && **t < t_remove)
            .count();
        let after_remove = served.iter().filter(|t| **t >= t_remove).count();
        eprintln!("{} writes served: {during_add} while adding node 4, {after_remove} from removing node {victim} on", served.len());
        assert!(
            during_add > 10 && after_remove > 10,
            "writes stalled: {during_add} / {after_remove}"
        );
        // The new membership serves writes with node 4 counting toward the quorum.
        let spec = ClusterSpec::load(&p.dir).unwrap();
        let mut kv = client(spec.nodes.iter().map(|n| n.http_addr()).collect());
        assert_eq!(kv.put("after", b"removal").unwrap().status, 200);
        let table = kv_cli(&p.dir, &["status"]);
        assert_eq!(table.matches("leader").count(), 2, "{table}");
    });
}
