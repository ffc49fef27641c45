/*
 * process.c: plugin code that changes what the whole process depends on.
 *
 * Signal handlers are process-wide. A plugin that installs its own SIGSEGV
 * handler, or sets SIG_DFL, disables the crash guard for every later call;
 * one that ignores SIGCHLD breaks every wait for a build or a probe; one
 * that ignores SIGTERM makes the server unstoppable. The signal mask is per
 * thread but outlives the call: a plugin that blocks SIGSEGV turns the next
 * fault into the death of the host. So, as with exit() in exits.c, the
 * hotreload executable exports its own sigaction, signal, sigset,
 * sigprocmask and pthread_sigmask, which plugin code's calls bind to first.
 * Called by plugin code (inside a guarded call, its constructors and
 * destructors included, or in a thread it started):
 * - a change to a signal the host relies on (hr_guard_protects) is refused:
 *   the call reports success and the current action, installs nothing, and
 *   the refusal is reported after the call;
 * - a change of the mask takes effect for the rest of the call and is undone
 *   when the call returns (the trampoline's caller repairs it).
 * Called by anything else, they are the C library's own.
 *
 * What goes around them (the raw rt_sigaction or rt_sigprocmask system
 * call, or a longjmp with a garbage buffer) is caught later: the mask is put
 * back on every fault, and the handlers are checked and put back at every
 * swap and rollback (hr_guard_reassert).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

int hr_guard_plugin_is_calling(void);
int hr_guard_protects(int sig);
void hr_guard_note_mask_call(void);
void hr_guard_note_refused(int sig);
void hr_guard_note_std_closed(int fd);

typedef int (*hr_sigaction_fn)(int, const struct sigaction*, struct sigaction*);
typedef int (*hr_mask_fn)(int, const sigset_t*, sigset_t*);

/* The C library's own functions, resolved once, when the guard is
 * installed: later calls can come from a forked child or a signal handler,
 * where dlsym is not safe. Until then (Rust's runtime setting SIGPIPE at
 * start-up), they are resolved on first use. */
static hr_sigaction_fn hr_next_sigaction;
static hr_mask_fn hr_next_sigprocmask;
static hr_mask_fn hr_next_pthread_sigmask;

void hr_process_init(void) {
    if (hr_next_sigaction == NULL) {
        hr_next_sigaction = (hr_sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    }
    if (hr_next_sigprocmask == NULL) {
        hr_next_sigprocmask = (hr_mask_fn)dlsym(RTLD_NEXT, "sigprocmask");
    }
    if (hr_next_pthread_sigmask == NULL) {
        hr_next_pthread_sigmask = (hr_mask_fn)dlsym(RTLD_NEXT, "pthread_sigmask");
    }
}

static hr_sigaction_fn hr_real_sigaction(void) {
    if (hr_next_sigaction == NULL) {
        hr_process_init();
    }
    return hr_next_sigaction;
}

/* Whether a change of `sig`'s handler by the current caller is refused. */
static int hr_refuses(int sig, int changing) {
    if (!changing || !hr_guard_plugin_is_calling() || !hr_guard_protects(sig)) {
        return 0;
    }
    hr_guard_note_refused(sig);
    return 1;
}

__attribute__((visibility("default"))) int sigaction(int sig, const struct sigaction* act,
                                                     struct sigaction* old) {
    hr_sigaction_fn real = hr_real_sigaction();
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (hr_refuses(sig, act != NULL)) {
        return old != NULL ? real(sig, NULL, old) : 0;
    }
    return real(sig, act, old);
}

/* signal() and sigset() as glibc defines them (BSD semantics: the handler
 * stays installed, interrupted calls restart), over sigaction above. */
static sighandler_t hr_install(int sig, sighandler_t handler) {
    struct sigaction act, old;
    act.sa_handler = handler;
    sigemptyset(&act.sa_mask);
    act.sa_flags = SA_RESTART;
    if (sigaction(sig, &act, &old) != 0) {
        return SIG_ERR;
    }
    return old.sa_handler;
}

__attribute__((visibility("default"))) sighandler_t signal(int sig, sighandler_t handler) {
    return hr_install(sig, handler);
}

__attribute__((visibility("default"))) sighandler_t sigset(int sig, sighandler_t handler) {
    return hr_install(sig, handler);
}

static int hr_mask(hr_mask_fn* next, int how, const sigset_t* set, sigset_t* old) {
    if (*next == NULL) {
        hr_process_init();
    }
    hr_mask_fn real = *next;
    if (real == NULL) {
        return ENOSYS;
    }
    if (set != NULL && hr_guard_plugin_is_calling()) {
        hr_guard_note_mask_call();
    }
    return real(how, set, old);
}

__attribute__((visibility("default"))) int sigprocmask(int how, const sigset_t* set,
                                                       sigset_t* old) {
    int err = hr_mask(&hr_next_sigprocmask, how, set, old);
    if (err == ENOSYS) {
        errno = ENOSYS;
        return -1;
    }
    return err;
}

__attribute__((visibility("default"))) int pthread_sigmask(int how, const sigset_t* set,
                                                           sigset_t* old) {
    return hr_mask(&hr_next_pthread_sigmask, how, set, old);
}

/* POSIX timers. A timer plugin code creates outlives the call, and the
 * version: a signal timer goes on sending SIGALRM (or whatever it was told)
 * after its version is rolled back, and every later version is blamed for
 * it; a thread timer (SIGEV_THREAD) calls its function in a new thread at
 * every expiry, into a library that may be unmapped by then. So
 * timer_create, called by plugin code, records the timer and where it was
 * created from, and the host deletes them: every signal timer when one's
 * signal is taken as a fault (hr_timers_stop with no range), and every
 * timer created from a library's code before that library is unmapped. */
typedef int (*hr_timer_create_fn)(clockid_t, struct sigevent*, timer_t*);
typedef int (*hr_timer_delete_fn)(timer_t);

#define HR_TIMER_SLOTS 64

typedef struct {
    int used;
    int thread; /* SIGEV_THREAD: its function runs in a thread of its own */
    timer_t id;
    uintptr_t creator;
    uintptr_t function;
} hr_timer_slot_t;

static hr_timer_slot_t hr_timers[HR_TIMER_SLOTS];
static pthread_mutex_t hr_timers_lock = PTHREAD_MUTEX_INITIALIZER;
/* Timers plugin code created that found no free slot. */
static int hr_timers_untracked;

__attribute__((visibility("default"))) int timer_create(clockid_t clock, struct sigevent* event,
                                                        timer_t* id) {
    hr_timer_create_fn real = (hr_timer_create_fn)dlsym(RTLD_NEXT, "timer_create");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    int r = real(clock, event, id);
    if (r != 0 || !hr_guard_plugin_is_calling()) {
        return r;
    }
    pthread_mutex_lock(&hr_timers_lock);
    int slot = -1;
    for (int i = 0; i < HR_TIMER_SLOTS; i++) {
        if (!hr_timers[i].used) {
            slot = i;
            break;
        }
    }
    if (slot < 0) {
        hr_timers_untracked++;
    } else {
        hr_timers[slot].used = 1;
        hr_timers[slot].thread = event != NULL && event->sigev_notify == SIGEV_THREAD;
        hr_timers[slot].id = *id;
        hr_timers[slot].creator = (uintptr_t)__builtin_return_address(0);
        hr_timers[slot].function =
            hr_timers[slot].thread ? (uintptr_t)event->sigev_notify_function : 0;
    }
    pthread_mutex_unlock(&hr_timers_lock);
    return r;
}

__attribute__((visibility("default"))) int timer_delete(timer_t id) {
    hr_timer_delete_fn real = (hr_timer_delete_fn)dlsym(RTLD_NEXT, "timer_delete");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    pthread_mutex_lock(&hr_timers_lock);
    for (int i = 0; i < HR_TIMER_SLOTS; i++) {
        if (hr_timers[i].used && hr_timers[i].id == id) {
            hr_timers[i].used = 0;
        }
    }
    pthread_mutex_unlock(&hr_timers_lock);
    return real(id);
}

/* Deletes the timers plugin code created: with start < end, those created
 * from or calling into start..end (a library's mapping); with start == end,
 * every signal timer. Returns how many, and in *threads how many of them
 * were thread timers. Never from a signal handler. */
int hr_timers_stop(uintptr_t start, uintptr_t end, int* threads) {
    hr_timer_delete_fn real = (hr_timer_delete_fn)dlsym(RTLD_NEXT, "timer_delete");
    if (real == NULL) {
        return 0;
    }
    int stopped = 0;
    *threads = 0;
    pthread_mutex_lock(&hr_timers_lock);
    for (int i = 0; i < HR_TIMER_SLOTS; i++) {
        hr_timer_slot_t* t = &hr_timers[i];
        if (!t->used) {
            continue;
        }
        int ours = start == end ? !t->thread
                                : (t->creator >= start && t->creator < end) ||
                                      (t->function >= start && t->function < end);
        if (ours) {
            real(t->id);
            t->used = 0;
            stopped++;
            *threads += t->thread;
        }
    }
    pthread_mutex_unlock(&hr_timers_lock);
    return stopped;
}

int hr_timers_untracked_count(void) {
    pthread_mutex_lock(&hr_timers_lock);
    int n = hr_timers_untracked;
    pthread_mutex_unlock(&hr_timers_lock);
    return n;
}

/* close(0), close(1), close(2) from plugin code. The number would be free
 * for the next descriptor the server opens (a state file, a library copy),
 * and the plugin's next printf would land in that file. Called by plugin
 * code, closing a standard descriptor puts /dev/null in its place instead:
 * to the plugin the descriptor is gone just as well (what it writes goes
 * nowhere), and no file of the server's can take its number. The server's
 * own output is on a private duplicate (console.rs) and goes on. */
typedef int (*hr_close_fn)(int);

__attribute__((visibility("default"))) int close(int fd) {
    if (fd >= 0 && fd <= 2 && hr_guard_plugin_is_calling()) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0 && null != fd) {
            dup2(null, fd);
            syscall(SYS_close, null);
        }
        hr_guard_note_std_closed(fd);
        return 0;
    }
    static hr_close_fn real;
    if (real == NULL) {
        real = (hr_close_fn)dlsym(RTLD_NEXT, "close");
    }
    if (real == NULL) {
        return (int)syscall(SYS_close, fd);
    }
    return real(fd);
}
