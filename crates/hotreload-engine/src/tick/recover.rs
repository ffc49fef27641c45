//! After a fault in plugin code: put the state back, drop the faulting
//! version, hand over to the newest earlier one (or pause), and say so.

use crate::event::{Event, FaultReport, Recovery};
use crate::guard::{self, Fault};
use crate::plugin::Plugin;

use super::{TickLoop, TickOutput};

impl TickLoop {
    /// After a fault in `call`: put the state back, drop the faulting
    /// version, hand over to the newest earlier one or pause, and say so.
    pub(super) fn recover(&mut self, call: &'static str, fault: Fault) {
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
        let mut cannot_roll_back = None;
        let mut carried_back = None;
        let previous = match previous {
            Some(p) => match self.carry_back(&bad, &p) {
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
        let recovery = match previous {
            Some(previous) => {
                let to = previous.version();
                self.current = Some(previous);
                Recovery::RolledBack {
                    to,
                    restored_to_tick,
                    carried_back,
                }
            }
            None => {
                self.schedule = None;
                Recovery::Paused {
                    restored_to_tick,
                    cannot_roll_back,
                }
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

    pub(super) fn fault_report(
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
    pub(super) fn cause(&self, fault: &Fault) -> String {
        if fault.is_timeout() {
            format!(
                "timeout after {} ms",
                self.settings.call_timeout.as_millis()
            )
        } else {
            fault.describe()
        }
    }
}

pub(super) fn signal_or_timeout(fault: &Fault) -> String {
    if fault.is_timeout() {
        "timeout".into()
    } else {
        guard::signal_name(fault.signal)
    }
}
