/*
 * pages.c: which pages of the state a tick wrote.
 *
 * A large state is snapshotted page by page (state/snapshot.rs): before each
 * tick the pages written since the last one are copied into the snapshot,
 * and every other page is read-only. The first write to a read-only page
 * faults; the guard's handler (trampoline.c) asks hr_pages_on_fault, which
 * marks the page as written in the region's bitmap and makes it writable, so
 * the write goes through as if nothing happened. Any thread may write: the
 * tick thread inside a call, a thread plugin code started, the host setting
 * a value. The bitmap is written only by setting bits, atomically; the tick
 * thread clears them between ticks (state/pages.rs).
 *
 * A write by the kernel (read(2) into the state) does not fault: the system
 * call fails with EFAULT. The C library calls that write into a caller's
 * buffer are interposed (buffers.c) to make the pages writable first.
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#define HR_PAGE ((uintptr_t)4096)
#define HR_TRACK_SLOTS 16

typedef struct {
    /* 0 for a free slot. Published last (release), cleared first. */
    uintptr_t base;
    size_t len;
    uint64_t* bits;
    /* Pages opened by a fault since the snapshot last looked (it resets
     * this). Past HR_TRAP_BUDGET the whole region is opened at once: every
     * page opened on its own splits the mapping, and a process has a
     * bounded number of mappings (vm.max_map_count, 65,530 by default);
     * past it mprotect fails, and so would the host's own allocations. */
    uint64_t* traps;
} hr_tracked_t;

#define HR_TRAP_BUDGET 4096

static hr_tracked_t hr_tracked[HR_TRACK_SLOTS];

/* Starts tracking writes to `len` bytes at `base` (page-aligned, a multiple
 * of pages), with one bit per page in `bits`. The caller has made the
 * written pages writable and the others read-only, or will. Returns 0, or
 * -1 if every slot is taken. */
int hr_pages_track(void* base, size_t len, uint64_t* bits, uint64_t* traps) {
    for (int i = 0; i < HR_TRACK_SLOTS; i++) {
        if (__atomic_load_n(&hr_tracked[i].base, __ATOMIC_ACQUIRE) == 0) {
            hr_tracked[i].len = len;
            __atomic_store_n(&hr_tracked[i].bits, bits, __ATOMIC_RELAXED);
            __atomic_store_n(&hr_tracked[i].traps, traps, __ATOMIC_RELAXED);
            __atomic_store_n(&hr_tracked[i].base, (uintptr_t)base, __ATOMIC_RELEASE);
            return 0;
        }
    }
    return -1;
}

/* Stops tracking the region at `base`. The caller makes it writable again
 * afterwards. */
void hr_pages_untrack(void* base) {
    for (int i = 0; i < HR_TRACK_SLOTS; i++) {
        if (__atomic_load_n(&hr_tracked[i].base, __ATOMIC_ACQUIRE) == (uintptr_t)base) {
            __atomic_store_n(&hr_tracked[i].base, 0, __ATOMIC_RELEASE);
        }
    }
}

/* Marks the pages of [from, to) that lie in a tracked region as written and
 * makes them writable. Returns how many bytes of the range are in one;
 * -1 if making a page writable failed. */
static long hr_pages_open(uintptr_t from, uintptr_t to) {
    long covered = 0;
    for (int i = 0; i < HR_TRACK_SLOTS; i++) {
        uintptr_t base = __atomic_load_n(&hr_tracked[i].base, __ATOMIC_ACQUIRE);
        if (base == 0) {
            continue;
        }
        uintptr_t end = base + hr_tracked[i].len;
        uintptr_t lo = from > base ? from : base;
        uintptr_t hi = to < end ? to : end;
        if (lo >= hi) {
            continue;
        }
        uint64_t* bits = __atomic_load_n(&hr_tracked[i].bits, __ATOMIC_RELAXED);
        uintptr_t first = (lo - base) / HR_PAGE;
        uintptr_t last = (hi - 1 - base) / HR_PAGE;
        /* Marked before the pages are made writable: a page that is
         * writable and not marked would be written unseen. */
        for (uintptr_t p = first; p <= last; p++) {
            __atomic_fetch_or(&bits[p / 64], (uint64_t)1 << (p % 64), __ATOMIC_SEQ_CST);
        }
        if (mprotect((void*)(base + first * HR_PAGE), (last + 1 - first) * HR_PAGE,
                     PROT_READ | PROT_WRITE) != 0) {
            return -1;
        }
        covered += (long)(hi - lo);
    }
    return covered;
}

/* Marks every page of a region and makes all of it writable: one mapping
 * again (the kernel merges the pieces), so this works when opening one
 * more page alone would pass the limit on mappings. The snapshot then
 * copies every page once and closes them all. 1 on success. */
static int hr_pages_open_all(uintptr_t base, size_t len, uint64_t* bits) {
    size_t pages = len / HR_PAGE;
    for (size_t w = 0; w < (pages + 63) / 64; w++) {
        __atomic_store_n(&bits[w], ~(uint64_t)0, __ATOMIC_SEQ_CST);
    }
    return mprotect((void*)base, len, PROT_READ | PROT_WRITE) == 0;
}

/* From the guard's SIGSEGV handler, for an access error at `addr`: 1 if the
 * address is in a tracked region and its page is now writable (the handler
 * returns and the write is made again), 0 if it is an ordinary fault. A page
 * already marked is made writable again too: another thread marked it and
 * is about to. */
int hr_pages_on_fault(void* addr) {
    uintptr_t at = (uintptr_t)addr;
    for (int i = 0; i < HR_TRACK_SLOTS; i++) {
        uintptr_t base = __atomic_load_n(&hr_tracked[i].base, __ATOMIC_ACQUIRE);
        if (base == 0 || at < base || at >= base + hr_tracked[i].len) {
            continue;
        }
        uint64_t* bits = __atomic_load_n(&hr_tracked[i].bits, __ATOMIC_RELAXED);
        uint64_t* traps = __atomic_load_n(&hr_tracked[i].traps, __ATOMIC_RELAXED);
        uintptr_t p = (at - base) / HR_PAGE;
        __atomic_fetch_or(&bits[p / 64], (uint64_t)1 << (p % 64), __ATOMIC_SEQ_CST);
        if (__atomic_add_fetch(traps, 1, __ATOMIC_RELAXED) < HR_TRAP_BUDGET &&
            mprotect((void*)(base + p * HR_PAGE), HR_PAGE, PROT_READ | PROT_WRITE) == 0) {
            return 1;
        }
        return hr_pages_open_all(base, hr_tracked[i].len, bits);
    }
    return 0;
}

/* For the interposers in buffers.c: makes the tracked pages of `len` bytes
 * at `buf` writable before the kernel writes them. */
void hr_pages_prepare(const void* buf, size_t len) {
    if (buf == NULL || len == 0) {
        return;
    }
    uintptr_t from = (uintptr_t)buf;
    uintptr_t to = from + len < from ? UINTPTR_MAX : from + len;
    (void)hr_pages_open(from, to);
}

/* Whether any region is tracked (the interposers' fast path). */
int hr_pages_any(void) {
    for (int i = 0; i < HR_TRACK_SLOTS; i++) {
        if (__atomic_load_n(&hr_tracked[i].base, __ATOMIC_RELAXED) != 0) {
            return 1;
        }
    }
    return 0;
}
