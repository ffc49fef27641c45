//! The notification backend: inotify, through `notify`, one non-recursive
//! watch per folder.
//!
//! Folders are watched one by one rather than with notify's recursive mode so
//! that ignored trees (`target/` alone can hold thousands of folders) cost no
//! watches. Events are translated into the two strengths the debouncer knows;
//! opens and read-only closes (the compiler reading the sources) are dropped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{ErrorKind, INotifyWatcher, RecursiveMode, Watcher as _};

use super::Raw;
use super::debounce::Strength;

pub struct InotifyBackend {
    watcher: INotifyWatcher,
    watched: HashSet<PathBuf>,
}

/// Why a watch could not be added.
pub enum WatchError {
    /// The per-user inotify limit (`fs.inotify.max_user_watches` or
    /// `max_user_instances`) is reached.
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
    pub fn start(dirs: &[PathBuf], tx: Sender<Raw>) -> Result<InotifyBackend, WatchError> {
        let watcher = INotifyWatcher::new(
            move |res: notify::Result<notify::Event>| {
                for raw in translate(res) {
                    // The receiver is gone only while the engine shuts down.
                    let _ = tx.send(raw);
                }
            },
            notify::Config::default(),
        )
        .map_err(|e| classify(&e, Path::new("inotify")))?;
        let mut backend = InotifyBackend {
            watcher,
            watched: HashSet::new(),
        };
        for dir in dirs {
            backend.add_dir(dir)?;
        }
        Ok(backend)
    }

    pub fn add_dir(&mut self, dir: &Path) -> Result<(), WatchError> {
        if self.watched.contains(dir) {
            return Ok(());
        }
        self.watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| classify(&e, dir))?;
        self.watched.insert(dir.to_path_buf());
        Ok(())
    }
}

fn classify(e: &notify::Error, what: &Path) -> WatchError {
    let too_many = matches!(e.kind, ErrorKind::MaxFilesWatch)
        || matches!(&e.kind, ErrorKind::Io(io) if matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EMFILE)));
    let msg = format!("cannot watch {}: {e}", what.display());
    if too_many {
        WatchError::OutOfWatches(msg)
    } else {
        WatchError::Other(msg)
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
    let strength = match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Create(_)
        | EventKind::Remove(_)
        | EventKind::Modify(ModifyKind::Name(_))
        | EventKind::Modify(ModifyKind::Metadata(_)) => Strength::Settled,
        EventKind::Modify(_) => Strength::Activity,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => return Vec::new(),
    };
    ev.paths
        .into_iter()
        .map(|path| Raw::Change { path, strength })
        .collect()
}
