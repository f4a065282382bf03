//! Internet checksum (RFC 1071) helpers, including the IPv4 pseudo-header.

use std::net::Ipv4Addr;

/// One's-complement sum of `data` folded to 16 bits, added to `initial`
/// (not yet complemented). Use with [`finish`].
pub fn sum(initial: u32, data: &[u8]) -> u32 {
    let _ = (initial, data);
    todo!()
}

/// Fold and complement a running sum into the checksum field value.
pub fn finish(sum: u32) -> u16 {
    let _ = sum;
    todo!()
}

/// Running sum of the IPv4 pseudo-header for a transport segment of `len` bytes.
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: usize) -> u32 {
    let _ = (src, dst, protocol, len);
    todo!()
}
