/* A TLS client that sets up a context per connection: `ssl_leak leak N` makes N connection
 * contexts (an SSL_CTX, an SSL, and an EVP_MD_CTX for a transcript hash) and never frees them;
 * `ssl_leak fixed N` frees each one (SSL_free, SSL_CTX_free, EVP_MD_CTX_free). Build with
 * -lssl -lcrypto (Debian: libssl-dev). */
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct connection {
    SSL_CTX *ctx;
    SSL *ssl;
    EVP_MD_CTX *transcript;
};

__attribute__((noinline)) static int open_connection(struct connection *c) {
    c->ctx = SSL_CTX_new(TLS_client_method());
    c->ssl = c->ctx ? SSL_new(c->ctx) : NULL;
    c->transcript = EVP_MD_CTX_new();
    return c->ssl && c->transcript && EVP_DigestInit_ex(c->transcript, EVP_sha256(), NULL) &&
           EVP_DigestUpdate(c->transcript, "hello", 5);
}

__attribute__((noinline)) static void close_connection(struct connection *c) {
    EVP_MD_CTX_free(c->transcript);
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "leak") && strcmp(argv[1], "fixed"))) {
        fprintf(stderr, "usage: ssl_leak leak|fixed N\n");
        return 2;
    }
    int leak = !strcmp(argv[1], "leak");
    int n = atoi(argv[2]);
    for (int i = 0; i < n; i++) {
        struct connection c;
        if (!open_connection(&c)) {
            fprintf(stderr, "ssl_leak: connection %d failed\n", i);
            return 1;
        }
        if (!leak) {
            close_connection(&c);
        }
    }
    printf("%s: %d connections\n", leak ? "leaky" : "fixed", n);
    return 0;
}
