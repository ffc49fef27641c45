//! Threads plugin code started, which run its code and so pin its library:
//! unmapping a version under one of them kills the host. The C side
//! (`threads.c`) records every thread plugin code creates; this side asks
//! which of them run in a given library.

use std::ffi::c_int;

unsafe extern "C" {
    fn hr_threads_running(start: usize, end: usize, tids: *mut c_int, max: c_int) -> c_int;
    fn hr_threads_untracked_count() -> c_int;
}

/// The most thread ids reported per library.
const SHOWN: usize = 16;

/// The ids of the threads plugin code started that are still running and
/// whose code lies in `start..end` (a library's mapping), or that were
/// created from there; with how many there are in all (an id of 0 is a
/// thread not yet started).
pub fn running_in(start: usize, end: usize) -> (Vec<i32>, usize) {
    let mut found = [0 as c_int; SHOWN];
    // SAFETY: `found` has room for `SHOWN` ids, which is what is passed.
    let n = unsafe { hr_threads_running(start, end, found.as_mut_ptr(), SHOWN as c_int) };
    let total = usize::try_from(n).unwrap_or(0);
    (found[..total.min(SHOWN)].to_vec(), total)
}

/// Plugin threads that could not be recorded (the table was full): the host
/// cannot tell whether they still run.
pub fn untracked() -> usize {
    // SAFETY: reads a counter.
    usize::try_from(unsafe { hr_threads_untracked_count() }).unwrap_or(0)
}
