/* malloc in the awkward places of a thread's life: during dynamic TLS set-up (glibc mallocs a
 * dlopen'ed module's TLS block inside __tls_get_addr), inside the dynamic loader (dlopen and
 * dlclose from many threads at once), and in thread-exit destructors that run after the
 * allocator's own (pthread key destructors that allocate and re-arm themselves, and C11
 * thread_local-style destructors registered with __cxa_thread_atexit_impl).
 *
 * Usage: lifecycle MODULE.so ROUNDS THREADS. Prints "lifecycle: ok" and counters. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *module_path;
static pthread_key_t key;
static int rounds;
static unsigned long destructor_allocs;
static pthread_mutex_t counter_lock = PTHREAD_MUTEX_INITIALIZER;

extern int __cxa_thread_atexit_impl(void (*fn)(void *), void *obj, void *dso);
extern void *__dso_handle;

static void fail(const char *what) {
    fprintf(stderr, "lifecycle: FAILED: %s\n", what);
    exit(1);
}

static void check_block(unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            fail("block contents changed");
}

/* Runs at thread exit, after (or before) Tally's own destructor: allocate, check, free, and
 * re-arm a few times so glibc calls it again in a later destructor round. */
static void key_destructor(void *value) {
    uintptr_t left = (uintptr_t)value;
    size_t sizes[] = {24, 700, 9000, 70000, 3 << 20};
    for (int i = 0; i < 5; i++) {
        unsigned char *p = malloc(sizes[i]);
        if (!p)
            fail("malloc in a key destructor");
        memset(p, 0x5A, sizes[i]);
        check_block(p, sizes[i], 0x5A);
        free(p);
    }
    /* A block that outlives the thread: freed by main later through a list. */
    pthread_mutex_lock(&counter_lock);
    destructor_allocs++;
    pthread_mutex_unlock(&counter_lock);
    if (left > 1)
        pthread_setspecific(key, (void *)(left - 1));
}

static void tls_destructor(void *obj) {
    unsigned char *p = obj;
    check_block(p, 100, 0x33);
    free(p);
    void *q = malloc(300);
    if (!q)
        fail("malloc in a thread_local destructor");
    free(q);
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    pthread_setspecific(key, (void *)(uintptr_t)3);
    unsigned char *obj = malloc(100);
    memset(obj, 0x33, 100);
    __cxa_thread_atexit_impl(tls_destructor, obj, &__dso_handle);

    unsigned long sum = 0;
    for (int r = 0; r < rounds; r++) {
        void *h = dlopen(module_path, RTLD_NOW | RTLD_LOCAL);
        if (!h)
            fail(dlerror());
        unsigned long (*touch)(int) = (unsigned long (*)(int))dlsym(h, "touch_tls");
        if (!touch)
            fail("dlsym touch_tls");
        sum += touch(id + r);
        void *p = malloc(64 + (size_t)r);
        memset(p, r, 64);
        free(p);
        dlclose(h);
    }
    return (void *)(uintptr_t)(sum != 0);
}

int main(int argc, char **argv) {
    if (argc != 4)
        fail("usage: lifecycle MODULE.so ROUNDS THREADS");
    module_path = argv[1];
    rounds = atoi(argv[2]);
    int nthreads = atoi(argv[3]);
    if (pthread_key_create(&key, key_destructor) != 0)
        fail("pthread_key_create");
    int waves = 4;
    for (int w = 0; w < waves; w++) {
        pthread_t t[64];
        for (int i = 0; i < nthreads; i++)
            if (pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) != 0)
                fail("pthread_create");
        for (int i = 0; i < nthreads; i++) {
            void *ok;
            pthread_join(t[i], &ok);
            if (!ok)
                fail("worker saw no TLS");
        }
    }
    /* Three destructor rounds per thread (the key re-arms itself twice). */
    unsigned long want = (unsigned long)waves * (unsigned long)nthreads * 3;
    if (destructor_allocs != want) {
        fprintf(stderr, "lifecycle: destructor ran %lu times, want %lu\n", destructor_allocs, want);
        return 1;
    }
    printf("lifecycle: ok threads=%d destructor_rounds=%lu\n", waves * nthreads, destructor_allocs);
    return 0;
}
