//! `get`, `set`, `undo` and `state --json` on a real plugin whose state has
//! nested structs, arrays of structs, arrays of scalars, a string, an enum
//! and a bool, its layout read from the debug info of a real `cc -g` build.
//! Every write is checked against that layout and seen by the next tick.

mod support;

use support::ctl::ctl;
use support::{Server, workdir};

const NESTED: &str = r#"#include <stdbool.h>
#include <stdio.h>
#include "hotreload.h"
typedef struct { float x, y; } vec2;
typedef struct { int hp; vec2 pos; } enemy;
typedef enum { IDLE, RUNNING, DEAD } mode_e;
typedef struct {
    int score;
    vec2 pos;
    enemy enemies[3];
    unsigned char flags[4];
    char name[8];
    mode_e mode;
    bool alive;
} state_t;
static void init(void* p) { state_t* s = p; s->score = 0; s->enemies[2].hp = 50; }
static void tick(void* p, double dt) {
    state_t* s = p;
    (void)dt;
    s->score += 1;
    s->enemies[2].hp -= 1;
    printf("[plugin] score=%d hp2=%d x=%.2f flag1=%d name=%s mode=%d alive=%d\n",
           s->score, s->enemies[2].hp, s->pos.x, s->flags[1], s->name, (int)s->mode, (int)s->alive);
}
static void shutdown(void* p) { (void)p; }
static logic_api_t api = { .api_version = 1, .state_size = sizeof(state_t),
                           .init = init, .tick = tick, .shutdown = shutdown };
HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) { return &api; }
"#;

fn ok(dir: &std::path::Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = ctl(dir, args);
    assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
    stdout
}

#[test]
fn set_writes_nested_fields_and_array_elements_refuses_what_does_not_fit_and_undoes() {
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), NESTED).expect("write");
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            "cc -g -shared -fPIC -o logic.so logic.c",
            "--tick-ms",
            "10",
        ],
    );
    s.expect_contains("[plugin] score=2 ");
    ok(dir.path(), &["pause"]);
    s.expect_prefix("[tick] paused after tick ");

    for (path, value) in [
        ("pos.x", "2.5"),
        ("enemies[2].hp", "1"),
        ("flags[1]", "7"),
        ("name", "bob"),
        ("mode", "RUNNING"),
        ("alive", "true"),
    ] {
        let out = ok(dir.path(), &["set", path, value]);
        assert!(out.starts_with(&format!("{path}: ")), "{out}");
        s.expect_prefix(&format!("[state] set {path}: "));
    }
    assert_eq!(
        ok(dir.path(), &["get", "enemies[2].hp"]).trim(),
        "enemies[2].hp = 1"
    );
    assert_eq!(ok(dir.path(), &["get", "mode"]).trim(), "mode = RUNNING");

    // Every field, whole, by the paths `get` and `set` take.
    let text = ok(dir.path(), &["state"]);
    assert!(text.starts_with("state of v1 after tick "), "{text}");
    for line in [
        "  enemies[2].hp = 1",
        "  pos.x = 2.5",
        "  name = \"bob\"",
        "  flags = [0,7,0,0]",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in {text}");
    }
    // The values as JSON, by the same paths.
    let state = ok(dir.path(), &["state", "--json"]);
    let v: serde_json::Value = serde_json::from_str(state.trim()).expect("JSON");
    let values = &v["result"]["values"];
    assert_eq!(values["pos.x"], 2.5, "{state}");
    assert_eq!(values["enemies[2].hp"], 1, "{state}");
    assert_eq!(values["flags"], serde_json::json!([0, 7, 0, 0]), "{state}");
    assert_eq!(values["name"], "bob", "{state}");
    assert_eq!(values["mode"], "RUNNING", "{state}");
    assert_eq!(values["alive"], true, "{state}");
    assert!(
        v["result"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("[state] "))
    );

    // The next tick runs on what was set.
    ok(dir.path(), &["step", "1"]);
    let line = s.expect_contains("[plugin] score=");
    assert!(
        line.contains("hp2=0 x=2.50 flag1=7 name=bob mode=1 alive=1"),
        "{line}"
    );

    for (args, says) in [
        (
            &["set", "enemies[3].hp", "1"][..],
            "an index of enemies below 3 (it has 3 elements), found 3",
        ),
        (
            &["set", "enemies[1]", "1"][..],
            "to be a struct: name one of its fields, e.g. enemies[1].hp",
        ),
        (
            &["set", "enemies[1].hp", "1.5"][..],
            "expected an integer for enemies[1].hp (int32)",
        ),
        (
            &["set", "flags[1]", "300"][..],
            "expected 0 to 255 for flags[1] (uint8), found 300",
        ),
        (&["set", "flags[4]", "1"][..], "below 4, found 4"),
        (&["set", "flags", "1"][..], "name an element, e.g. flags[0]"),
        (
            &["set", "name", "too long a name"][..],
            "expected at most 7 bytes for name",
        ),
        (
            &["set", "mode", "FLYING"][..],
            "expected a number or one of IDLE, RUNNING, DEAD for mode",
        ),
        (
            &["set", "alive", "maybe"][..],
            "expected true, false, 1 or 0 for alive (bool)",
        ),
        (&["set", "pos.z", "1"][..], "found no \"pos.z\""),
        (
            &["set", "pos.x", "1e39"][..],
            "in magnitude for pos.x (float)",
        ),
    ] {
        let (code, _, stderr) = ctl(dir.path(), args);
        assert_eq!(code, 8, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    // Undo takes the writes back, newest first.
    let out = ok(dir.path(), &["undo"]);
    assert!(
        out.starts_with("undid the set of alive: true -> false"),
        "{out}"
    );
    let out = ok(dir.path(), &["undo"]);
    assert!(
        out.starts_with("undid the set of mode: RUNNING -> IDLE"),
        "{out}"
    );
    s.expect_prefix("[state] undid the set of mode: RUNNING -> IDLE");
    assert_eq!(s.stop(), 0);
}
