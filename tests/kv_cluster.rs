//! The KV store as real processes: `tunstack kv cluster` starts three node processes, each
//! with its own stack on its own TUN device, inside a network namespace this test makes; the
//! kernel routes between the devices. Then: reads and writes at each consistency level,
//! SIGKILL of the leader (failover measured), restart and catch-up, a partition (the majority
//! serves linearizable reads and writes, the minority refuses linearizable reads and serves
//! eventual ones), heal and convergence. A second test runs the peer transport between two
//! stacks and checks that a certificate from another CA is refused.

mod common;
use common::kv::{kv_cli as kv, status, EXE};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tunstack::kv::client::{http_call, KvClient};
use tunstack::kv::server::{ClusterSpec, KvReply};
use tunstack::kv::transport::{
    ensure_cluster_certs, NodeTls, StackNet, Transport, TransportConfig, TransportEvent,
};
use tunstack::netns;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tunstack-kvc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

use tunstack::netns::test_in_new_netns as in_netns;

/// The leader every reachable node agrees on.
fn leader(spec: &ClusterSpec, among: &[u64], timeout: Duration) -> u64 {
    let end = Instant::now() + timeout;
    loop {
        let mut seen = Vec::new();
        for n in spec.nodes.iter().filter(|n| among.contains(&n.id)) {
            if let Some(s) = status(n.http_addr()) {
                seen.push(s["leader"].as_u64());
            }
        }
        if seen.len() == among.len() {
            if let Some(Some(l)) = seen.first().cloned() {
                if seen.iter().all(|x| *x == Some(l)) && among.contains(&l) {
                    return l;
                }
            }
        }
        assert!(
            Instant::now() < end,
            "no agreed leader among {among:?}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn raw_get(addr: SocketAddrV4, key: &str, consistency: &str) -> (u16, KvReply) {
    let (s, b) = http_call(
        addr,
        "GET",
        &format!("/kv/{key}?consistency={consistency}"),
        &[],
        None,
        Duration::from_secs(6),
    )
    .unwrap_or_else(|e| panic!("GET {key} from {addr}: {e}"));
    let r: KvReply = serde_json::from_slice(&b)
        .unwrap_or_else(|e| panic!("{addr}: {e}: {}", String::from_utf8_lossy(&b)));
    (s, r)
}

struct Cluster {
    child: Child,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: SIGINT to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_cluster(dir: &Path, prefix: &str) -> Cluster {
    let mut child = Command::new(EXE)
        .args(["kv", "cluster", "--nodes", "3", "--prefix", prefix, "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tunstack kv cluster");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("cluster: {line}");
            let _ = tx.send(line);
        }
    });
    let cluster = Cluster {
        child,
        dir: dir.to_path_buf(),
    };
    let end = Instant::now() + Duration::from_secs(40);
    loop {
        let left = end
            .checked_duration_since(Instant::now())
            .expect("the cluster did not come up within 40 s");
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("cluster of 3 running") => break,
            Ok(_) => {}
            Err(e) => panic!("the cluster did not come up: {e}"),
        }
    }
    cluster
}

#[test]
fn cluster_fails_over_catches_up_and_shows_cap_under_partition() {
    in_netns("kv_cluster", || {
        let dir = tmpdir("cluster");
        let cluster = start_cluster(&dir, "tkc");
        let spec = ClusterSpec::load(&dir).unwrap();
        let addr = |id: u64| spec.node(id).unwrap().http_addr();
        let all: Vec<u64> = vec![1, 2, 3];
        let mut client = KvClient::new(spec.nodes.iter().map(|n| n.http_addr()).collect());

        // Writes and reads at each consistency level.
        let l1 = leader(&spec, &all, Duration::from_secs(15));
        let w = client.put("color", b"red").unwrap();
        assert_eq!(w.status, 200, "{w:?}");
        for id in &all {
            let mut c = KvClient::new(vec![addr(*id)]);
            c.last_index = w.reply.index;
            let r = c.get("color", "linearizable").unwrap();
            assert_eq!((r.status, r.reply.value.as_deref()), (200, Some("red")));
            let r = c.get("color", "sequential").unwrap();
            assert_eq!(r.reply.value.as_deref(), Some("red"), "sequential at {id}");
            assert!(r.reply.index >= w.reply.index);
            assert_eq!(r.reply.served_by, *id);
        }
        let cas = client.cas("color", Some(b"red"), b"blue").unwrap();
        assert_eq!(cas.status, 200);
        let cas = client.cas("color", Some(b"red"), b"green").unwrap();
        assert_eq!(
            (cas.status, cas.reply.value.as_deref()),
            (409, Some("blue"))
        );
        assert_eq!(client.delete("color").unwrap().status, 200);
        assert_eq!(client.get("color", "linearizable").unwrap().status, 404);
        // Exactly once: the same client id and sequence number twice apply once.
        let hdr = [
            ("X-Client-Id", "777".to_string()),
            ("X-Seq", "1".to_string()),
        ];
        let put = |v: &[u8]| {
            http_call(
                addr(l1),
                "PUT",
                "/kv/once",
                &hdr,
                Some(v),
                Duration::from_secs(5),
            )
            .unwrap()
        };
        let (s1, b1) = put(b"first");
        let (s2, b2) = put(b"second");
        assert_eq!((s1, s2), (200, 200));
        let i1: KvReply = serde_json::from_slice(&b1).unwrap();
        let i2: KvReply = serde_json::from_slice(&b2).unwrap();
        assert_eq!(i1.index, i2.index, "the retry was applied again");
        assert_eq!(
            client
                .get("once", "linearizable")
                .unwrap()
                .reply
                .value
                .as_deref(),
            Some("first")
        );

        // SIGKILL the leader: a new leader serves writes within a few seconds.
        kv(&dir, &["kill", &l1.to_string()]);
        let killed_at = Instant::now();
        let rest: Vec<u64> = all.iter().copied().filter(|i| *i != l1).collect();
        let mut c2 = KvClient::new(rest.iter().map(|i| addr(*i)).collect());
        let w = c2.put("after", b"failover").unwrap();
        let failover = killed_at.elapsed();
        assert_eq!(w.status, 200, "{w:?}");
        eprintln!("FAILOVER: first write after SIGKILL of leader {l1} answered in {failover:?} by node {}", w.reply.served_by);
        assert!(
            failover < Duration::from_secs(8),
            "failover took {failover:?}"
        );
        let l2 = leader(&spec, &rest, Duration::from_secs(10));
        assert_ne!(l2, l1);

        // Restart it: it catches up.
        kv(&dir, &["restart", &l1.to_string()]);
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let r = raw_get(addr(l1), "after", "eventual");
            if r.0 == 200 && r.1.value.as_deref() == Some("failover") {
                break;
            }
            assert!(
                Instant::now() < end,
                "restarted node {l1} never caught up: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }

        // Partition a follower: the majority serves linearizable reads and writes; the
        // minority refuses linearizable reads and still serves (stale) eventual ones.
        let l = leader(&spec, &all, Duration::from_secs(10));
        let minority = *all.iter().find(|i| **i != l).unwrap();
        kv(&dir, &["partition", &minority.to_string()]);
        let majority: Vec<u64> = all.iter().copied().filter(|i| *i != minority).collect();
        let mut cm = KvClient::new(majority.iter().map(|i| addr(*i)).collect());
        assert_eq!(cm.put("cap", b"majority-write").unwrap().status, 200);
        for id in &majority {
            let r = raw_get(addr(*id), "cap", "linearizable");
            assert_eq!(
                (r.0, r.1.value.as_deref()),
                (200, Some("majority-write")),
                "node {id}"
            );
        }
        let r = raw_get(addr(minority), "cap", "linearizable");
        assert_eq!(r.0, 503, "the minority served a linearizable read: {r:?}");
        let r = raw_get(addr(minority), "after", "eventual");
        assert_eq!((r.0, r.1.value.as_deref()), (200, Some("failover")));
        assert_eq!(r.1.served_by, minority);
        let r = raw_get(addr(minority), "cap", "eventual");
        assert_eq!(
            r.0, 404,
            "the minority cannot have seen the majority's write: {r:?}"
        );
        // The status shows the partitioned node suspected by the leader.
        let st = status(addr(l)).unwrap();
        let p = st["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == minority)
            .unwrap()
            .clone();
        assert_eq!(p["suspected"], true, "{st}");

        // Heal: every node converges.
        kv(&dir, &["heal"]);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let r = raw_get(addr(minority), "cap", "eventual");
            let applied: Vec<Option<u64>> = all
                .iter()
                .map(|i| status(addr(*i)).and_then(|s| s["applied"].as_u64()))
                .collect();
            if r.1.value.as_deref() == Some("majority-write")
                && applied.iter().all(|a| a.is_some() && *a == applied[0])
            {
                break;
            }
            assert!(
                Instant::now() < end,
                "no convergence after heal: {r:?} {applied:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let table = kv(&dir, &["status"]);
        assert_eq!(table.matches("leader").count(), 2, "{table}"); // header + one leader
                                                                   // The nodes' traces merge into one space-time diagram with an arrow per message.
        let svg_path = dir.join("trace.svg");
        let said = kv(&dir, &["trace", "--out", svg_path.to_str().unwrap()]);
        assert!(said.contains("from 3 nodes"), "{said}");
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert!(
            svg.starts_with("<svg") || svg.contains("<svg "),
            "not an SVG"
        );
        assert!(
            svg.matches("class=\"msg\" data-send").count() > 10,
            "too few message arrows in the diagram: {said}"
        );
        drop(cluster);
        // The devices went with the processes.
        for n in &spec.nodes {
            assert!(
                !tunstack::up::device_exists(&n.tun),
                "{} still exists",
                n.tun
            );
        }
    });
}

#[test]
fn transport_between_two_stacks_refuses_a_foreign_certificate() {
    in_netns("kv_transport_stack", || {
        let dir = tmpdir("stacks");
        let evil = tmpdir("stacks-evil");
        let a_ip = Ipv4Addr::new(198, 19, 121, 2);
        let b_ip = Ipv4Addr::new(198, 19, 122, 2);
        ensure_cluster_certs(&dir, &[(1, a_ip), (2, b_ip)]).unwrap();
        ensure_cluster_certs(&evil, &[(3, a_ip)]).unwrap();
        std::fs::copy(dir.join("ca.pem"), evil.join("ca.pem")).unwrap();
        let up = |tun: &str, ip: Ipv4Addr| {
            let o = tunstack::up::UpOptions {
                tun: tun.into(),
                addr: ip,
                peer: netns::Ipv4Cidr::new(Ipv4Addr::from(u32::from(ip) - 1), 24),
                ..Default::default()
            };
            let u = tunstack::up::bring_up(&o).expect("bring up a stack");
            tunstack::kv::server::enable_forwarding(tun).unwrap();
            StackNet {
                net: Arc::new(u.net),
            }
        };
        let na = up("tkt1", a_ip);
        let nb = up("tkt2", b_ip);
        let start = |net: StackNet, id: u64, port: u16, tls: NodeTls| {
            let (tx, rx) = mpsc::channel();
            let tx = Mutex::new(tx);
            let t = Transport::start(
                net,
                TransportConfig::new(id, port),
                tls,
                Arc::new(move |e| {
                    let _ = tx.lock().unwrap().send(e);
                }),
            )
            .unwrap();
            (t, rx)
        };
        let (a, _arx) = start(na.clone(), 1, 7400, NodeTls::load(&dir, 1).unwrap());
        let (b, brx) = start(nb, 2, 7400, NodeTls::load(&dir, 2).unwrap());
        a.add_peer(2, b.local_addr());
        let end = Instant::now() + Duration::from_secs(15);
        while !a.send(2, b"over the stack".to_vec()) {
            assert!(
                Instant::now() < end,
                "no link between the stacks: {:?}",
                a.link_stats()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let got = loop {
            let e = brx
                .recv_timeout(Duration::from_secs(5))
                .expect("frame over the stack");
            if let TransportEvent::Frame { from, frame } = e {
                break (from, frame);
            }
        };
        assert_eq!(got, (1, b"over the stack".to_vec()));
        // A peer holding a certificate from another CA is refused.
        drop(a);
        std::thread::sleep(Duration::from_millis(300));
        let (impostor, _irx) = start(na, 3, 7401, NodeTls::load(&evil, 3).unwrap());
        impostor.add_peer(2, b.local_addr());
        let end = Instant::now() + Duration::from_secs(15);
        while b
            .counters()
            .inbound_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            assert!(
                Instant::now() < end,
                "node 2 never refused the foreign certificate"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!impostor.is_connected(2));
        assert!(b.last_refusal().unwrap().contains("TLS handshake"));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&evil);
    });
}
