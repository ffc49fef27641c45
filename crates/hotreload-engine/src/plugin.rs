//! A version of the plugin that passed every check: the only way plugin code
//! is called once it is live.
//!
//! The calls are `#[inline]` and go straight through the function pointers
//! copied out of the table, so a tick costs what a direct call through a
//! function pointer costs (see `benches/dispatch.rs`).

use crate::check::Api;
use crate::load::{Closed, Library};
use crate::state::State;

pub struct Plugin {
    api: Api,
    library: Library,
    /// Numbers count successful loads: v1 is the first, and none is reused.
    version: u64,
    /// The library's name as the user knows it (not the shadow copy's).
    lib_name: String,
}

impl Plugin {
    pub fn new(api: Api, library: Library, version: u64, lib_name: String) -> Plugin {
        Plugin {
            api,
            library,
            version,
            lib_name,
        }
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn lib_name(&self) -> &str {
        &self.lib_name
    }

    /// # Safety
    /// `state` must be the block this plugin's `state_size` was checked
    /// against (same size), and no other call into the plugin may run at the
    /// same time.
    #[inline]
    pub unsafe fn init(&self, state: &mut State) {
        // SAFETY: `init` is non-NULL (checked) and its library is loaded while
        // `self` lives; the caller guarantees the state's size.
        unsafe { (self.api.init)(state.as_mut_ptr()) }
    }

    /// # Safety
    /// As for [`Plugin::init`].
    #[inline]
    pub unsafe fn tick(&self, state: &mut State, dt: f64) {
        // SAFETY: as in `init`.
        unsafe { (self.api.tick)(state.as_mut_ptr(), dt) }
    }

    /// # Safety
    /// As for [`Plugin::init`].
    #[inline]
    pub unsafe fn shutdown(&self, state: &mut State) {
        // SAFETY: as in `init`.
        unsafe { (self.api.shutdown)(state.as_mut_ptr()) }
    }

    /// Unloads this version; see [`Library::close`].
    pub fn close(self) -> Closed {
        self.library.close()
    }
}
