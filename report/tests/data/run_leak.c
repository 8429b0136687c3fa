/* The C program of `tally run` end to end (run_end_to_end.rs): one leak site of known size,
 * `leak_here`, 32 MiB in 1 KiB blocks never freed, and churn that allocates more than that and
 * frees all of it. It exits with code 3, which `tally run` must pass on. */
#include <stdlib.h>
#include <string.h>

#define LEAKED_BLOCKS (32 * 1024)

static void *kept[LEAKED_BLOCKS];

__attribute__((noinline)) void leak_here(void) {
    for (int i = 0; i < LEAKED_BLOCKS; i++) {
        kept[i] = malloc(1024); /* LEAK_HERE: 32 MiB in 1 KiB blocks */
        memset(kept[i], 1, 16);
    }
}

__attribute__((noinline)) void churn(void) {
    void *batch[256];
    for (int round = 0; round < 1024; round++) {
        for (int i = 0; i < 256; i++) {
            batch[i] = malloc(64 + (round * 256 + i) % 4000);
            memset(batch[i], 2, 16);
        }
        for (int i = 0; i < 256; i++) {
            free(batch[i]);
        }
    }
}

int main(void) {
    churn();
    leak_here();
    churn();
    return kept[LEAKED_BLOCKS - 1] != NULL ? 3 : 1;
}
