//! Shared by the benches: plugins compiled at run time, an engine whose events
//! are time-stamped where they happen, the loader baseline, and the summary
//! statistics every bench prints.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use hotreload_abi::GET_API_SYMBOL;
use hotreload_engine::event::Event;
use hotreload_engine::{Config, Engine, EngineHandle, StopReason};
use tempfile::TempDir;

/// The folder that holds `hotreload.h`.
const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../include");

/// How long any single wait on the engine may take before the bench gives up.
pub const WAIT: Duration = Duration::from_secs(10);

/// A seed-ABI plugin whose state is a tick counter and a clock. `variant`
/// changes the code (the step) but not the ABI or the state's size, so every
/// variant can replace every other.
pub fn plugin_source(variant: u32) -> String {
    format!(
        r#"#include <stdint.h>
#include "hotreload.h"

typedef struct {{
    uint64_t ticks;
    double time;
    uint64_t score;
}} state_t;

static void bench_init(void* p) {{
    state_t* s = p;
    s->ticks = 0;
    s->time = 0.0;
    s->score = 0;
}}

static void bench_tick(void* p, double dt) {{
    state_t* s = p;
    s->ticks += 1;
    s->time += dt;
    s->score += {step};
}}

static void bench_shutdown(void* p) {{
    (void)p;
}}

static logic_api_t api = {{
    .api_version = HOTRELOAD_API_VERSION,
    .state_size = sizeof(state_t),
    .init = bench_init,
    .tick = bench_tick,
    .shutdown = bench_shutdown,
}};

HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) {{ return &api; }}
"#,
        step = variant + 1
    )
}

/// A private temporary folder for sources, libraries and build scripts.
pub struct Workdir {
    dir: TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        let dir = tempfile::Builder::new()
            .prefix("hotreload-bench-")
            .tempdir()
            .expect("create a temporary folder for the bench");
        Workdir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Compiles [`plugin_source`]`(variant)` into `<name>.so` with `cc -O2`.
    pub fn compile_plugin(&self, name: &str, variant: u32) -> PathBuf {
        self.compile_source(name, &plugin_source(variant))
    }

    /// Compiles `source` (C, against `hotreload.h`) into `<name>.so` with
    /// `cc -O2`.
    pub fn compile_source(&self, name: &str, source: &str) -> PathBuf {
        let src = self.path().join(format!("{name}.c"));
        let lib = self.path().join(format!("{name}.so"));
        fs::write(&src, source).expect("write the plugin source");
        let out = Command::new("cc")
            .args(["-O2", "-shared", "-fPIC", "-I", INCLUDE_DIR, "-o"])
            .arg(&lib)
            .arg(&src)
            .output()
            .expect("run cc (a C compiler is needed to build the bench plugins)");
        assert!(
            out.status.success(),
            "cc failed for {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        lib
    }

    /// Compiles `count` variants `v0.so`, `v1.so`, ...
    pub fn compile_variants(&self, count: u32) -> Vec<PathBuf> {
        (0..count)
            .map(|v| self.compile_plugin(&format!("v{v}"), v))
            .collect()
    }
}

/// An engine configuration that reloads the prebuilt `libs` in turn on
/// every `Command::Rebuild` and watches only a file that never changes (in a
/// folder of its own, named after `tag`), so that no file-system event
/// reaches the engine. The round robin starts again from the first library.
pub fn prebuilt_config(work: &Workdir, libs: &[PathBuf], tag: &str) -> Config {
    let watched_dir = work.path().join(format!("watched-{tag}"));
    std::fs::create_dir(&watched_dir).expect("create the watched folder");
    let watched = watched_dir.join("never-changes.c");
    std::fs::write(&watched, "/* never changes */\n").expect("write the watched file");
    let _ = std::fs::remove_file(work.path().join(".build-count"));
    let mut config = Config::new(
        vec![watched],
        round_robin_build(libs, "logic.so"),
        work.path().join("logic.so"),
    );
    config.build_dir = work.path().to_path_buf();
    config
}

/// A shell build command, run in the folder that holds `libs`, that copies
/// the next of `libs` (round robin, counted in a file `.build-count`) to
/// `out`: a build that takes only as long as `sh` and `cp`.
pub fn round_robin_build(libs: &[PathBuf], out: &str) -> String {
    let names: Vec<String> = libs
        .iter()
        .map(|l| {
            l.file_name()
                .expect("a library file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let arms: String = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{i}) cp {name} {out} ;; "))
        .collect();
    format!(
        "n=$(cat .build-count 2>/dev/null || echo 0); echo $((n + 1)) > .build-count; \
         case $((n % {count})) in {arms}esac",
        count = names.len()
    )
}

/// An event and the moment the engine emitted it.
pub type Stamped = (Instant, Event);

/// Starts an engine whose events are stamped on the engine thread that emits
/// them and handed to the returned receiver.
pub fn start_engine(config: Config) -> (EngineHandle, Receiver<Stamped>) {
    let (tx, rx) = mpsc::channel();
    let handle = Engine::start(config, move |event| {
        let _ = tx.send((Instant::now(), event));
    })
    .expect("start the engine");
    (handle, rx)
}

/// Stops the engine and waits for it, draining its events.
pub fn stop_engine(handle: EngineHandle, rx: Receiver<Stamped>) {
    handle.stop(StopReason::Requested);
    let code = handle.join();
    drop(rx);
    assert_eq!(code, 0, "the engine's exit code");
}

/// Waits for the first event `pick` accepts; a failed build, a rejected
/// library or trials that cannot run (a bench whose `main` does not call
/// `run_probe_if_requested`) end the bench, since every figure after it
/// would be meaningless.
pub fn wait_for<T>(
    rx: &Receiver<Stamped>,
    mut pick: impl FnMut(Instant, &Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let (at, event) = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(stamped) => stamped,
            Err(RecvTimeoutError::Timeout) => panic!("no expected event within {WAIT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the engine stopped unexpectedly"),
        };
        match &event {
            Event::BuildFailed(f) => panic!("bench build failed: {}: {}", f.status, f.output),
            Event::Rejected { reason, .. } => panic!("bench library rejected: {reason:?}"),
            Event::TrialsOff(why) => panic!("trials are configured but off: {why}"),
            _ => {}
        }
        if let Some(found) = pick(at, &event) {
            return found;
        }
    }
}

/// Throws away whatever events are queued.
pub fn drain(rx: &Receiver<Stamped>) {
    while rx.try_recv().is_ok() {}
}

/// The bare loader, as tools without a validator use it: copy the library
/// to a fresh name, `dlopen` it (`RTLD_NOW | RTLD_LOCAL`), `dlsym` the entry
/// point, `dlclose`, remove the copy. Returns the time of one round trip.
pub fn loader_round_trip(lib: &Path, scratch: &Path, serial: u64) -> Duration {
    use std::os::unix::ffi::OsStrExt;
    let copy = scratch.join(format!("{serial}-loader.so"));
    let start = Instant::now();
    fs::copy(lib, &copy).expect("copy the library");
    let name = std::ffi::CString::new(copy.as_os_str().as_bytes()).expect("a path without NUL");
    // SAFETY: the copy is one of this bench's own plugins, compiled above from
    // `plugin_source`, and `name` is NUL-terminated; opening it runs only the
    // C start files' constructor.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen the bench plugin");
    // SAFETY: a live handle and a NUL-terminated symbol name.
    let get = unsafe { libc::dlsym(handle, GET_API_SYMBOL.as_ptr().cast()) };
    assert!(!get.is_null(), "dlsym logic_get_api");
    std::hint::black_box(get);
    // SAFETY: nothing of the library is used after this.
    assert_eq!(unsafe { libc::dlclose(handle) }, 0, "dlclose");
    fs::remove_file(&copy).expect("remove the copy");
    start.elapsed()
}

/// `rounds` loader round trips over `libs` in turn.
pub fn loader_baseline(libs: &[PathBuf], rounds: usize) -> Summary {
    let scratch = Workdir::new();
    // One untimed round trip warms the page cache and the loader.
    loader_round_trip(&libs[0], scratch.path(), u64::MAX);
    Summary::new(
        (0..rounds)
            .map(|i| loader_round_trip(&libs[i % libs.len()], scratch.path(), i as u64))
            .collect(),
    )
}

/// Sorted samples and their percentiles (nearest rank).
pub struct Summary {
    sorted: Vec<Duration>,
}

impl Summary {
    pub fn new(mut samples: Vec<Duration>) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        samples.sort();
        Summary { sorted: samples }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The `p`-th percentile, `p` in 0..=100.
    pub fn pct(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn p50(&self) -> Duration {
        self.pct(50.0)
    }

    pub fn min(&self) -> Duration {
        self.sorted[0]
    }

    pub fn max(&self) -> Duration {
        self.sorted[self.sorted.len() - 1]
    }
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// One line: the median, one higher percentile `hi`, the extremes.
pub fn row(what: &str, s: &Summary, hi: f64) {
    println!(
        "{what:<48} p50 {}  p{hi} {}  (min {}, max {}, n={})",
        ms(s.p50()),
        ms(s.pct(hi)),
        ms(s.min()),
        ms(s.max()),
        s.len()
    );
}

pub fn verdict(met: bool) -> &'static str {
    if met { "PASS" } else { "MISS" }
}

/// The median of `values` (which it sorts).
pub fn median_f64(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub fn header(name: &str, what: &str) {
    println!("== {name}: {what}");
}
