/* opt.h — internal to codegen/: the kernel rewrites (opt_*.c), run by rewrite.c. */
#ifndef CAPC_OPT_H
#define CAPC_OPT_H

#include "kernel.h"

/* A rewrite: changes kd in place. Returns 0, or -1 with d. */
typedef int (*KernelRewrite)(KernelDesc *kd, Diag *d);

int opt_serial(KernelDesc *kd, Diag *d);

#endif
