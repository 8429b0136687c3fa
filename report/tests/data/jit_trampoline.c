/* The mixed walk's end-to-end program (mixed_unwind.rs): `main` calls `leak_through_jit` through
 * a hand-made function in anonymous executable memory, as a JVM's compiled code calls native
 * code: it keeps a frame pointer and has no unwind tables. `leak_through_jit` keeps 4 MiB in
 * 4 KiB blocks. The program prints the address of that function's return address (right after
 * its `call`) and exits with 3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define LEAKED_BLOCKS 1024

static void *kept[LEAKED_BLOCKS];

__attribute__((noinline)) void leak_through_jit(void *arg) {
    for (int i = 0; i < LEAKED_BLOCKS; i++) {
        kept[i] = malloc(4096); /* LEAK_HERE */
        memset(kept[i], 1, 16);
    }
    (void)arg;
}

/* push rbp; mov rbp, rsp; mov rax, rdi; mov rdi, rsi; call rax; pop rbp; ret:
 * calls its first argument with its second. */
static const unsigned char TRAMPOLINE[] = {
    0x55, 0x48, 0x89, 0xe5, 0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7, 0xff, 0xd0, 0x5d, 0xc3,
};
/* The offset of its return address: after `call rax`. */
#define TRAMPOLINE_RETURN 12

typedef void (*target_fn)(void *);

int main(void) {
    unsigned char *page =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        return 1;
    }
    memcpy(page, TRAMPOLINE, sizeof TRAMPOLINE);
    if (mprotect(page, 4096, PROT_READ | PROT_EXEC) != 0) {
        return 1;
    }
    void (*trampoline)(target_fn, void *);
    memcpy(&trampoline, &page, sizeof page);
    trampoline(leak_through_jit, NULL);
    printf("trampoline return address %p\n", (void *)(page + TRAMPOLINE_RETURN));
    return 3;
}
