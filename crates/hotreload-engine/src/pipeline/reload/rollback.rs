//! Rollback on command, the reload thread's part: keeping each good
//! version's library on disk, and bringing back one that is no longer
//! loaded. A version still loaded is the tick thread's alone (the control
//! socket asks it directly); this thread sees the others, loads the kept
//! copy as it loads any build (precheck, load, table; no trial: the version
//! ran live before, and the state is carried to it exactly as a fault's
//! rollback carries it, or the rollback is refused), and hands it to the
//! tick thread.

use crate::event::Event;
use crate::state::{State, migrate};
use crate::tick::{CarryBackAsk, DoorError, Migration, RollbackReply, TickInput};

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
            board.set_on_disk(self.kept.files());
        }
    }

    /// A rollback the tick thread cannot do alone: to a version no longer
    /// loaded, which is loaded again from its kept copy first.
    pub(super) fn on_rollback(&mut self, target: u64, reply: RollbackReply) {
        if self.stopping {
            return reply.refuse(DoorError::Unavailable(
                "expected a running server for rollback, found it stopping".into(),
            ));
        }
        if self.sides.contains_key(&target) {
            // Loaded after all (brought back meanwhile).
            return self.forward(target, reply);
        }
        match self.load_kept(target) {
            Ok(plugin) => self.bring_back(plugin, reply, false),
            Err(why) => reply.refuse(DoorError::Refused(why)),
        }
    }

    /// After a fault that left nothing loaded to take over: the newest
    /// version kept on disk is loaded again and takes over, as a loaded
    /// one would have; said either way.
    /// Whether a version was sent to take over.
    pub(super) fn take_over_from_disk(&mut self) -> bool {
        // The newest kept only on disk: what is loaded has had its turn.
        let Some(target) = self
            .kept
            .versions()
            .into_iter()
            .rev()
            .find(|v| !self.sides.contains_key(v))
        else {
            return false;
        };
        match self.load_kept(target) {
            Ok(plugin) => {
                let (reply, _nobody) = crate::tick::door::ask();
                self.bring_back(plugin, reply, true);
                true
            }
            Err(why) => {
                self.emit(Event::ServerNotice(format!(
                    "after the fault, v{target} (kept on disk) cannot take over: {why}; ticking stays paused until the next good build"
                )));
                false
            }
        }
    }

    /// Loads `target` again from its kept copy, checked as any build is.
    fn load_kept(&mut self, target: u64) -> Result<crate::plugin::Plugin, String> {
        let bytes = match self.kept.bytes_of(target) {
            Some(Ok(bytes)) => bytes,
            Some(Err(why)) => return Err(why),
            None => return Err(self.not_kept(target)),
        };
        let hash = hash_bytes(&bytes);
        self.bringing_back = true;
        let loaded = self
            .copy_checked(&bytes, hash)
            .and_then(|shadow| self.load_version(shadow, hash, &bytes, target));
        self.bringing_back = false;
        let (plugin, side) = loaded.map_err(|rejection| {
            format!(
                "expected v{target}'s kept library to load again, found it refused: {rejection}"
            )
        })?;
        self.sides.insert(target, side);
        self.hashes.insert(target, hash);
        Ok(plugin)
    }

    fn bring_back(
        &mut self,
        plugin: crate::plugin::Plugin,
        reply: RollbackReply,
        after_fault: bool,
    ) {
        let target = plugin.version();
        let sent = self.tick.send(TickInput::BringBack {
            plugin,
            reply,
            after_fault,
        });
        if let Err(unsent) = sent {
            self.sides.remove(&target);
            self.hashes.remove(&target);
            if let TickInput::BringBack { plugin, reply, .. } = unsent.0 {
                self.retire(plugin);
                reply.refuse(DoorError::Unavailable(
                    "expected a running tick loop, found it stopped".into(),
                ));
            }
        }
    }

    /// Carries the state to the layout of the version a rollback goes to,
    /// ahead (see [`CarryBackAsk`]), and hands the block to the tick thread.
    pub(super) fn carry_back(&mut self, ask: CarryBackAsk) {
        let to = ask.to;
        let carried = self.carry_back_ahead(ask);
        if let Err(unsent) = self.tick.send(TickInput::CarriedBack(to, carried))
            && let TickInput::CarriedBack(_, Ok(migration)) = unsent.0
        {
            drop(migration);
        }
    }

    fn carry_back_ahead(&self, ask: CarryBackAsk) -> Result<Migration, String> {
        let mut new_state = match self.spares.take_block(ask.new_size, ask.shared) {
            Some(block) => block,
            None => State::new_block(ask.new_size, ask.shared)
                .map_err(|why| format!("cannot allocate {} bytes of state: {why}", ask.new_size))?,
        };
        let ahead = match &self.last_good {
            Some(last_good) => migrate::ahead::prepare(
                last_good.snapshot(),
                migrate::ahead::OldSide {
                    size: ask.old_size,
                    version: ask.old_state_version,
                    layout: Some(&ask.old_layout),
                },
                Some(&ask.plan),
                &mut new_state,
                &self.spares,
            )
            .map_err(|unfit| migrate::rollback_refusal(&unfit.reason(), &unfit.field))?,
            None => None,
        };
        Ok(Migration {
            summary: ask.plan.summary(),
            plan: Some(ask.plan),
            new_state,
            old_version: ask.old_state_version,
            ahead,
        })
    }

    fn forward(&self, to: u64, reply: RollbackReply) {
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
        let faulted = self.board.as_ref().and_then(|b| {
            b.versions()
                .into_iter()
                .rev()
                .find(|r| r.version == Some(version))
                .map(|r| r.outcome)
                .filter(|o| o.starts_with("faulted"))
        });
        let found = if self.version == 0 {
            "no version loaded yet".to_owned()
        } else if version > self.version {
            format!("no v{version} yet (the newest is v{})", self.version)
        } else if let Some(outcome) = faulted {
            format!(
                "v{version} {outcome}: a version that faulted is not kept, as it would fault again"
            )
        } else {
            format!(
                "v{version} neither loaded nor kept on disk (beyond --keep-versions {} and --keep-on-disk {}, or its migrate hook refused the state)",
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
