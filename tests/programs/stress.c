/* Multithreaded malloc stress with content checks, for Tally's acceptance tests.
 *
 *   stress [threads=8] [ops_per_thread=150000] [seed=1]
 *
 * Each thread owns a table of slots and repeatedly picks one: an empty slot gets a new block
 * (malloc, calloc, realloc(NULL), posix_memalign, aligned_alloc, memalign or valloc) of a random
 * size from 1 B to 64 KiB, or occasionally 1-4 MiB; a full slot is verified and then freed,
 * realloc'ed to a new size, or handed to the next thread through a lock-protected queue. The
 * receiving thread verifies the block and either frees it or adopts it into its own table (to
 * realloc or free later), so blocks are freed and resized by threads that did not allocate them.
 *
 * Every block is filled with a pattern derived from (address, size, seed) and checked before it
 * is freed or resized (after realloc, the old pattern must survive in the common prefix), so a
 * block handed out twice, an overlap with a neighbour or metadata written into user memory is
 * caught. The bytes between the requested size and malloc_usable_size are filled and checked
 * too. Alignment, calloc zeroing and malloc_usable_size >= size are checked on every block.
 * Before the threads start, the C edge cases Tally promises to follow (POSIX errors, glibc
 * behaviour) are checked once.
 *
 * Prints `key=value` counters and `stress: ok` on success; on any mismatch prints what and
 * where to stderr and exits with status 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROGRAM "stress"
#include "check.h"

#define MAX_THREADS 64
#define SLOTS 1024
#define QUEUE_CAPACITY 2048
#define LARGE_SAMPLE_STRIDE 4096 /* large blocks: fill head, tail and one word per 4 KiB */
#define FULL_FILL_LIMIT (64 * 1024)

static uint64_t global_seed = 1;


static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* A live block: `key` fixes its contents, `usable` is malloc_usable_size at fill time. */
struct block {
    unsigned char *p;
    size_t size;
    size_t usable;
    uint64_t key;
};

static uint64_t block_key(const void *p, size_t size)
{
    return mix((uintptr_t)p ^ mix(size) ^ global_seed);
}

static unsigned char slack_byte(uint64_t key, size_t offset)
{
    return (unsigned char)(mix(key + offset) | 0x80);
}

/* Whether the word at `offset` is part of the pattern (all of it for blocks up to 64 KiB). */
static int sampled(size_t offset, size_t size)
{
    return size <= FULL_FILL_LIMIT || offset < LARGE_SAMPLE_STRIDE ||
           offset + LARGE_SAMPLE_STRIDE >= size || offset % LARGE_SAMPLE_STRIDE == 0;
}

/* Byte `i` of the pattern: byte i % 8 of the (little-endian) word at i rounded down to 8, so a
 * prefix check may end in the middle of a word that was written whole. */
static unsigned char pattern_byte(uint64_t key, size_t i)
{
    return (unsigned char)(mix(key ^ (i & ~(size_t)7)) >> (8 * (i & 7)));
}

static void fill_range(unsigned char *p, size_t from, size_t to, size_t size, uint64_t key)
{
    size_t i = from;
    for (; i + 8 <= to; i += 8)
        if (sampled(i, size)) {
            uint64_t word = mix(key ^ i);
            memcpy(p + i, &word, 8);
        }
    for (; i < to; i++)
        if (sampled(i & ~(size_t)7, size))
            p[i] = pattern_byte(key, i);
}

static void check_range(const unsigned char *p, size_t from, size_t to, size_t size, uint64_t key,
                        const char *what)
{
    size_t i = from;
    for (; i + 8 <= to; i += 8)
        if (sampled(i, size)) {
            uint64_t word = mix(key ^ i), seen;
            memcpy(&seen, p + i, 8);
            if (seen != word)
                fail("%s: block %p size %zu corrupted at offset %zu: %016llx, expected %016llx",
                     what, (void *)p, size, i, (unsigned long long)seen, (unsigned long long)word);
        }
    for (; i < to; i++)
        if (sampled(i & ~(size_t)7, size) && p[i] != pattern_byte(key, i))
            fail("%s: block %p size %zu corrupted at byte %zu", what, (void *)p, size, i);
}

/* Fills a fresh block (and its slack up to the usable size) and records it. */
static void fill_block(struct block *b, void *p, size_t size)
{
    b->p = p;
    b->size = size;
    b->usable = malloc_usable_size(p);
    if (b->usable < size)
        fail("malloc_usable_size(%p) = %zu < requested %zu", p, b->usable, size);
    b->key = block_key(p, size);
    fill_range(b->p, 0, size, size, b->key);
    if (b->usable - size <= FULL_FILL_LIMIT)
        for (size_t i = size; i < b->usable; i++)
            b->p[i] = slack_byte(b->key, i);
}

static void check_block(const struct block *b, const char *what)
{
    check_range(b->p, 0, b->size, b->size, b->key, what);
    if (b->usable - b->size <= FULL_FILL_LIMIT)
        for (size_t i = b->size; i < b->usable; i++)
            if (b->p[i] != slack_byte(b->key, i))
                fail("%s: block %p size %zu: slack byte %zu (usable %zu) overwritten", what,
                     (void *)b->p, b->size, i, b->usable);
}

static void check_aligned(const void *p, size_t alignment, const char *how)
{
    if ((uintptr_t)p % alignment != 0)
        fail("%s returned %p, not aligned to %zu", how, p, alignment);
}

/* Cross-thread hand-off: a bounded queue per thread, guarded by a mutex. */
struct queue {
    pthread_mutex_t lock;
    size_t head, count;
    struct block items[QUEUE_CAPACITY];
};

struct counters {
    uint64_t allocs, frees, reallocs, cross_sent, cross_freed, cross_adopted, large, aligned,
        callocs;
};

struct worker {
    int index;
    uint64_t ops;
    pthread_t thread;
    struct queue inbox;
    struct block slots[SLOTS];
    struct counters counters;
};

static struct worker *workers;
static int thread_count;
static atomic_int finished_ops;

static int queue_push(struct queue *q, const struct block *b)
{
    pthread_mutex_lock(&q->lock);
    int pushed = q->count < QUEUE_CAPACITY;
    if (pushed) {
        q->items[(q->head + q->count) % QUEUE_CAPACITY] = *b;
        q->count++;
    }
    pthread_mutex_unlock(&q->lock);
    return pushed;
}

static int queue_pop(struct queue *q, struct block *b)
{
    pthread_mutex_lock(&q->lock);
    int popped = q->count > 0;
    if (popped) {
        *b = q->items[q->head];
        q->head = (q->head + 1) % QUEUE_CAPACITY;
        q->count--;
    }
    pthread_mutex_unlock(&q->lock);
    return popped;
}

static size_t random_size(uint64_t *rng)
{
    uint64_t r = next_random(rng) % 1000;
    uint64_t n = next_random(rng);
    if (r < 700)
        return 1 + n % 256;
    if (r < 900)
        return 257 + n % (8192 - 256);
    if (r < 998)
        return 8193 + n % (64 * 1024 - 8192);
    return (1u << 20) + n % (3u << 20); /* 1 MiB .. 4 MiB */
}

static void *allocate(struct worker *w, uint64_t *rng, size_t size)
{
    uint64_t how = next_random(rng) % 100;
    void *p;
    if (how < 60) {
        p = malloc(size);
        if (!p)
            fail("malloc(%zu) returned NULL", size);
    } else if (how < 75) {
        p = calloc(1 + size / 16, 16);
        if (!p)
            fail("calloc(%zu, 16) returned NULL", 1 + size / 16);
        size_t bytes = (1 + size / 16) * 16;
        const unsigned char *c = p;
        for (size_t i = 0; i < bytes; i++)
            if (c[i] != 0)
                fail("calloc(%zu, 16) = %p: byte %zu is %#x, not zero", 1 + size / 16, p, i, c[i]);
        w->counters.callocs++;
    } else if (how < 80) {
        p = realloc(NULL, size);
        if (!p)
            fail("realloc(NULL, %zu) returned NULL", size);
    } else if (how < 90) {
        size_t alignment = (size_t)1 << (3 + next_random(rng) % 18); /* 8 B .. 1 MiB */
        int err = posix_memalign(&p, alignment, size);
        if (err != 0)
            fail("posix_memalign(%zu, %zu) failed: %s", alignment, size, strerror(err));
        check_aligned(p, alignment, "posix_memalign");
        w->counters.aligned++;
    } else if (how < 95) {
        size_t alignment = (size_t)1 << (4 + next_random(rng) % 13); /* 16 B .. 64 KiB */
        size_t rounded = (size + alignment - 1) / alignment * alignment;
        p = aligned_alloc(alignment, rounded);
        if (!p)
            fail("aligned_alloc(%zu, %zu) returned NULL", alignment, rounded);
        check_aligned(p, alignment, "aligned_alloc");
        w->counters.aligned++;
    } else if (how < 99) {
        size_t alignment = (size_t)1 << (4 + next_random(rng) % 17); /* 16 B .. 1 MiB */
        p = memalign(alignment, size);
        if (!p)
            fail("memalign(%zu, %zu) returned NULL", alignment, size);
        check_aligned(p, alignment, "memalign");
        w->counters.aligned++;
    } else {
        p = valloc(size);
        if (!p)
            fail("valloc(%zu) returned NULL", size);
        check_aligned(p, (size_t)sysconf(_SC_PAGESIZE), "valloc");
        w->counters.aligned++;
    }
    check_aligned(p, 16 <= size ? 16 : 8, "malloc family (fundamental alignment)");
    w->counters.allocs++;
    if (size >= (1u << 20))
        w->counters.large++;
    return p;
}

/* Resizes a verified block and checks the old contents survived in the common prefix. */
static void resize(struct worker *w, struct block *b, size_t new_size)
{
    struct block old = *b;
    void *p = realloc(b->p, new_size);
    if (!p)
        fail("realloc(%p, %zu) returned NULL", (void *)old.p, new_size);
    check_aligned(p, 16 <= new_size ? 16 : 8, "realloc");
    size_t keep = old.size < new_size ? old.size : new_size;
    check_range(p, 0, keep, old.size, old.key, "after realloc");
    fill_block(b, p, new_size);
    w->counters.reallocs++;
}

static void release(struct worker *w, struct block *b, const char *what)
{
    check_block(b, what);
    free(opaque(b->p));
    b->p = NULL;
    w->counters.frees++;
}

/* Takes blocks other threads sent us: frees them, or adopts some into an empty slot. */
static void drain_inbox(struct worker *w, uint64_t *rng, int adopt)
{
    struct block b;
    while (queue_pop(&w->inbox, &b)) {
        check_block(&b, "received from another thread");
        struct block *slot = &w->slots[next_random(rng) % SLOTS];
        if (adopt && slot->p == NULL && next_random(rng) % 2) {
            *slot = b;
            w->counters.cross_adopted++;
        } else {
            free(opaque(b.p));
            w->counters.cross_freed++;
            w->counters.frees++;
        }
    }
}

static void *work(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = mix(global_seed * 1000 + (uint64_t)w->index) | 1;
    struct worker *next = &workers[(w->index + 1) % thread_count];
    for (uint64_t op = 0; op < w->ops; op++) {
        if (op % 64 == 0)
            drain_inbox(w, &rng, 1);
        struct block *b = &w->slots[next_random(&rng) % SLOTS];
        if (b->p == NULL) {
            size_t size = random_size(&rng);
            fill_block(b, allocate(w, &rng, size), size);
            continue;
        }
        check_block(b, "before use");
        uint64_t action = next_random(&rng) % 100;
        if (action < 50) {
            release(w, b, "before free");
        } else if (action < 75) {
            resize(w, b, random_size(&rng));
        } else {
            if (queue_push(&next->inbox, b)) {
                b->p = NULL;
                w->counters.cross_sent++;
            } else {
                release(w, b, "before free (queue full)");
            }
        }
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (w->slots[i].p)
            release(w, &w->slots[i], "at thread end");
    /* Others may still send until every thread has finished its operations. */
    atomic_fetch_add(&finished_ops, 1);
    while (atomic_load(&finished_ops) < thread_count) {
        drain_inbox(w, &rng, 0);
        sched_yield();
    }
    drain_inbox(w, &rng, 0);
    return NULL;
}

/* The C edge cases, checked once before the threads start. */
static void check_edge_cases(void)
{
    static volatile size_t huge = SIZE_MAX, zero = 0, two = 2;
    void *p, *q;

    p = malloc(zero);
    q = malloc(zero);
    if (!p || !q || p == q)
        fail("malloc(0) must return unique non-NULL pointers, got %p and %p", p, q);
    free(opaque(p));
    free(opaque(q));
    free(NULL);

    errno = 0;
    if ((p = malloc(huge)) != NULL || errno != ENOMEM)
        fail("malloc(SIZE_MAX) = %p errno %d, want NULL/ENOMEM", p, errno);
    errno = 0;
    if ((p = malloc(huge / 2 + 1)) != NULL || errno != ENOMEM)
        fail("malloc(PTRDIFF_MAX + 1) = %p errno %d, want NULL/ENOMEM", p, errno);
    errno = 0;
    if ((p = calloc(huge / 2 + 1, two)) != NULL || errno != ENOMEM)
        fail("calloc overflowing size_t = %p errno %d, want NULL/ENOMEM", p, errno);
    errno = 0;
    if ((p = reallocarray(NULL, huge / 2 + 1, two)) != NULL || errno != ENOMEM)
        fail("reallocarray overflowing size_t = %p errno %d, want NULL/ENOMEM", p, errno);
    q = malloc(100);
    errno = 0;
    if ((p = realloc(q, huge)) != NULL || errno != ENOMEM)
        fail("realloc(p, SIZE_MAX) = %p errno %d, want NULL/ENOMEM", p, errno);
    free(opaque(q)); /* a failed realloc leaves the block alone */

    if (posix_memalign(&p, 24, 16) != EINVAL)
        fail("posix_memalign with alignment 24 must fail with EINVAL");
    if (posix_memalign(&p, sizeof(void *) / 2, 16) != EINVAL)
        fail("posix_memalign with alignment < sizeof(void *) must fail with EINVAL");
    if (posix_memalign(&p, 4096, zero) != 0)
        fail("posix_memalign(4096, 0) failed");
    free(opaque(p));

    /* realloc(p, 0) frees and returns NULL (glibc), realloc(NULL, n) is malloc(n). */
    p = malloc(64);
    if ((q = realloc(p, zero)) != NULL)
        fail("realloc(p, 0) returned %p; Tally follows glibc: free and return NULL", q);
    p = realloc(NULL, 64);
    if (!p)
        fail("realloc(NULL, 64) returned NULL");
    free(opaque(p));

    long page = sysconf(_SC_PAGESIZE);
    p = pvalloc(1);
    if (!p || (uintptr_t)p % (size_t)page || malloc_usable_size(p) < (size_t)page)
        fail("pvalloc(1) = %p must be page-aligned with a whole page usable", p);
    free(opaque(p));

    /* A huge block grown and shrunk (mremap territory), contents kept. */
    size_t big = (size_t)64 << 20;
    struct block b;
    fill_block(&b, malloc(big), big);
    struct worker scratch = {0};
    resize(&scratch, &b, big * 2);
    check_block(&b, "after growing 64 MiB -> 128 MiB");
    resize(&scratch, &b, 1u << 20);
    check_block(&b, "after shrinking 128 MiB -> 1 MiB");
    resize(&scratch, &b, 10);
    free(opaque(b.p));

    if (malloc_trim(0) < 0)
        fail("malloc_trim(0) returned a negative value");
}

int main(int argc, char **argv)
{
    thread_count = argc > 1 ? atoi(argv[1]) : 8;
    uint64_t ops = argc > 2 ? strtoull(argv[2], NULL, 10) : 150000;
    global_seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
    if (thread_count < 1 || thread_count > MAX_THREADS)
        fail("thread count must be 1..%d", MAX_THREADS);

    check_edge_cases();

    workers = calloc((size_t)thread_count, sizeof *workers);
    if (!workers)
        fail("cannot allocate worker table");
    for (int i = 0; i < thread_count; i++) {
        workers[i].index = i;
        workers[i].ops = ops;
        pthread_mutex_init(&workers[i].inbox.lock, NULL);
    }
    for (int i = 0; i < thread_count; i++)
        if (pthread_create(&workers[i].thread, NULL, work, &workers[i]) != 0)
            fail("pthread_create failed");
    struct counters total = {0};
    for (int i = 0; i < thread_count; i++) {
        pthread_join(workers[i].thread, NULL);
        struct counters *c = &workers[i].counters;
        total.allocs += c->allocs;
        total.frees += c->frees;
        total.reallocs += c->reallocs;
        total.cross_sent += c->cross_sent;
        total.cross_freed += c->cross_freed;
        total.cross_adopted += c->cross_adopted;
        total.large += c->large;
        total.aligned += c->aligned;
        total.callocs += c->callocs;
    }
    for (int i = 0; i < thread_count; i++)
        if (workers[i].inbox.count != 0)
            fail("thread %d left %zu blocks in its inbox", i, workers[i].inbox.count);
    if (total.allocs != total.frees)
        fail("%llu allocations but %llu frees", (unsigned long long)total.allocs,
             (unsigned long long)total.frees);
    free(workers);
    printf("threads=%d allocs=%llu reallocs=%llu cross_thread_sent=%llu cross_thread_freed=%llu "
           "cross_thread_adopted=%llu large=%llu aligned=%llu callocs=%llu\n",
           thread_count, (unsigned long long)total.allocs, (unsigned long long)total.reallocs,
           (unsigned long long)total.cross_sent, (unsigned long long)total.cross_freed,
           (unsigned long long)total.cross_adopted, (unsigned long long)total.large,
           (unsigned long long)total.aligned, (unsigned long long)total.callocs);
    printf("stress: ok\n");
    return 0;
}
