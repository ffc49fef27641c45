//! The last stage: the tick loop, where a checked version is swapped in.
//!
//! One thread owns the state and the running version, and is the only thread
//! that calls plugin code once a version is live. Between two ticks it waits
//! on its inbox until the next deadline: a new version is installed the moment
//! it arrives (never in the middle of a tick), and a stop request is honoured
//! after the tick in progress. Nothing here waits for a build, a copy or a
//! load: those arrive finished.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::event::{Event, EventSink, StateMoment, StateReport, Swap, TickStats};
use crate::plugin::Plugin;
use crate::schedule::Schedule;
use crate::state::State;

/// How many leading bytes of the state a report carries.
const STATE_HEAD: usize = 16;

pub enum TickInput {
    /// A version that passed every check. The first one comes with the
    /// state, allocated and zeroed off this thread; its `init` runs.
    Swap {
        plugin: Plugin,
        fresh_state: Option<State>,
        build_exited_at: Option<Instant>,
    },
    Stop,
}

/// What the tick loop hands back to the rest of the engine.
pub enum TickOutput {
    /// A version that was swapped out, to be unloaded off this thread.
    Retired(Plugin),
    /// The loop ended (stop request or tick limit); nothing of the plugin's
    /// runs any more.
    Finished,
}

pub struct TickLoop {
    period: Duration,
    dt: f64,
    max_ticks: Option<u64>,
    events: EventSink,
    output: Box<dyn Fn(TickOutput) + Send>,
    running: Option<(Plugin, State)>,
    schedule: Option<Schedule>,
    ticks: u64,
    /// Set by a swap until the new version's first tick has run.
    first_tick_due: Option<(u64, Option<Instant>)>,
}

impl TickLoop {
    pub fn new(
        period: Duration,
        max_ticks: Option<u64>,
        events: EventSink,
        output: Box<dyn Fn(TickOutput) + Send>,
    ) -> TickLoop {
        TickLoop {
            period,
            // Exactly tick_ms / 1000 for whole milliseconds.
            dt: period.as_secs_f64(),
            max_ticks,
            events,
            output,
            running: None,
            schedule: None,
            ticks: 0,
            first_tick_due: None,
        }
    }

    pub fn run(mut self, inbox: Receiver<TickInput>) {
        tighten_timer_slack();
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
                    build_exited_at,
                }) => self.install(plugin, fresh_state, build_exited_at),
                Ok(TickInput::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.tick();
                    if self.max_ticks.is_some_and(|max| self.ticks >= max) {
                        break;
                    }
                }
            }
        }
        self.finish();
    }

    fn install(
        &mut self,
        plugin: Plugin,
        fresh_state: Option<State>,
        build_exited_at: Option<Instant>,
    ) {
        let first_load = self.running.is_none();
        let swap = Swap {
            version: plugin.version(),
            lib_name: plugin.lib_name().to_owned(),
            api_version: plugin.api().api_version,
            since_build_exit: build_exited_at.map(|t| t.elapsed()).unwrap_or_default(),
            first_load,
        };
        match (self.running.take(), fresh_state) {
            (None, Some(mut state)) => {
                (self.events)(Event::Swapped(swap));
                // SAFETY: the reload stage allocated the state with this
                // plugin's `state_size`; this thread is the only caller.
                unsafe { plugin.init(&mut state) };
                self.running = Some((plugin, state));
                self.schedule = Some(Schedule::new(self.period, Instant::now()));
                self.report(StateMoment::Initial);
            }
            (Some((old, state)), _) => {
                // The reload stage checked `state_size` against this state.
                self.running = Some((plugin, state));
                (self.events)(Event::Swapped(swap));
                self.report(StateMoment::Preserved);
                (self.output)(TickOutput::Retired(old));
            }
            (None, None) => {
                // The reload stage sends a state with every first version;
                // without one there is nothing to run the plugin on.
                (self.output)(TickOutput::Retired(plugin));
                return;
            }
        }
        self.first_tick_due = self
            .running
            .as_ref()
            .map(|(p, _)| (p.version(), build_exited_at));
    }

    fn tick(&mut self) {
        let (Some((plugin, state)), Some(schedule)) = (&mut self.running, &mut self.schedule)
        else {
            return;
        };
        if let Some(skip) = schedule.start_tick(Instant::now()) {
            (self.events)(Event::Stalled {
                behind: skip.behind,
                skipped: skip.ticks,
            });
        }
        // SAFETY: `state` has the size this plugin was checked against (the
        // first version allocated it; later ones were checked against it).
        unsafe { plugin.tick(state, self.dt) };
        self.ticks += 1;
        if let Some((version, exited)) = self.first_tick_due.take() {
            if let Some(exited) = exited {
                (self.events)(Event::FirstTick {
                    version,
                    since_build_exit: exited.elapsed(),
                });
            }
        }
    }

    fn finish(mut self) {
        if let Some((plugin, state)) = &mut self.running {
            // SAFETY: as in `tick`.
            unsafe { plugin.shutdown(state) };
            self.report(StateMoment::Final);
        } else {
            self.report(StateMoment::Absent);
        }
        if let Some(s) = &self.schedule {
            let elapsed = s
                .last_start
                .map(|t| t.saturating_duration_since(s.origin()))
                .unwrap_or_default();
            (self.events)(Event::TickStats(TickStats {
                ticks: self.ticks,
                period: self.period,
                elapsed,
                max_late: s.max_late,
                skipped: s.skipped,
            }));
        }
        if let Some((plugin, _state)) = self.running.take() {
            (self.output)(TickOutput::Retired(plugin));
        }
        (self.output)(TickOutput::Finished);
    }

    fn report(&self, moment: StateMoment) {
        let report = match &self.running {
            Some((plugin, state)) => StateReport {
                moment,
                size: state.size(),
                tick: self.ticks,
                version: plugin.version(),
                head: state.bytes()[..state.size().min(STATE_HEAD)].to_vec(),
            },
            None => StateReport {
                moment,
                size: 0,
                tick: 0,
                version: 0,
                head: Vec::new(),
            },
        };
        (self.events)(Event::State(report));
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
