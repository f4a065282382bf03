//! The KV client: HTTP requests to the nodes (over the kernel's TCP, which routes to each
//! node's TUN device — the same path `curl` takes), with a client id and a sequence number
//! on every request, retried with the same pair on a timeout, a refused connection or a 503
//! (no leader, no quorum), moving on to the next node.
//!
//! Sessions: a sequential read carries `min_index`, the highest index this client has seen,
//! so the node it reaches never answers from an older state (monotonic reads,
//! read-your-writes).

use super::server::{percent_encode, KvReply};
use std::io::{self, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

/// One HTTP/1.1 request with `Connection: close`; returns the status and body.
pub fn http_call(
    addr: SocketAddrV4,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr.into(), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let _ = s.set_nodelay(true);
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    let body = body.unwrap_or(&[]);
    if method != "GET" || !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut msg = req.into_bytes();
    msg.extend_from_slice(body);
    s.write_all(&msg)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP response head"))?;
    let head = String::from_utf8_lossy(&resp[..end]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    Ok((status, resp[end + 4..].to_vec()))
}

/// What a client operation returned.
#[derive(Clone, Debug, PartialEq)]
pub struct KvResult {
    pub status: u16,
    pub reply: KvReply,
    /// The node that answered.
    pub node: SocketAddrV4,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
}

/// A client session against a cluster.
pub struct KvClient {
    pub nodes: Vec<SocketAddrV4>,
    pub client_id: u64,
    seq: u64,
    /// Highest index seen (sent as `min_index` on sequential reads).
    pub last_index: u64,
    /// Index into `nodes` of the node tried first (sticks to the last one that answered).
    current: usize,
    /// Per attempt.
    pub attempt_timeout: Duration,
    /// Give up after this long.
    pub deadline: Duration,
    /// Reads stay on `nodes[0]` even when it refuses (to see what that node answers).
    pub pinned: bool,
}

impl KvClient {
    /// A session with a random client id; `nodes[0]` is tried first.
    pub fn new(nodes: Vec<SocketAddrV4>) -> KvClient {
        let mut id = crate::rng::Rng::from_os().next_u64() >> 11;
        if id == 0 {
            id = 1;
        }
        KvClient {
            nodes,
            client_id: id,
            seq: 0,
            last_index: 0,
            current: 0,
            attempt_timeout: Duration::from_secs(4),
            deadline: Duration::from_secs(15),
            pinned: false,
        }
    }

    pub fn put(&mut self, key: &str, value: &[u8]) -> io::Result<KvResult> {
        self.call("PUT", key, "", Some(value), true)
    }

    pub fn delete(&mut self, key: &str) -> io::Result<KvResult> {
        self.call("DELETE", key, "", None, true)
    }

    /// Compare-and-swap: `expected` None means "only if absent".
    pub fn cas(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> io::Result<KvResult> {
        let q = match expected {
            Some(e) => format!("expect={}", percent_encode(e)),
            None => "expect-absent".to_string(),
        };
        self.call("PUT", key, &q, Some(new), true)
    }

    /// Read at `consistency` ("linearizable", "sequential", "eventual").
    pub fn get(&mut self, key: &str, consistency: &str) -> io::Result<KvResult> {
        let mut q = format!("consistency={consistency}");
        if consistency == "sequential" {
            q.push_str(&format!("&min_index={}", self.last_index));
        }
        // Eventual and sequential reads are answered by whichever node is asked: stay on it.
        let failover = consistency == "linearizable" && !self.pinned;
        self.call("GET", key, &q, None, failover)
    }

    /// Add node `id` to the cluster, its peer links at `raft_addr` (a Raft membership change).
    pub fn add_node(&mut self, id: u64, raft_addr: SocketAddrV4) -> io::Result<KvResult> {
        let target = format!("/members/{id}?addr={raft_addr}");
        self.call_target("POST", target, None, true)
    }

    /// Remove node `id` from the cluster.
    pub fn remove_node(&mut self, id: u64) -> io::Result<KvResult> {
        self.call_target("DELETE", format!("/members/{id}"), None, true)
    }

    /// One request with retries (same client id and sequence number on every attempt).
    /// `failover`: on a 503 try the next node too (for reads pinned to a node, only a
    /// connection failure moves on).
    fn call(
        &mut self,
        method: &str,
        key: &str,
        query: &str,
        body: Option<&[u8]>,
        failover: bool,
    ) -> io::Result<KvResult> {
        let mut target = format!("/kv/{}", percent_encode(key.as_bytes()));
        if !query.is_empty() {
            target.push('?');
            target.push_str(query);
        }
        self.call_target(method, target, body, failover)
    }

    fn call_target(
        &mut self,
        method: &str,
        target: String,
        body: Option<&[u8]>,
        failover: bool,
    ) -> io::Result<KvResult> {
        if self.nodes.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no nodes to ask",
            ));
        }
        self.seq += 1;
        let headers = [
            ("X-Client-Id", self.client_id.to_string()),
            ("X-Seq", self.seq.to_string()),
        ];
        let end = Instant::now() + self.deadline;
        let mut attempts = 0;
        let mut last_err;
        loop {
            attempts += 1;
            let node = self.nodes[self.current % self.nodes.len()];
            match http_call(node, method, &target, &headers, body, self.attempt_timeout) {
                Ok((status, data)) => {
                    let reply: KvReply = serde_json::from_slice(&data).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{node}: answer {status} is not KV JSON: {e}"),
                        )
                    })?;
                    // A pinned read reports the node's refusal rather than go elsewhere.
                    if status != 503 || !failover {
                        self.last_index = self.last_index.max(reply.index);
                        return Ok(KvResult {
                            status,
                            reply,
                            node,
                            attempts,
                        });
                    }
                    last_err = io::Error::other(format!(
                        "{node}: {}",
                        reply.error.unwrap_or_else(|| "unavailable".into())
                    ));
                }
                Err(e) => last_err = io::Error::new(e.kind(), format!("{node}: {e}")),
            }
            if Instant::now() >= end {
                return Err(last_err);
            }
            self.current = (self.current + 1) % self.nodes.len();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
