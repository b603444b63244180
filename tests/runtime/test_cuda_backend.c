/* test_cuda_backend.c — the cuda backend (runtime/core/backend_cuda.c) through libcaprt.
 *
 *  - no driver ($CAP_CUDA_DRIVER pointing at a missing library): cuda is refused with
 *    "no usable CUDA driver: ...", auto picks cpu and says why;
 *  - a fake driver (data/fake_cuda.c: host memory, launches call the cap.so's C kernels of
 *    the same names): the backend's plumbing on any machine, under the sanitizers: image
 *    choice (cubin, forced PTX, none), every kernel found, device copies of inputs and
 *    outputs, state in device memory; results equal the cpu backend's bit for bit, and every
 *    device allocation is freed with the session;
 *  - a real GPU (skipped without one: "no GPU: cuda checks skipped"): the tiny captioner
 *    (-D batch=2 -D dropout=0, --target=all; or $CAP_TINY_SO when a script compiled it already)
 *    with the golden weights and batch runs eval_loss and train_step on cpu and on cuda:
 *      loss: |cuda - cpu| <= 1e-4 * |cpu|
 *      every state tensor after train_step (weights, BN statistics, Adam moments, step):
 *            |cuda - cpu| <= 1e-4 * max(1, |cpu|)   (mixed: absolute near zero, where Adam's
 *                                                    first step moves weights by ~lr whatever
 *                                                    the gradient's size, relative above 1)
 *    and eval_loss on cuda against PyTorch's golden loss_eval within 1e-4 relative.
 * The compiles use $CAPC_BIN. */
#include <dlfcn.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cap.h"
#include "capc_compile.h"
#include "safetensors.h"

#define ERR 2048
#define TOL 1e-4

static char tmpdir[256];
static char small_so[512], small_why[1024];

static const char *src_dir(void) { return test_src_dir(); }

/* Compiles model (relative to the source dir) with flags into this run's tmpdir. */
static void compile(const char *model, const char *flags, char *out, size_t out_size, char *why,
                    size_t why_size) {
    compile_with_capc(tmpdir, model, flags, out, out_size, why, why_size);
}

static void ok(CapStatus st, const char *err) {
    if (st) fail_msg("%s", err);
}

static CapModel *open_model(const char *path) {
    CapModel *m = NULL;
    char err[ERR];
    ok(cap_model_open(path, &m, err, sizeof err), err);
    return m;
}

static CapSession *new_session(const CapModel *m, CapBackendKind kind) {
    CapSession *s = NULL;
    char err[ERR];
    ok(cap_session_new(m, kind, &s, err, sizeof err), err);
    return s;
}

/* ---- comparing two sessions ---------------------------------------------------------------- */

static uint64_t rng = 0x243F6A8885A308D3ull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* Random inputs for entry e: f32 in [-1, 1], i32 in [0, 10) (labels, ids, rng words). */
static void **make_inputs(const CapEntry *e) {
    void **in = calloc((size_t)e->n_inputs + 1, sizeof *in);
    for (int i = 0; i < e->n_inputs; i++) {
        int64_t n = e->inputs[i].numel;
        in[i] = malloc((size_t)(n ? n : 1) * 4);
        for (int64_t k = 0; k < n; k++) {
            if (e->inputs[i].dtype == CAP_DT_I32) ((int32_t *)in[i])[k] = (int32_t)(urand() * 10);
            else ((float *)in[i])[k] = (float)(2 * urand() - 1);
        }
    }
    return in;
}

/* Output buffers for e (NULL for outputs that are state, "@X"). */
static void **make_outputs(const CapEntry *e) {
    void **out = calloc((size_t)e->n_outputs + 1, sizeof *out);
    for (int i = 0; i < e->n_outputs; i++)
        if (!e->output_state || e->output_state[i] < 0)
            out[i] = calloc((size_t)(e->outputs[i].numel ? e->outputs[i].numel : 1), 4);
    return out;
}

static void free_list(void **p, int n) {
    for (int i = 0; i < n; i++) free(p[i]);
    free(p);
}

/* Worst mixed error |b - a| / max(floor, |a|) over n f32 (or i32) values; *at its index. */
static double worst_error(const void *a, const void *b, int64_t n, int i32, double floor,
                          int64_t *at) {
    double worst = 0;
    *at = -1;
    for (int64_t k = 0; k < n; k++) {
        double x = i32 ? ((const int32_t *)a)[k] : ((const float *)a)[k];
        double y = i32 ? ((const int32_t *)b)[k] : ((const float *)b)[k];
        double e = x == y ? 0 : fabs(y - x) / fmax(floor, fabs(x));
        if (!(e <= worst)) worst = e, *at = k; /* NaN counts as the worst */
    }
    return worst;
}

/* Every state tensor of b against a; returns the worst mixed error and prints it. */
static double compare_state(CapSession *a, CapSession *b, const char *label) {
    const CapArtifact *art = cap_model_artifact(cap_session_model(a));
    char err[ERR];
    double worst = 0;
    const char *worst_name = "-";
    for (int i = 0; i < art->n_state; i++) {
        const CapTensorInfo *t = &art->state[i].t;
        size_t bytes = cap_tensor_bytes(t);
        void *x = malloc(bytes + 4), *y = malloc(bytes + 4);
        ok(cap_session_read_state(a, i, x, err, sizeof err), err);
        ok(cap_session_read_state(b, i, y, err, sizeof err), err);
        int64_t at;
        double e = worst_error(x, y, t->numel, t->dtype == CAP_DT_I32, 1.0, &at);
        if (!(e <= worst)) worst = e, worst_name = t->name;
        free(x);
        free(y);
    }
    printf("%s: %d state tensors, worst mixed error %.3g (%s)\n", label, art->n_state, worst,
           worst_name);
    return worst;
}

/* Runs entry on both sessions with the same random inputs; returns the worst output error. */
static double run_both(CapSession *a, CapSession *b, const char *entry) {
    const CapModel *m = cap_session_model(a);
    const CapEntry *e = &cap_model_artifact(m)->entries[cap_model_find_entry(m, entry)];
    void **in = make_inputs(e), **oa = make_outputs(e), **ob = make_outputs(e);
    char err[ERR];
    ok(cap_session_run(a, entry, (const void *const *)in, oa, err, sizeof err), err);
    ok(cap_session_run(b, entry, (const void *const *)in, ob, err, sizeof err), err);
    double worst = 0;
    for (int i = 0; i < e->n_outputs; i++) {
        if (!oa[i]) continue;
        int64_t at;
        double w = worst_error(oa[i], ob[i], e->outputs[i].numel,
                               e->outputs[i].dtype == CAP_DT_I32, 1.0, &at);
        if (!(w <= worst)) worst = w;
    }
    free_list(in, e->n_inputs);
    free_list(oa, e->n_outputs);
    free_list(ob, e->n_outputs);
    return worst;
}

/* ---- no driver ------------------------------------------------------------------------------ */

static void test_no_driver(void **unused) {
    if (small_why[0]) skip();
    setenv("CAP_CUDA_DRIVER", "/nonexistent/libcuda.so.1", 1);
    char why[512], err[ERR];
    assert_int_equal(cap_backend_probe(CAP_BACKEND_CUDA, why, sizeof why), CAP_E_BACKEND);
    assert_non_null(strstr(why, "no usable CUDA driver"));
    CapModel *m = open_model(small_so);
    CapSession *s = NULL;
    assert_int_equal(cap_session_new(m, CAP_BACKEND_CUDA, &s, err, sizeof err), CAP_E_BACKEND);
    assert_non_null(strstr(err, "no usable CUDA driver"));
    s = new_session(m, CAP_BACKEND_AUTO);
    assert_string_equal(cap_session_backend_name(s), "cpu");
    assert_non_null(strstr(cap_session_backend_note(s), "using cpu (cuda: no usable CUDA driver"));
    cap_session_free(s);
    cap_model_close(m);
    unsetenv("CAP_CUDA_DRIVER");
}

/* ---- the fake driver ------------------------------------------------------------------------ */

static void *fake_lib;
static int (*fake_live)(void);

/* Points the runtime at the fake driver; skips when the build did not provide it. */
static void use_fake(void) {
    const char *fake = getenv("FAKE_CUDA_DRIVER");
    if (!fake || !*fake || small_why[0]) skip();
    setenv("CAP_CUDA_DRIVER", fake, 1);
    setenv("FAKE_CUDA_KERNELS", small_so, 1);
    if (!fake_lib) {
        fake_lib = dlopen(fake, RTLD_NOW | RTLD_LOCAL);
        assert_non_null(fake_lib);
        void *p = dlsym(fake_lib, "fake_cuda_live_allocs");
        assert_non_null(p);
        memcpy(&fake_live, &p, sizeof p);
    }
}

static void test_fake_driver_matches_cpu(void **unused) {
    use_fake();
    char why[512];
    assert_int_equal(cap_backend_probe(CAP_BACKEND_CUDA, why, sizeof why), CAP_OK);
    assert_string_equal(why, "available: fake GPU, sm_90");
    CapModel *m = open_model(small_so);
    int live0 = fake_live();
    CapSession *cpu = new_session(m, CAP_BACKEND_CPU);
    CapSession *gpu = new_session(m, CAP_BACKEND_AUTO); /* auto takes the usable "GPU" */
    assert_string_equal(cap_session_backend_name(gpu), "cuda");
    assert_string_equal(cap_session_backend_note(gpu),
                        "backend auto: using cuda (fake GPU, sm_90, sm_90 cubin)");
    char err[ERR];
    ok(cap_session_init(cpu, 7, err, sizeof err), err);
    ok(cap_session_init(gpu, 7, err, sizeof err), err);
    assert_true(compare_state(cpu, gpu, "fake cuda, after init") == 0);
    const CapArtifact *a = cap_model_artifact(m);
    for (int i = 0; i < a->n_entries; i++) {
        double w = run_both(cpu, gpu, a->entries[i].name);
        printf("fake cuda: %s outputs, worst error %.3g\n", a->entries[i].name, w);
        assert_true(w == 0);
        assert_true(compare_state(cpu, gpu, a->entries[i].name) == 0);
    }
    cap_session_free(cpu);
    cap_session_free(gpu);
    assert_int_equal(fake_live(), live0); /* every device block freed, cached ones too */
    cap_model_close(m);
    unsetenv("CAP_CUDA_DRIVER");
}

static void test_fake_driver_images(void **unused) {
    use_fake();
    CapModel *m = open_model(small_so);
    setenv("CAP_CUDA_IMAGE", "ptx", 1);
    CapSession *s = new_session(m, CAP_BACKEND_CUDA);
    assert_string_equal(cap_session_backend_note(s),
                        "backend cuda: using cuda (fake GPU, sm_90, ptx JIT)");
    cap_session_free(s);
    setenv("CAP_CUDA_IMAGE", "sm_75", 1); /* not in cap.so */
    char err[ERR];
    assert_int_equal(cap_session_new(m, CAP_BACKEND_CUDA, &s, err, sizeof err), CAP_E_BACKEND);
    assert_non_null(strstr(err, "has no CUDA image this GPU (sm_90) can run"));
    assert_non_null(strstr(err, "sm_80, sm_90, ptx"));
    /* auto falls back to cpu and says why */
    s = new_session(m, CAP_BACKEND_AUTO);
    assert_string_equal(cap_session_backend_name(s), "cpu");
    assert_non_null(strstr(cap_session_backend_note(s), "using cpu (cuda: "));
    cap_session_free(s);
    unsetenv("CAP_CUDA_IMAGE");
    cap_model_close(m);
    unsetenv("CAP_CUDA_DRIVER");
}

/* ---- a real GPU ----------------------------------------------------------------------------- */

/* Opens the tiny captioner's sessions with the golden weights on cpu and cuda. */
static void tiny_sessions(const char *so, CapModel **m, CapSession **cpu, CapSession **gpu) {
    char path[1024], err[ERR];
    *m = open_model(so);
    *cpu = new_session(*m, CAP_BACKEND_CPU);
    *gpu = new_session(*m, CAP_BACKEND_CUDA);
    printf("%s\n", cap_session_backend_note(*gpu));
    snprintf(path, sizeof path, "%s/tests/golden/tiny_weights.safetensors", src_dir());
    CapSession *both[2] = {*cpu, *gpu};
    for (int i = 0; i < 2; i++) {
        ok(cap_session_init(both[i], 0, err, sizeof err), err); /* optimizer state */
        ok(cap_load_weights(both[i], path, err, sizeof err), err);
    }
}

static double golden_loss(const char *name) {
    char path[1024], err[ERR];
    snprintf(path, sizeof path, "%s/tests/golden/tiny_expected.safetensors", src_dir());
    StFile f;
    if (st_read_file(path, &f, err, sizeof err)) fail_msg("%s", err);
    const StTensor *t = st_find(&f, name);
    assert_non_null(t);
    double v = 0;
    st_to_f64(t, &v); /* rank 0: one value */
    st_free(&f);
    return v;
}

static void test_gpu_matches_cpu(void **unused) {
    char why[512];
    unsetenv("CAP_CUDA_DRIVER");
    if (cap_backend_probe(CAP_BACKEND_CUDA, why, sizeof why) != CAP_OK) {
        print_message("no GPU: cuda checks skipped (%s)\n", why);
        skip();
    }
    char so[512], cwhy[1024] = "";
    const char *given = getenv("CAP_TINY_SO");
    if (given && *given) snprintf(so, sizeof so, "%s", given);
    else compile("models/captioner_tiny.json", "-D batch=2 -D dropout=0 --target=all", so,
                 sizeof so, cwhy, sizeof cwhy);
    if (cwhy[0]) fail_msg("captioner_tiny: %s", cwhy);
    CapModel *m;
    CapSession *cpu, *gpu;
    tiny_sessions(so, &m, &cpu, &gpu);
    char path[1024], err[ERR];
    snprintf(path, sizeof path, "%s/tests/golden/tiny_batch.safetensors", src_dir());
    const char *entries[2] = {"eval_loss", "train_step"};
    for (int i = 0; i < 2; i++) {
        CapBatch *b = NULL;
        ok(cap_batch_open(m, entries[i], path, &b, err, sizeof err), err);
        double lc = 0, lg = 0;
        ok(cap_session_loss(cpu, entries[i], b, 0, 0, &lc, err, sizeof err), err);
        ok(cap_session_loss(gpu, entries[i], b, 0, 0, &lg, err, sizeof err), err);
        cap_batch_free(b);
        double rel = fabs(lg - lc) / fabs(lc);
        printf("%s: loss cpu %.9g cuda %.9g, relative difference %.3g\n", entries[i], lc, lg,
               rel);
        if (i == 0) {
            double g = golden_loss("loss_eval");
            printf("eval_loss: PyTorch %.9g, cuda relative difference %.3g\n", g,
                   fabs(lg - g) / fabs(g));
            assert_true(fabs(lg - g) <= TOL * fabs(g));
        }
        assert_true(rel <= TOL);
    }
    double w = compare_state(cpu, gpu, "after train_step, cuda vs cpu");
    cap_session_free(cpu);
    cap_session_free(gpu);
    cap_model_close(m);
    if (!(w <= TOL)) fail_msg("state after train_step differs: worst mixed error %g", w);
}

/* ---- setup ---------------------------------------------------------------------------------- */

static int setup(void **unused) {
    if (make_temp_dir("capc_cuda", tmpdir, sizeof tmpdir) != 0) return -1;
    /* cuda images need NVRTC at compile time; without it the small model's tests skip */
    compile("tests/passes/data/small_model.json", "--target=all", small_so, sizeof small_so,
            small_why, sizeof small_why);
    if (small_why[0]) print_message("skipping small_model tests: %s", small_why);
    return 0;
}

static int teardown(void **unused) {
    (void)unused;
    return remove_temp_dir(tmpdir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_driver),
        cmocka_unit_test(test_fake_driver_matches_cpu),
        cmocka_unit_test(test_fake_driver_images),
        cmocka_unit_test(test_gpu_matches_cpu),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
