/*
 * hotreload.h: the ABI between the hotreload host and a plugin library.
 *
 * A plugin is a shared library that exports `logic_get_api`. The host calls it
 * after every load, checks the table it returns, and from then on calls the
 * table's functions from a single thread, between which it may swap in a new
 * build of the library.
 *
 * The host owns the state: `state_size` bytes, zeroed and aligned to at least
 * 64 bytes, allocated at the first load and kept across every reload. Keep all
 * data that must survive a reload in that block. Static and global variables
 * live in the library and are reset when a new build is swapped in; pointers
 * into the library (string literals, functions, static arrays) dangle once the
 * old build is unloaded.
 */
#ifndef HOTRELOAD_H
#define HOTRELOAD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this table. A plugin reporting another value is rejected. */
#define HOTRELOAD_API_VERSION 1

typedef struct {
    int api_version;                      /* must equal HOTRELOAD_API_VERSION */
    size_t state_size;                    /* bytes of state the plugin expects */
    void (*init)(void* state);            /* once, on the first load only */
    void (*tick)(void* state, double dt); /* every tick; dt in seconds */
    void (*shutdown)(void* state);        /* once, when the host stops */
} logic_api_t;

/* Exported by every plugin. Returns a table that stays valid while the library
 * is loaded (a static one is the usual choice). */
logic_api_t* logic_get_api(void);

/* Export a function from the plugin even when it is built with
 * -fvisibility=hidden. */
#if defined(__GNUC__)
#define HOTRELOAD_EXPORT __attribute__((visibility("default")))
#else
#define HOTRELOAD_EXPORT
#endif

/* ------------------------------------------------------------------------
 * The extended ABI (optional). A plugin that also exports logic_get_api_ext
 * can declare its state's fields and a state version, and get hooks and a
 * host context. Everything here is optional; plugins without it work as
 * above. The table carries its own size, so later versions of this header
 * can add members at the end and older hosts read only what they know.
 * ------------------------------------------------------------------------ */

#define HOTRELOAD_EXT_VERSION 1

/* Field types for a schema. The low byte is the size in bytes. */
enum {
    HOTRELOAD_I8 = 0x101,
    HOTRELOAD_I16 = 0x102,
    HOTRELOAD_I32 = 0x104,
    HOTRELOAD_I64 = 0x108,
    HOTRELOAD_U8 = 0x201,
    HOTRELOAD_U16 = 0x202,
    HOTRELOAD_U32 = 0x204,
    HOTRELOAD_U64 = 0x208,
    HOTRELOAD_F32 = 0x304,
    HOTRELOAD_F64 = 0x308,
    HOTRELOAD_BOOL = 0x401,
    HOTRELOAD_PTR = 0x508,
    HOTRELOAD_CHAR = 0x601 /* a char: a number, but its arrays are shown as text */
};

/* Field flags. A transient field is reset to zero on every reload (caches,
 * handles, anything the new code rebuilds in on_reload). */
#define HOTRELOAD_TRANSIENT 1u

/* A two-dimensional array (`int grid[H][W]`) keeps its row length W in the
 * flags from this bit up, so that a migration copies it row by row (a host
 * that predates this reads only HOTRELOAD_TRANSIENT and sees H*W values). */
#define HOTRELOAD_ROW_SHIFT 8
#define HOTRELOAD_ROW_FLAGS(state_type, member, field_type)                              \
    ((uint32_t)(sizeof(((state_type*)0)->member[0]) / ((size_t)(field_type)&0xff))     \
     << HOTRELOAD_ROW_SHIFT)

typedef struct {
    const char* name; /* a string literal: copied by the host at load */
    uint32_t type;    /* HOTRELOAD_I32, ... */
    uint32_t flags;   /* HOTRELOAD_TRANSIENT, a row length (HOTRELOAD_ROW_FLAGS), or 0 */
    size_t offset;    /* offsetof(state_t, member) */
    size_t count;     /* elements; 1 for a plain scalar */
} hotreload_field_t;

/* One schema entry per field, e.g.
 *   static const hotreload_field_t fields[] = {
 *       HOTRELOAD_FIELD(state_t, score, HOTRELOAD_I32),
 *       HOTRELOAD_FIELD(state_t, pos, HOTRELOAD_F32),        (float pos[2])
 *       HOTRELOAD_FIELD_2D(state_t, grid, HOTRELOAD_U8),     (uint8_t grid[H][W])
 *       HOTRELOAD_FIELD(state_t, name, HOTRELOAD_CHAR),      (char name[16])
 *       HOTRELOAD_TRANSIENT_FIELD(state_t, cache, HOTRELOAD_U8),
 *   };
 * The element count comes from the member's size, the row length of a
 * two-dimensional array from its first row's. */
#define HOTRELOAD_FIELD_WITH(state_type, member, field_type, field_flags)                   \
    {#member, (uint32_t)(field_type), (field_flags), offsetof(state_type, member),          \
     sizeof(((state_type*)0)->member) / ((size_t)(field_type)&0xff)}
#define HOTRELOAD_FIELD(state_type, member, field_type) \
    HOTRELOAD_FIELD_WITH(state_type, member, field_type, 0u)
#define HOTRELOAD_TRANSIENT_FIELD(state_type, member, field_type) \
    HOTRELOAD_FIELD_WITH(state_type, member, field_type, HOTRELOAD_TRANSIENT)
#define HOTRELOAD_FIELD_2D(state_type, member, field_type) \
    HOTRELOAD_FIELD_WITH(state_type, member, field_type,   \
                         HOTRELOAD_ROW_FLAGS(state_type, member, field_type))
#define HOTRELOAD_FIELD_COUNT(fields) ((uint32_t)(sizeof(fields) / sizeof((fields)[0])))

/* What the host tells plugin code, in init and the hooks. */
typedef struct hotreload_host {
    uint32_t size;     /* sizeof(hotreload_host_t) as the host knows it */
    uint32_t reserved;
    uint64_t seed;     /* hotreload --seed N: the same seed, the same run */
    uint64_t tick;     /* ticks completed so far */
    void (*log)(const char* message); /* prints "[plugin] message" in order with the host's lines */
    /* The input the host passed for this tick (an embedding host's per-tick
     * input, or `hotreload ctl input`): at most HOTRELOAD_MAX_INPUT bytes,
     * valid for the call. Set only in the extended table's tick; NULL with
     * input_len 0 in init, the hooks and a tick without input. The history
     * records it, so rewind, replay and loop feed each tick the same bytes.
     * A host older than this field passes a smaller `size`: check
     * size >= offsetof(hotreload_host_t, input_len) + sizeof(size_t). */
    const void* input;
    size_t input_len;
} hotreload_host_t;

#define HOTRELOAD_MAX_INPUT 2048

typedef struct {
    uint32_t ext_version;   /* HOTRELOAD_EXT_VERSION */
    uint32_t size;          /* sizeof(logic_api_ext_t) */
    uint32_t state_version; /* change it when the state's meaning changes */
    uint32_t field_count;
    const hotreload_field_t* fields; /* the schema, or NULL to use debug info */
    /* Every hook may be NULL. */
    /* Replaces logic_api_t.init when set: the first load only. */
    void (*init)(void* state, const hotreload_host_t* host);
    /* After every swap to this version (rebuild transient data). */
    void (*on_reload)(void* state, const hotreload_host_t* host);
    /* Before this version is swapped out. */
    void (*on_unload)(void* state, const hotreload_host_t* host);
    /* When the state's layout or version changed: called after the host has
     * copied the fields both versions share (by name) and zeroed the new
     * ones. Return 0 to accept, anything else to refuse the new version. */
    int (*migrate)(const void* old_state, size_t old_size, uint32_t old_version,
                   void* new_state, size_t new_size);
    /* Writes a one-line description of the state (NUL-terminated) into buf;
     * returns its length. Shown in [state] lines instead of the fields. */
    size_t (*describe)(const void* state, char* buf, size_t len);
    /* Replaces logic_api_t.tick when set: every tick, with the host context
     * (the tick's index, the seed, and the input the host passed for it).
     * Everything that makes a tick differ should come from the state, dt and
     * this context: then replay and loop run it the same way again. */
    void (*tick)(void* state, double dt, const hotreload_host_t* host);
} logic_api_ext_t;

/* Optional. Returns a table that stays valid while the library is loaded. */
logic_api_ext_t* logic_get_api_ext(void);

/* ------------------------------------------------------------------------
 * Libraries built with the Rust `hotreload-plugin` crate also export one data
 * symbol, `hotreload_plugin`, of this type (C plugins need not). The host
 * refuses a library whose plugin_abi is not the one it speaks, and one whose
 * layout_hash differs from the hash of the schema logic_api_ext_t hands over
 * (FNV-1a 64 over each field's name bytes, a 0 byte, type and flags as
 * little-endian uint32, offset and count as little-endian uint64, in table
 * order; then state_size and state_align as little-endian uint64).
 * A panic in plugin code is recorded here (panicked = 1, the lengths, the
 * texts: UTF-8, not NUL-terminated) just before the plugin aborts; the host
 * puts it into the [fault] line of the SIGABRT that follows.
 * size and plugin_abi stay first in every later version.
 * ------------------------------------------------------------------------ */

#define HOTRELOAD_PLUGIN_ABI 1
#define HOTRELOAD_PANIC_LOCATION_MAX 256
#define HOTRELOAD_PANIC_MESSAGE_MAX 1024

typedef struct {
    uint32_t size;         /* sizeof(hotreload_plugin_t) */
    uint32_t plugin_abi;   /* HOTRELOAD_PLUGIN_ABI of the crate that built it */
    uint64_t layout_hash;  /* of the state type, as above */
    uint64_t state_size;
    uint64_t state_align;
    uint32_t panicked;     /* 1 once a panic is recorded */
    uint32_t location_len;
    uint32_t message_len;
    uint32_t reserved;
    char location[HOTRELOAD_PANIC_LOCATION_MAX]; /* "src/lib.rs:12:9" */
    char message[HOTRELOAD_PANIC_MESSAGE_MAX];
} hotreload_plugin_t;

#ifdef __cplusplus
}
#endif

#endif /* HOTRELOAD_H */
