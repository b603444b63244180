/* test_c_kernels.c — every op's C kernel against the float64 reference interpreter.
 *
 * For each case of op_cases.h (every op of the table has at least one; an op without one
 * fails the first test), the one-op function is lowered, its kernels rendered to C and all
 * cases compiled with the system C compiler into ONE shared object (prelude once), which the
 * test dlopens. Each case then runs its kernel on fresh random f32 inputs (ids valid for
 * gathers) and compares with ref_run on the same inputs:
 *     |kernel - reference| <= 1e-5 * max(1, |reference|)      (NaN/inf must match exactly;
 *                                                              i32 results exactly)
 * `param` and views (reshape) must get no kernel. The worst error of each case is printed.
 * Each case then runs again with a quarter of its f32 operands' elements replaced by NaN,
 * infinities and signed zeros: kernel and reference must put NaN and each infinity in the
 * same places (test_nonfinite checks the reference's choices against PyTorch). */
#include <dlfcn.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "codegen.h"
#include "codegen/case_inputs.h"
#include "codegen/case_kernel.h"
#include "codegen/op_cases.h"
#include "interp.h"

#define TOL 1e-5

typedef void (*KernelFn)(void *const *bufs);

typedef struct Case {
    int index;
    Module *m;
    const Op *op;
    CaseKernel ck;
    char build_err[1200];
} Case;

static Case cases[N_OP_CASES];
static void *lib;
static char dir[64];


static int setup(void **state) {
    snprintf(dir, sizeof dir, "/tmp/capc_ckXXXXXX");
    if (!mkdtemp(dir)) return -1;
    char *srcs[N_OP_CASES], err[1024];
    for (int i = 0; i < N_OP_CASES; i++) {
        Case *c = &cases[i];
        c->index = i;
        srcs[i] = NULL;
        c->m = oc_build(i, &c->op, c->build_err, sizeof c->build_err);
        if (!c->m) continue;
        if (case_kernel_build(c->m, &c->ck, c->build_err, sizeof c->build_err) != 0) continue;
        srcs[i] = c->ck.c_src;
    }
    lib = ck_compile_c(dir, srcs, N_OP_CASES, err, sizeof err);
    if (!lib) fprintf(stderr, "%s\n", err);
    return lib ? 0 : -1;
}

static int teardown(void **state) {
    for (int i = 0; i < N_OP_CASES; i++) {
        case_kernel_free(&cases[i].ck);
        module_free(cases[i].m);
    }
    /* lib stays loaded: OpenMP worker threads may still sit in its code at exit. */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return 0;
}

static void test_every_op_has_a_case(void **state) {
    const char *missing = oc_missing_op();
    if (missing) fail_msg("op %s has no case in tests/codegen/op_cases.h", missing);
}

/* Runs the case's kernel and the reference on the same random inputs (with special values
 * when `special`); compares. */
static void run_case(Case *c, bool special) {
    const Function *f = c->m->funcs[0];
    const OpCase *oc = &OP_CASES[c->index];
    int n_in = f->n_inputs;
    RefTensor ins[OC_MAX_INPUTS], out;
    void *bufs[OC_MAX_INPUTS + 1];
    rng_state = 0x9E3779B97F4A7C15ULL * (uint64_t)(c->index + 1);
    for (int i = 0; i < n_in; i++) {
        const Value *v = f->inputs[i];
        assert_int_equal(ref_tensor_init(&ins[i], v->dtype, v->shape), 0);
        int64_t n = ref_tensor_numel(&ins[i]);
        char mode = oc->modes[i] ? oc->modes[i] : (v->dtype == DT_I32 ? 'i' : 'r');
        bufs[i + 1] = malloc((size_t)(n ? n : 1) * 4);
        for (int64_t e = 0; e < n; e++) {
            double x = draw(mode, oc->id_limit);
            if (special && v->dtype == DT_F32) x = with_specials(x);
            ins[i].data[e] = x;
            if (v->dtype == DT_I32)
                ((int32_t *)bufs[i + 1])[e] = (int32_t)x;
            else
                ((float *)bufs[i + 1])[e] = (float)x;
        }
    }
    char err[1024];
    int rc = ref_run(f, ins, NULL, NULL, &out, NULL, err, sizeof err);
    if (rc) fail_msg("ref_run: %s", err);
    const KernelDesc *k = c->ck.k->desc;
    KernelFn fn = (KernelFn)dlsym(lib, k->name);
    assert_non_null(fn);
    int64_t n = ref_tensor_numel(&out);
    bufs[0] = malloc((size_t)(n ? n : 1) * 4);
    void *args[CK_MAX_ARGS];
    for (int a = 0; a < c->ck.k->n_args; a++) args[a] = bufs[c->ck.slot[a]];
    fn(args);
    double worst = 0;
    for (int64_t e = 0; e < n; e++) {
        double want = out.data[e];
        double got = out.dtype == DT_I32 ? ((int32_t *)bufs[0])[e] : ((float *)bufs[0])[e];
        bool ok;
        if (isnan(want) || isinf(want))
            ok = (isnan(want) && isnan(got)) || got == want;
        else if (out.dtype == DT_I32)
            ok = got == want;
        else
            ok = fabs(got - want) <= TOL * fmax(1.0, fabs(want));
        double rel = isfinite(want) ? fabs(got - want) / fmax(1.0, fabs(want)) : (ok ? 0 : INFINITY);
        if (!(rel <= worst)) worst = rel;
        if (!ok) {
            fprintf(stderr, "%s: element %lld is %.9g, reference %.17g\n", k->name, (long long)e,
                    got, want);
            break;
        }
    }
    printf("[ case c%-3d %-26s ] worst scaled error %.3g%s\n", c->index, oc->op, worst,
           special ? " (NaN, inf, signed zeros in the f32 operands)" : "");
    for (int i = 0; i <= n_in; i++) free(bufs[i]);
    for (int i = 0; i < n_in; i++) ref_tensor_free(&ins[i]);
    ref_tensor_free(&out);
    if (!(worst <= TOL)) fail_msg("%s differs from the reference (scaled error %g)", k->name, worst);
}

static void test_case(void **state) {
    Case *c = *state;
    const char *op = OP_CASES[c->index].op;
    if (!c->m) fail_msg("case c%d (%s): %s", c->index, op, c->build_err);
    if (c->build_err[0]) fail_msg("case c%d (%s): %s", c->index, op, c->build_err);
    const Op *last = c->op;
    if (last->kind == OP_PARAM || op_is_view(last)) {
        assert_null(c->ck.k);
        assert_int_equal(c->ck.fk.n_kernels, 0);
        return;
    }
    assert_non_null(c->ck.k);
    run_case(c, false);
    run_case(c, true);
}

int main(void) {
    struct CMUnitTest tests[N_OP_CASES + 1];
    char names[N_OP_CASES][64];
    tests[0] = (struct CMUnitTest)cmocka_unit_test(test_every_op_has_a_case);
    for (int i = 0; i < N_OP_CASES; i++) {
        snprintf(names[i], sizeof names[i], "c%d_%s", i, OP_CASES[i].op);
        tests[i + 1] = (struct CMUnitTest){names[i], test_case, NULL, NULL, &cases[i]};
    }
    return _cmocka_run_group_tests("c_kernels", tests, N_OP_CASES + 1, setup, teardown);
}
