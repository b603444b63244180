/* test_errors.c — the data-driven error suite: every tests/frontend/errors/NAME.json is a bad
 * model, NAME.err holds the exact first line capc must print on stderr, and NAME.args (one
 * argument per line, optional) holds extra command-line arguments such as -D.
 *
 * For each case it runs `$CAPC_BIN --check [args] tests/frontend/errors/NAME.json` from the
 * source tree and requires exit status exactly 1 (a sanitizer report or a crash gives another
 * status: the child's sanitizers are told to exit with 86/87) and the expected first line.
 * All cases run; the failures are listed together.
 */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define ERR_DIR "tests/frontend/errors"
#define MIN_CASES 20
#define MAX_ARGS 16

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = '\0';
    fclose(f);
    return s;
}

static void cut_first_line(char *s) { s[strcspn(s, "\n")] = '\0'; }

/* Runs capc on one case; returns its wait status and fills first_line (stderr's first line). */
static int run_capc(const char *bin, char **extra, int n_extra, const char *json, char *first_line,
                    size_t size) {
    char tmpl[] = "/tmp/capc_errXXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    unlink(tmpl);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *argv[MAX_ARGS + 4];
        int k = 0;
        argv[k++] = (char *)bin;
        argv[k++] = "--check";
        for (int i = 0; i < n_extra; i++) argv[k++] = extra[i];
        argv[k++] = (char *)json;
        argv[k] = NULL;
        dup2(fd, 2);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 1);
        setenv("ASAN_OPTIONS", "detect_leaks=1:exitcode=86", 1);
        setenv("UBSAN_OPTIONS", "exitcode=87:halt_on_error=1:print_stacktrace=1", 1);
        execv(bin, argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    first_line[0] = '\0';
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, first_line, size - 1);
    first_line[n > 0 ? n : 0] = '\0';
    cut_first_line(first_line);
    close(fd);
    return status;
}

/* Splits NAME.args into arguments (one per line); returns how many. */
static int read_args(const char *path, char **text, char **args) {
    *text = read_file(path);
    int n = 0;
    for (char *line = *text ? strtok(*text, "\n") : NULL; line && n < MAX_ARGS; line = strtok(NULL, "\n"))
        args[n++] = line;
    return n;
}

static int check_case(const char *bin, const char *name) {
    char json[512], err_path[512], args_path[512], got[1024];
    snprintf(json, sizeof json, ERR_DIR "/%s.json", name);
    snprintf(err_path, sizeof err_path, ERR_DIR "/%s.err", name);
    snprintf(args_path, sizeof args_path, ERR_DIR "/%s.args", name);
    char *expected = read_file(err_path);
    if (!expected) {
        fprintf(stderr, "FAIL %s: no %s\n", name, err_path);
        return 1;
    }
    cut_first_line(expected);
    char *args_text, *args[MAX_ARGS];
    int n_args = read_args(args_path, &args_text, args);
    int status = run_capc(bin, args, n_args, json, got, sizeof got);
    int failed = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1) {
        fprintf(stderr, "FAIL %s: %s %d (want exit status 1)\n", name,
                WIFEXITED(status) ? "exit status" : "killed by signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        failed = 1;
    }
    if (strcmp(got, expected) != 0) {
        fprintf(stderr, "FAIL %s:\n  want: %s\n  got:  %s\n", name, expected, got);
        failed = 1;
    }
    free(expected);
    free(args_text);
    return failed;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_error_cases(void **state) {
    (void)state;
    const char *bin = getenv("CAPC_BIN");
    assert_non_null(bin);
    DIR *dir = opendir(ERR_DIR);
    assert_non_null(dir);
    char *names[1024];
    int n = 0;
    for (struct dirent *e; (e = readdir(dir)) && n < 1024;) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0) names[n++] = strndup(e->d_name, len - 5);
    }
    closedir(dir);
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    int failures = 0;
    for (int i = 0; i < n; i++) {
        failures += check_case(bin, names[i]);
        free(names[i]);
    }
    fprintf(stderr, "%d error cases, %d failed\n", n, failures);
    assert_true(n >= MIN_CASES);
    assert_int_equal(failures, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_error_cases)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
