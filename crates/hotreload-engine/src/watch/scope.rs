//! What is watched: the files and folders the user named, minus what must
//! never trigger a build.
//!
//! Every backend asks the same questions of a scope (is this path one of
//! ours? which folders need a watch? which files exist now?), so the ignore
//! rules live here once. Ignored: the library the build writes (it may sit
//! beside the sources, and reacting to it would rebuild forever), the
//! droppings of editors and `sed -i`, build artifacts, `.git/` and `target/`.
//! A file the user named explicitly is always watched, whatever its name.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::paths;

/// File names that editors and tools create and delete around a save.
const EDITOR_DROPPINGS: &[&str] = &[
    "*~",               // vim and emacs backups
    "4913",             // vim's probe for a writable folder
    ".*.sw?",           // vim swap files
    ".*.swp",           //
    ".#*",              // emacs lock files
    "#*#",              // emacs auto-save
    "*___jb_tmp___",    // JetBrains safe write
    "*___jb_old___",    //
    "sed??????",        // sed -i
    ".*.kate-swp",      // kate
    ".goutputstream-*", // gedit
];

/// Outputs of common build tools, which land beside the sources.
const BUILD_ARTIFACTS: &[&str] = &["*.o", "*.obj", "*.so", "*.a", "*.d", "*.dylib", "*.dll"];

/// Folders never descended into.
const IGNORED_DIRS: &[&str] = &[".git", ".hg", ".svn", "target", "node_modules"];

#[derive(Clone, Debug)]
pub struct Scope {
    /// Files named with `--watch`, in [`paths::absolute`] form.
    files: BTreeSet<PathBuf>,
    /// Folders named with `--watch`, watched recursively.
    roots: Vec<PathBuf>,
    /// Paths that are never relevant (the library the build writes).
    excluded: BTreeSet<PathBuf>,
    /// User patterns on top of the built-in ones.
    patterns: Vec<String>,
}

impl Scope {
    pub fn new(watch: &[PathBuf], excluded: &[PathBuf], patterns: &[String]) -> Scope {
        let mut files = BTreeSet::new();
        let mut roots = Vec::new();
        for path in watch {
            let abs = paths::absolute(path);
            if abs.is_dir() {
                roots.push(abs);
            } else {
                files.insert(abs);
            }
        }
        Scope {
            files,
            roots,
            excluded: excluded.iter().map(|p| paths::absolute(p)).collect(),
            patterns: patterns.to_vec(),
        }
    }

    /// Whether a change to `path` (in absolute form) can change the build.
    pub fn contains(&self, path: &Path) -> bool {
        if self.excluded.contains(path) {
            return false;
        }
        if self.files.contains(path) {
            return true;
        }
        self.roots.iter().any(|root| {
            path.strip_prefix(root).is_ok_and(|rel| {
                let mut parts = rel.components().peekable();
                while let Some(part) = parts.next() {
                    let name = part.as_os_str();
                    let is_last = parts.peek().is_none();
                    if is_last {
                        return !self.ignores_file(name);
                    }
                    if ignores_dir(name) {
                        return false;
                    }
                }
                false
            })
        })
    }

    /// Whether a folder under a root should be descended into and watched.
    pub fn descends_into(&self, dir: &Path) -> bool {
        !self.excluded.contains(dir)
            && self.roots.iter().any(|root| {
                dir.strip_prefix(root)
                    .is_ok_and(|rel| rel.components().all(|c| !ignores_dir(c.as_os_str())))
            })
    }

    /// The folders a notification backend must watch, each non-recursively:
    /// the folder of every watched file (never the file itself: a rename-style
    /// save replaces the inode and a watch on the old one goes silent), and
    /// every folder under a root that is not ignored.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = BTreeSet::new();
        for file in &self.files {
            dirs.insert(paths::parent_dir(file));
        }
        for root in &self.roots {
            self.walk(root, &mut |path, is_dir| {
                if is_dir {
                    dirs.insert(path.to_path_buf());
                }
            });
        }
        dirs.into_iter().collect()
    }

    /// Every watched file that exists now.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.files.iter().filter(|f| f.exists()).cloned().collect();
        for root in &self.roots {
            self.walk(root, &mut |path, is_dir| {
                if !is_dir && self.contains(path) {
                    out.push(path.to_path_buf());
                }
            });
        }
        out
    }

    /// Visits `dir` itself and everything below it that is not ignored. A
    /// folder is visited before it is listed, so a visitor that watches it
    /// there misses nothing that lands in it during the walk.
    /// Unreadable folders are skipped: they may vanish mid-walk (a build
    /// cleaning up), and a missing folder simply has no files.
    pub fn walk(&self, dir: &Path, visit: &mut dyn FnMut(&Path, bool)) {
        if !self.descends_into(dir) {
            return;
        }
        visit(dir, true);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // `file_type` does not follow symlinks, so a link loop cannot
            // make the walk recurse forever.
            match entry.file_type() {
                Ok(t) if t.is_dir() => self.walk(&path, visit),
                Ok(_) => visit(&path, false),
                Err(_) => {}
            }
        }
    }

    fn ignores_file(&self, name: &OsStr) -> bool {
        let Some(name) = name.to_str() else {
            return false;
        };
        EDITOR_DROPPINGS
            .iter()
            .chain(BUILD_ARTIFACTS)
            .any(|p| wildcard_match(p, name))
            || self.patterns.iter().any(|p| wildcard_match(p, name))
    }
}

fn ignores_dir(name: &OsStr) -> bool {
    IGNORED_DIRS.iter().any(|d| OsStr::new(d) == name)
}

pub use crate::pattern::wildcard_match;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_scope_ignores_droppings_outputs_and_vcs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canon");
        let lib = root.join("logic.so");
        let scope = Scope::new(
            std::slice::from_ref(&root),
            std::slice::from_ref(&lib),
            &["*.log".to_string()],
        );
        assert!(scope.contains(&root.join("logic.c")));
        assert!(scope.contains(&root.join("sub/util.h")));
        for ignored in [
            "logic.so",
            "logic.c~",
            "4913",
            ".logic.c.swp",
            "logic.o",
            "x.log",
        ] {
            assert!(!scope.contains(&root.join(ignored)), "{ignored}");
        }
        assert!(!scope.contains(&root.join(".git/index")));
        assert!(!scope.contains(&root.join("target/debug/x.c")));
        assert!(!scope.contains(&lib));
        assert!(!scope.contains(Path::new("/elsewhere/logic.c")));
    }

    #[test]
    fn an_explicit_file_is_watched_whatever_its_name_and_its_siblings_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canon");
        let odd = root.join("gen.o");
        let scope = Scope::new(std::slice::from_ref(&odd), &[], &[]);
        assert!(scope.contains(&odd));
        assert!(!scope.contains(&root.join("other.c")));
        assert_eq!(scope.dirs(), vec![root]);
    }
}
