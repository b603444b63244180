/* cap_artifact.h — what cap.so holds: the contract between capc's packager (codegen/) and the
 * runtime (runtime/). The runtime knows this header and cap.h, nothing of the compiler.
 *
 * cap.so exports one data symbol, `cap_artifact` (a const CapArtifact), plus the CPU kernel
 * functions it points to. Everything is static data: shapes are fixed at compile time, every
 * entry point is a straight list of kernel launches over buffers that are either arena slices,
 * persistent state (weights, buffers, optimizer state), the caller's inputs or its outputs.
 *
 * A kernel is specialized to one op instance (or one fused group): sizes are constants in its
 * code, so a step carries only buffer pointers. The same kernel description is rendered to C
 * (cpu, below) and to CUDA (the function of the same name in the embedded CUDA module
 * `cuda_module`: capc compiles the kernels in groups, each its own module, so that a change
 * to one kernel recompiles only its group).
 *
 * All pointers refer to data inside cap.so; the runtime never frees them.
 */
#ifndef CAP_ARTIFACT_H
#define CAP_ARTIFACT_H

#include <stddef.h>
#include <stdint.h>

#define CAP_ARTIFACT_VERSION 4
#define CAP_ARTIFACT_SYMBOL "cap_artifact"
#define CAP_MAX_RANK 8

typedef enum { CAP_DT_F32 = 0, CAP_DT_I32 = 1 } CapDType;

typedef struct CapTensorInfo {
    const char *name;
    int32_t dtype; /* CapDType */
    int32_t rank;
    int64_t dims[CAP_MAX_RANK];
    int64_t numel;
} CapTensorInfo;

/* Persistent tensors the runtime allocates once per session and checkpoints. */
typedef enum {
    CAP_STATE_WEIGHT = 0,  /* a parameter (counted in "parameters") */
    CAP_STATE_BUFFER = 1,  /* BatchNorm running statistics and the like */
    CAP_STATE_OPTIM = 2,   /* optimizer moments, the step counter */
    CAP_STATE_DERIVED = 3, /* computed from the others by the "fold" entry (a frozen BatchNorm
                              folded into its convolution); never saved or loaded: the runtime
                              runs "fold" before any other entry after the state changed */
    CAP_STATE_HPARAM = 4,  /* a training hyperparameter (the learning rates: "train.lr", ...):
                              an f32 scalar whose value is its init string "const(V)", filled
                              when a session is created; never saved or loaded. Kernels read it
                              like any state, so a new lr changes this table and no kernel */
} CapStateKind;

typedef struct CapStateInfo {
    CapTensorInfo t; /* t.name: PyTorch state_dict name, or "adam.m.<param>", "step" */
    int32_t kind;    /* CapStateKind */
    int32_t trainable;
    /* Initializer spec from the model file, e.g. "kaiming_uniform", "linear_bias(64)",
     * "normal(0,1)", "zeros" (docs/model-format.md lists them). */
    const char *init;
} CapStateInfo;

/* Where a kernel argument lives. */
typedef enum {
    CAP_BUF_ARENA = 0,  /* the entry's scratch arena, at `offset` bytes */
    CAP_BUF_STATE = 1,  /* state tensor `index` */
    CAP_BUF_INPUT = 2,  /* the caller's input `index` of this entry */
    CAP_BUF_OUTPUT = 3, /* the caller's output `index` of this entry */
} CapBufSpace;

typedef struct CapBufRef {
    int32_t space; /* CapBufSpace */
    int32_t index;
    int64_t offset; /* bytes from the start of the arena or tensor (a view may start inside
                       one: the q rows of an attention's in_proj weight) */
    int64_t bytes;  /* size of the view, for checks */
} CapBufRef;

/* CPU kernels take their buffers in one array, in the kernel's argument order. */
typedef void (*CapCpuKernelFn)(void *const *bufs);

typedef struct CapKernel {
    const char *name;     /* unique in the artifact; also the CUDA function name */
    CapCpuKernelFn cpu;   /* NULL if cap.so was built without the cpu target */
    int32_t n_args;
    /* CUDA launch geometry fixed at compile time (1-D grid of 1-D blocks). */
    int64_t cuda_grid;
    int32_t cuda_block;
    int32_t cuda_shared_bytes;
    const char *source_ops; /* the IR ops it came from, for profiles: "conv2d %backbone.conv1" */
    int32_t cuda_module;    /* which of the n_cuda_modules CUDA modules holds it */
} CapKernel;

typedef struct CapStep {
    int32_t kernel; /* index into CapArtifact.kernels */
    int32_t n_args;
    const CapBufRef *args;
} CapStep;

typedef struct CapEntry {
    const char *name; /* "train_step", "eval_loss", "encode", "decode_step", "forward" */
    int32_t n_inputs;
    const CapTensorInfo *inputs;
    int32_t n_outputs;
    const CapTensorInfo *outputs;
    /* Per output: the state index it is the new value of (IR outputs named "@X"), or -1.
     * The steps themselves write state in place; this is for documentation and checks. */
    const int32_t *output_state;
    int64_t arena_bytes;
    int32_t n_steps;
    const CapStep *steps;
} CapEntry;

/* One CUDA module compiled for one arch. */
typedef struct CapCudaImage {
    const char *arch; /* "sm_80", "sm_90", or "ptx" (compute_80 PTX for newer GPUs) */
    const unsigned char *data;
    size_t size;
    const char *source_hash; /* SHA-256 of the module's CUDA source (hex) */
    int32_t module;          /* 0 .. n_cuda_modules-1 */
} CapCudaImage;

typedef struct CapArtifact {
    uint32_t version; /* CAP_ARTIFACT_VERSION */
    const char *model_name;
    const char *config_json;  /* the config variables as compiled: {"batch":16,...} */
    const char *capc_version;
    const char *compile_flags; /* the -D overrides, to tell the user how to recompile */

    int32_t n_state;
    const CapStateInfo *state;
    int32_t n_entries;
    const CapEntry *entries;
    int32_t n_kernels;
    const CapKernel *kernels;

    /* Vocabulary size the model was compiled for and the special token ids. */
    int64_t vocab_size;
    int32_t pad_id, start_id, end_id, unk_id;

    /* CUDA: every module compiled for each arch (cubins) plus PTX as the fallback, so
     * n_cuda_images = n_cuda_modules * archs (0: no CUDA). A GPU runs the images of one arch. */
    int32_t n_cuda_images;
    const struct CapCudaImage *cuda_images;

    /* The number of threads the C kernels use when called from the calling thread, until it
     * is set again (1: serial). The runtime sets it before each entry it runs on the CPU. */
    void (*set_threads)(int32_t n);

    int32_t n_cuda_modules; /* 0 without CUDA */
} CapArtifact;

#endif
