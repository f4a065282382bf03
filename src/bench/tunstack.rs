//! Measurements of tunstack itself: the kernel's TCP (std::net) on one side
//! of a TUN device, the stack (runtime handles) on the other, in a fresh
//! network namespace per measurement.

use super::common::*;
use super::env;
use crate::netns;
use crate::runtime::{TcpListener, TcpStream};
use crate::services;
use crate::up::{self, Up, UpOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpStream as KernelStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// TUN device name used inside the benchmark's namespaces.
pub const TUN: &str = "tsbench0";
const PORT: u16 = 5001;
/// Socket timeouts: short enough that loops notice their deadlines.
const TICK: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `f` in a new namespace with a tunstack on its own TUN device at
/// `mtu`, `loss_percent`% lost each way on arrival: the stack's packets by
/// nftables in the kernel's prerouting hook, the kernel's in the stack's
/// device (seeded, [`UpOptions::rx_loss_percent`]).
fn with_stack<T: Send + 'static>(
    mtu: usize,
    loss_percent: u32,
    f: impl FnOnce(&Up) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    with_stack_opts(mtu, loss_percent, false, f)
}

/// [`with_stack`], with the TUN in offload mode if `offload` (an error if
/// the kernel refuses it: the figure would not be an offload figure).
fn with_stack_opts<T: Send + 'static>(
    mtu: usize,
    loss_percent: u32,
    offload: bool,
    f: impl FnOnce(&Up) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    netns::in_new_netns(move || {
        let opts = UpOptions {
            tun: TUN.into(),
            mtu,
            offload,
            rx_loss_percent: loss_percent as f64,
            ..UpOptions::default()
        };
        let up = up::bring_up(&opts)?;
        if let Some(why) = &up.offload_refused {
            return Err(io::Error::other(format!("TUN offload refused: {why}")));
        }
        env::install_ingress_loss(TUN, loss_percent)?;
        f(&up)
    })?
}

fn stack_addr(up: &Up, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(up.options.addr, port)
}

fn kernel_connect(addr: SocketAddrV4) -> io::Result<KernelStream> {
    let s = env::kernel_connect_cc(addr, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(TICK))?;
    s.set_write_timeout(Some(TICK))?;
    Ok(s)
}

/// Run `f` while a thread samples the stack's first TCP connection every
/// 500 µs, and log (debug) the means of its congestion window and bytes in
/// flight and the spread of its SRTT: the figures behind a sending row
/// (the stats logged at the end are one instant, often just after a loss).
fn with_tcp_samples<T>(net: &crate::runtime::Net, f: impl FnOnce() -> T) -> T {
    let done = AtomicBool::new(false);
    let (r, samples) = std::thread::scope(|sc| {
        let sampler = sc.spawn(|| {
            let mut v = Vec::new();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(500));
                if let Some((_, _, st)) = net.tcp_connections().into_iter().next() {
                    v.push((st.cwnd, st.bytes_in_flight, st.srtt.unwrap_or_default()));
                }
            }
            v
        });
        let r = f();
        done.store(true, Ordering::Relaxed);
        (r, sampler.join().unwrap_or_default())
    });
    if !samples.is_empty() {
        let n = samples.len();
        let mean =
            |g: fn(&(usize, usize, Duration)) -> usize| samples.iter().map(g).sum::<usize>() / n;
        let mut srtt: Vec<Duration> = samples.iter().map(|s| s.2).collect();
        srtt.sort();
        log::debug!(
            "bench: {n} samples of the sender: cwnd mean {} B, in flight mean {} B, \
             SRTT p10 / p50 / p90 {:?} / {:?} / {:?}",
            mean(|s| s.0),
            mean(|s| s.1),
            srtt[n / 10],
            srtt[n / 2],
            srtt[n * 9 / 10]
        );
    }
    r
}

/// Bulk TCP over TUN between the kernel and tunstack. The kernel is the
/// client; the stack's server sends or sinks. Measured at the receiver.
pub fn bulk(p: BulkParams) -> io::Result<Bulk> {
    bulk_with(p, false)
}

/// [`bulk`] with the TUN in offload mode (`up --offload`: vnet header,
/// TSO/GSO, checksum offload).
pub fn bulk_offload(p: BulkParams) -> io::Result<Bulk> {
    bulk_with(p, true)
}

fn bulk_with(p: BulkParams, offload: bool) -> io::Result<Bulk> {
    with_stack_opts(p.mtu, p.loss_percent, offload, move |up| {
        let stack_tids = up.net.thread_ids().to_vec();
        let listener = TcpListener::bind(&up.net, PORT)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        // The stack side: returns (receiver result if it received, own CPU).
        let app = std::thread::Builder::new()
            .name("tsbench-app".into())
            .spawn(move || -> io::Result<(Option<(u64, f64)>, env::CpuUsed)> {
                let (mut s, _) = listener.accept_timeout(Some(CONNECT_TIMEOUT))?;
                let mark = env::CpuMark::own();
                s.set_read_timeout(Some(TICK))?;
                s.set_write_timeout(Some(TICK))?;
                let r = match p.dir {
                    Dir::KernelToStack => {
                        Some(receive_for(&mut s, p.volume, p.min_time, p.max_time)?)
                    }
                    Dir::StackToKernel => {
                        send_until(&mut s, &stop2);
                        None
                    }
                };
                let used = mark.used();
                drop(s);
                Ok((r, used))
            })?;
        let stack_mark = env::CpuMark::of_threads(&stack_tids);
        let mut k = kernel_connect(stack_addr(up, PORT))?;
        let mut received = None;
        match p.dir {
            Dir::KernelToStack => {
                let mut k2 = k.try_clone()?;
                let stop3 = stop.clone();
                let writer = std::thread::spawn(move || send_until(&mut k2, &stop3));
                // Wait for the stack's receiver, then stop the kernel's writer.
                while !app.is_finished() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                stop.store(true, Ordering::Relaxed);
                let _ = k.shutdown(Shutdown::Both);
                let _ = writer.join();
            }
            Dir::StackToKernel => {
                let r = if log::log_enabled!(log::Level::Debug) {
                    with_tcp_samples(&up.net, || {
                        receive_for(&mut k, p.volume, p.min_time, p.max_time)
                    })
                } else {
                    receive_for(&mut k, p.volume, p.min_time, p.max_time)
                };
                received = Some(r?);
                stop.store(true, Ordering::Relaxed);
            }
        }
        // RUST_LOG=tunstack::bench=debug: each connection's stats (RTOs, srtt...).
        for (l, r, st) in up.net.tcp_connections() {
            log::debug!("bench: {l} -> {r}: {st:?}");
        }
        let lp = stack_mark.used();
        drop(k);
        let (app_received, app) = app
            .join()
            .map_err(|_| io::Error::other("stack-side thread panicked"))??;
        let (bytes, secs) = received
            .or(app_received)
            .ok_or_else(|| io::Error::other("no receiver result"))?;
        Ok(Bulk {
            bytes,
            secs,
            cpu_secs: lp.cpu.zip(app.cpu).map(|(l, a)| (l + a).as_secs_f64()),
            kernel_share: (lp.user_sys)
                .zip(app.user_sys)
                .and_then(|(l, a)| l.plus(a).kernel_share()),
            machine_busy: lp.machine_busy,
        })
    })
}

/// The in-loop sender: whenever the send buffer has room, commit all of it
/// as sent without writing anything into it, exactly as smoltcp's
/// `examples/benchmark.rs` does (`socket.send(|b| (b.len(), b.len()))`):
/// the bytes are whatever the buffer held. So the in-loop sending row, like
/// smoltcp's, measures the stack without any application copy; `up`'s
/// chargen (which copies the RFC 864 pattern in) cost it 0.30 against
/// smoltcp's 0.21 CPU s/GB at MTU 65000 on 2026-12-06. Input is dropped.
fn in_place_sender(
    stack: &mut crate::stack::Stack,
    h: crate::stack::SocketHandle,
    _: &mut (),
) -> services::Serve {
    while matches!(stack.tcp_recv_with(h, |b| b.len()), Ok(1..)) {}
    loop {
        match stack.tcp_send_with(h, |b| b.len()) {
            Ok(0) | Err(crate::tcp::TcpError::WouldBlock) => return services::Serve::Again,
            Ok(_) => {}
            Err(_) => return services::Serve::Close,
        }
    }
}

/// [`bulk`] with the stack's side run on the stack's own thread
/// ([`crate::runtime::Net::run_in_loop`]), reading and writing socket
/// buffers in place, the way smoltcp's benchmark example drives smoltcp:
/// [`in_place_sender`] sends, a sink that consumes in place, timed from
/// the connection's first pass, receives.
pub fn bulk_in_loop(p: BulkParams) -> io::Result<Bulk> {
    with_stack(p.mtu, p.loss_percent, move |up| {
        let stack_tids = up.net.thread_ids().to_vec();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(u64, f64)>();
        match p.dir {
            Dir::StackToKernel => services::run_loop_service(&up.net, PORT, 1, in_place_sender)?,
            Dir::KernelToStack => {
                let mut done_tx = Some(done_tx);
                services::run_loop_service(
                    &up.net,
                    PORT,
                    1,
                    move |stack, h, st: &mut Option<(Instant, u64)>| {
                        let (t0, got) = st.get_or_insert((Instant::now(), 0));
                        loop {
                            match stack.tcp_recv_with(h, |b| b.len()) {
                                Ok(0) => return services::Serve::Close,
                                Ok(n) => *got += n as u64,
                                Err(crate::tcp::TcpError::WouldBlock) => break,
                                Err(_) => return services::Serve::Close,
                            }
                        }
                        let el = t0.elapsed();
                        if p.over(*got, el) {
                            if let Some(tx) = done_tx.take() {
                                let _ = tx.send((*got, el.as_secs_f64()));
                            }
                        }
                        services::Serve::Again
                    },
                )?
            }
        }
        let stack_mark = env::CpuMark::of_threads(&stack_tids);
        let mut k = kernel_connect(stack_addr(up, PORT))?;
        let (bytes, secs) = match p.dir {
            Dir::StackToKernel => receive_for(&mut k, p.volume, p.min_time, p.max_time)?,
            Dir::KernelToStack => {
                let mut k2 = k.try_clone()?;
                let stop = Arc::new(AtomicBool::new(false));
                let stop2 = stop.clone();
                let writer = std::thread::spawn(move || send_until(&mut k2, &stop2));
                let r = done_rx.recv_timeout(p.max_time + CONNECT_TIMEOUT);
                stop.store(true, Ordering::Relaxed);
                let _ = k.shutdown(Shutdown::Both);
                let _ = writer.join();
                r.map_err(|_| io::Error::other("the in-loop receiver never finished"))?
            }
        };
        let lp = stack_mark.used();
        Ok(Bulk {
            bytes,
            secs,
            cpu_secs: lp.cpu.map(|l| l.as_secs_f64()),
            kernel_share: lp.user_sys.and_then(env::UserSys::kernel_share),
            machine_busy: lp.machine_busy,
        })
    })
}

/// Echo server on the stack for the latency test: one connection, nodelay.
fn echo_once(listener: TcpListener) -> io::Result<()> {
    let (s, _) = listener.accept_timeout(Some(CONNECT_TIMEOUT))?;
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = (&s).read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        (&s).write_all(&buf[..n])?;
    }
}

/// Request/response latency: `rounds` ping-pongs of `size` bytes over one
/// connection, kernel client ↔ echo server on the stack (both nodelay).
pub fn latency(rounds: usize, size: usize) -> io::Result<Latency> {
    with_stack(1500, 0, move |up| {
        let listener = TcpListener::bind(&up.net, PORT)?;
        let server = std::thread::spawn(move || echo_once(listener));
        let mut k = kernel_connect(stack_addr(up, PORT))?;
        k.set_read_timeout(Some(Duration::from_secs(5)))?;
        k.set_nodelay(true)?;
        let msg = vec![0x5au8; size];
        let mut back = vec![0u8; size];
        let warmup = (rounds / 10).min(200);
        let mut rtts = Vec::with_capacity(rounds);
        for i in 0..rounds + warmup {
            let t = Instant::now();
            k.write_all(&msg)?;
            k.read_exact(&mut back)?;
            if i >= warmup {
                rtts.push(t.elapsed());
            }
        }
        drop(k);
        let _ = server.join();
        Ok(Latency::from_samples(rtts))
    })
}

/// The connection-rate client: one kernel connection after another (connect,
/// 64 bytes out, 64 back, close) until `max_conns` or `max_time`; returns how
/// many completed, and the error that stopped it early, if any.
fn echo64_clients(addr: SocketAddrV4, max_conns: u64, max_time: Duration) -> (u64, io::Result<()>) {
    let start = Instant::now();
    let mut done = 0u64;
    let (msg, mut back) = ([7u8; 64], [0u8; 64]);
    let result = (|| -> io::Result<()> {
        while done < max_conns && start.elapsed() < max_time {
            let mut k = KernelStream::connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
            k.set_read_timeout(Some(Duration::from_secs(5)))?;
            k.set_nodelay(true)?;
            k.write_all(&msg)?;
            k.read_exact(&mut back)?;
            done += 1;
        }
        Ok(())
    })();
    (done, result)
}

/// The connection-rate server: for each connection, read 64 bytes, echo them,
/// wait for the client's FIN, close; one connection after another, until `stop`.
fn spawn_echo64_server(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = listener.accept_timeout(Some(TICK)) else {
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.set_nodelay(true);
            if s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {
                // Wait for the client's FIN, then close our side.
                let mut rest = [0u8; 64];
                while matches!(s.read(&mut rest), Ok(n) if n > 0) {}
            }
            let _ = s.shutdown(Shutdown::Write);
        }
    })
}

/// New connections per second: the kernel connects to the stack, sends
/// 64 bytes, reads them back and closes; repeated `max_conns` times or for
/// `max_time`. The stack's server handles connections one after another.
pub fn conn_rate(max_conns: u64, max_time: Duration) -> io::Result<ConnRate> {
    with_stack(1500, 0, move |up| {
        // More ports and TIME-WAIT reuse for the kernel client (this namespace only).
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535");
        let _ = std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1");
        let listener = TcpListener::bind_with_backlog(&up.net, PORT, 1024)?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = spawn_echo64_server(listener, stop.clone());
        let addr = stack_addr(up, PORT);
        let start = Instant::now();
        let (conns, result) = echo64_clients(addr, max_conns, max_time);
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let _ = server.join();
        result?;
        Ok(ConnRate { conns, secs })
    })
}

/// Memory per idle connection: the kernel opens `conns` connections to the
/// stack and leaves them idle; the growth of the process's heap in use
/// ([`env::heap_bytes`]) divided by the count. (The kernel's own sockets
/// live in kernel memory, not in this heap.) The heap figure counts every
/// thread of the process, so nothing else in it may free memory meanwhile:
/// the bench runs its rows one at a time, and tests that run beside this
/// one must hold off (tests/bench_quick.rs takes a lock).
pub fn idle_memory(conns: u64) -> io::Result<IdleMemory> {
    env::raise_nofile();
    with_stack(1500, 0, move |up| {
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535");
        let listener = TcpListener::bind_with_backlog(&up.net, PORT, 4096)?;
        let addr = stack_addr(up, PORT);
        // Warm up allocator and tables with a few connections first.
        let warm: Vec<KernelStream> = (0..16)
            .map(|_| KernelStream::connect_timeout(&addr.into(), CONNECT_TIMEOUT))
            .collect::<io::Result<_>>()?;
        let mut held = Vec::new();
        for _ in 0..warm.len() {
            held.push(listener.accept_timeout(Some(CONNECT_TIMEOUT))?.0);
        }
        std::thread::sleep(Duration::from_millis(100));
        let heap0 = env::heap_bytes();
        let rss0 = env::rss_bytes();
        let acceptor = std::thread::spawn(move || -> io::Result<Vec<TcpStream>> {
            let mut v = Vec::with_capacity(conns as usize);
            while (v.len() as u64) < conns {
                v.push(listener.accept_timeout(Some(CONNECT_TIMEOUT))?.0);
            }
            Ok(v)
        });
        let mut kernel = Vec::with_capacity(conns as usize);
        for _ in 0..conns {
            kernel.push(KernelStream::connect_timeout(
                &addr.into(),
                CONNECT_TIMEOUT,
            )?);
        }
        let accepted = acceptor
            .join()
            .map_err(|_| io::Error::other("acceptor panicked"))??;
        std::thread::sleep(Duration::from_millis(200));
        let heap1 = env::heap_bytes();
        let rss1 = env::rss_bytes();
        let open = up.net.tcp_connections().len() as u64;
        if open < conns {
            return Err(io::Error::other(format!(
                "only {open} of {conns} connections are open on the stack"
            )));
        }
        drop((accepted, kernel, warm, held));
        Ok(IdleMemory {
            conns,
            heap_delta: heap1.saturating_sub(heap0),
            rss_delta: rss1.saturating_sub(rss0),
        })
    })
}

/// The scale figure (issue 6): `conns` idle connections from the kernel to
/// one server on the stack, held at once, then new connections per second
/// (as [`conn_rate`]) while they stay open, with the stack's event-loop CPU
/// per new connection. The O(connections) poll of old showed up here first.
#[derive(Clone, Debug)]
pub struct Scale {
    /// Idle connections held open on the stack.
    pub conns: u64,
    /// Growth of the process's heap in use ([`super::env::heap_bytes`]) while they were opened.
    pub heap_delta: u64,
    /// New connections made while the idle ones were held.
    pub rate: ConnRate,
    /// CPU the stack's threads (its event loop and, where there is one, its
    /// writer thread) used during the rate measurement.
    pub loop_cpu_secs: Option<f64>,
}

impl Scale {
    pub fn bytes_per_conn(&self) -> f64 {
        self.heap_delta as f64 / self.conns.max(1) as f64
    }

    /// The stack's CPU microseconds per new connection (its loop's and
    /// writer's).
    pub fn loop_cpu_us_per_conn(&self) -> Option<f64> {
        self.loop_cpu_secs
            .map(|c| c * 1e6 / self.rate.conns.max(1) as f64)
    }
}

/// See [`Scale`]. The idle connections' server accepts them all and keeps
/// them; a second listener serves the connect/exchange/close loop.
pub fn scale(conns: u64, rate_time: Duration) -> io::Result<Scale> {
    env::raise_nofile();
    with_stack(1500, 0, move |up| {
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535");
        let _ = std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1");
        let listener = TcpListener::bind_with_backlog(&up.net, PORT, 4096)?;
        let addr = stack_addr(up, PORT);
        let stack_tids = up.net.thread_ids().to_vec();
        // Warm up allocator and tables first.
        let warm: Vec<KernelStream> = (0..16)
            .map(|_| KernelStream::connect_timeout(&addr.into(), CONNECT_TIMEOUT))
            .collect::<io::Result<_>>()?;
        let mut held = Vec::new();
        for _ in 0..warm.len() {
            held.push(listener.accept_timeout(Some(CONNECT_TIMEOUT))?.0);
        }
        std::thread::sleep(Duration::from_millis(100));
        let heap0 = env::heap_bytes();
        let acceptor = std::thread::spawn(move || -> io::Result<(Vec<TcpStream>, TcpListener)> {
            let mut v = Vec::with_capacity(conns as usize);
            while (v.len() as u64) < conns {
                v.push(listener.accept_timeout(Some(CONNECT_TIMEOUT))?.0);
            }
            Ok((v, listener))
        });
        let mut kernel = Vec::with_capacity(conns as usize);
        for _ in 0..conns {
            kernel.push(KernelStream::connect_timeout(
                &addr.into(),
                CONNECT_TIMEOUT,
            )?);
        }
        let (accepted, listener) = acceptor
            .join()
            .map_err(|_| io::Error::other("acceptor panicked"))??;
        std::thread::sleep(Duration::from_millis(200));
        let heap1 = env::heap_bytes();
        let open = up.net.tcp_connections().len() as u64;
        if open < conns {
            return Err(io::Error::other(format!(
                "only {open} of {conns} connections are open on the stack"
            )));
        }
        drop(listener);
        // New connections per second with all of them still open.
        let rate_port = PORT + 1;
        let rate_listener = TcpListener::bind_with_backlog(&up.net, rate_port, 1024)?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = spawn_echo64_server(rate_listener, stop.clone());
        let raddr = stack_addr(up, rate_port);
        let stack_mark = env::CpuMark::of_threads(&stack_tids);
        let start = Instant::now();
        let (made, result) = echo64_clients(raddr, u64::MAX, rate_time);
        let secs = start.elapsed().as_secs_f64();
        let loop_cpu = stack_mark.used().cpu.map(|c| c.as_secs_f64());
        stop.store(true, Ordering::Relaxed);
        let _ = server.join();
        result?;
        drop((accepted, kernel, warm, held));
        Ok(Scale {
            conns,
            heap_delta: heap1.saturating_sub(heap0),
            rate: ConnRate { conns: made, secs },
            loop_cpu_secs: loop_cpu,
        })
    })
}
