//! Every way a new build can be refused: each ends with one clear line, the
//! running version still ticking from where it was, and the exit code of
//! that outcome (`--reloads 1` stops after the attempt).

mod support;

use support::plugin::{Counter, counter};
use support::{Server, editor, field, workdir};

/// The build runs `build.sh`, which a case rewrites to produce its bad
/// library; `logic.c` is what the watcher sees change.
const GOOD_BUILD: &str = "cc -shared -fPIC -o logic.so logic.c\n";

struct Case<'a> {
    /// The source saved for the bad build.
    source: String,
    /// The build script for the bad build.
    script: &'a str,
    code: i32,
    /// Text the rejection line must contain.
    message: &'a str,
}

fn run(case: Case) {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("good", 1)).expect("write source");
    std::fs::write(dir.path().join("build.sh"), GOOD_BUILD).expect("write script");
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            "sh build.sh",
            "--lib",
            "logic.so",
            "--tick-ms",
            "10",
            "--reloads",
            "1",
        ],
    );
    s.expect_contains("tag=good score=5 ");

    std::fs::write(dir.path().join("build.sh"), case.script).expect("write bad script");
    editor::rename_over(&src, &case.source);
    let rejected = s.expect(case.message, |l| {
        (l.starts_with("[reload] rejected: ") || l.starts_with("[build] failed: "))
            && l.contains(case.message)
    });
    if rejected.starts_with("[reload]") {
        assert!(rejected.ends_with("(keeping v1)"), "{rejected}");
    }
    // The old version kept ticking through the attempt, from where it was.
    let scores: Vec<i64> = s
        .lines()
        .iter()
        .filter(|l| l.contains("tag=good score="))
        .filter_map(|l| field(l, "score"))
        .collect();
    assert!(
        scores.windows(2).all(|w| w[1] == w[0] + 1),
        "scores continuous: {scores:?}"
    );
    s.expect_prefix(&format!("[exit] code={}", case.code));
    assert_eq!(s.exit_code(), case.code, "{}", s.transcript());
    assert_eq!(
        s.count(|l| l.contains("tag=bad")),
        0,
        "bad code never ran:\n{}",
        s.transcript()
    );
    assert_eq!(s.count(|l| l.contains("tag=good shutdown")), 1);
}

fn bad(step: i32) -> Counter<'static> {
    Counter::new("bad", step)
}

#[test]
fn build_failure_keeps_the_old_code_and_exits_9() {
    run(Case {
        source: counter("bad", 2).replace("s->score +=", "s->score +== ;"),
        script: GOOD_BUILD,
        code: 9,
        message: "error:",
    });
}

#[test]
fn state_size_change_is_an_abi_mismatch_exit_10() {
    run(Case {
        source: Counter {
            state_extra: 4,
            ..bad(2)
        }
        .source(),
        script: GOOD_BUILD,
        code: 10,
        message: "state_size mismatch: expected 4 bytes (the state the host owns), found 8",
    });
}

#[test]
fn api_version_change_is_an_abi_mismatch_exit_10() {
    run(Case {
        source: Counter { api: 2, ..bad(2) }.source(),
        script: GOOD_BUILD,
        code: 10,
        message: "api_version mismatch: expected 1, found 2",
    });
}

#[test]
fn garbage_file_is_not_loadable_exit_11() {
    run(Case {
        source: counter("bad", 2),
        script: "printf 'this is not a library at all' > logic.so\n",
        code: 11,
        message: "expected an ELF shared object, found 28 bytes of text starting \"this is not a li\"",
    });
}

#[test]
fn truncated_library_is_refused_before_dlopen_exit_11() {
    run(Case {
        source: counter("bad", 2),
        script: "cc -shared -fPIC -o full.so logic.c && head -c 6000 full.so > logic.so\n",
        code: 11,
        message: "truncated",
    });
}

#[test]
fn an_executable_is_not_a_shared_object_exit_11() {
    let mut source = counter("bad", 2);
    source.push_str("int main(void) { return 0; }\n");
    run(Case {
        source,
        script: "cc -no-pie -o logic.so logic.c\n",
        code: 11,
        message: "expected a shared object (ET_DYN), found an executable",
    });
}

#[test]
fn unresolved_symbol_is_refused_by_dlopen_exit_11() {
    let source = counter("bad", 2)
        .replace(
            "#include <stdio.h>",
            "#include <stdio.h>\nextern int not_defined_anywhere(void);",
        )
        .replace("s->score += 2;", "s->score += not_defined_anywhere();");
    run(Case {
        source,
        script: GOOD_BUILD,
        code: 11,
        // The loader's own words, from dlerror(): "dlopen refused it:
        // <copy>: undefined symbol: not_defined_anywhere".
        message: ": undefined symbol: not_defined_anywhere",
    });
}

#[test]
fn missing_entry_point_exit_12() {
    run(Case {
        source: counter("bad", 2).replace("logic_get_api(void)", "logic_get_api_renamed(void)"),
        script: GOOD_BUILD,
        code: 12,
        message: "missing entry point: expected an exported function logic_get_api, found no such symbol",
    });
}

#[test]
fn hidden_entry_point_is_named_as_such_exit_12() {
    run(Case {
        source: counter("bad", 2).replace(
            "HOTRELOAD_EXPORT logic_api_t*",
            "__attribute__((visibility(\"hidden\"))) logic_api_t*",
        ),
        script: GOOD_BUILD,
        code: 12,
        message: "defined but not exported",
    });
}

#[test]
fn null_tick_exit_13() {
    run(Case {
        source: Counter {
            table: Some(".init = counter_init, .tick = 0, .shutdown = counter_shutdown"),
            ..bad(2)
        }
        .source()
        .replace(
            "static void counter_tick",
            "__attribute__((unused)) static void counter_tick",
        ),
        script: GOOD_BUILD,
        code: 13,
        message: "expected non-NULL init, tick and shutdown, found NULL tick",
    });
}

#[test]
fn null_table_exit_13() {
    run(Case {
        source: counter("bad", 2).replace("{ return &api; }", "{ (void)api; return 0; }"),
        script: GOOD_BUILD,
        code: 13,
        message: "logic_get_api returned NULL",
    });
}

/// After a rejection, the next good build loads normally: a refused build
/// leaves nothing behind that blocks later ones.
#[test]
fn a_good_build_after_rejections_loads() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_contains("tag=one score=3 ");
    editor::in_place(
        &src,
        &Counter {
            state_extra: 8,
            ..Counter::new("bad", 5)
        }
        .source(),
    );
    s.expect_prefix("[reload] rejected: state_size mismatch");
    editor::in_place(&src, "garbage(");
    s.expect_prefix("[build] failed");
    editor::in_place(&src, &counter("two", 1000));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    let line = s.expect_contains("tag=two score=");
    assert!(field(&line, "score").is_some_and(|v| v > 1000), "{line}");
    assert_eq!(s.stop(), 0);
}

/// A first version asking for more state than can be allocated is refused
/// like any other bad build, and does not fix the state's size: the next
/// good build loads normally.
#[test]
fn unallocatable_state_size_is_refused_and_does_not_stick() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let huge = counter("huge", 1).replace(
        ".state_size = sizeof(state_t)",
        ".state_size = (size_t)1 << 50",
    );
    std::fs::write(&src, huge).expect("write");
    let mut s = Server::start_default(dir.path(), &[]);
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.contains(
            "state_size: expected a size this host can allocate, found 1125899906842624 bytes"
        ) && line.ends_with("(no version running yet)"),
        "{line}"
    );
    editor::in_place(&src, &counter("good", 1));
    s.expect_prefix("[reload] loaded logic.so (api=1, v1)");
    s.expect_contains("tag=good score=2 ");
    assert_eq!(s.stop(), 0);
    assert_eq!(s.count(|l| l.contains("tag=huge")), 0);
}
