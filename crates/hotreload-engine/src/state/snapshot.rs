//! The copy of the state taken before plugin code runs, so that a fault can
//! put the state back exactly as it was before the faulting call, at any
//! size.
//!
//! A state of up to [`TRACK_ABOVE`] bytes is copied whole before every
//! call: 1 MiB costs about 30 µs. A larger one has pages of its own, tracked
//! for writes ([`super::pages`]): before each call the copy takes only the
//! pages written since the last one, and every other page is read-only, so
//! the copy and the state agree on them. A fault puts back the written
//! pages. The cost of a tick grows with the pages it writes, not with the
//! state's size. In isolated mode the worker's writes are tracked too,
//! with the bitmap in shared memory ([`super::shared_pages`]). An untracked
//! large state (no crash guard) is copied whole every ⌈size / 1 MiB⌉ ticks.

use std::collections::HashMap;

use crate::state::State;
use crate::state::block::TRACK_ABOVE;
use crate::state::history::{Bound, Entry, History, Page};
use crate::state::pages::{PAGE, RUN_BUDGET, copy_page, shared_copy};

pub struct Snapshot {
    bytes: Vec<u8>,
    /// The tick index the copy was taken at (before that tick ran).
    tick: Option<u64>,
    /// The block whose pages the copy follows (its id), once it was copied
    /// whole and its unchanged pages closed.
    primed_for: Option<u64>,
    /// Scratch lists, kept to spare an allocation per tick.
    written: Vec<usize>,
    unchanged: Vec<usize>,
    /// A reader copying this snapshot a chunk at a time.
    reader: Option<Window>,
    /// A bit per page: changed since the last export into a trial's image
    /// ([`SharedSnapshot::export_into`]); all set while none was made.
    unexported: Vec<u64>,
    /// Pages copied since the copy was made whole, for the figures.
    pages_copied: u64,
    /// What the tick loop should say, once each (pages that could not be
    /// made read-only, the history cut short or started again).
    notices: Vec<String>,
    /// The block the last take copied (its id).
    last_block: Option<u64>,
    /// What changed at each take, for rewinding (`None`: none is kept).
    history: Option<History>,
    /// The input the tick after the last take is passed, and that tick:
    /// kept in the history's entry for that take, made at the next one.
    next_input: Option<(u64, Page)>,
    said_history_cut: bool,
    said_history_restart: bool,
    said_close_failed: bool,
    /// The pages changed since a read for a migration being prepared.
    follower: Option<follow::Follower>,
}

/// Whether a rewind keeps what it goes back over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// For `replay`, `record` and a rewind forward: a rewind asked for.
    Keep,
    /// A loop's pass: the next pass records the window again, and keeping
    /// its pages would copy them on the tick thread for nothing.
    Forget,
}

/// What a reader has not copied yet, and the pages a take overwrote there
/// before it got to them (their bytes as of the reader's tick).
struct Window {
    /// Bytes below this are copied.
    cursor: usize,
    preserved: HashMap<usize, Box<[u8]>>,
}

impl Snapshot {
    pub fn new(size: usize) -> Snapshot {
        Snapshot {
            bytes: vec![0; size],
            tick: None,
            primed_for: None,
            written: Vec::new(),
            unchanged: Vec::new(),
            reader: None,
            unexported: vec![u64::MAX; size.div_ceil(PAGE).div_ceil(64)],
            pages_copied: 0,
            notices: Vec::new(),
            said_close_failed: false,
            last_block: None,
            history: None,
            next_input: None,
            said_history_cut: false,
            said_history_restart: false,
            follower: None,
        }
    }

    /// A snapshot that also keeps a history within `bound`.
    pub fn with_history(size: usize, bound: Bound) -> Snapshot {
        let mut snapshot = Snapshot::new(size);
        if bound.ticks > 0 {
            snapshot.history = Some(History::new(bound));
        }
        snapshot
    }

    /// Whether a copy is due before tick `tick`: always, but for a large
    /// state whose writes are not tracked, which is copied once every
    /// `ceil(size / TRACK_ABOVE)` ticks (a fault there can undo that many;
    /// the fault line names the tick it restores).
    #[inline]
    pub fn due(&self, state: &State, tick: u64) -> bool {
        if state.written_pages().is_some() || self.bytes.len() <= TRACK_ABOVE {
            return true;
        }
        let every = self.bytes.len().div_ceil(TRACK_ABOVE) as u64;
        self.tick.is_none_or(|last| tick >= last + every)
    }

    /// Copies the state as it is before tick `tick`, and with a history
    /// keeps what the pages that changed since the last take held then.
    pub fn take(&mut self, state: &State, tick: u64) {
        let previous = self.tick.replace(tick);
        let same_block = self.last_block.replace(state.id()) == Some(state.id());
        let recordable = state.written_pages().is_some() || self.bytes.len() <= TRACK_ABOVE;
        if !recordable && self.history.take().is_some() {
            self.notices.push(format!(
                "no history for rewind and replay: the state of {} bytes is copied only every \
                 {} ticks here (no crash guard), not at every tick",
                self.bytes.len(),
                self.bytes.len().div_ceil(TRACK_ABOVE)
            ));
        }
        let mut record = match (&self.history, previous) {
            (Some(_), Some(previous)) if same_block => Some(previous),
            _ => None,
        };
        // A step that may have changed more than half of what the history
        // may hold (an `init` filling a large state) is not kept: copying it
        // would hold this tick up by a whole copy of the state, and it
        // would push out everything else anyway. The history starts again
        // after it.
        // The pages marked since the last take: found once here, for this
        // decision and for `sync`.
        let tracked = state
            .written_pages()
            .filter(|_| state.size() == self.bytes.len());
        let could_change = match tracked {
            Some(pages) => {
                pages.written(&mut self.written);
                self.written.len() * PAGE
            }
            None => self.bytes.len(),
        };
        if let (Some(history), Some(_)) = (&mut self.history, record)
            && could_change > history.bound().bytes / 2
        {
            history.clear();
            record = None;
            if !self.said_history_restart {
                self.said_history_restart = true;
                self.notices.push(format!(
                    "the rewind history starts again at tick {tick}: up to {} MiB changed \
                     before it, more than half of --history-mb ({} MiB), and is not kept",
                    could_change >> 20,
                    history.bound().bytes >> 20
                ));
            }
        }
        let mut changed = Vec::new();
        self.sync(state, record.is_some(), &mut changed);
        if let (Some(history), Some(previous)) = (&mut self.history, record) {
            let input = self
                .next_input
                .take()
                .filter(|(tick, _)| *tick == previous)
                .map(|(_, input)| input);
            let dropped = history.push(Entry {
                tick: previous,
                pages: changed,
                input,
            });
            if let Some(undone) = dropped {
                self.notices.push(format!(
                    "ticks {}..{}, which a rewind went back over, are no longer kept for \
                     replay, loop and record: the state changed at tick {} (a tick, an edit \
                     or a hook ran) and its history goes on from there",
                    undone.at, undone.tick, undone.at
                ));
            }
            if history.cut_by_bytes() && !self.said_history_cut {
                self.said_history_cut = true;
                let bound = history.bound();
                self.notices.push(format!(
                    "the rewind history holds only the last {} ticks (asked for {}): its \
                     memory bound of {} MiB is reached (--history-mb); the oldest go first",
                    history.len(),
                    bound.ticks,
                    bound.bytes >> 20
                ));
            }
        }
    }

    /// Copies page `p` of `src` in, keeping its old bytes for a reader and,
    /// if `record`, in `changed`.
    fn copy_in(&mut self, p: usize, src: &[u8], record: bool, changed: &mut Vec<(usize, Page)>) {
        let range = p * PAGE..((p + 1) * PAGE).min(self.bytes.len());
        self.preserve(p);
        if record {
            changed.push((p, shared_copy(&self.bytes[range.clone()])));
        }
        copy_page(&mut self.bytes[range.clone()], &src[range]);
        self.mark_changed(p);
        self.pages_copied += 1;
    }

    fn sync(&mut self, state: &State, record: bool, changed: &mut Vec<(usize, Page)>) {
        let size = self.bytes.len();
        let src = state.bytes();
        let tracked = state.written_pages().filter(|_| state.size() == size);
        let Some(pages) = tracked else {
            if record {
                // A small state, page by page, to know what changed.
                for p in 0..size.div_ceil(PAGE) {
                    let range = p * PAGE..((p + 1) * PAGE).min(size);
                    if self.bytes[range.clone()] != src[range] {
                        self.copy_in(p, src, true, changed);
                    }
                }
                return;
            }
            self.preserve_all();
            self.bytes.copy_from_slice(src);
            self.mark_all_changed();
            return;
        };
        // `self.written` was filled by `take`.
        let primed = self.primed_for == Some(state.id());
        self.unchanged.clear();
        for i in 0..self.written.len() {
            let p = self.written[i];
            let range = p * PAGE..((p + 1) * PAGE).min(size);
            if primed && self.bytes[range.clone()] == src[range.clone()] {
                self.unchanged.push(p);
                continue;
            }
            self.copy_in(p, src, record && primed, changed);
        }
        if !primed {
            // Every page was marked when the block was made: all are copied
            // now, and the next take closes those left unchanged.
            self.primed_for = Some(state.id());
            return;
        }
        // Pages the last tick did not write become read-only again, so a
        // page costs a copy per tick only while it is being written.
        let closed = pages.close(&self.unchanged).and_then(|()| {
            if pages.runs() <= RUN_BUDGET {
                return Ok(false);
            }
            // Scattered writes left too many pieces: all of it read-only
            // again, and what is written next joins one by one.
            pages.close_all().map(|()| true)
        });
        let recheck = match closed {
            Ok(false) => std::mem::take(&mut self.unchanged),
            Ok(true) => std::mem::take(&mut self.written),
            Err(why) => {
                // Still writable and marked: copied at every take, exact,
                // only slower. Said once.
                if !self.said_close_failed {
                    self.said_close_failed = true;
                    self.notices.push(format!(
                        "{why}; the pages stay writable and are copied before every tick"
                    ));
                }
                return;
            }
        };
        for &p in &recheck {
            // Written between the compare and the close (by a thread of the
            // plugin's): now read-only, so this copy holds.
            let range = p * PAGE..((p + 1) * PAGE).min(size);
            if self.bytes[range.clone()] != src[range] && !changed.iter().any(|(c, _)| *c == p) {
                self.copy_in(p, src, record, changed);
            }
        }
        self.unchanged = recheck;
    }

    /// A second take at the same tick, kept out of the history: after a
    /// take that copied most of a tracked state (what `init` filled), every
    /// page it copied is still writable and marked, so the next take would
    /// compare them all. This one finds them unchanged and makes them
    /// read-only now, so the next take looks only at what is written next.
    pub fn settle(&mut self, state: &State, tick: u64) {
        let history = self.history.take();
        self.take(state, tick);
        self.history = history;
    }

    /// Puts the state (and this copy) back to tick `target` from the
    /// history; returns the tick reached. `live_tick`: the tick the state is
    /// at (copies are taken before each tick, so the last tick's writes are
    /// in none yet: they are taken first, or the pages only that tick
    /// wrote would keep its bytes). Refused, changing nothing, when the
    /// history does not reach that far back. What the rewind goes back over
    /// is kept (see [`History::undo`]), and `target` may be among it.
    pub fn rewind_to(
        &mut self,
        state: &mut State,
        live_tick: u64,
        target: u64,
    ) -> Result<u64, String> {
        self.rewind(state, live_tick, target, Undo::Keep)
    }

    fn rewind(
        &mut self,
        state: &mut State,
        live_tick: u64,
        target: u64,
        undo: Undo,
    ) -> Result<u64, String> {
        let last = self.tick.ok_or("no snapshot was taken yet")?;
        if last < live_tick && state.size() == self.bytes.len() {
            self.take(state, live_tick);
        }
        let now = self.tick.ok_or("no snapshot was taken yet")?;
        let Some(history) = &mut self.history else {
            return Err(
                "no history is kept (--history-ticks 0, or a large state that is not \
                        tracked)"
                    .into(),
            );
        };
        if target > now {
            let Some(pages) = history.redo(target) else {
                let newest = history.undone().map_or(now, |u| u.tick);
                return Err(format!(
                    "expected a tick from {} to {newest}, the history kept, found {target}",
                    history.oldest_tick().unwrap_or(now)
                ));
            };
            self.put_back(state, pages.iter().map(|(p, b)| (*p, b)));
            self.tick = Some(target);
            return Ok(target);
        }
        match history.oldest_tick() {
            Some(oldest) if oldest <= target && target <= now => {}
            Some(oldest) => {
                return Err(format!(
                    "expected a tick from {oldest} to {now}, the history kept, found {target}"
                ));
            }
            None if target == now => return Ok(now),
            None => {
                return Err(format!(
                    "expected tick {now}, the history is empty, found {target}"
                ));
            }
        }
        let mut popped = Vec::new();
        while let Some(entry) = history.pop() {
            let reached = entry.tick;
            popped.push(entry);
            if reached <= target {
                break;
            }
        }
        let reached = popped.last().map_or(now, |e| e.tick);
        // Oldest first: each page takes the bytes the oldest entry kept.
        let mut first = std::collections::HashMap::new();
        for entry in popped.iter().rev() {
            for (p, old) in &entry.pages {
                first.entry(*p).or_insert(old);
            }
        }
        let mut pages: Vec<(usize, Page)> =
            first.into_iter().map(|(p, b)| (p, b.clone())).collect();
        pages.sort_unstable_by_key(|(p, _)| *p);
        // What the rewind goes back over stays at hand (for replay, loop,
        // record, or a rewind forward) until the state changes.
        let copy = &self.bytes;
        let before = |p: usize| shared_copy(&copy[p * PAGE..((p + 1) * PAGE).min(copy.len())]);
        if let Some(history) = &mut self.history {
            match undo {
                Undo::Keep => history.undo(popped, before, now, reached),
                Undo::Forget => history.forget_undone(),
            }
        }
        self.put_back(state, pages.iter().map(|(p, b)| (*p, b)));
        self.tick = Some(reached);
        Ok(reached)
    }

    /// Writes `pages` (each as it should be) into the state and this copy,
    /// for a rewind.
    fn put_back<'a>(
        &mut self,
        state: &mut State,
        pages: impl ExactSizeIterator<Item = (usize, &'a Page)>,
    ) {
        let touched = pages.len();
        // A trap per page written would cost more than the rewind itself:
        // above a few hundred pages the whole state is opened for the
        // rewind, in one call (every page marked, for the next take to
        // compare). When nothing but this thread can write the state
        // meanwhile, it is closed again after the rewind instead: the pages
        // the rewind writes go into this copy too, so only the pages marked
        // before (written since the last take) need comparing, and are
        // marked again. Another writer (a thread plugin code started, or a
        // worker process marking a shared bitmap) could write a page while
        // it is open without a trap: then every page stays marked. If
        // opening fails, the pages trap one by one; if closing fails, every
        // page stays marked.
        let mut marked_before = Vec::new();
        let opened = touched > OPEN_ALL_ABOVE
            && state.written_pages().is_some_and(|pages| {
                pages.written(&mut marked_before);
                pages.open_all().is_ok()
            });
        let close_after = opened && only_this_thread_writes(state);
        let dst = state.bytes_mut();
        for (p, bytes) in pages {
            let from = p * PAGE;
            copy_page(&mut dst[from..from + bytes.len()], bytes);
            self.preserve(p);
            copy_page(&mut self.bytes[from..from + bytes.len()], bytes);
            self.mark_changed(p);
        }
        if close_after
            && let Some(pages) = state.written_pages()
            && pages.close_all().is_ok()
        {
            pages.mark(&marked_before);
        }
    }

    /// Page `p` of the copy changed: for the next export, and for a
    /// migration prepared from an earlier read.
    fn mark_changed(&mut self, p: usize) {
        if let Some(word) = self.unexported.get_mut(p / 64) {
            *word |= 1 << (p % 64);
        }
        if let Some(follower) = &mut self.follower {
            follower.mark(p);
        }
    }

    /// Every page of the copy changed.
    fn mark_all_changed(&mut self) {
        self.unexported.fill(u64::MAX);
        if let Some(follower) = &mut self.follower {
            follower.mark_all();
        }
    }

    /// Whether page `p` changed since the last export; clears its bit.
    fn take_unexported(&mut self, p: usize) -> bool {
        match self.unexported.get_mut(p / 64) {
            Some(word) => {
                let bit = 1u64 << (p % 64);
                let was = *word & bit != 0;
                *word &= !bit;
                was
            }
            None => false,
        }
    }

    /// Keeps page `p`'s bytes for a reader that has not copied it yet.
    fn preserve(&mut self, p: usize) {
        if let Some(window) = &mut self.reader
            && p * PAGE >= window.cursor
            && !window.preserved.contains_key(&p)
        {
            let range = p * PAGE..((p + 1) * PAGE).min(self.bytes.len());
            window.preserved.insert(p, self.bytes[range].into());
        }
    }

    fn preserve_all(&mut self) {
        if let Some(cursor) = self.reader.as_ref().map(|w| w.cursor) {
            for p in cursor / PAGE..self.bytes.len().div_ceil(PAGE) {
                self.preserve(p);
            }
        }
    }

    /// Puts the last copy back; returns the tick it was taken at, or `None`
    /// if no copy was ever taken (the state is left as it is).
    pub fn restore(&mut self, state: &mut State) -> Option<u64> {
        let tick = self.tick?;
        let tracked = self.primed_for == Some(state.id());
        match state.written_pages().filter(|_| tracked) {
            Some(pages) => {
                pages.written(&mut self.written);
                let size = self.bytes.len();
                let dst = state.bytes_mut();
                for &p in &self.written {
                    let range = p * PAGE..((p + 1) * PAGE).min(size);
                    copy_page(&mut dst[range.clone()], &self.bytes[range]);
                }
            }
            None => state.bytes_mut().copy_from_slice(&self.bytes),
        }
        Some(tick)
    }
}

/// Pages a rewind writes past which it opens the whole state at once
/// rather than trap on each (a trap costs about 10 µs; comparing a page at
/// the next take, well under one).
const OPEN_ALL_ABOVE: usize = 256;

/// Whether nothing but the calling thread can write `state` without a trap
/// while it is open: no thread plugin code started is running (nor one the
/// guard could not record), and no other process marks its pages.
fn only_this_thread_writes(state: &State) -> bool {
    state
        .written_pages()
        .is_some_and(|pages| pages.shared_bits().is_none())
        && crate::guard::threads::running_in(0, usize::MAX).1 == 0
        && crate::guard::threads::untracked() == 0
}

mod follow;
mod shared;
#[cfg(test)]
mod tests;

pub use follow::{Followed, Leftover};
use shared::Kept;
pub use shared::{Copied, CopyMeta, CopyTarget, HistorySpan, SharedSnapshot};
