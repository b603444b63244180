/* cuda_driver.h — the CUDA driver API, opened with dlopen so that nothing links libcuda and
 * every program runs (and says why CUDA is unusable) on a machine without a GPU.
 *
 * Only the handful of types the runtime needs are declared here, as the driver's C ABI has
 * them (CUresult and CUdevice are ints, handles are opaque pointers, device pointers are
 * 64-bit integers), so no CUDA header is needed to build. Shared by the cuda backend
 * (backend_cuda.c) and the GPU tests, which compile cuda_driver.c into themselves.
 */
#ifndef CAP_CUDA_DRIVER_H
#define CAP_CUDA_DRIVER_H

#include <stddef.h>

typedef int CUresult; /* 0 = CUDA_SUCCESS */
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;

/* The CUdevice_attribute / CUfunction_attribute values used (stable across CUDA versions). */
enum {
    CU_ATTR_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_ATTR_COMPUTE_CAPABILITY_MINOR = 76,
    CU_ATTR_MAX_SHARED_PER_BLOCK_OPTIN = 97,
    CU_FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
};

typedef struct CuDriver {
    char path[256]; /* what was dlopen'ed */
    void *lib;
    CUresult (*Init)(unsigned flags);
    CUresult (*DeviceGetCount)(int *count);
    CUresult (*DeviceGet)(CUdevice *dev, int ordinal);
    CUresult (*DeviceGetAttribute)(int *value, int attr, CUdevice dev);
    CUresult (*DeviceGetName)(char *name, int len, CUdevice dev);
    CUresult (*PrimaryCtxRetain)(CUcontext *ctx, CUdevice dev);
    CUresult (*PrimaryCtxRelease)(CUdevice dev);
    CUresult (*CtxSetCurrent)(CUcontext ctx);
    CUresult (*CtxSynchronize)(void);
    CUresult (*ModuleLoadData)(CUmodule *mod, const void *image);
    CUresult (*ModuleUnload)(CUmodule mod);
    CUresult (*ModuleGetFunction)(CUfunction *fn, CUmodule mod, const char *name);
    CUresult (*FuncSetAttribute)(CUfunction fn, int attr, int value); /* may be NULL */
    CUresult (*MemAlloc)(CUdeviceptr *ptr, size_t bytes);
    CUresult (*MemFree)(CUdeviceptr ptr);
    CUresult (*MemcpyHtoD)(CUdeviceptr dst, const void *src, size_t bytes);
    CUresult (*MemcpyDtoH)(void *dst, CUdeviceptr src, size_t bytes);
    CUresult (*MemcpyDtoD)(CUdeviceptr dst, CUdeviceptr src, size_t bytes);
    CUresult (*MemsetD8)(CUdeviceptr dst, unsigned char value, size_t bytes);
    CUresult (*LaunchKernel)(CUfunction fn, unsigned grid_x, unsigned grid_y, unsigned grid_z,
                             unsigned block_x, unsigned block_y, unsigned block_z,
                             unsigned shared_bytes, CUstream stream, void **params,
                             void **extra);
    CUresult (*GetErrorString)(CUresult rc, const char **text);
    CUresult (*GetErrorName)(CUresult rc, const char **text);
} CuDriver;

/* Opens the driver (libcuda.so.1, or $CAP_CUDA_DRIVER: a test hook that can point at a
 * missing library) and calls cuInit. Tables are cached per path for the process and never
 * unloaded (the driver does not support being unloaded while contexts may exist). Returns 0,
 * or -1 with "no usable CUDA driver: <why>" in err. */
int cu_driver_open(const CuDriver **out, char *err, size_t err_size);

/* First usable device: ordinal 0, its name and compute capability. Returns 0, or -1 with
 * "no usable CUDA driver: ..." (no device, or an error) in err. */
int cu_device_first(const CuDriver *d, CUdevice *dev, char *name, size_t name_size, int *major,
                    int *minor, char *err, size_t err_size);

/* Writes "CALL failed: <driver text> (<CUDA_ERROR_NAME>)" into err; returns -1. */
int cu_fail(const CuDriver *d, CUresult rc, const char *call, char *err, size_t err_size);

#endif
