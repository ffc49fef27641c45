//! A large state's migration, worked out before the swap.
//!
//! Filling the new block is work the size of the state: done at the swap it
//! would hold the tick thread up (about 130 ms for 64 MiB, the plan's copy
//! into fresh pages and the snapshot's first whole copy of the new block).
//! So for a state whose writes are tracked, the reload thread does it
//! ahead ([`prepare`]): it reads a copy of the state out of the snapshot,
//! applies the plan from it into the new block, copies the result for the
//! new block's snapshot, carries in rounds what the running version wrote
//! meanwhile, and makes the block read-only, so that the pages written from
//! then on are known.
//!
//! At the swap the tick thread finishes it ([`Ahead::finish`]): the pages
//! where the live state can differ from the copy (those the snapshot
//! changed since the read, and those written since the last take) are
//! compared, the differing ones brought into the copy, and the plan applied
//! again to just those. The work grows with the pages the running version
//! wrote meanwhile, not with the state's size, and the block is the one a
//! full apply at the swap would make.

use crate::layout::Layout;
use crate::state::State;
use crate::state::block::TRACK_ABOVE;
use crate::state::pages::{PAGE, copy_page};
use crate::state::release::Spares;
use crate::state::snapshot::{Followed, SharedSnapshot};

use super::{Applied, PageIndex, Plan, Unfit};

/// How long a read of the snapshot waits for each lock (a take in
/// progress) before the migration is left to the swap.
const PATIENCE: std::time::Duration = std::time::Duration::from_millis(20);
/// How long to wait for a swap handed to the tick thread to be installed
/// (a tick boundary, then an install of about a millisecond), and for the
/// snapshot to let a copy of the state be read: 250 ms, and 8 ms more per
/// MiB of state. Given up, the migration is applied at the swap, on the
/// tick thread, in time that grows with the size (1.5-3 s of ticks
/// skipped per swap at 512 MiB on a VM whose memory was fresh, where the
/// install before took longer than 250 ms): for a large state a longer
/// wait here, which only makes the swap later, is always the cheaper.
pub fn patience_for(size: usize) -> std::time::Duration {
    std::time::Duration::from_millis(250 + 8 * (size >> 20) as u64)
}

/// The migration worked out ahead of the swap.
pub struct Ahead {
    /// The state as read, which the plan was applied from.
    old: Followed,
    index: Option<PageIndex>,
    /// What the apply reset, as `--reset-field` allowed.
    applied: Applied,
    /// The new block's bytes as the apply left them, for its snapshot.
    snapshot: Vec<u8>,
}

/// What the state on one side looked like when the migration was decided.
pub struct OldSide<'a> {
    pub size: usize,
    pub version: u32,
    pub layout: Option<&'a Layout>,
}

/// The migration finished at the swap.
pub struct Finished {
    /// The old state as it is now, a copy: for the `migrate` hook, which
    /// must not write the state the running version keeps.
    pub old: Vec<u8>,
    /// The new block's bytes for its snapshot: the block's but for the
    /// pages its tracking marks.
    pub snapshot: Vec<u8>,
    /// What `--reset-field` reset, judged on the values at the swap.
    pub applied: Applied,
    /// Old-state pages the running version changed after the read.
    pub pages_redone: usize,
}

/// Works out the migration of a large, tracked state into `new` ahead of
/// the swap; `Ok(None)` when it is left to the swap (a small or untracked
/// state, or a copy that could not be had at once or is of another layout
/// than `old`: a swap before this one is still on its way). A shared block
/// (isolated mode) is worked out the same way: the worker's writes to the
/// old block are marked in the shared bitmap as the host's are, and
/// closing the new block asks the new worker to close its mapping too
/// before its first call (see `state::shared_pages`).
/// `Err` is a value that does not fit its field's new type, as
/// [`Plan::apply`] finds it.
pub fn prepare(
    snapshot: &SharedSnapshot,
    old: OldSide<'_>,
    plan: Option<&Plan>,
    new: &mut State,
    spares: &Spares,
) -> Result<Option<Ahead>, Unfit> {
    if old.size <= TRACK_ABOVE || new.written_pages().is_none() {
        return Ok(None);
    }
    // The swap before this one may still be on its way to the tick thread
    // (a migration worked out faster than saves come): its state is the
    // one to read, a tick after it is installed.
    let patience = patience_for(old.size);
    let deadline = std::time::Instant::now() + patience;
    if !snapshot.wait_for_copy_of(old.version, old.layout, patience) {
        return Ok(None);
    }
    // Each read waits at most `PATIENCE` for a lock a take holds; tried
    // again until the deadline.
    let mut into = spares.take(old.size);
    let copy = loop {
        match snapshot.copy_to_follow(PATIENCE, into) {
            Ok(copy) => break copy,
            Err(back) if std::time::Instant::now() < deadline => {
                into = back;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(back) => {
                spares.keep(vec![back], Vec::new());
                return Ok(None);
            }
        }
    };
    if copy.bytes.len() != old.size
        || copy.meta.state_version != old.version
        || copy.meta.layout.as_deref() != old.layout
    {
        return Ok(None);
    }
    let (index, applied) = match plan {
        Some(plan) => (
            Some(plan.page_index()),
            plan.apply(&copy.bytes, new.bytes_mut())?,
        ),
        None => (None, Applied::default()),
    };
    let mut bytes = spares.take(new.size());
    bytes.extend_from_slice(new.bytes());
    let mut ahead = Ahead {
        old: copy,
        index,
        applied,
        snapshot: bytes,
    };
    // The running version went on writing while this was worked out: what
    // it wrote is carried now, again and again while that leaves less to
    // the swap. The block stays writable meanwhile (only this thread writes
    // it): each round keeps its snapshot bytes in step itself, and a page
    // opened and closed for each of a round's few thousand scattered pages
    // would be an `mprotect` apiece, each splitting the mapping further
    // (17 µs apiece, measured at 64 MiB).
    let mut left = usize::MAX;
    for _ in 0..CATCH_UP_ROUNDS {
        match ahead.catch_up(snapshot, plan, new)? {
            Some(pages) if pages > CATCH_UP_ENOUGH && pages < left => left = pages,
            Some(_) => break,
            None => return Ok(None),
        }
    }
    // Read-only from here on, in one call: the pages written after this
    // (by the swap, the `migrate` hook, the first tick) are the ones the
    // snapshot's first take compares.
    let Some(pages) = new.written_pages() else {
        return Ok(None);
    };
    if pages.close_all().is_err() {
        // Left writable and marked: the swap applies the plan again in full.
        return Ok(None);
    }
    Ok(Some(ahead))
}

/// Rounds of carrying what the running version wrote while the migration
/// was worked out, at most, and the pages a round may leave to the swap.
const CATCH_UP_ROUNDS: usize = 4;
const CATCH_UP_ENOUGH: usize = 32;

impl Ahead {
    /// Carries into the new block (and its snapshot's bytes) the pages the
    /// snapshot changed since they were read; how many there were, or
    /// `None` if that can no longer be told (the swap will then apply the
    /// plan in full).
    fn catch_up(
        &mut self,
        snapshot: &SharedSnapshot,
        plan: Option<&Plan>,
        new: &mut State,
    ) -> Result<Option<usize>, Unfit> {
        let Some(changed) = snapshot.refresh(&mut self.old, PATIENCE) else {
            return Ok(None);
        };
        let (Some(plan), Some(index)) = (plan, &self.index) else {
            return Ok(Some(changed.len()));
        };
        let runs = plan.runs_reading(index, &changed, &self.applied.reset);
        self.applied = plan.apply_runs(&runs, &self.old.bytes, new.bytes_mut())?;
        // The block and the snapshot's bytes agree again on these pages.
        let size = new.size();
        let bytes = new.bytes();
        for p in plan.pages_written_by(&runs) {
            let range = p * PAGE..((p + 1) * PAGE).min(size);
            copy_page(&mut self.snapshot[range.clone()], &bytes[range]);
        }
        Ok(Some(changed.len()))
    }

    /// Brings the prepared block up to `live` at the swap; `None` if what
    /// changed since the read can no longer be told (the snapshot was
    /// reset, or follows another block), for the swap to apply the plan in
    /// full.
    pub fn finish(
        self,
        snapshot: &SharedSnapshot,
        live: &State,
        plan: Option<&Plan>,
        new: &mut State,
    ) -> Option<Result<Finished, Unfit>> {
        let Ahead {
            old,
            index,
            applied,
            snapshot: snapshot_bytes,
        } = self;
        if live.id() != old.block || live.size() != old.bytes.len() {
            return None;
        }
        let mut pages = snapshot.changed_since(&old)?;
        let mut marked = Vec::new();
        live.written_pages()?.marked(&mut marked);
        pages.extend(marked);
        pages.sort_unstable();
        pages.dedup();
        let Followed {
            bytes: mut copy, ..
        } = old;
        let src = live.bytes();
        let size = src.len();
        let mut differing = Vec::new();
        for p in pages {
            let range = p * PAGE..((p + 1) * PAGE).min(size);
            if range.is_empty() {
                continue;
            }
            if copy[range.clone()] != src[range.clone()] {
                copy_page(&mut copy[range.clone()], &src[range]);
                differing.push(p);
            }
        }
        let applied = match (plan, &index) {
            (Some(plan), Some(index)) => {
                let runs = plan.runs_reading(index, &differing, &applied.reset);
                if let Some(tracked) = new.written_pages() {
                    // Opened in runs rather than trapped page by page; if
                    // that fails, the writes trap, marking them all the same.
                    let _ = tracked.open(&plan.pages_written_by(&runs));
                }
                match plan.apply_runs(&runs, &copy, new.bytes_mut()) {
                    Ok(late) => late,
                    Err(unfit) => return Some(Err(unfit)),
                }
            }
            _ => applied,
        };
        Some(Ok(Finished {
            old: copy,
            snapshot: snapshot_bytes,
            applied,
            pages_redone: differing.len(),
        }))
    }
}
