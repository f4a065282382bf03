//! The TCP connection state machine (the TCB of RFC 9293 §3.3.1).
//!
//! Sans-IO: the stack hands a TCB the segments addressed to its 4-tuple
//! ([`Tcb::process`]) and asks it for segments to send
//! ([`Tcb::poll_transmit`]), which also runs any expired timers;
//! [`Tcb::poll_at`] says when to ask again without input.
//!
//! What is implemented, by source:
//! - RFC 9293 §3.10: OPEN/SEND/RECEIVE/CLOSE/ABORT and SEGMENT ARRIVES for
//!   every state (acceptability test, RST, SYN, ACK with SND.WL1/WL2, data,
//!   FIN), simultaneous open and close, TIME-WAIT 2·MSL and its restart.
//! - RFC 9293 §3.8.6: receive window from free buffer space, never shrinking
//!   the right edge; receiver and sender SWS avoidance, Nagle; zero-window
//!   probing with backoff (persist timer); delayed ACKs (§3.8.6.3).
//! - RFC 6298: RTO with Karn's rule (one timed segment at a time), backoff.
//! - RFC 5681/6582: fast retransmit on three duplicate ACKs, NewReno recovery;
//!   the window algorithm itself is behind [`super::cc::CongestionControl`].
//! - RFC 6675: SACK-based loss recovery over the scoreboard in
//!   [`super::sack`] (pipe, NextSeg, RecoveryPoint, RTO handling).
//! - RFC 7323: window scaling; timestamps (TS.Recent, Last.ACK.sent, RTTM
//!   from TSecr, PAWS with the 24-day rule).
//! - RFC 8985 pieces: tail loss probe, lost-retransmission detection and a
//!   reordering window before count-based recovery.
//! - RFC 5961: challenge ACKs for in-window RST and SYN, ACK acceptability,
//!   rate-limited.
//! - RFC 9293 §3.8.4: keep-alives (optional).
//!
//! Sequence-space bookkeeping: the front byte of `send_buf` has sequence
//! number `snd_buf_seq` (ISS+1 until it is acknowledged and dropped); our FIN,
//! once the user shut down, sits at `snd_buf_seq + send_buf.len()`.

use super::assembler::Assembler;
use super::buffer::{RecvBuffer, RingBuffer};
use super::cc::hystart::{self, HyStart};
use super::cc::{self, CongestionControl};
use super::rtt::RttEstimator;
use super::sack::{NextSeg, Scoreboard, DUP_THRESH};
use super::seq::SeqNum;
use super::{State, TcpConfig, TcpError, TcpStats};
use crate::lend::{PacketBuf, PacketSlice};
use crate::time::{Duration, Instant};
use crate::wire::tcp::{TcpOptions, TcpRepr};
use std::net::SocketAddrV4;

#[cfg(test)]
mod tests;

/// MSS assumed when the peer's SYN carries none (RFC 9293 §3.7.1).
const DEFAULT_MSS: usize = 536;
/// Floor for the peer's MSS, so a hostile tiny MSS cannot make us emit
/// segments of a few bytes each (Linux TCP_MIN_SND_MSS).
const MIN_MSS: usize = 48;
/// Bytes the timestamp option takes in every segment once negotiated (10 + 2 NOPs).
const TS_OPTION_LEN: usize = 12;
/// Out-of-order ranges the receive side tracks.
const MAX_OOO_RANGES: usize = 32;
/// Most segments ACKed at once after a loss ([`Tcb::enter_quick_ack`];
/// Linux TCP_MAX_QUICKACKS).
const MAX_QUICK_ACKS: u32 = 16;
/// RFC 5961 §7: the challenge ACK limit (`TcpConfig::challenge_ack_limit`) counts per this period.
const CHALLENGE_ACK_PERIOD: Duration = Duration::from_secs(1);
/// RFC 8985 §7.2: the shortest probe timeout (RFC 8985 sets none; Linux
/// adds `TCP_TIMEOUT_MIN_US`, 2 ms, to 2·SRTT)...
const TLP_MIN: Duration = Duration::from_millis(2);
/// ...and what it adds when one segment is outstanding (WCDelAckT).
const TLP_DELACK: Duration = Duration::from_millis(200);
/// RFC 7323 §5.5: TS.Recent expires after 24 days without an update.
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);
/// Largest window field value without scaling.
const MAX_WINDOW_UNSCALED: usize = 65535;

/// What `poll_transmit` emits next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    /// Our RST (abort): `<SEQ=SND.NXT><ACK=RCV.NXT><CTL=RST,ACK>`.
    Rst,
    /// A reply RST to one bad segment: `<SEQ=seq>[<ACK=ack>]<CTL=RST[,ACK]>`.
    RstReply(SeqNum, Option<SeqNum>),
    Syn,
    SynAck,
    /// Retransmit a segment: the one at SND.UNA (fast retransmit, partial
    /// ACK) or a hole RFC 6675 NextSeg() rule 1 or 3 chose.
    Retransmit(SeqNum, usize, bool),
    /// RFC 6675 NextSeg() rule 4: the rescue retransmission.
    Rescue(SeqNum, usize, bool),
    /// RFC 8985 §7.3 tail loss probe: the highest unSACKed segment again.
    TailProbe(SeqNum, usize, bool),
    /// Data and/or FIN at SND.NXT (new, or go-back-N after a timeout).
    Data(SeqNum, usize, bool),
    Ack,
    /// Zero-window or keep-alive probe: `<SEQ=SND.UNA-1><ACK=RCV.NXT>`, no data.
    Probe,
}

/// Receive-buffer auto-tuning state, after Linux's dynamic right-sizing
/// (`tcp_rcv_rtt_measure` and `tcp_rcv_space_adjust`; Fisk and Feng,
/// "Dynamic right-sizing in TCP", 2001): once per receive-side round trip,
/// compare what the application read with what the buffer offers.
#[derive(Debug)]
struct RcvSpace {
    /// The receiver's RTT: the shortest time from an ACK advertising a
    /// window's right edge to the arrival of the data that fills it (a
    /// sender limited by our window needs one RTT for it; otherwise it
    /// takes longer, hence the minimum; Linux times one window of data
    /// from a data segment instead). It needs no timestamps, whose
    /// millisecond clock cannot time a TUN's sub-ms RTT.
    rtt: Option<Duration>,
    /// The sample in progress: the right edge an ACK we sent advertised,
    /// and when we sent it. Data up to that edge cannot arrive sooner than
    /// one round trip later, even in bursts that a device batch receives
    /// at once.
    mark: Option<(SeqNum, Instant)>,
    /// Bytes the application has read, in all.
    copied: u64,
    /// `copied` when this round trip began, and when.
    epoch_copied: u64,
    epoch_at: Instant,
    /// Bytes read in the last round trip that grew the buffer (Linux
    /// rcvq_space.space; it starts at the first window).
    space: usize,
}

impl RcvSpace {
    fn new(now: Instant, space: usize) -> RcvSpace {
        RcvSpace {
            rtt: None,
            mark: None,
            copied: 0,
            epoch_copied: 0,
            epoch_at: now,
            space,
        }
    }
}

#[derive(Debug)]
pub struct Tcb {
    local: SocketAddrV4,
    remote: SocketAddrV4,
    state: State,
    cfg: TcpConfig,
    error: Option<TcpError>,
    /// Opened by `accept` (RST in SYN-RECEIVED then just drops the embryo).
    passive: bool,
    /// The last `now` we were handed (what `poll_at` returns when output is pending).
    now: Instant,

    // ----- send side -----
    iss: SeqNum,
    snd_una: SeqNum,
    snd_nxt: SeqNum,
    /// Highest sequence number sent plus one (SND.NXT before a go-back-N rewind).
    snd_max: SeqNum,
    /// Send window in bytes (scaled).
    snd_wnd: usize,
    max_snd_wnd: usize,
    snd_wl1: SeqNum,
    snd_wl2: SeqNum,
    /// Shift applied to the peer's window field.
    snd_wscale: u8,
    /// Effective send MSS (peer's MSS, our ceiling, minus per-segment options).
    snd_mss: usize,
    send_buf: RingBuffer,
    /// Sequence number of `send_buf`'s front byte.
    snd_buf_seq: SeqNum,
    /// The user shut down the write side: FIN follows the queued data.
    fin_queued: bool,

    // ----- receive side -----
    irs: SeqNum,
    rcv_nxt: SeqNum,
    /// Right edge of the window we advertised (RCV.NXT + RCV.WND when sent).
    rcv_adv: SeqNum,
    /// Shift we apply to our window field (0 unless both sides sent WS).
    rcv_wscale: u8,
    rcv_buf: RecvBuffer,
    assembler: Assembler,
    /// Sequence number of the peer's FIN once seen (possibly out of order).
    rcv_fin: Option<SeqNum>,
    /// The peer's FIN has been processed (RCV.NXT covers it).
    fin_received: bool,
    /// Largest segment payload received (for the every-second-segment ACK rule).
    rcv_mss: usize,
    /// In-order bytes received since we last sent an ACK.
    rcv_unacked: usize,
    /// Offset (from RCV.NXT) of the most recent out-of-order segment, for SACK ordering.
    last_ooo: Option<SeqNum>,
    /// When (the `now` of a receive batch) the first ACK of that batch went
    /// out at once; see the receive path.
    early_ack_at: Option<Instant>,
    /// In-order segments still to be ACKed without the delayed-ACK timer
    /// after a loss showed (quick-ACK mode, see [`Tcb::enter_quick_ack`]).
    quick_acks: u32,
    /// Receive-buffer auto-tuning (see [`Tcb::tune_rcv_buf`]).
    drs: RcvSpace,

    // ----- options -----
    /// Both SYNs carried window scale (RFC 7323 §2.2).
    ws_ok: bool,
    sack_ok: bool,
    /// The sender's SACK scoreboard (RFC 6675), SACKed ranges above SND.UNA.
    sb: Scoreboard,
    ts_ok: bool,
    /// RFC 7323 §4.3 TS.Recent: the TSval we echo (and PAWS compares against).
    ts_recent: u32,
    /// When TS.Recent was last set (RFC 7323 §5.5: invalid after 24 days idle).
    ts_recent_age: Instant,
    /// Added to our millisecond clock in TSval, so TSvals do not reveal the
    /// stack's clock (set per connection by the owner, [`Tcb::set_ts_offset`]).
    ts_offset: u32,
    /// RFC 7323 §4.3 Last.ACK.sent: the ACK field of the last segment we sent.
    last_ack_sent: SeqNum,

    // ----- timers -----
    rtx_at: Option<Instant>,
    persist_at: Option<Instant>,
    delack_at: Option<Instant>,
    timewait_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    /// FIN-WAIT-2 limit for a connection nobody will read or close again
    /// (Linux tcp_fin_timeout): set once orphaned in FIN-WAIT-2.
    fin2_at: Option<Instant>,
    /// The application closed its handle (see [`Tcb::orphan`]).
    orphaned: bool,
    rtt: RttEstimator,
    /// The one timed segment: (sequence number that acknowledges it, when sent).
    rtt_sample: Option<(SeqNum, Instant)>,
    /// Consecutive retransmission timeouts without progress.
    retries: u32,
    persist_backoff: u32,
    /// Zero-window probes sent since the peer last acknowledged anything.
    probes_out: u32,
    keepalive_sent: u32,

    // ----- congestion control / recovery -----
    cc: Box<dyn CongestionControl>,
    /// HyStart++ (RFC 9406) for the initial slow start, if configured.
    hystart: Option<HyStart>,
    dup_acks: u32,
    in_recovery: bool,
    /// RFC 6582 "recover" (exclusive: SND.MAX when recovery or an RTO began).
    recover: Option<SeqNum>,
    /// Window inflation by duplicate ACKs during recovery (RFC 5681 §3.2 step 4).
    inflation: usize,
    /// Retransmissions of this recovery: (sequence number, SND.MAX when sent),
    /// to notice a lost retransmission of the hole at SND.UNA.
    rtx_log: Vec<(SeqNum, SeqNum)>,
    /// RFC 8985 §7 tail loss probe timer (PTO).
    tlp_at: Option<Instant>,
    /// A probe is due (the timer fired).
    tlp_pending: bool,
    /// The sequence number of the probe sent and not yet answered.
    tlp_probe: Option<SeqNum>,
    /// Probes sent since an ACK last moved SND.UNA (at most 2: see
    /// `update_timers`).
    tlp_round: u8,
    /// The peer has shown reordering: a hole with SACKed data above it was
    /// filled by the original transmission (RACK's RACK.reordering_seen).
    reordering_seen: bool,
    /// Loss was suspected by count (DupThresh / IsLost) after reordering
    /// was seen: recovery starts at this time unless the hole fills first
    /// (RFC 8985's reordering window, RACK.reo_wnd = SRTT/4).
    reo_at: Option<Instant>,
    /// SACK recovery has retransmitted the hole at SND.UNA and no ACK has
    /// moved SND.UNA since: at this time send it once more (see
    /// `update_timers`), rather than wait for the RTO.
    rxt_probe_at: Option<Instant>,
    /// The SND.UNA the last such probe was for (one probe per hole).
    rxt_probed: Option<SeqNum>,

    // ----- pending output -----
    ack_now: bool,
    /// The pending ACK reports a gap, a duplicate or a filled hole: the
    /// sender's loss detection needs each one, so it must not be coalesced
    /// with the ACKs of other segments in the same receive batch.
    urgent_ack: bool,
    rtx_pending: bool,
    probe_pending: bool,
    /// The persist timer fired with a non-zero window: override sender SWS avoidance.
    force_send: bool,
    rst_pending: bool,
    rst_reply: Option<(SeqNum, Option<SeqNum>)>,
    challenge_start: Instant,
    challenge_count: u32,

    stats: TcpStats,
}

impl Tcb {
    fn new(
        config: &TcpConfig,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        state: State,
        isn: SeqNum,
        now: Instant,
    ) -> Tcb {
        let mss = (config.mss as usize).max(MIN_MSS);
        Tcb {
            local,
            remote,
            state,
            cfg: config.clone(),
            error: None,
            passive: false,
            now,
            iss: isn,
            snd_una: isn,
            snd_nxt: isn,
            snd_max: isn,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNum(0),
            snd_wl2: isn,
            snd_wscale: 0,
            snd_mss: mss,
            send_buf: RingBuffer::new(config.send_buffer),
            snd_buf_seq: isn + 1,
            fin_queued: false,
            irs: SeqNum(0),
            rcv_nxt: SeqNum(0),
            rcv_adv: SeqNum(0),
            rcv_wscale: if config.window_scaling {
                config.our_wscale()
            } else {
                0
            },
            rcv_buf: RecvBuffer::new(config.recv_buffer),
            assembler: Assembler::new(MAX_OOO_RANGES),
            rcv_fin: None,
            fin_received: false,
            rcv_mss: mss.min(DEFAULT_MSS),
            rcv_unacked: 0,
            last_ooo: None,
            early_ack_at: None,
            quick_acks: 0,
            // Linux tcp_init_buffer_space: the first window, ten segments,
            // at most what a SYN can offer unscaled.
            drs: RcvSpace::new(now, (10 * mss).min(MAX_WINDOW_UNSCALED)),
            ws_ok: false,
            sack_ok: false,
            sb: Scoreboard::new(isn),
            ts_ok: false,
            ts_recent: 0,
            ts_recent_age: now,
            ts_offset: 0,
            last_ack_sent: SeqNum(0),
            rtx_at: None,
            persist_at: None,
            delack_at: None,
            timewait_at: None,
            keepalive_at: None,
            fin2_at: None,
            orphaned: false,
            rtt: RttEstimator::new(config.rto_initial, config.rto_min, config.rto_max),
            rtt_sample: None,
            retries: 0,
            persist_backoff: 0,
            probes_out: 0,
            keepalive_sent: 0,
            cc: cc::new_controller(config.cc, mss, now),
            hystart: config.hystart.then(HyStart::new),
            dup_acks: 0,
            in_recovery: false,
            recover: None,
            inflation: 0,
            rtx_log: Vec::new(),
            tlp_at: None,
            tlp_pending: false,
            tlp_probe: None,
            tlp_round: 0,
            reordering_seen: false,
            reo_at: None,
            rxt_probe_at: None,
            rxt_probed: None,
            ack_now: false,
            urgent_ack: false,
            rtx_pending: false,
            probe_pending: false,
            force_send: false,
            rst_pending: false,
            rst_reply: None,
            challenge_start: now,
            challenge_count: 0,
            stats: TcpStats::default(),
        }
    }

    /// Active open: a TCB in SYN-SENT whose first `poll_transmit` emits the SYN
    /// (with MSS, and window scale / SACK-permitted / timestamps per config).
    pub fn connect(
        config: &TcpConfig,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        isn: SeqNum,
        now: Instant,
    ) -> Tcb {
        Tcb::new(config, local, remote, State::SynSent, isn, now)
    }

    /// Passive open: a listener received `syn` (SYN, no ACK, no RST) from
    /// `remote`. Returns a TCB in SYN-RECEIVED whose first `poll_transmit`
    /// emits the SYN-ACK.
    pub fn accept(
        config: &TcpConfig,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        syn: &TcpRepr,
        isn: SeqNum,
        now: Instant,
    ) -> Tcb {
        let mut tcb = Tcb::new(config, local, remote, State::SynReceived, isn, now);
        tcb.passive = true;
        tcb.stats.segs_in += 1;
        // Data on the SYN is not accepted (no TFO): RCV.NXT stays at IRS+1 and
        // the peer retransmits it.
        tcb.irs = syn.seq;
        tcb.rcv_nxt = syn.seq + 1;
        tcb.rcv_adv = tcb.rcv_nxt;
        tcb.negotiate(&syn.options);
        tcb.snd_wnd = syn.window as usize;
        tcb.max_snd_wnd = tcb.snd_wnd;
        tcb.snd_wl1 = syn.seq;
        tcb.snd_wl2 = isn;
        tcb
    }

    /// Apply the options of the peer's SYN (RFC 7323 §2.2: scaling only if
    /// both sides sent WS; SACK/timestamps only if both offer).
    fn negotiate(&mut self, opts: &TcpOptions) {
        let peer_mss = opts.mss.map_or(DEFAULT_MSS, |m| m as usize).max(MIN_MSS);
        match opts.window_scale {
            Some(ws) if self.cfg.window_scaling => {
                self.ws_ok = true;
                self.snd_wscale = ws.min(14);
            }
            _ => {
                self.ws_ok = false;
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
            }
        }
        self.sack_ok = self.cfg.sack && opts.sack_permitted;
        self.ts_ok = self.cfg.timestamps && opts.timestamps.is_some();
        if let Some((tsval, _)) = opts.timestamps {
            self.ts_recent = tsval;
            self.ts_recent_age = self.now;
        }
        let ceiling = (self.cfg.mss as usize).max(MIN_MSS);
        let opt = if self.ts_ok { TS_OPTION_LEN } else { 0 };
        self.snd_mss = peer_mss.min(ceiling).saturating_sub(opt).max(MIN_MSS);
        self.cc.set_mss(self.snd_mss);
    }

    // ------------------------------------------------------------------
    // Segment arrival (RFC 9293 §3.10.7)
    // ------------------------------------------------------------------

    /// Process one incoming segment for this connection (4-tuple matched,
    /// checksum already verified), per RFC 9293 §3.10.7.
    pub fn process(&mut self, now: Instant, seg: &TcpRepr) {
        self.now = now;
        self.stats.segs_in += 1;
        match self.state {
            State::Closed | State::Listen => {
                // §3.10.7.1: a segment for a closed connection draws a reset.
                if let Some(r) = reset_for(seg) {
                    self.rst_reply = Some((r.seq, r.ack));
                }
            }
            State::SynSent => self.process_syn_sent(now, seg),
            _ => self.process_synchronized(now, seg),
        }
        self.update_timers(now);
    }

    /// §3.10.7.3 SYN-SENT.
    fn process_syn_sent(&mut self, now: Instant, seg: &TcpRepr) {
        // First: the ACK must acknowledge our SYN and nothing beyond it.
        if let Some(ack) = seg.ack {
            if ack <= self.iss || ack > self.snd_max {
                if !seg.rst {
                    self.rst_reply = Some((ack, None));
                }
                return;
            }
        }
        // Second: RST. Only with an acceptable ACK (RFC 5961 §3.2 keeps the
        // blind-reset window to the one value SND.NXT).
        if seg.rst {
            if seg.ack.is_some() {
                self.enter_closed();
                self.error = Some(TcpError::ConnectionRefused);
            }
            return;
        }
        // Fourth: SYN.
        if !seg.syn {
            return;
        }
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1;
        self.negotiate(&seg.options);
        // Our SYN advertised an unscaled window; that is the edge the peer knows.
        self.rcv_adv = self.rcv_nxt + self.rcv_buf.window().min(MAX_WINDOW_UNSCALED);
        match seg.ack {
            Some(ack) => {
                self.establish(now);
                self.snd_wnd = seg.window as usize;
                self.max_snd_wnd = self.snd_wnd;
                self.snd_wl1 = seg.seq;
                self.snd_wl2 = ack;
                self.on_new_ack(now, ack, 0, None);
                self.ack_now = true;
                // Data or FIN on the SYN-ACK: continue at the sixth step.
                if !seg.payload.is_empty() || seg.fin {
                    self.process_data(now, seg.seq + 1, seg.payload, seg.fin, seg.packet);
                }
            }
            None => {
                // Simultaneous open: answer with SYN-ACK <SEQ=ISS><ACK=RCV.NXT>.
                self.state = State::SynReceived;
                self.snd_wnd = seg.window as usize;
                self.max_snd_wnd = self.snd_wnd;
                self.snd_wl1 = seg.seq;
                self.snd_nxt = self.iss;
                self.rtt_sample = None;
            }
        }
    }

    /// §3.10.7.4: SYN-RECEIVED and every synchronized state.
    fn process_synchronized(&mut self, now: Instant, seg: &TcpRepr) {
        let mut seq = seg.seq;
        let mut syn = seg.syn;
        let payload = seg.payload;
        let fin = seg.fin;

        if self.state == State::SynReceived && syn && !seg.rst {
            if seg.ack.is_none() && seq == self.irs {
                // The peer retransmitted its SYN: our SYN-ACK was lost.
                self.snd_nxt = self.iss;
                return;
            }
            if seg.ack.is_some() && seq + 1 == self.rcv_nxt {
                // Simultaneous open: the peer's SYN-ACK acknowledges our SYN
                // (RFC 5961 §4.2, as Linux): take it as the handshake's ACK.
                seq += 1;
                syn = false;
            }
        }

        if self.state == State::TimeWait
            && fin
            && !seg.rst
            && !syn
            && seq + payload.len() + 1 == self.rcv_nxt
        {
            // §3.10.7.4 eighth step: a retransmitted FIN in TIME-WAIT is
            // acknowledged and restarts the 2·MSL timeout.
            self.ack_now = true;
            self.timewait_at = Some(now + self.cfg.msl * 2);
            return;
        }

        // RFC 7323 §5.3 R1 (PAWS), before the acceptability test: a
        // non-RST segment whose TSval is older than TS.Recent is an old
        // duplicate (or forged): drop it and send an ACK. TS.Recent is
        // invalid after 24 days without an update (§5.5).
        if self.ts_ok && !seg.rst {
            match seg.options.timestamps {
                // §3.2: once negotiated, a non-RST segment without TSopt
                // SHOULD be silently dropped.
                None => {
                    self.stats.unacceptable_segs += 1;
                    return;
                }
                Some((tsval, _)) => {
                    if ts_before(tsval, self.ts_recent) && self.ts_recent_valid(now) {
                        self.stats.paws_rejected += 1;
                        self.ack_now = true;
                        self.urgent_ack = true;
                        return;
                    }
                }
            }
        }

        // First: sequence number acceptability (four cases).
        let seg_len = payload.len() + syn as usize + fin as usize;
        let rcv_wnd = self.rcv_adv - self.rcv_nxt;
        let acceptable = match (seg_len, rcv_wnd) {
            (0, 0) => seq == self.rcv_nxt,
            (0, _) => seq.in_range(self.rcv_nxt, self.rcv_adv),
            (_, 0) => false,
            (_, _) => {
                seq.in_range(self.rcv_nxt, self.rcv_adv)
                    || (seq + (seg_len - 1)).in_range(self.rcv_nxt, self.rcv_adv)
            }
        };
        if !acceptable {
            self.stats.unacceptable_segs += 1;
            if !seg.rst {
                self.ack_now = true;
                self.urgent_ack = true;
                if seg_len > 0 {
                    // A retransmission of data we have: the sender is
                    // recovering from a loss (its ACK was lost).
                    self.enter_quick_ack();
                }
            }
            return;
        }

        // Any acceptable segment shows the peer is alive.
        self.keepalive_sent = 0;
        if let Some(d) = self.cfg.keepalive {
            self.keepalive_at = Some(now + d);
        }
        if self.ts_ok {
            if let Some((tsval, _)) = seg.options.timestamps {
                // RFC 7323 §4.3 (3): SEG.TSval >= TS.Recent and SEG.SEQ <=
                // Last.ACK.sent: TSval becomes TS.Recent (the TSval of the
                // segment that advanced our left edge is what we echo).
                let newer = !ts_before(tsval, self.ts_recent) || !self.ts_recent_valid(now);
                if newer && seq <= self.last_ack_sent {
                    self.ts_recent = tsval;
                    self.ts_recent_age = now;
                }
            }
        }

        // Second: RST (RFC 5961 §3.2: exact match resets, in-window challenges).
        if seg.rst {
            if seq == self.rcv_nxt {
                self.on_reset();
            } else {
                self.challenge_ack(now);
            }
            return;
        }

        // Fourth: SYN in a synchronized state (RFC 5961 §4.2): challenge ACK.
        if syn {
            self.challenge_ack(now);
            return;
        }

        // Fifth: ACK.
        let Some(ack) = seg.ack else {
            return;
        };
        if self.state == State::SynReceived {
            if self.snd_una < ack && ack <= self.snd_max {
                self.establish(now);
                self.snd_wnd = (seg.window as usize) << self.snd_wscale;
                self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
                self.snd_wl1 = seq;
                self.snd_wl2 = ack;
            } else {
                self.rst_reply = Some((ack, None));
                return;
            }
        }
        // RFC 5961 §5.2: acceptable iff SND.UNA - MAX.SND.WND <= SEG.ACK <= SND.NXT.
        if ack > self.snd_max || ack < self.snd_una - self.max_snd_wnd.min(1 << 30) {
            self.challenge_ack(now);
            return;
        }
        let pure = payload.is_empty() && !fin;
        let new_sack = self.note_sack_blocks(&seg.options.sack_blocks);
        let tsecr = seg.options.timestamps.map(|t| t.1);
        self.process_ack(now, seq, ack, seg.window, pure, new_sack, tsecr);
        match self.state {
            State::FinWait1 if self.fin_acked() => {
                self.state = State::FinWait2;
                self.arm_fin2_timer(now);
            }
            State::Closing if self.fin_acked() => self.enter_time_wait(now),
            State::LastAck if self.fin_acked() => {
                self.enter_closed();
                return;
            }
            _ => {}
        }

        // Seventh and eighth: text and FIN.
        if matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        ) && (!payload.is_empty() || fin)
        {
            self.process_data(now, seq, payload, fin, seg.packet);
        }
    }

    /// SYN-SENT/SYN-RECEIVED -> ESTABLISHED, or straight to FIN-WAIT-1 if
    /// the user already closed (RFC 9293 CLOSE in SYN-RECEIVED).
    fn establish(&mut self, now: Instant) {
        self.state = if self.fin_queued {
            State::FinWait1
        } else {
            State::Established
        };
        self.keepalive_at = self.cfg.keepalive.map(|d| now + d);
    }

    /// The reset of an exact-match RST (§3.10.7.4 second step).
    fn on_reset(&mut self) {
        let err = match self.state {
            State::SynReceived if !self.passive => Some(TcpError::ConnectionRefused),
            State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait => Some(TcpError::ConnectionReset),
            _ => None,
        };
        self.enter_closed();
        self.error = err;
    }

    /// RFC 6675 `Update()`: record the segment's SACK blocks on the
    /// scoreboard; true if they SACK a byte not SACKed before (what makes
    /// an ACK a duplicate under RFC 6675 §2). Blocks outside
    /// [SND.UNA, SND.MAX) are ignored (RFC 2018: nothing beyond what we
    /// sent can be SACKed; D-SACKs below SND.UNA carry no loss information).
    fn note_sack_blocks(&mut self, blocks: &[Option<(SeqNum, SeqNum)>; 4]) -> bool {
        if !self.sack_ok {
            return false;
        }
        let mut new = false;
        for &b in blocks.iter().flatten() {
            new |= self.sb.add(self.snd_una, self.snd_max, b);
        }
        new
    }

    /// RFC 7323 §5.5: TS.Recent is valid for 24 days after it was set.
    fn ts_recent_valid(&self, now: Instant) -> bool {
        now - self.ts_recent_age <= PAWS_IDLE
    }

    /// Our TSval now: the millisecond clock plus this connection's offset.
    fn ts_val(&self, now: Instant) -> u32 {
        (now.total_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// SACK-based loss recovery (RFC 6675) is running.
    fn sack_recovery(&self) -> bool {
        self.in_recovery && self.sack_ok
    }

    /// Loss of the segment at SND.UNA is suspected by count. Once the peer
    /// has shown reordering, wait a reordering window (RFC 8985 §6.2:
    /// SRTT/4 here) for the hole to fill before recovering; otherwise (and
    /// without SACK) recover at once.
    fn loss_suspected(&mut self, now: Instant) {
        if self.sack_ok && self.reordering_seen {
            let reo = self.rtt.srtt().map_or(Duration::ZERO, |s| s / 4);
            match self.reo_at {
                None if !reo.is_zero() => {
                    self.reo_at = Some(now + reo);
                    return;
                }
                Some(t) if now < t => return,
                _ => {}
            }
        }
        self.reo_at = None;
        self.enter_recovery(now);
    }

    /// RFC 6675 §5 (4.1–4.3) / RFC 6582 §3.2 step 2: enter loss recovery.
    fn enter_recovery(&mut self, now: Instant) {
        let flight = self.snd_max - self.snd_una;
        self.in_recovery = true;
        // RecoveryPoint = HighData (exclusive here: SND.MAX).
        self.recover = Some(self.snd_max);
        self.cc.on_congestion_event(now, flight);
        if let Some(h) = self.hystart.as_mut() {
            h.stop();
        }
        self.inflation = if self.sack_ok { 0 } else { 3 * self.snd_mss };
        self.sb.high_rxt = self.snd_una;
        self.sb.rescue_rxt = None;
        self.rtx_log.clear();
        self.tlp_at = None;
        self.tlp_pending = false;
        // (4.3) retransmit the first segment at once, whatever pipe says.
        self.rtx_pending = true;
        self.rtt_sample = None;
        self.stats.fast_retransmits += 1;
        self.stats.recoveries += 1;
    }

    #[allow(clippy::too_many_arguments)]
    fn process_ack(
        &mut self,
        now: Instant,
        seq: SeqNum,
        ack: SeqNum,
        window: u16,
        pure: bool,
        new_sack: bool,
        tsecr: Option<u32>,
    ) {
        let wnd = (window as usize) << self.snd_wscale;
        let flight_before = self.snd_max - self.snd_una;
        if ack > self.snd_una {
            self.on_new_ack(now, ack, flight_before, tsecr);
        } else if ack == self.snd_una
            && pure
            && self.snd_max != self.snd_una
            && (wnd == self.snd_wnd || new_sack)
        {
            // RFC 5681 §2 duplicate ACK: outstanding data, no payload, no
            // SYN/FIN, SEG.ACK == SND.UNA, same advertised window. With
            // SACK, RFC 6675 §2: new SACK information instead of the same
            // window (a receiver's window shrinks as out-of-order data
            // fills its buffer, as Linux's does).
            self.on_dup_ack(now);
        }
        // Send window update (SND.WL1/WL2 guard against old segments).
        if self.snd_una <= ack
            && (self.snd_wl1 < seq || (self.snd_wl1 == seq && self.snd_wl2 <= ack))
        {
            self.snd_wnd = wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(wnd);
            self.snd_wl1 = seq;
            self.snd_wl2 = ack;
            if wnd > 0 {
                self.persist_backoff = 0;
            } else {
                // The peer answers while its window is closed: it is alive
                // (§3.8.6.1: do not time out a connection that answers probes).
                self.retries = 0;
            }
        }
        self.probes_out = 0;
        // RFC 6675 §5: recovery also begins when IsLost(HighACK + 1), even
        // before DupThresh duplicate ACKs (for example when ACKs were lost
        // or one ACK SACKs several segments).
        if self.sack_ok
            && !self.in_recovery
            && self.synchronized_sender()
            && self.snd_una < self.snd_max
            && self.recover.is_none_or(|r| self.snd_una >= r)
            && self.sb.is_lost(self.snd_una, self.snd_mss)
        {
            self.loss_suspected(now);
        }
        // RFC 8985 §7.4: the tail loss probe was SACKed while data below it
        // is still missing: what was sent before the probe is lost.
        if let Some(p) = self.tlp_probe {
            if self.snd_una > p {
                self.tlp_probe = None;
            } else if self.sb.is_sacked(p) {
                self.tlp_probe = None;
                if self.sack_ok
                    && !self.in_recovery
                    && self.recover.is_none_or(|r| self.snd_una >= r)
                {
                    self.sb.lost_below = Some(p);
                    self.enter_recovery(now);
                }
            }
        }
        // A lost retransmission (RACK's insight, RFC 8985 §6.2): the hole at
        // SND.UNA was retransmitted when SND.MAX was m, and more than
        // (DupThresh − 1)·SMSS sent after that has been SACKed since, yet
        // the hole is still there: send it again rather than wait for the RTO.
        if self.sack_recovery() && !self.rtx_pending {
            if let Some(e) = self.rtx_log.iter_mut().find(|e| e.0 == self.snd_una) {
                if self.sb.sacked_beyond(e.1, self.snd_mss) {
                    e.1 = self.snd_max;
                    self.rtx_pending = true;
                    self.stats.lost_retransmits += 1;
                }
            }
        }
    }

    /// SND.UNA < ack <= SND.MAX.
    fn on_new_ack(&mut self, now: Instant, ack: SeqNum, flight_before: usize, tsecr: Option<u32>) {
        let acked = ack - self.snd_una;
        // Sequence space acknowledged, less our SYN (not data for the window).
        let cc_acked = acked - (self.snd_una == self.iss) as usize;
        self.tune_send_buf(flight_before);
        if ack > self.snd_buf_seq {
            let n = (ack - self.snd_buf_seq).min(self.send_buf.len());
            self.send_buf.dequeue_allocated(n);
            self.snd_buf_seq += n;
            self.stats.bytes_acked += n as u64;
        }
        if !self.in_recovery
            && !self.sb.is_empty()
            && self.sb.high_rxt <= self.snd_una
            && self.snd_nxt >= self.snd_max
            && self.tlp_probe.is_none()
        {
            // A hole below SACKed data filled without our retransmitting
            // it: the path reorders (RACK.reordering_seen).
            self.reordering_seen = true;
        }
        self.reo_at = None;
        self.snd_una = ack;
        self.sb.advance(ack);
        self.rtx_log.retain(|e| e.0 >= ack);
        self.rxt_probe_at = None;
        self.tlp_at = None;
        self.tlp_pending = false;
        self.tlp_round = 0;
        if self.snd_nxt < ack {
            self.snd_nxt = ack;
        }
        // The RTT the echoed timestamp gives (millisecond clock), if sane.
        let max_ms = self.cfg.rto_max.as_millis() as u64;
        let ts_rtt = tsecr
            .filter(|&e| self.ts_ok && e != 0)
            .map(|ecr| self.ts_val(now).wrapping_sub(ecr))
            .filter(|&d| (d as i32) >= 0 && u64::from(d) <= max_ms)
            .map(|d| Duration::from_millis(u64::from(d)));
        // This ACK's RTT for HyStart++, which wants one per ACK: the
        // timestamp's, or the timed segment's.
        let mut ack_rtt = ts_rtt;
        // Karn: the timed segment was never retransmitted (a retransmission clears it).
        if let Some((end, sent)) = self.rtt_sample {
            if ack >= end {
                self.rtt.sample(now - sent);
                self.rtt_sample = None;
                ack_rtt = ack_rtt.or(Some(now - sent));
            }
        } else if let Some(d) = ts_rtt {
            // RFC 7323 §4.1 RTTM: no segment is being timed (a
            // retransmission cleared it), so take the sample the echoed
            // timestamp gives; retransmissions are unambiguous here because
            // the receiver echoes the TSval of the segment that advanced
            // its window. Scaled by the samples per window (Appendix G).
            let expected = flight_before.div_ceil(2 * self.snd_mss).max(1);
            self.rtt.sample_scaled(d, expected as u32);
        }
        self.retries = 0;
        self.rtt.reset_backoff();
        if self.in_recovery {
            let recover = self.recover.unwrap_or(self.snd_max);
            if ack >= recover {
                // RFC 6582 §3.2 step 3 / RFC 6675 §5: a cumulative ACK
                // beyond RecoveryPoint ends recovery, with cwnd = ssthresh
                // (the controller's window).
                self.in_recovery = false;
                self.inflation = 0;
            } else if self.sack_ok {
                // RFC 6675: NextSeg() picks the holes to repair as pipe
                // allows (see `next_output`); nothing to do per ACK.
            } else {
                // Partial acknowledgment: retransmit the next hole, deflate
                // by the amount acknowledged, add back one MSS.
                self.rtx_pending = true;
                self.inflation = (self.inflation + self.snd_mss).saturating_sub(acked);
                self.rtt_sample = None;
            }
        } else if cc_acked > 0 {
            let cwnd = self.cc.cwnd();
            let app_limited = if cwnd < self.cc.ssthresh() {
                2 * flight_before < cwnd
            } else {
                flight_before + self.snd_mss < cwnd
            };
            let mut grow = cc_acked;
            if cwnd < self.cc.ssthresh() {
                let snd_nxt = self.snd_nxt;
                match self
                    .hystart
                    .as_mut()
                    .map(|h| h.on_ack(ack, snd_nxt, ack_rtt))
                {
                    Some(hystart::Phase::Conservative) => {
                        grow = cc_acked.div_ceil(hystart::CSS_GROWTH_DIVISOR);
                    }
                    Some(hystart::Phase::Exit) => self.cc.end_slow_start(),
                    Some(hystart::Phase::SlowStart) | None => {}
                }
            }
            self.cc.on_ack(now, grow, self.rtt.srtt(), app_limited);
        }
        if !self.in_recovery {
            if let Some(r) = self.recover {
                if self.snd_una >= r {
                    self.recover = None;
                }
            }
        }
        self.dup_acks = 0;
        self.rtx_at = if self.snd_una == self.snd_max {
            None
        } else {
            Some(now + self.rtt.rto())
        };
    }

    fn on_dup_ack(&mut self, now: Instant) {
        self.dup_acks += 1;
        self.stats.dup_acks += 1;
        if self.in_recovery {
            // RFC 5681 §3.2 step 4: inflate for each segment that left the
            // network (with SACK, pipe accounts for it instead).
            if !self.sack_ok {
                self.inflation += self.snd_mss;
            }
            return;
        }
        if self.dup_acks as usize >= DUP_THRESH && self.recover.is_none_or(|r| self.snd_una >= r) {
            // RFC 6582 §3.2 step 2 / RFC 6675 §5: enter loss recovery.
            self.loss_suspected(now);
        }
    }

    /// Quick-ACK mode, as Linux enters it (`tcp_enter_quickack_mode`) on
    /// out-of-order data and on a retransmission of data already received:
    /// the next in-order segments, up to 16 (`TCP_MAX_QUICKACKS`) or half
    /// the window in segments, are each ACKed at once instead of the second
    /// one or the 40 ms delayed-ACK timer. A loss has just cut the sender's
    /// window to a few segments, and a flight of one (or an odd tail) would
    /// otherwise sit for the delayed-ACK timeout or the sender's loss probe
    /// before the next flight: kernel -> stack at 5% loss each way, the
    /// kernel's cwnd sat at 2-3 and the stack delivered 4 MB in 8 s.
    fn enter_quick_ack(&mut self) {
        let half_window = (self.rcv_adv - self.rcv_nxt) / (2 * self.rcv_mss.max(1));
        self.quick_acks = (half_window as u32).clamp(2, MAX_QUICK_ACKS);
    }

    /// Text and FIN (§3.10.7.4 seventh and eighth steps) for an acceptable
    /// segment in ESTABLISHED / FIN-WAIT-1 / FIN-WAIT-2.
    /// `packet`: the received buffer `payload` lies in, if the receive
    /// buffer may keep it instead of copying ([`RecvBuffer::keep`]).
    fn process_data(
        &mut self,
        now: Instant,
        seq: SeqNum,
        payload: &[u8],
        fin: bool,
        packet: Option<&PacketBuf>,
    ) {
        let mut seq = seq;
        let mut payload = payload;
        let mut fin = fin;
        if seq < self.rcv_nxt {
            let k = self.rcv_nxt - seq;
            if k > payload.len() {
                payload = &[];
                fin = false;
            } else {
                payload = &payload[k..];
            }
            seq = self.rcv_nxt;
        }
        let off = seq - self.rcv_nxt;
        if !payload.is_empty() {
            // In order with nothing out of order: the packet itself may be
            // kept (no copy); else the payload is copied into the ring.
            let kept = off == 0
                && self.assembler.is_empty()
                && packet.is_some_and(|p| self.rcv_buf.keep(p, payload));
            let written = if kept {
                payload.len()
            } else {
                self.rcv_buf.write_unallocated(off, payload)
            };
            if written < payload.len() {
                fin = false;
            }
            if off == 0 && written > 0 {
                let had_holes = !self.assembler.is_empty();
                if !kept {
                    self.rcv_buf.enqueue_unallocated(written);
                }
                self.assembler.advance(written);
                let extra = self.assembler.remove_front();
                self.rcv_buf.enqueue_unallocated(extra);
                let n = written + extra;
                self.rcv_nxt += n;
                self.stats.bytes_received += n as u64;
                self.tune_rcv_buf(now);
                self.rcv_unacked += n;
                self.rcv_mss = self.rcv_mss.max(payload.len().min(self.cfg.mss as usize));
                let quick = self.quick_acks > 0;
                self.quick_acks = self.quick_acks.saturating_sub(1);
                if had_holes || self.rcv_unacked >= 2 * self.rcv_mss {
                    // Filling a hole, or a second full segment: ACK now.
                    // The first such ACK of a receive batch (one `now`)
                    // goes out at once, the rest coalesce into one at the
                    // batch's end. One ACK for a whole flight would stall
                    // the sender until its loss probe or RTO whenever that
                    // ACK is lost; with an early one, the sender already
                    // sends more, and their ACKs repair the loss. Measured
                    // kernel -> stack at 1% loss each way: 0.30-0.34 Gbit/s
                    // with one ACK per batch, 0.65-0.75 with the early one,
                    // and no change clean (see README, "Loss").
                    self.ack_now = true;
                    let early = self.early_ack_at != Some(now);
                    if early {
                        self.early_ack_at = Some(now);
                    }
                    self.urgent_ack |= had_holes || early;
                } else if quick {
                    // Quick-ACK mode: no delayed ACK (coalesced to the end
                    // of this receive batch like any due ACK).
                    self.ack_now = true;
                } else {
                    match self.cfg.delayed_ack {
                        None => self.ack_now = true,
                        Some(d) => {
                            if self.delack_at.is_none() {
                                self.delack_at = Some(now + d);
                            }
                        }
                    }
                }
            } else if written > 0 {
                // Out of order: keep it, and ACK at once so the sender sees
                // duplicate ACKs (RFC 5681 §4.2).
                if self.assembler.add(off, written).is_ok() {
                    self.stats.out_of_order_segs += 1;
                    self.last_ooo = Some(seq);
                } else {
                    fin = false;
                }
                self.ack_now = true;
                self.urgent_ack = true;
                self.enter_quick_ack();
            } else {
                self.ack_now = true;
                self.urgent_ack = true;
            }
        }
        if fin {
            self.rcv_fin = Some(seq + payload.len());
            if off > 0 {
                self.ack_now = true;
            }
        }
        if !self.fin_received && self.rcv_fin == Some(self.rcv_nxt) {
            self.on_fin(now);
        }
    }

    fn on_fin(&mut self, now: Instant) {
        self.rcv_nxt += 1;
        self.fin_received = true;
        self.ack_now = true;
        match self.state {
            State::SynReceived | State::Established => self.state = State::CloseWait,
            State::FinWait1 => {
                if self.fin_acked() {
                    self.enter_time_wait(now);
                } else {
                    self.state = State::Closing;
                }
            }
            State::FinWait2 => self.enter_time_wait(now),
            _ => {}
        }
    }

    fn fin_acked(&self) -> bool {
        self.fin_queued && self.snd_una == self.fin_seq() + 1
    }

    fn fin_seq(&self) -> SeqNum {
        self.snd_buf_seq + self.send_buf.len()
    }

    /// An orphaned connection may wait in FIN-WAIT-2 only `cfg.fin_timeout`
    /// for the peer's FIN; then it is dropped without a word (as Linux does).
    fn arm_fin2_timer(&mut self, now: Instant) {
        if self.orphaned && self.state == State::FinWait2 && self.fin2_at.is_none() {
            self.fin2_at = Some(now + self.cfg.fin_timeout);
        }
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.fin2_at = None;
        self.timewait_at = Some(now + self.cfg.msl * 2);
        self.rtx_at = None;
        self.tlp_at = None;
        self.persist_at = None;
        self.keepalive_at = None;
        self.rtx_pending = false;
        self.probe_pending = false;
    }

    fn enter_closed(&mut self) {
        self.state = State::Closed;
        self.fin2_at = None;
        self.rtx_at = None;
        self.tlp_at = None;
        self.tlp_pending = false;
        self.persist_at = None;
        self.delack_at = None;
        self.timewait_at = None;
        self.keepalive_at = None;
        self.ack_now = false;
        self.urgent_ack = false;
        self.rtx_pending = false;
        self.probe_pending = false;
        self.force_send = false;
    }

    /// RFC 5961 §7: a rate-limited ACK in reply to a suspicious segment.
    fn challenge_ack(&mut self, now: Instant) {
        if now - self.challenge_start >= CHALLENGE_ACK_PERIOD {
            self.challenge_start = now;
            self.challenge_count = 0;
        }
        if self.challenge_count < self.cfg.challenge_ack_limit {
            self.challenge_count += 1;
            self.stats.challenge_acks += 1;
            self.ack_now = true;
        }
    }

    // ------------------------------------------------------------------
    // Timers
    // ------------------------------------------------------------------

    fn run_timers(&mut self, now: Instant) {
        if self.timewait_at.is_some_and(|t| t <= now) {
            self.enter_closed();
            return;
        }
        if self.fin2_at.is_some_and(|t| t <= now) {
            self.stats.fin_wait2_timeouts += 1;
            self.enter_closed();
            return;
        }
        if self.reo_at.is_some_and(|t| t <= now) {
            // The reordering window passed and the hole is still there.
            let lost =
                self.dup_acks as usize >= DUP_THRESH || self.sb.is_lost(self.snd_una, self.snd_mss);
            if !self.in_recovery && lost && self.snd_una < self.snd_max {
                self.loss_suspected(now);
            }
            self.reo_at = None;
        }
        if self.rxt_probe_at.is_some_and(|t| t <= now) {
            self.rxt_probe_at = None;
            if self.sack_recovery() && !self.rtx_pending {
                if let Some(e) = self.rtx_log.iter_mut().find(|e| e.0 == self.snd_una) {
                    // The retransmission went unanswered for 2·SRTT: lost
                    // (or its ACK was); once more, with the window as it is.
                    e.1 = self.snd_max;
                    self.rtx_pending = true;
                    self.rxt_probed = Some(self.snd_una);
                    self.stats.lost_retransmits += 1;
                }
            }
        }
        if self.tlp_at.is_some_and(|t| t <= now) {
            // RFC 8985 §7.3: the probe timeout expired before any ACK.
            self.tlp_at = None;
            self.tlp_pending = true;
        }
        if self.rtx_at.is_some_and(|t| t <= now) {
            self.on_rto(now);
            if self.state == State::Closed {
                return;
            }
        }
        if self.persist_at.is_some_and(|t| t <= now) {
            self.persist_at = None;
            if self.snd_wnd == 0 {
                self.probes_out += 1;
                if self.probes_out > self.cfg.max_retransmits {
                    self.fail(TcpError::TimedOut);
                    return;
                }
                self.probe_pending = true;
                self.persist_backoff = (self.persist_backoff + 1).min(16);
                self.stats.zero_window_probes += 1;
            } else {
                // §3.8.6.2.1 override timeout: send what the window allows.
                self.force_send = true;
            }
        }
        if self.delack_at.is_some_and(|t| t <= now) {
            self.delack_at = None;
            self.ack_now = true;
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.on_keepalive(now);
        }
    }

    /// RFC 6298 §5.4–5.6: retransmit the earliest unacknowledged segment,
    /// back off, restart the timer. Go-back-N: SND.NXT rewinds to SND.UNA.
    fn on_rto(&mut self, now: Instant) {
        let syn_state = matches!(self.state, State::SynSent | State::SynReceived);
        if self.snd_una == self.snd_max {
            self.rtx_at = None;
            return;
        }
        self.retries += 1;
        let limit = if syn_state {
            self.cfg.syn_retries
        } else {
            self.cfg.max_retransmits
        };
        if self.retries > limit {
            self.fail(TcpError::TimedOut);
            return;
        }
        self.stats.rto_expirations += 1;
        log::trace!(
            "rto: una {:?} nxt {:?} max {:?} recovery {} sack_rec {} sb {:?} rtx_log {:?} tlp {:?} rtx_pending {} cwnd {}",
            self.snd_una, self.snd_nxt, self.snd_max, self.in_recovery, self.sack_recovery(),
            self.sb, self.rtx_log, self.tlp_probe, self.rtx_pending, self.cc.cwnd()
        );
        self.rtt.back_off();
        if !syn_state {
            let flight = self.snd_max - self.snd_una;
            self.cc.on_retransmission_timeout(now, flight);
            if let Some(h) = self.hystart.as_mut() {
                h.stop();
            }
            self.recover = Some(self.snd_max);
        }
        self.in_recovery = false;
        self.inflation = 0;
        self.dup_acks = 0;
        // RFC 6675 §5.1 / RFC 2018 §8: the receiver may have reneged on
        // what it SACKed, so forget the scoreboard; the go-back-N resend
        // uses only SACK information that arrives from now on.
        self.sb.clear();
        self.sb.high_rxt = self.snd_una;
        self.sb.rescue_rxt = None;
        self.rtx_log.clear();
        self.tlp_at = None;
        self.tlp_pending = false;
        self.tlp_probe = None;
        self.tlp_round = 0;
        // The earliest segment goes out even into a zero window (§3.8.6.1:
        // retransmit regardless), then go-back-N within the window.
        self.rtx_pending = !syn_state;
        self.rtt_sample = None;
        self.snd_nxt = self.snd_una;
        self.rtx_at = Some(now + self.rtt.rto());
    }

    fn on_keepalive(&mut self, now: Instant) {
        let Some(idle) = self.cfg.keepalive else {
            self.keepalive_at = None;
            return;
        };
        let idle_conn = matches!(self.state, State::Established | State::CloseWait)
            && self.snd_una == self.snd_max
            && self.unsent() == 0;
        if !idle_conn {
            self.keepalive_at = Some(now + idle);
            return;
        }
        if self.keepalive_sent >= self.cfg.keepalive_probes {
            self.fail(TcpError::TimedOut);
            return;
        }
        self.keepalive_sent += 1;
        self.stats.keepalive_probes += 1;
        self.probe_pending = true;
        self.keepalive_at = Some(now + self.cfg.keepalive_interval);
    }

    fn fail(&mut self, err: TcpError) {
        self.enter_closed();
        self.error = Some(err);
    }

    /// Re-derive the retransmission and persist timers after any change.
    fn update_timers(&mut self, now: Instant) {
        if matches!(self.state, State::Closed | State::TimeWait | State::Listen) {
            return;
        }
        // RFC 6298 §5.1/5.2: run while anything is outstanding.
        if self.snd_una == self.snd_max {
            self.rtx_at = None;
        } else if self.rtx_at.is_none() {
            self.rtx_at = Some(now + self.rtt.rto());
        }
        // RFC 8985 §7.2: a tail loss probe timer while data is outstanding
        // outside recovery, one probe per flight (until an ACK moves SND.UNA)
        // -- and, unlike RFC 8985, a second one at twice the PTO if the
        // first is not answered at all, as QUIC's probe timeout backs off
        // (RFC 9002 §6.2). A peer that holds back its ACKs (Linux does when
        // its reader lags and the window would not grow) answers a probe at
        // once with a duplicate ACK; if that one ACK is lost, it has nothing
        // more to say and only the RTO (200 ms, against an SRTT of ~50 µs
        // over TUN) would end the silence. At 1% loss that was most RTOs.
        let second = self.tlp_round == 1 && self.tlp_probe.is_some();
        let tlp_ok = self.sack_ok
            && self.synchronized_sender()
            && !self.in_recovery
            && self.snd_una != self.snd_max
            && ((self.tlp_round == 0 && self.tlp_probe.is_none()) || second)
            && !self.tlp_pending
            && self.rtt.backoff_count() == 0;
        if !tlp_ok {
            self.tlp_at = None;
        } else if self.tlp_at.is_none() {
            if let Some(srtt) = self.rtt.srtt() {
                let mut pto = (srtt * 2).max(TLP_MIN);
                if self.snd_max - self.snd_una <= self.snd_mss {
                    // One segment out: allow for the peer's delayed ACK.
                    pto += TLP_DELACK;
                }
                if second {
                    pto *= 2;
                }
                let at = now + pto;
                if self.rtx_at.is_none_or(|r| at < r) {
                    self.tlp_at = Some(at);
                }
            }
        }
        // A lost retransmission in SACK recovery. RACK (RFC 8985 §6.2)
        // calls it lost once data sent after it is delivered, but with the
        // pipe full nothing is sent after it, and a receiver that
        // compresses SACKs (Linux's tcp_comp_sack) may report nothing more
        // until our RTO (200 ms or more). So: once per hole, resend it
        // after max(2·SRTT, TLP_MIN) without an ACK moving SND.UNA.
        let probe_ok = self.sack_recovery()
            && !self.rtx_pending
            && self.rxt_probed != Some(self.snd_una)
            && self.rtt.backoff_count() == 0
            && self.rtx_log.iter().any(|e| e.0 == self.snd_una);
        if !probe_ok {
            self.rxt_probe_at = None;
        } else if self.rxt_probe_at.is_none() {
            if let Some(srtt) = self.rtt.srtt() {
                let at = now + (srtt * 2).max(TLP_MIN);
                if self.rtx_at.is_none_or(|r| at < r) {
                    self.rxt_probe_at = Some(at);
                }
            }
        }
        // Persist: data waiting, nothing in flight, and we may not send it.
        let stalled = self.synchronized_sender()
            && self.snd_una == self.snd_max
            && self.unsent() > 0
            && !self.probe_pending
            && self.data_to_send().is_none();
        if !stalled {
            self.persist_at = None;
        } else if self.persist_at.is_none() {
            let base = self.rtt.rto().max(self.cfg.rto_min);
            let d = base
                .checked_mul(1u32 << self.persist_backoff.min(16))
                .unwrap_or(self.cfg.rto_max)
                .min(self.cfg.rto_max);
            self.persist_at = Some(now + d);
        }
    }

    // ------------------------------------------------------------------
    // Output
    // ------------------------------------------------------------------

    /// States in which our data/FIN may (still) be sent or retransmitted.
    fn synchronized_sender(&self) -> bool {
        matches!(
            self.state,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        )
    }

    /// Queued bytes not yet sent (beyond SND.NXT).
    fn unsent(&self) -> usize {
        let end = self.snd_buf_seq + self.send_buf.len();
        if self.snd_nxt >= end {
            0
        } else {
            end - self.snd_nxt
        }
    }

    fn cwnd(&self) -> usize {
        self.cc.cwnd() + if self.in_recovery { self.inflation } else { 0 }
    }

    /// The data/FIN segment to send at SND.NXT now, if any (window, Nagle and
    /// sender SWS avoidance of RFC 9293 §3.8.6.2.1 applied). During SACK
    /// recovery the congestion window bounds pipe (RFC 6675), not the
    /// flight; when resending after a timeout (SND.NXT < SND.MAX) bytes the
    /// peer SACKed since are skipped (RFC 6675 §5.1: use the SACK
    /// information that arrives during the recovery after an RTO).
    fn data_to_send(&self) -> Option<(SeqNum, usize, bool)> {
        if !self.synchronized_sender() {
            return None;
        }
        let data_end = self.snd_buf_seq + self.send_buf.len();
        let mut nxt = self.snd_nxt;
        if nxt < self.snd_max {
            if let Some((_, r)) = self.sb.range_at(nxt) {
                nxt = if r < self.snd_max { r } else { self.snd_max };
            }
        }
        if nxt > data_end {
            return None; // only our FIN is outstanding
        }
        let unsent = data_end - nxt;
        let wnd_edge = self.snd_una + self.snd_wnd.min(1 << 30);
        let by_wnd = if wnd_edge > nxt { wnd_edge - nxt } else { 0 };
        let usable = if self.sack_recovery() {
            let room = self.cc.cwnd().saturating_sub(self.sb.pipe(
                self.snd_una,
                self.snd_max,
                self.snd_mss,
            ));
            if room < self.snd_mss.min(unsent.max(1)) {
                0
            } else {
                by_wnd.min(room)
            }
        } else {
            let wnd = self.snd_wnd.min(self.cwnd());
            let edge = self.snd_una + wnd.min(1 << 30);
            if edge > nxt {
                edge - nxt
            } else {
                0
            }
        };
        let mut want = unsent.min(usable).min(self.send_segment_max());
        if want > self.snd_mss && want < unsent {
            // Large (device-segmented) segments are whole MSS multiples: no
            // runt in the middle of the stream.
            want -= want % self.snd_mss;
        }
        if nxt < self.snd_max {
            if let Some(l) = self.sb.next_sacked_after(nxt) {
                want = want.min(l - nxt);
            }
        }
        let len = if want > 0 {
            let off = nxt - self.snd_buf_seq;
            self.send_buf.get_allocated(off, want).len()
        } else {
            0
        };
        let fin = self.fin_queued && nxt + len == data_end;
        if len == 0 {
            return fin.then_some((nxt, 0, true));
        }
        let retransmission = nxt < self.snd_max;
        let send = retransmission
            || fin
            || want >= self.snd_mss
            || self.force_send
            || ((self.cfg.nodelay || self.snd_una == self.snd_max) && want == unsent)
            || (self.max_snd_wnd > 0 && want >= self.max_snd_wnd / 2);
        send.then_some((nxt, len, fin))
    }

    /// Largest new-data segment: the device's segment size when it segments
    /// itself (TSO/GSO) and the peer takes our full MSS, else the MSS.
    fn send_segment_max(&self) -> usize {
        let opt = if self.ts_ok { TS_OPTION_LEN } else { 0 };
        if self.cfg.max_send_segment > self.snd_mss && self.snd_mss + opt >= self.cfg.mss as usize {
            self.cfg.max_send_segment
        } else {
            self.snd_mss
        }
    }

    /// The segment at SND.UNA for a fast retransmission.
    fn retransmit_segment(&self) -> Option<(SeqNum, usize, bool)> {
        self.segment_at(self.snd_una, self.snd_mss)
    }

    /// Up to `max` bytes of sent data at `seq` (SND.UNA <= seq < SND.MAX),
    /// with our FIN if the segment reaches it and it was sent.
    fn segment_at(&self, seq: SeqNum, max: usize) -> Option<(SeqNum, usize, bool)> {
        if !self.synchronized_sender() || seq < self.snd_una || seq >= self.snd_max {
            return None;
        }
        let data_end = self.snd_buf_seq + self.send_buf.len();
        let fin_sent = self.fin_queued && self.snd_max > data_end;
        if seq < data_end {
            let off = seq - self.snd_buf_seq;
            let want = (data_end - seq)
                .min(max.min(self.snd_mss))
                .min(self.snd_max - seq);
            let len = self.send_buf.get_allocated(off, want).len();
            let fin = fin_sent && seq + len == data_end;
            (len > 0 || fin).then_some((seq, len, fin))
        } else if fin_sent {
            Some((seq, 0, true))
        } else {
            None
        }
    }

    /// The tail loss probe: the last MSS of the highest unSACKed range.
    fn probe_segment(&self) -> Option<(SeqNum, usize, bool)> {
        if self.snd_una == self.snd_max {
            return None;
        }
        let mut end = self.snd_max;
        while let Some((l, _)) = self.sb.range_at(end - 1) {
            if l <= self.snd_una {
                return None;
            }
            end = l;
        }
        let start = if end - self.snd_una > self.snd_mss {
            end - self.snd_mss
        } else {
            self.snd_una
        };
        self.segment_at(start, end - start)
    }

    /// RFC 6675 §5 step (C): while cwnd − pipe ≥ 1 SMSS, what NextSeg() says.
    fn sack_output(&self) -> Option<Out> {
        let pipe = self.sb.pipe(self.snd_una, self.snd_max, self.snd_mss);
        if self.cc.cwnd() < pipe + self.snd_mss {
            return None;
        }
        let data = self.data_to_send();
        match self
            .sb
            .next_seg(self.snd_una, self.snd_max, self.snd_mss, data.is_some())?
        {
            NextSeg::Retransmit { seq, len } => self
                .segment_at(seq, len)
                .map(|(s, l, f)| Out::Retransmit(s, l, f)),
            NextSeg::NewData => data.map(|(s, l, f)| Out::Data(s, l, f)),
            NextSeg::Rescue { seq, len } => self
                .segment_at(seq, len)
                .map(|(s, l, f)| Out::Rescue(s, l, f)),
        }
    }

    fn next_output(&self) -> Option<Out> {
        if let Some((seq, ack)) = self.rst_reply {
            return Some(Out::RstReply(seq, ack));
        }
        if self.rst_pending {
            return Some(Out::Rst);
        }
        match self.state {
            State::Closed | State::Listen => return None,
            State::SynSent => return (self.snd_nxt == self.iss).then_some(Out::Syn),
            State::SynReceived if self.snd_nxt == self.iss => return Some(Out::SynAck),
            _ => {}
        }
        if self.rtx_pending {
            if let Some((s, l, f)) = self.retransmit_segment() {
                return Some(Out::Retransmit(s, l, f));
            }
        }
        if self.tlp_pending {
            if let Some((s, l, f)) = self.probe_segment() {
                return Some(Out::TailProbe(s, l, f));
            }
        }
        if self.sack_recovery() {
            if let Some(out) = self.sack_output() {
                return Some(out);
            }
        } else if let Some((s, l, f)) = self.data_to_send() {
            return Some(Out::Data(s, l, f));
        }
        if self.ack_now {
            return Some(Out::Ack);
        }
        if self.probe_pending {
            return Some(Out::Probe);
        }
        None
    }

    /// Run expired timers, then return the next segment to send now, if any.
    /// The caller sends it (a lost send is recovered like a lost packet).
    /// Call repeatedly until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<TcpRepr<'_>> {
        self.now = now;
        self.run_timers(now);
        let Some(out) = self.next_output() else {
            self.rtx_pending = false;
            self.tlp_pending = false;
            self.update_timers(now);
            return None;
        };
        let mut seg = SegSpec {
            seq: self.snd_nxt,
            syn: false,
            fin: false,
            rst: false,
            ack: true,
            off: 0,
            len: 0,
        };
        match out {
            Out::RstReply(seq, ack) => {
                self.rst_reply = None;
                return Some(self.reply_rst(seq, ack));
            }
            Out::Rst => {
                self.rst_pending = false;
                seg.seq = self.snd_max;
                seg.rst = true;
            }
            Out::Syn | Out::SynAck => {
                if self.snd_max != self.iss {
                    self.stats.retransmits += 1;
                } else {
                    self.rtt_sample = Some((self.iss + 1, now));
                }
                seg.seq = self.iss;
                seg.syn = true;
                seg.ack = out == Out::SynAck;
                self.snd_nxt = self.iss + 1;
                self.snd_max = self.snd_max.max(self.snd_nxt);
            }
            Out::Retransmit(seq, len, fin) => {
                let first = std::mem::take(&mut self.rtx_pending);
                self.stats.retransmits += 1;
                let end = seq + len + fin as usize;
                if self.sack_recovery() {
                    // HighRxt; after the first retransmission of a recovery
                    // also RescueRxt, so no rescue before it is acknowledged (4.3).
                    if end > self.sb.high_rxt {
                        self.sb.high_rxt = end;
                    }
                    if first && self.sb.rescue_rxt.is_none() {
                        self.sb.rescue_rxt = Some(end - 1);
                    }
                    if let Some(e) = self.rtx_log.iter_mut().find(|e| e.0 == seq) {
                        e.1 = self.snd_max;
                    } else if self.rtx_log.len() < 64 {
                        self.rtx_log.push((seq, self.snd_max));
                    }
                }
                seg.seq = seq;
                seg.len = len;
                seg.off = seq - self.snd_buf_seq;
                seg.fin = fin;
                if self.snd_nxt < end {
                    self.snd_nxt = end;
                }
            }
            Out::TailProbe(seq, len, fin) => {
                self.tlp_pending = false;
                self.tlp_probe = Some(seq);
                self.tlp_round = self.tlp_round.saturating_add(1);
                self.rtt_sample = None; // Karn
                self.stats.retransmits += 1;
                self.stats.tail_loss_probes += 1;
                seg.seq = seq;
                seg.len = len;
                seg.off = seq - self.snd_buf_seq;
                seg.fin = fin;
            }
            Out::Rescue(seq, len, fin) => {
                // RFC 6675 NextSeg() rule 4: RescueRxt = RecoveryPoint;
                // HighRxt is not moved.
                self.stats.retransmits += 1;
                self.sb.rescue_rxt = Some(self.recover.unwrap_or(self.snd_max) - 1);
                seg.seq = seq;
                seg.len = len;
                seg.off = seq - self.snd_buf_seq;
                seg.fin = fin;
            }
            Out::Data(seq, len, fin) => {
                self.force_send = false;
                if seq < self.snd_max {
                    self.stats.retransmits += 1;
                } else if self.rtt_sample.is_none() && len + fin as usize > 0 {
                    self.rtt_sample = Some((seq + len + fin as usize, now));
                }
                seg.seq = seq;
                seg.len = len;
                seg.off = seq - self.snd_buf_seq;
                seg.fin = fin;
                self.snd_nxt = seq + len + fin as usize;
                self.snd_max = self.snd_max.max(self.snd_nxt);
            }
            Out::Ack => {}
            Out::Probe => {
                self.probe_pending = false;
                seg.seq = self.snd_una - 1;
            }
        }
        self.update_timers(now);
        Some(self.build(now, seg))
    }

    fn reply_rst(&mut self, seq: SeqNum, ack: Option<SeqNum>) -> TcpRepr<'static> {
        self.stats.segs_out += 1;
        TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq,
            ack,
            rst: true,
            ..TcpRepr::default()
        }
    }

    /// The window field for an ACK now, updating RCV.ADV: free buffer space,
    /// grown only in steps of min(MSS, buffer/2) (receiver SWS avoidance,
    /// §3.8.6.2.2) and never moving the right edge left.
    fn window_for_ack(&mut self, now: Instant) -> u16 {
        let ws = self.rcv_wscale;
        let max_edge = self.rcv_nxt + self.rcv_buf.window().min(1 << 30);
        let threshold = self.sws_threshold();
        let cur_edge = if self.rcv_adv < self.rcv_nxt {
            self.rcv_nxt
        } else {
            self.rcv_adv
        };
        let (wnd, round_up) = if max_edge > cur_edge && max_edge - cur_edge >= threshold {
            (max_edge - self.rcv_nxt, false)
        } else {
            (cur_edge - self.rcv_nxt, true)
        };
        let unit = 1usize << ws;
        let field = if round_up {
            wnd.div_ceil(unit)
        } else {
            wnd >> ws
        }
        .min(MAX_WINDOW_UNSCALED);
        let adv = self.rcv_nxt + (field << ws);
        if self.drs.mark.is_none() && adv > self.rcv_nxt {
            self.drs.mark = Some((adv, now));
        }
        if adv > self.rcv_adv {
            self.rcv_adv = adv;
        }
        field as u16
    }

    fn sws_threshold(&self) -> usize {
        (self.cfg.mss as usize)
            .min(self.rcv_buf.capacity() / 2)
            .max(1)
    }

    fn build(&mut self, now: Instant, s: SegSpec) -> TcpRepr<'_> {
        let mut options = TcpOptions::default();
        let window = if s.syn {
            let w = self.rcv_buf.window().min(MAX_WINDOW_UNSCALED);
            if self.state == State::SynReceived {
                self.rcv_adv = self.rcv_nxt + w;
            }
            options.mss = Some(self.cfg.mss);
            let offer_ws = if s.ack {
                self.ws_ok
            } else {
                self.cfg.window_scaling
            };
            if offer_ws {
                options.window_scale = Some(self.rcv_wscale);
            }
            options.sack_permitted = if s.ack { self.sack_ok } else { self.cfg.sack };
            let offer_ts = if s.ack {
                self.ts_ok
            } else {
                self.cfg.timestamps
            };
            if offer_ts {
                options.timestamps =
                    Some((self.ts_val(now), if s.ack { self.ts_recent } else { 0 }));
            }
            w as u16
        } else if s.ack {
            self.window_for_ack(now)
        } else {
            0
        };
        if !s.syn && self.ts_ok {
            options.timestamps = Some((self.ts_val(now), self.ts_recent));
        }
        if s.ack {
            self.last_ack_sent = self.rcv_nxt;
            self.ack_now = false;
            self.urgent_ack = false;
            self.rcv_unacked = 0;
            self.delack_at = None;
            // Only on segments without payload: data segments are sized for
            // the timestamp option alone.
            if self.sack_ok && !s.syn && s.len == 0 && !self.assembler.is_empty() {
                self.fill_sack(&mut options);
            }
        }
        self.stats.segs_out += 1;
        self.stats.bytes_sent += s.len as u64;
        let data_end = self.snd_buf_seq + self.send_buf.len();
        let (payload, backing) = self.send_buf.get_lendable(s.off, s.len);
        TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq: s.seq,
            ack: s.ack.then_some(self.rcv_nxt),
            syn: s.syn,
            fin: s.fin,
            rst: s.rst,
            psh: s.len > 0 && s.seq + s.len == data_end,
            window,
            options,
            payload,
            backing,
            ..TcpRepr::default()
        }
    }

    /// SACK blocks (RFC 2018 §4): the most recently received block first.
    fn fill_sack(&self, options: &mut TcpOptions) {
        let max = if self.ts_ok { 3 } else { 4 };
        let mut n = 0;
        let recent = self.last_ooo;
        let to_seq = |(a, b): (usize, usize)| (self.rcv_nxt + a, self.rcv_nxt + b);
        if let Some(r) = recent {
            if let Some(b) = self
                .assembler
                .ranges()
                .map(to_seq)
                .find(|&(a, b)| r.in_range(a, b))
            {
                options.sack_blocks[0] = Some(b);
                n = 1;
            }
        }
        for b in self.assembler.ranges().map(to_seq) {
            if n >= max {
                break;
            }
            if options.sack_blocks[0] == Some(b) {
                continue;
            }
            options.sack_blocks[n] = Some(b);
            n += 1;
        }
    }

    /// When `poll_transmit` must next be called even without new input
    /// (retransmission, delayed ACK, persist, TIME-WAIT, keep-alive timers).
    pub fn poll_at(&self) -> Option<Instant> {
        if self.next_output().is_some() {
            return Some(self.now);
        }
        [
            self.rtx_at,
            self.tlp_at,
            self.reo_at,
            self.rxt_probe_at,
            self.persist_at,
            self.delack_at,
            self.timewait_at,
            self.keepalive_at,
            self.fin2_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ------------------------------------------------------------------
    // User calls
    // ------------------------------------------------------------------

    /// Queue data for sending; returns bytes accepted (0 < n <= data.len()),
    /// `WouldBlock` if the send buffer is full, or the connection's error.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, TcpError> {
        self.check_send()?;
        if data.is_empty() {
            return Ok(0);
        }
        match self.send_buf.enqueue_slice(data) {
            0 => Err(TcpError::WouldBlock),
            n => Ok(n),
        }
    }

    /// Zero-copy [`Tcb::send`]: `f` writes into the send buffer's free
    /// space (one contiguous run; it may be shorter than the free space at
    /// the wrap point) and returns how many bytes it wrote. `WouldBlock`
    /// if the buffer is full (`f` is not called).
    pub fn send_with(&mut self, f: impl FnOnce(&mut [u8]) -> usize) -> Result<usize, TcpError> {
        self.check_send()?;
        if self.send_buf.is_full() {
            return Err(TcpError::WouldBlock);
        }
        Ok(self.send_buf.enqueue_with(f))
    }

    /// The connection accepts data from the application.
    fn check_send(&self) -> Result<(), TcpError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.fin_queued {
            return Err(TcpError::Closed);
        }
        match self.state {
            State::SynSent | State::SynReceived | State::Established | State::CloseWait => Ok(()),
            _ => Err(TcpError::NotConnected),
        }
    }

    /// Read in-order data. `Ok(0)` means end of stream (FIN received and all
    /// data read); `WouldBlock` means nothing yet.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TcpError> {
        if !self.rcv_buf.is_empty() {
            if buf.is_empty() {
                return Ok(0);
            }
            let n = self.rcv_buf.dequeue_slice(buf);
            self.consumed(n);
            return Ok(n);
        }
        self.recv_empty()
    }

    /// Zero-copy [`Tcb::recv`]: `f` sees the received in-order bytes (one
    /// contiguous run, which may be shorter than what is queued at the wrap
    /// point) and returns how many it consumed. `f` is called only when
    /// bytes are queued; otherwise the result is that of `recv`: `Ok(0)` at
    /// end of stream, `WouldBlock`, or the connection's error.
    pub fn recv_with(&mut self, f: impl FnOnce(&[u8]) -> usize) -> Result<usize, TcpError> {
        if !self.rcv_buf.is_empty() {
            let n = self.rcv_buf.dequeue_with(f);
            self.consumed(n);
            return Ok(n);
        }
        self.recv_empty()
    }

    /// [`Tcb::recv`] of up to `max` bytes that the receive buffer kept as
    /// packets ([`RecvBuffer::take_kept`]): appended to `out` for the
    /// caller to copy later. `0` when the next bytes are not kept ones
    /// (or there are none): use `recv`.
    pub fn recv_kept(&mut self, max: usize, out: &mut Vec<PacketSlice>) -> usize {
        let n = self.rcv_buf.take_kept(max, out);
        if n > 0 {
            self.consumed(n);
        }
        n
    }

    /// The application took `n` bytes: count them for auto-tuning and open
    /// the window.
    fn consumed(&mut self, n: usize) {
        self.drs.copied += n as u64;
        self.maybe_window_update();
    }

    /// What a read of an empty receive buffer returns.
    fn recv_empty(&self) -> Result<usize, TcpError> {
        if self.fin_received {
            return Ok(0);
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.state {
            State::SynSent
            | State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2 => Err(TcpError::WouldBlock),
            _ => Err(TcpError::NotConnected),
        }
    }

    /// Receive-buffer auto-tuning (Linux `tcp_rcv_space_adjust`), run as
    /// in-order data arrives: measure the receive-side RTT, and once per
    /// RTT, if the application read more than in the last growing round
    /// trip, size the buffer for twice that plus sixteen segments (more if
    /// the rate is still climbing: the sender may be in slow start), up to
    /// `recv_buffer_max`. A slow reader never reads a buffer's worth per
    /// RTT, so its buffer stays as it is.
    fn tune_rcv_buf(&mut self, now: Instant) {
        let d = &mut self.drs;
        if let Some((end, at)) = d.mark {
            if self.rcv_nxt >= end {
                let sample = now - at;
                if sample > Duration::ZERO && d.rtt.is_none_or(|r| sample < r) {
                    d.rtt = Some(sample);
                }
                d.mark = None;
            }
        }
        let max = self.cfg.recv_buffer_max;
        let Some(rtt) = d.rtt else { return };
        if now - d.epoch_at < rtt {
            return;
        }
        let copied = (d.copied - d.epoch_copied) as usize;
        if copied > d.space {
            let space = d.space.max(1);
            let mss = self.cfg.mss as usize;
            let win = 2 * copied + 16 * mss;
            let more = (win as u128 * (copied - space) as u128 / space as u128) as usize;
            let want = win.saturating_add(2 * more).min(max);
            if want > self.rcv_buf.capacity() {
                self.rcv_buf.grow(want.next_power_of_two().min(max));
                self.stats.recv_buffer_grown += 1;
            }
            d.space = copied;
        }
        d.epoch_copied = d.copied;
        d.epoch_at = now;
    }

    /// Send-buffer auto-tuning (Linux `tcp_should_expand_sndbuf`): an ACK
    /// that finds the send buffer full while the congestion window and the
    /// peer's window both allow more than is in flight means the buffer is
    /// the limit; double it, up to `send_buffer_max`.
    fn tune_send_buf(&mut self, flight_before: usize) {
        let cap = self.send_buf.capacity();
        let max = self.cfg.send_buffer_max;
        if cap >= max || !self.send_buf.is_full() {
            return;
        }
        if flight_before < self.cwnd() && flight_before < self.snd_wnd {
            self.send_buf.grow((2 * cap).min(max));
            self.stats.send_buffer_grown += 1;
        }
    }

    /// After the application read: ACK at once if the window we could offer
    /// is at least twice what the peer knows and grew by a full step.
    fn maybe_window_update(&mut self) {
        if self.fin_received
            || !matches!(
                self.state,
                State::Established | State::FinWait1 | State::FinWait2
            )
        {
            return;
        }
        let cur = self.rcv_adv - self.rcv_nxt;
        let free = self.rcv_buf.window();
        if free >= cur + self.sws_threshold() && free >= 2 * cur {
            self.ack_now = true;
        }
    }

    /// Send an ACK with the current window at the next transmit, now: for a
    /// connection rebuilt from a SYN cookie, whose SYN-ACK offered a window
    /// of one segment (see `syncookie::first_flight_window`), this opens
    /// the full window without waiting for the client's data.
    pub fn announce_window(&mut self) {
        if matches!(self.state, State::Established | State::CloseWait) {
            self.ack_now = true;
        }
    }

    /// Half-close: send FIN after all queued data (RFC 9293 CLOSE call).
    pub fn shutdown(&mut self) {
        match self.state {
            State::SynSent => {
                if self.send_buf.is_empty() {
                    self.enter_closed();
                } else {
                    self.fin_queued = true;
                }
            }
            State::SynReceived => self.fin_queued = true,
            State::Established => {
                self.fin_queued = true;
                self.state = State::FinWait1;
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// Abort: send RST (if synchronized) and go to CLOSED.
    pub fn abort(&mut self) {
        let send_rst = matches!(
            self.state,
            State::SynReceived
                | State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
        );
        self.enter_closed();
        self.rst_pending = send_rst;
    }

    /// An ACK is due that must go out before the next segment is processed
    /// (it reports a gap, a duplicate or a filled hole: RFC 5681 §4.2 says
    /// such ACKs are sent at once, and the peer counts duplicates). Ordinary
    /// ACKs may be coalesced over a receive batch, as GRO does in Linux.
    pub fn wants_urgent_ack(&self) -> bool {
        self.urgent_ack && self.ack_now
    }

    /// The application closed its handle: nobody will read, write or close
    /// again. Bounds the wait for the peer's FIN in FIN-WAIT-2 by
    /// `cfg.fin_timeout` (Linux's tcp_fin_timeout), so a peer that never
    /// closes cannot pin the connection forever.
    pub fn orphan(&mut self) {
        self.orphaned = true;
        let now = self.now;
        self.arm_fin2_timer(now);
    }

    /// Offset added to the millisecond clock in our TSvals (RFC 7323 §7.1:
    /// a random per-connection offset keeps timestamps from revealing the
    /// host's clock or linking connections). Set before the first
    /// `poll_transmit`; the owner draws it from its RNG.
    pub fn set_ts_offset(&mut self, offset: u32) {
        self.ts_offset = offset;
    }

    pub fn set_nodelay(&mut self, nodelay: bool) {
        self.cfg.nodelay = nodelay;
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The error that ended (or refused) this connection, if any.
    pub fn error(&self) -> Option<TcpError> {
        self.error
    }

    /// CLOSED with nothing left to send: the stack may forget this TCB.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed && !self.rst_pending && self.rst_reply.is_none()
    }

    /// True if `recv` would return data, end of stream, or an error.
    pub fn can_recv(&self) -> bool {
        !self.rcv_buf.is_empty()
            || self.fin_received
            || self.error.is_some()
            || matches!(
                self.state,
                State::Closed | State::Closing | State::LastAck | State::TimeWait
            )
    }

    /// Free space in the send buffer (0 once the write side is shut or failed).
    pub fn send_capacity(&self) -> usize {
        if self.fin_queued
            || self.error.is_some()
            || !matches!(
                self.state,
                State::SynSent | State::SynReceived | State::Established | State::CloseWait
            )
        {
            0
        } else {
            self.send_buf.window()
        }
    }

    /// Bytes queued but not yet acknowledged plus bytes not yet sent.
    pub fn send_queue(&self) -> usize {
        self.send_buf.len()
    }

    /// An ACK is due at once (`ack_now`): e.g. the application's last read
    /// opened the window far enough for an update (`maybe_window_update`).
    /// The runtime wakes its event loop after a read only when this is set.
    pub fn ack_due(&self) -> bool {
        self.ack_now
    }

    /// Received packet buffers the application has read to the end, for
    /// the device to reuse (see [`RecvBuffer::keep`]).
    pub fn take_spent_rx(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.rcv_buf.take_spent()
    }

    /// Bytes received in order and not yet read by the application (ss's Recv-Q).
    pub fn recv_queue(&self) -> usize {
        self.rcv_buf.len()
    }

    pub fn local(&self) -> SocketAddrV4 {
        self.local
    }

    pub fn remote(&self) -> SocketAddrV4 {
        self.remote
    }

    pub fn stats(&self) -> TcpStats {
        let mut s = self.stats.clone();
        s.state = Some(self.state);
        s.cc = self.cc.name();
        s.cwnd = self.cwnd();
        s.ssthresh = self.cc.ssthresh();
        s.srtt = self.rtt.srtt();
        s.rttvar = self.rtt.rttvar();
        s.rto = self.rtt.rto();
        s.mss = self.snd_mss;
        s.bytes_in_flight = self.snd_max - self.snd_una;
        s.snd_wnd = self.snd_wnd;
        s.rcv_wnd = self.rcv_adv - self.rcv_nxt;
        s.snd_wscale = self.snd_wscale;
        s.rcv_wscale = self.rcv_wscale;
        s.send_buffer = self.send_buf.capacity();
        s.recv_buffer = self.rcv_buf.capacity();
        s.rcv_rtt = self.drs.rtt;
        if let Some(h) = &self.hystart {
            (s.hystart_css, s.hystart_exits) = (h.css_entries(), h.exits());
        }
        s
    }
}

/// Fields of one outgoing segment before the window and options are added.
#[derive(Clone, Copy, Debug)]
struct SegSpec {
    seq: SeqNum,
    syn: bool,
    fin: bool,
    rst: bool,
    ack: bool,
    /// Payload offset in the send buffer.
    off: usize,
    len: usize,
}

/// `a` is earlier than `b` in timestamp space (RFC 7323 §5.3: modulo 2^32).
fn ts_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The reset to send for a segment that matched no connection (RFC 9293
/// §3.10.7.1, CLOSED state): none for an incoming RST; otherwise
/// `<SEQ=SEG.ACK><CTL=RST>` if ACK was set, else `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`.
/// Ports are swapped.
pub fn reset_for(seg: &TcpRepr) -> Option<TcpRepr<'static>> {
    if seg.rst {
        return None;
    }
    let (seq, ack) = match seg.ack {
        Some(a) => (a, None),
        None => (SeqNum(0), Some(seg.seq + seg.segment_len())),
    };
    Some(TcpRepr {
        src_port: seg.dst_port,
        dst_port: seg.src_port,
        seq,
        ack,
        rst: true,
        ..TcpRepr::default()
    })
}
