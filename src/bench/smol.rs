//! The same bulk transfers through smoltcp, driven the way smoltcp's own
//! `examples/benchmark.rs` drives it: a `TunTapInterface` in IP medium, one
//! TCP socket listening for the kernel's client, and a loop of
//! `iface.poll` → move data → `phy::wait` until `poll_at`. It runs on its
//! own TUN device in its own namespace, loss injected as for tunstack: the
//! same nftables rule for its packets arriving in the kernel, and the same
//! seeded drop of the kernel's packets arriving in its device ([`RxLoss`]).

use super::common::*;
use super::env;
use crate::netns::{self, Ipv4Cidr};
use crate::phy::fault::{self, FaultConfig, FaultStats};
use crate::rng::Rng;
use crate::up::RX_LOSS_SEED;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{wait as phy_wait, Device, DeviceCapabilities, Medium, TunTapInterface};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant as SmolInstant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

pub const TUN: &str = "tsbsmol0";
const KERNEL: Ipv4Addr = Ipv4Addr::new(198, 19, 2, 1);
const STACK: Ipv4Addr = Ipv4Addr::new(198, 19, 2, 2);
const PORT: u16 = 5001;
const TICK: Duration = Duration::from_millis(100);

/// smoltcp's socket buffers for the benchmark (rx and tx each). smoltcp
/// scales its window (RFC 7323) to fit any buffer; 1 MiB (window scale 5)
/// is what the reference figures in issue 6 used and is 4× tunstack's
/// default buffers, so smoltcp is never window-limited here.
pub const BUFFER: usize = 1 << 20;

/// smoltcp's device behind the drop tunstack's device makes with
/// `rx_loss_percent` ([`crate::up::RX_LOSS_SEED`], [`fault::decide`]): the
/// same seed and the same draws, so both stacks lose the same packets by
/// arrival order. smoltcp's own `FaultInjector` draws differently and
/// drops in both directions.
struct RxLoss<D> {
    inner: D,
    rng: Rng,
    config: FaultConfig,
    /// The verdict for the next packet to arrive, drawn ahead.
    next_drops: Option<bool>,
    dropped: u64,
}

impl<D: Device> RxLoss<D> {
    fn new(inner: D, percent: u32) -> RxLoss<D> {
        RxLoss {
            inner,
            rng: Rng::new(RX_LOSS_SEED),
            config: FaultConfig::drop_percent(percent as f64),
            next_drops: None,
            dropped: 0,
        }
    }
}

impl<D: Device> Device for RxLoss<D> {
    type RxToken<'a>
        = D::RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, t: SmolInstant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.config.is_none() {
            return self.inner.receive(t);
        }
        loop {
            let drops = *self.next_drops.get_or_insert_with(|| {
                fault::decide(&mut self.rng, &self.config, &mut FaultStats::default()).drop
            });
            if drops {
                // Read the packet and forget it.
                drop(self.inner.receive(t)?);
                self.next_drops = None;
                self.dropped += 1;
                continue;
            }
            let r = self.inner.receive(t);
            if r.is_some() {
                self.next_drops = None;
            }
            return r;
        }
    }

    fn transmit(&mut self, t: SmolInstant) -> Option<Self::TxToken<'_>> {
        self.inner.transmit(t)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

/// What the smoltcp thread reports: the receiver's (bytes, secs) when smoltcp
/// received, and the CPU its poll thread (and the machine) used over the
/// transfer.
struct PollResult {
    received: Option<(u64, f64)>,
    used: env::CpuUsed,
}

fn poll_loop(
    p: BulkParams,
    stop: &AtomicBool,
    ready_tx: mpsc::Sender<io::Result<()>>,
    done_tx: mpsc::Sender<()>,
    seed: u64,
) -> io::Result<PollResult> {
    // The device is not Send: open it on the thread that polls it.
    let mut device = match TunTapInterface::new(TUN, Medium::Ip) {
        Ok(d) => RxLoss::new(d, p.loss_percent),
        Err(e) => {
            let _ = ready_tx.send(Err(io::Error::new(
                e.kind(),
                format!("smoltcp cannot open {TUN}: {e}"),
            )));
            return Err(e);
        }
    };
    let fd = device.inner.as_raw_fd();
    let socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; BUFFER]),
        tcp::SocketBuffer::new(vec![0; BUFFER]),
    );
    let mut config = Config::new(HardwareAddress::Ip);
    config.random_seed = seed;
    let mut iface = Interface::new(config, &mut device, SmolInstant::now());
    iface.update_ip_addrs(|a| {
        let o = STACK.octets();
        a.push(IpCidr::new(IpAddress::v4(o[0], o[1], o[2], o[3]), 24))
            .expect("one address fits");
    });
    let mut sockets = SocketSet::new(vec![]);
    let h = sockets.add(socket);
    // Listen before the kernel's client may connect.
    sockets
        .get_mut::<tcp::Socket>(h)
        .listen(PORT)
        .map_err(|e| io::Error::other(format!("smoltcp listen: {e}")))?;
    let _ = ready_tx.send(Ok(()));
    let default_timeout = Some(SmolDuration::from_millis(100));

    let mut started: Option<(Instant, env::CpuMark)> = None;
    let mut used = env::CpuUsed::default();
    let mut got = 0u64;
    let mut received = None;
    while !stop.load(Ordering::Relaxed) {
        let timestamp = SmolInstant::now();
        iface.poll(timestamp, &mut device, &mut sockets);

        let socket = sockets.get_mut::<tcp::Socket>(h);
        if !socket.is_open() && started.is_none() {
            socket
                .listen(PORT)
                .map_err(|e| io::Error::other(format!("smoltcp listen: {e}")))?;
        }
        if started.is_none() && socket.may_recv() {
            started = Some((Instant::now(), env::CpuMark::own()));
        }
        match p.dir {
            Dir::StackToKernel => {
                while socket.can_send() {
                    let n = socket
                        .send(|b| (b.len(), b.len()))
                        .map_err(|e| io::Error::other(format!("smoltcp send: {e}")))?;
                    if n == 0 {
                        break;
                    }
                }
            }
            Dir::KernelToStack if received.is_none() => {
                while socket.can_recv() {
                    let n = socket
                        .recv(|b| (b.len(), b.len()))
                        .map_err(|e| io::Error::other(format!("smoltcp recv: {e}")))?;
                    got += n as u64;
                }
                if let Some((t0, mark)) = &started {
                    let el = t0.elapsed();
                    if p.over(got, el) {
                        received = Some((got, el.as_secs_f64()));
                        used = mark.used();
                        let _ = done_tx.send(());
                    }
                }
            }
            Dir::KernelToStack => {
                // Done: keep the connection alive without reading until stopped.
            }
        }

        match iface.poll_at(timestamp, &sockets) {
            Some(poll_at) if timestamp < poll_at => {
                phy_wait(
                    fd,
                    Some((poll_at - timestamp).min(SmolDuration::from_millis(100))),
                )?;
            }
            Some(_) => (),
            None => phy_wait(fd, default_timeout)?,
        }
    }
    if p.dir == Dir::StackToKernel {
        if let Some((_, mark)) = &started {
            used = mark.used();
        }
    }
    if p.loss_percent > 0 {
        log::debug!(
            "bench: smoltcp's device dropped {} received packets",
            device.dropped
        );
    }
    Ok(PollResult { received, used })
}

/// Bulk TCP over TUN between the kernel (client) and smoltcp (server).
pub fn bulk(p: BulkParams) -> io::Result<Bulk> {
    netns::in_new_netns(move || -> io::Result<Bulk> {
        netns::run("ip", &["tuntap", "add", "dev", TUN, "mode", "tun"])?;
        netns::configure_tun(TUN, Ipv4Cidr::new(KERNEL, 24), p.mtu)?;
        env::install_ingress_loss(TUN, p.loss_percent)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (done_tx, done_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let seed = crate::rng::Rng::from_os().next_u64();
        let poller = std::thread::Builder::new()
            .name("tsbench-smol".into())
            .spawn(move || poll_loop(p, &stop2, ready_tx, done_tx, seed))?;
        let r = (|| -> io::Result<Option<(u64, f64)>> {
            ready_rx
                .recv()
                .map_err(|_| io::Error::other("smoltcp thread died"))??;
            let mut k =
                env::kernel_connect_cc(SocketAddrV4::new(STACK, PORT), Duration::from_secs(10))?;
            k.set_read_timeout(Some(TICK))?;
            k.set_write_timeout(Some(TICK))?;
            match p.dir {
                Dir::KernelToStack => {
                    let mut k2 = k.try_clone()?;
                    let stop3 = stop.clone();
                    let writer = std::thread::spawn(move || send_until(&mut k2, &stop3));
                    let _ = done_rx.recv_timeout(p.max_time + Duration::from_secs(10));
                    stop.store(true, Ordering::Relaxed);
                    let _ = k.shutdown(Shutdown::Both);
                    let _ = writer.join();
                    Ok(None)
                }
                Dir::StackToKernel => {
                    Ok(Some(receive_for(&mut k, p.volume, p.min_time, p.max_time)?))
                }
            }
        })();
        stop.store(true, Ordering::Relaxed);
        let polled = poller
            .join()
            .map_err(|_| io::Error::other("smoltcp thread panicked"))?;
        let _ = netns::run("ip", &["tuntap", "del", "dev", TUN, "mode", "tun"]);
        let received = r?;
        let polled = polled?;
        let (bytes, secs) = received
            .or(polled.received)
            .ok_or_else(|| io::Error::other("smoltcp never received a connection"))?;
        Ok(Bulk {
            bytes,
            secs,
            cpu_secs: polled.used.cpu.map(|c| c.as_secs_f64()),
            kernel_share: polled.used.user_sys.and_then(env::UserSys::kernel_share),
            machine_busy: polled.used.machine_busy,
        })
    })?
}
