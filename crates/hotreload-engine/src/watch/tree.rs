//! The watcher's model of the tree (inotify): which folders need a watch so
//! that nothing in the scope can change unseen, kept true as folders come
//! and go.
//!
//! Each target (a path named with `--watch`) hangs from a chain of folders.
//! Watched, besides every folder of a target that is a folder: the folder a
//! target is in, and for a file also that folder's folder, so that deleting
//! and making again the folder a watch was on (`rm -rf src && git checkout
//! -- src`, `git stash -u`, a re-extracted archive) is itself an event. A
//! folder of the chain that is missing is stood in for by the nearest one
//! that exists; when it appears, it is watched, and what is in it is walked
//! (each folder watched before it is listed) and reported. Whether a target
//! is a file or a folder is decided when it appears, not at start.
//!
//! A source that is a symlink (`w/arr.c -> ../real/arr.c`) is edited where
//! its target is: the target's folder is watched too, and events on the
//! target are reported as changes of the link. The link is resolved again
//! whenever it changes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use super::Raw;
use super::debounce::Kind;
use super::inotify::{FolderId, InotifyBackend, WatchError};
use super::scope::{Entry, Scope};
use crate::paths;

/// What handling an event (or setting up) found to do.
#[derive(Default)]
pub struct Effects {
    /// Files to report as changed, with what the event said of them.
    pub changed: Vec<(PathBuf, Kind)>,
    pub notices: Vec<String>,
    /// An inotify limit was reached: polling has to take over.
    pub out_of_watches: Option<String>,
    /// Folders holding sources that could not be watched, and why.
    pub unwatched: Vec<String>,
    /// The same for a target itself, or the folder a file target is in:
    /// at start, the server cannot do its job and says so by not starting.
    pub unwatched_targets: Vec<String>,
}

/// What a target was when last looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Missing,
    File,
    Folder(FolderId),
}

impl Seen {
    fn of(path: &Path) -> Seen {
        match FolderId::of(path) {
            Some(id) => Seen::Folder(id),
            None if path.exists() => Seen::File,
            None => Seen::Missing,
        }
    }
}

/// Why a folder is watched, which decides what a failure to watch it costs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A target, or the folder a file target is in.
    Target,
    /// Sources are in it: their changes go unseen without the watch.
    Sources,
    /// It holds a folder of a chain: without the watch, that folder being
    /// made again goes unseen.
    Chain,
}

pub struct Tree {
    scope: Scope,
    backend: InotifyBackend,
    targets: Vec<(PathBuf, Seen)>,
    /// Each symlink among the sources and the file it resolves to.
    links: HashMap<PathBuf, PathBuf>,
    /// Links to folders already said not to be followed.
    said_not_followed: HashSet<PathBuf>,
}

impl Tree {
    /// Watches everything the scope needs; `Err` if inotify cannot be used
    /// (a limit, to fall back to polling on) or a folder holding sources
    /// cannot be watched.
    pub fn start(scope: Scope, tx: Sender<Raw>) -> Result<(Tree, Vec<String>), WatchError> {
        let backend = InotifyBackend::start(tx)?;
        let targets = scope
            .targets()
            .iter()
            .map(|t| (t.clone(), Seen::Missing))
            .collect();
        let mut tree = Tree {
            scope,
            backend,
            targets,
            links: HashMap::new(),
            said_not_followed: HashSet::new(),
        };
        let mut fx = Effects::default();
        for i in 0..tree.targets.len() {
            tree.reconcile(i, None, false, &mut fx);
        }
        if let Some(why) = fx.out_of_watches {
            return Err(WatchError::OutOfWatches(why));
        }
        if let Some(why) = fx.unwatched_targets.into_iter().next() {
            return Err(WatchError::Other(why));
        }
        let unwatched = fx.unwatched.into_iter().map(unwatched_notice);
        Ok((tree, fx.notices.into_iter().chain(unwatched).collect()))
    }

    /// Whether an event on `path` can matter: it is a target, inside one,
    /// on the way to one, or the same for a link's target. Decided from the
    /// path alone: the folders above the targets are watched too, and most
    /// of their events (a temporary folder's) concern something else.
    pub fn concerns(&self, path: &Path) -> bool {
        let related = |t: &PathBuf| path.starts_with(t) || t.starts_with(path);
        self.targets.iter().any(|(t, _)| related(t)) || self.links.values().any(related)
    }

    /// An event on `path`; `removal`: the entry was deleted or moved.
    pub fn on_event(&mut self, path: &Path, kind: Kind, removal: bool, fx: &mut Effects) {
        let settled = kind.settled();
        if removal {
            self.backend.recheck(path);
        }
        let mut is_target = false;
        for i in 0..self.targets.len() {
            let target = &self.targets[i].0;
            if target == path {
                is_target = true;
                self.target_event(i, kind, fx);
            } else if settled && target.starts_with(path) {
                self.reconcile(i, Some(Kind::Changed), false, fx);
            }
        }
        self.link_target_event(path, kind, fx);
        if is_target {
            return;
        }
        // Not following symlinks: a link to a folder is not descended into,
        // here as in a walk (it is a link, said below).
        let is_folder = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        if settled && is_folder {
            // A folder created or moved in under a watched one needs a watch
            // of its own, and what was written into it before that watch
            // existed is found by walking it. One watched already was walked
            // after its watch was in place: what landed since is an event.
            if self.scope.descends_into(path) && !self.backend.watches(path) {
                self.adopt(path, true, fx);
            }
            return;
        }
        if self.scope.contains(path) {
            fx.changed.push((path.to_path_buf(), kind));
            if settled {
                self.refresh_link(path, fx);
            }
        }
    }

    /// After events were lost: every target and folder is looked at again,
    /// and whatever has no watch gets one.
    pub fn resync(&mut self, fx: &mut Effects) {
        for i in 0..self.targets.len() {
            self.reconcile(i, None, true, fx);
        }
        let links: Vec<PathBuf> = self.links.keys().cloned().collect();
        for link in links {
            self.refresh_link(&link, fx);
        }
    }

    /// Watches a folder of the server's own (no source is in it).
    pub fn watch_private(&mut self, dir: &Path) -> Result<(), WatchError> {
        self.backend.add_dir(dir)
    }

    /// The rules say `dir` is a build tree now: its watches are not needed.
    pub fn drop_watches_below(&mut self, dir: &Path) {
        self.backend.forget(dir);
    }

    /// The rules below `dir` changed: folders they ignored before may be
    /// in the scope now, and files in them are reported.
    pub fn rules_changed(&mut self, dir: &Path, fx: &mut Effects) {
        if self.scope.descends_into(dir) {
            self.adopt(dir, true, fx);
        }
    }

    fn target_event(&mut self, i: usize, kind: Kind, fx: &mut Effects) {
        let (target, seen) = self.targets[i].clone();
        match Seen::of(&target) {
            Seen::Folder(_) => {
                self.reconcile(i, Some(Kind::Changed), false, fx);
            }
            now if now != seen => self.reconcile(i, Some(kind), false, fx),
            _ => {
                fx.changed.push((target.clone(), kind));
                if kind.settled() {
                    self.refresh_link(&target, fx);
                }
            }
        }
    }

    /// Brings the watches for target `i` in line with what is there now;
    /// with `report`, what appeared or went is reported as changed (a file
    /// that appeared as the event said; one that went as gone).
    fn reconcile(&mut self, i: usize, report: Option<Kind>, force: bool, fx: &mut Effects) {
        let (target, before) = self.targets[i].clone();
        let now = Seen::of(&target);
        self.targets[i].1 = now;
        match now {
            Seen::Folder(_) => {
                self.watch_chain(&target, 1, false, fx);
                if force || before != now || !self.backend.is_watched(&target) {
                    self.adopt(&target, report.is_some(), fx);
                }
            }
            Seen::File => {
                self.watch_chain(&target, 2, true, fx);
                if let Some(kind) = report {
                    // A removal seen after the file came back says gone all
                    // the same: the event that brought it back is still on
                    // its way, and will say how.
                    fx.changed.push((target.clone(), kind));
                }
                self.refresh_link(&target, fx);
            }
            Seen::Missing => {
                self.watch_chain(&target, 2, true, fx);
                if report.is_some() && before == Seen::File {
                    fx.changed.push((target.clone(), Kind::Gone));
                }
            }
        }
    }

    /// Watches the `levels` folders above `path` (each, if missing, stood
    /// in for by the nearest folder that exists). `holds_source`: the first
    /// of them holds a source file.
    fn watch_chain(&mut self, path: &Path, levels: usize, holds_source: bool, fx: &mut Effects) {
        let mut level = path.to_path_buf();
        for depth in 0..levels {
            let Some(parent) = level.parent().map(Path::to_path_buf) else {
                return;
            };
            level = parent;
            let existing = nearest_existing(&level);
            let role = if depth == 0 && holds_source && existing == level {
                Role::Target
            } else {
                Role::Chain
            };
            watch(&mut self.backend, &existing, role, fx);
        }
    }

    /// Watches `dir` and every folder below it in the scope, each before it
    /// is listed; with `report`, every file found is reported as changed.
    fn adopt(&mut self, dir: &Path, report: bool, fx: &mut Effects) {
        let scope = self.scope.clone();
        let adopted = if scope.is_target(dir) {
            Role::Target
        } else {
            Role::Sources
        };
        let backend = &mut self.backend;
        let mut files = Vec::new();
        let mut links = Vec::new();
        let mut build_trees = Vec::new();
        scope.walk(dir, &mut |entry| match entry {
            Entry::Folder(p) => {
                let role = if p == dir { adopted } else { Role::Sources };
                watch(backend, p, role, fx);
            }
            Entry::File(p) => files.push(p.to_path_buf()),
            Entry::Link(p) => links.push(p.to_path_buf()),
            Entry::BuildTree(p) => build_trees.push(p.to_path_buf()),
        });
        for tree in build_trees {
            self.backend.forget(&tree);
        }
        for link in links {
            if self.refresh_link(&link, fx) {
                files.push(link);
            }
        }
        if report {
            fx.changed
                .extend(files.into_iter().map(|f| (f, Kind::Changed)));
        }
    }

    /// Looks at `path` again as a possible symlink: resolves it and watches
    /// its target's folder, or forgets it. Whether it is a link to a file.
    fn refresh_link(&mut self, path: &Path, fx: &mut Effects) -> bool {
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let resolved = is_link.then(|| resolve_link(path)).flatten();
        let Some(target) = resolved else {
            self.links.remove(path);
            return false;
        };
        if target.is_dir() {
            self.links.remove(path);
            if self.said_not_followed.insert(path.to_path_buf()) {
                fx.notices.push(format!(
                    "not following {} -> {}: a link to a folder (--watch the folder itself to watch it)",
                    paths::shown(path),
                    paths::shown(&target)
                ));
            }
            return false;
        }
        self.watch_chain(&target, 2, true, fx);
        self.links.insert(path.to_path_buf(), target);
        true
    }

    /// Events on the file a link resolves to are changes of the link; an
    /// event on a folder on the way to it means the folder may be new.
    fn link_target_event(&mut self, path: &Path, kind: Kind, fx: &mut Effects) {
        let hits: Vec<(PathBuf, bool)> = self
            .links
            .iter()
            .filter(|(_, target)| target.starts_with(path))
            .map(|(link, target)| (link.clone(), target == path))
            .collect();
        for (link, exact) in hits {
            if exact {
                fx.changed.push((link, kind));
            } else if kind.settled() {
                self.refresh_link(&link, fx);
                fx.changed.push((link, Kind::Changed));
            }
        }
    }
}

/// Watches `dir`, turning a failure into what it costs.
fn watch(backend: &mut InotifyBackend, dir: &Path, role: Role, fx: &mut Effects) {
    if fx.out_of_watches.is_some() {
        return;
    }
    match backend.add_dir(dir) {
        Ok(()) => {}
        Err(WatchError::OutOfWatches(why)) => fx.out_of_watches = Some(why),
        Err(WatchError::Other(why)) => match role {
            Role::Target => fx.unwatched_targets.push(why),
            Role::Sources => fx.unwatched.push(why),
            Role::Chain => fx.notices.push(format!(
                "{why}; a folder in it that is deleted and made again goes unseen"
            )),
        },
    }
}

/// The line for a folder that holds sources and cannot be watched.
pub fn unwatched_notice(why: String) -> String {
    format!("{why}; changes in it go unseen")
}

/// `path` itself if it is a folder, else the nearest folder above it.
fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// The file a symlink leads to: fully resolved if it exists, else where
/// its own target would be (to watch for it to appear).
fn resolve_link(link: &Path) -> Option<PathBuf> {
    if let Ok(target) = std::fs::canonicalize(link) {
        return Some(target);
    }
    let pointed = std::fs::read_link(link).ok()?;
    Some(paths::absolute(&paths::parent_dir(link).join(pointed)))
}
