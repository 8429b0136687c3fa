/* A small service loop with a native leak, the kind Tally exists to find.
 *
 * Each "request" builds a response buffer and frees it (churn), parses a header into a few
 * short-lived strings (churn), and registers the session in a cache that is never pruned (the
 * leak: 4 KiB per request, from remember_session). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct session {
    struct session *next;
    char payload[4096 - sizeof(struct session *)];
};

static struct session *sessions;

__attribute__((noinline)) static void remember_session(int id) {
    struct session *s = malloc(sizeof *s);
    snprintf(s->payload, sizeof s->payload, "session %d", id);
    s->next = sessions;
    sessions = s; /* never removed */
}

__attribute__((noinline)) static size_t build_response(int id) {
    size_t n = 512 + (size_t)(id % 64) * 256;
    char *buf = malloc(n);
    memset(buf, 'x', n);
    size_t len = (size_t)snprintf(buf, n, "response %d", id);
    free(buf);
    return len;
}

__attribute__((noinline)) static size_t parse_headers(int id) {
    size_t total = 0;
    for (int i = 0; i < 8; i++) {
        char *h = malloc(32 + (size_t)i * 16);
        total += (size_t)snprintf(h, 32, "X-Header-%d: %d", i, id);
        free(h);
    }
    return total;
}

int main(int argc, char **argv) {
    int requests = argc > 1 ? atoi(argv[1]) : 50000;
    size_t bytes = 0;
    for (int id = 0; id < requests; id++) {
        bytes += build_response(id) + parse_headers(id);
        remember_session(id);
    }
    size_t cached = 0;
    for (struct session *s = sessions; s; s = s->next)
        cached++;
    printf("served %d requests (%zu bytes of responses); %zu sessions still cached (%zu KiB)\n",
           requests, bytes, cached, cached * sizeof(struct session) / 1024);
    return 0;
}
