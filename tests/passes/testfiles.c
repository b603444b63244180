/* testfiles.c — small file helpers shared by the passes/ and CLI test suites. */
#include "testfiles.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

unsigned char *read_binary_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    unsigned char *buf = len >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)len + 1) : NULL;
    if (buf != NULL && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = buf != NULL ? (size_t)len : 0;
    return buf;
}

bool same_file_bytes(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    unsigned char *x = read_binary_file(a, &na), *y = read_binary_file(b, &nb);
    bool same = x != NULL && y != NULL && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

char *read_text_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf != NULL) buf[len] = '\0';
    return buf;
}

bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

const char *source_dir(void) {
    const char *dir = getenv("CAPC_SOURCE_DIR");
    return dir != NULL && dir[0] != '\0' ? dir : ".";
}

void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(path);
            else unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

char *test_data_path(const char *dir, const char *name, const char *ext) {
    size_t n = strlen(source_dir()) + strlen(dir) + strlen(name) + strlen(ext) + 4;
    char *path = malloc(n);
    if (path != NULL) snprintf(path, n, "%s/%s/%s%s", source_dir(), dir, name, ext);
    return path;
}

char *read_test_data(const char *dir, const char *name, const char *ext) {
    char *path = test_data_path(dir, name, ext);
    if (path == NULL) return NULL;
    char *text = read_text_file(path);
    if (text == NULL) fprintf(stderr, "cannot read %s\n", path);
    free(path);
    return text;
}

void report_text_difference(const char *name, const char *want, const char *got) {
    int line = 1;
    const char *w = want, *g = got;
    while (*w != '\0' && *w == *g) {
        if (*w == '\n') line++;
        w++;
        g++;
    }
    while (w > want && w[-1] != '\n') w--;
    while (g > got && g[-1] != '\n') g--;
    fprintf(stderr, "%s: output differs from %s.out.ir at line %d\n  want: %.*s\n  got:  %.*s\n",
            name, name, line, (int)strcspn(w, "\n"), w, (int)strcspn(g, "\n"), g);
    fprintf(stderr, "--- whole output ---\n%s--- end ---\n", got);
}

int start_program(const char *bin, const char *const *args, const char *err_path,
                  const char *out_path) {
    char *argv[32] = {(char *)bin};
    int n = 1;
    for (; args[n - 1] != NULL && n < 31; n++) argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int out = out_path != NULL ? open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : err;
        if (err < 0 || out < 0 || dup2(err, 2) < 0 || dup2(out, 1) < 0) _exit(127);
        execv(bin, argv);
        _exit(127);
    }
    return (int)pid;
}

int wait_program(int pid) {
    int status;
    if (pid < 0 || waitpid((pid_t)pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int run_program(const char *bin, const char *const *args, const char *err_path,
                const char *out_path) {
    return wait_program(start_program(bin, args, err_path, out_path));
}
