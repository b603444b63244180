/* package.h — the packager's own pieces (not part of codegen.h's interface).
 *
 *   package_plan.c     per entry point: lower; memory-plan, resolve every kernel argument to a
 *                      buffer (arena / state / input / output), add the final output copies
 *   package_kernels.c  the artifact's kernel table: kernels of all entry points deduplicated
 *                      by structure (kd_hash, kd_equal), renamed apart when names collide,
 *                      plus copy kernels
 *   package_emit.c     cap.c (prelude, kernels, the static tables, `cap_artifact`) and cap.cu
 *   package_build.c    kernel modules, the C and NVRTC compiles (in parallel, through the
 *                      kernel cache, cache.c), the link into cap.so
 *   package_cc.c       files, temp dirs, running the system C compiler
 *   package.c          the stages codegen.h declares (package_lower ... package_write),
 *                      the atomic write; package_module() runs them all
 *
 * A Package borrows the Module and owns everything else it holds (freed by pkg_free): the
 * lowered kernels until the kernel table takes their descriptions, the memory plans, the
 * kernel table and the steps.
 */
#ifndef CAPC_CODEGEN_PACKAGE_H
#define CAPC_CODEGEN_PACKAGE_H

#include "cap_artifact.h"
#include "codegen.h"
#include "strbuf.h"

/* Appends s[0..n) to b as the body of a C string literal (quotes not included): escapes \ " ?
 * and non-printable bytes (octal, always 3 digits so a following digit is never absorbed). */
void pkg_c_escape(StrBuf *b, const char *s, size_t n);

/* ---- the package ------------------------------------------------------------------------ */

/* Kernels are compiled in at most this many modules (package_build.c says why). */
#define PKG_MAX_MODULES 32

/* One kernel of the artifact. */
typedef struct ArtifactKernel {
    char *name;       /* owned; unique in the package */
    int n_args;
    int64_t cuda_grid;
    int cuda_block, cuda_shared_bytes;
    char *source_ops; /* owned */
    KernelDesc *desc; /* owned: its description (NULL for a copy kernel) */
    KernelDesc *cuda; /* owned: a separate CUDA form, or NULL */
    char *c_src;      /* owned: rendered by pkg_render_kernels (copy kernels: at creation) */
    char *cuda_src;   /* owned */
    int merged;       /* how many identical lowered kernels were merged into this one */
    int module;       /* its module (pkg_assign_modules): the unit of compiling and caching */
} ArtifactKernel;

typedef struct PkgStep {
    int kernel; /* index in Package.kernels */
    int n_args;
    CapBufRef *args; /* owned */
} PkgStep;

typedef struct PkgEntry {
    const Function *f;
    int64_t arena_bytes;
    int64_t naive_bytes; /* for -v */
    int n_kernels;       /* kernel steps (the rest of the steps are copies) */
    PkgStep *steps;
    int n_steps, cap_steps;
    int32_t *output_state; /* n_outputs: state index of "@X" outputs, else -1 */
    int n_copies;          /* how many of the steps are the final output/state copies */
} PkgEntry;

typedef struct PkgDedupSlot PkgDedupSlot;

struct Package {
    const Module *m;
    int verbose;
    FunctionKernels *fk; /* per function: its schedule and lowered kernels (pkg_lower);
                          * trimmed once its entry's steps are built (pkg_plan) */
    MemPlan *plans;      /* per function (pkg_plan) */
    ArtifactKernel *kernels;
    int n_kernels, cap_kernels;
    PkgEntry *entries;
    int n_entries;
    int n_lowered; /* kernels the lowering produced, before deduplication */
    int n_modules; /* pkg_assign_modules: kernel modules, none empty */
    int module_group[PKG_MAX_MODULES]; /* per module: its hash group, which names its files */
    /* Lowered kernels by the structure of their steps while lowering (lower_key.c), then NULL. */
    LowerCache *lower_cache;
    /* Kernel deduplication (package_kernels.c): open addressing over description hashes. */
    PkgDedupSlot *slots;
    int n_slots, n_used_slots;
    /* Kernel names (package_kernels.c): open addressing, kernel index or -1; a scan of the
     * table per new kernel and per copy made packaging quadratic in the kernel count. */
    int *name_slots;
    int n_name_slots, n_names;
};

/* The stages (package_plan.c): lower every function, then plan every entry's memory and
 * steps. Each returns 0, or -1 with d; pkg_free releases everything either way. */
int pkg_lower(Package *p, Diag *d);
int pkg_plan(Package *p, Diag *d);
void pkg_free(Package *p);

/* Adds a lowered kernel (package_kernels.c): returns the index of an identical kernel already
 * in the package, or of the new one, which takes k's descriptions (renamed if its name is
 * taken), and records it in k->artifact; -1 on OOM. A kernel that shares an earlier one's
 * descriptions (same_as) gets that one's index without looking: kernels are added in the
 * order they were lowered. */
int pkg_add_kernel(Package *p, LoweredKernel *k);
/* Frees the step keys (the LowerCache) once every function is lowered. */
void pkg_lower_done(Package *p);
/* Renders every kernel's C and CUDA source and CUDA launch geometry. Returns 0 or -1 with d. */
int pkg_render_kernels(Package *p, Diag *d);
/* The copy kernel for numel elements of dtype (4-byte elements); -1 on OOM. */
int pkg_copy_kernel(Package *p, DType dtype, int64_t numel);
/* Frees the kernel table and the deduplication index. */
void pkg_kernels_free(Package *p);

/* State table index of module param `name`, or -1. */
int pkg_state_index(const Module *m, const char *name);
/* CapDType for an IR dtype; false if the artifact cannot hold it. */
bool pkg_cap_dtype(DType dt, int32_t *out);

/* ---- rendering (package_emit.c) -------------------------------------------------------- */

typedef struct PkgCudaImage {
    char *arch; /* "sm_80", "sm_90", "ptx" */
    unsigned char *data;
    size_t size;
    int module;
    char source_hash[65]; /* SHA-256 of the module's CUDA source */
} PkgCudaImage;

/* The CUDA text of every kernel (module < 0) or of one module's kernels, after the CUDA
 * prelude: cap.cu, or what NVRTC compiles for that module (malloc'd; NULL on OOM). */
char *pkg_render_cuda(const Package *p, int module);
/* cap.c as one self-contained file for the chosen targets (what --emit-src writes; CUDA
 * images as string literals). malloc'd; NULL on OOM. */
char *pkg_render_c(const Package *p, const PackageOptions *opts, const PkgCudaImage *images,
                   int n_images);
/* The same C in the pieces the packager compiles: one module's kernels (with the prelude's
 * shared state declared, not defined) ... */
char *pkg_render_c_module(const Package *p, int module);
/* ... and the tables, the prelude's shared state and `cap_artifact`, with the CUDA images
 * declared extern as capt_cuda_imageN (the link adds them; pkg_cuda_image_symbol). */
char *pkg_render_c_tables(const Package *p, const PackageOptions *opts,
                          const PkgCudaImage *images, int n_images);
/* "capt_cuda_image7" into out. */
void pkg_cuda_image_symbol(int i, char *out, size_t size);
/* 64-bit FNV-1a of s[0..n) continuing from h (0: start): kernel-name hashes, module groups. */
uint64_t pkg_fnv1a(const char *s, size_t n, uint64_t h);

/* The text of runtime/abi/cap_artifact.h, embedded at build time (cmake/embed_text.cmake). */
extern const char capc_artifact_header_text[];

/* ---- files and the C compiler (package_cc.c) -------------------------------------------- */

/* Writes text to path (whole file). Returns 0 or -1 with d naming path. */
int pkg_write_file(const char *path, const char *text, Diag *d);
/* A fresh private directory under $TMPDIR (or /tmp): malloc'd path, or NULL with d. */
char *pkg_make_temp_dir(Diag *d);
/* Removes dir and the plain files in it (the packager's temp dirs are flat). */
void pkg_remove_temp_dir(const char *dir);
/* The C compiler ($CAPC_CC, else cc) and the flags every object is compiled with. */
const char *pkg_cc_command(void);
extern const char *const PKG_CC_FLAGS[]; /* NULL-terminated */
/* What identifies the C compiler for the cache: its name and `--version` output (malloc'd;
 * NULL when it cannot be run). Runs it once in dir. */
char *pkg_cc_identity(const char *dir);
/* Compiles dir/src_name (C, or assembly for a .s) into dir/obj_name, running the compiler in
 * dir with the relative names, so the object holds no temp path and is the same bytes from
 * any directory. Output goes to dir/obj_name.log; on failure d holds its first lines. */
int pkg_cc_object(const char *dir, const char *src_name, const char *obj_name, Diag *d);
/* Links the objects into the shared library out_path (log in log_path). */
int pkg_cc_link(char *const *objects, int n_objects, const char *out_path, const char *log_path,
                Diag *d);
/* "DIR/NAME" (malloc'd; NULL when out of memory). */
char *pkg_path_join(const char *dir, const char *name);
/* Reads a whole file (malloc'd; NULL with d naming it). */
unsigned char *pkg_read_file(const char *path, size_t *size, Diag *d);
/* Writes size bytes to path. Returns 0 or -1 with d naming path. */
int pkg_write_bytes(const char *path, const void *data, size_t size, Diag *d);

/* ---- building cap.so (package_build.c) --------------------------------------------------- */

/* Puts every kernel in one of PKG_MAX_MODULES hash groups by its name, so that a kernel keeps
 * its group when others come and go, and numbers the non-empty groups: the modules. */
void pkg_assign_modules(Package *p);
/* Compiles the kernels (C objects and CUDA images per module, through the kernel cache, on
 * all cores) and the tables, and links them into out_path; with opts->emit_src_dir writes
 * cap.c and cap.cu there too. Returns 0 or -1 with d. */
int pkg_build(const Package *p, const PackageOptions *opts, const char *out_path, Diag *d);

#endif
