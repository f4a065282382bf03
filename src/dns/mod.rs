//! DNS: a recursive resolver with its cache, over any [`driver::Transport`].
//!
//! hickory-proto is used for the wire format only; resolution logic, the
//! cache, the per-server failure detector and the tools are ours. Every core
//! here is sans-IO: it is handed bytes, the current [`crate::time::Instant`]
//! and a [`crate::rng::Rng`], and returns queries to send and a deadline.
//!
//! * [`cache`]: RRsets with TTL decay, RFC 2308 negative caching, LRU bound.
//! * [`hints`]: root hints in named.root format (built-in real roots for users;
//!   tests use `tests/dns_fixtures/root.hints`).
//! * [`servers`]: per-server smoothed RTT and down-marking failure detector.
//! * [`resolver`]: [`resolver::Resolution`], the iterative state machine, and
//!   its [`resolver::Context`] (cache, servers, RNG, hints, limits).
//! * [`driver`]: the blocking [`driver::Resolver`] over a [`driver::Transport`];
//!   [`driver::StdTransport`] uses the kernel's sockets.
//!
//! ```no_run
//! use tunstack::dns::{driver::{Resolver, StdTransport}, hints::RootHints, resolver::ResolverConfig};
//! use hickory_proto::rr::{Name, RecordType};
//! let hints = RootHints::from_file("tests/dns_fixtures/root.hints".as_ref()).unwrap();
//! let mut r = Resolver::new(hints, ResolverConfig::default(), StdTransport::new(), tunstack::rng::Rng::from_os());
//! let answer = r.resolve(&Name::from_ascii("www.alpha.test.").unwrap(), RecordType::A);
//! println!("{:?} {:?}", answer.rcode, answer.answers);
//! ```

pub mod cache;
pub mod dig;
pub mod driver;
pub mod hints;
pub mod resolver;
pub mod server;
pub mod servers;
pub mod transport;
