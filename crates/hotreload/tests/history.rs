//! Rewind, replay and loop through the real binary, on a deterministic
//! plugin built with debug info: `rewind` puts the state and the tick
//! counter back exactly; `replay` with the same version finds no
//! difference, and with a version that changes one field's update names
//! the first tick and that field; `loop` goes round its window and picks up
//! a build that lands while it runs.

mod support;

use std::path::Path;

use support::ctl::{ctl, pause, status_json, tick_now, values, wait_for_tick};
use support::{Server, editor, workdir};

const BUILD: &str = "cc -g -shared -fPIC -o logic.so logic.c";

/// A deterministic plugin: a score and four enemies whose speed depends on
/// `SPEED3` for the last one.
fn source(speed3: &str) -> String {
    format!(
        r#"
#include <stdio.h>
#include "{include}/hotreload.h"
typedef struct {{ float x, vx; }} body_t;
typedef struct {{ int score; body_t enemies[4]; }} state_t;
static void init(void* s) {{ (void)s; }}
static void tick(void* p, double dt) {{
    state_t* s = p;
    s->score += 1;
    for (int i = 0; i < 4; i++) {{
        s->enemies[i].vx = i == 3 ? {speed3} : 1.0f + i;
        s->enemies[i].x += s->enemies[i].vx * (float)dt;
    }}
}}
static void shutdown(void* s) {{ (void)s; }}
static logic_api_t api = {{HOTRELOAD_API_VERSION, sizeof(state_t), init, tick, shutdown}};
logic_api_t* logic_get_api(void) {{ return &api; }}
"#,
        include = concat!(env!("CARGO_MANIFEST_DIR"), "/../../include"),
    )
}

fn start(dir: &Path, extra: &[&str]) -> Server {
    std::fs::write(dir.join("logic.c"), source("4.0f")).expect("write");
    let mut args = vec!["--watch", "logic.c", "--build", BUILD, "--tick-ms", "5"];
    args.extend_from_slice(extra);
    let mut server = Server::start(dir, &args);
    server.expect_contains("[reload] loaded logic.so");
    server
}

#[test]
fn rewind_puts_the_state_and_the_tick_back_exactly() {
    let tmp = workdir();
    let dir = tmp.path();
    let mut server = start(dir, &[]);
    wait_for_tick(dir, 60);
    pause(dir);
    let at = tick_now(dir);
    let then = values(dir);
    assert_eq!(ctl(dir, &["resume"]).0, 0);
    wait_for_tick(dir, at + 120);
    // Not while ticking: refused, exit 5, nothing changed.
    let (code, _, err) = ctl(dir, &["rewind", "10"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("paused"), "{err}");
    pause(dir);
    let now = tick_now(dir);
    let (code, out, err) = ctl(dir, &["rewind-to", &at.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("from tick {now} to tick {at}")),
        "{out}"
    );
    assert_eq!(tick_now(dir), at);
    assert_eq!(values(dir), then, "the state at tick {at}, value for value");
    server.expect_contains(&format!("[history] rewound from tick {now} to tick {at}"));
    // Back 10 more, and ticking on from there counts from there.
    let (code, out, _) = ctl(dir, &["rewind", "10"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(tick_now(dir), at - 10);
    assert_eq!(values(dir)["score"], serde_json::json!(at - 10));
    assert_eq!(ctl(dir, &["step", "3"]).0, 0);
    assert_eq!(values(dir)["score"], serde_json::json!(at - 7));
    // Further back than the history: refused, saying what it holds.
    let (code, _, err) = ctl(dir, &["rewind-to", "0"]);
    assert_eq!(code, 0, "tick 0 is still held: {err}");
    let status = status_json(dir);
    assert!(status["result"]["history"]["bound_ticks"].as_u64() == Some(1000));
}

#[test]
fn the_history_bound_refuses_what_it_no_longer_holds() {
    let tmp = workdir();
    let dir = tmp.path();
    let _server = start(dir, &["--history-ticks", "50"]);
    wait_for_tick(dir, 120);
    pause(dir);
    let (code, _, err) = ctl(dir, &["rewind", "100"]);
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("expected a tick from"), "{err}");
    let (code, out, err) = ctl(dir, &["rewind", "40"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn replay_finds_no_difference_with_the_same_code_and_names_the_field_with_new_code() {
    let tmp = workdir();
    let dir = tmp.path();
    let mut server = start(dir, &[]);
    wait_for_tick(dir, 150);
    pause(dir);
    let now = tick_now(dir);
    let (code, out, err) = ctl(dir, &["replay"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no difference"), "{out}");
    let (from, to) = (now - 100, now - 50);
    let window = [from.to_string(), to.to_string()];
    let (code, out, _) = ctl(dir, &["replay", &window[0], &window[1]]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("v1 over ticks {from}..{to} (50 ran")),
        "{out}"
    );
    // v2 moves the last enemy faster: the first tick of the window differs,
    // in enemies[3].
    editor::in_place(&dir.join("logic.c"), &source("4.5f"));
    server.expect_contains("[reload] swapped logic.so");
    let (code, out, err) = ctl(dir, &["replay", &window[0], &window[1], "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let reply: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let outcome = &reply["result"]["outcome"];
    assert_eq!(outcome["kind"], "differs", "{reply}");
    assert_eq!(outcome["tick"].as_u64(), Some(from), "{reply}");
    assert!(
        outcome["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("enemies[3].")),
        "{reply}"
    );
    assert_eq!(reply["result"]["version"], 2);
    // The old code again, by name: the same as recorded.
    let (code, out, _) = ctl(dir, &["replay", &window[0], &window[1], "--with", "v1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no difference"), "{out}");
    server.expect_contains("[replay] v2 over ticks");
    // A window outside what is recorded: refused.
    let (code, _, err) = ctl(dir, &["replay", "0", &(now + 10).to_string()]);
    assert_eq!(code, 8, "{err}");
}

/// A bug hunt as it goes: a bug seen at tick N, `rewind 100`, fix and save,
/// then `replay` over the ticks the rewind went back over, without a tick
/// in between. A rewind forward comes back exactly; the first tick run
/// from the rewound state drops what it went back over, and says so.
#[test]
fn after_a_rewind_the_ticks_it_went_back_over_replay_with_the_fix_and_come_back() {
    let tmp = workdir();
    let dir = tmp.path();
    let mut server = start(dir, &[]);
    wait_for_tick(dir, 150);
    pause(dir);
    let now = tick_now(dir);
    let at_pause = values(dir);
    // Right after a pause, the last tick is in the history already.
    let status = status_json(dir);
    assert_eq!(status["result"]["history"]["newest"].as_u64(), Some(now));
    let (code, out, err) = ctl(dir, &["rewind", "100"]);
    assert_eq!(code, 0, "{out}{err}");
    let from = now - 100;
    let status = status_json(dir);
    assert_eq!(
        status["result"]["history"]["rewound_to"].as_u64(),
        Some(from)
    );
    assert_eq!(status["result"]["history"]["newest"].as_u64(), Some(now));
    let (_, text, _) = ctl(dir, &["status"]);
    assert!(
        text.contains(&format!(
            "rewound to tick {from}: ticks {from}..{now} are kept"
        )),
        "{text}"
    );
    editor::in_place(&dir.join("logic.c"), &source("4.5f"));
    server.expect_contains("[reload] swapped logic.so");
    assert_eq!(tick_now(dir), from, "the swap ran no tick");
    let window = [from.to_string(), now.to_string()];
    let (code, out, err) = ctl(dir, &["replay", &window[0], &window[1]]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("first differs at tick {from}: enemies[3].")),
        "{out}"
    );
    let (code, out, err) = ctl(dir, &["replay", &window[0], &window[1], "--with", "v1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("v1 over ticks {from}..{now} (100 ran"))
            && out.contains("no difference"),
        "{out}"
    );
    // Forward again, part way and then all the way: exactly as it was.
    let (code, out, err) = ctl(dir, &["rewind-to", &(from + 40).to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(values(dir)["score"], serde_json::json!(from + 40));
    let (code, out, err) = ctl(dir, &["rewind-to", &now.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(tick_now(dir), now);
    assert_eq!(
        values(dir),
        at_pause,
        "the state at tick {now}, value for value"
    );
    let (code, _, err) = ctl(dir, &["rewind-to", &(now + 1).to_string()]);
    assert_eq!(code, 8, "{err}");
    assert!(
        err.contains(&format!("expected a tick from 0 to {now}")),
        "{err}"
    );
    // Back, and one tick with v2: that past is gone, said once.
    assert_eq!(ctl(dir, &["rewind", "100"]).0, 0);
    assert_eq!(ctl(dir, &["step", "1"]).0, 0);
    server.expect_contains(&format!(
        "ticks {from}..{now}, which a rewind went back over, are no longer kept"
    ));
    let status = status_json(dir);
    assert!(
        status["result"]["history"]["rewound_to"].is_null(),
        "{status}"
    );
    let (code, _, err) = ctl(dir, &["replay", &window[0], &window[1]]);
    assert_eq!(code, 8, "{err}");
}

#[test]
fn loop_goes_round_its_window_and_picks_up_a_new_build() {
    let tmp = workdir();
    let dir = tmp.path();
    let mut server = start(dir, &[]);
    wait_for_tick(dir, 80);
    let (code, out, err) = ctl(dir, &["loop", "20", "60"]);
    assert_eq!(code, 0, "{out}{err}");
    server.expect_contains("[loop] looping ticks 20..60");
    server.expect_contains("back to tick 20, pass 2 with v1");
    editor::in_place(&dir.join("logic.c"), &source("4.5f"));
    server.expect_contains("[reload] swapped logic.so");
    server.expect("a pass with the new build", |l| {
        l.starts_with("[loop]") && l.contains("with v2")
    });
    // The counter never leaves the window while looping.
    for _ in 0..5 {
        let tick = tick_now(dir);
        assert!((20..=60).contains(&tick), "tick {tick} outside 20..60");
    }
    let (code, out, _) = ctl(dir, &["loop", "off"]);
    assert_eq!(code, 0, "{out}");
    server.expect_contains("[loop] stopped");
    wait_for_tick(dir, 70);
}

#[test]
fn a_recording_replays_without_a_server_and_names_what_a_new_build_changes() {
    let tmp = workdir();
    let dir = tmp.path();
    let mut server = start(dir, &[]);
    wait_for_tick(dir, 120);
    let (code, out, err) = ctl(dir, &["record", "20", "80", "window.hrr"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("recorded ticks 20..80"), "{out}");
    std::fs::copy(dir.join("logic.so"), dir.join("v1.so")).expect("keep v1");
    assert_eq!(ctl(dir, &["stop"]).0, 0);
    server.wait();
    // Another folder, no server: only the file and a library.
    let elsewhere = workdir();
    let file = elsewhere.path().join("window.hrr");
    std::fs::copy(dir.join("window.hrr"), &file).expect("copy");
    let replay = |lib: &Path| {
        let out = std::process::Command::new(support::binary())
            .arg("--replay")
            .arg(&file)
            .arg("--lib")
            .arg(lib)
            .current_dir(elsewhere.path())
            .output()
            .expect("run --replay");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = replay(&dir.join("v1.so"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("over ticks 20..80 (60 ran") && out.contains("no difference"),
        "{out}"
    );
    std::fs::write(elsewhere.path().join("logic.c"), source("5.0f")).expect("write");
    let status = std::process::Command::new("cc")
        .args(["-g", "-shared", "-fPIC", "-o", "v2.so", "logic.c"])
        .current_dir(elsewhere.path())
        .status()
        .expect("cc");
    assert!(status.success());
    let (code, out) = replay(&elsewhere.path().join("v2.so"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("first differs at tick 20: enemies[3]."),
        "{out}"
    );
    // A damaged recording: refused with a reason, exit 2.
    let mut bytes = std::fs::read(&file).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&file, bytes).expect("write");
    let (code, out) = replay(&dir.join("v1.so"));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("checksum"), "{out}");
}

/// `ctl pause` on ticks that take 100 ms each is answered once the loop
/// holds, with the tick it holds at (the one to name in `replay FROM TO`).
/// Answered before the loop held, a `status` right after said "ticking",
/// and a `resume` right after was answered "already ticking; nothing to
/// resume" (though it did resume).
#[test]
fn a_pause_is_answered_once_the_loop_holds() {
    let tmp = workdir();
    let dir = tmp.path();
    let slow = format!(
        r#"
#include <unistd.h>
#include "{include}/hotreload.h"
typedef struct {{ int score; }} state_t;
static void init(void* s) {{ (void)s; }}
static void tick(void* p, double dt) {{ (void)dt; usleep(100000); ((state_t*)p)->score += 1; }}
static void shutdown(void* s) {{ (void)s; }}
static logic_api_t api = {{HOTRELOAD_API_VERSION, sizeof(state_t), init, tick, shutdown}};
logic_api_t* logic_get_api(void) {{ return &api; }}
"#,
        include = concat!(env!("CARGO_MANIFEST_DIR"), "/../../include"),
    );
    std::fs::write(dir.join("logic.c"), slow).expect("write");
    let mut server = Server::start(
        dir,
        &[
            "--watch",
            "logic.c",
            "--build",
            BUILD,
            "--tick-ms",
            "5",
            "--trial-ticks",
            "0",
        ],
    );
    server.expect_contains("[reload] loaded logic.so");
    wait_for_tick(dir, 3);
    for _ in 0..3 {
        let (code, out, err) = ctl(dir, &["pause"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.starts_with("paused at tick "), "{out}");
        let held: u64 = out
            .trim()
            .trim_start_matches("paused at tick ")
            .parse()
            .expect("a tick");
        assert_eq!(status_json(dir)["result"]["paused"], true);
        assert_eq!(held, tick_now(dir), "{out}");
        let (code, out, err) = ctl(dir, &["rewind", "1"]);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, _) = ctl(dir, &["resume"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.starts_with("resuming"), "{out}");
        wait_for_tick(dir, held + 2);
    }
}
