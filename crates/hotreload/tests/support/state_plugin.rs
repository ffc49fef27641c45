//! The state tests' plugin and server helpers (`tests/state.rs`,
//! `tests/state_file.rs`): a C plugin around a `state_t` of given fields,
//! and the lines read back.

use std::path::Path;

use super::{Server, field};

/// The build with debug info: the state's layout comes from DWARF.
pub const CC_DEBUG: &str = "cc -g -shared -fPIC -o logic.so logic.c";

/// A C plugin around `state_t { fields }`. `init` and `tick` are C statements
/// on `state_t* s` (`tick` also has `double dt`); `top` is C code placed
/// after the state's type (hooks, a schema, statics); `ext` is the
/// initializer of the extended table after its header, if the plugin has
/// one.
#[derive(Clone, Copy, Default)]
pub struct Plugin<'a> {
    pub fields: &'a str,
    pub init: &'a str,
    pub tick: &'a str,
    pub top: &'a str,
    pub ext: Option<&'a str>,
}

impl Plugin<'_> {
    pub fn source(&self) -> String {
        let ext = match self.ext {
            None => String::new(),
            Some(init) => format!(
                r#"
static logic_api_ext_t ext = {{
    .ext_version = HOTRELOAD_EXT_VERSION,
    .size = sizeof(logic_api_ext_t),
    {init}
}};
HOTRELOAD_EXPORT logic_api_ext_t* logic_get_api_ext(void) {{ return &ext; }}
"#
            ),
        };
        format!(
            r#"#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "hotreload.h"

typedef struct {{
    {fields}
}} state_t;

{top}

static void p_init(void* p) {{
    state_t* s = p;
    {init}
}}

static void p_tick(void* p, double dt) {{
    state_t* s = p;
    (void)dt;
    {tick}
}}

static void p_shutdown(void* p) {{ (void)p; }}

static logic_api_t api = {{
    .api_version = HOTRELOAD_API_VERSION,
    .state_size = sizeof(state_t),
    .init = p_init, .tick = p_tick, .shutdown = p_shutdown,
}};
HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) {{ return &api; }}
{ext}"#,
            fields = self.fields,
            top = self.top,
            init = self.init,
            tick = self.tick,
        )
    }
}

/// A server on `logic.c` in `dir` built with `build`, 10 ms ticks unless
/// `extra` says otherwise.
pub fn start(dir: &Path, build: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--watch", "logic.c", "--build", build];
    if !extra.contains(&"--tick-ms") {
        args.extend_from_slice(&["--tick-ms", "10"]);
    }
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

/// Runs the server to its end (`--ticks`, a bad state file) and returns it.
pub fn run(dir: &Path, build: &str, extra: &[&str]) -> (i32, Server) {
    let mut s = start(dir, build, extra);
    let code = s.exit_code();
    (code, s)
}

/// The tick count in a `(...; vN, tick T)` state line.
pub fn state_tick(line: &str) -> u64 {
    let at = line.rfind(", tick ").expect("a tick in the state line") + ", tick ".len();
    line[at..]
        .trim_end_matches(')')
        .parse()
        .unwrap_or_else(|_| panic!("a tick number in: {line}"))
}

/// A state line with every float value at two decimals, as these tests
/// compute them: the host prints a float in the shortest form that reads
/// back exactly, and a time summed from `dt` carries the sum's rounding
/// (`time=1.0500000000000003`).
pub fn two_places(line: &str) -> String {
    line.split(' ')
        .map(|word| match word.split_once('=') {
            Some((key, value)) if value.contains('.') => match value.parse::<f64>() {
                Ok(v) => format!("{key}={v:.2}"),
                Err(_) => word.to_owned(),
            },
            _ => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits for the plugin line `[plugin] tag=<tag> score=<score>` (alone or
/// followed by more values).
pub fn expect_score(s: &mut Server, tag: &str, score: i64) -> String {
    let needle = format!("[plugin] tag={tag} score={score}");
    s.expect(&needle, |l| {
        l == needle || l.strip_prefix(&needle).is_some_and(|r| r.starts_with(' '))
    })
}

/// The index of the first line satisfying `pred`, for ordering checks.
pub fn index_of(s: &Server, what: &str, pred: impl Fn(&str) -> bool) -> usize {
    s.lines()
        .iter()
        .position(|l| pred(l))
        .unwrap_or_else(|| panic!("no line {what}; output:\n{}", s.transcript()))
}

/// The score the last `tag=<tag> score=` line printed before line `before`.
pub fn last_score_before(s: &Server, tag: &str, before: usize) -> i64 {
    let needle = format!("tag={tag} score=");
    s.lines()[..before]
        .iter()
        .rev()
        .find(|l| l.contains(&needle))
        .and_then(|l| field(l, "score"))
        .unwrap_or_else(|| panic!("no {needle} line before line {before}:\n{}", s.transcript()))
}

/// `{score, time}` counting from 10 and printing `tag=<tag> score=N` each
/// tick; `init` prints `[plugin] init`.
pub fn counter_plugin(tag: &str) -> String {
    let tick = format!(
        "s->score += 1; s->time += dt; printf(\"[plugin] tag={tag} score=%d\\n\", s->score);"
    );
    Plugin {
        fields: "int score; double time;",
        tick: &tick,
        init: "s->score = 10; s->time = 1.0; printf(\"[plugin] init\\n\");",
        ..Plugin::default()
    }
    .source()
}
