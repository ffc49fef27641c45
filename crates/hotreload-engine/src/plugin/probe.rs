//! The child side of a trial: a throwaway process that loads a new build and
//! runs its load-time code, a few ticks and every hook the host will call,
//! so that a crash or hang there never happens in the host.
//!
//! The probe is the host's own executable, started again with a hidden
//! subcommand and its orders on inherited descriptors ([`handover`]);
//! [`run_if_requested`] at the top of `main` turns such a process into a
//! probe before anything else runs. It writes its progress to the report
//! pipe line by line (`stage dlopen`, `stage tick 1`, ..., then `ok` or
//! `fault ...`), so that when it dies inside a library constructor, or hangs
//! and is killed, the host still knows where.

pub mod forker;
pub mod handover;
mod prefault;

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::guard;
use crate::layout::{Layout, dwarf};
use crate::outcome::Rejection;
use crate::plugin::check;
use crate::plugin::exercise::{Exercise, Stopped, exercise};
use crate::plugin::ext;
use crate::plugin::load::Library;
use crate::plugin::sealed::SealedMap;
use crate::plugin::shadow::ShadowFile;
use crate::plugin::{Knowledge, Plugin};
use crate::state::State;
use crate::state::persist::SavedRef;
use handover::{HandedOver, LIBRARY_FD, Request};

static HOOK_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether this executable calls [`run_if_requested`], so that it can serve
/// as a probe.
pub fn hook_installed() -> bool {
    HOOK_INSTALLED.load(Ordering::Acquire)
}

/// Call first thing in `main` of any program that embeds the engine. In the
/// host it only records that trials (and isolated workers) are possible; in
/// a process a host started as a probe it runs the trial and exits, and in
/// one it started as an isolated worker it serves that worker's calls and
/// exits. Asked to be either by anyone else (the hidden subcommands typed by
/// hand), it refuses and exits with code 2, having touched nothing.
pub fn run_if_requested() {
    HOOK_INSTALLED.store(true, Ordering::Release);
    match crate::plugin::isolate::worker::take_over() {
        Ok(None) => {}
        Ok(Some(handed)) => std::process::exit(crate::plugin::isolate::worker::serve(handed)),
        Err(why) => {
            eprintln!(
                "hotreload: error: {} is internal to hotreload's isolated mode: {why}",
                crate::plugin::isolate::worker::SUBCOMMAND
            );
            std::process::exit(2);
        }
    }
    let handed = match handover::take_over() {
        Ok(None) => {
            // The host: start the trial helper while this is still the only
            // thread. Without it trials start the executable again.
            if let Err(why) = forker::start() {
                forker::missing(why);
            }
            return;
        }
        Ok(Some(handed)) => handed,
        Err(why) => {
            eprintln!(
                "hotreload: error: {} is internal to hotreload's trials: {why}",
                handover::SUBCOMMAND
            );
            std::process::exit(2);
        }
    };
    std::process::exit(run_probe(handed));
}

/// Runs the probe on what it was handed; its exit code.
fn run_probe(handed: HandedOver) -> i32 {
    unbuffer_c_stdout();
    Probe::new(handed).run()
}

struct Probe {
    library: File,
    /// `None` once the last line is written and the pipe closed.
    report: Option<File>,
    request: Request,
    state: Option<SealedMap>,
}

impl Probe {
    fn new(handed: HandedOver) -> Probe {
        Probe {
            library: handed.library,
            report: Some(handed.report),
            request: handed.request,
            state: handed.state,
        }
    }

    fn say(&mut self, line: &str) {
        // The parent reads what was written before a crash: no buffering.
        if let Some(report) = self.report.as_mut() {
            let _ = writeln!(report, "{line}");
        }
    }

    /// `fault …` for plugin code that faulted, `reject …` for what the host's
    /// own checks will refuse (with the right exit code) once it loads the
    /// build.
    fn refuse(&mut self, why: Rejection) -> i32 {
        match why {
            Rejection::Faulted(what) => self.say(&format!("fault trial: {what}")),
            other => self.say(&format!("reject {other}")),
        }
        0
    }

    fn run(mut self) -> i32 {
        let _thread_guard = match guard::prepare_thread() {
            Ok(g) => g,
            Err(why) => {
                self.say(&format!("error {why}"));
                return 1;
            }
        };
        self.say("stage dlopen");
        // The host's own copy, by descriptor: the very bytes it maps next.
        // It belongs to the host, which removes it; this process must not.
        let path = PathBuf::from(format!("/proc/self/fd/{LIBRARY_FD}"));
        let library = match Library::open(ShadowFile::borrowed(path)) {
            Ok(l) => l,
            Err(why) => return self.refuse(why),
        };
        self.say("stage logic_get_api");
        let api = match library.table().and_then(|t| check::check(&t, None)) {
            Ok(api) => api,
            Err(why) => return self.refuse(why),
        };
        self.say("stage logic_get_api_ext");
        let ext: Option<ext::Ext> = match library.checked_ext(api.state_size) {
            Ok(ext) => ext,
            Err(why) => return self.refuse(why),
        };
        if self.request.load_only {
            return self.close(|| library.discard());
        }
        let layout: Option<Arc<Layout>> = match ext.as_ref().and_then(|e| e.schema.clone()) {
            Some(schema) => Some(schema),
            None => self.library_bytes().and_then(|bytes| {
                dwarf::read_layout(&bytes, api.state_size, self.request.state_type.as_deref())
                    .ok()
                    .flatten()
                    .map(Arc::new)
            }),
        };
        // Reading the state handed over (its checksum, a copy) is the
        // probe's own work, and takes a while for a large state: said, so
        // that the host does not take it for a hang in the last call.
        self.say("stage state");
        // A state handed over at the new build's size starts as a private
        // mapping of it: the trial copies only the pages its calls write.
        let handed = self
            .state
            .as_ref()
            .filter(|m| m.bytes().len() == api.state_size);
        let preloaded = handed.is_some();
        let block = match (handed, &self.state) {
            (Some(map), _) => map.private_copy(),
            // Another size: the exercise migrates every byte of it into
            // every byte of a new block.
            (None, Some(map)) => {
                map.read_ahead();
                State::untracked_to_fill(api.state_size)
            }
            (None, None) => State::untracked(api.state_size),
        };
        let mut state = match block {
            Ok(s) => s,
            Err(why) => {
                return self.refuse(Rejection::StateUnallocatable {
                    size: api.state_size,
                    why,
                });
            }
        };
        let saved = match (&self.request.state, &self.state) {
            (Some(handed), Some(bytes)) => Some(SavedRef {
                state: bytes.bytes(),
                state_version: handed.state_version,
                layout: handed.layout.as_ref(),
            }),
            _ => None,
        };
        let knowledge = Knowledge {
            ext,
            layout: layout.clone(),
            spans: Vec::new(),
        };
        let plugin = Plugin::with(api, library, 0, String::new(), 0, knowledge);
        let ex = Exercise {
            ticks: self.request.ticks,
            dt: self.request.dt,
            seed: self.request.seed,
            tick: self.request.tick,
            reset_fields: &self.request.reset_fields,
            state: saved,
            preloaded,
            layout: layout.as_deref(),
        };
        let mut report = self
            .report
            .as_ref()
            .ok_or(())
            .and_then(|r| r.try_clone().map_err(|_| ()));
        let outcome = exercise(&plugin, &mut state, &ex, &mut |stage| {
            if let Ok(report) = report.as_mut() {
                let _ = writeln!(report, "stage {stage}");
            }
        });
        // Its copy of the report pipe goes: the pipe's end must be the
        // probe's own closing of it (see `close`).
        drop(report);
        match outcome {
            Ok(()) => self.close(|| plugin.discard()),
            Err(Stopped::Fault { stage, fault }) => {
                self.say(&format!("fault trial {stage}: {}", fault.report()));
                0
            }
            Err(Stopped::Refused(why)) => self.refuse(why),
        }
    }

    /// Unloading runs the library's destructors: part of the trial too.
    /// Whether its code then leaves the process is not looked at: the
    /// host finds that when it retires the version.
    fn close(&mut self, unload: impl FnOnce() -> Option<String>) -> i32 {
        self.say("stage dlclose");
        if let Some(fault) = unload() {
            self.say(&format!(
                "fault trial: a library destructor faulted: {fault}"
            ));
            return 0;
        }
        self.say("ok");
        // The last word, and the report's end with it: the host takes the
        // verdict from the pipe's hang-up, without waiting for this process
        // to exit (nothing after this can change the verdict).
        self.report = None;
        0
    }

    /// The library's bytes, for its debug info; read through the host's
    /// descriptor, from the start.
    fn library_bytes(&self) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let len = self.library.metadata().ok()?.len();
        let mut bytes = vec![0u8; usize::try_from(len).ok()?];
        self.library.read_exact_at(&mut bytes, 0).ok()?;
        Some(bytes)
    }
}

/// What plugin code prints in a probe is shown when the trial fails, and a
/// trial fails mostly by the probe dying (a crash outside the guard, in a
/// constructor or destructor) or being killed (a hang). C's stdout is a pipe
/// here, so stdio would hold those lines in a buffer that dies with the
/// process: write each `printf` through at once instead.
fn unbuffer_c_stdout() {
    unsafe extern "C" {
        // glibc's `FILE* stdout`.
        static mut stdout: *mut libc::FILE;
    }
    // SAFETY: called first thing in the probe, before any other thread
    // exists and before anything is written to C's stdout, which is when
    // `setvbuf` may be called; `stdout` is glibc's stream, read once here.
    unsafe {
        libc::setvbuf(stdout, std::ptr::null_mut(), libc::_IONBF, 0);
    }
}
