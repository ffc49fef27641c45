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

#ifdef __cplusplus
}
#endif

#endif /* HOTRELOAD_H */
