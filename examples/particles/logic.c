/* The particles plugin: 16 particles bouncing around a 10 x 10 box.
 *
 * The walls are rough: each bounce nudges the particle along the wall by a
 * random amount. The random numbers come from a small generator (splitmix64)
 * whose state lives in `state_t`, seeded from `hotreload --seed N`, so the
 * same seed gives the same run, byte for byte, however often the code is
 * reloaded on the way.
 *
 * It uses the extended ABI: a schema (so the host can carry the state over
 * when a field is added), an on_reload hook, and a one-line description of
 * the state for the [state] lines. Try adding a field while it runs, e.g.
 * `float gravity;` in state_t, a HOTRELOAD_FIELD line for it, `ay =
 * s->gravity;` in particles_tick and `s->gravity = -9.8f;` in
 * particles_on_reload: the reload line says `migrated: +gravity` and the
 * particles carry on from where they were, now falling. */
#include <stdint.h>
#include <stdio.h>

#include "hotreload.h" /* a link to include/hotreload.h */

#define N 16           /* particles */
#define BOX 10.0       /* the walls are at 0 and BOX, on both axes */
#define MAX_SPEED 3.0  /* starting velocities are within +-MAX_SPEED */
#define ROUGHNESS 0.25 /* a bounce nudges the velocity along the wall by up to +-this */

/* Everything that must survive a reload. Arrays rather than an array of
 * structs: a schema describes scalars and arrays of scalars. */
typedef struct {
    uint64_t rng;     /* splitmix64 state: seeded from --seed, advanced by every draw */
    uint64_t ticks;   /* ticks simulated */
    uint32_t bounces; /* wall bounces so far */
    double x[N], y[N];
    double vx[N], vy[N];
} state_t;

/* splitmix64: any seed (0 too) is a good one. */
static uint64_t next_u64(uint64_t* rng) {
    uint64_t z = (*rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static double uniform(uint64_t* rng, double lo, double hi) {
    return lo + (hi - lo) * ((double)(next_u64(rng) >> 11) / 9007199254740992.0);
}

static void start(state_t* s, uint64_t seed) {
    s->rng = seed;
    s->ticks = 0;
    s->bounces = 0;
    for (int i = 0; i < N; i++) {
        s->x[i] = uniform(&s->rng, 0.0, BOX);
        s->y[i] = uniform(&s->rng, 0.0, BOX);
        s->vx[i] = uniform(&s->rng, -MAX_SPEED, MAX_SPEED);
        s->vy[i] = uniform(&s->rng, -MAX_SPEED, MAX_SPEED);
    }
}

/* The plain ABI's init (used only where there is no host context, e.g. a
 * host without the extended ABI): seed 0. */
static void particles_init(void* state) { start(state, 0); }

/* The extended init, at the first load: seeded from --seed. */
static void particles_init_ext(void* state, const hotreload_host_t* host) {
    start(state, host->seed);
    char line[96];
    snprintf(line, sizeof line, "seed %llu: %d particles in a %.0fx%.0f box",
             (unsigned long long)host->seed, N, BOX, BOX);
    host->log(line);
}

/* Keeps a coordinate inside [0, BOX] by reflecting it off the wall it
 * crossed; on a bounce, reverses the velocity across the wall and nudges the
 * one along it. */
static void bounce(state_t* s, double* p, double* across, double* along) {
    if (*p < 0.0) {
        *p = -*p;
    } else if (*p > BOX) {
        *p = 2.0 * BOX - *p;
    } else {
        return;
    }
    if (*p < 0.0) *p = 0.0; /* only if it moved more than a box in one tick */
    if (*p > BOX) *p = BOX;
    *across = -*across;
    *along += uniform(&s->rng, -ROUGHNESS, ROUGHNESS);
    s->bounces++;
}

static void particles_tick(void* state, double dt) {
    state_t* s = state;
    double ax = 0.0, ay = 0.0; /* no forces yet */
    for (int i = 0; i < N; i++) {
        s->vx[i] += ax * dt;
        s->vy[i] += ay * dt;
        s->x[i] += s->vx[i] * dt;
        s->y[i] += s->vy[i] * dt;
        bounce(s, &s->x[i], &s->vx[i], &s->vy[i]);
        bounce(s, &s->y[i], &s->vy[i], &s->vx[i]);
    }
    s->ticks++;
}

static void particles_shutdown(void* state) {
    state_t* s = state;
    printf("[particles] stopped after %llu ticks and %u wall bounces\n",
           (unsigned long long)s->ticks, s->bounces);
}

/* After every swap to a new build: the state is already there. */
static void particles_on_reload(void* state, const hotreload_host_t* host) {
    state_t* s = state;
    char line[96];
    snprintf(line, sizeof line, "new code from tick %llu on, %u wall bounces so far",
             (unsigned long long)host->tick, s->bounces);
    host->log(line);
}

/* Kinetic energy, each particle of mass 1. */
static double energy(const state_t* s) {
    double e = 0.0;
    for (int i = 0; i < N; i++) e += 0.5 * (s->vx[i] * s->vx[i] + s->vy[i] * s->vy[i]);
    return e;
}

/* FNV-1a over the whole state: equal runs have equal hashes. */
static uint32_t hash(const state_t* s) {
    const unsigned char* p = (const unsigned char*)s;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < sizeof *s; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static size_t particles_describe(const void* state, char* buf, size_t len) {
    const state_t* s = state;
    int n = snprintf(buf, len, "t=%llu particles=%d energy=%.2f first=(%.1f,%.1f) hash=%08x",
                     (unsigned long long)s->ticks, N, energy(s), s->x[0], s->y[0], hash(s));
    if (n < 0) return 0;
    return (size_t)n < len ? (size_t)n : len - 1;
}

static logic_api_t api = {
    .api_version = HOTRELOAD_API_VERSION,
    .state_size = sizeof(state_t),
    .init = particles_init,
    .tick = particles_tick,
    .shutdown = particles_shutdown,
};

HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) { return &api; }

/* The state's fields, one line each; an array's count comes from its size. */
static const hotreload_field_t fields[] = {
    HOTRELOAD_FIELD(state_t, rng, HOTRELOAD_U64),
    HOTRELOAD_FIELD(state_t, ticks, HOTRELOAD_U64),
    HOTRELOAD_FIELD(state_t, bounces, HOTRELOAD_U32),
    HOTRELOAD_FIELD(state_t, x, HOTRELOAD_F64),
    HOTRELOAD_FIELD(state_t, y, HOTRELOAD_F64),
    HOTRELOAD_FIELD(state_t, vx, HOTRELOAD_F64),
    HOTRELOAD_FIELD(state_t, vy, HOTRELOAD_F64),
};

static logic_api_ext_t api_ext = {
    .ext_version = HOTRELOAD_EXT_VERSION,
    .size = sizeof(logic_api_ext_t),
    .state_version = 1,
    .field_count = HOTRELOAD_FIELD_COUNT(fields),
    .fields = fields,
    .init = particles_init_ext,
    .on_reload = particles_on_reload,
    .describe = particles_describe,
};

HOTRELOAD_EXPORT logic_api_ext_t* logic_get_api_ext(void) { return &api_ext; }
