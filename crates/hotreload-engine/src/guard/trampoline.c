/*
 * trampoline.c: the only place in hotreload where a non-local jump happens.
 *
 * Every call into plugin code goes through one of the hr_call_* functions
 * below. Each records a jump target, marks its thread as "inside plugin
 * code" and makes the call. If the call faults (SIGSEGV, SIGBUS, SIGFPE,
 * SIGILL, SIGTRAP, SIGABRT) or the watchdog interrupts it, the signal handler
 * records what happened and jumps back into the same hr_call_* frame, which
 * returns the signal number. The jump never crosses a Rust frame: it starts
 * in the handler (C) and lands here (C); everything between is plugin code.
 *
 * The jump target is recorded with GCC's __builtin_setjmp: frame pointer,
 * stack pointer and resume address, stored inline. glibc's sigsetjmp(env, 0)
 * is an out-of-line call that also saves and mangles every callee-saved
 * register; measured here it cost ~4 ns per call against ~1.5 ns for the
 * builtin (see benches/dispatch.rs). Neither saves the signal mask (that is
 * a system call, ~110 ns): on the fault path the mask is restored by hand.
 *
 * A fault outside plugin code keeps its normal meaning: the handler chains to
 * whatever handler was installed before (the Rust runtime's stack overflow
 * reporter, a host's own), or restores the default action so the process dies
 * with that signal and dumps core. The host's own bugs are never swallowed.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

typedef struct {
    int signo;  /* the signal; the watchdog's signal for a timeout */
    int code;   /* si_code */
    void* addr; /* si_addr: the faulting address */
    void* pc;   /* the instruction pointer at the fault */
} hr_fault_t;

typedef struct {
    /* __builtin_setjmp's buffer: five words (frame pointer, resume address,
     * stack pointer, and room the target may use). */
    void* env[5];
    volatile sig_atomic_t inside;
    hr_fault_t fault;
} hr_thread_guard_t;

/* initial-exec TLS: a fixed offset from the thread pointer, which a signal
 * handler can read without calling into the dynamic loader. */
static __thread hr_thread_guard_t hr_guard __attribute__((tls_model("initial-exec")));

static const int hr_fault_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT};
#define HR_FAULT_SIGNALS (sizeof hr_fault_signals / sizeof hr_fault_signals[0])

static struct sigaction hr_previous[NSIG];
static sigset_t hr_handled;
static int hr_timeout_signal;

static void* hr_context_pc(void* uctx) {
    ucontext_t* uc = uctx;
#if defined(__x86_64__)
    return (void*)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (void*)uc->uc_mcontext.pc;
#elif defined(__riscv)
    return (void*)uc->uc_mcontext.__gregs[0];
#else
    (void)uc;
    return NULL;
#endif
}

static void hr_chain(int signo, siginfo_t* info, void* uctx) {
    struct sigaction* prev = &hr_previous[signo];
    if ((prev->sa_flags & SA_SIGINFO) && prev->sa_sigaction != NULL) {
        prev->sa_sigaction(signo, info, uctx);
        return;
    }
    if (!(prev->sa_flags & SA_SIGINFO) && prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
        prev->sa_handler(signo);
        return;
    }
    /* Default action. For a fault, returning re-executes the faulting
     * instruction, which faults again and now gets the default action. A
     * signal sent by a process (abort, kill) is raised again instead; it is
     * blocked while this handler runs and delivered when it returns. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(signo, &dfl, NULL);
    if (info == NULL || info->si_code <= 0) {
        raise(signo);
    }
}

static void hr_handler(int signo, siginfo_t* info, void* uctx) {
    hr_thread_guard_t* g = &hr_guard;
    if (g->inside) {
        g->inside = 0;
        g->fault.signo = signo;
        g->fault.code = info != NULL ? info->si_code : 0;
        g->fault.addr = info != NULL ? info->si_addr : NULL;
        g->fault.pc = hr_context_pc(uctx);
        __builtin_longjmp(g->env, 1);
    }
    if (signo == hr_timeout_signal) {
        /* The watchdog fired just as the call returned: nothing to stop. */
        return;
    }
    hr_chain(signo, info, uctx);
}

/* After a jump out of the handler the handled signals are still blocked
 * (no mask was saved to restore): unblock them. pthread_sigmask is
 * async-signal-safe. */
static int hr_landed(void) {
    pthread_sigmask(SIG_UNBLOCK, &hr_handled, NULL);
    return hr_guard.fault.signo;
}

/* Installs the handler for the fault signals and the watchdog's signal,
 * remembering the previous handlers to chain to. Once per process. */
int hr_guard_install(int timeout_signal) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = hr_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigemptyset(&hr_handled);
    hr_timeout_signal = timeout_signal;
    for (size_t i = 0; i < HR_FAULT_SIGNALS; i++) {
        sigaddset(&hr_handled, hr_fault_signals[i]);
    }
    sigaddset(&hr_handled, timeout_signal);
    for (size_t i = 0; i < HR_FAULT_SIGNALS; i++) {
        if (sigaction(hr_fault_signals[i], &sa, &hr_previous[hr_fault_signals[i]]) != 0) {
            return -1;
        }
    }
    if (sigaction(timeout_signal, &sa, &hr_previous[timeout_signal]) != 0) {
        return -1;
    }
    return 0;
}

/* The alternate stack this file gave the calling thread, to free it. */
static __thread void* hr_alt_stack;
static __thread size_t hr_alt_stack_size;
static __thread stack_t hr_alt_stack_before;

/* Gives the calling thread an alternate signal stack, so that a stack
 * overflow in plugin code (which leaves no stack to run a handler on) can
 * still be caught. hr_guard_thread_fini gives it back. */
int hr_guard_thread_init(size_t size) {
    if (hr_alt_stack != NULL) {
        return 0;
    }
    void* mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        return -1;
    }
    stack_t ss;
    ss.ss_sp = mem;
    ss.ss_size = size;
    ss.ss_flags = 0;
    if (sigaltstack(&ss, &hr_alt_stack_before) != 0) {
        munmap(mem, size);
        return -1;
    }
    hr_alt_stack = mem;
    hr_alt_stack_size = size;
    return 0;
}

/* Puts back the thread's previous alternate stack (the runtime's, or none)
 * and unmaps the one hr_guard_thread_init made. Never called from a handler
 * running on it. */
void hr_guard_thread_fini(void) {
    if (hr_alt_stack == NULL) {
        return;
    }
    sigaltstack(&hr_alt_stack_before, NULL);
    munmap(hr_alt_stack, hr_alt_stack_size);
    hr_alt_stack = NULL;
}

/* The inside flag of the calling thread, for the watchdog's bookkeeping. */
const volatile sig_atomic_t* hr_guard_inside_flag(void) {
    return &hr_guard.inside;
}

/* The fault recorded by the calling thread's last faulting call. */
void hr_last_fault(hr_fault_t* out) {
    *out = hr_guard.fault;
}

/* The calls. Each returns 0, or the signal that ended the call. */

int hr_call_state(void (*f)(void*), void* state) {
    hr_thread_guard_t* g = &hr_guard;
    if (__builtin_setjmp(g->env) != 0) {
        return hr_landed();
    }
    g->inside = 1;
    f(state);
    g->inside = 0;
    return 0;
}

int hr_call_tick(void (*f)(void*, double), void* state, double dt) {
    hr_thread_guard_t* g = &hr_guard;
    if (__builtin_setjmp(g->env) != 0) {
        return hr_landed();
    }
    g->inside = 1;
    f(state, dt);
    g->inside = 0;
    return 0;
}

int hr_call_get_api(const void* (*f)(void), const void** out) {
    if (__builtin_setjmp(hr_guard.env) != 0) {
        return hr_landed();
    }
    hr_guard.inside = 1;
    *out = f();
    hr_guard.inside = 0;
    return 0;
}
