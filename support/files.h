/* files.h — the checks every command makes before writing: an output must not be one of its
 * inputs, and its location must be writable before any work starts (docs/cli.md, "What the
 * commands refuse"), and making the directories an output goes into. Shared by capc, cap and
 * the data tools. */
#ifndef CAPC_FILES_H
#define CAPC_FILES_H

#include <stdbool.h>
#include <stddef.h>

/* Whether a and b name the same existing file (same device and inode: links, symlinks and
 * "./x" vs "x" all count). False when either does not exist. */
bool file_same(const char *a, const char *b);

/* An output path that can be written: not empty, not a directory, in an existing directory
 * we may write to. Returns 0, or -1 with "WHAT 'PATH': why" in err. */
int file_check_output(const char *path, const char *what, char *err, size_t err_size);

/* Refuses output `out` (named `what`) when it is one of inputs[0..n) (NULL entries skipped).
 * Returns 0, or -1 with "WHAT 'OUT' is also the input 'IN': ... would overwrite it" in err. */
int file_refuse_overwrite(const char *out, const char *what, const char *const *inputs, int n,
                          char *err, size_t err_size);

/* Both checks for one output: file_check_output, then file_refuse_overwrite. */
int file_check_new_output(const char *out, const char *what, const char *const *inputs, int n,
                          char *err, size_t err_size);

/* mkdir -p: creates dir and any missing parents (mode 0777, less the umask); an existing
 * directory is fine. Returns 0, or an errno value (ENOENT for an empty path, ENOTDIR when dir
 * is there but not a directory) with the path that could not be made, dir or one of its
 * parents, copied into failed[0..failed_size). */
int file_make_dirs(const char *dir, char *failed, size_t failed_size);

/* How reading a whole file ended. */
typedef enum {
    FILE_READ_OK,
    FILE_READ_CANNOT_OPEN, /* errno says why */
    FILE_READ_NO_MEMORY,
    FILE_READ_IO_ERROR,
} FileReadStatus;

/* Reads all of path: *data (malloc'd, the caller frees; a NUL follows the *size bytes).
 * Anything but FILE_READ_OK leaves *data NULL and *size 0. */
FileReadStatus file_read_all(const char *path, char **data, size_t *size);

#endif
