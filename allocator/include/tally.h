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

/* glibc-compatible: gives free memory back to the OS now; returns 1 if any was released. */
int malloc_trim(size_t pad);

/* glibc-compatible: prints statistics to stderr (as tally_stats_print with stats_print_opts). */
void malloc_stats(void);

#ifdef __cplusplus
}
#endif

#endif /* TALLY_H */
