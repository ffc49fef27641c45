//! What a worker may not do to other processes: a seccomp filter, installed
//! before the library is loaded, that leaves plugin code everything but the
//! ways to reach the host from outside.
//!
//! A worker runs as the same user as the host, so without this a plugin
//! could end the host with one call (`kill(getppid(), SIGKILL)`), stop it,
//! or write into its memory (`ptrace`, `process_vm_writev`). The filter
//! refuses with `EPERM`:
//!
//! - signals to any process but the worker itself: `kill` and
//!   `rt_sigqueueinfo` only to its own pid or its own process group (the
//!   worker leads one); `tgkill` and `rt_tgsigqueueinfo` only within it
//!   (`raise`, `abort`, `pthread_kill` and the guard's watchdog keep
//!   working); `tkill` and `pidfd_send_signal` not at all;
//! - `ptrace` and `process_vm_writev`;
//! - system calls of another ABI (`int 0x80`, x32), which would get past
//!   the numbers above.
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

const DENY: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
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
    let to_self = |group_too: bool| {
        let mut d = vec![load(ARG0_LOW)];
        if group_too {
            d.push(jump_eq(me.wrapping_neg(), 2, 0));
        }
        d.push(jump_eq(me, 1, 0));
        d.push(ret(DENY));
        d.push(ret(ALLOW));
        d
    };
    let rules: Vec<(c_long, Vec<libc::sock_filter>)> = vec![
        (libc::SYS_kill, to_self(true)),
        (libc::SYS_rt_sigqueueinfo, to_self(true)),
        (libc::SYS_tgkill, to_self(false)),
        (libc::SYS_rt_tgsigqueueinfo, to_self(false)),
        (libc::SYS_tkill, vec![ret(DENY)]),
        (libc::SYS_pidfd_send_signal, vec![ret(DENY)]),
        (libc::SYS_ptrace, vec![ret(DENY)]),
        (libc::SYS_process_vm_writev, vec![ret(DENY)]),
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
