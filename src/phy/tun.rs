//! The TUN device (tun-tap, no packet-info header, non-blocking), whose fd the
//! runtime registers with mio.

pub struct TunDevice {}
