//! A copy of the state to prepare a migration from, off the tick thread,
//! and the pages that changed since it was read.
//!
//! A swap to a new layout fills a new block from the current state. For a
//! large state that is work the size of the state, so the reload thread does
//! it from a copy read out of the snapshot ([`SharedSnapshot::copy_to_follow`]),
//! as of the tick the read began at. From then on the snapshot notes every
//! page of its copy that changes (a take, a rewind), and at the swap the
//! tick thread asks for them ([`SharedSnapshot::changed_since`]): those,
//! and the pages the live state has marked since the last take, are all
//! the pages where the live state can differ from the copy.

use std::time::Duration;

use super::{CopyMeta, Kept, SharedSnapshot};
use crate::layout::Layout;
use crate::state::pages::{PAGE, copy_page};

/// A bit per page of the snapshot's copy, set when the page changes.
pub(super) struct Follower {
    bits: Vec<u64>,
    /// Which read this follows.
    token: u64,
}

impl Follower {
    pub(super) fn mark(&mut self, p: usize) {
        if let Some(word) = self.bits.get_mut(p / 64) {
            *word |= 1 << (p % 64);
        }
    }

    pub(super) fn mark_all(&mut self) {
        self.bits.fill(u64::MAX);
    }
}

/// A copy of the state read for a migration, and how to ask later what
/// changed since.
pub struct Followed {
    pub bytes: Vec<u8>,
    pub meta: CopyMeta,
    /// The block the snapshot followed when the copy was read (its id).
    pub block: u64,
    token: u64,
}

/// A snapshot replaced by a reset, to be freed off the tick thread (a large
/// state's copy and history are many pages to give back).
pub struct Leftover {
    pub(super) kept: Option<Kept>,
}

impl Leftover {
    /// The copy's size.
    pub fn size(&self) -> usize {
        self.kept
            .as_ref()
            .map_or(0, |kept| kept.snapshot.bytes.len())
    }

    /// The copy's bytes, for another use (see [`crate::state::release`]).
    pub fn take_bytes(&mut self) -> Option<Vec<u8>> {
        Some(std::mem::take(&mut self.kept.as_mut()?.snapshot.bytes))
    }

    /// Gives the copy's pages back a piece at a time (see
    /// [`crate::state::release`]); the rest goes when it is dropped.
    pub fn empty_gradually(&mut self) {
        if let Some(kept) = &mut self.kept {
            crate::state::release::empty_gradually(&mut kept.snapshot.bytes);
        }
    }
}

impl SharedSnapshot {
    /// Waits, at most `patience`, until the snapshot holds a copy of a
    /// state some version has run on with state version `version` and
    /// `layout`: the copy a migration from that state is to be worked out
    /// from, which a swap still on its way to the tick thread has not made
    /// yet. Whether it does.
    pub fn wait_for_copy_of(
        &self,
        version: u32,
        layout: Option<&Layout>,
        patience: Duration,
    ) -> bool {
        let deadline = std::time::Instant::now() + patience;
        loop {
            if let Some(guard) = self.lock_within(patience) {
                let held = guard.as_ref().filter(|k| k.live).and_then(|k| k.meta());
                if held.is_some_and(|m| m.state_version == version && m.layout.as_deref() == layout)
                {
                    return true;
                }
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The last copy of a state some version has run on, as
    /// [`SharedSnapshot::read`] makes it, from which the snapshot notes
    /// every page that changes. One at a time: a later call ends the
    /// noting for an earlier one. Waits at most `patience` for each lock.
    /// The copy is read into `into`, a buffer whose room is used as it is.
    /// Not read (a lock not had in time, or nothing to read): `into`
    /// back, to try again with.
    pub fn copy_to_follow(&self, patience: Duration, into: Vec<u8>) -> Result<Followed, Vec<u8>> {
        static TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let token = TOKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut block = None;
        let mut target = Reused(into);
        let read = self.read_into_then(patience, None, &mut target, |snapshot| {
            // Under the same lock as the read's start: every change after
            // the tick the copy is of is noted.
            block = snapshot.last_block;
            snapshot.follower = Some(Follower {
                bits: vec![0; snapshot.bytes.len().div_ceil(PAGE).div_ceil(64)],
                token,
            });
        });
        match (read, block) {
            (Some((meta, _)), Some(block)) => Ok(Followed {
                bytes: target.0,
                meta,
                block,
                token,
            }),
            _ => Err(target.0),
        }
    }

    /// Brings `followed`'s copy up to the snapshot's for the pages noted
    /// as changed since, a few pages per lock, and notes them afresh;
    /// returns those whose bytes differed, in order. The copy then mixes
    /// ticks, which is fine for what it is for: a page the snapshot changes
    /// after it was brought up is noted again. `None` if that can no
    /// longer be told (see [`SharedSnapshot::changed_since`]).
    pub fn refresh(&self, followed: &mut Followed, patience: Duration) -> Option<Vec<usize>> {
        /// About 5 µs of the tick thread's waiting at most, as for a read.
        const PAGES_PER_LOCK: usize = 16;
        let mut refreshed = Vec::new();
        let mut word = 0;
        loop {
            let mut guard = self.lock_within(patience)?;
            let snapshot = &mut guard.as_mut()?.snapshot;
            if snapshot.last_block != Some(followed.block) {
                return None;
            }
            let follower = snapshot
                .follower
                .as_mut()
                .filter(|f| f.token == followed.token)?;
            let mut pages = Vec::with_capacity(PAGES_PER_LOCK);
            while word < follower.bits.len() && pages.len() < PAGES_PER_LOCK {
                let bits = &mut follower.bits[word];
                while *bits != 0 && pages.len() < PAGES_PER_LOCK {
                    let b = bits.trailing_zeros() as usize;
                    *bits &= !(1 << b);
                    pages.push(word * 64 + b);
                }
                if *bits == 0 {
                    word += 1;
                }
            }
            if pages.is_empty() {
                // A take between two locks can mark a page before the last
                // one drained in the same word, or one drained already:
                // in order, once each, as promised.
                refreshed.sort_unstable();
                refreshed.dedup();
                return Some(refreshed);
            }
            let size = snapshot.bytes.len().min(followed.bytes.len());
            for p in pages {
                let range = p * PAGE..((p + 1) * PAGE).min(size);
                if !range.is_empty()
                    && followed.bytes[range.clone()] != snapshot.bytes[range.clone()]
                {
                    copy_page(&mut followed.bytes[range.clone()], &snapshot.bytes[range]);
                    refreshed.push(p);
                }
            }
        }
    }

    /// The pages of the snapshot's copy that changed since `followed` was
    /// read, in order, and the noting ends; `None` if that can no longer be
    /// told (the snapshot was reset since, or another read followed).
    pub fn changed_since(&self, followed: &Followed) -> Option<Vec<usize>> {
        let mut guard = self.lock();
        let snapshot = &mut guard.as_mut()?.snapshot;
        if snapshot.last_block != Some(followed.block) {
            return None;
        }
        let follower = snapshot.follower.take_if(|f| f.token == followed.token)?;
        let pages = snapshot.bytes.len().div_ceil(PAGE);
        let mut changed = Vec::new();
        for (w, &word) in follower.bits.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let p = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if p < pages {
                    changed.push(p);
                }
            }
        }
        Some(changed)
    }
}

/// A copy's target that writes into the room a buffer already has (warm
/// pages, kept from an earlier copy) rather than fresh memory. The copy
/// comes in order, each piece at the end or over what is there, so the
/// room is filled once, with no pass that writes zeros first.
struct Reused(Vec<u8>);

impl super::CopyTarget for Reused {
    fn start(&mut self, size: usize) -> Option<()> {
        self.0.clear();
        if self.0.capacity() < size {
            // Room to spare: the next layout's size may be a few bytes more.
            self.0 = Vec::with_capacity(size.next_multiple_of(1 << 20));
        }
        Some(())
    }

    fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Option<()> {
        if offset == self.0.len() {
            self.0.extend_from_slice(bytes);
            return Some(());
        }
        self.0.write_at(offset, bytes)
    }
}
