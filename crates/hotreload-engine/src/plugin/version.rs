//! A version of the plugin that passed every check: the only way plugin code
//! is called once it is live.
//!
//! A version's code runs in one of two places. In the host (the default),
//! every call goes through the crash guard ([`crate::guard`]), which turns a
//! crash or hang in plugin code into a [`Fault`]; the calls are `#[inline]`
//! and go straight through the function pointers copied out of the table, so
//! a tick costs a direct call plus the guard. In isolated mode the library
//! is loaded only in a worker process ([`crate::plugin::isolate`]), and a
//! call is a round trip to it; a worker that dies is a fault like any other.
//! Callers see no difference but the cost (see `benches/dispatch.rs`).

use std::sync::Arc;

use hotreload_abi::HostContext;

use crate::guard::{self, Fault};
use crate::layout::Layout;
use crate::plugin::check::Api;
use crate::plugin::ext::Ext;
use crate::plugin::isolate::{Loaded, Worker, report};
use crate::plugin::load::{Closed, Library};
use crate::plugin::shadow::ShadowFile;
use crate::state::State;

pub struct Plugin {
    code: Code,
    /// Numbers count successful loads: v1 is the first, and none is reused.
    version: u64,
    /// The library's name as the user knows it (not the shadow copy's).
    lib_name: String,
    build_hash: u64,
    /// What the state's bytes mean to this version, if known.
    layout: Option<Arc<Layout>>,
    /// Where the library is mapped (in the worker, for an isolated
    /// version): a state value pointing in here dangles once this version is
    /// unloaded.
    ranges: Vec<(usize, usize)>,
}

/// Where a version's code is, and how it is called.
enum Code {
    /// Loaded in the host: the checked tables' function pointers.
    Local {
        api: Api,
        /// The extended table, if the plugin exports one.
        ext: Option<Ext>,
        library: Library,
    },
    /// Loaded in a worker process, which reported what it found.
    Isolated {
        worker: Worker,
        loaded: Loaded,
        /// The worker's library is the host's copy: removed once the worker
        /// is done with it (a trial's worker borrows the copy instead).
        _copy: Option<ShadowFile>,
    },
}

/// The hooks of the extended ABI that take the state and the host context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// After every swap to this version.
    OnReload,
    /// Before this version is swapped out.
    OnUnload,
}

/// What a tick is told besides the state and `dt`: the extended table's
/// `tick` gets it as the host context.
#[derive(Clone, Copy, Debug, Default)]
pub struct TickContext<'a> {
    pub seed: u64,
    /// The tick's index: ticks completed before it.
    pub tick: u64,
    /// What the host passed for this tick (empty: none), at most
    /// [`hotreload_abi::MAX_INPUT`] bytes.
    pub input: &'a [u8],
}

/// What is known about a version besides its function table.
pub struct Knowledge {
    pub ext: Option<Ext>,
    pub layout: Option<Arc<Layout>>,
    /// The library's segments as linked, from `precheck`.
    pub spans: Vec<(u64, u64)>,
}

impl Plugin {
    pub fn new(
        api: Api,
        library: Library,
        version: u64,
        lib_name: String,
        build_hash: u64,
    ) -> Plugin {
        Plugin::with(
            api,
            library,
            version,
            lib_name,
            build_hash,
            Knowledge {
                ext: None,
                layout: None,
                spans: Vec::new(),
            },
        )
    }

    pub fn with(
        api: Api,
        library: Library,
        version: u64,
        lib_name: String,
        build_hash: u64,
        knowledge: Knowledge,
    ) -> Plugin {
        let ranges = library.mapped_ranges(&knowledge.spans);
        Plugin {
            code: Code::Local {
                api,
                ext: knowledge.ext,
                library,
            },
            version,
            lib_name,
            build_hash,
            layout: knowledge.layout,
            ranges,
        }
    }

    /// A version loaded in `worker` from `copy`, as it reported (`loaded`).
    pub fn isolated(
        worker: Worker,
        loaded: Loaded,
        copy: Option<ShadowFile>,
        version: u64,
        lib_name: String,
        build_hash: u64,
    ) -> Plugin {
        Plugin {
            ranges: loaded.ranges.clone(),
            code: Code::Isolated {
                worker,
                loaded,
                _copy: copy,
            },
            version,
            lib_name,
            build_hash,
            layout: None,
        }
    }

    /// Tells an isolated version's worker that a call is coming soon (see
    /// [`Worker::warm`]); nothing for a version in the host.
    pub fn warm(&self) {
        if let Code::Isolated { worker, .. } = &self.code {
            worker.warm();
        }
    }

    /// The process id of an isolated version's worker.
    pub fn worker_pid(&self) -> Option<u32> {
        match &self.code {
            Code::Isolated { worker, .. } => Some(worker.process_id()),
            Code::Local { .. } => None,
        }
    }

    /// Whether this version runs in a worker process.
    /// For an isolated version: its worker's process id, and how it ended
    /// if it has.
    pub fn worker_ended(&self) -> Option<(u32, crate::guard::Fault)> {
        match &self.code {
            Code::Isolated { worker, .. } => worker.ended().map(|f| (worker.process_id(), f)),
            Code::Local { .. } => None,
        }
    }

    pub fn is_isolated(&self) -> bool {
        matches!(self.code, Code::Isolated { .. })
    }

    pub fn layout(&self) -> Option<&Arc<Layout>> {
        self.layout.as_ref()
    }

    /// This version with `layout` as what its state's bytes mean.
    pub fn with_layout(self, layout: Option<Arc<Layout>>) -> Plugin {
        Plugin { layout, ..self }
    }

    /// The layout the plugin's own schema declares, if it has one.
    pub fn schema(&self) -> Option<Arc<Layout>> {
        match &self.code {
            Code::Local { ext, .. } => ext.as_ref().and_then(|e| e.schema.clone()),
            Code::Isolated { loaded, .. } => loaded.schema.clone(),
        }
    }

    /// The state version the plugin declares (0 without the extended ABI).
    pub fn state_version(&self) -> u32 {
        match &self.code {
            Code::Local { ext, .. } => ext.as_ref().map_or(0, |e| e.state_version),
            Code::Isolated { loaded, .. } => loaded.state_version,
        }
    }

    /// From the lowest to the highest address of this version's library in
    /// the host, if known (none for an isolated version: its code, and any
    /// thread running it, end with its worker).
    pub fn span(&self) -> Option<(usize, usize)> {
        if self.is_isolated() {
            return None;
        }
        let start = self.ranges.iter().map(|r| r.0).min()?;
        let end = self.ranges.iter().map(|r| r.1).max()?;
        Some((start, end))
    }

    /// Whether `address` lies in this version's library.
    /// Where its library is mapped (in the host, or in its worker).
    pub fn ranges(&self) -> &[(usize, usize)] {
        &self.ranges
    }

    pub fn contains(&self, address: usize) -> bool {
        self.ranges
            .iter()
            .any(|&(start, end)| start <= address && address < end)
    }

    /// The checked seed table of a version loaded in the host, for
    /// measuring the guard against a bare call.
    pub fn api(&self) -> Option<&Api> {
        match &self.code {
            Code::Local { api, .. } => Some(api),
            Code::Isolated { .. } => None,
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn lib_name(&self) -> &str {
        &self.lib_name
    }

    /// Runs the first version's `init`: the extended table's, with the
    /// host context, if the plugin has one, else the seed table's.
    ///
    /// # Safety
    /// `state` must be the block this plugin's `state_size` was checked
    /// against (same size), no other call into the plugin may run at the
    /// same time, and the calling thread must have run
    /// [`guard::prepare_thread`].
    pub unsafe fn init(&self, state: &mut State, host: &HostContext) -> Result<(), Fault> {
        let (api, ext) = match &self.code {
            Code::Local { api, ext, .. } => (api, ext),
            Code::Isolated { worker, .. } => return worker.init(state, host.seed, host.tick),
        };
        match ext.as_ref().and_then(|e| e.init) {
            // SAFETY: a hook of the checked table of a loaded library; the
            // caller guarantees the rest.
            Some(init) => unsafe { guard::call_hook(init, state.as_mut_ptr(), host) },
            // SAFETY: `init` is non-NULL (checked) and its library is loaded
            // while `self` lives; the caller guarantees the rest.
            None => unsafe { guard::call_state(api.init, state.as_mut_ptr()) },
        }
        .map_err(|f| self.explained(f))
    }

    /// A fault of this version's code in the host, with the panic its
    /// library recorded, if it was an abort that a panic explains.
    fn explained(&self, fault: Fault) -> Fault {
        match &self.code {
            Code::Local { library, .. } => fault.with_panic(|| library.recorded_panic()),
            Code::Isolated { .. } => fault,
        }
    }

    /// Runs `tick` under the crash guard: the extended table's, with the
    /// host context made from `context`, if the version has one, else the
    /// basic table's (which sees neither the context nor the input).
    ///
    /// # Safety
    /// As for [`Plugin::init`].
    #[inline]
    pub unsafe fn tick(
        &self,
        state: &mut State,
        dt: f64,
        context: &TickContext<'_>,
    ) -> Result<(), Fault> {
        match &self.code {
            Code::Local { api, ext, .. } => match ext.as_ref().and_then(|e| e.tick) {
                Some(f) => {
                    let host =
                        crate::plugin::ext::tick_context(context.seed, context.tick, context.input);
                    // SAFETY: as in `init`; `host` and the input it points
                    // at outlive the call.
                    unsafe { guard::call_tick_host(f, state.as_mut_ptr(), dt, &host) }
                }
                // SAFETY: as in `init`.
                None => unsafe { guard::call_tick(api.tick, state.as_mut_ptr(), dt) },
            }
            .map_err(|f| self.explained(f)),
            Code::Isolated { worker, .. } => worker.tick(state, dt, context),
        }
    }

    /// Whether this version's `tick` gets the host context, and with it
    /// the tick's input (the extended table's `tick`).
    pub fn takes_input(&self) -> bool {
        match &self.code {
            Code::Local { ext, .. } => ext.as_ref().is_some_and(|e| e.tick.is_some()),
            Code::Isolated { loaded, .. } => loaded.hooks & report::HAS_TICK != 0,
        }
    }

    /// Runs `shutdown` under the crash guard.
    ///
    /// # Safety
    /// As for [`Plugin::init`].
    pub unsafe fn shutdown(&self, state: &mut State) -> Result<(), Fault> {
        match &self.code {
            // SAFETY: as in `init`.
            Code::Local { api, .. } => {
                unsafe { guard::call_state(api.shutdown, state.as_mut_ptr()) }
                    .map_err(|f| self.explained(f))
            }
            Code::Isolated { worker, .. } => worker.shutdown(state),
        }
    }

    pub fn has_hook(&self, hook: Hook) -> bool {
        match &self.code {
            Code::Local { .. } => self.hook_fn(hook).is_some(),
            Code::Isolated { loaded, .. } => {
                let bit = match hook {
                    Hook::OnReload => report::HAS_ON_RELOAD,
                    Hook::OnUnload => report::HAS_ON_UNLOAD,
                };
                loaded.hooks & bit != 0
            }
        }
    }

    /// The extended table of a version loaded in the host.
    fn local_ext(&self) -> Option<&Ext> {
        match &self.code {
            Code::Local { ext, .. } => ext.as_ref(),
            Code::Isolated { .. } => None,
        }
    }

    fn hook_fn(&self, hook: Hook) -> Option<hotreload_abi::HookFn> {
        let ext = self.local_ext()?;
        match hook {
            Hook::OnReload => ext.on_reload,
            Hook::OnUnload => ext.on_unload,
        }
    }

    /// Whether an isolated version's worker reported hook `bit`.
    fn isolated_has(&self, bit: u8) -> bool {
        match &self.code {
            Code::Isolated { loaded, .. } => loaded.hooks & bit != 0,
            Code::Local { .. } => false,
        }
    }

    /// Runs `hook` if the plugin has it (`Ok` if it does not).
    ///
    /// # Safety
    /// As for [`Plugin::init`].
    pub unsafe fn hook(
        &self,
        hook: Hook,
        state: &mut State,
        host: &HostContext,
    ) -> Result<(), Fault> {
        if let Code::Isolated { worker, .. } = &self.code {
            return match self.has_hook(hook) {
                true => worker.hook(hook, state, host.seed, host.tick),
                false => Ok(()),
            };
        }
        match self.hook_fn(hook) {
            // SAFETY: as in `init`.
            Some(f) => unsafe { guard::call_hook(f, state.as_mut_ptr(), host) }
                .map_err(|f| self.explained(f)),
            None => Ok(()),
        }
    }

    /// Whether the plugin has a `migrate` hook.
    pub fn has_migrate(&self) -> bool {
        self.local_ext().is_some_and(|e| e.migrate.is_some())
            || self.isolated_has(report::HAS_MIGRATE)
    }

    /// Runs `migrate` from `old` (of `old_version`) into `new`; `Ok(None)`
    /// without a hook, else what it returned.
    ///
    /// # Safety
    /// As for [`Plugin::init`], with `new` of this plugin's state size.
    pub unsafe fn migrate(
        &self,
        old: &[u8],
        old_version: u32,
        new: &mut State,
    ) -> Result<Option<std::ffi::c_int>, Fault> {
        if let Code::Isolated { worker, .. } = &self.code {
            return match self.has_migrate() {
                true => worker.migrate(old, old_version, new).map(Some),
                false => Ok(None),
            };
        }
        let Some(f) = self.local_ext().and_then(|e| e.migrate) else {
            return Ok(None);
        };
        // SAFETY: as in `init`; both blocks are valid for their sizes.
        unsafe { guard::call_migrate(f, old, old_version, new.bytes_mut()) }
            .map(Some)
            .map_err(|f| self.explained(f))
    }

    /// Whether the plugin describes its state itself.
    pub fn has_describe(&self) -> bool {
        self.local_ext().is_some_and(|e| e.describe.is_some())
            || self.isolated_has(report::HAS_DESCRIBE)
    }

    /// The plugin's one-line description of `state`; `Ok(None)` without a
    /// `describe` hook.
    ///
    /// # Safety
    /// As for [`Plugin::init`].
    pub unsafe fn describe(&self, state: &State) -> Result<Option<String>, Fault> {
        if let Code::Isolated { worker, .. } = &self.code {
            return match self.has_describe() {
                true => worker.describe(state).map(Some),
                false => Ok(None),
            };
        }
        let Some(f) = self.local_ext().and_then(|e| e.describe) else {
            return Ok(None);
        };
        // SAFETY: as in `init`.
        unsafe { guard::call_describe(f, state.bytes()) }
            .map(Some)
            .map_err(|f| self.explained(f))
    }

    /// `api_version` of the table this version handed over.
    pub fn api_version(&self) -> i32 {
        match &self.code {
            Code::Local { api, .. } => api.api_version,
            Code::Isolated { loaded, .. } => loaded.api_version,
        }
    }

    /// `state_size` of the table this version handed over.
    pub fn state_size(&self) -> usize {
        match &self.code {
            Code::Local { api, .. } => api.state_size,
            Code::Isolated { loaded, .. } => loaded.state_size,
        }
    }

    /// Identifies the library's bytes, to recognise a build seen before.
    pub fn build_hash(&self) -> u64 {
        self.build_hash
    }

    /// Where the plugin's tables live, as linked.
    pub fn table_offsets(&self) -> Vec<u64> {
        match &self.code {
            Code::Local { library, .. } => library.table_offsets(),
            Code::Isolated { loaded, .. } => loaded.table_offsets.clone(),
        }
    }

    /// Gives this version up without unloading it: its library stays mapped
    /// for as long as the process lives (for code a thread still runs at
    /// exit; the process's end takes the mapping with it).
    pub fn leak(self) {
        std::mem::forget(self);
    }

    /// Runs this version's destructors and keeps it mapped (in-process; see
    /// [`Library::destruct`]): a thread a destructor started can be looked
    /// for before it is unmapped. An isolated version's worker runs its
    /// destructors at [`Plugin::close`].
    pub fn destruct(&mut self) -> Option<String> {
        match &mut self.code {
            Code::Local { library, .. } => library.destruct(),
            Code::Isolated { .. } => None,
        }
    }

    /// Unloads this version in a throwaway process; see
    /// [`Library::discard`].
    pub fn discard(self) -> Option<String> {
        match self.code {
            Code::Local { library, .. } => library.discard(),
            Code::Isolated { worker, .. } => worker.finish().destructor_fault,
        }
    }

    /// Unloads this version; see [`Library::close`]. An isolated version's
    /// worker runs the destructors and exits (or is killed).
    pub fn close(self) -> Closed {
        match self.code {
            Code::Local { library, .. } => library.close(),
            Code::Isolated { worker, .. } => {
                let finished = worker.finish();
                Closed {
                    destructor_fault: finished.destructor_fault,
                    close_error: None,
                    still_mapped: false,
                    mapped_bytes: 0,
                    note: finished.note,
                }
            }
        }
    }
}
