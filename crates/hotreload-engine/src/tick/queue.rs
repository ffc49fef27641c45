//! What waits in the tick thread's inbox when it gets behind: an overdue
//! tick runs before a queued swap is installed, and swaps queued behind a
//! slow one collapse to the newest when the skipped ones change nothing of
//! the state. And what schedules that ended measured, for the figures at
//! exit.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::event::Event;
use crate::guard::watchdog::CallWatch;
use crate::tick::schedule::Schedule;

use super::{TickInput, TickLoop, TickOutput};

/// What the schedules that ended measured, added up.
#[derive(Default)]
pub(super) struct PastRuns {
    pub(super) runs: u32,
    pub(super) elapsed: Duration,
    pub(super) max_late: Duration,
    pub(super) skipped: u64,
}

impl PastRuns {
    pub(super) fn add(&mut self, s: &Schedule) {
        self.runs += 1;
        self.elapsed += s
            .last_start
            .map(|t| t.saturating_duration_since(s.origin()))
            .unwrap_or_default();
        self.max_late = self.max_late.max(s.max_late);
        self.skipped += s.skipped;
    }
}

impl TickLoop {
    /// Runs the tick that is due, if one is overdue (ticking, not held):
    /// a swap never goes before it. Whether the tick limit is reached.
    pub(super) fn tick_if_overdue(&mut self, calls: &CallWatch) -> bool {
        let overdue = !self.holding()
            && self.current.is_some()
            && self
                .schedule
                .as_ref()
                .is_some_and(|s| Instant::now() >= s.next_deadline());
        if !overdue {
            return false;
        }
        self.tick(calls);
        self.settings
            .max_ticks
            .is_some_and(|max| self.ticks_run >= max)
    }

    /// `swap`, or the newest swap queued behind it when `swap` may be
    /// skipped: it changes nothing of the state (no fresh state, no
    /// migration), so the newer one, prepared on the state as `swap` would
    /// have left it, fits the state as it is. Skipped versions go back to
    /// be unloaded, and are said. What else was taken off the inbox while
    /// looking is left in `taken`, in order.
    pub(super) fn collapse(
        &mut self,
        swap: TickInput,
        inbox: &Receiver<TickInput>,
        taken: &mut VecDeque<TickInput>,
    ) -> TickInput {
        let mut swap = swap;
        while let Ok(next) = inbox.try_recv() {
            let skippable = matches!(
                &swap,
                TickInput::Swap {
                    fresh_state: None,
                    migration: None,
                    ..
                }
            ) && taken.is_empty();
            match next {
                newer @ TickInput::Swap { .. } if skippable => {
                    let newer_version = match &newer {
                        TickInput::Swap { plugin, .. } => plugin.version(),
                        _ => 0,
                    };
                    if let TickInput::Swap { plugin, .. } = std::mem::replace(&mut swap, newer) {
                        (self.events)(Event::SwapSkipped {
                            version: plugin.version(),
                            by: newer_version,
                        });
                        (self.output)(TickOutput::Skipped {
                            plugin,
                            by: newer_version,
                        });
                    }
                }
                other => {
                    taken.push_back(other);
                    break;
                }
            }
        }
        swap
    }
}
