//! TCP (RFC 9293), one concern per module:
//!
//! | module | concern |
//! | --- | --- |
//! | [`seq`] | sequence-number arithmetic modulo 2^32 |
//! | [`isn`] | initial sequence numbers (RFC 6528) |
//! | [`rtt`] | RTT estimation and RTO (RFC 6298) |
//! | [`sack`] | the sender's SACK scoreboard and loss recovery rules (RFC 6675) |
//! | [`cc`] | congestion control behind a trait: Reno, CUBIC (RFC 5681, RFC 9438) |
//! | [`buffer`] | ring buffers for send and receive data |
//! | [`assembler`] | out-of-order segment tracking |
//! | [`conn`] | the connection state machine (TCB) |
//! | [`syncookie`] | SYN cookies (RFC 4987 §3.6) for a full SYN queue |
//!
//! Everything here is sans-IO: segments and `Instant`s in, segments and a
//! deadline out.

pub mod assembler;
pub mod buffer;
pub mod cc;
pub mod conn;
pub mod isn;
pub mod rtt;
pub mod sack;
pub mod seq;
pub mod syncookie;

pub use cc::CcAlgorithm;
pub use conn::Tcb;
pub use seq::SeqNum;

use crate::time::Duration;
use std::fmt;

/// Connection states of RFC 9293 §3.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECEIVED",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
        };
        f.write_str(s)
    }
}

/// Errors a TCP socket reports to its user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpError {
    /// Nothing to read / no room to write right now; try again after a poll.
    WouldBlock,
    /// The connection is not (yet or any more) in a state that allows this.
    NotConnected,
    /// Our SYN was answered with RST.
    ConnectionRefused,
    /// The peer reset the connection.
    ConnectionReset,
    /// Retransmissions (or the SYN) went unanswered past the limit.
    TimedOut,
    /// Write after our side was shut down.
    Closed,
}

impl fmt::Display for TcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            TcpError::WouldBlock => "operation would block",
            TcpError::NotConnected => "socket is not connected",
            TcpError::ConnectionRefused => "connection refused by peer (RST in reply to SYN)",
            TcpError::ConnectionReset => "connection reset by peer",
            TcpError::TimedOut => "connection timed out (peer stopped acknowledging)",
            TcpError::Closed => "socket was shut down for writing",
        };
        f.write_str(s)
    }
}

impl std::error::Error for TcpError {}

impl From<TcpError> for std::io::Error {
    fn from(e: TcpError) -> std::io::Error {
        use std::io::ErrorKind as K;
        let kind = match e {
            TcpError::WouldBlock => K::WouldBlock,
            TcpError::NotConnected => K::NotConnected,
            TcpError::ConnectionRefused => K::ConnectionRefused,
            TcpError::ConnectionReset => K::ConnectionReset,
            TcpError::TimedOut => K::TimedOut,
            TcpError::Closed => K::BrokenPipe,
        };
        std::io::Error::new(kind, e)
    }
}

/// Per-connection tunables. Defaults follow Linux where the RFCs leave room,
/// and each is documented with its source.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// MSS we advertise and the ceiling for what we send (the stack derives it from the MTU: MTU - 40).
    pub mss: u16,
    /// Receive buffer size in bytes at the start of a connection (bounds the
    /// advertised window; Linux tcp_rmem[1] is 128 KiB).
    pub recv_buffer: usize,
    /// Receive-buffer auto-tuning ceiling (Linux tcp_rmem[2], 6 MiB): the
    /// buffer grows while the application reads more per round trip than
    /// it holds (dynamic right-sizing, see `Tcb::tune_rcv_buf`). At or
    /// below `recv_buffer`, the buffer keeps its size. The window scale
    /// offered in the SYN is chosen for this size.
    pub recv_buffer_max: usize,
    /// Send buffer size in bytes at the start of a connection.
    pub send_buffer: usize,
    /// Send-buffer auto-tuning ceiling (Linux tcp_wmem[2], 4 MiB): a full
    /// send buffer doubles when an ACK finds the congestion window and the
    /// peer's window larger than what is in flight (see
    /// `Tcb::tune_send_buf`). At or below `send_buffer`, no growth.
    pub send_buffer_max: usize,
    /// Offer/accept window scaling (RFC 7323 §2).
    pub window_scaling: bool,
    /// Disable Nagle's algorithm (like TCP_NODELAY). Default false: Nagle on.
    pub nodelay: bool,
    /// Delayed-ACK timeout (RFC 9293 §3.8.6.3 requires < 0.5 s); `None` ACKs every segment at once.
    pub delayed_ack: Option<Duration>,
    /// Congestion control algorithm.
    pub cc: CcAlgorithm,
    /// HyStart++ (RFC 9406) in the initial slow start: leave it when the
    /// RTT rises (a queue filling) instead of at the first loss (Linux's
    /// CUBIC runs HyStart too). Its RTT floor of 4 ms should keep it out
    /// of the way on a TUN, whose RTTs stay below 1 ms.
    pub hystart: bool,
    /// Initial RTO (RFC 6298 §2.1: 1 s).
    pub rto_initial: Duration,
    /// RTO floor. RFC 6298 says 1 s; Linux uses 200 ms, as do we.
    pub rto_min: Duration,
    /// RTO ceiling (RFC 6298 §2.5 allows >= 60 s; Linux 120 s).
    pub rto_max: Duration,
    /// Retransmissions of one segment before the connection fails with TimedOut (Linux tcp_retries2 = 15).
    pub max_retransmits: u32,
    /// SYN retransmissions before connect fails with TimedOut (Linux tcp_syn_retries = 6).
    pub syn_retries: u32,
    /// How long an orphaned connection (the application closed it) waits in
    /// FIN-WAIT-2 for the peer's FIN before it is dropped (Linux tcp_fin_timeout = 60 s).
    pub fin_timeout: Duration,
    /// Maximum segment lifetime; TIME-WAIT lasts 2·MSL (Linux: 60 s TIME-WAIT).
    pub msl: Duration,
    /// Send keep-alive probes after this much idle time (RFC 9293 §3.8.4); `None` disables.
    pub keepalive: Option<Duration>,
    /// Interval between unanswered keep-alive probes (Linux tcp_keepalive_intvl = 75 s).
    pub keepalive_interval: Duration,
    /// Unanswered keep-alive probes before the connection fails with TimedOut (Linux tcp_keepalive_probes = 9).
    pub keepalive_probes: u32,
    /// Offer SACK-permitted (RFC 2018) and, once agreed, recover from loss with RFC 6675.
    pub sack: bool,
    /// Offer timestamps (RFC 7323: RTTM and PAWS).
    pub timestamps: bool,
    /// RFC 5961 §7: challenge ACKs per second, counted per connection (a
    /// stack-wide counter is the side channel of CVE-2016-5696).
    pub challenge_ack_limit: u32,
    /// Largest segment payload the device accepts and segments itself
    /// (TSO/GSO); the stack sets it from the device. When larger than the MSS
    /// (and the peer takes full-MTU segments), data goes out in segments up
    /// to this size, which the device cuts into MSS-sized ones on the wire.
    pub max_send_segment: usize,
}

impl TcpConfig {
    /// The window-scale shift we offer (RFC 7323 §2.3): the smallest that
    /// lets the largest receive buffer auto-tuning may reach be advertised.
    pub fn our_wscale(&self) -> u8 {
        let most = self.recv_buffer.max(self.recv_buffer_max);
        let mut s = 0u8;
        while s < 14 && (most >> s) > 65535 {
            s += 1;
        }
        s
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            mss: 1460,
            recv_buffer: 256 * 1024,
            recv_buffer_max: 4 * 1024 * 1024,
            send_buffer: 256 * 1024,
            send_buffer_max: 4 * 1024 * 1024,
            window_scaling: true,
            nodelay: false,
            delayed_ack: Some(Duration::from_millis(40)),
            cc: CcAlgorithm::Cubic,
            hystart: true,
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(120),
            max_retransmits: 15,
            syn_retries: 6,
            msl: Duration::from_secs(30),
            fin_timeout: Duration::from_secs(60),
            keepalive: None,
            keepalive_interval: Duration::from_secs(75),
            keepalive_probes: 9,
            sack: false,
            timestamps: false,
            challenge_ack_limit: 10,
            max_send_segment: 0,
        }
    }
}

/// A snapshot of one connection's state, readable like `ss -ti`.
#[derive(Clone, Debug, Default)]
pub struct TcpStats {
    pub state: Option<State>,
    pub cc: &'static str,
    pub cwnd: usize,
    pub ssthresh: usize,
    pub srtt: Option<Duration>,
    pub rttvar: Option<Duration>,
    pub rto: Duration,
    pub mss: usize,
    pub bytes_in_flight: usize,
    pub snd_wnd: usize,
    pub rcv_wnd: usize,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub segs_in: u64,
    pub segs_out: u64,
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    /// Segments retransmitted (any cause).
    pub retransmits: u64,
    pub fast_retransmits: u64,
    pub rto_expirations: u64,
    pub dup_acks: u64,
    pub zero_window_probes: u64,
    pub out_of_order_segs: u64,
    /// Segments that failed the RFC 9293 acceptability test.
    pub unacceptable_segs: u64,
    /// Orphaned connections dropped after waiting `fin_timeout` in FIN-WAIT-2.
    pub fin_wait2_timeouts: u64,
    /// RFC 5961 challenge ACKs sent (after rate limiting).
    pub challenge_acks: u64,
    /// Segments dropped by PAWS (RFC 7323 §5: timestamp older than TS.Recent).
    pub paws_rejected: u64,
    pub keepalive_probes: u64,
    /// Fast-recovery episodes (RFC 6582) entered.
    pub recoveries: u64,
    /// Bytes written and not yet acknowledged (ss's Send-Q; filled by the stack).
    pub send_queue: usize,
    /// Bytes received and not yet read (ss's Recv-Q; filled by the stack).
    pub recv_queue: usize,
    /// Tail loss probes sent (RFC 8985 §7).
    pub tail_loss_probes: u64,
    /// Retransmissions found lost and sent again during SACK recovery.
    pub lost_retransmits: u64,
    /// Send and receive buffer sizes now (auto-tuning grows them; ss's
    /// `skmem` tb and rb).
    pub send_buffer: usize,
    pub recv_buffer: usize,
    /// Times auto-tuning grew the receive / send buffer.
    pub recv_buffer_grown: u64,
    pub send_buffer_grown: u64,
    /// The receive-side RTT buffer auto-tuning uses (ss's `rcv_rtt`).
    pub rcv_rtt: Option<Duration>,
    /// HyStart++: times Conservative Slow Start began, and slow starts it
    /// ended before any loss (0 or 1: only the initial slow start).
    pub hystart_css: u32,
    pub hystart_exits: u32,
}

impl fmt::Display for TcpStats {
    /// One line in the spirit of `ss -ti`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.3}", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into())
        };
        write!(
            f,
            "{} {} wscale:{},{} rto:{:.0} rtt:{}/{} mss:{} cwnd:{} ssthresh:{} bytes_sent:{} bytes_acked:{} bytes_received:{} segs_out:{} segs_in:{} unacked:{} retrans:{} fast_retrans:{} rto_exp:{} dupacks:{} snd_wnd:{} rcv_wnd:{} rcv_rtt:{} skmem:(rb{},tb{})",
            self.state.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            self.cc,
            self.snd_wscale,
            self.rcv_wscale,
            self.rto.as_secs_f64() * 1e3,
            ms(self.srtt),
            ms(self.rttvar),
            self.mss,
            self.cwnd,
            self.ssthresh,
            self.bytes_sent,
            self.bytes_acked,
            self.bytes_received,
            self.segs_out,
            self.segs_in,
            self.bytes_in_flight,
            self.retransmits,
            self.fast_retransmits,
            self.rto_expirations,
            self.dup_acks,
            self.snd_wnd,
            self.rcv_wnd,
            ms(self.rcv_rtt),
            self.recv_buffer,
            self.send_buffer,
        )
    }
}
