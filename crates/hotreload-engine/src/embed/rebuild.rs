//! Rebuilding an embedded plugin when its sources change, so that a host's
//! worker threads keep serving while the library is rebuilt and swapped:
//!
//! ```ignore
//! let plugin: Plugin<WorkerApi> = Plugin::load("libworker.so", Options::default())?;
//! let _rebuilding = plugin.rebuild_on_change(Rebuild::new(
//!     vec!["src".into()],
//!     "cargo build -p worker".into(),
//!     "target/debug/libworker.so".into(),
//! ))?;
//! ```
//!
//! The same stages as the command-line tool's, not a second copy of them:
//! the watch stage ([`crate::watch`]: folders watched rather than files, so
//! rename-style saves are seen; the ignore rules; the adaptive quiet
//! period that turns an editor's save or a burst into one change; polling
//! where inotify cannot be had) and the build stage
//! ([`crate::pipeline::build`]: the command in a process group of its own,
//! its output kept, a timeout). A build that succeeds is loaded with
//! [`Plugin::reload_from`], which checks and publishes it without waiting
//! for any caller; one that fails, or whose library is refused, leaves the
//! running version serving, and a line says why. Sources changed while a
//! build ran make its library stale: it is not loaded, and another build
//! follows.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{FunctionTable, Notice, Plugin};
use crate::config::WatchMode;
use crate::pipeline::build::{BuildResult, RunningBuild};
use crate::plugin::shadow::ShadowDir;
use crate::watch::own::OwnFiles;
use crate::watch::scope::Scope;
use crate::watch::{ChangeJournal, Watch, WatchOutput, WatchSettings};

/// What to watch, how to build, and what the build makes. The defaults are
/// the command-line tool's.
#[derive(Clone, Debug)]
pub struct Rebuild {
    /// Files or folders to watch (a folder recursively).
    pub watch: Vec<PathBuf>,
    /// Run with `sh -c` in `build_dir`.
    pub build: String,
    pub build_dir: PathBuf,
    /// The library the build writes, loaded after each build that succeeds.
    pub lib: PathBuf,
    /// Gitignore-style patterns left out of the watch (`target/`, `*.o`).
    pub ignore: Vec<String>,
    /// A build running longer is killed with what it started.
    pub build_timeout: Option<Duration>,
    pub mode: WatchMode,
    pub poll_interval: Duration,
    /// The full quiet period, the adaptive settle, the longest wait.
    pub quiet: Duration,
    pub settle: Duration,
    pub max_wait: Duration,
}

impl Rebuild {
    pub fn new(watch: Vec<PathBuf>, build: String, lib: PathBuf) -> Rebuild {
        let defaults = crate::Config::new(Vec::new(), String::new(), PathBuf::new());
        Rebuild {
            watch,
            build,
            build_dir: PathBuf::from("."),
            lib,
            ignore: vec!["target/".into()],
            build_timeout: defaults.build_timeout,
            mode: defaults.watch_mode,
            poll_interval: defaults.poll_interval,
            quiet: defaults.debounce,
            settle: defaults.settle,
            max_wait: defaults.debounce_max,
        }
    }
}

/// Rebuilding in progress; dropping it stops watching (a build under way
/// finishes, and is not loaded).
pub struct Rebuilder {
    inbox: Sender<Step>,
    thread: Option<JoinHandle<()>>,
    watch: Option<Watch>,
    /// The watch stage's markers live here: a private folder like the
    /// library copies', removed by the next host to start if this one dies.
    _private: ShadowDir,
}

enum Step {
    Changed(Vec<PathBuf>),
    Built(BuildResult),
    Stop,
}

impl Drop for Rebuilder {
    fn drop(&mut self) {
        // The watch first: no change arrives after the stop.
        self.watch.take();
        let _ = self.inbox.send(Step::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<T: FunctionTable> Plugin<T> {
    /// Watches `rebuild.watch`, runs `rebuild.build` after each change and
    /// loads `rebuild.lib` when it succeeds (see [`super::rebuild`]), until
    /// the returned value is dropped. Every change, build and load is said
    /// through the plugin's notices.
    pub fn rebuild_on_change(&self, rebuild: Rebuild) -> Result<Rebuilder, String> {
        if rebuild.watch.is_empty() {
            return Err("expected at least one path to watch, found none".into());
        }
        let private = ShadowDir::create()?;
        let mut own = OwnFiles::new();
        own.folder(private.path());
        let scope = Scope::new(
            &rebuild.watch,
            std::slice::from_ref(&rebuild.lib),
            &rebuild.ignore,
            &own,
        );
        let (inbox, steps) = mpsc::channel();
        let notices = self.notices().clone();
        let changes = inbox.clone();
        let watch = Watch::start(
            scope,
            WatchSettings {
                mode: rebuild.mode,
                poll_interval: rebuild.poll_interval,
                quiet: rebuild.quiet,
                settle: rebuild.settle,
                // A build here is acted on as soon as it ends.
                ahead: Duration::ZERO,
                max_wait: rebuild.max_wait,
                private_dir: private.path().to_path_buf(),
            },
            ChangeJournal::new(),
            Box::new(move |out| match out {
                WatchOutput::Batch(batch) => {
                    let _ = changes.send(Step::Changed(batch.paths.into_iter().collect()));
                }
                WatchOutput::Notice(what) => notices.say(&Notice::Watch(what)),
                WatchOutput::Ahead(_) | WatchOutput::CalledOff => {}
            }),
        )?;
        let plugin = self.clone();
        let built = inbox.clone();
        let thread = std::thread::Builder::new()
            .name("hotreload-rebuild".into())
            .spawn(move || run(&plugin, &rebuild, &steps, &built))
            .map_err(|e| format!("cannot start the rebuild thread: {e}"))?;
        Ok(Rebuilder {
            inbox,
            thread: Some(thread),
            watch: Some(watch),
            _private: private,
        })
    }
}

/// The rebuild thread: a change starts a build (changes meanwhile are
/// gathered), a build's end loads its library or says why not.
fn run<T: FunctionTable>(
    plugin: &Plugin<T>,
    rebuild: &Rebuild,
    steps: &Receiver<Step>,
    built: &Sender<Step>,
) {
    let notices = plugin.notices();
    // Changes seen since the build under way started (or, with none
    // running, not built yet).
    let mut pending: Vec<PathBuf> = Vec::new();
    let mut building = false;
    while let Ok(step) = steps.recv() {
        match step {
            Step::Stop => return,
            Step::Changed(paths) => {
                for p in paths {
                    if !pending.contains(&p) {
                        pending.push(p);
                    }
                }
                if building {
                    continue;
                }
            }
            Step::Built(result) => {
                building = false;
                if !pending.is_empty() {
                    notices.say(&Notice::BuildStale {
                        paths: pending.clone(),
                    });
                } else if result.succeeded() {
                    notices.say(&Notice::Built {
                        took: result.duration(),
                    });
                    // Refusals are said by the load itself.
                    let _ = plugin.reload_from(&rebuild.lib);
                    continue;
                } else {
                    notices.say(&Notice::BuildFailed {
                        status: result.status_text(),
                        first_line: result.first_error_line(),
                    });
                    continue;
                }
            }
        }
        if pending.is_empty() {
            continue;
        }
        notices.say(&Notice::ChangeDetected {
            paths: std::mem::take(&mut pending),
        });
        let done = built.clone();
        match RunningBuild::spawn(
            &rebuild.build,
            &rebuild.build_dir,
            rebuild.build_timeout,
            move |result| {
                let _ = done.send(Step::Built(result));
            },
        ) {
            Ok(_) => building = true,
            Err(why) => notices.say(&Notice::BuildFailed {
                status: "not started".into(),
                first_line: why,
            }),
        }
    }
}
