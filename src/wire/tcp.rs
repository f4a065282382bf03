//! TCP segment representation, options (MSS, window scale, SACK-permitted,
//! SACK blocks, timestamps), parsing with checksum verification, and emission.

use super::checksum;
use super::ipv4::PROTO_TCP;
use super::WireError;
use crate::tcp::seq::SeqNum;
use std::net::Ipv4Addr;

/// Fixed TCP header length without options.
pub const HEADER_LEN: usize = 20;
/// Maximum TCP header length (with 40 bytes of options).
pub const MAX_HEADER_LEN: usize = 60;

/// The TCP header length of the TCP/IPv4 packet `p` whose IP header is
/// `ihl` long, if it is at least 20 and the header fits (see
/// [`super::ipv4::peek_header`]).
pub fn peek_header_len(p: &[u8], ihl: usize) -> Option<usize> {
    let doff = usize::from(*p.get(ihl + 12)? >> 4) * 4;
    (doff >= HEADER_LEN && p.len() >= ihl + doff).then_some(doff)
}

/// Parsed TCP options. Unknown options are skipped (and counted by the caller
/// if it cares); malformed ones make the whole segment invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpOptions {
    /// Maximum segment size (kind 2), only meaningful on SYN.
    pub mss: Option<u16>,
    /// Window scale shift (kind 3), only meaningful on SYN. Values > 14 are
    /// clamped to 14 on parse (RFC 7323 §2.3).
    pub window_scale: Option<u8>,
    /// SACK permitted (kind 4), only meaningful on SYN.
    pub sack_permitted: bool,
    /// Up to 4 SACK blocks (kind 5): (left edge, right edge), right exclusive.
    /// Unused entries are `None`. Hook for RFC 2018; full use is issue 6.
    pub sack_blocks: [Option<(SeqNum, SeqNum)>; 4],
    /// Timestamps (kind 8): (TSval, TSecr). Hook for RFC 7323; full use is issue 6.
    pub timestamps: Option<(u32, u32)>,
}

/// A TCP segment as the protocol logic sees it. `ack` is `Some` iff the ACK
/// flag is set. `window` is the raw 16-bit field (unscaled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNum,
    pub ack: Option<SeqNum>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub urg: bool,
    pub ece: bool,
    pub cwr: bool,
    pub window: u16,
    pub urgent_ptr: u16,
    pub options: TcpOptions,
    pub payload: &'a [u8],
    /// The storage `payload` lies in, when it may be lent to a device
    /// write instead of copied ([`crate::lend`]): a send buffer's.
    pub backing: Option<&'a crate::lend::Backing>,
    /// The received packet `payload` lies in, when a receive buffer may
    /// keep it rather than copy the payload out ([`crate::lend::PacketBuf`]).
    pub packet: Option<&'a crate::lend::PacketBuf>,
}

impl<'a> TcpRepr<'a> {
    /// Sequence space consumed: payload length plus one for SYN and one for FIN.
    pub fn segment_len(&self) -> usize {
        self.payload.len() + self.syn as usize + self.fin as usize
    }

    /// Length of the header this repr will emit (20 + padded options).
    pub fn header_len(&self) -> usize {
        HEADER_LEN + options_len(&self.options)
    }

    /// Total bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Parse a TCP segment (the IPv4 payload). With `verify_checksum`, the
    /// pseudo-header checksum over `src`/`dst` must verify.
    ///
    /// Shorter than 20 bytes or than the data offset → `Truncated`; data
    /// offset < 5 → `BadLength`; checksum → `BadChecksum`; a malformed option
    /// (length < 2, running past the header, or a wrong length for a known
    /// kind) → `BadOption`.
    pub fn parse(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        segment: &'a [u8],
        verify_checksum: bool,
    ) -> Result<TcpRepr<'a>, WireError> {
        if segment.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = usize::from(segment[12] >> 4) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if header_len > segment.len() {
            return Err(WireError::Truncated);
        }
        if verify_checksum {
            let s = checksum::sum(
                checksum::pseudo_header(src, dst, PROTO_TCP, segment.len()),
                segment,
            );
            if checksum::finish(s) != 0 {
                return Err(WireError::BadChecksum);
            }
        }
        let options = parse_options(&segment[HEADER_LEN..header_len])?;
        let flags = segment[13];
        let be32 = |i: usize| {
            u32::from_be_bytes([segment[i], segment[i + 1], segment[i + 2], segment[i + 3]])
        };
        let be16 = |i: usize| u16::from_be_bytes([segment[i], segment[i + 1]]);
        Ok(TcpRepr {
            src_port: be16(0),
            dst_port: be16(2),
            seq: SeqNum(be32(4)),
            ack: (flags & FLAG_ACK != 0).then(|| SeqNum(be32(8))),
            syn: flags & FLAG_SYN != 0,
            fin: flags & FLAG_FIN != 0,
            rst: flags & FLAG_RST != 0,
            psh: flags & FLAG_PSH != 0,
            urg: flags & FLAG_URG != 0,
            ece: flags & FLAG_ECE != 0,
            cwr: flags & FLAG_CWR != 0,
            window: be16(14),
            urgent_ptr: be16(18),
            options,
            payload: &segment[header_len..],
            backing: None,
            packet: None,
        })
    }

    /// Write header, options and payload into `buf[..self.buffer_len()]`,
    /// filling in the checksum over the pseudo-header. Panics if `buf` is too short.
    pub fn emit(&self, src: Ipv4Addr, dst: Ipv4Addr, buf: &mut [u8]) -> usize {
        self.emit_with(src, dst, buf, true)
    }

    /// [`TcpRepr::emit`]; with `full_checksum` false the checksum field
    /// holds only the folded pseudo-header sum, for a device that completes
    /// it (a vnet header with `NEEDS_CSUM`, csum_start at the TCP header,
    /// csum_offset 16), and the payload is copied without being summed.
    pub fn emit_with(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        buf: &mut [u8],
        full_checksum: bool,
    ) -> usize {
        let header_len = self.header_len();
        let len = header_len + self.payload.len();
        let (head, body) = buf[..len].split_at_mut(header_len);
        self.emit_parts(src, dst, head, Some(body), full_checksum);
        len
    }

    /// The header and options alone, into `buf[..self.header_len()]`, with
    /// the checksum over them and the payload (summed where it lies, not
    /// copied), or with `full_checksum` false the pseudo-header sum alone
    /// (see [`TcpRepr::emit_with`]): for a device that sends the payload
    /// from where it lies ([`crate::lend`]). Returns the header length.
    pub fn emit_header(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        buf: &mut [u8],
        full_checksum: bool,
    ) -> usize {
        let header_len = self.header_len();
        self.emit_parts(src, dst, &mut buf[..header_len], None, full_checksum);
        header_len
    }

    /// The header into `head` and, given `body`, the payload copied into
    /// it; the checksum as [`TcpRepr::emit_with`] says.
    fn emit_parts(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        head: &mut [u8],
        body: Option<&mut [u8]>,
        full_checksum: bool,
    ) {
        self.write_header(head);
        let len = head.len() + self.payload.len();
        let pseudo = checksum::pseudo_header(src, dst, PROTO_TCP, len);
        let c = match (full_checksum, body) {
            // One pass over the payload: copied and summed together.
            (true, Some(body)) => checksum::finish(checksum::copy_and_sum(
                checksum::sum(pseudo, head),
                body,
                self.payload,
            )),
            (true, None) => {
                checksum::finish(checksum::sum(checksum::sum(pseudo, head), self.payload))
            }
            (false, Some(body)) => {
                body.copy_from_slice(self.payload);
                pseudo as u16
            }
            (false, None) => pseudo as u16,
        };
        head[16..18].copy_from_slice(&c.to_be_bytes());
    }

    /// Every header field and option into `head` (`header_len()` long),
    /// the checksum field zero.
    fn write_header(&self, head: &mut [u8]) {
        let header_len = head.len();
        head[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        head[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        head[4..8].copy_from_slice(&self.seq.0.to_be_bytes());
        head[8..12].copy_from_slice(&self.ack.map_or(0, |a| a.0).to_be_bytes());
        head[12] = ((header_len / 4) as u8) << 4;
        let mut flags = 0;
        for (set, bit) in [
            (self.fin, FLAG_FIN),
            (self.syn, FLAG_SYN),
            (self.rst, FLAG_RST),
            (self.psh, FLAG_PSH),
            (self.ack.is_some(), FLAG_ACK),
            (self.urg, FLAG_URG),
            (self.ece, FLAG_ECE),
            (self.cwr, FLAG_CWR),
        ] {
            if set {
                flags |= bit;
            }
        }
        head[13] = flags;
        head[14..16].copy_from_slice(&self.window.to_be_bytes());
        head[16] = 0;
        head[17] = 0;
        head[18..20].copy_from_slice(&self.urgent_ptr.to_be_bytes());
        let written = emit_options(&self.options, &mut head[HEADER_LEN..header_len]);
        debug_assert_eq!(written, header_len - HEADER_LEN);
    }
}

const FLAG_FIN: u8 = 0x01;
const FLAG_SYN: u8 = 0x02;
const FLAG_RST: u8 = 0x04;
const FLAG_PSH: u8 = 0x08;
const FLAG_ACK: u8 = 0x10;
const FLAG_URG: u8 = 0x20;
const FLAG_ECE: u8 = 0x40;
const FLAG_CWR: u8 = 0x80;

const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WSCALE: u8 = 3;
const OPT_SACK_PERMITTED: u8 = 4;
const OPT_SACK: u8 = 5;
const OPT_TIMESTAMPS: u8 = 8;

/// Largest window shift allowed (RFC 7323 §2.3).
pub const MAX_WINDOW_SCALE: u8 = 14;
/// Bytes available for options in a TCP header.
const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;

fn parse_options(mut opts: &[u8]) -> Result<TcpOptions, WireError> {
    let mut out = TcpOptions::default();
    while let Some(&kind) = opts.first() {
        match kind {
            OPT_EOL => break,
            OPT_NOP => {
                opts = &opts[1..];
                continue;
            }
            _ => {}
        }
        let len = usize::from(*opts.get(1).ok_or(WireError::BadOption)?);
        if len < 2 || len > opts.len() {
            return Err(WireError::BadOption);
        }
        let body = &opts[2..len];
        let be32 = |i: usize| u32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
        match kind {
            OPT_MSS => {
                if len != 4 {
                    return Err(WireError::BadOption);
                }
                out.mss = Some(u16::from_be_bytes([body[0], body[1]]));
            }
            OPT_WSCALE => {
                if len != 3 {
                    return Err(WireError::BadOption);
                }
                out.window_scale = Some(body[0].min(MAX_WINDOW_SCALE));
            }
            OPT_SACK_PERMITTED => {
                if len != 2 {
                    return Err(WireError::BadOption);
                }
                out.sack_permitted = true;
            }
            OPT_SACK => {
                let n = (len - 2) / 8;
                if (len - 2) % 8 != 0 || n == 0 || n > 4 {
                    return Err(WireError::BadOption);
                }
                out.sack_blocks = [None; 4];
                for (i, slot) in out.sack_blocks.iter_mut().take(n).enumerate() {
                    *slot = Some((SeqNum(be32(i * 8)), SeqNum(be32(i * 8 + 4))));
                }
            }
            OPT_TIMESTAMPS => {
                if len != 10 {
                    return Err(WireError::BadOption);
                }
                out.timestamps = Some((be32(0), be32(4)));
            }
            _ => {} // unknown: skipped by its length
        }
        opts = &opts[len..];
    }
    Ok(out)
}

/// Sizes of the option groups `emit_options` writes, each padded with NOPs
/// to a multiple of 4: (fixed part, number of SACK blocks that fit).
fn option_layout(opts: &TcpOptions) -> (usize, usize) {
    let mut fixed = 0;
    if opts.mss.is_some() {
        fixed += 4;
    }
    if opts.timestamps.is_some() {
        fixed += 12; // [SACK-permitted or NOP NOP] + TS(10)
    } else if opts.sack_permitted {
        fixed += 4; // NOP NOP SACK-permitted
    }
    if opts.window_scale.is_some() {
        fixed += 4; // NOP WS(3)
    }
    let blocks = opts.sack_blocks.iter().flatten().count();
    let room = MAX_OPTIONS_LEN.saturating_sub(fixed + 4) / 8;
    (fixed, blocks.min(room))
}

/// Bytes of options (padded to a multiple of 4) that `emit` writes for `opts`.
/// SACK blocks that do not fit in the 40 option bytes are left out (the
/// first ones, which by RFC 2018 are the most recent, are kept).
pub fn options_len(opts: &TcpOptions) -> usize {
    let (fixed, blocks) = option_layout(opts);
    fixed + if blocks > 0 { 4 + 8 * blocks } else { 0 }
}

/// Write the options as laid out by `option_layout` (Linux's order: MSS,
/// SACK-permitted + timestamps, window scale, SACK) into `buf`; returns the
/// bytes written (a multiple of 4).
fn emit_options(opts: &TcpOptions, buf: &mut [u8]) -> usize {
    let (_, blocks) = option_layout(opts);
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    if let Some(mss) = opts.mss {
        let [a, b] = mss.to_be_bytes();
        put(&[OPT_MSS, 4, a, b]);
    }
    if let Some((val, ecr)) = opts.timestamps {
        if opts.sack_permitted {
            put(&[OPT_SACK_PERMITTED, 2]);
        } else {
            put(&[OPT_NOP, OPT_NOP]);
        }
        put(&[OPT_TIMESTAMPS, 10]);
        put(&val.to_be_bytes());
        put(&ecr.to_be_bytes());
    } else if opts.sack_permitted {
        put(&[OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2]);
    }
    if let Some(ws) = opts.window_scale {
        put(&[OPT_NOP, OPT_WSCALE, 3, ws.min(MAX_WINDOW_SCALE)]);
    }
    if blocks > 0 {
        put(&[OPT_NOP, OPT_NOP, OPT_SACK, (2 + 8 * blocks) as u8]);
        for &(l, r) in opts.sack_blocks.iter().flatten().take(blocks) {
            put(&l.0.to_be_bytes());
            put(&r.0.to_be_bytes());
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn syn_repr() -> TcpRepr<'static> {
        TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq: SeqNum(0xfffffff0),
            syn: true,
            window: 64240,
            options: TcpOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                timestamps: Some((0x01020304, 0)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn partial_checksum_emit_holds_the_pseudo_header_sum_and_completes_to_the_full_one() {
        let payload: Vec<u8> = (0..1001u32).map(|i| (i * 7) as u8).collect();
        let r = TcpRepr {
            payload: &payload,
            ack: Some(SeqNum(5)),
            ..syn_repr()
        };
        let full = emitted(&r);
        let mut part = vec![0u8; r.buffer_len()];
        r.emit_with(SRC, DST, &mut part, false);
        let pseudo = checksum::pseudo_header(SRC, DST, PROTO_TCP, part.len()) as u16;
        assert_eq!(part[16..18], pseudo.to_be_bytes());
        assert_eq!(part[..16], full[..16]);
        assert_eq!(part[18..], full[18..]);
        // What the device does with NEEDS_CSUM: sum from the TCP header on.
        let c = checksum::finish(checksum::sum(0, &part));
        part[16..18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(part, full);
        assert!(TcpRepr::parse(SRC, DST, &full, true).is_ok());
    }

    /// The header alone, for a payload sent from where it lies, is the
    /// whole segment's header, checksum included, in both modes and for
    /// payloads of every parity.
    #[test]
    fn header_only_emit_matches_the_whole_segment() {
        let mut rng = Rng::new(0x6ead);
        for len in [0usize, 1, 2, 3, 1447, 1448, 4096, 65_001] {
            let mut payload = vec![0u8; len];
            rng.fill(&mut payload);
            let r = TcpRepr {
                payload: &payload,
                ack: Some(SeqNum(9)),
                psh: true,
                ..syn_repr()
            };
            for full in [true, false] {
                let mut whole = vec![0u8; r.buffer_len()];
                r.emit_with(SRC, DST, &mut whole, full);
                let mut head = vec![0u8; r.header_len()];
                assert_eq!(r.emit_header(SRC, DST, &mut head, full), r.header_len());
                assert_eq!(head[..], whole[..r.header_len()], "len {len} full {full}");
                assert_eq!(whole[r.header_len()..], payload[..]);
            }
        }
    }

    fn emitted(r: &TcpRepr) -> Vec<u8> {
        let mut buf = vec![0u8; r.buffer_len()];
        assert_eq!(r.emit(SRC, DST, &mut buf), buf.len());
        buf
    }

    /// A segment with the given raw option bytes (padded by the caller) and a valid checksum.
    fn with_options(opts: &[u8]) -> Vec<u8> {
        let base = TcpRepr {
            src_port: 1,
            dst_port: 2,
            ack: Some(SeqNum(5)),
            payload: b"xy",
            ..Default::default()
        };
        let plain = emitted(&base);
        let mut seg = plain[..HEADER_LEN].to_vec();
        seg.extend_from_slice(opts);
        seg.extend_from_slice(b"xy");
        seg[12] = (((HEADER_LEN + opts.len()) / 4) as u8) << 4;
        seg[16] = 0;
        seg[17] = 0;
        let c = checksum::finish(checksum::sum(
            checksum::pseudo_header(SRC, DST, PROTO_TCP, seg.len()),
            &seg,
        ));
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        seg
    }

    #[test]
    fn syn_with_all_options_round_trips() {
        let r = syn_repr();
        let b = emitted(&r);
        assert_eq!(b.len(), 40, "MSS 4 + SACKP/TS 12 + WS 4");
        assert_eq!(TcpRepr::parse(SRC, DST, &b, true), Ok(r));
    }

    #[test]
    fn data_segment_with_sack_round_trips() {
        let mut r = TcpRepr {
            src_port: 80,
            dst_port: 40000,
            seq: SeqNum(1),
            ack: Some(SeqNum(0xffff_fff0)),
            psh: true,
            fin: true,
            ece: true,
            cwr: true,
            urg: true,
            urgent_ptr: 3,
            window: 1000,
            payload: b"hello",
            ..Default::default()
        };
        r.options.sack_blocks = [
            Some((SeqNum(100), SeqNum(200))),
            Some((SeqNum(300), SeqNum(400))),
            Some((SeqNum(500), SeqNum(600))),
            None,
        ];
        r.options.timestamps = Some((7, 8));
        let b = emitted(&r);
        assert_eq!(r.header_len(), 20 + 12 + 4 + 24);
        assert_eq!(TcpRepr::parse(SRC, DST, &b, true), Ok(r));
    }

    #[test]
    fn emit_checksum_and_options_match_etherparse() {
        let b = emitted(&syn_repr());
        let (h, rest) = etherparse::TcpHeader::from_slice(&b).unwrap();
        assert_eq!(
            h.checksum,
            h.calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), rest)
                .unwrap()
        );
        use etherparse::TcpOptionElement::*;
        let opts: Vec<_> = h.options_iterator().map(|o| o.unwrap()).collect();
        assert!(opts.contains(&MaximumSegmentSize(1460)));
        assert!(opts.contains(&WindowScale(7)));
        assert!(opts.contains(&SelectiveAcknowledgementPermitted));
        assert!(opts.contains(&Timestamp(0x01020304, 0)));
    }

    #[test]
    fn parses_etherparse_built_segment() {
        let b = etherparse::PacketBuilder::ipv4(SRC.octets(), DST.octets(), 64)
            .tcp(1234, 80, 1000, 500)
            .syn()
            .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(536)])
            .unwrap();
        let mut v = Vec::new();
        b.write(&mut v, b"").unwrap();
        let r = TcpRepr::parse(SRC, DST, &v[20..], true).unwrap();
        assert_eq!(
            (r.src_port, r.dst_port, r.seq, r.window),
            (1234, 80, SeqNum(1000), 500)
        );
        assert!(r.syn && r.ack.is_none());
        assert_eq!(r.options.mss, Some(536));
    }

    #[test]
    fn ack_is_none_without_ack_flag() {
        let mut r = syn_repr();
        r.ack = None;
        let mut b = emitted(&r);
        b[8..12].copy_from_slice(&[9, 9, 9, 9]); // garbage ack field, flag clear
        b[16] = 0;
        b[17] = 0;
        let c = checksum::finish(checksum::sum(
            checksum::pseudo_header(SRC, DST, PROTO_TCP, b.len()),
            &b,
        ));
        b[16..18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(TcpRepr::parse(SRC, DST, &b, true).unwrap().ack, None);
    }

    #[test]
    fn window_scale_above_14_is_clamped_to_14() {
        let b = with_options(&[OPT_WSCALE, 3, 15, OPT_EOL]);
        let r = TcpRepr::parse(SRC, DST, &b, true).unwrap();
        assert_eq!(r.options.window_scale, Some(14));
        let mut r2 = r;
        r2.options.window_scale = Some(200);
        let e = emitted(&r2);
        assert_eq!(
            TcpRepr::parse(SRC, DST, &e, true)
                .unwrap()
                .options
                .window_scale,
            Some(14)
        );
    }

    #[test]
    fn nop_eol_and_unknown_options_are_skipped() {
        let b = with_options(&[
            OPT_NOP, 30, 4, 0xaa, 0xbb, OPT_MSS, 4, 0x05, 0xb4, OPT_EOL, 0xff, 0xff,
        ]);
        let r = TcpRepr::parse(SRC, DST, &b, true).unwrap();
        assert_eq!(r.options.mss, Some(1460));
        assert_eq!(r.payload, b"xy");
    }

    #[test]
    fn bytes_after_eol_are_ignored() {
        // After EOL even a bogus "option" is padding.
        let b = with_options(&[OPT_EOL, OPT_MSS, 9, 0]);
        assert_eq!(
            TcpRepr::parse(SRC, DST, &b, true).unwrap().options,
            TcpOptions::default()
        );
    }

    #[test]
    fn malformed_options_are_bad_option() {
        let cases: &[(&str, &[u8])] = &[
            ("length 0", &[OPT_MSS, 0, 0, 0]),
            ("length 1", &[30, 1, 0, 0]),
            ("runs past header", &[OPT_NOP, OPT_NOP, 30, 40]),
            ("kind without length byte", &[OPT_NOP, OPT_NOP, OPT_NOP, 30]),
            ("MSS length 3", &[OPT_MSS, 3, 0, OPT_EOL]),
            ("window scale length 4", &[OPT_WSCALE, 4, 7, 0]),
            ("SACK-permitted length 3", &[OPT_SACK_PERMITTED, 3, 0, 0]),
            ("SACK length not 2+8n", &[OPT_SACK, 6, 0, 0, 0, 0, 0, 0]),
            ("SACK with no block", &[OPT_SACK, 2, 0, 0]),
            (
                "timestamps length 8",
                &[OPT_TIMESTAMPS, 8, 0, 0, 0, 0, 0, 0],
            ),
        ];
        for (what, opts) in cases {
            let b = with_options(opts);
            assert_eq!(
                TcpRepr::parse(SRC, DST, &b, true),
                Err(WireError::BadOption),
                "{what}"
            );
        }
    }

    #[test]
    fn sack_with_four_blocks_parses() {
        let mut opts = vec![OPT_NOP, OPT_NOP, OPT_SACK, 34];
        for i in 0..8u32 {
            opts.extend_from_slice(&(i * 10).to_be_bytes());
        }
        let b = with_options(&opts);
        let r = TcpRepr::parse(SRC, DST, &b, true).unwrap();
        assert_eq!(r.options.sack_blocks[3], Some((SeqNum(60), SeqNum(70))));
    }

    #[test]
    fn sack_blocks_that_do_not_fit_are_dropped_on_emit() {
        let mut r = syn_repr();
        r.syn = false;
        r.options.mss = None;
        r.options.window_scale = None;
        r.options.sack_blocks = [
            Some((SeqNum(1), SeqNum(2))),
            Some((SeqNum(3), SeqNum(4))),
            Some((SeqNum(5), SeqNum(6))),
            Some((SeqNum(7), SeqNum(8))),
        ];
        // Timestamps take 12, so only 3 blocks fit in 40.
        assert_eq!(options_len(&r.options), 40);
        let e = emitted(&r);
        let p = TcpRepr::parse(SRC, DST, &e, true).unwrap();
        assert_eq!(p.options.sack_blocks[2], Some((SeqNum(5), SeqNum(6))));
        assert_eq!(p.options.sack_blocks[3], None);
        // Without timestamps all 4 fit.
        r.options.timestamps = None;
        r.options.sack_permitted = false;
        assert_eq!(options_len(&r.options), 36);
        let e = emitted(&r);
        let p = TcpRepr::parse(SRC, DST, &e, true).unwrap();
        assert_eq!(p.options.sack_blocks, r.options.sack_blocks);
    }

    #[test]
    fn options_len_is_padded_to_multiple_of_4() {
        let mut o = TcpOptions::default();
        assert_eq!(options_len(&o), 0);
        o.window_scale = Some(0);
        assert_eq!(options_len(&o), 4);
        o.sack_permitted = true;
        assert_eq!(options_len(&o), 8);
        o.mss = Some(1);
        assert_eq!(options_len(&o), 12);
        o.timestamps = Some((1, 2));
        assert_eq!(options_len(&o), 20);
    }

    #[test]
    fn data_offset_below_5_is_bad_length() {
        let mut b = emitted(&syn_repr());
        b[12] = 4 << 4;
        assert_eq!(
            TcpRepr::parse(SRC, DST, &b, false),
            Err(WireError::BadLength)
        );
    }

    #[test]
    fn data_offset_beyond_segment_is_truncated() {
        let r = TcpRepr {
            src_port: 1,
            dst_port: 2,
            ..Default::default()
        };
        let mut b = emitted(&r);
        b[12] = 6 << 4;
        assert_eq!(
            TcpRepr::parse(SRC, DST, &b, false),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn checksum_is_verified_over_pseudo_header() {
        let b = emitted(&syn_repr());
        assert_eq!(
            TcpRepr::parse(SRC, Ipv4Addr::new(10, 0, 0, 9), &b, true),
            Err(WireError::BadChecksum)
        );
        assert!(TcpRepr::parse(SRC, Ipv4Addr::new(10, 0, 0, 9), &b, false).is_ok());
        let mut b = b;
        b[39] ^= 1;
        assert_eq!(
            TcpRepr::parse(SRC, DST, &b, true),
            Err(WireError::BadChecksum)
        );
    }

    #[test]
    fn every_truncated_prefix_errs() {
        let mut r = syn_repr();
        r.payload = b"";
        let b = emitted(&r);
        for len in 0..b.len() {
            let e = TcpRepr::parse(SRC, DST, &b[..len], false);
            assert_eq!(e, Err(WireError::Truncated), "len {len}");
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng::new(0x7c9);
        let mut buf = [0u8; 80];
        for i in 0..100_000 {
            let len = rng.gen_range(0, 81) as usize;
            rng.fill(&mut buf[..len]);
            if i % 2 == 0 && len > 12 {
                // a plausible data offset so that options get exercised
                buf[12] = (rng.gen_range(5, 16) as u8) << 4;
            }
            if let Ok(r) = TcpRepr::parse(SRC, DST, &buf[..len], false) {
                assert!(r.payload.len() + HEADER_LEN <= len);
                // Whatever parsed must re-emit and parse back.
                let mut out = vec![0u8; r.buffer_len()];
                r.emit(SRC, DST, &mut out);
                let again = TcpRepr::parse(SRC, DST, &out, true).unwrap();
                assert_eq!(again.payload, r.payload);
            }
        }
    }
}
