//! Migration that never corrupts silently, Rust plugins with the same state
//! features as C, and state lines good enough to debug with.
//!
//! Arrays migrate index by index (a glider survives its grid growing a
//! column), dropped elements are named, long accounts collapse, a
//! narrowing is allowed when the values of the moment fit and refused
//! naming the value when one does not, `--reset-field` resets one field
//! instead of refusing, a rejected build's layout line says whose it is; a
//! Rust `cdylib` with its state in a module shows and migrates its fields
//! and gets a statics warning about its own statics only; `--state-fields`
//! shows everything, enums by name, `char` arrays as strings, floats
//! exactly; the state file keeps shapes and still reads format 1.
//!
//! Every plugin is real C (or Rust) built by a real compiler; every
//! assertion is on what the real binary prints or writes.

mod support;

use std::path::Path;

use support::{Server, editor, workdir};

/// The build with debug info: the state's layout comes from DWARF.
const CC_DEBUG: &str = "cc -g -shared -fPIC -o logic.so logic.c";

/// A seed-ABI C plugin around `state_t { fields }`: `init` and `tick` are C
/// statements on `state_t* s`, `top` sits between the type and the
/// functions.
fn c_plugin(fields: &str, top: &str, init: &str, tick: &str) -> String {
    format!(
        r#"#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "hotreload.h"

typedef struct {{
    {fields}
}} state_t;

{top}

static void p_init(void* p) {{ state_t* s = p; {init} }}
static void p_tick(void* p, double dt) {{ state_t* s = p; (void)dt; {tick} }}
static void p_shutdown(void* p) {{ (void)p; }}

static logic_api_t api = {{
    .api_version = HOTRELOAD_API_VERSION,
    .state_size = sizeof(state_t),
    .init = p_init, .tick = p_tick, .shutdown = p_shutdown,
}};
HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) {{ return &api; }}
"#
    )
}

/// A server on `logic.c` in `dir` built with `build`, 10 ms ticks.
fn start(dir: &Path, build: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--watch", "logic.c", "--build", build, "--tick-ms", "10"];
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

/// Runs v1 until it printed `ready`, saves v2 and returns the server (its
/// cursor past the ready line) with the folder.
fn run_then_save(
    build: &str,
    extra: &[&str],
    v1: &str,
    ready: &str,
    v2: &str,
) -> (Server, tempfile::TempDir) {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1).expect("write v1");
    let mut s = start(dir.path(), build, extra);
    s.expect_contains(ready);
    editor::rename_over(&src, v2);
    (s, dir)
}

// ---------------------------------------------------------------------------
// Arrays of scalars migrate index by index.
// ---------------------------------------------------------------------------

/// Conway's life on a `ROWS × cols` grid (dead beyond its edges) holding a
/// glider; every tick steps it and prints the grid (`#` alive, rows split
/// by `/`). Version `one` stops stepping at generation 8, well inside the
/// grid; version `two` first prints the grid it was handed, then steps on.
fn life(cols: usize, tag: &str, schema: bool) -> String {
    let top = format!(
        r#"#define ROWS 10
#define COLS {cols}
static void show(const char* tag, const state_t* s) {{
    char line[ROWS * (COLS + 1)];
    int k = 0;
    for (int r = 0; r < ROWS; r++) {{
        for (int c = 0; c < COLS; c++) line[k++] = s->grid[r][c] ? '#' : '.';
        line[k++] = '/';
    }}
    line[k - 1] = 0;
    printf("[plugin] tag=%s gen=%d grid=%s\n", tag, s->gen, line);
}}
static void step(state_t* s) {{
    int next[ROWS][COLS];
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < COLS; c++) {{
            int n = 0;
            for (int dr = -1; dr <= 1; dr++)
                for (int dc = -1; dc <= 1; dc++)
                    if ((dr || dc) && r + dr >= 0 && r + dr < ROWS && c + dc >= 0 && c + dc < COLS)
                        n += s->grid[r + dr][c + dc];
            next[r][c] = n == 3 || (n == 2 && s->grid[r][c]);
        }}
    memcpy(s->grid, next, sizeof next);
    s->gen++;
}}
static int handed_over;
{schema}"#,
        schema = if schema {
            "static const hotreload_field_t fields[] = {
    HOTRELOAD_FIELD_2D(state_t, grid, HOTRELOAD_I32),
    HOTRELOAD_FIELD(state_t, gen, HOTRELOAD_I32),
};
static logic_api_ext_t ext = {
    .ext_version = HOTRELOAD_EXT_VERSION, .size = sizeof(logic_api_ext_t),
    .fields = fields, .field_count = HOTRELOAD_FIELD_COUNT(fields),
};
HOTRELOAD_EXPORT logic_api_ext_t* logic_get_api_ext(void) { return &ext; }"
        } else {
            ""
        }
    );
    let tick = if tag == "one" {
        "if (s->gen < 8) step(s); show(\"one\", s);".to_owned()
    } else {
        format!("if (!handed_over++) show(\"handed\", s); step(s); show(\"{tag}\", s);")
    };
    c_plugin(
        &format!("int grid[10][{cols}]; int gen;"),
        &top,
        "memset(s, 0, sizeof *s); s->grid[0][1] = s->grid[1][2] = 1; \
         s->grid[2][0] = s->grid[2][1] = s->grid[2][2] = 1;",
        &tick,
    )
}

/// The `grid=` of a life line, as rows.
fn grid_rows(line: &str) -> Vec<String> {
    let at = line.find("grid=").expect("a grid") + "grid=".len();
    line[at..].split('/').map(str::to_owned).collect()
}

/// The live cells of a life line, as (row, column).
fn alive(line: &str) -> Vec<(usize, usize)> {
    grid_rows(line)
        .iter()
        .enumerate()
        .flat_map(|(r, row)| row.match_indices('#').map(move |(c, _)| (r, c)))
        .collect()
}

fn a_glider_survives(build: &str, schema: bool) {
    let (mut s, _dir) = run_then_save(
        build,
        &[],
        &life(10, "one", schema),
        "tag=one gen=8 ",
        &life(11, "two", schema),
    );
    let swap = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    assert!(swap.ends_with("; migrated: +grid[*][10])"), "{swap}");
    let handed = s.expect_contains("[plugin] tag=handed gen=8 ");
    let before = s
        .lines()
        .into_iter()
        .find(|l| l.starts_with("[plugin] tag=one gen=8 "))
        .unwrap_or_else(|| panic!("v1 printed gen 8:\n{}", s.transcript()));
    // Every row as it was, with a dead cell at the end of each.
    let widened: Vec<String> = grid_rows(&before).iter().map(|r| format!("{r}.")).collect();
    assert_eq!(grid_rows(&handed), widened, "{}", s.transcript());
    // And it is still a glider: four generations on, the same five cells one
    // row down and one column right.
    let later = s.expect_contains("tag=two gen=12 ");
    let moved: Vec<(usize, usize)> = alive(&handed).iter().map(|(r, c)| (r + 1, c + 1)).collect();
    assert_eq!((alive(&later), moved.len()), (moved, 5), "{later}");
    assert_eq!(s.stop(), 0);
}

#[test]
fn a_glider_in_a_grid_survives_its_rows_growing_by_debug_info() {
    a_glider_survives(CC_DEBUG, false);
}

#[test]
fn a_glider_in_a_grid_survives_its_rows_growing_by_the_schema() {
    // Without -g: the schema's HOTRELOAD_FIELD_2D is the only shape.
    a_glider_survives(support::CC_BUILD, true);
}

#[test]
fn a_shorter_array_names_the_dropped_elements() {
    let v1 = c_plugin(
        "int b[4]; int score;",
        "",
        "for (int i = 0; i < 4; i++) s->b[i] = 10 + i;",
        "s->score++; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
    );
    let v2 = c_plugin(
        "int b[2]; int score;",
        "",
        "",
        "s->score++; printf(\"[plugin] tag=two b=%d,%d\\n\", s->b[0], s->b[1]);",
    );
    let (mut s, _dir) = run_then_save(CC_DEBUG, &[], &v1, "tag=one score=2", &v2);
    let swap = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    assert!(swap.ends_with("; migrated: -b[2..4])"), "{swap}");
    let state = s.expect_prefix("[state] ");
    assert!(state.starts_with("[state] b=[10, 11] score="), "{state}");
    s.expect_contains("[plugin] tag=two b=10,11");
    assert_eq!(s.stop(), 0);
}

#[test]
fn one_change_to_the_element_type_of_a_brick_wall_is_one_entry() {
    let v1 = c_plugin(
        "struct { int x; } brick[5][20]; int score;",
        "",
        "",
        "s->score++; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
    );
    let v2 = c_plugin(
        "struct { int x; int hits; } brick[5][20]; int score;",
        "",
        "",
        "s->score++; printf(\"[plugin] tag=two score=%d\\n\", s->score);",
    );
    let (mut s, _dir) = run_then_save(CC_DEBUG, &[], &v1, "tag=one score=2", &v2);
    let swap = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    assert!(
        swap.ends_with("; migrated: +brick[*][*].hits (100))"),
        "{swap}"
    );
    assert!(swap.len() < 200, "one readable line: {swap}");
    assert_eq!(s.stop(), 0);
}

// ---------------------------------------------------------------------------
// Narrowing: allowed when the values fit, refused naming the one that does not.
// ---------------------------------------------------------------------------

fn bounces(ty: &str, tag: &str, init: &str) -> String {
    let tick = format!(
        "s->score++; printf(\"[plugin] tag={tag} score=%d bounces=%lld\\n\", s->score, (long long)s->bounces);"
    );
    c_plugin(&format!("{ty} bounces; int score;"), "", init, &tick)
}

#[test]
fn a_widening_can_be_undone_when_every_value_fits() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, bounces("int32_t", "one", "s->bounces = 365;")).expect("write v1");
    let mut s = start(dir.path(), CC_DEBUG, &[]);
    s.expect_contains("tag=one score=2 bounces=365");
    editor::rename_over(&src, &bounces("int64_t", "two", ""));
    let swap = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    assert!(
        swap.ends_with("; migrated: ~bounces (int32 → int64))"),
        "{swap}"
    );
    s.expect_contains("tag=two score=");
    // Back to the old source: 365 fits an int32 again.
    editor::rename_over(&src, &bounces("int32_t", "three", ""));
    let swap = s.expect("the swap back", |l| {
        l.starts_with("[reload] swapped logic.so (api=1, v3") || l.starts_with("[reload] rejected")
    });
    assert!(
        swap.ends_with("; migrated: ~bounces (int64 → int32, every value checked))"),
        "{}",
        s.transcript()
    );
    let state = s.expect_prefix("[state] ");
    assert!(state.starts_with("[state] bounces=365 score="), "{state}");
    s.expect_contains("tag=three score=");
    assert_eq!(s.stop(), 0);
}

#[test]
fn a_narrowing_that_does_not_fit_is_refused_naming_field_and_value() {
    let v1 = bounces("int64_t", "one", "s->bounces = 3000000000LL;");
    let v2 = bounces("int32_t", "two", "");
    let (mut s, _dir) = run_then_save(CC_DEBUG, &["--reloads", "1"], &v1, "tag=one score=2 ", &v2);
    let line = s.expect_prefix("[reload] rejected: ");
    assert_eq!(
        line,
        "[reload] rejected: cannot carry the state over: field bounces: value 3000000000 does \
         not fit int32; the new version is refused; to start bounces at zero in it instead, \
         pass --reset-field bounces (keeping v1)"
    );
    assert_eq!(s.exit_code(), 10);
    // v1 kept its state untouched to the end (the final line may come
    // before the rejection: the refusal is decided on the tick thread and
    // said by the reload thread).
    assert_eq!(
        s.count(
            |l| l.starts_with("[state] bounces=3000000000 score=") && l.contains("(final; v1, ")
        ),
        1,
        "{}",
        s.transcript()
    );
    assert_eq!(s.count(|l| l.contains("tag=two")), 0, "v2 never ran");
    assert!(s.count(|l| l.contains("tag=one score=")) >= 2);
}

/// v2 widens `bounces`, stores a value only it can hold, and faults on its
/// third tick: the rollback to v1 must narrow the state back.
fn a_rollback_that_must_narrow(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let v1 = bounces("int32_t", "one", "s->bounces = 365;");
    let v2 = c_plugin(
        "int64_t bounces; int score;",
        "static int live;",
        "",
        "if (++live == 3) { *(volatile int*)0 = 1; } s->bounces = 3000000000LL; s->score++;
         printf(\"[plugin] tag=two score=%d\\n\", s->score);",
    );
    let mut args = vec!["--trial-ticks", "0"];
    args.extend_from_slice(extra);
    let (mut s, dir) = run_then_save(CC_DEBUG, &args, &v1, "tag=one score=2 ", &v2);
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    (s, dir)
}

#[test]
fn a_rollback_that_cannot_narrow_the_state_back_pauses_saying_why() {
    let (mut s, _dir) = a_rollback_that_must_narrow(&[]);
    let fault = s.expect_prefix("[fault] ");
    assert!(
        fault.contains(
            "; v1 cannot take the state back (field bounces: value 3000000000 does not fit \
             int32; with --reset-field bounces it would start at zero there): ticking paused \
             until the next good build, state restored to tick "
        ),
        "{}",
        s.transcript()
    );
    let paused_at = s.lines().len();
    assert_eq!(s.stop(), 14);
    assert_eq!(
        s.count(|l| l.contains("tag=")),
        s.lines()[..paused_at]
            .iter()
            .filter(|l| l.contains("tag="))
            .count(),
        "nothing ticks while paused:\n{}",
        s.transcript()
    );
}

#[test]
fn a_rollback_with_reset_field_narrows_back_and_says_what_it_reset() {
    let (mut s, _dir) = a_rollback_that_must_narrow(&["--reset-field", "bounces"]);
    let fault = s.expect_prefix("[fault] ");
    assert!(
        fault.ends_with(
            " and carried back to v1's layout (reset bounces (value 3000000000 does not fit \
             int32))"
        ) && fault.contains("; rolled back to v1, state restored to tick "),
        "{}",
        s.transcript()
    );
    // v1 ticks on with the score v2 reached and bounces at zero.
    let line = s.expect_contains("tag=one score=");
    assert!(line.ends_with(" bounces=0"), "{line}");
    assert_eq!(s.stop(), 14);
}

#[test]
fn reset_field_starts_only_that_field_at_zero() {
    let v1 = c_plugin(
        "int64_t bounces; double time; int score;",
        "",
        "s->bounces = 3000000000LL; s->time = 1.5; s->score = 100;",
        "s->score++; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
    );
    let v2 = c_plugin(
        "int32_t bounces; int time; int score;",
        "",
        "",
        "s->score++; printf(\"[plugin] tag=two score=%d bounces=%d time=%d\\n\", s->score, s->bounces, s->time);",
    );
    let extra = ["--reset-field", "bounces", "--reset-field", "t?me"];
    let (mut s, _dir) = run_then_save(CC_DEBUG, &extra, &v1, "tag=one score=102", &v2);
    let swap = s.expect("the swap", |l| {
        l.starts_with("[reload] swapped") || l.starts_with("[reload] rejected")
    });
    assert!(
        swap.ends_with(
            "; migrated: reset time (double → int32: a float's fractions would be lost) reset \
             bounces (value 3000000000 does not fit int32))"
        ),
        "{}",
        s.transcript()
    );
    let state = s.expect_prefix("[state] ");
    let score = support::field(&state, "score").expect("a score");
    assert!(score > 102, "the score is carried: {state}");
    assert!(
        state.starts_with(&format!(
            "[state] bounces=0 time=0 score={score} (migrated; v2"
        )),
        "{state}"
    );
    s.expect_contains(&format!("tag=two score={} bounces=0 time=0", score + 1));
    assert_eq!(s.stop(), 0);
}

// ---------------------------------------------------------------------------
// Layout notices and plurals.
// ---------------------------------------------------------------------------

#[test]
fn a_rejected_builds_layout_line_says_it_is_the_new_builds() {
    let v1 = c_plugin(
        "double time;",
        "",
        "",
        "s->time += dt; printf(\"[plugin] tag=one\\n\");",
    );
    let v2 = c_plugin("int time; int lives;", "", "", "s->lives++;");
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1).expect("write v1");
    let mut s = start(dir.path(), CC_DEBUG, &["--reloads", "1"]);
    s.expect_contains(
        "[state] the new build's layout from debug info: state_t (chosen by the name state_t), 1 field",
    );
    s.expect_contains("tag=one");
    editor::rename_over(&src, &v2);
    let notice = s.expect_contains(" 2 fields");
    assert_eq!(
        notice,
        "[state] the new build's layout from debug info: state_t (chosen by the name state_t), 2 fields"
    );
    let rejected = s.expect_prefix("[reload] rejected: ");
    assert!(rejected.ends_with("(keeping v1)"), "{rejected}");
    assert_eq!(s.exit_code(), 10);
    assert_eq!(
        s.count(|l| l.starts_with("[state] layout")),
        0,
        "no layout line reads as the running version's:\n{}",
        s.transcript()
    );
}

#[test]
fn members_without_a_field_are_named_in_the_layout_line() {
    let line = {
        let dir = workdir();
        let plugin = c_plugin("unsigned flags : 3; long double ld; int score;", "", "", "");
        std::fs::write(dir.path().join("logic.c"), plugin).expect("write");
        let mut s = start(dir.path(), CC_DEBUG, &["--ticks", "1"]);
        let line = s.expect_contains("the new build's layout");
        assert_eq!(s.exit_code(), 0);
        line
    };
    assert_eq!(
        line,
        "[state] the new build's layout from debug info: state_t (chosen by the name state_t), \
         1 field; no field for flags (a bitfield), ld (long double): their bytes are shown \
         nowhere and not carried when the layout changes"
    );
}

// ---------------------------------------------------------------------------
// Rust plugins.
// ---------------------------------------------------------------------------

const RUSTC: &str =
    "rustc --crate-type cdylib -g --edition 2021 --crate-name rsplug -o librsplug.so lib.rs";

/// A Rust plugin on the raw ABI with `#[repr(C)] pub struct State` inside
/// `mod game`; `extra` adds fields between `score` and `speed`, `statics`
/// adds items at the crate's root and `tick` statements on `s`.
fn rust_plugin(tag: &str, extra: &str, statics: &str, tick: &str) -> String {
    format!(
        r#"#![allow(dead_code)]
use std::ffi::c_void;

#[repr(C)]
pub struct LogicApi {{
    api_version: i32,
    state_size: usize,
    init: Option<unsafe extern "C" fn(*mut c_void)>,
    tick: Option<unsafe extern "C" fn(*mut c_void, f64)>,
    shutdown: Option<unsafe extern "C" fn(*mut c_void)>,
}}

pub mod game {{
    #[repr(C)]
    pub struct State {{
        pub score: i32,
        {extra}
        pub speed: f32,
    }}
}}

{statics}

unsafe extern "C" fn init(p: *mut c_void) {{
    let s = unsafe {{ &mut *p.cast::<game::State>() }};
    s.score = 10;
    s.speed = 0.5;
}}

unsafe extern "C" fn tick(p: *mut c_void, _dt: f64) {{
    let s = unsafe {{ &mut *p.cast::<game::State>() }};
    s.score += 1;
    {tick}
    println!("[plugin] tag={tag} score={{}}", s.score);
}}

unsafe extern "C" fn shutdown(_: *mut c_void) {{}}

static API: LogicApi = LogicApi {{
    api_version: 1,
    state_size: std::mem::size_of::<game::State>(),
    init: Some(init),
    tick: Some(tick),
    shutdown: Some(shutdown),
}};

#[unsafe(no_mangle)]
pub extern "C" fn logic_get_api() -> *const LogicApi {{
    &API
}}
"#
    )
}

fn start_rust(dir: &Path, source: &str, extra: &[&str]) -> Server {
    std::fs::write(dir.join("lib.rs"), source).expect("write lib.rs");
    let mut args = vec!["--watch", "lib.rs", "--build", RUSTC, "--tick-ms", "10"];
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

#[test]
fn a_rust_state_inside_a_module_shows_its_fields_and_migrates() {
    for state_type in ["State", "game::State"] {
        let dir = workdir();
        let mut s = start_rust(
            dir.path(),
            &rust_plugin("one", "", "", ""),
            &["--state-type", state_type],
        );
        s.expect_contains(
            "[state] the new build's layout from debug info: struct rsplug::game::State \
             (chosen by --state-type), 2 fields",
        );
        s.expect_contains("[state] score=10 speed=0.5 (initial; v1)");
        s.expect_contains("tag=one score=12");
        editor::rename_over(
            &dir.path().join("lib.rs"),
            &rust_plugin("two", "pub lives: i32,", "", "s.lives += 2;"),
        );
        let swap = s.expect_prefix("[reload] swapped librsplug.so (api=1, v2");
        assert!(
            swap.ends_with("; migrated: +lives)"),
            "{state_type}: {swap}"
        );
        let state = s.expect_prefix("[state] ");
        let score = support::field(&state, "score").expect("a score");
        assert!(score > 12, "{state}");
        assert!(
            state.starts_with(&format!(
                "[state] score={score} lives=0 speed=0.5 (migrated; v2"
            )),
            "{state_type}: {state}"
        );
        s.expect_contains(&format!("tag=two score={}", score + 1));
        assert_eq!(s.stop(), 0, "{state_type}");
    }
}

#[test]
fn the_rust_statics_warning_names_only_the_plugins_own_statics_demangled() {
    let statics = "static mut CALLS: u64 = 0;
static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);";
    let tick = "unsafe { CALLS += 1; } COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);";
    let dir = workdir();
    let mut s = start_rust(dir.path(), &rust_plugin("one", "", statics, tick), &[]);
    // Said once the version is handed over, by another thread than the
    // plugin's lines: in either order.
    s.expect_contains("tag=one score=13");
    let warning = "[reload] warning: v1 keeps writable static data (rsplug::CALLS (8 bytes), \
                   rsplug::COUNTER (4 bytes)): it starts afresh on every reload; keep what must \
                   survive in the state";
    assert_eq!(s.count(|l| l == warning), 1, "{}", s.transcript());
    assert_eq!(s.count(|l| l.contains("writable static data")), 1);
    assert_eq!(s.stop(), 0);
}

// ---------------------------------------------------------------------------
// State lines to debug with.
// ---------------------------------------------------------------------------

/// Runs a plugin for `ticks` ticks and returns its initial state line.
fn initial_state(fields: &str, init: &str, extra: &[&str]) -> String {
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), c_plugin(fields, "", init, "")).expect("write");
    let mut args = vec!["--ticks", "1"];
    args.extend_from_slice(extra);
    let mut s = start(dir.path(), CC_DEBUG, &args);
    let line = s.expect_contains(" (initial; v1)");
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
    line
}

#[test]
fn state_fields_star_shows_every_field_and_element() {
    let fields: String =
        (0..13).map(|i| format!("int f{i}; ")).collect::<String>() + "int items[10];";
    let init = "int* all = (int*)s; for (int i = 0; i < 23; i++) all[i] = i;";
    let compact = initial_state(&fields, init, &[]);
    assert!(
        compact
            .ends_with("f11=11 … (14 fields in all; --state-fields '*' shows them) (initial; v1)"),
        "{compact}"
    );
    let all = initial_state(&fields, init, &["--state-fields", "*"]);
    let want: String = (0..13).map(|i| format!("f{i}={i} ")).collect::<String>()
        + "items=[13, 14, 15, 16, 17, 18, 19, 20, 21, 22]";
    assert_eq!(all, format!("[state] {want} (initial; v1)"));
    let some = initial_state(
        &fields,
        init,
        &["--state-fields", "f1?", "--state-fields", "items"],
    );
    assert_eq!(
        some,
        "[state] f10=10 f11=11 f12=12 items=[13, 14, 15, 16, 17, 18, 19, 20, 21, 22] (initial; v1)"
    );
}

#[test]
fn an_enum_shows_by_name() {
    let line = initial_state(
        "enum { IDLE, RUN, JUMP } mode; enum { OFF = -1, ON = 1 } lamp; int other;",
        "s->mode = RUN; s->lamp = OFF; s->other = 7;",
        &[],
    );
    assert_eq!(line, "[state] mode=RUN lamp=OFF other=7 (initial; v1)");
    let unknown = initial_state("enum { IDLE, RUN } mode;", "s->mode = 7;", &[]);
    assert_eq!(unknown, "[state] mode=7 (initial; v1)");
}

#[test]
fn a_char_array_shows_as_a_string() {
    let line = initial_state(
        "char name[16]; unsigned char bytes[3];",
        "strcpy(s->name, \"ada \\\"one\\\"\"); s->bytes[0] = 'a';",
        &[],
    );
    assert_eq!(
        line,
        r#"[state] name="ada \"one\"" bytes=[97, 0, 0] (initial; v1)"#
    );
}

#[test]
fn a_small_float_shows_exactly() {
    let line = initial_state(
        "float rate; double tiny; float one;",
        "s->rate = 0.004f; s->tiny = 1e-7; s->one = 1.0f;",
        &[],
    );
    assert_eq!(line, "[state] rate=0.004 tiny=1e-7 one=1.0 (initial; v1)");
}

// ---------------------------------------------------------------------------
// The state file keeps shapes, and still reads format 1.
// ---------------------------------------------------------------------------

#[test]
fn the_state_file_round_trips_shapes_and_reads_a_version_1_file() {
    let dir = workdir();
    let plugin = c_plugin(
        "int score; int grid[2][3];",
        "",
        "s->score = 1; for (int i = 0; i < 6; i++) s->grid[i / 3][i % 3] = 10 + i;",
        "s->score++;",
    );
    std::fs::write(dir.path().join("logic.c"), plugin).expect("write");
    let args = ["--state-file", "state.bin", "--ticks", "2"];
    let run = |dir: &Path| {
        let mut s = start(dir, CC_DEBUG, &args);
        let restored = s.expect_contains("[state] score=");
        assert_eq!(s.exit_code(), 0, "{}", s.transcript());
        restored
    };
    run(dir.path());
    let file = std::fs::read(dir.path().join("state.bin")).expect("the state file");
    assert_eq!(file[8..12], 2u32.to_le_bytes(), "format 2");
    assert_eq!(
        run(dir.path()),
        "[state] score=3 grid=[[10, 11, 12], [13, 14, 15]] (restored from state.bin; v1)"
    );

    // A file as format 1 wrote it: `grid` was one flat count of 6.
    let mut state = Vec::new();
    for v in [41i32, 1, 2, 3, 4, 5, 6] {
        state.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(dir.path().join("state.bin"), version_1_file(&state)).expect("write v1 file");
    assert_eq!(
        run(dir.path()),
        "[state] score=41 grid=[[1, 2, 3], [4, 5, 6]] (restored from state.bin (migrated: ~grid \
         ([6] → [2][3])); v1)"
    );
}

#[test]
fn a_saved_value_that_does_not_fit_refuses_the_restore_until_reset_field() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(
        &src,
        bounces("int64_t", "one", "s->bounces = 3000000000LL;"),
    )
    .expect("write");
    let args = ["--state-file", "state.bin", "--ticks", "2"];
    let mut s = start(dir.path(), CC_DEBUG, &args);
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
    let saved = std::fs::read(dir.path().join("state.bin")).expect("saved");

    std::fs::write(&src, bounces("int32_t", "two", "")).expect("write v2");
    let mut s = start(dir.path(), CC_DEBUG, &args);
    let refused = s.expect_prefix("[reload] rejected: ");
    assert_eq!(
        refused,
        "[reload] rejected: cannot carry the state over: the state saved in state.bin does not \
         fit this version: field bounces: value 3000000000 does not fit int32; the new version \
         is refused; to start bounces at zero in it instead, pass --reset-field bounces; pass \
         --fresh-state to start over (no version running yet)"
    );
    s.stop();
    assert_eq!(
        std::fs::read(dir.path().join("state.bin")).expect("still there"),
        saved,
        "the saved state is left as it was"
    );

    let mut with_reset = args.to_vec();
    with_reset.extend(["--reset-field", "bounces"]);
    let mut s = start(dir.path(), CC_DEBUG, &with_reset);
    let restored = s.expect_contains("(restored from state.bin");
    assert_eq!(
        restored,
        "[state] bounces=0 score=2 (restored from state.bin (migrated: reset bounces (value \
         3000000000 does not fit int32)); v1)"
    );
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
}

/// A state file of format 1 for `{ int score; int grid[6]; }` from a
/// schema, byte for byte as that format was written.
fn version_1_file(state: &[u8]) -> Vec<u8> {
    let mut out = b"\x89HRSTATE".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // the length, below
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    out.push(1);
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&2u64.to_le_bytes());
    for (name, offset, count) in [("score", 0u64, 1u64), ("grid", 4, 6)] {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&[1, 1, 4]);
        out.extend_from_slice(&count.to_le_bytes());
        out.push(0);
    }
    out.extend_from_slice(state);
    let total = (out.len() + 4) as u64;
    out[12..20].copy_from_slice(&total.to_le_bytes());
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3), bit by bit: the state file's checksum.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}
