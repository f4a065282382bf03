//! The iterative resolver as a sans-IO state machine.
//!
//! A [`Resolution`] answers one question by iterating from the root hints. It
//! is driven like quinn-proto's connection:
//!
//! ```text
//! let mut r = Resolution::new(name, rtype, &mut ctx, now);
//! loop {
//!     if let Some(q) = r.poll_transmit(&mut ctx, now) { send q.bytes to q.server (UDP or TCP) }
//!     else if let Some(answer) = r.result() { break }
//!     else { wait for a datagram until r.poll_at(): handle_response(..) or handle_timeout(..) }
//! }
//! ```
//!
//! [`Context`] is what outlives one resolution: the cache, the per-server RTT
//! table and failure detector, the RNG, the root hints and the limits.
//! [`super::driver`] has a blocking driver over a [`super::driver::Transport`].
//!
//! Rules implemented (each has a test named after it):
//! * referrals are followed from the root hints or the closest cached
//!   delegation; glue is accepted only for the referral's NS names and only
//!   when inside the delegating zone's bailiwick; NS names without usable
//!   glue are resolved by a sub-resolution (depth-limited, cycle-checked);
//! * CNAME chains are followed within a response and across zones (limit);
//! * a truncated UDP answer is asked again over TCP, of the same server;
//! * EDNS0 with a 1232-byte UDP payload; random query IDs and source ports;
//! * 0x20: the query name's case is randomised and a response whose question
//!   differs in case (or ID, or source address/port, or type) is dropped and
//!   the resolver keeps waiting for the real one;
//! * QNAME minimisation (RFC 9156): one label at a time (then in larger
//!   steps, at most `MAX_MINIMISE_COUNT` queries), type A; NXDOMAIN or an
//!   error for a minimised name falls back to the full name;
//! * limits per resolution on queries, referrals, CNAMEs, sub-resolution depth
//!   and NS-name lookups per delegation (NXNSAttack);
//! * records outside the asked zone's bailiwick are discarded, never cached;
//! * a timeout moves to the next server (fastest first, down servers skipped).

use super::cache::{Cache, Lookup, Rank};
use super::hints::RootHints;
use super::servers::ServerTable;
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as WireQuery, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// RFC 9156 §3: the first this-many minimised queries add one label each.
const MINIMISE_ONE_LAB: usize = 4;
/// RFC 9156 §3: at most this many minimised queries per name.
const MAX_MINIMISE_COUNT: usize = 10;

/// Limits and knobs of the resolver.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Port nameservers listen on.
    pub port: u16,
    /// EDNS0 UDP payload size we advertise (DNS flag day 2020: 1232).
    pub edns_payload: u16,
    pub qname_minimisation: bool,
    pub case_randomisation: bool,
    /// Pick a random source port per query (else the transport picks).
    pub random_source_port: bool,
    /// Query timeout for a server with no RTT measurement yet.
    pub initial_timeout: Duration,
    /// A measured server gets `rtt_timeout_factor` × SRTT, within these bounds.
    pub min_timeout: Duration,
    pub max_timeout: Duration,
    pub rtt_timeout_factor: u32,
    /// Queries sent per resolution, sub-resolutions included.
    pub max_queries: usize,
    pub max_referrals: usize,
    pub max_cname: usize,
    /// Nesting of sub-resolutions for NS names.
    pub max_depth: usize,
    /// NS names resolved per delegation (NXNSAttack fan-out).
    pub max_ns_lookups: usize,
    /// Only IPv4 server addresses are used when false.
    pub ipv6: bool,
    /// Keep every response of a resolution (for `dig +trace`).
    pub trace: bool,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            port: 53,
            edns_payload: 1232,
            qname_minimisation: true,
            case_randomisation: true,
            random_source_port: true,
            initial_timeout: Duration::from_millis(400),
            min_timeout: Duration::from_millis(50),
            max_timeout: Duration::from_secs(3),
            rtt_timeout_factor: 4,
            max_queries: 64,
            max_referrals: 32,
            max_cname: 10,
            max_depth: 4,
            max_ns_lookups: 4,
            ipv6: false,
            trace: false,
        }
    }
}

/// Counters over all resolutions of a [`Context`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    pub queries_sent: u64,
    pub tcp_queries: u64,
    pub responses_accepted: u64,
    pub dropped_wrong_source: u64,
    pub dropped_wrong_id: u64,
    pub dropped_wrong_question: u64,
    pub dropped_malformed: u64,
    pub dropped_unexpected: u64,
    pub out_of_bailiwick_discarded: u64,
    pub timeouts: u64,
    pub truncated: u64,
    pub referrals: u64,
    pub minimised_queries: u64,
    pub qmin_fallbacks: u64,
    pub limit_exceeded: u64,
}

/// What outlives one resolution.
#[derive(Debug)]
pub struct Context {
    pub cache: Cache,
    pub servers: ServerTable,
    pub rng: Rng,
    pub hints: RootHints,
    pub config: ResolverConfig,
    pub stats: ResolverStats,
}

impl Context {
    pub fn new(
        hints: RootHints,
        config: ResolverConfig,
        cache: Cache,
        servers: ServerTable,
        rng: Rng,
    ) -> Context {
        Context {
            cache,
            servers,
            rng,
            hints,
            config,
            stats: ResolverStats::default(),
        }
    }
}

/// One query to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub server: SocketAddr,
    /// The DNS message (without the TCP length prefix).
    pub bytes: Vec<u8>,
    pub tcp: bool,
    /// Source port to send from (0: let the transport choose).
    pub src_port: u16,
    /// When to give up waiting for the answer.
    pub deadline: Instant,
}

/// The outcome of a resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    /// CNAMEs followed, then the final RRset (empty for NODATA/NXDOMAIN).
    pub answers: Vec<Record>,
    /// The SOA of a negative answer.
    pub authority: Vec<Record>,
    /// True when the final data came from the cache without any query.
    pub from_cache: bool,
}

impl Answer {
    fn servfail() -> Answer {
        Answer {
            rcode: ResponseCode::ServFail,
            answers: Vec::new(),
            authority: Vec::new(),
            from_cache: false,
        }
    }
}

/// One response seen during a resolution (kept when `config.trace`).
#[derive(Clone, Debug)]
pub struct TraceStep {
    pub server: SocketAddr,
    /// The zone whose servers were asked.
    pub zone: Name,
    pub qname: Name,
    pub qtype: RecordType,
    pub tcp: bool,
    pub rtt: Duration,
    pub response: Message,
    pub size: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum NsStatus {
    Known,
    Unresolved,
    Resolving,
    Failed,
}

#[derive(Clone, Debug)]
struct NsState {
    name: Name,
    addrs: Vec<IpAddr>,
    status: NsStatus,
}

#[derive(Clone, Debug)]
struct Zone {
    name: Name,
    servers: Vec<NsState>,
    tried: HashSet<IpAddr>,
    ns_lookups: usize,
    /// Ask this server again over TCP (its UDP answer was truncated).
    tcp_next: Option<IpAddr>,
}

#[derive(Clone, Debug)]
struct Frame {
    /// Current target name (lowercase), after any CNAMEs.
    qname: Name,
    qtype: RecordType,
    chain: Vec<Record>,
    cnames: usize,
    zone: Option<Zone>,
    /// Labels of the last name known to exist without a cut below `zone`,
    /// for QNAME minimisation; `None` when minimisation is off for this frame.
    qmin_labels: Option<usize>,
    qmin_count: usize,
    depth: usize,
    /// For a sub-resolution: which NS of the parent's zone it resolves.
    for_ns: Option<usize>,
    used_network: bool,
}

#[derive(Clone, Debug)]
struct Outstanding {
    server: SocketAddr,
    id: u16,
    /// The name as sent, case included.
    qname: Name,
    qtype: RecordType,
    tcp: bool,
    minimised: bool,
    sent_at: Instant,
    deadline: Instant,
}

/// One question being resolved. See the module documentation.
#[derive(Debug)]
pub struct Resolution {
    frames: Vec<Frame>,
    outstanding: Option<Outstanding>,
    transmit: Option<Query>,
    result: Option<Answer>,
    queries: usize,
    referrals: usize,
    pub trace: Vec<TraceStep>,
}

fn lower(n: &Name) -> Name {
    let mut l = n.to_lowercase();
    l.set_fqdn(true);
    l
}

/// Randomise the case of each ASCII letter (0x20 bit), from `rng`.
pub fn randomise_case(name: &Name, rng: &mut Rng) -> Name {
    let labels: Vec<Vec<u8>> = name
        .iter()
        .map(|l| {
            l.iter()
                .map(|b| {
                    if b.is_ascii_alphabetic() && rng.gen_bool(0.5) {
                        b ^ 0x20
                    } else {
                        *b
                    }
                })
                .collect()
        })
        .collect();
    match Name::from_labels(labels) {
        Ok(mut n) => {
            n.set_fqdn(true);
            n
        }
        Err(_) => name.clone(),
    }
}

/// True when `name` is at or below `zone`.
pub fn in_bailiwick(zone: &Name, name: &Name) -> bool {
    zone.zone_of(name)
}

fn rdata_name(r: &Record) -> Option<&Name> {
    match r.data() {
        RData::CNAME(c) => Some(&c.0),
        RData::NS(n) => Some(&n.0),
        _ => None,
    }
}

impl Resolution {
    /// Start resolving `name`/`rtype` (class IN).
    pub fn new(name: &Name, rtype: RecordType, _ctx: &mut Context, _now: Instant) -> Resolution {
        Resolution {
            frames: vec![Frame::new(lower(name), rtype, 0, None)],
            outstanding: None,
            transmit: None,
            result: None,
            queries: 0,
            referrals: 0,
            trace: Vec::new(),
        }
    }

    /// The final answer, once there is one.
    pub fn result(&self) -> Option<&Answer> {
        self.result.as_ref()
    }

    pub fn into_result(self) -> Option<Answer> {
        self.result
    }

    /// Queries sent so far by this resolution.
    pub fn queries_sent(&self) -> usize {
        self.queries
    }

    /// When [`Resolution::handle_timeout`] should be called.
    pub fn poll_at(&self) -> Option<Instant> {
        self.outstanding.as_ref().map(|o| o.deadline)
    }

    /// The next query to send, if any. Advances the resolution as far as it
    /// can go without the network (cache hits, sub-resolutions).
    pub fn poll_transmit(&mut self, ctx: &mut Context, now: Instant) -> Option<Query> {
        if self.result.is_none() && self.outstanding.is_none() && self.transmit.is_none() {
            self.drive(ctx, now);
        }
        self.transmit.take()
    }

    /// The outstanding query was not answered in time.
    pub fn handle_timeout(&mut self, ctx: &mut Context, now: Instant) {
        if let Some(o) = &self.outstanding {
            if now >= o.deadline {
                self.fail_outstanding(ctx, now);
            }
        }
    }

    /// The transport could not deliver the outstanding query or its answer
    /// (connection refused, TCP reset, ICMP unreachable): as a timeout, now.
    pub fn handle_error(&mut self, ctx: &mut Context, now: Instant) {
        if self.outstanding.is_some() {
            self.fail_outstanding(ctx, now);
        }
    }

    fn fail_outstanding(&mut self, ctx: &mut Context, now: Instant) {
        if let Some(o) = self.outstanding.take() {
            ctx.stats.timeouts += 1;
            ctx.servers.on_timeout(o.server.ip(), now, &mut ctx.rng);
        }
    }

    /// A datagram (or TCP message) arrived from `from`. Anything that is not
    /// the answer to the outstanding query is dropped and counted.
    pub fn handle_response(
        &mut self,
        ctx: &mut Context,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        let Some(out) = self.outstanding.clone() else {
            ctx.stats.dropped_unexpected += 1;
            return;
        };
        if from != out.server {
            ctx.stats.dropped_wrong_source += 1;
            return;
        }
        let msg = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(_) => {
                ctx.stats.dropped_malformed += 1;
                return;
            }
        };
        if msg.id() != out.id
            || msg.message_type() != MessageType::Response
            || msg.op_code() != OpCode::Query
        {
            ctx.stats.dropped_wrong_id += 1;
            return;
        }
        let q_ok = msg.queries().len() == 1 && {
            let q = &msg.queries()[0];
            q.name().eq_case(&out.qname)
                && q.query_type() == out.qtype
                && q.query_class() == DNSClass::IN
        };
        if !q_ok {
            ctx.stats.dropped_wrong_question += 1;
            return;
        }
        self.outstanding = None;
        ctx.stats.responses_accepted += 1;
        let rtt = now - out.sent_at;
        ctx.servers.on_answer(out.server.ip(), rtt, &mut ctx.rng);
        if ctx.config.trace {
            let zone = self
                .frames
                .last()
                .and_then(|f| f.zone.as_ref())
                .map(|z| z.name.clone())
                .unwrap_or_else(Name::root);
            self.trace.push(TraceStep {
                server: out.server,
                zone,
                qname: out.qname.clone(),
                qtype: out.qtype,
                tcp: out.tcp,
                rtt,
                response: msg.clone(),
                size: bytes.len(),
            });
        }
        if msg.truncated() && !out.tcp {
            ctx.stats.truncated += 1;
            if let Some(z) = self.frames.last_mut().and_then(|f| f.zone.as_mut()) {
                z.tcp_next = Some(out.server.ip());
            }
            return;
        }
        self.process(ctx, &out, msg, now);
    }

    fn finish(&mut self, answer: Answer) {
        self.result = Some(answer);
        self.frames.clear();
        self.outstanding = None;
    }

    /// The top frame is done with `answer`: hand it to its parent or finish.
    fn pop_frame(&mut self, mut answer: Answer) {
        let Some(f) = self.frames.pop() else {
            return;
        };
        let mut answers = f.chain;
        answers.append(&mut answer.answers);
        answer.answers = answers;
        answer.from_cache = !f.used_network;
        match self.frames.last_mut() {
            None => self.finish(answer),
            Some(parent) => {
                let Some(zone) = parent.zone.as_mut() else {
                    return;
                };
                let Some(ns) = f.for_ns.and_then(|i| zone.servers.get_mut(i)) else {
                    return;
                };
                let addrs: Vec<IpAddr> = answer
                    .answers
                    .iter()
                    .filter_map(|r| match r.data() {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        _ => None,
                    })
                    .collect();
                if addrs.is_empty() {
                    ns.status = NsStatus::Failed;
                } else {
                    ns.addrs = addrs;
                    ns.status = NsStatus::Known;
                }
            }
        }
    }

    /// Advance until a query is ready or the answer is known.
    fn drive(&mut self, ctx: &mut Context, now: Instant) {
        // Each iteration makes progress (pops or pushes a frame, follows a
        // CNAME, picks a zone or emits a query); the bound is a safety net.
        for _ in 0..10_000 {
            if self.result.is_some() || self.transmit.is_some() {
                return;
            }
            let depth = self.frames.len();
            let Some(f) = self.frames.last_mut() else {
                self.finish(Answer::servfail());
                return;
            };
            if f.zone.is_none() {
                match ctx.cache.peek(&f.qname, f.qtype, DNSClass::IN, now) {
                    Lookup::Hit(rs) => {
                        self.pop_frame(Answer {
                            rcode: ResponseCode::NoError,
                            answers: rs,
                            authority: Vec::new(),
                            from_cache: true,
                        });
                        continue;
                    }
                    Lookup::NoData(soa) => {
                        self.pop_frame(Answer {
                            rcode: ResponseCode::NoError,
                            answers: Vec::new(),
                            authority: vec![soa],
                            from_cache: true,
                        });
                        continue;
                    }
                    Lookup::NxDomain(soa) => {
                        self.pop_frame(Answer {
                            rcode: ResponseCode::NXDomain,
                            answers: Vec::new(),
                            authority: vec![soa],
                            from_cache: true,
                        });
                        continue;
                    }
                    Lookup::Miss => {}
                }
                if f.qtype != RecordType::CNAME {
                    if let Lookup::Hit(cn) =
                        ctx.cache
                            .peek(&f.qname, RecordType::CNAME, DNSClass::IN, now)
                    {
                        let target = cn.first().and_then(rdata_name).map(lower);
                        if let Some(target) = target {
                            f.cnames += 1;
                            if f.cnames > ctx.config.max_cname {
                                ctx.stats.limit_exceeded += 1;
                                self.finish(Answer::servfail());
                                return;
                            }
                            f.chain.extend(cn);
                            f.qname = target;
                            continue;
                        }
                    }
                }
                let zone = closest_zone(ctx, &f.qname, now);
                f.qmin_labels = if ctx.config.qname_minimisation && f.qmin_labels.is_some() {
                    Some(zone.name.num_labels() as usize)
                } else {
                    None
                };
                f.zone = Some(zone);
            }
            // Choose a server in the current zone.
            let f = self.frames.last_mut().expect("frame");
            let zone = f.zone.as_mut().expect("zone");
            if let Some(ip) = zone.tcp_next.take() {
                self.send(ctx, ip, true, now);
                return;
            }
            let candidates: Vec<IpAddr> = zone
                .servers
                .iter()
                .flat_map(|s| s.addrs.iter().copied())
                .filter(|a| !zone.tried.contains(a))
                .filter(|a| ctx.config.ipv6 || a.is_ipv4())
                .collect();
            let ordered = ctx.servers.order(&candidates, now, &mut ctx.rng);
            if let Some(ip) = ordered.first().copied() {
                self.send(ctx, ip, false, now);
                return;
            }
            // No address left: resolve an NS name we have no address for.
            let mut push: Option<(usize, Name)> = None;
            if depth <= ctx.config.max_depth && zone.ns_lookups < ctx.config.max_ns_lookups {
                let unresolved: Vec<(usize, Name)> = zone
                    .servers
                    .iter()
                    .enumerate()
                    .filter(|(_, ns)| ns.status == NsStatus::Unresolved)
                    .map(|(i, ns)| (i, ns.name.clone()))
                    .collect();
                for (i, name) in unresolved {
                    let cyclic = self.frames_contain(&name);
                    let ns = &mut self
                        .frames
                        .last_mut()
                        .expect("frame")
                        .zone
                        .as_mut()
                        .expect("zone")
                        .servers[i];
                    if cyclic {
                        ns.status = NsStatus::Failed;
                        continue;
                    }
                    ns.status = NsStatus::Resolving;
                    push = Some((i, name));
                    break;
                }
            }
            let f = self.frames.last_mut().expect("frame");
            match push {
                Some((i, name)) => {
                    f.zone.as_mut().expect("zone").ns_lookups += 1;
                    let child = Frame::new(name, RecordType::A, f.depth + 1, Some(i));
                    let mut child = child;
                    if !ctx.config.qname_minimisation {
                        child.qmin_labels = None;
                    }
                    self.frames.push(child);
                }
                None => {
                    // Every server tried, down or unresolvable.
                    self.pop_frame(Answer::servfail());
                }
            }
        }
        self.finish(Answer::servfail());
    }

    fn frames_contain(&self, name: &Name) -> bool {
        self.frames
            .iter()
            .any(|f| f.qtype == RecordType::A && f.qname == *name)
    }

    fn send(&mut self, ctx: &mut Context, ip: IpAddr, tcp: bool, now: Instant) {
        if self.queries >= ctx.config.max_queries {
            ctx.stats.limit_exceeded += 1;
            self.finish(Answer::servfail());
            return;
        }
        let f = self.frames.last_mut().expect("frame");
        let zone = f.zone.as_mut().expect("zone");
        zone.tried.insert(ip);
        f.used_network = true;
        // QNAME minimisation (RFC 9156 §3).
        let full = f.qname.num_labels() as usize;
        let mut qname = f.qname.clone();
        let mut qtype = f.qtype;
        let mut minimised = false;
        if let Some(known) = f.qmin_labels {
            let known = known.max(zone.name.num_labels() as usize);
            if known < full {
                let step = if f.qmin_count < MINIMISE_ONE_LAB {
                    1
                } else {
                    let left = MAX_MINIMISE_COUNT.saturating_sub(f.qmin_count);
                    if left <= 1 {
                        full - known
                    } else {
                        (full - known).div_ceil(left)
                    }
                };
                let labels = (known + step).min(full);
                if labels < full {
                    qname = f.qname.trim_to(labels);
                    qtype = RecordType::A;
                    minimised = true;
                }
            }
        }
        let sent_name = if ctx.config.case_randomisation {
            randomise_case(&qname, &mut ctx.rng)
        } else {
            qname
        };
        let id = ctx.rng.next_u32() as u16;
        let mut msg = Message::new();
        msg.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(false);
        msg.add_query(WireQuery::query(sent_name.clone(), qtype));
        let mut edns = Edns::new();
        edns.set_max_payload(ctx.config.edns_payload).set_version(0);
        msg.set_edns(edns);
        let Ok(bytes) = msg.to_vec() else {
            self.pop_frame(Answer::servfail());
            return;
        };
        let timeout = match ctx.servers.get(ip) {
            Some(s) if s.measured => (s.srtt * ctx.config.rtt_timeout_factor)
                .max(ctx.config.min_timeout)
                .min(ctx.config.max_timeout),
            _ => ctx.config.initial_timeout,
        };
        let server = SocketAddr::new(ip, ctx.config.port);
        let src_port = if ctx.config.random_source_port {
            ctx.rng.gen_range(1024, 65536) as u16
        } else {
            0
        };
        ctx.servers.on_query(ip, &mut ctx.rng);
        ctx.stats.queries_sent += 1;
        if tcp {
            ctx.stats.tcp_queries += 1;
        }
        if minimised {
            ctx.stats.minimised_queries += 1;
        }
        self.queries += 1;
        let deadline = now + timeout;
        self.outstanding = Some(Outstanding {
            server,
            id,
            qname: sent_name,
            qtype,
            tcp,
            minimised,
            sent_at: now,
            deadline,
        });
        self.transmit = Some(Query {
            server,
            bytes,
            tcp,
            src_port,
            deadline,
        });
    }

    /// Act on an accepted response.
    fn process(&mut self, ctx: &mut Context, out: &Outstanding, msg: Message, now: Instant) {
        let Some(f) = self.frames.last_mut() else {
            return;
        };
        let Some(zone) = f.zone.as_mut() else {
            return;
        };
        let zname = zone.name.clone();
        let rcode = msg.response_code();
        let server_ip = out.server.ip();
        if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
            if out.minimised {
                // RFC 9156 §2.3 fallback: ask the full name, of the same server.
                f.qmin_labels = None;
                zone.tried.remove(&server_ip);
                ctx.stats.qmin_fallbacks += 1;
            }
            // Otherwise: the server stays tried; the next one is asked.
            return;
        }
        // Keep only in-bailiwick, class IN records.
        let keep = |r: &&Record, ctx: &mut Context| {
            let ok = r.dns_class() == DNSClass::IN && in_bailiwick(&zname, r.name());
            if !ok {
                ctx.stats.out_of_bailiwick_discarded += 1;
            }
            ok
        };
        let answers: Vec<Record> = msg
            .answers()
            .iter()
            .filter(|r| keep(r, ctx))
            .cloned()
            .collect();
        let authority: Vec<Record> = msg
            .name_servers()
            .iter()
            .filter(|r| keep(r, ctx))
            .cloned()
            .collect();
        let additional: Vec<Record> = msg
            .additionals()
            .iter()
            .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
            .filter(|r| keep(r, ctx))
            .cloned()
            .collect();
        let rank = if msg.authoritative() {
            Rank::Answer
        } else {
            Rank::Authority
        };
        let sent = lower(&out.qname);

        // A referral: NS records for a zone strictly below the one asked and
        // at or above the name asked.
        let ns_records: Vec<Record> = authority
            .iter()
            .filter(|r| r.record_type() == RecordType::NS)
            .filter(|r| {
                let owner = lower(r.name());
                owner.num_labels() > zname.num_labels() && in_bailiwick(&owner, &sent)
            })
            .cloned()
            .collect();
        let has_answer_for_sent = answers.iter().any(|r| lower(r.name()) == sent);
        if answers.is_empty()
            && rcode == ResponseCode::NoError
            && !ns_records.is_empty()
            && !has_answer_for_sent
        {
            self.referral(ctx, ns_records, additional, now);
            return;
        }
        if out.minimised {
            let cname_at_sent = answers
                .iter()
                .any(|r| r.record_type() == RecordType::CNAME && lower(r.name()) == sent);
            if rcode == ResponseCode::NXDomain || cname_at_sent {
                // RFC 9156 §2.3: an NXDOMAIN (possibly a broken server on an
                // empty non-terminal) or a CNAME at an intermediate name: ask
                // the full name instead.
                f.qmin_labels = None;
                ctx.stats.qmin_fallbacks += 1;
            } else {
                // The name exists and is not a zone cut: go one step deeper.
                ctx.cache.insert_records(&answers, rank, now);
                f.qmin_labels = Some(sent.num_labels() as usize);
                f.qmin_count += 1;
            }
            zone.tried.remove(&server_ip);
            return;
        }
        ctx.cache.insert_records(&answers, rank, now);
        // Follow the chain through the answer section.
        let mut target = f.qname.clone();
        let mut followed = false;
        loop {
            let data: Vec<Record> = answers
                .iter()
                .filter(|r| r.record_type() == f.qtype && lower(r.name()) == target)
                .cloned()
                .collect();
            if !data.is_empty() {
                f.qname = target;
                self.pop_frame(Answer {
                    rcode: ResponseCode::NoError,
                    answers: data,
                    authority: Vec::new(),
                    from_cache: false,
                });
                return;
            }
            let cname = answers
                .iter()
                .find(|r| r.record_type() == RecordType::CNAME && lower(r.name()) == target)
                .cloned();
            let Some(cname) = cname else { break };
            let Some(next) = rdata_name(&cname).map(lower) else {
                break;
            };
            f.cnames += 1;
            if f.cnames > ctx.config.max_cname {
                ctx.stats.limit_exceeded += 1;
                self.finish(Answer::servfail());
                return;
            }
            f.chain.push(cname);
            target = next;
            followed = true;
        }
        let soa: Option<Record> = authority
            .iter()
            .find(|r| r.record_type() == RecordType::SOA && in_bailiwick(&lower(r.name()), &target))
            .cloned();
        let target_here = in_bailiwick(&zname, &target);
        if rcode == ResponseCode::NXDomain && target_here {
            if let Some(s) = &soa {
                ctx.cache
                    .insert_nxdomain(&target, DNSClass::IN, s.clone(), now);
            }
            f.qname = target;
            self.pop_frame(Answer {
                rcode: ResponseCode::NXDomain,
                answers: Vec::new(),
                authority: soa.into_iter().collect(),
                from_cache: false,
            });
            return;
        }
        if followed {
            // The chain leaves what this response answered: resolve the
            // target afresh (from the cache or the closest delegation).
            f.qname = target;
            f.zone = None;
            f.qmin_count = 0;
            f.qmin_labels = if ctx.config.qname_minimisation {
                Some(0)
            } else {
                None
            };
            return;
        }
        if rcode == ResponseCode::NoError && (soa.is_some() || msg.authoritative()) {
            if let Some(s) = &soa {
                ctx.cache
                    .insert_nodata(&target, f.qtype, DNSClass::IN, s.clone(), now);
            }
            self.pop_frame(Answer {
                rcode: ResponseCode::NoError,
                answers: Vec::new(),
                authority: soa.into_iter().collect(),
                from_cache: false,
            });
        }
        // Otherwise: a lame or upward referral, or an NXDOMAIN without a usable name: the
        // server stays marked tried and the next one is asked.
    }

    fn referral(
        &mut self,
        ctx: &mut Context,
        ns_records: Vec<Record>,
        additional: Vec<Record>,
        now: Instant,
    ) {
        self.referrals += 1;
        ctx.stats.referrals += 1;
        if self.referrals > ctx.config.max_referrals {
            ctx.stats.limit_exceeded += 1;
            self.finish(Answer::servfail());
            return;
        }
        let f = self.frames.last_mut().expect("frame");
        let child = lower(ns_records[0].name());
        // Only the RRset of the one child zone.
        let ns_records: Vec<Record> = ns_records
            .into_iter()
            .filter(|r| lower(r.name()) == child)
            .collect();
        let ns_names: Vec<Name> = ns_records
            .iter()
            .filter_map(rdata_name)
            .map(lower)
            .collect();
        // Glue: only address records for the NS names (the caller already
        // kept only those inside the delegating zone).
        let glue: Vec<Record> = additional
            .into_iter()
            .filter(|r| ns_names.contains(&lower(r.name())))
            .collect();
        ctx.cache.insert_records(&ns_records, Rank::Authority, now);
        ctx.cache.insert_records(&glue, Rank::Glue, now);
        let servers = ns_names
            .iter()
            .map(|n| {
                let mut addrs: Vec<IpAddr> = glue
                    .iter()
                    .filter(|r| lower(r.name()) == *n)
                    .filter_map(|r| match r.data() {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect();
                if addrs.is_empty() {
                    addrs = cached_addrs(ctx, n, now);
                }
                NsState {
                    name: n.clone(),
                    status: if addrs.is_empty() {
                        NsStatus::Unresolved
                    } else {
                        NsStatus::Known
                    },
                    addrs,
                }
            })
            .collect();
        if f.qmin_labels.is_some() {
            f.qmin_labels = Some(child.num_labels() as usize);
        }
        f.zone = Some(Zone {
            name: child,
            servers,
            tried: HashSet::new(),
            ns_lookups: 0,
            tcp_next: None,
        });
    }
}

impl Frame {
    fn new(qname: Name, qtype: RecordType, depth: usize, for_ns: Option<usize>) -> Frame {
        Frame {
            qname,
            qtype,
            chain: Vec::new(),
            cnames: 0,
            zone: None,
            qmin_labels: Some(0),
            qmin_count: 0,
            depth,
            for_ns,
            used_network: false,
        }
    }
}

fn cached_addrs(ctx: &mut Context, name: &Name, now: Instant) -> Vec<IpAddr> {
    let mut v = Vec::new();
    if let Lookup::Hit(rs) = ctx.cache.peek(name, RecordType::A, DNSClass::IN, now) {
        v.extend(rs.iter().filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        }));
    }
    v
}

/// The deepest zone with a cached NS set that can be used (some NS has an
/// address, or some NS name lies outside the zone so it can be resolved);
/// else the root from the hints.
fn closest_zone(ctx: &mut Context, qname: &Name, now: Instant) -> Zone {
    let labels = qname.num_labels() as usize;
    for n in (1..=labels).rev() {
        let zname = qname.trim_to(n);
        let Lookup::Hit(ns) = ctx.cache.peek(&zname, RecordType::NS, DNSClass::IN, now) else {
            continue;
        };
        let servers: Vec<NsState> = ns
            .iter()
            .filter_map(rdata_name)
            .map(lower)
            .map(|name| {
                let addrs = cached_addrs(ctx, &name, now);
                NsState {
                    status: if addrs.is_empty() {
                        NsStatus::Unresolved
                    } else {
                        NsStatus::Known
                    },
                    name,
                    addrs,
                }
            })
            .collect();
        let usable = servers
            .iter()
            .any(|s| !s.addrs.is_empty() || !in_bailiwick(&zname, &s.name));
        if usable {
            return Zone {
                name: lower(&zname),
                servers,
                tried: HashSet::new(),
                ns_lookups: 0,
                tcp_next: None,
            };
        }
    }
    Zone {
        name: Name::root(),
        servers: ctx
            .hints
            .servers
            .iter()
            .map(|s| NsState {
                name: lower(&s.name),
                addrs: s.addrs.clone(),
                status: NsStatus::Known,
            })
            .collect(),
        tried: HashSet::new(),
        ns_lookups: 0,
        tcp_next: None,
    }
}
