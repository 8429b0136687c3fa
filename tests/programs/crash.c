/* A program that crashes, for Tally's acceptance tests.
 *
 *   crash segv|fpe|abort|exit|wait|raise SIGNAL
 *
 * Allocates (so Tally is initialized, its threads and signal handlers in place, and with
 * `lg_prof_sample:0` a few blocks sampled), prints `crash: ready`, then dies of its own fault:
 * a write through a null pointer (SIGSEGV), an integer division by zero (SIGFPE) or abort()
 * (SIGABRT). With `exit` it exits normally instead; with `wait` it reads one line from stdin,
 * then exits normally (for tests that act on the running process first). With `raise SIGNAL`
 * (a number, or RTMIN+k) it sends itself the signal, allocates a little more, prints
 * `crash: survived` and exits normally: it lives only if something (Tally's prof_signal)
 * handles the signal. Under any allocator option the program must die of the same signal as
 * without the allocator, neither hang nor exit otherwise. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: crash segv|fpe|abort|exit|wait|raise SIGNAL\n");
        return 2;
    }
    void *blocks[64];
    for (int round = 0; round < 16; round++) {
        for (int i = 0; i < 64; i++) {
            blocks[i] = malloc(16 + 1000 * (size_t)i);
            memset(blocks[i], i, 16);
        }
        for (int i = 0; i < 64; i++) {
            if (round < 15 || i % 2)
                free(blocks[i]);
        }
    }
    printf("crash: ready\n");
    fflush(stdout);
    const char *how = argv[1];
    if (strcmp(how, "segv") == 0) {
        volatile int *null = NULL;
        *null = 1;
    } else if (strcmp(how, "fpe") == 0) {
        /* Both operands volatile: gcc turns `1 / x` into a compare, which does not trap. */
        volatile int numerator = 12345, zero = 0;
        volatile int x = numerator / zero;
        (void)x;
    } else if (strcmp(how, "abort") == 0) {
        abort();
    } else if (strcmp(how, "exit") == 0) {
        return 0;
    } else if (strcmp(how, "wait") == 0) {
        char line[64];
        if (!fgets(line, sizeof line, stdin))
            return 3;
        return 0;
    } else if (strcmp(how, "raise") == 0 && argc == 3) {
        int sig = strncmp(argv[2], "RTMIN+", 6) == 0 ? SIGRTMIN + atoi(argv[2] + 6) : atoi(argv[2]);
        raise(sig);
        for (int i = 0; i < 1000; i++) {
            void *volatile p = malloc(4096); /* volatile: gcc drops a free(malloc(n)) pair */
            free(p);
        }
        printf("crash: survived\n");
        return 0;
    } else {
        fprintf(stderr, "crash: unknown way to crash: %s\n", how);
        return 2;
    }
    fprintf(stderr, "crash: still alive after %s\n", how);
    return 1;
}
