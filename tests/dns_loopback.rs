//! The resolver against real authoritative servers: the private hierarchy of
//! tests/dns_fixtures served by NSD on 127.0.0.2-6 inside a network namespace
//! this test creates, compared name by name with Unbound (127.0.0.53) pointed
//! at the same root. Our resolver runs over the kernel's sockets (std::net).
//! Nothing leaves the namespace.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tunstack::dns::driver::{tcp_exchange, Resolver, StdTransport};
use tunstack::dns::hints::RootHints;
use tunstack::dns::resolver::ResolverConfig;
use tunstack::netns;
use tunstack::rng::Rng;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Stops the hierarchy when dropped (also on panic).
struct Hierarchy {
    run: PathBuf,
}

impl Hierarchy {
    fn start(tag: &str) -> Hierarchy {
        let run = std::env::temp_dir().join(format!("tunstack-dns-{tag}-{}", std::process::id()));
        let out = Command::new(root().join("scripts/dns-hierarchy.sh"))
            .arg("start")
            .arg(&run)
            .output()
            .expect("run scripts/dns-hierarchy.sh");
        assert!(
            out.status.success(),
            "dns-hierarchy.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Hierarchy { run }
    }
}

impl Drop for Hierarchy {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/dns-hierarchy.sh"))
            .arg("stop")
            .arg(&self.run)
            .status();
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

/// Run `f` in a fresh network namespace with the hierarchy up. `None` when
/// skipped (not root, outside CI).
fn with_hierarchy<T: Send + 'static>(
    test: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if !netns::require_root(test) {
        return None;
    }
    let r = netns::in_new_netns(move || {
        let _h = Hierarchy::start(test);
        f()
    });
    Some(r.unwrap_or_else(|e| panic!("{test}: cannot create a network namespace: {e}")))
}

fn hints() -> RootHints {
    RootHints::from_file(&root().join("tests/dns_fixtures/root.hints")).expect("fixture hints")
}

fn resolver(config: ResolverConfig, seed: u64) -> Resolver<StdTransport> {
    Resolver::new(hints(), config, StdTransport::new(), Rng::new(seed))
}

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// Records as comparable lowercase text, sorted (TTLs left out: they decay).
fn texts(rs: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = rs
        .iter()
        .map(|r| format!("{} {} {}", r.name(), r.record_type(), r.data()).to_lowercase())
        .collect();
    v.sort();
    v
}

/// Ask Unbound (recursion desired), over TCP so nothing is truncated.
fn ask_unbound(name: &Name, rtype: RecordType) -> (ResponseCode, Vec<Record>) {
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(name.clone(), rtype));
    let bytes = m.to_vec().unwrap();
    let addr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 53), 53));
    // Unbound, busy with its first recursions on a loaded machine, now and
    // then closes a TCP connection without answering: ask again (it is the
    // reference here, not the code under test).
    let mut last = None;
    for _ in 0..5 {
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to unbound");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        match tcp_exchange(&mut s, &bytes) {
            Ok(answer) => {
                let resp = Message::from_vec(&answer).unwrap();
                return (resp.response_code(), resp.answers().to_vec());
            }
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    panic!("unbound answers: {last:?}")
}

const NAMES: &[(&str, RecordType, ResponseCode)] = &[
    ("www.alpha.test.", RecordType::A, ResponseCode::NoError),
    ("mail.alpha.test.", RecordType::MX, ResponseCode::NoError),
    ("nodata.alpha.test.", RecordType::A, ResponseCode::NoError),
    ("nope.alpha.test.", RecordType::A, ResponseCode::NXDomain),
    ("nope.test.", RecordType::A, ResponseCode::NXDomain),
    ("x.y.z.alpha.test.", RecordType::A, ResponseCode::NoError),
    ("y.z.alpha.test.", RecordType::A, ResponseCode::NoError),
    ("chain.alpha.test.", RecordType::A, ResponseCode::NoError),
    (
        "dangling.alpha.test.",
        RecordType::A,
        ResponseCode::NXDomain,
    ),
    ("big.alpha.test.", RecordType::TXT, ResponseCode::NoError),
    ("many.alpha.test.", RecordType::A, ResponseCode::NoError),
    ("host.gamma.test.", RecordType::A, ResponseCode::NoError),
    ("host.beta.example.", RecordType::A, ResponseCode::NoError),
    ("www.half.example.", RecordType::A, ResponseCode::NoError),
    ("WwW.AlPhA.TeSt.", RecordType::A, ResponseCode::NoError),
];

#[test]
fn resolver_agrees_with_unbound_on_every_fixture_name() {
    with_hierarchy("dns_agrees_with_unbound", || {
        let mut r = resolver(ResolverConfig::default(), 1);
        for &(name, ty, want) in NAMES {
            let q = n(name);
            let ours = r.resolve(&q, ty);
            let (ub_rcode, ub_answers) = ask_unbound(&q, ty);
            assert_eq!(ours.rcode, want, "{name} {ty}: our rcode");
            assert_eq!(ub_rcode, want, "{name} {ty}: unbound's rcode");
            assert_eq!(
                texts(&ours.answers),
                texts(&ub_answers),
                "{name} {ty}: answers differ from unbound's"
            );
        }
        let st = r.ctx.stats;
        assert!(
            st.tcp_queries >= 1,
            "big.alpha.test must fall back to TCP: {st:?}"
        );
        assert!(st.truncated >= 1, "{st:?}");
        assert!(st.minimised_queries >= 1, "{st:?}");
        assert_eq!(
            st.dropped_wrong_question + st.dropped_wrong_id + st.dropped_wrong_source,
            0,
            "{st:?}"
        );
        // The CNAME chain crosses three zones and ends in four records.
        let chain = r.resolve(&n("chain.alpha.test."), RecordType::A);
        assert_eq!(chain.answers.len(), 4, "{:?}", chain.answers);
    });
}

#[test]
fn cached_query_makes_no_upstream_traffic_and_expired_ttl_requeries() {
    with_hierarchy("dns_cache_traffic", || {
        let mut r = resolver(ResolverConfig::default(), 2);
        let first = r.resolve(&n("short.alpha.test."), RecordType::A);
        assert_eq!(first.rcode, ResponseCode::NoError);
        assert!(!first.from_cache);
        let sent = r.transport.queries_sent();
        assert!(
            sent >= 3,
            "a cold resolution asks root, TLD and zone: {sent}"
        );

        // Cached: no query at all.
        for name in ["short.alpha.test.", "SHORT.alpha.test."] {
            let again = r.resolve(&n(name), RecordType::A);
            assert!(again.from_cache);
            assert_eq!(texts(&again.answers), texts(&first.answers));
        }
        // Negative answers are cached too.
        r.resolve(&n("nope.alpha.test."), RecordType::A);
        let sent = r.transport.queries_sent();
        assert_eq!(
            r.resolve(&n("nope.alpha.test."), RecordType::A).rcode,
            ResponseCode::NXDomain
        );
        assert_eq!(
            r.transport.queries_sent(),
            sent,
            "a cached NXDOMAIN makes no traffic"
        );

        // The A RRset has TTL 2: three seconds later it is asked again, and
        // only of the zone's server (the delegations are still cached).
        r.time_offset += Duration::from_secs(3);
        let third = r.resolve(&n("short.alpha.test."), RecordType::A);
        assert_eq!(third.rcode, ResponseCode::NoError);
        assert!(!third.from_cache);
        assert_eq!(r.transport.queries_sent(), sent + 1);
    });
}

#[test]
fn never_answering_server_is_marked_down_and_skipped() {
    with_hierarchy("dns_dead_server", || {
        let config = ResolverConfig {
            initial_timeout: Duration::from_millis(200),
            ..ResolverConfig::default()
        };
        let mut r = resolver(config, 3);
        let dead = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
        // A zone whose other server answers still resolves.
        assert_eq!(
            r.resolve(&n("www.half.example."), RecordType::A).rcode,
            ResponseCode::NoError
        );
        // The dead zone fails after its only server times out, until the
        // failure detector marks that server down.
        for _ in 0..3 {
            if r.ctx.servers.is_down(dead, r.now()) {
                break;
            }
            let a = r.resolve(&n("www.dead.test."), RecordType::A);
            assert_eq!(a.rcode, ResponseCode::ServFail);
        }
        assert!(
            r.ctx.servers.is_down(dead, r.now()),
            "{:?}",
            r.ctx.servers.get(dead)
        );
        // Down: the next resolution sends nothing to it and fails fast.
        let before = r.ctx.servers.get(dead).unwrap().queries;
        let t0 = std::time::Instant::now();
        assert_eq!(
            r.resolve(&n("other.dead.test."), RecordType::A).rcode,
            ResponseCode::ServFail
        );
        assert_eq!(r.ctx.servers.get(dead).unwrap().queries, before);
        assert!(
            t0.elapsed() < Duration::from_millis(150),
            "{:?}",
            t0.elapsed()
        );
        // half.example. keeps resolving through its live server.
        assert_eq!(
            r.resolve(&n("ns2.half.example."), RecordType::A).rcode,
            ResponseCode::NoError
        );
        assert!(r.ctx.stats.timeouts >= 3);
    });
}
