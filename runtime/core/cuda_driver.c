/* cuda_driver.c — dlopen of the CUDA driver and its entry points (cuda_driver.h).
 *
 * The versioned names (cuMemAlloc_v2, ...) are the ones the driver's own header maps the
 * plain names to since CUDA 4; they take size_t sizes and 64-bit device pointers. */
#include "cuda_driver.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DRIVERS 4

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static CuDriver drivers[MAX_DRIVERS];
static int n_drivers;

/* dlsym into a function pointer slot without the object/function pointer cast warning. */
static int bind(void *lib, void *slot, const char *name, const char *alt) {
    void *p = dlsym(lib, name);
    if (!p && alt) p = dlsym(lib, alt);
    memcpy(slot, &p, sizeof p);
    return p != NULL;
}

/* Resolves every entry point; the name of the first missing one, or NULL. */
static const char *bind_all(CuDriver *d) {
    void *l = d->lib;
    bind(l, &d->FuncSetAttribute, "cuFuncSetAttribute", NULL); /* optional (CUDA 9+) */
    bind(l, &d->GetErrorName, "cuGetErrorName", NULL);
    if (!bind(l, &d->Init, "cuInit", NULL)) return "cuInit";
    if (!bind(l, &d->DeviceGetCount, "cuDeviceGetCount", NULL)) return "cuDeviceGetCount";
    if (!bind(l, &d->DeviceGet, "cuDeviceGet", NULL)) return "cuDeviceGet";
    if (!bind(l, &d->DeviceGetAttribute, "cuDeviceGetAttribute", NULL))
        return "cuDeviceGetAttribute";
    if (!bind(l, &d->DeviceGetName, "cuDeviceGetName", NULL)) return "cuDeviceGetName";
    if (!bind(l, &d->PrimaryCtxRetain, "cuDevicePrimaryCtxRetain", NULL))
        return "cuDevicePrimaryCtxRetain";
    if (!bind(l, &d->PrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2",
              "cuDevicePrimaryCtxRelease"))
        return "cuDevicePrimaryCtxRelease";
    if (!bind(l, &d->CtxSetCurrent, "cuCtxSetCurrent", NULL)) return "cuCtxSetCurrent";
    if (!bind(l, &d->CtxSynchronize, "cuCtxSynchronize", NULL)) return "cuCtxSynchronize";
    if (!bind(l, &d->ModuleLoadData, "cuModuleLoadData", NULL)) return "cuModuleLoadData";
    if (!bind(l, &d->ModuleUnload, "cuModuleUnload", NULL)) return "cuModuleUnload";
    if (!bind(l, &d->ModuleGetFunction, "cuModuleGetFunction", NULL)) return "cuModuleGetFunction";
    if (!bind(l, &d->MemAlloc, "cuMemAlloc_v2", NULL)) return "cuMemAlloc_v2";
    if (!bind(l, &d->MemFree, "cuMemFree_v2", NULL)) return "cuMemFree_v2";
    if (!bind(l, &d->MemcpyHtoD, "cuMemcpyHtoD_v2", NULL)) return "cuMemcpyHtoD_v2";
    if (!bind(l, &d->MemcpyDtoH, "cuMemcpyDtoH_v2", NULL)) return "cuMemcpyDtoH_v2";
    if (!bind(l, &d->MemcpyDtoD, "cuMemcpyDtoD_v2", NULL)) return "cuMemcpyDtoD_v2";
    if (!bind(l, &d->MemsetD8, "cuMemsetD8_v2", NULL)) return "cuMemsetD8_v2";
    if (!bind(l, &d->LaunchKernel, "cuLaunchKernel", NULL)) return "cuLaunchKernel";
    if (!bind(l, &d->GetErrorString, "cuGetErrorString", NULL)) return "cuGetErrorString";
    return NULL;
}

/* Loads path into a fresh table; on failure the library is closed and err says why. */
static int load(const char *path, CuDriver *d, char *err, size_t err_size) {
    memset(d, 0, sizeof *d);
    snprintf(d->path, sizeof d->path, "%s", path);
    d->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!d->lib) {
        const char *e = dlerror();
        snprintf(err, err_size, "no usable CUDA driver: %s", e ? e : "libcuda.so.1 not found");
        return -1;
    }
    const char *missing = bind_all(d);
    if (missing) {
        snprintf(err, err_size, "no usable CUDA driver: %s has no %s (driver too old)", path,
                 missing);
        dlclose(d->lib);
        return -1;
    }
    CUresult rc = d->Init(0);
    if (rc != 0) {
        const char *text = NULL;
        if (d->GetErrorString(rc, &text) != 0 || !text) text = "unknown error";
        snprintf(err, err_size, "no usable CUDA driver: cuInit failed: %s (error %d)", text, rc);
        dlclose(d->lib);
        return -1;
    }
    return 0;
}

int cu_driver_open(const CuDriver **out, char *err, size_t err_size) {
    const char *force = getenv("CAP_CUDA_DRIVER");
    const char *path = force && *force ? force : "libcuda.so.1";
    *out = NULL;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < n_drivers && !*out; i++)
        if (strcmp(drivers[i].path, path) == 0) *out = &drivers[i];
    int rc = 0;
    if (!*out) {
        CuDriver d;
        rc = load(path, &d, err, err_size);
        if (rc == 0 && n_drivers == MAX_DRIVERS) {
            snprintf(err, err_size, "no usable CUDA driver: too many driver paths tried");
            rc = -1; /* d stays loaded: a driver is never unloaded after cuInit */
        } else if (rc == 0) {
            drivers[n_drivers] = d;
            *out = &drivers[n_drivers++];
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

int cu_fail(const CuDriver *d, CUresult rc, const char *call, char *err, size_t err_size) {
    const char *text = NULL, *name = NULL;
    if (d->GetErrorString(rc, &text) != 0 || !text) text = "unknown error";
    if (!d->GetErrorName || d->GetErrorName(rc, &name) != 0 || !name) name = "?";
    snprintf(err, err_size, "%s failed: %s (%s, error %d)", call, text, name, rc);
    return -1;
}

int cu_device_first(const CuDriver *d, CUdevice *dev, char *name, size_t name_size, int *major,
                    int *minor, char *err, size_t err_size) {
    int count = 0;
    CUresult rc = d->DeviceGetCount(&count);
    if (rc != 0) {
        char why[256];
        cu_fail(d, rc, "cuDeviceGetCount", why, sizeof why);
        snprintf(err, err_size, "no usable CUDA driver: %s", why);
        return -1;
    }
    if (count < 1) {
        snprintf(err, err_size, "no usable CUDA driver: it sees no CUDA device");
        return -1;
    }
    char why[256];
    if ((rc = d->DeviceGet(dev, 0)) != 0) cu_fail(d, rc, "cuDeviceGet", why, sizeof why);
    else if ((rc = d->DeviceGetAttribute(major, CU_ATTR_COMPUTE_CAPABILITY_MAJOR, *dev)) != 0)
        cu_fail(d, rc, "cuDeviceGetAttribute(major)", why, sizeof why);
    else if ((rc = d->DeviceGetAttribute(minor, CU_ATTR_COMPUTE_CAPABILITY_MINOR, *dev)) != 0)
        cu_fail(d, rc, "cuDeviceGetAttribute(minor)", why, sizeof why);
    else if ((rc = d->DeviceGetName(name, (int)name_size, *dev)) != 0)
        cu_fail(d, rc, "cuDeviceGetName", why, sizeof why);
    if (rc != 0) {
        snprintf(err, err_size, "no usable CUDA driver: %s", why);
        return -1;
    }
    return 0;
}
