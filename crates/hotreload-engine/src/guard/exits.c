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
 * The exec family replaces the process as surely as exit ends it: called
 * inside a guarded call of the host's own process it is a fault of its
 * version too. In the child of a fork plugin code made, every one of these
 * is the C library's own: that process is the plugin's (fork and exec is
 * how it runs a program), and it never returns into the host's code (see
 * hr_guard_in_forked_child).
 *
 * What cannot be caught this way: the exit_group and execve system calls
 * made directly, SIGKILL, and a call from a thread the plugin started (that
 * thread is not inside a guarded call). The isolated mode is for those.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Pseudo-signals in a fault record: negative, so never a real signal. */
#define HR_LEFT_EXIT (-1)        /* exit(), _exit(), _Exit(), quick_exit() */
#define HR_LEFT_THREAD_EXIT (-2) /* pthread_exit() */
#define HR_LEFT_EXEC (-5)        /* the exec family */

/* The fault record's code for the ways out: the status in the low byte,
 * which function above it (guard/mod.rs names them). */
#define HR_EXIT_CODE(status, kind) (((status) & 0xff) | ((kind) << 8))
#define HR_BY_EXIT 0
#define HR_BY__EXIT 1
#define HR_BY__EXIT_C99 2
#define HR_BY_QUICK_EXIT 3

void hr_guard_leave_if_inside(int signo, int code, void* pc);
int hr_guard_plugin_thread_leaving(int signo, int code, void* pc);

/* An exit called on a thread plugin code started (not inside a guarded
 * call) ends that thread, not the server: the tick loop reports it as that
 * version's fault (see hr_guard_plugin_thread_leaving). */
static void hr_end_plugin_thread_if_one(int code, void* pc) {
    if (hr_guard_plugin_thread_leaving(HR_LEFT_EXIT, code, pc)) {
        void (*real)(void*) = (void (*)(void*))dlsym(RTLD_NEXT, "pthread_exit");
        if (real != NULL) {
            real(NULL);
        }
    }
}

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
    hr_guard_leave_if_inside(HR_LEFT_EXIT, HR_EXIT_CODE(status, HR_BY_EXIT), __builtin_return_address(0));
    hr_end_plugin_thread_if_one(HR_EXIT_CODE(status, HR_BY_EXIT), __builtin_return_address(0));
    void (*real)(int) = (void (*)(int))hr_next("exit");
    if (real != NULL) {
        real(status);
    }
    hr_exit_group(status);
}

__attribute__((visibility("default"), noreturn)) void quick_exit(int status) {
    hr_guard_leave_if_inside(HR_LEFT_EXIT, HR_EXIT_CODE(status, HR_BY_QUICK_EXIT), __builtin_return_address(0));
    hr_end_plugin_thread_if_one(HR_EXIT_CODE(status, HR_BY_QUICK_EXIT), __builtin_return_address(0));
    void (*real)(int) = (void (*)(int))hr_next("quick_exit");
    if (real != NULL) {
        real(status);
    }
    hr_exit_group(status);
}

/* _exit and _Exit run nothing: they are the system call. */
__attribute__((visibility("default"), noreturn)) void _exit(int status) {
    hr_guard_leave_if_inside(HR_LEFT_EXIT, HR_EXIT_CODE(status, HR_BY__EXIT), __builtin_return_address(0));
    hr_end_plugin_thread_if_one(HR_EXIT_CODE(status, HR_BY__EXIT), __builtin_return_address(0));
    hr_exit_group(status);
}

__attribute__((visibility("default"), noreturn)) void _Exit(int status) {
    hr_guard_leave_if_inside(HR_LEFT_EXIT, HR_EXIT_CODE(status, HR_BY__EXIT_C99), __builtin_return_address(0));
    hr_end_plugin_thread_if_one(HR_EXIT_CODE(status, HR_BY__EXIT_C99), __builtin_return_address(0));
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

typedef int (*hr_execve_fn)(const char*, char* const[], char* const[]);
typedef int (*hr_execv_fn)(const char*, char* const[]);
typedef int (*hr_execvpe_fn)(const char*, char* const[], char* const[]);
typedef int (*hr_fexecve_fn)(int, char* const[], char* const[]);
typedef int (*hr_execveat_fn)(int, const char*, char* const[], char* const[], int);

extern char** environ;

/* An exec from plugin code inside a guarded call ends that call, as a
 * fault of its version; outside one (the host's own, or in a forked child)
 * it goes on to the C library's. */
#define HR_LEAVE_ON_EXEC() \
    hr_guard_leave_if_inside(HR_LEFT_EXEC, 0, __builtin_return_address(0))

__attribute__((visibility("default"))) int execve(const char* path, char* const argv[],
                                                  char* const envp[]) {
    HR_LEAVE_ON_EXEC();
    hr_execve_fn real = (hr_execve_fn)hr_next("execve");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(path, argv, envp);
}

__attribute__((visibility("default"))) int execv(const char* path, char* const argv[]) {
    HR_LEAVE_ON_EXEC();
    hr_execv_fn real = (hr_execv_fn)hr_next("execv");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(path, argv);
}

__attribute__((visibility("default"))) int execvp(const char* file, char* const argv[]) {
    HR_LEAVE_ON_EXEC();
    hr_execv_fn real = (hr_execv_fn)hr_next("execvp");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(file, argv);
}

__attribute__((visibility("default"))) int execvpe(const char* file, char* const argv[],
                                                   char* const envp[]) {
    HR_LEAVE_ON_EXEC();
    hr_execvpe_fn real = (hr_execvpe_fn)hr_next("execvpe");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(file, argv, envp);
}

__attribute__((visibility("default"))) int fexecve(int fd, char* const argv[],
                                                   char* const envp[]) {
    HR_LEAVE_ON_EXEC();
    hr_fexecve_fn real = (hr_fexecve_fn)hr_next("fexecve");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(fd, argv, envp);
}

__attribute__((visibility("default"))) int execveat(int dirfd, const char* path,
                                                    char* const argv[], char* const envp[],
                                                    int flags) {
    HR_LEAVE_ON_EXEC();
    hr_execveat_fn real = (hr_execveat_fn)hr_next("execveat");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(dirfd, path, argv, envp, flags);
}

/* The list forms gather their arguments (as many as fit in a page of
 * pointers; beyond that, E2BIG as the kernel would say) and go through the
 * vector forms above. */
#define HR_EXEC_MAX_ARGS 512

static int hr_gather(const char* first, va_list ap, char** argv) {
    int n = 0;
    argv[n++] = (char*)first;
    while (argv[n - 1] != NULL) {
        if (n == HR_EXEC_MAX_ARGS) {
            errno = E2BIG;
            return -1;
        }
        argv[n++] = va_arg(ap, char*);
    }
    return n;
}

__attribute__((visibility("default"))) int execl(const char* path, const char* arg, ...) {
    HR_LEAVE_ON_EXEC();
    char* argv[HR_EXEC_MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    int n = hr_gather(arg, ap, argv);
    va_end(ap);
    return n < 0 ? -1 : execv(path, argv);
}

__attribute__((visibility("default"))) int execlp(const char* file, const char* arg, ...) {
    HR_LEAVE_ON_EXEC();
    char* argv[HR_EXEC_MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    int n = hr_gather(arg, ap, argv);
    va_end(ap);
    return n < 0 ? -1 : execvp(file, argv);
}

__attribute__((visibility("default"))) int execle(const char* path, const char* arg, ...) {
    HR_LEAVE_ON_EXEC();
    char* argv[HR_EXEC_MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    int n = hr_gather(arg, ap, argv);
    char* const* envp = n < 0 ? NULL : va_arg(ap, char* const*);
    va_end(ap);
    return n < 0 ? -1 : execve(path, argv, envp);
}

/* Every interposer of the guard's, in the order of interposed.txt (the list
 * the hotreload executable exports), with this executable's definition. */
int sigaction(int, const struct sigaction*, struct sigaction*);
sighandler_t signal(int, sighandler_t);
sighandler_t sigset(int, sighandler_t);
int sigprocmask(int, const sigset_t*, sigset_t*);
int pthread_sigmask(int, const sigset_t*, sigset_t*);
int pthread_create(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
int timer_create(clockid_t, struct sigevent*, timer_t*);
int timer_delete(timer_t);
int close(int);
/* buffers.c: their prototypes are the C library's; only their addresses
 * are needed here. */
extern char read_address_only __asm__("read");
extern char pread_address_only __asm__("pread");
extern char pread64_address_only __asm__("pread64");
extern char readv_address_only __asm__("readv");
extern char preadv_address_only __asm__("preadv");
extern char recv_address_only __asm__("recv");
extern char recvfrom_address_only __asm__("recvfrom");
extern char recvmsg_address_only __asm__("recvmsg");
extern char fread_address_only __asm__("fread");
extern char stat_address_only __asm__("stat");
extern char lstat_address_only __asm__("lstat");
extern char fstat_address_only __asm__("fstat");
extern char fstatat_address_only __asm__("fstatat");
extern char stat64_address_only __asm__("stat64");
extern char lstat64_address_only __asm__("lstat64");
extern char fstat64_address_only __asm__("fstat64");
extern char fstatat64_address_only __asm__("fstatat64");
extern char statx_address_only __asm__("statx");
extern char getrandom_address_only __asm__("getrandom");
extern char poll_address_only __asm__("poll");
extern char ppoll_address_only __asm__("ppoll");
extern char epoll_wait_address_only __asm__("epoll_wait");
extern char select_address_only __asm__("select");
extern char pipe_address_only __asm__("pipe");
extern char pipe2_address_only __asm__("pipe2");
extern char socketpair_address_only __asm__("socketpair");
extern char readlink_address_only __asm__("readlink");
extern char clock_gettime_address_only __asm__("clock_gettime");
extern char getcwd_address_only __asm__("getcwd");
extern char __read_chk_address_only __asm__("__read_chk");
extern char __pread_chk_address_only __asm__("__pread_chk");
extern char __pread64_chk_address_only __asm__("__pread64_chk");
extern char __recv_chk_address_only __asm__("__recv_chk");
extern char __fread_chk_address_only __asm__("__fread_chk");

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
    {"execve", (const void*)execve},
    {"execv", (const void*)execv},
    {"execvp", (const void*)execvp},
    {"execvpe", (const void*)execvpe},
    {"fexecve", (const void*)fexecve},
    {"execveat", (const void*)execveat},
    {"execl", (const void*)execl},
    {"execlp", (const void*)execlp},
    {"execle", (const void*)execle},
    {"timer_create", (const void*)timer_create},
    {"timer_delete", (const void*)timer_delete},
    {"close", (const void*)close},
    {"read", (const void*)&read_address_only},
    {"pread", (const void*)&pread_address_only},
    {"pread64", (const void*)&pread64_address_only},
    {"readv", (const void*)&readv_address_only},
    {"preadv", (const void*)&preadv_address_only},
    {"recv", (const void*)&recv_address_only},
    {"recvfrom", (const void*)&recvfrom_address_only},
    {"recvmsg", (const void*)&recvmsg_address_only},
    {"fread", (const void*)&fread_address_only},
    {"stat", (const void*)&stat_address_only},
    {"lstat", (const void*)&lstat_address_only},
    {"fstat", (const void*)&fstat_address_only},
    {"fstatat", (const void*)&fstatat_address_only},
    {"stat64", (const void*)&stat64_address_only},
    {"lstat64", (const void*)&lstat64_address_only},
    {"fstat64", (const void*)&fstat64_address_only},
    {"fstatat64", (const void*)&fstatat64_address_only},
    {"statx", (const void*)&statx_address_only},
    {"getrandom", (const void*)&getrandom_address_only},
    {"poll", (const void*)&poll_address_only},
    {"ppoll", (const void*)&ppoll_address_only},
    {"epoll_wait", (const void*)&epoll_wait_address_only},
    {"select", (const void*)&select_address_only},
    {"pipe", (const void*)&pipe_address_only},
    {"pipe2", (const void*)&pipe2_address_only},
    {"socketpair", (const void*)&socketpair_address_only},
    {"readlink", (const void*)&readlink_address_only},
    {"clock_gettime", (const void*)&clock_gettime_address_only},
    {"getcwd", (const void*)&getcwd_address_only},
    {"__read_chk", (const void*)&__read_chk_address_only},
    {"__pread_chk", (const void*)&__pread_chk_address_only},
    {"__pread64_chk", (const void*)&__pread64_chk_address_only},
    {"__recv_chk", (const void*)&__recv_chk_address_only},
    {"__fread_chk", (const void*)&__fread_chk_address_only},
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
