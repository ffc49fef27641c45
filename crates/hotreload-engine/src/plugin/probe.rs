//! The child side of a trial: a throwaway process that loads a new build and
//! runs its load-time code and a few ticks, so that a crash or hang there
//! never happens in the host.
//!
//! The probe is the host's own executable, started again with
//! `HOTRELOAD_PROBE` set; [`run_if_requested`] at the top of `main` turns
//! such a process into a probe before anything else runs. It writes its
//! progress to a report file line by line (`stage dlopen`, `stage tick 1`,
//! ..., then `ok` or `fault ...`), so that when it dies inside a library
//! constructor, or hangs and is killed, the host still knows where.

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

/// Set in the environment of a probe process.
pub const PROBE_ENV: &str = "HOTRELOAD_PROBE";

static HOOK_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether this executable calls [`run_if_requested`], so that it can serve
/// as a probe.
pub fn hook_installed() -> bool {
    HOOK_INSTALLED.load(Ordering::Acquire)
}

/// Call first thing in `main` of any program that embeds the engine. In the
/// host it only records that trials are possible; in a probe process it runs
/// the trial and exits.
pub fn run_if_requested() {
    HOOK_INSTALLED.store(true, Ordering::Release);
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    unbuffer_c_stdout();
    let code = match Probe::from_args() {
        Ok(probe) => probe.run(),
        Err(why) => {
            eprintln!("hotreload probe: {why}");
            2
        }
    };
    std::process::exit(code);
}

/// What the parent asks: `<library> <report> <ticks> <dt> <state> <seed>
/// <tick> <state-type>`, where `<state>` is a state file (the current state with its
/// version and layout) or `none` for a first version, and `<state-type>` is
/// `-` for none.
struct Probe {
    library: PathBuf,
    report: File,
    ticks: u64,
    dt: f64,
    state: Option<PathBuf>,
    seed: u64,
    /// The host's ticks completed, for the host context.
    tick: u64,
    state_type: Option<String>,
}

impl Probe {
    fn from_args() -> Result<Probe, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let [library, report, ticks, dt, state, seed, tick, state_type] = args.as_slice() else {
            return Err(format!("expected 8 arguments, found {}", args.len()));
        };
        let report = File::create(report).map_err(|e| format!("cannot create {report}: {e}"))?;
        Ok(Probe {
            library: PathBuf::from(library),
            report,
            ticks: ticks
                .parse()
                .map_err(|_| format!("bad tick count {ticks:?}"))?,
            dt: dt.parse().map_err(|_| format!("bad dt {dt:?}"))?,
            state: (state != "none").then(|| PathBuf::from(state)),
            seed: seed.parse().map_err(|_| format!("bad seed {seed:?}"))?,
            tick: tick.parse().map_err(|_| format!("bad tick {tick:?}"))?,
            state_type: (state_type != "-").then(|| state_type.clone()),
        })
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
        // The copy belongs to the host, which removes it; this process must not.
        let library = match Library::open(ShadowFile::borrowed(self.library.clone())) {
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
        let layout: Option<Arc<Layout>> = match ext.as_ref().and_then(|e| e.schema.clone()) {
            Some(schema) => Some(schema),
            None => std::fs::read(&self.library)
                .ok()
                .and_then(|bytes| {
                    dwarf::read_layout(&bytes, api.state_size, self.state_type.as_deref())
                        .ok()
                        .flatten()
                })
                .map(Arc::new),
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
        let host = ext::host_context(self.seed, self.tick);
        let hooks = ext.clone();
        match self.state.clone() {
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
            Some(path) => {
                let saved = match persist::load(&path) {
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
        for n in 1..=self.ticks {
            self.say(&format!("stage tick {n}"));
            // SAFETY: as for `init`.
            if let Err(fault) = unsafe { guard::call_tick(api.tick, state.as_mut_ptr(), self.dt) } {
                self.say(&format!("fault trial tick {n}: {}", describe(&fault)));
                return 0;
            }
        }
        // Unloading runs the library's destructors: part of the trial too.
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
        match migrate::decide(old, new).map_err(Rejection::StateChange)? {
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
                    plan.apply(&saved.state, state.bytes_mut());
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
