/* lower_elementwise.c — elementwise ops and sources: one work item per output element.
 *
 * Operands are read at the element numpy broadcasting picks (same-shape operands at the work
 * item's own index, so in-place aliasing of the result with an operand is safe: each item
 * reads its inputs before it writes). Arithmetic is f32 like the stored values; sinusoid_table
 * computes in double (angles up to `length` radians lose too much in f32). */
#include <math.h>
#include <string.h>

#include "lower.h"

/* The value of operand i at output element `flat` (with its unravelled index). */
static const KExpr *operand(KernelDesc *kd, const Op *op, int i, const KExpr *flat,
                            const KExpr *const *out_idx) {
    const Shape *in = &op->inputs[i]->shape, *out = &op->result->shape;
    if (shape_equal(in, out)) return ke_load(kd, i + 1, flat);
    return ke_load(kd, i + 1, ix_broadcast(kd, out_idx, out, in));
}

static const KExpr *unary(KernelDesc *kd, const Op *op, const KExpr *x) {
    switch (op->kind) {
    case OP_RELU: return ke_select(kd, ke_bin(kd, KB_GT, x, ke_f32(kd, 0)), x, ke_f32(kd, 0));
    case OP_NEG: return ke_neg(kd, x);
    case OP_EXP: return ke_call(kd, KF_EXP, x);
    case OP_LOG: return ke_call(kd, KF_LOG, x);
    case OP_SQRT: return ke_call(kd, KF_SQRT, x);
    case OP_RSQRT: return ke_call(kd, KF_RSQRT, x);
    case OP_TANH: return ke_call(kd, KF_TANH, x);
    case OP_COS: return ke_call(kd, KF_COS, x);
    case OP_FLOOR: return ke_call(kd, KF_FLOOR, x);
    case OP_SCALE: return KMUL(kd, x, ke_f32(kd, op_float(op, "factor")));
    case OP_CAST: return ke_cast(kd, ktype_of(op->result->dtype), x);
    case OP_PADDING_MASK:
        return ke_select(kd, ke_bin(kd, KB_EQ, x, ke_i32(kd, op_int(op, "pad"))),
                         ke_f32(kd, -INFINITY), ke_f32(kd, 0));
    default: return NULL;
    }
}

static const KExpr *binary(KernelDesc *kd, const Op *op, const KExpr *a, const KExpr *b) {
    switch (op->kind) {
    case OP_ADD: return KADD(kd, a, b);
    case OP_SUB: return KSUB(kd, a, b);
    case OP_MUL: return KMUL(kd, a, b);
    case OP_DIV: return KDIV(kd, a, b);
    case OP_MINIMUM: return ke_call2(kd, KF_MINNAN, a, b);
    case OP_MAXIMUM: return ke_call2(kd, KF_MAXNAN, a, b);
    case OP_EQUAL: return ke_select(kd, ke_bin(kd, KB_EQ, a, b), ke_f32(kd, 1), ke_f32(kd, 0));
    case OP_RELU_GRAD: /* a = dy, b = y */
        return ke_select(kd, ke_bin(kd, KB_GT, b, ke_f32(kd, 0)), a, ke_f32(kd, 0));
    default: return NULL;
    }
}

/* dropout: keep bit from Philox on (seed, step, stream, element), kept values scaled. */
static const KExpr *dropout(KernelDesc *kd, const Op *op, const KExpr *x, const KExpr *flat) {
    double p = op_float(op, "p");
    const KExpr *keep = ke_dropout_keep(kd, ke_load(kd, 2, ke_int(kd, 0)),
                                        ke_load(kd, 2, ke_int(kd, 1)),
                                        (uint32_t)op_int(op, "stream"), flat, p);
    return ke_select(kd, keep, KMUL(kd, x, ke_f32(kd, 1.0 / (1.0 - p))), ke_f32(kd, 0));
}

int lower_elementwise(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n) {
    const Shape *out = &op->result->shape;
    int i = kd_var(kd, "i", KT_I64);
    ks_parfor(kd, i, numel_of(op->result));
    const KExpr *flat = ke_var(kd, i), *idx[IR_MAX_RANK];
    bool broadcasts = false;
    for (int k = 0; k < op->n_inputs; k++)
        broadcasts |= op->kind != OP_DROPOUT && !shape_equal(&op->inputs[k]->shape, out);
    if (broadcasts) ix_unravel(kd, flat, out, idx);
    const KExpr *x = operand(kd, op, 0, flat, idx), *v;
    if (op->kind == OP_DROPOUT)
        v = dropout(kd, op, x, flat);
    else if (op->n_inputs == 1)
        v = unary(kd, op, x);
    else
        v = binary(kd, op, x, operand(kd, op, 1, flat, idx));
    if (!v) {
        snprintf(err, n, "not an elementwise op");
        return -1;
    }
    ks_store(kd, 0, flat, v);
    ks_end(kd);
    return 0;
}

/* ---- sources ---------------------------------------------------------------------------- */

static void sinusoid(KernelDesc *kd, const Op *op, const KExpr *flat) {
    int64_t dim = op_int(op, "dim");
    const KExpr *p = kd_let(kd, "p", KDIV(kd, flat, ke_int(kd, dim)));
    const KExpr *j = kd_let(kd, "j", KMOD(kd, flat, ke_int(kd, dim)));
    const KExpr *two_i = KSUB(kd, j, KMOD(kd, j, ke_int(kd, 2))); /* the pair's even index */
    /* freq = 10000^(-2i/dim) = exp(-ln(10000) * 2i / dim), in double like the reference */
    const KExpr *freq = ke_call(kd, KF_EXP, KDIV(kd, KMUL(kd, ke_f64(kd, -log(10000.0)),
                                                        ke_cast(kd, KT_F64, two_i)),
                                                 ke_f64(kd, (double)dim)));
    const KExpr *angle = kd_let(kd, "angle", KMUL(kd, ke_cast(kd, KT_F64, p), freq));
    const KExpr *even = ke_bin(kd, KB_EQ, KMOD(kd, j, ke_int(kd, 2)), ke_int(kd, 0));
    ks_store(kd, 0, flat,
             ke_select(kd, even, ke_call(kd, KF_SIN, angle), ke_call(kd, KF_COS, angle)));
}

int lower_source(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n) {
    int i = kd_var(kd, "i", KT_I64);
    ks_parfor(kd, i, numel_of(op->result));
    const KExpr *flat = ke_var(kd, i);
    switch (op->kind) {
    case OP_FULL: {
        double v = op_float(op, "value");
        ks_store(kd, 0, flat, op->result->dtype == DT_I32 ? ke_i32(kd, (int64_t)v) : ke_f32(kd, v));
        break;
    }
    case OP_SINUSOID_TABLE: sinusoid(kd, op, flat); break;
    case OP_POSITION_MASK: { /* 0 where j <= pos (a run-time i32[]), else -inf */
        const KExpr *pos = ke_cast(kd, KT_I64, ke_load(kd, 1, ke_int(kd, 0)));
        ks_store(kd, 0, flat,
                 ke_select(kd, ke_bin(kd, KB_LE, flat, pos), ke_f32(kd, 0), ke_f32(kd, -INFINITY)));
        break;
    }
    case OP_CAUSAL_MASK: {
        int64_t size = op_int(op, "size");
        const KExpr *q = KDIV(kd, flat, ke_int(kd, size)), *k = KMOD(kd, flat, ke_int(kd, size));
        ks_store(kd, 0, flat,
                 ke_select(kd, ke_bin(kd, KB_LE, k, q), ke_f32(kd, 0), ke_f32(kd, -INFINITY)));
        break;
    }
    default: snprintf(err, n, "not a source op"); return -1;
    }
    ks_end(kd);
    return 0;
}
