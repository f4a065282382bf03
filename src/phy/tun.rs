//! The TUN device (tun-tap, no packet-info header, non-blocking), whose fd the
//! runtime registers with mio.

use super::Device;
use crate::time::Instant;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};

pub struct TunDevice {
    mtu: usize,
}

impl TunDevice {
    /// Open the TUN device `name` (created if missing, attached to if it
    /// exists and we may use it), without packet-info header, non-blocking.
    /// `mtu` is the largest packet we read or write.
    pub fn open(name: &str, mtu: usize) -> io::Result<TunDevice> {
        let _ = name;
        let _ = mtu;
        todo!("TunDevice::open")
    }

    /// The kernel's name for the device.
    pub fn name(&self) -> &str {
        todo!()
    }
}

impl AsRawFd for TunDevice {
    fn as_raw_fd(&self) -> RawFd {
        todo!()
    }
}

impl Device for TunDevice {
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let _ = (now, buf);
        todo!()
    }
    fn send(&mut self, now: Instant, packet: &[u8]) -> io::Result<bool> {
        let _ = (now, packet);
        todo!()
    }
    fn mtu(&self) -> usize {
        self.mtu
    }
}
