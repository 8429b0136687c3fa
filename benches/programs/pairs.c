/* malloc/free pairs for benches/run-pair-cost.sh.
 *
 * `pairs N SIZE` warms the thread cache, then runs N pairs of malloc(SIZE), a write of the
 * block's first byte (as a program would), free: the block freed is the one just allocated.
 *
 * `pairs N SIZE LIVE` keeps LIVE blocks alive in a ring: each of the N steps frees the oldest
 * and allocates a new one in its place (and writes its first byte). No page empties and no
 * cache refills in the steady state, as in a program with a working set; an allocator that
 * does work when a page's last block is freed (mimalloc retires the page) does it in the
 * first mode on every pair, and never in this one.
 *
 * Built with -fno-builtin so that the compiler keeps every call. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s PAIRS SIZE [LIVE]\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    size_t size = strtoul(argv[2], NULL, 10);
    long live = argc == 4 ? strtol(argv[3], NULL, 10) : 0;
    if (n < 0 || live < 0 || live > 1000000) {
        fprintf(stderr, "pairs: PAIRS must be >= 0 and LIVE in 0..1000000\n");
        return 2;
    }
    char *volatile sink;
    free(malloc(size));
    if (live == 0) {
        for (long i = 0; i < n; i++) {
            sink = malloc(size);
            sink[0] = (char)i;
            free(sink);
        }
        return 0;
    }
    char **ring = calloc((size_t)live, sizeof *ring);
    if (!ring) return 1;
    for (long k = 0; k < live; k++) {
        ring[k] = malloc(size);
        ring[k][0] = (char)k;
    }
    long k = 0;
    for (long i = 0; i < n; i++) {
        free(ring[k]);
        ring[k] = malloc(size);
        ring[k][0] = (char)i;
        if (++k == live) k = 0;
    }
    sink = ring[0];
    return 0;
}
