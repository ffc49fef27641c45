//! How to find the pages a tick wrote, for a snapshot whose cost grows with
//! what the tick writes rather than with the state's size. Two mechanisms
//! the kernel offers an unprivileged process, timed per tick against the
//! full copy the snapshot makes today, in the same run, interleaved:
//!
//! - **write protection** (`mprotect` read-only before the tick; the first
//!   write to each page traps, the handler saves the page's old bytes into
//!   an undo log and makes the page writable again): cost = one `mprotect`
//!   of the whole state + one trap, one page copy and one `mprotect` per
//!   page written;
//! - **soft-dirty bits** (`/proc/self/clear_refs` before the tick,
//!   `/proc/self/pagemap` after it, then the dirty pages copied into a
//!   shadow): cost = clearing the bits of the whole process + reading 8
//!   bytes per page of the state + copying the dirty pages.
//!
//! - **a working set** over write protection: the pages the last tick
//!   wrote are copied before the next one and left writable; the others
//!   stay protected and trap once when first written; a page of the set
//!   that a tick left unchanged (compared after it) is protected again.
//!   In steady state: a copy and a compare of the pages written, no trap.
//!
//! `userfaultfd` write protection is the third candidate; it needs
//! `vm.unprivileged_userfaultfd` or `UFFD_USER_MODE_ONLY`, and a thread
//! to serve the faults, and is not timed here.
//!
//! The state is mapped without transparent huge pages (`MADV_NOHUGEPAGE`),
//! as the engine's state block would be: with them, one write dirties (and
//! one trap splits) 2 MiB. Each tick writes one byte in each of `n` pages
//! spread over the state. Sizes: 4 KiB, 1 MiB, 64 MiB; writes: 1 page, 1%
//! and 100% of the pages. Figures are medians of interleaved rounds, per
//! tick, the plain tick's own time subtracted.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::time::Instant;

use common::{header, median_f64};

const PAGE: usize = 4096;
const ROUNDS: usize = 7;

/// What the fault handler needs, set before the state is protected.
static BASE: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static SIZE: AtomicUsize = AtomicUsize::new(0);
static UNDO: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static LOG: AtomicPtr<usize> = AtomicPtr::new(ptr::null_mut());
static LOGGED: AtomicUsize = AtomicUsize::new(0);

/// The first write to a protected page: its old bytes into the undo log,
/// then the page made writable. Anything else is a real crash.
extern "C" fn on_write_fault(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let base = BASE.load(Ordering::Relaxed) as usize;
    let size = SIZE.load(Ordering::Relaxed);
    if addr < base || addr >= base + size {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(99) };
    }
    let page = (addr - base) / PAGE;
    let at = base + page * PAGE;
    let undo = UNDO.load(Ordering::Relaxed);
    let log = LOG.load(Ordering::Relaxed);
    let n = LOGGED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `undo` and `log` have room for every page of the state, the
    // page lies inside the (readable) state, and mprotect is
    // async-signal-safe.
    unsafe {
        ptr::copy_nonoverlapping(at as *const u8, undo.add(page * PAGE), PAGE);
        *log.add(n) = page;
        libc::mprotect(
            at as *mut libc::c_void,
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
        );
    }
}

/// An anonymous mapping without huge pages, filled with non-zero bytes.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> Mapping {
        // SAFETY: a fresh private anonymous mapping; checked below.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap {len} bytes");
        // SAFETY: the mapping just made.
        unsafe {
            libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE);
            ptr::write_bytes(ptr.cast::<u8>(), 1, len);
        }
        Mapping {
            ptr: ptr.cast(),
            len,
        }
    }

    fn protect(&self, prot: libc::c_int) {
        // SAFETY: the whole of this mapping.
        let done = unsafe { libc::mprotect(self.ptr.cast(), self.len, prot) };
        assert_eq!(done, 0, "mprotect");
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps this mapping, used no more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Whether the kernel sets soft-dirty bits: one page written after they
/// were cleared must show one.
fn soft_dirty_works(clear_refs: &mut File, pagemap: &File) -> bool {
    let probe = Mapping::new(PAGE);
    if clear_refs.write_all(b"4").is_err() {
        return false;
    }
    // SAFETY: inside the one-page mapping.
    unsafe { ptr::write_volatile(probe.ptr, 2) };
    let mut entry = [0u8; 8];
    let at = (probe.ptr as usize / PAGE) as u64 * 8;
    pagemap.read_exact_at(&mut entry, at).is_ok() && u64::from_ne_bytes(entry) >> 55 & 1 == 1
}

/// One tick: a byte written in each of `pages` pages spread over the state.
fn tick(state: &Mapping, pages: usize, round: usize) {
    let total = state.len / PAGE;
    let stride = (total / pages).max(1);
    for i in 0..pages {
        let page = (i * stride + round) % total;
        // SAFETY: inside the mapping.
        unsafe {
            let at = state.ptr.add(page * PAGE + (round % PAGE));
            ptr::write_volatile(at, ptr::read_volatile(at).wrapping_add(1));
        }
    }
}

fn main() {
    hotreload_engine::run_probe_if_requested();
    header(
        "dirty_pages",
        "finding the pages a tick wrote: write protection and soft-dirty bits vs. a full copy",
    );
    let mut clear_refs = File::options()
        .write(true)
        .open("/proc/self/clear_refs")
        .expect("open /proc/self/clear_refs");
    let pagemap = File::open("/proc/self/pagemap").expect("open /proc/self/pagemap");
    let soft_dirty = soft_dirty_works(&mut clear_refs, &pagemap);
    if !soft_dirty {
        println!(
            "soft-dirty bits: unavailable on this kernel (no bit set after a write: built without CONFIG_MEM_SOFT_DIRTY); not timed"
        );
    }
    // SAFETY: installs this bench's handler for SIGSEGV; nothing else here
    // faults.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_write_fault as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGSEGV, &action, ptr::null_mut());
    }
    println!(
        "{:>8} {:>12} {:>12} {:>14} {:>12} {:>14} {:>12}",
        "state",
        "pages/tick",
        "full copy",
        "write-protect",
        "working set",
        "soft-dirty",
        "plain tick"
    );
    let mut target_figure = None;
    for size in [4usize << 10, 1 << 20, 64 << 20] {
        let total = size / PAGE;
        for (label, pages) in [("1 page", 1), ("1%", (total / 100).max(1)), ("100%", total)] {
            let state = Mapping::new(size);
            let undo = Mapping::new(size);
            let mut log = vec![0usize; total];
            let mut entries = vec![0u64; total];
            BASE.store(state.ptr, Ordering::Relaxed);
            SIZE.store(size, Ordering::Relaxed);
            UNDO.store(undo.ptr, Ordering::Relaxed);
            LOG.store(log.as_mut_ptr(), Ordering::Relaxed);
            let ticks = (2_000_000 / (pages + total / 64 + 1)).clamp(5, 2_000);
            let (mut full, mut wp, mut ws, mut sd, mut plain) =
                (vec![], vec![], vec![], vec![], vec![]);
            for round in 0..ROUNDS {
                // Plain ticks.
                let t = Instant::now();
                for _ in 0..ticks {
                    tick(&state, pages, round);
                }
                let plain_us = t.elapsed().as_secs_f64() * 1e6 / ticks as f64;
                plain.push(plain_us);
                // The full copy the snapshot makes today, then the tick.
                let t = Instant::now();
                for _ in 0..ticks {
                    // SAFETY: two mappings of `size` bytes.
                    unsafe { ptr::copy_nonoverlapping(state.ptr, undo.ptr, size) };
                    tick(&state, pages, round);
                }
                full.push(t.elapsed().as_secs_f64() * 1e6 / ticks as f64 - plain_us);
                // Write protection with an undo log.
                let t = Instant::now();
                for _ in 0..ticks {
                    LOGGED.store(0, Ordering::Relaxed);
                    state.protect(libc::PROT_READ);
                    tick(&state, pages, round);
                }
                state.protect(libc::PROT_READ | libc::PROT_WRITE);
                wp.push(t.elapsed().as_secs_f64() * 1e6 / ticks as f64 - plain_us);
                assert!(LOGGED.load(Ordering::Relaxed) >= 1, "no write trapped");
                // The working set: pages the last tick wrote are copied before
                // the next one and left writable; the others stay protected and
                // trap once; a page of the set that a tick left unchanged is
                // protected again.
                let mut hot: Vec<usize> = Vec::new();
                state.protect(libc::PROT_READ);
                let t = Instant::now();
                for _ in 0..ticks {
                    LOGGED.store(0, Ordering::Relaxed);
                    for &page in &hot {
                        // SAFETY: a page of both mappings.
                        unsafe {
                            ptr::copy_nonoverlapping(
                                state.ptr.add(page * PAGE),
                                undo.ptr.add(page * PAGE),
                                PAGE,
                            )
                        };
                    }
                    tick(&state, pages, round);
                    hot.retain(|&page| {
                        // SAFETY: a page of both mappings.
                        let (now, before) = unsafe {
                            (
                                std::slice::from_raw_parts(state.ptr.add(page * PAGE), PAGE),
                                std::slice::from_raw_parts(undo.ptr.add(page * PAGE), PAGE),
                            )
                        };
                        let written = now != before;
                        if !written {
                            // SAFETY: one page of the state.
                            unsafe {
                                libc::mprotect(
                                    state.ptr.add(page * PAGE).cast(),
                                    PAGE,
                                    libc::PROT_READ,
                                )
                            };
                        }
                        written
                    });
                    let trapped = LOGGED.load(Ordering::Relaxed);
                    hot.extend_from_slice(&log[..trapped]);
                }
                ws.push(t.elapsed().as_secs_f64() * 1e6 / ticks as f64 - plain_us);
                state.protect(libc::PROT_READ | libc::PROT_WRITE);
                if !soft_dirty {
                    sd.push(f64::NAN);
                    continue;
                }
                // Soft-dirty bits, the dirty pages copied forward.
                let first = (state.ptr as usize / PAGE) as u64;
                let t = Instant::now();
                for _ in 0..ticks {
                    clear_refs.write_all(b"4").expect("clear soft-dirty bits");
                    tick(&state, pages, round);
                    // SAFETY: the entries as bytes, for the read.
                    let raw = unsafe {
                        std::slice::from_raw_parts_mut(entries.as_mut_ptr().cast::<u8>(), total * 8)
                    };
                    pagemap.read_exact_at(raw, first * 8).expect("read pagemap");
                    for (page, entry) in entries.iter().enumerate() {
                        if entry >> 55 & 1 == 1 {
                            // SAFETY: a page of both mappings.
                            unsafe {
                                ptr::copy_nonoverlapping(
                                    state.ptr.add(page * PAGE),
                                    undo.ptr.add(page * PAGE),
                                    PAGE,
                                )
                            };
                        }
                    }
                }
                sd.push(t.elapsed().as_secs_f64() * 1e6 / ticks as f64 - plain_us);
                let dirty = entries.iter().filter(|e| *e >> 55 & 1 == 1).count();
                assert!(
                    dirty >= pages.min(total),
                    "soft-dirty saw {dirty} of {pages} pages"
                );
            }
            let soft = median_f64(&mut sd);
            let working = median_f64(&mut ws);
            if size == 64 << 20 && label == "1%" {
                target_figure = Some(working);
            }
            println!(
                "{:>8} {:>12} {:>9.1} µs {:>11.1} µs {:>9.1} µs {:>14} {:>9.1} µs",
                if size >= 1 << 20 {
                    format!("{} MiB", size >> 20)
                } else {
                    format!("{} KiB", size >> 10)
                },
                format!("{label} ({pages})"),
                median_f64(&mut full),
                median_f64(&mut wp),
                working,
                if soft.is_nan() {
                    "n/a".to_owned()
                } else {
                    format!("{soft:.1} µs")
                },
                median_f64(&mut plain),
            );
        }
    }
    println!(
        "target: 64 MiB writing 1% under 50 µs a tick (5% of a 1 ms tick), with the working set: {}",
        common::verdict(target_figure.is_some_and(|us| us < 50.0))
    );
}
