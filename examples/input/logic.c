/*
 * A plugin that reads the input its host passes each tick: `hotreload ctl
 * input TEXT` from a terminal, or an embedding host's own per-tick bytes.
 *
 *   hotreload --watch logic.c --build "cc -g -shared -fPIC -o logic.so logic.c" \
 *             --tick-ms 100 --state-every 10
 *   hotreload ctl input jump      # in another terminal
 *
 * Every byte of every tick's input adds to `total` (times WEIGHT: build with
 * -DWEIGHT=2 for a version that reads the input differently, and `ctl
 * replay` names the first tick that had input, in `total`). `mix` folds in
 * the tick's index and the seed, so a replay that got either wrong differs
 * from the first tick.
 */
#include <stddef.h>
#include <string.h>

#include "hotreload.h" /* a link to include/hotreload.h */

#ifndef WEIGHT
#define WEIGHT 1
#endif

typedef struct {
    unsigned total;         /* the sum of every input byte, times WEIGHT */
    unsigned with_input;    /* ticks that were passed input */
    unsigned long long mix; /* the ticks' indices and the seed, folded */
    unsigned char last[8];  /* the start of the latest input */
} state_t;

static void init(void* s) { (void)s; }

/* The basic table's tick: the host calls the extended one instead. */
static void basic_tick(void* s, double dt) {
    (void)s;
    (void)dt;
}

static void tick(void* p, double dt, const hotreload_host_t* host) {
    (void)dt;
    state_t* s = p;
    const unsigned char* in = host->input;
    for (size_t i = 0; i < host->input_len; i++) s->total += WEIGHT * in[i];
    if (host->input_len > 0) {
        s->with_input += 1;
        memset(s->last, 0, sizeof s->last);
        memcpy(s->last, in, host->input_len < sizeof s->last ? host->input_len : sizeof s->last);
    }
    s->mix = s->mix * 31 + host->tick + host->seed;
}

static void shutdown(void* s) { (void)s; }

static logic_api_t api = {HOTRELOAD_API_VERSION, sizeof(state_t), init, basic_tick, shutdown};

static logic_api_ext_t ext = {
    .ext_version = HOTRELOAD_EXT_VERSION,
    .size = sizeof(logic_api_ext_t),
    .state_version = 1,
    .tick = tick,
};

HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) { return &api; }
HOTRELOAD_EXPORT logic_api_ext_t* logic_get_api_ext(void) { return &ext; }
