/* The suite runner's launcher: runs one command and reports its wall time and peak RSS.
 *
 *   measure <preload-or-empty> <stdin-file-or-empty> <command> [args...]
 *
 * Forks, sets LD_PRELOAD in the child only (so the launcher itself never runs under the
 * allocator being measured), execs the command, waits with wait4 and prints to stderr, last:
 *
 *   measure: seconds=<wall> maxrss_kib=<ru_maxrss> status=<exit code or 128+signal>
 *
 * The launcher is a small C program rather than the runner (benches/src/suite.rs) forking the
 * command directly because a child's ru_maxrss includes what it had mapped before exec: a child
 * forked from the runner would start at the runner's RSS (and an earlier Python runner's was
 * about 12 MiB), a forked `measure` at about 1 MiB. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: measure <preload-or-empty> <stdin-or-empty> <command> [args...]\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("measure: fork");
        return 2;
    }
    if (pid == 0) {
        if (argv[2][0]) {
            int fd = open(argv[2], O_RDONLY);
            if (fd < 0 || dup2(fd, 0) < 0) {
                perror("measure: stdin");
                _exit(127);
            }
            close(fd);
        }
        if (argv[1][0])
            setenv("LD_PRELOAD", argv[1], 1);
        else
            unsetenv("LD_PRELOAD");
        execvp(argv[3], argv + 3);
        perror("measure: exec");
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("measure: wait4");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    fprintf(stderr, "measure: seconds=%.6f maxrss_kib=%ld status=%d\n", secs, ru.ru_maxrss, code);
    return 0;
}
