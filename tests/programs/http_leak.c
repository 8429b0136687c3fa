/* A program with a known leak, for the `prof_http` tests (tests/tests/prof_http.rs).
 *
 * `leak_records` keeps 4096 blocks of 4 KiB (16 MiB) each time it runs; `keep_a_little` keeps
 * 64 blocks of 4 KiB; `churn` allocates and frees. The program prints `ready`, then runs
 * `leak_records` once more for every line it reads on stdin, printing `more` after each, and
 * ends at the end of its input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *volatile sink;

__attribute__((noinline)) void leak_records(int n) {
    for (int i = 0; i < n; i++) {
        char *p = malloc(4096);
        memset(p, 1, 4096);
        sink = p;
    }
}

__attribute__((noinline)) void keep_a_little(int n) {
    for (int i = 0; i < n; i++) {
        char *p = calloc(1, 4096);
        sink = p;
    }
}

__attribute__((noinline)) void churn(int n) {
    for (int i = 0; i < n; i++) {
        char *p = malloc(512 + i % 512);
        memset(p, 2, 512);
        free(p);
    }
}

int main(void) {
    char line[64];
    leak_records(4096);
    keep_a_little(64);
    churn(100000);
    puts("ready");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        leak_records(4096);
        puts("more");
        fflush(stdout);
    }
    return 0;
}
