/* realloc_growth: string and vector builders growing by realloc. Each iteration runs 16
 * builders side by side (so a block usually cannot simply grow into the space after it):
 * string builders that realloc on every append of 1-64 bytes to an exact new length, and vector
 * builders that double their capacity, growing to random final lengths of up to 256 KiB (past
 * glibc's mmap threshold, where realloc can use mremap). Builders are then shrunk to their
 * final size with realloc, hashed and freed.
 *
 * Usage: realloc_growth [iterations=2000] [max_len=262144]
 * Output: workload=realloc_growth ops=<realloc calls> checksum=<hex> */
#include "common.h"

enum { BUILDERS = 16 };

typedef struct {
    unsigned char *buf;
    size_t len, cap, target;
    int doubling;
} builder;

int main(int argc, char **argv) {
    long iters = arg_long(argc, argv, 1, 2000);
    size_t max_len = (size_t)arg_long(argc, argv, 2, 262144);
    rng_t r;
    rng_seed(&r, 3);
    uint64_t ops = 0, sum = 0;
    for (long it = 0; it < iters; it++) {
        builder b[BUILDERS];
        for (int k = 0; k < BUILDERS; k++) {
            b[k].buf = NULL;
            b[k].len = b[k].cap = 0;
            b[k].doubling = k & 1;
            /* Mostly short strings, some long ones: lengths spread over 64 B .. max_len. */
            size_t shift = rng_range(&r, 6, 18);
            size_t t = (size_t)1 << shift;
            b[k].target = t + rng_next(&r) % t;
            if (b[k].target > max_len)
                b[k].target = max_len;
        }
        int active = BUILDERS;
        while (active) {
            active = 0;
            for (int k = 0; k < BUILDERS; k++) {
                builder *x = &b[k];
                if (x->len >= x->target)
                    continue;
                active++;
                /* Each round a builder appends a few chunks, so its turn interleaves with others. */
                for (int c = 0; c < 4 && x->len < x->target; c++) {
                    size_t n = rng_range(&r, 1, 64);
                    size_t need = x->len + n;
                    if (need > x->cap) {
                        size_t cap = x->doubling ? (x->cap ? x->cap * 2 : 16) : need;
                        while (cap < need)
                            cap *= 2;
                        unsigned char *p = realloc(x->buf, cap);
                        if (!p)
                            die("realloc returned NULL");
                        ops++;
                        x->buf = p;
                        x->cap = cap;
                    }
                    memset(x->buf + x->len, (int)((x->len * 31 + n) & 0xff), n);
                    x->len = need;
                }
            }
        }
        for (int k = 0; k < BUILDERS; k++) {
            builder *x = &b[k];
            unsigned char *p = realloc(x->buf, x->len);
            if (!p)
                die("realloc (shrink) returned NULL");
            ops++;
            uint64_t h = x->len;
            for (size_t i = 0; i < x->len; i += 61)
                h = mix(h, p[i]);
            h = mix(h, p[x->len - 1]);
            sum = mix(sum, h);
            free(p);
        }
    }
    printf("workload=realloc_growth ops=%llu checksum=%016llx\n", (unsigned long long)ops,
           (unsigned long long)sum);
    return 0;
}
