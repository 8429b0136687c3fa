/* Guarded sampling's fault handler chained to the program's own: `guard_chain wild|guarded`.
 *
 * A constructor installs a SIGSEGV handler before the first malloc, so Tally (which reads its
 * options and installs its handler at the first malloc) finds it installed and keeps it as the
 * one before its own. The program's handler prints "program handler" and exits with 42.
 *   wild     a write to address 16: not Tally's; its handler must pass it to the program's.
 *   guarded  a write after free of a guarded block: Tally reports it, then the program's
 *            handler has its turn.
 * Prints "survived" if the bad write returned. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wuse-after-free"

static void on_segv(int sig) {
    (void)sig;
    static const char message[] = "program handler\n";
    if (write(1, message, sizeof message - 1) < 0) _exit(43);
    _exit(42);
}

__attribute__((constructor)) static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_segv;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, NULL);
}

__attribute__((noinline)) static void poke(char *volatile p, long at) {
    p[at] = 'x';
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s wild|guarded\n", argv[0]);
        return 2;
    }
    char *p = malloc(64);
    if (p == NULL) return 3;
    if (!strcmp(argv[1], "wild")) {
        poke((char *)16, 0);
    } else if (!strcmp(argv[1], "guarded")) {
        free(p);
        poke(p, 8);
    } else {
        return 2;
    }
    printf("survived\n");
    return 0;
}
