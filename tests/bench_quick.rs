//! The quick benchmark's core pieces, each run small: every measurement must
//! produce a positive, finite figure. Nothing here is timed against a bar
//! (figures depend on the machine); these catch a measurement that breaks.
//! Needs root (namespaces, TUN, veth, nftables); with CI=true a namespace
//! that cannot be made fails the test instead of skipping it.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tunstack::bench::{self, kernel, tunstack as ts, Bulk, BulkParams, Dir};
use tunstack::netns;

/// The idle-memory figure is the growth of this process's heap in use
/// (mallinfo2), which counts every thread. A test running beside it that
/// frees memory makes the growth look like zero (seen in CI: "idle.bytes_per_conn
/// = 0"). Tests that measure it hold this lock exclusively; every other test
/// holds it shared, so they still run in parallel with each other.
static HEAP: RwLock<()> = RwLock::new(());

fn heap_shared() -> RwLockReadGuard<'static, ()> {
    HEAP.read().unwrap_or_else(|e| e.into_inner())
}

fn heap_exclusive() -> RwLockWriteGuard<'static, ()> {
    HEAP.write().unwrap_or_else(|e| e.into_inner())
}

fn params(mtu: usize, dir: Dir, loss_percent: u32) -> BulkParams {
    BulkParams {
        mtu,
        dir,
        loss_percent,
        volume: 20_000_000,
        min_time: Duration::ZERO,
        max_time: Duration::from_secs(5),
    }
}

/// The stack threads' kernel share and the machine's load were measured,
/// and are fractions (the table's CPU split and ceiling come from them).
/// Both are counted in clock ticks (10 ms), so the transfer must last a
/// good many of them.
fn check_cpu_split(what: &str, b: Bulk) {
    let k = b.kernel_share.expect("kernel share measured");
    assert!(
        (0.0..=1.0).contains(&k) && k > 0.0,
        "{what}: kernel share {k}"
    );
    let m = b.machine_busy.expect("machine load measured");
    assert!(
        (0.0..=1.0).contains(&m) && m > 0.0,
        "{what}: machine busy {m}"
    );
}

fn check_bulk(what: &str, b: Bulk) {
    eprintln!("{what}: {:.3} Gbit/s, {b:?}", b.gbps());
    assert!(b.bytes > 0, "{what}: no bytes delivered: {b:?}");
    assert!(b.secs > 0.0 && b.secs.is_finite(), "{what}: {b:?}");
    assert!(b.gbps() > 0.0 && b.gbps().is_finite(), "{what}: {b:?}");
}

#[test]
fn tunstack_bulk_both_directions_and_mtus() {
    if !netns::require_root("tunstack_bulk_both_directions_and_mtus") {
        return;
    }
    let _heap = heap_shared();
    for mtu in [1500, 65000] {
        for dir in [Dir::StackToKernel, Dir::KernelToStack] {
            let b = ts::bulk(params(mtu, dir, 0)).expect("tunstack bulk transfer");
            check_bulk(&format!("tunstack MTU {mtu} {}", dir.label()), b);
            assert_eq!(b.bytes, 20_000_000, "a clean transfer delivers its volume");
            let cpu = b.cpu_secs_per_gb().expect("CPU measured");
            assert!(cpu > 0.0 && cpu.is_finite(), "CPU s/GB {cpu}");
        }
    }
}

#[test]
fn cpu_split_and_machine_load_over_a_transfer_of_half_a_second() {
    if !netns::require_root("cpu_split_and_machine_load_over_a_transfer_of_half_a_second") {
        return;
    }
    let _heap = heap_shared();
    let mut p = params(1500, Dir::StackToKernel, 0);
    p.min_time = Duration::from_millis(500);
    let b = ts::bulk(p).expect("tunstack bulk transfer");
    assert!(b.secs >= 0.45, "the floor held the transfer open: {b:?}");
    check_cpu_split("tunstack MTU 1500 stack→kernel", b);
    let b = ts::bulk_in_loop(p).expect("tunstack in-loop bulk transfer");
    check_cpu_split("tunstack in-loop MTU 1500 stack→kernel", b);
    #[cfg(feature = "smoltcp-bench")]
    check_cpu_split(
        "smoltcp MTU 1500 stack→kernel",
        bench::smol::bulk(p).expect("smoltcp bulk transfer"),
    );
}

#[test]
fn kernel_sockets_run_cubic_from_before_they_connect() {
    if !netns::require_root("kernel_sockets_run_cubic_from_before_they_connect") {
        return;
    }
    // On the loopback of a namespace of its own.
    let cc = netns::in_new_netns(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
        let addr = match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            a => panic!("{a}"),
        };
        let s = bench::env::kernel_connect_cc(addr, Duration::from_secs(5)).expect("connect");
        bench::env::kernel_cc_of(&s).unwrap()
    })
    .expect("a network namespace");
    assert_eq!(cc, bench::env::KERNEL_CC);
}

#[test]
fn tunstack_bulk_under_injected_loss() {
    if !netns::require_root("tunstack_bulk_under_injected_loss") {
        return;
    }
    let _heap = heap_shared();
    for dir in [Dir::StackToKernel, Dir::KernelToStack] {
        let mut p = params(1500, dir, 1);
        p.volume = 5_000_000;
        p.max_time = Duration::from_secs(3);
        check_bulk(
            &format!("tunstack 1% loss {}", dir.label()),
            ts::bulk(p).expect("tunstack lossy transfer"),
        );
    }
}

#[cfg(feature = "smoltcp-bench")]
#[test]
fn smoltcp_bulk_both_directions() {
    if !netns::require_root("smoltcp_bulk_both_directions") {
        return;
    }
    let _heap = heap_shared();
    for (mtu, loss) in [(1500, 0), (65000, 0), (1500, 1)] {
        for dir in [Dir::StackToKernel, Dir::KernelToStack] {
            let mut p = params(mtu, dir, loss);
            p.max_time = Duration::from_secs(3);
            let b = bench::smol::bulk(p).expect("smoltcp bulk transfer");
            check_bulk(
                &format!("smoltcp MTU {mtu} loss {loss}% {}", dir.label()),
                b,
            );
        }
    }
}

#[test]
fn kernel_over_veth_with_and_without_offloads() {
    if !netns::require_root("kernel_over_veth_with_and_without_offloads") {
        return;
    }
    let _heap = heap_shared();
    let mut settings = vec![(true, 0)];
    if bench::env::have_ethtool() {
        settings.extend([(false, 0), (false, 1)]);
    } else {
        // Tests do not skip silently in CI: there install-deps.sh installs it.
        assert!(
            !netns::in_ci(),
            "ethtool is missing (scripts/install-deps.sh installs it): the veth figures with offloads off and under loss need it"
        );
        eprintln!("ethtool missing: only the offloads-on veth figure is checked");
    }
    for (offloads, loss_percent) in settings {
        let b = kernel::veth_bulk(kernel::VethParams {
            offloads,
            loss_percent,
            volume: 50_000_000,
            min_time: Duration::ZERO,
            max_time: Duration::from_secs(3),
        })
        .expect("kernel over veth");
        check_bulk(&format!("veth offloads {offloads} loss {loss_percent}%"), b);
    }
}

#[test]
fn latency_connection_rate_and_idle_memory() {
    if !netns::require_root("latency_connection_rate_and_idle_memory") {
        return;
    }
    let _heap = heap_exclusive();
    let l = ts::latency(500, 64).expect("latency");
    eprintln!("{l:?}");
    assert_eq!(l.samples, 500);
    assert!(
        l.p50_us > 0.0 && l.p50_us.is_finite() && l.p99_us >= l.p50_us,
        "{l:?}"
    );

    let c = ts::conn_rate(300, Duration::from_secs(2)).expect("connection rate");
    eprintln!("{c:?} {:.0}/s", c.per_sec());
    assert!(
        c.conns > 0 && c.per_sec() > 0.0 && c.per_sec().is_finite(),
        "{c:?}"
    );

    let m = ts::idle_memory(200).expect("idle memory");
    eprintln!("{m:?} {:.0} bytes/conn", m.bytes_per_conn());
    assert_eq!(m.conns, 200);
    assert!(
        m.bytes_per_conn() > 0.0 && m.bytes_per_conn().is_finite(),
        "{m:?}"
    );
}

#[test]
fn report_of_a_tiny_run_has_every_core_figure() {
    if !netns::require_root("report_of_a_tiny_run_has_every_core_figure") {
        return;
    }
    let _heap = heap_exclusive();
    let o = bench::BenchOptions {
        volume: 10_000_000,
        min_time: Duration::from_millis(100),
        max_time: Duration::from_secs(3),
        reps: 1,
        loss_time: Duration::from_millis(500),
        latency_rounds: 200,
        conn_count: 100,
        conn_time: Duration::from_millis(500),
        idle_conns: 100,
    };
    // The KV section has its own small test below.
    let r = bench::run_sections(&o, true, &["tcp", "dns"]);
    let table = r.table();
    println!("{table}");
    let errors: Vec<_> = r
        .errors()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("kernel_veth.offloads_off") || bench::env::have_ethtool())
        .collect();
    assert!(errors.is_empty(), "failed measurements: {errors:?}");
    let m = r.metrics();
    for key in [
        "tunstack.mtu1500.s2k.gbps",
        "tunstack.mtu1500.k2s.gbps",
        "tunstack.mtu65000.s2k.gbps",
        "tunstack.mtu65000.k2s.gbps",
        "tunstack.mtu1500_inloop.s2k.gbps",
        "tunstack.mtu1500_inloop.k2s.gbps",
        "tunstack.mtu1500.s2k.cpu_secs_per_gb",
        "kernel_veth.offloads_on.gbps",
        "latency.p50_us",
        "conn_rate.per_sec",
        "idle.bytes_per_conn",
    ] {
        let v = m
            .iter()
            .find(|(k, _, _)| k == key)
            .unwrap_or_else(|| panic!("{key} missing from {m:?}"))
            .1;
        assert!(v > 0.0 && v.is_finite(), "{key} = {v}");
    }
    assert!(r.json().contains("\"tunstack.mtu1500.s2k.gbps\""));
}

#[test]
fn kv_section_measures_ours_over_stack_and_kernel_and_etcd() {
    if !netns::require_root("kv_section_measures_ours_over_stack_and_kernel_and_etcd") {
        return;
    }
    let _heap = heap_shared();
    let p = bench::kv::KvParams {
        clients: vec![4],
        load_time: Duration::from_millis(600),
        // Two rounds: the systems take turns, and the median picks one.
        rounds: 2,
        kills: 1,
        reads: 20,
        exe: Some(env!("CARGO_BIN_EXE_tunstack").into()),
    };
    let b = bench::kv::run(p).expect("the KV section runs");
    let table = bench::kv::table(&Some(Ok(b.clone())));
    println!("{table}");
    for (who, s) in [
        ("stack", &b.stack),
        ("kernel", &b.kernel),
        ("etcd", &b.etcd),
    ] {
        let l = s.load(4).unwrap_or_else(|| panic!("{who}: no load figure"));
        assert!(l.writes > 0 && l.per_sec().is_finite(), "{who}: {l:?}");
        assert!(l.p99_ms >= l.p50_ms && l.p50_ms > 0.0, "{who}: {l:?}");
        assert_eq!(s.failovers_ms.len(), 1, "{who}");
        let f = s.failovers_ms[0];
        assert!(f > 0.0 && f < 20_000.0, "{who}: failover {f} ms");
    }
    assert_eq!(
        b.reads.len(),
        6,
        "three levels from the leader and a follower"
    );
    assert!(b
        .reads
        .iter()
        .all(|r| r.samples == 20 && r.p99_us >= r.p50_us));
    assert!(b
        .stack_over_kernel(4)
        .is_some_and(|r| r > 0.0 && r.is_finite()));
}

/// Ctrl-C in the middle of a run: the bench stops the daemons it started
/// (NSD, Unbound: they would run on, holding their namespace), removes
/// their files and exits 130.
#[test]
fn an_interrupted_bench_stops_the_servers_it_started() {
    if !netns::require_root("an_interrupted_bench_stops_the_servers_it_started") {
        return;
    }
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tunstack"))
        .args(["bench", "--quick", "--only", "dns"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tunstack bench");
    let run = std::env::temp_dir().join(format!("tunstack-bench-dns-{}", child.id()));
    // Up once Unbound, the last server started, has written its pid.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !run.join("unbound.pid").exists() {
        assert!(
            std::time::Instant::now() < until,
            "the DNS servers never came up in {}",
            run.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let daemons = |run: &std::path::Path| -> Vec<String> {
        let needle = run.to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter_map(|e| {
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                cmd.contains(&needle).then_some(cmd)
            })
            .collect()
    };
    assert!(
        !daemons(&run).is_empty(),
        "no daemon names {}",
        run.display()
    );
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait for the bench");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("cleanup(s) done"), "{err}");
    assert!(!run.exists(), "{} is left", run.display());
    // A stopped daemon may linger as a zombie, whose cmdline is empty.
    assert_eq!(daemons(&run), Vec::<String>::new());
}
