/* cuda_smoke.c — device check of a cap.so's CUDA side (needs a GPU; not run by ctest).
 *
 * Loads cap.so, loads its CUDA images for IMAGE ("sm_90", "sm_80" or "ptx": one per CUDA
 * module) with the driver API (libcuda opened with dlopen), and runs entry points twice from the same random state
 * and inputs: on the CPU (the kernels' C functions) and on the GPU (every step launched with
 * the kernel's fixed grid/block/shared bytes over device buffers resolved from the same
 * CapBufRefs). Prints the largest difference of every output and of the state after the
 * run, and exits 1 if one exceeds the tolerance. It checks the packaging's CUDA half: images
 * byte for byte, kernel names, argument order and types, launch geometry, buffer refs.
 *
 *   cc -std=c11 -O2 -D_POSIX_C_SOURCE=200809L -Iruntime -o cuda_smoke \
 *      tests/codegen/cuda_smoke.c -ldl -lm
 *   ./cuda_smoke cap.so sm_90 forward train_step
 *
 * i32 inputs get ids in [0, 16): pass only entries whose i32 inputs accept that (forward,
 * eval_loss, train_step of the test models and the captioners). Every state tensor is random,
 * derived state (folded BatchNorms) included, and `fold` is not run: both sides compute from
 * the same numbers, which is all a CPU-vs-GPU comparison needs.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cap_artifact.h"

typedef unsigned long long Dptr;
typedef int (*CuInit)(unsigned);
typedef int (*CuDeviceGet)(int *, int);
typedef int (*CuCtxCreate)(void **, unsigned, int);
typedef int (*CuModuleLoadData)(void **, const void *);
typedef int (*CuModuleGetFunction)(void **, void *, const char *);
typedef int (*CuMemAlloc)(Dptr *, size_t);
typedef int (*CuMemFree)(Dptr);
typedef int (*CuMemcpyHtoD)(Dptr, const void *, size_t);
typedef int (*CuMemcpyDtoH)(void *, Dptr, size_t);
typedef int (*CuLaunchKernel)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              unsigned, void *, void **, void **);
typedef int (*CuCtxSynchronize)(void);

static struct {
    CuInit init;
    CuDeviceGet device_get;
    CuCtxCreate ctx_create;
    CuModuleLoadData module_load;
    CuModuleGetFunction get_function;
    CuMemAlloc alloc;
    CuMemFree free_;
    CuMemcpyHtoD htod;
    CuMemcpyDtoH dtoh;
    CuLaunchKernel launch;
    CuCtxSynchronize sync;
} cu;

#define CHECK(call)                                                                        \
    do {                                                                                   \
        int rc_ = (call);                                                                  \
        if (rc_ != 0) {                                                                    \
            fprintf(stderr, "cuda_smoke: %s failed: CUDA error %d\n", #call, rc_);         \
            exit(2);                                                                       \
        }                                                                                  \
    } while (0)

static void *need(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    if (p == NULL) {
        fprintf(stderr, "cuda_smoke: libcuda lacks %s\n", name);
        exit(2);
    }
    return p;
}

static void open_cuda(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (lib == NULL) {
        fprintf(stderr, "cuda_smoke: %s\n", dlerror());
        exit(2);
    }
    cu.init = (CuInit)need(lib, "cuInit");
    cu.device_get = (CuDeviceGet)need(lib, "cuDeviceGet");
    cu.ctx_create = (CuCtxCreate)need(lib, "cuCtxCreate_v2");
    cu.module_load = (CuModuleLoadData)need(lib, "cuModuleLoadData");
    cu.get_function = (CuModuleGetFunction)need(lib, "cuModuleGetFunction");
    cu.alloc = (CuMemAlloc)need(lib, "cuMemAlloc_v2");
    cu.free_ = (CuMemFree)need(lib, "cuMemFree_v2");
    cu.htod = (CuMemcpyHtoD)need(lib, "cuMemcpyHtoD_v2");
    cu.dtoh = (CuMemcpyDtoH)need(lib, "cuMemcpyDtoH_v2");
    cu.launch = (CuLaunchKernel)need(lib, "cuLaunchKernel");
    cu.sync = (CuCtxSynchronize)need(lib, "cuCtxSynchronize");
}

static uint32_t rng_state = 12345u;
static float uniform(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 16777216.0f;
}

/* One side's memory: host pointers (CPU run) or device pointers (GPU run). */
typedef struct Side {
    void **state, **inputs, **outputs, *arena;
} Side;

/* A reference's address: its tensor's (or the arena's), plus its offset in bytes (a view may
 * start inside its tensor, in every space). */
static void *place(const Side *s, const CapBufRef *r) {
    char *base;
    switch (r->space) {
    case CAP_BUF_ARENA: base = s->arena; break;
    case CAP_BUF_STATE: base = s->state[r->index]; break;
    case CAP_BUF_INPUT: base = s->inputs[r->index]; break;
    default: base = s->outputs[r->index]; break;
    }
    return base + r->offset;
}

static void run_cpu(const CapArtifact *a, const CapEntry *e, const Side *s) {
    for (int i = 0; i < e->n_steps; i++) {
        void *bufs[64];
        for (int j = 0; j < e->steps[i].n_args; j++) bufs[j] = place(s, &e->steps[i].args[j]);
        a->kernels[e->steps[i].kernel].cpu(bufs);
    }
}

static void run_gpu(const CapArtifact *a, const CapEntry *e, const Side *s, void **fns) {
    for (int i = 0; i < e->n_steps; i++) {
        const CapKernel *k = &a->kernels[e->steps[i].kernel];
        Dptr ptrs[64];
        void *params[64];
        for (int j = 0; j < e->steps[i].n_args; j++) {
            ptrs[j] = (Dptr)(uintptr_t)place(s, &e->steps[i].args[j]);
            params[j] = &ptrs[j];
        }
        int rc = cu.launch(fns[e->steps[i].kernel], (unsigned)k->cuda_grid, 1, 1,
                           (unsigned)k->cuda_block, 1, 1, (unsigned)k->cuda_shared_bytes, NULL,
                           params, NULL);
        if (rc != 0) {
            fprintf(stderr, "cuda_smoke: launching %s (step %d) failed: %d\n", k->name, i, rc);
            exit(2);
        }
    }
    CHECK(cu.sync());
}

static int64_t tensor_bytes(const CapTensorInfo *t) { return t->numel * 4; }

static void *device_copy(const void *host, size_t bytes) {
    Dptr d;
    CHECK(cu.alloc(&d, bytes ? bytes : 4));
    if (bytes) CHECK(cu.htod(d, host, bytes));
    return (void *)(uintptr_t)d;
}

static void fill(void *p, const CapTensorInfo *t) {
    for (int64_t i = 0; i < t->numel; i++) {
        if (t->dtype == CAP_DT_I32) ((int32_t *)p)[i] = (int32_t)(uniform() * 16);
        else ((float *)p)[i] = uniform() - 0.5f;
    }
    /* Adam's second moments must not be negative; the step counter starts at 3. */
    if (strncmp(t->name, "adam.v.", 7) == 0)
        for (int64_t i = 0; i < t->numel; i++) ((float *)p)[i] = fabsf(((float *)p)[i]) * 0.01f;
    if (strcmp(t->name, "step") == 0) ((float *)p)[0] = 3;
}

/* Largest |cpu - gpu| / (1 + |cpu|) over a tensor (i32 compared exactly). */
static double compare(const void *cpu, Dptr gpu, const CapTensorInfo *t) {
    size_t bytes = (size_t)tensor_bytes(t);
    void *back = malloc(bytes ? bytes : 4);
    if (bytes) CHECK(cu.dtoh(back, gpu, bytes));
    double worst = 0;
    for (int64_t i = 0; i < t->numel; i++) {
        double x, y;
        if (t->dtype == CAP_DT_I32) x = ((const int32_t *)cpu)[i], y = ((int32_t *)back)[i];
        else x = ((const float *)cpu)[i], y = ((float *)back)[i];
        double err = isnan(x) && isnan(y) ? 0 : fabs(x - y) / (1 + fabs(x));
        if (!(err <= worst)) worst = err; /* NaN counts as worst */
    }
    free(back);
    return worst;
}

static int check_entry(const CapArtifact *a, const CapEntry *e, void **fns, double tol) {
    Side h = {0}, d = {0};
    h.state = calloc((size_t)a->n_state, sizeof *h.state);
    d.state = calloc((size_t)a->n_state, sizeof *d.state);
    for (int i = 0; i < a->n_state; i++) {
        h.state[i] = malloc((size_t)tensor_bytes(&a->state[i].t) + 4);
        fill(h.state[i], &a->state[i].t);
        d.state[i] = device_copy(h.state[i], (size_t)tensor_bytes(&a->state[i].t));
    }
    h.inputs = calloc((size_t)e->n_inputs + 1, sizeof *h.inputs);
    d.inputs = calloc((size_t)e->n_inputs + 1, sizeof *d.inputs);
    for (int i = 0; i < e->n_inputs; i++) {
        h.inputs[i] = malloc((size_t)tensor_bytes(&e->inputs[i]) + 4);
        fill(h.inputs[i], &e->inputs[i]);
        d.inputs[i] = device_copy(h.inputs[i], (size_t)tensor_bytes(&e->inputs[i]));
    }
    h.outputs = calloc((size_t)e->n_outputs + 1, sizeof *h.outputs);
    d.outputs = calloc((size_t)e->n_outputs + 1, sizeof *d.outputs);
    for (int i = 0; i < e->n_outputs; i++) {
        h.outputs[i] = calloc(1, (size_t)tensor_bytes(&e->outputs[i]) + 4);
        d.outputs[i] = device_copy(h.outputs[i], (size_t)tensor_bytes(&e->outputs[i]));
    }
    h.arena = calloc(1, (size_t)e->arena_bytes + 64);
    d.arena = device_copy(h.arena, (size_t)e->arena_bytes);

    run_cpu(a, e, &h);
    run_gpu(a, e, &d, fns);

    int bad = 0;
    double worst_state = 0;
    for (int i = 0; i < e->n_outputs; i++) {
        if (e->output_state[i] >= 0) continue;
        double err = compare(h.outputs[i], (Dptr)(uintptr_t)d.outputs[i], &e->outputs[i]);
        printf("  %s output %s: max rel diff %.3g\n", e->name, e->outputs[i].name, err);
        bad |= !(err <= tol);
    }
    for (int i = 0; i < a->n_state; i++) {
        double err = compare(h.state[i], (Dptr)(uintptr_t)d.state[i], &a->state[i].t);
        if (!(err <= tol)) printf("  %s state %s: max rel diff %.3g\n", e->name, a->state[i].t.name, err);
        if (!(err <= worst_state)) worst_state = err;
        bad |= !(err <= tol);
    }
    printf("  %s: %d steps, state after the run: max rel diff %.3g -> %s\n", e->name,
           e->n_steps, worst_state, bad ? "FAIL" : "ok");
    return bad; /* buffers are left to process exit */
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: cuda_smoke cap.so IMAGE ENTRY...\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_NODELETE);
    if (lib == NULL) {
        fprintf(stderr, "cuda_smoke: %s\n", dlerror());
        return 2;
    }
    const CapArtifact *a = dlsym(lib, CAP_ARTIFACT_SYMBOL);
    int n_mod = a != NULL ? a->n_cuda_modules : 0;
    const CapCudaImage **img = calloc((size_t)(n_mod > 0 ? n_mod : 1), sizeof *img);
    size_t bytes = 0;
    for (int i = 0; a != NULL && i < a->n_cuda_images; i++)
        if (strcmp(a->cuda_images[i].arch, argv[2]) == 0 && a->cuda_images[i].module >= 0 &&
            a->cuda_images[i].module < n_mod)
            img[a->cuda_images[i].module] = &a->cuda_images[i];
    for (int m = 0; m < n_mod; m++)
        if (img[m] == NULL) n_mod = -1;
    if (n_mod <= 0) {
        fprintf(stderr, "cuda_smoke: no complete set of %s images in %s\n", argv[2], argv[1]);
        return 2;
    }
    open_cuda();
    CHECK(cu.init(0));
    int dev;
    void *ctx;
    CHECK(cu.device_get(&dev, 0));
    CHECK(cu.ctx_create(&ctx, 0, dev));
    void **modules = calloc((size_t)n_mod, sizeof *modules);
    for (int m = 0; m < n_mod; m++) {
        /* PTX must be NUL-terminated text: NVRTC's PTX size counts the NUL, so it is linked in */
        if (strcmp(argv[2], "ptx") == 0 && img[m]->data[img[m]->size - 1] != '\0') {
            fprintf(stderr, "cuda_smoke: the PTX image of module %d is not NUL-terminated\n", m);
            return 1;
        }
        CHECK(cu.module_load(&modules[m], img[m]->data));
        bytes += img[m]->size;
    }
    void **fns = calloc((size_t)a->n_kernels, sizeof *fns);
    for (int k = 0; k < a->n_kernels; k++)
        CHECK(cu.get_function(&fns[k], modules[a->kernels[k].cuda_module], a->kernels[k].name));
    printf("%s: %s images (%d modules, %zu bytes), %d kernels loaded\n", a->model_name, argv[2],
           n_mod, bytes, a->n_kernels);
    int bad = 0;
    for (int i = 3; i < argc; i++) {
        const CapEntry *e = NULL;
        for (int j = 0; j < a->n_entries; j++)
            if (strcmp(a->entries[j].name, argv[i]) == 0) e = &a->entries[j];
        if (e == NULL) {
            fprintf(stderr, "cuda_smoke: no entry %s\n", argv[i]);
            return 2;
        }
        bad |= check_entry(a, e, fns, 2e-3);
    }
    return bad;
}
