/* codegen.h — from IR functions to kernels, and from kernels to cap.so.
 *
 *   IR function --schedule (passes/schedule.c: a step per fused group or lone op)
 *               --lower (one kernel description per step)--> KernelDesc
 *   KernelDesc --render (one renderer, a small per-target table)--> C and CUDA source
 *   sources + plan (memory plan, buffer refs) --package--> cap.c --cc--> cap.so
 *
 * Kernel calling convention (both targets): arguments are buffers, the values the step
 * writes first, then those it reads. Sizes are constants inside the kernel. A kernel's C form is
 *   void NAME(void *const *bufs)
 * and its CUDA form is
 *   extern "C" __global__ void NAME(float *a0, const float *a1, ...)   (int32_t * for i32)
 * launched as a 1-D grid (cuda_grid x cuda_block). Every kernel carries a comment naming the
 * IR ops it came from and each argument's shape.
 *
 * Four structs hold "a kernel", one per stage:
 *   KernelDesc      (kernel.h) a kernel's body as a small imperative AST, in its own arena.
 *                   Made by lowering (kd_new in lower*.c); freed with kd_free by whoever holds
 *                   it: its LoweredKernel, then its ArtifactKernel once the package takes it.
 *   LoweredKernel   (below) one schedule step's kernel: its KernelDescs (C, and CUDA when that
 *                   differs) and the IR values it reads and writes. Made by
 *                   codegen_lower_function into a FunctionKernels; freed by
 *                   function_kernels_free.
 *   ArtifactKernel  (package.h) one entry of cap.so's kernel table: lowered kernels merged
 *                   by structure, a unique name, rendered C and CUDA source, its module. Made
 *                   by pkg_add_kernel / pkg_copy_kernel; freed by pkg_kernels_free (pkg_free).
 *   CapKernel       (runtime/abi/cap_artifact.h, the artifact ABI) what cap.so exports for an
 *                   ArtifactKernel: name, entry point, launch geometry. A static table written
 *                   into cap.c by package_emit.c; never freed (it lives in the loaded library).
 */
#ifndef CAPC_CODEGEN_H
#define CAPC_CODEGEN_H

#include "ir.h"
#include "kernel.h"
#include "passes.h"

/* One kernel lowered from one step of a function's schedule (a fused group or one op). */
typedef struct LoweredKernel {
    KernelDesc *desc;    /* owned (unless shared): rendered for C, and for CUDA unless cuda is set */
    KernelDesc *cuda;    /* owned (unless shared): a separate CUDA form (conv's direct loops), or NULL */
    bool shared;         /* desc and cuda are an identical earlier kernel's (same_as): borrowed,
                          * neither rewritten nor freed through this one */
    const struct LoweredKernel *same_as; /* shared: the kernel of an earlier step of the same
                          * structure (LowerCache), whose descriptions these are; else NULL */
    const Value **args;  /* owned array of n_args: the step's writes, then its reads */
    int n_args;
    int step;            /* index in the schedule */
    char *source_ops;    /* owned: "conv2d %x", or "fused.conv_bn_relu: conv2d %a, ..."; NULL
                          * for a kernel that reused a step of the same structure (LowerCache) */
    int artifact;        /* its index in the package's kernel table (pkg_add_kernel), or -1 */
} LoweredKernel;

/* A function's schedule and its kernels, in program order (steps that write nothing get
 * none). */
typedef struct FunctionKernels {
    const Function *f;
    Schedule schedule;
    LoweredKernel *kernels;
    int n_kernels;
} FunctionKernels;

/* Source that every rendered C / CUDA file starts with: includes, Philox, helpers.
 * Returned strings are static; do not free. */
const char *codegen_c_prelude(void);
const char *codegen_cuda_prelude(void);

/* Builds f's schedule from its fused groups and lowers every step. Returns 0, or -1 with d
 * (free fk with function_kernels_free either way). */
int codegen_lower_function(const Function *f, FunctionKernels *fk, Diag *d);
void function_kernels_free(FunctionKernels *fk);
/* Frees what only lowering and planning read (the schedule, the kernels' arguments and
 * source_ops), keeping each kernel's descriptions, same_as and artifact: once its entry's
 * steps are built, a package keeps no more of a function's kernels (a later entry's kernel
 * may still have one of them as same_as). function_kernels_free is still needed. */
void function_kernels_trim(FunctionKernels *fk);
/* Steps shaped like an earlier step (the same ops, attributes, types and wiring: lower_key.c)
 * need not be lowered again: with a LowerCache, one that was seen before (in this function or
 * an earlier one lowered with the same cache) gets the earlier kernel's descriptions (shared,
 * same_as) and only its own arguments. The cache points into the FunctionKernels, which must
 * outlive it. */
typedef struct LowerCache LowerCache;
LowerCache *lower_cache_new(void); /* NULL when out of memory */
void lower_cache_free(LowerCache *c);
int codegen_lower_function_cached(const Function *f, FunctionKernels *fk, LowerCache *cache,
                                  Diag *d);
/* kd_check on every kernel (its CUDA form too). Returns 0, or -1 with d. */
int codegen_check_kernels(const FunctionKernels *fk, Diag *d);
/* The CUDA form of k. */
static inline const KernelDesc *lowered_cuda_desc(const LoweredKernel *k) {
    return k->cuda != NULL ? k->cuda : k->desc;
}

/* NVRTC (codegen/nvrtc.c; dlopen'ed, so capc runs without the CUDA toolkit): compiles CUDA
 * source for an arch ("sm_90" -> cubin, "compute_80" -> PTX). Returns 0 and a malloc'd image,
 * or -1 with the compiler log in d (or "NVRTC not available"). */
bool nvrtc_available(void);
/* "nvrtc MAJOR.MINOR" of the library in use, and the options every compile passes besides
 * the arch: both are part of the kernel cache's keys. */
const char *nvrtc_version_text(void);
const char *nvrtc_options_text(void);
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
    /* The kernel cache (codegen/cache.h): its directory (NULL: kcache_default_dir), off with
     * no_cache; cache_max_bytes <= 0: the default limit. */
    const char *cache_dir;
    int no_cache;
    int64_t cache_max_bytes;
    int jobs; /* compiler processes and NVRTC threads at once; <= 0: the online CPUs */
} PackageOptions;

/* The code generation stages, in the order the pipeline runs them (driver/pipeline.c):
 * a Package borrows m (which must outlive it) and holds every function's kernels, memory
 * plan and steps. Each stage returns 0, or -1 with d. */
typedef struct Package Package;
Package *package_new(const Module *m, int verbose); /* NULL when out of memory */
void package_free(Package *p);
int package_lower(Package *p, Diag *d);   /* every function: schedule -> kernel descriptions */
int package_rewrite(Package *p, Diag *d); /* kernel rewrites (codegen/opt_*.c) */
int package_plan(Package *p, Diag *d);    /* memory plans + checker, buffers, kernel table */
int package_render(Package *p, Diag *d);  /* C and CUDA source, each distinct kernel once */
/* The kernel checker on every function's kernels (between lower and plan). */
int package_check_kernels(const Package *p, Diag *d);
/* Fails (with d) when opts cannot produce a library at its path: run before the long work. */
int package_check_output(const PackageOptions *opts, Diag *d);
int package_write(Package *p, const PackageOptions *opts, Diag *d); /* NVRTC, cc, cap.so */
/* All the stages: cap.so for a module the passes have run on. */
int package_module(const Module *m, const PackageOptions *opts, Diag *d);

/* What a planned package says about entry point i (function i of the module). */
typedef struct EntryStats {
    const char *name;
    int kernels;  /* kernel launches of its own (one per fused group or lone op) */
    int launches; /* all launches, with the final output and state copies */
    int64_t arena_bytes, naive_bytes;
} EntryStats;
int package_n_entries(const Package *p);
void package_entry_stats(const Package *p, int i, EntryStats *out);
const MemPlan *package_entry_plan(const Package *p, int i);
/* Writes DIR/STEM.c and DIR/STEM.cu: each entry's steps and its kernels as rendered (after
 * package_render). Returns 0 or -1 with d. */
int package_dump_kernels(const Package *p, const char *dir, const char *stem, Diag *d);
/* Writes DIR/STEM.txt: every entry's memory plan (after package_plan). */
int package_dump_memplan(const Package *p, const char *dir, const char *stem, Diag *d);

/* Kernel rewrites (codegen/opt_*.c, run in order by codegen/rewrite.c): each takes a
 * function's lowered kernels and improves their descriptions without changing what they
 * compute. Returns 0, or -1 with d. */
int codegen_rewrite_kernels(FunctionKernels *fk, Diag *d);

#endif
