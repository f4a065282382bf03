//! What an interrupted `tunstack bench` leaves behind: nothing. Its peers
//! (KV nodes, etcd members, NSD and Unbound) are processes of their own,
//! most of them daemons in a namespace they keep alive, so a Ctrl-C or a
//! `kill` that ended only the bench left them running, with their files
//! in the temporary directory. [`install`] catches SIGINT, SIGTERM and
//! SIGHUP and hands them to a thread of its own, which runs the cleanups
//! registered with [`on_interrupt`] (newest first) and exits. The normal
//! path does its own cleanup (the owners' `Drop`), and dropping the
//! [`OnInterrupt`] guard unregisters it.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

type Cleanup = Box<dyn FnOnce() + Send>;

static CLEANUPS: Mutex<Vec<(u64, Cleanup)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

fn cleanups() -> MutexGuard<'static, Vec<(u64, Cleanup)>> {
    CLEANUPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registered while alive: dropping it unregisters the cleanup (the
/// owner cleans up by itself).
#[must_use = "the cleanup is unregistered when this guard is dropped"]
#[derive(Debug)]
pub struct OnInterrupt(u64);

impl Drop for OnInterrupt {
    fn drop(&mut self) {
        cleanups().retain(|(id, _)| *id != self.0);
    }
}

/// Run `f` if the bench is interrupted while the guard lives.
pub fn on_interrupt(f: impl FnOnce() + Send + 'static) -> OnInterrupt {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    cleanups().push((id, Box::new(f)));
    OnInterrupt(id)
}

/// Run every registered cleanup, newest first (what was started last may
/// depend on what was started before). The registry stays locked, so
/// nothing registers behind it.
fn run_all(list: &mut MutexGuard<'static, Vec<(u64, Cleanup)>>) -> usize {
    let n = list.len();
    while let Some((_, f)) = list.pop() {
        f();
    }
    n
}

/// Child processes to SIGKILL if the bench is interrupted: its owner adds
/// each as it starts and removes it once reaped (a reaped pid may be
/// reused by another process).
#[derive(Clone, Debug, Default)]
pub struct Pids(Arc<Mutex<Vec<u32>>>);

impl Pids {
    fn list(&self) -> MutexGuard<'_, Vec<u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn add(&self, pid: u32) {
        self.list().push(pid);
    }
    pub fn remove(&self, pid: u32) {
        self.list().retain(|&p| p != pid);
    }
    /// A new list whose processes are killed, and `dir` (their files)
    /// removed, if the bench is interrupted while the guard lives.
    pub fn killed_on_interrupt(dir: &std::path::Path) -> (Pids, OnInterrupt) {
        let pids = Pids::default();
        let (p, dir) = (pids.clone(), dir.to_path_buf());
        let guard = on_interrupt(move || {
            p.kill_all();
            let _ = std::fs::remove_dir_all(&dir);
        });
        (pids, guard)
    }

    /// SIGKILL every process in the list.
    pub fn kill_all(&self) {
        for &pid in self.list().iter() {
            // SAFETY: a signal to a child of ours, not yet reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// The write end of the pipe the signal handler writes to (-1: none).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; a full pipe loses only a
    // repeat of a signal already pending.
    unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
}

/// Catch SIGINT, SIGTERM and SIGHUP and start the thread that cleans up
/// after them. A handler that writes the signal into a pipe, rather than
/// blocking the signals for `sigwait`: a blocked mask is inherited by every
/// child (NSD then ignored the SIGTERM meant to stop it), where a handler
/// is reset by `exec`. SA_RESTART: the bench's system calls go on.
pub fn install() -> std::io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let rx = fds[0];
    std::thread::Builder::new()
        .name("tsbench-signal".into())
        .spawn(move || loop {
            let mut b = 0u8;
            // SAFETY: reading one byte into `b` from our own pipe.
            let n = unsafe { libc::read(rx, (&mut b as *mut u8).cast(), 1) };
            if n != 1 {
                continue;
            }
            let sig = i32::from(b);
            let name = match sig {
                libc::SIGINT => "SIGINT",
                libc::SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            eprintln!("\ntunstack bench: {name}: stopping the servers it started");
            let mut list = cleanups();
            let n = run_all(&mut list);
            eprintln!("tunstack bench: {n} cleanup(s) done; exiting");
            std::process::exit(128 + sig);
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_guards_unregister_and_the_rest_run_newest_first() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mk = |n: u32| {
            let o = order.clone();
            on_interrupt(move || o.lock().unwrap().push(n))
        };
        let a = mk(1);
        let b = mk(2);
        let c = mk(3);
        drop(b);
        let mut list = cleanups();
        // Other tests of this binary register nothing: only ours are here.
        assert_eq!(run_all(&mut list), 2);
        drop(list);
        assert_eq!(*order.lock().unwrap(), vec![3, 1]);
        // Already run: dropping the guards finds nothing to remove.
        drop((a, c));
        assert!(cleanups().is_empty());
    }
}
