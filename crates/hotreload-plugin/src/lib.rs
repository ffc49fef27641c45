//! Write a hotreload plugin in safe Rust.
//!
//! A plugin is a `cdylib` whose state the host owns and keeps across every
//! reload. With this crate its author writes no `unsafe`, no `no_mangle`
//! and no `c_void`:
//!
//! ```
//! use hotreload_plugin::{Host, State};
//!
//! #[derive(State)]
//! #[repr(C)]
//! pub struct Counter {
//!     score: i64,
//!     pos: Vec2,            // nested: `pos.x`, `pos.y`
//!     grid: [[u8; 4]; 3],   // two-dimensional: copied row by row on a resize
//!     #[state(text)]
//!     name: [u8; 16],       // shown as a string
//!     #[state(transient)]
//!     cache: [u32; 8],      // zeroed on every reload
//! }
//!
//! #[derive(State)]
//! #[repr(C)]
//! pub struct Vec2 { x: f32, y: f32 }
//!
//! fn init(s: &mut Counter, host: &Host) { s.score = host.seed() as i64; host.log("ready"); }
//! fn tick(s: &mut Counter, _dt: f64) { s.score += 1; }
//!
//! hotreload_plugin::export! { state: Counter, init: init, tick: tick }
//! # fn main() {}
//! ```
//!
//! - [`State`] (the derive, in [`schema`]) describes the type to the host:
//!   each field's name, type, offset and shape, flattened as the host's
//!   debug-info reader names them, plus a layout hash the host checks
//!   against that table. What no schema can describe (no `#[repr(C)]`,
//!   references, pointers, `String`, `Vec`, generics) is a compile error.
//! - [`export!`] exports `logic_get_api` and `logic_get_api_ext` from
//!   ordinary functions: `init(&mut S, &Host)`, `tick(&mut S, f64)` (or
//!   `tick(&mut S, f64, &Host)`, to read the tick's index, the seed and
//!   the input the host passed it: [`Host::input`]), and
//!   optionally `shutdown(&mut S)`, `on_reload` / `on_unload(&mut S,
//!   &Host)`, `migrate(Previous, &mut S) -> Result<(), String>` and
//!   `describe(&S) -> String`.
//! - A panic in any of them is caught at the boundary ([`boundary`]): its
//!   message and place are recorded in the library's exported
//!   `hotreload_plugin` record and the call ends in an abort, which the host
//!   handles like a crash: state restored, the previous version back, and
//!   `[fault] v2 tick 37: panic at src/lib.rs:12:9: …` in its log. A panic
//!   never unwinds into the host, with `panic = "unwind"` or `"abort"`.
//! - The same record carries this crate's ABI version: a host speaking
//!   another refuses the library at load, naming both.
//!
//! Statics in a plugin start afresh at every reload (the host names them at
//! load); keep everything that must last in the state.

pub mod boundary;
pub mod host;
pub mod schema;

pub use host::{Host, Previous};
pub use hotreload_plugin_derive::State;
pub use schema::{State, StateField};

/// What [`export!`] and the derive expand to; not for plugin code.
#[doc(hidden)]
pub mod __private {
    pub use crate::boundary::{
        ExtCell, Record, TickFn, WithHost, WithoutHost, describe, guarded, hook, migrate, shutdown,
        tick,
    };
    pub use crate::schema::{Member, Shape, State, StateField, layout_hash};
    pub use core::ffi::{c_char, c_int, c_void};
    pub use hotreload_abi::{
        API_VERSION, DescribeFn, EXT_VERSION, HookFn, HostContext, LogicApi, LogicApiExt, MigrateFn,
    };
}

/// Exports a plugin: `logic_get_api`, `logic_get_api_ext` and the
/// `hotreload_plugin` record, from ordinary functions. Keys in any order;
/// `state`, `init` and `tick` are required, the others optional:
///
/// ```ignore
/// hotreload_plugin::export! {
///     state: Counter,          // a #[derive(State)] #[repr(C)] struct
///     version: 2,              // the state version (default 1): raise it when the meaning changes
///     init: init,              // fn(&mut Counter, &Host): the first load only
///     tick: tick,              // fn(&mut Counter, f64), or fn(&mut Counter, f64, &Host): every tick
///     shutdown: shutdown,      // fn(&mut Counter): when the host stops
///     on_reload: on_reload,    // fn(&mut Counter, &Host): after every swap to this version
///     on_unload: on_unload,    // fn(&mut Counter, &Host): before this version goes
///     migrate: migrate,        // fn(Previous, &mut Counter) -> Result<(), String>
///     describe: describe,      // fn(&Counter) -> String: the [state] line
/// }
/// ```
#[macro_export]
macro_rules! export {
    // Each `key: value` in turn goes into its slot (in the order above),
    // so that the keys may come in any order; a key given twice, one that
    // does not exist, or a required one missing is a compile error saying
    // which.
    (@munch {$($given:tt)+} $s1:tt $s2:tt $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ; state : $($rest:tt)*) => {
        ::core::compile_error!("hotreload_plugin::export!: `state` is given twice");
    };
    (@munch {} $s1:tt $s2:tt $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ; state : $value:ty $(, $($rest:tt)*)?) => {
        $crate::export!(@munch {$value} $s1 $s2 $s3 $s4 $s5 $s6 $s7 $s8 ; $($($rest)*)?);
    };
    (@munch $s0:tt {$($given:tt)+} $s2:tt $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ; version : $($rest:tt)*) => {
        ::core::compile_error!("hotreload_plugin::export!: `version` is given twice");
    };
    (@munch $s0:tt {} $s2:tt $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ; version : $value:expr $(, $($rest:tt)*)?) => {
        $crate::export!(@munch $s0 {$value} $s2 $s3 $s4 $s5 $s6 $s7 $s8 ; $($($rest)*)?);
    };
    (@munch $s0:tt $s1:tt {$($given:tt)+} $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ; init : $($rest:tt)*) => {
        ::core::compile_error!("hotreload_plugin::export!: `init` is given twice");
    };
    (@munch $s0:tt $s1:tt {} $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ; init : $value:path $(, $($rest:tt)*)?) => {
        $crate::export!(@munch $s0 $s1 {$value} $s3 $s4 $s5 $s6 $s7 $s8 ; $($($rest)*)?);
    };
    (@munch $s0:tt $s1:tt $s2:tt {$($given:tt)+} $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ; tick : $($rest:tt)*) => {
        ::core::compile_error!("hotreload_plugin::export!: `tick` is given twice");
    };
    (@munch $s0:tt $s1:tt $s2:tt {} $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ; tick : $value:path $(, $($rest:tt)*)?) => {
        $crate::export!(@munch $s0 $s1 $s2 {$value} $s4 $s5 $s6 $s7 $s8 ; $($($rest)*)?);
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt {$($given:tt)+} $s5:tt $s6:tt $s7:tt $s8:tt ; shutdown : $($rest:tt)*) => {
        ::core::compile_error!("hotreload_plugin::export!: `shutdown` is given twice");
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt {} $s5:tt $s6:tt $s7:tt $s8:tt ; shutdown : $value:path $(, $($rest:tt)*)?) => {
        $crate::export!(@munch $s0 $s1 $s2 $s3 {$value} $s5 $s6 $s7 $s8 ; $($($rest)*)?);
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt $s4:tt {$($given:tt)+} $s6:tt $s7:tt $s8:tt ; on_reload : $($rest:tt)*) => {
        ::core::compile_error!("hotreload_plugin::export!: `on_reload` is given twice");
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt $s4:tt {} $s6:tt $s7:tt $s8:tt ; on_reload : $value:path $(, $($rest:tt)*)?) => {
        $crate::export!(@munch $s0 $s1 $s2 $s3 $s4 {$value} $s6 $s7 $s8 ; $($($rest)*)?);
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt $s4:tt $s5:tt {$($given:tt)+} $s7:tt $s8:tt ; on_unload : $($rest:tt)*) => {
        ::core::compile_error!("hotreload_plugin::export!: `on_unload` is given twice");
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt $s4:tt $s5:tt {} $s7:tt $s8:tt ; on_unload : $value:path $(, $($rest:tt)*)?) => {
        $crate::export!(@munch $s0 $s1 $s2 $s3 $s4 $s5 {$value} $s7 $s8 ; $($($rest)*)?);
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt $s4:tt $s5:tt $s6:tt {$($given:tt)+} $s8:tt ; migrate : $($rest:tt)*) => {
        ::core::compile_error!("hotreload_plugin::export!: `migrate` is given twice");
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt $s4:tt $s5:tt $s6:tt {} $s8:tt ; migrate : $value:path $(, $($rest:tt)*)?) => {
        $crate::export!(@munch $s0 $s1 $s2 $s3 $s4 $s5 $s6 {$value} $s8 ; $($($rest)*)?);
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt {$($given:tt)+} ; describe : $($rest:tt)*) => {
        ::core::compile_error!("hotreload_plugin::export!: `describe` is given twice");
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt {} ; describe : $value:path $(, $($rest:tt)*)?) => {
        $crate::export!(@munch $s0 $s1 $s2 $s3 $s4 $s5 $s6 $s7 {$value} ; $($($rest)*)?);
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ; $key:ident : $($rest:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "hotreload_plugin::export!: `",
            ::core::stringify!($key),
            "` is not a key, or its value is not of the kind it takes; expected `state: Type`, \
             `version: N`, and `init`, `tick`, `shutdown`, `on_reload`, `on_unload`, `migrate`, \
             `describe` each `key: function`"
        ));
    };
    (@munch $s0:tt $s1:tt $s2:tt $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ; $($rest:tt)+) => {
        ::core::compile_error!(::core::concat!(
            "hotreload_plugin::export!: expected `key: value`, separated by commas, found `",
            ::core::stringify!($($rest)*),
            "`"
        ));
    };
    (@munch {} $s1:tt $s2:tt $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ;) => {
        ::core::compile_error!("hotreload_plugin::export!: `state: Type` is missing");
    };
    (@munch $s0:tt $s1:tt {} $s3:tt $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ;) => {
        ::core::compile_error!("hotreload_plugin::export!: `init: function` is missing");
    };
    (@munch $s0:tt $s1:tt $s2:tt {} $s4:tt $s5:tt $s6:tt $s7:tt $s8:tt ;) => {
        ::core::compile_error!("hotreload_plugin::export!: `tick: function` is missing");
    };
    (@munch
        {$state:ty}
        {$($version:expr)?}
        {$init:path}
        {$tick:path}
        {$($shutdown:path)?}
        {$($on_reload:path)?}
        {$($on_unload:path)?}
        {$($migrate:path)?}
        {$($describe:path)?}
        ;
    ) => {
        #[doc(hidden)]
        #[allow(unsafe_code, non_snake_case)]
        mod __hotreload_plugin_glue {
            #[allow(unused_imports)]
            use super::*;
            use $crate::__private as __hr;

            type __HrState = $state;

            const _: () = assert!(
                ::core::mem::align_of::<__HrState>() <= 64,
                "the host aligns the state to 64 bytes: a state type aligned to more cannot be used"
            );

            /// `hotreload_plugin_t`: this crate's ABI version, the state's
            /// layout hash, and where a panic is recorded.
            #[unsafe(export_name = "hotreload_plugin")]
            static __HR_RECORD: __hr::Record = __hr::Record::new::<__HrState>();

            // SAFETY (every function below): the host calls them with its
            // state block for this plugin, whose size it checked against
            // `state_size` at load and which it aligns to 64 bytes (at least
            // the type's alignment, asserted above), from one thread at a
            // time, with a host context valid for the call or NULL.
            unsafe extern "C" fn __hr_init(state: *mut __hr::c_void) {
                unsafe { __hr::hook::<__HrState>(&__HR_RECORD, state, ::core::ptr::null(), $init) }
            }
            unsafe extern "C" fn __hr_ext_init(state: *mut __hr::c_void, host: *const __hr::HostContext) {
                unsafe { __hr::hook::<__HrState>(&__HR_RECORD, state, host, $init) }
            }
            unsafe extern "C" fn __hr_tick(state: *mut __hr::c_void, dt: f64) {
                unsafe { __hr::tick::<__HrState, _>(&__HR_RECORD, state, dt, ::core::ptr::null(), $tick) }
            }
            unsafe extern "C" fn __hr_ext_tick(
                state: *mut __hr::c_void,
                dt: f64,
                host: *const __hr::HostContext,
            ) {
                unsafe { __hr::tick::<__HrState, _>(&__HR_RECORD, state, dt, host, $tick) }
            }
            unsafe extern "C" fn __hr_shutdown(state: *mut __hr::c_void) {
                let f: fn(&mut __HrState) = $crate::__or!($($shutdown)?, |_| {});
                unsafe { __hr::shutdown::<__HrState>(&__HR_RECORD, state, f) }
            }

            static __HR_API: __hr::LogicApi = __hr::LogicApi {
                api_version: __hr::API_VERSION,
                state_size: ::core::mem::size_of::<__HrState>(),
                init: Some(__hr_init),
                tick: Some(__hr_tick),
                shutdown: Some(__hr_shutdown),
            };

            #[unsafe(no_mangle)]
            pub extern "C" fn logic_get_api() -> *const __hr::LogicApi {
                &__HR_API
            }

            static __HR_EXT: __hr::ExtCell = __hr::ExtCell::new();

            #[unsafe(no_mangle)]
            pub extern "C" fn logic_get_api_ext() -> *const __hr::LogicApiExt {
                __HR_EXT.get::<__HrState>(&__HR_RECORD, __hr::LogicApiExt {
                    ext_version: __hr::EXT_VERSION,
                    size: ::core::mem::size_of::<__hr::LogicApiExt>() as u32,
                    state_version: $crate::__or!($($version)?, 1),
                    field_count: 0,
                    fields: ::core::ptr::null(),
                    init: Some(__hr_ext_init),
                    on_reload: $crate::__hook!($($on_reload)?),
                    on_unload: $crate::__hook!($($on_unload)?),
                    migrate: $crate::__migrate!($($migrate)?),
                    describe: $crate::__describe!($($describe)?),
                    tick: Some(__hr_ext_tick),
                })
            }
        }
    };
    ($($input:tt)*) => {
        $crate::export!(@munch {} {} {} {} {} {} {} {} {} ; $($input)*);
    };
}

/// The given value, else the default.
#[doc(hidden)]
#[macro_export]
macro_rules! __or {
    (, $default:expr) => {
        $default
    };
    ($given:expr, $default:expr) => {
        $given
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hook {
    () => {
        None
    };
    ($f:path) => {
        Some({
            // SAFETY: as for the glue's other functions.
            unsafe extern "C" fn __hr_hook(
                state: *mut __hr::c_void,
                host: *const __hr::HostContext,
            ) {
                unsafe { __hr::hook::<__HrState>(&__HR_RECORD, state, host, $f) }
            }
            __hr_hook as __hr::HookFn
        })
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __migrate {
    () => {
        None
    };
    ($f:path) => {
        Some({
            // SAFETY: the host hands the old block (`old_size` readable
            // bytes) and its new block for this plugin, as for the glue's
            // other functions.
            unsafe extern "C" fn __hr_migrate(
                old: *const __hr::c_void,
                old_size: usize,
                old_version: u32,
                new: *mut __hr::c_void,
                new_size: usize,
            ) -> __hr::c_int {
                unsafe {
                    __hr::migrate::<__HrState>(
                        &__HR_RECORD,
                        old,
                        old_size,
                        old_version,
                        new,
                        new_size,
                        $f,
                    )
                }
            }
            __hr_migrate as __hr::MigrateFn
        })
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __describe {
    () => {
        None
    };
    ($f:path) => {
        Some({
            // SAFETY: the host hands its state block and a buffer of `len`
            // writable bytes, as for the glue's other functions.
            unsafe extern "C" fn __hr_describe(
                state: *const __hr::c_void,
                buf: *mut __hr::c_char,
                len: usize,
            ) -> usize {
                unsafe { __hr::describe::<__HrState>(&__HR_RECORD, state, buf, len, $f) }
            }
            __hr_describe as __hr::DescribeFn
        })
    };
}
