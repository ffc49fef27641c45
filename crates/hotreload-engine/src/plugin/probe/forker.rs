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

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, socketpair,
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

/// A probe the helper forked ahead of time and handed to the host, waiting
/// on its socket for a trial's descriptors: a trial then wakes just that
/// process, not the helper too.
struct HeldReady {
    pid: i32,
    socket: OwnedFd,
}

/// The ready probe the host holds, if any.
static HELD: Mutex<Option<HeldReady>> = Mutex::new(None);

/// Asks the helper for a probe on these descriptors: the ready one the host
/// holds, or one the helper hands out or forks now.
pub fn spawn(fds: &[RawFd]) -> Result<ForkedProbe, String> {
    let held = HELD.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(ready) = held
        && send_fds(&ready.socket, b"run", fds).is_ok()
    {
        return Ok(ForkedProbe { pid: ready.pid });
    }
    // None held, or it is gone (its group is the helper's to clean up).
    let (reply, _) = ask(b"spawn", fds)?;
    let text = String::from_utf8_lossy(&reply);
    match text
        .strip_prefix("pid ")
        .and_then(|p| p.parse::<i32>().ok())
    {
        Some(pid) => Ok(ForkedProbe { pid }),
        None => Err(format!("the trial helper could not fork a probe: {text}")),
    }
}

/// Fetches the next ready probe from the helper, so that the next trial
/// hands its descriptors straight to it; called after a trial, off its
/// path. Without one the next trial asks the helper, as before.
pub fn hold_next() {
    if !available() || HELD.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
        return;
    }
    let Ok((reply, mut fds)) = ask(b"ready", &[]) else {
        return;
    };
    let pid = String::from_utf8_lossy(&reply)
        .strip_prefix("pid ")
        .and_then(|p| p.parse::<i32>().ok());
    if let (Some(pid), Some(socket)) = (pid, fds.pop()) {
        *HELD.lock().unwrap_or_else(|e| e.into_inner()) = Some(HeldReady { pid, socket });
    }
}

/// Sends `message` with descriptors `fds` attached.
fn send_fds(socket: &OwnedFd, message: &[u8], fds: &[RawFd]) -> Result<(), String> {
    crate::plugin::child::send_with_fds(socket, message, fds)
        .map_err(|e| format!("the other end is gone ({e})"))
}

impl ForkedProbe {
    /// `None` while it runs; its raw wait status once it has exited (and
    /// been reaped, with its process group killed).
    pub fn status(&self) -> Result<Option<i32>, String> {
        let (reply, _) = ask(format!("status {}", self.pid).as_bytes(), &[])?;
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
fn ask(message: &[u8], fds: &[RawFd]) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
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

fn ask_helper(message: &[u8], fds: &[RawFd]) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    let helper = HELPER.get().ok_or("no trial helper runs")?;
    let socket = helper.lock().unwrap_or_else(|e| e.into_inner());
    send_fds(&socket, message, fds).map_err(|e| format!("the trial helper is gone: {e}"))?;
    let mut buf = [0u8; 256];
    loop {
        match receive(&socket, &mut buf, MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok((n, fds)) => {
                use std::os::fd::FromRawFd;
                // SAFETY: descriptors just received, owned by nobody else.
                let fds = fds
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
                return Ok((buf[..n].to_vec(), fds.collect()));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("the trial helper is gone ({e})")),
        }
    }
}

/// Asks the processor what it can do, once, so that no probe has to.
///
/// The standard library's feature detection (used by `memchr`, and so by
/// the ELF reader) fills its cache on first use with `cpuid`, which a
/// virtual machine traps: about 80 µs here, paid by every probe forked
/// from a helper that had not asked yet (its children inherit its memory,
/// and with it the filled cache).
fn detect_cpu_features() {
    // A feature every x86-64 has is answered at compile time without the
    // cache: these are not.
    #[cfg(target_arch = "x86_64")]
    let _ = std::hint::black_box(std::arch::is_x86_feature_detected!("avx2"));
    #[cfg(target_arch = "aarch64")]
    let _ = std::hint::black_box(std::arch::is_aarch64_feature_detected!("sve"));
}

/// The helper's loop. Never returns.
fn serve(socket: OwnedFd) -> ! {
    // SAFETY: asks for SIGKILL when the parent (the host) dies; no memory
    // is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut children: Vec<i32> = Vec::new();
    detect_cpu_features();
    let mut ready = Ready::fork(&socket, &mut children);
    // The probe handed out last: the next ready one is forked once it has
    // exited and the helper has been idle for a moment, so that the fork
    // never competes with a trial (or with what the host does right after
    // one) for the processors.
    let mut last_handed: Option<i32> = None;
    loop {
        if ready.is_none() && !wait_readable(&socket, IDLE_BEFORE_FORK) {
            if last_handed.is_none_or(exited) {
                ready = Ready::fork(&socket, &mut children);
            }
            continue;
        }
        let mut buf = [0u8; 256];
        let (n, fds) = match receive(&socket, &mut buf, MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(got) => got,
            Err(nix::errno::Errno::EINTR) => continue,
            // The host's end closed, or the socket failed: done.
            Err(_) => end(&children),
        };
        let request = String::from_utf8_lossy(&buf[..n]).into_owned();
        let reply = match request.split_once(' ') {
            None if request == "spawn" => {
                let pid = match ready.take().map(|r| r.hand(&fds, &mut children)) {
                    Some(Ok(pid)) => Ok(pid),
                    // None ready, or it is gone: fork one now.
                    _ => fork_probe(&fds, &mut children),
                };
                last_handed = pid.as_ref().ok().copied();
                match pid {
                    Ok(pid) => format!("pid {pid}"),
                    Err(why) => why,
                }
            }
            None if request == "ready" => {
                let handed = ready.take().or_else(|| Ready::fork(&socket, &mut children));
                match handed {
                    Some(r) => {
                        last_handed = Some(r.pid);
                        let sent = send_fds(
                            &socket,
                            format!("pid {}", r.pid).as_bytes(),
                            &[r.socket.as_raw_fd()],
                        );
                        if sent.is_err() {
                            end(&children);
                        }
                        continue;
                    }
                    None => "no probe could be forked".to_owned(),
                }
            }
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
        for fd in fds.iter().copied() {
            // SAFETY: descriptors received with this message, owned here.
            unsafe { libc::close(fd) };
        }
        let _ = nix::sys::socket::send(socket.as_raw_fd(), reply.as_bytes(), MsgFlags::empty());
    }
}

/// How long the helper is idle, after the last probe it handed out has
/// exited, before it forks the next ready one.
const IDLE_BEFORE_FORK: i32 = 20;

/// Waits up to `ms` for `socket` to have something to read (or to close).
fn wait_readable(socket: &OwnedFd, ms: i32) -> bool {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, ms) > 0 }
}

/// Whether child `pid` has exited (or is no longer this process's child),
/// without reaping it.
fn exited(pid: i32) -> bool {
    peek_exit(pid) != Some(false)
}

/// Whether child `pid` has exited, without reaping it; `None` if that
/// cannot be asked (it is no child of this process).
fn peek_exit(pid: i32) -> Option<bool> {
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
    (r == 0).then(|| unsafe { info.si_pid() } != 0)
}

/// One message and the descriptors that came with it.
fn receive(
    socket: &OwnedFd,
    buf: &mut [u8],
    flags: MsgFlags,
) -> Result<(usize, Vec<RawFd>), nix::errno::Errno> {
    let mut space = nix::cmsg_space!([RawFd; 5]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), flags)?;
    if msg.bytes == 0 {
        return Err(nix::errno::Errno::EPIPE);
    }
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(r) = c {
                fds.extend(r);
            }
        }
    }
    Ok((msg.bytes, fds))
}

/// A probe forked ahead of its trial, its process group and the crash
/// guard already set up, waiting on a socket of its own for the trial's
/// descriptors: the fork and that set-up are then off the trial's path.
struct Ready {
    pid: i32,
    socket: OwnedFd,
}

impl Ready {
    /// Forks the next ready probe; `None` if that fails (the trial then
    /// forks one when it comes).
    fn fork(helper: &OwnedFd, children: &mut Vec<i32>) -> Option<Ready> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .ok()?;
        // SAFETY: this process has a single thread; the child only sets
        // itself up with system calls and the guard's installation, then
        // waits for its orders (see `wait_for_orders`).
        match unsafe { libc::fork() } {
            -1 => None,
            0 => {
                drop(ours);
                // SAFETY: closes this child's copy of the helper's socket,
                // which it must not read; the helper keeps its own.
                unsafe { libc::close(helper.as_raw_fd()) };
                wait_for_orders(theirs)
            }
            pid => {
                // SAFETY: `pid` is this process's child.
                unsafe { libc::setpgid(pid, pid) };
                children.push(pid);
                Some(Ready { pid, socket: ours })
            }
        }
    }

    /// Hands the trial's descriptors over; the probe's pid.
    fn hand(self, fds: &[RawFd], children: &mut Vec<i32>) -> Result<i32, String> {
        send_fds(&self.socket, b"run", fds)
            .map(|()| self.pid)
            .inspect_err(|_| {
                // SAFETY: a child not yet reaped owns its group id; it is
                // reaped right after.
                unsafe {
                    libc::kill(-self.pid, libc::SIGKILL);
                    libc::waitpid(self.pid, std::ptr::null_mut(), 0);
                }
                children.retain(|&c| c != self.pid);
            })
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

fn fork_probe(fds: &[RawFd], children: &mut Vec<i32>) -> Result<i32, String> {
    if !(4..=5).contains(&fds.len()) {
        return Err(format!(
            "expected 4 or 5 descriptors with spawn, found {}",
            fds.len()
        ));
    }
    // SAFETY: this process has a single thread; the child only rearranges
    // descriptors with system calls and then runs the probe, as an exec'd
    // one would.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork failed: {}", std::io::Error::last_os_error())),
        0 => become_probe(fds),
        pid => {
            // Both sides set the group, so it exists before either goes on.
            // SAFETY: `pid` is this process's child.
            unsafe { libc::setpgid(pid, pid) };
            children.push(pid);
            Ok(pid)
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
    if peek_exit(pid) != Some(true) {
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

/// In a freshly forked child: a process group of its own, and what an
/// exec'd probe starts with (default actions, nothing blocked; the helper
/// inherited the host's start-up settings).
fn start_as_probe() {
    // SAFETY: plain system calls on this (single-threaded, freshly forked)
    // process.
    unsafe {
        libc::setpgid(0, 0);
        // It dies with the helper, which dies with the host.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        for signal in 1..32 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// A ready probe: set up, then blocked until the helper hands it a trial's
/// descriptors (or closes its socket: then it exits, having run nothing).
fn wait_for_orders(socket: OwnedFd) -> ! {
    start_as_probe();
    // The guard's handlers now, so that the trial does not wait for them;
    // a failure here is said by the probe's own `prepare_thread`.
    let _ = crate::guard::install();
    // Then the page faults its trial would take, while it waits.
    super::prefault::map_ahead();
    let mut buf = [0u8; 16];
    let fds = loop {
        match receive(&socket, &mut buf, MsgFlags::empty()) {
            Ok((_, fds)) => break fds,
            Err(nix::errno::Errno::EINTR) => continue,
            // SAFETY: ends this process at once, running nothing of the
            // host's.
            Err(_) => unsafe { libc::_exit(0) },
        }
    };
    run_on(&fds)
}

/// In the forked child: the probe, set up as an exec'd one starts. Never
/// returns.
fn become_probe(fds: &[RawFd]) -> ! {
    start_as_probe();
    run_on(fds)
}

/// The descriptors (request, library, report, output and, for a trial
/// with a state, the state) go where an exec'd probe finds them, everything
/// else is closed, and the probe runs. Never returns.
fn run_on(fds: &[RawFd]) -> ! {
    use super::handover::{LIBRARY_FD, REPORT_FD, REQUEST_FD, STATE_FD};
    let &[request, library, report, output, ref state @ ..] = fds else {
        eprintln!(
            "hotreload: a forked probe expected 4 or 5 descriptors, found {}",
            fds.len()
        );
        std::process::exit(2)
    };
    let places = [
        (request, REQUEST_FD),
        (library, LIBRARY_FD),
        (report, REPORT_FD),
        (output, 1),
        (output, 2),
    ];
    // SAFETY: rearranges this (single-threaded, freshly forked) process's
    // descriptors with system calls: first above every target, so that no
    // dup2 closes a descriptor still needed; then into place.
    unsafe {
        let high = |fd: RawFd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
        let moved: Vec<(RawFd, RawFd)> = places
            .iter()
            .chain(state.first().map(|s| (*s, STATE_FD)).iter())
            .map(|&(fd, at)| (high(fd), at))
            .collect();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        libc::dup2(null, 0);
        for (fd, at) in moved {
            libc::dup2(fd, at);
        }
        libc::syscall(libc::SYS_close_range, STATE_FD as u32 + 1, u32::MAX, 0u32);
        if state.is_empty() {
            libc::close(STATE_FD);
        }
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
            assert!(super::spawn(&[0, 0, 0, 0]).is_err());
        }
    }
}
