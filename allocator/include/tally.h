/* Tally's C API beyond the standard malloc family, which libtally.so also exports.
 *
 * Link with -ltally (or LD_PRELOAD=libtally.so and look the symbols up with dlsym). */
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

#ifdef __cplusplus
}
#endif

#endif /* TALLY_H */
