//! Whether a file really changed: nanosecond mtime, size and inode.
//!
//! Whole-second mtimes miss a second save within the same second (a known
//! failure of cr.h and of notify 8's poll watcher); the inode catches a
//! rename-over that keeps size and mtime; the size catches a rewrite within the
//! file system's timestamp granularity. Used by the poll backend to find
//! changes and by the build stage to skip builds whose inputs did not change.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fingerprint {
    Missing,
    Present {
        mtime_ns: i128,
        size: u64,
        inode: u64,
        device: u64,
    },
}

impl Fingerprint {
    /// What is at `path` now, following symlinks. A folder is no source
    /// file: it counts as missing (its removal, or a file of that name
    /// replaced by one, then compares as it should).
    pub fn of(path: &Path) -> Fingerprint {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Fingerprint::Missing,
            Ok(m) => Fingerprint::Present {
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                size: m.size(),
                inode: m.ino(),
                device: m.dev(),
            },
            Err(_) => Fingerprint::Missing,
        }
    }
}

/// The last known fingerprint of every file seen so far.
#[derive(Default, Debug)]
pub struct Fingerprints {
    known: HashMap<PathBuf, Fingerprint>,
}

impl Fingerprints {
    pub fn of_files(files: impl IntoIterator<Item = PathBuf>) -> Fingerprints {
        let known = files
            .into_iter()
            .map(|p| {
                let fp = Fingerprint::of(&p);
                (p, fp)
            })
            .collect();
        Fingerprints { known }
    }

    /// The last fingerprint recorded for `path`; missing if never seen.
    pub fn get(&self, path: &Path) -> Fingerprint {
        self.known
            .get(path)
            .copied()
            .unwrap_or(Fingerprint::Missing)
    }

    /// Every path recorded, with its last fingerprint.
    pub fn iter(&self) -> impl Iterator<Item = (&PathBuf, &Fingerprint)> {
        self.known.iter()
    }

    /// Re-reads `paths` and returns those whose fingerprint differs from the
    /// last one recorded (a path never seen counts as missing before).
    pub fn refresh<'a>(&mut self, paths: impl IntoIterator<Item = &'a PathBuf>) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for path in paths {
            let now = Fingerprint::of(path);
            let before = self
                .known
                .insert(path.clone(), now)
                .unwrap_or(Fingerprint::Missing);
            if before != now {
                changed.push(path.clone());
            }
        }
        changed
    }

    /// Replaces the whole record with a fresh scan; returns what differs
    /// (changed, created or deleted).
    pub fn replace_all(&mut self, files: Vec<PathBuf>) -> Vec<PathBuf> {
        let fresh = Fingerprints::of_files(files);
        let mut changed: Vec<PathBuf> = fresh
            .known
            .iter()
            .filter(|(p, fp)| self.known.get(*p).copied().unwrap_or(Fingerprint::Missing) != **fp)
            .map(|(p, _)| p.clone())
            .collect();
        changed.extend(
            self.known
                .iter()
                .filter(|(p, fp)| **fp != Fingerprint::Missing && !fresh.known.contains_key(*p))
                .map(|(p, _)| p.clone()),
        );
        self.known = fresh.known;
        changed.sort();
        changed
    }
}

/// The most source bytes read for one [`content_digest`]; past it, files
/// count by their size and mtime instead of their contents.
const DIGEST_BUDGET: u64 = 64 << 20;

/// A digest of what `files` hold (their paths and contents), to tell one
/// build's sources from another's: `3f9a0c…` with how many files, and how
/// many of them counted by size and mtime (unreadable, or past the
/// budget) instead of contents.
pub fn content_digest(files: &[PathBuf]) -> String {
    use std::hash::{Hash, Hasher};
    let mut sorted: Vec<&PathBuf> = files.iter().collect();
    sorted.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let (mut read, mut by_metadata) = (0u64, 0usize);
    for path in sorted {
        path.hash(&mut hasher);
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let contents = (read + size <= DIGEST_BUDGET)
            .then(|| std::fs::read(path).ok())
            .flatten();
        match contents {
            Some(bytes) => {
                read += bytes.len() as u64;
                bytes.hash(&mut hasher);
            }
            None => {
                by_metadata += 1;
                format!("{:?}", Fingerprint::of(path)).hash(&mut hasher);
            }
        }
    }
    let files = match files.len() {
        1 => "1 file".to_owned(),
        n => format!("{n} files"),
    };
    let metadata = if by_metadata > 0 {
        format!(", {by_metadata} by size and mtime")
    } else {
        String::new()
    };
    format!("{:016x} ({files}{metadata})", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn sees_a_same_second_rewrite_of_the_same_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.c");
        fs::write(&f, "one").expect("write");
        let mut fps = Fingerprints::of_files([f.clone()]);
        // Same size, written again at once: only the nanoseconds differ (or
        // nothing, on a file system with coarse timestamps: then the inode
        // from the rename below still tells).
        let tmp = dir.path().join("a.c.tmp");
        fs::write(&tmp, "two").expect("write");
        fs::rename(&tmp, &f).expect("rename");
        assert_eq!(fps.refresh([&f]), vec![f.clone()]);
        assert!(fps.refresh([&f]).is_empty(), "no change the second time");
    }

    #[test]
    fn replace_all_reports_created_and_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.c");
        let b = dir.path().join("b.c");
        fs::write(&a, "a").expect("write");
        let mut fps = Fingerprints::of_files([a.clone()]);
        fs::remove_file(&a).expect("rm");
        fs::write(&b, "b").expect("write");
        assert_eq!(fps.replace_all(vec![b.clone()]), vec![a, b]);
    }
}
