//! The polling backend: stat every watched file at a fixed interval.
//!
//! For file systems that send no notifications, and the fallback when inotify
//! runs out of watches. Changes are found by [`Fingerprints`], so two saves
//! within one second are both seen. The cost grows with the number of files
//! (about 10% of a core for 5,000 files at 100 ms), hence a 250 ms default.
//! A scan can also be asked for at once ([`Poller::scan_now`]): the build
//! stage does so when a build exits, to know what it wrote meanwhile, and
//! the debouncer to confirm a quiet period ([`Poller::look_now`]). Every
//! scan ends with a [`Raw::Looked`] naming when it started, after the
//! changes it found: a scan that found nothing new is the only evidence of
//! quiet polling has.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Raw;
use super::debounce::Kind;
use super::fingerprint::Fingerprints;
use super::scope::Scope;

enum Request {
    /// Scan now, then hand this back through the watch thread's channel.
    ScanNow(Sender<()>),
    /// Scan now (its `Looked` is the answer).
    Look,
    Stop,
}

pub struct Poller {
    requests: Sender<Request>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    pub fn start(scope: Scope, interval: Duration, tx: Sender<Raw>) -> Result<Poller, String> {
        let (requests, inbox) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("hotreload-poll".into())
            .spawn(move || {
                let mut known = Fingerprints::of_files(scope.files());
                loop {
                    let synced = match inbox.recv_timeout(interval) {
                        Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                        Ok(Request::ScanNow(reply)) => Some(reply),
                        Ok(Request::Look) | Err(RecvTimeoutError::Timeout) => None,
                    };
                    let started = Instant::now();
                    for path in known.replace_all(scope.files()) {
                        let change = Raw::Change {
                            path,
                            kind: Kind::Changed,
                            removal: false,
                        };
                        if tx.send(change).is_err() {
                            return;
                        }
                    }
                    if tx.send(Raw::Looked(started)).is_err() {
                        return;
                    }
                    // After the changes, so that they are handled first.
                    if let Some(reply) = synced
                        && tx.send(Raw::Synced(reply)).is_err()
                    {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the poll thread: {e}"))?;
        Ok(Poller {
            requests,
            thread: Some(thread),
        })
    }

    /// Asks for a scan now; `reply` comes back through the watch thread's
    /// channel once its changes have.
    pub fn scan_now(&self, reply: Sender<()>) {
        // A poll thread that is gone cannot answer; the caller's wait is
        // bounded.
        let _ = self.requests.send(Request::ScanNow(reply));
    }

    /// Asks for a scan now, to confirm a quiet period.
    pub fn look_now(&self) {
        // A poll thread that is gone looks no more; the maximum wait
        // releases the batch.
        let _ = self.requests.send(Request::Look);
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
