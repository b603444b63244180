/* fuzz_util.h — helpers shared by the libFuzzer targets (tests/fuzz/fuzz_*.c).
 *
 * libFuzzer hands a target bytes that are not NUL-terminated, but most readers here take C
 * strings, and the dataset readers only take a path: these helpers make both from the input.
 */
#ifndef CAPC_FUZZ_UTIL_H
#define CAPC_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A malloc'd NUL-terminated copy of the input (an embedded NUL just ends the text early, as
 * it would for the real caller). Aborts when out of memory: that is not a finding. */
static inline char *fuzz_cstring(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* The one scratch file of this process (the dataset readers take a path). It lives in
 * /dev/shm when there is one, so that writing it each run costs no disk I/O, and is removed
 * at a normal exit; a crash may leave it behind (named after the pid, so nothing collides). */
static char fuzz_path_buf[256];

static void fuzz_remove_file(void) {
    if (fuzz_path_buf[0]) unlink(fuzz_path_buf);
}

/* Writes the input to the scratch file (suffix: its extension) and returns its path. */
static inline const char *fuzz_write_file(const uint8_t *data, size_t size, const char *suffix) {
    if (!fuzz_path_buf[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        if (!dir || !*dir) dir = "/tmp";
        snprintf(fuzz_path_buf, sizeof fuzz_path_buf, "%s/capc-fuzz-%ld%s", dir, (long)getpid(),
                 suffix);
        atexit(fuzz_remove_file);
    }
    FILE *f = fopen(fuzz_path_buf, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(fuzz_path_buf); /* the machine's fault, not the reader's: stop loudly */
        abort();
    }
    return fuzz_path_buf;
}

/* An internal invariant the code under test broke for this input: report it as a crash. */
#define FUZZ_CHECK(cond, ...)                                                                  \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz check failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

#endif
