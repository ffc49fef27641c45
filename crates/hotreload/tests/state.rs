//! The state across versions: migrated field by field when a new version
//! changes its layout (from debug info or a declared schema), handed to the
//! plugin's migrate hook, carried back on a rollback, transient fields reset,
//! hooks called in order with the host context, saved to and restored from a
//! state file (surviving corrupt files and `kill -9`), warnings for pointers
//! into a library and for static data, deterministic runs by seed, and
//! periodic state lines.
//!
//! Every plugin here is real C built by a real `cc`; every assertion is on
//! what the real binary prints or writes.

mod support;

use support::state_plugin::{
    CC_DEBUG, Plugin, expect_score, index_of, last_score_before, run, start, state_tick, two_places,
};
use support::{Server, editor, field, workdir};

// ---------------------------------------------------------------------------
// 1. Adding a field while running.
// ---------------------------------------------------------------------------

/// `score` counts ticks from 10 and `time` adds dt (0.01) from 1.0, so every
/// state line must say `score=10+T time=1+T/100` at tick T.
const SCORE_TIME_INIT: &str = "s->score = 10; s->time = 1.0;";

fn score_time_tick(tag: &str) -> String {
    format!(
        "s->score += 1; s->time += dt; printf(\"[plugin] tag={tag} score=%d time=%.2f\\n\", s->score, s->time);"
    )
}

/// v1 `{score, time}` runs; v2 inserts `lives` between them. The swap says
/// `migrated: +lives`, the state keeps score and time (at their new offsets)
/// and lives starts at zero; v2 ticks on from there.
fn add_a_field(build: &str, v1: &Plugin, v2: &Plugin, layout_notice: Option<(&str, &str)>) {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), build, &[]);
    if let Some((first, _)) = layout_notice {
        s.expect_contains(first);
    }
    s.expect_contains("[state] score=10 time=1.0 (initial; v1)");
    expect_score(&mut s, "one", 13);

    editor::rename_over(&src, &v2.source());
    if let Some((_, second)) = layout_notice {
        s.expect_contains(second);
    }
    let swap = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    assert!(swap.ends_with("; migrated: +lives)"), "{swap}");
    let migrated = s.expect_prefix("[state] ");
    let tick = state_tick(&migrated);
    let score = 10 + tick as i64;
    assert_eq!(
        two_places(&migrated),
        format!(
            "[state] score={score} lives=0 time={:.2} (migrated; v2, tick {tick})",
            1.0 + tick as f64 * 0.01
        ),
        "{}",
        s.transcript()
    );
    let swap_at = index_of(&s, "swapped", |l| l == swap);
    assert_eq!(
        last_score_before(&s, "one", swap_at),
        score,
        "the old values were kept"
    );
    let first = s.expect_contains("tag=two score=");
    assert!(
        first.starts_with(&format!(
            "[plugin] tag=two score={} lives=0 time=",
            score + 1
        )),
        "{first}"
    );
    assert_eq!(s.stop(), 0);
}

fn v1_score_time() -> Plugin<'static> {
    Plugin {
        fields: "int score; double time;",
        init: SCORE_TIME_INIT,
        ..Plugin::default()
    }
}

#[test]
fn adding_a_field_while_running_migrates_the_state_by_debug_info() {
    let tick1 = score_time_tick("one");
    let v1 = Plugin {
        tick: &tick1,
        ..v1_score_time()
    };
    let v2 = Plugin {
        fields: "int score; int lives; double time;",
        tick: "s->score += 1; s->time += dt; printf(\"[plugin] tag=two score=%d lives=%d time=%.2f\\n\", s->score, s->lives, s->time);",
        ..v1_score_time()
    };
    add_a_field(
        CC_DEBUG,
        &v1,
        &v2,
        Some((
            "[state] the new build's layout from debug info: state_t (chosen by the name state_t), 2 fields",
            "[state] the new build's layout from debug info: state_t (chosen by the name state_t), 3 fields",
        )),
    );
}

#[test]
fn adding_a_field_while_running_migrates_the_state_by_the_schema() {
    let tick1 = score_time_tick("one");
    let v1 = Plugin {
        tick: &tick1,
        top: "static const hotreload_field_t fields[] = {
                  HOTRELOAD_FIELD(state_t, score, HOTRELOAD_I32),
                  HOTRELOAD_FIELD(state_t, time, HOTRELOAD_F64),
              };",
        ext: Some(".fields = fields, .field_count = HOTRELOAD_FIELD_COUNT(fields),"),
        ..v1_score_time()
    };
    let v2 = Plugin {
        fields: "int score; int lives; double time;",
        tick: "s->score += 1; s->time += dt; printf(\"[plugin] tag=two score=%d lives=%d time=%.2f\\n\", s->score, s->lives, s->time);",
        top: "static const hotreload_field_t fields[] = {
                  HOTRELOAD_FIELD(state_t, score, HOTRELOAD_I32),
                  HOTRELOAD_FIELD(state_t, lives, HOTRELOAD_I32),
                  HOTRELOAD_FIELD(state_t, time, HOTRELOAD_F64),
              };",
        ..v1
    };
    // Built without -g: the schema is the only source of the layout.
    add_a_field(support::CC_BUILD, &v1, &v2, None);
}

// ---------------------------------------------------------------------------
// 2. Removing, reordering, widening, and changing a type incompatibly.
// ---------------------------------------------------------------------------

/// Starts v1, waits for `tag=one score=13`, saves v2, and returns the server
/// with the swap and migrated-state lines.
fn swap_to(v1: &Plugin, v2: &Plugin) -> (Server, tempfile::TempDir, String, String) {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), CC_DEBUG, &[]);
    expect_score(&mut s, "one", 13);
    editor::rename_over(&src, &v2.source());
    let swap = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    let state = s.expect_prefix("[state] ");
    (s, dir, swap, state)
}

#[test]
fn removing_a_field_drops_it_and_keeps_the_others() {
    let v1 = Plugin {
        fields: "int score; int bonus; double time;",
        init: "s->score = 10; s->bonus = 77; s->time = 1.0;",
        tick: "s->score += 1; s->time += dt; printf(\"[plugin] tag=one score=%d bonus=%d\\n\", s->score, s->bonus);",
        ..Plugin::default()
    };
    let v2 = Plugin {
        fields: "int score; double time;",
        init: SCORE_TIME_INIT,
        tick: "s->score += 1; s->time += dt; printf(\"[plugin] tag=two score=%d\\n\", s->score);",
        ..v1
    };
    let (mut s, _dir, swap, state) = swap_to(&v1, &v2);
    assert!(swap.ends_with("; migrated: -bonus)"), "{swap}");
    let tick = state_tick(&state);
    assert_eq!(
        two_places(&state),
        format!(
            "[state] score={} time={:.2} (migrated; v2, tick {tick})",
            10 + tick,
            1.0 + tick as f64 * 0.01
        )
    );
    let first = s.expect_contains("tag=two score=");
    assert_eq!(field(&first, "score"), Some(11 + tick as i64), "{first}");
    assert_eq!(s.stop(), 0);
}

#[test]
fn reordered_fields_keep_their_values_by_name() {
    let v1 = Plugin {
        fields: "int score; int lives; double time;",
        init: "s->score = 10; s->lives = 3; s->time = 1.0;",
        tick: "s->score += 1; s->time += dt; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        ..Plugin::default()
    };
    let v2 = Plugin {
        fields: "double time; int lives; int score;",
        tick: "s->score += 1; s->time += dt; printf(\"[plugin] tag=two score=%d lives=%d time=%.2f\\n\", s->score, s->lives, s->time);",
        ..v1
    };
    let (mut s, _dir, swap, state) = swap_to(&v1, &v2);
    // Same size, same names: only the offsets moved.
    assert!(
        swap.ends_with("; migrated: reordered time, lives, score)"),
        "{swap}"
    );
    let tick = state_tick(&state);
    let time = format!("{:.2}", 1.0 + tick as f64 * 0.01);
    assert_eq!(
        two_places(&state),
        format!(
            "[state] time={time} lives=3 score={} (migrated; v2, tick {tick})",
            10 + tick
        )
    );
    // The new code reads each value at its new place.
    let first = s.expect_contains("tag=two score=");
    assert!(
        first.starts_with(&format!(
            "[plugin] tag=two score={} lives=3 time=",
            11 + tick
        )),
        "{first}"
    );
    assert_eq!(s.stop(), 0);
}

#[test]
fn widened_types_keep_their_values() {
    // Negative, to see the sign extended; quarters, exact in a float.
    let v1 = Plugin {
        fields: "int score; float speed;",
        init: "s->score = -1000; s->speed = 0.5f;",
        tick: "s->score -= 1; s->speed += 0.25f; printf(\"[plugin] tag=one score=%d speed=%.2f\\n\", s->score, s->speed);",
        ..Plugin::default()
    };
    let v2 = Plugin {
        fields: "int64_t score; double speed;",
        tick: "s->score -= 1; s->speed += 0.25; printf(\"[plugin] tag=two score=%\" PRId64 \" speed=%.2f\\n\", s->score, s->speed);",
        ..v1
    };
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), CC_DEBUG, &[]);
    expect_score(&mut s, "one", -1003);
    editor::rename_over(&src, &v2.source());
    let swap = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    assert!(
        swap.ends_with("; migrated: ~score (int32 → int64) ~speed (float → double))"),
        "{swap}"
    );
    let state = s.expect_prefix("[state] ");
    let tick = state_tick(&state);
    assert_eq!(
        two_places(&state),
        format!(
            "[state] score={} speed={:.2} (migrated; v2, tick {tick})",
            -1000 - tick as i64,
            0.5 + 0.25 * tick as f64
        )
    );
    let first = s.expect_contains("tag=two score=");
    assert_eq!(
        first,
        format!(
            "[plugin] tag=two score={} speed={:.2}",
            -1001 - tick as i64,
            0.75 + 0.25 * tick as f64
        )
    );
    assert_eq!(s.stop(), 0);
}

#[test]
fn an_incompatible_type_change_is_rejected_saying_why() {
    let v1 = Plugin {
        fields: "int score; double time;",
        init: SCORE_TIME_INIT,
        tick: "s->score += 1; s->time += dt; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        ..Plugin::default()
    };
    let v2 = Plugin {
        fields: "int score; int time;",
        tick: "s->score += 1; printf(\"[plugin] tag=two score=%d\\n\", s->score);",
        ..v1
    };
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), CC_DEBUG, &["--reloads", "1"]);
    expect_score(&mut s, "one", 13);
    editor::rename_over(&src, &v2.source());
    let line = s.expect_prefix("[reload] rejected: ");
    assert_eq!(
        line,
        "[reload] rejected: cannot carry the state over: field time: expected it to stay double or \
         become a type that holds its values, found int32 (a float's fractions would be lost); \
         the new version is refused; to start time at zero in it instead, pass --reset-field \
         time (keeping v1)"
    );
    let last = s.expect_contains(" (final; ");
    assert!(last.contains("(final; v1, tick "), "{last}");
    assert_eq!(s.exit_code(), 10);
    assert_eq!(s.count(|l| l.contains("tag=two")), 0, "v2 never ran");
}

#[test]
fn an_incompatible_type_change_leaves_the_old_code_ticking() {
    let v1 = Plugin {
        fields: "int score; double time;",
        init: SCORE_TIME_INIT,
        tick: "s->score += 1; s->time += dt; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        ..Plugin::default()
    };
    let v2 = Plugin {
        fields: "int score; int time;",
        tick: "s->score += 1; printf(\"[plugin] tag=two score=%d\\n\", s->score);",
        ..v1
    };
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), CC_DEBUG, &[]);
    expect_score(&mut s, "one", 13);
    editor::rename_over(&src, &v2.source());
    let line = s.expect_prefix("[reload] rejected: ");
    let at = index_of(&s, "rejected", |l| l == line);
    let before = last_score_before(&s, "one", at);
    // v1 carries on from its own state, tick after tick.
    for n in 1..=3 {
        expect_score(&mut s, "one", before + n);
    }
    assert_eq!(s.stop(), 10, "the last attempt was the rejection");
}

#[test]
fn a_size_change_without_layout_or_hook_is_rejected() {
    let v1 = Plugin {
        fields: "int score;",
        init: "s->score = 10;",
        tick: "s->score += 1; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        ..Plugin::default()
    };
    let v2 = Plugin {
        fields: "int score; int lives;",
        ..v1
    };
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), support::CC_BUILD, &["--reloads", "1"]);
    s.expect_contains("[state] 4 bytes, layout unknown: [0a 00 00 00] (initial; v1)");
    expect_score(&mut s, "one", 12);
    editor::rename_over(&src, &v2.source());
    let line = s.expect_prefix("[reload] rejected: ");
    assert!(
        line.starts_with(
            "[reload] rejected: state_size mismatch: expected 4 bytes (the state the host owns), found 8"
        ) && line.ends_with("(keeping v1)"),
        "{line}"
    );
    assert_eq!(s.exit_code(), 10);
}

// ---------------------------------------------------------------------------
// 3. The migrate hook.
// ---------------------------------------------------------------------------

const SCORE_SCHEMA_V1: &str = "static const hotreload_field_t fields[] = {
    HOTRELOAD_FIELD(state_t, score, HOTRELOAD_I32),
};";

/// v2 of the hook tests: `doubled` is new, and the hook fills it from the
/// old score; it prints what it was given and returns `ret`.
fn hook_v2(ret: i32) -> String {
    format!(
        r#"static const hotreload_field_t fields[] = {{
    HOTRELOAD_FIELD(state_t, score, HOTRELOAD_I32),
    HOTRELOAD_FIELD(state_t, doubled, HOTRELOAD_I32),
}};
static int migrate(const void* old_state, size_t old_size, uint32_t old_version,
                   void* new_state, size_t new_size) {{
    const int* old_score = old_state;
    state_t* s = new_state;
    printf("[plugin] migrate old_size=%zu old_version=%u new_size=%zu old_score=%d copied_score=%d doubled=%d\n",
           old_size, old_version, new_size, *old_score, s->score, s->doubled);
    s->doubled = *old_score * 2;
    return {ret};
}}"#
    )
}

fn hook_plugins(v2_top: &str) -> (String, String) {
    let v1 = Plugin {
        fields: "int score;",
        init: "s->score = 10;",
        tick: "s->score += 1; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        top: SCORE_SCHEMA_V1,
        ext: Some(
            ".state_version = 1, .fields = fields, .field_count = HOTRELOAD_FIELD_COUNT(fields),",
        ),
    };
    let v2 = Plugin {
        fields: "int score; int doubled;",
        tick: "s->score += 1; printf(\"[plugin] tag=two score=%d doubled=%d\\n\", s->score, s->doubled);",
        top: v2_top,
        ext: Some(
            ".state_version = 2, .fields = fields, .field_count = HOTRELOAD_FIELD_COUNT(fields), .migrate = migrate,",
        ),
        ..v1
    };
    (v1.source(), v2.source())
}

#[test]
fn the_migrate_hook_gets_sizes_and_versions_and_fixes_up_a_field() {
    let top = hook_v2(0);
    let (v1, v2) = hook_plugins(&top);
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1).expect("write v1");
    let mut s = start(dir.path(), support::CC_BUILD, &[]);
    s.expect_contains("[state] score=10 (initial; v1)");
    expect_score(&mut s, "one", 13);
    editor::rename_over(&src, &v2);
    // The host has copied score and zeroed doubled before the hook runs.
    let hook = s.expect_contains("[plugin] migrate ");
    let old_score = field(&hook, "old_score").expect("old_score");
    assert_eq!(
        hook,
        format!(
            "[plugin] migrate old_size=4 old_version=1 new_size=8 old_score={old_score} \
             copied_score={old_score} doubled=0"
        )
    );
    let swap = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    assert!(
        swap.ends_with("; migrated: +doubled; state version 1 → 2)"),
        "{swap}"
    );
    let state = s.expect_prefix("[state] ");
    let tick = state_tick(&state);
    assert_eq!(
        state,
        format!(
            "[state] score={old_score} doubled={} (migrated; v2, tick {tick})",
            old_score * 2
        )
    );
    assert_eq!(old_score, 10 + tick as i64);
    s.expect_contains(&format!(
        "tag=two score={} doubled={}",
        old_score + 1,
        old_score * 2
    ));
    assert_eq!(s.stop(), 0);
}

#[test]
fn a_migrate_hook_returning_nonzero_refuses_the_version() {
    let top = hook_v2(7);
    let (v1, v2) = hook_plugins(&top);
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1).expect("write v1");
    let mut s = start(dir.path(), support::CC_BUILD, &[]);
    expect_score(&mut s, "one", 13);
    editor::rename_over(&src, &v2);
    s.expect_contains("[plugin] migrate old_size=4 old_version=1 new_size=8 ");
    let refused = s.expect_prefix("[reload] rejected: ");
    assert_eq!(
        refused,
        "[reload] rejected: cannot carry the state over: the migrate hook of v2 refused the state (returned 7) (keeping v1)"
    );
    let at = index_of(&s, "the refusal", |l| l == refused);
    let before = last_score_before(&s, "one", at);
    // v1 ticks on from its own state, untouched by the refused migration.
    expect_score(&mut s, "one", before + 1);
    expect_score(&mut s, "one", before + 2);
    assert_eq!(s.count(|l| l.starts_with("[reload] swapped")), 0);
    assert_eq!(s.count(|l| l.contains("tag=two")), 0, "v2 never ticked");
    // A refusal is a rejection like an ABI mismatch, not a fault.
    assert_eq!(s.stop(), 10);
    assert_eq!(s.count(|l| l.starts_with("[fault]")), 0);
}

// ---------------------------------------------------------------------------
// 4. Hooks: on_unload/on_reload order, init with the host context.
// ---------------------------------------------------------------------------

fn hooks_plugin(tag: &'static str, top: &str) -> String {
    Plugin {
        fields: "int score;",
        init: "s->score = 0;",
        tick: if tag == "one" {
            "s->score += 1; printf(\"[plugin] tag=one score=%d\\n\", s->score);"
        } else {
            "s->score += 1; printf(\"[plugin] tag=two score=%d\\n\", s->score);"
        },
        top,
        ext: Some(".init = h_init, .on_reload = h_on_reload, .on_unload = h_on_unload,"),
    }
    .source()
}

fn hooks_top(tag: &str) -> String {
    format!(
        r#"static void say(const hotreload_host_t* host, const char* what, const void* p) {{
    char line[200];
    snprintf(line, sizeof line, "{tag} %s seed=%" PRIu64 " tick=%" PRIu64 " score=%d host_size=%u",
             what, host->seed, host->tick, ((const state_t*)p)->score, host->size);
    host->log(line);
}}
static void h_init(void* p, const hotreload_host_t* host) {{
    ((state_t*)p)->score = 100;
    say(host, "init", p);
}}
static void h_on_reload(void* p, const hotreload_host_t* host) {{ say(host, "on_reload", p); }}
static void h_on_unload(void* p, const hotreload_host_t* host) {{ say(host, "on_unload", p); }}"#
    )
}

#[test]
fn on_unload_of_the_old_version_runs_before_on_reload_of_the_new() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, hooks_plugin("one", &hooks_top("one"))).expect("write v1");
    let mut s = start(dir.path(), support::CC_BUILD, &["--seed", "5"]);
    expect_score(&mut s, "one", 103);
    editor::rename_over(&src, &hooks_plugin("two", &hooks_top("two")));
    let unload = s.expect_prefix("[plugin] one on_unload ");
    let swap = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    // on_reload runs before the state line, which shows what v2 starts from.
    let reload = s.expect_prefix("[plugin] two on_reload ");
    let preserved = s.expect_contains("(preserved; v2, tick ");
    let first = s.expect_contains("tag=two score=");
    // Both hooks see the same state and tick, the one v2 starts from.
    let tick = state_tick(&preserved);
    let score = 100 + tick as i64;
    assert_eq!(
        unload,
        format!("[plugin] one on_unload seed=5 tick={tick} score={score} host_size=48")
    );
    assert_eq!(
        reload,
        format!("[plugin] two on_reload seed=5 tick={tick} score={score} host_size=48")
    );
    assert!(!swap.contains("migrated"), "{swap}");
    assert_eq!(field(&first, "score"), Some(score + 1));
    // The order, by line: v1's on_unload, the swap, v2's on_reload, v2's
    // first tick; no on_reload at the first load, no on_unload of v2.
    let lines = s.lines();
    let at = |l: &String| {
        lines
            .iter()
            .position(|x| x == l)
            .expect("a line seen before")
    };
    assert!(at(&unload) < at(&swap) && at(&swap) < at(&reload) && at(&reload) < at(&first));
    assert_eq!(s.count(|l| l.contains(" on_reload ")), 1);
    assert_eq!(s.count(|l| l.contains(" on_unload ")), 1);
    assert_eq!(s.count(|l| l.contains(" init ")), 1, "init ran once");
    assert_eq!(s.stop(), 0);
}

#[test]
fn init_gets_the_host_context_with_the_seed() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("logic.c"),
        hooks_plugin("one", &hooks_top("one")),
    )
    .expect("write");
    let (code, s) = run(
        dir.path(),
        support::CC_BUILD,
        &["--seed", "18446744073709551557", "--ticks", "3"],
    );
    assert_eq!(code, 0, "{}", s.transcript());
    let lines = s.lines();
    let init = index_of(&s, "init", |l| l.starts_with("[plugin] one init "));
    // The extended init replaced the plain one, got the seed as given (the
    // largest 64-bit prime), and logged through the host, before any tick.
    assert_eq!(
        lines[init],
        "[plugin] one init seed=18446744073709551557 tick=0 score=100 host_size=48"
    );
    let loaded = index_of(&s, "loaded", |l| l.starts_with("[reload] loaded logic.so"));
    // No schema and no debug info: the state by its bytes (100 = 0x64).
    let initial = index_of(&s, "initial", |l| {
        l == "[state] 4 bytes, layout unknown: [64 00 00 00] (initial; v1)"
    });
    let first_tick = index_of(&s, "first tick", |l| l.contains("tag=one score=101"));
    assert!(loaded < init && init < initial && initial < first_tick);
    assert_eq!(s.count(|l| l.contains("tag=one score=")), 3);
}

// ---------------------------------------------------------------------------
// 5. Rollback across a layout change.
// ---------------------------------------------------------------------------

#[test]
fn a_rollback_across_a_layout_change_migrates_the_state_back() {
    let v1 = Plugin {
        fields: "int score;",
        init: "s->score = 0;",
        tick: "s->score += 1; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        ..Plugin::default()
    };
    // v2 adds `lives` before `score` (so score moves) and faults on its
    // third live tick, before changing anything.
    let v2 = Plugin {
        fields: "int lives; int score;",
        top: "static int live_ticks;",
        tick: "if (++live_ticks == 3) { *(volatile int*)0 = 1; }
               s->score += 10; s->lives += 1;
               printf(\"[plugin] tag=two score=%d lives=%d\\n\", s->score, s->lives);",
        ..v1
    };
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), CC_DEBUG, &["--trial-ticks", "0"]);
    expect_score(&mut s, "one", 3);
    editor::rename_over(&src, &v2.source());
    let swap = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    assert!(swap.ends_with("; migrated: +lives)"), "{swap}");
    let migrated = s.expect_prefix("[state] ");
    let tick = state_tick(&migrated);
    let carried = tick as i64;
    assert_eq!(
        migrated,
        format!("[state] lives=0 score={carried} (migrated; v2, tick {tick})")
    );
    s.expect_contains(&format!("tag=two score={} lives=1", carried + 10));
    s.expect_contains(&format!("tag=two score={} lives=2", carried + 20));
    let fault = s.expect_prefix("[fault] ");
    assert_eq!(
        fault,
        format!(
            "[fault] v2 tick {}: SIGSEGV (address not mapped) at 0x0 in p_tick+{}; rolled back to v1, state restored to tick {} and carried back to v1's layout (-lives)",
            tick + 2,
            fault
                .split("p_tick+")
                .nth(1)
                .and_then(|r| r.split(';').next())
                .unwrap_or("?"),
            tick + 2
        )
    );
    // v1 reads score where it keeps it: the two good ticks of v2 count.
    expect_score(&mut s, "one", carried + 21);
    expect_score(&mut s, "one", carried + 22);
    assert_eq!(s.count(|l| l.contains("tag=two")), 2);
    assert_eq!(s.stop(), 14, "the last outcome is the fault");
    let last = s
        .lines()
        .into_iter()
        .find(|l| l.contains("(final; "))
        .expect("a final state line");
    assert!(
        last.starts_with("[state] score=") && last.contains("(final; v1, tick "),
        "{last}"
    );
}

// ---------------------------------------------------------------------------
// 6. Transient fields.
// ---------------------------------------------------------------------------

fn transient_plugin(tag: &str) -> String {
    let tick = format!(
        "s->score += 1; s->cache += 1; printf(\"[plugin] tag={tag} score=%d cache=%d\\n\", s->score, s->cache);"
    );
    Plugin {
        fields: "int score; int cache;",
        init: "s->score = 0; s->cache = 0;",
        tick: &tick,
        top: "static const hotreload_field_t fields[] = {
                  HOTRELOAD_FIELD(state_t, score, HOTRELOAD_I32),
                  HOTRELOAD_TRANSIENT_FIELD(state_t, cache, HOTRELOAD_I32),
              };",
        ext: Some(".fields = fields, .field_count = HOTRELOAD_FIELD_COUNT(fields),"),
    }
    .source()
}

#[test]
fn a_transient_field_is_reset_on_every_reload() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, transient_plugin("one")).expect("write v1");
    let mut s = start(dir.path(), support::CC_BUILD, &[]);
    s.expect_contains("tag=one score=5 cache=5");
    for (n, tag) in [(2, "two"), (3, "three")] {
        editor::rename_over(&src, &transient_plugin(tag));
        s.expect_prefix(&format!("[reload] swapped logic.so (api=1, v{n}"));
        let state = s.expect_prefix("[state] ");
        let tick = state_tick(&state);
        // The score survives; the cache starts over for the new code.
        assert_eq!(
            state,
            format!("[state] score={tick} cache=0 (preserved; v{n}, tick {tick})")
        );
        s.expect_contains(&format!("tag={tag} score={} cache=1", tick + 1));
        s.expect_contains(&format!("tag={tag} score={} cache=2", tick + 2));
    }
    assert_eq!(s.stop(), 0);
}

/// When the new version's `migrate` hook refuses the state, the running
/// version is never told it is going: `on_unload` runs only once a swap is
/// certain.
#[test]
fn a_refused_migration_does_not_unload_the_running_version() {
    let v1 = Plugin {
        fields: "int score;",
        init: "s->score = 10;",
        tick: "s->score += 1; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        top: "static const hotreload_field_t fields[] = {
                  HOTRELOAD_FIELD(state_t, score, HOTRELOAD_I32),
              };
              static void bye(void* p, const hotreload_host_t* host) { (void)p; host->log(\"one on_unload\"); }
              static void hello(void* p, const hotreload_host_t* host) { (void)p; host->log(\"one on_reload\"); }",
        ext: Some(
            ".state_version = 1, .fields = fields, .field_count = HOTRELOAD_FIELD_COUNT(fields), \
             .on_unload = bye, .on_reload = hello,",
        ),
    };
    let top = hook_v2(1);
    let (_, v2) = hook_plugins(&top);
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), support::CC_BUILD, &[]);
    expect_score(&mut s, "one", 13);
    editor::rename_over(&src, &v2);
    let refused =
        s.expect_prefix("[reload] rejected: cannot carry the state over: the migrate hook of v2");
    assert!(refused.ends_with("(keeping v1)"), "{refused}");
    let at = index_of(&s, "the refusal", |l| l == refused);
    let before = last_score_before(&s, "one", at);
    expect_score(&mut s, "one", before + 2);
    let lines = s.lines();
    let unloaded = lines.iter().filter(|l| l.contains("one on_unload")).count();
    let reloaded_after = lines[at..]
        .iter()
        .filter(|l| l.contains("one on_reload"))
        .count();
    assert!(
        unloaded == 0 || reloaded_after == unloaded,
        "v1 was told it is unloaded, and ticks on:\n{}",
        s.transcript()
    );
    s.stop();
}

/// A build that changes the state's size still has its trial: the probe
/// migrates the state first, and a crash on the first tick is refused
/// before the build ever runs in the server.
#[test]
fn a_build_that_changes_the_state_size_still_has_its_trial() {
    let v1 = Plugin {
        fields: "int score;",
        init: "s->score = 0;",
        tick: "s->score += 1; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        ..Plugin::default()
    };
    let v2 = Plugin {
        fields: "int score; int lives;",
        tick: "*(volatile int*)0 = 1; s->score += 1;",
        ..v1
    };
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), CC_DEBUG, &["--reloads", "1"]);
    expect_score(&mut s, "one", 3);
    editor::rename_over(&src, &v2.source());
    let line = s.expect("a rejection or a swap", |l| {
        l.starts_with("[reload] rejected: ") || l.starts_with("[reload] swapped ")
    });
    assert!(
        line.starts_with("[reload] rejected: trial tick 1: SIGSEGV"),
        "{}",
        s.transcript()
    );
    s.wait();
    assert_eq!(
        s.count(|l| l.starts_with("[fault]")),
        0,
        "{}",
        s.transcript()
    );
}

/// A reorder (same size) is tried on the migrated state, not on the bytes as
/// the old version laid them out (where the new code would read a zero
/// `divisor` and fault).
#[test]
fn a_reordered_build_is_tried_on_the_migrated_state() {
    let v1 = Plugin {
        fields: "int divisor; int score;",
        init: "s->divisor = 5; s->score = 0;",
        tick: "volatile int d = s->divisor; (void)(100 / d); printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        ..Plugin::default()
    };
    let v2 = Plugin {
        fields: "int score; int divisor;",
        tick: "volatile int d = s->divisor; s->score += 100 / d; printf(\"[plugin] tag=two score=%d\\n\", s->score);",
        ..v1
    };
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), CC_DEBUG, &["--reloads", "1"]);
    expect_score(&mut s, "one", 0);
    editor::rename_over(&src, &v2.source());
    let line = s.expect("a rejection or a swap", |l| {
        l.starts_with("[reload] rejected: ") || l.starts_with("[reload] swapped ")
    });
    assert!(
        line.starts_with("[reload] swapped logic.so (api=1, v2")
            && line.ends_with("; migrated: reordered score, divisor)"),
        "{}",
        s.transcript()
    );
    assert_eq!(s.exit_code(), 0);
}

/// The extended `init` replaces `logic_api_t.init` in the trial of a first
/// version too, so a plugin that sets up there passes its own trial.
#[test]
fn the_trial_of_a_first_version_runs_its_extended_init() {
    let plugin = Plugin {
        fields: "int divisor; int score;",
        init: "/* the extended init does the work */",
        tick: "volatile int d = s->divisor; s->score += 100 / d; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        top: "static void setup(void* p, const hotreload_host_t* host) { (void)host; ((state_t*)p)->divisor = 5; }",
        ext: Some(".init = setup,"),
    };
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), plugin.source()).expect("write");
    let mut s = start(dir.path(), support::CC_BUILD, &["--ticks", "3"]);
    let line = s.expect("a rejection or a load", |l| {
        l.starts_with("[reload] rejected: ") || l.starts_with("[reload] loaded ")
    });
    assert!(
        line.starts_with("[reload] loaded logic.so (api=1, v1)"),
        "{}",
        s.transcript()
    );
    expect_score(&mut s, "one", 60);
    assert_eq!(s.exit_code(), 0);
}

/// A state restored from the file across a state-version change goes
/// through the new version's migrate hook, as the header promises for any
/// layout or version change.
#[test]
fn restoring_across_a_state_version_change_runs_the_migrate_hook() {
    let top = hook_v2(0);
    let (v1, v2) = hook_plugins(&top);
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1).expect("write v1");
    let args = ["--state-file", "state.bin", "--ticks", "5"];
    let (code, first) = run(dir.path(), support::CC_BUILD, &args);
    assert_eq!(code, 0, "{}", first.transcript());
    std::fs::write(&src, v2).expect("write v2");
    let (code, second) = run(dir.path(), support::CC_BUILD, &args);
    assert_eq!(code, 0, "{}", second.transcript());
    assert_eq!(
        second.count(|l| l.starts_with("[plugin] migrate old_size=4 old_version=1 new_size=8 ")),
        1,
        "{}",
        second.transcript()
    );
    assert_eq!(
        second.count(|l| l.starts_with("[state] score=15 doubled=30 (restored from state.bin")),
        1,
        "{}",
        second.transcript()
    );
}
