/* test_lower_reuse.c — a step shaped like an earlier one takes that one's kernel without being
 * lowered (LowerCache, codegen/lower_key.c). Every step of the tiny captioner (as compiled by
 * default, with 3 encoder layers, with Mish activations, unfused, and the ResNet-50 captioner)
 * is lowered both ways: fully, and through one cache across all entry points. A reused
 * kernel's arguments must be exactly the ones lowering declares (its step's writes, then its
 * reads), and its fully lowered descriptions must equal those of the kernel it reuses
 * (kd_equal, the C form and the CUDA form): the package would have merged them anyway. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "codegen.h"
#include "frontend.h"
#include "pipeline.h"

/* Function and kernel index of k among fks[0..n). */
static void locate(const FunctionKernels *fks, int n, const LoweredKernel *k, int *fi, int *ki) {
    for (int i = 0; i < n; i++)
        if (k >= fks[i].kernels && k < fks[i].kernels + fks[i].n_kernels) {
            *fi = i;
            *ki = (int)(k - fks[i].kernels);
            return;
        }
    fail_msg("same_as points at no kernel of the module");
}

static bool same_forms(const LoweredKernel *a, const LoweredKernel *b) {
    return kd_equal(a->desc, b->desc) && (a->cuda == NULL) == (b->cuda == NULL) &&
           (a->cuda == NULL || kd_equal(a->cuda, b->cuda));
}

static void check_model(const char *path, const ConfigOverride *ov, int n_ov, bool no_fuse,
                        int min_reused) {
    Diag d = {0};
    Module *m = frontend_load_file(path, ov, n_ov, &d);
    if (m == NULL) fail_msg("%s: %s", path, d.msg);
    PipelineOptions opts = {0};
    opts.passes.no_fuse = no_fuse;
    if (pipeline_run(m, &opts, &d) != 0) fail_msg("pipeline: %s", d.msg);
    int n = m->n_funcs;
    FunctionKernels *full = calloc((size_t)n, sizeof *full);
    FunctionKernels *cached = calloc((size_t)n, sizeof *cached);
    LowerCache *cache = lower_cache_new();
    assert_non_null(full);
    assert_non_null(cached);
    assert_non_null(cache);
    int reused = 0, total = 0;
    for (int i = 0; i < n; i++) {
        const Function *f = m->funcs[i];
        if (codegen_lower_function(f, &full[i], &d) != 0) fail_msg("%s: %s", f->name, d.msg);
        if (codegen_lower_function_cached(f, &cached[i], cache, &d) != 0)
            fail_msg("%s (cached): %s", f->name, d.msg);
        assert_int_equal(full[i].n_kernels, cached[i].n_kernels);
        for (int k = 0; k < full[i].n_kernels; k++) {
            const LoweredKernel *a = &full[i].kernels[k], *b = &cached[i].kernels[k];
            total++;
            assert_int_equal(a->step, b->step);
            assert_int_equal(a->n_args, b->n_args);
            for (int j = 0; j < a->n_args; j++)
                if (a->args[j] != b->args[j])
                    fail_msg("@%s kernel %d (%s): argument %d differs", f->name, k,
                             a->source_ops, j);
            if (b->same_as == NULL) {
                assert_false(b->shared);
                if (!same_forms(a, b))
                    fail_msg("@%s kernel %d (%s) lowers differently with a cache", f->name, k,
                             a->source_ops);
                continue;
            }
            reused++;
            assert_true(b->shared);
            assert_null(b->same_as->same_as); /* only lowered kernels are reused */
            int fi = -1, ki = -1; /* set by locate, which fails the test when not found */
            locate(cached, n, b->same_as, &fi, &ki);
            assert_true(fi < i || (fi == i && ki < k));
            if (!same_forms(a, &full[fi].kernels[ki]))
                fail_msg("@%s kernel %d (%s) reuses @%s kernel %d (%s), which lowers "
                         "differently", f->name, k, a->source_ops, m->funcs[fi]->name, ki,
                         full[fi].kernels[ki].source_ops);
        }
    }
    print_message("%s: %d of %d kernels reused\n", path, reused, total);
    assert_true(reused >= min_reused);
    lower_cache_free(cache);
    for (int i = 0; i < n; i++) {
        function_kernels_free(&full[i]);
        function_kernels_free(&cached[i]);
    }
    free(full);
    free(cached);
    module_free(m);
}

static void test_tiny(void **state) {
    (void)state;
    check_model("models/captioner_tiny.json", NULL, 0, false, 1);
}

static void test_tiny_deeper(void **state) {
    (void)state;
    ConfigOverride ov[] = {{"enc_layers", "3"}};
    /* every entry point repeats forward's kernels, and each layer the one before */
    check_model("models/captioner_tiny.json", ov, 1, false, 100);
}

static void test_tiny_mish(void **state) {
    (void)state;
    ConfigOverride ov[] = {{"act", "2"}};
    check_model("models/captioner_tiny.json", ov, 1, false, 1);
}

static void test_tiny_unfused(void **state) {
    (void)state;
    check_model("models/captioner_tiny.json", NULL, 0, true, 1);
}

static void test_resnet50(void **state) {
    (void)state;
    ConfigOverride ov[] = {{"preset", "resnet50"}};
    check_model("models/captioner.json", ov, 1, false, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny),
        cmocka_unit_test(test_tiny_deeper),
        cmocka_unit_test(test_tiny_mish),
        cmocka_unit_test(test_tiny_unfused),
        cmocka_unit_test(test_resnet50),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
