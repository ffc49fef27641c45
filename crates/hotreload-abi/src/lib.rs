//! The plugin ABI, mirrored once from `include/hotreload.h`.
//!
//! A plugin is a shared library that exports one C function,
//! `logic_get_api`, returning a pointer to a [`LogicApi`] table. The layout of
//! that table is the seed's, byte for byte, so that plugins written against the
//! original header keep working. Everything the host knows about a plugin comes
//! through this table; the host owns the state and hands the plugin a pointer
//! to it on every call.
//!
//! The header is the source of truth for C authors; the test at the bottom of
//! this file pins the Rust mirror's layout to the same offsets.

#![no_std]

use core::ffi::{c_int, c_void};

/// The `api_version` a plugin must report to be loaded by this host.
pub const API_VERSION: c_int = 1;

/// The symbol every plugin exports, NUL-terminated for `dlsym`.
pub const GET_API_SYMBOL: &[u8] = b"logic_get_api\0";

/// The exported symbol's name without the terminator, for messages and ELF
/// symbol tables.
pub const GET_API_NAME: &str = "logic_get_api";

/// `void init(void* state)`: called once, on the first successful load.
pub type InitFn = unsafe extern "C" fn(state: *mut c_void);
/// `void tick(void* state, double dt)`: called once per tick; `dt` is in seconds.
pub type TickFn = unsafe extern "C" fn(state: *mut c_void, dt: f64);
/// `void shutdown(void* state)`: called once, when the host stops.
pub type ShutdownFn = unsafe extern "C" fn(state: *mut c_void);
/// `logic_api_t* logic_get_api(void)`.
pub type GetApiFn = unsafe extern "C" fn() -> *const LogicApi;

/// `logic_api_t`: the table a plugin hands the host.
///
/// The function pointers are `Option`s because a plugin can leave them NULL;
/// `Option<extern "C" fn>` has the same size and representation as a nullable
/// C function pointer, so reading the table never invents a non-NULL value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LogicApi {
    /// Must equal [`API_VERSION`].
    pub api_version: c_int,
    /// The number of bytes of state the plugin expects the host to own.
    pub state_size: usize,
    pub init: Option<InitFn>,
    pub tick: Option<TickFn>,
    pub shutdown: Option<ShutdownFn>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    /// The offsets of `logic_api_t` on an LP64 target, as a C compiler lays it
    /// out from `include/hotreload.h`.
    #[test]
    fn layout_matches_the_c_header() {
        assert_eq!(offset_of!(LogicApi, api_version), 0);
        assert_eq!(offset_of!(LogicApi, state_size), 8);
        assert_eq!(offset_of!(LogicApi, init), 16);
        assert_eq!(offset_of!(LogicApi, tick), 24);
        assert_eq!(offset_of!(LogicApi, shutdown), 32);
        assert_eq!(size_of::<LogicApi>(), 40);
    }
}
