/* The memory errors guarded sampling catches, one per run: `guard CASE`, run with
 * `guard_rate:1` (every allocation guarded while slots last).
 *
 *   read-after-free, write-after-free, overflow (one byte past the end), underflow (one byte
 *   before the start), double-free, invalid-free (free of a pointer 8 bytes into a block), ok
 *   (nothing wrong: many allocations, all checked).
 *
 * Each block comes from make_block() and goes back through release_block(), so a report names
 * both. A guarded block lies against the end of its slot or, every other time, against its
 * start; the one-byte overflow and underflow are tried on two blocks in a row, so one of them is
 * placed where the byte is a guard page's. Prints "survived" if the bad access returned. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The point of this program is what the compiler warns about. */
#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"

static char *volatile sink;

__attribute__((noinline)) static char *make_block(size_t size) {
    char *p = malloc(size);
    if (p == NULL) {
        perror("malloc");
        exit(3);
    }
    memset(p, 'a', size);
    return p;
}

__attribute__((noinline)) static void release_block(char *p) {
    free(p);
    /* Not a tail call: release_block keeps its frame in the free stack. */
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void poke(char *volatile p, long at, char value) {
    p[at] = value;
}

__attribute__((noinline)) static char peek(char *volatile p, long at) {
    return p[at];
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s read-after-free|write-after-free|overflow|underflow|double-free|invalid-free|ok\n", argv[0]);
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "read-after-free")) {
        char *p = make_block(64);
        release_block(p);
        printf("read %d\n", peek(p, 8));
    } else if (!strcmp(c, "write-after-free")) {
        char *p = make_block(64);
        release_block(p);
        poke(p, 8, 'x');
    } else if (!strcmp(c, "overflow")) {
        char *a = make_block(64);
        char *b = make_block(64);
        poke(a, 64, 'x');
        poke(b, 64, 'x');
    } else if (!strcmp(c, "underflow")) {
        char *a = make_block(64);
        char *b = make_block(64);
        poke(a, -1, 'x');
        poke(b, -1, 'x');
    } else if (!strcmp(c, "double-free")) {
        char *p = make_block(64);
        release_block(p);
        release_block(p);
    } else if (!strcmp(c, "invalid-free")) {
        char *p = make_block(64);
        release_block(p + 8);
    } else if (!strcmp(c, "ok")) {
        /* Blocks of many sizes and alignments, each checked for its size, usable size and
         * contents while others come and go; some grow with realloc. */
        enum { N = 500 };
        static char *blocks[N];
        static size_t sizes[N];
        unsigned long x = 88172645463325252UL;
        long checked = 0;
        for (int round = 0; round < 20000; round++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int i = x % N;
            if (blocks[i] != NULL) {
                for (size_t k = 0; k < sizes[i]; k++) {
                    if (blocks[i][k] != (char)(i + k)) {
                        printf("block %d damaged at %zu\n", i, k);
                        return 1;
                    }
                }
                checked++;
                if (x & 64) {
                    size_t grown = sizes[i] * 2 + 1;
                    char *q = realloc(blocks[i], grown);
                    if (q == NULL) return 3;
                    for (size_t k = sizes[i]; k < grown; k++) q[k] = (char)(i + k);
                    blocks[i] = q;
                    sizes[i] = grown;
                    continue;
                }
                release_block(blocks[i]);
                blocks[i] = NULL;
                continue;
            }
            size_t size = (x >> 20) % 9000;
            char *p;
            if (x & 128) {
                size_t align = (size_t)16 << ((x >> 8) % 9); /* 16 .. 4096 */
                if (posix_memalign((void **)&p, align, size) != 0) return 3;
                if ((size_t)p % align != 0) {
                    printf("block of %zu not aligned to %zu\n", size, align);
                    return 1;
                }
            } else {
                p = malloc(size);
                if (p == NULL) return 3;
                if ((size_t)p % (size >= 16 ? 16 : 8) != 0) {
                    printf("block of %zu badly aligned\n", size);
                    return 1;
                }
            }
            for (size_t k = 0; k < size; k++) p[k] = (char)(i + k);
            blocks[i] = p;
            sizes[i] = size;
        }
        char *z = calloc(100, 10);
        for (int k = 0; k < 1000; k++) {
            if (z[k] != 0) {
                printf("calloc not zero at %d\n", k);
                return 1;
            }
        }
        free(z);
        printf("ok %ld\n", checked);
        return 0;
    } else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    printf("survived\n");
    return 0;
}
