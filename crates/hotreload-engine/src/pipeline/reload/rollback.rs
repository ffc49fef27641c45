//! Rollback on command, the reload thread's part: keeping each good
//! version's library on disk, and bringing back one that is no longer
//! loaded. A version still loaded is the tick thread's alone (the control
//! socket asks it directly); this thread sees the others, loads the kept
//! copy as it loads any build (precheck, load, table; no trial: the version
//! ran live before, and the state is carried to it exactly as a fault's
//! rollback carries it, or the rollback is refused), and hands it to the
//! tick thread.

use crate::event::Event;
use crate::tick::{DoorError, RollbackReply, TickInput};

use super::Reloader;
use super::prepare::hash_bytes;

impl Reloader {
    /// Keeps `version`'s library (`bytes`, as built) on disk for later
    /// rollbacks, within `--keep-on-disk`.
    pub(super) fn keep_copy(&mut self, version: u64, bytes: &[u8]) {
        match self.kept.keep(&self.shadow, version, &self.lib_name, bytes) {
            Ok(done) => {
                if done.first_removal {
                    self.emit(Event::ServerNotice(format!(
                        "removed v{}'s kept library: --keep-on-disk {} keeps the newest {} good versions on disk for rollbacks; older ones go from now on, oldest first (`hotreload ctl versions` shows which remain)",
                        done.removed.first().copied().unwrap_or(0),
                        self.kept.bound(),
                        self.kept.bound(),
                    )));
                }
            }
            Err(why) => self.emit(Event::ServerNotice(format!(
                "v{version} cannot be rolled back to once it is unloaded: {why}"
            ))),
        }
        self.publish_on_disk();
    }

    pub(super) fn publish_on_disk(&self) {
        if let Some(board) = &self.board {
            board.set_on_disk(self.kept.versions());
        }
    }

    /// A rollback the tick thread cannot do alone: to a version no longer
    /// loaded (or, by default, when none but the running one is).
    pub(super) fn on_rollback(&mut self, to: Option<u64>, reply: RollbackReply) {
        if self.stopping {
            return reply.refuse(DoorError::Unavailable(
                "expected a running server for rollback, found it stopping".into(),
            ));
        }
        let loaded_other = self.sides.keys().any(|v| Some(*v) != self.running);
        let target = match to {
            Some(v) => v,
            None if loaded_other => return self.forward(None, reply),
            None => match self.kept.newest_other_than(self.running) {
                Some(v) => v,
                // The tick thread says that nothing else is kept.
                None => return self.forward(None, reply),
            },
        };
        if self.sides.contains_key(&target) || self.running == Some(target) {
            return self.forward(Some(target), reply);
        }
        let bytes = match self.kept.bytes_of(target) {
            Some(Ok(bytes)) => bytes,
            Some(Err(why)) => return reply.refuse(DoorError::Refused(why)),
            None => return reply.refuse(DoorError::Refused(self.not_kept(target))),
        };
        let hash = hash_bytes(&bytes);
        let loaded = self
            .copy_checked(&bytes, hash)
            .and_then(|shadow| self.load_version(shadow, hash, &bytes, target));
        match loaded {
            Ok((plugin, side)) => {
                self.sides.insert(target, side);
                self.hashes.insert(target, hash);
                if let Err(unsent) = self.tick.send(TickInput::BringBack(plugin, reply)) {
                    self.sides.remove(&target);
                    self.hashes.remove(&target);
                    if let TickInput::BringBack(plugin, reply) = unsent.0 {
                        self.retire(plugin);
                        reply.refuse(DoorError::Unavailable(
                            "expected a running tick loop, found it stopped".into(),
                        ));
                    }
                }
            }
            Err(rejection) => reply.refuse(DoorError::Refused(format!(
                "expected v{target}'s kept library to load again, found it refused: {rejection}"
            ))),
        }
    }

    fn forward(&self, to: Option<u64>, reply: RollbackReply) {
        if let Err(unsent) = self.tick.send(TickInput::RollBack(to, reply))
            && let TickInput::RollBack(_, reply) = unsent.0
        {
            reply.refuse(DoorError::Unavailable(
                "expected a running tick loop, found it stopped".into(),
            ));
        }
    }

    /// Why `version` cannot be rolled back to.
    fn not_kept(&self, version: u64) -> String {
        let list = |vs: Vec<u64>| {
            if vs.is_empty() {
                "none".to_owned()
            } else {
                vs.iter()
                    .map(|v| format!("v{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let mut loaded: Vec<u64> = self.sides.keys().copied().collect();
        loaded.sort_unstable();
        let kept = self.kept.versions();
        let found = if version > self.version {
            format!("no v{version} yet (the newest is v{})", self.version)
        } else {
            format!(
                "v{version} neither loaded nor kept on disk (it faulted, was refused, or went beyond --keep-versions {} and --keep-on-disk {})",
                self.config.keep_versions,
                self.kept.bound()
            )
        };
        format!(
            "expected a version loaded ({}) or kept on disk ({}), found {found}",
            list(loaded),
            list(kept)
        )
    }
}
