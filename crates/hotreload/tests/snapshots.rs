//! A fault puts the state back byte for byte as it was before the faulting
//! tick, at every state size: a deterministic plugin writes about 1% of its
//! pages each tick; a new version scribbles over many pages and crashes, on
//! its first tick or a later one; after the rollback the old version ticks
//! on. At exit the saved state must equal what the same ticks compute from
//! zero (an oracle built from the same source), so every byte the faulting
//! tick wrote was put back. In isolated mode too, where the plugin writes
//! the state through a worker's mapping, and where the worker may die in
//! the middle of the tick (an exit system call no guard sees).

mod support;

use std::path::Path;
use std::process::Command;

use support::Server;

const SOURCE: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "hotreload.h"

#ifndef FAULT_AFTER
#define FAULT_AFTER -1
#endif

typedef struct {
    uint64_t n;
    unsigned char bytes[SIZE - 8];
} state_t;

#define PAGES ((SIZE + 4095) / 4096)

/* About 1% of the pages (at least one), chosen by the tick number. */
static void step(state_t* s) {
    s->n++;
    uint64_t n = s->n;
    uint64_t writes = PAGES / 100 + 1;
    for (uint64_t i = 0; i < writes; i++) {
        uint64_t p = (n * 2654435761u + i * 40503u) % PAGES;
        uint64_t at = p * 4096 + (n * 7 + i) % 4096;
        if (at >= 8 && at < SIZE) {
            s->bytes[at - 8] = (unsigned char)(n + i);
        }
    }
}

#ifdef ORACLE
int main(int argc, char** argv) {
    uint64_t ticks = strtoull(argv[1], NULL, 10);
    state_t* s = calloc(1, SIZE);
    for (uint64_t t = 0; t < ticks; t++) step(s);
    fwrite(s, 1, SIZE, stdout);
    return 0;
}
#else
static int ran;
static void init(void* state) { (void)state; }
static void tick(void* state, double dt) {
    (void)dt;
    state_t* s = state;
    if (FAULT_AFTER >= 0 && ran++ == FAULT_AFTER) {
        /* Scribble over a third of the pages, then crash. */
        for (uint64_t p = 0; p < PAGES; p += 3) {
            memset((char*)state + p * 4096, 0xEE, p == PAGES - 1 ? SIZE - p * 4096 : 64);
        }
        s->n = 999999;
#ifdef WORKER_DIES
        syscall(SYS_exit_group, 3);
#endif
        *(volatile int*)0 = 1;
    }
    step(s);
}
static void shutdown(void* state) { (void)state; }
static logic_api_t api = {HOTRELOAD_API_VERSION, sizeof(state_t), init, tick, shutdown};
logic_api_t* logic_get_api(void) { return &api; }
#endif
"#;

fn include_dir() -> String {
    format!("{}/../../include", env!("CARGO_MANIFEST_DIR"))
}

/// Where the plugin runs, and how the faulting version ends its tick.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    InProcess,
    /// `--isolate`: a crash the worker's guard catches.
    Isolated,
    /// `--isolate`: the worker process exits in the middle of the tick.
    WorkerDies,
}

fn source(fault_after: Option<u32>, mode: Mode) -> String {
    let dies = if mode == Mode::WorkerDies {
        "#define WORKER_DIES 1\n"
    } else {
        ""
    };
    match fault_after {
        Some(k) => format!("{dies}#define FAULT_AFTER {k}\n{SOURCE}"),
        None => SOURCE.to_owned(),
    }
}

/// The state after `ticks` ticks from zero, as the oracle computes it.
fn oracle(dir: &Path, size: usize, ticks: u64) -> Vec<u8> {
    std::fs::write(dir.join("oracle.c"), SOURCE).expect("write oracle");
    let status = Command::new("cc")
        .args(["-O2", "-DORACLE", &format!("-DSIZE={size}"), "-I"])
        .arg(include_dir())
        .args(["-o", "oracle", "oracle.c"])
        .current_dir(dir)
        .status()
        .expect("cc");
    assert!(status.success());
    let out = Command::new(dir.join("oracle"))
        .arg(ticks.to_string())
        .output()
        .expect("oracle");
    assert!(out.status.success());
    out.stdout
}

/// Runs the scenario for a state of `size` bytes, the new version crashing
/// on its tick number `fault_after` (0: the first).
fn exact_restore(size: usize, fault_after: u32) {
    exact_restore_in(size, fault_after, Mode::InProcess);
}

fn exact_restore_in(size: usize, fault_after: u32, mode: Mode) {
    // The large scenarios one at a time: several 64 and 512 MiB servers
    // ticking at once on two cores starve each other past the waits.
    static LARGE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = (size >= 64 << 20).then(|| LARGE.lock().unwrap_or_else(|e| e.into_inner()));
    let tmp = support::workdir();
    let dir = tmp.path();
    std::fs::write(dir.join("logic.c"), source(None, mode)).expect("write");
    let build = format!(
        "cc -O2 -shared -fPIC -DSIZE={size} -I {} -o logic.so logic.c",
        include_dir()
    );
    let mut args = vec![
        "--watch",
        "logic.c",
        "--build",
        &build,
        "--tick-ms",
        "2",
        "--trial-ticks",
        "0",
        "--state-file",
        "state.bin",
    ];
    if mode != Mode::InProcess {
        args.push("--isolate");
    }
    let mut server = Server::start(dir, &args);
    server.expect_contains("[reload] loaded logic.so");
    // Some ticks first, so that the working set has settled.
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        let status = support::ctl::status_json(dir);
        if status["result"]["tick"].as_u64().unwrap_or(0) >= 30 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no ticks: {status}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    support::editor::in_place(&dir.join("logic.c"), &source(Some(fault_after), mode));
    let fault = server.expect("the fault", |l| l.starts_with("[fault]"));
    // "v2 tick T: ... state restored to tick T": the tick before the fault.
    let at = fault
        .split("tick ")
        .nth(1)
        .and_then(|t| t.split(':').next())
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no tick in {fault}"));
    assert!(
        fault.ends_with(&format!("restored to tick {at}")),
        "restored to the tick of the fault: {fault}"
    );
    // The old version ticks on from the restored state.
    let ticks_then = support::ctl::status_json(dir)["result"]["tick"]
        .as_u64()
        .unwrap_or(0);
    let deadline = std::time::Instant::now() + support::WAIT;
    while support::ctl::status_json(dir)["result"]["tick"]
        .as_u64()
        .unwrap_or(0)
        < ticks_then + 20
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no ticks after the rollback"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // 14: plugin code faulted last (the exit code says so, by design).
    assert_eq!(server.stop(), 14, "{}", server.transcript());
    let saved = std::fs::read(dir.join("state.bin")).expect("state file");
    // No layout: the bytes start at offset 33 and a CRC ends the file.
    let bytes = &saved[33..saved.len() - 4];
    assert_eq!(bytes.len(), size);
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    assert!(n < 999_999, "the faulting tick's counter was put back: {n}");
    let expected = oracle(dir, size, n);
    if let Some(first) = (0..size).find(|&i| bytes[i] != expected[i]) {
        panic!(
            "state of {size} bytes after {n} ticks differs from the oracle at byte {first} \
             (page {}): {:#x} instead of {:#x}",
            first / 4096,
            bytes[first],
            expected[first]
        );
    }
}

#[test]
fn restore_is_exact_for_a_4_kib_state() {
    exact_restore(4096, 0);
    exact_restore(4096, 5);
}

#[test]
fn restore_is_exact_for_a_1_mib_state() {
    exact_restore(1 << 20, 0);
    exact_restore(1 << 20, 5);
}

#[test]
fn restore_is_exact_for_a_64_mib_state() {
    exact_restore(64 << 20, 0);
    exact_restore(64 << 20, 5);
}

#[test]
fn restore_is_exact_for_a_512_mib_state() {
    exact_restore(512 << 20, 0);
    exact_restore(512 << 20, 5);
}

#[test]
fn restore_is_exact_for_a_64_mib_state_in_isolated_mode() {
    exact_restore_in(64 << 20, 0, Mode::Isolated);
    exact_restore_in(64 << 20, 5, Mode::Isolated);
}

#[test]
fn restore_is_exact_when_the_worker_dies_mid_tick() {
    exact_restore_in(64 << 20, 0, Mode::WorkerDies);
    exact_restore_in(64 << 20, 5, Mode::WorkerDies);
}
