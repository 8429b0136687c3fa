/* Three allocation sites with known amounts, for the profiler's estimates:
 *   site_a keeps 100 MiB live: 5 MiB in small blocks (24 B - 4 KiB) and 95 MiB in large ones
 *          (2.5 and 7 MiB);
 *   site_b keeps 10 MiB live: blocks of 4 and 6 MiB;
 *   site_c allocates and frees 1 GiB in blocks of 16 B - 64 KiB (nothing of it stays live).
 * The big blocks keep the estimates' variance low at the default 512 KiB sampling distance: a
 * block of 2.5 MiB is sampled with probability 1 - e^-5 = 99.3%. Small blocks are the noisy
 * part: S bytes of them are estimated with a standard deviation of sqrt(S * 512 KiB), 1.6 MiB
 * for 5 MiB, so the test's 10% bound on site_a is 6 of them (with 20 MiB of small blocks it
 * was 3, and 1 run in 300 or so failed). site_b's estimate must be within
 * 10% of its 10 MiB, so none of its blocks may go unsampled: a 4 MiB block is missed with
 * probability e^-8 = 0.03% (a 2 MiB one, as site_b once had, failed 1 run in 55). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024UL * 1024UL)

/* volatile: the stores, and so the mallocs, stay (GCC 12 removed site_b whole once it was two
 * unrolled calls into a static array nobody reads). */
static void *volatile keep[200000];
static size_t nkeep;

static void hold(void *p, size_t size) {
    memset(p, 1, size < 64 ? size : 64);
    keep[nkeep++] = p;
}

__attribute__((noinline)) void site_a(void) {
    size_t small = 0;
    for (size_t i = 0; small < 5 * MIB; i++) {
        size_t size = 24 + (i * 97) % 4073;
        hold(malloc(size), size);
        small += size;
    }
    for (int i = 0; i < 20; i++) {
        size_t size = i % 2 ? 5 * MIB / 2 : 7 * MIB; /* 10 x 2.5 MiB + 10 x 7 MiB = 95 MiB */
        hold(malloc(size), size);
    }
}

__attribute__((noinline)) void site_b(void) {
    size_t sizes[] = {4 * MIB, 6 * MIB};
    for (int i = 0; i < 2; i++)
        hold(malloc(sizes[i]), sizes[i]);
}

__attribute__((noinline)) void site_c(void) {
    void *batch[256];
    size_t total = 0, i = 0;
    for (; total < 1024 * MIB; i++) {
        size_t size = 16 + (i * 7919) % (64 * 1024);
        batch[i % 256] = malloc(size);
        memset(batch[i % 256], 2, 16);
        total += size;
        if (i % 256 == 255)
            for (int k = 0; k < 256; k++)
                free(batch[k]);
    }
    for (size_t k = 0; k < i % 256; k++)
        free(batch[k]);
}

int main(void) {
    site_a();
    site_b();
    site_c();
    printf("sites: ok a=%lu b=%lu c=%lu\n", 100 * MIB, 10 * MIB, 1024 * MIB);
    return 0;
}
