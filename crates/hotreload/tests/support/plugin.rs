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

/// A plugin with the extended table: every tick adds 1 to `score` and
/// prints `[plugin] tag=<tag> score=<score>`; each hook runs the C
/// statements given for it (`on_reload` gets `h`, the host context;
/// `migrate` gets `old` and `new_state`, and a `migrate` of `None` leaves the
/// hook out); `describe` writes `<tag> says <score>`.
pub struct Extended<'a> {
    pub tag: &'a str,
    pub state_version: u32,
    pub on_reload: &'a str,
    pub on_unload: &'a str,
    /// Runs before `describe` writes its text.
    pub describe: &'a str,
    pub migrate: Option<&'a str>,
}

impl<'a> Extended<'a> {
    pub fn new(tag: &'a str) -> Extended<'a> {
        Extended {
            tag,
            state_version: 0,
            on_reload: "",
            on_unload: "",
            describe: "",
            migrate: None,
        }
    }

    pub fn source(&self) -> String {
        let (migrate_fn, migrate_entry) = match self.migrate {
            Some(body) => (
                format!(
                    "static int migrate(const void* old, size_t old_size, uint32_t old_version, \
                     void* new_state, size_t new_size) {{\n    (void)old_size; (void)new_size; \
                     (void)old_version;\n    {body}\n    return 0;\n}}\n"
                ),
                ", .migrate = migrate",
            ),
            None => (String::new(), ""),
        };
        format!(
            r#"#include <stdio.h>
#include <string.h>
#include "hotreload.h"
typedef struct {{ int score; }} state_t;
static void init(void* p) {{ ((state_t*)p)->score = 0; }}
static void tick(void* p, double dt) {{
    state_t* s = p;
    s->score += 1;
    printf("[plugin] tag={tag} score=%d\n", s->score);
    (void)dt;
}}
static void shutdown(void* p) {{ (void)p; }}
static void on_reload(void* p, const hotreload_host_t* h) {{ (void)p; (void)h; {on_reload} }}
static void on_unload(void* p, const hotreload_host_t* h) {{ (void)p; (void)h; {on_unload} }}
{migrate_fn}static size_t describe(const void* p, char* buf, size_t len) {{
    {describe}
    return (size_t)snprintf(buf, len, "{tag} says %d", ((const state_t*)p)->score);
}}
static logic_api_t api = {{ .api_version = 1, .state_size = sizeof(state_t),
    .init = init, .tick = tick, .shutdown = shutdown }};
static logic_api_ext_t ext = {{ .ext_version = HOTRELOAD_EXT_VERSION,
    .size = sizeof(logic_api_ext_t), .state_version = {version}, .on_reload = on_reload,
    .on_unload = on_unload, .describe = describe{migrate_entry} }};
HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) {{ return &api; }}
HOTRELOAD_EXPORT logic_api_ext_t* logic_get_api_ext(void) {{ return &ext; }}
"#,
            tag = self.tag,
            version = self.state_version,
            on_reload = self.on_reload,
            on_unload = self.on_unload,
            describe = self.describe,
        )
    }
}
