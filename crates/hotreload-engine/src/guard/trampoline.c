/*
 * trampoline.c: the only place in hotreload where plugin code is left early.
 *
 * Every call into plugin code goes through one of the hr_call_* functions
 * below. Each records how to get back to its caller, marks its thread as
 * "inside plugin code" and makes the call. If the call faults (SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT) or the watchdog interrupts it,
 * the signal handler records what happened and makes the hr_call_* function
 * return the signal number to its caller. Control never lands in a Rust frame
 * other than by an ordinary return from these functions.
 *
 * Two ways back:
 * - x86-64, hr_call_state and hr_call_tick (the hot path): a few lines of
 *   assembly store the caller's callee-saved registers and stack pointer
 *   (stores only; a normal return needs no reload) and call. On a fault the
 *   handler rewrites the interrupted context so that returning from the
 *   handler resumes in the caller exactly as if the trampoline had returned
 *   the signal number; sigreturn also restores the signal mask. This costs
 *   a few ns per call over a bare call (benches/dispatch.rs).
 * - Everything else (hr_call_get_api, other architectures): GCC's
 *   __builtin_setjmp and __builtin_longjmp from the handler (~1.5 ns), with
 *   the signal mask restored by hand after landing.
 * glibc's sigsetjmp(env, 0) measured ~4 ns here, and sigsetjmp(env, 1), which
 * saves the mask with a system call, ~110 ns.
 *
 * The record is per thread, so any number of threads can call plugin code.
 * A fault outside plugin code keeps its normal meaning: the handler chains to
 * whatever handler was installed before (the Rust runtime's stack overflow
 * reporter, a host's own), or restores the default action so the process dies
 * with that signal and dumps core. The host's own bugs are never swallowed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <ucontext.h>
#include <unistd.h>

typedef struct {
    int signo;  /* the signal; the watchdog's signal for a timeout */
    int code;   /* si_code */
    void* addr; /* si_addr: the faulting address */
    void* pc;   /* the instruction pointer at the fault */
} hr_fault_t;

typedef struct {
    /* For the x86-64 fast path (hr_call_state, hr_call_tick): the caller's
     * callee-saved registers rbx, rbp, r12-r15, and the stack pointer at
     * entry, which points at the return address. Offsets are fixed: the
     * assembly below uses them. */
    uint64_t saved[7];
    /* 0 outside plugin code; HR_INSIDE_CONTEXT or HR_INSIDE_JUMP inside. */
    volatile sig_atomic_t inside;
    /* HR_TOUCHED once plugin code in the current call changed (or tried to
     * change) process-wide state through the interposers in process.c; a
     * call that returns normally then returns HR_TOUCHED instead of 0, and
     * the caller repairs. Right after `inside`: the assembly reads it. */
    volatile sig_atomic_t touched;
    /* The top of the stack plugin code runs on (16-byte aligned), or NULL
     * to run it on the thread's own. A stack of its own keeps the host's
     * frames out of reach of a plugin that overruns its own: a smashed
     * return address of the host's would kill it after the call returned.
     * The assembly reads it. */
    void* plugin_stack_top;
    /* What the last call on the x86-64 path returned in rax (migrate's
     * int, describe's length, an entry point's table). */
    uint64_t result;
    /* For the portable path: __builtin_setjmp's buffer, five words (frame
     * pointer, resume address, stack pointer, and room the target may use). */
    void* env[5];
    hr_fault_t fault;
    /* The thread's signal mask as the host set it, put back after plugin
     * code changed it (sigprocmask, or a longjmp restoring a garbage one). */
    sigset_t host_mask;
    /* What plugin code tried in the current call, for the repair report. */
    uint64_t refused_signals; /* bit n-1: a handler change for signal n refused */
    int mask_calls;           /* sigprocmask/pthread_sigmask calls */
    /* This thread was started by plugin code (see threads.c): everything
     * it runs is plugin code. */
    int plugin_thread;
    /* Since the last repair: the mask differed after a call (changed around
     * the interposers, with the raw system call or a garbage longjmp), or
     * the alternate signal stack had been replaced or disabled. */
    int mask_put_back;
    int altstack_put_back;
    int std_closed; /* bit n: plugin code closed standard descriptor n */
} hr_thread_guard_t;

/* Sets the calling thread's mask with the system call itself: async-signal-
 * safe, and never through the interposer in process.c. */
static void hr_set_mask(const sigset_t* mask, sigset_t* old) {
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, mask, old, (size_t)(_NSIG / 8));
}

void hr_process_init(void);
void hr_threads_init(void);
void hr_buffers_init(void);
int hr_pages_on_fault(void* addr);

/* How the handler leaves plugin code. */
#define HR_INSIDE_CONTEXT 1 /* rewrite the interrupted context (x86-64) */
#define HR_INSIDE_JUMP 2    /* __builtin_longjmp (any architecture) */

_Static_assert(offsetof(hr_thread_guard_t, saved) == 0, "the assembly stores registers at offset 0");
_Static_assert(offsetof(hr_thread_guard_t, inside) == 56, "the assembly sets `inside` at offset 56");
_Static_assert(offsetof(hr_thread_guard_t, touched) == 60, "the assembly reads `touched` at offset 60");
_Static_assert(offsetof(hr_thread_guard_t, plugin_stack_top) == 64,
               "the assembly reads `plugin_stack_top` at offset 64");
_Static_assert(offsetof(hr_thread_guard_t, result) == 72,
               "the assembly stores `result` at offset 72");

/* Returned by a call that completed but changed process-wide state. */
#define HR_TOUCHED (-3)

/* initial-exec TLS: a fixed offset from the thread pointer, which a signal
 * handler can read without calling into the dynamic loader. */
static __thread hr_thread_guard_t hr_guard __attribute__((tls_model("initial-exec"), aligned(64)));

static const int hr_fault_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT,
                                       /* A timer armed by plugin code (alarm, setitimer)
                                        * fires one of these; by default it kills. */
                                       SIGALRM, SIGVTALRM, SIGPROF};
#define HR_FAULT_SIGNALS (sizeof hr_fault_signals / sizeof hr_fault_signals[0])

/* A timer signal that came while no plugin code ran: the tick loop takes it
 * as a fault of the running version at the next tick (see
 * hr_take_timer_signal). */
static volatile sig_atomic_t hr_timer_signal;

static int hr_is_timer_signal(int signo) {
    return signo == SIGALRM || signo == SIGVTALRM || signo == SIGPROF;
}

/* Stops every interval timer of the process: the one that fired would fire
 * again. setitimer is a plain system call, safe in a handler. */
static void hr_disarm_timers(void) {
    struct itimerval off;
    memset(&off, 0, sizeof off);
    setitimer(ITIMER_REAL, &off, NULL);
    setitimer(ITIMER_VIRTUAL, &off, NULL);
    setitimer(ITIMER_PROF, &off, NULL);
}

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

/* A fault on a thread plugin code started (outside any guarded call: that
 * thread has no caller to go back to). The default action would end the
 * process, and returning would fault again for ever. The thread is stopped
 * for good instead: its first crash is recorded for the tick loop to report
 * (hr_take_thread_crash), and it waits in here with every signal blocked,
 * never to run plugin code again. Its stack and its library stay (the
 * thread is still recorded as running, so its version is never unmapped). */
static volatile sig_atomic_t hr_crash_signo;
/* See hr_atfork_child. */
static volatile sig_atomic_t hr_forked_from_plugin;
static volatile sig_atomic_t hr_crash_code;
static volatile sig_atomic_t hr_crash_tid;
static void* volatile hr_crash_addr;
static void* volatile hr_crash_pc;

__attribute__((noreturn)) static void hr_park_crashed_thread(int signo, siginfo_t* info,
                                                             void* uctx) {
    if (hr_crash_signo == 0) {
        hr_crash_code = info != NULL ? info->si_code : 0;
        hr_crash_addr = info != NULL ? info->si_addr : NULL;
        hr_crash_pc = hr_context_pc(uctx);
        hr_crash_tid = (sig_atomic_t)syscall(SYS_gettid);
        hr_crash_signo = signo;
    }
    sigset_t all;
    sigfillset(&all);
    hr_set_mask(&all, NULL);
    for (;;) {
        syscall(SYS_pause);
    }
}

/* Whether an exit called on a thread plugin code started ends only that
 * thread (in the server: the process is the server's) or the process (in an
 * isolated worker, whose end the server reports as that version's fault). */
static volatile sig_atomic_t hr_thread_exits_end_the_process;

void hr_guard_thread_exits_end_the_process(void) {
    hr_thread_exits_end_the_process = 1;
}

/* For the exit interposers: on a thread plugin code started, outside any
 * guarded call, in the server, records the exit as that thread's end (for
 * hr_take_thread_crash, with `signo` one of the HR_LEFT_* pseudo-signals)
 * and returns 1: the caller ends the thread instead of the process. */
int hr_guard_plugin_thread_leaving(int signo, int code, void* pc) {
    hr_thread_guard_t* g = &hr_guard;
    if (g->inside != 0 || g->plugin_thread == 0 || hr_thread_exits_end_the_process ||
        hr_forked_from_plugin) {
        return 0;
    }
    if (hr_crash_signo == 0) {
        hr_crash_code = code;
        hr_crash_addr = NULL;
        hr_crash_pc = pc;
        hr_crash_tid = (sig_atomic_t)syscall(SYS_gettid);
        hr_crash_signo = signo;
    }
    return 1;
}

/* The first crash of a plugin thread since the last call of this, into
 * `out` (and its thread id); taken. 0 when there was none. */
int hr_take_thread_crash(hr_fault_t* out, int* tid) {
    int signo = hr_crash_signo;
    if (signo == 0) {
        return 0;
    }
    out->signo = signo;
    out->code = hr_crash_code;
    out->addr = hr_crash_addr;
    out->pc = hr_crash_pc;
    *tid = hr_crash_tid;
    hr_crash_signo = 0;
    return signo;
}

/* The stack plugin code runs on (hr_plugin_stack, made by
 * hr_guard_thread_init): as large as a main thread's by default, reserved
 * but only backed as it is touched, with inaccessible pages below and above
 * it, so that an overflow or a smash faults (on the alternate stack)
 * instead of running into other memory. A SIGSEGV in one of those pages
 * gets a code of its own, so that the fault line says what happened
 * (guard/mod.rs). */
#define HR_CODE_STACK_OVERFLOW 0x5301
#define HR_CODE_STACK_SMASHED 0x5302
static __thread void* hr_plugin_stack;
#define HR_PLUGIN_STACK (8u << 20)
#define HR_GUARD_PAGE ((size_t)65536)
#define HR_PLUGIN_STACK_MAPPING (HR_PLUGIN_STACK + 2 * HR_GUARD_PAGE)

static int hr_stack_code(void* addr, int code) {
    char* base = hr_plugin_stack;
    char* at = addr;
    if (base == NULL) {
        return code;
    }
    if (at >= base && at < base + HR_GUARD_PAGE) {
        return HR_CODE_STACK_OVERFLOW;
    }
    char* top = base + HR_GUARD_PAGE + HR_PLUGIN_STACK;
    if (at >= top && at < top + HR_GUARD_PAGE) {
        return HR_CODE_STACK_SMASHED;
    }
    return code;
}

static void hr_handler(int signo, siginfo_t* info, void* uctx) {
    if (signo == SIGSEGV && info != NULL && info->si_code == SEGV_ACCERR &&
        hr_pages_on_fault(info->si_addr)) {
        /* The first write to a page of a tracked state (pages.c): it is
         * writable now, and the write is made again on return. */
        return;
    }
    hr_thread_guard_t* g = &hr_guard;
    int inside = g->inside;
    if (hr_is_timer_signal(signo)) {
        hr_disarm_timers();
    }
    if (inside != 0) {
        g->inside = 0;
        g->fault.signo = signo;
        g->fault.code = info != NULL ? info->si_code : 0;
        if (signo == SIGSEGV && info != NULL && info->si_code > 0) {
            g->fault.code = hr_stack_code(info->si_addr, g->fault.code);
        }
        g->fault.addr = info != NULL ? info->si_addr : NULL;
        g->fault.pc = hr_context_pc(uctx);
#if defined(__x86_64__)
        if (inside == HR_INSIDE_CONTEXT) {
            /* Resume as if the trampoline had returned `signo` to its caller:
             * pop the return address it was called with, and give the caller
             * back its callee-saved registers. sigreturn restores the signal
             * mask the plugin code ran with, so nothing stays blocked. */
            greg_t* r = ((ucontext_t*)uctx)->uc_mcontext.gregs;
            uint64_t* sp = (uint64_t*)g->saved[6];
            r[REG_RIP] = (greg_t)sp[0];
            r[REG_RSP] = (greg_t)(sp + 1);
            r[REG_RAX] = signo;
            r[REG_RBX] = (greg_t)g->saved[0];
            r[REG_RBP] = (greg_t)g->saved[1];
            r[REG_R12] = (greg_t)g->saved[2];
            r[REG_R13] = (greg_t)g->saved[3];
            r[REG_R14] = (greg_t)g->saved[4];
            r[REG_R15] = (greg_t)g->saved[5];
            /* And the host's mask, whatever plugin code left. */
            ((ucontext_t*)uctx)->uc_sigmask = g->host_mask;
            return;
        }
#endif
        __builtin_longjmp(g->env, 1);
    }
    if (signo == hr_timeout_signal) {
        /* The watchdog fired just as the call returned: nothing to stop. */
        return;
    }
    if (g->plugin_thread && !hr_is_timer_signal(signo)) {
        hr_park_crashed_thread(signo, info, uctx);
    }
    if (hr_is_timer_signal(signo)) {
        struct sigaction* prev = &hr_previous[signo];
        int host_handles_it = (prev->sa_flags & SA_SIGINFO) ? prev->sa_sigaction != NULL
                                                            : (prev->sa_handler != SIG_DFL &&
                                                               prev->sa_handler != SIG_IGN);
        if (!host_handles_it) {
            /* Not the host's timer: plugin code armed it. */
            hr_timer_signal = signo;
            return;
        }
    }
    hr_chain(signo, info, uctx);
}

/* After __builtin_longjmp out of the handler the handled signals are still
 * blocked (no mask was saved to restore), and plugin code may have changed
 * the mask besides: put the host's back, with the system call itself, which is
 * async-signal-safe. */
static int hr_landed(void) {
    hr_set_mask(&hr_guard.host_mask, NULL);
    return hr_guard.fault.signo;
}

#if defined(__x86_64__)
/* Returns from the hr_call_* fast path whose registers `saved` holds, with
 * `code` as its result: the same resumption hr_handler makes by rewriting
 * the interrupted context, done from ordinary code. */
__attribute__((noreturn)) void hr_resume_caller(const uint64_t* saved, int code);
__asm__(
    ".text\n"
    ".globl hr_resume_caller\n"
    ".hidden hr_resume_caller\n"
    ".type hr_resume_caller, @function\n"
    "hr_resume_caller:\n"
    "    movq 0(%rdi), %rbx\n"
    "    movq 8(%rdi), %rbp\n"
    "    movq 16(%rdi), %r12\n"
    "    movq 24(%rdi), %r13\n"
    "    movq 32(%rdi), %r14\n"
    "    movq 40(%rdi), %r15\n"
    "    movq 48(%rdi), %rsp\n" /* at the return address */
    "    movl %esi, %eax\n"
    "    ret\n"
    ".size hr_resume_caller, . - hr_resume_caller\n");
#endif

/* Set in the child of a fork made by plugin code (pthread_atfork's child
 * handler, on the thread that forked, which is the child's only one). That
 * process is the plugin's: its exits and execs are the C library's own, and
 * when plugin code returns into the host's code there (or faults), the
 * child ends at once, silently, instead of running a second copy of the
 * server. A fork made with the raw system call runs no handler. */

static void hr_atfork_child(void) {
    if (hr_guard.inside != 0 || hr_guard.plugin_thread != 0) {
        hr_forked_from_plugin = 1;
    }
}

int hr_guard_in_forked_child(void) {
    return hr_forked_from_plugin;
}

/* Ends the forked child of plugin code that came back into the host's
 * code: at once, running nothing of the host's (no atexit handler, no
 * buffered output). */
__attribute__((noreturn)) void hr_guard_end_forked_child(void) {
    /* One line on the server's standard error, formatted by hand: another
     * thread may have held stdio's locks at the fork. */
    char line[256];
    const char* head = "[guard] the child of a fork plugin code made (pid ";
    const char* tail = ") came back into the host's code; it ends there, as a second server "
                       "must not run (a forked child should exec or _exit)\n";
    size_t n = 0;
    for (const char* c = head; *c != 0 && n < sizeof line; c++) {
        line[n++] = *c;
    }
    char digits[24];
    size_t d = 0;
    for (long pid = (long)syscall(SYS_getpid); pid > 0 && d < sizeof digits; pid /= 10) {
        digits[d++] = (char)('0' + pid % 10);
    }
    while (d > 0 && n < sizeof line) {
        line[n++] = digits[--d];
    }
    for (const char* c = tail; *c != 0 && n < sizeof line; c++) {
        line[n++] = *c;
    }
    (void)!write(2, line, n);
    for (;;) {
        syscall(SYS_exit_group, 0);
    }
}

/* Called from ordinary code (not a handler) by the interposers in exits.c:
 * if this thread is inside a guarded call, ends that call as if it had
 * faulted with `signo` (one of the HR_LEFT_* pseudo-signals, all negative so
 * they never clash with a real signal), recording `code` and the caller's
 * address `pc`; it then does not return. Outside plugin code it returns, and
 * the interposer does what was asked. */
void hr_guard_leave_if_inside(int signo, int code, void* pc) {
    hr_thread_guard_t* g = &hr_guard;
    int inside = g->inside;
    if (inside == 0 || hr_forked_from_plugin) {
        return;
    }
    g->inside = 0;
    g->fault.signo = signo;
    g->fault.code = code;
    g->fault.addr = NULL;
    g->fault.pc = pc;
#if defined(__x86_64__)
    if (inside == HR_INSIDE_CONTEXT) {
        hr_set_mask(&g->host_mask, NULL);
        hr_resume_caller(g->saved, signo);
    }
#endif
    __builtin_longjmp(g->env, 1);
}

/* Whether the calling thread is inside a guarded plugin call. */
int hr_guard_inside(void) {
    return hr_guard.inside != 0;
}

/* Installs the handler for the fault signals and the watchdog's signal,
 * remembering the previous handlers to chain to. Once per process. */
int hr_guard_install(int timeout_signal) {
    hr_process_init();
    hr_threads_init();
    hr_buffers_init();
    if (pthread_atfork(NULL, NULL, hr_atfork_child) != 0) {
        return -1;
    }
    /* A file size limit plugin code lowered makes the server's next write
     * past it raise SIGXFSZ, which kills by default: ignored, the write
     * fails with EFBIG instead, and the save says so (the limit itself is
     * put back, see baseline.rs). */
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGXFSZ, &ignore, NULL);
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

/* Puts the guard's handler back on every signal it handles where something
 * else is installed now (plugin code that went around the interposers, with
 * the raw system call). Returns the signals it repaired, bit n-1 for signal
 * n. */
uint64_t hr_guard_reassert(void) {
    uint64_t repaired = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = hr_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG && sig <= 64; sig++) {
        if (!sigismember(&hr_handled, sig)) {
            continue;
        }
        struct sigaction now;
        if (sigaction(sig, NULL, &now) != 0) {
            continue;
        }
        if (!(now.sa_flags & SA_SIGINFO) || now.sa_sigaction != hr_handler) {
            sigaction(sig, &sa, NULL);
            repaired |= (uint64_t)1 << (sig - 1);
        }
    }
    return repaired;
}

/* The alternate stack this file gave the calling thread, to free it. */
static __thread void* hr_alt_stack;
static __thread size_t hr_alt_stack_size;
static __thread stack_t hr_alt_stack_before;

/* Gives the calling thread an alternate signal stack, so that a stack
 * overflow in plugin code (which leaves no stack to run a handler on) can
 * still be caught. hr_guard_thread_fini gives it back. */
int hr_guard_thread_init(size_t size) {
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, NULL, &hr_guard.host_mask, (size_t)(_NSIG / 8));
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
#if defined(__x86_64__)
    /* Inaccessible pages below and above: an overflow faults at the bottom,
     * and a smash that writes past the top (an overrun of a buffer in the
     * outermost frame) faults instead of reaching whatever is mapped next,
     * a malloc arena of the host's. */
    void* stack = mmap(NULL, HR_PLUGIN_STACK_MAPPING, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (stack != MAP_FAILED) {
        char* top = (char*)stack + HR_GUARD_PAGE + HR_PLUGIN_STACK;
        if (mprotect(stack, HR_GUARD_PAGE, PROT_NONE) == 0 &&
            mprotect(top, HR_GUARD_PAGE, PROT_NONE) == 0) {
            hr_plugin_stack = stack;
            hr_guard.plugin_stack_top = top;
        } else {
            munmap(stack, HR_PLUGIN_STACK_MAPPING);
        }
    }
    /* Without one, plugin code runs on the thread's own stack, as before. */
#endif
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
    if (hr_plugin_stack != NULL) {
        hr_guard.plugin_stack_top = NULL;
        munmap(hr_plugin_stack, HR_PLUGIN_STACK_MAPPING);
        hr_plugin_stack = NULL;
    }
}

/* After every call: puts the host's mask back with the system call itself
 * (one system call, ~0.3 us here: what an interposer cannot see, the raw
 * rt_sigprocmask or a longjmp through a garbage buffer, would otherwise
 * leave a blocked SIGSEGV that makes the next fault fatal). Returns
 * whether it differed. */
int hr_guard_settle_mask(void) {
    hr_thread_guard_t* g = &hr_guard;
    uint64_t now = 0;
    uint64_t host = 0;
    hr_set_mask(&g->host_mask, (sigset_t*)&now);
    memcpy(&host, &g->host_mask, sizeof host);
    if (now != host) {
        g->mask_put_back = 1;
        return 1;
    }
    return 0;
}

/* Puts this thread's alternate signal stack back if plugin code disabled or
 * replaced it (sigaltstack is not interposed: a stack of plugin code's own
 * is legitimate inside a call, but it must not outlive the call, or the
 * next stack overflow has no stack to be reported on and kills the
 * process). Returns whether it did. */
int hr_guard_settle_altstack(void) {
    if (hr_alt_stack == NULL) {
        return 0;
    }
    stack_t now;
    if (syscall(SYS_sigaltstack, NULL, &now) != 0) {
        return 0;
    }
    if (!(now.ss_flags & SS_DISABLE) && now.ss_sp == hr_alt_stack &&
        now.ss_size == hr_alt_stack_size) {
        return 0;
    }
    if (now.ss_flags & SS_ONSTACK) {
        return 0; /* never from a handler running on it */
    }
    stack_t ss;
    ss.ss_sp = hr_alt_stack;
    ss.ss_size = hr_alt_stack_size;
    ss.ss_flags = 0;
    syscall(SYS_sigaltstack, &ss, NULL);
    hr_guard.altstack_put_back = 1;
    return 1;
}

/* The fault recorded by the calling thread's last faulting call. */
void hr_last_fault(hr_fault_t* out) {
    *out = hr_guard.fault;
}

/* What a repair after plugin code did, for the host to report. */
typedef struct {
    int mask_restored;        /* the thread's signal mask differed and was put back */
    int mask_calls;           /* plugin calls to sigprocmask/pthread_sigmask */
    uint64_t refused_signals; /* bit n-1: a handler change for signal n refused */
    int altstack_restored;    /* the alternate signal stack was put back */
    int std_closed;           /* bit n: standard descriptor n closed, /dev/null in its place */
} hr_repair_t;

/* Puts back what plugin code changed in the calling thread's process-wide
 * state during its last call (the signal mask) and reports it, with what
 * was refused; clears the record. Also after a fault, where the handler has
 * put the mask back already. */
void hr_guard_repair(hr_repair_t* out) {
    hr_thread_guard_t* g = &hr_guard;
    sigset_t now;
    hr_set_mask(&g->host_mask, &now);
    out->mask_restored = 0;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sigismember(&now, sig) != sigismember(&g->host_mask, sig)) {
            out->mask_restored = 1;
            break;
        }
    }
    out->mask_restored |= g->mask_put_back;
    out->altstack_restored = g->altstack_put_back;
    out->std_closed = g->std_closed;
    g->std_closed = 0;
    out->mask_calls = g->mask_calls;
    out->refused_signals = g->refused_signals;
    g->mask_put_back = 0;
    g->altstack_put_back = 0;
    g->mask_calls = 0;
    g->refused_signals = 0;
    g->touched = 0;
}

/* For the interposers: whether plugin code is the caller on this thread
 * (inside a guarded call, which is also how a plugin's constructors and
 * destructors run, or in a thread plugin code started), and a way to note
 * what it did. */
int hr_guard_plugin_is_calling(void) {
    return hr_guard.inside != 0 || hr_guard.plugin_thread != 0;
}

void hr_guard_mark_plugin_thread(void) {
    hr_guard.plugin_thread = 1;
}

void hr_guard_note_mask_call(void) {
    hr_guard.mask_calls++;
    if (hr_guard.inside) {
        hr_guard.touched = HR_TOUCHED;
    }
}

void hr_guard_note_std_closed(int fd) {
    if (fd >= 0 && fd <= 2) {
        hr_guard.std_closed |= 1 << fd;
    }
    if (hr_guard.inside) {
        hr_guard.touched = HR_TOUCHED;
    }
}

void hr_guard_note_refused(int sig) {
    if (sig >= 1 && sig <= 64) {
        hr_guard.refused_signals |= (uint64_t)1 << (sig - 1);
    }
    if (hr_guard.inside) {
        hr_guard.touched = HR_TOUCHED;
    }
}


/* Whether `sig` is one the host relies on: the guard's, the timers', and
 * those the server takes with sigwait or needs as they are (SIGPIPE ignored,
 * SIGCHLD for waiting on builds and probes). Plugin code may not change
 * how they are handled. */
int hr_guard_protects(int sig) {
    for (size_t i = 0; i < HR_FAULT_SIGNALS; i++) {
        if (hr_fault_signals[i] == sig) {
            return 1;
        }
    }
    return sig == hr_timeout_signal || sig == SIGPIPE || sig == SIGCHLD || sig == SIGINT ||
           sig == SIGTERM || sig == SIGHUP || sig == SIGUSR1 || sig == SIGUSR2 || sig == SIGXFSZ;
}

/* A timer signal that arrived outside plugin code since the last call, or 0;
 * taken. */
int hr_take_timer_signal(void) {
    int signo = hr_timer_signal;
    if (signo != 0) {
        hr_timer_signal = 0;
    }
    return signo;
}

/* The calls. Each returns 0, or the signal that ended the call. */

/* The portable guarded call: record the jump target, mark the thread
 * inside plugin code, make `call`, unmark, return 0; after a fault the
 * handler's __builtin_longjmp lands here and the signal number is returned.
 * The target must be recorded in the very function that makes the call (the
 * frame must still exist when the jump comes), hence a macro, not a helper. */
#define HR_GUARDED_CALL(call)                   \
    do {                                        \
        hr_thread_guard_t* g_ = &hr_guard;      \
        if (__builtin_setjmp(g_->env) != 0) {   \
            return hr_landed();                 \
        }                                       \
        g_->inside = HR_INSIDE_JUMP;            \
        call;                                   \
        g_->inside = 0;                         \
        return g_->touched;                     \
    } while (0)

#if defined(__x86_64__)
/* hr_call_args(f, a0, a1, a2, a3, a4) calls f(a0, ..., a4);
 * hr_call_state(f, state) and hr_call_tick(f, state, dt) call f(state[, dt])
 * with dt passed through in xmm0. Each stores the caller's callee-saved
 * registers and stack pointer, marks the thread inside plugin code,
 * switches to the plugin stack (when the thread has one) and calls f with
 * its arguments and nothing else: every other general register is zeroed,
 * the callee-saved ones included, so plugin code finds no pointer into the
 * host's memory (its stack, its heap, this record) to write through by
 * accident. A damaged library's garbage instructions use whatever the
 * registers hold; the corpus met a destructor whose bytes ran on and wrote
 * through the host's pointers, after which every later call faulted. After
 * the call: switch back, keep what f returned in rax (`result`), put the
 * callee-saved registers back from the record (a plugin that broke the
 * calling convention, or overran its own frames, cannot hand the host
 * garbage), unmark, return 0 (or HR_TOUCHED, see hr_thread_guard_t). On a
 * fault the handler makes this function return the signal number instead
 * (see hr_handler), the same way. The thread-local guard is reached with
 * the initial-exec model, as the C code does. */
__asm__(
    ".text\n"
    ".globl hr_call_state\n"
    ".type hr_call_state, @function\n"
    ".globl hr_call_tick\n"
    ".type hr_call_tick, @function\n"
    ".globl hr_call_tick_host\n"
    ".type hr_call_tick_host, @function\n"
    ".globl hr_call_args\n"
    ".type hr_call_args, @function\n"
    ".p2align 4\n"
    "hr_call_state:\n"
    "hr_call_tick:\n"
    "    xorl %edx, %edx\n"
    /* f(state, dt, host): dt stays in xmm0 (nothing here touches it), the
     * host context comes in rdx and goes out in rsi. */
    "hr_call_tick_host:\n"
    "    xorl %ecx, %ecx\n"
    "    xorl %r8d, %r8d\n"
    "    xorl %r9d, %r9d\n"
    "hr_call_args:\n"
    "    movq hr_guard@gottpoff(%rip), %rax\n"
    "    addq %fs:0, %rax\n"
    "    movq %rbx, 0(%rax)\n"
    "    movq %rbp, 8(%rax)\n"
    "    movq %r12, 16(%rax)\n"
    "    movq %r13, 24(%rax)\n"
    "    movq %r14, 32(%rax)\n"
    "    movq %r15, 40(%rax)\n"
    "    movq %rsp, 48(%rax)\n"
    "    movl $1, 56(%rax)\n" /* HR_INSIDE_CONTEXT */
    "    movq %rdi, %r11\n"
    "    movq %rsi, %rdi\n"
    "    movq %rdx, %rsi\n"
    "    movq %rcx, %rdx\n"
    "    movq %r8, %rcx\n"
    "    movq %r9, %r8\n"
    "    xorl %r9d, %r9d\n"
    "    leaq -8(%rsp), %r10\n" /* the host's own stack, 16-byte aligned at the call */
    "    movq 64(%rax), %rax\n" /* the plugin stack's top, or 0 */
    "    testq %rax, %rax\n"
    "    cmovnzq %rax, %r10\n"
    "    movq %r10, %rsp\n"
    "    xorl %eax, %eax\n"
    "    xorl %ebx, %ebx\n"
    "    xorl %ebp, %ebp\n"
    "    xorl %r10d, %r10d\n"
    "    xorl %r12d, %r12d\n"
    "    xorl %r13d, %r13d\n"
    "    xorl %r14d, %r14d\n"
    "    xorl %r15d, %r15d\n"
    "    call *%r11\n"
    "    movq hr_guard@gottpoff(%rip), %rcx\n"
    "    addq %fs:0, %rcx\n"
    "    movq %rax, 72(%rcx)\n" /* what f returned */
    "    movq 48(%rcx), %rsp\n" /* at the return address, on the host's stack */
    "    movq 0(%rcx), %rbx\n"
    "    movq 8(%rcx), %rbp\n"
    "    movq 16(%rcx), %r12\n"
    "    movq 24(%rcx), %r13\n"
    "    movq 32(%rcx), %r14\n"
    "    movq 40(%rcx), %r15\n"
    "    movl $0, 56(%rcx)\n"
    "    movl 60(%rcx), %eax\n" /* 0, or HR_TOUCHED */
    "    ret\n"
    ".size hr_call_state, . - hr_call_state\n"
    ".size hr_call_tick, . - hr_call_tick\n"
    ".size hr_call_tick_host, . - hr_call_tick_host\n"
    ".size hr_call_args, . - hr_call_args\n");

int hr_call_state(void (*f)(void*), void* state);
int hr_call_tick(void (*f)(void*, double), void* state, double dt);
int hr_call_tick_host(void (*f)(void*, double, const void*), void* state, double dt,
                      const void* host);
int hr_call_args(const void* f, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4);

/* The rarely called functions: the extended ABI's, the entry points, a
 * library's own constructors and destructors (which the host runs itself
 * instead of the loader, see plugin/elf: the loader calls a constructor with
 * the program's arguments and environment, a destructor with none). What
 * they return comes back through the record; it is read only after a call
 * that returned (0 or HR_TOUCHED, never a signal). */
#define HR_ARG(x) ((uint64_t)(uintptr_t)(x))

int hr_call_hook(void (*f)(void*, const void*), void* state, const void* host) {
    return hr_call_args((const void*)f, HR_ARG(state), HR_ARG(host), 0, 0, 0);
}

int hr_call_migrate(int (*f)(const void*, size_t, uint32_t, void*, size_t), const void* old_state,
                    size_t old_size, uint32_t old_version, void* new_state, size_t new_size,
                    int* result) {
    int r = hr_call_args((const void*)f, HR_ARG(old_state), old_size, old_version,
                         HR_ARG(new_state), new_size);
    if (r <= 0) {
        *result = (int)hr_guard.result;
    }
    return r;
}

int hr_call_describe(size_t (*f)(const void*, char*, size_t), const void* state, char* buf,
                     size_t len, size_t* written) {
    int r = hr_call_args((const void*)f, HR_ARG(state), HR_ARG(buf), len, 0, 0);
    if (r <= 0) {
        *written = (size_t)hr_guard.result;
    }
    return r;
}

int hr_call_get_api(const void* (*f)(void), const void** out) {
    int r = hr_call_args((const void*)f, 0, 0, 0, 0, 0);
    if (r <= 0) {
        *out = (const void*)(uintptr_t)hr_guard.result;
    }
    return r;
}

/* Any function of a host's own table (embed/call.rs): up to five integer
 * or pointer arguments, an integer or pointer result. */
int hr_call_words(const void* f, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                  uint64_t* out) {
    int r = hr_call_args(f, a0, a1, a2, a3, a4);
    if (r <= 0) {
        *out = hr_guard.result;
    }
    return r;
}

int hr_call_constructor(void (*f)(int, char**, char**), int argc, char** argv, char** envp) {
    return hr_call_args((const void*)f, (uint64_t)(uint32_t)argc, HR_ARG(argv), HR_ARG(envp), 0,
                        0);
}

int hr_call_destructor(void (*f)(void)) {
    return hr_call_args((const void*)f, 0, 0, 0, 0, 0);
}
#else
int hr_call_state(void (*f)(void*), void* state) {
    HR_GUARDED_CALL(f(state));
}

int hr_call_tick(void (*f)(void*, double), void* state, double dt) {
    HR_GUARDED_CALL(f(state, dt));
}

int hr_call_tick_host(void (*f)(void*, double, const void*), void* state, double dt,
                      const void* host) {
    HR_GUARDED_CALL(f(state, dt, host));
}

int hr_call_hook(void (*f)(void*, const void*), void* state, const void* host) {
    HR_GUARDED_CALL(f(state, host));
}

int hr_call_migrate(int (*f)(const void*, size_t, uint32_t, void*, size_t), const void* old_state,
                    size_t old_size, uint32_t old_version, void* new_state, size_t new_size,
                    int* result) {
    HR_GUARDED_CALL(*result = f(old_state, old_size, old_version, new_state, new_size));
}

int hr_call_describe(size_t (*f)(const void*, char*, size_t), const void* state, char* buf,
                     size_t len, size_t* written) {
    HR_GUARDED_CALL(*written = f(state, buf, len));
}

int hr_call_get_api(const void* (*f)(void), const void** out) {
    HR_GUARDED_CALL(*out = f());
}

int hr_call_constructor(void (*f)(int, char**, char**), int argc, char** argv, char** envp) {
    HR_GUARDED_CALL(f(argc, argv, envp));
}

int hr_call_destructor(void (*f)(void)) {
    HR_GUARDED_CALL(f());
}

typedef uint64_t (*hr_words_fn)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);
int hr_call_words(const void* f, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                  uint64_t* out) {
    HR_GUARDED_CALL(*out = ((hr_words_fn)f)(a0, a1, a2, a3, a4));
}
#endif

/* Copies memory that plugin code pointed the host to (a table, a field
 * name): a bad pointer faults here, inside the guard, instead of in the
 * host's own code. strnlen finds a string's end no further than max. */
int hr_guarded_copy(void* dst, const void* src, size_t len) {
    HR_GUARDED_CALL(memcpy(dst, src, len));
}

int hr_guarded_strnlen(const char* s, size_t max, size_t* len) {
    HR_GUARDED_CALL(*len = strnlen(s, max));
}
