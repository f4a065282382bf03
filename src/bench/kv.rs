//! The KV section of `tunstack bench`: our Raft KV store over the stack, the same store over
//! the kernel's TCP, and etcd (Debian's `etcd-server`, 3.4), each a three-node cluster on this
//! machine, inside a network namespace made here.
//!
//! * **Ours over the stack**: `tunstack kv node` processes, each with its own stack on its own
//!   TUN device (198.19.141-143.2), peer links mutual TLS on the stacks, HTTP on the stacks —
//!   exactly what `tunstack kv cluster` runs.
//! * **Ours over kernel TCP**: the same node code with the transport swapped
//!   ([`crate::kv::transport::KernelNet`]) and HTTP on a kernel socket; nodes on 198.19.151-153.2
//!   (addresses on the namespace's `lo`).
//! * **etcd**: three `etcd` members on 198.19.161-163.2 (on `lo`), peer links with mutual TLS
//!   (`--peer-client-cert-auth`) with certificates from a CA made here (as ours), data
//!   directories in a temporary directory, every other setting etcd's default (100 ms
//!   heartbeat, 1 s election timeout, fsync on). etcd checks a peer's client certificate
//!   against the connection's source address, which on one shared `lo` is the destination's
//!   own address, so each member's certificate names all three addresses.
//!
//! The load generator is one Rust loop for all three ([`write_load`]): `C` client threads, each
//! with one keep-alive HTTP/1.1 connection to the leader, each writing a 64-byte value to one of
//! 100 keys of its own, one request at a time, for a fixed time. Ours: `PUT /kv/KEY`; etcd:
//! `POST /v3/kv/put` on its HTTP/JSON gateway. Writes per second and the p50/p99 of the time
//! from sending a request to reading its whole answer.
//!
//! Failover ([`failover`]): SIGKILL the leader; meanwhile one thread per survivor sends a write
//! (a fresh connection per attempt, 2 s attempt timeout, 5 ms pause after a failure) until one is
//! answered with success; the time from the kill to that answer. The killed member is started
//! again (same data) and caught up before the next kill.
//!
//! Reads ([`read_latency`], ours over the stack only): p50/p99 of `GET /kv/KEY` at each
//! consistency level, asked of the leader and of a follower, one request at a time on a
//! keep-alive connection (PACELC's latency side: what a weaker level saves when nothing fails).

use super::interrupt::{OnInterrupt, Pids};
use crate::kv::server::{self, ClusterSpec};
use crate::netns;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const STACK_BASE: u8 = 140;
const KERNEL_BASE: u8 = 150;
const ETCD_BASE: u8 = 160;
const NODES: u64 = 3;
/// How often a failover measurement starts a new write attempt at each survivor.
pub const ATTEMPT_EVERY: Duration = Duration::from_millis(20);

/// How much to measure.
#[derive(Clone, Debug)]
pub struct KvParams {
    /// Client counts of the write load.
    pub clients: Vec<usize>,
    /// Duration of each write load, per system.
    pub load_time: Duration,
    /// Rounds each write load is cut into. The three systems take turns
    /// round by round (stack, kernel, etcd, stack, ...) and each system's
    /// figure is its median round, so a drift of the machine (a neighbour's
    /// load, the disk's fsync latency) reaches all of them alike instead of
    /// whichever one ran at the time.
    pub rounds: usize,
    /// Leader kills per system.
    pub kills: usize,
    /// Reads per (level, node) pair.
    pub reads: usize,
    /// The `tunstack` binary that runs the nodes (`None`: this program, as in `tunstack bench`).
    pub exe: Option<PathBuf>,
}

impl KvParams {
    pub fn full() -> KvParams {
        KvParams {
            clients: vec![1, 8, 32],
            load_time: Duration::from_secs(6),
            rounds: 3,
            kills: 5,
            reads: 2000,
            exe: None,
        }
    }
    /// Every figure of the full section, each from less: one leader kill
    /// per system, 1-s loads (so that `bench --quick` stays under a minute).
    pub fn quick() -> KvParams {
        KvParams {
            clients: vec![1, 8, 32],
            load_time: Duration::from_millis(1000),
            rounds: 1,
            kills: 1,
            reads: 200,
            exe: None,
        }
    }
}

/// One write load's figures.
#[derive(Clone, Debug, Default)]
pub struct WriteLoad {
    pub clients: usize,
    pub writes: u64,
    pub errors: u64,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time (user + system) of the three server processes per write, µs.
    pub cpu_us_per_write: Option<f64>,
}

impl WriteLoad {
    pub fn per_sec(&self) -> f64 {
        self.writes as f64 / self.secs
    }
}

/// One system's figures.
#[derive(Clone, Debug, Default)]
pub struct System {
    pub loads: Vec<WriteLoad>,
    /// Kill of the leader -> first successful write, ms, one per kill.
    pub failovers_ms: Vec<f64>,
}

impl System {
    pub fn load(&self, clients: usize) -> Option<&WriteLoad> {
        self.loads.iter().find(|l| l.clients == clients)
    }
    pub fn failover_median_ms(&self) -> f64 {
        let mut v = self.failovers_ms.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    }
    pub fn failover_max_ms(&self) -> f64 {
        self.failovers_ms.iter().copied().fold(f64::NAN, f64::max)
    }
}

/// Read latency at one consistency level from one node.
#[derive(Clone, Debug, Default)]
pub struct ReadLatency {
    pub level: &'static str,
    /// "leader" or "follower".
    pub node: &'static str,
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// The KV section's result.
#[derive(Clone, Debug, Default)]
pub struct KvBench {
    pub stack: System,
    pub kernel: System,
    pub etcd: System,
    pub reads: Vec<ReadLatency>,
    pub params: Option<KvParams>,
}

impl KvBench {
    /// Ours over the stack / ours over kernel TCP, writes per second at `clients`.
    pub fn stack_over_kernel(&self, clients: usize) -> Option<f64> {
        Some(self.stack.load(clients)?.per_sec() / self.kernel.load(clients)?.per_sec())
    }
    pub fn stack_over_etcd(&self, clients: usize) -> Option<f64> {
        Some(self.stack.load(clients)?.per_sec() / self.etcd.load(clients)?.per_sec())
    }

    /// One progress line.
    pub fn summary(&self) -> String {
        let c = self
            .params
            .as_ref()
            .map_or(8, |p| p.clients[p.clients.len() / 2]);
        format!(
            "{c} clients: stack {:.0}, kernel {:.0}, etcd {:.0} writes/s (stack/kernel {:.2}); failover median stack {:.0} ms, kernel {:.0} ms, etcd {:.0} ms",
            self.stack.load(c).map_or(f64::NAN, WriteLoad::per_sec),
            self.kernel.load(c).map_or(f64::NAN, WriteLoad::per_sec),
            self.etcd.load(c).map_or(f64::NAN, WriteLoad::per_sec),
            self.stack_over_kernel(c).unwrap_or(f64::NAN),
            self.stack.failover_median_ms(),
            self.kernel.failover_median_ms(),
            self.etcd.failover_median_ms(),
        )
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------------------------------------
// A keep-alive HTTP/1.1 client (the same for every system)

/// One keep-alive connection; reconnects on the next request after an error.
pub struct Conn {
    addr: SocketAddrV4,
    timeout: Duration,
    s: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub fn new(addr: SocketAddrV4, timeout: Duration) -> Conn {
        Conn {
            addr,
            timeout,
            s: None,
        }
    }

    /// One request; the status and body. `Content-Length` and chunked answers are read.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &str,
        body: &[u8],
    ) -> io::Result<(u16, Vec<u8>)> {
        let r = self.try_request(method, target, headers, body);
        if r.is_err() {
            self.s = None;
        }
        r
    }

    fn try_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &str,
        body: &[u8],
    ) -> io::Result<(u16, Vec<u8>)> {
        if self.s.is_none() {
            let s = TcpStream::connect_timeout(&self.addr.into(), self.timeout)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            s.set_nodelay(true)?;
            self.s = Some(BufReader::new(s));
        }
        let r = self.s.as_mut().expect("connected");
        let mut msg = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        msg.extend_from_slice(body);
        r.get_mut().write_all(&msg)?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let (mut len, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                let v = v.trim();
                if n.eq_ignore_ascii_case("content-length") {
                    len = v.parse::<usize>().ok();
                } else if n.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.eq_ignore_ascii_case("chunked");
                } else if n.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad("bad chunk size"))?;
                let start = out.len();
                out.resize(start + n, 0);
                r.read_exact(&mut out[start..])?;
                line.clear();
                r.read_line(&mut line)?;
                if n == 0 {
                    break;
                }
            }
        } else if let Some(n) = len {
            out.resize(n, 0);
            r.read_exact(&mut out)?;
        } else {
            r.read_to_end(&mut out)?;
            close = true;
        }
        if close {
            self.s = None;
        }
        Ok((status, out))
    }
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The systems

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ours,
    Etcd,
}

/// One write request for `kind`: (method, target, body).
fn put_request(kind: Kind, key: &str, value: &[u8]) -> (&'static str, String, Vec<u8>) {
    match kind {
        Kind::Ours => ("PUT", format!("/kv/{key}"), value.to_vec()),
        Kind::Etcd => (
            "POST",
            "/v3/kv/put".to_string(),
            format!(
                "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                base64(key.as_bytes()),
                base64(value)
            )
            .into_bytes(),
        ),
    }
}

fn write_ok(kind: Kind, status: u16, body: &[u8]) -> bool {
    match kind {
        Kind::Ours => status == 200,
        // The gateway answers 200 with {"header":{...}} or an error object.
        Kind::Etcd => {
            status == 200
                && serde_json::from_slice::<serde_json::Value>(body)
                    .is_ok_and(|v| v.get("header").is_some() && v.get("error").is_none())
        }
    }
}

/// A three-node cluster of one system, its processes killed on drop.
trait Cluster {
    fn kind(&self) -> Kind;
    fn http(&self, id: u64) -> SocketAddrV4;
    /// The leader every node agrees on (waits up to `timeout`).
    fn leader(&self, timeout: Duration) -> io::Result<u64>;
    fn kill(&mut self, id: u64) -> io::Result<()>;
    fn restart(&mut self, id: u64) -> io::Result<()>;
    /// The server processes' pids.
    fn pids(&self) -> Vec<i32>;
}

/// User + system CPU time of `pids` so far, seconds (from /proc/PID/stat).
fn cpu_secs(pids: &[i32]) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut total = 0.0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ut: f64 = f.get(11)?.parse().ok()?;
        let st: f64 = f.get(12)?.parse().ok()?;
        total += (ut + st) / hz;
    }
    Some(total)
}

fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> io::Result<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > end {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} (after {timeout:?})"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get_json(
    addr: SocketAddrV4,
    method: &str,
    target: &str,
    body: &[u8],
) -> Option<serde_json::Value> {
    let mut c = Conn::new(addr, Duration::from_secs(1));
    match c.request(method, target, "", body) {
        Ok((200, b)) => serde_json::from_slice(&b).ok(),
        _ => None,
    }
}

/// Our store: `tunstack kv node` processes from a cluster directory.
struct Ours {
    dir: PathBuf,
    spec: ClusterSpec,
    exe: PathBuf,
    /// Never reaped before drop (a killed node stays a zombie), so their
    /// pids in `pids` cannot be reused meanwhile.
    children: Vec<Child>,
    pids: Pids,
    /// Kills the nodes and removes `dir` if the bench is interrupted.
    on_interrupt: Option<OnInterrupt>,
}

impl Ours {
    fn start(kernel_tcp: bool, exe: Option<&PathBuf>) -> io::Result<Ours> {
        let (base, prefix, tag) = if kernel_tcp {
            (KERNEL_BASE, "tsbkk", "kernel")
        } else {
            (STACK_BASE, "tsbks", "stack")
        };
        let dir =
            std::env::temp_dir().join(format!("tunstack-bench-kv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut spec = ClusterSpec::local(NODES as usize, prefix, base);
        spec.kernel_tcp = kernel_tcp;
        if kernel_tcp {
            for n in &spec.nodes {
                netns::run(
                    "ip",
                    &["addr", "add", &format!("{}/32", n.addr), "dev", "lo"],
                )?;
            }
        }
        let nodes: Vec<_> = spec.nodes.iter().map(|n| (n.id, n.addr)).collect();
        crate::kv::transport::ensure_cluster_certs(&dir, &nodes)?;
        spec.save(&dir)?;
        let exe = match exe {
            Some(e) => e.clone(),
            None => std::env::current_exe()?,
        };
        let (pids, on_interrupt) = Pids::killed_on_interrupt(&dir);
        let on_interrupt = Some(on_interrupt);
        let mut c = Ours {
            dir,
            spec,
            exe,
            children: Vec::new(),
            pids,
            on_interrupt,
        };
        for id in 1..=NODES {
            let child = server::spawn_node(&c.exe, &c.dir, id)?;
            c.pids.add(child.id());
            c.children.push(child);
        }
        for n in &c.spec.nodes {
            server::wait_serving(n, Duration::from_secs(20)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{e} (see {})", server::log_path(&c.dir, n.id).display()),
                )
            })?;
        }
        Ok(c)
    }

    fn status(&self, id: u64) -> Option<serde_json::Value> {
        get_json(self.http(id), "GET", "/status", b"")
    }
}

impl Cluster for Ours {
    fn kind(&self) -> Kind {
        Kind::Ours
    }
    fn http(&self, id: u64) -> SocketAddrV4 {
        self.spec.node(id).expect("node").http_addr()
    }
    fn leader(&self, timeout: Duration) -> io::Result<u64> {
        wait_for(timeout, "no leader all KV nodes agree on", || {
            let mut leader = None;
            let mut commit = Vec::new();
            for id in 1..=NODES {
                let s = self.status(id)?;
                let l = s["leader"].as_u64()?;
                if leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
                commit.push(s["applied"].as_u64()?);
            }
            // Caught up: every node has applied the same index.
            commit.windows(2).all(|w| w[0] == w[1]).then_some(leader?)
        })
    }
    fn kill(&mut self, id: u64) -> io::Result<()> {
        server::kill_node(&self.dir, id).map(|_| ())
    }
    fn pids(&self) -> Vec<i32> {
        (1..=NODES)
            .filter_map(|i| server::node_pid(&self.dir, i))
            .collect()
    }
    fn restart(&mut self, id: u64) -> io::Result<()> {
        let child = server::spawn_node(&self.exe, &self.dir, id)?;
        self.pids.add(child.id());
        self.children.push(child);
        server::wait_serving(self.spec.node(id).expect("node"), Duration::from_secs(20))
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        // Unregistered before the children are reaped and their pids freed.
        self.on_interrupt.take();
        for id in 1..=NODES {
            let _ = server::kill_node(&self.dir, id);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// etcd: three members, peer links with mutual TLS.
struct Etcd {
    dir: PathBuf,
    children: Vec<Option<Child>>,
    /// The members' pids until each is reaped.
    pids: Pids,
    /// Kills the members and removes `dir` if the bench is interrupted.
    on_interrupt: Option<OnInterrupt>,
}

fn etcd_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, ETCD_BASE + id as u8, 2)
}

impl Etcd {
    fn start() -> io::Result<Etcd> {
        let dir = std::env::temp_dir().join(format!("tunstack-bench-etcd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (pids, on_interrupt) = Pids::killed_on_interrupt(&dir);
        let on_interrupt = Some(on_interrupt);
        let mut e = Etcd {
            dir,
            children: Vec::new(),
            pids,
            on_interrupt,
        };
        let ids: Vec<(u64, Ipv4Addr)> = (1..=NODES).map(|i| (i, etcd_ip(i))).collect();
        for (_, ip) in &ids {
            netns::run("ip", &["addr", "add", &format!("{ip}/32"), "dev", "lo"])?;
        }
        // The same CA and certificate kind our nodes use (rcgen; server and client use), each
        // naming every member's address (see the module documentation).
        let store = crate::kv::transport::ensure_cluster_certs(&e.dir, &[])?;
        let all: Vec<std::net::IpAddr> = ids.iter().map(|(_, ip)| (*ip).into()).collect();
        for (id, _) in &ids {
            let name = format!("etcd{id}");
            store.issue(&name, &all, &[&name], true, true)?.write(
                &e.dir.join(crate::kv::transport::cert_file(*id)),
                &e.dir.join(crate::kv::transport::key_file(*id)),
            )?;
        }
        for id in 1..=NODES {
            let c = e.spawn(id)?;
            e.pids.add(c.id());
            e.children.push(Some(c));
        }
        for id in 1..=NODES {
            let a = e.http(id);
            wait_for(Duration::from_secs(30), "etcd did not answer", || {
                get_json(a, "POST", "/v3/maintenance/status", b"{}")
            })
            .map_err(|err| io::Error::other(format!("member {id}: {err}: {}", e.log_tail(id))))?;
        }
        Ok(e)
    }

    fn log(&self, id: u64) -> PathBuf {
        self.dir.join(format!("etcd{id}.log"))
    }

    /// The last lines of member `id`'s log (for errors: the directory goes on drop).
    fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(self.log(id)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    fn spawn(&self, id: u64) -> io::Result<Child> {
        let ip = etcd_ip(id);
        let cluster: Vec<String> = (1..=NODES)
            .map(|i| format!("e{i}=https://{}:2380", etcd_ip(i)))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(id))?;
        let d = |p: &str| self.dir.join(p).to_string_lossy().into_owned();
        Command::new("etcd")
            .args(["--name", &format!("e{id}")])
            .args(["--data-dir", &d(&format!("e{id}.data"))])
            .args(["--listen-client-urls", &format!("http://{ip}:2379")])
            .args(["--advertise-client-urls", &format!("http://{ip}:2379")])
            .args(["--listen-peer-urls", &format!("https://{ip}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("https://{ip}:2380"),
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "tunstack-bench"])
            .args(["--listen-metrics-urls", ""])
            .args(["--peer-cert-file", &d(&format!("node{id}.pem"))])
            .args(["--peer-key-file", &d(&format!("node{id}-key.pem"))])
            .args(["--peer-trusted-ca-file", &d("ca.pem")])
            .arg("--peer-client-cert-auth")
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run etcd: {e} (scripts/install-deps.sh installs etcd-server)"),
                )
            })
    }

    fn member_status(&self, id: u64) -> Option<(String, String)> {
        let v = get_json(self.http(id), "POST", "/v3/maintenance/status", b"{}")?;
        let me = v["header"]["member_id"].as_str()?.to_string();
        let leader = v["leader"].as_str()?.to_string();
        Some((me, leader))
    }
}

impl Cluster for Etcd {
    fn kind(&self) -> Kind {
        Kind::Etcd
    }
    fn http(&self, id: u64) -> SocketAddrV4 {
        SocketAddrV4::new(etcd_ip(id), 2379)
    }
    fn leader(&self, timeout: Duration) -> io::Result<u64> {
        wait_for(timeout, "no leader all etcd members agree on", || {
            let all: Vec<(String, String)> = (1..=NODES)
                .map(|i| self.member_status(i))
                .collect::<Option<_>>()?;
            let leader = &all[0].1;
            if leader == "0" || all.iter().any(|(_, l)| l != leader) {
                return None;
            }
            all.iter()
                .position(|(me, _)| me == leader)
                .map(|i| i as u64 + 1)
        })
    }
    fn kill(&mut self, id: u64) -> io::Result<()> {
        if let Some(mut c) = self.children[id as usize - 1].take() {
            c.kill()?;
            let _ = c.wait();
            self.pids.remove(c.id());
        }
        Ok(())
    }
    fn pids(&self) -> Vec<i32> {
        self.children
            .iter()
            .flatten()
            .map(|c| c.id() as i32)
            .collect()
    }
    fn restart(&mut self, id: u64) -> io::Result<()> {
        let c = self.spawn(id)?;
        self.pids.add(c.id());
        self.children[id as usize - 1] = Some(c);
        let a = self.http(id);
        wait_for(
            Duration::from_secs(30),
            "restarted etcd member did not answer",
            || get_json(a, "POST", "/v3/maintenance/status", b"{}"),
        )
        .map(|_| ())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.on_interrupt.take();
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// `clients` threads writing to `addr` for `time`, one request at a time each.
fn write_load(
    kind: Kind,
    addr: SocketAddrV4,
    clients: usize,
    time: Duration,
    pids: &[i32],
) -> io::Result<WriteLoad> {
    let value = [b'v'; 64];
    // Warm up: connections made and a few writes through.
    let mut warm = Conn::new(addr, Duration::from_secs(5));
    for i in 0..5 {
        let (m, t, b) = put_request(kind, &format!("warm{i}"), &value);
        let (s, body) = warm.request(m, &t, "", &b)?;
        if !write_ok(kind, s, &body) {
            return Err(io::Error::other(format!(
                "warm-up write to {addr} answered {s}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
    }
    let cpu0 = cpu_secs(pids);
    let start = Instant::now();
    let end = start + time;
    let results: Vec<(u64, Vec<f64>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    let mut conn = Conn::new(addr, Duration::from_secs(5));
                    let mut lat = Vec::new();
                    let mut errors = 0u64;
                    let mut i = 0u64;
                    while Instant::now() < end {
                        let (m, t, b) = put_request(kind, &format!("c{c}k{}", i % 100), &value);
                        i += 1;
                        let t0 = Instant::now();
                        match conn.request(m, &t, "", &b) {
                            Ok((st, body)) if write_ok(kind, st, &body) => {
                                lat.push(t0.elapsed().as_secs_f64() * 1e3)
                            }
                            _ => errors += 1,
                        }
                    }
                    (errors, lat)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(pids).zip(cpu0).map(|(b, a)| b - a);
    let errors = results.iter().map(|r| r.0).sum();
    let mut lat: Vec<f64> = results.into_iter().flat_map(|r| r.1).collect();
    lat.sort_by(f64::total_cmp);
    if lat.is_empty() {
        return Err(io::Error::other(format!(
            "no write to {addr} succeeded with {clients} clients ({errors} errors)"
        )));
    }
    Ok(WriteLoad {
        clients,
        writes: lat.len() as u64,
        errors,
        secs,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        cpu_us_per_write: cpu.map(|c| c * 1e6 / lat.len() as f64),
    })
}

/// Kill the leader; ms until a survivor answers a write with success.
///
/// Per survivor, a new attempt starts every [`ATTEMPT_EVERY`] (each on a fresh connection, with
/// a 3 s timeout), whether or not earlier ones have been answered, so the figure is when the
/// system first serves a write, whatever it does with requests that arrived before it could
/// (ours holds them until applied; etcd answers an error or times out).
fn failover(c: &mut dyn Cluster) -> io::Result<f64> {
    let leader = c.leader(Duration::from_secs(30))?;
    let kind = c.kind();
    let survivors: Vec<SocketAddrV4> = (1..=NODES)
        .filter(|i| *i != leader)
        .map(|i| c.http(i))
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Instant>();
    let base_id = crate::rng::Rng::from_os().next_u64() >> 12;
    c.kill(leader)?;
    let killed = Instant::now();
    let mut attempts = Vec::new();
    let mut n = 0u64;
    let first = loop {
        if let Ok(t) = rx.try_recv() {
            break Some(t);
        }
        if killed.elapsed() > Duration::from_secs(20) {
            break None;
        }
        for &addr in &survivors {
            n += 1;
            let (done, tx) = (done.clone(), tx.clone());
            attempts.push(std::thread::spawn(move || {
                let (m, t, b) = put_request(kind, &format!("failover{n}"), b"after the kill");
                // Ours: a session per attempt, as every client of ours sends.
                let hdr = format!("X-Client-Id: {}\r\nX-Seq: 1\r\n", base_id + n);
                let mut conn = Conn::new(addr, Duration::from_secs(3));
                if let Ok((s, body)) = conn.request(m, &t, &hdr, &b) {
                    if write_ok(kind, s, &body) && !done.swap(true, Ordering::SeqCst) {
                        let _ = tx.send(Instant::now());
                    }
                }
            }));
        }
        std::thread::sleep(ATTEMPT_EVERY);
    };
    done.store(true, Ordering::SeqCst);
    for t in attempts {
        let _ = t.join();
    }
    let first =
        first.ok_or_else(|| io::Error::other("no write succeeded within 20 s of the kill"))?;
    let ms = first.saturating_duration_since(killed).as_secs_f64() * 1e3;
    c.restart(leader)?;
    Ok(ms)
}

/// Our store: read latency at each level from the leader and from a follower.
fn read_latency(c: &Ours, reads: usize) -> io::Result<Vec<ReadLatency>> {
    let leader = c.leader(Duration::from_secs(30))?;
    let follower = (1..=NODES).find(|i| *i != leader).expect("a follower");
    let mut w = Conn::new(c.http(leader), Duration::from_secs(5));
    let (s, body) = w.request("PUT", "/kv/read-me", "", b"a value to read")?;
    let reply: server::KvReply = serde_json::from_slice(&body).map_err(io::Error::other)?;
    if s != 200 {
        return Err(io::Error::other(format!("write answered {s}")));
    }
    // Let the follower apply it, so a sequential read there does not wait.
    wait_for(
        Duration::from_secs(5),
        "follower never applied the write",
        || (c.status(follower)?["applied"].as_u64()? >= reply.index).then_some(()),
    )?;
    let mut out = Vec::new();
    for level in ["linearizable", "sequential", "eventual"] {
        for (who, id) in [("leader", leader), ("follower", follower)] {
            let mut conn = Conn::new(c.http(id), Duration::from_secs(5));
            let target = format!("/kv/read-me?consistency={level}&min_index={}", reply.index);
            let mut lat = Vec::with_capacity(reads);
            for i in 0..reads + 20 {
                let t0 = Instant::now();
                let (s, body) = conn.request("GET", &target, "", b"")?;
                let us = t0.elapsed().as_secs_f64() * 1e6;
                if s != 200 {
                    return Err(io::Error::other(format!(
                        "{level} read from the {who} answered {s}: {}",
                        String::from_utf8_lossy(&body)
                    )));
                }
                if i >= 20 {
                    lat.push(us);
                }
            }
            lat.sort_by(f64::total_cmp);
            out.push(ReadLatency {
                level,
                node: who,
                samples: lat.len(),
                p50_us: percentile(&lat, 0.5),
                p99_us: percentile(&lat, 0.99),
            });
        }
    }
    Ok(out)
}

/// The write loads of every client count on all of `cs`, in turns (see
/// [`KvParams::rounds`]): one `Vec<WriteLoad>` per cluster, each load its
/// median round by writes per second.
fn interleaved_loads(cs: &mut [&mut dyn Cluster], p: &KvParams) -> io::Result<Vec<Vec<WriteLoad>>> {
    let rounds = p.rounds.max(1);
    let round_time = p.load_time / rounds as u32;
    let mut out: Vec<Vec<WriteLoad>> = cs.iter().map(|_| Vec::new()).collect();
    for &clients in &p.clients {
        let mut got: Vec<Vec<WriteLoad>> = cs.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (i, c) in cs.iter_mut().enumerate() {
                let leader = c.leader(Duration::from_secs(30))?;
                got[i].push(write_load(
                    c.kind(),
                    c.http(leader),
                    clients,
                    round_time,
                    &c.pids(),
                )?);
            }
        }
        for (i, mut r) in got.into_iter().enumerate() {
            r.sort_by(|a, b| a.per_sec().total_cmp(&b.per_sec()));
            out[i].push(r.swap_remove(r.len() / 2));
        }
    }
    Ok(out)
}

/// `kills` leader kills of `c`, ms from each kill to the first write served.
fn failovers(c: &mut dyn Cluster, kills: usize) -> io::Result<Vec<f64>> {
    (0..kills).map(|_| failover(c)).collect()
}

/// Everything, in a namespace of its own. For profiling one case:
/// `TUNSTACK_BENCH_KV_KILLS=N` overrides the number of leader kills per system,
/// `TUNSTACK_BENCH_KV_CLIENTS=8,32` the client counts of the write loads.
pub fn run(mut p: KvParams) -> io::Result<KvBench> {
    if let Ok(v) = std::env::var("TUNSTACK_BENCH_KV_KILLS") {
        p.kills = v.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TUNSTACK_BENCH_KV_KILLS={v:?}: want a number of leader kills like 5"),
            )
        })?;
    }
    if let Ok(v) = std::env::var("TUNSTACK_BENCH_KV_CLIENTS") {
        let clients: Result<Vec<usize>, _> = v.split(',').map(|c| c.trim().parse()).collect();
        p.clients = clients.ok().filter(|c| !c.contains(&0)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TUNSTACK_BENCH_KV_CLIENTS={v:?}: want client counts like 8,32"),
            )
        })?;
    }
    netns::in_new_netns(move || bench_here(p))?
}

fn bench_here(p: KvParams) -> io::Result<KvBench> {
    netns::run("ip", &["link", "set", "lo", "up"])?;
    let mut r = KvBench {
        params: Some(p.clone()),
        ..KvBench::default()
    };
    // Read latency first, with only this cluster running; then all three
    // run side by side (each on addresses of its own) for the write loads.
    let mut stack = Ours::start(false, p.exe.as_ref())?;
    stack.leader(Duration::from_secs(30))?;
    r.reads = read_latency(&stack, p.reads)?;
    let mut kernel = Ours::start(true, p.exe.as_ref())?;
    let mut etcd = Etcd::start()?;
    let mut loads = interleaved_loads(&mut [&mut stack, &mut kernel, &mut etcd], &p)?.into_iter();
    for sys in [&mut r.stack, &mut r.kernel, &mut r.etcd] {
        sys.loads = loads.next().unwrap_or_default();
    }
    r.stack.failovers_ms = failovers(&mut stack, p.kills)?;
    r.kernel.failovers_ms = failovers(&mut kernel, p.kills)?;
    r.etcd.failovers_ms = failovers(&mut etcd, p.kills)?;
    Ok(r)
}

/// The KV rows of the bench table (Markdown).
pub fn table(r: &Option<Result<KvBench, String>>) -> String {
    let mut t = String::new();
    let Some(r) = r else {
        return t;
    };
    let b = match r {
        Err(_) => {
            let _ = writeln!(t, "\n| KV | error |");
            return t;
        }
        Ok(b) => b,
    };
    let _ = writeln!(
        t,
        "\n| KV, three nodes on one machine | ours over the stack | ours over kernel TCP | etcd 3.4 | stack / kernel | stack / etcd |"
    );
    let _ = writeln!(t, "| --- | ---: | ---: | ---: | ---: | ---: |");
    let clients = b
        .params
        .as_ref()
        .map(|p| p.clients.clone())
        .unwrap_or_default();
    let f = |s: &System, c: usize, g: fn(&WriteLoad) -> f64| {
        s.load(c)
            .map_or("-".to_string(), |l| format!("{:.0}", g(l)))
    };
    let fr = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for &c in &clients {
        let _ = writeln!(
            t,
            "| writes/s, {c} client{} | {} | {} | {} | {} | {} |",
            if c == 1 { "" } else { "s" },
            f(&b.stack, c, WriteLoad::per_sec),
            f(&b.kernel, c, WriteLoad::per_sec),
            f(&b.etcd, c, WriteLoad::per_sec),
            fr(b.stack_over_kernel(c)),
            fr(b.stack_over_etcd(c)),
        );
        let p99 = |s: &System| s.load(c).map(|l| l.p99_ms);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let _ = writeln!(
            t,
            "| p99 write latency ms, {c} client{} | {} | {} | {} | {} | {} |",
            if c == 1 { "" } else { "s" },
            f(&b.stack, c, |l| l.p99_ms),
            f(&b.kernel, c, |l| l.p99_ms),
            f(&b.etcd, c, |l| l.p99_ms),
            fr(ratio(p99(&b.stack), p99(&b.kernel))),
            fr(ratio(p99(&b.stack), p99(&b.etcd))),
        );
        let cpu = |s: &System| s.load(c).and_then(|l| l.cpu_us_per_write);
        let fc = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        let _ = writeln!(
            t,
            "| server CPU µs per write, {c} client{} | {} | {} | {} | {} | {} |",
            if c == 1 { "" } else { "s" },
            fc(cpu(&b.stack)),
            fc(cpu(&b.kernel)),
            fc(cpu(&b.etcd)),
            fr(ratio(cpu(&b.stack), cpu(&b.kernel))),
            fr(ratio(cpu(&b.stack), cpu(&b.etcd))),
        );
    }
    let fo = |s: &System| {
        format!(
            "{:.0} (max {:.0}, n={})",
            s.failover_median_ms(),
            s.failover_max_ms(),
            s.failovers_ms.len()
        )
    };
    let _ = writeln!(
        t,
        "| failover ms: SIGKILL of the leader -> first write served, median | {} | {} | {} | {:.2} | {:.2} |",
        fo(&b.stack),
        fo(&b.kernel),
        fo(&b.etcd),
        b.stack.failover_median_ms() / b.kernel.failover_median_ms(),
        b.stack.failover_median_ms() / b.etcd.failover_median_ms(),
    );
    if !b.reads.is_empty() {
        let _ = writeln!(
            t,
            "\n| KV reads over the stack (one at a time, keep-alive) | p50 µs | p99 µs |"
        );
        let _ = writeln!(t, "| --- | ---: | ---: |");
        for r in &b.reads {
            let _ = writeln!(
                t,
                "| {} from the {} ({} reads) | {:.0} | {:.0} |",
                r.level, r.node, r.samples, r.p50_us, r.p99_us
            );
        }
    }
    let _ = writeln!(
        t,
        "\nWrites: one keep-alive HTTP connection per client to the leader, 64-byte values, {} s per load and system in {} rounds the three systems take in turn, each system's median round shown (ours PUT /kv/KEY, etcd POST /v3/kv/put on its gateway); etcd at its defaults with mutual peer TLS, fsync on.",
        b.params.as_ref().map_or(0.0, |p| p.load_time.as_secs_f64()),
        b.params.as_ref().map_or(1, |p| p.rounds)
    );
    t
}

/// Flat metrics for the JSON.
pub fn metrics(r: &Option<Result<KvBench, String>>) -> Vec<(String, f64, &'static str)> {
    let mut m = Vec::new();
    let Some(Ok(b)) = r else {
        return m;
    };
    for (who, s) in [
        ("stack", &b.stack),
        ("kernel", &b.kernel),
        ("etcd", &b.etcd),
    ] {
        for l in &s.loads {
            m.push((
                format!("kv.{who}.c{}.writes_per_sec", l.clients),
                l.per_sec(),
                "1/s",
            ));
            m.push((format!("kv.{who}.c{}.p50_ms", l.clients), l.p50_ms, "ms"));
            m.push((format!("kv.{who}.c{}.p99_ms", l.clients), l.p99_ms, "ms"));
            m.push((
                format!("kv.{who}.c{}.errors", l.clients),
                l.errors as f64,
                "requests",
            ));
        }
        m.push((
            format!("kv.{who}.failover_median_ms"),
            s.failover_median_ms(),
            "ms",
        ));
        m.push((
            format!("kv.{who}.failover_max_ms"),
            s.failover_max_ms(),
            "ms",
        ));
        for l in &s.loads {
            if let Some(c) = l.cpu_us_per_write {
                m.push((format!("kv.{who}.c{}.cpu_us_per_write", l.clients), c, "µs"));
            }
        }
        for (i, f) in s.failovers_ms.iter().enumerate() {
            m.push((format!("kv.{who}.failover{}_ms", i + 1), *f, "ms"));
        }
    }
    for l in &b.reads {
        m.push((
            format!("kv.read.{}.{}.p50_us", l.level, l.node),
            l.p50_us,
            "µs",
        ));
        m.push((
            format!("kv.read.{}.{}.p99_us", l.level, l.node),
            l.p99_us,
            "µs",
        ));
    }
    if let Some(p) = &b.params {
        for &c in &p.clients {
            if let Some(v) = b.stack_over_kernel(c) {
                m.push((format!("ratio.kv.stack_over_kernel.c{c}"), v, "ratio"));
            }
            if let Some(v) = b.stack_over_etcd(c) {
                m.push((format!("ratio.kv.stack_over_etcd.c{c}"), v, "ratio"));
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_examples() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn etcd_writes_count_only_with_a_header_and_no_error() {
        assert!(write_ok(Kind::Etcd, 200, br#"{"header":{"revision":"3"}}"#));
        assert!(!write_ok(
            Kind::Etcd,
            200,
            br#"{"error":"etcdserver: no leader"}"#
        ));
        assert!(!write_ok(Kind::Etcd, 503, br#"{"header":{}}"#));
        assert!(write_ok(Kind::Ours, 200, b"{}"));
        assert!(!write_ok(Kind::Ours, 503, b"{}"));
    }

    #[test]
    fn ratios_are_stack_over_kernel_from_the_same_run() {
        let load = |c, w| WriteLoad {
            clients: c,
            writes: w,
            secs: 1.0,
            ..WriteLoad::default()
        };
        let b = KvBench {
            stack: System {
                loads: vec![load(8, 800)],
                failovers_ms: vec![600.0, 700.0, 650.0],
            },
            kernel: System {
                loads: vec![load(8, 1000)],
                failovers_ms: vec![600.0],
            },
            etcd: System {
                loads: vec![load(8, 400)],
                failovers_ms: vec![1300.0],
            },
            reads: vec![],
            params: Some(KvParams {
                clients: vec![8],
                ..KvParams::quick()
            }),
        };
        assert_eq!(b.stack_over_kernel(8), Some(0.8));
        assert_eq!(b.stack_over_etcd(8), Some(2.0));
        assert_eq!(b.stack.failover_median_ms(), 650.0);
        assert_eq!(b.stack.failover_max_ms(), 700.0);
        let t = table(&Some(Ok(b.clone())));
        assert!(
            t.contains("| writes/s, 8 clients | 800 | 1000 | 400 | 0.80 | 2.00 |"),
            "{t}"
        );
        let m = metrics(&Some(Ok(b)));
        assert!(m
            .iter()
            .any(|(k, v, _)| k == "ratio.kv.stack_over_kernel.c8" && *v == 0.8));
    }

    #[test]
    fn chunked_and_sized_answers_are_read_on_one_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let srv = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let head = |r: &mut BufReader<TcpStream>| {
                let mut line = String::new();
                let mut len = 0;
                loop {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut b = vec![0; len];
                r.read_exact(&mut b).unwrap();
            };
            head(&mut r);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .unwrap();
            head(&mut r);
            s.write_all(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .unwrap();
        });
        let mut c = Conn::new(addr, Duration::from_secs(5));
        assert_eq!(
            c.request("GET", "/", "", b"").unwrap(),
            (200, b"hello".to_vec())
        );
        assert_eq!(
            c.request("PUT", "/x", "", b"body").unwrap(),
            (201, b"abcde".to_vec())
        );
        srv.join().unwrap();
    }
}
