/* test_pass_cases.c — the fusion pass, BatchNorm folding and the feature cache's cut, tested
 * IR text in, IR text out (passes/fuse.c's rules, passes/fold_bn.c, passes/feature_cache.c).
 *
 * Every tests/passes/fuse/NAME.in.ir is a case (found by listing the folder): the module is
 * parsed and verified, the fusion pass runs with its defaults, and the printed module must
 * equal NAME.out.ir, written by hand from the rules: which ops form which fused.PATTERN group
 * (and, for the attention backward, the recomputed copies of the forward ops). The cases
 * cover every rule and named pattern and the cases that must not fuse:
 *   elementwise_chain, contraction_epilogue, conv_bn_relu, residual_layernorm, softmax_prologue,
 *   layernorm_backward, batch_norm_training, attention, attention_backward, multi_tensor,
 *   multi_reduction; bn_output_used_twice (the epilogue goes on past a value with two users,
 *   which the group then stores too);
 *   residual_from_elsewhere (joining would close a cycle through a contraction),
 *   contraction_into_contraction, reduction_input_needed_later (the backward's reduction of a
 *   LayerNorm's input stays out of the forward group, which writes that input for it),
 *   attention_probs_returned (a function that returns the probabilities keeps the attention
 *   unfused: the fused kernel never stores them; the softmax still takes its prologue).
 * Every tests/passes/fold/NAME.in.ir runs BatchNorm folding the same way: frozen_conv_bn
 * (folded: derived state, the `fold` entry point), shared_weight_two_bns (one conv weight
 * before two BatchNorms: two folds, not one reused), and the cases that must not fold:
 * trainable_conv, conv_output_used_twice, running_stats_written (another entry point trains
 * the BatchNorm and updates its statistics). Every tests/passes/features/NAME.in.ir runs the
 * feature cache pass: frozen_prefix (features and train_step_cached added), and the cases
 * with no frozen prefix: trainable_first, dropout_first.
 * Each result must also parse back from its printed form, and lower to kernels that pass the
 * kernel checker (so every group the pass forms is one codegen can build). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codegen.h"
#include "ir.h"
#include "passes.h"
#include "testfiles.h"

/* A case folder and the pass its cases run. */
typedef struct CaseDir {
    const char *dir, *what;
    int (*pass)(Module *m, const PassOptions *opts, Diag *d);
} CaseDir;

static const CaseDir CASE_DIRS[] = {
    {"tests/passes/fuse", "fusion", pass_fuse},
    {"tests/passes/fold", "BatchNorm folding", pass_fold_bn},
    {"tests/passes/features", "the feature cache pass", pass_feature_cache},
};

typedef struct Case {
    const CaseDir *where;
    char name[128];
} Case;

static void lowers(const Module *m) {
    for (int i = 0; i < m->n_funcs; i++) {
        FunctionKernels fk;
        Diag d = {0};
        if (codegen_lower_function(m->funcs[i], &fk, &d) != 0 || codegen_check_kernels(&fk, &d) != 0)
            fail_msg("@%s does not lower: %s", m->funcs[i]->name, d.msg);
        function_kernels_free(&fk);
    }
}

static void run_case(void **state) {
    const Case *c = *state;
    const char *name = c->name, *dir = c->where->dir;
    char *in = read_test_data(dir, name, ".in.ir");
    char *want = read_test_data(dir, name, ".out.ir");
    assert_non_null(in);
    if (want == NULL) fail_msg("%s has no .out.ir", name);
    Diag d = {0};
    Module *m = ir_parse(in, name, &d);
    if (m == NULL) fail_msg("%s.in.ir does not parse: %s", name, d.msg);
    if (ir_verify_module(m, true, &d) != 0) fail_msg("%s.in.ir: %s", name, d.msg);
    if (c->where->pass(m, NULL, &d) != 0) fail_msg("%s: %s failed: %s", name, c->where->what, d.msg);
    if (ir_verify_module(m, true, &d) != 0)
        fail_msg("%s: invalid after %s: %s", name, c->where->what, d.msg);
    char *got = ir_module_to_string(m);
    assert_non_null(got);
    if (strcmp(got, want) != 0) {
        report_text_difference(name, want, got);
        fail_msg("%s: the module after %s differs from %s.out.ir", name, c->where->what, name);
    }
    Module *again = ir_parse(got, name, &d);
    if (again == NULL) fail_msg("%s: the result does not parse back: %s", name, d.msg);
    char *twice = ir_module_to_string(again);
    assert_string_equal(twice, got);
    lowers(m);
    free(twice);
    module_free(again);
    free(got);
    free(in);
    free(want);
    module_free(m);
}

/* With --no-fuse (and with every rule off) the pass leaves no group. */
static void test_no_fuse(void **state) {
    char *in = read_test_data(CASE_DIRS[0].dir, "attention_backward", ".in.ir");
    Diag d = {0};
    Module *m = ir_parse(in, "attention_backward", &d);
    assert_non_null(m);
    PassOptions off = {.no_fuse = true}, none = {.fuse_off = ~0u};
    assert_int_equal(pass_fuse(m, &off, &d), 0);
    assert_int_equal(m->funcs[0]->n_groups, 0);
    assert_int_equal(pass_fuse(m, &none, &d), 0);
    assert_int_equal(m->funcs[0]->n_groups, 0);
    module_free(m);
    free(in);
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const Case *)a)->name, ((const Case *)b)->name);
}

/* Adds the cases of one folder (every NAME.in.ir) to cases, sorted by name. */
static int list_cases(const CaseDir *where, Case *cases, int n, int max) {
    char *dir = test_data_path(where->dir, "", "");
    DIR *dp = opendir(dir);
    if (dp == NULL) {
        fprintf(stderr, "cannot list %s\n", dir);
        free(dir);
        return -1;
    }
    int first = n;
    for (struct dirent *e; (e = readdir(dp)) != NULL && n < max;) {
        size_t len = strlen(e->d_name);
        if (len < 7 || strcmp(e->d_name + len - 6, ".in.ir") != 0) continue;
        cases[n].where = where;
        snprintf(cases[n].name, sizeof cases[n].name, "%.*s", (int)(len - 6), e->d_name);
        n++;
    }
    closedir(dp);
    free(dir);
    qsort(cases + first, (size_t)(n - first), sizeof *cases, by_name);
    return n;
}

int main(void) {
    static Case cases[96];
    static char titles[96][160]; /* the test names: "fold/NAME" for the folding cases */
    struct CMUnitTest tests[97];
    int n = 0;
    for (size_t k = 0; k < sizeof CASE_DIRS / sizeof *CASE_DIRS; k++)
        if ((n = list_cases(&CASE_DIRS[k], cases, n, 96)) < 0) return 1;
    for (int i = 0; i < n; i++) {
        const char *prefix = cases[i].where == &CASE_DIRS[0] ? "" : cases[i].where == &CASE_DIRS[1] ? "fold/" : "features/";
        snprintf(titles[i], sizeof titles[i], "%s%s", prefix, cases[i].name);
        tests[i] = (struct CMUnitTest){titles[i], run_case, NULL, NULL, &cases[i]};
    }
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_no_fuse);
    return _cmocka_run_group_tests("fuse", tests, (size_t)n, NULL, NULL);
}
