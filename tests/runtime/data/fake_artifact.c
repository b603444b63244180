/* fake_artifact.c — a hand-written cap.so for the runtime tests (tests/runtime/test_runtime.c),
 * standing in for what capc's packager emits. Model "fake_affine", config {"batch":2,"n":4}:
 *
 *   state 0 embed.weight  f32[1,4]  WEIGHT trainable  kaiming_uniform
 *   state 1 head.bias     f32[4]    WEIGHT trainable  linear_bias(4)
 *   state 2 stats.running f32[4]    BUFFER            ones
 *   state 3 stats.big     f32[64,32] BUFFER           normal(1,2)   (init statistics)
 *   state 4 step          i32[]     OPTIM
 *
 *   eval_loss(x f32[2,4]) -> loss f32[]:
 *       affine: y[b,j] = w[j] * x[b,j] + bias[j]   (arena)
 *       mean:   loss = sum(y) / 8
 *   train_step(x f32[2,4], rng i32[2]) -> loss, lr, grad_norm, @embed.weight, @head.bias,
 *                                         @stats.running, @step:
 *       affine, mean as above; then sgd: lr = 0.1 / (1 + 0.1 step); w -= lr * sum_b x / 8;
 *       bias -= lr * 2/8; running = 0.9 running + 0.1 mean_b x; step += 1;
 *       grad_norm = |grad| if rng[1] == step (before the update) else -1 (a check the tests
 *       read: the trainer must pass rng = (seed, step)).
 *
 * Built three times by CMake: as is, with -DFAKE_VERSION=99 (version mismatch) and with
 * -DFAKE_NO_SYMBOL (not a capc model).
 */
#include <math.h>
#include <stdint.h>

#include "cap_artifact.h"

#ifndef FAKE_VERSION
#define FAKE_VERSION CAP_ARTIFACT_VERSION
#endif

/* y [2,4] = w [1,4] * x [2,4] + b [4].  bufs: y, x, w, b */
static void k_affine(void *const *bufs) {
    float *y = bufs[0];
    const float *x = bufs[1], *w = bufs[2], *b = bufs[3];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) y[i * 4 + j] = w[j] * x[i * 4 + j] + b[j];
}

/* loss [] = sum(y [2,4]) / 8.  bufs: loss, y */
static void k_mean(void *const *bufs) {
    float *loss = bufs[0];
    const float *y = bufs[1];
    float s = 0;
    for (int i = 0; i < 8; i++) s += y[i];
    *loss = s / 8;
}

/* bufs: lr, grad_norm, w [1,4], b [4], running [4], step i32[], x [2,4], rng i32[2],
 * base lr [] (the train.lr hyperparameter, 0.1: state the runtime fills, never a file) */
static void k_sgd(void *const *bufs) {
    float *lr = bufs[0], *gn = bufs[1], *w = bufs[2], *b = bufs[3], *run = bufs[4];
    int32_t *step = bufs[5];
    const float *x = bufs[6];
    const int32_t *rng = bufs[7];
    const float base = *(const float *)bufs[8];
    float rate = base / (1.0f + base * (float)*step);
    float sq = 0;
    for (int j = 0; j < 4; j++) {
        float gw = (x[j] + x[4 + j]) / 8, gb = 2.0f / 8;
        sq += gw * gw + gb * gb;
        w[j] -= rate * gw;
        b[j] -= rate * gb;
        run[j] = 0.9f * run[j] + 0.1f * (x[j] + x[4 + j]) / 2;
    }
    *gn = rng[1] == *step ? sqrtf(sq) : -1.0f;
    *lr = rate;
    *step += 1;
}

static const CapStateInfo STATE[] = {
    {{"embed.weight", CAP_DT_F32, 2, {1, 4}, 4}, CAP_STATE_WEIGHT, 1, "kaiming_uniform"},
    {{"head.bias", CAP_DT_F32, 1, {4}, 4}, CAP_STATE_WEIGHT, 1, "linear_bias(4)"},
    {{"stats.running", CAP_DT_F32, 1, {4}, 4}, CAP_STATE_BUFFER, 0, "ones"},
    {{"stats.big", CAP_DT_F32, 2, {64, 32}, 2048}, CAP_STATE_BUFFER, 0, "normal(1,2)"},
    {{"step", CAP_DT_I32, 0, {0}, 1}, CAP_STATE_OPTIM, 0, "zeros"},
    {{"train.lr", CAP_DT_F32, 0, {0}, 1}, CAP_STATE_HPARAM, 0, "const(0.1)"},
};

static const CapKernel KERNELS[] = {
    {"k_affine", k_affine, 4, 1, 8, 0, "mul %y, add %y", 0},
    {"k_mean", k_mean, 2, 1, 1, 0, "reduce_sum %loss", 0},
    {"k_sgd", k_sgd, 9, 1, 1, 0, "adam (fake)", 0},
};

#define ARENA(off, n) {CAP_BUF_ARENA, 0, off, n}
#define STATE_(i, n) {CAP_BUF_STATE, i, 0, n}
#define IN(i, n) {CAP_BUF_INPUT, i, 0, n}
#define OUT(i, n) {CAP_BUF_OUTPUT, i, 0, n}

static const CapBufRef EVAL_AFFINE[] = {ARENA(0, 32), IN(0, 32), STATE_(0, 16), STATE_(1, 16)};
static const CapBufRef EVAL_MEAN[] = {OUT(0, 4), ARENA(0, 32)};
static const CapStep EVAL_STEPS[] = {{0, 4, EVAL_AFFINE}, {1, 2, EVAL_MEAN}};

static const CapBufRef TRAIN_AFFINE[] = {ARENA(64, 32), IN(0, 32), STATE_(0, 16), STATE_(1, 16)};
static const CapBufRef TRAIN_MEAN[] = {OUT(0, 4), ARENA(64, 32)};
static const CapBufRef TRAIN_SGD[] = {OUT(1, 4),     OUT(2, 4),     OUT(3, 16), OUT(4, 16),
                                      STATE_(2, 16), STATE_(4, 4),  IN(0, 32),  IN(1, 8),
                                      STATE_(5, 4)};
static const CapStep TRAIN_STEPS[] = {{0, 4, TRAIN_AFFINE}, {1, 2, TRAIN_MEAN},
                                      {2, 9, TRAIN_SGD}};

static const CapTensorInfo X_IN = {"x", CAP_DT_F32, 2, {2, 4}, 8};
static const CapTensorInfo LOSS_OUT = {"loss", CAP_DT_F32, 0, {0}, 1};
static const CapTensorInfo TRAIN_IN[] = {
    {"x", CAP_DT_F32, 2, {2, 4}, 8},
    {"rng", CAP_DT_I32, 1, {2}, 2},
};
static const CapTensorInfo TRAIN_OUT[] = {
    {"loss", CAP_DT_F32, 0, {0}, 1},
    {"lr", CAP_DT_F32, 0, {0}, 1},
    {"grad_norm", CAP_DT_F32, 0, {0}, 1},
    {"@embed.weight", CAP_DT_F32, 2, {1, 4}, 4},
    {"@head.bias", CAP_DT_F32, 1, {4}, 4},
};
static const int32_t EVAL_OUT_STATE[] = {-1};
static const int32_t TRAIN_OUT_STATE[] = {-1, -1, -1, 0, 1};

static const CapEntry ENTRIES[] = {
    {"eval_loss", 1, &X_IN, 1, &LOSS_OUT, EVAL_OUT_STATE, 32, 2, EVAL_STEPS},
    {"train_step", 2, TRAIN_IN, 5, TRAIN_OUT, TRAIN_OUT_STATE, 96, 3, TRAIN_STEPS},
};

#ifndef FAKE_NO_SYMBOL
const CapArtifact cap_artifact = {
    .version = FAKE_VERSION,
    .model_name = "fake_affine",
    .config_json = "{\"batch\":2,\"n\":4}",
    .capc_version = "0.1.0",
    .compile_flags = "-D batch=2",
    .n_state = 6,
    .state = STATE,
    .n_entries = 2,
    .entries = ENTRIES,
    .n_kernels = 3,
    .kernels = KERNELS,
    .vocab_size = 0,
};
#else
const void *const not_an_artifact[] = {STATE, KERNELS, ENTRIES};
#endif
