//! Stage: trial before commit. A new build's load-time code (constructors,
//! `logic_get_api`), its checks, `init` for a first version, and a few ticks
//! on a copy of the current state run first in a throwaway process; only a
//! build that survives is loaded into the host.
//!
//! The child is the host's own executable in probe mode ([`crate::plugin::probe`]),
//! started with `exec`: after a plain `fork` of a multi-threaded process,
//! `dlopen` or `malloc` can deadlock on a lock another thread held. The child
//! reports its progress to a file, so a crash inside a constructor or a hang
//! is still placed ("SIGSEGV during dlopen"). A stage that makes no progress
//! for the call timeout is a hang, and the child is killed. What the child
//! prints is kept from the log unless the trial fails, and then shown
//! indented under the rejection: it never passes for real ticks.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::guard::signal_name;
use crate::outcome::Rejection;
use crate::plugin::probe::PROBE_ENV;

/// The most output of a failed trial that is shown.
const OUTPUT_LIMIT: usize = 16 * 1024;

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
    /// `--reset-field`, for carrying the state over as the host will.
    pub reset_fields: Vec<String>,
}

/// Why a trial refused a build, and what the child printed.
pub struct TrialFailure {
    pub reason: Rejection,
    pub output: String,
}

/// Runs the trial of the library at `library` (a shadow copy); `report` is a
/// fresh path in the private folder; `state` a state file holding the
/// current state with its version and layout (the probe carries it over to
/// the new build's layout as the host would), or `None` for a first version
/// (the probe then runs `init` on a zeroed state).
pub fn run(
    library: &Path,
    report: &Path,
    settings: &TrialSettings,
    state: Option<&Path>,
) -> Result<(), TrialFailure> {
    let failure = |reason: String| TrialFailure {
        reason: Rejection::Faulted(reason),
        output: String::new(),
    };
    let exe = std::env::current_exe()
        .map_err(|e| failure(format!("trial: cannot find the probe executable: {e}")))?;
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| failure(format!("trial: cannot create a pipe: {e}")))?;
    let mut child = {
        let stderr = writer
            .try_clone()
            .map_err(|e| failure(format!("trial: cannot duplicate a pipe: {e}")))?;
        Command::new(exe)
            .env(PROBE_ENV, "1")
            .arg(library)
            .arg(report)
            .arg(settings.ticks.to_string())
            .arg(settings.dt.to_string())
            .arg(state.map_or(std::ffi::OsStr::new("none"), |p| p.as_os_str()))
            .arg(settings.seed.to_string())
            .arg(settings.tick.to_string())
            .arg(settings.state_type.as_deref().unwrap_or("-"))
            .args(&settings.reset_fields)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| failure(format!("trial: cannot start the probe: {e}")))?
    };
    // Read the output on a thread of its own; what it has read so far stays
    // available if the pipe is not closed in time (see `OUTPUT_GRACE`).
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (read_all, all_read) = mpsc::channel::<()>();
    {
        let kept = Arc::clone(&kept);
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
            let _ = read_all.send(());
        });
    }
    let pid = Pid::from_raw(child.id() as i32);

    // Wait, restarting the clock whenever the probe reports a new stage.
    let mut last_report = String::new();
    let mut progress_at = Instant::now();
    let mut pause = Duration::from_micros(50);
    let mut output_done = false;
    let status = loop {
        // Whether the probe has exited, without reaping it yet: while it is
        // not reaped its process group cannot be reused, so the group can be
        // killed safely below.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => {
                // Anything the probe started (a helper a constructor forked)
                // belongs to the trial: it goes too, and with it its end of
                // the output pipe.
                let _ = killpg(pid, Signal::SIGKILL);
                match child.wait() {
                    Ok(status) => break Some(status),
                    Err(e) => {
                        return Err(failure(format!("trial: cannot wait for the probe: {e}")));
                    }
                }
            }
            // Only if the probe was reaped elsewhere: its group may be
            // another's by now, so nothing is killed.
            Err(e) => return Err(failure(format!("trial: cannot wait for the probe: {e}"))),
        }
        let now_report = std::fs::read_to_string(report).unwrap_or_default();
        if now_report != last_report {
            last_report = now_report;
            progress_at = Instant::now();
        } else if progress_at.elapsed() > settings.stall {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        // The output pipe closes the moment the probe exits: waiting on that
        // instead of sleeping notices a finished trial at once.
        if output_done {
            thread::sleep(pause);
        } else if !matches!(
            all_read.recv_timeout(pause),
            Err(mpsc::RecvTimeoutError::Timeout)
        ) {
            output_done = true;
            pause = Duration::from_micros(10);
            continue;
        }
        pause = (pause * 2).min(Duration::from_millis(2));
    };
    let report_text = std::fs::read_to_string(report).unwrap_or_default();
    let _ = std::fs::remove_file(report);
    // A process that left the probe's group may still hold the pipe: take
    // what was read so far rather than wait for it.
    if !output_done {
        let _ = all_read.recv_timeout(OUTPUT_GRACE);
    }
    let output =
        String::from_utf8_lossy(&kept.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let stage = report_text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("stage "))
        .unwrap_or("start-up")
        .to_owned();
    let last = report_text.lines().last().unwrap_or("");
    let reason = match status {
        None => format!(
            "trial: hung in {} for {} ms",
            place(&stage),
            settings.stall.as_millis()
        ),
        Some(_) if last == "ok" => return Ok(()),
        // The probe's own checks refused the table; the host's checks, which
        // run next, say why with the right exit code.
        Some(_) if last.starts_with("reject ") => return Ok(()),
        Some(_) if last.starts_with("fault ") => last["fault ".len()..].to_owned(),
        Some(status) => match status.signal() {
            Some(sig) => format!("trial: {} in {}", signal_name(sig), place(&stage)),
            None => format!("trial: probe exited with {status} in {}", place(&stage)),
        },
    };
    Err(TrialFailure {
        reason: Rejection::Faulted(reason),
        output,
    })
}

/// "dlopen (a library constructor)", "tick 2", ...
fn place(stage: &str) -> String {
    match stage {
        "dlopen" => "dlopen (a library constructor)".into(),
        "dlclose" => "dlclose (a library destructor)".into(),
        other => other.into(),
    }
}
