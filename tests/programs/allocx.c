/* jemalloc's *allocx family through tally.h, linked with -ltally (no preload): prints
 * "allocx ok <checks>" or the first failure (exit 1). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tally.h"

static long checks;

#define CHECK(cond, ...)                                                                        \
    do {                                                                                       \
        checks++;                                                                              \
        if (!(cond)) {                                                                         \
            printf("FAIL line %d: %s: ", __LINE__, #cond);                                     \
            printf(__VA_ARGS__);                                                               \
            printf("\n");                                                                      \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static char stats_text[1 << 20];
static size_t stats_len;
static int stats_calls;

static void collect(void *opaque, const char *piece) {
    stats_calls++;
    if (opaque != (void *)stats_text) return;
    size_t n = strlen(piece);
    if (stats_len + n < sizeof stats_text) {
        memcpy(stats_text + stats_len, piece, n);
        stats_len += n;
        stats_text[stats_len] = 0;
    }
}

static int all_bytes(const unsigned char *p, size_t n, unsigned char b) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != b)
            return 0;
    return 1;
}

static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0) return 0;
    return 1;
}

int main(void) {
    /* Every size up to 64 KiB (each class's edges included), every alignment up to a page:
     * nallocx says what sallocx of the block mallocx gives says, at least the size, and the
     * block is aligned and usable to its last byte. */
    for (size_t size = 1; size <= 65536; size += (size < 1024 ? 1 : size / 64)) {
        for (int lg = 0; lg <= 12; lg += (lg == 0 ? 3 : 1)) {
            int flags = lg == 0 ? 0 : MALLOCX_LG_ALIGN(lg);
            size_t n = nallocx(size, flags);
            unsigned char *p = mallocx(size, flags);
            CHECK(p != NULL, "mallocx(%zu, lg %d)", size, lg);
            CHECK(((uintptr_t)p & ((1ul << lg) - 1)) == 0, "%p not aligned to 2^%d", (void *)p, lg);
            CHECK(sallocx(p, flags) == n, "size %zu lg %d: sallocx %zu, nallocx %zu", size, lg,
                  sallocx(p, flags), n);
            CHECK(n >= size, "nallocx(%zu) = %zu", size, n);
            memset(p, 0xab, n);
            if (size % 3 == 0)
                sdallocx(p, size, flags);
            else
                dallocx(p, flags);
        }
    }
    CHECK(MALLOCX_ALIGN(4096) == MALLOCX_LG_ALIGN(12), "MALLOCX_ALIGN");
    CHECK(nallocx(SIZE_MAX, 0) == 0, "nallocx of an impossible size: %zu", nallocx(SIZE_MAX, 0));

    /* MALLOCX_ZERO: blocks just freed dirty come back zero, to their last usable byte. */
    for (size_t size = 8; size <= 300000; size = size * 3 + 5) {
        void *dirty[8];
        for (int i = 0; i < 8; i++) {
            dirty[i] = malloc(size);
            memset(dirty[i], 0xcd, sallocx(dirty[i], 0));
        }
        for (int i = 0; i < 8; i++) free(dirty[i]);
        for (int i = 0; i < 8; i++) {
            unsigned char *p = mallocx(size, MALLOCX_ZERO);
            CHECK(p != NULL && all_zero(p, sallocx(p, 0)), "MALLOCX_ZERO of %zu", size);
            dirty[i] = p;
        }
        for (int i = 0; i < 8; i++) dallocx(dirty[i], 0);
    }

    /* rallocx keeps the contents and the alignment; with MALLOCX_ZERO what it adds is zero. */
    for (int lg = 0; lg <= 12; lg += 4) {
        int flags = (lg == 0 ? 0 : MALLOCX_LG_ALIGN(lg)) | MALLOCX_ZERO;
        size_t size = 24;
        unsigned char *p = mallocx(size, flags);
        memset(p, 7, size);
        while (size < 200000) {
            size_t old = sallocx(p, 0);
            size_t next = size * 2 + 9;
            unsigned char *q = rallocx(p, next, flags);
            CHECK(q != NULL, "rallocx to %zu", next);
            CHECK(((uintptr_t)q & ((1ul << lg) - 1)) == 0, "rallocx lost alignment 2^%d", lg);
            for (size_t i = 0; i < size; i++) CHECK(q[i] == 7, "byte %zu of %zu lost", i, size);
            CHECK(all_zero(q + old, sallocx(q, 0) - old), "grown part of %zu not zero", next);
            memset(q, 7, next);
            p = q;
            size = next;
        }
        p = rallocx(p, 10, 0);
        CHECK(p != NULL && p[0] == 7 && p[9] == 7, "rallocx shrink");
        dallocx(p, 0);
    }

    /* xallocx on a small block: within its usable size it stays and says so; beyond it a small
     * block cannot grow in place and its usable size comes back, the block still valid. */
    unsigned char *p = mallocx(100, 0);
    size_t usable = sallocx(p, 0);
    CHECK(xallocx(p, 50, 0, 0) == usable, "xallocx within");
    CHECK(xallocx(p, usable, 0, 0) == usable, "xallocx to the usable size");
    CHECK(xallocx(p, usable + 1000, 10, 0) == usable, "xallocx beyond");
    memset(p, 1, usable);
    dallocx(p, 0);

    /* A large block shrinks in place, then grows back in place over the pages it gave up; with
     * MALLOCX_ZERO the bytes it gains read as zero, the ones it kept are untouched. */
    unsigned char *big = mallocx(256 << 10, 0);
    size_t big_usable = sallocx(big, 0);
    memset(big, 0xab, big_usable);
    size_t shrunk = xallocx(big, 100 << 10, 0, 0);
    CHECK(shrunk >= (100 << 10) && shrunk < big_usable && sallocx(big, 0) == shrunk,
          "a large block shrinking in place: %zu (was %zu)", shrunk, big_usable);
    size_t grown = xallocx(big, 200 << 10, 56 << 10, MALLOCX_ZERO);
    CHECK(grown >= (256 << 10) && sallocx(big, 0) == grown,
          "a large block growing back in place to size + extra: %zu", grown);
    CHECK(all_bytes(big, shrunk, 0xab) && all_zero(big + shrunk, grown - shrunk),
          "after growing in place: kept bytes changed or gained bytes not zero");
    /* Beyond what fits in place (past the largest large class) it stays. */
    CHECK(xallocx(big, 64 << 20, 0, 0) == grown && sallocx(big, 0) == grown, "xallocx past large");
    dallocx(big, 0);

    /* A huge block: shrinks in place always; grows in place where the address space after it is
     * free (mremap) or not at all, never moving; the result is always its usable size. */
    unsigned char *huge = mallocx(16 << 20, 0);
    memset(huge, 0xcd, 16 << 20);
    CHECK(xallocx(huge, 8 << 20, 0, 0) == (8 << 20) && sallocx(huge, 0) == (8 << 20),
          "a huge block shrinking in place");
    size_t regrown = xallocx(huge, 12 << 20, 4 << 20, MALLOCX_ZERO);
    CHECK(regrown == sallocx(huge, 0) && (regrown == (8 << 20) || regrown >= (12 << 20)),
          "a huge block growing in place: %zu", regrown);
    CHECK(all_bytes(huge, 8 << 20, 0xcd) && all_zero(huge + (8 << 20), regrown - (8 << 20)),
          "a huge block's bytes after growing in place");
    dallocx(huge, 0);

    /* malloc_stats_print hands Tally's statistics to the callback: JSON with 'J', text
     * without. */
    void *live = malloc(123456);
    malloc_stats_print(collect, stats_text, "J");
    CHECK(stats_calls >= 1 && stats_text[0] == '{', "JSON statistics: %.80s", stats_text);
    CHECK(strstr(stats_text, "\"allocated\":") != NULL, "no allocated in %.200s", stats_text);
    stats_len = 0;
    stats_text[0] = 0;
    malloc_stats_print(collect, stats_text, NULL);
    CHECK(strncmp(stats_text, "tally: stats:", 13) == 0, "text statistics: %.80s", stats_text);
    free(live);

    printf("allocx ok %ld\n", checks);
    return 0;
}
