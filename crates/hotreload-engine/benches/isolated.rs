//! Per-tick cost in isolated mode: `Plugin::tick` on a version loaded in a
//! worker process (a round trip through the shared call page), against the
//! same plugin loaded in this process and called under the crash guard, in
//! the same run. Two paces: calls back to back, and calls 1 ms apart as a
//! 1 kHz loop makes them (the worker is asleep on its futex each time).
//! Target: a round trip under 10 µs, so that a 1 kHz loop loses under 1%.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use hotreload_engine::guard;
use hotreload_engine::plugin::check;
use hotreload_engine::plugin::isolate::Worker;
use hotreload_engine::plugin::load::Library;
use hotreload_engine::plugin::precheck::precheck;
use hotreload_engine::plugin::shadow::ShadowDir;
use hotreload_engine::plugin::{Plugin, TickContext};
use hotreload_engine::state::State;

use common::{Workdir, header, median_f64, verdict};

/// Rounds per variant, interleaved (which goes first alternates).
const ROUNDS: usize = 15;
/// Calls per back-to-back round.
const ISOLATED_CALLS: u64 = 20_000;
const LOCAL_CALLS: u64 = 2_000_000;
/// Calls per paced round, 1 ms apart.
const PACED_CALLS: usize = 500;
const PACE: Duration = Duration::from_millis(1);
/// How far ahead of a paced call the worker is warmed, as the tick loop
/// does (`hotreload_engine::tick::WARM_LEAD`).
const LEAD: Duration = hotreload_engine::tick::WARM_LEAD;
const TARGET_US: f64 = 10.0;
const DT: f64 = 0.001;

fn tick(plugin: &Plugin, state: &mut State) {
    // SAFETY: `state` was allocated with this plugin's `state_size`, this
    // thread is the only one calling into the plugin, and it ran
    // `guard::prepare_thread`.
    if let Err(fault) =
        unsafe { black_box(plugin).tick(state, black_box(DT), &TickContext::default()) }
    {
        panic!("the benchmark plugin faulted: {}", fault.report());
    }
}

/// Nanoseconds per call, back to back.
fn back_to_back(plugin: &Plugin, state: &mut State, n: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        tick(plugin, state);
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// The median and 99th percentile of single calls made `PACE` apart, in
/// nanoseconds; with `warm`, as the tick loop makes them: the worker is
/// told `LEAD` ahead that a call is coming.
fn paced(plugin: &Plugin, state: &mut State, warm: bool) -> (f64, f64) {
    let mut samples = Vec::with_capacity(PACED_CALLS);
    let mut next = Instant::now();
    for _ in 0..PACED_CALLS {
        next += PACE;
        if warm {
            // Then asleep to the deadline, as the tick loop is.
            sleep_until(next - LEAD);
            plugin.warm();
        }
        sleep_until(next);
        let start = Instant::now();
        tick(plugin, state);
        samples.push(start.elapsed().as_nanos() as f64);
    }
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

/// CPU time used so far by process `pid` (all its threads), from
/// `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Duration {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read the worker's stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    // utime and stime, fields 14 and 15, counted after the command's.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

/// CPU time used so far by the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec for the calling thread's CPU clock.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn sleep_until(at: Instant) {
    while Instant::now() < at {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
    }
}

fn ticks_of(state: &State) -> u64 {
    u64::from_ne_bytes(
        state.bytes()[..8]
            .try_into()
            .expect("the state holds a u64 counter"),
    )
}

fn main() {
    // The workers are this executable started again.
    hotreload_engine::run_probe_if_requested();
    header(
        "isolated",
        "cost of one tick round trip to an isolated worker, vs. the in-process guarded call",
    );
    let work = Workdir::new();
    let lib_path = work.compile_plugin("logic", 0);
    let bytes = std::fs::read(&lib_path).expect("read the compiled plugin");
    precheck(&bytes).expect("precheck accepts the plugin");
    let shadow_dir = ShadowDir::create().expect("create the shadow folder");
    let _thread_guard = guard::prepare_thread().expect("install the crash guard");
    let host = hotreload_engine::plugin::ext::host_context(0, 0);

    let local_copy = shadow_dir
        .store(1, "logic.so", &bytes)
        .expect("store a copy");
    let library = Library::open(local_copy).expect("load the plugin");
    let table = library.table().expect("the plugin's table");
    let api = check::check(&table, None).expect("the table passes the ABI check");
    let local = Plugin::new(api, library, 1, "logic.so".into(), 0);
    let mut local_state = State::zeroed(api.state_size).expect("allocate the state");

    let worker_copy = shadow_dir
        .store(2, "logic.so", &bytes)
        .expect("store a copy");
    let (worker, loaded) =
        Worker::spawn(worker_copy.path(), "logic.so", Duration::from_secs(5), None)
            .expect("start a worker");
    let isolated = Plugin::isolated(worker, loaded, Some(worker_copy), 2, "logic.so".into(), 0);
    let mut shared_state = State::shared(isolated.state_size()).expect("allocate shared state");

    // SAFETY: each state was allocated with its plugin's `state_size`; only
    // this thread calls into the plugins, and it ran `prepare_thread`.
    unsafe { local.init(&mut local_state, &host) }.expect("init runs");
    unsafe { isolated.init(&mut shared_state, &host) }.expect("init runs in the worker");

    // Warm-up.
    back_to_back(&local, &mut local_state, LOCAL_CALLS);
    back_to_back(&isolated, &mut shared_state, ISOLATED_CALLS);

    let (mut iso, mut loc) = (Vec::new(), Vec::new());
    let (mut paced_iso, mut paced_iso_p99, mut paced_loc) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cold_iso, mut cold_iso_p99) = (Vec::new(), Vec::new());
    let worker_pid = isolated
        .worker_pid()
        .expect("an isolated version has a worker");
    let (mut warm_cpu_host, mut warm_cpu_worker) = (Duration::ZERO, Duration::ZERO);
    let (mut cold_cpu_host, mut cold_cpu_worker) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        let mut run_isolated = || {
            iso.push(back_to_back(&isolated, &mut shared_state, ISOLATED_CALLS));
            let (host, worker) = (thread_cpu(), process_cpu(worker_pid));
            let (p50, p99) = paced(&isolated, &mut shared_state, true);
            warm_cpu_host += thread_cpu() - host;
            warm_cpu_worker += process_cpu(worker_pid) - worker;
            paced_iso.push(p50);
            paced_iso_p99.push(p99);
            let (host, worker) = (thread_cpu(), process_cpu(worker_pid));
            let (p50, p99) = paced(&isolated, &mut shared_state, false);
            cold_cpu_host += thread_cpu() - host;
            cold_cpu_worker += process_cpu(worker_pid) - worker;
            cold_iso.push(p50);
            cold_iso_p99.push(p99);
        };
        if round % 2 == 0 {
            run_isolated();
            loc.push(back_to_back(&local, &mut local_state, LOCAL_CALLS));
            paced_loc.push(paced(&local, &mut local_state, false).0);
        } else {
            loc.push(back_to_back(&local, &mut local_state, LOCAL_CALLS));
            paced_loc.push(paced(&local, &mut local_state, false).0);
            run_isolated();
        }
    }

    // Every call reached its plugin: the tick counter is the first u64.
    // (A warm-up round of back-to-back calls, then per round: back to back,
    // and paced once or, for the worker, twice.)
    let calls_made = |calls: u64, paced: u64| {
        (ROUNDS as u64 + 1) * calls + ROUNDS as u64 * paced * PACED_CALLS as u64
    };
    assert_eq!(
        ticks_of(&shared_state),
        calls_made(ISOLATED_CALLS, 2),
        "isolated calls that reached the plugin"
    );
    assert_eq!(
        ticks_of(&local_state),
        calls_made(LOCAL_CALLS, 1),
        "in-process calls that reached the plugin"
    );

    // SAFETY: as for `init`.
    unsafe { isolated.shutdown(&mut shared_state) }.expect("shutdown runs in the worker");
    unsafe { local.shutdown(&mut local_state) }.expect("shutdown runs");
    drop(isolated.close());
    drop(local.close());

    let iso_ns = median_f64(&mut iso);
    let loc_ns = median_f64(&mut loc);
    let paced_iso_ns = median_f64(&mut paced_iso);
    let paced_iso_p99_ns = median_f64(&mut paced_iso_p99);
    let paced_loc_ns = median_f64(&mut paced_loc);
    let cold_iso_ns = median_f64(&mut cold_iso);
    let cold_iso_p99_ns = median_f64(&mut cold_iso_p99);
    println!(
        "method: {ROUNDS} interleaved rounds; back to back: {ISOLATED_CALLS} isolated / \
         {LOCAL_CALLS} in-process calls a round, median of the rounds' ns/call; paced: \
         {PACED_CALLS} calls 1 ms apart a round, median of the rounds' median (and p99) call"
    );
    println!(
        "isolated round trip, back to back   {:8.2} µs/call",
        iso_ns / 1000.0
    );
    println!(
        "isolated round trip, 1 kHz pace     {:8.2} µs/call  (p99 {:.2} µs), warmed {} µs ahead as the tick loop does",
        paced_iso_ns / 1000.0,
        paced_iso_p99_ns / 1000.0,
        LEAD.as_micros()
    );
    println!(
        "  the same, not warmed (worker asleep) {:6.2} µs/call  (p99 {:.2} µs)",
        cold_iso_ns / 1000.0,
        cold_iso_p99_ns / 1000.0
    );
    println!(
        "baseline: in-process guarded call   {:8.4} µs/call back to back, {:.4} µs at 1 kHz",
        loc_ns / 1000.0,
        paced_loc_ns / 1000.0
    );
    let paced_ticks = (ROUNDS * PACED_CALLS) as f64;
    let per_tick = |d: Duration| d.as_secs_f64() * 1e6 / paced_ticks;
    println!(
        "CPU per 1 kHz tick: warmed {:.1} µs in the server + {:.1} µs in the worker; \
         not warmed {:.1} + {:.1} µs",
        per_tick(warm_cpu_host),
        per_tick(warm_cpu_worker),
        per_tick(cold_cpu_host),
        per_tick(cold_cpu_worker)
    );
    let worst = iso_ns.max(paced_iso_ns) / 1000.0;
    println!(
        "a 1 kHz loop loses {:.2}% of each 1 ms period to the round trip",
        worst / 10.0
    );
    println!(
        "target: a round trip under {TARGET_US} µs -> {}",
        verdict(worst < TARGET_US)
    );
}
