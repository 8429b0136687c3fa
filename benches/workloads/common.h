/* Shared helpers for the workload programs: a deterministic RNG, a checksum mix, RSS from
 * /proc/self/statm, argument parsing and a fatal-error path. Header-only; every workload is one
 * .c file built with `cc -O2 -pthread file.c` and uses nothing but plain malloc/free/realloc, so
 * any allocator can be preloaded under it. */
#ifndef TALLY_WORKLOAD_COMMON_H
#define TALLY_WORKLOAD_COMMON_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* xorshift64*: small, fast, deterministic for a given seed. */
typedef struct {
    uint64_t s;
} rng_t;

static inline void rng_seed(rng_t *r, uint64_t seed) {
    r->s = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    if (r->s == 0)
        r->s = 1;
}

static inline uint64_t rng_next(rng_t *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [lo, hi], both inclusive. */
static inline size_t rng_range(rng_t *r, size_t lo, size_t hi) {
    return lo + (size_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* Order-dependent mix, for single-threaded checksums. */
static inline uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    return h;
}

/* Order-independent per-value hash: sums of these are the same whatever the interleaving. */
static inline uint64_t hash64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline void die(const char *what) {
    fprintf(stderr, "workload error: %s\n", what);
    abort();
}

static inline void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p)
        die("malloc returned NULL");
    return p;
}

/* Optional positive integer argument argv[i], else def. */
static inline long arg_long(int argc, char **argv, int i, long def) {
    if (argc <= i)
        return def;
    char *end;
    long v = strtol(argv[i], &end, 0);
    if (*end || v <= 0) {
        fprintf(stderr, "bad argument %d: %s\n", i, argv[i]);
        exit(2);
    }
    return v;
}

/* Resident set size in KiB, read with open/read (no stdio buffer allocated). */
static inline long rss_kib(void) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    long size = 0, resident = 0;
    if (sscanf(buf, "%ld %ld", &size, &resident) != 2)
        return -1;
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

#endif
