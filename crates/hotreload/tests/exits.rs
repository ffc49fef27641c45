//! The state survives every way a run can end, and a run that cannot go on
//! says so and ends: an unwritable state file is refused at start, a save
//! that fails later is reported, retried and rescued, a second Ctrl-C still
//! saves, two servers never share a state file by accident, a plugin's
//! `exit()` is a fault of its version, a Rust panic names itself, scripted
//! runs never wait for a change nobody makes, and the user signals do what
//! `--help` says.

mod support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::plugin::{Counter, counter};
use support::{CC_BUILD, Server, editor, field, workdir};

/// Starts the usual server on a counter tagged `tag` in a fresh folder.
fn serve(tag: &str, extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter(tag, 1)).expect("write");
    let server = Server::start_default(dir.path(), extra);
    (dir, server)
}

/// Runs the binary to completion and returns (exit code, stdout, stderr).
fn run_to_end(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(support::binary())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run hotreload");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_state_file_that_cannot_be_written_stops_the_start() {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    for (state_file, needles) in [
        (
            "nodir/st.bin",
            &["nodir/st.bin", "nodir", "found nothing"][..],
        ),
        ("logic.c/st.bin", &["logic.c/st.bin", "found a file"][..]),
    ] {
        let (code, stdout, stderr) = run_to_end(
            dir.path(),
            &[
                "--watch",
                "logic.c",
                "--build",
                CC_BUILD,
                "--state-file",
                state_file,
            ],
        );
        assert_eq!(code, 15, "{state_file}: {stdout}{stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{state_file}: {needle:?} in {stderr}"
            );
        }
        assert!(!stdout.contains("[build]"), "nothing ran: {stdout}");
    }
    assert!(!dir.path().join("logic.so").exists(), "no build ran");
}

#[test]
fn a_save_that_fails_later_is_said_retried_rescued_and_costs_the_exit_code() {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    fs::create_dir(dir.path().join("d")).expect("mkdir");
    let mut s = Server::start_default(
        dir.path(),
        &["--state-file", "d/st.bin", "--save-every", "5"],
    );
    s.expect_contains("tag=one score=6 ");
    // Moved away in one step: a save in progress cannot make a removal
    // fail half-way ("directory not empty").
    let gone = |n: u32| dir.path().join(format!("gone-{n}"));
    fs::rename(dir.path().join("d"), gone(1)).expect("mv d away");
    let said = s.expect_prefix("[state] cannot save the state to d/st.bin: ");
    assert!(
        said.ends_with("trying again at the next save and at exit"),
        "{said}"
    );
    // Said once when saves start failing, not at every save; and again
    // when they work again.
    s.expect_contains("tag=one score=40 ");
    assert_eq!(
        s.count(|l| l.starts_with("[state] cannot save")),
        1,
        "{}",
        s.transcript()
    );
    fs::create_dir(dir.path().join("d")).expect("mkdir again");
    s.expect_prefix("[state] saved to d/st.bin again at tick ");
    fs::rename(dir.path().join("d"), gone(2)).expect("mv d away again");
    s.expect_prefix("[state] cannot save the state to d/st.bin: ");
    s.signal(Signal::SIGTERM);
    let shutdown = s.expect_contains("tag=one shutdown score=");
    let at_exit =
        s.expect_prefix("[state] cannot save the state to d/st.bin at exit (tried 3 times): ");
    let rescued = at_exit
        .split("saved it to ")
        .nth(1)
        .and_then(|rest| rest.split(" instead").next())
        .unwrap_or_else(|| panic!("no rescue in {at_exit}"))
        .to_owned();
    let exit = s.expect_prefix("[exit] code=16");
    assert!(exit.contains("could not be saved"), "{exit}");
    assert_eq!(s.exit_code(), 16);

    // The rescued file is a state file the next run restores from.
    let rescued = dir.path().join(rescued);
    assert!(rescued.is_file(), "{} exists", rescued.display());
    fs::create_dir(dir.path().join("d")).expect("mkdir for the next run");
    fs::copy(&rescued, dir.path().join("d/st.bin")).expect("copy the rescue back");
    let mut next = Server::start_default(dir.path(), &["--state-file", "d/st.bin"]);
    next.expect_contains("(restored from d/st.bin; v1)");
    let first = next.expect_contains("tag=one score=");
    assert_eq!(
        field(&first, "score"),
        field(&shutdown, "score").map(|n| n + 1),
        "the rescued state is the one at exit:\n{}",
        next.transcript()
    );
    assert_eq!(next.stop(), 0);
}

#[test]
fn a_second_ctrl_c_still_saves_the_last_completed_ticks_state() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    // `shutdown` never returns, and the watchdog is far away: only a second
    // Ctrl-C ends this run.
    let stuck = counter("one", 1).replace(
        "printf(\"[plugin] tag=one shutdown score=%d\\n\", s->score);",
        "printf(\"[plugin] tag=one shutdown score=%d\\n\", s->score); fflush(stdout); s->score = -1; for (;;) {}",
    );
    assert!(stuck.contains("for (;;)"));
    fs::write(&src, stuck).expect("write");
    // (A trial would refuse this build for its hanging `shutdown`.)
    let mut s = Server::start_default(
        dir.path(),
        &[
            "--state-file",
            "st.bin",
            "--tick-timeout-ms",
            "600000",
            "--trial-ticks",
            "0",
        ],
    );
    s.expect_contains("tag=one score=5 ");
    s.signal(Signal::SIGINT);
    let stopping = s.expect_prefix("[server] stopping (SIGINT)");
    assert!(stopping.contains("Ctrl-C again"), "{stopping}");
    let shutdown = s.expect_contains("tag=one shutdown score=");
    let last = field(&shutdown, "score").expect("score");
    s.signal(Signal::SIGINT);
    let forced = s.expect_prefix("[exit] code=130 (second SIGINT: ");
    assert!(
        forced.contains(&format!("saved the state as of tick {last} to st.bin")),
        "{forced}"
    );
    assert_eq!(s.wait().code(), Some(130));
    assert_eq!(
        s.count(|l| l.starts_with("[server] cannot remove")),
        0,
        "{}",
        s.transcript()
    );

    // What was saved is the state before `shutdown` began, not its -1.
    fs::write(&src, counter("two", 1)).expect("write");
    let mut next = Server::start_default(dir.path(), &["--state-file", "st.bin"]);
    let first = next.expect_contains("tag=two score=");
    // The forced exit removed its private folder: nothing is left to reap.
    assert_eq!(
        next.count(|l| l.contains("private folder")),
        0,
        "{}",
        next.transcript()
    );
    assert_eq!(
        field(&first, "score"),
        Some(last + 1),
        "{}",
        next.transcript()
    );
    assert_eq!(next.stop(), 0);
}

#[test]
fn a_second_server_on_the_same_state_file_is_refused_naming_the_first() {
    let (dir, mut first) = serve("one", &["--state-file", "st.bin"]);
    first.expect_contains("tag=one score=2 ");
    let (code, stdout, stderr) = run_to_end(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            CC_BUILD,
            "--state-file",
            "st.bin",
            // The control socket of this folder is the first server's.
            "--no-control",
        ],
    );
    assert_eq!(code, 15, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "in use by another hotreload (pid {})",
            first.pid()
        )) && stderr.contains("--no-state-lock"),
        "{stderr}"
    );
    // Told otherwise, it runs.
    let mut second = Server::start_default(
        dir.path(),
        &[
            "--state-file",
            "st.bin",
            "--no-state-lock",
            "--ticks",
            "3",
            "--no-control",
        ],
    );
    second.expect_prefix("[reload] loaded logic.so");
    assert_eq!(second.exit_code(), 0);
    assert_eq!(first.stop(), 0);
    assert!(
        !dir.path().join(".st.bin.lock").exists(),
        "the lock file goes with the server"
    );
}

/// Runs with `args` (a scripted run) and checks it ends by itself, quickly,
/// with `code`, saying why.
fn ends_by_itself(source: &str, args: &[&str], code: i32, why: &str) {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), source).expect("write");
    let started = Instant::now();
    let mut s = Server::start_default(dir.path(), args);
    let status = s.wait();
    assert_eq!(status.code(), Some(code), "{args:?}:\n{}", s.transcript());
    assert!(
        s.count(|l| l.starts_with("[server] ") && l.contains(why)) == 1,
        "{args:?}: no line saying {why:?}:\n{}",
        s.transcript()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it did not wait for a change"
    );
}

#[test]
fn a_scripted_run_that_cannot_tick_ends_at_once_with_its_code() {
    ends_by_itself(
        "this is not C\n",
        &["--ticks", "5"],
        9,
        "no version could be loaded; stopping, because a run with --ticks 5 does not wait",
    );
    let wrong_api = Counter {
        api: 2,
        ..Counter::new("one", 1)
    }
    .source();
    ends_by_itself(
        &wrong_api,
        &["--reloads", "1"],
        10,
        "no version could be loaded; stopping, because a run with --reloads 1",
    );
    let faults = Counter {
        fault_at: Some((3, "*(volatile int*)0 = 1;")),
        ..Counter::new("one", 1)
    }
    .source();
    ends_by_itself(
        &faults,
        &["--ticks", "100", "--trial-ticks", "0"],
        14,
        "no version is left to tick; stopping, because a run with --ticks 100",
    );
}

#[test]
fn a_scripted_run_whose_state_file_no_longer_fits_ends_at_once() {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let mut first = Server::start_default(dir.path(), &["--state-file", "st.bin", "--ticks", "3"]);
    assert_eq!(first.exit_code(), 0, "{}", first.transcript());
    // A bigger state and no layout to migrate by.
    let bigger = Counter {
        state_extra: 8,
        ..Counter::new("two", 1)
    }
    .source();
    fs::write(dir.path().join("logic.c"), bigger).expect("write");
    let mut s = Server::start_default(dir.path(), &["--state-file", "st.bin", "--ticks", "3"]);
    assert_eq!(s.exit_code(), 10, "{}", s.transcript());
    assert_eq!(
        s.count(|l| l.starts_with("[server] no version could be loaded; stopping")),
        1,
        "{}",
        s.transcript()
    );
}

#[test]
fn a_session_that_never_loaded_anything_does_not_exit_0() {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            "sleep 30; cc -shared -fPIC -o logic.so logic.c",
            "--lib",
            "logic.so",
        ],
    );
    s.expect_prefix("[server] running");
    s.signal(Signal::SIGTERM);
    s.expect_prefix("[state] none");
    let exit = s.expect_prefix("[exit] code=17");
    assert!(
        exit.contains("stopped before any version was loaded"),
        "{exit}"
    );
    assert_eq!(s.exit_code(), 17);
}

#[test]
fn sigusr1_rebuilds_and_sigusr2_prints_the_state() {
    let (_dir, mut s) = serve("one", &[]);
    s.expect_contains("tag=one score=2 ");
    s.signal(Signal::SIGUSR1);
    s.expect_prefix("[watch] rebuild requested; building now");
    s.expect_prefix("[build] success");
    s.expect_prefix("[reload] the build is byte for byte the running v1; nothing to swap");
    s.signal(Signal::SIGUSR2);
    let state = s.expect_prefix("[state] ");
    assert!(state.contains("(on request; v1, tick "), "{state}");
    // Still running: neither signal stops it.
    let later = s.lines().len();
    s.expect(&format!("a tick after line {later}"), |l| {
        l.contains("tag=one score=")
    });
    assert_eq!(s.stop(), 0);
}

#[test]
fn a_failed_build_names_the_version_that_keeps_running() {
    let (dir, mut s) = serve("one", &[]);
    s.expect_contains("tag=one score=2 ");
    editor::in_place(&dir.path().join("logic.c"), "this is not C\n");
    s.expect_prefix("[build] failed: ");
    s.expect_prefix("[build] exit status 1 after ");
    s.expect_prefix("[reload] rejected, keeping old plugin (v1); waiting for the next change");
    assert_eq!(s.stop(), 9);
}

/// v1 counts; v2 calls `call` at its third tick; the host survives, says
/// what happened, and v1 ticks on from the state before that tick.
fn a_way_out_is_a_fault_of_its_version(call: &str, said: &str) {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &["--trial-ticks", "0"]);
    s.expect_contains("tag=one score=3 ");
    let v2 = Counter {
        fault_at: Some((3, call)),
        ..Counter::new("two", 100)
    }
    .source()
    .replace(
        "#include <unistd.h>",
        "#include <unistd.h>\n#include <pthread.h>",
    );
    editor::in_place(&src, &v2);
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    let fault = s.expect_prefix("[fault] v2 tick ");
    assert!(
        fault.contains(said)
            && fault.contains("in counter_tick+")
            && fault.contains("rolled back to v1"),
        "{call}: {fault}"
    );
    let before = s
        .lines()
        .iter()
        .filter(|l| l.contains("tag=two score="))
        .filter_map(|l| field(l, "score"))
        .max()
        .expect("v2 ticked twice");
    let next = s.expect_contains("tag=one score=");
    assert_eq!(
        field(&next, "score"),
        Some(before + 1),
        "{}",
        s.transcript()
    );
    s.signal(Signal::SIGTERM);
    s.expect_contains("tag=one shutdown score=");
    s.expect_prefix("[exit] code=14");
    assert_eq!(s.exit_code(), 14);
}

#[test]
fn a_plugin_calling_exit_is_a_fault_not_the_end() {
    a_way_out_is_a_fault_of_its_version("exit(7);", "exit(7) called");
}

#[test]
fn a_plugin_calling_underscore_exit_is_a_fault_not_the_end() {
    a_way_out_is_a_fault_of_its_version("_exit(7);", "_exit(7) called");
    a_way_out_is_a_fault_of_its_version("_Exit(8);", "_Exit(8) called");
    a_way_out_is_a_fault_of_its_version("quick_exit(9);", "quick_exit(9) called");
}

#[test]
fn a_plugin_calling_pthread_exit_on_the_tick_thread_is_a_fault() {
    a_way_out_is_a_fault_of_its_version(
        "pthread_exit(0);",
        "pthread_exit called on the host's thread",
    );
}

#[test]
fn exit_in_a_trial_refuses_the_build() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_contains("tag=one score=2 ");
    let v2 = Counter {
        fault_at: Some((2, "exit(7);")),
        ..Counter::new("two", 100)
    }
    .source();
    editor::in_place(&src, &v2);
    let rejected = s.expect_prefix("[reload] rejected: trial tick 2: exit(7) called");
    assert!(rejected.ends_with("(keeping v1)"), "{rejected}");
    s.expect_contains("tag=one score=");
    assert_eq!(s.stop(), 14);
}

#[test]
fn a_plugin_closing_stdout_does_not_silence_the_host() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let v1 = Counter {
        fault_at: Some((2, "close(1);")),
        ..Counter::new("one", 1)
    }
    .source();
    fs::write(&src, v1).expect("write");
    let mut s = Server::start_default(dir.path(), &["--trial-ticks", "0"]);
    s.expect_prefix("[reload] loaded logic.so");
    // The plugin's own printf now goes nowhere; the host's lines do not.
    editor::in_place(&src, &counter("two", 1));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.signal(Signal::SIGTERM);
    s.expect_prefix("[exit] code=0");
    assert_eq!(s.exit_code(), 0);
}

/// A Rust cdylib with the seed ABI written by hand, whose tick panics with
/// `message` once the score reaches 3.
fn rust_panicking_plugin(dir: &Path, message: &str) {
    let source = format!(
        r#"use std::ffi::c_void;
#[repr(C)] pub struct State {{ score: i32 }}
#[repr(C)] pub struct Api {{
    api_version: i32, state_size: usize,
    init: unsafe extern "C" fn(*mut c_void),
    tick: unsafe extern "C" fn(*mut c_void, f64),
    shutdown: unsafe extern "C" fn(*mut c_void),
}}
unsafe extern "C" fn init(s: *mut c_void) {{ unsafe {{ (*(s as *mut State)).score = 0 }} }}
unsafe extern "C" fn tick(s: *mut c_void, _dt: f64) {{
    let state = unsafe {{ &mut *(s as *mut State) }};
    state.score += 1;
    println!("[plugin] rust score={{}}", state.score);
    if state.score == 3 {{ panic!("{message}"); }}
}}
unsafe extern "C" fn shutdown(_s: *mut c_void) {{}}
static API: Api = Api {{ api_version: 1, state_size: std::mem::size_of::<State>(), init, tick, shutdown }};
#[unsafe(no_mangle)] pub extern "C" fn logic_get_api() -> *const Api {{ &API }}
"#
    );
    fs::write(dir.join("lib.rs"), source).expect("write lib.rs");
}

const RUSTC_BUILD: &str = "rustc --edition 2024 --crate-type cdylib -o liblogic.so lib.rs";

fn serve_rust(dir: &Path, trial_ticks: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--watch",
        "lib.rs",
        "--build",
        RUSTC_BUILD,
        "--lib",
        "liblogic.so",
        "--tick-ms",
        "10",
        "--trial-ticks",
        trial_ticks,
    ];
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

#[test]
fn a_rust_panic_is_named_in_the_fault_line() {
    let dir = workdir();
    rust_panicking_plugin(dir.path(), "the score hit three");
    for extra in [&[][..], &["--isolate"]] {
        let mut s = serve_rust(dir.path(), "0", extra);
        let fault = s.expect_prefix("[fault] v1 tick 2: ");
        assert!(
            fault.contains("panicked at lib.rs:14:")
                && fault.contains("\"the score hit three\" (SIGABRT)")
                && !fault.contains("libc.so"),
            "{extra:?}: {fault}"
        );
        assert_eq!(s.stop(), 14);
    }

    // The same panic in a trial (a probe, or an isolated worker) is named
    // the same way.
    let dir = workdir();
    rust_panicking_plugin(dir.path(), "again");
    for extra in [&[][..], &["--isolate"]] {
        let mut s = serve_rust(dir.path(), "5", extra);
        let rejected = s.expect_prefix("[reload] rejected: trial tick 3: ");
        assert!(
            rejected.contains("panicked at lib.rs:14:") && rejected.contains("\"again\" (SIGABRT)"),
            "{extra:?}: {rejected}"
        );
        assert_eq!(s.stop(), 14);
    }
}

#[test]
fn retired_versions_that_stay_mapped_are_counted_and_warned_about() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("v0", 1)).expect("write");
    let build = "cc -shared -fPIC -Wl,-z,nodelete -o logic.so logic.c";
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            build,
            "--tick-ms",
            "10",
            "--keep-versions",
            "1",
            "--trial-ticks",
            "0",
        ],
    );
    s.expect_contains("tag=v0 score=1 ");
    for n in 1..=9 {
        editor::in_place(&src, &counter(&format!("v{n}"), 1));
        s.expect_contains(&format!("tag=v{n} score="));
    }
    // Lines of the reload thread and the tick thread interleave: found by
    // content, not by order.
    assert_eq!(s.stop(), 0);
    let warnings: Vec<String> = s
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("[reload] warning: 8 retired versions hold "))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", s.transcript());
    assert!(
        warnings[0].contains(" KB that only a restart"),
        "{}",
        warnings[0]
    );
    let eighth = s
        .lines()
        .into_iter()
        .find(|l| l.starts_with("[reload] v8 of logic.so is still mapped"))
        .unwrap_or_else(|| panic!("no line for v8:\n{}", s.transcript()));
    assert!(
        eighth.contains("8 retired versions stayed so far"),
        "{eighth}"
    );
    // At exit the running version is retired too: ten in all.
    assert_eq!(
        s.count(|l| l.starts_with("[reload] 10 retired versions stayed mapped until exit (")),
        1,
        "{}",
        s.transcript()
    );
}

/// The only version faults, so ticking pauses and the run ends (`--ticks`):
/// the state saved then is still that version's, with its layout, so the
/// next run restores it and goes on from it.
#[test]
fn a_state_saved_while_ticking_is_paused_restores() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let faulty = Counter {
        fault_at: Some((5, "*(volatile int*)0 = 1;")),
        ..Counter::new("one", 1)
    };
    fs::write(&src, faulty.source()).expect("write");
    let build = "cc -g -shared -fPIC -o logic.so logic.c";
    let args = [
        "--watch",
        "logic.c",
        "--build",
        build,
        "--tick-ms",
        "10",
        "--trial-ticks",
        "0",
        "--state-file",
        "st.bin",
    ];
    let mut with_ticks = args.to_vec();
    with_ticks.extend_from_slice(&["--ticks", "50"]);
    let mut s = Server::start(dir.path(), &with_ticks);
    let last = s.expect_prefix("[state] score=");
    assert!(last.starts_with("[state] score=0 (initial; v1)"), "{last}");
    let paused = s.expect_contains("(final; ");
    assert_eq!(
        paused,
        "[state] score=4 (final; v1's, ticking paused, tick 4)",
        "{}",
        s.transcript()
    );
    assert_eq!(s.exit_code(), 14, "{}", s.transcript());

    fs::write(&src, counter("two", 1)).expect("write");
    let mut s = Server::start(dir.path(), &args);
    let restored = s.expect_prefix("[state] score=");
    assert!(
        restored.starts_with("[state] score=4 (restored from st.bin"),
        "{restored}\n{}",
        s.transcript()
    );
    s.expect_contains("tag=two score=5 ");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}
