/* lower_norm.c — cross_entropy and its gradient, which run as kernels of their own.
 *
 * Numerics: row maxima in f32 (exact); exponentials in f32; sums and the loss total in double,
 * so statistics over vocabulary-sized rows stay within the kernel tests' 1e-5 of the float64
 * reference. cross_entropy is one work item (its mean couples every row); ids outside [0, V)
 * make the loss NaN instead of reading out of bounds. The normalizations (softmax, layer_norm,
 * batch_norm) are reductions of lower_rows.c. */
#include <math.h>

#include "lower.h"

static const KExpr *i64(KernelDesc *kd, int64_t v) { return ke_int(kd, v); }

/* acc = max over j < n of buf[base + j*stride] (a fresh f32 variable); NaN if any element is
 * NaN when propagate_nan (otherwise NaNs are passed over: the exponentials carry them). */
static const KExpr *row_max(KernelDesc *kd, int buf, const KExpr *base, int64_t n,
                            int64_t stride, bool propagate_nan) {
    int m = kd_var(kd, "mx", KT_F32), j = kd_var(kd, "j", KT_I64);
    ks_decl(kd, m, ke_f32(kd, -INFINITY));
    ks_for_n(kd, j, n);
    const KExpr *v = kd_let(kd, "v", ke_load(kd, buf, KADD(kd, base, KMUL(kd, ke_var(kd, j), i64(kd, stride)))));
    if (propagate_nan)
        ks_assign(kd, m, ke_call2(kd, KF_MAXNAN, ke_var(kd, m), v));
    else
        ks_assign(kd, m, ke_select(kd, ke_bin(kd, KB_GT, v, ke_var(kd, m)), v, ke_var(kd, m)));
    ks_end(kd);
    return ke_var(kd, m);
}

/* sum over j < n of exp(buf[base + j*stride] - mx), in double. */
static const KExpr *row_expsum(KernelDesc *kd, int buf, const KExpr *base, int64_t n,
                               int64_t stride, const KExpr *mx) {
    int s = kd_var(kd, "sum", KT_F64), j = kd_var(kd, "j", KT_I64);
    ks_decl(kd, s, ke_f64(kd, 0));
    ks_for_n(kd, j, n);
    const KExpr *x = ke_load(kd, buf, KADD(kd, base, KMUL(kd, ke_var(kd, j), i64(kd, stride))));
    ks_assign(kd, s, KADD(kd, ke_var(kd, s), ke_call(kd, KF_EXP, KSUB(kd, x, mx))));
    ks_end(kd);
    return ke_var(kd, s);
}

static void cross_entropy(KernelDesc *kd, const Op *op, const OpBufs *bf) {
    int64_t n = op->inputs[0]->shape.dims[0], v = op->inputs[0]->shape.dims[1];
    int64_t ignore = op_int(op, "ignore_index");
    int w = kd_var(kd, "w", KT_I64), r = kd_var(kd, "r", KT_I64);
    int total = kd_var(kd, "total", KT_F64), count = kd_var(kd, "count", KT_I64);
    ks_parfor(kd, w, 1);
    ks_decl(kd, total, ke_f64(kd, 0));
    ks_decl(kd, count, i64(kd, 0));
    ks_for_n(kd, r, n);
    const KExpr *t = kd_let(kd, "t", ke_cast(kd, KT_I64, ke_load(kd, bf->in[1], ke_var(kd, r))));
    ks_if(kd, ke_bin(kd, KB_NE, t, i64(kd, ignore)));
    ks_assign(kd, count, KADD(kd, ke_var(kd, count), i64(kd, 1)));
    ks_if(kd, ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, t, i64(kd, 0)), ke_bin(kd, KB_LT, t, i64(kd, v))));
    const KExpr *base = kd_let(kd, "base", KMUL(kd, ke_var(kd, r), i64(kd, v)));
    const KExpr *mx = row_max(kd, bf->in[0], base, v, 1, false);
    const KExpr *sum = row_expsum(kd, bf->in[0], base, v, 1, mx);
    /* -log_softmax at the target = max + log(sum) - logit */
    ks_assign(kd, total, KADD(kd, ke_var(kd, total),
                              KSUB(kd, KADD(kd, ke_cast(kd, KT_F64, mx), ke_call(kd, KF_LOG, sum)),
                                   ke_load(kd, bf->in[0], KADD(kd, base, t)))));
    ks_else(kd);
    ks_assign(kd, total, ke_f64(kd, NAN));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_store(kd, bf->out, i64(kd, 0),
             ke_select(kd, ke_bin(kd, KB_GT, ke_var(kd, count), i64(kd, 0)),
                       KDIV(kd, ke_var(kd, total), ke_cast(kd, KT_F64, ke_var(kd, count))),
                       ke_f64(kd, NAN)));
    ks_end(kd);
}

/* Row r: (softmax - onehot(target)) * dy / count, softmax * 0 where target == ignore_index. Each
 * item counts the counted rows itself (N is small next to N*V). */
static void cross_entropy_grad(KernelDesc *kd, const Op *op, const OpBufs *bf) {
    int64_t n = op->inputs[1]->shape.dims[0], v = op->inputs[1]->shape.dims[1];
    int64_t ignore = op_int(op, "ignore_index");
    int r = kd_var(kd, "r", KT_I64), q = kd_var(kd, "q", KT_I64), j = kd_var(kd, "j", KT_I64);
    int count = kd_var(kd, "count", KT_I64);
    ks_parfor(kd, r, n);
    ks_decl(kd, count, i64(kd, 0));
    ks_for_n(kd, q, n);
    ks_if(kd, ke_bin(kd, KB_NE, ke_load(kd, bf->in[2], ke_var(kd, q)), ke_i32(kd, ignore)));
    ks_assign(kd, count, KADD(kd, ke_var(kd, count), i64(kd, 1)));
    ks_end(kd);
    ks_end(kd);
    const KExpr *scale = kd_let(kd, "scale", ke_select(kd, ke_bin(kd, KB_GT, ke_var(kd, count), i64(kd, 0)),
                                KDIV(kd, ke_cast(kd, KT_F64, ke_load(kd, bf->in[0], i64(kd, 0))),
                                     ke_cast(kd, KT_F64, ke_var(kd, count))),
                                ke_f64(kd, NAN)));
    const KExpr *t = kd_let(kd, "t", ke_cast(kd, KT_I64, ke_load(kd, bf->in[2], ke_var(kd, r))));
    const KExpr *base = kd_let(kd, "base", KMUL(kd, ke_var(kd, r), i64(kd, v)));
    const KExpr *at = KADD(kd, base, ke_var(kd, j));
    ks_if(kd, ke_bin(kd, KB_EQ, t, i64(kd, ignore)));
    /* PyTorch's ignored row is softmax(row) * 0: zero, unless the row's softmax is NaN (a
     * NaN or +inf logit, or every logit -inf), i.e. unless its maximum is not finite; mx - mx
     * is exactly that: 0 for a finite maximum, else NaN */
    const KExpr *any_mx = row_max(kd, bf->in[1], base, v, 1, true);
    const KExpr *zero_or_nan = kd_let(kd, "z", KSUB(kd, any_mx, any_mx));
    ks_for_n(kd, j, v);
    ks_store(kd, bf->out, at, zero_or_nan);
    ks_end(kd);
    ks_else(kd);
    const KExpr *mx = row_max(kd, bf->in[1], base, v, 1, false);
    const KExpr *sum = row_expsum(kd, bf->in[1], base, v, 1, mx);
    ks_for_n(kd, j, v);
    const KExpr *p = KDIV(kd, ke_call(kd, KF_EXP, KSUB(kd, ke_load(kd, bf->in[1], at), mx)), sum);
    const KExpr *hot = ke_select(kd, ke_bin(kd, KB_EQ, ke_var(kd, j), t), ke_f64(kd, 1), ke_f64(kd, 0));
    ks_store(kd, bf->out, at, KMUL(kd, KSUB(kd, p, hot), scale));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
}

int lower_cross_entropy_op(KernelDesc *kd, const Op *op, const OpBufs *b, char *err, size_t n) {
    switch (op->kind) {
    case OP_CROSS_ENTROPY: cross_entropy(kd, op, b); return 0;
    case OP_CROSS_ENTROPY_GRAD: cross_entropy_grad(kd, op, b); return 0;
    default: snprintf(err, n, "not cross_entropy"); return -1;
    }
}
