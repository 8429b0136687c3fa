/* Processes around `prof_http` (tests/tests/prof_http.rs), by mode:
 *
 * - `daemon`: forks; the parent exits at once; the child keeps 4 MiB from `leak_in_child`,
 *   prints `ready` and waits for the end of its input.
 * - `worker`: keeps 4 MiB from `leak_in_parent`, forks a child that keeps 4 MiB from
 *   `leak_in_child`; the parent prints `ready`; both wait for the end of their input, the parent
 *   then for the child.
 * - `worker_at_once`: as `worker`, but forks right after its first allocation (which starts
 *   Tally and its server thread, which may not have run yet), the parent keeping its 4 MiB
 *   after the fork.
 * - `signalfd`: blocks SIGUSR1 and reads it from a `signalfd` (as programs that take their
 *   signals in an event loop do), prints `ready` before and `got SIGUSR1` after. A thread that
 *   did not block the signal would take it instead, and its default action ends the process. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

static void *volatile sink;

__attribute__((noinline)) void leak_in_parent(void) {
    for (int i = 0; i < 1024; i++) {
        sink = memset(malloc(4096), 1, 4096);
    }
}

__attribute__((noinline)) void leak_in_child(void) {
    for (int i = 0; i < 1024; i++) {
        sink = memset(malloc(4096), 2, 4096);
    }
}

/* A first allocation the compiler cannot drop. */
__attribute__((noinline)) static void *opaque_malloc(size_t size) {
    void *p = malloc(size);
    sink = p;
    return p;
}

static void wait_for_end_of_input(void) {
    char buf[64];
    while (fgets(buf, sizeof buf, stdin)) {
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "daemon")) {
        pid_t pid = fork();
        if (pid < 0) {
            return 1;
        }
        if (pid > 0) {
            _exit(0);
        }
        leak_in_child();
        puts("ready");
        fflush(stdout);
        wait_for_end_of_input();
        return 0;
    }
    int at_once = !strcmp(mode, "worker_at_once");
    if (at_once || !strcmp(mode, "worker")) {
        if (at_once) {
            free(opaque_malloc(16));
        } else {
            leak_in_parent();
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            return 1;
        }
        if (at_once && pid > 0) {
            leak_in_parent();
        }
        if (pid == 0) {
            leak_in_child();
            wait_for_end_of_input();
            _exit(0);
        }
        puts("ready");
        fflush(stdout);
        wait_for_end_of_input();
        int status;
        waitpid(pid, &status, 0);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
    }
    if (!strcmp(mode, "signalfd")) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        int fd = signalfd(-1, &set, SFD_CLOEXEC);
        if (fd < 0) {
            return 1;
        }
        puts("ready");
        fflush(stdout);
        struct signalfd_siginfo info;
        if (read(fd, &info, sizeof info) != sizeof info || info.ssi_signo != SIGUSR1) {
            return 1;
        }
        puts("got SIGUSR1");
        return 0;
    }
    fprintf(stderr, "usage: http_process daemon|worker|worker_at_once|signalfd\n");
    return 2;
}
