//! The trial in isolated mode: the same calls the probe makes
//! ([`crate::plugin::exercise`]), made by the host on a throwaway worker,
//! the way it calls a live one. A build is loaded in a worker of its own
//! twice (the trial's, then the live one): a worker that ran `shutdown` and
//! `on_unload` on a copy of the state is not one to go live with.
//!
//! The state comes as the kept trial image when there is one: carried as it
//! is, the worker maps the image privately and its calls copy only the
//! pages they write; migrated, the image is read as the old state. Either
//! way nothing copies the whole state for the trial.

use std::path::Path;
use std::sync::Arc;

use crate::layout::{Layout, dwarf};
use crate::outcome::Rejection;
use crate::plugin::Plugin;
use crate::plugin::exercise::{Exercise, Stopped, carrying, exercise};
use crate::plugin::isolate::Worker;
use crate::plugin::sealed::SealedMap;
use crate::state::State;
use crate::state::migrate::Decision;
use crate::state::persist::SavedRef;

use super::{StateSource, TrialFailure, TrialSettings, collect_output, printed, with_panic};

/// Runs the trial of the library at `library` (the host's private copy of
/// the build output `bytes`) in a worker, on a copy of `state` carried over
/// as the swap would (or after `init`, for a first version).
pub fn run(
    library: &Path,
    bytes: &[u8],
    lib_name: &str,
    settings: &TrialSettings,
    state: Option<StateSource>,
) -> Result<(), TrialFailure> {
    let failure = |reason: String| TrialFailure {
        reason: Rejection::Faulted(reason),
        output: String::new(),
    };
    let (out_read, out_write) =
        std::io::pipe().map_err(|e| failure(format!("trial: cannot create a pipe: {e}")))?;
    let (output, output_closed) = collect_output(out_read).map_err(failure)?;
    let spawned = Worker::spawn(library, lib_name, settings.stall, Some(out_write.into()));
    // Only the worker holds the pipe now: it closes when the worker ends.
    let fail = |reason: Rejection| TrialFailure {
        reason: match reason {
            Rejection::Faulted(what) => {
                Rejection::Faulted(with_panic(&what, &printed(&output, &output_closed)))
            }
            other => other,
        },
        output: printed(&output, &output_closed),
    };
    let (worker, loaded) = spawned
        .map_err(|r| match r {
            Rejection::Faulted(what) => Rejection::Faulted(format!("trial: {what}")),
            other => other,
        })
        .map_err(fail)?;
    let plugin = Plugin::isolated(worker, loaded, None, 0, lib_name.to_owned(), 0);
    if !settings.load_only {
        let layout = layout_of(&plugin, bytes, settings);
        exercise_in_worker(&plugin, settings, state.as_ref(), layout.as_deref()).map_err(fail)?;
    }
    if let Some(fault) = plugin.close().destructor_fault {
        return Err(fail(Rejection::Faulted(format!(
            "trial: a library destructor faulted: {fault}"
        ))));
    }
    Ok(())
}

fn exercise_in_worker(
    plugin: &Plugin,
    settings: &TrialSettings,
    state: Option<&StateSource>,
    layout: Option<&Layout>,
) -> Result<(), Rejection> {
    let size = plugin.state_size();
    let unallocatable = |why| Rejection::StateUnallocatable { size, why };
    let refused =
        |why: String| Rejection::Faulted(format!("trial: cannot read the state image: {why}"));
    // The image, mapped read-only here: the old state a migration reads.
    let image = match state {
        Some(StateSource::Image(image)) => {
            Some(SealedMap::open(&image.bytes, image.what.len).map_err(refused)?)
        }
        _ => None,
    };
    let saved = match (state, &image) {
        (Some(StateSource::Image(image)), Some(map)) => Some(SavedRef {
            state: map.bytes(),
            state_version: image.what.state_version,
            layout: image.what.layout.as_ref(),
        }),
        (Some(StateSource::Copy(saved)), _) => Some(SavedRef::from(saved)),
        _ => None,
    };
    // Carried as it is: the worker's block is its own private mapping of
    // the image, and no byte is copied up front. Otherwise a shared block
    // that the migration below fills (the worker sees what the host
    // writes into it).
    let preloaded = match (&image, &saved) {
        (Some(_), Some(saved)) => carried_as_is(plugin, saved, layout, settings),
        _ => false,
    };
    let mut block = match (state, preloaded) {
        (Some(StateSource::Image(image)), true) => image
            .bytes
            .try_clone()
            .map_err(|e| e.to_string())
            .and_then(|file| State::copy_of(file.into(), size)),
        _ => State::shared(size),
    }
    .map_err(unallocatable)?;
    let ex = Exercise {
        ticks: settings.ticks,
        dt: settings.dt,
        seed: settings.seed,
        tick: settings.tick,
        reset_fields: &settings.reset_fields,
        state: saved,
        preloaded,
        layout,
    };
    let exercised = exercise(plugin, &mut block, &ex, &mut |_| {});
    // Unmapped a piece at a time on a thread of its own: in one `munmap`
    // here a large block held the address space's lock, which the tick
    // thread's page faults and `mprotect`s need, while its pages were
    // freed.
    let mut discarded = crate::state::release::Discarded::default();
    discarded.state(block);
    discarded.free_soon();
    match exercised {
        Ok(()) => Ok(()),
        Err(Stopped::Fault { stage, fault }) => Err(Rejection::Faulted(format!(
            "trial {stage}: {}",
            fault.report()
        ))),
        Err(Stopped::Refused(why)) => Err(why),
    }
}

/// Whether the exercise keeps `saved` as it is for `plugin` (the same
/// decision it makes itself), at the same size.
fn carried_as_is(
    plugin: &Plugin,
    saved: &SavedRef<'_>,
    layout: Option<&Layout>,
    settings: &TrialSettings,
) -> bool {
    saved.state.len() == plugin.state_size()
        && matches!(
            carrying(plugin, saved, layout, &settings.reset_fields),
            Ok(Decision::Keep)
        )
}

/// The new build's layout as the trial needs it: the plugin's schema, or
/// the library's debug info, read quietly (the host says what it found
/// when it loads the build).
fn layout_of(plugin: &Plugin, bytes: &[u8], settings: &TrialSettings) -> Option<Arc<Layout>> {
    plugin.schema().or_else(|| {
        dwarf::read_layout(bytes, plugin.state_size(), settings.state_type.as_deref())
            .ok()
            .flatten()
            .map(Arc::new)
    })
}
