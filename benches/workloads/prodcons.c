/* prodcons: producer/consumer with every free remote. Producer i hands messages to consumer i
 * through a bounded queue protected by a mutex and two condition variables. A producer
 * allocates each message (16-512 B, filled) and batches of 32 message pointers (the batch
 * itself is malloc'd too); the consumer checks every message, frees it, then frees the batch.
 * So every block is freed by a thread other than the one that allocated it.
 *
 * Usage: prodcons [pairs=2] [messages_per_producer=8000000] [queue_batches=64]
 * Output: workload=prodcons ops=<mallocs> checksum=<hex> (order-independent sum over messages) */
#include "queue.h"

/* A producer and its consumer. */
typedef struct {
    queue q;
    uint64_t sum;
    long producer;
    char pad[64];
} pair;

static long npairs, nmsgs, qcap;
static pair *pairs;

static void *producer(void *arg) {
    pair *pr = arg;
    rng_t r;
    rng_seed(&r, 77 + (uint64_t)pr->producer);
    batch *b = NULL;
    for (long i = 0; i < nmsgs; i++) {
        if (!b)
            b = batch_new();
        b->m[b->n++] = msg_new((uint32_t)rng_range(&r, 16, 512), pr->producer, i);
        if (b->n == BATCH) {
            queue_push(&pr->q, b);
            b = NULL;
        }
    }
    if (b)
        queue_push(&pr->q, b);
    queue_close(&pr->q);
    return NULL;
}

static void *consumer(void *arg) {
    pair *pr = arg;
    uint64_t sum = 0;
    batch *b;
    while ((b = queue_pop(&pr->q)))
        sum += batch_consume(b, 512, "prodcons: corrupt message");
    pr->sum = sum;
    return NULL;
}

int main(int argc, char **argv) {
    npairs = arg_long(argc, argv, 1, 2);
    nmsgs = arg_long(argc, argv, 2, 8000000);
    qcap = arg_long(argc, argv, 3, 64);
    if (npairs > 128)
        die("at most 128 pairs");
    pairs = calloc((size_t)npairs, sizeof(pair));
    if (!pairs)
        die("calloc");
    pthread_t th[256];
    for (long i = 0; i < npairs; i++) {
        pair *pr = &pairs[i];
        queue_init(&pr->q, qcap, 1);
        pr->producer = i;
        if (pthread_create(&th[2 * i], NULL, consumer, pr) ||
            pthread_create(&th[2 * i + 1], NULL, producer, pr))
            die("pthread_create");
    }
    uint64_t sum = 0;
    for (long i = 0; i < 2 * npairs; i++)
        pthread_join(th[i], NULL);
    for (long i = 0; i < npairs; i++) {
        sum += pairs[i].sum;
        queue_destroy(&pairs[i].q);
    }
    free(pairs);
    long batches = (nmsgs + BATCH - 1) / BATCH;
    printf("workload=prodcons ops=%llu checksum=%016llx\n",
           (unsigned long long)(npairs * (nmsgs + batches)), (unsigned long long)sum);
    return 0;
}
