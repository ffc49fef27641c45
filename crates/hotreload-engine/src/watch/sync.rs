//! Catching up with the kernel: when a build exits, the build stage must
//! know of every change made before that moment, but the events of the
//! build's last writes can still be on their way (in the kernel's queue, in
//! notify's thread, in the channel).
//!
//! All watches share one inotify queue, in order. So a marker file created
//! in a private watched folder is seen only after every event that came
//! before it: once its event is back, the watch thread has noted all of them.
//! Each marker has its own name, because inotify merges identical events
//! that are still unread.
//!
//! The same markers confirm a quiet period: the debouncer asks for a look,
//! and once the marker is back, every event queued before it has been noted
//! (see `debounce`).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Instant;

pub struct Markers {
    /// Held to remove the folder, with any marker left, when the watch
    /// stage stops.
    _dir: tempfile::TempDir,
    /// `dir` as events name it.
    path: PathBuf,
    next: u64,
    waiting: HashMap<PathBuf, Sender<()>>,
    /// The debouncer's look now out: its marker and when it was asked.
    look: Option<(PathBuf, Instant)>,
}

/// What an event in the markers' folder was.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not in the markers' folder: a source, perhaps.
    NotMine,
    /// A marker's event that needs nothing more.
    Mine,
    /// The marker of the look asked at this instant is back.
    LookBack(Instant),
}

impl Markers {
    /// A private folder (mode 0700, random name) for the markers, inside
    /// `parent` (the server's own private folder, so that a server that
    /// dies leaves one folder behind, which the next one removes).
    pub fn new(parent: &Path) -> Result<Markers, String> {
        let dir = tempfile::Builder::new()
            .prefix("sync-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|e| format!("cannot make a folder for sync markers: {e}"))?;
        let path = dir
            .path()
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", dir.path().display()))?;
        Ok(Markers {
            _dir: dir,
            path,
            next: 0,
            waiting: HashMap::new(),
            look: None,
        })
    }

    /// The folder to watch.
    pub fn folder(&self) -> &Path {
        &self.path
    }

    /// Creates a new marker; `reply` is answered when its event is back.
    /// On failure `reply` is handed back with the reason, to answer at once.
    pub fn place(&mut self, reply: Sender<()>) -> Result<(), (Sender<()>, String)> {
        match self.create() {
            Ok(marker) => {
                self.waiting.insert(marker, reply);
                Ok(())
            }
            Err(why) => Err((reply, why)),
        }
    }

    /// Creates the marker of a look asked at `asked` (a look already out
    /// is given up: only the newest counts).
    pub fn place_look(&mut self, asked: Instant) -> Result<(), String> {
        let marker = self.create()?;
        if let Some((old, _)) = self.look.replace((marker, asked)) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }

    fn create(&mut self) -> Result<PathBuf, String> {
        self.next += 1;
        let marker = self.path.join(self.next.to_string());
        match std::fs::File::create(&marker) {
            Ok(_) => Ok(marker),
            Err(e) => Err(format!(
                "cannot create the sync marker {}: {e}",
                marker.display()
            )),
        }
    }

    /// What an event on `path` was; a marker that was waited for is
    /// answered and removed.
    pub fn on_event(&mut self, path: &Path) -> Seen {
        if !path.starts_with(&self.path) {
            return Seen::NotMine;
        }
        if let Some(reply) = self.waiting.remove(path) {
            // The waiter may have given up already.
            let _ = reply.send(());
            let _ = std::fs::remove_file(path);
        }
        if let Some((_, asked)) = self.look.take_if(|(marker, _)| marker == path) {
            let _ = std::fs::remove_file(path);
            return Seen::LookBack(asked);
        }
        Seen::Mine
    }
}
