//! Calling plugin code so that a crash in it becomes an error return.
//!
//! Every call into plugin code (`logic_get_api`, `init`, `tick`, `shutdown`,
//! the library's own constructors and destructors)
//! goes through the C trampoline in `trampoline.c`, which turns SIGSEGV,
//! SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT (abort, assert), stack overflow
//! and a watchdog's interruption into a [`Fault`]. The jump buffer and the
//! "inside plugin code" flag are per thread, so any number of threads can
//! call plugin code at once; a fault anywhere else keeps its normal meaning
//! (the previous handler, or death by that signal with a core dump).
//!
//! What plugin code changes of process-wide state is refused or put back:
//! the interposers in `exits.c` (the ways out, `exec`), `process.c`
//! (handlers, masks, timers, `close` of the standard descriptors) and
//! `threads.c` (threads it starts); after every call the signal mask and the
//! alternate signal stack; and [`baseline`], the settings the server needs
//! (umask, limits, working folder, standard descriptors), at the points it
//! needs them.
//!
//! The handler also serves the exact snapshot of a large state
//! (`state/pages.rs`): a write to one of its read-only pages is not a
//! fault; `pages.c` marks the page and makes it writable, and the write is
//! made again. `buffers.c` does the same before the C library's calls that
//! have the kernel write into a buffer.
//!
//! Cost: on x86-64 the trampoline takes a few ns over calling the function
//! pointer directly (register stores, zeroed registers, a flag, the switch
//! to the plugin stack; see `trampoline.c` and `benches/dispatch.rs`); the
//! two system calls after it, about 0.6 µs here, are most of a guarded
//! call. cr.h's `sigsetjmp(env, 1)` costs ~110 ns.

pub mod baseline;
pub mod process;
mod symbolize;
pub mod threads;
pub mod watchdog;

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use std::ffi::c_char;

use hotreload_abi::{
    DescribeFn, GetApiExtFn, GetApiFn, HookFn, HostContext, InitFn, LogicApi, LogicApiExt,
    MigrateFn, TickFn, TickHostFn,
};

/// The alternate signal stack each calling thread gets: room for the handler
/// after the thread's own stack has overflowed.
const ALT_STACK_SIZE: usize = 256 * 1024;

#[repr(C)]
#[derive(Clone, Copy)]
struct RawFault {
    signo: c_int,
    code: c_int,
    addr: *mut c_void,
    pc: *mut c_void,
}

unsafe extern "C" {
    fn hr_guard_install(timeout_signal: c_int) -> c_int;
    fn hr_guard_thread_init(size: usize) -> c_int;
    fn hr_guard_thread_fini();
    fn hr_last_fault(out: *mut RawFault);
    fn hr_take_thread_crash(out: *mut RawFault, tid: *mut c_int) -> c_int;
    fn hr_guard_thread_exits_end_the_process();
    fn hr_interposers_missing(out: *mut std::ffi::c_char, len: usize);
    fn hr_call_state(f: InitFn, state: *mut c_void) -> c_int;
    fn hr_call_tick(f: TickFn, state: *mut c_void, dt: f64) -> c_int;
    fn hr_call_tick_host(
        f: TickHostFn,
        state: *mut c_void,
        dt: f64,
        host: *const HostContext,
    ) -> c_int;
    fn hr_call_get_api(f: GetPtrFn, out: *mut *const c_void) -> c_int;
    fn hr_call_words(
        f: *const c_void,
        a0: u64,
        a1: u64,
        a2: u64,
        a3: u64,
        a4: u64,
        out: *mut u64,
    ) -> c_int;
    fn hr_call_constructor(
        f: ConstructorFn,
        argc: c_int,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int;
    fn hr_call_destructor(f: DestructorFn) -> c_int;
    fn hr_guarded_copy(dst: *mut c_void, src: *const c_void, len: usize) -> c_int;
    fn hr_guarded_strnlen(s: *const c_char, max: usize, len: *mut usize) -> c_int;
    fn hr_call_hook(f: HookFn, state: *mut c_void, host: *const HostContext) -> c_int;
    fn hr_call_migrate(
        f: MigrateFn,
        old_state: *const c_void,
        old_size: usize,
        old_version: u32,
        new_state: *mut c_void,
        new_size: usize,
        result: *mut c_int,
    ) -> c_int;
    fn hr_call_describe(
        f: DescribeFn,
        state: *const c_void,
        buf: *mut c_char,
        len: usize,
        written: *mut usize,
    ) -> c_int;
}

/// Any `const void* f(void)` entry point (`logic_get_api`, `logic_get_api_ext`,
/// a host's own, see `crate::embed`).
pub type GetPtrFn = unsafe extern "C" fn() -> *const c_void;

/// A library constructor (`DT_INIT`, an `DT_INIT_ARRAY` entry), as the
/// loader calls it: `void f(int argc, char** argv, char** envp)`.
pub type ConstructorFn = unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char);

/// A library destructor (`DT_FINI`, a `DT_FINI_ARRAY` entry): `void f(void)`.
pub type DestructorFn = unsafe extern "C" fn();

/// The signal the watchdog sends to interrupt a plugin call that runs too
/// long. A real-time signal well above the ones glibc reserves, so it
/// collides with nothing a host is likely to use.
pub fn timeout_signal() -> c_int {
    libc::SIGRTMIN() + 7
}

/// How a plugin call ended early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub signal: i32,
    /// `si_code`: how the kernel says the signal came about.
    pub code: i32,
    /// The faulting address (for SIGSEGV/SIGBUS: the bad access).
    pub addr: usize,
    /// The instruction pointer when it happened.
    pub pc: usize,
    /// Where it happened, already named (`tick+0x30 (logic.c:22)`): for a
    /// fault in an isolated worker, whose process alone could name it
    /// (empty when it could not).
    pub place: Option<String>,
    /// The panic that a library built with the `hotreload-plugin` crate
    /// recorded just before it aborted (`panic at src/lib.rs:12:9: …`, see
    /// [`crate::plugin::record`]): said instead of the SIGABRT and the
    /// place of the abort, which is the C library's.
    pub panic: Option<String>,
}

/// In a [`Fault`]'s `signal`: an isolated worker's process died during or
/// between calls; `code` is its exit status, or minus the signal that
/// killed it.
pub const WORKER_DIED: i32 = -4;

/// In a [`Fault`]'s `signal`: an isolated worker did not answer within the
/// timeout because its process was stopped (SIGSTOP, or a debugger), where
/// nothing waits for a stopped one: a hang, killed as one.
pub const WORKER_STOPPED: i32 = -6;

/// The exit status of an isolated worker whose calling thread plugin code
/// ended (a raw `SYS_exit`, which no interposer sees): the worker ends itself
/// with it rather than leave the host waiting on a thread that is gone.
pub const WORKER_CALLER_GONE: i32 = 120;

/// In a [`Fault`]'s `signal`: plugin code called `exit`, `_exit`, `_Exit`
/// or `quick_exit` (`code` holds the status). See `exits.c`.
pub const LEFT_BY_EXIT: i32 = -1;
/// In a [`Fault`]'s `signal`: plugin code called `pthread_exit` on the
/// thread that called it.
pub const LEFT_BY_THREAD_EXIT: i32 = -2;
/// In a [`Fault`]'s `signal`: plugin code called one of the exec family,
/// which would replace the host.
pub const LEFT_BY_EXEC: i32 = -5;

impl Fault {
    pub fn is_timeout(&self) -> bool {
        self.signal == timeout_signal() || self.signal == WORKER_STOPPED
    }

    /// A timer signal that plugin code's timer sent while no plugin code
    /// ran (see [`process::take_timer_signal`]): the fault of the version
    /// running, though no call was in progress.
    pub fn from_timer(signal: i32) -> Fault {
        Fault {
            signal,
            code: 0,
            addr: 0,
            pc: 0,
            place: None,
            panic: None,
        }
    }

    /// An isolated worker that died (`status` as in [`WORKER_DIED`]).
    pub fn worker_died(status: i32) -> Fault {
        Fault {
            signal: WORKER_DIED,
            code: status,
            addr: 0,
            pc: 0,
            place: None,
            panic: None,
        }
    }

    /// An isolated worker killed by SIGKILL: from outside (the OOM killer,
    /// `kill -9`), since the worker's confinement refuses plugin code
    /// sending it to itself.
    pub fn killed_from_outside(&self) -> bool {
        self.signal == WORKER_DIED && self.code == -libc::SIGKILL
    }

    /// For a [`LEFT_BY_EXIT`] fault: which way out plugin code called, and
    /// with what status (`exits.c` puts both in `code`).
    pub fn exit_call(&self) -> (&'static str, i32) {
        let name = match self.code >> 8 {
            1 => "_exit",
            2 => "_Exit",
            3 => "quick_exit",
            _ => "exit",
        };
        (name, self.code & 0xff)
    }

    /// A call that ended because plugin code tried to end the process or
    /// the thread, not by a signal.
    pub fn is_exit(&self) -> bool {
        matches!(
            self.signal,
            LEFT_BY_EXIT | LEFT_BY_THREAD_EXIT | LEFT_BY_EXEC
        )
    }

    /// An abort that a recorded panic explains: that panic (see
    /// [`Fault::panic`]); any other fault as it is.
    pub fn with_panic(mut self, panic: impl FnOnce() -> Option<String>) -> Fault {
        if self.signal == libc::SIGABRT && self.panic.is_none() {
            self.panic = panic();
        }
        self
    }

    /// "SIGSEGV (address not mapped) at 0x0", "timeout", ...
    pub fn describe(&self) -> String {
        if let Some(panic) = &self.panic {
            return panic.clone();
        }
        if self.signal == WORKER_STOPPED {
            return "timeout: the worker process was stopped (SIGSTOP, or a debugger) and hung; it is killed".into();
        }
        if self.is_timeout() {
            return "timeout".into();
        }
        match self.signal {
            libc::SIGALRM | libc::SIGVTALRM | libc::SIGPROF => {
                return format!(
                    "{} from a timer plugin code armed (alarm, setitimer); the process's timers are stopped",
                    signal_name(self.signal)
                );
            }
            LEFT_BY_EXIT => {
                let (name, status) = self.exit_call();
                return format!("{name}({status}) called");
            }
            WORKER_DIED if self.code < 0 => {
                return format!(
                    "the worker process was killed by {}",
                    signal_name(-self.code)
                );
            }
            WORKER_DIED if self.code == WORKER_CALLER_GONE => {
                return "plugin code ended the worker's calling thread (an exit system call made \
                        directly)"
                    .into();
            }
            WORKER_DIED => {
                return format!(
                    "plugin code ended the worker process (exit status {})",
                    self.code
                );
            }
            LEFT_BY_THREAD_EXIT => return "pthread_exit called on the host's thread".into(),
            LEFT_BY_EXEC => {
                return "exec called (it would replace the host); refused".into();
            }
            _ => {}
        }
        let name = signal_name(self.signal);
        match (self.signal, cause(self.signal, self.code)) {
            (libc::SIGSEGV | libc::SIGBUS, Some(cause)) => {
                format!("{name} ({cause}) at {:#x}", self.addr)
            }
            (_, Some(cause)) => format!("{name} ({cause})"),
            (_, None) => name,
        }
    }

    /// What happened and where, as a fault line says it: `SIGSEGV (address
    /// not mapped) at 0x0 in tick+0x31 (logic.c:12)`.
    pub fn report(&self) -> String {
        match self.symbol() {
            Some(place) => format!("{} in {place}", self.describe()),
            None => self.describe(),
        }
    }

    /// The function holding the faulting instruction, as `name+0xoff`. Must
    /// be asked while the faulting library is still loaded.
    pub fn symbol(&self) -> Option<String> {
        if self.panic.is_some() {
            // The panic names its place; the abort's is the C library's.
            return None;
        }
        if let Some(place) = &self.place {
            // Empty: a fault in another process whose place is unknown
            // (this process's symbols would name the wrong code).
            return (!place.is_empty()).then(|| place.clone());
        }
        if self.pc == 0 {
            return None;
        }
        symbolize::describe(self.pc)
    }
}

/// Installs the process-wide handlers. Idempotent; the first result sticks.
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

pub fn install() -> Result<(), String> {
    INSTALLED
        .get_or_init(|| {
            // SAFETY: installs signal handlers written for this purpose (see
            // trampoline.c); it remembers the previous ones and chains to
            // them for faults outside plugin code.
            match unsafe { hr_guard_install(timeout_signal()) } {
                0 => {
                    baseline::capture();
                    Ok(())
                }
                _ => Err(format!(
                    "cannot install the crash guard: {}",
                    std::io::Error::last_os_error()
                )),
            }
        })
        .clone()
}

/// Whether [`install`] succeeded: the guard's handler is in place.
pub fn installed() -> bool {
    matches!(INSTALLED.get(), Some(Ok(())))
}

/// The C library functions the guard interposes (`exits.c`, `process.c`,
/// `threads.c`, `buffers.c`), one per line; the host executable must export them for
/// plugin code's calls to reach the guard (the `hotreload` binary's build
/// script reads this list).
pub const INTERPOSED: &str = include_str!("interposed.txt");

/// The interposed functions that plugin code's calls would not reach,
/// because the host executable does not export them (an embedding host not
/// linked with `-Wl,--export-dynamic-symbol=NAME` for each).
pub fn interposers_missing() -> Vec<String> {
    let mut names = vec![0 as std::ffi::c_char; 512];
    // SAFETY: writes at most `names.len()` bytes, NUL-terminated.
    unsafe { hr_interposers_missing(names.as_mut_ptr(), names.len()) };
    // SAFETY: the buffer is NUL-terminated within its length.
    let text = unsafe { std::ffi::CStr::from_ptr(names.as_ptr()) };
    text.to_string_lossy()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Prepares the calling thread to call plugin code: gives it an alternate
/// signal stack, so that a stack overflow in plugin code is caught too. Keep
/// the returned value for as long as the thread calls plugin code; dropping
/// it (on the same thread) gives the stack back.
pub fn prepare_thread() -> Result<ThreadGuard, String> {
    install()?;
    // SAFETY: sets this thread's alternate signal stack to fresh memory,
    // remembering the previous one; no other code's stack is touched.
    match unsafe { hr_guard_thread_init(ALT_STACK_SIZE) } {
        0 => Ok(ThreadGuard {
            _not_send: std::marker::PhantomData,
        }),
        _ => Err(format!(
            "cannot set an alternate signal stack: {}",
            std::io::Error::last_os_error()
        )),
    }
}

/// This thread's readiness to call plugin code; see [`prepare_thread`].
pub struct ThreadGuard {
    /// The alternate stack belongs to the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        // SAFETY: runs on the thread that called `prepare_thread` (the type
        // is not `Send`), outside any signal handler, after its last plugin
        // call.
        unsafe { hr_guard_thread_fini() }
    }
}

/// What a call into plugin code ended with, from a trampoline's result: 0
/// for a plain return, [`TOUCHED`] for a return after plugin code changed
/// process-wide state (repaired here), else the signal that ended it.
///
/// Every call ends with the host's signal mask and alternate signal stack
/// put back by the system calls themselves (two of them, ~0.3 µs each on
/// the machine of BENCHMARKS.md), since what no interposer sees (the raw
/// system call, a garbage longjmp, `sigaltstack`) would otherwise turn the
/// next fault or stack overflow into the end of the host.
#[inline]
fn ended(code: c_int) -> Result<(), Fault> {
    process::end_if_forked_child();
    let changed = process::settle_mask() | process::settle_altstack();
    match code {
        0 if !changed => Ok(()),
        0 | TOUCHED => {
            process::repair_now();
            Ok(())
        }
        signal => {
            let mut fault = last_fault(signal);
            if signal == timeout_signal()
                && let Some(timer) = process::take_timer_signal()
            {
                // A timer plugin code armed fired during the call, but the
                // kernel gave its signal to another thread (one with no
                // signal pending), so the call ran on until the watchdog
                // cut it off: the timer's fault, where the call was.
                fault.signal = timer;
            }
            if matches!(
                fault.signal,
                libc::SIGALRM | libc::SIGVTALRM | libc::SIGPROF
            ) {
                // It may be a POSIX timer's, which would fire again.
                process::stop_signal_timers();
            }
            // The mask is back already; this takes the record of what else
            // the call tried, for the report.
            process::repair_now();
            Err(fault)
        }
    }
}

/// A trampoline's result for a call that returned after changing
/// process-wide state (`HR_TOUCHED` in `trampoline.c`).
const TOUCHED: c_int = -3;

fn last_fault(signal: c_int) -> Fault {
    let mut raw = RawFault {
        signo: signal,
        code: 0,
        addr: std::ptr::null_mut(),
        pc: std::ptr::null_mut(),
    };
    // SAFETY: writes this thread's last fault record into `raw`.
    unsafe { hr_last_fault(&mut raw) };
    Fault {
        signal: raw.signo,
        code: raw.code,
        addr: raw.addr as usize,
        pc: raw.pc as usize,
        place: None,
        panic: None,
    }
}

/// A crash on a thread plugin code started, outside any guarded call: the
/// fault, and the id of the thread, which the guard has stopped for good
/// (see `hr_park_crashed_thread`). The first since the last call of this;
/// cheap when there was none (one load).
#[inline]
pub fn take_thread_crash() -> Option<(Fault, i32)> {
    let mut raw = RawFault {
        signo: 0,
        code: 0,
        addr: std::ptr::null_mut(),
        pc: std::ptr::null_mut(),
    };
    let mut tid: c_int = 0;
    // SAFETY: fills `raw` and `tid` from the record the handler wrote, and
    // clears it.
    if unsafe { hr_take_thread_crash(&mut raw, &mut tid) } == 0 {
        return None;
    }
    Some((
        Fault {
            signal: raw.signo,
            code: raw.code,
            addr: raw.addr as usize,
            pc: raw.pc as usize,
            place: None,
            panic: None,
        },
        tid,
    ))
}

/// Makes an exit called on a thread plugin code started end the process,
/// as the C library's would, instead of only that thread: for an isolated
/// worker, whose end the server reports as the version's fault.
pub fn thread_exits_end_the_process() {
    // SAFETY: sets one flag the exit interposers read.
    unsafe { hr_guard_thread_exits_end_the_process() }
}

/// Calls `f(state)` under the guard.
///
/// # Safety
/// `f` must be a live plugin function taking the state pointer, `state` the
/// block it expects, and [`install`] must have succeeded.
#[inline]
pub unsafe fn call_state(f: InitFn, state: *mut c_void) -> Result<(), Fault> {
    // SAFETY: per this function's contract.
    ended(unsafe { hr_call_state(f, state) })
}

/// Calls `f(state, dt)` under the guard.
///
/// # Safety
/// As for [`call_state`].
#[inline]
pub unsafe fn call_tick(f: TickFn, state: *mut c_void, dt: f64) -> Result<(), Fault> {
    // SAFETY: per this function's contract.
    ended(unsafe { hr_call_tick(f, state, dt) })
}

/// Calls the extended table's `f(state, dt, host)` under the guard.
///
/// # Safety
/// As for [`call_state`]; `host` (and the input it points at) must stay
/// valid for the call.
#[inline]
pub unsafe fn call_tick_host(
    f: TickHostFn,
    state: *mut c_void,
    dt: f64,
    host: &HostContext,
) -> Result<(), Fault> {
    // SAFETY: per this function's contract.
    ended(unsafe { hr_call_tick_host(f, state, dt, host) })
}

/// [`call_tick`] without the two system calls that settle the mask and the
/// alternate stack after it: the trampoline alone, for the dispatch
/// benchmark, which measures the two apart. Plugin code called this way
/// can leave the thread's mask or alternate stack changed.
///
/// # Safety
/// As for [`call_tick`].
#[doc(hidden)]
#[inline]
pub unsafe fn call_tick_trampoline_only(
    f: TickFn,
    state: *mut c_void,
    dt: f64,
) -> Result<(), Fault> {
    // SAFETY: per this function's contract.
    match unsafe { hr_call_tick(f, state, dt) } {
        0 | TOUCHED => Ok(()),
        signal => Err(last_fault(signal)),
    }
}

/// Calls `logic_get_api` under the guard.
///
/// # Safety
/// `f` must be a live `logic_get_api`, and [`install`] must have succeeded.
pub unsafe fn call_get_api(f: GetApiFn) -> Result<*const LogicApi, Fault> {
    // SAFETY: per this function's contract; both are `T* f(void)` in C.
    unsafe { call_get_ptr(std::mem::transmute::<GetApiFn, GetPtrFn>(f)) }.map(|p| p.cast())
}

/// Calls `logic_get_api_ext` under the guard.
///
/// # Safety
/// As for [`call_get_api`], with a live `logic_get_api_ext`.
pub unsafe fn call_get_api_ext(f: GetApiExtFn) -> Result<*const LogicApiExt, Fault> {
    // SAFETY: per this function's contract; both are `T* f(void)` in C.
    unsafe { call_get_ptr(std::mem::transmute::<GetApiExtFn, GetPtrFn>(f)) }.map(|p| p.cast())
}

/// Calls a host's own entry point (`const void* f(void)`) under the guard.
///
/// # Safety
/// `f` must be a live plugin function of that C type, and [`install`] must
/// have succeeded.
pub unsafe fn call_get_table(f: GetPtrFn) -> Result<*const c_void, Fault> {
    // SAFETY: per this function's contract.
    unsafe { call_get_ptr(f) }
}

/// Calls `f` with up to five integer or pointer arguments (unused ones
/// zero) under the guard, and returns what it left in the integer return
/// register: the call behind any function of a host's own table (see
/// `crate::embed::call`).
///
/// # Safety
/// `f` must be a live plugin function whose arguments are all integers or
/// pointers (at most five) and that returns nothing, an integer or a
/// pointer; the arguments must be what it expects; [`install`] must have
/// succeeded.
#[inline]
pub unsafe fn call_words(f: *const c_void, args: [u64; 5]) -> Result<u64, Fault> {
    let mut out = 0u64;
    // SAFETY: per this function's contract; `out` outlives the call.
    ended(unsafe { hr_call_words(f, args[0], args[1], args[2], args[3], args[4], &mut out) })
        .map(|()| out)
}

/// [`call_words`] without the two system calls after it, for the
/// benchmark that measures the parts apart (see
/// [`call_tick_trampoline_only`]).
///
/// # Safety
/// As for [`call_words`].
#[doc(hidden)]
#[inline]
pub unsafe fn call_words_trampoline_only(f: *const c_void, args: [u64; 5]) -> Result<u64, Fault> {
    let mut out = 0u64;
    // SAFETY: per this function's contract; `out` outlives the call.
    match unsafe { hr_call_words(f, args[0], args[1], args[2], args[3], args[4], &mut out) } {
        0 | TOUCHED => Ok(out),
        signal => Err(last_fault(signal)),
    }
}

/// # Safety
/// `f` must be a live plugin function of that C type.
unsafe fn call_get_ptr(f: GetPtrFn) -> Result<*const c_void, Fault> {
    let mut out: *const c_void = std::ptr::null();
    // SAFETY: per this function's contract; `out` outlives the call.
    ended(unsafe { hr_call_get_api(f, &mut out) }).map(|()| out)
}

/// Calls a library constructor under the guard, with the program's
/// arguments and environment as the loader would pass them.
///
/// # Safety
/// `f` must be a live constructor of a loaded library, `argv` and `envp`
/// NULL-terminated arrays of C strings (`argc` counting `argv`), and
/// [`install`] must have succeeded.
pub unsafe fn call_constructor(
    f: ConstructorFn,
    argc: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Result<(), Fault> {
    // SAFETY: per this function's contract.
    ended(unsafe { hr_call_constructor(f, argc, argv, envp) })
}

/// Calls a library destructor under the guard.
///
/// # Safety
/// `f` must be a live destructor of a loaded library, and [`install`] must
/// have succeeded.
pub unsafe fn call_destructor(f: DestructorFn) -> Result<(), Fault> {
    // SAFETY: per this function's contract.
    ended(unsafe { hr_call_destructor(f) })
}

/// Copies `len` bytes at `src`, an address plugin code handed over (a
/// table, a schema): a bad address is a [`Fault`], not a crash of the host.
///
/// # Safety
/// Nothing may write the memory while it is copied, and [`install`] must
/// have succeeded (the calling thread is prepared for plugin calls).
pub unsafe fn copy_from_plugin(src: *const c_void, len: usize) -> Result<Vec<u8>, Fault> {
    let mut out = vec![0u8; len];
    // SAFETY: `out` is writable for `len` bytes; a fault reading `src` is
    // caught by the guard; the rest is this function's contract.
    match unsafe { hr_guarded_copy(out.as_mut_ptr().cast(), src, len) } {
        0 => Ok(out),
        signal => Err(last_fault(signal)),
    }
}

/// The NUL-terminated string at `src`, an address plugin code handed over,
/// without its NUL; `Ok(None)` when no NUL comes within `max` bytes.
///
/// # Safety
/// As for [`copy_from_plugin`].
pub unsafe fn string_from_plugin(src: *const c_char, max: usize) -> Result<Option<Vec<u8>>, Fault> {
    let mut len = 0usize;
    // SAFETY: `len` outlives the call; a fault reading `src` is caught.
    match unsafe { hr_guarded_strnlen(src, max, &mut len) } {
        0 if len < max => {
            // SAFETY: the `len` bytes before the NUL were just read.
            unsafe { copy_from_plugin(src.cast(), len) }.map(Some)
        }
        0 => Ok(None),
        signal => Err(last_fault(signal)),
    }
}

/// Calls an extended-ABI hook (`init`, `on_reload`, `on_unload`) under the
/// guard.
///
/// # Safety
/// As for [`call_state`]; `host` must point to a valid context for the call.
pub unsafe fn call_hook(f: HookFn, state: *mut c_void, host: &HostContext) -> Result<(), Fault> {
    // SAFETY: per this function's contract.
    ended(unsafe { hr_call_hook(f, state, host) })
}

/// Calls `migrate` under the guard; `Ok` holds the hook's return value.
///
/// # Safety
/// As for [`call_state`]; `old` and `new` must be valid for their sizes.
pub unsafe fn call_migrate(
    f: MigrateFn,
    old: &[u8],
    old_version: u32,
    new: &mut [u8],
) -> Result<c_int, Fault> {
    let mut result: c_int = 0;
    // SAFETY: per this function's contract; the slices outlive the call.
    ended(unsafe {
        hr_call_migrate(
            f,
            old.as_ptr().cast(),
            old.len(),
            old_version,
            new.as_mut_ptr().cast(),
            new.len(),
            &mut result,
        )
    })
    .map(|()| result)
}

/// Calls `describe` under the guard and returns the text it wrote.
///
/// # Safety
/// As for [`call_state`].
pub unsafe fn call_describe(f: DescribeFn, state: &[u8]) -> Result<String, Fault> {
    let mut buf = vec![0u8; 512];
    let mut written = 0usize;
    // SAFETY: per this function's contract; `buf` is writable for its length.
    ended(unsafe {
        hr_call_describe(
            f,
            state.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut written,
        )
    })?;
    // Whatever the plugin claims, only what lies in the buffer and before
    // the first NUL is read.
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(buf.len())
        .min(written);
    Ok(String::from_utf8_lossy(&buf[..end.min(buf.len())]).into_owned())
}

/// `SIGSEGV`, `SIGINT`, …; `signal 40` for one without a name.
pub fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(known) => known.as_str().to_owned(),
        Err(_) => format!("signal {signal}"),
    }
}

/// `si_code` values the guard gives a SIGSEGV in the inaccessible pages
/// below and above the plugin stack (`HR_CODE_*` in `trampoline.c`).
const STACK_OVERFLOW: i32 = 0x5301;
const STACK_SMASHED: i32 = 0x5302;

fn cause(signal: i32, code: i32) -> Option<&'static str> {
    Some(match (signal, code) {
        (libc::SIGSEGV, 1) => "address not mapped",
        (libc::SIGSEGV, 2) => "invalid permissions",
        (libc::SIGSEGV, STACK_OVERFLOW) => "stack overflow: the plugin stack's 8 MiB are used up",
        (libc::SIGSEGV, STACK_SMASHED) => "a write past the top of the plugin stack",
        (libc::SIGBUS, 1) => "invalid address alignment",
        (libc::SIGBUS, 2) => "nonexistent physical address",
        (libc::SIGBUS, 3) => "object-specific hardware error",
        (libc::SIGFPE, 1) => "integer divide by zero",
        (libc::SIGFPE, 2) => "integer overflow",
        (libc::SIGFPE, 3) => "floating-point divide by zero",
        (libc::SIGILL, 1) => "illegal opcode",
        (libc::SIGILL, 2) => "illegal operand",
        (libc::SIGILL, 5) => "privileged opcode",
        (libc::SIGTRAP, 1) => "breakpoint",
        (libc::SIGABRT, _) => "abort",
        (_, c) if c <= 0 => "sent by a process",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_plugin_code_points_to_is_copied_or_refused() {
        let _thread = prepare_thread().expect("guard");
        let text = b"hello\0world";
        // SAFETY: a live, unchanging buffer; then addresses that are not
        // mapped, which the guard turns into faults.
        unsafe {
            assert_eq!(
                copy_from_plugin(text.as_ptr().cast(), 5).expect("readable"),
                b"hello"
            );
            let fault = copy_from_plugin(0x10 as *const c_void, 8).expect_err("unmapped");
            assert_eq!(fault.signal, libc::SIGSEGV);
            assert_eq!(
                string_from_plugin(text.as_ptr().cast(), 64).expect("readable"),
                Some(b"hello".to_vec())
            );
            assert_eq!(
                string_from_plugin(text.as_ptr().cast(), 3).expect("readable"),
                None,
                "no NUL within 3 bytes"
            );
            assert!(string_from_plugin(0x10 as *const c_char, 8).is_err());
        }
    }
}
