//! Wire formats: parsing and emitting IPv4, ICMPv4, UDP and TCP headers on top
//! of etherparse, with checksums and TCP options. No state, no I/O.

pub mod checksum;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;

use std::fmt;

/// Why a packet could not be parsed. Each variant maps to a drop counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its fixed header or than a length field claims.
    Truncated,
    /// A length field is inconsistent (header length < minimum, total length < header).
    BadLength,
    /// IP version is not 4.
    BadVersion,
    /// A checksum did not verify.
    BadChecksum,
    /// A TCP/IP option is malformed (bad length, runs past the header).
    BadOption,
    /// Something else is structurally invalid (reserved values, impossible flag combos).
    Malformed,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            WireError::Truncated => "truncated packet",
            WireError::BadLength => "inconsistent length field",
            WireError::BadVersion => "not IPv4",
            WireError::BadChecksum => "bad checksum",
            WireError::BadOption => "malformed option",
            WireError::Malformed => "malformed header",
        };
        f.write_str(s)
    }
}

impl std::error::Error for WireError {}
