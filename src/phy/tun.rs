//! The TUN device (tun-tap, no packet-info header, non-blocking), whose fd the
//! runtime registers with mio.

use super::Device;
use crate::time::Instant;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};

pub struct TunDevice {
    iface: tun_tap::Iface,
    mtu: usize,
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
        Ok(TunDevice { iface, mtu })
    }

    /// The kernel's name for the device.
    pub fn name(&self) -> &str {
        self.iface.name()
    }
}

impl AsRawFd for TunDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.iface.as_raw_fd()
    }
}

impl Device for TunDevice {
    fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.iface.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if is_transient(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn send(&mut self, _now: Instant, packet: &[u8]) -> io::Result<bool> {
        match self.iface.send(packet) {
            Ok(_) => Ok(true),
            Err(e) if is_transient(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn mtu(&self) -> usize {
        self.mtu
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
