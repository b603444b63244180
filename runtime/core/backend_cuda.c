/* backend_cuda.c — the cuda backend: CapBackendOps over the CUDA driver API (cuda_driver.h,
 * opened with dlopen: nothing links libcuda, and without a GPU the backend says why).
 *
 * open: the driver's primary context on device 0 (shared with anything else in the process
 * that uses the runtime API, e.g. PyTorch), the artifact's CUDA modules (capc compiles the
 * kernels in groups, one module each) loaded from the images of one arch, and every kernel's
 * CUfunction looked up once in its module. Arch choice: the exact sm_XY cubins; else cubins
 * of the same major and a lower minor (binary compatible); else the PTX, JIT-compiled by the
 * driver. CAP_CUDA_IMAGE=ptx (or an arch) forces one: a test hook for the JIT path.
 *
 * Memory: device pointers travel through the session as void * holding the CUdeviceptr
 * (both are 64-bit), so the session's arena + offset arithmetic works unchanged. Allocations
 * are zero-filled. Freed blocks go to a small cache and are reused for the same size: the
 * session allocates its input/output copies on every run, and cuMemFree synchronizes the
 * device, which would cost a stall per tensor per step.
 *
 * Running: a step is one cuLaunchKernel on the default stream (grid, block and dynamic shared
 * memory from the artifact; params point at each argument's CUdeviceptr). Launch errors are
 * reported at once; execution errors at the entry's one synchronize, or after the failing
 * kernel when CAP_CUDA_SYNC=1 (a debugging aid: synchronizes after every launch). */
#include "cap_internal.h"
#include "cuda_driver.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS 32
#define CACHE_MAX_BYTES ((size_t)64 << 20)

typedef struct Block {
    CUdeviceptr ptr;
    size_t bytes;
} Block;

typedef struct CudaCtx {
    const CuDriver *d;
    CUdevice dev;
    CUcontext cu;
    CUmodule *mods;     /* per CUDA module of the artifact */
    int n_mods;
    const CapArtifact *a;
    CUfunction *fns;    /* per kernel */
    CUdeviceptr *vals;  /* scratch: one step's argument values */
    void **params;      /* scratch: params[i] = &vals[i], NULL-terminated */
    int sync_each;
    Block *live; /* every allocation not yet freed */
    int n_live, cap_live;
    Block cache[CACHE_SLOTS];
    int n_cache;
    char desc[200];
} CudaCtx;

static CUdeviceptr dptr(const void *p) { return (CUdeviceptr)(uintptr_t)p; }

static CapStatus fail_cu(const CudaCtx *c, CUresult rc, const char *call, char *err,
                         size_t err_size) {
    cu_fail(c->d, rc, call, err, err_size);
    return CAP_E_BACKEND;
}

/* ---- image choice -------------------------------------------------------------------------- */

static int arch_of(const char *arch, int *major, int *minor) {
    int v = 0;
    if (strncmp(arch, "sm_", 3) != 0 || sscanf(arch + 3, "%d", &v) != 1 || v < 10) return -1;
    *major = v / 10;
    *minor = v % 10;
    return 0;
}

static const CapCudaImage *find_image(const CapArtifact *a, const char *arch, int module) {
    for (int i = 0; i < a->n_cuda_images; i++)
        if (strcmp(a->cuda_images[i].arch, arch) == 0 && a->cuda_images[i].module == module)
            return &a->cuda_images[i];
    return NULL;
}

/* The best arch for compute capability major.minor ("ptx" when no cubin fits), or NULL. */
static const char *pick_arch(const CapArtifact *a, int major, int minor) {
    const char *force = getenv("CAP_CUDA_IMAGE");
    if (force && *force) return find_image(a, force, 0) ? force : NULL;
    const char *best = NULL;
    int best_minor = -1;
    for (int i = 0; i < a->n_cuda_images; i++) {
        int ma, mi;
        if (arch_of(a->cuda_images[i].arch, &ma, &mi) != 0 || ma != major || mi > minor) continue;
        if (mi > best_minor) best = a->cuda_images[i].arch, best_minor = mi;
    }
    return best ? best : find_image(a, "ptx", 0) ? "ptx" : NULL;
}

static void list_archs(const CapArtifact *a, char *buf, size_t size) {
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < a->n_cuda_images && n < size; i++)
        if (a->cuda_images[i].module == 0)
            n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", a->cuda_images[i].arch);
}

/* Loads one image as module `module`. PTX must be NUL-terminated for the driver, and the
 * artifact stores images sized exactly, so PTX goes through a terminated copy. */
static CapStatus load_image(CudaCtx *c, const CapCudaImage *img, int module, char *err,
                            size_t err_size) {
    int is_ptx = strcmp(img->arch, "ptx") == 0;
    unsigned char *copy = NULL;
    if (is_ptx) {
        copy = malloc(img->size + 1);
        if (!copy) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
        memcpy(copy, img->data, img->size);
        copy[img->size] = 0;
    }
    CUresult rc = c->d->ModuleLoadData(&c->mods[module], is_ptx ? (const void *)copy : img->data);
    free(copy);
    if (rc != 0) {
        char call[96];
        snprintf(call, sizeof call, "cuModuleLoadData(%s image of module %d)", img->arch, module);
        return fail_cu(c, rc, call, err, err_size);
    }
    return CAP_OK;
}

/* Loads every module from the images of the chosen arch. */
static CapStatus load_modules(CudaCtx *c, const CapModel *m, int major, int minor, char *err,
                              size_t err_size) {
    const char *arch = pick_arch(c->a, major, minor);
    if (!arch) {
        char have[128];
        list_archs(c->a, have, sizeof have);
        return cap_fail(err, err_size, CAP_E_BACKEND,
                        "%s has no CUDA image this GPU (sm_%d%d) can run (it holds: %s); "
                        "recompile with capc --target=all (sm_%d%d cubin or PTX)",
                        cap_model_path(m), major, minor, have[0] ? have : "none", major, minor);
    }
    c->n_mods = c->a->n_cuda_modules;
    c->mods = calloc((size_t)(c->n_mods > 0 ? c->n_mods : 1), sizeof *c->mods);
    if (!c->mods) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    for (int i = 0; i < c->n_mods; i++) {
        const CapCudaImage *img = find_image(c->a, arch, i);
        if (!img)
            return cap_fail(err, err_size, CAP_E_BACKEND, "%s: no %s image of CUDA module %d",
                            cap_model_path(m), arch, i);
        CapStatus st = load_image(c, img, i, err, err_size);
        if (st) return st;
    }
    size_t n = strlen(c->desc);
    snprintf(c->desc + n, sizeof c->desc - n, ", %s %s", arch,
             strcmp(arch, "ptx") == 0 ? "JIT" : "cubin");
    return CAP_OK;
}

/* Looks every kernel up once, and raises the dynamic shared memory limit where a kernel needs
 * more than the default 48 KiB. */
static CapStatus find_functions(CudaCtx *c, char *err, size_t err_size) {
    const CapArtifact *a = c->a;
    int max_args = 1;
    for (int i = 0; i < a->n_kernels; i++)
        if (a->kernels[i].n_args > max_args) max_args = a->kernels[i].n_args;
    c->fns = calloc((size_t)(a->n_kernels ? a->n_kernels : 1), sizeof *c->fns);
    c->vals = calloc((size_t)max_args, sizeof *c->vals);
    /* One spare NULL slot: the driver ignores it; the test driver counts arguments by it. */
    c->params = calloc((size_t)max_args + 1, sizeof *c->params);
    if (!c->fns || !c->vals || !c->params)
        return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    for (int i = 0; i < max_args; i++) c->params[i] = &c->vals[i];
    for (int i = 0; i < a->n_kernels; i++) {
        const CapKernel *k = &a->kernels[i];
        char call[300];
        snprintf(call, sizeof call, "cuModuleGetFunction(%s)", k->name);
        if (k->cuda_module < 0 || k->cuda_module >= c->n_mods)
            return cap_fail(err, err_size, CAP_E_BACKEND, "kernel %s: CUDA module %d of %d",
                            k->name, (int)k->cuda_module, c->n_mods);
        CUresult rc = c->d->ModuleGetFunction(&c->fns[i], c->mods[k->cuda_module], k->name);
        if (rc != 0) return fail_cu(c, rc, call, err, err_size);
        if (k->cuda_shared_bytes > 48 * 1024) {
            snprintf(call, sizeof call, "cuFuncSetAttribute(%s, max dynamic shared %d)", k->name,
                     (int)k->cuda_shared_bytes);
            if (!c->d->FuncSetAttribute)
                return cap_fail(err, err_size, CAP_E_BACKEND, "%s: driver too old", call);
            rc = c->d->FuncSetAttribute(c->fns[i], CU_FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        k->cuda_shared_bytes);
            if (rc != 0) return fail_cu(c, rc, call, err, err_size);
        }
    }
    return CAP_OK;
}

/* ---- the table ----------------------------------------------------------------------------- */

static void cuda_close(void *ctx);

static CapStatus cuda_open(const CapModel *m, void **ctx, char *err, size_t err_size) {
    *ctx = NULL;
    const CapArtifact *a = cap_model_artifact(m);
    if (a->n_cuda_images == 0)
        return cap_fail(err, err_size, CAP_E_BACKEND,
                        "%s has no CUDA images: recompile with capc --target=all (or cuda) on a "
                        "machine with NVRTC", cap_model_path(m));
    CudaCtx *c = calloc(1, sizeof *c);
    if (!c) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    c->a = a;
    const char *se = getenv("CAP_CUDA_SYNC");
    c->sync_each = se && *se && strcmp(se, "0") != 0;
    char name[128] = "";
    int major = 0, minor = 0;
    CapStatus st = CAP_OK;
    if (cu_driver_open(&c->d, err, err_size) != 0 ||
        cu_device_first(c->d, &c->dev, name, sizeof name, &major, &minor, err, err_size) != 0) {
        free(c);
        return CAP_E_BACKEND;
    }
    snprintf(c->desc, sizeof c->desc, "%s, sm_%d%d", name, major, minor);
    CUresult rc = c->d->PrimaryCtxRetain(&c->cu, c->dev);
    if (rc != 0) {
        st = fail_cu(c, rc, "cuDevicePrimaryCtxRetain", err, err_size);
        free(c);
        return st;
    }
    rc = c->d->CtxSetCurrent(c->cu);
    if (rc != 0) st = fail_cu(c, rc, "cuCtxSetCurrent", err, err_size);
    if (!st) st = load_modules(c, m, major, minor, err, err_size);
    if (!st) st = find_functions(c, err, err_size);
    if (st) {
        cuda_close(c);
        return st;
    }
    *ctx = c;
    return CAP_OK;
}

static void cuda_close(void *ctx) {
    CudaCtx *c = ctx;
    if (!c) return;
    c->d->CtxSetCurrent(c->cu);
    for (int i = 0; i < c->n_cache; i++) c->d->MemFree(c->cache[i].ptr);
    for (int i = 0; i < c->n_live; i++) c->d->MemFree(c->live[i].ptr);
    free(c->live);
    for (int i = 0; i < c->n_mods; i++)
        if (c->mods[i]) c->d->ModuleUnload(c->mods[i]);
    free(c->mods);
    c->d->PrimaryCtxRelease(c->dev);
    free(c->fns);
    free(c->vals);
    free(c->params);
    free(c);
}

/* Records a live block; blocks are looked up by pointer when freed (cuda_free gets no size). */
static CapStatus track(CudaCtx *c, CUdeviceptr p, size_t bytes, char *err, size_t err_size) {
    if (c->n_live == c->cap_live) {
        int cap = c->cap_live ? c->cap_live * 2 : 256;
        Block *b = realloc(c->live, (size_t)cap * sizeof *b);
        if (!b) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
        c->live = b;
        c->cap_live = cap;
    }
    c->live[c->n_live++] = (Block){p, bytes};
    return CAP_OK;
}

static CapStatus cuda_alloc(void *ctx, size_t bytes, void **ptr, char *err, size_t err_size) {
    CudaCtx *c = ctx;
    CUdeviceptr p = 0;
    c->d->CtxSetCurrent(c->cu); /* a session may be used from another thread than open's */
    for (int i = 0; i < c->n_cache && !p; i++)
        if (c->cache[i].bytes == bytes) {
            p = c->cache[i].ptr;
            c->cache[i] = c->cache[--c->n_cache];
        }
    CUresult rc = 0;
    if (!p && (rc = c->d->MemAlloc(&p, bytes)) != 0) {
        char call[64];
        snprintf(call, sizeof call, "cuMemAlloc_v2(%zu bytes)", bytes);
        return fail_cu(c, rc, call, err, err_size);
    }
    CapStatus st = CAP_OK;
    if ((rc = c->d->MemsetD8(p, 0, bytes)) != 0) st = fail_cu(c, rc, "cuMemsetD8_v2", err, err_size);
    if (!st) st = track(c, p, bytes, err, err_size);
    if (st) {
        c->d->MemFree(p);
        return st;
    }
    *ptr = (void *)(uintptr_t)p;
    return CAP_OK;
}

/* Small blocks (inputs/outputs of one run) go to the cache while it has room; the rest, and
 * everything at close, is released. */
static void cuda_free(void *ctx, void *ptr) {
    CudaCtx *c = ctx;
    CUdeviceptr p = dptr(ptr);
    for (int i = c->n_live - 1; i >= 0; i--) {
        if (c->live[i].ptr != p) continue;
        Block b = c->live[i];
        c->live[i] = c->live[--c->n_live];
        if (c->n_cache < CACHE_SLOTS && b.bytes <= CACHE_MAX_BYTES) c->cache[c->n_cache++] = b;
        else c->d->MemFree(p);
        return;
    }
}

static CapStatus cuda_copy_in(void *ctx, void *dst, const void *src, size_t bytes, char *err,
                              size_t err_size) {
    CudaCtx *c = ctx;
    if (!bytes) return CAP_OK;
    c->d->CtxSetCurrent(c->cu);
    CUresult rc = c->d->MemcpyHtoD(dptr(dst), src, bytes);
    return rc ? fail_cu(c, rc, "cuMemcpyHtoD_v2", err, err_size) : CAP_OK;
}

static CapStatus cuda_copy_out(void *ctx, void *dst, const void *src, size_t bytes, char *err,
                               size_t err_size) {
    CudaCtx *c = ctx;
    if (!bytes) return CAP_OK;
    c->d->CtxSetCurrent(c->cu);
    CUresult rc = c->d->MemcpyDtoH(dst, dptr(src), bytes);
    return rc ? fail_cu(c, rc, "cuMemcpyDtoH_v2", err, err_size) : CAP_OK;
}

static CapStatus cuda_sync(void *ctx, char *err, size_t err_size) {
    CudaCtx *c = ctx;
    CUresult rc = c->d->CtxSynchronize();
    return rc ? fail_cu(c, rc, "cuCtxSynchronize (after the entry's kernels)", err, err_size)
              : CAP_OK;
}

static CapStatus cuda_run_step(void *ctx, const CapKernel *k, void *const *bufs, char *err,
                               size_t err_size) {
    CudaCtx *c = ctx;
    if (k->cuda_grid <= 0 || k->cuda_block <= 0) return CAP_OK; /* an empty tensor: no work */
    if (k->cuda_grid > 0x7fffffff)
        return cap_fail(err, err_size, CAP_E_BACKEND, "kernel %s: grid %lld exceeds 2^31-1 blocks",
                        k->name, (long long)k->cuda_grid);
    for (int i = 0; i < k->n_args; i++) c->vals[i] = dptr(bufs[i]);
    CUresult rc = c->d->LaunchKernel(c->fns[k - c->a->kernels], (unsigned)k->cuda_grid, 1, 1,
                                     (unsigned)k->cuda_block, 1, 1,
                                     (unsigned)k->cuda_shared_bytes, NULL, c->params, NULL);
    if (!rc && c->sync_each) rc = c->d->CtxSynchronize();
    if (rc) {
        char call[300];
        snprintf(call, sizeof call, "cuLaunchKernel(%s, grid %lld, block %d)%s", k->name,
                 (long long)k->cuda_grid, (int)k->cuda_block,
                 c->sync_each ? " or its execution" : "");
        return fail_cu(c, rc, call, err, err_size);
    }
    return CAP_OK;
}

static void cuda_describe(void *ctx, char *buf, size_t size) {
    snprintf(buf, size, "%s", ((const CudaCtx *)ctx)->desc);
}

const CapBackendOps cap_backend_cuda = {
    .name = "cuda",
    .host_memory = 0,
    .open = cuda_open,
    .close = cuda_close,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .copy_in = cuda_copy_in,
    .copy_out = cuda_copy_out,
    .run_step = cuda_run_step,
    .sync = cuda_sync,
    .describe = cuda_describe,
};

/* ---- probing ------------------------------------------------------------------------------- */

CapStatus cap_cuda_probe(char *why, size_t why_size) {
    const CuDriver *d;
    CUdevice dev;
    char name[128];
    int major, minor;
    if (cu_driver_open(&d, why, why_size) != 0 ||
        cu_device_first(d, &dev, name, sizeof name, &major, &minor, why, why_size) != 0)
        return CAP_E_BACKEND;
    return cap_fail(why, why_size, CAP_OK, "available: %s, sm_%d%d", name, major, minor);
}
