//! A recursive DNS server on the stack: `tunstack up --dns`.
//!
//! [`respond`] is the sans-IO core: one request in, one response out (or
//! nothing), given a function that resolves a question. [`serve`] runs it on
//! UDP and TCP port 53 of a running [`Net`] with our [`SharedResolver`]:
//! cached answers are sent from the UDP receive thread; each UDP question
//! that needs the network goes to a pool of resolver threads (up to
//! [`MAX_UDP_WORKERS`]) and each TCP connection gets its own thread, each
//! resolution with its own [`StackTransport`], sharing the cache.
//!
//! Rules: RA is set on every response; a request with RD=0 is answered from
//! the cache alone, never upstream (Unbound's `allow_snoop`: the cached
//! answer, or a referral to the closest cached delegation with its glue);
//! a request that is not a standard
//! QUERY gets REFUSED; a request that does not parse (but has a header) or
//! does not carry exactly one question gets FORMERR; responses (QR set) and
//! runts are dropped. Over UDP an answer larger than the client's limit (512
//! bytes, or its EDNS0 payload size up to [`MAX_UDP_PAYLOAD`]) is sent
//! truncated with TC, without records, so the client retries over TCP.

use super::driver::SharedResolver;
use super::resolver::Answer;
use super::transport::StackTransport;
use crate::runtime::{Net, TcpListener, TcpStream, UdpSocket};
use crate::time::Duration;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use std::io::{self, Read, Write};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// UDP questions resolved at once (resolver threads); when all are busy
/// the receive thread resolves the next one itself and the rest wait in the
/// socket's queue.
pub const MAX_UDP_WORKERS: usize = 64;

/// Questions taken from the UDP socket's queue per wake-up before their
/// answers are handed to the stack together.
pub const UDP_BURST: usize = 64;

/// The largest UDP payload we send, whatever the client advertises.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Most memoised UDP answers kept (the memo is emptied when it fills).
pub const MEMO_ENTRIES: usize = 4096;

/// Wire-format answers the UDP receive thread built from the cache, by the
/// request's bytes after its ID (flags, question as sent, EDNS): a repeated
/// question is answered by copying the stored bytes and patching in the new
/// ID, skipping the parse, the cache walk and the serialisation. An entry is
/// used only while the cache's generation is unchanged (nothing stored,
/// removed or cleared since), for at most one second, and never past the
/// instant at which any TTL in it would read one second less from the cache
/// ([`SharedResolver::try_cached_until`]): a reused answer carries exactly
/// the TTLs a fresh one would, never more, and nothing is served after it
/// expires.
#[derive(Default)]
pub struct AnswerMemo {
    map: std::collections::HashMap<Vec<u8>, MemoEntry>,
}

struct MemoEntry {
    wire: Vec<u8>,
    until: std::time::Instant,
    generation: u64,
}

impl AnswerMemo {
    /// The memoised answer to `req` (with `req`'s ID) if still valid.
    pub fn get(&mut self, req: &[u8], generation: u64, now: std::time::Instant) -> Option<Vec<u8>> {
        if req.len() < 12 {
            return None;
        }
        let e = self.map.get(&req[2..])?;
        if e.generation != generation || now >= e.until {
            self.map.remove(&req[2..]);
            return None;
        }
        let mut out = e.wire.clone();
        out[..2].copy_from_slice(&req[..2]);
        Some(out)
    }

    /// Remember `wire`, the answer to `req`, built at `now` from a cache at
    /// `generation`, whose TTLs hold until `ttls_until` (`None`: no
    /// records, not memoised).
    pub fn put(
        &mut self,
        req: &[u8],
        wire: &[u8],
        ttls_until: Option<std::time::Instant>,
        generation: u64,
        now: std::time::Instant,
    ) {
        let Some(until) = ttls_until else {
            return;
        };
        let until = until.min(now + std::time::Duration::from_secs(1));
        if until <= now || req.len() < 12 || wire.len() < 12 {
            return;
        }
        if self.map.len() >= MEMO_ENTRIES {
            self.map.clear();
        }
        self.map.insert(
            req[2..].to_vec(),
            MemoEntry {
                wire: wire.to_vec(),
                until,
                generation,
            },
        );
    }
}

/// Resolver threads started with the server, so the first question that
/// needs the network does not wait for a thread to be created.
pub const PRESTARTED_WORKERS: usize = 2;

/// Questions that need the network, handed by the UDP receive thread to a
/// pool of resolver threads (at most [`MAX_UDP_WORKERS`], started as
/// needed and kept until the server stops): a miss costs a condition
/// variable wake-up, not a thread start (about 100 µs on a busy machine, as
/// much as the resolution itself).
#[derive(Default)]
struct Misses {
    queue: std::sync::Mutex<MissQueue>,
    ready: std::sync::Condvar,
    /// Threads started (counted by whoever starts one).
    started: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct MissQueue {
    jobs: std::collections::VecDeque<(Vec<u8>, SocketAddrV4)>,
    /// Threads waiting for a job.
    idle: usize,
}

/// What the receive thread does with a miss.
enum Offer {
    /// An idle thread will take it.
    Queued,
    /// Queued; start one more thread for it.
    Spawn,
    /// Every thread is busy: answer it on the receive thread (backpressure,
    /// as the socket's queue then fills).
    Inline(Vec<u8>, SocketAddrV4),
}

impl Misses {
    fn lock(&self) -> std::sync::MutexGuard<'_, MissQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn offer(&self, req: Vec<u8>, from: SocketAddrV4) -> Offer {
        let mut q = self.lock();
        if q.idle > q.jobs.len() {
            q.jobs.push_back((req, from));
            drop(q);
            self.ready.notify_one();
            return Offer::Queued;
        }
        if self.started.load(Ordering::Acquire) < MAX_UDP_WORKERS {
            self.started.fetch_add(1, Ordering::AcqRel);
            q.jobs.push_back((req, from));
            return Offer::Spawn;
        }
        Offer::Inline(req, from)
    }

    /// A resolver thread: answer queued misses until `stop`.
    fn work(&self, stop: &AtomicBool, answer: impl Fn(Vec<u8>, SocketAddrV4)) {
        loop {
            let mut q = self.lock();
            let job = loop {
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                q.idle += 1;
                q = self
                    .ready
                    .wait_timeout(q, std::time::Duration::from_millis(200))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                q.idle -= 1;
            };
            drop(q);
            answer(job.0, job.1);
        }
    }
}

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub udp_queries: AtomicU64,
    pub tcp_queries: AtomicU64,
    pub truncated: AtomicU64,
    pub formerr: AtomicU64,
    pub refused: AtomicU64,
    pub dropped: AtomicU64,
    /// Answers given from the cache without any upstream query.
    pub cache_answers: AtomicU64,
    /// Queries our resolver sent upstream (UDP and TCP).
    pub upstream_queries: AtomicU64,
    /// Requests with RD=0, answered from the cache alone (never upstream).
    pub cache_only: AtomicU64,
}

fn error_response(
    id: u16,
    op: OpCode,
    rd: bool,
    rcode: ResponseCode,
    req: Option<&Message>,
) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Response)
        .set_op_code(op)
        .set_recursion_desired(rd)
        .set_recursion_available(true)
        .set_response_code(rcode);
    if let Some(r) = req {
        m.add_queries(r.queries().iter().cloned());
    }
    m
}

/// Answer one request. `udp_limit` is `Some` over UDP (the response is
/// truncated to fit the client's limit); `resolve` is called for a valid
/// question. `None`: send nothing.
pub fn respond(
    req: &[u8],
    udp: bool,
    mut resolve: impl FnMut(&Name, RecordType, bool) -> Answer,
) -> Option<Vec<u8>> {
    if req.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([req[0], req[1]]);
    let qr = req[2] & 0x80 != 0;
    if qr {
        return None;
    }
    let op = OpCode::from_u8((req[2] >> 3) & 0x0f);
    let rd = req[2] & 0x01 != 0;
    let msg = match Message::from_vec(req) {
        Ok(m) => m,
        Err(_) => {
            return error_response(id, op, rd, ResponseCode::FormErr, None)
                .to_vec()
                .ok();
        }
    };
    if msg.op_code() != OpCode::Query {
        return error_response(id, op, rd, ResponseCode::Refused, Some(&msg))
            .to_vec()
            .ok();
    }
    if msg.queries().len() != 1 {
        return error_response(id, op, rd, ResponseCode::FormErr, Some(&msg))
            .to_vec()
            .ok();
    }
    let q = &msg.queries()[0];
    if q.query_class() != DNSClass::IN
        || matches!(
            q.query_type(),
            RecordType::AXFR | RecordType::IXFR | RecordType::ANY
        )
    {
        return error_response(id, op, rd, ResponseCode::Refused, Some(&msg))
            .to_vec()
            .ok();
    }
    let mut name = q.name().to_lowercase();
    name.set_fqdn(true);
    let a = resolve(&name, q.query_type(), rd);
    let mut m = error_response(id, op, rd, a.rcode, Some(&msg));
    m.add_answers(a.answers.iter().cloned());
    m.add_name_servers(a.authority.iter().cloned());
    m.add_additionals(a.additional.iter().cloned());
    let limit = match msg.extensions() {
        Some(e) => {
            let mut o = Edns::new();
            o.set_max_payload(MAX_UDP_PAYLOAD);
            o.set_version(0);
            m.set_edns(o);
            e.max_payload().clamp(512, MAX_UDP_PAYLOAD) as usize
        }
        None => 512,
    };
    let bytes = m.to_vec().ok()?;
    if udp && bytes.len() > limit {
        m.take_answers();
        m.take_name_servers();
        m.take_additionals();
        m.set_truncated(true);
        return m.to_vec().ok();
    }
    Some(bytes)
}

/// Serve recursive DNS on UDP and TCP port `port` of `net` until `stop`.
/// `resolver` is shared by both (its cache and server table outlive queries).
pub fn serve(
    net: &Net,
    port: u16,
    resolver: &SharedResolver,
    stats: &ServerStats,
    stop: &AtomicBool,
) -> io::Result<()> {
    let udp = UdpSocket::bind(net, port)?;
    let tcp = TcpListener::bind(net, port)?;
    let resolve = |name: &Name, rtype: RecordType, rd: bool| -> Answer {
        if !rd {
            stats.cache_only.fetch_add(1, Ordering::Relaxed);
            return resolver.resolve_cached(name, rtype);
        }
        let mut t = StackTransport::new(net);
        let a = resolver.resolve(&mut t, name, rtype);
        let sent = t.queries_sent();
        stats.upstream_queries.fetch_add(sent, Ordering::Relaxed);
        if sent == 0 && a.from_cache {
            stats.cache_answers.fetch_add(1, Ordering::Relaxed);
        }
        a
    };
    let misses = Misses::default();
    let udp = &udp;
    let misses = &misses;
    let tick = Duration::from_millis(200);
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = udp.set_read_timeout(Some(tick));
            let mut buf = vec![0u8; 65535];
            let mut memo = AnswerMemo::default();
            let send = move |out: Option<Vec<u8>>, from| match out {
                Some(out) => {
                    if out.len() > 3 && out[2] & 0x02 != 0 {
                        stats.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                    count_rcode(stats, &out);
                    let _ = udp.send_to(&out, from);
                }
                None => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            };
            let answer = move |req: Vec<u8>, from| send(respond(&req, true, resolve), from);
            // Resolver threads ready before the first miss (more are started
            // as misses overlap, up to MAX_UDP_WORKERS).
            for _ in 0..PRESTARTED_WORKERS {
                misses.started.fetch_add(1, Ordering::AcqRel);
                s.spawn(move || misses.work(stop, answer));
            }
            // The answers to one burst of queued questions, handed to the
            // stack under one lock with one wake of its thread.
            let mut outbox: Vec<(Vec<u8>, SocketAddrV4)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut next = match udp.recv_from(&mut buf) {
                    Ok(r) => Some(r),
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        log::warn!("dns server: UDP receive failed: {e}");
                        break;
                    }
                };
                while let Some((n, from)) = next {
                    stats.udp_queries.fetch_add(1, Ordering::Relaxed);
                    let mut queue = |out: Option<Vec<u8>>| match out {
                        Some(out) => {
                            if out.len() > 3 && out[2] & 0x02 != 0 {
                                stats.truncated.fetch_add(1, Ordering::Relaxed);
                            }
                            count_rcode(stats, &out);
                            outbox.push((out, from));
                        }
                        None => {
                            stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    };
                    // Fastest path: the same question (bytes after the ID)
                    // was answered from an unchanged cache < 1 s ago.
                    let now = std::time::Instant::now();
                    let generation = resolver.cache_generation();
                    if let Some(out) = memo.get(&buf[..n], generation, now) {
                        stats.cache_answers.fetch_add(1, Ordering::Relaxed);
                        queue(Some(out));
                    } else {
                        // Fast path: a cached answer (or RD=0) is sent from
                        // this thread; only a question that needs the
                        // network gets a worker thread.
                        let mut missed = false;
                        let mut memo_until = None;
                        let fast = respond(&buf[..n], true, |name, rtype, rd| {
                            if !rd {
                                return resolve(name, rtype, rd);
                            }
                            match resolver.try_cached_until(name, rtype) {
                                Some((a, until)) => {
                                    stats.cache_answers.fetch_add(1, Ordering::Relaxed);
                                    memo_until = until;
                                    a
                                }
                                None => {
                                    missed = true;
                                    Answer::servfail()
                                }
                            }
                        });
                        if !missed {
                            if let Some(out) = &fast {
                                memo.put(&buf[..n], out, memo_until, generation, now);
                            }
                            queue(fast);
                        } else {
                            let req = buf[..n].to_vec();
                            match misses.offer(req, from) {
                                Offer::Queued => {}
                                Offer::Spawn => {
                                    s.spawn(move || misses.work(stop, answer));
                                }
                                Offer::Inline(req, from) => answer(req, from),
                            }
                        }
                    }
                    next = if outbox.len() < UDP_BURST {
                        udp.try_recv_from(&mut buf).unwrap_or(None)
                    } else {
                        None
                    };
                }
                if !outbox.is_empty() {
                    let _ = udp.send_to_many(outbox.iter().map(|(b, to)| (&b[..], *to)));
                    outbox.clear();
                }
            }
        });
        while !stop.load(Ordering::Relaxed) {
            match tcp.accept_timeout(Some(tick)) {
                Ok((conn, _)) => {
                    s.spawn(move || {
                        let _ = serve_tcp(conn, stats, stop, resolve);
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => {
                    log::warn!("dns server: TCP accept failed: {e}");
                    break;
                }
            }
        }
    });
    Ok(())
}

fn count_rcode(stats: &ServerStats, out: &[u8]) {
    match out.get(3).map(|b| b & 0x0f) {
        Some(1) => stats.formerr.fetch_add(1, Ordering::Relaxed),
        Some(5) => stats.refused.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
}

/// RFC 7766: length-prefixed messages on one connection until the client
/// closes it, stays idle for 10 s, or the server stops (noticed within 200 ms).
fn serve_tcp(
    conn: TcpStream,
    stats: &ServerStats,
    stop: &AtomicBool,
    resolve: impl Fn(&Name, RecordType, bool) -> Answer + Copy,
) -> io::Result<()> {
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let _ = conn.set_nodelay(true);
    let mut c = &conn;
    'conn: while !stop.load(Ordering::Relaxed) {
        // Between messages, wake every 200 ms to notice `stop`.
        conn.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut lenb = [0u8; 2];
        let mut idle = Duration::ZERO;
        loop {
            match c.read(&mut lenb[..1]) {
                Ok(0) => break 'conn,
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    idle += Duration::from_millis(200);
                    if idle >= Duration::from_secs(10) || stop.load(Ordering::Relaxed) {
                        break 'conn;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        c.read_exact(&mut lenb[1..])?;
        let mut req = vec![0u8; u16::from_be_bytes(lenb) as usize];
        c.read_exact(&mut req)?;
        stats.tcp_queries.fetch_add(1, Ordering::Relaxed);
        let Some(out) = respond(&req, false, resolve) else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        count_rcode(stats, &out);
        let len = u16::try_from(out.len()).map_err(|_| io::Error::other("answer over 64 KiB"))?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        c.write_all(&framed)?;
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, TXT};
    use hickory_proto::rr::{RData, Record};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0x1234).set_recursion_desired(true);
        m.add_query(Query::query(n(name), t));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn one_a(_: &Name, _: RecordType, _: bool) -> Answer {
        Answer {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(
                n("www.alpha.test."),
                300,
                RData::A(A::new(192, 0, 2, 1)),
            )],
            authority: vec![],
            additional: Vec::new(),
            from_cache: false,
        }
    }

    fn big(_: &Name, _: RecordType, _: bool) -> Answer {
        let s = "x".repeat(200);
        Answer {
            rcode: ResponseCode::NoError,
            answers: (0..10)
                .map(|_| {
                    Record::from_rdata(
                        n("big.alpha.test."),
                        300,
                        RData::TXT(TXT::new(vec![s.clone()])),
                    )
                })
                .collect(),
            authority: vec![],
            additional: Vec::new(),
            from_cache: false,
        }
    }

    #[test]
    fn answer_has_ra_rd_id_question_and_records() {
        let out = respond(&query("WWW.alpha.test.", RecordType::A, None), true, one_a).unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.id(), 0x1234);
        assert!(m.recursion_available() && m.recursion_desired());
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(
            m.queries()[0].name(),
            &n("WWW.alpha.test."),
            "question echoed as sent"
        );
        assert_eq!(m.answers().len(), 1);
    }

    #[test]
    fn resolver_is_asked_the_lowercased_name() {
        let mut seen = None;
        respond(
            &query("WWW.Alpha.TEST.", RecordType::A, None),
            true,
            |nm, t, rd| {
                seen = Some((nm.clone(), t));
                one_a(nm, t, rd)
            },
        );
        let (nm, t) = seen.unwrap();
        assert_eq!(nm.to_string(), "www.alpha.test.");
        assert_eq!(t, RecordType::A);
    }

    #[test]
    fn non_query_opcode_is_refused() {
        let mut m = Message::from_vec(&query("x.test.", RecordType::A, None)).unwrap();
        m.set_op_code(OpCode::Update);
        let out = respond(&m.to_vec().unwrap(), true, |_, _, _| panic!("not resolved")).unwrap();
        let r = Message::from_vec(&out).unwrap();
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert!(r.recursion_available());
    }

    #[test]
    fn malformed_request_gets_formerr_with_its_id() {
        let mut b = query("x.test.", RecordType::A, None);
        b.truncate(b.len() - 3);
        let out = respond(&b, true, |_, _, _| panic!("not resolved")).unwrap();
        assert_eq!(&out[..2], &[0x12, 0x34]);
        assert_eq!(out[3] & 0x0f, 1, "FORMERR");
        assert!(out[2] & 0x80 != 0, "QR");
    }

    #[test]
    fn two_questions_get_formerr() {
        let mut m = Message::from_vec(&query("x.test.", RecordType::A, None)).unwrap();
        m.add_query(Query::query(n("y.test."), RecordType::A));
        let out = respond(&m.to_vec().unwrap(), true, |_, _, _| panic!("not resolved")).unwrap();
        assert_eq!(
            Message::from_vec(&out).unwrap().response_code(),
            ResponseCode::FormErr
        );
    }

    #[test]
    fn runts_and_responses_are_dropped() {
        assert!(respond(&[0u8; 11], true, one_a).is_none());
        let mut b = query("x.test.", RecordType::A, None);
        b[2] |= 0x80;
        assert!(respond(&b, true, one_a).is_none());
    }

    #[test]
    fn large_udp_answer_is_truncated_with_tc() {
        let out = respond(&query("big.alpha.test.", RecordType::TXT, None), true, big).unwrap();
        assert!(out.len() <= 512);
        let m = Message::from_vec(&out).unwrap();
        assert!(m.truncated());
        assert!(m.answers().is_empty());
        assert_eq!(m.queries().len(), 1);
    }

    #[test]
    fn edns_payload_raises_the_udp_limit_up_to_1232() {
        // About 2.1 kB: above 1232 even with a 4096 advertised payload.
        let out = respond(
            &query("big.alpha.test.", RecordType::TXT, Some(4096)),
            true,
            big,
        )
        .unwrap();
        assert!(Message::from_vec(&out).unwrap().truncated());
        let small = respond(
            &query("www.alpha.test.", RecordType::A, Some(4096)),
            true,
            one_a,
        )
        .unwrap();
        let m = Message::from_vec(&small).unwrap();
        assert!(!m.truncated());
        assert_eq!(
            m.extensions().as_ref().unwrap().max_payload(),
            MAX_UDP_PAYLOAD
        );
    }

    #[test]
    fn tcp_answer_is_never_truncated() {
        let out = respond(&query("big.alpha.test.", RecordType::TXT, None), false, big).unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert!(!m.truncated());
        assert_eq!(m.answers().len(), 10);
    }

    #[test]
    fn zone_transfer_and_any_are_refused() {
        for t in [RecordType::AXFR, RecordType::ANY] {
            let out = respond(&query("alpha.test.", t, None), false, |_, _, _| {
                panic!("not resolved")
            })
            .unwrap();
            assert_eq!(
                Message::from_vec(&out).unwrap().response_code(),
                ResponseCode::Refused
            );
        }
    }

    #[test]
    fn rd_bit_is_passed_to_the_resolver_and_echoed() {
        let mut b = query("www.alpha.test.", RecordType::A, None);
        b[2] &= !0x01;
        let mut asked = None;
        let out = respond(&b, true, |nm, t, rd| {
            asked = Some(rd);
            one_a(nm, t, rd)
        })
        .unwrap();
        assert_eq!(
            asked,
            Some(false),
            "RD=0 reaches the resolver as cache-only"
        );
        let m = Message::from_vec(&out).unwrap();
        assert!(!m.recursion_desired() && m.recursion_available());
    }

    #[test]
    fn referral_glue_goes_in_the_additional_section() {
        let out = respond(
            &query("www.alpha.test.", RecordType::A, None),
            true,
            |_, _, _| Answer {
                rcode: ResponseCode::NoError,
                answers: vec![],
                authority: vec![Record::from_rdata(
                    n("test."),
                    300,
                    RData::NS(hickory_proto::rr::rdata::NS(n("ns1.nic.test."))),
                )],
                additional: vec![Record::from_rdata(
                    n("ns1.nic.test."),
                    300,
                    RData::A(A::new(192, 0, 2, 3)),
                )],
                from_cache: true,
            },
        )
        .unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(
            (
                m.answers().len(),
                m.name_servers().len(),
                m.additionals().len()
            ),
            (0, 1, 1)
        );
    }

    #[test]
    fn memo_answers_with_the_new_id_while_the_cache_is_unchanged() {
        let now = std::time::Instant::now();
        let req = query("www.alpha.test.", RecordType::A, None);
        let wire = respond(&req, true, one_a).unwrap();
        let mut memo = AnswerMemo::default();
        memo.put(
            &req,
            &wire,
            Some(now + std::time::Duration::from_secs(300)),
            7,
            now,
        );
        let mut again = req.clone();
        again[..2].copy_from_slice(&[0xab, 0xcd]);
        let out = memo.get(&again, 7, now).expect("memoised");
        assert_eq!(&out[..2], &[0xab, 0xcd]);
        assert_eq!(&out[2..], &wire[2..]);
        assert!(memo.get(&again, 8, now).is_none(), "cache changed");
    }

    #[test]
    fn memo_entry_lasts_at_most_a_second_and_not_past_its_ttl() {
        let now = std::time::Instant::now();
        let sec = std::time::Duration::from_secs(1);
        let req = query("www.alpha.test.", RecordType::A, None);
        let wire = respond(&req, true, one_a).unwrap();
        let mut memo = AnswerMemo::default();
        memo.put(&req, &wire, Some(now + 300 * sec), 1, now);
        assert!(memo.get(&req, 1, now + sec / 2).is_some());
        assert!(memo.get(&req, 1, now + sec).is_none());
        let tick = now + sec / 4;
        memo.put(&req, &wire, Some(tick), 1, now);
        let us = std::time::Duration::from_micros(1);
        assert!(memo.get(&req, 1, tick - us).is_some());
        assert!(
            memo.get(&req, 1, tick).is_none(),
            "a TTL in it reads one less from here"
        );
        memo.put(&req, &wire, Some(now), 1, now);
        assert!(
            memo.get(&req, 1, now).is_none(),
            "already stale: not memoised"
        );
        memo.put(&req, &wire, None, 1, now);
        assert!(memo.get(&req, 1, now).is_none(), "no records, no memo");
    }

    /// The receive thread's cached path (memo, else the cache) for 1.1 s of
    /// real time, across at least one TTL tick: a reused answer's TTL is
    /// never above the cache's just before and never below it just after.
    #[test]
    fn memoised_answer_never_overstates_a_ttl() {
        use crate::dns::cache::Rank;
        use crate::dns::hints::RootHints;
        use crate::dns::resolver::ResolverConfig;
        let hints =
            RootHints::parse(". 3600000 NS root-ns.\nroot-ns. 3600000 A 192.0.2.53\n").unwrap();
        let shared = SharedResolver::new(hints, ResolverConfig::default(), crate::rng::Rng::new(1));
        shared.ctx.lock().unwrap().cache.insert_records(
            &one_a(&n("x."), RecordType::A, true).answers,
            Rank::Answer,
            shared.now(),
        );
        // Out of phase with the record's whole seconds: the first memo entry
        // is made 0.3 s after it was stored, so its TTL ticks 0.7 s later.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let name = n("www.alpha.test.");
        let fresh_ttl = || shared.try_cached(&name, RecordType::A).unwrap().answers[0].ttl();
        let ttl_of = |wire: &[u8]| Message::from_vec(wire).unwrap().answers()[0].ttl();
        let req = query("www.alpha.test.", RecordType::A, None);
        let mut memo = AnswerMemo::default();
        let (mut reused, mut ticks, mut last) = (0, 0, fresh_ttl());
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(1100) {
            let before = fresh_ttl();
            let now = std::time::Instant::now();
            let generation = shared.cache_generation();
            let served = match memo.get(&req, generation, now) {
                Some(w) => {
                    reused += 1;
                    ttl_of(&w)
                }
                None => {
                    let mut until = None;
                    let w = respond(&req, true, |nm, t, _| {
                        let (a, u) = shared.try_cached_until(nm, t).unwrap();
                        until = u;
                        a
                    })
                    .unwrap();
                    memo.put(&req, &w, until, generation, now);
                    ttl_of(&w)
                }
            };
            let after = fresh_ttl();
            assert!(
                served <= before,
                "served TTL {served} over the cache's {before}"
            );
            assert!(
                served >= after,
                "served TTL {served} under the cache's {after}"
            );
            if after < last {
                ticks += 1;
            }
            last = after;
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(ticks >= 1, "the loop crossed a TTL tick");
        assert!(reused > 100, "the memo was used ({reused} times)");
    }

    #[test]
    fn memo_keys_on_flags_and_case_of_the_question() {
        let now = std::time::Instant::now();
        let req = query("www.alpha.test.", RecordType::A, None);
        let wire = respond(&req, true, one_a).unwrap();
        let mut memo = AnswerMemo::default();
        memo.put(
            &req,
            &wire,
            Some(now + std::time::Duration::from_secs(300)),
            1,
            now,
        );
        let upper = query("WWW.alpha.test.", RecordType::A, None);
        assert!(memo.get(&upper, 1, now).is_none(), "other 0x20 case");
        let mut no_rd = req.clone();
        no_rd[2] &= !0x01;
        assert!(memo.get(&no_rd, 1, now).is_none(), "RD differs");
    }
}
