//! Nothing on the tick thread grows with the state's size: a 64 MiB state
//! of non-zero bytes, ticking every millisecond, reloaded every 50 ms for
//! 50 saves (prebuilt libraries, so the build is a copy), with trials off
//! and on. No tick may be skipped, and the worst tick start stays within a
//! generous bound of the same loop's without reloads, measured first in the
//! same run. The figures are printed for the record. The same again with a
//! new layout at every save (the migration worked out off the tick
//! thread), and a check that what the ticks write meanwhile is carried.
//!
//! The same at 512 MiB is ignored by default (a debug build spends seconds
//! filling and copying it; CI has 2 cores): run it in release with
//! `cargo test --release -p hotreload --test large_state -- --ignored`.

mod support;

use std::time::Duration;

use support::ctl::ctl;
use support::large_state::{LAYOUTS, NEW_LAYOUT, Run, SAME_LAYOUT, SOURCE, prebuild, start};
use support::{Server, workdir};

/// One run of the scenario with 50 ms between saves.
fn run(dir: &std::path::Path, trials: bool, saves: usize) -> Run {
    support::large_state::run(dir, trials, &[], saves, Duration::from_millis(50))
}

#[test]
fn a_64_mib_state_at_1_ms_ticks_never_skips_a_tick_while_reloading() {
    reloads_never_skip_a_tick(SOURCE, SAME_LAYOUT, 64);
}

#[test]
#[ignore = "512 MiB: run in release by hand (see the module documentation)"]
fn a_512_mib_state_at_1_ms_ticks_never_skips_a_tick_while_reloading() {
    reloads_never_skip_a_tick(SOURCE, SAME_LAYOUT, 512);
}

/// Each save changes the layout: the migration of 64 MiB is worked out on
/// the reload thread while the running version goes on, and the swap
/// carries only the pages written meanwhile.
#[test]
fn a_64_mib_state_whose_layout_changes_at_every_save_never_holds_a_tick_up() {
    reloads_never_skip_a_tick(LAYOUTS, NEW_LAYOUT, 64);
}

#[test]
#[ignore = "512 MiB: run in release by hand; a tick can still start up to about 100 ms \
            late here during a migration's passes over memory the VM never touched \
            (BENCHMARKS.md, large state with a new layout)"]
fn a_512_mib_state_whose_layout_changes_at_every_save_never_holds_a_tick_up() {
    reloads_never_skip_a_tick(LAYOUTS, NEW_LAYOUT, 512);
}

/// The tests here take the machine one at a time: each compares the
/// latest tick start with reloads against the same loop's without, and a
/// neighbour's 64 MiB migrations running in between (two cores) would
/// make the two runs of one test unlike each other.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it leaves nothing to mend.
    ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn reloads_never_skip_a_tick(source: &str, variants: [&[&str]; 2], mib: usize) {
    let _alone = alone();
    let tmp = workdir();
    let dir = tmp.path();
    prebuild(dir, source, mib, variants);
    let migrates = variants[1].contains(&"-DLAYOUT_B");
    let quiet = run(dir, false, 0);
    let off = run(dir, false, 50);
    let on = run(dir, true, 50);
    eprintln!(
        "{mib} MiB at 1 ms{}: without reloads latest start {:.1} ms; 50 saves, trials off: {} \
         swapped, latest {:.1} ms, {} skipped; trials on: {} swapped, latest {:.1} ms, {} skipped",
        if migrates {
            ", a new layout at each save"
        } else {
            ""
        },
        quiet.latest_ms,
        off.swapped,
        off.latest_ms,
        off.skipped,
        on.swapped,
        on.latest_ms,
        on.skipped
    );
    // Generous: the machine is shared and the binary a debug build. With
    // trials the reload thread copies the whole state for each probe, a
    // chunk at a time, while the tick thread takes its snapshots (15 ms
    // late at worst at 64 MiB on an idle machine, 71 ms before takes were
    // let go first). A migration's swap, worked out ahead, holds a tick up
    // well under a millisecond (3-6 ms latest start in release at 64 MiB,
    // 1.5-2.3 ms without reloads; 132-152 ms when the swap applied the plan).
    for (name, r, room) in [
        ("no reloads", &quiet, 100.0),
        ("trials off", &off, 100.0),
        ("trials on", &on, 100.0),
    ] {
        assert_eq!(r.skipped, 0, "{name}: ticks skipped\n{}", r.transcript);
        assert!(
            r.latest_ms <= quiet.latest_ms + room,
            "{name}: a tick started {:.1} ms late, {:.1} ms without reloads\n{}",
            r.latest_ms,
            quiet.latest_ms,
            r.transcript
        );
    }
    // Every save reached the loader or was collapsed into a later one,
    // said. Trials hand over the kept image with only the changed pages
    // rewritten: all but the first are short (48 of 50 swapped here on an
    // idle machine at 64 MiB, 42 at 512 MiB). A migration of 64 MiB is
    // worked out in about 0.12 s in release (a second in a debug build), so
    // the saves that come meanwhile collapse into the next build; one of
    // 512 MiB in 2.5-3 s, so only one may land within the run.
    let least = match (migrates, mib) {
        (false, _) => 25,
        (true, 64) => 2,
        (true, _) => 1,
    };
    for (name, r) in [("trials off", &off), ("trials on", &on)] {
        assert!(
            r.swapped >= least,
            "{name}: {} swaps\n{}",
            r.swapped,
            r.transcript
        );
    }
}

/// What the running version writes while a large state's migration is
/// worked out is carried too: every loaded copy's first tick checks that
/// the counters of 64 MiB still add up to the total kept beside them,
/// after six migrations, each made while the ticks went on writing
/// thousands of pages.
#[test]
fn what_the_running_version_writes_while_a_migration_is_worked_out_is_carried() {
    migrations_carry_what_the_running_version_writes(&[]);
}

#[test]
fn in_isolated_mode_what_the_worker_writes_while_a_migration_is_worked_out_is_carried() {
    migrations_carry_what_the_running_version_writes(&["--isolate"]);
}

/// Every trial of a 64 MiB state starts from the running state exactly.
/// The builds keep the layout, so a probe, or in isolated mode the trial's
/// worker, maps the kept trial image privately, with only the pages written
/// since the last trial rewritten into it; each trial's first tick sums all
/// the counters and aborts if they are off, so a page missed or stale in
/// the image is a rejection, and the same in a live copy a fault.
#[test]
fn every_trial_of_a_large_state_starts_from_the_running_state_exactly() {
    let _alone = alone();
    let tmp = checked_layouts([&["-DCHECK=2"], &["-DCHECK=2", "-DSTRIDE=7927"]]);
    let dir = tmp.path();
    for extra in [&[][..], &["--isolate"]] {
        let mut server = start(dir, true, extra);
        server.expect_contains("[reload] loaded logic.so");
        for i in 0..6 {
            let pick = if i % 2 == 0 { "b\n" } else { "a\n" };
            support::editor::rename_over(&dir.join("pick.txt"), pick);
            let line = server.expect("a swap or a rejection", |l| {
                l.starts_with("[reload] swapped") || l.starts_with("[reload] rejected")
            });
            assert!(
                line.starts_with("[reload] swapped"),
                "{extra:?}: {line}\n{}",
                server.transcript()
            );
            // Ticks write between trials, so each trial's image differs.
            server.expect("a state line", |l| l.starts_with("[state]"));
        }
        assert_eq!(ctl(dir, &["stop"]).0, 0);
        server.wait();
        assert_eq!(
            server.count(|l| l.starts_with("[fault]")),
            0,
            "{extra:?}\n{}",
            server.transcript()
        );
    }
}

/// A work folder with the two variants of the 64 MiB [`LAYOUTS`] plugin,
/// built with `flags` each.
fn checked_layouts(flags: [&[&str]; 2]) -> tempfile::TempDir {
    let tmp = workdir();
    prebuild(tmp.path(), LAYOUTS, 64, flags);
    tmp
}

fn migrations_carry_what_the_running_version_writes(extra: &[&str]) {
    let _alone = alone();
    let tmp = checked_layouts([&["-DCHECK=1"], &["-DCHECK=1", "-DLAYOUT_B"]]);
    let dir = tmp.path();
    let args: Vec<&str> = ["--events", "json"].iter().chain(extra).copied().collect();
    let mut server = start(dir, true, &args);
    let swapped = |server: &mut Server| -> serde_json::Value {
        let line = server.expect("a swap", |l| l.contains(r#""kind":"swapped""#));
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        event["event"]["fields"].clone()
    };
    assert_eq!(swapped(&mut server)["first_load"], true);
    let mut ahead = Vec::new();
    for i in 0..6 {
        let pick = if i % 2 == 0 { "b\n" } else { "a\n" };
        support::editor::rename_over(&dir.join("pick.txt"), pick);
        let fields = swapped(&mut server);
        assert!(fields["migrated"].is_string(), "not migrated: {fields}");
        if let Some(pages) = fields["migration_pages_at_swap"].as_u64() {
            ahead.push(pages);
        }
    }
    // Seven copies loaded, each checked once, all in agreement.
    // A copy's first tick sums 64 MiB (tens of milliseconds, more on a
    // loaded machine): a `get` meanwhile is refused as unavailable, to be
    // asked again.
    let get = |field: &str| {
        let deadline = std::time::Instant::now() + support::WAIT;
        let (code, out, err) = loop {
            let (code, out, err) = ctl(dir, &["get", field]);
            if code == 0
                || !format!("{out}{err}").contains("refused (unavailable)")
                || std::time::Instant::now() > deadline
            {
                break (code, out, err);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(code, 0, "{out}{err}");
        out.trim()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("get {field}: {out}"))
    };
    // Waits until `field` reaches `at least` (each wait its own patience:
    // one deadline for the whole test ran out on a loaded machine, and the
    // waits after it returned at once).
    let wait_for = |field: &str, at_least: u64| {
        let deadline = std::time::Instant::now() + support::WAIT;
        while get(field) < at_least && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // `copies` loaded, each checked once, and none found the counters off.
    let all_agree = |server: &Server, copies: u64, what: &str| {
        wait_for("checks", copies);
        assert_eq!(get("checks"), copies, "{}", server.transcript());
        assert_eq!(get("bad"), 0, "{what}:\n{}", server.transcript());
    };
    all_agree(&server, 7, "a migration lost writes");
    eprintln!("pages the swaps carried themselves: {ahead:?}");
    // Worked out ahead (the swap carrying what changed meanwhile), not
    // applied whole at the swap: all six here on an idle machine.
    assert!(ahead.len() >= 3, "worked out ahead: {ahead:?}");
    // The last block's snapshot and history hold what was written into it
    // since (by the swap, and by the new code, in a worker or not): 100
    // ticks rewound, then one more copy loaded checks what they put back.
    wait_for("n", get("n") + 16 * 300);
    assert_eq!(ctl(dir, &["pause"]).0, 0);
    let (code, out, err) = ctl(dir, &["rewind", "100"]);
    assert_eq!(code, 0, "rewind: {out}{err}");
    assert_eq!(ctl(dir, &["resume"]).0, 0);
    support::editor::rename_over(&dir.join("pick.txt"), "b\n");
    assert!(swapped(&mut server)["migrated"].is_string());
    all_agree(
        &server,
        8,
        "the rewind put back a state whose counters disagree",
    );
    // A rollback to the version before, of the other layout, carries the
    // state back (worked out ahead in-process, as a swap's migration is);
    // the next copy loaded checks it.
    wait_for("n", get("n") + 16 * 300);
    let (code, out, err) = ctl(dir, &["rollback"]);
    assert_eq!(code, 0, "rollback: {out}{err}");
    assert!(out.contains("state carried"), "{out}");
    wait_for("n", get("n") + 16 * 300);
    support::editor::rename_over(&dir.join("pick.txt"), "a\n");
    support::editor::rename_over(&dir.join("pick.txt"), "b\n");
    assert!(swapped(&mut server)["migrated"].is_string());
    all_agree(
        &server,
        9,
        "the rollback carried a state whose counters disagree",
    );
    assert_eq!(ctl(dir, &["stop"]).0, 0);
    server.wait();
    // And no tick's writes were lost: each added 16 to `n`.
    let event = |kind: &str| -> serde_json::Value {
        let needle = format!(r#""kind":"{kind}""#);
        let lines = server.lines();
        let line = lines
            .iter()
            .rev()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no {kind} event:\n{}", server.transcript()));
        serde_json::from_str::<serde_json::Value>(line).expect("JSON")["event"]["fields"].clone()
    };
    let last = event("state");
    assert_eq!(last["moment"], "final", "{last}");
    let ticks = last["tick"].as_u64().expect("the final state's tick");
    let n = last["fields"]
        .as_str()
        .and_then(|f| support::field(f, "n"))
        .unwrap_or_else(|| panic!("no n: {last}"));
    let words = ((64u64 << 20) - 64) / 4;
    assert_eq!(
        n as u64,
        words + 16 * ticks,
        "ticks' writes were lost across the migrations: {last}"
    );
}
