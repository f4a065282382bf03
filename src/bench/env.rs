//! What the benchmark needs from the system around the stacks: loss
//! injection with nftables, a second namespace joined by a veth pair, NIC
//! offload switches, and CPU/memory accounting of threads and the process.
//!
//! Everything here acts only inside network namespaces the benchmark made.

use crate::netns;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io::{self, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The kernel's TCP congestion control on every kernel socket the
/// benchmark's bulk transfers use: CUBIC, Linux's default and tunstack's, so that kernel and stack
/// are compared algorithm for algorithm (a host whose default is BBR
/// would otherwise give the kernel's figures under loss, which BBR does
/// not take as congestion, to a different algorithm).
pub const KERNEL_CC: &str = "cubic";

/// A kernel TCP connection to `addr` (the benchmark's kernel sender or
/// receiver) that runs [`KERNEL_CC`] from its first segment on.
///
/// `TCP_CONGESTION` is set before `connect` (root may pick any algorithm
/// the kernel has, while a namespace's default may only be one of the
/// host's allowed ones). Set after it, as until 2026-12-06, the
/// connection had already been set up under the namespace's default, BBR
/// here, whose initialisation turns on the kernel's internal pacing
/// (`sk_pacing_status`); switching to CUBIC does not turn it off, so the
/// kernel sent paced, from hrtimer softirqs (`tcp_pace_kick`, 8% of the
/// smoltcp thread's samples receiving at MTU 1500), as no CUBIC socket on
/// a host without the fq qdisc does.
pub fn kernel_connect_cc(addr: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_tcp_congestion(KERNEL_CC.as_bytes()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot set the kernel socket's congestion control to {KERNEL_CC}: {e}"),
        )
    })?;
    s.connect_timeout(&addr.into(), timeout)
        .map_err(|e| io::Error::new(e.kind(), format!("kernel connect to {addr}: {e}")))?;
    Ok(s.into())
}

/// The congestion control algorithm `sock` runs (`TCP_CONGESTION`).
pub fn kernel_cc_of(sock: &TcpStream) -> io::Result<String> {
    let name = SockRef::from(sock).tcp_congestion()?;
    Ok(String::from_utf8_lossy(&name)
        .trim_end_matches('\0')
        .to_string())
}

/// The host's default congestion control (for the table's header).
pub fn host_cc() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Drop `percent`% of the packets arriving from `dev` into the kernel, with
/// an nftables `numgen random mod 100 < N counter drop` rule in the
/// prerouting hook of the calling thread's namespace. For a veth pair, this
/// on both ends is loss each way; for a TUN it is the loss of the stack's
/// packets, and the stack's device drops the kernel's
/// ([`crate::up::UpOptions::rx_loss_percent`], and the same seeded drop in
/// the smoltcp rows' device).
///
/// Not in postrouting: a drop there is reported to the kernel's sending
/// socket (the transmit fails and TCP sends the segment again at once, as
/// after local congestion), so its data would hardly be lost. Each drop is
/// counted (`nft list table inet tsbench_loss`).
pub fn install_ingress_loss(dev: &str, percent: u32) -> io::Result<()> {
    if percent == 0 {
        return Ok(());
    }
    if percent >= 100 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("loss {percent}%: must be below 100"),
        ));
    }
    let rules = loss_rules(dev, percent);
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run `nft`: {e} (scripts/install-deps.sh installs nftables)"),
            )
        })?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft rejected the loss rules ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The nftables ruleset of [`install_ingress_loss`]: one prerouting chain.
fn loss_rules(dev: &str, percent: u32) -> String {
    format!(
        "table inet tsbench_loss {{\n  chain rx {{ type filter hook prerouting priority -300; \
         policy accept; iifname \"{dev}\" numgen random mod 100 < {percent} counter drop; }}\n}}\n"
    )
}

/// True if `ethtool` can be run (needed to switch veth offloads off).
pub fn have_ethtool() -> bool {
    Command::new("ethtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Switch the segmentation/checksum offloads of `dev` on or off.
pub fn set_offloads(dev: &str, on: bool) -> io::Result<()> {
    let v = if on { "on" } else { "off" };
    netns::run(
        "ethtool",
        &[
            "-K", dev, "tso", v, "gso", v, "gro", v, "tx", v, "rx", v, "sg", v,
        ],
    )
    .map(|_| ())
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// CPU time thread `tid` of this process has used (from schedstat, ns
/// resolution; falls back to utime+stime ticks from stat).
pub fn thread_cpu(tid: i32) -> Option<Duration> {
    let base = format!("/proc/self/task/{tid}");
    if let Ok(s) = std::fs::read_to_string(format!("{base}/schedstat")) {
        if let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            return Some(Duration::from_nanos(ns));
        }
    }
    let s = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    stat_cpu(&s)
}

/// utime + stime from a /proc stat line, as a duration.
fn stat_cpu(stat: &str) -> Option<Duration> {
    let us = stat_user_sys(stat)?;
    Some(us.user + us.sys)
}

/// CPU time split between user mode (the stack's own code, libc) and the
/// kernel (system calls: the TUN's reads and writes and all the kernel's
/// TCP/IP work done inside them, softirqs taken meanwhile), as the kernel
/// accounts it per thread (/proc `utime` and `stime`: sampled, so the split
/// is a ratio of samples; the total is as exact as the tick).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UserSys {
    pub user: Duration,
    pub sys: Duration,
}

impl UserSys {
    /// What was used since `before` (of the same thread).
    pub fn since(self, before: UserSys) -> UserSys {
        UserSys {
            user: self.user.saturating_sub(before.user),
            sys: self.sys.saturating_sub(before.sys),
        }
    }

    /// What was used between two readings, if both were taken.
    pub fn span(before: Option<UserSys>, after: Option<UserSys>) -> Option<UserSys> {
        Some(after?.since(before?))
    }

    /// Both threads' (or both spans') time together.
    pub fn plus(self, other: UserSys) -> UserSys {
        UserSys {
            user: self.user + other.user,
            sys: self.sys + other.sys,
        }
    }

    /// The kernel's share of the time, 0 to 1 (`None` if none was used).
    pub fn kernel_share(self) -> Option<f64> {
        let total = (self.user + self.sys).as_secs_f64();
        (total > 0.0).then(|| self.sys.as_secs_f64() / total)
    }
}

/// utime and stime from a /proc stat line.
fn stat_user_sys(stat: &str) -> Option<UserSys> {
    // The command name (field 2) may contain spaces; fields after ")" are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let ticks = |i: usize| f.get(i)?.parse::<u64>().ok();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let d = |t: u64| Duration::from_nanos(t * 1_000_000_000 / hz);
    Some(UserSys {
        user: d(ticks(11)?),
        sys: d(ticks(12)?),
    })
}

/// The whole machine's CPU time since boot, all CPUs together, in clock
/// ticks: (busy, total), from the first line of /proc/stat (busy is all
/// but idle and iowait).
pub fn machine_ticks() -> Option<(u64, u64)> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?;
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user and nice).
    let v: Vec<u64> = f.take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// The share of all the machine's CPUs that was busy since `before`
/// ([`machine_ticks`]), 0 to 1.
pub fn machine_busy_since(before: Option<(u64, u64)>) -> Option<f64> {
    let (b0, t0) = before?;
    let (b1, t1) = machine_ticks()?;
    let dt = t1.checked_sub(t0).filter(|&d| d > 0)?;
    Some(b1.saturating_sub(b0) as f64 / dt as f64)
}

/// The start of a measured span: some threads' CPU (in all, and split
/// between user mode and the kernel) and the whole machine's.
#[derive(Clone, Debug)]
pub struct CpuMark {
    /// Each thread with its CPU and user/kernel split at the mark.
    threads: Vec<(i32, Option<Duration>, Option<UserSys>)>,
    machine: Option<(u64, u64)>,
}

/// What a span used, from [`CpuMark::used`] (`None` where unknown).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUsed {
    pub cpu: Option<Duration>,
    pub user_sys: Option<UserSys>,
    pub machine_busy: Option<f64>,
}

impl CpuMark {
    /// Mark thread `tid` of this process (`None`: the machine only).
    pub fn of(tid: Option<i32>) -> CpuMark {
        CpuMark::of_threads(tid.as_slice())
    }

    /// Mark these threads of this process together (none: the machine only).
    pub fn of_threads(tids: &[i32]) -> CpuMark {
        CpuMark {
            threads: (tids.iter())
                .map(|&t| (t, thread_cpu(t), thread_user_sys(t)))
                .collect(),
            machine: machine_ticks(),
        }
    }

    /// Mark the calling thread.
    pub fn own() -> CpuMark {
        CpuMark::of(Some(gettid()))
    }

    /// What the threads (summed; unknown if unknown for any) and the
    /// machine used since the mark.
    pub fn used(&self) -> CpuUsed {
        let mut cpu = (!self.threads.is_empty()).then_some(Duration::ZERO);
        let mut user_sys = (!self.threads.is_empty()).then_some(UserSys::default());
        for &(tid, c, us) in &self.threads {
            let spent = thread_cpu(tid)
                .zip(c)
                .map(|(now, then)| now.saturating_sub(then));
            cpu = cpu.zip(spent).map(|(a, b)| a + b);
            let split = UserSys::span(us, thread_user_sys(tid));
            user_sys = user_sys.zip(split).map(|(a, b)| a.plus(b));
        }
        CpuUsed {
            cpu,
            user_sys,
            machine_busy: machine_busy_since(self.machine),
        }
    }
}

/// User and kernel CPU time thread `tid` of this process has used.
pub fn thread_user_sys(tid: i32) -> Option<UserSys> {
    stat_user_sys(&std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?)
}

/// Heap bytes in use in this process: every malloc arena's allocated
/// chunks plus chunks mapped on their own (glibc `mallinfo2`). Unlike the
/// resident set it does not depend on which freed pages the allocator
/// kept: a few hundred connections fit in pages an earlier measurement
/// freed, and the resident set does not grow at all.
pub fn heap_bytes() -> u64 {
    // SAFETY: mallinfo2 takes no arguments and only reads allocator state.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

/// Resident set size of this process in bytes (from /proc/self/statm).
pub fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}

/// Raise the soft open-file limit to the hard limit (idle-connection runs
/// hold one kernel socket per connection); returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit to fill / read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    r.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_reads_utime_and_stime_after_a_name_with_spaces() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        let line = "42 (a b) S 1 1 1 0 -1 0 0 0 0 0 300 200 0 0";
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(
            stat_cpu(line),
            Some(Duration::from_nanos(500 * 1_000_000_000 / hz))
        );
        assert_eq!(stat_cpu("garbage"), None);
        let us = stat_user_sys(line).unwrap();
        assert_eq!(us.user, Duration::from_nanos(300 * 1_000_000_000 / hz));
        assert_eq!(us.sys, Duration::from_nanos(200 * 1_000_000_000 / hz));
        assert!((us.kernel_share().unwrap() - 0.4).abs() < 1e-9);
    }

    #[test]
    fn machine_ticks_count_all_but_idle_and_iowait_as_busy() {
        let stat = "cpu  100 5 50 800 20 3 2 1 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((161, 981)));
        assert_eq!(parse_machine_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(parse_machine_ticks("cpu 1 2\n"), None);
        let now = machine_ticks();
        assert!(now.is_some_and(|(b, t)| b <= t && t > 0), "{now:?}");
    }

    #[test]
    fn user_sys_spans_subtract_and_add() {
        let ms = Duration::from_millis;
        let a = UserSys {
            user: ms(10),
            sys: ms(30),
        };
        let b = UserSys {
            user: ms(40),
            sys: ms(120),
        };
        let d = b.since(a);
        assert_eq!((d.user, d.sys), (ms(30), ms(90)));
        assert_eq!(d.kernel_share(), Some(0.75));
        assert_eq!(a.since(b), UserSys::default(), "never negative");
        assert_eq!(UserSys::default().kernel_share(), None);
        assert_eq!(d.plus(a).kernel_share(), Some(120.0 / 160.0));
    }

    #[test]
    fn a_thread_in_system_calls_shows_kernel_time() {
        let tid = gettid();
        let a = thread_user_sys(tid).expect("own stat");
        // getppid is a real system call every time (no vDSO), cheap and harmless.
        let until = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < until {
            for _ in 0..1000 {
                // SAFETY: getppid has no preconditions.
                unsafe { libc::getppid() };
            }
        }
        let d = thread_user_sys(tid).expect("own stat").since(a);
        assert!(
            d.sys > Duration::ZERO,
            "system calls took kernel time: {d:?}"
        );
    }

    #[test]
    fn a_mark_sees_its_thread_work_in_user_mode_and_the_machine_busy() {
        let mark = CpuMark::own();
        let until = std::time::Instant::now() + Duration::from_millis(300);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        std::hint::black_box(x);
        let used = mark.used();
        assert!(
            used.cpu.is_some_and(|c| c >= Duration::from_millis(100)),
            "{used:?}"
        );
        let us = used.user_sys.expect("split measured");
        assert!(
            us.user > us.sys,
            "a loop without system calls runs in user mode: {us:?}"
        );
        // One of the machine's CPUs was busy with this thread all along.
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let busy = used.machine_busy.expect("machine measured");
        assert!(busy >= 0.5 / ncpu && busy <= 1.0, "busy {busy}");
    }

    #[test]
    fn ingress_loss_has_no_postrouting_rule() {
        let r = loss_rules("tun9", 3);
        assert!(r.contains("hook prerouting priority -300; policy accept; iifname \"tun9\" numgen random mod 100 < 3 counter drop;"), "{r}");
        assert!(!r.contains("postrouting"), "{r}");
    }

    #[test]
    fn install_ingress_loss_refuses_100_percent() {
        assert!(install_ingress_loss("x", 100).is_err());
        assert!(install_ingress_loss("x", 0).is_ok());
    }
}
