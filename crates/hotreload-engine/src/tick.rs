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
//! the state is copied ([`Snapshot`]); when a call faults, the copy is put
//! back, the faulting version is dropped, and the most recent earlier version
//! takes over (up to `keep_versions` stay loaded for this). With none left,
//! ticking pauses, state intact, until the next good build.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::event::{
    Event, EventSink, FaultReport, Recovery, StateMoment, StateReport, Swap, TickStats,
};
use crate::guard::watchdog::{CallWatch, Watchdog};
use crate::guard::{self, Fault};
use crate::layout::Layout;
use crate::migrate::Plan;
use crate::plugin::Plugin;
use crate::schedule::Schedule;
use crate::snapshot::Snapshot;
use crate::state::State;
use hotreload_abi::HostContext;

/// How many leading bytes of the state a report carries.
const STATE_HEAD: usize = 16;

#[expect(
    clippy::large_enum_variant,
    reason = "one message per reload; boxing would buy nothing"
)]
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
}

/// A new state block for a swap that changes the state's layout, prepared
/// off this thread: filled from the current state by `plan`, then by the new
/// version's `migrate` hook.
pub struct Migration {
    pub plan: Option<Plan>,
    pub new_state: State,
    /// The state version the current state was written by.
    pub old_version: u32,
    /// `+lives -bonus`, for the log.
    pub summary: String,
}

/// What the tick loop hands back to the rest of the engine.
pub enum TickOutput {
    /// A copy of the state for the state file.
    Save(Save),
    /// A version no longer needed (swapped out and beyond `keep_versions`),
    /// to be unloaded off this thread.
    Retired(Plugin),
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
    },
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
}

pub struct TickLoop {
    settings: TickSettings,
    dt: f64,
    events: EventSink,
    output: Box<dyn Fn(TickOutput) + Send>,
    state: Option<State>,
    snapshot: Option<Snapshot>,
    /// `init` has completed once; it never runs again.
    initialized: bool,
    current: Option<Plugin>,
    /// Earlier versions that ran without fault, newest first.
    earlier: VecDeque<Plugin>,
    /// `None` while nothing ticks (no version yet, or paused after a fault).
    schedule: Option<Schedule>,
    /// Ticks completed.
    ticks: u64,
    /// Set by a swap until the new version's first tick has run.
    first_tick_due: Option<(u64, Option<Instant>)>,
}

impl TickLoop {
    pub fn new(
        settings: TickSettings,
        events: EventSink,
        output: Box<dyn Fn(TickOutput) + Send>,
    ) -> TickLoop {
        TickLoop {
            // Exactly tick_ms / 1000 for whole milliseconds.
            dt: settings.period.as_secs_f64(),
            settings,
            events,
            output,
            state: None,
            snapshot: None,
            initialized: false,
            current: None,
            earlier: VecDeque::new(),
            schedule: None,
            ticks: 0,
            first_tick_due: None,
        }
    }

    pub fn run(mut self, inbox: Receiver<TickInput>) {
        tighten_timer_slack();
        crate::ext::log_to(std::sync::Arc::clone(&self.events));
        let prepared = guard::prepare_thread().and_then(|thread_guard| {
            Watchdog::for_this_thread(self.settings.call_timeout)
                .map(|(watchdog, calls)| (thread_guard, watchdog, calls))
        });
        let (thread_guard, watchdog, calls) = match prepared {
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
        loop {
            let input = match &self.schedule {
                None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(s) => {
                    inbox.recv_timeout(s.next_deadline().saturating_duration_since(Instant::now()))
                }
            };
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
                Ok(TickInput::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.tick(&calls);
                    if self.settings.max_ticks.is_some_and(|max| self.ticks >= max) {
                        break;
                    }
                }
            }
        }
        self.finish(&calls);
        // The watchdog must stop before this thread can exit; the alternate
        // stack is given back after the last plugin call.
        drop(watchdog);
        drop(thread_guard);
    }

    fn install(
        &mut self,
        plugin: Plugin,
        fresh_state: Option<Fresh>,
        migration: Option<Migration>,
        build_exited_at: Option<Instant>,
        calls: &CallWatch,
    ) {
        let mut restored = None;
        if self.state.is_none() {
            let Some(fresh) = fresh_state else {
                // The reload stage sends a state with the first version;
                // without one there is nothing to run the plugin on.
                (self.output)(TickOutput::Retired(plugin));
                return;
            };
            let mut state = fresh.state;
            if let Some((old, old_version)) = &fresh.convert_from {
                // A saved state of another version: the new code's hook
                // finishes carrying it over.
                if let Err(why) =
                    self.run_migrate_hook(&plugin, old, *old_version, &mut state, calls)
                {
                    self.refuse(plugin, why);
                    return;
                }
            }
            self.snapshot = Some(Snapshot::new(state.size()));
            self.state = Some(state);
            if fresh.restored.is_some() {
                // A restored state was initialised in an earlier run.
                self.initialized = true;
                restored = fresh.restored;
            }
        }
        // The new block, if the layout changes, is made without touching the
        // current state: a refusal leaves everything as it was, and nobody
        // was told anything.
        let migrated = match migration {
            None => None,
            Some(m) => match self.migrated_state(&plugin, m, calls) {
                Ok(done) => Some(done),
                Err(why) => {
                    self.refuse(plugin, why);
                    return;
                }
            },
        };
        // Now the swap is certain: the version going out gets its say, on
        // the state as it knows it.
        let on_unload = self
            .current
            .as_ref()
            .and_then(|old| Some((old.version(), old.ext()?.on_unload?)));
        if let Some((old_version, hook)) = on_unload
            && let Err(fault) = self.call_hook(hook, calls)
        {
            let report =
                self.fault_report(old_version, "on_unload", &fault, Recovery::SwapWentAhead);
            (self.events)(Event::Fault(report));
        }
        let summary = migrated.map(|(state, summary)| {
            self.snapshot = Some(Snapshot::new(state.size()));
            self.state = Some(state);
            summary
        });
        if let (Some(layout), Some(state)) = (plugin.layout(), &mut self.state) {
            reset_transient(layout, state);
        }
        let swap = Swap {
            version: plugin.version(),
            lib_name: plugin.lib_name().to_owned(),
            api_version: plugin.api().api_version,
            since_build_exit: build_exited_at.map(|t| t.elapsed()).unwrap_or_default(),
            first_load: !self.initialized || restored.is_some(),
            migrated: summary.clone(),
        };
        if let Some(old) = self.current.replace(plugin) {
            self.earlier.push_front(old);
            while self.earlier.len() + 1 > self.settings.keep_versions.max(1) {
                if let Some(oldest) = self.earlier.pop_back() {
                    (self.output)(TickOutput::Retired(oldest));
                }
            }
        }
        (self.events)(Event::Swapped(swap));
        if let Some(note) = restored {
            self.report_with(StateMoment::Restored, Some(note));
        } else if !self.initialized {
            if !self.run_init(calls) {
                return;
            }
            self.report(StateMoment::Initial);
        } else {
            let on_reload = self
                .current
                .as_ref()
                .and_then(|p| p.ext())
                .and_then(|e| e.on_reload);
            if let Some(hook) = on_reload
                && let Err(fault) = self.call_hook(hook, calls)
            {
                self.recover("on_reload", fault);
                return;
            }
            // After on_reload, so the line shows what the new code starts from.
            self.report(if summary.is_some() {
                StateMoment::Migrated
            } else {
                StateMoment::Preserved
            });
            // After on_reload, which may have re-pointed what it had to.
            if let Some(previous) = self.earlier.front() {
                self.warn_dangling(previous);
            }
        }
        if self.schedule.is_none() {
            self.schedule = Some(Schedule::new(self.settings.period, Instant::now()));
        }
        self.first_tick_due = self
            .current
            .as_ref()
            .map(|p| (p.version(), build_exited_at));
    }

    /// The new block for a swap that changes the layout: filled from the
    /// current state by the plan, then by the new version's `migrate` hook.
    fn migrated_state(
        &mut self,
        plugin: &Plugin,
        m: Migration,
        calls: &CallWatch,
    ) -> Result<(State, String), Refusal> {
        let mut new = m.new_state;
        let old = self
            .state
            .as_ref()
            .map(|s| s.bytes().to_vec())
            .unwrap_or_default();
        if let Some(plan) = &m.plan {
            plan.apply(&old, new.bytes_mut());
        }
        self.run_migrate_hook(plugin, &old, m.old_version, &mut new, calls)?;
        Ok((new, m.summary))
    }

    /// Runs the new version's `migrate` hook, if it has one, from `old`
    /// into `new`.
    fn run_migrate_hook(
        &mut self,
        plugin: &Plugin,
        old: &[u8],
        old_version: u32,
        new: &mut State,
        calls: &CallWatch,
    ) -> Result<(), Refusal> {
        let Some(hook) = plugin.ext().and_then(|e| e.migrate) else {
            return Ok(());
        };
        calls.begin(Instant::now());
        // SAFETY: `old` and `new` are valid for their sizes; this thread is
        // the only caller and ran `prepare_thread`.
        let result = unsafe { guard::call_migrate(hook, old, old_version, new.bytes_mut()) };
        calls.end();
        match result {
            Ok(0) => Ok(()),
            Ok(code) => Err(Refusal::Declined(format!(
                "the migrate hook of v{} refused the state (returned {code})",
                plugin.version()
            ))),
            Err(fault) => Err(Refusal::Faulted(fault)),
        }
    }

    /// A new version that will not take the state: said, and handed back.
    /// The running version and its state stay as they were.
    fn refuse(&mut self, plugin: Plugin, why: Refusal) {
        let running = self.current.as_ref().map(Plugin::version);
        if running.is_none() && !self.initialized {
            // A first version: no state is in use yet.
            self.state = None;
            self.snapshot = None;
        }
        match why {
            Refusal::Declined(reason) => (self.output)(TickOutput::Declined {
                plugin,
                running,
                reason,
            }),
            Refusal::Faulted(fault) => {
                let report = self.fault_report(
                    plugin.version(),
                    "migrate",
                    &fault,
                    Recovery::Refused { keeping: running },
                );
                let cause = format!("{} in migrate", signal_or_timeout(&fault));
                (self.events)(Event::Fault(report));
                (self.output)(TickOutput::Faulted {
                    plugin,
                    running,
                    cause,
                });
            }
        }
    }

    /// Calls an extended-ABI hook on the state, under the guard and the
    /// watchdog.
    fn call_hook(&mut self, hook: hotreload_abi::HookFn, calls: &CallWatch) -> Result<(), Fault> {
        let host = self.host_context();
        let Some(state) = &mut self.state else {
            return Ok(());
        };
        calls.begin(Instant::now());
        // SAFETY: the state is the block of the size its version was checked
        // against; this thread is the only caller and ran `prepare_thread`.
        let result = unsafe { guard::call_hook(hook, state.as_mut_ptr(), &host) };
        calls.end();
        result
    }

    fn host_context(&self) -> HostContext {
        crate::ext::host_context(self.settings.seed, self.ticks)
    }

    /// Warns about values in the state that point into `old`'s library.
    fn warn_dangling(&self, old: &Plugin) {
        let Some(state) = &self.state else { return };
        let layout = self.current.as_ref().and_then(|p| p.layout());
        for offset in crate::diagnostics::pointers_into(state.bytes(), |a| old.contains(a)) {
            let field = layout
                .and_then(|l| l.field_at(offset))
                .map(|f| f.name.clone());
            (self.events)(Event::Dangling {
                version: old.version(),
                offset,
                field,
            });
        }
    }

    /// Runs `init` on the current version; on a fault, recovers and returns
    /// false.
    fn run_init(&mut self, calls: &CallWatch) -> bool {
        let ext_init = self
            .current
            .as_ref()
            .and_then(|p| p.ext())
            .and_then(|e| e.init);
        match (&mut self.state, &mut self.snapshot) {
            (Some(state), Some(snapshot)) => snapshot.take(state, self.ticks),
            _ => return false,
        }
        let result = match ext_init {
            Some(hook) => self.call_hook(hook, calls),
            None => {
                let (Some(plugin), Some(state)) = (&self.current, &mut self.state) else {
                    return false;
                };
                calls.begin(Instant::now());
                // SAFETY: the state has the size this plugin was checked
                // against (the reload stage allocated it with that size, or
                // checked it); this thread is the only caller and ran
                // `guard::prepare_thread`.
                let result = unsafe { plugin.init(state) };
                calls.end();
                result
            }
        };
        match result {
            Ok(()) => {
                self.initialized = true;
                true
            }
            Err(fault) => {
                self.recover("init", fault);
                false
            }
        }
    }

    fn tick(&mut self, calls: &CallWatch) {
        let (Some(plugin), Some(state), Some(snapshot), Some(schedule)) = (
            &self.current,
            &mut self.state,
            &mut self.snapshot,
            &mut self.schedule,
        ) else {
            return;
        };
        let now = Instant::now();
        if let Some(skip) = schedule.start_tick(now) {
            (self.events)(Event::Stalled {
                behind: skip.behind,
                skipped: skip.ticks,
            });
        }
        if snapshot.due(self.ticks) {
            snapshot.take(state, self.ticks);
        }
        calls.begin(now);
        // SAFETY: as in `run_init`.
        let result = unsafe { plugin.tick(state, self.dt) };
        calls.end();
        if let Err(fault) = result {
            self.recover("tick", fault);
            return;
        }
        self.ticks += 1;
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
        {
            self.save(false);
        }
        if let Some((version, Some(exited))) = self.first_tick_due.take() {
            (self.events)(Event::FirstTick {
                version,
                since_build_exit: exited.elapsed(),
            });
        }
    }

    /// After a fault in `call`: put the state back, drop the faulting
    /// version, hand over to the newest earlier one or pause, and say so.
    fn recover(&mut self, call: &'static str, fault: Fault) {
        // The symbol must be looked up while the faulting library is mapped.
        let symbol = fault.symbol();
        let faulted_at = self.ticks;
        let restored_to_tick = match (&self.snapshot, &mut self.state) {
            (Some(snapshot), Some(state)) => snapshot.restore(state),
            _ => None,
        };
        if let Some(tick) = restored_to_tick {
            self.ticks = tick;
        }
        let Some(bad) = self.current.take() else {
            return;
        };
        self.first_tick_due = None;
        let previous = self.earlier.pop_front();
        let previous = match previous {
            Some(p) if self.carry_back(&bad, &p) => Some(p),
            Some(p) => {
                // The state cannot be carried back to that version's layout:
                // keep it loaded, but pause rather than run it on bytes it
                // does not understand.
                self.earlier.push_front(p);
                None
            }
            None => None,
        };
        let recovery = match previous {
            Some(previous) => {
                let to = previous.version();
                self.current = Some(previous);
                Recovery::RolledBack {
                    to,
                    restored_to_tick,
                }
            }
            None => {
                self.schedule = None;
                Recovery::Paused { restored_to_tick }
            }
        };
        let cause = self.cause(&fault);
        let summary = format!("{} in {call}", signal_or_timeout(&fault));
        (self.events)(Event::Fault(FaultReport {
            version: bad.version(),
            call,
            tick: faulted_at,
            cause,
            symbol,
            recovery,
        }));
        let running = self.current.as_ref().map(Plugin::version);
        (self.output)(TickOutput::Faulted {
            plugin: bad,
            running,
            cause: summary,
        });
    }

    fn finish(mut self, calls: &CallWatch) {
        let mut shutdown_faulted = false;
        match (&self.current, &mut self.state) {
            (Some(plugin), Some(state)) if self.initialized => {
                calls.begin(Instant::now());
                // SAFETY: as in `run_init`.
                let result = unsafe { plugin.shutdown(state) };
                calls.end();
                if let Err(fault) = result {
                    shutdown_faulted = true;
                    let cause = self.cause(&fault);
                    (self.events)(Event::Fault(FaultReport {
                        version: plugin.version(),
                        call: "shutdown",
                        tick: self.ticks,
                        cause,
                        symbol: fault.symbol(),
                        recovery: Recovery::Exiting,
                    }));
                }
                self.report(StateMoment::Final);
            }
            (_, Some(_)) => self.report(StateMoment::Final),
            (_, None) => self.report(StateMoment::Absent),
        }
        // Only a state that some version ran on is worth saving: a run whose
        // builds all failed leaves the file as it was.
        if self.initialized {
            self.save(true);
        }
        if let Some(s) = &self.schedule {
            let elapsed = s
                .last_start
                .map(|t| t.saturating_duration_since(s.origin()))
                .unwrap_or_default();
            (self.events)(Event::TickStats(TickStats {
                ticks: self.ticks,
                period: self.settings.period,
                elapsed,
                max_late: s.max_late,
                skipped: s.skipped,
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

    /// Before rolling back from `bad` to `to`: migrates the state (as it was
    /// before the bad call, in `bad`'s layout) back to `to`'s layout if they
    /// differ. False if it cannot be done.
    fn carry_back(&mut self, bad: &Plugin, to: &Plugin) -> bool {
        let Some(state) = &self.state else {
            return false;
        };
        let to_size = to.api().state_size;
        let (from_layout, to_layout) = (bad.layout(), to.layout());
        let same = state.size() == to_size
            && match (from_layout, to_layout) {
                (Some(a), Some(b)) => a.same_shape(b),
                _ => bad.state_version() == to.state_version(),
            };
        if same {
            return true;
        }
        let (Some(from_layout), Some(to_layout)) = (from_layout, to_layout) else {
            return false;
        };
        let Ok(plan) = crate::migrate::plan(from_layout, to_layout) else {
            return false;
        };
        let Ok(mut back) = State::zeroed(to_size) else {
            return false;
        };
        plan.apply(state.bytes(), back.bytes_mut());
        self.snapshot = Some(Snapshot::new(back.size()));
        self.state = Some(back);
        true
    }

    fn fault_report(
        &self,
        version: u64,
        call: &'static str,
        fault: &Fault,
        recovery: Recovery,
    ) -> FaultReport {
        FaultReport {
            version,
            call,
            tick: self.ticks,
            cause: self.cause(fault),
            symbol: fault.symbol(),
            recovery,
        }
    }

    /// "SIGSEGV (address not mapped) at 0x0", "timeout after 1000 ms".
    fn cause(&self, fault: &Fault) -> String {
        if fault.is_timeout() {
            format!(
                "timeout after {} ms",
                self.settings.call_timeout.as_millis()
            )
        } else {
            fault.describe()
        }
    }

    fn report(&self, moment: StateMoment) {
        self.report_with(moment, None);
    }

    fn report_with(&self, moment: StateMoment, note: Option<String>) {
        let report = match &self.state {
            Some(state) => StateReport {
                moment,
                note,
                size: state.size(),
                tick: self.ticks,
                version: self.current.as_ref().map_or(0, Plugin::version),
                head: state.bytes()[..state.size().min(STATE_HEAD)].to_vec(),
                fields: self.describe(state),
            },
            None => StateReport {
                moment,
                note,
                size: 0,
                tick: 0,
                version: 0,
                head: Vec::new(),
                fields: None,
            },
        };
        (self.events)(Event::State(report));
    }

    /// Hands a copy of the state to be written to the state file (off this
    /// thread).
    fn save(&self, at_exit: bool) {
        let Some(state) = &self.state else { return };
        if !self.settings.saving {
            return;
        }
        let current = self.current.as_ref();
        (self.output)(TickOutput::Save(Save {
            bytes: state.bytes().to_vec(),
            state_version: current.map_or(0, Plugin::state_version),
            layout: current.and_then(|p| p.layout().cloned()),
            tick: self.ticks,
            at_exit,
        }));
    }

    /// The plugin's own description of the state, else the state by field.
    fn describe(&self, state: &State) -> Option<String> {
        let plugin = self.current.as_ref()?;
        if let Some(describe) = plugin.ext().and_then(|e| e.describe) {
            // SAFETY: the state is the block this version was checked
            // against; this thread is the only caller and ran
            // `prepare_thread`. A fault here only loses the description.
            if let Ok(text) = unsafe { guard::call_describe(describe, state.bytes()) } {
                return Some(text);
            }
        }
        const SHOWN: usize = 12;
        plugin
            .layout()
            .map(|l| crate::layout::format_state(l, state.bytes(), SHOWN))
    }
}

/// Zeroes the fields the plugin marked transient: they are rebuilt by the
/// new code on every reload.
fn reset_transient(layout: &Layout, state: &mut State) {
    let bytes = state.bytes_mut();
    for field in layout.fields.iter().filter(|f| f.transient) {
        if let Some(span) = bytes.get_mut(field.offset..field.offset + field.size()) {
            span.fill(0);
        }
    }
}

fn signal_or_timeout(fault: &Fault) -> String {
    if fault.is_timeout() {
        "timeout".into()
    } else {
        guard::signal_name(fault.signal)
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
