//! The stack's socket table driven with hand-built packets through a queue
//! device: the listen backlog (SYN-RECEIVED plus not-yet-accepted
//! connections) and its overflow counter.

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use std::net::Ipv4Addr;
use tunstack::phy::queue::QueueDevice;
use tunstack::rng::Rng;
use tunstack::stack::{Stack, StackConfig};
use tunstack::tcp::State;
use tunstack::time::Instant;

const STACK: [u8; 4] = [198, 19, 0, 2];
const PEER: [u8; 4] = [198, 19, 0, 1];

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

/// A segment from the peer carrying `payload` (ACK set, no SYN).
fn data_segment(sport: u16, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(PEER, STACK, 64)
        .tcp(sport, 80, seq, 64240)
        .ack(ack);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// (window, ack number) of each TCP segment the stack sent (leaves them queued).
fn windows(dev: &QueueDevice) -> Vec<(u16, u32)> {
    dev.tx
        .iter()
        .filter_map(|p| match SlicedPacket::from_ip(p).ok()?.transport? {
            TransportSlice::Tcp(t) => Some((t.window_size(), t.acknowledgment_number())),
            _ => None,
        })
        .collect()
}

/// The (ISS, window) of the SYN-ACKs to ports 5001 (A) and 5002 (B) of
/// `cookie_stack` tests (A's SYN has SEQ 100, B's 7000), in that order.
fn syn_acks(dev: &mut QueueDevice) -> [(u32, u16); 2] {
    let w = windows(dev);
    let out = sent(dev);
    assert_eq!(out.len(), 2, "two SYN-ACKs");
    let find = |ack: u32| {
        let i = w.iter().position(|&(_, a)| a == ack).expect("SYN-ACK");
        assert!(out[i].0 && out[i].1);
        (out[i].3, w[i].0)
    };
    [find(101), find(7001)]
}

/// (syn, ack, rst, seq) of each TCP segment the stack sent.
fn sent(dev: &mut QueueDevice) -> Vec<(bool, bool, bool, u32)> {
    dev.tx
        .drain(..)
        .filter_map(|p| match SlicedPacket::from_ip(&p).ok()?.transport? {
            TransportSlice::Tcp(t) => Some((t.syn(), t.ack(), t.rst(), t.sequence_number())),
            _ => None,
        })
        .collect()
}

#[test]
fn listen_backlog_counts_embryonic_and_unaccepted_connections() {
    let mut cfg = StackConfig::new(Ipv4Addr::from(STACK));
    cfg.syn_cookies = false; // the overflow path without cookies
    let mut s = Stack::new(cfg, Rng::new(3));
    let mut dev = QueueDevice::new(1500);
    let l = s.tcp_listen(80, 2).unwrap();
    let now = Instant::ZERO;
    // Two SYNs fill the backlog of 2; both get a SYN-ACK.
    for port in [5001, 5002] {
        dev.rx.push_back(segment(port, 100, None, true));
    }
    s.poll(now, &mut dev);
    let synacks = sent(&mut dev);
    assert_eq!(synacks.len(), 2);
    assert!(synacks.iter().all(|&(syn, ack, rst, _)| syn && ack && !rst));
    // A third is dropped silently (the client retries), and counted.
    dev.rx.push_back(segment(5003, 100, None, true));
    s.poll(now, &mut dev);
    assert!(sent(&mut dev).is_empty());
    assert_eq!(s.stats().tcp_listen_overflows, 1);
    // Completing the first handshake moves it to the accept queue, which
    // still counts against the backlog.
    let iss = synacks[0].3;
    dev.rx
        .push_back(segment(5001, 101, Some(iss.wrapping_add(1)), false));
    s.poll(now, &mut dev);
    dev.rx.push_back(segment(5004, 100, None, true));
    s.poll(now, &mut dev);
    assert!(sent(&mut dev).is_empty());
    assert_eq!(s.stats().tcp_listen_overflows, 2);
    // Accepting it frees a place: the next SYN is answered.
    let c = s
        .tcp_accept(l)
        .expect("an established connection to accept");
    assert_eq!(s.tcp_state(c), Some(State::Established));
    dev.rx.push_back(segment(5005, 100, None, true));
    s.poll(now, &mut dev);
    let out = sent(&mut dev);
    assert_eq!(out.len(), 1);
    assert!(out[0].0 && out[0].1);
}

/// A stack with a listener of backlog `backlog` on port 80, cookies on.
fn cookie_stack(
    backlog: usize,
    syn_backlog: usize,
) -> (Stack, QueueDevice, tunstack::stack::SocketHandle) {
    let mut cfg = StackConfig::new(Ipv4Addr::from(STACK));
    cfg.syn_backlog = syn_backlog;
    let mut s = Stack::new(cfg, Rng::new(5));
    let l = s.tcp_listen(80, backlog).unwrap();
    (s, QueueDevice::new(1500), l)
}

#[test]
fn rfc4987_full_syn_queue_answers_with_cookie_and_the_ack_establishes() {
    let (mut s, mut dev, l) = cookie_stack(16, 1);
    let now = Instant::from_secs(10);
    // The first SYN takes the one SYN-queue place (ordinary SYN-ACK).
    dev.rx.push_back(segment(5001, 100, None, true));
    s.poll(now, &mut dev);
    assert_eq!(sent(&mut dev).len(), 1);
    assert_eq!(s.socket_count(), 2, "listener + one embryonic connection");
    // The second gets a cookie SYN-ACK and leaves no state behind.
    dev.rx.push_back(segment(5002, 7000, None, true));
    s.poll(now, &mut dev);
    let out = sent(&mut dev);
    assert_eq!(out.len(), 1);
    let (syn, ack, rst, cookie) = out[0];
    assert!(syn && ack && !rst);
    assert_eq!(s.stats().tcp_syncookies_sent, 1);
    assert_eq!(s.socket_count(), 2, "a cookie keeps no state");
    // The ACK returning cookie+1 creates an established connection.
    dev.rx
        .push_back(segment(5002, 7001, Some(cookie.wrapping_add(1)), false));
    s.poll(now + tunstack::time::Duration::from_millis(5), &mut dev);
    assert!(sent(&mut dev).iter().all(|&(_, _, rst, _)| !rst));
    assert_eq!(s.stats().tcp_syncookies_ok, 1);
    let c = s.tcp_accept(l).expect("the cookie connection is accepted");
    assert_eq!(s.tcp_state(c), Some(State::Established));
    // It sends from the cookie: our first byte has SEQ = cookie + 1.
    s.tcp_send(c, b"hi").unwrap();
    s.poll(now + tunstack::time::Duration::from_millis(6), &mut dev);
    let data = sent(&mut dev);
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].3, cookie.wrapping_add(1));
}

#[test]
fn rfc4987_forged_cookie_ack_is_reset_and_counted() {
    let (mut s, mut dev, l) = cookie_stack(16, 0);
    let now = Instant::from_secs(10);
    dev.rx.push_back(segment(5002, 7000, None, true));
    s.poll(now, &mut dev);
    let cookie = sent(&mut dev)[0].3;
    // Wrong cookie, and right cookie from another port: both reset.
    dev.rx
        .push_back(segment(5002, 7001, Some(cookie.wrapping_add(2)), false));
    dev.rx
        .push_back(segment(5003, 7001, Some(cookie.wrapping_add(1)), false));
    s.poll(now, &mut dev);
    let out = sent(&mut dev);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|&(_, _, rst, _)| rst));
    assert_eq!(s.stats().tcp_syncookies_failed, 2);
    assert_eq!(s.stats().tcp_syncookies_ok, 0);
    assert!(s.tcp_accept(l).is_err());
}

#[test]
fn rfc4987_cookie_expires_after_two_counter_ticks() {
    let (mut s, mut dev, l) = cookie_stack(16, 0);
    let now = Instant::from_secs(64 * 100);
    dev.rx.push_back(segment(5002, 7000, None, true));
    s.poll(now, &mut dev);
    let cookie = sent(&mut dev)[0].3;
    // Keep cookies "recently sent" so only the cookie's own age decides.
    dev.rx.push_back(segment(6000, 1, None, true));
    s.poll(now + tunstack::time::Duration::from_secs(100), &mut dev);
    sent(&mut dev);
    dev.rx
        .push_back(segment(5002, 7001, Some(cookie.wrapping_add(1)), false));
    s.poll(now + tunstack::time::Duration::from_secs(128), &mut dev);
    let out = sent(&mut dev);
    assert_eq!(out.len(), 1);
    assert!(out[0].2, "an expired cookie is answered with RST");
    assert_eq!(s.stats().tcp_syncookies_failed, 1);
    assert!(s.tcp_accept(l).is_err());
}

#[test]
fn syn_queue_full_without_cookies_drops_and_counts() {
    let mut cfg = StackConfig::new(Ipv4Addr::from(STACK));
    cfg.syn_backlog = 1;
    cfg.syn_cookies = false;
    let mut s = Stack::new(cfg, Rng::new(5));
    let mut dev = QueueDevice::new(1500);
    s.tcp_listen(80, 16).unwrap();
    dev.rx.push_back(segment(5001, 100, None, true));
    dev.rx.push_back(segment(5002, 100, None, true));
    s.poll(Instant::ZERO, &mut dev);
    assert_eq!(sent(&mut dev).len(), 1, "only the first SYN is answered");
    assert_eq!(s.stats().tcp_listen_overflows, 1);
    assert_eq!(s.stats().tcp_syncookies_sent, 0);
}

/// The accept queue is full when a client returns its cookie: the ACK is
/// dropped (as Linux drops it) but the client, which proved its address,
/// is remembered. The rest of its first flight (SEQ beyond ISN + 1, which
/// does not decode as a cookie) is dropped, not reset; `accept` making room
/// completes the connection, and the client's retransmission delivers every
/// byte in order. Before the fix these segments were answered with RST.
#[test]
fn rfc4987_cookie_ack_on_full_accept_queue_is_deferred_not_reset() {
    let (mut s, mut dev, l) = cookie_stack(1, 4);
    let mut now = Instant::from_secs(10);
    let ms = tunstack::time::Duration::from_millis;
    // A takes the one backlog place (ordinary SYN-ACK); B gets a cookie.
    dev.rx.push_back(segment(5001, 100, None, true));
    dev.rx.push_back(segment(5002, 7000, None, true));
    s.poll(now, &mut dev);
    let [(iss_a, win_a), (cookie, win_b)] = syn_acks(&mut dev);
    assert_eq!(s.stats().tcp_syncookies_sent, 1);
    // The cookie SYN-ACK offers one segment of 536 bytes (one a Linux
    // sender does not split in halves), so the client's first flight is
    // one segment at ISN + 1; the ordinary SYN-ACK offers the receive buffer.
    assert_eq!(win_b, 536);
    assert!(win_a > 1460);
    // A completes: the accept queue (backlog 1) is full.
    dev.rx
        .push_back(segment(5001, 101, Some(iss_a.wrapping_add(1)), false));
    s.poll(now, &mut dev);
    assert_eq!(s.tcp_listener_ready(l), 1);
    // B's handshake ACK and first data arrive: valid cookie, no room.
    dev.rx
        .push_back(segment(5002, 7001, Some(cookie.wrapping_add(1)), false));
    dev.rx.push_back(data_segment(
        5002,
        7001,
        cookie.wrapping_add(1),
        b"0123456789",
    ));
    // A later segment of B's first flight, its SEQ past ISN + 1.
    dev.rx
        .push_back(data_segment(5002, 7011, cookie.wrapping_add(1), b"abcdef"));
    now += ms(5);
    s.poll(now, &mut dev);
    assert!(sent(&mut dev).is_empty(), "dropped silently, no RST");
    assert_eq!(s.stats().tcp_syncookies_deferred, 1);
    assert_eq!(s.stats().tcp_syncookies_failed, 0);
    assert_eq!(s.stats().tcp_rst_sent, 0);
    // A random ACK from elsewhere is still reset.
    dev.rx
        .push_back(data_segment(5003, 7011, cookie.wrapping_add(1), b"x"));
    s.poll(now, &mut dev);
    assert!(sent(&mut dev).iter().all(|&(_, _, rst, _)| rst));
    assert_eq!(s.stats().tcp_syncookies_failed, 1);
    // Accepting A makes room: B is created from what was remembered, and
    // announces its full window at once.
    let a = s.tcp_accept(l).expect("A");
    assert_eq!(s.tcp_state(a), Some(State::Established));
    now += ms(1);
    s.poll(now, &mut dev);
    let b = s
        .tcp_accept(l)
        .expect("B, completed from its deferred cookie");
    assert_eq!(s.tcp_state(b), Some(State::Established));
    assert_eq!(s.stats().tcp_syncookies_ok, 1);
    let acks = windows(&dev);
    sent(&mut dev);
    assert!(
        acks.iter().any(|&(w, ack)| ack == 7001 && w > 1460),
        "B opens its window: {acks:?}"
    );
    // B's later segment first (kept out of order), then its retransmission
    // of the head: all 16 bytes, in order.
    dev.rx
        .push_back(data_segment(5002, 7011, cookie.wrapping_add(1), b"abcdef"));
    dev.rx.push_back(data_segment(
        5002,
        7001,
        cookie.wrapping_add(1),
        b"0123456789",
    ));
    now += ms(1);
    s.poll(now, &mut dev);
    let mut buf = [0u8; 64];
    let n = s.tcp_recv(b, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"0123456789abcdef");
    assert!(sent(&mut dev).iter().all(|&(_, _, rst, _)| !rst));
}

/// A client that only sends its handshake ACK (the server speaks first)
/// while the accept queue is full is completed when `accept` makes room,
/// not left half-open: the stack has nothing else to rebuild it from.
#[test]
fn rfc4987_deferred_cookie_client_that_sends_nothing_is_completed_on_accept() {
    let (mut s, mut dev, l) = cookie_stack(1, 4);
    let now = Instant::from_secs(10);
    dev.rx.push_back(segment(5001, 100, None, true));
    dev.rx.push_back(segment(5002, 7000, None, true));
    s.poll(now, &mut dev);
    let [(iss_a, _), (cookie, _)] = syn_acks(&mut dev);
    dev.rx
        .push_back(segment(5001, 101, Some(iss_a.wrapping_add(1)), false));
    s.poll(now, &mut dev);
    assert_eq!(s.tcp_listener_ready(l), 1, "the accept queue is full");
    dev.rx
        .push_back(segment(5002, 7001, Some(cookie.wrapping_add(1)), false));
    s.poll(now, &mut dev);
    assert!(sent(&mut dev).is_empty());
    s.tcp_accept(l).expect("A");
    let b = s.tcp_accept(l).expect("B");
    // The server speaks first; its greeting continues from the cookie.
    s.tcp_send(b, b"220 hello").unwrap();
    s.poll(now + tunstack::time::Duration::from_millis(1), &mut dev);
    let data = sent(&mut dev);
    assert!(data
        .iter()
        .any(|&(_, _, rst, seq)| !rst && seq == cookie.wrapping_add(1)));
}

/// (destination port, rst, seq, ack number) of each TCP segment the stack sent.
fn sent_to_ports(dev: &mut QueueDevice) -> Vec<(u16, bool, u32, u32)> {
    dev.tx
        .drain(..)
        .filter_map(|p| match SlicedPacket::from_ip(&p).ok()?.transport? {
            TransportSlice::Tcp(t) => Some((
                t.destination_port(),
                t.rst(),
                t.sequence_number(),
                t.acknowledgment_number(),
            )),
            _ => None,
        })
        .collect()
}

fn rst_segment(sport: u16, seq: u32) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(PEER, STACK, 64)
        .tcp(sport, 80, seq, 64240)
        .rst()
        .write(&mut v, &[])
        .unwrap();
    v
}

/// RFC 5961 §7 / CVE-2016-5696: the challenge-ACK limit is per connection.
/// With one stack-wide budget (Linux before 4.7: 100/s), an off-path
/// attacker exhausts it with RSTs on its own connection and learns, from
/// whether its own challenge ACKs still arrive, whether a guessed 4-tuple
/// (someone else's connection) drew challenge ACKs in the same second.
/// Here B is exhausted first and A still gets its full budget; then 20
/// connections each take 50 in-window RSTs and SYNs in one second and each
/// is answered exactly its own limit (10), 200 in all, far above any one
/// budget; no connection is torn down; and each budget refills a second on.
#[test]
fn rfc5961_challenge_ack_limit_is_per_connection_not_stack_wide() {
    const CONNS: u16 = 20;
    const LIMIT: usize = 10;
    let mut cfg = StackConfig::new(Ipv4Addr::from(STACK));
    cfg.syn_cookies = false;
    assert_eq!(cfg.tcp.challenge_ack_limit as usize, LIMIT, "the default");
    let mut s = Stack::new(cfg, Rng::new(9));
    let mut dev = QueueDevice::new(1500);
    let l = s.tcp_listen(80, 64).unwrap();
    let mut now = Instant::from_secs(10);
    let port = |i: u16| 6000 + i;
    let isn = |i: u16| 1000 * u32::from(i + 1);
    for i in 0..CONNS {
        dev.rx.push_back(segment(port(i), isn(i), None, true));
    }
    s.poll(now, &mut dev);
    let synacks = sent_to_ports(&mut dev);
    assert_eq!(synacks.len(), CONNS as usize);
    for &(p, _, iss, _) in &synacks {
        let i = p - 6000;
        dev.rx
            .push_back(segment(p, isn(i) + 1, Some(iss.wrapping_add(1)), false));
    }
    s.poll(now, &mut dev);
    let conns: Vec<_> = (0..CONNS).map(|_| s.tcp_accept(l).unwrap()).collect();
    assert!(conns
        .iter()
        .all(|&c| s.tcp_state(c) == Some(State::Established)));
    sent_to_ports(&mut dev);
    // An in-window RST that is not exactly RCV.NXT, or a SYN: each draws a
    // challenge ACK while the connection's budget lasts (and never a reset).
    let attack = |i: u16, k: u32| {
        if k.is_multiple_of(2) {
            rst_segment(port(i), isn(i) + 1 + 10 + k)
        } else {
            segment(port(i), isn(i) + 50 + k, None, true)
        }
    };
    let challenge_acks = |out: &[(u16, bool, u32, u32)], i: u16| {
        out.iter()
            .filter(|&&(p, rst, _, ack)| p == port(i) && !rst && ack == isn(i) + 1)
            .count()
    };
    // B (connection 1) exhausted: 50 attacks, 10 answers.
    for k in 0..50 {
        dev.rx.push_back(attack(1, k));
        s.poll(now, &mut dev);
    }
    let out = sent_to_ports(&mut dev);
    assert_eq!(challenge_acks(&out, 1), LIMIT, "B held to its own limit");
    // A (connection 0), the attacker's own, in the same second: not suppressed.
    for k in 0..LIMIT as u32 {
        dev.rx.push_back(attack(0, k));
        s.poll(now, &mut dev);
    }
    let out = sent_to_ports(&mut dev);
    assert_eq!(challenge_acks(&out, 0), LIMIT, "A's budget is its own");
    assert_eq!(challenge_acks(&out, 1), 0);
    // Every connection, 50 attacks each, interleaved, in the same second.
    now += tunstack::time::Duration::from_millis(10);
    for k in 0..50 {
        for i in 0..CONNS {
            dev.rx.push_back(attack(i, 1000 + k));
        }
        s.poll(now, &mut dev);
    }
    let out = sent_to_ports(&mut dev);
    for i in 0..CONNS {
        let want = if i < 2 { 0 } else { LIMIT };
        assert_eq!(challenge_acks(&out, i), want, "connection {i}");
    }
    let total: usize = (0..CONNS).map(|i| challenge_acks(&out, i)).sum();
    assert_eq!(total, (CONNS as usize - 2) * LIMIT, "far above one budget");
    assert!(out.iter().all(|&(_, rst, _, _)| !rst), "never a reset");
    assert!(conns
        .iter()
        .all(|&c| s.tcp_state(c) == Some(State::Established)));
    // A second later every budget is full again, A's and B's too.
    now += tunstack::time::Duration::from_secs(1);
    for k in 0..50 {
        for i in 0..CONNS {
            dev.rx.push_back(attack(i, 2000 + k));
        }
        s.poll(now, &mut dev);
    }
    let out = sent_to_ports(&mut dev);
    assert!((0..CONNS).all(|i| challenge_acks(&out, i) == LIMIT));
    let counted: u64 = conns
        .iter()
        .map(|&c| s.tcp_stats(c).unwrap().challenge_acks)
        .sum();
    assert_eq!(counted, (LIMIT * (2 + 18 + 20)) as u64);
}

/// The readiness bits each socket's event carries (sockets with an event only).
fn events(s: &mut Stack) -> Vec<(tunstack::stack::SocketHandle, u8)> {
    let (mut hs, mut bits) = (Vec::new(), Vec::new());
    s.drain_events_ready(&mut hs, &mut bits);
    hs.into_iter().zip(bits).collect()
}

/// The bits of `h`'s event, 0 if it has none.
fn bits_of(ev: &[(tunstack::stack::SocketHandle, u8)], h: tunstack::stack::SocketHandle) -> u8 {
    ev.iter().find(|(x, _)| *x == h).map_or(0, |&(_, b)| b)
}

#[test]
fn events_carry_readiness_only_for_what_can_unblock_a_thread() {
    use tunstack::stack::{READABLE, WRITABLE};
    let mut s = Stack::new(StackConfig::new(Ipv4Addr::from(STACK)), Rng::new(5));
    let mut dev = QueueDevice::new(1500);
    let l = s.tcp_listen(80, 4).unwrap();
    let now = Instant::ZERO;
    dev.rx.push_back(segment(5001, 100, None, true));
    s.poll(now, &mut dev);
    let iss = sent(&mut dev)[0].3;
    dev.rx
        .push_back(segment(5001, 101, Some(iss.wrapping_add(1)), false));
    s.poll(now, &mut dev);
    // A connection to accept: the listener is readable.
    assert_eq!(bits_of(&events(&mut s), l) & READABLE, READABLE);
    let c = s.tcp_accept(l).unwrap();
    events(&mut s);
    // The user's own write, and its transmission: an event (loop tasks see
    // it) with no readiness, so a thread blocked reading is not woken.
    assert_eq!(s.tcp_send(c, b"hello").unwrap(), 5);
    s.poll(now, &mut dev);
    assert_eq!(sent(&mut dev).len(), 1, "the write goes out");
    let ev = events(&mut s);
    assert!(ev.iter().any(|&(h, _)| h == c), "tasks see the write");
    assert_eq!(bits_of(&ev, c), 0);
    // Data that acknowledges nothing new: readable only.
    dev.rx
        .push_back(data_segment(5001, 101, iss.wrapping_add(1), b"abc"));
    s.poll(now, &mut dev);
    assert_eq!(bits_of(&events(&mut s), c), READABLE);
    // A pure ACK of the five bytes frees send space: writable only.
    dev.rx
        .push_back(segment(5001, 104, Some(iss.wrapping_add(6)), false));
    s.poll(now, &mut dev);
    assert_eq!(bits_of(&events(&mut s), c), WRITABLE);
    // A duplicate of it changes nothing a thread waits for.
    dev.rx
        .push_back(segment(5001, 104, Some(iss.wrapping_add(6)), false));
    s.poll(now, &mut dev);
    assert_eq!(bits_of(&events(&mut s), c), 0);
    // Reading is the user's own act.
    let mut buf = [0u8; 8];
    assert_eq!(s.tcp_recv(c, &mut buf).unwrap(), 3);
    s.poll(now, &mut dev);
    assert_eq!(bits_of(&events(&mut s), c), 0);
    // The peer's FIN changes the state: both.
    let mut fin = Vec::new();
    PacketBuilder::ipv4(PEER, STACK, 64)
        .tcp(5001, 80, 104, 64240)
        .ack(iss.wrapping_add(6))
        .fin()
        .write(&mut fin, &[])
        .unwrap();
    dev.rx.push_back(fin);
    s.poll(now, &mut dev);
    assert_eq!(s.tcp_state(c), Some(State::CloseWait));
    assert_eq!(bits_of(&events(&mut s), c), READABLE | WRITABLE);
}

/// Handshake from `sport` (SEQ 100) with the stack at `s`, accepted from
/// listener `l`: the connection, and the stack's next sequence number.
fn establish(
    s: &mut Stack,
    dev: &mut QueueDevice,
    l: tunstack::stack::SocketHandle,
    sport: u16,
) -> (tunstack::stack::SocketHandle, u32) {
    let now = Instant::ZERO;
    dev.rx.push_back(segment(sport, 100, None, true));
    s.poll(now, dev);
    let out = sent(dev);
    assert_eq!(out.len(), 1, "one SYN-ACK");
    let next = out[0].3.wrapping_add(1);
    dev.rx.push_back(segment(sport, 101, Some(next), false));
    s.poll(now, dev);
    let c = s.tcp_accept(l).expect("an established connection");
    (c, next)
}

/// Segments of flows arriving interleaved each reach their own connection,
/// and a 4-tuple whose connection was reset and then opened again reaches
/// the new one: the demultiplexer's last-connection shortcut follows every
/// change of the connection table.
#[test]
fn interleaved_flows_and_a_reused_four_tuple_reach_their_own_connection() {
    let mut s = Stack::new(StackConfig::new(Ipv4Addr::from(STACK)), Rng::new(5));
    let mut dev = QueueDevice::new(1500);
    let l = s.tcp_listen(80, 8).unwrap();
    let now = Instant::ZERO;
    let (a, a_next) = establish(&mut s, &mut dev, l, 6001);
    let (b, b_next) = establish(&mut s, &mut dev, l, 6002);
    for (i, (port, next)) in [(6001, a_next), (6002, b_next), (6001, a_next)]
        .into_iter()
        .enumerate()
    {
        let seq = 101 + if i == 2 { 3 } else { 0 };
        let payload: &[u8] = [b"aaa", b"bbb", b"AAA"][i];
        dev.rx.push_back(data_segment(port, seq, next, payload));
    }
    s.poll(now, &mut dev);
    let mut buf = [0u8; 16];
    let n = s.tcp_recv(a, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"aaaAAA");
    let n = s.tcp_recv(b, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"bbb");
    // A's peer resets; the connection is freed once the application closes it.
    dev.rx.push_back(rst_segment(6001, 107));
    s.poll(now, &mut dev);
    assert_ne!(s.tcp_state(a), Some(State::Established));
    s.tcp_close(a);
    s.poll(now, &mut dev);
    dev.tx.clear();
    // A new client's SYN takes the freed slot, then A's 4-tuple comes back
    // with a new SYN before any segment found a connection in between. A
    // shortcut still naming A's slot would hand that SYN to the new client.
    dev.rx.push_back(segment(6003, 100, None, true));
    dev.rx.push_back(segment(6001, 500, None, true));
    s.poll(now, &mut dev);
    let acks = windows(&dev);
    let out = sent(&mut dev);
    assert_eq!(out.len(), 2, "two SYN-ACKs: {out:?}");
    assert!(out.iter().all(|&(syn, ack, rst, _)| syn && ack && !rst));
    let iss_of = |ack: u32| {
        let i = acks.iter().position(|&(_, a)| a == ack).expect("a SYN-ACK");
        out[i].3.wrapping_add(1)
    };
    let (c_next, a2_next) = (iss_of(101), iss_of(501));
    dev.rx.push_back(segment(6003, 101, Some(c_next), false));
    dev.rx.push_back(segment(6001, 501, Some(a2_next), false));
    s.poll(now, &mut dev);
    let mut by_port = std::collections::HashMap::new();
    while let Ok(h) = s.tcp_accept(l) {
        by_port.insert(s.tcp_peer_addr(h).unwrap().port(), h);
    }
    assert_eq!(by_port.len(), 2, "both handshakes completed");
    dev.rx.push_back(data_segment(6001, 501, a2_next, b"new"));
    dev.rx.push_back(data_segment(6003, 101, c_next, b"ccc"));
    dev.rx.push_back(data_segment(6002, 104, b_next, b"BBB"));
    s.poll(now, &mut dev);
    for (port, h, want) in [
        (6001, by_port[&6001], &b"new"[..]),
        (6003, by_port[&6003], b"ccc"),
        (6002, b, b"BBB"),
    ] {
        let n = s.tcp_recv(h, &mut buf).unwrap();
        assert_eq!(&buf[..n], want, "port {port}");
    }
}
