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
//! A catch-up asked from another thread creates its marker itself (after
//! telling the watch thread to expect it, through the same channel the
//! marker's event comes by, so the expectation is always there first): one
//! thread wake-up fewer than asking the watch thread to create it.
//!
//! The same markers confirm a quiet period: the debouncer asks for a look,
//! and once the marker is back, every event queued before it has been noted
//! (see `debounce`).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

/// Where markers are made and what they are called: shared by the watch
/// thread and whoever creates a marker directly, so no name is used twice.
pub struct MarkerNames {
    /// The markers' folder as events name it.
    path: PathBuf,
    next: AtomicU64,
}

impl MarkerNames {
    /// A name no marker had.
    pub fn next(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.path.join(n.to_string())
    }
}

/// Creates the marker file `marker`.
pub fn create(marker: &Path) -> Result<(), String> {
    std::fs::File::create(marker)
        .map(drop)
        .map_err(|e| format!("cannot create the sync marker {}: {e}", marker.display()))
}

pub struct Markers {
    /// Held to remove the folder, with any marker left, when the watch
    /// stage stops.
    _dir: tempfile::TempDir,
    names: Arc<MarkerNames>,
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
            names: Arc::new(MarkerNames {
                path,
                next: AtomicU64::new(0),
            }),
            waiting: HashMap::new(),
            look: None,
        })
    }

    /// The folder to watch.
    pub fn folder(&self) -> &Path {
        &self.names.path
    }

    /// The names, for creating markers from another thread.
    pub fn names(&self) -> Arc<MarkerNames> {
        Arc::clone(&self.names)
    }

    /// A marker another thread is about to create: `reply` is answered
    /// when its event is back.
    pub fn expect(&mut self, marker: PathBuf, reply: Sender<()>) {
        self.waiting.insert(marker, reply);
    }

    /// A marker expected and then not created after all.
    pub fn forget(&mut self, marker: &Path) {
        self.waiting.remove(marker);
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
        let marker = self.names.next();
        create(&marker)?;
        Ok(marker)
    }

    /// What an event on `path` was; a marker that was waited for is
    /// answered and removed.
    pub fn on_event(&mut self, path: &Path) -> Seen {
        if !path.starts_with(&self.names.path) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_made_elsewhere_is_answered_when_expected_and_not_once_forgotten() {
        let parent = tempfile::tempdir().expect("tempdir");
        let mut markers = Markers::new(parent.path()).expect("markers");
        let names = markers.names();
        let (first, second) = (names.next(), names.next());
        assert_ne!(first, second, "every marker has a name of its own");
        let (reply, answered) = std::sync::mpsc::channel();
        markers.expect(first.clone(), reply);
        create(&first).expect("create the marker");
        assert_eq!(markers.on_event(&first), Seen::Mine);
        assert!(answered.try_recv().is_ok(), "answered at its event");
        assert!(!first.exists(), "removed once answered");

        let (reply, answered) = std::sync::mpsc::channel();
        markers.expect(second.clone(), reply);
        markers.forget(&second);
        assert!(
            answered.try_recv().is_err(),
            "forgotten: its sender is dropped, never answered"
        );
        // The names the watch thread makes itself come from the same count.
        markers.place_look(Instant::now()).expect("a look");
        assert!(names.next().ends_with("4"));
    }
}
