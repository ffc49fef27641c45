//! Memory handed to a child process: a memfd the host fills in place and
//! then seals, and the child's read-only mapping of it.
//!
//! A trial hands the probe the current state. Written through a pipe or
//! into a file, a 64 MiB state was copied four times on the reload thread
//! (the snapshot, the state file's form with its checksum, the request,
//! the descriptor); filled in place, it is copied once, straight from the
//! snapshot, and the probe maps those very pages instead of reading them.
//! The seals (no write, grow, shrink or further seal) make the bytes the
//! child maps exactly the ones the host wrote, and only a process that
//! created a memfd can hold one that carries them.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::ptr::NonNull;

use crate::state::snapshot::CopyTarget;

/// The seals a handed-over memfd must carry: nothing can be written, grown,
/// shrunk or unsealed after the host wrote it.
pub const SEALS: i32 =
    libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;

/// A memfd being filled, mapped writable into the host until sealed.
pub struct SealedBuffer {
    file: File,
    map: Option<Mapping>,
    /// Why room could not be made, for [`SealedBuffer::seal`] to say.
    failed: Option<String>,
}

/// A shared mapping of `len` bytes at `ptr`, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps all `len` bytes of `file` (not empty), shared, with `flags`
    /// besides.
    fn new(file: &File, len: usize, prot: i32, flags: i32) -> Result<Mapping, String> {
        // SAFETY: a new mapping chosen by the kernel, of a descriptor this
        // process holds; nothing else is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED | flags,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "cannot map {len} bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        NonNull::new(ptr.cast())
            .map(|ptr| Mapping { ptr, len })
            .ok_or_else(|| "the kernel mapped the memory at address 0".to_owned())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; every slice of it
        // borrowed from its owner has ended (they borrow the owner).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl SealedBuffer {
    /// An empty memfd named `name` (for `/proc`).
    pub fn create(name: &CStr) -> Result<SealedBuffer, String> {
        // SAFETY: `memfd_create` takes a NUL-terminated name and flags; the
        // result, if valid, is a new descriptor owned by nobody else.
        let fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(format!(
                "cannot create a memfd for a child: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(SealedBuffer {
            // SAFETY: `fd` is the fresh descriptor created above.
            file: unsafe { File::from_raw_fd(fd) },
            map: None,
            failed: None,
        })
    }

    /// `size` bytes of zeros to fill, once.
    pub fn fill(&mut self, size: usize) -> Result<&mut [u8], String> {
        if self.map.is_some() {
            return Err("the buffer was filled already".into());
        }
        self.file
            .set_len(size as u64)
            .map_err(|e| format!("cannot size a memfd to {size} bytes: {e}"))?;
        if size == 0 {
            return Ok(&mut []);
        }
        // Every page allocated and mapped now: a snapshot's reader copies
        // into it while holding the lock the tick thread takes, and must
        // not fault in fresh pages there.
        let map = self.map.insert(Mapping::new(
            &self.file,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_POPULATE,
        )?);
        // SAFETY: the mapping is `size` bytes, readable and writable, and
        // borrowed mutably from `self`, which owns it, for the slice's life.
        Ok(unsafe { std::slice::from_raw_parts_mut(map.ptr.as_ptr(), map.len) })
    }

    /// The bytes filled so far: the size asked of [`SealedBuffer::fill`].
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The memfd, unmapped from the host and sealed.
    pub fn seal(mut self) -> Result<File, String> {
        if let Some(why) = self.failed.take() {
            return Err(why);
        }
        // The write seal needs every writable mapping gone.
        self.map = None;
        // SAFETY: adds seals to a memfd this value owns.
        if unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
            return Err(format!(
                "cannot seal a memfd for a child: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(self.file)
    }
}

impl CopyTarget for SealedBuffer {
    fn room(&mut self, size: usize) -> Option<&mut [u8]> {
        if let Err(why) = self.fill(size) {
            self.failed = Some(why);
            return None;
        }
        let Some(map) = self.map.as_ref() else {
            return Some(&mut []);
        };
        // SAFETY: as in `fill`: the mapping this value owns, borrowed
        // mutably from it.
        Some(unsafe { std::slice::from_raw_parts_mut(map.ptr.as_ptr(), map.len) })
    }
}

/// A sealed memfd handed over, mapped read-only by the child.
pub struct SealedMap {
    map: Option<Mapping>,
}

impl SealedMap {
    /// Maps `file`, which must be a memfd carrying [`SEALS`] and hold
    /// exactly `len` bytes.
    pub fn open(file: &File, len: u64) -> Result<SealedMap, String> {
        // SAFETY: `F_GET_SEALS` only reads the descriptor's seals; it fails
        // on anything but a memfd.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & SEALS != SEALS {
            return Err(format!(
                "expected a sealed memfd, found {}",
                if seals < 0 {
                    "another kind of file"
                } else {
                    "an unsealed one"
                }
            ));
        }
        let found = file
            .metadata()
            .map_err(|e| format!("cannot read the memfd's size: {e}"))?
            .len();
        if found != len {
            return Err(format!("expected {len} bytes in the memfd, found {found}"));
        }
        let len = usize::try_from(len).map_err(|_| format!("{len} bytes cannot be mapped"))?;
        Ok(SealedMap {
            map: (len > 0)
                .then(|| Mapping::new(file, len, libc::PROT_READ, 0))
                .transpose()?,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.map {
            // SAFETY: the mapping is readable for its length, and sealed, so
            // no one can change the bytes while they are borrowed.
            Some(map) => unsafe { std::slice::from_raw_parts(map.ptr.as_ptr(), map.len) },
            None => &[],
        }
    }
}
