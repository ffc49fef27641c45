//! Closing replaced versions once nothing runs them.
//!
//! Each [`Plugin`](super::Plugin) has a reclaimer thread. A version that
//! was replaced is handed to it with the epoch it was retired at; the
//! reclaimer runs the writer's barrier, and closes the version once no
//! thread's slot holds an older epoch (see [`super::epoch`]), polling while
//! any is pending (from 20 µs up to 200 µs apart, so a version goes well
//! within a millisecond of its last call returning; 10 ms apart once only
//! versions held by a stuck thread or by threads they started are left).
//! One barrier after a retirement is enough for every later look at it. Nothing else waits:
//! callers never do, and a reload only hands the old version over.
//!
//! Before a version's library is unmapped, the threads plugin code started
//! (recorded by `guard/threads.c`) are looked for in it: while one runs,
//! the library stays mapped and a line says so; it is looked at again at
//! every later pass. The same after its destructors ran (one may have
//! started a thread). POSIX timers the library created go with it.
//!
//! A thread still inside a replaced version after `stuck_after` is named
//! once (its id, the version, since when at least); the version stays
//! mapped for as long as it stays.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::notice::{Notice, Notices};
use super::plugin::{Shared, VersionPtr, ago};
use super::slots;
use super::table::FunctionTable;
use crate::plugin::load::Library;
use crate::plugin::unload::{Holder, Unloaded, Unloading, unload};

/// A version replaced and not closed yet.
pub(super) struct Retired<T> {
    version: VersionPtr<T>,
    number: u64,
    library: Option<Library>,
    retired_at: u64,
    since: Instant,
    /// Stuck-thread line said.
    named: bool,
    /// Freed from readers; kept only for the threads it started.
    quiescent: bool,
    /// A writer's barrier has run since it was retired: the slots can be
    /// read for it from now on without another.
    fenced: bool,
    /// The last look that found a thread still in it: its last thread left
    /// after this.
    last_held: Option<Instant>,
}

/// Hands a replaced version to the reclaimer.
pub(super) fn retire<T: FunctionTable>(
    shared: &Shared<T>,
    version: VersionPtr<T>,
    library: Library,
    retired_at: u64,
) {
    // SAFETY: the version is alive (freed only by the reclaimer).
    let number = unsafe { (*version.0).number };
    super::plugin_locked(&shared.open).push(number);
    let mut retired = super::plugin_locked(&shared.retired);
    retired.push(Retired {
        version,
        number,
        library: Some(library),
        retired_at,
        since: Instant::now(),
        named: false,
        quiescent: false,
        fenced: false,
        last_held: None,
    });
    drop(retired);
    shared.wake.notify_all();
}

/// The numbers of the versions replaced but not closed.
pub(super) fn retained<T>(shared: &Shared<T>) -> Vec<u64> {
    super::plugin_locked(&shared.open).clone()
}

/// `number` is closed (or given up): no longer open.
fn gone<T>(shared: &Shared<T>, number: u64) {
    super::plugin_locked(&shared.open).retain(|&n| n != number);
    shared.closed.notify_all();
}

/// Waits until nothing replaced is left open, or `timeout`.
pub(super) fn wait_empty<T>(shared: &Shared<T>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut open = super::plugin_locked(&shared.open);
    loop {
        if open.is_empty() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        open = match shared.closed.wait_timeout(open, left) {
            Ok((g, _)) => g,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

/// Starts the reclaimer thread of `shared`.
pub(super) fn start<T: FunctionTable>(shared: Arc<Shared<T>>) -> Result<JoinHandle<()>, String> {
    thread::Builder::new()
        .name("hotreload-reclaim".into())
        .spawn(move || run(&shared))
        .map_err(|e| format!("cannot start the reclaimer thread: {e}"))
}

fn run<T: FunctionTable>(shared: &Shared<T>) {
    // Destructors run here, under the guard and a load watchdog.
    let _prepared = slots::prepare();
    let _watch = shared
        .options
        .call_timeout
        .and_then(|t| crate::plugin::load::watch_loads(t).ok());
    let mut pause = Duration::from_micros(20);
    let mut barrier_failed = false;
    loop {
        let mut retired = super::plugin_locked(&shared.retired);
        while retired.is_empty() && !shared.stop.load(Ordering::Acquire) {
            retired = match shared.wake.wait(retired) {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            pause = Duration::from_micros(20);
        }
        let stopping = shared.stop.load(Ordering::Acquire);
        if retired.is_empty() && stopping {
            return;
        }
        let mut pending = std::mem::take(&mut *retired);
        drop(retired);
        if !barrier_failed && pending.iter().any(|r| !r.fenced) {
            match slots::barrier() {
                Ok(()) => pending.iter_mut().for_each(|r| r.fenced = true),
                Err(why) => {
                    barrier_failed = true;
                    shared.options.notices.say(&Notice::BarrierFailed(why));
                }
            }
        }
        if !barrier_failed {
            pending = pass(shared, pending);
        }
        // Only versions already named (a stuck thread, threads it
        // started) left: those take long; look less often.
        let slow = pending.iter().all(|r| r.named);
        let mut retired = super::plugin_locked(&shared.retired);
        retired.extend(pending);
        let left = retired.len();
        drop(retired);
        if stopping {
            // The last handle is gone: whatever is still held stays mapped.
            for r in std::mem::take(&mut *super::plugin_locked(&shared.retired)) {
                let number = r.number;
                leave_mapped(&shared.options.notices, r);
                gone(shared, number);
            }
            return;
        }
        if left > 0 {
            let cap = if slow {
                Duration::from_millis(10)
            } else {
                Duration::from_micros(200)
            };
            thread::sleep(pause.min(cap));
            pause = (pause * 2).min(cap);
        }
    }
}

/// One look at every pending version: closes what it can, returns the rest.
fn pass<T: FunctionTable>(shared: &Shared<T>, pending: Vec<Retired<T>>) -> Vec<Retired<T>> {
    let mut kept = Vec::new();
    let group = shared.current.group();
    for mut r in pending {
        if !r.quiescent {
            let mut holder = None;
            slots::each_slot(|slot| {
                if holder.is_none() && slot.epoch.holds(group, r.retired_at) {
                    holder = Some(slot.tid.load(Ordering::Relaxed));
                }
            });
            if let Some(tid) = holder {
                r.last_held = Some(Instant::now());
                let inside = ago(r.since);
                if !r.named && inside >= shared.options.stuck_after {
                    r.named = true;
                    shared.options.notices.say(&Notice::Stuck {
                        version: r.number,
                        tid,
                        inside_at_least: inside,
                    });
                }
                kept.push(r);
                continue;
            }
            r.quiescent = true;
            // SAFETY: no reader can still see it (the grace period is
            // over), and only the reclaimer holds the pointer.
            drop(unsafe { Box::from_raw(r.version.0) });
        }
        if close(&shared.options.notices, &mut r) {
            kept.push(r);
        } else {
            gone(shared, r.number);
        }
    }
    kept
}

/// Closes `r`'s library ([`crate::plugin::unload`]) unless threads it
/// started still run it; true when it must be kept for them.
fn close<T>(notices: &Notices, r: &mut Retired<T>) -> bool {
    let Some(library) = r.library.take() else {
        return false;
    };
    let (done, closed) = match unload(library, || {}) {
        Unloaded::Closed(done, closed) => (done, closed),
        Unloaded::Kept(library, done, holder) => {
            r.library = Some(library);
            said_unloading(notices, r.number, &done);
            if !r.named {
                r.named = true;
                let (tids, count) = match holder {
                    Holder::Threads { tids, count } => (tids, count),
                    // The C library's thread for a deleted timer's last
                    // expiry: no id to give.
                    Holder::TimerThread => (Vec::new(), 1),
                };
                notices.say(&Notice::KeptForThreads {
                    version: r.number,
                    tids,
                    count,
                });
            }
            return true;
        }
    };
    said_unloading(notices, r.number, &done);
    if let Some(err) = closed.close_error {
        notices.say(&Notice::CloseTrouble {
            version: r.number,
            what: format!("dlclose failed: {err}"),
        });
    }
    if closed.still_mapped {
        notices.say(&Notice::StillMapped {
            version: r.number,
            bytes: closed.mapped_bytes,
        });
    }
    notices.say(&Notice::Closed {
        version: r.number,
        since_replaced: ago(r.since),
        since_last_left: r.last_held.map(ago),
    });
    false
}

/// What unloading did on the way: a destructor's fault, timers deleted.
fn said_unloading(notices: &Notices, version: u64, done: &Unloading) {
    if let Some(fault) = &done.destructor_fault {
        notices.say(&Notice::CloseTrouble {
            version,
            what: format!("a destructor faulted: {fault}"),
        });
    }
    if done.timers_deleted > 0 {
        notices.say(&Notice::CloseTrouble {
            version,
            what: format!(
                "it left {} armed; deleted before its code is unmapped",
                crate::plugin::unload::timers(done.timers_deleted)
            ),
        });
    }
}

/// A version still held when the last handle went: its library stays
/// mapped for the rest of the process (and its version record too, when a
/// thread may still read it).
fn leave_mapped<T>(notices: &Notices, mut r: Retired<T>) {
    let why = if r.quiescent {
        "threads it started still run its code"
    } else {
        "a thread is still inside it"
    };
    notices.say(&Notice::LeftMapped {
        version: r.number,
        why: why.into(),
    });
    if let Some(library) = r.library.take() {
        std::mem::forget(library);
    }
}

/// Closes the current version when the last handle goes (no thread can be
/// inside it through a handle any more); stays mapped for threads it
/// started.
pub(super) fn close_at_exit<T: FunctionTable>(
    shared: &Shared<T>,
    version: VersionPtr<T>,
    library: Library,
) {
    // SAFETY: the version is alive; nobody holds a handle to read it.
    let number = unsafe { (*version.0).number };
    let mut r = Retired {
        version,
        number,
        library: Some(library),
        retired_at: u64::MAX,
        since: Instant::now(),
        named: false,
        quiescent: true,
        fenced: true,
        last_held: None,
    };
    // SAFETY: no handle is left, so no thread can enter it; a thread
    // inside it would hold a handle (`Entered` borrows one).
    drop(unsafe { Box::from_raw(r.version.0) });
    if close(&shared.options.notices, &mut r) {
        leave_mapped(&shared.options.notices, r);
    }
}

/// Says `notice` once in the life of the process.
pub(super) fn say_once_per_process(notices: &Notices, notice: Notice) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        notices.say(&notice);
    }
}
