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
    /// C statements run at this version's Nth tick (1 = its first), before
    /// the score changes: for injecting faults.
    pub fault_at: Option<(u32, &'a str)>,
    /// C statements run in `init`, before anything else.
    pub init_code: &'a str,
}

impl<'a> Counter<'a> {
    pub fn new(tag: &'a str, step: i32) -> Counter<'a> {
        Counter {
            tag,
            step,
            state_extra: 0,
            api: 1,
            table: None,
            fault_at: None,
            init_code: "",
        }
    }

    pub fn source(&self) -> String {
        let extra = if self.state_extra > 0 {
            format!("    char extra[{}];\n", self.state_extra)
        } else {
            String::new()
        };
        let fault = match self.fault_at {
            Some((n, code)) => {
                format!("    static int calls;\n    if (++calls == {n}) {{ {code} }}\n")
            }
            None => String::new(),
        };
        let table = self.table.map(str::to_owned).unwrap_or_else(|| {
            ".init = counter_init, .tick = counter_tick, .shutdown = counter_shutdown".to_owned()
        });
        format!(
            r#"#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include "hotreload.h"

/* Recursion that no compiler turns into a loop (for stack overflows). */
#pragma GCC diagnostic ignored "-Winfinite-recursion"
__attribute__((noinline)) int hr_test_recurse(volatile char* up) {{
    volatile char frame[4096];
    frame[0] = up ? up[0] + 1 : 0;
    return hr_test_recurse(frame) + frame[1];
}}

typedef struct {{
    int score;
{extra}}} state_t;

static void counter_init(void* p) {{
    {init_code}
    state_t* s = p;
    s->score = 0;
    printf("[plugin] tag={tag} init\n");
}}

static void counter_tick(void* p, double dt) {{
{fault}    state_t* s = p;
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
            init_code = self.init_code,
        )
    }
}

pub fn counter(tag: &str, step: i32) -> String {
    Counter::new(tag, step).source()
}

/// A plugin whose tag (`[plugin] tag=... score=N`) comes from the header
/// `header` once it exists (`#define TAG "..."`), else is `base`: for
/// edits in folders other than the one holding the plugin's source.
pub fn tagged_by_header(header: &str) -> String {
    format!(
        r#"#include <stdio.h>
#include "hotreload.h"
#if __has_include("{header}")
#include "{header}"
#else
#define TAG "base"
#endif

typedef struct {{ int score; }} state_t;
static void init(void* p) {{ ((state_t*)p)->score = 0; }}
static void tick(void* p, double dt) {{
    state_t* s = p;
    (void)dt;
    s->score += 1;
    printf("[plugin] tag=%s score=%d\n", TAG, s->score);
}}
static void shutdown(void* p) {{ (void)p; }}
static logic_api_t api = {{ 1, sizeof(state_t), init, tick, shutdown }};
HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) {{ return &api; }}
"#
    )
}
