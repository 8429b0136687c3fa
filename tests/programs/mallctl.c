/* jemalloc's mallctl on Tally, name by name (tests/tests/header.rs runs it, linked with -ltally).
 *
 * argv[2], if given, names a file of names, one per line (every leaf of Tally's tree, from tally::ctl); for
 * each the program prints `<name> rc=<errno> size=<bytes> value=<value>`, learning the value's
 * size as jemalloc's rules allow (a read with 8 bytes of room copies what fits, says how much in
 * *oldlenp and returns EINVAL when the value is smaller). The Rust side checks those values
 * against the options it set and Tally's own statistics.
 *
 * Then it checks jemalloc's semantics against Tally's own figures and prints `mallctl ok <n>`
 * (n checks), or fails with the first mismatch. argv[1] is a directory for profiles. */
#define PROGRAM "mallctl"
#include "check.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>

#include "tally.h"

static unsigned long checks;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond))                                                                               \
            fail(__VA_ARGS__);                                                                     \
    } while (0)

/* Reads a value of `size` bytes; fails unless mallctl answers 0. */
static void get(const char *name, void *out, size_t size)
{
    size_t len = size;
    int rc = mallctl(name, out, &len, NULL, 0);
    CHECK(rc == 0 && len == size, "%s: rc %d, len %zu (want %zu)", name, rc, len, size);
}

static size_t get_size(const char *name)
{
    size_t v;
    get(name, &v, sizeof v);
    return v;
}

static unsigned get_unsigned(const char *name)
{
    unsigned v;
    get(name, &v, sizeof v);
    return v;
}

static uint64_t get_u64(const char *name)
{
    uint64_t v;
    get(name, &v, sizeof v);
    return v;
}

static bool get_bool(const char *name)
{
    bool v;
    get(name, &v, sizeof v);
    return v;
}

static uint64_t new_epoch(void)
{
    uint64_t e = 1;
    size_t len = sizeof e;
    int rc = mallctl("epoch", &e, &len, &e, sizeof e);
    CHECK(rc == 0, "epoch: rc %d", rc);
    return e;
}

/* Phase 1: every name in the file `path`, read with 8 bytes of room, then with the value's size. */
static void print_every_name(const char *path)
{
    char name[256];
    FILE *names = fopen(path, "r");
    if (!names)
        fail("cannot open %s", path);
    while (fgets(name, sizeof name, names)) {
        name[strcspn(name, "\n")] = 0;
        if (!name[0])
            continue;
        unsigned char buf[8] = {0};
        size_t len = sizeof buf;
        int rc = mallctl(name, buf, &len, NULL, 0);
        if (rc == EINVAL && len < sizeof buf) {
            size_t size = len;
            memset(buf, 0, sizeof buf);
            rc = mallctl(name, buf, &len, NULL, 0);
            CHECK(rc == 0 && len == size, "%s: a read of its own size: rc %d", name, rc);
        }
        printf("%s rc=%d size=%zu value=", name, rc, rc == 0 ? len : 0);
        if (rc != 0) {
            printf("-\n");
            continue;
        }
        if (len == 1) {
            printf("%u\n", buf[0]);
        } else if (len == 4) {
            unsigned v;
            memcpy(&v, buf, 4);
            printf("%u\n", v);
        } else {
            uint64_t v;
            memcpy(&v, buf, 8);
            /* A string: all names that hold one are listed here. */
            if (strcmp(name, "version") == 0 || strcmp(name, "config.malloc_conf") == 0 ||
                strcmp(name, "opt.stats_print_opts") == 0 || strcmp(name, "opt.junk") == 0 ||
                strcmp(name, "opt.thp") == 0 ||
                strcmp(name, "opt.prof_prefix") == 0 || strcmp(name, "opt.guard_report") == 0)
                printf("\"%s\"\n", (const char *)(uintptr_t)v);
            else
                printf("%lld\n", (long long)v);
        }
    }
    fclose(names);
}

struct text {
    char buf[1 << 16];
    size_t len;
};

static void collect(void *opaque_text, const char *piece)
{
    struct text *t = opaque_text;
    size_t n = strlen(piece);
    if (t->len + n < sizeof t->buf) {
        memcpy(t->buf + t->len, piece, n);
        t->len += n;
        t->buf[t->len] = 0;
    }
}

/* The number after `"key":` in Tally's JSON statistics. */
static unsigned long long json_number(const char *json, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = strstr(json, pattern);
    if (!at)
        fail("no %s in the statistics: %.200s", key, json);
    return strtoull(at + strlen(pattern), NULL, 10);
}

static struct text stats_text;

static void check_errors(void)
{
    size_t v, len = sizeof v;
    CHECK(mallctl("no.such.name", &v, &len, NULL, 0) == ENOENT, "unknown name: not ENOENT");
    CHECK(mallctl("stats", &v, &len, NULL, 0) == ENOENT, "an inner node: not ENOENT");
    CHECK(mallctl("version.more", &v, &len, NULL, 0) == ENOENT, "past a leaf: not ENOENT");
    CHECK(mallctl("arenas.bin.999.size", &v, &len, NULL, 0) == ENOENT, "bin 999: not ENOENT");
    CHECK(mallctl("arenas.bin.x.size", &v, &len, NULL, 0) == ENOENT, "bin x: not ENOENT");
    CHECK(mallctl("arena.77.purge", NULL, NULL, NULL, 0) == ENOENT, "arena 77: not ENOENT");
    CHECK(mallctl("", &v, &len, NULL, 0) == ENOENT, "empty name: not ENOENT");
    CHECK(mallctl(NULL, &v, &len, NULL, 0) == ENOENT, "null name: not ENOENT");
    /* Per size class, Tally counts for the whole process: ENOENT under one arena. */
    CHECK(mallctl("stats.arenas.0.small.allocated", &v, &len, NULL, 0) == ENOENT,
          "stats.arenas.0.small.allocated: not ENOENT");

    /* A wrong size: what fits is copied, *oldlenp says how much, EINVAL. */
    unsigned char small[2] = {0xee, 0xee};
    len = sizeof small;
    CHECK(mallctl("arenas.page", small, &len, NULL, 0) == EINVAL && len == 2,
          "a 2-byte read of a size_t: not EINVAL with len 2 (len %zu)", len);
    size_t page = 4096;
    CHECK(memcmp(small, &page, 2) == 0, "the 2 bytes copied are not the value's first two");
    uint64_t big[2] = {0, 0};
    len = sizeof big;
    CHECK(mallctl("arenas.narenas", big, &len, NULL, 0) == EINVAL && len == sizeof(unsigned),
          "a 16-byte read of an unsigned: not EINVAL with len 4 (len %zu)", len);

    /* Writing a read-only name: EPERM, and the value is unchanged. */
    size_t fake = 1;
    CHECK(mallctl("stats.allocated", NULL, NULL, &fake, sizeof fake) == EPERM,
          "writing stats.allocated: not EPERM");
    CHECK(mallctl("arenas.page", NULL, NULL, &fake, sizeof fake) == EPERM,
          "writing arenas.page: not EPERM");
    CHECK(get_size("arenas.page") == 4096, "arenas.page changed");
    /* Reading a write-only name, or either on an action: EPERM. */
    const char *path = "/nonexistent/x";
    len = sizeof v;
    CHECK(mallctl("prof.dump", &v, &len, &path, sizeof path) == EPERM, "reading prof.dump: not EPERM");
    len = sizeof v;
    CHECK(mallctl("thread.tcache.flush", &v, &len, NULL, 0) == EPERM,
          "reading thread.tcache.flush: not EPERM");
    CHECK(mallctl("arena.0.purge", NULL, NULL, &fake, sizeof fake) == EPERM,
          "writing arena.0.purge: not EPERM");
    /* A write of the wrong size: EINVAL. */
    bool on = true;
    CHECK(mallctl("prof.active", NULL, NULL, &on, 4) == EINVAL, "a 4-byte bool: not EINVAL");
    CHECK(mallctl("prof.dump", NULL, NULL, &path, 4) == EINVAL, "a 4-byte path: not EINVAL");
    CHECK(mallctl("prof.dump", NULL, NULL, &path, sizeof path) == EFAULT,
          "a profile into a missing directory: not EFAULT");
}

static void check_statistics(void)
{
    /* stats.* hold still between epochs, and agree with Tally's own report. */
    uint64_t e1 = new_epoch();
    uint64_t e0;
    size_t len = sizeof e0;
    CHECK(mallctl("epoch", &e0, &len, NULL, 0) == 0 && e0 == e1, "reading epoch: %llu, not %llu",
          (unsigned long long)e0, (unsigned long long)e1);
    size_t before = get_size("stats.allocated");
    enum { N = 16, BIG = 1 << 20 };
    void *blocks[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = opaque(malloc(BIG));
        memset(blocks[i], 1, BIG);
    }
    CHECK(get_size("stats.allocated") == before, "stats.allocated moved without an epoch");
    uint64_t e2 = new_epoch();
    CHECK(e2 == e1 + 1, "epoch went from %llu to %llu", (unsigned long long)e1, (unsigned long long)e2);
    size_t after = get_size("stats.allocated");
    CHECK(after >= before + N * (size_t)BIG && after <= before + N * (size_t)BIG + (1 << 20),
          "16 MiB allocated: stats.allocated %zu -> %zu", before, after);

    /* The same moment through malloc_stats_print (nothing allocates in between). */
    new_epoch();
    size_t allocated = get_size("stats.allocated"), active = get_size("stats.active"),
           resident = get_size("stats.resident"), mapped = get_size("stats.mapped"),
           metadata = get_size("stats.metadata"), retained = get_size("stats.retained");
    stats_text.len = 0;
    malloc_stats_print(collect, &stats_text, "Jab");
    CHECK(json_number(stats_text.buf, "allocated") == allocated, "allocated %zu, report %llu",
          allocated, json_number(stats_text.buf, "allocated"));
    CHECK(json_number(stats_text.buf, "active") == active, "active differs from the report");
    CHECK(json_number(stats_text.buf, "resident") == resident, "resident differs from the report");
    CHECK(json_number(stats_text.buf, "mapped") == mapped, "mapped differs from the report");
    CHECK(json_number(stats_text.buf, "metadata") == metadata, "metadata differs from the report");
    CHECK(json_number(stats_text.buf, "retained") == retained, "retained differs from the report");
    CHECK(allocated <= active && active <= resident && resident <= mapped,
          "allocated %zu <= active %zu <= resident %zu <= mapped %zu does not hold", allocated,
          active, resident, mapped);

    /* small + large = allocated; per-class figures add up. */
    size_t small = get_size("stats.arenas.4096.small.allocated");
    size_t large = get_size("stats.arenas.4096.large.allocated");
    CHECK(small + large == allocated, "small %zu + large %zu != allocated %zu", small, large, allocated);
    unsigned nbins = get_unsigned("arenas.nbins");
    size_t mib[6], miblen = 6, from_bins = 0;
    CHECK(mallctlnametomib("stats.arenas.4096.bins.0.curregs", mib, &miblen) == 0 && miblen == 6,
          "mallctlnametomib of a bin's curregs");
    size_t bmib[4], bmiblen = 4;
    CHECK(mallctlnametomib("arenas.bin.0.size", bmib, &bmiblen) == 0 && bmiblen == 4,
          "mallctlnametomib of arenas.bin.0.size");
    size_t last = 0;
    for (unsigned i = 0; i < nbins; i++) {
        size_t regs, size;
        mib[4] = i;
        bmib[2] = i;
        len = sizeof regs;
        CHECK(mallctlbymib(mib, miblen, &regs, &len, NULL, 0) == 0, "bins.%u.curregs by mib", i);
        len = sizeof size;
        CHECK(mallctlbymib(bmib, bmiblen, &size, &len, NULL, 0) == 0, "bin.%u.size by mib", i);
        char name[64];
        snprintf(name, sizeof name, "arenas.bin.%u.size", i);
        CHECK(get_size(name) == size, "%s by name and by mib differ", name);
        CHECK(size > last && nallocx(size, 0) == size, "bin %u: size %zu after %zu, nallocx %zu", i,
              size, last, nallocx(size, 0));
        CHECK(nallocx(last + 1, 0) == size, "nallocx(%zu) is not bin %u's size %zu", last + 1, i, size);
        last = size;
        from_bins += regs * size;
    }
    CHECK(from_bins == small, "the bins' curregs x size %zu != small.allocated %zu", from_bins, small);
    unsigned nlextents = get_unsigned("arenas.nlextents");
    for (unsigned i = 0; i < nlextents; i++) {
        char name[64];
        snprintf(name, sizeof name, "arenas.lextent.%u.size", i);
        size_t size = get_size(name);
        CHECK(size > last && nallocx(size, 0) == size, "lextent %u: size %zu", i, size);
        CHECK(nallocx(last + 1, 0) == size, "nallocx(%zu) is not lextent %u's size %zu", last + 1, i, size);
        /* nallocx agrees with sallocx of what mallocx gives, for the class and just above the
         * one before, with and without an alignment. */
        const size_t asks[2] = {size, last + 1};
        for (int k = 0; k < 2; k++) {
            for (int la = 0; la <= 12; la += 6) {
                void *b = mallocx(asks[k], MALLOCX_LG_ALIGN(la));
                CHECK(b != NULL && sallocx(b, 0) == nallocx(asks[k], MALLOCX_LG_ALIGN(la)),
                      "mallocx(%zu, lg align %d): sallocx %zu, nallocx %zu", asks[k], la, sallocx(b, 0),
                      nallocx(asks[k], MALLOCX_LG_ALIGN(la)));
                dallocx(b, 0);
            }
        }
        last = size;
    }
    CHECK(mallctlnametomib("stats", mib, &miblen) == ENOENT, "mallctlnametomib of an inner node");

    /* Freed and purged: no dirty page left in any arena. */
    for (int i = 0; i < N; i++)
        free(blocks[i]);
    unsigned narenas = get_unsigned("arenas.narenas");
    char purge[64];
    snprintf(purge, sizeof purge, "arena.%u.purge", narenas);
    CHECK(mallctl(purge, NULL, NULL, NULL, 0) == 0, "%s (all arenas, redis's way) failed", purge);
    CHECK(mallctl("arena.4096.purge", NULL, NULL, NULL, 0) == 0, "arena.4096.purge failed");
    CHECK(mallctl("arena.0.decay", NULL, NULL, NULL, 0) == 0, "arena.0.decay failed");
    CHECK(mallctl("arena.0.purge", NULL, NULL, NULL, 0) == 0, "arena.0.purge failed");
    new_epoch();
    CHECK(get_size("stats.arenas.4096.pdirty") == 0, "dirty pages after a purge of all arenas: %zu",
          get_size("stats.arenas.4096.pdirty"));
    size_t sum = 0;
    for (unsigned i = 0; i < narenas; i++) {
        char name[64];
        snprintf(name, sizeof name, "stats.arenas.%u.pactive", i);
        sum += get_size(name);
    }
    CHECK(sum == get_size("stats.arenas.4096.pactive"), "the arenas' pactive do not add up");
}

static void check_thread_and_arenas(void)
{
    /* thread.arena: read, move, read back; new blocks come from the new arena. */
    unsigned narenas = get_unsigned("arenas.narenas");
    unsigned mine = get_unsigned("thread.arena");
    CHECK(mine < narenas, "thread.arena %u of %u", mine, narenas);
    unsigned to = (mine + 1) % narenas, old = 99;
    size_t len = sizeof old;
    CHECK(mallctl("thread.arena", &old, &len, &to, sizeof to) == 0 && old == mine,
          "moving to arena %u: old %u (want %u)", to, old, mine);
    CHECK(get_unsigned("thread.arena") == to, "thread.arena did not move");
    bool guarded = get_u64("opt.guard_rate") != 0, cached = get_bool("opt.tcache");
    void *p = opaque(malloc(100));
    unsigned where = 99;
    len = sizeof where;
    int rc = mallctl("arenas.lookup", &where, &len, &p, sizeof p);
    /* (With guarded sampling on, the block may be a guarded one, in no arena.) */
    CHECK((rc == 0 && where == to) || (rc == EINVAL && guarded), "a new block's arena: rc %d, %u (want %u)",
          rc, where, to);
    free(p);
    unsigned nowhere = narenas + 5;
    CHECK(mallctl("thread.arena", NULL, NULL, &nowhere, sizeof nowhere) == EFAULT,
          "moving to a missing arena: not EFAULT");
    int stack_var = 0;
    void *not_ours = &stack_var;
    len = sizeof where;
    CHECK(mallctl("arenas.lookup", &where, &len, &not_ours, sizeof not_ours) == EINVAL,
          "looking up a stack address: not EINVAL");
    /* MALLOCX_ARENA(a): small, large and aligned blocks from arena a, past the thread cache;
     * an arena Tally does not have fails the allocation. */
    for (unsigned a = 0; a < narenas; a++) {
        const size_t sizes_in[] = {64, 3000, 100000};
        for (int k = 0; k < 3; k++) {
            void *b = mallocx(sizes_in[k], MALLOCX_ARENA(a) | (k == 1 ? MALLOCX_ALIGN(256) : 0));
            CHECK(b != NULL, "mallocx(%zu, MALLOCX_ARENA(%u))", sizes_in[k], a);
            len = sizeof where;
            rc = mallctl("arenas.lookup", &where, &len, &b, sizeof b);
            CHECK((rc == 0 && where == a) || (rc == EINVAL && guarded),
                  "mallocx(%zu, MALLOCX_ARENA(%u)): lookup rc %d, arena %u", sizes_in[k], a, rc, where);
            CHECK(k != 1 || (uintptr_t)b % 256 == 0, "MALLOCX_ARENA with MALLOCX_ALIGN(256)");
            dallocx(b, MALLOCX_TCACHE_NONE);
        }
    }
    CHECK(mallocx(64, MALLOCX_ARENA(narenas)) == NULL, "mallocx from a missing arena succeeded");
    /* MALLOCX_TCACHE_NONE: a block freed so goes home, not onto this thread's cache, whose top
     * the next malloc of the class would hand out again. (Eight blocks in the cache first: a
     * cache GC step at the next allocation leaves most of them.) */
    void *warm[8];
    for (int i = 0; i < 8; i++)
        warm[i] = malloc(64);
    for (int i = 0; i < 8; i++)
        free(warm[i]);
    void *tn = mallocx(64, MALLOCX_TCACHE_NONE);
    dallocx(tn, MALLOCX_TCACHE_NONE);
    void *next = malloc(64);
    CHECK(next != tn || !cached, "a block freed with MALLOCX_TCACHE_NONE came back from the thread cache");
    free(next);

    new_epoch();
    char name[64];
    snprintf(name, sizeof name, "stats.arenas.%u.nthreads", to);
    /* (Threads without a cache are not counted: tcache:false.) */
    CHECK(!get_bool("opt.tcache") || get_unsigned(name) >= 1, "%s is 0 with this thread there", name);
    CHECK(mallctl("thread.tcache.flush", NULL, NULL, NULL, 0) == 0, "thread.tcache.flush failed");

    /* Decay times: read-write, one setting for all arenas. */
    ssize_t ms = 1234, was = 0;
    len = sizeof was;
    CHECK(mallctl("arenas.dirty_decay_ms", &was, &len, &ms, sizeof ms) == 0, "arenas.dirty_decay_ms write");
    ssize_t now;
    get("arenas.dirty_decay_ms", &now, sizeof now);
    CHECK(now == 1234, "arenas.dirty_decay_ms reads %zd after 1234", now);
    get("stats.arenas.0.dirty_decay_ms", &now, sizeof now);
    CHECK(now == 1234, "stats.arenas.0.dirty_decay_ms reads %zd", now);
    ms = -2;
    CHECK(mallctl("arenas.dirty_decay_ms", NULL, NULL, &ms, sizeof ms) == EFAULT, "decay -2: not EFAULT");
    CHECK(mallctl("arenas.dirty_decay_ms", NULL, NULL, &was, sizeof was) == 0, "restoring decay");

    /* background_thread: on, read back, off. */
    bool on = true, prev = true;
    len = sizeof prev;
    CHECK(mallctl("background_thread", &prev, &len, &on, sizeof on) == 0 && !prev,
          "background_thread on: old %d", prev);
    CHECK(get_bool("background_thread"), "background_thread does not read true");
    new_epoch();
    CHECK(get_size("stats.background_thread.num_threads") == 1, "no background thread counted");
    on = false;
    CHECK(mallctl("background_thread", &prev, &len, &on, sizeof on) == 0 && prev,
          "background_thread off: old %d", prev);
    CHECK(!get_bool("background_thread"), "background_thread still reads true");
}

/* thread.allocated / thread.deallocated: the usable sizes of what this thread allocates and
 * frees, whatever path each block takes (small, large, huge, aligned, sampled by the profiler,
 * moved or resized in place by realloc), and nothing of what another thread does. */
enum { REPS = 300, NSIZES = 14 };
static void *blocks[REPS * NSIZES];
static const size_t sizes[NSIZES] = {1,     8,     24,    100,    1000,    5000,     15000,
                                     20000, 40000, 70000, 300000, 1 << 20, 3 << 20, 9 << 20};

static void *free_them(void *count)
{
    uint64_t d0 = get_u64("thread.deallocated"), a0 = get_u64("thread.allocated");
    size_t n = *(size_t *)count, usable = 0;
    for (size_t i = 0; i < n; i++) {
        usable += malloc_usable_size(blocks[i]);
        free(blocks[i]);
    }
    uint64_t d1 = get_u64("thread.deallocated"), a1 = get_u64("thread.allocated");
    CHECK(d1 - d0 == usable, "another thread freed %zu bytes: its thread.deallocated grew %llu", usable,
          (unsigned long long)(d1 - d0));
    CHECK(a1 == a0, "freeing moved thread.allocated");
    return NULL;
}

static void check_thread_bytes(void)
{
    uint64_t a0 = get_u64("thread.allocated"), d0 = get_u64("thread.deallocated");
    size_t n = 0, usable = 0;
    for (int r = 0; r < REPS; r++) {
        for (int i = 0; i < NSIZES; i++) {
            if (sizes[i] >= (1 << 20) && r % 20 != 0)
                continue;
            void *p = opaque(malloc(sizes[i]));
            CHECK(p != NULL, "malloc(%zu)", sizes[i]);
            usable += malloc_usable_size(p);
            blocks[n++] = p;
        }
        void *p;
        CHECK(posix_memalign(&p, 256, 1000) == 0, "posix_memalign");
        usable += malloc_usable_size(p);
        blocks[n++] = p;
    }
    uint64_t a1 = get_u64("thread.allocated"), d1 = get_u64("thread.deallocated");
    CHECK(a1 - a0 == usable, "allocated %zu usable bytes: thread.allocated grew %llu", usable,
          (unsigned long long)(a1 - a0));
    CHECK(d1 == d0, "allocating moved thread.deallocated by %llu", (unsigned long long)(d1 - d0));

    /* realloc: the old usable size freed, the new one allocated, whenever it changes (in place
     * or moved). */
    uint64_t want_a = 0, want_d = 0;
    void *g = opaque(malloc(10));
    want_a += malloc_usable_size(g);
    for (size_t size = 16; size < (32u << 20); size = size * 5 / 4 + 8) {
        size_t old = malloc_usable_size(g);
        g = opaque(realloc(g, size));
        CHECK(g != NULL, "realloc to %zu", size);
        size_t now = malloc_usable_size(g);
        if (now != old) {
            want_a += now;
            want_d += old;
        }
    }
    want_d += malloc_usable_size(g);
    free(g);
    uint64_t a2 = get_u64("thread.allocated"), d2 = get_u64("thread.deallocated");
    CHECK(a2 - a1 == want_a && d2 - d1 == want_d,
          "realloc growth: allocated %llu (want %llu), deallocated %llu (want %llu)",
          (unsigned long long)(a2 - a1), (unsigned long long)want_a, (unsigned long long)(d2 - d1),
          (unsigned long long)want_d);

    /* Another thread frees what this one allocated: it counts there, not here. */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, free_them, &n) == 0, "pthread_create");
    CHECK(pthread_join(t, NULL) == 0, "pthread_join");
    /* (pthread_create allocates in this thread: its thread's structures.) */
    uint64_t a3 = get_u64("thread.allocated"), d3 = get_u64("thread.deallocated");
    CHECK(d3 == d2, "another thread's frees moved this thread's thread.deallocated");

    /* And this thread frees what it allocates again. */
    n = 0;
    usable = 0;
    for (int r = 0; r < REPS; r++) {
        for (int i = 0; i < NSIZES; i++) {
            if (sizes[i] >= (1 << 20) && r % 20 != 0)
                continue;
            void *p = opaque(calloc(1, sizes[i]));
            usable += malloc_usable_size(p);
            blocks[n++] = p;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(blocks[i]);
    uint64_t a4 = get_u64("thread.allocated"), d4 = get_u64("thread.deallocated");
    CHECK(a4 - a3 == usable && d4 - d3 == usable,
          "calloc then free of %zu bytes: allocated grew %llu, deallocated %llu", usable,
          (unsigned long long)(a4 - a3), (unsigned long long)(d4 - d3));
}

/* fork while another thread takes new statistics snapshots: the child reads its own (the
 * snapshot's lock is taken across fork, so a child never finds it held by a thread it does not
 * have). */
static volatile int stop_epochs;

static void *take_epochs(void *unused)
{
    (void)unused;
    while (!stop_epochs)
        new_epoch();
    return NULL;
}

static void check_fork(void)
{
    pthread_t t;
    CHECK(pthread_create(&t, NULL, take_epochs, NULL) == 0, "pthread_create");
    /* (400 forks: without the lock's fork handlers a child finds it held in about 4 runs in 5.) */
    for (int i = 0; i < 400; i++) {
        pid_t child = fork();
        CHECK(child >= 0, "fork");
        if (child == 0) {
            uint64_t e = 1;
            size_t len = sizeof e, allocated = 0, alen = sizeof allocated;
            int ok = mallctl("epoch", &e, &len, &e, sizeof e) == 0 &&
                     mallctl("stats.allocated", &allocated, &alen, NULL, 0) == 0 && allocated > 0;
            _exit(ok ? 0 : 1);
        }
        int status = 0, waited = 0;
        pid_t done;
        while ((done = waitpid(child, &status, WNOHANG)) == 0 && waited++ < 5000)
            usleep(1000);
        if (done == 0) {
            kill(child, SIGKILL);
            waitpid(child, &status, 0);
            fail("fork %d: the child hung reading statistics (a lock held across fork)", i);
        }
        CHECK(done == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "a fork child reading statistics: status %d", status);
    }
    stop_epochs = 1;
    CHECK(pthread_join(t, NULL) == 0, "pthread_join");
}

static void check_profiler(const char *dir)
{
    /* prof.active, prof.lg_sample, prof.reset, prof.dump, prof.interval (prof:true is set). */
    CHECK(get_bool("opt.prof") && get_bool("prof.active"), "profiling is not on and active");
    bool off = false, was = false;
    size_t len = sizeof was;
    CHECK(mallctl("prof.active", &was, &len, &off, sizeof off) == 0 && was, "prof.active off: old %d", was);
    CHECK(!get_bool("prof.active"), "prof.active still reads true");
    bool on = true;
    CHECK(mallctl("prof.active", NULL, NULL, &on, sizeof on) == 0 && get_bool("prof.active"),
          "prof.active back on");
    CHECK(get_size("prof.lg_sample") == get_size("opt.lg_prof_sample"), "prof.lg_sample != opt");
    size_t lg = 16;
    CHECK(mallctl("prof.reset", NULL, NULL, &lg, sizeof lg) == 0, "prof.reset with lg 16");
    CHECK(get_size("prof.lg_sample") == 16, "prof.lg_sample after a reset with 16: %zu",
          get_size("prof.lg_sample"));
    CHECK(mallctl("prof.reset", NULL, NULL, NULL, 0) == 0, "prof.reset without a rate");
    CHECK(get_size("prof.lg_sample") == 16, "prof.reset without a rate changed it");
    CHECK(get_u64("prof.interval") == 0, "prof.interval with lg_prof_interval -1: not 0");

    char path[4096];
    snprintf(path, sizeof path, "%s/by-mallctl.heap", dir);
    const char *p = path;
    CHECK(mallctl("prof.dump", NULL, NULL, &p, sizeof p) == 0, "prof.dump to %s", path);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "no profile at %s", path);
    char head[16] = {0};
    CHECK(fread(head, 1, 8, f) == 8 && memcmp(head, "heap_v2/", 8) == 0, "%s is not heap_v2: %s", path, head);
    fclose(f);
    /* No path: one named after prof_prefix. */
    CHECK(mallctl("prof.dump", NULL, NULL, NULL, 0) == 0, "prof.dump without a path");
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3)
        fail("usage: mallctl <profile directory> [<file of names>]");
    if (argc == 3)
        print_every_name(argv[2]);
    check_errors();
    check_statistics();
    check_thread_and_arenas();
    check_thread_bytes();
    check_fork();
    check_profiler(argv[1]);
    printf("mallctl ok %lu\n", checks);
    return 0;
}
