//! The KV node in the deterministic simulator: elections, failover, partitions, exactly-once
//! writes, consistency levels, membership, snapshots and linearizability of recorded histories.

use std::time::Duration;

use tunstack::kv::node::{Consistency, Op, Outcome, Request};
use tunstack::kv::sim::{Sim, SimConfig};

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
