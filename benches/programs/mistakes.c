/* The allocator mistakes of docs/architecture.md ("Errors Tally catches"): `mistakes CASE SIZE`
 * with CASE 0 second free, 1 second free after 2000 other frees of the class, 2 second free
 * while another live thread caches the block, 3 free of a slot never handed out (30 blocks on),
 * 4 realloc of a freed block, 5 free of a pointer 16 bytes into a block. Prints "survived" (and
 * "(one block twice)" when two mallocs then return one address) if the allocator let it pass.
 * Run by benches/run-mistakes.sh under each allocator. */
#include <stdlib.h>
#include <pthread.h>
#include <unistd.h>
#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"
static char *shared; static size_t sz; static volatile int stage;
static void *other(void *a) { void *m = malloc(sz); free(m); free(shared); stage = 1; while (stage != 2) usleep(1000); return 0; }
int main(int argc, char **argv) {
    int mode = atoi(argv[1]); size_t n = strtoul(argv[2],0,0); sz = n;
    char *keep = malloc(n); char *p = malloc(n);
    switch (mode) {
    case 0: free(p); free(p); break;
    case 1: { void *a[2000]; for (int i=0;i<2000;i++) a[i]=malloc(n); free(p); for (int i=0;i<2000;i++) free(a[i]); free(p); } break;
    case 2: { pthread_t t; shared = p; pthread_create(&t,0,other,0); while (!stage) usleep(1000); free(p); stage = 2; pthread_join(t,0); } break;
    case 3: { free(p + 30 * ((n + 15) & ~15)); } break;
    case 4: free(p); p = realloc(p, n * 2); break;
    case 5: free(p + 16); break;
    }
    void *a = malloc(n), *b = malloc(n);
    printf("survived%s\n", a == b ? " (one block twice)" : "");
    return keep == 0;
}
