/* generations_rss: peak RSS of generations of threads that hand blocks on (issue 13).
 *
 *   generations_rss [threads_at_once=8] [generations=24] [scale=40]
 *
 * In the manner of mimalloc-bench's mstress: `threads_at_once` threads are alive at any time.
 * Each allocates mixed small blocks (8 B to 1 KiB in powers of two, 1% of them 16 times larger):
 * transient blocks, most freed again soon by the thread itself and some swapped through a shared
 * exchange array with whatever thread is running (so other threads free them), and retained
 * blocks kept for the thread's whole life. When it is done, a thread puts a share of its retained
 * blocks in the inbox of the next slot and frees the rest; the thread that replaces it (the
 * next generation, started as soon as it is joined) first frees what its inbox holds, blocks
 * allocated by a thread of the previous generation that has exited by now.
 *
 * At any moment the program holds about `threads_at_once` threads' working sets plus one
 * generation's hand-offs; an allocator that keeps exited threads' caches, leaves their arenas
 * unused, or keeps slabs half full with blocks that wait in other threads' caches shows a peak
 * RSS well above that. Prints `peak_rss_kib=` (VmHWM), `final_rss_kib=` (after everything is
 * freed) and a checksum that depends only on the arguments. Blocks carry a tag at both ends,
 * checked before every free.
 *
 * Build: cc -O2 -pthread -o /tmp/generations_rss benches/programs/generations_rss.c */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>

#include "../workloads/common.h"

#define MAX_AT_ONCE 64
#define EXCHANGE 1000

static long threads_at_once, generations, scale;
static _Atomic(unsigned char *) exchange[EXCHANGE];

/* What a thread hands to the next generation in the next slot. */
struct inbox {
    pthread_mutex_t lock;
    unsigned char **blocks;
    long count, cap;
};
static struct inbox inboxes[MAX_AT_ONCE];

struct job {
    long generation, slot;
    uint64_t sum;
};

/* Blocks hold their size in the first word and a tag in the last one. */
static unsigned char *tagged(size_t size) {
    unsigned char *p = xmalloc(size);
    uint64_t tag = hash64((uintptr_t)p ^ size);
    memcpy(p, &size, 8);
    memcpy(p + size - 8, &tag, 8);
    return p;
}

static void check_and_free(unsigned char *p) {
    if (!p)
        return;
    size_t size;
    uint64_t tag;
    memcpy(&size, p, 8);
    memcpy(&tag, p + size - 8, 8);
    if (size < 8 || size > 1 << 20 || tag != hash64((uintptr_t)p ^ size))
        die("generations_rss: corrupt block");
    free(p);
}

static size_t pick_size(rng_t *r, unsigned max_shift) {
    size_t size = (size_t)8 << (rng_next(r) % max_shift);
    if (rng_next(r) % 100 == 0)
        size *= 16;
    return size < 16 ? 16 : size;
}

static void *thread_main(void *arg) {
    struct job *job = arg;
    rng_t r;
    rng_seed(&r, (uint64_t)job->generation * 1000 + (uint64_t)job->slot);
    uint64_t sum = 0;

    /* The previous generation's hand-offs to this slot. */
    struct inbox *in = &inboxes[job->slot];
    pthread_mutex_lock(&in->lock);
    for (long i = 0; i < in->count; i++)
        check_and_free(in->blocks[i]);
    in->count = 0;
    pthread_mutex_unlock(&in->lock);

    long allocs = 100 * scale * (job->slot % 4 + 1); /* some threads do more */
    long retain = allocs / 2;
    unsigned char **data = xmalloc((size_t)allocs * sizeof *data);
    unsigned char **kept = xmalloc((size_t)retain * sizeof *kept);
    long data_top = 0, kept_top = 0;
    while (data_top < allocs || kept_top < retain) {
        if (kept_top == retain || (data_top < allocs && rng_next(&r) % 2 == 0)) {
            size_t size = pick_size(&r, 5);
            sum += hash64(size ^ (uint64_t)data_top << 20);
            data[data_top++] = tagged(size);
        } else {
            size_t size = pick_size(&r, 7);
            sum += hash64(size ^ (uint64_t)kept_top << 40);
            kept[kept_top++] = tagged(size);
        }
        if (data_top > 0 && rng_next(&r) % 100 < 66) {
            long i = (long)(rng_next(&r) % (uint64_t)data_top);
            check_and_free(data[i]);
            data[i] = NULL;
        }
        if (data_top > 0 && rng_next(&r) % 100 < 25) {
            long i = (long)(rng_next(&r) % (uint64_t)data_top);
            data[i] = atomic_exchange(&exchange[rng_next(&r) % EXCHANGE], data[i]);
        }
    }
    for (long i = 0; i < data_top; i++)
        check_and_free(data[i]);
    free(data);

    /* A quarter of the retained blocks go on to the next slot's next thread. */
    struct inbox *out = &inboxes[(job->slot + 1) % threads_at_once];
    pthread_mutex_lock(&out->lock);
    for (long i = 0; i < kept_top; i++) {
        if (i % 4 == 0 && out->count < out->cap)
            out->blocks[out->count++] = kept[i];
        else
            check_and_free(kept[i]);
    }
    pthread_mutex_unlock(&out->lock);
    free(kept);
    job->sum = sum;
    return NULL;
}

static long status_kib(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n))
            v = strtol(line + n, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

int main(int argc, char **argv) {
    threads_at_once = arg_long(argc, argv, 1, 8);
    generations = arg_long(argc, argv, 2, 24);
    scale = arg_long(argc, argv, 3, 40);
    if (threads_at_once > MAX_AT_ONCE)
        die("at most 64 threads at once");
    for (long k = 0; k < threads_at_once; k++) {
        pthread_mutex_init(&inboxes[k].lock, NULL);
        inboxes[k].cap = 100 * scale * 4 / 2 / 4 + 1;
        inboxes[k].blocks = xmalloc((size_t)inboxes[k].cap * sizeof(void *));
    }
    pthread_t threads[MAX_AT_ONCE];
    struct job jobs[MAX_AT_ONCE];
    uint64_t sum = 0;
    /* Start the first generation, then replace each thread as it is joined, in turn: the
     * generations overlap, each slot one generation ahead of or behind its neighbours. */
    for (long k = 0; k < threads_at_once; k++) {
        jobs[k] = (struct job){0, k, 0};
        if (pthread_create(&threads[k], NULL, thread_main, &jobs[k]))
            die("pthread_create");
    }
    for (long g = 1; g <= generations; g++) {
        for (long k = 0; k < threads_at_once; k++) {
            pthread_join(threads[k], NULL);
            sum += jobs[k].sum;
            if (g == generations)
                continue;
            jobs[k] = (struct job){g, k, 0};
            if (pthread_create(&threads[k], NULL, thread_main, &jobs[k]))
                die("pthread_create");
        }
    }
    for (long k = 0; k < threads_at_once; k++) {
        for (long i = 0; i < inboxes[k].count; i++)
            check_and_free(inboxes[k].blocks[i]);
        free(inboxes[k].blocks);
    }
    for (long i = 0; i < EXCHANGE; i++)
        check_and_free(atomic_exchange(&exchange[i], NULL));
    printf("workload=generations_rss ops=%ld checksum=%016llx peak_rss_kib=%ld final_rss_kib=%ld\n",
           threads_at_once * generations, (unsigned long long)sum, status_kib("VmHWM:"),
           status_kib("VmRSS:"));
    return 0;
}
