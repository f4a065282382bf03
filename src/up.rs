//! Bringing a stack up on a TUN device: what `tunstack up` does, as a library
//! call that tests and the demo make too.
//!
//! Default addresses come from 198.18.0.0/15, which RFC 2544 sets aside for
//! benchmarking network devices: it is not routed on the Internet and home
//! and office networks do not use it. The kernel side is 198.19.0.1/24 and
//! the stack 198.19.0.2; short-lived client stacks (`tunstack curl`, `dig`)
//! use 198.19.1.0/24 on their own device so they work beside a running `up`.

use crate::netns::{self, Ipv4Cidr};
use crate::phy::fault::{FaultConfig, FaultInjector};
use crate::phy::pcap::PcapWriter;
use crate::phy::tun::TunDevice;
use crate::phy::vnet::OffloadStats;
use crate::phy::Device;
use crate::rng::Rng;
use crate::runtime::Net;
use crate::stack::StackConfig;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

pub const DEFAULT_TUN: &str = "tunstack0";
pub const DEFAULT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
pub const DEFAULT_PEER: &str = "198.19.0.1/24";
pub const DEFAULT_MTU: usize = 1500;

#[derive(Clone, Debug)]
pub struct UpOptions {
    /// TUN device name; created if missing, attached to if it exists.
    pub tun: String,
    /// The stack's own address.
    pub addr: Ipv4Addr,
    /// The kernel side's address and prefix (also the route to the stack).
    pub peer: Ipv4Cidr,
    pub mtu: usize,
    /// Write every packet to this pcap file.
    pub pcap: Option<PathBuf>,
    /// Open the TUN with a virtio-net header and ask the kernel for checksum
    /// offload and TSO/GSO, so one read or write moves up to 64 KB
    /// (`tunstack up --offload`); falls back to plain mode if refused.
    pub offload: bool,
    /// Drop this percentage of the packets the stack receives, in the device
    /// layer, by a seeded generator ([`RX_LOSS_SEED`]): loss that the
    /// kernel's sender cannot see, for loss-recovery demos and the
    /// benchmark's loss rows (`tunstack up --rx-loss PERCENT`). 0: none.
    pub rx_loss_percent: f64,
}

/// Seed of `--rx-loss`: the same run drops the same packets (by arrival
/// order) every time, in tunstack and in the benchmark's smoltcp device.
pub const RX_LOSS_SEED: u64 = 0x7475_6e73_7461_636b; // "tunstack"

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            tun: DEFAULT_TUN.into(),
            addr: DEFAULT_ADDR,
            peer: DEFAULT_PEER.parse().expect("default peer parses"),
            mtu: DEFAULT_MTU,
            pcap: None,
            offload: false,
            rx_loss_percent: 0.0,
        }
    }
}

impl UpOptions {
    /// Check the options before touching the system; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.tun.is_empty() || self.tun.len() > 15 || self.tun.contains(['/', ' ']) {
            return Err(format!(
                "--tun {:?}: a device name is 1 to 15 characters without '/' or spaces",
                self.tun
            ));
        }
        if !(576..=65535).contains(&self.mtu) {
            return Err(format!("--mtu {}: must be between 576 and 65535", self.mtu));
        }
        if !(0.0..100.0).contains(&self.rx_loss_percent) {
            return Err(format!(
                "--rx-loss {}: must be at least 0 and below 100 (percent)",
                self.rx_loss_percent
            ));
        }
        if !self.peer.contains(self.addr) {
            return Err(format!(
                "--addr {} is not inside --peer {}: the kernel would have no route to the stack",
                self.addr, self.peer
            ));
        }
        if self.peer.addr == self.addr {
            return Err(format!(
                "--addr and --peer are both {}: the stack and the kernel need different addresses",
                self.addr
            ));
        }
        Ok(())
    }
}

/// A running stack on a TUN device. Dropping it stops the stack; a device
/// this call created disappears with it (non-persistent TUN).
pub struct Up {
    pub net: Net,
    /// True if the device was created here (false: attached to an existing one).
    pub created: bool,
    pub options: UpOptions,
    /// Offload counters (GSO reads/writes, bad headers) if offload is active.
    pub offload: Option<Arc<OffloadStats>>,
    /// Why `--offload` was asked for and the kernel refused it.
    pub offload_refused: Option<String>,
    /// The device reads and writes in batches through io_uring (false: one
    /// system call per packet: no io_uring, or `TUNSTACK_URING=off`).
    pub batched: bool,
}

/// `device` behind a drop of `opts.rx_loss_percent`% of what it receives.
fn rx_loss<D: Device>(device: D, opts: &UpOptions) -> FaultInjector<D> {
    FaultInjector::with_directions(
        device,
        Rng::new(RX_LOSS_SEED),
        FaultConfig::drop_percent(opts.rx_loss_percent),
        FaultConfig::NONE,
    )
}

/// Does a network device of this name exist in the current network namespace?
/// (Asks the kernel through a socket ioctl, not /sys, which shows the
/// namespace that mounted it rather than the caller's.)
pub fn device_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Open (or create) the TUN device, configure the kernel side if we created
/// it, and start the stack. Services are started separately.
pub fn bring_up(opts: &UpOptions) -> io::Result<Up> {
    opts.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let existed = device_exists(&opts.tun);
    let tun = if opts.offload {
        TunDevice::open_offload(&opts.tun, opts.mtu)?
    } else {
        TunDevice::open(&opts.tun, opts.mtu)?
    };
    let offload = tun.offload_stats();
    let batched = tun.batched();
    let offload_refused = tun.offload_refused().map(str::to_owned);
    if !existed {
        netns::configure_tun(&opts.tun, opts.peer, opts.mtu)?;
    }
    let mut config = StackConfig::new(opts.addr);
    config.mtu = opts.mtu;
    let net = match (&opts.pcap, opts.rx_loss_percent > 0.0) {
        (Some(path), false) => Net::start(PcapWriter::create(tun, path)?, config)?,
        (None, false) => Net::start(tun, config)?,
        // The trace shows what arrived at the device, dropped packets too.
        (Some(path), true) => Net::start(rx_loss(PcapWriter::create(tun, path)?, opts), config)?,
        (None, true) => Net::start(rx_loss(tun, opts), config)?,
    };
    Ok(Up {
        net,
        created: !existed,
        options: opts.clone(),
        offload,
        offload_refused,
        batched,
    })
}
