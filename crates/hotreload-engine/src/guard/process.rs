//! Process-wide state that plugin code can change under the host: signal
//! handlers, the signal mask, timers. The C side (`process.c`, and the
//! handler in `trampoline.c`) refuses or undoes the changes; this side
//! collects what was done so the host can say so, and puts handlers back
//! that plugin code replaced around the interposers.

use std::cell::Cell;
use std::ffi::c_int;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawRepair {
    mask_restored: c_int,
    mask_calls: c_int,
    refused_signals: u64,
    altstack_restored: c_int,
    std_closed: c_int,
}

unsafe extern "C" {
    fn hr_guard_repair(out: *mut RawRepair);
    fn hr_guard_reassert() -> u64;
    fn hr_take_timer_signal() -> c_int;
    fn hr_guard_settle_mask() -> c_int;
    fn hr_guard_in_forked_child() -> c_int;
    fn hr_guard_end_forked_child() -> !;
    fn hr_timers_stop(start: usize, end: usize, threads: *mut c_int) -> c_int;
    fn hr_guard_settle_altstack() -> c_int;
}

/// What plugin code changed in process-wide state during a call, and what
/// the guard did about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repair {
    /// The thread's signal mask differed from the host's after the call and
    /// was put back.
    pub mask_restored: bool,
    /// Calls plugin code made to `sigprocmask` or `pthread_sigmask`.
    pub mask_calls: u32,
    /// Signals whose handler plugin code tried to change; refused.
    pub refused: Vec<i32>,
    /// The thread's alternate signal stack had been disabled or replaced
    /// and was put back.
    pub altstack_restored: bool,
    /// Standard descriptors (0, 1, 2) plugin code closed; /dev/null stands
    /// in for each.
    pub std_closed: Vec<i32>,
}

impl Repair {
    pub fn is_empty(&self) -> bool {
        !self.mask_restored
            && self.mask_calls == 0
            && self.refused.is_empty()
            && !self.altstack_restored
            && self.std_closed.is_empty()
    }

    fn merge(&mut self, other: Repair) {
        self.mask_restored |= other.mask_restored;
        self.altstack_restored |= other.altstack_restored;
        for fd in other.std_closed {
            if !self.std_closed.contains(&fd) {
                self.std_closed.push(fd);
            }
        }
        self.mask_calls = self.mask_calls.saturating_add(other.mask_calls);
        for sig in other.refused {
            if !self.refused.contains(&sig) {
                self.refused.push(sig);
            }
        }
    }
}

thread_local! {
    /// Repairs made on this thread since they were last taken.
    static REPAIRS: Cell<Option<Repair>> = const { Cell::new(None) };
}

/// Repairs the calling thread now (after a call that reported a change, or
/// after a fault, or on a periodic check) and keeps the record for
/// [`take_repairs`].
pub(super) fn repair_now() {
    let mut raw = RawRepair::default();
    // SAFETY: fills `raw` with this thread's record and resets it; puts the
    // thread's saved host mask back.
    unsafe { hr_guard_repair(&mut raw) };
    let repair = Repair {
        mask_restored: raw.mask_restored != 0,
        mask_calls: u32::try_from(raw.mask_calls).unwrap_or(u32::MAX),
        refused: signals_of(raw.refused_signals),
        altstack_restored: raw.altstack_restored != 0,
        std_closed: (0..3)
            .filter(|fd| raw.std_closed & (1 << fd) != 0)
            .collect(),
    };
    if repair.is_empty() {
        return;
    }
    REPAIRS.with(|cell| {
        let mut all = cell.take().unwrap_or_default();
        all.merge(repair);
        cell.set(Some(all));
    });
}

/// What was repaired on this thread since the last call of this, if
/// anything. Cheap when nothing was: a thread-local read.
#[inline]
pub fn take_repairs() -> Option<Repair> {
    REPAIRS.with(|cell| cell.take())
}

/// Checks the calling thread's signal mask against the host's and puts it
/// back if it differs (plugin code that changed it with the raw system
/// call, which no interposer sees); for a periodic check between calls.
pub fn check_mask() {
    settle_altstack();
    repair_now();
}

/// Puts the host's signal mask back on the calling thread with the system
/// call itself, whatever plugin code did; whether it differed (then
/// [`repair_now`] reports it).
#[inline]
pub(super) fn settle_mask() -> bool {
    // SAFETY: sets this thread's mask to the one recorded for it at
    // `prepare_thread`; touches nothing else.
    unsafe { hr_guard_settle_mask() != 0 }
}

/// Puts the calling thread's alternate signal stack back if plugin code
/// disabled or replaced it; whether it did.
pub(super) fn settle_altstack() -> bool {
    // SAFETY: reinstalls the stack `prepare_thread` made for this thread,
    // never while running on it.
    unsafe { hr_guard_settle_altstack() != 0 }
}

/// Puts the guard's handler back on every signal it handles where plugin
/// code replaced it around the interposers; the signals it put back.
pub fn reassert_handlers() -> Vec<i32> {
    // SAFETY: reads and, where needed, reinstalls the guard's own handlers.
    signals_of(unsafe { hr_guard_reassert() })
}

/// A timer signal (SIGALRM, SIGVTALRM, SIGPROF) that arrived while no
/// plugin code ran, from a timer plugin code armed; taken. The process's
/// interval timers were stopped when it came.
#[inline]
pub fn take_timer_signal() -> Option<i32> {
    // SAFETY: reads and clears one flag the handler sets.
    match unsafe { hr_take_timer_signal() } {
        0 => None,
        sig => {
            stop_signal_timers();
            Some(sig)
        }
    }
}

/// Deletes every POSIX timer plugin code created that notifies by a
/// signal: one of them just fired as a fault, and would again, blamed on
/// whichever version runs then. How many.
pub fn stop_signal_timers() -> usize {
    let mut threads: c_int = 0;
    // SAFETY: deletes timers plugin code created (recorded by the
    // timer_create interposer); the host creates none of its own.
    usize::try_from(unsafe { hr_timers_stop(0, 0, &mut threads) }).unwrap_or(0)
}

/// Deletes the POSIX timers created from, or calling into, `start..end`
/// (a library's mapping, before it is unmapped): a thread timer would call
/// into unmapped code. How many, and how many of them were thread timers
/// (one of whose threads may still be running the library's code: the C
/// library starts one per expiry, and nothing tells when it is done).
pub fn stop_timers_of(start: usize, end: usize) -> (usize, usize) {
    if start >= end {
        return (0, 0);
    }
    let mut threads: c_int = 0;
    // SAFETY: as for `stop_signal_timers`.
    let stopped = unsafe { hr_timers_stop(start, end, &mut threads) };
    (
        usize::try_from(stopped).unwrap_or(0),
        usize::try_from(threads).unwrap_or(0),
    )
}

/// Ends the calling process at once if it is the child of a fork plugin
/// code made, come back into the host's code (a return or a fault of the
/// call that forked): that process must not go on as a second server.
#[inline]
pub(super) fn end_if_forked_child() {
    // SAFETY: reads a flag set by the guard's atfork child handler.
    if unsafe { hr_guard_in_forked_child() } != 0 {
        // SAFETY: ends this process, which is the plugin's child, not the
        // server; nothing of the host's runs in it.
        unsafe { hr_guard_end_forked_child() }
    }
}

fn signals_of(bits: u64) -> Vec<i32> {
    (1..=64)
        .filter(|sig| bits & (1u64 << (sig - 1)) != 0)
        .collect()
}
