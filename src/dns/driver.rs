//! A small blocking driver for [`Resolution`] over a [`Transport`].
//!
//! [`StdTransport`] is the kernel's sockets (std::net), for loopback tests
//! today; the stack's `runtime::{UdpSocket, TcpStream}` implement the same
//! trait later. The driver owns the clock: it reads `Clock::now()` (plus an
//! offset that tests advance to expire TTLs without sleeping).

use super::cache::{Cache, CacheConfig};
use super::hints::RootHints;
use super::resolver::{Answer, Context, Query, Resolution, ResolverConfig, TraceStep};
use super::servers::{ServerConfig, ServerTable};
use crate::rng::Rng;
use crate::time::{Clock, Duration, Instant};
use hickory_proto::rr::{Name, RecordType};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};

/// How queries reach nameservers. One UDP query is outstanding at a time.
pub trait Transport {
    /// Send `bytes` to `server` over UDP from a fresh socket bound to
    /// `src_port` (0: any port; a transport may also fall back to any port
    /// when that one is taken). Later [`Transport::udp_recv`] calls read that socket.
    fn udp_send(&mut self, server: SocketAddr, src_port: u16, bytes: &[u8]) -> io::Result<()>;
    /// The next datagram on the current socket, from anyone, or `None` when
    /// `timeout` passes first.
    fn udp_recv(&mut self, timeout: Duration) -> io::Result<Option<(SocketAddr, Vec<u8>)>>;
    /// One query over TCP (RFC 7766 two-byte length framing): connect,
    /// send, read one message, within `timeout`.
    fn tcp_query(
        &mut self,
        server: SocketAddr,
        bytes: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>>;
}

/// The kernel's sockets. Counts what it sends.
#[derive(Debug, Default)]
pub struct StdTransport {
    sock: Option<UdpSocket>,
    /// UDP queries sent.
    pub udp_sent: u64,
    /// TCP queries sent.
    pub tcp_sent: u64,
}

impl StdTransport {
    pub fn new() -> StdTransport {
        StdTransport::default()
    }

    pub fn queries_sent(&self) -> u64 {
        self.udp_sent + self.tcp_sent
    }
}

impl Transport for StdTransport {
    fn udp_send(&mut self, server: SocketAddr, src_port: u16, bytes: &[u8]) -> io::Result<()> {
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], src_port).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, src_port).into()
        };
        let sock = match UdpSocket::bind(local) {
            Ok(s) => s,
            Err(_) if src_port != 0 => {
                let mut any = local;
                any.set_port(0);
                UdpSocket::bind(any)?
            }
            Err(e) => return Err(e),
        };
        sock.send_to(bytes, server)?;
        self.udp_sent += 1;
        self.sock = Some(sock);
        Ok(())
    }

    fn udp_recv(&mut self, timeout: Duration) -> io::Result<Option<(SocketAddr, Vec<u8>)>> {
        let Some(sock) = &self.sock else {
            std::thread::sleep(timeout);
            return Ok(None);
        };
        sock.set_read_timeout(Some(timeout.max(Duration::from_micros(1))))?;
        let mut buf = vec![0u8; 65535];
        let r = sock.recv_from(&mut buf);
        datagram_or_timeout(r, buf)
    }

    fn tcp_query(
        &mut self,
        server: SocketAddr,
        bytes: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        let timeout = timeout.max(Duration::from_millis(1));
        let mut s = TcpStream::connect_timeout(&server, timeout)?;
        self.tcp_sent += 1;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        tcp_exchange(&mut s, bytes)
    }
}

/// A `recv_from` result as `udp_recv` reports it: the datagram (`buf`
/// truncated to its length) with its source, or `None` when the read timed
/// out. Shared by the transports over the kernel's sockets and the stack's.
pub(crate) fn datagram_or_timeout<A: Into<SocketAddr>>(
    r: io::Result<(usize, A)>,
    mut buf: Vec<u8>,
) -> io::Result<Option<(SocketAddr, Vec<u8>)>> {
    match r {
        Ok((n, from)) => {
            buf.truncate(n);
            Ok(Some((from.into(), buf)))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Write one length-prefixed message and read one back.
pub fn tcp_exchange<S: Read + Write>(s: &mut S, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let len =
        u16::try_from(bytes.len()).map_err(|_| io::Error::other("DNS message over 65535 bytes"))?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    s.write_all(&out)?;
    s.flush()?;
    let mut lenb = [0u8; 2];
    s.read_exact(&mut lenb)?;
    let mut buf = vec![0u8; u16::from_be_bytes(lenb) as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// A recursive resolver: a [`Context`] (cache, server table, RNG) and a transport.
#[derive(Debug)]
pub struct Resolver<T: Transport> {
    pub ctx: Context,
    pub transport: T,
    clock: Clock,
    /// Added to the clock: tests move time forward to expire TTLs.
    pub time_offset: Duration,
}

impl<T: Transport> Resolver<T> {
    pub fn new(hints: RootHints, config: ResolverConfig, transport: T, rng: Rng) -> Resolver<T> {
        Resolver::with_parts(
            Context::new(
                hints,
                config,
                Cache::new(CacheConfig::default()),
                ServerTable::new(ServerConfig::default()),
                rng,
            ),
            transport,
        )
    }

    pub fn with_parts(ctx: Context, transport: T) -> Resolver<T> {
        Resolver {
            ctx,
            transport,
            clock: Clock::new(),
            time_offset: Duration::ZERO,
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.now() + self.time_offset
    }

    /// Resolve `name`/`rtype`, blocking until the answer (or SERVFAIL).
    pub fn resolve(&mut self, name: &Name, rtype: RecordType) -> Answer {
        self.resolve_traced(name, rtype).0
    }

    /// Like [`Resolver::resolve`], also returning the responses seen (when
    /// `config.trace` is set).
    pub fn resolve_traced(&mut self, name: &Name, rtype: RecordType) -> (Answer, Vec<TraceStep>) {
        let now = self.now();
        let mut res = Resolution::new(name, rtype, &mut self.ctx, now);
        loop {
            let now = self.now();
            if let Some(q) = res.poll_transmit(&mut self.ctx, now) {
                self.send(&mut res, q);
                continue;
            }
            if res.result().is_some() {
                break;
            }
            let Some(at) = res.poll_at() else {
                break;
            };
            let now = self.now();
            if now >= at {
                res.handle_timeout(&mut self.ctx, now);
                continue;
            }
            match self.transport.udp_recv(at - now) {
                Ok(Some((from, bytes))) => {
                    let now = self.now();
                    res.handle_response(&mut self.ctx, from, &bytes, now);
                }
                Ok(None) => {
                    let now = self.now().max(at);
                    res.handle_timeout(&mut self.ctx, now);
                }
                Err(_) => {
                    let now = self.now();
                    res.handle_error(&mut self.ctx, now);
                }
            }
        }
        let trace = std::mem::take(&mut res.trace);
        let answer = res.into_result().unwrap_or_else(|| Answer {
            rcode: hickory_proto::op::ResponseCode::ServFail,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            from_cache: false,
        });
        (answer, trace)
    }

    fn send(&mut self, res: &mut Resolution, q: Query) {
        let now = self.now();
        if q.tcp {
            match self
                .transport
                .tcp_query(q.server, &q.bytes, q.deadline - now)
            {
                Ok(bytes) => {
                    let now = self.now();
                    res.handle_response(&mut self.ctx, q.server, &bytes, now);
                    if res.poll_at().is_some() {
                        // Not accepted (garbage on the stream): no second chance on TCP.
                        res.handle_error(&mut self.ctx, now);
                    }
                }
                Err(_) => {
                    let now = self.now();
                    res.handle_error(&mut self.ctx, now);
                }
            }
        } else if self
            .transport
            .udp_send(q.server, q.src_port, &q.bytes)
            .is_err()
        {
            res.handle_error(&mut self.ctx, now);
        }
    }
}

/// One [`Context`] (cache, server table, RNG) shared by threads, each with
/// its own transport: resolutions run concurrently and the context is locked
/// only for each step of one, so a slow resolution (a silent server) does not
/// hold up others, and cached answers come back at once. `dns::server` uses it.
#[derive(Debug)]
pub struct SharedResolver {
    pub ctx: std::sync::Mutex<Context>,
    clock: Clock,
}

impl SharedResolver {
    pub fn new(hints: RootHints, config: ResolverConfig, rng: Rng) -> SharedResolver {
        SharedResolver::with_context(Context::new(
            hints,
            config,
            Cache::new(CacheConfig::default()),
            ServerTable::new(ServerConfig::default()),
            rng,
        ))
    }

    pub fn with_context(ctx: Context) -> SharedResolver {
        SharedResolver {
            ctx: std::sync::Mutex::new(ctx),
            clock: Clock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Context> {
        self.ctx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resolver's clock (what its cache's TTLs count in).
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Resolve `name`/`rtype` over `t`, blocking this thread only.
    pub fn resolve<T: Transport>(&self, t: &mut T, name: &Name, rtype: RecordType) -> Answer {
        let now = self.clock.now();
        let mut res = Resolution::new(name, rtype, &mut self.lock(), now);
        loop {
            let q = res.poll_transmit(&mut self.lock(), self.clock.now());
            if let Some(q) = q {
                self.send(t, &mut res, q);
                continue;
            }
            if res.result().is_some() {
                break;
            }
            let Some(at) = res.poll_at() else {
                break;
            };
            let now = self.clock.now();
            if now >= at {
                res.handle_timeout(&mut self.lock(), now);
                continue;
            }
            match t.udp_recv(at - now) {
                Ok(Some((from, bytes))) => {
                    let now = self.clock.now();
                    res.handle_response(&mut self.lock(), from, &bytes, now);
                }
                Ok(None) => {
                    let now = self.clock.now().max(at);
                    res.handle_timeout(&mut self.lock(), now);
                }
                Err(_) => {
                    let now = self.clock.now();
                    res.handle_error(&mut self.lock(), now);
                }
            }
        }
        res.into_result().unwrap_or_else(|| Answer {
            rcode: hickory_proto::op::ResponseCode::ServFail,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            from_cache: false,
        })
    }

    /// Answer `name`/`rtype` from the cache alone (an RD=0 request): see
    /// [`Resolution::cache_only`]. Never sends a query.
    pub fn resolve_cached(&self, name: &Name, rtype: RecordType) -> Answer {
        let now = self.clock.now();
        let mut ctx = self.lock();
        let mut res = Resolution::cache_only(name, rtype, &mut ctx, now);
        let q = res.poll_transmit(&mut ctx, now);
        debug_assert!(q.is_none(), "a cache-only resolution sent a query");
        res.into_result().unwrap_or_else(|| Answer {
            rcode: hickory_proto::op::ResponseCode::ServFail,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            from_cache: true,
        })
    }

    /// The answer to `name`/`rtype` if the cache has it (positive or
    /// negative, CNAMEs followed), without sending anything; `None` when
    /// resolving it would need the network. The server's fast path.
    /// The cache's [`Cache::generation`](super::cache::Cache::generation).
    pub fn cache_generation(&self) -> u64 {
        self.lock().cache.generation()
    }

    pub fn try_cached(&self, name: &Name, rtype: RecordType) -> Option<Answer> {
        self.try_cached_until(name, rtype).map(|(a, _)| a)
    }

    /// [`SharedResolver::try_cached`], with the instant until which every
    /// TTL in the answer is still what the cache would say (see
    /// [`Cache::take_ttl_tick`](super::cache::Cache::take_ttl_tick); `None`:
    /// the answer has no records): the server reuses its wire form until then.
    pub fn try_cached_until(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> Option<(Answer, Option<std::time::Instant>)> {
        let now = self.clock.now();
        let mut ctx = self.lock();
        ctx.cache.take_ttl_tick();
        let mut res = Resolution::cache_only(name, rtype, &mut ctx, now);
        let _ = res.poll_transmit(&mut ctx, now);
        let tick = ctx.cache.take_ttl_tick();
        if res.referred() {
            // Not an answer: undo the referral's count, the caller resolves.
            ctx.stats.cache_only_referrals -= 1;
            return None;
        }
        let until = tick.map(|t| self.clock.to_std(t));
        res.into_result().map(|a| (a, until))
    }

    fn send<T: Transport>(&self, t: &mut T, res: &mut Resolution, q: Query) {
        let now = self.clock.now();
        if q.tcp {
            match t.tcp_query(q.server, &q.bytes, q.deadline - now) {
                Ok(bytes) => {
                    let now = self.clock.now();
                    let mut ctx = self.lock();
                    res.handle_response(&mut ctx, q.server, &bytes, now);
                    if res.poll_at().is_some() {
                        res.handle_error(&mut ctx, now);
                    }
                }
                Err(_) => {
                    let now = self.clock.now();
                    res.handle_error(&mut self.lock(), now);
                }
            }
        } else if t.udp_send(q.server, q.src_port, &q.bytes).is_err() {
            res.handle_error(&mut self.lock(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{RData, Record};

    /// One authoritative server for everything: A queries get 192.0.2.1,
    /// other types NODATA with the root SOA.
    struct Fake {
        pending: Option<(SocketAddr, Vec<u8>)>,
        sent: u64,
    }

    fn answer(q: &[u8]) -> Vec<u8> {
        let q = Message::from_vec(q).unwrap();
        let mut m = Message::new();
        m.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_authoritative(true)
            .set_response_code(ResponseCode::NoError);
        m.add_queries(q.queries().iter().cloned());
        let qq = &q.queries()[0];
        if qq.query_type() == RecordType::A {
            m.add_answer(Record::from_rdata(
                qq.name().clone(),
                60,
                RData::A(A::new(192, 0, 2, 1)),
            ));
        } else {
            m.add_name_server(Record::from_rdata(
                Name::root(),
                60,
                RData::SOA(SOA::new(Name::root(), Name::root(), 1, 60, 60, 60, 60)),
            ));
        }
        m.to_vec().unwrap()
    }

    impl Transport for Fake {
        fn udp_send(&mut self, server: SocketAddr, _: u16, bytes: &[u8]) -> io::Result<()> {
            self.sent += 1;
            self.pending = Some((server, answer(bytes)));
            Ok(())
        }
        fn udp_recv(&mut self, _: Duration) -> io::Result<Option<(SocketAddr, Vec<u8>)>> {
            Ok(self.pending.take())
        }
        fn tcp_query(&mut self, _: SocketAddr, bytes: &[u8], _: Duration) -> io::Result<Vec<u8>> {
            self.sent += 1;
            Ok(answer(bytes))
        }
    }

    #[test]
    fn shared_resolver_threads_share_one_cache() {
        let hints =
            RootHints::parse(". 3600000 NS root-ns.\nroot-ns. 3600000 A 192.0.2.53\n").unwrap();
        let shared = SharedResolver::new(hints, ResolverConfig::default(), Rng::new(7));
        let name = Name::from_ascii("www.example.").unwrap();
        let first = std::thread::scope(|s| {
            s.spawn(|| {
                let mut t = Fake {
                    pending: None,
                    sent: 0,
                };
                let a = shared.resolve(&mut t, &name, RecordType::A);
                (a, t.sent)
            })
            .join()
            .unwrap()
        });
        assert_eq!(first.0.rcode, ResponseCode::NoError);
        assert_eq!(first.0.answers.len(), 1);
        assert!(first.1 > 0);
        let mut t = Fake {
            pending: None,
            sent: 0,
        };
        let again = shared.resolve(&mut t, &name, RecordType::A);
        assert_eq!(again.answers, first.0.answers);
        assert!(again.from_cache);
        assert_eq!(t.sent, 0, "another thread's answer is in the shared cache");
    }
}
