/* Does resident memory fall back after a big free? Allocates about 1 GiB in small (16 B - 2 KiB)
 * and large (96-160 KiB) blocks, frees it all, then either calls malloc_trim(0) ("trim") or
 * keeps the process lightly busy with short-lived allocations ("decay"), printing RSS at fixed
 * times. Preload any allocator under it.
 *
 * Output, one line: mode=... start_kib=... peak_kib=... then t<ms>_kib=... for each checkpoint. */
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long rss_kib(void) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    long size, resident;
    sscanf(buf, "%ld %ld", &size, &resident);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *blocks[1400000];

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "decay";
    long start = rss_kib();
    size_t total = 0, n = 0;
    while (total < (1UL << 30)) {
        size_t size = n % 16 == 0 ? 96 * 1024 + (n % 5) * 16 * 1024 : 16 + (n * 37) % 2048;
        blocks[n] = malloc(size);
        memset(blocks[n], 1, size);
        total += size;
        n++;
    }
    long peak = rss_kib();
    for (size_t i = 0; i < n; i++)
        free(blocks[i]);
    printf("mode=%s start_kib=%ld peak_kib=%ld", mode, start, peak);
    if (strcmp(mode, "trim") == 0) {
        double t0 = now();
        int rc = malloc_trim(0);
        printf(" trim_rc=%d trim_ms=%.0f t0_kib=%ld\n", rc, (now() - t0) * 1000, rss_kib());
        return 0;
    }
    static const int checkpoints_ms[] = {0, 1000, 5000, 11000, 15000};
    double t0 = now();
    unsigned k = 0;
    for (size_t c = 0; c < sizeof checkpoints_ms / sizeof checkpoints_ms[0]; c++) {
        while ((now() - t0) * 1000 < checkpoints_ms[c]) {
            for (int i = 0; i < 200; i++) {
                /* volatile, or the compiler deletes the malloc/free pair */
                char *volatile p = malloc(64 + (k++ % 1500));
                p[0] = 1;
                free(p);
            }
            usleep(2000);
        }
        printf(" t%d_kib=%ld", checkpoints_ms[c], rss_kib());
    }
    printf("\n");
    return 0;
}
