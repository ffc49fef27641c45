//! The good versions kept on disk for `rollback`: the library of each
//! version that went live, as it was built, in the private folder, the
//! newest `--keep-on-disk` of them. A version still loaded comes back at
//! once; one that was unloaded is loaded again from its copy here, checked
//! as any build is (precheck, load, table), and then carried back to as a
//! loaded one is.
//!
//! A version that faulted is dropped from here: it ran on a state and
//! failed, and the same bytes would fault again on it.

use std::collections::VecDeque;

use crate::plugin::shadow::{ShadowDir, ShadowFile};

pub(super) struct KeptCopies {
    /// The most copies kept; 0 keeps none.
    bound: usize,
    /// Oldest first.
    copies: VecDeque<Kept>,
    /// Whether the first removal for the bound was said.
    said_bound: bool,
}

struct Kept {
    version: u64,
    file: ShadowFile,
}

/// What keeping one more copy did.
pub(super) struct KeptOutcome {
    /// Versions whose copy went for the bound, oldest first.
    pub removed: Vec<u64>,
    /// Whether this is the first removal of the run (said once).
    pub first_removal: bool,
}

impl KeptCopies {
    pub(super) fn new(bound: usize) -> KeptCopies {
        KeptCopies {
            bound,
            copies: VecDeque::new(),
            said_bound: false,
        }
    }

    pub(super) fn bound(&self) -> usize {
        self.bound
    }

    /// Keeps `bytes` as `version`'s library, removing the oldest copies
    /// beyond the bound.
    pub(super) fn keep(
        &mut self,
        dir: &ShadowDir,
        version: u64,
        lib_name: &str,
        bytes: &[u8],
    ) -> Result<KeptOutcome, String> {
        let mut outcome = KeptOutcome {
            removed: Vec::new(),
            first_removal: false,
        };
        if self.bound == 0 || self.copies.iter().any(|k| k.version == version) {
            return Ok(outcome);
        }
        // Room first, so that the folder never holds more than the bound.
        while self.copies.len() >= self.bound {
            if let Some(gone) = self.copies.pop_front() {
                outcome.removed.push(gone.version);
            }
        }
        let file = dir.keep(version, lib_name, bytes)?;
        self.copies.push_back(Kept { version, file });
        if !outcome.removed.is_empty() && !self.said_bound {
            self.said_bound = true;
            outcome.first_removal = true;
        }
        Ok(outcome)
    }

    /// Drops `version`'s copy (it faulted).
    pub(super) fn forget(&mut self, version: u64) {
        self.copies.retain(|k| k.version != version);
    }

    /// `version`'s library as it was built, when a copy is kept.
    pub(super) fn bytes_of(&self, version: u64) -> Option<Result<Vec<u8>, String>> {
        let kept = self.copies.iter().find(|k| k.version == version)?;
        let path = kept.file.path();
        Some(std::fs::read(path).map_err(|e| {
            format!(
                "expected v{version}'s kept library at {}, found it unreadable: {e}",
                path.display()
            )
        }))
    }

    /// The versions with a copy, oldest first.
    pub(super) fn versions(&self) -> Vec<u64> {
        self.copies.iter().map(|k| k.version).collect()
    }

    /// The versions with a copy and where it is, oldest first.
    pub(super) fn files(&self) -> Vec<(u64, std::path::PathBuf)> {
        self.copies
            .iter()
            .map(|k| (k.version, k.file.path().to_path_buf()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_copies_are_kept_and_the_first_removal_is_flagged_once() {
        let dir = ShadowDir::create().expect("a private folder");
        let mut kept = KeptCopies::new(2);
        for v in 1..=2 {
            let done = kept.keep(&dir, v, "logic.so", b"bytes").expect("kept");
            assert!(done.removed.is_empty());
        }
        let third = kept.keep(&dir, 3, "logic.so", b"three").expect("kept");
        assert_eq!((third.removed, third.first_removal), (vec![1], true));
        let fourth = kept.keep(&dir, 4, "logic.so", b"four").expect("kept");
        assert_eq!((fourth.removed, fourth.first_removal), (vec![2], false));
        assert_eq!(kept.versions(), vec![3, 4]);
        assert!(kept.bytes_of(1).is_none());
        assert_eq!(
            kept.bytes_of(3).and_then(Result::ok),
            Some(b"three".to_vec())
        );
        kept.forget(3);
        assert_eq!(kept.versions(), vec![4]);
        // The copies that went are gone from disk too.
        let files = std::fs::read_dir(dir.path())
            .expect("listable")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("kept-"))
            })
            .count();
        assert_eq!(files, 1);
    }

    #[test]
    fn a_bound_of_zero_keeps_nothing() {
        let dir = ShadowDir::create().expect("a private folder");
        let mut kept = KeptCopies::new(0);
        kept.keep(&dir, 1, "logic.so", b"bytes")
            .expect("nothing to do");
        assert!(kept.versions().is_empty());
    }
}
