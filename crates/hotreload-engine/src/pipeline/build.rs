//! Stage two: run the user's build command in the background.
//!
//! The command runs with `sh -c` in its own process group, so that stopping
//! it reaches every compiler and linker it started, and so that a Ctrl-C in
//! the terminal (sent to the host's foreground group) is the host's to handle.
//! Its stdout and stderr share one pipe, which keeps their lines in the order
//! the tools wrote them. The tick loop never waits for any of this.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

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
        let (mut reader, writer) = std::io::pipe()
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
        let cut = Arc::new(AtomicU64::new(0));
        let timed_out = Arc::new(AtomicBool::new(false));
        let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>();
        let cut_by_reader = Arc::clone(&cut);
        thread::Builder::new()
            .name("hotreload-build-output".into())
            .spawn(move || {
                let mut kept = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    match reader.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                            kept.extend_from_slice(&chunk[..n.min(room)]);
                            cut_by_reader.fetch_add((n - n.min(room)) as u64, Ordering::Relaxed);
                            // Partial output is sent as it comes, so that a
                            // pipe held open by a daemon loses nothing.
                            let _ = out_tx.send(chunk[..n.min(room)].to_vec());
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the build output reader: {e}"))?;
        if let Some(limit) = timeout {
            let exited = Arc::clone(&exited);
            let timed_out = Arc::clone(&timed_out);
            thread::Builder::new()
                .name("hotreload-build-timeout".into())
                .spawn(move || {
                    let deadline = started_at + limit;
                    while !exited.load(Ordering::Acquire) {
                        let now = Instant::now();
                        if now >= deadline {
                            timed_out.store(true, Ordering::Release);
                            // Not reaped yet (the waiter marks `exited` only
                            // after `wait`), so the group is still this
                            // build's.
                            let _ = killpg(pgid, Signal::SIGKILL);
                            return;
                        }
                        thread::park_timeout((deadline - now).min(Duration::from_millis(200)));
                    }
                })
                .map_err(|e| format!("cannot start the build timer: {e}"))?;
        }
        let mut child = child;
        let exited_for_waiter = Arc::clone(&exited);
        thread::Builder::new()
            .name("hotreload-build".into())
            .spawn(move || {
                // Whether it exited, without reaping it: while it is not
                // reaped, its process group id cannot be reused, so a kill
                // (by the timer, or a newer change) reaches only its own.
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
                let _ = waitid(Id::Pid(pgid), flags);
                exited_for_waiter.store(true, Ordering::Release);
                let status = child
                    .wait()
                    .map_err(|e| format!("cannot wait for the build: {e}"));
                let exited_at = Instant::now();
                let mut output = Vec::new();
                let grace_end = Instant::now() + OUTPUT_GRACE;
                while let Ok(chunk) =
                    out_rx.recv_timeout(grace_end.saturating_duration_since(Instant::now()))
                {
                    output.extend_from_slice(&chunk);
                }
                let output_cut = cut.load(Ordering::Relaxed);
                let mut output = String::from_utf8_lossy(&output).into_owned();
                if output_cut > 0 {
                    output.push_str(&format!(
                        "\n… the build printed {output_cut} more bytes, not kept (output is cut at {} MiB)\n",
                        OUTPUT_LIMIT >> 20
                    ));
                }
                on_exit(BuildResult {
                    started_at,
                    exited_at,
                    status,
                    output,
                    timed_out: timed_out.load(Ordering::Acquire).then_some(
                        timeout.unwrap_or_default(),
                    ),
                    output_cut,
                });
            })
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
