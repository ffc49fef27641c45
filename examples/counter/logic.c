/* The counter plugin: the score goes up by one every tick.
 *
 * Edit the increment while `hotreload` runs and the score carries on from
 * where it was with the new code. All state lives in `state_t`, which the host
 * owns; nothing here is static, so nothing is lost on a reload.
 *
 * The second half is optional (the extended ABI): it declares the state's
 * fields, so the host can show `[state] score=10` and carry the state over
 * when you add a field (try adding `int lives;` to state_t and to `fields`). */
#include <stdio.h>

#include "hotreload.h" /* a link to include/hotreload.h */

typedef struct {
    int score;
} state_t;

static void counter_init(void* state) {
    state_t* s = state;
    s->score = 0;
}

static void counter_tick(void* state, double dt) {
    (void)dt;
    state_t* s = state;
    int before = s->score;
    s->score += 1;
    /* Say so each time the score passes a multiple of ten, whatever the step. */
    if (s->score / 10 != before / 10) {
        printf("[counter] score=%d\n", s->score);
    }
}

static void counter_shutdown(void* state) {
    state_t* s = state;
    printf("[counter] final score=%d\n", s->score);
}

static logic_api_t api = {
    .api_version = HOTRELOAD_API_VERSION,
    .state_size = sizeof(state_t),
    .init = counter_init,
    .tick = counter_tick,
    .shutdown = counter_shutdown,
};

HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) { return &api; }

/* The state's fields, one line each. */
static const hotreload_field_t fields[] = {
    HOTRELOAD_FIELD(state_t, score, HOTRELOAD_I32),
};

static logic_api_ext_t api_ext = {
    .ext_version = HOTRELOAD_EXT_VERSION,
    .size = sizeof(logic_api_ext_t),
    .state_version = 1,
    .field_count = HOTRELOAD_FIELD_COUNT(fields),
    .fields = fields,
};

HOTRELOAD_EXPORT logic_api_ext_t* logic_get_api_ext(void) { return &api_ext; }
