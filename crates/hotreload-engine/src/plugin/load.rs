//! Stage five: map a checked copy and ask it for its table.
//!
//! All `dlopen`/`dlsym`/`dlclose` of plugin libraries happen here, through
//! libloading. The library is opened with `RTLD_NOW`, so an unresolved symbol
//! is a load error now rather than a crash on the first call, and with
//! `RTLD_LOCAL`, so two versions loaded side by side never resolve each
//! other's symbols.

use std::path::Path;

use hotreload_abi::{GET_API_EXT_SYMBOL, GET_API_NAME, GET_API_SYMBOL, GetApiFn, LogicApi};
use libloading::os::unix::{Library as RawLibrary, RTLD_LOCAL, RTLD_NOW};

use crate::guard;
use crate::outcome::Rejection;
use crate::plugin::shadow::ShadowFile;

/// A loaded library and the shadow copy it was loaded from. The copy is
/// removed only after the library is closed.
pub struct Library {
    raw: RawLibrary,
    shadow: ShadowFile,
    /// Where the tables the plugin handed over live, as linked (offsets from
    /// the load base): they sit in writable data, and are meant to.
    tables: std::cell::RefCell<Vec<u64>>,
    /// Where the loader put the library (0 until a table was handed over).
    base: std::cell::Cell<usize>,
}

impl Library {
    /// Maps `shadow` into the process, running its constructors.
    pub fn open(shadow: ShadowFile) -> Result<Library, Rejection> {
        // SAFETY: `dlopen` runs the library's constructors, which is plugin
        // code: libloading marks this unsafe because that code can do
        // anything. The file has passed `precheck` (well-formed ELF for this
        // machine, nothing truncated) and is a private copy nobody else can
        // write, so the loader itself maps exactly the bytes that were checked.
        let raw = unsafe { RawLibrary::open(Some(shadow.path()), RTLD_NOW | RTLD_LOCAL) }.map_err(
            |e| {
                let msg = e.to_string();
                let hint = if msg.contains("failed to map segment") {
                    " (is the temporary folder mounted noexec? set TMPDIR to another folder)"
                } else {
                    ""
                };
                Rejection::NotLoadable(format!("dlopen refused it: {msg}{hint}"))
            },
        )?;
        Ok(Library {
            raw,
            shadow,
            tables: Default::default(),
            base: Default::default(),
        })
    }

    /// Calls `logic_get_api` and copies the table it returns.
    pub fn table(&self) -> Result<LogicApi, Rejection> {
        // SAFETY: the symbol is declared in `include/hotreload.h` as
        // `logic_api_t* logic_get_api(void)`, which `GetApiFn` mirrors; the
        // `Symbol` does not outlive `self.raw`.
        let get = unsafe { self.raw.get::<GetApiFn>(GET_API_SYMBOL) }.map_err(|e| {
            Rejection::MissingEntryPoint(format!(
                "missing entry point: expected an exported function {GET_API_NAME}, found none ({e})"
            ))
        })?;
        // SAFETY: calling into the plugin per the ABI above, under the crash
        // guard; it takes no arguments and returns a pointer that is checked
        // before use.
        let table = unsafe { guard::call_get_api(*get) }.map_err(|fault| {
            // Named while the library is still mapped.
            let place = fault
                .symbol()
                .map(|s| format!(" in {s}"))
                .unwrap_or_default();
            Rejection::Faulted(format!(
                "{GET_API_NAME} faulted: {}{place}",
                fault.describe()
            ))
        })?;
        if table.is_null() {
            return Err(Rejection::NullTable);
        }
        self.remember_table(table as usize);
        // SAFETY: the ABI says a non-NULL result points to a `logic_api_t`
        // that stays valid while the library is loaded; it is copied out
        // (unaligned, so a misaligned table cannot fault) and never read again.
        Ok(unsafe { table.read_unaligned() })
    }

    /// Calls `logic_get_api_ext`, if the library exports it, and copies the
    /// table. `Ok(None)` for a plugin without the extended ABI.
    pub fn ext_table(&self) -> Result<Option<hotreload_abi::LogicApiExt>, Rejection> {
        // SAFETY: `GetApiExtFn` mirrors `logic_api_ext_t* logic_get_api_ext(void)`
        // from the header; the `Symbol` does not outlive `self.raw`.
        let Ok(get) = (unsafe {
            self.raw
                .get::<hotreload_abi::GetApiExtFn>(GET_API_EXT_SYMBOL)
        }) else {
            return Ok(None);
        };
        // SAFETY: calling into the plugin per the ABI, under the crash guard.
        let table = unsafe { guard::call_get_api_ext(*get) }.map_err(|fault| {
            let place = fault
                .symbol()
                .map(|s| format!(" in {s}"))
                .unwrap_or_default();
            Rejection::Faulted(format!(
                "logic_get_api_ext faulted: {}{place}",
                fault.describe()
            ))
        })?;
        if table.is_null() {
            return Ok(None);
        }
        self.remember_table(table as usize);
        // SAFETY: the ABI says a non-NULL result points to a table that is
        // valid while the library is loaded, `size` bytes long.
        unsafe { crate::plugin::ext::copy_table(table) }.map(Some)
    }

    fn remember_table(&self, address: usize) {
        // SAFETY: `Dl_info` is plain data; all-zero is valid, and `dladdr`
        // only reads the loader's tables for the address.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::dladdr(address as *const std::ffi::c_void, &mut info) } != 0 {
            let offset = address.wrapping_sub(info.dli_fbase as usize) as u64;
            self.tables.borrow_mut().push(offset);
            self.base.set(info.dli_fbase as usize);
        }
    }

    /// Where the plugin's tables live, as linked.
    pub fn table_offsets(&self) -> Vec<u64> {
        self.tables.borrow().clone()
    }

    /// The address ranges of `spans` (as linked, from `precheck`) where the
    /// loader put this library.
    pub fn mapped_ranges(&self, spans: &[(u64, u64)]) -> Vec<(usize, usize)> {
        let base = self.base.get();
        if base == 0 {
            return Vec::new();
        }
        spans
            .iter()
            .map(|&(start, end)| (base + start as usize, base + end as usize))
            .collect()
    }

    /// Closes the library and says whether its code really left the process.
    /// `dlclose` may keep a library mapped: a Rust library that registered a
    /// thread-local destructor, or one linked with `-z nodelete`, stays.
    pub fn close(self) -> Closed {
        let Library { raw, shadow, .. } = self;
        let close_error = raw.close().err().map(|e| e.to_string());
        let mapped_bytes = mapped_bytes(shadow.path());
        Closed {
            close_error,
            still_mapped: mapped_bytes > 0,
            mapped_bytes,
        }
    }

    pub fn path(&self) -> &Path {
        self.shadow.path()
    }
}

pub struct Closed {
    pub close_error: Option<String>,
    pub still_mapped: bool,
    /// How much of the process's address space the library still takes.
    pub mapped_bytes: u64,
}

/// Whether a file is mapped into this process, per `/proc/self/maps`.
pub fn is_mapped(path: &Path) -> bool {
    mapped_bytes(path) > 0
}

/// The bytes of this process's mappings of `path`, per `/proc/self/maps`
/// (0 if none, or if the maps cannot be read).
pub fn mapped_bytes(path: &Path) -> u64 {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let Some(path) = path.to_str() else {
        return 0;
    };
    maps.lines()
        .filter(|line| line.ends_with(path))
        .filter_map(|line| {
            let range = line.split_whitespace().next()?;
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            end.checked_sub(start)
        })
        .sum()
}
