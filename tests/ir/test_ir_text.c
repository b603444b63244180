/* test_ir_text.c — the IR text form and the builder: every file in tests/ir/data/ (every .ir file) parses,
 * verifies (without shapes) and prints back byte for byte; together the files use every op
 * in the table; broken inputs fail with the right line:col; the builder's naming rules;
 * attribute formatting (floats read back exactly and always look like floats).
 */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ops.h"

static char *read_text(const char *path) {
    FILE *in = fopen(path, "rb");
    if (!in) return NULL;
    fseek(in, 0, SEEK_END);
    long n = ftell(in);
    fseek(in, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    size_t got = fread(text, 1, (size_t)n, in);
    text[got] = '\0';
    fclose(in);
    return text;
}

static const char *data_dir(char *buf, size_t size) {
    const char *src = getenv("CAPC_SOURCE_DIR");
    snprintf(buf, size, "%s/tests/ir/data", src ? src : ".");
    return buf;
}

/* Parses, verifies without shapes, prints; the text must come back unchanged, and so must a
 * second round. Marks the op kinds the file uses in seen[]. */
static void round_trip_file(const char *path, bool *seen) {
    char *text = read_text(path);
    assert_non_null(text);
    Diag d;
    Module *m = ir_parse(text, path, &d);
    if (!m) fail_msg("%s: %s", path, d.msg);
    if (ir_verify_module(m, false, &d) != 0) fail_msg("%s: verify: %s", path, d.msg);
    /* Fully shaped files must also agree with the shape rules, so the hand-written types in
     * the data files are checked rather than trusted. */
    bool shaped = true;
    for (int i = 0; i < m->n_funcs; i++)
        for (int j = 0; j < m->funcs[i]->n_values; j++)
            shaped = shaped && shape_known(&m->funcs[i]->values[j]->shape);
    if (shaped && ir_verify_module(m, true, &d) != 0)
        fail_msg("%s: verify with shapes: %s", path, d.msg);
    for (int i = 0; i < m->n_funcs; i++)
        for (int j = 0; j < m->funcs[i]->n_ops; j++) seen[m->funcs[i]->ops[j]->kind] = true;
    char *printed = ir_module_to_string(m);
    if (strcmp(printed, text) != 0)
        fail_msg("%s does not print back identically; printed:\n%s", path, printed);
    Module *again = ir_parse(printed, "printed", &d);
    if (!again) fail_msg("%s reprinted: %s", path, d.msg);
    char *printed2 = ir_module_to_string(again);
    assert_string_equal(printed, printed2);
    free(printed2);
    module_free(again);
    free(printed);
    module_free(m);
    free(text);
}

static void test_data_files_round_trip_and_cover_every_op(void **state) {
    (void)state;
    char dir[4096];
    data_dir(dir, sizeof dir);
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    bool seen[OP_COUNT] = {false};
    int files = 0;
    struct dirent *ent;
    while ((ent = readdir(dp)) != NULL) {
        size_t n = strlen(ent->d_name);
        if (n < 4 || strcmp(ent->d_name + n - 3, ".ir") != 0) continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        round_trip_file(path, seen);
        files++;
    }
    closedir(dp);
    assert_true(files >= 1);
    for (int k = 0; k < OP_COUNT; k++)
        if (!seen[k]) fail_msg("op '%s' appears in no tests/ir/data/*.ir file", OP_TABLE[k].name);
}

/* ---- parse errors --------------------------------------------------------------------- */

typedef struct BadInput {
    const char *text;
    const char *where;   /* expected "LINE:COL:" prefix */
    const char *message; /* expected substring */
} BadInput;

static const BadInput BAD_INPUTS[] = {
    {"func @f() {\n  return\n}\n", "1:1:", "expected 'module"},
    {"module \"m\"\nfunc @f(%x : f32[2]) {\n  %y = frobnicate(%x) : ?\n  return\n}\n", "3:8:",
     "unknown op 'frobnicate'"},
    {"module \"m\"\nfunc @f(%x : f32[2]) {\n  %y = relu(%z) : ?\n  return y=%y\n}\n", "3:13:",
     "undefined value %z"},
    {"module \"m\"\nfunc @f(%x : f32[2]) {\n  %y = scale(%x) : ?\n  return\n}\n", "3:17:",
     "missing attribute 'factor'"},
    {"module \"m\"\nfunc @f(%x : f32[2]) {\n  %y = scale(%x) {factor=1.0, bogus=2} : ?\n}\n",
     "3:31:", "no attribute 'bogus'"},
    {"module \"m\"\nfunc @f(%x : f32[2]) {\n  %y = scale(%x) {factor=\"a\"} : ?\n}\n", "3:26:",
     "attribute 'factor' (float)"},
    {"module \"m\"\nfunc @f(%x : f32[2]) {\n  %x = relu(%x) : ?\n  return\n}\n", "3:3:",
     "defined twice"},
    {"module \"m\"\nfunc @f(%x : q8[2]) {\n  return\n}\n", "2:14:", "unknown dtype 'q8'"},
    {"module \"m\"\nfunc @f(%x : f32[2]) {\n  %y = relu(%x) : f32[2]\n", "4:1:",
     "has no 'return'"},
    {"module \"m\"\nparam @w : f32[2] init=\"zeros\nfunc @f() {\n  return\n}\n", "2:24:",
     "unterminated string"},
    {"module \"m\"\nfunc @f(%x : f32[2]) {\n  %y = slice(%x) {axis=0, start=1.5, end=2, step=1} : "
     "?\n  return\n}\n",
     "3:33:", "attribute 'start' (int)"},
    {"module \"m\"\nbuffer @b : f32[2] init=\"zeros\" frozen\n", "2:33:", "never trainable"},
    {"module \"m\"\nhparam @lr : f32[] init=\"const(0.1)\" frozen\n", "2:38:", "never trainable"},
};

static void test_parse_errors_name_line_and_column(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof BAD_INPUTS / sizeof BAD_INPUTS[0]; i++) {
        Diag d;
        Module *m = ir_parse(BAD_INPUTS[i].text, "bad.ir", &d);
        if (m) {
            module_free(m);
            fail_msg("bad input %zu parsed", i);
        }
        if (strncmp(d.msg, BAD_INPUTS[i].where, strlen(BAD_INPUTS[i].where)) != 0 ||
            !strstr(d.msg, BAD_INPUTS[i].message))
            fail_msg("bad input %zu: got \"%s\", want %s ... %s", i, d.msg, BAD_INPUTS[i].where,
                     BAD_INPUTS[i].message);
        assert_string_equal(d.loc.file, "bad.ir");
        assert_true(d.loc.line > 0 && d.loc.col > 0);
    }
}

/* Comments and free spacing are read and dropped; the printer writes the canonical form. */
static void test_comments_and_spacing_are_ignored(void **state) {
    (void)state;
    const char *messy = "# leading comment\nmodule   \"m\"  # trailing\n\n\n"
                        "config  a=3\nconfig b = -2.5e-3\n"
                        "func @f( %x:f32[ 2 , 3 ] ) {   # inputs\n"
                        "  # a comment line inside a body\n"
                        "  %y=scale( %x ){ factor = 2 }:f32[2,3]\n"
                        "  return   out = %y\n}\n";
    const char *canonical = "# capc IR\nmodule \"m\"\n\nconfig a = 3\nconfig b = -0.0025\n\n"
                            "func @f(%x : f32[2,3]) {\n"
                            "  %y = scale(%x) {factor=2.0} : f32[2,3]\n"
                            "  return out=%y\n}\n";
    Diag d;
    Module *m = ir_parse(messy, "messy.ir", &d);
    if (!m) fail_msg("%s", d.msg);
    char *printed = ir_module_to_string(m);
    assert_string_equal(printed, canonical);
    assert_true(module_find_config(m, "a")->is_int);
    assert_false(module_find_config(m, "b")->is_int);
    assert_int_equal(m->funcs[0]->ops[0]->loc.line, 9);
    assert_int_equal(m->funcs[0]->ops[0]->loc.col, 3);
    free(printed);
    module_free(m);
}

/* ---- builder -------------------------------------------------------------------------- */

static void test_builder_naming(void **state) {
    (void)state;
    Module *m = module_new("naming");
    Function *f = module_add_function(m, "f");
    assert_null(module_add_function(m, "f"));
    Value *x = func_add_input(f, "x", DT_F32, shape_of(1, (int64_t)4));
    Value *x1 = func_add_input(f, "x", DT_F32, shape_of(1, (int64_t)4));
    Value *anon = func_add_input(f, NULL, DT_I32, shape_scalar());
    assert_string_equal(x->name, "x");
    assert_string_equal(x1->name, "x.1");
    assert_string_equal(anon->name, "t2");
    Op *r = func_add_op(f, OP_RELU, &x, 1, "x", SRCLOC_NONE);
    assert_string_equal(r->result->name, "x.2");
    Op *bad = func_add_op(f, OP_RELU, &x, 1, "has space-and-dash", SRCLOC_NONE);
    assert_string_equal(bad->result->name, "has_space_and_dash");
    /* A name freed by a rename is the smallest free suffix again. */
    value_rename(x1, "renamed");
    assert_string_equal(x1->name, "renamed");
    assert_null(func_find_value(f, "x.1"));
    assert_ptr_equal(func_find_value(f, "renamed"), x1);
    Op *again = func_add_op(f, OP_RELU, &x, 1, "x", SRCLOC_NONE);
    assert_string_equal(again->result->name, "x.1");
    /* Renaming onto a taken name uniquifies; renaming to its own name keeps it. */
    value_rename(again->result, "renamed");
    assert_string_equal(again->result->name, "renamed.1");
    value_rename(x, "x");
    assert_string_equal(x->name, "x");
    /* An explicit t<N> pushes the unnamed counter past it. */
    func_add_input(f, "t7", DT_F32, shape_scalar());
    Op *t = func_add_op(f, OP_NEG, &x, 1, NULL, SRCLOC_NONE);
    assert_int_equal(t->result->id, 7);
    assert_string_equal(t->result->name, "t8");
    assert_int_equal(f->n_values, 8);
    for (int i = 0; i < f->n_values; i++) assert_ptr_equal(func_find_value(f, f->values[i]->name), f->values[i]);
    module_free(m);
}

/* Many values asking for one name get x, x.1, x.2, ... in order (and fast: the builder keeps
 * a hint per base name); a suffix given up by a rename is reused first. */
static void test_builder_many_duplicate_names(void **state) {
    (void)state;
    Module *m = module_new("dups");
    Function *f = module_add_function(m, "f");
    Value *x = func_add_input(f, "x", DT_F32, shape_scalar());
    for (int i = 1; i <= 5000; i++) {
        Op *op = func_add_op(f, OP_RELU, &x, 1, "x", SRCLOC_NONE);
        char want[32];
        snprintf(want, sizeof want, "x.%d", i);
        assert_string_equal(op->result->name, want);
    }
    value_rename(func_find_value(f, "x.2500"), "moved");
    assert_string_equal(func_add_op(f, OP_RELU, &x, 1, "x", SRCLOC_NONE)->result->name, "x.2500");
    assert_string_equal(func_add_op(f, OP_RELU, &x, 1, "x", SRCLOC_NONE)->result->name, "x.5001");
    module_free(m);
}

static void test_builder_defaults_and_attrs(void **state) {
    (void)state;
    Module *m = module_new("attrs");
    Function *f = module_add_function(m, "f");
    Value *x = func_add_input(f, "x", DT_F32, shape_of(4, (int64_t)1, (int64_t)3, (int64_t)8,
                                                          (int64_t)8));
    Value *ins[2] = {x, x};
    Op *conv = func_add_op(f, OP_CONV2D, ins, 2, "conv", SRCLOC_NONE);
    int n = 0;
    const int64_t *stride = op_ints(conv, "stride", &n);
    assert_int_equal(n, 2);
    assert_int_equal(stride[0], 1);
    assert_int_equal(op_int(conv, "groups"), 1);
    int64_t pad[2] = {3, 3};
    op_set_ints(conv, "padding", pad, 2);
    pad[0] = 99; /* the op keeps its own copy */
    assert_int_equal(op_ints(conv, "padding", &n)[0], 3);
    Op *full = func_add_op(f, OP_FULL, NULL, 0, "z", SRCLOC_NONE);
    assert_string_equal(op_string(full, "dtype"), "f32");
    assert_true(op_float(full, "value") == 0.0);
    assert_int_equal(op_ints(full, "shape", &n) == NULL || n == 0, 1);
    Op *bn = func_add_op(f, OP_BATCH_NORM, ins, 1, "bn", SRCLOC_NONE);
    assert_false(op_bool(bn, "training"));
    op_set_bool(bn, "training", true);
    assert_true(op_bool(bn, "training"));
    assert_true(op_float(bn, "eps") == 1e-5);
    Op *p = func_add_op(f, OP_PARAM, NULL, 0, "w", SRCLOC_NONE);
    assert_string_equal(op_string(p, "name"), ""); /* required string: empty until set */
    assert_int_equal(op_attr_index(OP_CONV2D, "groups"), 3);
    assert_int_equal(op_attr_index(OP_CONV2D, "nope"), -1);

    module_set_config(m, "batch", 16, true);
    module_set_config(m, "dropout", 0.1, false);
    module_set_config(m, "batch", 32, true);
    assert_int_equal(m->n_config, 2);
    assert_true(module_find_config(m, "batch")->value == 32);
    assert_non_null(module_add_param(m, "w", DT_F32, shape_of(2, (int64_t)3, (int64_t)4),
                                     PARAM_WEIGHT, true, "zeros", SRCLOC_NONE));
    assert_null(module_add_param(m, "w", DT_F32, shape_scalar(), PARAM_WEIGHT, true, "", SRCLOC_NONE));
    module_add_param(m, "frozen", DT_F32, shape_of(1, (int64_t)5), PARAM_WEIGHT, false, "",
                     SRCLOC_NONE);
    module_add_param(m, "rm", DT_F32, shape_of(1, (int64_t)7), PARAM_BUFFER, true, "", SRCLOC_NONE);
    assert_false(module_find_param(m, "rm")->trainable);
    assert_int_equal(module_count_parameters(m, false), 17);
    assert_int_equal(module_count_parameters(m, true), 12);
    assert_int_equal(module_count_buffer_elements(m), 7);
    module_free(m);
}

/* Misusing an attribute (wrong name or kind) is a capc bug: the process aborts. */
static void expect_abort(void (*misuse)(Op *), Op *op) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(3);
        misuse(op);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
}

static void set_unknown_attr(Op *op) { op_set_int(op, "nope", 1); }
static void get_wrong_kind(Op *op) { (void)op_float(op, "groups"); }

static void test_attr_misuse_is_a_bug(void **state) {
    (void)state;
    Module *m = module_new("bug");
    Function *f = module_add_function(m, "f");
    Op *conv = func_add_op(f, OP_CONV2D, NULL, 0, "c", SRCLOC_NONE);
    expect_abort(set_unknown_attr, conv);
    expect_abort(get_wrong_kind, conv);
    module_free(m);
}

/* ---- attributes and types ------------------------------------------------------------- */

static void test_float_format_round_trips(void **state) {
    (void)state;
    Module *m = module_new("floats");
    const double xs[] = {0.1, 1e-5, 2.0, -0.0, 1.0 / 3.0, 1e300, 123456789.0, 1e16, 5e-324,
                         -2.5e-8, 0.02, 3.0e38, 1.7976931348623157e308, 100.0, -7.0};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        AttrValue v = {.kind = ATTR_FLOAT, .f = xs[i]}, back;
        char buf[64], err[128];
        int n = attr_format(&v, buf, sizeof buf);
        assert_int_equal(n, (int)strlen(buf));
        assert_true(strpbrk(buf, ".e") != NULL);
        assert_int_equal(attr_parse(m, ATTR_FLOAT, buf, &back, err, sizeof err), 0);
        assert_memory_equal(&back.f, &xs[i], sizeof(double)); /* bit-exact, sign of 0 too */
    }
    const struct {
        double x;
        const char *text;
    } exact[] = {{0.1, "0.1"}, {1e-5, "1e-05"}, {2.0, "2.0"}, {-1.0, "-1.0"},
                 {INFINITY, "inf"}, {-INFINITY, "-inf"}, {NAN, "nan"}, {1e16, "1e+16"}};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        AttrValue v = {.kind = ATTR_FLOAT, .f = exact[i].x};
        char buf[64];
        attr_format(&v, buf, sizeof buf);
        assert_string_equal(buf, exact[i].text);
    }
    module_free(m);
}

static void test_attr_text_forms(void **state) {
    (void)state;
    Module *m = module_new("attrs");
    char buf[128], err[128];
    AttrValue v;
    assert_int_equal(attr_parse(m, ATTR_INTS, "[ 2, -2 ,3]", &v, err, sizeof err), 0);
    attr_format(&v, buf, sizeof buf);
    assert_string_equal(buf, "[2,-2,3]");
    assert_int_equal(attr_parse(m, ATTR_INTS, "[]", &v, err, sizeof err), 0);
    assert_int_equal(v.n_ints, 0);
    assert_int_equal(attr_parse(m, ATTR_STRING, "\"a\\\"b\\\\c\\n\"", &v, err, sizeof err), 0);
    assert_string_equal(v.s, "a\"b\\c\n");
    attr_format(&v, buf, sizeof buf);
    assert_string_equal(buf, "\"a\\\"b\\\\c\\n\"");
    assert_int_equal(attr_parse(m, ATTR_BOOL, "true", &v, err, sizeof err), 0);
    assert_int_equal(v.i, 1);
    assert_int_equal(attr_parse(m, ATTR_INT, "-12", &v, err, sizeof err), 0);
    assert_int_equal(v.i, -12);
    assert_int_equal(attr_parse(m, ATTR_INT, "1.0", &v, err, sizeof err), -1);
    assert_int_equal(attr_parse(m, ATTR_INT, "99999999999999999999", &v, err, sizeof err), -1);
    assert_int_equal(attr_parse(m, ATTR_BOOL, "yes", &v, err, sizeof err), -1);
    assert_int_equal(attr_parse(m, ATTR_FLOAT, "0x10", &v, err, sizeof err), -1);
    assert_int_equal(attr_parse(m, ATTR_STRING, "\"open", &v, err, sizeof err), -1);
    /* float lists (a call's scalar arguments): each element in the float spellings */
    assert_int_equal(attr_parse(m, ATTR_FLOATS, "[ 0.01, -2 ,1e-07,inf, -inf]", &v, err, sizeof err), 0);
    assert_int_equal(v.n_floats, 5);
    assert_true(v.floats[0] == 0.01 && v.floats[1] == -2 && v.floats[2] == 1e-7);
    attr_format(&v, buf, sizeof buf);
    assert_string_equal(buf, "[0.01,-2.0,1e-07,inf,-inf]");
    assert_int_equal(attr_parse(m, ATTR_FLOATS, "[nan]", &v, err, sizeof err), 0);
    assert_true(v.n_floats == 1 && isnan(v.floats[0]));
    assert_int_equal(attr_parse(m, ATTR_FLOATS, "[]", &v, err, sizeof err), 0);
    assert_int_equal(v.n_floats, 0);
    attr_format(&v, buf, sizeof buf);
    assert_string_equal(buf, "[]");
    assert_int_equal(attr_parse(m, ATTR_FLOATS, "[1,]", &v, err, sizeof err), -1);
    assert_int_equal(attr_parse(m, ATTR_FLOATS, "[0x1]", &v, err, sizeof err), -1);
    assert_int_equal(attr_parse(m, ATTR_FLOATS, "[1 2]", &v, err, sizeof err), -1);
    assert_int_equal(attr_parse(m, ATTR_FLOATS, "1.5", &v, err, sizeof err), -1);
    /* snprintf-like: the full length comes back even when the buffer is short. */
    AttrValue big = {.kind = ATTR_STRING, .s = "0123456789"};
    char tiny[4];
    assert_int_equal(attr_format(&big, tiny, sizeof tiny), 12);
    assert_string_equal(tiny, "\"01");

    char tb[64];
    Shape s = shape_of(4, (int64_t)16, (int64_t)3, (int64_t)7, (int64_t)7);
    assert_string_equal(type_format(DT_F32, &s, tb, sizeof tb), "f32[16,3,7,7]");
    Shape sc = shape_scalar(), un = shape_unknown();
    assert_string_equal(type_format(DT_I32, &sc, tb, sizeof tb), "i32[]");
    assert_string_equal(type_format(DT_F32, &un, tb, sizeof tb), "?");
    assert_int_equal(shape_numel(&s), 16 * 3 * 7 * 7);
    assert_int_equal(shape_numel(&un), -1);
    Shape huge = shape_of(3, (int64_t)1 << 20, (int64_t)1 << 20, (int64_t)2);
    assert_int_equal(shape_numel(&huge), -1);

    Shape a = shape_of(3, (int64_t)4, (int64_t)1, (int64_t)5), b = shape_of(2, (int64_t)3, (int64_t)1), out;
    assert_true(shape_broadcast(&a, &b, &out));
    Shape want = shape_of(3, (int64_t)4, (int64_t)3, (int64_t)5);
    assert_true(shape_equal(&out, &want));
    Shape c = shape_of(1, (int64_t)4);
    assert_false(shape_broadcast(&a, &c, &out));
    assert_int_equal(axis_normalize(-1, 3), 2);
    assert_int_equal(axis_normalize(3, 3), -1);
    assert_int_equal(axis_normalize(-4, 3), -1);
    module_free(m);
}

static void test_dot_output(void **state) {
    (void)state;
    char path[4096];
    data_dir(path, sizeof path);
    strncat(path, "/layout.ir", sizeof path - strlen(path) - 1);
    char *text = read_text(path);
    Diag d;
    Module *m = ir_parse(text, path, &d);
    assert_non_null(m);
    char *dot = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&dot, &len);
    ir_print_dot(out, m);
    fclose(out);
    assert_non_null(strstr(dot, "digraph \"layout and \\\"escapes\\\" \\\\ ok\" {"));
    assert_non_null(strstr(dot, "subgraph cluster_0"));
    assert_non_null(strstr(dot, "subgraph cluster_1"));
    assert_non_null(strstr(dot, "label=\"tok = embedding\\nf32[2,3,8]\""));
    free(dot);
    module_free(m);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_files_round_trip_and_cover_every_op),
        cmocka_unit_test(test_parse_errors_name_line_and_column),
        cmocka_unit_test(test_comments_and_spacing_are_ignored),
        cmocka_unit_test(test_builder_naming),
        cmocka_unit_test(test_builder_many_duplicate_names),
        cmocka_unit_test(test_builder_defaults_and_attrs),
        cmocka_unit_test(test_attr_misuse_is_a_bug),
        cmocka_unit_test(test_float_format_round_trips),
        cmocka_unit_test(test_attr_text_forms),
        cmocka_unit_test(test_dot_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
