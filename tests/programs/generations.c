/* Generations of threads that hand blocks on, for Tally's acceptance tests (issue 13).
 *
 *   generations [generations=9] [big_mib=32]
 *
 * Each generation is SLOTS threads alive at once (a barrier holds each one after its first
 * allocation until all have made theirs, so each gets its own arena). That first allocation is
 * large: a thread that takes a large block before its cache must be counted once in one arena,
 * or its arena never looks unused again. One of them, a different
 * slot in each generation, is big: it allocates `big_mib` MiB of mixed small blocks (16 B -
 * 1 KiB); the others allocate a sixteenth of that. Each thread first frees what the previous
 * generation's thread of the slot before it handed on (blocks of another thread's arena, that
 * thread gone by now), then allocates its blocks, frees three quarters of them in a shuffled
 * order, hands the last quarter on to the next generation's thread of the next slot, and exits.
 * The main thread joins a whole generation before it starts the next one.
 *
 * At any time the program holds at most one big thread's blocks plus the quarter the previous
 * big thread handed on: about 1.3 × big_mib. An allocator that keeps what an exited thread
 * freed resident in an arena that only a later thread of that arena can reuse holds, after a
 * few generations, a big thread's worth in every arena the big slot passed through.
 *
 * Prints `peak_rss_kib=<VmHWM> final_rss_kib=<VmRSS> big_kib=<n>` and `generations: ok`.
 * Blocks carry a tag at both ends, checked before every free. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PROGRAM "generations"
#include "check.h"

#define SLOTS 3
#define FIRST_BYTES (64 << 10)

struct handoff {
    unsigned char **blocks;
    size_t count;
};

struct job {
    long generation, slot;
    size_t bytes;
    struct handoff *in, *out;
};

static pthread_barrier_t started;

static uint64_t next(uint64_t *state)
{
    uint64_t x = *state += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t tag_of(const unsigned char *p, size_t size)
{
    uint64_t x = (uintptr_t)p * 0x9E3779B97F4A7C15ull ^ size;
    return x ^ (x >> 29);
}

/* A block of `size` bytes (at least 16): its size in the first word, a tag in the last. */
static unsigned char *tagged(size_t size)
{
    unsigned char *p = malloc(size);
    if (!p)
        fail("malloc(%zu) returned NULL", size);
    uint64_t tag = tag_of(p, size);
    memcpy(p, &size, 8);
    memcpy(p + size - 8, &tag, 8);
    return opaque(p);
}

static void check_and_free(unsigned char *p)
{
    size_t size;
    uint64_t tag;
    memcpy(&size, p, 8);
    if (size < 16 || size > 1024)
        fail("block %p: size word %zu overwritten", (void *)p, size);
    memcpy(&tag, p + size - 8, 8);
    if (tag != tag_of(p, size))
        fail("block %p (%zu bytes): tag overwritten", (void *)p, size);
    free(p);
}

static void *thread_main(void *arg)
{
    struct job *job = arg;
    uint64_t rng = (uint64_t)job->generation << 8 | (uint64_t)job->slot;
    /* The first allocation, a large block, gives the thread its arena; wait until every
     * thread of the generation has one. */
    unsigned char *first = malloc(FIRST_BYTES);
    if (!first)
        fail("malloc(%d) returned NULL", FIRST_BYTES);
    memset(opaque(first), 1, FIRST_BYTES);
    int rc = pthread_barrier_wait(&started);
    if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD)
        fail("pthread_barrier_wait: %d", rc);
    free(first);

    for (size_t i = 0; i < job->in->count; i++)
        check_and_free(job->in->blocks[i]);
    free(job->in->blocks);
    job->in->blocks = NULL;
    job->in->count = 0;

    size_t cap = job->bytes / 16 + 1, n = 0, total = 0;
    unsigned char **blocks = malloc(cap * sizeof *blocks);
    if (!blocks)
        fail("malloc of the block array");
    while (total < job->bytes && n < cap) {
        size_t size = (size_t)16 << (next(&rng) % 7); /* 16 B - 1 KiB */
        blocks[n++] = tagged(size);
        total += size;
    }
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(next(&rng) % (i + 1));
        unsigned char *t = blocks[i];
        blocks[i] = blocks[j];
        blocks[j] = t;
    }
    size_t keep = n / 4;
    for (size_t i = keep; i < n; i++)
        check_and_free(blocks[i]);
    job->out->blocks = realloc(blocks, (keep + 1) * sizeof *blocks);
    if (!job->out->blocks)
        fail("realloc of the block array");
    job->out->count = keep;
    return NULL;
}

static long status_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        fail("cannot open /proc/self/status");
    char line[256];
    long v = -1;
    size_t len = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, len))
            v = strtol(line + len, NULL, 10);
    fclose(f);
    if (v < 0)
        fail("no %s in /proc/self/status", key);
    return v;
}

int main(int argc, char **argv)
{
    long generations = argc > 1 ? atol(argv[1]) : 9;
    long big_mib = argc > 2 ? atol(argv[2]) : 32;
    if (generations < 1 || big_mib < 1)
        fail("usage: generations [generations] [big_mib]");
    size_t big = (size_t)big_mib << 20;
    if (pthread_barrier_init(&started, NULL, SLOTS))
        fail("pthread_barrier_init");
    /* inbox[k]: what the next generation's thread of slot k frees first. Two sets, so a
     * generation reads one while it fills the other. */
    struct handoff inbox[2][SLOTS];
    memset(inbox, 0, sizeof inbox);
    for (long g = 0; g < generations; g++) {
        pthread_t threads[SLOTS];
        struct job jobs[SLOTS];
        for (long k = 0; k < SLOTS; k++) {
            jobs[k] = (struct job){
                .generation = g,
                .slot = k,
                .bytes = k == g % SLOTS ? big : big / 16,
                .in = &inbox[g % 2][k],
                .out = &inbox[(g + 1) % 2][(k + 1) % SLOTS],
            };
            if (pthread_create(&threads[k], NULL, thread_main, &jobs[k]))
                fail("pthread_create");
        }
        for (long k = 0; k < SLOTS; k++)
            if (pthread_join(threads[k], NULL))
                fail("pthread_join");
    }
    long peak = status_kib("VmHWM:");
    for (long k = 0; k < SLOTS; k++) {
        struct handoff *h = &inbox[generations % 2][k];
        for (size_t i = 0; i < h->count; i++)
            check_and_free(h->blocks[i]);
        free(h->blocks);
    }
    printf("peak_rss_kib=%ld final_rss_kib=%ld big_kib=%zu\n", peak, status_kib("VmRSS:"),
           big >> 10);
    printf("generations: ok\n");
    return 0;
}
