/* larson: a server simulation after Larson and Krishnan's benchmark. Threads work in pairs; each
 * pair shares an array of slots. Every step a thread picks a random slot, puts a freshly
 * allocated block (16-1024 B, filled) into it with an atomic exchange, and frees the block it
 * took out, which its partner allocated about half the time: frees are a mix of local and remote.
 * Each block is checked before it is freed.
 *
 * Usage: larson [threads=4] [steps_per_thread=25000000] [slots_per_pair=2000]
 * Output: workload=larson ops=<mallocs> checksum=<hex>
 * The checksum sums a hash of every block's (thread, step, size), so it does not depend on the
 * interleaving of the threads. */
#include <pthread.h>

#include "common.h"

typedef struct {
    uint32_t size;
    uint32_t tag; /* hash of the contents, checked before free */
} hdr;

static long nthreads, steps, nslots;
static void **arrays; /* nthreads/2 (rounded up) arrays of nslots */
static uint64_t sums[256];

static void check_and_free(void *p) {
    if (!p)
        return;
    hdr *h = p;
    unsigned char *b = p;
    if (h->size < sizeof(hdr) || h->size > 1024 || b[h->size - 1] != (unsigned char)h->tag)
        die("larson: corrupt block");
    free(p);
}

static void *worker(void *arg) {
    long t = (long)arg;
    void **slots = arrays + (t / 2) * nslots;
    rng_t r;
    rng_seed(&r, 1000 + (uint64_t)t);
    uint64_t sum = 0;
    for (long i = 0; i < steps; i++) {
        uint32_t size = (uint32_t)rng_range(&r, 16, 1024);
        hdr *h = xmalloc(size);
        h->size = size;
        h->tag = (uint32_t)hash64(((uint64_t)t << 40) ^ ((uint64_t)i << 11) ^ size);
        memset(h + 1, (unsigned char)h->tag, size - sizeof(hdr));
        sum += h->tag;
        void *old = __atomic_exchange_n(&slots[rng_next(&r) % nslots], h, __ATOMIC_ACQ_REL);
        check_and_free(old);
    }
    sums[t] = sum;
    return NULL;
}

int main(int argc, char **argv) {
    nthreads = arg_long(argc, argv, 1, 4);
    steps = arg_long(argc, argv, 2, 25000000);
    nslots = arg_long(argc, argv, 3, 2000);
    if (nthreads > 256)
        die("at most 256 threads");
    long npairs = (nthreads + 1) / 2;
    arrays = calloc((size_t)(npairs * nslots), sizeof(void *));
    if (!arrays)
        die("calloc");
    pthread_t th[256];
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)t))
            die("pthread_create");
    uint64_t sum = 0;
    for (long t = 0; t < nthreads; t++) {
        pthread_join(th[t], NULL);
        sum += sums[t];
    }
    for (long i = 0; i < npairs * nslots; i++)
        check_and_free(arrays[i]);
    free(arrays);
    printf("workload=larson ops=%llu checksum=%016llx\n",
           (unsigned long long)(nthreads * steps), (unsigned long long)sum);
    return 0;
}
