//! Giving a large state's memory back a piece at a time, off the tick
//! thread.
//!
//! Unmapping 64 MiB in one call holds the process's memory-map lock while
//! its pages are freed, about 5–10 ms; meanwhile every `mprotect` of the
//! tick thread (the snapshot closing the pages a tick left alone) waits for
//! it. Freed that way after a layout-changing swap of a 64 MiB state (its
//! old block, the old block's snapshot, the copy the migration was worked
//! out from), ticks started up to 23–37 ms late; freed as here, 3–6 ms,
//! as when they were not freed at all (BENCHMARKS.md, "large state with a
//! new layout at every save"). `madvise(MADV_DONTNEED)`
//! frees pages under the lock's shared side, and a megabyte at a time with
//! a pause after each it never holds anyone up for long; the emptied
//! mapping's unmap is then quick.
//!
//! The large buffers a swap lets go of are first kept a while as
//! [`Spares`]: the next layout-changing swap's migration, worked out ahead,
//! reads its copies into them instead of into fresh memory, which the
//! kernel must clear page by page as it is first written (50–70 ms per
//! 64 MiB pass on the test VM, against 16–17 ms into warm memory).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::State;
use super::pages::PAGE;
use super::snapshot::Leftover;

/// Freed per call.
const PIECE: usize = 1 << 20;
/// Memory from this size on is freed a piece at a time, and kept as spares.
const LARGE: usize = 2 * PIECE;
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

    /// Keeps the large buffers as `spares` for the next migration and
    /// frees the rest (see [`Discarded::free_soon`]).
    pub fn free_keeping_spares(mut self, spares: &Spares) {
        let (blocks, states): (Vec<State>, Vec<State>) = std::mem::take(&mut self.states)
            .into_iter()
            .partition(|s| s.size() >= LARGE && !s.is_shared());
        // A shared block is never kept: the worker of a version kept for
        // rollback still maps it, and plugin code there (a thread left
        // running) could write into whatever the block became. A fresh one
        // of its length is made instead, its pages allocated ahead.
        if let Some(shared) = states.iter().find(|s| s.size() >= LARGE && s.is_shared()) {
            spares.prefill_shared(shared.size());
        }
        let (mut kept, buffers): (Vec<Vec<u8>>, Vec<Vec<u8>>) = std::mem::take(&mut self.buffers)
            .into_iter()
            .partition(|b| b.len() >= LARGE);
        self.states = states;
        self.buffers = buffers;
        kept.extend(
            self.snapshots
                .iter_mut()
                .filter(|l| l.size() >= LARGE)
                .filter_map(Leftover::take_bytes),
        );
        spares.keep(kept, blocks);
        self.free_soon();
    }

    /// Frees it all: a small lot at once, a large one a megabyte at a time
    /// on a thread of its own, so that the caller (the reload thread, with
    /// the next build to check) is not held up either.
    pub fn free_soon(self) {
        let bytes = self.states.iter().map(State::size).sum::<usize>()
            + self.buffers.iter().map(Vec::len).sum::<usize>()
            + self.snapshots.iter().map(Leftover::size).sum::<usize>();
        if bytes < LARGE {
            return drop(self);
        }
        // Should the thread not start, the closure, and the lot with it,
        // is dropped with the error: freed here, at once.
        let _ = std::thread::Builder::new()
            .name("hotreload-free".into())
            .spawn(move || {
                let mut lot = self;
                lot.free_all();
            });
    }

    /// Frees it all, the large pieces a megabyte at a time.
    fn free_all(&mut self) {
        for state in self.states.drain(..) {
            state.release_gradually(PIECE, PAUSE);
        }
        for mut bytes in self.buffers.drain(..) {
            empty_gradually(&mut bytes);
        }
        for mut leftover in self.snapshots.drain(..) {
            leftover.empty_gradually();
        }
    }
}

/// Gives back the whole pages within `bytes` a piece at a time; they read
/// as zero afterwards. For memory about to be freed.
pub fn empty_gradually(bytes: &mut [u8]) {
    if bytes.len() < LARGE {
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

/// How long spares wait for a migration to use them before they are freed.
const SPARE_FOR: Duration = Duration::from_secs(10);
/// The most buffers and blocks kept: a migration worked out ahead takes two
/// buffers (the copy it reads, the new block's snapshot) and a block; a
/// trial's image is kept apart. One more of each covers a swap that lets go
/// of its memory in two lots (the copy for the `migrate` hook comes apart
/// from the old block and its snapshot).
const KEEP_BUFFERS: usize = 3;
const KEEP_BLOCKS: usize = 1;

/// Large buffers kept from the last swap for the next migration's copies
/// (see the module documentation); freed, a piece at a time, when a later
/// swap brings newer ones or after [`SPARE_FOR`] unused.
#[derive(Clone, Default)]
pub struct Spares {
    inner: Arc<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    buffers: Vec<Vec<u8>>,
    blocks: Vec<State>,
    /// Tells one lot from the next, for the thread that frees a lot late.
    generation: u64,
}

impl Spares {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // Only buffers are kept under it: a panic leaves nothing half done.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `buffers` and `blocks` before those kept already; beyond
    /// [`KEEP_BUFFERS`] and [`KEEP_BLOCKS`], the oldest are freed. (A swap
    /// lets go of its memory in more than one lot: had a lot replaced the
    /// one before, the next migration would read into fresh pages again.)
    pub fn keep(&self, buffers: Vec<Vec<u8>>, blocks: Vec<State>) {
        if buffers.is_empty() && blocks.is_empty() {
            return;
        }
        let (older, older_blocks, generation) = {
            let mut kept = self.lock();
            kept.generation += 1;
            let mut all_buffers = buffers;
            all_buffers.append(&mut kept.buffers);
            let older = all_buffers.split_off(all_buffers.len().min(KEEP_BUFFERS));
            kept.buffers = all_buffers;
            let mut all_blocks = blocks;
            all_blocks.append(&mut kept.blocks);
            let older_blocks = all_blocks.split_off(all_blocks.len().min(KEEP_BLOCKS));
            kept.blocks = all_blocks;
            (older, older_blocks, kept.generation)
        };
        let spares = self.clone();
        // Should the thread not start, the spares stay until a later lot
        // replaces them or the server ends.
        let _ = std::thread::Builder::new()
            .name("hotreload-free".into())
            .spawn(move || {
                let mut discarded = Discarded {
                    buffers: older,
                    states: older_blocks,
                    ..Discarded::default()
                };
                discarded.free_all();
                std::thread::sleep(SPARE_FOR);
                {
                    let mut kept = spares.lock();
                    if kept.generation == generation {
                        discarded.buffers = std::mem::take(&mut kept.buffers);
                        discarded.states = std::mem::take(&mut kept.blocks);
                    }
                }
                discarded.free_all();
            });
    }

    /// Makes a shared block of `size` bytes, its pages allocated ahead, on
    /// a thread of its own, and keeps it as a spare: the next migration of
    /// an isolated run writes into it instead of into a fresh memory file
    /// (whose pages the kernel clears at their first write: 43% of the
    /// reload thread's time in a swap of 64 MiB).
    pub fn prefill_shared(&self, size: usize) {
        let spares = self.clone();
        // Should the thread not start, the next migration makes its block.
        let _ = std::thread::Builder::new()
            .name("hotreload-spare".into())
            .spawn(move || {
                if let Ok(block) = State::shared_prefilled(size, PIECE, PAUSE) {
                    spares.keep(Vec::new(), vec![block]);
                }
            });
    }

    /// A kept block of the length a block of `size` bytes has, shared
    /// memory or not as `shared` says, emptied (see [`State::reused`]).
    pub fn take_block(&self, size: usize, shared: bool) -> Option<State> {
        let mut kept = self.lock();
        let mut found = None;
        for state in std::mem::take(&mut kept.blocks) {
            if found.is_some() || state.is_shared() != shared {
                kept.blocks.push(state);
                continue;
            }
            match state.reused(size) {
                Ok(block) => found = Some(block),
                Err(state) => kept.blocks.push(state),
            }
        }
        found
    }

    /// A kept buffer that holds `len` bytes, emptied, or a new one with
    /// room to spare (sizes change by a few bytes from one layout to the
    /// next). The smallest that holds it without growing, or else one
    /// short by less than a piece, grown: a buffer this large is a mapping
    /// of its own, which the allocator grows by remapping, so its pages
    /// stay the warm ones and only the few new ones are fresh.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut kept = self.lock();
        let best = kept
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .or_else(|| {
                kept.buffers
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.capacity() + PIECE > len)
                    .max_by_key(|(_, b)| b.capacity())
            })
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut bytes = kept.buffers.swap_remove(i);
                bytes.clear();
                bytes.reserve_exact(len.next_multiple_of(PIECE));
                bytes
            }
            None => Vec::with_capacity(len.next_multiple_of(PIECE)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn tracked(size: usize) -> State {
        crate::guard::install().expect("guard");
        let state = State::zeroed(size).expect("state");
        assert!(state.written_pages().is_some());
        state
    }

    #[test]
    fn a_spare_buffer_is_handed_out_empty_with_its_room() {
        let spares = Spares::default();
        let mut big = vec![7u8; 3 * PIECE];
        big.reserve_exact(PIECE);
        let room = big.capacity();
        spares.keep(vec![big, vec![1u8; 2 * PIECE]], Vec::new());
        // The smallest that holds it.
        let taken = spares.take(2 * PIECE + 1);
        assert!(taken.is_empty());
        assert_eq!(taken.capacity(), room);
        // None left that fits: a new one, with room to spare.
        let fresh = spares.take(5 * PIECE + 3);
        assert!(fresh.capacity() >= 6 * PIECE, "{}", fresh.capacity());
        assert_eq!(spares.take(2 * PIECE).capacity(), 2 * PIECE);
    }

    /// A swap lets go of its memory in two lots (the copy for the hook,
    /// then the old block and its snapshot): the second adds to the first,
    /// up to the bound, newest first.
    #[test]
    fn lots_add_up_to_the_bound_and_a_buffer_a_little_short_grows() {
        let spares = Spares::default();
        let exact = |len: usize| {
            let mut b = Vec::with_capacity(len);
            b.resize(len, 3u8);
            b
        };
        spares.keep(vec![exact(2 * PIECE + 8)], Vec::new());
        spares.keep(vec![exact(2 * PIECE), exact(2 * PIECE + 16)], Vec::new());
        spares.keep(vec![exact(4 * PIECE)], Vec::new());
        let kept: Vec<usize> = spares.lock().buffers.iter().map(Vec::capacity).collect();
        assert_eq!(
            kept,
            vec![4 * PIECE, 2 * PIECE, 2 * PIECE + 16],
            "the oldest went"
        );
        assert_eq!(
            spares.take(3 * PIECE).capacity(),
            4 * PIECE,
            "one that holds it"
        );
        // Four bytes more than any kept buffer holds (a field added): the
        // nearest, grown, not a fresh one.
        let grown = spares.take(2 * PIECE + 20);
        assert!(grown.is_empty() && grown.capacity() >= 2 * PIECE + 20);
        let kept: Vec<usize> = spares.lock().buffers.iter().map(Vec::capacity).collect();
        assert_eq!(kept, vec![2 * PIECE], "{kept:?}");
    }

    #[test]
    fn a_spare_block_comes_back_zeroed_writable_and_new() {
        let size = 2 * PIECE + 100;
        let mut old = tracked(size);
        old.bytes_mut().fill(0xa5);
        let id = old.id();
        // Read-only and unmarked, as the snapshot leaves a live block.
        old.written_pages()
            .expect("tracked")
            .close_all()
            .expect("close");
        let spares = Spares::default();
        spares.keep(Vec::new(), vec![old]);
        // Another length does not take it.
        assert!(spares.take_block(4 * PIECE, false).is_none());
        assert!(spares.take_block(size, true).is_none(), "not shared memory");
        let mut block = spares.take_block(size - 50, false).expect("the kept block");
        assert_ne!(block.id(), id);
        assert_eq!(block.size(), size - 50);
        assert!(block.bytes().iter().all(|&b| b == 0));
        // Every page marked for the next take, and writable without a trap.
        let mut marked = Vec::new();
        block.written_pages().expect("tracked").marked(&mut marked);
        assert_eq!(marked.len(), (size - 50).div_ceil(PAGE));
        block.bytes_mut()[PIECE] = 1;
        assert!(spares.take_block(size, false).is_none(), "handed out once");
    }

    /// An isolated run's spare: a fresh shared block, made on a thread of
    /// its own with its pages allocated, handed out only for shared memory
    /// of its length, zeroed and writable.
    #[test]
    fn a_prefilled_shared_block_is_kept_for_the_next_shared_migration() {
        crate::guard::install().expect("guard");
        let size = 3 * PIECE + 10;
        let spares = Spares::default();
        spares.prefill_shared(size);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut block = loop {
            assert!(
                spares.take_block(size, false).is_none(),
                "not for a private block"
            );
            if let Some(block) = spares.take_block(size, true) {
                break block;
            }
            assert!(std::time::Instant::now() < deadline, "no spare within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(block.is_shared() && block.shared_fd().is_some());
        assert_eq!(block.size(), size);
        // Its memory file's pages are there already (allocated ahead).
        let fd = block
            .shared_fd()
            .expect("shared")
            .try_clone_to_owned()
            .expect("dup");
        let allocated = std::fs::File::from(fd).metadata().expect("stat").blocks() * 512;
        assert!(
            allocated >= size as u64,
            "{allocated} bytes allocated of {size}"
        );
        assert!(block.bytes().iter().all(|&b| b == 0));
        block.bytes_mut()[2 * PIECE] = 7;
        assert!(spares.take_block(size, true).is_none(), "handed out once");
    }

    #[test]
    fn emptied_bytes_read_as_zero() {
        let mut bytes = vec![9u8; 3 * PIECE + 5];
        empty_gradually(&mut bytes);
        let start = (bytes.as_ptr() as usize).next_multiple_of(PAGE) - bytes.as_ptr() as usize;
        assert!(bytes[start..start + 2 * PIECE].iter().all(|&b| b == 0));
        assert_eq!(
            bytes[bytes.len() - 1],
            9,
            "a partial page at the end is left"
        );
    }
}
