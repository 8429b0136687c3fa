/* Drives the thread-cache fast paths for scripts/check-fast-paths.sh. Built with -fno-builtin
 * so the compiler keeps every call.
 *
 * `driver N` warms the cache with one malloc/free pair, then runs N more pairs of the same
 * small size, each a hit (the bin keeps the block free gives back).
 *
 * `driver N realloc` warms the cache with one round, then runs N more rounds of a block of
 * SIZE bytes resized to RESIZED bytes and back, 2 N reallocs: each moves the block to the
 * other small class, a thread-cache hit for the new block and for the old one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE 16
#define RESIZED 32

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "realloc") != 0)) {
        fprintf(stderr, "usage: %s ITERATIONS [realloc]\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    void *volatile sink;
    if (argc == 3) {
        void *p = malloc(SIZE);
        free(realloc(realloc(malloc(SIZE), RESIZED), SIZE));
        for (long i = 0; i < n; i++) {
            p = realloc(p, RESIZED);
            sink = p;
            p = realloc(p, SIZE);
            sink = p;
        }
        free(p);
        return 0;
    }
    free(malloc(SIZE));
    for (long i = 0; i < n; i++) {
        sink = malloc(SIZE);
        free(sink);
    }
    return 0;
}
