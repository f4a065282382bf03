//! The replicated key-value store (issue 5): tikv's raft-rs as the consensus engine, and
//! everything around it ours: durable log storage, the state machine, transport over the stack,
//! consistency levels, failure detection and logical clocks.
//!
//! | module | owns |
//! | --- | --- |
//! | `storage` | the [`storage::LogStore`] contract raft-rs reads from and the node writes to; an in-memory and a crash-safe on-disk implementation |
//! | `clock` | Lamport and vector clocks, their compact binary encoding and causality comparison |
//! | `phi` | the phi-accrual failure detector (suspicion level per peer from heartbeat inter-arrival times) |
//! | `lincheck` | a linearizability checker for KV histories (Wing–Gong/Porcupine search, per key, unknown outcomes, time budget) |
//! | `transport` | peer links: length-prefixed frames over TCP with mutual TLS (cluster CA), reconnect with capped backoff, bounded drop-oldest queues; on the stack or on kernel TCP |
//! | `server` | the node process: driver loop around `Node`, HTTP API (`/kv/KEY`, `/status`), trace file, local-cluster operations (spawn, kill, partition) |
//! | `client` | the client session: HTTP to the nodes with client id and sequence number, retries and failover |
//! | `guard` | checks on a peer's raft message before raft-rs steps it (what would make raft panic, and so fail the node, is counted and dropped) |
//! | `msg` | the versioned frame nodes exchange: kind, sender, Lamport time, vector clock, raft message |
//! | `sm` | the replicated state machine: put/get/delete/cas, exactly-once client sessions, membership addresses, snapshots |
//! | `node` | the sans-IO node around raft-rs `RawNode`: Ready handling, consistency levels, heartbeats, trace |
//! | `sim` | a deterministic cluster simulator: virtual time, faulty network, partitions, crash-restart, recorded client histories |
//! | `trace` | node event traces (JSON lines), merged into a causally ordered timeline and drawn as a space-time diagram (SVG/HTML) |

pub mod client;
pub mod clock;
pub mod guard;
pub mod lincheck;
pub mod msg;
pub mod node;
pub mod phi;
pub mod server;
pub mod sim;
pub mod sm;
pub mod storage;
pub mod trace;
pub mod transport;
