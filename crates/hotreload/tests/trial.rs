//! Trial before commit: a new build's constructors, `logic_get_api`, `init`
//! (first version only) and a few ticks on a copy of the current state run
//! first in a throwaway probe process. A build that crashes or hangs there is
//! rejected with one `[reload] rejected: trial...` line and never runs in the
//! host; the old code ticks on from its state as if nothing happened. What
//! the probe printed is hidden on success and shown only as `  | ` detail
//! lines under the rejection.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use support::plugin::{Counter, counter};
use support::{CC_BUILD, Server, WAIT, editor, field, shadow_folders, workdir};

/// A null write, and the start of what the trial reports for it.
const SEGV: &str = "*(volatile int*)0 = 1;";
const SEGV_SAYS: &str = "SIGSEGV (address not mapped) at 0x0 in ";

/// `source` with `from` replaced by `to`, which must be there.
fn edit(source: &str, from: &str, to: &str) -> String {
    assert!(source.contains(from), "{from:?} not in the plugin source");
    source.replacen(from, to, 1)
}

/// `source` with C code appended (a constructor, a destructor).
fn with(source: &str, code: &str) -> String {
    format!("{source}\n{code}\n")
}

/// The scores printed by version `tag` in the host (unindented lines), in
/// order.
fn scores(lines: &[String], tag: &str) -> Vec<i64> {
    let prefix = format!("[plugin] tag={tag} score=");
    lines
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| field(l, "score"))
        .collect()
}

/// Asserts that `tag` printed at least `min` scores and each is the one
/// before plus `step`: no tick was lost, repeated or taken from elsewhere.
fn assert_continuous(s: &Server, tag: &str, step: i64, min: usize) -> Vec<i64> {
    let got = scores(&s.lines(), tag);
    assert!(
        got.len() >= min,
        "expected at least {min} scores from {tag}:\n{}",
        s.transcript()
    );
    for pair in got.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + step,
            "scores of {tag} not continuous:\n{}",
            s.transcript()
        );
    }
    got
}

/// Asserts that `needle` (something only the bad code prints) appears only
/// in `  | ` detail lines, and returns those.
fn only_as_detail(s: &Server, needle: &str) -> Vec<String> {
    let lines = s.lines();
    let loose: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(needle) && !l.starts_with("  | "))
        .collect();
    assert!(
        loose.is_empty(),
        "{needle:?} printed outside the trial's detail: {loose:?}\n{}",
        s.transcript()
    );
    lines.into_iter().filter(|l| l.contains(needle)).collect()
}

/// The score v1 (`tag=one`) reported from `shutdown`.
fn shutdown_score(s: &Server) -> Option<i64> {
    s.lines()
        .iter()
        .find(|l| l.starts_with("[plugin] tag=one shutdown score="))
        .and_then(|l| field(l, "score"))
}

/// The index of the first line equal to `line`.
fn index_of(s: &Server, line: &str) -> usize {
    s.lines()
        .iter()
        .position(|l| l == line)
        .expect("a line seen earlier")
}

/// Every process whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // gone meanwhile
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let ppid = after.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Every process whose command line mentions `text`.
fn processes_mentioning(text: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(text) {
            found.push(pid);
        }
    }
    found
}

/// The server's trial helper: the child it forked at start, which forks
/// each probe (the same command line as the server's, where an exec'd
/// probe has its own).
fn trial_helper_of(pid: i32) -> Option<i32> {
    let cmdline = |p: i32| std::fs::read(format!("/proc/{p}/cmdline")).ok();
    children_of(pid)
        .into_iter()
        .find(|c| cmdline(*c).is_some() && cmdline(*c) == cmdline(pid))
}

/// The processes that run the server's trials: the children of its trial
/// helper (or its own children that run the hotreload binary, without one).
fn probes_of(pid: i32) -> Vec<i32> {
    let binary = support::binary();
    let helper = trial_helper_of(pid);
    children_of(pid)
        .into_iter()
        .filter(|c| Some(*c) != helper)
        .chain(helper.into_iter().flat_map(children_of))
        .filter(|c| {
            std::fs::read(format!("/proc/{c}/cmdline")).is_ok_and(|cmd| {
                cmd.split(|b| *b == 0).next() == Some(binary.as_os_str().as_encoded_bytes())
            })
        })
        .collect()
}

/// The usual server flags, for `Server::start_with_env`.
fn usual_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--watch", "logic.c", "--build", CC_BUILD, "--tick-ms", "10"];
    args.extend_from_slice(extra);
    args
}

/// Point 1: a build that faults on its second trial tick is rejected with the
/// tick, the signal and the function; none of its lines reach the log except
/// as detail; v1 ticks on without a gap; `--reloads 1` exits with 14.
#[test]
fn a_fault_on_trial_tick_2_is_rejected_and_never_runs_in_the_host() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start_default(dir.path(), &["--reloads", "1"]);
    s.expect_contains("tag=one score=3 ");

    let bad = Counter {
        fault_at: Some((2, SEGV)),
        ..Counter::new("bad", 10)
    }
    .source();
    editor::rename_over(&src, &bad);
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.starts_with(&format!(
            "[reload] rejected: trial tick 2: {SEGV_SAYS}counter_tick+0x"
        )) && line.ends_with(" (keeping v1)"),
        "{line}"
    );
    s.expect_prefix("[exit] code=14");
    assert_eq!(s.exit_code(), 14, "{}", s.transcript());

    // Its first trial tick printed, in the probe: shown as detail only.
    let detail = only_as_detail(&s, "tag=bad");
    assert_eq!(detail.len(), 1, "one trial tick printed: {detail:?}");
    assert!(
        detail[0].starts_with("  | [plugin] tag=bad score="),
        "{detail:?}"
    );
    assert_eq!(s.count(|l| l.starts_with("[fault]")), 0, "never ran live");

    // v1 ticked through the build and the trial and ended where it was.
    let ones = assert_continuous(&s, "one", 1, 3);
    assert_eq!(
        shutdown_score(&s),
        ones.last().copied(),
        "{}",
        s.transcript()
    );
}

/// Point 2: a library constructor that crashes is caught in the probe (which
/// runs it under the crash guard, as the host would, right after dlopen);
/// the host never maps the library, v1 ticks on, and the exit code is 14.
/// What the constructor printed first is shown as detail.
#[test]
fn a_crashing_constructor_is_rejected_in_dlopen() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start_default(dir.path(), &["--reloads", "1"]);
    s.expect_contains("tag=one score=3 ");

    let bad = with(
        &counter("bad", 10),
        r#"__attribute__((constructor)) static void boom(void) {
    printf("[plugin] tag=bad constructor\n");
    *(volatile int*)0 = 1;
}"#,
    );
    editor::rename_over(&src, &bad);
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.starts_with(
            "[reload] rejected: trial: a library constructor faulted: SIGSEGV (address not mapped) at 0x0 in boom+"
        ) && line.ends_with(" (keeping v1)"),
        "{line}"
    );
    s.expect_contains("  | [plugin] tag=bad constructor");
    s.expect_prefix("[exit] code=14");
    assert_eq!(s.exit_code(), 14, "exited normally:\n{}", s.transcript());
    only_as_detail(&s, "tag=bad");

    // The host lived on: v1 ticked through the build and the trial without
    // a gap, and shut down normally from the score it had reached.
    let ones = assert_continuous(&s, "one", 1, 3);
    assert_eq!(
        shutdown_score(&s),
        ones.last().copied(),
        "{}",
        s.transcript()
    );
}

/// Point 3: a constructor that never returns is a hang in dlopen: the probe
/// is killed after `--tick-timeout-ms`, the host ticks on all the while, and
/// no probe process remains.
#[test]
fn a_hanging_constructor_is_killed_and_the_server_stays_responsive() {
    let dir = workdir();
    let tmp = tempfile::tempdir().expect("private TMPDIR");
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start_with_env(
        dir.path(),
        &usual_args(&["--tick-timeout-ms", "300"]),
        &[("TMPDIR", tmp.path())],
    );
    s.expect_contains("tag=one score=3 ");

    let bad = with(
        &counter("bad", 10),
        r#"__attribute__((constructor)) static void spin(void) {
    printf("[plugin] tag=bad constructor starts\n");
    for (;;) {}
}"#,
    );
    editor::rename_over(&src, &bad);
    s.expect_prefix("[build] success");

    // The probe shows up as a child of the server while it hangs (so the
    // check that it is gone below can tell).
    let deadline = Instant::now() + WAIT;
    let probe = loop {
        if let Some(&p) = probes_of(s.pid()).first() {
            break p;
        }
        assert!(
            s.count(|l| l.starts_with("[reload] rejected")) == 0 && Instant::now() < deadline,
            "never saw the probe process:\n{}",
            s.transcript()
        );
        std::thread::sleep(Duration::from_millis(1));
    };

    let line = s.expect_prefix("[reload] rejected: ");
    assert_eq!(
        line,
        "[reload] rejected: trial: hung in dlopen (a library constructor) for 300 ms (keeping v1)"
    );
    s.expect_contains("  | [plugin] tag=bad constructor starts");

    // Gone, and reaped: no child of the server but its trial helper, none of
    // the helper's (not even a zombie), and no process anywhere still
    // running on this server's shadow folder.
    let helper = trial_helper_of(s.pid());
    assert!(helper.is_some(), "the server runs a trial helper");
    let left: Vec<i32> = children_of(s.pid())
        .into_iter()
        .filter(|c| Some(*c) != helper)
        .chain(helper.into_iter().flat_map(children_of))
        .collect();
    assert!(
        left.is_empty(),
        "probe {probe} gone, but children left: {left:?}"
    );
    let shadow = tmp.path().to_string_lossy().into_owned();
    assert!(
        processes_mentioning(&shadow).is_empty(),
        "processes still on {shadow}: {:?}",
        processes_mentioning(&shadow)
    );

    // v1 ticked through the whole hang and ticks on.
    let lines = s.lines();
    let rejected_at = index_of(&s, &line);
    let build_at = lines[..rejected_at]
        .iter()
        .rposition(|l| l.starts_with("[build] success"))
        .expect("the build line");
    let during = lines[build_at..rejected_at]
        .iter()
        .filter(|l| l.starts_with("[plugin] tag=one score="))
        .count();
    assert!(
        during >= 5,
        "only {during} ticks during a 300 ms hang:\n{}",
        s.transcript()
    );
    let after = field(&s.expect_contains("tag=one score="), "score").expect("score");
    s.expect_contains(&format!("tag=one score={} ", after + 2));
    assert_continuous(&s, "one", 1, 10);
    only_as_detail(&s, "tag=bad");
    assert_eq!(s.stop(), 14, "the last outcome is the rejection");
}

/// Point 4: `logic_get_api` that crashes, then one that hangs: both are
/// refused by the trial, and neither ever runs in the host (each call
/// leaves a line in `get_api.log`: one per build, the probe's).
#[test]
fn a_crashing_or_hanging_logic_get_api_is_rejected_by_the_trial() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let log = dir.path().join("get_api.log");
    std::fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start_default(dir.path(), &["--tick-timeout-ms", "300"]);
    s.expect_contains("tag=one score=3 ");
    let get_api = |then: &str| {
        edit(
            &counter("bad", 10),
            "{ return &api; }",
            &format!(
                "{{ FILE* f = fopen(\"get_api.log\", \"a\"); fputs(\"called\\n\", f); fclose(f); \
                 {then} return &api; }}"
            ),
        )
    };

    editor::in_place(&src, &get_api(SEGV));
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.starts_with(
            "[reload] rejected: trial: logic_get_api faulted: SIGSEGV (address not mapped) at 0x0 in logic_get_api+0x"
        ) && line.ends_with(" (keeping v1)"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).expect("get_api.log"),
        "called\n",
        "called once, in the probe"
    );

    editor::in_place(&src, &get_api("for (;;) {}"));
    let line = s.expect_prefix("[reload] rejected: ");
    assert_eq!(
        line,
        "[reload] rejected: trial: hung in logic_get_api for 300 ms (keeping v1)"
    );
    let at = field(&s.expect_contains("tag=one score="), "score").expect("score");
    s.expect_contains(&format!("tag=one score={} ", at + 3));
    assert_eq!(
        std::fs::read_to_string(&log).expect("get_api.log"),
        "called\ncalled\n",
        "each build's logic_get_api ran once, in its probe"
    );
    assert_eq!(
        s.count(|l| l.starts_with("[fault]")),
        0,
        "{}",
        s.transcript()
    );
    assert_continuous(&s, "one", 1, 20);
    only_as_detail(&s, "tag=bad");
    assert_eq!(s.stop(), 14);
}

/// Point 5: a destructor that crashes when the probe unloads the library.
#[test]
fn a_crashing_destructor_is_rejected_in_dlclose() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_contains("tag=one score=3 ");

    let bad = with(
        &counter("bad", 10),
        "__attribute__((destructor)) static void boom(void) { *(volatile int*)0 = 1; }",
    );
    editor::rename_over(&src, &bad);
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.starts_with(
            "[reload] rejected: trial: a library destructor faulted: SIGSEGV (address not mapped) at 0x0 in boom+"
        ) && line.ends_with(" (keeping v1)"),
        "{line}"
    );
    // All three trial ticks and `shutdown` ran and printed before the
    // destructor crashed.
    let at = field(&s.expect_contains("tag=one score="), "score").expect("score");
    s.expect_contains(&format!("tag=one score={} ", at + 3));
    let detail = only_as_detail(&s, "tag=bad");
    assert_eq!(
        detail.len(),
        4,
        "three trial ticks and shutdown: {detail:?}"
    );
    assert_continuous(&s, "one", 1, 6);
    assert_eq!(s.stop(), 14);
}

/// Point 6: a first version whose `init` crashes is refused by the trial
/// (there is nothing to keep yet) and the server waits; the next good build
/// loads, and its `init` runs in the host exactly once (the trial's run of
/// it, in the probe, is not shown).
#[test]
fn a_first_version_whose_init_crashes_is_rejected_and_a_good_one_loads() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let bad = Counter {
        init_code: SEGV,
        ..Counter::new("bad", 1)
    }
    .source();
    std::fs::write(&src, bad).expect("write the bad first version");
    let mut s = Server::start_default(dir.path(), &[]);
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.starts_with(&format!(
            "[reload] rejected: trial init: {SEGV_SAYS}counter_init+0x"
        )) && line.ends_with(" (no version running yet)"),
        "{line}"
    );

    editor::in_place(&src, &counter("good", 1));
    s.expect_prefix("[reload] loaded logic.so (api=1, v1)");
    s.expect_contains("tag=good init");
    s.expect_contains("tag=good score=3 ");
    assert_eq!(
        s.count(|l| l.contains("tag=good init")),
        1,
        "{}",
        s.transcript()
    );
    assert_eq!(
        s.count(|l| l.starts_with("[fault]")),
        0,
        "{}",
        s.transcript()
    );
    only_as_detail(&s, "tag=bad");
    assert_continuous(&s, "good", 1, 3);
    assert_eq!(scores(&s.lines(), "good")[0], 1, "from a zeroed state");
    assert_eq!(s.stop(), 0);
}

/// Point 7: the trial ticks a copy of the real state. The new version
/// faults on its second tick only if the score it started from (below 1000)
/// was above 15: a zeroed state (1000, 2000, 3000) never faults, the real
/// one, past 20, does. The copy's ticks never reach the host: v1 carries on
/// +1 a tick, never +1000.
#[test]
fn the_trial_ticks_a_copy_of_the_real_state() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_contains("tag=one score=20 ");

    let bad = edit(
        &counter("bad", 1000),
        "    s->score += 1000;",
        &format!(
            "    if (s->score >= 1000 && s->score % 1000 > 15) {{ {SEGV} }}\n    s->score += 1000;"
        ),
    );
    editor::rename_over(&src, &bad);
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.starts_with(&format!(
            "[reload] rejected: trial tick 2: {SEGV_SAYS}counter_tick+0x"
        )) && line.ends_with(" (keeping v1)"),
        "{line}"
    );
    // Trial tick 1 started from a score v1 had printed.
    let detail = s.expect_contains("  | [plugin] tag=bad score=");
    let copied = field(&detail, "score").expect("score") - 1000;
    let at = field(&s.expect_contains("tag=one score="), "score").expect("score");
    s.expect_contains(&format!("tag=one score={} ", at + 3));
    let ones = assert_continuous(&s, "one", 1, 23);
    assert!(
        copied >= 20 && ones.contains(&copied),
        "the trial started from {copied}, not a score of v1:\n{}",
        s.transcript()
    );
    only_as_detail(&s, "tag=bad");
    assert_eq!(s.stop(), 14);
}

/// Point 8: what the probe prints is not the log. A good new version's
/// trial ticks print nothing before `[reload] swapped`, and its first live
/// tick starts from v1's last score (the three trial ticks of +100 are not
/// in it). A failed trial's lines appear only as detail under the rejection.
#[test]
fn the_trial_output_is_hidden_on_success_and_indented_on_failure() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_contains("tag=one score=3 ");

    let bad = Counter {
        fault_at: Some((3, SEGV)),
        ..Counter::new("bad", 10)
    }
    .source();
    editor::rename_over(&src, &bad);
    let rejected = s.expect_prefix("[reload] rejected: trial tick 3: ");
    let first = s.expect_contains("  | [plugin] tag=bad score=");
    let second = s.expect_contains("  | [plugin] tag=bad score=");
    assert_eq!(
        field(&second, "score"),
        field(&first, "score").map(|v| v + 10),
        "{}",
        s.transcript()
    );
    assert!(
        index_of(&s, &first) > index_of(&s, &rejected),
        "detail follows the rejection"
    );

    editor::rename_over(&src, &counter("new", 100));
    let swapped = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    let first_new = s.expect_contains("tag=new score=");
    let lines = s.lines();
    let swap_at = index_of(&s, &swapped);
    let early: Vec<&String> = lines[..swap_at]
        .iter()
        .filter(|l| l.contains("tag=new"))
        .collect();
    assert!(
        early.is_empty(),
        "trial output leaked: {early:?}\n{}",
        s.transcript()
    );
    let last_one = *scores(&lines, "one").last().expect("v1 scores");
    assert_eq!(
        field(&first_new, "score"),
        Some(last_one + 100),
        "{}",
        s.transcript()
    );
    assert_eq!(s.count(|l| l.contains("tag=new init")), 0);
    only_as_detail(&s, "tag=bad");
    assert_continuous(&s, "one", 1, 3);
    s.expect_contains(&format!("tag=new score={} ", last_one + 300));
    assert_continuous(&s, "new", 100, 3);
    assert_eq!(s.stop(), 0);
}

/// Point 9: a constructor with a side effect (a line in `ctor.log`, with its
/// pid) runs twice per load: first in a probe, then in the server; with
/// `--trial-ticks 0` too, whose probe only loads the build (the loader and
/// the load-time code meet new bytes in a throwaway process first).
#[test]
fn constructors_run_first_in_a_probe_then_in_the_server_with_trials_on_and_off() {
    let ctor = r#"__attribute__((constructor)) static void note(void) {
    FILE* f = fopen("ctor.log", "a");
    if (f) { fprintf(f, "%d\n", (int)getpid()); fclose(f); }
}"#;
    let start = |extra: &[&str]| {
        let dir = workdir();
        std::fs::write(dir.path().join("logic.c"), with(&counter("one", 1), ctor))
            .expect("write v1");
        let s = Server::start_default(dir.path(), extra);
        (dir, s)
    };
    let (off_dir, mut off) = start(&["--trial-ticks", "0"]);
    let (on_dir, mut on) = start(&[]);
    let pids = |dir: &Path| -> Vec<i32> {
        std::fs::read_to_string(dir.join("ctor.log"))
            .expect("ctor.log")
            .lines()
            .map(|l| l.parse().expect("a pid"))
            .collect()
    };

    for (s, dir) in [(&mut off, off_dir.path()), (&mut on, on_dir.path())] {
        s.expect_prefix("[reload] loaded logic.so (api=1, v1)");
        s.expect_contains("tag=one score=1 ");
        editor::rename_over(&dir.join("logic.c"), &with(&counter("two", 1), ctor));
        s.expect_prefix("[reload] swapped logic.so (api=1, v2");
        s.expect_contains("tag=two score=");
    }

    for (s, dir) in [(&off, off_dir.path()), (&on, on_dir.path())] {
        let server = s.pid();
        let got = pids(dir);
        assert_eq!(got.len(), 4, "{got:?}");
        for load in got.chunks(2) {
            assert_ne!(load[0], server, "first in a probe: {got:?}");
            assert_eq!(load[1], server, "then in the server: {got:?}");
        }
        assert_ne!(got[0], got[2], "a fresh probe for each build: {got:?}");
    }
    assert_eq!(off.stop(), 0);
    assert_eq!(on.stop(), 0);
}

/// Point 10: a rejected trial leaves no report file in the private shadow
/// folder (nor the rejected build's copy), and the folder goes at exit.
#[test]
fn a_rejected_trial_leaves_no_files_behind() {
    let dir = workdir();
    let tmp = tempfile::tempdir().expect("private TMPDIR");
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start_with_env(
        dir.path(),
        &usual_args(&["--tick-timeout-ms", "300"]),
        &[("TMPDIR", tmp.path())],
    );
    s.expect_contains("tag=one score=2 ");
    let folders = shadow_folders(tmp.path());
    assert_eq!(folders.len(), 1, "one shadow folder: {folders:?}");
    let shadow = &folders[0];
    // Library copies and whatever else a trial might leave, not the
    // folder's bookkeeping.
    let files = || -> Vec<String> {
        std::fs::read_dir(shadow)
            .expect("read the shadow folder")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !support::is_bookkeeping(std::ffi::OsStr::new(name)))
            .collect()
    };
    let live: HashSet<String> = files().into_iter().collect();
    assert_eq!(
        live.len(),
        2,
        "the live copy and the one kept on disk for rollbacks only: {live:?}"
    );
    assert!(live.contains("kept-v1-logic.so"), "{live:?}");

    // A fault in a trial tick (the probe reports it and exits), then a hang
    // (the probe is killed mid-report).
    let faults = Counter {
        fault_at: Some((1, SEGV)),
        ..Counter::new("bad", 10)
    }
    .source();
    let hangs = Counter {
        fault_at: Some((2, "for (;;) {}")),
        ..Counter::new("worse", 10)
    }
    .source();
    for (source, says) in [
        (faults, "[reload] rejected: trial tick 1: SIGSEGV"),
        (hangs, "[reload] rejected: trial: hung in tick 2 for 300 ms"),
    ] {
        editor::rename_over(&src, &source);
        s.expect_prefix(says);
        let now: HashSet<String> = files().into_iter().collect();
        assert!(
            now.iter().all(|f| !f.ends_with(".trial")),
            "trial files left: {now:?}"
        );
        assert_eq!(now, live, "only the live copy remains");
    }
    assert_eq!(s.stop(), 14);
    assert!(
        shadow_folders(tmp.path()).is_empty(),
        "shadow folder left: {:?}",
        shadow_folders(tmp.path())
    );
}

/// Beyond the points: a constructor that forks a helper in the probe (the
/// helper inherits the probe's output pipe and would sleep for a minute)
/// neither holds up the reload nor outlives the trial. The constructor
/// leaves the server itself alone (it knows the server's pid from a file).
#[test]
fn a_helper_forked_in_the_probe_neither_delays_the_swap_nor_outlives_the_trial() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start_default(dir.path(), &[]);
    std::fs::write(dir.path().join("server.pid"), format!("{}\n", s.pid())).expect("server.pid");
    s.expect_contains("tag=one score=2 ");

    let v2 = with(
        &counter("two", 1),
        r#"__attribute__((constructor)) static void helper(void) {
    int server = 0;
    FILE* f = fopen("server.pid", "r");
    if (f) { if (fscanf(f, "%d", &server) != 1) server = 0; fclose(f); }
    if (server == (int)getpid()) return;
    pid_t child = fork();
    if (child == 0) { sleep(60); _exit(0); }
    f = fopen("helper.pid", "w");
    if (f) { fprintf(f, "%d\n", (int)child); fclose(f); }
}"#,
    );
    editor::rename_over(&src, &v2);
    let swapped = s.expect_prefix("[reload] swapped logic.so (api=1, v2, ");
    s.expect_contains("tag=two score=");
    let helper: i32 = std::fs::read_to_string(dir.path().join("helper.pid"))
        .expect("the probe forked a helper")
        .trim()
        .parse()
        .expect("a pid");
    assert_ne!(helper, s.pid());
    // Gone (or a zombie waiting for whoever inherited it to reap it).
    let deadline = Instant::now() + WAIT;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{helper}/stat"))
            .ok()
            .and_then(|stat| {
                let after = &stat[stat.rfind(')')? + 1..];
                after.split_whitespace().next().map(str::to_owned)
            });
        match state.as_deref() {
            None | Some("Z") | Some("X") => break,
            Some(other) => assert!(
                Instant::now() < deadline,
                "helper {helper} still alive ({other}) after: {swapped}"
            ),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(s.stop(), 0);
}

/// A server whose executable is replaced on disk while it runs (a `cargo
/// build` or `cargo install` of hotreload itself) still starts its probes
/// and workers from the program it is: the trial does not fail, and an
/// isolated server goes on loading new versions.
#[test]
fn trials_and_workers_survive_the_servers_binary_being_replaced() {
    for extra in [&[][..], &["--isolate"][..]] {
        let dir = workdir();
        let exe = dir.path().join("hotreload-copy");
        std::fs::copy(support::binary(), &exe).expect("copy the binary");
        let src = dir.path().join("logic.c");
        std::fs::write(&src, counter("one", 1)).expect("write");
        let mut command = std::process::Command::new(&exe);
        command
            .args(["--watch", "logic.c", "--build", CC_BUILD, "--tick-ms", "10"])
            .args(extra);
        let mut s = Server::start_command(dir.path(), command);
        s.expect_contains("tag=one score=2 ");
        // Replaced the way a build replaces it: a new file renamed over it.
        let new = dir.path().join("hotreload-copy.new");
        std::fs::write(&new, b"#!/bin/sh\nexit 99\n").expect("write");
        std::fs::rename(&new, &exe).expect("replace the binary");
        editor::in_place(&src, &counter("two", 1));
        let swapped = s.expect_prefix("[reload] ");
        assert!(
            swapped.starts_with("[reload] swapped logic.so (api=1, v2"),
            "{extra:?}: {swapped}\n{}",
            s.transcript()
        );
        s.expect_contains("tag=two score=");
        assert_eq!(s.stop(), 0, "{extra:?}: {}", s.transcript());
    }
}

/// The first version of a run that restores a state file is tried on that
/// state, which it will tick on: a build that faults only on the restored
/// values is refused by the trial, not met live.
#[test]
fn the_first_trial_runs_on_the_restored_state() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start_default(dir.path(), &["--state-file", "st.bin"]);
    s.expect_contains("tag=one score=5 ");
    assert_eq!(s.stop(), 0, "{}", s.transcript());

    let bad = Counter {
        fault_at: Some((1, "if (((state_t*)p)->score >= 5) abort();")),
        ..Counter::new("bad", 1)
    }
    .source();
    std::fs::write(&src, bad).expect("write the bad one");
    let mut s = Server::start_default(dir.path(), &["--state-file", "st.bin", "--ticks", "5"]);
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(line.contains("trial tick 1: SIGABRT"), "{line}");
    s.wait();
    assert_eq!(
        s.count(|l| l.starts_with("[fault]")),
        0,
        "{}",
        s.transcript()
    );
}

/// A constructor that, in the probe only (where the state image is open
/// read-only; the host has it writable), opens the image again writable
/// through `/proc` and writes over its first bytes.
const POISON_THE_IMAGE: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void poison_the_image(void) {
    for (int fd = 0; fd < 256; fd++) {
        char path[64], link[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n <= 0) continue;
        link[n] = 0;
        if (!strstr(link, "hotreload-trial-image")) continue;
        if ((fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDONLY) continue;
        int rw = open(path, O_RDWR);
        if (rw < 0) continue;
        char junk[64];
        memset(junk, 0x77, sizeof junk);
        (void)pwrite(rw, junk, sizeof junk, 0);
        close(rw);
    }
}
"#;

/// The state image is kept from trial to trial with only what changed
/// rewritten; a probe whose plugin wrote it (hostile code opening it again
/// writable) is found out by the image's modification time: the next
/// trial gets it whole, a line says so, and the state carries on.
#[test]
fn a_probe_that_writes_the_state_image_is_found_and_the_next_trial_gets_it_whole() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start(dir.path(), &usual_args(&[]));
    s.expect_contains("tag=one score=3 ");
    editor::rename_over(&src, &with(&counter("two", 1), POISON_THE_IMAGE));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.expect_contains("tag=two score=");
    editor::rename_over(&src, &counter("three", 1));
    s.expect_prefix("[server] the state image handed to the last trial's probe was written by it");
    s.expect_prefix("[reload] swapped logic.so (api=1, v3");
    s.expect_contains("tag=three score=");
    s.stop();
    // The host's state never saw the junk: one count, without a gap.
    let all: Vec<i64> = ["one", "two", "three"]
        .iter()
        .flat_map(|tag| scores(&s.lines(), tag))
        .collect();
    assert!(
        all.windows(2).all(|w| w[1] == w[0] + 1),
        "scores carried on: {all:?}\n{}",
        s.transcript()
    );
}
