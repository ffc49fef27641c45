//! Going back to an earlier version on command (`rollback [vN]`): any
//! version still loaded for rollbacks, with the state carried across the
//! layout change exactly as a fault's rollback carries it; refused, saying
//! why, when it cannot be.
//!
//! A large tracked state (in a worker's shared memory too) is carried to
//! the other layout off this thread: the rollback waits, ticking on, while
//! the reload thread fills the new block ahead from the snapshot
//! ([`CarryBackAsk`]), then brings in what was written meanwhile, as a
//! swap's migration does.

use std::sync::Arc;
use std::time::Instant;

use crate::event::Event;
use crate::layout::Layout;
use crate::plugin::Plugin;
use crate::state::block::TRACK_ABOVE;
use crate::state::migrate::{Plan, plan, rollback_refusal};
use crate::state::release::Discarded;
use crate::tick::schedule::Schedule;

use super::{DoorError, Migration, Owner, TickLoop, TickOutput};

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

/// A rollback's carrying of a large state to the target's layout, asked of
/// the reload thread: filled there ahead from the snapshot, as a swap's
/// new block is, so that this thread only brings in what the running
/// version wrote meanwhile (the plan's full apply here was the size of the
/// state: 85–95 ms of a tick at 64 MiB).
pub struct CarryBackAsk {
    pub to: u64,
    pub plan: Box<Plan>,
    /// The state as it is now: its size, state version and layout.
    pub old_size: usize,
    pub old_state_version: u32,
    pub old_layout: Arc<Layout>,
    pub new_size: usize,
    /// The new block is shared memory (an isolated run's, for the target's
    /// worker to map).
    pub shared: bool,
}

/// A rollback waiting for its state to be carried.
pub(super) struct Waiting {
    to: u64,
    /// The version running, and the block, that the carrying starts from.
    from: u64,
    block: u64,
    reply: super::door::Claimed<RolledBack>,
}

/// Whether a rollback is done, or waits for its state to be carried.
enum Begun {
    Done(Result<RolledBack, DoorError>),
    Carrying(CarryBackAsk),
}

impl TickLoop {
    pub(super) fn roll_back(&mut self, to: u64, reply: RollbackReply) {
        let Some(reply) = reply.claim() else {
            return;
        };
        if let Some(waiting) = &self.rolling_back {
            return reply.send(Err(DoorError::Unavailable(format!(
                "expected no rollback in progress, found the one to v{} carrying the state \
                 to its layout; ask again in a moment",
                waiting.to
            ))));
        }
        match self.begin_roll_back(to) {
            Begun::Done(done) => reply.send(done),
            Begun::Carrying(ask) => {
                let (Some(owner), Some(state)) = (&self.owner, &self.state) else {
                    return reply.send(Err(DoorError::Unavailable(
                        "expected a state to roll back with, found none".into(),
                    )));
                };
                self.rolling_back = Some(Waiting {
                    to,
                    from: owner.version,
                    block: state.id(),
                    reply,
                });
                (self.output)(TickOutput::CarryBack(ask));
            }
        }
    }

    /// A rollback asked for: done now, or, when it carries a large tracked
    /// state to another layout, asked of the reload thread first.
    fn begin_roll_back(&mut self, to: u64) -> Begun {
        let ask = match (&self.owner, &self.state) {
            (Some(owner), Some(state)) if owner.version != to => self
                .earlier
                .iter()
                .find(|p| p.version() == to)
                .and_then(|target| self.carry_back_ask(owner, state, target)),
            _ => None,
        };
        match ask {
            Some(Ok(ask)) => Begun::Carrying(ask),
            Some(Err(why)) => Begun::Done(Err(DoorError::Refused(carry_refusal(to, &why)))),
            None => Begun::Done(self.roll_back_to(to, false, true)),
        }
    }

    /// What to ask the reload thread for when rolling back to `target`
    /// needs a large state carried to its layout (`None`: done here, as a
    /// small state's or an untracked one's is).
    fn carry_back_ask(
        &self,
        owner: &Owner,
        state: &crate::state::State,
        target: &Plugin,
    ) -> Option<Result<CarryBackAsk, String>> {
        let (Some(from_layout), Some(to_layout)) = (owner.layout.as_ref(), target.layout()) else {
            return None;
        };
        let large = state.size() > TRACK_ABOVE && state.written_pages().is_some();
        if !large || (state.size() == target.state_size() && from_layout.same_shape(to_layout)) {
            return None;
        }
        Some(
            plan(from_layout, to_layout, &self.settings.reset_fields)
                .map_err(|e| rollback_refusal(&e.reason(), &e.field))
                .map(|plan| CarryBackAsk {
                    to: target.version(),
                    plan: Box::new(plan),
                    old_size: state.size(),
                    old_state_version: owner.state_version,
                    old_layout: Arc::clone(from_layout),
                    new_size: target.state_size(),
                    shared: state.is_shared(),
                }),
        )
    }

    /// The reload thread's answer to a [`CarryBackAsk`]: the rollback
    /// waiting for it goes ahead, or is refused, saying why.
    pub(super) fn carried_back(&mut self, to: u64, carried: Result<Migration, String>) {
        let Some(waiting) = self.rolling_back.take_if(|w| w.to == to) else {
            if let Ok(migration) = carried {
                let mut discarded = Discarded::default();
                discarded.state(migration.new_state);
                (self.output)(TickOutput::Discard(discarded));
            }
            return;
        };
        let done = self.finish_carried_roll_back(&waiting, carried);
        waiting.reply.send(done);
    }

    fn finish_carried_roll_back(
        &mut self,
        waiting: &Waiting,
        carried: Result<Migration, String>,
    ) -> Result<RolledBack, DoorError> {
        let to = waiting.to;
        let migration = carried.map_err(|why| DoorError::Refused(carry_refusal(to, &why)))?;
        let mut discarded = Discarded::default();
        let result = self.put_carried_state(waiting, migration, &mut discarded);
        (self.output)(TickOutput::Discard(discarded));
        let carried = result?;
        let (_, target) = self.take_earlier(to)?;
        Ok(self.complete_roll_back(waiting.from, target, Some(carried), false, true))
    }

    /// Brings the block filled ahead up to the state as it is and makes it
    /// the state; what the carrying changed (`-lives`). What it lets go of
    /// goes into `discarded`. Refused, changing nothing, if the state or
    /// the version running changed since it was asked for (a swap or a
    /// fault came first) or a value does not fit.
    fn put_carried_state(
        &mut self,
        waiting: &Waiting,
        migration: Migration,
        discarded: &mut Discarded,
    ) -> Result<String, DoorError> {
        let to = waiting.to;
        let Migration {
            plan,
            mut new_state,
            ahead,
            ..
        } = migration;
        let (Some(owner), Some(state), Some(plan)) = (&self.owner, &self.state, plan) else {
            discarded.state(new_state);
            return Err(DoorError::Refused(format!(
                "expected a state to carry to v{to}'s layout, found none"
            )));
        };
        let target = self.earlier.iter().find(|p| p.version() == to);
        let Some(target) =
            target.filter(|_| owner.version == waiting.from && state.id() == waiting.block)
        else {
            discarded.state(new_state);
            return Err(DoorError::Unavailable(format!(
                "expected v{} running on the state the rollback to v{to} started from, found \
                 v{} (a swap or a fault came first); nothing changed: ask again",
                waiting.from, owner.version
            )));
        };
        let refusal = |unfit: crate::state::migrate::Unfit| {
            DoorError::Refused(carry_refusal(
                to,
                &rollback_refusal(&unfit.reason(), &unfit.field),
            ))
        };
        let finished =
            ahead.and_then(|a| a.finish(&self.snapshot, state, Some(&plan), &mut new_state));
        let (applied, snapshot_bytes) = match finished {
            Some(Ok(done)) => {
                discarded.buffer(done.old);
                (done.applied, Some(done.snapshot))
            }
            Some(Err(unfit)) => {
                discarded.state(new_state);
                return Err(refusal(unfit));
            }
            None => {
                // Not filled ahead after all: the plan in full, here.
                if let Some(pages) = new_state.written_pages() {
                    let _ = pages.open_all();
                }
                match plan.apply(state.bytes(), new_state.bytes_mut()) {
                    Ok(applied) => (applied, None),
                    Err(unfit) => {
                        discarded.state(new_state);
                        return Err(refusal(unfit));
                    }
                }
            }
        };
        let (state_version, layout) = (target.state_version(), target.layout().cloned());
        let leftover = match snapshot_bytes {
            Some(bytes) => self
                .snapshot
                .reset_primed(state_version, layout, bytes, new_state.id()),
            None => self.snapshot.reset(new_state.size(), state_version, layout),
        };
        discarded.snapshot(leftover);
        self.owner = Some(Owner::of(target));
        if let Some(old) = self.state.replace(new_state) {
            discarded.state(old);
        }
        let account = plan.summary_after(&applied);
        Ok(if account.is_empty() {
            format!("{} → {} bytes", plan.old_size, plan.new_size)
        } else {
            account
        })
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
        let (index, target) = self.take_earlier(to)?;
        let carried = match self.carry_back(&owner, &target) {
            Ok(account) => account,
            Err(why) => {
                self.earlier.insert(index, target);
                return Err(DoorError::Refused(carry_refusal(to, &why)));
            }
        };
        Ok(self.complete_roll_back(from, target, carried, reloaded, on_request))
    }

    /// Makes `target` the running version, its state already in its
    /// layout (`carried`: what carrying it there changed).
    fn complete_roll_back(
        &mut self,
        from: u64,
        target: Plugin,
        carried: Option<String>,
        reloaded: bool,
        on_request: bool,
    ) -> RolledBack {
        let to = target.version();
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
        done
    }
}

impl TickLoop {
    /// Takes `to` out of the versions kept loaded, with where it was.
    fn take_earlier(&mut self, to: u64) -> Result<(usize, Plugin), DoorError> {
        let Some(index) = self.earlier.iter().position(|p| p.version() == to) else {
            return Err(DoorError::Refused(format!(
                "expected v{to} loaded for the rollback, found it gone (unloaded meanwhile)"
            )));
        };
        match self.earlier.remove(index) {
            Some(target) => Ok((index, target)),
            None => Err(DoorError::Refused(
                "expected a kept version, found it gone".into(),
            )),
        }
    }
}

/// Why the state cannot be carried to `to`'s layout, with what to do.
fn carry_refusal(to: u64, why: &str) -> String {
    let hint = if why.contains("--reset-field") {
        " (a server flag); or set the field to a value that fits (hotreload ctl set) and roll back again"
    } else {
        ""
    };
    format!("expected the state to carry over to v{to}'s layout, found that it cannot: {why}{hint}")
}
