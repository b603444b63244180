/* codegen.h — from IR functions to kernels, and from kernels to cap.so.
 *
 *   IR function --lower (one kernel per op; per fused group once fusion lands)--> KernelDesc
 *   KernelDesc --render_c / render_cuda (one renderer, a small per-target table)--> source
 *   sources + plan (memory plan, buffer refs) --package--> cap.c --cc--> cap.so
 *
 * Kernel calling convention (both targets): arguments are buffers, the result first, then
 * the op's operands in order. Sizes are constants inside the kernel. A kernel's C form is
 *   void NAME(void *const *bufs)
 * and its CUDA form is
 *   extern "C" __global__ void NAME(float *a0, const float *a1, ...)   (int32_t * for i32)
 * launched as a 1-D grid (cuda_grid x cuda_block). Every kernel carries a comment naming the
 * IR ops it came from and each argument's shape.
 */
#ifndef CAPC_CODEGEN_H
#define CAPC_CODEGEN_H

#include "ir.h"

typedef struct KernelSource {
    char *name;               /* unique within a KernelSet, a C identifier */
    int n_args;
    const Value **arg_values; /* n_args: result first, then operands (in the IR function) */
    char *c_src;              /* definition of NAME for the C target */
    char *cuda_src;           /* definition of NAME for the CUDA target */
    int64_t cuda_grid;
    int cuda_block;
    int cuda_shared_bytes;
    char *source_ops;         /* "conv2d %backbone.conv1" */
} KernelSource;

typedef struct KernelSet {
    KernelSource *kernels; /* in program order */
    int n_kernels, cap_kernels;
    /* Per op of the function (by index in f->ops): the kernel that computes it, or -1 when
     * the op needs none (param reads state; reshape is a view of its operand). */
    int *kernel_of_op;
    int n_ops;
} KernelSet;

/* Source that every rendered C / CUDA file starts with: includes, Philox, helpers.
 * Returned strings are static; do not free. */
const char *codegen_c_prelude(void);
const char *codegen_cuda_prelude(void);

/* Lowers every op of f to a kernel (or none, see kernel_of_op). Returns 0, or -1 with d. */
int codegen_lower_function(const Function *f, KernelSet *ks, Diag *d);
void kernel_set_free(KernelSet *ks);

/* Two kernels with equal keys are the same function: sources with comments removed and the
 * kernel's own name masked, plus n_args and launch geometry. malloc'd; caller frees. */
char *codegen_kernel_dedup_key(const KernelSource *k);


/* NVRTC (codegen/nvrtc.c; dlopen'ed, so capc runs without the CUDA toolkit): compiles CUDA
 * source for an arch ("sm_90" -> cubin, "compute_80" -> PTX). Returns 0 and a malloc'd image,
 * or -1 with the compiler log in d (or "NVRTC not available"). */
bool nvrtc_available(void);
int nvrtc_compile(const char *source, const char *name, const char *arch, unsigned char **image,
                  size_t *size, Diag *d);

/* Packaging (codegen/package.c): writes cap.so for module m. */
typedef enum { TARGET_CPU = 1, TARGET_CUDA = 2, TARGET_ALL = 3 } CodegenTarget;

typedef struct PackageOptions {
    const char *output_path;  /* cap.so */
    int targets;              /* CodegenTarget bits */
    const char *emit_src_dir; /* write cap.c / cap.cu here too; NULL: don't */
    const char *cuda_archs;   /* "sm_80,sm_90" */
    const char *compile_flags; /* the -D overrides, recorded in the artifact */
    int verbose;
} PackageOptions;

int package_module(const Module *m, const PackageOptions *opts, Diag *d);

#endif
