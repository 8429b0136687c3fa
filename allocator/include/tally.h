/* Tally's C API beyond the standard malloc family, which libtally.so also exports.
 *
 * Link with -ltally (`pkg-config --cflags --libs tally` once installed; the program then needs
 * libtally.so.0, the library's SONAME), or LD_PRELOAD=libtally.so and look the symbols up with
 * dlsym. */
#ifndef TALLY_H
#define TALLY_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Prints Tally's statistics to stderr. `opts` (may be NULL) holds stats_print_opts letters:
 * 'J' for one line of JSON instead of text, 'a' to leave out the per-arena table, 'b' to leave
 * out the per-size-class table. */
void tally_stats_print(const char *opts);

/* Writes a heap profile (jemalloc's heap_v2 format, read by `tally report` and jeprof) to
 * `path`, or to <prof_prefix>.<pid>.<seq>.m<n>.heap when `path` is NULL. Returns 0, or -1 with
 * errno set (ENOTSUP when the profiler is off: run with TALLY_CONF=prof:true). */
int tally_prof_dump(const char *path);

/* Starts (on != 0) or stops (on == 0) sampling; for programs run with prof_active:false.
 * Returns 0, or -1 when the profiler is off. */
int tally_prof_activate(int on);

/* Forgets everything sampled so far (jemalloc's prof.reset). Returns 0, or -1 when the profiler
 * is off. */
int tally_prof_reset(void);

/* Sets the mean sampling distance to 2^lg bytes for the samples to come. Returns 0, or -1 when
 * the profiler is off. */
int tally_prof_set_sample(int lg);

/* glibc-compatible: gives free memory back to the OS now; returns 1 if any was released. */
int malloc_trim(size_t pad);

/* glibc-compatible: prints statistics to stderr (as tally_stats_print with stats_print_opts). */
void malloc_stats(void);

/* jemalloc's non-standard API, same names and semantics (see docs/jemalloc-api.md). Flags:
 * MALLOCX_LG_ALIGN(la) / MALLOCX_ALIGN(a) for an alignment, MALLOCX_ZERO for zeroed memory,
 * MALLOCX_TCACHE_NONE to allocate and free past the thread cache, MALLOCX_ARENA(a) to allocate
 * from arena a (past the thread cache). */
#ifndef MALLOCX_LG_ALIGN
#define MALLOCX_LG_ALIGN(la) ((int)(la))
#define MALLOCX_ALIGN(a) ((int)(__builtin_ffsl((long)(a)) - 1))
#define MALLOCX_ZERO ((int)0x40)
#define MALLOCX_TCACHE(tc) ((int)(((tc) + 2) << 8))
#define MALLOCX_TCACHE_NONE MALLOCX_TCACHE(-1)
#define MALLOCX_ARENA(a) ((int)(((unsigned)(a) + 1) << 20))
#endif

/* A block of at least `size` bytes with the alignment and zeroing of `flags`; NULL when out of
 * memory. */
void *mallocx(size_t size, int flags);
/* Resizes `ptr` to at least `size` bytes, moving it if needed (keeping the alignment of
 * `flags`; with MALLOCX_ZERO the bytes past the old usable size are zero); NULL, `ptr` left
 * alone, when out of memory. */
void *rallocx(void *ptr, size_t size, int flags);
/* Resizes `ptr` in place, never moving it, to size + extra bytes where it can, else to size;
 * returns its usable size after (less than `size` when it could not grow). */
size_t xallocx(void *ptr, size_t size, size_t extra, int flags);
/* The usable size of `ptr` (malloc_usable_size). */
size_t sallocx(const void *ptr, int flags);
/* free(ptr); past the thread cache with MALLOCX_TCACHE_NONE. */
void dallocx(void *ptr, int flags);
/* free(ptr), its size known to the caller. */
void sdallocx(void *ptr, size_t size, int flags);
/* The usable size mallocx(size, flags) would give, without allocating; 0 if it cannot. */
size_t nallocx(size_t size, int flags);
/* Tally's statistics handed to write_cb(cbopaque, piece) in NUL-terminated pieces (to stderr
 * when write_cb is NULL); opts as for tally_stats_print ('J', 'a', 'b'; others ignored). */
void malloc_stats_print(void (*write_cb)(void *, const char *), void *cbopaque, const char *opts);

/* jemalloc's name tree of settings and statistics (the names Tally answers are listed in
 * docs/jemalloc-api.md). Returns 0 or an errno value: ENOENT for a name Tally does not have,
 * EINVAL for a size that is not the value's, EPERM for writing a read-only name (or reading a
 * write-only one), EFAULT when a profile cannot be written. `stats.*` figures are those of the
 * last write to "epoch". MALLCTL_ARENAS_ALL names all arenas in `arena.<i>` and
 * `stats.arenas.<i>`. */
#ifndef MALLCTL_ARENAS_ALL
#define MALLCTL_ARENAS_ALL 4096
#endif
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
/* The MIB of `name` (up to *miblenp components) into mibp; *miblenp set to the entries written. */
int mallctlnametomib(const char *name, size_t *mibp, size_t *miblenp);
/* mallctl by MIB (a name's numbered components may be changed in the MIB). */
int mallctlbymib(const size_t *mib, size_t miblen, void *oldp, size_t *oldlenp, void *newp, size_t newlen);

#ifdef __cplusplus
}
#endif

#endif /* TALLY_H */
