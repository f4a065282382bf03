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
    let mut s = Stack::new(StackConfig::new(Ipv4Addr::from(STACK)), Rng::new(3));
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
