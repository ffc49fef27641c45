//! What an engine is asked to do: the inputs every stage of the pipeline reads.
//!
//! A `Config` is plain data so that the command line, a test or an embedding
//! host can all build one; [`Config::validate`] is the single place that says
//! which combinations make sense.

use std::path::PathBuf;
use std::time::Duration;

/// How source changes are noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchMode {
    /// Kernel notifications (inotify): about 0.3 ms from a write to an event.
    Inotify,
    /// Periodic `stat` of every watched file, comparing nanosecond mtime, size
    /// and inode. For file systems without notifications (network mounts,
    /// some containers) and as the fallback when inotify runs out of watches.
    Poll,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Files or directories to watch; a directory is watched recursively.
    pub watch: Vec<PathBuf>,
    /// Shell command that builds the library, run with `sh -c` in `build_dir`.
    pub build: String,
    /// The directory the build command runs in.
    pub build_dir: PathBuf,
    /// The library the build produces.
    pub lib: PathBuf,
    /// A build running longer is killed with everything it started and
    /// counts as failed; `None` lets builds run for ever.
    pub build_timeout: Option<Duration>,
    /// Time between two ticks.
    pub tick_period: Duration,
    /// Handed to plugin code once the extended ABI exists; kept for the record.
    pub seed: u64,
    pub watch_mode: WatchMode,
    pub poll_interval: Duration,
    /// Quiet period: a build starts once no relevant event came for this long.
    /// The full period, and the upper bound of the adaptive one.
    pub debounce: Duration,
    /// Adaptive settle: after a save that completed (a close after writing,
    /// a rename into place) while no watched file is open for writing or
    /// gone, a build starts once the sources were still this long (longer
    /// while saves keep coming; at most `debounce`). Zero: always wait the
    /// full `debounce`. Inotify only: polling cannot see a save complete.
    pub settle: Duration,
    /// Building ahead: a batch that waits the settle is handed to the build
    /// once the sources were still this long, so that the build and its
    /// trial run while the settle passes; the result is acted on only once
    /// the settle confirms the batch, and any change before that stops the
    /// build (the batch then waits and builds as usual). Zero, or not
    /// shorter than `settle`: off.
    pub build_ahead: Duration,
    /// Longest a stream of events can hold a build back.
    pub debounce_max: Duration,
    /// Gitignore-style patterns to ignore inside watched folders, matched
    /// against paths relative to each watched folder (`build/`, `**/gen/**`,
    /// `*.log`; `!` keeps).
    pub ignore: Vec<String>,
    /// Longest a plugin call may run before it is interrupted and handled as
    /// a fault; `None` for the default, ten ticks and at least one second.
    pub call_timeout: Option<Duration>,
    /// Good versions kept loaded (the running one included) to roll back to
    /// when a newer one faults.
    pub keep_versions: usize,
    /// Good versions whose library stays on disk (in the private folder)
    /// for `rollback`, loaded or not: the newest this many. 0 keeps none,
    /// and `rollback` reaches only the versions still loaded.
    pub keep_on_disk: usize,
    /// Ticks a new build runs in a throwaway process, on a copy of the state,
    /// before it is loaded into the host; 0 loads without a trial (for
    /// plugins with side effects). Trials need the host program to call
    /// [`crate::run_probe_if_requested`] at the start of `main`.
    pub trial_ticks: u64,
    /// Load each build in a probe process before the host does (with
    /// `trial_ticks` 0, only loaded there); `false` runs no probe at all.
    pub probe: bool,
    /// Run plugin code only in worker processes, never in the host: a
    /// version that ends its process (a raw `_exit`, SIGKILL, a corrupted
    /// heap) costs a worker, not the session. Calls cost a round trip
    /// between processes instead of a function call. Needs the host program
    /// to call [`crate::run_probe_if_requested`] at the start of `main`.
    pub isolate: bool,
    /// Print the state every this many ticks.
    pub state_every: Option<u64>,
    /// The state's type in the library's debug info, if not `state_t` or the
    /// only struct of the state's size.
    pub state_type: Option<String>,
    /// Field patterns (`bounces`, `enemies[*].hp`): a field they select that
    /// a migration cannot carry (a type that cannot hold its values, a value
    /// that does not fit) starts at zero instead of refusing the version.
    pub reset_fields: Vec<String>,
    /// Field patterns whose fields `[state]` lines show whole (every
    /// element); empty for the compact line.
    pub state_fields: Vec<String>,
    /// Where the state is saved (at exit, and every `save_every` ticks) and
    /// restored from at start.
    pub state_file: Option<PathBuf>,
    pub save_every: Option<u64>,
    /// Do not restore `state_file`: start with a fresh state (and overwrite
    /// the file at the next save).
    pub fresh_state: bool,
    /// Hold an exclusive lock on `state_file` while running, so that a
    /// second server on the same file is refused instead of overwriting it.
    pub state_lock: bool,
    /// How much of the state's past is kept for `rewind`, `replay` and
    /// `loop`: this many ticks, in at most this many bytes (the oldest go
    /// first). 0 ticks keeps none.
    pub history: crate::state::history::Bound,
    /// Stop after this many ticks.
    pub max_ticks: Option<u64>,
    /// Stop after this many reload attempts (the start-up build is not one).
    pub max_reloads: Option<u64>,
}

impl Config {
    /// A configuration with the defaults the command line documents.
    pub fn new(watch: Vec<PathBuf>, build: String, lib: PathBuf) -> Config {
        Config {
            watch,
            build,
            build_dir: PathBuf::from("."),
            lib,
            build_timeout: Some(Duration::from_secs(600)),
            tick_period: Duration::from_millis(100),
            seed: 0,
            watch_mode: WatchMode::Inotify,
            poll_interval: Duration::from_millis(250),
            debounce: Duration::from_millis(20),
            settle: Duration::from_millis(8),
            build_ahead: Duration::from_millis(2),
            debounce_max: Duration::from_secs(1),
            ignore: Vec::new(),
            call_timeout: None,
            keep_versions: 5,
            keep_on_disk: 20,
            trial_ticks: 3,
            probe: true,
            isolate: false,
            state_every: None,
            state_type: None,
            reset_fields: Vec::new(),
            state_fields: Vec::new(),
            state_file: None,
            save_every: None,
            fresh_state: false,
            state_lock: true,
            history: crate::state::history::Bound {
                ticks: 1000,
                bytes: 64 << 20,
            },
            max_ticks: None,
            max_reloads: None,
        }
    }

    /// The plugin call timeout in effect.
    pub fn effective_call_timeout(&self) -> Duration {
        self.call_timeout
            .unwrap_or_else(|| (self.tick_period * 10).max(Duration::from_secs(1)))
    }

    /// Checks what can be checked before anything starts, so that a bad value
    /// is reported once, up front, rather than by whichever thread trips on it.
    pub fn validate(&self) -> Result<(), String> {
        if self.watch.is_empty() {
            return Err("nothing to watch: expected at least one --watch PATH".into());
        }
        for path in &self.watch {
            if path.exists() {
                continue;
            }
            // A file that does not exist yet is fine as long as its folder
            // does: it is watched for the moment it appears.
            let parent = crate::paths::parent_dir(path);
            if !parent.is_dir() {
                return Err(format!(
                    "cannot watch {}: expected an existing file or folder, found neither it nor its folder {}",
                    path.display(),
                    parent.display()
                ));
            }
        }
        if self.build.trim().is_empty() {
            return Err(
                "empty --build command: expected a shell command that builds the library".into(),
            );
        }
        if self.tick_period.is_zero() {
            return Err("tick period must be at least 1 ms, found 0".into());
        }
        if self.watch_mode == WatchMode::Poll && self.poll_interval.is_zero() {
            return Err("poll interval must be at least 1 ms, found 0".into());
        }
        if self.save_every.is_some() && self.state_file.is_none() {
            return Err(
                "--save-every needs --state-file PATH: expected a file to save to, found none"
                    .into(),
            );
        }
        if self.keep_versions == 0 {
            return Err("--keep-versions must be at least 1 (the running version), found 0".into());
        }
        if self.call_timeout.is_some_and(|t| t.is_zero()) {
            return Err("--tick-timeout-ms must be at least 1, found 0".into());
        }
        for (flag, patterns) in [
            ("--reset-field", &self.reset_fields),
            ("--state-fields", &self.state_fields),
        ] {
            if patterns.iter().any(|p| p.trim().is_empty()) {
                return Err(format!(
                    "{flag}: expected a field name or pattern (`score`, `enemies[*].hp`, `*`), \
                     found an empty one"
                ));
            }
        }
        if self.lib.file_name().is_none() {
            return Err(format!(
                "--lib {}: expected a file path",
                self.lib.display()
            ));
        }
        Ok(())
    }
}
