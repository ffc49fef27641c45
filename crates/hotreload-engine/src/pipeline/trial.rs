//! Stage: trial before commit. A new build's load-time code (constructors,
//! `logic_get_api`), its checks, `init` for a first version, and a few ticks
//! on a copy of the current state run first in a throwaway process; only a
//! build that survives is loaded into the host.
//!
//! The child is the host's own executable in probe mode ([`crate::plugin::probe`]),
//! started with `exec`: after a plain `fork` of a multi-threaded process,
//! `dlopen` or `malloc` can deadlock on a lock another thread held. The child
//! reports its progress on a pipe, a line per stage, so a crash inside a
//! constructor or a hang is still placed ("SIGSEGV during dlopen"). A stage that makes no progress
//! for the call timeout is a hang, and the child is killed. What the child
//! prints is kept from the log unless the trial fails, and then shown
//! indented under the rejection: it never passes for real ticks.
//!
//! In isolated mode the trial is a worker instead ([`isolated`]): the host
//! makes the trial's calls itself, as it will on the live worker.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

pub mod isolated;
pub mod process;

use crate::guard::signal_name;
use crate::outcome::Rejection;
use crate::plugin::child::{above_stdio, spawn_handing_over, this_program};
use crate::plugin::probe::forker;
use crate::plugin::probe::handover::{self, HandedState, Request};
use crate::state::persist::SavedRef;
pub use process::ProbeProcess;
use process::{ExitWatch, OUTPUT_LIMIT, Pipes, reap_later};

/// How long the rest of the probe's output may take once the probe and its
/// process group are gone. Only a process that left the group (`setsid`) can
/// still hold the pipe then; the trial does not wait for it.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

pub struct TrialSettings {
    pub ticks: u64,
    pub dt: f64,
    /// A stage without progress for this long is a hang.
    pub stall: Duration,
    /// `--seed`, for the host context the probe hands plugin code.
    pub seed: u64,
    /// The host's ticks completed, for the same context.
    pub tick: u64,
    /// `--state-type`, for reading the layout from debug info.
    pub state_type: Option<String>,
    /// Only load the library and ask for its tables (`--trial-ticks 0`):
    /// the loader and the constructors still run here first.
    pub load_only: bool,
    /// `--reset-field`, for carrying the state over as the host will.
    pub reset_fields: Vec<String>,
}

/// Why a trial refused a build, and what the child printed.
pub struct TrialFailure {
    pub reason: Rejection,
    pub output: String,
}

/// A probe process and its channels, started but not waited for.
pub struct Spawned {
    pub child: ProbeProcess,
    /// Its stage lines and output.
    pub pipes: Pipes,
}

/// The state a trial starts from, for a probe: what it is, and its bytes
/// in a sealed memfd ([`crate::plugin::sealed`]) that the probe maps.
pub struct TrialState {
    pub what: HandedState,
    pub bytes: File,
}

impl TrialState {
    /// `saved`'s bytes copied into a sealed memfd.
    pub fn from_saved(saved: &SavedRef<'_>) -> Result<TrialState, String> {
        Ok(TrialState {
            what: HandedState {
                state_version: saved.state_version,
                layout: saved.layout.cloned(),
                len: saved.state.len() as u64,
            },
            bytes: crate::plugin::child::sealed_memfd(c"hotreload-trial-state", saved.state)?,
        })
    }
}

/// Where a trial's starting state comes from.
pub enum StateSource {
    /// The kept trial image, written from the fault snapshot.
    Image(TrialState),
    /// A copy made for this trial (there was no snapshot to write from).
    Copy(crate::state::persist::Saved),
}

/// The descriptors a probe gets, above the standard streams' numbers.
struct ProbeFds {
    request: OwnedFd,
    library: OwnedFd,
    report: OwnedFd,
    output: OwnedFd,
    state: Option<OwnedFd>,
}

impl ProbeFds {
    /// In the order the helper hands them on (see `forker`).
    fn raw(&self) -> Vec<RawFd> {
        let mut fds = vec![
            self.request.as_raw_fd(),
            self.library.as_raw_fd(),
            self.report.as_raw_fd(),
            self.output.as_raw_fd(),
        ];
        fds.extend(self.state.as_ref().map(|s| s.as_raw_fd()));
        fds
    }
}

/// Starts the probe on the library at `library` (a private copy, handed
/// over as a descriptor: the probe maps that very file), with the current
/// state `state`, or `None` for a first version. See
/// [`crate::plugin::probe::handover`] for why nothing else can start one.
pub fn spawn(
    library: &Path,
    settings: &TrialSettings,
    state: Option<TrialState>,
) -> Result<Spawned, String> {
    let (what, bytes) = match state {
        Some(s) => (Some(s.what), Some(s.bytes)),
        None => (None, None),
    };
    let request = handover::sealed_request(&Request {
        ticks: settings.ticks,
        dt: settings.dt,
        seed: settings.seed,
        tick: settings.tick,
        load_only: settings.load_only,
        state_type: settings.state_type.clone(),
        reset_fields: settings.reset_fields.clone(),
        state: what,
    })?;
    let lib = File::open(library)
        .map_err(|e| format!("trial: cannot open {}: {e}", library.display()))?;
    let (report_read, report_write) =
        std::io::pipe().map_err(|e| format!("trial: cannot create a pipe: {e}"))?;
    let (out_read, out_write) =
        std::io::pipe().map_err(|e| format!("trial: cannot create a pipe: {e}"))?;
    let fds = ProbeFds {
        request: above_stdio(request.into())?,
        library: above_stdio(lib.into())?,
        report: above_stdio(report_write.into())?,
        output: above_stdio(out_write.into())?,
        state: bytes.map(|b| above_stdio(b.into())).transpose()?,
    };
    let child = if forker::available() {
        // The probe holds its own copies once forked; the host's are closed
        // with `fds`, so that the pipes end when the probe does.
        ProbeProcess::Forked(forker::spawn(&fds.raw())?)
    } else {
        ProbeProcess::Exec(exec_probe(fds)?)
    };
    Ok(Spawned {
        child,
        pipes: Pipes::new(report_read, out_read)?,
    })
}

/// Starts the executable again as a probe, its channels on the
/// descriptors it looks for them at.
fn exec_probe(fds: ProbeFds) -> Result<Child, String> {
    let mut command = this_program();
    command
        .arg(handover::SUBCOMMAND)
        .stdout(
            fds.output
                .try_clone()
                .map_err(|e| format!("trial: cannot duplicate a pipe: {e}"))?,
        )
        .stderr(
            fds.output
                .try_clone()
                .map_err(|e| format!("trial: cannot duplicate a pipe: {e}"))?,
        )
        .process_group(0);
    let mut places = vec![
        (fds.request.as_raw_fd(), handover::REQUEST_FD),
        (fds.library.as_raw_fd(), handover::LIBRARY_FD),
        (fds.report.as_raw_fd(), handover::REPORT_FD),
    ];
    places.extend(
        fds.state
            .as_ref()
            .map(|s| (s.as_raw_fd(), handover::STATE_FD)),
    );
    let child = spawn_handing_over(&mut command, &places)
        .map_err(|e| format!("trial: cannot start the probe: {e}"))?;
    // The probe holds its own copies now; the host's ends are closed so that
    // the pipes end when the probe does.
    drop(command);
    drop(fds);
    Ok(child)
}

/// What a child printed so far, shared with the thread that reads it.
type SharedOutput = Arc<Mutex<Vec<u8>>>;

/// Reads a child's output on a thread of its own, keeping the first 16 KiB;
/// what it has read so far stays available if the pipe is not closed in
/// time (see [`OUTPUT_GRACE`]), and the receiver hears when it closes.
fn collect_output(
    mut read: std::io::PipeReader,
) -> Result<(SharedOutput, mpsc::Receiver<()>), String> {
    let output = Arc::new(Mutex::new(Vec::new()));
    let (closed_tx, closed) = mpsc::channel::<()>();
    let kept = Arc::clone(&output);
    thread::Builder::new()
        .name("hotreload-trial-output".into())
        .spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = read.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
            let _ = closed_tx.send(());
        })
        .map_err(|e| format!("trial: cannot start a reader: {e}"))?;
    Ok((output, closed))
}

/// What a child printed, once it is gone (or after the grace period).
fn printed(output: &Mutex<Vec<u8>>, closed: &mpsc::Receiver<()>) -> String {
    let _ = closed.recv_timeout(OUTPUT_GRACE);
    String::from_utf8_lossy(&output.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Runs the trial of the library at `library` (a shadow copy) on `state`
/// (the current state as a state file's bytes, with its version and layout,
/// which the probe carries over to the new build's layout as the host
/// would), or on a zeroed state after `init` for a first version.
pub fn run(
    library: &Path,
    settings: &TrialSettings,
    state: Option<TrialState>,
) -> Result<(), TrialFailure> {
    let failure = |reason: String| TrialFailure {
        reason: Rejection::Faulted(reason),
        output: String::new(),
    };
    let state_len = state.as_ref().map_or(0, |s| s.what.len as usize);
    let Spawned {
        mut child,
        mut pipes,
    } = spawn(library, settings, state).map_err(failure)?;
    let exit = ExitWatch::open(child.pid());
    // The stage lines are read whenever the host wakes: at the latest every
    // `look`, which bounds how late a hang is noticed.
    let look = (settings.stall / 10).clamp(Duration::from_millis(2), Duration::from_millis(50));
    let mut progress_at = Instant::now();
    let mut seen = 0;
    let mut ended = false;
    let status = loop {
        let exited = pipes.wait(
            &exit,
            if exit.blind() {
                Duration::from_millis(1)
            } else {
                look
            },
        );
        ended |= exited;
        if pipes.lines().len() != seen {
            seen = pipes.lines().len();
            progress_at = Instant::now();
        }
        // The last line says how the trial went, unless the probe died
        // without one: then its wait status does. A pass is final once
        // said (the probe closes its report then, which wakes this wait);
        // a failure waits for the exit, so that all the probe printed is
        // there to show.
        let last = pipes.lines().last();
        if finished(last) && (ended || last.is_some_and(|l| l == "ok")) {
            break None;
        }
        if ended || exit.blind() {
            match child.poll() {
                Ok(None) => {}
                Ok(Some(status)) => break Some(status),
                Err(e) => return Err(failure(format!("trial: {e}"))),
            }
        }
        if progress_at.elapsed() > stall_for(pipes.lines().last(), settings.stall, state_len) {
            child.kill();
            pipes.drain();
            let stage = stage_of(pipes.lines());
            return Err(TrialFailure {
                reason: Rejection::Faulted(format!(
                    "trial: hung in {} for {} ms",
                    place(&stage),
                    settings.stall.as_millis()
                )),
                output: pipes.output(),
            });
        }
    };
    // Everything the probe wrote before it exited is in the pipes now; a
    // process that left its group and still holds them is not waited for.
    pipes.drain();
    let output = pipes.output();
    let lines = pipes.lines();
    if status.is_none() {
        reap_later(child);
    }
    let stage = stage_of(lines);
    let last = lines.last().map(String::as_str).unwrap_or("");
    let reason = match status {
        _ if last == "ok" => return Ok(()),
        // The probe's own checks refused the table; the host's checks, which
        // run next, say why with the right exit code.
        _ if last.starts_with("reject ") => return Ok(()),
        _ if last.starts_with("fault ") => with_panic(&last["fault ".len()..], &output),
        None => format!("trial: the probe ended without a word in {}", place(&stage)),
        Some(status) => match status.signal() {
            Some(sig) => with_panic(
                &format!("trial: {} in {}", signal_name(sig), place(&stage)),
                &output,
            ),
            None => format!("trial: probe exited with {status} in {}", place(&stage)),
        },
    };
    Err(TrialFailure {
        reason: Rejection::Faulted(reason),
        output,
    })
}

/// Whether `last` is a line a probe ends its report with.
fn finished(last: Option<&String>) -> bool {
    last.is_some_and(|l| l == "ok" || l.starts_with("reject ") || l.starts_with("fault "))
}

/// The stage the probe said it entered last.
fn stage_of(lines: &[String]) -> String {
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("stage "))
        .unwrap_or("start-up")
        .to_owned()
}

/// How long the probe may go without a new stage: the call timeout, and
/// for the stages that carry the state over (reading it, the migration) as
/// much more as copying `state_len` bytes a few times may take on a slow
/// or busy machine (32 MiB/s), so that a large state is not taken for a
/// hang.
fn stall_for(stage: Option<&String>, stall: Duration, state_len: usize) -> Duration {
    match stage.map(String::as_str) {
        Some("stage state" | "stage migrate") => {
            stall + Duration::from_secs_f64(state_len as f64 / f64::from(32u32 << 20))
        }
        _ => stall,
    }
}

/// A trial that ended in an abort printed by a Rust panic says the panic's
/// message and place instead: `trial tick 2: panicked at src/lib.rs:9:5:
/// "boom" (SIGABRT)`.
fn with_panic(reason: &str, output: &str) -> String {
    if !reason.contains("SIGABRT") {
        return reason.to_owned();
    }
    match (crate::console::find_panic(output), reason.split_once(": ")) {
        (Some(panic), Some((when, _))) => format!(
            "{when}: panicked at {}: {:?} (SIGABRT)",
            panic.location, panic.message
        ),
        _ => reason.to_owned(),
    }
}

/// "dlopen (a library constructor)", "tick 2", ...
fn place(stage: &str) -> String {
    match stage {
        "dlopen" => "dlopen (a library constructor)".into(),
        "dlclose" => "dlclose (a library destructor)".into(),
        "state" => "reading the state handed over".into(),
        other => other.into(),
    }
}
