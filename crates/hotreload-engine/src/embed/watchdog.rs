//! Interrupting a hung call on any of many threads.
//!
//! The tick loop's watchdog ([`crate::guard::watchdog`]) watches the one
//! thread that made it, through a start time that thread stores before
//! each call. With many calling threads and calls of a few nanoseconds,
//! reading the clock per call would cost more than the call; so this one,
//! process-wide, samples instead: every few milliseconds it looks at every
//! thread's slot ([`super::slots`]), and a thread seen entered, with the
//! same guarded call (its call counter unchanged), for longer than that
//! plugin's timeout is sent the guard's timeout signal, which ends the call
//! as a fault on that thread only. (A thread entered but back in its own
//! code between two calls ignores the signal: the guard's handler does
//! nothing with it outside a call; its next call counts afresh.) A call is interrupted within its
//! timeout plus one sampling interval. Time the process was stopped (a
//! debugger, Ctrl-Z) does not count, as for the tick loop.
//!
//! The signal goes by thread id with `tgkill` to this process only: a
//! thread that has left plugin code, or ended and whose id was reused by
//! another thread of this process, ignores the guard's timeout signal
//! outside a call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::slots::{self, ThreadSlot};
use crate::guard::watchdog::StoppedTime;

/// The shortest timeout any plugin asked for, which sets how often the
/// watchdog looks; `None` until one is started.
static STARTED: Mutex<Option<Duration>> = Mutex::new(None);

/// Makes sure the process-wide watchdog runs and looks often enough for
/// `timeout`.
pub(super) fn watch(timeout: Duration) -> Result<(), String> {
    let mut started = match STARTED.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    match *started {
        Some(shortest) if shortest <= timeout => return Ok(()),
        Some(_) => {
            // The running thread reads the new interval at its next wake.
            *started = Some(timeout);
            return Ok(());
        }
        None => *started = Some(timeout),
    }
    drop(started);
    std::thread::Builder::new()
        .name("hotreload-pool-watchdog".into())
        .spawn(run)
        .map(|_| ())
        .map_err(|e| format!("cannot start the watchdog thread: {e}"))
}

fn interval() -> Duration {
    let shortest = match STARTED.lock() {
        Ok(g) => *g,
        Err(poisoned) => *poisoned.into_inner(),
    };
    (shortest.unwrap_or(Duration::from_secs(1)) / 8)
        .clamp(Duration::from_millis(1), Duration::from_millis(50))
}

/// What the watchdog saw of one slot's current call.
struct Seen {
    call: u64,
    since: Instant,
    interrupted: bool,
}

fn run() {
    let mut seen: HashMap<usize, Seen> = HashMap::new();
    let mut every = interval();
    let mut stopped = StoppedTime::new(every);
    // SAFETY: no preconditions.
    let pid = unsafe { libc::getpid() };
    loop {
        std::thread::sleep(every);
        let now = Instant::now();
        stopped.woke(now);
        slots::each_slot(|slot| check(slot, now, &stopped, pid, &mut seen));
        let next = interval();
        if next != every {
            every = next;
            stopped = StoppedTime::new(every);
        }
    }
}

fn check(
    slot: &'static ThreadSlot,
    now: Instant,
    stopped: &StoppedTime,
    pid: libc::pid_t,
    seen: &mut HashMap<usize, Seen>,
) {
    let key = slot as *const ThreadSlot as usize;
    let timeout_ms = slot.timeout_ms.load(Ordering::Relaxed);
    if slot.epoch.entered_at().is_none() || timeout_ms == 0 {
        seen.remove(&key);
        return;
    }
    let call = slot.calls.load(Ordering::Relaxed);
    let entry = seen.entry(key).or_insert(Seen {
        call,
        since: now,
        interrupted: false,
    });
    if entry.call != call {
        *entry = Seen {
            call,
            since: now,
            interrupted: false,
        };
        return;
    }
    let ran = now
        .saturating_duration_since(entry.since)
        .saturating_sub(stopped.since(entry.since));
    if entry.interrupted || ran < Duration::from_millis(u64::from(timeout_ms)) {
        return;
    }
    entry.interrupted = true;
    let tid = slot.tid.load(Ordering::Relaxed);
    if tid != 0 {
        // SAFETY: tgkill takes integers; the signal's handler is the crash
        // guard's, which ends the call (or ignores it outside one).
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, crate::guard::timeout_signal()) };
    }
}
