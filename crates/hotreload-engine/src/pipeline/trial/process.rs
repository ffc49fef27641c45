//! The probe process of a trial and what it says, waited for without a
//! thread of its own.
//!
//! Every process a trial wakes costs time on a machine whose processors
//! sleep between ticks, so a trial wakes the host as rarely as it can: the
//! host waits on a pidfd for the probe's exit (and on its output pipe,
//! which plugin code may fill), and reads the probe's stage lines when it
//! wakes, not as each is written. A probe that passed is reaped later, off
//! the trial's path.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

pub use crate::pipeline::child_wait::ExitWatch;
use crate::pipeline::child_wait::{nonblocking, poll, read_available};
use crate::plugin::probe::forker;

/// The most output of a failed trial that is shown.
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// Room for the probe's stage lines between two looks at them: a trial of
/// many ticks writes a line per tick.
const REPORT_PIPE_SIZE: i32 = 1 << 20;

/// A probe process: forked by the trial helper, or the executable started
/// again when there is no helper.
pub enum ProbeProcess {
    Exec(Child),
    Forked(forker::ForkedProbe),
}

impl ProbeProcess {
    pub fn pid(&self) -> i32 {
        match self {
            ProbeProcess::Exec(child) => child.id() as i32,
            ProbeProcess::Forked(probe) => probe.pid,
        }
    }

    /// Its exit status once it has exited, with whatever it started in its
    /// process group killed first (while the group id is still its own).
    pub fn poll(&mut self) -> Result<Option<ExitStatus>, String> {
        match self {
            ProbeProcess::Forked(probe) => Ok(probe.status()?.map(ExitStatus::from_raw)),
            ProbeProcess::Exec(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                // Looked at without reaping: while it is not reaped its
                // process group cannot be another's.
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
                match waitid(Id::Pid(pid), flags) {
                    Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => Ok(None),
                    Ok(_) => {
                        let _ = killpg(pid, Signal::SIGKILL);
                        child
                            .wait()
                            .map(Some)
                            .map_err(|e| format!("cannot wait for the probe: {e}"))
                    }
                    // Only if it was reaped elsewhere: its group may be
                    // another's by now, so nothing is killed.
                    Err(e) => Err(format!("cannot wait for the probe: {e}")),
                }
            }
        }
    }

    /// Kills it and its group (a hang) and reaps it.
    pub fn kill(&mut self) {
        match self {
            ProbeProcess::Exec(child) => {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
            }
            ProbeProcess::Forked(probe) => {
                probe.kill();
                let _ = self.wait();
            }
        }
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> Result<ExitStatus, String> {
        let mut pause = Duration::from_micros(20);
        loop {
            if let Some(status) = self.poll()? {
                return Ok(status);
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }
}

/// The probe's report (a line per stage) and output pipes, read without
/// blocking.
pub struct Pipes {
    report: Option<File>,
    partial: Vec<u8>,
    lines: Vec<String>,
    output: Option<File>,
    kept: Vec<u8>,
}

impl Pipes {
    pub fn new(report: std::io::PipeReader, output: std::io::PipeReader) -> Result<Pipes, String> {
        let (report, output) = (nonblocking(report, "trial")?, nonblocking(output, "trial")?);
        // SAFETY: as above; a smaller pipe only means the probe may wait
        // for the host's next look.
        unsafe { libc::fcntl(report.as_raw_fd(), libc::F_SETPIPE_SZ, REPORT_PIPE_SIZE) };
        Ok(Pipes {
            report: Some(report),
            partial: Vec::new(),
            lines: Vec::new(),
            output: Some(output),
            kept: Vec::new(),
        })
    }

    /// Waits at most `timeout` for the probe to exit or to print, then
    /// reads what both pipes hold; whether the probe is seen to have exited.
    pub fn wait(&mut self, exit: &ExitWatch, timeout: Duration) -> bool {
        let mut fds = Vec::with_capacity(3);
        fds.extend(exit.pollfd());
        if let Some(output) = &self.output {
            fds.push(libc::pollfd {
                fd: output.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // The report is not watched for each line (a wake-up per stage),
        // only for its end: the probe closes it after its last word.
        if let Some(report) = &self.report {
            fds.push(libc::pollfd {
                fd: report.as_raw_fd(),
                events: 0,
                revents: 0,
            });
        }
        let ready = poll(&mut fds, timeout.max(Duration::from_millis(1)));
        let exited = ready > 0 && !exit.blind() && fds[0].revents != 0;
        self.drain();
        exited
    }

    /// Reads whatever both pipes hold now.
    pub fn drain(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        if let Some(report) = self.report.as_mut() {
            let ended = read_available(report, &mut chunk, |bytes| {
                self.partial.extend_from_slice(bytes)
            });
            while let Some(at) = self.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=at).collect();
                self.lines
                    .push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            if ended {
                self.report = None;
            }
        }
        if let Some(output) = self.output.as_mut() {
            let kept = &mut self.kept;
            let ended = read_available(output, &mut chunk, |bytes| {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
            });
            if ended {
                self.output = None;
            }
        }
    }

    /// The stage lines so far.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// What the probe printed so far (its first 16 KiB).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

/// How long trials must pause before the next ready probe is fetched.
const READY_AFTER: Duration = Duration::from_millis(3);

/// Reaps a probe that passed, on a thread of its own, and then fetches the
/// next ready probe from the helper, so that neither is on a trial's path.
pub fn reap_later(child: ProbeProcess) {
    static REAPER: OnceLock<Mutex<mpsc::Sender<ProbeProcess>>> = OnceLock::new();
    let sender = REAPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<ProbeProcess>();
        // Without the thread the receiver is gone, and every probe is reaped
        // on its trial's path, as below.
        let _ = thread::Builder::new()
            .name("hotreload-probe-reaper".into())
            .spawn(move || {
                let mut next = rx.recv().ok();
                while let Some(mut child) = next.take() {
                    let _ = child.wait();
                    // The next probe is fetched once trials pause for a
                    // moment: after what the host does right after one (its
                    // own load and swap, a few tenths of a millisecond), so
                    // that the helper's fork of it does not compete with
                    // that. Not much longer: a trial that finds no probe
                    // held waits for the helper's fork (about 0.2 ms), and
                    // reloads come a few milliseconds apart at the fastest.
                    next = match rx.recv_timeout(READY_AFTER) {
                        Ok(child) => Some(child),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            forker::hold_next();
                            rx.recv().ok()
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => None,
                    };
                }
            });
        Mutex::new(tx)
    });
    let sent = sender.lock().unwrap_or_else(|e| e.into_inner()).send(child);
    if let Err(mpsc::SendError(mut child)) = sent {
        let _ = child.wait();
    }
}
