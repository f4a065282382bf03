//! Small standard services that `tunstack up` runs on the stack, useful for
//! testing from the kernel side: echo (RFC 862, TCP and UDP port 7),
//! discard (RFC 863, TCP port 9) and chargen (RFC 864, TCP port 19).
//! Each connection gets a thread; these are test services, not a web server.
//!
//! [`start_http`] adds the HTTP (port 80) and HTTPS (port 443) servers of
//! [`crate::http::server`], with certificates from a [`CertStore`] in a state
//! directory (or the user's own) and optional mutual TLS.

use crate::http::server::{Limits, Router, ServerOptions, ServerStats};
use crate::runtime::{Net, Shared, TcpListener, TcpStream, UdpSocket};
use crate::tls::{self, CertStore, ServerTls};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

pub const ECHO_PORT: u16 = 7;
pub const DISCARD_PORT: u16 = 9;
pub const CHARGEN_PORT: u16 = 19;

/// Spawn a thread that accepts on `listener` forever and runs `serve` on a
/// new thread per connection. Ends when the stack stops.
pub fn spawn_server(
    name: &str,
    listener: TcpListener,
    serve: fn(TcpStream) -> io::Result<()>,
) -> io::Result<JoinHandle<()>> {
    let tname = name.to_string();
    std::thread::Builder::new()
        .name(format!("{tname}-accept"))
        .spawn(move || loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    log::debug!("{tname}: connection from {peer}");
                    let n = tname.clone();
                    let spawned =
                        std::thread::Builder::new()
                            .name(tname.clone())
                            .spawn(move || {
                                if let Err(e) = serve(stream) {
                                    log::debug!("{n}: connection from {peer} ended: {e}");
                                }
                            });
                    if let Err(e) = spawned {
                        log::warn!("{tname}: cannot spawn a connection thread: {e}");
                    }
                }
                Err(e) => {
                    log::debug!("{tname}: accept stopped: {e}");
                    return;
                }
            }
        })
}

/// Echo: write back everything read; half-close when the peer does.
pub fn echo(stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = (&stream).read(&mut buf)?;
        if n == 0 {
            stream.shutdown(Shutdown::Write)?;
            return Ok(());
        }
        (&stream).write_all(&buf[..n])?;
    }
}

/// Discard: read and drop everything; close once the peer half-closes and
/// every byte has been read.
pub fn discard(stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    while (&stream).read(&mut buf)? > 0 {}
    stream.shutdown(Shutdown::Write)
}

/// The RFC 864 pattern: lines of 72 printable characters, each starting one
/// character later in the 95-character cycle.
pub fn chargen_pattern(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 74);
    let mut line = 0usize;
    while out.len() < len {
        for i in 0..72 {
            out.push(b' ' + ((line + i) % 95) as u8);
        }
        out.extend_from_slice(b"\r\n");
        line += 1;
    }
    out.truncate(len);
    out
}

/// Chargen: send the pattern until the peer closes or resets.
pub fn chargen(stream: TcpStream) -> io::Result<()> {
    // 95 lines of 74 bytes repeat exactly, so one block can be sent forever.
    let block = chargen_pattern(95 * 74);
    loop {
        (&stream).write_all(&block)?;
    }
}

/// UDP echo: send every datagram back to its source.
pub fn spawn_udp_echo(sock: UdpSocket) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("udp-echo".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if let Err(e) = sock.send_to(&buf[..n], from) {
                            log::debug!("udp echo to {from}: {e}");
                        }
                    }
                    Err(e) => {
                        log::debug!("udp echo stopped: {e}");
                        return;
                    }
                }
            }
        })
}

/// Start echo (TCP+UDP 7), discard (9) and chargen (19) on `net`.
pub fn start_standard(net: &Net) -> io::Result<()> {
    spawn_server("echo", TcpListener::bind(net, ECHO_PORT)?, echo)?;
    spawn_server("discard", TcpListener::bind(net, DISCARD_PORT)?, discard)?;
    spawn_server("chargen", TcpListener::bind(net, CHARGEN_PORT)?, chargen)?;
    spawn_udp_echo(UdpSocket::bind(net, ECHO_PORT)?)?;
    Ok(())
}

pub const HTTP_PORT: u16 = 80;
pub const HTTPS_PORT: u16 = 443;
/// The DNS name the generated server certificate carries besides the address.
pub const SERVER_NAME: &str = "tunstack.local";

/// How `tunstack up` serves HTTP and HTTPS.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Where the CA and server keys live (created on first start).
    pub state_dir: PathBuf,
    /// The user's own certificate chain and key instead of the store's.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Mutual TLS on HTTPS: demand a client certificate signed by a CA in this file.
    pub client_ca: Option<PathBuf>,
    /// Serve files from this directory for paths no built-in endpoint takes.
    pub www: Option<PathBuf>,
    /// Plain HTTP on this port (`None`: no plain HTTP).
    pub http_port: Option<u16>,
    /// HTTPS on this port (`None`: no HTTPS, and no certificates are touched).
    pub https_port: Option<u16>,
    pub limits: Limits,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            state_dir: tls::default_state_dir(),
            cert: None,
            client_ca: None,
            www: None,
            http_port: Some(HTTP_PORT),
            https_port: Some(HTTPS_PORT),
            limits: Limits::default(),
        }
    }
}

/// The running HTTP and HTTPS servers (they stop with the stack).
pub struct HttpServices {
    /// The CA that signed the server certificate (`DIR/ca.pem`); `None`
    /// when the user's own certificate is served.
    pub ca_path: Option<PathBuf>,
    /// The certificate store, when the generated certificate is served.
    pub store: Option<CertStore>,
    pub http_stats: Arc<ServerStats>,
    pub https_stats: Arc<ServerStats>,
}

/// The status page: the stack's counters and its TCP connections, each
/// described like `ss -ti`, plus the HTTP servers' counters.
fn status_page(shared: &Shared, http: &ServerStats, https: &ServerStats) -> String {
    let (addr, stats, conns) = {
        let g = shared.lock();
        (g.stack.addr(), g.stack.stats(), g.stack.tcp_connections())
    };
    let mut out = String::new();
    let _ = writeln!(out, "tunstack {} on {addr}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "\nhttp:  {}", http.summary());
    let _ = writeln!(out, "https: {}", https.summary());
    let _ = writeln!(out, "\nstack counters:\n{stats:#?}");
    let _ = writeln!(out, "\nTCP connections ({}):", conns.len());
    for (local, peer, st) in conns {
        let _ = writeln!(out, "{local} {peer}\n\t{st}");
    }
    out
}

/// The HTTPS server configuration: the user's certificate or the store's
/// (created on first start), with a client verifier for mutual TLS.
fn https_config(
    net: &Net,
    opts: &HttpOptions,
) -> io::Result<(Arc<rustls::ServerConfig>, Option<CertStore>)> {
    let ctx = |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let (chain, key, store) = match &opts.cert {
        Some((cert, key)) => (tls::load_certs(cert)?, tls::load_private_key(key)?, None),
        None => {
            let store =
                CertStore::load_or_create(&opts.state_dir, IpAddr::V4(net.addr()), SERVER_NAME)
                    .map_err(ctx(format!("state directory {}", opts.state_dir.display())))?;
            let s = ServerTls::from_store(&store)?;
            (s.cert_chain, s.key, Some(store))
        }
    };
    let mut server_tls = ServerTls::new(chain, key);
    if let Some(ca) = &opts.client_ca {
        server_tls.client_ca =
            Some(tls::load_roots(ca).map_err(ctx(format!("--client-ca {}", ca.display())))?);
    }
    Ok((server_tls.build()?, store))
}

/// Serve HTTP on `opts.http_port` and HTTPS on `opts.https_port` of the
/// stack, each accept loop on its own thread. Certificates: the user's
/// (`opts.cert`) or the store in `opts.state_dir`, created on first start
/// for the stack's address and [`SERVER_NAME`].
pub fn start_http(net: &Net, opts: &HttpOptions) -> io::Result<HttpServices> {
    let ctx = |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let (tls_config, store) = match opts.https_port {
        Some(_) => {
            let (c, s) = https_config(net, opts)?;
            (Some(c), s)
        }
        None => (None, None),
    };
    let http_stats = Arc::new(ServerStats::default());
    let https_stats = Arc::new(ServerStats::default());
    let shared = net.shared().clone();
    let (h, hs) = (http_stats.clone(), https_stats.clone());
    let mut router = Router::new().status(move || status_page(&shared, &h, &hs));
    if let Some(dir) = &opts.www {
        router = router.static_dir(dir.clone());
    }
    let router: Arc<dyn crate::http::server::Handler> = Arc::new(router);
    let servers = [
        (opts.http_port, None, http_stats.clone()),
        (opts.https_port, tls_config, https_stats.clone()),
    ];
    for (port, tls, stats) in servers {
        let Some(port) = port else { continue };
        let listener =
            TcpListener::bind_with_backlog(net, port, 256).map_err(ctx(format!("port {port}")))?;
        let so = ServerOptions {
            limits: opts.limits.clone(),
            tls,
            stop: Default::default(),
            stats,
        };
        let stop = so.stop.clone();
        let shared = net.shared().clone();
        let handler = router.clone();
        std::thread::Builder::new()
            .name(format!("http-{port}"))
            .spawn(move || {
                // The accept loop retries errors; once the stack has
                // stopped, make it return instead.
                let accept = move || {
                    let r = listener.accept().map(|(s, _)| s);
                    if r.is_err() && shared.is_stopped() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    r
                };
                if let Err(e) = crate::http::server::serve(accept, handler, so) {
                    log::warn!("http server on port {port} stopped: {e}");
                }
            })?;
    }
    let ca_path = store.as_ref().map(|s| s.ca_path());
    Ok(HttpServices {
        ca_path,
        store,
        http_stats,
        https_stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc864_chargen_lines_rotate_and_repeat() {
        let p = chargen_pattern(95 * 74 * 2);
        assert_eq!(&p[..3], b" !\"");
        assert_eq!(&p[72..74], b"\r\n");
        assert_eq!(p[74], b'!', "second line starts one character later");
        assert_eq!(
            &p[..95 * 74],
            &p[95 * 74..],
            "the pattern repeats every 95 lines"
        );
        assert!(p
            .iter()
            .all(|&c| (32..127).contains(&c) || c == b'\r' || c == b'\n'));
    }
}
