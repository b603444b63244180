/* test_util.h — helpers the data tests share: fixture paths and temporary directories. */
#ifndef DATA_TEST_UTIL_H
#define DATA_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* tests/data/fixtures/NAME under the source tree (static buffer: use before the next call). */
static inline const char *fixture(const char *name) {
    static char buf[4096];
    const char *root = getenv("CAPC_SOURCE_DIR");
    snprintf(buf, sizeof buf, "%s/tests/data/fixtures/%s", root ? root : ".", name);
    return buf;
}

/* A fresh directory under $TMPDIR (or /tmp); the caller removes it with rm_tree. */
static inline char *make_temp_dir(void) {
    const char *tmp = getenv("TMPDIR");
    char *dir = malloc(4096);
    snprintf(dir, 4096, "%s/capc_data_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        free(dir);
        return NULL;
    }
    return dir;
}

static inline void rm_tree(char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    free(dir);
}

static inline void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    fputs(text, f);
    fclose(f);
}

#endif
