//! Rust plugins written with the `hotreload-plugin` crate, built by a real
//! `cargo build`, run by the real server: a panic in any exported function
//! is a fault with its message and place (in the host, in an isolated
//! worker, and in the trial), a migration between two Rust versions of the
//! state, the load-time refusals of the plugin crate's record, the statics
//! that start over at each reload, and what the derive refuses to compile.

mod support;

use std::path::Path;

use support::rust::{
    Variant, cargo, plugin, server_args, target_dir, warm_up, write_crate, write_crate_with,
};
use support::{Server, compile, field, workdir};

fn start(dir: &Path, library: &Path, extra: &[&str]) -> Server {
    let mut command = std::process::Command::new(support::binary());
    command
        .args(server_args(library))
        .args(extra)
        .env("CARGO_TARGET_DIR", target_dir())
        // Asked for, a backtrace would print every panic on stderr too.
        .env_remove("RUST_BACKTRACE");
    Server::start_command(dir, command)
}

/// A server on a fresh crate `name` of `source`, with `extra` flags; the
/// crate's folder lives as long as the `TempDir`.
fn serve(name: &str, source: &str, extra: &[&str]) -> (tempfile::TempDir, Server) {
    serve_with(name, source, "", extra)
}

/// [`serve`] with more of the crate's `Cargo.toml`.
fn serve_with(
    name: &str,
    source: &str,
    manifest: &str,
    extra: &[&str],
) -> (tempfile::TempDir, Server) {
    warm_up();
    let tmp = workdir();
    let lib = write_crate_with(tmp.path(), name, source, manifest);
    let s = start(tmp.path(), &lib, extra);
    (tmp, s)
}

fn save(dir: &Path, source: &str) {
    std::fs::write(dir.join("src/lib.rs"), source).expect("save lib.rs");
}

/// v2 panics on its sixth tick in the server (its trial's three ticks run
/// in a library of their own, whose count starts at zero too).
fn panics_on_sixth_tick() -> Variant {
    Variant {
        step: 2,
        tick: "if calls == 6 { let v = [1, 2, 3]; let i = calls as usize + 1; let _ = v[i]; }"
            .into(),
        ..Variant::default()
    }
}

fn a_panic_in_tick_rolls_back(name: &str, manifest: &str, mode: &[&str]) {
    let (tmp, mut s) = serve_with(name, &plugin(&Variant::default()), manifest, mode);
    let dir = tmp.path();
    s.expect_prefix("[reload] loaded");
    s.expect_contains("[rsplug] score=10");
    save(dir, &plugin(&panics_on_sixth_tick()));
    s.expect_prefix("[reload] swapped");
    // The score as v2 took it over.
    let taken = s.expect_prefix("[state] score=");
    let before = field(&taken, "score").expect("a score");
    let fault = s.expect_prefix("[fault] v2 tick ");
    assert!(
        fault.contains(": panic at src/lib.rs:")
            && fault.contains(": index out of bounds: the len is 3 but the index is 7; rolled back to v1, state restored to tick "),
        "{fault}"
    );
    assert!(
        !fault.contains("SIGABRT"),
        "the panic, not the abort: {fault}"
    );
    // v1 again, from the state as it was, not from zero.
    let next = s.expect_prefix("[rsplug] score=");
    let after = field(&next, "score").expect("a score");
    assert!(
        after > before,
        "the state carried on: {before} then {after}\n{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 14, "plugin code faulted last: {}", s.transcript());
    // Nothing the boundary did keeps the panicking library mapped (the
    // standard panic hook would, with a thread-local destructor).
    assert!(
        !s.lines().iter().any(|l| l.contains("still mapped")),
        "{}",
        s.transcript()
    );
}

#[test]
fn a_panic_in_tick_rolls_back_in_the_server() {
    a_panic_in_tick_rolls_back("hr_tick_panic", "", &[]);
}

/// The README's walkthrough on `examples/rust-counter` itself: built by
/// cargo, edited while it runs, and the panic its comment describes rolls
/// back to the previous build.
#[test]
fn the_rust_counter_example_reloads_and_rolls_back_its_panic() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rust-counter/src/lib.rs");
    let source = std::fs::read_to_string(example).expect("the example's source");
    let (tmp, mut s) = serve("rust-counter", &source, &[]);
    let dir = tmp.path();
    s.expect_prefix("[reload] loaded");
    s.expect_contains("[counter] score=10");
    let commented = "    // let _ = c.milestones[(c.score / 50) as usize]; // panics at 200";
    assert!(source.contains(commented), "the example's panic line");
    save(
        dir,
        &source.replace(
            commented,
            "    let _ = c.milestones[(c.score / 50) as usize];",
        ),
    );
    s.expect_prefix("[reload] swapped");
    let fault = s.expect_prefix("[fault] v2 tick ");
    assert!(
        fault.contains(": panic at src/lib.rs:")
            && fault.contains(
                ": index out of bounds: the len is 4 but the index is 4; rolled back to v1"
            ),
        "{fault}"
    );
    s.expect_contains("[counter] score=210");
    assert_eq!(s.stop(), 14);
}

/// Built with `panic = "abort"`, nothing unwinds to be caught: the panic
/// hook records the panic before the abort, and the line is the same.
#[test]
fn a_panic_in_a_panic_abort_build_rolls_back_the_same_way() {
    a_panic_in_tick_rolls_back(
        "hr_tick_panic_abort",
        "[profile.dev]\npanic = \"abort\"",
        &[],
    );
}

#[test]
fn a_panic_in_tick_rolls_back_in_an_isolated_worker() {
    a_panic_in_tick_rolls_back("hr_tick_panic_isolated", "", &["--isolate"]);
}

/// A panic on a thread the plugin started is not the call's (the call goes
/// on, and the fault line later names the panic that did end a call); a
/// plugin that replaced the panic hook still has its panic caught, named
/// without its place.
#[test]
fn a_thread_panic_is_not_the_calls_and_a_replaced_hook_still_reports() {
    let (tmp, mut s) = serve("hr_odd_panics", &plugin(&Variant::default()), &[]);
    let dir = tmp.path();
    s.expect_prefix("[reload] loaded");
    s.expect_contains("[rsplug] score=10");
    let on_a_thread = Variant {
        tick: "if calls == 5 { let _ = std::thread::spawn(|| panic!(\"on a thread of its own\")).join(); } \
               if calls == 8 { panic!(\"the one that ends the call\"); }"
            .into(),
        ..Variant::default()
    };
    save(dir, &plugin(&on_a_thread));
    let fault = s.expect_prefix("[fault] v2 tick ");
    assert!(
        fault.contains(": panic at src/lib.rs:")
            && fault.contains(": the one that ends the call; rolled back to v1"),
        "{fault}"
    );
    let hook_replaced = Variant {
        tick: "if calls == 6 { std::panic::set_hook(Box::new(|_| {})); panic!(\"quietly\"); }"
            .into(),
        ..Variant::default()
    };
    save(dir, &plugin(&hook_replaced));
    let fault = s.expect_prefix("[fault] v3 tick ");
    assert!(
        fault.contains(
            ": panic at an unknown place (the panic hook was replaced): quietly; rolled back to v1"
        ),
        "{fault}"
    );
    s.expect_prefix("[rsplug] score=");
    assert_eq!(s.stop(), 14);
}

/// The plugin's own static is named once at load as starting over; the
/// plugin crate's glue is not the author's and is not named.
#[test]
fn statics_that_start_over_are_named_but_not_the_glue() {
    let (_tmp, mut s) = serve("hr_statics", &plugin(&Variant::default()), &[]);
    // Said as the version loads, before or after the line saying it did.
    let said = s.expect_contains("hr_statics::CALLS");
    assert!(
        !said.contains("hotreload_plugin") && !said.contains("__HR_") && !said.contains("HOOK"),
        "only the author's statics: {said}"
    );
    s.expect_contains("[rsplug] score=10");
    assert_eq!(s.stop(), 0);
}

/// A panic in `init` is refused by the trial (the first build never runs
/// in the server) and, without a trial, is a fault of the first version:
/// the server lives on and takes the fixed build.
#[test]
fn a_panic_in_init_is_contained() {
    warm_up();
    let tmp = workdir();
    let dir = tmp.path();
    let broken = Variant {
        init: "if host.tick() == 0 { panic!(\"the level file is missing\"); }".into(),
        ..Variant::default()
    };
    let lib = write_crate(dir, "hr_init_panic", &plugin(&broken));
    let mut s = start(dir, &lib, &[]);
    let refused = s.expect_prefix("[reload] rejected");
    assert!(
        refused.contains("init: panic at src/lib.rs:")
            && refused.contains(": the level file is missing"),
        "{refused}"
    );
    save(dir, &plugin(&Variant::default()));
    s.expect_prefix("[reload] loaded");
    s.expect_contains("[plugin] init ran");
    assert_eq!(s.stop(), 0);

    save(dir, &plugin(&broken));
    let mut s = start(dir, &lib, &["--no-probe"]);
    let fault = s.expect_prefix("[fault] v1 init");
    assert!(
        fault.contains("panic at src/lib.rs:") && fault.contains("the level file is missing"),
        "{fault}"
    );
    save(dir, &plugin(&Variant::default()));
    s.expect_contains("[plugin] init ran");
    s.expect_contains("[rsplug] score=10");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// A panic in `on_reload` and one in `migrate` each refuse their build with
/// the panic's message and place, and a `migrate` that returns `Err`
/// refuses it saying why; the running version keeps its state.
#[test]
fn a_panic_in_on_reload_or_migrate_refuses_the_build() {
    let (tmp, mut s) = serve("hr_hook_panic", &plugin(&Variant::default()), &[]);
    let dir = tmp.path();
    s.expect_prefix("[reload] loaded");
    s.expect_contains("[rsplug] score=10");
    let on_reload = Variant {
        on_reload: "panic!(\"cannot rebuild the cache at {}\", g.score);".into(),
        ..Variant::default()
    };
    let migrate = Variant {
        version: 2,
        migrate: "if from.version() == 1 { panic!(\"no way from version {}\", from.version()); }"
            .into(),
        ..Variant::default()
    };
    for (variant, place, message) in [
        (on_reload, "on_reload", "cannot rebuild the cache at "),
        (migrate, "migrate", "no way from version 1"),
    ] {
        save(dir, &plugin(&variant));
        let refused = s.expect_prefix("[reload] rejected: trial ");
        assert!(
            refused.contains(&format!("{place}: panic at src/lib.rs:"))
                && refused.contains(message),
            "{refused}"
        );
    }
    // A migrate that says no refuses the build, saying why.
    save(
        dir,
        &plugin(&Variant {
            version: 3,
            migrate: "return Err(format!(\"version {} kept no lives\", from.version()));".into(),
            ..Variant::default()
        }),
    );
    s.expect_contains("[plugin] migrate from state version 1 refused: version 1 kept no lives");
    let refused = s.expect_prefix("[reload] rejected: ");
    assert!(
        refused.contains("migrate hook of v2 refused the state (returned 1)"),
        "{refused}"
    );
    // v1 runs on: a later score, not a restart.
    let score = s.expect_prefix("[rsplug] score=");
    let n = field(&score, "score").expect("a score");
    assert!(n >= 20, "{}", s.transcript());
    // Exit code 10: the last reload was refused for the state's change.
    assert_eq!(s.stop(), 10, "{}", s.transcript());
}

const MIGRATE_V1: &str = r#"
use hotreload_plugin::{Host, State};

#[derive(State)]
#[repr(C)]
pub struct Game {
    score: i32,
    lives: i16,
}

fn init(g: &mut Game, _host: &Host) { g.lives = 3; }
fn tick(g: &mut Game, _dt: f64) { g.score += 1; }

hotreload_plugin::export! { state: Game, init: init, tick: tick }
"#;

/// The second version renames `score` to `points` (and widens it), widens
/// `lives`, and adds `bonus`; its `migrate` reads the old state as the old
/// type, kept under another name.
const MIGRATE_V2: &str = r#"
use hotreload_plugin::{Host, Previous, State};

#[derive(State)]
#[repr(C)]
pub struct Game {
    points: i64,
    lives: i32,
    bonus: u32,
}

#[derive(State)]
#[repr(C)]
pub struct GameV1 {
    score: i32,
    lives: i16,
}

fn init(g: &mut Game, _host: &Host) { g.lives = 3; }
fn tick(_g: &mut Game, _dt: f64) {}

fn migrate(from: Previous<'_>, g: &mut Game) -> Result<(), String> {
    let old: GameV1 = from.read().ok_or("the old state is not a GameV1")?;
    g.points = i64::from(old.score) * 1000;
    g.bonus = 7;
    Ok(())
}

// Keys in any order.
hotreload_plugin::export! { migrate: migrate, tick: tick, state: Game, init: init, version: 2 }
"#;

#[test]
fn a_migration_between_two_rust_versions_of_the_state() {
    let (tmp, mut s) = serve("hr_migration", MIGRATE_V1, &[]);
    let dir = tmp.path();
    s.expect_prefix("[reload] loaded");
    // Paused ticking would be exact; a later state line is enough: the
    // score the old code reached is read back from the migrated one.
    s.expect_prefix("[state] score=0 lives=3");
    save(dir, MIGRATE_V2);
    let swapped = s.expect_prefix("[reload] swapped");
    assert!(
        swapped.contains("+points")
            && swapped.contains("+bonus")
            && swapped.contains("-score")
            && swapped.contains("~lives (int16 → int32)"),
        "{swapped}"
    );
    let state = s.expect_prefix("[state] points=");
    let points = field(&state, "points").expect("points");
    assert!(
        points > 0 && points % 1000 == 0,
        "score × 1000 by migrate: {state}"
    );
    assert!(state.contains(" lives=3 bonus=7 "), "{state}");
    assert_eq!(s.stop(), 0);
}

/// A C library posing as one built with the plugin crate, with the record
/// given: the server refuses it at load with one line naming both sides.
fn posing_as_the_plugin_crate(abi: u32, hash: &str, qualifier: &str) -> String {
    format!(
        r#"#include "hotreload.h"
typedef struct {{ int score; }} state_t;
static void init(void* s) {{ (void)s; }}
static void tick(void* s, double dt) {{ ((state_t*)s)->score += 1; (void)dt; }}
static logic_api_t api = {{ HOTRELOAD_API_VERSION, sizeof(state_t), init, tick, init }};
HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) {{ return &api; }}
static const hotreload_field_t fields[] = {{ HOTRELOAD_FIELD(state_t, score, HOTRELOAD_I32) }};
static logic_api_ext_t ext = {{ HOTRELOAD_EXT_VERSION, sizeof(logic_api_ext_t), 1, 1, fields }};
HOTRELOAD_EXPORT logic_api_ext_t* logic_get_api_ext(void) {{ return &ext; }}
HOTRELOAD_EXPORT {qualifier}hotreload_plugin_t hotreload_plugin = {{
    sizeof(hotreload_plugin_t), {abi}, {hash}, sizeof(state_t), 4 }};
"#
    )
}

#[test]
fn another_plugin_abi_or_a_wrong_layout_hash_is_refused_at_load() {
    for (abi, hash, qualifier, expected) in [
        (
            99,
            "0",
            "",
            "built with the hotreload-plugin crate's ABI 99 (hotreload_plugin.plugin_abi), but this host speaks ABI 1: expected 1, found 99",
        ),
        (
            1,
            "0x1234",
            "",
            "state layout hash mismatch: hotreload_plugin.layout_hash says 0x0000000000001234, but the schema logic_get_api_ext hands over (1 fields, 4 bytes, aligned to 4) hashes to 0x",
        ),
        // Where no panic could be written: refused before anything runs.
        (1, "0", "const ", "hotreload_plugin (symbol "),
    ] {
        for mode in [&[][..], &["--isolate"][..]] {
            let tmp = workdir();
            let dir = tmp.path();
            let source = posing_as_the_plugin_crate(abi, hash, qualifier);
            compile(dir, &source, "logic.so");
            std::fs::write(dir.join("logic.c"), &source).expect("source");
            let mut args = vec![
                "--watch",
                "logic.c",
                "--build",
                support::CC_BUILD,
                "--tick-ms",
                "10",
                "--no-control",
            ];
            args.extend_from_slice(mode);
            let mut s = Server::start(dir, &args);
            let refused = s.expect_prefix("[reload] rejected");
            assert!(refused.contains(expected), "{mode:?}: {refused}");
            if qualifier == "const " {
                assert!(
                    refused.contains("expected an address in this library's writable data"),
                    "{refused}"
                );
            }
            assert_eq!(
                s.count(|l| l.starts_with("[reload] rejected")),
                1,
                "one line: {}",
                s.transcript()
            );
            s.kill();
        }
    }
}

/// What no schema can describe does not compile, and the error says why.
#[test]
fn the_derive_refuses_what_no_schema_can_describe() {
    warm_up();
    let tmp = workdir();
    let dir = tmp.path();
    write_crate(
        dir,
        "hr_refused",
        r#"
use hotreload_plugin::State;

#[derive(State)]
#[repr(C)]
pub struct Heap { names: Vec<u8> }

#[derive(State)]
pub struct Unordered { a: i32, b: i64 }

#[derive(State)]
#[repr(C)]
pub struct Pointer { at: *const u8 }

#[derive(State)]
#[repr(C)]
pub struct Cube { cells: [[[u8; 2]; 2]; 2] }

#[derive(State)]
#[repr(C)]
pub struct Opaque { t: std::time::Instant }

fn tick(_: &mut Heap, _: f64) {}
hotreload_plugin::export! { tick: tick, state: Heap }
hotreload_plugin::export! { state: Heap, tick: tick, tick: tick }
hotreload_plugin::export! { state: Heap, tock: tick }
"#,
    );
    let out = cargo(dir).output().expect("run cargo");
    assert!(!out.status.success(), "it must not build");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "this field cannot be in a hot-reloaded state: heap data",
        "expected #[repr(C)] on the struct",
        "this field cannot be in a hot-reloaded state: a pointer",
        "an array of numbers with more than two dimensions cannot be described in a schema",
        "`Instant` cannot be part of a hot-reloaded state",
        "hotreload_plugin::export!: `init: function` is missing",
        "hotreload_plugin::export!: `tick` is given twice",
        "hotreload_plugin::export!: `tock` is not a key",
    ] {
        assert!(err.contains(expected), "{expected:?} in:\n{err}");
    }
}

const WITH_INPUT: &str = r#"
use hotreload_plugin::{Host, State};

#[derive(State)]
#[repr(C)]
pub struct Keys {
    total: u64,
    ticks_seen: u64,
}

fn init(_k: &mut Keys, _host: &Host) {}
fn tick(k: &mut Keys, _dt: f64, host: &Host) {
    k.total += host.input().iter().map(|&b| u64::from(b)).sum::<u64>();
    k.ticks_seen = host.tick();
}

hotreload_plugin::export! { state: Keys, init: init, tick: tick }
"#;

#[test]
fn a_rust_tick_that_takes_the_host_reads_its_input_and_index() {
    warm_up();
    let tmp = workdir();
    let dir = tmp.path();
    let lib = write_crate(dir, "hr_input", WITH_INPUT);
    let mut command = std::process::Command::new(support::binary());
    command
        .args(
            server_args(&lib)
                .into_iter()
                .filter(|a| a != "--no-control"),
        )
        .env("CARGO_TARGET_DIR", target_dir());
    let mut s = Server::start_command(dir, command);
    s.expect_prefix("[reload] loaded");
    let (code, out, err) = support::ctl::ctl(dir, &["input", "ab"]);
    assert_eq!(code, 0, "{out}{err}");
    let get = |path: &str| {
        let (code, out, err) = support::ctl::ctl(dir, &["get", path]);
        assert_eq!(code, 0, "{out}{err}");
        out.trim()
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("a number in {out:?}"))
    };
    let deadline = std::time::Instant::now() + support::WAIT;
    while get("total") < 3 * 195 {
        assert!(
            std::time::Instant::now() < deadline,
            "the input never counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(get("total") % 195, 0, "b'a' + b'b' per tick");
    assert!(get("ticks_seen") > 0, "the tick's index reaches the plugin");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}
