//! What plugin code sees of the host: [`Host`] in `init` and the hooks,
//! [`Previous`] in `migrate`.

use std::ffi::CString;

use hotreload_abi::HostContext;

use crate::schema::{State, valid_bytes};

/// `sizeof(hotreload_host_t)` before `input` was added: seed, tick, log.
const FIRST_CONTEXT_SIZE: usize = core::mem::offset_of!(HostContext, input);

/// The host's context: its seed, the tick count, its log, and in `tick`
/// the input the host passed it.
pub struct Host<'a> {
    context: Option<&'a HostContext>,
}

impl<'a> Host<'a> {
    /// # Safety
    /// `raw` is NULL or points to a context valid for `'a`, of at least the
    /// `size` it says.
    pub(crate) unsafe fn from_raw(raw: *const HostContext) -> Host<'a> {
        // SAFETY: per this function's contract.
        let context = unsafe { raw.as_ref() };
        Host {
            // A context too short to hold even the first version's fields
            // is not used; `input` is read only from one long enough.
            context: context.filter(|c| c.size as usize >= FIRST_CONTEXT_SIZE),
        }
    }

    /// `hotreload --seed N`: the same seed and number of ticks give the same
    /// state, when the plugin draws its randomness from it. 0 without one.
    pub fn seed(&self) -> u64 {
        self.context.map_or(0, |c| c.seed)
    }

    /// Ticks completed so far.
    pub fn tick(&self) -> u64 {
        self.context.map_or(0, |c| c.tick)
    }

    /// In `tick`, the bytes the host passed this tick (an embedding host's
    /// per-tick input, or `hotreload ctl input`), at most 2048; empty in
    /// the hooks, without input, or from a host that predates input.
    /// `replay` and `loop` pass each tick the bytes it got when recorded.
    pub fn input(&self) -> &'a [u8] {
        match self.context {
            Some(c)
                if c.size as usize >= core::mem::size_of::<HostContext>()
                    && !c.input.is_null()
                    && c.input_len <= hotreload_abi::MAX_INPUT =>
            {
                // SAFETY: the host passes `input_len` readable bytes at
                // `input`, valid for the call, which `'a` is.
                unsafe { core::slice::from_raw_parts(c.input.cast::<u8>(), c.input_len) }
            }
            _ => &[],
        }
    }

    /// Prints `[plugin] message`, in order with the host's own lines (a NUL
    /// in the message ends it).
    pub fn log(&self, message: &str) {
        let text = message.split('\0').next().unwrap_or_default();
        match self.context.and_then(|c| c.log) {
            Some(log) => {
                let Ok(text) = CString::new(text) else { return };
                // SAFETY: the host's `log` takes a NUL-terminated string
                // valid for the call, which `text` is.
                unsafe { log(text.as_ptr()) }
            }
            None => println!("[plugin] {text}"),
        }
    }
}

/// The state as the previous version left it, handed to `migrate` after the
/// host has copied every field both versions share by name.
pub struct Previous<'a> {
    bytes: &'a [u8],
    version: u32,
}

impl<'a> Previous<'a> {
    pub(crate) fn new(bytes: &'a [u8], version: u32) -> Previous<'a> {
        Previous { bytes, version }
    }

    /// The previous version's `state_version`.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Its bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The previous state read as `T` (the old version's type, kept in the
    /// new code under another name): `None` when the bytes cannot be one (a
    /// different size, a bool that is neither 0 nor 1).
    pub fn read<T: State>(&self) -> Option<T> {
        if !valid_bytes::<T>(self.bytes) {
            return None;
        }
        // SAFETY: the bytes are exactly `size_of::<T>()` long and every bool
        // in them is 0 or 1; every other field of a `State` type is a number,
        // valid for every bit pattern. Read unaligned: the old block need
        // not be aligned for `T`.
        Some(unsafe { core::ptr::read_unaligned(self.bytes.as_ptr().cast::<T>()) })
    }
}
