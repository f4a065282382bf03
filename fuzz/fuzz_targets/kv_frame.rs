//! KV node wire input: the stream framer (length prefixes), the frame header
//! (`kv::msg::Frame::decode`) and the vector clock carried in it
//! (`kv::clock::VectorClock::decode`). What decodes must re-encode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunstack::kv::clock::VectorClock;
use tunstack::kv::msg::Frame;
use tunstack::kv::transport::FrameDecoder;

fn check_frame(bytes: &[u8]) {
    if let Ok(f) = Frame::decode(bytes) {
        let again = Frame::decode(&f.encode()).expect("an encoded frame decodes");
        assert_eq!(again, f);
        check_clock(&f.vclock);
    }
}

fn check_clock(bytes: &[u8]) {
    if let Ok((vc, used)) = VectorClock::decode(bytes) {
        assert!(used <= bytes.len());
        let enc = vc.to_bytes();
        let (back, n) = VectorClock::decode(&enc).expect("an encoded clock decodes");
        assert_eq!(n, enc.len());
        assert_eq!(back, vc);
    }
}

fuzz_target!(|data: &[u8]| {
    check_frame(data);
    check_clock(data);
    // The same bytes as a TCP stream of length-prefixed frames, arriving in two pieces.
    let mut dec = FrameDecoder::new(1 << 16);
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    for piece in [&data[..cut], &data[cut..]] {
        dec.push(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => check_frame(&f),
                Ok(None) => break,
                Err(_) => return, // the link is closed
            }
        }
    }
});
