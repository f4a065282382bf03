//! TCP segment and option parsing (`wire::tcp`), and the round trip: for every
//! segment that parses, emitting it and parsing again gives the same segment
//! (SACK blocks that do not fit beside the other options are left out by
//! `emit`, by design). A second half builds a segment directly from the
//! bytes and checks parse(emit(x)) == x.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use tunstack::tcp::seq::SeqNum;
use tunstack::wire::tcp::{options_len, TcpOptions, TcpRepr, MAX_WINDOW_SCALE};

const SRC: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

fn round_trip(x: &TcpRepr) {
    let mut buf = vec![0u8; x.buffer_len()];
    let n = x.emit(SRC, DST, &mut buf);
    assert_eq!(n, buf.len());
    assert!(x.header_len() <= 60 && x.header_len() % 4 == 0);
    // The header alone (for a payload sent from where it lies) is the
    // whole segment's first bytes, checksum included.
    let mut head = vec![0u8; x.header_len()];
    assert_eq!(x.emit_header(SRC, DST, &mut head, true), head.len());
    assert_eq!(head[..], buf[..head.len()]);
    let y = TcpRepr::parse(SRC, DST, &buf, true).expect("an emitted segment parses");
    // What emit keeps of the SACK blocks: the first ones that fit.
    let mut want = *x;
    let kept = y.options.sack_blocks.iter().flatten().count();
    let had = x.options.sack_blocks.iter().flatten().count();
    assert!(kept <= had);
    let mut blocks = x.options.sack_blocks.iter().flatten().copied();
    want.options.sack_blocks = [None; 4];
    for slot in want.options.sack_blocks.iter_mut().take(kept) {
        *slot = blocks.next();
    }
    assert_eq!(y, want);
    assert_eq!(options_len(&y.options), y.header_len() - 20);
}

fn u32_at(d: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]])
}

fuzz_target!(|data: &[u8]| {
    // 1. Raw bytes as a segment, with and without checksum verification.
    let _ = TcpRepr::parse(SRC, DST, data, true);
    if let Ok(x) = TcpRepr::parse(SRC, DST, data, false) {
        assert!(x.options.window_scale.is_none_or(|w| w <= MAX_WINDOW_SCALE));
        round_trip(&x);
    }
    // 2. A segment built field by field from the bytes.
    if data.len() < 48 {
        return;
    }
    let f = data[0];
    let g = data[1];
    let mut opts = TcpOptions {
        mss: (g & 1 != 0).then(|| u16::from_be_bytes([data[2], data[3]])),
        window_scale: (g & 2 != 0).then(|| data[4] % (MAX_WINDOW_SCALE + 1)),
        sack_permitted: g & 4 != 0,
        sack_blocks: [None; 4],
        timestamps: (g & 8 != 0).then(|| (u32_at(data, 5), u32_at(data, 9))),
    };
    let nblocks = usize::from(g >> 4) % 5;
    for (i, slot) in opts.sack_blocks.iter_mut().take(nblocks).enumerate() {
        *slot = Some((
            SeqNum(u32_at(data, 13 + i * 4)),
            SeqNum(u32_at(data, 17 + i * 4)),
        ));
    }
    let x = TcpRepr {
        src_port: u16::from_be_bytes([data[33], data[34]]),
        dst_port: u16::from_be_bytes([data[35], data[36]]),
        seq: SeqNum(u32_at(data, 37)),
        ack: (f & 0x10 != 0).then(|| SeqNum(u32_at(data, 41))),
        fin: f & 0x01 != 0,
        syn: f & 0x02 != 0,
        rst: f & 0x04 != 0,
        psh: f & 0x08 != 0,
        urg: f & 0x20 != 0,
        ece: f & 0x40 != 0,
        cwr: f & 0x80 != 0,
        window: u16::from_be_bytes([data[45], data[46]]),
        urgent_ptr: u16::from(data[47]),
        options: opts,
        payload: &data[48..],
        backing: None,
        packet: None,
    };
    round_trip(&x);
});
