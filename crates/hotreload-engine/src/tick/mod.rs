//! The last stage: the tick loop, where a checked version is swapped in and
//! where plugin faults are recovered from.
//!
//! One thread owns the state and the running version, and is the only thread
//! that calls plugin code once a version is live. Between two ticks it waits
//! on its inbox until the next deadline: a new version is installed the moment
//! it arrives (never in the middle of a tick), and a stop request is honoured
//! after the tick in progress. Nothing here waits for a build, a copy or a
//! load: those arrive finished.
//!
//! Every call runs under the crash guard and the watchdog. Before each tick
//! the state is copied ([`SharedSnapshot`]); when a call faults, the copy is
//! put back, the faulting version is dropped, and the most recent earlier version
//! takes over (up to `keep_versions` stay loaded for this). With none left,
//! ticking pauses, state intact, until the next good build.

pub mod door;
mod edit;
pub mod input;
mod pause;
mod queue;
mod recover;
mod rewind;
mod rollback;
pub mod schedule;
pub use door::DoorError;
pub use edit::{Edit, EditReply, Edited};
pub use rewind::{LoopSet, RewindTo, Rewound};
pub use rollback::{CarryBackAsk, RollbackReply, RolledBack};

mod swap;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::control::status::StatusBoard;
use crate::event::{Event, EventSink, Recovery, StateMoment, StateReport, TickStats};
use crate::guard::process::Repair;
use crate::guard::watchdog::{CallWatch, Watchdog};
use crate::guard::{self, Fault};
use crate::layout::Layout;
use crate::plugin::{Hook, Plugin};
use crate::state::State;
use crate::state::migrate::Plan;
use crate::state::snapshot::SharedSnapshot;
use crate::tick::schedule::Schedule;
use hotreload_abi::HostContext;

/// How long before a tick a version's worker is told it is coming: longer
/// than it takes to wake a sleeping process (5 to 20 µs here), short enough
/// that the worker watching the page meanwhile costs little CPU (see
/// `benches/isolated.rs`).
pub const WARM_LEAD: Duration = Duration::from_micros(100);

/// The version a state's bytes belong to, and what they mean to it.
#[derive(Clone)]
pub(super) struct Owner {
    version: u64,
    state_version: u32,
    layout: Option<std::sync::Arc<Layout>>,
}

impl Owner {
    pub(super) fn of(plugin: &Plugin) -> Owner {
        Owner {
            version: plugin.version(),
            state_version: plugin.state_version(),
            layout: plugin.layout().cloned(),
        }
    }
}

/// How many leading bytes of the state a report carries.
const STATE_HEAD: usize = 16;

/// What the tick thread is sent. A swap is a large message, sent once per
/// build: boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum TickInput {
    /// A version that passed every check. The first one comes with the
    /// state, allocated and zeroed off this thread.
    Swap {
        plugin: Plugin,
        fresh_state: Option<Fresh>,
        migration: Option<Migration>,
        build_exited_at: Option<Instant>,
    },
    /// A copy of the state as it is between two ticks, for a trial run;
    /// `None` if there is no state yet.
    /// With the ticks completed so far.
    CopyState(std::sync::mpsc::Sender<Option<(Vec<u8>, u64)>>),
    /// Report the state now.
    Report,
    /// Hold between two ticks until `Resume` or `Step`.
    Pause,
    Resume,
    /// While paused: run this many ticks, then hold again.
    Step(u64),
    /// Save the state file now.
    Save,
    /// A periodic save for which the reload thread had no snapshot to
    /// hand: copied here.
    SavePeriodic,
    /// Read or write one value of the state (see `edit`).
    Edit(edit::Edit, edit::EditReply),
    /// Go back to an earlier version kept loaded.
    RollBack(u64, rollback::RollbackReply),
    /// Put the state back to an earlier tick from the history (paused).
    Rewind(rewind::RewindTo, rewind::RewindReply),
    /// Loop a window of recorded ticks, or stop looping (`None`).
    Loop(Option<(u64, u64)>, rewind::LoopReply),
    /// Where the ticks' input comes from, from the next tick on.
    Input(input::InputChange),
    /// Go back to a version loaded again from its kept copy; `after_fault`
    /// when the server does it itself, nothing else being loaded after a
    /// fault.
    BringBack {
        plugin: Plugin,
        reply: rollback::RollbackReply,
        after_fault: bool,
    },
    /// The state carried to the layout of a version a rollback waits for,
    /// worked out off this thread (see [`TickOutput::CarryBack`]); `Err`
    /// says why it could not be.
    CarriedBack(u64, Result<Migration, String>),
    Stop,
}

/// The state a first version starts from.
pub struct Fresh {
    pub state: State,
    /// Set when it was restored from the state file (then `init` does not
    /// run): where from, and how it was carried over.
    pub restored: Option<String>,
    /// A saved state of another state version, for the new version's
    /// `migrate` hook to finish carrying over: its bytes and version.
    pub convert_from: Option<(Vec<u8>, u32)>,
}

/// Why a new version did not take the state.
enum Refusal {
    /// Its `migrate` hook returned non-zero: a rejection, not a fault.
    Declined(String),
    /// Its `migrate` hook faulted.
    Faulted(Fault),
}

/// A copy of the state to write to the state file.
pub struct Save {
    pub bytes: Vec<u8>,
    pub state_version: u32,
    pub layout: Option<std::sync::Arc<Layout>>,
    /// Ticks completed when it was taken.
    pub tick: u64,
    pub at_exit: bool,
    /// Asked for by a command (`save`): said when it is done.
    pub requested: bool,
}

/// A new state block for a swap that changes the state's layout, prepared
/// off this thread: filled from the current state by `plan`, then by the new
/// version's `migrate` hook.
pub struct Migration {
    pub plan: Option<Box<Plan>>,
    pub new_state: State,
    /// The state version the current state was written by.
    pub old_version: u32,
    /// `+lives -bonus`, for the log.
    pub summary: String,
    /// The new block filled ahead of the swap (a large state), for the
    /// swap to finish.
    pub ahead: Option<crate::state::migrate::ahead::Ahead>,
}

/// What the tick loop hands back to the rest of the engine.
pub enum TickOutput {
    /// A copy of the state for the state file.
    Save(Save),
    /// A periodic save is due: the reload thread writes the fault
    /// snapshot's copy, or asks for a copy when it has none to hand.
    SaveDue,
    /// A version no longer needed (swapped out and beyond `keep_versions`),
    /// to be unloaded off this thread.
    Retired(Plugin),
    /// Memory a swap let go of (a large state's old block, its snapshot
    /// and history, the copy a migration was worked out from), to be freed
    /// off this thread: giving many pages back takes milliseconds.
    Discard(crate::state::release::Discarded),
    /// A version's `migrate` hook refused the state: it never went live,
    /// and the running version (if any) keeps its state.
    Declined {
        plugin: Plugin,
        running: Option<u64>,
        reason: String,
    },
    /// A version faulted and is out; `running` is the version now ticking.
    Faulted {
        plugin: Plugin,
        running: Option<u64>,
        /// A few words on what happened ("SIGSEGV in tick").
        cause: String,
        /// Whether the build is to blame: not for an isolated worker
        /// killed by SIGKILL, which plugin code cannot send itself (the
        /// worker's confinement refuses it), so it came from outside (the
        /// OOM killer, `kill -9`); the same build may be tried again.
        blame_build: bool,
    },
    /// A version's swap was still queued when a newer one came, and was
    /// skipped for it (`by`): it never ran.
    Skipped { plugin: Plugin, by: u64 },
    /// A version was brought back on command; `running` is now it.
    RolledBack { running: u64 },
    /// A rollback asked for that changes a large state's layout: the new
    /// block is to be filled off this thread, ahead, as a swap's is, and
    /// handed back as [`TickInput::CarriedBack`].
    CarryBack(rollback::CarryBackAsk),
    /// The loop ended (stop request or tick limit); nothing of the plugin's
    /// runs any more. `shutdown_faulted` if `shutdown` itself faulted.
    Finished { shutdown_faulted: bool },
}

pub struct TickSettings {
    pub period: Duration,
    pub max_ticks: Option<u64>,
    /// Longest a plugin call may run before the watchdog interrupts it.
    pub call_timeout: Duration,
    /// Versions kept loaded, the running one included, to roll back to.
    pub keep_versions: usize,
    /// Handed to plugin code in the host context.
    pub seed: u64,
    /// Report the state every this many ticks.
    pub state_every: Option<u64>,
    /// Hand a copy of the state for saving every this many ticks.
    pub save_every: Option<u64>,
    /// Whether saves are wanted at all (at exit).
    pub saving: bool,
    /// `--reset-field` patterns, for carrying the state back on a rollback.
    pub reset_fields: Vec<String>,
    /// `--state-fields` patterns: the fields state lines show whole.
    pub state_fields: Vec<String>,
}

pub struct TickLoop {
    settings: TickSettings,
    dt: f64,
    events: EventSink,
    output: Box<dyn Fn(TickOutput) + Send>,
    state: Option<State>,
    /// Shared with the engine handle, which saves it on a forced exit.
    snapshot: SharedSnapshot,
    /// Whose layout the state's bytes are in: the running version's, or,
    /// while ticking is paused after a fault, the version that faulted
    /// (the state was restored to its snapshot, in its layout). What is
    /// saved and shown goes by this, not by whichever version runs.
    owner: Option<Owner>,
    /// `init` has completed once; it never runs again.
    initialized: bool,
    current: Option<Plugin>,
    /// Earlier versions that ran without fault, newest first.
    earlier: VecDeque<Plugin>,
    /// `None` while nothing ticks (no version yet, or paused after a fault).
    schedule: Option<Schedule>,
    /// Ticking time, lateness and skips of schedules that ended (ticking
    /// stopped by a fault with nothing to take over), for the final
    /// figures.
    past_runs: queue::PastRuns,
    /// A scan for pointers into the version last swapped out, under way.
    dangling: Option<swap::DanglingScan>,
    /// Ticks completed.
    ticks: u64,
    /// Set by a swap until the new version's first tick has run.
    first_tick_due: Option<(u64, Option<Instant>)>,
    /// The watchdog's handle for calls made outside the main paths (a
    /// `describe` for a state line); set once the loop runs.
    watch: Option<CallWatch>,
    /// Versions whose `describe` faulted: it is not called again for them.
    describe_off: Vec<u64>,
    /// What was said of each version's changes to process-wide state.
    repairs_said: Vec<(u64, Repair)>,
    /// Ticks between two checks of the tick thread's signal mask and the
    /// guard's handlers (for changes made with the raw system calls): about
    /// a second's worth.
    mask_check_every: u64,
    /// What the control socket reads: the tick, the version, paused.
    board: Arc<StatusBoard>,
    /// Paused by a command, and the ticks left of a `step`.
    user_paused: bool,
    steps_left: u64,
    steps_asked: u64,
    /// Writes `undo` can take back, newest last.
    undo: Vec<edit::Undo>,
    /// A `loop` in progress.
    looping: Option<rewind::Looping>,
    /// A rollback waiting for its state to be carried off this thread.
    rolling_back: Option<rollback::Waiting>,
    /// What each tick is passed besides the state.
    input: input::HostInput,
    /// Ticks run since the start, which a rewind does not set back.
    ticks_run: u64,
}

impl TickLoop {
    pub fn new(
        settings: TickSettings,
        events: EventSink,
        output: Box<dyn Fn(TickOutput) + Send>,
        snapshot: SharedSnapshot,
        board: Arc<StatusBoard>,
    ) -> TickLoop {
        let mask_check_every = (Duration::from_secs(1).as_nanos()
            / settings.period.as_nanos().max(1))
        .clamp(1, u128::from(u64::MAX)) as u64;
        TickLoop {
            // Exactly tick_ms / 1000 for whole milliseconds.
            dt: settings.period.as_secs_f64(),
            settings,
            events,
            output,
            state: None,
            snapshot,
            owner: None,
            initialized: false,
            current: None,
            earlier: VecDeque::new(),
            schedule: None,
            past_runs: queue::PastRuns::default(),
            dangling: None,
            ticks: 0,
            first_tick_due: None,
            watch: None,
            describe_off: Vec::new(),
            repairs_said: Vec::new(),
            mask_check_every,
            board,
            user_paused: false,
            steps_left: 0,
            steps_asked: 0,
            undo: Vec::new(),
            looping: None,
            rolling_back: None,
            input: input::HostInput::default(),
            ticks_run: 0,
        }
    }

    pub fn run(mut self, inbox: Receiver<TickInput>) {
        tighten_timer_slack();
        crate::plugin::ext::log_to(std::sync::Arc::clone(&self.events));
        let prepared = guard::prepare_thread().and_then(|thread_guard| {
            Watchdog::for_this_thread(self.settings.call_timeout)
                .map(|(watchdog, calls)| (thread_guard, watchdog, calls))
        });
        let (thread_guard, watchdog, calls): (_, _, CallWatch) = match prepared {
            Ok(w) => w,
            Err(why) => {
                (self.events)(Event::WatchNotice(format!(
                    "plugin code cannot run safely: {why}"
                )));
                (self.output)(TickOutput::Finished {
                    shutdown_faulted: false,
                });
                return;
            }
        };
        self.watch = Some(calls.clone());
        // Messages taken off the inbox early, while looking for a newer
        // swap behind a queued one (see `collapse`); handled first.
        let mut taken: VecDeque<TickInput> = VecDeque::new();
        loop {
            let input = match (&self.schedule, taken.pop_front()) {
                (_, Some(input)) => Ok(input),
                (schedule, None) => match schedule {
                    Some(_) if self.holding() => {
                        inbox.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    }
                    None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(s) => {
                        let wake = self.wake_for(s.next_deadline());
                        inbox.recv_timeout(wake.saturating_duration_since(Instant::now()))
                    }
                },
            };
            // A swap queued behind newer ones is skipped for the newest
            // (when it changes nothing the newer ones were prepared for);
            // and an overdue tick runs before any swap is installed.
            let input = match input {
                Ok(swap @ TickInput::Swap { .. }) => {
                    let swap = self.collapse(swap, &inbox, &mut taken);
                    if self.tick_if_overdue(&calls) {
                        if let TickInput::Swap { plugin, .. } = swap {
                            (self.output)(TickOutput::Retired(plugin));
                        }
                        break;
                    }
                    Ok(swap)
                }
                other => other,
            };
            self.board.set_busy(true);
            match input {
                Ok(TickInput::Swap {
                    plugin,
                    fresh_state,
                    migration,
                    build_exited_at,
                }) => self.install(plugin, fresh_state, migration, build_exited_at, &calls),
                Ok(TickInput::CopyState(reply)) => {
                    let _ = reply.send(
                        self.state
                            .as_ref()
                            .map(|s| (s.bytes().to_vec(), self.ticks)),
                    );
                }
                Ok(TickInput::Report) => self.report(StateMoment::Requested),
                Ok(TickInput::Pause) => self.pause(),
                Ok(TickInput::Resume) => self.resume(),
                Ok(TickInput::Step(n)) => self.step(n),
                Ok(TickInput::Save) => self.save_for(false, true),
                Ok(TickInput::SavePeriodic) => self.save(false),
                Ok(TickInput::Edit(edit, reply)) => self.edit(edit, reply),
                Ok(TickInput::RollBack(to, reply)) => self.roll_back(to, reply),
                Ok(TickInput::Rewind(to, reply)) => self.rewind(to, reply),
                Ok(TickInput::Loop(window, reply)) => self.set_loop(window, reply),
                Ok(TickInput::Input(change)) => self.input.change(change),
                Ok(TickInput::BringBack {
                    plugin,
                    reply,
                    after_fault,
                }) => self.bring_back(plugin, reply, after_fault),
                Ok(TickInput::CarriedBack(to, carried)) => self.carried_back(to, carried),
                Ok(TickInput::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.warm_until_due();
                    self.tick(&calls);
                    if self
                        .settings
                        .max_ticks
                        .is_some_and(|max| self.ticks_run >= max)
                    {
                        break;
                    }
                }
            }
            self.board.set_busy(false);
        }
        self.finish(&calls);
        // The watchdog must stop before this thread can exit; the alternate
        // stack is given back after the last plugin call.
        drop(watchdog);
        drop(thread_guard);
    }

    /// When to wake for the tick due at `deadline`: `WARM_LEAD` early for a
    /// version in a worker, which is then warmed ([`TickLoop::warm_until_due`]).
    fn wake_for(&self, deadline: Instant) -> Instant {
        match &self.current {
            Some(plugin) if plugin.is_isolated() => deadline - WARM_LEAD,
            _ => deadline,
        }
    }

    /// Before a tick of a version in a worker: tells the worker the call is
    /// coming, then sleeps to the deadline (this thread's timer slack is
    /// 1 µs), so the tick meets a worker that is awake, and the server
    /// spends no CPU on the wait.
    fn warm_until_due(&self) {
        let (Some(plugin), Some(schedule)) = (&self.current, &self.schedule) else {
            return;
        };
        let deadline = schedule.next_deadline();
        if !plugin.is_isolated() || Instant::now() >= deadline {
            return;
        }
        plugin.warm();
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    }

    /// Calls `hook` of the current version on the state (if it has it),
    /// under the guard and the watchdog.
    fn call_hook(&mut self, hook: Hook, calls: &CallWatch) -> Result<(), Fault> {
        let host = self.host_context();
        let (Some(plugin), Some(state)) = (&self.current, &mut self.state) else {
            return Ok(());
        };
        if !plugin.has_hook(hook) {
            return Ok(());
        }
        calls.begin(Instant::now());
        // SAFETY: the state is the block of the size its version was checked
        // against; this thread is the only caller and ran `prepare_thread`.
        let result = unsafe { plugin.hook(hook, state, &host) };
        calls.end();
        result
    }

    /// Says what the guard had to undo or refuse of what plugin code did to
    /// process-wide state, once per version and kind of change.
    fn say_repairs(&mut self, call: &'static str) {
        let Some(repair) = guard::process::take_repairs() else {
            return;
        };
        let version = self.current.as_ref().map_or(0, Plugin::version);
        let said = self
            .repairs_said
            .iter()
            .position(|(v, _)| *v == version)
            .map(|i| self.repairs_said[i].1.clone())
            .unwrap_or_default();
        let fresh = Repair {
            mask_restored: repair.mask_restored && !said.mask_restored,
            mask_calls: if said.mask_calls == 0 {
                repair.mask_calls
            } else {
                0
            },
            refused: repair
                .refused
                .iter()
                .copied()
                .filter(|s| !said.refused.contains(s))
                .collect(),
            altstack_restored: repair.altstack_restored && !said.altstack_restored,
            std_closed: repair
                .std_closed
                .iter()
                .copied()
                .filter(|fd| !said.std_closed.contains(fd))
                .collect(),
        };
        if fresh.is_empty() {
            return;
        }
        let mut known = said;
        known.mask_restored |= fresh.mask_restored;
        known.altstack_restored |= fresh.altstack_restored;
        known.std_closed.extend(&fresh.std_closed);
        known.mask_calls = known.mask_calls.max(fresh.mask_calls);
        known.refused.extend(&fresh.refused);
        self.repairs_said.retain(|(v, _)| *v != version);
        self.repairs_said.push((version, known));
        (self.events)(Event::ProcessStateRepaired {
            version,
            call,
            repair: fresh,
        });
    }

    /// Puts the crash guard's handlers back where plugin code replaced them
    /// around the interposers, and the process-wide settings the server
    /// relies on (see `guard::baseline`), and says so.
    fn reassert_handlers(&self, during: &'static str) {
        let signals = guard::process::reassert_handlers();
        if !signals.is_empty() {
            (self.events)(Event::HandlersReasserted { signals });
        }
        let drift = guard::baseline::settle();
        if !drift.is_empty() {
            (self.events)(Event::ProcessDrift {
                version: self.current.as_ref().map(Plugin::version),
                during,
                drift,
            });
        }
    }

    /// Versions kept for a rollback whose isolated worker has died since
    /// (killed from outside, or ended by a thread plugin code left in it):
    /// said, and given up, so that a rollback never lands on a dead worker,
    /// and the worker's processes are ended with it.
    fn drop_dead_kept_workers(&mut self) {
        let mut kept = std::collections::VecDeque::with_capacity(self.earlier.len());
        for plugin in self.earlier.drain(..) {
            match plugin.worker_ended() {
                Some((pid, fault)) => {
                    (self.events)(Event::KeptWorkerDied {
                        version: plugin.version(),
                        pid,
                        cause: fault.describe(),
                    });
                    (self.output)(TickOutput::Retired(plugin));
                }
                None => kept.push_back(plugin),
            }
        }
        self.earlier = kept;
        self.publish_loaded();
    }

    /// Tells the board which versions are loaded: the running one first,
    /// then those kept for rollbacks.
    pub(super) fn publish_loaded(&self) {
        self.board.set_loaded(
            self.current
                .iter()
                .chain(self.earlier.iter())
                .map(Plugin::version)
                .collect(),
        );
    }

    fn host_context(&self) -> HostContext {
        crate::plugin::ext::host_context(self.settings.seed, self.ticks)
    }

    /// Runs `init` on the current version; on a fault, recovers and returns
    /// false.
    fn run_init(&mut self, calls: &CallWatch) -> bool {
        match &self.state {
            Some(state) if self.snapshot.take(state, self.ticks) => {}
            _ => return false,
        }
        let host = self.host_context();
        let (Some(plugin), Some(state)) = (&self.current, &mut self.state) else {
            return false;
        };
        calls.begin(Instant::now());
        // SAFETY: the state has the size this plugin was checked against (the
        // reload stage allocated it with that size, or checked it); this
        // thread is the only caller and ran `guard::prepare_thread`.
        let result = unsafe { plugin.init(state, &host) };
        calls.end();
        self.reassert_handlers("in init");
        match result {
            Ok(()) => {
                self.initialized = true;
                self.snapshot.mark_live();
                // What `init` wrote is copied now, before the first tick's
                // deadline is set, not at the first tick: for a large
                // state that `init` filled, that is a copy of all of it,
                // which would make the first tick start late. So would the
                // compare of all those pages at the first tick's take, which
                // `settle` does now as well.
                if let Some(state) = &self.state {
                    self.snapshot.take(state, self.ticks);
                    self.snapshot.settle(state, self.ticks);
                }
                self.say_repairs("init");
                true
            }
            Err(fault) => {
                self.recover("init", fault, true);
                false
            }
        }
    }

    fn tick(&mut self, calls: &CallWatch) {
        let (Some(plugin), Some(state), Some(schedule)) =
            (&self.current, &mut self.state, &mut self.schedule)
        else {
            return;
        };
        let now = Instant::now();
        if let Some(skip) = schedule.start_tick(now) {
            (self.events)(Event::Stalled {
                behind: skip.behind,
                skipped: skip.ticks,
            });
        }
        if let Some((fault, tid)) = guard::take_thread_crash() {
            (self.events)(Event::PluginThreadStopped {
                tid,
                cause: fault.report(),
                exited: fault.is_exit(),
                version: self
                    .current
                    .as_ref()
                    .filter(|p| p.contains(fault.pc))
                    .map(Plugin::version),
            });
            if self.current.as_ref().is_some_and(|p| p.contains(fault.pc)) {
                // The version running crashed on a thread of its own: its
                // fault, as if in a call; the state is as that thread left
                // it, which is all there is.
                self.recover("thread", fault, false);
                return;
            }
        }
        if let Some(signal) = guard::process::take_timer_signal() {
            // A timer plugin code armed fired between two calls: a fault of
            // the version running, as if it had fired inside one.
            // The state is as the last call left it: nothing to put back.
            self.recover("timer", Fault::from_timer(signal), false);
            return;
        }
        let input = self.input.for_tick(
            self.ticks,
            plugin.version(),
            plugin.takes_input(),
            &self.events,
        );
        if !self.snapshot.take_if_due(state, self.ticks, input.as_ref()) {
            return;
        }
        let context = crate::plugin::TickContext {
            seed: self.settings.seed,
            tick: self.ticks,
            input: input.as_deref().unwrap_or_default(),
        };
        calls.begin(now);
        // SAFETY: as in `run_init`.
        let result = unsafe { plugin.tick(state, self.dt, &context) };
        calls.end();
        if let Err(fault) = result {
            self.recover("tick", fault, true);
            return;
        }
        self.ticks += 1;
        self.ticks_run += 1;
        if let Some(schedule) = &self.schedule {
            self.board.ticked(
                self.ticks,
                u64::try_from(schedule.max_late.as_micros()).unwrap_or(u64::MAX),
            );
        }
        self.board
            .set_version(self.current.as_ref().map(Plugin::version));
        self.count_step();
        self.loop_if_due();
        if self.dangling.is_some() {
            self.scan_for_dangling();
        }
        if self.ticks.is_multiple_of(self.mask_check_every) {
            // What plugin code changed with the raw system calls, which no
            // interposer sees: about once a second, a few system calls.
            guard::process::check_mask();
            self.reassert_handlers("while ticking");
            for notice in self.snapshot.take_notices() {
                (self.events)(Event::ServerNotice(format!("state snapshot: {notice}")));
            }
            self.drop_dead_kept_workers();
        }
        self.say_repairs("tick");
        #[cfg(debug_assertions)]
        debug_host_fault::maybe_at(self.ticks);
        if self
            .settings
            .state_every
            .is_some_and(|n| n > 0 && self.ticks.is_multiple_of(n))
        {
            self.report(StateMoment::Periodic);
        }
        if self
            .settings
            .save_every
            .is_some_and(|n| n > 0 && self.ticks.is_multiple_of(n))
            && self.settings.saving
        {
            // Written from the fault snapshot, copied on the reload
            // thread: no copy of a large state here.
            (self.output)(TickOutput::SaveDue);
        }
        if let Some((version, Some(exited))) = self.first_tick_due.take() {
            (self.events)(Event::FirstTick {
                version,
                since_build_exit: exited.elapsed(),
            });
        }
    }

    fn finish(mut self, calls: &CallWatch) {
        let mut shutdown_faulted = false;
        if let Some(state) = &self.state {
            // A `shutdown` that never returns leaves the state mid-way; a
            // forced exit then saves this copy, the last completed tick's.
            self.snapshot.take(state, self.ticks);
        }
        for notice in self.snapshot.take_notices() {
            (self.events)(Event::ServerNotice(format!("state snapshot: {notice}")));
        }
        match (&self.current, &mut self.state) {
            (Some(plugin), Some(state)) if self.initialized => {
                calls.begin(Instant::now());
                // SAFETY: as in `run_init`.
                let result = unsafe { plugin.shutdown(state) };
                calls.end();
                if let Err(fault) = result {
                    shutdown_faulted = true;
                    // What a crash half-way through `shutdown` left is not
                    // worth saving over the state it started from.
                    let restored_to_tick = self.snapshot.restore(state);
                    let report = self.fault_report(
                        plugin.version(),
                        "shutdown",
                        &fault,
                        Recovery::Exiting { restored_to_tick },
                    );
                    (self.events)(Event::Fault(report));
                }
                self.report(StateMoment::Final);
            }
            (_, Some(_)) => self.report(StateMoment::Final),
            (_, None) => self.report(StateMoment::Absent),
        }
        self.say_repairs("shutdown");
        // The save needs the working folder and limits as the server had
        // them, whatever shutdown did.
        self.reassert_handlers("in shutdown");
        // Only a state that some version ran on is worth saving: a run whose
        // builds all failed leaves the file as it was.
        if self.initialized {
            self.save(true);
        }
        if let Some(s) = self.schedule.take() {
            self.past_runs.add(&s);
        }
        if self.past_runs.runs > 0 {
            (self.events)(Event::TickStats(TickStats {
                // Ticks run, not the counter: a rewind sets that back.
                ticks: self.ticks_run,
                period: self.settings.period,
                elapsed: self.past_runs.elapsed,
                max_late: self.past_runs.max_late,
                skipped: self.past_runs.skipped,
            }));
        }
        for plugin in self
            .current
            .take()
            .into_iter()
            .chain(self.earlier.drain(..))
        {
            (self.output)(TickOutput::Retired(plugin));
        }
        (self.output)(TickOutput::Finished { shutdown_faulted });
    }

    fn report(&mut self, moment: StateMoment) {
        self.report_with(moment, None);
    }

    fn report_with(&mut self, moment: StateMoment, note: Option<String>) {
        // Taken out for the moment `describe` needs `self` whole.
        let state = self.state.take();
        let report = match &state {
            Some(state) => StateReport {
                moment,
                note,
                size: state.size(),
                tick: self.ticks,
                version: match (&self.current, &self.owner) {
                    (Some(plugin), _) => plugin.version(),
                    (None, Some(owner)) => owner.version,
                    (None, None) => 0,
                },
                paused: self.current.is_none(),
                head: state.bytes()[..state.size().min(STATE_HEAD)].to_vec(),
                fields: self.describe(state),
                // Whole, so only when asked for.
                values: (moment == StateMoment::Requested)
                    .then(|| self.owner.as_ref().and_then(|o| o.layout.clone()))
                    .flatten()
                    .map(|layout| crate::layout::json::state_values(&layout, state.bytes())),
            },
            None => StateReport {
                moment,
                note,
                size: 0,
                tick: 0,
                version: 0,
                paused: false,
                head: Vec::new(),
                fields: None,
                values: None,
            },
        };
        self.state = state;
        (self.events)(Event::State(report));
    }

    /// Hands a copy of the state to be written to the state file (off this
    /// thread).
    fn save(&self, at_exit: bool) {
        self.save_for(at_exit, false);
    }

    /// A save, `requested` by a command (`save`): said when it is done.
    fn save_for(&self, at_exit: bool, requested: bool) {
        let Some(state) = &self.state else { return };
        if !self.settings.saving {
            return;
        }
        let owner = self.owner.as_ref();
        (self.output)(TickOutput::Save(Save {
            bytes: state.bytes().to_vec(),
            state_version: owner.map_or(0, |o| o.state_version),
            layout: owner.and_then(|o| o.layout.clone()),
            tick: self.ticks,
            at_exit,
            requested,
        }));
    }

    /// The plugin's own description of the state, else the state by field;
    /// the fields `--state-fields` asks for win over the description.
    /// `describe` runs under the guard and the watchdog like every plugin
    /// call; one that faults or hangs is said once and not called again
    /// for that version (it cannot change the state: it gets it read-only).
    fn describe(&mut self, state: &State) -> Option<String> {
        let Some(plugin) = self.current.as_ref() else {
            return self.fields_of(state);
        };
        let asked = !self.settings.state_fields.is_empty() && plugin.layout().is_some();
        if !asked && plugin.has_describe() && !self.describe_off.contains(&plugin.version()) {
            let watch = self.watch.as_ref();
            if let Some(w) = watch {
                w.begin(Instant::now());
            }
            // SAFETY: the state is the block this version was checked
            // against; this thread is the only caller and ran
            // `prepare_thread`.
            let result = unsafe { plugin.describe(state) };
            if let Some(w) = watch {
                w.end();
            }
            match result {
                Ok(Some(text)) => return Some(text),
                Ok(None) => {}
                Err(fault) => {
                    let version = plugin.version();
                    let report =
                        self.fault_report(version, "describe", &fault, Recovery::DescribeOff);
                    self.describe_off.push(version);
                    (self.events)(Event::Fault(report));
                }
            }
        }
        self.fields_of(state)
    }

    /// The state by field, in the layout of the version it belongs to
    /// (while paused, the faulted version's): no plugin code runs.
    fn fields_of(&self, state: &State) -> Option<String> {
        let layout = self.owner.as_ref()?.layout.as_ref()?;
        Some(crate::layout::format_state(
            layout,
            state.bytes(),
            &self.settings.state_fields,
        ))
    }
}

/// Asks the kernel to wake this thread within 1 µs of a deadline instead of
/// the default 50 µs timer slack, which keeps tick starts tight at 1 ms
/// periods.
fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects only
    // the calling thread; failure leaves the default slack, which is harmless.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong, 0, 0, 0);
    }
}

/// A fault in host code must keep its normal meaning even on the thread that
/// calls plugin code. Debug builds can be made to fault in host code (with
/// `HOTRELOAD_DEBUG_HOST_FAULT=segv` or `=abort`) at tick 3, between two
/// guarded plugin calls, so that tests can check the process dies with that
/// signal. Release builds have no such hook.
#[cfg(debug_assertions)]
mod debug_host_fault {
    use std::sync::OnceLock;

    pub fn maybe_at(ticks: u64) {
        static KIND: OnceLock<Option<String>> = OnceLock::new();
        let kind = KIND.get_or_init(|| std::env::var("HOTRELOAD_DEBUG_HOST_FAULT").ok());
        if ticks != 3 {
            return;
        }
        match kind.as_deref() {
            Some("segv") => {
                // SAFETY: deliberately not: this is the host bug under test.
                unsafe { std::ptr::null_mut::<u32>().write_volatile(1) }
            }
            Some("abort") => std::process::abort(),
            _ => {}
        }
    }
}
