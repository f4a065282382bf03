//! Small standard services that `tunstack up` runs on the stack, useful for
//! testing from the kernel side: echo (RFC 862, TCP and UDP port 7),
//! discard (RFC 863, TCP port 9) and chargen (RFC 864, TCP port 19).
//! Echo gives each connection a thread (the std-like API of
//! [`crate::runtime`]); discard and chargen run on the stack's own thread
//! ([`Net::run_in_loop`]), reading and writing socket buffers in place, so
//! they move bytes as fast as the stack can (the benchmark measures them).
//!
//! [`start_http`] adds the HTTP (port 80) and HTTPS (port 443) servers of
//! [`crate::http::server`], with certificates from a [`CertStore`] in a state
//! directory (or the user's own) and optional mutual TLS.

use crate::http::server::{Body, Limits, Response, Router, ServerOptions, ServerStats};
use crate::runtime::{Net, Shared, TcpListener, TcpStream, UdpSocket};
use crate::stack::{SocketHandle, Stack};
use crate::tcp::TcpError;
use crate::tcp::TcpStats;
use crate::tls::{self, CertStore, ServerTls};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddrV4};
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

/// What an in-loop service wants after serving a connection once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// Call again when the connection changes.
    Again,
    /// Done: close the connection (gracefully; a reset one is just freed).
    Close,
}

/// Run a TCP service on the stack's thread ([`Net::run_in_loop`]): accept
/// on `port`, and call `serve` on a connection with its state `S` when it
/// is new and whenever it received a segment or changed state, until it
/// says [`Serve::Close`]. `serve` must not block. Ends when the stack stops.
pub fn run_loop_service<S: Default + Send + 'static>(
    net: &Net,
    port: u16,
    backlog: usize,
    mut serve: impl FnMut(&mut Stack, SocketHandle, &mut S) -> Serve + Send + 'static,
) -> io::Result<()> {
    let listener = net.with_stack(|s| s.tcp_listen(port, backlog))?;
    let mut conns: std::collections::HashMap<SocketHandle, S> = Default::default();
    let mut first = true;
    net.run_in_loop(move |stack, changed| {
        let mut serve_one = |stack: &mut Stack, h: SocketHandle, st: &mut S| -> bool {
            if serve(stack, h, st) == Serve::Close {
                stack.tcp_close(h);
                false
            } else {
                true
            }
        };
        if first || changed.contains(&listener) {
            first = false;
            loop {
                match stack.tcp_accept(listener) {
                    Ok(h) => {
                        let mut st = S::default();
                        if serve_one(stack, h, &mut st) {
                            conns.insert(h, st);
                        }
                    }
                    Err(TcpError::WouldBlock) => break,
                    Err(e) => {
                        log::debug!("in-loop service on port {port}: accept: {e}");
                        return false;
                    }
                }
            }
        }
        for h in changed {
            if let Some(st) = conns.get_mut(h) {
                if !serve_one(stack, *h, st) {
                    conns.remove(h);
                }
            }
        }
        true
    });
    Ok(())
}

/// Discard on the stack's thread: consume what arrives in place; close
/// once the peer half-closes and everything is read.
pub fn discard_in_loop(stack: &mut Stack, h: SocketHandle, _: &mut ()) -> Serve {
    loop {
        match stack.tcp_recv_with(h, |b| b.len()) {
            Ok(0) => return Serve::Close,
            Ok(_) => {}
            Err(TcpError::WouldBlock) => return Serve::Again,
            Err(_) => return Serve::Close,
        }
    }
}

/// Chargen on the stack's thread: fill the send buffer with the RFC 864
/// pattern whenever it has room, until the connection fails (the peer's
/// RST once it has closed); input is discarded. 95 lines of 74 bytes
/// repeat exactly, so one block is sent round and round.
pub fn chargen_in_loop() -> impl FnMut(&mut Stack, SocketHandle, &mut usize) -> Serve + Send {
    let block = chargen_pattern(95 * 74);
    move |stack, h, at| {
        // Drop input; end of stream only means the peer will not write.
        while matches!(stack.tcp_recv_with(h, |b| b.len()), Ok(1..)) {}
        loop {
            let r = stack.tcp_send_with(h, |buf| {
                let mut w = 0;
                while w < buf.len() {
                    let n = (block.len() - *at).min(buf.len() - w);
                    buf[w..w + n].copy_from_slice(&block[*at..*at + n]);
                    w += n;
                    *at = (*at + n) % block.len();
                }
                w
            });
            match r {
                Ok(_) => {}
                Err(TcpError::WouldBlock) => return Serve::Again,
                Err(_) => return Serve::Close,
            }
        }
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

/// Accept-queue length of the standard services: they take bursts of hundreds
/// of parallel test clients (Linux's somaxconn default is 4096), so SYN cookies
/// start only when the stack's SYN queue (`StackConfig::syn_backlog`) fills.
pub const SERVICE_BACKLOG: usize = 1024;

/// Start echo (TCP+UDP 7), discard (9) and chargen (19) on `net`.
pub fn start_standard(net: &Net) -> io::Result<()> {
    let listen = |port| TcpListener::bind_with_backlog(net, port, SERVICE_BACKLOG);
    spawn_server("echo", listen(ECHO_PORT)?, echo)?;
    run_loop_service(net, DISCARD_PORT, SERVICE_BACKLOG, discard_in_loop)?;
    run_loop_service(net, CHARGEN_PORT, SERVICE_BACKLOG, chargen_in_loop())?;
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

/// One connection's row for [`ss_table`] / [`ss_json`]: local, peer, stats.
pub type ConnRow = (SocketAddrV4, SocketAddrV4, TcpStats);

/// The stack's TCP connections like `ss -tni`: a header, then per
/// connection its state, Recv-Q, Send-Q and addresses, and an indented line
/// with cc, rto, rtt (srtt/rttvar), mss, cwnd, ssthresh, bytes in flight
/// ("unacked"), retransmits and the rest of its counters.
pub fn ss_table(conns: &[ConnRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:>7} {:>7} {:<21} {:<21}",
        "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port"
    );
    for (local, peer, st) in conns {
        let state = st
            .state
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{state:<12} {:>7} {:>7} {:<21} {:<21}",
            st.recv_queue,
            st.send_queue,
            local.to_string(),
            peer.to_string()
        );
        let _ = writeln!(out, "\t {st}");
    }
    out
}

/// The same rows as JSON: `{"connections": [{"local", "peer", "state",
/// "cwnd", "ssthresh", "srtt_ms", "rttvar_ms", "rto_ms", "retransmits",
/// "bytes_in_flight", "send_queue", "recv_queue", ...}]}`.
pub fn ss_json(conns: &[ConnRow]) -> String {
    let ms = |d: Option<crate::time::Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let rows: Vec<serde_json::Value> = conns
        .iter()
        .map(|(local, peer, st)| {
            serde_json::json!({
                "local": local.to_string(),
                "peer": peer.to_string(),
                "state": st.state.map(|s| s.to_string()),
                "cc": st.cc,
                "cwnd": st.cwnd,
                "ssthresh": st.ssthresh,
                "srtt_ms": ms(st.srtt),
                "rttvar_ms": ms(st.rttvar),
                "rto_ms": st.rto.as_secs_f64() * 1e3,
                "mss": st.mss,
                "retransmits": st.retransmits,
                "bytes_in_flight": st.bytes_in_flight,
                "send_queue": st.send_queue,
                "recv_queue": st.recv_queue,
                "snd_wnd": st.snd_wnd,
                "rcv_wnd": st.rcv_wnd,
                "bytes_sent": st.bytes_sent,
                "bytes_acked": st.bytes_acked,
                "bytes_received": st.bytes_received,
                "segs_in": st.segs_in,
                "segs_out": st.segs_out,
                "rcv_rtt_ms": ms(st.rcv_rtt),
                "recv_buffer": st.recv_buffer,
                "send_buffer": st.send_buffer,
            })
        })
        .collect();
    serde_json::json!({ "connections": rows }).to_string()
}

/// Print [`ss_table`] on stdout every `secs` seconds (`tunstack up
/// --stats-every SECS`), from a thread that ends with the stack.
pub fn print_connections_every(net: &Net, secs: u64) {
    let shared = net.shared().clone();
    let period = std::time::Duration::from_secs(secs.max(1));
    let _ = std::thread::Builder::new()
        .name("stats-every".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            if shared.is_stopped() {
                return;
            }
            let conns = shared.lock().stack.tcp_connections();
            print!("{}", ss_table(&conns));
        });
}

/// `/connections` (the [`ss_table`] text) and `/connections.json`.
fn connections_page(shared: &Shared, req: &crate::http::server::Request) -> Response {
    let conns = shared.lock().stack.tcp_connections();
    if req.path.ends_with(".json") || req.query.as_deref() == Some("json") {
        Response::new(
            200,
            "application/json",
            Body::Bytes(ss_json(&conns).into_bytes()),
        )
    } else {
        Response::text(200, ss_table(&conns))
    }
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
    let conn_shared = net.shared().clone();
    let conn_shared2 = net.shared().clone();
    let mut router = Router::new()
        .status(move || status_page(&shared, &h, &hs))
        .route(
            "/connections.json",
            move |req: &crate::http::server::Request, _: &mut dyn io::Read| {
                Ok(connections_page(&conn_shared2, req))
            },
        )
        .route(
            "/connections",
            move |req: &crate::http::server::Request, _: &mut dyn io::Read| {
                Ok(connections_page(&conn_shared, req))
            },
        );
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
    fn ss_table_shows_state_queues_addresses_and_tcp_info() {
        let st = TcpStats {
            state: Some(crate::tcp::State::Established),
            cwnd: 14600,
            ssthresh: 7300,
            srtt: Some(crate::time::Duration::from_micros(1500)),
            rttvar: Some(crate::time::Duration::from_micros(750)),
            rto: crate::time::Duration::from_millis(204),
            retransmits: 3,
            bytes_in_flight: 2920,
            send_queue: 5000,
            recv_queue: 17,
            ..TcpStats::default()
        };
        let rows = vec![(
            "198.19.0.2:80".parse().unwrap(),
            "198.19.0.1:41000".parse().unwrap(),
            st,
        )];
        let t = ss_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("State") && lines[0].contains("Send-Q"));
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "ESTABLISHED",
                "17",
                "5000",
                "198.19.0.2:80",
                "198.19.0.1:41000"
            ]
        );
        for want in [
            "cwnd:14600",
            "ssthresh:7300",
            "rto:204",
            "rtt:1.500/0.750",
            "unacked:2920",
            "retrans:3",
        ] {
            assert!(lines[2].contains(want), "{want} in {}", lines[2]);
        }
        let j: serde_json::Value = serde_json::from_str(&ss_json(&rows)).unwrap();
        let c = &j["connections"][0];
        assert_eq!(c["state"], "ESTABLISHED");
        assert_eq!(c["cwnd"], 14600);
        assert_eq!(c["retransmits"], 3);
        assert_eq!(c["send_queue"], 5000);
        assert_eq!(c["recv_queue"], 17);
        assert_eq!(c["srtt_ms"], 1.5);
    }

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
