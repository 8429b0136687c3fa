/* A small program for scripts/check-hot-text.sh: the calls an ordinary C program makes (blocks
 * of many sizes, calloc, realloc growing a buffer, aligned allocations, stdio, a thread that
 * allocates and exits, a large block, a fork, as a shell or a program that starts another
 * makes: Tally's fork handlers run in it), so that the functions of Tally's it runs are the ones
 * every program runs. Built with -fno-builtin so the compiler keeps every call. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *worker(void *arg) {
    void *blocks[64];
    for (int i = 0; i < 64; i++) {
        blocks[i] = malloc(16 + (size_t)i * 24);
        memset(blocks[i], i, 16);
    }
    for (int i = 0; i < 64; i++)
        free(blocks[i]);
    return arg;
}

int main(void) {
    static void *blocks[4096];
    for (int i = 0; i < 4096; i++)
        blocks[i] = malloc(8 + (size_t)(i * 37) % 3000);
    for (int i = 0; i < 4096; i += 2)
        free(blocks[i]);
    char *s = NULL;
    for (size_t n = 1; n < (1 << 20); n *= 2) {
        s = realloc(s, n);
        s[n - 1] = 1;
    }
    free(s);
    int *z = calloc(1000, sizeof *z);
    void *a = NULL;
    if (posix_memalign(&a, 64, 1000) != 0)
        return 1;
    char *big = malloc(8 << 20);
    big[0] = 1;
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0 || pthread_join(t, NULL) != 0)
        return 1;
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    if (child < 0 || waitpid(child, NULL, 0) != child)
        return 1;
    FILE *f = fopen("/proc/self/stat", "r");
    char line[256];
    if (!f || !fgets(line, sizeof line, f))
        return 1;
    fclose(f);
    printf("hot-text program: %d %d\n", z[999], big[0]);
    free(big);
    free(a);
    free(z);
    for (int i = 1; i < 4096; i += 2)
        free(blocks[i]);
    return 0;
}
