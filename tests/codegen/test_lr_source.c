/* test_lr_source.c — a learning-rate change is no kernel change (issue 14, the compile
 * cache): the tiny captioner compiled by the capc binary with `-D lr=1e-3` and `-D lr=2e-3`
 * (--target=cpu, --emit-src) gives
 *   - byte-identical cap.cu (rendered even without NVRTC);
 *   - in cap.c, the same text before the kernels (but for the first line, the header comment
 *     that records the -D flags) and the same kernels section, every kernel function in it;
 *   - different tables: the state table's `train.lr` hyperparameter holds each value
 *     (CAP_STATE_HPARAM, init "const(0.001)" / "const(0.002)"), and nothing in the kernels
 *     holds either.
 * The learning rates reach the kernels as state (docs/training.md), not as literals.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "passes/testfiles.h"

#define KERNELS_MARK "/* ---- kernels ---- */"
#define TABLES_MARK "/* ---- tables ---- */"

/* Runs $CAPC_BIN with args (NULL-terminated); stderr into err_path. Returns the exit status. */
static int run_capc(const char *err_path, const char *const *args) {
    const char *bin = getenv("CAPC_BIN");
    assert_non_null(bin);
    char *argv[16] = {(char *)bin};
    int n = 1;
    for (; args[n - 1] != NULL && n < 15; n++) argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0) _exit(127);
        execv(bin, argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

typedef struct Sources {
    char *c, *cu;
} Sources;

/* Compiles the tiny captioner with -D lr=<lr> into dir/<tag>; reads back cap.c and cap.cu. */
static void compile_with_lr(const char *dir, const char *tag, const char *lr, Sources *out) {
    char model[4096], so[4400], src[4400], emit[4500], def[64], err[4400], path[4600];
    snprintf(model, sizeof model, "%s/models/captioner_tiny.json", source_dir());
    snprintf(so, sizeof so, "%s/%s.so", dir, tag);
    snprintf(src, sizeof src, "%s/%s", dir, tag);
    snprintf(emit, sizeof emit, "--emit-src=%s", src);
    snprintf(def, sizeof def, "lr=%s", lr);
    snprintf(err, sizeof err, "%s/%s.stderr", dir, tag);
    const char *args[] = {model, "-o", so, emit, "--target=cpu", "-D", def, NULL};
    int status = run_capc(err, args);
    if (status != 0) {
        char *text = read_text_file(err);
        fail_msg("capc -D %s exited %d: %s", def, status, text ? text : "");
    }
    snprintf(path, sizeof path, "%s/cap.c", src);
    out->c = read_text_file(path);
    snprintf(path, sizeof path, "%s/cap.cu", src);
    out->cu = read_text_file(path);
    assert_non_null(out->c);
    assert_non_null(out->cu);
}

/* The part of text from `from` (or its start, after the first line, when from is NULL) up to
 * `to`, as a malloc'd string; fails when a mark is missing. */
static char *section(const char *text, const char *from, const char *to) {
    const char *a = from ? strstr(text, from) : strchr(text, '\n');
    assert_non_null(a);
    const char *b = strstr(a, to);
    assert_non_null(b);
    char *s = malloc((size_t)(b - a) + 1);
    assert_non_null(s);
    memcpy(s, a, (size_t)(b - a));
    s[b - a] = '\0';
    return s;
}

static int count(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static void test_lr_changes_no_kernel(void **state) {
    (void)state;
    char dir[] = "/tmp/capc-test-lr-XXXXXX";
    assert_non_null(mkdtemp(dir));
    Sources a, b;
    compile_with_lr(dir, "a", "1e-3", &a);
    compile_with_lr(dir, "b", "2e-3", &b);

    /* cap.cu: every CUDA kernel, byte for byte (and it has kernels to compare). */
    assert_true(count(a.cu, "__global__") > 100);
    assert_string_equal(a.cu, b.cu);

    /* cap.c: the prelude and every kernel function; only the header line differs above the
     * tables (it records the -D flags). */
    char *pre_a = section(a.c, NULL, KERNELS_MARK), *pre_b = section(b.c, NULL, KERNELS_MARK);
    assert_string_equal(pre_a, pre_b);
    char *ka = section(a.c, KERNELS_MARK, TABLES_MARK), *kb = section(b.c, KERNELS_MARK, TABLES_MARK);
    assert_true(count(ka, "(void *const *bufs) {") > 100);
    assert_string_equal(ka, kb);
    /* ...and the lr is in no kernel: neither value, as the float literal a constant would be. */
    assert_null(strstr(ka, "0.00100000005f"));
    assert_null(strstr(ka, "0.00200000009f"));

    /* The tables differ exactly where the value lives: train.lr, kind 4 (CAP_STATE_HPARAM). */
    char *ta = strdup(strstr(a.c, TABLES_MARK)), *tb = strdup(strstr(b.c, TABLES_MARK));
    assert_string_not_equal(ta, tb);
    assert_non_null(strstr(ta, "{{\"train.lr\", 0, 0, {0}, 1}, 4, 0, \"const(0.001)\"}"));
    assert_non_null(strstr(tb, "{{\"train.lr\", 0, 0, {0}, 1}, 4, 0, \"const(0.002)\"}"));

    free(pre_a), free(pre_b), free(ka), free(kb), free(ta), free(tb);
    free(a.c), free(a.cu), free(b.c), free(b.cu);
    remove_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lr_changes_no_kernel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
