/* testfiles.h — small file helpers shared by the passes/ and CLI test suites. */
#ifndef CAPC_TESTS_PASSES_TESTFILES_H
#define CAPC_TESTS_PASSES_TESTFILES_H

#include <stdbool.h>

/* The whole file as a NUL-terminated malloc'd string (caller frees); NULL if unreadable. */
char *read_text_file(const char *path);
bool file_exists(const char *path);
/* The source tree (CAPC_SOURCE_DIR, else "."): data paths are relative to it. */
const char *source_dir(void);
/* "<source dir>/<dir>/<name><ext>", malloc'd (caller frees). */
char *test_data_path(const char *dir, const char *name, const char *ext);
/* That file's text (caller frees), or NULL after printing "cannot read PATH". */
char *read_test_data(const char *dir, const char *name, const char *ext);
/* For a golden-text test whose output got differs from NAME.out.ir's want: prints where they
 * first differ (line number, both lines), then all of got, on stderr. */
void report_text_difference(const char *name, const char *want, const char *got);
/* Removes dir and everything in it (test temp dirs); ignores errors. */
void remove_tree(const char *dir);

#endif
