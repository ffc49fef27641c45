//! The process's standard streams, which the host shares with plugin code.
//!
//! Two problems come from sharing them. Plugin code can close or redirect
//! descriptors 1 and 2 (`close(1)` in a tick), and every later line of the
//! host's would then be lost without a word; so the host writes its own
//! output to private duplicates taken at start ([`host_stdout`],
//! [`host_stderr`]). And what plugin code prints to stderr is the only
//! record of why a Rust plugin aborted: the panic message and its location
//! come out there, just before the SIGABRT that the guard catches. So
//! [`capture_stderr`] puts a pipe on descriptor 2 whose reader passes
//! everything through to the real stderr and remembers the last panic it
//! saw, for the `[fault]` line ([`recent_panic`]).
//!
//! Both are process-wide changes, made once, by the host program (the
//! command-line server does; an embedding host may), before any thread that
//! prints exists.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long after a panic message a SIGABRT is taken to be that panic's.
const PANIC_FRESHNESS: Duration = Duration::from_secs(2);

/// The most of one stderr line kept for parsing; the rest passes through.
const LINE_LIMIT: usize = 4096;

static STDOUT: OnceLock<File> = OnceLock::new();
static STDERR: OnceLock<File> = OnceLock::new();
static RELAY: OnceLock<Relay> = OnceLock::new();

/// A private duplicate of descriptor `fd`, close-on-exec.
fn duplicate(fd: i32) -> Option<File> {
    // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` on a descriptor number only creates a
    // new descriptor; the result, if valid, is owned by nobody else.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return None;
    }
    // SAFETY: `copy` is a fresh descriptor this process owns alone.
    Some(unsafe { File::from_raw_fd(copy) })
}

/// Where the host writes its own lines: a duplicate of stdout taken the
/// first time this is called (call it at start, before plugin code runs),
/// so that plugin code closing descriptor 1 cannot silence the host.
pub fn host_stdout() -> &'static File {
    STDOUT.get_or_init(|| duplicate(1).unwrap_or_else(|| fallback(1)))
}

/// As [`host_stdout`], for the host's error messages.
pub fn host_stderr() -> &'static File {
    STDERR.get_or_init(|| duplicate(2).unwrap_or_else(|| fallback(2)))
}

/// Without a duplicate (descriptor limit reached at start): the descriptor
/// itself, never closed by the host.
fn fallback(fd: i32) -> File {
    // SAFETY: wraps the standard descriptor; the `File` lives in a static and
    // is never dropped, so the descriptor is never closed through it.
    unsafe { File::from_raw_fd(fd) }
}

/// A Rust panic read off stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panic {
    /// `lib.rs:5:9`.
    pub location: String,
    /// The panic's message, its first line.
    pub message: String,
}

struct Relay {
    /// The pipe's read end, non-blocking: the relay thread waits in `poll`,
    /// and a drain from another thread never waits at all.
    read: File,
    state: Mutex<RelayState>,
}

#[derive(Default)]
struct RelayState {
    /// The line being read.
    line: Vec<u8>,
    /// A panic header (`thread '…' panicked at FILE:LINE:COL:`) whose message
    /// is the next line.
    header: Option<String>,
    last: Option<(Panic, Instant)>,
}

/// Routes descriptor 2 through a pipe that is read by a thread of its own:
/// everything is passed on to the real stderr at once, and the last Rust
/// panic message is kept for [`recent_panic`]. Idempotent; call before any
/// plugin code runs.
pub fn capture_stderr() -> Result<(), String> {
    if RELAY.get().is_some() {
        return Ok(());
    }
    let real = host_stderr();
    let mut fds = [0i32; 2];
    // SAFETY: `pipe2` fills two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!(
            "cannot create a pipe for plugin stderr: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: both descriptors are fresh and owned by this function.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: `dup2` onto descriptor 2 replaces stderr with the pipe's write
    // end (without close-on-exec, as a standard stream has); the original
    // stream stays open as `real`.
    if unsafe { libc::dup2(write.as_raw_fd(), 2) } < 0 {
        return Err(format!(
            "cannot redirect stderr: {}",
            std::io::Error::last_os_error()
        ));
    }
    drop(write);
    // SAFETY: sets a status flag on a descriptor this function owns.
    unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let relay = RELAY.get_or_init(|| Relay {
        read: File::from(read),
        state: Mutex::new(RelayState::default()),
    });
    let passed_on = real
        .try_clone()
        .map_err(|e| format!("cannot duplicate stderr: {e}"))?;
    std::thread::Builder::new()
        .name("hotreload-stderr".into())
        .spawn(move || relay.run(passed_on))
        .map_err(|e| format!("cannot start the stderr relay: {e}"))?;
    Ok(())
}

/// The panic plugin code reported on stderr within the last moments, if
/// any; taken, so it is reported once. Reads whatever is still in the pipe
/// first: the panic message is written before the abort it ends in.
pub fn recent_panic() -> Option<Panic> {
    let relay = RELAY.get()?;
    let mut state = relay.lock();
    let mut out = host_stderr();
    relay.drain(&mut state, &mut out);
    let (panic, at) = state.last.take()?;
    (at.elapsed() <= PANIC_FRESHNESS).then_some(panic)
}

/// Puts the real stderr back on descriptor 2 and passes on what is still in
/// the pipe. For the end of the process: nothing is lost in a pipe nobody
/// reads any more.
pub fn finish() {
    let Some(relay) = RELAY.get() else { return };
    // SAFETY: `dup2` puts the saved original stream back on descriptor 2;
    // the pipe's write end that was there is closed by it.
    unsafe { libc::dup2(host_stderr().as_raw_fd(), 2) };
    let mut state = relay.lock();
    relay.drain(&mut state, &mut host_stderr());
}

impl Relay {
    fn lock(&self) -> std::sync::MutexGuard<'_, RelayState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, mut out: File) {
        loop {
            let mut poll = libc::pollfd {
                fd: self.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid `pollfd`, for the duration of the call.
            let ready = unsafe { libc::poll(&mut poll, 1, -1) };
            if ready < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return;
            }
            let mut state = self.lock();
            if !self.drain(&mut state, &mut out) {
                return;
            }
        }
    }

    /// Passes on what the pipe holds now (its read end does not block).
    /// False once the pipe is closed.
    fn drain(&self, state: &mut RelayState, out: &mut impl Write) -> bool {
        let mut chunk = [0u8; 8192];
        loop {
            match (&self.read).read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    let _ = out.write_all(&chunk[..n]);
                    state.take_in(&chunk[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

impl RelayState {
    fn take_in(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                self.take_line(&line);
            } else if self.line.len() < LINE_LIMIT {
                self.line.push(b);
            }
        }
    }

    fn take_line(&mut self, line: &str) {
        if let Some(location) = self.header.take() {
            self.note(Panic {
                location,
                message: line.to_owned(),
            });
            return;
        }
        match parse_panic_line(line) {
            Some(PanicLine::Header { location }) => self.header = Some(location),
            Some(PanicLine::Whole(panic)) => self.note(panic),
            None => {}
        }
    }

    fn note(&mut self, panic: Panic) {
        // A panic inside an `extern "C"` function is followed by a second
        // one from the runtime saying it cannot unwind: the first one is
        // the user's.
        let secondary = panic
            .message
            .starts_with("panic in a function that cannot unwind")
            && self
                .last
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() <= PANIC_FRESHNESS);
        if !secondary {
            self.last = Some((panic, Instant::now()));
        }
    }
}

enum PanicLine {
    /// `thread 'x' panicked at src/lib.rs:5:9:` (Rust 1.73 and later): the
    /// message is the next line.
    Header { location: String },
    /// `thread 'x' panicked at 'message', src/lib.rs:5:9` (earlier Rusts).
    Whole(Panic),
}

fn parse_panic_line(line: &str) -> Option<PanicLine> {
    let rest = line.strip_prefix("thread '")?;
    let (_, after) = rest.split_once(" panicked at ")?;
    if let Some(location) = after.strip_suffix(':') {
        return Some(PanicLine::Header {
            location: location.to_owned(),
        });
    }
    let quoted = after.strip_prefix('\'')?;
    let (message, location) = quoted.rsplit_once("', ")?;
    Some(PanicLine::Whole(Panic {
        location: location.to_owned(),
        message: message.to_owned(),
    }))
}

/// The first panic in `text` (a trial probe's captured output), if any.
pub fn find_panic(text: &str) -> Option<Panic> {
    let mut state = RelayState::default();
    for line in text.lines() {
        state.take_line(line);
        if let Some((panic, _)) = state.last.take() {
            return Some(panic);
        }
    }
    None
}

/// Sends what plugin code writes to standard output to standard error
/// instead, leaving the host's own copy of standard output ([`host_stdout`],
/// taken before) for the host alone: for a server whose standard output is
/// a stream of JSON lines that plugin lines must not break.
pub fn plugin_stdout_to_stderr() -> Result<(), String> {
    host_stdout();
    // SAFETY: dup2 onto descriptor 1 from descriptor 2, both open (the
    // host's own copies were taken above, so nothing of the host's uses 1).
    if unsafe { libc::dup2(2, 1) } != 1 {
        return Err(format!(
            "cannot send plugin output to standard error: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_panic_formats_and_skips_the_cannot_unwind_one() {
        let text = "score=5\n\
                    thread '<unnamed>' (16223) panicked at lib.rs:5:166:\n\
                    score hit 5\n\
                    note: run with `RUST_BACKTRACE=1`\n\
                    thread '<unnamed>' (16223) panicked at library/core/src/panicking.rs:225:5:\n\
                    panic in a function that cannot unwind\n";
        assert_eq!(
            find_panic(text),
            Some(Panic {
                location: "lib.rs:5:166".into(),
                message: "score hit 5".into()
            })
        );
        let mut state = RelayState::default();
        state.take_in(text.as_bytes());
        assert_eq!(
            state.last.map(|(p, _)| p.message),
            Some("score hit 5".to_owned()),
            "the runtime's second panic does not replace the user's"
        );
        assert_eq!(
            find_panic("thread 'main' panicked at 'boom', src/lib.rs:2:5\n"),
            Some(Panic {
                location: "src/lib.rs:2:5".into(),
                message: "boom".into()
            })
        );
        assert_eq!(find_panic("no panic here\n"), None);
    }
}
