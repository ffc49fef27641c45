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
//! - a batch whose files kept their mtime, size and inode builds nothing;
//! - files that change during every build are the build's own: after a few
//!   discards in a row they are named and ignored;
//! - the exit code is the outcome of the last attempt.

mod prepare;
mod stale;

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use crate::command::Command;
use crate::config::Config;
use crate::event::{BuildFailure, Event, EventSink};
use crate::outcome::{Outcome, Rejection};
use crate::pipeline::build::{BuildResult, RunningBuild};
use crate::plugin::Plugin;
use crate::plugin::shadow::ShadowDir;
use crate::state::persist::{self, Saved, SavedRef};
use crate::tick::{Save, TickInput, TickOutput};
use crate::watch::fingerprint::Fingerprints;
use crate::watch::scope::Scope;
use crate::watch::{Batch, ChangeJournal, Watch, WatchOutput};

use prepare::{Prepared, StateSide, hash_bytes};
use stale::{Baseline, Streak, StreakVerdict};

/// The longest a build's end waits for the watcher to note what was
/// changed before it (usually well under a millisecond).
const CATCH_UP: Duration = Duration::from_millis(500);

/// Everything the reload thread is told.
#[expect(
    clippy::large_enum_variant,
    reason = "a few messages per reload; boxing would buy nothing"
)]
pub enum Inbox {
    Watch(WatchOutput),
    BuildExited(BuildResult),
    Tick(TickOutput),
    Command(Command),
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
    /// The last save error said, so a failing disk is not reported per tick.
    save_error_said: Option<String>,
    /// What was last said about where the layout comes from.
    layout_said: String,
    /// The plugin's writable statics last warned about.
    statics_said: Vec<(String, u64)>,
    /// The hash of every loaded version's bytes, to recognise a rebuild that
    /// changed nothing.
    hashes: std::collections::HashMap<u64, u64>,
    attempts: u64,
    last_outcome: Option<Outcome>,
    stopping: bool,
}

struct InFlight {
    run: RunningBuild,
    /// The start-up build is not a reload attempt.
    counts_as_attempt: bool,
    /// The sources as the build found them.
    baseline: Baseline,
    /// The files of the batches delivered after this build started.
    batched: std::collections::BTreeSet<PathBuf>,
}

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
            save_error_said: None,
            layout_said: String::new(),
            statics_said: Vec::new(),
            hashes: Default::default(),
            attempts: 0,
            last_outcome: None,
            stopping: false,
        }
    }

    /// The first version will start from `saved` instead of a fresh state
    /// (no `init`), migrated to its layout if that changed.
    pub fn restore_from(&mut self, saved: Saved, path: std::path::PathBuf) {
        self.restored = Some((saved, path));
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
        // The library on disk may be stale: always build once at start.
        self.start_build(&me, false);
        while let Ok(msg) = inbox.recv() {
            match msg {
                Inbox::Watch(WatchOutput::Notice(text)) => self.emit(Event::WatchNotice(text)),
                Inbox::Watch(WatchOutput::Batch(batch)) => self.on_batch(batch, &me),
                Inbox::BuildExited(result) => self.on_build_exited(result, &me),
                Inbox::Tick(TickOutput::Save(save)) => self.save(save),
                Inbox::Tick(TickOutput::Declined {
                    plugin,
                    running,
                    reason,
                }) => self.on_declined(plugin, running, reason),
                Inbox::Tick(TickOutput::Retired(plugin)) => self.retire(plugin),
                Inbox::Tick(TickOutput::Faulted {
                    plugin,
                    running,
                    cause,
                }) => self.on_fault(plugin, running, cause),
                Inbox::Tick(TickOutput::Finished { shutdown_faulted }) => {
                    if shutdown_faulted {
                        self.last_outcome = Some(Outcome::Faulted);
                    }
                    break;
                }
                Inbox::Command(Command::Stop(_)) => self.stop(),
                Inbox::Command(Command::Rebuild) => self.request_build(&me),
            }
        }
        if let Some(b) = self.build.take() {
            b.run.kill();
        }
        let code = self.last_outcome.as_ref().map_or(0, Outcome::exit_code);
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
        // A running build is judged when it exits, by what changed meanwhile.
        if self.build.is_none() {
            self.start_build(me, counts_as_attempt);
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
        let me = me.clone();
        // Before the command runs, so that nothing it reads is missed.
        let baseline = Baseline::at_start(&self.journal, &self.scope, &self.fingerprints);
        self.emit(Event::BuildStarted);
        match RunningBuild::spawn(&self.config.build, &self.config.build_dir, move |result| {
            let _ = me.send(Inbox::BuildExited(result));
        }) {
            Ok(run) => {
                self.build = Some(InFlight {
                    run,
                    counts_as_attempt,
                    baseline,
                    batched: Default::default(),
                })
            }
            Err(why) => {
                self.emit(Event::BuildFailed(BuildFailure {
                    duration: Duration::ZERO,
                    status: "not started".into(),
                    first_error: why.clone(),
                    output: why,
                }));
                self.record(Outcome::BuildFailed, counts_as_attempt);
            }
        }
    }

    fn on_build_exited(&mut self, result: BuildResult, me: &Sender<Inbox>) {
        let Some(build) = self.build.take() else {
            return;
        };
        if self.stopping {
            return;
        }
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
            }));
            self.record(Outcome::BuildFailed, counts);
            return;
        }
        self.emit(Event::BuildSucceeded {
            duration: result.duration(),
            output: result.output.clone(),
        });
        let bytes = match std::fs::read(&self.config.lib) {
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
            return;
        }
        match self.prepare(&bytes, build_hash) {
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
                    self.record(Outcome::Swapped, counts);
                }
            }
            Err((reason, detail)) => {
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

    /// The sources that changed while `build` ran, less those that turn
    /// out to be written by the build itself (said once, then ignored).
    fn stale_sources(&mut self, build: &InFlight) -> Vec<PathBuf> {
        // The events of the build's last writes may still be on their way.
        // Past the wait, a late one is handled as a change after the build.
        self.watch.catch_up(CATCH_UP);
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

    fn save(&mut self, save: Save) {
        let Some(path) = self.config.state_file.clone() else {
            return;
        };
        let saved = SavedRef {
            state: &save.bytes,
            state_version: save.state_version,
            layout: save.layout.as_deref(),
        };
        match persist::save(&path, &saved) {
            Ok(()) => {
                self.save_error_said = None;
                if save.at_exit {
                    self.emit(Event::StateSaved {
                        path,
                        tick: save.tick,
                    });
                }
            }
            Err(e) => {
                let said = format!("cannot save the state to {}: {e}", path.display());
                if self.save_error_said.as_ref() != Some(&said) {
                    self.emit(Event::WatchNotice(said.clone()));
                    self.save_error_said = Some(said);
                }
            }
        }
    }

    fn record(&mut self, outcome: Outcome, counts_as_attempt: bool) {
        self.last_outcome = Some(outcome);
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
        self.last_outcome = Some(Outcome::Rejected(reason));
    }

    fn on_fault(&mut self, plugin: Plugin, running: Option<u64>, cause: String) {
        self.running = running;
        // Rolling back carries the state back to that version's layout;
        // pausing keeps it as it is.
        if let Some(side) = running.and_then(|v| self.sides.get(&v)) {
            self.state_side = Some(side.clone());
        }
        self.known_bad = Some((
            plugin.build_hash(),
            format!("v{} ({cause})", plugin.version()),
        ));
        self.last_outcome = Some(Outcome::Faulted);
        self.retire(plugin);
    }

    fn retire(&mut self, plugin: Plugin) {
        let version = plugin.version();
        self.hashes.remove(&version);
        self.sides.remove(&version);
        let closed = plugin.close();
        if let Some(err) = closed.close_error {
            self.emit(Event::WatchNotice(format!(
                "dlclose of v{version} failed: {err}"
            )));
        }
        if closed.still_mapped {
            self.emit(Event::StayedMapped {
                version,
                lib: self.config.lib.clone(),
            });
        }
    }

    fn stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        if let Some(b) = &self.build {
            b.run.kill();
        }
        let _ = self.tick.send(TickInput::Stop);
    }
}
