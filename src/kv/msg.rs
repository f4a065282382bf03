//! The frame one KV node sends another (the payload of `Output::Send`; the transport adds its own
//! length prefix).
//!
//! ```text
//! 0      2        3      4           12          20            28      30         30+n
//! | "KV" | version | kind | sender u64 | lamport u64 | event u64 | n u16 | vclock[n] | body … |
//! ```
//! All integers big-endian. `version` is [`VERSION`]; `kind` is a [`FrameKind`]; `event` is the
//! sender's trace event number of this send (so the receiver's trace can name the message);
//! `vclock` is the sender's vector clock in `kv::clock::VectorClock::encode` form; the body is a
//! raft `Message` in protobuf for [`FrameKind::Raft`] and empty for [`FrameKind::Heartbeat`].
//! Decoding never panics: a short, foreign, newer-version or unknown-kind frame is an error the
//! node counts and drops.

use std::fmt;

pub const MAGIC: [u8; 2] = *b"KV";
pub const VERSION: u8 = 1;
/// Bytes before the vector clock.
pub const HEADER_LEN: usize = 30;
/// Largest vector clock encoding accepted (a clock with thousands of nodes is not ours).
pub const MAX_VCLOCK_LEN: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A raft-rs `Message`, protobuf-encoded.
    Raft = 1,
    /// "I am alive": sent to every peer each tick, for the phi-accrual failure detector.
    Heartbeat = 2,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        match b {
            1 => Some(FrameKind::Raft),
            2 => Some(FrameKind::Heartbeat),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub sender: u64,
    pub lamport: u64,
    pub event: u64,
    /// Encoded vector clock.
    pub vclock: Vec<u8>,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    Short,
    BadMagic,
    Version(u8),
    Kind(u8),
    VclockTooLong(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Short => write!(f, "frame shorter than its header"),
            FrameError::BadMagic => write!(f, "not a KV frame (bad magic)"),
            FrameError::Version(v) => write!(f, "unsupported frame version {v}"),
            FrameError::Kind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::VclockTooLong(n) => write!(f, "vector clock of {n} bytes"),
        }
    }
}

impl std::error::Error for FrameError {}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_be_bytes(b)
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let n = self.vclock.len().min(u16::MAX as usize);
        let mut out = Vec::with_capacity(HEADER_LEN + n + self.body.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.sender.to_be_bytes());
        out.extend_from_slice(&self.lamport.to_be_bytes());
        out.extend_from_slice(&self.event.to_be_bytes());
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&self.vclock[..n]);
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Frame, FrameError> {
        if buf.len() < HEADER_LEN {
            return Err(FrameError::Short);
        }
        if buf[0..2] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        if buf[2] != VERSION {
            return Err(FrameError::Version(buf[2]));
        }
        let kind = FrameKind::from_u8(buf[3]).ok_or(FrameError::Kind(buf[3]))?;
        let sender = u64_at(buf, 4);
        let lamport = u64_at(buf, 12);
        let event = u64_at(buf, 20);
        let n = u16::from_be_bytes([buf[28], buf[29]]) as usize;
        if n > MAX_VCLOCK_LEN {
            return Err(FrameError::VclockTooLong(n));
        }
        let rest = &buf[HEADER_LEN..];
        if rest.len() < n {
            return Err(FrameError::Short);
        }
        Ok(Frame {
            kind,
            sender,
            lamport,
            event,
            vclock: rest[..n].to_vec(),
            body: rest[n..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn sample() -> Frame {
        Frame {
            kind: FrameKind::Raft,
            sender: 3,
            lamport: 42,
            event: 7,
            vclock: vec![1, 2, 3, 4],
            body: b"raft bytes".to_vec(),
        }
    }

    #[test]
    fn frame_round_trips() {
        let f = sample();
        assert_eq!(Frame::decode(&f.encode()), Ok(f));
        let hb = Frame {
            kind: FrameKind::Heartbeat,
            body: vec![],
            vclock: vec![],
            ..sample()
        };
        assert_eq!(Frame::decode(&hb.encode()), Ok(hb));
    }

    #[test]
    fn truncated_foreign_and_newer_frames_are_errors() {
        let enc = sample().encode();
        for cut in 0..HEADER_LEN + 4 {
            assert!(Frame::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = enc.clone();
        bad[0] = b'X';
        assert_eq!(Frame::decode(&bad), Err(FrameError::BadMagic));
        let mut newer = enc.clone();
        newer[2] = VERSION + 1;
        assert_eq!(Frame::decode(&newer), Err(FrameError::Version(VERSION + 1)));
        let mut kind = enc;
        kind[3] = 99;
        assert_eq!(Frame::decode(&kind), Err(FrameError::Kind(99)));
    }

    #[test]
    fn decoding_random_bytes_never_panics() {
        let mut rng = Rng::new(5);
        let base = sample().encode();
        for i in 0..20_000 {
            let len = rng.gen_range(0, 80) as usize;
            let mut buf = vec![0u8; len];
            rng.fill(&mut buf);
            if i % 2 == 0 && len >= 4 {
                // Mostly-valid prefixes reach the deeper checks.
                buf[..4].copy_from_slice(&base[..4]);
            }
            let _ = Frame::decode(&buf);
        }
    }
}
