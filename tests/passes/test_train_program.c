/* test_train_program.c — the training program (passes/train_program.c, docs/training.md),
 * checked with the float64 reference interpreter against arithmetic written out here:
 *
 *   - one train_step of a small model (linear -> batch_norm (training) -> relu -> dropout ->
 *     linear -> cross_entropy, one frozen weight) equals an Adam step computed in this file
 *     from gradients by central finite differences of forward's loss, starting from non-zero
 *     moments and step 3 (so bias correction matters); Adam and AdamW, weight decay, groups;
 *   - clipping engages when the norm exceeds max_norm (and not otherwise); grad_norm output;
 *   - BatchNorm running statistics update like PyTorch (unbiased variance, momentum 0.1);
 *   - the step counter increments; the LR schedules give the documented lr;
 *   - eval_loss uses running statistics and no dropout (loss computed by hand);
 *   - the "train" section's errors; the captioner's pipeline dump holds train_step and parses.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "frontend.h"
#include "interp.h"
#include "ops.h"
#include "pipeline.h"
#include "testfiles.h"

enum { B = 4, IN = 3, H = 5, K = 3 };

/* The model; %s slots: the train section's optimizer, weight decay, schedule, groups. */
static const char *MODEL_TEMPLATE =
    "{\"model\": \"tiny_train\",\n"
    " \"config\": {\"batch\": 4, \"in\": 3, \"hidden\": 5, \"classes\": 3, \"lr\": 0.01,\n"
    "            \"clip\": 100.0, \"p\": 0.5},\n"
    " \"inputs\": {\"x\": {\"dtype\": \"f32\", \"shape\": [\"batch\", \"in\"]},\n"
    "            \"label\": {\"dtype\": \"i32\", \"shape\": [\"batch\"]},\n"
    "            \"rng\": {\"dtype\": \"i32\", \"shape\": [2]}},\n"
    " \"frozen\": [\"fc1.bias\"],\n"
    " \"body\": [\n"
    "  {\"param\": \"fc1.weight\", \"shape\": [\"hidden\", \"in\"], \"out\": \"w1\"},\n"
    "  {\"param\": \"fc1.bias\", \"shape\": [\"hidden\"], \"out\": \"b1\"},\n"
    "  {\"op\": \"linear\", \"in\": [\"x\", \"w1\", \"b1\"], \"out\": \"h\"},\n"
    "  {\"param\": \"bn.weight\", \"shape\": [\"hidden\"], \"out\": \"g\"},\n"
    "  {\"param\": \"bn.bias\", \"shape\": [\"hidden\"], \"out\": \"be\"},\n"
    "  {\"param\": \"bn.running_mean\", \"shape\": [\"hidden\"], \"buffer\": true, \"out\": \"rm\"},\n"
    "  {\"param\": \"bn.running_var\", \"shape\": [\"hidden\"], \"buffer\": true, \"out\": \"rv\"},\n"
    "  {\"op\": \"batch_norm\", \"in\": [\"h\", \"g\", \"be\", \"rm\", \"rv\"],\n"
    "   \"attrs\": {\"training\": true}, \"out\": \"h\"},\n"
    "  {\"op\": \"relu\", \"in\": [\"h\"], \"out\": \"h\"},\n"
    "  {\"op\": \"dropout\", \"in\": [\"h\", \"rng\"], \"attrs\": {\"p\": \"p\"}, \"out\": \"h\"},\n"
    "  {\"param\": \"fc2.weight\", \"shape\": [\"classes\", \"hidden\"], \"out\": \"w2\"},\n"
    "  {\"param\": \"fc2.bias\", \"shape\": [\"classes\"], \"out\": \"b2\"},\n"
    "  {\"op\": \"linear\", \"in\": [\"h\", \"w2\", \"b2\"], \"out\": \"logits\"},\n"
    "  {\"op\": \"cross_entropy\", \"in\": [\"logits\", \"label\"], \"attrs\": {\"ignore_index\": -1},\n"
    "   \"out\": \"loss\"}\n"
    " ],\n"
    " \"outputs\": {\"loss\": \"loss\", \"logits\": \"logits\"},\n"
    " \"train\": {\"loss\": \"loss\", \"optimizer\": \"%s\", \"lr\": \"lr\", \"betas\": [0.9, 0.99],\n"
    "           \"eps\": 1e-8, \"weight_decay\": %s, \"clip_grad_norm\": \"clip\",\n"
    "           \"schedule\": %s, \"groups\": [%s]}\n"
    "}\n";

typedef struct Variant {
    const char *optimizer, *weight_decay, *schedule, *groups;
    const char *defines[4]; /* -D NAME=VALUE, NULL-terminated */
} Variant;

static char *model_text(const Variant *v) {
    size_t n = strlen(MODEL_TEMPLATE) + 1024;
    char *text = malloc(n);
    snprintf(text, n, MODEL_TEMPLATE, v->optimizer, v->weight_decay, v->schedule, v->groups);
    return text;
}

/* The model after shapes and the training pass, verified with shapes. */
static Module *build(const Variant *v) {
    char *text = model_text(v);
    ConfigOverride ov[4];
    int n_ov = 0;
    Diag d;
    for (; v->defines[n_ov]; n_ov++)
        assert_int_equal(frontend_parse_define(v->defines[n_ov], &ov[n_ov], &d), 0);
    Module *m = frontend_load_text(text, strlen(text), "tiny_train.json", ov, n_ov, &d);
    free(text);
    if (!m) fail_msg("frontend: %s:%d:%d: %s", d.loc.file, d.loc.line, d.loc.col, d.msg);
    if (pass_infer_shapes(m, NULL, &d) != 0) fail_msg("shapes: %s", d.msg);
    if (pass_build_training_program(m, NULL, &d) != 0) fail_msg("training program: %s", d.msg);
    if (ir_verify_module(m, true, &d) != 0) fail_msg("verify: %s", d.msg);
    return m;
}

/* ---- tensors and a deterministic generator ---------------------------------------------- */

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;
static double uniform(double lo, double hi) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (double)(rng_state >> 11) * 0x1p-53;
}

static void put(RefStore *s, const char *name, DType dt, Shape shape, double lo, double hi) {
    RefTensor t;
    assert_int_equal(ref_tensor_init(&t, dt, shape), 0);
    for (int64_t i = 0; i < ref_tensor_numel(&t); i++) t.data[i] = uniform(lo, hi);
    assert_int_equal(ref_store_put(s, name, &t), 0);
}

/* Weights, buffers and state (moments non-zero, step 3) for module m. */
static void fill_store(RefStore *s, const Module *m) {
    rng_state = 0x2545F4914F6CDD1DULL;
    ref_store_init(s);
    for (int i = 0; i < m->n_params; i++) {
        const Param *p = m->params[i];
        if (strcmp(p->name, "step") == 0) {
            put(s, p->name, DT_F32, p->shape, 3, 3);
        } else if (strncmp(p->name, "adam.v.", 7) == 0 || strstr(p->name, "running_var")) {
            put(s, p->name, DT_F32, p->shape, 0.5, 1.5);
        } else if (strncmp(p->name, "adam.m.", 7) == 0) {
            put(s, p->name, DT_F32, p->shape, -0.1, 0.1);
        } else {
            put(s, p->name, DT_F32, p->shape, -1, 1);
        }
    }
}

static double *data(const RefStore *s, const char *name) {
    const RefTensor *t = ref_store_get(s, name);
    if (!t) fail_msg("no tensor '%s'", name);
    return t->data;
}

typedef struct Batch {
    RefTensor in[3]; /* x, label, rng */
} Batch;

static void make_batch(Batch *b) {
    assert_int_equal(ref_tensor_init(&b->in[0], DT_F32, shape_of(2, (int64_t)B, (int64_t)IN)), 0);
    assert_int_equal(ref_tensor_init(&b->in[1], DT_I32, shape_of(1, (int64_t)B)), 0);
    assert_int_equal(ref_tensor_init(&b->in[2], DT_I32, shape_of(1, (int64_t)2)), 0);
    for (int i = 0; i < B * IN; i++) b->in[0].data[i] = uniform(-2, 2);
    for (int i = 0; i < B; i++) b->in[1].data[i] = i % K;
    b->in[2].data[0] = 1234;
    b->in[2].data[1] = 3; /* (seed, step) */
}

static void free_batch(Batch *b) {
    for (int i = 0; i < 3; i++) ref_tensor_free(&b->in[i]);
}

/* Runs function `fn` of m; outputs (n = f->n_outputs) returned malloc'd. */
static RefTensor *run(const Module *m, const char *fn, const Batch *b, RefStore *s) {
    const Function *f = module_find_function(m, fn);
    if (!f) fail_msg("no function @%s", fn);
    RefTensor *outs = calloc((size_t)f->n_outputs, sizeof *outs);
    char err[512];
    if (ref_run(f, b->in, ref_store_lookup, s, outs, NULL, err, sizeof err) != 0)
        fail_msg("@%s: %s", fn, err);
    return outs;
}

static void free_outs(const Module *m, const char *fn, RefTensor *outs) {
    const Function *f = module_find_function(m, fn);
    for (int i = 0; i < f->n_outputs; i++) ref_tensor_free(&outs[i]);
    free(outs);
}

static int out_index(const Module *m, const char *fn, const char *name) {
    const Function *f = module_find_function(m, fn);
    for (int i = 0; i < f->n_outputs; i++)
        if (strcmp(f->output_names[i], name) == 0) return i;
    return -1;
}

static double forward_loss(const Module *m, const Batch *b, RefStore *s) {
    RefTensor *outs = run(m, "forward", b, s);
    double loss = outs[out_index(m, "forward", "loss")].data[0];
    free_outs(m, "forward", outs);
    return loss;
}

/* ---- the expected step, computed here ------------------------------------------------------ */

static const char *TRAINABLE[] = {"fc1.weight", "bn.weight", "bn.bias", "fc2.weight", "fc2.bias"};
enum { N_TRAINABLE = 5 };

/* Central finite differences of forward's loss w.r.t. every element of weight `name`. */
static double *fd_grad(const Module *m, const Batch *b, RefStore *s, const char *name) {
    RefTensor *t = ref_store_get_mut(s, name);
    int64_t n = ref_tensor_numel(t);
    double *g = malloc(sizeof *g * (size_t)n), h = 1e-6;
    for (int64_t i = 0; i < n; i++) {
        double keep = t->data[i];
        t->data[i] = keep + h;
        double up = forward_loss(m, b, s);
        t->data[i] = keep - h;
        double down = forward_loss(m, b, s);
        t->data[i] = keep;
        g[i] = (up - down) / (2 * h);
    }
    return g;
}

typedef struct Expect {
    double lr_t; /* lr(t) of the param's group */
    double wd;
    bool adamw;
    double coef; /* clipping coefficient */
} Expect;

static void check_close(double got, double want, double tol, const char *what, int64_t i) {
    if (!(fabs(got - want) <= tol * (1 + fabs(want))))
        fail_msg("%s[%lld]: got %.12g, want %.12g", what, (long long)i, got, want);
}

/* Adam/AdamW on one param, written out; compares with train_step's @ outputs. */
static void check_adam(const Module *m, RefTensor *outs, RefStore *s, const char *name,
                       const double *g, const Expect *e) {
    const double b1 = 0.9, b2 = 0.99, eps = 1e-8, t = 4; /* step was 3 */
    char mn[128], vn[128], o[140];
    snprintf(mn, sizeof mn, "adam.m.%s", name);
    snprintf(vn, sizeof vn, "adam.v.%s", name);
    const RefTensor *p = ref_store_get(s, name);
    const double *m0 = data(s, mn), *v0 = data(s, vn);
    snprintf(o, sizeof o, "@%s", name);
    int ip = out_index(m, "train_step", o);
    snprintf(o, sizeof o, "@%s", mn);
    int im = out_index(m, "train_step", o);
    snprintf(o, sizeof o, "@%s", vn);
    int iv = out_index(m, "train_step", o);
    assert_true(ip >= 0 && im >= 0 && iv >= 0);
    for (int64_t i = 0; i < ref_tensor_numel(p); i++) {
        double w = p->data[i], gi = g[i] * e->coef;
        if (!e->adamw) gi += e->wd * w;
        else w *= 1 - e->lr_t * e->wd;
        double mi = b1 * m0[i] + (1 - b1) * gi, vi = b2 * v0[i] + (1 - b2) * gi * gi;
        double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
        double w_new = w - (e->lr_t / bc1) * mi / (sqrt(vi) / sqrt(bc2) + eps);
        check_close(outs[im].data[i], mi, 1e-7, mn, i);
        check_close(outs[iv].data[i], vi, 1e-7, vn, i);
        check_close(outs[ip].data[i], w_new, 1e-7, name, i);
    }
}

/* Runs one train_step and checks everything against the hand-computed step. Returns the
 * clipping coefficient used. lr_of(name) gives each param's expected lr(t) and decay. */
typedef void (*GroupOf)(const char *name, double *lr, double *wd);

static double check_train_step(const Variant *v, double clip, bool adamw, GroupOf group_of) {
    Module *m = build(v);
    RefStore s;
    fill_store(&s, m);
    Batch b;
    make_batch(&b);
    RefTensor *outs = run(m, "train_step", &b, &s);

    /* The loss is forward's (training-mode) loss before the update. */
    check_close(outs[out_index(m, "train_step", "loss")].data[0], forward_loss(m, &b, &s), 1e-12,
                "loss", 0);

    double *grads[N_TRAINABLE], sumsq = 0;
    for (int k = 0; k < N_TRAINABLE; k++) {
        grads[k] = fd_grad(m, &b, &s, TRAINABLE[k]);
        for (int64_t i = 0; i < ref_tensor_numel(ref_store_get(&s, TRAINABLE[k])); i++)
            sumsq += grads[k][i] * grads[k][i];
    }
    double norm = sqrt(sumsq);
    double coef = clip > 0 ? fmin(1.0, clip / (norm + 1e-6)) : 1.0;
    check_close(outs[out_index(m, "train_step", "grad_norm")].data[0], norm, 1e-6, "grad_norm", 0);
    for (int k = 0; k < N_TRAINABLE; k++) {
        Expect e = {.adamw = adamw, .coef = coef};
        group_of(TRAINABLE[k], &e.lr_t, &e.wd);
        check_adam(m, outs, &s, TRAINABLE[k], grads[k], &e);
        free(grads[k]);
    }
    /* The frozen bias is not updated and has no moments. */
    assert_int_equal(out_index(m, "train_step", "@fc1.bias"), -1);
    assert_null(module_find_param(m, "adam.m.fc1.bias"));
    /* The step counter. */
    assert_true(outs[out_index(m, "train_step", "@step")].data[0] == 4.0);
    assert_int_equal(module_find_param(m, "step")->kind, PARAM_STATE);

    free_outs(m, "train_step", outs);
    free_batch(&b);
    ref_store_free(&s);
    module_free(m);
    return coef;
}

static void plain_group(const char *name, double *lr, double *wd) {
    (void)name;
    *lr = 0.01;
    *wd = 0;
}

static const Variant ADAM = {"adam", "0", "{\"kind\": \"constant\"}", "", {NULL}};

static void test_adam_step_matches_hand_computed(void **state) {
    (void)state;
    double coef = check_train_step(&ADAM, 100.0, false, plain_group);
    assert_true(coef == 1.0); /* max_norm 100: no clipping */
}

static void test_clipping_engages_above_max_norm(void **state) {
    (void)state;
    Variant v = ADAM;
    v.defines[0] = "clip=0.05";
    double coef = check_train_step(&v, 0.05, false, plain_group);
    assert_true(coef < 0.5); /* the norm here is far above 0.05 */
}

/* Adam with weight decay; fc2 in a group of its own lr and decay. */
static void fc2_group(const char *name, double *lr, double *wd) {
    bool fc2 = strncmp(name, "fc2.", 4) == 0;
    *lr = fc2 ? 0.003 : 0.01;
    *wd = fc2 ? 0.5 : 0.1;
}

static void test_adam_weight_decay_and_groups(void **state) {
    (void)state;
    Variant v = {"adam", "0.1", "{\"kind\": \"constant\"}",
                 "{\"prefix\": \"fc2\", \"lr\": 0.003, \"weight_decay\": 0.5}", {NULL}};
    check_train_step(&v, 100.0, false, fc2_group);
}

static void test_adamw_decoupled_decay(void **state) {
    (void)state;
    Variant v = {"adamw", "0.1", "{\"kind\": \"constant\"}",
                 "{\"prefix\": \"fc2\", \"lr\": 0.003, \"weight_decay\": 0.5}", {NULL}};
    check_train_step(&v, 100.0, true, fc2_group);
}

/* warmup_cosine at t = 4 with warmup 10: lr = 0.01 * 0.4 (the cosine factor is still 1). */
static void warmup_group(const char *name, double *lr, double *wd) {
    (void)name;
    *lr = 0.01 * 0.4;
    *wd = 0;
}

static void test_schedule_inside_the_step(void **state) {
    (void)state;
    Variant v = {"adam", "0", "{\"kind\": \"warmup_cosine\", \"warmup\": 10, \"total\": 100}", "",
                 {NULL}};
    check_train_step(&v, 100.0, false, warmup_group);
}

/* warmup_cosine without warmup at t = 4 of 100, min_lr 0.001, and fc2 in a group of lr 0.003:
 * every lr is its base times f(t) = r + (1 - r)(1 + cos(pi t/100))/2 with r = min_lr / lr =
 * 0.1 (the group's minimum is 0.003 * 0.1, as docs/training.md says), though the rates are
 * now hparams the step reads and the cosine is written on the rates themselves. */
static double cosine_factor_at_4(void) {
    const double pi = 3.14159265358979323846, r = 0.001 / 0.01;
    return r + (1 - r) * (1 + cos(pi * 4 / 100)) / 2;
}

static void cosine_fc2_group(const char *name, double *lr, double *wd) {
    *lr = (strncmp(name, "fc2", 3) == 0 ? 0.003 : 0.01) * cosine_factor_at_4();
    *wd = 0;
}

static void test_cosine_with_a_group(void **state) {
    (void)state;
    Variant v = {"adam", "0",
                 "{\"kind\": \"warmup_cosine\", \"warmup\": 0, \"total\": 100, \"min_lr\": 0.001}",
                 "{\"prefix\": \"fc2\", \"lr\": 0.003}", {NULL}};
    check_train_step(&v, 100.0, false, cosine_fc2_group);
    /* The rates are hparams holding the model file's values; nothing else is. */
    Module *m = build(&v);
    static const char *const names[] = {"train.lr", "train.min_lr", "train.group0.lr"};
    static const char *const inits[] = {"const(0.01)", "const(0.001)", "const(0.003)"};
    int n_hparams = 0;
    for (int i = 0; i < m->n_params; i++) n_hparams += m->params[i]->kind == PARAM_HPARAM;
    assert_int_equal(n_hparams, 3);
    for (int i = 0; i < 3; i++) {
        const Param *p = module_find_param(m, names[i]);
        assert_non_null(p);
        assert_int_equal(p->kind, PARAM_HPARAM);
        assert_string_equal(p->init, inits[i]);
    }
    module_free(m);
}

/* train_grads then apply_grads (the data-parallel step, docs/distributed.md) equals
 * train_step, output for output, for every optimizer variant: apply_grads is built by the same
 * code from train_grads' `loss`, `grad.*` and `running.*` (this model's training-mode
 * batch_norm), and has train_step's outputs but the loss, in the same order. Exact: the
 * interpreter evaluates the same ops in the same order on the same values. */
static void check_split_step(const Variant *v) {
    Module *m = build(v);
    RefStore s;
    fill_store(&s, m);
    Batch b;
    make_batch(&b);
    RefTensor *ts = run(m, "train_step", &b, &s), *g = run(m, "train_grads", &b, &s);
    const Function *tg = module_find_function(m, "train_grads");
    const Function *ap = module_find_function(m, "apply_grads");
    const Function *st = module_find_function(m, "train_step");
    assert_non_null(ap);
    RefTensor *in = calloc((size_t)ap->n_inputs, sizeof *in); /* views of g's outputs */
    int n_running = 0;
    for (int j = 0; j < ap->n_inputs; j++) {
        int i = out_index(m, "train_grads", ap->inputs[j]->name);
        if (i < 0) fail_msg("apply_grads input %s is no output of train_grads", ap->inputs[j]->name);
        in[j] = g[i];
        n_running += strncmp(ap->inputs[j]->name, "running.", 8) == 0;
    }
    assert_int_equal(n_running, 2); /* bn.running_mean, bn.running_var */
    assert_int_equal(ap->n_inputs, tg->n_outputs);
    RefTensor *outs = calloc((size_t)ap->n_outputs, sizeof *outs);
    char err[512];
    if (ref_run(ap, in, ref_store_lookup, &s, outs, NULL, err, sizeof err) != 0)
        fail_msg("@apply_grads: %s", err);
    assert_int_equal(ap->n_outputs, st->n_outputs - 1);
    for (int i = 0; i < ap->n_outputs; i++) {
        assert_string_equal(ap->output_names[i], st->output_names[i + 1]);
        for (int64_t k = 0; k < ref_tensor_numel(&outs[i]); k++)
            if (outs[i].data[k] != ts[i + 1].data[k])
                fail_msg("%s[%lld]: apply_grads %.17g, train_step %.17g", ap->output_names[i],
                         (long long)k, outs[i].data[k], ts[i + 1].data[k]);
    }
    for (int i = 0; i < ap->n_outputs; i++) ref_tensor_free(&outs[i]);
    free(outs);
    free(in);
    free_outs(m, "train_step", ts);
    free_outs(m, "train_grads", g);
    free_batch(&b);
    ref_store_free(&s);
    module_free(m);
}

static void test_split_step_is_train_step(void **state) {
    (void)state;
    Variant clipped = ADAM;
    clipped.defines[0] = "clip=0.05";
    const Variant variants[] = {
        ADAM, clipped,
        {"adamw", "0.1", "{\"kind\": \"constant\"}",
         "{\"prefix\": \"fc2\", \"lr\": 0.003, \"weight_decay\": 0.5}", {NULL}},
        {"adam", "0", "{\"kind\": \"warmup_cosine\", \"warmup\": 2, \"total\": 100, \"min_lr\": 0.001}",
         "{\"prefix\": \"fc2\", \"lr\": 0.003}", {NULL}},
        {"adam", "0.1", "{\"kind\": \"warmup_step\", \"warmup\": 2, \"step_size\": 2, \"gamma\": 0.5}",
         "", {NULL}},
    };
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++) check_split_step(&variants[i]);
}

/* lr(t) of each schedule at several steps, from the `lr` output. */
static double lr_at(const Variant *v, double step) {
    Module *m = build(v);
    RefStore s;
    fill_store(&s, m);
    data(&s, "step")[0] = step;
    Batch b;
    make_batch(&b);
    RefTensor *outs = run(m, "train_step", &b, &s);
    double lr = outs[out_index(m, "train_step", "lr")].data[0];
    free_outs(m, "train_step", outs);
    free_batch(&b);
    ref_store_free(&s);
    module_free(m);
    return lr;
}

static void test_schedules(void **state) {
    (void)state;
    const double pi = 3.14159265358979323846, lr = 0.01, min_lr = 0.001;
    Variant cosine = {"adam", "0",
                      "{\"kind\": \"warmup_cosine\", \"warmup\": 10, \"total\": 110, \"min_lr\": 0.001}",
                      "", {NULL}};
    Variant stepped = {"adam", "0",
                       "{\"kind\": \"warmup_step\", \"warmup\": 5, \"step_size\": 10, \"gamma\": 0.5}",
                       "", {NULL}};
    double steps[] = {0, 4, 9, 10, 35, 60, 109, 200};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        double t = steps[i] + 1;
        double p = fmin(1, fmax(0, t - 10) / 100);
        double want = lr * fmin(1, t / 10) *
                      (min_lr / lr + (1 - min_lr / lr) * (1 + cos(pi * p)) / 2);
        check_close(lr_at(&cosine, steps[i]), want, 1e-12, "warmup_cosine lr", (int64_t)t);
        want = lr * fmin(1, t / 5) * pow(0.5, floor(fmax(0, t - 5) / 10));
        check_close(lr_at(&stepped, steps[i]), want, 1e-12, "warmup_step lr", (int64_t)t);
    }
    check_close(lr_at(&ADAM, 7), lr, 1e-15, "constant lr", 8);
}

/* ---- BatchNorm and eval_loss ------------------------------------------------------------ */

/* h = x W1^T + b1 for the batch, computed here. */
static void hidden(const RefStore *s, const Batch *b, double h[B][H]) {
    const double *w1 = data(s, "fc1.weight"), *b1 = data(s, "fc1.bias");
    for (int n = 0; n < B; n++)
        for (int j = 0; j < H; j++) {
            h[n][j] = b1[j];
            for (int i = 0; i < IN; i++) h[n][j] += b->in[0].data[n * IN + i] * w1[j * IN + i];
        }
}

static void test_batch_norm_running_stats_like_pytorch(void **state) {
    (void)state;
    Module *m = build(&ADAM);
    RefStore s;
    fill_store(&s, m);
    Batch b;
    make_batch(&b);
    RefTensor *outs = run(m, "train_step", &b, &s);
    double h[B][H];
    hidden(&s, &b, h);
    const double *rm = data(&s, "bn.running_mean"), *rv = data(&s, "bn.running_var");
    int im = out_index(m, "train_step", "@bn.running_mean");
    int iv = out_index(m, "train_step", "@bn.running_var");
    assert_true(im >= 0 && iv >= 0);
    for (int j = 0; j < H; j++) {
        double mean = 0, ss = 0;
        for (int n = 0; n < B; n++) mean += h[n][j] / B;
        for (int n = 0; n < B; n++) ss += (h[n][j] - mean) * (h[n][j] - mean);
        check_close(outs[im].data[j], 0.9 * rm[j] + 0.1 * mean, 1e-12, "running_mean", j);
        check_close(outs[iv].data[j], 0.9 * rv[j] + 0.1 * ss / (B - 1), 1e-12, "running_var", j);
    }
    free_outs(m, "train_step", outs);
    free_batch(&b);
    ref_store_free(&s);
    module_free(m);
}

static void test_eval_loss_uses_running_stats(void **state) {
    (void)state;
    Module *m = build(&ADAM);
    const Function *ev = module_find_function(m, "eval_loss");
    assert_non_null(ev);
    assert_int_equal(out_index(m, "eval_loss", "@bn.running_mean"), -1);
    RefStore s;
    fill_store(&s, m);
    Batch b;
    make_batch(&b);
    RefTensor *outs = run(m, "eval_loss", &b, &s);
    double h[B][H], loss = 0;
    hidden(&s, &b, h);
    const double *rm = data(&s, "bn.running_mean"), *rv = data(&s, "bn.running_var");
    const double *g = data(&s, "bn.weight"), *be = data(&s, "bn.bias");
    const double *w2 = data(&s, "fc2.weight"), *b2 = data(&s, "fc2.bias");
    for (int n = 0; n < B; n++) {
        double a[H], z[K], zmax = -INFINITY, sum = 0;
        for (int j = 0; j < H; j++)
            a[j] = fmax(0, (h[n][j] - rm[j]) / sqrt(rv[j] + 1e-5) * g[j] + be[j]);
        for (int k = 0; k < K; k++) {
            z[k] = b2[k];
            for (int j = 0; j < H; j++) z[k] += a[j] * w2[k * H + j];
            zmax = fmax(zmax, z[k]);
        }
        for (int k = 0; k < K; k++) sum += exp(z[k] - zmax);
        loss += (zmax + log(sum) - z[(int)b.in[1].data[n]]) / B;
    }
    check_close(outs[out_index(m, "eval_loss", "loss")].data[0], loss, 1e-12, "eval loss", 0);
    free_outs(m, "eval_loss", outs);
    free_batch(&b);
    ref_store_free(&s);
    module_free(m);
}

/* ---- text form, errors, the captioner ----------------------------------------------------- */

static void test_printed_program_parses_back(void **state) {
    (void)state;
    Module *m = build(&ADAM);
    char *text = ir_module_to_string(m);
    Diag d;
    Module *again = ir_parse(text, "printed", &d);
    if (!again) fail_msg("%s", d.msg);
    char *text2 = ir_module_to_string(again);
    assert_string_equal(text, text2);
    assert_non_null(strstr(text, "\nstate @adam.m.fc1.weight : f32[5,3] init=\"zeros\"\n"));
    assert_non_null(strstr(text, "\nstate @step : f32[] init=\"zeros\"\n"));
    /* every state output is guarded by the finiteness of the loss and the gradient norm */
    assert_non_null(strstr(text, "@step=%step.next"));
    assert_non_null(strstr(text, "%step.next = where(%step_is_finite, %step.new, "));
    assert_non_null(strstr(text, "@fc1.weight=%fc1.weight.next"));
    /* Running the pass again changes nothing. */
    assert_int_equal(pass_build_training_program(again, NULL, &d), 0);
    char *text3 = ir_module_to_string(again);
    assert_string_equal(text, text3);
    free(text);
    free(text2);
    free(text3);
    module_free(again);
    module_free(m);
}

static void expect_error(const char *train, const char *want) {
    char text[4096];
    snprintf(text, sizeof text,
             "{\"model\": \"m\", \"config\": {\"lr\": 0.1},\n"
             " \"inputs\": {\"x\": {\"dtype\": \"f32\", \"shape\": [2, 3]}},\n"
             " \"body\": [{\"param\": \"w\", \"shape\": [3], \"out\": \"w\"},\n"
             "          {\"op\": \"mul\", \"in\": [\"x\", \"w\"], \"out\": \"y\"},\n"
             "          {\"op\": \"sum\", \"in\": [\"y\"], \"attrs\": {\"axes\": [0, 1]}, \"out\": \"loss\"}],\n"
             " \"outputs\": {\"loss\": \"loss\"},\n"
             " \"train\": %s}\n",
             train);
    Diag d;
    Module *m = frontend_load_text(text, strlen(text), "m.json", NULL, 0, &d);
    if (!want) {
        if (!m) fail_msg("%s: unexpected error %s", train, d.msg);
        module_free(m);
        return;
    }
    if (m) fail_msg("%s: no error, want '%s'", train, want);
    if (!strstr(d.msg, want)) fail_msg("%s: got '%s', want '%s'", train, d.msg, want);
    assert_int_equal(d.loc.line, 7);
}

static void test_train_section_errors(void **state) {
    (void)state;
    expect_error("{\"loss\": \"loss\", \"lr\": \"lr * 2\"}", NULL);
    expect_error("{\"lr\": 0.1, \"momentum\": 0.9}", "unknown key 'momentum'");
    expect_error("{\"optimizer\": \"sgd\"}", "'optimizer' must be \"adam\" or \"adamw\"");
    expect_error("{\"loss\": \"logits\"}", "not one of the model's outputs");
    expect_error("{\"lr\": \"-lr\"}", "'lr' must be positive");
    expect_error("{\"betas\": [0.9]}", "list of two numbers");
    expect_error("{\"betas\": [0.9, 1.0]}", "must each lie in [0, 1)");
    expect_error("{\"schedule\": {\"kind\": \"linear\"}}", "schedule 'kind' must be");
    expect_error("{\"schedule\": {\"kind\": \"warmup_cosine\", \"warmup\": 10, \"total\": 10}}",
                 "'total' must be greater than 'warmup'");
    expect_error("{\"groups\": [{\"prefix\": \"v\"}]}", "group prefix 'v' matches no parameter");
    expect_error("{\"groups\": [{\"lr\": 0.1}]}", "missing key 'prefix'");
    expect_error("{\"lr\": \"nolr\"}", "nolr");
}

static void test_captioner_dump_has_train_step(void **state) {
    (void)state;
    char path[4096], dir[4096], ir[4200];
    snprintf(path, sizeof path, "%s/models/captioner_tiny.json", source_dir());
    snprintf(dir, sizeof dir, "/tmp/capc_test_train_program_%d", (int)getpid());
    Diag d;
    Module *m = frontend_load_file(path, NULL, 0, &d);
    if (!m) fail_msg("%s", d.msg);
    assert_non_null(m->train);
    assert_true(m->train->clip_grad_norm == 5.0 && m->train->lr == 1e-4);
    PipelineOptions opts = {.dump_dir = dir};
    if (pipeline_run(m, &opts, &d) != 0) fail_msg("pipeline: %s", d.msg);
    assert_non_null(module_find_function(m, "train_step"));
    assert_non_null(module_find_function(m, "eval_loss"));
    assert_non_null(module_find_param(m, "adam.m.backbone.layer4.0.conv1.weight"));
    assert_null(module_find_param(m, "adam.m.backbone.layer3.0.conv1.weight"));
    snprintf(ir, sizeof ir, "%s/02-training.ir", dir);
    char *text = read_text_file(ir);
    if (!text) fail_msg("no dump %s", ir);
    assert_non_null(strstr(text, "\nfunc @train_step("));
    Module *again = ir_parse(text, ir, &d);
    if (!again) fail_msg("%s", d.msg);
    module_free(again);
    free(text);
    remove_tree(dir);
    module_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adam_step_matches_hand_computed),
        cmocka_unit_test(test_clipping_engages_above_max_norm),
        cmocka_unit_test(test_adam_weight_decay_and_groups),
        cmocka_unit_test(test_cosine_with_a_group),
        cmocka_unit_test(test_adamw_decoupled_decay),
        cmocka_unit_test(test_schedule_inside_the_step),
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_split_step_is_train_step),
        cmocka_unit_test(test_batch_norm_running_stats_like_pytorch),
        cmocka_unit_test(test_eval_loss_uses_running_stats),
        cmocka_unit_test(test_printed_program_parses_back),
        cmocka_unit_test(test_train_section_errors),
        cmocka_unit_test(test_captioner_dump_has_train_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
