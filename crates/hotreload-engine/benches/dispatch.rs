//! Per-tick dispatch cost: `Plugin::tick` on a real plugin, loaded through
//! the engine's own stages and called under the crash guard, against a bare
//! direct call through the same function pointer; and the guard's parts
//! apart: the trampoline (registers stored, the "inside" flag set, no jump
//! buffer), and the two system calls after every call that put the
//! thread's signal mask and alternate stack back. Targets: the trampoline
//! within 1 ns of the direct call; the whole guarded call under 1 µs.

mod common;

use std::ffi::c_void;
use std::hint::black_box;
use std::time::Instant;

use hotreload_abi::TickFn;
use hotreload_engine::guard;
use hotreload_engine::plugin::check;
use hotreload_engine::plugin::load::Library;
use hotreload_engine::plugin::precheck::precheck;
use hotreload_engine::plugin::shadow::ShadowDir;
use hotreload_engine::plugin::{Plugin, TickContext};
use hotreload_engine::state::State;

use common::{Workdir, header, median_f64, verdict};

/// Calls per round; a round takes a few tens of milliseconds.
const CALLS: u64 = 10_000_000;
/// Calls per round of the whole guarded call, which makes two system calls.
const SETTLED_CALLS: u64 = 100_000;
const TARGET_SETTLED_NS: f64 = 1000.0;
/// Rounds per variant, interleaved (which variant goes first alternates).
const ROUNDS: usize = 21;
const TARGET_NS: f64 = 1.0;
const DT: f64 = 0.001;

#[inline(never)]
fn through_plugin(plugin: &Plugin, state: &mut State, n: u64) {
    for _ in 0..n {
        // SAFETY: `state` was allocated with this plugin's `state_size`,
        // this thread is the only one calling into the plugin, and it ran
        // `guard::prepare_thread`.
        let result = unsafe {
            black_box(plugin).tick(
                black_box(&mut *state),
                black_box(DT),
                &TickContext::default(),
            )
        };
        if let Err(fault) = result {
            panic!("the benchmark plugin faulted: {}", fault.describe());
        }
    }
}

#[inline(never)]
fn guard_only(tick: TickFn, ptr: *mut c_void, n: u64) {
    for _ in 0..n {
        // SAFETY: as in `direct`, on a thread that ran `prepare_thread`.
        let result = unsafe {
            guard::call_tick_trampoline_only(black_box(tick), black_box(ptr), black_box(DT))
        };
        if let Err(fault) = result {
            panic!("the benchmark plugin faulted: {}", fault.describe());
        }
    }
}

#[inline(never)]
fn direct(tick: TickFn, ptr: *mut c_void, n: u64) {
    for _ in 0..n {
        // SAFETY: the same function pointer and state block `through_plugin`
        // uses, called from the only thread that calls into the plugin.
        unsafe { black_box(tick)(black_box(ptr), black_box(DT)) }
    }
}

fn ns_per_call(n: u64, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    header(
        "dispatch",
        "cost of one tick call into a loaded plugin, vs. a direct function-pointer call",
    );
    let work = Workdir::new();
    let lib_path = work.compile_plugin("logic", 0);

    // The engine's own path from a built file to a callable version.
    let bytes = std::fs::read(&lib_path).expect("read the compiled plugin");
    precheck(&bytes).expect("precheck accepts the plugin");
    let shadow_dir = ShadowDir::create().expect("create the shadow folder");
    let shadow = shadow_dir
        .store(1, "logic.so", &bytes)
        .expect("store the shadow copy");
    let library = Library::open(shadow).expect("load the plugin");
    let table = library.table().expect("the plugin's table");
    let api = check::check(&table, None).expect("the table passes the ABI check");
    let plugin = Plugin::new(api, library, 1, "logic.so".into(), 0);
    let mut state = State::zeroed(api.state_size).expect("allocate the state");
    let _thread_guard = guard::prepare_thread().expect("install the crash guard");
    // SAFETY: the state was just allocated with this plugin's `state_size`;
    // only this thread calls into the plugin, and it ran `prepare_thread`.
    let host = hotreload_engine::plugin::ext::host_context(0, 0);
    unsafe { plugin.init(&mut state, &host) }.expect("init runs");

    let tick = plugin
        .api()
        .expect("the plugin is loaded in this process")
        .tick;
    let ptr = state.as_mut_ptr();

    // Warm-up: one untimed round of each.
    through_plugin(&plugin, &mut state, SETTLED_CALLS);
    guard_only(tick, ptr, CALLS);
    direct(tick, ptr, CALLS);

    let mut via_plugin = Vec::with_capacity(ROUNDS);
    let mut via_pointer = Vec::with_capacity(ROUNDS);
    let mut via_guard = Vec::with_capacity(ROUNDS);
    let mut paired = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let (g, d) = if round % 2 == 0 {
            let g = ns_per_call(CALLS, || guard_only(tick, ptr, CALLS));
            let d = ns_per_call(CALLS, || direct(tick, ptr, CALLS));
            (g, d)
        } else {
            let d = ns_per_call(CALLS, || direct(tick, ptr, CALLS));
            let g = ns_per_call(CALLS, || guard_only(tick, ptr, CALLS));
            (g, d)
        };
        via_plugin.push(ns_per_call(SETTLED_CALLS, || {
            through_plugin(&plugin, &mut state, SETTLED_CALLS)
        }));
        via_guard.push(g);
        via_pointer.push(d);
        paired.push(g - d);
    }

    // Every call reached the plugin: its tick counter is the first u64.
    let ticks = u64::from_ne_bytes(
        state.bytes()[..8]
            .try_into()
            .expect("the state holds a u64 counter"),
    );
    let expected = (2 * CALLS + SETTLED_CALLS) * (ROUNDS as u64 + 1);
    assert_eq!(ticks, expected, "calls that reached the plugin");

    // SAFETY: as for `init`.
    unsafe { plugin.shutdown(&mut state) }.expect("shutdown runs");
    let closed = plugin.close();
    assert!(closed.close_error.is_none(), "dlclose failed");

    let (min_g, max_g) = min_max(&via_guard);
    let (min_d, max_d) = min_max(&via_pointer);
    let plugin_ns = median_f64(&mut via_plugin);
    let guard_ns = median_f64(&mut via_guard);
    let direct_ns = median_f64(&mut via_pointer);
    let paired_ns = median_f64(&mut paired);
    let diff = guard_ns - direct_ns;

    println!(
        "method: {ROUNDS} interleaved rounds x {CALLS} calls each way ({SETTLED_CALLS} for the whole guarded call); median of the rounds' ns/call"
    );
    println!("calls that reached the plugin: {ticks} (all of them)");
    println!(
        "guard trampoline alone           {guard_ns:7.3} ns/call  (rounds {min_g:.3}..{max_g:.3})"
    );
    println!(
        "baseline: bare (api.tick)(ptr)   {direct_ns:7.3} ns/call  (rounds {min_d:.3}..{max_d:.3})"
    );
    println!(
        "difference                       {diff:+7.3} ns/call  (median of per-round differences {paired_ns:+.3})"
    );
    println!(
        "target: the trampoline within {TARGET_NS} ns of the direct call -> {}",
        verdict(diff.abs() <= TARGET_NS)
    );
    println!(
        "Plugin::tick, the whole guarded call (trampoline + mask and alternate stack put back) {plugin_ns:8.1} ns/call ({:+.1} ns over the bare call)",
        plugin_ns - direct_ns
    );
    println!(
        "target: the whole guarded call under {TARGET_SETTLED_NS} ns -> {}",
        verdict(plugin_ns <= TARGET_SETTLED_NS)
    );
    println!(
        "anchors (DESIGN.md, not measured in this run): cr.h sigsetjmp(env, 1) ~110 ns per \
         call plus a stat per frame (~1,020 ns per frame update), one global jump buffer; \
         hot-lib-reloader ~53 ns per call"
    );
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}
