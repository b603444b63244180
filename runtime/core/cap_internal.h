/* cap_internal.h — what the runtime's files share and nobody outside runtime/ sees: the model
 * and session structs, the backend interface, the error helper.
 *
 * A backend is a table of functions over device memory (CapBackendOps). The session code is
 * backend-neutral: it allocates state and the arena through the table, resolves each step's
 * CapBufRefs to device pointers and hands the step to run_step. The cpu backend's "device" is
 * host memory (host_memory = 1, so caller buffers are used in place); the cuda backend
 * (backend_cuda.c) is one more table over the driver API.
 */
#ifndef CAP_INTERNAL_H
#define CAP_INTERNAL_H

#include "cap.h"

#include <stdarg.h>

struct cJSON;

struct CapModel {
    void *handle;            /* dlopen handle of cap.so */
    const CapArtifact *a;    /* inside cap.so */
    char *path;              /* owned copy */
    struct cJSON *config;    /* parsed config_json, or NULL if absent/unparsable */
};

typedef struct CapBackendOps {
    const char *name;
    int host_memory; /* device pointers are host pointers: inputs/outputs used in place */
    CapStatus (*open)(const CapModel *m, void **ctx, char *err, size_t err_size);
    void (*close)(void *ctx);
    /* Zero-filled device memory of bytes (> 0) bytes. */
    CapStatus (*alloc)(void *ctx, size_t bytes, void **ptr, char *err, size_t err_size);
    void (*free)(void *ctx, void *ptr);
    CapStatus (*copy_in)(void *ctx, void *dst, const void *src, size_t bytes, char *err,
                         size_t err_size);
    CapStatus (*copy_out)(void *ctx, void *dst, const void *src, size_t bytes, char *err,
                          size_t err_size);
    /* Launches one kernel over resolved device pointers. */
    CapStatus (*run_step)(void *ctx, const CapKernel *k, void *const *bufs, char *err,
                          size_t err_size);
    CapStatus (*sync)(void *ctx, char *err, size_t err_size);
    /* One line about the open backend ("NVIDIA H100, sm_90, sm_90 cubin"); may be NULL. */
    void (*describe)(void *ctx, char *buf, size_t size);
} CapBackendOps;

extern const CapBackendOps cap_backend_cpu;
extern const CapBackendOps cap_backend_cuda;

/* Whether the cuda backend could run here (backend_cuda.c): CAP_OK with "available: <GPU>,
 * sm_XY" in why, or CAP_E_BACKEND with "no usable CUDA driver: <why>". */
CapStatus cap_cuda_probe(char *why, size_t why_size);

/* The ops table for kind (auto resolved), with a note on the choice (backend.c). */
CapStatus cap_backend_select(CapBackendKind kind, const CapBackendOps **ops, char *note,
                             size_t note_size, char *err, size_t err_size);

struct CapSession {
    const CapModel *m;
    const CapBackendOps *be;
    void *ctx;
    void **state;      /* n_state device pointers */
    void *arena;       /* max arena over entries (NULL when 0 bytes) */
    void **bufs;       /* scratch: resolved args of one step (max n_args) */
    void **dev_io;     /* scratch: device copies of inputs/outputs (non-host backends) */
    int derived_stale; /* state was written from outside since "fold" last ran */
    int threads;       /* the CPU kernels' threads (cap_session_set_threads) */
    uint64_t state_writes; /* writes of state from outside so far (feature_cache.c watches) */
    char note[256];
};

/* threads.c: the OpenMP/OpenBLAS environment libcaprt chooses (before the first cap.so is
 * loaded; what the user set wins), and the default thread count: OMP_NUM_THREADS when set,
 * else the CPUs this process may run on. */
void cap_threads_prepare(void);
int cap_default_threads(void);

/* Writes the message into err and returns code (support/errmsg.h). */
#define cap_fail(err, err_size, code, ...) ((CapStatus)errmsg_fail(err, err_size, code, __VA_ARGS__))

/* Initializer of one state tensor (init.c): fills dst (numel f32 or i32) from info->init. */
CapStatus cap_init_state(const CapStateInfo *info, int index, uint32_t seed, void *dst,
                         char *err, size_t err_size);
/* Philox4x32-10: support/philox.h. */
#include "errmsg.h"
#include "philox.h"

/* Checks file tensor t against info (shape; F32/F64 for f32, I32/I64 for i32) and converts it
 * into dst, host memory of cap_tensor_bytes(info) (checkpoint.c). */
struct StFile;
struct StTensor;
CapStatus cap_st_convert(const struct StFile *f, const struct StTensor *t,
                         const CapTensorInfo *info, void *dst, char *err, size_t err_size);

/* "[2,3,4]" into buf. */
char *cap_dims_str(int rank, const int64_t *dims, char *buf, size_t size);
/* "[2,7]": the multi-index of flat element `flat` of a tensor. */
char *cap_index_str(const CapTensorInfo *t, int64_t flat, char *buf, size_t size);

/* Points in[i] at the batch's tensor i, and its rng slot at rng (pointers borrowed). */
void cap_batch_inputs(const CapBatch *b, const int32_t rng[2], const void **in);
/* The token ids among an entry's inputs (every I32 data input but `rng`) must lie in
 * [0, vocab) when the model's config has `vocab`: CAP_OK, or CAP_E_FORMAT with a message
 * "WHERE: caption[3,7] = 70 is outside the vocabulary [0, 64)". */
CapStatus cap_check_ids(const CapModel *m, const CapEntry *e, const void *const *in,
                        const char *where, char *err, size_t err_size);

#endif
