/* test_autodiff.c — reverse-mode autodiff (passes/autodiff.c).
 *
 * 1. IR text in, IR text out: every tests/passes/autodiff/NAME.in.ir is a forward function
 *    returning `loss`; autodiff_append runs on it, an output "d.<param>" is added for every
 *    weight that got a gradient, and the module must print exactly as NAME.out.ir (written by
 *    hand). The cases cover a frozen prefix (no backward ops for it), a value used twice
 *    (contributions summed) and a tied weight read by two `param` ops.
 * 2. Builder-level cases: errors name the op and value; a loss that no trainable weight
 *    reaches gets no backward program.
 * 3. Whole model: models/captioner_tiny.json (-D batch=2 -D dropout=0) in float64 through
 *    the reference interpreter, random parameters and batch (fixed seed). For 3 random
 *    coordinates of EVERY trainable tensor the autodiff gradient a is compared with the
 *    central finite difference b = (L(w+h) - L(w-h)) / 2h, h = 1e-6:
 *        err = |a - b| / max(|a|, |b|, floor)   must be < 1e-6.
 *    floor is where b stops being meaningful to 1e-6: b is a difference of two losses that
 *    are each correctly computed only to a few units in the last place, so b carries an
 *    absolute error of about k ulp(L) / 2h (measured: up to 2.5 ulp, 1.1e-9 for L ~ 4.6).
 *    floor = FD_NOISE_ULPS ulp(L) / (2h * 1e-6), i.e. entries smaller than floor (3.6e-3 for
 *    L ~ 4.6) are checked absolutely to FD_NOISE_ULPS ulp(L) / 2h, larger ones relatively to
 *    1e-6. The summary line prints both the worst err and the worst relative error among
 *    entries above floor.
 *    To keep it fast, each weight's finite differences run a "suffix" function: only the ops
 *    that depend on that weight, with every other value (computed once) as inputs — the rest
 *    of the network does not change when that weight does.
 */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "interp.h"
#include "ir.h"
#include "model_eval.h"
#include "ops.h"
#include "passes.h"
#include "testfiles.h"

#define CASE_DIR "tests/passes/autodiff"

/* ---- 1. IR text cases -------------------------------------------------------------------- */

static char *read_case(const char *name, const char *ext) {
    char *text = read_test_data(CASE_DIR, name, ext);
    assert_non_null(text);
    return text;
}

static void test_text_case(void **state) {
    const char *name = *state;
    char *text = read_case(name, ".in.ir");
    Diag d = {0};
    Module *m = ir_parse(text, name, &d);
    free(text);
    if (m == NULL) fail_msg("%s.in.ir does not parse: %s", name, d.msg);
    Function *f = module_find_function(m, "forward");
    assert_non_null(f);
    Value **grads = NULL;
    if (autodiff_append(f, output_value(f, "loss"), &grads, &d) != 0) {
        module_free(m);
        fail_msg("%s: autodiff failed: %s", name, d.msg);
    }
    for (int p = 0; p < m->n_params; p++) {
        if (grads[p] == NULL) continue;
        char out[512];
        snprintf(out, sizeof out, "d.%s", m->params[p]->name);
        func_add_output(f, out, grads[p]);
    }
    free(grads);
    int verified = ir_verify_module(m, true, &d);
    if (verified != 0) print_error("%s: result does not verify: %s\n", name, d.msg);
    char *got = ir_module_to_string(m);
    char *want = read_case(name, ".out.ir");
    int same = strcmp(got, want) == 0;
    if (!same) report_text_difference(name, want, got);
    free(got);
    free(want);
    module_free(m);
    assert_int_equal(verified, 0);
    assert_true(same);
}

/* ---- 2. builder-level cases ----------------------------------------------------------------- */

static const SrcLoc LOC = {"model.json", 7, 5};

/* y = sum(x * w) with w a parameter (trainable or frozen). */
static Module *tiny_module(bool trainable, Value **loss_out) {
    Module *m = module_new("t");
    Shape s = shape_of(1, (int64_t)4);
    module_add_param(m, "w", DT_F32, s, PARAM_WEIGHT, trainable, "zeros", LOC);
    Function *f = module_add_function(m, "forward");
    Value *x = func_add_input(f, "x", DT_F32, s);
    Op *w = func_add_op(f, OP_PARAM, NULL, 0, "w", LOC);
    op_set_string(w, "name", "w");
    Value *ins[2] = {x, w->result};
    Op *mul = func_add_op(f, OP_MUL, ins, 2, "xw", LOC);
    Op *sum = func_add_op(f, OP_SUM, &mul->result, 1, "loss", LOC);
    int64_t axes[1] = {0};
    op_set_ints(sum, "axes", axes, 1);
    char err[256];
    assert_int_equal(op_infer(w, err, sizeof err), 0);
    assert_int_equal(op_infer(mul, err, sizeof err), 0);
    assert_int_equal(op_infer(sum, err, sizeof err), 0);
    func_add_output(f, "loss", sum->result);
    *loss_out = sum->result;
    return m;
}

static void test_frozen_only_appends_nothing(void **state) {
    (void)state;
    Value *loss;
    Module *m = tiny_module(false, &loss);
    Function *f = m->funcs[0];
    int n_ops = f->n_ops;
    Value **grads = NULL;
    Diag d = {0};
    assert_int_equal(autodiff_append(f, loss, &grads, &d), 0);
    assert_non_null(grads);
    assert_null(grads[0]);
    assert_int_equal(f->n_ops, n_ops);
    free(grads);
    module_free(m);
}

static void test_loss_must_be_scalar(void **state) {
    (void)state;
    Value *loss;
    Module *m = tiny_module(true, &loss);
    Function *f = m->funcs[0];
    Value **grads = NULL;
    Diag d = {0};
    assert_int_equal(autodiff_append(f, f->ops[1]->result, &grads, &d), -1);
    assert_null(grads);
    assert_non_null(strstr(d.msg, "loss %xw must be a float scalar, not f32[4]"));
    assert_non_null(strstr(d.msg, "mul %xw"));
    assert_int_equal(d.loc.line, 7);
    Function *other = module_add_function(m, "other");
    Value *v = func_add_input(other, "v", DT_F32, shape_scalar());
    assert_int_equal(autodiff_append(f, v, &grads, &d), -1);
    assert_non_null(strstr(d.msg, "loss value is not in function @forward"));
    module_free(m);
}

/* loss = sum(w + padding_mask(ids)): the mask (f32, but computed from ids) and the ids get
 * no gradient, and no backward op reads them. */
static void test_mask_gets_no_gradient(void **state) {
    (void)state;
    Module *m = module_new("t");
    Shape s = shape_of(1, (int64_t)4);
    module_add_param(m, "w", DT_F32, s, PARAM_WEIGHT, true, "zeros", LOC);
    Function *f = module_add_function(m, "forward");
    Value *ids = func_add_input(f, "ids", DT_I32, shape_of(1, (int64_t)4));
    Op *w = func_add_op(f, OP_PARAM, NULL, 0, "w", LOC);
    op_set_string(w, "name", "w");
    Op *mask = func_add_op(f, OP_PADDING_MASK, &ids, 1, "mask", LOC);
    Value *ins[2] = {w->result, mask->result};
    Op *add = func_add_op(f, OP_ADD, ins, 2, "y", LOC);
    Op *sum = func_add_op(f, OP_SUM, &add->result, 1, "loss", LOC);
    int64_t axes[1] = {0};
    op_set_ints(sum, "axes", axes, 1);
    char err[256];
    for (int i = 0; i < f->n_ops; i++) assert_int_equal(op_infer(f->ops[i], err, sizeof err), 0);
    Value **grads = NULL;
    Diag d = {0};
    int rc = autodiff_append(f, sum->result, &grads, &d);
    if (rc != 0) print_error("%s\n", d.msg);
    assert_int_equal(rc, 0);
    /* w's gradient is y's (add passes dy through to a same-shape operand): named d.y. */
    assert_non_null(grads[0]);
    assert_string_equal(grads[0]->name, "d.y");
    assert_null(func_find_value(f, "d.mask"));
    for (int i = 5; i < f->n_ops; i++)
        for (int j = 0; j < f->ops[i]->n_inputs; j++) {
            assert_true(f->ops[i]->inputs[j] != mask->result);
            assert_true(f->ops[i]->inputs[j] != ids);
        }
    free(grads);
    module_free(m);
}

/* ---- 3. whole model against finite differences ------------------------------------------------ */

#define FD_H 1e-6
#define FD_TOL 1e-6
#define FD_NOISE_ULPS 8.0
#define FD_COORDS 3

static const char *const TINY_DEFINES[] = {"batch=2", "dropout=0"};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* image N-ish(0,1), caption <start>=1, tokens in [3, V), <end>=2, then pad 0, rng (0,0). */
static void random_batch(const Function *f, RefTensor *inputs, TestRng *rng) {
    for (int i = 0; i < f->n_inputs; i++) {
        const Value *v = f->inputs[i];
        RefTensor *t = &inputs[i];
        assert_int_equal(ref_tensor_init(t, v->dtype, v->shape), 0);
        int64_t n = ref_tensor_numel(t);
        if (strcmp(v->name, "image") == 0) {
            for (int64_t k = 0; k < n; k++) t->data[k] = sqrt(3.0) * (2 * rng_uniform(rng) - 1);
        } else if (strcmp(v->name, "caption") == 0) {
            int64_t rows = v->shape.dims[0], len = v->shape.dims[1];
            for (int64_t r = 0; r < rows; r++) {
                int64_t words = r == 0 ? len - 2 : (len - 2) / 2; /* row 0 full, others padded */
                double *row = t->data + r * len;
                row[0] = 1;
                for (int64_t k = 1; k <= words; k++) row[k] = (double)(3 + rng_below(rng, 61));
                row[words + 1] = 2;
            }
        }
    }
}

/* Per value id: does it depend on weight `name` (any trainable weight when name is NULL)? */
static bool *weight_dependence(const Function *f, const char *name) {
    bool *dep = calloc((size_t)f->n_values, sizeof *dep);
    assert_non_null(dep);
    for (int i = 0; i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        bool d = false;
        if (op->kind == OP_PARAM) {
            const Param *p = module_find_param(f->module, op_string(op, "name"));
            d = p && p->kind == PARAM_WEIGHT && p->trainable &&
                (name == NULL || strcmp(p->name, name) == 0);
        }
        for (int j = 0; j < op->n_inputs; j++) d = d || dep[op->inputs[j]->id];
        dep[op->result->id] = d;
    }
    return dep;
}

/* The ops of f that depend on weight `name` (NULL: on any trainable weight), as a new function
 * whose inputs are the values those ops read from the rest (the "frontier"); frontier[i] =
 * id in f of input i. */
static Function *build_suffix(Function *f, const char *name, int **frontier) {
    bool *dep = weight_dependence(f, name);
    char fname[512];
    snprintf(fname, sizeof fname, "fd.%s", name ? name : "all");
    Function *s = module_add_function(f->module, fname);
    Value **map = calloc((size_t)f->n_values, sizeof *map);
    *frontier = calloc((size_t)f->n_values, sizeof **frontier);
    assert_non_null(map);
    for (int i = 0; i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        if (!dep[op->result->id]) continue;
        Value *ins[64];
        assert_true(op->n_inputs <= 64);
        for (int j = 0; j < op->n_inputs; j++) {
            Value *x = op->inputs[j];
            if (map[x->id] == NULL) {
                (*frontier)[s->n_inputs] = x->id;
                map[x->id] = func_add_input(s, x->name, x->dtype, x->shape);
            }
            ins[j] = map[x->id];
        }
        Op *copy = func_add_op(s, op->kind, ins, op->n_inputs, op->result->name, op->loc);
        memcpy(copy->attrs, op->attrs, sizeof(AttrValue) * (size_t)op_info(op->kind)->n_attrs);
        copy->result->dtype = op->result->dtype;
        copy->result->shape = op->result->shape;
        map[op->result->id] = copy->result;
    }
    Value *loss = map[output_value(f, "loss")->id];
    assert_non_null(loss);
    func_add_output(s, "loss", loss);
    free(map);
    free(dep);
    return s;
}

/* Every value of f (caller frees with free_values). */
static RefTensor *all_values(const Function *f, const RefTensor *inputs, RefStore *store) {
    RefTensor *outs = calloc((size_t)f->n_outputs + 1, sizeof *outs), *all = NULL;
    char err[1024] = "";
    if (ref_run(f, inputs, ref_store_lookup, store, outs, &all, err, sizeof err) != 0)
        fail_msg("ref_run @%s: %s", f->name, err);
    free_outputs(f, outs);
    return all;
}

static void free_values(const Function *f, RefTensor *all) {
    for (int v = 0; v < f->n_values; v++) ref_tensor_free(&all[v]);
    free(all);
}

/* The suffix's inputs: shallow views of the values computed once (ref_run copies inputs). */
static RefTensor *frontier_views(const Function *s, const int *frontier, const RefTensor *all) {
    RefTensor *vals = calloc((size_t)s->n_inputs + 1, sizeof *vals);
    assert_non_null(vals);
    for (int i = 0; i < s->n_inputs; i++) vals[i] = all[frontier[i]];
    return vals;
}

static double run_loss(const Function *s, const RefTensor *inputs, RefStore *store) {
    RefTensor *outs = run_function(s, inputs, store);
    double loss = outs[0].data[0];
    free_outputs(s, outs);
    return loss;
}

typedef struct FdWorst {
    double err, ad, fd;
    char name[512];
    int64_t index;
    int checked;
    long suffix_ops;
    double floor;     /* see the top comment */
    double worst_rel; /* worst |a-b|/max(|a|,|b|) among entries above floor */
    double worst_abs; /* worst |a-b| among entries below floor */
} FdWorst;

/* Compares FD_COORDS random coordinates of trainable param p with the autodiff gradient. */
static void check_param(Function *fwd, const RefTensor *all, RefStore *store,
                        const Param *par, const RefTensor *grad, TestRng *rng, FdWorst *worst) {
    int *frontier = NULL;
    Function *s = build_suffix(fwd, par->name, &frontier);
    RefTensor *sin = frontier_views(s, frontier, all);
    worst->suffix_ops += s->n_ops;
    RefTensor *w = ref_store_get_mut(store, par->name);
    assert_non_null(w);
    int64_t n = ref_tensor_numel(w);
    for (int k = 0; k < FD_COORDS; k++) {
        int64_t i = rng_below(rng, n);
        double saved = w->data[i];
        w->data[i] = saved + FD_H;
        double lp = run_loss(s, sin, store);
        w->data[i] = saved - FD_H;
        double lm = run_loss(s, sin, store);
        w->data[i] = saved;
        double fd = (lp - lm) / (2 * FD_H), ad = grad->data[i];
        double mag = fmax(fabs(ad), fabs(fd));
        double err = fabs(ad - fd) / fmax(mag, worst->floor);
        if (mag >= worst->floor)
            worst->worst_rel = fmax(worst->worst_rel, fabs(ad - fd) / mag);
        else
            worst->worst_abs = fmax(worst->worst_abs, fabs(ad - fd));
        if (err >= FD_TOL)
            print_error("FD mismatch %s[%lld]: autodiff %.12g, finite difference %.12g, "
                        "err %.3g\n",
                        par->name, (long long)i, ad, fd, err);
        if (err > worst->err || worst->checked == 0) {
            worst->err = err;
            worst->ad = ad;
            worst->fd = fd;
            worst->index = i;
            snprintf(worst->name, sizeof worst->name, "%s", par->name);
        }
        worst->checked++;
    }
    free(sin);
    free(frontier);
}

static void test_tiny_captioner_finite_differences(void **state) {
    (void)state;
    double t0 = now_s();
    Module *m = load_model("models/captioner_tiny.json", TINY_DEFINES, 2);
    Function *fwd = module_find_function(m, "forward");
    assert_non_null(fwd);
    int *frontier = NULL;
    Function *suffix = build_suffix(fwd, NULL, &frontier);
    Function *g = func_clone(fwd, "forward_grad");
    int n_grads = append_gradients(g, "loss");
    Diag d = {0};
    if (ir_verify_module(m, true, &d) != 0) fail_msg("after autodiff: %s", d.msg);

    TestRng rng = {20240607};
    RefStore store;
    ref_store_init(&store);
    random_params(m, &store, &rng);
    RefTensor inputs[8];
    assert_true(fwd->n_inputs <= 8);
    random_batch(fwd, inputs, &rng);

    double t1 = now_s();
    RefTensor *outs = run_function(g, inputs, &store);
    double t2 = now_s();
    RefTensor *all = all_values(fwd, inputs, &store);
    RefTensor *sin = frontier_views(suffix, frontier, all);
    double base = run_loss(suffix, sin, &store);
    double loss = outs[output_index(g, "loss")].data[0];
    assert_true(fabs(base - loss) <= 1e-12 * fabs(loss));

    FdWorst worst = {0};
    worst.floor = FD_NOISE_ULPS * (nextafter(loss, INFINITY) - loss) / (2 * FD_H) / FD_TOL;
    int n_trainable = 0;
    for (int p = 0; p < m->n_params; p++) {
        const Param *par = m->params[p];
        if (par->kind != PARAM_WEIGHT || !par->trainable) continue;
        n_trainable++;
        char name[512];
        snprintf(name, sizeof name, "grad.%s", par->name);
        int o = output_index(g, name);
        if (o < 0) fail_msg("trainable %s got no gradient", par->name);
        check_param(fwd, all, &store, par, &outs[o], &rng, &worst);
    }
    double t3 = now_s();
    fprintf(stderr,
            "tiny captioner: loss %.10f; %d trainable tensors, %d gradients, %d coordinates; "
            "worst err %.3g at %s[%lld] (autodiff %.12g, fd %.12g)\n"
            "  floor %.3g: worst relative error above it %.3g, worst absolute error below it "
            "%.3g (%.2f ulp(L)/2h)\n"
            "  time: load+autodiff %.2fs, forward+backward %.2fs, finite differences %.2fs "
            "(suffixes: %.1f of %d ops on average)\n",
            loss, n_trainable, n_grads, worst.checked, worst.err, worst.name,
            (long long)worst.index, worst.ad, worst.fd, worst.floor, worst.worst_rel,
            worst.worst_abs, worst.worst_abs * 2 * FD_H / (nextafter(loss, INFINITY) - loss),
            t1 - t0, t2 - t1, t3 - t2,
            (double)worst.suffix_ops / n_trainable, fwd->n_ops);
    assert_int_equal(n_grads, n_trainable);
    assert_true(worst.err < FD_TOL);

    free(sin);
    free_values(fwd, all);
    for (int i = 0; i < fwd->n_inputs; i++) ref_tensor_free(&inputs[i]);
    free_outputs(g, outs);
    free(frontier);
    ref_store_free(&store);
    module_free(m);
}

/* ---- main ----------------------------------------------------------------------------------- */

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names NAME of CASE_DIR/NAME.in.ir, sorted; *n set. */
static char **list_cases(int *n) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", source_dir(), CASE_DIR);
    DIR *dp = opendir(dir);
    char **names = NULL;
    *n = 0;
    if (dp == NULL) return NULL;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        size_t len = strlen(e->d_name), ext = strlen(".in.ir");
        if (len <= ext || strcmp(e->d_name + len - ext, ".in.ir") != 0) continue;
        names = realloc(names, sizeof *names * (size_t)(*n + 1));
        names[*n] = strndup(e->d_name, len - ext);
        (*n)++;
    }
    closedir(dp);
    if (*n > 0) qsort(names, (size_t)*n, sizeof *names, by_name);
    return names;
}

int main(void) {
    int n_cases = 0;
    char **cases = list_cases(&n_cases);
    const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_frozen_only_appends_nothing),
        cmocka_unit_test(test_loss_must_be_scalar),
        cmocka_unit_test(test_mask_gets_no_gradient),
        cmocka_unit_test(test_tiny_captioner_finite_differences),
    };
    int n_fixed = (int)(sizeof fixed / sizeof fixed[0]);
    struct CMUnitTest *tests = calloc((size_t)(n_fixed + n_cases), sizeof *tests);
    for (int i = 0; i < n_cases; i++)
        tests[i] = (struct CMUnitTest){cases[i], test_text_case, NULL, NULL, cases[i]};
    for (int i = 0; i < n_fixed; i++) tests[n_cases + i] = fixed[i];
    int rc = _cmocka_run_group_tests("autodiff", tests, (size_t)(n_fixed + n_cases), NULL, NULL);
    for (int i = 0; i < n_cases; i++) free(cases[i]);
    free(cases);
    free(tests);
    return rc;
}
