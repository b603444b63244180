/* test_runtime.c — libcaprt (runtime/core/cap.h) and the `cap` CLI against a hand-written cap.so
 * (tests/runtime/data/fake_artifact.c: two weights, two buffers, a step counter; eval_loss =
 * affine + mean, train_step = that + an SGD update).
 *
 * What it shows: loading and the artifact checks (version mismatch, no symbol, missing file);
 * init is deterministic per seed, differs across seeds, respects the initializers' bounds and
 * moments; entries compute what the kernels say; weights and checkpoints round-trip; bad
 * weights files are rejected with messages naming the tensor and both shapes (and PyTorch
 * extras are accepted: F64, num_batches_tracked, a tied copy); batch size mismatches say how
 * to recompile; training passes rng = (seed, step) and resumes bit for bit; cuda is refused
 * cleanly; the CLI commands work end to end.
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

#include "capc_compile.h"

#include "cap.h"
#include "safetensors.h"

#define ERR 2048

static char tmpdir[256];

static const char *fake_path(const char *var) {
    const char *p = getenv(var);
    if (!p || !*p) fail_msg("environment variable %s is not set (run through ctest)", var);
    return p;
}

static void tpath(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

static CapModel *open_fake(void) {
    CapModel *m = NULL;
    char err[ERR] = "";
    CapStatus st = cap_model_open(fake_path("FAKE_ARTIFACT"), &m, err, sizeof err);
    if (st) fail_msg("%s", err);
    return m;
}

static CapSession *new_session(const CapModel *m, uint32_t seed) {
    CapSession *s = NULL;
    char err[ERR] = "";
    if (cap_session_new(m, CAP_BACKEND_CPU, &s, err, sizeof err)) fail_msg("%s", err);
    if (cap_session_init(s, seed, err, sizeof err)) fail_msg("%s", err);
    return s;
}

static void read_state(const CapSession *s, const char *name, void *dst) {
    char err[ERR];
    int i = cap_model_find_state(cap_session_model(s), name);
    assert_true(i >= 0);
    assert_int_equal(cap_session_read_state(s, i, dst, err, sizeof err), CAP_OK);
}

static void write_state(CapSession *s, const char *name, const void *src) {
    char err[ERR];
    int i = cap_model_find_state(cap_session_model(s), name);
    assert_true(i >= 0);
    assert_int_equal(cap_session_write_state(s, i, src, err, sizeof err), CAP_OK);
}

/* Writes a safetensors file of (name, dtype, rank, shape, data) tensors. */
typedef struct T {
    const char *name;
    StDType dt;
    int rank;
    int64_t shape[4];
    const void *data;
} T;

static void write_file(const char *path, const T *ts, int n) {
    StWriteTensor w[16];
    for (int i = 0; i < n; i++) w[i] = (StWriteTensor){ts[i].name, ts[i].dt, ts[i].rank, ts[i].shape, ts[i].data};
    char err[ERR];
    if (st_write_file(path, w, n, NULL, NULL, 0, err, sizeof err)) fail_msg("%s", err);
}

static void expect_msg(const char *err, const char *a, const char *b, const char *c) {
    const char *want[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (want[i] && !strstr(err, want[i])) fail_msg("message \"%s\" lacks \"%s\"", err, want[i]);
}

/* ---- loading --------------------------------------------------------------------------- */

static void test_load_and_counts(void **unused) {
    CapModel *m = open_fake();
    const CapArtifact *a = cap_model_artifact(m);
    assert_string_equal(a->model_name, "fake_affine");
    CapCounts c;
    cap_model_counts(m, &c);
    assert_int_equal(c.params, 8);
    assert_int_equal(c.trainable, 8);
    assert_int_equal(c.n_buffers, 2);
    assert_int_equal(c.buffer_elems, 2052);
    assert_int_equal(c.n_optim, 1);
    assert_int_equal(c.n_hparams, 1);
    assert_int_equal(c.max_arena_bytes, 96);
    assert_int_equal(cap_model_find_entry(m, "train_step"), 1);
    assert_int_equal(cap_model_find_entry(m, "nope"), -1);
    int64_t v = 0;
    assert_int_equal(cap_model_config_int(m, "batch", &v), 0);
    assert_int_equal(v, 2);
    cap_model_close(m);
}

static void test_version_mismatch(void **unused) {
    CapModel *m = NULL;
    char err[ERR] = "";
    assert_int_equal(cap_model_open(fake_path("FAKE_ARTIFACT_V99"), &m, err, sizeof err),
                     CAP_E_VERSION);
    assert_null(m);
    expect_msg(err, "artifact version 99", "reads version 4", "recompile");
}

static void test_not_a_model(void **unused) {
    CapModel *m = NULL;
    char err[ERR] = "";
    assert_int_equal(cap_model_open(fake_path("FAKE_ARTIFACT_NOSYM"), &m, err, sizeof err),
                     CAP_E_FORMAT);
    expect_msg(err, "no symbol 'cap_artifact'", NULL, NULL);
    assert_int_equal(cap_model_open("/nonexistent/cap.so", &m, err, sizeof err), CAP_E_IO);
    expect_msg(err, "/nonexistent/cap.so", "cannot load", NULL);
}

static void test_cuda_refused(void **unused) {
    setenv("CAP_CUDA_DRIVER", "/nonexistent/libcuda.so.1", 1);
    CapModel *m = open_fake();
    CapSession *s = NULL;
    char err[ERR] = "";
    assert_int_equal(cap_session_new(m, CAP_BACKEND_CUDA, &s, err, sizeof err), CAP_E_BACKEND);
    expect_msg(err, "no usable CUDA driver", NULL, NULL);
    assert_int_equal(cap_session_new(m, CAP_BACKEND_AUTO, &s, err, sizeof err), CAP_OK);
    assert_string_equal(cap_session_backend_name(s), "cpu");
    expect_msg(cap_session_backend_note(s), "using cpu", "no usable CUDA driver", NULL);
    cap_session_free(s);
    cap_model_close(m);
    unsetenv("CAP_CUDA_DRIVER");
}

/* ---- init ------------------------------------------------------------------------------ */

static void test_init(void **unused) {
    CapModel *m = open_fake();
    CapSession *a = new_session(m, 7), *b = new_session(m, 7), *c = new_session(m, 8);
    float wa[4], wb[4], wc[4], ba[4], run[4];
    static float big[2048];
    read_state(a, "embed.weight", wa);
    read_state(b, "embed.weight", wb);
    read_state(c, "embed.weight", wc);
    assert_memory_equal(wa, wb, sizeof wa);
    assert_memory_not_equal(wa, wc, sizeof wa);
    read_state(a, "head.bias", ba);
    read_state(a, "stats.running", run);
    for (int j = 0; j < 4; j++) {
        assert_true(fabsf(wa[j]) <= 0.5f); /* kaiming_uniform, fan_in 4: 1/sqrt(4) */
        assert_true(fabsf(ba[j]) <= 0.5f); /* linear_bias(4) */
        assert_true(run[j] == 1.0f);
    }
    /* Init is keyed by (seed, state index), not by a stream shared between tensors. */
    assert_memory_not_equal(wa, ba, sizeof wa);
    read_state(a, "stats.big", big);
    double mean = 0, var = 0;
    for (int i = 0; i < 2048; i++) mean += big[i] / 2048.0;
    for (int i = 0; i < 2048; i++) var += (big[i] - mean) * (big[i] - mean) / 2047.0;
    assert_true(fabs(mean - 1.0) < 0.15);
    assert_true(fabs(sqrt(var) - 2.0) < 0.15);
    int32_t step = -1;
    read_state(a, "step", &step);
    assert_int_equal(step, 0);
    cap_session_free(a);
    cap_session_free(b);
    cap_session_free(c);
    cap_model_close(m);
}

/* ---- running --------------------------------------------------------------------------- */

static void test_run_eval(void **unused) {
    CapModel *m = open_fake();
    CapSession *s = new_session(m, 1);
    const float w[4] = {1, 2, 3, 4}, b[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    const float x[8] = {1, 1, 1, 1, 2, 2, 2, 2};
    write_state(s, "embed.weight", w);
    write_state(s, "head.bias", b);
    float loss = 0;
    const void *in[] = {x};
    void *out[] = {&loss};
    char err[ERR];
    assert_int_equal(cap_session_run(s, "eval_loss", in, out, err, sizeof err), CAP_OK);
    /* sum(w*x) = 10 + 20 = 30, sum(b) over 8 = 4: (30 + 4) / 8 */
    assert_true(loss == 34.0f / 8);
    assert_int_equal(cap_session_run(s, "nope", in, out, err, sizeof err), CAP_E_UNSUPPORTED);
    expect_msg(err, "no entry point 'nope'", NULL, NULL);
    out[0] = NULL;
    assert_int_equal(cap_session_run(s, "eval_loss", in, out, err, sizeof err), CAP_E_ARG);
    expect_msg(err, "output 'loss' is NULL", NULL, NULL);
    cap_session_free(s);
    cap_model_close(m);
}

/* ---- weights files --------------------------------------------------------------------- */

static void assert_same_state(const CapSession *a, const CapSession *b, const char *name,
                              size_t bytes) {
    static char x[8192], y[8192];
    read_state(a, name, x);
    read_state(b, name, y);
    assert_memory_equal(x, y, bytes);
}

static void test_weights_round_trip(void **unused) {
    CapModel *m = open_fake();
    CapSession *a = new_session(m, 1), *b = new_session(m, 2);
    char path[512], err[ERR];
    tpath(path, sizeof path, "w.safetensors");
    assert_int_equal(cap_save_weights(a, path, err, sizeof err), CAP_OK);
    StFile f;
    assert_int_equal(st_read_file(path, &f, err, sizeof err), 0);
    assert_int_equal(f.n, 4); /* weights and buffers, not the optimizer's step */
    assert_null(st_find(&f, "step"));
    st_free(&f);
    assert_int_equal(cap_load_weights(b, path, err, sizeof err), CAP_OK);
    assert_same_state(a, b, "embed.weight", 16);
    assert_same_state(a, b, "head.bias", 16);
    assert_same_state(a, b, "stats.big", 8192);
    cap_session_free(a);
    cap_session_free(b);
    cap_model_close(m);
}

static const float W4[4] = {0.1f, 0.2f, 0.3f, 0.4f}, B4[4] = {1, 2, 3, 4}, R4[4] = {1, 1, 1, 1};
static float BIG[2048];

/* Loads a weights file made of the standard tensors with `swap` replacing (or, with a NULL
 * data, removing) the one of its name, plus `extra` (if any). On success head.bias must equal
 * expect_bias (NULL: B4); on failure no state may have changed. Returns the status. */
static CapStatus load_variant(const T *swap, const T *extra, const float *expect_bias, char *err,
                              size_t err_size) {
    T ts[6] = {
        {"embed.weight", ST_F32, 2, {1, 4}, W4},
        {"head.bias", ST_F32, 1, {4}, B4},
        {"stats.running", ST_F32, 1, {4}, R4},
        {"stats.big", ST_F32, 2, {64, 32}, BIG},
    };
    int n = 0;
    T out[6];
    for (int i = 0; i < 4; i++) {
        if (swap && strcmp(swap->name, ts[i].name) == 0) {
            if (swap->data) out[n++] = *swap;
        } else out[n++] = ts[i];
    }
    if (extra) out[n++] = *extra;
    char path[512];
    tpath(path, sizeof path, "variant.safetensors");
    write_file(path, out, n);
    CapModel *m = open_fake();
    CapSession *s = new_session(m, 3);
    float before[4], after[4];
    read_state(s, "head.bias", before);
    CapStatus st = cap_load_weights(s, path, err, err_size);
    read_state(s, "head.bias", after);
    if (st) assert_memory_equal(before, after, sizeof before); /* nothing changed */
    else assert_memory_equal(after, expect_bias ? expect_bias : B4, 16);
    cap_session_free(s);
    cap_model_close(m);
    return st;
}

static void test_bad_weights(void **unused) {
    char err[ERR] = "";
    assert_int_equal(load_variant(NULL, NULL, NULL, err, sizeof err), CAP_OK);

    T missing = {"head.bias", ST_F32, 1, {4}, NULL};
    assert_int_equal(load_variant(&missing, NULL, NULL, err, sizeof err), CAP_E_MISMATCH);
    expect_msg(err, "missing tensor 'head.bias'", "[4]", "variant.safetensors");

    static const float five[5] = {0};
    T shape = {"head.bias", ST_F32, 1, {5}, five};
    assert_int_equal(load_variant(&shape, NULL, NULL, err, sizeof err), CAP_E_MISMATCH);
    expect_msg(err, "'head.bias'", "shape [5] in the file", "the model expects [4]");

    static const int32_t ints[4] = {0};
    T dtype = {"head.bias", ST_I32, 1, {4}, ints};
    assert_int_equal(load_variant(&dtype, NULL, NULL, err, sizeof err), CAP_E_MISMATCH);
    expect_msg(err, "'head.bias' is I32", "F32", NULL);

    static const double d4[4] = {1.5, 2.5, 3.5, 4.5};
    static const float f4[4] = {1.5f, 2.5f, 3.5f, 4.5f};
    T f64 = {"head.bias", ST_F64, 1, {4}, d4};
    assert_int_equal(load_variant(&f64, NULL, f4, err, sizeof err), CAP_OK);

    static const int64_t nbt = 5;
    T counter = {"stats.num_batches_tracked", ST_I64, 0, {0}, &nbt};
    assert_int_equal(load_variant(NULL, &counter, NULL, err, sizeof err), CAP_OK);

    T unknown = {"other.thing", ST_F32, 1, {4}, W4};
    assert_int_equal(load_variant(NULL, &unknown, NULL, err, sizeof err), CAP_E_MISMATCH);
    expect_msg(err, "unexpected tensor 'other.thing'", NULL, NULL);

    T tied = {"head.weight", ST_F32, 2, {1, 4}, W4}; /* a copy of embed.weight: accepted */
    assert_int_equal(load_variant(NULL, &tied, NULL, err, sizeof err), CAP_OK);
    T untied = {"head.weight", ST_F32, 2, {1, 4}, B4};
    assert_int_equal(load_variant(NULL, &untied, NULL, err, sizeof err), CAP_E_MISMATCH);
    expect_msg(err, "'head.weight' is tied", "embed.weight differs", NULL);

    char path[512];
    tpath(path, sizeof path, "absent.safetensors");
    CapModel *m = open_fake();
    CapSession *s = new_session(m, 1);
    assert_int_equal(cap_load_weights(s, path, err, sizeof err), CAP_E_IO);
    expect_msg(err, "absent.safetensors", NULL, NULL);
    cap_session_free(s);
    cap_model_close(m);
}

/* ---- batches ---------------------------------------------------------------------------- */

static void make_batch(const char *name, float scale, int rows) {
    float x[12];
    for (int i = 0; i < 12; i++) x[i] = scale * (float)(i % 5 - 1);
    T t = {"x", ST_F32, 2, {rows, 4}, x};
    char path[512];
    tpath(path, sizeof path, name);
    write_file(path, &t, 1);
}

static void test_batch_mismatch(void **unused) {
    make_batch("b3.safetensors", 1, 3);
    char path[512], err[ERR] = "";
    tpath(path, sizeof path, "b3.safetensors");
    CapModel *m = open_fake();
    CapBatch *b = NULL;
    assert_int_equal(cap_batch_open(m, "eval_loss", path, &b, err, sizeof err), CAP_E_MISMATCH);
    expect_msg(err, "'x' has shape [3,4]", "compiled for [2,4]", "-D batch=3");
    expect_msg(err, "compiled with batch=2", NULL, NULL);
    make_batch("b2.safetensors", 1, 2);
    tpath(path, sizeof path, "b2.safetensors");
    assert_int_equal(cap_batch_open(m, "train_step", path, &b, err, sizeof err), CAP_OK);
    assert_int_equal(cap_batch_size(b), 2);
    cap_batch_free(b);
    cap_model_close(m);
}

/* ---- training and resume ---------------------------------------------------------------- */

typedef struct Seen {
    int n;
    double loss[64], gn[64];
} Seen;

static int record(void *user, int64_t step, double loss, double lr, double gn) {
    Seen *s = user;
    s->loss[s->n] = loss;
    s->gn[s->n++] = gn;
    return 0;
}

static void run_training(const CapModel *m, const char *resume, int64_t steps, const char *out,
                         Seen *seen) {
    char b1[512], b2[512], err[ERR];
    tpath(b1, sizeof b1, "t1.safetensors");
    tpath(b2, sizeof b2, "t2.safetensors");
    const char *paths[] = {b1, b2};
    CapSession *s = new_session(m, 11);
    CapTrainMeta meta = {0};
    if (resume) assert_int_equal(cap_load_checkpoint(s, resume, &meta, err, sizeof err), CAP_OK);
    CapTrainOptions o = {.batch_paths = paths, .n_batches = 2, .steps = steps, .seed = 5,
                         .out_path = out, .on_step = record, .user = seen};
    CapStatus st = cap_train(s, &o, &meta, err, sizeof err);
    if (st) fail_msg("%s", err);
    assert_int_equal(meta.step, steps);
    cap_session_free(s);
}

static void test_train_resume(void **unused) {
    make_batch("t1.safetensors", 1, 2);
    make_batch("t2.safetensors", -0.5f, 2);
    CapModel *m = open_fake();
    char full[512], half[512], rest[512], err[ERR];
    tpath(full, sizeof full, "full.safetensors");
    tpath(half, sizeof half, "half.safetensors");
    tpath(rest, sizeof rest, "rest.safetensors");
    Seen a = {0}, b = {0};
    run_training(m, NULL, 8, full, &a);
    run_training(m, NULL, 3, half, &b);
    run_training(m, half, 8, rest, &b);
    assert_int_equal(a.n, 8);
    assert_int_equal(b.n, 8);
    assert_memory_equal(a.loss, b.loss, sizeof(double) * 8);
    for (int i = 0; i < 8; i++) assert_true(a.gn[i] >= 0); /* rng = (seed, step) */
    assert_true(a.loss[7] < a.loss[0] || a.loss[6] < a.loss[0]);
    StFile fa, fb;
    assert_int_equal(st_read_file(full, &fa, err, sizeof err), 0);
    assert_int_equal(st_read_file(rest, &fb, err, sizeof err), 0);
    assert_int_equal(fa.size, fb.size);
    assert_memory_equal(fa.buf, fb.buf, fa.size);
    assert_string_equal(st_metadata(&fa, "step"), "8");
    assert_string_equal(st_metadata(&fa, "seed"), "5");
    assert_non_null(st_find(&fa, "step"));
    st_free(&fa);
    st_free(&fb);
    /* A weights file is not a checkpoint. */
    CapSession *s = new_session(m, 1);
    char w[512];
    tpath(w, sizeof w, "w2.safetensors");
    assert_int_equal(cap_save_weights(s, w, err, sizeof err), CAP_OK);
    CapTrainMeta meta;
    assert_int_equal(cap_load_checkpoint(s, w, &meta, err, sizeof err), CAP_E_FORMAT);
    expect_msg(err, "not a capc training checkpoint", "--weights", NULL);
    /* A checkpoint works as a weights file (optimizer state skipped). */
    assert_int_equal(cap_load_weights(s, full, err, sizeof err), CAP_OK);
    cap_session_free(s);
    cap_model_close(m);
}

/* ---- the CLI ---------------------------------------------------------------------------- */

/* Runs `cap ARGS` with output to a file; returns the exit status and the output in out. */
static int run_cap(char *out, size_t size, const char *fmt, ...) {
    char args[2048], cmd[4096], log[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    tpath(log, sizeof log, "cli.txt");
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>&1", fake_path("CAP_BIN"), args, log);
    int rc = system(cmd);
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(out, 1, size - 1, f) : 0;
    out[n] = 0;
    if (f) fclose(f);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_cli(void **unused) {
    char out[16384], w[512], b[512], ck[512], log[512], g[512];
    const char *so = fake_path("FAKE_ARTIFACT");
    tpath(w, sizeof w, "cli_w.safetensors");
    tpath(ck, sizeof ck, "cli_ck.safetensors");
    tpath(log, sizeof log, "cli_metrics.jsonl");
    tpath(g, sizeof g, "cli_g.safetensors");
    make_batch("cli_b.safetensors", 1, 2);
    tpath(b, sizeof b, "cli_b.safetensors");

    assert_int_equal(run_cap(out, sizeof out, "info %s", so), 0);
    expect_msg(out, "model: fake_affine", "parameters: 8\n", "trainable: 8\n");
    expect_msg(out, "kernels: 3", "arena bytes: 96", "input  rng: i32[2]");
    expect_msg(out, "1 hyperparameters", "hyperparameter train.lr: const(0.1)\n", NULL);
    assert_int_equal(run_cap(out, sizeof out, "init %s -o %s --seed 4", so, w), 0);
    assert_int_equal(run_cap(out, sizeof out, "loss %s --weights %s --batch %s", so, w, b), 0);
    expect_msg(out, "loss: ", NULL, NULL);
    assert_null(strstr(out, "backend auto")); /* the cpu fallback is quiet ... */
    assert_int_equal(run_cap(out, sizeof out, "loss %s -v --weights %s --batch %s", so, w, b), 0);
    expect_msg(out, "cap: backend auto: using cpu (cuda: ", "loss: ", NULL); /* ... unless -v */
    assert_int_equal(run_cap(out, sizeof out, "loss %s --weights %s --batch %s --mode train",
                             so, w, b), 0);
    expect_msg(out, "loss: ", NULL, NULL);
    assert_int_equal(run_cap(out, sizeof out, "loss %s --weights %s --batch %s --grads %s", so,
                             w, b, g), 1);
    expect_msg(out, "cap: error: --grads", "no gradient entry point", NULL);
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s,%s --steps 4 --out %s --log"
                             " %s --weights %s --print-every 2", so, b, b, ck, log, w), 0);
    expect_msg(out, "step 4/4", "samples/s", "ETA");
    expect_msg(out, "saved ", NULL, NULL);
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 6 --out %s "
                             "--resume %s --log %s", so, b, ck, ck, log), 1);
    expect_msg(out, "2 batch files", "has 1", NULL);
    /* what a run killed after its step-4 checkpoint may leave: later steps and a torn line */
    FILE *tail = fopen(log, "a");
    fputs("{\"step\":5,\"loss\":1}\n{\"step\":6,\"lo", tail);
    fclose(tail);
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s,%s --steps 6 --out %s "
                             "--resume %s --log %s", so, b, b, ck, ck, log), 0);
    expect_msg(out, "resuming", "step 6/6", NULL);
    FILE *f = fopen(log, "r");
    int lines = 0;
    for (int c; f && (c = fgetc(f)) != EOF;) lines += c == '\n';
    if (f) fclose(f);
    assert_int_equal(lines, 6);
    assert_int_equal(run_cap(out, sizeof out, "frobnicate %s", so), 2);
    expect_msg(out, "unknown command 'frobnicate'", NULL, NULL);
    assert_int_equal(run_cap(out, sizeof out, "train %s --steps 3 --out %s", so, ck), 2);
    /* a time limit in any unit stops at the first step after it, checkpoint written */
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 1000 --out %s "
                             "--time-limit 0.001s", so, b, ck), 0);
    expect_msg(out, "step 1/1000", "saved ", NULL);
    assert_null(strstr(out, "(step 1000)")); /* stopped by the limit, not the step count */
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 3 --out %s "
                             "--time-limit 5x", so, b, ck), 2);
    expect_msg(out, "--time-limit takes a duration such as 90, 90s, 5m or 2h, not '5x'", NULL, NULL);
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 3 --out %s "
                             "--on-nonfinite=ignore", so, b, ck), 2);
    expect_msg(out, "--on-nonfinite must be stop or skip, not 'ignore'", NULL, NULL);
    assert_int_equal(run_cap(out, sizeof out, "--help"), 0);
    expect_msg(out, "usage: cap", NULL, NULL);
}

static int file_mode(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

/* Outputs that are inputs, outputs that cannot be written, a log that cannot be written:
 * refused before any work, exit 1, nothing clobbered. Saves keep the file's mode and clean
 * the temp files an interrupted save left. */
static void test_refusals(void **unused) {
    char out[16384], w[512], b[512], ck[512], g[512], tmp[600];
    const char *so = fake_path("FAKE_ARTIFACT");
    tpath(w, sizeof w, "r_w.safetensors");
    tpath(ck, sizeof ck, "r_ck.safetensors");
    tpath(g, sizeof g, "r_g.safetensors");
    make_batch("r_b.safetensors", 1, 2);
    tpath(b, sizeof b, "r_b.safetensors");
    assert_int_equal(run_cap(out, sizeof out, "init %s -o %s", so, w), 0);
    struct stat before;
    assert_int_equal(stat(b, &before), 0);

    assert_int_equal(run_cap(out, sizeof out, "init %s -o %s", so, so), 1);
    expect_msg(out, "-o '", "is also the input", NULL);
    assert_int_equal(run_cap(out, sizeof out, "init %s -o %s/no/such/dir/w.safetensors", so, tmpdir), 1);
    expect_msg(out, "does not exist", NULL, NULL);
    assert_int_equal(run_cap(out, sizeof out, "init %s -o %s", so, tmpdir), 1);
    expect_msg(out, "is a directory", NULL, NULL);
    assert_int_equal(run_cap(out, sizeof out, "loss %s --weights %s --batch %s --grads %s", so, w, b, w), 1);
    expect_msg(out, "--grads '", "is also the input", NULL);
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 2 --out %s", so, b, b), 1);
    expect_msg(out, "--out '", "is also the input", NULL);
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 2 --out %s --weights %s",
                             so, b, w, w), 1);
    expect_msg(out, "is also the input", NULL, NULL);
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 2 --out %s --log %s",
                             so, b, ck, ck), 1);
    expect_msg(out, "--log and --out are the same file", NULL, NULL);
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 2 --out ''", so, b), 1);
    expect_msg(out, "the path is empty", NULL, NULL);
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 2 --out %s/gone/ck", so,
                             b, tmpdir), 1);
    expect_msg(out, "does not exist", NULL, NULL);
    assert_null(strstr(out, "step 1/")); /* refused before the first step */
    struct stat after;
    assert_int_equal(stat(b, &after), 0);
    assert_int_equal(after.st_size, before.st_size);
    assert_int_equal((long)after.st_mtime, (long)before.st_mtime);
    /* a full disk under --log is an error, not an empty log (root may write in /dev) */
    if (access("/dev/full", W_OK) == 0 && access("/dev", W_OK) == 0) {
        assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 2 --out %s "
                                 "--log /dev/full", so, b, ck), 1);
        expect_msg(out, "/dev/full: cannot write the log", NULL, NULL);
    }

    /* a 0600 checkpoint stays 0600; a stale temp file of it is removed on the next start */
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 2 --out %s", so, b, ck), 0);
    assert_int_equal(chmod(ck, 0600), 0);
    snprintf(tmp, sizeof tmp, "%s.tmp.AbC123", ck);
    FILE *f = fopen(tmp, "w");
    fputs("half a checkpoint", f);
    fclose(f);
    assert_int_equal(run_cap(out, sizeof out, "train %s --batches %s --steps 3 --out %s --resume %s",
                             so, b, ck, ck), 0);
    expect_msg(out, "removed 1 temporary file left by an interrupted save", NULL, NULL);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(file_mode(ck), 0600);
    (void)g;
}

/* cap init --from: a file of another layout fills the tensors it has under --prefix, reports
 * what stayed random and what went unused; a shape mismatch is refused, nothing written. */
static void test_init_from(void **unused) {
    char out[16384], from[512], bad[512], w[512], err[ERR];
    const char *so = fake_path("FAKE_ARTIFACT");
    tpath(from, sizeof from, "pretrained.safetensors");
    tpath(bad, sizeof bad, "pretrained_bad.safetensors");
    tpath(w, sizeof w, "from_w.safetensors");
    float weight[4] = {9, 8, 7, 6}, bias[4] = {0.5f, 0.25f, 0, -1}, fc[2] = {1, 2};
    int64_t w_shape[] = {1, 4}, b_shape[] = {4}, fc_shape[] = {2}, wrong[] = {4, 1};
    StWriteTensor ts[] = {{"weight", ST_F32, 2, w_shape, weight}, {"bias", ST_F32, 1, b_shape, bias},
                          {"fc.weight", ST_F32, 1, fc_shape, fc}};
    /* the model's own names, plus a classifier head the model does not have */
    StWriteTensor named[] = {{"embed.weight", ST_F32, 2, w_shape, weight},
                             {"head.bias", ST_F32, 1, b_shape, bias},
                             {"fc.weight", ST_F32, 1, fc_shape, fc}};
    assert_int_equal(st_write_file(from, named, 3, NULL, NULL, 0, err, sizeof err), 0);
    assert_int_equal(run_cap(out, sizeof out, "init %s -o %s --from %s", so, w, from), 0);
    expect_msg(out, "loaded 2 tensors from", "2 weights and buffers stayed as initialized: stats.* (2)",
               "1 tensors of");
    expect_msg(out, "unused: fc.weight", NULL, NULL);
    StFile f;
    assert_int_equal(st_read_file(w, &f, err, sizeof err), 0);
    assert_memory_equal(st_find(&f, "embed.weight")->data, weight, sizeof weight);
    assert_memory_equal(st_find(&f, "head.bias")->data, bias, sizeof bias);
    st_free(&f);
    /* a prefix maps the file's "weight" onto the model's "embed.weight" */
    assert_int_equal(st_write_file(from, ts, 3, NULL, NULL, 0, err, sizeof err), 0);
    assert_int_equal(run_cap(out, sizeof out, "init %s -o %s --from %s --prefix embed.", so, w, from), 0);
    expect_msg(out, "loaded 1 tensors", "into embed.*", "unused: bias, fc.weight");
    /* nothing matching is an error: the prefix is probably wrong */
    assert_int_equal(run_cap(out, sizeof out, "init %s -o %s --from %s --prefix backbone.", so, w, from), 1);
    expect_msg(out, "none of its tensors is a weight of this model under the prefix 'backbone.'",
               "is --prefix right?", NULL);
    /* a shape mismatch names the tensor; -o is not written */
    StWriteTensor mismatched[] = {{"embed.weight", ST_F32, 2, wrong, weight}};
    assert_int_equal(st_write_file(bad, mismatched, 1, NULL, NULL, 0, err, sizeof err), 0);
    unlink(w);
    assert_int_equal(run_cap(out, sizeof out, "init %s -o %s --from %s", so, w, bad), 1);
    expect_msg(out, "tensor 'embed.weight' has shape [4,1], but the model's 'embed.weight' is [1,4]",
               NULL, NULL);
    assert_int_equal(access(w, F_OK), -1);
}

/* A checkpoint whose step tensor disagrees with its metadata, or that holds a tensor the
 * model does not have, is refused (as --weights refuses the latter). */
static void test_checkpoint_validation(void **unused) {
    CapModel *m = open_fake();
    char ck[512], bad[512], err[ERR];
    tpath(ck, sizeof ck, "v_ck.safetensors");
    tpath(bad, sizeof bad, "v_bad.safetensors");
    make_batch("t1.safetensors", 1, 2); /* run_training's batches */
    make_batch("t2.safetensors", -0.5f, 2);
    Seen seen = {0};
    run_training(m, NULL, 3, ck, &seen);
    StFile f;
    assert_int_equal(st_read_file(ck, &f, err, sizeof err), 0);
    for (int variant = 0; variant < 2; variant++) {
        StWriteTensor ts[64];
        int32_t wrong_step = 7;
        float extra = 1;
        int64_t one = 1;
        int n = 0;
        for (int i = 0; i < f.n && n < 63; i++) {
            const StTensor *t = &f.tensors[i];
            ts[n++] = (StWriteTensor){t->name, t->dtype, t->rank, t->shape, t->data};
            if (variant == 0 && strcmp(t->name, "step") == 0) ts[n - 1].data = &wrong_step;
        }
        if (variant == 1) ts[n++] = (StWriteTensor){"not.in.the.model", ST_F32, 1, &one, &extra};
        assert_int_equal(st_write_file(bad, ts, n, (const char *const *)f.meta_keys,
                                       (const char *const *)f.meta_values, f.n_meta, err, sizeof err), 0);
        CapSession *s = new_session(m, 1);
        CapTrainMeta meta;
        CapStatus st = cap_load_checkpoint(s, bad, &meta, err, sizeof err);
        if (variant == 0) {
            assert_int_equal(st, CAP_E_FORMAT);
            expect_msg(err, "the 'step' tensor holds 7 but the metadata says step 3", NULL, NULL);
        } else {
            assert_int_equal(st, CAP_E_MISMATCH);
            expect_msg(err, "unexpected tensor 'not.in.the.model'", NULL, NULL);
        }
        cap_session_free(s);
    }
    st_free(&f);
    cap_model_close(m);
}

/* The train.lr hyperparameter (CAP_STATE_HPARAM, init "const(0.1)") holds its value from
 * cap_session_new on, with no cap_session_init, and no weights file or checkpoint carries it:
 * a session that only loads a checkpoint trains with the artifact's lr. */
static void test_hparam_filled_never_saved(void **unused) {
    make_batch("t1.safetensors", 1, 2); /* run_training's batches */
    make_batch("t2.safetensors", -0.5f, 2);
    CapModel *m = open_fake();
    int lr = cap_model_find_state(m, "train.lr");
    assert_true(lr >= 0);
    assert_int_equal(cap_model_artifact(m)->state[lr].kind, CAP_STATE_HPARAM);
    char ck[512], w[512], err[ERR];
    tpath(ck, sizeof ck, "hp_ck.safetensors");
    tpath(w, sizeof w, "hp_w.safetensors");
    Seen seen = {0};
    run_training(m, NULL, 3, ck, &seen);
    CapSession *s = NULL;
    assert_int_equal(cap_session_new(m, CAP_BACKEND_CPU, &s, err, sizeof err), CAP_OK);
    float v = 0;
    assert_int_equal(cap_session_read_state(s, lr, &v, err, sizeof err), CAP_OK);
    assert_true(v == 0.1f);
    CapTrainMeta meta;
    assert_int_equal(cap_load_checkpoint(s, ck, &meta, err, sizeof err), CAP_OK);
    assert_int_equal(cap_save_weights(s, w, err, sizeof err), CAP_OK);
    v = 0;
    assert_int_equal(cap_session_read_state(s, lr, &v, err, sizeof err), CAP_OK);
    assert_true(v == 0.1f);
    const char *files[] = {ck, w};
    for (int i = 0; i < 2; i++) {
        StFile f;
        assert_int_equal(st_read_file(files[i], &f, err, sizeof err), 0);
        assert_null(st_find(&f, "train.lr"));
        assert_non_null(st_find(&f, "embed.weight"));
        st_free(&f);
    }
    /* Resuming in this never-initialised session trains with lr 0.1: steps 4..8 match a run
     * of 8 steps straight (a zero lr would leave the loss where it is). */
    char full[512], b1[512], b2[512];
    tpath(full, sizeof full, "hp_full.safetensors");
    tpath(b1, sizeof b1, "t1.safetensors");
    tpath(b2, sizeof b2, "t2.safetensors");
    Seen a = {0}, b = seen;
    run_training(m, NULL, 8, full, &a);
    const char *paths[] = {b1, b2};
    CapTrainOptions o = {.batch_paths = paths, .n_batches = 2, .steps = 8, .seed = 5,
                         .out_path = NULL, .on_step = record, .user = &b};
    if (cap_train(s, &o, &meta, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(b.n, 8);
    assert_memory_equal(a.loss, b.loss, sizeof(double) * 8);
    cap_session_free(s);
    cap_model_close(m);
}

static int setup(void **unused) {
    if (make_temp_dir("capc_rt", tmpdir, sizeof tmpdir) != 0) return -1;
    for (int i = 0; i < 2048; i++) BIG[i] = (float)i;
    return 0;
}

static int teardown(void **unused) {
    (void)unused;
    return remove_temp_dir(tmpdir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_and_counts),  cmocka_unit_test(test_version_mismatch),
        cmocka_unit_test(test_not_a_model),      cmocka_unit_test(test_cuda_refused),
        cmocka_unit_test(test_init),             cmocka_unit_test(test_run_eval),
        cmocka_unit_test(test_weights_round_trip), cmocka_unit_test(test_bad_weights),
        cmocka_unit_test(test_batch_mismatch),   cmocka_unit_test(test_train_resume),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_init_from),
        cmocka_unit_test(test_checkpoint_validation),
        cmocka_unit_test(test_hparam_filled_never_saved),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
