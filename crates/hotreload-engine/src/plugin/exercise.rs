//! The calls a trial makes on a new version, in the order the host would
//! make them once it goes live: the state carried over from the running
//! version (or `init` for a first version), `on_reload`, a few ticks, the
//! description for state lines, and what it gets when it is replaced or the
//! host stops (`on_unload`, `shutdown`).
//!
//! One sequence for both kinds of trial: a probe process runs it on a
//! version it loaded itself ([`crate::plugin::probe`]), and in isolated mode
//! the host runs it on a throwaway worker's version, through the same calls
//! a live worker gets ([`crate::pipeline::trial`]). The state is the trial's
//! own copy, never the host's.

use crate::guard::Fault;
use crate::layout::Layout;
use crate::outcome::Rejection;
use crate::plugin::{Hook, Plugin, TickContext};
use crate::state::State;
use crate::state::migrate::{self, Decision, Side};
use crate::state::persist::SavedRef;

/// What a trial does.
pub struct Exercise<'a> {
    pub ticks: u64,
    pub dt: f64,
    /// The host context's `seed` and `tick`.
    pub seed: u64,
    pub tick: u64,
    /// `--reset-field`, for carrying the state over as the host will.
    pub reset_fields: &'a [String],
    /// The running version's state, with its version and layout; `None`
    /// for a first version, which gets `init` instead.
    pub state: Option<SavedRef<'a>>,
    /// The block passed to [`exercise`] already holds `state`'s bytes (a
    /// private mapping of them): kept as they are, nothing is copied; a
    /// migration zeroes it first, as the host's new block is.
    pub preloaded: bool,
    /// What the new version's state bytes mean, if known.
    pub layout: Option<&'a Layout>,
}

/// Why a trial stopped early.
pub enum Stopped {
    /// Plugin code faulted in `stage` (`init`, `tick 2`, `migrate`, ...).
    Fault { stage: String, fault: Fault },
    /// The host's own rules refuse the version (the state cannot be carried
    /// over, or the migrate hook declined it).
    Refused(Rejection),
}

/// Runs the trial on `plugin` with `state`, a block of its `state_size`.
/// `stage` hears each stage's name before it starts, so that a process that
/// dies in one is still placed.
pub fn exercise(
    plugin: &Plugin,
    state: &mut State,
    ex: &Exercise<'_>,
    stage: &mut dyn FnMut(&str),
) -> Result<(), Stopped> {
    let host = crate::plugin::ext::host_context(ex.seed, ex.tick);
    let at = |name: &str| {
        let name = name.to_owned();
        move |fault| Stopped::Fault { stage: name, fault }
    };
    match &ex.state {
        None => {
            stage("init");
            // SAFETY (for every call below): `state` has the plugin's
            // `state_size` (the caller's contract), this thread is the only
            // one calling into the plugin, and the caller prepared it.
            unsafe { plugin.init(state, &host) }.map_err(at("init"))?;
        }
        Some(saved) => {
            stage("migrate");
            carry_over(plugin, saved, state, ex)?;
            if plugin.has_hook(Hook::OnReload) {
                stage("on_reload");
                unsafe { plugin.hook(Hook::OnReload, state, &host) }.map_err(at("on_reload"))?;
            }
        }
    }
    for n in 1..=ex.ticks {
        let name = format!("tick {n}");
        stage(&name);
        // The trial's ticks get no input: what the host will pass is not
        // known yet, and a tick that faults on it live is rolled back.
        let context = TickContext {
            seed: ex.seed,
            tick: ex.tick + n - 1,
            input: &[],
        };
        unsafe { plugin.tick(state, ex.dt, &context) }.map_err(at(&name))?;
    }
    if plugin.has_describe() {
        stage("describe");
        unsafe { plugin.describe(state) }.map_err(at("describe"))?;
    }
    if plugin.has_hook(Hook::OnUnload) {
        stage("on_unload");
        unsafe { plugin.hook(Hook::OnUnload, state, &host) }.map_err(at("on_unload"))?;
    }
    stage("shutdown");
    unsafe { plugin.shutdown(state) }.map_err(at("shutdown"))?;
    Ok(())
}

/// How `saved` is carried over to `plugin`'s version (whose state bytes
/// mean `layout`): the host's own decision, which the trial follows.
pub fn carrying(
    plugin: &Plugin,
    saved: &SavedRef<'_>,
    layout: Option<&Layout>,
    reset_fields: &[String],
) -> Result<Decision, String> {
    let old = Side {
        size: saved.state.len(),
        version: saved.state_version,
        layout: saved.layout,
        has_hook: false,
    };
    let new = Side {
        size: plugin.state_size(),
        version: plugin.state_version(),
        layout,
        has_hook: plugin.has_migrate(),
    };
    migrate::decide(old, new, reset_fields)
}

/// Fills `state` from `saved` as the host will when it swaps this version
/// in: as is, or migrated by plan and hook.
fn carry_over(
    plugin: &Plugin,
    saved: &SavedRef<'_>,
    state: &mut State,
    ex: &Exercise<'_>,
) -> Result<(), Stopped> {
    let refuse = |r| Stopped::Refused(r);
    match carrying(plugin, saved, ex.layout, ex.reset_fields)
        .map_err(|why| refuse(Rejection::StateChange(why)))?
    {
        Decision::Keep => {
            if saved.state.len() != state.size() {
                return Err(refuse(Rejection::StateSize {
                    expected: saved.state.len(),
                    found: state.size(),
                }));
            }
            if !ex.preloaded {
                state.bytes_mut().copy_from_slice(saved.state);
            }
            Ok(())
        }
        Decision::Migrate { plan, .. } => {
            if ex.preloaded {
                state.bytes_mut().fill(0);
            }
            if let Some(plan) = plan {
                plan.apply(saved.state, state.bytes_mut())
                    .map_err(|unfit| refuse(Rejection::StateChange(unfit.to_string())))?;
            }
            // SAFETY: as in `exercise`; `state` is the new version's block.
            match unsafe { plugin.migrate(saved.state, saved.state_version, state) } {
                Ok(None | Some(0)) => Ok(()),
                Ok(Some(code)) => Err(refuse(Rejection::StateChange(format!(
                    "the migrate hook refused it (returned {code})"
                )))),
                Err(fault) => Err(Stopped::Fault {
                    stage: "migrate".into(),
                    fault,
                }),
            }
        }
    }
}
