//! Which sources saw events, between two looks by the build stage.
//!
//! The build stage needs to know what was touched while a build ran, not
//! only when: an event whose file turns out unchanged (opened for writing and
//! closed, a build writing the same bytes again) must not make the build
//! stale. The watch thread writes every relevant event here as it happens,
//! before the quiet period has passed; the build stage takes the record when
//! a build starts and when it ends, and compares fingerprints.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub paths: BTreeSet<PathBuf>,
    /// Events were lost: any file may have changed.
    pub rescan: bool,
}

/// Shared between the watch thread (which notes) and the build stage
/// (which takes); clones share one record.
#[derive(Clone, Default)]
pub struct ChangeJournal {
    touched: Arc<Mutex<Touched>>,
}

impl ChangeJournal {
    pub fn new() -> ChangeJournal {
        ChangeJournal::default()
    }

    pub fn note(&self, path: &Path) {
        let mut touched = self.lock();
        if !touched.paths.contains(path) {
            touched.paths.insert(path.to_path_buf());
        }
    }

    pub fn note_rescan(&self) {
        self.lock().rescan = true;
    }

    /// Everything noted since the last call.
    pub fn take(&self) -> Touched {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Touched> {
        // A set of paths holds no invariant a panic elsewhere could break.
        self.touched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_returns_what_was_noted_since_the_last_take() {
        let journal = ChangeJournal::new();
        let other = journal.clone();
        other.note(Path::new("/a.c"));
        other.note(Path::new("/a.c"));
        let first = journal.take();
        assert_eq!(first.paths.len(), 1);
        assert!(!first.rescan);
        other.note_rescan();
        assert_eq!(
            journal.take(),
            Touched {
                paths: BTreeSet::new(),
                rescan: true
            }
        );
        assert_eq!(journal.take(), Touched::default());
    }
}
