//! End-to-end tests of the TUN offload mode (`tunstack up --offload`): the
//! kernel's TCP and the stack move bulk data both ways over a TUN device with
//! a virtio-net header, each test in its own network namespace. Every byte
//! is checked (a hash of a seeded stream), and the device's counters must show
//! that large (GSO) packets really crossed it. If the kernel refuses the
//! offload mode the tests fail and say why: a silent fallback would prove
//! nothing.

mod common;

use common::*;
use std::io::Write;
use std::net::{Shutdown, SocketAddrV4, TcpListener as KernelListener, TcpStream as KernelStream};
use std::time::Duration;
use tunstack::netns;
use tunstack::phy::vnet::OffloadCounts;
use tunstack::runtime::{TcpListener, TcpStream};
use tunstack::up::{self, Up, UpOptions};

const MB: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);

/// Run `f` in a fresh namespace with a stack on a TUN device opened with
/// `--offload` at MTU 1500. Panics (with the kernel's reason) if offload was
/// refused; `None` when not root outside CI (fails under CI=true).
fn with_offload_stack<T: Send + 'static>(
    test: &str,
    f: impl FnOnce(&Up) -> T + Send + 'static,
) -> Option<T> {
    if !netns::require_root(test) {
        return None;
    }
    let name = tun_name("off");
    let r = netns::in_new_netns(move || {
        let up = up::bring_up(&UpOptions {
            tun: name,
            offload: true,
            ..UpOptions::default()
        })
        .expect("bring up the stack on a TUN device with --offload");
        if let Some(why) = &up.offload_refused {
            panic!("the kernel refused the TUN offload mode: {why}");
        }
        f(&up)
    });
    Some(r.unwrap_or_else(|e| panic!("{test}: cannot create a network namespace: {e}")))
}

fn counts(up: &Up) -> OffloadCounts {
    up.offload
        .as_ref()
        .expect("offload counters exist when offload is on")
        .snapshot()
}

#[test]
fn kernel_sends_64mb_to_the_stack_in_gso_packets() {
    with_offload_stack("kernel_sends_64mb_to_the_stack_in_gso_packets", |up| {
        let listener = TcpListener::bind(&up.net, 9100).unwrap();
        let sink = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            hash_reader(&mut s).unwrap()
        });
        let mut k = KernelStream::connect_timeout(
            &SocketAddrV4::new(STACK, 9100).into(),
            Duration::from_secs(10),
        )
        .expect("kernel connects to the stack");
        k.set_write_timeout(Some(TIMEOUT)).unwrap();
        let sent = Stream::new(11, 64 * MB).write_all(&mut k).unwrap();
        k.shutdown(Shutdown::Write).unwrap();
        let (len, got) = sink.join().unwrap();
        assert_eq!(len, 64 * MB);
        assert_eq!(got, sent, "bytes differ");
        let c = counts(up);
        // Larger than one MTU each, and they carried most of the stream.
        assert!(c.rx_gso > 0, "no GSO packet was read: {c:?}");
        assert!(
            c.rx_gso_bytes > 32 * MB && c.rx_gso_bytes / c.rx_gso > 1500,
            "GSO packets carried too little: {c:?}"
        );
        assert!(c.rx_csum_partial > 0, "{c:?}");
        assert_eq!(c.rx_bad_header, 0, "{c:?}");
        let st = up.net.stats();
        assert_eq!(st.tcp_rx_bad_checksum, 0, "{st:?}");
        // The application read most GSO payloads from the packets the
        // device wrote, not from a copy (`StackConfig::rx_keep_min`).
        assert!(
            st.rx_packets_kept > c.rx_gso / 2,
            "only {} of {} GSO packets were kept: {st:?}",
            st.rx_packets_kept,
            c.rx_gso
        );
    });
}

#[test]
fn stack_sends_64mb_to_the_kernel_in_gso_packets() {
    with_offload_stack("stack_sends_64mb_to_the_kernel_in_gso_packets", |up| {
        let kl = KernelListener::bind(SocketAddrV4::new(KERNEL, 9101)).unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = kl.accept().unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            hash_reader(&mut s).unwrap()
        });
        let mut s = TcpStream::connect_timeout(
            &up.net,
            SocketAddrV4::new(KERNEL, 9101),
            Duration::from_secs(10),
        )
        .expect("stack connects to the kernel");
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        let sent = Stream::new(12, 64 * MB).write_all(&mut s).unwrap();
        s.flush().unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let (len, got) = reader.join().unwrap();
        assert_eq!(len, 64 * MB);
        assert_eq!(got, sent, "bytes differ");
        let c = counts(up);
        assert!(c.tx_gso > 0, "no GSO packet was written: {c:?}");
        assert!(
            c.tx_gso_bytes > 32 * MB && c.tx_gso_bytes / c.tx_gso > 1500,
            "GSO packets carried too little: {c:?}"
        );
        // The payloads went out from the send buffer, not copied first
        // (`tunstack::lend`): most of the GSO packets.
        let r = up.net.runtime_stats();
        assert!(
            r.lent_writes > c.tx_gso / 2,
            "only {} of {} GSO packets were written from the send buffer: {r:?}",
            r.lent_writes,
            c.tx_gso
        );
    });
}

#[test]
fn small_exchanges_still_work_with_offload() {
    // Echo (small segments, both directions) and ping (ICMP, no GSO) through
    // the vnet-header device.
    with_offload_stack("small_exchanges_still_work_with_offload", |up| {
        tunstack::services::start_standard(&up.net).expect("start services");
        let out = netns::run(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "2", &STACK.to_string()],
        )
        .expect("ping the stack");
        assert!(out.contains("2 received"), "ping output: {out}");
        let mut k = KernelStream::connect_timeout(
            &SocketAddrV4::new(STACK, 7).into(),
            Duration::from_secs(10),
        )
        .unwrap();
        k.set_read_timeout(Some(TIMEOUT)).unwrap();
        for i in 0..20u8 {
            let msg = vec![i; 1 + usize::from(i) * 50];
            k.write_all(&msg).unwrap();
            let mut back = vec![0u8; msg.len()];
            std::io::Read::read_exact(&mut k, &mut back).unwrap();
            assert_eq!(back, msg);
        }
        assert_eq!(counts(up).rx_bad_header, 0);
    });
}
