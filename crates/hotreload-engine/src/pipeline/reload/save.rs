//! Writing the state file from the copies the tick thread hands over: at
//! exit (retried, then rescued elsewhere if it cannot be written), every
//! `--save-every` ticks, and on request. A failing disk is said once, when
//! saves start failing, and again when they work; a save asked for is
//! always answered.

use std::time::Duration;

use crate::event::Event;
use crate::state::persist::{self, SavedRef};
use crate::tick::Save;

use super::{Reloader, settle_process};

impl Reloader {
    /// A periodic save: from the fault snapshot (the state before the last
    /// tick, or a few ticks more for a large state; the file says which
    /// tick), copied here; when there is none to hand (nothing copied yet
    /// since the layout changed), the tick thread is asked for a copy.
    pub(super) fn save_due(&mut self) {
        let copy = self
            .last_good
            .as_ref()
            .and_then(|g| g.snapshot_copy(Duration::from_millis(20)));
        match copy {
            Some(copy) => self.save(Save {
                bytes: copy.bytes,
                state_version: copy.state_version,
                layout: copy.layout,
                tick: copy.tick,
                at_exit: false,
                requested: false,
            }),
            None => {
                let _ = self.tick.send(crate::tick::TickInput::SavePeriodic);
            }
        }
    }

    pub(super) fn save(&mut self, save: Save) {
        let Some(path) = self.config.state_file.clone() else {
            return;
        };
        let saved = SavedRef {
            state: &save.bytes,
            state_version: save.state_version,
            layout: save.layout.as_deref(),
        };
        // A periodic save that fails is tried again at the next one; the
        // save at exit is the last chance, so it is retried here, a moment
        // apart (a disk that was full a moment ago, an NFS hiccup).
        let attempts: &[Duration] = if save.at_exit {
            &[
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_millis(400),
            ]
        } else {
            &[Duration::ZERO]
        };
        let mut failure = None;
        for pause in attempts {
            std::thread::sleep(*pause);
            // A save needs the working folder, the umask and the file size
            // limit as the server had them.
            settle_process(&self.events, self.running, "before a save");
            match persist::save(&path, &saved) {
                Ok(()) => {
                    failure = None;
                    break;
                }
                Err(e) => failure = Some(e.to_string()),
            }
        }
        let Some(why) = failure else {
            if std::mem::take(&mut self.unsaved) && !save.at_exit {
                self.emit(Event::SaveRecovered {
                    path: path.clone(),
                    tick: save.tick,
                });
            }
            if save.at_exit
                && let Some(last_good) = &self.last_good
            {
                last_good.mark_final_saved();
            }
            if save.at_exit || save.requested {
                self.emit(Event::StateSaved {
                    path,
                    tick: save.tick,
                });
            }
            return;
        };
        let streak = std::mem::replace(&mut self.unsaved, true);
        if !save.at_exit {
            // A failing disk is said once, when saves start failing, not at
            // every save; and again when they work again. A save asked for
            // is always answered.
            if !streak || save.requested {
                self.emit(Event::SaveFailed {
                    path,
                    why,
                    at_exit: false,
                    rescued_to: None,
                });
            }
            return;
        }
        let rescued_to = crate::state::claim::rescue(&path, &saved);
        self.emit(Event::SaveFailed {
            path,
            why,
            at_exit: true,
            rescued_to,
        });
    }
}
