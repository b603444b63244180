/* backend.c — the cpu backend (host memory, kernels called directly) and backend selection.
 *
 * cpu: "device" memory is 64-byte aligned host memory; a step is a call of the kernel's C
 * function with the resolved buffer pointers. cuda: runtime/core/backend_cuda.c, over the driver
 * opened with dlopen (never linked); without it the answer is "no usable CUDA driver: <why>".
 * `auto` picks cuda when a GPU is usable, else cpu, and the session's note says which.
 */
#include "cap_internal.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

/* ---- cpu ----------------------------------------------------------------------------------- */

static CapStatus cpu_open(const CapModel *m, void **ctx, char *err, size_t err_size) {
    const CapArtifact *a = cap_model_artifact(m);
    for (int i = 0; i < a->n_kernels; i++)
        if (!a->kernels[i].cpu)
            return cap_fail(err, err_size, CAP_E_BACKEND,
                            "%s was built without the cpu target (kernel '%s' has no C "
                            "function): recompile with capc's cpu target",
                            cap_model_path(m), a->kernels[i].name);
    *ctx = NULL;
    return CAP_OK;
}

static void cpu_close(void *ctx) { (void)ctx; }

static CapStatus cpu_alloc(void *ctx, size_t bytes, void **ptr, char *err, size_t err_size) {
    size_t rounded = (bytes + 63) / 64 * 64;
    *ptr = aligned_alloc(64, rounded ? rounded : 64);
    if (!*ptr)
        return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory allocating %zu bytes", bytes);
    memset(*ptr, 0, rounded);
    return CAP_OK;
}

static void cpu_free(void *ctx, void *ptr) { free(ptr); }

static CapStatus cpu_copy(void *ctx, void *dst, const void *src, size_t bytes, char *err,
                          size_t err_size) {
    if (bytes) memcpy(dst, src, bytes);
    return CAP_OK;
}

static CapStatus cpu_run_step(void *ctx, const CapKernel *k, void *const *bufs, char *err,
                              size_t err_size) {
    k->cpu(bufs);
    return CAP_OK;
}

static CapStatus cpu_sync(void *ctx, char *err, size_t err_size) { return CAP_OK; }

const CapBackendOps cap_backend_cpu = {
    .name = "cpu",
    .host_memory = 1,
    .open = cpu_open,
    .close = cpu_close,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy_in = cpu_copy,
    .copy_out = cpu_copy,
    .run_step = cpu_run_step,
    .sync = cpu_sync,
};

/* ---- selection ----------------------------------------------------------------------------- */

int cap_backend_parse(const char *name, CapBackendKind *out) {
    if (strcmp(name, "auto") == 0) *out = CAP_BACKEND_AUTO;
    else if (strcmp(name, "cpu") == 0) *out = CAP_BACKEND_CPU;
    else if (strcmp(name, "cuda") == 0) *out = CAP_BACKEND_CUDA;
    else return -1;
    return 0;
}

CapStatus cap_backend_probe(CapBackendKind kind, char *why, size_t why_size) {
    switch (kind) {
    case CAP_BACKEND_CPU:
    case CAP_BACKEND_AUTO: return cap_fail(why, why_size, CAP_OK, "ok");
    case CAP_BACKEND_CUDA: return cap_cuda_probe(why, why_size);
    }
    return cap_fail(why, why_size, CAP_E_ARG, "unknown backend %d", (int)kind);
}

/* cuda when asked for and usable; auto: cuda if a GPU is usable, else cpu. The session falls
 * back from auto's cuda to cpu when the model cannot run on the GPU (session.c). */
CapStatus cap_backend_select(CapBackendKind kind, const CapBackendOps **ops, char *note,
                             size_t note_size, char *err, size_t err_size) {
    char why[384];
    note[0] = 0;
    if (kind == CAP_BACKEND_CPU) {
        *ops = &cap_backend_cpu;
        return CAP_OK;
    }
    if (kind != CAP_BACKEND_CUDA && kind != CAP_BACKEND_AUTO)
        return cap_fail(err, err_size, CAP_E_ARG, "unknown backend");
    CapStatus st = cap_cuda_probe(why, sizeof why);
    if (kind == CAP_BACKEND_CUDA) {
        if (st) return cap_fail(err, err_size, CAP_E_BACKEND, "backend cuda: %s", why);
        *ops = &cap_backend_cuda;
        return CAP_OK;
    }
    if (st) {
        snprintf(note, note_size, "backend auto: using cpu (cuda: %s)", why);
        *ops = &cap_backend_cpu;
    } else {
        *ops = &cap_backend_cuda;
    }
    return CAP_OK;
}
