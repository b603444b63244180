/* test_kernel_counts.c — how many kernels the tiny captioner's entry points run, fused and
 * unfused (models/captioner_tiny.json through the whole pipeline up to rendered kernels).
 *
 * The totals are pinned exactly: a change in them is a change in what fusion does, and the
 * commit that makes it updates this table and docs/benchmarks.md together. What the totals are
 * made of is checked against the model itself, counted by hand from its config: 1 encoder
 * layer and 2 decoder layers give 1 + 2 * 2 = 5 attentions, each one fused.attention forward
 * and one fused.attention_backward in the training entries; 1 * 2 + 2 * 3 = 8 residual +
 * LayerNorm sublayers; the trainable layer4 (conv1, conv2, downsample) has 3 BatchNorms in
 * training mode; the 9 frozen convolutions of conv1 and layer1..3 fold their BatchNorm away;
 * the optimizer is one multi-tensor kernel and the gradient clip one multi-reduction.
 * The target: train_step launches at most 200 kernels (it ran ~1,900 unfused). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frontend.h"
#include "ir.h"
#include "ops.h"
#include "pipeline.h"
#include "testfiles.h"

typedef struct Compiled {
    Module *m;
    PipelineReport report;
} Compiled;

static void compile_tiny_with(Compiled *c, bool fuse, unsigned fuse_off, const ConfigOverride *ov,
                              int n_ov) {
    char path[4096];
    snprintf(path, sizeof path, "%s/models/captioner_tiny.json", source_dir());
    Diag d = {0};
    memset(c, 0, sizeof *c);
    c->m = frontend_load_file(path, ov, n_ov, &d);
    if (c->m == NULL) fail_msg("load: %s", d.msg);
    PipelineOptions opts = {.goal = PIPELINE_KERNELS, .report = &c->report};
    opts.passes.no_fuse = !fuse;
    opts.passes.fuse_off = fuse_off;
    if (pipeline_run(c->m, &opts, &d) != 0) fail_msg("pipeline: %s", d.msg);
}

static void compile_tiny(Compiled *c, bool fuse, unsigned fuse_off) {
    compile_tiny_with(c, fuse, fuse_off, NULL, 0);
}

static void compiled_free(Compiled *c) {
    pipeline_report_free(&c->report);
    module_free(c->m);
}

static const EntryStats *entry(const Compiled *c, const char *name) {
    for (int i = 0; i < c->report.n_entries; i++)
        if (strcmp(c->report.entries[i].name, name) == 0) return &c->report.entries[i];
    fail_msg("no entry point %s", name);
    return NULL;
}

static int groups_named(const Module *m, const char *fn, const char *pattern) {
    const Function *f = module_find_function(m, fn);
    assert_non_null(f);
    int n = 0;
    for (int g = 0; g < f->n_groups; g++) n += strcmp(f->groups[g].pattern, pattern) == 0;
    return n;
}

/* The pinned totals: kernels of its own per entry point, fused and with --no-fuse. */
static const struct {
    const char *entry;
    int fused, unfused;
} EXPECTED[] = {
    /* fused: 4 more than before the non-finite guard (its where()s), 2 fewer since a
     * contraction's epilogue goes on past a value other ops read too (the decoder FFNs'
     * linear + relu + dropout: relu's output, read by relu_grad, is stored by the group).
     * Unfused: 1 fewer since the learning rate became an hparam: the `full` constant that
     * made it was a kernel of its own under --no-fuse, a `param` read needs none. */
    {"train_step", 187, 2082},
    {"eval_loss", 61, 151},
    {"encode", 31, 73},
    {"decode_step", 43, 77},
    /* encode + the whole decoder in eval mode, returning the last cross-attention's
     * probabilities, whose attention therefore stays unfused (3 kernels, not 1) */
    {"attend", 64, 138},
};

static void test_totals(void **state) {
    (void)state;
    Compiled fused, unfused;
    compile_tiny(&fused, true, 0);
    compile_tiny(&unfused, false, 0);
    for (size_t i = 0; i < sizeof EXPECTED / sizeof *EXPECTED; i++) {
        const EntryStats *f = entry(&fused, EXPECTED[i].entry);
        const EntryStats *u = entry(&unfused, EXPECTED[i].entry);
        print_message("@%s: %d kernels fused (%d launches), %d unfused (%d launches)\n",
                      f->name, f->kernels, f->launches, u->kernels, u->launches);
        assert_int_equal(f->kernels, EXPECTED[i].fused);
        assert_int_equal(u->kernels, EXPECTED[i].unfused);
    }
    /* --check's "unfused" column comes from the same numbers */
    for (int i = 0; i < fused.report.n_entries; i++) {
        const char *name = fused.report.entries[i].name;
        if (strcmp(name, "fold") == 0) {
            assert_int_equal(fused.report.unfused_kernels[i], -1);
            continue;
        }
        assert_int_equal(fused.report.unfused_kernels[i], entry(&unfused, name)->kernels);
    }
    assert_true(entry(&fused, "train_step")->launches <= 200);
    compiled_free(&fused);
    compiled_free(&unfused);
}

/* A C activation (models/acts.c, -D act=1..3 in place of ReLU) fuses like ReLU: every entry
 * keeps its kernel count exactly. A call's gradient reads the call's input (the
 * pre-activation) where relu_grad reads relu's output; the contraction group that computes
 * it stores the pre-activation as well and goes on with the call as its epilogue, so the
 * stored value costs no kernel (docs/custom-ops.md). */
static void test_custom_activation_fuses_like_relu(void **state) {
    (void)state;
    Compiled relu;
    compile_tiny(&relu, true, 0);
    static const char *const acts[] = {"1", "2", "3"};
    for (int a = 0; a < 3; a++) {
        ConfigOverride ov = {"act", acts[a]};
        Compiled c;
        compile_tiny_with(&c, true, 0, &ov, 1);
        for (int i = 0; i < relu.report.n_entries; i++) {
            const char *name = relu.report.entries[i].name;
            print_message("act=%s @%s: %d kernels (ReLU: %d)\n", acts[a], name,
                          entry(&c, name)->kernels, relu.report.entries[i].kernels);
            assert_int_equal(entry(&c, name)->kernels, relu.report.entries[i].kernels);
        }
        compiled_free(&c);
    }
    compiled_free(&relu);
}

static void test_patterns_match_the_model(void **state) {
    (void)state;
    Compiled c;
    compile_tiny(&c, true, 0);
    const char *training[] = {"train_step", "train_grads", "eval_grads"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(groups_named(c.m, training[i], "attention"), 5);
        assert_int_equal(groups_named(c.m, training[i], "attention_backward"), 5);
        assert_int_equal(groups_named(c.m, training[i], "residual_layernorm"), 8);
    }
    assert_int_equal(groups_named(c.m, "eval_loss", "attention"), 5);
    assert_int_equal(groups_named(c.m, "encode", "attention"), 1);       /* encoder self */
    assert_int_equal(groups_named(c.m, "decode_step", "attention"), 4);  /* self + cross, x2 */
    assert_int_equal(groups_named(c.m, "decode_step", "residual_layernorm"), 6);
    /* encoder self, decoder self x2, the first decoder layer's cross; not the returned one */
    assert_int_equal(groups_named(c.m, "attend", "attention"), 4);
    assert_int_equal(groups_named(c.m, "train_step", "batch_norm"), 3);
    assert_int_equal(groups_named(c.m, "train_step", "multi_tensor"), 1);
    assert_int_equal(groups_named(c.m, "train_step", "multi_reduction"), 1);

    /* Eval-mode BatchNorm: the frozen ones are gone from every entry but `fold` (9 convs, a
     * weight and a bias each). In the entries without a backward (eval_loss, encode, attend) the
     * others sit in their convolution's epilogue (conv_bn, conv_bn_relu); with a backward
     * (eval_grads) the convolution's output is read again by it, so its epilogue chain stops
     * there and BatchNorm + ReLU are one elementwise kernel. */
    const Function *fold = module_find_function(c.m, "fold");
    assert_non_null(fold);
    assert_int_equal(fold->n_outputs, 18);
    for (int i = 0; i < c.m->n_funcs; i++) {
        const Function *f = c.m->funcs[i];
        if (f == fold) continue;
        bool no_backward = strcmp(f->name, "eval_loss") == 0 || strcmp(f->name, "encode") == 0 ||
                           strcmp(f->name, "attend") == 0;
        for (int k = 0; k < f->n_ops; k++) {
            const Op *op = f->ops[k];
            if (op->kind != OP_BATCH_NORM || op_bool(op, "training")) continue;
            const char *name = op->result->name;
            if (strncmp(name, "backbone.layer4.", 16) != 0 && strncmp(name, "neck.", 5) != 0)
                fail_msg("@%s: %%%s was not folded", f->name, name);
            const char *pattern = op->group >= 0 ? f->groups[op->group].pattern : "(none)";
            if (no_backward && strncmp(pattern, "conv_bn", 7) != 0)
                fail_msg("@%s: %%%s in group %s", f->name, name, pattern);
        }
    }
    compiled_free(&c);
}

/* A rule switched off (--fuse=-attention) forms none of its groups and costs kernels. */
static void test_rule_switch(void **state) {
    (void)state;
    Compiled all, no_attention;
    compile_tiny(&all, true, 0);
    compile_tiny(&no_attention, true, 1u << FUSE_RULE_ATTENTION);
    assert_int_equal(groups_named(no_attention.m, "train_step", "attention"), 0);
    assert_int_equal(groups_named(no_attention.m, "train_step", "attention_backward"), 0);
    assert_true(entry(&no_attention, "train_step")->kernels > entry(&all, "train_step")->kernels);
    compiled_free(&all);
    compiled_free(&no_attention);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_totals),
        cmocka_unit_test(test_patterns_match_the_model),
        cmocka_unit_test(test_rule_switch),
        cmocka_unit_test(test_custom_activation_fuses_like_relu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
