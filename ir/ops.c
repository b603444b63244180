/* ops.c — the op table (expanded from ops.def) and each op's attribute schema.
 *
 * Attribute schemas are listed here, one array per op, in the order the IR printer writes
 * them. A default of NULL makes the attribute required. Shape rules (infer_NAME) live in
 * shape_rules.c, reference evaluators (ref_NAME) in ref_ops.c, gradient rules (grad_NAME) in
 * grad_rules.c; op_fail, the "OPNAME: message" error the first two share, is here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "op_impl.h"

#define NO_ATTRS(name) static const AttrSpec attrs_##name[] = {{0}};
#define ATTRS(name, ...) static const AttrSpec attrs_##name[] = {__VA_ARGS__, {0}};

ATTRS(param, {"name", ATTR_STRING, NULL})
ATTRS(full, {"shape", ATTR_INTS, NULL}, {"value", ATTR_FLOAT, "0.0"}, {"dtype", ATTR_STRING, "\"f32\""})
ATTRS(sinusoid_table, {"length", ATTR_INT, NULL}, {"dim", ATTR_INT, NULL})
ATTRS(causal_mask, {"size", ATTR_INT, NULL})

NO_ATTRS(relu)
NO_ATTRS(neg)
NO_ATTRS(exp)
NO_ATTRS(log)
NO_ATTRS(sqrt)
NO_ATTRS(rsqrt)
NO_ATTRS(tanh)
NO_ATTRS(cos)
NO_ATTRS(floor)
ATTRS(scale, {"factor", ATTR_FLOAT, NULL})
ATTRS(cast, {"dtype", ATTR_STRING, NULL})
ATTRS(dropout, {"p", ATTR_FLOAT, NULL}, {"stream", ATTR_INT, "0"})
ATTRS(padding_mask, {"pad", ATTR_INT, "0"})

NO_ATTRS(add)
NO_ATTRS(sub)
NO_ATTRS(mul)
NO_ATTRS(div)
NO_ATTRS(minimum)
NO_ATTRS(maximum)
NO_ATTRS(equal)
NO_ATTRS(where)
/* fn and args are set by the frontend from the statement's own "fn" and "args" keys (it
 * registers the function); args binds to the parameters after the tensor operands */
ATTRS(call, {"fn", ATTR_STRING, "\"\""}, {"args", ATTR_FLOATS, "[]"})

ATTRS(broadcast, {"shape", ATTR_INTS, NULL})
ATTRS(reshape, {"shape", ATTR_INTS, NULL})
ATTRS(transpose, {"perm", ATTR_INTS, NULL})
ATTRS(slice, {"axis", ATTR_INT, NULL}, {"start", ATTR_INT, NULL}, {"end", ATTR_INT, NULL},
      {"step", ATTR_INT, "1"})
ATTRS(concat, {"axis", ATTR_INT, NULL})
NO_ATTRS(embedding)

ATTRS(sum, {"axes", ATTR_INTS, NULL}, {"keepdim", ATTR_BOOL, "false"})
ATTRS(mean, {"axes", ATTR_INTS, NULL}, {"keepdim", ATTR_BOOL, "false"})
ATTRS(max, {"axes", ATTR_INTS, NULL}, {"keepdim", ATTR_BOOL, "false"})
ATTRS(reduce_to_shape, {"shape", ATTR_INTS, NULL})
ATTRS(softmax, {"axis", ATTR_INT, "-1"})
ATTRS(layer_norm, {"eps", ATTR_FLOAT, "1e-05"})
ATTRS(batch_norm, {"training", ATTR_BOOL, "false"}, {"eps", ATTR_FLOAT, "1e-05"},
      {"momentum", ATTR_FLOAT, "0.1"})
ATTRS(cross_entropy, {"ignore_index", ATTR_INT, "-100"})
ATTRS(max_pool2d, {"kernel", ATTR_INTS, NULL}, {"stride", ATTR_INTS, NULL},
      {"padding", ATTR_INTS, "[0,0]"})
ATTRS(adaptive_avg_pool2d, {"output", ATTR_INTS, NULL})

ATTRS(matmul, {"transpose_a", ATTR_BOOL, "false"}, {"transpose_b", ATTR_BOOL, "false"})
NO_ATTRS(linear)
ATTRS(conv2d, {"stride", ATTR_INTS, "[1,1]"}, {"padding", ATTR_INTS, "[0,0]"},
      {"dilation", ATTR_INTS, "[1,1]"}, {"groups", ATTR_INT, "1"})

ATTRS(update_slice, {"axis", ATTR_INT, NULL})
ATTRS(position_mask, {"size", ATTR_INT, NULL})

ATTRS(scatter_add, {"num", ATTR_INT, NULL})
NO_ATTRS(relu_grad)
ATTRS(slice_grad, {"axis", ATTR_INT, NULL}, {"start", ATTR_INT, NULL}, {"end", ATTR_INT, NULL},
      {"step", ATTR_INT, "1"}, {"size", ATTR_INT, NULL})
ATTRS(max_pool2d_grad, {"kernel", ATTR_INTS, NULL}, {"stride", ATTR_INTS, NULL},
      {"padding", ATTR_INTS, "[0,0]"})
ATTRS(adaptive_avg_pool2d_grad, {"input_size", ATTR_INTS, NULL})
ATTRS(conv2d_grad_input, {"stride", ATTR_INTS, "[1,1]"}, {"padding", ATTR_INTS, "[0,0]"},
      {"dilation", ATTR_INTS, "[1,1]"}, {"groups", ATTR_INT, "1"},
      {"input_size", ATTR_INTS, NULL})
ATTRS(conv2d_grad_weight, {"stride", ATTR_INTS, "[1,1]"}, {"padding", ATTR_INTS, "[0,0]"},
      {"dilation", ATTR_INTS, "[1,1]"}, {"groups", ATTR_INT, "1"},
      {"kernel", ATTR_INTS, NULL})
ATTRS(cross_entropy_grad, {"ignore_index", ATTR_INT, "-100"})

/* Ops with no differentiable operand (sources, ids-only ops) and the backward ops themselves
 * (autodiff never differentiates a gradient) share one explicit rule, grad_none, so autodiff
 * and the gradient tests recognize "no gradient" by comparing the table's pointer. */
#define grad_param grad_none
#define grad_full grad_none
#define grad_sinusoid_table grad_none
#define grad_causal_mask grad_none
#define grad_padding_mask grad_none
/* update_slice and position_mask only serve the sampling entry points (no training). */
#define grad_update_slice grad_none
#define grad_position_mask grad_none
#define grad_scatter_add grad_none
#define grad_relu_grad grad_none
#define grad_slice_grad grad_none
#define grad_max_pool2d_grad grad_none
#define grad_adaptive_avg_pool2d_grad grad_none
#define grad_conv2d_grad_input grad_none
#define grad_conv2d_grad_weight grad_none
#define grad_cross_entropy_grad grad_none

#define N_ATTRS(name) ((int)(sizeof(attrs_##name) / sizeof(attrs_##name[0])) - 1)

const OpInfo OP_TABLE[OP_COUNT] = {
#define OP(ENUM, name, min_in, max_in, fusion, doc)                                        \
    [OP_##ENUM] = {#name,        min_in, max_in, fusion, attrs_##name, N_ATTRS(name),      \
                   infer_##name, ref_##name, grad_##name, NULL, doc},
#include "ops.def"
#undef OP
};

int op_fail(const Op *op, char *err, size_t err_size, const char *fmt, ...) {
    int n = snprintf(err, err_size, "%s: ", op_info(op->kind)->name);
    if (n < 0 || (size_t)n >= err_size) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, err_size - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

int64_t op_view_offset(const Op *op) {
    if (op->kind == OP_RESHAPE) return 0;
    if (op->kind != OP_SLICE || op_int(op, "step") != 1) return -1;
    const Shape *x = &op->inputs[0]->shape;
    int axis = axis_normalize(op_int(op, "axis"), x->rank);
    if (axis < 0) return -1;
    for (int d = 0; d < axis; d++)
        if (x->dims[d] != 1) return -1; /* more than one block */
    int64_t stride = 1;
    for (int d = axis + 1; d < x->rank; d++) stride *= x->dims[d];
    return op_int(op, "start") * stride;
}

bool op_is_view(const Op *op) { return op_view_offset(op) >= 0; }

bool op_reduced_axes(const Op *op, bool reduced[IR_MAX_RANK]) {
    for (int d = 0; d < IR_MAX_RANK; d++) reduced[d] = false;
    if (op->n_inputs == 0) return false;
    const Shape *x = &op->inputs[0]->shape;
    switch (op->kind) {
    case OP_SUM: case OP_MEAN: case OP_MAX: {
        int n = 0;
        const int64_t *axes = op_ints(op, "axes", &n);
        for (int i = 0; i < n; i++) {
            int a = axis_normalize(axes[i], x->rank);
            if (a >= 0) reduced[a] = true;
        }
        return true;
    }
    case OP_REDUCE_TO_SHAPE: { /* x's leading extra axes and the target's size-1 axes */
        const Shape *t = &op->result->shape;
        int off = x->rank - t->rank;
        for (int d = 0; d < x->rank; d++)
            reduced[d] = d < off || (t->dims[d - off] == 1 && x->dims[d] != 1);
        return true;
    }
    case OP_SOFTMAX: {
        int a = axis_normalize(op_int(op, "axis"), x->rank);
        if (a >= 0) reduced[a] = true;
        return true;
    }
    case OP_LAYER_NORM:
        if (x->rank > 0) reduced[x->rank - 1] = true;
        return true;
    case OP_BATCH_NORM:
        if (!op_bool(op, "training")) return false;
        for (int d = 0; d < x->rank; d++) reduced[d] = d != 1;
        return true;
    default: return false;
    }
}

FusionKind op_fusion(const Op *op) {
    if (op->kind == OP_BATCH_NORM && !op_bool(op, "training")) return FUSE_ELEMENTWISE;
    return op_info(op->kind)->fusion;
}

int op_kind_from_name(const char *name) {
    for (int k = 0; k < OP_COUNT; k++)
        if (strcmp(OP_TABLE[k].name, name) == 0) return k;
    return -1;
}

const char *fusion_kind_name(FusionKind k) {
    switch (k) {
    case FUSE_ELEMENTWISE: return "elementwise";
    case FUSE_BROADCAST: return "broadcast";
    case FUSE_INJECTIVE: return "injective";
    case FUSE_REDUCTION: return "reduction";
    case FUSE_CONTRACTION: return "contraction";
    case FUSE_OPAQUE: return "opaque";
    }
    return "?";
}
