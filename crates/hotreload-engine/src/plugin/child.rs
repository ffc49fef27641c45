//! Starting a child of the host's own executable (a trial's probe, an
//! isolated worker) and handing it descriptors, and, on the child's side,
//! taking them over only if they are what a host hands over.
//!
//! Both kinds of child are the `hotreload` executable run again with a
//! hidden subcommand. They take their orders from descriptors, never from
//! paths or the environment: a sealed memfd with the request (only a process
//! that created one can have one), the host's private copy of the library,
//! and the channels back. So nothing a user types can start one by accident,
//! and a child opens, creates and writes no path of its own.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

pub use super::sealed::SEALS;
/// A request larger than this is not one a host writes.
const MAX_REQUEST: u64 = 1 << 40;

/// A sealed memfd holding `bytes`, named `name` (for `/proc`), for the host
/// to hand to a child.
pub fn sealed_memfd(name: &std::ffi::CStr, bytes: &[u8]) -> Result<File, String> {
    let mut buffer = super::sealed::SealedBuffer::create(name)?;
    buffer.reserve(bytes.len())?;
    buffer.write_at(0, bytes)?;
    buffer.seal()
}

/// `fd` moved to a number above the standard streams' (close-on-exec):
/// plugin code may have closed the host's descriptor 0, 1 or 2, a new one
/// then takes that number, and the child's standard streams, put in place
/// before the hand-over, would overwrite it.
pub fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, String> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicates a descriptor this function owns; the copy, if
    // valid, is owned by nobody else.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(format!(
            "cannot duplicate a descriptor: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `copy` is a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// A command that runs this very program again: through `/proc/self/exe`,
/// which names the executable this process was started from even after the
/// file at its path is replaced or removed (a `cargo build` or `cargo
/// install` while a server runs): a child started by path would be the new
/// binary, or none. `argv[0]` is still the program's path, for `ps`.
pub fn this_program() -> Command {
    let mut command = Command::new("/proc/self/exe");
    // The server's environment as it started (see guard::baseline).
    command
        .env_clear()
        .envs(crate::guard::baseline::environment());
    if let Ok(path) = std::env::current_exe() {
        let shown = path.to_string_lossy();
        command.arg0(shown.strip_suffix(" (deleted)").unwrap_or(&shown));
    }
    command
}

/// Arranges for `command`'s child to find descriptor `from` at number `to`
/// for each pair (the `from`s above the standard streams, see
/// [`above_stdio`], and kept open until the child is spawned), and to die
/// with the host thread that spawns it: a child never runs on orphaned.
pub fn hand_over(command: &mut Command, fds: &[(RawFd, i32)]) {
    let fds: Vec<(RawFd, i32)> = fds.to_vec();
    let host_pid = std::process::id() as libc::pid_t;
    // SAFETY: runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: `prctl`, `getppid`, `fcntl` and
    // `dup2` are plain system calls, and nothing allocates (the vector was
    // made before the fork and is only read). The descriptors are first
    // moved above any target number, so that putting one in place never
    // closes another still to be placed; `dup2` leaves the targets without
    // close-on-exec, so they survive the exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The host may have died before the line above took effect.
            if libc::getppid() != host_pid {
                return Err(std::io::Error::other("the host is gone"));
            }
            let mut high = [0 as RawFd; 8];
            for (i, (from, _)) in fds.iter().take(high.len()).enumerate() {
                high[i] = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, 10);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, (_, to)) in fds.iter().take(high.len()).enumerate() {
                if libc::dup2(high[i], *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Takes ownership of inherited descriptor `fd` if it is open and of the
/// kind `is`, marking it close-on-exec so that nothing the plugin starts
/// inherits it.
pub fn claim(fd: i32, what: &str, is: impl Fn(std::fs::FileType) -> bool) -> Result<File, String> {
    // SAFETY: `F_GETFD` only asks whether the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!(
            "expected the {what} on descriptor {fd}, found it closed"
        ));
    }
    // SAFETY: the descriptor is open and was handed to this process for
    // this purpose; nothing else in the process refers to it.
    let file = unsafe { File::from_raw_fd(fd) };
    let kind = file
        .metadata()
        .map_err(|e| format!("cannot inspect descriptor {fd}: {e}"))?
        .file_type();
    if !is(kind) {
        // Not ours: leave the descriptor to whoever it belongs to.
        std::mem::forget(file);
        return Err(format!(
            "expected the {what} on descriptor {fd}, found another kind of file"
        ));
    }
    // SAFETY: sets a flag on a descriptor this process now owns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(file)
}

/// Whether this process was started with the hidden subcommand `name`:
/// `Ok(false)` without it, `Err` when it came with arguments (no host adds
/// any).
pub fn started_as(name: &str) -> Result<bool, String> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(name)) {
        return Ok(false);
    }
    if args.next().is_some() {
        return Err(format!("{name} takes no arguments"));
    }
    Ok(true)
}

/// Reads the sealed request on descriptor `fd`, after checking that it is
/// one: a memfd sealed against every change, which only a process that
/// created it can have handed over.
pub fn read_sealed_request(fd: i32) -> Result<Vec<u8>, String> {
    // SAFETY: `F_GET_SEALS` only reads the descriptor's seals; it fails on
    // anything but a memfd (and on a closed descriptor).
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if seals < 0 || seals & SEALS != SEALS {
        return Err(format!(
            "expected a sealed request on descriptor {fd}, found {}",
            if seals < 0 { "none" } else { "an unsealed one" }
        ));
    }
    let request = claim(fd, "request", |t| t.is_file())?;
    let size = request
        .metadata()
        .map_err(|e| format!("cannot read the request: {e}"))?
        .len();
    if size > MAX_REQUEST {
        return Err(format!(
            "the request is {size} bytes: more than a host writes"
        ));
    }
    // From offset 0: the host's writes left the shared offset at the end.
    let mut bytes = vec![0u8; usize::try_from(size).map_err(|_| "request too large".to_owned())?];
    request
        .read_exact_at(&mut bytes, 0)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    Ok(bytes)
}

/// Reads a message handed between the host and a child it started (a
/// worker's report and replies, a probe's request), little-endian; every
/// read is checked against the bytes left, so a short or garbled message is
/// an error naming `what` was short, never a panic.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader of a worker's message.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader::labelled(bytes, "the worker's message")
    }

    /// A reader whose errors call the message `what` (`the request`).
    pub fn labelled(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, at: 0, what }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.at
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "{} ends at byte {}: expected {n} more bytes after byte {}",
                    self.what,
                    self.bytes.len(),
                    self.at
                )
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(raw))
    }
    pub fn i32(&mut self) -> Result<i32, String> {
        Ok(self.u32()? as i32)
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn string(&mut self) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}
