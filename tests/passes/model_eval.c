/* model_eval.c — see model_eval.h. Test helpers: they fail the running CMocka test on any
 * error, so the tests read as straight-line steps. */
#include "model_eval.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frontend.h"
#include "passes.h"
#include "testfiles.h"

Module *load_model(const char *path, const char *const *defines, int n_defines) {
    ConfigOverride ov[16];
    Diag d = {0};
    assert_true(n_defines <= 16);
    for (int i = 0; i < n_defines; i++)
        if (frontend_parse_define(defines[i], &ov[i], &d) != 0) fail_msg("-D %s: %s", defines[i], d.msg);
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", source_dir(), path);
    Module *m = frontend_load_file(full, ov, n_defines, &d);
    if (m == NULL) fail_msg("%s:%d:%d: %s", d.loc.file ? d.loc.file : path, d.loc.line, d.loc.col, d.msg);
    if (pass_infer_shapes(m, NULL, &d) != 0) {
        module_free(m);
        fail_msg("shape pass on %s: %s", path, d.msg);
    }
    return m;
}

int output_index(const Function *f, const char *name) {
    for (int i = 0; i < f->n_outputs; i++)
        if (strcmp(f->output_names[i], name) == 0) return i;
    return -1;
}

Value *output_value(const Function *f, const char *name) {
    int i = output_index(f, name);
    if (i < 0) fail_msg("@%s has no output named %s", f->name, name);
    return f->outputs[i];
}

int append_gradients(Function *f, const char *loss_name) {
    Value **grads = NULL;
    Diag d = {0};
    if (autodiff_append(f, output_value(f, loss_name), &grads, &d) != 0)
        fail_msg("autodiff on @%s: %s (at %s:%d:%d)", f->name, d.msg,
                 d.loc.file ? d.loc.file : "-", d.loc.line, d.loc.col);
    const Module *m = f->module;
    int n = 0;
    for (int p = 0; p < m->n_params; p++) {
        if (grads[p] == NULL) continue;
        char name[512];
        snprintf(name, sizeof name, "grad.%s", m->params[p]->name);
        func_add_output(f, name, grads[p]);
        n++;
    }
    free(grads);
    return n;
}

RefTensor *run_function(const Function *f, const RefTensor *inputs, RefStore *params) {
    RefTensor *outs = calloc((size_t)f->n_outputs + 1, sizeof *outs);
    assert_non_null(outs);
    char err[1024] = "";
    if (ref_run(f, inputs, ref_store_lookup, params, outs, NULL, err, sizeof err) != 0) {
        free(outs);
        fail_msg("ref_run @%s: %s", f->name, err);
    }
    return outs;
}

void free_outputs(const Function *f, RefTensor *outs) {
    for (int i = 0; i < f->n_outputs; i++) ref_tensor_free(&outs[i]);
    free(outs);
}

static uint64_t splitmix64(TestRng *r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double rng_uniform(TestRng *r) { return (double)(splitmix64(r) >> 11) * 0x1p-53; }

int64_t rng_below(TestRng *r, int64_t n) { return (int64_t)(rng_uniform(r) * (double)n); }

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

void random_params(const Module *m, RefStore *store, TestRng *rng) {
    for (int p = 0; p < m->n_params; p++) {
        const Param *par = m->params[p];
        RefTensor t;
        assert_int_equal(ref_tensor_init(&t, par->dtype, par->shape), 0);
        int64_t n = ref_tensor_numel(&t);
        int64_t fan_in = par->shape.rank > 1 ? n / par->shape.dims[0] : n;
        bool near_one = ends_with(par->name, "running_var") ||
                        (par->shape.rank == 1 && ends_with(par->name, ".weight"));
        bool small = ends_with(par->name, "running_mean") || ends_with(par->name, "bias");
        double a = near_one ? 0.5 : small ? 0.2 : sqrt(3.0 / (double)fan_in);
        for (int64_t i = 0; i < n; i++)
            t.data[i] = (near_one ? 1.0 : 0.0) + a * (2 * rng_uniform(rng) - 1);
        assert_int_equal(ref_store_put(store, par->name, &t), 0);
    }
}
