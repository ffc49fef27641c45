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
}

unsafe extern "C" {
    fn hr_guard_repair(out: *mut RawRepair);
    fn hr_guard_reassert() -> u64;
    fn hr_take_timer_signal() -> c_int;
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
}

impl Repair {
    pub fn is_empty(&self) -> bool {
        !self.mask_restored && self.mask_calls == 0 && self.refused.is_empty()
    }

    fn merge(&mut self, other: Repair) {
        self.mask_restored |= other.mask_restored;
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
    repair_now();
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
        sig => Some(sig),
    }
}

fn signals_of(bits: u64) -> Vec<i32> {
    (1..=64)
        .filter(|sig| bits & (1u64 << (sig - 1)) != 0)
        .collect()
}
