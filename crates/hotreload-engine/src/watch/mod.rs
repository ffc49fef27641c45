//! Stage one of the pipeline: notice that sources changed.
//!
//! A backend ([`inotify`] or [`poll`]) turns file-system activity into raw
//! changes; the watch thread keeps those inside the [`scope`], lets the
//! [`debounce`] quiet period turn a burst into one [`Batch`], and hands each
//! batch on. Folders, not files, are watched: a rename-style save replaces the
//! file's inode and a watch on the old inode would go silent forever.
//!
//! Every relevant raw event also moves the [`ChangeClock`], which the build
//! stage reads to know whether a build started before the newest change.

pub mod debounce;
pub mod fingerprint;
pub mod inotify;
pub mod poll;
pub mod scope;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use debounce::Batch;
use debounce::{Debouncer, Strength};
use inotify::{InotifyBackend, WatchError};
use poll::Poller;
use scope::Scope;

use crate::config::WatchMode;

/// What a backend reports to the watch thread.
pub enum Raw {
    Change {
        path: PathBuf,
        strength: Strength,
    },
    /// Events were dropped (inotify queue overflow).
    Rescan,
    /// The backend reported an error; said once, watching goes on.
    Lost(String),
    Stop,
}

/// The time of the newest relevant change, shared between the watch thread
/// (which moves it) and the build stage (which compares build start times
/// with it).
#[derive(Clone)]
pub struct ChangeClock {
    epoch: Instant,
    /// Nanoseconds after `epoch` of the newest change, plus one; 0 for none.
    last: Arc<AtomicU64>,
}

impl ChangeClock {
    pub fn new() -> ChangeClock {
        ChangeClock {
            epoch: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn mark(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.epoch).as_nanos() as u64 + 1;
        self.last.fetch_max(ns, Ordering::AcqRel);
    }

    /// Whether a change was seen at or after `since`.
    pub fn changed_since(&self, since: Instant) -> bool {
        let last = self.last.load(Ordering::Acquire);
        last != 0 && last > since.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

impl Default for ChangeClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Settings of the watch stage.
pub struct WatchSettings {
    pub mode: WatchMode,
    pub poll_interval: Duration,
    pub quiet: Duration,
    pub max_wait: Duration,
}

/// What the watch thread hands on.
pub enum WatchOutput {
    Batch(Batch),
    /// Something the user should know about the watcher (a fallback, a lost
    /// event stream).
    Notice(String),
}

enum Backend {
    Inotify(InotifyBackend),
    /// Held only to keep polling: dropping it stops the poll thread.
    Poll {
        _poller: Poller,
    },
}

/// The running watch stage; stopping it joins its thread.
pub struct Watch {
    tx: Sender<Raw>,
    thread: Option<JoinHandle<()>>,
    /// The mode in effect (poll after a fallback).
    pub mode: WatchMode,
}

impl Watch {
    pub fn start(
        scope: Scope,
        settings: WatchSettings,
        clock: ChangeClock,
        deliver: Box<dyn Fn(WatchOutput) + Send>,
    ) -> Result<Watch, String> {
        let (tx, rx) = mpsc::channel();
        let (backend, mode) = match settings.mode {
            WatchMode::Poll => (
                Backend::Poll {
                    _poller: Poller::start(scope.clone(), settings.poll_interval, tx.clone())?,
                },
                WatchMode::Poll,
            ),
            WatchMode::Inotify => match InotifyBackend::start(&scope.dirs(), tx.clone()) {
                Ok(b) => (Backend::Inotify(b), WatchMode::Inotify),
                Err(WatchError::OutOfWatches(why)) => {
                    deliver(WatchOutput::Notice(fallback_notice(
                        &why,
                        settings.poll_interval,
                    )));
                    let poller = Poller::start(scope.clone(), settings.poll_interval, tx.clone())?;
                    (Backend::Poll { _poller: poller }, WatchMode::Poll)
                }
                Err(WatchError::Other(why)) => return Err(why),
            },
        };
        let worker = WatchThread {
            scope,
            debouncer: Debouncer::new(settings.quiet, settings.max_wait),
            clock,
            backend,
            poll_interval: settings.poll_interval,
            tx: tx.clone(),
            deliver,
            said_lost: false,
        };
        let thread = thread::Builder::new()
            .name("hotreload-watch".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| format!("cannot start the watch thread: {e}"))?;
        Ok(Watch {
            tx,
            thread: Some(thread),
            mode,
        })
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
    clock: ChangeClock,
    backend: Backend,
    poll_interval: Duration,
    tx: Sender<Raw>,
    deliver: Box<dyn Fn(WatchOutput) + Send>,
    said_lost: bool,
}

impl WatchThread {
    fn run(mut self, rx: Receiver<Raw>) {
        loop {
            let received = match self.debouncer.deadline() {
                Some(deadline) => {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(Raw::Change { path, strength }) => self.on_change(path, strength),
                Ok(Raw::Rescan) => {
                    let now = Instant::now();
                    self.clock.mark(now);
                    self.debouncer.note_rescan(now);
                }
                Ok(Raw::Lost(why)) => {
                    if !self.said_lost {
                        self.said_lost = true;
                        (self.deliver)(WatchOutput::Notice(format!(
                            "watch error: {why}; rebuilding to be safe"
                        )));
                    }
                    self.debouncer.note_rescan(Instant::now());
                }
                Ok(Raw::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(batch) = self.debouncer.take_due(Instant::now()) {
                (self.deliver)(WatchOutput::Batch(batch));
            }
        }
    }

    fn on_change(&mut self, path: PathBuf, strength: Strength) {
        let now = Instant::now();
        // A folder created (or moved in) under a watched root needs a watch of
        // its own, and whatever was written into it before that watch existed
        // is found by walking it.
        if strength == Strength::Settled && self.scope.descends_into(&path) && path.is_dir() {
            self.adopt_dir(&path, now);
            return;
        }
        if !self.scope.contains(&path) {
            return;
        }
        if strength == Strength::Settled {
            self.clock.mark(now);
        }
        self.debouncer.note(path, strength, now);
    }

    fn adopt_dir(&mut self, dir: &std::path::Path, now: Instant) {
        // Each folder gets its watch before it is listed (`walk` visits a
        // folder before reading it): a file that lands in it meanwhile is
        // then either listed or reported by the new watch. Watching only
        // after the whole walk lost every file that landed in between, most
        // of them when a large tree was moved in.
        let mut backend = match &mut self.backend {
            Backend::Inotify(backend) => Some(backend),
            Backend::Poll { .. } => None,
        };
        let mut files = Vec::new();
        let mut out_of_watches = None;
        let mut failures = Vec::new();
        self.scope.walk(dir, &mut |p, is_dir| {
            if !is_dir {
                files.push(p.to_path_buf());
                return;
            }
            let Some(backend) = backend.as_mut().filter(|_| out_of_watches.is_none()) else {
                return;
            };
            match backend.add_dir(p) {
                Ok(()) => {}
                Err(WatchError::OutOfWatches(why)) => out_of_watches = Some(why),
                Err(WatchError::Other(why)) => failures.push(why),
            }
        });
        for why in failures {
            (self.deliver)(WatchOutput::Notice(why));
        }
        if let Some(why) = out_of_watches {
            // Polling from now on; its rescan covers whatever was missed.
            self.fall_back_to_polling(&why);
        }
        for f in files.into_iter().filter(|f| self.scope.contains(f)) {
            self.clock.mark(now);
            self.debouncer.note(f, Strength::Settled, now);
        }
    }

    fn fall_back_to_polling(&mut self, why: &str) {
        match Poller::start(self.scope.clone(), self.poll_interval, self.tx.clone()) {
            Ok(poller) => {
                (self.deliver)(WatchOutput::Notice(fallback_notice(
                    why,
                    self.poll_interval,
                )));
                self.backend = Backend::Poll { _poller: poller };
                // Changes may have been missed while the limit was hit.
                self.debouncer.note_rescan(Instant::now());
            }
            Err(e) => (self.deliver)(WatchOutput::Notice(format!(
                "{why}; and polling failed too: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_clock_orders_changes_and_builds() {
        let clock = ChangeClock::new();
        let t0 = Instant::now();
        assert!(!clock.changed_since(t0));
        let build_start = t0 + Duration::from_millis(5);
        clock.mark(t0 + Duration::from_millis(1));
        assert!(
            !clock.changed_since(build_start),
            "change before the build started"
        );
        clock.mark(t0 + Duration::from_millis(9));
        assert!(clock.changed_since(build_start), "change during the build");
    }
}
