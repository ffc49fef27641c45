//! Stage one of the pipeline: notice that sources changed.
//!
//! A backend ([`inotify`], kept in line with the tree by [`tree`], or
//! [`poll`]) turns file-system activity into raw changes; the watch thread
//! keeps those inside the [`scope`], lets the [`debounce`] quiet period turn
//! a burst into one [`Batch`] (and confirms the quiet with a look: a sync
//! marker through the inotify queue, or a scan), and hands each batch on. Folders, not files,
//! are watched: a rename-style save replaces the file's inode and a watch on
//! the old inode would go silent forever; a folder deleted and made again is
//! seen from the folder above it.
//!
//! Every relevant raw event is also written to the [`ChangeJournal`], which
//! the build stage reads to know what was touched while a build ran.

pub mod debounce;
pub mod fingerprint;
pub mod inotify;
pub mod journal;
pub mod own;
pub mod poll;
pub mod rules;
pub mod scope;
pub mod sync;
pub mod tree;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use debounce::Batch;
use debounce::{Debouncer, Kind, Looks, Note, Step};
use inotify::WatchError;
pub use journal::ChangeJournal;
use poll::Poller;
use scope::{RulesChange, Scope};
use sync::Markers;
use tree::{Effects, Tree};

use crate::config::WatchMode;

/// What a backend reports to the watch thread.
pub enum Raw {
    Change {
        path: PathBuf,
        kind: Kind,
        /// The entry was deleted or moved (away or in).
        removal: bool,
    },
    /// Events were dropped (inotify queue overflow).
    Rescan,
    /// The backend reported an error; said once, watching goes on.
    Lost(String),
    /// Answer once every change made before now has been noted.
    Sync(Sender<()>),
    /// The poller's scan asked for by a `Sync` is through: answer.
    Synced(Sender<()>),
    /// A scan that started at this instant is through, its changes sent.
    Looked(Instant),
    Stop,
}

/// Settings of the watch stage.
pub struct WatchSettings {
    pub mode: WatchMode,
    pub poll_interval: Duration,
    /// The full quiet period.
    pub quiet: Duration,
    /// The short settle after a complete save (see `debounce`); zero for
    /// the full quiet period always.
    pub settle: Duration,
    /// How long a batch that qualifies for the settle must be still to be
    /// handed on ahead of it (see `debounce`); zero: never.
    pub ahead: Duration,
    pub max_wait: Duration,
    /// A private folder of the server's, for the catch-up markers.
    pub private_dir: PathBuf,
}

/// What the watch thread hands on.
pub enum WatchOutput {
    Batch(Batch),
    /// This batch, ahead of its settle: a build may start for it now and is
    /// acted on when the batch comes as [`WatchOutput::Batch`], unless
    /// [`WatchOutput::CalledOff`] comes first.
    Ahead(Batch),
    /// Something changed after the batch went ahead: the build started for
    /// it is to be stopped and forgotten (its batch comes later).
    CalledOff,
    /// Something the user should know about the watcher (a fallback, a lost
    /// event stream, a folder that cannot be watched or is ignored).
    Notice(String),
}

enum Backend {
    Inotify(Tree),
    /// Dropping it stops the poll thread.
    Poll {
        poller: Poller,
    },
}

/// The running watch stage; stopping it joins its thread.
pub struct Watch {
    tx: Sender<Raw>,
    thread: Option<JoinHandle<()>>,
    /// The mode in effect (poll after a fallback).
    pub mode: WatchMode,
    /// Where catch-up markers are made, with inotify.
    markers: Option<std::sync::Arc<sync::MarkerNames>>,
}

impl Watch {
    pub fn start(
        scope: Scope,
        settings: WatchSettings,
        journal: ChangeJournal,
        deliver: Box<dyn Fn(WatchOutput) + Send>,
    ) -> Result<Watch, String> {
        let (tx, rx) = mpsc::channel();
        let mut markers = None;
        let (backend, mode) = match settings.mode {
            WatchMode::Poll => (
                Backend::Poll {
                    poller: Poller::start(scope.clone(), settings.poll_interval, tx.clone())?,
                },
                WatchMode::Poll,
            ),
            WatchMode::Inotify => match Tree::start(scope.clone(), tx.clone()) {
                Ok((mut tree, notices)) => {
                    for notice in notices {
                        deliver(WatchOutput::Notice(notice));
                    }
                    match Markers::new(&settings.private_dir).and_then(|m| {
                        tree.watch_private(m.folder())
                            .map_err(|e| e.message().to_owned())?;
                        Ok(m)
                    }) {
                        Ok(m) => markers = Some(m),
                        Err(why) => deliver(WatchOutput::Notice(format!(
                            "{why}; a file written just before a build ends may be seen only after it"
                        ))),
                    }
                    (Backend::Inotify(tree), WatchMode::Inotify)
                }
                Err(WatchError::OutOfWatches(why)) => {
                    deliver(WatchOutput::Notice(fallback_notice(
                        &why,
                        settings.poll_interval,
                    )));
                    let poller = Poller::start(scope.clone(), settings.poll_interval, tx.clone())?;
                    (Backend::Poll { poller }, WatchMode::Poll)
                }
                Err(WatchError::Other(why)) => return Err(why),
            },
        };
        let looks = match mode {
            WatchMode::Inotify => Looks::Markers,
            WatchMode::Poll => Looks::Scans,
        };
        let marker_names = markers.as_ref().map(Markers::names);
        let worker = WatchThread {
            scope,
            debouncer: Debouncer::new(settings.quiet, settings.settle, settings.max_wait, looks)
                .with_ahead(settings.ahead),
            journal,
            backend,
            markers,
            poll_interval: settings.poll_interval,
            max_wait: settings.max_wait,
            tx: tx.clone(),
            deliver,
            said_lost: false,
            said: HashSet::new(),
        };
        let thread = thread::Builder::new()
            .name("hotreload-watch".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| format!("cannot start the watch thread: {e}"))?;
        Ok(Watch {
            tx,
            thread: Some(thread),
            mode,
            markers: marker_names,
        })
    }
}

impl Watch {
    /// Starts a catch-up with every change made before this call, without
    /// waiting for it: the caller does other work while the marker travels
    /// (a few wake-ups across threads, 0.1–0.2 ms), then
    /// [`CatchUp::wait`]s.
    pub fn ask_catch_up(&self) -> CatchUp {
        let (reply, done) = mpsc::channel();
        let asked = match &self.markers {
            // The marker raised here: the watch thread wakes only for its
            // event (see `sync`).
            Some(names) => match names.catch_up(reply) {
                Ok(()) => true,
                // Asked the usual way, which says why if it fails, or, once
                // the watch polls, answers with a scan.
                Err((reply, _)) => self.tx.send(Raw::Sync(reply)).is_ok(),
            },
            None => self.tx.send(Raw::Sync(reply)).is_ok(),
        };
        CatchUp {
            done: asked.then_some(done),
        }
    }
}

/// A catch-up on its way (see [`Watch::ask_catch_up`]).
pub struct CatchUp {
    /// `None` when it could not be asked (the watch thread is gone).
    done: Option<mpsc::Receiver<()>>,
}

impl CatchUp {
    /// Waits, at most `timeout`, for every change made before the catch-up
    /// was asked to be noted in the journal; whether it got there.
    pub fn wait(self, timeout: Duration) -> bool {
        self.done
            .is_some_and(|done| done.recv_timeout(timeout).is_ok())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.tx.send(Raw::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `why` names the limit that was hit and what to raise.
fn fallback_notice(why: &str, interval: Duration) -> String {
    format!(
        "{why}; falling back to polling every {} ms",
        interval.as_millis()
    )
}

struct WatchThread {
    scope: Scope,
    debouncer: Debouncer,
    journal: ChangeJournal,
    backend: Backend,
    /// For catching up with inotify; `None` in poll mode, or if they
    /// could not be set up (then a catch-up answers at once).
    markers: Option<Markers>,
    poll_interval: Duration,
    max_wait: Duration,
    tx: Sender<Raw>,
    deliver: Box<dyn Fn(WatchOutput) + Send>,
    said_lost: bool,
    /// Notices about watches already given: a folder that cannot be watched
    /// is named once, not at every event that leads to it.
    said: HashSet<String>,
}

impl WatchThread {
    fn run(mut self, rx: Receiver<Raw>) {
        loop {
            let received = match self.debouncer.deadline(Instant::now()) {
                Some(deadline) => {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(Raw::Change {
                    path,
                    kind,
                    removal,
                }) => self.on_change(path, kind, removal),
                Ok(Raw::Rescan) => self.on_rescan(),
                Ok(Raw::Lost(why)) => {
                    if !self.said_lost {
                        self.said_lost = true;
                        (self.deliver)(WatchOutput::Notice(format!(
                            "watch error: {why}; rebuilding to be safe"
                        )));
                    }
                    self.journal.note_rescan();
                    self.debouncer.note_rescan(Instant::now());
                }
                Ok(Raw::Sync(reply)) => self.on_sync(reply),
                Ok(Raw::Synced(reply)) => {
                    let _ = reply.send(());
                }
                Ok(Raw::Looked(started)) => self.debouncer.looked(started),
                Ok(Raw::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.advance();
        }
    }

    /// Does what the debouncer asks until it waits: looks, and batches.
    fn advance(&mut self) {
        loop {
            let now = Instant::now();
            match self.debouncer.step(now) {
                Step::Wait => return,
                Step::Look => self.look(now),
                Step::Release(batch, notes) => {
                    for note in notes {
                        self.say_note(note);
                    }
                    (self.deliver)(WatchOutput::Batch(batch));
                }
                Step::Ahead(batch) => (self.deliver)(WatchOutput::Ahead(batch)),
                Step::Revoke => (self.deliver)(WatchOutput::CalledOff),
            }
        }
    }

    /// Asks whether anything changed that has not been noted yet; the
    /// answer comes as an event (the marker's, or the scan's `Looked`).
    fn look(&mut self, now: Instant) {
        let failed = match (&self.backend, &mut self.markers) {
            (Backend::Poll { poller }, _) => {
                poller.look_now();
                return;
            }
            (Backend::Inotify(_), Some(markers)) => match markers.place_look(now) {
                Ok(()) => return,
                Err(why) => Some(why),
            },
            (Backend::Inotify(_), None) => None,
        };
        if let Some(why) = failed {
            let notice = format!("{why}; a quiet period is taken as it is, unconfirmed");
            if self.said.insert(notice.clone()) {
                (self.deliver)(WatchOutput::Notice(notice));
            }
        }
        // Nothing to look with (said at start, or just now): as if the
        // look found nothing new.
        self.debouncer.looked(now);
    }

    fn say_note(&mut self, note: Note) {
        let notice = match note {
            Note::StillWriting(paths) => {
                let (are, they_are, them) = if paths.len() == 1 {
                    ("is", "it is no source", "it")
                } else {
                    ("are", "they are no sources", "them")
                };
                format!(
                    "building while {} {are} still open for writing (written to and not closed): \
                     a change waits at most {} ms; if {they_are}, --ignore {them}",
                    names(&paths),
                    self.max_wait.as_millis(),
                )
            }
            Note::NeverClosed(path, ago) => format!(
                "{} was written to {} ms ago and not closed since; not waiting for it any longer",
                crate::paths::shown(&path),
                ago.as_millis()
            ),
            Note::Unconfirmed => format!(
                "the check that nothing else changed ({}) did not come back within {} ms; \
                 building without it",
                match self.backend {
                    Backend::Inotify(_) => "a sync marker through the inotify queue",
                    Backend::Poll { .. } => "a scan of the watched files",
                },
                self.max_wait.as_millis()
            ),
        };
        // A file kept open for writing would be named at every batch.
        if self.said.insert(notice.clone()) {
            (self.deliver)(WatchOutput::Notice(notice));
        }
    }

    fn on_sync(&mut self, reply: Sender<()>) {
        let reply = match (&self.backend, &mut self.markers) {
            (Backend::Poll { poller }, _) => {
                poller.scan_now(reply);
                return;
            }
            (Backend::Inotify(_), Some(markers)) => match markers.place(reply) {
                Ok(()) => return,
                Err((reply, why)) => {
                    if self.said.insert(why.clone()) {
                        (self.deliver)(WatchOutput::Notice(why));
                    }
                    reply
                }
            },
            (Backend::Inotify(_), None) => reply,
        };
        // Nothing to wait for: the waiter goes on with what it has.
        let _ = reply.send(());
    }

    fn on_change(&mut self, path: PathBuf, kind: Kind, removal: bool) {
        if let Some(markers) = &mut self.markers {
            match markers.on_event(&path) {
                sync::Seen::NotMine => {}
                sync::Seen::Mine => return,
                sync::Seen::LookBack(asked) => {
                    self.debouncer.looked(asked);
                    return;
                }
            }
        }
        if let Backend::Inotify(tree) = &self.backend
            && !tree.concerns(&path)
        {
            return;
        }
        let now = Instant::now();
        let rules_change = if kind.settled() {
            self.scope.observe(&path)
        } else {
            RulesChange::None
        };
        let mut fx = Effects::default();
        match &mut self.backend {
            Backend::Inotify(tree) => {
                match &rules_change {
                    RulesChange::BuildTree(dir) => tree.drop_watches_below(dir),
                    RulesChange::IgnoreFiles(dir) => tree.rules_changed(dir, &mut fx),
                    RulesChange::None => {}
                }
                tree.on_event(&path, kind, removal, &mut fx);
            }
            // The poller lists every file in the scope each time, by the
            // rules in force then, and reports only files.
            Backend::Poll { .. } => {
                if self.scope.contains(&path) {
                    fx.changed.push((path, kind));
                }
            }
        }
        self.apply(fx, now);
    }

    fn on_rescan(&mut self) {
        let now = Instant::now();
        let mut fx = Effects::default();
        if let Backend::Inotify(tree) = &mut self.backend {
            // Folders may have come or gone unseen: look at everything again.
            tree.resync(&mut fx);
        }
        // The rescan itself stands for every file.
        fx.changed.clear();
        self.apply(fx, now);
        self.journal.note_rescan();
        self.debouncer.note_rescan(now);
    }

    fn apply(&mut self, fx: Effects, now: Instant) {
        let unwatched = fx
            .unwatched
            .into_iter()
            .chain(fx.unwatched_targets)
            .map(tree::unwatched_notice);
        for notice in fx.notices.into_iter().chain(unwatched) {
            if self.said.insert(notice.clone()) {
                (self.deliver)(WatchOutput::Notice(notice));
            }
        }
        for (path, kind) in fx.changed {
            self.journal.note(&path);
            self.debouncer.note(path, kind, now);
        }
        if let Some(why) = fx.out_of_watches {
            // Polling from now on; its rescan covers whatever was missed.
            self.fall_back_to_polling(&why);
        }
    }

    fn fall_back_to_polling(&mut self, why: &str) {
        match Poller::start(self.scope.clone(), self.poll_interval, self.tx.clone()) {
            Ok(poller) => {
                (self.deliver)(WatchOutput::Notice(fallback_notice(
                    why,
                    self.poll_interval,
                )));
                self.backend = Backend::Poll { poller };
                self.debouncer.now_polling();
                // Their markers' events will not come now: a scan answers.
                let waiting = self.markers.as_mut().map(Markers::stop);
                for reply in waiting.into_iter().flatten() {
                    self.on_sync(reply);
                }
                // Changes may have been missed while the limit was hit.
                self.journal.note_rescan();
                self.debouncer.note_rescan(Instant::now());
            }
            Err(e) => (self.deliver)(WatchOutput::Notice(format!(
                "{why}; and polling failed too: {e}"
            ))),
        }
    }
}

/// `a.c`, `a.c and b.c`, `a.c, b.c and 3 more`.
fn names(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths
        .iter()
        .take(2)
        .map(|p| crate::paths::shown(p))
        .collect();
    match paths.len() {
        0 | 1 => shown.concat(),
        2 => format!("{} and {}", shown[0], shown[1]),
        n => format!("{}, {} and {} more", shown[0], shown[1], n - 2),
    }
}
