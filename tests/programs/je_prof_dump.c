/* A program written for jemalloc, for tests/tests/jemalloc_abi.rs: built against Debian's
 * <jemalloc/jemalloc.h> and linked with -ljemalloc, it calls only jemalloc's API.
 *
 *   je_prof_dump PATH [off]
 *
 * leaky_site() keeps 32 MiB live in 4 KiB blocks; then the program asks mallctl for "version"
 * and "opt.prof" and calls mallctl("prof.dump") five ways:
 *
 *   path        newp = &PATH                          want 0, a profile written to PATH
 *   oldp        oldp and oldlenp given (write-only)   want EPERM
 *   badlen      newlen = sizeof(const char *) + 1     want EINVAL
 *   unwritable  newp = &"PATH.no-such-dir/x.heap"     want EFAULT
 *   default     newp = NULL                           want 0, <prof_prefix>.<pid>.<seq>.m<n>.heap
 *
 * With `off` (the profiler not switched on) every call must give ENOENT instead, as jemalloc
 * checks that first. It prints `pid=`, `version=`, `opt.prof=` and one `prof.dump[CASE]=`
 * line per call (0 or the errno's name), then "je_prof_dump: ok", or
 * "je_prof_dump: FAILED: ..." for each call that gave the wrong answer (exit 1). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jemalloc/jemalloc.h>

#define BLOCK_SIZE 4096
#define LEAK_BYTES (32u << 20)
#define BLOCKS (LEAK_BYTES / BLOCK_SIZE)

static void *volatile kept[BLOCKS]; /* volatile: the compiler must not drop the mallocs */
static int failures;

/* The one site the profile must name first: LEAK_BYTES live when the profile is written. */
__attribute__((noinline)) void leaky_site(void) {
    for (size_t i = 0; i < BLOCKS; i++) {
        char *block = malloc(BLOCK_SIZE);
        if (block == NULL) {
            printf("je_prof_dump: FAILED: malloc(%d) gave NULL after %zu blocks\n", BLOCK_SIZE, i);
            exit(1);
        }
        memset(block, (int)(i & 0xff), BLOCK_SIZE);
        kept[i] = block;
    }
}

static const char *errno_name(int code) {
    switch (code) {
    case 0: return "0";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EFAULT: return "EFAULT";
    case EINVAL: return "EINVAL";
    default: {
        static char other[32];
        snprintf(other, sizeof other, "errno %d", code);
        return other;
    }
    }
}

/* Prints `prof.dump[name]=<got>`, and counts a failure unless it is `want`. */
static void expect(const char *name, int got, int want) {
    printf("prof.dump[%s]=%s\n", name, errno_name(got));
    if (got != want) {
        printf("je_prof_dump: FAILED: prof.dump[%s] gave %s, want ", name, errno_name(got));
        printf("%s\n", errno_name(want));
        failures++;
    }
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "off") != 0)) {
        fprintf(stderr, "usage: je_prof_dump PATH [off]\n");
        return 2;
    }
    const char *path = argv[1];
    bool prof_wanted = argc == 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("pid=%ld\n", (long)getpid());

    leaky_site();

    const char *version = NULL;
    size_t len = sizeof version;
    int rc = mallctl("version", (void *)&version, &len, NULL, 0);
    if (rc != 0 || len != sizeof version || version == NULL) {
        printf("je_prof_dump: FAILED: mallctl(\"version\") gave %s, len %zu\n", errno_name(rc), len);
        return 1;
    }
    printf("version=%s\n", version);

    bool prof = false;
    len = sizeof prof;
    rc = mallctl("opt.prof", (void *)&prof, &len, NULL, 0);
    if (rc != 0 || len != sizeof prof) {
        printf("je_prof_dump: FAILED: mallctl(\"opt.prof\") gave %s, len %zu\n", errno_name(rc), len);
        return 1;
    }
    printf("opt.prof=%d\n", prof ? 1 : 0);
    if (prof != prof_wanted) {
        printf("je_prof_dump: FAILED: opt.prof is %d, want %d\n", prof ? 1 : 0, prof_wanted ? 1 : 0);
        failures++;
    }

    /* What each call must give with the profiler on; off, all give ENOENT. */
#define WANT(on_answer) (prof_wanted ? (on_answer) : ENOENT)
    expect("path", mallctl("prof.dump", NULL, NULL, (void *)&path, sizeof path), WANT(0));

    const char *old = NULL;
    len = sizeof old;
    expect("oldp", mallctl("prof.dump", (void *)&old, &len, (void *)&path, sizeof path), WANT(EPERM));

    expect("badlen", mallctl("prof.dump", NULL, NULL, (void *)&path, sizeof path + 1), WANT(EINVAL));

    size_t bad_size = strlen(path) + sizeof ".no-such-dir/x.heap";
    char *bad = malloc(bad_size);
    if (bad == NULL) {
        printf("je_prof_dump: FAILED: malloc(%zu) gave NULL\n", bad_size);
        return 1;
    }
    snprintf(bad, bad_size, "%s.no-such-dir/x.heap", path);
    const char *bad_path = bad;
    expect("unwritable", mallctl("prof.dump", NULL, NULL, (void *)&bad_path, sizeof bad_path),
           WANT(EFAULT));
    free(bad);

    expect("default", mallctl("prof.dump", NULL, NULL, NULL, 0), WANT(0));

    for (size_t i = 0; i < BLOCKS; i++)
        free(kept[i]);
    if (failures > 0)
        return 1;
    printf("je_prof_dump: ok\n");
    return 0;
}
