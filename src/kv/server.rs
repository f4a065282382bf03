//! The KV node process: the driver around the sans-IO [`Node`], peer links
//! ([`super::transport`]), the trace file, and the HTTP API.
//!
//! # Driver
//! One thread owns the [`Node`]. Everything reaches it through one channel: frames from the
//! transport, link-down events, client requests from HTTP threads, status queries. It waits
//! on that channel until [`Node::next_deadline`], then calls [`Node::poll`] and acts on the
//! outputs: `Send` goes to the transport (a frame for a peer whose link is down is dropped and
//! the node told the peer is unreachable), `Reply` goes back to the HTTP thread that asked.
//! Trace events are appended to the trace file (one JSON object per line) after every poll.
//!
//! # HTTP API
//! | request | answer |
//! | --- | --- |
//! | `PUT /kv/KEY` (body: value) | 200 `{"ok":true,...}` |
//! | `PUT /kv/KEY?expect=OLD` / `?expect-absent` | compare-and-swap: 200, or 409 with `current` |
//! | `DELETE /kv/KEY` | 200 |
//! | `GET /kv/KEY[?consistency=linearizable\|sequential\|eventual][&min_index=N]` | 200 with `value`, 404 with `"found":false` |
//! | `GET /status` | the node's [`Status`] as JSON, plus its links |
//!
//! Every KV answer is JSON with `served_by` (the node id) and `index` (the applied index a
//! read was served at, or a write's log index). `X-Client-Id` and `X-Seq` headers name the
//! client session and request number: a write retried with the same pair is applied once.
//! Writes that reach a follower are **forwarded to the leader by raft** (the node proposes;
//! raft-rs forwards `MsgProp`), answered when the entry is applied; there is no redirect.
//! When no leader is known, or no quorum answers in time, the answer is 503 with `error`
//! (and `Retry-After: 1`); the client retries with the same id and sequence number.

use super::node::{Consistency, Node, NodeConfig, Op, Outcome, Output, Request, Response, Status};
use super::storage::LogStore;
use super::transport::{EventSink, Network, NodeTls, Transport, TransportConfig, TransportEvent};
use crate::http::server::{Body, Handler, Request as HttpRequest, Response as HttpResponse};
use crate::time::Clock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default port of the HTTP API on each node.
pub const DEFAULT_HTTP_PORT: u16 = 80;
/// Default port of the peer links.
pub const DEFAULT_RAFT_PORT: u16 = 7400;
/// Largest key, bytes.
pub const MAX_KEY: usize = 1024;

// ---------------------------------------------------------------------------------------------
// Cluster description (the cluster directory's cluster.json)

/// One node of a cluster, as `cluster.json` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: u64,
    /// TUN device of the node's stack (unused with kernel TCP).
    pub tun: String,
    /// The stack's address (HTTP and peer links listen here).
    pub addr: Ipv4Addr,
    /// The kernel side of the device, `ADDR/PREFIX`.
    pub peer: String,
    pub http_port: u16,
    pub raft_port: u16,
}

impl NodeSpec {
    pub fn http_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.addr, self.http_port)
    }
    pub fn raft_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.addr, self.raft_port)
    }
}

/// A cluster: its nodes and how they network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Device-name prefix (devices are PREFIX1, PREFIX2, ...; nftables tables PREFIX_partN).
    pub prefix: String,
    /// Nodes talk over kernel TCP instead of their own stacks (the benchmark baseline).
    #[serde(default)]
    pub kernel_tcp: bool,
    pub nodes: Vec<NodeSpec>,
    /// The voters the cluster was created with (`None`: every node in `nodes`). A node not
    /// among them was added later (`tunstack kv add`): it starts with an empty log and joins
    /// when the leader replicates to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Vec<u64>>,
}

pub const CLUSTER_FILE: &str = "cluster.json";

impl ClusterSpec {
    /// `n` nodes on devices PREFIX1..PREFIXn, node i on 198.19.(base+i).0/24 (kernel .1,
    /// stack .2). 198.18.0.0/15 is the RFC 2544 benchmarking range `tunstack up` uses too;
    /// the default base 100 keeps clear of up (198.19.0), curl (.1) and dig (.2).
    pub fn local(n: usize, prefix: &str, base: u8) -> ClusterSpec {
        let nodes = (1..=n as u64)
            .map(|id| {
                let third = base.saturating_add(id as u8);
                NodeSpec {
                    id,
                    tun: format!("{prefix}{id}"),
                    addr: Ipv4Addr::new(198, 19, third, 2),
                    peer: format!("198.19.{third}.1/24"),
                    http_port: DEFAULT_HTTP_PORT,
                    raft_port: DEFAULT_RAFT_PORT,
                }
            })
            .collect();
        ClusterSpec {
            prefix: prefix.to_string(),
            kernel_tcp: false,
            nodes,
            initial: None,
        }
    }

    pub fn load(dir: &Path) -> io::Result<ClusterSpec> {
        let p = dir.join(CLUSTER_FILE);
        let text = std::fs::read_to_string(&p).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: {e} (is {} a cluster directory made by `tunstack kv cluster`?)",
                    p.display(),
                    dir.display()
                ),
            )
        })?;
        serde_json::from_str(&text).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display()))
        })
    }

    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        std::fs::write(dir.join(CLUSTER_FILE), text + "\n")
    }

    pub fn node(&self, id: u64) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The voters a new cluster starts with.
    pub fn initial_voters(&self) -> Vec<u64> {
        match &self.initial {
            Some(v) => v.clone(),
            None => self.nodes.iter().map(|n| n.id).collect(),
        }
    }

    /// The spec of node `id` laid out as [`ClusterSpec::local`] lays out the others (device
    /// PREFIXid, 198.19.(base+id).2 with the base read off node 1 or the first node).
    pub fn local_node(&self, id: u64) -> io::Result<NodeSpec> {
        let first = self.nodes.first().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the cluster has no nodes")
        })?;
        let base = first.addr.octets()[2].wrapping_sub(first.id as u8);
        let third = base as u64 + id;
        if !(1..=9).contains(&id) || third > 254 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node id {id}: a local cluster numbers its nodes 1 to 9"),
            ));
        }
        let third = third as u8;
        Ok(NodeSpec {
            id,
            tun: format!("{}{id}", self.prefix),
            addr: Ipv4Addr::new(198, 19, third, 2),
            peer: format!("198.19.{third}.1/24"),
            http_port: first.http_port,
            raft_port: first.raft_port,
        })
    }
}

/// Paths inside a cluster directory.
pub fn data_dir(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}"))
}
pub fn trace_path(dir: &Path, id: u64) -> PathBuf {
    data_dir(dir, id).join("trace.jsonl")
}
pub fn pid_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}.pid"))
}
pub fn log_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}.log"))
}

// ---------------------------------------------------------------------------------------------
// Driver

enum Input {
    Frame {
        from: u64,
        frame: Vec<u8>,
    },
    LinkUp(u64),
    LinkDown(u64),
    Request {
        req: Request,
        reply: Sender<Response>,
    },
    Status {
        reply: Sender<Status>,
    },
    Stop,
}

/// How to run one node.
pub struct ServerOptions {
    pub node: NodeConfig,
    /// Peer link addresses of the initial voters (other nodes; own entry ignored).
    pub peers: Vec<(u64, SocketAddrV4)>,
    pub raft_port: u16,
    pub tls: NodeTls,
    /// Append trace events here (JSON lines).
    pub trace: Option<PathBuf>,
}

/// A running node: the driver thread and its peer links. The [`KvApi`] from
/// [`KvServer::api`] answers HTTP requests.
pub struct KvServer<N: Network> {
    tx: Mutex<Sender<Input>>,
    transport: Arc<Transport<N>>,
    thread: Option<std::thread::JoinHandle<()>>,
    id: u64,
    request_timeout: Duration,
}

impl<N: Network> KvServer<N> {
    /// Start the node over `store` (initialised with the voters if new) and its links on `net`.
    pub fn start<S: LogStore + Send + 'static>(
        net: N,
        store: S,
        opts: ServerOptions,
    ) -> io::Result<KvServer<N>> {
        let clock = Clock::new();
        let id = opts.node.id;
        let request_timeout = opts.node.request_timeout;
        let (tx, rx) = mpsc::channel::<Input>();
        let sink_tx = Mutex::new(tx.clone());
        let sink: EventSink = Arc::new(move |e| {
            let input = match e {
                TransportEvent::Frame { from, frame } => Input::Frame { from, frame },
                TransportEvent::LinkUp { peer } => Input::LinkUp(peer),
                TransportEvent::LinkDown { peer } => Input::LinkDown(peer),
            };
            let _ = sink_tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(input);
        });
        let transport = Arc::new(Transport::start(
            net,
            TransportConfig::new(id, opts.raft_port),
            opts.tls.clone(),
            sink,
        )?);
        for (pid, addr) in &opts.peers {
            transport.add_peer(*pid, *addr);
        }
        let node = Node::new(opts.node, store, clock.now())
            .map_err(|e| io::Error::other(format!("cannot start node {id}: {e}")))?;
        let trace = match &opts.trace {
            Some(p) => {
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d)?;
                }
                Some(BufWriter::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?,
                ))
            }
            None => None,
        };
        let t2 = transport.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kv-node-{id}"))
            .spawn(move || drive(node, rx, t2, clock, trace))?;
        Ok(KvServer {
            tx: Mutex::new(tx),
            transport,
            thread: Some(thread),
            id,
            request_timeout,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn transport(&self) -> &Transport<N> {
        &self.transport
    }

    fn send(&self, i: Input) -> bool {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(i)
            .is_ok()
    }

    /// Submit a request and wait for the node's answer.
    pub fn request(&self, req: Request) -> Response {
        let (rtx, rrx) = mpsc::channel();
        if !self.send(Input::Request { req, reply: rtx }) {
            return unavailable(self.id, "the node has stopped");
        }
        match rrx.recv_timeout(self.request_timeout + Duration::from_secs(1)) {
            Ok(r) => r,
            Err(_) => unavailable(self.id, "timed out waiting for the node"),
        }
    }

    pub fn status(&self) -> Option<Status> {
        let (rtx, rrx) = mpsc::channel();
        if !self.send(Input::Status { reply: rtx }) {
            return None;
        }
        rrx.recv_timeout(Duration::from_secs(2)).ok()
    }

    /// Stop the driver and the links (the store is left as it is).
    pub fn stop(&mut self) {
        self.send(Input::Stop);
        self.transport.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<N: Network> Drop for KvServer<N> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unavailable(id: u64, why: &str) -> Response {
    Response {
        outcome: Outcome::Unavailable(why.to_string()),
        served_by: id,
        index: 0,
    }
}

fn drive<S: LogStore, N: Network>(
    mut node: Node<S>,
    rx: Receiver<Input>,
    transport: Arc<Transport<N>>,
    clock: Clock,
    mut trace: Option<BufWriter<std::fs::File>>,
) {
    let mut next_ticket: u64 = 1;
    let mut waiting: HashMap<u64, Sender<Response>> = HashMap::new();
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut down: BTreeSet<u64> = BTreeSet::new();
    let mut known_members: BTreeSet<u64> = BTreeSet::new();
    let mut last_members_check = clock.now();
    loop {
        let now = clock.now();
        let deadline = node.next_deadline();
        let wait = deadline.saturating_duration_since(now);
        let first = match rx.recv_timeout(wait) {
            Ok(i) => Some(i),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut inputs: Vec<Input> = first.into_iter().collect();
        while inputs.len() < 1024 {
            match rx.try_recv() {
                Ok(i) => inputs.push(i),
                Err(_) => break,
            }
        }
        for i in inputs {
            let now = clock.now();
            match i {
                Input::Frame { from, frame } => node.on_frame(from, &frame, now),
                Input::LinkUp(p) => {
                    down.remove(&p);
                }
                Input::LinkDown(p) => {
                    if down.insert(p) {
                        node.peer_unreachable(p);
                    }
                }
                Input::Request { req, reply } => {
                    let t = next_ticket;
                    next_ticket += 1;
                    waiting.insert(t, reply);
                    node.submit(t, req, now);
                }
                Input::Status { reply } => {
                    let _ = reply.send(node.status(now));
                }
                Input::Stop => {
                    flush_trace(&mut node, &mut trace, &mut events);
                    return;
                }
            }
        }
        let now = clock.now();
        node.poll(now, &mut out);
        for o in out.drain(..) {
            match o {
                Output::Send { to, frame } => {
                    if !transport.send(to, frame) && down.insert(to) {
                        node.peer_unreachable(to);
                    }
                }
                Output::Reply { ticket, resp } => {
                    if let Some(r) = waiting.remove(&ticket) {
                        let _ = r.send(resp);
                    }
                }
            }
        }
        flush_trace(&mut node, &mut trace, &mut events);
        // Members added later: dial them at the address the membership records.
        if now.saturating_duration_since(last_members_check) >= Duration::from_secs(1) {
            last_members_check = now;
            let st = node.status(now);
            let ids: BTreeSet<u64> = st.members.iter().map(|m| m.id).collect();
            if ids != known_members {
                for m in &st.members {
                    if m.id != st.id && !known_members.contains(&m.id) {
                        if let Ok(a) = m.addr.parse::<SocketAddrV4>() {
                            transport.add_peer(m.id, a);
                        }
                    }
                }
                for gone in known_members.difference(&ids) {
                    if !st.members.is_empty() {
                        transport.remove_peer(*gone);
                    }
                }
                known_members = ids;
            }
        }
    }
}

fn flush_trace<S: LogStore>(
    node: &mut Node<S>,
    trace: &mut Option<BufWriter<std::fs::File>>,
    events: &mut Vec<super::node::TraceEvent>,
) {
    node.drain_trace(events);
    if let Some(w) = trace {
        for e in events.iter() {
            if let Ok(line) = serde_json::to_string(e) {
                let _ = w.write_all(line.as_bytes());
                let _ = w.write_all(b"\n");
            }
        }
        if !events.is_empty() {
            let _ = w.flush();
        }
    }
    events.clear();
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// The JSON body of every KV answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KvReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The value (UTF-8, lossy) for reads; the current value after a failed CAS.
    #[serde(default)]
    pub value: Option<String>,
    /// Reads: whether the key exists.
    #[serde(default)]
    pub found: bool,
    pub served_by: u64,
    pub index: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Decode `%XX` escapes and `+` (in queries); invalid escapes are kept as they are.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Percent-encode everything but unreserved characters (for keys and query values).
pub fn percent_encode(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

fn query_pairs(q: Option<&str>) -> Vec<(String, Vec<u8>)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&percent_decode(k, true)).into_owned(),
                percent_decode(v, true),
            )
        })
        .collect()
}

/// Turn an HTTP request on `/kv/KEY` into a node request, or an error answer.
pub fn parse_kv_request(
    method: &str,
    path: &str,
    query: Option<&str>,
    header: &dyn Fn(&str) -> Option<String>,
    body: Vec<u8>,
) -> Result<Request, (u16, String)> {
    let raw_key = path
        .strip_prefix("/kv/")
        .ok_or((404, "not a /kv/KEY path".to_string()))?;
    let key = String::from_utf8(percent_decode(raw_key, false))
        .map_err(|_| (400, "the key is not UTF-8".to_string()))?;
    if key.is_empty() || key.len() > MAX_KEY {
        return Err((400, format!("a key is 1 to {MAX_KEY} bytes")));
    }
    let num = |name: &str| -> Result<u64, (u16, String)> {
        match header(name) {
            None => Ok(0),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| (400, format!("{name}: {v:?} is not a number"))),
        }
    };
    let client_id = num("X-Client-Id")?;
    let seq = num("X-Seq")?;
    let q = query_pairs(query);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let op = match method {
        "GET" | "HEAD" => {
            let consistency = match get("consistency") {
                None => Consistency::Linearizable,
                Some(c) => String::from_utf8_lossy(&c)
                    .parse::<Consistency>()
                    .map_err(|e| (400, e))?,
            };
            let min_index = match get("min_index") {
                None => 0,
                Some(v) => String::from_utf8_lossy(&v)
                    .parse()
                    .map_err(|_| (400, "min_index is not a number".to_string()))?,
            };
            Op::Get {
                key,
                consistency,
                min_index,
            }
        }
        "PUT" | "POST" => {
            let absent = q.iter().any(|(n, _)| n == "expect-absent");
            match (get("expect"), absent) {
                (Some(_), true) => {
                    return Err((400, "give expect=OLD or expect-absent, not both".into()))
                }
                (Some(old), false) => Op::Cas {
                    key,
                    expected: Some(old),
                    new: body,
                },
                (None, true) => Op::Cas {
                    key,
                    expected: None,
                    new: body,
                },
                (None, false) => Op::Put { key, value: body },
            }
        }
        "DELETE" => Op::Delete { key },
        _ => return Err((405, format!("{method} is not GET, PUT, POST or DELETE"))),
    };
    Ok(Request { client_id, seq, op })
}

/// `POST /members/ID?addr=IP:PORT` (add node ID, its peer links at IP:PORT) or
/// `DELETE /members/ID` (remove it) as a node request.
pub fn parse_member_request(
    method: &str,
    id: &str,
    query: Option<&str>,
    header: &dyn Fn(&str) -> Option<String>,
) -> Result<Request, (u16, String)> {
    let id: u64 = id
        .parse()
        .ok()
        .filter(|i| *i > 0)
        .ok_or((400, format!("/members/{id}: not a node id (1 or more)")))?;
    let num = |name: &str| -> Result<u64, (u16, String)> {
        header(name).map_or(Ok(0), |v| {
            v.trim()
                .parse()
                .map_err(|_| (400, format!("{name}: {v:?} is not a number")))
        })
    };
    let (client_id, seq) = (num("X-Client-Id")?, num("X-Seq")?);
    let op = match method {
        "POST" | "PUT" => {
            let q = query_pairs(query);
            let addr = q
                .iter()
                .find(|(n, _)| n == "addr")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .ok_or((
                    400,
                    "adding a node needs ?addr=IP:PORT (its peer links)".into(),
                ))?;
            if addr.parse::<SocketAddrV4>().is_err() {
                return Err((400, format!("addr={addr:?} is not IP:PORT")));
            }
            Op::AddNode { id, addr }
        }
        "DELETE" => Op::RemoveNode { id },
        _ => {
            return Err((
                405,
                format!("{method} /members/ID: use POST (add) or DELETE (remove)"),
            ))
        }
    };
    Ok(Request { client_id, seq, op })
}

/// The HTTP status and JSON body for a node's response to `op`.
pub fn kv_reply(key: &str, resp: &Response) -> (u16, KvReply) {
    let mut r = KvReply {
        ok: false,
        key: Some(key.to_string()),
        served_by: resp.served_by,
        index: resp.index,
        ..KvReply::default()
    };
    let lossy = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let status = match &resp.outcome {
        Outcome::Done => {
            r.ok = true;
            200
        }
        Outcome::Value(Some(v)) => {
            r.ok = true;
            r.found = true;
            r.value = Some(lossy(v));
            200
        }
        Outcome::Value(None) => {
            r.ok = true;
            404
        }
        Outcome::CasFailed { current } => {
            r.found = current.is_some();
            r.value = current.as_deref().map(lossy);
            r.error = Some("compare-and-swap failed: the value differs".into());
            409
        }
        Outcome::NotLeader { leader } => {
            r.leader = *leader;
            r.error = Some(match leader {
                Some(l) => format!("not the leader; node {l} is"),
                None => "no leader known (election in progress or no quorum)".into(),
            });
            503
        }
        Outcome::Unavailable(why) => {
            r.error = Some(why.clone());
            503
        }
    };
    (status, r)
}

fn json_response<T: Serialize>(status: u16, v: &T) -> HttpResponse {
    let mut body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let mut r = HttpResponse::new(status, "application/json", Body::Bytes(body));
    if status == 503 {
        r = r.with_header("Retry-After", "1");
    }
    r
}

/// The HTTP handler of a node.
pub struct KvApi<N: Network> {
    pub server: Arc<KvServer<N>>,
    /// Shown in `/status` as `http`.
    pub http_addr: String,
}

impl<N: Network> KvApi<N> {
    /// A request this node could not parse: `status` with the reason as JSON.
    fn refusal(&self, status: u16, msg: String) -> HttpResponse {
        let r = KvReply {
            served_by: self.server.id(),
            error: Some(msg),
            ..KvReply::default()
        };
        json_response(status, &r)
    }
}

impl<N: Network> Handler for KvApi<N> {
    fn handle(&self, req: &HttpRequest, body: &mut dyn Read) -> io::Result<HttpResponse> {
        let path = req.path.as_str();
        if path == "/status" {
            let Some(st) = self.server.status() else {
                return Ok(HttpResponse::text(503, "the node has stopped\n"));
            };
            let mut v = serde_json::to_value(&st).map_err(io::Error::other)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("http".into(), self.http_addr.clone().into());
                let links = self.server.transport().link_stats();
                o.insert(
                    "links".into(),
                    serde_json::to_value(links).map_err(io::Error::other)?,
                );
                let c = self.server.transport().counters();
                o.insert(
                    "inbound_refused".into(),
                    c.inbound_refused.load(Ordering::Relaxed).into(),
                );
            }
            return Ok(json_response(200, &v));
        }
        if path == "/" {
            return Ok(HttpResponse::text(
                200,
                format!(
                    "tunstack KV node {}\nGET /status\nGET|PUT|DELETE /kv/KEY[?consistency=linearizable|sequential|eventual][&min_index=N]\nPUT /kv/KEY?expect=OLD | ?expect-absent\n",
                    self.server.id()
                ),
            ));
        }
        if let Some(rest) = path.strip_prefix("/members/") {
            let hdr = |n: &str| req.header(n).map(str::to_string);
            let request = match parse_member_request(&req.method, rest, req.query.as_deref(), &hdr)
            {
                Ok(r) => r,
                Err((status, msg)) => return Ok(self.refusal(status, msg)),
            };
            let resp = self.server.request(request);
            let (status, r) = kv_reply("", &resp);
            return Ok(json_response(status, &KvReply { key: None, ..r }));
        }
        if !path.starts_with("/kv/") {
            return Ok(HttpResponse::error(404));
        }
        let mut data = Vec::new();
        body.read_to_end(&mut data)?;
        let hdr = |n: &str| req.header(n).map(str::to_string);
        let parsed = parse_kv_request(&req.method, path, req.query.as_deref(), &hdr, data);
        let request = match parsed {
            Ok(r) => r,
            Err((status, msg)) => return Ok(self.refusal(status, msg)),
        };
        let key = match &request.op {
            Op::Put { key, .. }
            | Op::Delete { key }
            | Op::Cas { key, .. }
            | Op::Get { key, .. } => key.clone(),
            _ => String::new(),
        };
        let resp = self.server.request(request);
        let (status, r) = kv_reply(&key, &resp);
        Ok(json_response(status, &r).with_header("X-Served-By", &resp.served_by.to_string()))
    }
}

/// Block until `stop` is set (by a signal handler).
pub fn wait_until(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes: one node, and the local cluster's operations

/// Run node `id` of the cluster in `dir` until `stop` is set: its own stack on its own TUN
/// device (forwarding enabled on the device so the kernel routes between the nodes'
/// devices), peer links on the stack, HTTP on the stack, data and trace in `dir/nodeID/`.
/// `on_ready` gets the HTTP address once it serves.
pub fn run_node_process(
    dir: &Path,
    id: u64,
    stop: Arc<AtomicBool>,
    on_ready: impl FnOnce(SocketAddrV4),
) -> io::Result<()> {
    let spec = ClusterSpec::load(dir)?;
    let me = spec
        .node(id)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node {id} is not in {}", dir.join(CLUSTER_FILE).display()),
            )
        })?
        .clone();
    let tls = NodeTls::load(dir, id)?;
    let initial = spec.initial_voters();
    // A node added later starts empty and joins; the others start with the initial voters.
    let voters: Vec<u64> = if initial.contains(&id) {
        initial
    } else {
        Vec::new()
    };
    let peers: Vec<(u64, SocketAddrV4)> = spec
        .nodes
        .iter()
        .filter(|n| n.id != id)
        .map(|n| (n.id, n.raft_addr()))
        .collect();
    let data = data_dir(dir, id);
    std::fs::create_dir_all(&data)?;
    let store = open_store(&data, &voters)?;
    let mut cfg = NodeConfig::new(id, voters);
    cfg.seed = crate::rng::Rng::from_os().next_u64();
    let opts = ServerOptions {
        node: cfg,
        peers,
        raft_port: me.raft_port,
        tls,
        trace: Some(trace_path(dir, id)),
    };
    std::fs::write(pid_path(dir, id), format!("{}\n", std::process::id()))?;
    if spec.kernel_tcp {
        let net = super::transport::KernelNet { bind: me.addr };
        let server = Arc::new(KvServer::start(net, store, opts)?);
        let l = std::net::TcpListener::bind((me.addr, me.http_port))?;
        let api = Arc::new(KvApi {
            server: server.clone(),
            http_addr: me.http_addr().to_string(),
        });
        let h = crate::http::server::spawn_std(l, api, Default::default())?;
        on_ready(me.http_addr());
        wait_until(&stop);
        drop(h);
        return Ok(());
    }
    let up_opts = crate::up::UpOptions {
        tun: me.tun.clone(),
        addr: me.addr,
        peer: me
            .peer
            .parse()
            .map_err(|e: String| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        ..Default::default()
    };
    let up = crate::up::bring_up(&up_opts)?;
    enable_forwarding(&me.tun)?;
    let net = Arc::new(up.net);
    let server = Arc::new(KvServer::start(
        super::transport::StackNet { net: net.clone() },
        store,
        opts,
    )?);
    let listener = crate::runtime::TcpListener::bind(&net, me.http_port)?;
    let api: Arc<dyn Handler> = Arc::new(KvApi {
        server: server.clone(),
        http_addr: me.http_addr().to_string(),
    });
    let http_opts = crate::http::server::ServerOptions::default();
    let http_stop = http_opts.stop.clone();
    std::thread::Builder::new()
        .name("kv-http".into())
        .spawn(move || crate::http::server::serve_stack(listener, api, http_opts))?;
    on_ready(me.http_addr());
    wait_until(&stop);
    http_stop.store(true, Ordering::SeqCst);
    drop(server);
    let _ = std::fs::remove_file(pid_path(dir, id));
    Ok(())
}

/// The node's durable log store in `data/raft`, initialised with `voters` when new.
fn open_store(data: &Path, voters: &[u64]) -> io::Result<super::storage::DiskLog> {
    let store = super::storage::DiskLog::open(&data.join("raft"))?;
    let report = store.recovery_report();
    log::info!("raft log recovered: {report:?}");
    if store.is_empty() && !voters.is_empty() {
        store.initialize_with_voters(voters)?;
    }
    Ok(store)
}

/// Let the kernel forward packets arriving on `dev` (per device: the host's other
/// interfaces are left as they are).
pub fn enable_forwarding(dev: &str) -> io::Result<()> {
    let p = format!("/proc/sys/net/ipv4/conf/{dev}/forwarding");
    std::fs::write(&p, "1").map_err(|e| io::Error::new(e.kind(), format!("{p}: {e}")))
}

/// The pid recorded for node `id`, if its process is alive.
pub fn node_pid(dir: &Path, id: u64) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_path(dir, id))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    (pid > 0 && unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
}

/// SIGKILL node `id` (from its pid file). Returns the pid killed.
pub fn kill_node(dir: &Path, id: u64) -> io::Result<i32> {
    let pid = node_pid(dir, id).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "node {id} is not running (no live pid in {})",
                pid_path(dir, id).display()
            ),
        )
    })?;
    // SAFETY: sending a signal to a pid read from our own pid file.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let _ = std::fs::remove_file(pid_path(dir, id));
    Ok(pid)
}

/// Start node `id` as a child process of `exe` (`exe kv node --dir DIR --id ID`), its output
/// in `DIR/nodeID.log`. The caller waits for it (or lets it run on).
pub fn spawn_node(exe: &Path, dir: &Path, id: u64) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir, id))?;
    std::process::Command::new(exe)
        .args(["kv", "node", "--dir"])
        .arg(dir)
        .args(["--id", &id.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
}

/// Wait until node `spec` answers `GET /status` over kernel TCP.
pub fn wait_serving(spec: &NodeSpec, timeout: Duration) -> io::Result<()> {
    let end = std::time::Instant::now() + timeout;
    loop {
        match super::client::http_call(
            spec.http_addr(),
            "GET",
            "/status",
            &[],
            None,
            Duration::from_secs(1),
        ) {
            Ok((200, _)) => return Ok(()),
            Ok(_) | Err(_) if std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Ok((s, _)) => {
                return Err(io::Error::other(format!(
                    "node {}: /status answered {s}",
                    spec.id
                )))
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("node {} at {}: {e}", spec.id, spec.http_addr()),
                ))
            }
        }
    }
}

fn part_table(spec: &ClusterSpec, id: u64) -> String {
    format!("{}_part{id}", spec.prefix)
}

/// Cut node `id` off from the other nodes: an nftables table drops everything the kernel
/// would forward to or from its device. The kernel itself still reaches it (clients can
/// still ask it, and see what a minority node answers).
pub fn partition_node(dir: &Path, id: u64) -> io::Result<()> {
    let spec = ClusterSpec::load(dir)?;
    let n = spec
        .node(id)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no node {id}")))?;
    let t = part_table(&spec, id);
    let _ = crate::netns::run("nft", &["delete", "table", "inet", &t]);
    let script = format!(
        "table inet {t} {{
 chain forward {{
  type filter hook forward priority -10; policy accept;
  iifname \"{dev}\" drop
  oifname \"{dev}\" drop
 }}
}}
",
        dev = n.tun
    );
    let path = std::env::temp_dir().join(format!("{t}-{}.nft", std::process::id()));
    std::fs::write(&path, script)?;
    let r = crate::netns::run("nft", &["-f", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
    r.map(|_| ())
}

/// Undo [`partition_node`] for `id`, or for every node when `None`.
pub fn heal(dir: &Path, id: Option<u64>) -> io::Result<()> {
    let spec = ClusterSpec::load(dir)?;
    for n in &spec.nodes {
        if id.is_none_or(|i| i == n.id) {
            let _ = crate::netns::run(
                "nft",
                &["delete", "table", "inet", &part_table(&spec, n.id)],
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_headers(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn put_with_expect_is_a_cas_and_expect_absent_expects_nothing() {
        let r = parse_kv_request(
            "PUT",
            "/kv/a",
            Some("expect=old%20v"),
            &no_headers,
            b"new".to_vec(),
        )
        .unwrap();
        assert_eq!(
            r.op,
            Op::Cas {
                key: "a".into(),
                expected: Some(b"old v".to_vec()),
                new: b"new".to_vec()
            }
        );
        let r = parse_kv_request(
            "PUT",
            "/kv/a",
            Some("expect-absent"),
            &no_headers,
            b"n".to_vec(),
        )
        .unwrap();
        assert!(matches!(r.op, Op::Cas { expected: None, .. }));
        let r = parse_kv_request("PUT", "/kv/a", None, &no_headers, b"n".to_vec()).unwrap();
        assert!(matches!(r.op, Op::Put { .. }));
        assert_eq!(
            parse_kv_request(
                "PUT",
                "/kv/a",
                Some("expect=x&expect-absent"),
                &no_headers,
                vec![]
            )
            .unwrap_err()
            .0,
            400
        );
    }

    #[test]
    fn get_reads_consistency_and_min_index_from_the_query() {
        let r = parse_kv_request(
            "GET",
            "/kv/k%2Fx",
            Some("consistency=sequential&min_index=17"),
            &no_headers,
            vec![],
        )
        .unwrap();
        assert_eq!(
            r.op,
            Op::Get {
                key: "k/x".into(),
                consistency: Consistency::Sequential,
                min_index: 17
            }
        );
        let r = parse_kv_request("GET", "/kv/k", None, &no_headers, vec![]).unwrap();
        assert!(matches!(
            r.op,
            Op::Get {
                consistency: Consistency::Linearizable,
                ..
            }
        ));
        assert_eq!(
            parse_kv_request(
                "GET",
                "/kv/k",
                Some("consistency=strong"),
                &no_headers,
                vec![]
            )
            .unwrap_err()
            .0,
            400
        );
    }

    #[test]
    fn client_id_and_seq_headers_name_the_session() {
        let h = |n: &str| match n {
            "X-Client-Id" => Some("42".to_string()),
            "X-Seq" => Some("7".to_string()),
            _ => None,
        };
        let r = parse_kv_request("DELETE", "/kv/k", None, &h, vec![]).unwrap();
        assert_eq!((r.client_id, r.seq), (42, 7));
        let bad = |n: &str| (n == "X-Seq").then(|| "seven".to_string());
        assert_eq!(
            parse_kv_request("DELETE", "/kv/k", None, &bad, vec![])
                .unwrap_err()
                .0,
            400
        );
    }

    #[test]
    fn bad_keys_and_methods_are_refused() {
        assert_eq!(
            parse_kv_request("GET", "/kv/", None, &no_headers, vec![])
                .unwrap_err()
                .0,
            400
        );
        let long = format!("/kv/{}", "x".repeat(MAX_KEY + 1));
        assert_eq!(
            parse_kv_request("GET", &long, None, &no_headers, vec![])
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(
            parse_kv_request("PATCH", "/kv/a", None, &no_headers, vec![])
                .unwrap_err()
                .0,
            405
        );
        assert_eq!(
            parse_kv_request("GET", "/kv/%FF", None, &no_headers, vec![])
                .unwrap_err()
                .0,
            400
        );
    }

    #[test]
    fn percent_coding_round_trips_and_tolerates_bad_escapes() {
        let raw = b"a b/c%d\xff";
        assert_eq!(percent_decode(&percent_encode(raw), false), raw);
        assert_eq!(percent_decode("%zz%4", false), b"%zz%4");
        assert_eq!(percent_decode("a+b", true), b"a b");
        assert_eq!(percent_decode("a+b", false), b"a+b");
    }

    #[test]
    fn member_requests_need_an_id_and_an_address_to_add() {
        let r =
            parse_member_request("POST", "4", Some("addr=198.19.104.2:7400"), &no_headers).unwrap();
        assert_eq!(
            r.op,
            Op::AddNode {
                id: 4,
                addr: "198.19.104.2:7400".into()
            }
        );
        let r = parse_member_request("DELETE", "2", None, &no_headers).unwrap();
        assert_eq!(r.op, Op::RemoveNode { id: 2 });
        for (m, id, q) in [
            ("POST", "4", None),
            ("POST", "4", Some("addr=nowhere")),
            ("POST", "x", Some("addr=1.2.3.4:5")),
            ("DELETE", "0", None),
        ] {
            assert_eq!(
                parse_member_request(m, id, q, &no_headers).unwrap_err().0,
                400
            );
        }
        assert_eq!(
            parse_member_request("GET", "4", None, &no_headers)
                .unwrap_err()
                .0,
            405
        );
    }

    #[test]
    fn local_node_follows_the_layout_of_the_others() {
        let c = ClusterSpec::local(3, "tskv", 100);
        let n = c.local_node(4).unwrap();
        assert_eq!(
            (n.tun.as_str(), n.addr),
            ("tskv4", Ipv4Addr::new(198, 19, 104, 2))
        );
        assert_eq!(n.peer, "198.19.104.1/24");
        assert!(c.local_node(10).is_err());
        assert_eq!(c.initial_voters(), vec![1, 2, 3]);
    }

    #[test]
    fn outcomes_map_to_statuses() {
        let resp = |outcome| Response {
            outcome,
            served_by: 2,
            index: 9,
        };
        assert_eq!(kv_reply("k", &resp(Outcome::Done)).0, 200);
        let (s, r) = kv_reply("k", &resp(Outcome::Value(Some(b"v".to_vec()))));
        assert_eq!(
            (s, r.value.as_deref(), r.found, r.served_by, r.index),
            (200, Some("v"), true, 2, 9)
        );
        assert_eq!(kv_reply("k", &resp(Outcome::Value(None))).0, 404);
        let (s, r) = kv_reply(
            "k",
            &resp(Outcome::CasFailed {
                current: Some(b"c".to_vec()),
            }),
        );
        assert_eq!((s, r.value.as_deref()), (409, Some("c")));
        assert_eq!(
            kv_reply("k", &resp(Outcome::NotLeader { leader: Some(3) }))
                .1
                .leader,
            Some(3)
        );
        assert_eq!(
            kv_reply("k", &resp(Outcome::Unavailable("x".into()))).0,
            503
        );
    }

    #[test]
    fn local_cluster_addresses_avoid_the_other_tools_subnets() {
        let c = ClusterSpec::local(5, "tskv", 100);
        let thirds: Vec<u8> = c.nodes.iter().map(|n| n.addr.octets()[2]).collect();
        assert_eq!(thirds, vec![101, 102, 103, 104, 105]);
        for n in &c.nodes {
            let p: crate::netns::Ipv4Cidr = n.peer.parse().unwrap();
            assert!(p.contains(n.addr) && p.addr != n.addr);
        }
        assert_eq!(c.nodes[2].tun, "tskv3");
    }
}
