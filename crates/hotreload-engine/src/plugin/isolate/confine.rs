//! What a worker may not do to other processes: a seccomp filter, installed
//! before the library is loaded, that leaves plugin code everything but the
//! ways to reach the host from outside.
//!
//! A worker runs as the same user as the host, so without this a plugin
//! could end the host with one call (`kill(getppid(), SIGKILL)`), stop it,
//! or write into its memory (`ptrace`, `process_vm_writev`). The filter
//! refuses, with `EPERM` to the caller and a line from the worker saying
//! what was tried (`refusals.c`):
//!
//! - signals to any process but the worker itself: `kill` and
//!   `rt_sigqueueinfo` only to its own pid or its own process group (the
//!   worker leads one); `tgkill` and `rt_tgsigqueueinfo` only within it
//!   (`raise`, `abort`, `pthread_kill` and the guard's watchdog keep
//!   working); `tkill` and `pidfd_send_signal` not at all;
//! - SIGKILL and the stop signals even to itself: a stopped worker is
//!   waited for (a debugger's breakpoint), and a SIGKILL is taken as coming
//!   from outside (the OOM killer, `kill -9`), which is not the build's
//!   fault; plugin code must not be able to fake either;
//! - `ptrace` and `process_vm_writev`;
//! - system calls of another ABI (`int 0x80`, x32), which would get past
//!   the numbers above (these with a plain `EPERM`).
//!
//! Processes the plugin starts from a worker inherit the filter, and with it
//! the worker's pid: they can signal the worker, not themselves. What is
//! left is documented in the README: another user's processes were never
//! reachable, and `/proc/PID/mem` of the host is closed by the host making
//! itself non-dumpable in isolated mode ([`seal_host`]).

use std::ffi::c_long;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// x32 system calls on x86-64 carry this bit in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low 32 bits of the first argument (little-endian): a `pid_t`, all
/// the kernel reads of it.
const ARG0_LOW: u32 = 16;
/// The low 32 bits of the second and third: the signal of `kill` and
/// `rt_sigqueueinfo`, of `tgkill` and `rt_tgsigqueueinfo`.
const ARG1_LOW: u32 = 24;
const ARG2_LOW: u32 = 32;

const DENY: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
/// Refused, and said: the call is not made, SIGSYS comes instead, and the
/// worker's handler makes it return `EPERM` and records it (refusals.c).
const TRAP: u32 = libc::SECCOMP_RET_TRAP;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

fn load(offset: u32) -> libc::sock_filter {
    statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// `if A == k goto +jt else goto +jf` (counted from the next instruction).
fn jump_eq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

fn ret(k: u32) -> libc::sock_filter {
    statement(libc::BPF_RET | libc::BPF_K, k)
}

fn nr(call: c_long) -> u32 {
    call as u32
}

/// The filter for a worker whose pid is `me`.
fn program(me: u32) -> Vec<libc::sock_filter> {
    let mut p = vec![
        load(ARCH),
        jump_eq(AUDIT_ARCH, 1, 0),
        ret(DENY),
        load(NR),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        ret(DENY),
    ];
    // Each check below is: the call's number, then what decides it, with
    // the number compare jumping over the decision when it does not match.
    // A decision ends in TRAP or ALLOW; each is built with its own two
    // returns at its end, so that its jumps are short and counted locally.
    let signal_rule = |signal_at: u32, group_too: bool| {
        let mut d = vec![load(signal_at)];
        // Never stop or kill itself: a worker found stopped is waited for
        // as a debugger's, and one killed by SIGKILL is taken as killed
        // from outside; plugin code must not be able to fake either.
        for signal in SELF_REFUSED {
            d.push(jump_eq(signal as u32, 0, 1));
            d.push(ret(TRAP));
        }
        d.push(load(ARG0_LOW));
        if group_too {
            d.push(jump_eq(me.wrapping_neg(), 2, 0));
        }
        d.push(jump_eq(me, 1, 0));
        d.push(ret(TRAP));
        d.push(ret(ALLOW));
        d
    };
    let rules: Vec<(c_long, Vec<libc::sock_filter>)> = vec![
        (libc::SYS_kill, signal_rule(ARG1_LOW, true)),
        (libc::SYS_rt_sigqueueinfo, signal_rule(ARG1_LOW, true)),
        (libc::SYS_tgkill, signal_rule(ARG2_LOW, false)),
        (libc::SYS_rt_tgsigqueueinfo, signal_rule(ARG2_LOW, false)),
        (libc::SYS_tkill, vec![ret(TRAP)]),
        (libc::SYS_pidfd_send_signal, vec![ret(TRAP)]),
        (libc::SYS_ptrace, vec![ret(TRAP)]),
        (libc::SYS_process_vm_writev, vec![ret(TRAP)]),
    ];
    for (call, decision) in rules {
        // The number was loaded last by `load(NR)`; a decision loads an
        // argument, but it always returns, so the next compare still sees
        // the number.
        p.push(jump_eq(nr(call), 0, decision.len() as u8));
        p.extend(decision);
    }
    p.push(ret(ALLOW));
    p
}

/// Signals a worker may not send even to itself.
const SELF_REFUSED: [libc::c_int; 5] = [
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// Installs the filter on this process (and everything it starts from now
/// on). Irreversible.
pub fn confine() -> Result<(), String> {
    let me = std::process::id();
    let mut filter = program(me);
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers; it is required
    // before an unprivileged process may install a filter.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "cannot confine the worker (no_new_privs): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `prog` points to `filter`, a valid classic BPF program that
    // outlives the call (the kernel copies it); the flags are 0.
    let done = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if done != 0 {
        return Err(format!(
            "cannot confine the worker (seccomp): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

unsafe extern "C" {
    fn hr_refusals_install() -> libc::c_int;
    fn hr_take_refusal(nr: *mut c_long, args: *mut c_long, count: *mut libc::c_int) -> libc::c_int;
}

/// A system call the filter refused.
pub struct Refusal {
    nr: c_long,
    args: [c_long; 3],
    /// Refusals in the worker's life so far.
    pub count: u32,
}

impl Refusal {
    /// `kill(4242, SIGKILL)`, `ptrace`.
    pub fn call(&self) -> String {
        let signal = |s: c_long| crate::guard::signal_name(s as i32);
        let [a0, a1, a2] = self.args;
        match self.nr {
            libc::SYS_kill => format!("kill({}, {})", a0 as i32, signal(a1)),
            libc::SYS_rt_sigqueueinfo => format!("sigqueue({}, {})", a0 as i32, signal(a1)),
            libc::SYS_tgkill => format!("tgkill({}, {}, {})", a0 as i32, a1 as i32, signal(a2)),
            libc::SYS_rt_tgsigqueueinfo => {
                format!(
                    "rt_tgsigqueueinfo({}, {}, {})",
                    a0 as i32,
                    a1 as i32,
                    signal(a2)
                )
            }
            libc::SYS_tkill => format!("tkill({}, {})", a0 as i32, signal(a1)),
            libc::SYS_pidfd_send_signal => format!("pidfd_send_signal(…, {})", signal(a1)),
            libc::SYS_ptrace => "ptrace".into(),
            libc::SYS_process_vm_writev => "process_vm_writev".into(),
            n => format!("system call {n}"),
        }
    }

    /// Which refusal it is, to say each kind once.
    pub fn kind(&self) -> (c_long, c_long) {
        let signal = match self.nr {
            libc::SYS_tgkill | libc::SYS_rt_tgsigqueueinfo => self.args[2],
            _ => self.args[1],
        };
        (self.nr, signal)
    }
}

/// Installs the handler that makes a refused call return `EPERM` and
/// records it; before [`confine`].
pub fn install_refusal_handler() -> Result<(), String> {
    // SAFETY: installs refusals.c's SIGSYS handler, written for this.
    match unsafe { hr_refusals_install() } {
        0 => Ok(()),
        _ => Err(format!(
            "cannot install the worker's SIGSYS handler: {}",
            std::io::Error::last_os_error()
        )),
    }
}

/// The latest refusal since the last call of this, if any.
pub fn take_refusal() -> Option<Refusal> {
    let mut nr: c_long = 0;
    let mut args: [c_long; 3] = [0; 3];
    let mut count: libc::c_int = 0;
    // SAFETY: the three out-pointers are valid; `args` has room for three.
    if unsafe { hr_take_refusal(&mut nr, args.as_mut_ptr(), &mut count) } == 0 {
        return None;
    }
    Some(Refusal {
        nr,
        args,
        count: u32::try_from(count).unwrap_or(0),
    })
}

/// Makes the host non-dumpable: no process of the same user (a worker, or
/// anything it starts) can then open its memory or attach to it. Debuggers
/// go to the worker, where plugin code runs.
pub fn seal_host() -> Result<(), String> {
    // SAFETY: PR_SET_DUMPABLE takes plain integers and affects only this
    // process.
    match unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } {
        0 => Ok(()),
        _ => Err(format!(
            "cannot make the server non-dumpable: {}",
            std::io::Error::last_os_error()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        let p = program(4242);
        for (i, ins) in p.iter().enumerate() {
            if ins.code as u32 & 0x07 == libc::BPF_JMP {
                assert!(
                    i + 1 + (ins.jt.max(ins.jf) as usize) < p.len(),
                    "jump at {i}"
                );
            }
        }
        assert_eq!(p.last().map(|i| i.k), Some(ALLOW));
    }
}
