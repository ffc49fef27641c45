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

pub mod handover;

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::guard;
use crate::layout::{Layout, dwarf};
use crate::outcome::Rejection;
use crate::plugin::check;
use crate::plugin::ext;
use crate::plugin::load::Library;
use crate::plugin::shadow::ShadowFile;
use crate::state::State;
use crate::state::migrate::{self, Decision, Side};
use crate::state::persist::{self, Saved};
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
        Ok(None) => return,
        Ok(Some(handed)) => handed,
        Err(why) => {
            eprintln!(
                "hotreload: error: {} is internal to hotreload's trials: {why}",
                handover::SUBCOMMAND
            );
            std::process::exit(2);
        }
    };
    unbuffer_c_stdout();
    std::process::exit(Probe::new(handed).run());
}

struct Probe {
    library: File,
    report: File,
    request: Request,
}

impl Probe {
    fn new(handed: HandedOver) -> Probe {
        Probe {
            library: handed.library,
            report: handed.report,
            request: handed.request,
        }
    }

    fn say(&mut self, line: &str) {
        // The parent reads what was written before a crash: no buffering.
        let _ = writeln!(self.report, "{line}");
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
        // SAFETY: the table came from the loaded library, whose schema names
        // stay readable while it is loaded (until the end of this function).
        let ext = match library.ext_table().and_then(|t| {
            t.map(|t| unsafe { ext::check(&t, api.state_size) })
                .transpose()
        }) {
            Ok(ext) => ext,
            Err(why) => return self.refuse(why),
        };
        if self.request.load_only {
            return self.close(library);
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
        let mut state = match State::zeroed(api.state_size) {
            Ok(s) => s,
            Err(why) => {
                return self.refuse(Rejection::StateUnallocatable {
                    size: api.state_size,
                    why,
                });
            }
        };
        let host = ext::host_context(self.request.seed, self.request.tick);
        let hooks = ext.clone();
        match self.request.state.clone() {
            None => {
                self.say("stage init");
                // SAFETY: the state was allocated with this table's
                // `state_size`; this is the only thread calling plugin code.
                let result = match hooks.as_ref().and_then(|e| e.init) {
                    Some(init) => unsafe { guard::call_hook(init, state.as_mut_ptr(), &host) },
                    None => unsafe { guard::call_state(api.init, state.as_mut_ptr()) },
                };
                if let Err(fault) = result {
                    self.say(&format!("fault trial init: {}", describe(&fault)));
                    return 0;
                }
            }
            Some(bytes) => {
                let saved = match persist::decode(&bytes) {
                    Ok(saved) => saved,
                    Err(e) => {
                        self.say(&format!("error cannot read the state handed over: {e}"));
                        return 1;
                    }
                };
                self.say("stage migrate");
                if let Err(why) =
                    self.carry_over(&saved, &mut state, layout.as_deref(), hooks.as_ref())
                {
                    return self.refuse(why);
                }
                if let Some(on_reload) = hooks.as_ref().and_then(|e| e.on_reload) {
                    self.say("stage on_reload");
                    // SAFETY: as for `init`.
                    if let Err(fault) =
                        unsafe { guard::call_hook(on_reload, state.as_mut_ptr(), &host) }
                    {
                        self.say(&format!("fault trial on_reload: {}", describe(&fault)));
                        return 0;
                    }
                }
            }
        }
        for n in 1..=self.request.ticks {
            self.say(&format!("stage tick {n}"));
            // SAFETY: as for `init`.
            if let Err(fault) =
                unsafe { guard::call_tick(api.tick, state.as_mut_ptr(), self.request.dt) }
            {
                self.say(&format!("fault trial tick {n}: {}", describe(&fault)));
                return 0;
            }
        }
        // Every other function the host may call on this version, in the
        // order it would: a description for the state lines, the hook it
        // gets when a newer version replaces it, `shutdown` at exit.
        if let Some(describe_fn) = hooks.as_ref().and_then(|e| e.describe) {
            self.say("stage describe");
            // SAFETY: as for `init`.
            if let Err(fault) = unsafe { guard::call_describe(describe_fn, state.bytes()) } {
                self.say(&format!("fault trial describe: {}", describe(&fault)));
                return 0;
            }
        }
        if let Some(on_unload) = hooks.as_ref().and_then(|e| e.on_unload) {
            self.say("stage on_unload");
            // SAFETY: as for `init`.
            if let Err(fault) = unsafe { guard::call_hook(on_unload, state.as_mut_ptr(), &host) } {
                self.say(&format!("fault trial on_unload: {}", describe(&fault)));
                return 0;
            }
        }
        self.say("stage shutdown");
        // SAFETY: as for `init`.
        if let Err(fault) = unsafe { guard::call_state(api.shutdown, state.as_mut_ptr()) } {
            self.say(&format!("fault trial shutdown: {}", describe(&fault)));
            return 0;
        }
        self.close(library)
    }

    /// Unloading runs the library's destructors: part of the trial too.
    fn close(&mut self, library: Library) -> i32 {
        self.say("stage dlclose");
        if let Some(fault) = library.close().destructor_fault {
            self.say(&format!(
                "fault trial: a library destructor faulted: {fault}"
            ));
            return 0;
        }
        self.say("ok");
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

    /// Fills `state` from the host's current state as the host will when
    /// it swaps this build in: as is, or migrated by plan and hook.
    fn carry_over(
        &mut self,
        saved: &Saved,
        state: &mut State,
        layout: Option<&Layout>,
        ext: Option<&ext::Ext>,
    ) -> Result<(), Rejection> {
        let old = Side {
            size: saved.state.len(),
            version: saved.state_version,
            layout: saved.layout.as_ref(),
            has_hook: false,
        };
        let hook = ext.and_then(|e| e.migrate);
        let new = Side {
            size: state.size(),
            version: ext.map_or(0, |e| e.state_version),
            layout,
            has_hook: hook.is_some(),
        };
        match migrate::decide(old, new, &self.request.reset_fields)
            .map_err(Rejection::StateChange)?
        {
            Decision::Keep => {
                if saved.state.len() != state.size() {
                    return Err(Rejection::StateSize {
                        expected: saved.state.len(),
                        found: state.size(),
                    });
                }
                state.bytes_mut().copy_from_slice(&saved.state);
                Ok(())
            }
            Decision::Migrate { plan, .. } => {
                if let Some(plan) = plan {
                    plan.apply(&saved.state, state.bytes_mut())
                        .map_err(|unfit| Rejection::StateChange(unfit.to_string()))?;
                }
                let Some(hook) = hook else { return Ok(()) };
                // SAFETY: both blocks are valid for their sizes; this is the
                // only thread calling plugin code.
                match unsafe {
                    guard::call_migrate(hook, &saved.state, saved.state_version, state.bytes_mut())
                } {
                    Ok(0) => Ok(()),
                    Ok(code) => Err(Rejection::StateChange(format!(
                        "the migrate hook refused it (returned {code})"
                    ))),
                    Err(fault) => Err(Rejection::Faulted(format!(
                        "migrate faulted: {}",
                        describe(&fault)
                    ))),
                }
            }
        }
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

fn describe(fault: &guard::Fault) -> String {
    match fault.symbol() {
        Some(symbol) => format!("{} in {symbol}", fault.describe()),
        None => fault.describe(),
    }
}
