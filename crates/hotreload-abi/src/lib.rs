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

use core::ffi::{c_char, c_int, c_void};

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

/// The extended table's symbol, NUL-terminated for `dlsym`.
pub const GET_API_EXT_SYMBOL: &[u8] = b"logic_get_api_ext\0";

/// The extended ABI's version this host speaks (`HOTRELOAD_EXT_VERSION`).
pub const EXT_VERSION: u32 = 1;

/// Schema field types (`HOTRELOAD_I32`, ...): the low byte is the size.
pub mod field_type {
    pub const I8: u32 = 0x101;
    pub const I16: u32 = 0x102;
    pub const I32: u32 = 0x104;
    pub const I64: u32 = 0x108;
    pub const U8: u32 = 0x201;
    pub const U16: u32 = 0x202;
    pub const U32: u32 = 0x204;
    pub const U64: u32 = 0x208;
    pub const F32: u32 = 0x304;
    pub const F64: u32 = 0x308;
    pub const BOOL: u32 = 0x401;
    pub const PTR: u32 = 0x508;
    /// A C `char`: a number like `I8`, whose arrays are shown as text.
    pub const CHAR: u32 = 0x601;
}

/// `HOTRELOAD_TRANSIENT`: reset to zero on every reload.
pub const FIELD_TRANSIENT: u32 = 1;

/// `HOTRELOAD_ROW_SHIFT`: a two-dimensional array field keeps its row
/// length in the flags' bits from here up (0: one dimension). Hosts that
/// predate it read only [`FIELD_TRANSIENT`] and see the flat array.
pub const FIELD_ROW_SHIFT: u32 = 8;

/// `hotreload_field_t`: one entry of a plugin's declared schema.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FieldDesc {
    pub name: *const c_char,
    pub field_type: u32,
    pub flags: u32,
    pub offset: usize,
    pub count: usize,
}

/// `hotreload_host_t`: what the host tells plugin code.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HostContext {
    pub size: u32,
    pub reserved: u32,
    pub seed: u64,
    pub tick: u64,
    pub log: Option<unsafe extern "C" fn(message: *const c_char)>,
}

/// `void (*)(void* state, const hotreload_host_t* host)`: `init`,
/// `on_reload`, `on_unload` of the extended table.
pub type HookFn = unsafe extern "C" fn(state: *mut c_void, host: *const HostContext);
/// `int migrate(const void* old, size_t old_size, uint32_t old_version, void* new, size_t new_size)`.
pub type MigrateFn = unsafe extern "C" fn(
    old_state: *const c_void,
    old_size: usize,
    old_version: u32,
    new_state: *mut c_void,
    new_size: usize,
) -> c_int;
/// `size_t describe(const void* state, char* buf, size_t len)`.
pub type DescribeFn =
    unsafe extern "C" fn(state: *const c_void, buf: *mut c_char, len: usize) -> usize;
/// `logic_api_ext_t* logic_get_api_ext(void)`.
pub type GetApiExtFn = unsafe extern "C" fn() -> *const LogicApiExt;

/// `logic_api_ext_t`: the optional extended table. Its `size` says how much
/// of it the plugin filled in; a host reads no further than both know.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LogicApiExt {
    pub ext_version: u32,
    pub size: u32,
    pub state_version: u32,
    pub field_count: u32,
    pub fields: *const FieldDesc,
    pub init: Option<HookFn>,
    pub on_reload: Option<HookFn>,
    pub on_unload: Option<HookFn>,
    pub migrate: Option<MigrateFn>,
    pub describe: Option<DescribeFn>,
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

    /// `hotreload_field_t`, `hotreload_host_t` and `logic_api_ext_t` as a C
    /// compiler lays them out on LP64.
    #[test]
    fn extended_layout_matches_the_c_header() {
        assert_eq!(offset_of!(FieldDesc, field_type), 8);
        assert_eq!(offset_of!(FieldDesc, offset), 16);
        assert_eq!(size_of::<FieldDesc>(), 32);
        assert_eq!(offset_of!(HostContext, seed), 8);
        assert_eq!(offset_of!(HostContext, log), 24);
        assert_eq!(size_of::<HostContext>(), 32);
        assert_eq!(offset_of!(LogicApiExt, fields), 16);
        assert_eq!(offset_of!(LogicApiExt, init), 24);
        assert_eq!(offset_of!(LogicApiExt, migrate), 48);
        assert_eq!(size_of::<LogicApiExt>(), 64);
    }
}
