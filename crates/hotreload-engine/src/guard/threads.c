/*
 * threads.c: threads that plugin code starts.
 *
 * A thread a plugin starts runs that plugin's code. If the host unmaps the
 * library (dlclose of a retired version, or of every version at exit) while
 * the thread still runs, the thread's next instruction is in memory that is
 * gone, and the host dies of it. So the hotreload executable exports its own
 * pthread_create: a thread created by plugin code (inside a guarded call,
 * its constructors included, or by another such thread) is started
 * through hr_thread_main, which records it — where its code starts, where it
 * was created from, its thread id — for as long as it runs. Before a version
 * is closed the host asks hr_threads_running whether any recorded thread
 * belongs to that library, and keeps it mapped if one does. A thread the
 * host starts is the C library's business alone and is not recorded.
 *
 * What this cannot see: a thread created with the raw clone system call.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int hr_guard_plugin_is_calling(void);
void hr_guard_mark_plugin_thread(void);

typedef int (*hr_create_fn)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);

#define HR_THREAD_SLOTS 256

typedef struct {
    _Atomic int state; /* 0 free, 1 claimed, 2 running */
    _Atomic uintptr_t start;
    _Atomic uintptr_t creator;
    _Atomic int tid;
} hr_thread_slot_t;

static hr_thread_slot_t hr_threads[HR_THREAD_SLOTS];
/* Threads that found no free slot: they run untracked, and are counted so
 * the host can say it could not keep track. */
static _Atomic int hr_threads_untracked;

typedef struct {
    void* (*start)(void*);
    void* arg;
    int slot;
} hr_start_t;

static hr_create_fn hr_next_create;

void hr_threads_init(void) {
    if (hr_next_create == NULL) {
        hr_next_create = (hr_create_fn)dlsym(RTLD_NEXT, "pthread_create");
    }
}

static void hr_thread_done(void* p) {
    hr_thread_slot_t* slot = p;
    atomic_store(&slot->tid, 0);
    atomic_store(&slot->state, 0);
}

static void* hr_thread_main(void* p) {
    hr_start_t start = *(hr_start_t*)p;
    free(p);
    hr_guard_mark_plugin_thread();
    hr_thread_slot_t* slot = &hr_threads[start.slot];
    atomic_store(&slot->tid, (int)syscall(SYS_gettid));
    atomic_store(&slot->state, 2);
    void* result;
    /* Runs also when the thread ends by pthread_exit or is cancelled. */
    pthread_cleanup_push(hr_thread_done, slot);
    result = start.start(start.arg);
    pthread_cleanup_pop(1);
    return result;
}

static int hr_claim_slot(uintptr_t start, uintptr_t creator) {
    for (int i = 0; i < HR_THREAD_SLOTS; i++) {
        int free_state = 0;
        if (atomic_compare_exchange_strong(&hr_threads[i].state, &free_state, 1)) {
            atomic_store(&hr_threads[i].start, start);
            atomic_store(&hr_threads[i].creator, creator);
            return i;
        }
    }
    return -1;
}

__attribute__((visibility("default"))) int pthread_create(pthread_t* thread,
                                                          const pthread_attr_t* attr,
                                                          void* (*start)(void*), void* arg) {
    if (hr_next_create == NULL) {
        hr_threads_init();
    }
    hr_create_fn real = hr_next_create;
    if (real == NULL) {
        return ENOSYS;
    }
    if (!hr_guard_plugin_is_calling()) {
        return real(thread, attr, start, arg);
    }
    int slot = hr_claim_slot((uintptr_t)start, (uintptr_t)__builtin_return_address(0));
    hr_start_t* handed = slot < 0 ? NULL : malloc(sizeof *handed);
    if (handed == NULL) {
        if (slot >= 0) {
            atomic_store(&hr_threads[slot].state, 0);
        }
        atomic_fetch_add(&hr_threads_untracked, 1);
        return real(thread, attr, start, arg);
    }
    handed->start = start;
    handed->arg = arg;
    handed->slot = slot;
    int rc = real(thread, attr, hr_thread_main, handed);
    if (rc != 0) {
        free(handed);
        atomic_store(&hr_threads[slot].state, 0);
    }
    return rc;
}

/* Writes up to `max` thread ids of recorded threads that still run and
 * whose code starts, or that were created, inside [start, end); returns how
 * many there are (possibly more than `max`). A thread created but not yet
 * running counts, with id 0. */
int hr_threads_running(uintptr_t start, uintptr_t end, int* tids, int max) {
    int found = 0;
    pid_t pid = getpid();
    for (int i = 0; i < HR_THREAD_SLOTS; i++) {
        hr_thread_slot_t* slot = &hr_threads[i];
        int state = atomic_load(&slot->state);
        if (state == 0) {
            continue;
        }
        uintptr_t code = atomic_load(&slot->start);
        uintptr_t creator = atomic_load(&slot->creator);
        int inside = (code >= start && code < end) || (creator >= start && creator < end);
        if (!inside) {
            continue;
        }
        int tid = atomic_load(&slot->tid);
        /* Gone without its cleanup running (cannot normally happen). */
        if (state == 2 && tid != 0 && syscall(SYS_tgkill, pid, tid, 0) != 0) {
            continue;
        }
        if (found < max) {
            tids[found] = tid;
        }
        found++;
    }
    return found;
}

/* Plugin threads that ran untracked because every slot was taken. */
int hr_threads_untracked_count(void) {
    return atomic_load(&hr_threads_untracked);
}
