/* Shared by the stress-style test programs (stress.c, oom.c): `fail` prints
 * "<PROGRAM>: FAILED: <message>" and exits 1 at once; `opaque` hides a pointer from the
 * optimiser. Define PROGRAM (a string) before including. */
#ifndef TALLY_TESTS_CHECK_H
#define TALLY_TESTS_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#ifndef PROGRAM
#error "define PROGRAM before including check.h"
#endif

__attribute__((format(printf, 1, 2), noreturn)) static void fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, PROGRAM ": FAILED: ");
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    _exit(1);
}

/* Keeps the compiler from reasoning about a pointer's provenance or eliding allocations. */
static void *opaque(void *p)
{
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

#endif
