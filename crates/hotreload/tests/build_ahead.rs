//! Building ahead: a lone save's build (and trial) starts before its settle
//! has passed, and nothing of it is acted on or said until the settle
//! confirms the change; a change in between stops that build, and the
//! change then builds once, as if nothing had started. Real binary, real
//! compiler, real saves; the settle is made long here (seconds) so that
//! "before the settle" is beyond doubt on a loaded machine. The build
//! command writes a line when it starts and another when it finishes.

mod support;

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::plugin::counter;
use support::{Server, compile, editor, workdir};

/// A settle long enough that a build started ahead is seen well before it.
const SETTLE_MS: &str = "2500";
const QUIET_MS: &str = "4000";

/// A server on `logic.c` whose build logs its start (the wall clock, in
/// ns) to `starts.log`, waits `pause`, copies a prebuilt `next.so` into
/// place and logs its end to `ends.log`; running the code tagged `v0`, with
/// `extra` flags. Variants `v0.so`… are prebuilt.
fn start(dir: &Path, variants: usize, pause: &str, extra: &[&str]) -> Server {
    for i in 0..variants {
        compile(dir, &counter(&format!("v{i}"), 1), &format!("v{i}.so"));
    }
    fs::copy(dir.join("v0.so"), dir.join("next.so")).expect("stage v0");
    fs::write(dir.join("logic.c"), "/* save 0 */\n").expect("write logic.c");
    let build = format!(
        "date +%s%N >> starts.log; sleep {pause}; cp next.so logic.so; echo end >> ends.log"
    );
    let mut args = vec![
        "--watch",
        "logic.c",
        "--build",
        &build,
        "--lib",
        "logic.so",
        "--tick-ms",
        "5",
        "--debounce-ms",
        QUIET_MS,
        "--settle-ms",
        SETTLE_MS,
    ];
    args.extend_from_slice(extra);
    let mut s = Server::start(dir, &args);
    s.expect_contains("[plugin] tag=v0 score=");
    s
}

/// When the build last started, by its log.
fn last_start(path: &Path) -> SystemTime {
    let text = fs::read_to_string(path).expect("read the build's log");
    let ns: u64 = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no start time in {text:?}"));
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn lines_of(path: &Path) -> usize {
    fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Waits until `path` (a log the build appends to) has `n` lines.
fn wait_for_lines(path: &Path, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while lines_of(path) < n {
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, waited {within:?} for {n}",
            path.display(),
            lines_of(path)
        );
        thread::sleep(Duration::from_millis(1));
    }
}

fn save(s: &Server, variant: usize) -> Instant {
    let dir = &s.dir;
    fs::copy(dir.join(format!("v{variant}.so")), dir.join("next.so")).expect("stage");
    let saved = Instant::now();
    editor::in_place(&dir.join("logic.c"), &format!("/* save {variant} */\n"));
    saved
}

#[test]
fn a_lone_save_is_built_and_tried_while_its_settle_passes_and_said_only_after() {
    let dir = workdir();
    let mut s = start(dir.path(), 2, "0", &[]);
    let from = s.lines().len();
    let (starts, ends) = (dir.path().join("starts.log"), dir.path().join("ends.log"));
    let wall = SystemTime::now();
    let saved = save(&s, 1);
    // The build ahead runs to its end long before the settle is over.
    wait_for_lines(&ends, 2, Duration::from_millis(2000));
    let built = saved.elapsed();
    assert!(
        built < Duration::from_millis(2500),
        "the build ended {built:?} after the save"
    );
    let started = last_start(&starts).duration_since(wall).unwrap_or_default();
    assert!(
        started < Duration::from_millis(1000),
        "the build started {started:?} after the save"
    );
    let said = |s: &Server, prefix: &str| {
        s.lines()[from..]
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    };
    assert_eq!(
        said(&s, "[watch] change detected"),
        0,
        "nothing said before the settle:\n{}",
        s.transcript()
    );
    assert_eq!(said(&s, "[build]"), 0, "{}", s.transcript());
    s.expect_prefix("[watch] change detected (logic.c)");
    s.expect_prefix("[build] success");
    s.expect_contains("[plugin] tag=v1 score=");
    assert!(
        saved.elapsed() >= Duration::from_millis(2500),
        "new code ran {:?} after the save, before its settle",
        saved.elapsed()
    );
    // Built once for the save: the start-up build and this one.
    assert_eq!(lines_of(&starts), 2);
    assert_eq!(said(&s, "[build] success"), 1, "{}", s.transcript());
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

#[test]
fn a_save_while_the_build_ahead_runs_stops_it_and_the_change_builds_once() {
    let dir = workdir();
    let mut s = start(dir.path(), 3, "1", &[]);
    let from = s.lines().len();
    let (starts, ends) = (dir.path().join("starts.log"), dir.path().join("ends.log"));
    save(&s, 1);
    // The build ahead for the first save is under way (in its sleep)...
    wait_for_lines(&starts, 2, Duration::from_millis(900));
    // ...when a second save comes: it is stopped, and the change, once
    // still for the settle, builds once.
    save(&s, 2);
    s.expect_contains("[plugin] tag=v2 score=");
    let window = s.lines()[from..].to_vec();
    let shown = window.join("\n");
    let count = |p: &str| window.iter().filter(|l| l.starts_with(p)).count();
    assert_eq!(count("[watch] change detected"), 1, "{shown}");
    assert_eq!(count("[build] success"), 1, "{shown}");
    assert_eq!(count("[build] a source changed"), 0, "{shown}");
    assert_eq!(count("[build] failed"), 0, "{shown}");
    assert!(
        !shown.contains("tag=v1"),
        "the first save's code never ran:\n{shown}"
    );
    // Started three times (start-up, ahead, the change's own), finished
    // twice: the build ahead was stopped in its sleep, its group killed.
    assert_eq!(lines_of(&starts), 3, "{shown}");
    assert_eq!(lines_of(&ends), 2, "{shown}");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

#[test]
fn without_building_ahead_the_build_starts_after_the_settle() {
    let dir = workdir();
    let mut s = start(dir.path(), 2, "0", &["--build-ahead-ms", "0"]);
    let starts = dir.path().join("starts.log");
    let wall = SystemTime::now();
    save(&s, 1);
    s.expect_prefix("[watch] change detected (logic.c)");
    s.expect_contains("[plugin] tag=v1 score=");
    let waited = last_start(&starts)
        .duration_since(wall)
        .expect("the build started after the save");
    assert!(
        waited >= Duration::from_millis(2500),
        "the build started {waited:?} after the save, before the settle"
    );
    assert_eq!(lines_of(&starts), 2);
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}
