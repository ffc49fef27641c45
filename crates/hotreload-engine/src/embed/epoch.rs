//! The publish/retire protocol, alone: which version a call sees, and when a
//! retired version can no longer be seen by anyone.
//!
//! Readers (the threads that call plugin code) each own a [`Slot`]. To
//! enter, a reader reads the epoch, stores it in its slot, and then
//! reads the current version; to leave, it stores 0. A writer publishes a
//! version by swapping the pointer and then advancing the epoch: the old
//! version is *retired at* the new epoch. Once a barrier has run on every
//! thread, a retired version is unreachable when no slot holds a non-zero
//! epoch older than the one it was retired at ([`quiescent`]).
//!
//! One epoch counter serves every plugin of the process (a static
//! [`Epoch`] that all their [`Current`]s advance), so that the values in a slot compare
//! with any plugin's retirements: a thread inside plugin A that enters
//! plugin B too (nested) keeps A's older epoch in its slot, and that epoch
//! is older than the retirement of any B version it can have read. With a
//! counter per plugin, A's count could be ahead of B's and B's version be
//! freed under the thread.
//!
//! A slot's word also says *which* plugins its thread is in: the epoch
//! takes the low [`EPOCH_BITS`] bits, and each plugin sets its [`Group`]'s
//! bit above them. A thread that never leaves plugin A then holds back
//! only A's versions (and those of plugins sharing A's group: there are
//! [`GROUPS`] of them), not every plugin's. Entering the first plugin is
//! still one store; entering another one inside it adds one.
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
//! use a real fence ([`Current::enter`]'s `light` is false).
//!
//! The atomics come from `loom` under `--cfg loom`, where the model test
//! below explores every interleaving of readers and a writer; there both
//! sides use the fence the membarrier stands for.

#[cfg(loom)]
use loom::sync::atomic::{AtomicPtr, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering, fence};

/// Bits of a slot's word that hold the epoch; the epoch must stay below
/// `1 << EPOCH_BITS` (2.8e14 publications: nine years at one a
/// microsecond).
pub const EPOCH_BITS: u32 = 48;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;
/// How many groups the plugins of a process are spread over.
pub const GROUPS: u32 = 64 - EPOCH_BITS;

/// A plugin's bit in the slots' words: plugin `n` of the process gets
/// group `n % GROUPS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group(u64);

impl Group {
    pub fn nth(n: u64) -> Group {
        Group(1 << (EPOCH_BITS + (n % u64::from(GROUPS)) as u32))
    }
}

/// The epoch counter that every [`Current`] of the process advances.
pub struct Epoch(AtomicU64);

impl Default for Epoch {
    fn default() -> Epoch {
        Epoch::new()
    }
}

impl Epoch {
    #[cfg(not(loom))]
    pub const fn new() -> Epoch {
        Epoch(AtomicU64::new(1))
    }

    #[cfg(loom)]
    pub fn new() -> Epoch {
        Epoch(AtomicU64::new(1))
    }
}

/// One reader's place in the protocol: 0 while it is outside plugin code,
/// else the epoch it read when it entered and the groups of the plugins
/// it entered since.
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
            word => Some(word & EPOCH_MASK),
        }
    }

    /// Whether this slot's reader may still see a version of `group`'s
    /// plugins retired at `retired_at`.
    pub fn holds(&self, group: Group, retired_at: u64) -> bool {
        let word = self.entered.load(Ordering::Acquire);
        word & group.0 != 0 && (word & EPOCH_MASK) < retired_at
    }
}

/// The epoch of the process, which every plugin's [`Current`] advances.
/// A static rather than a pointer in each `Current`: entering reads it
/// with one load at a fixed address, not two dependent ones.
#[cfg(not(loom))]
static PROCESS_EPOCH: Epoch = Epoch::new();

/// One plugin's current version, shared by every reader, and the epoch
/// it advances (the process's, shared with every other plugin).
pub struct Current<V> {
    version: AtomicPtr<V>,
    /// Under loom, each model execution has an epoch of its own.
    #[cfg(loom)]
    epoch: &'static Epoch,
    group: Group,
}

impl<V> Current<V> {
    #[cfg(not(loom))]
    pub fn new(first: *mut V, group: Group) -> Current<V> {
        Current {
            version: AtomicPtr::new(first),
            group,
        }
    }

    #[cfg(loom)]
    pub fn new(first: *mut V, epoch: &'static Epoch, group: Group) -> Current<V> {
        Current {
            version: AtomicPtr::new(first),
            epoch,
            group,
        }
    }

    #[inline(always)]
    fn epoch(&self) -> &Epoch {
        #[cfg(loom)]
        return self.epoch;
        #[cfg(not(loom))]
        return &PROCESS_EPOCH;
    }

    /// A reader enters its first plugin: marks `slot` and returns the
    /// version to use until it leaves. `light` when the writer's barrier is
    /// a membarrier (the reader then needs only a compiler fence).
    #[inline]
    pub fn enter(&self, slot: &Slot, light: bool) -> *mut V {
        let epoch = self.epoch().0.load(Ordering::Acquire);
        // Release, not relaxed: a writer that reads this value (rather than
        // the 0 of the leave before it) must also see that leave and what
        // came before it, the reads of an older version included. A plain
        // store on x86-64 either way.
        slot.entered.store(epoch | self.group.0, Ordering::Release);
        reader_fence(light);
        self.version.load(Ordering::Acquire)
    }

    /// A reader already inside some plugin (its slot marked by [`enter`])
    /// enters this one too: adds this plugin's group to the slot (the
    /// epoch there is older than any retirement of a version it can read
    /// now) and returns the version to use until it leaves the outermost.
    ///
    /// [`enter`]: Current::enter
    // Out of line: a nested entry is the rare case, and keeping it out of
    // `Plugin::enter` keeps the outermost entry's code short.
    #[cold]
    #[inline(never)]
    pub fn join(&self, slot: &Slot, light: bool) -> *mut V {
        // Only this thread writes its slot: the relaxed read is its own
        // last store.
        let word = slot.entered.load(Ordering::Relaxed);
        if word & self.group.0 == 0 {
            slot.entered.store(word | self.group.0, Ordering::Release);
            reader_fence(light);
        }
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
        // A later publication of any plugin continues this one's release
        // sequence: a reader that reads any epoch from `retired_at` on
        // sees this swap.
        let retired_at = self.epoch().0.fetch_add(1, Ordering::SeqCst) + 1;
        (previous, retired_at)
    }

    /// The group this plugin marks slots with.
    pub fn group(&self) -> Group {
        self.group
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
pub fn quiescent<'a>(
    slots: impl IntoIterator<Item = &'a Slot>,
    group: Group,
    retired_at: u64,
) -> bool {
    slots.into_iter().all(|slot| !slot.holds(group, retired_at))
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

    /// The process's epoch, for one execution of the model.
    fn epoch() -> &'static Epoch {
        Box::leak(Box::new(Epoch::new()))
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
            let current = Arc::new(Current::new(version(1), epoch(), Group::nth(0)));
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
            while !quiescent(slots.iter(), current.group(), retired_at) {
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
            let current = Current::new(version(1), epoch(), Group::nth(0));
            let group = current.group();
            let slot = Slot::new();
            let v = current.enter(&slot, false);
            let (old, retired_at) = current.publish(version(2));
            assert_eq!(old, v);
            writer_barrier(|| {});
            assert!(!quiescent([&slot], group, retired_at));
            Current::<Version>::leave(&slot);
            assert!(quiescent([&slot], group, retired_at));
            let again = current.enter(&slot, false);
            assert_ne!(again, old, "a new entry sees the new version");
            assert!(
                quiescent([&slot], group, retired_at),
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

    /// Two plugins share the epoch. Plugin A has been published more often
    /// than B (its count is ahead). A reader enters A and, inside it,
    /// joins B and reads B's version, while the writer replaces B's
    /// version and frees the old one after the grace period for B's group.
    #[test]
    fn a_nested_entry_into_another_plugin_holds_its_version() {
        loom::model(|| {
            let shared = epoch();
            let a = Arc::new(Current::new(version(10), shared, Group::nth(0)));
            let b = Arc::new(Current::new(version(1), shared, Group::nth(1)));
            let (a_old, _) = a.publish(version(11));
            // SAFETY (model): nobody has entered A yet.
            unsafe { drop(Box::from_raw(a_old)) };
            let slot = Arc::new(Slot::new());
            let reader = {
                let (a, b, slot) = (Arc::clone(&a), Arc::clone(&b), Arc::clone(&slot));
                thread::spawn(move || {
                    let _outer = a.enter(&slot, false);
                    let v = b.join(&slot, false);
                    // SAFETY (model): the protocol keeps `v` alive until the
                    // outermost leave; loom checks it.
                    let seen = unsafe { &*v }.value.with(|p| unsafe { *p });
                    assert!(seen == 1 || seen == 2, "a torn or freed version: {seen}");
                    Current::<Version>::leave(&slot);
                })
            };
            let (old, retired_at) = b.publish(version(2));
            writer_barrier(|| {});
            while !quiescent([&*slot], b.group(), retired_at) {
                thread::yield_now();
            }
            // SAFETY (model): no reader holds `old` any more.
            unsafe {
                (*old).value.with_mut(|p| *p = 0);
                drop(Box::from_raw(old));
            }
            reader.join().expect("reader");
            // SAFETY (model): every reader has finished.
            unsafe {
                drop(Box::from_raw(a.peek()));
                drop(Box::from_raw(b.peek()));
            }
        });
    }
}

#[cfg(all(test, not(loom)))]
mod groups {
    use super::*;

    /// A reader that stays in plugin A does not hold B's replaced
    /// versions; one that joined B inside A does, until it leaves.
    #[test]
    fn a_reader_holds_only_the_plugins_it_entered() {
        let (mut one, mut two, mut three) = (1u32, 2u32, 3u32);
        let a = Current::new(&mut one as *mut u32, Group::nth(0));
        let b = Current::new(&mut two as *mut u32, Group::nth(1));
        let slot = Slot::new();
        a.enter(&slot, false);
        let (_, retired_at) = b.publish(&mut three as *mut u32);
        assert!(quiescent([&slot], b.group(), retired_at), "in A only");
        assert!(!quiescent([&slot], a.group(), retired_at + 1));
        assert_eq!(b.join(&slot, false), &mut three as *mut u32);
        let (_, later) = b.publish(&mut two as *mut u32);
        assert!(
            !quiescent([&slot], b.group(), later),
            "joined B before this retirement"
        );
        Current::<u32>::leave(&slot);
        assert!(quiescent([&slot], b.group(), later));
        assert!(quiescent([&slot], a.group(), later));
    }

    #[test]
    fn groups_wrap_after_the_last_bit() {
        assert_eq!(Group::nth(0), Group::nth(u64::from(GROUPS)));
        assert_ne!(Group::nth(0), Group::nth(1));
    }
}
