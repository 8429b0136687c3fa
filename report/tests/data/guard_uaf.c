/* A program for `tally symbolize`'s tests: calls whose return addresses make guard report frames.
   The markers name the lines the tests expect. */
#include <stdlib.h>
#include <string.h>

static inline __attribute__((always_inline)) char *fill(size_t n) {
    char *p = malloc(n); /* fill: malloc */
    memset(p, 1, n);
    return p;
}

__attribute__((noinline)) char *make_block(size_t n) {
    char *p = malloc(n); /* make_block: malloc */
    p[0] = 2;
    return p;
}

__attribute__((noinline)) char *make_filled(size_t n) {
    return fill(n) + 1; /* make_filled: fill */
}

int main(void) {
    char *a = make_block(64); /* main: make_block */
    char *b = make_filled(32) - 1;
    free(a);
    free(b);
    return a == b;
}
