//! A version of the plugin that passed every check: the only way plugin code
//! is called once it is live.
//!
//! Every call goes through the crash guard ([`crate::guard`]), which turns a
//! crash or hang in plugin code into a [`Fault`]; the calls are `#[inline]`
//! and go straight through the function pointers copied out of the table, so
//! a tick costs a direct call plus the guard (see `benches/dispatch.rs`).

use std::sync::Arc;

use hotreload_abi::HostContext;

use crate::guard::{self, Fault};
use crate::layout::Layout;
use crate::plugin::check::Api;
use crate::plugin::ext::Ext;
use crate::plugin::load::{Closed, Library};
use crate::state::State;

pub struct Plugin {
    api: Api,
    library: Library,
    /// Numbers count successful loads: v1 is the first, and none is reused.
    version: u64,
    /// The library's name as the user knows it (not the shadow copy's).
    lib_name: String,
    build_hash: u64,
    /// The extended table, if the plugin exports one.
    ext: Option<Ext>,
    /// What the state's bytes mean to this version, if known.
    layout: Option<Arc<Layout>>,
    /// Where the library is mapped: a state value pointing in here dangles
    /// once this version is unloaded.
    ranges: Vec<(usize, usize)>,
}

/// The hooks of the extended ABI that take the state and the host context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// After every swap to this version.
    OnReload,
    /// Before this version is swapped out.
    OnUnload,
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
            api,
            library,
            version,
            lib_name,
            build_hash,
            ext: knowledge.ext,
            layout: knowledge.layout,
            ranges,
        }
    }

    pub fn layout(&self) -> Option<&Arc<Layout>> {
        self.layout.as_ref()
    }

    /// The state version the plugin declares (0 without the extended ABI).
    pub fn state_version(&self) -> u32 {
        self.ext.as_ref().map_or(0, |e| e.state_version)
    }

    /// From the lowest to the highest address of this version's library,
    /// if known.
    pub fn span(&self) -> Option<(usize, usize)> {
        let start = self.ranges.iter().map(|r| r.0).min()?;
        let end = self.ranges.iter().map(|r| r.1).max()?;
        Some((start, end))
    }

    /// Whether `address` lies in this version's library.
    pub fn contains(&self, address: usize) -> bool {
        self.ranges
            .iter()
            .any(|&(start, end)| start <= address && address < end)
    }

    /// The checked seed table, for measuring the guard against a bare call.
    pub fn api(&self) -> &Api {
        &self.api
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
        match self.ext.as_ref().and_then(|e| e.init) {
            // SAFETY: a hook of the checked table of a loaded library; the
            // caller guarantees the rest.
            Some(init) => unsafe { guard::call_hook(init, state.as_mut_ptr(), host) },
            // SAFETY: `init` is non-NULL (checked) and its library is loaded
            // while `self` lives; the caller guarantees the rest.
            None => unsafe { guard::call_state(self.api.init, state.as_mut_ptr()) },
        }
    }

    /// Runs `tick` under the crash guard.
    ///
    /// # Safety
    /// As for [`Plugin::init`].
    #[inline]
    pub unsafe fn tick(&self, state: &mut State, dt: f64) -> Result<(), Fault> {
        // SAFETY: as in `init`.
        unsafe { guard::call_tick(self.api.tick, state.as_mut_ptr(), dt) }
    }

    /// Runs `shutdown` under the crash guard.
    ///
    /// # Safety
    /// As for [`Plugin::init`].
    pub unsafe fn shutdown(&self, state: &mut State) -> Result<(), Fault> {
        // SAFETY: as in `init`.
        unsafe { guard::call_state(self.api.shutdown, state.as_mut_ptr()) }
    }

    pub fn has_hook(&self, hook: Hook) -> bool {
        self.hook_fn(hook).is_some()
    }

    fn hook_fn(&self, hook: Hook) -> Option<hotreload_abi::HookFn> {
        let ext = self.ext.as_ref()?;
        match hook {
            Hook::OnReload => ext.on_reload,
            Hook::OnUnload => ext.on_unload,
        }
    }

    /// Runs `hook` if the plugin has it (`Ok` if it does not).
    ///
    /// # Safety
    /// As for [`Plugin::init`].
    pub unsafe fn hook(&self, hook: Hook, state: &mut State, host: &HostContext) -> Result<(), Fault> {
        match self.hook_fn(hook) {
            // SAFETY: as in `init`.
            Some(f) => unsafe { guard::call_hook(f, state.as_mut_ptr(), host) },
            None => Ok(()),
        }
    }

    /// Whether the plugin has a `migrate` hook.
    pub fn has_migrate(&self) -> bool {
        self.ext.as_ref().is_some_and(|e| e.migrate.is_some())
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
        let Some(f) = self.ext.as_ref().and_then(|e| e.migrate) else {
            return Ok(None);
        };
        // SAFETY: as in `init`; both blocks are valid for their sizes.
        unsafe { guard::call_migrate(f, old, old_version, new.bytes_mut()) }.map(Some)
    }

    /// Whether the plugin describes its state itself.
    pub fn has_describe(&self) -> bool {
        self.ext.as_ref().is_some_and(|e| e.describe.is_some())
    }

    /// The plugin's one-line description of `state`; `Ok(None)` without a
    /// `describe` hook.
    ///
    /// # Safety
    /// As for [`Plugin::init`].
    pub unsafe fn describe(&self, state: &State) -> Result<Option<String>, Fault> {
        let Some(f) = self.ext.as_ref().and_then(|e| e.describe) else {
            return Ok(None);
        };
        // SAFETY: as in `init`.
        unsafe { guard::call_describe(f, state.bytes()) }.map(Some)
    }

    /// `api_version` of the table this version handed over.
    pub fn api_version(&self) -> i32 {
        self.api.api_version
    }

    /// `state_size` of the table this version handed over.
    pub fn state_size(&self) -> usize {
        self.api.state_size
    }

    /// The bare `tick` function pointer, for measuring the guard's cost.
    pub fn raw_tick(&self) -> hotreload_abi::TickFn {
        self.api.tick
    }

    /// Identifies the library's bytes, to recognise a build seen before.
    pub fn build_hash(&self) -> u64 {
        self.build_hash
    }

    /// Where the plugin's tables live, as linked.
    pub fn table_offsets(&self) -> Vec<u64> {
        self.library.table_offsets()
    }

    /// Gives this version up without unloading it: its library stays mapped
    /// for as long as the process lives (for code a thread still runs at
    /// exit; the process's end takes the mapping with it).
    pub fn leak(self) {
        std::mem::forget(self);
    }

    /// Unloads this version; see [`Library::close`].
    pub fn close(self) -> Closed {
        self.library.close()
    }
}
