/* fork() in a multithreaded process, for Tally's acceptance tests.
 *
 *   fork [forks=200] [workers=4]
 *
 * Worker threads allocate, check and free without pause while the main thread forks. At the
 * moment of each fork some worker is almost surely inside malloc or free, holding whatever
 * allocator lock it takes; an allocator without working fork handlers (pthread_atfork: take
 * every lock before fork, release or reinitialise in both processes after) then deadlocks or
 * corrupts the child. Each child:
 *   - frees a block the parent allocated before forking (after checking its contents),
 *   - mallocs, checks and frees a few thousand blocks of mixed sizes, including 1 MiB ones,
 *   - starts a thread that allocates too and frees blocks the child's main thread allocated,
 *   - and _exit(0)s; any mismatch is reported on stderr and exits 1.
 * The parent waits for each child for at most CHILD_TIMEOUT_SECONDS; a child that takes longer
 * is killed and reported as deadlocked. A whole-run alarm is the last line of defence.
 *
 * Prints `forks=<n> worker_ops=<n>` and `fork: ok` on success. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHILD_TIMEOUT_SECONDS 10
#define WHOLE_RUN_ALARM_SECONDS 100
#define WORKER_SLOTS 256
#define CHILD_BLOCKS 64

static void fail(const char *format, ...)
{
    char message[256];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(message, sizeof message, format, args);
    va_end(args);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof message - 1)
        n = sizeof message - 1;
    /* write(2) only: this also runs in forked children, where stdio state is suspect. */
    ssize_t ignored = write(2, "fork: FAILED: ", 14);
    ignored = write(2, message, (size_t)n);
    ignored = write(2, "\n", 1);
    (void)ignored;
    _exit(1);
}

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

static unsigned char pattern(const void *p, size_t size, size_t i)
{
    uintptr_t x = (uintptr_t)p ^ (size * 0x9E3779B97F4A7C15ull) ^ (i * 0x100000001B3ull);
    return (unsigned char)(x ^ (x >> 17) ^ (x >> 29) ^ i);
}

static void *alloc_filled(size_t size)
{
    unsigned char *p = malloc(size);
    if (!p)
        fail("malloc(%zu) returned NULL", size);
    for (size_t i = 0; i < size; i++)
        p[i] = pattern(p, size, i);
    return p;
}

static void check_and_free(void *block, size_t size, const char *where)
{
    unsigned char *p = block;
    for (size_t i = 0; i < size; i++)
        if (p[i] != pattern(p, size, i))
            fail("%s: block %p size %zu corrupted at byte %zu", where, block, size, i);
    free(p);
}

static size_t random_size(uint64_t *rng)
{
    uint64_t r = next_random(rng);
    switch (r % 16) {
    case 0:
        return 4096 + r % 60000;
    case 1:
        return r % 64 == 0 ? (1u << 20) + r % 4096 : 512 + r % 4096;
    default:
        return 1 + r % 300;
    }
}

/* ---- parent workers ---- */

static atomic_int stop_workers;
static atomic_ullong worker_ops;

static void *worker(void *arg)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(uintptr_t)arg + 1;
    void *blocks[WORKER_SLOTS] = {0};
    size_t sizes[WORKER_SLOTS] = {0};
    unsigned long long ops = 0;
    while (!atomic_load_explicit(&stop_workers, memory_order_relaxed)) {
        size_t i = next_random(&rng) % WORKER_SLOTS;
        if (blocks[i]) {
            check_and_free(blocks[i], sizes[i], "parent worker");
            blocks[i] = NULL;
        } else {
            sizes[i] = random_size(&rng);
            if (sizes[i] > 65536)
                sizes[i] = 65536; /* keep parent workers quick: fork copies their memory */
            blocks[i] = alloc_filled(sizes[i]);
        }
        ops++;
    }
    for (size_t i = 0; i < WORKER_SLOTS; i++)
        if (blocks[i])
            check_and_free(blocks[i], sizes[i], "parent worker at exit");
    atomic_fetch_add(&worker_ops, ops);
    return NULL;
}

/* ---- child ---- */

struct child_blocks {
    void *blocks[CHILD_BLOCKS];
    size_t sizes[CHILD_BLOCKS];
    uint64_t seed;
};

static void *child_thread(void *arg)
{
    struct child_blocks *handed = arg;
    uint64_t rng = handed->seed | 1;
    /* Free what the child's main thread allocated: a cross-thread free in the child. */
    for (size_t i = 0; i < CHILD_BLOCKS; i++)
        check_and_free(handed->blocks[i], handed->sizes[i], "child thread (cross-thread free)");
    for (int round = 0; round < 200; round++) {
        size_t size = random_size(&rng);
        check_and_free(alloc_filled(size), size, "child thread");
    }
    return NULL;
}

static void child(int number, void *parent_block, size_t parent_size)
{
    uint64_t rng = 0xD1B54A32D192ED03ull * (uint64_t)(number + 1);
    /* Memory allocated before the fork is still valid and freeable here. */
    check_and_free(parent_block, parent_size, "child freeing the parent's block");

    void *blocks[CHILD_BLOCKS];
    size_t sizes[CHILD_BLOCKS];
    for (int round = 0; round < 8; round++) {
        for (size_t i = 0; i < CHILD_BLOCKS; i++) {
            sizes[i] = random_size(&rng);
            blocks[i] = alloc_filled(sizes[i]);
        }
        for (size_t i = 0; i < CHILD_BLOCKS; i++)
            check_and_free(blocks[i], sizes[i], "child main thread");
    }

    struct child_blocks *handed = malloc(sizeof *handed);
    if (!handed)
        fail("child: malloc of hand-off table failed");
    handed->seed = rng;
    for (size_t i = 0; i < CHILD_BLOCKS; i++) {
        handed->sizes[i] = random_size(&rng);
        handed->blocks[i] = alloc_filled(handed->sizes[i]);
    }
    pthread_t thread;
    int err = pthread_create(&thread, NULL, child_thread, handed);
    if (err != 0)
        fail("child %d: pthread_create: %s", number, strerror(err));
    pthread_join(thread, NULL);
    free(handed);
    _exit(0);
}

/* ---- parent main ---- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wait_for_child(pid_t pid, int number)
{
    double deadline = now() + CHILD_TIMEOUT_SECONDS;
    for (;;) {
        int status;
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return;
            if (WIFSIGNALED(status))
                fail("child %d (pid %d) killed by signal %d", number, (int)pid, WTERMSIG(status));
            fail("child %d (pid %d) exited with status %d", number, (int)pid,
                 WEXITSTATUS(status));
        }
        if (done < 0 && errno != EINTR)
            fail("waitpid(%d): %s", (int)pid, strerror(errno));
        if (now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            fail("child %d (pid %d) did not exit within %d s: deadlocked after fork", number,
                 (int)pid, CHILD_TIMEOUT_SECONDS);
        }
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
}

int main(int argc, char **argv)
{
    int forks = argc > 1 ? atoi(argv[1]) : 200;
    int workers = argc > 2 ? atoi(argv[2]) : 4;
    alarm(WHOLE_RUN_ALARM_SECONDS);

    pthread_t threads[64];
    if (workers < 1 || workers > 64)
        fail("worker count must be 1..64");
    for (int i = 0; i < workers; i++)
        if (pthread_create(&threads[i], NULL, worker, (void *)(uintptr_t)(i + 1)) != 0)
            fail("pthread_create failed");

    uint64_t rng = 42;
    for (int n = 0; n < forks; n++) {
        /* Give the workers a moment to be mid-allocation, at varying points. */
        struct timespec pause = {0, (long)(next_random(&rng) % 2000000)};
        nanosleep(&pause, NULL);
        size_t size = random_size(&rng);
        void *block = alloc_filled(size);
        pid_t pid = fork();
        if (pid < 0)
            fail("fork: %s", strerror(errno));
        if (pid == 0)
            child(n, block, size);
        wait_for_child(pid, n);
        check_and_free(block, size, "parent after fork");
    }

    atomic_store(&stop_workers, 1);
    for (int i = 0; i < workers; i++)
        pthread_join(threads[i], NULL);
    printf("forks=%d worker_ops=%llu\n", forks, (unsigned long long)atomic_load(&worker_ops));
    printf("fork: ok\n");
    return 0;
}
