//! Giving a large state's memory back a piece at a time, off the tick
//! thread.
//!
//! Unmapping 64 MiB in one call holds the process's memory-map lock while
//! its pages are freed, about 5–10 ms; meanwhile every `mprotect` of the
//! tick thread (the snapshot closing the pages a tick left alone) waits for
//! it. Freed that way after a layout-changing swap of a 64 MiB state (its
//! old block, the old block's snapshot, the copy the migration was worked
//! out from), ticks started up to 23 ms late; freed as here, 5 ms, as
//! without the frees (BENCHMARKS.md, "large state"). `madvise(MADV_DONTNEED)`
//! frees pages under the lock's shared side, and a megabyte at a time with
//! a pause after each it never holds anyone up for long; the emptied
//! mapping's unmap is then quick.

use std::time::Duration;

use super::State;
use super::pages::PAGE;
use super::snapshot::Leftover;

/// Freed per call.
const PIECE: usize = 1 << 20;
/// Left to the other threads after each piece.
const PAUSE: Duration = Duration::from_micros(100);

/// Memory let go of by the tick thread, for another thread to free.
#[derive(Default)]
pub struct Discarded {
    states: Vec<State>,
    buffers: Vec<Vec<u8>>,
    snapshots: Vec<Leftover>,
}

impl Discarded {
    pub fn state(&mut self, state: State) {
        self.states.push(state);
    }

    pub fn buffer(&mut self, bytes: Vec<u8>) {
        self.buffers.push(bytes);
    }

    pub fn snapshot(&mut self, leftover: Leftover) {
        self.snapshots.push(leftover);
    }

    /// Frees it all: a small lot at once, a large one a megabyte at a time
    /// on a thread of its own, so that the caller (the reload thread, with
    /// the next build to check) is not held up either.
    pub fn free_soon(self) {
        let bytes = self.states.iter().map(State::size).sum::<usize>()
            + self.buffers.iter().map(Vec::len).sum::<usize>()
            + self.snapshots.iter().map(Leftover::size).sum::<usize>();
        if bytes < 2 * PIECE {
            return drop(self);
        }
        // Should the thread not start, the closure, and the lot with it,
        // is dropped with the error: freed here, at once.
        let _ = std::thread::Builder::new()
            .name("hotreload-free".into())
            .spawn(move || self.free());
    }

    /// Frees it all, the large pieces a megabyte at a time.
    fn free(self) {
        for mut state in self.states {
            state.empty_gradually();
        }
        for mut bytes in self.buffers {
            empty_gradually(&mut bytes);
        }
        for mut leftover in self.snapshots {
            leftover.empty_gradually();
        }
    }
}

/// Gives back the whole pages within `bytes` a piece at a time; they read
/// as zero afterwards. For memory about to be freed.
pub fn empty_gradually(bytes: &mut [u8]) {
    if bytes.len() < 2 * PIECE {
        return;
    }
    let start = (bytes.as_ptr() as usize).next_multiple_of(PAGE);
    let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
    let mut at = start;
    while at < end {
        let len = (end - at).min(PIECE);
        // SAFETY: `at..at + len` is whole pages inside `bytes`, which the
        // caller holds mutably, so nothing else reads or writes them.
        // `MADV_DONTNEED` on private anonymous memory (the allocator's large
        // blocks, a state's own mapping) only makes the pages read as zero
        // from then on, a valid value for bytes; it writes nothing else. A
        // failure leaves the pages as they are, for the free to give back.
        unsafe { libc::madvise(at as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        at += len;
        std::thread::sleep(PAUSE);
    }
}
