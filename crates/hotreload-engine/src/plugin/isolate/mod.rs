//! Isolated mode: plugin code in worker processes, the state in shared
//! memory the host owns.
//!
//! The in-process guard turns every fault that leaves the process intact
//! into a rollback, but some things end the process itself: `_exit` made as
//! a system call, SIGKILL, a stray write into the host's heap, a loader
//! corrupted beyond repair. With `--isolate`, the host never maps plugin
//! code at all. Each version runs in a [`Worker`]: the host's executable
//! started again ([`worker`]), which loads that version's library and makes
//! the calls the host asks for, on the state block the host shares with it
//! ([`crate::state::State::shared`], mapped at the host's own address in
//! every worker). A call is a round trip through a shared page ([`wire`]);
//! a worker that faults, hangs, exits or dies is a fault of its version like
//! any other: the host puts the state back from its snapshot and goes on
//! with the previous version's worker. A worker cannot reach the host from
//! outside either ([`confine`]): no signals to it, no way into its memory.

pub mod confine;
pub mod report;
pub mod wire;
pub mod worker;

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, socketpair};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use std::ffi::c_int;

use crate::event::{Event, EventSink};
use crate::guard::{self, Fault};
use crate::outcome::Rejection;
use crate::plugin::Hook;
use crate::plugin::child::{
    above_stdio, sealed_memfd, send_with_fds, spawn_handing_over, this_program,
};
use crate::state::State;

pub use report::Loaded;
use wire::{CallPage, Op, Page, Status, current_cpu, futex_wait, futex_wake, may_spin};

/// How long a request is spun on before the host sleeps on it: most ticks
/// are shorter, and a futex sleep adds a wake-up to the round trip.
const SPIN: Duration = Duration::from_micros(30);
/// How often a sleeping wait looks whether the worker is still alive.
const LIVENESS_EVERY: Duration = Duration::from_millis(2);

/// How much longer than the call timeout the host waits before it kills a
/// worker: the worker's own guard interrupts a hung call at the timeout and
/// says where it was; the host's wait is the backstop for a worker that
/// cannot answer at all (stopped, or its guard broken).
const BACKSTOP_MARGIN: Duration = Duration::from_millis(250);

/// How long a worker that noted a fault may take to name its place.
const PLACE_GRACE: Duration = Duration::from_millis(300);

/// A fault's text on the call page that starts with this is a panic the
/// library recorded (see [`Fault::panic`]), not the place of the fault.
pub(crate) const PANIC_TAG: &str = "\u{1}panic\u{1}";

/// A worker process running one version, seen from the host.
pub struct Worker {
    child: RefCell<Child>,
    page: Page,
    socket: OwnedFd,
    /// The longest the host waits for a call before it kills the worker.
    timeout: Duration,
    /// The last request's number.
    sent: Cell<u32>,
    /// The blocks the worker has mapped, by id.
    mapped: RefCell<Vec<u64>>,
    /// Who hears that a live worker stopped mid-call, and for which version
    /// (`None` for a trial's worker, which is killed like a hung one).
    stopped_notice: Option<(EventSink, u64, Arc<AtomicBool>)>,
    /// Whether the current stop was said.
    said_stopped: Cell<bool>,
    /// A warm-up request not yet answered (see [`Worker::warm`]).
    warming: Cell<Option<u32>>,
    /// Set once the worker is known to be gone (then every call fails so).
    gone: Cell<Option<i32>>,
}

/// What a call returned.
struct Reply {
    value: i64,
    text: String,
}

impl Worker {
    /// Starts a worker on the library copy at `library` and waits for its
    /// report: what it loaded, or why it refused (the same rejection the
    /// host's own loader would make).
    ///
    /// What plugin code prints goes where the host's output goes, or to
    /// `output` (a trial's, shown only if it fails).
    pub fn spawn(
        library: &Path,
        lib_name: &str,
        timeout: Duration,
        output: Option<OwnedFd>,
    ) -> Result<(Worker, Loaded), Rejection> {
        let refuse = |why: String| Rejection::NotLoadable(format!("isolated worker: {why}"));
        let request = worker::request(lib_name, timeout);
        let request = sealed_memfd(c"hotreload-worker-request", &request).map_err(refuse)?;
        let lib = File::open(library)
            .map_err(|e| refuse(format!("cannot open {}: {e}", library.display())))?;
        let (host_end, worker_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| refuse(format!("cannot create a socket: {e}")))?;
        let page = Page::create().map_err(refuse)?;
        let (request, lib, worker_end, page_fd) = (
            above_stdio(request.into()).map_err(refuse)?,
            above_stdio(lib.into()).map_err(refuse)?,
            above_stdio(worker_end).map_err(refuse)?,
            above_stdio(page.fd().try_clone().map_err(|e| refuse(e.to_string()))?)
                .map_err(refuse)?,
        );
        let mut command = this_program();
        // Plugin output goes where the host's goes; its own group keeps a
        // terminal's Ctrl-C away from it (the host stops it in order).
        command.arg(worker::SUBCOMMAND).process_group(0);
        if let Some(output) = output {
            let copy = output
                .try_clone()
                .map_err(|e| refuse(format!("cannot duplicate a pipe: {e}")))?;
            command.stdout(copy).stderr(output);
        }
        let child = spawn_handing_over(
            &mut command,
            &[
                (request.as_raw_fd(), worker::REQUEST_FD),
                (lib.as_raw_fd(), worker::LIBRARY_FD),
                (worker_end.as_raw_fd(), worker::SOCKET_FD),
                (page_fd.as_raw_fd(), worker::PAGE_FD),
            ],
        )
        .map_err(|e| refuse(format!("cannot start the worker: {e}")))?;
        drop(command);
        drop((request, lib, worker_end, page_fd));
        let worker = Worker {
            child: RefCell::new(child),
            page,
            socket: host_end,
            timeout: timeout + timeout / 2 + BACKSTOP_MARGIN,
            sent: Cell::new(0),
            mapped: RefCell::new(Vec::new()),
            warming: Cell::new(None),
            stopped_notice: None,
            said_stopped: Cell::new(false),
            gone: Cell::new(None),
        };
        let report = worker.receive_report()?;
        let loaded = report::decode(&report).map_err(refuse)??;
        Ok((worker, loaded))
    }

    /// The worker's one report, waited for as long as a call may take
    /// (loading runs the library's constructors).
    fn receive_report(&self) -> Result<Vec<u8>, Rejection> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let mut fd = libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid `pollfd`, for the duration of the call.
            let ready = unsafe { libc::poll(&mut fd, 1, 20) };
            if ready > 0 {
                let n = recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::empty())
                    .map_err(|e| Rejection::NotLoadable(format!("isolated worker: {e}")))?;
                if n > 0 {
                    buf.truncate(n);
                    return Ok(buf);
                }
            }
            if let Some(status) = self.exit_status() {
                return Err(Rejection::Faulted(format!(
                    "while loading, {}",
                    Fault::worker_died(status).describe()
                )));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(Rejection::Faulted(format!(
                    "loading (constructors, logic_get_api) in the worker hung for {} ms",
                    self.timeout.as_millis()
                )));
            }
        }
    }

    /// Whether the worker has exited, and how (see [`guard::WORKER_DIED`]).
    /// Once it has, whatever it started in its process group goes too.
    fn exit_status(&self) -> Option<i32> {
        if let Some(status) = self.gone.get() {
            return Some(status);
        }
        // Looked at without reaping: until the worker is reaped its process
        // group cannot be another's, so it is safe to kill.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let status = match waitid(Id::Pid(self.pid()), flags) {
            Ok(WaitStatus::Exited(_, code)) => code,
            Ok(WaitStatus::Signaled(_, signal, _)) => -(signal as i32),
            _ => return None,
        };
        self.end(status);
        Some(status)
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.process_id() as i32)
    }

    /// The worker's process id.
    /// How the worker ended, if it has (a kept version's worker killed from
    /// outside, or by a thread plugin code left running), as a fault.
    pub fn ended(&self) -> Option<Fault> {
        self.exit_status().map(Fault::worker_died)
    }

    pub fn process_id(&self) -> u32 {
        self.child.borrow().id()
    }

    /// Kills the worker, if it is still there, and everything it started.
    fn kill(&self) {
        if self.gone.get().is_none() {
            self.end(-libc::SIGKILL);
        }
    }

    /// Kills the worker's process group and reaps the worker; `status` is
    /// what calls report from now on.
    fn end(&self, status: i32) {
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.borrow_mut().wait();
        self.gone.set(Some(status));
    }

    /// Makes the worker map `blocks` at the host's addresses, and forget
    /// every other block it has: the host's blocks come and go (a migration
    /// makes a new one, a rollback may), and a worker holds on only to those
    /// its calls use.
    fn map_only(&self, blocks: &[&State]) -> Result<(), Fault> {
        let stale: Vec<u64> = self
            .mapped
            .borrow()
            .iter()
            .copied()
            .filter(|id| !blocks.iter().any(|b| b.id() == *id))
            .collect();
        for id in stale {
            self.call(Op::Unmap, |p| p.block.store(id, Ordering::Relaxed))?;
            self.mapped.borrow_mut().retain(|m| *m != id);
        }
        for state in blocks {
            if !self.mapped.borrow().contains(&state.id()) {
                self.map(state)?;
            }
        }
        Ok(())
    }

    fn map(&self, state: &State) -> Result<(), Fault> {
        // The descriptors first: the worker reads them when it sees the
        // request. A large block's written-pages bitmap comes with it; a
        // private copy is nobody's to track.
        let (op, fds) = match (state.shared_fd(), state.copied_fd()) {
            (Some(fd), _) => {
                let mut fds = vec![fd.as_raw_fd()];
                fds.extend(state.written_pages_fd().map(|bits| bits.as_raw_fd()));
                (Op::Map, fds)
            }
            (None, Some(fd)) => (Op::MapCopy, vec![fd.as_raw_fd()]),
            (None, None) => return Err(self.error("the state is not in shared memory")),
        };
        send_with_fds(&self.socket, &[0u8], &fds)
            .map_err(|e| self.error(&format!("cannot hand the state to the worker: {e}")))?;
        self.call(op, |p| {
            p.block.store(state.id(), Ordering::Relaxed);
            p.addr.store(state.address() as u64, Ordering::Relaxed);
            p.size.store(state.size() as u64, Ordering::Relaxed);
        })?;
        self.mapped.borrow_mut().push(state.id());
        Ok(())
    }

    /// A call on one block: `init`, `tick`, `shutdown`, a hook or `describe`.
    fn call_on(&self, state: &State, op: Op, fill: impl FnOnce(&CallPage)) -> Result<Reply, Fault> {
        self.map_only(&[state])?;
        self.call(op, |p| {
            p.block.store(state.id(), Ordering::Relaxed);
            fill(p);
        })
    }

    /// `init` (the extended table's with the host context, if the version
    /// has one, as in the host).
    pub fn init(&self, state: &State, seed: u64, tick: u64) -> Result<(), Fault> {
        self.call_on(state, Op::Init, |p| {
            p.seed.store(seed, Ordering::Relaxed);
            p.tick.store(tick, Ordering::Relaxed);
        })
        .map(drop)
    }

    #[inline]
    pub fn tick(
        &self,
        state: &State,
        dt: f64,
        context: &crate::plugin::version::TickContext<'_>,
    ) -> Result<(), Fault> {
        self.call_on(state, Op::Tick, |p| {
            p.dt.store(dt.to_bits(), Ordering::Relaxed);
            p.seed.store(context.seed, Ordering::Relaxed);
            p.tick.store(context.tick, Ordering::Relaxed);
            p.set_input(context.input);
        })
        .map(drop)
    }

    pub fn shutdown(&self, state: &State) -> Result<(), Fault> {
        self.call_on(state, Op::Shutdown, |_| {}).map(drop)
    }

    pub fn hook(&self, hook: Hook, state: &State, seed: u64, tick: u64) -> Result<(), Fault> {
        let code = match hook {
            Hook::OnReload => 1,
            Hook::OnUnload => 2,
        };
        self.call_on(state, Op::Hook, |p| {
            p.hook.store(code, Ordering::Relaxed);
            p.seed.store(seed, Ordering::Relaxed);
            p.tick.store(tick, Ordering::Relaxed);
        })
        .map(drop)
    }

    /// `migrate` from `old` (the bytes of state version `old_version`) into
    /// `new`, through a block made for the call.
    pub fn migrate(&self, old: &[u8], old_version: u32, new: &State) -> Result<c_int, Fault> {
        let mut from = State::shared(old.len())
            .map_err(|why| self.error(&format!("cannot share the old state: {why}")))?;
        from.bytes_mut().copy_from_slice(old);
        self.map_only(&[&from, new])?;
        let reply = self.call(Op::Migrate, |p| {
            p.block.store(from.id(), Ordering::Relaxed);
            p.block2.store(new.id(), Ordering::Relaxed);
            p.old_version.store(old_version, Ordering::Relaxed);
        });
        // Forgotten now, not at the next call: it is freed here.
        let _ = self.map_only(&[new]);
        // `migrate` returns a C `int`; the page carries it widened.
        reply.map(|r| r.value as c_int)
    }

    pub fn describe(&self, state: &State) -> Result<String, Fault> {
        self.call_on(state, Op::Describe, |_| {}).map(|r| r.text)
    }

    /// A live version's worker: when it is found stopped (a debugger, or
    /// SIGSTOP) at a call's timeout, `events` hears it once, and the call
    /// waits for it to go on instead of killing it, until the server is
    /// asked to stop (`stop_requested`): then a stopped worker is a hung one.
    pub fn wait_while_stopped(
        mut self,
        events: EventSink,
        version: u64,
        stop_requested: Arc<AtomicBool>,
    ) -> Worker {
        self.stopped_notice = Some((events, version, stop_requested));
        self
    }

    /// Whether the worker is stopped (by a signal, or by a debugger), from
    /// the state letter in `/proc/PID/stat`.
    fn is_stopped(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.process_id())) else {
            return false;
        };
        matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('T' | 't')
        )
    }

    /// At a call's timeout: whether to wait on instead of killing the
    /// worker (it is stopped, and this worker waits for stopped ones).
    fn stopped_so_wait(&self) -> bool {
        let Some((events, version, stop_requested)) = &self.stopped_notice else {
            return false;
        };
        if stop_requested.load(Ordering::Relaxed) {
            if self.is_stopped() {
                events(Event::WorkerStoppedAtExit {
                    version: *version,
                    pid: self.process_id(),
                });
            }
            return false;
        }
        if !self.is_stopped() {
            self.said_stopped.set(false);
            return false;
        }
        if !self.said_stopped.replace(true) {
            events(Event::WorkerStopped {
                version: *version,
                pid: self.process_id(),
            });
        }
        true
    }

    /// Wakes the worker ahead of a call that is about to come (the next
    /// tick): it answers at once and then watches the page for a while
    /// instead of sleeping, so that the call does not wait for a process to
    /// be scheduled. Does not wait for the answer. Only while the worker
    /// last ran on another CPU than this thread: on the same one it would
    /// not watch (see `wire::may_spin`), and the warm-up is one wake-up
    /// more for nothing.
    pub fn warm(&self) {
        if self.gone.get().is_some()
            || self.warming.get().is_some()
            || !may_spin(&self.page.worker_cpu)
        {
            return;
        }
        let number = self.send(Op::Warm, |_| {});
        self.warming.set(Some(number));
    }

    /// A request: `fill` writes its fields; the result is the
    /// worker's reply, or the fault that ended it (plugin code faulted, the
    /// worker died, or it ran past the timeout and was killed).
    fn call(&self, op: Op, fill: impl FnOnce(&CallPage)) -> Result<Reply, Fault> {
        if let Some(status) = self.gone.get() {
            return Err(Fault::worker_died(status));
        }
        // The page is the worker's until it has answered the warm-up.
        if let Some(warm) = self.warming.take() {
            self.answer(warm)?;
        }
        let number = self.send(op, fill);
        self.answer(number)
    }

    /// Writes request `op` and wakes the worker if it sleeps; its number.
    fn send(&self, op: Op, fill: impl FnOnce(&CallPage)) -> u32 {
        let page = &*self.page;
        let number = self.sent.get().wrapping_add(1);
        self.sent.set(number);
        page.op.store(op as u32, Ordering::Relaxed);
        page.host_cpu.store(current_cpu(), Ordering::Relaxed);
        fill(page);
        // Sequentially consistent with the worker's `asleep` flag: either
        // it sees this request before it sleeps, or this sees it asleep.
        page.request.store(number, Ordering::SeqCst);
        if page.worker_asleep.load(Ordering::SeqCst) != 0 {
            futex_wake(&page.request);
        }
        number
    }

    /// Waits for the worker's answer to request `number`.
    fn answer(&self, number: u32) -> Result<Reply, Fault> {
        let page = &*self.page;
        let started = Instant::now();
        let mut deadline = started + self.timeout;
        // Watch first: a short call is back before a sleep would be over;
        // but only while the worker is on another CPU (see `may_spin`).
        while started.elapsed() < SPIN && may_spin(&page.worker_cpu) {
            if page.response.load(Ordering::Acquire) == number {
                return self.reply();
            }
            std::hint::spin_loop();
        }
        let mut noted_at = None;
        loop {
            page.host_asleep.store(1, Ordering::SeqCst);
            let now = page.response.load(Ordering::SeqCst);
            if now != number {
                futex_wait(&page.response, now, LIVENESS_EVERY);
            }
            page.host_asleep.store(0, Ordering::Relaxed);
            if page.response.load(Ordering::Acquire) == number {
                return self.reply();
            }
            if let Some(status) = self.exit_status() {
                return Err(self
                    .noted_fault(number)
                    .unwrap_or(Fault::worker_died(status)));
            }
            // A worker that caught a fault has little left to do; one that
            // takes long to say where was hurt by it (a lock held, a wrecked
            // heap) and will not.
            if let Some(fault) = self.noted_fault(number) {
                let at = *noted_at.get_or_insert_with(Instant::now);
                if at.elapsed() >= PLACE_GRACE {
                    self.kill();
                    return Err(fault);
                }
            }
            if Instant::now() >= deadline && self.stopped_so_wait() {
                // Time it spends stopped is not the call's.
                deadline = Instant::now() + self.timeout;
                continue;
            }
            if Instant::now() >= deadline {
                // A worker found stopped (SIGSTOP, or a debugger) where none
                // is waited for (a trial, a stop request) hangs for that.
                let stopped = self.is_stopped();
                self.kill();
                return Err(self.noted_fault(number).unwrap_or(Fault {
                    signal: if stopped {
                        guard::WORKER_STOPPED
                    } else {
                        guard::timeout_signal()
                    },
                    code: 0,
                    addr: 0,
                    pc: 0,
                    place: None,
                    panic: None,
                }));
            }
        }
    }

    /// The fault the worker noted for request `number` before it died or
    /// stopped answering, if it noted one (see [`CallPage::faulted`]).
    fn noted_fault(&self, number: u32) -> Option<Fault> {
        let page = &*self.page;
        (page.faulted.load(Ordering::Acquire) == number).then(|| Fault {
            signal: page.fault_signal.load(Ordering::Relaxed),
            code: page.fault_code.load(Ordering::Relaxed),
            addr: page.fault_addr.load(Ordering::Relaxed) as usize,
            pc: page.fault_pc.load(Ordering::Relaxed) as usize,
            // Where it was is the worker's to say, and it did not.
            place: Some(String::new()),
            panic: None,
        })
    }

    fn reply(&self) -> Result<Reply, Fault> {
        let page = &*self.page;
        let text = page.text();
        match page.status.load(Ordering::Relaxed) {
            s if s == Status::Ok as u32 => Ok(Reply {
                value: page.value.load(Ordering::Relaxed),
                text,
            }),
            s if s == Status::Fault as u32 => Err(Fault {
                signal: page.fault_signal.load(Ordering::Relaxed),
                code: page.fault_code.load(Ordering::Relaxed),
                addr: page.fault_addr.load(Ordering::Relaxed) as usize,
                pc: page.fault_pc.load(Ordering::Relaxed) as usize,
                // The worker sends a recorded panic in place of the place.
                panic: text.strip_prefix(PANIC_TAG).map(str::to_owned),
                place: Some(if text.starts_with(PANIC_TAG) {
                    String::new()
                } else {
                    text
                }),
            }),
            _ => Err(self.error(&text)),
        }
    }

    /// A request the worker could not carry out: reported as a fault of the
    /// version, with the reason as where it happened.
    fn error(&self, why: &str) -> Fault {
        Fault {
            signal: guard::WORKER_DIED,
            code: 0,
            addr: 0,
            pc: 0,
            place: Some(format!("the worker: {why}")),
            panic: None,
        }
    }

    /// Asks the worker to run the library's destructors and exit; kills it
    /// if it does not within the timeout. What a destructor's fault said,
    /// if one did, and what the worker found left behind.
    pub fn finish(self) -> Finished {
        // A worker already gone has nothing more to run (its end was the
        // fault that retired it, and was said then).
        if self.exit_status().is_some() {
            self.kill();
            return Finished::default();
        }
        // One that dies or hangs in its destructors is their fault.
        let finished = match self.call(Op::Exit, |_| {}) {
            Ok(reply) => {
                let mut lines = reply.text.splitn(2, '\n');
                let note = (reply.value & EXIT_NOTE != 0)
                    .then(|| lines.next().unwrap_or_default().to_owned());
                let destructor_fault = (reply.value & EXIT_FAULT != 0)
                    .then(|| lines.next().unwrap_or_default().to_owned());
                Finished {
                    destructor_fault,
                    note,
                }
            }
            Err(fault) => Finished {
                destructor_fault: Some(fault.report()),
                note: None,
            },
        };
        self.kill();
        finished
    }
}

/// What a worker's [`Op::Exit`] said.
#[derive(Default)]
pub struct Finished {
    pub destructor_fault: Option<String>,
    /// Timers plugin code left armed, deleted before its code went.
    pub note: Option<String>,
}

/// [`Op::Exit`]'s reply value: bits saying which lines its text holds, the
/// note first.
pub const EXIT_FAULT: i64 = 1;
pub const EXIT_NOTE: i64 = 2;

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
