//! The worker's side: a process that loads one version of the plugin and
//! makes the calls the host asks for, on state blocks the host shares with
//! it, under its own crash guard.
//!
//! It is the host's executable run again with [`SUBCOMMAND`] and its
//! channels on inherited descriptors: the sealed request ([`REQUEST_FD`]),
//! the host's private copy of the library ([`LIBRARY_FD`]), the socket for
//! reports and state blocks ([`SOCKET_FD`]) and the call page
//! ([`PAGE_FD`]). Anything that goes wrong here — a crash, an `_exit`, a
//! SIGKILL, a stray write into its own heap — is the end of this process
//! alone; the host replaces it.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::socket::{MsgFlags, send};

use crate::guard::watchdog::{CallWatch, Watchdog};
use crate::guard::{self, Fault};
use crate::outcome::Rejection;
use crate::plugin::child;
use crate::plugin::ext;
use crate::plugin::load::Library;
use crate::plugin::precheck::precheck;
use crate::plugin::shadow::ShadowFile;
use crate::plugin::unload::{Holder, Unloaded, unload};
use crate::plugin::version::TickContext;
use crate::plugin::{Hook, Knowledge, Plugin, check};
use crate::state::State;

use super::report::{
    self, HAS_DESCRIBE, HAS_INIT, HAS_MIGRATE, HAS_ON_RELOAD, HAS_ON_UNLOAD, HAS_TICK, Loaded,
};
use super::wire::{self, CallPage, Op, Page, Status, futex_wait, futex_wake};

pub const SUBCOMMAND: &str = "__hotreload-worker";
pub const REQUEST_FD: i32 = 3;
pub const LIBRARY_FD: i32 = 4;
pub const SOCKET_FD: i32 = 5;
pub const PAGE_FD: i32 = 6;

/// The request's first bytes; then the call timeout in milliseconds (a
/// little-endian `u64`) and the library's name.
pub const MAGIC: [u8; 8] = *b"HRWORK\x00\x02";

/// A worker's request: what it loads, and how long a call may run.
pub fn request(lib_name: &str, timeout: Duration) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&(timeout.as_millis().min(u64::MAX as u128) as u64).to_le_bytes());
    bytes.extend_from_slice(lib_name.as_bytes());
    bytes
}

/// The channels a worker was handed, once checked.
pub struct HandedOver {
    lib_name: String,
    timeout: Duration,
    library: File,
    socket: OwnedFd,
    page: File,
}

/// Whether this process was started as a worker: `Ok(None)` when it was not
/// asked to be one, `Err` when it was asked but the channels are not a
/// host's.
pub fn take_over() -> Result<Option<HandedOver>, String> {
    if !child::started_as(SUBCOMMAND)? {
        return Ok(None);
    }
    let request = child::read_sealed_request(REQUEST_FD)?;
    let rest = request
        .strip_prefix(&MAGIC)
        .ok_or_else(|| "expected a worker's request, found other bytes".to_owned())?;
    let (millis, name) = rest.split_first_chunk::<8>().ok_or_else(|| {
        format!(
            "expected a call timeout in the request, found {} bytes",
            rest.len()
        )
    })?;
    let timeout = Duration::from_millis(u64::from_le_bytes(*millis));
    let lib_name = String::from_utf8_lossy(name).into_owned();
    let library = child::claim(LIBRARY_FD, "library", |t| t.is_file())?;
    let socket = child::claim(SOCKET_FD, "socket", |t| t.is_socket())?;
    let page = child::claim(PAGE_FD, "call page", |t| t.is_file())?;
    Ok(Some(HandedOver {
        lib_name,
        timeout,
        library,
        socket: OwnedFd::from(socket),
        page,
    }))
}

/// Loads the library, reports, and serves calls until told to exit (or
/// killed). Returns the exit code.
pub fn serve(handed: HandedOver) -> i32 {
    let HandedOver {
        lib_name,
        timeout,
        library,
        socket,
        page,
    } = handed;
    line_buffer_c_stdout();
    crate::state::block::forked::privatize_in_children();
    count_forks();
    guard::thread_exits_end_the_process();
    if let Err(why) =
        super::confine::install_refusal_handler().and_then(|()| super::confine::confine())
    {
        let _ = send_report(&socket, &Err(Rejection::NotLoadable(why)));
        return 1;
    }
    if let Err(why) = end_with_this_thread() {
        let _ = send_report(&socket, &Err(Rejection::NotLoadable(why)));
        return 1;
    }
    let _thread_guard = match guard::prepare_thread() {
        Ok(g) => g,
        Err(why) => {
            let _ = send_report(&socket, &Err(Rejection::NotLoadable(why)));
            return 1;
        }
    };
    // Plugin code that hangs is interrupted here, by this process's own
    // guard, which knows where it was; the host kills a worker only when
    // even that does not come back.
    let watchdogs = crate::plugin::load::watch_loads(timeout).and_then(|loads| {
        Watchdog::for_this_thread(timeout).map(|(watchdog, calls)| (loads, watchdog, calls))
    });
    let (_load_watch, _watchdog, calls) = match watchdogs {
        Ok(w) => w,
        Err(why) => {
            let _ = send_report(&socket, &Err(Rejection::NotLoadable(why)));
            return 1;
        }
    };
    let page = match Page::map(OwnedFd::from(page)) {
        Ok(page) => page,
        Err(why) => {
            let _ = send_report(&socket, &Err(Rejection::NotLoadable(why)));
            return 1;
        }
    };
    let loaded = load(&library, &lib_name);
    settle("in a constructor");
    let plugin = match loaded {
        Ok((plugin, loaded)) => {
            if send_report(&socket, &Ok(loaded)).is_err() {
                return 1;
            }
            plugin
        }
        Err(why) => {
            let _ = send_report(&socket, &Err(why));
            return 0;
        }
    };
    let mut server = Server {
        plugin: Some(plugin),
        blocks: HashMap::new(),
        socket,
        calls,
        input: Vec::with_capacity(hotreload_abi::MAX_INPUT),
    };
    let mut seen = page.response.load(Ordering::Acquire);
    let mut watch = AFTER_CALL;
    loop {
        let asked = next_request(&page, seen, watch);
        seen = asked;
        let op = page.op.load(Ordering::Relaxed);
        let exit = server.serve_one(&page);
        page.worker_cpu
            .store(wire::current_cpu(), Ordering::Relaxed);
        page.response.store(asked, Ordering::SeqCst);
        if page.host_asleep.load(Ordering::SeqCst) != 0 {
            futex_wake(&page.response);
        }
        if exit {
            return 0;
        }
        watch = if op == Op::Warm as u32 {
            WARMED
        } else {
            AFTER_CALL
        };
    }
}

/// How long the worker watches the page for the next request before it
/// sleeps: briefly after a call (calls often come in runs: a hook, then a
/// tick), longer after a warm-up (the host sends one just before a tick).
const AFTER_CALL: Duration = Duration::from_micros(10);
/// Four times the lead the host gives (`tick::WARM_LEAD`): room for a host
/// that wakes late on a busy machine, and no more.
const WARMED: Duration = Duration::from_micros(400);

/// Waits for a request other than `seen`: watching the page for `watch`,
/// then asleep on it.
fn next_request(page: &CallPage, seen: u32, watch: Duration) -> u32 {
    let started = std::time::Instant::now();
    loop {
        let asked = page.request.load(Ordering::Acquire);
        if asked != seen {
            return asked;
        }
        // Watching only while the host is on another CPU (see
        // `wire::may_spin`).
        if started.elapsed() < watch && wire::may_spin(&page.host_cpu) {
            std::hint::spin_loop();
            continue;
        }
        // Sequentially consistent with the host's request store: either it
        // sees this flag and wakes the futex, or this sees its request.
        page.worker_asleep.store(1, Ordering::SeqCst);
        if page.request.load(Ordering::SeqCst) == seen {
            futex_wait(&page.request, seen, Duration::from_secs(3600));
        }
        page.worker_asleep.store(0, Ordering::Relaxed);
    }
}

struct Server {
    plugin: Option<Plugin>,
    /// The host's blocks, by the host's id, mapped at the host's addresses.
    blocks: HashMap<u64, State>,
    socket: OwnedFd,
    calls: CallWatch,
    /// The current tick's input, copied off the call page: plugin code is
    /// handed memory of this process's own, which the host cannot change
    /// under it mid-call.
    input: Vec<u8>,
}

impl Server {
    /// Makes the call the page asks for and writes its result; true when
    /// the host said to exit.
    fn serve_one(&mut self, page: &CallPage) -> bool {
        let op = Op::from_u32(page.op.load(Ordering::Relaxed));
        let outcome = match op {
            Some(op @ (Op::Map | Op::MapCopy)) => {
                // Mapping needs address space and descriptors as the worker
                // had them.
                settle("before the state was mapped");
                self.map(page, op == Op::MapCopy).map(|()| Reply::default())
            }
            Some(Op::Unmap) => {
                self.blocks.remove(&page.block.load(Ordering::Relaxed));
                Ok(Reply::default())
            }
            Some(Op::Warm) => Ok(Reply::default()),
            Some(Op::Exit) => {
                let (fault, note) = self.unload();
                // What the destructors did or were refused, said before the
                // worker goes.
                settle(Op::Exit.name());
                // A destructor's fault is reported as the result, not as a
                // fault of the call: the host unloads the version anyway.
                let value = i64::from(fault.is_some()) * super::EXIT_FAULT
                    + i64::from(note.is_some()) * super::EXIT_NOTE;
                let text = [note, fault].into_iter().flatten().collect::<Vec<_>>();
                finish(page, Status::Ok, value, &text.join("\n"), None);
                return true;
            }
            Some(op) => {
                self.calls.begin(std::time::Instant::now());
                let mut outcome = self.call(op, page);
                self.calls.end();
                if let Some((fault, tid)) = guard::take_thread_crash() {
                    // A thread plugin code started crashed (and is stopped
                    // for good): this version's fault, as in the server.
                    eprintln!(
                        "[guard] a thread plugin code started in the worker (pid {}, tid {tid}) crashed: {}; that thread is stopped for good",
                        std::process::id(),
                        fault.report()
                    );
                    if outcome.is_ok() {
                        outcome = Err(Ok(fault));
                    }
                }
                if op == Op::Tick {
                    report_repairs(op.name());
                } else {
                    settle(op.name());
                }
                outcome
            }
            None => Err(Err("an unknown request".to_owned())),
        };
        match outcome {
            Ok(reply) => finish(
                page,
                Status::Ok,
                reply.value,
                reply.text.as_deref().unwrap_or(""),
                None,
            ),
            Err(Ok(fault)) => {
                note_fault(page, &fault);
                let place = match &fault.panic {
                    Some(panic) => format!("{}{panic}", super::PANIC_TAG),
                    None => fault.symbol().unwrap_or_default(),
                };
                finish(page, Status::Fault, 0, &place, Some(&fault));
            }
            Err(Err(why)) => finish(page, Status::Error, 0, &why, None),
        }
        false
    }

    /// Unloads the library before the worker exits, in the order every
    /// version is unloaded ([`crate::plugin::unload`]: the POSIX timers its
    /// code armed are deleted before it is unmapped, since a thread timer
    /// firing into unmapped code would kill the worker); what keeps it
    /// mapped keeps it so for the little while until the worker exits.
    /// What a destructor's fault said, and a line about the timers, if any.
    fn unload(&mut self) -> (Option<String>, Option<String>) {
        let Some(plugin) = self.plugin.take() else {
            return (None, None);
        };
        let (done, fault, mapped_on) = match unload(plugin, || {}) {
            Unloaded::Closed(done, closed) => (done, closed.destructor_fault, None),
            Unloaded::Kept(plugin, done, holder) => {
                plugin.leak();
                (done, None, Some(holder))
            }
        };
        let timers = crate::plugin::unload::timers(done.timers_deleted);
        let note = match mapped_on {
            Some(Holder::TimerThread) => Some(format!(
                "left {timers} armed in its worker; deleted, and its code stays mapped until \
                 the worker exits: a thread timer's last call may still be running it"
            )),
            _ if done.timers_deleted > 0 => Some(format!(
                "left {timers} armed in its worker; deleted before its code was unmapped"
            )),
            _ => None,
        };
        (done.destructor_fault.or(fault), note)
    }

    /// A call into plugin code: what it returned, `Err(Ok(fault))`, or
    /// `Err(Err(why))` when the request itself is wrong.
    fn call(&mut self, op: Op, page: &CallPage) -> Result<Reply, Result<Fault, String>> {
        let Some(plugin) = self.plugin.as_ref() else {
            return Err(Err("the library is unloaded".to_owned()));
        };
        let id = page.block.load(Ordering::Relaxed);
        let host = ext::host_context(
            page.seed.load(Ordering::Relaxed),
            page.tick.load(Ordering::Relaxed),
        );
        if op == Op::Migrate {
            let new_id = page.block2.load(Ordering::Relaxed);
            let old = match self.blocks.get(&id) {
                Some(old) => old.bytes().to_vec(),
                None => return Err(Err(format!("no block {id}"))),
            };
            let Some(new) = self.blocks.get_mut(&new_id) else {
                return Err(Err(format!("no block {new_id}")));
            };
            let old_version = page.old_version.load(Ordering::Relaxed);
            new.before_call().map_err(Err)?;
            // SAFETY: both blocks are mapped for their sizes; this is the
            // only thread calling plugin code, and it ran `prepare_thread`.
            return match unsafe { plugin.migrate(&old, old_version, new) } {
                Ok(value) => Ok(Reply {
                    value: i64::from(value.unwrap_or(0)),
                    text: None,
                }),
                Err(fault) => Err(Ok(fault)),
            };
        }
        let Some(state) = self.blocks.get_mut(&id) else {
            return Err(Err(format!("no block {id}")));
        };
        state.before_call().map_err(Err)?;
        // SAFETY: the block is mapped for its size, which the host checked
        // against this version's `state_size`; this is the only thread
        // calling plugin code, and it ran `prepare_thread`.
        let result = unsafe {
            match op {
                Op::Init => plugin.init(state, &host).map(|()| None),
                Op::Tick => {
                    page.input_into(&mut self.input);
                    let context = TickContext {
                        seed: host.seed,
                        tick: host.tick,
                        input: &self.input,
                    };
                    plugin
                        .tick(
                            state,
                            f64::from_bits(page.dt.load(Ordering::Relaxed)),
                            &context,
                        )
                        .map(|()| None)
                }
                Op::Shutdown => plugin.shutdown(state).map(|()| None),
                Op::Hook => {
                    let hook = match page.hook.load(Ordering::Relaxed) {
                        1 => Hook::OnReload,
                        _ => Hook::OnUnload,
                    };
                    plugin.hook(hook, state, &host).map(|()| None)
                }
                Op::Describe => plugin.describe(state),
                _ => return Err(Err("not a call".to_owned())),
            }
        };
        match result {
            Ok(text) => Ok(Reply {
                value: i64::from(text.is_some()),
                text,
            }),
            Err(fault) => Err(Ok(fault)),
        }
    }

    /// Takes the block whose descriptor the host sent before the request:
    /// shared with the host, or (`copy`) a private copy of the file.
    fn map(&mut self, page: &CallPage, copy: bool) -> Result<(), Result<Fault, String>> {
        let id = page.block.load(Ordering::Relaxed);
        let at = page.addr.load(Ordering::Relaxed) as usize;
        let size =
            usize::try_from(page.size.load(Ordering::Relaxed)).map_err(|e| Err(e.to_string()))?;
        let mut fds = receive_fds(&self.socket).map_err(Err)?.into_iter();
        let fd = fds
            .next()
            .ok_or_else(|| Err("no block descriptor".to_owned()))?;
        if copy {
            let block = State::map_copy_at(fd, at, size).map_err(Err)?;
            self.blocks.insert(id, block);
            return Ok(());
        }
        let mut block = State::map_at(fd, at, size).map_err(Err)?;
        // A large block comes with the host's written-pages bitmap: the
        // writes made here are reported to it (see `state::shared_pages`).
        if let Some(bits) = fds.next() {
            block.report_writes_to(bits).map_err(Err)?;
        }
        self.blocks.insert(id, block);
        Ok(())
    }
}

/// Puts back what plugin code changed of the worker's process-wide settings
/// (see `guard::baseline`) and says so on the worker's standard error,
/// which is the server's: the worker needs them to map blocks and answer.
fn settle(during: &str) {
    report_repairs(during);
    let me = std::process::id();
    for drift in guard::baseline::settle() {
        eprintln!(
            "[guard] plugin code in the worker (pid {me}) changed {} ({during}); {}",
            drift.what,
            if drift.restored {
                "the worker's is put back"
            } else {
                "it could not be put back"
            }
        );
    }
}

/// Children plugin code forked in this worker (a `pthread_atfork` parent
/// handler counts them), and how many of them were said.
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static FORKS_SAID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_forks() {
    extern "C" fn forked() {
        FORKS.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: registers a parent handler that only counts.
    unsafe { libc::pthread_atfork(None, Some(forked), None) };
}

/// Says that plugin code forked: at the first child and at every tenfold
/// more (a plugin forking at every tick fills the machine with processes;
/// nothing else would say so).
fn report_forks(during: &str) {
    let forks = FORKS.load(Ordering::Relaxed);
    let said = FORKS_SAID.load(Ordering::Relaxed);
    if forks == 0 || forks < said.max(1) * 10 && said != 0 {
        return;
    }
    FORKS_SAID.store(forks, Ordering::Relaxed);
    eprintln!(
        "[guard] plugin code in the worker (pid {}) has forked {forks} child process{} (latest {during}); children still running are ended with the worker (its process group is killed with it)",
        std::process::id(),
        if forks == 1 { "" } else { "es" }
    );
}

/// Says what the confinement refused plugin code since the last call, once
/// per kind of call (up to a few kinds).
fn report_refusal(during: &str) {
    use std::sync::Mutex;
    static SAID: Mutex<Vec<(std::ffi::c_long, std::ffi::c_long)>> = Mutex::new(Vec::new());
    const KINDS_SAID: usize = 8;
    while let Some(refusal) = super::confine::take_refusal() {
        let Ok(mut said) = SAID.lock() else {
            return;
        };
        if said.contains(&refusal.kind()) || said.len() >= KINDS_SAID {
            continue;
        }
        said.push(refusal.kind());
        eprintln!(
            "[guard] plugin code in the worker (pid {}) called {} ({during}); refused (EPERM): a worker may signal only itself, never stop or kill itself, and never trace or write into another process ({} refused so far)",
            std::process::id(),
            refusal.call(),
            refusal.count
        );
    }
}

/// Says what the guard undid or refused of what plugin code did to
/// process-wide state in the worker's last calls, once per kind in the
/// worker's life (cheap when nothing: a thread-local read).
fn report_repairs(during: &str) {
    use std::sync::atomic::AtomicU64;
    report_refusal(during);
    report_forks(during);
    /// Bits of what was said: 1 the mask, 2 the alternate stack, 4 << fd a
    /// closed standard descriptor; signals refused in their own word.
    static SAID: AtomicU64 = AtomicU64::new(0);
    static SAID_REFUSED: AtomicU64 = AtomicU64::new(0);
    let Some(repair) = guard::process::take_repairs() else {
        return;
    };
    let me = std::process::id();
    let first = |bit: u64| SAID.fetch_or(bit, Ordering::Relaxed) & bit == 0;
    if (repair.mask_restored || repair.mask_calls > 0) && first(1) {
        eprintln!(
            "[guard] plugin code in the worker (pid {me}) changed the signal mask ({during}); the worker's is put back after every call"
        );
    }
    let fresh: Vec<i32> = repair
        .refused
        .iter()
        .copied()
        .filter(|&sig| {
            let bit = 1u64 << ((sig - 1) & 63);
            SAID_REFUSED.fetch_or(bit, Ordering::Relaxed) & bit == 0
        })
        .collect();
    if !fresh.is_empty() {
        let names: Vec<String> = fresh.iter().map(|s| guard::signal_name(*s)).collect();
        eprintln!(
            "[guard] plugin code in the worker (pid {me}) tried to change how {} is handled ({during}); refused: the worker's crash guard relies on it",
            names.join(", ")
        );
    }
    if repair.altstack_restored && first(2) {
        eprintln!(
            "[guard] plugin code in the worker (pid {me}) disabled or replaced the alternate signal stack ({during}); put back"
        );
    }
    for fd in repair.std_closed {
        if first(4 << fd) {
            eprintln!(
                "[guard] plugin code in the worker (pid {me}) closed descriptor {fd} ({during}); /dev/null stands in for it"
            );
        }
    }
}

/// What a call returned: `migrate`'s value, or for `describe` whether there
/// is a text, and the text.
#[derive(Default)]
struct Reply {
    value: i64,
    text: Option<String>,
}

/// Puts a fault's numbers on the page and marks the request faulted, with
/// plain stores only: the first thing done after the guard caught it.
fn note_fault(page: &CallPage, fault: &Fault) {
    page.fault_signal.store(fault.signal, Ordering::Relaxed);
    page.fault_code.store(fault.code, Ordering::Relaxed);
    page.fault_addr.store(fault.addr as u64, Ordering::Relaxed);
    page.fault_pc.store(fault.pc as u64, Ordering::Relaxed);
    page.faulted
        .store(page.request.load(Ordering::Relaxed), Ordering::Release);
}

/// Writes a result onto the page (the caller then publishes it).
fn finish(page: &CallPage, status: Status, value: i64, text: &str, fault: Option<&Fault>) {
    page.status.store(status as u32, Ordering::Relaxed);
    page.value.store(value, Ordering::Relaxed);
    page.set_text(text);
    let (signal, code, addr, pc) = fault.map_or((0, 0, 0, 0), |f| (f.signal, f.code, f.addr, f.pc));
    page.fault_signal.store(signal, Ordering::Relaxed);
    page.fault_code.store(code, Ordering::Relaxed);
    page.fault_addr.store(addr as u64, Ordering::Relaxed);
    page.fault_pc.store(pc as u64, Ordering::Relaxed);
}

/// Loads the host's copy and checks it the way the host's loader would.
fn load(library: &File, lib_name: &str) -> Result<(Plugin, Loaded), Rejection> {
    let path = PathBuf::from(format!("/proc/self/fd/{LIBRARY_FD}"));
    let bytes = {
        use std::os::unix::fs::FileExt;
        let len = library
            .metadata()
            .map_err(|e| Rejection::NotLoadable(e.to_string()))?
            .len();
        let mut bytes =
            vec![0u8; usize::try_from(len).map_err(|e| Rejection::NotLoadable(e.to_string()))?];
        library
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| Rejection::NotLoadable(e.to_string()))?;
        bytes
    };
    let spans = precheck(&bytes)?.spans;
    // The copy belongs to the host, which removes it; this process must not.
    let library = Library::open(ShadowFile::borrowed(path))?;
    let table = library.table()?;
    let api = check::check(&table, None)?;
    let ext = library.checked_ext(api.state_size)?;
    let ranges = library.mapped_ranges(&spans);
    let table_offsets = library.table_offsets();
    let hooks = ext.as_ref().map_or(0, |e| {
        (if e.init.is_some() { HAS_INIT } else { 0 })
            | (if e.on_reload.is_some() {
                HAS_ON_RELOAD
            } else {
                0
            })
            | (if e.on_unload.is_some() {
                HAS_ON_UNLOAD
            } else {
                0
            })
            | (if e.migrate.is_some() { HAS_MIGRATE } else { 0 })
            | (if e.describe.is_some() {
                HAS_DESCRIBE
            } else {
                0
            })
            | (if e.tick.is_some() { HAS_TICK } else { 0 })
    });
    let loaded = Loaded {
        api_version: api.api_version,
        state_size: api.state_size,
        ext: ext.is_some(),
        state_version: ext.as_ref().map_or(0, |e| e.state_version),
        hooks,
        schema: ext.as_ref().and_then(|e| e.schema.clone()),
        table_offsets,
        ranges,
    };
    let knowledge = Knowledge {
        ext,
        layout: None,
        spans,
    };
    let plugin = Plugin::with(api, library, 0, lib_name.to_owned(), 0, knowledge);
    Ok((plugin, loaded))
}

fn send_report(socket: &OwnedFd, result: &Result<Loaded, Rejection>) -> Result<(), String> {
    send(
        socket.as_raw_fd(),
        &report::encode(result),
        MsgFlags::empty(),
    )
    .map(|_| ())
    .map_err(|e| format!("cannot report to the host: {e}"))
}

/// The descriptors of the next message on the socket (at least one).
fn receive_fds(socket: &OwnedFd) -> Result<Vec<OwnedFd>, String> {
    let mut byte = [0u8; 8];
    let (_, owned) = child::receive_with_fds(socket, &mut byte)
        .map_err(|e| format!("cannot receive a block from the host: {e}"))?;
    if owned.is_empty() {
        return Err(
            "expected a block's descriptor from the host, found a message without one".into(),
        );
    }
    Ok(owned)
}

/// Ends the process when the calling thread ends. Plugin code can end it
/// with an exit system call that no interposer sees; the process would then
/// live on (other threads keep it) and never answer. A thread joins this one
/// (the kernel clears and wakes its thread id word when it ends, however it
/// ends) and exits with [`guard::WORKER_CALLER_GONE`].
fn end_with_this_thread() -> Result<(), String> {
    struct Target(libc::pthread_t);
    // SAFETY: a `pthread_t` is an opaque handle, valid from any thread.
    unsafe impl Send for Target {}
    // SAFETY: `pthread_self` has no preconditions.
    let target = Target(unsafe { libc::pthread_self() });
    std::thread::Builder::new()
        .name("hotreload-sentinel".into())
        .spawn(move || {
            let target = target;
            // SAFETY: `target` is a joinable thread (the worker's main
            // thread, which nothing else joins); the result is not read.
            unsafe { libc::pthread_join(target.0, std::ptr::null_mut()) };
            // SAFETY: ends the process at once, as intended: the thread that
            // served the host is gone.
            unsafe { libc::_exit(guard::WORKER_CALLER_GONE) }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the worker's sentinel thread: {e}"))
}

/// Plugin code's `printf` reaches the host's output a line at a time, as
/// in the host.
fn line_buffer_c_stdout() {
    unsafe extern "C" {
        // glibc's `FILE* stdout`.
        static mut stdout: *mut libc::FILE;
    }
    // SAFETY: called first thing in the worker, before anything is written
    // to C's stdout, which is when `setvbuf` may be called.
    unsafe {
        libc::setvbuf(stdout, std::ptr::null_mut(), libc::_IOLBF, 0);
    }
}
