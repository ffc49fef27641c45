//! Going back to an earlier version on command (`rollback [vN]`): any
//! version still loaded for rollbacks, with the state carried across the
//! layout change exactly as a fault's rollback carries it; refused, saying
//! why, when it cannot be.

use crate::event::Event;
use crate::plugin::Plugin;

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
    pub(super) fn roll_back(&mut self, to: Option<u64>, reply: RollbackReply) {
        if let Some(reply) = reply.claim() {
            reply.send(self.roll_back_to(to, false));
        }
    }

    /// A version loaded again from its kept copy, to roll back to: taken
    /// as one kept loaded, or handed back to be closed when the state
    /// cannot be carried to it.
    pub(super) fn bring_back(&mut self, plugin: Plugin, reply: RollbackReply) {
        let Some(reply) = reply.claim() else {
            // Given up while it was being loaded: closed again, off this
            // thread.
            (self.output)(TickOutput::Retired(plugin));
            return;
        };
        let version = plugin.version();
        self.earlier.push_back(plugin);
        let done = self.roll_back_to(Some(version), true);
        if done.is_err()
            && let Some(at) = self.earlier.iter().position(|p| p.version() == version)
            && let Some(plugin) = self.earlier.remove(at)
        {
            (self.output)(TickOutput::Retired(plugin));
        }
        reply.send(done);
    }

    fn roll_back_to(&mut self, to: Option<u64>, reloaded: bool) -> Result<RolledBack, DoorError> {
        let Some(current) = &self.current else {
            return Err(DoorError::Unavailable(
                "expected a version running, found none".into(),
            ));
        };
        let from = current.version();
        let kept: Vec<u64> = self.earlier.iter().map(Plugin::version).collect();
        let index = match to {
            None => (!self.earlier.is_empty()).then_some(0),
            Some(v) => self.earlier.iter().position(|p| p.version() == v),
        };
        let Some(index) = index else {
            let which = to.map_or("an earlier version".to_owned(), |v| format!("v{v}"));
            return Err(DoorError::Refused(if to == Some(from) {
                format!("expected a version other than the one running, found v{from}")
            } else {
                format!(
                    "expected {which} to be loaded or kept on disk for rollbacks, found {} loaded and none on disk; --keep-versions and --keep-on-disk bound them",
                    if kept.is_empty() {
                        "none kept".to_owned()
                    } else {
                        kept.iter()
                            .map(|v| format!("v{v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )
            }));
        };
        let Some(target) = self.earlier.remove(index) else {
            return Err(DoorError::Refused(
                "expected a kept version, found it gone".into(),
            ));
        };
        let Some(current) = self.current.take() else {
            self.earlier.insert(index, target);
            return Err(DoorError::Unavailable(
                "expected a version running, found none".into(),
            ));
        };
        let carried = match self.carry_back(&current, &target) {
            Ok(account) => account,
            Err(why) => {
                let to = target.version();
                self.earlier.insert(index, target);
                self.current = Some(current);
                return Err(DoorError::Refused(format!(
                    "expected the state to carry over to v{to}'s layout, found that it cannot: {why}"
                )));
            }
        };
        let to = target.version();
        self.snapshot
            .set_owner(target.state_version(), target.layout().cloned());
        self.owner = Some(Owner::of(&target));
        self.current = Some(target);
        self.earlier.push_front(current);
        self.trim_earlier();
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
        });
        (self.output)(TickOutput::RolledBack { running: to });
        Ok(done)
    }
}
