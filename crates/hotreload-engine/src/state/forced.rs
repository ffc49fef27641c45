//! Saving the state when the host will not wait for plugin code any more.
//!
//! A second Ctrl-C while stopping means "exit now": `shutdown` (or a tick)
//! is stuck in plugin code and the user will not wait for the watchdog. The
//! host still holds the state as of the last call that completed — the
//! snapshot taken before the stuck call — and saving it calls no plugin
//! code, so a forced exit saves it instead of throwing the session away.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::persist::{self, SavedRef};
use super::snapshot::SharedSnapshot;

/// How long a forced exit waits for a copy in progress on the tick thread:
/// a 64 MiB state copies in about 10 ms.
const COPY_PATIENCE: Duration = Duration::from_secs(1);

/// What a forced exit did about the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForcedSave {
    /// No `--state-file`: there is nowhere to save to.
    NotAsked,
    /// The regular save at exit already happened; it is newer than the
    /// snapshot and is left as it is.
    AlreadySaved,
    /// No version ever ran on a state.
    NothingToSave,
    /// Saved: the path, and the ticks completed in the saved state.
    Saved { path: PathBuf, tick: u64 },
    /// Could not be saved, and why.
    Failed { path: PathBuf, why: String },
}

/// A cloneable handle on the state for a forced exit, usable from any thread
/// (a signal handler thread), whatever the tick thread is doing.
#[derive(Clone)]
pub struct LastGood {
    snapshot: SharedSnapshot,
    state_file: Option<PathBuf>,
    /// Set once the regular save at exit has succeeded.
    final_saved: Arc<AtomicBool>,
}

impl LastGood {
    pub fn new(snapshot: SharedSnapshot, state_file: Option<PathBuf>) -> LastGood {
        LastGood {
            snapshot,
            state_file,
            final_saved: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The last snapshot of a live state, copied off the tick thread (for a
    /// trial); none when no version has run on it, nothing was copied since
    /// the layout changed, or the tick thread holds it past `patience`.
    pub fn snapshot_copy(&self, patience: std::time::Duration) -> Option<super::snapshot::Copied> {
        self.snapshot.read(patience)
    }

    /// The snapshot itself, for a reader that follows what changes after
    /// its copy (a migration worked out ahead of the swap).
    pub fn snapshot(&self) -> &SharedSnapshot {
        &self.snapshot
    }

    /// [`SharedSnapshot::export_into`](super::snapshot::SharedSnapshot::export_into):
    /// brings a trial's image up to date with the last good state.
    pub fn export_into(
        &self,
        patience: std::time::Duration,
        held: &mut Option<u64>,
        image: &mut dyn super::snapshot::CopyTarget,
    ) -> Option<super::snapshot::CopyMeta> {
        self.snapshot.export_into(patience, held, image)
    }

    /// Marks the regular save at exit as done: a forced exit after it must
    /// not overwrite it with the older snapshot.
    pub fn mark_final_saved(&self) {
        self.final_saved.store(true, Ordering::Release);
    }

    /// Saves the last completed tick's state to the state file, if there is
    /// one and nothing newer was saved.
    pub fn save(&self) -> ForcedSave {
        let Some(path) = self.state_file.clone() else {
            return ForcedSave::NotAsked;
        };
        if self.final_saved.load(Ordering::Acquire) {
            return ForcedSave::AlreadySaved;
        }
        let Some(copy) = self.snapshot.read(COPY_PATIENCE) else {
            return ForcedSave::NothingToSave;
        };
        let saved = SavedRef {
            state: &copy.bytes,
            state_version: copy.state_version,
            layout: copy.layout.as_deref(),
        };
        match persist::save(&path, &saved) {
            Ok(()) => ForcedSave::Saved {
                path,
                tick: copy.tick,
            },
            Err(e) => ForcedSave::Failed {
                path,
                why: e.to_string(),
            },
        }
    }
}
