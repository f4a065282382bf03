//! The HTTP server and client and TLS over the kernel's TCP on 127.0.0.1
//! (the same code runs over the stack's TcpStream). Each test starts its
//! own server on an ephemeral port; nothing leaves the loopback.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tunstack::http::client::{std_connect, Client};
use tunstack::http::server::{serve_std, Limits, Router, ServerOptions};
use tunstack::http::PatternReader;
use tunstack::tls::{CertStore, ClientTls, IssuedCert, Roots, ServerTls, TlsVersions};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn start(router: Router, opts: ServerOptions) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || serve_std(l, Arc::new(router), opts));
    port
}

fn start_default() -> u16 {
    start(Router::new(), ServerOptions::default())
}

fn client() -> Client<TcpStream> {
    Client::new(std_connect).unwrap()
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

/// Send raw bytes, then read everything until the server closes.
fn raw(port: u16, req: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req).unwrap();
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

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tunstack-http-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bytes_1k_and_10m_arrive_exactly_with_matching_hash() {
    let port = start_default();
    let mut c = client();
    for n in [1024u64, 10 * 1024 * 1024] {
        let mut last = 0;
        let mut body = Vec::new();
        let f = c
            .get_to(
                &format!("http://127.0.0.1:{port}/bytes/{n}"),
                &mut body,
                &mut |got, total| {
                    assert_eq!(total, Some(n));
                    last = got;
                },
            )
            .unwrap();
        assert_eq!(f.status, 200);
        assert_eq!(f.body_len, n);
        assert_eq!(last, n, "progress reached the total");
        assert_eq!(sha256(&body), sha256(&pattern(n)));
    }
}

#[test]
fn fifty_parallel_requests_all_succeed() {
    let port = start_default();
    let threads: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || {
                let n = 1000 + i * 37;
                let (f, body) = client()
                    .get(&format!("http://127.0.0.1:{port}/bytes/{n}"))
                    .unwrap();
                assert_eq!(f.status, 200);
                assert_eq!(body, pattern(n));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn keep_alive_connection_is_reused() {
    let port = start_default();
    let mut c = client();
    let (a, _) = c.get(&format!("http://127.0.0.1:{port}/bytes/10")).unwrap();
    let (b, body) = c.get(&format!("http://127.0.0.1:{port}/bytes/20")).unwrap();
    assert!(!a.reused);
    assert!(b.reused);
    assert_eq!(body, pattern(20));
    // Two pipelined requests on one raw socket get two answers.
    let out = raw(
        port,
        b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.ends_with("\r\n\r\nabcd"), "{out}");
}

#[test]
fn chunked_upload_is_echoed() {
    let port = start_default();
    let out = raw(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(status_of(&out), 200, "{out}");
    assert!(out.contains("Content-Length: 11\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nhello world"), "{out}");
    // And through the client with Content-Length.
    let mut body = Vec::new();
    let f = client()
        .request(
            "PUT",
            &format!("http://127.0.0.1:{port}/echo"),
            Some(b"data!"),
            &mut body,
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!((f.status, body.as_slice()), (200, &b"data!"[..]));
}

#[test]
fn malformed_request_gets_400_and_server_keeps_serving() {
    let port = start_default();
    let out = raw(port, b"GARBAGE\x01 / NOPE\r\n\r\n");
    assert_eq!(status_of(&out), 400, "{out}");
    let out = raw(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    assert_eq!(status_of(&out), 400, "{out}");
    let (f, _) = client().get(&format!("http://127.0.0.1:{port}/")).unwrap();
    assert_eq!(f.status, 200);
}

#[test]
fn oversized_headers_get_431() {
    let port = start_default();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(status_of(&raw(port, req.as_bytes())), 431);
}

#[test]
fn oversized_body_gets_413() {
    let opts = ServerOptions {
        limits: Limits {
            max_body: 1000,
            ..Limits::default()
        },
        ..ServerOptions::default()
    };
    let port = start(Router::new(), opts);
    let big = vec![b'x'; 5000];
    let mut req = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_vec();
    req.extend_from_slice(&big);
    assert_eq!(status_of(&raw(port, &req)), 413);
    // Chunked bodies are counted as they arrive.
    let mut req = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        req.extend_from_slice(b"12c\r\n");
        req.extend_from_slice(&[b'y'; 300]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(status_of(&raw(port, &req)), 413);
}

#[test]
fn post_without_length_gets_411_and_wrong_method_405() {
    let port = start_default();
    assert_eq!(
        status_of(&raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\n\r\n")),
        411
    );
    let out = raw(
        port,
        b"DELETE /bytes/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&out), 405);
    assert!(out.contains("Allow: GET, HEAD\r\n"), "{out}");
}

#[test]
fn head_has_length_but_no_body() {
    let port = start_default();
    let out = raw(
        port,
        b"HEAD /bytes/100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&out), 200);
    assert!(out.contains("Content-Length: 100\r\n"), "{out}");
    assert!(
        out.ends_with("\r\n\r\n"),
        "HEAD answer carried a body: {out}"
    );
    let mut sink = Vec::new();
    let f = client()
        .request(
            "HEAD",
            &format!("http://127.0.0.1:{port}/bytes/100"),
            None,
            &mut sink,
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!((f.status, f.body_len), (200, 0));
}

#[test]
fn static_files_served_and_path_traversal_refused() {
    let d = tmpdir("static");
    let root = d.join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/hello.txt"), "hi there").unwrap();
    std::fs::write(d.join("secret.txt"), "TOP SECRET").unwrap();
    std::os::unix::fs::symlink(d.join("secret.txt"), root.join("link.txt")).unwrap();
    let port = start(Router::new().static_dir(&root), ServerOptions::default());
    let (f, body) = client()
        .get(&format!("http://127.0.0.1:{port}/sub/hello.txt"))
        .unwrap();
    assert_eq!((f.status, body.as_slice()), (200, &b"hi there"[..]));
    assert_eq!(f.header("Content-Type"), Some("text/plain; charset=utf-8"));
    for p in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/%2E%2E/%2e%2e/secret.txt",
        "/link.txt",
    ] {
        let out = raw(
            port,
            format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(status_of(&out), 404, "{p}: {out}");
        assert!(!out.contains("TOP SECRET"), "{p}");
    }
}

#[test]
fn slow_request_head_gets_408() {
    let opts = ServerOptions {
        limits: Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..ServerOptions::default()
    };
    let port = start(Router::new(), opts);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert_eq!(status_of(&out), 408, "{out}");
}

#[test]
fn connections_beyond_cap_get_503() {
    let opts = ServerOptions {
        limits: Limits {
            max_connections: 2,
            ..Limits::default()
        },
        ..ServerOptions::default()
    };
    let port = start(Router::new(), opts);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let out = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&out), 503, "{out}");
    drop(held);
    // Once the held connections' threads have seen EOF, service resumes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = raw(
            port,
            b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if status_of(&out) == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still refused: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_page_shows_injected_counters() {
    let port = start(
        Router::new().status(|| "packets in 42\n".into()),
        ServerOptions::default(),
    );
    let (_, body) = client()
        .get(&format!("http://127.0.0.1:{port}/status"))
        .unwrap();
    assert_eq!(body, b"packets in 42\n");
}

// ---- TLS ----

fn store(name: &str) -> CertStore {
    CertStore::load_or_create(&tmpdir(name), LOOPBACK, "tunstack.local").unwrap()
}

fn start_tls(st: &CertStore, client_ca: bool) -> u16 {
    let mut o = ServerTls::from_store(st).unwrap();
    if client_ca {
        o.client_ca = Some(st.roots());
    }
    let opts = ServerOptions {
        tls: Some(o.build().unwrap()),
        ..ServerOptions::default()
    };
    start(Router::new(), opts)
}

fn tls_client(
    st: &CertStore,
    versions: TlsVersions,
    cert: Option<&IssuedCert>,
) -> Arc<rustls::ClientConfig> {
    let mut o = ClientTls::new(Roots::CaFile(st.ca_path()));
    o.versions = versions;
    o.client_cert = cert.map(|c| (c.chain().unwrap(), c.key().unwrap()));
    o.build().unwrap()
}

#[test]
fn https_tls13_and_tls12_with_alpn_and_resumption() {
    let st = store("https");
    let port = start_tls(&st, false);
    for (v, name) in [
        (TlsVersions::Tls13Only, "TLSv1.3"),
        (TlsVersions::Tls12Only, "TLSv1.2"),
    ] {
        let cfg = tls_client(&st, v, None);
        let mut lines = Vec::new();
        let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let mut c = Client::with_tls(std_connect, cfg.clone());
        let l2 = log.clone();
        c.set_verbose(move |l| l2.lock().unwrap().push(l.to_string()));
        let (f, body) = c
            .get(&format!("https://127.0.0.1:{port}/bytes/100000"))
            .unwrap();
        assert_eq!(body, pattern(100_000));
        let tls = f.tls.unwrap();
        assert_eq!(tls.version, name);
        assert_eq!(tls.alpn.as_deref(), Some("http/1.1"));
        assert!(!tls.resumed);
        lines.extend(log.lock().unwrap().iter().cloned());
        assert!(lines.iter().any(|l| l.contains(name)), "{lines:?}");
        assert!(
            lines.iter().any(|l| l.contains("CN=tunstack.local")),
            "{lines:?}"
        );
        // A new connection with the same config resumes the session.
        let (f2, _) = Client::with_tls(std_connect, cfg)
            .get(&format!("https://127.0.0.1:{port}/"))
            .unwrap();
        assert!(
            f2.tls.unwrap().resumed,
            "{name} second connection did not resume"
        );
    }
}

#[test]
fn https_refuses_server_not_signed_by_trusted_ca() {
    let st = store("https-untrusted");
    let port = start_tls(&st, false);
    let other = store("https-other-ca");
    let r = Client::with_tls(std_connect, tls_client(&other, TlsVersions::Both, None))
        .get(&format!("https://127.0.0.1:{port}/"));
    assert!(r.is_err());
}

#[test]
fn mtls_refuses_missing_and_foreign_certs_and_accepts_ca_signed() {
    let st = store("mtls");
    let port = start_tls(&st, true);
    let url = format!("https://127.0.0.1:{port}/status");
    assert!(
        Client::with_tls(std_connect, tls_client(&st, TlsVersions::Both, None))
            .get(&url)
            .is_err()
    );
    let foreign = store("mtls-foreign").issue_client_cert("intruder").unwrap();
    assert!(Client::with_tls(
        std_connect,
        tls_client(&st, TlsVersions::Both, Some(&foreign))
    )
    .get(&url)
    .is_err());
    let good = st.issue_client_cert("node-1").unwrap();
    let (f, _) = Client::with_tls(std_connect, tls_client(&st, TlsVersions::Both, Some(&good)))
        .get(&url)
        .unwrap();
    assert_eq!(f.status, 200);
}

#[test]
fn cert_store_persists_across_starts() {
    let d = tmpdir("persist");
    let a = CertStore::load_or_create(&d, LOOPBACK, "tunstack.local").unwrap();
    let b = CertStore::load_or_create(&d, LOOPBACK, "tunstack.local").unwrap();
    assert!(a.created_ca && !b.created_ca && !b.issued_server);
    assert_eq!(
        std::fs::read(a.ca_path()).unwrap(),
        std::fs::read(b.ca_path()).unwrap()
    );
    assert_eq!(tunstack::tls::load_certs(&b.ca_path()).unwrap().len(), 1);
    tunstack::tls::load_private_key(&b.server_key_path()).unwrap();
}

fn have(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn curl_with_cacert_fetches_from_https_server() {
    if !have("curl") {
        eprintln!("curl not installed; skipped");
        return;
    }
    let st = store("curl");
    let port = start_tls(&st, false);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(st.ca_path())
        .arg(format!("https://127.0.0.1:{port}/bytes/70000"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, pattern(70_000));
    // And an upload through curl (it may use Expect: 100-continue).
    let big = "z".repeat(2 << 20);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "@-",
            "--cacert",
        ])
        .arg(st.ca_path())
        .arg(format!("https://127.0.0.1:{port}/echo"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            ch.stdin.take().unwrap().write_all(big.as_bytes())?;
            ch.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), big.len());
}

#[test]
fn openssl_s_client_negotiates_tls12_and_tls13() {
    if !have("openssl") {
        eprintln!("openssl not installed; skipped");
        return;
    }
    let st = store("openssl");
    let port = start_tls(&st, false);
    for (flag, want) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-ign_eof",
                flag,
                "-alpn",
                "http/1.1",
                "-servername",
                "tunstack.local",
                "-CAfile",
            ])
            .arg(st.ca_path())
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(
                b"GET /bytes/5 HTTP/1.1\r\nHost: tunstack.local\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(want), "{flag}: {text}");
        assert!(
            text.contains("Verify return code: 0 (ok)"),
            "{flag}: {text}"
        );
        assert!(text.contains("ALPN protocol: http/1.1"), "{flag}: {text}");
        assert!(text.contains("abcde"), "{flag}: {text}");
    }
}

/// A one-shot server that answers the first request with `answer` and closes.
fn canned(answer: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.write_all(answer);
    });
    port
}

#[test]
fn client_decodes_chunked_and_close_delimited_responses() {
    let port = canned(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nT: x\r\n\r\n");
    let (f, body) = client().get(&format!("http://127.0.0.1:{port}/")).unwrap();
    assert_eq!((f.status, body.as_slice()), (200, &b"abcde"[..]));
    let port = canned(b"HTTP/1.0 200 OK\r\n\r\nuntil the end");
    let (f, body) = client().get(&format!("http://127.0.0.1:{port}/")).unwrap();
    assert_eq!(
        (f.minor_version, body.as_slice()),
        (0, &b"until the end"[..])
    );
}

#[test]
fn client_reports_truncated_body_and_skips_100_continue() {
    let port = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
    let e = client()
        .get(&format!("http://127.0.0.1:{port}/"))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    let port = canned(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n");
    let (f, _) = client().get(&format!("http://127.0.0.1:{port}/")).unwrap();
    assert_eq!(
        (f.status, f.header("Location")),
        (302, Some("/x")),
        "redirects are not followed"
    );
}

#[test]
fn https_by_dns_name_through_a_custom_connect_function() {
    let st = store("dns-name");
    let port = start_tls(&st, false);
    // The connect function decides where names go: here every host is 127.0.0.1.
    let mut c = Client::with_tls(
        |_host: &str, port| std_connect("127.0.0.1", port),
        tls_client(&st, TlsVersions::Both, None),
    );
    let (f, body) = c
        .get(&format!("https://tunstack.local:{port}/bytes/7"))
        .unwrap();
    assert_eq!((f.status, body), (200, pattern(7)));
    let sans = f.tls.unwrap().peer_sans;
    assert!(sans.contains(&"DNS:tunstack.local".to_string()), "{sans:?}");
    assert!(sans.contains(&"IP:127.0.0.1".to_string()), "{sans:?}");
    // A name the certificate does not carry is refused.
    let mut c = Client::with_tls(
        |_host: &str, port| std_connect("127.0.0.1", port),
        tls_client(&st, TlsVersions::Both, None),
    );
    assert!(c.get(&format!("https://other.local:{port}/")).is_err());
    if have("curl") {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--resolve"])
            .arg(format!("tunstack.local:{port}:127.0.0.1"))
            .arg("--cacert")
            .arg(st.ca_path())
            .arg(format!("https://tunstack.local:{port}/bytes/9"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, pattern(9));
    }
}

#[test]
fn spawned_server_stops_on_request() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let h = tunstack::http::server::spawn_std(l, Arc::new(Router::new()), ServerOptions::default())
        .unwrap();
    let url = format!("http://{}/status", h.addr());
    assert_eq!(client().get(&url).unwrap().0.status, 200);
    let addr = h.addr();
    h.stop().unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener still open after stop"
    );
}
