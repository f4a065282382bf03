//! The KV node in the deterministic simulator: elections, failover, partitions, exactly-once
//! writes, consistency levels, membership, snapshots and linearizability of recorded histories.

use std::time::Duration;

use tunstack::kv::lincheck::{check, CheckResult};
use tunstack::kv::node::{Consistency, Op, Outcome, Request, Response};
use tunstack::kv::sim::{HistInput, Sim, SimConfig, Workload};

fn put(client_id: u64, seq: u64, key: &str, v: &str) -> Request {
    Request {
        client_id,
        seq,
        op: Op::Put {
            key: key.into(),
            value: v.as_bytes().to_vec(),
        },
    }
}

fn get(key: &str, consistency: Consistency, min_index: u64) -> Request {
    Request {
        client_id: 0,
        seq: 0,
        op: Op::Get {
            key: key.into(),
            consistency,
            min_index,
        },
    }
}

fn wait_leader(sim: &mut Sim, limit: Duration) -> u64 {
    assert!(
        sim.run_until(limit, |s| s.leader().is_some()),
        "no leader within {limit:?}"
    );
    sim.leader().unwrap()
}

#[test]
fn single_node_serves_writes_and_reads() {
    let mut sim = Sim::new(SimConfig::new(1, 1));
    let l = wait_leader(&mut sim, Duration::from_secs(5));
    assert_eq!(l, 1);
    let r = sim
        .call(1, put(7, 1, "x", "1"), Duration::from_secs(2))
        .unwrap();
    assert_eq!(r.outcome, Outcome::Done);
    assert!(r.index > 0);
    for c in [
        Consistency::Linearizable,
        Consistency::Sequential,
        Consistency::Eventual,
    ] {
        let r = sim
            .call(1, get("x", c, r.index), Duration::from_secs(2))
            .unwrap();
        assert_eq!(r.outcome, Outcome::Value(Some(b"1".to_vec())), "{c:?}");
        assert_eq!(r.served_by, 1);
    }
}

#[test]
fn three_nodes_elect_exactly_one_leader() {
    let mut sim = Sim::new(SimConfig::new(3, 2));
    wait_leader(&mut sim, Duration::from_secs(5));
    sim.run_for(Duration::from_secs(3));
    let leaders: Vec<u64> = sim
        .ids()
        .into_iter()
        .filter(|&id| sim.node(id).unwrap().is_leader())
        .collect();
    assert_eq!(leaders.len(), 1, "leaders {leaders:?}");
    let term = sim.status(leaders[0]).unwrap().term;
    for id in sim.ids() {
        let s = sim.status(id).unwrap();
        assert_eq!(s.leader, Some(leaders[0]), "node {id} status {s:?}");
        assert_eq!(s.term, term);
    }
}

fn req(client_id: u64, seq: u64, op: Op) -> Request {
    Request { client_id, seq, op }
}

/// Retries a request (same client/seq) on the node it is sent to, following NotLeader hints,
/// until it is answered with something other than NotLeader/Unavailable or `limit` passes.
fn call_retry(sim: &mut Sim, mut node: u64, r: Request, limit: Duration) -> Option<Response> {
    let end = sim.now + limit;
    while sim.now < end {
        if !sim.is_up(node) {
            node = *sim.ids().iter().find(|&&i| sim.is_up(i)).unwrap();
        }
        if let Some(resp) = sim.call(node, r.clone(), Duration::from_millis(2500)) {
            match resp.outcome {
                Outcome::NotLeader { leader: Some(l) } if l != node => node = l,
                Outcome::NotLeader { .. } | Outcome::Unavailable(_) => {
                    sim.run_for(Duration::from_millis(100))
                }
                _ => return Some(resp),
            }
        }
    }
    None
}

fn value(sim: &Sim, id: u64, key: &str) -> Option<Vec<u8>> {
    sim.node(id).unwrap().state_machine().get(key).cloned()
}

fn converged(sim: &Sim) -> bool {
    let up: Vec<u64> = sim.ids().into_iter().filter(|&i| sim.is_up(i)).collect();
    let first = sim.node(up[0]).unwrap().state_machine();
    up.iter().all(|&i| {
        let sm = sim.node(i).unwrap().state_machine();
        sm.applied() == first.applied() && sm == first
    })
}

#[test]
fn leader_crash_new_leader_serves_writes_and_restart_catches_up() {
    let mut sim = Sim::new(SimConfig::new(3, 11));
    let old = wait_leader(&mut sim, Duration::from_secs(5));
    let r = call_retry(&mut sim, old, put(1, 1, "a", "1"), Duration::from_secs(5)).unwrap();
    assert_eq!(r.outcome, Outcome::Done);
    sim.run_for(Duration::from_millis(300));
    let crashed_at = sim.now;
    sim.crash(old);
    let other = sim.ids().into_iter().find(|&i| i != old).unwrap();
    let r = call_retry(
        &mut sim,
        other,
        put(1, 2, "a", "2"),
        Duration::from_secs(10),
    )
    .expect("a new leader serves writes");
    assert_eq!(r.outcome, Outcome::Done);
    let failover = sim.now.saturating_duration_since(crashed_at);
    let new = sim.leader().unwrap();
    assert_ne!(new, old);
    println!("virtual failover (leader crash -> first write acknowledged): {failover:?}");
    assert!(
        failover < Duration::from_secs(1),
        "failover took {failover:?} (goal: within 1 s at the default settings)"
    );
    for seq in 3..20 {
        call_retry(
            &mut sim,
            new,
            put(1, seq, "b", &seq.to_string()),
            Duration::from_secs(5),
        )
        .unwrap();
    }
    sim.restart(old);
    assert!(
        sim.run_until(Duration::from_secs(5), converged),
        "restarted node catches up"
    );
    assert_eq!(value(&sim, old, "b"), Some(b"19".to_vec()));
    assert_eq!(value(&sim, old, "a"), Some(b"2".to_vec()));
}

#[test]
fn minority_refuses_linearizable_reads_serves_eventual_and_majority_keeps_serving() {
    let mut sim = Sim::new(SimConfig::new(3, 12));
    let l = wait_leader(&mut sim, Duration::from_secs(5));
    call_retry(&mut sim, l, put(1, 1, "k", "old"), Duration::from_secs(5)).unwrap();
    sim.run_for(Duration::from_millis(500));
    // The leader alone on one side.
    let others: Vec<u64> = sim.ids().into_iter().filter(|&i| i != l).collect();
    sim.partition(&[&[l], &others]);
    let r = call_retry(
        &mut sim,
        others[0],
        put(1, 2, "k", "new"),
        Duration::from_secs(10),
    )
    .expect("majority elects and writes");
    assert_eq!(r.outcome, Outcome::Done);
    let lin = sim
        .call(
            others[1],
            get("k", Consistency::Linearizable, 0),
            Duration::from_secs(3),
        )
        .unwrap();
    assert_eq!(lin.outcome, Outcome::Value(Some(b"new".to_vec())));
    // Check-quorum: the deposed leader has stepped down by now.
    sim.run_for(Duration::from_secs(2));
    assert!(
        !sim.node(l).unwrap().is_leader(),
        "deposed leader stepped down"
    );
    let refused = sim
        .call(
            l,
            get("k", Consistency::Linearizable, 0),
            Duration::from_secs(3),
        )
        .unwrap();
    assert!(
        matches!(refused.outcome, Outcome::Unavailable(_)),
        "minority linearizable read: {refused:?}"
    );
    let ev = sim
        .call(
            l,
            get("k", Consistency::Eventual, 0),
            Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(ev.outcome, Outcome::Value(Some(b"old".to_vec())));
    assert_eq!(ev.served_by, l);
    let w = sim
        .call(l, put(2, 1, "k", "minority"), Duration::from_secs(3))
        .unwrap();
    assert!(
        matches!(
            w.outcome,
            Outcome::Unavailable(_) | Outcome::NotLeader { .. }
        ),
        "minority write: {w:?}"
    );
    sim.heal();
    assert!(
        sim.run_until(Duration::from_secs(5), converged),
        "all nodes converge after heal"
    );
    assert_eq!(value(&sim, l, "k"), Some(b"new".to_vec()));
}

#[test]
fn duplicate_client_seq_is_applied_once() {
    let mut sim = Sim::new(SimConfig::new(3, 13));
    let l = wait_leader(&mut sim, Duration::from_secs(5));
    // Let the followers learn who leads.
    sim.run_for(Duration::from_millis(500));
    let cas = req(
        9,
        1,
        Op::Cas {
            key: "c".into(),
            expected: None,
            new: b"a".to_vec(),
        },
    );
    // The same request to two nodes at once, and again later.
    let f = sim.ids().into_iter().find(|&i| i != l).unwrap();
    let t1 = sim.submit(l, cas.clone());
    let t2 = sim.submit(f, cas.clone());
    sim.run_for(Duration::from_secs(1));
    let r1 = sim.take_response(t1).unwrap();
    let r2 = sim.take_response(t2).unwrap();
    assert_eq!(r1.outcome, Outcome::Done);
    assert_eq!(r2.outcome, Outcome::Done, "the retry gets the first result");
    assert_eq!(r1.index, r2.index);
    let r3 = sim.call(f, cas, Duration::from_secs(1)).unwrap();
    assert_eq!(r3.outcome, Outcome::Done);
    assert_eq!(r3.index, r1.index);
    // A fresh seq is a new operation: the CAS now fails.
    let r4 = sim
        .call(
            l,
            req(
                9,
                2,
                Op::Cas {
                    key: "c".into(),
                    expected: None,
                    new: b"b".to_vec(),
                },
            ),
            Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(
        r4.outcome,
        Outcome::CasFailed {
            current: Some(b"a".to_vec())
        }
    );
}

#[test]
fn lagging_node_catches_up_by_snapshot() {
    let mut cfg = SimConfig::new(3, 14);
    cfg.snapshot_every = 20;
    let mut sim = Sim::new(cfg);
    let l = wait_leader(&mut sim, Duration::from_secs(5));
    let lagger = sim.ids().into_iter().find(|&i| i != l).unwrap();
    sim.crash(lagger);
    for seq in 1..=100 {
        call_retry(
            &mut sim,
            l,
            put(1, seq, &format!("k{}", seq % 7), &seq.to_string()),
            Duration::from_secs(5),
        )
        .unwrap();
    }
    assert!(sim.node(l).unwrap().counters().snapshots_taken >= 4);
    sim.restart(lagger);
    assert!(
        sim.run_until(Duration::from_secs(5), converged),
        "lagger catches up"
    );
    assert!(
        sim.node(lagger).unwrap().counters().snapshots_installed >= 1,
        "caught up by snapshot"
    );
    assert_eq!(value(&sim, lagger, "k2"), Some(b"100".to_vec()));
}

#[test]
fn add_and_remove_a_node_while_serving() {
    let mut sim = Sim::new(SimConfig::new(3, 15));
    let l = wait_leader(&mut sim, Duration::from_secs(5));
    sim.start_clients(Workload {
        clients: 3,
        ..Workload::default()
    });
    sim.run_for(Duration::from_secs(1));
    sim.spawn_empty(4);
    let add = req(
        50,
        1,
        Op::AddNode {
            id: 4,
            addr: "10.9.0.4:7000".into(),
        },
    );
    let r = call_retry(&mut sim, l, add, Duration::from_secs(10)).expect("add answered");
    assert_eq!(r.outcome, Outcome::Done);
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.status(4)
            .is_some_and(|st| st.applied > 0 && st.members.len() == 4)
    }));
    let st = sim.status(sim.leader().unwrap()).unwrap();
    assert!(
        st.members
            .iter()
            .any(|m| m.id == 4 && m.addr == "10.9.0.4:7000"),
        "members {:?}",
        st.members
    );
    assert!(sim.node(4).unwrap().counters().snapshots_installed >= 1);
    let victim = sim
        .ids()
        .into_iter()
        .find(|&i| i != 4 && Some(i) != sim.leader())
        .unwrap();
    let r = call_retry(
        &mut sim,
        l,
        req(50, 2, Op::RemoveNode { id: victim }),
        Duration::from_secs(10),
    )
    .expect("remove answered");
    assert_eq!(r.outcome, Outcome::Done);
    sim.run_for(Duration::from_secs(1));
    sim.destroy(victim);
    let st = sim.status(sim.leader().unwrap()).unwrap();
    assert!(!st.members.iter().any(|m| m.id == victim));
    sim.run_for(Duration::from_secs(2));
    sim.stop_clients();
    assert!(sim.run_until(Duration::from_secs(20), |s| s.clients_idle()));
    let ok = sim.history().iter().filter(|h| h.ret != u64::MAX).count();
    assert!(ok > 20, "clients kept being served ({ok} ops)");
    let ops: Vec<_> = sim.history().iter().map(|h| h.to_operation()).collect();
    assert_eq!(
        check(&ops, Duration::from_secs(10)),
        CheckResult::Linearizable
    );
    assert!(sim.run_until(Duration::from_secs(5), converged));
}

#[test]
fn sequential_sessions_never_read_backwards_across_failovers() {
    let mut sim = Sim::new(SimConfig::new(3, 16));
    wait_leader(&mut sim, Duration::from_secs(5));
    sim.start_clients(Workload {
        clients: 4,
        reads: 0.6,
        read_consistency: Consistency::Sequential,
        ..Workload::default()
    });
    for _ in 0..3 {
        sim.run_for(Duration::from_secs(2));
        if let Some(l) = sim.leader() {
            sim.crash(l);
            sim.run_for(Duration::from_secs(2));
            sim.restart(l);
        }
    }
    sim.stop_clients();
    assert!(sim.run_until(Duration::from_secs(20), |s| s.clients_idle()));
    let mut last: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut reads = 0;
    for h in sim.history() {
        if h.ret == u64::MAX {
            continue;
        }
        let prev = last.entry(h.client).or_default();
        assert!(
            h.index >= *prev,
            "client {} went back from index {} to {} ({:?})",
            h.client,
            prev,
            h.index,
            h
        );
        *prev = h.index;
        reads += matches!(h.input, HistInput::Get { .. }) as u32;
    }
    assert!(reads > 20, "{reads} sequential reads");
}

#[test]
fn node_survives_random_frames() {
    let mut sim = Sim::new(SimConfig::new(3, 17));
    let l = wait_leader(&mut sim, Duration::from_secs(5));
    let mut rng = tunstack::rng::Rng::new(99);
    let now = sim.now;
    let node = sim.node_mut(l).unwrap();
    for i in 0..5000 {
        let mut buf = vec![0u8; rng.gen_range(0, 120) as usize];
        rng.fill(&mut buf);
        if i % 2 == 0 && buf.len() >= 30 {
            // A valid header from peer 2 with an empty clock and a random body.
            buf[..4].copy_from_slice(&[b'K', b'V', 1, 1 + (i % 2) as u8]);
            buf[4..12].copy_from_slice(&2u64.to_be_bytes());
            buf[28..30].copy_from_slice(&0u16.to_be_bytes());
        }
        node.on_frame(2, &buf, now);
    }
    assert!(node.counters().bad_frames > 4000);
    assert!(node.failed().is_none());
    let r = call_retry(&mut sim, l, put(1, 1, "x", "y"), Duration::from_secs(5)).unwrap();
    assert_eq!(r.outcome, Outcome::Done);
}

/// One seeded run with faults: lossy, duplicating, reordering network; crashes, restarts and
/// partitions; concurrent clients. Returns an error naming the seed if the history is not
/// linearizable or the nodes do not converge.
fn chaos_run(seed: u64) -> Result<usize, String> {
    let mut cfg = SimConfig::new(3 + (seed % 2) * 2, seed);
    cfg.drop = 0.02;
    cfg.duplicate = 0.02;
    cfg.max_delay = Duration::from_millis(20);
    cfg.snapshot_every = 50;
    let mut sim = Sim::new(cfg);
    let mut rng = tunstack::rng::Rng::new(seed ^ 0xc4a05);
    sim.start_clients(Workload {
        clients: 4,
        keys: 2,
        ..Workload::default()
    });
    let ids = sim.ids();
    for _ in 0..8 {
        sim.run_for(Duration::from_millis(500 + rng.gen_range(0, 2000)));
        match rng.gen_range(0, 4) {
            0 => {
                let v = ids[rng.gen_range(0, ids.len() as u64) as usize];
                sim.crash(v);
            }
            1 => {
                let v = ids[rng.gen_range(0, ids.len() as u64) as usize];
                let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != v).collect();
                sim.partition(&[&[v], &rest]);
            }
            2 => {
                if let Some(l) = sim.leader() {
                    sim.crash(l);
                }
            }
            _ => {
                sim.heal();
                for &i in &ids {
                    sim.restart(i);
                }
            }
        }
        // Never more than a minority down at once.
        let down: Vec<u64> = ids.iter().copied().filter(|&i| !sim.is_up(i)).collect();
        if down.len() > (ids.len() - 1) / 2 {
            sim.restart(down[0]);
        }
    }
    sim.heal();
    for &i in &ids {
        sim.restart(i);
    }
    sim.run_for(Duration::from_secs(2));
    sim.stop_clients();
    if !sim.run_until(Duration::from_secs(30), |s| s.clients_idle()) {
        return Err(format!("seed {seed}: clients never finished"));
    }
    if !sim.run_until(Duration::from_secs(10), converged) {
        return Err(format!("seed {seed}: nodes did not converge"));
    }
    // Honest peers under loss, duplication, reordering, crashes, partitions and snapshots:
    // kv::guard refuses none of their messages (it refuses only what would make raft panic).
    for &i in &ids {
        let bad = sim.node(i).map_or(0, |n| n.counters().bad_frames);
        if bad != 0 {
            return Err(format!("seed {seed}: node {i} refused {bad} honest frames"));
        }
    }
    let ops: Vec<_> = sim.history().iter().map(|h| h.to_operation()).collect();
    match check(&ops, Duration::from_secs(20)) {
        CheckResult::Linearizable => Ok(ops.len()),
        CheckResult::Timeout => Ok(0),
        r => Err(format!("seed {seed}: {r:?} over {} ops", ops.len())),
    }
}

#[test]
fn histories_under_faults_are_linearizable() {
    let seeds: u64 = std::env::var("KV_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut failures = Vec::new();
    let mut ops = 0;
    for seed in 0..seeds {
        match chaos_run(seed) {
            Ok(n) => ops += n,
            Err(e) => {
                eprintln!("{e}");
                failures.push(e);
            }
        }
    }
    println!("{seeds} seeds, {ops} operations checked");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(ops > seeds as usize * 10);
}

#[test]
fn trace_pairs_every_traced_receive_with_its_send() {
    use tunstack::kv::node::EventKind;
    let mut sim = Sim::new(SimConfig::new(3, 18));
    let l = wait_leader(&mut sim, Duration::from_secs(5));
    call_retry(&mut sim, l, put(1, 1, "t", "1"), Duration::from_secs(5)).unwrap();
    sim.run_for(Duration::from_millis(500));
    let mut events = Vec::new();
    for id in sim.ids() {
        sim.node_mut(id).unwrap().drain_trace(&mut events);
    }
    let sends: std::collections::BTreeMap<_, _> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Send { msg, .. } => Some((*msg, e)),
            _ => None,
        })
        .collect();
    let mut recvs = 0;
    for e in &events {
        if let EventKind::Recv { msg, .. } = &e.kind {
            let s = sends.get(msg).expect("a receive names a traced send");
            assert!(e.lamport > s.lamport, "Lamport order");
            assert_eq!(s.label, e.label);
            recvs += 1;
        }
    }
    assert!(recvs > 5);
    assert!(events.iter().any(|e| e.label.starts_with("became leader")));
    assert!(events.iter().any(|e| e.label.starts_with("apply put t")));
    assert!(events.iter().any(|e| e.label.starts_with("MsgAppend idx")));
    // Heartbeats are not traced by default.
    assert!(!events.iter().any(|e| e.label == "heartbeat"));
}
