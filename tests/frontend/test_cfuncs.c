/* test_cfuncs.c — custom functions written in C (docs/custom-ops.md), read with libclang:
 *
 *   - models/acts.c's GELU (tanh form), Mish and SiLU against PyTorch (tests/golden/acts.txt,
 *     written once by tests/golden/make_acts_golden.py): values and derived gradients, 1e-6;
 *   - every accepted construct (locals, assignment, compound assignment, if/else merging,
 *     early return, ?:, && || !, comparisons, the math functions, fmaxf/fminf/fabsf, calls
 *     to other functions, a user NAME_grad) read from C, and its gradient against central
 *     finite differences on many points;
 *   - every tests/frontend/cerrors/NAME.c is refused with exactly NAME.err (the whole
 *     message: FILE:LINE:COL, the source line, the caret).
 */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cfunc.h"
#include "diag.h"
#include "frontend.h"
#include "ops.h"

#define CERR_DIR "tests/frontend/cerrors"
#define MIN_ERROR_CASES 15

/* A model calling fn (n operands of f32[4]) from the C files given, as frontend text whose
 * file name puts relative C paths in dir. */
static Module *load(const char *dir, const char *files, const char *fn, int n, Diag *d) {
    char text[2048], path[512];
    int k = snprintf(text, sizeof text, "{\"model\": \"t\", \"functions\": [%s], \"inputs\": {", files);
    for (int i = 0; i < n; i++)
        k += snprintf(text + k, sizeof text - (size_t)k, "%s\"x%d\": {\"dtype\": \"f32\", \"shape\": [4]}",
                      i ? ", " : "", i);
    k += snprintf(text + k, sizeof text - (size_t)k, "}, \"body\": [{\"op\": \"call\", \"fn\": \"%s\", \"in\": [", fn);
    for (int i = 0; i < n; i++) k += snprintf(text + k, sizeof text - (size_t)k, "%s\"x%d\"", i ? ", " : "", i);
    snprintf(text + k, sizeof text - (size_t)k, "], \"out\": \"y\"}], \"outputs\": {\"y\": \"y\"}}");
    snprintf(path, sizeof path, "%s/t.json", dir);
    return frontend_load_text(text, strlen(text), path, NULL, 0, d);
}

static double eval1(const CFunc *f, const double *args) {
    double vals[4096];
    assert_true(f->n_nodes <= 4096);
    return cfunc_eval(f->nodes, f->n_nodes, args, vals);
}

/* ---- PyTorch goldens ---------------------------------------------------------------------- */

static void test_acts_match_pytorch(void **state) {
    (void)state;
    Diag d;
    FILE *in = fopen("tests/golden/acts.txt", "r");
    assert_non_null(in);
    char name[64];
    double x, want_y, want_g, worst = 0;
    int n = 0;
    Module *m = NULL;
    char loaded[64] = "";
    while (fscanf(in, "%63s %lf %lf %lf", name, &x, &want_y, &want_g) == 4) {
        if (strcmp(name, loaded) != 0) {
            module_free(m);
            m = load("models", "\"acts.c\"", name, 1, &d);
            if (!m) fail_msg("%s: %s", name, d.msg);
            snprintf(loaded, sizeof loaded, "%s", name);
        }
        const CFunc *f = module_find_cfunc(m, name);
        assert_non_null(f);
        const CFunc *g = module_find_cfunc(m, f->grads[0]);
        assert_non_null(g);
        double args[2] = {x, 1.0};
        double y = eval1(f, args), gr = eval1(g, args);
        double ey = fabs(y - want_y) / fmax(1.0, fabs(want_y));
        double eg = fabs(gr - want_g) / fmax(1.0, fabs(want_g));
        if (ey > 1e-6 || eg > 1e-6)
            fail_msg("%s(%g): value %.17g (PyTorch %.17g), gradient %.17g (PyTorch %.17g)", name,
                     x, y, want_y, gr, want_g);
        worst = fmax(worst, fmax(ey, eg));
        n++;
    }
    fclose(in);
    module_free(m);
    assert_true(n >= 300);
    printf("%d points, worst relative difference from PyTorch %.3g\n", n, worst);
}

/* ---- accepted constructs: values and gradients -------------------------------------------- */

typedef struct Construct {
    const char *fn;
    int n;
    double (*ref)(const double *a); /* the function itself, written in C here */
} Construct;

static double r_locals(const double *a) { double t = a[0] * a[1]; t = t + 1; t *= a[0]; t -= a[1]; t /= 2; return t; }
static double r_branch(const double *a) { double y = a[0]; if (a[0] > a[1]) y = a[0] * a[0]; else { y = -a[1]; } return y + a[1]; }
static double r_early(const double *a) { if (a[0] < -1) return exp(a[0]); if (!(a[0] < 1)) return log(a[0] + 1); return a[0] * 0.5; }
static double r_ternary(const double *a) { return (a[0] > 0 && a[1] > 0) || a[0] < -2 ? sin(a[0]) * cos(a[1]) : tanh(a[0] - a[1]); }
static double r_math(const double *a) { return sqrt(a[0] * a[0] + 1) + floor(a[1]) * a[0] + exp(-a[0] * a[0]); }
static double r_minmax(const double *a) { return fmax(a[0], a[1]) - 2 * fmin(a[0], -a[1]) + fabs(a[0] - 0.25); }
static double r_calls(const double *a) { double h = a[0] * a[0] / (1 + a[0] * a[0]); return h * a[1] + a[0] * (a[0] > 0 ? 1 : 0); }
static double r_user_grad(const double *a) { return a[0] * a[0] * a[0]; }
static double r_compare_value(const double *a) { double m = a[0] >= a[1]; return m * a[0] + (a[0] != a[1]) * a[1] + (a[0] <= 0) - (a[0] == 3); }

static const Construct CONSTRUCTS[] = {
    {"locals", 2, r_locals},   {"branch", 2, r_branch},     {"early", 1, r_early},
    {"ternary", 2, r_ternary}, {"math", 2, r_math},         {"minmax", 2, r_minmax},
    {"calls", 2, r_calls},     {"user_grad", 1, r_user_grad}, {"compare_value", 2, r_compare_value},
};

static void test_constructs_values_and_gradients(void **state) {
    (void)state;
    int checked = 0;
    for (size_t c = 0; c < sizeof CONSTRUCTS / sizeof CONSTRUCTS[0]; c++) {
        const Construct *k = &CONSTRUCTS[c];
        Diag d;
        Module *m = load("tests/frontend/data", "\"constructs.c\"", k->fn, k->n, &d);
        if (!m) fail_msg("%s: %s", k->fn, d.msg);
        const CFunc *f = module_find_cfunc(m, k->fn);
        assert_non_null(f);
        for (int p = 0; p < 40; p++) {
            double a[3] = {-3.1 + 0.157 * p, 2.3 - 0.119 * p, 1.0}; /* no point on a kink */
            double want = k->ref(a), got = eval1(f, a);
            if (fabs(got - want) > 1e-12 * fmax(1, fabs(want)))
                fail_msg("%s(%g, %g) = %.17g, C semantics give %.17g", k->fn, a[0], a[1], got, want);
            for (int i = 0; i < k->n; i++) {
                const CFunc *g = module_find_cfunc(m, f->grads[i]);
                assert_non_null(g);
                double h = 1e-6, x = a[i];
                a[i] = x + h;
                double up = k->ref(a);
                a[i] = x - h;
                double down = k->ref(a);
                a[i] = x;
                a[k->n] = 1.0;
                double fd = (up - down) / (2 * h), an = eval1(g, a);
                if (fabs(an - fd) > 1e-6 * fmax(1, fabs(fd)))
                    fail_msg("%s: d/d%s at (%g, %g) = %.12g, finite differences %.12g", k->fn,
                             f->params[i], a[0], a[1], an, fd);
                checked++;
            }
        }
        module_free(m);
    }
    printf("%d gradient values against finite differences\n", checked);
}

/* Prints m, parses the text back and prints that: the two texts must be equal. Returns the
 * text (caller frees) and the parsed module (caller frees). */
static char *round_trip(const Module *m, Module **back) {
    Diag d;
    char *a = ir_module_to_string(m);
    *back = ir_parse(a, "t.ir", &d);
    if (!*back) fail_msg("%s", d.msg);
    char *b = ir_module_to_string(*back);
    assert_string_equal(a, b);
    free(b);
    return a;
}

/* The IR text holds the functions: print, parse, print gives the same text. */
static void test_cfuncs_round_trip_through_ir_text(void **state) {
    (void)state;
    Diag d;
    Module *m = load("models", "\"acts.c\"", "mish", 1, &d);
    if (!m) fail_msg("%s", d.msg);
    Module *back;
    char *a = round_trip(m, &back);
    assert_non_null(strstr(a, "cfunc @mish(%x) at \"models/acts.c\":"));
    assert_non_null(strstr(a, "grads=[@mish.grad0]"));
    free(a);
    module_free(back);
    module_free(m);
}

/* ---- scalar arguments ---------------------------------------------------------------------- */

/* A model from frontend text: config, then calls (each a JSON statement), inputs x0 and x1
 * of f32[4]; output y. */
static Module *load_calls(const char *files, const char *config, const char *calls, Diag *d) {
    char text[4096];
    snprintf(text, sizeof text,
             "{\"model\": \"t\", \"functions\": [%s], \"config\": {%s}, \"inputs\": "
             "{\"x0\": {\"dtype\": \"f32\", \"shape\": [4]}, \"x1\": {\"dtype\": \"f32\", "
             "\"shape\": [4]}}, \"body\": [%s], \"outputs\": {\"y\": \"y\"}}",
             files, config, calls);
    return frontend_load_text(text, strlen(text), "tests/frontend/data/t.json", NULL, 0, d);
}

/* The k-th call op of the module's first function. */
static const Op *nth_call(const Module *m, int k) {
    const Function *f = m->funcs[0];
    for (int i = 0; i < f->n_ops; i++)
        if (f->ops[i]->kind == OP_CALL && k-- == 0) return f->ops[i];
    fail_msg("no call %d", k);
    return NULL;
}

static double r_leaky(const double *a) { return a[0] > 0 ? a[0] : a[1] * a[0]; }
static double r_elu(const double *a) { return a[0] > 0 ? a[0] : a[1] * (exp(a[0]) - 1); }
static double r_mix_scaled(const double *a) {
    return (a[0] + a[2] * (a[1] - a[0])) * a[3] + a[0] * a[1];
}

/* Checks f (n_tensor tensor operands, the rest bound to scalars) and its gradients against
 * ref and central differences of ref, the gradient called with (tensors..., dy, scalars...). */
static int check_scalar_fn(const Module *m, const char *name, int n_tensor,
                           const double *scalars, double (*ref)(const double *)) {
    const CFunc *f = module_find_cfunc(m, name);
    assert_non_null(f);
    int checked = 0;
    for (int p = 0; p < 40; p++) {
        double a[8], ga[9];
        for (int i = 0; i < f->n_params; i++)
            a[i] = i < n_tensor ? (i ? 2.3 - 0.119 * p : -3.1 + 0.157 * p) : scalars[i - n_tensor];
        double want = ref(a), got = eval1(f, a);
        if (fabs(got - want) > 1e-12 * fmax(1, fabs(want)))
            fail_msg("%s at point %d = %.17g, want %.17g", name, p, got, want);
        for (int i = 0; i < f->n_params; i++) ga[i < n_tensor ? i : i + 1] = a[i];
        ga[n_tensor] = 1.0; /* dy */
        for (int i = 0; i < n_tensor; i++) {
            const CFunc *g = module_find_cfunc(m, f->grads[i]);
            assert_non_null(g);
            assert_int_equal(g->n_params, f->n_params + 1);
            double h = 1e-6, x = a[i];
            a[i] = x + h;
            double up = ref(a);
            a[i] = x - h;
            double down = ref(a);
            a[i] = x;
            double fd = (up - down) / (2 * h), an = eval1(g, ga);
            if (fabs(an - fd) > 1e-6 * fmax(1, fabs(fd)))
                fail_msg("%s: d/d%s at point %d = %.12g, finite differences %.12g", name,
                         f->params[i], p, an, fd);
            checked++;
        }
    }
    for (int i = n_tensor; i < f->n_params; i++) assert_null(f->grads[i]); /* scalars: none */
    return checked;
}

/* leaky_relu and elu (models/acts.c, elu with its user elu_grad) with one tensor operand and
 * a scalar from a config expression; mix_scaled with two tensors and two scalars. The op
 * carries the evaluated scalars; the gradients take (tensors..., dy, scalars...). */
static void test_scalar_args_values_and_gradients(void **state) {
    (void)state;
    Diag d;
    Module *m = load_calls("\"../../../models/acts.c\", \"scalar_args.c\"",
                           "\"s\": 0.03, \"alpha\": 1.5",
                           "{\"op\": \"call\", \"fn\": \"leaky_relu\", \"in\": [\"x0\"], "
                           "\"args\": [\"2 * s\"], \"out\": \"a\"},"
                           "{\"op\": \"call\", \"fn\": \"elu\", \"in\": [\"a\"], "
                           "\"args\": [\"alpha\"], \"out\": \"b\"},"
                           "{\"op\": \"call\", \"fn\": \"mix_scaled\", \"in\": [\"b\", \"x1\"], "
                           "\"args\": [0.25, \"-alpha\"], \"out\": \"y\"}",
                           &d);
    if (!m) fail_msg("%s", d.msg);
    int n = 0;
    const double *v = op_floats(nth_call(m, 0), "args", &n);
    assert_int_equal(n, 1);
    assert_true(v[0] == 2 * 0.03);
    v = op_floats(nth_call(m, 2), "args", &n);
    assert_int_equal(n, 2);
    assert_true(v[0] == 0.25 && v[1] == -1.5);

    int checked = check_scalar_fn(m, "leaky_relu", 1, (const double[]){0.06}, r_leaky);
    checked += check_scalar_fn(m, "elu", 1, (const double[]){1.5}, r_elu);
    checked += check_scalar_fn(m, "mix_scaled", 2, (const double[]){0.25, -1.5}, r_mix_scaled);
    /* elu's gradient is the user's elu_grad (same parameters, alpha included), leaky_relu's
     * derived: each gradient's location says which */
    const CFunc *elu = module_find_cfunc(m, "elu"), *eg = module_find_cfunc(m, elu->grads[0]);
    assert_true(eg->loc.line > elu->loc.line);
    const CFunc *lr = module_find_cfunc(m, "leaky_relu"), *lg = module_find_cfunc(m, lr->grads[0]);
    assert_int_equal(lg->loc.line, lr->loc.line);
    assert_string_equal(lg->params[1], "dy");
    assert_string_equal(lg->params[2], "slope");
    printf("%d gradient values with scalar arguments against finite differences\n", checked);
    module_free(m);
}

/* The gradient check runs at the call's scalar values: scaled_grad is right at slope 1 only,
 * so a call with slope 1 loads and one with 0.5 (alone, or after a call with 1) does not. */
static void test_scalar_args_gradient_check_uses_their_values(void **state) {
    (void)state;
    static const char *const calls[] = {
        "{\"op\": \"call\", \"fn\": \"scaled\", \"in\": [\"x0\"], \"args\": [1], \"out\": \"y\"}",
        "{\"op\": \"call\", \"fn\": \"scaled\", \"in\": [\"x0\"], \"args\": [0.5], \"out\": \"y\"}",
        "{\"op\": \"call\", \"fn\": \"scaled\", \"in\": [\"x0\"], \"args\": [1], \"out\": \"h\"},"
        "{\"op\": \"call\", \"fn\": \"scaled\", \"in\": [\"h\"], \"args\": [\"k / 4.0\"], \"out\": \"y\"}",
    };
    for (int i = 0; i < 3; i++) {
        Diag d;
        Module *m = load_calls("\"scalar_args.c\"", "\"k\": 2", calls[i], &d);
        if (i == 0) {
            if (!m) fail_msg("slope 1: %s", d.msg);
            module_free(m);
            continue;
        }
        if (m) fail_msg("case %d: a wrong gradient at slope 0.5 was accepted", i);
        assert_non_null(strstr(d.msg, "the gradient of scaled with respect to 'x' disagrees"));
        assert_non_null(strstr(d.msg, "slope=0.5)"));
        assert_non_null(strstr(d.file, "scalar_args.c")); /* diag_set_in_file keeps it in d */
        assert_int_equal(d.loc.line, 9); /* scaled_grad */
    }
}

/* Calls with scalar arguments print and parse back: the float list and the gradient layout. */
static void test_scalar_args_round_trip_through_ir_text(void **state) {
    (void)state;
    Diag d;
    Module *m = load_calls("\"../../../models/acts.c\"", "\"s\": 0.01",
                           "{\"op\": \"call\", \"fn\": \"leaky_relu\", \"in\": [\"x0\"], "
                           "\"args\": [\"s\"], \"out\": \"y\"}", &d);
    if (!m) fail_msg("%s", d.msg);
    Module *back;
    char *a = round_trip(m, &back);
    assert_non_null(strstr(a, "call(%x0) {fn=\"leaky_relu\", args=[0.01]}"));
    assert_non_null(strstr(a, "grads=[@leaky_relu.grad0, -]"));
    assert_non_null(strstr(a, "cfunc @leaky_relu.grad0(%x, %dy, %slope)"));
    int n = 0;
    const double *v = op_floats(nth_call(back, 0), "args", &n);
    assert_true(n == 1 && v[0] == 0.01);
    free(a);
    module_free(back);
    module_free(m);
}

/* ---- malformed C: exact errors -------------------------------------------------------------- */

/* The expected message (a few lines) into buf. */
static bool read_golden(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
    return true;
}

static int check_error_case(const char *name) {
    char files[300], err_path[300];
    snprintf(files, sizeof files, "\"%s.c\"", name);
    snprintf(err_path, sizeof err_path, CERR_DIR "/%s.err", name);
    Diag d;
    Module *m = load(CERR_DIR, files, "f", 1, &d);
    if (m) {
        module_free(m);
        fprintf(stderr, "FAIL %s: accepted\n", name);
        return 1;
    }
    char *got = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&got, &len);
    assert_non_null(out);
    diag_print(out, &d);
    fclose(out);
    static char want[8192];
    bool have = read_golden(err_path, want, sizeof want);
    int failed = !have || strcmp(got, want) != 0;
    if (failed) fprintf(stderr, "FAIL %s:\n--- want\n%s--- got\n%s", name, have ? want : "(no .err)\n", got);
    if (getenv("CAPC_WRITE_GOLDEN") && failed) { /* regenerating by hand: review the diff */
        FILE *w = fopen(err_path, "w");
        if (w) fputs(got, w), fclose(w);
    }
    free(got);
    return failed;
}

static void test_malformed_c_gives_exact_errors(void **state) {
    (void)state;
    DIR *dir = opendir(CERR_DIR);
    assert_non_null(dir);
    int n = 0, failed = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        size_t len = strlen(e->d_name);
        if (len < 3 || strcmp(e->d_name + len - 2, ".c") != 0) continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(len - 2), e->d_name);
        failed += check_error_case(name);
        n++;
    }
    closedir(dir);
    printf("%d malformed C files\n", n);
    assert_true(n >= MIN_ERROR_CASES);
    assert_int_equal(failed, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acts_match_pytorch),
        cmocka_unit_test(test_constructs_values_and_gradients),
        cmocka_unit_test(test_cfuncs_round_trip_through_ir_text),
        cmocka_unit_test(test_scalar_args_values_and_gradients),
        cmocka_unit_test(test_scalar_args_gradient_check_uses_their_values),
        cmocka_unit_test(test_scalar_args_round_trip_through_ir_text),
        cmocka_unit_test(test_malformed_c_gives_exact_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
