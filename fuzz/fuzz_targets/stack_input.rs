//! Untrusted IPv4 input (ICMP, UDP, TCP, fragments, garbage) into a running
//! stack that has a listener on port 80, an established connection from
//! 198.19.0.1:40000, a UDP socket on port 53 and an outgoing connection in
//! SYN-SENT, polled with advancing virtual time. It must never panic.
//!
//! Input: records of `[ctl][len_hi][len_lo][len bytes of packet]`. `ctl`:
//! * bit 0: fix the packet up: IPv4 version, total length, addresses
//!   (peer → stack) and the IP and transport checksums, so the fuzzer reaches
//!   the protocol logic instead of the checksum check;
//! * bit 1: TCP seq/ack are relative to the established connection's initial
//!   sequence numbers (so in-window segments are easy to find);
//! * bits 2..4: advance virtual time by 0, 1 ms, 10 ms, 200 ms, 1 s, 5 s, 60 s, 1000 s;
//! * bits 5..7: application action: accept + read, write, shutdown, close, abort, UDP echo.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};
use tunstack::phy::queue::QueueDevice;
use tunstack::rng::Rng;
use tunstack::stack::{SocketHandle, Stack, StackConfig};
use tunstack::time::{Duration, Instant};
use tunstack::wire::checksum;

const STACK: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const PEER_ISN: u32 = 1000;

/// A hand-built TCP/IPv4 packet peer → stack (checksums filled by `fixup`).
fn tcp(sport: u16, dport: u16, seq: u32, ack: Option<u32>, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[8] = 64;
    p[9] = 6;
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&ack.unwrap_or(0).to_be_bytes());
    p[32] = 5 << 4;
    p[33] = flags | if ack.is_some() { 0x10 } else { 0 };
    p[34..36].copy_from_slice(&64240u16.to_be_bytes());
    p.extend_from_slice(payload);
    fixup(&mut p);
    p
}

/// Make `p` a well-formed IPv4 packet from PEER to STACK as far as lengths,
/// addresses and checksums go (everything else is left as the fuzzer chose).
fn fixup(p: &mut [u8]) {
    if p.len() < 20 {
        return;
    }
    let ihl = usize::from(p[0] & 0x0f).max(5);
    p[0] = 0x40 | ihl as u8;
    let ihl = ihl * 4;
    if ihl > p.len() {
        return;
    }
    let total = p.len().min(65535) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[12..16].copy_from_slice(&PEER.octets());
    p[16..20].copy_from_slice(&STACK.octets());
    p[10] = 0;
    p[11] = 0;
    let c = checksum::finish(checksum::sum(0, &p[..ihl]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let frag = u16::from_be_bytes([p[6], p[7]]);
    if frag & 0x3fff != 0 {
        return; // a fragment: its transport checksum covers the whole datagram
    }
    let proto = p[9];
    let body = &mut p[ihl..];
    let (at, pseudo) = match proto {
        1 => (2, 0),
        6 => (16, checksum::pseudo_header(PEER, STACK, 6, body.len())),
        17 => (6, checksum::pseudo_header(PEER, STACK, 17, body.len())),
        _ => return,
    };
    if body.len() < at + 2 {
        return;
    }
    if proto == 17 && body.len() >= 8 {
        let udp_len = body.len().min(65535) as u16;
        body[4..6].copy_from_slice(&udp_len.to_be_bytes());
    }
    body[at] = 0;
    body[at + 1] = 0;
    let mut c = checksum::finish(checksum::sum(pseudo, body));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    body[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

struct World {
    s: Stack,
    dev: QueueDevice,
    now: Instant,
    listener: SocketHandle,
    conn: Option<SocketHandle>,
    udp: SocketHandle,
    /// The established connection's ISS (the stack's first sequence number).
    iss: u32,
}

fn first_synack_seq(dev: &mut QueueDevice) -> Option<u32> {
    dev.tx.drain(..).find_map(|p| {
        let ihl = usize::from(p.first()? & 0x0f) * 4;
        let t = p.get(ihl..)?;
        (p.get(9) == Some(&6) && t.len() >= 20 && t[13] & 0x12 == 0x12)
            .then(|| u32::from_be_bytes([t[4], t[5], t[6], t[7]]))
    })
}

fn setup() -> World {
    let mut s = Stack::new(StackConfig::new(STACK), Rng::new(7));
    let mut dev = QueueDevice::new(1500);
    let now = Instant::from_secs(1);
    let listener = s.tcp_listen(80, 8).expect("listen");
    let udp = s.udp_bind(53).expect("udp bind");
    dev.rx.push_back(tcp(40000, 80, PEER_ISN, None, 0x02, &[]));
    s.poll(now, &mut dev);
    let iss = first_synack_seq(&mut dev).expect("a SYN-ACK");
    dev.rx.push_back(tcp(
        40000,
        80,
        PEER_ISN + 1,
        Some(iss.wrapping_add(1)),
        0,
        &[],
    ));
    s.poll(now, &mut dev);
    let conn = s.tcp_accept(listener).expect("an established connection");
    s.tcp_send(conn, b"hello from the stack\n").expect("send");
    let _ = s.tcp_connect(now, SocketAddrV4::new(PEER, 9000));
    s.poll(now, &mut dev);
    dev.tx.clear();
    World {
        s,
        dev,
        now,
        listener,
        conn: Some(conn),
        udp,
        iss,
    }
}

const STEPS_MS: [u64; 8] = [0, 1, 10, 200, 1000, 5000, 60_000, 1_000_000];

fuzz_target!(|data: &[u8]| {
    let mut w = setup();
    let mut rest = data;
    let mut buf = vec![0u8; 4096];
    while rest.len() >= 3 {
        let ctl = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let mut p = rest[3..3 + len].to_vec();
        rest = &rest[3 + len..];
        if ctl & 2 != 0 && p.len() >= 20 {
            let ihl = usize::from(p[0] & 0x0f).max(5) * 4;
            if p.len() >= ihl + 12 {
                let t = &mut p[ihl..];
                let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]).wrapping_add(PEER_ISN);
                let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]).wrapping_add(w.iss);
                t[4..8].copy_from_slice(&seq.to_be_bytes());
                t[8..12].copy_from_slice(&ack.to_be_bytes());
            }
        }
        if ctl & 1 != 0 {
            fixup(&mut p);
        }
        w.dev.rx.push_back(p);
        w.now += Duration::from_millis(STEPS_MS[usize::from((ctl >> 2) & 7)]);
        w.s.poll(w.now, &mut w.dev);
        w.dev.tx.clear();
        match ctl >> 5 {
            0 => {}
            1 => {
                while let Ok(c) = w.s.tcp_accept(w.listener) {
                    let _ = w.s.tcp_recv(c, &mut buf);
                }
                if let Some(c) = w.conn {
                    while let Ok(n) = w.s.tcp_recv(c, &mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                }
            }
            2 => {
                if let Some(c) = w.conn {
                    let _ = w.s.tcp_send(c, &buf[..len.min(buf.len())]);
                }
            }
            3 => {
                if let Some(c) = w.conn {
                    let _ = w.s.tcp_shutdown(c);
                }
            }
            4 => {
                if let Some(c) = w.conn.take() {
                    w.s.tcp_close(c);
                }
            }
            5 => {
                if let Some(c) = w.conn.take() {
                    w.s.tcp_abort(c);
                }
            }
            _ => {
                while let Ok((n, from)) = w.s.udp_recv_from(w.udp, &mut buf) {
                    let _ = w.s.udp_send_to(w.udp, &buf[..n], from);
                }
            }
        }
        // Run the timers the stack asked for (bounded, as time jumps far ahead).
        for _ in 0..4 {
            match w.s.poll_at() {
                Some(t) if t <= w.now => {
                    w.s.poll(w.now, &mut w.dev);
                    w.dev.tx.clear();
                }
                _ => break,
            }
        }
    }
    // Let every timer run out.
    let end = w.now + Duration::from_secs(4000);
    for _ in 0..64 {
        match w.s.poll_at() {
            Some(t) if t <= end => {
                w.now = w.now.max(t);
                w.s.poll(w.now, &mut w.dev);
                w.dev.tx.clear();
            }
            _ => break,
        }
    }
});
