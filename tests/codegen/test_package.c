/* test_package.c — package_module end to end: small models compiled to a real cap.so in a
 * temp dir, loaded with dlopen, their tables checked against the module, and their entry
 * points RUN by a small executor here (the runtime's is the real one) against the float64
 * reference interpreter: forward's outputs, and train_step's loss and every state tensor it
 * writes back (weights and Adam moments, through the "@X" copies).
 *
 *   package_mlp.json          two linear layers, ReLU, a reshaped parameter, a weight tied
 *                             between fc1 and the head, cross-entropy, Adam
 *   package_elementwise.json  the same features with elementwise ops and a mean only, plus
 *                             gradient clipping
 *   package_call_args.json    C functions called with scalar arguments (leaky_relu, elu with
 *                             its user gradient, a two-operand lerp), trained with Adam
 *   call_args_dedupe.json     two calls differing only in their scalar: two kernels, one
 *                             when -D makes the scalars equal
 *
 * Then the capc command line: -o with --emit-src and -D, an unwritable output path, a bad
 * --target.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cap_artifact.h"
#include "codegen.h"
#include "frontend.h"
#include "interp.h"
#include "pipeline.h"
#include "passes/testfiles.h"

#define MODEL "tests/codegen/data/package_mlp.json"
#define MODEL_ELEMENTWISE "tests/codegen/data/package_elementwise.json"
#define MODEL_STATE_COPIES "tests/codegen/data/state_copies.ir"
#define MODEL_CALL_ARGS "tests/codegen/data/package_call_args.json"
#define MODEL_CALL_ARGS_DEDUPE "tests/codegen/data/call_args_dedupe.json"

typedef struct Fixture {
    const char *model; /* relative to the source dir */
    char *dir;  /* temp dir */
    Module *m;
    void *lib;  /* dlopen handle of dir/cap.so */
    const CapArtifact *a;
} Fixture;

/* IR text, already typed (for programs the frontend does not write, such as "@X" outputs). */
static Module *load_ir(const char *path) {
    char *text = read_text_file(path);
    if (text == NULL) fail_msg("cannot read %s", path);
    Diag d = {0};
    Module *m = ir_parse(text, path, &d);
    free(text);
    if (m == NULL) fail_msg("%s", d.msg);
    if (ir_verify_module(m, true, &d) != 0) fail_msg("%s", d.msg);
    return m;
}

static Module *load_model(const char *model) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", source_dir(), model);
    size_t len = strlen(path);
    if (len > 3 && strcmp(path + len - 3, ".ir") == 0) return load_ir(path);
    Diag d = {0};
    Module *m = frontend_load_file(path, NULL, 0, &d);
    if (m == NULL) fail_msg("%s", d.msg);
    PipelineOptions opts = {0};
    if (pipeline_run(m, &opts, &d) != 0) fail_msg("%s", d.msg);
    return m;
}

static int setup_model(void **state, const char *model) {
    Fixture *fx = calloc(1, sizeof *fx);
    *state = fx;
    fx->model = model;
    fx->dir = strdup("/tmp/capc-test-package-XXXXXX");
    if (mkdtemp(fx->dir) == NULL) return -1;
    fx->m = load_model(model);
    char out[4200];
    snprintf(out, sizeof out, "%s/cap.so", fx->dir);
    PackageOptions opts = {.output_path = out, .targets = TARGET_CPU};
    Diag d = {0};
    if (package_module(fx->m, &opts, &d) != 0) fail_msg("package_module: %s", d.msg);
    /* RTLD_NODELETE: cap.so pulls in libgomp, whose idle worker threads would crash if
     * dlclose unloaded it under them. */
    fx->lib = dlopen(out, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (fx->lib == NULL) fail_msg("dlopen: %s", dlerror());
    fx->a = dlsym(fx->lib, CAP_ARTIFACT_SYMBOL);
    if (fx->a == NULL) fail_msg("dlsym: %s", dlerror());
    return 0;
}

static int setup_mlp(void **state) { return setup_model(state, MODEL); }
static int setup_elementwise(void **state) { return setup_model(state, MODEL_ELEMENTWISE); }
static int setup_state_copies(void **state) { return setup_model(state, MODEL_STATE_COPIES); }
static int setup_call_args(void **state) { return setup_model(state, MODEL_CALL_ARGS); }

static int teardown(void **state) {
    Fixture *fx = *state;
    if (fx == NULL) return 0;
    if (fx->lib != NULL) dlclose(fx->lib);
    if (fx->m != NULL) module_free(fx->m);
    remove_tree(fx->dir);
    free(fx->dir);
    free(fx);
    return 0;
}

static const CapEntry *find_entry(const CapArtifact *a, const char *name) {
    for (int i = 0; i < a->n_entries; i++)
        if (strcmp(a->entries[i].name, name) == 0) return &a->entries[i];
    fail_msg("no entry %s", name);
    return NULL;
}

/* ---- tables -------------------------------------------------------------------------------- */

static void check_tensor(const CapTensorInfo *t, const char *name, DType dt, const Shape *s) {
    assert_string_equal(t->name, name);
    assert_int_equal(t->dtype, dt == DT_I32 ? CAP_DT_I32 : CAP_DT_F32);
    assert_int_equal(t->rank, s->rank);
    for (int i = 0; i < s->rank; i++) assert_int_equal(t->dims[i], s->dims[i]);
    assert_int_equal(t->numel, shape_numel(s));
}

static void test_state_table(void **state) {
    Fixture *fx = *state;
    const CapArtifact *a = fx->a;
    assert_int_equal(a->version, CAP_ARTIFACT_VERSION);
    assert_string_equal(a->model_name, fx->m->name);
    assert_non_null(strstr(a->config_json, "\"batch\":4"));
    assert_non_null(strstr(a->config_json, "\"lr\":0.01}"));
    assert_int_equal(a->n_state, fx->m->n_params);
    for (int i = 0; i < a->n_state; i++) {
        const Param *p = fx->m->params[i];
        const CapStateInfo *s = &a->state[i];
        check_tensor(&s->t, p->name, p->dtype, &p->shape);
        int kind = p->kind == PARAM_WEIGHT   ? CAP_STATE_WEIGHT
                   : p->kind == PARAM_BUFFER ? CAP_STATE_BUFFER
                   : p->kind == PARAM_HPARAM ? CAP_STATE_HPARAM : CAP_STATE_OPTIM;
        assert_int_equal(s->kind, kind);
        assert_int_equal(s->trainable, p->trainable);
        assert_string_equal(s->init, p->init != NULL ? p->init : "");
    }
    /* The model's lr (0.01) is a hyperparameter in the state table, not in any kernel. */
    int lr = -1;
    for (int i = 0; i < a->n_state; i++)
        if (strcmp(a->state[i].t.name, "train.lr") == 0) lr = i;
    assert_true(lr >= 0);
    assert_int_equal(a->state[lr].kind, CAP_STATE_HPARAM);
    assert_int_equal(a->state[lr].t.numel, 1);
    assert_string_equal(a->state[lr].init, "const(0.01)");
}

static int64_t state_bytes(const CapArtifact *a, int i) { return a->state[i].t.numel * 4; }

/* Every buffer ref of e lies inside the space it names. */
static void check_ref(const CapArtifact *a, const CapEntry *e, const CapBufRef *r) {
    assert_true(r->bytes > 0);
    switch (r->space) {
    case CAP_BUF_ARENA:
        assert_int_equal(r->offset % MEMPLAN_ALIGN, 0);
        assert_true(r->offset >= 0 && r->offset + r->bytes <= e->arena_bytes);
        break;
    case CAP_BUF_STATE:
        assert_true(r->index >= 0 && r->index < a->n_state);
        assert_true(r->bytes <= state_bytes(a, r->index));
        break;
    case CAP_BUF_INPUT:
        assert_true(r->index >= 0 && r->index < e->n_inputs);
        assert_true(r->bytes <= e->inputs[r->index].numel * 4);
        break;
    case CAP_BUF_OUTPUT:
        assert_true(r->index >= 0 && r->index < e->n_outputs);
        assert_true(r->bytes <= e->outputs[r->index].numel * 4);
        break;
    default: fail_msg("bad space %d", r->space);
    }
}

static void test_entries(void **state) {
    Fixture *fx = *state;
    const CapArtifact *a = fx->a;
    assert_int_equal(a->n_entries, fx->m->n_funcs);
    for (int i = 0; i < a->n_entries; i++) {
        const CapEntry *e = &a->entries[i];
        const Function *f = fx->m->funcs[i];
        assert_string_equal(e->name, f->name);
        assert_int_equal(e->n_inputs, f->n_inputs);
        assert_int_equal(e->n_outputs, f->n_outputs);
        for (int j = 0; j < f->n_inputs; j++)
            check_tensor(&e->inputs[j], f->inputs[j]->name, f->inputs[j]->dtype,
                         &f->inputs[j]->shape);
        for (int j = 0; j < f->n_outputs; j++) {
            const char *name = f->output_names[j];
            check_tensor(&e->outputs[j], name, f->outputs[j]->dtype, &f->outputs[j]->shape);
            if (name[0] == '@') assert_string_equal(a->state[e->output_state[j]].t.name, name + 1);
            else assert_int_equal(e->output_state[j], -1);
        }
        assert_true(e->n_steps > 0);
        for (int s = 0; s < e->n_steps; s++) {
            const CapStep *step = &e->steps[s];
            assert_true(step->kernel >= 0 && step->kernel < a->n_kernels);
            assert_int_equal(step->n_args, a->kernels[step->kernel].n_args);
            for (int j = 0; j < step->n_args; j++) check_ref(a, e, &step->args[j]);
        }
    }
    for (int k = 0; k < a->n_kernels; k++) {
        assert_non_null(a->kernels[k].cpu);
        for (int j = 0; j < k; j++) assert_string_not_equal(a->kernels[k].name, a->kernels[j].name);
    }
    assert_int_equal(a->n_cuda_images, 0);
}

/* forward and eval_loss compute the same thing: deduplication gives them the same kernels. */
static void test_dedupe(void **state) {
    Fixture *fx = *state;
    const CapEntry *fw = find_entry(fx->a, "forward"), *ev = find_entry(fx->a, "eval_loss");
    assert_int_equal(fw->n_steps, ev->n_steps);
    for (int s = 0; s < fw->n_steps; s++) assert_int_equal(fw->steps[s].kernel, ev->steps[s].kernel);
    int total = 0;
    for (int i = 0; i < fx->a->n_entries; i++) total += fx->a->entries[i].n_steps;
    assert_true(fx->a->n_kernels < total);
}

/* ---- running entries ------------------------------------------------------------------------ */

typedef struct Host {
    float **state;  /* per state tensor (i32 stored in the same 4 bytes) */
    void **inputs, **outputs;
} Host;

static void *ref_pointer(const Host *h, char *arena, const CapBufRef *r) {
    switch (r->space) {
    case CAP_BUF_ARENA: return arena + r->offset;
    case CAP_BUF_STATE: return h->state[r->index];
    case CAP_BUF_INPUT: return h->inputs[r->index];
    default: return h->outputs[r->index];
    }
}

/* The test's executor: every step's refs to pointers, then the kernel. */
static void run_entry(const CapArtifact *a, const CapEntry *e, const Host *h) {
    char *arena = aligned_alloc(64, (size_t)((e->arena_bytes + 63) / 64 * 64 + 64));
    for (int s = 0; s < e->n_steps; s++) {
        const CapStep *step = &e->steps[s];
        void *bufs[64];
        assert_true(step->n_args <= 64);
        for (int j = 0; j < step->n_args; j++) bufs[j] = ref_pointer(h, arena, &step->args[j]);
        a->kernels[step->kernel].cpu(bufs);
    }
    free(arena);
}

static double uniform(unsigned *seed) {
    *seed = *seed * 1664525u + 1013904223u;
    return (double)(*seed >> 8) / 16777216.0;
}

/* Random values rounded to f32, so C and the reference start from the same numbers. */
static void fill_random(RefTensor *t, float *host, unsigned *seed, double lo, double hi) {
    for (int64_t i = 0; i < ref_tensor_numel(t); i++) {
        float v = (float)(lo + (hi - lo) * uniform(seed));
        host[i] = v;
        t->data[i] = v;
    }
}

typedef struct World {
    RefStore store;
    RefTensor *in; /* per function input */
    Host h;
    int n_inputs;
} World;

/* Random state (Adam's second moments positive, step 3) and inputs; i32 inputs are class
 * ids in [0, 16) with element 2 the ignored target -1. */
static void world_init(World *w, const Module *m, const Function *f, unsigned seed) {
    memset(w, 0, sizeof *w);
    ref_store_init(&w->store);
    w->h.state = calloc((size_t)m->n_params, sizeof *w->h.state);
    for (int i = 0; i < m->n_params; i++) {
        const Param *p = m->params[i];
        RefTensor t;
        assert_int_equal(ref_tensor_init(&t, p->dtype, p->shape), 0);
        w->h.state[i] = calloc((size_t)ref_tensor_numel(&t), 4);
        bool moment_v = strncmp(p->name, "adam.v.", 7) == 0;
        double hv;
        if (param_hparam_value(p, &hv)) { /* the learning rate: its value, as the runtime */
            t.data[0] = hv;
            w->h.state[i][0] = (float)hv;
        } else if (strcmp(p->name, "step") == 0) {
            t.data[0] = 3;
            w->h.state[i][0] = 3;
        } else {
            fill_random(&t, w->h.state[i], &seed, moment_v ? 0.0 : -0.5, moment_v ? 0.01 : 0.5);
        }
        ref_store_put(&w->store, p->name, &t);
    }
    w->n_inputs = f->n_inputs;
    w->in = calloc((size_t)f->n_inputs, sizeof *w->in);
    w->h.inputs = calloc((size_t)f->n_inputs, sizeof *w->h.inputs);
    for (int i = 0; i < f->n_inputs; i++) {
        const Value *v = f->inputs[i];
        assert_int_equal(ref_tensor_init(&w->in[i], v->dtype, v->shape), 0);
        int64_t n = ref_tensor_numel(&w->in[i]);
        w->h.inputs[i] = calloc((size_t)n, 4);
        if (v->dtype == DT_F32) {
            fill_random(&w->in[i], w->h.inputs[i], &seed, -1, 1);
            continue;
        }
        int32_t *ids = w->h.inputs[i];
        for (int64_t j = 0; j < n; j++) {
            ids[j] = j == 2 ? -1 : (int32_t)(uniform(&seed) * 16);
            w->in[i].data[j] = ids[j];
        }
    }
}

static void world_free(World *w, const Module *m) {
    for (int i = 0; i < m->n_params; i++) free(w->h.state[i]);
    free(w->h.state);
    for (int i = 0; i < w->n_inputs; i++) {
        free(w->h.inputs[i]);
        ref_tensor_free(&w->in[i]);
    }
    free(w->h.inputs);
    free(w->in);
    ref_store_free(&w->store);
}

static void assert_close(const char *what, double got, double want, double rtol, double atol) {
    if (fabs(got - want) > atol + rtol * fabs(want))
        fail_msg("%s: got %.9g, want %.9g", what, got, want);
}

/* Runs f both ways; compares plain outputs with the C outputs and "@X" outputs with state X
 * after the run. */
static void compare_entry(Fixture *fx, const char *name, double rtol, double atol) {
    const Function *f = module_find_function(fx->m, name);
    const CapEntry *e = find_entry(fx->a, name);
    World w;
    world_init(&w, fx->m, f, 12345u);
    RefTensor *ref_out = calloc((size_t)f->n_outputs, sizeof *ref_out);
    char err[512];
    if (ref_run(f, w.in, ref_store_lookup, &w.store, ref_out, NULL, err, sizeof err) != 0)
        fail_msg("ref_run: %s", err);
    w.h.outputs = calloc((size_t)f->n_outputs, sizeof *w.h.outputs);
    for (int i = 0; i < f->n_outputs; i++)
        w.h.outputs[i] = calloc((size_t)e->outputs[i].numel, 4);
    run_entry(fx->a, e, &w.h);

    for (int i = 0; i < f->n_outputs; i++) {
        const float *got = f->output_names[i][0] == '@' ? w.h.state[e->output_state[i]]
                                                        : w.h.outputs[i];
        for (int64_t j = 0; j < ref_tensor_numel(&ref_out[i]); j++) {
            char what[256];
            snprintf(what, sizeof what, "%s: %s[%lld]", name, f->output_names[i], (long long)j);
            assert_close(what, got[j], ref_out[i].data[j], rtol, atol);
        }
        ref_tensor_free(&ref_out[i]);
        free(w.h.outputs[i]);
    }
    free(ref_out);
    free(w.h.outputs);
    world_free(&w, fx->m);
}

static void test_forward_matches_reference(void **state) {
    compare_entry(*state, "forward", 1e-5, 1e-6);
}

static void test_train_step_matches_reference(void **state) {
    compare_entry(*state, "train_step", 1e-4, 1e-5);
}

/* state_copies.ir: every write-back is a copy step, and s (which takes the old v) is written
 * before v is overwritten; the values are checked against the reference. */
static void test_state_copies(void **state) {
    Fixture *fx = *state;
    const CapEntry *e = find_entry(fx->a, "update");
    int copy_into[3] = {-1, -1, -1}; /* step index of the copy into w, v, s */
    for (int i = 0; i < e->n_steps; i++) {
        const CapBufRef *dst = &e->steps[i].args[0];
        if (strncmp(fx->a->kernels[e->steps[i].kernel].name, "capc_copy_", 10) == 0 &&
            dst->space == CAP_BUF_STATE)
            copy_into[dst->index] = i;
    }
    for (int k = 0; k < 3; k++) assert_true(copy_into[k] >= 0);
    assert_true(copy_into[2] < copy_into[1]);
    compare_entry(fx, "update", 1e-6, 0);
}

/* ---- scalar arguments of C functions are kernel constants ------------------------------------ */

/* call_args_dedupe.json packaged with -D s2=S2: forward's two steps (one call each). */
static void dedupe_steps(const char *s2, int *n_kernels, int kernel[2], char **src) {
    char path[4096], dir[] = "/tmp/capc-test-package-XXXXXX", out[4200];
    snprintf(path, sizeof path, "%s/%s", source_dir(), MODEL_CALL_ARGS_DEDUPE);
    if (mkdtemp(dir) == NULL) fail_msg("mkdtemp");
    ConfigOverride o = {"s2", s2};
    Diag d = {0};
    Module *m = frontend_load_file(path, &o, 1, &d);
    if (m == NULL) fail_msg("%s", d.msg);
    PipelineOptions popts = {0};
    if (pipeline_run(m, &popts, &d) != 0) fail_msg("%s", d.msg);
    snprintf(out, sizeof out, "%s/cap.so", dir);
    PackageOptions opts = {.output_path = out, .targets = TARGET_CPU, .emit_src_dir = dir};
    if (package_module(m, &opts, &d) != 0) fail_msg("package_module: %s", d.msg);
    void *lib = dlopen(out, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (lib == NULL) fail_msg("dlopen: %s", dlerror());
    const CapArtifact *a = dlsym(lib, CAP_ARTIFACT_SYMBOL);
    assert_non_null(a);
    const CapEntry *fw = find_entry(a, "forward");
    int k = 0;
    for (int i = 0; i < fw->n_steps; i++)
        if (strncmp(a->kernels[fw->steps[i].kernel].name, "capc_copy_", 10) != 0 && k < 2)
            kernel[k++] = fw->steps[i].kernel;
    assert_int_equal(k, 2);
    *n_kernels = a->n_kernels;
    snprintf(path, sizeof path, "%s/cap.c", dir);
    *src = read_text_file(path);
    assert_non_null(*src);
    dlclose(lib);
    module_free(m);
    remove_tree(dir);
}

/* Two calls differing only in their scalar argument are two kernels, each with its literal;
 * with equal scalars deduplication merges them into one. */
static void test_call_args_are_kernel_constants(void **state) {
    (void)state;
    int n_diff, n_same, kernels_diff[2], kernels_same[2];
    char *src_diff, *src_same;
    dedupe_steps("0.2", &n_diff, kernels_diff, &src_diff);
    dedupe_steps("0.1", &n_same, kernels_same, &src_same);
    assert_int_not_equal(kernels_diff[0], kernels_diff[1]);
    assert_int_equal(kernels_same[0], kernels_same[1]);
    assert_int_equal(n_same, n_diff - 1);
    assert_non_null(strstr(src_diff, "0.1f * "));
    assert_non_null(strstr(src_diff, "0.2f * "));
    assert_null(strstr(src_same, "0.2f"));
    free(src_diff);
    free(src_same);
}

/* ---- the cuda target (where NVRTC is installed) ------------------------------------------- */

static bool contains(const unsigned char *data, size_t size, const char *text) {
    size_t n = strlen(text);
    for (size_t i = 0; i + n <= size; i++)
        if (memcmp(data + i, text, n) == 0) return true;
    return false;
}

/* Images linked into cap.so come back byte for byte: cubins are ELF files, PTX is text; per
 * default arch plus PTX one image of every kernel module, arch by arch, and each kernel's
 * name is in the images of the module the kernel table says holds it. */
static void test_cuda_images(void **state) {
    Fixture *fx = *state;
    if (!nvrtc_available()) skip();
    char out[4200];
    snprintf(out, sizeof out, "%s/cuda.so", fx->dir);
    PackageOptions opts = {.output_path = out, .targets = TARGET_ALL};
    Diag d = {0};
    if (package_module(fx->m, &opts, &d) != 0) fail_msg("package_module: %s", d.msg);
    void *lib = dlopen(out, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    assert_non_null(lib);
    const CapArtifact *a = dlsym(lib, CAP_ARTIFACT_SYMBOL);
    assert_non_null(a);
    int n_mod = a->n_cuda_modules;
    assert_true(n_mod >= 1 && n_mod <= a->n_kernels);
    assert_int_equal(a->n_cuda_images, 3 * n_mod);
    static const char *const archs[] = {"sm_80", "sm_90", "ptx"};
    for (int i = 0; i < a->n_cuda_images; i++) {
        const CapCudaImage *img = &a->cuda_images[i];
        assert_string_equal(img->arch, archs[i / n_mod]);
        assert_int_equal(img->module, i % n_mod);
        assert_int_equal(strlen(img->source_hash), 64);
        assert_true(img->size > 16);
        if (i < 2 * n_mod) assert_memory_equal(img->data, "\177ELF", 4);
        else assert_true(contains(img->data, img->size, ".version"));
    }
    for (int k = 0; k < a->n_kernels; k++) {
        const CapKernel *kn = &a->kernels[k];
        assert_non_null(kn->cpu);
        assert_true(kn->cuda_module >= 0 && kn->cuda_module < n_mod);
        for (int arch = 0; arch < 3; arch++) {
            const CapCudaImage *img = &a->cuda_images[arch * n_mod + kn->cuda_module];
            if (!contains(img->data, img->size, kn->name))
                fail_msg("kernel %s is not in the %s image of module %d", kn->name, img->arch,
                         (int)kn->cuda_module);
        }
    }
    dlclose(lib);
}

/* ---- the command line ----------------------------------------------------------------------- */

/* Runs $CAPC_BIN with args; stderr into err_path. Returns the exit status. */
static int run_capc(const char *err_path, const char *const *args) {
    const char *bin = getenv("CAPC_BIN");
    assert_non_null(bin);
    return run_program(bin, args, err_path, NULL);
}

static void test_cli_emit_src(void **state) {
    Fixture *fx = *state;
    char model[4096], out[4300], src[4300], err[4300], path[4400];
    snprintf(model, sizeof model, "%s/%s", source_dir(), fx->model);
    snprintf(out, sizeof out, "%s/x.so", fx->dir);
    snprintf(src, sizeof src, "%s/src/deep", fx->dir);
    snprintf(err, sizeof err, "%s/stderr", fx->dir);
    char emit[4400];
    snprintf(emit, sizeof emit, "--emit-src=%s", src);
    const char *args[] = {model, "-o", out, emit, "--target=cpu", "-D", "batch=4", NULL};
    int status = run_capc(err, args);
    char *text = read_text_file(err);
    if (status != 0) fail_msg("capc exited %d: %s", status, text);
    free(text);
    assert_true(file_exists(out));
    snprintf(path, sizeof path, "%s/cap.c", src);
    char *c = read_text_file(path);
    assert_non_null(c);
    assert_non_null(strstr(c, "const CapArtifact cap_artifact"));
    assert_non_null(strstr(c, "\"-D batch=4\""));
    free(c);
    snprintf(path, sizeof path, "%s/cap.cu", src);
    assert_true(file_exists(path));
}

static void test_cli_unwritable_output(void **state) {
    Fixture *fx = *state;
    char model[4096], err[4300];
    snprintf(model, sizeof model, "%s/%s", source_dir(), fx->model);
    snprintf(err, sizeof err, "%s/stderr", fx->dir);
    const char *args[] = {model, "-o", "/nonexistent-capc-dir/x.so", NULL};
    assert_int_equal(run_capc(err, args), 1);
    char *text = read_text_file(err);
    assert_non_null(strstr(text, "capc: error: cannot write '/nonexistent-capc-dir/x.so': "
                                 "No such file or directory"));
    free(text);
}

static void test_cli_bad_target(void **state) {
    Fixture *fx = *state;
    char model[4096], err[4300];
    snprintf(model, sizeof model, "%s/%s", source_dir(), fx->model);
    snprintf(err, sizeof err, "%s/stderr", fx->dir);
    const char *args[] = {model, "--target=tpu", NULL};
    assert_int_equal(run_capc(err, args), 2);
    char *text = read_text_file(err);
    assert_non_null(strstr(text, "--target"));
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_table),
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_dedupe),
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_train_step_matches_reference),
        cmocka_unit_test(test_cuda_images),
        cmocka_unit_test(test_cli_emit_src),
        cmocka_unit_test(test_cli_unwritable_output),
        cmocka_unit_test(test_cli_bad_target),
    };
    const struct CMUnitTest ir_tests[] = {
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_state_copies),
    };
    const struct CMUnitTest call_args_tests[] = {
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_dedupe),
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_train_step_matches_reference),
        cmocka_unit_test(test_call_args_are_kernel_constants),
        cmocka_unit_test(test_cuda_images),
    };
    int failed = cmocka_run_group_tests_name("package_elementwise", tests, setup_elementwise,
                                             teardown);
    failed += cmocka_run_group_tests_name("package_call_args", call_args_tests, setup_call_args,
                                          teardown);
    failed += cmocka_run_group_tests_name("package_mlp", tests, setup_mlp, teardown);
    return failed + cmocka_run_group_tests_name("state_copies", ir_tests, setup_state_copies,
                                                teardown);
}
