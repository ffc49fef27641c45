//! Which paths inside a watched folder are not sources.
//!
//! Each component of a path below the watched folder (every folder on the
//! way, then the entry itself) is judged, and the first rule that speaks
//! decides:
//! 1. `--ignore` patterns: gitignore globs relative to the watched folder
//!    (`build/`, `**/gen/**`, `*.log`; `!pattern` keeps what would go);
//! 2. the built-in lists: editor droppings, build artifacts, tool folders;
//! 3. `.ignore` and `.gitignore` files, the nearest folder's first (in one
//!    folder `.ignore` wins), then those above the watched folder up to the
//!    repository's root, then the repository's `.git/info/exclude`;
//! 4. build trees: a folder below the watched one that holds
//!    `CMakeCache.txt` or `meson-private` is a build's output (a `!` rule in
//!    1 or 3 keeps it).
//!
//! An ignored folder hides everything in it. Ignore files are read when a
//! folder is first looked at and again when they change; those above the
//! watched folder are read once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::paths;
use crate::pattern::wildcard_match;

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
const BUILD_ARTIFACTS: &[&str] = &[
    "*.o", "*.obj", "*.so", "*.so.*", "*.a", "*.d", "*.dylib", "*.dll",
];

/// Folders never descended into: version control, tool outputs, and the
/// folder an in-source CMake build keeps its state in.
const IGNORED_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "target",
    "node_modules",
    "CMakeFiles",
];

/// An entry whose presence makes its folder a build tree, and what kind.
const BUILD_TREE_MARKERS: &[(&str, &str)] = &[
    ("CMakeCache.txt", "a CMake build tree"),
    ("meson-private", "a Meson build tree"),
];

/// The ignore files of one folder, the one read last winning.
pub const IGNORE_FILES: &[&str] = &[".gitignore", ".ignore"];

/// The ignore files in force for the entries of one folder: those of every
/// folder from the watched root down to it that has any, nearest last; and
/// the watched root's own rules, looked up once per walk, not per entry.
#[derive(Clone, Default)]
pub struct Frame {
    levels: Vec<Arc<Gitignore>>,
    root: Option<Arc<RootRules>>,
}

/// What holds for one watched folder whatever is below it.
struct RootRules {
    /// `--ignore`, rooted at the watched folder.
    user: Gitignore,
    /// Ignore files above the watched folder, nearest first.
    above: Vec<Arc<Gitignore>>,
}

pub struct Rules {
    patterns: Vec<String>,
    roots: HashMap<PathBuf, Arc<RootRules>>,
    /// Each folder's ignore files once read; `None` for a folder without.
    folders: HashMap<PathBuf, Option<Arc<Gitignore>>>,
    build_trees: BTreeMap<PathBuf, &'static str>,
    /// Files found to be written by the build itself (see the reload stage).
    written_by_build: HashSet<PathBuf>,
    pending: Vec<String>,
    said: HashSet<String>,
}

impl Rules {
    pub fn new(patterns: &[String]) -> Rules {
        Rules {
            patterns: patterns.to_vec(),
            roots: HashMap::new(),
            folders: HashMap::new(),
            build_trees: BTreeMap::new(),
            written_by_build: HashSet::new(),
            pending: Vec::new(),
            said: HashSet::new(),
        }
    }

    /// Whether `path`, strictly below the watched folder `root`, is ignored
    /// by the rule of any component on the way to it.
    pub fn ignores_below(&mut self, root: &Path, path: &Path, is_dir: bool) -> bool {
        let Ok(rel) = path.strip_prefix(root) else {
            return true;
        };
        let parts: Vec<&OsStr> = rel.iter().collect();
        let mut frame = self.frame_for(root, root);
        let mut current = root.to_path_buf();
        for (i, part) in parts.iter().enumerate() {
            current.push(part);
            let last = i + 1 == parts.len();
            if self.ignores_entry(root, &frame, &current, !last || is_dir) {
                return true;
            }
            if !last {
                frame = self.frame_inside(&frame, &current);
            }
        }
        false
    }

    /// Whether the entry `path` of a folder whose rules are `frame` is
    /// ignored, judging the entry alone (its folders were judged already).
    pub fn ignores_entry(&mut self, root: &Path, frame: &Frame, path: &Path, is_dir: bool) -> bool {
        self.rule_for(root, frame, path, is_dir)
            .unwrap_or_else(|| is_dir && self.build_trees.contains_key(path))
    }

    /// What the rules (all but build trees) say of an entry: `Some(true)`
    /// ignored, `Some(false)` kept by a `!` rule, `None` nothing.
    fn rule_for(&mut self, root: &Path, frame: &Frame, path: &Path, is_dir: bool) -> Option<bool> {
        if !self.written_by_build.is_empty() && self.written_by_build.contains(path) {
            return Some(true);
        }
        let root_rules = match &frame.root {
            Some(rules) => Arc::clone(rules),
            None => self.root_rules(root),
        };
        if let Some(said) = verdict(root_rules.user.matched(path, is_dir)) {
            return Some(said);
        }
        if builtin_ignores(path, is_dir) {
            return Some(true);
        }
        frame
            .levels
            .iter()
            .rev()
            .chain(root_rules.above.iter())
            .find_map(|rules| verdict(rules.matched(path, is_dir)))
    }

    /// The rules for the entries of `dir`, whose own entry has `outer`.
    pub fn frame_inside(&mut self, outer: &Frame, dir: &Path) -> Frame {
        let mut frame = outer.clone();
        if let Some(own) = self.folder_rules(dir) {
            frame.levels.push(own);
        }
        frame
    }

    /// The rules for the entries of `dir`, a folder at or below `root`.
    pub fn frame_for(&mut self, root: &Path, dir: &Path) -> Frame {
        let top = Frame {
            levels: Vec::new(),
            root: Some(self.root_rules(root)),
        };
        let mut frame = self.frame_inside(&top, root);
        let mut current = root.to_path_buf();
        if let Ok(rel) = dir.strip_prefix(root) {
            for part in rel {
                current.push(part);
                frame = self.frame_inside(&frame, &current);
            }
        }
        frame
    }

    /// Whether a folder below `root`, an entry of a folder whose rules are
    /// `frame`, is a build tree by its entries `names`, and no rule keeps
    /// it; a new one is remembered and said once.
    pub fn check_build_tree<'a>(
        &mut self,
        root: &Path,
        frame: &Frame,
        dir: &Path,
        names: impl IntoIterator<Item = &'a OsStr>,
    ) -> bool {
        if self.build_trees.contains_key(dir) {
            return true;
        }
        if dir == root || !dir.starts_with(root) {
            return false;
        }
        let names: HashSet<&OsStr> = names.into_iter().collect();
        let Some((marker, what)) = BUILD_TREE_MARKERS
            .iter()
            .find(|(marker, _)| names.contains(OsStr::new(marker)))
        else {
            return false;
        };
        if self.rule_for(root, frame, dir, true) == Some(false) {
            return false;
        }
        self.build_trees.insert(dir.to_path_buf(), what);
        let rel = dir.strip_prefix(root).unwrap_or(dir);
        self.say(format!(
            "ignoring {}/ (it holds {marker}: {what}); to watch it anyway: --ignore '!{}/'",
            paths::shown(dir),
            rel.display()
        ));
        true
    }

    /// Whether `name` marks its folder as a build tree.
    pub fn is_build_tree_marker(name: &OsStr) -> bool {
        BUILD_TREE_MARKERS
            .iter()
            .any(|(m, _)| OsStr::new(m) == name)
    }

    /// `dir`'s ignore files changed: read them again when next needed.
    pub fn forget_folder(&mut self, dir: &Path) {
        self.folders.remove(dir);
    }

    /// `path` is gone: what was known of folders at or below it is void.
    pub fn forget_below(&mut self, path: &Path) {
        self.folders.retain(|dir, _| !dir.starts_with(path));
        self.build_trees.retain(|dir, _| !dir.starts_with(path));
    }

    pub fn add_written_by_build(&mut self, files: &[PathBuf]) {
        self.written_by_build.extend(files.iter().cloned());
    }

    /// What was said since the last call, each text once per run.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.pending)
    }

    fn say(&mut self, text: String) {
        if self.said.insert(text.clone()) {
            self.pending.push(text);
        }
    }

    fn root_rules(&mut self, root: &Path) -> Arc<RootRules> {
        if let Some(rules) = self.roots.get(root) {
            return Arc::clone(rules);
        }
        let mut user = GitignoreBuilder::new(root);
        for pattern in self.patterns.clone() {
            if let Err(e) = user.add_line(None, &pattern) {
                self.say(format!("--ignore {pattern}: {e}; that pattern is not used"));
            }
        }
        let user = user.build().unwrap_or_else(|e| {
            self.say(format!("--ignore patterns unusable ({e}); none is used"));
            Gitignore::empty()
        });
        let above = self.rules_above(root);
        let rules = Arc::new(RootRules { user, above });
        self.roots.insert(root.to_path_buf(), Arc::clone(&rules));
        rules
    }

    /// The ignore files of the folders above `root` up to the root of the
    /// repository it is in, and that repository's `.git/info/exclude`.
    /// Outside a repository, folders above the watched one have no say.
    fn rules_above(&mut self, root: &Path) -> Vec<Arc<Gitignore>> {
        let Some(repo) = root.ancestors().find(|d| d.join(".git").exists()) else {
            return Vec::new();
        };
        let mut above: Vec<Arc<Gitignore>> = root
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(repo))
            .filter_map(|d| self.folder_rules(d))
            .collect();
        // Only a plain `.git` folder has it; a worktree's or submodule's
        // `.git` is a file pointing elsewhere.
        let exclude = repo.join(".git/info/exclude");
        if exclude.is_file() {
            let mut builder = GitignoreBuilder::new(repo);
            if let Some(e) = builder.add(&exclude) {
                self.say(format!("{}: {e}", paths::shown(&exclude)));
            }
            if let Ok(rules) = builder.build() {
                above.push(Arc::new(rules));
            }
        }
        above
    }

    fn folder_rules(&mut self, dir: &Path) -> Option<Arc<Gitignore>> {
        if let Some(known) = self.folders.get(dir) {
            return known.clone();
        }
        let mut builder = GitignoreBuilder::new(dir);
        let mut found = false;
        for name in IGNORE_FILES {
            let file = dir.join(name);
            if !file.is_file() {
                continue;
            }
            found = true;
            // Lines that cannot be used are skipped; the others still count.
            if let Some(e) = builder.add(&file) {
                self.say(format!(
                    "{}: {e}; its other lines still apply",
                    paths::shown(&file)
                ));
            }
        }
        let rules = if found {
            match builder.build() {
                Ok(rules) => Some(Arc::new(rules)),
                Err(e) => {
                    self.say(format!(
                        "the ignore files in {} cannot be used: {e}",
                        paths::shown(dir)
                    ));
                    None
                }
            }
        } else {
            None
        };
        self.folders.insert(dir.to_path_buf(), rules.clone());
        rules
    }
}

fn verdict(m: Match<&ignore::gitignore::Glob>) -> Option<bool> {
    match m {
        Match::Ignore(_) => Some(true),
        Match::Whitelist(_) => Some(false),
        Match::None => None,
    }
}

fn builtin_ignores(path: &Path, is_dir: bool) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    if is_dir {
        return IGNORED_DIRS.iter().any(|d| OsStr::new(d) == name);
    }
    let Some(name) = name.to_str() else {
        return false;
    };
    EDITOR_DROPPINGS
        .iter()
        .chain(BUILD_ARTIFACTS)
        .any(|p| wildcard_match(p, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canon");
        (dir, root)
    }

    #[test]
    fn ignore_patterns_are_gitignore_globs_on_paths_below_the_root() {
        let (_dir, root) = root();
        let patterns: Vec<String> = ["build/", "**/CMakeFiles/**", "*.log", "notes", "/top.c"]
            .map(String::from)
            .into();
        let mut rules = Rules::new(&patterns);
        for ignored in [
            "build/x.c",
            "sub/build/x.c",
            "a/CMakeFiles/b/c.c",
            "x.log",
            "sub/x.log",
            "notes",
            "sub/notes/a.c",
            "top.c",
        ] {
            assert!(
                rules.ignores_below(&root, &root.join(ignored), false),
                "{ignored}"
            );
        }
        for kept in ["logic.c", "sub/top.c", "build.c", "sub/buildx/a.c"] {
            assert!(
                !rules.ignores_below(&root, &root.join(kept), false),
                "{kept}"
            );
        }
    }

    #[test]
    fn gitignore_files_are_honoured_nearest_first_and_re_read_when_told() {
        let (_dir, root) = root();
        fs::write(root.join(".gitignore"), "*.gen.c\nout/\n").expect("write");
        fs::create_dir(root.join("sub")).expect("mkdir");
        fs::write(root.join("sub/.ignore"), "!keep.gen.c\n").expect("write");
        let mut rules = Rules::new(&[]);
        assert!(rules.ignores_below(&root, &root.join("a.gen.c"), false));
        assert!(rules.ignores_below(&root, &root.join("out/a.c"), false));
        assert!(rules.ignores_below(&root, &root.join("sub/a.gen.c"), false));
        assert!(!rules.ignores_below(&root, &root.join("sub/keep.gen.c"), false));
        assert!(!rules.ignores_below(&root, &root.join("a.c"), false));

        fs::write(root.join(".gitignore"), "").expect("write");
        assert!(
            rules.ignores_below(&root, &root.join("a.gen.c"), false),
            "read once until told"
        );
        rules.forget_folder(&root);
        assert!(!rules.ignores_below(&root, &root.join("a.gen.c"), false));
    }

    #[test]
    fn the_ignore_flag_overrides_ignore_files_and_builtins() {
        let (_dir, root) = root();
        fs::write(root.join(".gitignore"), "gen/\n").expect("write");
        let mut rules = Rules::new(&["!gen/".to_string(), "!*.o".to_string()]);
        assert!(!rules.ignores_below(&root, &root.join("gen/a.c"), false));
        assert!(!rules.ignores_below(&root, &root.join("a.o"), false));
        assert!(rules.ignores_below(&root, &root.join("a.so"), false));
        assert!(rules.ignores_below(&root, &root.join(".git/index"), false));
    }

    #[test]
    fn a_folder_holding_a_cmake_cache_is_a_build_tree_said_once() {
        let (_dir, root) = root();
        let mut rules = Rules::new(&[]);
        let build = root.join("build");
        let names = [OsStr::new("CMakeCache.txt"), OsStr::new("Makefile")];
        let top = rules.frame_for(&root, &root);
        assert!(
            !rules.check_build_tree(&root, &top, &root, names),
            "never the root"
        );
        assert!(rules.check_build_tree(&root, &top, &build, names));
        assert!(rules.check_build_tree(&root, &top, &build, names));
        assert_eq!(rules.take_notices().len(), 1);
        assert!(rules.ignores_below(&root, &build.join("logic.so.c"), false));
        assert!(!rules.ignores_below(&root, &root.join("logic.c"), false));

        let mut keeping = Rules::new(&["!build/".to_string()]);
        let top = keeping.frame_for(&root, &root);
        assert!(!keeping.check_build_tree(&root, &top, &build, names));
        assert!(!keeping.ignores_below(&root, &build.join("x.c"), false));
        assert!(keeping.take_notices().is_empty(), "kept, so not said");

        rules.forget_below(&build);
        assert!(!rules.ignores_below(&root, &build.join("x.c"), false));
    }

    #[test]
    fn ignore_files_above_the_root_count_inside_a_repository_only() {
        let (_dir, top) = root();
        fs::write(top.join(".gitignore"), "*.tmp.c\n").expect("write");
        let src = top.join("src");
        fs::create_dir(&src).expect("mkdir");
        let mut outside = Rules::new(&[]);
        assert!(!outside.ignores_below(&src, &src.join("a.tmp.c"), false));

        fs::create_dir_all(top.join(".git/info")).expect("mkdir");
        fs::write(top.join(".git/info/exclude"), "local.c\n").expect("write");
        let mut inside = Rules::new(&[]);
        assert!(inside.ignores_below(&src, &src.join("a.tmp.c"), false));
        assert!(inside.ignores_below(&src, &src.join("local.c"), false));
        assert!(!inside.ignores_below(&src, &src.join("a.c"), false));
    }
}
