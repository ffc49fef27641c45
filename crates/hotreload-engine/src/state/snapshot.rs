//! The copy of the state taken before plugin code runs, so that a fault can
//! put the state back exactly as it was.
//!
//! Small states are copied before every tick: a few hundred bytes cost
//! nanoseconds. Copying a large state every tick would cost more than the tick
//! itself (64 MB is several milliseconds), so the copy budget is bounded:
//! at most [`BYTES_PER_TICK`] bytes per tick on average. A state of `S` bytes
//! is copied every `ceil(S / BYTES_PER_TICK)` ticks, and a fault restores the
//! most recent copy, so up to that many ticks of progress can be lost. The
//! fault line names the tick the state was restored to.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::layout::Layout;
use crate::state::State;

/// Average copy budget per tick.
pub const BYTES_PER_TICK: usize = 1 << 20;

pub struct Snapshot {
    bytes: Vec<u8>,
    /// The tick index the copy was taken at (before that tick ran).
    tick: Option<u64>,
    every: u64,
}

impl Snapshot {
    pub fn new(size: usize) -> Snapshot {
        Snapshot {
            bytes: vec![0; size],
            tick: None,
            every: size.div_ceil(BYTES_PER_TICK).max(1) as u64,
        }
    }

    /// Ticks between two copies.
    pub fn interval(&self) -> u64 {
        self.every
    }

    /// Whether a copy is due before tick `tick` runs.
    #[inline]
    pub fn due(&self, tick: u64) -> bool {
        self.tick.is_none_or(|last| tick >= last + self.every)
    }

    /// Copies the state as it is before tick `tick`.
    #[inline]
    pub fn take(&mut self, state: &State, tick: u64) {
        self.bytes.copy_from_slice(state.bytes());
        self.tick = Some(tick);
    }

    /// Puts the last copy back; returns the tick it was taken at, or `None`
    /// if no copy was ever taken (the state is left as it is).
    pub fn restore(&self, state: &mut State) -> Option<u64> {
        let tick = self.tick?;
        state.bytes_mut().copy_from_slice(&self.bytes);
        Some(tick)
    }
}

/// The snapshot, shared between the tick thread (which takes and restores
/// it) and a thread that must save the state while the tick thread is stuck
/// in plugin code: a second Ctrl-C during a `shutdown` that never returns.
/// The tick thread holds the lock only while copying, never during a plugin
/// call, so the copy is always reachable; and it is the state as of the last
/// call that completed, which is the newest state known to be good.
#[derive(Clone, Default)]
pub struct SharedSnapshot {
    inner: Arc<Mutex<Option<Kept>>>,
}

struct Kept {
    snapshot: Snapshot,
    /// What the bytes mean, for saving them: the state version and layout of
    /// the version the copy was taken for.
    state_version: u32,
    layout: Option<Arc<Layout>>,
    /// Some version has run on this state (its `init` completed, or it was
    /// restored from a file): only then is it worth saving.
    live: bool,
}

/// A copy of the state handed out of [`SharedSnapshot::read`].
pub struct Copied {
    pub bytes: Vec<u8>,
    /// Ticks completed when the copy was taken.
    pub tick: u64,
    pub state_version: u32,
    pub layout: Option<Arc<Layout>>,
}

impl SharedSnapshot {
    fn lock(&self) -> MutexGuard<'_, Option<Kept>> {
        // Nothing panics while holding the lock but a copy; the bytes a
        // panic interrupted are overwritten by the next one.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh snapshot for a state of `size` bytes (the first version, or
    /// a migration to a new layout); nothing is copied yet.
    pub fn reset(&self, size: usize, state_version: u32, layout: Option<Arc<Layout>>) {
        let mut kept = self.lock();
        // A migration to a new layout keeps a live state live.
        let live = kept.as_ref().is_some_and(|k| k.live);
        *kept = Some(Kept {
            snapshot: Snapshot::new(size),
            state_version,
            layout,
            live,
        });
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

    /// Copies the state before tick `tick` if a copy is due; false if there
    /// is no snapshot to copy into.
    #[inline]
    pub fn take_if_due(&self, state: &State, tick: u64) -> bool {
        let mut guard = match self.inner.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            // A reader (a trial's copy, a forced save) holds it. Copying a
            // large state takes milliseconds: this tick goes without a new
            // copy rather than wait (the next one takes it; a fault meanwhile
            // says the older tick it restores). A small one is moments away.
            Err(std::sync::TryLockError::WouldBlock) if state.size() > BYTES_PER_TICK => {
                return true;
            }
            Err(std::sync::TryLockError::WouldBlock) => self.lock(),
        };
        match guard.as_mut() {
            Some(kept) => {
                if kept.snapshot.due(tick) {
                    kept.snapshot.take(state, tick);
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

    /// See [`Snapshot::restore`].
    pub fn restore(&self, state: &mut State) -> Option<u64> {
        self.lock().as_ref()?.snapshot.restore(state)
    }

    /// The last copy of a state some version has run on, for saving it from
    /// another thread. Waits at most
    /// `patience` for the tick thread to finish a copy in progress.
    pub fn read(&self, patience: Duration) -> Option<Copied> {
        let deadline = Instant::now() + patience;
        let guard = loop {
            match self.inner.try_lock() {
                Ok(guard) => break guard,
                Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        };
        let kept = guard.as_ref().filter(|k| k.live)?;
        Some(Copied {
            bytes: kept.snapshot.bytes.clone(),
            tick: kept.snapshot.tick?,
            state_version: kept.state_version,
            layout: kept.layout.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_states_every_tick_large_ones_within_the_budget() {
        assert_eq!(Snapshot::new(16).interval(), 1);
        assert_eq!(Snapshot::new(BYTES_PER_TICK).interval(), 1);
        assert_eq!(Snapshot::new(64 << 20).interval(), 64);
    }

    #[test]
    fn restore_puts_back_the_bytes_and_names_the_tick() {
        let mut state = State::zeroed(8).expect("alloc");
        let mut snap = Snapshot::new(8);
        assert_eq!(snap.restore(&mut state), None);
        state.bytes_mut()[0] = 7;
        assert!(snap.due(3));
        snap.take(&state, 3);
        assert!(!snap.due(3));
        state.bytes_mut()[0] = 99;
        assert_eq!(snap.restore(&mut state), Some(3));
        assert_eq!(state.bytes()[0], 7);
    }
}
