//! The host's handle on a plugin with its own table: [`Plugin`], cheap to
//! clone and to call through from any number of threads, and [`Entered`],
//! one thread's stay in one version.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::call::GuardedFn;
use super::epoch::{Current, Group};
use super::notice::{Notice, Notices};
use super::reclaim::{self, Retired};
use super::slots::{self, ThreadSlot};
use super::table::{self, FunctionTable, Refusal};
use crate::guard::Fault;
use crate::plugin::load::Library;
use crate::plugin::shadow::{ShadowDir, ShadowFile};

/// How a [`Plugin`] treats its calls and its old versions.
#[derive(Clone)]
pub struct Options {
    /// A call that runs longer is interrupted, as a fault of its version
    /// (`None`: never; the call may run as long as it likes).
    pub call_timeout: Option<Duration>,
    /// A thread still inside a replaced version after this long is named,
    /// once per version (the version stays mapped for it meanwhile).
    pub stuck_after: Duration,
    /// Where the lines go: by default one line each on the host's stderr.
    pub notices: Notices,
    /// Builds kept on disk to go back to: when a call faults in the
    /// current version, the newest build before it is loaded again and
    /// published (calls already in the faulting version finish there), as
    /// the command-line tool rolls back. 0 keeps none: the faulting
    /// version stays current, and the host decides.
    pub keep_versions: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            call_timeout: Some(Duration::from_secs(1)),
            stuck_after: Duration::from_secs(1),
            notices: Notices::stderr(),
            keep_versions: 5,
        }
    }
}

/// One loaded version, as readers see it.
pub(super) struct Version<T> {
    pub number: u64,
    pub table: T,
    /// Where its library is mapped.
    pub span: (usize, usize),
}

/// A pointer to a version, handed between the writer and the reclaimer.
pub(super) struct VersionPtr<T>(pub *mut Version<T>);

// SAFETY: a `Version` holds a `Send + Sync` table and integers; the pointer
// moves between the threads that own it in turn (writer, reclaimer).
unsafe impl<T: Send + Sync> Send for VersionPtr<T> {}

/// What the writer side owns.
struct Writer {
    shadow: ShadowDir,
    serial: u64,
    /// The current version's library.
    live: Option<(u64, Library)>,
    path: PathBuf,
    /// The builds of the newest versions, as loaded (oldest first; the
    /// current one last), for a rollback after a fault. A version that
    /// faulted is dropped from here.
    kept: Vec<(u64, ShadowFile)>,
    /// The current version, when it is a kept build loaded again: that
    /// build's version (a fault in it drops that build too).
    current_build: Option<(u64, u64)>,
}

pub(super) struct Shared<T> {
    pub current: Current<Version<T>>,
    writer: Mutex<Writer>,
    pub retired: Mutex<Vec<Retired<T>>>,
    pub wake: Condvar,
    /// The numbers of the versions replaced and not closed yet (the
    /// reclaimer works on its own copy of `retired`).
    pub open: Mutex<Vec<u64>>,
    pub closed: Condvar,
    pub stop: AtomicBool,
    pub options: Options,
    /// Versions published so far.
    versions: AtomicU64,
    /// Faults in calls, over every version.
    pub faults: AtomicU64,
    /// `options.call_timeout` in milliseconds as the slots hold it (0:
    /// none).
    pub timeout_ms: u32,
}

struct Owner<T: FunctionTable> {
    shared: Arc<Shared<T>>,
    reclaimer: Mutex<Option<JoinHandle<()>>>,
}

/// A plugin library with the host's own function table `T`, called from any
/// number of threads and reloaded without stopping them. Cloning is one
/// reference count; the last clone dropped closes every version that no
/// thread still runs.
pub struct Plugin<T: FunctionTable> {
    owner: Arc<Owner<T>>,
}

impl<T: FunctionTable> Clone for Plugin<T> {
    fn clone(&self) -> Plugin<T> {
        Plugin {
            owner: Arc::clone(&self.owner),
        }
    }
}

use super::plugin_locked as locked;

/// Plugins loaded so far in the process: the next one's group.
static LOADED: AtomicU64 = AtomicU64::new(0);

impl<T: FunctionTable> Plugin<T> {
    /// Loads the library at `path` as version 1.
    pub fn load(path: impl AsRef<Path>, options: Options) -> Result<Plugin<T>, Refusal> {
        let path = path.as_ref().to_path_buf();
        slots::prepare().map_err(Refusal::Io)?;
        if let Some(why) = slots::membarrier_refused() {
            reclaim::say_once_per_process(&options.notices, Notice::NoMembarrier(why));
        }
        let shadow = ShadowDir::create().map_err(Refusal::Io)?;
        let (library, table, bytes) = match table::load::<T>(&shadow, 1, &path) {
            Ok(loaded) => loaded,
            Err(refusal) => {
                options.notices.say(&Notice::Refused {
                    path: path.clone(),
                    refusal: refusal.to_string(),
                });
                return Err(refusal);
            }
        };
        let first = Box::into_raw(Box::new(Version {
            number: 1,
            table,
            span: library.span().unwrap_or((0, 0)),
        }));
        options.notices.say(&Notice::Loaded {
            version: 1,
            path: path.clone(),
            replaced: None,
        });
        let shared = Arc::new(Shared {
            // One epoch for every plugin (see `epoch`); a group of its own
            // unless more than `GROUPS` are loaded.
            current: Current::new(first, Group::nth(LOADED.fetch_add(1, Ordering::Relaxed))),
            writer: Mutex::new({
                let mut writer = Writer {
                    shadow,
                    serial: 1,
                    live: Some((1, library)),
                    path,
                    kept: Vec::new(),
                    current_build: None,
                };
                writer.keep(1, &bytes, options.keep_versions, &options.notices);
                writer
            }),
            retired: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            open: Mutex::new(Vec::new()),
            closed: Condvar::new(),
            stop: AtomicBool::new(false),
            options: options.clone(),
            versions: AtomicU64::new(1),
            faults: AtomicU64::new(0),
            timeout_ms: options.call_timeout.map_or(0, |t| {
                u32::try_from(t.as_millis()).unwrap_or(u32::MAX).max(1)
            }),
        });
        if let Some(timeout) = options.call_timeout {
            super::watchdog::watch(timeout).map_err(Refusal::Io)?;
        }
        let reclaimer = reclaim::start(Arc::clone(&shared)).map_err(Refusal::Io)?;
        Ok(Plugin {
            owner: Arc::new(Owner {
                shared,
                reclaimer: Mutex::new(Some(reclaimer)),
            }),
        })
    }

    /// Loads the library at `path` (the same file as before, rebuilt, or
    /// another) as the next version and publishes it at once: calls that
    /// start from now on run it; calls already running finish on the
    /// version they started on, which is closed once the last of them has
    /// left. Never waits for a caller. On a refusal the running version
    /// stays, and a line says why.
    pub fn reload_from(&self, path: impl AsRef<Path>) -> Result<u64, Refusal> {
        let path = path.as_ref().to_path_buf();
        let shared = &self.owner.shared;
        slots::prepare().map_err(Refusal::Io)?;
        let mut writer = locked(&shared.writer);
        let number = publish(shared, &mut writer, &path, None)?;
        writer.path = path;
        Ok(number)
    }

    /// [`Plugin::reload_from`] the path of the last load.
    pub fn reload(&self) -> Result<u64, Refusal> {
        let path = locked(&self.owner.shared.writer).path.clone();
        self.reload_from(path)
    }

    /// Enters the current version on this thread: until the returned value
    /// is dropped, this thread's calls run that version, and it stays
    /// mapped. Costs two stores to this thread's own slot and a compiler
    /// fence (see [`super::epoch`]). Nested entries (of this plugin or
    /// another) are counted; the outermost one marks the slot, and an
    /// entry into another plugin inside it adds that plugin's group.
    #[inline]
    pub fn enter(&self) -> Entered<'_, T> {
        let shared = &*self.owner.shared;
        let (slot, outermost) = match slots::enter() {
            Ok(entered) => entered,
            Err(why) => panic_unprepared(&why),
        };
        let version = if outermost {
            if slot.timeout_ms.load(Ordering::Relaxed) != shared.timeout_ms {
                slot.timeout_ms.store(shared.timeout_ms, Ordering::Relaxed);
            }
            shared.current.enter(&slot.epoch, slots::light())
        } else {
            // Inside already (this plugin or another): the slot's older
            // epoch covers this one once the slot names its group.
            shared.current.join(&slot.epoch, slots::light())
        };
        Entered {
            // SAFETY: entering marked this thread's slot before reading the
            // pointer, so the version is not freed until `Entered` is
            // dropped (see `epoch`).
            version: unsafe { &*version },
            slot,
            shared,
            _not_send: PhantomData,
        }
    }

    /// `f` on the current version's table, entered; e.g.
    /// `plugin.call(|api| api.handle(&req, &mut resp))` with a host's
    /// extension trait on [`Entered`].
    #[inline]
    pub fn call<R>(&self, f: impl FnOnce(&Entered<'_, T>) -> R) -> R {
        f(&self.enter())
    }

    /// The version calls start on now.
    pub fn version(&self) -> u64 {
        self.enter().version()
    }

    /// Versions replaced but not closed yet (threads still in them, or
    /// threads they started still running).
    pub fn retained(&self) -> Vec<u64> {
        reclaim::retained(&self.owner.shared)
    }

    /// Faults in calls so far, over every version.
    pub fn faults(&self) -> u64 {
        self.owner.shared.faults.load(Ordering::Relaxed)
    }

    /// Where this plugin's lines go.
    pub(super) fn notices(&self) -> &super::Notices {
        &self.owner.shared.options.notices
    }

    /// Waits until no replaced version is left open, or `timeout`; true
    /// when none is.
    pub fn wait_retired(&self, timeout: Duration) -> bool {
        reclaim::wait_empty(&self.owner.shared, timeout)
    }
}

impl Writer {
    /// Keeps version `number`'s build, and at most `keep` of the newest.
    fn keep(&mut self, number: u64, bytes: &[u8], keep: usize, notices: &Notices) {
        if keep == 0 {
            return;
        }
        let name = self
            .path
            .file_name()
            .map_or_else(|| "plugin.so".into(), |n| n.to_string_lossy().into_owned());
        // Not kept when the copy cannot be written: there is then one
        // build fewer to go back to, said, and nothing else changes.
        match self.shadow.keep(number, &name, bytes) {
            Ok(file) => self.kept.push((number, file)),
            Err(why) => notices.say(&Notice::NotKept {
                version: number,
                why,
            }),
        }
        let excess = self.kept.len().saturating_sub(keep);
        self.kept.drain(..excess);
    }
}

/// Loads `path` as the next version and publishes it (see
/// [`Plugin::reload_from`]); `rolling_back` says from which faulting
/// version to which kept one, for the line.
fn publish<T: FunctionTable>(
    shared: &Shared<T>,
    writer: &mut Writer,
    path: &Path,
    rolling_back: Option<(u64, u64)>,
) -> Result<u64, Refusal> {
    writer.serial += 1;
    let serial = writer.serial;
    let (library, table, bytes) = match table::load::<T>(&writer.shadow, serial, path) {
        Ok(loaded) => loaded,
        Err(refusal) => {
            shared.options.notices.say(&Notice::Refused {
                path: path.to_path_buf(),
                refusal: refusal.to_string(),
            });
            return Err(refusal);
        }
    };
    let number = shared.versions.fetch_add(1, Ordering::Relaxed) + 1;
    let next = Box::into_raw(Box::new(Version {
        number,
        table,
        span: library.span().unwrap_or((0, 0)),
    }));
    let (previous, retired_at) = shared.current.publish(next);
    let old = writer.live.replace((number, library));
    match rolling_back {
        None => writer.keep(
            number,
            &bytes,
            shared.options.keep_versions,
            &shared.options.notices,
        ),
        Some((_, build)) => writer.current_build = Some((number, build)),
    }
    // SAFETY: `previous` was the current version, made by this type; only
    // its number is read, and it is freed only by the reclaimer, after the
    // grace period that starts below.
    let replaced = unsafe { (*previous).number };
    shared.options.notices.say(&match rolling_back {
        Some((from, to)) => Notice::RolledBack {
            from,
            to,
            version: number,
        },
        None => Notice::Loaded {
            version: number,
            path: path.to_path_buf(),
            replaced: Some(replaced),
        },
    });
    if let Some((_, library)) = old {
        reclaim::retire(shared, VersionPtr(previous), library, retired_at);
    }
    Ok(number)
}

/// After a fault in version `faulted`: if it is still the current one,
/// the newest build kept before it is loaded again and published. Threads
/// that fault in it at the same time find it replaced, and do nothing.
fn roll_back<T: FunctionTable>(shared: &Shared<T>, faulted: u64) {
    if shared.options.keep_versions == 0 {
        return;
    }
    let mut writer = locked(&shared.writer);
    if writer.live.as_ref().map(|(n, _)| *n) != Some(faulted) {
        return;
    }
    // A build that faulted is not gone back to (the version, or the kept
    // build it was loaded again from).
    let build = match writer.current_build {
        Some((version, build)) if version == faulted => build,
        _ => faulted,
    };
    writer.kept.retain(|(n, _)| *n != build);
    let Some((to, path)) = writer
        .kept
        .last()
        .map(|(n, file)| (*n, file.path().to_path_buf()))
    else {
        shared
            .options
            .notices
            .say(&Notice::NoRollback { version: faulted });
        return;
    };
    if let Err(why) = slots::prepare() {
        shared
            .options
            .notices
            .say(&Notice::RollbackFailed { from: faulted, why });
        return;
    }
    // A refusal was said by the load; the faulting version stays.
    let _ = publish(shared, &mut writer, &path, Some((faulted, to)));
}

#[cold]
fn panic_unprepared(why: &str) -> ! {
    // The thread cannot get an alternate signal stack (out of memory):
    // calling plugin code unguarded would let a stack overflow in it end
    // the process, so the call is not made.
    panic!("this thread cannot call plugin code: {why}")
}

impl<T: FunctionTable> Drop for Owner<T> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        if let Some(reclaimer) = locked(&self.reclaimer).take() {
            let _ = reclaimer.join();
        }
        let mut writer = locked(&self.shared.writer);
        let live = writer.live.take();
        drop(writer);
        // The last handle is gone, so no thread is inside the current
        // version through it: closed like a retired one, on this thread
        // (its destructors run under the guard).
        let _ = slots::prepare();
        if let Some((_, library)) = live {
            let current = self.shared.current.peek();
            reclaim::close_at_exit(&self.shared, VersionPtr(current), library);
        }
    }
}

/// One thread's stay in one version of a [`Plugin`]: the table to call,
/// valid until this is dropped (which must happen on the same thread).
pub struct Entered<'a, T: FunctionTable> {
    version: &'a Version<T>,
    slot: &'static ThreadSlot,
    shared: &'a Shared<T>,
    _not_send: PhantomData<*const ()>,
}

/// A call that did not return normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The function is not in the entered version's library (a pointer
    /// from another version, or from elsewhere): not called.
    NotInLibrary { address: usize, version: u64 },
    /// The table has no such function (NULL): not called.
    Missing,
    /// Plugin code faulted (or ran past the timeout); the call was left.
    Fault {
        version: u64,
        fault: Fault,
        /// What happened and where: `SIGSEGV (address not mapped) at 0x0
        /// in handle+0x1c`.
        report: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotInLibrary { address, version } => write!(
                f,
                "expected a function of v{version}'s library, found {address:#x}; not called"
            ),
            CallError::Missing => f.write_str("the table has no such function (NULL); not called"),
            CallError::Fault {
                version, report, ..
            } => write!(f, "v{version}: {report}"),
        }
    }
}

impl std::error::Error for CallError {}

impl<T: FunctionTable> Entered<'_, T> {
    /// The entered version's table.
    #[inline]
    pub fn table(&self) -> &T {
        &self.version.table
    }

    /// The entered version's number (1 for the first load).
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.number
    }

    /// Calls `f`, a function of this version's table, with `args` under
    /// the crash guard: a crash, an abort or a hang in it comes back as
    /// [`CallError::Fault`] (said in one line, too); this `Entered` stays
    /// usable for the calls that do not fault, while new entries go to the
    /// build rolled back to, if one is kept (see [`Options::keep_versions`]).
    ///
    /// # Safety
    /// `f`'s declared type must be the plugin function's real one, and
    /// `args` what it expects (pointers valid for what it does with them).
    /// Wrap each table function in a safe method of an extension trait on
    /// `Entered<YourTable>` that passes references as pointers.
    #[inline]
    pub unsafe fn call<A, F: GuardedFn<A>>(
        &self,
        f: Option<F>,
        args: A,
    ) -> Result<F::Output, CallError>
    where
        F::Output: super::call::FromWord,
    {
        let Some(f) = f else {
            return Err(CallError::Missing);
        };
        let address = f.address() as usize;
        let (start, end) = self.version.span;
        if address < start || address >= end {
            return Err(CallError::NotInLibrary {
                address,
                version: self.version.number,
            });
        }
        slots::count_call(self.slot);
        // SAFETY: `f` is in the entered version's library, mapped until
        // this `Entered` is dropped; its type and `args` are the caller's
        // promise; the thread was prepared for guarded calls when it got
        // its slot.
        match unsafe { crate::guard::call_words(f.address(), F::words(args)) } {
            Ok(word) => Ok(<F::Output as super::call::FromWord>::from_word(word)),
            Err(fault) => Err(self.faulted(fault)),
        }
    }

    #[cold]
    fn faulted(&self, fault: Fault) -> CallError {
        // Named now, while the library is surely mapped.
        let report = if fault.is_timeout() {
            let after = self
                .shared
                .options
                .call_timeout
                .map_or(0, |t| t.as_millis());
            match fault.symbol() {
                Some(place) => format!("timeout after {after} ms in {place}"),
                None => format!("timeout after {after} ms"),
            }
        } else {
            fault.report()
        };
        self.shared.faults.fetch_add(1, Ordering::Relaxed);
        self.shared.options.notices.say(&Notice::Fault {
            version: self.version.number,
            tid: self.slot.tid.load(Ordering::Relaxed),
            report: report.clone(),
        });
        roll_back(self.shared, self.version.number);
        CallError::Fault {
            version: self.version.number,
            fault,
            report,
        }
    }
}

impl<T: FunctionTable> Drop for Entered<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if slots::leave() {
            Current::<Version<T>>::leave(&self.slot.epoch);
        }
    }
}

/// How long ago `since` was, for lines.
pub(super) fn ago(since: Instant) -> Duration {
    Instant::now().saturating_duration_since(since)
}
