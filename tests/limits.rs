//! Stack limits (issue 7), one test per limit, driven with hand-built
//! packets through a queue device: the connection limit (RST and a count),
//! the idle timeout (RST, `TimedOut` for the application), keep-alive
//! (off by default; probes, then `TimedOut`).

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use std::net::Ipv4Addr;
use tunstack::phy::queue::QueueDevice;
use tunstack::rng::Rng;
use tunstack::stack::{SocketHandle, Stack, StackConfig};
use tunstack::tcp::{State, TcpError};
use tunstack::time::{Duration, Instant};

const STACK: [u8; 4] = [198, 19, 7, 2];
const PEER: [u8; 4] = [198, 19, 7, 1];

fn segment(sport: u16, seq: u32, ack: Option<u32>, syn: bool) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(PEER, STACK, 64).tcp(sport, 80, seq, 64240);
    if syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let mut v = Vec::new();
    b.write(&mut v, &[]).unwrap();
    v
}

/// (syn, ack, rst, seq, payload length) of each TCP segment the stack sent.
fn sent(dev: &mut QueueDevice) -> Vec<(bool, bool, bool, u32, usize)> {
    dev.tx
        .drain(..)
        .filter_map(|p| match SlicedPacket::from_ip(&p).ok()?.transport? {
            TransportSlice::Tcp(t) => Some((
                t.syn(),
                t.ack(),
                t.rst(),
                t.sequence_number(),
                t.payload().len(),
            )),
            _ => None,
        })
        .collect()
}

/// Complete a handshake from `sport` and accept it.
fn connect(
    s: &mut Stack,
    dev: &mut QueueDevice,
    l: SocketHandle,
    sport: u16,
    now: Instant,
) -> SocketHandle {
    dev.rx.push_back(segment(sport, 100, None, true));
    s.poll(now, dev);
    let synack = sent(dev);
    assert!(synack[0].0 && synack[0].1, "SYN-ACK");
    dev.rx.push_back(segment(
        sport,
        101,
        Some(synack[0].3.wrapping_add(1)),
        false,
    ));
    s.poll(now, dev);
    s.tcp_accept(l).expect("established")
}

fn config() -> StackConfig {
    let mut c = StackConfig::new(Ipv4Addr::from(STACK));
    c.tcp.timestamps = false;
    c
}

#[test]
fn max_connections_refuses_syn_with_rst_and_counts() {
    let mut c = config();
    c.max_tcp_connections = 2;
    let mut s = Stack::new(c, Rng::new(1));
    let mut dev = QueueDevice::new(1500);
    let l = s.tcp_listen(80, 16).unwrap();
    let now = Instant::from_secs(1);
    connect(&mut s, &mut dev, l, 5001, now);
    connect(&mut s, &mut dev, l, 5002, now);
    dev.rx.push_back(segment(5003, 100, None, true));
    s.poll(now, &mut dev);
    let out = sent(&mut dev);
    assert_eq!(out.len(), 1);
    assert!(out[0].2, "the third SYN is refused with RST");
    assert_eq!(s.stats().tcp_conn_limit_refused, 1);
    // Active opens fail with a clear error too.
    let e = s
        .tcp_connect(now, "198.19.7.1:9".parse().unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("max_tcp_connections"), "{e}");
    assert_eq!(s.stats().tcp_conn_limit_refused, 2);
}

#[test]
fn idle_timeout_resets_and_reports_timed_out() {
    let mut c = config();
    c.tcp_idle_timeout = Some(Duration::from_secs(30));
    let mut s = Stack::new(c, Rng::new(2));
    let mut dev = QueueDevice::new(1500);
    let l = s.tcp_listen(80, 16).unwrap();
    let t0 = Instant::from_secs(1);
    let h = connect(&mut s, &mut dev, l, 5001, t0);
    // The deadline is filed: poll_at says when.
    let at = s.poll(t0, &mut dev).expect("an idle deadline");
    assert!(at <= t0 + Duration::from_secs(30), "{at:?}");
    // Not yet idle long enough: nothing happens.
    s.poll(t0 + Duration::from_secs(29), &mut dev);
    assert_eq!(s.tcp_state(h), Some(State::Established));
    s.poll(t0 + Duration::from_secs(31), &mut dev);
    let out = sent(&mut dev);
    assert!(out.iter().any(|o| o.2), "an RST goes out: {out:?}");
    assert_eq!(s.stats().tcp_idle_timeouts, 1);
    let mut buf = [0u8; 8];
    assert_eq!(s.tcp_recv(h, &mut buf), Err(TcpError::TimedOut));
    assert_eq!(s.tcp_error(h), Some(TcpError::TimedOut));
}

#[test]
fn idle_timeout_restarts_on_activity() {
    let mut c = config();
    c.tcp_idle_timeout = Some(Duration::from_secs(30));
    let mut s = Stack::new(c, Rng::new(2));
    let mut dev = QueueDevice::new(1500);
    let l = s.tcp_listen(80, 16).unwrap();
    let t0 = Instant::from_secs(1);
    let h = connect(&mut s, &mut dev, l, 5001, t0);
    // The application writes at 20 s; the peer acknowledges.
    s.poll(t0 + Duration::from_secs(20), &mut dev);
    s.tcp_send(h, b"ping").unwrap();
    s.poll(t0 + Duration::from_secs(20), &mut dev);
    let data = sent(&mut dev);
    let d = data.iter().find(|o| o.4 == 4).expect("data sent");
    dev.rx
        .push_back(segment(5001, 101, Some(d.3.wrapping_add(4)), false));
    s.poll(t0 + Duration::from_secs(21), &mut dev);
    s.poll(t0 + Duration::from_secs(45), &mut dev);
    assert_eq!(s.tcp_state(h), Some(State::Established), "active 24 s ago");
    s.poll(t0 + Duration::from_secs(52), &mut dev);
    assert_eq!(s.stats().tcp_idle_timeouts, 1);
}

#[test]
fn rfc1122_keepalive_off_by_default() {
    let mut s = Stack::new(config(), Rng::new(3));
    let mut dev = QueueDevice::new(1500);
    let l = s.tcp_listen(80, 16).unwrap();
    let t0 = Instant::from_secs(1);
    let h = connect(&mut s, &mut dev, l, 5001, t0);
    s.poll(t0 + Duration::from_secs(1), &mut dev);
    sent(&mut dev);
    for hour in 1..=3 {
        s.poll(t0 + Duration::from_secs(hour * 3600), &mut dev);
    }
    assert!(sent(&mut dev).is_empty());
    assert_eq!(s.tcp_state(h), Some(State::Established));
}

#[test]
fn rfc9293_keepalive_probes_then_times_out() {
    let mut c = config();
    c.tcp.keepalive = Some(Duration::from_secs(60));
    c.tcp.keepalive_interval = Duration::from_secs(10);
    c.tcp.keepalive_probes = 3;
    let mut s = Stack::new(c, Rng::new(4));
    let mut dev = QueueDevice::new(1500);
    let l = s.tcp_listen(80, 16).unwrap();
    let t0 = Instant::from_secs(1);
    let h = connect(&mut s, &mut dev, l, 5001, t0);
    let mut now = t0;
    let mut probes = 0;
    // Follow the stack's own deadlines (the timer heap's answer).
    while let Some(at) = s.poll(now, &mut dev) {
        now = at;
        s.poll(now, &mut dev);
        for o in sent(&mut dev) {
            if !o.2 && o.4 == 0 {
                probes += 1;
            }
        }
        if s.tcp_state(h) == Some(State::Closed) || now > t0 + Duration::from_secs(1000) {
            break;
        }
    }
    assert_eq!(probes, 3, "three unanswered probes");
    assert_eq!(s.tcp_error(h), Some(TcpError::TimedOut));
    assert!(now >= t0 + Duration::from_secs(60 + 30), "{now:?}");
}
