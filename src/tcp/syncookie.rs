//! SYN cookies (RFC 4987 §3.6), in the Linux scheme: when a listener's
//! queue of half-open connections is full, the stack answers a SYN with a
//! SYN-ACK whose ISS encodes what it must remember, keeps no state, and
//! rebuilds the connection from the ACK that returns the cookie.
//!
//! ```text
//! cookie = H1(tuple) + peer ISN + (count << 24) + (H2(tuple, count, peer ISN, data) mod 2^17) · 2^7 + data
//! ```
//!
//! `H1`, `H2` are SipHash-2-4 under two keys the owner hands in (drawn from
//! its seeded RNG, like the ISN generator's: nothing here draws randomness
//! or reads a clock). `count` advances every 64 s of `now`; a cookie is
//! accepted while `count` has advanced by at most one since it was made
//! (64–128 s). Linux adds `data` to H2 and checks only its range; here H2
//! covers `data` too, so the low 24 bits are 17 bits of keyed check and 7
//! of `data`, which carries:
//!
//! - the peer's MSS, rounded down to one of [`MSS_TABLE`] (2 bits);
//! - whether the peer offered SACK (1 bit);
//! - the peer's window-scale shift, or none (4 bits).
//!
//! Timestamps are not encoded, so a cookie connection runs without them
//! (Linux hides WS/SACK in the timestamp instead; we have room for them in
//! the cookie itself at the cost of 5 bits of the check).

use super::conn::Tcb;
use super::seq::SeqNum;
use super::TcpConfig;
use crate::time::Instant;
use crate::wire::tcp::{TcpOptions, TcpRepr};
use siphasher::sip::SipHasher24;
use std::hash::Hasher;
use std::net::SocketAddrV4;

/// MSS values a cookie can carry (the peer's MSS rounded down; below 536,
/// 536, which every host must accept, RFC 9293 §3.7.1).
pub const MSS_TABLE: [u16; 4] = [536, 1300, 1460, 8960];
/// Seconds per tick of the cookie's time counter.
pub const COUNTER_PERIOD_SECS: u64 = 64;
/// Ticks a cookie stays valid beyond the one it was made in.
pub const MAX_AGE_TICKS: u32 = 1;
const COOKIE_BITS: u32 = 24;
const COOKIE_MASK: u32 = (1 << COOKIE_BITS) - 1;
/// `data` values in use (7 bits); anything larger fails validation.
const DATA_LIMIT: u32 = 1 << 7;

/// What a cookie remembers of the SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieData {
    /// The peer's MSS, rounded down to an entry of [`MSS_TABLE`].
    pub mss: u16,
    /// The peer's window-scale shift (0–14), if it offered scaling.
    pub wscale: Option<u8>,
    /// The peer offered SACK.
    pub sack: bool,
}

impl CookieData {
    /// What can be encoded of a SYN's options (timestamps are dropped).
    pub fn from_syn(opts: &TcpOptions) -> CookieData {
        let mss = opts.mss.unwrap_or(536);
        let idx = MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0);
        CookieData {
            mss: MSS_TABLE[idx],
            wscale: opts.window_scale.map(|w| w.min(14)),
            sack: opts.sack_permitted,
        }
    }

    fn pack(self) -> u32 {
        let idx = MSS_TABLE.iter().position(|&m| m == self.mss).unwrap_or(0) as u32;
        let ws = self.wscale.map_or(0, |w| w.min(14) as u32 + 1);
        idx | (self.sack as u32) << 2 | ws << 3
    }

    fn unpack(v: u32) -> Option<CookieData> {
        let ws = (v >> 3) & 0xf;
        Some(CookieData {
            mss: MSS_TABLE[(v & 3) as usize],
            sack: v & 4 != 0,
            wscale: (ws > 0).then(|| (ws - 1) as u8),
        })
    }
}

/// The keyed cookie function of one stack.
#[derive(Clone, Debug)]
pub struct SynCookies {
    k1: [u8; 16],
    k2: [u8; 16],
}

impl SynCookies {
    /// `k1`, `k2` must be secret and random (from the owner's RNG).
    pub fn new(k1: [u8; 16], k2: [u8; 16]) -> SynCookies {
        SynCookies { k1, k2 }
    }

    /// Two independent keys derived from one secret `key` (SipHash of a label).
    pub fn derive(key: &[u8; 16]) -> SynCookies {
        let sub = |label: &[u8]| {
            let mut k = [0u8; 16];
            for (i, half) in k.chunks_mut(8).enumerate() {
                let mut h = SipHasher24::new_with_key(key);
                h.write(label);
                h.write_u8(i as u8);
                half.copy_from_slice(&h.finish().to_le_bytes());
            }
            k
        };
        SynCookies::new(sub(b"syncookie-1"), sub(b"syncookie-2"))
    }

    fn counter(now: Instant) -> u32 {
        (now.total_micros() / 1_000_000 / COUNTER_PERIOD_SECS) as u32
    }

    fn hash(
        key: &[u8; 16],
        local: SocketAddrV4,
        remote: SocketAddrV4,
        count: u32,
        peer_isn: SeqNum,
        data: u32,
    ) -> u32 {
        let mut h = SipHasher24::new_with_key(key);
        h.write(&peer_isn.0.to_be_bytes());
        h.write(&data.to_be_bytes());
        h.write(&local.ip().octets());
        h.write(&local.port().to_be_bytes());
        h.write(&remote.ip().octets());
        h.write(&remote.port().to_be_bytes());
        h.write(&count.to_be_bytes());
        h.finish() as u32
    }

    /// The ISS for our SYN-ACK to a SYN from `remote` with sequence number
    /// `peer_isn`, carrying `data`.
    pub fn encode(
        &self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        peer_isn: SeqNum,
        data: CookieData,
    ) -> SeqNum {
        let count = Self::counter(now);
        let h1 = Self::hash(&self.k1, local, remote, 0, SeqNum(0), 0);
        let low = self.low_bits(local, remote, count, peer_isn, data.pack());
        SeqNum(
            h1.wrapping_add(peer_isn.0)
                .wrapping_add(count << COOKIE_BITS)
                .wrapping_add(low),
        )
    }

    /// Check the cookie an ACK returns: `peer_isn` is SEG.SEQ − 1 and
    /// `cookie` SEG.ACK − 1. `None` if it was not made by us for this tuple
    /// and ISN, or is older than [`MAX_AGE_TICKS`] ticks.
    pub fn decode(
        &self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        peer_isn: SeqNum,
        cookie: SeqNum,
    ) -> Option<CookieData> {
        let count = Self::counter(now);
        let h1 = Self::hash(&self.k1, local, remote, 0, SeqNum(0), 0);
        let c = cookie.0.wrapping_sub(h1).wrapping_sub(peer_isn.0);
        let made = c >> COOKIE_BITS;
        let age = count.wrapping_sub(made) & (u32::MAX >> COOKIE_BITS);
        if age > MAX_AGE_TICKS {
            return None;
        }
        let data = c & (DATA_LIMIT - 1);
        let low = self.low_bits(local, remote, count.wrapping_sub(age), peer_isn, data);
        if c & COOKIE_MASK != low {
            return None;
        }
        CookieData::unpack(data)
    }

    /// The cookie's low 24 bits: a 17-bit keyed check over (tuple, count,
    /// peer ISN, data) above the 7 data bits, so changing any of them (or
    /// the cookie) fails validation but for a 2^-17 chance.
    fn low_bits(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        count: u32,
        peer_isn: SeqNum,
        data: u32,
    ) -> u32 {
        let h2 = Self::hash(&self.k2, local, remote, count, peer_isn, data);
        ((h2 << 7) | data) & COOKIE_MASK
    }
}

/// The stateless SYN-ACK for `syn`: `<SEQ=cookie><ACK=SYN.SEQ+1><CTL=SYN,ACK>`
/// with our MSS, and window scale / SACK-permitted only where the cookie
/// records the peer's offer (what the TCB rebuilt from it will use).
///
/// Its window is one segment ([`first_flight_window`]), not the receive
/// buffer: the cookie can be checked only on a segment whose SEQ is the
/// client's ISN + 1, so everything the client sends before the stack's
/// first ACK (its handshake ACK, its first data, their retransmissions and
/// tail-loss probes) must start there. With a wider window a client sends
/// up to its initial cwnd of segments at once; if the head of that flight
/// is lost (a full device queue) or dropped (a full accept queue), the
/// rest cannot be validated, and a stateless listener can only reset it.
pub fn syn_ack(
    config: &TcpConfig,
    syn: &TcpRepr,
    cookie: SeqNum,
    data: CookieData,
) -> TcpRepr<'static> {
    let ws = data.wscale.filter(|_| config.window_scaling);
    TcpRepr {
        src_port: syn.dst_port,
        dst_port: syn.src_port,
        seq: cookie,
        ack: Some(syn.seq + 1),
        syn: true,
        window: first_flight_window(config, syn.options.mss),
        options: TcpOptions {
            mss: Some(config.mss),
            window_scale: ws.map(|_| config.our_wscale()),
            sack_permitted: data.sack && config.sack,
            ..TcpOptions::default()
        },
        ..TcpRepr::default()
    }
}

/// The window of a cookie SYN-ACK: one segment of at most 536 bytes (the
/// default MSS, RFC 9293 §3.7.1), less if either side's MSS is smaller,
/// so the client's first flight is a single segment at SEQ = ISN + 1.
///
/// Why not a full MSS: a Linux sender bounds its segments to half the
/// largest window the peer has offered once that exceeds 536 bytes
/// (`tcp_bound_to_half_wnd`), so a 1460-byte window came back as two
/// 730-byte segments; when the device queue dropped the handshake ACK and
/// the first of them, the second (SEQ = ISN + 731) could not be validated
/// and was reset, killing the client (seen in `tests/syn_flood.rs`, about
/// one run in ten on a loaded machine). The rebuilt connection's first
/// ACK opens the full window; the cost is one round trip of 536 bytes,
/// paid only while the listener is answering with cookies.
pub fn first_flight_window(config: &TcpConfig, syn_mss: Option<u16>) -> u16 {
    const ONE_SEGMENT: u16 = 536;
    ONE_SEGMENT
        .min(config.mss)
        .min(syn_mss.unwrap_or(ONE_SEGMENT).max(1))
        .min(config.recv_buffer.min(65535) as u16)
}

/// Rebuild the connection from an ACK that returned a valid cookie: a TCB
/// as if it had answered a SYN with sequence number `peer_isn` carrying
/// `data`'s options with the cookie (SEG.ACK − 1) as ISS, then taken `ack`
/// (which may carry data). `peer_isn` is SEG.SEQ − 1 for the handshake's
/// ACK; for a later segment of the client's first flight (its SEQ beyond
/// ISN + 1, when the stack had to drop the first ones) it is the ISN the
/// stack remembered, and that segment's data waits out of order for the
/// retransmission of what was dropped. The result is ESTABLISHED. Its first
/// RTT sample is 0 (the SYN-ACK's send time is not kept), which the next
/// samples correct; the RTO floor bounds it meanwhile.
pub fn accept_cookie(
    config: &TcpConfig,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    peer_isn: SeqNum,
    ack: &TcpRepr,
    data: CookieData,
    now: Instant,
) -> Option<Tcb> {
    let cookie = ack.ack? - 1;
    let syn = TcpRepr {
        src_port: remote.port(),
        dst_port: local.port(),
        seq: peer_isn,
        syn: true,
        window: ack.window,
        options: TcpOptions {
            mss: Some(data.mss),
            window_scale: data.wscale,
            sack_permitted: data.sack,
            ..TcpOptions::default()
        },
        ..TcpRepr::default()
    };
    let mut tcb = Tcb::accept(config, local, remote, &syn, cookie, now);
    // That SYN-ACK already went out (statelessly): emit and drop its copy.
    while tcb.poll_transmit(now).is_some() {}
    tcb.process(now, ack);
    tcb.announce_window();
    Some(tcb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::State;
    use crate::time::Duration;

    const LOCAL: &str = "10.0.0.1:80";
    const REMOTE: &str = "10.0.0.2:40000";

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn jar() -> SynCookies {
        SynCookies::new(*b"0123456789abcdef", *b"fedcba9876543210")
    }

    fn data() -> CookieData {
        CookieData {
            mss: 1460,
            wscale: Some(7),
            sack: true,
        }
    }

    #[test]
    fn cookie_round_trips_mss_sack_and_window_scale() {
        let j = jar();
        let now = Instant::from_secs(1000);
        for d in [
            data(),
            CookieData {
                mss: 536,
                wscale: None,
                sack: false,
            },
            CookieData {
                mss: 8960,
                wscale: Some(14),
                sack: false,
            },
            CookieData {
                mss: 1300,
                wscale: Some(0),
                sack: true,
            },
        ] {
            let c = j.encode(now, a(LOCAL), a(REMOTE), SeqNum(777), d);
            assert_eq!(j.decode(now, a(LOCAL), a(REMOTE), SeqNum(777), c), Some(d));
        }
    }

    #[test]
    fn cookie_mss_rounds_down_to_the_table() {
        let opts = |mss| TcpOptions {
            mss,
            ..TcpOptions::default()
        };
        assert_eq!(CookieData::from_syn(&opts(Some(1460))).mss, 1460);
        assert_eq!(CookieData::from_syn(&opts(Some(1459))).mss, 1300);
        assert_eq!(CookieData::from_syn(&opts(Some(64960))).mss, 8960);
        assert_eq!(CookieData::from_syn(&opts(None)).mss, 536);
        assert_eq!(CookieData::from_syn(&opts(Some(100))).mss, 536);
    }

    #[test]
    fn cookie_valid_for_one_further_tick_then_expires() {
        let j = jar();
        let t0 = Instant::from_secs(64 * 10 + 63); // end of tick 10
        let c = j.encode(t0, a(LOCAL), a(REMOTE), SeqNum(1), data());
        let at = |s: u64| j.decode(Instant::from_secs(s), a(LOCAL), a(REMOTE), SeqNum(1), c);
        assert_eq!(at(64 * 11 + 63), Some(data()), "one tick later: valid");
        assert_eq!(at(64 * 12), None, "two ticks later: expired");
        assert_eq!(at(64 * 10 - 1), None, "from the future: refused");
    }

    #[test]
    fn cookie_is_bound_to_tuple_isn_and_key() {
        let j = jar();
        let now = Instant::from_secs(5);
        let c = j.encode(now, a(LOCAL), a(REMOTE), SeqNum(9), data());
        assert!(j
            .decode(now, a(LOCAL), a("10.0.0.2:40001"), SeqNum(9), c)
            .is_none());
        assert!(j
            .decode(now, a("10.0.0.1:81"), a(REMOTE), SeqNum(9), c)
            .is_none());
        assert!(j.decode(now, a(LOCAL), a(REMOTE), SeqNum(10), c).is_none());
        let other = SynCookies::new(*b"0123456789abcdeF", *b"fedcba9876543210");
        assert!(other
            .decode(now, a(LOCAL), a(REMOTE), SeqNum(9), c)
            .is_none());
    }

    #[test]
    fn forged_cookies_are_rejected() {
        // Guessing: of 100,000 random values, almost none pass (count must
        // be one of 2 of 256 and the 17-bit check must match: ~1 in 2^24).
        let j = jar();
        let now = Instant::from_secs(5);
        let mut rng = crate::rng::Rng::new(42);
        let passed = (0..100_000)
            .filter(|_| {
                let c = SeqNum(rng.next_u32());
                j.decode(now, a(LOCAL), a(REMOTE), SeqNum(9), c).is_some()
            })
            .count();
        assert!(passed <= 3, "{passed} forged cookies accepted");
    }

    fn cfg() -> TcpConfig {
        TcpConfig {
            mss: 1460,
            sack: true,
            ..TcpConfig::default()
        }
    }

    #[test]
    fn cookie_syn_ack_offers_what_the_cookie_carries() {
        let syn = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq: SeqNum(500),
            syn: true,
            options: TcpOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                timestamps: Some((1, 0)),
                ..TcpOptions::default()
            },
            ..TcpRepr::default()
        };
        let d = CookieData::from_syn(&syn.options);
        let sa = syn_ack(&cfg(), &syn, SeqNum(9999), d);
        assert!(sa.syn && sa.ack == Some(SeqNum(501)) && sa.seq == SeqNum(9999));
        assert_eq!(sa.options.mss, Some(1460));
        assert_eq!(sa.options.window_scale, Some(cfg().our_wscale()));
        assert!(sa.options.sack_permitted);
        assert_eq!(sa.options.timestamps, None, "timestamps are not encoded");
        assert_eq!(
            sa.window, 536,
            "one segment a Linux sender does not halve: the first flight starts at ISN + 1"
        );
        assert_eq!((sa.src_port, sa.dst_port), (80, 40000));
    }

    #[test]
    fn cookie_syn_ack_window_is_at_most_the_smaller_mss() {
        let syn = |mss| TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq: SeqNum(500),
            syn: true,
            options: TcpOptions {
                mss,
                ..TcpOptions::default()
            },
            ..TcpRepr::default()
        };
        let win = |c: &TcpConfig, mss| {
            let s = syn(mss);
            syn_ack(c, &s, SeqNum(1), CookieData::from_syn(&s.options)).window
        };
        assert_eq!(win(&cfg(), Some(8960)), 536);
        assert_eq!(win(&cfg(), None), 536);
        // A peer announcing less than 536 gets its own MSS (the cookie
        // still records 536, the table's floor).
        assert_eq!(win(&cfg(), Some(400)), 400);
        let small = TcpConfig { mss: 300, ..cfg() };
        assert_eq!(win(&small, Some(1460)), 300);
    }

    #[test]
    fn connection_rebuilt_from_cookie_ack_is_established_with_encoded_options() {
        let (l, r) = (a(LOCAL), a(REMOTE));
        let now = Instant::from_secs(100);
        let ack = TcpRepr {
            src_port: r.port(),
            dst_port: l.port(),
            seq: SeqNum(501),
            ack: Some(SeqNum(10_000)),
            window: 1000, // scaled by 2^7: 128,000 bytes
            payload: b"hello",
            ..TcpRepr::default()
        };
        let mut tcb = accept_cookie(&cfg(), l, r, SeqNum(500), &ack, data(), now).unwrap();
        assert_eq!(tcb.state(), State::Established);
        let st = tcb.stats();
        assert_eq!(st.mss, 1460);
        assert_eq!(st.snd_wscale, 7);
        assert_eq!(
            st.rcv_wscale,
            cfg().our_wscale(),
            "matches the SYN-ACK's offer"
        );
        assert_eq!(st.snd_wnd, 128_000);
        let mut buf = [0u8; 16];
        assert_eq!(tcb.recv(&mut buf), Ok(5), "data on the ACK is delivered");
        assert_eq!(&buf[..5], b"hello");
        // Our next segment continues from the cookie: SEQ = cookie + 1.
        tcb.send(b"x").unwrap();
        let seg = tcb.poll_transmit(now + Duration::from_millis(1)).unwrap();
        assert_eq!(seg.seq, SeqNum(10_000));
        assert_eq!(seg.ack, Some(SeqNum(506)));
    }
}
