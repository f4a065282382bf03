//! Batched device I/O through io_uring: a pass's reads, or its writes, of
//! one descriptor in one system call.
//!
//! A TUN device moves one packet per `read` or `write`, and on this kind of
//! machine the system call around it costs more than a small packet's work
//! in the TUN itself: 0.53 µs for an empty system call (`perf bench syscall
//! basic`, with the CPU-bug mitigations a cloud VM runs), against 1.1 µs
//! per 1500-byte write into a TUN through a ring in batches of 32 and
//! 1.7-2.2 µs one `write` at a time. Each packet still gets its own
//! operation, in order; only the entries and exits into the kernel are
//! shared.
//!
//! Every operation is non-blocking (`RWF_NOWAIT`): it completes while the
//! batch is submitted, with the packet or with `EAGAIN`, and is never left
//! pending in the kernel, so nothing outlives [`Ring::run`] and the
//! buffers it points at are the caller's again when it returns. A read of
//! an empty TUN costs about 0.45 µs this way (0.9 µs as a system call), so
//! readers size their batches to what they expect ([`ReadSizer`]).

use io_uring::{opcode, types, IoUring};
use std::io;
use std::os::fd::RawFd;

/// Most iovecs in one operation (a vnet header, an IP header split around
/// its checksum field, and a payload).
pub const MAX_IOV: usize = 5;

/// Operations per submission; larger batches go in several.
pub const ENTRIES: usize = 256;

/// One read or write: the vectors it moves, filled in by the caller.
#[derive(Clone, Copy)]
pub struct Op {
    pub iov: [libc::iovec; MAX_IOV],
    pub n: usize,
}

impl Default for Op {
    fn default() -> Op {
        Op {
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV],
            n: 0,
        }
    }
}

/// An io_uring for one descriptor.
///
/// The descriptor is not registered with the ring (each operation takes
/// its own reference to the file, an atomic increment): a registered file
/// lives until the ring's asynchronous teardown after the process exits, so
/// a TUN device would outlive its process for a moment, and a program
/// started at once after it (`tunstack dig`, twice in a row) would find the
/// device busy.
pub struct Ring {
    ring: IoUring,
    fd: RawFd,
    /// The batch being built: `ops[..n]` go in the next [`Ring::run`].
    pub ops: Vec<Op>,
    /// Per operation of the last run: bytes moved, or `-errno`.
    results: Vec<i32>,
    /// A submission failed: entries may still sit in the queue.
    broken: bool,
}

// SAFETY: the raw pointers in `ops` are only dereferenced by the kernel
// during `run`, on the calling thread, while the caller vouches for them;
// between runs they are stale values nobody reads.
unsafe impl Send for Ring {}

impl Ring {
    /// A ring for `fd`, which must outlive it. Fails where the kernel has
    /// no io_uring or forbids it (`io_uring_disabled`, seccomp).
    pub fn new(fd: RawFd) -> io::Result<Ring> {
        let ring = IoUring::new(ENTRIES as u32)?;
        Ok(Ring {
            ring,
            fd,
            ops: vec![Op::default(); ENTRIES],
            results: vec![0; ENTRIES],
            broken: false,
        })
    }

    /// Run `ops[..n]` (`n` at most [`ENTRIES`]) as reads into, or writes
    /// from, their vectors, in order, each non-blocking; the result of
    /// each, bytes or `-errno` (`-EAGAIN`: nothing to read, no room), is
    /// at its index of the returned slice. An `Err` means the submission
    /// itself failed: some operations may have run, and the ring refuses
    /// every later batch (the caller goes on without it).
    ///
    /// # Safety
    /// Every iovec of `ops[..n]` points at memory valid for the call:
    /// readable for writes, writable and used by nothing else for reads.
    pub unsafe fn run(&mut self, n: usize, write: bool) -> io::Result<&[i32]> {
        assert!(n <= ENTRIES, "batch of {n} beyond the ring's {ENTRIES}");
        if self.broken {
            return Err(io::Error::other("io_uring submission failed earlier"));
        }
        if n == 0 {
            return Ok(&self.results[..0]);
        }
        {
            let mut sq = self.ring.submission();
            for (i, op) in self.ops[..n].iter().enumerate() {
                let fd = types::Fd(self.fd);
                let (ptr, len) = (op.iov.as_ptr(), op.n as u32);
                let one = op.iov[0];
                // One vector goes as a plain read or write: a vectored
                // operation first copies its iovec array in (3% of the
                // loop's samples receiving at MTU 1500).
                let e = match (write, op.n) {
                    (true, 1) => {
                        opcode::Write::new(fd, one.iov_base as *const u8, one.iov_len as u32)
                            .rw_flags(libc::RWF_NOWAIT)
                            .build()
                    }
                    (true, _) => opcode::Writev::new(fd, ptr, len)
                        .rw_flags(libc::RWF_NOWAIT)
                        .build(),
                    (false, 1) => opcode::Read::new(fd, one.iov_base.cast(), one.iov_len as u32)
                        .rw_flags(libc::RWF_NOWAIT)
                        .build(),
                    (false, _) => opcode::Readv::new(fd, ptr, len)
                        .rw_flags(libc::RWF_NOWAIT)
                        .build(),
                };
                // SAFETY: the entry's iovecs are valid for the call (the
                // caller's promise), and `ops` is not touched until every
                // completion below is reaped.
                unsafe { sq.push(&e.user_data(i as u64)) }
                    .expect("the ring is drained after every run, so it has room for ENTRIES");
            }
        }
        let mut reaped = 0;
        while reaped < n {
            // Non-blocking operations complete during submission; the wait
            // is for form's sake (and a kernel that punts one anyway).
            let r = self.ring.submit_and_wait(n - reaped);
            match r {
                Ok(_) => {}
                // Interrupted before it submitted anything: the entries
                // are still queued, and the next call submits them.
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    // Entries may be left queued, pointing at memory the
                    // caller takes back: this ring is done with.
                    self.broken = true;
                    return Err(e);
                }
            }
            for c in self.ring.completion() {
                let i = c.user_data() as usize;
                if i < n {
                    self.results[i] = c.result();
                    reaped += 1;
                }
            }
        }
        Ok(&self.results[..n])
    }
}

/// How many reads to put in one submission: as many as the last pass
/// found, doubled while every read of a submission finds a packet, so a
/// busy device is drained in a few submissions and an idle one costs about
/// one empty read.
#[derive(Debug)]
pub struct ReadSizer {
    last: usize,
}

impl Default for ReadSizer {
    fn default() -> ReadSizer {
        ReadSizer { last: 1 }
    }
}

impl ReadSizer {
    /// Reads for the first submission of a pass that may read `room` more.
    pub fn first(&self, room: usize) -> usize {
        self.last.clamp(1, room.clamp(1, ENTRIES))
    }

    /// Reads for the next submission after one of `asked` that found `got`
    /// (`room` left), or `None` if the device is drained.
    pub fn next(asked: usize, got: usize, room: usize) -> Option<usize> {
        (got == asked && room > 0).then(|| (asked * 2).min(room).min(ENTRIES))
    }

    /// The pass read `total` packets.
    pub fn finish(&mut self, total: usize) {
        self.last = total.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn read_sizes_follow_the_last_pass_and_double_while_full() {
        let mut s = ReadSizer::default();
        assert_eq!(s.first(512), 1);
        assert_eq!(ReadSizer::next(1, 1, 511), Some(2));
        assert_eq!(ReadSizer::next(2, 2, 509), Some(4));
        assert_eq!(
            ReadSizer::next(4, 3, 505),
            None,
            "a short submission ends the pass"
        );
        assert_eq!(
            ReadSizer::next(200, 200, 300),
            Some(256),
            "one ring's worth at most"
        );
        assert_eq!(
            ReadSizer::next(8, 8, 5),
            Some(5),
            "no more than the pass's room"
        );
        assert_eq!(ReadSizer::next(8, 8, 0), None);
        s.finish(40);
        assert_eq!(s.first(512), 40);
        assert_eq!(s.first(10), 10);
        s.finish(0);
        assert_eq!(s.first(512), 1);
    }

    /// A pipe stands in for the TUN: reads and writes in order, an empty
    /// read fails with EAGAIN at once instead of waiting.
    #[test]
    fn a_batch_writes_and_reads_in_order_and_an_empty_read_does_not_wait() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
            0
        );
        // SAFETY: both are new descriptors that nothing else owns.
        let (r, w) = unsafe {
            use std::os::fd::{FromRawFd, OwnedFd};
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        };
        let mut wr = match Ring::new(w.as_raw_fd()) {
            Ok(x) => x,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("no io_uring here ({e}); skipping outside CI");
                return;
            }
            Err(e) => panic!("io_uring: {e}"),
        };
        let mut rd = Ring::new(r.as_raw_fd()).unwrap();
        let parts: [&[u8]; 3] = [b"ab", b"cde", b"f"];
        for (i, p) in parts.iter().enumerate() {
            wr.ops[i] = Op::default();
            wr.ops[i].iov[0] = libc::iovec {
                iov_base: p.as_ptr() as *mut _,
                iov_len: p.len(),
            };
            wr.ops[i].n = 1;
        }
        // The second write in two vectors ("c", "de"): a vectored one.
        wr.ops[1].iov[0].iov_len = 1;
        wr.ops[1].iov[1] = libc::iovec {
            iov_base: parts[1][1..].as_ptr() as *mut _,
            iov_len: 2,
        };
        wr.ops[1].n = 2;
        // SAFETY: the iovecs point at the static parts.
        let res = unsafe { wr.run(3, true) }.unwrap().to_vec();
        assert_eq!(res, vec![2, 3, 1]);
        let mut bufs = [[0u8; 2]; 4];
        for (i, b) in bufs.iter_mut().enumerate() {
            rd.ops[i].iov[0] = libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            };
            rd.ops[i].n = 1;
        }
        // SAFETY: the iovecs point at `bufs`, unused during the call.
        let res = unsafe { rd.run(4, false) }.unwrap().to_vec();
        // The pipe has 6 bytes: three reads of 2, then EAGAIN at once.
        assert_eq!(res, vec![2, 2, 2, -libc::EAGAIN]);
        assert_eq!(&bufs[..3], &[*b"ab", *b"cd", *b"ef"]);
        // SAFETY: as above; nothing to read.
        let res = unsafe { rd.run(2, false) }.unwrap().to_vec();
        assert_eq!(res, vec![-libc::EAGAIN, -libc::EAGAIN]);
    }
}
