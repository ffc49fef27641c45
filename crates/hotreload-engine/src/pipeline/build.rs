//! Stage two: run the user's build command in the background.
//!
//! The command runs with `sh -c` in its own process group, so that stopping
//! it reaches every compiler and linker it started, and so that a Ctrl-C in
//! the terminal (sent to the host's foreground group) is the host's to handle.
//! Its stdout and stderr share one pipe, which keeps their lines in the order
//! the tools wrote them. The tick loop never waits for any of this.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(test)]
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::pipeline::child_wait::{self, ExitWatch};

/// The shell builds run in (POSIX requires it there).
const SHELL: &str = "/bin/sh";

/// The most build output kept for the report; the rest is read and dropped.
const OUTPUT_LIMIT: usize = 1 << 20;

/// How long to wait for the output pipe to close after the build exits. A
/// daemon the build started (a compiler server) can hold the pipe open.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

pub struct BuildResult {
    pub started_at: Instant,
    pub exited_at: Instant,
    /// `Err` when the command could not be waited for at all.
    pub status: Result<ExitStatus, String>,
    pub output: String,
    /// The build ran past its timeout and its process group was killed.
    pub timed_out: Option<Duration>,
    /// Output bytes past [`OUTPUT_LIMIT`], read and dropped.
    pub output_cut: u64,
}

impl BuildResult {
    pub fn succeeded(&self) -> bool {
        matches!(&self.status, Ok(s) if s.success())
    }

    pub fn duration(&self) -> Duration {
        self.exited_at - self.started_at
    }

    /// "exit status 1", "killed by signal 9", ...
    pub fn status_text(&self) -> String {
        if let Some(limit) = self.timed_out {
            return format!(
                "killed after running {} s, the build timeout (--build-timeout)",
                limit.as_secs()
            );
        }
        match &self.status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                (None, None) => s.to_string(),
            },
            Err(e) => e.clone(),
        }
    }

    /// The line that best says what went wrong: the first that mentions an
    /// error, else the first non-blank one, else the exit status.
    pub fn first_error_line(&self) -> String {
        first_error_line(&self.output)
            .map(str::to_owned)
            .unwrap_or_else(|| self.status_text())
    }
}

pub fn first_error_line(output: &str) -> Option<&str> {
    let lines = || {
        output
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
    };
    lines()
        .find(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("error") || lower.contains("fatal")
        })
        .or_else(|| lines().next())
}

/// A build in progress. Dropping it does not stop it; [`RunningBuild::kill`]
/// does.
pub struct RunningBuild {
    pgid: Pid,
    /// Set once the build has exited: its process group id may then be
    /// another's, and must not be killed.
    exited: Arc<AtomicBool>,
}

impl RunningBuild {
    /// Starts `command` in `dir`; `on_exit` runs on a background thread once
    /// the command has exited and its output has been collected.
    pub fn spawn(
        command: &str,
        dir: &Path,
        timeout: Option<Duration>,
        on_exit: impl FnOnce(BuildResult) + Send + 'static,
    ) -> Result<RunningBuild, String> {
        let started_at = Instant::now();
        let (reader, writer) = std::io::pipe()
            .map_err(|e| format!("cannot create a pipe for the build's output: {e}"))?;
        let child = {
            let stderr = writer
                .try_clone()
                .map_err(|e| format!("cannot duplicate the build's output pipe: {e}"))?;
            // The `Command` (holding the pipe's write ends) is dropped at the
            // end of this block, so the reader sees end-of-file when the build
            // and its children are done.
            // By its path: a program found through a PATH the command also
            // sets makes the standard library fork the whole server instead
            // of spawning (`vfork`), and a fork copies the page tables of a
            // large state and makes every page the tick thread writes after
            // it a copy-on-write fault (200 ms ticks late at 64 MiB).
            Command::new(SHELL)
                .arg("-c")
                .arg(command)
                .current_dir(dir)
                // The server's environment as it started: not what plugin
                // code may have set since (see guard::baseline).
                .env_clear()
                .envs(crate::guard::baseline::environment())
                .stdin(Stdio::null())
                .stdout(writer)
                .stderr(stderr)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot run `sh -c {command}` in {}: {e}", dir.display()))?
        };
        let pgid = Pid::from_raw(child.id() as i32);
        let exited = Arc::new(AtomicBool::new(false));
        let output = child_wait::nonblocking(reader, "build")?;
        let waiter = BuildWaiter {
            child,
            exit: ExitWatch::open(pgid.as_raw()),
            output: Some(output),
            pgid,
            exited: Arc::clone(&exited),
            started_at,
            timeout,
        };
        thread::Builder::new()
            .name("hotreload-build".into())
            .spawn(move || on_exit(waiter.run()))
            .map_err(|e| format!("cannot start the build waiter: {e}"))?;
        Ok(RunningBuild { pgid, exited })
    }

    /// Stops the build to start a newer one: SIGTERM to its whole process
    /// group first, so that `make` and friends delete the half-written
    /// target they were on (a truncated object file with a new mtime would
    /// pass for up to date later), then SIGKILL after `grace` for whatever is
    /// left. The waiter thread reports the exit as usual.
    pub fn cancel(&self, grace: Duration) {
        if self.exited.load(Ordering::Acquire) {
            return;
        }
        let _ = killpg(self.pgid, Signal::SIGTERM);
        let (pgid, exited) = (self.pgid, Arc::clone(&self.exited));
        let _ = thread::Builder::new()
            .name("hotreload-build-cancel".into())
            .spawn(move || {
                let deadline = Instant::now() + grace;
                while !exited.load(Ordering::Acquire) {
                    let now = Instant::now();
                    if now >= deadline {
                        let _ = killpg(pgid, Signal::SIGKILL);
                        return;
                    }
                    thread::park_timeout((deadline - now).min(Duration::from_millis(20)));
                }
            });
    }

    /// Kills the whole process group. The waiter thread still reports the
    /// exit; callers that no longer care ignore that report.
    pub fn kill(&self) {
        // Once the build has exited its group id is free for reuse: killing
        // it then could hit someone else's processes.
        if self.exited.load(Ordering::Acquire) {
            return;
        }
        // ESRCH (already gone) is the only expected error and is harmless.
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }
}

/// A running build as its one waiter thread sees it: the command's exit
/// (through a pidfd) and its output pipe, in one `poll`, so that the end of
/// a build, which closes the pipe as it exits, is heard in one wake-up.
struct BuildWaiter {
    child: Child,
    exit: ExitWatch,
    /// `None` once it reached end-of-file.
    output: Option<File>,
    pgid: Pid,
    exited: Arc<AtomicBool>,
    started_at: Instant,
    timeout: Option<Duration>,
}

impl BuildWaiter {
    fn run(mut self) -> BuildResult {
        let mut kept = Vec::new();
        let mut cut = 0u64;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut timed_out = false;
        // When the build was seen to exit, and its status.
        let mut ended: Option<(Instant, Result<ExitStatus, String>)> = None;
        loop {
            if let Some(output) = self.output.as_mut() {
                let eof = child_wait::read_available(output, &mut chunk, |bytes| {
                    let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    cut += (bytes.len() - bytes.len().min(room)) as u64;
                });
                if eof {
                    self.output = None;
                }
            }
            let now = Instant::now();
            if ended.is_none() && self.has_exited() {
                // Marked before it is reaped: until then its process group
                // id cannot be reused, so a kill (by the timer, or a newer
                // change) reaches only its own.
                self.exited.store(true, Ordering::Release);
                let status = self
                    .child
                    .wait()
                    .map_err(|e| format!("cannot wait for the build: {e}"));
                ended = Some((Instant::now(), status));
            }
            let wait = match &ended {
                // A daemon the build started (a compiler server) can hold
                // the pipe open: its output is waited for a grace period.
                Some((at, _)) => match self.output {
                    None => break,
                    Some(_) => match (*at + OUTPUT_GRACE).checked_duration_since(now) {
                        Some(left) if !left.is_zero() => left,
                        _ => break,
                    },
                },
                None => {
                    let mut wait = Duration::from_secs(3600);
                    if let Some(limit) = self.timeout {
                        let deadline = self.started_at + limit;
                        if now >= deadline && !timed_out {
                            timed_out = true;
                            // Not reaped yet, so the group is still this
                            // build's.
                            let _ = killpg(self.pgid, Signal::SIGKILL);
                        }
                        wait = wait.min(deadline.saturating_duration_since(now));
                    }
                    if self.exit.blind() {
                        // Without a pidfd the exit is asked for.
                        wait = wait.min(Duration::from_millis(2));
                    }
                    wait
                }
            };
            let mut fds = Vec::with_capacity(2);
            if ended.is_none() {
                fds.extend(self.exit.pollfd());
            }
            if let Some(output) = &self.output {
                fds.push(libc::pollfd {
                    fd: output.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            child_wait::poll(&mut fds, wait);
        }
        let (exited_at, status) =
            ended.unwrap_or_else(|| (Instant::now(), Err("the build was not waited for".into())));
        let mut output = String::from_utf8_lossy(&kept).into_owned();
        if cut > 0 {
            output.push_str(&format!(
                "\n… the build printed {cut} more bytes, not kept (output is cut at {} MiB)\n",
                OUTPUT_LIMIT >> 20
            ));
        }
        BuildResult {
            started_at: self.started_at,
            exited_at,
            status,
            output,
            timed_out: timed_out.then_some(self.timeout.unwrap_or_default()),
            output_cut: cut,
        }
    }

    /// Whether the build has exited, without reaping it.
    fn has_exited(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
        !matches!(
            waitid(Id::Pid(self.pgid), flags),
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cmd: &str) -> BuildResult {
        let (tx, rx) = mpsc::channel();
        RunningBuild::spawn(cmd, Path::new("."), None, move |r| {
            let _ = tx.send(r);
        })
        .expect("spawn");
        rx.recv_timeout(Duration::from_secs(20))
            .expect("build finished")
    }

    #[test]
    fn success_and_output_in_order() {
        let r = run("echo one; echo two >&2; echo three");
        assert!(r.succeeded());
        assert_eq!(r.output, "one\ntwo\nthree\n");
    }

    #[test]
    fn failure_reports_the_first_error_line() {
        let r = run(
            "echo 'logic.c: In function tick:'; echo 'logic.c:3:1: error: expected ;' >&2; exit 3",
        );
        assert!(!r.succeeded());
        assert_eq!(r.status_text(), "exit status 3");
        assert_eq!(r.first_error_line(), "logic.c:3:1: error: expected ;");
    }

    #[test]
    fn silent_failure_names_the_status() {
        let r = run("exit 7");
        assert_eq!(r.first_error_line(), "exit status 7");
    }

    #[test]
    fn kill_reaches_the_whole_group() {
        let (tx, rx) = mpsc::channel();
        let b = RunningBuild::spawn(
            "sleep 30 & sleep 30; wait",
            Path::new("."),
            None,
            move |r| {
                let _ = tx.send(r);
            },
        )
        .expect("spawn");
        b.kill();
        let r = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("killed build reported");
        assert_eq!(r.status_text(), "killed by signal 9");
    }

    #[test]
    fn a_build_past_its_timeout_is_killed_with_its_children_and_says_so() {
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        RunningBuild::spawn(
            "sleep 30 & sleep 30; wait",
            Path::new("."),
            Some(Duration::from_millis(300)),
            move |r| {
                let _ = tx.send(r);
            },
        )
        .expect("spawn");
        let r = rx.recv_timeout(Duration::from_secs(10)).expect("reported");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(r.timed_out.is_some());
        assert!(
            r.status_text()
                .contains("the build timeout (--build-timeout)"),
            "{}",
            r.status_text()
        );
    }

    #[test]
    fn a_daemon_holding_the_output_open_delays_the_result_by_the_grace_only() {
        let started = Instant::now();
        // The background sleep keeps the pipe's write end open after the
        // shell exits; what came before it is kept.
        let r = run("echo before; sleep 3 & echo after");
        let took = started.elapsed();
        assert!(r.succeeded());
        assert_eq!(r.output, "before\nafter\n");
        assert!(took >= OUTPUT_GRACE, "{took:?}");
        assert!(took < OUTPUT_GRACE + Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn a_build_that_ends_with_its_output_is_reported_without_waiting_the_grace() {
        let started = Instant::now();
        let r = run("echo done");
        assert!(r.succeeded());
        assert!(started.elapsed() < OUTPUT_GRACE, "{:?}", started.elapsed());
    }

    #[test]
    fn output_past_the_cap_is_counted_and_said() {
        let r = run("head -c 1100000 /dev/zero | tr '\\0' x; echo");
        assert!(r.output_cut > 0);
        assert!(
            r.output
                .contains("more bytes, not kept (output is cut at 1 MiB)"),
            "{}",
            &r.output[r.output.len() - 120..]
        );
    }
}
