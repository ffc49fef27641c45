//! One cell of the matrix: a behaviour at a place, in one mode, through one
//! real server, from its start to a restart from its state file.
//!
//! The scenario, with every version a counter of its own step (so that a
//! score says which versions ticked it):
//! 1. v1 (`one`, step 1) starts and ticks; for [`Place::Init`] the hostile
//!    build is the first version instead.
//! 2. The hostile build (`bad`, step 10) is placed and loaded (SIGUSR1:
//!    rebuild now) and given time to strike: past its 5th tick, plus the
//!    behaviour's own delay (a timer).
//! 3. The follow-up, which finds damage the behaviour left: a good build
//!    (`two`, step 100) must swap in; a build that overflows its stack at
//!    its 5th tick (`three`, step 1000) must swap in, fault and be rolled
//!    back (the crash guard still works, and the hostile version, two
//!    versions back, is retired and unloaded); another good build (`four`,
//!    step 3) must swap in (builds and trials still start after the
//!    unload). For [`Place::Shutdown`], when the hostile version is the
//!    one running, the follow-up is left out: the stop is what calls it.
//! 4. SIGTERM, and the server must stop with a documented exit code.
//! 5. A second server restores the state file and must show the state the
//!    first one ended with.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::support::hostile::{Behaviour, Builds, Kind, Place, Plugin, SERVER_TICK};
use crate::support::{Server, Waited, field, workdir};

/// Milliseconds between ticks.
const TICK_MS: &str = "5";
/// A hang is interrupted after this long.
const TICK_TIMEOUT_MS: &str = "250";
/// How long one step may wait for its answer before the server counts as
/// stalled. The slowest answer a healthy server gives is a hang
/// interrupted after [`TICK_TIMEOUT_MS`].
const STEP_WAIT: Duration = Duration::from_secs(5);
/// How long a stopped server may take to exit.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// Ticks the hostile version is given: past [`SERVER_TICK`] and a few more.
const BAD_TICKS: usize = SERVER_TICK as usize + 6;
/// Ticks after every other step.
const SETTLE_TICKS: usize = 3;
/// Ticks of the last stretch, in which threads are watched for spinning.
const QUIET_TICKS: usize = 40;

/// How the server under test runs plugin code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// The default: each build is tried in a probe process (3 ticks and
    /// every hook) first.
    Trials,
    /// `--trial-ticks 0`: a probe only loads each build (its constructors,
    /// `logic_get_api` and destructors run there).
    LoadProbe,
    /// `--no-probe`: the server loads every build itself.
    NoProbe,
    /// `--isolate`: plugin code runs in a supervised worker process.
    Isolated,
}

pub const MODES: &[Mode] = &[Mode::Trials, Mode::LoadProbe, Mode::NoProbe, Mode::Isolated];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Trials => "trials (default)",
            Mode::LoadProbe => "--trial-ticks 0",
            Mode::NoProbe => "--no-probe",
            Mode::Isolated => "--isolate",
        }
    }

    pub fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Trials => &[],
            Mode::LoadProbe => &["--trial-ticks", "0"],
            Mode::NoProbe => &["--no-probe"],
            Mode::Isolated => &["--isolate"],
        }
    }
}

/// One cell: a behaviour at a place, in a mode.
#[derive(Clone, Copy)]
pub struct Cell {
    pub behaviour: &'static Behaviour,
    pub place: Place,
    pub mode: Mode,
}

impl Cell {
    pub fn name(&self) -> String {
        format!(
            "{} @ {} / {}",
            self.behaviour.name,
            self.place.name(),
            self.mode.name()
        )
    }

    /// The builds the scenario places, in order (the follow-up's too).
    pub fn plugins(&self) -> Vec<Plugin> {
        let bad = Plugin {
            hostile: Some((self.place, self.behaviour)),
            ..Plugin::good("bad", 10)
        };
        let first = if self.place == Place::Init {
            bad
        } else {
            Plugin::good("one", 1)
        };
        let mut all = vec![first];
        if self.place != Place::Init {
            all.push(bad);
        }
        all.extend(follow_up());
        all
    }
}

/// The follow-up's builds: a good one, one that overflows its stack at its
/// [`SERVER_TICK`]th tick, and another good one.
pub fn follow_up() -> [Plugin; 3] {
    [
        Plugin::good("two", 100),
        Plugin {
            fault_later: true,
            ..Plugin::good("three", 1000)
        },
        Plugin::good("four", 3),
    ]
}

/// Who the servers run as. As root, the unprivileged `nobody` (through
/// `setpriv`), so that permissions, the umask and process limits count as
/// on a developer's machine.
#[derive(Clone, Copy, Debug)]
pub enum User {
    Me,
    Nobody,
}

impl User {
    pub fn detect() -> User {
        // SAFETY: geteuid only reads the calling process's credentials.
        let root = unsafe { libc::geteuid() } == 0;
        let setpriv = Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if root && setpriv {
            User::Nobody
        } else {
            User::Me
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            User::Me => "the current user",
            User::Nobody => "nobody (uid 65534, through setpriv)",
        }
    }

    /// `hotreload args…` as this user, in its own process group (so that
    /// whatever it leaves running can be found and ended).
    fn command(self, args: &[&str]) -> Command {
        let mut command = match self {
            User::Me => Command::new(crate::support::binary()),
            User::Nobody => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                    .arg(crate::support::binary());
                c
            }
        };
        command.args(args).process_group(0);
        command
    }
}

/// What one cell came to.
#[derive(Default, Debug)]
pub struct Verdict {
    /// The server died, or stopped working and had to be killed: how.
    pub death: Option<String>,
    /// It hung or stopped (counted as a death, shown as `H`).
    pub hung: bool,
    /// Where the state went wrong.
    pub lost: Vec<String>,
    /// What no longer worked although the server lived.
    pub damage: Vec<String>,
    /// Something happened and no line says what.
    pub unclear: bool,
    /// The line that explains it, when one does.
    pub explained_by: Option<String>,
    pub transcript: String,
    pub elapsed: Duration,
}

impl Verdict {
    pub fn recovered(&self) -> bool {
        self.death.is_none() && self.lost.is_empty() && self.damage.is_empty()
    }

    pub fn clean(&self) -> bool {
        self.recovered() && !self.unclear
    }

    /// `·` for a clean cell, else letters: `D` died, `H` hung, `L` state
    /// lost, `X` damaged, `U` unclear.
    pub fn symbol(&self) -> String {
        let mut s = String::new();
        if self.death.is_some() {
            s.push(if self.hung { 'H' } else { 'D' });
        }
        if !self.lost.is_empty() {
            s.push('L');
        }
        if !self.damage.is_empty() {
            s.push('X');
        }
        if self.unclear {
            s.push('U');
        }
        if s.is_empty() {
            s.push('·');
        }
        s
    }

    /// One paragraph on what went wrong.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(how) = &self.death {
            parts.push(format!(
                "{}: {how}",
                if self.hung { "hung" } else { "died" }
            ));
        }
        for l in &self.lost {
            parts.push(format!("state lost: {l}"));
        }
        for d in &self.damage {
            parts.push(format!("damaged: {d}"));
        }
        if self.unclear {
            parts.push("unclear: no line names it".to_owned());
        } else if let Some(line) = &self.explained_by {
            parts.push(format!("said: {line}"));
        }
        parts.join("; ")
    }
}

/// How a state line came about.
#[derive(Debug, PartialEq)]
enum Moment {
    Initial,
    /// A tick completed (`--state-every 1`).
    Ticked,
    /// Shown without a tick: after a swap, on request, at exit.
    Unchanged,
    Restored,
}

/// `[state] score=N (…)`: the score, how it came about and the version.
fn state_line(line: &str) -> Option<(i64, Moment, Option<u64>)> {
    let rest = line.strip_prefix("[state] ")?;
    let score = field(rest, "score")?;
    // The fields are numbers: the first parenthesis opens the moment,
    // which may hold parentheses of its own.
    let open = rest.find(" (")?;
    let tail = rest[open + 2..].strip_suffix(')')?;
    let version = tail
        .rsplit([' ', ';', '('])
        .find_map(|w| w.trim_end_matches(',').strip_prefix('v')?.parse().ok());
    let moment = if tail.starts_with("initial") {
        Moment::Initial
    } else if tail.starts_with("restored") {
        Moment::Restored
    } else if tail.starts_with('v') && tail.contains(", tick ") {
        Moment::Ticked
    } else {
        Moment::Unchanged
    };
    Some((score, moment, version))
}

/// The version a `[reload] loaded|swapped … (api=1, vN…` line names.
fn loaded_version(line: &str) -> Option<u64> {
    if !(line.starts_with("[reload] loaded ") || line.starts_with("[reload] swapped ")) {
        return None;
    }
    let rest = &line[line.find("(api=")?..];
    let v = &rest[rest.find(", v")? + 3..];
    v[..v.find(|c: char| !c.is_ascii_digit())?].parse().ok()
}

fn pauses(line: &str) -> bool {
    line.contains("ticking paused") || line.contains("(no version running yet)")
}

/// A line that ends a reload attempt.
fn reload_outcome(line: &str) -> bool {
    loaded_version(line).is_some()
        || line.starts_with("[reload] rejected")
        || line.starts_with("[reload] the build is byte for byte")
        || line.starts_with("[build] failed")
        || (line.starts_with("[fault] ") && line.contains("not swapped in"))
}

/// The server in a cell, and what its lines have told so far.
struct Run {
    server: Server,
    pid: i32,
    /// The step of each version, from the build that was placed when it
    /// was loaded.
    steps: HashMap<u64, i64>,
    placing: i64,
    running: Option<u64>,
    paused: bool,
    /// Periodic state lines seen.
    ticks: usize,
    /// How the process ended, once it has.
    status: Option<ExitStatus>,
    /// It stopped itself (SIGSTOP).
    stopped: bool,
    /// Its output closed while it lived.
    silenced: bool,
    /// Processes of its group that outlived it.
    strays: Vec<i32>,
    stop_sent: bool,
    /// A step got no answer in time.
    stalled: bool,
    damage: Vec<String>,
}

enum Got {
    Line(String),
    /// The deadline passed.
    Quiet,
    /// The process ended, stopped, or can say nothing more.
    Gone,
}

impl Run {
    fn start(dir: &Path, user: User, mode: Mode, first: &Plugin) -> Run {
        let mut args = vec![
            "--watch",
            "watch.txt",
            "--build",
            "true",
            "--lib",
            "logic.so",
            "--tick-ms",
            TICK_MS,
            "--tick-timeout-ms",
            TICK_TIMEOUT_MS,
            "--keep-versions",
            "2",
            "--state-every",
            "1",
            "--state-file",
            "st.bin",
            "--save-every",
            "10",
        ];
        args.extend_from_slice(mode.args());
        let mut command = user.command(&args);
        command.env("TMPDIR", dir.join("tmp"));
        let server = Server::start_command(dir, command);
        let pid = server.pid();
        Run {
            server,
            pid,
            steps: HashMap::new(),
            placing: i64::from(first.step),
            running: None,
            paused: false,
            ticks: 0,
            status: None,
            stopped: false,
            silenced: false,
            strays: Vec::new(),
            stop_sent: false,
            stalled: false,
            damage: Vec::new(),
        }
    }

    fn gone(&self) -> bool {
        self.status.is_some() || self.stopped || self.silenced
    }

    /// Gone, or stalled once already: the rest of the scenario would only
    /// wait in vain.
    fn done(&self) -> bool {
        self.gone() || self.stalled
    }

    fn observe(&mut self, line: &str) {
        if let Some(v) = loaded_version(line) {
            self.steps.insert(v, self.placing);
            self.running = Some(v);
            self.paused = false;
        }
        if let Some(to) = line.split("rolled back to v").nth(1).and_then(|r| {
            r[..r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())]
                .parse()
                .ok()
        }) {
            self.running = Some(to);
        }
        if pauses(line) {
            self.paused = true;
            self.running = None;
        }
        if matches!(state_line(line), Some((_, Moment::Ticked, _))) {
            self.ticks += 1;
        }
    }

    /// The next line, waiting until `until`.
    fn next(&mut self, until: Instant) -> Got {
        loop {
            if self.gone() {
                return Got::Gone;
            }
            let now = Instant::now();
            if now >= until {
                return Got::Quiet;
            }
            let slice = (until - now).min(Duration::from_millis(100));
            match self.server.wait_line(slice, |_| true) {
                Waited::Line(line) => {
                    self.observe(&line);
                    return Got::Line(line);
                }
                Waited::Ended => {
                    // Its output closes as it exits, a moment before its
                    // status can be had.
                    let exiting = Instant::now() + Duration::from_secs(2);
                    while !self.exited() && Instant::now() < exiting {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if !self.exited() {
                        self.silenced = !is_stopped(self.pid);
                        self.stopped = !self.silenced;
                    }
                }
                Waited::TimedOut => {
                    if !self.exited() {
                        self.stopped = is_stopped(self.pid);
                    }
                }
            }
        }
    }

    /// Whether the process has ended; if so, records how, and ends what it
    /// left running in its group (a forked child holding its output open).
    fn exited(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        let Some(status) = self.server.try_status() else {
            return false;
        };
        self.status = Some(status);
        self.strays = crate::support::running_in_group(self.pid);
        if !self.strays.is_empty() {
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        // What it printed before it ended is still on its way.
        let drained = Instant::now() + Duration::from_secs(2);
        while let Waited::Line(line) = self
            .server
            .wait_line(drained.saturating_duration_since(Instant::now()), |_| true)
        {
            self.observe(&line);
        }
        true
    }

    /// Waits for a line that `done` accepts; `None` when the server is gone
    /// or stalled (said as damage, naming `what`).
    fn until(&mut self, what: &str, done: impl Fn(&Run, &str) -> bool) -> Option<String> {
        let until = Instant::now() + STEP_WAIT;
        loop {
            match self.next(until) {
                Got::Line(line) if done(self, &line) => return Some(line),
                Got::Line(_) => {}
                Got::Gone => return None,
                Got::Quiet => {
                    self.damage.push(format!(
                        "stalled: no answer for {} s waiting for {what}",
                        STEP_WAIT.as_secs()
                    ));
                    self.stalled = true;
                    return None;
                }
            }
        }
    }

    /// Lets `ticks` ticks pass, and at least `time` (a timer's delay: time
    /// the scenario itself needs); a paused server waits only the time.
    fn settle(&mut self, ticks: usize, time: Duration) {
        if self.done() {
            return;
        }
        let start = Instant::now();
        let target = self.ticks + ticks;
        let until = start + time + STEP_WAIT;
        loop {
            let waited_enough = start.elapsed() >= time;
            if waited_enough && (self.ticks >= target || self.paused) {
                return;
            }
            // A paused server prints nothing: wake when the time is up.
            let wake = if waited_enough {
                until
            } else {
                (start + time).min(until)
            };
            match self.next(wake) {
                Got::Gone => return,
                Got::Quiet if Instant::now() >= until => {
                    self.damage
                        .push(format!("stalled: no tick for {} s", STEP_WAIT.as_secs()));
                    self.stalled = true;
                    return;
                }
                _ => {}
            }
        }
    }

    /// Places `plugin` as the build's output, asks for a rebuild, and
    /// returns the line that ended the attempt.
    fn reload(&mut self, dir: &Path, builds: &Builds, plugin: &Plugin) -> Option<String> {
        if self.done() {
            return None;
        }
        place(dir, &builds.library(plugin));
        self.placing = i64::from(plugin.step);
        self.server.signal(Signal::SIGUSR1);
        self.until(&format!("the outcome of loading {}", plugin.tag), |_, l| {
            reload_outcome(l)
        })
    }

    /// A follow-up build that must go live.
    fn must_swap(&mut self, dir: &Path, builds: &Builds, plugin: &Plugin) -> Option<u64> {
        let outcome = self.reload(dir, builds, plugin)?;
        match loaded_version(&outcome) {
            Some(v) => Some(v),
            None => {
                self.damage.push(format!(
                    "a good build ({}) was not loaded: {outcome}",
                    plugin.tag
                ));
                None
            }
        }
    }

    /// SIGTERM, and waits for the process to end.
    fn stop(&mut self) {
        if self.status.is_some() || self.stopped {
            return;
        }
        self.stop_sent = true;
        self.server.signal(Signal::SIGTERM);
        let until = Instant::now() + STOP_WAIT;
        while !self.exited() && !self.stopped && Instant::now() < until {
            if self.silenced {
                // Nothing more to read: only its exit can be waited for.
                std::thread::sleep(Duration::from_millis(10));
            } else {
                let _ = self.next(until);
            }
        }
    }
}

/// Whether `pid` is stopped (`T` in /proc/PID/stat).
fn is_stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rfind(')')
                .map(|i| stat[i + 1..].trim_start().starts_with(['T', 't']))
        })
        .unwrap_or(false)
}

/// What one thread has done so far.
struct ThreadTimes {
    name: String,
    on_cpu: Duration,
    /// On a core, or waiting for one.
    runnable: Duration,
    /// Times it gave up its core (to sleep, to wait).
    voluntary: u64,
}

/// Each thread of `pid`, from /proc/PID/task/TID (`schedstat`, `status`).
fn threads(pid: i32) -> HashMap<i32, ThreadTimes> {
    let mut found = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let (Ok(sched), Ok(status)) = (
            std::fs::read_to_string(task.path().join("schedstat")),
            std::fs::read_to_string(task.path().join("status")),
        ) else {
            continue; // gone meanwhile
        };
        let ns: Vec<u64> = sched
            .split_whitespace()
            .take(2)
            .filter_map(|t| t.parse().ok())
            .collect();
        let value = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
        };
        if let (&[on_cpu, waiting], Some(name), Some(voluntary)) = (
            &ns[..],
            value("Name:"),
            value("voluntary_ctxt_switches:").and_then(|v| v.parse().ok()),
        ) {
            found.insert(
                tid,
                ThreadTimes {
                    name,
                    on_cpu: Duration::from_nanos(on_cpu),
                    runnable: Duration::from_nanos(on_cpu + waiting),
                    voluntary,
                },
            );
        }
    }
    found
}

/// Threads that spun between two samples taken `wall` apart: runnable
/// nearly all the time, on a core a good part of it, and hardly ever
/// giving it up. Nothing in a healthy server does that; a thread that
/// merely waits its turn on a busy machine gives its core up each time it
/// sleeps (a tick thread: 40 times in 200 ms).
fn spinning(
    before: &HashMap<i32, ThreadTimes>,
    after: &HashMap<i32, ThreadTimes>,
    wall: Duration,
) -> Vec<String> {
    let mut busy = Vec::new();
    if wall < Duration::from_millis(100) {
        return busy;
    }
    for (tid, now) in after {
        let then = before.get(tid);
        let share = |d: Duration| d.as_secs_f64() / wall.as_secs_f64();
        let runnable = share(
            now.runnable
                .saturating_sub(then.map_or(Duration::ZERO, |t| t.runnable)),
        );
        let on_cpu = share(
            now.on_cpu
                .saturating_sub(then.map_or(Duration::ZERO, |t| t.on_cpu)),
        );
        let slept = now.voluntary - then.map_or(0, |t| t.voluntary.min(now.voluntary));
        if runnable > 0.7 && on_cpu > 0.1 && slept < 5 {
            busy.push(format!(
                "thread {tid} ({}) spun: runnable {:.0}% of a quiet {} ms, on a core {:.0}%, slept {slept} times",
                now.name,
                100.0 * runnable,
                wall.as_millis(),
                100.0 * on_cpu,
            ));
        }
    }
    busy
}

/// Puts `library` in place of the build's output, in one rename.
fn place(dir: &Path, library: &Path) {
    let tmp = dir.join("logic.so.tmp");
    std::fs::copy(library, &tmp).expect("copy a build");
    std::fs::rename(&tmp, dir.join("logic.so")).expect("put a build in place");
}

/// Runs `cell`.
pub fn run(cell: &Cell, builds: &Builds, user: User) -> Verdict {
    let started = Instant::now();
    let work = workdir();
    let dir = work.path();
    // Writable by the server's user; its private folder inside.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::create_dir(dir.join("tmp")).expect("mkdir tmp");
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod tmp");
    std::fs::write(dir.join("watch.txt"), "never changes\n").expect("write watch.txt");
    let plugins = cell.plugins();
    let delay = Duration::from_millis(cell.behaviour.delay_ms);
    place(dir, &builds.library(&plugins[0]));
    let mut run = Run::start(dir, user, cell.mode, &plugins[0]);
    let mut follow = &plugins[1..];
    let bad_from;
    run.until("the first version's outcome", |_, l| {
        reload_outcome(l) || l.starts_with("[fault] v1 init")
    });
    if cell.place == Place::Init {
        bad_from = 0;
        run.settle(BAD_TICKS, delay);
    } else {
        run.settle(SETTLE_TICKS, Duration::ZERO);
        bad_from = run.server.lines().len();
        let outcome = run.reload(dir, builds, &follow[0]);
        follow = &follow[1..];
        let bad_version = outcome.as_deref().and_then(loaded_version);
        run.settle(BAD_TICKS, delay);
        if cell.place == Place::Shutdown && bad_version.is_some() && run.running == bad_version {
            follow = &[];
        }
    }
    let mut fault_later = None;
    if let [good, faulty, last] = follow {
        run.must_swap(dir, builds, good);
        run.settle(SETTLE_TICKS, Duration::ZERO);
        if let Some(v) = run.must_swap(dir, builds, faulty) {
            fault_later = Some(v);
            let faulted = format!("[fault] v{v} tick ");
            // Another fault may pause ticking first.
            match run.until("the follow-up's stack overflow", |r, l| {
                l.starts_with(&faulted) || r.paused
            }) {
                Some(line) if line.starts_with(&faulted) && !line.contains("rolled back to v") => {
                    run.damage
                        .push(format!("the follow-up's fault was not rolled back: {line}"))
                }
                _ => {}
            }
            run.settle(SETTLE_TICKS, Duration::ZERO);
        }
        run.must_swap(dir, builds, last);
        run.settle(SETTLE_TICKS, Duration::ZERO);
    }
    // Last, a quiet stretch in which no thread should keep a core busy
    // (hangs the scenario caused are over by now).
    if !run.done() {
        let before = (Instant::now(), threads(run.pid));
        run.settle(QUIET_TICKS, Duration::ZERO);
        if !run.gone() {
            let busy = spinning(&before.1, &threads(run.pid), before.0.elapsed());
            run.damage.extend(busy);
        }
    }
    run.stop();
    let hung_at_stop = run.stop_sent && run.status.is_none() && !run.stopped;
    if run.status.is_none() {
        run.server.kill();
    }
    let _ = killpg(Pid::from_raw(run.pid), Signal::SIGKILL);
    // A good library for the restart, whatever the last placed one was.
    place(dir, &builds.library(&follow_up()[2]));
    let restored = restore(dir, user);
    let mut verdict = judge(cell, &run, bad_from, fault_later, hung_at_stop, restored);
    verdict.elapsed = started.elapsed();
    verdict
}

/// The score a new server restores from the state file.
fn restore(dir: &Path, user: User) -> Result<i64, String> {
    let mut command = user.command(&[
        "--watch",
        "watch.txt",
        "--build",
        "true",
        "--lib",
        "logic.so",
        "--tick-ms",
        TICK_MS,
        "--no-probe",
        "--ticks",
        "1",
        "--state-file",
        "st.bin",
    ]);
    command.env("TMPDIR", dir.join("tmp"));
    let mut server = Server::start_command(dir, command);
    let found = server.wait_line(STEP_WAIT, |l| {
        matches!(
            state_line(l),
            Some((_, Moment::Restored | Moment::Initial, _))
        ) || l.starts_with("[exit]")
    });
    let result = match found {
        Waited::Line(line) => match state_line(&line) {
            Some((score, Moment::Restored, _)) => Ok(score),
            _ => Err(format!(
                "the restart did not restore it: {}",
                server
                    .lines()
                    .iter()
                    .filter(|l| !l.starts_with("[plugin]"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" / ")
            )),
        },
        _ => Err(format!("the restart showed no state: {:?}", server.lines())),
    };
    server.kill();
    let _ = killpg(Pid::from_raw(server.pid()), Signal::SIGKILL);
    result
}

/// Exit codes a stopped server may give (README, "Exit codes"): the
/// outcome of its last reload attempt. 16 (not saved) counts as lost.
fn documented_exit(code: i32) -> bool {
    code == 0 || (9..=16).contains(&code)
}

fn how(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!(
            "killed by {}{}",
            Signal::try_from(sig)
                .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned()),
            if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            }
        ),
        _ => format!("{status:?}"),
    }
}

/// Lines of the host's that could explain something: not the plugin's, not
/// state lines, not the narration of a stop. A trial's detail (`  | `, what
/// the probe printed, shown under its rejection) is part of the rejection.
fn explains(line: &str, says: &[&str]) -> bool {
    (line.starts_with('[') || line.starts_with("  | "))
        && !line.starts_with("[plugin]")
        && !line.starts_with("[state] score=")
        && !line.starts_with("[server] stopping (")
        && says.iter().any(|w| line.contains(w))
}

fn judge(
    cell: &Cell,
    run: &Run,
    bad_from: usize,
    fault_later: Option<u64>,
    hung_at_stop: bool,
    restored: Result<i64, String>,
) -> Verdict {
    let lines = run.server.lines();
    let mut v = Verdict {
        damage: run.damage.clone(),
        ..Verdict::default()
    };
    // Deaths.
    match (run.status, run.stop_sent) {
        _ if run.stopped => {
            v.death = Some("the process stopped (state T) and did not go on".into());
            v.hung = true;
        }
        _ if hung_at_stop => {
            v.death = Some(format!(
                "did not exit within {} s of SIGTERM",
                STOP_WAIT.as_secs()
            ));
            v.hung = true;
        }
        (Some(status), false) => v.death = Some(format!("ended by itself: {}", how(status))),
        (Some(status), true) if status.code().is_none_or(|c| !documented_exit(c)) => {
            v.death = Some(format!("at the stop: {}", how(status)));
        }
        (Some(status), true) => {
            if status.code() == Some(16) {
                v.lost
                    .push("the state could not be saved at exit (code 16)".into());
            }
            if !lines.iter().any(|l| l.starts_with("[exit] code=")) {
                v.damage.push("no [exit] line".into());
            }
        }
        (None, _) => {}
    }
    if run.silenced {
        v.damage.push("its output closed while it ran".into());
    }
    if !run.strays.is_empty() {
        v.damage.push(format!(
            "{} process(es) of its group outlived it (pids {:?})",
            run.strays.len(),
            run.strays
        ));
    }
    if let Some(line) = lines.iter().find(|l| l.starts_with("[build] failed")) {
        v.damage.push(format!("a build (`true`) failed: {line}"));
    }
    // The state: every tick adds the step of the version that ran it.
    let mut score: Option<i64> = None;
    let mut breaks = Vec::new();
    for line in &lines {
        let Some((n, moment, version)) = state_line(line) else {
            continue;
        };
        let expected = match moment {
            Moment::Initial => Some(0),
            Moment::Ticked => match version.and_then(|k| run.steps.get(&k)) {
                Some(step) => score.map(|s| s + step),
                None => {
                    breaks.push(format!("a tick of an unknown version: {line}"));
                    None
                }
            },
            Moment::Unchanged => score,
            Moment::Restored => None,
        };
        if let Some(e) = expected
            && e != n
        {
            breaks.push(format!("expected score={e}, found: {line}"));
        }
        score = Some(n);
    }
    if run.strays.is_empty() {
        v.lost.append(&mut breaks);
    } else if let Some(first) = breaks.first() {
        // Lines of two tick loops, each consistent in itself, interleave.
        v.damage
            .push(format!("a second process printed state lines ({first})"));
    }
    match (restored, score) {
        (Ok(got), Some(want)) if got != want => v.lost.push(format!(
            "the state file restores score={got}, the run ended at score={want}"
        )),
        (Err(why), Some(want)) => v
            .lost
            .push(format!("{why} (the run ended at score={want})")),
        _ => {}
    }
    v.lost.truncate(3);
    // Lines: what needs saying, and whether it was said.
    let follow_up_fault = fault_later.map(|k| format!("[fault] v{k} tick "));
    let said = lines[bad_from.min(lines.len())..].iter().find(|l| {
        explains(l, cell.behaviour.says)
            && follow_up_fault
                .as_ref()
                .is_none_or(|f| !l.starts_with(f.as_str()))
    });
    let stray_event = lines[bad_from.min(lines.len())..].iter().any(|l| {
        (l.starts_with("[fault] ") || l.starts_with("[reload] rejected"))
            && follow_up_fault
                .as_ref()
                .is_none_or(|f| !l.starts_with(f.as_str()))
    });
    let needs_line = cell.behaviour.kind == Kind::Ends || !v.recovered() || stray_event;
    v.explained_by = said.cloned();
    v.unclear = needs_line && said.is_none();
    v.transcript = lines.join("\n");
    v
}
