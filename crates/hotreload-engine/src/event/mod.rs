//! What the engine tells the outside world. Events flow out of the engine on
//! one channel, in the order things happened; the command-line front end turns
//! each into a line, an embedding host can do anything else with them.

mod fields;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::WatchMode;
use crate::outcome::Rejection;

/// Where events go. It is called on the engine thread where the event
/// happened, at the moment it happened, so a log written from it is in causal
/// order with what plugin code prints (a swap line always comes before the new
/// version's first output). It must return quickly: the tick thread calls it.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

#[derive(Clone, Debug)]
pub enum Event {
    /// Something the server decided about itself, in a sentence.
    ServerNotice(String),
    /// The watchers are in place and the start-up build is about to run.
    Running {
        watch_mode: WatchMode,
    },
    /// The watcher changed how it works or lost something; said once.
    WatchNotice(String),
    /// Relevant changes settled (the quiet period passed). `rescan` means
    /// events may have been missed (the kernel's queue overflowed, or the
    /// watcher switched to polling) and everything is assumed to have changed.
    ChangeDetected {
        paths: Vec<PathBuf>,
        rescan: bool,
    },
    /// Events arrived but no watched file's mtime, size or inode changed.
    BuildSkipped {
        paths: Vec<PathBuf>,
    },
    /// A build was asked for without a change (a `Rebuild` command, SIGUSR1).
    RebuildRequested,
    /// The build command runs. `ahead`: it started this long before this
    /// event, ahead of its change's settle (see `pipeline::reload::ahead`).
    BuildStarted {
        ahead: Option<Duration>,
    },
    /// `output` is everything the build printed, for its warnings.
    BuildSucceeded {
        duration: Duration,
        output: String,
    },
    BuildFailed(BuildFailure),
    /// Sources changed while the build ran (`paths`, which really differ
    /// from what the build started from; none when a rebuild was asked
    /// for): its output is stale and is not loaded; one more build follows.
    BuildSuperseded {
        paths: Vec<PathBuf>,
    },
    /// A source changed while a build had been running for `ran`: it is
    /// stopped (SIGTERM, then SIGKILL) and one more build follows.
    BuildCancelled {
        ran: Duration,
    },
    /// `paths` changed during each of the last `builds` builds, which were
    /// discarded for it: they are taken to be written by the build and
    /// ignored from now on. `ignore_pattern` would make that permanent.
    WrittenByBuild {
        paths: Vec<PathBuf>,
        builds: u32,
        ignore_pattern: Option<String>,
    },
    /// The last `builds` builds were all discarded, for different files
    /// each time (all of them in `paths`).
    KeptDiscarding {
        paths: Vec<PathBuf>,
        builds: u32,
    },
    /// The build produced the very bytes of the running version: nothing to
    /// swap.
    Unchanged {
        version: u64,
    },
    /// A new version runs from the next tick on.
    Swapped(Swap),
    /// `version` was ready but its swap still queued when `by` was ready
    /// too: it is skipped, never installed, and `by` goes live.
    SwapSkipped {
        version: u64,
        by: u64,
    },
    /// A built library was refused; the running version (if any) keeps
    /// ticking. `detail` is what a failed trial printed (empty otherwise).
    Rejected {
        reason: Rejection,
        keeping: Option<u64>,
        detail: String,
    },
    /// Said once when trials are configured but cannot run.
    TrialsOff(String),
    /// A snapshot of what is known about the state.
    State(StateReport),
    /// Plugin code crashed, aborted or hung; what was done about it.
    Fault(FaultReport),
    /// Where the state's layout comes from (or why it is unknown); said
    /// when it changes.
    LayoutNotice(String),
    /// The state was written to the state file at exit.
    StateSaved {
        path: PathBuf,
        tick: u64,
    },
    /// A line plugin code logged through the host context.
    PluginLog(String),
    /// A value in the state points into a version's library: it dangles
    /// once that version is unloaded.
    Dangling {
        version: u64,
        offset: usize,
        field: Option<String>,
    },
    /// The plugin keeps writable data of its own, which every reload resets.
    StaticData {
        version: u64,
        symbols: Vec<(String, u64)>,
    },
    /// Plugin code changed process-wide state the host relies on (the
    /// signal mask, a signal's handler); the guard undid or refused it.
    /// Said once per version and kind of change.
    ProcessStateRepaired {
        version: u64,
        call: &'static str,
        repair: crate::guard::process::Repair,
    },
    /// An isolated version's worker is stopped in the middle of a call (a
    /// debugger at a breakpoint, or SIGSTOP): the call waits for it instead
    /// of timing out. Said once per stop.
    WorkerStopped {
        version: u64,
        pid: u32,
    },
    /// The crash guard's handlers for these signals had been replaced (by
    /// plugin code going around the interposers); they are back.
    /// A thread plugin code started crashed outside any call; the guard
    /// stopped it for good. `version`: the running version, when the crash
    /// was in its code (its fault follows); else the code is a retired
    /// version's, or no plugin's.
    /// Plugin code changed a process-wide setting the server relies on (the
    /// umask, a resource limit, the working folder, a standard descriptor);
    /// found by [`crate::guard::baseline::settle`] and put back where it
    /// could be. `version`: the version whose code ran last, if known;
    /// `during`: what it was running (`init`, `constructor`, `ticking`).
    ProcessDrift {
        version: Option<u64>,
        during: &'static str,
        drift: Vec<crate::guard::baseline::Drift>,
    },
    /// Brought back on command (`rollback`): `to` runs instead of `from`,
    /// after `tick` ticks; how the state was carried when the layout
    /// differs. `reloaded` when `to` was loaded again from its kept copy;
    /// `from_kept` when `from` stays loaded (else it was unloaded, beyond
    /// `--keep-versions`); `from_faulted` when `from` was no longer running
    /// (it had faulted with nothing to take over) and `to` takes over the
    /// state it left.
    RolledBackOnRequest {
        from: u64,
        to: u64,
        tick: u64,
        carried: Option<String>,
        reloaded: bool,
        from_kept: bool,
        from_faulted: bool,
        /// Asked for (`rollback`), or done by the server itself after a
        /// fault.
        on_request: bool,
    },
    /// The state and the tick counter were put back from `from` to tick
    /// `to` from the history: on command (`rewind`), or by a `loop` that
    /// reached the end of its window (`pass`: the passes begun so far).
    Rewound {
        from: u64,
        to: u64,
        version: Option<u64>,
        looping: Option<LoopPass>,
    },
    /// `loop` started (`window`) or ended (`None`).
    LoopSet {
        window: Option<(u64, u64)>,
        version: Option<u64>,
    },
    /// A `replay` finished: recorded ticks run again with another version,
    /// and what differed.
    Replayed(crate::pipeline::replay::Replayed),
    /// One value of the state was written on command (`set`), or a write
    /// taken back (`undone`), after `tick` ticks.
    FieldSet {
        path: String,
        old: String,
        new: String,
        tick: u64,
        undone: bool,
    },
    /// Ticking holds between two ticks, on a command (`pause`, or the end
    /// of a `step`), after `tick` ticks.
    Paused {
        tick: u64,
        /// A version runs (else the next one to go live starts paused).
        running: bool,
    },
    /// Ticking goes on, the deadlines restarted from now.
    Resumed {
        tick: u64,
    },
    /// A `step` ran its `ticks` ticks; ticking holds again after `tick`.
    Stepped {
        ticks: u64,
        tick: u64,
    },
    /// The worker of `version`, kept for a rollback, ended (`cause`); the
    /// version is given up.
    KeptWorkerDied {
        version: u64,
        pid: u32,
        cause: String,
    },
    /// The server was asked to stop while `version`'s worker was stopped
    /// mid-call: it is ended as a hung one (the call's state is undone).
    WorkerStoppedAtExit {
        version: u64,
        pid: u32,
    },
    PluginThreadStopped {
        tid: i32,
        version: Option<u64>,
        /// What it did and where: `SIGSEGV (address not mapped) at 0x0 in
        /// worker+0x12 (logic.c:40)`.
        cause: String,
        /// It called `exit` (or the like), and only it ended; else it
        /// crashed, and is stopped for good.
        exited: bool,
    },
    HandlersReasserted {
        signals: Vec<i32>,
    },
    /// The first tick of a newly swapped version ran.
    FirstTick {
        version: u64,
        since_build_exit: Duration,
    },
    /// `dlclose` left a retired version mapped (its code is still in memory).
    StayedMapped {
        version: u64,
        lib: PathBuf,
        /// What this version still takes, and what all retired versions
        /// that stayed take together (this one included).
        bytes: u64,
        pinned: usize,
        pinned_bytes: u64,
    },
    /// So many retired versions stayed mapped (every
    /// [`PINNED_WARNING`](crate::pipeline::reload::PINNED_WARNING) more) that
    /// their memory is worth a restart.
    PinnedWarning {
        pinned: usize,
        pinned_bytes: u64,
    },
    /// A retired version was not closed: threads plugin code started still
    /// run its code (their ids, a few, and how many). It is closed once they
    /// have ended; at exit it stays mapped.
    KeptForThreads {
        version: u64,
        tids: Vec<i32>,
        count: usize,
    },
    /// At exit: retired versions that stayed mapped until the end.
    PinnedAtExit {
        pinned: usize,
        pinned_bytes: u64,
    },
    /// The loop fell so far behind that it skipped ticks instead of bursting.
    Stalled {
        behind: Duration,
        skipped: u64,
    },
    /// Timing of the whole run, reported when the loop stops.
    TickStats(TickStats),
    /// A stop was asked for; the tick in progress finishes, then `shutdown`
    /// runs and the state is saved.
    Stopping {
        reason: crate::command::StopReason,
    },
    /// Saving the state to the state file failed. A periodic save is tried
    /// again at the next one and at exit; the save at exit is retried a few
    /// times, and when all fail the state is written to `rescued_to` if it
    /// can be.
    SaveFailed {
        path: PathBuf,
        why: String,
        at_exit: bool,
        rescued_to: Option<PathBuf>,
    },
    /// A save worked again after failed ones.
    SaveRecovered {
        path: PathBuf,
        tick: u64,
    },
    /// The engine stopped; `code` is the process exit code it recommends.
    Exited {
        code: i32,
    },
}

/// Every event kind [`Event::kind`] names, and the one the control socket
/// adds of its own (`control_notice`), for clients that check a kind
/// before they wait for it.
pub const KINDS: &[&str] = &[
    "server_notice",
    "running",
    "watch_notice",
    "change_detected",
    "build_skipped",
    "rebuild_requested",
    "build_started",
    "build_succeeded",
    "build_failed",
    "build_superseded",
    "build_cancelled",
    "written_by_build",
    "kept_discarding",
    "unchanged",
    "swap_skipped",
    "swapped",
    "rejected",
    "trials_off",
    "state",
    "fault",
    "layout_notice",
    "state_saved",
    "plugin_log",
    "dangling",
    "static_data",
    "process_state_repaired",
    "worker_stopped",
    "process_drift",
    "field_set",
    "rolled_back",
    "paused",
    "resumed",
    "stepped",
    "kept_worker_died",
    "worker_stopped_at_exit",
    "plugin_thread_stopped",
    "handlers_reasserted",
    "first_tick",
    "stayed_mapped",
    "pinned_warning",
    "kept_for_threads",
    "pinned_at_exit",
    "stalled",
    "tick_stats",
    "stopping",
    "save_failed",
    "save_recovered",
    "exited",
    "control_notice",
    "rewound",
    "loop_set",
    "replayed",
];

impl Event {
    /// The event's kind, as the control channel names it (`swapped`,
    /// `fault`, `build_failed`): one word per variant, stable across
    /// releases of one protocol version.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ServerNotice(..) => "server_notice",
            Event::Running { .. } => "running",
            Event::WatchNotice(..) => "watch_notice",
            Event::ChangeDetected { .. } => "change_detected",
            Event::BuildSkipped { .. } => "build_skipped",
            Event::RebuildRequested => "rebuild_requested",
            Event::BuildStarted { .. } => "build_started",
            Event::BuildSucceeded { .. } => "build_succeeded",
            Event::BuildFailed(..) => "build_failed",
            Event::BuildSuperseded { .. } => "build_superseded",
            Event::BuildCancelled { .. } => "build_cancelled",
            Event::WrittenByBuild { .. } => "written_by_build",
            Event::KeptDiscarding { .. } => "kept_discarding",
            Event::Unchanged { .. } => "unchanged",
            Event::Swapped(..) => "swapped",
            Event::SwapSkipped { .. } => "swap_skipped",
            Event::Rejected { .. } => "rejected",
            Event::TrialsOff(..) => "trials_off",
            Event::State(..) => "state",
            Event::Fault(..) => "fault",
            Event::LayoutNotice(..) => "layout_notice",
            Event::StateSaved { .. } => "state_saved",
            Event::PluginLog(..) => "plugin_log",
            Event::Dangling { .. } => "dangling",
            Event::StaticData { .. } => "static_data",
            Event::ProcessStateRepaired { .. } => "process_state_repaired",
            Event::WorkerStopped { .. } => "worker_stopped",
            Event::ProcessDrift { .. } => "process_drift",
            Event::FieldSet { .. } => "field_set",
            Event::RolledBackOnRequest { .. } => "rolled_back",
            Event::Rewound { .. } => "rewound",
            Event::LoopSet { .. } => "loop_set",
            Event::Replayed(..) => "replayed",
            Event::Paused { .. } => "paused",
            Event::Resumed { .. } => "resumed",
            Event::Stepped { .. } => "stepped",
            Event::KeptWorkerDied { .. } => "kept_worker_died",
            Event::WorkerStoppedAtExit { .. } => "worker_stopped_at_exit",
            Event::PluginThreadStopped { .. } => "plugin_thread_stopped",
            Event::HandlersReasserted { .. } => "handlers_reasserted",
            Event::FirstTick { .. } => "first_tick",
            Event::StayedMapped { .. } => "stayed_mapped",
            Event::PinnedWarning { .. } => "pinned_warning",
            Event::KeptForThreads { .. } => "kept_for_threads",
            Event::PinnedAtExit { .. } => "pinned_at_exit",
            Event::Stalled { .. } => "stalled",
            Event::TickStats(..) => "tick_stats",
            Event::Stopping { .. } => "stopping",
            Event::SaveFailed { .. } => "save_failed",
            Event::SaveRecovered { .. } => "save_recovered",
            Event::Exited { .. } => "exited",
        }
    }
}

/// Where a `loop` is: its window and the pass that begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopPass {
    pub from: u64,
    pub to: u64,
    pub pass: u64,
}

#[derive(Clone, Debug)]
pub struct FaultReport {
    pub version: u64,
    /// Which plugin function: "init", "tick", "shutdown", "on_reload", ...
    pub call: &'static str,
    /// Ticks completed when it happened.
    pub tick: u64,
    /// "SIGSEGV (address not mapped) at 0x0", "timeout after 1000 ms", ...
    pub cause: String,
    /// The nearest symbol to the faulting instruction, when known.
    pub symbol: Option<String>,
    pub recovery: Recovery,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// An earlier version that ran without fault took over.
    RolledBack {
        to: u64,
        restored_to_tick: Option<u64>,
        /// How the state was carried back to that version's layout, when
        /// it differs (`-lives`).
        carried_back: Option<String>,
    },
    /// No earlier version, or none that can take the state: ticking paused
    /// until the next good build.
    Paused {
        restored_to_tick: Option<u64>,
        /// The earlier version that could not take the state, and why.
        cannot_roll_back: Option<(u64, String)>,
        /// A version kept on disk (not loaded) that is loaded again to take
        /// over, when there is one.
        from_disk: Option<u64>,
    },
    /// A hook of the version being replaced faulted; the swap went ahead.
    SwapWentAhead,
    /// The new version's `migrate` hook faulted or refused: it was not
    /// swapped in, and the running version and its state stay.
    Refused { keeping: Option<u64> },
    /// The fault was in `describe`: the state is shown by field from now
    /// on, and `describe` is not called again for that version.
    DescribeOff,
    /// A destructor of a version being retired faulted; the rest of its
    /// destructors were skipped and it was unloaded anyway.
    Unloaded,
    /// The fault was in `shutdown`; the state is put back as it was before
    /// `shutdown` (that is what gets saved), and the host exits as it was
    /// going to.
    Exiting { restored_to_tick: Option<u64> },
}

#[derive(Clone, Debug)]
pub struct BuildFailure {
    pub duration: Duration,
    /// "exit status 1", "killed by signal 9", ...
    pub status: String,
    /// The first line that looks like an error, for the one-line summary.
    pub first_error: String,
    /// Everything the build printed, stdout and stderr interleaved.
    pub output: String,
    /// The version that keeps running, if any.
    pub keeping: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Swap {
    pub version: u64,
    /// The library's file name as the user knows it (not the shadow copy's).
    pub lib_name: String,
    pub api_version: i32,
    /// From the build command's exit to the new table being installed.
    pub since_build_exit: Duration,
    /// True for the very first load, whose `init` has just run.
    pub first_load: bool,
    /// How the state was carried over, if it had to be: `+lives -bonus`.
    pub migrated: Option<String>,
    /// For a migration worked out ahead of the swap (a large state): the
    /// old state's pages the running version changed meanwhile that the
    /// swap itself carried; `None` when the swap carried it all.
    pub migration_pages_at_swap: Option<usize>,
    /// The worker process running this version, in isolated mode (where a
    /// debugger attaches).
    pub worker_pid: Option<u32>,
}

/// When a state report was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateMoment {
    /// After `init`, before the first tick.
    Initial,
    /// The first version started from the state file instead of `init`.
    Restored,
    /// Right after a swap: the new code sees exactly these bytes.
    Preserved,
    /// Right after a swap that migrated the state to a new layout.
    Migrated,
    /// Every `--state-every N` ticks.
    Periodic,
    /// Asked for (a `ReportState` command, SIGUSR2).
    Requested,
    /// After `shutdown`, at exit.
    Final,
    /// No plugin was ever loaded, so there is no state.
    Absent,
}

#[derive(Clone, Debug)]
pub struct StateReport {
    pub moment: StateMoment,
    /// For a restored state: where from, and how it was carried over.
    pub note: Option<String>,
    pub size: usize,
    /// Ticks run so far.
    pub tick: u64,
    /// The running version, or while ticking is paused (`paused`), the
    /// version whose state it is.
    pub version: u64,
    /// No version runs: the last one faulted with none to roll back to.
    pub paused: bool,
    /// The first bytes of the state, so that small states can be read off a log.
    pub head: Vec<u8>,
    /// The state by field (`score=10 time=1.00`) or the plugin's own
    /// description, when known.
    pub fields: Option<String>,
    /// Every field's value as JSON, by path, for a report on request
    /// (`state`) when the layout is known; none otherwise.
    pub values: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug)]
pub struct TickStats {
    pub ticks: u64,
    pub period: Duration,
    /// From the first tick's deadline to the last tick's start.
    pub elapsed: Duration,
    /// The latest any tick started after its deadline.
    pub max_late: Duration,
    pub skipped: u64,
}
