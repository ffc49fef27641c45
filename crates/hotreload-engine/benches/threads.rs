//! Calls through an embedded plugin's handle from 1, 2 and 8 threads, and
//! reloads under load.
//!
//! Each variant makes the same call, `first(x)` of the test plugin
//! (`tests/embed/worker.c`: an add), through the same function pointer;
//! they differ in how the pointer is reached:
//! - direct: the pointer held by the thread (the floor);
//! - handle: `plugin.enter()`, the table's pointer, leave (the epoch part
//!   of every call through the handle);
//! - arc-swap: `ArcSwap::load` of the table, then the pointer;
//! - RwLock: a read lock around the table, then the pointer;
//! - handle + trampoline: entered, through the guard's trampoline without
//!   the two system calls after it;
//! - guarded: `plugin.enter()` and `Entered::call`, the whole guarded call.
//!
//! Each thread's cost is its own CPU time per call
//! (`CLOCK_THREAD_CPUTIME_ID`), so 8 threads on a 2-core machine are not
//! charged for waiting their turn; contention (a lock's cache line moving
//! between cores) does show. Rounds are interleaved, the order rotating;
//! the figure is the median over rounds of the mean over threads.
//!
//! Then reload under load: 8 threads call in a loop while the library is
//! swapped 50 times; for each swap, the time from publication to the old
//! library closed (the reclaimer's `Closed` line), with calls in flight.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use hotreload_engine::embed::{
    Entered, Function, FunctionTable, Notice, Notices, Options, Plugin, TableHeader,
};

use common::{Workdir, header, median_f64, verdict};

#[repr(C)]
#[derive(Clone, Copy)]
struct TestApi {
    header: TableHeader,
    first: Option<unsafe extern "C" fn(u64) -> u64>,
    rest: [usize; 5],
}

// SAFETY: `#[repr(C)]`, a header first, then nullable function pointers
// (the ones not called here as plain words).
unsafe impl FunctionTable for TestApi {
    const ENTRY: &'static str = "test_get_api";
    const VERSION: u32 = 1;
    fn functions(&self) -> Vec<Function> {
        vec![Function {
            name: "first",
            address: self.first.map_or(0, |f| f as usize),
            required: true,
        }]
    }
}

type First = unsafe extern "C" fn(u64) -> u64;

/// A `Closed` line's figures: since the version was replaced, and at most
/// since the last thread in it left.
type ClosedAfter = (Duration, Option<Duration>);

const CALLS: u64 = 2_000_000;
/// Calls per thread and round of the variants that make system calls.
const SLOW_CALLS: u64 = 20_000;
const ROUNDS: usize = 7;
const THREADS: [usize; 3] = [1, 2, 8];
const TARGET_NS: f64 = 2.0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Direct,
    Handle,
    ArcSwap,
    RwLock,
    Trampoline,
    Guarded,
}

const VARIANTS: [Variant; 6] = [
    Variant::Direct,
    Variant::Handle,
    Variant::ArcSwap,
    Variant::RwLock,
    Variant::Trampoline,
    Variant::Guarded,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Direct => "baseline: direct call through the pointer",
            Variant::Handle => "handle: enter, call the pointer, leave",
            Variant::ArcSwap => "baseline: arc-swap load, call the pointer",
            Variant::RwLock => "baseline: RwLock read, call the pointer",
            Variant::Trampoline => "handle + guard trampoline (no system calls)",
            Variant::Guarded => "handle + whole guarded call (Entered::call)",
        }
    }

    fn calls(self) -> u64 {
        match self {
            Variant::Guarded => SLOW_CALLS,
            _ => CALLS,
        }
    }
}

struct Shared {
    plugin: Plugin<TestApi>,
    swap: ArcSwap<TestApi>,
    lock: RwLock<TestApi>,
}

fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[inline(never)]
fn run(variant: Variant, shared: &Shared, direct: First, n: u64) -> u64 {
    let mut x = 0u64;
    for _ in 0..n {
        let arg = std::hint::black_box(x & 1023);
        x = x.wrapping_add(match variant {
            // SAFETY (every arm): `first` takes and returns an integer; the
            // library is mapped (v1 is never replaced in this part).
            Variant::Direct => unsafe { std::hint::black_box(direct)(arg) },
            Variant::Handle => {
                let api = shared.plugin.enter();
                let f = api.table().first.expect("checked at load");
                unsafe { f(arg) }
            }
            Variant::ArcSwap => {
                let api = shared.swap.load();
                unsafe { api.first.expect("checked at load")(arg) }
            }
            Variant::RwLock => {
                let api = shared.lock.read().expect("never poisoned");
                unsafe { api.first.expect("checked at load")(arg) }
            }
            Variant::Trampoline => {
                let api: Entered<'_, TestApi> = shared.plugin.enter();
                let f = api.table().first.expect("checked at load");
                unsafe {
                    hotreload_engine::guard::call_words_trampoline_only(
                        f as *const std::ffi::c_void,
                        [arg, 0, 0, 0, 0],
                    )
                }
                .expect("no fault")
            }
            Variant::Guarded => {
                let api = shared.plugin.enter();
                unsafe { api.call(api.table().first, (arg,)) }.expect("no fault")
            }
        });
    }
    x
}

/// One round of `variant` on `threads` threads: the mean CPU ns per call.
fn round(variant: Variant, threads: usize, shared: &Arc<Shared>, direct: First) -> f64 {
    let start = Arc::new(Barrier::new(threads));
    let n = variant.calls();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (shared, start) = (Arc::clone(shared), Arc::clone(&start));
            std::thread::spawn(move || {
                // Warm: the thread's slot and guard are set up.
                run(variant, &shared, direct, 1000);
                start.wait();
                let t0 = thread_cpu_ns();
                std::hint::black_box(run(variant, &shared, direct, n));
                (thread_cpu_ns() - t0) as f64 / n as f64
            })
        })
        .collect();
    let per: Vec<f64> = handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .collect();
    per.iter().sum::<f64>() / per.len() as f64
}

fn main() {
    header(
        "threads",
        "calls through an embedded plugin's handle from 1, 2 and 8 threads, and reloads under load",
    );
    let work = Workdir::new();
    let source = include_str!("../tests/embed/worker.c");
    let a = work.compile_source("bench_a", &format!("#define LIB 1\n{source}"));
    let b = work.compile_source("bench_b", &format!("#define LIB 2\n{source}"));
    let closed: Arc<Mutex<Vec<ClosedAfter>>> = Arc::default();
    let record = Arc::clone(&closed);
    let options = Options {
        notices: Notices::to(move |n: &Notice| match n {
            Notice::Closed {
                since_replaced,
                since_last_left,
                ..
            } => {
                if let Ok(mut c) = record.lock() {
                    c.push((*since_replaced, *since_last_left));
                }
            }
            Notice::Loaded { .. } => {}
            other => eprintln!("{other}"),
        }),
        ..Options::default()
    };
    let plugin: Plugin<TestApi> = Plugin::load(&a, options).expect("load the bench plugin");
    let table = *plugin.enter().table();
    let direct = table.first.expect("checked at load");
    let shared = Arc::new(Shared {
        plugin: plugin.clone(),
        swap: ArcSwap::from_pointee(table),
        lock: RwLock::new(table),
    });
    println!(
        "method: {ROUNDS} interleaved rounds; {CALLS} calls per thread and round ({SLOW_CALLS} for the whole guarded call); each thread's CPU ns per call, mean over threads, median over rounds"
    );
    for threads in THREADS {
        let mut figures: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
        for r in 0..ROUNDS {
            for k in 0..VARIANTS.len() {
                let i = (k + r) % VARIANTS.len();
                figures[i].push(round(VARIANTS[i], threads, &shared, direct));
            }
        }
        let medians: Vec<f64> = figures.iter_mut().map(|f| median_f64(f)).collect();
        println!("-- {threads} thread{}", if threads == 1 { "" } else { "s" });
        for (v, m) in VARIANTS.iter().zip(&medians) {
            println!(
                "{:<46} {m:9.2} ns/call  ({:+.2} over direct)",
                v.name(),
                m - medians[0]
            );
        }
        let over = medians[1] - medians[0];
        println!(
            "target: the handle within {TARGET_NS} ns of the direct call -> {}",
            verdict(over <= TARGET_NS)
        );
    }
    println!(
        "hot-lib-reloader's generated call, measured against a direct call the same way by its own bench (it builds hot-lib-reloader from crates.io): cargo run --release --manifest-path crates/hotreload-engine/benches/hot-lib-reloader/Cargo.toml"
    );

    // Reload under load, with 2 callers (one per core) and with 8.
    for callers in [2, 8] {
        reload_under_load(&plugin, callers, [&a, &b], &closed);
    }
}

/// 50 swaps while `callers` threads call in a loop; prints publication to
/// the old library closed, and the time from the last thread leaving it to
/// its close (an upper bound: from the reclaimer's last look that found a
/// thread in it).
fn reload_under_load(
    plugin: &Plugin<TestApi>,
    callers: usize,
    libs: [&std::path::Path; 2],
    closed: &Mutex<Vec<ClosedAfter>>,
) {
    const SWAPS: usize = 50;
    closed.lock().expect("closed").clear();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let (plugin, stop) = (plugin.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut calls = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let api = plugin.enter();
                    // SAFETY: `first` takes and returns an integer.
                    let _ = unsafe { api.call(api.table().first, (calls & 1023,)) };
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    for i in 0..SWAPS {
        plugin.reload_from(libs[(i + 1) % 2]).expect("reload");
        assert!(
            plugin.wait_retired(Duration::from_secs(5)),
            "a version stayed open"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let calls: u64 = threads.into_iter().map(|c| c.join().expect("caller")).sum();
    let record = closed.lock().expect("closed");
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let mut replaced: Vec<f64> = record.iter().map(|(r, _)| ms(r)).collect();
    let mut left: Vec<f64> = record
        .iter()
        .map(|(r, l)| l.as_ref().map_or(ms(r), ms))
        .collect();
    let n = replaced.len();
    let max_left = left.iter().copied().fold(0.0, f64::max);
    let p50_replaced = median_f64(&mut replaced);
    let p50_left = median_f64(&mut left);
    println!(
        "reload under load, {callers} threads calling ({calls} guarded calls), {SWAPS} swaps: publication to old library closed p50 {p50_replaced:.3} ms; last thread out to closed p50 {p50_left:.3} ms, max {max_left:.3} ms (n={n})"
    );
    println!(
        "target: closed under 1 ms after the last in-flight call returns -> {}",
        verdict(p50_left < 1.0)
    );
}
