/* lower_layout.c — layout ops (broadcast, reshape as a copy, transpose, slice and its
 * gradient, concat), the embedding gather and its scatter_add backward.
 *
 * All but scatter_add are gathers with one work item per output element: the item computes
 * which input element it copies. scatter_add is a reduction in disguise (several ids may name
 * one row); to stay deterministic without atomics it runs one work item per column of the
 * result, each zeroing its column and adding the gathered rows in id order. Ids outside the
 * table read as NaN (embedding) or are skipped (scatter_add) instead of touching memory out
 * of bounds; the reference interpreter reports them as errors. */
#include "lower.h"

#include <math.h>

/* Opens the usual parfor over the result and returns its flat index with idx unravelled. */
static const KExpr *each_output(KernelDesc *kd, const Op *op, const KExpr **idx) {
    int i = kd_var(kd, "i", KT_I64);
    ks_parfor(kd, i, numel_of(op->result));
    const KExpr *flat = ke_var(kd, i);
    ix_unravel(kd, flat, &op->result->shape, idx);
    return flat;
}

static void transpose(KernelDesc *kd, const Op *op) {
    const KExpr *idx[IR_MAX_RANK], *in_idx[IR_MAX_RANK];
    const KExpr *flat = each_output(kd, op, idx);
    int n = 0, rank = op->inputs[0]->shape.rank;
    const int64_t *perm = op_ints(op, "perm", &n);
    for (int d = 0; d < rank; d++) in_idx[axis_normalize(perm[d], rank)] = idx[d];
    ks_store(kd, 0, flat, ke_load(kd, 1, ix_ravel(kd, in_idx, &op->inputs[0]->shape)));
}

static void slice(KernelDesc *kd, const Op *op) {
    const KExpr *idx[IR_MAX_RANK];
    const KExpr *flat = each_output(kd, op, idx);
    const Shape *in = &op->inputs[0]->shape;
    int axis = axis_normalize(op_int(op, "axis"), in->rank);
    idx[axis] = KADD(kd, ke_int(kd, op_int(op, "start")), KMUL(kd, idx[axis], ke_int(kd, op_int(op, "step"))));
    ks_store(kd, 0, flat, ke_load(kd, 1, ix_ravel(kd, idx, in)));
}

/* dy lands at start, start+step, ... < end along the axis; everything else is zero. */
static void slice_grad(KernelDesc *kd, const Op *op) {
    const KExpr *idx[IR_MAX_RANK];
    const KExpr *flat = each_output(kd, op, idx);
    const Shape *dy = &op->inputs[0]->shape;
    int axis = axis_normalize(op_int(op, "axis"), dy->rank);
    int64_t start = op_int(op, "start"), end = op_int(op, "end"), step = op_int(op, "step");
    const KExpr *a = kd_let(kd, "a", idx[axis]);
    const KExpr *rel = KSUB(kd, a, ke_int(kd, start));
    const KExpr *hit = ke_bin(kd, KB_AND,
                              ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, a, ke_int(kd, start)),
                                     ke_bin(kd, KB_LT, a, ke_int(kd, end))),
                              ke_bin(kd, KB_EQ, KMOD(kd, rel, ke_int(kd, step)), ke_int(kd, 0)));
    ks_if(kd, hit);
    idx[axis] = KDIV(kd, rel, ke_int(kd, step));
    ks_store(kd, 0, flat, ke_load(kd, 1, ix_ravel(kd, idx, dy)));
    ks_else(kd);
    ks_store(kd, 0, flat, ke_f32(kd, 0));
    ks_end(kd);
}

/* Each output element finds the operand that holds its position along the axis. */
static void concat(KernelDesc *kd, const Op *op) {
    const KExpr *idx[IR_MAX_RANK];
    const KExpr *flat = each_output(kd, op, idx);
    int axis = axis_normalize(op_int(op, "axis"), op->result->shape.rank);
    const KExpr *a = kd_let(kd, "a", idx[axis]);
    int64_t begin = 0;
    for (int k = 0; k < op->n_inputs; k++) {
        const Shape *in = &op->inputs[k]->shape;
        int64_t end = begin + in->dims[axis];
        bool last = k == op->n_inputs - 1;
        if (!last) ks_if(kd, ke_bin(kd, KB_LT, a, ke_int(kd, end)));
        idx[axis] = KSUB(kd, a, ke_int(kd, begin));
        ks_store(kd, 0, flat, ke_load(kd, k + 1, ix_ravel(kd, idx, in)));
        if (!last) ks_else(kd);
        begin = end;
    }
    for (int k = 0; k < op->n_inputs - 1; k++) ks_end(kd);
}

static void embedding(KernelDesc *kd, const Op *op) {
    int64_t num = op->inputs[0]->shape.dims[0], dim = op->inputs[0]->shape.dims[1];
    int i = kd_var(kd, "i", KT_I64);
    ks_parfor(kd, i, numel_of(op->result));
    const KExpr *flat = ke_var(kd, i);
    const KExpr *row = kd_let(kd, "row", ke_cast(kd, KT_I64, ke_load(kd, 2, KDIV(kd, flat, ke_int(kd, dim)))));
    const KExpr *ok = ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, row, ke_int(kd, 0)),
                             ke_bin(kd, KB_LT, row, ke_int(kd, num)));
    const KExpr *at = KADD(kd, KMUL(kd, row, ke_int(kd, dim)), KMOD(kd, flat, ke_int(kd, dim)));
    ks_store(kd, 0, flat, ke_select(kd, ok, ke_load(kd, 1, at), ke_f32(kd, NAN)));
}

static void scatter_add(KernelDesc *kd, const Op *op) {
    int64_t num = op->result->shape.dims[0], dim = op->result->shape.dims[1];
    int64_t n_ids = numel_of(op->inputs[1]);
    int j = kd_var(kd, "j", KT_I64), r = kd_var(kd, "r", KT_I64), k = kd_var(kd, "k", KT_I64);
    ks_parfor(kd, j, dim);
    const KExpr *col = ke_var(kd, j);
    ks_for_n(kd, r, num);
    ks_store(kd, 0, KADD(kd, KMUL(kd, ke_var(kd, r), ke_int(kd, dim)), col), ke_f32(kd, 0));
    ks_end(kd);
    ks_for_n(kd, k, n_ids);
    const KExpr *row = kd_let(kd, "row", ke_cast(kd, KT_I64, ke_load(kd, 2, ke_var(kd, k))));
    ks_if(kd, ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, row, ke_int(kd, 0)),
                     ke_bin(kd, KB_LT, row, ke_int(kd, num))));
    const KExpr *at = KADD(kd, KMUL(kd, row, ke_int(kd, dim)), col);
    ks_store(kd, 0, at,
             KADD(kd, ke_load(kd, 0, at),
                  ke_load(kd, 1, KADD(kd, KMUL(kd, ke_var(kd, k), ke_int(kd, dim)), col))));
    ks_end(kd);
    ks_end(kd);
}

/* out = x with x[pos:pos+n] along axis replaced by the update; pos is read at run time. An
 * out-of-range pos (the reference reports it) leaves x unchanged rather than writing outside.
 * Each item reads x at its own index, so the result may alias x (the KV cache update). */
static void update_slice(KernelDesc *kd, const Op *op) {
    const KExpr *idx[IR_MAX_RANK];
    const KExpr *flat = each_output(kd, op, idx);
    const Shape *x = &op->inputs[0]->shape, *u = &op->inputs[1]->shape;
    int axis = axis_normalize(op_int(op, "axis"), x->rank);
    int64_t n = u->dims[axis];
    const KExpr *pos = kd_let(kd, "pos", ke_cast(kd, KT_I64, ke_load(kd, 3, ke_int(kd, 0))));
    const KExpr *rel = kd_let(kd, "rel", KSUB(kd, idx[axis], pos));
    const KExpr *valid = ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, pos, ke_int(kd, 0)),
                                ke_bin(kd, KB_LE, pos, ke_int(kd, x->dims[axis] - n)));
    const KExpr *inside = ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, rel, ke_int(kd, 0)),
                                 ke_bin(kd, KB_LT, rel, ke_int(kd, n)));
    idx[axis] = rel;
    ks_if(kd, ke_bin(kd, KB_AND, valid, inside));
    ks_store(kd, 0, flat, ke_load(kd, 2, ix_ravel(kd, idx, u)));
    ks_else(kd);
    ks_store(kd, 0, flat, ke_load(kd, 1, flat));
    ks_end(kd);
}

int lower_layout(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n) {
    const KExpr *idx[IR_MAX_RANK];
    switch (op->kind) {
    case OP_BROADCAST: {
        const KExpr *flat = each_output(kd, op, idx);
        ks_store(kd, 0, flat,
                 ke_load(kd, 1, ix_broadcast(kd, idx, &op->result->shape, &op->inputs[0]->shape)));
        break;
    }
    case OP_RESHAPE: {
        int i = kd_var(kd, "i", KT_I64);
        ks_parfor(kd, i, numel_of(op->result));
        ks_store(kd, 0, ke_var(kd, i), ke_load(kd, 1, ke_var(kd, i)));
        break;
    }
    case OP_TRANSPOSE: transpose(kd, op); break;
    case OP_SLICE: slice(kd, op); break;
    case OP_SLICE_GRAD: slice_grad(kd, op); break;
    case OP_CONCAT: concat(kd, op); break;
    case OP_EMBEDDING: embedding(kd, op); break;
    case OP_SCATTER_ADD: scatter_add(kd, op); break;
    case OP_UPDATE_SLICE: update_slice(kd, op); break;
    default: snprintf(err, n, "not a layout op"); return -1;
    }
    ks_end(kd);
    return 0;
}
