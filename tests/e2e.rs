//! End-to-end tests: the kernel's own TCP/IP (std::net, ping) talking to the
//! stack across a TUN device, each test in its own network namespace.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{
    Ipv4Addr, Shutdown, SocketAddrV4, TcpListener as KernelListener, TcpStream as KernelStream,
};
use std::time::Duration;
use tunstack::netns;
use tunstack::runtime::{TcpListener, TcpStream};

const MB: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);

fn kernel_connect(port: u16) -> KernelStream {
    let s = KernelStream::connect_timeout(
        &SocketAddrV4::new(STACK, port).into(),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("kernel connect to {STACK}:{port}: {e}"));
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// The stack connects to a kernel listener on `port`, with the test timeouts.
fn stack_connect(up: &tunstack::up::Up, port: u16) -> TcpStream {
    let s = TcpStream::connect_timeout(
        &up.net,
        SocketAddrV4::new(KERNEL, port),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("stack connect to {KERNEL}:{port}: {e}"));
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

#[test]
fn kernel_pings_the_stack() {
    with_stack("kernel_pings_the_stack", |up| {
        let out = netns::run(
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", &STACK.to_string()],
        )
        .expect("ping the stack");
        assert!(out.contains("3 received"), "ping output: {out}");
        let stats = up.net.stats();
        assert!(stats.ip.icmp_echo_replies >= 3, "{stats:?}");
        // A large ping is fragmented by the kernel and reassembled by the stack.
        let out = netns::run(
            "ping",
            &["-c", "1", "-s", "4000", "-W", "2", &STACK.to_string()],
        )
        .expect("ping the stack with a fragmented 4000-byte payload");
        assert!(out.contains("1 received"), "ping output: {out}");
        assert!(up.net.stats().ip.rx_reassembled >= 1);
    });
}

#[test]
fn kernel_sends_100mb_to_the_stack_sink() {
    with_stack("kernel_sends_100mb_to_the_stack_sink", |up| {
        // A sink on the stack that hashes what it reads.
        let listener = TcpListener::bind(&up.net, 9000).unwrap();
        let sink = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            hash_reader(&mut s).unwrap()
        });
        let mut k = kernel_connect(9000);
        let before = up.net.runtime_stats();
        let sent = Stream::new(1, 100 * MB).write_all(&mut k).unwrap();
        k.shutdown(Shutdown::Write).unwrap();
        let (len, got) = sink.join().unwrap();
        assert_eq!(len, 100 * MB);
        assert_eq!(got, sent, "bytes differ");
        // The stack's ACKs went out through the writer thread, the second
        // of the stack's own threads.
        let mut names: Vec<String> = (up.net.thread_ids().iter())
            .map(|t| std::fs::read_to_string(format!("/proc/self/task/{t}/comm")).unwrap())
            .map(|c| c.trim_end().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["tunstack", "tunstack-tx"]);
        // The writer thread runs at SCHED_BATCH (its wake-ups do not
        // preempt the loop), the loop at the default policy.
        for &t in up.net.thread_ids() {
            let comm = std::fs::read_to_string(format!("/proc/self/task/{t}/comm")).unwrap();
            // SAFETY: sched_getscheduler reads a thread's policy.
            let policy = unsafe { libc::sched_getscheduler(t) };
            let want = if comm.trim_end() == "tunstack-tx" {
                libc::SCHED_BATCH
            } else {
                libc::SCHED_OTHER
            };
            assert_eq!(policy, want, "policy of {}", comm.trim_end());
        }
        let after = up.net.runtime_stats();
        let handed = after.writer_packets - before.writer_packets;
        let passes = after.loop_passes - before.loop_passes;
        eprintln!("100 MB in: {handed} packets written by the writer thread in {passes} loop passes; {after:?}");
        // About one ACK per busy pass or more (a pass reads up to 512
        // segments, so the count of ACKs follows the passes, not the
        // bytes: 723 for 239 passes on a slow host, where a bar of one per
        // 100 segments, 724, failed).
        assert!(
            handed >= passes / 2 && handed >= 100,
            "only {handed} ACKs handed to the writer thread in {passes} passes"
        );
        // The discard service takes the same volume without complaint.
        let mut k = kernel_connect(tunstack::services::DISCARD_PORT);
        Stream::new(2, 10 * MB).write_all(&mut k).unwrap();
        k.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            k.read_to_end(&mut rest).unwrap(),
            0,
            "discard sends nothing back"
        );
    });
}

#[test]
fn chargen_streams_the_rfc864_pattern_to_several_clients() {
    with_stack("chargen_streams", |up| {
        use tunstack::services::{chargen_pattern, CHARGEN_PORT};
        let block = chargen_pattern(95 * 74);
        // Three clients at once, served by the one in-loop chargen.
        let readers: Vec<_> = (0..3)
            .map(|i| {
                let mut k = kernel_connect(CHARGEN_PORT);
                let block = block.clone();
                std::thread::spawn(move || {
                    // The first client also half-closes: chargen keeps sending.
                    if i == 0 {
                        k.shutdown(Shutdown::Write).unwrap();
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut at = 0u64;
                    while at < 20 * MB {
                        let n = k.read(&mut buf).expect("read from chargen");
                        assert!(n > 0, "chargen closed after {at} bytes");
                        for (j, &b) in buf[..n].iter().enumerate() {
                            let want = block[((at + j as u64) % block.len() as u64) as usize];
                            assert_eq!(b, want, "byte {} differs", at + j as u64);
                        }
                        at += n as u64;
                    }
                    // Closing with unread data resets the connection.
                })
            })
            .collect();
        for r in readers {
            r.join().unwrap();
        }
        // Each reset connection is closed and freed by the service.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = up
                .net
                .tcp_connections()
                .iter()
                .filter(|(l, _, _)| l.port() == CHARGEN_PORT)
                .count();
            if left == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{left} chargen connections still open"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

#[test]
fn kernel_echoes_100mb_through_the_stack() {
    with_stack("kernel_echoes_100mb_through_the_stack", |_up| {
        let mut k = kernel_connect(tunstack::services::ECHO_PORT);
        let mut w = k.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let h = Stream::new(3, 100 * MB).write_all(&mut w).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
            h
        });
        let (len, got) = hash_reader(&mut k).unwrap();
        let sent = writer.join().unwrap();
        assert_eq!(len, 100 * MB);
        assert_eq!(got, sent, "echoed bytes differ");
    });
}

/// A device closed is gone at once, ring and all: the same name opens
/// again straight after (a ring holding the descriptor, as a registered
/// file, kept it attached until the ring's deferred teardown: EBUSY).
#[test]
fn a_tun_device_opens_again_at_once_after_it_is_closed() {
    let test = "a_tun_device_opens_again_at_once_after_it_is_closed";
    let name = tun_name("reop");
    netns::test_in_new_netns(test, move || {
        for round in 0..20 {
            let tun = tunstack::phy::tun::TunDevice::open(&name, 1500)
                .unwrap_or_else(|e| panic!("open {name} (round {round}): {e}"));
            if netns::in_ci() {
                assert!(tun.batched(), "no io_uring on the CI kernel");
            }
            drop(tun);
        }
    });
}

/// The device path without io_uring (one system call per packet, as where
/// the kernel has none): the echo's bytes come back whole.
#[test]
fn kernel_echoes_20mb_through_a_device_without_io_uring() {
    let test = "kernel_echoes_20mb_through_a_device_without_io_uring";
    let name = tun_name("nour");
    netns::test_in_new_netns(test, move || {
        let tun = tunstack::phy::tun::TunDevice::open(&name, 1500)
            .expect("open the TUN device")
            .unbatched();
        assert!(!tun.batched());
        netns::configure_tun(&name, netns::Ipv4Cidr::new(KERNEL, 24), 1500).unwrap();
        let net =
            tunstack::runtime::Net::start(tun, tunstack::stack::StackConfig::new(STACK)).unwrap();
        tunstack::services::start_standard(&net).unwrap();
        let mut k = kernel_connect(tunstack::services::ECHO_PORT);
        let mut w = k.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let h = Stream::new(6, 20 * MB).write_all(&mut w).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
            h
        });
        let (len, got) = hash_reader(&mut k).unwrap();
        assert_eq!((len, got), (20 * MB, writer.join().unwrap()));
        net.stop().unwrap();
    });
}

#[test]
fn stack_connects_to_a_kernel_listener_both_ways() {
    with_stack("stack_connects_to_a_kernel_listener", |up| {
        let l = KernelListener::bind((KERNEL, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            // Read the client's 20 MB, then answer with 20 MB of our own.
            let got = hash_exact(&mut s, 20 * MB).unwrap();
            let sent = Stream::new(5, 20 * MB).write_all(&mut s).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            (got, sent, rest.len())
        });
        let mut c = stack_connect(up, port);
        let sent = Stream::new(4, 20 * MB).write_all(&mut c).unwrap();
        let (len, got) = {
            let h = hash_exact(&mut c, 20 * MB).unwrap();
            (20 * MB, h)
        };
        let mut eof = [0u8; 1];
        assert_eq!(
            c.read(&mut eof).unwrap(),
            0,
            "server's FIN reaches the stack"
        );
        c.shutdown(Shutdown::Write).unwrap();
        let (srv_got, srv_sent, extra) = server.join().unwrap();
        assert_eq!(srv_got, sent, "kernel received different bytes");
        assert_eq!(len, 20 * MB);
        assert_eq!(got, srv_sent, "stack received different bytes");
        assert_eq!(extra, 0);
    });
}

#[test]
fn connecting_to_a_closed_port_is_refused_both_ways() {
    with_stack("closed_port_refused", |up| {
        let e = KernelStream::connect_timeout(
            &SocketAddrV4::new(STACK, 4444).into(),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        let e = TcpStream::connect_timeout(
            &up.net,
            SocketAddrV4::new(KERNEL, 4444),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert!(up.net.stats().tcp_rst_sent >= 1);
    });
}

#[test]
fn two_hundred_parallel_connections_to_one_port() {
    with_stack("two_hundred_parallel_connections", |_up| {
        const N: usize = 200;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(N));
        let threads: Vec<_> = (0..N)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut k = kernel_connect(tunstack::services::ECHO_PORT);
                    let msg: Vec<u8> = (0..16 * 1024).map(|j| (i * 31 + j) as u8).collect();
                    k.write_all(&msg).unwrap();
                    k.shutdown(Shutdown::Write).unwrap();
                    let mut back = Vec::new();
                    k.read_to_end(&mut back).unwrap();
                    assert_eq!(back, msg, "connection {i} echoed different bytes");
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a connection failed");
        }
    });
}

#[test]
fn udp_echo_and_port_unreachable() {
    with_stack("udp_echo_and_port_unreachable", |up| {
        let s = std::net::UdpSocket::bind((KERNEL, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.connect((STACK, tunstack::services::ECHO_PORT)).unwrap();
        let mut ok = 0;
        for i in 0..20u8 {
            let msg = vec![i; 100 + i as usize * 50];
            s.send(&msg).unwrap();
            let mut buf = [0u8; 2048];
            if let Ok(n) = s.recv(&mut buf) {
                assert_eq!(&buf[..n], &msg[..]);
                ok += 1;
            }
        }
        assert_eq!(ok, 20, "all datagrams echoed on a lossless link");
        // A port nobody listens on: ICMP port unreachable reaches the kernel
        // socket as ECONNREFUSED.
        s.connect((STACK, 4444)).unwrap();
        s.send(b"anyone?").unwrap();
        let e = s.recv(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert!(up.net.stats().udp_rx_no_port >= 1);
    });
}

#[test]
fn kernel_ipv6_chatter_is_counted_and_dropped() {
    with_stack("kernel_ipv6_chatter", |up| {
        // Re-enable IPv6 on the device: the kernel then sends MLD reports and
        // router solicitations to the stack, which must count and drop them.
        let dev = &up.options.tun;
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "0").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while up.net.stats().ip.rx_ipv6 == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no IPv6 packet seen in 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // ... and the stack still works.
        let out = netns::run("ping", &["-c", "1", "-W", "2", &STACK.to_string()]).unwrap();
        assert!(out.contains("1 received"));
    });
}

#[test]
fn connect_to_a_silent_address_times_out_and_is_cleaned_up() {
    with_stack("silent_address_times_out", |up| {
        // 198.19.0.77 is inside the kernel's /24 but nobody owns it: the
        // kernel does not forward, so our SYNs go unanswered.
        let before = up.net.with_stack(|s| s.socket_count());
        let t0 = std::time::Instant::now();
        let e = TcpStream::connect_timeout(
            &up.net,
            SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 77), 80),
            Duration::from_millis(1500),
        )
        .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        // The abandoned attempt does not linger in the socket table.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while up.net.with_stack(|s| s.socket_count()) > before {
            assert!(std::time::Instant::now() < deadline, "socket not reaped");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

#[test]
fn a_reset_from_the_kernel_reaches_the_stack_reader_as_connection_reset() {
    with_stack("reset_reaches_reader", |up| {
        let l = KernelListener::bind((KERNEL, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // Wait for the client's byte, so the reset cannot overtake
            // the end of the handshake on the client's side.
            let mut one = [0u8; 1];
            s.read_exact(&mut one).unwrap();
            // SO_LINGER with a zero timeout: close() sends RST, not FIN.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid socket fd and a correctly sized option value.
            let rc = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
            drop(s);
        });
        let mut c = stack_connect(up, port);
        c.write_all(b"x").unwrap();
        server.join().unwrap();
        let mut buf = [0u8; 16];
        let e = c.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        let e = c.write(b"after reset").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    });
}

/// Drop `percent`% of the packets crossing the TUN device in both directions,
/// with nftables `numgen random` rules in this namespace (no netem here).
fn drop_on_tun(tun: &str, percent: u32) {
    let rules = format!(
        "table inet lossy {{\n\
         chain out {{ type filter hook output priority 0; oifname \"{tun}\" numgen random mod 100 < {percent} drop; }}\n\
         chain in {{ type filter hook input priority 0; iifname \"{tun}\" numgen random mod 100 < {percent} drop; }}\n\
         }}\n"
    );
    let path = std::env::temp_dir().join(format!("tunstack-nft-{}-{tun}", std::process::id()));
    std::fs::write(&path, rules).unwrap();
    let r = netns::run("nft", &["-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    r.expect("install nftables loss rules");
}

#[test]
fn twenty_mb_each_way_through_two_percent_loss() {
    with_stack("two_percent_loss", |up| {
        drop_on_tun(&up.options.tun, 2);
        let l = KernelListener::bind((KERNEL, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let got = hash_exact(&mut s, 20 * MB).unwrap();
            let sent = Stream::new(8, 20 * MB).write_all(&mut s).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            (got, sent)
        });
        let t0 = std::time::Instant::now();
        let mut c = stack_connect(up, port);
        let sent = Stream::new(7, 20 * MB).write_all(&mut c).unwrap();
        let got = hash_exact(&mut c, 20 * MB).unwrap();
        let stats = c.stats().unwrap();
        let (srv_got, srv_sent) = server.join().unwrap();
        assert_eq!(srv_got, sent, "kernel received different bytes");
        assert_eq!(got, srv_sent, "stack received different bytes");
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "40 MB through 2% loss each way in {secs:.2} s ({:.0} Mbit/s); stack sender: {stats}",
            40.0 * 8.0 / secs
        );
        assert!(stats.retransmits > 0, "the loss rules dropped nothing?");
        assert!(
            stats.fast_retransmits > 0,
            "recovery by duplicate ACKs never ran: {stats}"
        );
    });
}

#[test]
fn a_reader_is_not_woken_by_its_writer_nor_by_acks_that_carry_no_data() {
    with_stack("reader_not_woken", |up| {
        const N: usize = 400;
        let k = KernelListener::bind((KERNEL, 9100)).unwrap();
        // The kernel reads every message, then answers one byte.
        let sink = std::thread::spawn(move || {
            let (mut s, _) = k.accept().unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut got = vec![0u8; N * 100];
            s.read_exact(&mut got).unwrap();
            s.write_all(b"!").unwrap();
            got
        });
        let mut w = stack_connect(up, 9100);
        let mut r = w.try_clone().unwrap();
        let before = up.net.runtime_stats();
        let reader = std::thread::spawn(move || {
            let mut b = [0u8; 1];
            r.read_exact(&mut b).map(|_| b[0])
        });
        // Let the reader block, then write message by message: each is a
        // segment the kernel ACKs on its own.
        std::thread::sleep(Duration::from_millis(50));
        let mut sent = Vec::new();
        for i in 0..N {
            let msg = [(i % 251) as u8; 100];
            w.write_all(&msg).unwrap();
            sent.extend_from_slice(&msg);
            std::thread::sleep(Duration::from_micros(500));
        }
        assert_eq!(reader.join().unwrap().unwrap(), b'!');
        let after = up.net.runtime_stats();
        assert_eq!(
            sink.join().unwrap(),
            sent,
            "the kernel got every byte in order"
        );
        let woken = after.thread_wakeups - before.thread_wakeups;
        eprintln!("{N} writes, {woken} wake-ups of blocked threads: {after:?}");
        // The reader wakes for the one byte (and the services' threads may
        // time out now and then); before events carried readiness it woke
        // for each ACK (and each write the loop sent), N times or more.
        assert!(woken < 40, "{woken} wake-ups for {N} writes");
    });
}

#[test]
fn a_write_while_the_loop_sleeps_is_sent_by_the_writing_thread() {
    with_stack("direct_send", |up| {
        const ROUNDS: u64 = 300;
        let k = KernelListener::bind((KERNEL, 9101)).unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = k.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let mut b = [0u8; 64];
            for _ in 0..ROUNDS {
                s.read_exact(&mut b).unwrap();
                s.write_all(&b).unwrap();
            }
        });
        let mut s = stack_connect(up, 9101);
        s.set_nodelay(true).unwrap();
        let before = up.net.runtime_stats();
        for i in 0..ROUNDS {
            // Give the loop time to finish the pass that delivered the
            // last reply and go to sleep: on a loaded 2-CPU host the next
            // write otherwise races it there (seen: 40-98 of 300 sent
            // directly in a third of runs, before and after 2026-12-06).
            std::thread::sleep(std::time::Duration::from_micros(500));
            let msg = [(i % 256) as u8; 64];
            s.write_all(&msg).unwrap();
            let mut b = [0u8; 64];
            s.read_exact(&mut b).unwrap();
            assert_eq!(b, msg, "round {i}");
        }
        echo.join().unwrap();
        let after = up.net.runtime_stats();
        let direct = after.direct_sends - before.direct_sends;
        let wakes = after.waker_writes - before.waker_writes;
        // Replies carry data: written at once, not handed to the writer
        // thread (whose wake-up would delay them).
        let handed = after.writer_packets - before.writer_packets;
        assert!(handed < ROUNDS / 10, "{handed} packets handed over");
        eprintln!("{ROUNDS} round trips: {direct} writes sent by their thread, {wakes} loop wakes");
        // Each write finds the loop asleep unless the host delays it; the
        // loop wakes only for what comes in.
        assert!(
            direct >= ROUNDS / 2,
            "only {direct} of {ROUNDS} writes sent directly"
        );
        assert!(wakes < ROUNDS, "{wakes} loop wakes for {ROUNDS} writes");
    });
}

#[test]
fn deleting_the_tun_interface_stops_the_stack_and_says_why() {
    with_stack("deleting_the_tun_interface_stops_the_stack", |up| {
        let listener = TcpListener::bind(&up.net, 9100).unwrap();
        let mut k = kernel_connect(9100);
        let (mut s, _) = listener.accept().unwrap();
        k.write_all(b"x").unwrap();
        let mut b = [0u8; 16];
        assert_eq!(s.read(&mut b).unwrap(), 1);
        assert!(up.net.failure().is_none());
        // A reader blocked on the stack when its device goes away.
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let reader = std::thread::spawn(move || s.read(&mut b));
        std::thread::sleep(Duration::from_millis(100));
        netns::run("ip", &["link", "del", &up.options.tun]).expect("delete the TUN");
        let t = std::time::Instant::now();
        let why = loop {
            if let Some(w) = up.net.failure() {
                break w;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the stack did not notice its device was deleted"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(why.contains("device is gone"), "{why}");
        // Woken with an error, not left blocked until its timeout.
        let r = reader.join().unwrap();
        assert!(r.is_err(), "a read on a stopped stack returned {r:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
    });
}
