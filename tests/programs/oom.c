/* Running out of memory, for Tally's acceptance tests (tests/tests/oom.rs).
 *
 *   oom
 *
 * Limits its own address space (setrlimit(RLIMIT_AS, 512 MiB), so the test does not depend on
 * the shell's ulimit), then:
 *   1. fills about 400 MiB with a mix of small (16 B - 2 KiB, 40% of the bytes), large
 *      (20 KiB - 1.5 MiB, 30%) and huge (3 - 11 MiB, 30%) blocks, writing every page, and frees
 *      them all;
 *   2. at once (no sleep) allocates 100 MiB and then 4 MiB blocks up to 300 MiB in all, writing
 *      every page: the memory freed in step 1 must be reusable now, not after a decay time;
 *   3. asks for absurd sizes (64 TiB) through malloc, calloc, realloc, posix_memalign,
 *      aligned_alloc and memalign: each must fail (NULL and ENOMEM, or ENOMEM returned), with
 *      the realloc'ed block intact — unless the kernel's overcommit policy would back such a
 *      mapping (vm.overcommit_memory=1), in which case the program says so and skips the check;
 *   4. exhausts the address space with 4 MiB blocks, then with small blocks, until malloc fails:
 *      NULL with ENOMEM, no crash; calloc, realloc (old block intact) and posix_memalign fail
 *      the same way; then frees everything, and 100 MiB can be had again.
 *
 * Prints `key=value` counters and `oom: ok`; on any failure prints what to stderr and exits 1.
 * stdout is unbuffered (a stdio buffer would be one more allocation to fail). */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define PROGRAM "oom"
#include "check.h"

#define MIB ((size_t)1 << 20)
#define LIMIT (512 * MIB)
#define FILL (400 * MIB)
#define PAGE 4096
#define ABSURD ((size_t)1 << 46)
#define MAX_BLOCKS (1 << 20)

static void *blocks[MAX_BLOCKS];
/* realloc through a pointer the compiler cannot see through: the program reads blocks whose
 * realloc failed, which is legal but draws -Wuse-after-free. */
static void *(*volatile realloc_opaque)(void *, size_t) = realloc;


/* Writes one byte per page (and the last byte), so every page is really backed. */
static void touch(void *p, size_t size, unsigned char value)
{
    unsigned char *b = p;
    for (size_t i = 0; i < size; i += PAGE)
        b[i] = value;
    b[size - 1] = value;
}

static void check(const void *p, size_t size, unsigned char value, const char *what)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < size; i += PAGE)
        if (b[i] != value)
            fail("%s: block %p of %zu bytes lost its contents at %zu", what, p, size, i);
    if (b[size - 1] != value)
        fail("%s: block %p of %zu bytes lost its last byte", what, p, size);
}

/* Step 1: fill about FILL bytes, 40% in small blocks, 30% in large and 30% in huge ones,
 * interleaved (each block is of the kind furthest behind its share), then free it all. */
static size_t sizes[MAX_BLOCKS];

static void fill_and_free(void)
{
    size_t total = 0, n = 0, small = 0, large = 0, huge = 0;
    while (total < FILL) {
        size_t size;
        if (small * 10 <= total * 4) {
            size = 16 + (n * 37) % 2032;
            small += size;
        } else if (large * 10 <= total * 3) {
            size = 20 * 1024 + (n * 104729) % (1536 * 1024 - 20 * 1024);
            large += size;
        } else {
            size = 3 * MIB + (n * 7919) % (8 * MIB);
            huge += size;
        }
        void *p = opaque(malloc(size));
        if (!p)
            fail("fill: malloc(%zu) failed after %zu bytes in %zu blocks", size, total, n);
        touch(p, size, (unsigned char)n);
        sizes[n] = size;
        blocks[n++] = p;
        total += size;
        if (n == MAX_BLOCKS)
            fail("fill: more than %d blocks", MAX_BLOCKS);
    }
    for (size_t i = 0; i < n; i++) {
        check(blocks[i], sizes[i], (unsigned char)i, "fill");
        free(blocks[i]);
    }
    printf("filled_blocks=%zu filled_mib=%zu small_mib=%zu large_mib=%zu huge_mib=%zu\n", n,
           total / MIB, small / MIB, large / MIB, huge / MIB);
}

/* Step 2: 100 MiB, then 4 MiB blocks up to 300 MiB, all written; then freed. */
static void reuse(const char *when)
{
    void *big = opaque(malloc(100 * MIB));
    if (!big)
        fail("%s: malloc(100 MiB) failed (errno %d)", when, errno);
    touch(big, 100 * MIB, 0x5a);
    size_t n = 0;
    for (size_t total = 100 * MIB; total < 300 * MIB; total += 4 * MIB) {
        void *p = opaque(malloc(4 * MIB));
        if (!p)
            fail("%s: malloc(4 MiB) failed after %zu of them (errno %d)", when, n, errno);
        touch(p, 4 * MIB, (unsigned char)n);
        blocks[n++] = p;
    }
    for (size_t i = 0; i < n; i++) {
        check(blocks[i], 4 * MIB, (unsigned char)i, when);
        free(blocks[i]);
    }
    check(big, 100 * MIB, 0x5a, when);
    free(big);
    printf("%s_4mib_blocks=%zu\n", when, n);
}

static void expect_enomem(void *p, const char *what)
{
    if (p)
        fail("%s returned %p, expected NULL", what, p);
    if (errno != ENOMEM)
        fail("%s: errno %d, expected ENOMEM", what, errno);
}

/* Whether the kernel would back an anonymous mapping of `size` bytes counted against its
 * overcommit policy (what glibc's malloc asks for a block this large). */
static int kernel_backs(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 0;
    munmap(p, size);
    return 1;
}

/* Step 3: requests that cannot be backed fail as in glibc. */
static void absurd_sizes(void)
{
    /* Asked without the address-space limit, which would refuse any size on its own. */
    struct rlimit saved;
    getrlimit(RLIMIT_AS, &saved);
    struct rlimit open = {saved.rlim_max, saved.rlim_max};
    setrlimit(RLIMIT_AS, &open);
    if (kernel_backs(ABSURD)) {
        printf("absurd=skipped (the kernel backs 64 TiB: vm.overcommit_memory=1?)\n");
        setrlimit(RLIMIT_AS, &saved);
        return;
    }
    void *keep = opaque(malloc(1000));
    memset(keep, 0x3c, 1000);
    void *huge = opaque(malloc(5 * MIB));
    touch(huge, 5 * MIB, 0x3d);
    errno = 0;
    expect_enomem(opaque(malloc(ABSURD)), "malloc(64 TiB)");
    errno = 0;
    expect_enomem(opaque(calloc(1, ABSURD)), "calloc(1, 64 TiB)");
    errno = 0;
    expect_enomem(opaque(calloc((size_t)1 << 23, (size_t)1 << 23)), "calloc(2^23, 2^23)");
    errno = 0;
    expect_enomem(opaque(realloc_opaque(keep, ABSURD)), "realloc(1000-byte block, 64 TiB)");
    errno = 0;
    expect_enomem(opaque(realloc_opaque(huge, ABSURD)), "realloc(5 MiB block, 64 TiB)");
    errno = 0;
    expect_enomem(opaque(aligned_alloc(4096, ABSURD)), "aligned_alloc(4096, 64 TiB)");
    errno = 0;
    expect_enomem(opaque(memalign(8 * MIB, ABSURD)), "memalign(8 MiB, 64 TiB)");
    errno = 0;
    expect_enomem(opaque(valloc(ABSURD)), "valloc(64 TiB)");
    void *out = (void *)1;
    int rc = posix_memalign(&out, 64, ABSURD);
    if (rc != ENOMEM || out != (void *)1)
        fail("posix_memalign(64, 64 TiB): %d, %p; expected ENOMEM and no store", rc, out);
    const unsigned char *k = keep;
    for (int i = 0; i < 1000; i++)
        if (k[i] != 0x3c)
            fail("a failed realloc changed its block at byte %d", i);
    check(huge, 5 * MIB, 0x3d, "failed realloc of a huge block");
    free(keep);
    free(huge);
    setrlimit(RLIMIT_AS, &saved);
    printf("absurd=refused\n");
}

/* Step 4: exhaust the address space; every failure is NULL with ENOMEM. */
static void exhaust(void)
{
    size_t big = 0, small = 0;
    for (;;) {
        errno = 0;
        void *p = opaque(malloc(4 * MIB));
        if (!p) {
            expect_enomem(p, "malloc(4 MiB) when exhausted");
            break;
        }
        touch(p, 4 * MIB, 1);
        if (big == MAX_BLOCKS)
            fail("exhaust: 4 MiB blocks never ran out");
        blocks[big++] = p;
    }
    for (;;) {
        errno = 0;
        void *p = opaque(malloc(64));
        if (!p) {
            expect_enomem(p, "malloc(64) when exhausted");
            break;
        }
        memset(p, 2, 64);
        if (big + small == MAX_BLOCKS)
            fail("exhaust: small blocks never ran out");
        blocks[big + small++] = p;
    }
    errno = 0;
    expect_enomem(opaque(calloc(1, 4 * MIB)), "calloc(1, 4 MiB) when exhausted");
    errno = 0;
    void *moved = opaque(realloc_opaque(blocks[0], 8 * MIB));
    expect_enomem(moved, "realloc(4 MiB block, 8 MiB) when exhausted");
    check(blocks[0], 4 * MIB, 1, "a realloc that failed");
    void *out = NULL;
    if (posix_memalign(&out, 4096, 4 * MIB) != ENOMEM)
        fail("posix_memalign(4096, 4 MiB) when exhausted did not return ENOMEM");
    if (big * 4 * MIB < 300 * MIB)
        fail("exhausted after only %zu MiB of 4 MiB blocks", big * 4);
    for (size_t i = 0; i < big + small; i++)
        free(blocks[i]);
    printf("exhausted_4mib_blocks=%zu exhausted_small_blocks=%zu\n", big, small);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct rlimit limit;
    if (getrlimit(RLIMIT_AS, &limit) != 0)
        fail("getrlimit: errno %d", errno);
    if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < LIMIT)
        fail("the hard RLIMIT_AS is below 512 MiB already");
    limit.rlim_cur = LIMIT;
    if (setrlimit(RLIMIT_AS, &limit) != 0)
        fail("setrlimit(RLIMIT_AS, 512 MiB): errno %d", errno);

    fill_and_free();
    reuse("after_fill");
    absurd_sizes();
    exhaust();
    reuse("after_exhaustion");
    printf("oom: ok\n");
    return 0;
}
