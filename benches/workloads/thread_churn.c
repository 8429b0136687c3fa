/* thread_churn: threads created, allocating, exiting. Waves of short-lived threads (4 at a
 * time by default): each allocates a few thousand blocks of 16 B - 8 KiB, frees most of them
 * itself, and leaves a quarter alive for the main thread to free after it has exited (so the
 * allocator has to deal with frees into the cache or heap of a dead thread). Costs an allocator
 * pays per thread (creating a thread cache or arena, flushing it at exit) dominate.
 *
 * Usage: thread_churn [threads_total=12000] [threads_at_once=4] [allocs_per_thread=2000]
 * Output: workload=thread_churn ops=<mallocs> checksum=<hex> */
#include <pthread.h>

#include "common.h"

typedef struct {
    long id;
    long n;
    void **left;   /* blocks left behind for the main thread: n / 4 of them */
    uint64_t sum;
} job;

static void *worker(void *arg) {
    job *j = arg;
    rng_t r;
    rng_seed(&r, 100000 + (uint64_t)j->id);
    enum { LIVE = 64 };
    unsigned char *live[LIVE] = {0};
    uint64_t sum = 0;
    long kept = 0;
    for (long i = 0; i < j->n; i++) {
        size_t size = rng_next(&r) % 8 == 0 ? rng_range(&r, 1024, 8192) : rng_range(&r, 16, 256);
        unsigned char *p = xmalloc(size);
        p[0] = (unsigned char)i;
        p[size - 1] = (unsigned char)(i >> 8);
        sum += hash64(((uint64_t)j->id << 32) ^ ((uint64_t)i << 14) ^ size);
        if (i % 4 == 0) {
            j->left[kept++] = p;
            continue;
        }
        int s = (int)(rng_next(&r) % LIVE);
        free(live[s]);
        live[s] = p;
    }
    for (int s = 0; s < LIVE; s++)
        free(live[s]);
    j->sum = sum;
    return NULL;
}

int main(int argc, char **argv) {
    long total = arg_long(argc, argv, 1, 12000);
    long at_once = arg_long(argc, argv, 2, 4);
    long n = arg_long(argc, argv, 3, 2000);
    if (at_once > 256)
        die("at most 256 threads at once");
    pthread_t th[256];
    job jobs[256];
    for (long k = 0; k < at_once; k++)
        jobs[k].left = xmalloc((size_t)(n / 4 + 1) * sizeof(void *));
    uint64_t sum = 0;
    for (long started = 0; started < total; started += at_once) {
        long wave = total - started < at_once ? total - started : at_once;
        for (long k = 0; k < wave; k++) {
            jobs[k].id = started + k;
            jobs[k].n = n;
            if (pthread_create(&th[k], NULL, worker, &jobs[k]))
                die("pthread_create");
        }
        for (long k = 0; k < wave; k++) {
            pthread_join(th[k], NULL);
            sum += jobs[k].sum;
            for (long i = 0; i < (n + 3) / 4; i++) {
                unsigned char *p = jobs[k].left[i];
                if (p[0] != (unsigned char)(4 * i))
                    die("thread_churn: corrupt block");
                free(p);
            }
        }
    }
    for (long k = 0; k < at_once; k++)
        free(jobs[k].left);
    printf("workload=thread_churn ops=%llu checksum=%016llx\n", (unsigned long long)(total * n),
           (unsigned long long)sum);
    return 0;
}
