/* Drives the thread-cache fast paths of malloc and free for scripts/check-fast-paths.sh:
 * `driver N` warms the cache with one malloc/free pair, then runs N more pairs of the same
 * small size, each a hit (the bin keeps the block free gives back). Built with -fno-builtin so
 * the compiler keeps every call. */
#include <stdio.h>
#include <stdlib.h>

#define SIZE 16

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s ITERATIONS\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    void *volatile sink;
    free(malloc(SIZE));
    for (long i = 0; i < n; i++) {
        sink = malloc(SIZE);
        free(sink);
    }
    return 0;
}
