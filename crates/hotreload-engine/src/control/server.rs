//! The control socket: a Unix socket in a private folder, one thread that
//! accepts, one thread per client. Nothing here waits on the tick or reload
//! threads: `status` is read from the [`StatusBoard`], commands are handed
//! to the engine's inbox and answered at once, events come from the [`Hub`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hotreload_control::{
    Command as Wire, ErrorCode, MAX_LINE, ServerMessage, hello_line, parse_request,
    parse_server_message, reply_error, reply_ok,
};
use serde_json::json;

use super::hub::{FOLLOWER_BUFFER, Hub};
use super::status::StatusBoard;
use crate::engine::Commander;

/// Clients served at once; one more is refused with a line.
const MAX_CLIENTS: usize = 32;
/// How long a write of events to a client may wait before the client
/// counts as stuck and is dropped.
const STUCK_AFTER: Duration = Duration::from_secs(2);

/// What a control server needs from the engine and the host.
pub struct Wiring {
    pub commander: Commander,
    /// Reads and writes single values of the state between two ticks.
    pub door: crate::engine::StateDoor,
    pub board: Arc<StatusBoard>,
    pub hub: Arc<Hub>,
    /// Where the server says what it refused or could not do (a line of
    /// its output).
    pub say: Arc<dyn Fn(String) + Send + Sync>,
}

/// A listening control socket; when dropped, it stops accepting, ends its
/// clients' connections and removes the socket.
pub struct ControlServer {
    path: PathBuf,
    /// The socket's inode, to remove only the file this server made.
    inode: u64,
    /// Set when serving: what the drop has to end.
    serving: Option<Serving>,
}

struct Serving {
    stop: Arc<std::sync::atomic::AtomicBool>,
    clients: Arc<std::sync::Mutex<Vec<(u64, UnixStream)>>>,
    hub: Arc<Hub>,
}

impl ControlServer {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.stop.store(true, Ordering::Relaxed);
            // Wakes the accept loop, which then sees `stop`.
            let _ = UnixStream::connect(&self.path);
            if let Ok(clients) = serving.clients.lock() {
                for (_, client) in clients.iter() {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                }
            }
            serving.hub.close_followers();
        }
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why the socket could not be opened. `Taken`: another live server
/// answers on it.
#[derive(Debug)]
pub enum StartError {
    Taken { path: PathBuf, pid: Option<u32> },
    Other(String),
}

/// A socket bound and listening, not served yet: bound before the engine
/// starts, so that a second server in the same folder is refused before it
/// builds or loads anything.
pub struct Bound {
    listener: UnixListener,
    server: ControlServer,
}

/// Opens the socket at `path`, its folder made private if it is new; a
/// stale socket (nobody answers on it) is replaced, a live one is not.
pub fn bind(path: &Path) -> Result<Bound, StartError> {
    let folder = path
        .parent()
        .ok_or_else(|| StartError::Other(format!("{} has no folder", path.display())))?;
    private_folder(folder).map_err(StartError::Other)?;
    if std::fs::symlink_metadata(path).is_ok() {
        match UnixStream::connect(path) {
            Ok(stream) => {
                return Err(StartError::Taken {
                    path: path.to_path_buf(),
                    pid: hello_pid(stream),
                });
            }
            // Nobody listens: a dead server's socket, replaced.
            Err(_) => std::fs::remove_file(path).map_err(|e| {
                StartError::Other(format!(
                    "cannot remove the stale control socket {}: {e}",
                    path.display()
                ))
            })?,
        }
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| StartError::Other(format!("cannot listen on {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| StartError::Other(format!("cannot make {} private: {e}", path.display())))?;
    let inode = std::fs::symlink_metadata(path).map_or(0, |m| m.ino());
    Ok(Bound {
        listener,
        server: ControlServer {
            path: path.to_path_buf(),
            inode,
            serving: None,
        },
    })
}

impl Bound {
    /// Serves the socket on a thread of its own from now on.
    pub fn serve(self, wiring: Wiring) -> Result<ControlServer, StartError> {
        let serving = Serving {
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            clients: Arc::new(std::sync::Mutex::new(Vec::new())),
            hub: Arc::clone(&wiring.hub),
        };
        let (stop, clients) = (Arc::clone(&serving.stop), Arc::clone(&serving.clients));
        let wiring = Arc::new(wiring);
        let listener = self.listener;
        std::thread::Builder::new()
            .name("hotreload-control".into())
            .spawn(move || accept(listener, wiring, &stop, &clients))
            .map_err(|e| StartError::Other(format!("cannot start the control thread: {e}")))?;
        let mut server = self.server;
        server.serving = Some(serving);
        Ok(server)
    }
}

/// The folder, made with mode 0700 if missing; refused if it is not this
/// user's or others can enter it.
fn private_folder(folder: &Path) -> Result<(), String> {
    if !folder.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    }
    let meta =
        std::fs::metadata(folder).map_err(|e| format!("cannot read {}: {e}", folder.display()))?;
    let me = my_uid();
    if meta.uid() != me {
        return Err(format!(
            "expected the control folder {} to be yours (uid {me}), found it owned by uid {}",
            folder.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "expected the control folder {} to be private (mode 0700), found mode {:04o}",
            folder.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// This process's effective user. (Not the owner of `/proc/self`: an
/// isolated server makes itself non-dumpable, and that owner becomes root.)
fn my_uid() -> u32 {
    hotreload_control::effective_uid()
}

/// The pid in the hello of the server answering on `stream`, if it says.
fn hello_pid(stream: UnixStream) -> Option<u32> {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut line = String::new();
    BufReader::new(stream.take(MAX_LINE as u64))
        .read_line(&mut line)
        .ok()?;
    match parse_server_message(&line) {
        Ok(ServerMessage::Hello { pid, .. }) => Some(pid),
        _ => None,
    }
}

fn accept(
    listener: UnixListener,
    wiring: Arc<Wiring>,
    stop: &std::sync::atomic::AtomicBool,
    open: &Arc<std::sync::Mutex<Vec<(u64, UnixStream)>>>,
) {
    let mut serial = 0u64;
    let clients = Arc::new(AtomicUsize::new(0));
    let me = my_uid();
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let peer = nix::sys::socket::getsockopt(
            &stream.as_fd(),
            nix::sys::socket::sockopt::PeerCredentials,
        );
        match peer {
            Ok(cred) if cred.uid() == me => {}
            Ok(cred) => {
                (wiring.say)(format!(
                    "refused a control connection from uid {} (pid {}): only uid {me} may drive this server",
                    cred.uid(),
                    cred.pid()
                ));
                continue;
            }
            Err(e) => {
                (wiring.say)(format!(
                    "refused a control connection whose peer cannot be checked: {e}"
                ));
                continue;
            }
        }
        if clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
            let _ = stream.write_all(
                reply_error(
                    None,
                    ErrorCode::Unavailable,
                    &format!("expected at most {MAX_CLIENTS} clients at once, found that many; try again later"),
                )
                .as_bytes(),
            );
            (wiring.say)(format!(
                "refused a control connection: {MAX_CLIENTS} clients are connected already"
            ));
            continue;
        }
        clients.fetch_add(1, Ordering::Relaxed);
        serial += 1;
        let me_serial = serial;
        if let (Ok(mut open), Ok(copy)) = (open.lock(), stream.try_clone()) {
            open.push((me_serial, copy));
        }
        let open = Arc::clone(open);
        let for_client = Arc::clone(&wiring);
        let count = Arc::clone(&clients);
        // Kept to say why, should the client get no thread.
        let answer = stream.try_clone();
        let spawned = std::thread::Builder::new()
            .name("hotreload-client".into())
            .spawn(move || {
                serve(stream, &for_client);
                if let Ok(mut open) = open.lock() {
                    open.retain(|(n, _)| *n != me_serial);
                }
                count.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            clients.fetch_sub(1, Ordering::Relaxed);
            let why = format!("cannot start a thread for a control client: {e}");
            if let Ok(mut answer) = answer {
                let _ =
                    answer.write_all(reply_error(None, ErrorCode::Unavailable, &why).as_bytes());
            }
            (wiring.say)(format!("refused a control connection: {why}"));
        }
    }
}

/// One client: the hello, then a reply to every line, until it hangs up or
/// asks for events (then the connection carries events only).
fn serve(stream: UnixStream, wiring: &Wiring) {
    let mut out = match stream.try_clone() {
        Ok(out) => out,
        Err(e) => {
            let why = format!("cannot duplicate a control client's socket: {e}");
            let _ = (&stream).write_all(reply_error(None, ErrorCode::Unavailable, &why).as_bytes());
            (wiring.say)(format!("refused a control connection: {why}"));
            return;
        }
    };
    let server = format!("hotreload {}", env!("CARGO_PKG_VERSION"));
    if out
        .write_all(hello_line(&server, std::process::id()).as_bytes())
        .is_err()
    {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_capped(&mut reader, &mut line) {
            Ok(Line::End) => return,
            Ok(Line::TooLong(n)) => {
                let reply = reply_error(
                    None,
                    ErrorCode::TooLong,
                    &format!("expected a line of at most {MAX_LINE} bytes, found {n} bytes"),
                );
                if out.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
            Ok(Line::Complete) => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let reply = match parse_request(&line) {
                    Err(refused) => refused.to_line(),
                    Ok(request) => {
                        if let Wire::Events { from } = request.command {
                            follow(&mut out, wiring, request.id, from);
                            return;
                        }
                        super::commands::carry_out(request.id, &request.command, wiring)
                    }
                };
                if out.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

enum Line {
    Complete,
    TooLong(usize),
    End,
}

/// Reads up to a newline, keeping at most [`MAX_LINE`] bytes: a longer
/// line is read to its end and reported by its length, never kept.
fn read_capped(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<Line> {
    let mut total = 0usize;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(if total == 0 {
                Line::End
            } else if total > MAX_LINE {
                Line::TooLong(total)
            } else {
                Line::Complete
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let n = chunk.len();
        total += n;
        if total <= MAX_LINE {
            line.extend_from_slice(chunk);
        }
        reader.consume(n);
        if done {
            return Ok(if total > MAX_LINE {
                Line::TooLong(total)
            } else {
                Line::Complete
            });
        }
    }
}

/// Sends the events from `from` on, until the client hangs up or falls
/// [`FOLLOWER_BUFFER`] events behind (then says so and ends).
fn follow(out: &mut UnixStream, wiring: &Wiring, id: u64, from: Option<u64>) {
    let following = wiring.hub.follow(from);
    // A client that stops reading fills the socket's buffer; then a write
    // waits this long before the client counts as stuck.
    let _ = out.set_write_timeout(Some(STUCK_AFTER));
    let mut result = json!({"from": following.first_seq});
    if let (Some(next), Some(asked)) = (following.not_yet, from) {
        result["note"] = json!(format!(
            "event {asked} has not happened yet; sending from the next one, {next}"
        ));
    }
    if let Some(oldest) = following.gone_before {
        result["gone_before"] = json!(oldest);
        result["note"] = json!(format!(
            "events before seq {oldest} are no longer kept; sending from {oldest}"
        ));
    }
    if out.write_all(reply_ok(id, result).as_bytes()).is_err() {
        return;
    }
    for line in &following.backlog {
        if out.write_all(line.as_bytes()).is_err() {
            return;
        }
    }
    // A client that stops reading blocks this thread only, for at most
    // STUCK_AFTER a write; meanwhile the hub's queue for it fills, and the
    // hub drops it.
    while let Ok(line) = following.live.recv() {
        match out.write_all(line.as_bytes()) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                (wiring.say)(format!(
                    "dropped a control client that stopped reading events ({} s without taking one)",
                    STUCK_AFTER.as_secs()
                ));
                return;
            }
            // It hung up.
            Err(_) => return,
        }
    }
    let next = wiring.hub.next_seq();
    let _ = out.write_all(
        reply_error(
            Some(id),
            ErrorCode::Unavailable,
            &format!(
                "expected the client to keep up with the events, found it {FOLLOWER_BUFFER} behind; dropped; ask again with from={next} or earlier"
            ),
        )
        .as_bytes(),
    );
    (wiring.say)(format!(
        "dropped a control client that fell {FOLLOWER_BUFFER} events behind"
    ));
}
