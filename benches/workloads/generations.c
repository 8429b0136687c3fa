/* generations: generations of threads handing memory to the next (after mimalloc-bench's
 * mstress). A generation is a wave of threads running at once (4 by default); when all of them
 * have exited the next generation starts. Each thread allocates blocks of mixed sizes (51 in 64
 * of 8-256 B, 9 in 64 of 257 B-2 KiB, 4 in 64 of 4-64 KiB: 2.4 KiB on average), fills them
 * (the large ones a byte a page), and does three things with them:
 *   - three blocks in four replace a random block of its own working set (a quarter as many
 *     slots as it allocates blocks), which it frees;
 *   - every fourth block goes into the hand-off array for the next generation;
 *   - for every fourth block it also frees one block the previous generation handed it: thread
 *     i takes the hand-off slots k with k % threads == i, so its blocks come from every thread of
 *     the previous generation, which have all exited.
 * Then it frees its working set and exits. So at any time memory is held by the running threads'
 * working sets, by the blocks they are handing on and by those handed to them, and much of it is
 * freed by a thread other than the one that allocated it, after that one exited: how much memory
 * an allocator keeps for dead threads and for remote frees shows in the peak RSS.
 *
 * Usage: generations [generations=80] [threads_per_generation=4] [blocks_per_thread=10000]
 * Output: workload=generations ops=<mallocs> checksum=<hex>
 * The checksum sums a hash of every block allocated and what every block holds when it is
 * freed; each thread's part depends only on its seed and on what the previous generation (all
 * exited) handed it, so not on scheduling. */
#include <pthread.h>

#include "common.h"

typedef struct {
    uint32_t size;
    uint32_t tag;
} hdr;

typedef struct {
    long generation, index;
    uint64_t sum;
} job;

static long ngenerations, nthreads, nblocks;
static hdr **handed_in, **handed_out; /* nthreads * (nblocks / 4) slots each */

static size_t pick_size(rng_t *r) {
    uint64_t c = rng_next(r) % 64;
    if (c < 4)
        return rng_range(r, 4096, 65536);
    if (c < 13)
        return rng_range(r, 257, 2048);
    return rng_range(r, 8, 256);
}

static hdr *new_block(rng_t *r, uint64_t seed, long n) {
    size_t size = pick_size(r);
    hdr *h = xmalloc(size);
    h->size = (uint32_t)size;
    h->tag = (uint32_t)hash64((seed << 32) ^ (uint64_t)n);
    unsigned char *p = (unsigned char *)h;
    if (size <= 2048) {
        memset(h + 1, (unsigned char)h->tag, size - sizeof(hdr));
    } else {
        /* A large buffer partly used: one byte a page, so every page is resident but the
         * workload is not a memset benchmark. */
        for (size_t k = 4096; k < size; k += 4096)
            p[k] = (unsigned char)k;
        p[size - 1] = (unsigned char)h->tag;
    }
    return h;
}

/* Checks a block, frees it, and returns what its contents add to the checksum. */
static uint64_t check_and_free(hdr *h) {
    if (!h)
        return 0;
    unsigned char *p = (unsigned char *)h;
    if (h->size < sizeof(hdr) || h->size > 65536 ||
        (h->size > sizeof(hdr) && p[h->size - 1] != (unsigned char)h->tag))
        die("generations: corrupt block");
    uint64_t v = (uint64_t)h->tag + h->size + p[h->size - 1];
    free(h);
    return v;
}

static void *worker(void *arg) {
    job *j = arg;
    uint64_t seed = (uint64_t)(j->generation * nthreads + j->index);
    rng_t r;
    rng_seed(&r, 500000 + seed);
    long quarter = nblocks / 4, nlive = quarter > 0 ? quarter : 1;
    hdr **live = calloc((size_t)nlive, sizeof(hdr *));
    if (!live)
        die("calloc");
    uint64_t sum = 0;
    long in = j->index, out = j->index * quarter;
    for (long n = 0; n < nblocks; n++) {
        hdr *h = new_block(&r, seed, n);
        sum += hash64(((uint64_t)h->tag << 17) ^ h->size);
        if (n % 4 == 3 && n / 4 < quarter) {
            handed_out[out++] = h;
            if (in < nthreads * quarter) {
                sum += check_and_free(handed_in[in]);
                handed_in[in] = NULL;
                in += nthreads;
            }
            continue;
        }
        long s = (long)(rng_next(&r) % (uint64_t)nlive);
        sum += check_and_free(live[s]);
        live[s] = h;
    }
    for (long s = 0; s < nlive; s++)
        sum += check_and_free(live[s]);
    free(live);
    j->sum = sum;
    return NULL;
}

int main(int argc, char **argv) {
    ngenerations = arg_long(argc, argv, 1, 80);
    nthreads = arg_long(argc, argv, 2, 4);
    nblocks = arg_long(argc, argv, 3, 10000);
    if (nthreads > 256)
        die("at most 256 threads per generation");
    size_t slots = (size_t)(nthreads * (nblocks / 4)) + 1;
    handed_in = calloc(slots, sizeof(hdr *));
    handed_out = calloc(slots, sizeof(hdr *));
    if (!handed_in || !handed_out)
        die("calloc");
    pthread_t th[256];
    job jobs[256];
    uint64_t sum = 0;
    for (long g = 0; g < ngenerations; g++) {
        for (long i = 0; i < nthreads; i++) {
            jobs[i] = (job){.generation = g, .index = i};
            if (pthread_create(&th[i], NULL, worker, &jobs[i]))
                die("pthread_create");
        }
        for (long i = 0; i < nthreads; i++) {
            pthread_join(th[i], NULL);
            sum += jobs[i].sum;
        }
        hdr **t = handed_in;
        handed_in = handed_out;
        handed_out = t;
    }
    /* What the last generation handed on, and nothing else, is still allocated. */
    for (size_t k = 0; k < slots; k++)
        sum += check_and_free(handed_in[k]);
    free(handed_in);
    free(handed_out);
    printf("workload=generations ops=%llu checksum=%016llx\n",
           (unsigned long long)(ngenerations * nthreads * nblocks), (unsigned long long)sum);
    return 0;
}
