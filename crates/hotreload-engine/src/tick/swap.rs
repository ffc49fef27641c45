//! Installing a new version at a tick boundary: the state it starts from
//! (fresh, restored, kept or migrated), the hooks of the versions going out
//! and coming in, and carrying the state back when a rollback crosses a
//! layout change.

use std::time::Instant;

use super::recover::signal_or_timeout;
use crate::event::{Event, Recovery, StateMoment, Swap};
use crate::guard::watchdog::CallWatch;
use crate::layout::Layout;
use crate::plugin::{Hook, Plugin};
use crate::state::State;
use crate::state::release::Discarded;
use crate::tick::schedule::Schedule;

use super::{Fresh, Migration, Owner, Refusal, TickLoop, TickOutput};

/// Bytes of the state scanned for dangling pointers at a time, at most;
/// fewer on a build or a machine where that many take longer than
/// [`SCAN_BUDGET`] (a debug build scans 64 KiB in over a millisecond).
pub(super) const SCAN_PER_TICK: usize = 64 << 10;
const SCAN_AT_LEAST: usize = 512;
/// Time the scan may take after one tick: a few percent of a 1 ms tick,
/// whatever the state's size (and whatever the build's optimisation).
pub(super) const SCAN_BUDGET: std::time::Duration = std::time::Duration::from_micros(50);

/// The new block of a swap that changes the layout.
pub(super) struct Migrated {
    pub(super) state: State,
    /// `+lives -bonus`, for the log.
    pub(super) summary: String,
    /// The block's bytes before the swap wrote the last of them, when it
    /// was filled ahead: for its snapshot (see `migrate::ahead`).
    pub(super) snapshot: Option<Vec<u8>>,
    /// Filled ahead: the old state's pages the swap itself carried.
    pub(super) pages_at_swap: Option<usize>,
}

/// The scan, in slices, of the state for pointers into a version swapped
/// out (its mappings), from `next` on.
pub(super) struct DanglingScan {
    pub(super) version: u64,
    pub(super) ranges: Vec<(usize, usize)>,
    pub(super) next: usize,
    /// Bytes scanned at a time, adapted to fit the budget.
    pub(super) chunk: usize,
}

impl TickLoop {
    pub(super) fn install(
        &mut self,
        plugin: Plugin,
        fresh_state: Option<Fresh>,
        migration: Option<Migration>,
        build_exited_at: Option<Instant>,
        calls: &CallWatch,
    ) {
        let mut restored = None;
        if self.state.is_none() {
            let Some(fresh) = fresh_state else {
                // The reload stage sends a state with the first version;
                // without one there is nothing to run the plugin on.
                (self.output)(TickOutput::Retired(plugin));
                return;
            };
            let mut state = fresh.state;
            if let Some((old, old_version)) = &fresh.convert_from {
                // A saved state of another version: the new code's hook
                // finishes carrying it over.
                if let Err(why) =
                    Self::run_migrate_hook(&plugin, old, *old_version, &mut state, calls)
                {
                    self.refuse(plugin, why);
                    return;
                }
            }
            self.snapshot.reset(
                state.size(),
                plugin.state_version(),
                plugin.layout().cloned(),
            );
            self.owner = Some(Owner::of(&plugin));
            self.state = Some(state);
            if fresh.restored.is_some() {
                // A restored state was initialised in an earlier run.
                self.initialized = true;
                self.snapshot.mark_live();
                restored = fresh.restored;
            }
        }
        // The new block, if the layout changes, is made without touching the
        // current state: a refusal leaves everything as it was, and nobody
        // was told anything.
        let migrated = match migration {
            None => None,
            Some(m) => match self.migrated_state(&plugin, m, calls) {
                Ok(done) => Some(done),
                Err(why) => {
                    self.refuse(plugin, why);
                    return;
                }
            },
        };
        // Now the swap is certain: the version going out gets its say, on
        // the state as it knows it.
        let going = self.current.as_ref().map(Plugin::version);
        if let Some(old_version) = going
            && let Err(fault) = self.call_hook(Hook::OnUnload, calls)
        {
            let report =
                self.fault_report(old_version, "on_unload", &fault, Recovery::SwapWentAhead);
            (self.events)(Event::Fault(report));
        }
        self.say_repairs("on_unload");
        self.reassert_handlers("by the time of the swap");
        let pages_at_swap = migrated.as_ref().and_then(|m| m.pages_at_swap);
        let summary = migrated.map(|migrated| {
            let (version, layout) = (plugin.state_version(), plugin.layout().cloned());
            let state = migrated.state;
            let leftover = match migrated.snapshot {
                // Filled ahead: the snapshot starts from the block's bytes
                // as they were, and its first take compares only the pages
                // written since.
                Some(bytes) => self
                    .snapshot
                    .reset_primed(version, layout, bytes, state.id()),
                None => self.snapshot.reset(state.size(), version, layout),
            };
            let old = self.state.replace(state);
            let mut discarded = Discarded::default();
            discarded.snapshot(leftover);
            if let Some(old) = old {
                discarded.state(old);
            }
            (self.output)(TickOutput::Discard(discarded));
            migrated.summary
        });
        if let (Some(layout), Some(state)) = (plugin.layout(), &mut self.state) {
            reset_transient(layout, state);
        }
        let swap = Swap {
            version: plugin.version(),
            lib_name: plugin.lib_name().to_owned(),
            api_version: plugin.api_version(),
            since_build_exit: build_exited_at.map(|t| t.elapsed()).unwrap_or_default(),
            first_load: !self.initialized || restored.is_some(),
            migrated: summary.clone(),
            migration_pages_at_swap: pages_at_swap,
            worker_pid: plugin.worker_pid(),
        };
        self.snapshot
            .set_owner(plugin.state_version(), plugin.layout().cloned());
        self.owner = Some(Owner::of(&plugin));
        // Taken now: with --keep-versions 1 the version going out is
        // unloaded at once, and pointers into it dangle all the more.
        let going_out = self
            .current
            .as_ref()
            .map(|p| (p.version(), p.ranges().to_vec()));
        if let Some(old) = self.current.replace(plugin) {
            self.earlier.push_front(old);
            self.trim_earlier();
        }
        self.board
            .set_version(self.current.as_ref().map(Plugin::version));
        self.publish_loaded();
        (self.events)(Event::Swapped(swap));
        if let Some(note) = restored {
            self.report_with(StateMoment::Restored, Some(note));
        } else if !self.initialized {
            if !self.run_init(calls) {
                return;
            }
            self.report(StateMoment::Initial);
        } else {
            // A fault in on_reload goes back to the state as it was handed
            // over (migrated, if it was), not to the one before the last
            // tick, which the running version had already moved on from.
            if self
                .current
                .as_ref()
                .is_some_and(|p| p.has_hook(Hook::OnReload))
                && let Some(state) = &self.state
            {
                self.snapshot.take(state, self.ticks);
            }
            if let Err(fault) = self.call_hook(Hook::OnReload, calls) {
                self.recover("on_reload", fault, true);
                return;
            }
            self.say_repairs("on_reload");
            // After on_reload, so the line shows what the new code starts from.
            self.report(if summary.is_some() {
                StateMoment::Migrated
            } else {
                StateMoment::Preserved
            });
            // After on_reload, which may have re-pointed what it had to.
            if let Some((version, ranges)) = going_out {
                self.dangling = Some(DanglingScan {
                    version,
                    ranges,
                    next: 0,
                    chunk: SCAN_PER_TICK,
                });
                self.scan_for_dangling();
            }
        }
        if self.schedule.is_none() {
            self.schedule = Some(Schedule::new(self.settings.period, Instant::now()));
        }
        self.first_tick_due = self
            .current
            .as_ref()
            .map(|p| (p.version(), build_exited_at));
    }

    /// The new block for a swap that changes the layout: filled from the
    /// current state by the plan (ahead of the swap for a large state, when
    /// only the pages written since are left), then by the new version's
    /// `migrate` hook.
    pub(super) fn migrated_state(
        &mut self,
        plugin: &Plugin,
        m: Migration,
        calls: &CallWatch,
    ) -> Result<Migrated, Refusal> {
        let mut new = m.new_state;
        let live_state = self.state.as_ref();
        let live: &[u8] = live_state.map_or(&[], State::bytes);
        let mut summary = m.summary;
        let filled_ahead = m.ahead.is_some();
        let finished = match (m.ahead, live_state) {
            (Some(ahead), Some(state)) => {
                ahead.finish(&self.snapshot, state, m.plan.as_deref(), &mut new)
            }
            _ => None,
        };
        // Checked against the values of this very moment: the running
        // version keeps its state untouched if one does not fit.
        let unfit = |unfit: crate::state::migrate::Unfit| Refusal::Declined(unfit.to_string());
        let (copy, snapshot, pages_at_swap) = match finished {
            Some(done) => {
                let done = done.map_err(unfit)?;
                if let Some(plan) = &m.plan {
                    summary = crate::state::migrate::with_resets(summary, plan, &done.applied);
                }
                (Some(done.old), Some(done.snapshot), Some(done.pages_redone))
            }
            None => {
                if let Some(plan) = &m.plan {
                    if filled_ahead && let Some(pages) = new.written_pages() {
                        // Made read-only ahead: opened in one call, not a
                        // trap per page.
                        let _ = pages.open_all();
                    }
                    // The plan only reads the live state: no copy of it.
                    let applied = plan.apply(live, new.bytes_mut()).map_err(unfit)?;
                    summary = crate::state::migrate::with_resets(summary, plan, &applied);
                }
                (None, None, None)
            }
        };
        let hooked = if plugin.is_isolated() {
            // The worker gets its own copy, in a block made for the call.
            Self::run_migrate_hook(plugin, live, m.old_version, &mut new, calls)
        } else if plugin.has_migrate() {
            // The hook gets a copy: plugin code that writes through its
            // `const` pointer must not change the state the running version
            // keeps if the hook then refuses or faults.
            match &copy {
                Some(copy) => Self::run_migrate_hook(plugin, copy, m.old_version, &mut new, calls),
                None => {
                    let old = live.to_vec();
                    Self::run_migrate_hook(plugin, &old, m.old_version, &mut new, calls)
                }
            }
        } else {
            Ok(())
        };
        if let Some(copy) = copy {
            let mut discarded = Discarded::default();
            discarded.buffer(copy);
            (self.output)(TickOutput::Discard(discarded));
        }
        hooked?;
        Ok(Migrated {
            state: new,
            summary,
            snapshot,
            pages_at_swap,
        })
    }

    /// Runs the new version's `migrate` hook, if it has one, from `old`
    /// into `new`.
    pub(super) fn run_migrate_hook(
        plugin: &Plugin,
        old: &[u8],
        old_version: u32,
        new: &mut State,
        calls: &CallWatch,
    ) -> Result<(), Refusal> {
        if !plugin.has_migrate() {
            return Ok(());
        }
        calls.begin(Instant::now());
        // SAFETY: `old` and `new` are valid for their sizes (`new` of this
        // plugin's state size); this thread is the only caller and ran
        // `prepare_thread`.
        let result = unsafe { plugin.migrate(old, old_version, new) };
        calls.end();
        match result {
            Ok(None | Some(0)) => Ok(()),
            Ok(Some(code)) => Err(Refusal::Declined(format!(
                "the migrate hook of v{} refused the state (returned {code})",
                plugin.version()
            ))),
            Err(fault) => Err(Refusal::Faulted(fault)),
        }
    }

    /// A new version that will not take the state: said, and handed back.
    /// The running version and its state stay as they were.
    pub(super) fn refuse(&mut self, plugin: Plugin, why: Refusal) {
        let running = self.current.as_ref().map(Plugin::version);
        if running.is_none() && !self.initialized {
            // A first version: no state is in use yet.
            self.state = None;
            self.snapshot.clear();
        }
        match why {
            Refusal::Declined(reason) => (self.output)(TickOutput::Declined {
                plugin,
                running,
                reason,
            }),
            Refusal::Faulted(fault) => {
                let report = self.fault_report(
                    plugin.version(),
                    "migrate",
                    &fault,
                    Recovery::Refused { keeping: running },
                );
                let cause = format!("{} in migrate", signal_or_timeout(&fault));
                (self.events)(Event::Fault(report));
                (self.output)(TickOutput::Faulted {
                    plugin,
                    running,
                    cause,
                    blame_build: !fault.killed_from_outside(),
                });
            }
        }
    }

    /// Warns about values in the state that point into `old`'s library.
    /// Goes on with the scan for pointers into the version last swapped
    /// out: [`SCAN_PER_TICK`] bytes of the state at a time (after the swap,
    /// then after each tick), so that no tick waits for a large state's
    /// scan; each pointer found is said.
    pub(super) fn scan_for_dangling(&mut self) {
        let (Some(scan), Some(state)) = (&mut self.dangling, &self.state) else {
            return;
        };
        let bytes = state.bytes();
        let low = scan.ranges.iter().map(|r| r.0).min().unwrap_or(0);
        let high = scan.ranges.iter().map(|r| r.1).max().unwrap_or(0);
        let began = Instant::now();
        let start = scan.next.min(bytes.len());
        let mut found = Vec::new();
        let mut end = start;
        while end < bytes.len() && (end == start || began.elapsed() < SCAN_BUDGET) {
            let from = end;
            end = (from + scan.chunk).min(bytes.len());
            let chunk_began = Instant::now();
            found.extend(
                crate::plugin::diagnostics::pointers_within(&bytes[from..end], low, high, |a| {
                    scan.ranges.iter().any(|&(s, e)| s <= a && a < e)
                })
                .into_iter()
                .map(|o| o + from - start),
            );
            let took = chunk_began.elapsed();
            if took > SCAN_BUDGET {
                scan.chunk = (scan.chunk / 2).max(SCAN_AT_LEAST);
            } else if took < SCAN_BUDGET / 8 {
                scan.chunk = (scan.chunk * 2).min(SCAN_PER_TICK);
            }
        }
        let version = scan.version;
        scan.next = end;
        if end == bytes.len() {
            self.dangling = None;
        }
        let layout = self.current.as_ref().and_then(|p| p.layout());
        for offset in found.into_iter().map(|o| o + start) {
            let field = layout
                .and_then(|l| l.field_at(offset))
                .map(|f| f.name.clone());
            (self.events)(Event::Dangling {
                version,
                offset,
                field,
            });
        }
    }

    /// Hands back the oldest kept versions beyond `--keep-versions` (the
    /// running one counts) to be unloaded.
    pub(super) fn trim_earlier(&mut self) {
        while self.earlier.len() + 1 > self.settings.keep_versions.max(1) {
            if let Some(oldest) = self.earlier.pop_back() {
                (self.output)(TickOutput::Retired(oldest));
            }
        }
    }

    /// Before rolling back from `bad` to `to`: migrates the state (as it was
    /// before the bad call, in `bad`'s layout) back to `to`'s layout if they
    /// differ, returning what that changed (`-lives`). `Err` says why it
    /// cannot be done; the state is then as it was.
    pub(super) fn carry_back(
        &mut self,
        bad: &Owner,
        to: &Plugin,
    ) -> Result<Option<String>, String> {
        let Some(state) = &self.state else {
            return Err("there is no state".into());
        };
        let to_size = to.state_size();
        let (from_layout, to_layout) = (bad.layout.as_deref(), to.layout());
        let same = state.size() == to_size
            && match (from_layout, to_layout) {
                (Some(a), Some(b)) => a.same_shape(b),
                _ => bad.state_version == to.state_version(),
            };
        if same {
            return Ok(None);
        }
        let (Some(from_layout), Some(to_layout)) = (from_layout, to_layout) else {
            return Err(format!(
                "its state ({to_size} bytes) differs from v{}'s ({} bytes) and one of the layouts \
                 is not known",
                bad.version,
                state.size()
            ));
        };
        use crate::state::migrate::{plan, rollback_refusal};
        let plan = plan(from_layout, to_layout, &self.settings.reset_fields)
            .map_err(|e| rollback_refusal(&e.reason(), &e.field))?;
        let mut back = state.alike(to_size)?;
        let applied = plan
            .apply(state.bytes(), back.bytes_mut())
            .map_err(|unfit| rollback_refusal(&unfit.reason(), &unfit.field))?;
        let leftover = self
            .snapshot
            .reset(back.size(), to.state_version(), to.layout().cloned());
        self.owner = Some(Owner::of(to));
        // The old block and its snapshot (with its history) are freed off
        // this thread, as a swap's are: unmapped here, a large state's
        // pages would hold this tick up, and every `mprotect` after it.
        let old = self.state.replace(back);
        let mut discarded = Discarded::default();
        discarded.snapshot(leftover);
        if let Some(old) = old {
            discarded.state(old);
        }
        (self.output)(TickOutput::Discard(discarded));
        let account = plan.summary_after(&applied);
        Ok(Some(if account.is_empty() {
            format!("{} → {} bytes", plan.old_size, plan.new_size)
        } else {
            account
        }))
    }
}

/// Zeroes the fields the plugin marked transient: they are rebuilt by the
/// new code on every reload.
pub(super) fn reset_transient(layout: &Layout, state: &mut State) {
    let bytes = state.bytes_mut();
    for field in layout.fields.iter().filter(|f| f.transient) {
        if let Some(span) = bytes.get_mut(field.offset..field.offset + field.size()) {
            span.fill(0);
        }
    }
}
