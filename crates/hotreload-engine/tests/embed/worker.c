/* The plugin the embedding tests load: a host table of its own (see
 * tests/embed.rs), built with -DLIB=n so that each build answers with a
 * value derived from which build it is. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#ifndef LIB
#define LIB 1
#endif
#ifndef TABLE_VERSION
#define TABLE_VERSION 1
#endif

typedef struct {
    uint32_t version;
    uint32_t size;
    uint64_t (*first)(uint64_t x);
    uint64_t (*second)(uint64_t x);
    int (*block)(int fd);
    int (*spin)(void);
    int (*start_thread)(int fd);
    int (*crash)(void);
} test_api_t;

static uint64_t first(uint64_t x) { return (uint64_t)LIB * 1000000u + x; }

/* A little work, so that a reload can land between the two calls. */
static uint64_t second(uint64_t x) {
    volatile uint64_t v = LIB;
    for (int i = 0; i < 200; i++) {
        v = v + 0;
    }
    return v * 1000000u + x + 1;
}

static int block(int fd) {
    char c;
    return (int)read(fd, &c, 1);
}

static int spin(void) {
    for (;;) {
        __asm__ volatile("");
    }
    return 0;
}

static void* waiter(void* p) {
    char c;
    (void)!read((int)(intptr_t)p, &c, 1);
    return NULL;
}

static int start_thread(int fd) {
    pthread_t t;
    if (pthread_create(&t, NULL, waiter, (void*)(intptr_t)fd) != 0) {
        return -1;
    }
    pthread_detach(t);
    return 0;
}

static int crash(void) { return *(volatile int*)(uintptr_t)8; }

static const test_api_t api = {
    TABLE_VERSION, sizeof api, first, second, block, spin, start_thread, crash,
};

__attribute__((visibility("default"))) const test_api_t* test_get_api(void) { return &api; }
