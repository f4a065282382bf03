//! IPv4 fragment reassembly (RFC 791, RFC 815 hole tracking) with limits on
//! bytes held, datagrams in progress and time. Overlapping fragments that
//! disagree are treated as an attack (RFC 5722 spirit): the datagram is dropped.

use crate::time::{Duration, Instant};

#[derive(Debug)]
pub struct Reassembler {
    max_bytes: usize,
    max_datagrams: usize,
    timeout: Duration,
}

impl Reassembler {
    pub fn new(max_bytes: usize, max_datagrams: usize, timeout: Duration) -> Reassembler {
        Reassembler {
            max_bytes,
            max_datagrams,
            timeout,
        }
    }
}
