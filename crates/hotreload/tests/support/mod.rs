//! Test support: run the real `hotreload` binary on real plugins built by a
//! real C compiler, edit sources the way editors do, and wait on the lines it
//! prints (never on fixed sleeps).

#![allow(dead_code)]

pub mod corrupt;
pub mod ctl;
pub mod editor;
pub mod hostile;
pub mod large_state;
pub mod plugin;
pub mod rust;
pub mod state_plugin;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Generous: CI machines have 2 cores and run tests in parallel, each with a
/// compiler. A healthy run waits milliseconds.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hotreload"))
}

/// How the server under test notices changes.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Inotify,
    Poll,
}

impl Mode {
    /// The flags that select this mode (polling fast, to keep tests quick).
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Mode::Inotify => &[],
            Mode::Poll => &["--poll", "--poll-ms", "20"],
        }
    }
}

/// The build command tests use for `logic.c` → `logic.so` in the work folder.
pub const CC_BUILD: &str = "cc -shared -fPIC -o logic.so logic.c";

/// How [`Server::wait_line`] ended.
pub enum Waited {
    Line(String),
    /// Both output streams closed: the server has exited (or is exiting).
    Ended,
    TimedOut,
}

#[derive(Default)]
struct Output {
    lines: Vec<String>,
    /// Both streams (stdout and stderr) have ended.
    closed: bool,
    /// Streams that have ended so far.
    ended: u8,
}

/// A running `hotreload` whose stdout is collected line by line.
pub struct Server {
    child: Child,
    out: Arc<(Mutex<Output>, Condvar)>,
    /// Index of the first line not yet consumed by `expect`.
    cursor: usize,
    pub dir: PathBuf,
}

impl Server {
    /// Starts `hotreload` in `dir` with `args`.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        Server::start_with_env(dir, args, &[])
    }

    /// Starts `hotreload` in `dir` with `args` and extra environment.
    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Server {
        let mut command = Command::new(binary());
        command.args(args).envs(env.iter().map(|(k, v)| (*k, *v)));
        Server::start_command(dir, command)
    }

    /// Starts `command` in `dir` and collects its output: for running the
    /// binary through a wrapper (`unshare`, `sh -c`), which must `exec` it so
    /// that signals and the kill on drop reach the server itself.
    pub fn start_command(dir: &Path, mut command: Command) -> Server {
        let mut child = command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hotreload");
        let out = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let out = Arc::clone(&out);
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("HOTRELOAD_TEST_ECHO").is_some() {
                        eprintln!("| {line}");
                    }
                    let (lock, cv) = &*out;
                    lock.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .lines
                        .push(line);
                    cv.notify_all();
                }
                let (lock, cv) = &*out;
                let mut out = lock.lock().unwrap_or_else(|e| e.into_inner());
                out.ended += 1;
                // Only when both have: lines still in flight on the other
                // stream would be lost otherwise.
                out.closed = out.ended == 2;
                drop(out);
                cv.notify_all();
            });
        }
        Server {
            child,
            out,
            cursor: 0,
            dir: dir.to_path_buf(),
        }
    }

    /// Starts the usual server on `logic.c` in `dir`, with `extra` flags.
    pub fn start_default(dir: &Path, extra: &[&str]) -> Server {
        Server::start_watching(dir, "logic.c", extra)
    }

    /// The usual server (cc build, 10 ms ticks) watching `watch`.
    pub fn start_watching(dir: &Path, watch: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--watch", watch, "--build", CC_BUILD, "--tick-ms", "10"];
        args.extend_from_slice(extra);
        Server::start(dir, &args)
    }

    /// Waits for the next line (after the cursor) that satisfies `pred`,
    /// moves the cursor past it and returns it. Panics with everything
    /// printed so far if it does not come.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.wait_line(WAIT, pred) {
            Waited::Line(line) => line,
            ended => {
                let why = if matches!(ended, Waited::Ended) {
                    "output ended"
                } else {
                    "timed out"
                };
                panic!(
                    "{why} waiting for {what}; output so far:\n{}",
                    self.transcript()
                );
            }
        }
    }

    /// Like [`Server::expect`], but says how the wait ended instead of
    /// panicking: for runs that expect the server may die.
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Waited {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.out;
        let mut out = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = out.lines[self.cursor..].iter().position(|l| pred(l)) {
                let idx = self.cursor + i;
                self.cursor = idx + 1;
                return Waited::Line(out.lines[idx].clone());
            }
            let now = Instant::now();
            if out.closed {
                self.cursor = out.lines.len();
                return Waited::Ended;
            }
            if now >= deadline {
                return Waited::TimedOut;
            }
            out = cv.wait_timeout(out, deadline - now).expect("wait").0;
        }
    }

    /// Waits for a line starting with `prefix`.
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        self.expect(prefix, |l| l.starts_with(prefix))
    }

    /// Waits for a line containing `needle`.
    pub fn expect_contains(&mut self, needle: &str) -> String {
        self.expect(needle, |l| l.contains(needle))
    }

    /// Everything printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.out
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .clone()
    }

    /// Lines printed after the cursor so far, without moving it.
    pub fn pending(&self) -> Vec<String> {
        self.out.0.lock().unwrap_or_else(|e| e.into_inner()).lines[self.cursor..].to_vec()
    }

    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines().iter().filter(|l| pred(l)).count()
    }

    pub fn transcript(&self) -> String {
        self.lines().join("\n")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .expect("send signal");
    }

    /// The exit status, if the process has ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait for the killed server")
    }

    /// Waits for the process to exit and for its output to be complete.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let (lock, cv) = &*self.out;
                let mut out = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !out.closed && Instant::now() < deadline {
                    out = cv
                        .wait_timeout(out, Duration::from_millis(50))
                        .expect("wait")
                        .0;
                }
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "hotreload did not exit; output so far:\n{}",
                    self.transcript()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The exit code, asserting the process exited normally.
    pub fn exit_code(&mut self) -> i32 {
        let status = self.wait();
        status
            .code()
            .unwrap_or_else(|| panic!("no exit code ({status:?}); output:\n{}", self.transcript()))
    }

    /// Stops with SIGTERM and returns the exit code.
    pub fn stop(&mut self) -> i32 {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.exit_code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server in `dir` with `args` as the unprivileged user
/// `nobody` (`dir` is made writable for it), for whom permissions count:
/// a folder of root's with mode 0700 can be neither read nor watched, a
/// file of mode 000 cannot be read. Only root can start it so: elsewhere
/// `None`, and the test says it skipped.
pub fn start_as_nobody(dir: &Path, args: &[&str]) -> Option<Server> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid only reads the calling process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        use std::io::Write as _;
        let test = thread::current().name().unwrap_or("test").to_owned();
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: needs root to start the server as another user"
        );
        return None;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(binary())
        .args(args);
    Some(Server::start_command(dir, command))
}

/// A fresh work folder with the ABI header in it.
pub fn workdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hotreload-test-")
        .tempdir()
        .expect("tempdir");
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include/hotreload.h");
    std::fs::copy(&header, dir.path().join("hotreload.h")).expect("copy header");
    dir
}

/// The servers' private folders in the temporary folder `tmp` (their
/// `TMPDIR`): one per server, holding its library copies, its `owner` lock
/// and the watcher's `sync-*` markers folder.
pub fn private_folders(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .expect("read the private TMPDIR")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("hotreload-"))
        .map(|e| e.path())
        .collect()
}

/// The shadow copies' folders: the private folders.
pub fn shadow_folders(tmp: &Path) -> Vec<PathBuf> {
    private_folders(tmp)
}

/// What a private folder holds besides library copies: the server's lock
/// on it and the watcher's markers folder.
pub fn is_bookkeeping(name: &std::ffi::OsStr) -> bool {
    name == "owner" || name.to_string_lossy().starts_with("sync-")
}

/// Builds after start-up are slow (0.5 s) once `slow` exists, and mark
/// themselves with `building.flag` while they run.
const SLOW_BUILD: &str = "if [ -e slow ]; then touch building.flag; sleep 0.5; fi; \
     cc -shared -fPIC -o logic.so logic.c; status=$?; rm -f building.flag; exit $status";

/// A server on `logic.c` in `dir` running the code tagged `one`, whose
/// builds from now on take 0.5 s (see [`SLOW_BUILD`]).
pub fn start_with_slow_builds(dir: &Path) -> Server {
    std::fs::write(dir.join("logic.c"), plugin::counter("one", 1)).expect("write");
    let mut s = Server::start(
        dir,
        &[
            "--watch",
            "logic.c",
            "--build",
            SLOW_BUILD,
            "--lib",
            "logic.so",
            "--tick-ms",
            "10",
        ],
    );
    s.expect_contains("[plugin] tag=one score=2 ");
    std::fs::write(dir.join("slow"), "").expect("write slow");
    s
}

/// Waits for `path` to appear (a file another process creates), polling for
/// it; panics after [`WAIT`].
pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {} to appear",
            path.display()
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Parses `key=value` out of a line.
pub fn field(line: &str, key: &str) -> Option<i64> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

/// Compiles `source` into a library at `out`, with the given extra flags.
pub fn compile(dir: &Path, source: &str, out: &str) {
    let src = dir.join(format!("{out}.c"));
    std::fs::write(&src, source).expect("write source");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o", out])
        .arg(&src)
        .current_dir(dir)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for {out}");
}

/// The processes of process group `pgid` that still run: a zombie runs
/// nothing (it waits to be reaped once its parent is gone), and is left out.
#[allow(dead_code)]
pub fn running_in_group(pgid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // gone meanwhile
        };
        // "pid (comm) state ppid pgrp …": comm may hold spaces.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let running = fields.next().is_some_and(|state| state != "Z");
        if running && fields.nth(1).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            found.push(pid);
        }
    }
    found
}
