//! A long run: 1,000 reloads and 200 faults in live code in one engine, then
//! a shorter run with trials on, where the faulting builds are refused by
//! the trial instead. It counts what the engine reports and watches what the
//! process holds (open files, mappings, plugin copies mapped, files in the
//! shadow folder, threads, resident memory) at checkpoints; it panics if any
//! of them grows with the number of reloads.
//!
//! Five prebuilt variants are copied into place in turn by the build command
//! (as in `swap.rs`); reloads are asked for with `Command::Rebuild`. Every
//! fifth variant faults (SIGSEGV) on the second tick it runs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use hotreload_engine::event::{FaultReport, Recovery, StateMoment, Swap};
use hotreload_engine::{Command, Event, Rejection, StopReason};

use common::{
    Stamped, Summary, WAIT, Workdir, header, plugin_source, prebuilt_config, row, start_engine,
};

/// Variants in the round robin; the last one faults.
const VARIANTS: u32 = 5;
const FAULTY: u32 = VARIANTS - 1;
const TICK_PERIOD: Duration = Duration::from_millis(1);
/// Time given to the reload thread to unload retired versions before a
/// checkpoint is read.
const SETTLE: Duration = Duration::from_millis(10);
/// The shadow folder's name starts with this (see `ShadowDir::create`).
const SHADOW_PREFIX: &str = "hotreload-";

/// How long after the last engine's `join` the process may take to be back
/// to the threads and open files it had before any engine.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// The probe reaper thread's name as `/proc` gives it (cut at 15 bytes).
const REAPER_COMM: &str = "hotreload-probe";

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim_end().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Allowed growth from a phase's first checkpoint to its last.
const MAX_EXTRA_FDS: i64 = 4;
const MAX_EXTRA_THREADS: i64 = 2;
/// Mappings that are not plugin copies (thread stacks, malloc arenas).
const MAX_EXTRA_OTHER_MAPS: i64 = 16;
/// Resident memory, from the checkpoint after the first 100 reloads (when
/// `keep_versions` libraries are loaded and every buffer has been used) to
/// the last: 2 MiB is ~2 KiB per reload over 900 reloads.
const MAX_EXTRA_RSS_KIB: i64 = 2048;

struct Phase {
    name: &'static str,
    reloads: u64,
    trial_ticks: u64,
    checkpoint_every: u64,
}

const PHASES: [Phase; 2] = [
    Phase {
        name: "phase 1: trials off, faults in live code",
        reloads: 1000,
        trial_ticks: 0,
        checkpoint_every: 100,
    },
    Phase {
        name: "phase 2: default trial, faulting builds refused",
        reloads: 100,
        trial_ticks: 3,
        checkpoint_every: 25,
    },
];

/// What the process holds at one moment.
#[derive(Clone, Debug)]
struct Checkpoint {
    label: String,
    fds: i64,
    /// Open files that point into the shadow folder.
    fds_shadow: i64,
    maps: i64,
    /// Mapping lines that mention the shadow folder.
    maps_shadow: i64,
    /// Distinct plugin copies mapped.
    libs_mapped: i64,
    /// Entries in the shadow folder; -1 once it is gone.
    shadow_files: i64,
    threads: i64,
    rss_kib: i64,
}

#[derive(Default)]
struct Counts {
    swapped: u64,
    faults: u64,
    rolled_back: u64,
    paused: u64,
    rejected_by_trial: u64,
    stayed_mapped: u64,
    stalled: u64,
    trials_off: Option<String>,
    notices: Vec<String>,
}

struct Outcome {
    counts: Counts,
    checkpoints: Vec<Checkpoint>,
    swap: Vec<Duration>,
    wall: Duration,
    exit_code: i32,
    /// The state's tick counter and the engine's tick count at exit.
    final_state: Option<(u64, u64)>,
    keep_versions: usize,
    /// Good versions' libraries kept in the shadow folder for `rollback`.
    keep_on_disk: usize,
    shadow: PathBuf,
}

fn main() {
    // The engine runs each new build's trial in this executable re-run as a
    // probe; in that child this runs the trial and exits.
    hotreload_engine::run_probe_if_requested();
    header(
        "soak",
        "1,000 reloads and 200 faults in one run; what the process holds over time",
    );
    let work = Workdir::new();
    // A private temporary folder, so that the engine's shadow folder is the
    // only `hotreload-*` entry in it and can be found and watched.
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).expect("create the private temporary folder");
    // SAFETY: nothing else runs yet: no thread has been started by this
    // process, so nothing can read the environment while it changes.
    unsafe { std::env::set_var("TMPDIR", &tmp) };

    let mut libs: Vec<PathBuf> = (0..FAULTY)
        .map(|v| work.compile_plugin(&format!("v{v}"), v))
        .collect();
    libs.push(work.compile_source(&format!("v{FAULTY}"), &faulty_source(FAULTY)));

    let before = checkpoint("before any engine", &tmp, None);
    let maps_before = maps_by_kind();
    let started = Instant::now();
    let outcomes: Vec<Outcome> = PHASES
        .iter()
        .map(|phase| run_phase(phase, &work, &libs, &tmp))
        .collect();
    // The file watcher's own thread (notify's inotify event loop) is told to
    // stop when the engine drops it, but nobody waits for it: it closes its
    // descriptors and exits shortly after `join` returns. Wait for that,
    // within a bound, and say how long it took.
    let mut early_problems = Vec::new();
    // The probe reaper is one thread for the whole process, started with
    // the first trial (reaping off the trials' path); it never grows.
    let reapers = thread_names()
        .iter()
        .filter(|n| n.as_str() == REAPER_COMM)
        .count() as i64;
    if reapers > 1 {
        early_problems.push(format!(
            "after exit: {reapers} probe reaper threads, expected one"
        ));
    }
    let expected_threads = before.threads + reapers;
    // ...and the ready probe it fetched for the next trial: one socket.
    let expected_fds = before.fds + reapers;
    let joined_at = Instant::now();
    let mut after = checkpoint("after both engines stopped", &tmp, None);
    while (after.threads != expected_threads || after.fds != expected_fds)
        && joined_at.elapsed() < EXIT_GRACE
    {
        std::thread::sleep(Duration::from_millis(1));
        after = checkpoint("after both engines stopped", &tmp, None);
    }
    let back_after = joined_at.elapsed();
    let maps_after = maps_by_kind();
    let total = started.elapsed();

    println!(
        "method: build = `sh -c` round robin `cp` of {VARIANTS} prebuilt variants, reloads via \
         Command::Rebuild, each waited for (first tick, fault or rejection) before the next; \
         variant {FAULTY} of every {VARIANTS} faults (SIGSEGV) on its 2nd tick; tick period {} ms; \
         checkpoints read {} ms after a reload settled; private TMPDIR",
        TICK_PERIOD.as_millis(),
        SETTLE.as_millis()
    );
    let mut problems = early_problems;
    for (phase, outcome) in PHASES.iter().zip(&outcomes) {
        report(phase, outcome, &mut problems);
    }
    println!("whole process (both phases, {:.1} s):", total.as_secs_f64());
    print_table(&[before.clone(), after.clone()]);
    println!(
        "  threads and open files back to the level before any engine: {}",
        if after.threads == expected_threads && after.fds == expected_fds {
            format!(
                "{:.1} ms after the last engine's join returned",
                back_after.as_secs_f64() * 1e3
            )
        } else {
            format!("not within {} ms", EXIT_GRACE.as_millis())
        }
    );
    print_new_maps(&maps_before, &maps_after);
    if after.libs_mapped != 0 || after.maps_shadow != 0 {
        problems.push(format!(
            "after exit: {} plugin copies still mapped",
            after.libs_mapped
        ));
    }
    if after.fds > before.fds + MAX_EXTRA_FDS {
        problems.push(format!(
            "after exit: {} open files, {} before the first engine",
            after.fds, before.fds
        ));
    }
    if after.threads != expected_threads {
        problems.push(format!(
            "after exit: {} threads, {} before the first engine",
            after.threads, before.threads
        ));
    }
    for outcome in &outcomes {
        if outcome.shadow.exists() {
            problems.push(format!(
                "the shadow folder {} outlived its engine",
                outcome.shadow.display()
            ));
        }
    }
    if problems.is_empty() {
        println!("verdict: nothing grew with the number of reloads -> PASS");
    } else {
        for p in &problems {
            println!("problem: {p}");
        }
        panic!("soak: {} problem(s), listed above", problems.len());
    }
}

/// A variant that segfaults on the second tick it runs (a counter in the
/// library's own data, fresh in every loaded copy).
fn faulty_source(variant: u32) -> String {
    let good = plugin_source(variant);
    let step = format!("    s->score += {};\n", variant + 1);
    assert!(good.contains(&step), "plugin_source changed shape");
    good.replace(
        "static void bench_tick(",
        "static unsigned long ticks_in_this_copy;\n\nstatic void bench_tick(",
    )
    .replace(
        &step,
        &format!(
            "{step}    if (++ticks_in_this_copy == 2) {{\n        \
             volatile int* volatile nowhere = 0;\n        *nowhere = 1;\n    }}\n"
        ),
    )
}

fn run_phase(phase: &Phase, work: &Workdir, libs: &[PathBuf], tmp: &Path) -> Outcome {
    // Every phase starts the round robin at v0: build n copies variant n % 5.
    let mut config = prebuilt_config(work, libs, &phase.trial_ticks.to_string());
    config.tick_period = TICK_PERIOD;
    config.trial_ticks = phase.trial_ticks;
    let keep_versions = config.keep_versions;
    let keep_on_disk = config.keep_on_disk;
    let (engine, events) = start_engine(config);

    let mut counts = Counts::default();
    let mut version = 1;
    next(
        &events,
        &mut counts,
        "the first version's first tick",
        |e| matches!(e, Event::FirstTick { version: 1, .. }),
    );
    let shadow = find_shadow(tmp);
    let mut checkpoints = vec![checkpoint("start (v1 running)", tmp, Some(&shadow))];
    let mut swap = Vec::with_capacity(phase.reloads as usize);

    let started = Instant::now();
    for i in 1..=phase.reloads {
        let faulty = i % u64::from(VARIANTS) == u64::from(FAULTY);
        engine.send(Command::Rebuild);
        if faulty && phase.trial_ticks > 0 {
            next(&events, &mut counts, "the trial's rejection", |e| {
                matches!(e, Event::Rejected { .. })
            });
        } else {
            version += 1;
            let v = version;
            let at_swap = next(
                &events,
                &mut counts,
                "the swap",
                |e| matches!(e, Event::Swapped(Swap { version, .. }) if *version == v),
            );
            if let Event::Swapped(s) = at_swap {
                swap.push(s.since_build_exit);
            }
            next(
                &events,
                &mut counts,
                "the first tick",
                |e| matches!(e, Event::FirstTick { version, .. } if *version == v),
            );
            if faulty {
                next(
                    &events,
                    &mut counts,
                    "the fault",
                    |e| matches!(e, Event::Fault(FaultReport { version, .. }) if *version == v),
                );
            }
        }
        if i % phase.checkpoint_every == 0 {
            let settle_until = Instant::now() + SETTLE;
            settle(&events, &mut counts, settle_until);
            checkpoints.push(checkpoint(&format!("{i} reloads"), tmp, Some(&shadow)));
        }
    }
    let wall = started.elapsed();

    engine.stop(StopReason::Requested);
    let exit_code = engine.join();
    let mut final_state = None;
    while let Ok((_, event)) = events.recv_timeout(WAIT) {
        if let Event::State(report) = &event
            && report.moment == StateMoment::Final
        {
            let counter = report
                .head
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes);
            final_state = counter.map(|c| (c, report.tick));
        }
        let done = matches!(event, Event::Exited { .. });
        count(&mut counts, event);
        if done {
            break;
        }
    }
    Outcome {
        counts,
        checkpoints,
        swap,
        wall,
        exit_code,
        final_state,
        keep_versions,
        keep_on_disk,
        shadow,
    }
}

/// Waits for the event `want` accepts, counting everything on the way.
fn next(
    events: &Receiver<Stamped>,
    counts: &mut Counts,
    what: &str,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + WAIT;
    loop {
        let event = match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((_, event)) => event,
            Err(RecvTimeoutError::Timeout) => panic!("no {what} within {WAIT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the engine stopped before {what}"),
        };
        let found = want(&event);
        count(counts, event.clone());
        if found {
            return event;
        }
    }
}

/// Counts whatever arrives until `until`.
fn settle(events: &Receiver<Stamped>, counts: &mut Counts, until: Instant) {
    while let Ok((_, event)) = events.recv_timeout(until.saturating_duration_since(Instant::now()))
    {
        count(counts, event);
    }
}

fn count(counts: &mut Counts, event: Event) {
    match event {
        Event::Swapped(_) => counts.swapped += 1,
        Event::Fault(f) => {
            counts.faults += 1;
            match f.recovery {
                Recovery::RolledBack { .. } => counts.rolled_back += 1,
                Recovery::Paused { .. } => counts.paused += 1,
                // The soak's plugins have no hooks and no migrations.
                Recovery::Exiting { .. }
                | Recovery::DescribeOff
                | Recovery::SwapWentAhead
                | Recovery::Refused { .. }
                | Recovery::Unloaded => {}
            }
        }
        Event::Rejected {
            reason: Rejection::Faulted(why),
            ..
        } if why.starts_with("trial") => counts.rejected_by_trial += 1,
        Event::Rejected { reason, detail, .. } => {
            panic!("a build was rejected other than by its trial: {reason} {detail}")
        }
        Event::BuildFailed(f) => panic!("a bench build failed: {}: {}", f.status, f.output),
        Event::StayedMapped { .. } => counts.stayed_mapped += 1,
        Event::Stalled { .. } => counts.stalled += 1,
        Event::TrialsOff(why) => counts.trials_off = Some(why),
        Event::WatchNotice(text) => counts.notices.push(text),
        _ => {}
    }
}

/// The engine's shadow folder: the only `hotreload-*` entry in the private
/// temporary folder (the previous phase's was removed when it stopped).
fn find_shadow(tmp: &Path) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(tmp)
        .expect("list the private temporary folder")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(SHADOW_PREFIX))
        .map(|e| e.path())
        .collect();
    match found.as_slice() {
        [one] => one.clone(),
        other => panic!(
            "expected one shadow folder in {}, found {other:?}",
            tmp.display()
        ),
    }
}

/// Reads what the process holds. `tmp` is the private temporary folder:
/// anything under `tmp/hotreload-*` belongs to an engine's shadow folder
/// (this phase's `shadow`, or one that should be gone).
fn checkpoint(label: &str, tmp: &Path, shadow: Option<&Path>) -> Checkpoint {
    let pattern = tmp.join(SHADOW_PREFIX).to_string_lossy().into_owned();
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let mut maps_shadow = 0;
    let mut libs = BTreeSet::new();
    for line in maps.lines() {
        if line.contains(pattern.as_str()) {
            maps_shadow += 1;
            if let Some(path) = line.split_whitespace().nth(5) {
                libs.insert(path.to_owned());
            }
        }
    }
    let mut fds = 0;
    let mut fds_shadow = 0;
    for entry in std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(Result::ok)
    {
        fds += 1;
        if let Ok(target) = std::fs::read_link(entry.path())
            && target.to_string_lossy().contains(pattern.as_str())
        {
            fds_shadow += 1;
        }
    }
    let shadow_files = match shadow.map(std::fs::read_dir) {
        Some(Ok(dir)) => dir.count() as i64,
        _ => -1,
    };
    let threads = std::fs::read_dir("/proc/self/task")
        .expect("list /proc/self/task")
        .count() as i64;
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    Checkpoint {
        label: label.to_owned(),
        fds,
        fds_shadow,
        maps: maps.lines().count() as i64,
        maps_shadow,
        libs_mapped: libs.len() as i64,
        shadow_files,
        threads,
        rss_kib,
    }
}

/// Mappings counted by what they map (the file, `[stack]`, or `anon`) and
/// their size.
fn maps_by_kind() -> BTreeMap<(String, u64), i64> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let mut kinds = BTreeMap::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let range = fields.next().unwrap_or("");
        let size = range
            .split_once('-')
            .and_then(|(a, b)| {
                Some(u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?)
            })
            .unwrap_or(0);
        let what = fields.nth(4).unwrap_or("anon").to_owned();
        *kinds.entry((what, size)).or_insert(0) += 1;
    }
    kinds
}

/// Which mappings the engines left behind, by kind and size.
fn print_new_maps(before: &BTreeMap<(String, u64), i64>, after: &BTreeMap<(String, u64), i64>) {
    let mut left: Vec<String> = after
        .iter()
        .filter_map(|(kind, n)| {
            let extra = n - before.get(kind).copied().unwrap_or(0);
            (extra > 0).then(|| format!("{} x {} KiB {}", extra, kind.1 / 1024, kind.0))
        })
        .collect();
    left.sort();
    println!(
        "  mappings after exit that were not there before: {}",
        if left.is_empty() {
            "none".to_owned()
        } else {
            left.join("; ")
        }
    );
}

fn print_table(rows: &[Checkpoint]) {
    println!(
        "  {:<28} {:>5} {:>9} {:>6} {:>11} {:>11} {:>12} {:>8} {:>9}",
        "checkpoint",
        "fds",
        "fds→shdw",
        "maps",
        "maps→shdw",
        "libs mapped",
        "shadow files",
        "threads",
        "RSS KiB"
    );
    for c in rows {
        let files = if c.shadow_files < 0 {
            "gone".to_owned()
        } else {
            c.shadow_files.to_string()
        };
        println!(
            "  {:<28} {:>5} {:>9} {:>6} {:>11} {:>11} {:>12} {:>8} {:>9}",
            c.label,
            c.fds,
            c.fds_shadow,
            c.maps,
            c.maps_shadow,
            c.libs_mapped,
            files,
            c.threads,
            c.rss_kib
        );
    }
}

fn report(phase: &Phase, outcome: &Outcome, problems: &mut Vec<String>) {
    let c = &outcome.counts;
    let faulty = phase.reloads / u64::from(VARIANTS);
    println!(
        "{} ({} reloads, trial_ticks = {}, {:.2} s, {:.2} ms per reload)",
        phase.name,
        phase.reloads,
        phase.trial_ticks,
        outcome.wall.as_secs_f64(),
        outcome.wall.as_secs_f64() * 1e3 / phase.reloads as f64
    );
    println!(
        "  events: Swapped {} (start-up included), Fault {} (rolled back {}, paused {}), \
         rejected by the trial {}, StayedMapped {}, Stalled {}; exit code {}",
        c.swapped,
        c.faults,
        c.rolled_back,
        c.paused,
        c.rejected_by_trial,
        c.stayed_mapped,
        c.stalled,
        outcome.exit_code
    );
    for n in &c.notices {
        println!("  engine notice: {n}");
    }
    if let Some(why) = &c.trials_off {
        println!("  engine notice: {why}");
    }
    if !outcome.swap.is_empty() {
        row(
            "  build exited -> swap installed",
            &Summary::new(outcome.swap.clone()),
            99.0,
        );
    }
    match outcome.final_state {
        Some((counter, ticks)) => println!(
            "  at exit: the state's tick counter {counter}, ticks the engine ran {ticks} -> {}",
            match (counter == ticks, c.faults) {
                (true, 0) => "equal",
                (true, _) => "equal: every faulting tick was undone",
                (false, _) => "DIFFERENT",
            }
        ),
        None => println!("  at exit: no final state report"),
    }
    print_table(&outcome.checkpoints);

    let mut problem = |p: String| problems.push(format!("{}: {p}", phase.name));
    let (expect_swaps, expect_faults, expect_rejected) = if phase.trial_ticks > 0 {
        (phase.reloads - faulty + 1, 0, faulty)
    } else {
        (phase.reloads + 1, faulty, 0)
    };
    if c.swapped != expect_swaps || c.faults != expect_faults {
        problem(format!(
            "expected {expect_swaps} swaps and {expect_faults} faults, counted {} and {}",
            c.swapped, c.faults
        ));
    }
    if c.rolled_back != c.faults {
        problem(format!(
            "{} of {} faults were not rolled back",
            c.faults - c.rolled_back,
            c.faults
        ));
    }
    if c.rejected_by_trial != expect_rejected {
        problem(format!(
            "expected {expect_rejected} builds refused by the trial, counted {}",
            c.rejected_by_trial
        ));
    }
    if phase.trial_ticks > 0 && c.trials_off.is_some() {
        problem("trials did not run".into());
    }
    if outcome.exit_code != 0 {
        problem(format!("exit code {}", outcome.exit_code));
    }
    match outcome.final_state {
        Some((counter, ticks)) if counter == ticks => {}
        other => problem(format!(
            "the state's tick counter and the engine's tick count differ at exit: {other:?}"
        )),
    }
    let bound = outcome.keep_versions as i64 + 2;
    for cp in &outcome.checkpoints {
        if cp.libs_mapped > bound {
            problem(format!(
                "{}: {} plugin copies mapped, more than keep_versions + 2 = {bound}",
                cp.label, cp.libs_mapped
            ));
        }
        // Besides the loaded copies: the kept ones, the owner file and
        // the sync markers' folder.
        let files_bound = outcome.keep_versions as i64 + outcome.keep_on_disk as i64 + 2;
        if cp.shadow_files > files_bound {
            problem(format!(
                "{}: {} files in the shadow folder, more than keep_versions + keep_on_disk + 2 \
                 = {files_bound}",
                cp.label, cp.shadow_files
            ));
        }
    }
    let first = &outcome.checkpoints[0];
    let warm = &outcome.checkpoints[1.min(outcome.checkpoints.len() - 1)];
    let last = &outcome.checkpoints[outcome.checkpoints.len() - 1];
    let mut grew = |what: &str, from: &Checkpoint, a: i64, b: i64, max: i64| {
        if b - a > max {
            problem(format!(
                "{what} grew from {a} ({}) to {b} ({}), more than {max}",
                from.label, last.label
            ));
        }
    };
    grew("open files", first, first.fds, last.fds, MAX_EXTRA_FDS);
    grew(
        "threads",
        first,
        first.threads,
        last.threads,
        MAX_EXTRA_THREADS,
    );
    grew(
        "mappings other than plugin copies",
        first,
        first.maps - first.maps_shadow,
        last.maps - last.maps_shadow,
        MAX_EXTRA_OTHER_MAPS,
    );
    grew(
        "resident memory (KiB)",
        warm,
        warm.rss_kib,
        last.rss_kib,
        MAX_EXTRA_RSS_KIB,
    );
    println!(
        "  growth, first -> last checkpoint: fds {:+}, maps {:+} (plugin copies {:+}), threads {:+}, \
         RSS {:+} KiB ({:+} KiB since {})",
        last.fds - first.fds,
        last.maps - first.maps,
        last.maps_shadow - first.maps_shadow,
        last.threads - first.threads,
        last.rss_kib - first.rss_kib,
        last.rss_kib - warm.rss_kib,
        warm.label
    );
}
