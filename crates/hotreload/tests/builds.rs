//! When builds run and when they do not: one build per burst of saves, a save
//! during a build supersedes it, the build's own output never triggers a
//! build, an untouched file builds nothing, bad flags stop before anything
//! runs, and running out of inotify watches falls back to polling.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use support::plugin::counter;
use support::{Server, editor, field, wait_for_file, workdir};

fn is_build_line(l: &str) -> bool {
    l.starts_with("[build]")
}

#[test]
fn a_burst_of_twenty_saves_builds_once() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_contains("[plugin] tag=one score=2 ");

    let burst_start = s.lines().len();
    for i in 0..20 {
        editor::in_place(&src, &counter(&format!("burst{i:02}"), 1));
    }
    s.expect_contains("[plugin] tag=burst19 score=");
    // A distinct edit after the burst's build, to close the window counted.
    editor::in_place(&src, &counter("marker", 1));
    s.expect_contains("[plugin] tag=marker score=");

    let lines = s.lines();
    let marker_change = lines
        .iter()
        .enumerate()
        .skip(burst_start)
        .filter(|(_, l)| l.starts_with("[watch] change detected"))
        .map(|(i, _)| i)
        .nth(1)
        .unwrap_or_else(|| panic!("no change line for the marker:\n{}", s.transcript()));
    let burst = &lines[burst_start..marker_change];
    let count = |p: &str| burst.iter().filter(|l| l.starts_with(p)).count();
    assert_eq!(
        count("[build] success"),
        1,
        "one build for the burst:\n{}",
        burst.join("\n")
    );
    assert_eq!(count("[watch] change detected"), 1, "{}", burst.join("\n"));
    assert_eq!(count("[build] a source changed"), 0, "{}", burst.join("\n"));
    assert!(
        burst
            .iter()
            .all(|l| !l.contains("tag=burst") || l.contains("tag=burst19")),
        "only the last save of the burst ran:\n{}",
        burst.join("\n")
    );
    assert_eq!(s.stop(), 0);
}

#[test]
fn a_save_during_a_slow_build_loads_the_newest_code_only() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let flag = dir.path().join("building.flag");
    let mut s = support::start_with_slow_builds(dir.path());

    editor::in_place(&src, &counter("two", 100));
    s.expect_prefix("[watch] change detected (logic.c)");
    wait_for_file(&flag);
    editor::in_place(&src, &counter("three", 10_000));
    s.expect_prefix("[build] a source changed during the build");
    s.expect_prefix("[build] success");
    s.expect_prefix("[reload] swapped logic.so (api=1, v2,");
    let first_new = s.expect_contains("[plugin] tag=three score=");
    s.expect_contains("[plugin] tag=three score=");
    assert_eq!(s.stop(), 0);

    let transcript = s.transcript();
    assert_eq!(
        s.count(|l| l.contains("tag=two")),
        0,
        "the stale build ran:\n{transcript}"
    );
    assert_eq!(
        s.count(|l| l.starts_with("[reload] swapped")),
        1,
        "{transcript}"
    );
    let last_old = s
        .lines()
        .iter()
        .filter(|l| l.starts_with("[plugin] tag=one score="))
        .filter_map(|l| field(l, "score"))
        .max()
        .expect("v1 ticked");
    assert_eq!(
        field(&first_new, "score"),
        Some(last_old + 10_000),
        "{transcript}"
    );
}

/// With the whole folder watched, the library the build writes lands inside
/// the watch; reacting to it would rebuild forever.
#[test]
fn the_library_written_beside_the_source_triggers_nothing() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_watching(dir.path(), ".", &[]);
    s.expect_contains("[plugin] tag=one score=2 ");
    editor::in_place(&src, &counter("two", 1));
    s.expect_prefix("[watch] change detected (logic.c)");
    s.expect_prefix("[reload] swapped logic.so");
    for _ in 0..30 {
        s.expect_contains("[plugin] tag=two score=");
    }
    let transcript = s.transcript();
    assert_eq!(
        s.count(|l| l.starts_with("[watch]")),
        1,
        "only the edit was noticed:\n{transcript}"
    );
    assert_eq!(
        s.count(|l| l.starts_with("[build] success")),
        2,
        "{transcript}"
    );
    assert_eq!(s.stop(), 0);
}

#[test]
fn a_save_that_changes_nothing_builds_nothing_and_touch_rebuilds() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_contains("[plugin] tag=one score=2 ");
    let before = s.lines().len();

    // Opened for writing and closed without a write: inotify reports a
    // close-after-write, but mtime, size and inode are as they were.
    drop(
        fs::OpenOptions::new()
            .write(true)
            .open(&src)
            .expect("open for write"),
    );
    s.expect_prefix("[watch] logic.c unchanged since the last build was asked for (same mtime, size and inode); build skipped");

    let status = Command::new("touch").arg(&src).status().expect("run touch");
    assert!(status.success());
    s.expect_prefix("[watch] change detected (logic.c)");
    s.expect_prefix("[build] success");
    // The rebuild produced the running library again.
    s.expect_prefix("[reload] the build is byte for byte the running v1; nothing to swap");
    s.expect_contains("[plugin] tag=one score=");

    let lines = s.lines();
    let skipped_at = lines
        .iter()
        .position(|l| l.contains("build skipped"))
        .expect("skip line");
    assert!(
        lines[before..skipped_at]
            .iter()
            .all(|l| !is_build_line(l) && !l.starts_with("[reload]") && !l.starts_with("[watch]")),
        "nothing before the skip:\n{}",
        s.transcript()
    );
    let touched_at = lines
        .iter()
        .position(|l| l.starts_with("[watch] change detected"))
        .expect("change line");
    assert!(
        lines[skipped_at..touched_at]
            .iter()
            .all(|l| !is_build_line(l)),
        "no build between the empty save and the touch:\n{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0);
}

/// Runs the binary to completion in `dir` with `args`.
fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(support::binary())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run hotreload")
}

#[test]
fn bad_flags_and_values_exit_2_with_a_message() {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let ok: &[&str] = &["--watch", "logic.c", "--build", support::CC_BUILD];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args: Vec<&str> = ok.to_vec();
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<(&str, Vec<&str>, &[&str])> = vec![
        ("unknown flag", with(&["--frobnicate"]), &["--frobnicate"]),
        (
            "zero tick",
            with(&["--tick-ms", "0"]),
            &["--tick-ms", "0", "at least 1"],
        ),
        (
            "non-numeric tick",
            with(&["--tick-ms", "abc"]),
            &["--tick-ms", "abc"],
        ),
        (
            "watch in a missing folder",
            vec![
                "--watch",
                "no-such-dir/logic.c",
                "--build",
                support::CC_BUILD,
            ],
            &["no-such-dir/logic.c", "no-such-dir"],
        ),
        (
            "library not named",
            vec!["--watch", "logic.c", "--build", "make"],
            &["make", "-o", "--lib"],
        ),
    ];
    for (what, args, needles) in cases {
        let out = run(dir.path(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: {args:?}\nstderr: {stderr}\nstdout: {stdout}"
        );
        assert!(
            stderr.contains("error"),
            "{what}: no error on stderr: {stderr}"
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{what}: stderr does not mention {needle:?}: {stderr}"
            );
        }
        assert!(
            !stdout.contains("[server]") && !stdout.contains("[build]"),
            "{what}: started anyway: {stdout}"
        );
    }
    assert!(
        !dir.path().join("logic.so").exists(),
        "no build ran for a bad command line"
    );
}

/// Whether this machine lets an unprivileged new user namespace lower its own
/// inotify limits (`/proc/sys/user/max_inotify_*` are per user namespace since
/// Linux 4.9). `Err` says why not.
fn can_limit_inotify() -> Result<(), String> {
    let out = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            "echo 0 > /proc/sys/user/max_inotify_watches && echo 0 > /proc/sys/user/max_inotify_instances",
        ])
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`unshare --user --map-root-user` cannot lower /proc/sys/user/max_inotify_* ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs the server with `args` in a new user namespace whose
/// `/proc/sys/user/<limit>` is `value`.
fn start_with_inotify_limit(dir: &Path, limit: &str, value: u32, args: &[&str]) -> Server {
    let mut command = Command::new("unshare");
    command
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg(format!(
            "echo {value} > /proc/sys/user/{limit} && exec \"$0\" \"$@\""
        ))
        .arg(support::binary())
        .args(args);
    Server::start_command(dir, command)
}

/// Skips the test, saying why, where the limits cannot be lowered. Written
/// to the real stderr, past the test harness's capture, so that the skip
/// shows in a normal `cargo test` run.
macro_rules! skip_unless_inotify_can_be_limited {
    () => {
        if let Err(why) = can_limit_inotify() {
            use std::io::Write as _;
            let test = std::thread::current().name().unwrap_or("test").to_owned();
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            return;
        }
    };
}

const POLL_ARGS: &[&str] = &[
    "--watch",
    "logic.c",
    "--build",
    support::CC_BUILD,
    "--tick-ms",
    "10",
    "--poll-ms",
    "20",
];

/// Starts on `logic.c` with an inotify limit of 0, expects a fallback notice
/// that mentions `raise`, and checks that a save is still seen.
fn falls_back_at_start_and_still_sees_a_save(limit: &str, raise: &str) {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = start_with_inotify_limit(dir.path(), limit, 0, POLL_ARGS);
    let notice = s.expect("the fallback notice", |l| {
        l.starts_with("[watch] ") && l.ends_with("falling back to polling every 20 ms")
    });
    assert!(notice.contains(raise), "{notice}");
    s.expect_contains("[plugin] tag=one score=2 ");
    editor::in_place(&src, &counter("two", 1));
    s.expect_prefix("[watch] change detected (logic.c)");
    s.expect_contains("[plugin] tag=two score=");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

#[test]
fn out_of_inotify_watches_at_start_falls_back_to_polling() {
    skip_unless_inotify_can_be_limited!();
    falls_back_at_start_and_still_sees_a_save(
        "max_inotify_watches",
        "out of inotify watches (raise fs.inotify.max_user_watches)",
    );
}

#[test]
fn out_of_inotify_instances_at_start_falls_back_to_polling() {
    skip_unless_inotify_can_be_limited!();
    falls_back_at_start_and_still_sees_a_save(
        "max_inotify_instances",
        "out of inotify instances or open files (raise fs.inotify.max_user_instances",
    );
}

/// The limit is reached by a folder created while running: the watch stage
/// switches to polling then, and the new folder's files are still seen.
#[test]
fn out_of_inotify_watches_later_falls_back_to_polling() {
    skip_unless_inotify_can_be_limited!();
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    // Two watches: enough for the work folder and the folder it is in (which
    // sees it deleted and made again), not for a subfolder.
    let mut s = start_with_inotify_limit(
        dir.path(),
        "max_inotify_watches",
        2,
        &[
            "--watch",
            ".",
            "--build",
            "cc -shared -fPIC -o logic.so logic.c sub/*.c",
            "--tick-ms",
            "10",
            "--poll-ms",
            "20",
        ],
    );
    s.expect_prefix("[build] failed");
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).expect("mkdir sub");
    let notice = s.expect("the fallback notice", |l| {
        l.starts_with("[watch] ") && l.ends_with("falling back to polling every 20 ms")
    });
    assert!(
        notice.contains("sub: out of inotify watches (raise fs.inotify.max_user_watches)"),
        "{notice}"
    );
    let extra = sub.join("extra.c");
    fs::write(&extra, "int extra(void) { return 1; }\n").expect("write extra.c");
    s.expect_contains("[plugin] tag=one score=2 ");
    editor::in_place(&extra, "int extra(void) { return 2; }\n");
    s.expect_prefix("[watch] change detected (sub/extra.c)");
    s.expect_prefix("[reload] swapped logic.so");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// A build that produces the running version's very bytes (a comment-only
/// edit, `make` with nothing to do) swaps nothing and counts as success.
#[test]
fn a_build_identical_to_the_running_version_swaps_nothing() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &["--reloads", "1"]);
    s.expect_contains("tag=one score=2 ");
    editor::in_place(&src, &format!("{}/* a comment */\n", counter("one", 1)));
    s.expect_prefix("[reload] the build is byte for byte the running v1; nothing to swap");
    assert_eq!(s.exit_code(), 0);
    assert_eq!(s.count(|l| l.starts_with("[reload] swapped")), 0);
}

/// Warnings from a successful build are shown (indented); a silent build
/// prints one line.
#[test]
fn warnings_of_a_successful_build_are_shown() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let warned = counter("one", 1).replace(
        "state_t* s = p;\n    s->score += 1;",
        "state_t* s = p;\n    int unused_var;\n    s->score += 1;",
    );
    assert!(warned.contains("unused_var"));
    fs::write(&src, warned).expect("write");
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            "cc -Wall -shared -fPIC -o logic.so logic.c",
            "--tick-ms",
            "10",
        ],
    );
    s.expect("a success with warnings", |l| {
        l.starts_with("[build] success (") && l.ends_with(") with warnings:")
    });
    s.expect("the warning, indented", |l| {
        l.starts_with("  | ") && l.contains("unused_var")
    });
    editor::in_place(&src, &counter("two", 1));
    s.expect_prefix("[reload] swapped");
    let last_build = s
        .lines()
        .into_iter()
        .rfind(|l| l.starts_with("[build] success"));
    assert!(
        last_build.is_some_and(|l| !l.contains("warnings")),
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0);
}

/// A watched file that does not exist is usually a typo: said at start.
#[test]
fn a_missing_watched_file_is_reported() {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "typo.c",
            "--build",
            support::CC_BUILD,
            "--tick-ms",
            "10",
        ],
    );
    s.expect_prefix("[watch] typo.c does not exist (yet); watching its folder for it to appear");
    s.expect_prefix("[reload] loaded logic.so");
    assert_eq!(s.stop(), 0);
}

/// `hotreload ... | head -3`: once stdout is gone, the server stops (and
/// calls shutdown) instead of running on unseen.
#[test]
fn a_closed_stdout_stops_the_server() {
    use std::io::{BufRead, BufReader};
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let mut child = std::process::Command::new(support::binary())
        .args([
            "--watch",
            "logic.c",
            "--build",
            support::CC_BUILD,
            "--tick-ms",
            "5",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..3 {
        lines.next().expect("a line").expect("read");
    }
    drop(lines);
    let deadline = std::time::Instant::now() + support::WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running with stdout closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
}
