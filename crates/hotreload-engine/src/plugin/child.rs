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
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, getsockopt,
    recvmsg, sendmsg, socketpair, sockopt,
};

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
    duplicate_at_least(fd.as_raw_fd(), 3)
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

/// Starts `command` (this program again, see [`this_program`]) with
/// descriptor `from` at number `to` in the child for each pair, and makes
/// the child die with the host thread that starts it: a child never runs
/// on orphaned.
///
/// Not by arranging descriptors between `fork` and `exec`: a closure there
/// makes the standard library `fork` the host, which copies the page tables
/// of its whole address space under the memory-map lock and takes every
/// allocator lock first. With a 64 MiB state (its snapshot, history and
/// spares besides) that held the tick thread's page faults, `mprotect`s and
/// allocations up for 5-7 ms per worker started. Without one it spawns
/// with `posix_spawn` (`CLONE_VM | CLONE_VFORK`: nothing copied), and the
/// child, its standard input a socket, takes the descriptors from that
/// socket itself ([`take_hand_over`], at [`started_as`]).
pub fn spawn_handing_over(
    command: &mut Command,
    fds: &[(RawFd, i32)],
) -> Result<std::process::Child, String> {
    if fds.len() > MAX_HANDED || fds.iter().any(|&(_, to)| !(3..HIGH).contains(&to)) {
        return Err(format!(
            "expected at most {MAX_HANDED} descriptors for numbers 3 to {}, found {fds:?}",
            HIGH - 1
        ));
    }
    let (host_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("cannot create a socket: {e}"))?;
    command.stdin(std::process::Stdio::from(child_end));
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    // The command holds the child's end; the child has its own copy now.
    command.stdin(std::process::Stdio::null());
    let mut message = HAND_OVER_MAGIC.to_vec();
    for &(_, to) in fds {
        message.extend_from_slice(&to.to_le_bytes());
    }
    let froms: Vec<RawFd> = fds.iter().map(|&(from, _)| from).collect();
    if let Err(e) = send_with_fds(&host_end, &message, &froms) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("cannot hand the child its descriptors: {e}"));
    }
    Ok(child)
}

/// At most this many descriptors are handed over, each to a number below
/// [`HIGH`].
const MAX_HANDED: usize = 8;
/// Where the child parks what it received before putting it in place, so
/// that putting one in place never closes another still to be placed.
const HIGH: RawFd = 10;
/// The hand-over message opens with these bytes, then each descriptor's
/// number in the child (little-endian `i32`s), in the order attached.
const HAND_OVER_MAGIC: &[u8] = b"hotreload-hand-over\0";
/// How long a child waits for the host's message (sent right after the
/// spawn returns) before it gives up.
const HAND_OVER_WAIT_MS: i32 = 10_000;

/// In a child started by [`spawn_handing_over`], before anything else:
/// dies with the host thread that started it, checks that standard input
/// is a socket from its parent, puts the descriptors received on it at
/// their numbers (close-on-exec, so nothing plugin code starts inherits
/// them), and then reads standard input from `/dev/null`.
fn take_hand_over() -> Result<(), String> {
    let host = std::os::unix::process::parent_id();
    // SAFETY: `prctl(PR_SET_PDEATHSIG)` only sets a flag of this process.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(format!(
            "cannot tie this process to the host's lifetime: {}",
            std::io::Error::last_os_error()
        ));
    }
    // A copy, so that fd 0 stays taken until /dev/null replaces it.
    let socket = duplicate_at_least(0, HIGH)
        .map_err(|_| "expected the host's socket on standard input, found it closed".to_owned())?;
    let peer = getsockopt(&socket, sockopt::PeerCredentials).map_err(|e| {
        format!("expected the host's socket on standard input, found another kind of file ({e})")
    })?;
    // The parent is the socket's maker, and still there (the death signal
    // set above covers it from now on).
    if u32::try_from(peer.pid()).ok() != Some(host) || std::os::unix::process::parent_id() != host {
        return Err(format!(
            "expected a socket from the parent process (pid {host}) on standard input, found \
             one from pid {}",
            peer.pid()
        ));
    }
    let mut wait = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid `pollfd`, for the duration of the call.
    if unsafe { libc::poll(&mut wait, 1, HAND_OVER_WAIT_MS) } != 1 {
        return Err(format!(
            "expected the host's descriptors within {HAND_OVER_WAIT_MS} ms, found none"
        ));
    }
    let mut bytes = [0u8; 64];
    let (length, received) = receive_with_fds(&socket, &mut bytes)
        .map_err(|e| format!("cannot receive the host's descriptors: {e}"))?;
    let numbers = bytes[..length]
        .strip_prefix(HAND_OVER_MAGIC)
        .ok_or_else(|| format!("expected the host's hand-over, found {length} other bytes"))?;
    let targets: Vec<i32> = numbers
        .chunks_exact(4)
        .map(|n| i32::from_le_bytes([n[0], n[1], n[2], n[3]]))
        .collect();
    if numbers.len() % 4 != 0
        || targets.len() != received.len()
        || targets.iter().any(|to| !(3..HIGH).contains(to))
    {
        return Err(format!(
            "expected a number from 3 to {} for each of the {} descriptors handed over, found \
             {targets:?}",
            HIGH - 1,
            received.len()
        ));
    }
    place(received, &targets)?;
    // SAFETY: opens /dev/null and puts it at fd 0 (closing the socket's
    // number there; the copy above is dropped with this function); both
    // are plain system calls on descriptors this process owns.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null < 0 || libc::dup2(null, 0) < 0 {
            return Err(format!(
                "cannot read standard input from /dev/null: {}",
                std::io::Error::last_os_error()
            ));
        }
        libc::close(null);
    }
    Ok(())
}

/// Sends `message` on `socket` with descriptors `fds` attached (none: a
/// plain message), never raising SIGPIPE when the other end is gone.
pub fn send_with_fds(
    socket: &OwnedFd,
    message: &[u8],
    fds: &[RawFd],
) -> Result<(), nix::errno::Errno> {
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(message)],
        control,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// The next message on `socket` into `bytes`: its length, and the
/// descriptors attached (up to [`MAX_HANDED`], close-on-exec).
pub fn receive_with_fds(
    socket: &OwnedFd,
    bytes: &mut [u8],
) -> Result<(usize, Vec<OwnedFd>), nix::errno::Errno> {
    let mut iov = [IoSliceMut::new(bytes)];
    let mut space = nix::cmsg_space!([RawFd; MAX_HANDED]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this
            // process for this message; nothing else owns them.
            received.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, received))
}

/// Puts each of `received` at the number of the same place in `targets`.
fn place(received: Vec<OwnedFd>, targets: &[i32]) -> Result<(), String> {
    let parked: Vec<OwnedFd> = received
        .iter()
        .map(|fd| duplicate_at_least(fd.as_raw_fd(), HIGH))
        .collect::<Result<_, _>>()?;
    // Their numbers may be targets: free them before placing anything.
    drop(received);
    for (fd, &to) in parked.iter().zip(targets) {
        // SAFETY: `to` is a number below `HIGH` that nothing of this
        // process's own uses yet (a child of this program opens nothing
        // before this); `dup3` puts a copy of a descriptor it owns there.
        if unsafe { libc::dup3(fd.as_raw_fd(), to, libc::O_CLOEXEC) } < 0 {
            return Err(format!(
                "cannot put a handed-over descriptor at {to}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// A copy of `fd` at the lowest free number from `lowest` on,
/// close-on-exec.
fn duplicate_at_least(fd: RawFd, lowest: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: duplicates a descriptor the caller owns; the copy, if valid,
    // is owned by nobody else.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, lowest) };
    if copy < 0 {
        return Err(format!(
            "cannot duplicate a descriptor: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `copy` is a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
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
    take_hand_over()?;
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
