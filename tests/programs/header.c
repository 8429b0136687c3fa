/* Uses Tally's C API through its header, linked with -ltally (no preload). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tally.h"

int main(void) {
    void *blocks[1000];
    for (int i = 0; i < 1000; i++) {
        blocks[i] = malloc(100000);
        memset(blocks[i], 1, 100000);
    }
    for (int i = 0; i < 1000; i++)
        free(blocks[i]);
    int released = malloc_trim(0);
    tally_stats_print("Jab");
    printf("released=%d\n", released);
    return released == 1 ? 0 : 1;
}
