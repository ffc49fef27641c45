//! The state block the host owns on the plugin's behalf.
//!
//! It is allocated once, at the first successful load, zeroed and aligned to a
//! cache line, and it outlives every version of the plugin. Plugins only ever
//! see a raw pointer to it.
//!
//! In isolated mode plugin code runs in worker processes, so the block is
//! shared memory ([`State::shared`]): a memfd the host owns and maps, and
//! hands to each worker, which maps it at the very same address. A pointer
//! the plugin keeps in its state into the state itself therefore means the
//! same thing in every version's worker, as it does in-process.

use std::alloc::{self, Layout};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::pages::{PAGE, WrittenPages};
use super::shared_pages::{SharedBits, WorkerPages};

/// Alignment of the state block: a cache line, and enough for any C type
/// including AVX-512 vectors.
pub const STATE_ALIGN: usize = 64;

pub struct State {
    ptr: NonNull<u8>,
    /// The size the plugin asked for (may be 0).
    size: usize,
    backing: Backing,
    /// Tells blocks apart, for a worker that maps them.
    id: u64,
    /// For a block of its own pages: which of them were written since the
    /// snapshot last looked. Declared after nothing it depends on; dropped
    /// (untracked) in `drop` before the pages are unmapped.
    written: Option<Box<WrittenPages>>,
    /// In a worker, for a tracked block of the host's: this mapping's own
    /// tracking, reported to the host's bitmap around each call.
    worker_pages: Option<Box<WorkerPages>>,
}

/// States larger than this get pages of their own, tracked for writes, so
/// that the snapshot copies only what a tick wrote; smaller ones are
/// copied whole before every tick (1 MiB copies in about 30 µs).
pub const TRACK_ABOVE: usize = 1 << 20;

enum Backing {
    Heap(Layout),
    /// An anonymous private mapping of whole pages, for a state larger than
    /// [`TRACK_ABOVE`].
    Pages {
        len: usize,
    },
    /// Shared memory: the memfd, and the length of the mapping.
    Shared {
        fd: OwnedFd,
        len: usize,
    },
    /// A private (copy-on-write) mapping of a memfd that another process
    /// maps privately too: both start from its bytes, and each one's writes
    /// are its own. An isolated trial's block over the trial image.
    CopyOf {
        fd: OwnedFd,
        len: usize,
    },
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Where shared blocks are placed: a range of the address space that a
/// fresh process leaves free (programs, libraries, heaps and stacks sit far
/// below or above it), so a worker can map a block at the host's address.
const SHARED_BASE: usize = 0x2000_0000_0000;
const SHARED_SPAN: usize = 0x1000_0000_0000;

// SAFETY: `State` owns its allocation exclusively (like a `Box<[u8]>`); nothing
// else holds the pointer between plugin calls, so moving it to another thread
// is sound.
unsafe impl Send for State {}

impl State {
    /// Allocates `size` zeroed bytes. Fails only when the size cannot be
    /// represented or the allocator refuses, both reported, never aborting.
    pub fn zeroed(size: usize) -> Result<State, String> {
        if size > TRACK_ABOVE {
            return State::pages(size, true);
        }
        // A zero-size plugin still gets a valid, unique pointer.
        let layout = Layout::from_size_align(size.max(1), STATE_ALIGN)
            .map_err(|_| format!("state_size {size} is too large to allocate"))?;
        // SAFETY: `layout` has a non-zero size, as `alloc_zeroed` requires.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr =
            NonNull::new(raw).ok_or_else(|| format!("could not allocate {size} bytes of state"))?;
        Ok(State {
            ptr,
            size,
            backing: Backing::Heap(layout),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            written: None,
            worker_pages: None,
        })
    }

    /// [`State::zeroed`] for a state nothing snapshots (a trial's, in the
    /// probe): never tracked, so filling it with the state handed over
    /// costs a copy, not a trap for every page as well.
    pub fn untracked(size: usize) -> Result<State, String> {
        if size > TRACK_ABOVE {
            return State::pages(size, false);
        }
        State::zeroed(size)
    }

    /// [`State::untracked`] for a block about to be written whole (a
    /// trial's copy of a state migrated to a new layout): a large one has
    /// its pages mapped in one call up front, where the writes would take a
    /// fault apiece (16,384 for 64 MiB, about 2 µs each on a VM). Without
    /// the call (Linux before 5.14) the writes fault as usual.
    pub fn untracked_to_fill(size: usize) -> Result<State, String> {
        let state = State::untracked(size)?;
        if let Backing::Pages { len } = state.backing {
            // SAFETY: advice on this block's own mapping of `len` bytes,
            // which is readable and writable: it maps zeroed pages in,
            // changing no byte; a failure changes nothing.
            unsafe { libc::madvise(state.ptr.as_ptr().cast(), len, MADV_POPULATE_WRITE) };
        }
        Ok(state)
    }

    /// `size` zeroed bytes in pages of their own, tracked for writes when
    /// `track` and the crash guard is installed (without it a write to a
    /// read-only page would be a crash, so the snapshot copies such a state
    /// whole).
    fn pages(size: usize, track: bool) -> Result<State, String> {
        let len = size
            .checked_next_multiple_of(PAGE)
            .ok_or_else(|| format!("state_size {size} is too large to allocate"))?;
        // SAFETY: a fresh anonymous private mapping; no address is asked for.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(format!(
                "could not allocate {size} bytes of state: {}",
                std::io::Error::last_os_error()
            ));
        }
        // Huge pages would make every first write of a page split one (and
        // a 2 MiB page's worth of tracking coarser than it needs to be).
        // SAFETY: advice on the mapping just made; failure changes nothing.
        unsafe { libc::madvise(raw, len, libc::MADV_NOHUGEPAGE) };
        let ptr = NonNull::new(raw.cast()).ok_or_else(|| "mapped at address 0".to_owned())?;
        // SAFETY: the mapping is this block's alone, page-aligned, `len`
        // bytes, and is unmapped only in `drop`, after `written` is dropped.
        let written = track
            .then(|| unsafe { WrittenPages::start(ptr.as_ptr(), len) }.ok())
            .flatten()
            .map(Box::new);
        Ok(State {
            ptr,
            size,
            backing: Backing::Pages { len },
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            written,
            worker_pages: None,
        })
    }

    /// Which pages were written since the snapshot last looked, for a block
    /// that is tracked.
    pub fn written_pages(&self) -> Option<&WrittenPages> {
        self.written.as_deref()
    }

    /// `size` zeroed bytes of shared memory (a memfd), mapped at a random
    /// address in a range kept for them, for handing to worker processes
    /// ([`State::shared_fd`], [`State::address`]).
    pub fn shared(size: usize) -> Result<State, String> {
        let page = 4096;
        let len = size
            .max(1)
            .checked_next_multiple_of(page)
            .ok_or_else(|| format!("state_size {size} is too large to allocate"))?;
        // SAFETY: a NUL-terminated name and flags; the result, if valid, is a
        // new descriptor owned by nobody else.
        let raw = unsafe { libc::memfd_create(c"hotreload-state".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(format!(
                "cannot create shared memory for the state: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `raw` is the fresh descriptor created above.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let file = std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?);
        file.set_len(len as u64)
            .map_err(|e| format!("cannot size shared memory of {size} bytes for the state: {e}"))?;
        let ptr = place(fd.as_fd(), len, Sharing::Shared)
            .map_err(|e| format!("cannot map shared memory of {size} bytes for the state: {e}"))?;
        // A large block is tracked for writes here and in every worker, with
        // one bitmap in shared memory (see `shared_pages`); without the
        // crash guard it is copied whole, every so many ticks, as before.
        let written = if size > TRACK_ABOVE {
            SharedBits::create(len / PAGE).ok().and_then(|bits| {
                // SAFETY: the mapping is this block's own in this process,
                // page-aligned, `len` bytes, and is unmapped only in `drop`,
                // after `written` is dropped; a worker maps the memfd, not
                // this mapping.
                unsafe { WrittenPages::start_shared(ptr.as_ptr(), len, bits) }
                    .ok()
                    .map(Box::new)
            })
        } else {
            None
        };
        Ok(State {
            ptr,
            size,
            backing: Backing::Shared { fd, len },
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            written,
            worker_pages: None,
        })
    }

    /// [`State::shared`], its memory file's pages allocated (and so
    /// cleared by the kernel) now, `piece` bytes at a time with `pause`
    /// after each, rather than at the first write of each page: for a
    /// spare block made ahead on a thread of its own (see
    /// [`super::release::Spares`]). A page that cannot be allocated now
    /// is allocated at its first write, as in any shared block.
    pub fn shared_prefilled(
        size: usize,
        piece: usize,
        pause: std::time::Duration,
    ) -> Result<State, String> {
        let state = State::shared(size)?;
        if let Backing::Shared { fd, len } = &state.backing {
            let mut at = 0;
            while at < *len {
                let n = (*len - at).min(piece);
                // SAFETY: `fallocate` on this block's own memfd allocates
                // zeroed pages within its length; it changes no byte.
                if unsafe { libc::fallocate(fd.as_raw_fd(), 0, at as i64, n as i64) } != 0 {
                    break;
                }
                at += n;
                std::thread::sleep(pause);
            }
        }
        Ok(state)
    }

    /// Whether this block is shared memory (an isolated run's).
    pub fn is_shared(&self) -> bool {
        matches!(self.backing, Backing::Shared { .. })
    }

    /// The memfd of a shared block's written-pages bitmap, for a worker
    /// that maps the block (only a large block has one).
    pub fn written_pages_fd(&self) -> Option<BorrowedFd<'_>> {
        self.written.as_ref()?.shared_bits().map(SharedBits::fd)
    }

    /// In a worker: tracks this block's writes for the host, whose
    /// written-pages bitmap is `bits` (see `shared_pages`).
    pub fn report_writes_to(&mut self, bits: OwnedFd) -> Result<(), String> {
        let len = self.mapped_len();
        let bits = SharedBits::map(bits, len / PAGE)?;
        // Only the written pages' bits need to be set: the block starts
        // writable here, as the host's does.
        // SAFETY: this block's mapping, page-aligned, `len` bytes, unmapped
        // only in `drop` after `worker_pages` is dropped.
        let pages = unsafe { WorkerPages::start(self.ptr.as_ptr(), len, bits)? };
        self.worker_pages = Some(Box::new(pages));
        Ok(())
    }

    /// In a worker, before plugin code runs on this block: see
    /// [`WorkerPages::before_call`].
    pub fn before_call(&self) -> Result<(), String> {
        self.worker_pages
            .as_ref()
            .map_or(Ok(()), |p| p.before_call())
    }

    /// A block over a mapping just made, whose writes nothing tracks.
    fn untracked_mapping(ptr: NonNull<u8>, size: usize, backing: Backing) -> State {
        State {
            ptr,
            size,
            backing,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            written: None,
            worker_pages: None,
        }
    }

    /// A block of `size` bytes that starts as the first `size` bytes of
    /// `fd` (the trial image), mapped privately at a random address of the
    /// range kept for shared blocks, where a worker maps the same file
    /// privately too ([`State::map_copy_at`]): neither copies a page until
    /// it writes it, and neither sees the other's writes. For a trial in
    /// isolated mode whose state is carried as it is, so that nothing
    /// copies a large state for it. Never tracked.
    pub fn copy_of(fd: OwnedFd, size: usize) -> Result<State, String> {
        let len = size
            .max(1)
            .checked_next_multiple_of(PAGE)
            .ok_or_else(|| format!("a {size}-byte block is too large"))?;
        let ptr = place(fd.as_fd(), len, Sharing::Private)
            .map_err(|e| format!("cannot map the {size}-byte state image: {e}"))?;
        Ok(State::untracked_mapping(
            ptr,
            size,
            Backing::CopyOf { fd, len },
        ))
    }

    /// In a worker, the block [`State::copy_of`] made in the host: `fd`
    /// mapped privately at `at`, the address it has there. The descriptor
    /// is closed once mapped: plugin code here has no handle on the file to
    /// write the host's image through (the host checks for that anyway).
    pub fn map_copy_at(fd: OwnedFd, at: usize, size: usize) -> Result<State, String> {
        let len = size
            .max(1)
            .checked_next_multiple_of(PAGE)
            .ok_or_else(|| format!("a {size}-byte block is too large"))?;
        let ptr = map_fixed(fd.as_fd(), at, len, Sharing::Private)
            .map_err(|e| format!("cannot map the state image at {at:#x}: {e}"))?;
        drop(fd);
        // Unmapped as an anonymous block is: one munmap of `len`.
        Ok(State::untracked_mapping(ptr, size, Backing::Pages { len }))
    }

    /// The block another process shared: `fd` mapped at `at`, the address
    /// it has there (an isolated worker maps the host's blocks so). Fails if
    /// that range is taken in this process.
    pub fn map_at(fd: OwnedFd, at: usize, size: usize) -> Result<State, String> {
        let len = size
            .max(1)
            .checked_next_multiple_of(4096)
            .ok_or_else(|| format!("a {size}-byte block is too large"))?;
        let ptr = map_shared(fd.as_fd(), at, len)
            .map_err(|e| format!("cannot map the state at {at:#x}: {e}"))?;
        forked::note_mapped(ptr.as_ptr() as usize, len);
        Ok(State::untracked_mapping(
            ptr,
            size,
            Backing::Shared { fd, len },
        ))
    }

    /// A block of `size` bytes that starts as the first `size` bytes of
    /// `fd` (a sealed memfd handed to a probe), mapped privately: a page is
    /// copied only when it is first written, so a trial on a large state
    /// copies what its calls write rather than all of it. Never tracked
    /// (nothing snapshots a trial's state).
    pub fn private_copy_of(fd: BorrowedFd<'_>, size: usize) -> Result<State, String> {
        use std::os::fd::AsRawFd;
        let len = size
            .max(1)
            .checked_next_multiple_of(PAGE)
            .ok_or_else(|| format!("a {size}-byte block is too large"))?;
        // SAFETY: a new private mapping of a descriptor that is valid for
        // the call; no address is asked for. Bytes past the file's end, in
        // its last page, read as zero; no page past that is mapped.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(format!(
                "cannot map the {size}-byte state handed over: {}",
                std::io::Error::last_os_error()
            ));
        }
        let ptr = NonNull::new(raw.cast()).ok_or_else(|| "mapped at address 0".to_owned())?;
        // Unmapped as an anonymous block is: one munmap of `len`.
        Ok(State::untracked_mapping(ptr, size, Backing::Pages { len }))
    }

    /// A new zeroed block of `size` bytes, of the same kind as this one
    /// (shared memory for an isolated run).
    pub fn alike(&self, size: usize) -> Result<State, String> {
        match self.backing {
            Backing::Heap(_) | Backing::Pages { .. } => State::zeroed(size),
            Backing::Shared { .. } | Backing::CopyOf { .. } => State::shared(size),
        }
    }

    /// `size` zeroed bytes, shared memory if `shared`.
    pub fn new_block(size: usize, shared: bool) -> Result<State, String> {
        if shared {
            State::shared(size)
        } else {
            State::zeroed(size)
        }
    }

    /// This block's memfd, if it is shared memory.
    pub fn shared_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.backing {
            Backing::Shared { fd, .. } => Some(fd.as_fd()),
            Backing::Heap(_) | Backing::Pages { .. } | Backing::CopyOf { .. } => None,
        }
    }

    /// The file a [`State::copy_of`] block is a private copy of.
    pub fn copied_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.backing {
            Backing::CopyOf { fd, .. } => Some(fd.as_fd()),
            Backing::Heap(_) | Backing::Pages { .. } | Backing::Shared { .. } => None,
        }
    }

    /// Where the block is mapped in this process.
    pub fn address(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The length of the shared mapping (whole pages), or the size.
    pub fn mapped_len(&self) -> usize {
        match &self.backing {
            Backing::Shared { len, .. } | Backing::CopyOf { len, .. } => *len,
            Backing::Heap(_) | Backing::Pages { .. } => self.size,
        }
    }

    /// Tells this block from every other of this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The pointer handed to plugin code.
    pub fn as_mut_ptr(&mut self) -> *mut std::ffi::c_void {
        self.ptr.as_ptr().cast()
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size() >= size` initialized (zeroed,
        // then written only through plugin calls that `&mut self` serializes)
        // bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.size) }
    }
}

impl State {
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.size) }
    }

    /// This block, emptied, as a new block of `size` bytes: for a tracked
    /// block of its own pages (or of shared memory no worker has mapped)
    /// of the same length, whose pages are then
    /// written without a fault each (see [`super::release::Spares`]); the
    /// block itself, unchanged, otherwise. It gets a new id: the snapshot
    /// tells blocks apart by it.
    pub fn reused(mut self, size: usize) -> Result<State, State> {
        let (Backing::Pages { len } | Backing::Shared { len, .. }) = self.backing else {
            return Err(self);
        };
        if size <= TRACK_ABOVE || size.checked_next_multiple_of(PAGE) != Some(len) {
            return Err(self);
        }
        // Writable and every page marked, as a fresh block starts.
        match self.written.as_deref().map(WrittenPages::open_all) {
            Some(Ok(())) => {}
            _ => return Err(self),
        }
        // SAFETY: `ptr` is this block's mapping of `len` bytes, just made
        // writable in full, and `self` is owned here: nothing else reads or
        // writes it.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, len) };
        self.size = size;
        self.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(self)
    }

    /// Unmaps a mapped block a piece at a time, with `pause` after each
    /// (see [`super::release`]), then drops it; a block on the heap is
    /// dropped at once. In one `munmap`, a 64 MiB block holds the
    /// memory-map lock that every `mprotect` and page fault of the tick
    /// thread needs for as long as its pages take to free (5-12 ms here);
    /// a megabyte at a time, well under one.
    pub fn release_gradually(mut self, piece: usize, pause: std::time::Duration) {
        let len = match &mut self.backing {
            Backing::Heap(_) => return,
            Backing::Pages { len } | Backing::Shared { len, .. } | Backing::CopyOf { len, .. } => {
                std::mem::replace(len, 0)
            }
        };
        // Untracked first: the guard's handler must never take a fault at
        // this address for this block; left read-only where it is, since
        // it goes.
        if let Some(written) = self.written.take() {
            written.untrack_for_unmap();
        }
        self.worker_pages = None;
        if let Backing::Shared { .. } = self.backing {
            forked::note_unmapped(self.ptr.as_ptr() as usize);
        }
        let base = self.ptr.as_ptr() as usize;
        let mut at = 0;
        while at < len {
            let n = (len - at).min(piece.next_multiple_of(PAGE));
            // SAFETY: `base + at .. + n` is whole pages of this block's
            // mapping (`len` bytes, page-aligned), still mapped (pieces are
            // unmapped once, in order), and `self` is owned here: nothing
            // reads or writes it. The drop unmaps nothing more (its length
            // is now 0).
            unsafe { libc::munmap((base + at) as *mut libc::c_void, n) };
            at += n;
            std::thread::sleep(pause);
        }
    }
}

/// `MADV_POPULATE_WRITE` (Linux 5.14), which the `libc` crate does not name.
const MADV_POPULATE_WRITE: libc::c_int = 23;

impl Drop for State {
    fn drop(&mut self) {
        // Untracked before the pages go: the guard's handler must never
        // take a fault at this address for a write to this block.
        self.written = None;
        self.worker_pages = None;
        match &self.backing {
            // SAFETY: `ptr` came from `alloc_zeroed` with this same layout.
            Backing::Heap(layout) => unsafe { alloc::dealloc(self.ptr.as_ptr(), *layout) },
            // Unmapped already (`release_gradually`).
            Backing::Pages { len: 0 }
            | Backing::Shared { len: 0, .. }
            | Backing::CopyOf { len: 0, .. } => {}
            // SAFETY: `ptr` is the mapping of `len` bytes made in `pages`,
            // `private_copy_of`, `copy_of` or `map_copy_at`.
            Backing::Pages { len } | Backing::CopyOf { len, .. } => unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), *len);
            },
            // SAFETY: `ptr` is the mapping of `len` bytes made in `shared`;
            // the descriptor closes with `fd`.
            Backing::Shared { len, .. } => unsafe {
                forked::note_unmapped(self.ptr.as_ptr() as usize);
                libc::munmap(self.ptr.as_ptr().cast(), *len);
            },
        }
    }
}

/// How a block maps its memory file.
#[derive(Clone, Copy)]
enum Sharing {
    /// Writes go to the file, seen by every process that maps it.
    Shared,
    /// Writes go to this process's own copies of the pages written.
    Private,
}

/// Maps `len` bytes of `fd` writable at a random page of the range kept
/// for blocks other processes map at the same address (16 tries).
fn place(fd: BorrowedFd<'_>, len: usize, sharing: Sharing) -> Result<NonNull<u8>, String> {
    let mut tries = 0;
    loop {
        tries += 1;
        let at = SHARED_BASE + (random_word() as usize % (SHARED_SPAN / PAGE)) * PAGE;
        match map_fixed(fd, at, len, sharing) {
            Ok(ptr) => return Ok(ptr),
            Err(_) if tries < 16 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Maps `len` bytes of `fd` shared and writable at exactly `at`, never over
/// an existing mapping.
pub fn map_shared(fd: BorrowedFd<'_>, at: usize, len: usize) -> Result<NonNull<u8>, String> {
    map_fixed(fd, at, len, Sharing::Shared)
}

/// Maps `len` bytes of `fd` writable at exactly `at`, never over an
/// existing mapping.
fn map_fixed(
    fd: BorrowedFd<'_>,
    at: usize,
    len: usize,
    sharing: Sharing,
) -> Result<NonNull<u8>, String> {
    use std::os::fd::AsRawFd;
    let kind = match sharing {
        Sharing::Shared => libc::MAP_SHARED,
        Sharing::Private => libc::MAP_PRIVATE,
    };
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping: it fails instead;
    // the descriptor is valid for the call.
    let raw = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            kind | libc::MAP_FIXED_NOREPLACE,
            fd.as_raw_fd(),
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if raw as usize != at {
        // A kernel before 4.17 ignores the flag and may map elsewhere.
        // SAFETY: unmaps the mapping just made.
        unsafe { libc::munmap(raw, len) };
        return Err(format!("mapped at {raw:p}, not at {at:#x}"));
    }
    NonNull::new(raw.cast()).ok_or_else(|| "mapped at address 0".to_owned())
}

/// A random word from the kernel (for placing shared blocks).
fn random_word() -> u64 {
    let mut word = [0u8; 8];
    // SAFETY: writes at most 8 bytes into `word`.
    let n = unsafe { libc::getrandom(word.as_mut_ptr().cast(), word.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(word)
    } else {
        // Placement does not need to be secret, only spread out.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_and_aligned() {
        for size in [0, 1, 4, 63, 64, 4096] {
            let mut s = State::zeroed(size).expect("allocate");
            assert_eq!(s.as_mut_ptr() as usize % STATE_ALIGN, 0);
            assert_eq!(s.bytes().len(), size);
            assert!(s.bytes().iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn shared_blocks_are_zeroed_aligned_and_can_be_mapped_again_where_they_are() {
        let mut s = State::shared(10_000).expect("shared");
        assert_eq!(s.as_mut_ptr() as usize % STATE_ALIGN, 0);
        assert!(s.bytes().iter().all(|&b| b == 0));
        s.bytes_mut()[9_999] = 7;
        let fd = s
            .shared_fd()
            .expect("an fd")
            .try_clone_to_owned()
            .expect("dup");
        // The same address is taken in this process: the flag refuses it.
        assert!(map_shared(fd.as_fd(), s.address(), s.mapped_len()).is_err());
        assert_eq!(s.mapped_len() % 4096, 0);
    }

    #[test]
    fn absurd_size_is_an_error_not_an_abort() {
        assert!(State::zeroed(usize::MAX - 10).is_err());
    }
}

/// Blocks a worker mapped from the host, made private in a child that
/// plugin code forks: without it the child (which runs on in the plugin's
/// code until it returns, or for ever) writes into the host's state through
/// the same shared pages.
pub mod forked {
    use std::sync::Once;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SLOTS: usize = 32;
    /// (address, length) of each shared block mapped with
    /// [`super::State::map_at`]; address 0 is a free slot.
    static MAPPED: [(AtomicUsize, AtomicUsize); SLOTS] =
        [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; SLOTS];

    pub(super) fn note_mapped(at: usize, len: usize) {
        for (addr, size) in &MAPPED {
            if addr.load(Ordering::Relaxed) == 0 {
                size.store(len, Ordering::Relaxed);
                addr.store(at, Ordering::Release);
                return;
            }
        }
        // More blocks than slots: a worker maps two or three at a time.
    }

    pub(super) fn note_unmapped(at: usize) {
        for (addr, _) in &MAPPED {
            if addr.load(Ordering::Relaxed) == at {
                addr.store(0, Ordering::Release);
            }
        }
    }

    /// Makes every child this process forks from now on replace its shared
    /// blocks with private copies first (a `pthread_atfork` child handler).
    /// For workers only: a host's own children exec at once, and would pay
    /// a copy of the state for nothing.
    pub fn privatize_in_children() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // SAFETY: registers a handler that runs in the child only, and
            // does nothing but system calls and a copy (see `privatize`).
            unsafe { libc::pthread_atfork(None, None, Some(privatize)) };
        });
    }

    /// In the child: each block becomes an anonymous private mapping at the
    /// same address with the same bytes (mapped aside, copied, moved over
    /// the shared one in one step, so the address is never unmapped).
    extern "C" fn privatize() {
        for (addr, size) in &MAPPED {
            let at = addr.load(Ordering::Acquire);
            let len = size.load(Ordering::Relaxed);
            if at == 0 || len == 0 {
                continue;
            }
            // SAFETY: a fresh anonymous mapping of `len` bytes; `at` is a
            // mapping of `len` bytes this process made (note_mapped), which
            // the single thread of a just-forked child is not using; mremap
            // with MREMAP_FIXED replaces it atomically.
            unsafe {
                let copy = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if copy == libc::MAP_FAILED {
                    // No memory for a copy: the child must not write the
                    // host's state, so it gets none.
                    libc::mprotect(at as *mut libc::c_void, len, libc::PROT_NONE);
                    continue;
                }
                std::ptr::copy_nonoverlapping(at as *const u8, copy.cast::<u8>(), len);
                libc::mremap(
                    copy,
                    len,
                    len,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    at as *mut libc::c_void,
                );
            }
        }
    }
}
