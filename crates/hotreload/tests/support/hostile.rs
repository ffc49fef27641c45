//! Hostile plugins for the matrix (`tests/matrix.rs`): what plugin code can
//! do to the process it runs in (the behaviours), and where in a plugin it
//! can do it (the places). A [`Plugin`] puts one behaviour at one place of a
//! counter plugin with the extended table and a schema, so that the host's
//! own `[state] score=N` lines show the state whatever the plugin does to
//! its own output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// What a behaviour does to the call it is made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// It ends the call (a crash, an exit, a hang): the host must say so
    /// every time, with a line naming it.
    Ends,
    /// It changes the process and returns. A line is owed only when
    /// something came of it: a death, a lost state, damage, a fault or a
    /// refusal.
    Changes,
}

/// One thing plugin code can do, as C statements. `state` (a `void*`) is
/// the state block where the place has one, else NULL.
pub struct Behaviour {
    pub name: &'static str,
    /// What it is, for the report.
    pub what: &'static str,
    pub code: &'static str,
    pub kind: Kind,
    /// Words of which a line explaining it must hold one.
    pub says: &'static [&'static str],
    /// How long its effect may take to show (a timer's delay), in ms.
    pub delay_ms: u64,
    /// Why it cannot be survived in-process, when the project documents it
    /// as a limit of the in-process host (README, "Faults in the server").
    pub limit: Option<&'static str>,
}

const fn ends(
    name: &'static str,
    what: &'static str,
    code: &'static str,
    says: &'static [&'static str],
) -> Behaviour {
    Behaviour {
        name,
        what,
        code,
        kind: Kind::Ends,
        says,
        delay_ms: 0,
        limit: None,
    }
}

const fn changes(
    name: &'static str,
    what: &'static str,
    code: &'static str,
    says: &'static [&'static str],
) -> Behaviour {
    Behaviour {
        name,
        what,
        code,
        kind: Kind::Changes,
        says,
        delay_ms: 0,
        limit: None,
    }
}

impl Behaviour {
    const fn after(self, delay_ms: u64) -> Behaviour {
        Behaviour { delay_ms, ..self }
    }

    const fn limit(self, why: &'static str) -> Behaviour {
        Behaviour {
            limit: Some(why),
            ..self
        }
    }
}

const SIGNALS: &[&str] = &[
    "SIGSEGV", "SIGBUS", "SIGILL", "SIGABRT", "SIGFPE", "SIGTRAP",
];
const HEAP: &[&str] = &["heap", "malloc", "free()", "SIGABRT", "SIGSEGV"];

/// Every behaviour the matrix runs, in the order of its tables.
pub const BEHAVIOURS: &[Behaviour] = &[
    // Faults in the call.
    ends("segv", "SIGSEGV: a write through NULL", "*(volatile int*)0 = 1;", &["SIGSEGV"]),
    ends(
        "bus",
        "SIGBUS: a read of a mapped page past the end of an empty memfd",
        "int fd = memfd_create(\"hr-bus\", 0); \
         volatile char* m = mmap(0, 4096, PROT_READ, MAP_SHARED, fd, 0); (void)m[0];",
        &["SIGBUS"],
    ),
    ends("fpe", "SIGFPE: an integer division by zero", "volatile int seven = 7, zero = 0; volatile int q = seven / zero; (void)q;", &["SIGFPE"]),
    ends("ill", "SIGILL: `__builtin_trap()` (ud2)", "__builtin_trap();", &["SIGILL"]),
    ends("abort", "`abort()`", "abort();", &["SIGABRT"]),
    ends("assert", "a failing `assert`", "volatile int zero = 0; assert(zero);", &["SIGABRT", "Assertion"]),
    ends("stack-overflow", "endless recursion of 4 KiB frames", "hr_recurse(0);", &["stack overflow", "SIGSEGV"]),
    ends("hang", "`for (;;) {}`", "for (;;) {}", &["hung", "timeout"]),
    ends("pause", "`for (;;) pause();`: blocked in a system call", "for (;;) pause();", &["hung", "timeout"]),
    ends(
        "stdout-lock-hang",
        "`flockfile(stdout)`, then a hang: interrupted, it leaves the C library's lock on stdout held",
        "flockfile(stdout); for (;;) {}",
        &["hung", "timeout"],
    )
    .limit("a plugin interrupted while holding a lock leaves it held: every later printf of every version waits for it"),
    // Ways out of the process.
    ends("exit", "`exit(3)`", "exit(3);", &["exit(3)"]),
    ends("_exit", "`_exit(3)`", "_exit(3);", &["exit(3)"]),
    ends("quick_exit", "`quick_exit(3)`", "quick_exit(3);", &["exit(3)"]),
    ends("exit_group", "the `exit_group` system call made directly", "syscall(SYS_exit_group, 3);", &["exit(3)", "exit_group", "exit status: 3", "exit status 3"])
        .limit("the exit_group system call made directly cannot be interposed"),
    ends("exec", "`execl(\"/bin/true\", …)`: the process becomes another program", "execl(\"/bin/true\", \"true\", (char*)0);", &["exec"]),
    ends("pthread_exit", "`pthread_exit(0)` on the calling thread", "pthread_exit(0);", &["pthread_exit"]),
    ends("sigkill", "`raise(SIGKILL)`", "raise(SIGKILL);", &["SIGKILL"]).limit("SIGKILL cannot be caught"),
    changes("sigterm", "`raise(SIGTERM)`: the signal the server stops on, sent to the calling thread", "raise(SIGTERM);", &["SIGTERM"]),
    ends("sigstop", "`raise(SIGSTOP)`: the whole process stops", "raise(SIGSTOP);", &["SIGSTOP", "hung"])
        .limit("SIGSTOP can be neither caught nor blocked: an in-process server stops with the plugin"),
    // Jumps and memory.
    ends(
        "longjmp",
        "`longjmp` with a buffer of 0x5a bytes (a garbage address, stack and signal mask)",
        "jmp_buf b; memset(b, 0x5a, sizeof b); longjmp(b, 1);",
        SIGNALS,
    ),
    ends(
        "siglongjmp-ff",
        "`siglongjmp` with a buffer of 0xff bytes: the garbage mask blocks SIGSEGV, then the jump faults",
        "sigjmp_buf b; memset(b, 0xff, sizeof b); siglongjmp(b, 1);",
        SIGNALS,
    )
    .limit("a fault in the call that blocked its own signal: the kernel kills the process"),
    ends("stack-smash", "512 bytes written over an 8-byte local: the frame's return address", "hr_smash();", SIGNALS),
    ends("double-free", "`free` twice (the C library aborts)", "char* p = malloc(24); free(p); free(p);", &["SIGABRT", "double free"]),
    changes("heap-overflow", "64 bytes written past a 24-byte `malloc` block, not freed", "char* p = malloc(24); memset(p, 0x5a, 24 + 64);", HEAP)
        .limit("a plugin that corrupts memory outside its state can harm the server before anything faults"),
    changes(
        "state-overrun",
        "4 KiB written past the state block (a plugin that believes its state is larger)",
        "char* base = state ? (char*)state : malloc(4); memset(base + 64, 0x5a, 4096);",
        HEAP,
    )
    .limit("a plugin that corrupts memory outside its state can harm the server before anything faults"),
    // The signal mask and handlers.
    changes(
        "mask-block-segv",
        "`sigprocmask` blocks SIGSEGV",
        "sigset_t s; sigemptyset(&s); sigaddset(&s, SIGSEGV); sigprocmask(SIG_BLOCK, &s, 0);",
        &["signal mask"],
    ),
    changes(
        "mask-unblock-all",
        "`sigprocmask` unblocks every signal",
        "sigset_t s; sigfillset(&s); sigprocmask(SIG_UNBLOCK, &s, 0);",
        &["signal mask"],
    ),
    changes(
        "mask-raw",
        "the raw `rt_sigprocmask` system call blocks SIGSEGV",
        "unsigned long set = 1UL << (SIGSEGV - 1); syscall(SYS_rt_sigprocmask, SIG_BLOCK, &set, 0, 8);",
        &["signal mask"],
    ),
    ends(
        "mask-then-segv",
        "blocks SIGSEGV, then writes through NULL in the same call",
        "sigset_t s; sigemptyset(&s); sigaddset(&s, SIGSEGV); sigprocmask(SIG_BLOCK, &s, 0); *(volatile int*)0 = 1;",
        &["SIGSEGV"],
    )
    .limit("a fault in the call that blocked its own signal: the kernel kills the process"),
    changes("signal-dfl", "`signal(SIGSEGV, SIG_DFL)`", "signal(SIGSEGV, SIG_DFL);", &["SIGSEGV"]),
    changes("sigchld-ign", "`signal(SIGCHLD, SIG_IGN)` (children reaped by the kernel: no exit status for builds and probes)", "signal(SIGCHLD, SIG_IGN);", &["SIGCHLD"]),
    changes(
        "sigaction-raw",
        "the raw `rt_sigaction` system call sets SIGSEGV to SIG_DFL",
        "unsigned long ksa[4] = {0}; syscall(SYS_rt_sigaction, SIGSEGV, ksa, 0, 8);",
        &["SIGSEGV"],
    ),
    ends(
        "sigaction-raw-then-segv",
        "raw `rt_sigaction` SIG_DFL for SIGSEGV, then a write through NULL in the same call",
        "unsigned long ksa[4] = {0}; syscall(SYS_rt_sigaction, SIGSEGV, ksa, 0, 8); *(volatile int*)0 = 1;",
        &["SIGSEGV"],
    )
    .limit("a change made with a raw system call in the moment before the next check"),
    changes(
        "sigaltstack-off",
        "`sigaltstack(SS_DISABLE)`: no alternate stack for the next stack overflow",
        "stack_t ss = {0}; ss.ss_flags = SS_DISABLE; sigaltstack(&ss, 0);",
        &["sigaltstack", "alternate signal stack", "stack overflow"],
    ),
    // Timers.
    changes("alarm", "`alarm(1)`", "alarm(1);", &["timer", "SIGALRM"]).after(1300),
    changes(
        "setitimer",
        "`setitimer(ITIMER_REAL)`, 200 ms, once",
        "struct itimerval t = {{0, 0}, {0, 200000}}; setitimer(ITIMER_REAL, &t, 0);",
        &["timer", "SIGALRM"],
    )
    .after(400),
    changes(
        "timer-signal",
        "a POSIX timer (`timer_create`) raising SIGALRM every 100 ms",
        "timer_t t; struct sigevent ev; memset(&ev, 0, sizeof ev); ev.sigev_notify = SIGEV_SIGNAL; \
         ev.sigev_signo = SIGALRM; timer_create(CLOCK_MONOTONIC, &ev, &t); \
         struct itimerspec its = {{0, 100000000}, {0, 100000000}}; timer_settime(t, 0, &its, 0);",
        &["timer", "SIGALRM"],
    )
    .after(400),
    changes(
        "timer-thread",
        "a POSIX timer calling a plugin function on a thread of the C library's every 20 ms",
        "timer_t t; struct sigevent ev; memset(&ev, 0, sizeof ev); ev.sigev_notify = SIGEV_THREAD; \
         ev.sigev_notify_function = hr_timer_cb; timer_create(CLOCK_MONOTONIC, &ev, &t); \
         struct itimerspec its = {{0, 20000000}, {0, 20000000}}; timer_settime(t, 0, &its, 0);",
        &["timer", "thread"],
    )
    .after(100),
    // Descriptors.
    changes("close-1", "`close(1)`", "close(1);", &["descriptor", "stdout"]),
    changes("close-2", "`close(2)`", "close(2);", &["descriptor", "stderr"]),
    changes("close-fds", "closes descriptors 3 to 1023", "for (int fd = 3; fd < 1024; fd++) close(fd);", &["descriptor"])
        .limit("descriptors the in-process server holds, closed by plugin code (it cannot tell them from the plugin's own)"),
    // Threads and processes.
    changes("thread", "starts a thread that keeps running the plugin's code", "pthread_t t; pthread_create(&t, 0, hr_spin, 0); pthread_detach(t);", &["thread"]),
    changes(
        "thread-exit",
        "starts a thread that calls `exit(3)` 20 ms later",
        "pthread_t t; pthread_create(&t, 0, hr_thread_exit, 0); pthread_detach(t);",
        &["exit(3)", "exit status: 3", "exit status 3"],
    )
    .after(100),
    changes(
        "thread-segv",
        "starts a thread that writes through NULL 20 ms later",
        "pthread_t t; pthread_create(&t, 0, hr_thread_segv, 0); pthread_detach(t);",
        &["SIGSEGV"],
    )
    .after(100),
    changes("fork", "`fork()` without exec: the child returns into the host's code", "fork();", &["fork"]),
    changes(
        "atfork",
        "`pthread_atfork` with plugin functions, which every later fork of the process calls",
        "pthread_atfork(hr_nothing, hr_nothing, hr_nothing);",
        &["fork"],
    ),
    // Limits, folders, environment.
    changes(
        "rlimit-nofile",
        "soft RLIMIT_NOFILE lowered to 16",
        "struct rlimit r; getrlimit(RLIMIT_NOFILE, &r); r.rlim_cur = 16; setrlimit(RLIMIT_NOFILE, &r);",
        &["RLIMIT_NOFILE", "descriptor"],
    ),
    changes(
        "rlimit-fsize",
        "soft RLIMIT_FSIZE lowered to 0 (a write to a file raises SIGXFSZ)",
        "struct rlimit r; getrlimit(RLIMIT_FSIZE, &r); r.rlim_cur = 0; setrlimit(RLIMIT_FSIZE, &r);",
        &["RLIMIT_FSIZE", "SIGXFSZ"],
    ),
    changes(
        "rlimit-as",
        "soft RLIMIT_AS lowered to 16 MiB (no new mapping fits)",
        "struct rlimit r; getrlimit(RLIMIT_AS, &r); r.rlim_cur = 16 << 20; setrlimit(RLIMIT_AS, &r);",
        &["RLIMIT_AS", "address space"],
    ),
    changes(
        "rlimit-nproc",
        "soft RLIMIT_NPROC lowered to 0 (no new process or thread)",
        "struct rlimit r; getrlimit(RLIMIT_NPROC, &r); r.rlim_cur = 0; setrlimit(RLIMIT_NPROC, &r);",
        &["RLIMIT_NPROC"],
    ),
    changes("chdir", "`chdir(\"/\")`", "if (chdir(\"/\") != 0) {}", &["chdir", "working folder", "current folder", "working directory"]),
    changes("umask", "`umask(0777)`", "umask(0777);", &["umask"]),
    changes("setenv-path", "`setenv(\"PATH\", \"/nonexistent\")`", "setenv(\"PATH\", \"/nonexistent\", 1);", &["PATH", "environment"]),
    changes(
        "putenv-literal",
        "`putenv` of a string literal: the environment points into the library",
        "putenv((char*)\"HR_MATRIX=set-by-the-plugin\");",
        &["environment", "putenv"],
    ),
];

/// The behaviour called `name`.
pub fn behaviour(name: &str) -> &'static Behaviour {
    BEHAVIOURS
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no behaviour {name}"))
}

/// Where in a plugin the behaviour runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    /// `tick`, at a call the trial never reaches (the 5th of the process;
    /// a trial runs 3): only the server meets it.
    TickServer,
    /// `tick`, at the 2nd call of the process: a trial's 2nd tick, or the
    /// server's where no trial runs.
    TickTrial,
    /// `init` of the first version.
    Init,
    OnReload,
    OnUnload,
    Describe,
    /// The `migrate` hook of a version that adds a field.
    Migrate,
    Shutdown,
    /// A library constructor.
    Constructor,
    /// A library destructor.
    Destructor,
    /// `logic_get_api`.
    GetApi,
}

pub const PLACES: &[Place] = &[
    Place::TickServer,
    Place::TickTrial,
    Place::Init,
    Place::OnReload,
    Place::OnUnload,
    Place::Describe,
    Place::Migrate,
    Place::Shutdown,
    Place::Constructor,
    Place::Destructor,
    Place::GetApi,
];

impl Place {
    pub fn name(self) -> &'static str {
        match self {
            Place::TickServer => "tick (server)",
            Place::TickTrial => "tick (trial)",
            Place::Init => "init",
            Place::OnReload => "on_reload",
            Place::OnUnload => "on_unload",
            Place::Describe => "describe",
            Place::Migrate => "migrate",
            Place::Shutdown => "shutdown",
            Place::Constructor => "constructor",
            Place::Destructor => "destructor",
            Place::GetApi => "logic_get_api",
        }
    }

    /// A short column heading.
    pub fn short(self) -> &'static str {
        match self {
            Place::TickServer => "tick",
            Place::TickTrial => "tick2",
            Place::Init => "init",
            Place::OnReload => "reload",
            Place::OnUnload => "unload",
            Place::Describe => "descr",
            Place::Migrate => "migr",
            Place::Shutdown => "shut",
            Place::Constructor => "ctor",
            Place::Destructor => "dtor",
            Place::GetApi => "getapi",
        }
    }
}

/// The tick at which [`Place::TickServer`] strikes: past a default trial's
/// 3 ticks.
pub const SERVER_TICK: u32 = 5;

/// A plugin for the matrix: a counter that adds `step` every tick and
/// prints `[plugin] tag=<tag> score=<score>`, with a behaviour at a place,
/// and (`fault_later`) a stack overflow at its [`SERVER_TICK`]th tick: the
/// check that the crash guard still works after what came before.
#[derive(Clone, Copy)]
pub struct Plugin {
    pub tag: &'static str,
    pub step: i32,
    pub hostile: Option<(Place, &'static Behaviour)>,
    pub fault_later: bool,
}

impl Plugin {
    pub fn good(tag: &'static str, step: i32) -> Plugin {
        Plugin {
            tag,
            step,
            hostile: None,
            fault_later: false,
        }
    }

    /// A file name that tells the plugin apart from every other.
    pub fn file_name(&self) -> String {
        let what = match self.hostile {
            Some((place, b)) => format!("{}-{}", b.name, place.short()),
            None => "good".to_owned(),
        };
        let later = if self.fault_later { "-fault-later" } else { "" };
        format!("{}-{}-{what}{later}.so", self.tag, self.step)
    }

    fn at(&self, place: Place) -> bool {
        self.hostile.is_some_and(|(p, _)| p == place)
    }

    /// The behaviour run once per process at `place` (`state` names the
    /// state pointer there, or `0`), or nothing.
    fn hook(&self, place: Place, state: &str) -> String {
        if !self.at(place) {
            return String::new();
        }
        format!("{{ static int fired; if (!fired) {{ fired = 1; hostile({state}); }} }}")
    }

    pub fn source(&self) -> String {
        let code = self.hostile.map_or("", |(_, b)| b.code);
        let migrate = self.at(Place::Migrate);
        let (extra, extra_field) = if migrate {
            (
                "int extra;",
                ", HOTRELOAD_FIELD(state_t, extra, HOTRELOAD_I32)",
            )
        } else {
            ("", "")
        };
        let mut tick_hook = match self.hostile {
            Some((Place::TickServer, _)) => format!("if (calls == {SERVER_TICK}) hostile(p);"),
            Some((Place::TickTrial, _)) => "if (calls == 2) hostile(p);".to_owned(),
            _ => String::new(),
        };
        if self.fault_later {
            tick_hook.push_str(&format!(" if (calls == {SERVER_TICK}) hr_recurse(0);"));
        }
        let ctor = if self.at(Place::Constructor) {
            "__attribute__((constructor)) static void hr_ctor(void) { hostile(0); }"
        } else {
            ""
        };
        let dtor = if self.at(Place::Destructor) {
            "__attribute__((destructor)) static void hr_dtor(void) { hostile(0); }"
        } else {
            ""
        };
        format!(
            r#"#define _GNU_SOURCE
#include <assert.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include "hotreload.h"

typedef struct {{ int score; {extra} }} state_t;
static const hotreload_field_t fields[] = {{ HOTRELOAD_FIELD(state_t, score, HOTRELOAD_I32){extra_field} }};

/* Helpers for the behaviours. */
#pragma GCC diagnostic ignored "-Winfinite-recursion"
__attribute__((noinline)) int hr_recurse(volatile char* up) {{
    volatile char frame[4096];
    frame[0] = up ? up[0] + 1 : 0;
    return hr_recurse(frame) + frame[1];
}}
__attribute__((noinline)) static void hr_smash(void) {{
    volatile char buf[8];
    memset((char*)buf, 0x41, 512);
}}
static void* hr_spin(void* a) {{ (void)a; for (;;) usleep(1000); return 0; }}
static void* hr_thread_exit(void* a) {{ (void)a; usleep(20000); exit(3); }}
static void* hr_thread_segv(void* a) {{ (void)a; usleep(20000); *(volatile int*)0 = 1; return 0; }}
static void hr_timer_cb(union sigval v) {{ (void)v; }}
static void hr_nothing(void) {{}}

__attribute__((noinline)) static void hostile(void* state) {{
    (void)state; (void)hr_smash; (void)hr_spin; (void)hr_thread_exit; (void)hr_thread_segv;
    (void)hr_timer_cb; (void)hr_nothing;
    {code}
}}

static void plugin_init(void* p) {{
    {init}
    ((state_t*)p)->score = 0;
    printf("[plugin] tag={tag} init\n");
}}
static void plugin_tick(void* p, double dt) {{
    static int calls;
    ++calls;
    {tick_hook}
    state_t* s = p;
    s->score += {step};
    printf("[plugin] tag={tag} score=%d\n", s->score);
    (void)dt;
}}
static void plugin_shutdown(void* p) {{
    {shutdown}
    printf("[plugin] tag={tag} shutdown score=%d\n", ((state_t*)p)->score);
}}
static void on_reload(void* p, const hotreload_host_t* h) {{ (void)h; {on_reload} (void)p; }}
static void on_unload(void* p, const hotreload_host_t* h) {{ (void)h; {on_unload} (void)p; }}
static int migrate(const void* old, size_t old_size, uint32_t old_version, void* p, size_t size) {{
    (void)old; (void)old_size; (void)old_version; (void)size;
    {migrate_hook}
    (void)p;
    return 0;
}}
static size_t describe(const void* p, char* buf, size_t len) {{
    {describe_hook}
    return (size_t)snprintf(buf, len, "score=%d", ((const state_t*)p)->score);
}}
{ctor}
{dtor}
static logic_api_t api = {{
    .api_version = HOTRELOAD_API_VERSION, .state_size = sizeof(state_t),
    .init = plugin_init, .tick = plugin_tick, .shutdown = plugin_shutdown,
}};
static logic_api_ext_t ext = {{
    .ext_version = HOTRELOAD_EXT_VERSION, .size = sizeof(logic_api_ext_t),
    .state_version = 1, .field_count = HOTRELOAD_FIELD_COUNT(fields), .fields = fields,
    .on_reload = on_reload, .on_unload = on_unload,
    .migrate = {migrate_fn}, .describe = {describe_fn},
}};
HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) {{
    {get_api}
    return &api;
}}
HOTRELOAD_EXPORT logic_api_ext_t* logic_get_api_ext(void) {{ (void)migrate; (void)describe; return &ext; }}
"#,
            tag = self.tag,
            step = self.step,
            init = self.hook(Place::Init, "p"),
            shutdown = self.hook(Place::Shutdown, "p"),
            on_reload = self.hook(Place::OnReload, "p"),
            on_unload = self.hook(Place::OnUnload, "p"),
            migrate_hook = self.hook(Place::Migrate, "p"),
            describe_hook = self.hook(Place::Describe, "(void*)p"),
            get_api = self.hook(Place::GetApi, "0"),
            migrate_fn = if migrate { "migrate" } else { "0" },
            describe_fn = if self.at(Place::Describe) {
                "describe"
            } else {
                "0"
            },
        )
    }
}

/// Compiled plugins, each built once per run and shared by every cell
/// that places it.
pub struct Builds {
    dir: PathBuf,
    done: Mutex<HashMap<String, PathBuf>>,
}

impl Builds {
    /// Builds go to `dir`, which holds the ABI header (see
    /// [`super::workdir`]).
    pub fn new(dir: &Path) -> Builds {
        Builds {
            dir: dir.to_path_buf(),
            done: Mutex::new(HashMap::new()),
        }
    }

    /// The library for `plugin`, compiled on first use.
    pub fn library(&self, plugin: &Plugin) -> PathBuf {
        let name = plugin.file_name();
        if let Some(done) = self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
        {
            return done.clone();
        }
        let src = self.dir.join(name.replace(".so", ".c"));
        let out = self.dir.join(&name);
        std::fs::write(&src, plugin.source()).expect("write a plugin source");
        // Warnings off: the behaviours are meant to be wrong.
        let built = Command::new("cc")
            .args(["-shared", "-fPIC", "-w", "-o"])
            .arg(&out)
            .arg(&src)
            .current_dir(&self.dir)
            .output()
            .expect("run cc");
        assert!(
            built.status.success(),
            "cc failed for {name}:\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, out.clone());
        out
    }
}
