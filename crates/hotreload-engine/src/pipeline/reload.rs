//! The reload stage: drives one change through build → shadow copy →
//! precheck → load → check, and hands a finished version to the tick loop.
//!
//! It runs on its own thread as a state machine over one inbox (watch
//! batches, build exits, retired versions, commands), so nothing in it ever
//! blocks the tick loop and every decision about builds is made in one place:
//! - a build runs at most once at a time;
//! - a change during a build lets that build finish, discards its output
//!   (it started before the change), and builds exactly once more; an event
//!   during a build whose file turns out unchanged discards nothing
//!   ([`stale`]);
//! - a lone save's build and trial run ahead, while its settle passes, and
//!   are acted on only once the settle confirms it ([`ahead`]);
//! - a batch whose files kept their mtime, size and inode builds nothing;
//! - files that change during every build are the build's own: after a few
//!   discards in a row they are named and ignored;
//! - the exit code is the outcome of the last attempt.

mod ahead;
mod gather;
mod kept;
mod prepare;
mod rollback;
mod save;
mod stale;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use crate::command::Command;
use crate::config::Config;
use crate::event::{BuildFailure, Event, EventSink, FaultReport, Recovery};
use crate::outcome::{Outcome, Rejection, exit_code};
use crate::pipeline::build::{BuildResult, RunningBuild};
use crate::plugin::Plugin;
use crate::plugin::shadow::ShadowDir;
use crate::plugin::unload::{Holder, Unloaded, Unloading, unload};
use crate::state::claim::StateClaim;
use crate::state::forced::LastGood;
use crate::state::persist::Saved;
use crate::tick::{TickInput, TickOutput};
use crate::watch::fingerprint::Fingerprints;
use crate::watch::scope::Scope;
use crate::watch::{Batch, ChangeJournal, Watch, WatchOutput};

use prepare::{Prepared, StateSide, hash_bytes};
use stale::{Baseline, Streak, StreakVerdict};

/// The longest a build's end waits for the watcher to note what was
/// changed before it (usually well under a millisecond).
const CATCH_UP: Duration = Duration::from_millis(500);

/// The largest build output read: far beyond any plugin, and a bound on
/// what a mistaken `--lib` (a disk image, a log) can make the host read.
const LIBRARY_LIMIT: u64 = 4 << 30;

/// After this many retired versions stayed mapped, and every this many more,
/// a warning says their memory is only given back by a restart.
pub const PINNED_WARNING: usize = 8;

/// Everything the reload thread is told.
#[allow(
    clippy::large_enum_variant,
    reason = "a few messages per reload; boxing would buy nothing"
)]
pub enum Inbox {
    Watch(WatchOutput),
    BuildExited(BuildResult),
    Tick(TickOutput),
    Command(Command),
    /// Roll back to `to`, loading it again from its kept copy when it is
    /// no longer loaded.
    RollBack {
        to: u64,
        reply: crate::tick::RollbackReply,
    },
}

pub struct Reloader {
    config: Config,
    lib_name: String,
    events: EventSink,
    tick: Sender<TickInput>,
    scope: Scope,
    journal: ChangeJournal,
    fingerprints: Fingerprints,
    shadow: ShadowDir,
    /// Kept alive for as long as the reload thread runs.
    watch: Watch,
    /// This server's hold on the state file, released when it stops.
    _claim: Option<StateClaim>,
    /// Told when the save at exit is done, so a forced exit does not
    /// overwrite it with an older state.
    last_good: Option<LastGood>,
    /// Large buffers the last swap let go of, for the next migration.
    spares: crate::state::release::Spares,
    /// The state as the last trial got it, kept for the next one to get
    /// with only what changed since rewritten.
    trial_image: std::sync::Mutex<crate::plugin::sealed::TrialImage>,
    build: Option<InFlight>,
    /// A rebuild was asked for while building: build again once the current
    /// one exits.
    rebuild_requested: bool,
    /// A build's output was discarded as stale for these files, and their
    /// batch is still in the debouncer: build on that batch whatever it
    /// contains, standing for the discarded build (a reload attempt or not).
    awaiting_batch: Option<(Vec<PathBuf>, bool)>,
    /// Builds discarded in a row, and for which files.
    discards: Streak,
    /// Serial number for shadow copies (every build that produced a file).
    copies: u64,
    /// The last version number handed to the tick loop.
    version: u64,
    /// What the state is now: its size, version and layout (the running
    /// version's, or the last one's while ticking is paused).
    state_side: Option<StateSide>,
    /// What each loaded version knows of its state.
    sides: std::collections::HashMap<u64, StateSide>,
    /// The version the tick loop runs now (after a rollback, an earlier one).
    running: Option<u64>,
    /// The build that faulted last, by the hash of its bytes, with what to
    /// say about it. A build with the very same bytes (only a comment or a
    /// timestamp changed) would fault again on the same state, so it is
    /// refused until a different build has gone live.
    known_bad: Option<(u64, String)>,
    said_trials_off: bool,
    /// The segments of the build being prepared, from `precheck`.
    spans: Vec<(u64, u64)>,
    /// The saved state the first version starts from, and where it was read.
    restored: Option<(Saved, std::path::PathBuf)>,
    /// The last save failed: the state on disk is older than the host's
    /// (and if that is still so at exit, the exit code says so). Also what
    /// keeps a failing disk from being reported at every save.
    unsaved: bool,
    /// What was last said about where the layout comes from.
    layout_said: String,
    /// What was last said about `--state-fields` patterns that select nothing.
    fields_said: String,
    /// The plugin's writable statics last warned about.
    statics_said: Vec<(String, u64)>,
    /// The hash of every loaded version's bytes, to recognise a rebuild that
    /// changed nothing.
    hashes: std::collections::HashMap<u64, u64>,
    attempts: u64,
    /// Retired versions that `dlclose` could not unmap, with their bytes.
    pinned: Vec<(u64, u64)>,
    /// Retired versions not closed because threads plugin code started
    /// still run their code; closed once those have ended, never while.
    held_for_threads: Vec<Plugin>,
    last_outcome: Option<Outcome>,
    stopping: bool,
    /// The same, for isolated workers waited for while stopped (a debugger,
    /// SIGSTOP): a stop request ends the wait.
    stop_requested: Arc<AtomicBool>,
    board: Option<Arc<crate::control::status::StatusBoard>>,
    /// The good versions' libraries kept on disk for `rollback`.
    kept: kept::KeptCopies,
    /// A kept version is being loaded again: what is said of a new build's
    /// layout is not said of it.
    bringing_back: bool,
}

/// The build command as it runs, one at a time.
struct InFlight {
    run: RunningBuild,
    /// The start-up build is not a reload attempt.
    counts_as_attempt: bool,
    /// The sources as the build found them.
    baseline: Baseline,
    /// The files of the batches delivered after this build started.
    batched: std::collections::BTreeSet<PathBuf>,
    /// When it started, to tell a long build from a short one.
    started: Instant,
    /// It was told to stop for a newer change.
    cancelled: bool,
    /// Started for a batch handed on ahead of its settle, and not
    /// confirmed yet (`None` once confirmed, and for every other build).
    ahead: Option<ahead::Ahead>,
}

/// A real change during a build that has run this long stops it and builds
/// again (a hung build would otherwise hold every change back until its
/// timeout); a shorter one is let finish, which is sooner.
const CANCEL_AFTER: Duration = Duration::from_secs(2);
/// How long a cancelled build gets to clean up after SIGTERM.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

impl Reloader {
    pub fn new(
        config: Config,
        events: EventSink,
        tick: Sender<TickInput>,
        scope: Scope,
        journal: ChangeJournal,
        shadow: ShadowDir,
        watch: Watch,
    ) -> Reloader {
        let lib_name = config
            .lib
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        let fingerprints = Fingerprints::of_files(scope.files());
        let config_keep_on_disk = config.keep_on_disk;
        Reloader {
            config,
            lib_name,
            events,
            tick,
            scope,
            journal,
            fingerprints,
            shadow,
            watch,
            _claim: None,
            last_good: None,
            spares: Default::default(),
            trial_image: Default::default(),
            build: None,
            rebuild_requested: false,
            awaiting_batch: None,
            discards: Streak::default(),
            copies: 0,
            version: 0,
            state_side: None,
            sides: Default::default(),
            running: None,
            known_bad: None,
            said_trials_off: false,
            spans: Vec::new(),
            restored: None,
            unsaved: false,
            layout_said: String::new(),
            fields_said: String::new(),
            statics_said: Vec::new(),
            hashes: Default::default(),
            attempts: 0,
            pinned: Vec::new(),
            held_for_threads: Vec::new(),
            last_outcome: None,
            stopping: false,
            stop_requested: Arc::new(AtomicBool::new(false)),
            board: None,
            kept: kept::KeptCopies::new(config_keep_on_disk),
            bringing_back: false,
        }
    }

    /// The first version will start from `saved` instead of a fresh state
    /// (no `init`), migrated to its layout if that changed.
    pub fn restore_from(&mut self, saved: Saved, path: std::path::PathBuf) {
        self.restored = Some((saved, path));
    }

    /// Keeps `claim` until the reload thread ends: the state file stays this
    /// server's until its last save is done.
    /// Where `status` reads the last reload's outcome and the stop.
    pub fn report_to(&mut self, board: Arc<crate::control::status::StatusBoard>) {
        self.board = Some(board);
    }

    fn set_outcome(&mut self, outcome: Outcome) {
        if let Some(board) = &self.board {
            board.set_last_reload(match &outcome {
                // The first version is loaded, not swapped in.
                Outcome::Swapped if self.version == 1 => "loaded".to_owned(),
                Outcome::Swapped => "swapped".to_owned(),
                Outcome::Faulted => "faulted".to_owned(),
                Outcome::BuildFailed => "build failed".to_owned(),
                Outcome::Rejected(why) => format!("rejected: {why}"),
            });
        }
        self.last_outcome = Some(outcome);
    }

    pub fn hold(&mut self, claim: Option<StateClaim>, last_good: LastGood) {
        self._claim = claim;
        self.last_good = Some(last_good);
    }

    /// Runs until the tick loop has finished; returns the exit code.
    pub fn run(mut self, inbox: Receiver<Inbox>, me: Sender<Inbox>) -> i32 {
        // `logic_get_api` runs on this thread, under the crash guard.
        // Kept until this thread ends; dropping it frees the alternate stack.
        let _thread_guard = match crate::guard::prepare_thread() {
            Ok(g) => Some(g),
            Err(why) => {
                self.emit(Event::WatchNotice(format!(
                    "plugin code cannot run safely: {why}"
                )));
                self.stop();
                None
            }
        };
        // Constructors, `logic_get_api` and destructors run on this thread
        // too: one that hangs is interrupted like a hanging tick.
        let _load_watch =
            match crate::plugin::load::watch_loads(self.config.effective_call_timeout()) {
                Ok(w) => Some(w),
                Err(why) => {
                    self.emit(Event::WatchNotice(format!(
                        "plugin code that hangs while a library loads cannot be interrupted: {why}"
                    )));
                    None
                }
            };
        // The library on disk may be stale: always build once at start.
        self.start_build(&me, false);
        // Messages taken off the inbox while gathering batches; handled next.
        let mut held = std::collections::VecDeque::new();
        while let Some(msg) = held.pop_front().or_else(|| inbox.recv().ok()) {
            match msg {
                Inbox::Watch(WatchOutput::Notice(text)) => self.emit(Event::WatchNotice(text)),
                Inbox::Watch(WatchOutput::Batch(batch)) => {
                    let batch = gather::batches(batch, &inbox, &mut held);
                    self.on_batch(batch, &me)
                }
                Inbox::Watch(WatchOutput::Ahead(batch)) => self.on_ahead(batch, &me),
                Inbox::Watch(WatchOutput::CalledOff) => self.on_called_off(),
                Inbox::BuildExited(result) => self.on_build_exited(result, &me),
                Inbox::Tick(TickOutput::Save(save)) => self.save(save),
                Inbox::Tick(TickOutput::SaveDue) => self.save_due(),
                Inbox::Tick(TickOutput::Declined {
                    plugin,
                    running,
                    reason,
                }) => self.on_declined(plugin, running, reason),
                Inbox::Tick(TickOutput::Retired(plugin)) => self.retire(plugin),
                Inbox::Tick(TickOutput::CarryBack(ask)) => self.carry_back(ask),
                Inbox::Tick(TickOutput::Discard(memory)) => {
                    memory.free_keeping_spares(&self.spares)
                }
                Inbox::Tick(TickOutput::Skipped { plugin, by }) => {
                    if let Some(board) = &self.board {
                        board.set_version_outcome(
                            plugin.version(),
                            format!("skipped: v{by} was ready before it was installed"),
                        );
                        board.set_version_outcome(by, "live".into());
                    }
                    // It never ran: not a version to roll back to.
                    self.kept.forget(plugin.version());
                    self.publish_on_disk();
                    self.retire(plugin);
                }
                Inbox::Tick(TickOutput::Faulted {
                    plugin,
                    running,
                    cause,
                    blame_build,
                }) => self.on_fault(plugin, running, cause, blame_build),
                Inbox::Tick(TickOutput::RolledBack { running }) => {
                    if let Some(board) = &self.board {
                        board.set_version_outcome(running, "live".into());
                    }
                    self.running = Some(running);
                    if let Some(side) = self.sides.get(&running) {
                        self.state_side = Some(side.clone());
                    }
                }
                Inbox::Tick(TickOutput::Finished { shutdown_faulted }) => {
                    if shutdown_faulted {
                        self.set_outcome(Outcome::Faulted);
                    }
                    break;
                }
                Inbox::Command(Command::Stop(reason)) => {
                    if !self.stopping {
                        self.emit(Event::Stopping { reason });
                    }
                    self.stop();
                }
                Inbox::Command(Command::Rebuild) => {
                    if !self.stopping {
                        self.emit(Event::RebuildRequested);
                    }
                    self.request_build(&me);
                }
                Inbox::Command(Command::ReportState) => {
                    let _ = self.tick.send(TickInput::Report);
                }
                Inbox::Command(Command::Pause) => {
                    let _ = self.tick.send(TickInput::Pause);
                }
                Inbox::Command(Command::Resume) => {
                    let _ = self.tick.send(TickInput::Resume);
                }
                Inbox::Command(Command::Step(n)) => {
                    let _ = self.tick.send(TickInput::Step(n));
                }
                Inbox::Command(Command::Save) => {
                    let _ = self.tick.send(TickInput::Save);
                }
                Inbox::RollBack { to, reply } => self.on_rollback(to, reply),
            }
        }
        if let Some(b) = self.build.take() {
            b.run.kill();
        }
        let code = if self.unsaved {
            // Losing the session's state outweighs how the last reload went.
            exit_code::STATE_NOT_SAVED
        } else {
            self.last_outcome
                .as_ref()
                .map_or(exit_code::NOTHING_LOADED, Outcome::exit_code)
        };
        // What threads still run stays mapped until the process is gone.
        for kept in std::mem::take(&mut self.held_for_threads) {
            kept.leak();
        }
        if !self.pinned.is_empty() {
            self.emit(Event::PinnedAtExit {
                pinned: self.pinned.len(),
                pinned_bytes: self.pinned.iter().map(|(_, b)| b).sum(),
            });
        }
        self.emit(Event::Exited { code });
        code
    }

    fn emit(&self, event: Event) {
        (self.events)(event);
    }

    fn on_batch(&mut self, mut batch: Batch, me: &Sender<Inbox>) {
        if self.stopping {
            return;
        }
        // The rules may have changed since the watcher noted these (a build
        // tree found, files found to be the build's own): they said so.
        batch.paths.retain(|p| self.scope.contains(p));
        let forced = self.awaiting_batch.take();
        if batch.paths.is_empty() && !batch.rescan && forced.is_none() {
            self.call_off_ahead();
            return;
        }
        if let Some(b) = &mut self.build {
            b.batched.extend(batch.paths.iter().cloned());
            if batch.rescan {
                b.baseline.keep_all(&self.fingerprints);
            } else {
                b.baseline.keep(&batch.paths, &self.fingerprints);
            }
        }
        let changed = if batch.rescan {
            self.fingerprints.replace_all(self.scope.files())
        } else {
            self.fingerprints.refresh(&batch.paths)
        };
        if changed.is_empty() && !batch.rescan && forced.is_none() {
            self.call_off_ahead();
            self.emit(Event::BuildSkipped {
                paths: batch.paths.into_iter().collect(),
            });
            return;
        }
        let counts_as_attempt = forced.as_ref().is_none_or(|(_, counts)| *counts);
        let paths: Vec<PathBuf> = match (changed.is_empty(), batch.paths.is_empty()) {
            (false, _) => changed,
            (true, false) => batch.paths.into_iter().collect(),
            (true, true) => forced.map(|(stale, _)| stale).unwrap_or_default(),
        };
        self.emit(Event::ChangeDetected {
            paths,
            rescan: batch.rescan,
        });
        if self.confirm_ahead(counts_as_attempt, me) {
            return;
        }
        // A running build is judged when it exits, by what changed meanwhile;
        // one that has run long is stopped now instead (its output would be
        // stale anyway), so a hung build never holds a change back.
        match &mut self.build {
            None => self.start_build(me, counts_as_attempt),
            Some(build) if !build.cancelled && build.started.elapsed() >= CANCEL_AFTER => {
                build.cancelled = true;
                build.run.cancel(CANCEL_GRACE);
                let ran = build.started.elapsed();
                self.emit(Event::BuildCancelled { ran });
            }
            Some(_) => {}
        }
    }

    fn request_build(&mut self, me: &Sender<Inbox>) {
        if self.stopping {
            return;
        }
        if self.build.is_some() {
            self.rebuild_requested = true;
        } else {
            self.start_build(me, true);
        }
    }

    fn start_build(&mut self, me: &Sender<Inbox>, counts_as_attempt: bool) {
        self.spawn_build(me, counts_as_attempt, false);
    }

    /// Starts the build command; `ahead`: for a batch not yet confirmed,
    /// which says nothing until it is (see [`ahead`]).
    fn spawn_build(&mut self, me: &Sender<Inbox>, counts_as_attempt: bool, ahead: bool) {
        let me = me.clone();
        // A build needs descriptors, processes and the working folder as the
        // server had them.
        settle_process(&self.events, self.running, "before a build");
        // Before the command runs, so that nothing it reads is missed.
        let baseline = Baseline::at_start(&self.journal, &self.scope, &self.fingerprints);
        if !ahead {
            self.emit(Event::BuildStarted { ahead: None });
        }
        let timeout = self.config.build_timeout;
        let spawned = RunningBuild::spawn(
            &self.config.build,
            &self.config.build_dir,
            timeout,
            move |result| {
                let _ = me.send(Inbox::BuildExited(result));
            },
        );
        // While the build runs: the file its copy will be written to.
        self.shadow.make_ready(self.copies + 1, &self.lib_name);
        match spawned {
            Ok(run) => {
                self.build = Some(InFlight {
                    run,
                    counts_as_attempt,
                    baseline,
                    batched: Default::default(),
                    started: Instant::now(),
                    cancelled: false,
                    ahead: ahead.then_some(ahead::Ahead::Unconfirmed { held: None }),
                })
            }
            // The batch, once confirmed, builds as usual, and says so then.
            Err(_) if ahead => {}
            Err(why) => {
                self.emit(Event::BuildFailed(BuildFailure {
                    duration: Duration::ZERO,
                    status: "not started".into(),
                    first_error: why.clone(),
                    output: why,
                    keeping: self.running,
                }));
                self.record(Outcome::BuildFailed, counts_as_attempt);
            }
        }
    }

    fn on_build_exited(&mut self, result: BuildResult, me: &Sender<Inbox>) {
        if self.stopping {
            self.build = None;
            return;
        }
        let Some(result) = self.ahead_exited(result, me) else {
            return;
        };
        let Some(build) = self.build.take() else {
            return;
        };
        // The events of the build's last writes may still be on their way:
        // past the wait, a late one is handled as a change after the build.
        // The catch-up's marker travels while the library is read, checked
        // and copied (saying nothing yet): the stale check then finds it
        // back, and only then is anything said, tried or loaded.
        let caught_up = self.watch.ask_catch_up();
        let tried = (result.succeeded() && !self.rebuild_requested).then(|| self.try_ahead(false));
        caught_up.wait(CATCH_UP);
        self.finish_build(build, result, tried, me);
    }

    /// Acts on a build's result: discards it if a source changed while it
    /// ran, reports a failure, or prepares the library and hands it to the
    /// tick loop. `tried`: what was done already (the library read, copied
    /// and tried), saying nothing. The watcher has noted every change made
    /// before the build's exit: [`Reloader::on_build_exited`] caught up with
    /// it, and for a build ahead, the look that confirmed its batch did.
    fn finish_build(
        &mut self,
        build: InFlight,
        result: BuildResult,
        tried: Option<ahead::TriedAhead>,
        me: &Sender<Inbox>,
    ) {
        let counts = build.counts_as_attempt;
        // "Load only from a build that started after the last change."
        let stale = self.stale_sources(&build);
        if !stale.is_empty() || std::mem::take(&mut self.rebuild_requested) {
            let batched = stale.iter().all(|p| build.batched.contains(p));
            self.emit(Event::BuildSuperseded {
                paths: stale.clone(),
            });
            if batched {
                self.start_build(me, counts);
            } else {
                // A change is still in its quiet period; its batch builds.
                self.awaiting_batch = Some((stale, counts));
            }
            return;
        }
        self.discards.reset();
        if !result.succeeded() {
            self.emit(Event::BuildFailed(BuildFailure {
                duration: result.duration(),
                status: result.status_text(),
                first_error: result.first_error_line(),
                output: result.output,
                keeping: self.running,
            }));
            self.record(Outcome::BuildFailed, counts);
            return;
        }
        self.emit(Event::BuildSucceeded {
            duration: result.duration(),
            output: result.output.clone(),
        });
        let (read, tried) = match tried {
            Some(ahead) => (ahead.read, ahead.tried),
            None => (self.read_library(), None),
        };
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                let reason = Rejection::NotLoadable(format!(
                    "expected the build to write {}, but it cannot be read: {e}",
                    self.config.lib.display()
                ));
                self.emit(Event::Rejected {
                    reason: reason.clone(),
                    keeping: self.running,
                    detail: String::new(),
                });
                self.record(Outcome::Rejected(reason), counts);
                return;
            }
        };
        let build_hash = hash_bytes(&bytes);
        if let Some(version) = self
            .running
            .filter(|v| self.hashes.get(v) == Some(&build_hash))
        {
            // `make` with nothing to do, a comment-only change without debug
            // info: the running code is already what the sources build.
            self.emit(Event::Unchanged { version });
            self.record(Outcome::Swapped, counts);
            if let Some(board) = &self.board {
                board.set_last_reload(format!("unchanged: the build is byte for byte v{version}"));
            }
            return;
        }
        match self.prepare(&bytes, build_hash, tried) {
            Ok(Prepared {
                plugin,
                fresh_state,
                migration,
            }) => {
                self.state_side = self.sides.get(&plugin.version()).cloned();
                self.running = Some(plugin.version());
                self.known_bad = None;
                self.hashes.insert(plugin.version(), build_hash);
                let (version, tables) = (plugin.version(), plugin.table_offsets());
                let sent = self.tick.send(TickInput::Swap {
                    plugin,
                    fresh_state,
                    migration,
                    build_exited_at: Some(result.exited_at),
                });
                if sent.is_ok() {
                    // Only the warning needs this: after the hand-over, so
                    // it costs the swap nothing.
                    self.warn_statics(&bytes, &tables, version);
                    let facts = self.build_facts(&result);
                    if let Some(board) = &self.board {
                        board.record_build(Some(version), build_hash, "live".into(), facts);
                    }
                    self.keep_copy(version, &bytes);
                    self.record(Outcome::Swapped, counts);
                }
            }
            Err((reason, detail)) => {
                let facts = self.build_facts(&result);
                if let Some(board) = &self.board {
                    board.record_build(None, build_hash, format!("rejected: {reason}"), facts);
                }
                let keeping = self.running;
                self.emit(Event::Rejected {
                    reason: reason.clone(),
                    keeping,
                    detail,
                });
                self.record(Outcome::Rejected(reason), counts);
            }
        }
    }

    /// What `versions` says of a build besides its outcome. The sources are
    /// read after the swap is handed over, so it costs the swap nothing;
    /// they are what the build read, as no change came during it.
    fn build_facts(&self, result: &BuildResult) -> crate::control::status::BuildFacts {
        crate::control::status::BuildFacts {
            build_ms: u64::try_from(result.duration().as_millis()).unwrap_or(u64::MAX),
            // The files the watcher already knows, not a new walk of the
            // watched folders.
            sources: crate::watch::fingerprint::content_digest(
                &self
                    .fingerprints
                    .iter()
                    .filter(|(path, fp)| {
                        **fp != crate::watch::fingerprint::Fingerprint::Missing
                            && self.scope.contains(path)
                    })
                    .map(|(path, _)| path.clone())
                    .collect::<Vec<_>>(),
            ),
        }
    }

    /// The sources that changed while `build` ran, less those that turn
    /// out to be written by the build itself (said once, then ignored).
    fn stale_sources(&mut self, build: &InFlight) -> Vec<PathBuf> {
        let mut stale =
            build
                .baseline
                .changed_during(&self.journal, &self.scope, &self.fingerprints);
        if stale.is_empty() {
            return stale;
        }
        let scope = &self.scope;
        match self.discards.discarded(&stale, |p| scope.is_target(p)) {
            StreakVerdict::Going => {}
            StreakVerdict::WrittenByBuild(files) => {
                self.scope.add_written_by_build(&files);
                stale.retain(|p| !files.contains(p));
                self.emit(Event::WrittenByBuild {
                    ignore_pattern: self.scope.ignore_pattern_for(&files),
                    paths: files,
                    builds: Streak::LIMIT,
                });
            }
            StreakVerdict::Unexplained(paths) => self.emit(Event::KeptDiscarding {
                paths,
                builds: Streak::LIMIT,
            }),
        }
        stale
    }

    fn record(&mut self, outcome: Outcome, counts_as_attempt: bool) {
        let failed = outcome != Outcome::Swapped;
        self.set_outcome(outcome);
        if failed {
            self.stop_if_nothing_can_tick();
        }
        if counts_as_attempt {
            self.attempts += 1;
            if self
                .config
                .max_reloads
                .is_some_and(|max| self.attempts >= max)
            {
                self.stop();
            }
        }
    }

    /// A version whose `migrate` hook refused the state never went live:
    /// a rejection like any other (exit code 10), not a fault.
    fn on_declined(&mut self, plugin: Plugin, running: Option<u64>, reason: String) {
        self.retire(plugin);
        self.running = running;
        // The state is the running version's, or none for a first version.
        self.state_side = self.running.and_then(|v| self.sides.get(&v)).cloned();
        let reason = Rejection::StateChange(reason);
        self.emit(Event::Rejected {
            reason: reason.clone(),
            keeping: self.running,
            detail: String::new(),
        });
        self.set_outcome(Outcome::Rejected(reason));
        self.stop_if_nothing_can_tick();
    }

    /// A run limited by `--ticks` or `--reloads` is a script: it must never
    /// sit waiting for a change nobody will make. When nothing can tick
    /// (no version ever loaded, or with `--ticks` alone the only version
    /// faulted) and no build is coming, it stops with the code of what went
    /// wrong, saying why.
    fn stop_if_nothing_can_tick(&mut self) {
        let (ticks, reloads) = (self.config.max_ticks, self.config.max_reloads);
        if self.stopping
            || self.running.is_some()
            || self.build.is_some()
            || self.rebuild_requested
            || self.awaiting_batch.is_some()
        {
            return;
        }
        let never_loaded = self.version == 0;
        let limit = match (ticks, reloads) {
            (_, Some(n)) if never_loaded => format!("--reloads {n}"),
            (Some(n), None) => format!("--ticks {n}"),
            _ => return,
        };
        let why = if never_loaded {
            "no version could be loaded"
        } else {
            "no version is left to tick"
        };
        self.emit(Event::ServerNotice(format!(
            "{why}; stopping, because a run with {limit} does not wait for a change"
        )));
        self.stop();
    }

    fn on_fault(&mut self, plugin: Plugin, running: Option<u64>, cause: String, blame_build: bool) {
        if let Some(board) = &self.board {
            board.set_version_outcome(plugin.version(), format!("faulted: {cause}"));
            if let Some(v) = running {
                board.set_version_outcome(v, "live".into());
            }
        }
        self.running = running;
        // Rolling back carries the state back to that version's layout;
        // pausing keeps it as it is.
        if let Some(side) = running.and_then(|v| self.sides.get(&v)) {
            self.state_side = Some(side.clone());
        }
        if blame_build {
            self.known_bad = Some((
                plugin.build_hash(),
                format!("v{} ({cause})", plugin.version()),
            ));
        }
        self.set_outcome(Outcome::Faulted);
        self.kept.forget(plugin.version());
        self.publish_on_disk();
        self.retire(plugin);
        if running.is_none() && self.take_over_from_disk() {
            return;
        }
        self.stop_if_nothing_can_tick();
    }

    fn retire(&mut self, plugin: Plugin) {
        let version = plugin.version();
        self.hashes.remove(&version);
        self.sides.remove(&version);
        // Versions kept for their threads go once the threads have ended.
        let held = std::mem::take(&mut self.held_for_threads);
        for kept in held {
            if threads_running(&kept).1 == 0 {
                self.close(kept);
            } else {
                self.held_for_threads.push(kept);
            }
        }
        self.close(plugin);
    }

    /// Unloads `plugin` ([`crate::plugin::unload`]), saying what happened.
    fn close(&mut self, plugin: Plugin) {
        let version = plugin.version();
        let span_len = plugin.span().map_or(0, |(a, b)| (b - a) as u64);
        let events = Arc::clone(&self.events);
        let outcome = unload(plugin, || {
            // Its destructors may have changed what the server relies on.
            settle_process(&events, Some(version), "in a destructor");
        });
        let (done, closed) = match outcome {
            Unloaded::Closed(done, closed) => (done, closed),
            Unloaded::Kept(plugin, done, holder) => {
                self.said_unloading(version, &done, holder == Holder::TimerThread);
                match holder {
                    // Unmapping code a thread still runs would kill the host.
                    Holder::Threads { tids, count } => {
                        self.emit(Event::KeptForThreads {
                            version,
                            tids,
                            count,
                        });
                        self.held_for_threads.push(plugin);
                    }
                    Holder::TimerThread => {
                        self.pinned.push((version, span_len));
                        plugin.leak();
                    }
                }
                return;
            }
        };
        self.said_unloading(version, &done, false);
        if let Some(cause) = closed.destructor_fault {
            self.destructor_faulted(version, cause);
        }
        if let Some(note) = closed.note {
            self.emit(Event::ServerNotice(format!("v{version} {note}")));
        }
        if let Some(err) = closed.close_error {
            self.emit(Event::WatchNotice(format!(
                "dlclose of v{version} failed: {err}"
            )));
        }
        if closed.still_mapped {
            self.pinned.push((version, closed.mapped_bytes));
            let (pinned, pinned_bytes) =
                (self.pinned.len(), self.pinned.iter().map(|(_, b)| b).sum());
            self.emit(Event::StayedMapped {
                version,
                lib: self.config.lib.clone(),
                bytes: closed.mapped_bytes,
                pinned,
                pinned_bytes,
            });
            if pinned.is_multiple_of(PINNED_WARNING) {
                self.emit(Event::PinnedWarning {
                    pinned,
                    pinned_bytes,
                });
            }
        }
    }

    /// The lines for what unloading `version` did before it was closed or
    /// kept: a destructor's fault, the timers deleted (and, for a thread
    /// timer's, that the code stays mapped until exit).
    fn said_unloading(&mut self, version: u64, done: &Unloading, timer_thread: bool) {
        if let Some(cause) = &done.destructor_fault {
            self.destructor_faulted(version, cause.clone());
        }
        let timers = crate::plugin::unload::timers(done.timers_deleted);
        if timer_thread {
            // A thread the C library started for an expiry just before the
            // timer went may still be calling into the library.
            self.emit(Event::ServerNotice(format!(
                "v{version} left {timers} armed; deleted, and v{version} stays mapped until exit: a thread timer's last call may still be running its code"
            )));
        } else if done.timers_deleted > 0 {
            self.emit(Event::ServerNotice(format!(
                "v{version} left {timers} armed; deleted with it, before its code is unmapped"
            )));
        }
    }

    fn destructor_faulted(&mut self, version: u64, cause: String) {
        self.emit(Event::Fault(FaultReport {
            version,
            call: "destructor",
            tick: 0,
            cause,
            symbol: None,
            recovery: Recovery::Unloaded,
        }));
    }

    fn stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.stop_requested.store(true, Ordering::Relaxed);
        if let Some(board) = &self.board {
            board.set_stopping();
        }
        if let Some(b) = &self.build {
            b.run.kill();
        }
        let _ = self.tick.send(TickInput::Stop);
    }
}

/// Puts back the guard's handlers and the process-wide settings the server
/// relies on, where plugin code of `version` (while `during`) changed them
/// around the interposers, and says so. Before anything else runs.
pub(super) fn settle_process(events: &EventSink, version: Option<u64>, during: &'static str) {
    let signals = crate::guard::process::reassert_handlers();
    if !signals.is_empty() {
        events(Event::HandlersReasserted { signals });
    }
    let drift = crate::guard::baseline::settle();
    if !drift.is_empty() {
        events(Event::ProcessDrift {
            version,
            during,
            drift,
        });
    }
}

/// The threads plugin code started that run `plugin`'s code: their ids (a
/// few) and how many.
fn threads_running(plugin: &Plugin) -> (Vec<i32>, usize) {
    match plugin.span() {
        Some((start, end)) => crate::guard::threads::running_in(start, end),
        None => (Vec::new(), 0),
    }
}
