/* lower_contract.c — matmul and linear as gemm statements (C: cblas_sgemm per batch matrix;
 * CUDA: the renderer's simple loop form). Row-major throughout: a stored matrix's leading
 * dimension is its column count whether or not it is read transposed. Batch axes of matmul
 * broadcast: each operand's matrix offset is computed from the output batch index the way
 * numpy broadcasting picks it. */
#include "lower.h"

static KMat mat(KernelDesc *kd, int buf, const KExpr *offset, int64_t ld, bool trans) {
    (void)kd;
    KMat m = {buf, offset, ld, trans};
    return m;
}

static void matmul(KernelDesc *kd, const Op *op) {
    const Shape *as = &op->inputs[0]->shape, *bs = &op->inputs[1]->shape, *os = &op->result->shape;
    bool ta = op_bool(op, "transpose_a"), tb = op_bool(op, "transpose_b");
    int ra = as->rank, rb = bs->rank, ro = os->rank;
    int64_t m = os->dims[ro - 2], n = os->dims[ro - 1], k = as->dims[ra - (ta ? 2 : 1)];
    int64_t a_size = as->dims[ra - 2] * as->dims[ra - 1], b_size = bs->dims[rb - 2] * bs->dims[rb - 1];
    Shape bo = shape_make(ro - 2, os->dims), ba = shape_make(ra - 2, as->dims), bb = shape_make(rb - 2, bs->dims);
    int bv = kd_var(kd, "bt", KT_I64);
    const KExpr *idx[IR_MAX_RANK];
    ix_unravel(kd, ke_var(kd, bv), &bo, idx);
    KGemm g = {0};
    g.batch_var = bv;
    g.batch = shape_numel(&bo);
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = mat(kd, 1, KMUL(kd, ix_broadcast(kd, idx, &bo, &ba), ke_int(kd, a_size)), as->dims[ra - 1], ta);
    g.b = mat(kd, 2, KMUL(kd, ix_broadcast(kd, idx, &bo, &bb), ke_int(kd, b_size)), bs->dims[rb - 1], tb);
    g.c = mat(kd, 0, KMUL(kd, ix_ravel(kd, idx, &bo), ke_int(kd, m * n)), n, false);
    g.alpha = 1.0f;
    g.bias_buf = -1;
    ks_gemm(kd, &g);
}

/* x [..., K] @ weight[N, K]^T (+ bias[N]): one [rows, K] x [K, N] product. */
static void linear(KernelDesc *kd, const Op *op) {
    int64_t n = op->inputs[1]->shape.dims[0], k = op->inputs[1]->shape.dims[1];
    KGemm g = {0};
    g.batch_var = kd_var(kd, "bt", KT_I64);
    g.batch = 1;
    g.m = numel_of(op->inputs[0]) / k;
    g.n = n;
    g.k = k;
    g.a = mat(kd, 1, ke_int(kd, 0), k, false);
    g.b = mat(kd, 2, ke_int(kd, 0), k, true);
    g.c = mat(kd, 0, ke_int(kd, 0), n, false);
    g.alpha = 1.0f;
    g.bias_buf = op->n_inputs == 3 ? 3 : -1;
    ks_gemm(kd, &g);
}

int lower_contract(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n) {
    switch (op->kind) {
    case OP_MATMUL: matmul(kd, op); return 0;
    case OP_LINEAR: linear(kd, op); return 0;
    default: snprintf(err, n, "not a contraction"); return -1;
    }
}
