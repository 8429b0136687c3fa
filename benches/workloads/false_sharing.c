/* false_sharing: does the allocator put small objects used by different threads on one cache
 * line? After Hoard's passive-false and active-false tests. Each round, the main thread
 * allocates one small object (8-32 B) per worker back to back and hands them out (passive: an
 * allocator that serves consecutive requests from one line makes the workers share it). Each
 * worker writes its object many times, frees it, then allocates small objects of its own and
 * writes each many times (active: an allocator that hands out blocks of one line to two
 * threads makes them share it). A good allocator shows the same time as the no-sharing case.
 *
 * Usage: false_sharing [threads=2] [rounds=2000] [writes_per_object=100000]
 * Output: workload=false_sharing ops=<mallocs> checksum=<hex> */
#include <pthread.h>

#include "common.h"

enum { OWN_OBJECTS = 8 };

static long nthreads, rounds, writes;
static pthread_barrier_t barrier;
static volatile uint64_t *handed[256];
static uint64_t sums[256];

static uint64_t hammer(volatile uint64_t *p, uint64_t seed) {
    *p = seed;
    for (long w = 0; w < writes; w++)
        *p = *p * 6364136223846793005ULL + 1442695040888963407ULL;
    return *p;
}

static void *worker(void *arg) {
    long t = (long)arg;
    rng_t r;
    rng_seed(&r, 500 + (uint64_t)t);
    uint64_t sum = 0;
    for (long i = 0; i < rounds; i++) {
        pthread_barrier_wait(&barrier); /* objects handed out */
        volatile uint64_t *p = handed[t];
        sum += hammer(p, (uint64_t)(t * rounds + i));
        free((void *)p);
        for (int k = 0; k < OWN_OBJECTS; k++) {
            volatile uint64_t *q = xmalloc(rng_range(&r, 8, 32));
            sum += hammer(q, rng_next(&r));
            free((void *)q);
        }
        pthread_barrier_wait(&barrier); /* round done */
    }
    sums[t] = sum;
    return NULL;
}

int main(int argc, char **argv) {
    nthreads = arg_long(argc, argv, 1, 2);
    rounds = arg_long(argc, argv, 2, 2000);
    writes = arg_long(argc, argv, 3, 100000);
    if (nthreads > 256)
        die("at most 256 threads");
    pthread_barrier_init(&barrier, NULL, (unsigned)nthreads + 1);
    pthread_t th[256];
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)t))
            die("pthread_create");
    rng_t r;
    rng_seed(&r, 9);
    for (long i = 0; i < rounds; i++) {
        for (long t = 0; t < nthreads; t++)
            handed[t] = xmalloc(rng_range(&r, 8, 32));
        pthread_barrier_wait(&barrier);
        pthread_barrier_wait(&barrier);
    }
    uint64_t sum = 0;
    for (long t = 0; t < nthreads; t++) {
        pthread_join(th[t], NULL);
        sum = mix(sum, sums[t]);
    }
    pthread_barrier_destroy(&barrier);
    printf("workload=false_sharing ops=%llu checksum=%016llx\n",
           (unsigned long long)(rounds * nthreads * (1 + OWN_OBJECTS)), (unsigned long long)sum);
    return 0;
}
