/* Preloaded after libtally.so by scripts/check-hot-text.sh, natively (not under callgrind): at
 * exit, for each mapping of the file named by $HOT_TEXT_LIB, prints one line
 *
 *   window <perms> <file offset of the mapping> <64 KiB windows of the file with a page mapped>
 *
 * read from /proc/self/pagemap (a page's "present" bit). The kernel maps a file's pages in
 * windows of 64 KiB around each one a program touches (fault-around), so the windows with any
 * page mapped are the ones the program made resident. Prints nothing if it cannot read them. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WINDOW 0x10000UL

__attribute__((destructor)) static void windows(void) {
    const char *lib = getenv("HOT_TEXT_LIB");
    FILE *maps = fopen("/proc/self/maps", "r");
    int pagemap = open("/proc/self/pagemap", O_RDONLY);
    if (!lib || !maps || pagemap < 0)
        return;
    long page = sysconf(_SC_PAGESIZE);
    char line[4096];
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi, offset;
        char perms[8], path[4096];
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %4095s", &lo, &hi, perms, &offset, path) != 5 ||
            strcmp(path, lib) != 0)
            continue;
        unsigned long last = (unsigned long)-1, count = 0;
        for (unsigned long a = lo; a < hi; a += (unsigned long)page) {
            uint64_t entry;
            if (pread(pagemap, &entry, sizeof entry, (off_t)(a / (unsigned long)page * 8)) != 8)
                return;
            unsigned long window = (offset + (a - lo)) / WINDOW;
            if ((entry >> 63) && window != last) {
                count++;
                last = window;
            }
        }
        fprintf(stderr, "window %s %lx %lu\n", perms, offset, count);
    }
}
