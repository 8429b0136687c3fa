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
 * `pairs N SIZE 0 BATCH` runs N pairs in batches: BATCH blocks allocated (each first byte
 * written), then freed in the order allocated (Criterion's `batch64`), N / BATCH times. Past a
 * thread cache's depth the blocks come from and go back to the allocator's heap.
 *
 * Built with -fno-builtin so that the compiler keeps every call. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s PAIRS SIZE [LIVE [BATCH]]\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    size_t size = strtoul(argv[2], NULL, 10);
    long live = argc >= 4 ? strtol(argv[3], NULL, 10) : 0;
    long batch = argc == 5 ? strtol(argv[4], NULL, 10) : 0;
    if (n < 0 || live < 0 || live > 1000000 || batch < 0 || batch > 1000000 || (live && batch)) {
        fprintf(stderr, "pairs: PAIRS must be >= 0, LIVE and BATCH in 0..1000000, not both\n");
        return 2;
    }
    char *volatile sink;
    free(malloc(size));
    if (batch > 0) {
        char **blocks = calloc((size_t)batch, sizeof *blocks);
        if (!blocks) return 1;
        for (long i = 0; i + batch <= n; i += batch) {
            for (long k = 0; k < batch; k++) {
                blocks[k] = malloc(size);
                blocks[k][0] = (char)k;
            }
            for (long k = 0; k < batch; k++)
                free(blocks[k]);
        }
        return 0;
    }
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
