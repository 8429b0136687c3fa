/* The double frees of issue 12, as a C program does them: `double_free CASE SIZE`.
 * Prints "survived" (and whether two later mallocs returned one address) if the bad call
 * returned; under glibc and Tally it must not. */
#include <stdio.h>
#include <stdlib.h>

/* The point of this program is what the compiler warns about. */
#pragma GCC diagnostic ignored "-Wuse-after-free"

static void *volatile sink;

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s twice|realloc|between SIZE\n", argv[0]);
        return 2;
    }
    size_t size = strtoul(argv[2], NULL, 10);
    char *p = malloc(size);
    char c = argv[1][0];
    if (c == 't') { /* twice */
        free(p);
        free(p);
    } else if (c == 'r') { /* realloc of a freed block */
        free(p);
        p = realloc(p, size * 2);
    } else if (c == 'b') { /* between: other allocations between the two frees */
        free(p);
        for (int i = 0; i < 20; i++) sink = malloc(2 * size + 64 + i * 24); /* never p's class */
        free(p);
    } else {
        fprintf(stderr, "unknown case %s\n", argv[1]);
        return 2;
    }
    void *a = malloc(size), *b = malloc(size);
    printf("survived same=%d\n", a == b);
    return 0;
}
