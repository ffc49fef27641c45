//! The large-state scenario that `tests/large_state.rs` asserts on and the
//! `large_state` benchmark measures: a state of many MiB of non-zero bytes
//! ticking every millisecond, two prebuilt variants of its plugin, and a
//! server whose "build" copies the variant a watched file names, so that a
//! save costs a rename and a `cp`, not a compiler run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::Server;

/// A state of `SIZE_MIB` MiB of non-zero bytes; each tick adds `STEP` to
/// its counter and flips 16 bytes a MiB apart.
pub const SOURCE: &str = r#"
#include <stdint.h>
#include <string.h>
#include "hotreload.h"
#define SIZE ((size_t)SIZE_MIB << 20)
typedef struct { uint64_t n; unsigned char bytes[SIZE - 8]; } state_t;
static void init(void* p) { memset(p, 0x5a, SIZE); ((state_t*)p)->n = 0; }
static void tick(void* p, double dt) {
    (void)dt;
    state_t* s = p;
    s->n += STEP;
    for (int i = 0; i < 16; i++) s->bytes[(s->n * 4099 + i * 1048573) % (SIZE - 8)] ^= 1;
}
static void shutdown(void* p) { (void)p; }
static logic_api_t api = {HOTRELOAD_API_VERSION, sizeof(state_t), init, tick, shutdown};
logic_api_t* logic_get_api(void) { return &api; }
"#;

/// A state of `words` counters whose sum is always `n`: each tick adds one
/// to 16 of them, pages apart, and to `n`. Variant `b` has a field more
/// before the array, which shifts every counter by 4 bytes: each save
/// changes the layout, and the state is migrated. With `CHECK`, the first
/// tick of each loaded copy sums them all and counts a mismatch in `bad`;
/// with `CHECK=2` it aborts on one too (a trial's copy is thrown away, so
/// only a fault says it started from the wrong bytes). `STRIDE` changes the
/// code without changing the layout.
pub const LAYOUTS: &str = r#"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "hotreload.h"
#define SIZE ((size_t)SIZE_MIB << 20)
#define WORDS ((SIZE - 64) / 4)
#ifndef STRIDE
#define STRIDE 7919
#endif
typedef struct {
    uint64_t n;
    uint64_t checks;
    uint64_t bad;
#ifdef LAYOUT_B
    uint32_t added;
#endif
    uint32_t words[WORDS];
} state_t;
static int checked;
static void init(void* p) {
    state_t* s = p;
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < WORDS; i++) s->words[i] = 1;
    s->n = WORDS;
}
static void tick(void* p, double dt) {
    (void)dt;
    state_t* s = p;
    if (CHECK && !checked) {
        checked = 1;
        uint64_t sum = 0;
        for (size_t i = 0; i < WORDS; i++) sum += s->words[i];
        s->checks++;
        if (sum != s->n) {
            s->bad++;
            if (CHECK > 1) abort();
        }
    }
    for (int i = 0; i < 16; i++) s->words[(s->n * STRIDE) % WORDS] += 1, s->n++;
}
static void shutdown(void* p) { (void)p; }
static logic_api_t api = {HOTRELOAD_API_VERSION, sizeof(state_t), init, tick, shutdown};
logic_api_t* logic_get_api(void) { return &api; }
"#;

/// Builds the two variants the saves switch between, `lib-a.so` and
/// `lib-b.so`, from `source` with `flags` each, for a state of `mib` MiB.
pub fn prebuild(dir: &Path, source: &str, mib: usize, flags: [&[&str]; 2]) {
    std::fs::write(dir.join("v.c"), source).expect("write");
    for (name, flags) in ["a", "b"].into_iter().zip(flags) {
        let status = Command::new("cc")
            .args(["-O2", "-g", "-shared", "-fPIC"])
            .args(flags)
            .arg(format!("-DSIZE_MIB={mib}"))
            .arg("-I")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../include"))
            .args(["-o", &format!("lib-{name}.so"), "v.c"])
            .current_dir(dir)
            .status()
            .expect("cc");
        assert!(status.success());
    }
    std::fs::write(dir.join("pick.txt"), "a\n").expect("write");
}

/// The variants of [`SOURCE`]: one layout, a different step.
pub const SAME_LAYOUT: [&[&str]; 2] = [&["-DSTEP=1"], &["-DSTEP=2"]];
/// The variants of [`LAYOUTS`] without the check: every save migrates.
pub const NEW_LAYOUT: [&[&str]; 2] = [&["-DCHECK=0"], &["-DCHECK=0", "-DLAYOUT_B"]];

/// The server, building by copying the variant `pick.txt` names, with
/// trials as `trials` says and `extra` flags.
pub fn start(dir: &Path, trials: bool, extra: &[&str]) -> Server {
    start_program(&super::binary(), dir, trials, extra)
}

/// [`start`] with another build of `hotreload` (a benchmark's "before").
pub fn start_program(program: &Path, dir: &Path, trials: bool, extra: &[&str]) -> Server {
    let _ = std::fs::remove_file(dir.join("logic.so"));
    std::fs::write(dir.join("pick.txt"), "a\n").expect("write");
    let mut args = vec![
        "--watch",
        "pick.txt",
        "--build",
        "cp lib-$(cat pick.txt).so logic.so",
        "--lib",
        "logic.so",
        "--tick-ms",
        "1",
        // `init` writes every page once: 512 MiB of first writes takes
        // longer than the default second.
        "--tick-timeout-ms",
        "10000",
    ];
    if !trials {
        args.extend(["--trial-ticks", "0"]);
    }
    args.extend(extra);
    let mut command = Command::new(program);
    command.args(&args);
    Server::start_command(dir, command)
}

/// What one run printed: the tick loop's figures at the end, the swaps,
/// and how long after its build each swap came.
pub struct Run {
    pub ticks: i64,
    pub skipped: i64,
    pub latest_ms: f64,
    pub swapped: usize,
    /// Builds found byte for byte the running version (the saves gathered
    /// into them came back to it: the variants alternate).
    pub unchanged: usize,
    /// For each swap, ms from its build's exit to the swap, as the server
    /// measured it (its `[reload] swapped` line says so: the lines may be
    /// written out together, later than either).
    pub after_build_ms: Vec<f64>,
    pub transcript: String,
}

/// One run: a second for the loop to settle after the first state line,
/// `saves` renames of `pick.txt` `gap` apart (flipping between the two
/// variants), 1.5 s for the last to land, then `ctl stop`.
pub fn run(dir: &Path, trials: bool, extra: &[&str], saves: usize, gap: Duration) -> Run {
    run_program(&super::binary(), dir, trials, extra, saves, gap)
}

/// [`run`] with another build of `hotreload`.
pub fn run_program(
    program: &Path,
    dir: &Path,
    trials: bool,
    extra: &[&str],
    saves: usize,
    gap: Duration,
) -> Run {
    run_with(program, dir, trials, extra, || {
        for i in 0..saves {
            let pick = if i % 2 == 0 { "b\n" } else { "a\n" };
            super::editor::rename_over(&dir.join("pick.txt"), pick);
            std::thread::sleep(gap);
        }
    })
}

/// The same run without saves, lasting `idle` where the saves would be: the
/// baseline a run with reloads is compared with.
pub fn run_idle(program: &Path, dir: &Path, extra: &[&str], idle: Duration) -> Run {
    run_with(program, dir, false, extra, || std::thread::sleep(idle))
}

fn run_with(program: &Path, dir: &Path, trials: bool, extra: &[&str], load: impl FnOnce()) -> Run {
    let mut server = start_program(program, dir, trials, extra);
    server.expect_contains("[reload] loaded logic.so");
    server.expect("the first state line", |l| l.starts_with("[state]"));
    std::thread::sleep(Duration::from_secs(1));
    load();
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = Command::new(program)
        .args(["ctl", "stop"])
        .current_dir(dir)
        .output()
        .map(|out| out.status.success());
    assert!(
        matches!(stopped, Ok(true)),
        "ctl stop: {stopped:?}\n{}",
        server.transcript()
    );
    server.wait();
    let lines = server.lines();
    let stats = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("[tick]") && l.contains("ticks in"))
        .unwrap_or_else(|| panic!("no tick figures:\n{}", server.transcript()));
    let number_after = |key: &str| -> Option<f64> {
        stats
            .split(key)
            .nth(1)?
            .split([' ', ';'])
            .next()?
            .parse()
            .ok()
    };
    let after_build_ms = lines
        .iter()
        .filter(|l| l.starts_with("[reload] swapped"))
        .filter_map(|l| {
            l.split(" ms after the build")
                .next()?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    Run {
        ticks: number_after("[tick] ").map_or(-1, |n| n as i64),
        skipped: stats
            .split("; ")
            .find_map(|part| part.strip_suffix(" skipped)").and_then(|n| n.parse().ok()))
            .unwrap_or(-1),
        latest_ms: number_after("latest start ").unwrap_or(f64::MAX),
        swapped: server.count(|l| l.starts_with("[reload] swapped")),
        unchanged: server.count(|l| l.contains("nothing to swap")),
        after_build_ms,
        transcript: server.transcript(),
    }
}
