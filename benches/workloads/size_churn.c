/* size_churn: one thread, small blocks of many size classes allocated and freed in a tight loop
 * (like glibc's bench-malloc-thread with one thread). A working set of slots (256 by default) is
 * filled with blocks of 16 B - 1 KiB; then every step picks a random slot, frees its block and
 * puts a new block of a random size in it. Sizes and slots come from a fixed-seed RNG. Each
 * block gets a tag in its first 8 bytes and its last byte, which are checked and summed when it
 * is freed; the rest is left unwritten, so the loop is malloc and free and little else: the
 * thread-cache fast path and size-class lookup across all small classes at once, where the
 * cache of any one class runs dry or overflows now and then.
 *
 * Usage: size_churn [steps=32000000] [working_set=256]
 * Output: workload=size_churn ops=<mallocs> checksum=<hex> */
#include "common.h"

typedef struct {
    uint32_t size;
    uint32_t tag;
} hdr;

/* Checks a block, frees it, and returns what it adds to the checksum. */
static uint64_t check_and_free(hdr *h) {
    if (!h)
        return 0;
    unsigned char *p = (unsigned char *)h;
    if (h->size < 16 || h->size > 1024 || p[h->size - 1] != (unsigned char)(h->tag >> 8))
        die("size_churn: corrupt block");
    uint64_t v = ((uint64_t)h->tag << 11) + h->size;
    free(h);
    return v;
}

int main(int argc, char **argv) {
    long steps = arg_long(argc, argv, 1, 32000000);
    long nslots = arg_long(argc, argv, 2, 256);
    hdr **slots = calloc((size_t)nslots, sizeof(hdr *));
    if (!slots)
        die("calloc");
    rng_t r;
    rng_seed(&r, 4242);
    uint64_t sum = 0;
    for (long i = 0; i < nslots + steps; i++) {
        uint64_t x = rng_next(&r);
        /* The slot from the high bits, the size from the low ones: one RNG step per block. */
        long s = i < nslots ? i : (long)((x >> 32) % (uint64_t)nslots);
        uint32_t size = 16 + (uint32_t)(x % 1009);
        sum += check_and_free(slots[s]);
        hdr *h = xmalloc(size);
        h->size = size;
        h->tag = (uint32_t)(x >> 16) ^ (uint32_t)i;
        ((unsigned char *)h)[size - 1] = (unsigned char)(h->tag >> 8);
        slots[s] = h;
    }
    for (long s = 0; s < nslots; s++)
        sum += check_and_free(slots[s]);
    free(slots);
    printf("workload=size_churn ops=%llu checksum=%016llx\n", (unsigned long long)(nslots + steps),
           (unsigned long long)sum);
    return 0;
}
