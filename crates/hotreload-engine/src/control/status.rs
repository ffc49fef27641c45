//! What a running server is doing, readable from any thread at any moment:
//! the control socket answers `status` from here, never by asking the tick
//! thread (which may be inside a hung plugin call) or the reload thread
//! (which may be waiting for a build).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Written by the engine's threads as things happen, read by anyone.
pub struct StatusBoard {
    started: Instant,
    /// The version ticking, 0 when none is.
    version: AtomicU64,
    /// Ticks completed.
    tick: AtomicU64,
    /// Paused by a command (`pause`, or at the end of a `step`).
    paused: AtomicBool,
    /// Ticks left of a `step` in progress.
    steps_left: AtomicU64,
    /// Steps that ran all their ticks, so far.
    steps_done: AtomicU64,
    /// The latest any tick started after its deadline, in microseconds.
    latest_late_us: AtomicU64,
    /// Since when the tick thread has been at work (a tick, a swap, a
    /// request), in microseconds after `started`, plus one; 0 while it
    /// waits. What tells a request that it would wait behind plugin code.
    busy_since_us: AtomicU64,
    /// The outcome of the latest build or reload, as a line says it.
    last_reload: Mutex<String>,
    /// `inotify` or `poll`.
    watch_mode: Mutex<String>,
    /// Whether `save` has a file to write.
    pub saving: bool,
    /// The server was asked to stop.
    stopping: AtomicBool,
    /// Every build that reached the loader, oldest first.
    versions: Mutex<Vec<VersionRecord>>,
    /// The versions loaded now: the running one first, then those kept for
    /// rollbacks, newest first.
    loaded: Mutex<Vec<u64>>,
    /// The versions whose library is kept on disk for rollbacks, oldest
    /// first.
    on_disk: Mutex<Vec<(u64, std::path::PathBuf)>>,
}

/// One build the server tried to load, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRecord {
    /// Its version number; none for a build refused before it was loaded.
    pub version: Option<u64>,
    /// A hash of the library's bytes, in hex.
    pub content_hash: String,
    /// Milliseconds after the server started.
    pub at_ms: u64,
    /// `live`, `good` (ran, replaced by a newer one), `rejected: why`,
    /// `faulted: why`.
    pub outcome: String,
    /// When the build finished, in milliseconds since the Unix epoch.
    pub built_unix_ms: u64,
    /// How long the build command ran.
    pub build_ms: u64,
    /// What the sources were when it was built.
    pub sources: String,
}

/// What is known of one build besides its outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildFacts {
    /// How long the build command ran, in milliseconds.
    pub build_ms: u64,
    /// A digest of the watched sources' contents, with how many files.
    pub sources: String,
}

/// At most this many records are kept (the oldest go first).
const VERSIONS_KEPT: usize = 1_000;

/// A copy of the board at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub version: Option<u64>,
    pub tick: u64,
    pub paused: bool,
    pub uptime_ms: u64,
    pub latest_late_us: u64,
    pub last_reload: String,
    pub watch_mode: String,
    pub saving: bool,
    pub stopping: bool,
}

impl StatusBoard {
    pub fn new(saving: bool) -> StatusBoard {
        StatusBoard {
            started: Instant::now(),
            version: AtomicU64::new(0),
            tick: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            steps_left: AtomicU64::new(0),
            steps_done: AtomicU64::new(0),
            latest_late_us: AtomicU64::new(0),
            busy_since_us: AtomicU64::new(0),
            last_reload: Mutex::new("none yet".into()),
            watch_mode: Mutex::new(String::new()),
            saving,
            stopping: AtomicBool::new(false),
            versions: Mutex::new(Vec::new()),
            loaded: Mutex::new(Vec::new()),
            on_disk: Mutex::new(Vec::new()),
        }
    }

    /// A build that reached the loader: `version` when it was loaded and
    /// handed to the tick loop (it goes live; the version live before is
    /// then good), none when it was refused.
    pub fn record_build(
        &self,
        version: Option<u64>,
        content_hash: u64,
        outcome: String,
        facts: BuildFacts,
    ) {
        let Ok(mut all) = self.versions.lock() else {
            return;
        };
        if version.is_some() {
            for r in all.iter_mut().filter(|r| r.outcome == "live") {
                r.outcome = "good".into();
            }
        }
        if all.len() == VERSIONS_KEPT {
            all.remove(0);
        }
        all.push(VersionRecord {
            version,
            content_hash: format!("{content_hash:016x}"),
            at_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            outcome,
            built_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            build_ms: facts.build_ms,
            sources: facts.sources,
        });
    }

    /// What became of `version` since: `faulted: why`, or `live` again
    /// (a rollback to it; the one it replaced is then good).
    pub fn set_version_outcome(&self, version: u64, outcome: String) {
        let Ok(mut all) = self.versions.lock() else {
            return;
        };
        if outcome == "live" {
            for r in all.iter_mut().filter(|r| r.outcome == "live") {
                r.outcome = "good".into();
            }
        }
        if let Some(r) = all.iter_mut().rev().find(|r| r.version == Some(version)) {
            r.outcome = outcome;
        }
    }

    pub fn versions(&self) -> Vec<VersionRecord> {
        self.versions.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn set_loaded(&self, versions: Vec<u64>) {
        if let Ok(mut l) = self.loaded.lock() {
            *l = versions;
        }
    }

    pub fn loaded(&self) -> Vec<u64> {
        self.loaded.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The versions whose library is kept on disk, and where.
    pub fn set_on_disk(&self, files: Vec<(u64, std::path::PathBuf)>) {
        if let Ok(mut l) = self.on_disk.lock() {
            *l = files;
        }
    }

    pub fn on_disk(&self) -> Vec<u64> {
        self.on_disk
            .lock()
            .map(|v| v.iter().map(|(version, _)| *version).collect())
            .unwrap_or_default()
    }

    /// Where `version`'s library is kept on disk, if it is.
    pub fn kept_library(&self, version: u64) -> Option<std::path::PathBuf> {
        self.on_disk
            .lock()
            .ok()?
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, path)| path.clone())
    }

    pub fn snapshot(&self) -> Status {
        let text = |m: &Mutex<String>| m.lock().map(|s| s.clone()).unwrap_or_default();
        Status {
            version: match self.version.load(Ordering::Relaxed) {
                0 => None,
                v => Some(v),
            },
            tick: self.tick.load(Ordering::Relaxed),
            paused: self.paused.load(Ordering::Relaxed),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            latest_late_us: self.latest_late_us.load(Ordering::Relaxed),
            last_reload: text(&self.last_reload),
            watch_mode: text(&self.watch_mode),
            saving: self.saving,
            stopping: self.stopping.load(Ordering::Relaxed),
        }
    }

    /// After every tick: two relaxed stores.
    #[inline]
    pub fn ticked(&self, tick: u64, late_us: u64) {
        self.tick.store(tick, Ordering::Relaxed);
        self.latest_late_us.store(late_us, Ordering::Relaxed);
    }

    /// The tick thread starts work (`true`) or waits again (`false`): one
    /// clock read and a relaxed store.
    #[inline]
    pub fn set_busy(&self, busy: bool) {
        let since = if busy {
            u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1
        } else {
            0
        };
        self.busy_since_us.store(since, Ordering::Relaxed);
    }

    /// How long the tick thread has been at work, and on which version,
    /// when it is.
    pub fn busy_for(&self) -> Option<(std::time::Duration, Option<u64>)> {
        let since = self.busy_since_us.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let now = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let version = match self.version.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v),
        };
        Some((
            std::time::Duration::from_micros(now.saturating_sub(since - 1)),
            version,
        ))
    }

    pub fn set_tick(&self, tick: u64) {
        self.tick.store(tick, Ordering::Relaxed);
    }

    pub fn set_version(&self, version: Option<u64>) {
        self.version.store(version.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    pub fn set_steps_left(&self, n: u64) {
        self.steps_left.store(n, Ordering::Release);
    }

    pub fn steps_left(&self) -> u64 {
        self.steps_left.load(Ordering::Acquire)
    }

    /// A step ran all its ticks.
    pub fn step_done(&self) {
        self.steps_done.fetch_add(1, Ordering::Release);
    }

    pub fn steps_done(&self) -> u64 {
        self.steps_done.load(Ordering::Acquire)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub fn set_last_reload(&self, text: String) {
        if let Ok(mut s) = self.last_reload.lock() {
            *s = text;
        }
    }

    pub fn set_watch_mode(&self, mode: &str) {
        if let Ok(mut s) = self.watch_mode.lock() {
            *s = mode.to_owned();
        }
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}
