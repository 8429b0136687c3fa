/* malloc/free pairs for benches/run-pair-cost.sh: `pairs N SIZE` warms the thread cache, then
 * runs N pairs of malloc(SIZE), a write of the block's first byte (as a program would), free.
 * Built with -fno-builtin so that the compiler keeps every call. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PAIRS SIZE\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    size_t size = strtoul(argv[2], NULL, 10);
    char *volatile sink;
    free(malloc(size));
    for (long i = 0; i < n; i++) {
        sink = malloc(size);
        sink[0] = (char)i;
        free(sink);
    }
    return 0;
}
