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
#include <pthread.h>
#include <signal.h>
#include <stddef.h>

int hr_guard_plugin_is_calling(void);
int hr_guard_protects(int sig);
void hr_guard_note_mask_call(void);
void hr_guard_note_refused(int sig);

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
