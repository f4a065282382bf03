//! `tunstack curl`: fetch one `http://` or `https://` URL with the stack as
//! the client. The program brings up a short-lived stack of its own (see
//! [`crate::up`]: client stacks default to 198.19.1.0/24 on device
//! `tunstack1`, so they work beside a running `tunstack up`), connects
//! through it, and streams the body to stdout or a file.
//!
//! Host names: an IPv4 literal, or a name the system's resolver
//! (`/etc/hosts` and friends, via std) maps to IPv4. The stack's own DNS
//! resolver comes later.

use crate::http::client::{Client, Url};
use crate::runtime::{Net, TcpStream};
use crate::tls::{self, ClientTls, Roots};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEFAULT_TUN: &str = "tunstack1";
pub const DEFAULT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);
pub const DEFAULT_PEER: &str = "198.19.1.1/24";

/// What to fetch and how.
#[derive(Clone, Debug, Default)]
pub struct CurlOptions {
    pub url: String,
    /// Print connection and TLS details (and the request/response heads) to stderr.
    pub verbose: bool,
    /// Trust the CA certificates in this PEM file instead of Mozilla's roots.
    pub cacert: Option<PathBuf>,
    /// Write the body here (with progress on stderr) instead of stdout.
    pub output: Option<PathBuf>,
    /// Present this client certificate chain and key (mutual TLS).
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
}

/// Resolve `host` to an IPv4 address without DNS over the stack: a literal,
/// or what the system resolver (e.g. `/etc/hosts`) says.
pub fn resolve_ipv4(host: &str, port: u16) -> io::Result<Ipv4Addr> {
    if let Ok(a) = host.parse::<Ipv4Addr>() {
        return Ok(a);
    }
    if host.parse::<IpAddr>().is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host}: the stack speaks IPv4 only"),
        ));
    }
    let addrs = (host, port).to_socket_addrs().map_err(|e| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot resolve {host} (no DNS on the stack yet; use an IPv4 address or /etc/hosts): {e}"),
        )
    })?;
    addrs
        .filter_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} has no IPv4 address"),
            )
        })
}

fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Before stopping a short-lived stack: wait (at most `max`) until every
/// connection has sent its FIN and had it acknowledged, so the server sees
/// a clean close rather than a peer that vanished with the device.
pub fn linger(net: &Net, max: Duration) {
    use crate::tcp::State;
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        let busy = net.tcp_connections().iter().any(|(_, _, st)| {
            !matches!(
                st.state,
                None | Some(State::Closed) | Some(State::FinWait2) | Some(State::TimeWait)
            )
        });
        if !busy {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The system's trust store (Debian's ca-certificates bundle, or the file
/// `SSL_CERT_FILE` names, as OpenSSL honours it) when there is one;
/// otherwise the Mozilla roots compiled in (webpki-roots).
fn default_roots() -> Roots {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let debian = std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
    match from_env.filter(|p| p.is_file()) {
        Some(p) => Roots::CaFile(p),
        None if debian.is_file() => Roots::CaFile(debian),
        None => Roots::WebPki,
    }
}

/// Fetch `opts.url` over `net`. The body goes to `stdout` (or the `-o`
/// file); verbose lines and progress go to `stderr`. An HTTP status of 400
/// or more is an error (after the body has been written), like `curl -f`
/// would report it. Returns the number of body bytes.
pub fn run(
    net: Arc<Net>,
    opts: &CurlOptions,
    stdout: &mut dyn Write,
    stderr: Arc<std::sync::Mutex<dyn Write + Send>>,
) -> Result<u64, String> {
    let url = Url::parse(&opts.url).map_err(|e| e.to_string())?;
    let mut tls_opts = ClientTls::new(match &opts.cacert {
        Some(p) => Roots::CaFile(p.clone()),
        None => default_roots(),
    });
    if let Some((cert, key)) = &opts.cert {
        let chain = tls::load_certs(cert).map_err(|e| format!("--cert: {e}"))?;
        let key = tls::load_private_key(key).map_err(|e| format!("--key: {e}"))?;
        tls_opts.client_cert = Some((chain, key));
    }
    let tls_config = tls_opts.build().map_err(|e| match &opts.cacert {
        Some(p) => format!("--cacert {}: {e}", p.display()),
        None => e.to_string(),
    })?;
    let verbose = opts.verbose;
    let timeout = if opts.connect_timeout.is_zero() {
        Duration::from_secs(10)
    } else {
        opts.connect_timeout
    };
    let err2 = stderr.clone();
    let net2 = net.clone();
    let connect = move |host: &str, port: u16| -> io::Result<TcpStream> {
        let ip = resolve_ipv4(host, port)?;
        let s = TcpStream::connect_timeout(&net2, SocketAddrV4::new(ip, port), timeout).map_err(
            |e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot connect to {ip}:{port} from the stack at {}: {e}",
                        net2.addr()
                    ),
                )
            },
        )?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        if verbose {
            let local = s.local_addr()?;
            let _ = writeln!(
                err2.lock().unwrap_or_else(|e| e.into_inner()),
                "* Through the stack: {local} -> {ip}:{port}"
            );
        }
        Ok(s)
    };
    let mut client = Client::with_tls(connect, tls_config);
    if verbose {
        let e = stderr.clone();
        client.set_verbose(move |line| {
            let _ = writeln!(e.lock().unwrap_or_else(|e| e.into_inner()), "{line}");
        });
    }
    let started = Instant::now();
    let fetched = match &opts.output {
        None => client
            .get_to(&opts.url, stdout, &mut |_, _| {})
            .map_err(|e| format!("{}: {e}", opts.url))?,
        Some(path) => {
            let f =
                std::fs::File::create(path).map_err(|e| format!("-o {}: {e}", path.display()))?;
            let mut w = io::BufWriter::with_capacity(256 * 1024, f);
            let mut last = Instant::now() - Duration::from_secs(1);
            let e = stderr.clone();
            let mut progress = |got: u64, total: Option<u64>| {
                let done = total == Some(got);
                if !done && last.elapsed() < Duration::from_millis(250) {
                    return;
                }
                last = Instant::now();
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                let rate = human((got as f64 / secs) as u64);
                let line = match total {
                    Some(t) if t > 0 => format!(
                        "\r{:>3}% {} of {} at {rate}/s   ",
                        got * 100 / t,
                        human(got),
                        human(t)
                    ),
                    _ => format!("\r{} at {rate}/s   ", human(got)),
                };
                let _ = e
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_all(line.as_bytes());
            };
            let r = client.get_to(&opts.url, &mut w, &mut progress);
            let f = match r {
                Ok(f) => f,
                Err(e) => {
                    let _ = writeln!(stderr.lock().unwrap_or_else(|e| e.into_inner()));
                    return Err(format!("{}: {e}", opts.url));
                }
            };
            // The whole body is in (Content-Length met, last chunk, or the
            // end of the connection): the last progress line says so.
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            let _ = writeln!(
                stderr.lock().unwrap_or_else(|e| e.into_inner()),
                "\r100% {} in {secs:.3} s ({}/s)   ",
                human(f.body_len),
                human((f.body_len as f64 / secs) as u64)
            );
            w.flush()
                .map_err(|e| format!("-o {}: {e}", path.display()))?;
            f
        }
    };
    stdout.flush().map_err(|e| format!("stdout: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    if verbose {
        let _ = writeln!(
            stderr.lock().unwrap_or_else(|e| e.into_inner()),
            "* {} body bytes in {secs:.3} s ({}/s) from {}:{}",
            fetched.body_len,
            human((fetched.body_len as f64 / secs.max(1e-3)) as u64),
            url.host,
            url.port
        );
    }
    if fetched.status >= 400 {
        return Err(format!(
            "{}: server answered {} {}",
            opts.url, fetched.status, fetched.reason
        ));
    }
    Ok(fetched.body_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_literals_resolve_without_lookup() {
        assert_eq!(
            resolve_ipv4("198.19.1.1", 80).unwrap(),
            Ipv4Addr::new(198, 19, 1, 1)
        );
    }

    #[test]
    fn ipv6_literals_are_refused_with_a_reason() {
        let e = resolve_ipv4("::1", 80).unwrap_err();
        assert!(e.to_string().contains("IPv4 only"), "{e}");
    }

    #[test]
    fn localhost_resolves_through_the_hosts_file() {
        assert_eq!(resolve_ipv4("localhost", 80).unwrap(), Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn sizes_are_printed_in_binary_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(10 * 1024 * 1024), "10.0 MiB");
    }
}
