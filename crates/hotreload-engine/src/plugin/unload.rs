//! Taking a version's code out of the process: the one sequence that the
//! tick loop's retired versions and an embedded plugin's replaced ones both
//! go through, each saying what happened in its own lines.
//!
//! Unmapping code that a thread still runs kills the process, so the order
//! matters: threads the library started and that still run its code keep it
//! mapped (nothing is done yet: try again later); then its destructors run
//! under the guard (a fault stops the rest); the POSIX timers its code armed
//! are deleted (a thread timer would call into unmapped code); threads a
//! destructor started keep it mapped too, and so does a deleted thread
//! timer whose last expiry's thread may still be running (nothing tells
//! when it ends); only then is it closed.

use crate::guard;
use crate::plugin::Plugin;
use crate::plugin::load::{Closed, Library};

/// Code that can be unloaded: a library loaded in this process, or a
/// version (whose isolated worker unloads its own copy at `close`).
pub trait Unloadable: Sized {
    /// Where its code is mapped in this process, if it is.
    fn span(&self) -> Option<(usize, usize)>;
    /// Runs its destructors, once; a fault stops the rest and is returned.
    fn destruct(&mut self) -> Option<String>;
    fn close(self) -> Closed;
}

impl Unloadable for Library {
    fn span(&self) -> Option<(usize, usize)> {
        Library::span(self)
    }
    fn destruct(&mut self) -> Option<String> {
        Library::destruct(self)
    }
    fn close(self) -> Closed {
        Library::close(self)
    }
}

impl Unloadable for Plugin {
    fn span(&self) -> Option<(usize, usize)> {
        Plugin::span(self)
    }
    fn destruct(&mut self) -> Option<String> {
        Plugin::destruct(self)
    }
    fn close(self) -> Closed {
        Plugin::close(self)
    }
}

/// What keeps a version's code mapped for now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Threads its code started still run it: the first few ids, and how
    /// many.
    Threads { tids: Vec<i32>, count: usize },
    /// A thread timer it armed was deleted, and the thread the C library
    /// started for its last expiry may still be running its code.
    TimerThread,
}

/// What was done on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unloading {
    /// A destructor faulted (what and where); the rest were skipped.
    pub destructor_fault: Option<String>,
    /// POSIX timers its code left armed, deleted before its code goes.
    pub timers_deleted: usize,
}

pub enum Unloaded<U> {
    /// Closed (see [`Closed`] for what `dlclose` left).
    Closed(Unloading, Closed),
    /// Still mapped for `Holder`; handed back, to try again later (its
    /// destructors are not run twice).
    Kept(U, Unloading, Holder),
}

/// Unloads `unit` in the order above. `after_destructors` runs right after
/// its destructors (for a caller that repairs what they may have changed in
/// the process).
pub fn unload<U: Unloadable>(mut unit: U, after_destructors: impl FnOnce()) -> Unloaded<U> {
    let span = unit.span();
    let running = || span.map_or((Vec::new(), 0), |(s, e)| guard::threads::running_in(s, e));
    let mut done = Unloading::default();
    let (tids, count) = running();
    if count > 0 {
        return Unloaded::Kept(unit, done, Holder::Threads { tids, count });
    }
    done.destructor_fault = unit.destruct();
    after_destructors();
    let (deleted, timer_threads) =
        span.map_or((0, 0), |(s, e)| guard::process::stop_timers_of(s, e));
    done.timers_deleted = deleted;
    let (tids, count) = running();
    if count > 0 {
        return Unloaded::Kept(unit, done, Holder::Threads { tids, count });
    }
    if timer_threads > 0 {
        return Unloaded::Kept(unit, done, Holder::TimerThread);
    }
    let closed = unit.close();
    Unloaded::Closed(done, closed)
}

/// `a POSIX timer`, `3 POSIX timers`, for lines.
pub fn timers(n: usize) -> String {
    if n == 1 {
        "a POSIX timer".to_owned()
    } else {
        format!("{n} POSIX timers")
    }
}
