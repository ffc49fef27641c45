/*
 * buffers.c: C library calls that have the kernel write into a caller's
 * buffer.
 *
 * Pages of a large state are read-only between their first write of a tick
 * and the snapshot (pages.c). A write from user code faults and is let
 * through; a write by the kernel is not a fault: the system call fails with
 * EFAULT, and plugin code that reads a file straight into its state would
 * see an error that has nothing to do with it. So the hotreload executable
 * exports these functions; each makes the pages of its output buffers in a
 * tracked state writable (and marks them written), then calls the C
 * library's own. A buffer outside every tracked state costs a few compares.
 *
 * A raw system call, or a C library function not listed here, still gets
 * EFAULT on such a page (README, "Limits").
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

void hr_pages_prepare(const void* buf, size_t len);
int hr_pages_any(void);

/* The C library's function `name`, resolved once (an atomic pointer, so two
 * threads resolving it at once agree). */
static void* hr_next(void** slot, const char* name) {
    void* f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (f == NULL) {
        f = dlsym(RTLD_NEXT, name);
        __atomic_store_n(slot, f, __ATOMIC_RELEASE);
    }
    return f;
}

static void hr_prepare_iov(const struct iovec* iov, int count) {
    for (int i = 0; iov != NULL && i < count; i++) {
        hr_pages_prepare(iov[i].iov_base, iov[i].iov_len);
    }
}

/* Defines `ret name(params)`: prepares the buffers `PREPARE` names, then
 * calls the C library's `name` with `args`. */
#define HR_PASS(ret, name, params, args, PREPARE)                                          \
    static void* hr_next_##name;                                                           \
    __attribute__((visibility("default"))) ret name params {                               \
        ret(*real) params = (ret(*) params)hr_next(&hr_next_##name, #name);                \
        if (real == NULL) {                                                                \
            errno = ENOSYS;                                                                \
            return (ret) - 1;                                                              \
        }                                                                                  \
        if (hr_pages_any()) {                                                              \
            PREPARE;                                                                       \
        }                                                                                  \
        return real args;                                                                  \
    }

HR_PASS(ssize_t, read, (int fd, void* buf, size_t n), (fd, buf, n), hr_pages_prepare(buf, n))
HR_PASS(ssize_t, pread, (int fd, void* buf, size_t n, off_t at), (fd, buf, n, at),
        hr_pages_prepare(buf, n))
HR_PASS(ssize_t, pread64, (int fd, void* buf, size_t n, off64_t at), (fd, buf, n, at),
        hr_pages_prepare(buf, n))
HR_PASS(ssize_t, readv, (int fd, const struct iovec* iov, int count), (fd, iov, count),
        hr_prepare_iov(iov, count))
HR_PASS(ssize_t, preadv, (int fd, const struct iovec* iov, int count, off_t at),
        (fd, iov, count, at), hr_prepare_iov(iov, count))
HR_PASS(ssize_t, recv, (int fd, void* buf, size_t n, int flags), (fd, buf, n, flags),
        hr_pages_prepare(buf, n))
HR_PASS(ssize_t, recvfrom,
        (int fd, void* buf, size_t n, int flags, struct sockaddr* from, socklen_t* fromlen),
        (fd, buf, n, flags, from, fromlen), {
            hr_pages_prepare(buf, n);
            hr_pages_prepare(fromlen, sizeof *fromlen);
            hr_pages_prepare(from, fromlen != NULL ? *fromlen : 0);
        })
HR_PASS(ssize_t, recvmsg, (int fd, struct msghdr* msg, int flags), (fd, msg, flags), {
    if (msg != NULL) {
        hr_pages_prepare(msg, sizeof *msg);
        hr_prepare_iov(msg->msg_iov, (int)msg->msg_iovlen);
        hr_pages_prepare(msg->msg_name, msg->msg_namelen);
        hr_pages_prepare(msg->msg_control, msg->msg_controllen);
    }
})
HR_PASS(size_t, fread, (void* buf, size_t size, size_t count, FILE* f), (buf, size, count, f),
        hr_pages_prepare(buf, size * count))
HR_PASS(int, stat, (const char* path, struct stat* st), (path, st),
        hr_pages_prepare(st, sizeof *st))
HR_PASS(int, lstat, (const char* path, struct stat* st), (path, st),
        hr_pages_prepare(st, sizeof *st))
HR_PASS(int, fstat, (int fd, struct stat* st), (fd, st), hr_pages_prepare(st, sizeof *st))
HR_PASS(int, fstatat, (int dir, const char* path, struct stat* st, int flags),
        (dir, path, st, flags), hr_pages_prepare(st, sizeof *st))
HR_PASS(int, stat64, (const char* path, struct stat64* st), (path, st),
        hr_pages_prepare(st, sizeof *st))
HR_PASS(int, lstat64, (const char* path, struct stat64* st), (path, st),
        hr_pages_prepare(st, sizeof *st))
HR_PASS(int, fstat64, (int fd, struct stat64* st), (fd, st), hr_pages_prepare(st, sizeof *st))
HR_PASS(int, fstatat64, (int dir, const char* path, struct stat64* st, int flags),
        (dir, path, st, flags), hr_pages_prepare(st, sizeof *st))
HR_PASS(int, statx,
        (int dir, const char* path, int flags, unsigned int mask, struct statx* st),
        (dir, path, flags, mask, st), hr_pages_prepare(st, sizeof *st))
HR_PASS(ssize_t, getrandom, (void* buf, size_t n, unsigned int flags), (buf, n, flags),
        hr_pages_prepare(buf, n))
HR_PASS(int, poll, (struct pollfd* fds, nfds_t n, int timeout), (fds, n, timeout),
        hr_pages_prepare(fds, n * sizeof *fds))
HR_PASS(int, ppoll,
        (struct pollfd* fds, nfds_t n, const struct timespec* timeout, const sigset_t* mask),
        (fds, n, timeout, mask), hr_pages_prepare(fds, n * sizeof *fds))
HR_PASS(int, epoll_wait, (int ep, struct epoll_event* events, int max, int timeout),
        (ep, events, max, timeout),
        hr_pages_prepare(events, max > 0 ? (size_t)max * sizeof *events : 0))
HR_PASS(int, select,
        (int n, fd_set* r, fd_set* w, fd_set* e, struct timeval* timeout), (n, r, w, e, timeout),
        {
            hr_pages_prepare(r, sizeof *r);
            hr_pages_prepare(w, sizeof *w);
            hr_pages_prepare(e, sizeof *e);
            hr_pages_prepare(timeout, sizeof *timeout);
        })
HR_PASS(int, pipe, (int fds[2]), (fds), hr_pages_prepare(fds, 2 * sizeof(int)))
HR_PASS(int, pipe2, (int fds[2], int flags), (fds, flags), hr_pages_prepare(fds, 2 * sizeof(int)))
HR_PASS(int, socketpair, (int domain, int type, int protocol, int fds[2]),
        (domain, type, protocol, fds), hr_pages_prepare(fds, 2 * sizeof(int)))
HR_PASS(ssize_t, readlink, (const char* path, char* buf, size_t n), (path, buf, n),
        hr_pages_prepare(buf, n))
HR_PASS(int, clock_gettime, (clockid_t clock, struct timespec* ts), (clock, ts),
        hr_pages_prepare(ts, sizeof *ts))

/* getcwd returns a pointer: NULL, not -1, when it cannot be reached. */
static void* hr_next_getcwd;
__attribute__((visibility("default"))) char* getcwd(char* buf, size_t n) {
    char* (*real)(char*, size_t) = (char* (*)(char*, size_t))hr_next(&hr_next_getcwd, "getcwd");
    if (real == NULL) {
        errno = ENOSYS;
        return NULL;
    }
    if (hr_pages_any()) {
        hr_pages_prepare(buf, n);
    }
    return real(buf, n);
}

/* _FORTIFY_SOURCE builds call the checking variants instead. */
HR_PASS(ssize_t, __read_chk, (int fd, void* buf, size_t n, size_t room), (fd, buf, n, room),
        hr_pages_prepare(buf, n))
HR_PASS(ssize_t, __pread_chk, (int fd, void* buf, size_t n, off_t at, size_t room),
        (fd, buf, n, at, room), hr_pages_prepare(buf, n))
HR_PASS(ssize_t, __pread64_chk, (int fd, void* buf, size_t n, off64_t at, size_t room),
        (fd, buf, n, at, room), hr_pages_prepare(buf, n))
HR_PASS(ssize_t, __recv_chk, (int fd, void* buf, size_t n, size_t room, int flags),
        (fd, buf, n, room, flags), hr_pages_prepare(buf, n))
HR_PASS(size_t, __fread_chk, (void* buf, size_t room, size_t size, size_t count, FILE* f),
        (buf, room, size, count, f), hr_pages_prepare(buf, size * count))

/* Resolves the C library's functions before any thread needs them. */
void hr_buffers_init(void) {
    (void)hr_next(&hr_next_read, "read");
    (void)hr_next(&hr_next_fread, "fread");
    (void)hr_next(&hr_next_clock_gettime, "clock_gettime");
}
