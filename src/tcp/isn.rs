//! Initial sequence numbers per RFC 6528: ISN = M + F(localip, localport,
//! remoteip, remoteport, secretkey), where M is a 4-microsecond timer and F a
//! keyed PRF (SipHash-2-4 here).

use super::seq::SeqNum;
use crate::time::Instant;
use std::net::SocketAddrV4;

#[derive(Clone, Debug)]
pub struct IsnGenerator {
    key: [u8; 16],
}

impl IsnGenerator {
    /// `key` must be secret and random (drawn from the owner's RNG).
    pub fn new(key: [u8; 16]) -> IsnGenerator {
        IsnGenerator { key }
    }

    pub fn isn(&self, now: Instant, local: SocketAddrV4, remote: SocketAddrV4) -> SeqNum {
        let _ = (now, local, remote, &self.key);
        todo!("tcp::isn::IsnGenerator::isn")
    }
}
