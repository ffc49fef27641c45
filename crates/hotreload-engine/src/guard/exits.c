/*
 * exits.c: plugin code that tries to end the process.
 *
 * Ported game code quits with exit(); Rust's std::process::exit calls it
 * too. Called from a tick, it would end the host with the plugin's status:
 * no fault line, no shutdown, no save. The functions below share the names
 * of the C library's ways out (exit, _exit, _Exit, quick_exit, and
 * pthread_exit, which would end the tick thread). The hotreload executable
 * exports them (see crates/hotreload/build.rs), so a plugin's calls bind to
 * them before the C library's: a definition in the executable comes first
 * in every library's symbol lookup, and an unversioned one satisfies the
 * plugin's versioned reference. Inside a guarded call they end that call as
 * a fault of its version (rolled back like a crash); anywhere else they do
 * exactly what the C library's would, so the host's own exits are untouched.
 *
 * What cannot be caught this way: the exit_group system call made directly,
 * SIGKILL, and a call from a thread the plugin started (that thread is not
 * inside a guarded call). The isolated mode is for those.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Pseudo-signals in a fault record: negative, so never a real signal. */
#define HR_LEFT_EXIT (-1)        /* exit(), _exit(), _Exit(), quick_exit() */
#define HR_LEFT_THREAD_EXIT (-2) /* pthread_exit() */

void hr_guard_leave_if_inside(int signo, int code, void* pc);

/* The C library's own definition of `name`, the next one after this
 * executable's in lookup order. */
static void* hr_next(const char* name) {
    return dlsym(RTLD_NEXT, name);
}

__attribute__((noreturn)) static void hr_exit_group(int status) {
    for (;;) {
        syscall(SYS_exit_group, status);
    }
}

__attribute__((visibility("default"), noreturn)) void exit(int status) {
    hr_guard_leave_if_inside(HR_LEFT_EXIT, status, __builtin_return_address(0));
    void (*real)(int) = (void (*)(int))hr_next("exit");
    if (real != NULL) {
        real(status);
    }
    hr_exit_group(status);
}

__attribute__((visibility("default"), noreturn)) void quick_exit(int status) {
    hr_guard_leave_if_inside(HR_LEFT_EXIT, status, __builtin_return_address(0));
    void (*real)(int) = (void (*)(int))hr_next("quick_exit");
    if (real != NULL) {
        real(status);
    }
    hr_exit_group(status);
}

/* _exit and _Exit run nothing: they are the system call. */
__attribute__((visibility("default"), noreturn)) void _exit(int status) {
    hr_guard_leave_if_inside(HR_LEFT_EXIT, status, __builtin_return_address(0));
    hr_exit_group(status);
}

__attribute__((visibility("default"), noreturn)) void _Exit(int status) {
    hr_guard_leave_if_inside(HR_LEFT_EXIT, status, __builtin_return_address(0));
    hr_exit_group(status);
}

__attribute__((visibility("default"), noreturn)) void pthread_exit(void* value) {
    hr_guard_leave_if_inside(HR_LEFT_THREAD_EXIT, 0, __builtin_return_address(0));
    void (*real)(void*) = (void (*)(void*))hr_next("pthread_exit");
    if (real != NULL) {
        real(value);
    }
    /* No C library pthread_exit: nothing sane is left to do. */
    abort();
}

/* Every interposer of the guard's, in the order of interposed.txt (the list
 * the hotreload executable exports), with this executable's definition. */
int sigaction(int, const struct sigaction*, struct sigaction*);
sighandler_t signal(int, sighandler_t);
sighandler_t sigset(int, sighandler_t);
int sigprocmask(int, const sigset_t*, sigset_t*);
int pthread_sigmask(int, const sigset_t*, sigset_t*);
int pthread_create(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);

/* sigset is obsolete, and interposed for plugins that still call it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static const struct {
    const char* name;
    const void* ours;
} hr_interposed[] = {
    {"exit", (const void*)exit},
    {"_exit", (const void*)_exit},
    {"_Exit", (const void*)_Exit},
    {"quick_exit", (const void*)quick_exit},
    {"pthread_exit", (const void*)pthread_exit},
    {"sigaction", (const void*)sigaction},
    {"signal", (const void*)signal},
    {"sigset", (const void*)sigset},
    {"sigprocmask", (const void*)sigprocmask},
    {"pthread_sigmask", (const void*)pthread_sigmask},
    {"pthread_create", (const void*)pthread_create},
};
#pragma GCC diagnostic pop
#define HR_INTERPOSED (sizeof hr_interposed / sizeof hr_interposed[0])

const char* hr_interposed_name(size_t index) {
    return index < HR_INTERPOSED ? hr_interposed[index].name : NULL;
}

/* Writes the names (space-separated, NUL-terminated, within `len`) of the
 * interposers a plugin's calls would not reach: those this executable does
 * not export, so that dlsym finds the C library's first. */
void hr_interposers_missing(char* out, size_t len) {
    size_t at = 0;
    if (len == 0) {
        return;
    }
    out[0] = 0;
    for (size_t i = 0; i < HR_INTERPOSED; i++) {
        if (dlsym(RTLD_DEFAULT, hr_interposed[i].name) == hr_interposed[i].ours) {
            continue;
        }
        size_t n = strlen(hr_interposed[i].name);
        if (at + n + 2 > len) {
            break;
        }
        memcpy(out + at, hr_interposed[i].name, n);
        at += n;
        out[at++] = ' ';
        out[at] = 0;
    }
}
