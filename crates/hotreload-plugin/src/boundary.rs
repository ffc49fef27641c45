//! The edge between the host's C calls and the plugin's safe Rust: every
//! exported function runs the user's code through [`guarded`], which
//! records a panic in the library's exported [`Record`] and then aborts. The
//! host's crash guard turns that abort into a fault like any crash (state
//! restored, the previous version back), and reads the record for the
//! `[fault]` line. A panic never unwinds into the host.
//!
//! The panic hook installed here records the message and place before any
//! unwinding starts, so a plugin built with `panic = "abort"` reports the
//! same way. It hands a call's panic to the standard hook (which prints it
//! on stderr) only when `RUST_BACKTRACE` asks for a backtrace: the fault
//! line says the rest, and the standard hook leaves a thread-local
//! destructor that keeps the library mapped. A panic on a thread the
//! plugin started is not a call's, and goes to the standard hook as usual.

use core::ffi::{c_char, c_int, c_void};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, PanicHookInfo, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Once, OnceLock};

use hotreload_abi::{
    HostContext, LogicApiExt, PANIC_LOCATION_MAX, PANIC_MESSAGE_MAX, PLUGIN_ABI, PluginRecord,
};

use crate::host::{Host, Previous};
use crate::schema::{State, Table};

/// `hotreload_plugin_t`, writable from the panicking thread without
/// `unsafe`: the same layout as [`hotreload_abi::PluginRecord`] (atomics
/// have their integers' layout), exported by [`crate::export!`] under
/// [`hotreload_abi::PLUGIN_RECORD_NAME`].
#[repr(C)]
pub struct Record {
    size: u32,
    plugin_abi: u32,
    layout_hash: u64,
    state_size: u64,
    state_align: u64,
    panicked: AtomicU32,
    location_len: AtomicU32,
    message_len: AtomicU32,
    reserved: u32,
    location: [AtomicU8; PANIC_LOCATION_MAX],
    message: [AtomicU8; PANIC_MESSAGE_MAX],
}

const _: () = assert!(core::mem::size_of::<Record>() == core::mem::size_of::<PluginRecord>());
const _: () = assert!(
    core::mem::offset_of!(Record, location) == core::mem::offset_of!(PluginRecord, location)
);

impl Record {
    pub const fn new<S: State>() -> Record {
        Record {
            size: core::mem::size_of::<PluginRecord>() as u32,
            plugin_abi: PLUGIN_ABI,
            layout_hash: S::LAYOUT_HASH,
            state_size: core::mem::size_of::<S>() as u64,
            state_align: core::mem::align_of::<S>() as u64,
            panicked: AtomicU32::new(0),
            location_len: AtomicU32::new(0),
            message_len: AtomicU32::new(0),
            reserved: 0,
            location: [const { AtomicU8::new(0) }; PANIC_LOCATION_MAX],
            message: [const { AtomicU8::new(0) }; PANIC_MESSAGE_MAX],
        }
    }

    /// Keeps the first panic: the one that ends the call.
    fn note(&self, location: &str, message: &str) {
        if self
            .panicked
            .compare_exchange(0, 2, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let put = |into: &[AtomicU8], text: &str| {
            let text = cut(text, into.len());
            for (slot, byte) in into.iter().zip(text.bytes()) {
                slot.store(byte, Ordering::Relaxed);
            }
            text.len() as u32
        };
        self.location_len
            .store(put(&self.location, location), Ordering::Relaxed);
        self.message_len
            .store(put(&self.message, message), Ordering::Relaxed);
        // 1 says the texts are complete (2 meant "being written").
        self.panicked.store(1, Ordering::Release);
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

thread_local! {
    /// Whether this thread is inside a guarded call: a panic on a thread
    /// the plugin started ends only that thread, and is not the call's.
    /// Const-initialised and without a destructor, so it registers none
    /// (a thread-local destructor would keep the library mapped).
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

fn message_of(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "Box<dyn Any>"
    }
}

fn install_hook(record: &'static Record) {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            if !IN_CALL.with(Cell::get) {
                // A thread of the plugin's own: not a call's fault, said
                // the usual way.
                previous(info);
                return;
            }
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_else(|| "an unknown place".to_owned());
            record.note(&location, message_of(info.payload()));
            // The host's fault line says the message and the place. The
            // standard hook would say them again, and (naming the thread)
            // register a thread-local destructor that keeps this library
            // mapped until the host exits; it runs only when a backtrace
            // is asked for.
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                previous(info);
            }
        }));
    });
}

/// Runs `call`; a panic in it is recorded in `record` and ends the call with
/// an abort, which the host handles as a fault of this version.
pub fn guarded<R>(record: &'static Record, call: impl FnOnce() -> R) -> R {
    install_hook(record);
    let outer = IN_CALL.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(call));
    IN_CALL.with(|c| c.set(outer));
    match result {
        Ok(value) => value,
        Err(payload) => {
            // The hook has recorded it, unless the plugin replaced the hook.
            record.note(
                "an unknown place (the panic hook was replaced)",
                message_of(&*payload),
            );
            std::process::abort()
        }
    }
}

/// # Safety
/// `state` is the host's block for `S` (size checked at load, aligned to 64
/// bytes, holding a valid `S`), no other call into the plugin runs, and
/// `host` is NULL or a context valid for the call.
pub unsafe fn hook<S: State>(
    record: &'static Record,
    state: *mut c_void,
    host: *const HostContext,
    f: fn(&mut S, &Host<'_>),
) {
    // SAFETY: per this function's contract.
    let (state, host) = unsafe { (&mut *state.cast::<S>(), Host::from_raw(host)) };
    guarded(record, || f(state, &host));
}

/// A plugin's `tick`: `fn(&mut S, f64)`, or `fn(&mut S, f64, &Host)` for
/// one that reads the tick's index, the seed or the input the host passed
/// it. `Form` tells the two apart (one implementation applies to each
/// function), so `export!` takes either without being told which.
pub trait TickFn<S, Form> {
    fn call(&self, state: &mut S, dt: f64, host: &Host<'_>);
}

/// The form of `fn(&mut S, f64)`.
pub struct WithoutHost;
/// The form of `fn(&mut S, f64, &Host)`.
pub struct WithHost;

impl<S, F: Fn(&mut S, f64)> TickFn<S, WithoutHost> for F {
    fn call(&self, state: &mut S, dt: f64, _: &Host<'_>) {
        self(state, dt)
    }
}

impl<S, F: Fn(&mut S, f64, &Host<'_>)> TickFn<S, WithHost> for F {
    fn call(&self, state: &mut S, dt: f64, host: &Host<'_>) {
        self(state, dt, host)
    }
}

/// # Safety
/// As for [`hook`].
pub unsafe fn tick<S: State, Form>(
    record: &'static Record,
    state: *mut c_void,
    dt: f64,
    host: *const HostContext,
    f: impl TickFn<S, Form>,
) {
    // SAFETY: per this function's contract.
    let (state, host) = unsafe { (&mut *state.cast::<S>(), Host::from_raw(host)) };
    guarded(record, || f.call(state, dt, &host));
}

/// # Safety
/// As for [`hook`].
pub unsafe fn shutdown<S: State>(record: &'static Record, state: *mut c_void, f: fn(&mut S)) {
    // SAFETY: per this function's contract.
    let state = unsafe { &mut *state.cast::<S>() };
    guarded(record, || f(state));
}

/// # Safety
/// `old` holds `old_size` readable bytes; `new` is the host's block for `S`
/// (`new_size` bytes) as for [`hook`].
pub unsafe fn migrate<S: State>(
    record: &'static Record,
    old: *const c_void,
    old_size: usize,
    old_version: u32,
    new: *mut c_void,
    new_size: usize,
    f: fn(Previous<'_>, &mut S) -> Result<(), String>,
) -> c_int {
    if new_size != core::mem::size_of::<S>() || (old.is_null() && old_size > 0) {
        println!(
            "[plugin] migrate: expected a new state of {} bytes, found {new_size}; refused",
            core::mem::size_of::<S>()
        );
        return 1;
    }
    // SAFETY: per this function's contract; an empty old state is an empty slice.
    let (bytes, state) = unsafe {
        let bytes: &[u8] = if old_size == 0 {
            &[]
        } else {
            core::slice::from_raw_parts(old.cast::<u8>(), old_size)
        };
        (bytes, &mut *new.cast::<S>())
    };
    guarded(record, || {
        match f(Previous::new(bytes, old_version), state) {
            Ok(()) => 0,
            Err(why) => {
                println!("[plugin] migrate from state version {old_version} refused: {why}");
                1
            }
        }
    })
}

/// # Safety
/// `state` as for [`hook`] (read only); `buf` holds `len` writable bytes.
pub unsafe fn describe<S: State>(
    record: &'static Record,
    state: *const c_void,
    buf: *mut c_char,
    len: usize,
    f: fn(&S) -> String,
) -> usize {
    if buf.is_null() || len == 0 {
        return 0;
    }
    // SAFETY: per this function's contract.
    let (state, out) = unsafe {
        (
            &*state.cast::<S>(),
            core::slice::from_raw_parts_mut(buf.cast::<u8>(), len),
        )
    };
    guarded(record, || {
        let text = f(state);
        let text = cut(&text, len - 1);
        out[..text.len()].copy_from_slice(text.as_bytes());
        out[text.len()] = 0;
        text.len()
    })
}

/// The extended table, built at the first `logic_get_api_ext`: the hooks
/// are fixed, the schema's names are made then.
pub struct ExtCell(OnceLock<BuiltExt>);

pub struct BuiltExt {
    table: LogicApiExt,
    _schema: Table,
}

// SAFETY: the table is written once (by `OnceLock`) and only read after;
// its raw pointers point into the schema stored beside it, which is never
// changed or dropped while the library is loaded (the cell is a static).
unsafe impl Sync for ExtCell {}

impl Default for ExtCell {
    fn default() -> Self {
        ExtCell::new()
    }
}

impl ExtCell {
    pub const fn new() -> ExtCell {
        ExtCell(OnceLock::new())
    }

    /// The table: `hooks` with the schema of `S` filled in.
    pub fn get<S: State>(
        &'static self,
        record: &'static Record,
        hooks: LogicApiExt,
    ) -> *const LogicApiExt {
        let built = guarded(record, || {
            self.0.get_or_init(|| {
                let schema = Table::of::<S>();
                let table = LogicApiExt {
                    field_count: schema.descs.len() as u32,
                    fields: if schema.descs.is_empty() {
                        core::ptr::null()
                    } else {
                        schema.descs.as_ptr()
                    },
                    ..hooks
                };
                BuiltExt {
                    table,
                    _schema: schema,
                }
            })
        });
        &built.table
    }
}
