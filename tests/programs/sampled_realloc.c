/* realloc of sampled blocks, for tests/tests/sampled_realloc.rs. Run under LD_PRELOAD=libtally.so
 * with TALLY_CONF=prof:true,lg_prof_sample:0, so that every allocation is sampled (a sampled
 * block starts a page run of its own, whose pages say so).
 *
 *   sampled_realloc grow PATH    two blocks side by side, the first grown past its run (it
 *                                must move, both keeping their bytes); then blocks of several
 *                                sizes (small, the cached large classes, larger), each
 *                                realloc'd to its usable size (it must stay where it is), then
 *                                grown a few bytes at a time past several classes, its contents
 *                                checked after every step; a profile dumped to PATH.live with
 *                                them held and to PATH.freed once they are freed. Prints
 *                                "blocks=N", "class_changes=N" and "moved=N" (of the blocks of
 *                                a page or more, the reallocs past the usable size and those
 *                                that moved the block) and "sampled_realloc: ok".
 *   sampled_realloc unsampled PATH
 *                                a sampled block of 40000 bytes (a class the thread cache does
 *                                not keep) and a small one; then sampling is switched off
 *                                (prof.active) and the large block grown a few bytes at a time
 *                                past several classes, no new size sampled: it must become an
 *                                ordinary block where it is and grow in place, its bytes checked
 *                                after every step. Profiles dumped to PATH.before (both blocks
 *                                held, before the growth) and PATH.after (after it); Tally's
 *                                stats.allocated read before and after the grown block is
 *                                freed. Prints "class_changes=N", "moved=N",
 *                                "large_nmalloc=N" (how much stats.arenas.<all>.large.nmalloc
 *                                rose over the growth), "usable=N" (the
 *                                grown block's) and "freed_allocated=N" (how much
 *                                stats.allocated fell when it was freed), "left_allocated=N"
 *                                (stats.allocated at the end less at the start, both blocks
 *                                freed), then "sampled_realloc: ok".
 *   sampled_realloc shrink PATH  a sampled block of 300000 bytes (a block after it) shrunk to
 *                                100000, sampled again: it must stay where it is, the pages past
 *                                its new class's going back (a block of 150000 bytes allocated
 *                                next takes them); then sampling switched off (prof.active) and
 *                                it is shrunk to 50000, not sampled: it must stay where it is
 *                                again, an ordinary block from then on. Bytes checked after each
 *                                step; profiles dumped to PATH.resampled (after the first shrink)
 *                                and PATH.unsampled (after the second). Prints "moved=N" (of
 *                                the two shrinks), "tail_reused=0|1", "large_nmalloc=N" (the
 *                                rise over the second shrink), "usable=N" (after it),
 *                                "freed_allocated=N" and "left_allocated=N" (as for
 *                                `unsampled`), then "sampled_realloc: ok".
 *   sampled_realloc interior     realloc of a pointer one page into a sampled block of 20000
 *                                bytes: Tally must abort, naming the block.
 *   sampled_realloc freed        realloc of a sampled block freed before: Tally must abort. */
#define _GNU_SOURCE
#define PROGRAM "sampled_realloc"
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* Tally's (jemalloc's) mallctl, found at run time: the program is not linked with Tally. */
typedef int mallctl_fn(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);

static const size_t sizes[] = {100, 3000, 20000, 30000, 70000, 300000};
#define NBLOCKS (sizeof sizes / sizeof sizes[0])

static mallctl_fn *tally_mallctl(void)
{
    mallctl_fn *mallctl = (mallctl_fn *)dlsym(RTLD_DEFAULT, "mallctl");
    if (mallctl == NULL)
        fail("no mallctl: not run under Tally");
    return mallctl;
}

static void dump(const char *path, const char *suffix)
{
    char name[4096];
    snprintf(name, sizeof name, "%s.%s", path, suffix);
    const char *p = name;
    if (tally_mallctl()("prof.dump", NULL, NULL, &p, sizeof p) != 0)
        fail("prof.dump to %s failed", name);
}

/* stats.allocated, refreshed (epoch). */
static size_t allocated(void)
{
    uint64_t epoch = 1;
    size_t len = sizeof epoch;
    if (tally_mallctl()("epoch", &epoch, &len, &epoch, len) != 0)
        fail("mallctl epoch failed");
    size_t bytes = 0;
    len = sizeof bytes;
    if (tally_mallctl()("stats.allocated", &bytes, &len, NULL, 0) != 0)
        fail("mallctl stats.allocated failed");
    return bytes;
}

/* stats.arenas.<all>.large.nmalloc, refreshed (epoch). */
static uint64_t large_nmalloc(void)
{
    uint64_t epoch = 1, n = 0;
    size_t len = sizeof epoch;
    if (tally_mallctl()("epoch", &epoch, &len, &epoch, len) != 0)
        fail("mallctl epoch failed");
    len = sizeof n;
    if (tally_mallctl()("stats.arenas.4096.large.nmalloc", &n, &len, NULL, 0) != 0)
        fail("mallctl stats.arenas.4096.large.nmalloc failed");
    return n;
}

static void fill(unsigned char *p, size_t from, size_t to, size_t seed)
{
    for (size_t i = from; i < to; i++)
        p[i] = (unsigned char)(i * 7 + seed);
}

static void check(const unsigned char *p, size_t len, size_t seed, const char *when)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != (unsigned char)(i * 7 + seed))
            fail("byte %zu of block %zu wrong %s", i, seed, when);
}

/* Grows the block `p` of `*len` bytes (filled as `fill` fills block `seed`) a few bytes at a time
 * until it holds at least `until`, its bytes checked after every step. If `count`, adds the
 * reallocs past its usable size to `*changes` and those that moved it to `*moved`. */
static unsigned char *grow(unsigned char *p, size_t *len, size_t until, size_t seed, int count, size_t *changes,
                           size_t *moved)
{
    while (*len < until) {
        size_t next = *len + 1 + *len / 64;
        size_t before = malloc_usable_size(p);
        uintptr_t was = (uintptr_t)p;
        p = realloc(opaque(p), next);
        if (p == NULL)
            fail("realloc to %zu gave NULL", next);
        if (count && next > before) {
            (*changes)++;
            *moved += (uintptr_t)p != was;
        }
        check(p, *len, seed, "after a realloc");
        fill(p, *len, next, seed);
        *len = next;
    }
    return p;
}

/* The end of the `unsampled` and `shrink` cases: frees the resized block `p`, then `other`;
 * prints "usable=N" (p's), "freed_allocated=N" (how much stats.allocated fell when p was freed)
 * and "left_allocated=N" (stats.allocated at the end less `base`; the first output allocates
 * stdout's buffer, so the caller prints after this). */
static void finish(unsigned char *p, unsigned char *other, size_t base)
{
    size_t usable = malloc_usable_size(p);
    size_t with = allocated();
    free(p);
    size_t without = allocated();
    free(other);
    long left = (long)(allocated() - base);
    printf("usable=%zu\nfreed_allocated=%zu\nleft_allocated=%ld\n", usable, with - without, left);
}

/* A sampled block of `size` bytes, filled as block `seed`. */
static unsigned char *sampled(size_t size, size_t seed)
{
    unsigned char *p = malloc(size);
    if (p == NULL)
        fail("malloc(%zu) gave NULL", size);
    if (((uintptr_t)p & 4095) != 0)
        fail("malloc(%zu) at %p is not sampled (not page-aligned)", size, (void *)p);
    fill(p, 0, size, seed);
    return p;
}

/* Switches sampling off (prof.active). */
static void sampling_off(void)
{
    _Bool off = 0;
    if (tally_mallctl()("prof.active", NULL, NULL, &off, sizeof off) != 0)
        fail("mallctl prof.active failed");
}

/* The `unsampled` case (see the top of the file). */
static int unsampled(const char *path)
{
    size_t base = allocated();
    unsigned char *small = sampled(100, 1);
    unsigned char *p = sampled(40000, 2);
    dump(path, "before");
    sampling_off();
    size_t len = 40000, class_changes = 0, moved = 0;
    uint64_t nmalloc = large_nmalloc();
    p = grow(p, &len, 200000, 2, 1, &class_changes, &moved);
    nmalloc = large_nmalloc() - nmalloc;
    dump(path, "after");
    check(small, 100, 1, "at the end");
    finish(p, small, base);
    printf("class_changes=%zu\nmoved=%zu\nlarge_nmalloc=%llu\n", class_changes, moved, (unsigned long long)nmalloc);
    printf("sampled_realloc: ok\n");
    return 0;
}

/* The `shrink` case (see the top of the file). */
static int shrink(const char *path)
{
    size_t base = allocated();
    unsigned char *p = sampled(300000, 3);
    unsigned char *after = sampled(20000, 4);
    size_t moved = 0;
    uintptr_t at = (uintptr_t)p;
    /* Sampled again (every allocation is at this rate). */
    p = realloc(opaque(p), 100000);
    if (p == NULL)
        fail("realloc to 100000 gave NULL");
    moved += (uintptr_t)p != at;
    check(p, 100000, 3, "after a shrink sampled again");
    /* The pages past the new class's went back to the page heap: the next block that fits
     * there, sampled too, takes them. */
    uintptr_t end = ((uintptr_t)p + malloc_usable_size(p) + 4095) & ~(uintptr_t)4095;
    unsigned char *next = malloc(150000);
    if (next == NULL)
        fail("malloc(150000) gave NULL");
    int tail_reused = (uintptr_t)next == end;
    free(next);
    dump(path, "resampled");
    sampling_off();
    uint64_t nmalloc = large_nmalloc();
    at = (uintptr_t)p;
    p = realloc(opaque(p), 50000);
    if (p == NULL)
        fail("realloc to 50000 gave NULL");
    moved += (uintptr_t)p != at;
    nmalloc = large_nmalloc() - nmalloc;
    check(p, 50000, 3, "after a shrink not sampled");
    dump(path, "unsampled");
    check(after, 20000, 4, "at the end");
    finish(p, after, base);
    printf("moved=%zu\ntail_reused=%d\nlarge_nmalloc=%llu\n", moved, tail_reused, (unsigned long long)nmalloc);
    printf("sampled_realloc: ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        fail("usage: sampled_realloc grow PATH | unsampled PATH | shrink PATH | interior | freed");
    /* The allocation that starts Tally up draws the first sampling distance: it is not
     * sampled itself. */
    free(opaque(malloc(16)));
    if (strcmp(argv[1], "interior") == 0) {
        unsigned char *p = opaque(malloc(20000));
        if (((uintptr_t)p & 4095) != 0)
            fail("a block of 20000 bytes at %p is not sampled (not page-aligned)", (void *)p);
        opaque(realloc(opaque(p + 4096), 30000));
        fail("realloc of a pointer into a sampled block returned");
    }
    if (strcmp(argv[1], "freed") == 0) {
        /* Through a volatile, so that the compiler does not see the freed pointer reused. */
        static void *volatile freed;
        freed = malloc(20000);
        free(freed);
        opaque(realloc(freed, 30000));
        fail("realloc of a freed sampled block returned");
    }
    if (strcmp(argv[1], "unsampled") == 0 && argc >= 3)
        return unsampled(argv[2]);
    if (strcmp(argv[1], "shrink") == 0 && argc >= 3)
        return shrink(argv[2]);
    if (strcmp(argv[1], "grow") != 0 || argc < 3)
        fail("usage: sampled_realloc grow PATH | unsampled PATH | shrink PATH | interior | freed");
    unsigned char *blocks[NBLOCKS + 2];
    size_t lens[NBLOCKS + 2];
    size_t class_changes = 0, moved = 0;
    /* First, two blocks side by side: the first cannot grow over the second, so it moves. */
    for (size_t b = NBLOCKS; b < NBLOCKS + 2; b++) {
        lens[b] = 20000;
        blocks[b] = malloc(lens[b]);
        if (blocks[b] == NULL)
            fail("malloc(20000) gave NULL");
        fill(blocks[b], 0, lens[b], b);
    }
    if (blocks[NBLOCKS + 1] != blocks[NBLOCKS] + 20480)
        fail("two blocks of 20000 bytes in a row are not side by side: %p, %p", (void *)blocks[NBLOCKS],
             (void *)blocks[NBLOCKS + 1]);
    unsigned char *q = realloc(blocks[NBLOCKS], 50000);
    if (q == NULL)
        fail("realloc to 50000 gave NULL");
    if (q == blocks[NBLOCKS + 1] - 20480)
        fail("a block grew over its neighbour");
    check(q, lens[NBLOCKS], NBLOCKS, "after moving past its neighbour");
    check(blocks[NBLOCKS + 1], lens[NBLOCKS + 1], NBLOCKS + 1, "beside a block that moved");
    fill(q, lens[NBLOCKS], 50000, NBLOCKS);
    blocks[NBLOCKS] = q;
    lens[NBLOCKS] = 50000;
    for (size_t b = 0; b < NBLOCKS; b++) {
        unsigned char *p = malloc(sizes[b]);
        if (p == NULL)
            fail("malloc(%zu) gave NULL", sizes[b]);
        if (((uintptr_t)p & 4095) != 0)
            fail("malloc(%zu) at %p is not sampled (not page-aligned)", sizes[b], (void *)p);
        fill(p, 0, sizes[b], b);
        size_t usable = malloc_usable_size(p);
        if (usable < sizes[b])
            fail("usable size %zu below %zu", usable, sizes[b]);
        /* Within its class a block stays where it is. */
        uintptr_t at = (uintptr_t)p;
        unsigned char *q = realloc(p, usable);
        if ((uintptr_t)q != at)
            fail("realloc(%#lx, %zu) within the class moved it to %p", (unsigned long)at, usable, (void *)q);
        /* A few bytes at a time past several classes. Every allocation is sampled, the new
         * size's too: a block of a page or more grows in place while the pages after its run
         * are free (nothing is allocated meanwhile), and moves otherwise. */
        size_t len = sizes[b];
        q = grow(q, &len, sizes[b] * 3, b, sizes[b] >= 4096, &class_changes, &moved);
        blocks[b] = q;
        lens[b] = len;
    }
    dump(argv[2], "live");
    for (size_t b = 0; b < NBLOCKS + 2; b++) {
        check(blocks[b], lens[b], b, "at the end");
        free(blocks[b]);
    }
    dump(argv[2], "freed");
    printf("blocks=%zu\n", NBLOCKS + 2);
    printf("class_changes=%zu\n", class_changes);
    printf("moved=%zu\n", moved);
    printf("sampled_realloc: ok\n");
    return 0;
}
