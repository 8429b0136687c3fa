/* prodcons_many: many-to-many producer/consumer. Each consumer has a bounded queue (queue.h);
 * every producer sends each batch of messages to a consumer it picks at random, so each
 * consumer frees blocks of every producer and each producer's blocks are freed by every
 * consumer, several threads freeing into one thread's memory at once. A producer allocates
 * messages of mixed sizes (7 in 8 of 16-512 B, 1 in 8 of 513 B-4 KiB, filled) and batches of
 * 1-32 message pointers (the batch is malloc'd too); the consumer checks every message, frees
 * it, then frees the batch. Every free is remote.
 *
 * Usage: prodcons_many [producers=2] [consumers=2] [messages_per_producer=2000000]
 *                      [queue_batches=64]
 * Output: workload=prodcons_many ops=<mallocs> checksum=<hex> (order-independent sum over
 * messages: which consumer frees a message never changes what it adds) */
#include "queue.h"

/* A consumer and its queue. */
typedef struct {
    queue q;
    uint64_t sum;
    char pad[64];
} consumer_t;

static long nproducers, nconsumers, nmsgs;
static consumer_t *consumers;
static uint64_t batches_sent[256];

static void *producer(void *arg) {
    long p = (long)arg;
    rng_t r;
    rng_seed(&r, 3000 + (uint64_t)p);
    batch *b = NULL;
    int want = 0;
    uint64_t nbatches = 0;
    for (long i = 0; i < nmsgs; i++) {
        if (!b) {
            b = batch_new();
            want = (int)rng_range(&r, 1, BATCH);
        }
        size_t size = rng_next(&r) % 8 == 0 ? rng_range(&r, 513, 4096) : rng_range(&r, 16, 512);
        b->m[b->n++] = msg_new((uint32_t)size, p, i);
        if (b->n == want || i == nmsgs - 1) {
            queue_push(&consumers[rng_next(&r) % (uint64_t)nconsumers].q, b);
            nbatches++;
            b = NULL;
        }
    }
    for (long c = 0; c < nconsumers; c++)
        queue_close(&consumers[c].q);
    batches_sent[p] = nbatches;
    return NULL;
}

static void *consumer(void *arg) {
    consumer_t *c = arg;
    uint64_t sum = 0;
    batch *b;
    while ((b = queue_pop(&c->q)))
        sum += batch_consume(b, 4096, "prodcons_many: corrupt message");
    c->sum = sum;
    return NULL;
}

int main(int argc, char **argv) {
    nproducers = arg_long(argc, argv, 1, 2);
    nconsumers = arg_long(argc, argv, 2, 2);
    nmsgs = arg_long(argc, argv, 3, 2000000);
    long qcap = arg_long(argc, argv, 4, 64);
    if (nproducers > 128 || nconsumers > 128)
        die("at most 128 producers and 128 consumers");
    consumers = calloc((size_t)nconsumers, sizeof(consumer_t));
    if (!consumers)
        die("calloc");
    pthread_t th[256];
    for (long c = 0; c < nconsumers; c++) {
        queue_init(&consumers[c].q, qcap, nproducers);
        if (pthread_create(&th[c], NULL, consumer, &consumers[c]))
            die("pthread_create");
    }
    for (long p = 0; p < nproducers; p++)
        if (pthread_create(&th[nconsumers + p], NULL, producer, (void *)p))
            die("pthread_create");
    for (long t = 0; t < nconsumers + nproducers; t++)
        pthread_join(th[t], NULL);
    uint64_t sum = 0, ops = (uint64_t)(nproducers * nmsgs);
    for (long c = 0; c < nconsumers; c++) {
        sum += consumers[c].sum;
        queue_destroy(&consumers[c].q);
    }
    for (long p = 0; p < nproducers; p++)
        ops += batches_sent[p];
    free(consumers);
    printf("workload=prodcons_many ops=%llu checksum=%016llx\n", (unsigned long long)ops,
           (unsigned long long)sum);
    return 0;
}
