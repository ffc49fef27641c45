//! After a fault in plugin code: put the state back, drop the faulting
//! version, hand over to the newest earlier one (or pause), and say so.

use crate::event::{Event, FaultReport, Recovery};
use crate::guard::{self, Fault};
use crate::plugin::Plugin;

use super::{Owner, TickLoop, TickOutput};

impl TickLoop {
    /// After a fault in `call`: put the state back (if the fault came during
    /// a call, `restore`), drop the faulting version, hand over to the
    /// newest earlier one or pause, and say so.
    pub(super) fn recover(&mut self, call: &'static str, fault: Fault, restore: bool) {
        // What the faulting call did to process-wide state is the faulting
        // version's, said while it is still the current one.
        self.say_repairs(call);
        // Named while the faulting library is still mapped.
        let (cause, symbol) = self.cause_and_place(&fault);
        let faulted_at = self.ticks;
        let restored_to_tick = match &mut self.state {
            Some(state) if restore => self.snapshot.restore(state),
            _ => None,
        };
        if let Some(tick) = restored_to_tick {
            self.ticks = tick;
        }
        if fault.is_timeout()
            && let Some(schedule) = &mut self.schedule
        {
            // The time the hung call took is in the fault line; the ticks
            // it cost need no line of their own.
            schedule.pass_missed(std::time::Instant::now());
        }
        let Some(bad) = self.current.take() else {
            return;
        };
        self.first_tick_due = None;
        let previous = self.earlier.pop_front();
        let mut cannot_roll_back = None;
        let mut carried_back = None;
        let previous = match previous {
            Some(p) => match self.carry_back(&Owner::of(&bad), &p) {
                Ok(account) => {
                    carried_back = account;
                    Some(p)
                }
                Err(why) => {
                    // The state cannot be carried back to that version's
                    // layout: keep it loaded, but pause rather than run it
                    // on bytes it does not understand.
                    cannot_roll_back = Some((p.version(), why));
                    self.earlier.push_front(p);
                    None
                }
            },
            None => None,
        };
        // A fault can come of a handler replaced around the interposers; the
        // version taking over must run under the guard's own.
        self.reassert_handlers("by the time of a fault");
        let recovery = match previous {
            Some(previous) => {
                let to = previous.version();
                self.snapshot
                    .set_owner(previous.state_version(), previous.layout().cloned());
                self.owner = Some(Owner::of(&previous));
                self.current = Some(previous);
                self.board
                    .set_version(self.current.as_ref().map(Plugin::version));
                Recovery::RolledBack {
                    to,
                    restored_to_tick,
                    carried_back,
                }
            }
            None => {
                if let Some(schedule) = self.schedule.take() {
                    self.past_runs.add(&schedule);
                }
                self.board.set_version(None);
                // The reload thread brings this one back (see
                // `take_over_from_disk`): the newest kept only on disk.
                let loaded: Vec<u64> = self.earlier.iter().map(Plugin::version).collect();
                let from_disk = self
                    .board
                    .on_disk()
                    .into_iter()
                    .rev()
                    .find(|v| *v != bad.version() && !loaded.contains(v));
                Recovery::Paused {
                    restored_to_tick,
                    cannot_roll_back,
                    from_disk,
                }
            }
        };
        self.publish_loaded();
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
            blame_build: !fault.killed_from_outside(),
        });
    }

    pub(super) fn fault_report(
        &self,
        version: u64,
        call: &'static str,
        fault: &Fault,
        recovery: Recovery,
    ) -> FaultReport {
        let (cause, symbol) = self.cause_and_place(fault);
        FaultReport {
            version,
            call,
            tick: self.ticks,
            cause,
            symbol,
            recovery,
        }
    }

    /// What happened and where, for the `[fault]` line. An abort that a
    /// Rust panic printed itself into stderr just before is that panic: its
    /// message and source location say far more than `abort` in the C
    /// library. Must be asked while the faulting library is mapped.
    pub(super) fn cause_and_place(&self, fault: &Fault) -> (String, Option<String>) {
        if let Some(panic) = &fault.panic {
            // The library recorded it itself; what it printed on stderr
            // says the same, and is not to be said again at a later abort.
            let _ = crate::console::recent_panic();
            return (panic.clone(), None);
        }
        if fault.signal == libc::SIGABRT
            && let Some(panic) = crate::console::recent_panic()
        {
            return (
                format!(
                    "panicked at {}: {:?} (SIGABRT)",
                    panic.location, panic.message
                ),
                None,
            );
        }
        (self.cause(fault), fault.symbol())
    }

    /// "SIGSEGV (address not mapped) at 0x0", "timeout after 1000 ms".
    pub(super) fn cause(&self, fault: &Fault) -> String {
        if fault.signal == guard::WORKER_STOPPED {
            format!(
                "timeout after {} ms: the worker process was stopped (SIGSTOP, or a debugger); it is killed",
                self.settings.call_timeout.as_millis()
            )
        } else if fault.is_timeout() {
            format!(
                "timeout after {} ms",
                self.settings.call_timeout.as_millis()
            )
        } else {
            fault.describe()
        }
    }
}

/// A word or two for the fault, for a build refused for having faulted:
/// `SIGSEGV`, `timeout`, `exit(3)`.
pub(super) fn signal_or_timeout(fault: &Fault) -> String {
    if fault.is_timeout() {
        "timeout".into()
    } else if fault.signal == guard::LEFT_BY_EXIT {
        let (name, status) = fault.exit_call();
        format!("{name}({status})")
    } else if fault.signal == guard::WORKER_DIED && fault.code < 0 {
        format!("worker killed by {}", guard::signal_name(-fault.code))
    } else if fault.signal == guard::WORKER_DIED {
        format!("worker exit status {}", fault.code)
    } else if fault.signal == guard::LEFT_BY_EXEC {
        "exec".into()
    } else if fault.is_exit() {
        "pthread_exit".into()
    } else {
        guard::signal_name(fault.signal)
    }
}
