//! A host's own function table, and loading a library that exports one.
//!
//! The host declares its table as a `#[repr(C)]` struct that starts with a
//! [`TableHeader`] (its version and its size in bytes, as the plugin built
//! it) followed by nullable `extern "C"` function pointers and plain
//! integers, and implements [`FunctionTable`] for it: the name of the
//! function the library exports to hand it over (`const T* NAME(void)`), the
//! version expected and the smallest size accepted. A library goes through
//! the engine's stages, nothing new: a private copy ([`ShadowDir`]), the ELF
//! validator looking for that entry point ([`precheck_entry`]), the loader
//! with its constructors under the crash guard ([`Library`]), and the entry
//! point's call under the guard. Then the table is copied out of the plugin
//! (a bad pointer is a refusal, not a crash) and checked: the version, the
//! size, and every function the host names either present and in the
//! library's code or, if optional, NULL.
//!
//! [`precheck_entry`]: crate::plugin::precheck::precheck_entry

use std::ffi::c_void;
use std::fmt;
use std::path::Path;

use crate::guard;
use crate::outcome::Rejection;
use crate::plugin::load::Library;
use crate::plugin::shadow::ShadowDir;

/// The first bytes of every host table: which version of the table the
/// plugin was built against, and how many bytes its table has (so a host
/// can accept an older, shorter one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableHeader {
    pub version: u32,
    pub size: u32,
}

/// One function of a table, as [`FunctionTable::functions`] lists it.
pub struct Function {
    pub name: &'static str,
    /// The pointer as the table holds it (0 for NULL).
    pub address: usize,
    /// Whether a NULL here refuses the library.
    pub required: bool,
}

/// A host's function table.
///
/// # Safety
/// The type must be `#[repr(C)]`, start with a [`TableHeader`], and every
/// bit pattern of zeroes must be a valid value of it (integers, and
/// `Option`s of `extern "C"` function pointers): the engine builds a value
/// by copying the plugin's bytes over a zeroed one. Calling its functions
/// (see [`Entered::call`](super::Entered::call)) is up to the host, who
/// declared their types.
pub unsafe trait FunctionTable: Copy + Send + Sync + 'static {
    /// The function the library exports to hand over its table:
    /// `const T* NAME(void)` in C.
    const ENTRY: &'static str;
    /// The table version the host speaks; a library with another is refused.
    const VERSION: u32;
    /// The smallest table (in bytes) accepted: by default the whole type.
    /// A smaller value accepts an older plugin's shorter table; the members
    /// past its end read as zero (NULL).
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    /// The table's functions, to check each against the library.
    fn functions(&self) -> Vec<Function>;
}

/// Why a library was not loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The build output could not be read or copied.
    Io(String),
    /// A stage of the engine's pipeline refused it (see [`Rejection`]).
    Rejected(Rejection),
    /// Its table is not what the host expects: what was expected and what
    /// was found.
    Table(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Io(why) | Refusal::Table(why) => f.write_str(why),
            Refusal::Rejected(rejection) => write!(f, "{rejection}"),
        }
    }
}

impl std::error::Error for Refusal {}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Refusal {
        Refusal::Rejected(r)
    }
}

/// The largest table read: a size past this is garbage.
const MAX_TABLE: usize = 64 * 1024;

/// Loads the library at `path` (a build output, copied first into `shadow`
/// as copy number `serial`) and returns it with its table, checked.
/// The loaded library, its table, and the bytes it was loaded from.
pub(super) fn load<T: FunctionTable>(
    shadow: &ShadowDir,
    serial: u64,
    path: &Path,
) -> Result<(Library, T, Vec<u8>), Refusal> {
    let bytes = std::fs::read(path)
        .map_err(|e| Refusal::Io(format!("cannot read {}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin.so".into());
    let copy = shadow.store(serial, &name, &bytes).map_err(Refusal::Io)?;
    let library = Library::open_with_entry(copy, T::ENTRY)?;
    let table = library.entry_table(T::ENTRY)?;
    let table = read::<T>(table, &library)?;
    Ok((library, table, bytes))
}

/// Copies and checks the table at `at`, which plugin code handed over.
fn read<T: FunctionTable>(at: *const c_void, library: &Library) -> Result<T, Refusal> {
    let unreadable = |fault: guard::Fault| {
        Refusal::Table(format!(
            "{} returned {at:p}, which cannot be read: {}",
            T::ENTRY,
            fault.describe()
        ))
    };
    let header_len = std::mem::size_of::<TableHeader>();
    // SAFETY: reads plugin memory under the guard (a bad address is a
    // fault, returned); nothing else runs this library's code now.
    let head = unsafe { guard::copy_from_plugin(at, header_len) }.map_err(unreadable)?;
    // SAFETY: `head` holds a whole header; any bits are valid integers.
    let header = unsafe { head.as_ptr().cast::<TableHeader>().read_unaligned() };
    if header.version != T::VERSION {
        return Err(Refusal::Table(format!(
            "{}: expected table version {}, found {}",
            T::ENTRY,
            T::VERSION,
            header.version
        )));
    }
    let size = header.size as usize;
    let min = T::MIN_SIZE.max(header_len);
    if size < min || size > MAX_TABLE {
        return Err(Refusal::Table(format!(
            "{}: expected a table of {min} to {MAX_TABLE} bytes, found a size of {size}",
            T::ENTRY
        )));
    }
    let take = size.min(std::mem::size_of::<T>());
    // SAFETY: as for the header.
    let bytes = unsafe { guard::copy_from_plugin(at, take) }.map_err(unreadable)?;
    let mut table = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: `take` is at most the size of `T`; zeroes and then the
    // plugin's bytes are a valid `T` by `FunctionTable`'s contract.
    let table = unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), table.as_mut_ptr().cast::<u8>(), take);
        table.assume_init()
    };
    let mut missing = Vec::new();
    for f in table.functions() {
        if f.address == 0 {
            if f.required {
                missing.push(f.name);
            }
        } else if !library.in_code(f.address) {
            return Err(Refusal::Table(format!(
                "{}: expected {} to point into the library's code, found {:#x}",
                T::ENTRY,
                f.name,
                f.address
            )));
        }
    }
    if !missing.is_empty() {
        return Err(Refusal::Rejected(Rejection::NullFunctions(missing)));
    }
    Ok(table)
}
