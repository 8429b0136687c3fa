/* One leaking function per allocation entry point, so a profile must name each caller (not an
 * allocator-internal frame) whichever entry point it used. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

static void *volatile keep[1 << 16]; /* volatile: the compiler must not drop the calls */
static int n;

__attribute__((noinline)) void via_malloc(void) { for (int i = 0; i < 4096; i++) keep[n++] = malloc(1000); }
__attribute__((noinline)) void via_calloc(void) { for (int i = 0; i < 4096; i++) keep[n++] = calloc(1, 1000); }
__attribute__((noinline)) void via_realloc(void) { for (int i = 0; i < 4096; i++) keep[n++] = realloc(NULL, 1000); }
__attribute__((noinline)) void via_posix_memalign(void) {
    for (int i = 0; i < 4096; i++) {
        void *p;
        if (posix_memalign(&p, 64, 1000) == 0)
            keep[n++] = p;
    }
}
__attribute__((noinline)) void via_aligned_alloc(void) { for (int i = 0; i < 4096; i++) keep[n++] = aligned_alloc(64, 1024); }
__attribute__((noinline)) void via_memalign(void) { for (int i = 0; i < 4096; i++) keep[n++] = memalign(64, 1000); }

int main(void) {
    via_malloc();
    via_calloc();
    via_realloc();
    via_posix_memalign();
    via_aligned_alloc();
    via_memalign();
    printf("entry points: ok %d\n", n);
    return 0;
}
