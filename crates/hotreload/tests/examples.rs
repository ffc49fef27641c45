//! The bundled examples keep working: the particles plugin is deterministic
//! for a seed (and a reload on the way changes nothing), the counter plugin
//! builds and ticks, and the particles demo runs to the end, migrating the
//! state while it runs.
//!
//! The examples are built with `-Wall -Wextra -Werror`: they must compile
//! cleanly.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Server, editor, workdir};

const STRICT_BUILD: &str = "cc -g -Wall -Wextra -Werror -shared -fPIC -o logic.so logic.c";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A work folder holding a copy of `examples/<name>/logic.c` and the header.
fn example(name: &str) -> tempfile::TempDir {
    let dir = workdir();
    let src = repo().join("examples").join(name).join("logic.c");
    std::fs::copy(&src, dir.path().join("logic.c"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    dir
}

/// Starts the server on the example in `dir` with the strict build.
fn start(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--watch", "logic.c", "--build", STRICT_BUILD];
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

/// Runs the particles example for `ticks` ticks with `seed` and returns its
/// `[state]` and `[plugin]` lines.
fn particles(seed: &str, ticks: &str) -> Vec<String> {
    let dir = example("particles");
    let mut s = start(
        dir.path(),
        &[
            "--tick-ms",
            "2",
            "--seed",
            seed,
            "--state-every",
            "20",
            "--ticks",
            ticks,
        ],
    );
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
    let lines: Vec<String> = s
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("[state] ") || l.starts_with("[plugin] "))
        .collect();
    let last = lines.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with(&format!("[state] t={ticks} particles=16 "))
            && last.ends_with(&format!("(final; v1, tick {ticks})")),
        "{}",
        s.transcript()
    );
    lines
}

fn final_state(lines: &[String]) -> &str {
    lines.last().map(String::as_str).unwrap_or_default()
}

#[test]
fn particles_with_the_same_seed_run_the_same() {
    let link = repo().join("examples/particles/hotreload.h");
    assert_eq!(
        std::fs::read_link(&link).expect("examples/particles/hotreload.h is a link"),
        Path::new("../../include/hotreload.h")
    );
    let runs: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["42", "42", "7"]
            .into_iter()
            .map(|seed| scope.spawn(move || particles(seed, "100")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("run"))
            .collect()
    });
    let (a, b, other) = (&runs[0], &runs[1], &runs[2]);
    assert_eq!(a[0], "[plugin] seed 42: 16 particles in a 10x10 box");
    // Every line, the final state included, is the same for the same seed.
    assert_eq!(a, b);
    assert_eq!(
        a.iter().filter(|l| l.starts_with("[state] ")).count(),
        7,
        "initial, every 20 ticks, final: {a:#?}"
    );
    assert_ne!(
        final_state(a),
        final_state(other),
        "seed 7 runs differently"
    );
    assert_eq!(other[0], "[plugin] seed 7: 16 particles in a 10x10 box");
}

#[test]
fn a_reload_on_the_way_leaves_the_particles_run_unchanged() {
    const TICKS: &str = "2500";
    let plain = std::thread::spawn(|| particles("42", TICKS));
    let dir = example("particles");
    let src = dir.path().join("logic.c");
    let mut s = start(
        dir.path(),
        &[
            "--tick-ms",
            "2",
            "--seed",
            "42",
            "--state-every",
            "20",
            "--ticks",
            TICKS,
        ],
    );
    s.expect_contains("(v1, tick 20)");
    // New code that only says something else when it is loaded.
    let source = std::fs::read_to_string(&src).expect("read");
    let edited = source.replace("new code from tick", "newer code from tick");
    assert_ne!(
        source, edited,
        "the on_reload message is where the test expects it"
    );
    editor::rename_over(&src, &edited);
    let swap = s.expect_prefix("[reload] ");
    assert!(
        swap.starts_with("[reload] swapped logic.so (api=1, v2,") && !swap.contains("migrated"),
        "{}",
        s.transcript()
    );
    s.expect_prefix("[plugin] newer code from tick ");
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
    let reloaded = s.lines();
    let reloaded = reloaded
        .iter()
        .rev()
        .find(|l| l.starts_with("[state] "))
        .expect("final");
    let plain = plain.join().expect("plain run");
    // Only the version differs: v2 ran the end of the run.
    assert_eq!(
        reloaded.replace("(final; v2,", "(final; v1,"),
        final_state(&plain),
        "{}",
        s.transcript()
    );
}

#[test]
fn the_counter_example_builds_and_ticks() {
    let link = repo().join("examples/counter/hotreload.h");
    assert_eq!(
        std::fs::read_link(&link).expect("examples/counter/hotreload.h is a link"),
        Path::new("../../include/hotreload.h")
    );
    let dir = example("counter");
    let mut s = start(dir.path(), &["--tick-ms", "2", "--ticks", "25"]);
    s.expect_prefix("[build] success (");
    s.expect_prefix("[reload] loaded logic.so (api=1, v1)");
    s.expect("initial state", |l| l == "[state] score=0 (initial; v1)");
    s.expect("score 10", |l| l == "[counter] score=10");
    s.expect("score 20", |l| l == "[counter] score=20");
    s.expect("final score", |l| l == "[counter] final score=25");
    s.expect("final state", |l| {
        l == "[state] score=25 (final; v1, tick 25)"
    });
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
    assert_eq!(s.count(|l| l.contains("warning")), 0, "{}", s.transcript());
}

/// Runs `examples/particles/demo.sh` on the binary under test (so it does not
/// build a release binary of its own; `.ci/run` runs it as shipped).
#[test]
fn the_particles_demo_migrates_the_state_while_it_runs() {
    let script = repo().join("examples/particles/demo.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .env("HOTRELOAD_BIN", support::binary())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start demo.sh");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // The demo gives up on its own after 10 s without an expected line.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("demo.sh did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().expect("stdout");
    let err = err.join().expect("stderr");
    let all = format!("{out}\n--- stderr ---\n{err}");
    assert_eq!(status.code(), Some(0), "{all}");
    let has = |pred: &dyn Fn(&str) -> bool| out.lines().any(pred);
    assert!(
        has(&|l| l.starts_with("[reload] swapped logic.so (api=1, v2,")
            && l.ends_with("; migrated: +gravity)")),
        "{all}"
    );
    assert!(
        has(&|l| l.starts_with("[state] t=") && l.contains("(migrated; v2, tick ")),
        "{all}"
    );
    assert!(
        has(&|l| l == "[plugin] gravity is -9.8 from now on"),
        "{all}"
    );
    assert!(
        has(&|l| l.starts_with("[state] t=") && l.contains("(preserved; v3, tick ")),
        "{all}"
    );
    assert!(
        has(&|l| l == "[plugin] gravity is -2.0 from now on"),
        "{all}"
    );
    assert!(has(&|l| l.starts_with("[exit] code=0 ")), "{all}");
    assert!(
        out.trim_end()
            .ends_with("[demo] hotreload exited with code 0"),
        "{all}"
    );
}
