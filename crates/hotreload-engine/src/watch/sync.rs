//! Catching up with the kernel: when a build exits, the build stage must
//! know of every change made before that moment, but the events of the
//! build's last writes can still be on their way (in the kernel's queue, in
//! notify's thread, in the channel).
//!
//! All watches share one inotify queue, in order. So a marker file created
//! in a private watched folder is seen only after every event that came
//! before it: once its event is back, the watch thread has noted all of them.
//! Each marker out has its own name, because inotify merges identical
//! events that are still unread.
//!
//! Most markers are files made once, when the watch starts, and touched
//! (their modification time set, one IN_ATTRIB) for each use: a touch costs
//! the asking thread well under a microsecond where creating a file costs
//! 15-40 µs, and the watch thread has nothing to remove afterwards. A
//! touched file is out until its event is back; only then is its name used
//! again, so no two markers out share a name. When every made file is out
//! (events lost to a queue overflow keep theirs out for good), a marker is
//! a new file with a name of its own, as each one was before.
//!
//! A catch-up asked from another thread raises its marker itself, after
//! putting its reply where the watch thread finds it (the record both
//! share), so the reply is always there before the event: the one wake-up
//! is the watch thread's, for the event.
//!
//! The same markers confirm a quiet period: the debouncer asks for a look,
//! and once the marker is back, every event queued before it has been noted
//! (see `debounce`).

use std::collections::HashMap;
use std::fs::{File, FileTimes};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

/// How many marker files are made once and touched for each use: far more
/// than are ever out at once (a catch-up and a look).
const MADE_ONCE: usize = 16;

/// The markers' folder and files, and who waits for which: shared by the
/// watch thread and whoever asks for a catch-up from another thread.
pub struct MarkerNames {
    /// The markers' folder as events name it.
    path: PathBuf,
    /// For the markers made as new files, when every made one is out.
    next: AtomicU64,
    /// The files made once, open, to be touched.
    made: Vec<(PathBuf, File)>,
    shared: Mutex<Shared>,
}

struct Shared {
    /// Which of `made` are out: touched, their event not back yet.
    out: Vec<bool>,
    /// Catch-ups waiting for their marker's event.
    waiting: HashMap<PathBuf, Sender<()>>,
    /// Whether marker events still come: not once the watch polls.
    live: bool,
}

impl MarkerNames {
    /// Makes the files to touch in `path`, which must not be watched yet
    /// (their creation is no marker). A file that cannot be made is left
    /// out: markers are then new files, as they can be anyway.
    fn new(path: PathBuf) -> MarkerNames {
        let made: Vec<(PathBuf, File)> = (0..MADE_ONCE)
            .filter_map(|i| {
                let file = path.join(format!("touched-{i}"));
                File::create(&file).ok().map(|open| (file, open))
            })
            .collect();
        let shared = Mutex::new(Shared {
            out: vec![false; made.len()],
            waiting: HashMap::new(),
            live: true,
        });
        MarkerNames {
            path,
            next: AtomicU64::new(0),
            made,
            shared,
        }
    }

    /// Raises a marker whose event answers `reply`. Handed back when no
    /// marker can say anything (the watch polls now, or raising failed),
    /// with why, if something failed.
    pub fn catch_up(&self, reply: Sender<()>) -> Result<(), (Sender<()>, Option<String>)> {
        let marker = {
            let mut shared = self.lock();
            if !shared.live {
                return Err((reply, None));
            }
            let marker = self.take(&mut shared);
            shared.waiting.insert(marker.clone(), reply);
            marker
        };
        self.raise(&marker).or_else(|why| {
            let mut shared = self.lock();
            self.give_back(&mut shared, &marker);
            match shared.waiting.remove(&marker) {
                Some(reply) => Err((reply, Some(why))),
                // Taken meanwhile by the fall-back to polling, which has it
                // answered by a scan.
                None => Ok(()),
            }
        })
    }

    /// The name of a marker to raise, out from now until its event is
    /// back: a made file that is not out, or else a name no marker had.
    fn take(&self, shared: &mut Shared) -> PathBuf {
        if let Some(i) = shared.out.iter().position(|taken| !taken) {
            shared.out[i] = true;
            return self.made[i].0.clone();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.path.join(n.to_string())
    }

    /// Raises `marker`: touches the made file, or creates the new one.
    fn raise(&self, marker: &Path) -> Result<(), String> {
        let raised = match self.made_index(marker) {
            Some(i) => self.made[i]
                .1
                .set_times(FileTimes::new().set_modified(SystemTime::now())),
            None => File::create(marker).map(drop),
        };
        raised.map_err(|e| format!("cannot raise the sync marker {}: {e}", marker.display()))
    }

    /// `marker`'s event is back, or it will never be raised: a made file
    /// can be taken again, a new one is removed.
    fn give_back(&self, shared: &mut Shared, marker: &Path) {
        match self.made_index(marker) {
            Some(i) => shared.out[i] = false,
            None => {
                let _ = std::fs::remove_file(marker);
            }
        }
    }

    /// Whether `marker` is one of the made files, and which.
    fn made_index(&self, marker: &Path) -> Option<usize> {
        self.made.iter().position(|(path, _)| path == marker)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Flags and replies hold no invariant a panic elsewhere could break.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The watch thread's side of the markers.
pub struct Markers {
    /// Held to remove the folder, with any marker left, when the watch
    /// stage stops.
    _dir: tempfile::TempDir,
    names: Arc<MarkerNames>,
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
            names: Arc::new(MarkerNames::new(path)),
            look: None,
        })
    }

    /// The folder to watch.
    pub fn folder(&self) -> &Path {
        &self.names.path
    }

    /// The shared side, for catch-ups asked from another thread.
    pub fn names(&self) -> Arc<MarkerNames> {
        Arc::clone(&self.names)
    }

    /// Raises a marker; `reply` is answered when its event is back.
    /// On failure `reply` is handed back with the reason, to answer at once.
    pub fn place(&mut self, reply: Sender<()>) -> Result<(), (Sender<()>, String)> {
        self.names
            .catch_up(reply)
            .map_err(|(reply, why)| (reply, why.unwrap_or_default()))
    }

    /// Raises the marker of a look asked at `asked` (a look already out
    /// is given up: only the newest counts; its marker is out until its
    /// event is back).
    pub fn place_look(&mut self, asked: Instant) -> Result<(), String> {
        let marker = self.names.take(&mut self.names.lock());
        match self.names.raise(&marker) {
            Ok(()) => {
                self.look = Some((marker, asked));
                Ok(())
            }
            Err(why) => {
                self.names.give_back(&mut self.names.lock(), &marker);
                Err(why)
            }
        }
    }

    /// Marker events stop coming (the watch polls from now on): the
    /// catch-ups waiting for one are handed back, to be answered otherwise.
    pub fn stop(&mut self) -> Vec<Sender<()>> {
        let mut shared = self.names.lock();
        shared.live = false;
        shared.waiting.drain().map(|(_, reply)| reply).collect()
    }

    /// What an event on `path` was; a marker that was waited for is
    /// answered, and its name given back.
    pub fn on_event(&mut self, path: &Path) -> Seen {
        if !path.starts_with(&self.names.path) {
            return Seen::NotMine;
        }
        let looked = self.look.take_if(|(marker, _)| marker == path);
        {
            let mut shared = self.names.lock();
            // A made file's touch is one event; a new file's creation is
            // the first of a few (created, closed, removed), and only that
            // one finds it still waited for or looked at.
            let waited = shared.waiting.remove(path);
            let made_out = self.names.made_index(path).is_some_and(|i| shared.out[i]);
            if waited.is_some() || looked.is_some() || made_out {
                self.names.give_back(&mut shared, path);
            }
            if let Some(reply) = waited {
                // The waiter may have given up already.
                let _ = reply.send(());
            }
        }
        match looked {
            Some((_, asked)) => Seen::LookBack(asked),
            None => Seen::Mine,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(replies: &std::sync::mpsc::Receiver<()>) -> bool {
        replies.try_recv().is_ok()
    }

    /// Raises a catch-up alone among the waiting: its marker and replies.
    fn raise_only(names: &MarkerNames) -> (PathBuf, std::sync::mpsc::Receiver<()>) {
        let (reply, replies) = std::sync::mpsc::channel();
        names
            .catch_up(reply)
            .map_err(|(_, why)| why)
            .expect("raised");
        let waiting = names.lock().waiting.keys().cloned().collect::<Vec<_>>();
        assert_eq!(waiting.len(), 1, "one catch-up waiting");
        (waiting[0].clone(), replies)
    }

    #[test]
    fn a_catch_up_is_answered_at_its_event_and_its_made_file_is_taken_again() {
        let parent = tempfile::tempdir().expect("tempdir");
        let mut markers = Markers::new(parent.path()).expect("markers");
        let names = markers.names();
        let (first, replies) = raise_only(&names);
        let (reply, second_replies) = std::sync::mpsc::channel();
        names
            .catch_up(reply)
            .map_err(|(_, why)| why)
            .expect("raised");
        assert_eq!(
            names.lock().waiting.len(),
            2,
            "every marker out has a name of its own"
        );
        assert_eq!(markers.on_event(&first), Seen::Mine);
        assert!(answered(&replies), "answered at its event");
        assert!(!answered(&second_replies), "the other is not");
        assert!(first.exists(), "a made file stays, to be touched again");
        // Given back: the watch thread's own look takes it.
        markers.place_look(Instant::now()).expect("a look");
        assert_eq!(markers.look.as_ref().map(|(m, _)| m), Some(&first));
        assert!(matches!(markers.on_event(&first), Seen::LookBack(_)));
        assert!(markers.look.is_none());
    }

    #[test]
    fn once_every_made_file_is_out_a_marker_is_a_new_file_removed_when_back() {
        let parent = tempfile::tempdir().expect("tempdir");
        let mut markers = Markers::new(parent.path()).expect("markers");
        let names = markers.names();
        let made: Vec<PathBuf> = (0..MADE_ONCE)
            .map(|_| names.take(&mut names.lock()))
            .collect();
        let distinct: std::collections::HashSet<&PathBuf> = made.iter().collect();
        assert_eq!(
            distinct.len(),
            MADE_ONCE,
            "no made file is taken twice while out"
        );
        let (extra, replies) = raise_only(&names);
        assert!(!made.contains(&extra), "a new name once all are out");
        assert!(extra.exists(), "created");
        assert_eq!(markers.on_event(&extra), Seen::Mine);
        assert!(answered(&replies), "answered at its first event");
        assert!(!extra.exists(), "a new file is removed once back");
        // Its later events (closed, removed) answer and give back nothing.
        assert_eq!(markers.on_event(&extra), Seen::Mine);
        // A made file whose waiter is gone is given back at its event.
        markers.on_event(&made[3]);
        assert_eq!(names.take(&mut names.lock()), made[3]);
    }

    #[test]
    fn once_the_watch_polls_waiting_catch_ups_are_handed_back_and_new_ones_refused() {
        let parent = tempfile::tempdir().expect("tempdir");
        let mut markers = Markers::new(parent.path()).expect("markers");
        let names = markers.names();
        let (reply, replies) = std::sync::mpsc::channel();
        names
            .catch_up(reply)
            .map_err(|(_, why)| why)
            .expect("raised");
        let handed = markers.stop();
        assert_eq!(handed.len(), 1, "the waiting one is handed back");
        handed[0].send(()).expect("answer it");
        assert!(answered(&replies));
        let (reply, _replies) = std::sync::mpsc::channel();
        match names.catch_up(reply) {
            Err((_, None)) => {}
            Err((_, Some(why))) => panic!("expected a plain refusal, found a failure: {why}"),
            Ok(()) => panic!("expected a refusal once polling, found a marker raised"),
        }
    }

    #[test]
    fn every_catch_up_comes_back_after_the_writes_before_it_also_once_names_are_reused() {
        use super::super::{ChangeJournal, Scope, Watch, WatchSettings};
        use std::time::Duration;
        let dir = tempfile::tempdir().expect("tempdir");
        let private = tempfile::tempdir().expect("private dir");
        let source = dir.path().canonicalize().expect("resolve").join("logic.c");
        std::fs::write(&source, "int x;\n").expect("write");
        let scope = Scope::new(
            &[dir.path().to_path_buf()],
            &[],
            &[],
            &crate::watch::own::OwnFiles::new(),
        );
        let journal = ChangeJournal::new();
        let watch = Watch::start(
            scope,
            WatchSettings {
                mode: crate::config::WatchMode::Inotify,
                poll_interval: Duration::from_millis(100),
                quiet: Duration::from_secs(60),
                settle: Duration::ZERO,
                ahead: Duration::ZERO,
                max_wait: Duration::from_secs(60),
                private_dir: private.path().to_path_buf(),
            },
            journal.clone(),
            Box::new(|_| {}),
        )
        .expect("start the watch");
        // More rounds than there are made files: each is touched again.
        for round in 0..3 * MADE_ONCE {
            journal.take();
            std::fs::write(&source, format!("int x = {round};\n")).expect("write");
            assert!(
                watch.ask_catch_up().wait(Duration::from_secs(5)),
                "catch-up {round} did not come back within 5 s"
            );
            assert!(
                journal.take().paths.contains(&source),
                "catch-up {round}: the write made before it is not noted"
            );
        }
    }
}
