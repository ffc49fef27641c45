//! Stage five: map a checked copy, run its constructors, ask it for its
//! table, and later run its destructors and unmap it.
//!
//! The copy is validated again here, from the file the loader will open
//! (see [`crate::plugin::elf`]), so whoever opens a library (the host, a
//! trial's probe, a bench) maps only bytes that passed. The loader itself
//! is reached through [`crate::plugin::dl`]: `dlopen` with `RTLD_NOW |
//! RTLD_LOCAL`, `dlinfo` for the load base, `dlclose`; never `dlsym`. The
//! entry points come from the validated symbol table plus the load base,
//! and must land in the library's code.
//!
//! The library's own constructors and destructors are plugin code that the
//! loader would run unguarded, with its lock held. The copy's dynamic
//! section hides them from the loader (see [`Image::neutralized`]), and
//! this module runs them under the crash guard instead, in the loader's
//! order: the constructors right after `dlopen`, the destructors right
//! before `dlclose`.

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hotreload_abi::{GET_API_NAME, GetApiExtFn, GetApiFn, LogicApi, PluginRecord};

use crate::guard::watchdog::{CallWatch, Watchdog};
use crate::guard::{self, ConstructorFn, DestructorFn, Fault};
use crate::outcome::Rejection;
use crate::plugin::dl::Handle;
use crate::plugin::elf::{Code, Image};
use crate::plugin::ext::Ext;
use crate::plugin::precheck::{precheck, precheck_entry};
use crate::plugin::record;
use crate::plugin::shadow::ShadowFile;

/// A loaded library and the shadow copy it was loaded from. The copy is
/// removed only after the library is closed.
pub struct Library {
    /// `None` once closed.
    handle: Option<Handle>,
    image: Image,
    /// Where the loader put the library: a linked address plus this.
    base: usize,
    /// Whether the constructors ran to the end (so the destructors are due).
    constructed: bool,
    /// Where the tables the plugin handed over live, as linked (offsets from
    /// the load base): they sit in writable data, and are meant to.
    tables: RefCell<Vec<u64>>,
    shadow: ShadowFile,
}

thread_local! {
    /// What interrupts this thread's load-time plugin calls (constructors,
    /// entry points, destructors) that run too long, and after how long;
    /// see [`watch_loads`].
    static LOAD_WATCH: RefCell<Option<(CallWatch, Duration)>> = const { RefCell::new(None) };
}

/// While the returned value lives, plugin code that this thread's loads and
/// unloads run (constructors, `logic_get_api`, destructors) is interrupted
/// after `timeout`, as a fault: a constructor that never returns would
/// otherwise stop this thread for good, silently. Drop it on this thread,
/// after its last load.
pub fn watch_loads(timeout: Duration) -> Result<LoadWatch, String> {
    let (watchdog, calls) = Watchdog::for_this_thread(timeout)?;
    LOAD_WATCH.with(|w| *w.borrow_mut() = Some((calls, timeout)));
    Ok(LoadWatch {
        _watchdog: watchdog,
        _not_send: std::marker::PhantomData,
    })
}

/// See [`watch_loads`].
pub struct LoadWatch {
    _watchdog: Watchdog,
    /// It watches the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for LoadWatch {
    fn drop(&mut self) {
        LOAD_WATCH.with(|w| *w.borrow_mut() = None);
    }
}

/// Runs one guarded plugin call under this thread's load watchdog, if any.
fn watched<T>(call: impl FnOnce() -> T) -> T {
    LOAD_WATCH.with(|w| {
        if let Some((calls, _)) = &*w.borrow() {
            calls.begin(Instant::now());
        }
    });
    let out = call();
    LOAD_WATCH.with(|w| {
        if let Some((calls, _)) = &*w.borrow() {
            calls.end();
        }
    });
    out
}

/// How a guarded call into the library ended badly, named while the
/// library is still mapped.
fn described(fault: &Fault) -> String {
    let what = if fault.is_timeout() {
        let after = LOAD_WATCH.with(|w| w.borrow().as_ref().map(|(_, t)| t.as_millis()));
        match after {
            // As a hanging tick says it.
            Some(ms) => format!("timeout after {ms} ms"),
            None => fault.describe(),
        }
    } else {
        fault.describe()
    };
    match fault.symbol() {
        Some(place) => format!("{what} in {place}"),
        None => what,
    }
}

impl Library {
    /// Checks `shadow`, maps it into the process and runs its constructors
    /// under the crash guard.
    pub fn open(shadow: ShadowFile) -> Result<Library, Rejection> {
        Library::open_checked(shadow, precheck)
    }

    /// [`Library::open`] for a library that exports a host's own entry
    /// point, `entry`, instead of `logic_get_api` (see `crate::embed`).
    pub fn open_with_entry(shadow: ShadowFile, entry: &str) -> Result<Library, Rejection> {
        Library::open_checked(shadow, |bytes| precheck_entry(bytes, entry))
    }

    fn open_checked(
        shadow: ShadowFile,
        check: impl FnOnce(&[u8]) -> Result<Image, Rejection>,
    ) -> Result<Library, Rejection> {
        let path = shadow.path().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|e| {
            Rejection::NotLoadable(format!(
                "cannot read the private copy {}: {e}",
                path.display()
            ))
        })?;
        let image = check(&bytes)?;
        let hidden = image.neutralized(&bytes);
        if hidden != bytes {
            // A copy written without the host's retagging (by an embedder,
            // a bench): retag it now, so that the loader runs none of the
            // library's code. The copy is private to this process.
            std::fs::write(&path, &hidden).map_err(|e| {
                Rejection::NotLoadable(format!(
                    "cannot write the private copy {}: {e}",
                    path.display()
                ))
            })?;
        }
        // SAFETY: the file passed the validator, which checks everything the
        // loader reads, refuses indirect functions and retags the library's
        // own constructors, so the loader runs no code of this library; it
        // is a private copy nobody else writes. Its dependencies'
        // constructors run, as with any library.
        let handle = unsafe { Handle::open(&path) }.map_err(|e| {
            let text = e.to_string();
            let hint = if text.contains("failed to map segment") {
                " (is the temporary folder mounted noexec? set TMPDIR to another folder)"
            } else {
                ""
            };
            Rejection::NotLoadable(format!("dlopen refused it: {text}{hint}"))
        })?;
        let mut library = Library {
            handle: Some(handle),
            image,
            base: 0,
            constructed: false,
            tables: Default::default(),
            shadow,
        };
        library.locate()?;
        library.construct()?;
        Ok(library)
    }

    /// The load base, from the loader; its dynamic section must be where the
    /// validated file puts it, or the loader did not map what was checked.
    fn locate(&mut self) -> Result<(), Rejection> {
        let Some(handle) = &self.handle else {
            return Err(Rejection::NotLoadable("the library is closed".into()));
        };
        let map = handle
            .link_map()
            .map_err(|e| Rejection::NotLoadable(format!("dlinfo failed: {e}")))?;
        let expected = map.base.wrapping_add(self.image.dynamic as usize);
        if map.dynamic != expected {
            return Err(Rejection::NotLoadable(format!(
                "expected the loader to map the dynamic section at {expected:#x} (base {:#x} + {:#x}), found it at {:#x}",
                map.base, self.image.dynamic, map.dynamic
            )));
        }
        self.base = map.base;
        Ok(())
    }

    /// The run-time address of a constructor or destructor, checked to be
    /// in this library's code: the validator knows where each is linked,
    /// the slots of an array hold them once relocated.
    fn code_address(&self, code: &Code) -> Result<usize, String> {
        let linked = match code {
            Code::Function(at) => *at,
            Code::Slot { array, index, at } => {
                let slot = self.base.wrapping_add(*at as usize) as *const usize;
                // SAFETY: the validator placed the slot inside one of the
                // library's loaded segments, and the library is mapped.
                let value = unsafe { slot.read_unaligned() };
                let linked = value.wrapping_sub(self.base) as u64;
                if !self.image.in_code(linked, 1) {
                    return Err(format!(
                        "{array}[{index}]: expected the address of a function in the library's code, found {value:#x}"
                    ));
                }
                linked
            }
        };
        Ok(self.base.wrapping_add(linked as usize))
    }

    fn construct(&mut self) -> Result<(), Rejection> {
        for code in self.image.init.clone() {
            let at = self.code_address(&code).map_err(Rejection::NotLoadable)?;
            let args = ProgramArguments::copy();
            // SAFETY: `at` is in the library's mapped code (checked above);
            // constructors have this type in every ELF ABI. `argv` and
            // `envp` are NULL-terminated arrays of C strings that outlive
            // the call.
            let result = watched(|| unsafe {
                let f = std::mem::transmute::<usize, ConstructorFn>(at);
                guard::call_constructor(f, args.argc(), args.argv.as_ptr(), args.envp.as_ptr())
            });
            if let Err(fault) = result {
                return Err(Rejection::Faulted(format!(
                    "a library constructor faulted: {}",
                    described(&fault)
                )));
            }
        }
        self.constructed = true;
        Ok(())
    }

    /// Calls `logic_get_api` and copies the table it returns.
    pub fn table(&self) -> Result<LogicApi, Rejection> {
        // A library of another hotreload-plugin ABI is refused before its
        // tables are asked for (they may mean something else there).
        self.plugin_record()?;
        let Some(linked) = self.image.get_api else {
            return Err(Rejection::MissingEntryPoint(format!(
                "missing entry point: expected an exported function {GET_API_NAME}, found none"
            )));
        };
        // SAFETY: `linked` is a function in the library's code (validated),
        // mapped at `base`; `include/hotreload.h` declares it as
        // `logic_api_t* logic_get_api(void)`, which `GetApiFn` mirrors. It is
        // called under the crash guard, and its result checked before use.
        let table = watched(|| unsafe {
            let get = std::mem::transmute::<usize, GetApiFn>(self.base + linked as usize);
            guard::call_get_api(get)
        })
        .map_err(|fault| {
            Rejection::Faulted(format!("{GET_API_NAME} faulted: {}", described(&fault)))
        })?;
        if table.is_null() {
            return Err(Rejection::NullTable);
        }
        self.remember_table(table as usize);
        // SAFETY: the library is loaded and nothing else runs its code now;
        // a pointer that does not point to readable memory faults inside
        // the guard.
        let bytes =
            unsafe { guard::copy_from_plugin(table.cast(), std::mem::size_of::<LogicApi>()) }
                .map_err(|fault| {
                    Rejection::Faulted(format!(
                        "{GET_API_NAME} returned {table:p}, which cannot be read: {}",
                        fault.describe()
                    ))
                })?;
        // SAFETY: `bytes` holds a whole `logic_api_t`, read unaligned; every
        // bit pattern is a valid value of its integer and nullable
        // function-pointer fields.
        Ok(unsafe { bytes.as_ptr().cast::<LogicApi>().read_unaligned() })
    }

    /// Calls `logic_get_api_ext`, if the library exports it, and copies the
    /// table. `Ok(None)` for a plugin without the extended ABI.
    pub fn ext_table(&self) -> Result<Option<hotreload_abi::LogicApiExt>, Rejection> {
        let Some(linked) = self.image.get_api_ext else {
            return Ok(None);
        };
        // SAFETY: as for `table`, with `logic_api_ext_t* logic_get_api_ext(void)`.
        let table = watched(|| unsafe {
            let get = std::mem::transmute::<usize, GetApiExtFn>(self.base + linked as usize);
            guard::call_get_api_ext(get)
        })
        .map_err(|fault| {
            Rejection::Faulted(format!("logic_get_api_ext faulted: {}", described(&fault)))
        })?;
        if table.is_null() {
            return Ok(None);
        }
        self.remember_table(table as usize);
        // SAFETY: the ABI says a non-NULL result points to a table that is
        // valid while the library is loaded, `size` bytes long.
        unsafe { crate::plugin::ext::copy_table(table) }.map(Some)
    }

    /// Calls the host's own entry point the library was opened with (see
    /// [`Library::open_with_entry`]), `const void* name(void)`, under the
    /// guard, and returns the table address it gave: not NULL, not yet read.
    pub fn entry_table(&self, name: &str) -> Result<*const std::ffi::c_void, Rejection> {
        let Some(linked) = self.image.entry else {
            return Err(Rejection::MissingEntryPoint(format!(
                "missing entry point: expected an exported function {name}, found none"
            )));
        };
        // SAFETY: `linked` is a function in the library's code (validated),
        // mapped at `base`; the host's contract for its table
        // (`embed::FunctionTable`) declares it `const T* name(void)`. It is
        // called under the crash guard, and its result checked before use.
        let table = watched(|| unsafe {
            let get = std::mem::transmute::<usize, guard::GetPtrFn>(self.base + linked as usize);
            guard::call_get_table(get)
        })
        .map_err(|fault| Rejection::Faulted(format!("{name} faulted: {}", described(&fault))))?;
        if table.is_null() {
            return Err(Rejection::NullTable);
        }
        self.remember_table(table as usize);
        Ok(table)
    }

    /// Where the loader put the library: from its lowest segment's start to
    /// its highest one's end.
    pub fn span(&self) -> Option<(usize, usize)> {
        let ranges = self.mapped_ranges(&self.image.spans);
        let start = ranges.iter().map(|r| r.0).min()?;
        let end = ranges.iter().map(|r| r.1).max()?;
        Some((start, end))
    }

    /// Whether `address` (as mapped) is in the library's code.
    pub fn in_code(&self, address: usize) -> bool {
        self.image
            .in_code(address.wrapping_sub(self.base) as u64, 1)
    }

    /// [`Library::ext_table`], checked against the state's size and, for a
    /// library built with the `hotreload-plugin` crate, against its record's
    /// layout hash. `Ok(None)` for a plugin without the extended ABI.
    pub fn checked_ext(&self, state_size: usize) -> Result<Option<Ext>, Rejection> {
        let ext = match self.ext_table()? {
            // SAFETY: the table came from this library, whose schema names
            // stay readable while it is loaded (for as long as `self`).
            Some(t) => Some(unsafe { crate::plugin::ext::check(&t, state_size) }?),
            None => None,
        };
        if let Some(record) = self.plugin_record()? {
            record::check_layout(&record, ext.as_ref(), state_size)?;
        }
        Ok(ext)
    }

    /// The `hotreload_plugin` record, if the library exports one; one of
    /// another ABI version is refused.
    pub fn plugin_record(&self) -> Result<Option<PluginRecord>, Rejection> {
        let Some(linked) = self.image.plugin_record else {
            return Ok(None);
        };
        // It sits in writable data, and is meant to.
        if !self.tables.borrow().contains(&linked) {
            self.tables.borrow_mut().push(linked);
        }
        // SAFETY: the address is the validated symbol's, in this loaded
        // library; the read goes through the crash guard.
        unsafe { record::read(self.base + linked as usize) }.map(Some)
    }

    /// The panic that ended a call of this library's, when it was built
    /// with the `hotreload-plugin` crate and recorded one (`panic at
    /// src/lib.rs:12:9: …`). Asked after a fault, while still loaded.
    pub fn recorded_panic(&self) -> Option<String> {
        self.plugin_record()
            .ok()
            .flatten()
            .as_ref()
            .and_then(record::panic_of)
    }

    /// Remembers a table the plugin handed over, when it lies in the
    /// library (a plugin may hand over heap memory too).
    fn remember_table(&self, address: usize) {
        let offset = address.wrapping_sub(self.base) as u64;
        if self
            .image
            .spans
            .iter()
            .any(|&(start, end)| start <= offset && offset < end)
        {
            self.tables.borrow_mut().push(offset);
        }
    }

    /// Where the plugin's tables live, as linked.
    pub fn table_offsets(&self) -> Vec<u64> {
        self.tables.borrow().clone()
    }

    /// The address ranges of `spans` (as linked, from `precheck`) where the
    /// loader put this library.
    pub fn mapped_ranges(&self, spans: &[(u64, u64)]) -> Vec<(usize, usize)> {
        spans
            .iter()
            .map(|&(start, end)| (self.base + start as usize, self.base + end as usize))
            .collect()
    }

    /// Runs the destructors (under the guard) and closes the library, and
    /// says whether its code really left the process. `dlclose` may keep a
    /// library mapped: a Rust library that registered a thread-local
    /// destructor, or one linked with `-z nodelete`, stays.
    pub fn close(mut self) -> Closed {
        let (destructor_fault, close_error) = self.unload();
        let mapped_bytes = mapped_bytes(self.shadow.path());
        Closed {
            destructor_fault,
            close_error,
            still_mapped: mapped_bytes > 0,
            mapped_bytes,
            note: None,
        }
    }

    /// Runs the destructors (under the guard) and closes the library,
    /// without looking whether its code left the process: for a throwaway
    /// process, a trial's probe, which exits next (a library that stays
    /// mapped is found when the host itself retires the version, see
    /// [`Library::close`]). The fault of a destructor, if one faulted.
    pub fn discard(mut self) -> Option<String> {
        self.unload().0
    }

    /// Runs the library's destructors under the guard, once; a fault in one
    /// stops the rest (they would run on whatever state it left), and is
    /// returned. The library stays mapped: a destructor may have started a
    /// thread that runs its code, which the caller checks for before
    /// [`Library::close`] unmaps it.
    pub fn destruct(&mut self) -> Option<String> {
        let mut fault = None;
        // A library the loader never unmaps keeps its statics alive: its
        // destructors would run on data still in use. The loader runs
        // those at exit; the host lets them be.
        if self.constructed && !self.image.nodelete {
            for code in self.image.fini.clone() {
                let at = match self.code_address(&code) {
                    Ok(at) => at,
                    Err(why) => {
                        fault = Some(why);
                        break;
                    }
                };
                // SAFETY: `at` is in the library's mapped code (checked
                // above); destructors take no arguments.
                let result = watched(|| unsafe {
                    guard::call_destructor(std::mem::transmute::<usize, DestructorFn>(at))
                });
                if let Err(f) = result {
                    fault = Some(described(&f));
                    break;
                }
            }
        }
        self.constructed = false;
        fault
    }

    /// The destructors (if [`Library::destruct`] has not run them), then
    /// `dlclose`; once.
    fn unload(&mut self) -> (Option<String>, Option<String>) {
        let fault = self.destruct();
        let close_error = self.handle.take().and_then(|handle| {
            // SAFETY: the library's code and data are not used after this:
            // the tick loop handed this version back before it was closed,
            // and this type hands out no pointers into it.
            unsafe { handle.close() }.err().map(|e| e.to_string())
        });
        (fault, close_error)
    }

    pub fn path(&self) -> &Path {
        self.shadow.path()
    }
}

impl Drop for Library {
    /// A library dropped without [`Library::close`] (a version refused
    /// after loading) is unloaded the same way.
    fn drop(&mut self) {
        let _ = self.unload();
    }
}

pub struct Closed {
    /// A destructor that faulted, with where; the library was unloaded
    /// anyway.
    pub destructor_fault: Option<String>,
    pub close_error: Option<String>,
    pub still_mapped: bool,
    /// How much of the process's address space the library still takes.
    pub mapped_bytes: u64,
    /// What the unload found left behind and dealt with (an isolated
    /// worker's: timers plugin code armed, deleted before its code was
    /// unmapped), for a line.
    pub note: Option<String>,
}

/// The program's arguments and environment as the loader hands them to
/// constructors: the strings as they were at the first load (kept for the
/// life of the process), the pointer arrays copied afresh for each call.
/// Code that scribbles over what it was handed (a corrupt constructor
/// writing through its third argument) damages a copy, not the host's own
/// `environ`. Constructors that read the environment with `getenv` see the
/// live one.
struct ProgramArguments {
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

impl ProgramArguments {
    fn copy() -> ProgramArguments {
        struct Strings {
            args: Vec<CString>,
            vars: Vec<CString>,
        }
        static STRINGS: OnceLock<Strings> = OnceLock::new();
        let strings = STRINGS.get_or_init(|| Strings {
            args: std::env::args_os()
                .filter_map(|a| CString::new(a.as_bytes()).ok())
                .collect(),
            vars: std::env::vars_os()
                .filter_map(|(k, v)| {
                    let mut entry = k.as_bytes().to_vec();
                    entry.push(b'=');
                    entry.extend_from_slice(v.as_bytes());
                    CString::new(entry).ok()
                })
                .collect(),
        });
        let terminated = |strings: &[CString]| -> Vec<*const c_char> {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        ProgramArguments {
            argv: terminated(&strings.args),
            envp: terminated(&strings.vars),
        }
    }

    fn argc(&self) -> c_int {
        c_int::try_from(self.argv.len().saturating_sub(1)).unwrap_or(c_int::MAX)
    }
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
