/* capc_compile.h — helpers the runtime end-to-end tests share: the source dir and compiling a
 * model with the capc binary the suite was built with (CAPC_BIN). */
#ifndef CAPC_TESTS_RUNTIME_CAPC_COMPILE_H
#define CAPC_TESTS_RUNTIME_CAPC_COMPILE_H

#include <stddef.h>

/* CAPC_SOURCE_DIR, else ".". */
const char *test_src_dir(void);

/* Compiles model (relative to the source dir) with flags into dir/<model file>.so, written to
 * out. On failure why = the last line of capc's output that mentions an error ("capc
 * failed" if none); on success why = "". capc's output goes to dir/capc.log. */
void compile_with_capc(const char *dir, const char *model, const char *flags, char *out,
                       size_t out_size, char *why, size_t why_size);

/* Creates a fresh directory $TMPDIR/<prefix>_XXXXXX (/tmp without TMPDIR) into buf.
 * Returns 0, or -1 when it cannot. */
int make_temp_dir(const char *prefix, char *buf, size_t size);
/* Removes dir and everything in it. Returns 0, or -1 when that failed. */
int remove_temp_dir(const char *dir);

#endif
