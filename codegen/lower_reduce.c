/* lower_reduce.c — sum, mean, max over axes and reduce_to_shape: one work item per output
 * element, a sequential loop over the elements that reduce into it.
 *
 * Sums accumulate in double (cheap next to the loads, and it keeps long reductions within
 * the 1e-5 the kernel tests demand); max stays in f32, where it is exact. max propagates NaN
 * like the reference (a NaN input wins). */
#include <math.h>

#include "lower.h"

typedef enum { RED_SUM, RED_MEAN, RED_MAX } Reduction;

/* Reduces x (operand 0) over the axes marked in reduced[] into the result, whose row-major
 * layout is x's shape with the reduced axes dropped (or kept as 1: the same layout). */
static void reduce_axes(KernelDesc *kd, const Op *op, const bool *reduced, Reduction how) {
    const Shape *x = &op->inputs[0]->shape;
    Shape kept = *x, inner = {0, {0}};
    for (int d = 0; d < x->rank; d++)
        if (reduced[d]) {
            kept.dims[d] = 1;
            inner.dims[inner.rank++] = x->dims[d];
        }
    int64_t count = shape_numel(&inner);
    int o = kd_var(kd, "o", KT_I64), r = kd_var(kd, "r", KT_I64);
    int acc = kd_var(kd, "acc", how == RED_MAX ? KT_F32 : KT_F64);
    ks_parfor(kd, o, numel_of(op->result));
    const KExpr *oidx[IR_MAX_RANK], *ridx[IR_MAX_RANK], *idx[IR_MAX_RANK];
    ix_unravel(kd, ke_var(kd, o), &kept, oidx);
    ks_decl(kd, acc, how == RED_MAX ? ke_f32(kd, -INFINITY) : ke_f64(kd, 0));
    ks_for_n(kd, r, count);
    ix_unravel(kd, ke_var(kd, r), &inner, ridx);
    for (int d = 0, k = 0; d < x->rank; d++) idx[d] = reduced[d] ? ridx[k++] : oidx[d];
    const KExpr *v = kd_let(kd, "v", ke_load(kd, 1, ix_ravel(kd, idx, x)));
    const KExpr *a = ke_var(kd, acc);
    if (how == RED_MAX)
        ks_assign(kd, acc, ke_select(kd, ke_bin(kd, KB_OR, ke_bin(kd, KB_GT, v, a),
                                                ke_call(kd, KF_ISNAN, v)), v, a));
    else
        ks_assign(kd, acc, KADD(kd, a, v));
    ks_end(kd);
    const KExpr *res = ke_var(kd, acc);
    if (how == RED_MEAN) res = KDIV(kd, res, ke_f64(kd, (double)count));
    ks_store(kd, 0, ke_var(kd, o), res);
    ks_end(kd);
}

int lower_reduce(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n) {
    const Shape *x = &op->inputs[0]->shape;
    bool reduced[IR_MAX_RANK] = {false};
    if (op->kind == OP_REDUCE_TO_SHAPE) {
        /* Undo a broadcast: x's leading extra axes and the target's size-1 axes sum away. */
        const Shape *t = &op->result->shape;
        int off = x->rank - t->rank;
        for (int d = 0; d < x->rank; d++)
            reduced[d] = d < off || (t->dims[d - off] == 1 && x->dims[d] != 1);
        reduce_axes(kd, op, reduced, RED_SUM);
        return 0;
    }
    int n_axes = 0;
    const int64_t *axes = op_ints(op, "axes", &n_axes);
    for (int i = 0; i < n_axes; i++) reduced[axis_normalize(axes[i], x->rank)] = true;
    switch (op->kind) {
    case OP_SUM: reduce_axes(kd, op, reduced, RED_SUM); return 0;
    case OP_MEAN: reduce_axes(kd, op, reduced, RED_MEAN); return 0;
    case OP_MAX: reduce_axes(kd, op, reduced, RED_MAX); return 0;
    default: snprintf(err, n, "not a reduction"); return -1;
    }
}
