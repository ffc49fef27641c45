//! The input a host passes each tick, through the real binary: `hotreload
//! ctl input` sets it, a plugin's extended `tick` reads it from the host
//! context, and the history records it with every tick, so that `replay`,
//! `loop` and a recording file run each tick with the bytes it got: the
//! replay of an interactive run is exact, and a build that reads the input
//! differently is caught at the first tick that had some.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::ctl::{ctl, pause, status_json, tick_now, values, wait_for_tick};
use support::{Server, workdir};

const BUILD: &str = "cc -g -shared -fPIC -o logic.so logic.c";

/// `examples/input`, whose state depends on every byte of every tick's
/// input (times `weight`), on the tick's index and on the seed.
fn source(weight: u32) -> String {
    let example = include_str!("../../../examples/input/logic.c");
    let header = concat!(env!("CARGO_MANIFEST_DIR"), "/../../include/hotreload.h");
    format!(
        "#define WEIGHT {weight}\n{}",
        example.replace(
            "#include \"hotreload.h\"",
            &format!("#include \"{header}\"")
        )
    )
}

fn start(dir: &Path) -> Server {
    std::fs::write(dir.join("logic.c"), source(1)).expect("write");
    let mut server = Server::start(
        dir,
        &[
            "--watch",
            "logic.c",
            "--build",
            BUILD,
            "--tick-ms",
            "5",
            "--seed",
            "7",
        ],
    );
    server.expect_contains("[reload] loaded logic.so");
    server
}

/// Sets the input; returns the tick it applies from.
fn input(dir: &Path, args: &[&str]) -> u64 {
    let mut all = vec!["input"];
    all.extend_from_slice(args);
    let (code, out, err) = ctl(dir, &all);
    assert_eq!(code, 0, "{out}{err}");
    let digits: String = out
        .split("from tick ")
        .nth(1)
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("a tick in {out:?}"))
}

/// Waits until the state shows `count` ticks that had input.
fn wait_for_input_ticks(dir: &Path, count: u64) {
    let deadline = Instant::now() + support::WAIT;
    while values(dir)["with_input"].as_u64().unwrap_or(0) < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} ticks saw input"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn replay_file(file: &Path, lib: &Path) -> (i32, String) {
    let out = std::process::Command::new(support::binary())
        .arg("--replay")
        .arg(file)
        .arg("--lib")
        .arg(lib)
        .output()
        .expect("run --replay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn ticks_see_the_input_and_replay_and_a_recording_pass_it_again() {
    let tmp = workdir();
    let dir = tmp.path();
    let mut server = start(dir);
    wait_for_tick(dir, 10);
    let from = input(dir, &["jump"]);
    wait_for_input_ticks(dir, 20);
    let state = values(dir);
    let last: Vec<u64> = (0..4).filter_map(|i| state["last"][i].as_u64()).collect();
    assert_eq!(last, [b'j', b'u', b'm', b'p'].map(u64::from), "{state}");
    input(dir, &["--hex", "ff01"]);
    wait_for_input_ticks(dir, 40);
    let off = input(dir, &["--off"]);
    wait_for_tick(dir, off + 20);
    // Bad input: refused, nothing changed.
    let (code, _, err) = ctl(dir, &["input", "--hex", "f"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("even number of hex digits"), "{err}");
    let long = "x".repeat(2049);
    let (code, _, err) = ctl(dir, &["input", &long]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at most 2048 bytes, found 2049"), "{err}");
    pause(dir);
    // The newest tick the history has a state after.
    let now = status_json(dir)["result"]["history"]["newest"]
        .as_u64()
        .expect("a history");
    // Every recorded tick again, each with its input, the seed and its
    // index: the same states, byte for byte.
    let (code, out, err) = ctl(dir, &["replay"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no difference"), "{out}");
    let start = from.saturating_sub(5);
    let window = [start.to_string(), now.to_string()];
    let (code, out, err) = ctl(dir, &["record", &window[0], &window[1], "input.hrr"]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::copy(dir.join("logic.so"), dir.join("v1.so")).expect("keep v1");
    assert_eq!(ctl(dir, &["stop"]).0, 0);
    server.wait();
    // The file on its own: the same library finds no difference...
    let (code, out) = replay_file(&dir.join("input.hrr"), &dir.join("v1.so"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no difference"), "{out}");
    // ...and one that weighs the input twice differs at the first tick
    // that had input, in `total`.
    support::compile(dir, &source(2), "v2.so");
    let (code, out) = replay_file(&dir.join("input.hrr"), &dir.join("v2.so"));
    assert_eq!(code, 1, "{out}");
    let first_with_input = (start..now)
        .find(|t| *t >= from)
        .expect("a tick with input in the window");
    assert!(
        out.contains(&format!("first differs at tick {first_with_input}: total")),
        "expected the first tick with input ({first_with_input}), in total: {out}"
    );
}

#[test]
fn a_loop_passes_each_tick_its_recorded_input_not_the_live_one() {
    let tmp = workdir();
    let dir = tmp.path();
    let mut server = start(dir);
    wait_for_tick(dir, 10);
    let set_at = input(dir, &["abc"]);
    let (from, to) = (set_at + 10, set_at + 50);
    wait_for_tick(dir, to + 10);
    // The live input changes; the loop's ticks must not see it.
    input(dir, &["zz"]);
    pause(dir);
    let rewind_to = (to - 1).to_string();
    assert_eq!(ctl(dir, &["rewind-to", &rewind_to]).0, 0);
    let recorded = values(dir);
    let window = [from.to_string(), to.to_string()];
    let (code, out, err) = ctl(dir, &["loop", &window[0], &window[1]]);
    assert_eq!(code, 0, "{out}{err}");
    // The last tick of the window, then back to its start.
    assert_eq!(ctl(dir, &["step", "1"]).0, 0);
    server.expect_contains(&format!("back to tick {from}, pass 2"));
    assert_eq!(tick_now(dir), from);
    // A whole pass to where the recorded state was read: the same bytes.
    let steps = (to - 1 - from).to_string();
    assert_eq!(ctl(dir, &["step", &steps]).0, 0);
    assert_eq!(tick_now(dir), to - 1);
    assert_eq!(
        values(dir),
        recorded,
        "tick {} after a loop pass equals the recorded run",
        to - 1
    );
    assert_eq!(ctl(dir, &["loop", "off"]).0, 0);
    // Out of the loop the live input is back.
    assert_eq!(ctl(dir, &["resume"]).0, 0);
    let deadline = Instant::now() + support::WAIT;
    while values(dir)["last"][0] != serde_json::json!(b'z') {
        assert!(Instant::now() < deadline, "the live input never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_version_whose_tick_cannot_see_the_input_is_said_once() {
    let tmp = workdir();
    let dir = tmp.path();
    std::fs::write(dir.join("logic.c"), support::plugin::counter("a", 1)).expect("write");
    let mut server = Server::start(
        dir,
        &[
            "--watch",
            "logic.c",
            "--build",
            support::CC_BUILD,
            "--tick-ms",
            "5",
        ],
    );
    server.expect_contains("[reload] loaded logic.so");
    input(dir, &["left"]);
    server.expect_contains("v1 does not see the input the host passes (4 bytes");
    input(dir, &["right"]);
    wait_for_tick(dir, tick_now(dir) + 20);
    assert_eq!(ctl(dir, &["stop"]).0, 0);
    server.wait();
    let out = server.transcript();
    assert_eq!(
        out.matches("does not see the input").count(),
        1,
        "said once per version: {out}"
    );
}
