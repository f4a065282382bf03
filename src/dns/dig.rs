//! `tunstack dig`: argument parsing, asking one server, and output in the
//! shape of BIND's dig (header line, flags, sections, query time, server,
//! message size), `+short` and `+trace`.
//!
//! The formatting functions are pure (fixed messages in, text out); the
//! query functions take a [`Transport`] so the same code runs over the
//! kernel's sockets or the stack.

use super::driver::Transport;
use super::hints::RootHints;
use super::resolver::{Answer, TraceStep};
use crate::rng::Rng;
use crate::time::{Clock, Duration};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// EDNS0 UDP payload size dig advertises (DNS flag day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;

/// What to ask and how to show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigOptions {
    /// `@SERVER`: ask this server; `None`: resolve iteratively from the root hints.
    pub server: Option<IpAddr>,
    pub port: u16,
    pub name: Name,
    pub rtype: RecordType,
    pub short: bool,
    pub tcp: bool,
    pub trace: bool,
    /// RD bit (cleared by `+norecurse`).
    pub recurse: bool,
    /// The arguments as given, for the `; <<>> tunstack dig <<>> ...` line.
    pub cmdline: String,
}

/// Parse dig's free-form arguments: `@SERVER`, `NAME`, `TYPE`, `+short`,
/// `+tcp`, `+trace`, `+norecurse` (and `+recurse`, `+notcp`, ...), plus
/// `-p PORT`, `-t TYPE`, `-x ADDR` when the caller did not take them out.
/// The error is one line saying what is wrong.
pub fn parse_args(args: &[String]) -> Result<DigOptions, String> {
    let mut server = None;
    let mut port = 53u16;
    let mut name: Option<Name> = None;
    let mut rtype: Option<RecordType> = None;
    let (mut short, mut tcp, mut trace, mut recurse) = (false, false, false, true);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(s) = a.strip_prefix('@') {
            let ip = IpAddr::from_str(s)
                .map_err(|_| format!("@{s}: the server must be an IP address"))?;
            server = Some(ip);
        } else if let Some(opt) = a.strip_prefix('+') {
            let (neg, o) = match opt.strip_prefix("no") {
                Some(o) => (true, o),
                None => (false, opt),
            };
            match o {
                "short" => short = !neg,
                "tcp" | "vc" => tcp = !neg,
                "trace" => trace = !neg,
                "recurse" | "rec" => recurse = !neg,
                _ => {
                    return Err(format!(
                        "{a}: unknown option (known: +short +tcp +trace +norecurse)"
                    ))
                }
            }
        } else if a == "-p" {
            let v = it.next().ok_or("-p needs a port number")?;
            port = v
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("-p {v}: not a port number (1-65535)"))?;
        } else if a == "-t" {
            let v = it.next().ok_or("-t needs a record type")?;
            rtype = Some(parse_type(v).ok_or_else(|| format!("-t {v}: unknown record type"))?);
        } else if a == "-x" {
            let v = it.next().ok_or("-x needs an address")?;
            let ip = IpAddr::from_str(v).map_err(|_| format!("-x {v}: not an IP address"))?;
            name = Some(reverse_name(ip));
            rtype.get_or_insert(RecordType::PTR);
        } else if a.starts_with('-') && a.len() > 1 {
            return Err(format!("{a}: unknown flag"));
        } else if name.is_some() && rtype.is_none() && parse_type(a).is_some() {
            rtype = parse_type(a);
        } else if name.is_none() {
            name = Some(parse_name(a)?);
        } else if let Some(t) = parse_type(a) {
            rtype = Some(t);
        } else {
            return Err(format!("{a}: unexpected argument (one NAME and one TYPE)"));
        }
    }
    let name = name.ok_or("a NAME to look up is required (or -x ADDR)")?;
    Ok(DigOptions {
        server,
        port,
        name,
        rtype: rtype.unwrap_or(RecordType::A),
        short,
        tcp,
        trace,
        recurse,
        cmdline: args.join(" "),
    })
}

fn parse_type(s: &str) -> Option<RecordType> {
    let t = RecordType::from_str(&s.to_ascii_uppercase()).ok()?;
    (!matches!(t, RecordType::Unknown(_))).then_some(t)
}

fn parse_name(s: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(s).map_err(|e| format!("{s}: not a domain name ({e})"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// The PTR name of an address: `d.c.b.a.in-addr.arpa.` or the nibbles under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> Name {
    let s = match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v) => {
            let mut s = String::new();
            for b in v.octets().iter().rev() {
                let _ = write!(s, "{:x}.{:x}.", b & 0xf, b >> 4);
            }
            s + "ip6.arpa."
        }
    };
    Name::from_ascii(&s).expect("reverse names are valid")
}

/// Rdata as dig prints it (TXT strings quoted, the rest as in zone files).
pub fn rdata_text(rd: &RData) -> String {
    match rd {
        RData::TXT(t) => t
            .iter()
            .map(|s| {
                let mut o = String::from("\"");
                for &b in s.iter() {
                    match b {
                        b'"' | b'\\' => {
                            o.push('\\');
                            o.push(b as char);
                        }
                        0x20..=0x7e => o.push(b as char),
                        _ => {
                            let _ = write!(o, "\\{b:03}");
                        }
                    }
                }
                o.push('"');
                o
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// One record: name, TTL, class, type and rdata, tab-separated.
pub fn record_line(r: &Record) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}",
        r.name(),
        r.ttl(),
        r.dns_class(),
        r.record_type(),
        rdata_text(r.data())
    )
}

fn flags_text(m: &Message) -> String {
    let mut f = Vec::new();
    if m.message_type() == MessageType::Response {
        f.push("qr");
    }
    if m.authoritative() {
        f.push("aa");
    }
    if m.truncated() {
        f.push("tc");
    }
    if m.recursion_desired() {
        f.push("rd");
    }
    if m.recursion_available() {
        f.push("ra");
    }
    if m.authentic_data() {
        f.push("ad");
    }
    if m.checking_disabled() {
        f.push("cd");
    }
    f.join(" ")
}

fn opcode_text(o: OpCode) -> String {
    match o {
        OpCode::Query => "QUERY".into(),
        OpCode::Status => "STATUS".into(),
        OpCode::Notify => "NOTIFY".into(),
        OpCode::Update => "UPDATE".into(),
        other => format!("RESERVED{}", u8::from(other)),
    }
}

/// The status names BIND's dig prints.
pub fn rcode_text(r: ResponseCode) -> String {
    match u16::from(r) {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        16 => "BADVERS".into(),
        n => format!("RESERVED{n}"),
    }
}

/// Where an answer came from, for the `;; SERVER:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// `ADDR#PORT(ADDR)` as dig prints it, or a description of the resolver.
    pub server: String,
    pub tcp: bool,
}

impl ServerInfo {
    pub fn addr(a: SocketAddr, tcp: bool) -> ServerInfo {
        ServerInfo {
            server: format!("{}#{}({})", a.ip(), a.port(), a.ip()),
            tcp,
        }
    }
}

/// Shown after the sections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    pub query_time: Duration,
    pub server: ServerInfo,
    /// Seconds since the Unix epoch (the `;; WHEN:` line, in UTC).
    pub when_unix: i64,
    pub size: usize,
}

/// `Wed Nov 25 13:21:58 UTC 2026`, dig's WHEN format, in UTC.
pub fn when_text(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let wd = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        [t.weekday().number_days_from_monday() as usize];
    let mo = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][u8::from(t.month()) as usize - 1];
    format!(
        "{wd} {mo} {:02} {:02}:{:02}:{:02} UTC {}",
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.year()
    )
}

/// The first line of every output.
pub fn banner(cmdline: &str) -> String {
    format!("; <<>> tunstack dig <<>> {cmdline}\n")
}

/// A full answer in dig's layout (banner not included).
pub fn format_message(m: &Message, stats: &Stats) -> String {
    let mut o = String::new();
    o.push_str(";; Got answer:\n");
    let _ = writeln!(
        o,
        ";; ->>HEADER<<- opcode: {}, status: {}, id: {}",
        opcode_text(m.op_code()),
        rcode_text(m.response_code()),
        m.id()
    );
    let _ = writeln!(
        o,
        ";; flags: {}; QUERY: {}, ANSWER: {}, AUTHORITY: {}, ADDITIONAL: {}",
        flags_text(m),
        m.queries().len(),
        m.answers().len(),
        m.name_servers().len(),
        m.additionals().len() + usize::from(m.extensions().is_some()),
    );
    o.push('\n');
    if let Some(e) = m.extensions() {
        o.push_str(";; OPT PSEUDOSECTION:\n");
        let _ = writeln!(
            o,
            "; EDNS: version: {}, flags:{}; udp: {}",
            e.version(),
            if e.flags().dnssec_ok { " do" } else { "" },
            e.max_payload()
        );
    }
    o.push_str(";; QUESTION SECTION:\n");
    for q in m.queries() {
        let _ = writeln!(
            o,
            ";{}\t\t{}\t{}",
            q.name(),
            q.query_class(),
            q.query_type()
        );
    }
    for (title, recs) in [
        ("ANSWER", m.answers()),
        ("AUTHORITY", m.name_servers()),
        ("ADDITIONAL", m.additionals()),
    ] {
        if recs.is_empty() {
            continue;
        }
        let _ = writeln!(o, "\n;; {title} SECTION:");
        for r in recs {
            o.push_str(&record_line(r));
            o.push('\n');
        }
    }
    let _ = writeln!(o, "\n;; Query time: {} msec", stats.query_time.as_millis());
    let _ = writeln!(
        o,
        ";; SERVER: {} ({})",
        stats.server.server,
        if stats.server.tcp { "TCP" } else { "UDP" }
    );
    let _ = writeln!(o, ";; WHEN: {}", when_text(stats.when_unix));
    let _ = writeln!(o, ";; MSG SIZE  rcvd: {}", stats.size);
    o
}

/// `+short`: the rdata of each answer record, one per line.
pub fn format_short(m: &Message) -> String {
    let mut o = String::new();
    for r in m.answers() {
        o.push_str(&rdata_text(r.data()));
        o.push('\n');
    }
    o
}

/// `+trace`: the root NS set from the hints, then for each response seen
/// during the resolution its answer and authority records and a
/// `;; Received N bytes from ADDR#PORT(ADDR) in M ms` line, as dig shows
/// each step from the root down.
pub fn format_trace(hints: &RootHints, hints_origin: &str, steps: &[TraceStep]) -> String {
    let mut o = String::new();
    for s in &hints.servers {
        let _ = writeln!(o, ".\t\t\t3600000\tIN\tNS\t{}", s.name);
    }
    let _ = writeln!(o, ";; Received root hints from {hints_origin}\n");
    for st in steps {
        let m = &st.response;
        for r in m.answers().iter().chain(m.name_servers()) {
            o.push_str(&record_line(r));
            o.push('\n');
        }
        let _ = writeln!(
            o,
            ";; Received {} bytes from {}#{}({}) in {} ms{}\n",
            st.size,
            st.server.ip(),
            st.server.port(),
            st.server.ip(),
            st.rtt.as_millis(),
            if st.tcp { " (TCP)" } else { "" }
        );
    }
    o
}

/// The answer of our own resolver as a response message (id, RD as asked,
/// RA, the CNAME chain and final RRset, the SOA of a negative answer).
pub fn answer_message(
    name: &Name,
    rtype: RecordType,
    id: u16,
    recurse: bool,
    a: &Answer,
) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(recurse)
        .set_recursion_available(true)
        .set_response_code(a.rcode);
    let mut q = Query::query(name.clone(), rtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    m.add_answers(a.answers.iter().cloned());
    m.add_name_servers(a.authority.iter().cloned());
    m
}

/// A query message as dig sends it: random id, RD unless `+norecurse`,
/// EDNS0 with [`EDNS_PAYLOAD`].
pub fn query_message(name: &Name, rtype: RecordType, recurse: bool, id: u16) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(recurse);
    m.add_query(Query::query(name.clone(), rtype));
    let mut e = Edns::new();
    e.set_max_payload(EDNS_PAYLOAD);
    e.set_version(0);
    m.set_edns(e);
    m
}

/// The answer from one server, with what dig reports about it.
#[derive(Clone, Debug)]
pub struct Reply {
    pub msg: Message,
    pub size: usize,
    pub query_time: Duration,
    pub tcp: bool,
}

/// Does `r` answer `q` (same id, a response, same question)?
pub fn matches(q: &Message, r: &Message) -> bool {
    r.id() == q.id()
        && r.message_type() == MessageType::Response
        && r.queries().len() == q.queries().len()
        && r.queries().iter().zip(q.queries()).all(|(a, b)| {
            a.name().to_lowercase() == b.name().to_lowercase() && a.query_type() == b.query_type()
        })
}

/// How long to wait for one server, and how often to ask over UDP.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    pub timeout: Duration,
    pub tries: usize,
}

/// Ask `server` `opts.name`/`opts.rtype` once, over UDP (retrying over TCP
/// when the answer is truncated, as dig does) or over TCP with `opts.tcp`.
pub fn ask<T: Transport>(
    t: &mut T,
    server: SocketAddr,
    opts: &DigOptions,
    rng: &mut Rng,
    patience: Patience,
) -> Result<Reply, String> {
    let Patience { timeout, tries } = patience;
    let tcp = opts.tcp;
    let q = query_message(&opts.name, opts.rtype, opts.recurse, rng.next_u32() as u16);
    let bytes = q
        .to_vec()
        .map_err(|e| format!("cannot encode the query: {e}"))?;
    let clock = Clock::new();
    let start = clock.now();
    let via_tcp = |t: &mut T| -> Result<Reply, String> {
        let b = t
            .tcp_query(server, &bytes, timeout)
            .map_err(|e| format!("connection to {server} over TCP failed: {e}"))?;
        let msg =
            Message::from_vec(&b).map_err(|e| format!("malformed answer from {server}: {e}"))?;
        if !matches(&q, &msg) {
            return Err(format!("answer from {server} does not match the query"));
        }
        Ok(Reply {
            msg,
            size: b.len(),
            query_time: clock.now() - start,
            tcp: true,
        })
    };
    if tcp {
        return via_tcp(t);
    }
    for _ in 0..tries.max(1) {
        let src = 1024 + (rng.next_u32() % (65536 - 1024)) as u16;
        t.udp_send(server, src, &bytes)
            .map_err(|e| format!("cannot send to {server}: {e}"))?;
        let sent = clock.now();
        loop {
            let waited = clock.now() - sent;
            if waited >= timeout {
                break;
            }
            match t.udp_recv(timeout - waited) {
                Ok(Some((from, b))) if from == server => {
                    let Ok(msg) = Message::from_vec(&b) else {
                        continue;
                    };
                    if !matches(&q, &msg) {
                        continue;
                    }
                    if msg.truncated() {
                        return via_tcp(t);
                    }
                    return Ok(Reply {
                        msg,
                        size: b.len(),
                        query_time: clock.now() - sent,
                        tcp: false,
                    });
                }
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => return Err(format!("receive from {server} failed: {e}")),
            }
        }
    }
    Err(format!(
        ";; connection timed out; no servers could be reached ({server})"
    ))
}

/// `tunstack dig`'s client stack: its own device and subnet, distinct from
/// `up` (tunstack0, 198.19.0.0/24) and `curl` (tunstack1, 198.19.1.0/24), so
/// all three can run at once.
pub const DEFAULT_TUN: &str = "tunstack2";
pub const DEFAULT_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 19, 2, 2);
pub const DEFAULT_PEER: &str = "198.19.2.1/24";

/// Run one dig: ask `opts.server` through `transport`, or resolve
/// iteratively from `hints` (named `hints_origin` in the output) with our
/// resolver. Returns the text to print.
pub fn run<T: Transport>(
    transport: T,
    opts: &DigOptions,
    hints: RootHints,
    hints_origin: &str,
    mut rng: Rng,
) -> Result<String, String> {
    let mut out = String::new();
    if !opts.short {
        out.push('\n');
        out.push_str(&banner(&opts.cmdline));
        out.push_str(";; global options: +cmd\n");
    }
    let when = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    };
    if let (Some(ip), false) = (opts.server, opts.trace) {
        let server = SocketAddr::new(ip, opts.port);
        let mut t = transport;
        let patience = Patience {
            timeout: Duration::from_secs(2),
            tries: 3,
        };
        let r = ask(&mut t, server, opts, &mut rng, patience)?;
        if opts.short {
            out.push_str(&format_short(&r.msg));
        } else {
            out.push_str(&format_message(
                &r.msg,
                &Stats {
                    query_time: r.query_time,
                    server: ServerInfo::addr(server, r.tcp),
                    when_unix: when(),
                    size: r.size,
                },
            ));
        }
        return Ok(out);
    }
    let config = super::resolver::ResolverConfig {
        trace: opts.trace,
        // +trace shows the root NS set of the hints, then each step from there.
        prime_root: !opts.trace,
        port: opts.port,
        ..Default::default()
    };
    let mut res = super::driver::Resolver::new(hints.clone(), config, transport, rng);
    let clock = Clock::new();
    let start = clock.now();
    let (answer, steps) = res.resolve_traced(&opts.name, opts.rtype);
    let elapsed = clock.now() - start;
    let id = res.ctx.rng.next_u32() as u16;
    let msg = answer_message(&opts.name, opts.rtype, id, opts.recurse, &answer);
    if opts.trace {
        if opts.short {
            for s in &steps {
                out.push_str(&format_short(&s.response));
            }
        } else {
            out.push_str(&format_trace(&hints, hints_origin, &steps));
        }
        return Ok(out);
    }
    if opts.short {
        out.push_str(&format_short(&msg));
    } else {
        let size = msg.to_vec().map(|b| b.len()).unwrap_or(0);
        out.push_str(&format_message(
            &msg,
            &Stats {
                query_time: elapsed,
                server: ServerInfo {
                    server: format!("iterative from root hints {hints_origin}"),
                    tcp: opts.tcp,
                },
                when_unix: when(),
                size,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME, NS, SOA, TXT};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn answer_fixture() -> Message {
        let mut m = Message::new();
        m.set_id(4242)
            .set_message_type(MessageType::Response)
            .set_recursion_desired(true)
            .set_recursion_available(true)
            .set_response_code(ResponseCode::NoError);
        m.add_query(Query::query(n("chain.alpha.test."), RecordType::A));
        m.add_answer(Record::from_rdata(
            n("chain.alpha.test."),
            300,
            RData::CNAME(CNAME(n("final.alpha.test."))),
        ));
        m.add_answer(Record::from_rdata(
            n("final.alpha.test."),
            299,
            RData::A(A::new(192, 0, 2, 40)),
        ));
        m
    }

    fn stats() -> Stats {
        Stats {
            query_time: Duration::from_millis(7),
            server: ServerInfo::addr("127.0.0.53:53".parse().unwrap(), false),
            when_unix: 1_795_958_518,
            size: 77,
        }
    }

    #[test]
    fn header_line_has_opcode_status_and_id() {
        let out = format_message(&answer_fixture(), &stats());
        assert!(
            out.contains(";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 4242\n"),
            "{out}"
        );
    }

    #[test]
    fn flags_line_lists_flags_and_section_counts() {
        let out = format_message(&answer_fixture(), &stats());
        assert!(
            out.contains(";; flags: qr rd ra; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 0\n"),
            "{out}"
        );
    }

    #[test]
    fn sections_are_tab_separated_name_ttl_class_type_rdata() {
        let out = format_message(&answer_fixture(), &stats());
        assert!(
            out.contains(";; QUESTION SECTION:\n;chain.alpha.test.\t\tIN\tA\n"),
            "{out}"
        );
        assert!(out.contains(
            ";; ANSWER SECTION:\nchain.alpha.test.\t300\tIN\tCNAME\tfinal.alpha.test.\nfinal.alpha.test.\t299\tIN\tA\t192.0.2.40\n"
        ), "{out}");
        assert!(
            !out.contains("AUTHORITY SECTION"),
            "empty sections are not shown: {out}"
        );
    }

    #[test]
    fn footer_has_time_server_when_and_size() {
        let out = format_message(&answer_fixture(), &stats());
        assert!(out.contains(";; Query time: 7 msec\n"), "{out}");
        assert!(
            out.contains(";; SERVER: 127.0.0.53#53(127.0.0.53) (UDP)\n"),
            "{out}"
        );
        assert!(out.contains(";; WHEN: "), "{out}");
        assert!(out.contains(";; MSG SIZE  rcvd: 77\n"), "{out}");
    }

    #[test]
    fn when_is_dig_date_format_in_utc() {
        assert_eq!(when_text(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(when_text(1_700_000_000), "Tue Nov 14 22:13:20 UTC 2023");
    }

    #[test]
    fn status_shows_nxdomain_and_negative_soa_in_authority() {
        let mut m = answer_fixture();
        m.take_answers();
        m.set_response_code(ResponseCode::NXDomain);
        m.add_name_server(Record::from_rdata(
            n("alpha.test."),
            60,
            RData::SOA(SOA::new(
                n("ns1.alpha.test."),
                n("hostmaster.alpha.test."),
                1,
                3600,
                600,
                86400,
                60,
            )),
        ));
        let out = format_message(&m, &stats());
        assert!(out.contains("status: NXDOMAIN"), "{out}");
        assert!(out.contains(
            ";; AUTHORITY SECTION:\nalpha.test.\t60\tIN\tSOA\tns1.alpha.test. hostmaster.alpha.test. 1 3600 600 86400 60\n"
        ), "{out}");
    }

    #[test]
    fn edns_is_shown_as_opt_pseudosection_and_counted_in_additional() {
        let mut m = answer_fixture();
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
        let out = format_message(&m, &stats());
        assert!(out.contains("ADDITIONAL: 1"), "{out}");
        assert!(
            out.contains(";; OPT PSEUDOSECTION:\n; EDNS: version: 0, flags:; udp: 1232\n"),
            "{out}"
        );
    }

    #[test]
    fn short_prints_rdata_of_every_answer_record() {
        assert_eq!(
            format_short(&answer_fixture()),
            "final.alpha.test.\n192.0.2.40\n"
        );
    }

    #[test]
    fn txt_rdata_is_quoted_and_escaped() {
        let rd = RData::TXT(TXT::new(vec!["a \"b\"".into(), "c".into()]));
        assert_eq!(rdata_text(&rd), "\"a \\\"b\\\"\" \"c\"");
    }

    #[test]
    fn trace_shows_root_ns_then_each_step_with_received_line() {
        let hints =
            RootHints::parse(".  3600000 NS root-ns.\nroot-ns. 3600000 A 127.0.0.2\n").unwrap();
        let mut referral = Message::new();
        referral.set_message_type(MessageType::Response);
        referral.add_name_server(Record::from_rdata(
            n("test."),
            3600,
            RData::NS(NS(n("ns1.nic.test."))),
        ));
        let step = TraceStep {
            server: "127.0.0.2:53".parse().unwrap(),
            zone: Name::root(),
            qname: n("test."),
            qtype: RecordType::A,
            tcp: false,
            rtt: Duration::from_millis(3),
            response: referral,
            size: 91,
        };
        let out = format_trace(&hints, "root.hints", &[step]);
        assert!(
            out.starts_with(".\t\t\t3600000\tIN\tNS\troot-ns.\n"),
            "{out}"
        );
        assert!(out.contains(
            "test.\t3600\tIN\tNS\tns1.nic.test.\n;; Received 91 bytes from 127.0.0.2#53(127.0.0.2) in 3 ms\n"
        ), "{out}");
    }

    #[test]
    fn args_take_server_name_type_and_plus_options() {
        let o = parse_args(&args(
            "@127.0.0.53 www.alpha.test MX +short +tcp +norecurse",
        ))
        .unwrap();
        assert_eq!(o.server, Some("127.0.0.53".parse().unwrap()));
        assert_eq!(o.name, n("www.alpha.test."));
        assert_eq!(o.rtype, RecordType::MX);
        assert!(o.short && o.tcp && !o.recurse && !o.trace);
        let d = parse_args(&args("www.alpha.test")).unwrap();
        assert_eq!(
            (d.rtype, d.recurse, d.port, d.server),
            (RecordType::A, true, 53, None)
        );
    }

    #[test]
    fn args_dash_x_makes_a_ptr_query() {
        let o = parse_args(&args("-x 192.0.2.1")).unwrap();
        assert_eq!(o.name, n("1.2.0.192.in-addr.arpa."));
        assert_eq!(o.rtype, RecordType::PTR);
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()).to_string(),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }

    #[test]
    fn bad_args_give_one_line_errors() {
        for bad in [
            "+bogus x",
            "@notanip x",
            "-p 0 x",
            "-p",
            "-t NOPE x",
            "-x zzz",
            "a b c",
            "-q x",
            "",
        ] {
            let e = parse_args(&args(bad)).unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty(), "{bad}: {e}");
        }
    }

    #[test]
    fn reply_must_match_id_and_question() {
        let q = query_message(&n("www.alpha.test."), RecordType::A, true, 7);
        let mut r = answer_fixture();
        r.take_queries();
        r.add_query(Query::query(n("WWW.alpha.TEST."), RecordType::A));
        r.set_id(7);
        assert!(matches(&q, &r));
        r.set_id(8);
        assert!(!matches(&q, &r));
        r.set_id(7);
        r.take_queries();
        r.add_query(Query::query(n("www.alpha.test."), RecordType::MX));
        assert!(!matches(&q, &r));
    }

    #[test]
    fn answer_message_sets_ra_rcode_and_sections() {
        let a = Answer {
            rcode: ResponseCode::NXDomain,
            answers: vec![],
            authority: vec![Record::from_rdata(
                n("test."),
                300,
                RData::A(A::new(1, 2, 3, 4)),
            )],
            additional: Vec::new(),
            from_cache: false,
        };
        let m = answer_message(&n("x.test."), RecordType::A, 9, true, &a);
        assert!(m.recursion_available() && m.recursion_desired());
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert_eq!(
            (m.id(), m.name_servers().len(), m.queries().len()),
            (9, 1, 1)
        );
    }
}
