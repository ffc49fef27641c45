//! Plugin faults never take the host down and never lose state: every kind
//! of crash and a hang, on a new version's first tick and on a later one,
//! ends with one [fault] line, the previous version ticking again from the
//! state exactly as it was before the bad tick, and later builds loading
//! normally.
//!
//! These tests are about faults in live code, so they turn the trial run off
//! (`--trial-ticks 0`), which would otherwise refuse most of these builds
//! before they ever ran in the host (see trial.rs).

mod support;

use support::plugin::{Counter, counter};
use support::{Server, editor, field, workdir};

/// C statements that fault, and what the [fault] line must say.
const SEGV: (&str, &str) = (
    "*(volatile int*)0 = 1;",
    "SIGSEGV (address not mapped) at 0x0 in counter_tick+",
);
const BUS: (&str, &str) = (
    "int fd = open(\"empty.bin\", O_RDWR | O_CREAT | O_TRUNC, 0600); \
     volatile char* m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0); m[0] = 1;",
    "SIGBUS",
);
/// A real division: GCC computes `1 / x` without one (it is 0 unless x is ±1).
const FPE: (&str, &str) = (
    "volatile int zero = 0, seven = 7; s_dummy = seven / zero;",
    "SIGFPE (integer divide by zero)",
);
const ILL: (&str, &str) = ("__builtin_trap();", "SIGILL");
const TRAP: (&str, &str) = ("__asm__ volatile(\"int3\");", "SIGTRAP");
const ABORT: (&str, &str) = ("abort();", "SIGABRT (abort)");
const ASSERT: (&str, &str) = ("assert(calls < 0);", "SIGABRT (abort)");
const STACK_OVERFLOW: (&str, &str) = ("hr_test_recurse(0);", "SIGSEGV (stack overflow");
const HANG: (&str, &str) = ("for (;;) {}", "timeout after 300 ms");

/// Starts v1 (step 1), saves a version that faults at its `at`th tick, and
/// checks the recovery; then a good v3 loads and the server exits cleanly.
fn fault_then_recover(fault: (&str, &str), at: u32) {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(
        dir.path(),
        &["--tick-timeout-ms", "300", "--trial-ticks", "0"],
    );
    s.expect_contains("tag=one score=3 ");

    let bad = Counter {
        fault_at: Some((at, fault.0)),
        ..Counter::new("bad", 10)
    }
    .source();
    editor::rename_over(&src, &declare_dummy(&bad));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    let line = s.expect_prefix("[fault] ");
    assert!(line.starts_with("[fault] v2 tick "), "{line}");
    assert!(line.contains(fault.1), "expected {:?} in: {line}", fault.1);
    let faulted_at =
        field(&line.replace("tick ", "tick="), "tick").expect("tick in the fault line");
    assert!(
        line.ends_with(&format!(
            "rolled back to v1, state restored to tick {faulted_at}"
        )),
        "{line}"
    );

    // The score before the bad tick is the last one printed before the
    // fault (the fault strikes before the tick changes or prints anything);
    // v1 carries on from exactly there.
    let lines = s.lines();
    let fault_index = lines.iter().position(|l| l == &line).expect("fault line");
    let before = lines[..fault_index]
        .iter()
        .rev()
        .find_map(|l| {
            l.contains("[plugin] tag=")
                .then(|| field(l, "score"))
                .flatten()
        })
        .expect("a score before the fault");
    let resumed = s.expect_contains("tag=one score=");
    assert_eq!(
        field(&resumed, "score"),
        Some(before + 1),
        "{}",
        s.transcript()
    );
    if at > 1 {
        assert_eq!(s.count(|l| l.contains("tag=bad score=")), at as usize - 1);
    }
    // A hang's fault line says what the lost time was; no second line
    // about falling behind.
    assert_eq!(
        s.count(|l| l.starts_with("[tick] fell")),
        0,
        "{}",
        s.transcript()
    );

    editor::rename_over(&src, &counter("three", 100));
    s.expect_prefix("[reload] swapped logic.so (api=1, v3");
    let three = s.expect_contains("tag=three score=");
    assert!(
        field(&three, "score").is_some_and(|v| v > before + 100),
        "{three}"
    );
    assert_eq!(s.stop(), 0, "the last outcome is the good v3");
    assert_eq!(s.count(|l| l.contains(" init")), 1, "init ran once");
}

/// The fault snippets may assign to `s_dummy`.
fn declare_dummy(source: &str) -> String {
    source.replace(
        "#include \"hotreload.h\"",
        "#include \"hotreload.h\"\nvolatile int s_dummy;",
    )
}

macro_rules! fault_cases {
    ($($name:ident: $fault:expr;)*) => {
        mod on_first_tick {
            use super::*;
            $(#[test] fn $name() { fault_then_recover($fault, 1) })*
        }
        mod on_a_later_tick {
            use super::*;
            $(#[test] fn $name() { fault_then_recover($fault, 3) })*
        }
    };
}

fault_cases! {
    segv: SEGV;
    bus: BUS;
    fpe: FPE;
    ill: ILL;
    trap: TRAP;
    abort: ABORT;
    assert_failure: ASSERT;
    stack_overflow: STACK_OVERFLOW;
    infinite_loop: HANG;
}

#[test]
fn a_fault_in_the_first_version_pauses_and_a_good_build_resumes_with_the_state() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let bad = Counter {
        fault_at: Some((4, SEGV.0)),
        ..Counter::new("bad", 10)
    }
    .source();
    std::fs::write(&src, bad).expect("write");
    let mut s = Server::start_default(dir.path(), &["--trial-ticks", "0"]);
    let line = s.expect_prefix("[fault] ");
    assert!(
        line.starts_with("[fault] v1 tick 3: SIGSEGV")
            && line.ends_with(
                "no earlier version to roll back to: ticking paused until the next good build, state restored to tick 3"
            ),
        "{line}"
    );
    editor::in_place(&src, &counter("good", 1));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    // Three ticks of 10 survived the fault; init does not run again.
    let first = s.expect_contains("tag=good score=");
    assert_eq!(field(&first, "score"), Some(31), "{}", s.transcript());
    assert_eq!(s.count(|l| l.contains("tag=good init")), 0);
    assert_eq!(s.stop(), 0);
}

#[test]
fn a_fault_in_init_pauses_and_the_next_build_runs_init() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let bad = Counter {
        init_code: "*(volatile int*)0 = 1;",
        ..Counter::new("bad", 1)
    }
    .source();
    std::fs::write(&src, bad).expect("write");
    let mut s = Server::start_default(dir.path(), &["--trial-ticks", "0"]);
    let line = s.expect_prefix("[fault] ");
    assert!(line.starts_with("[fault] v1 init: SIGSEGV"), "{line}");
    editor::in_place(&src, &counter("good", 1));
    s.expect_contains("tag=good init");
    s.expect_contains("tag=good score=1 ");
    assert_eq!(s.stop(), 0);
}

/// v1 ticking with trials off, then `bad` saved over it; the server stops
/// after that one reload.
fn one_reload_into(bad: &str) -> (tempfile::TempDir, Server) {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write");
    // No probe at all: what is tested is the server's own guard.
    let mut s = Server::start_default(dir.path(), &["--reloads", "1", "--no-probe"]);
    s.expect_contains("tag=one score=2 ");
    editor::in_place(&src, bad);
    (dir, s)
}

#[test]
fn a_crashing_logic_get_api_is_rejected_and_the_old_code_ticks_on() {
    let (_dir, mut s) = one_reload_into(&counter("bad", 1).replace(
        "{ return &api; }",
        "{ *(volatile int*)0 = 1; return &api; }",
    ));
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.contains("logic_get_api faulted: SIGSEGV") && line.ends_with("(keeping v1)"),
        "{line}"
    );
    assert_eq!(s.exit_code(), 14);
    assert!(s.count(|l| l.contains("tag=one score=")) >= 2);
}

/// A `logic_get_api` that returns a pointer to nothing: the host copies the
/// table through the crash guard, so the bad pointer is a rejection.
#[test]
fn a_table_pointer_to_nothing_is_rejected() {
    let (_dir, mut s) = one_reload_into(&counter("bad", 1).replace(
        "{ return &api; }",
        "{ (void)api; return (logic_api_t*)0x10; }",
    ));
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.contains("logic_get_api returned 0x10, which cannot be read: SIGSEGV")
            && line.ends_with("(keeping v1)"),
        "{line}"
    );
    assert_eq!(s.exit_code(), 14);
}

/// Without a probe, a library's constructors still run under the crash
/// guard: the host runs them itself, after dlopen, instead of the loader.
/// A crashing one is a rejection naming it, and v1 ticks on.
#[test]
fn without_a_probe_a_crashing_constructor_is_rejected_by_name() {
    let (_dir, mut s) = one_reload_into(&format!(
        "{}\n__attribute__((constructor)) static void boom(void) {{ *(volatile int*)0 = 1; }}\n",
        counter("bad", 1)
    ));
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.starts_with(
            "[reload] rejected: a library constructor faulted: SIGSEGV (address not mapped) at 0x0 in boom+"
        ) && line.ends_with("(keeping v1)"),
        "{line}"
    );
    assert_eq!(s.exit_code(), 14);
    assert_eq!(s.count(|l| l.contains("tag=bad")), 0, "{}", s.transcript());
}

/// A constructor that never returns, without a probe: interrupted after
/// `--tick-timeout-ms` like a hanging tick, and the server reloads on.
#[test]
fn without_a_probe_a_hanging_constructor_is_interrupted() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &["--no-probe", "--tick-timeout-ms", "300"]);
    s.expect_contains("tag=one score=2 ");
    let spinning = format!(
        "{}\n__attribute__((constructor)) static void spin(void) {{ for (;;) {{}} }}\n",
        counter("bad", 1)
    );
    editor::in_place(&src, &spinning);
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.starts_with(
            "[reload] rejected: a library constructor faulted: timeout after 300 ms in spin"
        ) && line.ends_with("(keeping v1)"),
        "{line}"
    );
    editor::in_place(&src, &counter("two", 1));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.expect_contains("tag=two score=");
    assert_eq!(s.stop(), 0);
}

/// A destructor that crashes when its version is retired: one [fault] line,
/// the library unloaded anyway, and the server carries on.
#[test]
fn without_a_probe_a_crashing_destructor_is_a_fault_when_its_version_goes() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let crashing = format!(
        "{}\n__attribute__((destructor)) static void boom(void) {{ *(volatile int*)0 = 1; }}\n",
        counter("two", 1)
    );
    std::fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &["--no-probe", "--keep-versions", "1"]);
    s.expect_contains("tag=one score=2 ");
    editor::in_place(&src, &crashing);
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.expect_contains("tag=two score=");
    editor::in_place(&src, &counter("three", 1));
    // v2 is handed back for unloading as v3 is installed: its fault line
    // and v3's swap line may come in either order.
    let line = s.expect_prefix("[fault] ");
    assert!(
        line.starts_with(
            "[fault] v2 destructor (unloading it): SIGSEGV (address not mapped) at 0x0 in boom+"
        ) && line.ends_with("its other destructors were skipped, and it was unloaded anyway"),
        "{line}"
    );
    s.expect_contains("tag=three score=");
    assert_eq!(
        s.count(|l| l.starts_with("[reload] swapped logic.so (api=1, v3")),
        1,
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0);
}

/// After a fault, a build whose library is byte for byte the faulting one
/// (an edit to a comment, a `touch`) is refused: the same code on the same
/// state would fault again. A real change loads.
#[test]
fn the_faulting_build_is_not_loaded_again_until_the_code_changes() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &["--trial-ticks", "0"]);
    s.expect_contains("tag=one score=2 ");
    let bad = Counter {
        fault_at: Some((1, SEGV.0)),
        ..Counter::new("bad", 1)
    }
    .source();
    editor::in_place(&src, &bad);
    s.expect_prefix("[fault] v2 tick ");
    editor::in_place(&src, &format!("{bad}/* only a comment changed */\n"));
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.contains("this build is the one that faulted as v2 (SIGSEGV")
            && line.ends_with("(keeping v1)"),
        "{line}"
    );
    assert_eq!(s.count(|l| l.starts_with("[fault]")), 1, "not run again");
    editor::in_place(&src, &counter("good", 1));
    s.expect_contains("tag=good score=");
    assert_eq!(s.stop(), 0);
}

/// The state restored after a fault is the copy taken before the bad tick,
/// byte for byte, also for a state larger than a page.
#[test]
fn a_large_state_is_restored_exactly() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(
        &src,
        Counter {
            state_extra: 100_000,
            ..Counter::new("one", 1)
        }
        .source(),
    )
    .expect("write");
    let mut s = Server::start_default(dir.path(), &["--trial-ticks", "0"]);
    s.expect_contains("tag=one score=3 ");
    let bad = Counter {
        state_extra: 100_000,
        fault_at: Some((2, SEGV.0)),
        ..Counter::new("bad", 5)
    }
    .source();
    editor::in_place(&src, &bad);
    let line = s.expect_prefix("[fault] v2 tick ");
    let lines = s.lines();
    let at = lines.iter().position(|l| l == &line).expect("fault line");
    let before = lines[..at]
        .iter()
        .rev()
        .find_map(|l| field(l, "score"))
        .expect("score");
    let resumed = s.expect_contains("tag=one score=");
    assert_eq!(field(&resumed, "score"), Some(before + 1));
    assert_eq!(s.stop(), 14, "the last outcome is the fault");
}

/// The guard only catches plugin code: a fault in the host's own code, even
/// on the thread that calls plugin code, still kills the process with that
/// signal (and a core dump where enabled). Uses the debug build's
/// `HOTRELOAD_DEBUG_HOST_FAULT` hook.
#[test]
fn a_fault_in_host_code_still_kills_the_process_with_its_signal() {
    use std::os::unix::process::ExitStatusExt;
    for (kind, signal) in [("segv", libc::SIGSEGV), ("abort", libc::SIGABRT)] {
        let dir = workdir();
        std::fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
        let mut command = std::process::Command::new(support::binary());
        command
            .args([
                "--watch",
                "logic.c",
                "--build",
                support::CC_BUILD,
                "--tick-ms",
                "10",
            ])
            .env("HOTRELOAD_DEBUG_HOST_FAULT", kind);
        let mut s = Server::start_command(dir.path(), command);
        let status = s.wait();
        assert_eq!(
            status.signal(),
            Some(signal),
            "{kind}: {status:?}\n{}",
            s.transcript()
        );
        assert_eq!(
            s.count(|l| l.starts_with("[fault]")),
            0,
            "not mistaken for plugin code"
        );
        assert_eq!(s.count(|l| l.contains("tag=one score=")), 3);
    }
}

#[test]
fn a_fault_in_shutdown_still_exits_cleanly_with_its_code() {
    let dir = workdir();
    let source = counter("one", 1).replace(
        "printf(\"[plugin] tag=one shutdown score=%d\\n\", s->score);",
        "printf(\"[plugin] tag=one shutdown score=%d\\n\", s->score); *(volatile int*)0 = 1;",
    );
    assert!(
        source.contains("*(volatile int*)0"),
        "the fault was injected"
    );
    std::fs::write(dir.path().join("logic.c"), source).expect("write");
    let mut s = Server::start_default(dir.path(), &["--trial-ticks", "0"]);
    s.expect_contains("tag=one score=2 ");
    s.signal(nix::sys::signal::Signal::SIGTERM);
    let line = s.expect_prefix("[fault] ");
    assert!(
        line.starts_with("[fault] v1 shutdown after tick ")
            && line.contains("SIGSEGV")
            && line.ends_with("; exiting as planned"),
        "{line}"
    );
    s.expect_prefix("[state]");
    s.expect_prefix("[exit] code=14");
    assert_eq!(s.exit_code(), 14);
}

/// With debug info (`-g`), the fault line names the source line too.
#[test]
fn with_debug_info_the_fault_names_the_source_line() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            "cc -g -shared -fPIC -o logic.so logic.c",
            "--tick-ms",
            "10",
            "--trial-ticks",
            "0",
        ],
    );
    s.expect_contains("tag=one score=2 ");
    let bad = Counter {
        fault_at: Some((1, SEGV.0)),
        ..Counter::new("bad", 1)
    }
    .source();
    let line_no = bad
        .lines()
        .position(|l| l.contains(SEGV.0))
        .map(|i| i + 1)
        .expect("the faulting line");
    editor::in_place(&src, &bad);
    let line = s.expect_prefix("[fault] v2 tick ");
    assert!(
        line.contains(" in counter_tick+0x") && line.contains(&format!("(logic.c:{line_no});")),
        "expected logic.c:{line_no} in: {line}"
    );
    assert_eq!(s.stop(), 14);
}
