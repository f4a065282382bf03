//! `tunstack kv ...`: the replicated key-value store's commands. Argument parsing and
//! printing only; the work is in `tunstack::kv::{server, client, transport, trace}`.

use clap::Subcommand;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tunstack::kv::client::{http_call, KvClient, KvResult};
use tunstack::kv::server::{self, ClusterSpec};
use tunstack::kv::transport;

/// Default cluster directory (also `$TUNSTACK_KV_DIR`).
const DEFAULT_DIR: &str = "kv-cluster";

fn default_dir() -> PathBuf {
    std::env::var_os("TUNSTACK_KV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

#[derive(Subcommand)]
pub enum KvCommand {
    /// Run a local cluster: one process per node, each with its own stack on its own TUN device (node i on 198.19.(100+i).2), until Ctrl-C.
    Cluster {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Cluster directory: CA, node certificates, data, traces, logs, pid files.
        #[arg(long)]
        dir: PathBuf,
        /// Device-name prefix (devices PREFIX1..PREFIXn).
        #[arg(long, default_value = "tskv")]
        prefix: String,
        /// Node i gets 198.19.(BASE+i).0/24.
        #[arg(long, default_value_t = 100)]
        base: u8,
    },
    /// Run one node of the cluster described by DIR/cluster.json until Ctrl-C.
    Node {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        id: u64,
    },
    /// Write KEY=VALUE.
    Put {
        key: String,
        value: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Read KEY.
    Get {
        key: String,
        /// linearizable (through the leader), sequential (this session never reads backwards), eventual (any node's local state).
        #[arg(long, default_value = "linearizable")]
        consistency: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete KEY.
    Delete {
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Compare-and-swap: set KEY to NEW if it is OLD (`--absent`: if it does not exist).
    Cas {
        key: String,
        /// OLD NEW, or NEW with --absent.
        values: Vec<String>,
        #[arg(long)]
        absent: bool,
        #[command(flatten)]
        target: Target,
    },
    /// A table of every node: role, term, leader, commit/applied, peers with suspicion (phi).
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// SIGKILL a node of the local cluster.
    Kill {
        node: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Start a killed node of the local cluster again.
    Restart {
        node: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Cut a node off from its peers (nftables drops what the kernel forwards to/from its device).
    Partition {
        node: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Undo `partition` (for NODE, or for all nodes).
    Heal {
        node: Option<u64>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Add node ID to the local cluster while it serves: its certificate from the cluster CA,
    /// its entry in cluster.json, its process (own stack on device PREFIX<ID>), then a Raft
    /// membership change; it is caught up by snapshot.
    Add {
        id: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Remove node ID from the cluster (a Raft membership change), then stop its process.
    Remove {
        id: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Merge the nodes' trace files into one causal timeline and draw it as a space-time
    /// diagram (SVG; `.html` adds the event table and click-to-highlight causality).
    Trace {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "kv-trace.svg")]
        out: PathBuf,
    },
}

/// Which node(s) a client command talks to.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// A node's HTTP address (IP:PORT); default: every node in --dir, the first that answers.
    #[arg(long)]
    node: Option<String>,
    /// Cluster directory [default: $TUNSTACK_KV_DIR or ./kv-cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the JSON answer as it came.
    #[arg(long)]
    json: bool,
}

impl Target {
    fn nodes(&self) -> Result<Vec<SocketAddrV4>, String> {
        let dir = self.dir.clone().unwrap_or_else(default_dir);
        let mut nodes: Vec<SocketAddrV4> = match ClusterSpec::load(&dir) {
            Ok(s) => s.nodes.iter().map(|n| n.http_addr()).collect(),
            Err(e) if self.node.is_none() => return Err(e.to_string()),
            Err(_) => Vec::new(),
        };
        if let Some(n) = &self.node {
            let a = parse_addr(n)?;
            nodes.retain(|x| *x != a);
            nodes.insert(0, a);
        }
        Ok(nodes)
    }
}

fn parse_addr(s: &str) -> Result<SocketAddrV4, String> {
    s.parse::<SocketAddrV4>()
        .or_else(|_| {
            s.parse()
                .map(|ip| SocketAddrV4::new(ip, server::DEFAULT_HTTP_PORT))
        })
        .map_err(|_| format!("--node {s:?}: not IP or IP:PORT"))
}

pub fn run(cmd: KvCommand) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    match cmd {
        KvCommand::Cluster {
            nodes,
            dir,
            prefix,
            base,
        } => cluster(nodes, &dir, &prefix, base),
        KvCommand::Node { dir, id } => {
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))
                .map_err(|e| e.to_string())?;
            server::run_node_process(&dir, id, stop, |a| {
                println!("node {id} serving http://{a}/");
            })
            .map_err(e)
        }
        KvCommand::Put { key, value, target } => {
            let v = value.join(" ");
            let mut c = KvClient::new(target.nodes()?);
            show(&target, c.put(&key, v.as_bytes()).map_err(e)?)
        }
        KvCommand::Get {
            key,
            consistency,
            target,
        } => {
            let _: tunstack::kv::node::Consistency = consistency.parse()?;
            let mut c = KvClient::new(target.nodes()?);
            c.pinned = target.node.is_some();
            show(&target, c.get(&key, &consistency).map_err(e)?)
        }
        KvCommand::Delete { key, target } => {
            let mut c = KvClient::new(target.nodes()?);
            show(&target, c.delete(&key).map_err(e)?)
        }
        KvCommand::Cas {
            key,
            values,
            absent,
            target,
        } => {
            let mut c = KvClient::new(target.nodes()?);
            let r = match (absent, values.as_slice()) {
                (true, [new]) => c.cas(&key, None, new.as_bytes()),
                (false, [old, new]) => c.cas(&key, Some(old.as_bytes()), new.as_bytes()),
                _ => return Err("cas KEY OLD NEW, or cas --absent KEY NEW".into()),
            };
            show(&target, r.map_err(e)?)
        }
        KvCommand::Status { target } => status(&target),
        KvCommand::Kill { node, dir } => {
            let pid = server::kill_node(&dir.unwrap_or_else(default_dir), node).map_err(e)?;
            println!("node {node}: SIGKILL sent to pid {pid}");
            Ok(())
        }
        KvCommand::Restart { node, dir } => {
            let dir = dir.unwrap_or_else(default_dir);
            let spec = ClusterSpec::load(&dir).map_err(e)?;
            let n = spec.node(node).ok_or(format!("no node {node}"))?;
            if let Some(pid) = server::node_pid(&dir, node) {
                return Err(format!("node {node} is running (pid {pid}); kill it first"));
            }
            let exe = std::env::current_exe().map_err(e)?;
            let child = server::spawn_node(&exe, &dir, node).map_err(e)?;
            server::wait_serving(n, Duration::from_secs(15)).map_err(e)?;
            println!(
                "node {node}: restarted (pid {}), serving http://{}/",
                child.id(),
                n.http_addr()
            );
            Ok(())
        }
        KvCommand::Partition { node, dir } => {
            server::partition_node(&dir.unwrap_or_else(default_dir), node).map_err(e)?;
            println!(
                "node {node}: partitioned from its peers (clients on this host still reach it)"
            );
            Ok(())
        }
        KvCommand::Heal { node, dir } => {
            server::heal(&dir.unwrap_or_else(default_dir), node).map_err(e)?;
            println!("healed");
            Ok(())
        }
        KvCommand::Add { id, dir } => add_node(&dir.unwrap_or_else(default_dir), id),
        KvCommand::Remove { id, dir } => remove_node(&dir.unwrap_or_else(default_dir), id),
        KvCommand::Trace { dir, out } => trace(&dir.unwrap_or_else(default_dir), &out),
    }
}

/// `tunstack kv add`: see [`KvCommand::Add`].
fn add_node(dir: &Path, id: u64) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    let mut spec = ClusterSpec::load(dir).map_err(e)?;
    if spec.node(id).is_some() {
        return Err(format!(
            "node {id} is already in {} (remove it first)",
            dir.join(server::CLUSTER_FILE).display()
        ));
    }
    let others: Vec<SocketAddrV4> = spec.nodes.iter().map(|n| n.http_addr()).collect();
    let node = spec.local_node(id).map_err(e)?;
    transport::ensure_cluster_certs(dir, &[(id, node.addr)]).map_err(e)?;
    spec.initial = Some(spec.initial_voters());
    spec.nodes.push(node.clone());
    spec.save(dir).map_err(e)?;
    let exe = std::env::current_exe().map_err(e)?;
    let child = server::spawn_node(&exe, dir, id).map_err(e)?;
    server::wait_serving(&node, Duration::from_secs(20))
        .map_err(|err| format!("{err} (see {})", server::log_path(dir, id).display()))?;
    let mut c = KvClient::new(others);
    let r = c.add_node(id, node.raft_addr()).map_err(e)?;
    if r.status != 200 {
        return Err(format!(
            "adding node {id} refused ({}): {}",
            r.status,
            r.reply.error.unwrap_or_default()
        ));
    }
    println!(
        "node {id} added at index {} (pid {}), serving http://{}/, device {}",
        r.reply.index,
        child.id(),
        node.http_addr(),
        node.tun
    );
    Ok(())
}

/// `tunstack kv remove`: see [`KvCommand::Remove`].
fn remove_node(dir: &Path, id: u64) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    let mut spec = ClusterSpec::load(dir).map_err(e)?;
    if spec.node(id).is_none() {
        return Err(format!(
            "no node {id} in {}",
            dir.join(server::CLUSTER_FILE).display()
        ));
    }
    let others: Vec<SocketAddrV4> = spec
        .nodes
        .iter()
        .filter(|n| n.id != id)
        .map(|n| n.http_addr())
        .collect();
    let mut c = KvClient::new(others);
    let r = c.remove_node(id).map_err(e)?;
    if r.status != 200 {
        return Err(format!(
            "removing node {id} refused ({}): {}",
            r.status,
            r.reply.error.unwrap_or_default()
        ));
    }
    if let Some(pid) = server::node_pid(dir, id) {
        // SAFETY: a signal to a pid from our own pid file.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    spec.initial = Some(spec.initial_voters());
    spec.nodes.retain(|n| n.id != id);
    spec.save(dir).map_err(e)?;
    println!(
        "node {id} removed at index {}; its process stopped",
        r.reply.index
    );
    Ok(())
}

/// `tunstack kv trace`: read every node's trace file, merge, render.
fn trace(dir: &Path, out: &Path) -> Result<(), String> {
    use tunstack::kv::trace;
    let spec = ClusterSpec::load(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut events = Vec::new();
    for n in &spec.nodes {
        let p = server::trace_path(dir, n.id);
        match trace::read_trace(&p) {
            Ok(mut ev) => events.append(&mut ev),
            Err(e) => eprintln!("{}: {e} (skipped)", p.display()),
        }
    }
    if events.is_empty() {
        return Err(format!(
            "no trace events under {} (has the cluster run?)",
            dir.display()
        ));
    }
    let count = events.len();
    let timeline = trace::merge(events);
    let html = out.extension().is_some_and(|x| x == "html" || x == "htm");
    let body = if html {
        trace::render_html(&timeline)
    } else {
        trace::render_svg(&timeline)
    };
    std::fs::write(out, body).map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "{count} events from {} nodes, causally ordered -> {}",
        spec.nodes.len(),
        out.display()
    );
    Ok(())
}

fn show(target: &Target, r: KvResult) -> Result<(), String> {
    if target.json {
        println!(
            "{}",
            serde_json::to_string(&r.reply).map_err(|e| e.to_string())?
        );
    } else {
        let who = format!(
            "served by node {} at index {} via {}{}",
            r.reply.served_by,
            r.reply.index,
            r.node,
            if r.attempts > 1 {
                format!(", after {} attempts", r.attempts)
            } else {
                String::new()
            }
        );
        match (r.status, &r.reply.value) {
            (200, Some(v)) => println!("{v}\t({who})"),
            (200, None) => println!("OK\t({who})"),
            (404, _) => println!("(not found)\t({who})"),
            (409, v) => println!(
                "CAS failed: current value is {}\t({who})",
                v.as_deref()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or("absent".into())
            ),
            (s, _) => {
                return Err(format!(
                    "{s}: {} ({who})",
                    r.reply.error.clone().unwrap_or_default()
                ))
            }
        }
    }
    match r.status {
        200 | 404 | 409 => Ok(()),
        s => Err(format!("HTTP {s}")),
    }
}

fn status(target: &Target) -> Result<(), String> {
    let nodes = target.nodes()?;
    println!(
        "{:<22} {:>4} {:<13} {:>5} {:>6} {:>15}  peers (phi, * = suspected)",
        "node", "id", "role", "term", "leader", "commit/applied"
    );
    for a in nodes {
        match http_call(a, "GET", "/status", &[], None, Duration::from_secs(2)) {
            Ok((200, body)) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| format!("{a}: {e}"))?;
                if target.json {
                    println!("{v}");
                    continue;
                }
                let peers: Vec<String> = v["peers"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .map(|p| {
                                format!(
                                    "{}:{:.1}{}",
                                    p["id"],
                                    p["phi"].as_f64().unwrap_or(0.0),
                                    if p["suspected"].as_bool() == Some(true) {
                                        "*"
                                    } else {
                                        ""
                                    }
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{:<22} {:>4} {:<13} {:>5} {:>6} {:>15}  {}",
                    a.to_string(),
                    v["id"],
                    v["role"].as_str().unwrap_or("?"),
                    v["term"],
                    if v["leader"].is_null() {
                        "-".to_string()
                    } else {
                        v["leader"].to_string()
                    },
                    format!("{}/{}", v["commit"], v["applied"]),
                    peers.join(" ")
                );
            }
            Ok((s, _)) => println!("{a:<22} answered HTTP {s}"),
            Err(e) => println!("{a:<22} unreachable: {e}"),
        }
    }
    Ok(())
}

fn cluster(n: usize, dir: &Path, prefix: &str, base: u8) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    if !(1..=9).contains(&n) {
        return Err("--nodes: 1 to 9".into());
    }
    if prefix.is_empty() || prefix.len() > 13 {
        return Err("--prefix: 1 to 13 characters".into());
    }
    std::fs::create_dir_all(dir).map_err(e)?;
    let spec = ClusterSpec::local(n, prefix, base);
    let nodes: Vec<_> = spec.nodes.iter().map(|s| (s.id, s.addr)).collect();
    transport::ensure_cluster_certs(dir, &nodes).map_err(e)?;
    spec.save(dir).map_err(e)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst)).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(e)?;
    let mut children = Vec::new();
    for node in &spec.nodes {
        if let Some(pid) = server::node_pid(dir, node.id) {
            return Err(format!("node {} already runs (pid {pid})", node.id));
        }
        children.push(server::spawn_node(&exe, dir, node.id).map_err(e)?);
    }
    let mut result = Ok(());
    for node in &spec.nodes {
        if let Err(err) = server::wait_serving(node, Duration::from_secs(20)) {
            result = Err(format!(
                "{err} (see {})",
                server::log_path(dir, node.id).display()
            ));
            break;
        }
        println!(
            "node {} http://{}/  (device {}, peer links {})",
            node.id,
            node.http_addr(),
            node.tun,
            node.raft_addr()
        );
    }
    if result.is_ok() {
        println!(
            "cluster of {n} running; certificates, data, traces and logs in {}; Ctrl-C stops it",
            dir.display()
        );
        while !stop.load(Ordering::SeqCst) {
            for c in &mut children {
                let _ = c.try_wait();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Stop every node (also ones `kv restart` or `kv add` started), then remove partitions.
    let spec = ClusterSpec::load(dir).unwrap_or(spec);
    for node in &spec.nodes {
        if let Some(pid) = server::node_pid(dir, node.id) {
            // SAFETY: a signal to a pid from our own pid file.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    for c in &mut children {
        let end = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    for node in &spec.nodes {
        if let Some(pid) = server::node_pid(dir, node.id) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(server::pid_path(dir, node.id));
    }
    let _ = server::heal(dir, None);
    println!("cluster stopped; its devices are gone with its processes");
    result
}
