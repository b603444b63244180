/* lower.h — internal to codegen/: what the lowering files share.
 *
 * A step of the schedule (passes/schedule.c: a fused group or one op) becomes one kernel. Its
 * arguments are the step's writes, then its reads (each value once); lower.c builds the
 * KernelDesc with those arguments declared and hands it to one of:
 *
 *   lower_group.c     elementwise / broadcast / injective ops and their groups: one work item
 *                     per element; a group whose writes differ in size runs each size as a
 *                     range of one parallel loop (the optimizer's many tensors)
 *   lower_rows.c      groups around reductions (sum, mean, max, softmax, layer_norm,
 *                     batch_norm in training mode): one work item per row, loops along it
 *   lower_contract.c  matmul / linear, lower_conv.c conv2d and its gradients: the contraction
 *                     plus the group's elementwise tail as an epilogue
 *   lower_attention.c the attention pattern, forward and backward
 *   lower_pool.c, lower_norm.c (cross_entropy), lower_layout.c (scatter_add): ops that run
 *                     alone
 *   lower_key.c       a step's structure as a key (LowerCache): a step shaped like an earlier
 *                     one takes that one's kernel instead of being lowered
 *
 * Values inside a group are computed by the evaluator (eval.c) from the op table's per-op
 * expression hooks (op_exprs.c): "the value of this op's result at this index".
 */
#ifndef CAPC_LOWER_H
#define CAPC_LOWER_H

#include <stdio.h>

#include "codegen.h"
#include "kernel.h"
#include "ops.h"
#include "passes.h"

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

/* ---- the evaluator (eval.c) -------------------------------------------------------------- */

/* An element of a value: its flat index in `shape`, and per-axis indices computed on demand. */
typedef struct Ix {
    const Shape *shape;
    const KExpr *flat;
    const KExpr *axis[IR_MAX_RANK]; /* NULL until ix_axis asks */
} Ix;

Ix ix_flat(const Shape *shape, const KExpr *flat);
Ix ix_axes(KernelDesc *kd, const Shape *shape, const KExpr *const *axes);
const KExpr *ix_axis(KernelDesc *kd, Ix *ix, int d);
/* The element of shape `in` that numpy broadcasting reads for element *out. */
Ix ix_bcast(KernelDesc *kd, Ix *out, const Shape *in);

typedef struct Eval Eval;

/* The evaluator of step `step` of s, filling kd, whose buffers are the step's arguments
 * (buf_of: per value id, the buffer, or -1). */
Eval *eval_new(KernelDesc *kd, const Schedule *s, int step, const int *buf_of);
void eval_free(Eval *ev);
KernelDesc *ev_kd(Eval *ev);
/* True when v is defined by an op of the step. */
bool ev_member(Eval *ev, const Value *v);
/* v's value at *at (in v's shape): a load for a value the step reads, else computed from its
 * op's expression hook (op_exprs.c), memoized within the current scope. */
const KExpr *ev_value(Eval *ev, const Value *v, Ix *at);
/* Operand i of op at *at (an index in the operand's own shape). */
const KExpr *ev_operand(Eval *ev, const Op *op, int i, Ix *at);
/* Operand i of op at the element numpy broadcasting reads for the result's element *out. */
const KExpr *ev_operand_bcast(Eval *ev, const Op *op, int i, Ix *out);
/* Makes e the value of v at every index for the rest of the current scope (a row statistic,
 * the contraction's accumulator at this element). */
void ev_pin(Eval *ev, const Value *v, const KExpr *e);
/* Like ev_pin, but only at the element whose flat index is `flat`. */
void ev_pin_at(Eval *ev, const Value *v, const KExpr *flat, const KExpr *e);
/* Computes v with fn instead of its op's expression hook (a lowering that knows more, such
 * as a softmax whose row statistics it has computed). */
typedef const KExpr *(*EvHook)(void *ctx, Eval *ev, const Op *op, Ix *at);
void ev_override(Eval *ev, const Value *v, EvHook fn, void *ctx);
/* Scopes follow the kernel's blocks: memoized values computed inside a loop or a branch are
 * forgotten when it closes. */
void ev_scope_push(Eval *ev);
void ev_scope_pop(Eval *ev);
/* A statement-level if (operands inside are evaluated only when cond holds). */
void ev_if(Eval *ev, const KExpr *cond);
void ev_else(Eval *ev);
void ev_end_if(Eval *ev);
/* Stores vals[0..n) (written by the step), each at flat index `flat` of its own shape: all
 * are computed first, then stored, since a write may share bytes with a read (memplan.c). */
void ev_store(Eval *ev, const Value *const *vals, int n, const KExpr *flat);
/* Records the first error (a group the lowering cannot evaluate); ev_error returns it or
 * NULL. */
void ev_fail(Eval *ev, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *ev_error(Eval *ev);

/* The per-op expression hooks (op_exprs.c), one per op of ops.def: the value of op's result
 * at element *at, with its operands from ev; NULL for ops that are not computed per element
 * (reductions, contractions and the ops that run alone). */
#define OP(ENUM, name, min_in, max_in, fusion, doc)                                        \
    const KExpr *kexpr_##name(Eval *ev, const Op *op, Ix *at);
#include "ops.def"
#undef OP
typedef const KExpr *(*KExprHook)(Eval *ev, const Op *op, Ix *at);
KExprHook kexpr_hook(int kind);

/* ---- step keys (lower_key.c) ------------------------------------------------------------- */

/* Before lowering f with cache c: sizes its scratch (-1 when out of memory). */
int lower_cache_begin(LowerCache *c, const Function *f);
/* The key of step `step` of s (kept in c until the next lookup) and its hash; *hit = the
 * kernel of an earlier step with that key, or NULL. -1 when out of memory. */
int lower_cache_lookup(LowerCache *c, const Schedule *s, int step, const LoweredKernel **hit,
                       uint64_t *hash);
/* Records k as the kernel of the key the last lookup made (hash its hash). -1 on OOM. */
int lower_cache_add(LowerCache *c, uint64_t hash, const LoweredKernel *k);

/* ---- lowerings ------------------------------------------------------------------------- */

/* A step's kernel: desc (and a separate CUDA form, or NULL). Each returns 0, or -1 with a
 * message in err (an internal error: a group the fusion pass should not have formed). */
typedef struct LowerCtx {
    const Schedule *s;
    int step;
    const int *buf_of; /* per value id: the kernel buffer, or -1 */
    KernelDesc *kd;
    KernelDesc *cuda;  /* set by lowerings whose CUDA form differs */
    char *err;
    size_t err_size;
} LowerCtx;

int lower_pointwise(LowerCtx *c);
int lower_rows(LowerCtx *c);
int lower_contraction(LowerCtx *c);
int lower_attention(LowerCtx *c);
int lower_alone(LowerCtx *c); /* pools, cross_entropy(_grad), scatter_add */

/* The buffers of an op that runs alone or as a group's contraction: result (-1: none) and
 * operands. */
typedef struct OpBufs {
    int out;
    int in[8];
} OpBufs;

/* What consumes a contraction's value at each element of its result: a fused group's
 * elementwise tail. emit runs inside the work item of element `flat` with the value `v`. */
typedef struct Epilogue {
    void (*emit)(struct Epilogue *ep, KernelDesc *kd, const KExpr *flat, const KExpr *v);
    void *ctx;
} Epilogue;

/* Contractions writing into b->out, then (ep != NULL) the epilogue per element. For conv the C
 * and CUDA forms differ (*cuda set). */
int lower_gemm_op(KernelDesc *kd, const Op *op, const OpBufs *b, Epilogue *ep, char *err,
                  size_t n);
int lower_conv_op(KernelDesc *kd, KernelDesc **cuda, const Op *op, const OpBufs *b,
                  Epilogue *ep, char *err, size_t n);
int lower_pool_op(KernelDesc *kd, const Op *op, const OpBufs *b, char *err, size_t n);
int lower_cross_entropy_op(KernelDesc *kd, const Op *op, const OpBufs *b, char *err, size_t n);
int lower_scatter_add_op(KernelDesc *kd, const Op *op, const OpBufs *b, char *err, size_t n);

/* The fresh desc a lowering builds a separate CUDA form in: same name and arguments. */
KernelDesc *lower_clone_args(const KernelDesc *kd);

#endif
