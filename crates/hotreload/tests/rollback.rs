//! `hotreload ctl rollback` through the real binary: back to a version
//! still loaded, to one only kept on disk (loaded again), across layout
//! changes, and refused, saying why, when the state cannot be carried or
//! nothing is kept.

mod support;

use support::ctl::{ctl, status_json, versions_json};
use support::plugin::{Counter, counter};
use support::{Server, field, workdir};

const DEBUG_BUILD: &str = "cc -g -shared -fPIC -o logic.so logic.c";

/// A server on `logic.c` built with debug info (layouts known), 10 ms
/// ticks, with `extra` flags.
fn debug_server(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--watch",
        "logic.c",
        "--build",
        DEBUG_BUILD,
        "--tick-ms",
        "10",
    ];
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

/// A debug server on the counter `one`, once it has ticked three times;
/// with the path of its source.
fn start_on_one(dir: &std::path::Path, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let src = dir.join("logic.c");
    std::fs::write(&src, Counter::new("one", 1).source()).expect("write");
    let mut s = debug_server(dir, extra);
    s.expect_contains("tag=one score=3 ");
    (s, src)
}

/// Runs one tick (the server is paused) and checks that `tag` printed
/// `score` in it.
fn step_expecting(s: &mut Server, dir: &std::path::Path, tag: &str, score: i64) {
    assert_eq!(ctl(dir, &["step", "1"]).0, 0);
    let next = s.expect_contains(&format!("tag={tag} score="));
    assert_eq!(field(&next, "score"), Some(score), "{}", s.transcript());
}

/// The last score `tag` printed before the line `before` (or at all).
fn last_score(s: &Server, tag: &str, before: Option<&str>) -> i64 {
    let lines = s.lines();
    let end = before
        .and_then(|b| lines.iter().position(|l| l == b))
        .unwrap_or(lines.len());
    let marker = format!("tag={tag} score=");
    lines[..end]
        .iter()
        .rev()
        .find_map(|l| l.contains(&marker).then(|| field(l, "score")).flatten())
        .unwrap_or_else(|| panic!("no score of {tag}:\n{}", s.transcript()))
}

/// `rollback v1` after v3: v1 takes over between two ticks, on the state
/// as v3 left it; `rollback` alone goes to the newest kept version before
/// the running one (none before v1; v2 before v3); a version not kept is
/// refused, naming the kept ones.
#[test]
fn rollback_brings_back_a_kept_version_on_the_state_as_it_is() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_contains("tag=one score=2 ");
    std::fs::write(&src, counter("two", 10)).expect("write");
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.expect_contains("tag=two score=");
    std::fs::write(&src, counter("three", 100)).expect("write");
    s.expect_prefix("[reload] swapped logic.so (api=1, v3");
    s.expect_contains("tag=three score=");

    let (code, stdout, stderr) = ctl(dir.path(), &["rollback", "v1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("rolled back from v3 to v1 after tick "),
        "{stdout}"
    );
    let line = s.expect_prefix("[reload] rolled back from v3 to v1 on request");
    assert!(line.contains("v3 stays loaded"), "{line}");
    let last_three = {
        let lines = s.lines();
        let at = lines.iter().position(|l| l == &line).expect("the line");
        lines[..at]
            .iter()
            .rev()
            .find_map(|l| {
                l.contains("tag=three score=")
                    .then(|| field(l, "score"))
                    .flatten()
            })
            .expect("a score of v3")
    };
    let next = s.expect_contains("tag=one score=");
    assert_eq!(
        field(&next, "score"),
        Some(last_three + 1),
        "{}",
        s.transcript()
    );
    assert_eq!(status_json(dir.path())["result"]["version"], 1);

    let (code, _, stderr) = ctl(dir.path(), &["rollback", "v7"]);
    assert_eq!(code, 8, "{stderr}");
    assert!(
        stderr.contains(
            "expected a version loaded (v1, v2, v3) or kept on disk (v1, v2, v3), found no v7 yet (the newest is v3)"
        ),
        "{stderr}"
    );
    // `rollback` alone goes to the version before the running one: none
    // before v1.
    let (code, _, stderr) = ctl(dir.path(), &["rollback"]);
    assert_eq!(code, 8, "{stderr}");
    assert!(
        stderr.contains(
            "expected a good version before v1 to roll back to, found none (kept: v2, v3; name one: rollback vN)"
        ),
        "{stderr}"
    );
    let (code, stdout, stderr) = ctl(dir.path(), &["rollback", "v3"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("rolled back from v1 to v3"), "{stdout}");
    s.expect_contains("tag=three score=");
    let (code, stdout, stderr) = ctl(dir.path(), &["rollback"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("rolled back from v3 to v2"), "{stdout}");
    s.expect_contains("tag=two score=");
    assert_eq!(s.stop(), 0);
}

/// A rollback across a layout change carries the state back as a fault's
/// rollback does: v2 has a bigger state (its layout from debug info); back
/// on v1, the score goes on from v2's.
#[test]
fn rollback_carries_the_state_across_a_layout_change() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write");
    let mut s = debug_server(dir.path(), &[]);
    s.expect_contains("tag=one score=3 ");
    let v2 = Counter {
        state_extra: 64,
        ..Counter::new("two", 10)
    }
    .source();
    std::fs::write(&src, v2).expect("write");
    let swapped = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    assert!(swapped.contains("migrated"), "{swapped}");
    s.expect_contains("tag=two score=");
    assert_eq!(ctl(dir.path(), &["pause"]).0, 0);
    s.expect_prefix("[tick] paused after tick ");
    let last_two = s
        .lines()
        .iter()
        .rev()
        .find_map(|l| {
            l.contains("tag=two score=")
                .then(|| field(l, "score"))
                .flatten()
        })
        .expect("a score of v2");
    let (code, stdout, stderr) = ctl(dir.path(), &["rollback", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("state carried"), "{stdout}");
    step_expecting(&mut s, dir.path(), "one", last_two + 1);
    assert_eq!(s.stop(), 0);
}

/// With `--keep-versions 1` only the running version stays loaded; the
/// others are kept on disk. `rollback v1` loads v1 again from its copy and
/// carries v2's bigger state back to it; `versions` says what is loaded,
/// what is only on disk; `rollback v2` then goes forward to v2, loaded
/// again too.
#[test]
fn rollback_loads_a_version_only_on_disk_again_and_carries_the_state() {
    let dir = workdir();
    let (mut s, src) = start_on_one(dir.path(), &["--keep-versions", "1"]);
    let v2 = Counter {
        state_extra: 64,
        ..Counter::new("two", 10)
    }
    .source();
    std::fs::write(&src, v2).expect("write");
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.expect_contains("tag=two score=");

    let (v, stdout) = versions_json(dir.path());
    assert_eq!(v["result"]["loaded"], serde_json::json!([2]), "{stdout}");
    assert_eq!(
        v["result"]["on_disk"],
        serde_json::json!([1, 2]),
        "{stdout}"
    );
    let rows = v["result"]["versions"].as_array().expect("rows").clone();
    assert_eq!(rows[0]["kept"], "on disk", "{stdout}");
    assert_eq!(rows[1]["kept"], "loaded", "{stdout}");
    for row in &rows {
        assert!(
            row["sources"]
                .as_str()
                .is_some_and(|t| t.ends_with("(1 file)")),
            "{stdout}"
        );
        assert!(
            row["built_unix_ms"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000)
        );
        assert!(row["build_ms"].as_u64().is_some(), "{stdout}");
    }
    assert_ne!(rows[0]["sources"], rows[1]["sources"], "{stdout}");

    assert_eq!(ctl(dir.path(), &["pause"]).0, 0);
    s.expect_prefix("[tick] paused after tick ");
    let last_two = last_score(&s, "two", None);
    let (code, stdout, stderr) = ctl(dir.path(), &["rollback", "v1"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("state carried"), "{stdout}");
    let line = s.expect_prefix(
        "[reload] rolled back from v2 to v1 on request (loaded again from its kept copy)",
    );
    assert!(
        line.contains("v2 unloaded (beyond --keep-versions)"),
        "{line}"
    );
    step_expecting(&mut s, dir.path(), "one", last_two + 1);
    let status = status_json(dir.path());
    assert_eq!(status["result"]["version"], 1);

    let (code, stdout, stderr) = ctl(dir.path(), &["rollback", "v2"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("rolled back from v1 to v2 (loaded again from its kept copy)"),
        "{stdout}"
    );
    s.expect_prefix(
        "[reload] rolled back from v1 to v2 on request (loaded again from its kept copy)",
    );
    step_expecting(&mut s, dir.path(), "two", last_two + 11);
    assert_eq!(s.stop(), 0);
}

/// A rollback whose state cannot be carried is refused, saying which value
/// does not fit, and nothing changes: v2 widened `score` to 64 bits and
/// holds 3,000,000,000; v1's `int` cannot hold it. With `--keep-on-disk 0`
/// and `--keep-versions 1` nothing is there to go back to, and that is said.
#[test]
fn a_rollback_that_cannot_carry_the_state_or_has_nothing_kept_is_refused() {
    let dir = workdir();
    let (mut s, src) = start_on_one(dir.path(), &["--keep-versions", "1"]);
    let wide = Counter::new("wide", 1)
        .source()
        .replace("    int score;", "    long long score;")
        .replace("score=%d", "score=%lld");
    std::fs::write(&src, wide).expect("write");
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.expect_contains("tag=wide score=");
    assert_eq!(ctl(dir.path(), &["pause"]).0, 0);
    s.expect_prefix("[tick] paused after tick ");
    let (code, _, stderr) = ctl(dir.path(), &["set", "score", "3000000000"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = ctl(dir.path(), &["rollback", "v1"]);
    assert_eq!(code, 8, "{stderr}");
    assert!(
        stderr.contains("found that it cannot: field score: value 3000000000 does not fit int32"),
        "{stderr}"
    );
    assert_eq!(status_json(dir.path())["result"]["version"], 2);
    let (code, stdout, _) = ctl(dir.path(), &["get", "score"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("3000000000"), "{stdout}");
    // What was loaded for the refused rollback is unloaded again.
    let (v, stdout) = versions_json(dir.path());
    assert_eq!(v["result"]["loaded"], serde_json::json!([2]), "{stdout}");
    assert_eq!(s.stop(), 0);

    let dir = workdir();
    let (mut s, src) = start_on_one(dir.path(), &["--keep-versions", "1", "--keep-on-disk", "0"]);
    std::fs::write(&src, Counter::new("two", 10).source()).expect("write");
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    let (code, _, stderr) = ctl(dir.path(), &["rollback", "v1"]);
    assert_eq!(code, 8, "{stderr}");
    assert!(
        stderr.contains("expected a version loaded (v2) or kept on disk (none), found v1 neither loaded nor kept on disk"),
        "{stderr}"
    );
    let (code, _, stderr) = ctl(dir.path(), &["rollback"]);
    assert_eq!(code, 8, "{stderr}");
    assert!(
        stderr.contains("found none (nothing else is kept loaded or on disk)"),
        "{stderr}"
    );
    assert_eq!(s.stop(), 0);
}

/// A version that faulted is not kept on disk: the same bytes would fault
/// again on the state.
#[test]
fn a_faulted_version_is_not_kept_for_rollbacks() {
    let dir = workdir();
    let (mut s, src) = start_on_one(dir.path(), &["--trial-ticks", "0"]);
    let faults = Counter {
        fault_at: Some((3, "*(volatile int*)0 = 1;")),
        ..Counter::new("bad", 100)
    }
    .source();
    std::fs::write(&src, faults).expect("write");
    s.expect_prefix("[fault] v2 ");
    let (v, stdout) = versions_json(dir.path());
    assert_eq!(v["result"]["on_disk"], serde_json::json!([1]), "{stdout}");
    let (code, _, stderr) = ctl(dir.path(), &["rollback", "v2"]);
    assert_eq!(code, 8, "{stderr}");
    assert!(
        stderr.contains("found v2 faulted: SIGSEGV in tick: a version that faulted is not kept"),
        "{stderr}"
    );
    assert_eq!(s.stop(), 14);
}

/// With `--keep-versions 1` nothing else is loaded when the running
/// version faults; the newest good version kept on disk is loaded again
/// and takes over the state as it was before the faulting tick, as a
/// loaded one would have. Then `resume` and `step` refuse nothing, and
/// ticking goes on without being asked.
#[test]
fn a_fault_with_nothing_loaded_brings_back_the_newest_version_kept_on_disk() {
    let dir = workdir();
    let (mut s, src) = start_on_one(dir.path(), &["--keep-versions", "1", "--trial-ticks", "0"]);
    let faults = Counter {
        fault_at: Some((4, "*(volatile int*)0 = 1;")),
        ..Counter::new("bad", 100)
    }
    .source();
    std::fs::write(&src, faults).expect("write");
    let fault = s.expect_prefix("[fault] v2 ");
    assert!(
        fault.contains(
            "no earlier version loaded: v1 is loaded again from its kept copy to take over"
        ),
        "{fault}"
    );
    let line = s.expect_prefix("[reload] rolled back from v2 to v1 to take over after v2's fault (loaded again from its kept copy)");
    assert!(
        line.contains("the state is the one restored when v2 faulted"),
        "{line}"
    );
    let last_bad = last_score(&s, "bad", Some(&fault));
    let next = s.expect_contains("tag=one score=");
    assert_eq!(
        field(&next, "score"),
        Some(last_bad + 1),
        "{}",
        s.transcript()
    );
    assert_eq!(status_json(dir.path())["result"]["version"], 1);
    s.expect_contains("tag=one score=");
    // The last reload faulted.
    assert_eq!(s.stop(), 14);
    // The figures at exit cover the ticking before the fault too.
    let stats = s
        .lines()
        .into_iter()
        .find(|l| l.starts_with("[tick] ") && l.contains(" ticks in "))
        .unwrap_or_else(|| panic!("no tick figures:\n{}", s.transcript()));
    let numbers: Vec<f64> = stats
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter_map(|w| w.parse().ok())
        .collect();
    let (ticks, ms) = (numbers[0], numbers[1]);
    assert!(ms >= ticks * 10.0 * 0.5, "{stats}");
}

/// With nothing kept anywhere, a fault leaves no version running: `resume`
/// and `step` say so instead of pretending, and `status` does not say
/// "ticking".
#[test]
fn with_no_version_running_resume_and_step_say_why() {
    let dir = workdir();
    let (mut s, src) = start_on_one(
        dir.path(),
        &[
            "--keep-versions",
            "1",
            "--keep-on-disk",
            "0",
            "--trial-ticks",
            "0",
        ],
    );
    let faults = Counter {
        fault_at: Some((2, "*(volatile int*)0 = 1;")),
        ..Counter::new("bad", 100)
    }
    .source();
    std::fs::write(&src, faults).expect("write");
    let fault = s.expect_prefix("[fault] v2 ");
    assert!(
        fault.contains("no earlier version to roll back to"),
        "{fault}"
    );
    for args in [&["resume"][..], &["step", "1"][..]] {
        let (code, _, stderr) = ctl(dir.path(), args);
        assert_eq!(code, 6, "{args:?}: {stderr}");
        assert!(
            stderr.contains("expected a version running for"),
            "{args:?}: {stderr}"
        );
    }
    let (_, stdout, _) = ctl(dir.path(), &["status"]);
    assert!(
        stdout.starts_with("no version running, ticking paused until a good build or a rollback"),
        "{stdout}"
    );
    assert_eq!(s.stop(), 14);
}
