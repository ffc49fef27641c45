//! The engine embedded with the host's own function table, called from
//! many threads, reloaded without stopping them.
//!
//! A host declares its table (a `#[repr(C)]` struct of function pointers
//! behind a [`TableHeader`]) and implements [`FunctionTable`] for it; a
//! [`Plugin<T>`] loads a library that exports it through the engine's
//! checked stages (shadow copy, ELF validation, the loader with
//! constructors under the crash guard: [`table`]). Any thread calls it:
//!
//! ```ignore
//! let plugin: Plugin<WorkerApi> = Plugin::load("libworker.so", Options::default())?;
//! let worker = plugin.clone();                       // one reference count
//! std::thread::spawn(move || {
//!     let api = worker.enter();                      // this thread is in the current version
//!     // SAFETY: `handle` is declared as the plugin defines it.
//!     let status = unsafe { api.call(api.table().handle, (&req as *const _, &mut resp as *mut _)) };
//! });
//! plugin.reload()?;                                  // published at once; nobody waits
//! ```
//!
//! Wrapping each table function in a safe method of an extension trait on
//! [`Entered<YourTable>`] gives `plugin.enter().handle(&req, &mut resp)`
//! (`examples/worker-pool` does).
//!
//! The parts, each in its own module:
//! - [`epoch`]: the publish/retire protocol alone, generic over its atomics
//!   so that `loom` can check it (`RUSTFLAGS="--cfg loom"`).
//! - [`slots`]: each thread's cache-line-padded slot, the registry every
//!   plugin shares, and the membarrier that makes entering cost a store
//!   and a compiler fence.
//! - [`plugin`]: [`Plugin`] and [`Entered`]: loading, publishing, calling.
//! - [`call`]: calling any table function through the guard's trampoline,
//!   typed by the function pointer's own type.
//! - [`reclaim`]: the reclaimer thread: grace periods, closing, what stays
//!   mapped and why (a stuck thread, threads the plugin started).
//! - [`watchdog`]: interrupting a hung call on any thread, by sampling.
//! - [`rebuild`]: watching the sources, building on change and loading
//!   what the build made, with the command-line tool's own stages.
//! - [`notice`]: the lines all this says.
//!
//! What a call costs: entering and leaving are a few stores to the
//! thread's own slot and a compiler fence, flat in the number of threads;
//! a guarded call adds the guard's trampoline and the two system calls
//! after it that put the thread's signal mask and alternate stack back
//! (see [`crate::guard`] and BENCHMARKS.md). Hold one [`Entered`] across a
//! batch of calls to pay the entry once.
//!
//! What a fault does: the call returns [`CallError::Fault`] and a line
//! names the version, the thread and the place; then, as the command-line
//! tool does, the newest build kept before the faulting version
//! ([`Options::keep_versions`], 5) is loaded again and published, calls
//! already in the faulting version finishing there; a build that faulted
//! is never gone back to, and with none left the version stays current,
//! said. There is no state here to restore: the host owns whatever the
//! calls work on.
//!
//! A thread that never leaves a replaced version keeps that version, and
//! every version of the same plugin replaced after it entered, mapped
//! (epochs are ordered: its slot cannot say which of them it holds); each
//! is named once. Other plugins' versions are not held by it: a slot also
//! names the plugins its thread entered (their groups, see [`epoch`]).

pub mod call;
pub mod epoch;
pub mod notice;
pub mod plugin;
pub mod rebuild;
pub mod reclaim;
pub mod slots;
pub mod table;
pub mod watchdog;

pub use call::{FromWord, GuardedFn, Word};
pub use notice::{Notice, Notices};
pub use plugin::{CallError, Entered, Options, Plugin};
pub use rebuild::{Rebuild, Rebuilder};
pub use table::{Function, FunctionTable, Refusal, TableHeader};

fn plugin_locked<X>(m: &std::sync::Mutex<X>) -> std::sync::MutexGuard<'_, X> {
    match m.lock() {
        Ok(g) => g,
        // A panic elsewhere while holding it leaves data that is still
        // whole (every update is a push, a take or a swap).
        Err(poisoned) => poisoned.into_inner(),
    }
}
