/* lower.h — internal to codegen/: what the lower_*.c files share. Each op family has a file;
 * lower.c holds the dispatch table (one entry per op of ops.def), the index helpers and
 * codegen_lower_function.
 *
 * A lowering function fills kd, whose arguments are already declared in the calling
 * convention's order (a0 = result, a1.. = operands; buffer index == argument index). It may
 * also build *cuda (via lower_new_desc) when the op's C form needs phases or scratch that a
 * single CUDA launch cannot have; otherwise the CUDA renderer prints kd as well. */
#ifndef CAPC_LOWER_H
#define CAPC_LOWER_H

#include <stdio.h>

#include "kernel.h"
#include "ops.h"

typedef int (*LowerFn)(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err,
                       size_t err_size);

/* A desc named name with op's result and operands declared as arguments. */
KernelDesc *lower_new_desc(const Op *op, const char *name);

KType ktype_of(DType dt);
int64_t numel_of(const Value *v);
/* Row-major stride of axis d of s (product of the dims after d). */
int64_t shape_stride(const Shape *s, int d);
/* idx[d] = the axis-d index of row-major element `flat` of shape s (size-1 axes give 0). */
void ix_unravel(KernelDesc *kd, const KExpr *flat, const Shape *s, const KExpr **idx);
/* The flat row-major index of idx in s. */
const KExpr *ix_ravel(KernelDesc *kd, const KExpr *const *idx, const Shape *s);
/* The flat index into `in` that numpy broadcasting reads for output index out_idx. */
const KExpr *ix_broadcast(KernelDesc *kd, const KExpr *const *out_idx, const Shape *out,
                          const Shape *in);
/* Product of dims [from, to). */
int64_t dims_product(const Shape *s, int from, int to);

/* Families (lower_*.c). */
int lower_elementwise(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n);
int lower_source(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n);
int lower_layout(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n);
int lower_reduce(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n);
int lower_norm(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n);
int lower_pool(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n);
int lower_contract(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n);
int lower_conv(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n);

#endif
