/* lower_layout.c — scatter_add (the embedding's backward), which runs as a kernel of its
 * own: a reduction in disguise (several ids may name one row). To stay deterministic without
 * atomics it runs one work item per column of the result, each zeroing its column and adding
 * the gathered rows in id order; ids outside the table are skipped instead of touching
 * memory out of bounds (the reference interpreter reports them as errors). The gathers and
 * the other layout ops are per-element expressions (op_exprs.c). */
#include "lower.h"

int lower_scatter_add_op(KernelDesc *kd, const Op *op, const OpBufs *bf, char *err, size_t n) {
    (void)err, (void)n;
    int64_t num = op->result->shape.dims[0], dim = op->result->shape.dims[1];
    int64_t n_ids = numel_of(op->inputs[1]);
    int j = kd_var(kd, "j", KT_I64), r = kd_var(kd, "r", KT_I64), k = kd_var(kd, "k", KT_I64);
    ks_parfor(kd, j, dim);
    const KExpr *col = ke_var(kd, j);
    ks_for_n(kd, r, num);
    ks_store(kd, bf->out, KADD(kd, KMUL(kd, ke_var(kd, r), ke_int(kd, dim)), col), ke_f32(kd, 0));
    ks_end(kd);
    ks_for_n(kd, k, n_ids);
    const KExpr *row = kd_let(kd, "row", ke_cast(kd, KT_I64, ke_load(kd, bf->in[1], ke_var(kd, k))));
    ks_if(kd, ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, row, ke_int(kd, 0)),
                     ke_bin(kd, KB_LT, row, ke_int(kd, num))));
    const KExpr *at = KADD(kd, KMUL(kd, row, ke_int(kd, dim)), col);
    ks_store(kd, bf->out, at,
             KADD(kd, ke_load(kd, bf->out, at),
                  ke_load(kd, bf->in[0], KADD(kd, KMUL(kd, ke_var(kd, k), ke_int(kd, dim)), col))));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    return 0;
}
