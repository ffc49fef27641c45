//! The publish/retire protocol, alone: which version a call sees, and when a
//! retired version can no longer be seen by anyone.
//!
//! Readers (the threads that call plugin code) each own a [`Slot`]. To
//! enter, a reader reads the global epoch, stores it in its slot, and then
//! reads the current version; to leave, it stores 0. A writer publishes a
//! version by swapping the pointer and then advancing the epoch: the old
//! version is *retired at* the new epoch. Once a barrier has run on every
//! thread, a retired version is unreachable when no slot holds a non-zero
//! epoch older than the one it was retired at ([`quiescent`]).
//!
//! Why that is enough: a reader that got the old pointer read it before the
//! swap, so the epoch it read before that was older than the retirement
//! (had it read the advanced epoch, its acquire load would have made the
//! swap visible to its pointer load). Its slot store comes before its
//! pointer load, and the writer's scan after the swap: with a full fence
//! between the two on each side (a store-load pair, Dekker's), at least one
//! side sees the other's write, so either the reader saw the new pointer or
//! the writer sees the reader's slot. A reader that re-enters later stores
//! a newer value (or an old epoch read late, which only makes the writer
//! wait longer, never free early); that store is a release, so that a
//! writer that reads it has also seen the leave before it (the model test
//! found the writer reading a relaxed re-entry, which by the C++20 rules
//! orders nothing before it).
//!
//! The reader's fence is the expensive half, and calls are many while
//! reloads are rare. With `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`
//! the writer makes the kernel run a full barrier on every thread of the
//! process, so the reader's side shrinks to a compiler fence: between the
//! store and the load either the barrier ran (the load sees the swap) or it
//! ran after both (the scan sees the store). Without membarrier, readers
//! use a real fence ([`enter`]'s `light` is false).
//!
//! The atomics come from `loom` under `--cfg loom`, where the model test
//! below explores every interleaving of readers and a writer; there both
//! sides use the fence the membarrier stands for.

#[cfg(loom)]
use loom::sync::atomic::{AtomicPtr, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering, fence};

/// One reader's place in the protocol: 0 while it is outside plugin code,
/// else the epoch it read when it entered.
pub struct Slot {
    entered: AtomicU64,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot::new()
    }
}

impl Slot {
    pub fn new() -> Slot {
        Slot {
            entered: AtomicU64::new(0),
        }
    }

    /// The epoch this slot's reader entered at, when it is inside.
    pub fn entered_at(&self) -> Option<u64> {
        match self.entered.load(Ordering::Acquire) {
            0 => None,
            epoch => Some(epoch),
        }
    }

    /// Whether this slot's reader may still see a version retired at
    /// `retired_at`.
    pub fn holds(&self, retired_at: u64) -> bool {
        self.entered_at().is_some_and(|e| e < retired_at)
    }
}

/// The current version, shared by every reader, and the epoch.
pub struct Current<V> {
    version: AtomicPtr<V>,
    epoch: AtomicU64,
}

impl<V> Current<V> {
    pub fn new(first: *mut V) -> Current<V> {
        Current {
            version: AtomicPtr::new(first),
            epoch: AtomicU64::new(1),
        }
    }

    /// A reader enters: marks `slot` and returns the version to use until
    /// it leaves. `light` when the writer's barrier is a membarrier (the
    /// reader then needs only a compiler fence).
    #[inline]
    pub fn enter(&self, slot: &Slot, light: bool) -> *mut V {
        let epoch = self.epoch.load(Ordering::Acquire);
        // Release, not relaxed: a writer that reads this value (rather than
        // the 0 of the leave before it) must also see that leave and what
        // came before it, the reads of an older version included. A plain
        // store on x86-64 either way.
        slot.entered.store(epoch, Ordering::Release);
        reader_fence(light);
        self.version.load(Ordering::Acquire)
    }

    /// The reader leaves: nothing it read through the version is used after.
    #[inline]
    pub fn leave(slot: &Slot) {
        slot.entered.store(0, Ordering::Release);
    }

    /// The writer publishes `next`: from now on readers that enter get it.
    /// Returns the previous version and the epoch it is retired at.
    pub fn publish(&self, next: *mut V) -> (*mut V, u64) {
        let previous = self.version.swap(next, Ordering::SeqCst);
        let retired_at = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        (previous, retired_at)
    }

    /// The version readers get now (the writer's view).
    pub fn peek(&self) -> *mut V {
        self.version.load(Ordering::Acquire)
    }
}

#[cfg(not(loom))]
#[inline(always)]
fn reader_fence(light: bool) {
    if light {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

#[cfg(loom)]
fn reader_fence(_light: bool) {
    fence(Ordering::SeqCst);
}

/// The writer's half of the fence pair, to run after [`Current::publish`]
/// and before [`quiescent`]: `process_wide` is the membarrier (or nothing,
/// when readers fence themselves).
pub fn writer_barrier(process_wide: impl FnOnce()) {
    fence(Ordering::SeqCst);
    process_wide();
    fence(Ordering::SeqCst);
}

/// After a [`writer_barrier`] that followed the retirement: whether no
/// reader can still see a version retired at `retired_at`.
pub fn quiescent<'a>(slots: impl IntoIterator<Item = &'a Slot>, retired_at: u64) -> bool {
    slots.into_iter().all(|slot| !slot.holds(retired_at))
}

#[cfg(all(test, loom))]
mod model {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    struct Version {
        value: UnsafeCell<u64>,
    }

    fn version(value: u64) -> *mut Version {
        Box::into_raw(Box::new(Version {
            value: UnsafeCell::new(value),
        }))
    }

    /// Two readers enter, read the version they got and leave (one of them
    /// twice) while the writer publishes a second version, waits for the
    /// grace period and frees the first (after writing it, which loom
    /// reports as a race if any reader could still be reading it).
    /// How many times each reader enters: the second reader enters again
    /// after leaving, so that the writer can find it back inside at a
    /// newer epoch.
    const ITER: [usize; 2] = [1, 2];

    #[test]
    fn a_retired_version_is_freed_only_after_every_reader_left_it() {
        loom::model(|| {
            let current = Arc::new(Current::new(version(1)));
            let slots = Arc::new([Slot::new(), Slot::new()]);
            let readers: Vec<_> = (0..2)
                .map(|i| {
                    let current = Arc::clone(&current);
                    let slots = Arc::clone(&slots);
                    thread::spawn(move || {
                        for _ in 0..ITER[i] {
                            let v = current.enter(&slots[i], false);
                            // SAFETY (model): the protocol keeps `v` alive
                            // until `leave`; loom checks it.
                            let seen = unsafe { &*v }.value.with(|p| unsafe { *p });
                            assert!(seen == 1 || seen == 2, "a torn or freed version: {seen}");
                            Current::<Version>::leave(&slots[i]);
                        }
                    })
                })
                .collect();
            let (old, retired_at) = current.publish(version(2));
            writer_barrier(|| {});
            while !quiescent(slots.iter(), retired_at) {
                thread::yield_now();
            }
            // SAFETY (model): no reader holds `old` any more.
            unsafe {
                (*old).value.with_mut(|p| *p = 0);
                drop(Box::from_raw(old));
            }
            for r in readers {
                r.join().expect("reader");
            }
            // SAFETY (model): every reader has finished.
            unsafe { drop(Box::from_raw(current.peek())) };
        });
    }

    /// A reader still inside when the writer looks holds the version back;
    /// once it left, the version goes.
    #[test]
    fn a_reader_inside_holds_the_retired_version() {
        loom::model(|| {
            let current = Current::new(version(1));
            let slot = Slot::new();
            let v = current.enter(&slot, false);
            let (old, retired_at) = current.publish(version(2));
            assert_eq!(old, v);
            writer_barrier(|| {});
            assert!(!quiescent([&slot], retired_at));
            Current::<Version>::leave(&slot);
            assert!(quiescent([&slot], retired_at));
            let again = current.enter(&slot, false);
            assert_ne!(again, old, "a new entry sees the new version");
            assert!(
                quiescent([&slot], retired_at),
                "and does not hold the old one"
            );
            Current::<Version>::leave(&slot);
            // SAFETY (model): nobody holds either.
            unsafe {
                drop(Box::from_raw(old));
                drop(Box::from_raw(current.peek()));
            }
        });
    }
}
