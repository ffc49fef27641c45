//! A probe without `exec`: a helper process forked once, at the top of
//! `main` while the host still has a single thread, forks a fresh child
//! per trial, and that child is the probe.
//!
//! Starting the host's executable again for every trial (dynamic loading,
//! the Rust runtime, reading the request) is most of a trial's ~2.6 ms.
//! `fork` alone costs a fraction of that, but a plain `fork` of the
//! multi-threaded host is not sound: `dlopen` or `malloc` in the child can
//! deadlock on a lock some other thread held at the fork. The helper has
//! never had a second thread, so its children start with every lock free,
//! exactly as an exec'd probe does; and it never loads plugin code itself.
//!
//! The host talks to the helper over a socket pair (sequenced packets):
//! - `spawn`, with the probe's four descriptors (request, library, report
//!   pipe, output pipe) attached: the helper forks, the child puts them at
//!   the places an exec'd probe finds them, closes everything else, makes
//!   a process group of its own and becomes the probe; the reply is its pid;
//! - `status PID`: `running`, or its wait status once it has exited (the
//!   helper kills what is left of its process group first, then reaps it);
//! - `kill PID`: its process group is killed (a hang).
//!
//! The helper exits when the host's end closes, killing its children's
//! groups; it also dies with the host (`PR_SET_PDEATHSIG`). It has a process
//! group of its own, so that a terminal's Ctrl-C reaches only the host. If
//! it stops answering, trials start the executable again, and the server
//! says so once.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// The host's end of the helper's socket, once started.
static HELPER: OnceLock<Mutex<OwnedFd>> = OnceLock::new();

/// Starts the helper; called from [`super::run_if_requested`] in the host,
/// before any other thread exists. Without it (a failure here is said by
/// the first trial) trials start the executable again, as before.
pub fn start() -> Result<(), String> {
    if HELPER.get().is_some() {
        return Ok(());
    }
    if threads_now() != 1 {
        return Err("the host already runs more than one thread".into());
    }
    let (host, helper) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("cannot create the trial helper's socket: {e}"))?;
    // SAFETY: the process has a single thread (checked above), so the child
    // starts with every lock free; it runs only `serve`, which never
    // returns.
    match unsafe { libc::fork() } {
        -1 => Err(format!(
            "cannot fork the trial helper: {}",
            std::io::Error::last_os_error()
        )),
        0 => {
            drop(host);
            // A group of its own: a terminal's Ctrl-C (sent to the host's
            // group) must not end it; it ends with the host instead.
            // SAFETY: plain system call on this process.
            unsafe { libc::setpgid(0, 0) };
            serve(helper)
        }
        _ => {
            drop(helper);
            let _ = HELPER.set(Mutex::new(host));
            Ok(())
        }
    }
}

/// Whether the helper runs (trials then fork from it).
pub fn available() -> bool {
    HELPER.get().is_some()
        && !GONE.load(std::sync::atomic::Ordering::Acquire)
        && !BYPASSED.load(std::sync::atomic::Ordering::Acquire)
}

/// Trials start the executable again while set, helper or not: for
/// measuring the two side by side (benches/swap.rs).
static BYPASSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes trials fork from the helper (`true`, the default when it runs) or
/// start the executable again (`false`).
pub fn use_helper(on: bool) {
    BYPASSED.store(!on, std::sync::atomic::Ordering::Release);
}

/// Set once the helper stopped answering: trials start the executable
/// again from then on.
static GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// What to say about the helper, once: why it could not start, or that it
/// went away.
static NOTICE: Mutex<Option<String>> = Mutex::new(None);
static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn note(text: String) {
    let mut notice = NOTICE.lock().unwrap_or_else(|e| e.into_inner());
    if notice.is_none() && !SAID.load(std::sync::atomic::Ordering::Acquire) {
        *notice = Some(text);
    }
}

/// Why trials do not fork from the helper, the first time that is known
/// (`None` after that, and while it works).
pub fn notice() -> Option<String> {
    let taken = NOTICE.lock().unwrap_or_else(|e| e.into_inner()).take();
    if taken.is_some() {
        SAID.store(true, std::sync::atomic::Ordering::Release);
    }
    taken
}

/// Notes that the helper could not start; trials then exec.
pub fn missing(why: String) {
    note(format!(
        "trials start the executable again for each build (about 2.6 ms each) instead of \
         forking from a helper: {why}"
    ));
}

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// A probe the helper forked.
pub struct ForkedProbe {
    pub pid: i32,
}

/// Asks the helper for a probe on these descriptors.
pub fn spawn(fds: [RawFd; 4]) -> Result<ForkedProbe, String> {
    let reply = ask(b"spawn", &fds)?;
    let text = String::from_utf8_lossy(&reply);
    match text
        .strip_prefix("pid ")
        .and_then(|p| p.parse::<i32>().ok())
    {
        Some(pid) => Ok(ForkedProbe { pid }),
        None => Err(format!("the trial helper could not fork a probe: {text}")),
    }
}

impl ForkedProbe {
    /// `None` while it runs; its raw wait status once it has exited (and
    /// been reaped, with its process group killed).
    pub fn status(&self) -> Result<Option<i32>, String> {
        let reply = ask(format!("status {}", self.pid).as_bytes(), &[])?;
        let text = String::from_utf8_lossy(&reply);
        if text == "running" {
            return Ok(None);
        }
        text.strip_prefix("exited ")
            .and_then(|s| s.parse::<i32>().ok())
            .map(Some)
            .ok_or_else(|| format!("the trial helper said {text:?} of probe {}", self.pid))
    }

    /// Kills its process group (a hang).
    pub fn kill(&self) {
        let _ = ask(format!("kill {}", self.pid).as_bytes(), &[]);
    }
}

/// One request and its reply, the socket held for both.
fn ask(message: &[u8], fds: &[RawFd]) -> Result<Vec<u8>, String> {
    let asked = ask_helper(message, fds);
    if let Err(why) = &asked {
        GONE.store(true, std::sync::atomic::Ordering::Release);
        note(format!(
            "the trial helper stopped answering ({why}); trials start the executable again \
             from now on (about 2.6 ms each)"
        ));
    }
    asked
}

fn ask_helper(message: &[u8], fds: &[RawFd]) -> Result<Vec<u8>, String> {
    let helper = HELPER.get().ok_or("no trial helper runs")?;
    let socket = helper.lock().unwrap_or_else(|e| e.into_inner());
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(message)],
        control,
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("the trial helper is gone ({e})"))?;
    let mut buf = [0u8; 256];
    let n = nix::sys::socket::recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty())
        .map_err(|e| format!("the trial helper is gone ({e})"))?;
    if n == 0 {
        return Err("the trial helper is gone (its socket closed)".into());
    }
    Ok(buf[..n].to_vec())
}

/// The helper's loop. Never returns.
fn serve(socket: OwnedFd) -> ! {
    // SAFETY: asks for SIGKILL when the parent (the host) dies; no memory
    // is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut children: Vec<i32> = Vec::new();
    loop {
        let mut buf = [0u8; 256];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let (n, fds) = {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) if msg.bytes > 0 => {
                    let mut fds = Vec::new();
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(r) = c {
                                fds.extend(r);
                            }
                        }
                    }
                    (msg.bytes, fds)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // The host's end closed, or the socket failed: done.
                _ => end(&children),
            }
        };
        let request = String::from_utf8_lossy(&buf[..n]).into_owned();
        let reply = match request.split_once(' ') {
            None if request == "spawn" => fork_probe(&fds, &mut children),
            Some(("status", pid)) => status_of(pid, &mut children),
            Some(("kill", pid)) => {
                if let Ok(pid) = pid.parse::<i32>()
                    && children.contains(&pid)
                {
                    // SAFETY: a signal to the group of a child not yet
                    // reaped, which therefore still owns that group id.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                }
                "killed".to_owned()
            }
            _ => format!("unknown request {request:?}"),
        };
        for fd in fds {
            // SAFETY: descriptors received with this message, owned here.
            unsafe { libc::close(fd) };
        }
        let _ = nix::sys::socket::send(socket.as_raw_fd(), reply.as_bytes(), MsgFlags::empty());
    }
}

/// Kills what is left of every child's group and exits.
fn end(children: &[i32]) -> ! {
    for &pid in children {
        // SAFETY: as in `kill`: children not yet reaped.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    // SAFETY: ends this process at once, running nothing of the host's.
    unsafe { libc::_exit(0) }
}

fn fork_probe(fds: &[RawFd], children: &mut Vec<i32>) -> String {
    let [request, library, report, output] = fds else {
        return format!("expected 4 descriptors with spawn, found {}", fds.len());
    };
    // SAFETY: this process has a single thread; the child only rearranges
    // descriptors with system calls and then runs the probe, as an exec'd
    // one would.
    match unsafe { libc::fork() } {
        -1 => format!("fork failed: {}", std::io::Error::last_os_error()),
        0 => become_probe([*request, *library, *report, *output]),
        pid => {
            // Both sides set the group, so it exists before either goes on.
            // SAFETY: `pid` is this process's child.
            unsafe { libc::setpgid(pid, pid) };
            children.push(pid);
            format!("pid {pid}")
        }
    }
}

fn status_of(pid: &str, children: &mut Vec<i32>) -> String {
    let Ok(pid) = pid.parse::<i32>() else {
        return format!("expected a pid, found {pid:?}");
    };
    if !children.contains(&pid) {
        return format!("{pid} is not a probe of this helper");
    }
    // SAFETY: `siginfo_t` is plain data, valid when zeroed.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waits without blocking and without reaping, into `info`.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: `si_pid` is filled in by a successful waitid that found one.
    if r != 0 || unsafe { info.si_pid() } == 0 {
        return "running".into();
    }
    // Anything the probe started goes with it, while the group id is still
    // its own (not reaped yet).
    // SAFETY: as in `kill`.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: reaps the child just seen exited.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    children.retain(|&c| c != pid);
    format!("exited {status}")
}

/// In the forked child: the descriptors go where an exec'd probe finds
/// them, everything else is closed, and the probe runs. Never returns.
fn become_probe(fds: [RawFd; 4]) -> ! {
    use super::handover::{LIBRARY_FD, REPORT_FD, REQUEST_FD};
    // SAFETY: rearranges this (single-threaded, freshly forked) process's
    // descriptors with system calls: first above every target, so that no
    // dup2 closes a descriptor still needed; then into place.
    unsafe {
        libc::setpgid(0, 0);
        // What an exec'd probe starts with: default actions, nothing
        // blocked (the helper inherited the host's start-up settings).
        for signal in 1..32 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        let mut high = [0; 4];
        for (i, fd) in fds.iter().enumerate() {
            high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        libc::dup2(null, 0);
        libc::dup2(high[3], 1);
        libc::dup2(high[3], 2);
        libc::dup2(high[0], REQUEST_FD);
        libc::dup2(high[1], LIBRARY_FD);
        libc::dup2(high[2], REPORT_FD);
        libc::syscall(libc::SYS_close_range, REPORT_FD as u32 + 1, u32::MAX, 0u32);
    }
    let code = match super::handover::take_over_forked() {
        Ok(handed) => super::run_probe(handed),
        Err(why) => {
            eprintln!("hotreload: a forked probe found its channels wrong: {why}");
            2
        }
    };
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_request_without_a_helper_is_an_error_not_a_panic() {
        if !super::available() {
            assert!(super::spawn([0, 0, 0, 0]).is_err());
        }
    }
}
