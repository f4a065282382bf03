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
        Ok(TunDevice {
            handle: Handle::Plain(iface),
            mtu,
            offload: None,
            refused: None,
        })
    }

    /// Open `name` in offload mode (virtio-net header, checksum offload,
    /// TCPv4 segmentation). If the kernel refuses, log it once and open in
    /// plain mode instead; [`TunDevice::offload_refused`] then says why.
    pub fn open_offload(name: &str, mtu: usize) -> io::Result<TunDevice> {
        match open_vnet(name) {
            Ok((file, name)) => Ok(TunDevice {
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
            let n = n as usize;
            OffloadStats::add(&stats.rx_packets, 1);
            let h = match VnetHdr::parse(&hdr[..n.min(vnet::HDR_LEN)]) {
                Ok(h) => h,
                Err(_) => {
                    OffloadStats::add(&stats.rx_bad_header, 1);
                    continue;
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
                    continue;
                }
            };
            if info.needs_completion && vnet::complete_checksum(&h, packet).is_err() {
                OffloadStats::add(&stats.rx_bad_header, 1);
                continue;
            }
            if info.gso {
                OffloadStats::add(&stats.rx_gso, 1);
                OffloadStats::add(&stats.rx_gso_bytes, len as u64);
            }
            if h.flags & vnet::F_NEEDS_CSUM != 0 {
                OffloadStats::add(&stats.rx_csum_partial, 1);
            }
            off.last_trusted = info.csum_trusted;
            return Ok(Some(len));
        }
        Ok(None)
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
    let len = head.len() + tail.len();
    // Our driver (the stack) fills TCP checksum fields with the
    // pseudo-header sum only (`Capabilities::tx_checksum_partial`).
    let plan = vnet::tx_plan(head, len, mtu, true).unwrap_or(vnet::TxPlan {
        hdr: VnetHdr::default(),
        csum_patch: None,
    });
    let hdr = plan.hdr.to_bytes();
    let n = match plan.csum_patch {
        // The checksum field goes out as the pseudo-header sum, without
        // touching the caller's packet: header, up to the field, the
        // field, the rest.
        Some((at, value)) if at + 2 <= head.len() => {
            let iov = [
                iovec(&hdr),
                iovec(&head[..at]),
                iovec(&value),
                iovec(&head[at + 2..]),
                iovec(tail),
            ];
            // SAFETY: the iovecs point at buffers alive for the call; the
            // kernel only reads them.
            unsafe { libc::writev(fd, iov.as_ptr(), 5) }
        }
        _ => {
            let iov = [iovec(&hdr), iovec(head), iovec(tail)];
            // SAFETY: as above.
            unsafe { libc::writev(fd, iov.as_ptr(), 3) }
        }
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    OffloadStats::add(&stats.tx_packets, 1);
    if plan.hdr.gso_type != vnet::GSO_NONE {
        OffloadStats::add(&stats.tx_gso, 1);
        OffloadStats::add(&stats.tx_gso_bytes, len as u64);
    }
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
        Some(Box::new(TunTx {
            file,
            mtu: self.mtu,
            offload: self.offload_stats(),
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
