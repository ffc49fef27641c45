//! Wiring: start the stages on their threads and hand back a handle.
//!
//! Three long-lived threads: the watch thread (notice changes), the reload
//! thread (build, copy, check, load; owns every decision), and the tick
//! thread (owns the state, calls plugin code). Events flow out on one
//! channel; commands flow in through [`EngineHandle`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};

use crate::command::{Command, StopReason};
use crate::config::Config;
use crate::control::status::StatusBoard;
use crate::event::{Event, EventSink};
use crate::outcome::{StartError, exit_code};
use crate::pipeline::reload::{Inbox, Reloader};
use crate::plugin::shadow::ShadowDir;
use crate::state::claim::StateClaim;
use crate::state::forced::{ForcedSave, LastGood};
use crate::state::persist::{self, PersistError, Saved};
use crate::state::snapshot::SharedSnapshot;
use crate::tick::{TickLoop, TickSettings};
use crate::watch::own::OwnFiles;
use crate::watch::scope::Scope;
use crate::watch::{ChangeJournal, Watch, WatchOutput, WatchSettings};

pub struct Engine;

impl Engine {
    /// Validates `config`, puts the watches in place and starts the
    /// threads. Every event is passed to `sink` as it happens (see
    /// [`EventSink`]); the first ones (`Running`, then the start-up build's)
    /// may come before this returns.
    pub fn start(
        config: Config,
        sink: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<EngineHandle, StartError> {
        config.validate()?;
        crate::guard::install()?;
        if config.isolate && !crate::plugin::probe::hook_installed() {
            return Err(StartError {
                code: exit_code::USAGE,
                message: "isolated mode runs plugin code in copies of this program, which must \
                          call hotreload_engine::run_probe_if_requested() at the start of main; \
                          it does not"
                    .into(),
            });
        }
        if config.isolate {
            crate::plugin::isolate::confine::seal_host()?;
        }
        // Before the file is read: a second server must not even restore
        // from a file that another one is about to overwrite.
        let claim = match &config.state_file {
            Some(path) => Some(StateClaim::acquire(path, config.state_lock).map_err(
                |message| StartError {
                    code: exit_code::STATE_FILE,
                    message,
                },
            )?),
            None => None,
        };
        let restored = restore(&config)?;
        let events: EventSink = Arc::new(sink);
        let (inbox_tx, inbox_rx) = mpsc::channel::<Inbox>();
        let (tick_tx, tick_rx) = mpsc::channel();

        let shadow = ShadowDir::create()?;
        let scope = Scope::new(
            &config.watch,
            std::slice::from_ref(&config.lib),
            &config.ignore,
            &own_files(&config, &shadow),
        );
        let notice_inbox = inbox_tx.clone();
        scope.set_notice_sink(Box::new(move |text| {
            let _ = notice_inbox.send(Inbox::Watch(WatchOutput::Notice(text)));
        }));
        let journal = ChangeJournal::new();
        let watch_inbox = inbox_tx.clone();
        let watch = Watch::start(
            scope.clone(),
            WatchSettings {
                mode: config.watch_mode,
                poll_interval: config.poll_interval,
                quiet: config.debounce,
                settle: config.settle,
                ahead: config.build_ahead,
                max_wait: config.debounce_max,
                private_dir: shadow.path().to_path_buf(),
            },
            journal.clone(),
            Box::new(move |out| {
                let _ = watch_inbox.send(Inbox::Watch(out));
            }),
        )?;
        events(Event::Running {
            watch_mode: watch.mode,
        });
        if shadow.reaped > 0 {
            events(Event::ServerNotice(format!(
                "removed {} private folder{} that hotreload servers which ended abnormally left in {}",
                shadow.reaped,
                if shadow.reaped == 1 { "" } else { "s" },
                std::env::temp_dir().display()
            )));
        }
        let missing = crate::guard::interposers_missing();
        if !missing.is_empty() {
            events(Event::ServerNotice(format!(
                "plugin code's calls to {} reach the C library, not the crash guard: the host \
                 program does not export them (link it with -Wl,--export-dynamic-symbol=NAME for \
                 each; see hotreload_engine::guard::INTERPOSED); exit() in plugin code ends the \
                 host, and its signal handler changes are not refused",
                missing.join(", ")
            )));
        }
        for path in config.watch.iter().filter(|p| !p.exists()) {
            // Usually a typo; possibly a file the build generates.
            events(Event::WatchNotice(format!(
                "{} does not exist (yet); watching its folder for it to appear",
                path.display()
            )));
        }

        let tick_inbox = inbox_tx.clone();
        let board = Arc::new(StatusBoard::new(config.state_file.is_some()));
        board.set_watch_mode(&format!("{:?}", watch.mode).to_lowercase());
        let snapshot = SharedSnapshot::default();
        snapshot.set_history(Some(config.history));
        let last_good = LastGood::new(snapshot.clone(), config.state_file.clone());
        let snapshot_for_door = snapshot.clone();
        let tick_loop = TickLoop::new(
            TickSettings {
                period: config.tick_period,
                max_ticks: config.max_ticks,
                call_timeout: config.effective_call_timeout(),
                keep_versions: config.keep_versions,
                seed: config.seed,
                state_every: config.state_every,
                save_every: config.save_every,
                saving: config.state_file.is_some(),
                reset_fields: config.reset_fields.clone(),
                state_fields: config.state_fields.clone(),
            },
            Arc::clone(&events),
            Box::new(move |out| {
                let _ = tick_inbox.send(Inbox::Tick(out));
            }),
            snapshot,
            Arc::clone(&board),
        );
        let tick_thread = thread::Builder::new()
            .name("hotreload-tick".into())
            .spawn(move || tick_loop.run(tick_rx))
            .map_err(|e| format!("cannot start the tick thread: {e}"))?;

        let private_dir = shadow.path().to_path_buf();
        let door = StateDoor {
            tick: tick_tx.clone(),
            reload: inbox_tx.clone(),
            board: Arc::clone(&board),
            snapshot: snapshot_for_door,
            events: Arc::clone(&events),
            replay: ReplaySetup {
                dt: config.tick_period.as_secs_f64(),
                seed: config.seed,
                call_timeout: config.effective_call_timeout(),
            },
        };
        let mut reloader = Reloader::new(config, events, tick_tx, scope, journal, shadow, watch);
        reloader.report_to(Arc::clone(&board));
        reloader.hold(claim, last_good.clone());
        if let Some((saved, path)) = restored {
            reloader.restore_from(saved, path);
        }
        let me = inbox_tx.clone();
        let reload_thread = thread::Builder::new()
            .name("hotreload-reload".into())
            .spawn(move || reloader.run(inbox_rx, me))
            .map_err(|e| format!("cannot start the reload thread: {e}"))?;

        Ok(EngineHandle {
            inbox: inbox_tx,
            last_good,
            board,
            door,
            private_dir,
            reload_thread,
            tick_thread,
        })
    }

    /// [`Engine::start`] with the events delivered on a channel, for hosts
    /// that handle them on a thread of their own.
    pub fn start_with_channel(
        config: Config,
    ) -> Result<(EngineHandle, Receiver<Event>), StartError> {
        let (tx, rx) = mpsc::channel();
        // The receiver may be dropped by a host that stopped listening.
        let handle = Engine::start(config, move |event| {
            let _ = tx.send(event);
        })?;
        Ok((handle, rx))
    }
}

/// Every path the server itself writes, which is never a source even
/// inside a watched folder. Whatever comes to write files of its own (a
/// control socket, say) adds them here.
fn own_files(config: &Config, shadow: &ShadowDir) -> OwnFiles {
    let mut own = OwnFiles::new();
    own.folder(shadow.path());
    if let Some(state) = &config.state_file {
        own.file_and_companions(state);
    }
    own
}

/// The saved state to start from, if there is one and it should be used. A
/// file that exists but cannot be used stops the start, untouched: running
/// on would overwrite it at the first save.
fn restore(config: &Config) -> Result<Option<(Saved, std::path::PathBuf)>, StartError> {
    let Some(path) = &config.state_file else {
        return Ok(None);
    };
    if config.fresh_state {
        return Ok(None);
    }
    match persist::load(path) {
        Ok(saved) => Ok(Some((saved, path.clone()))),
        Err(PersistError::Missing) => Ok(None),
        Err(e) => Err(StartError {
            code: exit_code::STATE_FILE,
            message: format!(
                "cannot restore the state from {}: {e}; the file was left untouched (pass --fresh-state to start over and overwrite it)",
                path.display()
            ),
        }),
    }
}

/// Commands in, and a way to wait for the end.
pub struct EngineHandle {
    inbox: Sender<Inbox>,
    last_good: LastGood,
    board: Arc<StatusBoard>,
    door: StateDoor,
    private_dir: PathBuf,
    reload_thread: JoinHandle<i32>,
    tick_thread: JoinHandle<()>,
}

impl EngineHandle {
    pub fn send(&self, command: Command) {
        // Fails only once the engine has stopped, when there is nothing to do.
        let _ = self.inbox.send(Inbox::Command(command));
    }

    pub fn stop(&self, reason: StopReason) {
        self.send(Command::Stop(reason));
    }

    /// What the server is doing, readable at any moment from any thread.
    pub fn status(&self) -> Arc<StatusBoard> {
        Arc::clone(&self.board)
    }

    /// A way to read and write single values of the state between two
    /// ticks, from any thread.
    pub fn state_door(&self) -> StateDoor {
        self.door.clone()
    }

    /// A cloneable sender for commands, for a signal thread or a control
    /// socket.
    pub fn commander(&self) -> Commander {
        Commander {
            inbox: self.inbox.clone(),
            last_good: self.last_good.clone(),
            private_dir: self.private_dir.clone(),
        }
    }

    /// Waits for the engine to stop; returns its exit code.
    pub fn join(self) -> i32 {
        let code = self
            .reload_thread
            .join()
            .unwrap_or(crate::outcome::exit_code::HOST_ERROR);
        let _ = self.tick_thread.join();
        code
    }
}

#[derive(Clone)]
pub struct Commander {
    inbox: Sender<Inbox>,
    last_good: LastGood,
    /// The server's folder of private library copies.
    private_dir: PathBuf,
}

impl Commander {
    pub fn send(&self, command: Command) {
        let _ = self.inbox.send(Inbox::Command(command));
    }

    /// For a host about to exit without waiting for the engine (a second
    /// Ctrl-C): saves the last completed tick's state to the state file,
    /// calling no plugin code. See [`crate::state::forced`].
    pub fn save_before_forced_exit(&self) -> ForcedSave {
        self.last_good.save()
    }

    /// For a host about to exit without waiting for the engine: removes
    /// the server's private folder of library copies (mapped copies stay
    /// mapped until the process ends), which the engine would have removed
    /// at its end. The error, if it could not.
    pub fn remove_private_files(&self) -> Option<String> {
        match std::fs::remove_dir_all(&self.private_dir) {
            Ok(()) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!(
                "cannot remove the private folder {}: {e}",
                self.private_dir.display()
            )),
        }
    }
}

/// Reads and writes one value of the state at a time, between two ticks
/// (the tick thread does it, so nothing else ever touches the state), and
/// waits a bounded time for the answer: a tick thread inside a hung plugin
/// call answers only after the watchdog, and the caller is told so.
#[derive(Clone)]
pub struct StateDoor {
    tick: Sender<crate::tick::TickInput>,
    /// For rollbacks to a version no longer loaded, which the reload
    /// thread loads again from its kept copy first.
    reload: Sender<Inbox>,
    board: Arc<StatusBoard>,
    /// For `replay`, which reads the history off the tick thread.
    snapshot: SharedSnapshot,
    events: EventSink,
    replay: ReplaySetup,
}

/// What a replay runs ticks with.
#[derive(Clone, Copy, Debug)]
struct ReplaySetup {
    dt: f64,
    seed: u64,
    call_timeout: std::time::Duration,
}

impl StateDoor {
    /// How long a request waits for the tick thread.
    pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

    pub fn get(&self, path: &str) -> Result<crate::tick::Edited, crate::tick::DoorError> {
        self.ask(crate::tick::Edit::Get {
            path: path.to_owned(),
        })
    }

    pub fn set(
        &self,
        path: &str,
        value: &str,
    ) -> Result<crate::tick::Edited, crate::tick::DoorError> {
        self.ask(crate::tick::Edit::Set {
            path: path.to_owned(),
            value: value.to_owned(),
        })
    }

    pub fn undo(&self) -> Result<crate::tick::Edited, crate::tick::DoorError> {
        self.ask(crate::tick::Edit::Undo)
    }

    /// How long a rollback to a version no longer loaded waits for it to be
    /// loaded again and taken: a load in an isolated worker, or behind a
    /// trial in progress, takes longer than a request to the tick thread.
    pub const RELOAD_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

    /// Brings back `to` (by default the previous good version: the newest
    /// one kept, loaded or on disk, numbered below the running one), between
    /// two ticks, with the state carried as a fault's rollback carries it.
    /// A version still loaded is asked of the tick thread directly; any
    /// other goes through the reload thread, which loads it again from its
    /// kept copy (or says why it cannot).
    pub fn roll_back(
        &self,
        to: Option<u64>,
    ) -> Result<crate::tick::RolledBack, crate::tick::DoorError> {
        let loaded = self.board.loaded();
        let running = self.board.snapshot().version;
        let to = match to {
            Some(v) => v,
            None => {
                let mut kept: Vec<u64> = loaded
                    .iter()
                    .chain(self.board.on_disk().iter())
                    .copied()
                    .filter(|v| Some(*v) != running)
                    .collect();
                kept.sort_unstable();
                kept.dedup();
                let before = kept
                    .iter()
                    .rev()
                    .find(|v| running.is_none_or(|r| **v < r))
                    .copied();
                match before {
                    Some(v) => v,
                    None => {
                        return Err(crate::tick::DoorError::Refused(format!(
                            "expected a good version {} to roll back to, found none ({})",
                            running.map_or("kept".to_owned(), |r| format!("before v{r}")),
                            if kept.is_empty() {
                                "nothing else is kept loaded or on disk".to_owned()
                            } else {
                                format!(
                                    "kept: {}; name one: rollback vN",
                                    kept.iter()
                                        .map(|v| format!("v{v}"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            }
                        )));
                    }
                }
            }
        };
        if loaded.contains(&to) {
            return self.request(|asked| crate::tick::TickInput::RollBack(to, asked));
        }
        if let Some(refused) = self.refuse_if_busy() {
            return Err(refused);
        }
        let (asked, waiting) = crate::tick::door::ask();
        if self
            .reload
            .send(Inbox::RollBack { to, reply: asked })
            .is_err()
        {
            return Err(crate::tick::DoorError::Unavailable(
                "expected a running server, found its reload thread stopped".to_owned(),
            ));
        }
        waiting.wait(Self::RELOAD_PATIENCE, || self.board.busy_for())
    }

    fn ask(&self, edit: crate::tick::Edit) -> Result<crate::tick::Edited, crate::tick::DoorError> {
        self.request(|asked| crate::tick::TickInput::Edit(edit, asked))
    }

    /// A request refused at once, unsent, because the tick thread has been
    /// inside plugin code for long: it would wait behind that call.
    fn refuse_if_busy(&self) -> Option<crate::tick::DoorError> {
        self.board
            .busy_for()
            .filter(|(for_, _)| *for_ > crate::tick::door::BUSY_LIMIT)
            .map(|(for_, version)| crate::tick::door::busy_error(for_, version))
    }

    /// Sends the tick thread the request `input` makes around its reply,
    /// and waits for the answer: at most [`StateDoor::PATIENCE`], and no
    /// longer than it takes to see that the tick thread is stuck in plugin
    /// code (then the request is given up, never to be carried out).
    /// Puts the state back to an earlier tick from the history, while
    /// paused.
    pub fn rewind(
        &self,
        to: crate::tick::RewindTo,
    ) -> Result<crate::tick::Rewound, crate::tick::DoorError> {
        self.request(|asked| crate::tick::TickInput::Rewind(to, asked))
    }

    /// Loops the window `from..to` of recorded ticks (`None`: stops).
    pub fn set_loop(
        &self,
        window: Option<(u64, u64)>,
    ) -> Result<crate::tick::LoopSet, crate::tick::DoorError> {
        self.request(|asked| crate::tick::TickInput::Loop(window, asked))
    }

    /// What the rewind history holds.
    pub fn history(&self) -> Option<crate::state::snapshot::HistorySpan> {
        self.snapshot.history_span()
    }

    /// Runs the recorded ticks `from..to` (default: all the history holds)
    /// again with version `with` (default: the running one) in a throwaway
    /// worker, on this thread, and says where the result first differs
    /// from the recorded run. Published as an event too.
    pub fn replay(
        &self,
        from: Option<u64>,
        to: Option<u64>,
        with: Option<u64>,
    ) -> Result<crate::pipeline::replay::Replayed, crate::tick::DoorError> {
        use crate::tick::DoorError;
        let version = with.or(self.board.snapshot().version).ok_or_else(|| {
            DoorError::Unavailable("expected a version to replay with, found none running".into())
        })?;
        let library = self.board.kept_library(version).ok_or_else(|| {
            let on_disk = self.board.on_disk();
            DoorError::Refused(format!(
                "expected v{version}'s library kept on disk for replay, found {}",
                if on_disk.is_empty() {
                    "none kept (--keep-on-disk 0?)".to_owned()
                } else {
                    format!(
                        "only {}",
                        on_disk
                            .iter()
                            .map(|v| format!("v{v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ))
        })?;
        let request = crate::pipeline::replay::Request {
            from,
            to,
            version,
            lib_name: crate::plugin::shadow::ShadowDir::kept_lib_name(&library),
            library,
            dt: self.replay.dt,
            seed: self.replay.seed,
            call_timeout: self.replay.call_timeout,
        };
        let done =
            crate::pipeline::replay::run(&self.snapshot, &request).map_err(DoorError::Refused)?;
        (self.events)(Event::Replayed(done.clone()));
        Ok(done)
    }

    /// Writes the recorded ticks `from..to` (default: all the history
    /// holds) to `path`, for `hotreload --replay`; the window, and the
    /// file's size.
    pub fn record(
        &self,
        from: Option<u64>,
        to: Option<u64>,
        path: &std::path::Path,
    ) -> Result<(u64, u64, usize), crate::tick::DoorError> {
        crate::pipeline::replay::record(
            &self.snapshot,
            from,
            to,
            self.replay.dt,
            self.replay.seed,
            path,
        )
        .map_err(crate::tick::DoorError::Refused)
    }

    /// Passes `input` to every tick from the next on, until replaced
    /// (`None`, or no bytes: none). The plugin sees it in the host context
    /// of the extended table's `tick`; the history records it with each
    /// tick. Refused, changing nothing, above
    /// [`hotreload_abi::MAX_INPUT`] bytes.
    pub fn set_input(&self, input: Option<&[u8]>) -> Result<(), crate::tick::DoorError> {
        if let Some(bytes) = input {
            crate::tick::input::check(bytes).map_err(crate::tick::DoorError::Refused)?;
        }
        self.send_input(crate::tick::input::InputChange::Set(
            input.filter(|b| !b.is_empty()).map(Arc::from),
        ))
    }

    /// Asks `source` for each tick's input from the next tick on, on the
    /// tick thread just before the tick runs (see
    /// [`crate::tick::input::InputSource`]). Replaces a value set with
    /// [`StateDoor::set_input`], and is replaced by the next one.
    pub fn set_input_source(
        &self,
        source: impl FnMut(u64, &mut Vec<u8>) + Send + 'static,
    ) -> Result<(), crate::tick::DoorError> {
        self.send_input(crate::tick::input::InputChange::Source(Box::new(source)))
    }

    fn send_input(
        &self,
        change: crate::tick::input::InputChange,
    ) -> Result<(), crate::tick::DoorError> {
        self.tick
            .send(crate::tick::TickInput::Input(change))
            .map_err(|_| {
                crate::tick::DoorError::Unavailable(
                    "expected a running tick loop, found it stopped".to_owned(),
                )
            })
    }

    fn request<T>(
        &self,
        input: impl FnOnce(crate::tick::door::Asked<T>) -> crate::tick::TickInput,
    ) -> Result<T, crate::tick::DoorError> {
        if let Some(refused) = self.refuse_if_busy() {
            return Err(refused);
        }
        let (asked, waiting) = crate::tick::door::ask();
        self.tick.send(input(asked)).map_err(|_| {
            crate::tick::DoorError::Unavailable(
                "expected a running tick loop, found it stopped".to_owned(),
            )
        })?;
        waiting.wait(Self::PATIENCE, || self.board.busy_for())
    }
}
