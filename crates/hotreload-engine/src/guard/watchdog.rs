//! Interrupts a plugin call that runs too long.
//!
//! The calling thread marks each call's start and end in shared atomics (two
//! stores: the start time comes from the clock read the tick loop does
//! anyway). A watchdog thread checks them a few times per timeout and, when a
//! call has run past it, sends that thread the guard's timeout signal; the
//! crash guard turns the signal into a [`Fault`](super::Fault) like any
//! other, and the loop carries on.
//!
//! Interrupting code at an arbitrary point is as safe as the code allows: a
//! plugin stopped while holding a lock (its own, or the C library's, as in a
//! `malloc` that never returns) leaves it held. A hang in plain computation,
//! the common case while coding live, is recovered cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

struct Shared {
    epoch: Instant,
    active: AtomicBool,
    /// When the current call started, in nanoseconds since `epoch`.
    started_ns: AtomicU64,
    /// Counts calls, so a call is interrupted at most once.
    calls: AtomicU64,
    stop: AtomicBool,
}

/// The calling thread's side.
pub struct CallWatch {
    shared: Arc<Shared>,
}

impl CallWatch {
    /// Marks the start of a call at `now` (a time the caller already has).
    #[inline]
    pub fn begin(&self, now: Instant) {
        let s = &self.shared;
        let ns = now.saturating_duration_since(s.epoch).as_nanos() as u64;
        s.started_ns.store(ns, Ordering::Relaxed);
        s.calls.store(
            s.calls.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        s.active.store(true, Ordering::Release);
    }

    #[inline]
    pub fn end(&self) {
        self.shared.active.store(false, Ordering::Release);
    }
}

pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Watches the calling thread: it will be interrupted when a call marked
    /// on the returned [`CallWatch`] runs longer than `timeout`. The watchdog
    /// must be dropped before the calling thread exits.
    pub fn for_this_thread(timeout: Duration) -> Result<(Watchdog, CallWatch), String> {
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            active: AtomicBool::new(false),
            started_ns: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        // SAFETY: `pthread_self` has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let watched = Arc::clone(&shared);
        let check_every = (timeout / 8).clamp(Duration::from_millis(1), Duration::from_millis(100));
        let thread = thread::Builder::new()
            .name("hotreload-watchdog".into())
            .spawn(move || {
                let mut interrupted_call = None;
                loop {
                    thread::park_timeout(check_every);
                    if watched.stop.load(Ordering::Acquire) {
                        return;
                    }
                    if !watched.active.load(Ordering::Acquire) {
                        continue;
                    }
                    let call = watched.calls.load(Ordering::Relaxed);
                    let started = Duration::from_nanos(watched.started_ns.load(Ordering::Relaxed));
                    if interrupted_call == Some(call)
                        || watched.epoch.elapsed().saturating_sub(started) < timeout
                    {
                        continue;
                    }
                    interrupted_call = Some(call);
                    // SAFETY: `target` is the thread that created this
                    // watchdog, which stays alive until the watchdog is
                    // dropped (joined) — see `for_this_thread`. The signal's
                    // handler is the crash guard's.
                    unsafe { libc::pthread_kill(target, super::timeout_signal()) };
                }
            })
            .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
        Ok((
            Watchdog {
                shared: Arc::clone(&shared),
                thread: Some(thread),
            },
            CallWatch { shared },
        ))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
