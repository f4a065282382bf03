//! HTTP/1.1 client for `http://` and `https://` URLs, generic over a
//! `connect(host, port)` function returning any `Read + Write` stream (a
//! `std::net::TcpStream` via [`std_connect`], or the stack's
//! `runtime::TcpStream`).
//!
//! * Bodies framed by `Content-Length`, `chunked`, or the end of the
//!   connection, streamed into any `Write` with a progress callback.
//! * HTTPS through rustls: certificates are verified against Mozilla's
//!   roots compiled in (`webpki-roots`: works on hosts and in namespaces
//!   without a CA bundle, and the same everywhere) or a given CA file
//!   ([`crate::tls::Roots`]). The client keeps one `Arc<ClientConfig>`, so
//!   the second connection to a server resumes its TLS session.
//! * One idle keep-alive connection is kept and reused for the next request
//!   to the same origin (retried once on a fresh connection if the server
//!   closed it meanwhile).
//! * Redirects are not followed: a 3xx is returned as it is.
//! * A verbose callback receives `curl -v`-style lines (`* ` info,
//!   `> ` request, `< ` response).

use super::{read_head, ChunkedReader, HeadError, LengthReader};
use crate::tls::{connection_info, ClientTls, Roots, TlsInfo};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;
use std::io::{self, BufReader, Read, Write};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

/// A parsed `http://` or `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, at least "/". The fragment is dropped.
    pub target: String,
}

impl Url {
    pub fn parse(s: &str) -> io::Result<Url> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{s}: {why}"));
        let (https, rest) = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            Some(_) => return Err(bad("only http:// and https:// are supported")),
            None => return Err(bad("missing http:// or https://")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(bad("user info in URLs is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port = match port {
            None | Some("") => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
        };
        let tail = tail.split('#').next().unwrap_or("");
        let target = if tail.starts_with('/') {
            tail.to_string()
        } else {
            format!("/{tail}")
        };
        if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("spaces or control characters in the path"));
        }
        Ok(Url {
            https,
            host: host.to_string(),
            port,
            target,
        })
    }

    /// The Host header value (port omitted when it is the default).
    pub fn host_header(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.https { 443 } else { 80 } {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }

    fn origin(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.https { "https" } else { "http" },
            self.host,
            self.port
        )
    }
}

/// Connect with the kernel's TCP: resolve `host` and try each address
/// with a 10 s timeout; reads and writes then time out after 60 s of
/// silence (so a stalled server cannot hang the client forever).
pub fn std_connect(host: &str, port: u16) -> io::Result<std::net::TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
    for a in (host, port).to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                s.set_read_timeout(Some(Duration::from_secs(60)))?;
                s.set_write_timeout(Some(Duration::from_secs(60)))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The client's byte stream, plain or TLS.
type Stream<S> = super::MaybeTls<ClientConnection, S>;

/// What a request got back (the body went to the sink).
#[derive(Clone, Debug)]
pub struct Fetched {
    pub status: u16,
    pub reason: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, String)>,
    /// Body bytes written to the sink.
    pub body_len: u64,
    /// True if the request went over a kept-alive connection.
    pub reused: bool,
    /// The TLS session (for https).
    pub tls: Option<TlsInfo>,
}

impl Fetched {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Verbose = Box<dyn FnMut(&str) + Send>;
type Connect<S> = Box<dyn FnMut(&str, u16) -> io::Result<S> + Send>;

/// An HTTP client over streams from `connect`.
pub struct Client<S: Read + Write> {
    connect: Connect<S>,
    tls: Arc<ClientConfig>,
    verbose: Option<Verbose>,
    idle: Option<(String, BufReader<Stream<S>>, Option<TlsInfo>)>,
    /// Largest response head accepted.
    pub max_header_bytes: usize,
    /// Extra request header fields sent with every request.
    pub headers: Vec<(String, String)>,
}

/// Progress callback: (body bytes so far, total if known).
pub type Progress<'a> = &'a mut dyn FnMut(u64, Option<u64>);

impl<S: Read + Write + Send + 'static> Client<S> {
    /// A client trusting Mozilla's roots.
    pub fn new(
        connect: impl FnMut(&str, u16) -> io::Result<S> + Send + 'static,
    ) -> io::Result<Client<S>> {
        Ok(Client::with_tls(
            connect,
            ClientTls::new(Roots::WebPki).build()?,
        ))
    }

    /// A client with a given TLS configuration (e.g. trusting `ca.pem`, a
    /// TLS version forced, or a client certificate for mutual TLS).
    pub fn with_tls(
        connect: impl FnMut(&str, u16) -> io::Result<S> + Send + 'static,
        tls: Arc<ClientConfig>,
    ) -> Client<S> {
        Client {
            connect: Box::new(connect),
            tls,
            verbose: None,
            idle: None,
            max_header_bytes: 64 * 1024,
            headers: vec![
                ("User-Agent".into(), "tunstack".into()),
                ("Accept".into(), "*/*".into()),
            ],
        }
    }

    /// Receive `curl -v`-style lines.
    pub fn set_verbose(&mut self, f: impl FnMut(&str) + Send + 'static) {
        self.verbose = Some(Box::new(f));
    }

    fn say(&mut self, line: &str) {
        if let Some(v) = &mut self.verbose {
            v(line);
        }
    }

    /// GET `url` into memory.
    pub fn get(&mut self, url: &str) -> io::Result<(Fetched, Vec<u8>)> {
        let mut body = Vec::new();
        let f = self.request("GET", url, None, &mut body, &mut |_, _| {})?;
        Ok((f, body))
    }

    /// GET `url`, streaming the body into `sink` (e.g. a file for `-o`).
    pub fn get_to(
        &mut self,
        url: &str,
        sink: &mut dyn Write,
        progress: Progress,
    ) -> io::Result<Fetched> {
        self.request("GET", url, None, sink, progress)
    }

    /// Send a request and stream the response body into `sink`. Returns
    /// the status and headers whatever the status (no redirects followed).
    pub fn request(
        &mut self,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
        sink: &mut dyn Write,
        progress: Progress,
    ) -> io::Result<Fetched> {
        let url = Url::parse(url)?;
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad method"));
        }
        let mut req = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\n",
            url.target,
            url.host_header()
        );
        for (n, v) in &self.headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut msg = req.clone().into_bytes();
        if let Some(b) = body {
            msg.extend_from_slice(b);
        }
        let origin = url.origin();
        // A kept-alive connection may have been closed by the server: if
        // sending or the first byte of the answer fails on it, retry once.
        let mut conn = match self.idle.take() {
            Some((o, c, tls)) if o == origin => Some((c, tls)),
            _ => None,
        };
        loop {
            let reused = conn.is_some();
            let (mut c, tls) = match conn.take() {
                Some(c) => {
                    self.say(&format!(
                        "* Re-using connection to {}:{}",
                        url.host, url.port
                    ));
                    c
                }
                None => self.open(&url)?,
            };
            for l in req.lines().filter(|l| !l.is_empty()) {
                self.say(&format!("> {l}"));
            }
            let sent = c
                .get_mut()
                .write_all(&msg)
                .and_then(|_| c.get_mut().flush());
            let head = match sent {
                Ok(()) => read_head(&mut c, self.max_header_bytes, |_, _| Ok(())),
                Err(e) => Err(HeadError::Io(e)),
            };
            let head = match head {
                Ok(h) => h,
                Err(HeadError::Eof { partial: false }) | Err(HeadError::Io(_)) if reused => {
                    self.say("* Kept-alive connection was closed; reconnecting");
                    continue;
                }
                Err(e) => return Err(head_error(e)),
            };
            return self.finish(method, &url, c, tls, head, reused, sink, progress);
        }
    }

    fn open(&mut self, url: &Url) -> io::Result<(BufReader<Stream<S>>, Option<TlsInfo>)> {
        self.say(&format!("* Connecting to {} port {}", url.host, url.port));
        let s = (self.connect)(&url.host, url.port)?;
        self.say(&format!("* Connected to {} port {}", url.host, url.port));
        if !url.https {
            return Ok((BufReader::with_capacity(64 * 1024, Stream::Plain(s)), None));
        }
        let name = ServerName::try_from(url.host.clone()).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {e}", url.host))
        })?;
        let conn = ClientConnection::new(self.tls.clone(), name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut t = StreamOwned::new(conn, s);
        while t.conn.is_handshaking() {
            t.conn.complete_io(&mut t.sock)?;
        }
        let info = connection_info(&t.conn);
        self.say(&format!(
            "* TLS: {} / {}, ALPN {}, {}",
            info.version,
            info.cipher_suite,
            info.alpn.as_deref().unwrap_or("none"),
            if info.resumed {
                "session resumed"
            } else {
                "full handshake"
            }
        ));
        if let Some(s) = &info.peer_subject {
            self.say(&format!("* Server certificate subject: {s}"));
        }
        if !info.peer_sans.is_empty() {
            self.say(&format!(
                "* Server certificate SAN: {}",
                info.peer_sans.join(", ")
            ));
        }
        Ok((
            BufReader::with_capacity(64 * 1024, Stream::Tls(Box::new(t))),
            Some(info),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        method: &str,
        url: &Url,
        mut c: BufReader<Stream<S>>,
        tls: Option<TlsInfo>,
        mut head: Vec<u8>,
        reused: bool,
        sink: &mut dyn Write,
        progress: Progress,
    ) -> io::Result<Fetched> {
        let (status, reason, minor_version, headers) = loop {
            let (status, reason, minor, headers) = parse_response(&head)?;
            for l in String::from_utf8_lossy(&head)
                .lines()
                .filter(|l| !l.is_empty())
            {
                self.say(&format!("< {l}"));
            }
            if (100..200).contains(&status) && status != 101 {
                head =
                    read_head(&mut c, self.max_header_bytes, |_, _| Ok(())).map_err(head_error)?;
                continue;
            }
            break (status, reason, minor, headers);
        };
        let find = |name: &str| {
            headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        let no_body = method == "HEAD" || status == 204 || status == 304 || status == 101;
        let te = find("Transfer-Encoding");
        let chunked = te
            .last()
            .and_then(|v| v.split(',').next_back())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        let length = match find("Content-Length").first() {
            Some(v) if te.is_empty() => Some(v.trim().parse::<u64>().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length in response")
            })?),
            _ => None,
        };
        let close = find("Connection")
            .iter()
            .any(|v| super::has_token(v, "close"))
            || (minor_version == 0
                && !find("Connection")
                    .iter()
                    .any(|v| super::has_token(v, "keep-alive")));
        if (300..400).contains(&status) {
            if let Some(l) = find("Location").first() {
                self.say(&format!("* Not following redirect to {l}"));
            }
        }
        let mut body_len = 0u64;
        let mut copy = |r: &mut dyn Read, total: Option<u64>| -> io::Result<()> {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                sink.write_all(&buf[..n])?;
                body_len += n as u64;
                progress(body_len, total);
            }
        };
        let reusable;
        if no_body {
            reusable = !close;
        } else if chunked {
            let mut r = ChunkedReader::new(&mut c);
            copy(&mut r, None)?;
            reusable = !close;
        } else if let Some(n) = length {
            copy(&mut LengthReader::new(&mut c, n), Some(n))?;
            reusable = !close;
        } else if !te.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unsupported transfer coding in response",
            ));
        } else {
            // Delimited by the end of the connection.
            copy(&mut c, None)?;
            reusable = false;
        }
        sink.flush()?;
        if reusable {
            self.idle = Some((url.origin(), c, tls.clone()));
        } else {
            self.say("* Closing connection");
            if let Stream::Tls(t) = c.get_mut() {
                t.conn.send_close_notify();
                let _ = t.conn.complete_io(&mut t.sock);
            }
        }
        Ok(Fetched {
            status,
            reason,
            minor_version,
            headers,
            body_len,
            reused,
            tls,
        })
    }
}

type ParsedHead = (u16, String, u8, Vec<(String, String)>);

fn parse_response(head: &[u8]) -> io::Result<ParsedHead> {
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut storage);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "incomplete response head",
            ))
        }
        Err(e) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed response head: {e}"),
            ))
        }
    }
    let headers = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    Ok((
        resp.code.unwrap_or(0),
        resp.reason.unwrap_or("").to_string(),
        resp.version.unwrap_or(1),
        headers,
    ))
}

fn head_error(e: HeadError) -> io::Error {
    match e {
        HeadError::TooLarge => {
            io::Error::new(io::ErrorKind::InvalidData, "response head too large")
        }
        HeadError::Eof { .. } => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response head",
        ),
        HeadError::Timeout { .. } => io::Error::new(io::ErrorKind::TimedOut, "response timed out"),
        HeadError::Io(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_defaults_ports_and_path() {
        let u = Url::parse("http://example.org").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.target.as_str()),
            (false, "example.org", 80, "/")
        );
        let u = Url::parse("HTTPS://10.0.0.2:8443/bytes/5?x=1#frag").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.target.as_str()),
            (true, "10.0.0.2", 8443, "/bytes/5?x=1")
        );
        assert_eq!(u.host_header(), "10.0.0.2:8443");
        let u = Url::parse("http://[::1]:81?q").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("::1", 81, "/?q")
        );
        assert_eq!(u.host_header(), "[::1]:81");
    }

    #[test]
    fn url_rejects_other_schemes_userinfo_and_bad_ports() {
        for s in [
            "ftp://a/",
            "a/b",
            "http://u:p@h/",
            "http://h:99999/",
            "http:///x",
            "http://h/a b",
        ] {
            assert!(Url::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn response_head_parses_status_and_headers() {
        let (s, r, v, h) = parse_response(b"HTTP/1.0 404 Not Found\r\nX: 1\r\n\r\n").unwrap();
        assert_eq!((s, r.as_str(), v), (404, "Not Found", 0));
        assert_eq!(h, vec![("X".to_string(), "1".to_string())]);
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }
}
