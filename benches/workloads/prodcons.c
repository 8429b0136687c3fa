/* prodcons: producer/consumer with every free remote. Producer i hands messages to consumer i
 * through a bounded queue protected by a mutex and two condition variables. A producer
 * allocates each message (16-512 B, filled) and batches of 32 message pointers (the batch
 * itself is malloc'd too); the consumer checks every message, frees it, then frees the batch.
 * So every block is freed by a thread other than the one that allocated it.
 *
 * Usage: prodcons [pairs=2] [messages_per_producer=8000000] [queue_batches=64]
 * Output: workload=prodcons ops=<mallocs> checksum=<hex> (order-independent sum over messages) */
#include <pthread.h>

#include "common.h"

enum { BATCH = 32 };

typedef struct {
    uint32_t size;
    uint32_t tag;
} msg;

typedef struct {
    int n;
    msg *m[BATCH];
} batch;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    batch **ring;
    long cap, head, count;
    int done;
    uint64_t sum;
    long producer;
    char pad[64];
} queue;

static long npairs, nmsgs, qcap;
static queue *queues;

static void push(queue *q, batch *b) {
    pthread_mutex_lock(&q->lock);
    while (q->count == q->cap)
        pthread_cond_wait(&q->not_full, &q->lock);
    q->ring[(q->head + q->count) % q->cap] = b;
    q->count++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

static batch *pop(queue *q) {
    pthread_mutex_lock(&q->lock);
    while (q->count == 0 && !q->done)
        pthread_cond_wait(&q->not_empty, &q->lock);
    batch *b = NULL;
    if (q->count) {
        b = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->lock);
    return b;
}

static void *producer(void *arg) {
    queue *q = arg;
    rng_t r;
    rng_seed(&r, 77 + (uint64_t)q->producer);
    batch *b = NULL;
    for (long i = 0; i < nmsgs; i++) {
        if (!b) {
            b = xmalloc(sizeof *b);
            b->n = 0;
        }
        uint32_t size = (uint32_t)rng_range(&r, 16, 512);
        msg *m = xmalloc(size);
        m->size = size;
        m->tag = (uint32_t)hash64(((uint64_t)q->producer << 40) ^ (uint64_t)i);
        memset(m + 1, (unsigned char)m->tag, size - sizeof(msg));
        b->m[b->n++] = m;
        if (b->n == BATCH) {
            push(q, b);
            b = NULL;
        }
    }
    if (b)
        push(q, b);
    pthread_mutex_lock(&q->lock);
    q->done = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

static void *consumer(void *arg) {
    queue *q = arg;
    uint64_t sum = 0;
    batch *b;
    while ((b = pop(q))) {
        for (int k = 0; k < b->n; k++) {
            msg *m = b->m[k];
            unsigned char *p = (unsigned char *)m;
            if (m->size < sizeof(msg) || m->size > 512 || p[m->size - 1] != (unsigned char)m->tag)
                die("prodcons: corrupt message");
            sum += m->tag + m->size;
            free(m);
        }
        free(b);
    }
    q->sum = sum;
    return NULL;
}

int main(int argc, char **argv) {
    npairs = arg_long(argc, argv, 1, 2);
    nmsgs = arg_long(argc, argv, 2, 8000000);
    qcap = arg_long(argc, argv, 3, 64);
    if (npairs > 128)
        die("at most 128 pairs");
    queues = calloc((size_t)npairs, sizeof(queue));
    if (!queues)
        die("calloc");
    pthread_t th[256];
    for (long i = 0; i < npairs; i++) {
        queue *q = &queues[i];
        pthread_mutex_init(&q->lock, NULL);
        pthread_cond_init(&q->not_empty, NULL);
        pthread_cond_init(&q->not_full, NULL);
        q->ring = xmalloc((size_t)qcap * sizeof(batch *));
        q->cap = qcap;
        q->producer = i;
        if (pthread_create(&th[2 * i], NULL, consumer, q) ||
            pthread_create(&th[2 * i + 1], NULL, producer, q))
            die("pthread_create");
    }
    uint64_t sum = 0;
    for (long i = 0; i < 2 * npairs; i++)
        pthread_join(th[i], NULL);
    for (long i = 0; i < npairs; i++) {
        sum += queues[i].sum;
        free(queues[i].ring);
    }
    free(queues);
    long batches = (nmsgs + BATCH - 1) / BATCH;
    printf("workload=prodcons ops=%llu checksum=%016llx\n",
           (unsigned long long)(npairs * (nmsgs + batches)), (unsigned long long)sum);
    return 0;
}
