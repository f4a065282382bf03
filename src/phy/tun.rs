//! The TUN device (no packet-info header, non-blocking), whose fd the
//! runtime registers with mio.
//!
//! Two modes. Plain ([`TunDevice::open`], through tun-tap): one IP packet per
//! read or write, at most the MTU. Offload ([`TunDevice::open_offload`]): the
//! device is opened with `IFF_VNET_HDR`, the kernel is asked for checksum
//! offload and TCPv4 segmentation (TUNSETOFFLOAD `TUN_F_CSUM | TUN_F_TSO4`),
//! and every packet carries a 10-byte virtio-net header ([`super::vnet`]), so
//! one read or write moves a TCP segment of up to 64 KB. The kernel cuts what
//! we write into MTU-sized segments only if it must (local delivery takes the
//! large segment whole), and hands us its own large segments unsegmented.
//! Where the kernel refuses either step, the device falls back to plain mode,
//! says so once in the log, and reports why ([`TunDevice::offload_refused`]).

use super::queue::QueueDevice;
use super::uring::{self, ReadSizer, Ring};
use super::vnet::{self, OffloadStats, VnetHdr};
use super::{Capabilities, Device, Lent, TxHalf};
use crate::time::Instant;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;

/// Largest IPv4 packet (total length is 16 bits): the most one GSO write carries.
pub const MAX_GSO_PACKET: usize = 65535;

enum Handle {
    Plain(tun_tap::Iface),
    Vnet { file: File, name: String },
}

/// State of the offload mode.
struct Offload {
    stats: Arc<OffloadStats>,
    /// The last packet `recv` returned had a checksum the kernel vouches for.
    last_trusted: bool,
}

pub struct TunDevice {
    handle: Handle,
    mtu: usize,
    offload: Option<Offload>,
    /// Why offload was asked for and not granted.
    refused: Option<String>,
    /// Batched reads and writes ([`uring`]); `None`: one system call per
    /// packet (no io_uring here, or `TUNSTACK_URING=off`).
    batch: Option<Batch>,
}

/// What batched I/O keeps between passes.
struct Batch {
    ring: Ring,
    reads: ReadSizer,
    /// Per operation: a vnet header, a checksum field (offload mode).
    hdrs: Vec<([u8; vnet::HDR_LEN], [u8; 2])>,
    /// The packets of a write batch and of a read batch, while in flight.
    tx: Vec<(Vec<u8>, Option<Lent>)>,
    rx: Vec<Vec<u8>>,
}

impl Batch {
    /// Batched I/O on `fd`, unless the environment turns it off or the
    /// kernel refuses it (said once in the log, per device).
    fn open(fd: RawFd, name: &str) -> Option<Batch> {
        if !batching_wanted() {
            return None;
        }
        match Ring::new(fd) {
            Ok(ring) => Some(Batch {
                ring,
                reads: ReadSizer::default(),
                hdrs: vec![([0; vnet::HDR_LEN], [0; 2]); uring::ENTRIES],
                tx: Vec::with_capacity(uring::ENTRIES),
                rx: Vec::with_capacity(uring::ENTRIES),
            }),
            Err(e) => {
                log::info!("TUN {name}: no io_uring ({e}): one system call per packet");
                None
            }
        }
    }
}

/// True unless `TUNSTACK_URING` turns batched device I/O off.
pub fn batching_wanted() -> bool {
    !std::env::var("TUNSTACK_URING").is_ok_and(|v| v == "off" || v == "0")
}

/// Put `fd` into non-blocking mode. (tun-tap's own `set_non_blocking` sits
/// behind its `libc` feature, which its default-features-off build lacks.)
fn set_non_blocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a file descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Errors that mean "the device cannot take/give a packet right now".
fn is_transient(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
        || e.kind() == io::ErrorKind::Interrupted
        || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// `ifreq` with a name and flags, for TUNSETIFF.
fn ifreq(name: &str, flags: libc::c_int) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad TUN device name {name:?}"),
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    Ok(req)
}

/// The name stored in an `ifreq` (the kernel may fill in a pattern).
fn ifreq_name(req: &libc::ifreq) -> String {
    let b: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&b).into_owned()
}

/// Open `/dev/net/tun` as device `name` with a virtio-net header and ask for
/// offloads. Errors say which step the kernel refused.
fn open_vnet(name: &str) -> io::Result<(File, String)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("open /dev/net/tun: {e}")))?;
    let fd = file.as_raw_fd();
    let mut req = ifreq(name, libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR)?;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which we own.
    if unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("TUNSETIFF IFF_VNET_HDR: {e}"),
        ));
    }
    let hdr_len = vnet::HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int, which we own.
    if unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ, &hdr_len) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("TUNSETVNETHDRSZ: {e}")));
    }
    // IPv4 only: the stack speaks no IPv6, so TSO6 is not asked for.
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, offloads as libc::c_ulong) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("TUNSETOFFLOAD CSUM|TSO4: {e}"),
        ));
    }
    set_non_blocking(fd)?;
    Ok((file, ifreq_name(&req)))
}

/// An iovec the kernel writes into.
fn iovec_mut(b: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_mut_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }
}

/// An iovec the kernel only reads.
fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }
}

impl TunDevice {
    /// Open the TUN device `name` (created if missing, attached to if it
    /// exists and we may use it), without packet-info header, non-blocking.
    /// `mtu` is the largest packet we read or write.
    pub fn open(name: &str, mtu: usize) -> io::Result<TunDevice> {
        let iface = tun_tap::Iface::without_packet_info(name, tun_tap::Mode::Tun).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open TUN device {name:?}: {e} (needs CAP_NET_ADMIN, or a persistent device owned by this user: see setup-tun.sh)"),
            )
        })?;
        set_non_blocking(iface.as_raw_fd())?;
        let batch = Batch::open(iface.as_raw_fd(), iface.name());
        Ok(TunDevice {
            handle: Handle::Plain(iface),
            mtu,
            offload: None,
            refused: None,
            batch,
        })
    }

    /// Open `name` in offload mode (virtio-net header, checksum offload,
    /// TCPv4 segmentation). If the kernel refuses, log it once and open in
    /// plain mode instead; [`TunDevice::offload_refused`] then says why.
    pub fn open_offload(name: &str, mtu: usize) -> io::Result<TunDevice> {
        match open_vnet(name) {
            Ok((file, name)) => Ok(TunDevice {
                batch: Batch::open(file.as_raw_fd(), &name),
                handle: Handle::Vnet { file, name },
                mtu,
                offload: Some(Offload {
                    stats: Arc::new(OffloadStats::default()),
                    last_trusted: false,
                }),
                refused: None,
            }),
            Err(e) => {
                log::warn!(
                    "TUN offload refused by the kernel on {name:?} ({e}); continuing without offload"
                );
                let mut dev = TunDevice::open(name, mtu)?;
                dev.refused = Some(e.to_string());
                Ok(dev)
            }
        }
    }

    /// The kernel's name for the device.
    pub fn name(&self) -> &str {
        match &self.handle {
            Handle::Plain(i) => i.name(),
            Handle::Vnet { name, .. } => name,
        }
    }

    /// True if the device runs with a virtio-net header and offloads.
    pub fn offload_active(&self) -> bool {
        self.offload.is_some()
    }

    /// Why offload was asked for and refused (`None`: not asked, or granted).
    pub fn offload_refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// Counters of the offload mode (GSO reads and writes, bad headers), to
    /// be read from any thread; `None` in plain mode.
    pub fn offload_stats(&self) -> Option<Arc<OffloadStats>> {
        self.offload.as_ref().map(|o| o.stats.clone())
    }

    /// Read one packet into `dst`, which must be valid for writes of `cap`
    /// bytes (initialised or not); returns its length. Only the bytes the
    /// kernel wrote are ever read back.
    ///
    /// # Safety
    /// `dst..dst + cap` is writable memory that nothing else uses during
    /// the call.
    unsafe fn recv_raw(&mut self, dst: *mut u8, cap: usize) -> io::Result<Option<usize>> {
        let r = match &self.handle {
            Handle::Plain(i) => {
                // SAFETY: the caller vouches for dst..dst + cap; the kernel
                // writes at most cap bytes there.
                let n = unsafe { libc::read(i.as_raw_fd(), dst.cast(), cap) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(Some(n as usize))
                }
            }
            // SAFETY: passed on from the caller.
            Handle::Vnet { .. } => unsafe { self.recv_vnet(dst, cap) },
        };
        match r {
            Ok(n) => Ok(n),
            Err(e) if is_transient(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// # Safety
    /// As [`TunDevice::recv_raw`].
    unsafe fn recv_vnet(&mut self, dst: *mut u8, cap: usize) -> io::Result<Option<usize>> {
        let Handle::Vnet { file, .. } = &self.handle else {
            unreachable!("recv_vnet on a plain device")
        };
        let Some(off) = self.offload.as_mut() else {
            unreachable!("recv_vnet without offload state")
        };
        off.last_trusted = false;
        let stats = &off.stats;
        // Malformed packets are counted and skipped; bound the loop so a
        // flood of them cannot starve the caller.
        for _ in 0..64 {
            let mut hdr = [0u8; vnet::HDR_LEN];
            let iov = [
                iovec_mut(&mut hdr),
                libc::iovec {
                    iov_base: dst.cast(),
                    iov_len: cap,
                },
            ];
            // SAFETY: the header iovec is ours; the caller vouches for
            // dst..dst + cap; the kernel writes at most their lengths.
            let n = unsafe { libc::readv(file.as_raw_fd(), iov.as_ptr(), 2) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the kernel has just written the packet at dst.
            match unsafe { accept_vnet(stats, &hdr, n as usize, dst, cap) } {
                Some((len, trusted)) => {
                    off.last_trusted = trusted;
                    return Ok(Some(len));
                }
                None => continue,
            }
        }
        Ok(None)
    }

    /// True if reads and writes go through an io_uring in batches.
    pub fn batched(&self) -> bool {
        self.batch.is_some()
    }

    /// This device with one system call per packet read or written.
    pub fn unbatched(mut self) -> TunDevice {
        self.batch = None;
        self
    }

    /// [`Device::recv_batch`] through the ring: submissions of reads sized
    /// by [`ReadSizer`] until one comes back short or `max_packets` are in.
    fn recv_ring(
        &mut self,
        q: &mut QueueDevice,
        max_packets: usize,
        max_len: usize,
    ) -> Option<io::Result<usize>> {
        let b = self.batch.as_mut()?;
        let stats = self.offload.as_ref().map(|o| o.stats.clone());
        let mut total = 0;
        let mut failed = None;
        let mut asked = b.reads.first(max_packets);
        loop {
            b.rx.clear();
            for i in 0..asked {
                let mut buf = q.take_buffer();
                buf.reserve(max_len);
                let data = libc::iovec {
                    iov_base: buf.spare_capacity_mut().as_mut_ptr().cast(),
                    iov_len: max_len,
                };
                let op = &mut b.ring.ops[i];
                match &stats {
                    None => {
                        op.iov[0] = data;
                        op.n = 1;
                    }
                    Some(_) => {
                        op.iov[0] = iovec_mut(&mut b.hdrs[i].0);
                        op.iov[1] = data;
                        op.n = 2;
                    }
                }
                b.rx.push(buf);
            }
            // SAFETY: each op points at its own buffer's spare capacity (at
            // least max_len, reserved above) and, in offload mode, its own
            // header slot; nothing else touches either during the run, and
            // the buffers are not moved (only the Vec of them was filled).
            let res = match unsafe { b.ring.run(asked, false) } {
                Ok(r) => r,
                Err(e) => {
                    for buf in b.rx.drain(..) {
                        q.recycle(buf);
                    }
                    log::warn!(
                        "TUN: io_uring read failed ({e}); one system call per packet from now on"
                    );
                    self.batch = None;
                    return Some(if total > 0 { Ok(total) } else { Err(e) });
                }
            };
            let mut got = 0;
            for (i, (mut buf, &r)) in b.rx.drain(..).zip(res).enumerate() {
                if r < 0 {
                    let e = io::Error::from_raw_os_error(-r);
                    if !is_transient(&e) {
                        failed = Some(e);
                    }
                    q.recycle(buf);
                    continue;
                }
                got += 1;
                let n = r as usize;
                let ok = match &stats {
                    None => Some((n, false)),
                    // SAFETY: the kernel has just written the packet into
                    // the spare capacity, max_len at most.
                    Some(st) => unsafe {
                        accept_vnet(st, &b.hdrs[i].0, n, buf.as_mut_ptr(), max_len)
                    },
                };
                match ok {
                    Some((len, trusted)) => {
                        // SAFETY: the kernel wrote the first len <= max_len bytes.
                        unsafe { buf.set_len(len.min(max_len)) };
                        q.push_rx(buf, trusted);
                        total += 1;
                    }
                    None => q.recycle(buf),
                }
            }
            if failed.is_some() {
                break;
            }
            match ReadSizer::next(asked, got, max_packets.saturating_sub(total)) {
                Some(n) => asked = n,
                None => break,
            }
        }
        b.reads.finish(total);
        Some(match failed {
            Some(e) if total == 0 => Err(e),
            _ => Ok(total),
        })
    }

    /// [`Device::send_batch`] through the ring, [`uring::ENTRIES`] packets
    /// per submission.
    fn send_ring(&mut self, q: &mut QueueDevice) -> Option<io::Result<usize>> {
        let b = self.batch.as_mut()?;
        let stats = self.offload.as_ref().map(|o| o.stats.clone());
        let mut written = 0;
        let mut failed = None;
        while !q.tx.is_empty() {
            b.tx.clear();
            while b.tx.len() < uring::ENTRIES {
                match q.pop_tx() {
                    Some(p) => b.tx.push(p),
                    None => break,
                }
            }
            let tx = &b.tx;
            let part = |i: usize| {
                let (head, lent) = &tx[i];
                (&head[..], lent.as_ref().map_or(&[][..], |l| l.bytes()))
            };
            let stats = stats.as_deref();
            match write_ring(&mut b.ring, &mut b.hdrs, self.mtu, stats, tx.len(), part) {
                Ok((n, e)) => {
                    written += n;
                    failed = e.or(failed);
                }
                Err(e) => {
                    log::warn!(
                        "TUN: io_uring write failed ({e}); one system call per packet from now on"
                    );
                    // What was popped goes back in front, in order, and is
                    // written one packet at a time below.
                    for (head, lent) in b.tx.drain(..).rev() {
                        q.unpop_tx(head, lent);
                    }
                    self.batch = None;
                    return None;
                }
            }
            // Each loan ends with its write.
            for (head, _) in b.tx.drain(..) {
                q.recycle_tx(head);
            }
        }
        Some(failed.map_or(Ok(written), Err))
    }

    /// Send `head` and then `tail` as one packet.
    fn send_parts(&mut self, head: &[u8], tail: &[u8]) -> io::Result<bool> {
        let r = match &self.handle {
            Handle::Plain(i) => write_plain(i.as_raw_fd(), head, tail),
            Handle::Vnet { .. } => self.send_vnet(head, tail),
        };
        sent_or_dropped(r)
    }

    fn send_vnet(&mut self, head: &[u8], tail: &[u8]) -> io::Result<()> {
        let Handle::Vnet { file, .. } = &self.handle else {
            unreachable!("send_vnet on a plain device")
        };
        let Some(off) = self.offload.as_ref() else {
            unreachable!("send_vnet without offload state")
        };
        write_vnet(file.as_raw_fd(), self.mtu, &off.stats, head, tail)
    }
}

/// Check a packet read in offload mode, `n` bytes in all: its vnet header
/// `hdr`, then the packet at `dst` (room for `cap` bytes). Completes its
/// checksum where the header asks; the packet's length and whether its
/// checksum is vouched for, or `None` for a malformed one (counted).
///
/// # Safety
/// The kernel has just written `n - HDR_LEN` bytes (at most `cap`) at `dst`.
unsafe fn accept_vnet(
    stats: &OffloadStats,
    hdr: &[u8; vnet::HDR_LEN],
    n: usize,
    dst: *mut u8,
    cap: usize,
) -> Option<(usize, bool)> {
    OffloadStats::add(&stats.rx_packets, 1);
    let h = match VnetHdr::parse(&hdr[..n.min(vnet::HDR_LEN)]) {
        Ok(h) => h,
        Err(_) => {
            OffloadStats::add(&stats.rx_bad_header, 1);
            return None;
        }
    };
    let len = (n - vnet::HDR_LEN).min(cap);
    // SAFETY: the kernel has just written these `len` bytes at dst.
    let packet = unsafe { std::slice::from_raw_parts_mut(dst, len) };
    let info = match vnet::check_rx(&h, packet) {
        Ok(i) => i,
        Err(e) => {
            OffloadStats::add(&stats.rx_bad_header, 1);
            log::debug!("TUN: dropped a packet with a bad vnet header: {e}");
            return None;
        }
    };
    if info.needs_completion && vnet::complete_checksum(&h, packet).is_err() {
        OffloadStats::add(&stats.rx_bad_header, 1);
        return None;
    }
    if info.gso {
        OffloadStats::add(&stats.rx_gso, 1);
        OffloadStats::add(&stats.rx_gso_bytes, len as u64);
    }
    if h.flags & vnet::F_NEEDS_CSUM != 0 {
        OffloadStats::add(&stats.rx_csum_partial, 1);
    }
    Some((len, info.csum_trusted))
}

/// The vectors of one packet written in offload mode: `head` then `tail`
/// (empty, or a payload sent from where it lies) behind a virtio-net header
/// that asks the kernel to segment and checksum it where it must. The
/// header goes to `hdr`, and the checksum field, if it must go out as the
/// pseudo-header sum without touching the caller's packet, to `csum`;
/// the vectors point at both. Also: whether the packet is a GSO one.
fn vnet_vectors(
    mtu: usize,
    head: &[u8],
    tail: &[u8],
    hdr: &mut [u8; vnet::HDR_LEN],
    csum: &mut [u8; 2],
) -> (uring::Op, bool) {
    let len = head.len() + tail.len();
    // Our driver (the stack) fills TCP checksum fields with the
    // pseudo-header sum only (`Capabilities::tx_checksum_partial`).
    let plan = vnet::tx_plan(head, len, mtu, true).unwrap_or(vnet::TxPlan {
        hdr: VnetHdr::default(),
        csum_patch: None,
    });
    *hdr = plan.hdr.to_bytes();
    let mut op = uring::Op::default();
    let parts: &[&[u8]] = match plan.csum_patch {
        // The checksum field goes out as the pseudo-header sum: header, up
        // to the field, the field, the rest.
        Some((at, value)) if at + 2 <= head.len() => {
            *csum = value;
            &[&hdr[..], &head[..at], &csum[..], &head[at + 2..], tail]
        }
        _ => &[&hdr[..], head, tail],
    };
    for (v, p) in op.iov.iter_mut().zip(parts) {
        *v = iovec(p);
    }
    op.n = parts.len();
    (op, plan.hdr.gso_type != vnet::GSO_NONE)
}

/// Count a packet written in offload mode.
fn vnet_written(stats: &OffloadStats, gso: bool, len: usize) {
    OffloadStats::add(&stats.tx_packets, 1);
    if gso {
        OffloadStats::add(&stats.tx_gso, 1);
        OffloadStats::add(&stats.tx_gso_bytes, len as u64);
    }
}

/// Write `n` packets (at most [`uring::ENTRIES`]) through `ring`, in
/// order, packet `i` being `part(i)`: headers, then a payload or nothing.
/// Each goes as [`write_plain`] sends it or, given offload counters, as
/// [`write_vnet`] does (`hdrs`: a header slot per packet). How many were
/// written, and the last error that was not a full queue; `Err` if the
/// submission itself failed.
fn write_ring<'p>(
    ring: &mut Ring,
    hdrs: &mut [([u8; vnet::HDR_LEN], [u8; 2])],
    mtu: usize,
    offload: Option<&OffloadStats>,
    n: usize,
    part: impl Fn(usize) -> (&'p [u8], &'p [u8]),
) -> io::Result<(usize, Option<io::Error>)> {
    let mut gso = [false; uring::ENTRIES];
    for i in 0..n {
        let (head, tail) = part(i);
        ring.ops[i] = match offload {
            None => {
                let mut op = uring::Op::default();
                op.iov[0] = iovec(head);
                op.iov[1] = iovec(tail);
                op.n = if tail.is_empty() { 1 } else { 2 };
                op
            }
            Some(_) => {
                let (hdr, csum) = &mut hdrs[i];
                let (op, g) = vnet_vectors(mtu, head, tail, hdr, csum);
                gso[i] = g;
                op
            }
        };
    }
    // SAFETY: the ops point at the packets `part` gives (alive for 'p,
    // beyond the call) and at header slots, untouched until the run
    // returns; the kernel only reads them.
    let res = unsafe { ring.run(n, true) }?;
    let mut written = 0;
    let mut failed = None;
    for (i, &r) in res.iter().enumerate() {
        if r >= 0 {
            written += 1;
            if let Some(st) = offload {
                let (head, tail) = part(i);
                vnet_written(st, gso[i], head.len() + tail.len());
            }
        } else {
            let e = io::Error::from_raw_os_error(-r);
            if !is_transient(&e) {
                failed = Some(e);
            }
        }
    }
    Ok((written, failed))
}

/// Write one packet, `head` then `tail` (empty, or a payload sent from
/// where it lies), behind a virtio-net header that asks the kernel to
/// segment and checksum it where it must.
fn write_vnet(
    fd: RawFd,
    mtu: usize,
    stats: &OffloadStats,
    head: &[u8],
    tail: &[u8],
) -> io::Result<()> {
    let (mut hdr, mut csum) = ([0; vnet::HDR_LEN], [0; 2]);
    let (op, gso) = vnet_vectors(mtu, head, tail, &mut hdr, &mut csum);
    // SAFETY: the iovecs point at `hdr`, `csum` and the caller's slices,
    // alive for the call; the kernel only reads them.
    let n = unsafe { libc::writev(fd, op.iov.as_ptr(), op.n as libc::c_int) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    vnet_written(stats, gso, head.len() + tail.len());
    Ok(())
}

/// Write one plain IP packet, `head` then `tail` (empty, or a payload sent
/// from where it lies).
fn write_plain(fd: RawFd, head: &[u8], tail: &[u8]) -> io::Result<()> {
    let n = if tail.is_empty() {
        // SAFETY: the kernel reads at most head.len() bytes of our slice.
        unsafe { libc::write(fd, head.as_ptr().cast(), head.len()) }
    } else {
        let iov = [iovec(head), iovec(tail)];
        // SAFETY: the iovecs point at buffers alive for the call; the
        // kernel only reads them.
        unsafe { libc::writev(fd, iov.as_ptr(), 2) }
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The TUN device's transmit side on a duplicate of its descriptor (one
/// open file, so one device queue), for the runtime's writer thread
/// ([`Device::split_tx`]).
struct TunTx {
    file: File,
    mtu: usize,
    /// Offload mode: the counters shared with the device.
    offload: Option<Arc<OffloadStats>>,
    /// Batched writes, on a ring of this thread's own.
    ring: Option<Ring>,
    hdrs: Vec<([u8; vnet::HDR_LEN], [u8; 2])>,
}

impl TxHalf for TunTx {
    fn send(&mut self, packet: &[u8]) -> io::Result<bool> {
        let fd = self.file.as_raw_fd();
        let r = match &self.offload {
            None => write_plain(fd, packet, &[]),
            Some(stats) => write_vnet(fd, self.mtu, stats, packet, &[]),
        };
        sent_or_dropped(r)
    }

    fn send_batch(&mut self, packets: &[Vec<u8>]) -> io::Result<usize> {
        let Some(ring) = self.ring.as_mut() else {
            return super::send_each_tx(self, packets);
        };
        let mut written = 0;
        let mut failed = None;
        for (c, chunk) in packets.chunks(uring::ENTRIES).enumerate() {
            let part = |i: usize| (&chunk[i][..], &[][..]);
            let stats = self.offload.as_deref();
            match write_ring(ring, &mut self.hdrs, self.mtu, stats, chunk.len(), part) {
                Ok((n, e)) => {
                    written += n;
                    failed = e.or(failed);
                }
                Err(e) => {
                    log::warn!(
                        "TUN: io_uring write failed ({e}); one system call per packet from now on"
                    );
                    self.ring = None;
                    // This chunk and the rest, one at a time.
                    let rest = &packets[c * uring::ENTRIES..];
                    return super::send_each_tx(self, rest).map(|n| n + written);
                }
            }
        }
        failed.map_or(Ok(written), Err)
    }
}

/// A full device queue (or no buffer memory) loses the packet, as a full
/// NIC ring does: `Ok(false)`, and TCP recovers.
fn sent_or_dropped(r: io::Result<()>) -> io::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if is_transient(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

impl AsRawFd for TunDevice {
    fn as_raw_fd(&self) -> RawFd {
        match &self.handle {
            Handle::Plain(i) => i.as_raw_fd(),
            Handle::Vnet { file, .. } => file.as_raw_fd(),
        }
    }
}

impl Device for TunDevice {
    fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is ours, writable for its whole length.
        unsafe { self.recv_raw(buf.as_mut_ptr(), buf.len()) }
    }

    fn recv_vec(
        &mut self,
        _now: Instant,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> Option<io::Result<Option<usize>>> {
        buf.clear();
        buf.reserve(max);
        let spare = buf.spare_capacity_mut();
        // SAFETY: the spare capacity is ours and at least `max` long; it is
        // written by the kernel, never read before that.
        let r = unsafe { self.recv_raw(spare.as_mut_ptr().cast(), max) };
        if let Ok(Some(n)) = r {
            // SAFETY: the kernel wrote the first n <= max bytes.
            unsafe { buf.set_len(n.min(max)) };
        }
        Some(r)
    }

    fn send(&mut self, _now: Instant, packet: &[u8]) -> io::Result<bool> {
        self.send_parts(packet, &[])
    }

    fn recv_batch(
        &mut self,
        _now: Instant,
        q: &mut QueueDevice,
        max_packets: usize,
        max_len: usize,
    ) -> Option<io::Result<usize>> {
        self.recv_ring(q, max_packets, max_len)
    }

    fn send_batch(&mut self, now: Instant, q: &mut QueueDevice) -> io::Result<usize> {
        match self.send_ring(q) {
            Some(r) => r,
            None => super::send_each(self, now, q),
        }
    }

    fn lend_min(&self) -> Option<usize> {
        // Written before `send_lent` returns; worth it from the same size
        // as through the runtime's queue.
        Some(super::queue::LEND_MIN)
    }

    fn send_lent(&mut self, _now: Instant, head: &[u8], payload: Lent) -> io::Result<bool> {
        // Written before this returns: the loan ends here.
        self.send_parts(head, payload.bytes())
    }

    fn split_tx(&mut self) -> Option<Box<dyn TxHalf>> {
        // SAFETY: dup takes no pointers; a new descriptor or -1.
        let fd = unsafe { libc::fcntl(self.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            log::warn!(
                "TUN: cannot duplicate the descriptor for a writer thread: {}",
                io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let ring = if self.batch.is_some() {
            Ring::new(file.as_raw_fd())
                .map_err(|e| {
                    log::info!("TUN writer: no io_uring ({e}): one system call per packet")
                })
                .ok()
        } else {
            None
        };
        Some(Box::new(TunTx {
            file,
            mtu: self.mtu,
            offload: self.offload_stats(),
            ring,
            hdrs: vec![([0; vnet::HDR_LEN], [0; 2]); uring::ENTRIES],
        }))
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_tso_segment: if self.offload.is_some() {
                MAX_GSO_PACKET.max(self.mtu)
            } else {
                self.mtu
            },
            tx_checksum_partial: self.offload.is_some(),
        }
    }

    fn rx_checksum_trusted(&self) -> bool {
        self.offload.as_ref().is_some_and(|o| o.last_trusted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enobufs_and_wouldblock_are_transient() {
        assert!(is_transient(&io::Error::from(io::ErrorKind::WouldBlock)));
        assert!(is_transient(&io::Error::from_raw_os_error(libc::ENOBUFS)));
        assert!(!is_transient(&io::Error::from_raw_os_error(libc::EIO)));
    }

    #[test]
    fn ifreq_refuses_long_names_and_keeps_short_ones() {
        assert!(ifreq("a-name-that-is-too-long", 0).is_err());
        assert!(ifreq("nul\0", 0).is_err());
        let r = ifreq("tun7", libc::IFF_TUN).unwrap();
        assert_eq!(ifreq_name(&r), "tun7");
    }

    #[test]
    fn non_blocking_flag_is_set() {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        set_non_blocking(fds[0]).unwrap();
        let flags = unsafe { libc::fcntl(fds[0], libc::F_GETFL) };
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
