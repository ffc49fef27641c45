//! The notification backend: inotify, through `notify`, one non-recursive
//! watch per folder.
//!
//! Folders are watched one by one rather than with notify's recursive mode so
//! that ignored trees (`target/` alone can hold thousands of folders) cost no
//! watches. Events are translated into the kinds the debouncer knows (what
//! each says about a file's save: being written, complete, gone); opens and
//! read-only closes (the compiler reading the sources) are dropped.
//!
//! A watch belongs to a folder's inode, not to its path: once the folder is
//! deleted or moved away the kernel drops it (IN_DELETE_SELF, IN_IGNORED)
//! and notify forgets the path, and a folder made again at the same path
//! needs a new one. So each watch is recorded with the identity of the folder
//! it was put on, and re-added when the folder at that path is another one.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{ErrorKind, INotifyWatcher, RecursiveMode, Watcher as _};

use super::Raw;
use super::debounce::Kind;

pub struct InotifyBackend {
    watcher: INotifyWatcher,
    /// Ordered so that the watches at and below a folder are one range.
    watched: BTreeMap<PathBuf, FolderId>,
}

/// Which folder a path names: another device and inode is another folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderId {
    device: u64,
    inode: u64,
}

impl FolderId {
    /// The folder at `path` now (following symlinks), if it is one.
    pub fn of(path: &Path) -> Option<FolderId> {
        let meta = std::fs::metadata(path).ok()?;
        meta.is_dir().then(|| FolderId {
            device: meta.dev(),
            inode: meta.ino(),
        })
    }
}

/// Why a watch could not be added.
pub enum WatchError {
    /// An inotify limit is reached: watches (`fs.inotify.max_user_watches`),
    /// instances (`fs.inotify.max_user_instances`) or open files. The message
    /// names which, and what to raise.
    OutOfWatches(String),
    Other(String),
}

impl WatchError {
    pub fn message(&self) -> &str {
        match self {
            WatchError::OutOfWatches(m) | WatchError::Other(m) => m,
        }
    }
}

impl InotifyBackend {
    /// An inotify instance with no watches yet.
    pub fn start(tx: Sender<Raw>) -> Result<InotifyBackend, WatchError> {
        let watcher = INotifyWatcher::new(
            move |res: notify::Result<notify::Event>| {
                for raw in translate(res) {
                    // The receiver is gone only while the engine shuts down.
                    let _ = tx.send(raw);
                }
            },
            notify::Config::default(),
        )
        .map_err(|e| match e.kind {
            // inotify_init1 fails with EMFILE for either limit; which one
            // cannot be told from here, so both are named.
            ErrorKind::Io(ref io) if io.raw_os_error() == Some(libc::EMFILE) => {
                WatchError::OutOfWatches(
                    "cannot start inotify: out of inotify instances or open files \
                     (raise fs.inotify.max_user_instances or `ulimit -n`)"
                        .into(),
                )
            }
            _ => WatchError::Other(format!("cannot start inotify: {}", describe(&e))),
        })?;
        Ok(InotifyBackend {
            watcher,
            watched: BTreeMap::new(),
        })
    }

    /// Watches the folder at `dir` unless it is watched already. A folder
    /// that is gone by now needs none: its removal is an event of its own.
    pub fn add_dir(&mut self, dir: &Path) -> Result<(), WatchError> {
        let Some(id) = FolderId::of(dir) else {
            return Ok(());
        };
        match self.watched.get(dir) {
            Some(known) if *known == id => return Ok(()),
            // The watch is on a folder that is no longer at this path.
            Some(_) => self.forget(dir),
            None => {}
        }
        self.watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| classify(&e, dir))?;
        self.watched.insert(dir.to_path_buf(), id);
        Ok(())
    }

    pub fn is_watched(&self, dir: &Path) -> bool {
        self.watched.contains_key(dir)
    }

    /// Whether the folder at `dir` now is the one its watch was put on.
    pub fn watches(&self, dir: &Path) -> bool {
        self.watched
            .get(dir)
            .is_some_and(|known| FolderId::of(dir) == Some(*known))
    }

    /// After an event on `path`: the watches at and below it are put right.
    /// One on a folder that is gone or is another folder now is dropped, to
    /// be added again when the folder is adopted anew. One on the same
    /// folder is renewed: notify drops the watches at and below a path when
    /// an entry of that name is deleted or moved away, once it has read the
    /// event, and when the deletion and the re-creation come in different
    /// reads, that is after the new folder was watched. Each such drop comes
    /// with an event naming the path, so renewing on every one keeps them.
    pub fn recheck(&mut self, path: &Path) {
        let below: Vec<(PathBuf, FolderId)> = self
            .watched
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        for (dir, known) in below {
            if !self.watched.contains_key(&dir) {
                continue;
            }
            if FolderId::of(&dir) != Some(known) {
                self.forget(&dir);
            } else if self
                .watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .is_err()
            {
                // Gone in the meantime: its removal is an event of its own.
                self.forget(&dir);
            }
        }
    }

    /// Drops the watches at and below `path`.
    pub fn forget(&mut self, path: &Path) {
        let below: Vec<PathBuf> = self
            .watched
            .range(path.to_path_buf()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(path))
            .cloned()
            .collect();
        for dir in below {
            self.watched.remove(&dir);
            // notify has usually dropped it already (it does on a deletion
            // or a move away), and then says it knows no such watch.
            let _ = self.watcher.unwatch(&dir);
        }
    }
}

fn classify(e: &notify::Error, dir: &Path) -> WatchError {
    // notify reports ENOSPC from inotify_add_watch as `MaxFilesWatch`; the raw
    // code is checked too in case a version passes it through.
    let too_many = matches!(e.kind, ErrorKind::MaxFilesWatch)
        || matches!(&e.kind, ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC));
    if too_many {
        WatchError::OutOfWatches(format!(
            "cannot watch {}: out of inotify watches (raise fs.inotify.max_user_watches)",
            crate::paths::shown(dir)
        ))
    } else {
        WatchError::Other(format!(
            "cannot watch {}: {}",
            crate::paths::shown(dir),
            describe(e)
        ))
    }
}

/// The error without the path list notify's `Display` appends (`about
/// ["/dir"]`), which only repeats the path the message already names.
fn describe(e: &notify::Error) -> String {
    match &e.kind {
        ErrorKind::Io(io) => io.to_string(),
        ErrorKind::Generic(text) => text.clone(),
        ErrorKind::PathNotFound => "no such file or folder".into(),
        ErrorKind::MaxFilesWatch => "out of inotify watches".into(),
        other => format!("{other:?}"),
    }
}

fn translate(res: notify::Result<notify::Event>) -> Vec<Raw> {
    let ev = match res {
        Ok(ev) => ev,
        Err(e) => return vec![Raw::Lost(e.to_string())],
    };
    if ev.need_rescan() {
        return vec![Raw::Rescan];
    }
    // What can make notify drop the watches at a path (see `recheck`).
    let removal = matches!(
        ev.kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    );
    let kinds: &[Kind] = match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => &[Kind::Complete],
        EventKind::Create(_) => &[Kind::Created],
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
            &[Kind::Gone]
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => &[Kind::Complete],
        // Moved within the watched folders: away from the first path, into
        // place at the second.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => &[Kind::Gone, Kind::Complete],
        EventKind::Modify(ModifyKind::Name(_)) => &[Kind::Changed],
        EventKind::Modify(ModifyKind::Metadata(_)) => &[Kind::Touched],
        EventKind::Modify(_) => &[Kind::Writing],
        // Opens and read-only closes: the compiler reading the sources.
        EventKind::Access(_) | EventKind::Any | EventKind::Other => return Vec::new(),
    };
    ev.paths
        .into_iter()
        .enumerate()
        .map(|(i, path)| {
            let kind = kinds[i.min(kinds.len() - 1)];
            let kind = if kind == Kind::Created {
                created(&path)
            } else {
                kind
            };
            Raw::Change {
                path,
                kind,
                removal,
            }
        })
        .collect()
}

/// A created entry is open for writing when it was created by opening it:
/// a regular file with one name. A symlink, a hard link (`ln`, `cp -l`), a
/// folder, or an entry already gone again is complete as it is, or says
/// nothing about writing.
fn created(path: &Path) -> Kind {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() && meta.nlink() == 1 => Kind::Created,
        Ok(meta) if meta.file_type().is_file() => Kind::Complete,
        _ => Kind::Changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_entry_is_open_for_writing_only_as_a_new_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("new.c");
        std::fs::write(&file, "int x;\n").expect("write");
        assert_eq!(created(&file), Kind::Created);
        let link = dir.path().join("link.c");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert_eq!(created(&link), Kind::Changed);
        let hard = dir.path().join("hard.c");
        std::fs::hard_link(&file, &hard).expect("hard link");
        assert_eq!(created(&hard), Kind::Complete);
        assert_eq!(created(&dir.path().join("gone.c")), Kind::Changed);
        assert_eq!(created(dir.path()), Kind::Changed);
    }
}
