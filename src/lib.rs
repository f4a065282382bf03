//! tunstack: a userspace TCP/IP stack for Linux that lives on a TUN device.
//!
//! Every protocol core is sans-IO: it is handed bytes and the current time
//! ([`time::Instant`]) and returns bytes to send and the next time it wants to
//! be woken. Only [`phy`] (the device) and [`runtime`] (the event loop) touch
//! the operating system. See `DESIGN.md` and the README for the layer map.

pub mod lend;
pub mod phy;
pub mod rng;
pub mod time;
pub mod wire;

pub mod ip;
pub mod tcp;
pub mod udp;

pub mod stack;

pub mod runtime;
pub mod sim;

pub mod bench;
pub mod curl;
pub mod dns;
pub mod netns;
pub mod services;
pub mod up;

pub mod http;
pub mod kv;
pub mod tls;
