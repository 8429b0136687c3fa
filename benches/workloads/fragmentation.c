/* fragmentation: a long-running workload of mixed lifetimes, measuring how much memory the
 * allocator holds. Objects of 16 B - 4 KiB (and now and then 32-256 KiB) are allocated with one
 * of three lifetimes: most die within a few hundred allocations, some live for tens of
 * thousands, a few live for the rest of the phase. The mix of sizes shifts from phase to phase
 * (small objects, then medium, then small again), so memory freed by one phase has to be reused
 * for different sizes by the next: the pattern that strands partly used pages. At the end
 * everything is freed and resident memory is read again.
 *
 * Usage: fragmentation [phases=6] [allocs_per_phase=3000000]
 * Output: workload=fragmentation ops=<mallocs> checksum=<hex> peak_rss_kib=<n> final_rss_kib=<n>
 * (peak: the highest RSS sampled every 4096 allocations; final: after everything is freed). */
#include "common.h"

enum { SHORT_SLOTS = 512, MID_SLOTS = 65536, LONG_SLOTS = 65536 };

typedef struct {
    uint32_t size;
    uint32_t tag;
} obj;

static uint64_t sum;

static void release(obj *o) {
    if (!o)
        return;
    unsigned char *p = (unsigned char *)o;
    if (p[o->size - 1] != (unsigned char)o->tag)
        die("fragmentation: corrupt object");
    sum += o->tag ^ o->size;
    free(o);
}

static size_t pick_size(rng_t *r, long phase) {
    uint64_t x = rng_next(r) % 1000;
    if (x == 0)
        return rng_range(r, 32 << 10, 256 << 10);
    if (phase % 3 == 1) /* medium phase */
        return x < 300 ? rng_range(r, 16, 128) : rng_range(r, 512, 4096);
    return x < 900 ? rng_range(r, 16, 128) : rng_range(r, 128, 1024);
}

int main(int argc, char **argv) {
    long phases = arg_long(argc, argv, 1, 6);
    long per_phase = arg_long(argc, argv, 2, 3000000);
    static obj *short_[SHORT_SLOTS], *mid[MID_SLOTS], *long_[LONG_SLOTS];
    rng_t r;
    rng_seed(&r, 11);
    uint64_t ops = 0;
    long peak = rss_kib();
    for (long ph = 0; ph < phases; ph++) {
        for (long i = 0; i < per_phase; i++) {
            size_t size = pick_size(&r, ph);
            obj *o = xmalloc(size);
            ops++;
            o->size = (uint32_t)size;
            o->tag = (uint32_t)hash64(ops);
            memset(o + 1, (unsigned char)o->tag, size - sizeof(obj));
            uint64_t life = rng_next(&r) % 100;
            obj **slot;
            if (life < 90)
                slot = &short_[rng_next(&r) % SHORT_SLOTS];
            else if (life < 99)
                slot = &mid[rng_next(&r) % MID_SLOTS];
            else
                slot = &long_[rng_next(&r) % LONG_SLOTS];
            release(*slot);
            *slot = o;
            if ((ops & 4095) == 0) {
                long now = rss_kib();
                if (now > peak)
                    peak = now;
            }
        }
        /* End of phase: the short- and long-lived sets die; the medium set carries over. */
        for (int k = 0; k < SHORT_SLOTS; k++)
            release(short_[k]), short_[k] = NULL;
        for (int k = 0; k < LONG_SLOTS; k++)
            release(long_[k]), long_[k] = NULL;
    }
    for (int k = 0; k < MID_SLOTS; k++)
        release(mid[k]), mid[k] = NULL;
    long now = rss_kib();
    if (now > peak)
        peak = now;
    long final_rss = rss_kib();
    printf("workload=fragmentation ops=%llu checksum=%016llx peak_rss_kib=%ld final_rss_kib=%ld\n",
           (unsigned long long)ops, (unsigned long long)sum, peak, final_rss);
    return 0;
}
