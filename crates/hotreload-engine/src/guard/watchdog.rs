//! Interrupts a plugin call that runs too long.
//!
//! The calling thread marks each call's start and end in shared atomics (two
//! stores: the start time comes from the clock read the tick loop does
//! anyway). A watchdog thread checks them a few times per timeout and, when a
//! call has run past it, sends that thread the guard's timeout signal; the
//! crash guard turns the signal into a [`Fault`](super::Fault) like any
//! other, and the loop carries on.
//!
//! Time the whole process could not run does not count: a process stopped
//! by Ctrl-Z or a debugger (SIGSTOP, SIGTSTP), or a machine that slept, would
//! otherwise come back to find the call in progress "hung" and a good version
//! rolled back. The watchdog wakes at a steady interval; a wake that comes
//! much later than asked for means the process was not running, and that
//! time is taken off the call's. (A call's CPU time alone would not do: a
//! plugin blocked forever in `read` uses none and is still hung.)
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
#[derive(Clone)]
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
                let mut stopped = StoppedTime::new(check_every);
                loop {
                    thread::park_timeout(check_every);
                    let now = Instant::now();
                    stopped.woke(now);
                    if watched.stop.load(Ordering::Acquire) {
                        return;
                    }
                    if !watched.active.load(Ordering::Acquire) {
                        continue;
                    }
                    let call = watched.calls.load(Ordering::Relaxed);
                    let started = watched.epoch
                        + Duration::from_nanos(watched.started_ns.load(Ordering::Relaxed));
                    let ran = now
                        .saturating_duration_since(started)
                        .saturating_sub(stopped.since(started));
                    if interrupted_call == Some(call) || ran < timeout {
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

/// Time the process was not running, seen from a thread that wakes every
/// `interval`: whatever a wake is late by beyond a generous allowance for a
/// busy machine. The recent late wakes are kept with their windows, so that
/// a call is discounted only the stops that can have fallen within it.
pub(crate) struct StoppedTime {
    interval: Duration,
    last_wake: Instant,
    /// (window start, window end, time not running within it), newest last.
    gaps: std::collections::VecDeque<(Instant, Instant, Duration)>,
}

/// Late wakes remembered; older ones are long before any call still timed.
const GAPS_KEPT: usize = 32;

impl StoppedTime {
    pub(crate) fn new(interval: Duration) -> StoppedTime {
        StoppedTime {
            interval,
            last_wake: Instant::now(),
            gaps: Default::default(),
        }
    }

    pub(crate) fn woke(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_wake);
        // A scheduler can be late by a few intervals on a loaded machine;
        // only a gap past that is taken as the process not running.
        let allowance = self.interval * 4 + Duration::from_millis(20);
        if gap > allowance {
            if self.gaps.len() == GAPS_KEPT {
                self.gaps.pop_front();
            }
            self.gaps
                .push_back((self.last_wake, now, gap - self.interval));
        }
        self.last_wake = now;
    }

    /// The time not running since `start`: a stop in a window that began
    /// before `start` may have come before it or after, and counts as far
    /// as it fits after `start` (the generous reading: a good version is
    /// never rolled back for a stop).
    pub(crate) fn since(&self, start: Instant) -> Duration {
        self.gaps
            .iter()
            .filter(|(_, end, _)| *end > start)
            .map(|(from, end, excess)| {
                (*excess).min(end.saturating_duration_since(start.max(*from)))
            })
            .sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_wake_counts_as_stopped_and_a_punctual_one_does_not() {
        let start = Instant::now();
        let mut stopped = StoppedTime {
            interval: Duration::from_millis(10),
            last_wake: start,
            gaps: Default::default(),
        };
        stopped.woke(start + Duration::from_millis(11));
        stopped.woke(start + Duration::from_millis(40));
        assert_eq!(
            stopped.since(start),
            Duration::ZERO,
            "late by a busy machine's amount"
        );
        stopped.woke(start + Duration::from_millis(1040));
        assert_eq!(stopped.since(start), Duration::from_millis(990));
        // A call that began within the stopped window is discounted only
        // what fits after its start.
        assert_eq!(
            stopped.since(start + Duration::from_millis(840)),
            Duration::from_millis(200)
        );
        assert_eq!(
            stopped.since(start + Duration::from_millis(2000)),
            Duration::ZERO
        );
    }
}
