//! Waiting for a child process (a build, a trial's probe) and reading its
//! pipes on one thread, with one `poll`.
//!
//! On a machine whose processors sleep between ticks every wake-up costs
//! tens of microseconds, and a child's end is two things that happen at the
//! same moment: it exits, and its pipes reach end-of-file. Watching both in
//! one `poll` (its exit through a pidfd) hears of them in one wake-up,
//! where a waiter thread and a reader thread would each wake and then hand
//! over to each other.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What tells at once that a child has exited: a pidfd, when the kernel has
/// them (5.3 on); without one the waiter asks now and then.
pub struct ExitWatch {
    pidfd: Option<OwnedFd>,
}

impl ExitWatch {
    /// For a child not yet reaped, so that its pid cannot be another's.
    pub fn open(pid: i32) -> ExitWatch {
        // SAFETY: `pidfd_open` takes a pid and flags; the result, if valid,
        // is a new descriptor owned by nobody else.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        ExitWatch {
            pidfd: (fd >= 0).then(|| {
                // SAFETY: the fresh descriptor returned above.
                unsafe { OwnedFd::from_raw_fd(fd as i32) }
            }),
        }
    }

    /// Without a pidfd the waiter must ask whether the child has exited.
    pub fn blind(&self) -> bool {
        self.pidfd.is_none()
    }

    /// The pidfd to poll for readability (the child's exit), if there is
    /// one.
    pub fn pollfd(&self) -> Option<libc::pollfd> {
        self.pidfd.as_ref().map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
    }
}

/// `pipe` as a file that reads without blocking.
pub fn nonblocking(pipe: std::io::PipeReader, what: &str) -> Result<File, String> {
    let file = File::from(OwnedFd::from(pipe));
    // SAFETY: sets a flag on a descriptor this function owns.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(format!(
            "{what}: cannot read a pipe without blocking: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(file)
}

/// Reads `pipe` until it would block or ends, handing each chunk on;
/// whether it ended (or failed).
pub fn read_available(pipe: &mut File, chunk: &mut [u8], mut take: impl FnMut(&[u8])) -> bool {
    loop {
        match pipe.read(chunk) {
            Ok(0) => return true,
            Ok(n) => take(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return e.kind() != ErrorKind::WouldBlock,
        }
    }
}

/// Waits up to `timeout` for any of `fds` to be ready; how many are.
pub fn poll(fds: &mut [libc::pollfd], timeout: std::time::Duration) -> i32 {
    // Rounded up: a wait of 0.4 ms must not become a busy loop of zero
    // waits.
    let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    // SAFETY: `fds` is a valid array of pollfds for the whole call.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }
}
