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
use hickory_proto::rr::rdata::{A, NS};
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
    /// RFC 8109 priming: when no root NS set is cached, ask a root server
    /// from the hints for it (`. NS`, its addresses from the additional
    /// section) before the first query that would start from the root, and
    /// then use the cached set. Off, the hints are used as they are.
    pub prime_root: bool,
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
            prime_root: true,
        }
    }
}

/// Counters over all resolutions of a [`Context`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    pub queries_sent: u64,
    pub tcp_queries: u64,
    pub responses_accepted: u64,
    /// Answers from an address other than the server asked.
    pub dropped_wrong_source: u64,
    /// Answers from the server's address but another port than 53.
    pub dropped_wrong_port: u64,
    pub dropped_wrong_id: u64,
    /// The question asked, but not with the case we sent (0x20).
    pub dropped_wrong_case: u64,
    /// Another question (name, type or class).
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
    /// RD=0 questions not in the cache, answered with a referral from it.
    pub cache_only_referrals: u64,
    /// Priming queries for the root NS set (RFC 8109), and how many failed
    /// (the hints were used instead).
    pub primings: u64,
    pub priming_failures: u64,
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
    /// Glue of a referral from the cache (RD=0, see [`Resolution::cache_only`]).
    pub additional: Vec<Record>,
    /// True when the final data came from the cache without any query.
    pub from_cache: bool,
}

impl Answer {
    pub fn servfail() -> Answer {
        Answer {
            rcode: ResponseCode::ServFail,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
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
    /// The root from the hints, not from a cached NS set.
    from_hints: bool,
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
    /// The RFC 8109 priming query (`. NS`) of this resolution.
    priming: bool,
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

/// 0x20 case randomisation makes servers echo our mixed case into owner
/// names and, through name compression, into names inside rdata (a CNAME
/// target, an MX exchange). Names compare without case; we cache and serve
/// them in lowercase, as they are in the zone.
pub fn lowercase_names(mut msg: Message) -> Message {
    use hickory_proto::rr::rdata::{CNAME, MX, NS, PTR, SOA, SRV};
    let fix = |r: &mut Record| {
        let n = lower(r.name());
        r.set_name(n);
        let new = match r.data() {
            RData::CNAME(c) => Some(RData::CNAME(CNAME(lower(&c.0)))),
            RData::NS(n) => Some(RData::NS(NS(lower(&n.0)))),
            RData::PTR(p) => Some(RData::PTR(PTR(lower(&p.0)))),
            RData::MX(m) => Some(RData::MX(MX::new(m.preference(), lower(m.exchange())))),
            RData::SRV(v) => Some(RData::SRV(SRV::new(
                v.priority(),
                v.weight(),
                v.port(),
                lower(v.target()),
            ))),
            RData::SOA(o) => Some(RData::SOA(SOA::new(
                lower(o.mname()),
                lower(o.rname()),
                o.serial(),
                o.refresh(),
                o.retry(),
                o.expire(),
                o.minimum(),
            ))),
            _ => None,
        };
        if let Some(d) = new {
            r.set_data(d);
        }
    };
    msg.answers_mut().iter_mut().for_each(fix);
    msg.name_servers_mut().iter_mut().for_each(fix);
    msg.additionals_mut().iter_mut().for_each(fix);
    msg
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
    /// Never send a query: see [`Resolution::cache_only`].
    cache_only: bool,
    /// A cache-only resolution found no answer and referred instead.
    referred: bool,
    /// The root NS set was primed (or priming tried) in this resolution.
    primed: bool,
    /// Priming was tried and the root still comes from the hints.
    priming_failed: bool,
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
            cache_only: false,
            referred: false,
            primed: false,
            priming_failed: false,
            trace: Vec::new(),
        }
    }

    /// Answer `name`/`rtype` from the cache alone, never sending a query:
    /// what a server does for a request with RD=0. Like Unbound with
    /// `access-control: ... allow_snoop`: the cached answer (CNAMEs followed
    /// as far as they are cached; cached NXDOMAIN/NODATA with their SOA), or
    /// else a referral from the cache: NOERROR with the closest cached
    /// delegation's NS set in the authority section and the cached addresses
    /// of those names in the additional section (the root's from the hints
    /// when nothing closer is cached). The result is ready after the first
    /// [`Resolution::poll_transmit`], which returns `None`.
    pub fn cache_only(
        name: &Name,
        rtype: RecordType,
        ctx: &mut Context,
        now: Instant,
    ) -> Resolution {
        let mut r = Resolution::new(name, rtype, ctx, now);
        r.cache_only = true;
        r
    }

    /// True when a [`Resolution::cache_only`] resolution had no cached
    /// answer and its result is a referral from the cache.
    pub fn referred(&self) -> bool {
        self.referred
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
        if from.ip() != out.server.ip() {
            ctx.stats.dropped_wrong_source += 1;
            return;
        }
        if from.port() != out.server.port() {
            ctx.stats.dropped_wrong_port += 1;
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
            let case_only = msg.queries().len() == 1 && {
                let q = &msg.queries()[0];
                q.name() == &out.qname && q.query_type() == out.qtype
            };
            if case_only {
                ctx.stats.dropped_wrong_case += 1;
            } else {
                ctx.stats.dropped_wrong_question += 1;
            }
            return;
        }
        let msg = lowercase_names(msg);
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
        if f.priming {
            // The parent goes on from the cache (primed) or else the hints.
            return;
        }
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
                            additional: Vec::new(),
                            from_cache: true,
                        });
                        continue;
                    }
                    Lookup::NoData(soa) => {
                        self.pop_frame(Answer {
                            rcode: ResponseCode::NoError,
                            answers: Vec::new(),
                            authority: vec![soa],
                            additional: Vec::new(),
                            from_cache: true,
                        });
                        continue;
                    }
                    Lookup::NxDomain(soa) => {
                        self.pop_frame(Answer {
                            rcode: ResponseCode::NXDomain,
                            answers: Vec::new(),
                            authority: vec![soa],
                            additional: Vec::new(),
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
                if zone.from_hints && ctx.config.prime_root && !self.cache_only && !f.priming {
                    if !self.primed {
                        // RFC 8109: learn the root NS set first.
                        self.primed = true;
                        ctx.stats.primings += 1;
                        let mut p = Frame::new(Name::root(), RecordType::NS, f.depth + 1, None);
                        p.qmin_labels = None;
                        p.priming = true;
                        self.frames.push(p);
                        continue;
                    }
                    if !self.priming_failed {
                        self.priming_failed = true;
                        ctx.stats.priming_failures += 1;
                    }
                }
                f.qmin_labels = if ctx.config.qname_minimisation && f.qmin_labels.is_some() {
                    Some(zone.name.num_labels() as usize)
                } else {
                    None
                };
                if self.cache_only {
                    let (authority, additional) = referral_from_cache(ctx, &zone.name, now);
                    let answers = std::mem::take(&mut f.chain);
                    ctx.stats.cache_only_referrals += 1;
                    self.referred = true;
                    self.finish(Answer {
                        rcode: ResponseCode::NoError,
                        answers,
                        authority,
                        additional,
                        from_cache: true,
                    });
                    return;
                }
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
                if f.priming {
                    // RFC 8109 §3: the root servers' addresses come in the
                    // additional section of the priming answer.
                    let names: Vec<Name> = data.iter().filter_map(rdata_name).map(lower).collect();
                    let glue: Vec<Record> = additional
                        .iter()
                        .filter(|r| names.contains(&lower(r.name())))
                        .cloned()
                        .collect();
                    ctx.cache.insert_records(&glue, Rank::Glue, now);
                }
                f.qname = target;
                self.pop_frame(Answer {
                    rcode: ResponseCode::NoError,
                    answers: data,
                    authority: Vec::new(),
                    additional: Vec::new(),
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
                additional: Vec::new(),
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
                additional: Vec::new(),
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
            from_hints: false,
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
            priming: false,
        }
    }
}

/// The NS set of `zone` and the addresses of its names, as the cache (or,
/// for the root, the hints) knows them: a referral given without asking.
fn referral_from_cache(ctx: &mut Context, zone: &Name, now: Instant) -> (Vec<Record>, Vec<Record>) {
    let ns: Vec<Record> = match ctx.cache.peek(zone, RecordType::NS, DNSClass::IN, now) {
        Lookup::Hit(rs) => rs,
        _ if zone.is_root() => ctx
            .hints
            .servers
            .iter()
            .map(|s| Record::from_rdata(Name::root(), HINTS_TTL, RData::NS(NS(lower(&s.name)))))
            .collect(),
        _ => Vec::new(),
    };
    let mut glue = Vec::new();
    for n in ns.iter().filter_map(rdata_name).map(lower) {
        match ctx.cache.peek(&n, RecordType::A, DNSClass::IN, now) {
            Lookup::Hit(rs) => glue.extend(rs),
            _ if zone.is_root() => {
                let hint = ctx.hints.servers.iter().find(|s| lower(&s.name) == n);
                for a in hint.into_iter().flat_map(|s| s.addrs.iter()) {
                    if let IpAddr::V4(v4) = a {
                        glue.push(Record::from_rdata(n.clone(), HINTS_TTL, RData::A(A(*v4))));
                    }
                }
            }
            _ => {}
        }
    }
    (ns, glue)
}

/// The TTL named.root gives the root NS set and its addresses.
const HINTS_TTL: u32 = 3_600_000;

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
    for n in (0..=labels).rev() {
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
                from_hints: false,
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
        from_hints: true,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lowercase_names_undoes_0x20_in_owners_and_rdata() {
        use hickory_proto::rr::rdata::{CNAME, MX};
        let mut m = Message::new();
        m.add_answer(Record::from_rdata(
            Name::from_ascii("mAil.aLPHa.teST.").unwrap(),
            300,
            RData::MX(MX::new(10, Name::from_ascii("www.aLPHa.teST.").unwrap())),
        ));
        m.add_name_server(Record::from_rdata(
            Name::from_ascii("cHain.alpha.TEST.").unwrap(),
            300,
            RData::CNAME(CNAME(Name::from_ascii("Start.Beta.example.").unwrap())),
        ));
        let m = lowercase_names(m);
        assert_eq!(m.answers()[0].name().to_string(), "mail.alpha.test.");
        assert_eq!(m.answers()[0].data().to_string(), "10 www.alpha.test.");
        assert_eq!(m.name_servers()[0].name().to_string(), "chain.alpha.test.");
        assert_eq!(
            m.name_servers()[0].data().to_string(),
            "start.beta.example."
        );
    }

    use super::*;
    use crate::dns::cache::CacheConfig;
    use crate::dns::servers::ServerConfig;
    use hickory_proto::rr::rdata::{A, CNAME, NS, SOA, TXT};
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }
    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }
    fn a(name: &str, addr: [u8; 4]) -> Record {
        Record::from_rdata(n(name), 300, RData::A(A(Ipv4Addr::from(addr))))
    }
    fn ns(name: &str, target: &str) -> Record {
        Record::from_rdata(n(name), 300, RData::NS(NS(n(target))))
    }
    fn cname(name: &str, target: &str) -> Record {
        Record::from_rdata(n(name), 300, RData::CNAME(CNAME(n(target))))
    }
    fn soa(zone: &str) -> Record {
        Record::from_rdata(
            n(zone),
            300,
            RData::SOA(SOA::new(n("ns."), n("h."), 1, 1, 1, 1, 60)),
        )
    }

    /// A toy authoritative server: zones it serves, each a list of records.
    #[derive(Default, Clone)]
    struct Fake {
        zones: HashMap<IpAddr, Vec<(Name, Vec<Record>)>>,
        /// Extra records a server puts into every answer section (forgery tests).
        extra_answer: HashMap<IpAddr, Vec<Record>>,
        /// Extra records added to referrals' additional section.
        extra_glue: HashMap<IpAddr, Vec<Record>>,
        dead: Vec<IpAddr>,
    }

    impl Fake {
        fn hierarchy() -> Fake {
            let mut f = Fake::default();
            f.zones.insert(
                ip(2),
                vec![(
                    Name::root(),
                    vec![
                        soa("."),
                        ns(".", "root-ns."),
                        a("root-ns.", [127, 0, 0, 2]),
                        ns("test.", "ns1.nic.test."),
                        a("ns1.nic.test.", [127, 0, 0, 3]),
                        ns("example.", "ns1.nic.example."),
                        a("ns1.nic.example.", [127, 0, 0, 4]),
                    ],
                )],
            );
            f.zones.insert(
                ip(3),
                vec![(
                    n("test."),
                    vec![
                        soa("test."),
                        ns("alpha.test.", "ns1.alpha.test."),
                        a("ns1.alpha.test.", [127, 0, 0, 5]),
                        ns("gamma.test.", "ns.beta.example."),
                        ns("two.test.", "ns1.two.test."),
                        ns("two.test.", "ns2.two.test."),
                        a("ns1.two.test.", [127, 0, 0, 8]),
                        a("ns2.two.test.", [127, 0, 0, 5]),
                    ],
                )],
            );
            f.zones.insert(
                ip(4),
                vec![(
                    n("example."),
                    vec![
                        soa("example."),
                        ns("beta.example.", "ns1.beta.example."),
                        a("ns1.beta.example.", [127, 0, 0, 5]),
                    ],
                )],
            );
            let big: Vec<Record> = (0..20)
                .map(|i| {
                    Record::from_rdata(
                        n("big.alpha.test."),
                        300,
                        RData::TXT(TXT::new(vec![format!("{i:02}{}", "x".repeat(100))])),
                    )
                })
                .collect();
            let mut alpha = vec![
                soa("alpha.test."),
                a("www.alpha.test.", [192, 0, 2, 1]),
                cname("chain.alpha.test.", "start.beta.example."),
                a("final.alpha.test.", [192, 0, 2, 40]),
                a("x.y.z.alpha.test.", [192, 0, 2, 7]),
            ];
            alpha.extend(big);
            f.zones.insert(
                ip(5),
                vec![
                    (n("alpha.test."), alpha),
                    (
                        n("beta.example."),
                        vec![
                            soa("beta.example."),
                            a("ns.beta.example.", [127, 0, 0, 6]),
                            cname("start.beta.example.", "final.alpha.test."),
                        ],
                    ),
                    (
                        n("two.test."),
                        vec![soa("two.test."), a("www.two.test.", [192, 0, 2, 22])],
                    ),
                ],
            );
            f.zones.insert(
                ip(6),
                vec![(
                    n("gamma.test."),
                    vec![soa("gamma.test."), a("host.gamma.test.", [192, 0, 2, 30])],
                )],
            );
            f.dead.push(ip(8));
            f
        }

        /// The response to `query` from `server`, or None (no answer).
        fn answer(&self, server: IpAddr, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
            if self.dead.contains(&server) {
                return None;
            }
            let q = Message::from_vec(query).ok()?;
            let question = q.queries()[0].clone();
            let qname = lower(question.name());
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query);
            r.add_query(question.clone());
            let zones = self.zones.get(&server)?;
            let Some((zone, recs)) = zones
                .iter()
                .filter(|(z, _)| z.zone_of(&qname))
                .max_by_key(|(z, _)| z.num_labels())
            else {
                r.set_response_code(ResponseCode::Refused);
                return r.to_vec().ok();
            };
            // Delegation?
            let cut = recs.iter().find(|x| {
                x.record_type() == RecordType::NS && x.name() != zone && x.name().zone_of(&qname)
            });
            if let Some(cut) = cut {
                let owner = cut.name().clone();
                let nss: Vec<Record> = recs
                    .iter()
                    .filter(|x| x.record_type() == RecordType::NS && *x.name() == owner)
                    .cloned()
                    .collect();
                for s in &nss {
                    let t = rdata_name(s).unwrap().clone();
                    for g in recs
                        .iter()
                        .filter(|x| x.record_type() == RecordType::A && *x.name() == t)
                    {
                        r.add_additional(g.clone());
                    }
                }
                for g in self.extra_glue.get(&server).into_iter().flatten() {
                    r.add_additional(g.clone());
                }
                r.add_name_servers(nss);
                return r.to_vec().ok();
            }
            r.set_authoritative(true);
            let exact: Vec<Record> = recs
                .iter()
                .filter(|x| *x.name() == qname && x.record_type() == question.query_type())
                .cloned()
                .collect();
            let cn: Vec<Record> = recs
                .iter()
                .filter(|x| *x.name() == qname && x.record_type() == RecordType::CNAME)
                .cloned()
                .collect();
            if !exact.is_empty() || !cn.is_empty() {
                // The addresses of an NS set's names (a priming answer's).
                for t in exact.iter().filter_map(rdata_name) {
                    for g in recs
                        .iter()
                        .filter(|x| x.record_type() == RecordType::A && x.name() == t)
                    {
                        r.add_additional(g.clone());
                    }
                }
                r.add_answers(if exact.is_empty() { cn } else { exact });
                for x in self.extra_answer.get(&server).into_iter().flatten() {
                    r.add_answer(x.clone());
                }
            } else if recs.iter().any(|x| qname.zone_of(x.name())) {
                r.add_name_server(soa(&zone.to_ascii()));
            } else {
                r.set_response_code(ResponseCode::NXDomain);
                r.add_name_server(soa(&zone.to_ascii()));
            }
            let bytes = r.to_vec().ok()?;
            if !tcp && bytes.len() > 1232 {
                let mut t = Message::new();
                t.set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .set_truncated(true);
                t.add_query(question);
                return t.to_vec().ok();
            }
            Some(bytes)
        }
    }

    /// A context without RFC 8109 priming (the tests of other rules count
    /// the queries of one resolution); [`ctx_primed`] primes.
    fn ctx(mut config: ResolverConfig) -> Context {
        config.prime_root = false;
        ctx_primed(config)
    }

    fn ctx_primed(config: ResolverConfig) -> Context {
        Context::new(
            RootHints::parse(". NS root-ns.\nroot-ns. A 127.0.0.2\n").unwrap(),
            config,
            Cache::new(CacheConfig::default()),
            ServerTable::new(ServerConfig::default()),
            Rng::new(99),
        )
    }

    /// Injects datagrams before the real answer.
    type Spoof<'a> = dyn FnMut(&Query, &Message) -> Vec<(SocketAddr, Vec<u8>)> + 'a;

    /// What was sent: (server, name as sent, type, tcp).
    type Log = Vec<(IpAddr, Name, RecordType, bool)>;

    /// Drive a resolution against `fake`; `spoof` may inject datagrams
    /// before the real answer.
    fn run(
        ctx: &mut Context,
        fake: &Fake,
        name: &str,
        ty: RecordType,
        spoof: &mut Spoof,
    ) -> (Answer, Log) {
        let mut now = Instant::from_secs(1000);
        let mut res = Resolution::new(&n(name), ty, ctx, now);
        let mut log = Log::new();
        for _ in 0..1000 {
            if let Some(q) = res.poll_transmit(ctx, now) {
                let m = Message::from_vec(&q.bytes).unwrap();
                let qq = &m.queries()[0];
                log.push((q.server.ip(), qq.name().clone(), qq.query_type(), q.tcp));
                for (from, bytes) in spoof(&q, &m) {
                    res.handle_response(ctx, from, &bytes, now);
                }
                now += Duration::from_millis(1);
                match fake.answer(q.server.ip(), &q.bytes, q.tcp) {
                    Some(b) => res.handle_response(ctx, q.server, &b, now),
                    None => {
                        now = res.poll_at().unwrap();
                        res.handle_timeout(ctx, now);
                    }
                }
                continue;
            }
            if let Some(r) = res.result() {
                return (r.clone(), log);
            }
            panic!("no query and no result");
        }
        panic!("resolution did not end");
    }

    fn no_spoof(_: &Query, _: &Message) -> Vec<(SocketAddr, Vec<u8>)> {
        Vec::new()
    }

    fn addrs(ans: &Answer) -> Vec<String> {
        ans.answers.iter().map(|r| r.data().to_string()).collect()
    }

    #[test]
    fn root_ns_set_is_primed_from_the_hints_then_used_from_the_cache_rfc8109() {
        let mut c = ctx_primed(ResolverConfig::default());
        let fake = Fake::hierarchy();
        let (ans, log) = run(
            &mut c,
            &fake,
            "www.alpha.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert_eq!(addrs(&ans), vec!["192.0.2.1"]);
        // First `. NS` of a root server from the hints, then the usual walk.
        assert_eq!(log[0].0, ip(2));
        assert!(log[0].1.is_root());
        assert_eq!(log[0].2, RecordType::NS);
        let walk: Vec<IpAddr> = log[1..].iter().map(|l| l.0).collect();
        assert_eq!(walk, vec![ip(2), ip(3), ip(5)]);
        assert_eq!((c.stats.primings, c.stats.priming_failures), (1, 0));
        let now = Instant::from_secs(1000);
        assert!(matches!(
            c.cache
                .peek(&Name::root(), RecordType::NS, DNSClass::IN, now),
            Lookup::Hit(_)
        ));
        assert!(
            matches!(c.cache.peek(&n("root-ns."), RecordType::A, DNSClass::IN, now), Lookup::Hit(rs) if rs.len() == 1),
            "the root server's address from the priming answer's additional section"
        );
        // The next resolution starts from the cached root NS set: no priming.
        let (ans, log) = run(&mut c, &fake, "www.two.test.", RecordType::A, &mut no_spoof);
        assert_eq!(addrs(&ans), vec!["192.0.2.22"]);
        assert!(log.iter().all(|l| l.2 != RecordType::NS));
        assert_eq!(c.stats.primings, 1);
    }

    #[test]
    fn failed_priming_falls_back_to_the_hints() {
        let mut c = ctx_primed(ResolverConfig::default());
        let mut fake = Fake::hierarchy();
        // A root server whose zone has no NS set at its apex: NODATA.
        let root = fake.zones.get_mut(&ip(2)).unwrap();
        root[0]
            .1
            .retain(|r| !(r.record_type() == RecordType::NS && r.name().is_root()));
        let (ans, log) = run(
            &mut c,
            &fake,
            "www.alpha.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert_eq!(addrs(&ans), vec!["192.0.2.1"]);
        assert_eq!(log[0].2, RecordType::NS);
        assert_eq!(log.len(), 4, "{log:?}");
        assert_eq!((c.stats.primings, c.stats.priming_failures), (1, 1));
    }

    #[test]
    fn referrals_are_followed_from_the_root_hints() {
        let mut c = ctx(ResolverConfig::default());
        let (ans, log) = run(
            &mut c,
            &Fake::hierarchy(),
            "www.alpha.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert_eq!(ans.rcode, ResponseCode::NoError);
        assert_eq!(addrs(&ans), vec!["192.0.2.1"]);
        let servers: Vec<IpAddr> = log.iter().map(|l| l.0).collect();
        assert_eq!(servers, vec![ip(2), ip(3), ip(5)]);
    }

    #[test]
    fn qname_minimisation_reveals_one_label_per_zone() {
        let mut c = ctx(ResolverConfig::default());
        let (ans, log) = run(
            &mut c,
            &Fake::hierarchy(),
            "x.y.z.alpha.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert_eq!(addrs(&ans), vec!["192.0.2.7"]);
        let sent: Vec<String> = log
            .iter()
            .map(|l| format!("{} {}", l.1.to_lowercase(), l.2))
            .collect();
        assert_eq!(
            sent,
            vec![
                "test. A",
                "alpha.test. A",
                "z.alpha.test. A",
                "y.z.alpha.test. A",
                "x.y.z.alpha.test. A"
            ]
        );
    }

    #[test]
    fn qname_minimisation_off_sends_the_full_name() {
        let mut c = ctx(ResolverConfig {
            qname_minimisation: false,
            ..ResolverConfig::default()
        });
        let (_, log) = run(
            &mut c,
            &Fake::hierarchy(),
            "x.y.z.alpha.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert!(log
            .iter()
            .all(|l| l.1.to_lowercase() == n("x.y.z.alpha.test.")));
    }

    #[test]
    fn query_names_are_case_randomised_and_ids_random() {
        let mut c = ctx(ResolverConfig {
            qname_minimisation: false,
            ..ResolverConfig::default()
        });
        let mut seen = HashSet::new();
        let mut ids = HashSet::new();
        let mut capture = |q: &Query, m: &Message| {
            seen.insert(m.queries()[0].name().to_ascii());
            ids.insert(m.id());
            assert!(q.src_port >= 1024);
            Vec::new()
        };
        run(
            &mut c,
            &Fake::hierarchy(),
            "www.alpha.test.",
            RecordType::A,
            &mut capture,
        );
        assert!(seen.iter().any(|s| s != "www.alpha.test."), "{seen:?}");
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn edns0_advertises_1232_bytes() {
        let mut c = ctx(ResolverConfig::default());
        let mut check = |_: &Query, m: &Message| {
            assert_eq!(m.extensions().as_ref().map(|e| e.max_payload()), Some(1232));
            assert!(!m.recursion_desired());
            Vec::new()
        };
        run(
            &mut c,
            &Fake::hierarchy(),
            "www.alpha.test.",
            RecordType::A,
            &mut check,
        );
    }

    /// A forged answer for the outstanding query: `tweak` spoils one property.
    fn forged(q: &Query, m: &Message, tweak: &dyn Fn(&mut Message)) -> Vec<u8> {
        let mut r = Message::new();
        r.set_id(m.id())
            .set_message_type(MessageType::Response)
            .set_authoritative(true);
        r.add_query(m.queries()[0].clone());
        r.add_answer(a(&m.queries()[0].name().to_ascii(), [6, 6, 6, 6]));
        tweak(&mut r);
        let _ = q;
        r.to_vec().unwrap()
    }

    #[test]
    fn answer_whose_question_case_differs_is_dropped() {
        let mut c = ctx(ResolverConfig {
            qname_minimisation: false,
            ..ResolverConfig::default()
        });
        let mut spoof = |q: &Query, m: &Message| {
            let wrong = forged(q, m, &|r: &mut Message| {
                let mut qq = r.queries()[0].clone();
                let flipped = Name::from_ascii(flip(&qq.name().to_ascii())).unwrap();
                qq.set_name(flipped);
                r.queries_mut()[0] = qq;
            });
            vec![(q.server, wrong)]
        };
        let (ans, _) = run(
            &mut c,
            &Fake::hierarchy(),
            "www.alpha.test.",
            RecordType::A,
            &mut spoof,
        );
        assert_eq!(addrs(&ans), vec!["192.0.2.1"]);
        assert_eq!(c.stats.dropped_wrong_case, 3);
        assert_eq!(c.stats.dropped_wrong_question, 0);
    }

    fn flip(s: &str) -> String {
        s.chars()
            .map(|ch| {
                if ch.is_ascii_lowercase() {
                    ch.to_ascii_uppercase()
                } else {
                    ch.to_ascii_lowercase()
                }
            })
            .collect()
    }

    #[test]
    fn answer_with_wrong_id_is_dropped() {
        let mut c = ctx(ResolverConfig::default());
        let mut spoof = |q: &Query, m: &Message| {
            let id = m.id().wrapping_add(1);
            vec![(
                q.server,
                forged(q, m, &move |r: &mut Message| {
                    r.set_id(id);
                }),
            )]
        };
        let (ans, _) = run(
            &mut c,
            &Fake::hierarchy(),
            "www.alpha.test.",
            RecordType::A,
            &mut spoof,
        );
        assert_eq!(addrs(&ans), vec!["192.0.2.1"]);
        assert_eq!(c.stats.dropped_wrong_id, 3);
    }

    #[test]
    fn answer_from_an_address_or_port_not_asked_is_dropped() {
        let mut c = ctx(ResolverConfig::default());
        let mut spoof = |q: &Query, m: &Message| {
            let mut other_port = q.server;
            other_port.set_port(5353);
            let other_host = SocketAddr::new(ip(66), 53);
            vec![
                (other_port, forged(q, m, &|_| {})),
                (other_host, forged(q, m, &|_| {})),
            ]
        };
        let (ans, _) = run(
            &mut c,
            &Fake::hierarchy(),
            "www.alpha.test.",
            RecordType::A,
            &mut spoof,
        );
        assert_eq!(addrs(&ans), vec!["192.0.2.1"]);
        assert_eq!(c.stats.dropped_wrong_source, 3);
        assert_eq!(c.stats.dropped_wrong_port, 3);
    }

    #[test]
    fn out_of_bailiwick_answer_records_are_discarded_not_cached() {
        let mut fake = Fake::hierarchy();
        fake.extra_answer
            .insert(ip(5), vec![a("www.beta.example.", [6, 6, 6, 6])]);
        let mut c = ctx(ResolverConfig::default());
        let (ans, _) = run(
            &mut c,
            &fake,
            "www.alpha.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert_eq!(addrs(&ans), vec!["192.0.2.1"]);
        assert!(c.stats.out_of_bailiwick_discarded >= 1);
        let now = Instant::from_secs(1001);
        assert_eq!(
            c.cache
                .peek(&n("www.beta.example."), RecordType::A, DNSClass::IN, now),
            Lookup::Miss
        );
    }

    #[test]
    fn glue_outside_the_delegating_zone_is_ignored_and_ns_name_resolved() {
        let mut fake = Fake::hierarchy();
        // test.'s servers offer an address for ns.beta.example., which test. has no authority for.
        fake.extra_glue
            .insert(ip(3), vec![a("ns.beta.example.", [127, 0, 0, 66])]);
        let mut c = ctx(ResolverConfig::default());
        let (ans, log) = run(
            &mut c,
            &fake,
            "host.gamma.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert_eq!(addrs(&ans), vec!["192.0.2.30"]);
        assert!(log.iter().all(|l| l.0 != ip(66)), "{log:?}");
        assert!(log.iter().any(|l| l.0 == ip(6)));
    }

    #[test]
    fn cname_chain_is_followed_across_zones() {
        let mut c = ctx(ResolverConfig::default());
        let (ans, _) = run(
            &mut c,
            &Fake::hierarchy(),
            "chain.alpha.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert_eq!(ans.rcode, ResponseCode::NoError);
        assert_eq!(ans.answers.len(), 3, "{:?}", ans.answers);
        assert_eq!(ans.answers[2].data().to_string(), "192.0.2.40");
    }

    #[test]
    fn cname_chain_longer_than_the_limit_fails() {
        let mut c = ctx(ResolverConfig {
            max_cname: 1,
            ..ResolverConfig::default()
        });
        let (ans, _) = run(
            &mut c,
            &Fake::hierarchy(),
            "chain.alpha.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert_eq!(ans.rcode, ResponseCode::ServFail);
    }

    #[test]
    fn truncated_udp_answer_is_retried_over_tcp_of_the_same_server() {
        let mut c = ctx(ResolverConfig::default());
        let (ans, log) = run(
            &mut c,
            &Fake::hierarchy(),
            "big.alpha.test.",
            RecordType::TXT,
            &mut no_spoof,
        );
        assert_eq!(ans.answers.len(), 20);
        let last = &log[log.len() - 1];
        let before = &log[log.len() - 2];
        assert!(last.3 && !before.3);
        assert_eq!(last.0, before.0);
    }

    #[test]
    fn timeout_moves_to_another_server() {
        let mut c = ctx(ResolverConfig::default());
        // Make the dead server look fastest so it is asked first.
        c.servers
            .on_answer(ip(8), Duration::from_micros(1), &mut c.rng);
        let (ans, log) = run(
            &mut c,
            &Fake::hierarchy(),
            "www.two.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert_eq!(addrs(&ans), vec!["192.0.2.22"]);
        let tail: Vec<IpAddr> = log.iter().rev().take(2).map(|l| l.0).collect();
        assert_eq!(tail, vec![ip(5), ip(8)]);
        assert_eq!(c.stats.timeouts, 1);
    }

    #[test]
    fn nxdomain_and_nodata_are_negative_cached() {
        let mut c = ctx(ResolverConfig::default());
        let fake = Fake::hierarchy();
        let (nx, _) = run(
            &mut c,
            &fake,
            "nope.alpha.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        let (nd, _) = run(
            &mut c,
            &fake,
            "www.alpha.test.",
            RecordType::MX,
            &mut no_spoof,
        );
        assert_eq!((nd.rcode, nd.answers.len()), (ResponseCode::NoError, 0));
        let (nx2, log) = run(
            &mut c,
            &fake,
            "nope.alpha.test.",
            RecordType::TXT,
            &mut no_spoof,
        );
        assert_eq!(nx2.rcode, ResponseCode::NXDomain);
        assert!(log.is_empty() && nx2.from_cache);
        let (_, log) = run(
            &mut c,
            &fake,
            "www.alpha.test.",
            RecordType::MX,
            &mut no_spoof,
        );
        assert!(log.is_empty());
    }

    #[test]
    fn query_limit_per_resolution_stops_fan_out() {
        let mut fake = Fake::hierarchy();
        // A delegation to many NS names that cannot be resolved (NXNSAttack shape).
        let recs = &mut fake.zones.get_mut(&ip(3)).unwrap()[0].1;
        for i in 0..50 {
            recs.push(ns("fan.test.", &format!("ns{i}.nowhere.example.")));
        }
        let mut c = ctx(ResolverConfig::default());
        let (ans, log) = run(&mut c, &fake, "www.fan.test.", RecordType::A, &mut no_spoof);
        assert_eq!(ans.rcode, ResponseCode::ServFail);
        // max_ns_lookups (4) sub-resolutions, each a few queries: far fewer than 50.
        assert!(log.len() <= 4 * 3 + 4, "{} queries", log.len());
        let mut c = ctx(ResolverConfig {
            max_queries: 3,
            ..ResolverConfig::default()
        });
        let (ans, log) = run(
            &mut c,
            &fake,
            "chain.alpha.test.",
            RecordType::A,
            &mut no_spoof,
        );
        assert_eq!(ans.rcode, ResponseCode::ServFail);
        assert_eq!(log.len(), 3);
    }

    /// A cache-only resolution (RD=0) of `name`: its answer, and whether it
    /// wanted to send anything.
    fn cached(c: &mut Context, name: &str, ty: RecordType) -> (Answer, bool) {
        let now = Instant::from_secs(1001);
        let mut res = Resolution::cache_only(&n(name), ty, c, now);
        let sent = res.poll_transmit(c, now).is_some();
        (
            res.into_result().expect("a cache-only answer at once"),
            sent,
        )
    }

    #[test]
    fn cache_only_answers_from_the_cache_or_refers_from_it_without_a_query() {
        let mut c = ctx(ResolverConfig::default());
        // Nothing cached: a referral to the root, from the hints.
        let (a, sent) = cached(&mut c, "www.alpha.test.", RecordType::A);
        assert!(!sent);
        assert_eq!((a.rcode, a.answers.len()), (ResponseCode::NoError, 0));
        assert_eq!(a.authority[0].name(), &Name::root());
        assert_eq!(addrs_of(&a.additional), vec!["127.0.0.2"]);
        run(
            &mut c,
            &Fake::hierarchy(),
            "www.alpha.test.",
            RecordType::A,
            &mut no_spoof,
        );
        // Cached: the answer itself.
        let (a, sent) = cached(&mut c, "www.alpha.test.", RecordType::A);
        assert!(!sent && a.from_cache);
        assert_eq!(addrs(&a), vec!["192.0.2.1"]);
        // Not cached, but its zone is: a referral to alpha.test. with glue.
        let (a, sent) = cached(&mut c, "other.alpha.test.", RecordType::A);
        assert!(!sent);
        assert!(a.answers.is_empty());
        assert_eq!(a.authority[0].name(), &n("alpha.test."));
        assert_eq!(a.authority[0].record_type(), RecordType::NS);
        assert!(!a.additional.is_empty());
        assert_eq!(c.stats.cache_only_referrals, 2);
    }

    fn addrs_of(rs: &[Record]) -> Vec<String> {
        rs.iter().map(|r| r.data().to_string()).collect()
    }
}
