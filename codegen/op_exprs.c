/* op_exprs.c — the per-op expression hooks: for every op of ops.def, kexpr_NAME says what
 * its result is at one element, given its operands through the evaluator (eval.c). This is
 * all code generation knows about an elementwise, broadcast or layout op: a new such op is
 * its table entry plus its hook here, and it then lowers alone and fuses with its neighbours
 * with no other change. Ops computed some other way (reductions, contractions, the ops that
 * run alone) say so with NOT_PER_ELEMENT and return NULL; the fusion pass never puts them
 * where a hook is needed, and test_c_kernels checks that every elementwise, broadcast and
 * injective op has a hook.
 *
 * Arithmetic is f32 like the stored values (the evaluator rounds each result to its dtype);
 * sinusoid_table and batch_norm compute in double as their reference does. Layout ops whose
 * operand element exists only under a condition (slice_grad, concat, update_slice, an
 * embedding id in range) read it inside a statement-level if, so no out-of-range element is
 * ever loaded.
 */
#include <math.h>
#include <stdlib.h>

#include "cfunc.h"
#include "lower.h"

#define NOT_PER_ELEMENT(name)                                                              \
    const KExpr *kexpr_##name(Eval *ev, const Op *op, Ix *at) {                           \
        (void)ev, (void)op, (void)at;                                                      \
        return NULL;                                                                       \
    }

static const KExpr *x0(Eval *ev, const Op *op, Ix *at) { return ev_operand_bcast(ev, op, 0, at); }
static const KExpr *x1(Eval *ev, const Op *op, Ix *at) { return ev_operand_bcast(ev, op, 1, at); }
static const KExpr *f32(Eval *ev, double v) { return ke_f32(ev_kd(ev), v); }
static const KExpr *i64(Eval *ev, int64_t v) { return ke_int(ev_kd(ev), v); }

/* ---- sources ---------------------------------------------------------------------------- */

NOT_PER_ELEMENT(param)

const KExpr *kexpr_full(Eval *ev, const Op *op, Ix *at) {
    double v = op_float(op, "value");
    return op->result->dtype == DT_I32 ? ke_i32(ev_kd(ev), (int64_t)v) : f32(ev, v);
}

/* pe[p, j]: sin or cos of p * 10000^(-2i/dim), 2i = j rounded down to even; in double (angles
 * up to `length` radians lose too much in f32). */
const KExpr *kexpr_sinusoid_table(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    int64_t dim = op_int(op, "dim");
    const KExpr *p = kd_let(kd, "p", KDIV(kd, at->flat, ke_int(kd, dim)));
    const KExpr *j = kd_let(kd, "j", KMOD(kd, at->flat, ke_int(kd, dim)));
    const KExpr *two_i = KSUB(kd, j, KMOD(kd, j, ke_int(kd, 2)));
    const KExpr *freq = ke_call(kd, KF_EXP, KDIV(kd, KMUL(kd, ke_f64(kd, -log(10000.0)),
                                                        ke_cast(kd, KT_F64, two_i)),
                                                 ke_f64(kd, (double)dim)));
    const KExpr *angle = kd_let(kd, "angle", KMUL(kd, ke_cast(kd, KT_F64, p), freq));
    const KExpr *even = ke_bin(kd, KB_EQ, KMOD(kd, j, ke_int(kd, 2)), ke_int(kd, 0));
    return ke_select(kd, even, ke_call(kd, KF_SIN, angle), ke_call(kd, KF_COS, angle));
}

const KExpr *kexpr_causal_mask(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    int64_t size = op_int(op, "size");
    const KExpr *q = KDIV(kd, at->flat, ke_int(kd, size)), *k = KMOD(kd, at->flat, ke_int(kd, size));
    return ke_select(kd, ke_bin(kd, KB_LE, k, q), f32(ev, 0), f32(ev, -INFINITY));
}

/* 0 where j <= pos (a run-time i32[]), else -inf */
const KExpr *kexpr_position_mask(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    Ix zero = ix_flat(&op->inputs[0]->shape, i64(ev, 0));
    const KExpr *pos = ke_cast(kd, KT_I64, ev_operand(ev, op, 0, &zero));
    return ke_select(kd, ke_bin(kd, KB_LE, at->flat, pos), f32(ev, 0), f32(ev, -INFINITY));
}

/* ---- elementwise, one operand ----------------------------------------------------------- */

/* x < 0 ? 0 : x, so a NaN stays NaN (torch.relu; `x > 0 ? x : 0` would hide it) */
const KExpr *kexpr_relu(Eval *ev, const Op *op, Ix *at) {
    const KExpr *x = x0(ev, op, at);
    return ke_select(ev_kd(ev), ke_bin(ev_kd(ev), KB_LT, x, f32(ev, 0)), f32(ev, 0), x);
}
const KExpr *kexpr_neg(Eval *ev, const Op *op, Ix *at) { return ke_neg(ev_kd(ev), x0(ev, op, at)); }
const KExpr *kexpr_exp(Eval *ev, const Op *op, Ix *at) { return ke_call(ev_kd(ev), KF_EXP, x0(ev, op, at)); }
const KExpr *kexpr_log(Eval *ev, const Op *op, Ix *at) { return ke_call(ev_kd(ev), KF_LOG, x0(ev, op, at)); }
const KExpr *kexpr_sqrt(Eval *ev, const Op *op, Ix *at) { return ke_call(ev_kd(ev), KF_SQRT, x0(ev, op, at)); }
const KExpr *kexpr_rsqrt(Eval *ev, const Op *op, Ix *at) { return ke_call(ev_kd(ev), KF_RSQRT, x0(ev, op, at)); }
const KExpr *kexpr_tanh(Eval *ev, const Op *op, Ix *at) { return ke_call(ev_kd(ev), KF_TANH, x0(ev, op, at)); }
const KExpr *kexpr_cos(Eval *ev, const Op *op, Ix *at) { return ke_call(ev_kd(ev), KF_COS, x0(ev, op, at)); }
const KExpr *kexpr_floor(Eval *ev, const Op *op, Ix *at) { return ke_call(ev_kd(ev), KF_FLOOR, x0(ev, op, at)); }

const KExpr *kexpr_scale(Eval *ev, const Op *op, Ix *at) {
    return KMUL(ev_kd(ev), x0(ev, op, at), f32(ev, op_float(op, "factor")));
}

/* f32 -> i32 truncates; NaN, the infinities and values outside i32 (undefined in C) become
 * INT32_MIN, as PyTorch's CPU cast gives them */
const KExpr *kexpr_cast(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    const KExpr *x = x0(ev, op, at);
    if (op->result->dtype != DT_I32 || op->inputs[0]->dtype == DT_I32)
        return ke_cast(kd, ktype_of(op->result->dtype), x);
    x = kd_let(kd, "v", x);
    const KExpr *fits = ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, x, f32(ev, -2147483648.0)),
                               ke_bin(kd, KB_LT, x, f32(ev, 2147483648.0)));
    return ke_select(kd, fits, ke_cast(kd, KT_I32, x), ke_i32(kd, INT32_MIN));
}

/* x * keep / (1-p); the keep bit from Philox on (seed, step, stream, element index) */
const KExpr *kexpr_dropout(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    double p = op_float(op, "p");
    Ix seed = ix_flat(&op->inputs[1]->shape, i64(ev, 0)), step = ix_flat(&op->inputs[1]->shape, i64(ev, 1));
    const KExpr *keep = ke_dropout_keep(kd, ev_operand(ev, op, 1, &seed),
                                        ev_operand(ev, op, 1, &step),
                                        (uint32_t)op_int(op, "stream"), at->flat, p);
    /* x times the mask value, as PyTorch: a dropped NaN stays NaN */
    return KMUL(kd, x0(ev, op, at), ke_select(kd, keep, f32(ev, 1.0 / (1.0 - p)), f32(ev, 0)));
}

const KExpr *kexpr_padding_mask(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    return ke_select(kd, ke_bin(kd, KB_EQ, x0(ev, op, at), ke_i32(kd, op_int(op, "pad"))),
                     f32(ev, -INFINITY), f32(ev, 0));
}

/* ---- elementwise, two operands ---------------------------------------------------------- */

const KExpr *kexpr_add(Eval *ev, const Op *op, Ix *at) { return KADD(ev_kd(ev), x0(ev, op, at), x1(ev, op, at)); }
const KExpr *kexpr_sub(Eval *ev, const Op *op, Ix *at) { return KSUB(ev_kd(ev), x0(ev, op, at), x1(ev, op, at)); }
const KExpr *kexpr_mul(Eval *ev, const Op *op, Ix *at) { return KMUL(ev_kd(ev), x0(ev, op, at), x1(ev, op, at)); }
const KExpr *kexpr_div(Eval *ev, const Op *op, Ix *at) { return KDIV(ev_kd(ev), x0(ev, op, at), x1(ev, op, at)); }

const KExpr *kexpr_minimum(Eval *ev, const Op *op, Ix *at) {
    return ke_call2(ev_kd(ev), KF_MINNAN, x0(ev, op, at), x1(ev, op, at));
}

const KExpr *kexpr_maximum(Eval *ev, const Op *op, Ix *at) {
    return ke_call2(ev_kd(ev), KF_MAXNAN, x0(ev, op, at), x1(ev, op, at));
}

const KExpr *kexpr_equal(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    return ke_select(kd, ke_bin(kd, KB_EQ, x0(ev, op, at), x1(ev, op, at)), f32(ev, 1), f32(ev, 0));
}

const KExpr *kexpr_where(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    const KExpr *c = ev_operand_bcast(ev, op, 0, at);
    /* both sides are already loaded values: a blend, not a branch, so the loop vectorizes
     * (train_step's guard puts one on every optimizer update) */
    return ke_blend(kd, ke_bin(kd, KB_NE, c, f32(ev, 0)), x1(ev, op, at), ev_operand_bcast(ev, op, 2, at));
}

/* ---- elementwise, any number of operands: a C function ----------------------------------- */

static const KExpr *cf_math(KernelDesc *kd, CfKind k, const KExpr *a) {
    static const KFn FNS[CF_KIND_COUNT] = {[CF_EXP] = KF_EXP, [CF_LOG] = KF_LOG,
                                           [CF_SQRT] = KF_SQRT, [CF_TANH] = KF_TANH,
                                           [CF_SIN] = KF_SIN, [CF_COS] = KF_COS,
                                           [CF_FLOOR] = KF_FLOOR, [CF_ISNAN] = KF_ISNAN};
    return ke_call(kd, FNS[k], a);
}

/* One node of the tree as a kernel expression over the nodes before it (e[]). */
static const KExpr *cf_node_expr(KernelDesc *kd, const CfNode *n, const KExpr *const *e) {
    static const KBinOp BINS[CF_KIND_COUNT] = {
        [CF_ADD] = KB_ADD, [CF_SUB] = KB_SUB, [CF_MUL] = KB_MUL, [CF_DIV] = KB_DIV,
        [CF_LT] = KB_LT, [CF_LE] = KB_LE, [CF_GT] = KB_GT, [CF_GE] = KB_GE,
        [CF_EQ] = KB_EQ, [CF_NE] = KB_NE, [CF_AND] = KB_AND, [CF_OR] = KB_OR};
    switch (n->kind) {
    case CF_CONST: return ke_f32(kd, n->value);
    case CF_NEG: return ke_neg(kd, e[n->a]);
    case CF_NOT: return ke_not(kd, e[n->a]);
    case CF_SELECT: return ke_select(kd, e[n->a], e[n->b], e[n->c]);
    case CF_EXP: case CF_LOG: case CF_SQRT: case CF_TANH: case CF_SIN: case CF_COS:
    case CF_FLOOR: case CF_ISNAN:
        return cf_math(kd, n->kind, e[n->a]);
    default: return ke_bin(kd, BINS[n->kind], e[n->a], e[n->b]);
    }
}

/* The function's tree, node by node in f32 (as the C source computes), over the operands
 * broadcast to this element and the scalar arguments as f32 literals. A node read more than once gets a temporary, so the kernel does
 * the work of the C function once however the tree shares it. */
const KExpr *kexpr_call(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    const CFunc *fn = module_find_cfunc(op->fn->module, op_string(op, "fn"));
    int n_args = 0;
    const double *args = op_floats(op, "args", &n_args);
    if (!fn) return NULL;
    const KExpr **e = calloc((size_t)fn->n_nodes, sizeof *e);
    int *uses = calloc((size_t)fn->n_nodes, sizeof *uses);
    const KExpr *result = NULL;
    if (e && uses) {
        for (int i = 0; i < fn->n_nodes; i++) {
            const CfNode *n = &fn->nodes[i];
            if (n->kind == CF_ARG) continue;
            const int ops[3] = {n->a, n->b, n->c};
            for (int k = 0; k < cf_arity(n->kind); k++) uses[ops[k]]++;
        }
        for (int i = 0; i < fn->n_nodes; i++) {
            const CfNode *n = &fn->nodes[i];
            bool scalar = n->kind == CF_ARG && n->a >= op->n_inputs;
            if (scalar && n->a - op->n_inputs >= n_args) break; /* the shape rule refuses this */
            /* a scalar argument is a literal of this kernel, like a constant of the body:
             * kernels differing only in it are different kernels (kd_equal compares it) */
            if (scalar) e[i] = ke_f32(kd, args[n->a - op->n_inputs]);
            else if (n->kind == CF_ARG) e[i] = ev_operand_bcast(ev, op, n->a, at);
            else e[i] = cf_node_expr(kd, n, e);
            if (uses[i] > 1 && !scalar) e[i] = kd_let(kd, "c", e[i]);
        }
        result = e[fn->n_nodes - 1];
    }
    free(e);
    free(uses);
    return result;
}

/* 0 where y <= 0, else dy (operands dy, y): a NaN y passes dy, as PyTorch's threshold_backward */
const KExpr *kexpr_relu_grad(Eval *ev, const Op *op, Ix *at) {
    const KExpr *dy = x0(ev, op, at), *y = x1(ev, op, at);
    return ke_select(ev_kd(ev), ke_bin(ev_kd(ev), KB_LE, y, f32(ev, 0)), f32(ev, 0), dy);
}

/* ---- layout ----------------------------------------------------------------------------- */

const KExpr *kexpr_broadcast(Eval *ev, const Op *op, Ix *at) { return x0(ev, op, at); }

/* A view: the same flat element of its operand (the evaluator sees through views itself). */
const KExpr *kexpr_reshape(Eval *ev, const Op *op, Ix *at) {
    Ix in = ix_flat(&op->inputs[0]->shape, at->flat);
    return ev_operand(ev, op, 0, &in);
}

const KExpr *kexpr_transpose(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    const Shape *in = &op->inputs[0]->shape;
    const KExpr *idx[IR_MAX_RANK];
    int n = 0;
    const int64_t *perm = op_ints(op, "perm", &n);
    for (int d = 0; d < in->rank; d++) idx[axis_normalize(perm[d], in->rank)] = ix_axis(kd, at, d);
    Ix src = ix_axes(kd, in, idx);
    return ev_operand(ev, op, 0, &src);
}

const KExpr *kexpr_slice(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    const Shape *in = &op->inputs[0]->shape;
    int axis = axis_normalize(op_int(op, "axis"), in->rank);
    const KExpr *idx[IR_MAX_RANK];
    for (int d = 0; d < in->rank; d++) idx[d] = ix_axis(kd, at, d);
    idx[axis] = KADD(kd, i64(ev, op_int(op, "start")), KMUL(kd, idx[axis], i64(ev, op_int(op, "step"))));
    Ix src = ix_axes(kd, in, idx);
    return ev_operand(ev, op, 0, &src);
}

/* A result variable set to `otherwise`; the caller assigns it inside its branches. */
static int result_var(Eval *ev, const Op *op, const KExpr *otherwise) {
    KernelDesc *kd = ev_kd(ev);
    int v = kd_var(kd, op_info(op->kind)->name, ktype_of(op->result->dtype));
    ks_decl(kd, v, otherwise);
    return v;
}

/* dy lands at start, start+step, ... < end along the axis; everything else is zero. */
const KExpr *kexpr_slice_grad(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    const Shape *dy = &op->inputs[0]->shape;
    int axis = axis_normalize(op_int(op, "axis"), dy->rank);
    int64_t start = op_int(op, "start"), end = op_int(op, "end"), step = op_int(op, "step");
    const KExpr *a = kd_let(kd, "a", ix_axis(kd, at, axis));
    const KExpr *rel = KSUB(kd, a, i64(ev, start));
    const KExpr *hit = ke_bin(kd, KB_AND,
                              ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, a, i64(ev, start)),
                                     ke_bin(kd, KB_LT, a, i64(ev, end))),
                              ke_bin(kd, KB_EQ, KMOD(kd, rel, i64(ev, step)), i64(ev, 0)));
    int v = result_var(ev, op, f32(ev, 0));
    ev_if(ev, hit);
    const KExpr *idx[IR_MAX_RANK];
    for (int d = 0; d < dy->rank; d++) idx[d] = ix_axis(kd, at, d);
    idx[axis] = KDIV(kd, rel, i64(ev, step));
    Ix src = ix_axes(kd, dy, idx);
    ks_assign(kd, v, ev_operand(ev, op, 0, &src));
    ev_end_if(ev);
    return ke_var(kd, v);
}

/* Each element finds the operand that holds its position along the axis. */
const KExpr *kexpr_concat(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    int axis = axis_normalize(op_int(op, "axis"), op->result->shape.rank);
    const KExpr *a = kd_let(kd, "a", ix_axis(kd, at, axis));
    int v = result_var(ev, op, ke_cast(kd, ktype_of(op->result->dtype), f32(ev, 0)));
    int64_t begin = 0;
    for (int k = 0; k < op->n_inputs; k++) {
        const Shape *in = &op->inputs[k]->shape;
        int64_t end = begin + in->dims[axis];
        bool last = k == op->n_inputs - 1;
        if (!last) ev_if(ev, ke_bin(kd, KB_LT, a, i64(ev, end)));
        const KExpr *idx[IR_MAX_RANK];
        for (int d = 0; d < in->rank; d++) idx[d] = ix_axis(kd, at, d);
        idx[axis] = KSUB(kd, a, i64(ev, begin));
        Ix src = ix_axes(kd, in, idx);
        ks_assign(kd, v, ev_operand(ev, op, k, &src));
        if (!last) ev_else(ev);
        begin = end;
    }
    for (int k = 0; k < op->n_inputs - 1; k++) ev_end_if(ev);
    return ke_var(kd, v);
}

/* weight [V,d] gathered at ids [...]; an id outside the table reads as NaN */
const KExpr *kexpr_embedding(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    int64_t num = op->inputs[0]->shape.dims[0], dim = op->inputs[0]->shape.dims[1];
    Ix id_at = ix_flat(&op->inputs[1]->shape, KDIV(kd, at->flat, i64(ev, dim)));
    const KExpr *row = kd_let(kd, "row", ke_cast(kd, KT_I64, ev_operand(ev, op, 1, &id_at)));
    const KExpr *ok = ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, row, i64(ev, 0)),
                             ke_bin(kd, KB_LT, row, i64(ev, num)));
    int v = result_var(ev, op, f32(ev, NAN));
    ev_if(ev, ok);
    Ix w_at = ix_flat(&op->inputs[0]->shape,
                      KADD(kd, KMUL(kd, row, i64(ev, dim)), KMOD(kd, at->flat, i64(ev, dim))));
    ks_assign(kd, v, ev_operand(ev, op, 0, &w_at));
    ev_end_if(ev);
    return ke_var(kd, v);
}

/* x with x[pos:pos+n] along axis replaced by the update; pos is read at run time. An
 * out-of-range pos (the reference reports it) leaves x unchanged. */
const KExpr *kexpr_update_slice(Eval *ev, const Op *op, Ix *at) {
    KernelDesc *kd = ev_kd(ev);
    const Shape *x = &op->inputs[0]->shape, *u = &op->inputs[1]->shape;
    int axis = axis_normalize(op_int(op, "axis"), x->rank);
    int64_t n = u->dims[axis];
    Ix zero = ix_flat(&op->inputs[2]->shape, i64(ev, 0));
    const KExpr *pos = kd_let(kd, "pos", ke_cast(kd, KT_I64, ev_operand(ev, op, 2, &zero)));
    const KExpr *rel = kd_let(kd, "rel", KSUB(kd, ix_axis(kd, at, axis), pos));
    const KExpr *valid = ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, pos, i64(ev, 0)),
                                ke_bin(kd, KB_LE, pos, i64(ev, x->dims[axis] - n)));
    const KExpr *inside = ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, rel, i64(ev, 0)),
                                 ke_bin(kd, KB_LT, rel, i64(ev, n)));
    int v = result_var(ev, op, f32(ev, 0));
    ev_if(ev, ke_bin(kd, KB_AND, valid, inside));
    const KExpr *idx[IR_MAX_RANK];
    for (int d = 0; d < u->rank; d++) idx[d] = ix_axis(kd, at, d);
    idx[axis] = rel;
    Ix src = ix_axes(kd, u, idx);
    ks_assign(kd, v, ev_operand(ev, op, 1, &src));
    ev_else(ev);
    Ix same = ix_flat(x, at->flat);
    ks_assign(kd, v, ev_operand(ev, op, 0, &same));
    ev_end_if(ev);
    return ke_var(kd, v);
}

/* ---- batch_norm in eval mode: elementwise with per-channel statistics ------------------ */

/* (x - mean[c]) * (w[c] / sqrt(var[c] + eps)) + b[c], in double as the reference; training
 * mode (batch statistics) is a reduction (lower_rows.c). */
const KExpr *kexpr_batch_norm(Eval *ev, const Op *op, Ix *at) {
    if (op_bool(op, "training")) return NULL;
    KernelDesc *kd = ev_kd(ev);
    Ix c = ix_flat(&op->inputs[1]->shape, ix_axis(kd, at, 1));
    const KExpr *x = ke_cast(kd, KT_F64, ev_operand(ev, op, 0, at));
    const KExpr *mean = ke_cast(kd, KT_F64, ev_operand(ev, op, 3, &c));
    const KExpr *var = ke_cast(kd, KT_F64, ev_operand(ev, op, 4, &c));
    const KExpr *inv = KDIV(kd, ke_f64(kd, 1), ke_call(kd, KF_SQRT, KADD(kd, var, ke_f64(kd, op_float(op, "eps")))));
    const KExpr *scale = KMUL(kd, inv, ev_operand(ev, op, 1, &c));
    const KExpr *shift = ke_cast(kd, KT_F64, ev_operand(ev, op, 2, &c));
    return KADD(kd, KMUL(kd, KSUB(kd, x, mean), scale), shift);
}

/* ---- computed some other way ------------------------------------------------------------ */

NOT_PER_ELEMENT(sum)
NOT_PER_ELEMENT(mean)
NOT_PER_ELEMENT(max)
NOT_PER_ELEMENT(reduce_to_shape)
NOT_PER_ELEMENT(softmax)
NOT_PER_ELEMENT(layer_norm)
NOT_PER_ELEMENT(cross_entropy)
NOT_PER_ELEMENT(max_pool2d)
NOT_PER_ELEMENT(adaptive_avg_pool2d)
NOT_PER_ELEMENT(matmul)
NOT_PER_ELEMENT(linear)
NOT_PER_ELEMENT(conv2d)
NOT_PER_ELEMENT(scatter_add)
NOT_PER_ELEMENT(max_pool2d_grad)
NOT_PER_ELEMENT(adaptive_avg_pool2d_grad)
NOT_PER_ELEMENT(conv2d_grad_input)
NOT_PER_ELEMENT(conv2d_grad_weight)
NOT_PER_ELEMENT(cross_entropy_grad)

static const KExprHook HOOKS[OP_COUNT] = {
#define OP(ENUM, name, min_in, max_in, fusion, doc) [OP_##ENUM] = kexpr_##name,
#include "ops.def"
#undef OP
};

KExprHook kexpr_hook(int kind) { return kind >= 0 && kind < OP_COUNT ? HOOKS[kind] : NULL; }
