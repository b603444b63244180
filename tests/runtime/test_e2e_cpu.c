/* test_e2e_cpu.c — capc-compiled cap.so files run through libcaprt on the cpu backend.
 *
 * The capc binary (CAPC_BIN) compiles, into a temporary directory:
 *   - tests/passes/data/small_model.json (an MLP: linear, batch_norm, relu, dropout, linear,
 *     cross_entropy): eval_loss after `cap init` must equal a float64 evaluation written
 *     here from the weights read back (relative 1e-5), and logits too;
 *   - models/captioner_tiny.json -D batch=2 -D dropout=0: against the PyTorch goldens
 *     (docs/golden.md): loss_eval and loss_train within 1e-5 relative; the trainable
 *     gradients, recovered exactly from Adam's first moment after one train_step
 *     (m = (1 - b1) * coef * g with coef = min(1, clip / (grad_norm + 1e-6))), within
 *     |a - b| <= 1e-4 * (max|b| over the tensor + |b|) (the scale: some gradient entries are
 *     zero by construction, docs/golden.md); BN running statistics after the step within the
 *     same mixed 1e-5; then 200 training steps on four fixed batch files drive the loss down,
 *     and 20 steps equal 10 + checkpoint + resume + 10 (loss sequence and checkpoint bytes);
 *     the eval_grads / train_grads entries (what `cap loss --grads` writes) give the loss and
 *     every gradient in both modes within the same bounds.
 * A model capc cannot compile fails its tests with capc's message.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cap.h"
#include "capc_compile.h"
#include "safetensors.h"

#define ERR 2048

static char tmpdir[256];
static char small_so[512], tiny_so[512];
static char small_why[1024], tiny_why[1024]; /* "" when compiled */

static const char *src_dir(void) { return test_src_dir(); }

/* Compiles model (relative to the source dir) with flags into this run's tmpdir. */
static void compile(const char *model, const char *flags, char *out, size_t out_size, char *why,
                    size_t why_size) {
    compile_with_capc(tmpdir, model, flags, out, out_size, why, why_size);
}

static CapModel *open_model(const char *path) {
    CapModel *m = NULL;
    char err[ERR];
    if (cap_model_open(path, &m, err, sizeof err)) fail_msg("%s", err);
    return m;
}

static CapSession *new_session(const CapModel *m) {
    CapSession *s = NULL;
    char err[ERR];
    if (cap_session_new(m, CAP_BACKEND_CPU, &s, err, sizeof err)) fail_msg("%s", err);
    return s;
}

static void ok(CapStatus st, const char *err) {
    if (st) fail_msg("%s", err);
}

static float *state_copy(const CapSession *s, const char *name) {
    const CapModel *m = cap_session_model(s);
    int i = cap_model_find_state(m, name);
    if (i < 0) fail_msg("no state '%s'", name);
    float *p = malloc(cap_tensor_bytes(&cap_model_artifact(m)->state[i].t));
    char err[ERR];
    ok(cap_session_read_state(s, i, p, err, sizeof err), err);
    return p;
}

/* A small deterministic generator for test data (xorshift; Box-Muller for normals). */
static uint64_t rng_state = 88172645463325252ull;
static double urand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float nrand(void) {
    return (float)(sqrt(-2 * log(1 - urand())) * cos(6.283185307179586 * urand()));
}

/* ---- small MLP: eval_loss against a float64 evaluation ------------------------------------ */

static void mlp_reference(const CapSession *s, const float *x, const int32_t *label,
                          double *loss, double *logits) {
    float *w1 = state_copy(s, "fc1.weight"), *b1 = state_copy(s, "fc1.bias");
    float *g = state_copy(s, "bn.weight"), *be = state_copy(s, "bn.bias");
    float *rm = state_copy(s, "bn.running_mean"), *rv = state_copy(s, "bn.running_var");
    float *w2 = state_copy(s, "fc2.weight"), *b2 = state_copy(s, "fc2.bias");
    double total = 0;
    for (int n = 0; n < 8; n++) {
        double h[64], mx = -INFINITY, se = 0;
        for (int j = 0; j < 64; j++) {
            double a = b1[j];
            for (int k = 0; k < 32; k++) a += (double)w1[j * 32 + k] * x[n * 32 + k];
            a = (a - rm[j]) / sqrt((double)rv[j] + 1e-5) * g[j] + be[j];
            h[j] = a > 0 ? a : 0;
        }
        for (int c = 0; c < 10; c++) {
            double a = b2[c];
            for (int j = 0; j < 64; j++) a += (double)w2[c * 64 + j] * h[j];
            logits[n * 10 + c] = a;
            mx = a > mx ? a : mx;
        }
        for (int c = 0; c < 10; c++) se += exp(logits[n * 10 + c] - mx);
        total += mx + log(se) - logits[n * 10 + label[n]];
    }
    *loss = total / 8;
    free(w1), free(b1), free(g), free(be), free(rm), free(rv), free(w2), free(b2);
}

static void test_small_mlp_eval(void **unused) {
    if (small_why[0]) fail_msg("capc could not compile the small model: %s", small_why);
    CapModel *m = open_model(small_so);
    CapSession *s = new_session(m);
    char err[ERR];
    ok(cap_session_init(s, 3, err, sizeof err), err);
    float x[256], logits[80], loss = 0;
    int32_t label[8], rng[2] = {0, 0};
    for (int i = 0; i < 256; i++) x[i] = nrand();
    for (int i = 0; i < 8; i++) label[i] = (int32_t)(urand() * 10);
    const void *in[] = {x, label, rng};
    void *out[] = {&loss, logits};
    ok(cap_session_run(s, "eval_loss", in, out, err, sizeof err), err);
    double ref, ref_logits[80];
    mlp_reference(s, x, label, &ref, ref_logits);
    print_message("small_mlp eval_loss: cap %.9g, float64 %.9g (rel %.2e)\n", loss, ref,
                  fabs(loss - ref) / fabs(ref));
    assert_true(fabs(loss - ref) <= 1e-5 * fabs(ref));
    for (int i = 0; i < 80; i++) assert_true(fabs(logits[i] - ref_logits[i]) <= 1e-5 * (1 + fabs(ref_logits[i])));
    cap_session_free(s);
    cap_model_close(m);
}

/* ---- tiny captioner: goldens ------------------------------------------------------------- */

static StFile expected;

static double expected_scalar(const char *name) {
    const StTensor *t = st_find(&expected, name);
    if (!t) fail_msg("tiny_expected has no '%s'", name);
    double v;
    st_to_f64(t, &v);
    return v;
}

static CapSession *tiny_with_golden_weights(CapModel **m, CapBatch **b, const char *entry) {
    char err[ERR], path[512];
    *m = open_model(tiny_so);
    CapSession *s = new_session(*m);
    ok(cap_session_init(s, 0, err, sizeof err), err);
    snprintf(path, sizeof path, "%s/tests/golden/tiny_weights.safetensors", src_dir());
    ok(cap_load_weights(s, path, err, sizeof err), err);
    snprintf(path, sizeof path, "%s/tests/golden/tiny_batch.safetensors", src_dir());
    ok(cap_batch_open(*m, entry, path, b, err, sizeof err), err);
    return s;
}

static void test_tiny_golden_eval(void **unused) {
    if (tiny_why[0]) fail_msg("capc could not compile the tiny captioner: %s", tiny_why);
    CapModel *m;
    CapBatch *b;
    CapSession *s = tiny_with_golden_weights(&m, &b, "eval_loss");
    double loss, want = expected_scalar("loss_eval");
    char err[ERR];
    ok(cap_session_loss(s, "eval_loss", b, 0, 0, &loss, err, sizeof err), err);
    print_message("tiny loss_eval: cap %.9g, PyTorch %.9g (rel %.2e)\n", loss, want,
                  fabs(loss - want) / want);
    assert_true(fabs(loss - want) <= 1e-5 * want);
    cap_batch_free(b);
    cap_session_free(s);
    cap_model_close(m);
}

/* Worst |a - b| / (1e-4 * (max|b| + |b|)) over a tensor: <= 1 passes. */
static double grad_ratio(const float *a, const double *b, int64_t n, double scale_factor,
                         double *max_abs_err) {
    double mx = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(a[i] * scale_factor - b[i]);
        *max_abs_err = fmax(*max_abs_err, e);
        worst = fmax(worst, e / (1e-4 * (mx + fabs(b[i])) + 1e-30));
    }
    return worst;
}

/* Gradients from adam.m after one update: m = (1 - b1) * coef * g. */
static void check_train_grads(const CapSession *s, double grad_norm) {
    const CapArtifact *a = cap_model_artifact(cap_session_model(s));
    double coef = fmin(1.0, 5.0 / (grad_norm + 1e-6)), worst = 0, max_err = 0;
    int n_checked = 0;
    const char *worst_name = "";
    for (int i = 0; i < a->n_state; i++) {
        const char *name = a->state[i].t.name;
        if (strncmp(name, "adam.m.", 7) != 0) continue;
        char key[512];
        snprintf(key, sizeof key, "grad_train.%s", name + 7);
        const StTensor *t = st_find(&expected, key);
        if (!t) fail_msg("no golden gradient %s", key);
        assert_int_equal(t->numel, a->state[i].t.numel);
        double *want = malloc((size_t)t->numel * sizeof *want);
        st_to_f64(t, want);
        float *m = state_copy(s, name);
        double r = grad_ratio(m, want, t->numel, 1.0 / (0.1 * coef), &max_err);
        if (r > worst) worst = r, worst_name = name + 7;
        n_checked++;
        free(want);
        free(m);
    }
    print_message("tiny grad_train: %d tensors, max |err| %.3g, worst ratio %.3g (%s) of the "
                  "1e-4 mixed bound\n", n_checked, max_err, worst, worst_name);
    assert_int_equal(n_checked, 63);
    assert_true(worst <= 1.0);
}

static void check_bn_stats(const CapSession *s) {
    static const char *bns[] = {"backbone.layer4.0.bn1", "backbone.layer4.0.bn2",
                                "backbone.layer4.0.downsample.1", "neck.bn"};
    static const char *stats[] = {"running_mean", "running_var"};
    double worst = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++) {
            char name[256], key[300];
            snprintf(name, sizeof name, "%s.%s", bns[i], stats[j]);
            snprintf(key, sizeof key, "bn_after_train.%s", name);
            const StTensor *t = st_find(&expected, key);
            assert_non_null(t);
            double *want = malloc((size_t)t->numel * sizeof *want);
            st_to_f64(t, want);
            float *got = state_copy(s, name);
            for (int64_t k = 0; k < t->numel; k++)
                worst = fmax(worst, fabs(got[k] - want[k]) / (1e-5 * (1 + fabs(want[k]))));
            free(want);
            free(got);
        }
    print_message("tiny bn_after_train: worst ratio %.3g of the 1e-5 mixed bound\n", worst);
    assert_true(worst <= 1.0);
}

static void test_tiny_golden_train(void **unused) {
    if (tiny_why[0]) fail_msg("capc could not compile the tiny captioner: %s", tiny_why);
    CapModel *m;
    CapBatch *b;
    CapSession *s = tiny_with_golden_weights(&m, &b, "train_step");
    const CapEntry *e = &cap_model_artifact(m)->entries[cap_model_find_entry(m, "train_step")];
    float scalars[3] = {0}; /* loss, lr, grad_norm: train_step's first three outputs */
    void **outs = calloc((size_t)e->n_outputs, sizeof *outs);
    for (int i = 0; i < e->n_outputs; i++)
        outs[i] = i < 3 ? (void *)&scalars[i] : NULL;
    assert_string_equal(e->outputs[0].name, "loss");
    assert_string_equal(e->outputs[2].name, "grad_norm");
    char err[ERR];
    ok(cap_session_run_batch(s, "train_step", b, 0, 0, outs, err, sizeof err), err);
    double want = expected_scalar("loss_train");
    print_message("tiny loss_train: cap %.9g, PyTorch %.9g (rel %.2e); grad_norm %.6g\n",
                  scalars[0], want, fabs(scalars[0] - want) / want, scalars[2]);
    assert_true(fabs(scalars[0] - want) <= 1e-5 * want);
    check_train_grads(s, scalars[2]);
    check_bn_stats(s);
    free(outs);
    cap_batch_free(b);
    cap_session_free(s);
    cap_model_close(m);
}

/* train_grads then apply_grads (the data-parallel step, docs/distributed.md) on the golden
 * batch makes train_step's update: two sessions from the same weights, one running
 * train_step, the other train_grads and apply_grads fed its outputs by name, end with every
 * state tensor (weights, Adam moments, step, the 4 BatchNorms' running statistics) within
 * 1e-6 of each other (the same ops, fused into different kernels) and the same lr and
 * grad_norm. */
static void test_split_step_is_train_step(void **unused) {
    if (tiny_why[0]) fail_msg("capc could not compile the tiny captioner: %s", tiny_why);
    char err[ERR];
    CapModel *m, *m2;
    CapBatch *b, *b2;
    CapSession *whole = tiny_with_golden_weights(&m, &b, "train_step");
    CapSession *split = tiny_with_golden_weights(&m2, &b2, "train_grads");
    const CapArtifact *a = cap_model_artifact(m);
    const CapEntry *ts = &a->entries[cap_model_find_entry(m, "train_step")];
    const CapEntry *g = &a->entries[cap_model_find_entry(m, "train_grads")];
    const CapEntry *ap = &a->entries[cap_model_find_entry(m, "apply_grads")];
    void **ts_out = calloc((size_t)ts->n_outputs, sizeof *ts_out);
    void **g_out = calloc((size_t)g->n_outputs, sizeof *g_out);
    void **ap_out = calloc((size_t)ap->n_outputs, sizeof *ap_out);
    const void **ap_in = calloc((size_t)ap->n_inputs, sizeof *ap_in);
    for (int i = 0; i < ts->n_outputs; i++) ts_out[i] = malloc(cap_tensor_bytes(&ts->outputs[i]) + 1);
    for (int i = 0; i < g->n_outputs; i++) g_out[i] = malloc(cap_tensor_bytes(&g->outputs[i]) + 1);
    for (int i = 0; i < ap->n_outputs; i++) ap_out[i] = malloc(cap_tensor_bytes(&ap->outputs[i]) + 1);
    ok(cap_session_run_batch(whole, "train_step", b, 0, 0, ts_out, err, sizeof err), err);
    ok(cap_session_run_batch(split, "train_grads", b2, 0, 0, g_out, err, sizeof err), err);
    int n_running = 0;
    for (int j = 0; j < ap->n_inputs; j++) {
        for (int i = 0; i < g->n_outputs && !ap_in[j]; i++)
            if (strcmp(g->outputs[i].name, ap->inputs[j].name) == 0) ap_in[j] = g_out[i];
        if (!ap_in[j]) fail_msg("apply_grads input %s is no train_grads output", ap->inputs[j].name);
        n_running += strncmp(ap->inputs[j].name, "running.", 8) == 0;
    }
    assert_int_equal(n_running, 8); /* layer4's 3 and the neck's training-mode BatchNorm: mean, var */
    ok(cap_session_run(split, "apply_grads", ap_in, ap_out, err, sizeof err), err);
    /* apply_grads' outputs are train_step's without the loss: lr, grad_norm, then state */
    assert_int_equal(ap->n_outputs, ts->n_outputs - 1);
    for (int i = 0; i < ap->n_outputs; i++)
        assert_string_equal(ap->outputs[i].name, ts->outputs[i + 1].name);
    assert_true(*(float *)ap_out[0] == *(float *)ts_out[1]);
    double gn = *(float *)ts_out[2];
    assert_true(fabs(*(float *)ap_out[1] - gn) <= 1e-6 * gn);
    double worst = 0;
    const char *worst_name = "";
    int64_t n_compared = 0;
    for (int k = 0; k < a->n_state; k++) {
        const CapTensorInfo *t = &a->state[k].t;
        if (t->dtype != CAP_DT_F32) continue;
        float *x = malloc(cap_tensor_bytes(t) + 1), *y = malloc(cap_tensor_bytes(t) + 1);
        ok(cap_session_read_state(whole, k, x, err, sizeof err), err);
        ok(cap_session_read_state(split, k, y, err, sizeof err), err);
        if (strcmp(t->name, "step") == 0) assert_true(y[0] == 1.0f); /* the split step ran */
        n_compared += t->numel;
        for (int64_t e = 0; e < t->numel; e++) {
            double d = fabs((double)x[e] - y[e]) / (1.0 + fabs((double)x[e]));
            if (!(d <= worst)) worst = d, worst_name = t->name;
        }
        free(x);
        free(y);
    }
    print_message("train_grads + apply_grads against train_step: %lld state values, worst "
                  "difference %.3g (%s), mixed\n", (long long)n_compared, worst, worst_name);
    assert_true(n_compared > 0 && worst <= 1e-6);
    for (int i = 0; i < ts->n_outputs; i++) free(ts_out[i]);
    for (int i = 0; i < g->n_outputs; i++) free(g_out[i]);
    for (int i = 0; i < ap->n_outputs; i++) free(ap_out[i]);
    free(ts_out);
    free(g_out);
    free(ap_out);
    free(ap_in);
    cap_batch_free(b);
    cap_batch_free(b2);
    cap_session_free(whole);
    cap_session_free(split);
    cap_model_close(m);
    cap_model_close(m2);
}

/* The eval_grads / train_grads entries (loss + grad.<param>, no update) against PyTorch's
 * loss and every gradient, in both modes: what `cap loss --grads` writes. */
static void check_grads_entry(const char *entry, const char *loss_key, const char *grad_prefix) {
    CapModel *m;
    CapBatch *b;
    CapSession *s = tiny_with_golden_weights(&m, &b, entry);
    int ei = cap_model_find_entry(m, entry);
    assert_true(ei >= 0);
    const CapEntry *e = &cap_model_artifact(m)->entries[ei];
    void **outs = calloc((size_t)e->n_outputs, sizeof *outs);
    for (int i = 0; i < e->n_outputs; i++) outs[i] = malloc((size_t)e->outputs[i].numel * 4);
    char err[ERR];
    ok(cap_session_run_batch(s, entry, b, 0, 0, outs, err, sizeof err), err);
    assert_string_equal(e->outputs[0].name, "loss");
    double loss = *(float *)outs[0], want = expected_scalar(loss_key);
    double worst = 0, max_err = 0;
    const char *worst_name = "";
    int n_checked = 0;
    for (int i = 1; i < e->n_outputs; i++) {
        const char *name = e->outputs[i].name;
        /* after the gradients, train_grads has the BatchNorms' new running statistics
         * (`running.*`, apply_grads' inputs), which PyTorch's gradients do not include */
        if (strncmp(name, "running.", 8) == 0) {
            for (int k = i; k < e->n_outputs; k++)
                assert_true(strncmp(e->outputs[k].name, "running.", 8) == 0);
            break;
        }
        assert_true(strncmp(name, "grad.", 5) == 0);
        char key[512];
        snprintf(key, sizeof key, "%s%s", grad_prefix, name + 5);
        const StTensor *t = st_find(&expected, key);
        if (!t) fail_msg("no golden gradient %s", key);
        assert_int_equal(t->numel, e->outputs[i].numel);
        double *g = malloc((size_t)t->numel * sizeof *g);
        st_to_f64(t, g);
        double r = grad_ratio(outs[i], g, t->numel, 1.0, &max_err);
        if (r > worst) worst = r, worst_name = name + 5;
        n_checked++;
        free(g);
    }
    print_message("tiny %s: loss cap %.9g, PyTorch %.9g (rel %.2e); %d gradients, max |err| "
                  "%.3g, worst ratio %.3g (%s) of the 1e-4 mixed bound\n",
                  entry, loss, want, fabs(loss - want) / want, n_checked, max_err, worst,
                  worst_name);
    assert_true(fabs(loss - want) <= 1e-5 * want);
    assert_int_equal(n_checked, 63);
    assert_true(worst <= 1.0);
    for (int i = 0; i < e->n_outputs; i++) free(outs[i]);
    free(outs);
    cap_batch_free(b);
    cap_session_free(s);
    cap_model_close(m);
}

static void test_tiny_golden_grads(void **unused) {
    if (tiny_why[0]) fail_msg("capc could not compile the tiny captioner: %s", tiny_why);
    check_grads_entry("eval_grads", "loss_eval", "grad_eval.");
    check_grads_entry("train_grads", "loss_train", "grad_train.");
}

/* ---- tiny captioner: training and resume -------------------------------------------------- */

#define N_BATCHES 4
static char batch_paths[N_BATCHES][512];

static void make_tiny_batches(void) {
    static float image[2 * 3 * 128 * 128];
    int32_t caption[2 * 16];
    rng_state = 20240607;
    for (int f = 0; f < N_BATCHES; f++) {
        for (size_t i = 0; i < sizeof image / sizeof image[0]; i++) image[i] = nrand();
        for (int r = 0; r < 2; r++) {
            int len = 6 + (int)(urand() * 9); /* tokens between <start> and <end> */
            for (int t = 0; t < 16; t++)
                caption[r * 16 + t] = t == 0 ? 1 : t <= len ? 3 + (int32_t)(urand() * 61)
                                                : t == len + 1 ? 2 : 0;
        }
        int64_t ishape[] = {2, 3, 128, 128}, cshape[] = {2, 16};
        StWriteTensor ts[] = {{"image", ST_F32, 4, ishape, image}, {"caption", ST_I32, 2, cshape, caption}};
        snprintf(batch_paths[f], sizeof batch_paths[f], "%s/batch%d.safetensors", tmpdir, f);
        char err[ERR];
        if (st_write_file(batch_paths[f], ts, 2, NULL, NULL, 0, err, sizeof err)) fail_msg("%s", err);
    }
}

typedef struct Losses {
    int n;
    double v[256];
} Losses;

static int record(void *user, int64_t step, double loss, double lr, double gn) {
    Losses *l = user;
    if (l->n < 256) l->v[l->n++] = loss;
    return 0;
}

static void train(const char *resume, int64_t steps, const char *out, Losses *l) {
    CapModel *m = open_model(tiny_so);
    CapSession *s = new_session(m);
    char err[ERR];
    CapTrainMeta meta = {0};
    ok(cap_session_init(s, 7, err, sizeof err), err);
    if (resume) ok(cap_load_checkpoint(s, resume, &meta, err, sizeof err), err);
    const char *paths[N_BATCHES];
    for (int i = 0; i < N_BATCHES; i++) paths[i] = batch_paths[i];
    CapTrainOptions o = {.batch_paths = paths, .n_batches = N_BATCHES, .steps = steps,
                         .seed = 7, .out_path = out, .on_step = record, .user = l};
    ok(cap_train(s, &o, &meta, err, sizeof err), err);
    cap_session_free(s);
    cap_model_close(m);
}

static double mean(const double *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    return s / n;
}

static void test_tiny_training(void **unused) {
    if (tiny_why[0]) fail_msg("capc could not compile the tiny captioner: %s", tiny_why);
    make_tiny_batches();
    char out[512];
    snprintf(out, sizeof out, "%s/train200.safetensors", tmpdir);
    Losses l = {0};
    train(NULL, 200, out, &l);
    assert_int_equal(l.n, 200);
    double first = mean(l.v, N_BATCHES), last = mean(l.v + 200 - N_BATCHES, N_BATCHES);
    print_message("tiny training: loss step 1 %.6g, step 200 %.6g; mean of the first %d %.6g, "
                  "of the last %d %.6g\n", l.v[0], l.v[199], N_BATCHES, first, N_BATCHES, last);
    assert_true(last < 0.75 * first);
}

static void test_tiny_resume(void **unused) {
    if (tiny_why[0]) fail_msg("capc could not compile the tiny captioner: %s", tiny_why);
    make_tiny_batches();
    char full[512], half[512], rest[512], err[ERR];
    snprintf(full, sizeof full, "%s/full.safetensors", tmpdir);
    snprintf(half, sizeof half, "%s/half.safetensors", tmpdir);
    snprintf(rest, sizeof rest, "%s/rest.safetensors", tmpdir);
    Losses a = {0}, b = {0};
    train(NULL, 20, full, &a);
    train(NULL, 10, half, &b);
    train(half, 20, rest, &b);
    assert_int_equal(b.n, 20);
    assert_memory_equal(a.v, b.v, 20 * sizeof(double));
    StFile fa, fb;
    ok(st_read_file(full, &fa, err, sizeof err) ? CAP_E_IO : CAP_OK, err);
    ok(st_read_file(rest, &fb, err, sizeof err) ? CAP_E_IO : CAP_OK, err);
    assert_int_equal(fa.size, fb.size);
    assert_memory_equal(fa.buf, fb.buf, fa.size);
    print_message("tiny resume: 20 steps == 10 + resume + 10 (losses and %zu checkpoint "
                  "bytes identical)\n", fa.size);
    st_free(&fa);
    st_free(&fb);
}

/* ---- non-finite steps and out-of-vocabulary ids (docs/training.md) ------------------------ */

/* A batch file like make_tiny_batches' first, with every image value NaN or one caption id
 * out of the vocabulary (70 >= 64 at [1,5]). */
static void make_bad_batch(const char *path, int nan_image, int oov) {
    static float image[2 * 3 * 128 * 128];
    int32_t caption[2 * 16];
    rng_state = 99;
    for (size_t i = 0; i < sizeof image / sizeof image[0]; i++) image[i] = nan_image ? NAN : nrand();
    for (int i = 0; i < 2 * 16; i++) caption[i] = i % 16 == 0 ? 1 : 3 + i % 7;
    if (oov) caption[16 + 5] = 70;
    int64_t ishape[] = {2, 3, 128, 128}, cshape[] = {2, 16};
    StWriteTensor ts[] = {{"image", ST_F32, 4, ishape, image}, {"caption", ST_I32, 2, cshape, caption}};
    char err[ERR];
    if (st_write_file(path, ts, 2, NULL, NULL, 0, err, sizeof err)) fail_msg("%s", err);
}

/* A session of m initialized with seed 7, as train() makes them. */
static CapSession *fresh_session(const CapModel *m) {
    char err[ERR];
    CapSession *s = new_session(m);
    ok(cap_session_init(s, 7, err, sizeof err), err);
    return s;
}

/* Every state tensor of two checkpoints, byte for byte (their metadata differs: position). */
static void expect_same_state(const char *a, const char *b) {
    StFile fa, fb;
    char err[ERR];
    ok(st_read_file(a, &fa, err, sizeof err) ? CAP_E_IO : CAP_OK, err);
    ok(st_read_file(b, &fb, err, sizeof err) ? CAP_E_IO : CAP_OK, err);
    assert_int_equal(fa.n, fb.n);
    for (int i = 0; i < fa.n; i++) {
        const StTensor *t = st_find(&fb, fa.tensors[i].name);
        if (!t) fail_msg("%s: no tensor %s", b, fa.tensors[i].name);
        assert_int_equal(t->nbytes, fa.tensors[i].nbytes);
        if (memcmp(t->data, fa.tensors[i].data, t->nbytes) != 0)
            fail_msg("tensor %s differs between %s and %s", t->name, a, b);
    }
    st_free(&fa);
    st_free(&fb);
}

/* A NaN image makes the loss NaN: train_step updates nothing (every state tensor equal
 * before and after); cap_train skips the batch, counts it and goes on, and its checkpoint
 * equals that of a run that never saw the batch. */
static void test_nonfinite_skip(void **unused) {
    if (tiny_why[0]) fail_msg("capc could not compile the tiny captioner: %s", tiny_why);
    make_tiny_batches();
    char bad[512], skipped[512], clean[512], err[ERR];
    snprintf(bad, sizeof bad, "%s/nan_image.safetensors", tmpdir);
    snprintf(skipped, sizeof skipped, "%s/skipped.safetensors", tmpdir);
    snprintf(clean, sizeof clean, "%s/clean.safetensors", tmpdir);
    make_bad_batch(bad, 1, 0);

    CapModel *m = open_model(tiny_so);
    CapSession *s = fresh_session(m);
    CapTrainMeta meta = {0};
    const char *one[] = {batch_paths[0]};
    CapTrainOptions warm = {.batch_paths = one, .n_batches = 1, .steps = 2, .seed = 7};
    ok(cap_train(s, &warm, &meta, err, sizeof err), err); /* Adam moments and step non-zero */
    const CapArtifact *a = cap_model_artifact(m);
    float **before = calloc((size_t)a->n_state, sizeof *before);
    for (int i = 0; i < a->n_state; i++) {
        before[i] = malloc(cap_tensor_bytes(&a->state[i].t) + 1);
        ok(cap_session_read_state(s, i, before[i], err, sizeof err), err);
    }
    CapBatch *b;
    ok(cap_batch_open(m, "train_step", bad, &b, err, sizeof err), err);
    const CapEntry *e = &a->entries[cap_model_find_entry(m, "train_step")];
    void **outs = calloc((size_t)e->n_outputs, sizeof *outs);
    for (int i = 0; i < e->n_outputs; i++) outs[i] = malloc(cap_tensor_bytes(&e->outputs[i]) + 1);
    for (int i = 0; i < e->n_outputs; i++)
        if (e->output_state[i] >= 0) {
            free(outs[i]);
            outs[i] = NULL;
        }
    ok(cap_session_run_batch(s, "train_step", b, 7, 2, outs, err, sizeof err), err);
    assert_true(isnan(*(float *)outs[0])); /* loss */
    for (int i = 0; i < a->n_state; i++) {
        float *after = malloc(cap_tensor_bytes(&a->state[i].t) + 1);
        ok(cap_session_read_state(s, i, after, err, sizeof err), err);
        if (memcmp(after, before[i], cap_tensor_bytes(&a->state[i].t)) != 0)
            fail_msg("state %s changed in a step with a NaN loss", a->state[i].t.name);
        free(after);
    }
    print_message("NaN batch: loss %g, all %d state tensors unchanged\n", *(float *)outs[0], a->n_state);
    for (int i = 0; i < e->n_outputs; i++) free(outs[i]);
    free(outs);
    cap_batch_free(b);
    for (int i = 0; i < a->n_state; i++) free(before[i]);
    free(before);
    cap_session_free(s);

    /* batches b0, NaN, b1, b2 with skip against b0, b1, b2: same state after 3 updates */
    const char *with_bad[] = {batch_paths[0], bad, batch_paths[1], batch_paths[2]};
    const char *without[] = {batch_paths[0], batch_paths[1], batch_paths[2]};
    Losses la = {0}, lb = {0};
    s = fresh_session(m);
    meta = (CapTrainMeta){0};
    CapTrainOptions o = {.batch_paths = with_bad, .n_batches = 4, .steps = 3, .seed = 7,
                         .out_path = skipped, .on_step = record, .user = &la,
                         .on_nonfinite = CAP_NONFINITE_SKIP};
    ok(cap_train(s, &o, &meta, err, sizeof err), err);
    assert_int_equal(meta.skipped, 1);
    assert_int_equal(meta.step, 3);
    cap_session_free(s);
    s = fresh_session(m);
    meta = (CapTrainMeta){0};
    o = (CapTrainOptions){.batch_paths = without, .n_batches = 3, .steps = 3, .seed = 7,
                          .out_path = clean, .on_step = record, .user = &lb};
    ok(cap_train(s, &o, &meta, err, sizeof err), err);
    cap_session_free(s);
    cap_model_close(m);
    assert_int_equal(la.n, 3);
    assert_memory_equal(la.v, lb.v, 3 * sizeof(double));
    expect_same_state(skipped, clean);
    print_message("skip: 4 batches with a NaN one = 3 clean batches (losses %.6g %.6g %.6g, "
                  "every checkpoint tensor identical)\n", la.v[0], la.v[1], la.v[2]);
}

/* The default stops at the NaN batch, names the input, and saves the last good state. */
static void test_nonfinite_stop(void **unused) {
    if (tiny_why[0]) fail_msg("capc could not compile the tiny captioner: %s", tiny_why);
    make_tiny_batches();
    char bad[512], out[512], err[ERR];
    snprintf(bad, sizeof bad, "%s/nan_image.safetensors", tmpdir);
    snprintf(out, sizeof out, "%s/stopped.safetensors", tmpdir);
    make_bad_batch(bad, 1, 0);
    CapModel *m = open_model(tiny_so);
    CapSession *s = fresh_session(m);
    CapTrainMeta meta = {0};
    const char *paths[] = {batch_paths[0], bad};
    CapTrainOptions o = {.batch_paths = paths, .n_batches = 2, .steps = 5, .seed = 7, .out_path = out};
    assert_int_equal(cap_train(s, &o, &meta, err, sizeof err), CAP_E_NONFINITE);
    print_message("stop: %s\n", err);
    assert_non_null(strstr(err, "nan_image.safetensors"));
    assert_non_null(strstr(err, "first non-finite: input 'image'[0,0,0,0] = nan"));
    assert_int_equal(meta.step, 1);
    CapTrainMeta saved = {0};
    ok(cap_load_checkpoint(s, out, &saved, err, sizeof err), err);
    assert_int_equal(saved.step, 1);
    cap_session_free(s);
    cap_model_close(m);
}

/* An id past the vocabulary is refused before any step, naming the file and position. */
static void test_out_of_vocabulary_refused(void **unused) {
    if (tiny_why[0]) fail_msg("capc could not compile the tiny captioner: %s", tiny_why);
    make_tiny_batches();
    char bad[512], out[512], err[ERR];
    snprintf(bad, sizeof bad, "%s/oov.safetensors", tmpdir);
    snprintf(out, sizeof out, "%s/oov_ckpt.safetensors", tmpdir);
    make_bad_batch(bad, 0, 1);
    CapModel *m = open_model(tiny_so);
    CapSession *s = fresh_session(m);
    CapTrainMeta meta = {0};
    Losses l = {0};
    const char *paths[] = {batch_paths[0], batch_paths[1], bad};
    CapTrainOptions o = {.batch_paths = paths, .n_batches = 3, .steps = 5, .seed = 7,
                         .out_path = out, .on_step = record, .user = &l};
    assert_int_equal(cap_train(s, &o, &meta, err, sizeof err), CAP_E_FORMAT);
    print_message("out of vocabulary: %s\n", err);
    assert_non_null(strstr(err, "oov.safetensors: caption[1,5] = 70 is outside the vocabulary [0, 64)"));
    assert_int_equal(l.n, 0); /* no step ran */
    assert_int_equal(access(out, F_OK), -1);
    cap_session_free(s);
    cap_model_close(m);
}

/* A checkpoint's f32 `step` tensor must be a whole, non-negative count equal to its
 * metadata's step: NaN, negative, fractional or different counts are refused. */
static void test_checkpoint_step_checked(void **unused) {
    if (tiny_why[0]) fail_msg("capc could not compile the tiny captioner: %s", tiny_why);
    make_tiny_batches();
    char ck[512], bad[512], err[ERR];
    snprintf(ck, sizeof ck, "%s/step_ck.safetensors", tmpdir);
    snprintf(bad, sizeof bad, "%s/step_bad.safetensors", tmpdir);
    Losses l = {0};
    train(NULL, 2, ck, &l);
    StFile f;
    ok(st_read_file(ck, &f, err, sizeof err) ? CAP_E_IO : CAP_OK, err);
    static const float steps[] = {NAN, -1.0f, 1.5f, 1e9f};
    CapModel *m = open_model(tiny_so);
    for (size_t v = 0; v < sizeof steps / sizeof steps[0]; v++) {
        StWriteTensor *ts = calloc((size_t)f.n, sizeof *ts);
        for (int i = 0; i < f.n; i++) {
            const StTensor *t = &f.tensors[i];
            ts[i] = (StWriteTensor){t->name, t->dtype, t->rank, t->shape, t->data};
            if (strcmp(t->name, "step") == 0) ts[i].data = &steps[v];
        }
        ok(st_write_file(bad, ts, f.n, (const char *const *)f.meta_keys,
                         (const char *const *)f.meta_values, f.n_meta, err, sizeof err) ? CAP_E_IO : CAP_OK, err);
        free(ts);
        CapSession *s = new_session(m);
        CapTrainMeta meta;
        assert_int_equal(cap_load_checkpoint(s, bad, &meta, err, sizeof err), CAP_E_FORMAT);
        assert_non_null(strstr(err, "but the metadata says step 2: the checkpoint is damaged"));
        cap_session_free(s);
    }
    print_message("step tensor NaN, -1, 1.5, 1e9 against metadata step 2: all refused\n");
    cap_model_close(m);
    st_free(&f);
}

/* The tiny captioner with Mish written in C (models/acts.c, -D act=2) in place of its ReLUs
 * trains on the CPU: the loss over the last batches is well below the first ones'. */
static void test_custom_activation_trains(void **unused) {
    char dir[600], so[1024], why[1024], out[512], err[ERR];
    snprintf(dir, sizeof dir, "%s/mish", tmpdir); /* its own dir: the .so is named after the model */
    assert_int_equal(mkdir(dir, 0755), 0);
    compile_with_capc(dir, "models/captioner_tiny.json", "-D batch=2 -D dropout=0 -D act=2", so,
                      sizeof so, why, sizeof why);
    if (why[0]) fail_msg("capc could not compile the tiny captioner with -D act=2: %s", why);
    make_tiny_batches();
    snprintf(out, sizeof out, "%s/mish.safetensors", tmpdir);
    CapModel *m = open_model(so);
    CapSession *s = new_session(m);
    ok(cap_session_init(s, 7, err, sizeof err), err);
    const char *paths[N_BATCHES];
    for (int i = 0; i < N_BATCHES; i++) paths[i] = batch_paths[i];
    Losses l = {0};
    CapTrainMeta meta = {0};
    CapTrainOptions o = {.batch_paths = paths, .n_batches = N_BATCHES, .steps = 100, .seed = 7,
                         .out_path = out, .on_step = record, .user = &l};
    ok(cap_train(s, &o, &meta, err, sizeof err), err);
    double first = mean(l.v, N_BATCHES), last = mean(l.v + 100 - N_BATCHES, N_BATCHES);
    print_message("Mish in C: loss, mean of the first %d steps %.6g, of the last %d %.6g\n",
                  N_BATCHES, first, N_BATCHES, last);
    assert_true(last < 0.75 * first);
    cap_session_free(s);
    cap_model_close(m);
}

static int setup(void **unused) {
    if (make_temp_dir("capc_e2e", tmpdir, sizeof tmpdir) != 0) return -1;
    compile("tests/passes/data/small_model.json", "", small_so, sizeof small_so, small_why,
            sizeof small_why);
    compile("models/captioner_tiny.json", "-D batch=2 -D dropout=0", tiny_so, sizeof tiny_so,
            tiny_why, sizeof tiny_why);
    if (small_why[0]) print_message("skipping small_model tests: %s", small_why);
    if (tiny_why[0]) print_message("skipping captioner_tiny tests: %s", tiny_why);
    char path[512], err[ERR];
    snprintf(path, sizeof path, "%s/tests/golden/tiny_expected.safetensors", src_dir());
    if (st_read_file(path, &expected, err, sizeof err)) {
        print_error("%s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **unused) {
    (void)unused;
    st_free(&expected);
    return remove_temp_dir(tmpdir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_mlp_eval),   cmocka_unit_test(test_tiny_golden_eval),
        cmocka_unit_test(test_tiny_golden_train), cmocka_unit_test(test_tiny_golden_grads),
        cmocka_unit_test(test_split_step_is_train_step),
        cmocka_unit_test(test_tiny_training),
        cmocka_unit_test(test_tiny_resume),
        cmocka_unit_test(test_nonfinite_skip),
        cmocka_unit_test(test_nonfinite_stop),
        cmocka_unit_test(test_out_of_vocabulary_refused),
        cmocka_unit_test(test_checkpoint_step_checked),
        cmocka_unit_test(test_custom_activation_trains),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
