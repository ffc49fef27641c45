//! Exact snapshots of a large state in isolated mode: the write tracking
//! of [`super::pages`], across the host and a worker process.
//!
//! Plugin code writes the state through the worker's mapping of the shared
//! memory, which the host cannot make read-only. So both mappings are
//! tracked, with one bitmap in shared memory ([`SharedBits`], a memfd of
//! its own) that means what it means in-process: a set bit, the page may
//! have been written since the snapshot last looked; the guard's handler
//! sets it, in whichever process the write trapped, before the write goes
//! through. A worker that dies mid-call has therefore marked every page it
//! wrote, and the host's restore puts each back.
//! - The host's mapping is tracked as in-process: its own writes (a
//!   rewind, `set`, a restore) trap and mark, and the snapshot copies the
//!   marked pages and closes those left unchanged.
//! - Closing a page there also asks the worker to close it, in a second
//!   bitmap of the same memfd, because only the worker can change its own
//!   mapping. Before each call the worker makes those pages read-only
//!   ([`WorkerPages::before_call`]), so plugin code's next write to them
//!   traps and marks them again.
//!
//! What this cannot see: a thread plugin code started that writes a page
//! between two calls, after the host compared it and before the worker
//! closed it (in-process the compare after the close catches that). A
//! thread writing the state between calls races the snapshot in-process
//! too.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::pages::{PAGE, WrittenPages};

/// Two bitmaps of one bit per page in shared memory, the pages written (the
/// guard's) and the pages a worker is asked to make read-only, and the pid
/// of the worker that made the last call on the block.
pub struct SharedBits {
    fd: OwnedFd,
    ptr: NonNull<AtomicU64>,
    /// Words in each bitmap.
    words: usize,
    /// The mapping's length (whole pages).
    len: usize,
}

// SAFETY: the mapping is owned by this value and accessed only as atomics.
unsafe impl Send for SharedBits {}
// SAFETY: as above.
unsafe impl Sync for SharedBits {}

/// The memfd's length for `pages` pages: both bitmaps and the last
/// caller's word, in whole pages.
fn memfd_len(pages: usize) -> (usize, usize) {
    let words = pages.div_ceil(64);
    (words, ((2 * words + 1) * 8).next_multiple_of(PAGE))
}

impl SharedBits {
    /// The bitmaps for `pages` pages: every page written (until the
    /// snapshot's first look), none to close.
    pub fn create(pages: usize) -> Result<SharedBits, String> {
        // SAFETY: a NUL-terminated name and flags; the result, if valid, is
        // a new descriptor owned by nobody else.
        let raw =
            unsafe { libc::memfd_create(c"hotreload-written-pages".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(format!(
                "cannot create the written-pages bitmap: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `raw` is the fresh descriptor created above.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let (_, len) = memfd_len(pages);
        std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?)
            .set_len(len as u64)
            .map_err(|e| format!("cannot size the written-pages bitmap: {e}"))?;
        let bits = SharedBits::map(fd, pages)?;
        for word in bits.words() {
            word.store(u64::MAX, Ordering::Relaxed);
        }
        Ok(bits)
    }

    /// The bitmaps another process created, for `pages` pages.
    pub fn map(fd: OwnedFd, pages: usize) -> Result<SharedBits, String> {
        let (words, len) = memfd_len(pages);
        let found = std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?)
            .metadata()
            .map_err(|e| format!("cannot read the written-pages bitmap's size: {e}"))?
            .len();
        if found != len as u64 {
            return Err(format!(
                "expected a written-pages bitmap of {len} bytes, found {found}"
            ));
        }
        // SAFETY: a new shared mapping chosen by the kernel, of a memfd
        // exactly `len` bytes long (checked above).
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(format!(
                "cannot map the written-pages bitmap: {}",
                std::io::Error::last_os_error()
            ));
        }
        let ptr = NonNull::new(raw.cast()).ok_or("mapped at address 0")?;
        Ok(SharedBits {
            fd,
            ptr,
            words,
            len,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Both bitmaps, one after the other.
    fn all(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds at least `2 * words + 1` aligned u64s,
        // is shared memory written only through atomics, and lives as long
        // as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), 2 * self.words + 1) }
    }

    /// The written pages.
    pub fn words(&self) -> &[AtomicU64] {
        &self.all()[..self.words]
    }

    /// The pages a worker is asked to close.
    fn closing(&self) -> &[AtomicU64] {
        &self.all()[self.words..2 * self.words]
    }

    /// The pid of the worker that made the last call on the block.
    fn last_caller(&self) -> &AtomicU64 {
        &self.all()[2 * self.words]
    }

    /// Asks the worker to make `pages` read-only before its next call.
    pub(super) fn ask_to_close(&self, pages: &[usize]) {
        let closing = self.closing();
        for &p in pages {
            closing[p / 64].fetch_or(1u64 << (p % 64), Ordering::SeqCst);
        }
    }

    /// Asks the worker to make every page read-only before its next call.
    pub(super) fn ask_to_close_all(&self) {
        for word in self.closing() {
            word.store(u64::MAX, Ordering::SeqCst);
        }
    }
}

impl Drop for SharedBits {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping `map` made; every tracker using it was
        // dropped before (its owner drops the tracker first).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A worker's side: its mapping, tracked with the host's bitmaps.
pub struct WorkerPages {
    tracker: WrittenPages,
    scratch: std::cell::RefCell<Vec<usize>>,
}

impl WorkerPages {
    /// Tracks the worker's mapping of `len` bytes at `base`, writable as
    /// the host's block starts, with the host's bitmaps `bits`.
    ///
    /// # Safety
    /// As for [`WrittenPages::start`].
    pub unsafe fn start(
        base: *mut u8,
        len: usize,
        bits: SharedBits,
    ) -> Result<WorkerPages, String> {
        Ok(WorkerPages {
            // SAFETY: the caller's contract.
            tracker: unsafe { WrittenPages::start_shared(base, len, bits)? },
            scratch: std::cell::RefCell::new(Vec::new()),
        })
    }

    /// Makes read-only the pages the host asked to close (the snapshot
    /// found them unchanged), before plugin code runs again.
    pub fn before_call(&self) -> Result<(), String> {
        let Some(bits) = self.tracker.shared_bits() else {
            return Ok(());
        };
        self.tracker.reset_traps();
        // Another worker called since (a rollback to the version before, a
        // new version's first call): the requests it consumed were meant for
        // this mapping too. All of it read-only then; what is written next
        // traps and is marked again.
        let me = u64::from(std::process::id());
        if bits.last_caller().swap(me, Ordering::SeqCst) != me {
            for word in bits.closing() {
                word.store(0, Ordering::SeqCst);
            }
            let all: Vec<usize> = (0..self.tracker.len() / PAGE).collect();
            // SAFETY: the whole tracked mapping.
            return unsafe { super::pages::protect(self.tracker.base(), &all) }.map_err(
                |(_, why)| {
                    for word in bits.words() {
                        word.store(u64::MAX, Ordering::SeqCst);
                    }
                    why
                },
            );
        }
        let mut closing = self.scratch.borrow_mut();
        closing.clear();
        let pages = self.tracker.pages();
        for (w, word) in bits.closing().iter().enumerate() {
            let mut asked = word.swap(0, Ordering::SeqCst);
            while asked != 0 {
                let b = asked.trailing_zeros() as usize;
                asked &= asked - 1;
                if w * 64 + b < pages {
                    closing.push(w * 64 + b);
                }
            }
        }
        // SAFETY: the pages lie within this tracked mapping.
        if let Err((failed, why)) = unsafe { super::pages::protect(self.tracker.base(), &closing) }
        {
            // Left writable: marked as written, so that the host keeps
            // copying them.
            for &p in &closing[failed..] {
                bits.words()[p / 64].fetch_or(1u64 << (p % 64), Ordering::SeqCst);
            }
            return Err(why);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::state::State;
    use crate::state::pages::PAGE;

    /// The host's block and a second mapping of it, as a worker has (here
    /// in the same process, at another address).
    fn host_and_worker(size: usize) -> (State, State) {
        crate::guard::install().expect("guard");
        let host = State::shared(size).expect("shared");
        let fd = || {
            host.shared_fd()
                .expect("fd")
                .try_clone_to_owned()
                .expect("dup")
        };
        let worker = (1..64)
            .find_map(|i| State::map_at(fd(), host.address() ^ (i << 36), size).ok())
            .expect("a free range for the second mapping");
        (host, worker)
    }

    #[test]
    fn a_workers_writes_are_marked_for_the_host_and_what_the_host_closes_traps_again() {
        let size = 4 << 20;
        let (host, mut worker) = host_and_worker(size);
        let bits = host
            .written_pages_fd()
            .expect("a large shared block is tracked")
            .try_clone_to_owned()
            .expect("dup");
        worker
            .report_writes_to(bits)
            .expect("track the worker's mapping");
        let tracker = host.written_pages().expect("tracked");
        let mut written = Vec::new();
        tracker.written(&mut written);
        assert_eq!(written.len(), size / PAGE, "every page counts at first");
        tracker.close(&written).expect("close");
        tracker.written(&mut written);
        assert!(written.is_empty());

        // The worker's first call makes its whole mapping read-only; a
        // write then traps and marks the host's bitmap.
        worker.before_call().expect("before the call");
        worker.bytes_mut()[5 * PAGE + 7] = 42;
        tracker.written(&mut written);
        assert_eq!(written, [5]);
        assert_eq!(host.bytes()[5 * PAGE + 7], 42, "one memory");

        // Still writable there: the next write is not seen until the host
        // closes the page, which the worker does before its next call.
        tracker.close(&[5]).expect("close");
        worker.before_call().expect("before the call");
        worker.bytes_mut()[5 * PAGE + 8] = 43;
        worker.bytes_mut()[9 * PAGE] = 1;
        tracker.written(&mut written);
        assert_eq!(written, [5, 9]);

        // The host's own writes mark too.
        drop(worker);
        tracker.close(&written).expect("close");
        let mut host = host;
        host.bytes_mut()[2 * PAGE] = 7;
        let tracker = host.written_pages().expect("tracked");
        tracker.written(&mut written);
        assert_eq!(written, [2]);
    }
}
