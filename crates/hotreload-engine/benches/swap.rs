//! Build exited → first tick of the new code, over 200 reloads of prebuilt
//! libraries. The build command only copies the next prebuilt variant into
//! place, and reloads are asked for with `Command::Rebuild`, so the figure is
//! the engine's own work: collect the build's exit, read, precheck, shadow
//! copy, load, check, hand over, install at a tick boundary, first tick.
//! Targets: p50 ≤ 0.5 ms, p99 ≤ 2 ms.

mod common;

use std::time::Duration;

use hotreload_engine::event::Swap;
use hotreload_engine::{Command, Config, Event};

use common::{
    Summary, Workdir, header, loader_round_trip, ms, round_robin_build, row, start_engine,
    stop_engine, verdict, wait_for,
};

const RELOADS: usize = 200;
const VARIANTS: u32 = 2;
const TICK_PERIOD: Duration = Duration::from_micros(100);
const TARGET_P50: Duration = Duration::from_micros(500);
const TARGET_P99: Duration = Duration::from_millis(2);

fn main() {
    header(
        "swap",
        "build exited -> new code installed / first tick, prebuilt libraries",
    );
    let work = Workdir::new();
    let libs = work.compile_variants(VARIANTS);

    // The baseline, the loader alone on the same files, is measured between
    // reloads while the engine runs, so both see the same machine.
    let scratch = Workdir::new();
    loader_round_trip(&libs[0], scratch.path(), u64::MAX);
    let mut loader = Vec::with_capacity(RELOADS);

    // A watched file that never changes, in a folder of its own, so that no
    // file-system event reaches the engine during the run.
    let watched_dir = work.path().join("watched");
    std::fs::create_dir(&watched_dir).expect("create the watched folder");
    let watched = watched_dir.join("never-changes.c");
    std::fs::write(&watched, "/* never changes */\n").expect("write the watched file");

    let mut config = Config::new(
        vec![watched],
        round_robin_build(&libs, "logic.so"),
        work.path().join("logic.so"),
    );
    config.build_dir = work.path().to_path_buf();
    config.tick_period = TICK_PERIOD;
    let (engine, events) = start_engine(config);

    // The start-up build loads v1.
    wait_for(&events, |_, e| match e {
        Event::FirstTick { version: 1, .. } => Some(()),
        _ => None,
    });

    let mut installed = Vec::with_capacity(RELOADS);
    let mut first_tick = Vec::with_capacity(RELOADS);
    // The swap split at the reload thread's `BuildSucceeded`: before it, the
    // build's exit reaching the reload thread; after it, read, precheck,
    // copy, load, check and the hand-over to the tick thread.
    let mut exit_to_noticed = Vec::with_capacity(RELOADS);
    let mut noticed_to_installed = Vec::with_capacity(RELOADS);
    let mut stayed_mapped = 0;
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
                Event::StayedMapped { .. } => stayed_mapped += 1,
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
        exit_to_noticed.push(noticed_at.saturating_duration_since(exited_at));
        noticed_to_installed.push(swapped_at.saturating_duration_since(noticed_at));
        installed.push(since_exit);
        first_tick.push(tick_time);
        loader.push(loader_round_trip(
            &libs[i % libs.len()],
            scratch.path(),
            i as u64,
        ));
    }
    let loader = Summary::new(loader);
    stop_engine(engine, events);

    let slowest = (0..RELOADS)
        .max_by_key(|&i| first_tick[i])
        .expect("at least one reload");
    let slowest_split = format!(
        "slowest reload: {} = exit noticed {} + load and hand-over {} + wait for the tick {}",
        ms(first_tick[slowest]),
        ms(exit_to_noticed[slowest]),
        ms(noticed_to_installed[slowest]),
        ms(first_tick[slowest].saturating_sub(installed[slowest])),
    );
    let installed = Summary::new(installed);
    let first_tick = Summary::new(first_tick);

    println!(
        "method: {RELOADS} reloads via Command::Rebuild; build = `sh -c` round robin `cp` of \
         {VARIANTS} prebuilt variants; tick period {} us",
        TICK_PERIOD.as_micros()
    );
    row("build exited -> first tick", &first_tick, 99.0);
    row("build exited -> swap installed", &installed, 99.0);
    row(
        "  of which: exit -> reload thread notices",
        &Summary::new(exit_to_noticed),
        99.0,
    );
    row(
        "  of which: notices -> swap installed",
        &Summary::new(noticed_to_installed),
        99.0,
    );
    println!("{slowest_split}");
    row(
        "baseline: copy+dlopen+dlsym+dlclose (between reloads)",
        &loader,
        99.0,
    );
    println!(
        "target (build exited -> first tick): p50 <= {}, p99 <= {} -> p50 {}, p99 {}",
        ms(TARGET_P50),
        ms(TARGET_P99),
        verdict(first_tick.p50() <= TARGET_P50),
        verdict(first_tick.pct(99.0) <= TARGET_P99),
    );
    println!(
        "same target against swap installed (no tick-period wait): p50 {}, p99 {}",
        verdict(installed.p50() <= TARGET_P50),
        verdict(installed.pct(99.0) <= TARGET_P99),
    );
    println!("retired versions left mapped after dlclose: {stayed_mapped}");
    println!("anchor (DESIGN.md, not measured in this run): cr.h reload 0.15 ms median, serial");
}
