/* The C program of `tally run`'s process tests (run_end_to_end.rs): `run_wait a|b MS` keeps
 * 32 MiB in 1 KiB blocks from `leak_a` or `leak_b`, prints "ready" and then sleeps MS
 * milliseconds, idle (no allocation), before it exits with code 3. Between the two it allocates
 * and frees another 32 MiB, so that interval dumps (`lg_prof_interval:24`) fall after the leak. An interrupt finds it asleep
 * with the leak held. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEAKED_BLOCKS (32 * 1024)

static void *kept[LEAKED_BLOCKS];

__attribute__((noinline)) void leak_a(void) {
    for (int i = 0; i < LEAKED_BLOCKS; i++) {
        kept[i] = malloc(1024); /* LEAK_A: 32 MiB in 1 KiB blocks */
        memset(kept[i], 1, 16);
    }
}

__attribute__((noinline)) void leak_b(void) {
    for (int i = 0; i < LEAKED_BLOCKS; i++) {
        kept[i] = malloc(1024); /* LEAK_B: 32 MiB in 1 KiB blocks */
        memset(kept[i], 2, 16);
    }
}

__attribute__((noinline)) void churn(void) {
    for (int i = 0; i < LEAKED_BLOCKS; i++) {
        void *p = malloc(1024);
        memset(p, 3, 16);
        free(p);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: run_wait a|b MILLISECONDS\n");
        return 2;
    }
    if (argv[1][0] == 'a') {
        leak_a();
    } else {
        leak_b();
    }
    churn();
    printf("ready\n");
    fflush(stdout);
    long ms = atol(argv[2]);
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0) {
    }
    return kept[LEAKED_BLOCKS - 1] != NULL ? 3 : 1;
}
