/* package_cc.c — files, temp directories and the system C compiler for the packager.
 *
 * Each piece of cap.c (package_build.c) is compiled with
 *     $CAPC_CC (default cc) -std=c11 -O2 -fno-math-errno -fPIC -fopenmp -c PIECE.c -o PIECE.o
 * in the packager's temp dir, and the objects are linked with
 *     $CAPC_CC -shared -fopenmp -o OUT OBJECTS... -lopenblas -lm
 * -fno-math-errno: sqrtf and friends need not set errno (nothing reads it), which leaves loops
 * with them free of branches, so `omp simd` loops (the optimizer's update) vectorize; the
 * values computed are the same. No -march: cap.so runs on any x86-64 the runtime does.
 * Both run with posix_spawnp (no shell: paths with spaces or quotes need no escaping), its output
 * captured in a log file inside the packager's temp dir. A failure of the compiler on code
 * capc generated is a bug in capc; the message carries the compiler's first lines.
 */
#define _GNU_SOURCE /* posix_spawn_file_actions_addchdir_np */
#include <dirent.h>
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "diag.h"
#include "files.h"
#include "package.h"

extern char **environ;

int pkg_write_file(const char *path, const char *text, Diag *d) {
    FILE *f = fopen(path, "wb");
    if (f == NULL) return diag_path_error(d, "write", path, errno);
    size_t len = strlen(text);
    bool short_write = fwrite(text, 1, len, f) != len;
    /* Write errors (disk full) may only surface when the buffer is flushed at fclose. */
    if (fclose(f) != 0 || short_write) return diag_path_error(d, "write", path, short_write ? EIO : errno);
    return 0;
}

char *pkg_make_temp_dir(Diag *d) {
    const char *base = getenv("TMPDIR");
    if (base == NULL || *base == '\0') base = "/tmp";
    size_t size = strlen(base) + 32;
    char *dir = malloc(size);
    if (dir == NULL) {
        diag_path_error(d, "create a temporary directory in", base, ENOMEM);
        return NULL;
    }
    snprintf(dir, size, "%s/capc-XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        diag_path_error(d, "create a temporary directory in", base, errno);
        free(dir);
        return NULL;
    }
    return dir;
}

void pkg_remove_temp_dir(const char *dir) {
    DIR *dp = opendir(dir);
    if (dp != NULL) {
        struct dirent *ent;
        while ((ent = readdir(dp)) != NULL) {
            if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) continue;
            size_t size = strlen(dir) + strlen(ent->d_name) + 2;
            char *path = malloc(size);
            if (path == NULL) continue;
            snprintf(path, size, "%s/%s", dir, ent->d_name);
            unlink(path);
            free(path);
        }
        closedir(dp);
    }
    rmdir(dir);
}

/* The first lines of the compiler's log, for the message (the whole log is too long). */
static void log_excerpt(const char *log_path, char *out, size_t size) {
    out[0] = '\0';
    FILE *f = fopen(log_path, "rb");
    if (f == NULL) return;
    size_t n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    fclose(f);
}

/* Runs argv (in dir, unless NULL) with stdout and stderr into log_path; returns the exit
 * status, or -1 with errno set when the program could not be started. */
static int spawn_and_wait(char *const argv[], const char *log_path, const char *dir) {
    posix_spawn_file_actions_t actions;
    if (posix_spawn_file_actions_init(&actions) != 0) return -1;
    posix_spawn_file_actions_addopen(&actions, 1, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (dir != NULL) posix_spawn_file_actions_addchdir_np(&actions, dir);
    pid_t pid;
    int err = posix_spawnp(&pid, argv[0], &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (err != 0) {
        errno = err;
        return -1;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

const char *const PKG_CC_FLAGS[] = {"-std=c11", "-O2", "-fno-math-errno", "-fPIC", "-fopenmp",
                                     NULL};

const char *pkg_cc_command(void) {
    const char *cc = getenv("CAPC_CC");
    return cc != NULL && *cc != '\0' ? cc : "cc";
}

static int cc_failed(Diag *d, const char *what, int status, const char *log_path) {
    const char *cc = pkg_cc_command();
    if (status < 0) {
        diag_set(d, SRCLOC_NONE, "cannot run the C compiler '%s': %s (install gcc, or set "
                 "CAPC_CC to a C compiler)", cc, strerror(errno));
    } else {
        char excerpt[640];
        log_excerpt(log_path, excerpt, sizeof excerpt);
        diag_set(d, SRCLOC_NONE, "internal error: the C compiler '%s' rejected %s (this is a "
                 "bug in capc; exit status %d):\n%s", cc, what, status, excerpt);
    }
    return -1;
}

char *pkg_path_join(const char *dir, const char *name) {
    size_t size = strlen(dir) + strlen(name) + 2;
    char *path = malloc(size);
    if (path != NULL) snprintf(path, size, "%s/%s", dir, name);
    return path;
}

char *pkg_cc_identity(const char *dir) {
    char *log = pkg_path_join(dir, "cc-version.txt");
    char *const argv[] = {(char *)pkg_cc_command(), "--version", NULL};
    char *text = NULL;
    if (log != NULL && spawn_and_wait(argv, log, NULL) == 0) {
        size_t size = 0;
        Diag d = {0};
        unsigned char *out = pkg_read_file(log, &size, &d);
        if (out != NULL) {
            size_t n = strlen(argv[0]);
            text = malloc(n + size + 2);
            if (text != NULL) {
                memcpy(text, argv[0], n);
                text[n] = '\n';
                memcpy(text + n + 1, out, size);
                text[n + 1 + size] = '\0';
            }
            free(out);
        }
    }
    free(log);
    return text;
}

int pkg_cc_object(const char *dir, const char *src_name, const char *obj_name, Diag *d) {
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)pkg_cc_command();
    for (int i = 0; PKG_CC_FLAGS[i] != NULL; i++) argv[n++] = (char *)PKG_CC_FLAGS[i];
    argv[n++] = "-c";
    argv[n++] = (char *)src_name;
    argv[n++] = "-o";
    argv[n++] = (char *)obj_name;
    argv[n] = NULL;
    size_t size = strlen(dir) + strlen(obj_name) + 8;
    char *log = malloc(size);
    if (log == NULL) return diag_path_error(d, "compile", src_name, ENOMEM);
    snprintf(log, size, "%s/%s.log", dir, obj_name);
    int status = spawn_and_wait(argv, log, dir);
    int rc = 0;
    if (status != 0) {
        char *src = pkg_path_join(dir, src_name);
        rc = cc_failed(d, src != NULL ? src : src_name, status, log);
        free(src);
    }
    free(log);
    return rc;
}

int pkg_cc_link(char *const *objects, int n_objects, const char *out_path, const char *log_path,
                Diag *d) {
    char **argv = malloc(sizeof *argv * ((size_t)n_objects + 10));
    if (argv == NULL) return diag_path_error(d, "write", out_path, ENOMEM);
    int n = 0;
    argv[n++] = (char *)pkg_cc_command();
    argv[n++] = "-shared";
    argv[n++] = "-fopenmp";
    argv[n++] = "-o";
    argv[n++] = (char *)out_path;
    for (int i = 0; i < n_objects; i++) argv[n++] = objects[i];
    argv[n++] = "-lopenblas";
    argv[n++] = "-lm";
    argv[n] = NULL;
    int status = spawn_and_wait(argv, log_path, NULL);
    free(argv);
    return status == 0 ? 0 : cc_failed(d, "the kernel objects at link time", status, log_path);
}

unsigned char *pkg_read_file(const char *path, size_t *size, Diag *d) {
    char *data;
    switch (file_read_all(path, &data, size)) {
    case FILE_READ_OK: return (unsigned char *)data;
    case FILE_READ_CANNOT_OPEN: diag_path_error(d, "read", path, errno); break;
    case FILE_READ_NO_MEMORY: diag_path_error(d, "read", path, ENOMEM); break;
    default: diag_path_error(d, "read", path, EIO); break;
    }
    return NULL;
}

int pkg_write_bytes(const char *path, const void *data, size_t size, Diag *d) {
    FILE *f = fopen(path, "wb");
    if (f == NULL) return diag_path_error(d, "write", path, errno);
    bool short_write = fwrite(data, 1, size, f) != size;
    if (fclose(f) != 0 || short_write) return diag_path_error(d, "write", path, short_write ? EIO : errno);
    return 0;
}
