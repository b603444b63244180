/* op_cases.h — one or more small instances of every op of the table, shared by the codegen
 * tests (C kernels against the reference, CUDA kernels through NVRTC). Each case builds a
 * one-op function in its own module; the test fails for any op of OP_TABLE without a case.
 *
 * Input modes (one letter per function input, in order): 'r' uniform f32 in [-2, 2],
 * 'p' positive f32 in [0.5, 2] (log, sqrt, variances), 's' small integers -2..2 as f32 (so
 * equal sees ties), 'i' i32 ids in [0, id_limit). Header-only (static), like op_test_util.h. */
#ifndef CAPC_TESTS_OP_CASES_H
#define CAPC_TESTS_OP_CASES_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "../ir/cfunc_test_util.h"

#define OC_MAX_INPUTS 8

typedef struct OpCase {
    const char *op;
    /* builds the case's op into f (inputs via oc_in) and returns it */
    Op *(*build)(Function *f);
    const char *modes;
    int64_t id_limit;
} OpCase;

/* "f32[2,3]" -> dtype, shape (case text is trusted) */
static inline void oc_type(const char *text, DType *dt, Shape *s) {
    *dt = strncmp(text, "i32", 3) == 0 ? DT_I32 : DT_F32;
    s->rank = 0;
    const char *p = strchr(text, '[') + 1;
    while (*p && *p != ']') {
        char *end;
        s->dims[s->rank++] = strtoll(p, &end, 10);
        p = *end == ',' ? end + 1 : end;
    }
}

static inline Value *oc_in(Function *f, const char *type) {
    DType dt;
    Shape s;
    oc_type(type, &dt, &s);
    return func_add_input(f, NULL, dt, s);
}

static inline Op *oc_op(Function *f, const char *name, ...) {
    Value *ins[OC_MAX_INPUTS];
    int n = 0;
    va_list ap;
    va_start(ap, name);
    for (Value *v; (v = va_arg(ap, Value *)) != NULL;) ins[n++] = v;
    va_end(ap);
    return func_add_op(f, op_kind_from_name(name), ins, n, "r", SRCLOC_NONE);
}

static inline void oc_ints(Op *op, const char *attr, int n, ...) {
    int64_t v[IR_MAX_RANK + 2];
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) v[i] = (int64_t)va_arg(ap, int);
    va_end(ap);
    op_set_ints(op, attr, v, n);
}

#define X(f, t) oc_in(f, t)

/* ---- the cases -------------------------------------------------------------------------- */

static Op *c_param(Function *f) {
    module_add_param(f->module, "w", DT_F32, shape_of(1, (int64_t)4), PARAM_WEIGHT, true, "zeros", SRCLOC_NONE);
    Op *o = oc_op(f, "param", NULL);
    op_set_string(o, "name", "w");
    return o;
}
static Op *c_full(Function *f) {
    Op *o = oc_op(f, "full", NULL);
    oc_ints(o, "shape", 2, 3, 4);
    op_set_float(o, "value", 1.5);
    return o;
}
static Op *c_full_i32(Function *f) {
    Op *o = oc_op(f, "full", NULL);
    oc_ints(o, "shape", 1, 5);
    op_set_float(o, "value", -7);
    op_set_string(o, "dtype", "i32");
    return o;
}
static Op *c_sinusoid(Function *f) {
    Op *o = oc_op(f, "sinusoid_table", NULL);
    op_set_int(o, "length", 50);
    op_set_int(o, "dim", 16);
    return o;
}
static Op *c_causal(Function *f) {
    Op *o = oc_op(f, "causal_mask", NULL);
    op_set_int(o, "size", 5);
    return o;
}
#define UNARY_CASE(fn, name)                                                               \
    static Op *c_##fn(Function *f) { return oc_op(f, name, X(f, "f32[3,37]"), NULL); }
UNARY_CASE(relu, "relu")
UNARY_CASE(neg, "neg")
UNARY_CASE(exp, "exp")
UNARY_CASE(log, "log")
UNARY_CASE(sqrt, "sqrt")
UNARY_CASE(rsqrt, "rsqrt")
UNARY_CASE(tanh, "tanh")
UNARY_CASE(cos, "cos")
UNARY_CASE(floor, "floor")
static Op *c_scale(Function *f) {
    Op *o = oc_op(f, "scale", X(f, "f32[2,5]"), NULL);
    op_set_float(o, "factor", 0.3);
    return o;
}
static Op *c_cast_f2i(Function *f) {
    Op *o = oc_op(f, "cast", X(f, "f32[4,5]"), NULL);
    op_set_string(o, "dtype", "i32");
    return o;
}
static Op *c_cast_i2f(Function *f) {
    Op *o = oc_op(f, "cast", X(f, "i32[4,5]"), NULL);
    op_set_string(o, "dtype", "f32");
    return o;
}
static Op *c_dropout(Function *f) {
    Op *o = oc_op(f, "dropout", X(f, "f32[4,100]"), X(f, "i32[2]"), NULL);
    op_set_float(o, "p", 0.3);
    op_set_int(o, "stream", 5);
    return o;
}
static Op *c_padding_mask(Function *f) { return oc_op(f, "padding_mask", X(f, "i32[3,5]"), NULL); }
static Op *c_add(Function *f) { return oc_op(f, "add", X(f, "f32[3,4]"), X(f, "f32[4]"), NULL); }
static Op *c_sub(Function *f) { return oc_op(f, "sub", X(f, "f32[2,1,4]"), X(f, "f32[3,1]"), NULL); }
static Op *c_mul(Function *f) { return oc_op(f, "mul", X(f, "f32[3,4]"), X(f, "f32[3,4]"), NULL); }
static Op *c_div(Function *f) { return oc_op(f, "div", X(f, "f32[3,4]"), X(f, "f32[3,1]"), NULL); }
static Op *c_minimum(Function *f) { return oc_op(f, "minimum", X(f, "f32[3,4]"), X(f, "f32[4]"), NULL); }
static Op *c_maximum(Function *f) { return oc_op(f, "maximum", X(f, "f32[1,4]"), X(f, "f32[3,1]"), NULL); }
/* a C function with a branch (select) and math calls, operands broadcast both ways */
static Op *c_call(Function *f) {
    Op *op = oc_op(f, "call", X(f, "f32[3,1]"), X(f, "f32[4]"), NULL);
    op_set_string(op, "fn", tu_cfunc_blend(f->module));
    return op;
}
static Op *c_where(Function *f) {
    return oc_op(f, "where", X(f, "f32[3,1]"), X(f, "f32[3,4]"), X(f, "f32[4]"), NULL);
}
static Op *c_equal(Function *f) { return oc_op(f, "equal", X(f, "f32[3,4]"), X(f, "f32[3,4]"), NULL); }
static Op *c_broadcast(Function *f) {
    Op *o = oc_op(f, "broadcast", X(f, "f32[3,1]"), NULL);
    oc_ints(o, "shape", 3, 2, 3, 4);
    return o;
}
static Op *c_reshape(Function *f) {
    Op *o = oc_op(f, "reshape", X(f, "f32[3,4]"), NULL);
    oc_ints(o, "shape", 2, 2, -1);
    return o;
}
static Op *c_transpose(Function *f) {
    Op *o = oc_op(f, "transpose", X(f, "f32[2,3,4]"), NULL);
    oc_ints(o, "perm", 3, 2, 0, 1);
    return o;
}
static Op *c_slice(Function *f) {
    Op *o = oc_op(f, "slice", X(f, "f32[4,10]"), NULL);
    op_set_int(o, "axis", 1);
    op_set_int(o, "start", 1);
    op_set_int(o, "end", 9);
    op_set_int(o, "step", 3);
    return o;
}
static Op *c_concat(Function *f) {
    Op *o = oc_op(f, "concat", X(f, "f32[2,3]"), X(f, "f32[2,5]"), X(f, "f32[2,1]"), NULL);
    op_set_int(o, "axis", -1);
    return o;
}
static Op *c_embedding(Function *f) { return oc_op(f, "embedding", X(f, "f32[10,4]"), X(f, "i32[2,3]"), NULL); }
static Op *c_sum(Function *f) {
    Op *o = oc_op(f, "sum", X(f, "f32[3,4,5]"), NULL);
    oc_ints(o, "axes", 2, 0, 2);
    return o;
}
static Op *c_mean(Function *f) {
    Op *o = oc_op(f, "mean", X(f, "f32[3,4,5]"), NULL);
    oc_ints(o, "axes", 1, 1);
    op_set_bool(o, "keepdim", true);
    return o;
}
static Op *c_max(Function *f) {
    Op *o = oc_op(f, "max", X(f, "f32[3,4,5]"), NULL);
    oc_ints(o, "axes", 1, -1);
    return o;
}
static Op *c_reduce_to_shape(Function *f) {
    Op *o = oc_op(f, "reduce_to_shape", X(f, "f32[2,3,4]"), NULL);
    oc_ints(o, "shape", 2, 3, 1);
    return o;
}
static Op *c_softmax(Function *f) {
    Op *o = oc_op(f, "softmax", X(f, "f32[3,4,5]"), NULL);
    op_set_int(o, "axis", 1);
    return o;
}
static Op *c_softmax_last(Function *f) { return oc_op(f, "softmax", X(f, "f32[6,33]"), NULL); }
static Op *c_layer_norm(Function *f) {
    return oc_op(f, "layer_norm", X(f, "f32[2,3,8]"), X(f, "f32[8]"), X(f, "f32[8]"), NULL);
}
static Op *c_batch_norm_train(Function *f) {
    Op *o = oc_op(f, "batch_norm", X(f, "f32[4,3,5,5]"), X(f, "f32[3]"), X(f, "f32[3]"),
                  X(f, "f32[3]"), X(f, "f32[3]"), NULL);
    op_set_bool(o, "training", true);
    return o;
}
static Op *c_batch_norm_eval(Function *f) {
    return oc_op(f, "batch_norm", X(f, "f32[2,3,4]"), X(f, "f32[3]"), X(f, "f32[3]"),
                 X(f, "f32[3]"), X(f, "f32[3]"), NULL);
}
static Op *c_cross_entropy(Function *f) {
    return oc_op(f, "cross_entropy", X(f, "f32[6,7]"), X(f, "i32[6]"), NULL);
}
static Op *c_cross_entropy_ignore0(Function *f) { /* ignore_index 0: class 0's rows skipped */
    Op *o = oc_op(f, "cross_entropy", X(f, "f32[6,7]"), X(f, "i32[6]"), NULL);
    op_set_int(o, "ignore_index", 0);
    return o;
}
static Op *c_max_pool2d(Function *f) {
    Op *o = oc_op(f, "max_pool2d", X(f, "f32[2,3,9,9]"), NULL);
    oc_ints(o, "kernel", 2, 3, 3);
    oc_ints(o, "stride", 2, 2, 2);
    oc_ints(o, "padding", 2, 1, 1);
    return o;
}
static Op *c_adaptive_avg_pool2d(Function *f) {
    Op *o = oc_op(f, "adaptive_avg_pool2d", X(f, "f32[2,3,7,9]"), NULL);
    oc_ints(o, "output", 2, 3, 4);
    return o;
}
static Op *c_matmul(Function *f) { return oc_op(f, "matmul", X(f, "f32[2,3,4]"), X(f, "f32[4,5]"), NULL); }
static Op *c_matmul_t(Function *f) {
    Op *o = oc_op(f, "matmul", X(f, "f32[2,1,4,3]"), X(f, "f32[3,5,4]"), NULL);
    op_set_bool(o, "transpose_a", true);
    op_set_bool(o, "transpose_b", true);
    return o;
}
static Op *c_linear(Function *f) {
    return oc_op(f, "linear", X(f, "f32[2,3,6]"), X(f, "f32[5,6]"), X(f, "f32[5]"), NULL);
}
static Op *c_linear_nobias(Function *f) { return oc_op(f, "linear", X(f, "f32[7,6]"), X(f, "f32[5,6]"), NULL); }
static void conv_attrs(Op *o, int stride, int pad, int dil, int groups) {
    oc_ints(o, "stride", 2, stride, stride);
    oc_ints(o, "padding", 2, pad, pad);
    oc_ints(o, "dilation", 2, dil, dil);
    op_set_int(o, "groups", groups);
}
static Op *c_conv2d(Function *f) {
    Op *o = oc_op(f, "conv2d", X(f, "f32[2,4,9,9]"), X(f, "f32[6,2,3,3]"), X(f, "f32[6]"), NULL);
    conv_attrs(o, 2, 1, 1, 2);
    return o;
}
/* 1x1, stride 1, no padding: the C kernel multiplies the input directly (no im2col) */
static Op *c_conv2d_1x1(Function *f) {
    Op *o = oc_op(f, "conv2d", X(f, "f32[2,4,5,5]"), X(f, "f32[6,4,1,1]"), X(f, "f32[6]"), NULL);
    conv_attrs(o, 1, 0, 1, 1);
    return o;
}
static Op *c_conv2d_dil(Function *f) {
    Op *o = oc_op(f, "conv2d", X(f, "f32[1,3,8,8]"), X(f, "f32[4,3,3,3]"), NULL);
    conv_attrs(o, 1, 1, 2, 1);
    return o;
}
static Op *c_scatter_add(Function *f) {
    Op *o = oc_op(f, "scatter_add", X(f, "f32[2,3,4]"), X(f, "i32[2,3]"), NULL);
    op_set_int(o, "num", 5);
    return o;
}
static Op *c_relu_grad(Function *f) { return oc_op(f, "relu_grad", X(f, "f32[3,4]"), X(f, "f32[3,4]"), NULL); }
static Op *c_slice_grad(Function *f) {
    Op *o = oc_op(f, "slice_grad", X(f, "f32[4,3]"), NULL);
    op_set_int(o, "axis", 1);
    op_set_int(o, "start", 1);
    op_set_int(o, "end", 9);
    op_set_int(o, "step", 3);
    op_set_int(o, "size", 10);
    return o;
}
static Op *c_max_pool2d_grad(Function *f) {
    Op *o = oc_op(f, "max_pool2d_grad", X(f, "f32[2,3,5,5]"), X(f, "f32[2,3,9,9]"), NULL);
    oc_ints(o, "kernel", 2, 3, 3);
    oc_ints(o, "stride", 2, 2, 2);
    oc_ints(o, "padding", 2, 1, 1);
    return o;
}
static Op *c_adaptive_avg_pool2d_grad(Function *f) {
    Op *o = oc_op(f, "adaptive_avg_pool2d_grad", X(f, "f32[2,3,3,4]"), NULL);
    oc_ints(o, "input_size", 2, 7, 9);
    return o;
}
static Op *c_conv2d_grad_input(Function *f) {
    Op *o = oc_op(f, "conv2d_grad_input", X(f, "f32[2,6,5,5]"), X(f, "f32[6,2,3,3]"), NULL);
    conv_attrs(o, 2, 1, 1, 2);
    oc_ints(o, "input_size", 2, 9, 9);
    return o;
}
static Op *c_conv2d_grad_input_dil(Function *f) {
    Op *o = oc_op(f, "conv2d_grad_input", X(f, "f32[1,4,6,6]"), X(f, "f32[4,3,3,3]"), NULL);
    conv_attrs(o, 1, 1, 2, 1);
    oc_ints(o, "input_size", 2, 8, 8);
    return o;
}
static Op *c_conv2d_grad_input_1x1(Function *f) {
    Op *o = oc_op(f, "conv2d_grad_input", X(f, "f32[2,6,5,5]"), X(f, "f32[6,4,1,1]"), NULL);
    conv_attrs(o, 1, 0, 1, 1);
    oc_ints(o, "input_size", 2, 5, 5);
    return o;
}
static Op *c_conv2d_grad_weight_1x1(Function *f) {
    Op *o = oc_op(f, "conv2d_grad_weight", X(f, "f32[2,6,5,5]"), X(f, "f32[2,4,5,5]"), NULL);
    conv_attrs(o, 1, 0, 1, 1);
    oc_ints(o, "kernel", 2, 1, 1);
    return o;
}
static Op *c_conv2d_grad_weight(Function *f) {
    Op *o = oc_op(f, "conv2d_grad_weight", X(f, "f32[2,6,5,5]"), X(f, "f32[2,4,9,9]"), NULL);
    conv_attrs(o, 2, 1, 1, 2);
    oc_ints(o, "kernel", 2, 3, 3);
    return o;
}
static Op *c_cross_entropy_grad(Function *f) {
    return oc_op(f, "cross_entropy_grad", X(f, "f32[]"), X(f, "f32[6,7]"), X(f, "i32[6]"), NULL);
}
static Op *c_cross_entropy_grad_ignore0(Function *f) {
    Op *o = oc_op(f, "cross_entropy_grad", X(f, "f32[]"), X(f, "f32[6,7]"), X(f, "i32[6]"), NULL);
    op_set_int(o, "ignore_index", 0);
    return o;
}

static Op *c_update_slice(Function *f) {
    Op *o = oc_op(f, "update_slice", X(f, "f32[2,6,3]"), X(f, "f32[2,2,3]"), X(f, "i32[]"), NULL);
    op_set_int(o, "axis", 1);
    return o;
}
static Op *c_position_mask(Function *f) {
    Op *o = oc_op(f, "position_mask", X(f, "i32[]"), NULL);
    op_set_int(o, "size", 6);
    return o;
}

static const OpCase OP_CASES[] = {
    {"param", c_param, "", 0},
    {"full", c_full, "", 0},
    {"full", c_full_i32, "", 0},
    {"sinusoid_table", c_sinusoid, "", 0},
    {"causal_mask", c_causal, "", 0},
    {"relu", c_relu, "r", 0},
    {"neg", c_neg, "r", 0},
    {"exp", c_exp, "r", 0},
    {"log", c_log, "p", 0},
    {"sqrt", c_sqrt, "p", 0},
    {"rsqrt", c_rsqrt, "p", 0},
    {"tanh", c_tanh, "r", 0},
    {"cos", c_cos, "r", 0},
    {"floor", c_floor, "r", 0},
    {"scale", c_scale, "r", 0},
    {"cast", c_cast_f2i, "r", 0},
    {"cast", c_cast_i2f, "i", 1000},
    {"dropout", c_dropout, "ri", 100000},
    {"padding_mask", c_padding_mask, "i", 4},
    {"add", c_add, "rr", 0},
    {"sub", c_sub, "rr", 0},
    {"mul", c_mul, "rr", 0},
    {"div", c_div, "rp", 0},
    {"minimum", c_minimum, "ss", 0},
    {"maximum", c_maximum, "ss", 0},
    {"equal", c_equal, "ss", 0},
    {"where", c_where, "srr", 0},
    {"call", c_call, "rr", 0},
    {"broadcast", c_broadcast, "r", 0},
    {"reshape", c_reshape, "r", 0},
    {"transpose", c_transpose, "r", 0},
    {"slice", c_slice, "r", 0},
    {"concat", c_concat, "rrr", 0},
    {"embedding", c_embedding, "ri", 10},
    {"sum", c_sum, "r", 0},
    {"mean", c_mean, "r", 0},
    {"max", c_max, "r", 0},
    {"reduce_to_shape", c_reduce_to_shape, "r", 0},
    {"softmax", c_softmax, "r", 0},
    {"softmax", c_softmax_last, "r", 0},
    {"layer_norm", c_layer_norm, "rrr", 0},
    {"batch_norm", c_batch_norm_train, "rrrrp", 0},
    {"batch_norm", c_batch_norm_eval, "rrrrp", 0},
    {"cross_entropy", c_cross_entropy, "ri", 7},
    {"cross_entropy", c_cross_entropy_ignore0, "ri", 7},
    {"max_pool2d", c_max_pool2d, "r", 0},
    {"adaptive_avg_pool2d", c_adaptive_avg_pool2d, "r", 0},
    {"matmul", c_matmul, "rr", 0},
    {"matmul", c_matmul_t, "rr", 0},
    {"linear", c_linear, "rrr", 0},
    {"linear", c_linear_nobias, "rr", 0},
    {"conv2d", c_conv2d, "rrr", 0},
    {"conv2d", c_conv2d_dil, "rr", 0},
    {"conv2d", c_conv2d_1x1, "rrr", 0},
    {"scatter_add", c_scatter_add, "ri", 5},
    {"relu_grad", c_relu_grad, "rr", 0},
    {"slice_grad", c_slice_grad, "r", 0},
    {"max_pool2d_grad", c_max_pool2d_grad, "rr", 0},
    {"adaptive_avg_pool2d_grad", c_adaptive_avg_pool2d_grad, "r", 0},
    {"conv2d_grad_input", c_conv2d_grad_input, "rr", 0},
    {"conv2d_grad_input", c_conv2d_grad_input_dil, "rr", 0},
    {"conv2d_grad_weight", c_conv2d_grad_weight, "rr", 0},
    {"conv2d_grad_input", c_conv2d_grad_input_1x1, "rr", 0},
    {"conv2d_grad_weight", c_conv2d_grad_weight_1x1, "rr", 0},
    {"cross_entropy_grad", c_cross_entropy_grad, "rri", 7},
    {"cross_entropy_grad", c_cross_entropy_grad_ignore0, "rri", 7},
    {"update_slice", c_update_slice, "rri", 5},
    {"position_mask", c_position_mask, "i", 6},
};

#define N_OP_CASES ((int)(sizeof OP_CASES / sizeof OP_CASES[0]))

/* Builds case i as function "c<i>" of a new module (caller frees). The op is the function's
 * only output. Returns NULL with err filled if the shape rule rejects the case. */
static inline Module *oc_build(int i, const Op **op_out, char *err, size_t err_size) {
    char name[32];
    snprintf(name, sizeof name, "c%d", i);
    Module *m = module_new(name);
    Function *f = module_add_function(m, name);
    Op *op = OP_CASES[i].build(f);
    /* The cases create inputs inside the operand list, whose evaluation order C leaves open:
     * put the function's inputs in operand order, so modes[i] describes operand i. */
    int at = 0;
    for (int k = 0; k < op->n_inputs; k++)
        for (int j = at; j < f->n_inputs; j++)
            if (f->inputs[j] == op->inputs[k]) {
                Value *t = f->inputs[at];
                f->inputs[at++] = f->inputs[j];
                f->inputs[j] = t;
                break;
            }
    if (op_infer(op, err, err_size) != 0) {
        module_free(m);
        return NULL;
    }
    func_add_output(f, "out", op->result);
    *op_out = op;
    return m;
}

/* Name of the first op of the table without a case, or NULL. */
static inline const char *oc_missing_op(void) {
    for (int k = 0; k < OP_COUNT; k++) {
        bool found = false;
        for (int i = 0; i < N_OP_CASES && !found; i++) found = strcmp(OP_CASES[i].op, OP_TABLE[k].name) == 0;
        if (!found) return OP_TABLE[k].name;
    }
    return NULL;
}

#endif
