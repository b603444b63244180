/* test_fusion_numerics.c — fusion changes how the tiny captioner is computed, not what.
 *
 * models/captioner_tiny.json (batch 2, dropout 0.1 so that the dropout masks inside fused
 * groups are exercised too) is compiled twice with the capc binary: as it compiles by default
 * (fused: groups, attention kernels, BatchNorm folded into the frozen convolutions) and with
 * --no-fuse (one kernel per op, nothing folded). With the PyTorch golden weights and batch
 * (tests/golden) and the same rng, the two must agree:
 *   - eval_grads and train_grads: the loss within 1e-5 relative, and every gradient with
 *     |fused - unfused| <= 1e-5 * (max|unfused| over the tensor + |unfused|) (the scale: some
 *     gradient entries are zero, the same mixed form as the golden tests use with 1e-4);
 *   - one train_step: the loss, and then every state tensor after it (Adam's moments, BN
 *     running statistics, the step counter; the weights) within the same mixed 1e-5. A first
 *     Adam step moves each weight by lr * m / (sqrt(v) + eps) = lr * sign(g) for any gradient
 *     entry well above eps: where g is zero up to rounding its sign is noise, and the two
 *     programs may step the weight in opposite directions. So the weights are compared where
 *     the gradient (the first moment) is at least 1e-4 of its tensor's largest, and the
 *     moments, which are the gradients themselves, everywhere; the count of weight entries
 *     left out is printed.
 *   - attend (`cap attend`'s entry): its logits are eval_loss's, its cross-attention rows are
 *     distributions, and fused agrees with --no-fuse.
 * Each comparison prints its worst ratio to the bound (<= 1 passes). */
#include <math.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "cap.h"
#include "capc_compile.h"
#include "safetensors.h"

#define ERR 2048
#define TOL 1e-5

static char tmpdir[256], fused_so[512], unfused_so[512], why[1024];

static void ok(CapStatus st, const char *err) {
    if (st) fail_msg("%s", err);
}

/* Worst |a - b| / (TOL * (max|b| + |b|)) over the n elements where keep (if given) holds. */
static double ratio_where(const float *a, const float *b, int64_t n, const bool *keep) {
    double mx = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) {
        if (keep && !keep[i]) continue;
        double e = fabs((double)a[i] - b[i]);
        if (isnan(a[i]) != isnan(b[i])) return INFINITY;
        worst = fmax(worst, e / (TOL * (mx + fabs(b[i])) + 1e-30));
    }
    return worst;
}

static double ratio(const float *a, const float *b, int64_t n) { return ratio_where(a, b, n, NULL); }

typedef struct Run {
    CapModel *m;
    CapSession *s;
    CapBatch *b;
    void **outs;
    int n_outs;
} Run;

static void run_open(Run *r, const char *so, const char *entry) {
    char err[ERR], path[512];
    ok(cap_model_open(so, &r->m, err, sizeof err), err);
    ok(cap_session_new(r->m, CAP_BACKEND_CPU, &r->s, err, sizeof err), err);
    ok(cap_session_init(r->s, 0, err, sizeof err), err);
    snprintf(path, sizeof path, "%s/tests/golden/tiny_weights.safetensors", test_src_dir());
    ok(cap_load_weights(r->s, path, err, sizeof err), err);
    snprintf(path, sizeof path, "%s/tests/golden/tiny_batch.safetensors", test_src_dir());
    ok(cap_batch_open(r->m, entry, path, &r->b, err, sizeof err), err);
    const CapEntry *e = &cap_model_artifact(r->m)->entries[cap_model_find_entry(r->m, entry)];
    r->n_outs = e->n_outputs;
    r->outs = calloc((size_t)e->n_outputs, sizeof *r->outs);
    for (int i = 0; i < e->n_outputs; i++)
        r->outs[i] = e->output_state && e->output_state[i] >= 0
                         ? NULL
                         : malloc((size_t)e->outputs[i].numel * 4 + 4);
    ok(cap_session_run_batch(r->s, entry, r->b, 11, 3, r->outs, err, sizeof err), err);
}

static void run_close(Run *r) {
    for (int i = 0; i < r->n_outs; i++) free(r->outs[i]);
    free(r->outs);
    cap_batch_free(r->b);
    cap_session_free(r->s);
    cap_model_close(r->m);
}

static const CapEntry *entry_of(const Run *r, const char *entry) {
    return &cap_model_artifact(r->m)->entries[cap_model_find_entry(r->m, entry)];
}

static void compare_grads(const char *entry) {
    if (why[0]) fail_msg("capc could not compile the tiny captioner: %s", why);
    Run f = {0}, u = {0};
    run_open(&f, fused_so, entry);
    run_open(&u, unfused_so, entry);
    const CapEntry *e = entry_of(&u, entry);
    assert_int_equal(entry_of(&f, entry)->n_outputs, e->n_outputs);
    double lf = *(float *)f.outs[0], lu = *(float *)u.outs[0];
    double worst = 0;
    const char *worst_name = "";
    int n_grads = 0;
    for (int i = 1; i < e->n_outputs; i++) {
        double r = ratio(f.outs[i], u.outs[i], e->outputs[i].numel);
        if (r > worst) worst = r, worst_name = e->outputs[i].name;
        n_grads += strncmp(e->outputs[i].name, "grad.", 5) == 0;
    }
    /* train_grads also has the new running statistics of its 4 training-mode BatchNorms
     * (`running.*`, for apply_grads): compared as well, under the same bound */
    print_message("%s: loss fused %.9g, unfused %.9g (rel %.2e); %d gradients, %d other "
                  "outputs, worst ratio %.3g (%s) of the 1e-5 mixed bound\n", entry, lf, lu,
                  fabs(lf - lu) / fabs(lu), n_grads, e->n_outputs - 1 - n_grads, worst,
                  worst_name);
    assert_true(fabs(lf - lu) <= TOL * fabs(lu));
    assert_true(n_grads == 63);
    assert_true(e->n_outputs - 1 - n_grads == (strcmp(entry, "train_grads") == 0 ? 8 : 0));
    assert_true(worst <= 1.0);
    run_close(&f);
    run_close(&u);
}

static void test_eval_grads(void **unused) { compare_grads("eval_grads"); }
static void test_train_grads(void **unused) { compare_grads("train_grads"); }

/* One train_step, then every state tensor compared. */
static void test_train_step_state(void **unused) {
    if (why[0]) fail_msg("capc could not compile the tiny captioner: %s", why);
    Run f = {0}, u = {0};
    run_open(&f, fused_so, "train_step");
    run_open(&u, unfused_so, "train_step");
    double lf = *(float *)f.outs[0], lu = *(float *)u.outs[0];
    assert_true(fabs(lf - lu) <= TOL * fabs(lu));
    const CapArtifact *a = cap_model_artifact(u.m);
    double worst = 0;
    const char *worst_name = "";
    int n = 0;
    int64_t left_out = 0, weights = 0;
    char err[ERR];
    for (int i = 0; i < a->n_state; i++) {
        const CapStateInfo *si = &a->state[i];
        if (si->kind == CAP_STATE_DERIVED) continue; /* only the fused program has it */
        int j = cap_model_find_state(f.m, si->t.name);
        assert_true(j >= 0);
        float *x = malloc((size_t)si->t.numel * 4 + 4), *y = malloc((size_t)si->t.numel * 4 + 4);
        ok(cap_session_read_state(f.s, j, x, err, sizeof err), err);
        ok(cap_session_read_state(u.s, i, y, err, sizeof err), err);
        char moment[512];
        snprintf(moment, sizeof moment, "adam.m.%s", si->t.name);
        int mi = si->kind == CAP_STATE_WEIGHT ? cap_model_find_state(u.m, moment) : -1;
        bool *keep = NULL;
        if (mi >= 0) { /* a trained weight: where its gradient decides the step's sign */
            float *m = malloc((size_t)si->t.numel * 4 + 4);
            keep = malloc((size_t)si->t.numel + 1);
            ok(cap_session_read_state(u.s, mi, m, err, sizeof err), err);
            double mx = 0;
            for (int64_t k = 0; k < si->t.numel; k++) mx = fmax(mx, fabs(m[k]));
            for (int64_t k = 0; k < si->t.numel; k++) {
                keep[k] = fabs(m[k]) >= 1e-4 * mx;
                left_out += !keep[k];
            }
            weights += si->t.numel;
            free(m);
        }
        if (si->t.dtype == CAP_DT_I32) {
            assert_memory_equal(x, y, (size_t)si->t.numel * 4);
        } else {
            double r = ratio_where(x, y, si->t.numel, keep);
            if (r > worst) worst = r, worst_name = si->t.name;
        }
        n++;
        free(keep);
        free(x);
        free(y);
    }
    print_message("train_step: loss fused %.9g, unfused %.9g; %d state tensors after the step, "
                  "worst ratio %.3g (%s) of the 1e-5 mixed bound; %lld of %lld trained weight "
                  "entries left out (gradient below 1e-4 of its tensor's largest)\n", lf, lu, n,
                  worst, worst_name, (long long)left_out, (long long)weights);
    assert_true(worst <= 1.0);
    run_close(&f);
    run_close(&u);
}

/* attend(image, tokens) on model so with the golden weights: logits and cross_attn into
 * malloc'd buffers. */
static void run_attend(const char *so, const float *image, const int32_t *tokens, float **logits,
                       float **probs, int64_t *n_logits, int64_t *n_probs) {
    char err[ERR], path[512];
    CapModel *m;
    CapSession *s;
    ok(cap_model_open(so, &m, err, sizeof err), err);
    ok(cap_session_new(m, CAP_BACKEND_CPU, &s, err, sizeof err), err);
    snprintf(path, sizeof path, "%s/tests/golden/tiny_weights.safetensors", test_src_dir());
    ok(cap_load_weights(s, path, err, sizeof err), err);
    int ei = cap_model_find_entry(m, "attend");
    assert_true(ei >= 0);
    const CapEntry *e = &cap_model_artifact(m)->entries[ei];
    assert_string_equal(e->outputs[0].name, "logits");
    assert_string_equal(e->outputs[1].name, "cross_attn");
    *n_logits = e->outputs[0].numel;
    *n_probs = e->outputs[1].numel;
    *logits = malloc((size_t)*n_logits * 4);
    *probs = malloc((size_t)*n_probs * 4);
    const void *in[2] = {image, tokens};
    void *out[2] = {*logits, *probs};
    ok(cap_session_run(s, "attend", in, out, err, sizeof err), err);
    cap_session_free(s);
    cap_model_close(m);
}

/* `cap attend`'s entry on the golden weights, image and caption[:, :-1]: its logits are
 * eval_loss's (1e-5 mixed; both fused), every cross-attention row is a distribution (sums to
 * 1 within 1e-5), and fused (the returned attention left unfused, the rest fused) agrees with
 * --no-fuse (1e-5 mixed). */
static void test_attend(void **unused) {
    if (why[0]) fail_msg("capc could not compile the tiny captioner: %s", why);
    char err[ERR], path[512];
    StFile batch;
    snprintf(path, sizeof path, "%s/tests/golden/tiny_batch.safetensors", test_src_dir());
    if (st_read_file(path, &batch, err, sizeof err) != 0) fail_msg("%s", err);
    const StTensor *im = st_find(&batch, "image"), *cap = st_find(&batch, "caption");
    assert_non_null(im);
    assert_non_null(cap);
    int64_t rows = cap->shape[0], len = cap->shape[1];
    float *image = malloc(im->nbytes);
    int32_t *caption = malloc(cap->nbytes), *tokens = malloc((size_t)(rows * (len - 1)) * 4);
    memcpy(image, im->data, im->nbytes);
    memcpy(caption, cap->data, cap->nbytes);
    for (int64_t r = 0; r < rows; r++)
        memcpy(tokens + r * (len - 1), caption + r * len, (size_t)(len - 1) * 4);
    float *lf, *pf, *lu, *pu;
    int64_t nl, np, nl2, np2;
    run_attend(fused_so, image, tokens, &lf, &pf, &nl, &np);
    run_attend(unfused_so, image, tokens, &lu, &pu, &nl2, &np2);
    assert_true(nl == nl2 && np == np2);
    Run e = {0};
    run_open(&e, fused_so, "eval_loss");
    assert_string_equal(entry_of(&e, "eval_loss")->outputs[1].name, "logits");
    assert_int_equal(entry_of(&e, "eval_loss")->outputs[1].numel, nl);
    double vs_eval = ratio(lf, e.outs[1], nl), logits_fused = ratio(lf, lu, nl);
    double probs_fused = ratio(pf, pu, np), worst_sum = 0;
    int64_t cells = 16; /* G = 4 */
    for (int64_t k = 0; k < np / cells; k++) {
        double sum = 0;
        for (int64_t c = 0; c < cells; c++) sum += pf[k * cells + c];
        worst_sum = fmax(worst_sum, fabs(sum - 1));
    }
    print_message("attend: logits vs eval_loss %.3g, vs --no-fuse %.3g; cross_attn vs --no-fuse "
                  "%.3g (of the 1e-5 mixed bound); rows sum to 1 within %.2e\n", vs_eval,
                  logits_fused, probs_fused, worst_sum);
    assert_true(vs_eval <= 1.0 && logits_fused <= 1.0 && probs_fused <= 1.0);
    assert_true(worst_sum <= 1e-5);
    run_close(&e);
    free(lf), free(pf), free(lu), free(pu);
    free(image), free(caption), free(tokens);
    st_free(&batch);
}

static void compile_into(const char *sub, const char *flags, char *out, size_t size) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, sub);
    mkdir(dir, 0700);
    char w[1024];
    compile_with_capc(dir, "models/captioner_tiny.json", flags, out, size, w, sizeof w);
    if (w[0] && !why[0]) snprintf(why, sizeof why, "%s", w);
}

static int setup(void **unused) {
    if (make_temp_dir("capc_fusion", tmpdir, sizeof tmpdir) != 0) return -1;
    compile_into("fused", "-D batch=2 --target=cpu", fused_so, sizeof fused_so);
    compile_into("unfused", "-D batch=2 --target=cpu --no-fuse", unfused_so, sizeof unfused_so);
    return 0;
}

static int teardown(void **unused) {
    (void)unused;
    return remove_temp_dir(tmpdir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_grads),
        cmocka_unit_test(test_train_grads),
        cmocka_unit_test(test_train_step_state),
        cmocka_unit_test(test_attend),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
