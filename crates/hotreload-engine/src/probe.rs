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
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::check;
use crate::guard;
use crate::load::Library;
use crate::outcome::Rejection;
use crate::shadow::ShadowFile;
use crate::state::State;

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

/// What the parent asks: `<library> <report> <ticks> <dt> <state-size|none>`;
/// the state's bytes, if any, come on stdin.
struct Probe {
    library: PathBuf,
    report: File,
    ticks: u64,
    dt: f64,
    state_size: Option<usize>,
}

impl Probe {
    fn from_args() -> Result<Probe, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let [library, report, ticks, dt, state] = args.as_slice() else {
            return Err(format!("expected 5 arguments, found {}", args.len()));
        };
        let report = File::create(report).map_err(|e| format!("cannot create {report}: {e}"))?;
        Ok(Probe {
            library: PathBuf::from(library),
            report,
            ticks: ticks
                .parse()
                .map_err(|_| format!("bad tick count {ticks:?}"))?,
            dt: dt.parse().map_err(|_| format!("bad dt {dt:?}"))?,
            state_size: match state.as_str() {
                "none" => None,
                n => Some(n.parse().map_err(|_| format!("bad state size {n:?}"))?),
            },
        })
    }

    fn say(&mut self, line: &str) {
        // The parent reads what was written before a crash: no buffering.
        let _ = writeln!(self.report, "{line}");
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
            Err(why) => {
                self.say(&format!("reject {why}"));
                return 0;
            }
        };
        self.say("stage logic_get_api");
        let table = match library.table() {
            Ok(t) => t,
            // The host must never run a `logic_get_api` that crashed here.
            Err(why @ Rejection::Faulted(_)) => {
                self.say(&format!("fault trial: {why}"));
                return 0;
            }
            Err(why) => {
                self.say(&format!("reject {why}"));
                return 0;
            }
        };
        let api = match check::check(&table, self.state_size) {
            Ok(api) => api,
            Err(why) => {
                self.say(&format!("reject {why}"));
                return 0;
            }
        };
        let mut state = match State::zeroed(api.state_size) {
            Ok(s) => s,
            Err(why) => {
                self.say(&format!("reject {why}"));
                return 0;
            }
        };
        if self.state_size.is_some() {
            if let Err(e) = std::io::stdin().lock().read_exact(state.bytes_mut()) {
                self.say(&format!("error cannot read the state: {e}"));
                return 1;
            }
        } else {
            self.say("stage init");
            // SAFETY: the state was allocated with this table's `state_size`;
            // this is the only thread calling plugin code.
            if let Err(fault) = unsafe { guard::call_state(api.init, state.as_mut_ptr()) } {
                self.say(&format!("fault trial init: {}", describe(&fault)));
                return 0;
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
        let _ = library.close();
        self.say("ok");
        0
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
