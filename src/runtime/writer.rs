//! The writer thread: device writes that run on a second CPU.
//!
//! Writing a packet into a TUN device runs the kernel's side of it in the
//! writer's system call. For a pure ACK that is the kernel's whole sending
//! path: the ACK frees its retransmission queue, opens its congestion
//! window, and the kernel transmits the next segments (segmentation, the
//! TUN queue) on our time. Profiled receiving at MTU 1500 with the loop
//! doing every write, these ACK writes were 39% of the loop thread's
//! samples (31% in the kernel's `tcp_write_xmit`), and the loop thread was
//! the bottleneck, one CPU at 98% with the other mostly idle.
//!
//! So a pass's output goes to this thread, which writes it while the loop
//! reads and processes the next batch, unless it is a single packet from
//! a light pass ([`BUSY_PASS`]) while this thread sleeps: a reply handed
//! over then waits for this thread to wake (+5 µs at p50 in the ping-pong
//! benchmark), and is written inline, by whichever thread made it (the
//! loop, or a sending thread's [`super::Shared::kick`]). Payloads on loan
//! ([`crate::lend`]) are written inline too: handed over they would be
//! copied. Data went inline always until 2026-12-07: with one `write` per
//! packet, handing data segments over had cost more than it saved
//! (sending at MTU 1500, 4.1 → 3.4 Gbit/s; the kernel's reader then woke
//! on this thread's CPU). With the TUN's writes batched in an io_uring it
//! pays: sending at MTU 1500, where the loop was the one saturated thread
//! and most of its time the kernel's TCP receiving our segments inside our
//! writes, five A/B runs gave 1.47-1.66× smoltcp (mean 1.55×) against
//! 1.23-1.60× (mean 1.37×) in seven with data inline.
//!
//! This thread runs at `SCHED_BATCH` ([`batch_policy`]): handed a pass's
//! output, it wakes where a CPU is free rather than preempting the loop
//! (or the kernel's threads) where it wakes. A/B on 2026-12-07, six pairs
//! of runs taken in turn: receiving at MTU 1500 the median went up in five
//! of six (mean 6.02 → 6.68 Gbit/s, +11%); MTU 65000 both ways and the
//! offload rows within noise; ping-pong p50 within noise (the writer takes
//! no lone reply).
//!
//! Order: packets reach the device in the order the stack made them. Every
//! submission holds the device lock (the loop's, as a sending thread's), so
//! submissions are serialised; a submission writes inline only when this
//! thread holds nothing, neither queued nor being written, and hands over
//! everything otherwise.

use super::QueueDevice;
use crate::phy::TxHalf;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Most written buffers kept for reuse between submissions.
const MAX_DONE: usize = 4096;

/// Pure ACKs go to a sleeping writer thread only from a pass that read at
/// least this many packets: a loop under load, where the thread's CPU is
/// worth its wake-up. Waking a thread on an idle virtual CPU costs tens of
/// microseconds, which a lightly loaded loop would add to an exchange (an
/// ACK of a FIN, then the FIN queued behind it) and would not win back.
/// Receiving in bulk, passes read about 45 packets (100 MB over TUN at MTU
/// 1500 in the e2e test: 72,000 segments in 1,569 passes).
pub(crate) const BUSY_PASS: usize = 8;

pub(crate) struct Writer {
    state: Mutex<State>,
    cv: Condvar,
    /// Submissions handed over, packets written, wake-ups from sleep.
    pub(crate) batches: AtomicU64,
    pub(crate) packets: AtomicU64,
    pub(crate) wakeups: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Handed over, not yet taken by the thread.
    queue: VecDeque<Vec<u8>>,
    /// Written: buffers back to the submitters' pools.
    done: Vec<Vec<u8>>,
    /// The thread holds packets it took and has not finished writing.
    busy: bool,
    /// The thread sleeps on `cv`.
    parked: bool,
    stop: bool,
}

/// Put the calling thread in `SCHED_BATCH`: it runs as before on a CPU
/// nothing else wants, but a wake-up of it no longer preempts the thread
/// running where it wakes ("batch tasks do not preempt", the kernel's
/// wake-up path). The loop hands this thread a pass's output and goes on
/// to read the next batch; woken on the loop's CPU at the default policy,
/// this thread took that CPU at once, and the loop's reading waited for
/// the kernel's whole sending path inside our ACK writes. Any thread may
/// lower itself to this policy: no privilege needed.
fn batch_policy() -> std::io::Result<()> {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: `p` is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &p) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Writer {
    pub(crate) fn new() -> Writer {
        Writer {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            batches: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take every packet of `q.tx`, the output of a pass that read `read`
    /// packets, and return true; or return false, leaving them to the
    /// caller to write at once, if the thread holds nothing and they are a
    /// lone packet of a light pass while it sleeps, or carry payloads on
    /// loan (see the module docs). The caller holds the device lock, and
    /// if this returns false, writes `q.tx` before releasing it. Written
    /// buffers come back into `q`'s pool.
    pub(crate) fn submit(&self, q: &mut QueueDevice, read: usize) -> bool {
        if q.tx.is_empty() {
            return true;
        }
        let mut s = self.lock();
        for b in s.done.drain(..) {
            q.recycle_tx(b);
        }
        let idle = s.queue.is_empty() && !s.busy;
        // A lone packet of a light pass while the thread sleeps (a reply,
        // a handshake's step), or payloads on loan: written here.
        let inline = q.tx_lent.iter().any(Option::is_some)
            || (s.parked && read < BUSY_PASS && q.tx.len() == 1);
        if idle && inline {
            // Nothing of the thread's can be overtaken: it holds nothing,
            // and only submitters (serialised by the device lock, which we
            // hold) give it more.
            return false;
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.packets.fetch_add(q.tx.len() as u64, Ordering::Relaxed);
        // Loans end with the pass that made them (see `crate::lend`): a
        // payload handed over is copied in behind its headers.
        while let Some((mut p, lent)) = q.pop_tx() {
            if let Some(payload) = lent {
                p.extend_from_slice(payload.bytes());
            }
            s.queue.push_back(p);
        }
        let wake = s.parked;
        drop(s);
        if wake {
            self.cv.notify_one();
        }
        true
    }

    /// The thread's body: write what is handed over, in order, until
    /// [`Writer::stop`]; what is queued then is still written.
    pub(crate) fn run(&self, mut tx: Box<dyn TxHalf>) {
        if let Err(e) = batch_policy() {
            log::debug!("writer thread stays at the default policy: {e}");
        }
        let mut batch = VecDeque::new();
        let mut done = Vec::new();
        loop {
            let mut s = self.lock();
            s.busy = false;
            let room = MAX_DONE.saturating_sub(s.done.len());
            // Beyond `room`, the rest of the drain is dropped.
            s.done.extend(done.drain(..).take(room));
            while s.queue.is_empty() {
                if s.stop {
                    return;
                }
                s.parked = true;
                s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
                s.parked = false;
                self.wakeups.fetch_add(1, Ordering::Relaxed);
            }
            std::mem::swap(&mut batch, &mut s.queue);
            s.busy = true;
            drop(s);
            // A full device queue drops a packet (not counted as written):
            // TCP recovers as from any loss.
            if let Err(e) = tx.send_batch(batch.make_contiguous()) {
                super::warn_device_error("write", &e);
            }
            done.extend(batch.drain(..));
        }
    }

    /// The thread holds nothing and sleeps.
    #[cfg(test)]
    fn asleep_with_nothing(&self) -> bool {
        let s = self.lock();
        s.queue.is_empty() && !s.busy && s.parked
    }

    /// Let the thread finish what it holds and return.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    fn segment(flags: u8, payload: usize) -> Vec<u8> {
        let total = 20 + 20 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[9] = 6;
        p[20 + 12] = 5 << 4;
        p[20 + 13] = flags;
        p
    }

    const ACK: u8 = 0x10;

    /// Records what it writes, in order, after an optional delay.
    struct Recorder {
        log: Arc<Mutex<Vec<(char, u8)>>>,
        delay: std::time::Duration,
    }

    impl TxHalf for Recorder {
        fn send(&mut self, packet: &[u8]) -> io::Result<bool> {
            std::thread::sleep(self.delay);
            self.log.lock().unwrap().push(('t', packet[4]));
            Ok(true)
        }
    }

    fn tagged(mut p: Vec<u8>, tag: u8) -> Vec<u8> {
        p[4] = tag;
        p
    }

    #[test]
    fn packets_reach_the_device_in_order_across_inline_writes_and_the_thread() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let w = Arc::new(Writer::new());
        let w2 = w.clone();
        let rec = Recorder {
            log: log.clone(),
            delay: std::time::Duration::from_millis(2),
        };
        let t = std::thread::spawn(move || w2.run(Box::new(rec)));
        let mut q = QueueDevice::new(1500);
        let mut tag = 0u8;
        let mut expect = Vec::new();
        // Rounds of: ACKs only (handed over), then data (inline only if
        // the slow thread has finished, else queued behind the ACKs).
        for round in 0..20 {
            for _ in 0..3 {
                q.tx.push_back(tagged(segment(ACK, 0), tag));
                expect.push(tag);
                tag += 1;
            }
            assert!(
                w.submit(&mut q, BUSY_PASS),
                "pure ACKs of a busy pass are never written inline"
            );
            if round % 4 == 0 {
                // Let the thread write all it holds and sleep: the lone
                // data segment of a light pass goes inline.
                while !w.asleep_with_nothing() {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            q.tx.push_back(tagged(segment(ACK, 100), tag));
            expect.push(tag);
            tag += 1;
            if !w.submit(&mut q, 0) {
                while let Some((p, _)) = q.pop_tx() {
                    log.lock().unwrap().push(('i', p[4]));
                    q.recycle_tx(p);
                }
            }
            assert!(q.tx.is_empty());
        }
        // Two data segments of a light pass go to the sleeping thread.
        while !w.asleep_with_nothing() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for _ in 0..2 {
            q.tx.push_back(tagged(segment(ACK, 10), tag));
            expect.push(tag);
            tag += 1;
        }
        assert!(w.submit(&mut q, 0), "two segments are handed over");
        w.stop();
        t.join().unwrap();
        let log = log.lock().unwrap();
        let order: Vec<u8> = log.iter().map(|&(_, t)| t).collect();
        assert_eq!(order, expect, "every packet once, in order");
        let inline = log.iter().filter(|&&(w, _)| w == 'i').count();
        assert!(
            inline >= 5,
            "data after the thread finished went inline ({inline})"
        );
        assert!(log.iter().filter(|&&(w, _)| w == 't').count() >= 60);
        assert_eq!(w.packets.load(Ordering::Relaxed) as usize, 82 - inline);
        // The thread's last batch came back for reuse with the next
        // submission, beside that submission's own inline packet.
        let mut q2 = QueueDevice::new(1500);
        q2.tx.push_back(segment(ACK, 1));
        if !w.submit(&mut q2, 0) {
            while let Some((p, _)) = q2.pop_tx() {
                q2.recycle_tx(p);
            }
        }
        assert!(q2.tx_spare.len() >= 2, "{} buffers back", q2.tx_spare.len());
    }
}
