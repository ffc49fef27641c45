//! Which pages of a large state have been written since the snapshot last
//! looked.
//!
//! Pages outside the working set are read-only; the first write to one
//! faults, and the crash guard's handler (`guard/pages.c`) marks the page in
//! [`WrittenPages`]'s bitmap and makes it writable before the write is made
//! again. The snapshot ([`super::snapshot`]) copies the marked pages before
//! each tick and closes (makes read-only again) those the last tick left as
//! they were, so a tick costs a copy of the pages it writes and a trap for
//! each page it writes for the first time in a while: nothing that grows
//! with the state's size but a scan of one bit per page.
//!
//! Why this and not the alternatives (measured, BENCHMARKS.md
//! "dirty_pages"): soft-dirty bits are missing from kernels built without
//! `CONFIG_MEM_SOFT_DIRTY`; `userfaultfd`'s asynchronous write protection
//! needs a `PAGEMAP_SCAN` walk of the whole range per tick (47 µs for
//! 64 MiB, 182 µs for 512 MiB here) and a fault per written page per tick.

use std::sync::atomic::{AtomicU64, Ordering};

use super::shared_pages::SharedBits;
use crate::guard;

pub const PAGE: usize = 4096;

/// Copies a page (or the last, partial one) of the state. Not through the
/// C library's `memcpy`: for page-aligned 4 KiB copies its `rep movsb`
/// path ran 5-6 times slower than `rep movsq` on the machine measured
/// (AMD EPYC: 164 scattered pages of 64 MiB in 250-400 µs against
/// 60 µs), and a page at a time is all the snapshot ever copies.
#[inline]
pub fn copy_page(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "pages of equal length");
    #[cfg(target_arch = "x86_64")]
    if dst.len().is_multiple_of(8) {
        // SAFETY: both slices are `len` bytes long and cannot overlap (one
        // is borrowed mutably); `rep movsq` copies `len / 8` words forwards
        // (the ABI guarantees the direction flag is clear) and touches no
        // other memory or register than those named.
        unsafe {
            std::arch::asm!(
                "rep movsq",
                inout("rcx") dst.len() / 8 => _,
                inout("rdi") dst.as_mut_ptr() => _,
                inout("rsi") src.as_ptr() => _,
                options(nostack, preserves_flags)
            );
        }
        return;
    }
    dst.copy_from_slice(src);
}

/// A shared copy of a page, made with [`copy_page`] (not `memcpy`; see
/// there).
pub fn shared_copy(src: &[u8]) -> std::sync::Arc<[u8]> {
    let mut copy = std::sync::Arc::<[u8]>::new_uninit_slice(src.len());
    let Some(dst) = std::sync::Arc::get_mut(&mut copy) else {
        // A fresh Arc has no other owner; this is never reached.
        return std::sync::Arc::from(src);
    };
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and `dst` is the
    // fresh allocation of `src.len()` bytes; every byte is written below
    // before `assume_init`.
    let bytes = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), dst.len()) };
    copy_page(bytes, src);
    // SAFETY: every byte was just written.
    unsafe { copy.assume_init() }
}

unsafe extern "C" {
    fn hr_pages_track(base: *mut u8, len: usize, bits: *mut u64, traps: *mut u64) -> libc::c_int;
    fn hr_pages_untrack(base: *mut u8);
}

/// The write tracking of one page-aligned mapping. Owned by the
/// [`super::State`] it covers, and dropped before the mapping is.
pub struct WrittenPages {
    base: *mut u8,
    /// Whole pages.
    len: usize,
    bits: Bits,
    /// Pages the guard's handler opened since [`WrittenPages::written`]
    /// last looked (it opens the whole region past a budget, see pages.c).
    traps: Box<AtomicU64>,
    /// Set by [`WrittenPages::untrack_for_unmap`]: the drop leaves the
    /// region as it is.
    unmapping: bool,
}

/// One bit per page: the tracker's own, or shared with another process.
enum Bits {
    Own(Box<[AtomicU64]>),
    Shared(SharedBits),
}

impl std::ops::Deref for Bits {
    type Target = [AtomicU64];
    fn deref(&self) -> &[AtomicU64] {
        match self {
            Bits::Own(words) => words,
            Bits::Shared(shared) => shared.words(),
        }
    }
}

/// The most separately writable runs of pages a state keeps between ticks.
/// Each run splits the mapping in up to three, and the kernel bounds a
/// process's mappings (`vm.max_map_count`, 65,530 by default); past this
/// the whole state is made read-only again, one mapping.
pub const RUN_BUDGET: usize = 4096;

// SAFETY: the pointer is the address of the state's own mapping, which the
// `State` owning this moves along with it; the bitmap is atomics.
unsafe impl Send for WrittenPages {}

impl WrittenPages {
    /// Starts tracking the `len` bytes (whole pages) at `base`, every page
    /// marked as written (and writable): the snapshot's first look copies
    /// them all and closes those that stay unchanged.
    ///
    /// # Safety
    /// `base` is the start of a private, page-aligned mapping of `len` bytes
    /// that nothing but the caller's `State` maps, and that outlives the
    /// returned value.
    pub unsafe fn start(base: *mut u8, len: usize) -> Result<WrittenPages, String> {
        let words = (len / PAGE).div_ceil(64);
        let bits = (0..words).map(|_| AtomicU64::new(u64::MAX)).collect();
        // SAFETY: the caller's contract.
        unsafe { WrittenPages::start_with(base, len, Bits::Own(bits)) }
    }

    /// [`WrittenPages::start`], with the bitmap in shared memory that
    /// another process maps too (isolated mode: the host's mapping of the
    /// state and a worker's both mark it; see [`super::shared_pages`]).
    ///
    /// # Safety
    /// As for [`WrittenPages::start`]; `bits` has a bit for every page, all
    /// set.
    pub unsafe fn start_shared(
        base: *mut u8,
        len: usize,
        bits: SharedBits,
    ) -> Result<WrittenPages, String> {
        if bits.words().len() < (len / PAGE).div_ceil(64) {
            return Err(format!(
                "expected a bit for each of {} pages, found {} words",
                len / PAGE,
                bits.words().len()
            ));
        }
        // SAFETY: the caller's contract.
        unsafe { WrittenPages::start_with(base, len, Bits::Shared(bits)) }
    }

    /// # Safety
    /// As for [`WrittenPages::start`].
    unsafe fn start_with(base: *mut u8, len: usize, bits: Bits) -> Result<WrittenPages, String> {
        if !guard::installed() {
            return Err("the crash guard is not installed".into());
        }
        if len == 0 || !len.is_multiple_of(PAGE) || !(base as usize).is_multiple_of(PAGE) {
            return Err(format!(
                "a tracked state must be whole pages; found {len} bytes at {base:p}"
            ));
        }
        let traps = Box::new(AtomicU64::new(0));
        // SAFETY: the bitmap holds a bit for every page of the region; it
        // and the counter are kept (boxed or mapped, never moved) until
        // `drop` untracks the region. The handler changes the words only
        // atomically.
        let r =
            unsafe { hr_pages_track(base, len, bits.as_ptr().cast_mut().cast(), traps.as_ptr()) };
        if r != 0 {
            return Err("every slot for tracked states is taken".into());
        }
        Ok(WrittenPages {
            base,
            len,
            bits,
            traps,
            unmapping: false,
        })
    }

    /// The bitmap's shared memory, for a tracker that shares it.
    pub fn shared_bits(&self) -> Option<&SharedBits> {
        match &self.bits {
            Bits::Shared(shared) => Some(shared),
            Bits::Own(_) => None,
        }
    }

    pub fn pages(&self) -> usize {
        self.len / PAGE
    }

    /// The pages marked as written, in order.
    pub fn written(&self, out: &mut Vec<usize>) {
        self.traps.store(0, Ordering::Relaxed);
        self.marked(out);
    }

    /// Makes `pages` (in order) read-only and unmarked. The bit is cleared
    /// first: a write between the two is then not lost, it is either seen by
    /// the caller's compare after this (the page was still writable) or
    /// faults and marks the page again.
    pub fn close(&self, pages: &[usize]) -> Result<(), String> {
        for &p in pages {
            self.bits[p / 64].fetch_and(!(1u64 << (p % 64)), Ordering::SeqCst);
        }
        // SAFETY: every page lies within the tracked mapping this value was
        // made for; making it read-only changes no byte, and every later
        // write to it is let through by the guard's handler.
        if let Err((failed, why)) = unsafe { protect(self.base, pages) } {
            // The pages from the run that failed on stay writable: marked
            // again, so that they stay copied.
            for &p in &pages[failed..] {
                self.bits[p / 64].fetch_or(1u64 << (p % 64), Ordering::SeqCst);
            }
            return Err(why);
        }
        // Another process's mapping of the block closes them too, before
        // its next call (see `shared_pages`).
        if let Bits::Shared(shared) = &self.bits {
            shared.ask_to_close(pages);
        }
        Ok(())
    }

    /// The pages marked as written, in order, without starting the
    /// handler's count of opened pages again (as [`WrittenPages::written`]
    /// does for the snapshot's take): for a look between takes.
    pub fn marked(&self, out: &mut Vec<usize>) {
        out.clear();
        let pages = self.pages();
        for (w, word) in self.bits.iter().enumerate() {
            let mut bits = word.load(Ordering::SeqCst);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let page = w * 64 + b;
                if page < pages {
                    out.push(page);
                }
            }
        }
    }

    /// Marks `pages` (in order) and makes them writable, a run of
    /// neighbours per call: for the host about to write them, which would
    /// otherwise take a trap for each. Marked first, so that no page is
    /// ever writable and unmarked; the next take compares them.
    pub fn open(&self, pages: &[usize]) -> Result<(), String> {
        self.mark(pages);
        let mut i = 0;
        while i < pages.len() {
            let mut j = i + 1;
            while j < pages.len() && pages[j] == pages[j - 1] + 1 {
                j += 1;
            }
            if pages[j - 1] >= self.pages() {
                return Err(format!(
                    "page {} is outside the tracked {} pages",
                    pages[j - 1],
                    self.pages()
                ));
            }
            // SAFETY: the run lies within the tracked mapping (checked
            // above); making it writable changes no byte, and its pages are
            // marked, so the next take compares them.
            let r = unsafe {
                libc::mprotect(
                    self.base.add(pages[i] * PAGE).cast(),
                    (j - i) * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if r != 0 {
                return Err(format!(
                    "cannot make {} page(s) of the state writable: {}",
                    j - i,
                    std::io::Error::last_os_error()
                ));
            }
            i = j;
        }
        Ok(())
    }

    /// Marks `pages` as written, leaving their protection as it is: the
    /// next take compares them. A marked page that is read-only is only
    /// compared once more than needed; a write to it still traps and keeps
    /// it marked.
    pub fn mark(&self, pages: &[usize]) {
        for &p in pages {
            self.bits[p / 64].fetch_or(1u64 << (p % 64), Ordering::SeqCst);
        }
    }

    /// Pages the guard's handler opened since [`WrittenPages::written`] (or
    /// this) last looked start again from zero (see pages.c's budget).
    pub(super) fn reset_traps(&self) {
        self.traps.store(0, Ordering::Relaxed);
    }

    pub(super) fn base(&self) -> *mut u8 {
        self.base
    }

    /// The mapping's length (whole pages).
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// Makes `pages` (in order) of the mapping at `base` read-only, a run of
/// neighbours per call. On failure, the index in `pages` of the first page
/// left writable (every one from there on is), and why.
///
/// # Safety
/// Every page lies within a mapping at `base` whose writes the guard's
/// handler lets through (a tracked one).
pub(super) unsafe fn protect(base: *mut u8, pages: &[usize]) -> Result<(), (usize, String)> {
    let mut i = 0;
    while i < pages.len() {
        let mut j = i + 1;
        while j < pages.len() && pages[j] == pages[j - 1] + 1 {
            j += 1;
        }
        let count = j - i;
        // SAFETY: the caller's contract; read-only changes no byte.
        let r = unsafe {
            libc::mprotect(
                base.add(pages[i] * PAGE).cast(),
                count * PAGE,
                libc::PROT_READ,
            )
        };
        if r != 0 {
            return Err((
                i,
                format!(
                    "cannot make {count} page(s) of the state read-only: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        i = j;
    }
    Ok(())
}

impl WrittenPages {
    /// How many runs of marked (writable) pages there are.
    pub fn runs(&self) -> usize {
        let mut runs = 0;
        let mut previous_top = 0u64;
        for word in self.bits.iter() {
            let bits = word.load(Ordering::Relaxed);
            // A run starts at each set bit whose lower neighbour is clear.
            let starts = bits & !((bits << 1) | previous_top);
            runs += starts.count_ones() as usize;
            previous_top = bits >> 63;
        }
        runs
    }

    /// Marks every page and makes the whole region writable, in one call:
    /// for the host about to write many scattered pages (a rewind), which
    /// would otherwise take a trap for each. The next take compares every
    /// page and closes those left unchanged.
    pub fn open_all(&self) -> Result<(), String> {
        for word in self.bits.iter() {
            word.store(u64::MAX, Ordering::SeqCst);
        }
        // SAFETY: as in `close`, for the whole tracked mapping; making it
        // writable changes no byte.
        let r = unsafe {
            libc::mprotect(
                self.base.cast(),
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if r != 0 {
            return Err(format!(
                "cannot make the state writable: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Makes the whole region read-only and unmarks every page: one mapping
    /// again. The caller has copied every marked page; it compares them
    /// again afterwards, as after [`WrittenPages::close`].
    pub fn close_all(&self) -> Result<(), String> {
        for word in self.bits.iter() {
            word.store(0, Ordering::SeqCst);
        }
        // SAFETY: as in `close`, for the whole tracked mapping.
        let r = unsafe { libc::mprotect(self.base.cast(), self.len, libc::PROT_READ) };
        if r != 0 {
            for word in self.bits.iter() {
                word.store(u64::MAX, Ordering::SeqCst);
            }
            return Err(format!(
                "cannot make the state read-only: {}",
                std::io::Error::last_os_error()
            ));
        }
        if let Bits::Shared(shared) = &self.bits {
            shared.ask_to_close_all();
        }
        Ok(())
    }

    /// Stops tracking without making the region writable again: for a
    /// mapping about to be unmapped, where the `mprotect` of the whole
    /// region that the drop makes would only hold the memory-map lock (a
    /// tracked 64 MiB block is thousands of mappings after its scattered
    /// closes, and the tick thread's own `mprotect`s wait for it).
    pub fn untrack_for_unmap(mut self) {
        self.unmapping = true;
    }
}

impl Drop for WrittenPages {
    fn drop(&mut self) {
        // SAFETY: untracks the region this value tracked, then (unless it is
        // about to be unmapped) makes all of it writable again, as the
        // mapping was made.
        unsafe {
            hr_pages_untrack(self.base);
            if self.unmapping {
                return;
            }
            libc::mprotect(
                self.base.cast(),
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
            );
        }
    }
}
