//! What is watched: the files and folders the user named, minus what must
//! never trigger a build.
//!
//! Every backend and the build stage ask the same questions of a scope (is
//! this path one of ours? which files exist now?), so the answers live here
//! once. Never sources: the library the build writes (it may sit beside the
//! sources, and reacting to it would rebuild forever), the server's own files
//! ([`OwnFiles`]), and whatever the [`rules`](super::rules) ignore. A path
//! named with `--watch` is always watched, whatever the rules say; whether it
//! is a file or a folder is decided each time it is looked at, because it may
//! not exist yet, or be replaced by the other kind.
//!
//! Clones share one set of rules: ignore files read, build trees found and
//! files found to be the build's own are known to every thread at once.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::FileType;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::own::OwnFiles;
use super::rules::{Frame, IGNORE_FILES, Rules};
use crate::paths;

/// What [`Scope::walk`] visits.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    /// A folder, before its entries are listed.
    Folder(&'a Path),
    File(&'a Path),
    /// A symlink (not followed: it may point at anything, or in a loop).
    Link(&'a Path),
    /// A folder just found to be a build tree: visited as a folder, but its
    /// entries are not (its watch, if any, is no longer needed).
    BuildTree(&'a Path),
}

/// What an event says about the rules themselves.
#[derive(Debug, PartialEq, Eq)]
pub enum RulesChange {
    None,
    /// A folder's ignore files changed: what is ignored below it may differ.
    IgnoreFiles(PathBuf),
    /// A folder became a build tree and is ignored from now on.
    BuildTree(PathBuf),
}

type Sink = Box<dyn Fn(String) + Send>;

#[derive(Clone)]
pub struct Scope {
    fixed: Arc<Fixed>,
    rules: Arc<Mutex<Rules>>,
    /// Where notices about the rules go (a build tree found, an unusable
    /// ignore file); until one is set they wait.
    sink: Arc<Mutex<Option<Sink>>>,
}

struct Fixed {
    /// Everything named with `--watch`, in [`paths::absolute`] form.
    targets: Vec<PathBuf>,
    /// Written by the build, never a source (the library).
    outputs: BTreeSet<PathBuf>,
    own: OwnFiles,
}

impl Scope {
    pub fn new(
        watch: &[PathBuf],
        outputs: &[PathBuf],
        patterns: &[String],
        own: &OwnFiles,
    ) -> Scope {
        let mut targets: Vec<PathBuf> = watch.iter().map(|p| paths::absolute(p)).collect();
        targets.dedup();
        Scope {
            fixed: Arc::new(Fixed {
                targets,
                outputs: outputs.iter().map(|p| paths::absolute(p)).collect(),
                own: own.clone(),
            }),
            rules: Arc::new(Mutex::new(Rules::new(patterns))),
            sink: Arc::new(Mutex::new(None)),
        }
    }

    /// Sends every notice about the rules, those waiting included, to `sink`.
    pub fn set_notice_sink(&self, sink: Sink) {
        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
        self.flush_notices();
    }

    /// Everything named with `--watch`.
    pub fn targets(&self) -> &[PathBuf] {
        &self.fixed.targets
    }

    pub fn is_target(&self, path: &Path) -> bool {
        self.fixed.targets.iter().any(|t| t == path)
    }

    /// Whether a change to the file `path` (in absolute form) can change
    /// the build.
    pub fn contains(&self, path: &Path) -> bool {
        self.admits(path, false)
    }

    /// Whether a folder is to be watched and walked: a target, or a folder
    /// below one that no rule ignores.
    pub fn descends_into(&self, dir: &Path) -> bool {
        self.admits(dir, true)
    }

    fn admits(&self, path: &Path, is_dir: bool) -> bool {
        if self.never(path) {
            return false;
        }
        if self.is_target(path) {
            return true;
        }
        let admitted = {
            let mut rules = self.lock();
            self.roots_of(path)
                .any(|root| !rules.ignores_below(root, path, is_dir))
        };
        self.flush_notices();
        admitted
    }

    /// The targets `path` is strictly inside of: they are folders then.
    fn roots_of<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = &'a PathBuf> + 'a {
        self.fixed
            .targets
            .iter()
            .filter(move |t| path != t.as_path() && path.starts_with(t))
    }

    fn never(&self, path: &Path) -> bool {
        self.fixed.outputs.contains(path) || self.fixed.own.contains(path)
    }

    /// Visits `dir` (a target, or a folder below one) and everything below
    /// it that is not ignored. A folder is visited before it is listed, so
    /// a visitor that watches it there misses nothing that lands in it
    /// during the walk. Unreadable folders are skipped: they may vanish
    /// mid-walk (a build cleaning up), and a missing folder has no files.
    pub fn walk(&self, dir: &Path, visit: &mut dyn FnMut(Entry)) {
        if !self.descends_into(dir) {
            return;
        }
        let root = if self.is_target(dir) {
            dir.to_path_buf()
        } else {
            match self.roots_of(dir).next() {
                Some(root) => root.clone(),
                None => return,
            }
        };
        let outer = self.lock().frame_for(&root, &paths::parent_dir(dir));
        self.walk_in(&root, dir, &outer, visit);
        self.flush_notices();
    }

    /// `outer`: the rules `dir` itself is judged by.
    fn walk_in(&self, root: &Path, dir: &Path, outer: &Frame, visit: &mut dyn FnMut(Entry)) {
        visit(Entry::Folder(dir));
        let Ok(listing) = std::fs::read_dir(dir) else {
            return;
        };
        // `file_type` does not follow symlinks, so a link loop cannot make
        // the walk recurse forever.
        let entries: Vec<(PathBuf, FileType)> = listing
            .flatten()
            .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
            .collect();
        let (inner, kept) = {
            let mut rules = self.lock();
            let names = entries.iter().filter_map(|(p, _)| p.file_name());
            if rules.check_build_tree(root, outer, dir, names) {
                drop(rules);
                visit(Entry::BuildTree(dir));
                return;
            }
            let inner = rules.frame_inside(outer, dir);
            let kept: Vec<(PathBuf, FileType)> = entries
                .into_iter()
                .filter(|(p, t)| {
                    !self.never(p)
                        && (self.is_target(p) || !rules.ignores_entry(root, &inner, p, t.is_dir()))
                })
                .collect();
            (inner, kept)
        };
        for (path, kind) in kept {
            if kind.is_dir() {
                self.walk_in(root, &path, &inner, visit);
            } else if kind.is_symlink() {
                visit(Entry::Link(&path));
            } else {
                visit(Entry::File(&path));
            }
        }
    }

    /// Every watched file that exists now: the targets that are files, and
    /// the files below the targets that are folders. A symlink counts as
    /// the file it points to; one to a folder is not followed.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for target in &self.fixed.targets {
            match std::fs::metadata(target) {
                Ok(meta) if meta.is_dir() => self.walk(target, &mut |entry| match entry {
                    Entry::File(p) => out.push(p.to_path_buf()),
                    Entry::Link(p) if !p.is_dir() => out.push(p.to_path_buf()),
                    _ => {}
                }),
                Ok(_) if !self.never(target) => out.push(target.clone()),
                _ => {}
            }
        }
        // Targets may overlap (`--watch . --watch src`); one is the rule.
        if self.fixed.targets.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// Takes note of what an event on `path` means for the rules: an ignore
    /// file edited, a build tree's marker appearing, a folder removed.
    pub fn observe(&self, path: &Path) -> RulesChange {
        let Some(name) = path.file_name() else {
            return RulesChange::None;
        };
        let dir = paths::parent_dir(path);
        let change = {
            let mut rules = self.lock();
            if !path.exists() {
                rules.forget_below(path);
            }
            if IGNORE_FILES.iter().any(|f| OsStr::new(f) == name) {
                rules.forget_folder(&dir);
                RulesChange::IgnoreFiles(dir)
            } else if Rules::is_build_tree_marker(name) {
                drop(rules);
                self.recheck_build_tree(&dir)
            } else {
                RulesChange::None
            }
        };
        self.flush_notices();
        change
    }

    fn recheck_build_tree(&self, dir: &Path) -> RulesChange {
        let Some(root) = self.roots_of(dir).next().cloned() else {
            return RulesChange::None;
        };
        if !self.descends_into(dir) {
            return RulesChange::None;
        }
        let Ok(listing) = std::fs::read_dir(dir) else {
            return RulesChange::None;
        };
        let names: Vec<_> = listing.flatten().map(|e| e.file_name()).collect();
        let mut rules = self.lock();
        let outer = rules.frame_for(&root, &paths::parent_dir(dir));
        if rules.check_build_tree(&root, &outer, dir, names.iter().map(|n| n.as_os_str())) {
            RulesChange::BuildTree(dir.to_path_buf())
        } else {
            RulesChange::None
        }
    }

    /// Files the build itself writes: never sources from now on. A path
    /// named with `--watch` stays one.
    pub fn add_written_by_build(&self, files: &[PathBuf]) {
        let files: Vec<PathBuf> = files
            .iter()
            .filter(|f| !self.is_target(f))
            .cloned()
            .collect();
        self.lock().add_written_by_build(&files);
    }

    /// The folder that holds all of `files` and is inside the target they
    /// are in, relative to that target: what an `--ignore` for them would
    /// name (`build/CMakeFiles/`), or the one file's path.
    pub fn ignore_pattern_for(&self, files: &[PathBuf]) -> Option<String> {
        let first = files.first()?;
        let root = self.roots_of(first).max_by_key(|r| r.as_os_str().len())?;
        if let [only] = files {
            return Some(only.strip_prefix(root).ok()?.display().to_string());
        }
        let mut common = paths::parent_dir(first);
        while !files.iter().all(|f| f.starts_with(&common)) {
            common = paths::parent_dir(&common);
        }
        let rel = common.strip_prefix(root).ok()?;
        if rel.as_os_str().is_empty() {
            return None;
        }
        Some(format!("{}/", rel.display()))
    }

    fn lock(&self) -> MutexGuard<'_, Rules> {
        // The rules hold no invariant a panic elsewhere could break.
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flush_notices(&self) {
        let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sink) = sink.as_ref() else {
            return;
        };
        let notices = self.lock().take_notices();
        for notice in notices {
            sink(notice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn canonical_tempdir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canon");
        (dir, root)
    }

    #[test]
    fn folder_scope_ignores_droppings_outputs_vcs_and_own_files() {
        let (_dir, root) = canonical_tempdir();
        let lib = root.join("logic.so");
        let mut own = OwnFiles::new();
        own.file_and_companions(&root.join("st.bin"));
        let scope = Scope::new(
            std::slice::from_ref(&root),
            std::slice::from_ref(&lib),
            &["*.log".to_string()],
            &own,
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
            "st.bin",
            ".st.bin.tmp-1-2",
        ] {
            assert!(!scope.contains(&root.join(ignored)), "{ignored}");
        }
        assert!(!scope.contains(&root.join(".git/index")));
        assert!(!scope.contains(&root.join("target/debug/x.c")));
        assert!(!scope.contains(Path::new("/elsewhere/logic.c")));
    }

    #[test]
    fn an_explicit_file_is_watched_whatever_its_name_and_its_siblings_are_not() {
        let (_dir, root) = canonical_tempdir();
        let odd = root.join("gen.o");
        let scope = Scope::new(std::slice::from_ref(&odd), &[], &[], &OwnFiles::new());
        assert!(scope.contains(&odd));
        assert!(!scope.contains(&root.join("other.c")));
    }

    #[test]
    fn a_target_is_a_folder_or_a_file_as_it_is_when_looked_at() {
        let (_dir, root) = canonical_tempdir();
        let later = root.join("later");
        let scope = Scope::new(std::slice::from_ref(&later), &[], &[], &OwnFiles::new());
        assert!(scope.files().is_empty());
        fs::create_dir(&later).expect("mkdir");
        fs::write(later.join("a.c"), "").expect("write");
        assert_eq!(scope.files(), vec![later.join("a.c")]);
        fs::remove_dir_all(&later).expect("rm");
        fs::write(&later, "").expect("write");
        assert_eq!(scope.files(), vec![later.clone()]);
    }

    #[test]
    fn the_walk_skips_ignored_folders_and_build_trees_and_shares_what_it_found() {
        let (_dir, root) = canonical_tempdir();
        for dir in ["src", "build/CMakeFiles", "gen"] {
            fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        for file in ["src/a.c", "build/CMakeCache.txt", "build/b.c", "gen/c.c"] {
            fs::write(root.join(file), "").expect("write");
        }
        fs::write(root.join(".gitignore"), "gen/\n").expect("write");
        let scope = Scope::new(std::slice::from_ref(&root), &[], &[], &OwnFiles::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        scope.set_notice_sink(Box::new(move |n| sink.lock().expect("lock").push(n)));
        let mut files = scope.files();
        files.sort();
        assert_eq!(files, vec![root.join(".gitignore"), root.join("src/a.c")]);
        let clone = scope.clone();
        assert!(
            !clone.contains(&root.join("build/b.c")),
            "shared with clones"
        );
        assert_eq!(seen.lock().expect("lock").len(), 1, "said once");
    }

    #[test]
    fn files_written_by_the_build_leave_the_scope_but_targets_stay() {
        let (_dir, root) = canonical_tempdir();
        let named = root.join("named.c");
        let scope = Scope::new(&[root.clone(), named.clone()], &[], &[], &OwnFiles::new());
        let generated = root.join("out/gen/a.txt");
        scope.add_written_by_build(&[generated.clone(), named.clone()]);
        assert!(!scope.contains(&generated));
        assert!(scope.contains(&named));
        assert_eq!(
            scope.ignore_pattern_for(&[generated.clone(), root.join("out/gen/b.txt")]),
            Some("out/gen/".into())
        );
        assert_eq!(
            scope.ignore_pattern_for(&[generated]),
            Some("out/gen/a.txt".into())
        );
    }
}
