//! The DNS section of `tunstack bench`: our recursive resolver served on the
//! stack against Unbound, on the same private hierarchy on the same machine.
//!
//! In a network namespace made here: the hierarchy of `tests/dns_fixtures`
//! (NSD, `scripts/dns-hierarchy.sh --base 198.18.57`), Unbound as a
//! recursive resolver on a kernel address (198.18.57.53), and our resolver
//! served on a stack over TUN (198.19.0.2:53) by [`crate::dns::server::serve`],
//! the code `tunstack up --dns` runs. Both iterate from the same root hints.
//!
//! * Cached queries per second: both caches are primed with the query list,
//!   then dnsperf (Debian's `dnsperf`) runs for a fixed time against each,
//!   with the same clients and outstanding-query limit.
//! * Cold-cache resolution time: for each name of the list, both caches are
//!   flushed (ours: [`crate::dns::cache::Cache::clear`]; Unbound:
//!   `unbound-control flush_zone .` and `flush_negative`; the per-server RTT
//!   tables of both are kept), then one query is timed from the kernel.
//!   Median and p90 over all names and rounds. After the flush neither has
//!   the root NS set cached, so both prime it (RFC 8109) first: the same work.
//!   The hierarchy's NSDs run without response rate limiting.
//!
//! Unbound is configured to do the same work as ours: iterator only (no
//! validator), QNAME minimisation on, EDNS buffer 1232, no prefetch, no
//! serve-expired, caches of 64/128 MB, and [`UNBOUND_THREADS`] threads.

use crate::dns::driver::SharedResolver;
use crate::dns::hints::RootHints;
use crate::dns::resolver::ResolverConfig;
use crate::dns::server::{self, ServerStats};
use crate::netns;
use crate::rng::Rng;
use crate::up::{self, UpOptions};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Threads Unbound runs (`num-threads`). Ours answers on one receive
/// thread (handing each question to a worker thread) beside the stack's
/// event-loop thread.
pub const UNBOUND_THREADS: usize = 2;
/// dnsperf clients (sockets) and outstanding queries, the same for both.
pub const CLIENTS: usize = 4;
pub const OUTSTANDING: usize = 100;

const BASE: &str = "198.18.57";
const UNBOUND: &str = "198.18.57.53";
const TUN: &str = "tsbenchdns0";

/// The questions: every fixture name answered over UDP without a dead
/// server in the way (big TXT needs TCP; half.example and dead.test have
/// a silent nameserver; short.alpha.test. expires in 2 s).
pub const NAMES: &[(&str, RecordType)] = &[
    ("www.alpha.test.", RecordType::A),
    ("mail.alpha.test.", RecordType::MX),
    ("nodata.alpha.test.", RecordType::A),
    ("x.y.z.alpha.test.", RecordType::A),
    ("chain.alpha.test.", RecordType::A),
    ("dangling.alpha.test.", RecordType::A),
    ("missing.alpha.test.", RecordType::A),
    ("nowhere.test.", RecordType::A),
    ("host.gamma.test.", RecordType::A),
    ("host.beta.example.", RecordType::A),
    ("final.alpha.test.", RecordType::A),
    ("ns1.nic.example.", RecordType::A),
];

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct DnsParams {
    /// dnsperf run time per resolver.
    pub qps_time: Duration,
    /// Cold-cache passes over [`NAMES`].
    pub cold_rounds: usize,
}

impl DnsParams {
    pub fn full() -> DnsParams {
        DnsParams {
            qps_time: Duration::from_secs(10),
            cold_rounds: 5,
        }
    }
    pub fn quick() -> DnsParams {
        DnsParams {
            qps_time: Duration::from_secs(2),
            cold_rounds: 1,
        }
    }
}

/// One resolver's figures.
#[derive(Clone, Debug, Default)]
pub struct Side {
    /// Cached answers per second (dnsperf "Queries per second").
    pub qps: f64,
    /// Queries dnsperf saw no answer to.
    pub lost: u64,
    pub cold_median_ms: f64,
    pub cold_p90_ms: f64,
    /// Cold queries timed.
    pub cold_samples: usize,
}

/// The DNS section's result.
#[derive(Clone, Debug, Default)]
pub struct DnsBench {
    pub ours: Side,
    pub unbound: Side,
    pub params: Option<DnsParams>,
}

impl DnsBench {
    pub fn qps_ratio(&self) -> f64 {
        self.ours.qps / self.unbound.qps
    }
    pub fn cold_median_ratio(&self) -> f64 {
        self.ours.cold_median_ms / self.unbound.cold_median_ms
    }
    pub fn cold_p90_ratio(&self) -> f64 {
        self.ours.cold_p90_ms / self.unbound.cold_p90_ms
    }

    /// One progress line.
    pub fn summary(&self) -> String {
        format!(
            "cached {:.0} vs {:.0} q/s ({:.2}×), cold median {:.2} vs {:.2} ms ({:.2}×)",
            self.ours.qps,
            self.unbound.qps,
            self.qps_ratio(),
            self.ours.cold_median_ms,
            self.unbound.cold_median_ms,
            self.cold_median_ratio()
        )
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_ok(cmd: &mut Command, what: &str) -> io::Result<String> {
    let out = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The hierarchy and Unbound, stopped (and their files removed) on drop.
struct Servers {
    run: PathBuf,
    unbound_conf: PathBuf,
    /// Stops the servers and removes `run` if the bench is interrupted.
    on_interrupt: Option<super::interrupt::OnInterrupt>,
}

/// Stop the hierarchy and Unbound, remove their files.
fn stop_servers(run: &Path) {
    let _ = Command::new(repo().join("scripts/dns-hierarchy.sh"))
        .arg("stop")
        .arg(run)
        .status();
    let _ = std::fs::remove_dir_all(run);
}

impl Servers {
    fn start() -> io::Result<Servers> {
        let run = std::env::temp_dir().join(format!("tunstack-bench-dns-{}", std::process::id()));
        let script = repo().join("scripts/dns-hierarchy.sh");
        // Made before anything starts, so that a start cut short (an
        // error, or a signal) stops what it had started too.
        let on_interrupt = {
            let run = run.clone();
            Some(super::interrupt::on_interrupt(move || stop_servers(&run)))
        };
        let s = Servers {
            unbound_conf: run.join("unbound-bench.conf"),
            run,
            on_interrupt,
        };
        run_ok(
            Command::new(&script)
                .arg("start")
                .arg(&s.run)
                .args(["--base", BASE, "--no-unbound"]),
            "scripts/dns-hierarchy.sh start",
        )?;
        std::fs::write(&s.unbound_conf, unbound_conf(&s.run))?;
        run_ok(
            Command::new("unbound").arg("-c").arg(&s.unbound_conf),
            "start unbound",
        )?;
        let server: SocketAddr = format!("{UNBOUND}:53").parse().expect("address");
        let until = Instant::now() + Duration::from_secs(10);
        while query(
            server,
            &Name::root(),
            RecordType::NS,
            Duration::from_millis(200),
        )
        .is_err()
        {
            if Instant::now() > until {
                return Err(io::Error::other("unbound did not come up"));
            }
        }
        Ok(s)
    }

    fn hints(&self) -> io::Result<RootHints> {
        RootHints::from_file(&self.run.join("fix/root.hints"))
            .map_err(|e| io::Error::other(format!("root hints: {e:?}")))
    }

    fn unbound_control(&self, args: &[&str]) -> io::Result<()> {
        run_ok(
            Command::new("unbound-control")
                .arg("-c")
                .arg(&self.unbound_conf)
                .args(args),
            "unbound-control",
        )
        .map(|_| ())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.on_interrupt.take();
        stop_servers(&self.run);
    }
}

/// Unbound for the benchmark: see the module documentation.
fn unbound_conf(run: &Path) -> String {
    let r = run.display();
    format!(
        "server:
    interface: {UNBOUND}
    port: 53
    do-ip6: no
    username: \"\"
    chroot: \"\"
    directory: \"{r}\"
    pidfile: \"{r}/unbound.pid\"
    logfile: \"{r}/unbound.log\"
    use-syslog: no
    verbosity: 0
    root-hints: \"{r}/fix/root.hints\"
    access-control: 0.0.0.0/0 allow
    do-not-query-localhost: no
    module-config: \"iterator\"
    qname-minimisation: yes
    harden-glue: yes
    edns-buffer-size: 1232
    minimal-responses: yes
    num-threads: {UNBOUND_THREADS}
    so-reuseport: yes
    msg-cache-size: 64m
    rrset-cache-size: 128m
    prefetch: no
    serve-expired: no
    local-zone: \"test.\" nodefault
remote-control:
    control-enable: yes
    control-interface: \"{r}/unbound.ctl\"
    control-use-cert: no
"
    )
}

/// Ask `server` one recursive question from a kernel socket; the rcode and
/// the number of answer records, or an error on timeout.
pub fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    timeout: Duration,
) -> io::Result<(ResponseCode, usize)> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(timeout))?;
    let id = Rng::from_os().next_u32() as u16;
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(name.clone(), rtype));
    sock.send(&m.to_vec().map_err(io::Error::other)?)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf)?;
        if let Ok(r) = Message::from_vec(&buf[..n]) {
            if r.id() == id {
                return Ok((r.response_code(), r.answers().len()));
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Run dnsperf against `server` for `secs`: (queries per second, lost).
fn dnsperf(server: &str, datafile: &Path, time: Duration) -> io::Result<(f64, u64)> {
    let out = run_ok(
        Command::new("dnsperf")
            .args(["-s", server, "-d"])
            .arg(datafile)
            .args(["-l", &time.as_secs().to_string()])
            .args(["-c", &CLIENTS.to_string()])
            .args(["-q", &OUTSTANDING.to_string()])
            .args(["-t", "2"]),
        "dnsperf (scripts/install-deps.sh installs it)",
    )?;
    let field = |key: &str| -> Option<String> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.split_whitespace().next().map(String::from))
    };
    let qps = field("Queries per second:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no qps in dnsperf output:\n{out}")))?;
    let lost = field("Queries lost:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((qps, lost))
}

/// Everything, in a namespace of its own.
pub fn run(p: DnsParams) -> io::Result<DnsBench> {
    netns::in_new_netns(move || bench_here(p))?
}

fn bench_here(p: DnsParams) -> io::Result<DnsBench> {
    netns::run("ip", &["link", "set", "lo", "up"])?;
    let servers = Servers::start()?;
    let opts = UpOptions {
        tun: TUN.into(),
        ..UpOptions::default()
    };
    let up = up::bring_up(&opts)?;
    let ours: SocketAddr = SocketAddr::new(opts.addr.into(), 53);
    let unbound: SocketAddr = format!("{UNBOUND}:53").parse().expect("address");
    let resolver = SharedResolver::new(servers.hints()?, ResolverConfig::default(), Rng::from_os());
    let stats = ServerStats::default();
    let stop = AtomicBool::new(false);
    let names: Vec<(Name, RecordType)> = NAMES
        .iter()
        .map(|(n, t)| (Name::from_ascii(n).expect("fixture name"), *t))
        .collect();
    let datafile = servers.run.join("queries.txt");
    let mut data = String::new();
    for (n, t) in NAMES {
        let _ = writeln!(data, "{n} {t}");
    }
    std::fs::write(&datafile, data)?;
    std::thread::scope(|s| {
        let (net, resolver_r, stats_r, stop_r) = (&up.net, &resolver, &stats, &stop);
        s.spawn(move || server::serve(net, 53, resolver_r, stats_r, stop_r));
        let r = (|| -> io::Result<DnsBench> {
            let patience = Duration::from_secs(5);
            // `serve` binds port 53 on its own thread: until it has, the
            // stack answers ICMP port unreachable (ConnectionRefused).
            let until = Instant::now() + Duration::from_secs(10);
            while let Err(e) = query(ours, &names[0].0, names[0].1, patience) {
                if e.kind() != io::ErrorKind::ConnectionRefused || Instant::now() > until {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Prime both caches; both must give the same rcodes.
            for (n, t) in &names {
                let a = query(ours, n, *t, patience)?;
                let b = query(unbound, n, *t, patience)?;
                if a != b {
                    return Err(io::Error::other(format!(
                        "{n} {t}: ours {a:?}, Unbound {b:?}"
                    )));
                }
            }
            let mut r = DnsBench {
                params: Some(p),
                ..DnsBench::default()
            };
            (r.ours.qps, r.ours.lost) = dnsperf(&ours.ip().to_string(), &datafile, p.qps_time)?;
            (r.unbound.qps, r.unbound.lost) =
                dnsperf(&unbound.ip().to_string(), &datafile, p.qps_time)?;
            // Cold: flush both, time one question each (alternating who goes first).
            let (mut mine, mut theirs) = (Vec::new(), Vec::new());
            for round in 0..p.cold_rounds {
                for (i, (n, t)) in names.iter().enumerate() {
                    resolver
                        .ctx
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .cache
                        .clear();
                    servers.unbound_control(&["flush_zone", "."])?;
                    servers.unbound_control(&["flush_negative"])?;
                    let time = |server| -> io::Result<f64> {
                        let t0 = Instant::now();
                        query(server, n, *t, patience)?;
                        Ok(t0.elapsed().as_secs_f64() * 1e3)
                    };
                    if (round + i) % 2 == 0 {
                        mine.push(time(ours)?);
                        theirs.push(time(unbound)?);
                    } else {
                        theirs.push(time(unbound)?);
                        mine.push(time(ours)?);
                    }
                }
            }
            for (side, v) in [(&mut r.ours, &mut mine), (&mut r.unbound, &mut theirs)] {
                v.sort_by(f64::total_cmp);
                side.cold_median_ms = percentile(v, 0.5);
                side.cold_p90_ms = percentile(v, 0.9);
                side.cold_samples = v.len();
            }
            Ok(r)
        })();
        stop.store(true, Ordering::Relaxed);
        r
    })
}

/// The DNS rows of the bench table (Markdown).
pub fn table(r: &Option<Result<DnsBench, String>>) -> String {
    let mut t = String::new();
    let Some(r) = r else {
        return t;
    };
    let _ = writeln!(
        t,
        "\n| DNS, private hierarchy (NSD) in one namespace | tunstack up --dns | Unbound | ours / Unbound |"
    );
    let _ = writeln!(t, "| --- | ---: | ---: | ---: |");
    match r {
        Err(_) => {
            let _ = writeln!(t, "| DNS | error | error | - |");
        }
        Ok(b) => {
            let p = b.params.unwrap_or_else(DnsParams::quick);
            let _ = writeln!(
                t,
                "| cached queries/s (dnsperf -c {CLIENTS} -q {OUTSTANDING}, {} s, {} names) | {:.0} | {:.0} | {:.2} |",
                p.qps_time.as_secs(),
                NAMES.len(),
                b.ours.qps,
                b.unbound.qps,
                b.qps_ratio()
            );
            let _ = writeln!(
                t,
                "| cold-cache resolution, median ms ({} questions) | {:.2} | {:.2} | {:.2} |",
                b.ours.cold_samples,
                b.ours.cold_median_ms,
                b.unbound.cold_median_ms,
                b.cold_median_ratio()
            );
            let _ = writeln!(
                t,
                "| cold-cache resolution, p90 ms | {:.2} | {:.2} | {:.2} |",
                b.ours.cold_p90_ms,
                b.unbound.cold_p90_ms,
                b.cold_p90_ratio()
            );
            let _ = writeln!(
                t,
                "\nUnbound: iterator only, num-threads {UNBOUND_THREADS}, QNAME minimisation, EDNS 1232, no prefetch; cold = both caches flushed before each question (RTT tables kept), both then prime the root NS set (RFC 8109)."
            );
        }
    }
    t
}

/// Flat metrics for the JSON.
pub fn metrics(r: &Option<Result<DnsBench, String>>) -> Vec<(String, f64, &'static str)> {
    let mut m = Vec::new();
    if let Some(Ok(b)) = r {
        for (who, s) in [("ours", &b.ours), ("unbound", &b.unbound)] {
            m.push((format!("dns.{who}.cached_qps"), s.qps, "1/s"));
            m.push((format!("dns.{who}.cached_lost"), s.lost as f64, "queries"));
            m.push((format!("dns.{who}.cold_median_ms"), s.cold_median_ms, "ms"));
            m.push((format!("dns.{who}.cold_p90_ms"), s.cold_p90_ms, "ms"));
        }
        m.push(("ratio.dns.cached_qps".into(), b.qps_ratio(), "ratio"));
        m.push((
            "ratio.dns.cold_median".into(),
            b.cold_median_ratio(),
            "ratio",
        ));
        m.push(("ratio.dns.cold_p90".into(), b.cold_p90_ratio(), "ratio"));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_from_the_sorted_samples() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 0.5), 6.0);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn ratios_are_ours_over_unbound() {
        let b = DnsBench {
            ours: Side {
                qps: 50.0,
                cold_median_ms: 3.0,
                cold_p90_ms: 4.0,
                ..Side::default()
            },
            unbound: Side {
                qps: 100.0,
                cold_median_ms: 2.0,
                cold_p90_ms: 8.0,
                ..Side::default()
            },
            params: None,
        };
        assert_eq!(b.qps_ratio(), 0.5);
        assert_eq!(b.cold_median_ratio(), 1.5);
        assert_eq!(b.cold_p90_ratio(), 0.5);
        let t = table(&Some(Ok(b.clone())));
        assert!(t.contains("| 50 | 100 | 0.50 |"), "{t}");
        let m = metrics(&Some(Ok(b)));
        assert!(m
            .iter()
            .any(|(k, v, _)| k == "ratio.dns.cached_qps" && *v == 0.5));
    }

    #[test]
    fn unbound_config_has_no_prefetch_and_the_stated_threads() {
        let c = unbound_conf(Path::new("/tmp/x"));
        assert!(c.contains("prefetch: no"));
        assert!(c.contains(&format!("num-threads: {UNBOUND_THREADS}")));
        assert!(c.contains("module-config: \"iterator\""));
    }
}
