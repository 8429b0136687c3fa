/* The C program of the report tests: two leak sites of known size, churn that frees everything,
 * and (under jemalloc with prof:true) a manual dump after the first leak, for --base. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

static void *kept[4096];
static int nkept;

__attribute__((noinline)) void leak_a(void) {
    for (int i = 0; i < 2048; i++) {
        kept[nkept++] = malloc(4096); /* LEAK_A: 8 MiB */
    }
}

__attribute__((noinline)) void leak_b(void) {
    for (int i = 0; i < 256; i++) {
        kept[nkept++] = malloc(4096); /* LEAK_B: 1 MiB */
    }
}

__attribute__((noinline)) void churn(void) {
    for (int i = 0; i < 20000; i++) {
        char *p = malloc(64 + i % 8000);
        memset(p, 1, 16);
        free(p);
    }
}

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);

static void dump_now(void) {
    mallctl_fn mallctl = (mallctl_fn)dlsym(RTLD_DEFAULT, "mallctl");
    if (mallctl) {
        mallctl("prof.dump", NULL, NULL, NULL, 0);
    }
}

int main(void) {
    leak_a();
    dump_now();
    leak_b();
    churn();
    return nkept == 2304 ? 0 : 1;
}
