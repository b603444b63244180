/* capc_compile.c — see capc_compile.h. */
#include "capc_compile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *test_src_dir(void) {
    const char *s = getenv("CAPC_SOURCE_DIR");
    return s && *s ? s : ".";
}

void compile_with_capc(const char *dir, const char *model, const char *flags, char *out,
                       size_t out_size, char *why, size_t why_size) {
    const char *capc = getenv("CAPC_BIN");
    snprintf(out, out_size, "%s/%s.so", dir, strrchr(model, '/') + 1);
    char cmd[4096], log[512];
    snprintf(log, sizeof log, "%s/capc.log", dir);
    snprintf(cmd, sizeof cmd, "%s %s/%s %s -o %s >%s 2>&1", capc ? capc : "capc",
             test_src_dir(), model, flags, out, log);
    why[0] = 0;
    if (system(cmd) == 0) return;
    FILE *f = fopen(log, "r");
    char line[1024];
    snprintf(why, why_size, "capc failed");
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "error")) snprintf(why, why_size, "%s", line);
    if (f) fclose(f);
}

int make_temp_dir(const char *prefix, char *buf, size_t size) {
    const char *t = getenv("TMPDIR");
    snprintf(buf, size, "%s/%s_XXXXXX", t && *t ? t : "/tmp", prefix);
    return mkdtemp(buf) ? 0 : -1;
}

int remove_temp_dir(const char *dir) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}
