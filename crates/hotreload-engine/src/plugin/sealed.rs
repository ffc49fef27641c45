//! Memory handed to a child process: a memfd the host writes and then
//! seals, and the child's read-only mapping of it.
//!
//! A trial hands the probe the current state. Written through a pipe or
//! into a file, a 64 MiB state was copied four times on the reload thread
//! (the snapshot, the state file's form with its checksum, the request,
//! the descriptor); written straight from the snapshot into a memfd, it is
//! copied once, and the probe maps those very pages instead of reading them.
//! The seals (no write, grow, shrink or further seal) make the bytes the
//! child maps exactly the ones the host wrote, and only a process that
//! created a memfd can hold one that carries them.
//!
//! A large state is handed over as a [`TrialImage`] instead: one memfd kept
//! from trial to trial, in which the host rewrites only the pages that
//! changed since the last trial, and which each probe gets read-only.
//! Its size is sealed, so no mapping of it can lose pages; its bytes
//! change only between trials, one of which runs at a time.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::ptr::NonNull;

use crate::state::State;
use crate::state::snapshot::CopyTarget;

/// The seals a handed-over memfd must carry: nothing can be written, grown,
/// shrunk or unsealed after the host wrote it.
pub const SEALS: i32 =
    libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;

/// The seals a [`TrialImage`] carries, and all a child needs of the state
/// it maps: its size is fixed (a shrink would turn the child's reads past
/// the new end into SIGBUS).
pub const SIZE_SEALS: i32 = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;

/// A memfd being filled, then sealed. The host writes it through the
/// descriptor and never maps it: a mapping (and its removal before the
/// seal) of a large state takes the address space's lock, which the tick
/// thread needs for the state's own page protections.
pub struct SealedBuffer {
    file: File,
    len: usize,
}

/// A shared mapping of `len` bytes at `ptr`, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps all `len` bytes of `file` (not empty), shared and read-only.
    fn new(file: &File, len: usize) -> Result<Mapping, String> {
        // SAFETY: a new mapping chosen by the kernel, of a descriptor this
        // process holds; nothing else is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
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
            len: 0,
        })
    }

    /// Sizes it to `size` bytes, every page allocated now, so that the
    /// writes after it only copy.
    pub fn reserve(&mut self, size: usize) -> Result<(), String> {
        self.file
            .set_len(size as u64)
            .map_err(|e| format!("cannot size a memfd to {size} bytes: {e}"))?;
        if size > 0 {
            // SAFETY: allocates the memfd's pages; no memory of this process
            // is touched.
            let r = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, size as libc::off_t) };
            if r != 0 {
                return Err(format!(
                    "cannot allocate {size} bytes for a child: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        self.len = size;
        Ok(())
    }

    /// Writes `bytes` at `offset`.
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        if offset + bytes.len() > self.len {
            return Err(format!(
                "a write of {} bytes at {offset} is past the memfd's {} bytes",
                bytes.len(),
                self.len
            ));
        }
        self.file
            .write_all_at(bytes, offset as u64)
            .map_err(|e| format!("cannot write a memfd for a child: {e}"))
    }

    /// The memfd, sealed.
    pub fn seal(self) -> Result<File, String> {
        self.seal_with(SEALS)
    }

    fn seal_with(self, seals: i32) -> Result<File, String> {
        // SAFETY: adds seals to a memfd this value owns.
        if unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(format!(
                "cannot seal a memfd for a child: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(self.file)
    }
}

/// A trial's copy of the state, kept from one trial to the next: a memfd
/// of the state's size (sealed against resizing), written through its
/// descriptor and never mapped by the host. [`SharedSnapshot::export_into`]
/// brings it up to date, rewriting only the pages that changed since the
/// last trial.
///
/// [`SharedSnapshot::export_into`]: crate::state::snapshot::SharedSnapshot::export_into
#[derive(Default)]
pub struct TrialImage {
    file: Option<File>,
    len: usize,
    /// The image before, of another size, kept for when the state's size
    /// comes back to it (layouts that alternate, a field added and taken
    /// out again): rewritten whole, its pages are already the memfd's, where
    /// a new memfd's must each be allocated and cleared as they are first
    /// written (about half of a 64 MiB image's write here).
    other: Option<(File, usize)>,
    /// The snapshot generation its bytes are of (see `export_into`).
    pub held: Option<u64>,
    failed: Option<String>,
    /// Its modification time when the host last wrote it: a probe cannot
    /// write through the read-only descriptor it gets, but hostile code in
    /// it could open the memfd again, writable, through `/proc`.
    written_at: Option<(i64, i64)>,
}

impl TrialImage {
    /// A read-only descriptor of the image for a child, and its length.
    pub fn hand_out(&self) -> Result<(File, usize), String> {
        let file = self
            .file
            .as_ref()
            .ok_or("the trial image was never filled")?;
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let read_only =
            File::open(&path).map_err(|e| format!("cannot open {path} read-only: {e}"))?;
        Ok((read_only, self.len))
    }

    /// Why the last export into it failed, if it did.
    pub fn failure(&mut self) -> Option<String> {
        self.failed.take()
    }

    fn modified(&self) -> Option<(i64, i64)> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.as_ref()?.metadata().ok()?;
        Some((meta.mtime(), meta.mtime_nsec()))
    }

    /// Notes the image as the host left it, after an export.
    pub fn mark_written(&mut self) {
        self.written_at = self.modified();
    }

    /// Whether something else wrote the image since [`mark_written`]
    /// (a probe's plugin, through `/proc`): then it no longer holds what
    /// the snapshot's bits say, and the next export writes it whole.
    ///
    /// [`mark_written`]: TrialImage::mark_written
    pub fn written_by_another(&self) -> bool {
        self.written_at.is_some() && self.modified() != self.written_at
    }
}

/// The largest image kept aside for its size's return: beyond it, holding
/// a second copy of the state costs more memory than its write saves time.
const KEEP_OTHER_IMAGE_UP_TO: usize = 128 << 20;

impl CopyTarget for TrialImage {
    fn start(&mut self, size: usize) -> Option<()> {
        // Written whole from here: whichever memfd of this size there is
        // takes every byte again, so what a probe may have written into it
        // through `/proc` is gone too.
        if self.file.is_some() && self.len == size {
            return Some(());
        }
        if let Some(previous) = self.file.take() {
            let kept = if self.len <= KEEP_OTHER_IMAGE_UP_TO {
                self.other.replace((previous, self.len))
            } else {
                self.other.take()
            };
            if let Some((file, len)) = kept.filter(|(_, len)| *len == size) {
                self.file = Some(file);
                self.len = len;
                return Some(());
            }
        } else if let Some((file, len)) = self.other.take_if(|(_, len)| *len == size) {
            self.file = Some(file);
            self.len = len;
            return Some(());
        }
        let made = SealedBuffer::create(c"hotreload-trial-image").and_then(|mut buffer| {
            buffer.reserve(size)?;
            buffer.seal_with(SIZE_SEALS)
        });
        match made {
            Ok(file) => {
                self.file = Some(file);
                self.len = size;
                Some(())
            }
            Err(why) => {
                self.failed = Some(why);
                None
            }
        }
    }

    fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Option<()> {
        use std::os::unix::fs::FileExt;
        let file = self.file.as_ref()?;
        if offset + bytes.len() > self.len {
            self.failed = Some(format!(
                "a write of {} bytes at {offset} is past the trial image's {} bytes",
                bytes.len(),
                self.len
            ));
            return None;
        }
        match file.write_all_at(bytes, offset as u64) {
            Ok(()) => Some(()),
            Err(e) => {
                self.failed = Some(format!("cannot write the trial image: {e}"));
                None
            }
        }
    }
}

/// `MADV_POPULATE_READ` (Linux 5.14), which the `libc` crate does not name.
const MADV_POPULATE_READ: libc::c_int = 22;

/// A sealed memfd handed over, mapped read-only by the child.
pub struct SealedMap {
    map: Option<Mapping>,
    file: File,
}

impl SealedMap {
    /// Maps `file`, which must be a memfd sealed at least against resizing
    /// ([`SIZE_SEALS`]; a [`SealedBuffer`] carries all of [`SEALS`]) and
    /// hold exactly `len` bytes.
    pub fn open(file: &File, len: u64) -> Result<SealedMap, String> {
        // SAFETY: `F_GET_SEALS` only reads the descriptor's seals; it fails
        // on anything but a memfd.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & SIZE_SEALS != SIZE_SEALS {
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
            map: (len > 0).then(|| Mapping::new(file, len)).transpose()?,
            file: file
                .try_clone()
                .map_err(|e| format!("cannot keep the memfd: {e}"))?,
        })
    }

    /// A writable state block whose bytes start as these, copied only as
    /// pages are written (see [`State::private_copy_of`]).
    pub fn private_copy(&self) -> Result<State, String> {
        State::private_copy_of(self.file.as_fd(), self.bytes().len())
    }

    /// Maps every page in now, in one call, for a reader about to read
    /// them all (a migration to another layout), where each first read
    /// would take a fault of its own (Linux 5.14; without it, nothing).
    pub fn read_ahead(&self) {
        if let Some(map) = &self.map {
            // SAFETY: advice on this value's own readable mapping of
            // `map.len` bytes; it maps pages in, changing nothing.
            unsafe { libc::madvise(map.ptr.as_ptr().cast(), map.len, MADV_POPULATE_READ) };
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::snapshot::CopyTarget;
    use std::os::unix::fs::MetadataExt;

    fn inode(image: &TrialImage) -> u64 {
        image
            .file
            .as_ref()
            .expect("a file")
            .metadata()
            .expect("stat")
            .ino()
    }

    /// Sizes that alternate (a field added, then taken out) write into the
    /// memfd each size had before, not into a new one; a third size makes
    /// a new one and lets the oldest go.
    #[test]
    fn an_image_of_a_size_seen_before_is_written_into_again() {
        let mut image = TrialImage::default();
        image.start(3 * 4096).expect("start");
        image.write_at(0, &[1; 3 * 4096]).expect("write");
        let first = inode(&image);
        image.start(3 * 4096 + 4).expect("start");
        let second = inode(&image);
        assert_ne!(first, second);
        image.start(3 * 4096).expect("start");
        assert_eq!(inode(&image), first, "the first size's memfd again");
        assert_eq!(image.len, 3 * 4096);
        image.start(3 * 4096 + 4).expect("start");
        assert_eq!(inode(&image), second);
        image.start(5 * 4096).expect("start");
        let third = inode(&image);
        assert!(third != first && third != second);
        image.start(3 * 4096).expect("start");
        assert_ne!(inode(&image), first, "not kept: two sizes back");
        let (handed, len) = image.hand_out().expect("hand out");
        assert_eq!(len, 3 * 4096);
        assert_eq!(handed.metadata().expect("stat").len(), len as u64);
    }
}
