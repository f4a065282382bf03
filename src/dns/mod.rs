//! DNS: a recursive resolver with its cache, over any [`resolver::Transport`].
//!
//! hickory-proto is used for the wire format only; resolution logic, the
//! cache, the per-server failure detector and the tools are ours. Every core
//! here is sans-IO: it is handed bytes, the current [`crate::time::Instant`]
//! and a [`crate::rng::Rng`], and returns queries to send and a deadline.

pub mod cache;
pub mod driver;
pub mod hints;
pub mod resolver;
pub mod servers;
