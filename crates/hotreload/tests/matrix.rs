//! The hostile-plugin matrix: every behaviour of `support/hostile.rs` at
//! every place of a plugin, in every mode, each cell through a real
//! `hotreload` server of its own (see `matrix/cell.rs` for the scenario and
//! the rules). Each cell is judged on four counts: did the host die (or
//! hang), was the state lost, was something damaged, and is there a line
//! that says what happened.
//!
//! The normal test run takes a deterministic subset that has every
//! behaviour once and every place and mode several times; the whole matrix
//! runs with `cargo test -p hotreload --test matrix -- --ignored`
//! (RELIABILITY.md has its tables). `HOTRELOAD_MATRIX_REPORT=FILE` appends
//! each run's tables and notes to FILE; `HOTRELOAD_MATRIX_ONLY="segv @|fork
//! @ init"` keeps only the cells whose name holds one of the texts;
//! `HOTRELOAD_MATRIX_JOBS=N` runs N cells at once (2 by default).

mod support;

#[path = "matrix/cell.rs"]
mod cell;
#[path = "matrix/known.rs"]
mod known;
#[path = "matrix/table.rs"]
mod table;

use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cell::{Cell, MODES, Mode, User, Verdict};
use support::hostile::{BEHAVIOURS, Builds, PLACES, Plugin};
use table::Results;

/// The modes this binary can run, and those it cannot with why. The
/// isolated mode counts as soon as `hotreload --help` lists `--isolate`.
fn modes() -> (Vec<Mode>, Vec<(Mode, String)>) {
    let help = std::process::Command::new(support::binary())
        .arg("--help")
        .output()
        .expect("run hotreload --help");
    let isolate = String::from_utf8_lossy(&help.stdout).contains("--isolate");
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for &mode in MODES {
        if mode == Mode::Isolated && !isolate {
            skipped.push((
                mode,
                "`hotreload --help` does not list --isolate".to_owned(),
            ));
        } else {
            run.push(mode);
        }
    }
    (run, skipped)
}

fn key(cell: &Cell) -> (Mode, usize, usize) {
    let b = BEHAVIOURS
        .iter()
        .position(|b| b.name == cell.behaviour.name)
        .expect("a known behaviour");
    let p = PLACES
        .iter()
        .position(|p| *p == cell.place)
        .expect("a known place");
    (cell.mode, b, p)
}

/// Every cell.
fn all_cells(modes: &[Mode]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &mode in modes {
        for behaviour in BEHAVIOURS {
            for &place in PLACES {
                cells.push(Cell {
                    behaviour,
                    place,
                    mode,
                });
            }
        }
    }
    cells
}

/// Every behaviour once, at place `i mod places` in mode `i mod modes`:
/// every place and every mode several times, in many pairs.
fn subset(modes: &[Mode]) -> Vec<Cell> {
    BEHAVIOURS
        .iter()
        .enumerate()
        .map(|(i, behaviour)| Cell {
            behaviour,
            place: PLACES[i % PLACES.len()],
            mode: modes[i % modes.len()],
        })
        .collect()
}

fn only(cells: Vec<Cell>) -> Vec<Cell> {
    match std::env::var("HOTRELOAD_MATRIX_ONLY") {
        Ok(only) => cells
            .into_iter()
            .filter(|c| only.split('|').any(|o| c.name().contains(o.trim())))
            .collect(),
        Err(_) => cells,
    }
}

fn jobs() -> usize {
    std::env::var("HOTRELOAD_MATRIX_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2)
        .max(1)
}

/// Runs `items` on `jobs` threads, `work` on each.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = work(item);
                    done.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, result));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn run(cells: Vec<Cell>, skipped: Vec<(Mode, String)>) -> Results {
    let started = Instant::now();
    let jobs = jobs();
    let user = User::detect();
    let work = support::workdir();
    let builds = Builds::new(work.path());
    let mut plugins: Vec<Plugin> = cells.iter().flat_map(Cell::plugins).collect();
    plugins.sort_by_key(Plugin::file_name);
    plugins.dedup_by_key(|p| p.file_name());
    in_parallel(&plugins, jobs, |p| builds.library(p));
    eprintln!(
        "matrix: {} cells, {} plugins built in {:.1} s, {jobs} at a time, servers run as {}",
        cells.len(),
        plugins.len(),
        started.elapsed().as_secs_f64(),
        user.describe()
    );
    let count = AtomicUsize::new(0);
    let verdicts: Vec<Verdict> = in_parallel(&cells, jobs, |c| {
        let v = cell::run(c, &builds, user);
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        if !v.clean() || n.is_multiple_of(50) {
            eprintln!(
                "matrix {n}/{}: {} {}: {}",
                cells.len(),
                v.symbol(),
                c.name(),
                v.summary()
            );
        }
        if std::env::var_os("HOTRELOAD_MATRIX_TRANSCRIPTS").is_some() {
            eprintln!("--- {}\n{}\n---", c.name(), v.transcript);
        }
        v
    });
    let mut results = Results {
        skipped,
        ..Results::default()
    };
    for (cell, verdict) in cells.into_iter().zip(verdicts) {
        results.cells.insert(key(&cell), (cell, verdict));
    }
    results.elapsed = started.elapsed();
    results
}

fn report(results: &Results, title: &str) {
    for (mode, why) in &results.skipped {
        eprintln!("matrix: the {} mode was skipped: {why}", mode.name());
    }
    let report = results.report(title);
    eprintln!("{report}");
    if let Some(path) = std::env::var_os("HOTRELOAD_MATRIX_REPORT") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the report");
        writeln!(file, "{report}").expect("write the report");
    }
}

/// Fails for every cell that is not clean and not known to be so (see
/// `matrix/known.rs`); says which known cells came out clean.
fn check(results: &Results) {
    let mut unexpected = Vec::new();
    let mut now_clean = 0;
    for (cell, verdict) in results.cells.values() {
        match (verdict.clean(), known::why(cell)) {
            (false, None) => unexpected.push(format!(
                "{} {}: {}\n{}",
                verdict.symbol(),
                cell.name(),
                verdict.summary(),
                verdict.transcript
            )),
            (true, Some(_)) => now_clean += 1,
            _ => {}
        }
    }
    if now_clean > 0 {
        eprintln!("matrix: {now_clean} cells listed as known were clean this time");
    }
    assert!(
        unexpected.is_empty(),
        "{} cells are not clean and not known to be:\n{}",
        unexpected.len(),
        unexpected.join("\n\n")
    );
}

#[test]
fn a_subset_of_the_matrix() {
    let (modes, skipped) = modes();
    let results = run(only(subset(&modes)), skipped);
    report(&results, "The matrix, subset");
    check(&results);
}

#[test]
#[ignore = "the whole matrix takes minutes; run it with --ignored"]
fn the_whole_matrix() {
    let (modes, skipped) = modes();
    let results = run(only(all_cells(&modes)), skipped);
    report(&results, "The whole matrix");
    check(&results);
}
