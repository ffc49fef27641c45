//! Whether a build's output is stale: did a source really change while it
//! ran?
//!
//! Decided from what changed, not from when events came. When a build
//! starts, the sources touched since the last look are fingerprinted (their
//! batches may still be on the way); while it runs, a batch that updates the
//! record keeps the fingerprint the build started from. When it ends, every
//! source touched meanwhile is fingerprinted again: an event whose file is
//! as it was (opened for writing and closed, written and restored) does not
//! make the build stale.
//!
//! A file the build itself writes inside the watched tree cannot be told
//! from a save by its content. Ignore rules cover the usual cases (build
//! trees, `.gitignore`); for the rest, a build discarded [`Streak::LIMIT`]
//! times in a row because the same files changed while it ran names them,
//! and they are taken to be the build's own from then on, so the loop ends
//! with a loaded build and a line that says why.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use crate::watch::fingerprint::{Fingerprint, Fingerprints};
use crate::watch::journal::ChangeJournal;
use crate::watch::scope::Scope;

/// The sources as a running build found them, where the record of known
/// fingerprints may not say it.
pub struct Baseline {
    at_start: HashMap<PathBuf, Fingerprint>,
}

impl Baseline {
    /// At build start, before the build command runs.
    pub fn at_start(journal: &ChangeJournal, scope: &Scope, known: &Fingerprints) -> Baseline {
        let touched = journal.take();
        let mut at_start: HashMap<PathBuf, Fingerprint> = touched
            .paths
            .into_iter()
            .map(|p| {
                let now = Fingerprint::of(&p);
                (p, now)
            })
            .collect();
        if touched.rescan {
            // Anything may have changed since the record was made.
            let all = scope
                .files()
                .into_iter()
                .chain(known.iter().map(|(p, _)| p.clone()));
            for path in all {
                at_start
                    .entry(path)
                    .or_insert_with_key(|p| Fingerprint::of(p));
            }
        }
        Baseline { at_start }
    }

    /// A batch during the build is about to update `known` for `paths`.
    pub fn keep<'a>(&mut self, paths: impl IntoIterator<Item = &'a PathBuf>, known: &Fingerprints) {
        for path in paths {
            self.at_start
                .entry(path.clone())
                .or_insert_with(|| known.get(path));
        }
    }

    /// A rescan during the build is about to replace all of `known`.
    pub fn keep_all(&mut self, known: &Fingerprints) {
        for (path, fingerprint) in known.iter() {
            self.at_start.entry(path.clone()).or_insert(*fingerprint);
        }
    }

    /// At build end: the sources whose fingerprint differs from the one the
    /// build started from, sorted.
    pub fn changed_during(
        &self,
        journal: &ChangeJournal,
        scope: &Scope,
        known: &Fingerprints,
    ) -> Vec<PathBuf> {
        let touched = journal.take();
        let mut candidates: BTreeSet<PathBuf> = touched.paths;
        if touched.rescan {
            candidates.extend(scope.files());
            candidates.extend(self.at_start.keys().cloned());
        }
        candidates
            .into_iter()
            .filter(|p| scope.contains(p))
            .filter(|p| {
                let before = self
                    .at_start
                    .get(p)
                    .copied()
                    .unwrap_or_else(|| known.get(p));
                Fingerprint::of(p) != before
            })
            .collect()
    }
}

/// Consecutive builds discarded because sources changed while they ran.
#[derive(Default)]
pub struct Streak {
    count: u32,
    /// The files that changed during every one of them.
    common: BTreeSet<PathBuf>,
    /// Everything that changed during any of them.
    all: BTreeSet<PathBuf>,
}

/// What a discard in a streak means.
#[derive(Debug, PartialEq, Eq)]
pub enum StreakVerdict {
    /// Nothing to say yet.
    Going,
    /// These files changed during each of the last [`Streak::LIMIT`]
    /// builds: the build writes them.
    WrittenByBuild(Vec<PathBuf>),
    /// The builds keep being discarded, for different files each time.
    Unexplained(Vec<PathBuf>),
}

impl Streak {
    /// Discards in a row after which the files that keep changing are
    /// taken to be the build's own. One would misread a save during a
    /// build; a build that writes into the tree makes the same files
    /// change every time.
    pub const LIMIT: u32 = 3;

    /// A build was discarded for `changed`; `named` tells the paths named
    /// with `--watch`, which are sources whoever writes them.
    pub fn discarded(
        &mut self,
        changed: &[PathBuf],
        named: impl Fn(&PathBuf) -> bool,
    ) -> StreakVerdict {
        let changed: BTreeSet<PathBuf> = changed.iter().filter(|p| !named(p)).cloned().collect();
        self.common = if self.count == 0 {
            changed.clone()
        } else {
            self.common.intersection(&changed).cloned().collect()
        };
        self.all.extend(changed);
        self.count += 1;
        if self.count < Self::LIMIT {
            return StreakVerdict::Going;
        }
        if !self.common.is_empty() {
            let files = std::mem::take(&mut self.common).into_iter().collect();
            self.reset();
            return StreakVerdict::WrittenByBuild(files);
        }
        // A new streak starts: the files may settle into a pattern yet.
        let all = std::mem::take(&mut self.all).into_iter().collect();
        self.reset();
        StreakVerdict::Unexplained(all)
    }

    /// A build was not discarded: the streak is over.
    pub fn reset(&mut self) {
        *self = Streak::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::own::OwnFiles;
    use std::fs;
    use std::path::Path;

    fn paths(names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| PathBuf::from(format!("/w/{n}")))
            .collect()
    }

    #[test]
    fn the_same_files_in_three_discards_in_a_row_are_the_builds() {
        let mut streak = Streak::default();
        let no_target = |_: &PathBuf| false;
        assert_eq!(
            streak.discarded(&paths(&["a", "b", "logic.c"]), no_target),
            StreakVerdict::Going
        );
        assert_eq!(
            streak.discarded(&paths(&["a", "b"]), no_target),
            StreakVerdict::Going
        );
        assert_eq!(
            streak.discarded(&paths(&["b", "a", "c"]), no_target),
            StreakVerdict::WrittenByBuild(paths(&["a", "b"]))
        );
        assert_eq!(
            streak.discarded(&paths(&["a"]), no_target),
            StreakVerdict::Going,
            "a new streak"
        );
    }

    #[test]
    fn different_files_each_time_are_said_and_named_files_never_count() {
        let mut streak = Streak::default();
        let named = |p: &PathBuf| p.ends_with("logic.c");
        for (round, files) in [["a", "logic.c"], ["b", "logic.c"], ["c", "logic.c"]]
            .iter()
            .enumerate()
        {
            let verdict = streak.discarded(&paths(files), named);
            if round < 2 {
                assert_eq!(verdict, StreakVerdict::Going);
            } else {
                assert_eq!(verdict, StreakVerdict::Unexplained(paths(&["a", "b", "c"])));
            }
        }
        assert_eq!(
            streak.discarded(&paths(&["d"]), named),
            StreakVerdict::Going,
            "a new streak"
        );
    }

    #[test]
    fn only_sources_that_really_changed_during_the_build_make_it_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canon");
        let (same, edited, created) = (
            root.join("same.c"),
            root.join("edited.c"),
            root.join("new.c"),
        );
        fs::write(&same, "same").expect("write");
        fs::write(&edited, "one").expect("write");
        let scope = Scope::new(std::slice::from_ref(&root), &[], &[], &OwnFiles::new());
        let known = Fingerprints::of_files(scope.files());
        let journal = ChangeJournal::new();
        let baseline = Baseline::at_start(&journal, &scope, &known);

        // During the build: an event on an unchanged file, an edit that
        // replaces the file, a new file, and one outside the scope.
        journal.note(&same);
        let tmp = root.join("edited.tmp");
        fs::write(&tmp, "two").expect("write");
        fs::rename(&tmp, &edited).expect("rename");
        journal.note(&edited);
        fs::write(&created, "new").expect("write");
        journal.note(&created);
        journal.note(Path::new("/elsewhere/x.c"));

        assert_eq!(
            baseline.changed_during(&journal, &scope, &known),
            vec![edited, created]
        );
    }
}
