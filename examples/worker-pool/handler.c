/* The plugin of the worker-pool example: answers one request line.
 *
 *   cc -shared -fPIC -o libhandler.so handler.c
 *
 * Edit GREETING (or build with -DGREETING='"..."'), rebuild, and type
 * `reload` into the host: requests already being answered finish with the
 * old code, the next ones get the new. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef GREETING
#define GREETING "hello"
#endif

typedef struct {
    uint32_t version; /* WORKER_API_VERSION */
    uint32_t size;    /* sizeof(worker_api_t) */
    /* Writes the answer to `request` (len bytes, no newline) into
     * response (cap bytes); returns its length, or -1. */
    long (*handle)(const char* request, size_t len, char* response, size_t cap);
} worker_api_t;

#define WORKER_API_VERSION 1

static long handle(const char* request, size_t len, char* response, size_t cap) {
    int n = snprintf(response, cap, "%s %.*s", GREETING, (int)len, request);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

static const worker_api_t api = {WORKER_API_VERSION, sizeof api, handle};

__attribute__((visibility("default"))) const worker_api_t* worker_get_api(void) { return &api; }
