/* rewrite.c — the kernel rewrites, in the order they run (the pipeline's "rewrite" stage,
 * between lowering and memory planning). Each lives in its own codegen/opt_NAME.c, takes one
 * kernel description and improves it without changing what it computes; a new one is a file
 * and a line in REWRITES. A rewrite of a kernel whose CUDA form is a separate description
 * sees both. */
#include "codegen.h"
#include "opt.h"

static const KernelRewrite REWRITES[] = {
    opt_serial, /* small parallel loops run on one thread (C target) */
};

int codegen_rewrite_kernels(FunctionKernels *fk, Diag *d) {
    for (int k = 0; k < fk->n_kernels; k++) {
        LoweredKernel *lk = &fk->kernels[k];
        if (lk->shared) continue; /* its owner, an identical earlier kernel, is rewritten */
        for (size_t r = 0; r < sizeof REWRITES / sizeof REWRITES[0]; r++) {
            if (REWRITES[r](lk->desc, d) != 0) return -1;
            if (lk->cuda != NULL && REWRITES[r](lk->cuda, d) != 0) return -1;
        }
    }
    return 0;
}
