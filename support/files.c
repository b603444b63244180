/* files.c — output checks made before any work starts (files.h). */
#include "files.h"
#include "strbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool file_same(const char *a, const char *b) {
    struct stat sa, sb;
    if (!a || !b || stat(a, &sa) != 0 || stat(b, &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The directory part of path ("." when there is none), malloc'd. */
static char *parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    size_t n = (size_t)(slash - path);
    char *dir = malloc(n + 1);
    if (dir) {
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    return dir;
}

int file_check_output(const char *path, const char *what, char *err, size_t err_size) {
    struct stat st;
    if (!path || !*path) {
        snprintf(err, err_size, "%s: the path is empty", what);
        return -1;
    }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, err_size, "%s '%s' is a directory", what, path);
        return -1;
    }
    char *dir = parent_dir(path);
    if (!dir) {
        snprintf(err, err_size, "%s '%s': out of memory", what, path);
        return -1;
    }
    int rc = 0;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, err_size, "%s '%s': directory '%s' does not exist", what, path, dir);
        rc = -1;
    } else if (access(dir, W_OK) != 0) {
        snprintf(err, err_size, "%s '%s': cannot write in directory '%s': %s", what, path, dir,
                 strerror(errno));
        rc = -1;
    }
    free(dir);
    return rc;
}

int file_check_new_output(const char *out, const char *what, const char *const *inputs, int n,
                          char *err, size_t err_size) {
    if (file_check_output(out, what, err, err_size) != 0) return -1;
    return file_refuse_overwrite(out, what, inputs, n, err, err_size);
}

int file_refuse_overwrite(const char *out, const char *what, const char *const *inputs, int n,
                          char *err, size_t err_size) {
    for (int i = 0; i < n; i++)
        if (inputs[i] && file_same(out, inputs[i])) {
            snprintf(err, err_size, "%s '%s' is also the input '%s': writing it would destroy "
                     "that input (choose another output path)", what, out, inputs[i]);
            return -1;
        }
    return 0;
}

/* Records which path failed and why; returns err. */
static int make_dirs_fail(const char *path, int err, char *failed, size_t failed_size) {
    snprintf(failed, failed_size, "%s", path);
    return err;
}

int file_make_dirs(const char *dir, char *failed, size_t failed_size) {
    size_t len = strlen(dir);
    if (len == 0) return make_dirs_fail(dir, ENOENT, failed, failed_size);
    char *path = strdup(dir);
    if (!path) return make_dirs_fail(dir, ENOMEM, failed, failed_size);
    /* Each prefix ending at a '/' must exist before its child is made. */
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            int err = make_dirs_fail(path, errno, failed, failed_size);
            free(path);
            return err;
        }
        path[i] = saved;
    }
    free(path);
    struct stat st;
    if (stat(dir, &st) != 0) return make_dirs_fail(dir, errno, failed, failed_size);
    if (!S_ISDIR(st.st_mode)) return make_dirs_fail(dir, ENOTDIR, failed, failed_size);
    return 0;
}

FileReadStatus file_read_all(const char *path, char **data, size_t *size) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return FILE_READ_CANNOT_OPEN;
    StrBuf b = {0};
    while (strbuf_reserve(&b, (size_t)1 << 16)) {
        size_t room = b.cap - b.len - 1, n = fread(b.data + b.len, 1, room, f);
        b.len += n;
        b.data[b.len] = '\0';
        if (n < room) break;
    }
    bool bad = ferror(f) != 0;
    fclose(f);
    size_t len = b.len;
    if (b.failed || bad) {
        strbuf_free(&b);
        return bad ? FILE_READ_IO_ERROR : FILE_READ_NO_MEMORY;
    }
    *data = strbuf_take(&b);
    if (!*data) return FILE_READ_NO_MEMORY;
    *size = len;
    return FILE_READ_OK;
}
