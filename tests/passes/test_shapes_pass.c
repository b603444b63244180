/* test_shapes_pass.c — the shape pass, tested IR text in, IR text out.
 *
 * Every tests/passes/data/NAME.in.ir is a case (found by listing the folder, so a new case is
 * just new files):
 *   NAME.out.ir  the expected module after pass_infer_shapes, written by hand;
 *   NAME.err     or: the pass must fail, and its message must contain this text (one line).
 * The location tests build modules with the builder so that the SrcLoc is a model file's.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ir.h"
#include "ops.h"
#include "passes.h"
#include "testfiles.h"

#define DATA_DIR "tests/passes/data"

static char *data_path(const char *name, const char *ext) {
    return test_data_path(DATA_DIR, name, ext);
}

/* Reads a data file, failing the test if it is missing. */
static char *read_data(const char *name, const char *ext) {
    char *text = read_test_data(DATA_DIR, name, ext);
    assert_non_null(text);
    return text;
}

static Module *parse_case(const char *name) {
    char *text = read_data(name, ".in.ir");
    Diag d = {0};
    Module *m = ir_parse(text, name, &d);
    free(text);
    if (m == NULL) fail_msg("%s.in.ir does not parse: %s", name, d.msg);
    return m;
}

/* Cuts text at its first newline (expected-error files hold one line). */
static void first_line(char *text) {
    char *nl = strchr(text, '\n');
    if (nl != NULL) *nl = '\0';
}

static void run_expect_output(const char *name) {
    Module *m = parse_case(name);
    Diag d = {0};
    int rc = pass_infer_shapes(m, NULL, &d);
    if (rc != 0) {
        module_free(m);
        fail_msg("%s: pass failed: %s", name, d.msg);
    }
    char *got = ir_module_to_string(m);
    char *want = read_data(name, ".out.ir");
    if (strcmp(got, want) != 0) report_text_difference(name, want, got);
    int same = strcmp(got, want) == 0;
    free(got);
    free(want);
    module_free(m);
    assert_true(same);
}

static void run_expect_error(const char *name) {
    Module *m = parse_case(name);
    Diag d = {0};
    int rc = pass_infer_shapes(m, NULL, &d);
    module_free(m);
    char *want = read_data(name, ".err");
    first_line(want);
    if (rc == 0 || strstr(d.msg, want) == NULL)
        print_error("%s: expected an error containing \"%s\", got rc=%d \"%s\"\n", name, want, rc,
                    d.msg);
    int ok = rc != 0 && strstr(d.msg, want) != NULL;
    free(want);
    assert_true(ok);
}

/* One data-driven case; its state is the case name. */
static void test_data_case(void **state) {
    const char *name = *state;
    char *err_path = data_path(name, ".err");
    bool expect_error = file_exists(err_path);
    free(err_path);
    if (expect_error) run_expect_error(name);
    else run_expect_output(name);
}

/* ---- locations, built with the builder ------------------------------------------------- */

static const SrcLoc MODEL_LOC = {"model.json", 12, 7};

static void test_mismatch_reports_op_location(void **state) {
    (void)state;
    Module *m = module_new("loc");
    Function *f = module_add_function(m, "forward");
    Value *ins[2] = {func_add_input(f, "a", DT_F32, shape_of(2, (int64_t)16, (int64_t)64)),
                     func_add_input(f, "b", DT_F32, shape_of(2, (int64_t)16, (int64_t)32))};
    Op *add = func_add_op(f, OP_ADD, ins, 2, "h", MODEL_LOC);
    func_add_output(f, "h", add->result);

    Diag d = {0};
    int rc = pass_infer_shapes(m, NULL, &d);
    module_free(m);
    assert_int_equal(rc, -1);
    assert_non_null(d.loc.file);
    assert_string_equal(d.loc.file, "model.json");
    assert_int_equal(d.loc.line, 12);
    assert_int_equal(d.loc.col, 7);
    assert_non_null(strstr(d.msg, "add:"));
    assert_non_null(strstr(d.msg, "f32[16,64]"));
    assert_non_null(strstr(d.msg, "f32[16,32]"));
    assert_non_null(strstr(d.msg, "(in %h)"));
}

static void test_operand_count_checked_first(void **state) {
    (void)state;
    Module *m = module_new("arity");
    Function *f = module_add_function(m, "forward");
    Value *a = func_add_input(f, "a", DT_F32, shape_of(1, (int64_t)4));
    Op *add = func_add_op(f, OP_ADD, &a, 1, "y", MODEL_LOC);
    func_add_output(f, "y", add->result);

    Diag d = {0};
    int rc = pass_infer_shapes(m, NULL, &d);
    module_free(m);
    assert_int_equal(rc, -1);
    assert_string_equal(d.msg, "add: expected 2 operands, got 1 (in %y)");
    assert_int_equal(d.loc.line, 12);
}

static void test_variadic_operand_count(void **state) {
    (void)state;
    Module *m = module_new("arity");
    Function *f = module_add_function(m, "forward");
    func_add_input(f, "a", DT_F32, shape_of(1, (int64_t)4));
    Op *cat = func_add_op(f, OP_CONCAT, NULL, 0, "y", MODEL_LOC);
    op_set_int(cat, "axis", 0);
    func_add_output(f, "y", cat->result);

    Diag d = {0};
    int rc = pass_infer_shapes(m, NULL, &d);
    module_free(m);
    assert_int_equal(rc, -1);
    assert_string_equal(d.msg, "concat: expected at least 1 operand, got 0 (in %y)");
}

/* Running the pass twice changes nothing: shapes it gave agree with the rules. */
static void test_idempotent(void **state) {
    (void)state;
    Module *m = parse_case("mlp");
    Diag d = {0};
    assert_int_equal(pass_infer_shapes(m, NULL, &d), 0);
    char *once = ir_module_to_string(m);
    assert_int_equal(pass_infer_shapes(m, NULL, &d), 0);
    char *twice = ir_module_to_string(m);
    int same = strcmp(once, twice) == 0;
    free(once);
    free(twice);
    module_free(m);
    assert_true(same);
}

/* ---- main: fixed tests plus one test per data case ------------------------------------- */

static int is_case_file(const char *file) {
    size_t n = strlen(file), ext = strlen(".in.ir");
    return n > ext && strcmp(file + n - ext, ".in.ir") == 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Case names (NAME of NAME.in.ir), sorted so the run order is stable. */
static char **list_cases(int *n) {
    char dir_path[4096];
    snprintf(dir_path, sizeof dir_path, "%s/%s", source_dir(), DATA_DIR);
    DIR *dir = opendir(dir_path);
    *n = 0;
    if (dir == NULL) return NULL;
    char **names = NULL;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (!is_case_file(e->d_name)) continue;
        names = realloc(names, (size_t)(*n + 1) * sizeof *names);
        names[*n] = strdup(e->d_name);
        names[*n][strlen(e->d_name) - strlen(".in.ir")] = '\0';
        (*n)++;
    }
    closedir(dir);
    if (*n > 0) qsort(names, (size_t)*n, sizeof *names, by_name);
    return names;
}

int main(void) {
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_mismatch_reports_op_location),
        cmocka_unit_test(test_operand_count_checked_first),
        cmocka_unit_test(test_variadic_operand_count),
        cmocka_unit_test(test_idempotent),
    };
    const size_t n_fixed = sizeof fixed / sizeof fixed[0];
    int n_cases = 0;
    char **cases = list_cases(&n_cases);
    if (n_cases == 0) {
        fprintf(stderr, "no test cases found in %s/%s\n", source_dir(), DATA_DIR);
        return 1;
    }

    struct CMUnitTest *tests = calloc(n_fixed + (size_t)n_cases, sizeof *tests);
    memcpy(tests, fixed, sizeof fixed);
    for (int i = 0; i < n_cases; i++) {
        struct CMUnitTest *t = &tests[n_fixed + (size_t)i];
        t->name = cases[i];
        t->test_func = test_data_case;
        t->initial_state = cases[i];
    }
    int failed = _cmocka_run_group_tests("shapes_pass", tests, n_fixed + (size_t)n_cases, NULL,
                                         NULL);
    for (int i = 0; i < n_cases; i++) free(cases[i]);
    free(cases);
    free(tests);
    return failed;
}
