//! Each calling thread's slot, and the barrier that keeps reading them cheap.
//!
//! A thread gets its slot the first time it enters plugin code, from a
//! process-wide registry that every [`Plugin`](super::Plugin) shares (one
//! slot per thread, however many plugins it calls): the [`epoch`](super::epoch) slot, and
//! what the pool watchdog ([`super::watchdog`]) needs to interrupt that
//! thread's call. Each slot sits on its own 128 bytes (two cache lines:
//! adjacent-line prefetching pairs them), so a thread's stores never touch
//! a line another thread writes. A slot is never freed: when its thread
//! ends, it goes back to the registry for the next new thread.
//!
//! The first entry on a thread also prepares it for guarded calls (its
//! alternate signal stack and plugin stack, see [`crate::guard`]).
//!
//! [`barrier`] is the writer's side: `membarrier(PRIVATE_EXPEDITED)` when the
//! kernel has it (registered once, at the first use), else readers fence
//! themselves, which is said once.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use super::epoch::Slot;

/// A thread's slot: the protocol's, plus what the watchdog reads.
#[repr(C, align(128))]
pub struct ThreadSlot {
    pub epoch: Slot,
    /// Counts this thread's guarded calls: the watchdog tells one long call
    /// from many short ones by it. Only this thread writes it.
    pub calls: AtomicU64,
    /// The running call's timeout in milliseconds, 0 for none.
    pub timeout_ms: AtomicU32,
    /// The thread's kernel id (for reports) and its `pthread_t` (to
    /// interrupt it); 0 while the slot is free.
    pub tid: AtomicI32,
    pub thread: AtomicUsize,
}

impl ThreadSlot {
    fn new() -> ThreadSlot {
        ThreadSlot {
            epoch: Slot::new(),
            calls: AtomicU64::new(0),
            timeout_ms: AtomicU32::new(0),
            tid: AtomicI32::new(0),
            thread: AtomicUsize::new(0),
        }
    }
}

struct Registry {
    /// Every slot ever made, in use or not.
    all: Vec<&'static ThreadSlot>,
    free: Vec<&'static ThreadSlot>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        Mutex::new(Registry {
            all: Vec::new(),
            free: Vec::new(),
        })
    })
}

/// Runs `f` over every slot (the reclaimer's and the watchdog's scans).
pub fn each_slot(mut f: impl FnMut(&'static ThreadSlot)) {
    let slots: Vec<&'static ThreadSlot> = match registry().lock() {
        Ok(r) => r.all.clone(),
        Err(poisoned) => poisoned.into_inner().all.clone(),
    };
    for slot in slots {
        f(slot);
    }
}

/// This thread's side on the hot path: its slot and how deep it is in
/// entries. Nothing to drop, so reaching it is a plain thread-local access.
struct Hot {
    slot: Cell<*const ThreadSlot>,
    depth: Cell<u32>,
}

/// This thread's side off the hot path: its readiness for guarded calls,
/// and the slot to hand back to the registry when the thread ends.
struct Owner {
    slot: Cell<Option<&'static ThreadSlot>>,
    prepared: Cell<Option<crate::guard::ThreadGuard>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // A later entry on this thread (from another thread-local's
        // destructor) gets a slot of its own that is never handed back.
        let _ = HOT.try_with(|hot| hot.slot.set(std::ptr::null()));
        let Some(slot) = self.slot.take() else {
            return;
        };
        slot.tid.store(0, Ordering::Relaxed);
        slot.thread.store(0, Ordering::Relaxed);
        super::epoch::Current::<()>::leave(&slot.epoch);
        let mut registry = match registry().lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        registry.free.push(slot);
    }
}

thread_local! {
    static HOT: Hot = const {
        Hot {
            slot: Cell::new(std::ptr::null()),
            depth: Cell::new(0),
        }
    };
    static OWNER: Owner = const {
        Owner {
            slot: Cell::new(None),
            prepared: Cell::new(None),
        }
    };
}

/// Enters plugin code one level deeper on this thread: its slot, and
/// whether this is the outermost entry (which the caller marks in the
/// slot).
#[inline]
pub fn enter() -> Result<(&'static ThreadSlot, bool), String> {
    HOT.with(|hot| {
        let slot = hot.slot.get();
        // SAFETY: a non-null pointer in `HOT` is a leaked, never-freed
        // slot this thread owns.
        let slot: &'static ThreadSlot = match unsafe { slot.as_ref() } {
            Some(slot) => slot,
            None => register(hot)?,
        };
        let depth = hot.depth.get();
        hot.depth.set(depth + 1);
        Ok((slot, depth == 0))
    })
}

/// Counts a guarded call on `slot` (this thread's), for the watchdog.
#[inline]
pub fn count_call(slot: &ThreadSlot) {
    let calls = slot.calls.load(Ordering::Relaxed).wrapping_add(1);
    slot.calls.store(calls, Ordering::Relaxed);
}

/// Leaves one level; true when that was the outermost entry (the caller
/// then clears the slot).
#[inline]
pub fn leave() -> bool {
    HOT.with(|hot| {
        let depth = hot.depth.get().saturating_sub(1);
        hot.depth.set(depth);
        depth == 0
    })
}

#[cold]
fn register(hot: &Hot) -> Result<&'static ThreadSlot, String> {
    prepare()?;
    let mut registry = match registry().lock() {
        Ok(r) => r,
        Err(poisoned) => poisoned.into_inner(),
    };
    let owned = OWNER.try_with(|_| ()).is_ok();
    let slot = match registry.free.pop().filter(|_| owned) {
        Some(slot) => slot,
        None => {
            let slot: &'static ThreadSlot = Box::leak(Box::new(ThreadSlot::new()));
            registry.all.push(slot);
            slot
        }
    };
    drop(registry);
    // SAFETY: neither call has preconditions.
    let (tid, me) = unsafe { (libc::gettid(), libc::pthread_self()) };
    slot.tid.store(tid, Ordering::Relaxed);
    slot.thread.store(me as usize, Ordering::Relaxed);
    if owned {
        let _ = OWNER.try_with(|owner| owner.slot.set(Some(slot)));
    }
    hot.slot.set(slot);
    // Registers this process for the expedited barrier before the first
    // reader can rely on it.
    let _ = membarrier_available();
    Ok(slot)
}

/// Prepares this thread for guarded calls, once (its alternate signal
/// stack and plugin stack, see [`crate::guard::prepare_thread`]).
pub fn prepare() -> Result<(), String> {
    let prepared = OWNER.try_with(|owner| -> Result<(), String> {
        let guard = match owner.prepared.take() {
            Some(g) => g,
            None => crate::guard::prepare_thread()?,
        };
        owner.prepared.set(Some(guard));
        Ok(())
    });
    match prepared {
        Ok(result) => result,
        Err(_) => Err("the thread is ending".into()),
    }
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

static LIGHT: AtomicBool = AtomicBool::new(false);

/// Why the expedited membarrier is not available, when it is not.
static REFUSED: OnceLock<Option<String>> = OnceLock::new();

/// Whether readers may use the light fence: the process is registered for
/// the expedited membarrier. Decided once; see [`membarrier_refused`] for
/// why not.
pub fn membarrier_available() -> bool {
    REFUSED
        .get_or_init(|| {
            // SAFETY: the membarrier system call takes two integers (and a
            // CPU id, unused by these commands) and touches no memory of ours.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                    0,
                    0,
                )
            };
            if rc == 0 {
                LIGHT.store(true, Ordering::SeqCst);
                None
            } else {
                Some(format!(
                    "membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) refused ({}); every plugin call pays a full memory fence instead",
                    std::io::Error::last_os_error()
                ))
            }
        })
        .is_none()
}

/// Why readers pay a full fence (the kernel refused the membarrier), for a
/// line said once.
pub fn membarrier_refused() -> Option<String> {
    membarrier_available();
    REFUSED.get().cloned().flatten()
}

/// Whether readers use the light fence (see [`membarrier_available`]).
#[inline(always)]
pub fn light() -> bool {
    LIGHT.load(Ordering::Relaxed)
}

/// The writer's barrier between publishing and scanning the slots. `Err`
/// when the registered membarrier failed: readers that used the light
/// fence are then not known to be seen, and nothing retired may be freed.
pub fn barrier() -> Result<(), String> {
    let mut failed = None;
    super::epoch::writer_barrier(|| {
        if membarrier_available() {
            // SAFETY: as in `membarrier_available`; the process is
            // registered for this command.
            let rc = unsafe {
                libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0)
            };
            if rc != 0 {
                failed = Some(format!(
                    "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after registration: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    });
    failed.map_or(Ok(()), Err)
}
