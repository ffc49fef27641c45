//! Building ahead: the build, and the trial of its library, run while the
//! batch that started them waits out its settle.
//!
//! A lone save's batch is released once the sources have been still for the
//! settle (8 ms by default), and a trivial build with its trial takes about
//! as long again. The watcher therefore hands such a batch on *ahead*, after
//! a much shorter stillness ([`WatchOutput::Ahead`](crate::watch::WatchOutput)),
//! and the build starts then, saying nothing. What it produces is read,
//! copied and tried as soon as it exits, and held. Nothing is acted on
//! before the batch itself comes: then the change is said, the build with
//! it, and a held library goes straight to the loader. If anything changed
//! first ([`WatchOutput::CalledOff`](crate::watch::WatchOutput)), the build
//! is stopped and forgotten: its batch waits as any other and builds as
//! usual, so a burst of saves still builds once, and what the user sees is
//! exactly what they would have seen without building ahead. A build ahead
//! costs a process start when it is called off; a build with side effects
//! beyond its output can be kept from starting early with
//! `--build-ahead-ms 0`.

use std::sync::mpsc::Sender;

use crate::event::Event;
use crate::outcome::Rejection;
use crate::pipeline::build::BuildResult;
use crate::plugin::shadow::ShadowFile;
use crate::watch::Batch;

use super::{CANCEL_GRACE, Inbox, Reloader};

/// Where a build started ahead is.
#[allow(
    clippy::large_enum_variant,
    reason = "one at a time, inside the build in flight; boxing would buy nothing"
)]
pub(super) enum Ahead {
    /// Its batch has not been confirmed yet. Once it exited, its result
    /// (and what was done with it) waits here.
    Unconfirmed {
        held: Option<(BuildResult, Option<TriedAhead>)>,
    },
    /// Called off: being stopped, its result to be dropped. `batch_came`:
    /// the batch it was started for was released meanwhile, and builds
    /// once this one is gone.
    CalledOff { batch_came: bool, counts: bool },
}

/// A successful build's library as read, copied and tried ahead.
pub(super) struct TriedAhead {
    pub read: Result<Vec<u8>, String>,
    /// `None` when there was nothing to try: unreadable, or the running
    /// version's very bytes.
    pub tried: Option<Tried>,
}

/// The shadow copy and trial of one build's bytes, or why it was refused.
pub(super) struct Tried {
    /// The library's segments, from the precheck (what the loader checks
    /// against).
    spans: Vec<(u64, u64)>,
    outcome: Result<ShadowFile, (Rejection, String)>,
    /// Whether the trial ran too, or only the copy was made (see
    /// [`Reloader::try_ahead`]).
    trial_ran: bool,
}

impl Reloader {
    /// A batch handed on ahead: start its build now if nothing else runs.
    pub(super) fn on_ahead(&mut self, mut batch: Batch, me: &Sender<Inbox>) {
        if self.stopping || self.build.is_some() || self.rebuild_requested {
            return;
        }
        batch.paths.retain(|p| self.scope.contains(p));
        if batch.paths.is_empty() && !batch.rescan {
            return;
        }
        self.spawn_build(me, true, true);
    }

    /// Something changed after the batch went ahead: stop its build.
    pub(super) fn on_called_off(&mut self) {
        let Some(build) = &mut self.build else {
            return;
        };
        match &build.ahead {
            Some(Ahead::Unconfirmed { held: Some(_) }) => {
                // Exited already: dropping it deletes its shadow copy.
                self.build = None;
            }
            Some(Ahead::Unconfirmed { held: None }) => {
                build.run.cancel(CANCEL_GRACE);
                build.cancelled = true;
                build.ahead = Some(Ahead::CalledOff {
                    batch_came: false,
                    counts: true,
                });
            }
            Some(Ahead::CalledOff { .. }) | None => {}
        }
    }

    /// A batch came that builds nothing after all (its files are as they
    /// were): a build started ahead for it goes.
    pub(super) fn call_off_ahead(&mut self) {
        if matches!(
            self.build.as_ref().and_then(|b| b.ahead.as_ref()),
            Some(Ahead::Unconfirmed { .. })
        ) {
            self.on_called_off();
        }
    }

    /// The batch came (its change already said): a build started ahead for
    /// it is now the batch's build. `true` when there was one, confirmed
    /// or called off; a held result is acted on at once.
    pub(super) fn confirm_ahead(&mut self, counts_as_attempt: bool, me: &Sender<Inbox>) -> bool {
        let Some(build) = &mut self.build else {
            return false;
        };
        match build.ahead.take() {
            None => false,
            Some(Ahead::CalledOff { .. }) => {
                build.ahead = Some(Ahead::CalledOff {
                    batch_came: true,
                    counts: counts_as_attempt,
                });
                true
            }
            Some(Ahead::Unconfirmed { held }) => {
                build.counts_as_attempt = counts_as_attempt;
                let ahead_by = build.started.elapsed();
                self.emit(Event::BuildStarted {
                    ahead: Some(ahead_by),
                });
                if let Some((result, tried)) = held
                    && let Some(build) = self.build.take()
                {
                    self.finish_build(build, result, tried, me);
                }
                true
            }
        }
    }

    /// A build exited: `Some` hands its result on to be acted on now;
    /// `None` when it was a build ahead, held until its batch comes or
    /// dropped because it was called off.
    pub(super) fn ahead_exited(
        &mut self,
        result: BuildResult,
        me: &Sender<Inbox>,
    ) -> Option<BuildResult> {
        match self.build.as_ref().and_then(|b| b.ahead.as_ref()) {
            None => Some(result),
            Some(Ahead::CalledOff { batch_came, counts }) => {
                let (batch_came, counts) = (*batch_came, *counts);
                self.build = None;
                if batch_came || std::mem::take(&mut self.rebuild_requested) {
                    self.start_build(me, counts);
                }
                None
            }
            Some(Ahead::Unconfirmed { .. }) => {
                let tried = result.succeeded().then(|| self.try_ahead(true));
                if let Some(build) = &mut self.build {
                    build.ahead = Some(Ahead::Unconfirmed {
                        held: Some((result, tried)),
                    });
                }
                None
            }
        }
    }

    /// Reads, copies and (with `trial`) tries the library a build wrote,
    /// saying nothing: what it finds is said once the build is known to be
    /// of the latest sources (a build ahead's batch confirmed; for any
    /// other build, the watcher caught up with its exit). Without `trial`
    /// the trial runs once that is known, so that a long one (a large
    /// state, a hang) comes after `[build] success`, not before.
    pub(super) fn try_ahead(&mut self, trial: bool) -> TriedAhead {
        let read = self.read_library();
        let tried = match &read {
            Ok(bytes) => {
                let hash = super::hash_bytes(bytes);
                let unchanged = self
                    .running
                    .is_some_and(|v| self.hashes.get(&v) == Some(&hash));
                (!unchanged).then(|| {
                    let outcome = if trial {
                        self.copy_and_try(bytes, hash)
                    } else {
                        self.copy_checked(bytes, hash)
                            .map_err(|r| (r, String::new()))
                    };
                    Tried {
                        spans: self.spans.clone(),
                        outcome,
                        trial_ran: trial,
                    }
                })
            }
            Err(_) => None,
        };
        TriedAhead { read, tried }
    }

    /// What was tried ahead, as [`Reloader::copy_and_try`] would give it
    /// now: a build that faulted since is refused as it would be, and a
    /// copy not tried yet is tried now.
    pub(super) fn adopt_tried(
        &mut self,
        tried: Tried,
        build_hash: u64,
        bytes: &[u8],
    ) -> Result<ShadowFile, (Rejection, String)> {
        self.refuse_known_bad(build_hash)
            .map_err(|r| (r, String::new()))?;
        self.spans = tried.spans;
        let shadow = tried.outcome?;
        if !tried.trial_ran {
            self.trial(shadow.path(), bytes)?;
        }
        Ok(shadow)
    }
}
