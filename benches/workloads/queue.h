/* What prodcons.c and prodcons_many.c pass between threads, and how.
 *
 * A bounded FIFO of pointers: a ring under a mutex, with one condition variable for each way to
 * wait (for an item, for room). Any number of producers push and then close it; a pop waits for
 * an item and returns NULL once every producer has closed the queue and it is empty. The ring is
 * malloc'd, so it is one block of the workload like the others.
 * Invariant: 0 <= count <= cap; the items are ring[(head + k) % cap] for k < count, oldest first.
 *
 * The items are batches of up to BATCH messages, the batch malloc'd too; a message is tagged by
 * its producer and index, filled with the tag's low byte, and checked by the consumer before it
 * frees it. */
#ifndef TALLY_WORKLOAD_QUEUE_H
#define TALLY_WORKLOAD_QUEUE_H

#include <pthread.h>

#include "common.h"

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    void **ring;
    long cap, head, count;
    long open; /* producers that have not closed the queue yet */
} queue;

static inline void queue_init(queue *q, long cap, long producers) {
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
    q->ring = xmalloc((size_t)cap * sizeof(void *));
    q->cap = cap;
    q->head = q->count = 0;
    q->open = producers;
}

static inline void queue_push(queue *q, void *item) {
    pthread_mutex_lock(&q->lock);
    while (q->count == q->cap)
        pthread_cond_wait(&q->not_full, &q->lock);
    q->ring[(q->head + q->count) % q->cap] = item;
    q->count++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

/* The oldest item, waiting for one; NULL once the queue is empty and closed by every producer. */
static inline void *queue_pop(queue *q) {
    pthread_mutex_lock(&q->lock);
    while (q->count == 0 && q->open > 0)
        pthread_cond_wait(&q->not_empty, &q->lock);
    void *item = NULL;
    if (q->count) {
        item = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->lock);
    return item;
}

/* One producer is done pushing. */
static inline void queue_close(queue *q) {
    pthread_mutex_lock(&q->lock);
    q->open--;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

static inline void queue_destroy(queue *q) {
    free(q->ring);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
}

enum { BATCH = 32 };

typedef struct {
    uint32_t size;
    uint32_t tag;
} msg;

typedef struct {
    int n;
    msg *m[BATCH];
} batch;

static inline batch *batch_new(void) {
    batch *b = xmalloc(sizeof *b);
    b->n = 0;
    return b;
}

/* Message i of producer p: size bytes (at least sizeof(msg)), tagged, filled. */
static inline msg *msg_new(uint32_t size, long p, long i) {
    msg *m = xmalloc(size);
    m->size = size;
    m->tag = (uint32_t)hash64(((uint64_t)p << 40) ^ (uint64_t)i);
    memset(m + 1, (unsigned char)m->tag, size - sizeof(msg));
    return m;
}

/* Checks every message of b (its size at most max_size, its last byte the tag's), frees them and
 * b, and returns the sum of their tags and sizes; dies with `corrupt` if one is wrong. */
static inline uint64_t batch_consume(batch *b, uint32_t max_size, const char *corrupt) {
    uint64_t sum = 0;
    for (int k = 0; k < b->n; k++) {
        msg *m = b->m[k];
        unsigned char *p = (unsigned char *)m;
        if (m->size < sizeof(msg) || m->size > max_size || p[m->size - 1] != (unsigned char)m->tag)
            die(corrupt);
        sum += m->tag + m->size;
        free(m);
    }
    free(b);
    return sum;
}

#endif
