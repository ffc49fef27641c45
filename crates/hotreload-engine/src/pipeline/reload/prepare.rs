//! Preparing one build: copy it, refuse it early when its bytes say it
//! cannot work, try it in a probe, load and check it in the host, and decide
//! what its swap does to the state. Everything here runs on the reload
//! thread; the tick loop only ever receives a finished [`Prepared`].

use std::sync::Arc;

use crate::event::Event;
use crate::layout::Layout;
use crate::outcome::Rejection;
use crate::plugin::check;
use crate::plugin::isolate::Worker;
use crate::plugin::load::Library;
use crate::plugin::precheck::precheck;
use crate::plugin::shadow::ShadowFile;
use crate::plugin::{Knowledge, Plugin};
use crate::state::State;
use crate::state::migrate::{self, Decision, Side};
use crate::state::persist::{Saved, SavedRef};
use crate::tick::{Fresh, Migration, TickInput};

use super::Reloader;
use crate::pipeline::trial::{self, TrialSettings};

impl Reloader {
    /// Copy, precheck, trial, load and check the build output, and decide
    /// what the swap does to the state; for the
    /// first version, also allocate the state (here, so that a size that
    /// cannot be allocated is a rejection like any other, and the tick thread
    /// never waits for a large zeroed allocation). A rejection comes with
    /// what a failed trial printed. `tried`: the copy and trial were made
    /// already, while the build's batch waited to be confirmed.
    pub(super) fn prepare(
        &mut self,
        bytes: &[u8],
        build_hash: u64,
        tried: Option<super::ahead::Tried>,
    ) -> Result<Prepared, (Rejection, String)> {
        let shadow = match tried {
            Some(tried) => self.adopt_tried(tried, build_hash, bytes)?,
            None => self.copy_and_try(bytes, build_hash)?,
        };
        let prepared = self
            .load_checked(shadow, build_hash, bytes)
            .map_err(|r| (r, String::new()))?;
        Ok(prepared)
    }

    /// The shadow copy of a build, tried: what [`Reloader::prepare`] does
    /// before loading it into the host.
    pub(super) fn copy_and_try(
        &mut self,
        bytes: &[u8],
        build_hash: u64,
    ) -> Result<ShadowFile, (Rejection, String)> {
        let shadow = self
            .copy_checked(bytes, build_hash)
            .map_err(|r| (r, String::new()))?;
        self.trial(shadow.path(), bytes)?;
        Ok(shadow)
    }

    /// A build with the bytes of the one that faulted last is refused.
    pub(super) fn refuse_known_bad(&self, build_hash: u64) -> Result<(), Rejection> {
        match &self.known_bad {
            Some((bad, what)) if *bad == build_hash => Err(Rejection::Faulted(format!(
                "this build is the one that faulted as {what}; change the code to try again"
            ))),
            _ => Ok(()),
        }
    }

    /// The build's library, as the build left it.
    pub(super) fn read_library(&self) -> Result<Vec<u8>, String> {
        crate::paths::read_regular_file(&self.config.lib, super::LIBRARY_LIMIT)
            .map_err(|e| e.to_string())
    }

    /// Names the plugin's own writable statics when they first appear or
    /// change, not on every reload.
    pub(super) fn warn_statics(&mut self, bytes: &[u8], tables: &[u64], version: u64) {
        let statics = crate::plugin::diagnostics::writable_statics(bytes, tables);
        if !statics.is_empty() && statics != self.statics_said {
            self.emit(Event::StaticData {
                version,
                symbols: statics.clone(),
            });
        }
        self.statics_said = statics;
    }

    /// Runs the trial, if the host program can run probes: in a probe
    /// process, or in isolated mode in a throwaway worker. With
    /// `--trial-ticks 0` the build is only loaded there (constructors,
    /// `logic_get_api`) and none of its functions is called: the loader and
    /// the load-time code still meet these bytes in a throwaway process
    /// before the host's (or the live worker's).
    pub(super) fn trial(
        &mut self,
        library: &std::path::Path,
        bytes: &[u8],
    ) -> Result<(), (Rejection, String)> {
        if !self.config.probe {
            return Ok(());
        }
        if !crate::plugin::probe::hook_installed() && !self.config.isolate {
            if !self.said_trials_off {
                self.said_trials_off = true;
                self.emit(Event::TrialsOff(
                    "trial runs are off: the host program does not call hotreload_engine::run_probe_if_requested() at the start of main".into(),
                ));
            }
            return Ok(());
        }
        let load_only = self.config.trial_ticks == 0;
        let mut settings = TrialSettings {
            ticks: self.config.trial_ticks,
            dt: self.config.tick_period.as_secs_f64(),
            stall: self.config.effective_call_timeout(),
            seed: self.config.seed,
            tick: 0,
            state_type: self.config.state_type.clone(),
            load_only,
            reset_fields: self.config.reset_fields.clone(),
        };
        let refused = |why: String| {
            (
                Rejection::Faulted(format!("trial: cannot hand the state over: {why}")),
                String::new(),
            )
        };
        // The trial's state is the kept trial image, brought up to date from
        // the fault snapshot when there is one (only the pages changed
        // since the last trial are written, on this thread): a probe maps
        // it, and a worker maps it too, or reads it for a migration.
        let state = match self.sealed_snapshot(load_only) {
            Some(Ok((image, tick))) => {
                settings.tick = tick;
                Some(trial::StateSource::Image(image))
            }
            Some(Err(why)) => return Err(refused(why)),
            None => self
                // The snapshot was just asked and had no copy to give.
                .trial_state(load_only, &mut settings.tick)
                .map(trial::StateSource::Copy),
        };
        let tried = if self.config.isolate {
            trial::isolated::run(library, bytes, &self.lib_name, &settings, state)
        } else {
            let state = state
                .map(|state| match state {
                    trial::StateSource::Image(image) => Ok(image),
                    trial::StateSource::Copy(saved) => {
                        trial::TrialState::from_saved(&SavedRef::from(&saved))
                    }
                })
                .transpose()
                .map_err(refused)?;
            let tried = trial::run(library, &settings, state);
            if let Some(note) = crate::plugin::probe::forker::notice() {
                self.emit(Event::ServerNotice(note));
            }
            tried
        };
        tried.map_err(|f| (f.reason, f.output))
    }

    /// The fault snapshot's last copy of the running state, in the trial
    /// image a probe maps (only the pages changed since the last trial
    /// rewritten), with the tick it was taken at; `None` when
    /// there is no such copy to be had at once (then [`Reloader::trial_state`]
    /// gets one).
    fn sealed_snapshot(&self, load_only: bool) -> Option<Result<(trial::TrialState, u64), String>> {
        if load_only || self.state_side.is_none() {
            return None;
        }
        let last_good = self.last_good.as_ref()?;
        let mut image = self
            .trial_image
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let image = &mut *image;
        let mut held = image.held.take();
        if held.is_some() && image.written_by_another() {
            held = None;
            let trial = if self.config.isolate {
                "worker"
            } else {
                "probe"
            };
            self.emit(Event::ServerNotice(format!(
                "the state image handed to the last trial's {trial} was written by it (opened \
                 again writable through /proc); this trial's image is written whole"
            )));
        }
        let exported =
            last_good.export_into(std::time::Duration::from_millis(20), &mut held, image);
        image.held = held;
        image.mark_written();
        if let Some(why) = image.failure() {
            return Some(Err(why));
        }
        let meta = exported?;
        Some(image.hand_out().map(|(bytes, len)| {
            (
                trial::TrialState {
                    what: crate::plugin::probe::handover::HandedState {
                        state_version: meta.state_version,
                        layout: meta.layout.as_deref().cloned(),
                        len: len as u64,
                    },
                    bytes,
                },
                meta.tick,
            )
        }))
    }

    /// The current state, with its version and layout, for a trial: the
    /// trial carries it over to the new build's layout exactly as the host
    /// would. `tick` gets the ticks completed when it was copied.
    fn trial_state(&self, load_only: bool, tick: &mut u64) -> Option<Saved> {
        if load_only {
            return None;
        }
        match &self.state_side {
            Some(side) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let _ = self.tick.send(TickInput::CopyState(tx));
                let copy = rx.recv().ok().flatten();
                *tick = copy.as_ref().map_or(0, |(_, t)| *t);
                copy.map(|(state, _)| Saved {
                    state,
                    state_version: side.version,
                    layout: side.layout.as_deref().cloned(),
                })
            }
            // The first version of a run that restored a state file is
            // tried on that state, which is what it will tick on.
            None => self.restored.as_ref().map(|(saved, _)| saved.clone()),
        }
    }

    /// Reads the build output, refuses a known-bad or malformed one, and
    /// writes the shadow copy.
    pub(super) fn copy_checked(
        &mut self,
        bytes: &[u8],
        build_hash: u64,
    ) -> Result<ShadowFile, Rejection> {
        self.refuse_known_bad(build_hash)?;
        let image = precheck(bytes)?;
        self.spans = image.spans.clone();
        self.copies += 1;
        // The copy hides the library's constructors and destructors from
        // the loader: the host runs them itself, under the crash guard.
        self.shadow
            .store(self.copies, &self.lib_name, &image.neutralized(bytes))
            .map_err(Rejection::NotLoadable)
    }

    /// Loads the shadow copy (into the host, or into a worker of its own
    /// in isolated mode) and checks its table.
    pub(super) fn load_checked(
        &mut self,
        shadow: ShadowFile,
        build_hash: u64,
        bytes: &[u8],
    ) -> Result<Prepared, Rejection> {
        let version = self.version + 1;
        let (plugin, side) = self.load_version(shadow, build_hash, bytes, version)?;
        let has_hook = plugin.has_migrate();
        let shared = self.config.isolate;
        let alloc = |size: usize| {
            State::new_block(size, shared)
                .map_err(|why| Rejection::StateUnallocatable { size, why })
        };
        let (fresh_state, migration) = match &self.state_side {
            // The saved state stays here until some version runs on it: a
            // first version that cannot take it leaves it for the next.
            None => match &self.restored {
                None => (
                    Some(Fresh {
                        state: alloc(side.size)?,
                        restored: None,
                        convert_from: None,
                    }),
                    None,
                ),
                Some((saved, path)) => (
                    Some(restored_state(
                        saved,
                        path,
                        &side,
                        has_hook,
                        &self.config.reset_fields,
                        alloc,
                    )?),
                    None,
                ),
            },
            Some(old) => {
                let layouts_known = old.layout.is_some() && side.layout.is_some();
                if old.size != side.size && !layouts_known && !has_hook {
                    return Err(Rejection::StateSize {
                        expected: old.size,
                        found: side.size,
                    });
                }
                let reset = &self.config.reset_fields;
                match crate::state::migrate::decide(
                    old.as_side(false),
                    side.as_side(has_hook),
                    reset,
                ) {
                    Ok(Decision::Keep) => (None, None),
                    Ok(Decision::Migrate { plan, summary }) => {
                        // A block the last swap let go of (in an isolated
                        // run, a fresh one made ahead), if it fits: its
                        // pages are written without the kernel clearing
                        // each.
                        let spare = self.spares.take_block(side.size, shared);
                        let mut new_state = match spare {
                            Some(block) => block,
                            None => alloc(side.size)?,
                        };
                        let ahead = match &self.last_good {
                            Some(last_good) => migrate::ahead::prepare(
                                last_good.snapshot(),
                                migrate::ahead::OldSide {
                                    size: old.size,
                                    version: old.version,
                                    layout: old.layout.as_deref(),
                                },
                                plan.as_deref(),
                                &mut new_state,
                                &self.spares,
                            )
                            .map_err(|unfit| Rejection::StateChange(unfit.to_string()))?,
                            None => None,
                        };
                        if ahead.is_none()
                            && old.size > crate::state::block::TRACK_ABOVE
                            && new_state.written_pages().is_some()
                        {
                            // What the tick thread is about to pay for,
                            // in time that grows with the size.
                            self.emit(Event::ServerNotice(format!(
                                "v{version}: the migration of {} MiB of state could not be \
                                 worked out ahead (no copy of the running state came out of the \
                                 snapshot within {} ms); it is applied at the swap, and ticks \
                                 wait for it",
                                old.size >> 20,
                                migrate::ahead::patience_for(old.size).as_millis()
                            )));
                        }
                        (
                            None,
                            Some(Migration {
                                plan,
                                new_state,
                                old_version: old.version,
                                summary,
                                ahead,
                            }),
                        )
                    }
                    Err(why) => return Err(Rejection::StateChange(why)),
                }
            }
        };
        self.version = version;
        self.sides.insert(self.version, side);
        Ok(Prepared {
            plugin,
            fresh_state,
            migration,
        })
    }

    /// Loads the shadow copy as `version` (into the host, or into a worker
    /// of its own in isolated mode), checks its table, and finds what it
    /// knows of its state.
    pub(super) fn load_version(
        &mut self,
        shadow: ShadowFile,
        build_hash: u64,
        bytes: &[u8],
        version: u64,
    ) -> Result<(Plugin, StateSide), Rejection> {
        let spans = std::mem::take(&mut self.spans);
        let plugin = if self.config.isolate {
            let timeout = self.config.effective_call_timeout();
            let (worker, loaded) = Worker::spawn(shadow.path(), &self.lib_name, timeout, None)?;
            let worker = worker.wait_while_stopped(
                Arc::clone(&self.events),
                version,
                Arc::clone(&self.stop_requested),
            );
            if loaded.api_version != hotreload_abi::API_VERSION {
                return Err(Rejection::ApiVersion {
                    expected: hotreload_abi::API_VERSION,
                    found: loaded.api_version,
                });
            }
            Plugin::isolated(
                worker,
                loaded,
                Some(shadow),
                version,
                self.lib_name.clone(),
                build_hash,
            )
        } else {
            let opened = Library::open(shadow);
            // Its constructors may have changed what the server relies on.
            super::settle_process(&self.events, Some(version), "in a constructor");
            let library = opened?;
            let table = library.table()?;
            let api = check::check(&table, None)?;
            let ext = library.checked_ext(api.state_size)?;
            let knowledge = Knowledge {
                ext,
                layout: None,
                spans,
            };
            Plugin::with(
                api,
                library,
                version,
                self.lib_name.clone(),
                build_hash,
                knowledge,
            )
        };
        let layout = match plugin.schema() {
            Some(schema) => Some(schema),
            None => self.debug_layout(bytes, plugin.state_size()),
        };
        self.warn_unselected(layout.as_deref());
        let side = StateSide {
            size: plugin.state_size(),
            version: plugin.state_version(),
            layout: layout.clone(),
        };
        Ok((plugin.with_layout(layout), side))
    }

    /// Names the `--state-fields` patterns that select no field of `layout`
    /// (a typo shows nothing, silently, otherwise), when that changes.
    fn warn_unselected(&mut self, layout: Option<&Layout>) {
        let Some(layout) = layout else { return };
        if self.bringing_back {
            return;
        }
        let unselected: Vec<String> = self
            .config
            .state_fields
            .iter()
            .filter(|p| {
                !layout
                    .fields
                    .iter()
                    .any(|f| crate::pattern::selects_field(p, &f.name))
            })
            .map(|p| crate::pattern::shell_word(p))
            .collect();
        let said = if unselected.is_empty() {
            String::new()
        } else {
            format!(
                "--state-fields {} selects no field of the new build's layout, so state lines \
                 show nothing for it",
                unselected.join(", ")
            )
        };
        if !said.is_empty() && said != self.fields_said {
            self.emit(Event::LayoutNotice(said.clone()));
        }
        self.fields_said = said;
    }

    /// The state's layout from the library's debug info, saying which type
    /// was chosen (or why none could be) whenever that changes.
    pub(super) fn debug_layout(&mut self, bytes: &[u8], state_size: usize) -> Option<Arc<Layout>> {
        let found = crate::layout::dwarf::read_layout_noting(
            bytes,
            state_size,
            self.config.state_type.as_deref(),
        );
        // Said before the build is accepted or refused: it is the new
        // build's layout, never to be taken for the running version's.
        let (layout, said) = match found {
            Ok(Some((layout, skipped))) => {
                let said = match &layout.source {
                    crate::layout::Source::Dwarf {
                        type_name,
                        chosen_by,
                    } => format!(
                        "the new build's layout from debug info: {type_name} (chosen by \
                         {chosen_by}), {}",
                        crate::layout::plural(layout.fields.len(), "field")
                    ),
                    crate::layout::Source::Schema => {
                        "the new build's layout from the schema".to_owned()
                    }
                };
                (Some(Arc::new(layout)), said + &no_field(&skipped))
            }
            Ok(None) => (None, String::new()),
            Err(why) => (None, format!("the new build's layout is unknown: {why}")),
        };
        if self.bringing_back {
            return layout;
        }
        if !said.is_empty() && said != self.layout_said {
            self.emit(Event::LayoutNotice(said.clone()));
        }
        self.layout_said = said;
        layout
    }
}

/// `; no field for flags (a bitfield), ld (long double): …`, for the layout
/// notice, or nothing.
fn no_field(skipped: &[String]) -> String {
    const SHOWN: usize = 6;
    if skipped.is_empty() {
        return String::new();
    }
    let mut names: Vec<&str> = skipped.iter().take(SHOWN).map(String::as_str).collect();
    let more = format!("and {} more", skipped.len().saturating_sub(SHOWN));
    if skipped.len() > SHOWN {
        names.push(&more);
    }
    format!(
        "; no field for {}: their bytes are shown nowhere and not carried when the layout \
         changes",
        names.join(", ")
    )
}

/// The first version's state from a saved one: as is when the layouts
/// agree, migrated field by field when both are known and differ.
pub(super) fn restored_state(
    saved: &Saved,
    path: &std::path::Path,
    side: &StateSide,
    has_hook: bool,
    reset: &[String],
    alloc: impl Fn(usize) -> Result<State, Rejection>,
) -> Result<Fresh, Rejection> {
    let old = StateSide {
        size: saved.state.len(),
        version: saved.state_version,
        layout: saved.layout.clone().map(Arc::new),
    };
    let refuse = |why: String| {
        Rejection::StateChange(format!(
            "the state saved in {} does not fit this version: {why}; pass --fresh-state to start over",
            path.display()
        ))
    };
    let mut state = alloc(side.size)?;
    let decision = crate::state::migrate::decide(old.as_side(false), side.as_side(has_hook), reset)
        .map_err(refuse)?;
    let (summary, convert_from) = match decision {
        Decision::Keep => {
            state.bytes_mut().copy_from_slice(&saved.state);
            (format!("restored from {}", path.display()), None)
        }
        Decision::Migrate { plan, mut summary } => {
            if let Some(plan) = &plan {
                let applied = plan
                    .apply(&saved.state, state.bytes_mut())
                    .map_err(|unfit| refuse(unfit.to_string()))?;
                summary = crate::state::migrate::with_resets(summary, plan, &applied);
            }
            // The new version's hook, if any, finishes on the tick thread.
            let convert_from = has_hook.then(|| (saved.state.clone(), saved.state_version));
            (
                format!("restored from {} (migrated: {summary})", path.display()),
                convert_from,
            )
        }
    };
    Ok(Fresh {
        state,
        restored: Some(summary),
        convert_from,
    })
}

/// Identifies a build's bytes. Not cryptographic: it only has to tell
/// whether the compiler produced the same library again.
pub(super) fn hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// What is known of the state for one version.
#[derive(Clone, Debug)]
pub(super) struct StateSide {
    size: usize,
    version: u32,
    layout: Option<Arc<Layout>>,
}

impl StateSide {
    pub(super) fn as_side(&self, has_hook: bool) -> Side<'_> {
        Side {
            size: self.size,
            version: self.version,
            layout: self.layout.as_deref(),
            has_hook,
        }
    }
}

/// A version ready to go live, and what its swap does to the state.
pub(super) struct Prepared {
    pub(super) plugin: Plugin,
    pub(super) fresh_state: Option<Fresh>,
    pub(super) migration: Option<Migration>,
}
