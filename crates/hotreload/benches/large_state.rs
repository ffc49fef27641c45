//! Tick lateness with a large state while it is reloaded: the real
//! `hotreload` server on a 64 MiB state of non-zero bytes at `--tick-ms 1`,
//! a save every 50 ms for 10 s (10,000 ticks), each save a rename that
//! flips the build between two prebuilt variants (so the build is a `cp`).
//! Two plugins: one whose variants share a layout, and one whose variants
//! move every field by 4 bytes, so that every swap migrates the whole state.
//! Each is run in process and isolated (`--isolate`), with trials off and
//! with the default trial, beside the same loop without reloads as the
//! baseline, interleaved round by round (the order rotated each round).
//!
//! Per configuration: the median over rounds of the latest tick start after
//! its deadline (and the spread), the ticks skipped in all, the swaps per
//! run against the saves (and the builds found to be the running version
//! again: the variants alternate, so saves gathered in pairs come back to
//! it, "unchanged"), and the time from a build's exit to its swap (p50 and
//! p99 over every swap of every round). The figures are the server's own:
//! its closing `[tick]` line and its `[reload] swapped` lines.
//!
//! `HOTRELOAD_BENCH_MIB` (64), `HOTRELOAD_BENCH_ROUNDS` (3),
//! `HOTRELOAD_BENCH_SECONDS` (10) and `HOTRELOAD_BENCH_LAYOUTS` (`same,new`)
//! change the scenario; `HOTRELOAD_BENCH_ONLY=isolated` keeps the
//! configurations whose names contain the word; `HOTRELOAD_BENCH_BEFORE=PATH`
//! runs every configuration with that build of `hotreload` too, in the same
//! rounds (named `before:`), for a change's before and after.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::large_state::{
    LAYOUTS, NEW_LAYOUT, Run, SAME_LAYOUT, SOURCE, prebuild, run_idle, run_program,
};

/// 50 ms between saves, as in the scenario.
const GAP: Duration = Duration::from_millis(50);

struct Config {
    name: String,
    program: PathBuf,
    trials: bool,
    isolate: bool,
    reloads: bool,
    runs: Vec<Run>,
}

/// Every configuration, for each build of `hotreload` in `programs`
/// (labelled), whose name contains `only`.
fn configs(programs: &[(&str, PathBuf)], only: &str) -> Vec<Config> {
    let kinds = [
        ("baseline: in process, no reloads", false, false, false),
        ("in process, trials off", false, false, true),
        ("in process, default trial", true, false, true),
        ("baseline: isolated, no reloads", false, true, false),
        ("isolated, trials off", false, true, true),
        ("isolated, default trial", true, true, true),
    ];
    let mut configs = Vec::new();
    for (name, trials, isolate, reloads) in kinds {
        if !name.contains(only) {
            continue;
        }
        for (label, program) in programs {
            configs.push(Config {
                name: format!("{label}{name}"),
                program: program.clone(),
                trials,
                isolate,
                reloads,
                runs: vec![],
            });
        }
    }
    configs
}

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}: expected a whole number, found {value:?}")),
        Err(_) => default,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((values.len() - 1) as f64 * p).round() as usize;
    values[rank]
}

fn main() {
    let mib = env_number("HOTRELOAD_BENCH_MIB", 64);
    let rounds = env_number("HOTRELOAD_BENCH_ROUNDS", 3);
    let seconds = env_number("HOTRELOAD_BENCH_SECONDS", 10);
    let saves = seconds * 1000 / GAP.as_millis() as usize;
    let layouts = std::env::var("HOTRELOAD_BENCH_LAYOUTS").unwrap_or_else(|_| "same,new".into());
    let only = std::env::var("HOTRELOAD_BENCH_ONLY").unwrap_or_default();
    let mut programs = vec![("", support::binary())];
    if let Some(before) = std::env::var_os("HOTRELOAD_BENCH_BEFORE") {
        programs.push(("before: ", PathBuf::from(before)));
    }
    for layout in layouts.split(',') {
        let (title, source, variants) = match layout {
            "same" => ("one layout", SOURCE, SAME_LAYOUT),
            "new" => ("a new layout at every save", LAYOUTS, NEW_LAYOUT),
            other => panic!("HOTRELOAD_BENCH_LAYOUTS: expected same or new, found {other:?}"),
        };
        let tmp = support::workdir();
        let dir = tmp.path();
        prebuild(dir, source, mib, variants);
        let mut configs = configs(&programs, &only);
        for round in 0..rounds {
            let count = configs.len();
            for k in 0..count {
                let config = &mut configs[(k + round) % count];
                let extra: &[&str] = if config.isolate { &["--isolate"] } else { &[] };
                let r = if config.reloads {
                    run_program(&config.program, dir, config.trials, extra, saves, GAP)
                } else {
                    run_idle(&config.program, dir, extra, GAP * saves as u32)
                };
                eprintln!(
                    "  round {}: {}: latest start {:.1} ms, {} skipped, {} swapped, {} unchanged",
                    round + 1,
                    config.name,
                    r.latest_ms,
                    r.skipped,
                    r.swapped,
                    r.unchanged
                );
                config.runs.push(r);
            }
        }
        println!(
            "\n{mib} MiB, {title}, 1 ms ticks, {saves} saves {} ms apart ({seconds} s), \
             {rounds} interleaved rounds",
            GAP.as_millis()
        );
        println!(
            "{:<44} {:>8} {:>15} {:>8} {:>9} {:>9} {:>14}",
            "", "ticks", "latest start", "skipped", "swapped", "unchanged", "after build"
        );
        for config in &configs {
            let mut latest: Vec<f64> = config.runs.iter().map(|r| r.latest_ms).collect();
            let low = latest.iter().copied().fold(f64::INFINITY, f64::min);
            let high = latest.iter().copied().fold(0.0, f64::max);
            let mut ticks: Vec<f64> = config.runs.iter().map(|r| r.ticks as f64).collect();
            let skipped: i64 = config.runs.iter().map(|r| r.skipped).sum();
            let mut swapped: Vec<f64> = config.runs.iter().map(|r| r.swapped as f64).collect();
            let mut unchanged: Vec<f64> = config.runs.iter().map(|r| r.unchanged as f64).collect();
            let mut after: Vec<f64> = config
                .runs
                .iter()
                .flat_map(|r| r.after_build_ms.iter().copied())
                .collect();
            let (swaps, unchanged) = if config.reloads {
                (
                    format!("{:.0}/{saves}", median(&mut swapped)),
                    format!("{:.0}", median(&mut unchanged)),
                )
            } else {
                ("-".into(), "-".into())
            };
            let after = if after.is_empty() {
                "-".into()
            } else {
                format!(
                    "{:.0}/{:.0} ms",
                    percentile(&mut after, 0.5),
                    percentile(&mut after, 0.99)
                )
            };
            println!(
                "{:<44} {:>8.0} {:>6.1} ({:.1}-{:.1}) {:>8} {:>9} {:>9} {:>14}",
                config.name,
                median(&mut ticks),
                median(&mut latest),
                low,
                high,
                skipped,
                swaps,
                unchanged,
                after
            );
        }
    }
    println!(
        "\n(latest start: median over rounds, ms after the deadline, and the spread; after build: p50/p99 ms from the build's exit to the swap)"
    );
}
