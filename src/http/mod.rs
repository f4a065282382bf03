//! A small HTTP/1.1 server and client, generic over `Read + Write` streams.
//!
//! Nothing here knows which TCP it runs on: the server takes an `accept`
//! function returning any [`Transport`], and the client a
//! `connect(host, port)` function. Both `std::net::TcpStream` and the
//! stack's [`crate::runtime::TcpStream`] implement [`Transport`], so the
//! same code is tested over the kernel's loopback and runs on the stack.
//! TLS (rustls, see [`crate::tls`]) is layered on top by both sides.
//!
//! * [`server`]: [`server::serve`] with a [`server::Router`] (`/`, `/status`,
//!   `/bytes/N`, `/echo`, static files), keep-alive, chunked request bodies,
//!   streamed responses, limits and clear 4xx answers.
//! * [`client`]: [`client::Client`] for `http://` and `https://` GET/HEAD/POST,
//!   streaming the body into any `Write` with a progress callback.

pub mod client;
pub mod server;

use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// A connection's byte stream, plain or TLS over the transport `S`; `C` is
/// rustls' `ClientConnection` or `ServerConnection`. The client and the
/// server both read and write through it.
pub(crate) enum MaybeTls<C, S: Read + Write> {
    Plain(S),
    Tls(Box<rustls::StreamOwned<C, S>>),
}

impl<C, S, D> Read for MaybeTls<C, S>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<D>>,
    S: Read + Write,
    D: rustls::SideData,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            MaybeTls::Plain(s) => s.read(buf),
            MaybeTls::Tls(t) => t.read(buf),
        }
    }
}

impl<C, S, D> Write for MaybeTls<C, S>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<D>>,
    S: Read + Write,
    D: rustls::SideData,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            MaybeTls::Plain(s) => s.write(buf),
            MaybeTls::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeTls::Plain(s) => s.flush(),
            MaybeTls::Tls(t) => t.flush(),
        }
    }
}

/// A byte stream the HTTP code can run on: `Read + Write`, plus optional
/// timeouts (used for 408 and to bound slow peers) and half-close.
pub trait Transport: Read + Write + Send + 'static {
    /// Set the read timeout; `Ok(false)` if the stream has none.
    fn apply_read_timeout(&self, t: Option<Duration>) -> io::Result<bool> {
        let _ = t;
        Ok(false)
    }
    /// Set the write timeout; `Ok(false)` if the stream has none.
    fn apply_write_timeout(&self, t: Option<Duration>) -> io::Result<bool> {
        let _ = t;
        Ok(false)
    }
    /// Half-close: send FIN after the data written so far.
    fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
    /// The peer's address, if known.
    fn peer(&self) -> Option<SocketAddr> {
        None
    }
}

impl Transport for std::net::TcpStream {
    fn apply_read_timeout(&self, t: Option<Duration>) -> io::Result<bool> {
        std::net::TcpStream::set_read_timeout(self, t.map(nonzero)).map(|_| true)
    }
    fn apply_write_timeout(&self, t: Option<Duration>) -> io::Result<bool> {
        std::net::TcpStream::set_write_timeout(self, t.map(nonzero)).map(|_| true)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        std::net::TcpStream::shutdown(self, std::net::Shutdown::Write)
    }
    fn peer(&self) -> Option<SocketAddr> {
        self.peer_addr().ok()
    }
}

impl Transport for crate::runtime::TcpStream {
    fn apply_read_timeout(&self, t: Option<Duration>) -> io::Result<bool> {
        crate::runtime::TcpStream::set_read_timeout(self, t.map(nonzero)).map(|_| true)
    }
    fn apply_write_timeout(&self, t: Option<Duration>) -> io::Result<bool> {
        crate::runtime::TcpStream::set_write_timeout(self, t.map(nonzero)).map(|_| true)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        crate::runtime::TcpStream::shutdown(self, std::net::Shutdown::Write)
    }
    fn peer(&self) -> Option<SocketAddr> {
        self.peer_addr().ok().map(SocketAddr::V4)
    }
}

/// std rejects a zero timeout; round it up to the smallest one.
fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

/// True for the errors a read or write timeout produces (std gives
/// `WouldBlock` on Linux, the stack `TimedOut`).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The error a body reader returns past its size limit.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body larger than the limit")
    }
}

impl std::error::Error for BodyTooLarge {}

/// True if `e` is a [`BodyTooLarge`].
pub fn is_body_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<BodyTooLarge>())
}

/// Why reading a message head failed.
#[derive(Debug)]
pub enum HeadError {
    /// The head exceeded the size limit.
    TooLarge,
    /// The stream ended; `partial` if some bytes of a head had arrived.
    Eof {
        partial: bool,
    },
    /// A read timed out; `partial` as above.
    Timeout {
        partial: bool,
    },
    Io(io::Error),
}

/// Read one message head (through the blank line) from `r`, consuming
/// exactly its bytes. Leading empty lines are skipped (RFC 9112 §2.2).
/// `before_read(r, partial)` runs before each read that may block (to set
/// a timeout from a deadline, or to refuse with `TimedOut` when it has
/// passed); `partial` tells whether part of the head has arrived.
pub fn read_head<R: BufRead>(
    r: &mut R,
    max: usize,
    mut before_read: impl FnMut(&mut R, bool) -> io::Result<()>,
) -> Result<Vec<u8>, HeadError> {
    let mut head: Vec<u8> = Vec::new();
    loop {
        if let Err(e) = before_read(r, !head.is_empty()) {
            return Err(classify(e, !head.is_empty()));
        }
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(classify(e, !head.is_empty())),
        };
        if avail.is_empty() {
            return Err(HeadError::Eof {
                partial: !head.is_empty(),
            });
        }
        let mut used = 0;
        let mut done = false;
        for &b in avail {
            used += 1;
            if head.is_empty() && (b == b'\r' || b == b'\n') {
                // Skip CRLFs before the start line.
                continue;
            }
            head.push(b);
            if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
                done = true;
                break;
            }
            if head.len() > max {
                break;
            }
        }
        r.consume(used);
        if done {
            return Ok(head);
        }
        if head.len() > max {
            return Err(HeadError::TooLarge);
        }
    }
}

fn classify(e: io::Error, partial: bool) -> HeadError {
    if is_timeout(&e) {
        HeadError::Timeout { partial }
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        HeadError::Eof { partial }
    } else {
        HeadError::Io(e)
    }
}

fn bad_data(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data,
    DataEnd,
    Done,
}

/// Decodes a `Transfer-Encoding: chunked` body (RFC 9112 §7.1). Chunk
/// extensions are ignored, trailers are read and dropped. Malformed framing
/// gives `InvalidData`, a stream that ends early `UnexpectedEof`.
pub struct ChunkedReader<R> {
    inner: R,
    state: ChunkState,
    left: u64,
}

/// Longest chunk-size line and longest trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

impl<R: BufRead> ChunkedReader<R> {
    pub fn new(inner: R) -> ChunkedReader<R> {
        ChunkedReader {
            inner,
            state: ChunkState::Size,
            left: 0,
        }
    }

    /// True once the last chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Read one line (without its CRLF), at most `max` bytes.
    fn line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            let avail = self.inner.fill_buf()?;
            if avail.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let (n, found) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            line.extend_from_slice(&avail[..n]);
            self.inner.consume(n);
            if line.len() > max + 2 {
                return Err(bad_data("chunk line too long"));
            }
            if found {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
        }
    }

    fn read_size(&mut self) -> io::Result<()> {
        let line = self.line(MAX_CHUNK_LINE)?;
        let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
        let hex = std::str::from_utf8(&line[..end])
            .map_err(|_| bad_data("bad chunk size"))?
            .trim_matches(|c| c == ' ' || c == '\t');
        if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad_data("bad chunk size"));
        }
        let size = u64::from_str_radix(hex, 16).map_err(|_| bad_data("bad chunk size"))?;
        if size == 0 {
            let mut total = 0;
            loop {
                let t = self.line(MAX_TRAILERS)?;
                if t.is_empty() {
                    break;
                }
                total += t.len() + 2;
                if total > MAX_TRAILERS {
                    return Err(bad_data("trailers too long"));
                }
            }
            self.state = ChunkState::Done;
        } else {
            self.left = size;
            self.state = ChunkState::Data;
        }
        Ok(())
    }
}

impl<R: BufRead> Read for ChunkedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(0),
                ChunkState::Size => self.read_size()?,
                ChunkState::DataEnd => {
                    if !self.line(0)?.is_empty() {
                        return Err(bad_data("chunk data longer than its size"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Data => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    self.left -= n as u64;
                    if self.left == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                    return Ok(n);
                }
            }
        }
    }
}

/// Writes a chunked body: each `write` becomes one chunk; [`finish`]
/// writes the last chunk.
///
/// [`finish`]: ChunkedWriter::finish
pub struct ChunkedWriter<W: Write> {
    inner: W,
}

impl<W: Write> ChunkedWriter<W> {
    pub fn new(inner: W) -> ChunkedWriter<W> {
        ChunkedWriter { inner }
    }

    /// Write the terminating zero-size chunk and return the stream.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(b"0\r\n\r\n")?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut msg = format!("{:x}\r\n", buf.len()).into_bytes();
        msg.extend_from_slice(buf);
        msg.extend_from_slice(b"\r\n");
        self.inner.write_all(&msg)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Fails with [`BodyTooLarge`] once more than `limit` bytes came through.
pub struct LimitReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> LimitReader<R> {
    pub fn new(inner: R, limit: u64) -> LimitReader<R> {
        LimitReader { inner, left: limit }
    }
}

impl<R: Read> Read for LimitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // Probe one byte: a body of exactly `limit` bytes is fine.
            let mut one = [0u8; 1];
            return match self.inner.read(&mut one)? {
                0 => Ok(0),
                _ => Err(io::Error::other(BodyTooLarge)),
            };
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Exactly `len` bytes of a `Content-Length` body: ends early with
/// `UnexpectedEof` (a truncated body is an error, not a short body).
pub struct LengthReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> LengthReader<R> {
    pub fn new(inner: R, len: u64) -> LengthReader<R> {
        LengthReader { inner, left: len }
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.left
    }
}

impl<R: Read> Read for LengthReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body ended {} bytes early", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The deterministic content of `/bytes/N`: byte `i` of the body.
/// Lines of 63 letters and a newline, each line shifted by one letter,
/// so a misplaced or dropped segment changes the content.
pub fn pattern_byte(i: u64) -> u8 {
    if i % 64 == 63 {
        b'\n'
    } else {
        b'a' + ((i / 64 + i % 64) % 26) as u8
    }
}

/// Fill `buf` with the `/bytes/N` pattern starting at offset `start`.
pub fn fill_pattern(start: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(start + k as u64);
    }
}

/// A reader of exactly `len` bytes of the `/bytes/N` pattern.
pub struct PatternReader {
    pos: u64,
    len: u64,
}

impl PatternReader {
    pub fn new(len: u64) -> PatternReader {
        PatternReader { pos: 0, len }
    }
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min((self.len - self.pos).min(usize::MAX as u64) as usize);
        fill_pattern(self.pos, &mut buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// The standard reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// True if a comma-separated header value list contains `token`
/// (case-insensitive), e.g. `Connection: keep-alive, Upgrade`.
pub fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn dechunk(input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ChunkedReader::new(Cursor::new(input)).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn chunked_decodes_chunks_extensions_and_trailers() {
        let body =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(dechunk(body).unwrap(), b"Wikipedia in\r\n\r\nchunks.");
    }

    #[test]
    fn chunked_stops_at_last_chunk_and_leaves_next_message() {
        let mut r = ChunkedReader::new(Cursor::new(&b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1"[..]));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert!(r.is_done());
        let mut rest = String::new();
        r.into_inner().read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "GET / HTTP/1.1");
    }

    #[test]
    fn chunked_rejects_bad_size_and_overlong_data() {
        assert_eq!(
            dechunk(b"zz\r\nabc\r\n0\r\n\r\n").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            dechunk(b"-1\r\nabc\r\n0\r\n\r\n").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            dechunk(b"2\r\nabc\r\n0\r\n\r\n").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            dechunk(b"fffffffffffffffff\r\n").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn chunked_truncated_is_unexpected_eof() {
        assert_eq!(
            dechunk(b"5\r\nab").unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            dechunk(b"5\r\nabcde\r\n").unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn chunked_writer_round_trips() {
        let mut w = ChunkedWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let enc = w.finish().unwrap();
        assert_eq!(enc, b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n");
        assert_eq!(dechunk(&enc).unwrap(), b"hello world");
    }

    #[test]
    fn limit_reader_allows_exact_limit_and_refuses_more() {
        let mut out = Vec::new();
        LimitReader::new(Cursor::new(vec![1u8; 10]), 10)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), 10);
        let e = LimitReader::new(Cursor::new(vec![1u8; 11]), 10)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(is_body_too_large(&e));
    }

    #[test]
    fn read_head_consumes_exactly_the_head_and_skips_leading_crlf() {
        let mut r = io::BufReader::new(Cursor::new(
            &b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nBODY"[..],
        ));
        let h = read_head(&mut r, 1024, |_, _| Ok(())).unwrap();
        assert_eq!(h, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "BODY");
    }

    #[test]
    fn read_head_refuses_oversized_head() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000));
        let mut r = io::BufReader::new(Cursor::new(big.into_bytes()));
        assert!(matches!(
            read_head(&mut r, 4096, |_, _| Ok(())),
            Err(HeadError::TooLarge)
        ));
    }

    #[test]
    fn read_head_reports_partial_eof() {
        let mut r = io::BufReader::new(Cursor::new(&b"GET / HT"[..]));
        assert!(matches!(
            read_head(&mut r, 4096, |_, _| Ok(())),
            Err(HeadError::Eof { partial: true })
        ));
        let mut r = io::BufReader::new(Cursor::new(&b""[..]));
        assert!(matches!(
            read_head(&mut r, 4096, |_, _| Ok(())),
            Err(HeadError::Eof { partial: false })
        ));
    }

    #[test]
    fn length_reader_truncated_body_is_unexpected_eof() {
        let mut out = Vec::new();
        let e = LengthReader::new(Cursor::new(b"abc"), 5)
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let mut out = Vec::new();
        LengthReader::new(Cursor::new(b"abcdef"), 5)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn pattern_is_deterministic_and_offset_consistent() {
        let mut whole = Vec::new();
        PatternReader::new(1000).read_to_end(&mut whole).unwrap();
        assert_eq!(whole.len(), 1000);
        let mut part = vec![0u8; 100];
        fill_pattern(500, &mut part);
        assert_eq!(&whole[500..600], &part[..]);
        assert_eq!(whole[63], b'\n');
        assert_eq!(&whole[..3], b"abc");
        assert_eq!(&whole[64..67], b"bcd");
    }
}
