//! HTTP and HTTPS through the TUN device, each test in its own network
//! namespace: the kernel's curl and openssl against the stack's servers
//! (started with the same library call as `tunstack up`), and the stack as
//! the client (`tunstack curl`) against python's http.server and
//! `openssl s_server` on the kernel side. Every body is checked by hash.

mod common;

use common::{with_stack, STACK};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tunstack::http::PatternReader;
use tunstack::services::{start_http, HttpOptions, HttpServices};
use tunstack::tls::CertStore;
use tunstack::up::Up;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tunstack-e2e-http-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

fn pattern(n: u64) -> Vec<u8> {
    let mut v = Vec::new();
    PatternReader::new(n).read_to_end(&mut v).unwrap();
    v
}

/// Start HTTP and HTTPS on the stack with a fresh state directory.
fn web(up: &Up, dir: &Path, client_ca: Option<PathBuf>) -> HttpServices {
    start_http(
        &up.net,
        &HttpOptions {
            state_dir: dir.join("state"),
            client_ca,
            ..HttpOptions::default()
        },
    )
    .expect("start HTTP and HTTPS on the stack")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The kernel's curl, never through a proxy, failing on HTTP errors.
fn curl(args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail", "--noproxy", "*", "--max-time", "60"])
        .args(args)
        .env_remove("CURL_CA_BUNDLE");
    c
}

fn fetch_checked(args: &[&str], url: &str, n: u64, out: &Path) -> Duration {
    let t = Instant::now();
    let o = curl(args)
        .args(["-o", out.to_str().unwrap(), url])
        .output()
        .expect("run curl");
    let took = t.elapsed();
    assert!(o.status.success(), "curl {url}: {}", text(&o));
    let got = std::fs::read(out).unwrap();
    assert_eq!(got.len() as u64, n, "{url}: length");
    assert_eq!(sha256(&got), sha256(&pattern(n)), "{url}: sha256");
    took
}

#[test]
fn kernel_curl_fetches_1k_and_10m_over_http_and_https_checked_by_hash() {
    with_stack("http_sizes", |up| {
        let dir = tmpdir("sizes");
        let w = web(up, &dir, None);
        let ca = w.ca_path.clone().unwrap();
        assert_eq!(ca, dir.join("state/ca.pem"));
        let ca = ca.to_str().unwrap().to_string();
        let out = dir.join("body");
        for n in [1024u64, 10 * 1024 * 1024] {
            let t = fetch_checked(&[], &format!("http://{STACK}/bytes/{n}"), n, &out);
            eprintln!("http  {n} bytes in {:.3} s", t.as_secs_f64());
            let t = fetch_checked(
                &["--cacert", &ca],
                &format!("https://{STACK}/bytes/{n}"),
                n,
                &out,
            );
            eprintln!("https {n} bytes in {:.3} s", t.as_secs_f64());
        }
        // Without the CA the kernel's curl refuses the certificate.
        let o = curl(&["--cacert", "/dev/null"])
            .arg(format!("https://{STACK}/bytes/1"))
            .output()
            .unwrap();
        assert!(!o.status.success(), "{}", text(&o));
        // The status page shows the stack's counters and connections.
        let o = curl(&[])
            .arg(format!("http://{STACK}/status"))
            .output()
            .unwrap();
        let page = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", text(&o));
        assert!(page.contains("tcp_conns_opened"), "{page}");
        assert!(page.contains("rx_packets"), "{page}");
        assert!(page.contains("TCP connections"), "{page}");
        assert!(
            page.contains("cwnd:"),
            "our own connection is listed: {page}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn fifty_parallel_https_requests_from_the_kernel_all_arrive_intact() {
    with_stack("http_par", |up| {
        let dir = tmpdir("parallel");
        let w = web(up, &dir, None);
        let ca = w.ca_path.clone().unwrap();
        let children: Vec<(u64, PathBuf, Child)> = (0..50u64)
            .map(|i| {
                let n = 1000 + i * 7919;
                let out = dir.join(format!("body{i}"));
                let child = curl(&["--cacert", ca.to_str().unwrap()])
                    .args(["-o", out.to_str().unwrap()])
                    .arg(format!("https://{STACK}/bytes/{n}"))
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn curl");
                (n, out, child)
            })
            .collect();
        for (n, out, child) in children {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "request for {n} bytes: {}", text(&o));
            let got = std::fs::read(&out).unwrap();
            assert_eq!(sha256(&got), sha256(&pattern(n)), "{n} bytes");
        }
        assert!(
            w.https_stats
                .requests
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 50
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

fn s_client(version: &str, ca: &Path) -> String {
    let mut c = Command::new("openssl")
        .args(["s_client", "-connect", &format!("{STACK}:443"), version])
        .args([
            "-CAfile",
            ca.to_str().unwrap(),
            "-alpn",
            "http/1.1",
            "-ign_eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    c.stdin
        .take()
        .unwrap()
        .write_all(b"GET /bytes/5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let o = c.wait_with_output().unwrap();
    text(&o)
}

#[test]
fn openssl_s_client_completes_tls13_and_tls12_handshakes() {
    with_stack("http_ossl", |up| {
        let dir = tmpdir("openssl");
        let w = web(up, &dir, None);
        let ca = w.ca_path.clone().unwrap();
        let t13 = s_client("-tls1_3", &ca);
        assert!(t13.contains("TLSv1.3"), "{t13}");
        assert!(t13.contains("Verify return code: 0 (ok)"), "{t13}");
        assert!(t13.contains("ALPN protocol: http/1.1"), "{t13}");
        assert!(
            t13.contains("\r\n\r\nabcde"),
            "the request was answered: {t13}"
        );
        let t12 = s_client("-tls1_2", &ca);
        assert!(t12.contains("TLSv1.2"), "{t12}");
        assert!(t12.contains("Verify return code: 0 (ok)"), "{t12}");
        assert!(
            t12.contains("\r\n\r\nabcde"),
            "the request was answered: {t12}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn mtls_server_refuses_no_cert_and_a_foreign_ca_and_accepts_its_own() {
    with_stack("http_mtls", |up| {
        let dir = tmpdir("mtls");
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let clients = CertStore::load_or_create(&dir.join("clients"), ip, "clients.test").unwrap();
        let foreign = CertStore::load_or_create(&dir.join("foreign"), ip, "foreign.test").unwrap();
        let w = web(up, &dir, Some(clients.ca_path()));
        let ca = w.ca_path.clone().unwrap();
        let good = clients.issue_client_cert("good client").unwrap();
        good.write(&dir.join("good.pem"), &dir.join("good-key.pem"))
            .unwrap();
        let bad = foreign.issue_client_cert("foreign client").unwrap();
        bad.write(&dir.join("bad.pem"), &dir.join("bad-key.pem"))
            .unwrap();
        let url = format!("https://{STACK}/bytes/100");
        let base = ["--cacert", ca.to_str().unwrap()];
        let none = curl(&base).arg(&url).output().unwrap();
        assert!(!none.status.success(), "no client cert: {}", text(&none));
        let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
        let foreign_o = curl(&base)
            .args(["--cert", &p("bad.pem"), "--key", &p("bad-key.pem")])
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            !foreign_o.status.success(),
            "foreign CA: {}",
            text(&foreign_o)
        );
        let ok = curl(&base)
            .args(["--cert", &p("good.pem"), "--key", &p("good-key.pem")])
            .arg(&url)
            .output()
            .unwrap();
        assert!(ok.status.success(), "right client cert: {}", text(&ok));
        assert_eq!(sha256(&ok.stdout), sha256(&pattern(100)));
        assert!(
            w.https_stats
                .tls_handshake_failures
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 2
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Send raw bytes to the stack's port 80; return what came back until close.
fn raw(req: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect_timeout(
        &SocketAddr::from((STACK, 80)),
        Duration::from_secs(5),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer and close before it has read everything.
    let _ = s.write_all(req);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn malformed_and_oversized_requests_get_4xx_and_the_server_keeps_serving() {
    with_stack("http_bad", |up| {
        let dir = tmpdir("bad");
        let _w = web(up, &dir, None);
        let big_header = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(32 * 1024)
        );
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            (
                "garbage request line",
                b"\x01\x02 nonsense\r\n\r\n".to_vec(),
                400,
            ),
            (
                "bad Content-Length",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
                400,
            ),
            ("oversized header", big_header.into_bytes(), 431),
            (
                "oversized body",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n".to_vec(),
                413,
            ),
            (
                "bad /bytes count",
                b"GET /bytes/lots HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
                400,
            ),
            (
                "path traversal",
                b"GET /../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
                404,
            ),
        ];
        for (what, req, want) in cases {
            let out = raw(&req);
            assert_eq!(status_of(&out), want, "{what}: {out}");
            // Every time, a good request on a new connection still works.
            let o = curl(&[])
                .arg(format!("http://{STACK}/bytes/3000"))
                .output()
                .unwrap();
            assert!(o.status.success(), "after {what}: {}", text(&o));
            assert_eq!(sha256(&o.stdout), sha256(&pattern(3000)));
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Run `tunstack curl` (its own stack on tunstack1, 198.19.1.2).
fn tunstack_curl(args: &[&str]) -> Output {
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_tunstack"))
        .arg("curl")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tunstack curl");
    eprintln!(
        "tunstack curl {}: {} in {:.3} s",
        args.join(" "),
        o.status,
        t.elapsed().as_secs_f64()
    );
    o
}

/// Wait until something listens on the kernel's `port` (any address).
fn wait_listening(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on port {port}");
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_stack_as_client_fetches_from_python_http_server_and_openssl_s_server() {
    with_stack("http_cli", |_up| {
        let dir = tmpdir("client");
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        let mut data = vec![0u8; 3 * 1024 * 1024 + 17];
        tunstack::rng::Rng::new(7).fill(&mut data);
        std::fs::write(www.join("blob"), &data).unwrap();
        let want = sha256(&data);

        // Plain HTTP from python's http.server on the kernel side.
        let _py = Killed(
            Command::new("python3")
                .args(["-m", "http.server", "8000", "--bind", "0.0.0.0"])
                .current_dir(&www)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run python3 -m http.server"),
        );
        wait_listening(8000);
        let o = tunstack_curl(&["http://198.19.1.1:8000/blob"]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(sha256(&o.stdout), want, "http body");
        // The client's device is gone once it has exited.
        assert!(!tunstack::up::device_exists("tunstack1"));

        // HTTPS from openssl s_server -WWW, certificate from a test CA.
        let ca = CertStore::load_or_create(
            &dir.join("ca"),
            IpAddr::V4(Ipv4Addr::new(198, 19, 1, 1)),
            "kernel.test",
        )
        .unwrap();
        let (cert, key) = (dir.join("srv.pem"), dir.join("srv-key.pem"));
        ca.issue(
            "kernel side",
            &[IpAddr::V4(Ipv4Addr::new(198, 19, 1, 1))],
            &["kernel.test"],
            true,
            false,
        )
        .unwrap()
        .write(&cert, &key)
        .unwrap();
        let _srv = Killed(
            Command::new("openssl")
                .args(["s_server", "-WWW", "-accept", "4433", "-quiet"])
                .args([
                    "-cert",
                    cert.to_str().unwrap(),
                    "-key",
                    key.to_str().unwrap(),
                ])
                .current_dir(&www)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run openssl s_server"),
        );
        wait_listening(4433);
        let out = dir.join("blob.out");
        let cacert = ca.ca_path();
        let o = tunstack_curl(&[
            "-v",
            "--cacert",
            cacert.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "https://198.19.1.1:4433/blob",
        ]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert_eq!(sha256(&std::fs::read(&out).unwrap()), want, "https body");
        assert!(t.contains("TLSv1."), "-v shows TLS details: {t}");
        assert!(t.contains("Through the stack: 198.19.1.2:"), "{t}");
        assert!(t.contains("100%"), "progress on stderr: {t}");

        // Without the CA the certificate is refused: one line, non-zero exit.
        let o = tunstack_curl(&["https://198.19.1.1:4433/blob"]);
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
        assert!(err.contains("tunstack: "), "{err}");

        // Nothing listens: refused, one line.
        let o = tunstack_curl(&["http://198.19.1.1:9/"]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("cannot connect"),
            "{}",
            text(&o)
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn tunstack_up_prints_its_ca_path_and_tunstack_curl_reaches_it() {
    if !tunstack::netns::require_root("up_https") {
        return;
    }
    let r = tunstack::netns::in_new_netns(|| {
        let dir = tmpdir("up");
        let state = dir.join("state");
        let log = dir.join("up.log");
        let _up = Killed(
            Command::new(env!("CARGO_BIN_EXE_tunstack"))
                .args(["up", "--state-dir", state.to_str().unwrap()])
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut banner = String::new();
        for _ in 0..100 {
            banner = std::fs::read_to_string(&log).unwrap_or_default();
            if banner.contains("Ctrl-C stops") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let ca = state.join("ca.pem");
        assert!(
            banner.contains(ca.to_str().unwrap()),
            "banner names the CA: {banner}"
        );
        // The kernel and a second, short-lived stack both reach it (the
        // second through the kernel's forwarding between the two devices).
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        let ca_s = ca.to_str().unwrap();
        let o = curl(&["--cacert", ca_s])
            .arg("https://198.19.0.2/bytes/2048")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(sha256(&o.stdout), sha256(&pattern(2048)));
        let o = tunstack_curl(&["--cacert", ca_s, "https://198.19.0.2/bytes/100000"]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(sha256(&o.stdout), sha256(&pattern(100_000)));
        let _ = std::fs::remove_dir_all(&dir);
    });
    r.expect("create a network namespace");
}
