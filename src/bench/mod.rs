//! `tunstack bench`: throughput, latency, connection rate, loss goodput, CPU
//! and memory of tunstack, side by side with smoltcp and with the kernel's
//! own TCP over veth, measured in one run inside namespaces made here.
//!
//! Each measurement is a library function returning a small result struct
//! ([`tunstack::bulk`], [`smol::bulk`], [`kernel::veth_bulk`],
//! [`tunstack::latency`], [`tunstack::conn_rate`], [`tunstack::idle_memory`]);
//! [`run`] calls them all and [`Report`] prints the table and the JSON.
//!
//! Loss is injected the same way for every system: nftables rules
//! `numgen random mod 100 < N drop` on the kernel side of the device (TUN or
//! veth), in both directions.

pub mod common;
pub mod dns;
pub mod env;
pub mod interrupt;
pub mod kernel;
pub mod kv;
#[cfg(feature = "smoltcp-bench")]
pub mod smol;
pub mod tunstack;

pub use common::{Bulk, BulkParams, ConnRate, Dir, IdleMemory, Latency};

use std::fmt::Write as _;
use std::io;
use std::time::{Duration, Instant};

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    /// Bytes per clean bulk transfer.
    pub volume: u64,
    /// Least time of one clean bulk transfer: it goes on past `volume`
    /// until then (see [`common::transfer_over`]).
    pub min_time: Duration,
    /// Upper bound on one clean bulk transfer.
    pub max_time: Duration,
    /// Runs per clean bulk figure (the median is reported).
    pub reps: usize,
    /// Duration of each lossy transfer (goodput = bytes delivered / time).
    pub loss_time: Duration,
    /// Ping-pong rounds for the latency figure.
    pub latency_rounds: usize,
    /// Connections and time bound for the connection-rate figure.
    pub conn_count: u64,
    pub conn_time: Duration,
    /// Idle connections held for the memory figure.
    pub idle_conns: u64,
}

impl BenchOptions {
    /// The full run: 1 GB transfers, median of 5. Of 3 until 2026-12-07:
    /// on this shared host one system's runs of a row spread by up to 2×
    /// within a minute (MTU 65000 receiving: 10.7, 37.3, 37.5 Gbit/s), and
    /// the median of three of one row moved by a third between back-to-back
    /// invocations (25.6 → 35.0 Gbit/s).
    pub fn full() -> BenchOptions {
        BenchOptions {
            volume: 1_000_000_000,
            min_time: Duration::from_secs(2),
            max_time: Duration::from_secs(20),
            reps: 5,
            loss_time: Duration::from_secs(8),
            latency_rounds: 20_000,
            conn_count: 50_000,
            conn_time: Duration::from_secs(3),
            idle_conns: 10_000,
        }
    }

    /// `--quick`: under a minute, for CI.
    pub fn quick() -> BenchOptions {
        BenchOptions {
            volume: 100_000_000,
            min_time: Duration::from_millis(500),
            max_time: Duration::from_secs(4),
            reps: 1,
            loss_time: Duration::from_secs(2),
            latency_rounds: 2_000,
            conn_count: 5_000,
            conn_time: Duration::from_secs(1),
            idle_conns: 1_000,
        }
    }
}

/// Goodput of one system in both directions.
#[derive(Clone, Debug, Default)]
pub struct Pair {
    pub s2k: Option<Result<Bulk, String>>,
    pub k2s: Option<Result<Bulk, String>>,
}

impl Pair {
    fn get(&self, d: Dir) -> Option<&Result<Bulk, String>> {
        match d {
            Dir::StackToKernel => self.s2k.as_ref(),
            Dir::KernelToStack => self.k2s.as_ref(),
        }
    }
    fn set(&mut self, d: Dir, r: Result<Bulk, String>) {
        match d {
            Dir::StackToKernel => self.s2k = Some(r),
            Dir::KernelToStack => self.k2s = Some(r),
        }
    }
    fn gbps(&self, d: Dir) -> Option<f64> {
        self.get(d)?.as_ref().ok().map(Bulk::gbps)
    }
    fn ok(&self, d: Dir) -> Option<&Bulk> {
        self.get(d)?.as_ref().ok()
    }
}

/// Everything one run measured (a failed measurement keeps its error).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub quick: bool,
    pub options: Option<BenchOptions>,
    pub tunstack_1500: Pair,
    pub smoltcp_1500: Pair,
    pub tunstack_65000: Pair,
    pub smoltcp_65000: Pair,
    /// tunstack with its side on the stack's thread (in place, no thread
    /// hand-off), as smoltcp's example runs: [`tunstack::bulk_in_loop`].
    pub tunstack_1500_loop: Pair,
    pub tunstack_65000_loop: Pair,
    /// tunstack at MTU 1500 with `up --offload` (vnet header, TSO/GSO).
    pub tunstack_1500_offload: Pair,
    pub tunstack_loss1: Pair,
    pub smoltcp_loss1: Pair,
    pub tunstack_loss5: Pair,
    pub smoltcp_loss5: Pair,
    pub veth_off: Option<Result<Bulk, String>>,
    pub veth_on: Option<Result<Bulk, String>>,
    pub veth_off_loss1: Option<Result<Bulk, String>>,
    pub veth_off_loss5: Option<Result<Bulk, String>>,
    pub latency: Option<Result<Latency, String>>,
    pub conn_rate: Option<Result<ConnRate, String>>,
    pub idle: Option<Result<IdleMemory, String>>,
    /// `idle_conns` held to one server, new connections/s meanwhile (issue 6 scale).
    pub scale: Option<Result<tunstack::Scale, String>>,
    /// Our resolver on the stack against Unbound ([`dns`]).
    pub dns: Option<Result<dns::DnsBench, String>>,
    /// Our KV store over the stack, over kernel TCP, and etcd ([`kv`]).
    pub kv: Option<Result<kv::KvBench, String>>,
    pub seconds: f64,
    /// CPUs, CPU model and kernel of the machine the run was made on.
    pub machine: String,
    /// How many CPUs the machine has (for the userspace ceiling).
    pub cpus: usize,
}

/// "N CPUs, MODEL, Linux RELEASE" from /proc and uname.
pub fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    format!("{cpus} CPUs, {model}, Linux {kernel}")
}

/// Prints progress lines on stderr: `[i/n] what ... result (time)`.
struct Progress {
    i: usize,
    n: usize,
    start: Instant,
    /// `TUNSTACK_BENCH_ROWS=a,b`: run only the steps whose progress name
    /// contains one of these (for profiling one row; the others are
    /// reported as skipped, never as figures). So no progress name has a
    /// comma: each can be picked alone.
    rows: Option<Vec<String>>,
}

/// What a step that `TUNSTACK_BENCH_ROWS` leaves out prints and reports.
const SKIPPED: &str = "skipped (TUNSTACK_BENCH_ROWS)";

impl Progress {
    /// Whether `TUNSTACK_BENCH_ROWS` (if set) picks the step `what`.
    fn wanted(&self, what: &str) -> bool {
        self.rows
            .as_ref()
            .is_none_or(|rows| rows.iter().any(|r| what.contains(r.as_str())))
    }

    fn step<T>(
        &mut self,
        what: &str,
        f: impl FnOnce() -> io::Result<T>,
        show: impl Fn(&T) -> String,
    ) -> Result<T, String> {
        self.i += 1;
        eprint!("[{:>2}/{}] {what} ... ", self.i, self.n);
        if !self.wanted(what) {
            eprintln!("{SKIPPED}");
            return Err(SKIPPED.into());
        }
        let t = Instant::now();
        let r = f().map_err(|e| e.to_string());
        match &r {
            Ok(v) => eprintln!(
                "{} ({:.1} s, {:.0} s total)",
                show(v),
                t.elapsed().as_secs_f64(),
                self.start.elapsed().as_secs_f64()
            ),
            Err(e) => eprintln!("FAILED: {e}"),
        }
        r
    }

    /// Bulk measurements run in turn ([`common::median_bulks_in_turn`]),
    /// one progress row each, printed as the group ends. Rows that
    /// `TUNSTACK_BENCH_ROWS` leaves out are skipped and not run.
    fn steps_in_turn(
        &mut self,
        reps: usize,
        steps: Vec<(String, common::BulkRun<'_>)>,
    ) -> Vec<Result<Bulk, String>> {
        let (whats, runs): (Vec<String>, Vec<_>) = steps.into_iter().unzip();
        let picked: Vec<bool> = whats.iter().map(|w| self.wanted(w)).collect();
        let names: Vec<&str> = whats
            .iter()
            .zip(&picked)
            .filter(|(_, &p)| p)
            .map(|(w, _)| w.as_str())
            .collect();
        if !names.is_empty() {
            eprintln!("      in turn, {reps} runs each: {}", names.join(" | "));
        }
        let t = Instant::now();
        let mut results = common::median_bulks_in_turn(
            reps,
            runs.into_iter()
                .zip(&picked)
                .filter(|(_, &p)| p)
                .map(|(f, _)| f)
                .collect(),
        )
        .into_iter();
        let secs = t.elapsed().as_secs_f64();
        whats
            .iter()
            .zip(picked)
            .map(|(what, p)| {
                self.i += 1;
                eprint!("[{:>2}/{}] {what} ... ", self.i, self.n);
                if !p {
                    eprintln!("{SKIPPED}");
                    return Err(SKIPPED.into());
                }
                let r = results
                    .next()
                    .expect("one result per picked run")
                    .map_err(|e| e.to_string());
                match &r {
                    Ok(b) => eprintln!(
                        "{} ({secs:.1} s for the group, {:.0} s total)",
                        show_bulk(b),
                        self.start.elapsed().as_secs_f64()
                    ),
                    Err(e) => eprintln!("FAILED: {e}"),
                }
                r
            })
            .collect()
    }
}

fn show_bulk(b: &Bulk) -> String {
    format!(
        "{:.2} Gbit/s ({} MB in {:.2} s)",
        b.gbps(),
        b.bytes / 1_000_000,
        b.secs
    )
}

/// The sections of the run: `tcp` (bulk, loss, latency, connections, memory), `dns`, `kv`.
pub const SECTIONS: &[&str] = &["tcp", "dns", "kv"];

/// Run every measurement once (clean bulk figures: median of `reps`).
pub fn run(o: &BenchOptions, quick: bool) -> Report {
    run_sections(o, quick, SECTIONS)
}

/// Run the measurements of the named [`SECTIONS`] only.
pub fn run_sections(o: &BenchOptions, quick: bool, sections: &[&str]) -> Report {
    let want = |s: &str| sections.contains(&s);
    let mut r = Report {
        quick,
        options: Some(*o),
        machine: machine_description(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        ..Report::default()
    };
    let smol = cfg!(feature = "smoltcp-bench");
    let n = if want("tcp") {
        4 * 2 * if smol { 2 } else { 1 } + 4 + 2 + 4 + 3 + 1
    } else {
        0
    } + usize::from(want("dns"))
        + usize::from(want("kv"));
    let mut pg = Progress {
        i: 0,
        n,
        start: Instant::now(),
        rows: std::env::var("TUNSTACK_BENCH_ROWS")
            .ok()
            .map(|v| v.split(',').map(str::to_string).collect()),
    };
    if want("tcp") {
        tcp_section(o, &mut r, &mut pg);
    }
    if want("dns") {
        let dp = if quick {
            dns::DnsParams::quick()
        } else {
            dns::DnsParams::full()
        };
        r.dns = Some(pg.step(
            "DNS: tunstack up --dns vs Unbound (dnsperf cached; cold resolution)",
            || dns::run(dp),
            dns::DnsBench::summary,
        ));
    }
    if want("kv") {
        let kp = if quick {
            kv::KvParams::quick()
        } else {
            kv::KvParams::full()
        };
        r.kv = Some(pg.step(
            "KV: ours over the stack vs over kernel TCP vs etcd (writes; failover; reads)",
            || kv::run(kp),
            kv::KvBench::summary,
        ));
    }
    r.seconds = pg.start.elapsed().as_secs_f64();
    r
}

fn tcp_section(o: &BenchOptions, r: &mut Report, pg: &mut Progress) {
    let dirs = [Dir::StackToKernel, Dir::KernelToStack];
    let clean = |mtu, dir| BulkParams {
        mtu,
        dir,
        loss_percent: 0,
        volume: o.volume,
        min_time: o.min_time,
        max_time: o.max_time,
    };
    let lossy = |loss_percent, dir| BulkParams {
        mtu: 1500,
        dir,
        loss_percent,
        volume: u64::MAX,
        min_time: Duration::ZERO,
        max_time: o.loss_time,
    };
    for (mtu, ts, tl, sm) in [
        (
            1500,
            &mut r.tunstack_1500,
            &mut r.tunstack_1500_loop,
            &mut r.smoltcp_1500,
        ),
        (
            65000,
            &mut r.tunstack_65000,
            &mut r.tunstack_65000_loop,
            &mut r.smoltcp_65000,
        ),
    ] {
        for d in dirs {
            let p = clean(mtu, d);
            let mut steps: Vec<(String, common::BulkRun<'_>)> = vec![
                (
                    format!("tunstack TUN MTU {mtu} {}", d.label()),
                    Box::new(move || tunstack::bulk(p)),
                ),
                (
                    format!("tunstack TUN MTU {mtu} in-loop {}", d.label()),
                    Box::new(move || tunstack::bulk_in_loop(p)),
                ),
            ];
            #[cfg(feature = "smoltcp-bench")]
            steps.push((
                format!("smoltcp  TUN MTU {mtu} {}", d.label()),
                Box::new(move || smol::bulk(p)),
            ));
            let mut res = pg.steps_in_turn(o.reps, steps).into_iter();
            let mut next = || res.next().expect("a result per step");
            ts.set(d, next());
            tl.set(d, next());
            #[cfg(feature = "smoltcp-bench")]
            sm.set(d, next());
            #[cfg(not(feature = "smoltcp-bench"))]
            let _ = &sm;
        }
    }
    let veth = |offloads, loss_percent: u32| kernel::VethParams {
        offloads,
        loss_percent,
        volume: if loss_percent > 0 { u64::MAX } else { o.volume },
        min_time: if loss_percent > 0 {
            Duration::ZERO
        } else {
            o.min_time
        },
        max_time: if loss_percent > 0 {
            o.loss_time
        } else {
            o.max_time
        },
    };
    // The offload rows in turn with the kernel's veth with offloads on,
    // the figure they are held against.
    {
        let (s2k, k2s) = (
            clean(1500, Dir::StackToKernel),
            clean(1500, Dir::KernelToStack),
        );
        let mut res = pg
            .steps_in_turn(
                o.reps,
                vec![
                    (
                        format!("tunstack TUN MTU 1500 offload {}", s2k.dir.label()),
                        Box::new(move || tunstack::bulk_offload(s2k)),
                    ),
                    (
                        format!("tunstack TUN MTU 1500 offload {}", k2s.dir.label()),
                        Box::new(move || tunstack::bulk_offload(k2s)),
                    ),
                    (
                        "kernel TCP over veth offloads on".into(),
                        Box::new(move || kernel::veth_bulk(veth(true, 0))),
                    ),
                ],
            )
            .into_iter();
        let mut next = || res.next().expect("a result per step");
        r.tunstack_1500_offload.set(Dir::StackToKernel, next());
        r.tunstack_1500_offload.set(Dir::KernelToStack, next());
        r.veth_on = Some(next());
    }
    for (loss, ts, sm) in [
        (1, &mut r.tunstack_loss1, &mut r.smoltcp_loss1),
        (5, &mut r.tunstack_loss5, &mut r.smoltcp_loss5),
    ] {
        for d in dirs {
            let p = lossy(loss, d);
            ts.set(
                d,
                pg.step(
                    &format!("tunstack MTU 1500 {loss}% loss {}", d.label()),
                    || tunstack::bulk(p),
                    show_bulk,
                ),
            );
            #[cfg(feature = "smoltcp-bench")]
            sm.set(
                d,
                pg.step(
                    &format!("smoltcp  MTU 1500 {loss}% loss {}", d.label()),
                    || smol::bulk(p),
                    show_bulk,
                ),
            );
            #[cfg(not(feature = "smoltcp-bench"))]
            let _ = &sm;
        }
    }
    r.veth_off = Some(pg.step(
        "kernel TCP over veth offloads off",
        || common::median_bulk(o.reps, || kernel::veth_bulk(veth(false, 0))),
        show_bulk,
    ));
    r.veth_off_loss1 = Some(pg.step(
        "kernel TCP over veth offloads off 1% loss",
        || kernel::veth_bulk(veth(false, 1)),
        show_bulk,
    ));
    r.veth_off_loss5 = Some(pg.step(
        "kernel TCP over veth offloads off 5% loss",
        || kernel::veth_bulk(veth(false, 5)),
        show_bulk,
    ));
    r.latency = Some(pg.step(
        "tunstack 64-byte ping-pong latency",
        || tunstack::latency(o.latency_rounds, 64),
        |l| format!("p50 {:.1} µs, p99 {:.1} µs", l.p50_us, l.p99_us),
    ));
    r.conn_rate = Some(pg.step(
        "tunstack new connections per second",
        || tunstack::conn_rate(o.conn_count, o.conn_time),
        |c| format!("{:.0}/s ({} in {:.2} s)", c.per_sec(), c.conns, c.secs),
    ));
    r.idle = Some(pg.step(
        &format!("tunstack memory per idle connection ({})", o.idle_conns),
        || tunstack::idle_memory(o.idle_conns),
        |m| {
            format!(
                "{:.0} bytes/connection allocated, {:.0} resident",
                m.bytes_per_conn(),
                m.resident_bytes_per_conn()
            )
        },
    ));
    r.scale = Some(pg.step(
        &format!("tunstack new connections/s with {} held", o.idle_conns),
        || tunstack::scale(o.idle_conns, o.conn_time),
        |s| {
            format!(
                "{:.0}/s, {:.0} bytes/idle connection allocated, loop CPU {} µs/connection",
                s.rate.per_sec(),
                s.bytes_per_conn(),
                s.loop_cpu_us_per_conn()
                    .map_or("-".into(), |c| format!("{c:.0}"))
            )
        },
    ));
}

/// What `tunstack bench [--quick] [--json FILE]` does: check for root, run
/// everything (progress on stderr), print the table on stdout, write JSON.
/// Fails if any measurement failed (after printing what did not).
pub fn cli(quick: bool, json: Option<&std::path::Path>, only: Option<&str>) -> Result<(), String> {
    let sections: Vec<&str> = match only {
        None => SECTIONS.to_vec(),
        Some(list) => {
            let v: Vec<&str> = list.split(',').map(str::trim).collect();
            if let Some(bad) = v.iter().find(|s| !SECTIONS.contains(s)) {
                return Err(format!(
                    "--only {bad:?}: not a section (one or more of {}, comma-separated)",
                    SECTIONS.join(", ")
                ));
            }
            v
        }
    };
    if !crate::netns::is_root() {
        return Err(
            "bench needs root: it creates network namespaces, TUN and veth devices and nftables rules (run it with sudo)"
                .into(),
        );
    }
    interrupt::install().map_err(|e| format!("cannot set up the signal handling thread: {e}"))?;
    let o = if quick {
        BenchOptions::quick()
    } else {
        BenchOptions::full()
    };
    let r = run_sections(&o, quick, &sections);
    println!("{}", r.table());
    eprintln!("bench finished in {:.0} s", r.seconds);
    if let Some(path) = json {
        std::fs::write(path, r.json())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let errors = r.errors();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} measurement(s) failed: {}",
            errors.len(),
            errors
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

fn fmt_bulk(b: Option<&Result<Bulk, String>>) -> String {
    match b {
        None => "-".into(),
        Some(Ok(b)) => format!("{:.3}", b.gbps()),
        Some(Err(_)) => "error".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".into(),
    }
}

fn ok_gbps(b: &Option<Result<Bulk, String>>) -> Option<f64> {
    b.as_ref()?.as_ref().ok().map(Bulk::gbps)
}

impl Report {
    /// The human-readable table (Markdown, so it can go into the README).
    pub fn table(&self) -> String {
        let mut t = String::new();
        if let Some(o) = &self.options {
            let _ = writeln!(
                t,
                "tunstack bench{}: clean transfers {} MB and at least {} s (median of {}; the runs of the systems a ratio compares taken in turn), lossy transfers {} s, loss = N% each way on arrival (the stack's packets: nftables `numgen random mod 100 < N drop` in the kernel's prerouting hook; the kernel's: the same seeded drop in each userspace stack's device; veth: the nftables rule at each end); the kernel's sockets run {} (this host's default: {})\n",
                if self.quick { " --quick" } else { "" },
                o.volume / 1_000_000,
                o.min_time.as_secs_f64(),
                o.reps,
                o.loss_time.as_secs(),
                env::KERNEL_CC,
                env::host_cc()
            );
        }
        if !self.machine.is_empty() {
            let _ = writeln!(t, "machine: {}\n", self.machine);
        }
        let _ = writeln!(
            t,
            "| bulk TCP goodput, Gbit/s | stack → kernel | kernel → stack |"
        );
        let _ = writeln!(t, "| --- | ---: | ---: |");
        let row = |t: &mut String, name: &str, p: &Pair| {
            let _ = writeln!(
                t,
                "| {name} | {} | {} |",
                fmt_bulk(p.s2k.as_ref()),
                fmt_bulk(p.k2s.as_ref())
            );
        };
        let ratio_row = |t: &mut String, name: &str, a: &Pair, b: &Pair| {
            let _ = writeln!(
                t,
                "| {name} | {} | {} |",
                ratio(a.gbps(Dir::StackToKernel), b.gbps(Dir::StackToKernel)),
                ratio(a.gbps(Dir::KernelToStack), b.gbps(Dir::KernelToStack))
            );
        };
        for (label, ts, sm, tl) in [
            (
                "TUN MTU 1500",
                &self.tunstack_1500,
                &self.smoltcp_1500,
                Some(&self.tunstack_1500_loop),
            ),
            (
                "TUN MTU 65000",
                &self.tunstack_65000,
                &self.smoltcp_65000,
                Some(&self.tunstack_65000_loop),
            ),
            (
                "MTU 1500, 1% loss each way",
                &self.tunstack_loss1,
                &self.smoltcp_loss1,
                None,
            ),
            (
                "MTU 1500, 5% loss each way",
                &self.tunstack_loss5,
                &self.smoltcp_loss5,
                None,
            ),
        ] {
            row(&mut t, &format!("tunstack, {label}"), ts);
            row(&mut t, &format!("smoltcp, {label}"), sm);
            ratio_row(&mut t, "  tunstack / smoltcp", ts, sm);
            if let Some(tl) = tl {
                row(&mut t, &format!("tunstack in-loop, {label}"), tl);
                ratio_row(&mut t, "  tunstack in-loop / smoltcp", tl, sm);
            }
            if label == "TUN MTU 65000" {
                row(
                    &mut t,
                    "tunstack, TUN MTU 1500, offload",
                    &self.tunstack_1500_offload,
                );
                ratio_row(
                    &mut t,
                    "  offload / tunstack MTU 65000",
                    &self.tunstack_1500_offload,
                    &self.tunstack_65000,
                );
            }
        }
        for (name, b) in [
            ("kernel TCP over veth, offloads off", &self.veth_off),
            ("kernel TCP over veth, offloads on", &self.veth_on),
            (
                "kernel TCP over veth, offloads off, 1% loss each way, on arrival",
                &self.veth_off_loss1,
            ),
            (
                "kernel TCP over veth, offloads off, 5% loss each way, on arrival",
                &self.veth_off_loss5,
            ),
        ] {
            let v = fmt_bulk(b.as_ref());
            let _ = writeln!(t, "| {name} | {v} | {v} |");
        }
        let vs = |t: &mut String, name: &str, p: &Pair, k: &Option<Result<Bulk, String>>| {
            let k = ok_gbps(k);
            let _ = writeln!(
                t,
                "| {name} | {} | {} |",
                ratio(p.gbps(Dir::StackToKernel), k),
                ratio(p.gbps(Dir::KernelToStack), k)
            );
        };
        vs(
            &mut t,
            "  tunstack MTU 1500 / veth offloads off",
            &self.tunstack_1500,
            &self.veth_off,
        );
        vs(
            &mut t,
            "  tunstack MTU 65000 / veth offloads on",
            &self.tunstack_65000,
            &self.veth_on,
        );
        vs(
            &mut t,
            "  tunstack MTU 1500 offload / veth offloads on",
            &self.tunstack_1500_offload,
            &self.veth_on,
        );
        // Under loss, like for like: every system loses each way on arrival.
        vs(
            &mut t,
            "  tunstack 1% loss / veth 1% loss",
            &self.tunstack_loss1,
            &self.veth_off_loss1,
        );
        vs(
            &mut t,
            "  tunstack 5% loss / veth 5% loss",
            &self.tunstack_loss5,
            &self.veth_off_loss5,
        );

        let _ = writeln!(t, "\n| other | figure |");
        let _ = writeln!(t, "| --- | ---: |");
        // CPU per GB of the stack's threads, and how much of it the kernel
        // spent (system calls: the TUN's reads and writes and the kernel's
        // TCP/IP inside them).
        let cpu = |p: &Pair, d: Dir| -> String {
            match p.get(d) {
                Some(Ok(b)) => {
                    let c = b
                        .cpu_secs_per_gb()
                        .map_or("-".into(), |c| format!("{c:.2}"));
                    match (b.kernel_share, b.machine_busy) {
                        (Some(k), Some(m)) => format!(
                            "{c} ({:.0}% kernel; machine {:.0}% busy)",
                            k * 100.0,
                            m * 100.0
                        ),
                        (Some(k), None) => format!("{c} ({:.0}% kernel)", k * 100.0),
                        _ => c,
                    }
                }
                _ => "-".into(),
            }
        };
        for (name, p) in [
            ("tunstack", &self.tunstack_1500),
            ("smoltcp", &self.smoltcp_1500),
            ("tunstack MTU 65000", &self.tunstack_65000),
            ("smoltcp MTU 65000", &self.smoltcp_65000),
            ("tunstack in-loop", &self.tunstack_1500_loop),
            ("tunstack in-loop MTU 65000", &self.tunstack_65000_loop),
            ("tunstack MTU 1500 offload", &self.tunstack_1500_offload),
        ] {
            let _ = writeln!(
                t,
                "| {name} CPU s/GB, stack → kernel / kernel → stack | {} / {} |",
                cpu(p, Dir::StackToKernel),
                cpu(p, Dir::KernelToStack)
            );
        }
        let ceiling = |mtu, d| match self.userspace_ceiling(mtu, d) {
            Some((g, Some(r))) => format!("{g:.2} ({r:.2}× smoltcp)"),
            Some((g, None)) => format!("{g:.2}"),
            None => "-".into(),
        };
        for mtu in [1500, 65000] {
            let _ = writeln!(
                t,
                "| MTU {mtu}: ceiling of any userspace stack here, Gbit/s (its own code free, all CPUs busy, the least CPU per GB besides a stack's own code of this run's stacks), stack → kernel / kernel → stack | {} / {} |",
                ceiling(mtu, Dir::StackToKernel),
                ceiling(mtu, Dir::KernelToStack)
            );
        }
        match &self.latency {
            Some(Ok(l)) => {
                let _ = writeln!(
                    t,
                    "| 64-byte ping-pong kernel ↔ tunstack echo, p50 / p99 µs ({} rounds) | {:.1} / {:.1} |",
                    l.samples, l.p50_us, l.p99_us
                );
            }
            Some(Err(_)) => {
                let _ = writeln!(t, "| 64-byte ping-pong latency | error |");
            }
            None => {}
        }
        match &self.conn_rate {
            Some(Ok(c)) => {
                let _ = writeln!(
                    t,
                    "| new connections/s, kernel → tunstack (connect, 64-byte exchange, close) | {:.0} |",
                    c.per_sec()
                );
            }
            Some(Err(_)) => {
                let _ = writeln!(t, "| new connections/s | error |");
            }
            None => {}
        }
        match &self.idle {
            Some(Ok(m)) => {
                let _ = writeln!(
                    t,
                    "| memory per idle connection, bytes allocated / resident ({} held at once) | {:.0} / {:.0} |",
                    m.conns,
                    m.bytes_per_conn(),
                    m.resident_bytes_per_conn()
                );
            }
            Some(Err(_)) => {
                let _ = writeln!(t, "| memory per idle connection | error |");
            }
            None => {}
        }
        match &self.scale {
            Some(Ok(s)) => {
                let _ = writeln!(
                    t,
                    "| scale: {} idle connections to one server held; new connections/s meanwhile; heap bytes allocated per idle connection; loop CPU µs per new connection | {:.0}; {:.0}; {} |",
                    s.conns,
                    s.rate.per_sec(),
                    s.bytes_per_conn(),
                    s.loop_cpu_us_per_conn().map_or("-".into(), |c| format!("{c:.0}"))
                );
            }
            Some(Err(_)) => {
                let _ = writeln!(t, "| scale (idle connections held) | error |");
            }
            None => {}
        }
        t.push_str(&dns::table(&self.dns));
        t.push_str(&kv::table(&self.kv));
        let errors = self.errors();
        if !errors.is_empty() {
            let _ = writeln!(t, "\nerrors:");
            for (k, e) in errors {
                let _ = writeln!(t, "  {k}: {e}");
            }
        }
        t
    }

    /// The estimated ceiling of any userspace stack over a plain TUN at
    /// `mtu` ([`common::userspace_ceiling_gbps`] over this run's tunstack,
    /// in-loop and smoltcp rows), and that over smoltcp's figure.
    fn userspace_ceiling(&self, mtu: usize, d: Dir) -> Option<(f64, Option<f64>)> {
        let (ts, tl, sm) = match mtu {
            1500 => (
                &self.tunstack_1500,
                &self.tunstack_1500_loop,
                &self.smoltcp_1500,
            ),
            65000 => (
                &self.tunstack_65000,
                &self.tunstack_65000_loop,
                &self.smoltcp_65000,
            ),
            _ => return None,
        };
        let runs = [ts, tl, sm].into_iter().filter_map(|p| p.ok(d));
        let g = common::userspace_ceiling_gbps(runs, self.cpus)?;
        Some((g, sm.gbps(d).filter(|&s| s > 0.0).map(|s| g / s)))
    }

    fn bulk_entries(&self) -> Vec<(String, &Option<Result<Bulk, String>>)> {
        let mut v = Vec::new();
        for (name, p) in [
            ("tunstack.mtu1500", &self.tunstack_1500),
            ("smoltcp.mtu1500", &self.smoltcp_1500),
            ("tunstack.mtu65000", &self.tunstack_65000),
            ("smoltcp.mtu65000", &self.smoltcp_65000),
            ("tunstack.mtu1500_inloop", &self.tunstack_1500_loop),
            ("tunstack.mtu65000_inloop", &self.tunstack_65000_loop),
            ("tunstack.mtu1500_offload", &self.tunstack_1500_offload),
            ("tunstack.loss1", &self.tunstack_loss1),
            ("smoltcp.loss1", &self.smoltcp_loss1),
            ("tunstack.loss5", &self.tunstack_loss5),
            ("smoltcp.loss5", &self.smoltcp_loss5),
        ] {
            v.push((format!("{name}.s2k"), &p.s2k));
            v.push((format!("{name}.k2s"), &p.k2s));
        }
        v.push(("kernel_veth.offloads_off".into(), &self.veth_off));
        v.push(("kernel_veth.offloads_on".into(), &self.veth_on));
        v.push((
            "kernel_veth.offloads_off.loss1".into(),
            &self.veth_off_loss1,
        ));
        v.push((
            "kernel_veth.offloads_off.loss5".into(),
            &self.veth_off_loss5,
        ));
        v
    }

    /// Every failed measurement: (key, error).
    pub fn errors(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .bulk_entries()
            .into_iter()
            .filter_map(|(k, b)| match b {
                Some(Err(e)) => Some((k, e.clone())),
                _ => None,
            })
            .collect();
        if let Some(Err(e)) = &self.latency {
            out.push(("latency".into(), e.clone()));
        }
        if let Some(Err(e)) = &self.conn_rate {
            out.push(("conn_rate".into(), e.clone()));
        }
        if let Some(Err(e)) = &self.idle {
            out.push(("idle_memory".into(), e.clone()));
        }
        if let Some(Err(e)) = &self.scale {
            out.push(("scale".into(), e.clone()));
        }
        if let Some(Err(e)) = &self.dns {
            out.push(("dns".into(), e.clone()));
        }
        if let Some(Err(e)) = &self.kv {
            out.push(("kv".into(), e.clone()));
        }
        out
    }

    /// Flat metrics: (key, value, unit). Failed or skipped ones are absent.
    pub fn metrics(&self) -> Vec<(String, f64, &'static str)> {
        let mut m = Vec::new();
        for (k, b) in self.bulk_entries() {
            if let Some(Ok(b)) = b {
                m.push((format!("{k}.gbps"), b.gbps(), "Gbit/s"));
                m.push((format!("{k}.bytes"), b.bytes as f64, "bytes"));
                m.push((format!("{k}.secs"), b.secs, "s"));
                if let Some(c) = b.cpu_secs_per_gb() {
                    m.push((format!("{k}.cpu_secs_per_gb"), c, "s/GB"));
                }
                if let Some(s) = b.kernel_share {
                    m.push((format!("{k}.kernel_cpu_share"), s, "ratio"));
                }
                if let Some(s) = b.machine_busy {
                    m.push((format!("{k}.machine_busy"), s, "ratio"));
                }
            }
        }
        for d in [Dir::StackToKernel, Dir::KernelToStack] {
            for mtu in [1500, 65000] {
                if let Some((g, r)) = self.userspace_ceiling(mtu, d) {
                    let key = format!("ceiling.userspace_stack.mtu{mtu}.{}", d.key());
                    m.push((format!("{key}.gbps"), g, "Gbit/s"));
                    if let Some(r) = r {
                        m.push((format!("{key}.over_smoltcp"), r, "ratio"));
                    }
                }
            }
        }
        let mut ratio_metric = |key: &str, a: Option<f64>, b: Option<f64>| {
            if let (Some(a), Some(b)) = (a, b) {
                if b > 0.0 {
                    m.push((key.to_string(), a / b, "ratio"));
                }
            }
        };
        for d in [Dir::StackToKernel, Dir::KernelToStack] {
            let k = d.key();
            for (name, a, b) in [
                ("mtu1500", &self.tunstack_1500, &self.smoltcp_1500),
                ("mtu65000", &self.tunstack_65000, &self.smoltcp_65000),
                ("loss1", &self.tunstack_loss1, &self.smoltcp_loss1),
                ("loss5", &self.tunstack_loss5, &self.smoltcp_loss5),
            ] {
                ratio_metric(
                    &format!("ratio.tunstack_over_smoltcp.{name}.{k}"),
                    a.gbps(d),
                    b.gbps(d),
                );
            }
            for (name, a, b) in [
                ("mtu1500_over_veth_off", &self.tunstack_1500, &self.veth_off),
                ("mtu65000_over_veth_on", &self.tunstack_65000, &self.veth_on),
                (
                    "mtu1500_offload_over_veth_on",
                    &self.tunstack_1500_offload,
                    &self.veth_on,
                ),
                (
                    "loss1_over_veth_loss1",
                    &self.tunstack_loss1,
                    &self.veth_off_loss1,
                ),
                (
                    "loss5_over_veth_loss5",
                    &self.tunstack_loss5,
                    &self.veth_off_loss5,
                ),
            ] {
                ratio_metric(&format!("ratio.tunstack.{name}.{k}"), a.gbps(d), ok_gbps(b));
            }
        }
        if let Some(Ok(l)) = &self.latency {
            m.push(("latency.p50_us".into(), l.p50_us, "µs"));
            m.push(("latency.p99_us".into(), l.p99_us, "µs"));
        }
        if let Some(Ok(c)) = &self.conn_rate {
            m.push(("conn_rate.per_sec".into(), c.per_sec(), "1/s"));
        }
        if let Some(Ok(i)) = &self.idle {
            m.push(("idle.conns".into(), i.conns as f64, "connections"));
            m.push(("idle.bytes_per_conn".into(), i.bytes_per_conn(), "bytes"));
            m.push((
                "idle.resident_bytes_per_conn".into(),
                i.resident_bytes_per_conn(),
                "bytes",
            ));
        }
        if let Some(Ok(s)) = &self.scale {
            m.push(("scale.conns".into(), s.conns as f64, "connections"));
            m.push(("scale.conn_rate.per_sec".into(), s.rate.per_sec(), "1/s"));
            m.push(("scale.bytes_per_conn".into(), s.bytes_per_conn(), "bytes"));
            if let Some(c) = s.loop_cpu_us_per_conn() {
                m.push(("scale.loop_cpu_us_per_conn".into(), c, "µs"));
            }
        }
        m.extend(dns::metrics(&self.dns));
        m.extend(kv::metrics(&self.kv));
        m
    }

    /// The report as JSON: options, metrics (key → value), units, errors,
    /// and the Markdown table.
    pub fn json(&self) -> String {
        let mut j = String::from("{\n");
        let _ = writeln!(j, "  \"tool\": \"tunstack bench\",");
        let _ = writeln!(j, "  \"quick\": {},", self.quick);
        let _ = writeln!(j, "  \"seconds\": {},", json_num(self.seconds));
        let _ = writeln!(j, "  \"machine\": {},", json_str(&self.machine));
        if let Some(o) = &self.options {
            let _ = writeln!(
                j,
                "  \"options\": {{\"volume_bytes\": {}, \"min_time_s\": {}, \"max_time_s\": {}, \"reps\": {}, \"loss_time_s\": {}, \"latency_rounds\": {}, \"idle_conns\": {}}},",
                o.volume,
                o.min_time.as_secs_f64(),
                o.max_time.as_secs_f64(),
                o.reps,
                o.loss_time.as_secs_f64(),
                o.latency_rounds,
                o.idle_conns
            );
        }
        let metrics = self.metrics();
        j.push_str("  \"metrics\": {");
        for (i, (k, v, _)) in metrics.iter().enumerate() {
            let _ = write!(
                j,
                "{}\n    {}: {}",
                if i > 0 { "," } else { "" },
                json_str(k),
                json_num(*v)
            );
        }
        j.push_str("\n  },\n  \"units\": {");
        for (i, (k, _, u)) in metrics.iter().enumerate() {
            let _ = write!(
                j,
                "{}\n    {}: {}",
                if i > 0 { "," } else { "" },
                json_str(k),
                json_str(u)
            );
        }
        j.push_str("\n  },\n  \"errors\": {");
        for (i, (k, e)) in self.errors().iter().enumerate() {
            let _ = write!(
                j,
                "{}\n    {}: {}",
                if i > 0 { "," } else { "" },
                json_str(k),
                json_str(e)
            );
        }
        let _ = write!(j, "\n  }},\n  \"table\": {}\n}}\n", json_str(&self.table()));
        j
    }
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_description_names_cpus_and_kernel() {
        let m = machine_description();
        assert!(m.contains(" CPUs, ") && m.contains("Linux "), "{m}");
        assert!(!m.starts_with("0 CPUs"), "{m}");
    }

    #[test]
    fn json_strings_escape_quotes_newlines_and_controls() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(json_num(f64::NAN), "null");
        assert_eq!(json_num(1.5), "1.5");
    }

    #[test]
    fn ratios_and_metrics_come_from_the_same_run() {
        let b = |bytes| {
            Ok(Bulk {
                bytes,
                secs: 1.0,
                cpu_secs: Some(0.5),
                kernel_share: Some(0.8),
                machine_busy: Some(0.9),
            })
        };
        let r = Report {
            tunstack_1500: Pair {
                s2k: Some(b(3_000_000_000)),
                k2s: Some(Err("boom".into())),
            },
            smoltcp_1500: Pair {
                s2k: Some(b(1_000_000_000)),
                k2s: Some(b(1_000_000_000)),
            },
            cpus: 2,
            ..Report::default()
        };
        let m = r.metrics();
        let get = |k: &str| m.iter().find(|(n, _, _)| n == k).map(|x| x.1);
        assert_eq!(get("ratio.tunstack_over_smoltcp.mtu1500.s2k"), Some(3.0));
        assert_eq!(get("ratio.tunstack_over_smoltcp.mtu1500.k2s"), None);
        assert_eq!(get("tunstack.mtu1500.s2k.gbps"), Some(24.0));
        assert_eq!(get("smoltcp.mtu1500.k2s.kernel_cpu_share"), Some(0.8));
        // Each run: 2 CPUs 90% busy for 1 s (1.8 CPU s), the stack's own
        // code 0.5 · 0.2 = 0.1 s, so 1.7 CPU s besides it: per GB, 1.7 for
        // smoltcp's 1 GB, 1.7 / 3 for tunstack's 3 GB, the least.
        let c = get("ceiling.userspace_stack.mtu1500.s2k.gbps").unwrap();
        assert!((c - 2.0 / (1.7 / 3.0) * 8.0).abs() < 1e-9, "{c}");
        let over = get("ceiling.userspace_stack.mtu1500.s2k.over_smoltcp").unwrap();
        assert!(
            (over - c / 8.0).abs() < 1e-9,
            "smoltcp ran at 8 Gbit/s: {over}"
        );
        assert_eq!(get("ceiling.userspace_stack.mtu65000.s2k.gbps"), None);
        assert!(r.table().contains("3.00×"));
        assert!(r.table().contains("28.24 (3.53× smoltcp)"), "{}", r.table());
        assert!(
            r.table()
                .contains("| smoltcp CPU s/GB, stack → kernel / kernel → stack | 0.50 (80% kernel; machine 90% busy) / 0.50 (80% kernel; machine 90% busy) |"),
            "{}",
            r.table()
        );
        assert_eq!(
            r.errors(),
            vec![("tunstack.mtu1500.k2s".into(), "boom".into())]
        );
        assert!(r.json().contains("\"tunstack.mtu1500.k2s\": \"boom\""));
    }
}
