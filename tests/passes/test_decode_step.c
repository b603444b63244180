/* test_decode_step.c — the sampling entry points of the tiny captioner (the model files'
 * "entries"; docs/training.md, "Sampling") against the training program, in the float64
 * reference interpreter with random weights:
 *
 *  - encode(image) once, then decode_step for positions 0..T-2 fed the caption's tokens, must
 *    give eval_loss's logits at every position (1e-9 relative), pads included: the caches
 *    carry everything the full-sequence decoder sees.
 *  - decode_step never reads cache entries past pos: the caches start as garbage, and changing
 *    every entry after pos (unmasking the key mask there too) changes no output bit.
 *  - the training-program pass leaves encode and decode_step as the frontend built them.
 *  - attend(image, caption[:, :-1]) gives eval_loss's logits, distributions over the image
 *    cells as its cross_attn, and row t of them depends on tokens 0..t only.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model_eval.h"
#include "ops.h"
#include "passes.h"

#define REL_TOL 1e-9

static const char *const TINY_DEFINES[] = {"batch=2"};

static void init_like(RefTensor *t, const Value *v) {
    assert_int_equal(ref_tensor_init(t, v->dtype, v->shape), 0);
}

static void copy_tensor(RefTensor *dst, const RefTensor *src) {
    assert_int_equal(ref_tensor_init(dst, src->dtype, src->shape), 0);
    memcpy(dst->data, src->data, (size_t)ref_tensor_numel(src) * sizeof *dst->data);
}

static int input_index(const Function *f, const char *name) {
    for (int i = 0; i < f->n_inputs; i++)
        if (strcmp(f->inputs[i]->name, name) == 0) return i;
    fail_msg("%s has no input '%s'", f->name, name);
    return -1;
}

/* eval_loss's inputs: image ~ U(-sqrt3, sqrt3), caption <start>=1 w... <end>=2 then pads (row 0
 * full length, row 1 half), rng (0, 0). */
static void random_batch(const Function *f, RefTensor *inputs, TestRng *rng) {
    for (int i = 0; i < f->n_inputs; i++) {
        const Value *v = f->inputs[i];
        RefTensor *t = &inputs[i];
        init_like(t, v);
        int64_t n = ref_tensor_numel(t);
        if (strcmp(v->name, "image") == 0) {
            for (int64_t k = 0; k < n; k++) t->data[k] = sqrt(3.0) * (2 * rng_uniform(rng) - 1);
        } else if (strcmp(v->name, "caption") == 0) {
            int64_t rows = v->shape.dims[0], len = v->shape.dims[1];
            for (int64_t r = 0; r < rows; r++) {
                int64_t words = r == 0 ? len - 2 : (len - 2) / 2;
                double *row = t->data + r * len;
                row[0] = 1;
                for (int64_t k = 1; k <= words; k++) row[k] = (double)(3 + rng_below(rng, 61));
                row[words + 1] = 2;
            }
        }
    }
}

typedef struct Fixture {
    Module *m;
    RefStore params;
    const Function *eval, *encode, *step;
    RefTensor *batch;   /* eval_loss's inputs */
    RefTensor *logits;  /* eval_loss's outputs */
    RefTensor *encoded; /* encode's outputs */
} Fixture;

static void fixture_open(Fixture *fx) {
    memset(fx, 0, sizeof *fx);
    fx->m = load_model("models/captioner_tiny.json", TINY_DEFINES, 1);
    Function *encode = module_find_function(fx->m, "encode");
    Function *step = module_find_function(fx->m, "decode_step");
    assert_non_null(encode);
    assert_non_null(step);
    int encode_ops = encode->n_ops, step_ops = step->n_ops;
    Diag d;
    if (pass_build_training_program(fx->m, NULL, &d) != 0) fail_msg("training program: %s", d.msg);
    /* The pass derives from forward only and leaves the entries alone. */
    assert_ptr_equal(module_find_function(fx->m, "encode"), encode);
    assert_int_equal(encode->n_ops, encode_ops);
    assert_int_equal(step->n_ops, step_ops);
    fx->eval = module_find_function(fx->m, "eval_loss");
    assert_non_null(fx->eval);
    fx->encode = encode;
    fx->step = step;

    TestRng rng = {20240611};
    ref_store_init(&fx->params);
    random_params(fx->m, &fx->params, &rng);
    fx->batch = calloc((size_t)fx->eval->n_inputs, sizeof *fx->batch);
    assert_non_null(fx->batch);
    random_batch(fx->eval, fx->batch, &rng);
    fx->logits = run_function(fx->eval, fx->batch, &fx->params);
    RefTensor image;
    copy_tensor(&image, &fx->batch[input_index(fx->eval, "image")]);
    assert_int_equal(encode->n_inputs, 1);
    fx->encoded = run_function(encode, &image, &fx->params);
    ref_tensor_free(&image);
}

static void fixture_close(Fixture *fx) {
    free_outputs(fx->encode, fx->encoded);
    free_outputs(fx->eval, fx->logits);
    for (int i = 0; i < fx->eval->n_inputs; i++) ref_tensor_free(&fx->batch[i]);
    free(fx->batch);
    ref_store_free(&fx->params);
    module_free(fx->m);
}

/* decode_step's inputs for position 0: cross K/V from encode, caches full of garbage (finite,
 * large), token and pos filled per step by the caller. */
static RefTensor *first_step_inputs(const Fixture *fx, TestRng *rng) {
    const Function *f = fx->step;
    RefTensor *in = calloc((size_t)f->n_inputs, sizeof *in);
    assert_non_null(in);
    for (int i = 0; i < f->n_inputs; i++) {
        const Value *v = f->inputs[i];
        int from_encode = output_index(fx->encode, v->name);
        if (from_encode >= 0) {
            copy_tensor(&in[i], &fx->encoded[from_encode]);
            continue;
        }
        init_like(&in[i], v);
        if (v->dtype == DT_F32)
            for (int64_t k = 0; k < ref_tensor_numel(&in[i]); k++) in[i].data[k] = 100 * (2 * rng_uniform(rng) - 1);
    }
    return in;
}

static void free_inputs(const Function *f, RefTensor *in) {
    for (int i = 0; i < f->n_inputs; i++) ref_tensor_free(&in[i]);
    free(in);
}

/* Sets token = caption[:, pos] and pos. */
static void set_position(const Fixture *fx, RefTensor *in, int64_t pos) {
    const RefTensor *caption = &fx->batch[input_index(fx->eval, "caption")];
    int64_t rows = caption->shape.dims[0], len = caption->shape.dims[1];
    RefTensor *token = &in[input_index(fx->step, "token")];
    for (int64_t r = 0; r < rows; r++) token->data[r] = caption->data[r * len + pos];
    in[input_index(fx->step, "pos")].data[0] = (double)pos;
}

/* The step's outputs named like an input (the caches) become the next step's inputs. */
static void feed_back(const Function *f, RefTensor *in, RefTensor *out) {
    for (int o = 0; o < f->n_outputs; o++)
        for (int i = 0; i < f->n_inputs; i++)
            if (strcmp(f->output_names[o], f->inputs[i]->name) == 0) {
                ref_tensor_free(&in[i]);
                copy_tensor(&in[i], &out[o]);
            }
}

static void test_decode_steps_match_eval_loss(void **state) {
    (void)state;
    Fixture fx;
    fixture_open(&fx);
    const RefTensor *want = &fx.logits[output_index(fx.eval, "logits")]; /* [B, T-1, V] */
    int64_t rows = want->shape.dims[0], steps = want->shape.dims[1], vocab = want->shape.dims[2];
    TestRng rng = {7};
    RefTensor *in = first_step_inputs(&fx, &rng);
    int li = output_index(fx.step, "logits");
    assert_true(li >= 0);
    double worst = 0;
    for (int64_t pos = 0; pos < steps; pos++) {
        set_position(&fx, in, pos);
        RefTensor *out = run_function(fx.step, in, &fx.params);
        const RefTensor *got = &out[li];
        assert_int_equal(got->shape.rank, 2);
        double scale = 0, diff = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t v = 0; v < vocab; v++) {
                double a = got->data[r * vocab + v], b = want->data[(r * steps + pos) * vocab + v];
                scale = fmax(scale, fabs(b));
                diff = fmax(diff, fabs(a - b));
            }
        double rel = diff / scale;
        if (!(rel <= REL_TOL)) fail_msg("position %lld: logits differ by %.3g relative", (long long)pos, rel);
        worst = fmax(worst, rel);
        feed_back(fx.step, in, out);
        free_outputs(fx.step, out);
    }
    printf("decode_step vs eval_loss: %lld positions, worst relative difference %.3g\n",
           (long long)steps, worst);
    free_inputs(fx.step, in);
    fixture_close(&fx);
}

/* Overwrites every entry of the caches at positions > pos (axis `axis` of the named input);
 * the key mask gets 0 there (unmasked), so only position_mask keeps them out. */
static void scribble_after(const Function *f, RefTensor *in, const char *name, int axis, int64_t pos,
                           double value) {
    RefTensor *t = &in[input_index(f, name)];
    int64_t outer = 1, inner = 1, size = t->shape.dims[axis];
    for (int d = 0; d < axis; d++) outer *= t->shape.dims[d];
    for (int d = axis + 1; d < t->shape.rank; d++) inner *= t->shape.dims[d];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = pos + 1; j < size; j++)
            for (int64_t k = 0; k < inner; k++) t->data[(o * size + j) * inner + k] = value;
}

static void test_decode_step_ignores_later_positions(void **state) {
    (void)state;
    Fixture fx;
    fixture_open(&fx);
    TestRng rng = {11};
    RefTensor *in = first_step_inputs(&fx, &rng);
    const int64_t stop = 4; /* run positions 0..3, then compare pos 4 with scribbled caches */
    for (int64_t pos = 0; pos < stop; pos++) {
        set_position(&fx, in, pos);
        RefTensor *out = run_function(fx.step, in, &fx.params);
        feed_back(fx.step, in, out);
        free_outputs(fx.step, out);
    }
    set_position(&fx, in, stop);
    RefTensor *base = run_function(fx.step, in, &fx.params);
    scribble_after(fx.step, in, "self_k", 3, stop, 1e6);
    scribble_after(fx.step, in, "self_v", 3, stop, -1e6);
    scribble_after(fx.step, in, "key_mask", 1, stop, 0);
    RefTensor *changed = run_function(fx.step, in, &fx.params);
    int li = output_index(fx.step, "logits");
    for (int64_t k = 0; k < ref_tensor_numel(&base[li]); k++)
        if (base[li].data[k] != changed[li].data[k])
            fail_msg("logit %lld changed (%.17g -> %.17g) when cache entries after pos changed",
                     (long long)k, base[li].data[k], changed[li].data[k]);
    free_outputs(fx.step, changed);
    free_outputs(fx.step, base);
    free_inputs(fx.step, in);
    fixture_close(&fx);
}

/* attend's inputs: the image and caption[:, :-1] (the decoder's input row). */
static RefTensor *attend_inputs(const Fixture *fx, const Function *attend) {
    const RefTensor *caption = &fx->batch[input_index(fx->eval, "caption")];
    int64_t rows = caption->shape.dims[0], len = caption->shape.dims[1];
    RefTensor *in = calloc((size_t)attend->n_inputs, sizeof *in);
    assert_non_null(in);
    copy_tensor(&in[input_index(attend, "image")], &fx->batch[input_index(fx->eval, "image")]);
    RefTensor *tokens = &in[input_index(attend, "tokens")];
    init_like(tokens, attend->inputs[input_index(attend, "tokens")]);
    assert_int_equal(tokens->shape.dims[1], len - 1);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t t = 0; t < len - 1; t++) tokens->data[r * (len - 1) + t] = caption->data[r * len + t];
    return in;
}

/* attend (the teacher-forced decoder returning the last layer's cross-attention, for `cap
 * attend`) computes eval_loss's logits; its probabilities are distributions over the image
 * cells, and row t depends on tokens 0..t only (<start> is token 0: row t is the step that
 * chose token t+1, the caption's word t counted from 0): changing every later token changes
 * no bit of rows <= t. */
static void test_attend_matches_eval_loss(void **state) {
    (void)state;
    Fixture fx;
    fixture_open(&fx);
    const Function *attend = module_find_function(fx.m, "attend");
    assert_non_null(attend);
    RefTensor *in = attend_inputs(&fx, attend);
    RefTensor *out = run_function(attend, in, &fx.params);
    const RefTensor *want = &fx.logits[output_index(fx.eval, "logits")];
    const RefTensor *got = &out[output_index(attend, "logits")];
    assert_int_equal(ref_tensor_numel(got), ref_tensor_numel(want));
    double scale = 0, diff = 0;
    for (int64_t k = 0; k < ref_tensor_numel(want); k++) {
        scale = fmax(scale, fabs(want->data[k]));
        diff = fmax(diff, fabs(got->data[k] - want->data[k]));
    }
    if (!(diff <= REL_TOL * scale)) fail_msg("attend's logits differ by %.3g relative", diff / scale);
    const RefTensor *p = &out[output_index(attend, "cross_attn")]; /* [B, h, T-1, N] */
    assert_int_equal(p->shape.rank, 4);
    int64_t rows = p->shape.dims[0] * p->shape.dims[1], steps = p->shape.dims[2], cells = p->shape.dims[3];
    for (int64_t r = 0; r < rows * steps; r++) {
        double sum = 0;
        for (int64_t c = 0; c < cells; c++) {
            double x = p->data[r * cells + c];
            assert_true(x >= 0 && x <= 1);
            sum += x;
        }
        assert_true(fabs(sum - 1) < 1e-12);
    }
    const int64_t keep = 3; /* tokens 0..3 kept, the rest changed */
    RefTensor *tokens = &in[input_index(attend, "tokens")];
    for (int64_t b = 0; b < p->shape.dims[0]; b++)
        for (int64_t t = keep + 1; t < steps; t++) tokens->data[b * steps + t] = (double)(3 + (t % 7));
    RefTensor *changed = run_function(attend, in, &fx.params);
    const RefTensor *q = &changed[output_index(attend, "cross_attn")];
    int moved = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t t = 0; t < steps; t++)
            for (int64_t c = 0; c < cells; c++) {
                int64_t k = (r * steps + t) * cells + c;
                if (t <= keep && p->data[k] != q->data[k])
                    fail_msg("row %lld: position %lld changed with later tokens", (long long)r, (long long)t);
                moved += t > keep && p->data[k] != q->data[k];
            }
    assert_true(moved > 0);
    free_outputs(attend, changed);
    free_outputs(attend, out);
    free_inputs(attend, in);
    fixture_close(&fx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_steps_match_eval_loss),
        cmocka_unit_test(test_decode_step_ignores_later_positions),
        cmocka_unit_test(test_attend_matches_eval_loss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
