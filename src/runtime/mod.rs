//! The runtime: one thread runs a mio event loop around a device and owns
//! the [`Stack`]; application threads hold std-like handles
//! ([`TcpListener`], [`TcpStream`], [`UdpSocket`]) whose blocking calls move
//! bytes between the caller and the socket buffers and wake the loop.
//!
//! Device I/O never happens under the stack lock: the loop reads a batch of
//! packets from the fd into a [`QueueDevice`], takes the lock, runs
//! `Stack::poll` against that queue, releases the lock, and only then writes
//! the queued output to the fd.
//!
//! While the loop sleeps, a thread that writes to a socket (or whose read
//! opens the window) sends the segments itself, as a kernel's `send` runs
//! TCP in the caller's context: it polls the stack into a queue of its own
//! and writes that to the device, sparing the loop a wake-up and the
//! message the hand-off's latency ([`Shared::kick`]). The device lock is
//! taken before the stack lock is released, on this path as on the loop's,
//! so packets reach the device in the order the stack made them.

mod socket;
mod writer;

pub use socket::{TcpListener, TcpStream, UdpSocket};

use crate::phy::queue::QueueDevice;
use crate::phy::Device;
use crate::rng::Rng;
use crate::stack::{SocketHandle, Stack, StackConfig, StackStats};
use crate::tcp::TcpStats;
use crate::time::{Clock, Duration, Instant};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use writer::Writer;

const DEVICE: Token = Token(0);
const WAKER: Token = Token(1);
const TIMER: Token = Token(2);

/// Below this, a timeout goes to a timerfd as well as to `epoll_wait`,
/// whose timeout is whole milliseconds (mio rounds up): the stack's
/// sub-millisecond timers (a reordering window of SRTT/4 over a 50 µs path)
/// would otherwise wait a full millisecond or more.
const PRECISE_BELOW: Duration = Duration::from_millis(5);

/// Memory bound of one device read pass: a batch of maximum-size packets.
const RX_BATCH_BYTES: usize = 16 << 20;

/// A one-shot CLOCK_MONOTONIC timerfd registered with the loop's poll, for
/// wake-ups with microsecond rather than millisecond resolution.
struct PreciseTimer {
    fd: std::os::fd::OwnedFd,
}

impl PreciseTimer {
    fn new(poll: &Poll) -> io::Result<PreciseTimer> {
        use std::os::fd::FromRawFd;
        // SAFETY: timerfd_create takes no pointers; a new fd or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        poll.registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), TIMER, Interest::READABLE)?;
        Ok(PreciseTimer { fd })
    }

    /// Fire once after `after` (not zero).
    fn arm(&self, after: Duration) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: (after.subsec_nanos().max(1)) as libc::c_long,
            },
        };
        // SAFETY: both pointers are to values we own for the call.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0
        {
            log::warn!("timerfd_settime: {}", io::Error::last_os_error());
        }
    }

    /// Consume an expiry so the next one is a new edge.
    fn drain(&self) {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a buffer we own.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
    }
}

/// How the runtime hands work between threads (see [`RuntimeStats`]).
#[derive(Default)]
struct Counters {
    waker_writes: AtomicU64,
    loop_passes: AtomicU64,
    direct_sends: AtomicU64,
    direct_packets: AtomicU64,
    thread_wakeups: AtomicU64,
    lent_writes: AtomicU64,
}

/// Counters of the runtime's hand-offs: what a message costs beyond the
/// protocol work ([`Net::runtime_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Wakes of the event loop through its eventfd (coalesced).
    pub waker_writes: u64,
    /// Passes of the event loop (packets, timers, wakes).
    pub loop_passes: u64,
    /// Writes whose segments their own thread sent while the loop slept.
    pub direct_sends: u64,
    /// Packets those writes put on the device.
    pub direct_packets: u64,
    /// Returns from a blocked thread's wait (signalled or timed out) that
    /// the wait then re-checked.
    pub thread_wakeups: u64,
    /// Output handed to the writer thread (pure ACKs; see `writer`), in
    /// submissions and packets, and the thread's wake-ups from sleep. All
    /// zero on a device that cannot split off its transmit side.
    pub writer_batches: u64,
    pub writer_packets: u64,
    pub writer_wakeups: u64,
    /// Data segments written with their payload on loan from the send
    /// buffer ([`crate::lend`]), not copied into a packet buffer first.
    pub lent_writes: u64,
}

/// State shared between the event loop and the handles.
pub(crate) struct Shared {
    pub(crate) inner: Mutex<Inner>,
    /// The device, shared by the loop (reads, writes) and threads that send
    /// while the loop sleeps. Lock order: `inner`, then `tx_queue`, then
    /// `device`; whoever holds `device` takes no other lock than the
    /// writer thread's hand-off (see `writer`), which takes none.
    device: Mutex<Box<dyn Device + Send>>,
    /// Output of a sending thread's stack poll ([`Shared::kick`]).
    tx_queue: Mutex<QueueDevice>,
    /// The loop is asleep in `epoll_wait` (and not about to poll again).
    parked: AtomicBool,
    waker: Waker,
    /// A wake is on its way to the loop and the loop has not yet started
    /// the pass that will see it: further wakes need no waker write.
    wake_pending: AtomicBool,
    stopped: AtomicBool,
    /// Why the event loop stopped, if it failed ([`Net::failure`]).
    failure: Mutex<Option<String>>,
    /// Received packet buffers that readers copied from outside the stack
    /// lock ([`Stack::tcp_recv_kept`]) and were the last to hold, or that
    /// the stack gave back to a sending thread's queue: the loop
    /// reads into them again. A leaf lock, held for a push or a drain.
    rx_returns: Mutex<Vec<Vec<u8>>>,
    counters: Counters,
    pub(crate) clock: Clock,
    /// The writer thread's hand-off, if the device split off a transmit
    /// side ([`Device::split_tx`]).
    writer: Option<Arc<Writer>>,
}

pub(crate) struct Inner {
    pub(crate) stack: Stack,
    /// Condition variables of threads blocked on a socket, by socket index.
    waiters: HashMap<usize, Waiters>,
    /// Code run on the loop thread in every pass ([`Net::run_in_loop`]).
    tasks: Vec<LoopTask>,
    /// The stack deadline the loop sleeps until (from its last pass).
    loop_deadline: Option<Instant>,
}

/// What a blocked thread waits for: the loop signals only the condition
/// variables whose readiness an event carries, as the kernel wakes a
/// socket's readers on data and its writers on freed space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitFor {
    /// Data, end of stream, an error, a connection to accept, a datagram.
    Read,
    /// Send space, the handshake's end, the peer's acknowledgment.
    Write,
}

/// The threads blocked on one socket, by what they wait for.
#[derive(Default)]
struct Waiters {
    read: Option<Arc<Condvar>>,
    write: Option<Arc<Condvar>>,
}

impl Waiters {
    fn for_bits(&self, bits: u8) -> impl Iterator<Item = &Arc<Condvar>> {
        let r = (bits & crate::stack::READABLE != 0).then_some(self.read.as_ref());
        let w = (bits & crate::stack::WRITABLE != 0).then_some(self.write.as_ref());
        r.flatten().into_iter().chain(w.flatten())
    }
}

/// A task on the event-loop thread: called with the stack in every pass of
/// the loop, after the stack has taken in that pass's packets, with the
/// sockets whose state may have changed since the last pass; returns
/// `false` once it is done (it is then dropped).
pub type LoopTask = Box<dyn FnMut(&mut Stack, &[SocketHandle]) -> bool + Send>;

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic on another thread while holding the lock leaves the stack
        // in whatever state it was; keep serving rather than cascading.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tell the loop that a socket has work (data written, window opened, close).
    ///
    /// Wakes are coalesced: the waker (an eventfd write, a syscall) is
    /// written only if no wake is pending since the loop last began a pass.
    /// The caller changed the stack under the lock before calling this, and
    /// the loop clears `wake_pending` (an acquire swap that reads this
    /// release swap) before it takes the lock for its next pass, so that
    /// pass sees the change. A writer streaming into a socket otherwise
    /// writes the eventfd once per `write` call (over 100,000 a second
    /// sending at MTU 1500).
    pub(crate) fn wake(&self) {
        if self.wake_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        self.counters.waker_writes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.waker.wake() {
            log::warn!("cannot wake the stack thread: {e}");
        }
    }

    /// Tell the stack a socket has output (data written, a window update
    /// due). If the loop is asleep, send it from this thread; else wake
    /// the loop. The loop is still woken if this poll left
    /// it something to do: a deadline earlier than the one it sleeps until,
    /// sockets with work, readiness for other threads, a device that holds
    /// packets back.
    pub(crate) fn kick(&self) {
        if !self.parked.load(Ordering::Acquire) {
            return self.wake();
        }
        let mut g = self.lock();
        if self.is_stopped() {
            drop(g);
            return self.wake();
        }
        // Events this poll leaves without readiness bits (the write's own)
        // reach loop tasks in the loop's next pass: none of them made a
        // socket readable or writable, so nothing waits on them.
        let mut q = self.tx_queue.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        let deadline = g.stack.poll(now, &mut *q);
        // Received buffers the stack gave back to this queue (packets that
        // applications read in place) are the loop's to read into: this
        // queue never reads.
        if !q.spare.is_empty() {
            self.return_rx_buffers(q.spare.drain(..));
        }
        let earlier = match (deadline, g.loop_deadline) {
            (Some(d), Some(l)) => d < l,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let mut need_loop = earlier || g.stack.needs_poll() || g.stack.has_ready_events();
        let mut dev = self.device.lock().unwrap_or_else(|e| e.into_inner());
        drop(g);
        if !q.tx.is_empty() {
            let c = &self.counters;
            c.direct_sends.fetch_add(1, Ordering::Relaxed);
            c.direct_packets
                .fetch_add(q.tx.len() as u64, Ordering::Relaxed);
        }
        self.flush(&mut q, 0, &mut **dev, now);
        need_loop |= dev.poll_at().is_some();
        drop(dev);
        drop(q);
        if need_loop {
            self.wake();
        }
    }

    /// Send a pass's output, `q.tx`: through the writer thread or on this
    /// thread, in one batch (see `writer`). The caller holds the device lock.
    fn flush(&self, q: &mut QueueDevice, read: usize, dev: &mut (dyn Device + Send), now: Instant) {
        if q.tx.is_empty() {
            return;
        }
        if let Some(w) = &self.writer {
            if w.submit(q, read) {
                return;
            }
        }
        let lent = q.tx_lent.iter().filter(|l| l.is_some()).count();
        self.counters
            .lent_writes
            .fetch_add(lent as u64, Ordering::Relaxed);
        if let Err(e) = dev.send_batch(now, q) {
            warn_device_error("write", &e);
        }
    }

    /// Give the loop back received packet buffers a reader is done with.
    pub(crate) fn return_rx_buffers(&self, bufs: impl Iterator<Item = Vec<u8>>) {
        let mut r = self.rx_returns.lock().unwrap_or_else(|e| e.into_inner());
        let room = MAX_RX_RETURNS.saturating_sub(r.len());
        r.extend(bufs.take(room));
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Block until `ready` returns `Some`, the deadline passes (`TimedOut`),
    /// or the stack stops. `ready` runs with the stack locked.
    pub(crate) fn wait_for<T>(
        &self,
        h: SocketHandle,
        interest: WaitFor,
        deadline: Option<std::time::Instant>,
        mut ready: impl FnMut(&mut Stack) -> Option<io::Result<T>>,
    ) -> io::Result<T> {
        let mut g = self.lock();
        loop {
            if let Some(r) = ready(&mut g.stack) {
                return r;
            }
            if self.is_stopped() {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the stack has stopped",
                ));
            }
            let w = g.waiters.entry(h.index()).or_default();
            let slot = match interest {
                WaitFor::Read => &mut w.read,
                WaitFor::Write => &mut w.write,
            };
            let cv = slot.get_or_insert_with(|| Arc::new(Condvar::new())).clone();
            g = match deadline {
                None => cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "operation timed out",
                        ));
                    }
                    cv.wait_timeout(g, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            self.counters.thread_wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn forget_waiter(&self, h: SocketHandle) {
        self.lock().waiters.remove(&h.index());
    }
}

/// A device the runtime can drive: packets plus a pollable fd.
pub trait RuntimeDevice: Device + AsRawFd + Send + 'static {}
impl<T: Device + AsRawFd + Send + 'static> RuntimeDevice for T {}

/// A running stack: the event-loop thread and the shared state. Dropping it
/// stops the loop; handles then fail with `NotConnected`.
pub struct Net {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// Writes pure ACKs while the loop reads (see `writer`).
    writer_thread: Option<JoinHandle<()>>,
    thread_ids: Vec<i32>,
    addr: Ipv4Addr,
}

impl Net {
    /// Start a stack on `device` with a random seed from the OS.
    pub fn start<D: RuntimeDevice>(device: D, config: StackConfig) -> io::Result<Net> {
        Net::start_with_rng(device, config, Rng::from_os())
    }

    pub fn start_with_rng<D: RuntimeDevice>(
        mut device: D,
        mut config: StackConfig,
        rng: Rng,
    ) -> io::Result<Net> {
        config.mtu = config.mtu.min(device.mtu());
        let caps = device.capabilities();
        config.max_tso_segment = caps.max_tso_segment;
        config.tx_checksum_partial = caps.tx_checksum_partial;
        let addr = config.addr;
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let fd = device.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), DEVICE, Interest::READABLE)?;
        let mtu = device.mtu();
        let tx_half = device.split_tx();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                stack: Stack::new(config, rng),
                waiters: HashMap::new(),
                tasks: Vec::new(),
                loop_deadline: None,
            }),
            device: Mutex::new(Box::new(device)),
            tx_queue: Mutex::new(QueueDevice::lending(mtu)),
            parked: AtomicBool::new(false),
            waker,
            wake_pending: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            failure: Mutex::new(None),
            rx_returns: Mutex::new(Vec::new()),
            counters: Counters::default(),
            clock: Clock::new(),
            writer: tx_half.as_ref().map(|_| Arc::new(Writer::new())),
        });
        // Each thread reports its kernel thread id as it starts.
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let writer_thread = match (tx_half, shared.writer.clone()) {
            (Some(tx), Some(w)) => {
                let tid_tx = tid_tx.clone();
                Some(
                    std::thread::Builder::new()
                        .name("tunstack-tx".into())
                        .spawn(move || {
                            // SAFETY: gettid has no preconditions.
                            let _ = tid_tx.send(unsafe { libc::gettid() });
                            drop(tid_tx);
                            w.run(tx)
                        })?,
                )
            }
            _ => None,
        };
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tunstack".into())
            .spawn(move || {
                // SAFETY: as above.
                let _ = tid_tx.send(unsafe { libc::gettid() });
                drop(tid_tx);
                let r = event_loop(&s2, poll);
                if let Err(e) = &r {
                    log::error!("stack event loop failed: {e}");
                    *s2.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
                s2.stopped.store(true, Ordering::Release);
                notify_all(&s2);
                r
            })?;
        let mut thread_ids: Vec<i32> = tid_rx.iter().collect();
        thread_ids.sort_unstable();
        Ok(Net {
            shared,
            thread: Some(thread),
            writer_thread,
            thread_ids,
            addr,
        })
    }

    /// Kernel thread ids of the stack's own threads: the event loop and,
    /// on a device that split off its transmit side, the writer thread (for
    /// measuring their CPU, profiling, pinning).
    pub fn thread_ids(&self) -> &[i32] {
        &self.thread_ids
    }

    /// The stack's IPv4 address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Why the event loop stopped on its own, if it did: its device went
    /// away (a TUN whose interface was deleted) or failed. Every blocked
    /// call has then returned an error; the stack serves no more.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stats(&self) -> StackStats {
        self.shared.lock().stack.stats()
    }

    /// The runtime's hand-off counters since the stack started.
    pub fn runtime_stats(&self) -> RuntimeStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RuntimeStats {
            waker_writes: get(&c.waker_writes),
            loop_passes: get(&c.loop_passes),
            direct_sends: get(&c.direct_sends),
            direct_packets: get(&c.direct_packets),
            thread_wakeups: get(&c.thread_wakeups),
            writer_batches: self.shared.writer.as_ref().map_or(0, |w| get(&w.batches)),
            writer_packets: self.shared.writer.as_ref().map_or(0, |w| get(&w.packets)),
            writer_wakeups: self.shared.writer.as_ref().map_or(0, |w| get(&w.wakeups)),
            lent_writes: get(&c.lent_writes),
        }
    }

    /// Every live TCP connection with its stats (like `ss -ti`).
    pub fn tcp_connections(&self) -> Vec<(SocketAddrV4, SocketAddrV4, TcpStats)> {
        self.shared.lock().stack.tcp_connections()
    }

    /// Run `f` with the stack locked (for inspection and tests).
    pub fn with_stack<T>(&self, f: impl FnOnce(&mut Stack) -> T) -> T {
        let r = f(&mut self.shared.lock().stack);
        self.shared.wake();
        r
    }

    /// Run `task` on the event-loop thread, in every pass of the loop with
    /// the stack locked, until it returns `false`. This is the stack's
    /// zero-copy, thread-free API, the way smoltcp applications run: the
    /// task reads and writes socket buffers in place
    /// ([`Stack::tcp_recv_with`], [`Stack::tcp_send_with`]) with no thread
    /// hand-off per message; whatever it queues goes out in the same pass.
    /// It must not block: it holds up every socket of the stack. A pass
    /// runs on every packet batch, timer and wake; the task is given the
    /// sockets that received a segment or changed state or readiness since
    /// the last pass (its own calls on a socket put it in the next list).
    pub fn run_in_loop(
        &self,
        task: impl FnMut(&mut Stack, &[SocketHandle]) -> bool + Send + 'static,
    ) {
        self.shared.lock().tasks.push(Box::new(task));
        self.shared.wake();
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stop the event loop and wait for it; returns its error, if it failed.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> io::Result<()> {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.wake();
        let r = match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("stack thread panicked"))),
            None => Ok(()),
        };
        if let (Some(w), Some(t)) = (&self.shared.writer, self.writer_thread.take()) {
            w.stop();
            if t.join().is_err() {
                log::error!("the writer thread panicked");
            }
        }
        notify_all(&self.shared);
        r
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Most received packet buffers waiting for the loop to reuse them
/// ([`Shared::return_rx_buffers`]); beyond, they are freed.
const MAX_RX_RETURNS: usize = 512;

/// A device error that will not pass: the TUN's interface was deleted
/// (EBADFD from a TUN file detached from it) or the device vanished.
fn device_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADFD) | Some(libc::ENODEV) | Some(libc::ENXIO)
    )
}

/// Device I/O errors since the process started (every thread's).
static DEVICE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Log a failed device read or write: the 1st, 2nd, 4th, 8th... of them,
/// with the count, so a device that fails every packet cannot flood the
/// log (a failed write loses one packet, which TCP repairs).
/// The loop's error when the device is gone.
fn gone(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("the device is gone ({e}): was its interface deleted?"),
    )
}

pub(crate) fn warn_device_error(what: &str, e: &io::Error) {
    let n = DEVICE_ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        log::warn!("device {what} failed: {e} ({n} device errors so far)");
    } else {
        log::debug!("device {what} failed: {e}");
    }
}

fn notify_all(shared: &Shared) {
    let g = shared.lock();
    for cv in g.waiters.values().flat_map(|w| w.for_bits(!0)) {
        cv.notify_all();
    }
}

fn lock_device(shared: &Shared) -> MutexGuard<'_, Box<dyn Device + Send>> {
    shared.device.lock().unwrap_or_else(|e| e.into_inner())
}

fn event_loop(shared: &Shared, mut poll: Poll) -> io::Result<()> {
    let (mtu, caps) = {
        let d = lock_device(shared);
        (d.mtu(), d.capabilities())
    };
    let mut events = Events::with_capacity(16);
    let mut queue = QueueDevice::lending(mtu);
    let mut woken: Vec<SocketHandle> = Vec::new();
    let mut woken_ready: Vec<u8> = Vec::new();
    // Threads to wake: those waiting for room to write, and those waiting
    // for bytes to read (or a connection to accept).
    let mut to_notify_writers: Vec<Arc<Condvar>> = Vec::new();
    let mut to_notify_readers: Vec<Arc<Condvar>> = Vec::new();
    // The largest packet a read may return: one MTU, or a GSO packet of up
    // to 64 KB from a device that segments (a vnet-header TUN). Buffers of
    // the queue grow to this capacity, no further.
    let rx_max = if caps.max_tso_segment > mtu {
        mtu.max(crate::phy::tun::MAX_GSO_PACKET)
    } else {
        mtu
    };
    // For devices that cannot read into a vector's spare capacity.
    let mut rx_buf = Vec::new();
    // Packets read per pass before the stack runs. Bounded by memory (the
    // queue may hold a batch of `rx_max` buffers: 16 MB), and at most 512:
    // kernel -> stack at MTU 1500 measured 8.5-9.1 Gbit/s at 256, 9.7-9.9
    // at 384, 9.9-10.5 at 512, 8.3-8.8 at 768 and 7-9 at 1024 (2 cores).
    // Longer passes let the stack ACK once per larger batch, so the kernel
    // sender handles half as many ACKs and overflows the TUN ring less;
    // past 512 the ACKs come too late and the sender's window stalls.
    // Stack -> kernel was the same within noise at every size.
    let batch = (RX_BATCH_BYTES / rx_max).clamp(64, 512);
    let mut timeout: Option<Duration> = Some(Duration::ZERO);
    let timer = match PreciseTimer::new(&poll) {
        Ok(t) => Some(t),
        Err(e) => {
            log::warn!("no timerfd ({e}): timers have millisecond resolution");
            None
        }
    };
    loop {
        if let (Some(t), Some(after)) = (&timer, timeout) {
            if !after.is_zero() && after < PRECISE_BELOW {
                t.arm(after);
            }
        }
        // Asleep: a thread that writes sends for itself (`Shared::kick`).
        let park = timeout != Some(Duration::ZERO);
        if park {
            shared.parked.store(true, Ordering::Release);
        }
        let r = poll.poll(&mut events, timeout);
        if park {
            shared.parked.store(false, Ordering::Release);
        }
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if let Some(t) = &timer {
            if events.iter().any(|e| e.token() == TIMER) {
                t.drain();
            }
        }
        if shared.is_stopped() {
            return Ok(());
        }
        shared.counters.loop_passes.fetch_add(1, Ordering::Relaxed);
        // Every wake before this point is seen by this pass's stack poll;
        // a wake after it writes the waker again (see `Shared::wake`).
        shared.wake_pending.swap(false, Ordering::AcqRel);
        // 1. Read a batch from the device, outside the lock. mio is
        //    edge-triggered: if the batch filled up, come back without sleeping.
        let mut device_drained = true;
        // Buffers readers are done with, back into the read pool.
        if let Ok(mut r) = shared.rx_returns.try_lock() {
            for b in r.drain(..) {
                queue.recycle(b);
            }
        }
        // One clock read per batch, not per packet (the TUN ignores it).
        let now = shared.clock.now();
        let mut device = lock_device(shared);
        let mut read = 0;
        match device.recv_batch(now, &mut queue, batch, rx_max) {
            // Many packets per system call where the device can.
            Some(r) => match r {
                Ok(n) => {
                    read = n;
                    device_drained = n < batch;
                }
                Err(e) if device_gone(&e) => return Err(gone(e)),
                Err(e) => warn_device_error("read", &e),
            },
            None => {
                for i in 0..batch {
                    // Straight into a queue buffer where the device can;
                    // else through `rx_buf` and a copy.
                    let mut b = queue.take_buffer();
                    let r = match device.recv_vec(now, &mut b, rx_max) {
                        Some(r) => r,
                        None => {
                            rx_buf.resize(rx_max.max(65535), 0);
                            let r = device.recv(now, &mut rx_buf);
                            if let Ok(Some(n)) = r {
                                b.extend_from_slice(&rx_buf[..n]);
                            }
                            r
                        }
                    };
                    match r {
                        Ok(Some(_)) => {
                            queue.push_rx(b, device.rx_checksum_trusted());
                            read += 1;
                        }
                        Ok(None) => {
                            queue.recycle(b);
                            break;
                        }
                        Err(e) if device_gone(&e) => return Err(gone(e)),
                        Err(e) => {
                            queue.recycle(b);
                            warn_device_error("read", &e);
                            break;
                        }
                    }
                    if i == batch - 1 {
                        device_drained = false;
                    }
                }
            }
        }
        drop(device);
        // 2. Run the stack.
        let (deadline, busy, mut device) = {
            let mut g = shared.lock();
            let now = shared.clock.now();
            let mut deadline = g.stack.poll(now, &mut queue);
            // Packets not consumed (rx batch limit inside the stack) stay queued.
            while !queue.rx.is_empty() {
                deadline = g.stack.poll(shared.clock.now(), &mut queue);
            }
            g.stack.drain_events_ready(&mut woken, &mut woken_ready);
            if !g.tasks.is_empty() {
                let inner = &mut *g;
                inner.tasks.retain_mut(|t| t(&mut inner.stack, &woken));
                // What the tasks queued or read (a window update) goes out now.
                if inner.stack.needs_poll() {
                    deadline = inner.stack.poll(shared.clock.now(), &mut queue);
                }
            }
            for (h, bits) in woken.drain(..).zip(woken_ready.drain(..)) {
                if let Some(w) = g.waiters.get(&h.index()) {
                    to_notify_writers.extend(w.for_bits(bits & crate::stack::WRITABLE).cloned());
                    to_notify_readers.extend(w.for_bits(bits & crate::stack::READABLE).cloned());
                }
            }
            g.loop_deadline = deadline;
            // Taken before the stack lock is released: a sending thread's
            // packets (`Shared::kick`) cannot overtake this pass's.
            let device = lock_device(shared);
            (deadline, g.stack.needs_poll(), device)
        };
        // Signal the waiting threads once the stack lock is released: a
        // thread woken while the loop still holds it would at once block on
        // the mutex again (one more futex sleep and wake per message).
        //
        // Writers first, readers after the pass's output is written. A
        // woken thread often preempts the loop on its CPU: a writer should
        // fill the room the ACKs just made while the loop writes segments,
        // but a reader woken now would hold back the ACKs of the bytes it
        // reads, and the sender waits for those. A/B on 2026-12-07, five
        // pairs of runs in turn: readers after the write raised receiving
        // at MTU 65000 in four (mean 38.7 -> 41.8 Gbit/s), and waking
        // writers after it too cost sending 10-20% in two of two.
        for cv in to_notify_writers.drain(..) {
            cv.notify_all();
        }
        // 3. Write the output, outside the lock.
        shared.flush(&mut queue, read, &mut **device, shared.clock.now());
        let device_at = device.poll_at();
        drop(device);
        for cv in to_notify_readers.drain(..) {
            cv.notify_all();
        }
        timeout = if !device_drained || busy {
            Some(Duration::ZERO)
        } else {
            deadline.map(|d| d.saturating_duration_since(shared.clock.now()))
        };
        // A held packet inside a device wrapper (fault injection) also wakes us.
        if let Some(at) = device_at {
            let t = at.saturating_duration_since(shared.clock.now());
            timeout = Some(timeout.map_or(t, |x| x.min(t)));
        }
    }
}

/// Convert an absolute `Instant` deadline into an OS deadline for a timeout.
pub(crate) fn deadline_from(timeout: Option<Duration>) -> Option<std::time::Instant> {
    timeout.map(|t| std::time::Instant::now() + t)
}

#[allow(dead_code)]
pub(crate) fn now_of(shared: &Shared) -> Instant {
    shared.clock.now()
}
