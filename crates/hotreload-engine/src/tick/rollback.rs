//! Going back to an earlier version on command (`rollback [vN]`): any
//! version still loaded for rollbacks, with the state carried across the
//! layout change exactly as a fault's rollback carries it; refused, saying
//! why, when it cannot be.

use std::time::Instant;

use crate::event::Event;
use crate::plugin::Plugin;
use crate::tick::schedule::Schedule;

use super::{DoorError, Owner, TickLoop, TickOutput};

/// What a rollback did: from which version to which, after how many ticks,
/// and how the state was carried (`-lives`), when its layout changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolledBack {
    pub from: u64,
    pub to: u64,
    pub tick: u64,
    pub carried: Option<String>,
    /// `to` was loaded again from its kept copy for this.
    pub reloaded: bool,
}

pub type RollbackReply = super::door::Asked<RolledBack>;

impl TickLoop {
    pub(super) fn roll_back(&mut self, to: u64, reply: RollbackReply) {
        if let Some(reply) = reply.claim() {
            reply.send(self.roll_back_to(to, false, true));
        }
    }

    /// A version loaded again from its kept copy, to roll back to: taken
    /// as one kept loaded, or handed back to be closed when the state
    /// cannot be carried to it. `after_fault`: brought back on the server's
    /// own account, as nothing else was loaded when the running version
    /// faulted; nobody waits for the reply, so a refusal is said here.
    pub(super) fn bring_back(&mut self, plugin: Plugin, reply: RollbackReply, after_fault: bool) {
        let Some(reply) = reply.claim() else {
            // Given up while it was being loaded: closed again, off this
            // thread.
            (self.output)(TickOutput::Retired(plugin));
            return;
        };
        let version = plugin.version();
        self.earlier.push_back(plugin);
        let done = self.roll_back_to(version, true, !after_fault);
        if let Err(why) = &done {
            if let Some(at) = self.earlier.iter().position(|p| p.version() == version)
                && let Some(plugin) = self.earlier.remove(at)
            {
                (self.output)(TickOutput::Retired(plugin));
            }
            if after_fault {
                (self.events)(Event::ServerNotice(format!(
                    "v{version}, loaded again from its kept copy to take over after the fault, cannot: {why}; ticking stays paused until the next good build"
                )));
            }
        }
        reply.send(done);
    }

    /// Makes `to` (a version kept loaded) the running one, on the state as
    /// it is: the running version's, or, when none runs (the last one
    /// faulted with nothing to take over), the state it left.
    fn roll_back_to(
        &mut self,
        to: u64,
        reloaded: bool,
        on_request: bool,
    ) -> Result<RolledBack, DoorError> {
        let (Some(owner), Some(_)) = (self.owner.clone(), &self.state) else {
            return Err(DoorError::Unavailable(
                "expected a state to roll back with, found none yet".into(),
            ));
        };
        let from = owner.version;
        if self.current.as_ref().is_some_and(|p| p.version() == to) {
            return Err(DoorError::Refused(format!(
                "expected a version other than the one running, found v{to}"
            )));
        }
        let Some(index) = self.earlier.iter().position(|p| p.version() == to) else {
            return Err(DoorError::Refused(format!(
                "expected v{to} loaded for the rollback, found it gone (unloaded meanwhile)"
            )));
        };
        let Some(target) = self.earlier.remove(index) else {
            return Err(DoorError::Refused(
                "expected a kept version, found it gone".into(),
            ));
        };
        let carried = match self.carry_back(&owner, &target) {
            Ok(account) => account,
            Err(why) => {
                self.earlier.insert(index, target);
                let hint = if why.contains("--reset-field") {
                    " (a server flag); or set the field to a value that fits (hotreload ctl set) and roll back again"
                } else {
                    ""
                };
                return Err(DoorError::Refused(format!(
                    "expected the state to carry over to v{to}'s layout, found that it cannot: {why}{hint}"
                )));
            }
        };
        self.snapshot
            .set_owner(target.state_version(), target.layout().cloned());
        self.owner = Some(Owner::of(&target));
        let replaced = self.current.replace(target);
        let from_faulted = replaced.is_none();
        if let Some(current) = replaced {
            self.earlier.push_front(current);
            self.trim_earlier();
        }
        if self.schedule.is_none() {
            // Ticking had stopped with the fault: it starts again from now.
            self.schedule = Some(Schedule::new(self.settings.period, Instant::now()));
        }
        let from_kept = self.earlier.iter().any(|p| p.version() == from);
        self.board.set_version(Some(to));
        self.publish_loaded();
        let done = RolledBack {
            from,
            to,
            tick: self.ticks,
            carried,
            reloaded,
        };
        (self.events)(Event::RolledBackOnRequest {
            from,
            to,
            tick: self.ticks,
            carried: done.carried.clone(),
            reloaded,
            from_kept,
            from_faulted,
            on_request,
        });
        (self.output)(TickOutput::RolledBack { running: to });
        Ok(done)
    }
}
