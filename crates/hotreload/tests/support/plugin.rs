//! Plugin sources for tests: seed-ABI counters whose every line says which
//! build of the code printed it.

/// A counter plugin. Each tick adds `step` to `score` and prints
/// `[plugin] tag=<tag> score=<score>`; `init` and `shutdown` print too.
/// `state_extra` adds bytes to `state_t`; `api` overrides `api_version`.
pub struct Counter<'a> {
    pub tag: &'a str,
    pub step: i32,
    pub state_extra: usize,
    pub api: i32,
    /// Replaces the function table's initializer (to leave pointers NULL).
    pub table: Option<&'a str>,
}

impl<'a> Counter<'a> {
    pub fn new(tag: &'a str, step: i32) -> Counter<'a> {
        Counter {
            tag,
            step,
            state_extra: 0,
            api: 1,
            table: None,
        }
    }

    pub fn source(&self) -> String {
        let extra = if self.state_extra > 0 {
            format!("    char extra[{}];\n", self.state_extra)
        } else {
            String::new()
        };
        let table = self.table.map(str::to_owned).unwrap_or_else(|| {
            ".init = counter_init, .tick = counter_tick, .shutdown = counter_shutdown".to_owned()
        });
        format!(
            r#"#include <stdio.h>
#include "hotreload.h"

typedef struct {{
    int score;
{extra}}} state_t;

static void counter_init(void* p) {{
    state_t* s = p;
    s->score = 0;
    printf("[plugin] tag={tag} init\n");
}}

static void counter_tick(void* p, double dt) {{
    state_t* s = p;
    s->score += {step};
    printf("[plugin] tag={tag} score=%d dt=%.6f\n", s->score, dt);
}}

static void counter_shutdown(void* p) {{
    state_t* s = p;
    printf("[plugin] tag={tag} shutdown score=%d\n", s->score);
}}

static logic_api_t api = {{
    .api_version = {api},
    .state_size = sizeof(state_t),
    {table}
}};

HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) {{ return &api; }}
"#,
            tag = self.tag,
            step = self.step,
            api = self.api,
        )
    }
}

pub fn counter(tag: &str, step: i32) -> String {
    Counter::new(tag, step).source()
}
