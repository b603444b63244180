/* testfiles.h — small file helpers shared by the passes/ and CLI test suites. */
#ifndef CAPC_TESTS_PASSES_TESTFILES_H
#define CAPC_TESTS_PASSES_TESTFILES_H

#include <stdbool.h>
#include <stddef.h>

/* The whole file as a NUL-terminated malloc'd string (caller frees); NULL if unreadable. */
char *read_text_file(const char *path);
bool file_exists(const char *path);
/* The whole file's bytes (malloc'd, caller frees; *n its size), or NULL if unreadable. */
unsigned char *read_binary_file(const char *path, size_t *n);
/* Both files readable and byte for byte the same. */
bool same_file_bytes(const char *a, const char *b);
/* The source tree (CAPC_SOURCE_DIR, else "."): data paths are relative to it. */
const char *source_dir(void);
/* "<source dir>/<dir>/<name><ext>", malloc'd (caller frees). */
char *test_data_path(const char *dir, const char *name, const char *ext);
/* That file's text (caller frees), or NULL after printing "cannot read PATH". */
char *read_test_data(const char *dir, const char *name, const char *ext);
/* For a golden-text test whose output got differs from NAME.out.ir's want: prints where they
 * first differ (line number, both lines), then all of got, on stderr. */
void report_text_difference(const char *name, const char *want, const char *got);
/* Runs bin with args (NULL-terminated, at most 30), its stderr into err_path (stdout too when
 * out_path is NULL, else into out_path). Returns its exit status, or -1 if it did not exit. */
int run_program(const char *bin, const char *const *args, const char *err_path,
                const char *out_path);
/* Starts the same without waiting: the child's pid (wait with wait_program). */
int start_program(const char *bin, const char *const *args, const char *err_path,
                  const char *out_path);
int wait_program(int pid);
/* Removes dir and everything in it (test temp dirs); ignores errors. */
void remove_tree(const char *dir);

#endif
