//! The system loader behind safe types: `dlopen`, `dlinfo`, `dlclose` and
//! `dlerror`, and nothing else. No symbol is ever looked up by name here:
//! `dlsym` walks the library's hash tables, and the host finds its entry
//! points from its own checked parse of the file instead (see
//! [`crate::plugin::elf`]).
//!
//! Every library is opened with `RTLD_NOW | RTLD_LOCAL`: `RTLD_NOW`, so an
//! unresolved symbol is a load error now rather than a crash at its first
//! call; `RTLD_LOCAL`, so two versions loaded side by side never resolve
//! each other's symbols.
//!
//! A failure carries `dlerror()`'s text, read on the same thread right after
//! the failed call (the text is per thread and the next loader call replaces
//! it). When there is none, the error says so and gives `errno`.

use std::ffi::{CStr, CString, c_char, c_void};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

/// A library `dlopen` returned, open until [`Handle::close`].
#[derive(Debug)]
pub struct Handle {
    raw: NonNull<c_void>,
}

// SAFETY: a `dlopen` handle names a process-wide loader object; glibc's
// loader functions take their own lock and may be called with it from any
// thread.
unsafe impl Send for Handle {}

/// A loader call that failed, with what the loader said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DlError {
    /// `dlopen`, `dlinfo`, `dlclose`.
    pub call: &'static str,
    /// `dlerror()`'s text, if it had any.
    pub message: Option<String>,
    /// `errno` right after the call, for when `dlerror()` had nothing.
    pub errno: i32,
}

impl fmt::Display for DlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => f.write_str(message),
            None => write!(
                f,
                "{} failed and dlerror() said nothing (errno {}: {})",
                self.call,
                self.errno,
                std::io::Error::from_raw_os_error(self.errno)
            ),
        }
    }
}

impl std::error::Error for DlError {}

/// The public head of glibc's `struct link_map` (`<link.h>`): these five
/// members are documented and fixed; the loader's private ones follow them.
#[repr(C)]
struct LinkMapHead {
    l_addr: usize,
    l_name: *const c_char,
    l_ld: *const c_void,
    l_next: *const c_void,
    l_prev: *const c_void,
}

/// Where the loader put a library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkMap {
    /// The load base (`l_addr`): a linked address plus this is where it is.
    pub base: usize,
    /// The run-time address of its dynamic section (`l_ld`).
    pub dynamic: usize,
    /// The file name the loader knows it by (`l_name`).
    pub name: String,
}

impl Handle {
    /// Maps `path` into the process with `RTLD_NOW | RTLD_LOCAL`.
    ///
    /// # Safety
    /// `dlopen` walks the file's program headers, dynamic section, symbol
    /// and hash tables, version tables and relocations, writes where the
    /// relocations say, and runs code: the indirect-function resolvers its
    /// relocations name and the constructors of the library and of every
    /// dependency it brings in. A malformed file can make any of that crash
    /// or corrupt the process. The caller must have checked that the file
    /// holds nothing the loader could trip over (see `plugin::elf`, which
    /// also makes sure the library's own constructors are left to the
    /// caller), that nobody else can change it until it is closed, and
    /// accept that its dependencies' constructors run.
    pub unsafe fn open(path: &Path) -> Result<Handle, DlError> {
        let name = CString::new(path.as_os_str().as_bytes()).map_err(|_| DlError {
            call: "dlopen",
            message: Some(format!("the path {} contains a NUL byte", path.display())),
            errno: 0,
        })?;
        clear_error();
        // SAFETY: `name` is a NUL-terminated string that outlives the call;
        // the rest is this function's contract.
        let raw = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        match NonNull::new(raw) {
            Some(raw) => Ok(Handle { raw }),
            None => Err(failed("dlopen")),
        }
    }

    /// Asks the loader where it put the library (`dlinfo(RTLD_DI_LINKMAP)`).
    pub fn link_map(&self) -> Result<LinkMap, DlError> {
        let mut map: *const LinkMapHead = std::ptr::null();
        clear_error();
        // SAFETY: `self.raw` is a live handle (closing consumes `self`), and
        // RTLD_DI_LINKMAP stores one `struct link_map*` through the pointer.
        let status = unsafe {
            libc::dlinfo(
                self.raw.as_ptr(),
                libc::RTLD_DI_LINKMAP,
                (&mut map as *mut *const LinkMapHead).cast(),
            )
        };
        if status != 0 || map.is_null() {
            return Err(failed("dlinfo"));
        }
        // SAFETY: the loader's link map for a live handle, valid until it is
        // closed; only its public head is read, and copied out.
        let head = unsafe { &*map };
        let name = if head.l_name.is_null() {
            String::new()
        } else {
            // SAFETY: `l_name` is a NUL-terminated string the loader owns
            // for as long as the library stays loaded.
            unsafe { CStr::from_ptr(head.l_name) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(LinkMap {
            base: head.l_addr,
            dynamic: head.l_ld as usize,
            name,
        })
    }

    /// Drops this reference to the library; the loader unmaps it when it
    /// was the last one and nothing pins it (`-z nodelete`, a thread-local
    /// destructor, a unique symbol).
    ///
    /// # Safety
    /// Nothing of the library may be used afterwards: no function pointer
    /// into it called, no data read. `dlclose` also runs the destructors
    /// the loader still knows of (the dependencies' that go with it).
    pub unsafe fn close(self) -> Result<(), DlError> {
        clear_error();
        // SAFETY: `self.raw` is a live handle, given up here (`self` is
        // consumed); the rest is this function's contract.
        match unsafe { libc::dlclose(self.raw.as_ptr()) } {
            0 => Ok(()),
            _ => Err(failed("dlclose")),
        }
    }
}

/// Forgets any earlier, unread loader error on this thread, so that the
/// next one read is the next call's.
fn clear_error() {
    // SAFETY: `dlerror` has no preconditions; the text it may return is
    // not used.
    unsafe { libc::dlerror() };
}

/// The error of the loader call that just failed on this thread.
fn failed(call: &'static str) -> DlError {
    // Before anything else can change it.
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: `dlerror` has no preconditions. Its result is NULL or a
    // NUL-terminated string valid until the next loader call on this
    // thread; it is copied at once.
    let text = unsafe { libc::dlerror() };
    let message = (!text.is_null()).then(|| {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    });
    DlError {
        call,
        message,
        errno,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_open_says_what_the_loader_said() {
        let missing = Path::new("/nonexistent/hotreload/no-such-library.so");
        // SAFETY: the file does not exist: nothing is mapped or run.
        let err = unsafe { Handle::open(missing) }.unwrap_err();
        assert_eq!(err.call, "dlopen");
        let text = err.to_string();
        assert!(
            text.contains("no-such-library.so") && text.contains("No such file"),
            "{text}"
        );
    }

    #[test]
    fn without_dlerror_text_the_error_says_so_and_gives_errno() {
        let err = DlError {
            call: "dlopen",
            message: None,
            errno: libc::ENOENT,
        };
        let text = err.to_string();
        assert!(
            text.starts_with("dlopen failed and dlerror() said nothing (errno 2: "),
            "{text}"
        );
    }

    #[test]
    fn the_c_library_can_be_opened_located_and_closed() {
        // SAFETY: the C library is already loaded; opening it again only
        // takes a reference, and nothing of it is used after the close.
        let handle = unsafe { Handle::open(Path::new("libc.so.6")) }.expect("open libc");
        let map = handle.link_map().expect("link map");
        assert!(map.base != 0 && map.dynamic > map.base, "{map:?}");
        assert!(map.name.contains("libc"), "{map:?}");
        // SAFETY: as above.
        unsafe { handle.close() }.expect("close");
    }
}
