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
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

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
}

impl RunningBuild {
    /// Starts `command` in `dir`; `on_exit` runs on a background thread once
    /// the command has exited and its output has been collected.
    pub fn spawn(
        command: &str,
        dir: &Path,
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
            Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(writer)
                .stderr(stderr)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot run `sh -c {command}` in {}: {e}", dir.display()))?
        };
        let pgid = Pid::from_raw(child.id() as i32);
        let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>();
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
                            // Partial output is sent as it comes, so that a
                            // pipe held open by a daemon loses nothing.
                            let _ = out_tx.send(chunk[..n.min(room)].to_vec());
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the build output reader: {e}"))?;
        let mut child = child;
        thread::Builder::new()
            .name("hotreload-build".into())
            .spawn(move || {
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
                on_exit(BuildResult {
                    started_at,
                    exited_at,
                    status,
                    output: String::from_utf8_lossy(&output).into_owned(),
                });
            })
            .map_err(|e| format!("cannot start the build waiter: {e}"))?;
        Ok(RunningBuild { pgid })
    }

    /// Kills the whole process group. The waiter thread still reports the
    /// exit; callers that no longer care ignore that report.
    pub fn kill(&self) {
        // ESRCH (already gone) is the only expected error and is harmless.
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cmd: &str) -> BuildResult {
        let (tx, rx) = mpsc::channel();
        RunningBuild::spawn(cmd, Path::new("."), move |r| {
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
        let b = RunningBuild::spawn("sleep 30 & sleep 30; wait", Path::new("."), move |r| {
            let _ = tx.send(r);
        })
        .expect("spawn");
        b.kill();
        let r = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("killed build reported");
        assert_eq!(r.status_text(), "killed by signal 9");
    }
}
