//! Build exited → first tick of the new code, over 200 reloads of prebuilt
//! libraries, four times in one run: with no probe (`probe = false`), with
//! the default trial (each build first runs 3 ticks in a throwaway probe
//! process), and the same two in isolated mode (each version in a worker
//! process; the trial in a throwaway worker). The build command only copies
//! the next prebuilt variant into place, and reloads are asked for with
//! `Command::Rebuild`, so the figure is the engine's own work: collect the
//! build's exit, read, precheck, shadow copy, (trial,) load (or start a
//! worker), check, hand over, install at a tick boundary, first tick.
//! Targets, judged with no probe, in-process: p50 ≤ 0.5 ms, p99 ≤ 2 ms.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hotreload_engine::event::Swap;
use hotreload_engine::pipeline::trial::{self, TrialSettings};
use hotreload_engine::plugin::probe::forker;
use hotreload_engine::{Command, Config, Event};

use common::{
    Summary, Workdir, header, loader_round_trip, ms, prebuilt_config, row, start_engine,
    stop_engine, verdict, wait_for,
};

const RELOADS: usize = 200;
const VARIANTS: u32 = 2;
const TICK_PERIOD: Duration = Duration::from_micros(100);
const TARGET_P50: Duration = Duration::from_micros(500);
const TARGET_P99: Duration = Duration::from_millis(2);
/// Trials run alone, outside the engine, for context.
const TRIAL_ROUNDS: usize = 100;

/// How a pass runs the engine.
#[derive(Clone, Copy)]
struct Mode {
    name: &'static str,
    /// Whether each build is tried first (the default trial) or not at all.
    trial: bool,
    isolate: bool,
}

const NO_PROBE: Mode = Mode {
    name: "no probe",
    trial: false,
    isolate: false,
};
const TRIAL: Mode = Mode {
    name: "default trial",
    trial: true,
    isolate: false,
};
const TRIAL_EXEC: Mode = Mode {
    name: "default trial, each probe started with exec (no helper)",
    trial: true,
    isolate: false,
};
const ISOLATED: Mode = Mode {
    name: "isolated, no probe",
    trial: false,
    isolate: true,
};
const ISOLATED_TRIAL: Mode = Mode {
    name: "isolated, default trial",
    trial: true,
    isolate: true,
};

/// One pass's samples, one per reload.
struct Pass {
    mode: Mode,
    trial_ticks: u64,
    installed: Vec<Duration>,
    first_tick: Vec<Duration>,
    /// Build exit → the reload thread's `BuildSucceeded`: said once the
    /// watcher caught up with the exit, while which the library was read,
    /// checked and copied.
    exit_to_noticed: Vec<Duration>,
    /// `BuildSucceeded` → swap installed: (trial,) load, check, hand-over.
    noticed_to_installed: Vec<Duration>,
    /// The loader baseline, one round trip after every reload.
    loader: Vec<Duration>,
    stayed_mapped: usize,
    wall: Duration,
}

fn main() {
    // The engine runs each new build's trial in this executable re-run as a
    // probe; in that child this runs the trial and exits.
    hotreload_engine::run_probe_if_requested();
    header(
        "swap",
        "build exited -> new code installed / first tick, prebuilt libraries, trial off and on",
    );
    let work = Workdir::new();
    let libs = work.compile_variants(VARIANTS);
    // The baseline, the loader alone on the same files, is measured between
    // reloads while the engine runs, so both see the same machine.
    let scratch = Workdir::new();
    loader_round_trip(&libs[0], scratch.path(), u64::MAX);

    let off = run_pass(&work, &libs, scratch.path(), NO_PROBE, 1);
    let on = run_pass(&work, &libs, scratch.path(), TRIAL, 2);
    forker::use_helper(false);
    let on_exec = run_pass(&work, &libs, scratch.path(), TRIAL_EXEC, 5);
    forker::use_helper(true);
    let iso_off = run_pass(&work, &libs, scratch.path(), ISOLATED, 3);
    let iso_on = run_pass(&work, &libs, scratch.path(), ISOLATED_TRIAL, 4);

    let (trial_alone, probe_alone, trial_exec) = trial_baselines(&libs, on.trial_ticks);

    println!(
        "method: {RELOADS} reloads per pass via Command::Rebuild; build = `sh -c` round robin \
         `cp` of {VARIANTS} prebuilt variants; tick period {} us; passes: no probe, default \
         trial ({} ticks), isolated with no probe, isolated with the default trial, one after \
         the other in this process",
        TICK_PERIOD.as_micros(),
        on.trial_ticks,
    );
    if !forker::available() {
        println!("NOTE: no trial helper runs here; every trial below started the executable");
    }
    for (n, pass) in [&off, &on, &iso_off, &iso_on, &on_exec]
        .into_iter()
        .enumerate()
    {
        pass.print(&format!("pass {}: {}", n + 1, pass.mode.name));
    }
    let (iso_ft, iso_on_ft) = (
        Summary::new(iso_off.first_tick.clone()),
        Summary::new(iso_on.first_tick.clone()),
    );

    let (off_ft, on_ft) = (
        Summary::new(off.first_tick.clone()),
        Summary::new(on.first_tick.clone()),
    );
    let (off_in, on_in) = (
        Summary::new(off.installed.clone()),
        Summary::new(on.installed.clone()),
    );
    println!(
        "trial's cost per reload (pass 2 - pass 1), build exited -> first tick: p50 {:+.3} ms, \
         p99 {:+.3} ms; -> swap installed: p50 {:+.3} ms, p99 {:+.3} ms",
        diff_ms(on_ft.p50(), off_ft.p50()),
        diff_ms(on_ft.pct(99.0), off_ft.pct(99.0)),
        diff_ms(on_in.p50(), off_in.p50()),
        diff_ms(on_in.pct(99.0), off_in.pct(99.0)),
    );
    row(
        "context: trial::run alone (as the reload thread runs it)",
        &trial_alone,
        99.0,
    );
    row(
        "context: the probe process alone (spawn -> exit, waitpid)",
        &probe_alone,
        99.0,
    );
    row(
        "baseline: trial::run alone, each probe started with exec (as before the helper)",
        &trial_exec,
        99.0,
    );
    let on_exec_in = Summary::new(on_exec.installed.clone());
    println!(
        "target, default trial (build exited -> swap installed): p50 <= 1 ms, p99 <= 3 ms -> \
         p50 {} ({}), p99 {} ({}); with exec'd probes (pass 5): p50 {}, p99 {}",
        ms(on_in.p50()),
        verdict(on_in.p50() <= Duration::from_millis(1)),
        ms(on_in.pct(99.0)),
        verdict(on_in.pct(99.0) <= Duration::from_millis(3)),
        ms(on_exec_in.p50()),
        ms(on_exec_in.pct(99.0)),
    );
    println!(
        "target, no probe (build exited -> swap installed): p50 <= 0.3 ms -> p50 {} ({})",
        ms(off_in.p50()),
        verdict(off_in.p50() <= Duration::from_micros(300)),
    );
    println!(
        "target, no probe (build exited -> first tick): p50 <= {}, p99 <= {} -> p50 {}, p99 {}",
        ms(TARGET_P50),
        ms(TARGET_P99),
        verdict(off_ft.p50() <= TARGET_P50),
        verdict(off_ft.pct(99.0) <= TARGET_P99),
    );
    println!(
        "same target, default trial (for the record): p50 {}, p99 {}",
        verdict(on_ft.p50() <= TARGET_P50),
        verdict(on_ft.pct(99.0) <= TARGET_P99),
    );
    println!(
        "isolated mode's cost per reload (pass 3 - pass 1), build exited -> first tick: p50 \
         {:+.3} ms, p99 {:+.3} ms; with the trial (pass 4 - pass 2): p50 {:+.3} ms, p99 {:+.3} ms",
        diff_ms(iso_ft.p50(), off_ft.p50()),
        diff_ms(iso_ft.pct(99.0), off_ft.pct(99.0)),
        diff_ms(iso_on_ft.p50(), on_ft.p50()),
        diff_ms(iso_on_ft.pct(99.0), on_ft.pct(99.0)),
    );
    println!("anchor (DESIGN.md, not measured in this run): cr.h reload 0.15 ms median, serial");
}

/// The trial outside the engine, on the same libraries, after both passes:
/// `trial::run` as the reload thread calls it, and the same probe started
/// and waited for with a blocking `waitpid`, which is the process's own
/// cost. Interleaved, `TRIAL_ROUNDS` each; both
/// start from no state (the probe runs `init`, then the ticks).
fn trial_baselines(libs: &[PathBuf], ticks: u64) -> (Summary, Summary, Summary) {
    let settings = TrialSettings {
        ticks,
        dt: TICK_PERIOD.as_secs_f64(),
        stall: Duration::from_secs(1),
        seed: 0,
        tick: 0,
        state_type: None,
        load_only: false,
        reset_fields: Vec::new(),
    };
    let mut via_trial = Vec::with_capacity(TRIAL_ROUNDS);
    let mut via_spawn = Vec::with_capacity(TRIAL_ROUNDS);
    let mut via_exec = Vec::with_capacity(TRIAL_ROUNDS);
    for i in 0..TRIAL_ROUNDS {
        let lib = &libs[i % libs.len()];
        let run_trial = || {
            let start = Instant::now();
            if let Err(f) = trial::run(lib, &settings, None) {
                panic!(
                    "the trial refused a good library: {} {}",
                    f.reason, f.output
                );
            }
            start.elapsed()
        };
        let run_probe = || {
            let start = Instant::now();
            let mut spawned = trial::spawn(lib, &settings, None).expect("start the probe");
            let status = spawned.child.wait().expect("wait for the probe");
            let took = start.elapsed();
            assert!(status.success(), "the probe failed: {status}");
            spawned.pipes.drain();
            let report = spawned.pipes.lines().to_vec();
            assert_eq!(
                report.last().map(String::as_str),
                Some("ok"),
                "the probe's report: {report:?}"
            );
            took
        };
        let run_exec = || {
            forker::use_helper(false);
            let took = run_trial();
            forker::use_helper(true);
            took
        };
        if i % 2 == 0 {
            via_trial.push(run_trial());
            via_spawn.push(run_probe());
            via_exec.push(run_exec());
        } else {
            via_exec.push(run_exec());
            via_spawn.push(run_probe());
            via_trial.push(run_trial());
        }
    }
    (
        Summary::new(via_trial),
        Summary::new(via_spawn),
        Summary::new(via_exec),
    )
}

/// `Config`'s default `trial_ticks`.
fn default_trial_ticks() -> u64 {
    Config::new(Vec::new(), String::new(), PathBuf::new()).trial_ticks
}

fn diff_ms(a: Duration, b: Duration) -> f64 {
    (a.as_secs_f64() - b.as_secs_f64()) * 1e3
}

fn run_pass(work: &Workdir, libs: &[PathBuf], scratch: &Path, mode: Mode, number: u64) -> Pass {
    let mut config = prebuilt_config(work, libs, &number.to_string());
    config.tick_period = TICK_PERIOD;
    config.probe = mode.trial;
    config.isolate = mode.isolate;
    let trial_ticks = if mode.trial { default_trial_ticks() } else { 0 };
    let (engine, events) = start_engine(config);

    // The start-up build loads v1.
    wait_for(&events, |_, e| match e {
        Event::FirstTick { version: 1, .. } => Some(()),
        _ => None,
    });

    let mut pass = Pass {
        mode,
        trial_ticks,
        installed: Vec::with_capacity(RELOADS),
        first_tick: Vec::with_capacity(RELOADS),
        exit_to_noticed: Vec::with_capacity(RELOADS),
        noticed_to_installed: Vec::with_capacity(RELOADS),
        loader: Vec::with_capacity(RELOADS),
        stayed_mapped: 0,
        wall: Duration::ZERO,
    };
    let started = Instant::now();
    for i in 0..RELOADS {
        let version = i as u64 + 2;
        engine.send(Command::Rebuild);
        let mut noticed_at = None;
        let mut swapped = None;
        let tick_time = wait_for(&events, |at, e| {
            match e {
                Event::BuildSucceeded { .. } => noticed_at = Some(at),
                Event::Swapped(Swap {
                    version: v,
                    since_build_exit,
                    ..
                }) if *v == version => swapped = Some((at, *since_build_exit)),
                Event::StayedMapped { .. } => pass.stayed_mapped += 1,
                Event::FirstTick {
                    version: v,
                    since_build_exit,
                } if *v == version => return Some(*since_build_exit),
                _ => {}
            }
            None
        });
        let noticed_at = noticed_at.expect("BuildSucceeded before the first tick");
        let (swapped_at, since_exit) = swapped.expect("Swapped before the first tick");
        let exited_at = swapped_at - since_exit;
        pass.exit_to_noticed
            .push(noticed_at.saturating_duration_since(exited_at));
        pass.noticed_to_installed
            .push(swapped_at.saturating_duration_since(noticed_at));
        pass.installed.push(since_exit);
        pass.first_tick.push(tick_time);
        pass.loader.push(loader_round_trip(
            &libs[i % libs.len()],
            scratch,
            number * 1_000_000 + i as u64,
        ));
    }
    pass.wall = started.elapsed();
    stop_engine(engine, events);
    pass
}

impl Pass {
    fn print(&self, title: &str) {
        println!(
            "{title} (trial_ticks = {}, probe = {}, isolate = {}; {RELOADS} reloads in {:.2} s)",
            self.trial_ticks,
            self.mode.trial,
            self.mode.isolate,
            self.wall.as_secs_f64()
        );
        let s = |v: &Vec<Duration>| Summary::new(v.clone());
        row("  build exited -> first tick", &s(&self.first_tick), 99.0);
        row(
            "  build exited -> swap installed",
            &s(&self.installed),
            99.0,
        );
        row(
            "    of which: exit -> build success said (caught up, read, copied)",
            &s(&self.exit_to_noticed),
            99.0,
        );
        let load_label = if self.mode.trial {
            "    of which: success said -> installed (incl. trial)"
        } else {
            "    of which: success said -> swap installed"
        };
        row(load_label, &s(&self.noticed_to_installed), 99.0);
        let slowest = (0..self.first_tick.len())
            .max_by_key(|&i| self.first_tick[i])
            .expect("at least one reload");
        println!(
            "  slowest reload: {} = exit noticed {} + load and hand-over {} + wait for the tick {}",
            ms(self.first_tick[slowest]),
            ms(self.exit_to_noticed[slowest]),
            ms(self.noticed_to_installed[slowest]),
            ms(self.first_tick[slowest].saturating_sub(self.installed[slowest])),
        );
        row(
            "  baseline: copy+dlopen+dlsym+dlclose (between reloads)",
            &s(&self.loader),
            99.0,
        );
        println!(
            "  retired versions left mapped after dlclose: {}",
            self.stayed_mapped
        );
    }
}
