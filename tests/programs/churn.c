/* Thread churn, for Tally's acceptance tests.
 *
 *   churn [threads=5000] [concurrent=16]
 *
 * Starts `threads` short-lived threads in waves of `concurrent`. Each thread first frees the
 * blocks the previous threads left in a shared hand-off list (checking their tags), then
 * allocates and frees about a megabyte in ~1000 blocks of mixed sizes, and finally leaves
 * HANDOFF_PER_THREAD of its blocks behind for a later thread to free.
 *
 * A thread's cache and any per-thread allocator state must be given back when the thread exits:
 * if it is not, memory grows with the number of threads ever started, not with the number alive.
 * The program prints VmRSS after the first MEASURE_AFTER threads (the allocator is warm by then)
 * and at the end, as `rss_after_warmup_kib=<n> rss_final_kib=<n>`; the test bounds their ratio.
 * Blocks carry a tag at both ends, checked before free. Prints `churn: ok` on success. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEASURE_AFTER 500
#define HANDOFF_PER_THREAD 8
#define HANDOFF_CAPACITY 4096
#define SMALL_BLOCKS 1000
#define MEDIUM_BLOCKS 32

static void fail(const char *message, const void *p, size_t size)
{
    fprintf(stderr, "churn: FAILED: %s (block %p size %zu)\n", message, p, size);
    exit(1);
}

static uint64_t tag_of(const void *p, size_t size)
{
    uint64_t x = (uintptr_t)p * 0x9E3779B97F4A7C15ull ^ size;
    return x ^ (x >> 31);
}

struct block {
    unsigned char *p;
    size_t size;
};

static struct block tagged(size_t size)
{
    if (size < 16)
        size = 16;
    struct block b = {malloc(size), size};
    if (!b.p)
        fail("malloc returned NULL", NULL, size);
    uint64_t tag = tag_of(b.p, size);
    memcpy(b.p, &tag, 8);
    memcpy(b.p + size - 8, &tag, 8);
    return b;
}

static void check_and_free(struct block b)
{
    uint64_t tag = tag_of(b.p, b.size), head, tail;
    memcpy(&head, b.p, 8);
    memcpy(&tail, b.p + b.size - 8, 8);
    if (head != tag || tail != tag)
        fail("tag overwritten", b.p, b.size);
    free(b.p);
}

static pthread_mutex_t handoff_lock = PTHREAD_MUTEX_INITIALIZER;
static struct block handoff[HANDOFF_CAPACITY];
static size_t handoff_count;

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

static void *thread_main(void *arg)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull * ((uint64_t)(uintptr_t)arg + 1);

    /* Free what earlier threads left behind: memory owned by threads that have exited. */
    struct block inherited[HANDOFF_CAPACITY];
    pthread_mutex_lock(&handoff_lock);
    size_t count = handoff_count;
    memcpy(inherited, handoff, count * sizeof *handoff);
    handoff_count = 0;
    pthread_mutex_unlock(&handoff_lock);
    for (size_t i = 0; i < count; i++)
        check_and_free(inherited[i]);

    struct block small[SMALL_BLOCKS];
    struct block medium[MEDIUM_BLOCKS];
    for (size_t i = 0; i < SMALL_BLOCKS; i++)
        small[i] = tagged(16 + next_random(&rng) % 1009);
    for (size_t i = 0; i < MEDIUM_BLOCKS; i++)
        medium[i] = tagged(1024 + next_random(&rng) % (32 * 1024));
    struct block large = tagged((256 << 10) + next_random(&rng) % 4096);

    /* Free in a scrambled order, keeping the first few for the hand-off. */
    for (size_t i = 0; i < SMALL_BLOCKS; i++) {
        size_t j = i + next_random(&rng) % (SMALL_BLOCKS - i);
        struct block t = small[i];
        small[i] = small[j];
        small[j] = t;
    }
    for (size_t i = HANDOFF_PER_THREAD; i < SMALL_BLOCKS; i++)
        check_and_free(small[i]);
    for (size_t i = 0; i < MEDIUM_BLOCKS; i++)
        check_and_free(medium[i]);
    check_and_free(large);

    pthread_mutex_lock(&handoff_lock);
    for (size_t i = 0; i < HANDOFF_PER_THREAD; i++) {
        if (handoff_count < HANDOFF_CAPACITY)
            handoff[handoff_count++] = small[i];
        else
            check_and_free(small[i]);
    }
    pthread_mutex_unlock(&handoff_lock);
    return NULL;
}

static long rss_kib(void)
{
    FILE *status = fopen("/proc/self/status", "r");
    if (!status)
        fail("cannot open /proc/self/status", NULL, 0);
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, status))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(status);
    if (kib < 0)
        fail("no VmRSS in /proc/self/status", NULL, 0);
    return kib;
}

int main(int argc, char **argv)
{
    int total = argc > 1 ? atoi(argv[1]) : 5000;
    int concurrent = argc > 2 ? atoi(argv[2]) : 16;
    if (total < MEASURE_AFTER || concurrent < 1 || concurrent > 256) {
        fprintf(stderr, "usage: churn [threads>=%d] [concurrent 1..256]\n", MEASURE_AFTER);
        return 2;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* A thread uses about 80 KiB of stack (hand-off copy and block tables). */
    pthread_attr_setstacksize(&attr, 256 << 10);

    long warm = -1;
    pthread_t threads[256];
    for (int started = 0; started < total;) {
        int wave = total - started < concurrent ? total - started : concurrent;
        for (int i = 0; i < wave; i++)
            if (pthread_create(&threads[i], &attr, thread_main, (void *)(uintptr_t)(started + i)))
                fail("pthread_create failed", NULL, 0);
        for (int i = 0; i < wave; i++)
            pthread_join(threads[i], NULL);
        started += wave;
        if (warm < 0 && started >= MEASURE_AFTER)
            warm = rss_kib();
    }
    long final = rss_kib();
    for (size_t i = 0; i < handoff_count; i++)
        check_and_free(handoff[i]);
    printf("threads=%d concurrent=%d rss_after_warmup_kib=%ld rss_final_kib=%ld\n", total,
           concurrent, warm, final);
    printf("churn: ok\n");
    return 0;
}
