//! DNS through the stack on a TUN device, end to end, in a network namespace
//! this test creates: the private hierarchy of tests/dns_fixtures (NSD) and
//! Unbound run on 198.18.53.x (a dummy device; `dns-hierarchy.sh --base`),
//! because the kernel never routes from a TUN device to 127.0.0.0/8.
//!
//! * `tunstack dig` (the binary, its own stack on its own TUN device)
//!   resolves every fixture name iteratively and agrees with Unbound; with
//!   `@unbound` it asks Unbound through the stack; `+trace` shows the steps.
//! * The kernel's `dig` asks our DNS server (`dns::server::serve` on a stack,
//!   as `tunstack up --dns` runs it) and gets Unbound's answers; a repeated
//!   question is answered from the cache with no upstream query.
//!
//! Nothing leaves the namespace.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use tunstack::dns::driver::SharedResolver;
use tunstack::dns::hints::RootHints;
use tunstack::dns::resolver::ResolverConfig;
use tunstack::dns::server::{self, ServerStats};
use tunstack::rng::Rng;
use tunstack::up::{self, UpOptions};

const BASE: &str = "198.18.53";
const UNBOUND: &str = "198.18.53.53";

/// Questions covering the fixture: glue, out-of-bailiwick NS, CNAME chain
/// across zones, NXDOMAIN, NODATA, answers too big for UDP, a zone with one
/// dead nameserver.
const QUESTIONS: &[(&str, &str)] = &[
    ("www.alpha.test.", "A"),
    ("mail.alpha.test.", "MX"),
    ("nodata.alpha.test.", "A"),
    ("x.y.z.alpha.test.", "A"),
    ("chain.alpha.test.", "A"),
    ("dangling.alpha.test.", "A"),
    ("missing.alpha.test.", "A"),
    ("nowhere.test.", "A"),
    ("host.gamma.test.", "A"),
    ("host.beta.example.", "A"),
    ("www.half.example.", "A"),
    ("big.alpha.test.", "TXT"),
    ("many.alpha.test.", "A"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Hierarchy {
    run: PathBuf,
}

impl Hierarchy {
    fn start(tag: &str) -> Hierarchy {
        let run =
            std::env::temp_dir().join(format!("tunstack-e2edns-{tag}-{}", std::process::id()));
        let out = Command::new(root().join("scripts/dns-hierarchy.sh"))
            .arg("start")
            .arg(&run)
            .args(["--base", BASE])
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

    fn hints(&self) -> PathBuf {
        self.run.join("fix/root.hints")
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

/// Status and the answer section (name, type, rdata; TTLs dropped) of dig
/// output in BIND's layout, which ours follows.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    status: String,
    answers: BTreeSet<(String, String, String)>,
}

fn parse(out: &str) -> Parsed {
    let status = out
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no status line in:\n{out}"));
    let mut answers = BTreeSet::new();
    let mut in_answer = false;
    for l in out.lines() {
        if l.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
            continue;
        }
        if l.trim().is_empty() || l.starts_with(';') {
            in_answer = false;
            continue;
        }
        if in_answer {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 5, "short record line {l:?}");
            answers.insert((f[0].to_lowercase(), f[3].to_string(), f[4..].join(" ")));
        }
    }
    Parsed { status, answers }
}

fn kernel_dig(server: &str, name: &str, rtype: &str, extra: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{server}"))
        .args([name, rtype, "+time=5", "+tries=2"])
        .args(extra)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn our_dig(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tunstack"))
        .arg("dig")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tunstack dig");
    assert!(
        out.status.success(),
        "tunstack dig {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tunstack_dig_through_the_stack_agrees_with_unbound() {
    in_netns("tunstack_dig_through_the_stack_agrees_with_unbound", || {
        let h = Hierarchy::start("dig");
        let hints = h.hints();
        let hints = hints.to_str().unwrap();
        for (name, rtype) in QUESTIONS {
            let ours = parse(&our_dig(&["--root-hints", hints, name, rtype]));
            let unbound = parse(&kernel_dig(UNBOUND, name, rtype, &[]));
            assert_eq!(ours, unbound, "{name} {rtype}: tunstack dig vs Unbound");
        }
        // @SERVER: ask Unbound through the stack, over UDP and over TCP.
        for extra in [&[][..], &["+tcp"][..]] {
            let mut args = vec!["@198.18.53.53", "chain.alpha.test", "A"];
            args.extend_from_slice(extra);
            let out = our_dig(&args);
            assert!(
                out.contains(";; SERVER: 198.18.53.53#53(198.18.53.53)"),
                "{out}"
            );
            assert_eq!(
                parse(&out),
                parse(&kernel_dig(UNBOUND, "chain.alpha.test.", "A", &[])),
                "@unbound {extra:?}"
            );
        }
        // +short prints the rdata only.
        let short = our_dig(&["--root-hints", hints, "www.alpha.test", "+short"]);
        let lines: BTreeSet<&str> = short.lines().collect();
        assert_eq!(lines, BTreeSet::from(["192.0.2.1", "192.0.2.2"]), "{short}");
        // +trace: the root NS set, then each step's records and where they came from.
        let trace = our_dig(&["--root-hints", hints, "www.alpha.test", "+trace"]);
        assert!(
            trace.contains(".\t\t\t3600000\tIN\tNS\troot-ns."),
            "{trace}"
        );
        assert!(
            trace.contains("from 198.18.53.2#53(198.18.53.2)"),
            "{trace}"
        );
        assert!(
            trace.contains("test.\t86400\tIN\tNS\tns1.nic.test."),
            "{trace}"
        );
        assert!(
            trace.contains("alpha.test.\t3600\tIN\tNS\tns1.alpha.test."),
            "{trace}"
        );
        assert!(
            trace.contains("from 198.18.53.3#53(198.18.53.3)"),
            "{trace}"
        );
        assert!(
            trace.contains("www.alpha.test.\t300\tIN\tA\t192.0.2.1"),
            "{trace}"
        );
        assert!(
            trace.contains("from 198.18.53.5#53(198.18.53.5)"),
            "{trace}"
        );
        // +trace with @SERVER: like BIND's dig, the trace starts from the
        // root hints; the server named is not asked.
        let at = our_dig(&[
            "@198.18.53.53",
            "--root-hints",
            hints,
            "www.alpha.test",
            "+trace",
        ]);
        assert!(at.contains("from 198.18.53.2#53(198.18.53.2)"), "{at}");
        assert!(at.contains("from 198.18.53.5#53(198.18.53.5)"), "{at}");
        assert!(!at.contains("198.18.53.53#53"), "{at}");
    });
}

#[test]
fn kernel_dig_against_the_stack_dns_server() {
    in_netns("kernel_dig_against_the_stack_dns_server", || {
        let h = Hierarchy::start("srv");
        let opts = UpOptions {
            tun: "tsdnssrv0".into(),
            ..UpOptions::default()
        };
        let up = up::bring_up(&opts).expect("bring the stack up");
        let hints = RootHints::from_file(&h.hints()).expect("hints");
        let stats = ServerStats::default();
        let stop = AtomicBool::new(false);
        let stack = up.options.addr.to_string();
        std::thread::scope(|s| {
            let (net, stats_r, stop_r) = (&up.net, &stats, &stop);
            s.spawn(move || {
                let resolver =
                    SharedResolver::new(hints, ResolverConfig::default(), Rng::from_os());
                server::serve(net, 53, &resolver, stats_r, stop_r).expect("serve");
            });
            let check = || -> Result<(), String> {
                for (name, rtype) in QUESTIONS {
                    let ours = kernel_dig(&stack, name, rtype, &[]);
                    let got = parse(&ours);
                    let want = parse(&kernel_dig(UNBOUND, name, rtype, &[]));
                    if got != want {
                        return Err(format!(
                            "{name} {rtype}: ours {got:?} vs Unbound {want:?}\n{ours}"
                        ));
                    }
                    if !ours.contains(" ra") {
                        return Err(format!("{name}: RA not set\n{ours}"));
                    }
                }
                // Over TCP too.
                let tcp = kernel_dig(&stack, "big.alpha.test.", "TXT", &["+tcp"]);
                if parse(&tcp) != parse(&kernel_dig(UNBOUND, "big.alpha.test.", "TXT", &[])) {
                    return Err(format!("TCP answer differs:\n{tcp}"));
                }
                // Without EDNS the big answer is truncated over UDP (dig +ignore shows TC).
                let tc = kernel_dig(&stack, "big.alpha.test.", "TXT", &["+ignore", "+noedns"]);
                if !tc.contains(" tc") {
                    return Err(format!("big answer over UDP not truncated:\n{tc}"));
                }
                // A cached answer makes no upstream traffic.
                let before = stats.upstream_queries.load(Ordering::Relaxed);
                let cached_before = stats.cache_answers.load(Ordering::Relaxed);
                let again = parse(&kernel_dig(&stack, "www.alpha.test.", "A", &[]));
                if again.status != "NOERROR" || again.answers.len() != 2 {
                    return Err(format!("cached answer wrong: {again:?}"));
                }
                let after = stats.upstream_queries.load(Ordering::Relaxed);
                if after != before {
                    return Err(format!(
                        "cached query sent {} upstream queries",
                        after - before
                    ));
                }
                if stats.cache_answers.load(Ordering::Relaxed) != cached_before + 1 {
                    return Err("cached query not counted as answered from cache".into());
                }
                // A new name does go upstream.
                kernel_dig(&stack, "host.gamma.test.", "A", &[]);
                kernel_dig(&stack, "final.alpha.test.", "TXT", &[]);
                if stats.upstream_queries.load(Ordering::Relaxed) == after {
                    return Err("a new question made no upstream query".into());
                }
                rd0_is_answered_from_the_cache_only(&stack, &stats)?;
                ttl_expiry_goes_upstream_again(&stack, &stats)?;
                Ok(())
            };
            let r = check();
            stop.store(true, Ordering::Relaxed);
            if let Err(e) = r {
                panic!("{e}");
            }
        });
    });
}

fn upstream(stats: &ServerStats) -> u64 {
    stats.upstream_queries.load(Ordering::Relaxed)
}

/// `dig +norecurse` (RD=0) through our server: a cached name gets its
/// answer, an uncached one a referral from the cache (NOERROR, the closest
/// cached delegation's NS set, as Unbound with allow_snoop); neither makes
/// upstream traffic.
fn rd0_is_answered_from_the_cache_only(stack: &str, stats: &ServerStats) -> Result<(), String> {
    let before = upstream(stats);
    let cached = kernel_dig(stack, "www.alpha.test.", "A", &["+norecurse"]);
    let p = parse(&cached);
    if p.status != "NOERROR" || p.answers.len() != 2 || cached.contains(" rd") {
        return Err(format!("RD=0 for a cached name:\n{cached}"));
    }
    let miss = kernel_dig(stack, "never.beta.example.", "A", &["+norecurse"]);
    let p = parse(&miss);
    if p.status != "NOERROR"
        || !p.answers.is_empty()
        || !miss.contains("beta.example.\t")
        || !miss.contains("\tNS\t")
    {
        return Err(format!("RD=0 for an uncached name: no referral\n{miss}"));
    }
    if upstream(stats) != before {
        return Err(format!(
            "RD=0 questions sent {} upstream queries",
            upstream(stats) - before
        ));
    }
    if stats.cache_only.load(Ordering::Relaxed) < 2 {
        return Err("RD=0 questions not counted".into());
    }
    Ok(())
}

/// short.alpha.test. has a 2 s TTL: asked again at once it comes from the
/// cache (no upstream query); after 2.5 s it is asked upstream again.
fn ttl_expiry_goes_upstream_again(stack: &str, stats: &ServerStats) -> Result<(), String> {
    let ask = || parse(&kernel_dig(stack, "short.alpha.test.", "A", &[]));
    let before = upstream(stats);
    let first = ask();
    let after_first = upstream(stats);
    if first.answers.len() != 1 || after_first == before {
        return Err(format!(
            "first short.alpha.test.: {first:?}, no upstream query?"
        ));
    }
    let again = ask();
    if upstream(stats) != after_first || again.answers != first.answers {
        return Err(format!(
            "cached short.alpha.test. went upstream ({} queries)",
            upstream(stats) - after_first
        ));
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let expired = ask();
    if upstream(stats) == after_first || expired.answers != first.answers {
        return Err(format!(
            "after the TTL expired: {expired:?}, {} upstream queries",
            upstream(stats) - after_first
        ));
    }
    Ok(())
}

/// `tunstack up --dns --root-hints FILE` (the binary) serves the kernel's
/// dig; Ctrl-C (SIGTERM) stops it and it reports its DNS counters.
#[test]
fn tunstack_up_dns_binary_serves_kernel_dig() {
    in_netns("tunstack_up_dns_binary_serves_kernel_dig", || {
        use std::io::{BufRead, BufReader};
        let h = Hierarchy::start("up");
        let state = h.run.join("state");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tunstack"))
            .args(["up", "--tun", "tsdnsup0", "--dns", "--root-hints"])
            .arg(h.hints())
            .arg("--state-dir")
            .arg(&state)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start tunstack up --dns");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = String::new();
        for l in lines.by_ref() {
            let l = l.unwrap_or_default();
            banner.push_str(&l);
            banner.push('\n');
            if l.starts_with("Ctrl-C") {
                break;
            }
        }
        let r = std::panic::catch_unwind(|| {
            assert!(
                banner.contains("dns        udp/tcp 198.19.0.2:53"),
                "{banner}"
            );
            for (name, rtype) in [("chain.alpha.test.", "A"), ("missing.alpha.test.", "A")] {
                let ours = kernel_dig("198.19.0.2", name, rtype, &[]);
                assert_eq!(
                    parse(&ours),
                    parse(&kernel_dig(UNBOUND, name, rtype, &[])),
                    "{name}: {ours}"
                );
            }
            let tcp = kernel_dig("198.19.0.2", "www.alpha.test.", "A", &["+tcp"]);
            assert_eq!(parse(&tcp).answers.len(), 2, "{tcp}");
        });
        // SAFETY: kill(2) on the pid of the child this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let _ = child.wait();
        if let Err(p) = r {
            std::panic::resume_unwind(p);
        }
        let rest = rest.join("\n");
        // At least the two UDP questions (dig may retry one) and exactly one over TCP.
        assert!(
            rest.contains("dns: ") && rest.contains(" UDP and 1 TCP queries"),
            "{rest}"
        );
    });
}
