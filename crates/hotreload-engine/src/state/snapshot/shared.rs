//! The snapshot behind a lock, for the tick thread that takes it and the
//! threads that read it a chunk at a time (trials, saves, migrations worked
//! out ahead), and its history's reach.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Leftover, Snapshot, Undo, Window};
use crate::layout::Layout;
use crate::state::State;
use crate::state::history::{Bound, Entry, Page};
use crate::state::pages::PAGE;

/// The snapshot, shared between the tick thread (which takes and restores
/// it) and the threads that copy it: a trial's state, a periodic save, a
/// save while the tick thread is stuck in plugin code (a second Ctrl-C
/// during a `shutdown` that never returns). The tick thread holds the lock
/// only while it takes or restores, never during a plugin call, so the copy
/// is always reachable; and it is the state as of the last call that
/// completed, which is the newest state known to be good.
///
/// A reader copies a large snapshot a chunk at a time, taking the lock for
/// each, so the tick thread never waits for more than one chunk's copy. A
/// take in between keeps the pages it overwrites that the reader has not
/// copied yet, and the reader uses those: its copy is the state as of the
/// tick it started at.
///
/// The lock is not fair: a reader that unlocks after a chunk and locks
/// again at once would win over a tick thread that the unlock only began
/// to wake (tens of microseconds on an idle CPU), chunk after chunk, until
/// the whole copy is done (a third of a second at 512 MiB). So a thread
/// that finds the lock taken counts itself in `waiting`, and a reader lets
/// it go first.
#[derive(Clone, Default)]
pub struct SharedSnapshot {
    inner: Arc<Mutex<Option<Kept>>>,
    /// Threads blocked on `inner` other than the reader (the tick thread).
    waiting: Arc<AtomicUsize>,
    /// One reader at a time.
    readers: Arc<Mutex<()>>,
    /// How much history each snapshot keeps (`None`: none).
    history: Arc<Mutex<Option<Bound>>>,
}

/// What the history holds now.
#[derive(Clone, Copy, Debug)]
pub struct HistorySpan {
    pub bound: Bound,
    /// The earliest tick the state can be put back to, and the latest (the
    /// last take's).
    pub oldest: Option<u64>,
    pub newest: Option<u64>,
    /// After a rewind, while nothing changed the state since: the tick it
    /// went to (the ticks from there to `newest` are kept for replay, loop,
    /// record and a rewind forward).
    pub rewound_to: Option<u64>,
    pub ticks: usize,
    pub bytes: usize,
    pub cut_by_bytes: bool,
}

pub(super) struct Kept {
    pub(super) snapshot: Snapshot,
    /// What the bytes mean, for saving them: the state version and layout of
    /// the version the copy was taken for.
    pub(super) state_version: u32,
    pub(super) layout: Option<Arc<Layout>>,
    /// Some version has run on this state (its `init` completed, or it was
    /// restored from a file): only then is it worth saving.
    pub(super) live: bool,
    /// Tells this snapshot from the one a later `reset` makes, for a reader.
    pub(super) generation: u64,
}

impl Kept {
    /// What the copy's bytes are, once one was taken.
    pub(super) fn meta(&self) -> Option<CopyMeta> {
        Some(CopyMeta {
            tick: self.snapshot.tick?,
            state_version: self.state_version,
            layout: self.layout.clone(),
        })
    }
}

/// A copy of the state handed out of [`SharedSnapshot::read`].
pub struct Copied {
    pub bytes: Vec<u8>,
    /// Ticks completed when the copy was taken.
    pub tick: u64,
    pub state_version: u32,
    pub layout: Option<Arc<Layout>>,
}

/// How much a reader copies per lock: about 5 µs of the tick thread's
/// waiting at most.
const READ_CHUNK: usize = 64 << 10;

impl SharedSnapshot {
    pub(super) fn lock(&self) -> MutexGuard<'_, Option<Kept>> {
        // Nothing panics while holding the lock but a copy; the bytes a
        // panic interrupted are overwritten by the next one.
        match self.inner.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                guard
            }
        }
    }

    /// The lock for a reader, after any other thread waiting for it, and
    /// waiting at most `patience` for a take in progress.
    pub(super) fn lock_within(&self, patience: Duration) -> Option<MutexGuard<'_, Option<Kept>>> {
        let deadline = Instant::now() + patience;
        loop {
            if self.waiting.load(Ordering::SeqCst) > 0 {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::yield_now();
                continue;
            }
            match self.inner.try_lock() {
                Ok(guard) => return Some(guard),
                Err(std::sync::TryLockError::Poisoned(e)) => return Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        }
    }

    /// A fresh snapshot for a state of `size` bytes (the first version, or
    /// a migration to a new layout); nothing is copied yet.
    /// The snapshot it replaces is handed back, for the caller to free
    /// where a large state's freeing holds nobody up.
    pub fn reset(&self, size: usize, state_version: u32, layout: Option<Arc<Layout>>) -> Leftover {
        self.reset_with(size, state_version, layout, None)
    }

    /// [`SharedSnapshot::reset`] for a block whose bytes are `bytes` but
    /// for the pages its tracking marks (block id `block`): the first take
    /// compares only those, instead of copying the whole block.
    pub fn reset_primed(
        &self,
        state_version: u32,
        layout: Option<Arc<Layout>>,
        bytes: Vec<u8>,
        block: u64,
    ) -> Leftover {
        let size = bytes.len();
        self.reset_with(size, state_version, layout, Some((bytes, block)))
    }

    fn reset_with(
        &self,
        size: usize,
        state_version: u32,
        layout: Option<Arc<Layout>>,
        primed: Option<(Vec<u8>, u64)>,
    ) -> Leftover {
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let bound = *self.history.lock().unwrap_or_else(|e| e.into_inner());
        let mut snapshot = match bound {
            Some(bound) => Snapshot::with_history(size, bound),
            None => Snapshot::new(size),
        };
        if let Some((bytes, block)) = primed {
            snapshot.bytes = bytes;
            snapshot.primed_for = Some(block);
        }
        let mut kept = self.lock();
        // A migration to a new layout keeps a live state live.
        let live = kept.as_ref().is_some_and(|k| k.live);
        Leftover {
            kept: kept.replace(Kept {
                snapshot,
                state_version,
                layout,
                live,
                generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            }),
        }
    }

    /// Keeps a history within `bound` from the next reset on.
    pub fn set_history(&self, bound: Option<Bound>) {
        *self.history.lock().unwrap_or_else(|e| e.into_inner()) = bound.filter(|b| b.ticks > 0);
    }

    /// What the history holds, if one is kept.
    pub fn history_span(&self) -> Option<HistorySpan> {
        let guard = self.lock();
        let snapshot = &guard.as_ref()?.snapshot;
        let history = snapshot.history.as_ref()?;
        let undone = history.undone();
        Some(HistorySpan {
            bound: history.bound(),
            oldest: history.oldest_tick().or(snapshot.tick),
            newest: undone.map(|u| u.tick).or(snapshot.tick),
            rewound_to: undone.map(|u| u.at),
            ticks: history.len() + undone.map_or(0, |u| u.entries.len()),
            bytes: history.bytes() + undone.map_or(0, |u| u.bytes()),
            cut_by_bytes: history.cut_by_bytes(),
        })
    }

    /// See [`Snapshot::rewind_to`].
    pub fn rewind_to(&self, state: &mut State, live_tick: u64, target: u64) -> Result<u64, String> {
        match self.lock().as_mut() {
            Some(kept) => kept.snapshot.rewind_to(state, live_tick, target),
            None => Err("no snapshot of the state exists yet".into()),
        }
    }

    /// [`SharedSnapshot::rewind_to`] for a loop's next pass, keeping
    /// nothing of what it goes back over.
    pub fn rewind_for_loop(
        &self,
        state: &mut State,
        live_tick: u64,
        target: u64,
    ) -> Result<u64, String> {
        match self.lock().as_mut() {
            Some(kept) => kept.snapshot.rewind(state, live_tick, target, Undo::Forget),
            None => Err("no snapshot of the state exists yet".into()),
        }
    }

    /// Records which version's layout the copies are in, after a swap or a
    /// rollback that kept the bytes as they are.
    pub fn set_owner(&self, state_version: u32, layout: Option<Arc<Layout>>) {
        if let Some(kept) = self.lock().as_mut() {
            kept.state_version = state_version;
            kept.layout = layout;
        }
    }

    /// Marks the state as one some version has run on.
    pub fn mark_live(&self) {
        if let Some(kept) = self.lock().as_mut() {
            kept.live = true;
        }
    }

    pub fn clear(&self) {
        *self.lock() = None;
    }

    /// Copies the state before tick `tick` if a copy is due (always, but
    /// for a large state that is not tracked); false if there is no
    /// snapshot to copy into.
    /// `input` is what the tick about to run is passed, for the history.
    #[inline]
    pub fn take_if_due(&self, state: &State, tick: u64, input: Option<&Page>) -> bool {
        match self.lock().as_mut() {
            Some(kept) => {
                if kept.snapshot.due(state, tick) {
                    kept.snapshot.take(state, tick);
                }
                if kept.snapshot.history.is_some() {
                    kept.snapshot.next_input = input.map(|i| (tick, i.clone()));
                }
                true
            }
            None => false,
        }
    }

    /// Copies the state now, before a call that is not a tick (`init`,
    /// `shutdown`); false if there is no snapshot to copy into.
    pub fn take(&self, state: &State, tick: u64) -> bool {
        match self.lock().as_mut() {
            Some(kept) => {
                kept.snapshot.take(state, tick);
                true
            }
            None => false,
        }
    }

    /// See [`Snapshot::settle`].
    pub fn settle(&self, state: &State, tick: u64) {
        if let Some(kept) = self.lock().as_mut() {
            kept.snapshot.settle(state, tick);
        }
    }

    /// See [`Snapshot::restore`].
    pub fn restore(&self, state: &mut State) -> Option<u64> {
        self.lock().as_mut()?.snapshot.restore(state)
    }

    /// What the snapshot has to say, once each (see [`Snapshot::take`]).
    pub fn take_notices(&self) -> Vec<String> {
        self.lock()
            .as_mut()
            .map(|k| std::mem::take(&mut k.snapshot.notices))
            .unwrap_or_default()
    }

    /// Pages copied into the snapshot since it was made whole (a large,
    /// tracked state; 0 otherwise).
    pub fn pages_copied(&self) -> u64 {
        self.lock().as_ref().map_or(0, |k| k.snapshot.pages_copied)
    }

    /// The last copy of a state some version has run on, for saving it or
    /// handing it to a trial from another thread. Waits at most `patience`
    /// for each lock (a take in progress).
    pub fn read(&self, patience: Duration) -> Option<Copied> {
        self.read_with_history(patience, None).map(|(copy, _)| copy)
    }

    /// [`SharedSnapshot::read`], with the history's entries from tick
    /// `since` on, as they were when the copy was taken (so that they lead
    /// back from exactly that copy).
    pub fn read_with_history(
        &self,
        patience: Duration,
        since: Option<u64>,
    ) -> Option<(Copied, Vec<Entry>)> {
        let mut bytes = Vec::new();
        let (meta, entries) = self.read_into(patience, since, &mut bytes)?;
        Some((
            Copied {
                bytes,
                tick: meta.tick,
                state_version: meta.state_version,
                layout: meta.layout,
            },
            entries,
        ))
    }

    /// The input the history recorded for each tick of `from..to` (index
    /// `tick - from`; `None` for a tick passed none, or not recorded).
    pub fn inputs(&self, from: u64, to: u64, patience: Duration) -> Option<Vec<Option<Page>>> {
        let guard = self.lock_within(patience)?;
        let history = guard.as_ref()?.snapshot.history.as_ref()?;
        let mut inputs = vec![None; usize::try_from(to.saturating_sub(from)).ok()?];
        let undone = history
            .undone()
            .into_iter()
            .flat_map(|u| u.entries.iter().cloned());
        for entry in history.since(from).into_iter().chain(undone) {
            if let (Some(input), Some(slot)) = (
                entry.input,
                entry
                    .tick
                    .checked_sub(from)
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| inputs.get_mut(i)),
            ) {
                *slot = Some(input);
            }
        }
        Some(inputs)
    }

    /// The last copy of a state some version has run on, written into
    /// `target` (a buffer another process maps, say), with what its bytes
    /// mean and, from tick `since` on, the history that leads back from it.
    /// Waits at most `patience` for each lock.
    pub fn read_into(
        &self,
        patience: Duration,
        since: Option<u64>,
        target: &mut dyn CopyTarget,
    ) -> Option<(CopyMeta, Vec<Entry>)> {
        self.read_into_then(patience, since, target, |_| {})
    }

    /// [`SharedSnapshot::read_into`], calling `at_start` on the snapshot
    /// under the lock the read starts with.
    pub(super) fn read_into_then(
        &self,
        patience: Duration,
        since: Option<u64>,
        target: &mut dyn CopyTarget,
        at_start: impl FnOnce(&mut Snapshot),
    ) -> Option<(CopyMeta, Vec<Entry>)> {
        let _one = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        let (size, mut meta, generation, mut entries, undone) = {
            let mut guard = self.lock_within(patience)?;
            let kept = guard.as_mut().filter(|k| k.live)?;
            let mut meta = kept.meta()?;
            at_start(&mut kept.snapshot);
            let (mut entries, undone) = match (since, &kept.snapshot.history) {
                (Some(since), Some(history)) => (history.since(since), history.undone().cloned()),
                _ => (Vec::new(), None),
            };
            let size = kept.snapshot.bytes.len();
            if size <= 4 * READ_CHUNK {
                target.start(size)?;
                target.write_at(0, &kept.snapshot.bytes)?;
                if let Some(undone) = undone {
                    carry_forward(&mut meta, &mut entries, undone, target)?;
                }
                return Some((meta, entries));
            }
            kept.snapshot.reader = Some(Window {
                cursor: 0,
                preserved: HashMap::new(),
            });
            (size, meta, kept.generation, entries, undone)
        };
        let _close = CloseWindow(self);
        target.start(size)?;
        let mut from = 0;
        while from < size {
            let mut guard = self.lock_within(patience)?;
            // A reset since (a migration): that copy is gone.
            let kept = guard.as_mut().filter(|k| k.generation == generation)?;
            let to = (from + READ_CHUNK).min(size);
            target.write_at(from, &kept.snapshot.bytes[from..to])?;
            let window = kept.snapshot.reader.as_mut()?;
            for p in from / PAGE..to.div_ceil(PAGE) {
                if let Some(older) = window.preserved.remove(&p) {
                    target.write_at(p * PAGE, &older)?;
                }
            }
            window.cursor = to;
            from = to;
        }
        if let Some(undone) = undone {
            carry_forward(&mut meta, &mut entries, undone, target)?;
        }
        Some((meta, entries))
    }
}

/// Turns a read of the state where a rewind put it, with the history that
/// leads back from it, into the read of the state before the rewind, with
/// the entries the rewind went back over after the others: what was
/// recorded, as if the rewind had not happened.
fn carry_forward(
    meta: &mut CopyMeta,
    entries: &mut Vec<Entry>,
    undone: crate::state::history::Undone,
    target: &mut dyn CopyTarget,
) -> Option<()> {
    for (p, bytes) in &undone.latest {
        target.write_at(p * PAGE, bytes)?;
    }
    entries.extend(undone.entries);
    meta.tick = undone.tick;
    Some(())
}

impl SharedSnapshot {
    /// Brings `image` (a trial's copy of the state, kept from one trial to
    /// the next) up to the last copy of a state some version has run on:
    /// only the pages that changed since the last export into it are
    /// written, unless `held` (the snapshot generation the image holds)
    /// says it holds another or none, when all of it is, after
    /// `image.start`. Waits at most `patience` for each lock; on `None`
    /// the image holds nothing usable (and `held` says so).
    pub fn export_into(
        &self,
        patience: Duration,
        held: &mut Option<u64>,
        image: &mut dyn CopyTarget,
    ) -> Option<CopyMeta> {
        let _one = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        let previous = held.take();
        let (size, meta, generation, whole) = {
            let mut guard = self.lock_within(patience)?;
            let kept = guard.as_mut().filter(|k| k.live)?;
            let meta = kept.meta()?;
            let size = kept.snapshot.bytes.len();
            let whole = previous != Some(kept.generation);
            if size <= 4 * READ_CHUNK {
                if whole {
                    image.start(size)?;
                }
                image.write_at(0, &kept.snapshot.bytes)?;
                kept.snapshot.unexported.fill(0);
                *held = Some(kept.generation);
                return Some(meta);
            }
            kept.snapshot.reader = Some(Window {
                cursor: 0,
                preserved: HashMap::new(),
            });
            (size, meta, kept.generation, whole)
        };
        let _close = CloseWindow(self);
        if whole {
            image.start(size)?;
        }
        let pages = size.div_ceil(PAGE);
        let mut page = 0;
        while page < pages {
            let mut guard = self.lock_within(patience)?;
            let kept = guard.as_mut().filter(|k| k.generation == generation)?;
            let snapshot = &mut kept.snapshot;
            let end = (page + READ_CHUNK / PAGE).min(pages);
            // Runs of changed pages, one write each.
            let mut run: Option<usize> = None;
            for p in page..=end {
                let changed = p < end && (snapshot.take_unexported(p) || whole);
                match (changed, run) {
                    (true, None) => run = Some(p),
                    (false, Some(first)) => {
                        let bytes = &snapshot.bytes[first * PAGE..(p * PAGE).min(size)];
                        image.write_at(first * PAGE, bytes)?;
                        run = None;
                    }
                    _ => {}
                }
            }
            let window = snapshot.reader.as_mut()?;
            let mut older = Vec::new();
            for p in page..end {
                if let Some(bytes) = window.preserved.remove(&p) {
                    older.push((p, bytes));
                }
            }
            window.cursor = (end * PAGE).min(size);
            for (p, bytes) in older {
                // The reader's tick had these bytes; the snapshot has moved
                // on, so the next export writes the page again.
                image.write_at(p * PAGE, &bytes)?;
                snapshot.mark_changed(p);
            }
            page = end;
        }
        *held = Some(generation);
        Some(meta)
    }
}

/// What a copy's bytes are: when it was taken and what they mean.
pub struct CopyMeta {
    /// Ticks completed when the copy was taken.
    pub tick: u64,
    pub state_version: u32,
    pub layout: Option<Arc<Layout>>,
}

/// Where [`SharedSnapshot::read_into`] writes a copy.
pub trait CopyTarget {
    /// Makes room for exactly `size` bytes; `None` if there is none. Called
    /// once, before any write. For a large state it is called outside the
    /// snapshot's lock, so it may take its time (allocate every page).
    fn start(&mut self, size: usize) -> Option<()>;
    /// Writes `bytes` at `offset` (within the size given to `start`).
    fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Option<()>;
}

impl CopyTarget for Vec<u8> {
    fn start(&mut self, size: usize) -> Option<()> {
        // Zeroed memory from the allocator (fresh pages for a large state),
        // not a pass that writes zeros before the copy does.
        *self = vec![0u8; size];
        Some(())
    }

    fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Option<()> {
        self.get_mut(offset..offset + bytes.len())?
            .copy_from_slice(bytes);
        Some(())
    }
}

/// Ends a reader's window, however the read ends.
struct CloseWindow<'a>(&'a SharedSnapshot);

impl Drop for CloseWindow<'_> {
    fn drop(&mut self) {
        if let Some(kept) = self.0.lock().as_mut() {
            kept.snapshot.reader = None;
        }
    }
}
