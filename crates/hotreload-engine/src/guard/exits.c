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
#include <stdlib.h>
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

/* Whether a plugin's call to exit() reaches the definition above, i.e.
 * whether this executable exports it; if not, say so rather than let a
 * plugin's exit() end the host unannounced. */
int hr_exit_is_caught(void) {
    return dlsym(RTLD_DEFAULT, "exit") == (void*)exit;
}
