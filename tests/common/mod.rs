//! Shared helpers for the end-to-end tests: a stack on its own TUN device in
//! a private network namespace, and stream hashing.
#![allow(dead_code)]

use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tunstack::netns;
use tunstack::rng::Rng;
use tunstack::up::{self, Up, UpOptions};

pub mod kv;

/// The kernel side and the stack, the defaults of `tunstack up`.
pub const KERNEL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const STACK: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A unique TUN device name for this test process (names are per namespace
/// anyway, but unique names keep logs and pcaps unambiguous).
pub fn tun_name(tag: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut s = format!("ts{}{}{n}", tag, std::process::id() % 1000);
    s.truncate(15);
    s
}

/// Run `f` in a fresh network namespace with a stack up on its own TUN
/// device (echo/discard/chargen started). Returns `None` (after printing
/// SKIPPED) when not root outside CI; panics in CI.
pub fn with_stack<T: Send + 'static>(
    test: &str,
    f: impl FnOnce(&Up) -> T + Send + 'static,
) -> Option<T> {
    if !netns::require_root(test) {
        return None;
    }
    let tag: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect();
    let name = tun_name(&tag);
    let r = netns::in_new_netns(move || {
        let opts = UpOptions {
            tun: name,
            ..UpOptions::default()
        };
        let up = up::bring_up(&opts).expect("bring up the stack on a TUN device");
        // These tests exercise the batched device path; CI's kernel has
        // io_uring, so losing it there is a regression, not a fallback.
        if netns::in_ci() && std::env::var_os("TUNSTACK_URING").is_none() {
            assert!(up.batched, "the TUN device runs without io_uring batches");
        }
        tunstack::services::start_standard(&up.net).expect("start services");
        f(&up)
    });
    Some(r.unwrap_or_else(|e| panic!("{test}: cannot create a network namespace: {e}")))
}

/// A deterministic pseudo-random byte stream and its running hash.
pub struct Stream {
    rng: Rng,
    left: u64,
}

impl Stream {
    pub fn new(seed: u64, len: u64) -> Stream {
        Stream {
            rng: Rng::new(seed),
            left: len,
        }
    }

    /// Write the whole stream to `w`; returns its hash.
    pub fn write_all(mut self, w: &mut impl Write) -> io::Result<u64> {
        let mut h = siphasher::sip::SipHasher13::new();
        let mut buf = vec![0u8; 64 * 1024];
        while self.left > 0 {
            let n = (self.left as usize).min(buf.len());
            self.rng.fill(&mut buf[..n]);
            h.write(&buf[..n]);
            w.write_all(&buf[..n])?;
            self.left -= n as u64;
        }
        Ok(h.finish())
    }
}

/// Read `r` to end of stream; returns (bytes, hash).
pub fn hash_reader(r: &mut impl Read) -> io::Result<(u64, u64)> {
    let mut h = siphasher::sip::SipHasher13::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok((total, h.finish())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.write(&buf[..n]);
        total += n as u64;
    }
}

/// Read exactly `len` bytes; returns their hash.
pub fn hash_exact(r: &mut impl Read, len: u64) -> io::Result<u64> {
    let mut h = siphasher::sip::SipHasher13::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended {left} bytes early"),
            ));
        }
        h.write(&buf[..n]);
        left -= n as u64;
    }
    Ok(h.finish())
}
