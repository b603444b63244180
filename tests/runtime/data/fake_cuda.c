/* fake_cuda.c — a stand-in libcuda.so for machines without a GPU, so that the cuda backend's
 * plumbing (driver loading, image choice, function lookup, device memory, copies, launches,
 * the session's non-host-memory path) runs under the sanitizers here.
 *
 * "Device memory" is host memory; a CUdeviceptr is the host address. cuModuleGetFunction
 * looks the kernel's name up in the cap.so named by $FAKE_CUDA_KERNELS (its CPU kernels have
 * the CUDA kernels' names and argument order), and cuLaunchKernel calls that C function once
 * with the launch's pointer arguments, ignoring the grid: results equal the cpu backend's bit
 * for bit. Reports an sm_90 device named "fake GPU". Counts live allocations
 * (fake_cuda_live_allocs) so a test can see that a session frees what it allocated. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void (*KernelFn)(void *const *bufs);

enum { OK = 0, E_INVALID_VALUE = 1, E_OUT_OF_MEMORY = 2, E_NOT_FOUND = 500 };

static void *kernels_lib;
static int live_allocs, module_loads;

int fake_cuda_live_allocs(void) { return live_allocs; }
int fake_cuda_module_loads(void) { return module_loads; }

CUresult cuInit(unsigned flags) { return flags ? E_INVALID_VALUE : OK; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return OK; }
CUresult cuDeviceGet(int *dev, int ordinal) { *dev = ordinal; return ordinal ? E_INVALID_VALUE : OK; }
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
    *v = attr == 75 ? 9 : attr == 76 ? 0 : attr == 97 ? 232448 : 0;
    return OK;
}
CUresult cuDeviceGetName(char *name, int len, int dev) {
    strncpy(name, "fake GPU", (size_t)len);
    return OK;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { *ctx = (void *)&kernels_lib; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(int dev) { return OK; }
CUresult cuCtxSetCurrent(void *ctx) { return OK; }
CUresult cuCtxSynchronize(void) { return OK; }

CUresult cuModuleLoadData(void **mod, const void *image) {
    if (!image) return E_INVALID_VALUE;
    const char *path = getenv("FAKE_CUDA_KERNELS");
    if (!kernels_lib && path) kernels_lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!kernels_lib) return E_NOT_FOUND;
    module_loads++;
    *mod = kernels_lib;
    return OK;
}
CUresult cuModuleUnload(void *mod) { return OK; }
CUresult cuModuleGetFunction(void **fn, void *mod, const char *name) {
    *fn = dlsym(mod, name);
    return *fn ? OK : E_NOT_FOUND;
}
CUresult cuFuncSetAttribute(void *fn, int attr, int value) { return OK; }

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
    void *m = malloc(bytes ? bytes : 1);
    if (!m) return E_OUT_OF_MEMORY;
    memset(m, 0xA5, bytes); /* like fresh device memory: not zero */
    live_allocs++;
    *p = (CUdeviceptr)(uintptr_t)m;
    return OK;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
    if (!p) return E_INVALID_VALUE;
    live_allocs--;
    free((void *)(uintptr_t)p);
    return OK;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) {
    memcpy((void *)(uintptr_t)d, s, n);
    return OK;
}
CUresult cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) {
    memcpy(d, (const void *)(uintptr_t)s, n);
    return OK;
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) {
    memmove((void *)(uintptr_t)d, (const void *)(uintptr_t)s, n);
    return OK;
}
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) {
    memset((void *)(uintptr_t)d, v, n);
    return OK;
}

CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, void *stream, void **params, void **extra) {
    if (!fn || !params || gx == 0 || bx == 0 || bx > 1024) return E_INVALID_VALUE;
    void *bufs[64];
    for (int i = 0; i < 64; i++) bufs[i] = NULL;
    /* The kernel's argument count is not passed: copy while the params look like pointers.
     * The backend's params array holds exactly n_args entries, read no further than needed. */
    for (int i = 0; i < 64 && params[i]; i++) {
        bufs[i] = (void *)(uintptr_t) * (const CUdeviceptr *)params[i];
        if (!bufs[i]) break;
    }
    KernelFn k;
    memcpy(&k, &fn, sizeof k);
    k(bufs);
    return OK;
}

CUresult cuGetErrorString(CUresult rc, const char **s) {
    *s = rc == E_NOT_FOUND ? "named symbol not found" : rc ? "fake error" : "no error";
    return OK;
}
CUresult cuGetErrorName(CUresult rc, const char **s) {
    *s = rc == E_NOT_FOUND ? "CUDA_ERROR_NOT_FOUND" : rc ? "CUDA_ERROR_FAKE" : "CUDA_SUCCESS";
    return OK;
}
