/* case_kernel.h — the kernel of one op case (op_cases.h): the case's one-op function lowered,
 * the kernel that computes its op found and rendered, and its arguments mapped back to the
 * case's buffers (slot 0 = the result, slot i + 1 = function input i), since a kernel takes
 * the values its step writes, then the values it reads, each once. Shared by test_c_kernels,
 * test_cuda_kernels and test_cuda_compile. Header-only (static), like op_cases.h. */
#ifndef CAPC_TESTS_CODEGEN_CASE_KERNEL_H
#define CAPC_TESTS_CODEGEN_CASE_KERNEL_H

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "codegen.h"

#define CK_MAX_ARGS 16

typedef struct CaseKernel {
    FunctionKernels fk;
    const LoweredKernel *k; /* NULL when the op needs no kernel (param, views) */
    char *c_src, *cuda_src; /* rendered (malloc'd), NULL without a kernel */
    int64_t cuda_grid;
    int cuda_block;
    int slot[CK_MAX_ARGS];  /* per kernel argument: 0 = result, i + 1 = function input i */
} CaseKernel;

static inline void case_kernel_free(CaseKernel *ck) {
    function_kernels_free(&ck->fk);
    free(ck->c_src);
    free(ck->cuda_src);
    ck->c_src = ck->cuda_src = NULL;
    ck->k = NULL;
}

/* Returns 0, or -1 with a message in err. */
static inline int case_kernel_build(const Module *m, CaseKernel *ck, char *err, size_t size) {
    const Function *f = m->funcs[0];
    Diag d = {0};
    if (codegen_lower_function(f, &ck->fk, &d) != 0) {
        snprintf(err, size, "lowering failed: %.400s", d.msg);
        return -1;
    }
    int step = ck->fk.schedule.step_of_op[f->n_ops - 1];
    for (int i = 0; i < ck->fk.n_kernels && step >= 0; i++)
        if (ck->fk.kernels[i].step == step) ck->k = &ck->fk.kernels[i];
    if (ck->k == NULL) return 0;
    if (ck->k->n_args > CK_MAX_ARGS) {
        snprintf(err, size, "kernel %s has %d arguments", ck->k->desc->name, ck->k->n_args);
        return -1;
    }
    for (int a = 0; a < ck->k->n_args; a++) {
        const Value *v = ck->k->args[a];
        ck->slot[a] = -1;
        if (v == f->ops[f->n_ops - 1]->result) ck->slot[a] = 0;
        for (int i = 0; i < f->n_inputs; i++)
            if (f->inputs[i] == v) ck->slot[a] = i + 1;
        if (ck->slot[a] < 0) {
            snprintf(err, size, "kernel %s: argument %%%s is neither the result nor an input",
                     ck->k->desc->name, v->name);
            return -1;
        }
    }
    const KernelDesc *cu = lowered_cuda_desc(ck->k);
    ck->c_src = kernel_render(ck->k->desc, KTARGET_C, &d);
    ck->cuda_src = ck->c_src ? kernel_render(cu, KTARGET_CUDA, &d) : NULL;
    if (ck->c_src == NULL || ck->cuda_src == NULL) {
        snprintf(err, size, "rendering failed: %.400s", d.msg);
        return -1;
    }
    kernel_cuda_launch(cu, &ck->cuda_grid, &ck->cuda_block);
    return 0;
}

/* Writes the C prelude and srcs[0..n) (NULL entries skipped) to dir/kernels.c, compiles them
 * with the system cc into dir/kernels.so (warnings are errors) and dlopens it. Returns the
 * handle, or NULL with the compiler's first lines on stderr and a message in err. */
static inline void *ck_compile_c(const char *dir, char *const *srcs, int n, char *err,
                                 size_t size) {
    char path[512], cmd[1536];
    snprintf(path, sizeof path, "%s/kernels.c", dir);
    FILE *src = fopen(path, "w");
    if (!src) {
        snprintf(err, size, "cannot write %s", path);
        return NULL;
    }
    fputs(codegen_c_prelude(), src);
    for (int i = 0; i < n; i++)
        if (srcs[i]) fprintf(src, "\n%s", srcs[i]);
    fclose(src);
    snprintf(cmd, sizeof cmd,
             "cc -std=c11 -O1 -fPIC -shared -fopenmp -Wall -Wextra -Werror -o %s/kernels.so %s "
             "-lopenblas -lm 2> %s/cc.log",
             dir, path, dir);
    if (system(cmd) != 0) {
        snprintf(cmd, sizeof cmd, "head -40 %s/cc.log >&2", dir);
        if (system(cmd)) {}
        snprintf(err, size, "generated C failed to compile (kept in %s)", dir);
        return NULL;
    }
    snprintf(path, sizeof path, "%s/kernels.so", dir);
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) snprintf(err, size, "dlopen: %s", dlerror());
    return lib;
}

#endif
