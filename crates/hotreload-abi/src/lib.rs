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
    /// The input the host passed for this tick ([`MAX_INPUT`] bytes at
    /// most), or NULL with `input_len` 0: set only for the extended table's
    /// `tick`, NULL in `init` and the hooks.
    pub input: *const c_void,
    pub input_len: usize,
}

/// `HOTRELOAD_MAX_INPUT`: the most bytes of input a host passes one tick.
pub const MAX_INPUT: usize = 2048;

/// `void tick(void* state, double dt, const hotreload_host_t* host)`: the
/// extended table's `tick`, which replaces [`LogicApi::tick`] when set and
/// also gets the host context (the tick's index, the seed, its input).
pub type TickHostFn = unsafe extern "C" fn(state: *mut c_void, dt: f64, host: *const HostContext);

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
    pub tick: Option<TickHostFn>,
}

/// The data symbol a library built with the `hotreload-plugin` crate exports
/// (`hotreload_plugin_t hotreload_plugin`), NUL-terminated for lookups.
pub const PLUGIN_RECORD_NAME: &str = "hotreload_plugin";

/// `HOTRELOAD_PLUGIN_ABI`: the version of [`PluginRecord`] and of the
/// plugin crate's glue this host understands. A library whose record says
/// another is refused at load, naming both.
pub const PLUGIN_ABI: u32 = 1;

/// `HOTRELOAD_PANIC_LOCATION_MAX`: bytes kept of a panic's location.
pub const PANIC_LOCATION_MAX: usize = 256;
/// `HOTRELOAD_PANIC_MESSAGE_MAX`: bytes kept of a panic's message.
pub const PANIC_MESSAGE_MAX: usize = 1024;

/// `hotreload_plugin_t`: what a library built with the `hotreload-plugin`
/// crate says about itself, and where it leaves the panic that ends a call.
///
/// `size` and `plugin_abi` come first in every version, so a host can always
/// read which version it is looking at. The plugin writes `panicked`
/// (0 or 1), the lengths and the texts once, just before it aborts out of a
/// panicking call: a host that sees that library fault with `SIGABRT` reads
/// them while the library is still mapped. Texts are UTF-8, not
/// NUL-terminated; a length past its buffer is cut to the buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PluginRecord {
    /// `sizeof(hotreload_plugin_t)` as the plugin knows it.
    pub size: u32,
    /// [`PLUGIN_ABI`] of the plugin crate the library was built with.
    pub plugin_abi: u32,
    /// [`LayoutHash`] of the state type as the derive saw it.
    pub layout_hash: u64,
    /// `size_of` and `align_of` the state type.
    pub state_size: u64,
    pub state_align: u64,
    /// 1 once a panic is recorded.
    pub panicked: u32,
    pub location_len: u32,
    pub message_len: u32,
    pub reserved: u32,
    /// `src/lib.rs:12:9`.
    pub location: [u8; PANIC_LOCATION_MAX],
    /// The panic's message.
    pub message: [u8; PANIC_MESSAGE_MAX],
}

/// The layout hash of a state type: FNV-1a (64-bit) over its schema as the
/// host reads it from `logic_api_ext_t.fields` (each field's name bytes, a
/// 0 byte, then type and flags as little-endian `u32`s, offset and count as
/// little-endian `u64`s, in table order), then the state's size and
/// alignment as little-endian `u64`s. The plugin crate computes it at
/// compile time from the type, the host again from the table; both use
/// this one definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutHash(u64);

impl Default for LayoutHash {
    fn default() -> Self {
        LayoutHash::new()
    }
}

impl LayoutHash {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub const fn new() -> LayoutHash {
        LayoutHash(0xcbf2_9ce4_8422_2325)
    }

    /// Feeds bytes of a field's name (a name may be fed in pieces).
    pub const fn bytes(self, bytes: &[u8]) -> LayoutHash {
        let mut h = self.0;
        let mut i = 0;
        while i < bytes.len() {
            h = (h ^ bytes[i] as u64).wrapping_mul(Self::PRIME);
            i += 1;
        }
        LayoutHash(h)
    }

    /// Feeds a number's decimal digits (an array index inside a name).
    pub const fn decimal(self, mut n: usize) -> LayoutHash {
        let mut digits = [0u8; 20];
        let mut len = 0;
        loop {
            digits[19 - len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut h = self;
        let mut i = 20 - len;
        while i < 20 {
            h = h.bytes(&[digits[i]]);
            i += 1;
        }
        h
    }

    /// Ends a field's name and feeds the rest of its entry.
    pub const fn field(
        self,
        field_type: u32,
        flags: u32,
        offset: usize,
        count: usize,
    ) -> LayoutHash {
        self.bytes(&[0])
            .bytes(&field_type.to_le_bytes())
            .bytes(&flags.to_le_bytes())
            .bytes(&(offset as u64).to_le_bytes())
            .bytes(&(count as u64).to_le_bytes())
    }

    /// The hash, after every field.
    pub const fn finish(self, state_size: usize, state_align: usize) -> u64 {
        self.bytes(&(state_size as u64).to_le_bytes())
            .bytes(&(state_align as u64).to_le_bytes())
            .0
    }
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
        assert_eq!(offset_of!(HostContext, input), 32);
        assert_eq!(offset_of!(HostContext, input_len), 40);
        assert_eq!(size_of::<HostContext>(), 48);
        assert_eq!(offset_of!(LogicApiExt, fields), 16);
        assert_eq!(offset_of!(LogicApiExt, init), 24);
        assert_eq!(offset_of!(LogicApiExt, migrate), 48);
        assert_eq!(offset_of!(LogicApiExt, tick), 64);
        assert_eq!(size_of::<LogicApiExt>(), 72);
        assert_eq!(offset_of!(PluginRecord, layout_hash), 8);
        assert_eq!(offset_of!(PluginRecord, panicked), 32);
        assert_eq!(offset_of!(PluginRecord, location), 48);
        assert_eq!(size_of::<PluginRecord>(), 48 + 256 + 1024);
    }

    #[test]
    fn a_layout_hash_fed_in_pieces_is_the_same() {
        let whole = LayoutHash::new().bytes(b"grid[12].x").field(0x104, 0, 8, 1);
        let pieces = LayoutHash::new()
            .bytes(b"grid[")
            .decimal(12)
            .bytes(b"].x")
            .field(0x104, 0, 8, 1);
        assert_eq!(whole.finish(16, 8), pieces.finish(16, 8));
        assert_ne!(whole.finish(16, 8), whole.finish(16, 4));
        assert_eq!(LayoutHash::new().decimal(0), LayoutHash::new().bytes(b"0"));
    }
}
