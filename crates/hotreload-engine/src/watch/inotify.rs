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

fn classify(e: &notify::Error, dir: &Path) -> WatchError {
    // notify reports ENOSPC from inotify_add_watch as `MaxFilesWatch`; the raw
    // code is checked too in case a version passes it through.
    let too_many = matches!(e.kind, ErrorKind::MaxFilesWatch)
        || matches!(&e.kind, ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC));
    if too_many {
        WatchError::OutOfWatches(format!(
            "cannot watch {}: out of inotify watches (raise fs.inotify.max_user_watches)",
            dir.display()
        ))
    } else {
        WatchError::Other(format!("cannot watch {}: {}", dir.display(), describe(e)))
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
