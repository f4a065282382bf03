//! Forged answers against the resolver on the stack, in a network namespace
//! this test creates.
//!
//! The private hierarchy (NSD, `dns-hierarchy.sh --base 198.18.54 --proxied
//! "3 5"`) runs with the `test.` server (198.18.54.3) and the `alpha.test.`
//! server (198.18.54.5) moved to port 5300; a forging proxy of this test
//! (kernel UDP sockets) sits on their port 53. For every query it relays to
//! NSD it first races the real answer with forgeries, then sends the real
//! one. The resolver runs on the stack (`StackTransport` over a TUN device).
//!
//! * `forged_answers_are_ignored_and_the_real_answer_used`: per query, a
//!   forgery from an address not asked (198.18.54.66), one from the server's
//!   address but port 5353, one with the wrong ID, one whose question has the
//!   wrong 0x20 case; and the real answer carries out-of-bailiwick records
//!   (a forged `test.` NS set and addresses outside the zone). Each kind is
//!   counted exactly; the answers are the zone's.
//! * `kaminsky_race_does_not_poison_the_cache`: many questions for random
//!   names `<rand>.alpha.test.`, each raced by a burst of blind forgeries
//!   (random IDs) carrying a forged NS set for `alpha.test.` and `test.`
//!   with glue pointing at the attacker; the real answers also carry forged
//!   parent-zone NS/A records. Afterwards the cache holds the real
//!   delegations, `www.alpha.test.` resolves to its real addresses, and the
//!   attacker's nameserver has never been asked anything.
//!
//! Nothing leaves the namespace.

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::rdata::{A, NS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tunstack::dns::cache::Lookup;
use tunstack::dns::driver::SharedResolver;
use tunstack::dns::hints::RootHints;
use tunstack::dns::resolver::{ResolverConfig, ResolverStats};
use tunstack::dns::transport::StackTransport;
use tunstack::netns;
use tunstack::rng::Rng;
use tunstack::up::{self, UpOptions};

const BASE: &str = "198.18.54";
/// The attacker: forgeries "from another server", and the nameserver the
/// forged delegations point at (it counts what it is asked).
const ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 18, 54, 66);
/// Address tags whose NSD the proxy fronts.
const PROXIED: [u8; 2] = [3, 5];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn addr(tag: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 54, tag)
}

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

struct Hierarchy {
    run: PathBuf,
}

impl Hierarchy {
    fn start(tag: &str) -> Hierarchy {
        let run =
            std::env::temp_dir().join(format!("tunstack-dnsspoof-{tag}-{}", std::process::id()));
        let out = Command::new(root().join("scripts/dns-hierarchy.sh"))
            .arg("start")
            .arg(&run)
            .args(["--base", BASE, "--no-unbound", "--proxied", "3 5"])
            .output()
            .expect("run scripts/dns-hierarchy.sh");
        assert!(
            out.status.success(),
            "dns-hierarchy.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let attacker = format!("{ATTACKER}/32");
        netns::run("ip", &["addr", "add", &attacker, "dev", "lo"]).expect("attacker address");
        Hierarchy { run }
    }

    fn hints(&self) -> RootHints {
        RootHints::from_file(&self.run.join("fix/root.hints")).expect("hints")
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

use tunstack::netns::test_in_new_netns as in_netns;

/// What the proxy does to each query it relays.
const PASS: u8 = 0;
/// One forgery of each kind, then the real answer with out-of-bailiwick extras.
const FORGE: u8 = 1;
/// A burst of blind forgeries (random IDs), then the real answer with forged
/// parent-zone records.
const BLIND: u8 = 2;

/// Blind forgeries per query in [`BLIND`] mode.
const BURST: u64 = 40;

#[derive(Default)]
struct Sent {
    relayed: AtomicU64,
    other_addr: AtomicU64,
    other_port: AtomicU64,
    wrong_id: AtomicU64,
    wrong_case: AtomicU64,
    /// Records appended to real answers that lie outside the asked zone.
    out_of_bailiwick: AtomicU64,
    blind: AtomicU64,
}

struct Proxy {
    mode: Arc<AtomicU8>,
    sent: Arc<Sent>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Queries that reached the attacker's nameserver.
    attacker_asked: Arc<AtomicU64>,
}

impl Proxy {
    fn start() -> Proxy {
        let mode = Arc::new(AtomicU8::new(PASS));
        let sent = Arc::new(Sent::default());
        let stop = Arc::new(AtomicBool::new(false));
        let attacker_asked = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for tag in PROXIED {
            let (mode, sent, stop) = (mode.clone(), sent.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                relay(tag, &mode, &sent, &stop);
            }));
        }
        let (stop2, asked) = (stop.clone(), attacker_asked.clone());
        let ns = UdpSocket::bind((ATTACKER, 53)).expect("bind the attacker's nameserver");
        ns.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                if ns.recv_from(&mut buf).is_ok() {
                    asked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        Proxy {
            mode,
            sent,
            stop,
            threads,
            attacker_asked,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Flip the case of every ASCII letter of `name`.
fn flip_case(name: &Name) -> Name {
    let s: String = name
        .to_ascii()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    n(&s)
}

fn a(name: &str, ip: Ipv4Addr) -> Record {
    Record::from_rdata(n(name), 3600, RData::A(A(ip)))
}

fn ns(zone: &str, host: &str) -> Record {
    Record::from_rdata(n(zone), 3600, RData::NS(NS(n(host))))
}

/// A forged answer to `q`: the asked name at the attacker's address, and
/// a delegation of alpha.test. and test. to the attacker's nameserver.
fn forgery(q: &Message, id: u16, qname: Name) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Response)
        .set_authoritative(true);
    let mut question = q.queries()[0].clone();
    question.set_name(qname.clone());
    m.add_query(question);
    m.add_answer(Record::from_rdata(qname, 3600, RData::A(A(ATTACKER))));
    m.add_name_server(ns("alpha.test.", "ns.evil.alpha.test."));
    m.add_name_server(ns("test.", "ns.evil.alpha.test."));
    m.add_additional(a("ns.evil.alpha.test.", ATTACKER));
    m.to_vec().unwrap()
}

/// Relay queries on 198.18.54.TAG:53 to NSD on :5300, racing each real
/// answer with forgeries as `mode` says.
fn relay(tag: u8, mode: &AtomicU8, sent: &Sent, stop: &AtomicBool) {
    let front = UdpSocket::bind((addr(tag), 53)).expect("bind the proxy");
    front
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let back = UdpSocket::bind((addr(tag), 0)).unwrap();
    back.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let other_addr = UdpSocket::bind((ATTACKER, 1053 + tag as u16)).unwrap();
    let other_port = UdpSocket::bind((addr(tag), 5353)).unwrap();
    let mut rng = Rng::from_os();
    let mut buf = vec![0u8; 65535];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, client)) = front.recv_from(&mut buf) else {
            continue;
        };
        let query = buf[..len].to_vec();
        let Ok(q) = Message::from_vec(&query) else {
            continue;
        };
        if q.queries().len() != 1 {
            continue;
        }
        back.send_to(&query, (addr(tag), 5300)).unwrap();
        let Ok((rlen, _)) = back.recv_from(&mut buf) else {
            continue;
        };
        let mut real = Message::from_vec(&buf[..rlen]).expect("NSD's answer parses");
        let qname = q.queries()[0].name().clone();
        match mode.load(Ordering::Relaxed) {
            FORGE => {
                let fake = forgery(&q, q.id(), qname.clone());
                other_addr.send_to(&fake, client).unwrap();
                sent.other_addr.fetch_add(1, Ordering::Relaxed);
                other_port.send_to(&fake, client).unwrap();
                sent.other_port.fetch_add(1, Ordering::Relaxed);
                let wrong_id = forgery(&q, q.id() ^ 0x5a5a, qname.clone());
                front.send_to(&wrong_id, client).unwrap();
                sent.wrong_id.fetch_add(1, Ordering::Relaxed);
                let wrong_case = forgery(&q, q.id(), flip_case(&qname));
                front.send_to(&wrong_case, client).unwrap();
                sent.wrong_case.fetch_add(1, Ordering::Relaxed);
                // The real answer, with records the server has no authority for.
                sent.out_of_bailiwick
                    .fetch_add(poison(&mut real, tag, &qname), Ordering::Relaxed);
            }
            BLIND => {
                for _ in 0..BURST {
                    let mut id = rng.next_u32() as u16;
                    if id == q.id() {
                        id ^= 1;
                    }
                    front
                        .send_to(&forgery(&q, id, qname.to_lowercase()), client)
                        .unwrap();
                    sent.blind.fetch_add(1, Ordering::Relaxed);
                }
                // On-path forgery in the real answer: the parent zone's
                // delegation, outside the bailiwick of the zone asked.
                sent.out_of_bailiwick
                    .fetch_add(poison(&mut real, tag, &qname), Ordering::Relaxed);
            }
            _ => {}
        }
        front.send_to(&real.to_vec().unwrap(), client).unwrap();
        sent.relayed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Add to `real` (the answer of server `tag` for `qname`) an address, an
/// NS set and glue that lie outside the zone asked: for alpha.test. the
/// parent `test.`; for `test.` and the .example zones, the other TLD.
/// Returns how many records were added.
fn poison(real: &mut Message, tag: u8, qname: &Name) -> u64 {
    let under = |z: &str| n(z).zone_of(&qname.to_lowercase());
    let (answer, parent, glue) = if tag == 5 && under("alpha.test.") {
        ("host.beta.example.", "test.", "ns1.nic.test.")
    } else if under("test.") {
        ("host.beta.example.", "example.", "ns1.nic.example.")
    } else {
        ("www.alpha.test.", "test.", "ns1.nic.test.")
    };
    real.add_answer(a(answer, ATTACKER));
    real.add_name_server(ns(parent, "ns.evil.invalid."));
    real.add_additional(a(glue, ATTACKER));
    3
}

fn stats(r: &SharedResolver) -> ResolverStats {
    r.ctx.lock().unwrap().stats
}

fn answer_ips(r: &SharedResolver, t: &mut StackTransport, name: &str) -> Vec<String> {
    let a = r.resolve(t, &n(name), RecordType::A);
    let mut v: Vec<String> = a
        .answers
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .map(|r| r.data().to_string())
        .collect();
    v.sort();
    v
}

fn cached_ns(r: &SharedResolver, zone: &str) -> Vec<String> {
    let now = tunstack::time::Clock::new().now();
    let mut ctx = r.ctx.lock().unwrap();
    match ctx.cache.peek(&n(zone), RecordType::NS, DNSClass::IN, now) {
        Lookup::Hit(rs) => rs.iter().map(|r| r.data().to_string()).collect(),
        other => panic!("{zone} NS not cached: {other:?}"),
    }
}

#[test]
fn forged_answers_are_ignored_and_the_real_answer_used() {
    in_netns(
        "forged_answers_are_ignored_and_the_real_answer_used",
        || {
            let h = Hierarchy::start("forge");
            let proxy = Proxy::start();
            let up = up::bring_up(&UpOptions {
                tun: "tsdnsspoof0".into(),
                ..UpOptions::default()
            })
            .expect("bring the stack up");
            let resolver =
                SharedResolver::new(h.hints(), ResolverConfig::default(), Rng::from_os());
            let mut t = StackTransport::new(&up.net);
            proxy.mode.store(FORGE, Ordering::Relaxed);
            assert_eq!(
                answer_ips(&resolver, &mut t, "www.alpha.test."),
                ["192.0.2.1", "192.0.2.2"]
            );
            assert_eq!(
                answer_ips(&resolver, &mut t, "x.y.z.alpha.test."),
                ["192.0.2.7"]
            );
            assert_eq!(
                answer_ips(&resolver, &mut t, "chain.alpha.test."),
                ["192.0.2.40"]
            );
            proxy.mode.store(PASS, Ordering::Relaxed);
            // The out-of-bailiwick address was not cached: asked afresh, the
            // real one comes back.
            assert_eq!(
                answer_ips(&resolver, &mut t, "host.beta.example."),
                ["192.0.2.20"]
            );
            let s = stats(&resolver);
            let sent = &proxy.sent;
            let forged = sent.other_addr.load(Ordering::Relaxed);
            eprintln!(
                "proxy relayed {} queries; resolver {s:?}",
                sent.relayed.load(Ordering::Relaxed)
            );
            assert!(forged >= 5, "only {forged} queries were raced");
            assert_eq!(s.dropped_wrong_source, forged, "from an address not asked");
            assert_eq!(
                s.dropped_wrong_port,
                sent.other_port.load(Ordering::Relaxed),
                "from port 5353"
            );
            assert_eq!(
                s.dropped_wrong_id,
                sent.wrong_id.load(Ordering::Relaxed),
                "wrong ID"
            );
            assert_eq!(
                s.dropped_wrong_case,
                sent.wrong_case.load(Ordering::Relaxed),
                "wrong 0x20 case"
            );
            assert_eq!(s.dropped_wrong_question, 0);
            assert!(
                s.out_of_bailiwick_discarded >= sent.out_of_bailiwick.load(Ordering::Relaxed),
                "out-of-bailiwick records discarded: {} of {}",
                s.out_of_bailiwick_discarded,
                sent.out_of_bailiwick.load(Ordering::Relaxed)
            );
            assert_eq!(cached_ns(&resolver, "alpha.test."), ["ns1.alpha.test."]);
            assert_eq!(cached_ns(&resolver, "example."), ["ns1.nic.example."]);
            assert_eq!(cached_ns(&resolver, "test."), ["ns1.nic.test."]);
            assert_eq!(
                answer_ips(&resolver, &mut t, "ns1.nic.test."),
                [addr(3).to_string()]
            );
            assert_eq!(proxy.attacker_asked.load(Ordering::Relaxed), 0);
        },
    );
}

#[test]
fn kaminsky_race_does_not_poison_the_cache() {
    in_netns("kaminsky_race_does_not_poison_the_cache", || {
        let h = Hierarchy::start("kaminsky");
        let proxy = Proxy::start();
        let up = up::bring_up(&UpOptions {
            tun: "tsdnsspoof1".into(),
            ..UpOptions::default()
        })
        .expect("bring the stack up");
        let resolver = SharedResolver::new(h.hints(), ResolverConfig::default(), Rng::from_os());
        let mut t = StackTransport::new(&up.net);
        assert_eq!(
            answer_ips(&resolver, &mut t, "www.alpha.test."),
            ["192.0.2.1", "192.0.2.2"]
        );
        proxy.mode.store(BLIND, Ordering::Relaxed);
        let mut rng = Rng::from_os();
        const NAMES: usize = 40;
        for _ in 0..NAMES {
            let label: String = (0..12)
                .map(|_| (b'a' + rng.gen_range(0, 26) as u8) as char)
                .collect();
            let a = resolver.resolve(&mut t, &n(&format!("{label}.alpha.test.")), RecordType::A);
            assert_eq!(
                a.rcode,
                hickory_proto::op::ResponseCode::NXDomain,
                "{label}.alpha.test.: {a:?}"
            );
        }
        proxy.mode.store(PASS, Ordering::Relaxed);
        let s = stats(&resolver);
        let blind = proxy.sent.blind.load(Ordering::Relaxed);
        eprintln!("{blind} blind forgeries; resolver {s:?}");
        assert!(blind >= BURST * NAMES as u64, "{blind} forgeries sent");
        assert_eq!(
            s.dropped_wrong_id + s.dropped_wrong_case,
            blind,
            "every blind forgery is seen and dropped"
        );
        assert!(
            s.out_of_bailiwick_discarded >= proxy.sent.out_of_bailiwick.load(Ordering::Relaxed)
        );
        // The delegations in the cache are the real ones, and so is the answer.
        assert_eq!(cached_ns(&resolver, "alpha.test."), ["ns1.alpha.test."]);
        assert_eq!(cached_ns(&resolver, "test."), ["ns1.nic.test."]);
        let ns1 = answer_ips(&resolver, &mut t, "ns1.nic.test.");
        assert_eq!(ns1, [addr(3).to_string()]);
        assert_eq!(
            answer_ips(&resolver, &mut t, "www.alpha.test."),
            ["192.0.2.1", "192.0.2.2"]
        );
        // A name not yet asked goes to the real servers, not the attacker's.
        assert_eq!(
            answer_ips(&resolver, &mut t, "final.alpha.test."),
            ["192.0.2.40"]
        );
        assert_eq!(proxy.attacker_asked.load(Ordering::Relaxed), 0);
    });
}
