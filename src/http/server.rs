//! HTTP/1.1 server: one thread per connection (capped), keep-alive,
//! Content-Length and chunked request bodies, streamed responses, and
//! limits with clear 4xx answers.
//!
//! Entry points: [`serve`] (any `accept` function), [`serve_std`] and
//! [`serve_stack`]; the [`Router`] provides the built-in endpoints:
//!
//! | path | methods | answer |
//! | --- | --- | --- |
//! | `/`, `/status` | GET, HEAD | the text of the status closure ([`Router::status`]) |
//! | `/bytes/N` | GET, HEAD | exactly N bytes of [`super::pattern_byte`], streamed |
//! | `/echo` | POST, PUT | the request body (bounded by [`Limits::max_body`]) |
//! | anything else | GET, HEAD | a file under [`Router::static_dir`], if set; else 404 |
//!
//! Error answers: 400 malformed request (bad request line, header, framing,
//! or missing Host in HTTP/1.1), 404, 405 (with `Allow`), 408 when a request
//! head does not arrive within [`Limits::header_timeout`] (streams with
//! timeouts only), 411 for POST/PUT without a length, 413 for a body over
//! [`Limits::max_body`], 431 for a head over [`Limits::max_header_bytes`] or
//! more than [`Limits::max_headers`] fields, 501 for an unknown transfer
//! coding, 505 for HTTP/2+ request lines, 503 beyond
//! [`Limits::max_connections`] concurrent connections.

use super::{
    has_token, is_body_too_large, is_timeout, read_head, reason, ChunkedReader, HeadError,
    LengthReader, LimitReader, PatternReader, Transport,
};
use crate::tls::{connection_info, TlsInfo};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits that bound what one client can make the server hold or wait for.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request head (request line + headers), bytes. Beyond: 431.
    pub max_header_bytes: usize,
    /// Most header fields in a request. Beyond: 431.
    pub max_headers: usize,
    /// Largest request body, bytes. Beyond: 413.
    pub max_body: u64,
    /// Time allowed for a whole request head once its first byte arrived,
    /// and for the first request on a new connection. Beyond: 408.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Bound on each read of a request body and each write of a response.
    pub io_timeout: Duration,
    /// Most concurrent connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Most requests on one connection before it is closed.
    pub max_requests_per_connection: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body: 16 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_requests_per_connection: 10_000,
        }
    }
}

/// Counters a server keeps (share the `Arc` with a status page).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub active: AtomicUsize,
    pub refused_busy: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub requests: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub body_bytes_sent: AtomicU64,
}

impl ServerStats {
    /// A one-line summary, e.g. for a status page.
    pub fn summary(&self) -> String {
        format!(
            "connections {} (active {}, refused busy {}, TLS handshake failures {}), requests {}, 4xx {}, 5xx {}, body bytes sent {}",
            self.connections.load(Ordering::Relaxed),
            self.active.load(Ordering::Relaxed),
            self.refused_busy.load(Ordering::Relaxed),
            self.tls_handshake_failures.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
            self.responses_4xx.load(Ordering::Relaxed),
            self.responses_5xx.load(Ordering::Relaxed),
            self.body_bytes_sent.load(Ordering::Relaxed),
        )
    }
}

/// How to run a server.
#[derive(Clone, Default)]
pub struct ServerOptions {
    pub limits: Limits,
    /// Serve HTTPS with this configuration (see [`crate::tls::ServerTls`]).
    pub tls: Option<Arc<ServerConfig>>,
    /// Set to stop: [`serve`] returns after its next `accept` returns.
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<ServerStats>,
}

/// A parsed request head.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// The path part of the target (still percent-encoded).
    pub path: String,
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header fields in order; values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    pub peer: Option<SocketAddr>,
    /// Set on HTTPS connections.
    pub tls: Option<TlsInfo>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True for HEAD (handlers answer as for GET; the server drops the body).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// A response body.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// `len` bytes read from `reader` while sending (never buffered whole).
    Stream {
        len: u64,
        reader: Box<dyn Read + Send>,
    },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Stream { len, .. } => *len,
        }
    }
}

/// A response: status, extra header fields, body. The server adds
/// `Content-Length`, `Connection`, `Date` and `Server`.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Body) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::new(
            status,
            "text/plain; charset=utf-8",
            Body::Bytes(text.into().into_bytes()),
        )
    }

    /// A plain-text error page: "404 Not Found\n".
    pub fn error(status: u16) -> Response {
        Response::text(status, format!("{status} {}\n", reason(status)))
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Something that answers requests. `body` yields the request body
/// (de-chunked, bounded by [`Limits::max_body`]); errors from it should be
/// returned as they are, and the server turns them into 400/408/413.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request, body: &mut dyn Read) -> io::Result<Response>;
}

impl<F> Handler for F
where
    F: Fn(&Request, &mut dyn Read) -> io::Result<Response> + Send + Sync + 'static,
{
    fn handle(&self, req: &Request, body: &mut dyn Read) -> io::Result<Response> {
        self(req, body)
    }
}

/// The status page generator.
pub type StatusFn = Arc<dyn Fn() -> String + Send + Sync>;

/// The built-in endpoints plus optional prefix routes and static files.
pub struct Router {
    status: StatusFn,
    static_dir: Option<PathBuf>,
    routes: Vec<(String, Arc<dyn Handler>)>,
}

impl Default for Router {
    fn default() -> Router {
        Router::new()
    }
}

impl Router {
    pub fn new() -> Router {
        Router {
            status: Arc::new(|| "tunstack http server\n".to_string()),
            static_dir: None,
            routes: Vec::new(),
        }
    }

    /// The text of `/` and `/status`, produced per request (inject the
    /// stack's counters here).
    pub fn status(mut self, f: impl Fn() -> String + Send + Sync + 'static) -> Router {
        self.status = Arc::new(f);
        self
    }

    /// Serve files under `dir` for paths no other route takes.
    pub fn static_dir(mut self, dir: impl Into<PathBuf>) -> Router {
        self.static_dir = Some(dir.into());
        self
    }

    /// Send paths equal to `prefix` or under `prefix/` to `handler`
    /// (checked before the built-in endpoints).
    pub fn route(mut self, prefix: &str, handler: impl Handler) -> Router {
        self.routes
            .push((prefix.trim_end_matches('/').to_string(), Arc::new(handler)));
        self
    }

    fn get_only(req: &Request) -> Option<Response> {
        match req.method.as_str() {
            "GET" | "HEAD" => None,
            _ => Some(Response::error(405).with_header("Allow", "GET, HEAD")),
        }
    }

    fn bytes(&self, req: &Request, n: &str) -> Response {
        if let Some(r) = Router::get_only(req) {
            return r;
        }
        match n.parse::<u64>() {
            Ok(len) if !n.starts_with('+') => Response::new(
                200,
                "text/plain",
                Body::Stream {
                    len,
                    reader: Box::new(PatternReader::new(len)),
                },
            ),
            _ => Response::text(
                400,
                "400 Bad Request: /bytes/N needs a decimal byte count\n",
            ),
        }
    }

    fn echo(&self, req: &Request, body: &mut dyn Read) -> io::Result<Response> {
        if req.method != "POST" && req.method != "PUT" {
            return Ok(Response::error(405).with_header("Allow", "POST, PUT"));
        }
        let mut data = Vec::new();
        body.read_to_end(&mut data)?;
        let ct = req
            .header("Content-Type")
            .unwrap_or("application/octet-stream");
        Ok(Response::new(200, ct, Body::Bytes(data)))
    }

    fn file(&self, req: &Request, root: &Path) -> Response {
        if let Some(r) = Router::get_only(req) {
            return r;
        }
        let Some(rel) = safe_relative_path(&req.path) else {
            return Response::error(404);
        };
        let Ok(root) = root.canonicalize() else {
            return Response::error(404);
        };
        let mut path = root.join(&rel);
        if path.is_dir() {
            path.push("index.html");
        }
        // Symlinks may point anywhere: resolve and check again.
        let Ok(real) = path.canonicalize() else {
            return Response::error(404);
        };
        if !real.starts_with(&root) {
            return Response::error(404);
        }
        let Ok(f) = fs::File::open(&real) else {
            return Response::error(404);
        };
        match f.metadata() {
            Ok(m) if m.is_file() => Response::new(
                200,
                content_type(&real),
                Body::Stream {
                    len: m.len(),
                    reader: Box::new(f.take(m.len())),
                },
            ),
            _ => Response::error(404),
        }
    }
}

impl Handler for Router {
    fn handle(&self, req: &Request, body: &mut dyn Read) -> io::Result<Response> {
        let path = req.path.as_str();
        for (prefix, h) in &self.routes {
            let under = path
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if under {
                return h.handle(req, body);
            }
        }
        if path == "/" || path == "/status" {
            return Ok(
                Router::get_only(req).unwrap_or_else(|| Response::text(200, (self.status)()))
            );
        }
        if let Some(n) = path.strip_prefix("/bytes/") {
            return Ok(self.bytes(req, n));
        }
        if path == "/echo" {
            return self.echo(req, body);
        }
        match &self.static_dir {
            Some(root) => Ok(self.file(req, root)),
            None => Ok(Response::error(404)),
        }
    }
}

/// Percent-decode `path` and turn it into a relative path with only
/// normal components: `None` for `..`, `.`, backslashes, NUL, or bad
/// escapes (path traversal is refused, not normalised away).
pub fn safe_relative_path(path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    let s = std::str::from_utf8(&decoded).ok()?;
    if s.contains('\0') || s.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for seg in s.split('/') {
        match seg {
            "" => continue,
            "." | ".." => return None,
            _ => {}
        }
        let mut comps = Path::new(seg).components();
        match (comps.next(), comps.next()) {
            (Some(Component::Normal(c)), None) => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "md" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "pem" => "application/x-pem-file",
        _ => "application/octet-stream",
    }
}

/// An HTTP-date (IMF-fixdate), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86400;
    let secs = unix_secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn now_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    http_date(secs)
}

/// A connection's byte stream: plain or TLS over the transport.
type Stream<S> = super::MaybeTls<ServerConnection, S>;

impl<S: Transport> Stream<S> {
    fn transport(&self) -> &S {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    fn tls_info(&self) -> Option<TlsInfo> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => Some(connection_info(&t.conn)),
        }
    }

    /// Close politely: TLS close_notify, FIN, then read (and drop) what
    /// the client still sends for a moment, so that an early error answer
    /// is not destroyed by a reset when unread request data remains.
    fn close(mut self) {
        if let Stream::Tls(t) = &mut self {
            t.conn.send_close_notify();
            let _ = t.conn.complete_io(&mut t.sock);
        }
        let _ = self.flush();
        let s = self.transport();
        let _ = s.shutdown_write();
        if let Ok(true) = s.apply_read_timeout(Some(Duration::from_millis(500))) {
            let mut buf = [0u8; 16 * 1024];
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut drained = 0usize;
            let mut raw = match self {
                Stream::Plain(s) => s,
                Stream::Tls(t) => t.sock,
            };
            while Instant::now() < deadline && drained < 4 << 20 {
                match raw.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        }
    }
}

/// Serve connections from `accept` until `opts.stop` is set (checked after
/// each accept). Each connection gets a thread; beyond
/// `limits.max_connections` it is answered 503 (plain HTTP) or closed (TLS)
/// at once. Transient accept errors are retried after a short pause.
pub fn serve<S, A>(mut accept: A, handler: Arc<dyn Handler>, opts: ServerOptions) -> io::Result<()>
where
    S: Transport,
    A: FnMut() -> io::Result<S>,
{
    let opts = Arc::new(opts);
    loop {
        let res = accept();
        if opts.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let s = match res {
            Ok(s) => s,
            Err(e) => {
                log::debug!("http: accept failed: {e}");
                if e.kind() != io::ErrorKind::Interrupted {
                    std::thread::sleep(Duration::from_millis(20));
                }
                continue;
            }
        };
        let stats = &opts.stats;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        if stats.active.fetch_add(1, Ordering::SeqCst) >= opts.limits.max_connections {
            stats.active.fetch_sub(1, Ordering::SeqCst);
            stats.refused_busy.fetch_add(1, Ordering::Relaxed);
            refuse_busy(s, opts.tls.is_some());
            continue;
        }
        let handler = handler.clone();
        let o = opts.clone();
        let spawned = std::thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                connection(s, &*handler, &o);
                o.stats.active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            log::warn!("http: cannot spawn a connection thread: {e}");
            opts.stats.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn refuse_busy<S: Transport>(mut s: S, tls: bool) {
    if tls {
        return;
    }
    let _ = s.apply_write_timeout(Some(Duration::from_millis(200)));
    let body = "503 Service Unavailable: too many connections\n";
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(msg.as_bytes());
    let _ = s.shutdown_write();
}

/// [`serve`] on a `std::net::TcpListener`.
pub fn serve_std(
    listener: std::net::TcpListener,
    handler: Arc<dyn Handler>,
    opts: ServerOptions,
) -> io::Result<()> {
    serve(
        move || {
            let (s, _) = listener.accept()?;
            let _ = s.set_nodelay(true);
            Ok(s)
        },
        handler,
        opts,
    )
}

/// A server running on its own thread (see [`spawn_std`]).
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting (connections in progress finish on their threads)
    /// and wait for the accept loop to end.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with one connection to ourselves.
        let mut poke = self.addr;
        if poke.ip().is_unspecified() {
            poke.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let _ = std::net::TcpStream::connect_timeout(&poke, Duration::from_secs(1));
        t.join()
            .unwrap_or_else(|_| Err(io::Error::other("server thread panicked")))
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Run [`serve_std`] on a new thread; the handle stops it (also on drop).
pub fn spawn_std(
    listener: std::net::TcpListener,
    handler: Arc<dyn Handler>,
    mut opts: ServerOptions,
) -> io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    opts.stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || serve_std(listener, handler, opts))?;
    Ok(ServerHandle {
        addr,
        stop,
        thread: Some(thread),
    })
}

/// [`serve`] on the stack's listener.
pub fn serve_stack(
    listener: crate::runtime::TcpListener,
    handler: Arc<dyn Handler>,
    opts: ServerOptions,
) -> io::Result<()> {
    serve(move || listener.accept().map(|(s, _)| s), handler, opts)
}

/// How the request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// What went wrong parsing a request head: the status to answer.
struct Reject(u16, &'static str);

fn parse_request(
    head: &[u8],
    limits: &Limits,
    peer: Option<SocketAddr>,
    tls: Option<TlsInfo>,
) -> Result<(Request, Framing), Reject> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut storage);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Reject(400, "incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject(431, "too many header fields")),
        Err(httparse::Error::Version) => {
            // "HTTP/2.0" and such parse as a bad version.
            if head.windows(7).any(|w| w == b" HTTP/2" || w == b" HTTP/3") {
                return Err(Reject(505, "only HTTP/1.x is supported"));
            }
            return Err(Reject(400, "bad HTTP version"));
        }
        Err(e) => {
            return Err(Reject(
                400,
                match e {
                    httparse::Error::Token => "bad method or header name",
                    httparse::Error::HeaderName => "bad header name",
                    httparse::Error::HeaderValue => "bad header value",
                    httparse::Error::NewLine => "bad line ending",
                    _ => "malformed request",
                },
            ))
        }
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default().to_string();
    let minor_version = req.version.unwrap_or(1);
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    if !target.starts_with('/') {
        // Absolute-form and "*" are for proxies and OPTIONS; not served here.
        if target != "*" {
            return Err(Reject(400, "request target must be a path"));
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.clone(), None),
    };
    let request = Request {
        method,
        target,
        path,
        query,
        minor_version,
        headers,
        peer,
        tls,
    };
    let hosts = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Host"))
        .count();
    if (minor_version == 1 && hosts == 0) || hosts > 1 {
        return Err(Reject(400, "HTTP/1.1 needs exactly one Host header"));
    }
    // Body framing (RFC 9112 §6.3). Both TE and CL: refused (smuggling).
    let te: Vec<&str> = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Transfer-Encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    let cls: Vec<&str> = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .flat_map(|(_, v)| v.split(','))
        .map(|v| v.trim())
        .collect();
    let framing = if !te.is_empty() {
        if !cls.is_empty() {
            return Err(Reject(400, "both Transfer-Encoding and Content-Length"));
        }
        let codings: Vec<&str> = te
            .iter()
            .flat_map(|v| v.split(','))
            .map(|c| c.trim())
            .collect();
        if minor_version == 0 {
            return Err(Reject(400, "Transfer-Encoding in HTTP/1.0"));
        }
        match codings.as_slice() {
            [c] if c.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => return Err(Reject(501, "only the chunked transfer coding is supported")),
        }
    } else if let Some(first) = cls.first() {
        if cls.iter().any(|c| c != first)
            || first.is_empty()
            || !first.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Reject(400, "bad Content-Length"));
        }
        match first.parse::<u64>() {
            Ok(0) => Framing::None,
            Ok(n) => Framing::Length(n),
            Err(_) => return Err(Reject(413, "Content-Length too large")),
        }
    } else {
        if request.method == "POST" || request.method == "PUT" {
            return Err(Reject(411, "POST and PUT need Content-Length or chunked"));
        }
        Framing::None
    };
    if let Framing::Length(n) = framing {
        if n > limits.max_body {
            return Err(Reject(413, "body larger than the limit"));
        }
    }
    Ok((request, framing))
}

/// Write a response head and body. `keep` is whether the connection stays
/// open; HEAD suppresses the body. Errors mean the connection is unusable.
fn write_response<W: Write>(
    w: &mut W,
    resp: Response,
    head_only: bool,
    keep: bool,
    stats: &ServerStats,
) -> io::Result<()> {
    let len = resp.body.len();
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (n, v) in &resp.headers {
        if n.eq_ignore_ascii_case("Content-Length") || n.eq_ignore_ascii_case("Connection") {
            continue;
        }
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {len}\r\nDate: {}\r\nServer: tunstack\r\n",
        now_date()
    ));
    head.push_str(if keep {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    match resp.status {
        400..=499 => stats.responses_4xx.fetch_add(1, Ordering::Relaxed),
        500..=599 => stats.responses_5xx.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    let mut out = head.into_bytes();
    if head_only {
        w.write_all(&out)?;
        return w.flush();
    }
    match resp.body {
        Body::Empty => w.write_all(&out)?,
        Body::Bytes(b) => {
            out.extend_from_slice(&b);
            w.write_all(&out)?;
        }
        Body::Stream { len, mut reader } => {
            let mut left = len;
            let mut buf = vec![0u8; 64 * 1024];
            // Send the head with the first block of the body.
            let mut pending = out;
            while left > 0 {
                let want = buf.len().min(left.min(usize::MAX as u64) as usize);
                let n = reader.read(&mut buf[..want])?;
                if n == 0 {
                    // The source shrank under us: the framing is now a lie.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "response body source ended early",
                    ));
                }
                pending.extend_from_slice(&buf[..n]);
                w.write_all(&pending)?;
                pending.clear();
                left -= n as u64;
            }
            if !pending.is_empty() {
                w.write_all(&pending)?;
            }
        }
    }
    stats.body_bytes_sent.fetch_add(len, Ordering::Relaxed);
    w.flush()
}

/// Run one connection to its end.
fn connection<S: Transport>(s: S, handler: &dyn Handler, opts: &ServerOptions) {
    let limits = &opts.limits;
    let timeouts = s
        .apply_write_timeout(Some(limits.io_timeout))
        .unwrap_or(false);
    let peer = s.peer();
    let stream = match &opts.tls {
        None => Stream::Plain(s),
        Some(cfg) => {
            let _ = s.apply_read_timeout(Some(limits.header_timeout));
            let conn = match ServerConnection::new(cfg.clone()) {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("http: TLS setup failed: {e}");
                    return;
                }
            };
            let mut t = StreamOwned::new(conn, s);
            while t.conn.is_handshaking() {
                if let Err(e) = t.conn.complete_io(&mut t.sock) {
                    log::debug!("http: TLS handshake with {peer:?} failed: {e}");
                    opts.stats
                        .tls_handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            Stream::Tls(Box::new(t))
        }
    };
    let tls = stream.tls_info();
    let mut r = BufReader::with_capacity(16 * 1024, stream);
    let mut served = 0u64;
    loop {
        // Wait for the next request: the first with header_timeout, later
        // ones idle_timeout for the first byte; then header_timeout total.
        let first_wait = if served == 0 {
            limits.header_timeout
        } else {
            limits.idle_timeout
        };
        let start = Instant::now();
        let mut head_deadline: Option<Instant> = None;
        let head = read_head(&mut r, limits.max_header_bytes, |r, partial| {
            if !timeouts {
                return Ok(());
            }
            let now = Instant::now();
            let deadline = match (head_deadline, partial) {
                (Some(d), _) => d,
                (None, false) => start + first_wait,
                (None, true) => *head_deadline.insert(now + limits.header_timeout),
            };
            if now >= deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
            r.get_ref()
                .transport()
                .apply_read_timeout(Some(deadline - now))?;
            Ok(())
        });
        let head = match head {
            Ok(h) => h,
            Err(HeadError::TooLarge) => {
                let _ = reject(&mut r, 431, "request head too large", opts);
                break;
            }
            Err(HeadError::Timeout { partial }) => {
                if partial || served == 0 {
                    let _ = reject(&mut r, 408, "request head not received in time", opts);
                }
                break;
            }
            Err(HeadError::Eof { .. }) | Err(HeadError::Io(_)) => break,
        };
        let tls_now = if tls.is_some() {
            r.get_ref().tls_info()
        } else {
            None
        };
        let (req, framing) = match parse_request(&head, limits, peer, tls_now) {
            Ok(x) => x,
            Err(Reject(status, why)) => {
                let _ = reject(&mut r, status, why, opts);
                break;
            }
        };
        served += 1;
        opts.stats.requests.fetch_add(1, Ordering::Relaxed);
        let wants_close = match req.header("Connection") {
            Some(v) if has_token(v, "close") => true,
            Some(v) if has_token(v, "keep-alive") => false,
            _ => req.minor_version == 0,
        };
        let mut keep = !wants_close && served < limits.max_requests_per_connection;
        if timeouts {
            let _ = r
                .get_ref()
                .transport()
                .apply_read_timeout(Some(limits.io_timeout));
        }
        // Expect: 100-continue: tell the client to send the body.
        if framing != Framing::None {
            if let Some(e) = req.header("Expect") {
                if !e.eq_ignore_ascii_case("100-continue") {
                    let _ = reject(&mut r, 417, "unsupported expectation", opts);
                    break;
                }
                if r.get_mut()
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .is_err()
                    || r.get_mut().flush().is_err()
                {
                    break;
                }
            }
        }
        let (result, body_ok) = {
            let src: &mut BufReader<Stream<S>> = &mut r;
            let mut body: Box<dyn Read + '_> = match framing {
                Framing::None => Box::new(io::empty()),
                Framing::Length(n) => Box::new(LengthReader::new(src, n)),
                Framing::Chunked => {
                    Box::new(LimitReader::new(ChunkedReader::new(src), limits.max_body))
                }
            };
            let result = handler.handle(&req, &mut body);
            // Drain what the handler left so the next request lines up; a
            // lot left over is not worth reading: close instead.
            let body_ok = match &result {
                Ok(_) => {
                    io::copy(&mut (&mut body).take(1 << 20), &mut io::sink()).is_ok()
                        && matches!(body.read(&mut [0u8; 1]), Ok(0))
                }
                Err(_) => false,
            };
            (result, body_ok)
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let status = if is_body_too_large(&e) {
                    413
                } else if is_timeout(&e) {
                    408
                } else if e.kind() == io::ErrorKind::InvalidData {
                    400
                } else if e.kind() == io::ErrorKind::UnexpectedEof {
                    // The client went away mid-body.
                    break;
                } else {
                    log::warn!("http: handler error for {}: {e}", req.target);
                    500
                };
                let _ = reject(&mut r, status, &e.to_string(), opts);
                break;
            }
        };
        keep &= body_ok;
        if write_response(r.get_mut(), resp, req.is_head(), keep, &opts.stats).is_err() {
            break;
        }
        if !keep {
            break;
        }
    }
    r.into_inner().close();
}

/// Answer an error with `Connection: close`.
fn reject<S: Transport>(
    r: &mut BufReader<Stream<S>>,
    status: u16,
    why: &str,
    opts: &ServerOptions,
) -> io::Result<()> {
    log::debug!("http: {status} {why}");
    let resp = Response::text(status, format!("{status} {}: {why}\n", reason(status)));
    write_response(r.get_mut(), resp, false, false, &opts.stats)
}

/// Fuzzing entry point (not a stable API): serve one in-memory connection
/// whose client sent `input` and then closed, with `handler`; returns what the
/// server wrote. Exercises head reading, request parsing, body framing
/// (Content-Length, chunked) and keep-alive exactly as [`serve`] does.
#[doc(hidden)]
pub fn fuzz_connection(input: &[u8], handler: &dyn Handler, limits: Limits) -> Vec<u8> {
    struct Mem {
        input: io::Cursor<Vec<u8>>,
        output: Arc<std::sync::Mutex<Vec<u8>>>,
    }
    impl Read for Mem {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }
    impl Write for Mem {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut out = self.output.lock().unwrap_or_else(|e| e.into_inner());
            out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Transport for Mem {}
    let output = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mem = Mem {
        input: io::Cursor::new(input.to_vec()),
        output: output.clone(),
    };
    let opts = ServerOptions {
        limits,
        ..ServerOptions::default()
    };
    connection(mem, handler, &opts);
    let out = output.lock().unwrap_or_else(|e| e.into_inner());
    out.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<(Request, Framing), u16> {
        parse_request(raw.as_bytes(), &Limits::default(), None, None).map_err(|Reject(s, _)| s)
    }

    #[test]
    fn http11_without_host_is_400() {
        assert_eq!(parse("GET / HTTP/1.1\r\n\r\n").unwrap_err(), 400);
        assert!(parse("GET / HTTP/1.0\r\n\r\n").is_ok());
    }

    #[test]
    fn post_without_length_is_411() {
        assert_eq!(
            parse("POST /echo HTTP/1.1\r\nHost: a\r\n\r\n").unwrap_err(),
            411
        );
    }

    #[test]
    fn content_length_over_limit_is_413() {
        let raw = format!(
            "PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            1u64 << 40
        );
        assert_eq!(parse(&raw).unwrap_err(), 413);
    }

    #[test]
    fn te_and_cl_together_are_refused() {
        let raw = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(raw).unwrap_err(), 400);
    }

    #[test]
    fn conflicting_content_lengths_are_400() {
        let raw =
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(parse(raw).unwrap_err(), 400);
        let raw = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n";
        assert_eq!(parse(raw).unwrap_err(), 400);
    }

    #[test]
    fn unknown_transfer_coding_is_501() {
        let raw = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse(raw).unwrap_err(), 501);
    }

    #[test]
    fn chunked_and_length_framings_are_recognised() {
        let raw = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(parse(raw).unwrap().1, Framing::Chunked);
        let raw = "POST /echo?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        let (req, f) = parse(raw).unwrap();
        assert_eq!(f, Framing::Length(5));
        assert_eq!(req.path, "/echo");
        assert_eq!(req.query.as_deref(), Some("x=1"));
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..100 {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(parse(&raw).unwrap_err(), 431);
    }

    #[test]
    fn http2_request_line_is_505() {
        assert_eq!(parse("GET / HTTP/2.0\r\nHost: a\r\n\r\n").unwrap_err(), 505);
    }

    #[test]
    fn garbage_request_line_is_400() {
        assert_eq!(parse("\x01\x02 nonsense\r\n\r\n").unwrap_err(), 400);
        assert_eq!(
            parse("GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n").unwrap_err(),
            400
        );
    }

    #[test]
    fn traversal_paths_are_refused() {
        for p in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/a/%2E%2E/%2e%2e/b",
            "/a\\..\\b",
            "/a%00b",
            "/%zz",
            "/./a",
        ] {
            assert!(safe_relative_path(p).is_none(), "{p}");
        }
        assert_eq!(
            safe_relative_path("/a/b%20c.txt").unwrap(),
            PathBuf::from("a/b c.txt")
        );
        assert_eq!(safe_relative_path("//a//b").unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn http_date_formats_imf_fixdate() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    fn req(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            target: path.into(),
            path: path.into(),
            query: None,
            minor_version: 1,
            headers: vec![],
            peer: None,
            tls: None,
        }
    }

    #[test]
    fn router_answers_405_with_allow_for_wrong_method() {
        let r = Router::new();
        let resp = r
            .handle(&req("POST", "/bytes/3"), &mut io::empty())
            .unwrap();
        assert_eq!(resp.status, 405);
        assert!(resp
            .headers
            .iter()
            .any(|(n, v)| n == "Allow" && v == "GET, HEAD"));
        let resp = r.handle(&req("GET", "/echo"), &mut io::empty()).unwrap();
        assert_eq!(resp.status, 405);
    }

    #[test]
    fn router_status_uses_the_closure() {
        let r = Router::new().status(|| "rx 5 packets\n".into());
        let resp = r.handle(&req("GET", "/status"), &mut io::empty()).unwrap();
        match resp.body {
            Body::Bytes(b) => assert_eq!(b, b"rx 5 packets\n"),
            _ => panic!("status should be bytes"),
        }
    }

    #[test]
    fn router_unknown_path_is_404_and_bad_count_400() {
        let r = Router::new();
        assert_eq!(
            r.handle(&req("GET", "/nope"), &mut io::empty())
                .unwrap()
                .status,
            404
        );
        assert_eq!(
            r.handle(&req("GET", "/bytes/x"), &mut io::empty())
                .unwrap()
                .status,
            400
        );
    }

    #[test]
    fn router_prefix_route_takes_precedence() {
        let r = Router::new().route("/kv", |_: &Request, _: &mut dyn Read| {
            Ok(Response::text(200, "kv"))
        });
        assert_eq!(
            r.handle(&req("GET", "/kv/a"), &mut io::empty())
                .unwrap()
                .status,
            200
        );
        assert_eq!(
            r.handle(&req("GET", "/kvx"), &mut io::empty())
                .unwrap()
                .status,
            404
        );
    }
}
