/*
 * refusals.c: what an isolated worker's confinement refused, said.
 *
 * The worker's seccomp filter (confine.rs) answers a refused system call
 * with SECCOMP_RET_TRAP: the kernel does not run the call and sends the
 * calling thread SIGSYS instead. The handler here makes the call return
 * -EPERM, exactly as a plain refusal would (the plugin sees the error and
 * goes on), and records what was tried, so that the worker can say it
 * after the call (hr_take_refusal). A refusal that nothing says is the
 * worst kind: a plugin whose kill(getppid(), SIGTERM) silently fails is
 * told nothing either.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

/* Refusals not yet taken, in a ring of HR_REFUSALS (older ones beyond it
 * are only counted): the system call's number and first three arguments.
 * Written by the handler on the thread that made the call, read by the
 * worker's calling thread after each call. */
#define HR_REFUSALS 8
typedef struct {
    long nr;
    long args[3];
} hr_refusal_t;
static hr_refusal_t hr_refused[HR_REFUSALS];
static volatile unsigned hr_refused_written; /* entries written in all */
static unsigned hr_refused_read;              /* entries taken in all */

static void hr_sigsys(int signo, siginfo_t* info, void* uctx) {
    (void)signo;
    if (info == NULL || info->si_code != 1 /* SYS_SECCOMP */) {
        return;
    }
    ucontext_t* uc = uctx;
    long args[3] = {0, 0, 0};
#if defined(__x86_64__)
    greg_t* r = uc->uc_mcontext.gregs;
    args[0] = r[REG_RDI];
    args[1] = r[REG_RSI];
    args[2] = r[REG_RDX];
    r[REG_RAX] = -EPERM;
#elif defined(__aarch64__)
    args[0] = (long)uc->uc_mcontext.regs[0];
    args[1] = (long)uc->uc_mcontext.regs[1];
    args[2] = (long)uc->uc_mcontext.regs[2];
    uc->uc_mcontext.regs[0] = (unsigned long long)(long long)-EPERM;
#else
    (void)uc;
#endif
    unsigned at = __atomic_load_n(&hr_refused_written, __ATOMIC_RELAXED);
    hr_refusal_t* e = &hr_refused[at % HR_REFUSALS];
    e->nr = info->si_syscall;
    e->args[0] = args[0];
    e->args[1] = args[1];
    e->args[2] = args[2];
    __atomic_store_n(&hr_refused_written, at + 1, __ATOMIC_RELEASE);
}

/* Installs the SIGSYS handler; before the filter. */
int hr_refusals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = hr_sigsys;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGSYS, &sa, NULL);
}

/* The oldest refusal not yet taken (its number, arguments, and how many
 * there were in all), or 0 when there is none; taken. Refusals that the
 * ring lost are skipped, still counted. */
int hr_take_refusal(long* nr, long* args, int* count) {
    unsigned written = __atomic_load_n(&hr_refused_written, __ATOMIC_ACQUIRE);
    if (hr_refused_read == written) {
        return 0;
    }
    if (written - hr_refused_read > HR_REFUSALS) {
        hr_refused_read = written - HR_REFUSALS;
    }
    hr_refusal_t* e = &hr_refused[hr_refused_read % HR_REFUSALS];
    *nr = e->nr;
    args[0] = e->args[0];
    args[1] = e->args[1];
    args[2] = e->args[2];
    *count = (int)written;
    hr_refused_read++;
    return 1;
}
