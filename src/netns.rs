//! Private network namespaces for tests, benchmarks and the demo, and the
//! kernel-side configuration of a TUN device.
//!
//! [`in_new_netns`] runs a closure on a fresh thread that has called
//! `unshare(CLONE_NEWNET)`: sockets, TUN devices, threads and child processes
//! (`ip`, `curl`, ...) created from that thread all live in the new
//! namespace, and the namespace disappears by itself when the last of them
//! exits — nothing is left behind even if a test panics or is killed. Tests
//! in separate namespaces cannot collide on device names or addresses.

use std::io;
use std::net::Ipv4Addr;
use std::process::Command;

/// True when running under CI (`CI=true`): a test that cannot create its
/// namespace must then fail rather than skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// For tests that need root: returns true if the test may proceed. Outside
/// CI, a non-root run prints a loud SKIPPED line and returns false; in CI it
/// panics, so a CI run never passes by skipping.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if in_ci() {
        panic!("{test}: needs root to create a network namespace and TUN device, and CI=true forbids skipping");
    }
    eprintln!("SKIPPED {test}: needs root (network namespace + TUN); run the README's test command as root");
    false
}

/// Move the calling thread into a new, empty network namespace with `lo` up.
/// Only call this on a thread you own (never on a test-harness thread that
/// runs other tests afterwards).
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: unshare only changes this thread's namespace membership.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "cannot create a network namespace (unshare CLONE_NEWNET): {e}; this needs root"
            ),
        ));
    }
    run("ip", &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Run `f` on a new thread inside a fresh network namespace and return its
/// result. A panic in `f` is propagated.
pub fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let t = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || -> io::Result<T> {
            unshare_net()?;
            Ok(f())
        })?;
    match t.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// A test's body in a fresh network namespace: `None` when the test may skip
/// (not root, outside CI; see [`require_root`]); panics naming the test when
/// the namespace cannot be made.
pub fn test_in_new_netns<T: Send + 'static>(
    test: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if !require_root(test) {
        return None;
    }
    let r = in_new_netns(f);
    Some(r.unwrap_or_else(|e| panic!("{test}: cannot create a network namespace: {e}")))
}

/// Run a command to completion; on failure the error names the command and
/// quotes its stderr. Returns stdout.
pub fn run(program: &str, args: &[&str]) -> io::Result<String> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run `{program}`: {e} (is it installed? scripts/install-deps.sh installs what the tests need)"),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An IPv4 address with a prefix length, such as `198.19.0.1/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        Ipv4Cidr {
            addr,
            prefix: prefix.min(32),
        }
    }

    pub fn netmask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.netmask() == u32::from(self.addr) & self.netmask()
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX (for example 198.19.0.1/24)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{p:?} is not a prefix length 0..=32"))?;
        Ok(Ipv4Cidr { addr, prefix })
    }
}

/// Give the kernel side of TUN device `dev` the address `kernel` (with its
/// prefix, which also installs the route to the stack), set its MTU and
/// bring it up. IPv6 is disabled on the device where the kernel allows it,
/// to keep its router solicitations off the stack (the stack still counts
/// and drops any that arrive).
pub fn configure_tun(dev: &str, kernel: Ipv4Cidr, mtu: usize) -> io::Result<()> {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1");
    run("ip", &["link", "set", "dev", dev, "mtu", &mtu.to_string()])?;
    run("ip", &["addr", "add", &kernel.to_string(), "dev", dev])?;
    run("ip", &["link", "set", "dev", dev, "up"])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_contains() {
        let c: Ipv4Cidr = "198.19.0.1/24".parse().unwrap();
        assert_eq!(c.prefix, 24);
        assert!(c.contains(Ipv4Addr::new(198, 19, 0, 200)));
        assert!(!c.contains(Ipv4Addr::new(198, 19, 1, 2)));
        assert!("198.19.0.1"
            .parse::<Ipv4Cidr>()
            .unwrap_err()
            .contains("ADDRESS/PREFIX"));
        assert!("198.19.0.1/33".parse::<Ipv4Cidr>().is_err());
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().netmask(), 0);
    }
}
