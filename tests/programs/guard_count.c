/* Shows whether guarded sampling placed blocks: mallocs 20 blocks of 64 bytes, uses each up to
 * its malloc_usable_size (which must be >= 64) and checks the bytes, then prints
 *
 *   guard_count: at_end=E at_start=S usable_min=U usable_max=V
 *
 * where E counts blocks whose last byte is the last byte of a page (offset 4096 - 64 in the
 * page) and S blocks that begin a page (offset 0): where a guarded block lies, against its slot's
 * end or start. Tally's slabs place 64-byte blocks at every 64-byte offset, so without guarding
 * at most a couple of 20 consecutive blocks touch a page boundary. Nothing outside a block (not
 * p[-1], not p[usable]) is touched: with guarding that is a guard page. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define PROGRAM "guard_count"
#include "check.h"

enum { BLOCKS = 20, SIZE = 64, PAGE = 4096 };

int main(void) {
    unsigned char *blocks[BLOCKS];
    size_t usable[BLOCKS];
    /* All the allocations first: printf's buffer comes later, so only these 20 are counted. */
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = opaque(malloc(SIZE));
        if (blocks[i] == NULL) fail("malloc(%d) returned NULL", SIZE);
        usable[i] = malloc_usable_size(blocks[i]);
        if (usable[i] < SIZE) fail("malloc_usable_size of a %d-byte block is %zu", SIZE, usable[i]);
        for (size_t k = 0; k < usable[i]; k++) blocks[i][k] = (unsigned char)(i * 7 + k);
    }
    int at_end = 0, at_start = 0;
    size_t usable_min = SIZE_MAX, usable_max = 0;
    for (int i = 0; i < BLOCKS; i++) {
        for (size_t k = 0; k < usable[i]; k++) {
            if (blocks[i][k] != (unsigned char)(i * 7 + k)) fail("block %d damaged at byte %zu", i, k);
        }
        uintptr_t offset = (uintptr_t)blocks[i] % PAGE;
        at_end += offset == PAGE - SIZE;
        at_start += offset == 0;
        usable_min = usable[i] < usable_min ? usable[i] : usable_min;
        usable_max = usable[i] > usable_max ? usable[i] : usable_max;
    }
    for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
    printf("guard_count: at_end=%d at_start=%d usable_min=%zu usable_max=%zu\n", at_end, at_start, usable_min,
           usable_max);
    return 0;
}
