/* A shared library with a large thread-local block. dlopen'ed after threads exist, its TLS is
 * dynamic: glibc's __tls_get_addr allocates each thread's block with malloc on first use. */
#include <string.h>

static __thread char block[16384];
static __thread unsigned long uses;

unsigned long touch_tls(int seed) {
    memset(block, seed, sizeof block);
    uses++;
    unsigned long sum = 0;
    for (size_t i = 0; i < sizeof block; i += 512)
        sum += (unsigned char)block[i];
    return sum + uses;
}
