/* test_cli.c — the `capc` command line, run as a program ($CAPC_BIN, from the source dir).
 *
 * Each test runs capc with some arguments and checks its exit status, stdout and stderr (as
 * docs/cli.md promises them), and for --dump-ir the files it wrote: they exist, and every .ir
 * dump parses back and prints identically. capc is built with the sanitizers in the test
 * build, so a leak or overflow in any of these runs fails the test through the exit status.
 */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ir.h"
#include "testfiles.h"

#define SMALL_MODEL "tests/passes/data/small_model.json"

typedef struct Run {
    int status; /* exit status; -1 if it did not exit normally */
    char *out, *err;
} Run;

/* A fresh temp dir per test, removed afterwards; capc's stdout/stderr land in it too. */
static int setup_tmp(void **state) {
    char *dir = strdup("/tmp/capc-test-cli-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        free(dir);
        return -1;
    }
    *state = dir;
    return 0;
}

static int teardown_tmp(void **state) {
    remove_tree(*state);
    free(*state);
    return 0;
}

static void run_free(Run *r) {
    free(r->out);
    free(r->err);
}

static void redirect(const char *path, int fd) {
    int f = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f < 0 || dup2(f, fd) < 0) _exit(127);
    close(f);
}

/* Runs $CAPC_BIN with args (NULL-terminated, without argv[0]); output goes through files in
 * tmp so that large outputs cannot block on a pipe. */
static Run run_capc(const char *tmp, const char *const *args) {
    const char *bin = getenv("CAPC_BIN");
    if (bin == NULL) fail_msg("CAPC_BIN is not set (run the tests through ctest)");
    char out_path[4096], err_path[4096];
    snprintf(out_path, sizeof out_path, "%s/stdout.txt", tmp);
    snprintf(err_path, sizeof err_path, "%s/stderr.txt", tmp);

    const char *argv[32] = {bin};
    int n = 1;
    for (; args[n - 1] != NULL && n < 31; n++) argv[n] = args[n - 1];
    argv[n] = NULL;

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        redirect(out_path, STDOUT_FILENO);
        redirect(err_path, STDERR_FILENO);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int wstatus = 0;
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    Run r = {WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1, read_text_file(out_path),
             read_text_file(err_path)};
    assert_non_null(r.out);
    assert_non_null(r.err);
    if (r.err[0] != '\0') print_message("capc stderr: %s", r.err);
    return r;
}

static void assert_contains(const char *text, const char *part) {
    if (strstr(text, part) == NULL) fail_msg("expected to find \"%s\" in:\n%s", part, text);
}

/* Entries in dir, besides . and .. and run_capc's stdout.txt and stderr.txt */
static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
             strcmp(e->d_name, "stdout.txt") != 0 && strcmp(e->d_name, "stderr.txt") != 0;
    closedir(d);
    return n;
}

/* ---- options ---------------------------------------------------------------------------- */

static void test_help(void **state) {
    Run r = run_capc(*state, (const char *[]){"--help", NULL});
    assert_int_equal(r.status, 0);
    assert_contains(r.out, "usage: capc");
    assert_contains(r.out, "--check");
    assert_contains(r.out, "--dump-ir");
    assert_contains(r.out, "-D NAME=VALUE");
    run_free(&r);
}

static void test_version(void **state) {
    Run r = run_capc(*state, (const char *[]){"--version", NULL});
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "capc " CAPC_VERSION "\n");
    run_free(&r);
}

static void test_unknown_option(void **state) {
    Run r = run_capc(*state, (const char *[]){"--x", SMALL_MODEL, NULL});
    assert_int_equal(r.status, 2);
    assert_string_equal(r.err, "capc: error: unknown option '--x' (see capc --help)\n");
    assert_string_equal(r.out, "");
    run_free(&r);
}

static void test_no_model(void **state) {
    Run r = run_capc(*state, (const char *[]){"--check", NULL});
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "no model file given");
    run_free(&r);
}

static void test_missing_value(void **state) {
    Run r = run_capc(*state, (const char *[]){SMALL_MODEL, "--dump-ir", NULL});
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "'--dump-ir' needs a value");
    run_free(&r);
}

static void test_missing_file(void **state) {
    Run r = run_capc(*state, (const char *[]){"--check", "x.json", NULL});
    assert_int_equal(r.status, 1);
    assert_contains(r.err, "capc: error: cannot open 'x.json': No such file or directory");
    run_free(&r);
}

/* -o writes the library, silently (tests/codegen/test_package.c checks what it holds). */
static void test_output_writes_library(void **state) {
    char so[4096];
    snprintf(so, sizeof so, "%s/cap.so", (char *)*state);
    Run r = run_capc(*state, (const char *[]){SMALL_MODEL, "-o", so, "--target=cpu", NULL});
    if (r.status != 0) fail_msg("capc exited %d: %s", r.status, r.err);
    assert_string_equal(r.out, "");
    assert_true(file_exists(so));
    run_free(&r);
}

/* ---- --check ---------------------------------------------------------------------------- */

/* small_model.json: fc1 [64,32]+[64], bn (frozen) [64]+[64] with 2 buffers of 64, fc2
 * [10,64]+[10]. */
static void test_check_summary(void **state) {
    Run r = run_capc(*state, (const char *[]){"--check", SMALL_MODEL, NULL});
    assert_int_equal(r.status, 0);
    assert_contains(r.out, "model: small_mlp\n");
    assert_contains(r.out, "batch=8");
    assert_contains(r.out, "hidden=64");
    assert_contains(r.out, "dropout=0.1");
    assert_contains(r.out, "input  x: f32[8,32]\n");
    assert_contains(r.out, "input  label: i32[8]\n");
    assert_contains(r.out, "output loss: f32[]\n");
    assert_contains(r.out, "output logits: f32[8,10]\n");
    assert_contains(r.out, "\nparameter tensors: 6 (4 trainable, 2 frozen)\n");
    assert_contains(r.out, "\nparameters: 2890\n");
    assert_contains(r.out, "\ntrainable: 2762\n");
    assert_contains(r.out, "\nbuffers: 2 tensors, 128 elements\n");
    assert_contains(r.out, "\nops: ");
    run_free(&r);
}

/* --verify-each verifies after every IR pass; the summary is the same as without it. */
static void test_verify_each(void **state) {
    Run once = run_capc(*state, (const char *[]){"--check", SMALL_MODEL, NULL});
    Run each = run_capc(*state, (const char *[]){"--check", "--verify-each", SMALL_MODEL, NULL});
    assert_int_equal(once.status, 0);
    assert_int_equal(each.status, 0);
    assert_string_equal(each.out, once.out);
    run_free(&once);
    run_free(&each);
}

/* Both spellings of -D, and the override reaches the shapes. */
static void test_check_defines(void **state) {
    Run r = run_capc(*state, (const char *[]){"--check", "-D", "batch=4", SMALL_MODEL,
                                               "-Dhidden=16", NULL});
    assert_int_equal(r.status, 0);
    assert_contains(r.out, "input  x: f32[4,32]\n");
    assert_contains(r.out, "output logits: f32[4,10]\n");
    /* fc1 16*32+16, bn 16+16, fc2 10*16+10 */
    assert_contains(r.out, "\nparameters: 730\n");
    assert_contains(r.out, "\nbuffers: 2 tensors, 32 elements\n");
    run_free(&r);
}

/* A shape error found by the pass points into the model file, compiler-style, with the
 * source line and a caret under the op. */
static void test_shape_error_location(void **state) {
    Run r = run_capc(*state, (const char *[]){"--check", "tests/passes/data/bad_shapes_model.json",
                                               NULL});
    assert_int_equal(r.status, 1);
    assert_string_equal(r.out, "");
    assert_contains(r.err, "tests/passes/data/bad_shapes_model.json:10:13: error: add: cannot "
                           "broadcast f32[4,8] with f32[4,3] (in %sum)\n");
    assert_contains(r.err, "{ \"op\": \"add\"");
    assert_contains(r.err, "\n              ^");
    run_free(&r);
}

static void test_bad_define(void **state) {
    Run r = run_capc(*state, (const char *[]){"--check", "-D", "batch", SMALL_MODEL, NULL});
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "capc: error: ");
    run_free(&r);
}

/* ---- --dump-ir -------------------------------------------------------------------------- */

/* Every .ir dump parses back and prints exactly as written. */
static void assert_dump_round_trips(const char *dir, const char *stem) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.dot", dir, stem);
    if (!file_exists(path)) fail_msg("missing dump %s", path);
    snprintf(path, sizeof path, "%s/%s.ir", dir, stem);
    char *text = read_text_file(path);
    if (text == NULL) fail_msg("missing dump %s", path);

    Diag d = {0};
    Module *m = ir_parse(text, path, &d);
    if (m == NULL) {
        print_error("%s does not parse: %s\n", path, d.msg);
        free(text);
        fail();
    }
    char *again = ir_module_to_string(m);
    int same = strcmp(text, again) == 0;
    if (!same) print_error("%s re-prints differently:\n%s\n", path, again);
    free(again);
    free(text);
    module_free(m);
    assert_true(same);
}

static void test_dump_ir(void **state) {
    char dir[4096], arg[4200];
    snprintf(dir, sizeof dir, "%s/dumps/nested", (char *)*state); /* mkdir -p */
    snprintf(arg, sizeof arg, "--dump-ir=%s", dir);
    Run r = run_capc(*state, (const char *[]){SMALL_MODEL, arg, NULL});
    assert_int_equal(r.status, 0);
    assert_contains(r.out, dir);
    assert_dump_round_trips(dir, "00-frontend");
    assert_dump_round_trips(dir, "01-shapes");

    /* The frontend dump has shapes still to infer; after the pass there are none left. */
    char path[4300];
    snprintf(path, sizeof path, "%s/00-frontend.ir", dir);
    char *frontend = read_text_file(path);
    snprintf(path, sizeof path, "%s/01-shapes.ir", dir);
    char *shapes = read_text_file(path);
    int frontend_has_unknown = strstr(frontend, ": ?") != NULL;
    int shapes_has_unknown = strstr(shapes, ": ?") != NULL;
    free(frontend);
    free(shapes);
    run_free(&r);
    assert_true(frontend_has_unknown);
    assert_false(shapes_has_unknown);
}

static void test_dump_ir_separate_arg(void **state) {
    Run r = run_capc(*state, (const char *[]){"--check", SMALL_MODEL, "--dump-ir", *state, NULL});
    assert_int_equal(r.status, 0);
    assert_contains(r.out, "\nparameters: 2890\n");
    assert_dump_round_trips(*state, "00-frontend");
    assert_dump_round_trips(*state, "01-shapes");
    run_free(&r);
}

/* A dump directory that cannot be made is reported with its path. */
static void test_dump_ir_unwritable(void **state) {
    char file[4096], dir[4200];
    snprintf(file, sizeof file, "%s/plain-file", (char *)*state);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(dir, sizeof dir, "%s/sub", file);
    Run r = run_capc(*state, (const char *[]){SMALL_MODEL, "--dump-ir", dir, NULL});
    assert_int_equal(r.status, 1);
    assert_contains(r.err, "capc: error: cannot create directory '");
    assert_contains(r.err, file);
    run_free(&r);
}

/* ---- outputs that are the model file ------------------------------------------------------ */

/* Copies SMALL_MODEL to TMP/name; returns its text (caller frees) for comparing afterwards. */
static char *copy_model(const char *tmp, const char *name, char *path, size_t size) {
    char *text = read_text_file(SMALL_MODEL);
    assert_non_null(text);
    snprintf(path, size, "%s/%s", tmp, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    return text;
}

/* Runs capc with args, which must be refused (exit 1, the message naming the model) before
 * anything is written: the model file keeps its text and the directory gains no file. */
static void assert_refused(const char *tmp, const char *model, const char *text,
                           const char *const *args, const char *option) {
    int before = count_files(tmp);
    Run r = run_capc(tmp, args);
    assert_int_equal(r.status, 1);
    char want[4200];
    snprintf(want, sizeof want, "capc: error: %s would overwrite '", option);
    assert_contains(r.err, want);
    snprintf(want, sizeof want, "which is the model file '%s'; choose another output", model);
    assert_contains(r.err, want);
    run_free(&r);
    char *now = read_text_file(model);
    assert_non_null(now);
    assert_string_equal(now, text);
    free(now);
    assert_int_equal(count_files(tmp), before); /* no OUT.tmp.PID, no dump, no cap.c */
}

/* -o naming the model itself, by the same name and by another name of the same file (a hard
 * link and a symlink): the file is the same by device and inode, so all are refused. */
static void test_output_is_model(void **state) {
    const char *tmp = *state;
    char model[4096], link_path[4200], sym_path[4200];
    char *text = copy_model(tmp, "m.json", model, sizeof model);
    assert_refused(tmp, model, text, (const char *[]){model, "-o", model, "--target=cpu", NULL},
                   "-o");
    snprintf(link_path, sizeof link_path, "%s/hard.so", tmp);
    assert_int_equal(link(model, link_path), 0);
    assert_refused(tmp, model, text, (const char *[]){model, "-o", link_path, NULL}, "-o");
    snprintf(sym_path, sizeof sym_path, "%s/sym.json", tmp);
    assert_int_equal(symlink("m.json", sym_path), 0);
    assert_refused(tmp, sym_path, text, (const char *[]){sym_path, "-o", model, NULL}, "-o");
    free(text);
}

/* A model that extends another: the file it extends is an input too (read by the frontend),
 * so -o naming it is refused once the frontend has read it, before anything is written. */
static void test_output_is_extended_model(void **state) {
    const char *tmp = *state;
    char base[4096], ext[4200];
    char *text = copy_model(tmp, "base.json", base, sizeof base);
    snprintf(ext, sizeof ext, "%s/ext.json", tmp);
    FILE *f = fopen(ext, "w");
    assert_non_null(f);
    fputs("{\"extends\": \"base.json\"}\n", f);
    assert_int_equal(fclose(f), 0);
    int before = count_files(tmp);
    Run r = run_capc(tmp, (const char *[]){ext, "-o", base, "--target=cpu", NULL});
    assert_int_equal(r.status, 1);
    assert_contains(r.err, "capc: error: -o would overwrite '");
    assert_contains(r.err, "which is a file the model reads '");
    run_free(&r);
    char *now = read_text_file(base);
    assert_non_null(now);
    assert_string_equal(now, text);
    free(now);
    free(text);
    assert_int_equal(count_files(tmp), before);
}

/* --emit-src DIR writes DIR/cap.c and DIR/cap.cu; --dump-ir DIR writes NN-STAGE.* (with
 * --check too): a model file of one of those names in DIR is refused. */
static void test_emit_and_dump_are_not_model(void **state) {
    const char *tmp = *state;
    char model[4096], so[4200];
    snprintf(so, sizeof so, "%s/out.so", tmp);
    char *text = copy_model(tmp, "cap.cu", model, sizeof model);
    assert_refused(tmp, model, text,
                   (const char *[]){model, "-o", so, "--emit-src", tmp, "--target=cpu", NULL},
                   "--emit-src");
    free(text);
    assert_int_equal(unlink(model), 0);
    text = copy_model(tmp, "05-fuse.ir", model, sizeof model);
    assert_refused(tmp, model, text, (const char *[]){"--check", model, "--dump-ir", tmp, NULL},
                   "--dump-ir");
    free(text);
    assert_int_equal(unlink(model), 0);
    text = copy_model(tmp, "09-kernels.cu", model, sizeof model);
    assert_refused(tmp, model, text, (const char *[]){model, "--dump-ir", tmp, NULL}, "--dump-ir");
    free(text);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_tmp, teardown_tmp)
    const struct CMUnitTest tests[] = {
        T(test_help),
        T(test_version),
        T(test_unknown_option),
        T(test_no_model),
        T(test_missing_value),
        T(test_missing_file),
        T(test_output_writes_library),
        T(test_check_summary),
        T(test_verify_each),
        T(test_check_defines),
        T(test_shape_error_location),
        T(test_bad_define),
        T(test_dump_ir),
        T(test_dump_ir_separate_arg),
        T(test_dump_ir_unwritable),
        T(test_output_is_model),
        T(test_output_is_extended_model),
        T(test_emit_and_dump_are_not_model),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
