/* large_blocks: blocks of 64 KiB to 64 MiB allocated, touched and freed repeatedly. Phase 1
 * walks sizes spread log-uniformly over 64 KiB .. 64 MiB, keeping the last 4 alive (a ring), so
 * the allocator sees a mix of reuse and fresh mappings. Phase 2 repeats 5-25 MiB blocks one at
 * a time: allocate, touch, free, again, the pattern where an allocator that unmaps and
 * re-faults (or zeroes) every block loses to one that reuses it. Every page of every block is
 * written once; a sample is read back into the checksum.
 *
 * Usage: large_blocks [phase1_blocks=500] [phase2_blocks=500]
 * Output: workload=large_blocks ops=<mallocs> checksum=<hex> */
#include "common.h"

enum { RING = 4, PAGE = 4096 };

static uint64_t touch(unsigned char *p, size_t size, uint64_t seed) {
    for (size_t i = 0; i < size; i += PAGE)
        p[i] = (unsigned char)(seed + i / PAGE);
    p[size - 1] = (unsigned char)seed;
    uint64_t h = size;
    for (size_t i = 0; i < size; i += 61 * PAGE)
        h = mix(h, p[i]);
    return mix(h, p[size - 1]);
}

int main(int argc, char **argv) {
    long n1 = arg_long(argc, argv, 1, 500);
    long n2 = arg_long(argc, argv, 2, 500);
    rng_t r;
    rng_seed(&r, 5);
    uint64_t sum = 0, ops = 0;
    unsigned char *ring[RING] = {0};
    for (long i = 0; i < n1; i++) {
        /* log-uniform: 2^16 .. 2^26 bytes, plus an odd tail so sizes are not page multiples */
        size_t shift = rng_range(&r, 16, 25);
        size_t size = ((size_t)1 << shift) + rng_next(&r) % ((size_t)1 << shift);
        if (size > ((size_t)64 << 20))
            size = (size_t)64 << 20;
        size += rng_next(&r) % 512;
        unsigned char *p = xmalloc(size);
        ops++;
        sum = mix(sum, touch(p, size, (uint64_t)i));
        int slot = (int)(i % RING);
        free(ring[slot]);
        ring[slot] = p;
    }
    for (int k = 0; k < RING; k++)
        free(ring[k]);
    for (long i = 0; i < n2; i++) {
        size_t size = rng_range(&r, (size_t)5 << 20, (size_t)25 << 20);
        unsigned char *p = xmalloc(size);
        ops++;
        sum = mix(sum, touch(p, size, (uint64_t)i));
        free(p);
    }
    printf("workload=large_blocks ops=%llu checksum=%016llx\n", (unsigned long long)ops,
           (unsigned long long)sum);
    return 0;
}
