/* test_shape_rules.c — every op's shape rule: the result type for good operands and a clear
 * error (op name, both types where two disagree) for each kind of user mistake. One case
 * function per op kind; a test loops over OP_TABLE and fails for any op without a case. */
#include "op_test_util.h"
#include "cfunc_test_util.h"

#define END NULL

static void case_param(TestCtx *c) {
    module_add_param(c->m, "enc.weight", DT_F32, tu_shape("f32[4,3]"), PARAM_WEIGHT, true,
                     "zeros", SRCLOC_NONE);
    Op *p = tu_op(c, "param", END);
    op_set_string(p, "name", "enc.weight");
    tu_expect_type(p, "f32[4,3]");
    Op *q = tu_op(c, "param", END);
    op_set_string(q, "name", "enc.wieght");
    tu_expect_error(q, "unknown parameter", "enc.wieght", END);
}

static void case_full(TestCtx *c) {
    Op *a = tu_op(c, "full", END);
    tu_ints(a, "shape", 2, 2, 3);
    tu_expect_type(a, "f32[2,3]");
    Op *s = tu_op(c, "full", END);
    op_set_ints(s, "shape", NULL, 0);
    op_set_string(s, "dtype", "i32");
    op_set_float(s, "value", 7);
    tu_expect_type(s, "i32[]");
    Op *z = tu_op(c, "full", END);
    tu_ints(z, "shape", 2, 2, 0);
    tu_expect_error(z, "must be > 0", END);
    Op *huge = tu_op(c, "full", END);
    tu_ints(huge, "shape", 3, 1 << 20, 1 << 20, 2);
    tu_expect_error(huge, "too large", END);
    Op *dt = tu_op(c, "full", END);
    tu_ints(dt, "shape", 1, 2);
    op_set_string(dt, "dtype", "f64");
    tu_expect_error(dt, "unknown dtype", "f64", END);
    Op *frac = tu_op(c, "full", END);
    tu_ints(frac, "shape", 1, 2);
    op_set_string(frac, "dtype", "i32");
    op_set_float(frac, "value", 0.5);
    tu_expect_error(frac, "not an i32", END);
}

static void case_sinusoid_table(TestCtx *c) {
    Op *a = tu_op(c, "sinusoid_table", END);
    op_set_int(a, "length", 15);
    op_set_int(a, "dim", 64);
    tu_expect_type(a, "f32[15,64]");
    Op *b = tu_op(c, "sinusoid_table", END);
    op_set_int(b, "length", 0);
    op_set_int(b, "dim", 64);
    tu_expect_error(b, "length must be > 0", END);
    Op *d = tu_op(c, "sinusoid_table", END);
    op_set_int(d, "length", 4);
    op_set_int(d, "dim", 5);
    tu_expect_error(d, "even", END);
}

static void case_causal_mask(TestCtx *c) {
    Op *a = tu_op(c, "causal_mask", END);
    op_set_int(a, "size", 15);
    tu_expect_type(a, "f32[15,15]");
    Op *b = tu_op(c, "causal_mask", END);
    op_set_int(b, "size", -1);
    tu_expect_error(b, "size must be > 0", END);
}

/* The f32 unary ops share one rule: same type out, ids rejected. */
static void unary_case(TestCtx *c, const char *name) {
    Op *a = tu_op(c, name, tu_in(c, "f32[2,3]", NULL), END);
    if (op_attr_index(a->kind, "factor") >= 0) op_set_float(a, "factor", 2.0);
    tu_expect_type(a, "f32[2,3]");
    Op *b = tu_op(c, name, tu_in(c, "i32[4]", NULL), END);
    if (op_attr_index(b->kind, "factor") >= 0) op_set_float(b, "factor", 2.0);
    tu_expect_error(b, "must be f32", "i32[4]", END);
}
static void case_relu(TestCtx *c) { unary_case(c, "relu"); }
static void case_neg(TestCtx *c) { unary_case(c, "neg"); }
static void case_exp(TestCtx *c) { unary_case(c, "exp"); }
static void case_log(TestCtx *c) { unary_case(c, "log"); }
static void case_sqrt(TestCtx *c) { unary_case(c, "sqrt"); }
static void case_rsqrt(TestCtx *c) { unary_case(c, "rsqrt"); }
static void case_tanh(TestCtx *c) { unary_case(c, "tanh"); }
static void case_scale(TestCtx *c) { unary_case(c, "scale"); }
static void case_cos(TestCtx *c) { unary_case(c, "cos"); }
static void case_floor(TestCtx *c) { unary_case(c, "floor"); }

static void case_cast(TestCtx *c) {
    Op *a = tu_op(c, "cast", tu_in(c, "f32[2,3]", NULL), END);
    op_set_string(a, "dtype", "i32");
    tu_expect_type(a, "i32[2,3]");
    Op *b = tu_op(c, "cast", tu_in(c, "i32[5]", NULL), END);
    op_set_string(b, "dtype", "f32");
    tu_expect_type(b, "f32[5]");
    Op *d = tu_op(c, "cast", tu_in(c, "i32[5]", NULL), END);
    op_set_string(d, "dtype", "float");
    tu_expect_error(d, "unknown dtype", "float", END);
}

static void case_dropout(TestCtx *c) {
    Value *rng = tu_in(c, "i32[2]", NULL);
    Op *a = tu_op(c, "dropout", tu_in(c, "f32[4,8]", NULL), rng, END);
    op_set_float(a, "p", 0.1);
    tu_expect_type(a, "f32[4,8]");
    Op *p = tu_op(c, "dropout", tu_in(c, "f32[4,8]", NULL), rng, END);
    op_set_float(p, "p", 1.0);
    tu_expect_error(p, "p must be in [0, 1)", END);
    Op *r = tu_op(c, "dropout", tu_in(c, "f32[4,8]", NULL), tu_in(c, "i32[3]", NULL), END);
    op_set_float(r, "p", 0.1);
    tu_expect_error(r, "rng must be i32[2]", "i32[3]", END);
    Op *s = tu_op(c, "dropout", tu_in(c, "f32[4]", NULL), rng, END);
    op_set_float(s, "p", 0.1);
    op_set_int(s, "stream", -3);
    tu_expect_error(s, "stream", END);
}

static void case_padding_mask(TestCtx *c) {
    Op *a = tu_op(c, "padding_mask", tu_in(c, "i32[16,15]", NULL), END);
    tu_expect_type(a, "f32[16,15]");
    Op *b = tu_op(c, "padding_mask", tu_in(c, "f32[16,15]", NULL), END);
    tu_expect_error(b, "ids must be i32", "f32[16,15]", END);
}

static void binary_case(TestCtx *c, const char *name) {
    tu_expect_type(tu_op(c, name, tu_in(c, "f32[16,1,64]", NULL), tu_in(c, "f32[5,64]", NULL), END),
                   "f32[16,5,64]");
    tu_expect_type(tu_op(c, name, tu_in(c, "f32[]", NULL), tu_in(c, "f32[3]", NULL), END), "f32[3]");
    Op *bad = tu_op(c, name, tu_in(c, "f32[16,64]", NULL), tu_in(c, "f32[16,32]", NULL), END);
    tu_expect_error(bad, "cannot broadcast f32[16,64] with f32[16,32]", END);
    Op *ids = tu_op(c, name, tu_in(c, "f32[3]", NULL), tu_in(c, "i32[3]", NULL), END);
    tu_expect_error(ids, "must be f32", "f32[3]", "i32[3]", END);
}
static void case_add(TestCtx *c) { binary_case(c, "add"); }
static void case_sub(TestCtx *c) { binary_case(c, "sub"); }
static void case_mul(TestCtx *c) { binary_case(c, "mul"); }
static void case_div(TestCtx *c) { binary_case(c, "div"); }
static void case_minimum(TestCtx *c) { binary_case(c, "minimum"); }
static void case_maximum(TestCtx *c) { binary_case(c, "maximum"); }
static void case_equal(TestCtx *c) { binary_case(c, "equal"); }
static void case_where(TestCtx *c) {
    tu_expect_type(tu_op(c, "where", tu_in(c, "f32[3,1]", NULL), tu_in(c, "f32[2,3,4]", NULL),
                         tu_in(c, "f32[4]", NULL), END),
                   "f32[2,3,4]");
    tu_expect_error(tu_op(c, "where", tu_in(c, "i32[3]", NULL), tu_in(c, "f32[3]", NULL),
                          tu_in(c, "f32[3]", NULL), END),
                    "operands must be f32, got i32[3], f32[3] and f32[3]", END);
    tu_expect_error(tu_op(c, "where", tu_in(c, "f32[2]", NULL), tu_in(c, "f32[3]", NULL),
                          tu_in(c, "f32[3]", NULL), END),
                    "cannot broadcast f32[2], f32[3] and f32[3]", END);
}

/* call: operands broadcast like a binary op; the function must exist and take as many
 * operands as given; every operand f32 */
static void case_call(TestCtx *c) {
    const char *fn = tu_cfunc_blend(c->m);
    Op *a = tu_op(c, "call", tu_in(c, "f32[3,1]", NULL), tu_in(c, "f32[4]", NULL), END);
    op_set_string(a, "fn", fn);
    tu_expect_type(a, "f32[3,4]");
    Op *b = tu_op(c, "call", tu_in(c, "f32[3]", NULL), END);
    op_set_string(b, "fn", fn);
    tu_expect_error(b, "blend takes 2 operands, got 1", END);
    Op *d = tu_op(c, "call", tu_in(c, "f32[3]", NULL), tu_in(c, "i32[3]", NULL), END);
    op_set_string(d, "fn", fn);
    tu_expect_error(d, "second operand of blend must be f32, got i32[3]", END);
    Op *e = tu_op(c, "call", tu_in(c, "f32[2]", NULL), tu_in(c, "f32[3]", NULL), END);
    op_set_string(e, "fn", fn);
    tu_expect_error(e, "cannot broadcast second operand f32[3] with f32[2]", END);
    Op *u = tu_op(c, "call", tu_in(c, "f32[3]", NULL), END);
    op_set_string(u, "fn", "nope");
    tu_expect_error(u, "no C function 'nope'", END);
    /* scalar arguments bind to the parameters after the operands: gate(a, b, t) */
    const char *gate = tu_cfunc_gate(c->m);
    Op *g = tu_op(c, "call", tu_in(c, "f32[3,1]", NULL), tu_in(c, "f32[4]", NULL), END);
    op_set_string(g, "fn", gate);
    op_set_floats(g, "args", (const double[]){0.5}, 1);
    tu_expect_type(g, "f32[3,4]");
    Op *g2 = tu_op(c, "call", tu_in(c, "f32[3]", NULL), tu_in(c, "f32[3]", NULL), END);
    op_set_string(g2, "fn", gate);
    op_set_floats(g2, "args", (const double[]){0.5, 2}, 2);
    tu_expect_error(g2, "gate takes 3 parameters, got 2 operands and 2 scalar arguments", END);
    Op *g3 = tu_op(c, "call", tu_in(c, "f32[3]", NULL), END);
    op_set_string(g3, "fn", gate);
    op_set_floats(g3, "args", (const double[]){0.5}, 1);
    tu_expect_error(g3, "gate takes 3 parameters, got 1 operand and 1 scalar argument", END);
}

static void case_broadcast(TestCtx *c) {
    Op *a = tu_op(c, "broadcast", tu_in(c, "f32[3,1]", NULL), END);
    tu_ints(a, "shape", 3, 2, 3, 4);
    tu_expect_type(a, "f32[2,3,4]");
    Op *b = tu_op(c, "broadcast", tu_in(c, "f32[3,2]", NULL), END);
    tu_ints(b, "shape", 2, 3, 4);
    tu_expect_error(b, "cannot broadcast f32[3,2] to f32[3,4]", END);
    Op *d = tu_op(c, "broadcast", tu_in(c, "f32[3]", NULL), END);
    tu_ints(d, "shape", 1, 1);
    tu_expect_error(d, "cannot broadcast f32[3] to f32[1]", END);
}

static void case_reshape(TestCtx *c) {
    Op *a = tu_op(c, "reshape", tu_in(c, "f32[16,15,64]", NULL), END);
    tu_ints(a, "shape", 4, 16, -1, 4, 16);
    tu_expect_type(a, "f32[16,15,4,16]");
    Op *b = tu_op(c, "reshape", tu_in(c, "f32[2,3]", NULL), END);
    tu_ints(b, "shape", 2, 4, 2);
    tu_expect_error(b, "cannot reshape f32[2,3]", "f32[4,2]", END);
    Op *d = tu_op(c, "reshape", tu_in(c, "f32[2,3]", NULL), END);
    tu_ints(d, "shape", 2, -1, -1);
    tu_expect_error(d, "more than one -1", END);
    Op *e = tu_op(c, "reshape", tu_in(c, "f32[2,3]", NULL), END);
    tu_ints(e, "shape", 2, 4, -1);
    tu_expect_error(e, "cannot reshape f32[2,3]", "[4,-1]", END);
    Op *z = tu_op(c, "reshape", tu_in(c, "f32[2,3]", NULL), END);
    tu_ints(z, "shape", 2, 0, 6);
    tu_expect_error(z, "must be > 0", END);
    Op *s = tu_op(c, "reshape", tu_in(c, "i32[1]", NULL), END);
    op_set_ints(s, "shape", NULL, 0);
    tu_expect_type(s, "i32[]");
}

static void case_transpose(TestCtx *c) {
    Op *a = tu_op(c, "transpose", tu_in(c, "f32[2,3,4,5]", NULL), END);
    tu_ints(a, "perm", 4, 0, 2, 1, 3);
    tu_expect_type(a, "f32[2,4,3,5]");
    Op *n = tu_op(c, "transpose", tu_in(c, "f32[2,3,4]", NULL), END);
    tu_ints(n, "perm", 3, 0, -1, 1);
    tu_expect_type(n, "f32[2,4,3]");
    Op *b = tu_op(c, "transpose", tu_in(c, "f32[2,3]", NULL), END);
    tu_ints(b, "perm", 2, 0, 0);
    tu_expect_error(b, "not a permutation", "f32[2,3]", END);
    Op *d = tu_op(c, "transpose", tu_in(c, "f32[2,3]", NULL), END);
    tu_ints(d, "perm", 3, 0, 1, 2);
    tu_expect_error(d, "rank 2", END);
}

static void case_slice(TestCtx *c) {
    Op *a = tu_op(c, "slice", tu_in(c, "i32[16,16]", NULL), END);
    op_set_int(a, "axis", 1);
    op_set_int(a, "start", 1);
    op_set_int(a, "end", 16);
    tu_expect_type(a, "i32[16,15]");
    Op *s = tu_op(c, "slice", tu_in(c, "f32[10]", NULL), END);
    op_set_int(s, "axis", -1);
    op_set_int(s, "start", 1);
    op_set_int(s, "end", 8);
    op_set_int(s, "step", 3);
    tu_expect_type(s, "f32[3]"); /* 1, 4, 7 */
    Op *b = tu_op(c, "slice", tu_in(c, "f32[4,5]", NULL), END);
    op_set_int(b, "axis", 1);
    op_set_int(b, "start", 2);
    op_set_int(b, "end", 6);
    tu_expect_error(b, "out of bounds", "f32[4,5]", END);
    Op *r = tu_op(c, "slice", tu_in(c, "f32[4,5]", NULL), END);
    op_set_int(r, "axis", 0);
    op_set_int(r, "start", 3);
    op_set_int(r, "end", 2);
    tu_expect_error(r, "out of bounds", END);
    Op *st = tu_op(c, "slice", tu_in(c, "f32[4,5]", NULL), END);
    op_set_int(st, "axis", 0);
    op_set_int(st, "start", 0);
    op_set_int(st, "end", 2);
    op_set_int(st, "step", 0);
    tu_expect_error(st, "step must be >= 1", END);
    Op *ax = tu_op(c, "slice", tu_in(c, "f32[4,5]", NULL), END);
    op_set_int(ax, "axis", 2);
    op_set_int(ax, "end", 1);
    tu_expect_error(ax, "axis 2 is out of range for f32[4,5]", END);
}

static void case_concat(TestCtx *c) {
    Op *a = tu_op(c, "concat", tu_in(c, "f32[2,3]", NULL), tu_in(c, "f32[2,5]", NULL),
                  tu_in(c, "f32[2,1]", NULL), END);
    op_set_int(a, "axis", -1);
    tu_expect_type(a, "f32[2,9]");
    Op *b = tu_op(c, "concat", tu_in(c, "f32[2,3]", NULL), tu_in(c, "f32[4,3]", NULL), END);
    op_set_int(b, "axis", 1);
    tu_expect_error(b, "f32[4,3] does not match f32[2,3]", END);
    Op *d = tu_op(c, "concat", tu_in(c, "f32[2,3]", NULL), tu_in(c, "i32[2,3]", NULL), END);
    op_set_int(d, "axis", 0);
    tu_expect_error(d, "i32[2,3]", "f32[2,3]", END);
}

static void case_embedding(TestCtx *c) {
    Value *w = tu_in(c, "f32[100,64]", NULL);
    tu_expect_type(tu_op(c, "embedding", w, tu_in(c, "i32[16,15]", NULL), END), "f32[16,15,64]");
    tu_expect_error(tu_op(c, "embedding", w, tu_in(c, "f32[16,15]", NULL), END), "ids must be i32",
                    "f32[16,15]", END);
    tu_expect_error(tu_op(c, "embedding", tu_in(c, "f32[100]", NULL), tu_in(c, "i32[3]", NULL), END),
                    "weight must have rank 2", "f32[100]", END);
}

static void reduce_case(TestCtx *c, const char *name) {
    Op *a = tu_op(c, name, tu_in(c, "f32[2,3,4]", NULL), END);
    tu_ints(a, "axes", 2, 0, -1);
    tu_expect_type(a, "f32[3]");
    Op *k = tu_op(c, name, tu_in(c, "f32[2,3,4]", NULL), END);
    tu_ints(k, "axes", 1, 1);
    op_set_bool(k, "keepdim", true);
    tu_expect_type(k, "f32[2,1,4]");
    Op *all = tu_op(c, name, tu_in(c, "f32[2,3]", NULL), END);
    tu_ints(all, "axes", 2, 0, 1);
    tu_expect_type(all, "f32[]");
    Op *b = tu_op(c, name, tu_in(c, "f32[2,3]", NULL), END);
    tu_ints(b, "axes", 1, 2);
    tu_expect_error(b, "axis 2 is out of range for f32[2,3]", END);
    Op *d = tu_op(c, name, tu_in(c, "f32[2,3]", NULL), END);
    tu_ints(d, "axes", 2, 1, -1);
    tu_expect_error(d, "twice", END);
    Op *e = tu_op(c, name, tu_in(c, "f32[2,3]", NULL), END);
    tu_expect_error(e, "axes must not be empty", END);
}
static void case_sum(TestCtx *c) { reduce_case(c, "sum"); }
static void case_mean(TestCtx *c) { reduce_case(c, "mean"); }
static void case_max(TestCtx *c) { reduce_case(c, "max"); }

static void case_reduce_to_shape(TestCtx *c) {
    Op *a = tu_op(c, "reduce_to_shape", tu_in(c, "f32[16,5,64]", NULL), END);
    tu_ints(a, "shape", 2, 1, 64);
    tu_expect_type(a, "f32[1,64]");
    Op *b = tu_op(c, "reduce_to_shape", tu_in(c, "f32[16,5,64]", NULL), END);
    tu_ints(b, "shape", 1, 32);
    tu_expect_error(b, "cannot reduce f32[16,5,64] to f32[32]", END);
    Op *d = tu_op(c, "reduce_to_shape", tu_in(c, "f32[5]", NULL), END);
    tu_ints(d, "shape", 2, 2, 5);
    tu_expect_error(d, "cannot reduce f32[5] to f32[2,5]", END);
}

static void case_softmax(TestCtx *c) {
    tu_expect_type(tu_op(c, "softmax", tu_in(c, "f32[2,4,5,5]", NULL), END), "f32[2,4,5,5]");
    Op *b = tu_op(c, "softmax", tu_in(c, "f32[2,3]", NULL), END);
    op_set_int(b, "axis", -3);
    tu_expect_error(b, "axis -3 is out of range for f32[2,3]", END);
    tu_expect_error(tu_op(c, "softmax", tu_in(c, "f32[]", NULL), END), "out of range", END);
}

static void case_layer_norm(TestCtx *c) {
    Value *w = tu_in(c, "f32[64]", NULL), *b = tu_in(c, "f32[64]", NULL);
    tu_expect_type(tu_op(c, "layer_norm", tu_in(c, "f32[16,15,64]", NULL), w, b, END),
                   "f32[16,15,64]");
    tu_expect_error(tu_op(c, "layer_norm", tu_in(c, "f32[16,32]", NULL), w, b, END),
                    "weight must be f32[32]", "f32[16,32]", "got f32[64]", END);
    Op *e = tu_op(c, "layer_norm", tu_in(c, "f32[2,64]", NULL), w, b, END);
    op_set_float(e, "eps", -1.0);
    tu_expect_error(e, "eps", END);
}

static void case_batch_norm(TestCtx *c) {
    Value *v[4];
    for (int i = 0; i < 4; i++) v[i] = tu_in(c, "f32[8]", NULL);
    tu_expect_type(tu_op(c, "batch_norm", tu_in(c, "f32[2,8,5,5]", NULL), v[0], v[1], v[2], v[3], END),
                   "f32[2,8,5,5]");
    Value *bad = tu_in(c, "f32[4]", NULL);
    tu_expect_error(tu_op(c, "batch_norm", tu_in(c, "f32[2,8,5,5]", NULL), v[0], v[1], bad, v[3], END),
                    "running_mean must be f32[8]", "f32[2,8,5,5]", "f32[4]", END);
    tu_expect_error(tu_op(c, "batch_norm", tu_in(c, "f32[8]", NULL), v[0], v[1], v[2], v[3], END),
                    "rank >= 2", END);
}

static void case_cross_entropy(TestCtx *c) {
    tu_expect_type(tu_op(c, "cross_entropy", tu_in(c, "f32[240,100]", NULL), tu_in(c, "i32[240]", NULL), END),
                   "f32[]");
    tu_expect_error(tu_op(c, "cross_entropy", tu_in(c, "f32[240,100]", NULL), tu_in(c, "i32[16,15]", NULL), END),
                    "i32[16,15]", "f32[240,100]", END);
    tu_expect_error(tu_op(c, "cross_entropy", tu_in(c, "f32[16,15,100]", NULL), tu_in(c, "i32[16]", NULL), END),
                    "logits must have rank 2", END);
    tu_expect_error(tu_op(c, "cross_entropy", tu_in(c, "f32[4,10]", NULL), tu_in(c, "f32[4]", NULL), END),
                    "target must be i32", END);
}

static void case_max_pool2d(TestCtx *c) {
    Op *a = tu_op(c, "max_pool2d", tu_in(c, "f32[2,16,64,64]", NULL), END);
    tu_ints(a, "kernel", 2, 3, 3);
    tu_ints(a, "stride", 2, 2, 2);
    tu_ints(a, "padding", 2, 1, 1);
    tu_expect_type(a, "f32[2,16,32,32]");
    Op *b = tu_op(c, "max_pool2d", tu_in(c, "f32[2,16,2,2]", NULL), END);
    tu_ints(b, "kernel", 2, 3, 3);
    tu_ints(b, "stride", 2, 1, 1);
    tu_expect_error(b, "larger than the padded input f32[2,16,2,2]", END);
    Op *d = tu_op(c, "max_pool2d", tu_in(c, "f32[16,64,64]", NULL), END);
    tu_ints(d, "kernel", 2, 3, 3);
    tu_ints(d, "stride", 2, 2, 2);
    tu_expect_error(d, "rank 4", "f32[16,64,64]", END);
    Op *e = tu_op(c, "max_pool2d", tu_in(c, "f32[1,1,8,8]", NULL), END);
    tu_ints(e, "kernel", 2, 3, 3);
    tu_ints(e, "stride", 1, 2);
    tu_expect_error(e, "stride must have 2 entries", END);
}

static void case_adaptive_avg_pool2d(TestCtx *c) {
    Op *a = tu_op(c, "adaptive_avg_pool2d", tu_in(c, "f32[2,64,7,7]", NULL), END);
    tu_ints(a, "output", 2, 14, 14);
    tu_expect_type(a, "f32[2,64,14,14]");
    Op *b = tu_op(c, "adaptive_avg_pool2d", tu_in(c, "f32[2,64,7,7]", NULL), END);
    tu_ints(b, "output", 2, 0, 4);
    tu_expect_error(b, "output", ">= 1", END);
}

static void case_matmul(TestCtx *c) {
    tu_expect_type(tu_op(c, "matmul", tu_in(c, "f32[16,4,15,16]", NULL), tu_in(c, "f32[16,4,16,15]", NULL), END),
                   "f32[16,4,15,15]");
    tu_expect_type(tu_op(c, "matmul", tu_in(c, "f32[16,15,64]", NULL), tu_in(c, "f32[64,32]", NULL), END),
                   "f32[16,15,32]");
    tu_expect_type(tu_op(c, "matmul", tu_in(c, "f32[3,1,2,4]", NULL), tu_in(c, "f32[5,4,6]", NULL), END),
                   "f32[3,5,2,6]");
    Op *t = tu_op(c, "matmul", tu_in(c, "f32[2,5,3]", NULL), tu_in(c, "f32[2,7,3]", NULL), END);
    op_set_bool(t, "transpose_b", true);
    tu_expect_type(t, "f32[2,5,7]");
    Op *ta = tu_op(c, "matmul", tu_in(c, "f32[3,5]", NULL), tu_in(c, "f32[3,7]", NULL), END);
    op_set_bool(ta, "transpose_a", true);
    tu_expect_type(ta, "f32[5,7]");
    tu_expect_error(tu_op(c, "matmul", tu_in(c, "f32[4,5]", NULL), tu_in(c, "f32[4,5]", NULL), END),
                    "f32[4,5]", "K=5", "K=4", END);
    tu_expect_error(tu_op(c, "matmul", tu_in(c, "f32[2,4,5]", NULL), tu_in(c, "f32[3,5,4]", NULL), END),
                    "batch axes", "f32[2,4,5]", "f32[3,5,4]", END);
    tu_expect_error(tu_op(c, "matmul", tu_in(c, "f32[5]", NULL), tu_in(c, "f32[5,4]", NULL), END),
                    "rank >= 2", END);
}

static void case_linear(TestCtx *c) {
    Value *w = tu_in(c, "f32[256,64]", NULL), *b = tu_in(c, "f32[256]", NULL);
    tu_expect_type(tu_op(c, "linear", tu_in(c, "f32[16,15,64]", NULL), w, b, END), "f32[16,15,256]");
    tu_expect_type(tu_op(c, "linear", tu_in(c, "f32[64]", NULL), w, END), "f32[256]");
    tu_expect_error(tu_op(c, "linear", tu_in(c, "f32[16,15,64]", NULL), tu_in(c, "f32[256,128]", NULL), END),
                    "input f32[16,15,64] has 64 features but weight f32[256,128] expects 128", END);
    tu_expect_error(tu_op(c, "linear", tu_in(c, "f32[2,64]", NULL), w, tu_in(c, "f32[64]", NULL), END),
                    "bias f32[64] must be f32[256]", END);
}

static void case_conv2d(TestCtx *c) {
    Op *a = tu_op(c, "conv2d", tu_in(c, "f32[2,3,128,128]", NULL), tu_in(c, "f32[16,3,7,7]", NULL), END);
    tu_ints(a, "stride", 2, 2, 2);
    tu_ints(a, "padding", 2, 3, 3);
    tu_expect_type(a, "f32[2,16,64,64]");
    Op *g = tu_op(c, "conv2d", tu_in(c, "f32[1,8,10,10]", NULL), tu_in(c, "f32[4,2,3,3]", NULL),
                  tu_in(c, "f32[4]", NULL), END);
    op_set_int(g, "groups", 4);
    tu_ints(g, "dilation", 2, 2, 2);
    tu_expect_type(g, "f32[1,4,6,6]");
    Op *ch = tu_op(c, "conv2d", tu_in(c, "f32[2,4,8,8]", NULL), tu_in(c, "f32[16,3,3,3]", NULL), END);
    tu_expect_error(ch, "f32[2,4,8,8] has 4 channels but weight f32[16,3,3,3] expects 3", END);
    Op *gd = tu_op(c, "conv2d", tu_in(c, "f32[2,6,8,8]", NULL), tu_in(c, "f32[16,2,3,3]", NULL), END);
    op_set_int(gd, "groups", 3);
    tu_expect_error(gd, "groups=3 must divide", "f32[2,6,8,8]", "f32[16,2,3,3]", END);
    Op *sz = tu_op(c, "conv2d", tu_in(c, "f32[1,1,2,2]", NULL), tu_in(c, "f32[1,1,3,3]", NULL), END);
    tu_expect_error(sz, "output size <= 0", "f32[1,1,3,3]", "f32[1,1,2,2]", END);
    Op *st = tu_op(c, "conv2d", tu_in(c, "f32[1,1,8,8]", NULL), tu_in(c, "f32[1,1,3,3]", NULL), END);
    tu_ints(st, "stride", 2, 0, 1);
    tu_expect_error(st, "stride", ">= 1", END);
    Op *bs = tu_op(c, "conv2d", tu_in(c, "f32[1,1,8,8]", NULL), tu_in(c, "f32[2,1,3,3]", NULL),
                   tu_in(c, "f32[3]", NULL), END);
    tu_expect_error(bs, "bias f32[3] must be f32[2]", END);
}

static void case_scatter_add(TestCtx *c) {
    Op *a = tu_op(c, "scatter_add", tu_in(c, "f32[16,15,64]", NULL), tu_in(c, "i32[16,15]", NULL), END);
    op_set_int(a, "num", 100);
    tu_expect_type(a, "f32[100,64]");
    Op *b = tu_op(c, "scatter_add", tu_in(c, "f32[16,14,64]", NULL), tu_in(c, "i32[16,15]", NULL), END);
    op_set_int(b, "num", 100);
    tu_expect_error(b, "f32[16,14,64]", "i32[16,15]", END);
    Op *d = tu_op(c, "scatter_add", tu_in(c, "f32[3,4]", NULL), tu_in(c, "i32[3]", NULL), END);
    tu_expect_error(d, "num must be > 0", END);
}

static void case_relu_grad(TestCtx *c) {
    tu_expect_type(tu_op(c, "relu_grad", tu_in(c, "f32[2,3]", NULL), tu_in(c, "f32[2,3]", NULL), END),
                   "f32[2,3]");
    tu_expect_error(tu_op(c, "relu_grad", tu_in(c, "f32[2,3]", NULL), tu_in(c, "f32[3]", NULL), END),
                    "dy f32[2,3] and y f32[3]", END);
}

static void case_slice_grad(TestCtx *c) {
    /* x[1:5:2] of an axis of 6 has 2 entries */
    Op *a = tu_op(c, "slice_grad", tu_in(c, "f32[3,2]", NULL), END);
    op_set_int(a, "axis", -1);
    op_set_int(a, "start", 1);
    op_set_int(a, "end", 5);
    op_set_int(a, "step", 2);
    op_set_int(a, "size", 6);
    tu_expect_type(a, "f32[3,6]");
    Op *b = tu_op(c, "slice_grad", tu_in(c, "f32[3,3]", NULL), END);
    op_set_int(b, "axis", 1);
    op_set_int(b, "start", 1);
    op_set_int(b, "end", 5);
    op_set_int(b, "step", 2);
    op_set_int(b, "size", 6);
    tu_expect_error(b, "dy f32[3,3] must have 2 entries along axis 1", END);
    Op *d = tu_op(c, "slice_grad", tu_in(c, "f32[3,2]", NULL), END);
    op_set_int(d, "axis", 1);
    op_set_int(d, "start", 0);
    op_set_int(d, "end", 7);
    op_set_int(d, "size", 6);
    tu_expect_error(d, "out of bounds", END);
}

static void case_max_pool2d_grad(TestCtx *c) {
    Op *a = tu_op(c, "max_pool2d_grad", tu_in(c, "f32[2,4,4,4]", NULL), tu_in(c, "f32[2,4,8,8]", NULL), END);
    tu_ints(a, "kernel", 2, 3, 3);
    tu_ints(a, "stride", 2, 2, 2);
    tu_ints(a, "padding", 2, 1, 1);
    tu_expect_type(a, "f32[2,4,8,8]");
    Op *b = tu_op(c, "max_pool2d_grad", tu_in(c, "f32[2,4,3,3]", NULL), tu_in(c, "f32[2,4,8,8]", NULL), END);
    tu_ints(b, "kernel", 2, 3, 3);
    tu_ints(b, "stride", 2, 2, 2);
    tu_ints(b, "padding", 2, 1, 1);
    tu_expect_error(b, "dy f32[2,4,3,3] must be the pooled shape f32[2,4,4,4]", END);
    Op *k = tu_op(c, "max_pool2d_grad", tu_in(c, "f32[1,1,1,1]", NULL), tu_in(c, "f32[1,1,2,2]", NULL), END);
    tu_ints(k, "kernel", 2, 3, 3);
    tu_ints(k, "stride", 2, 1, 1);
    tu_expect_error(k, "larger than the padded input", END);
}

static void case_adaptive_avg_pool2d_grad(TestCtx *c) {
    Op *a = tu_op(c, "adaptive_avg_pool2d_grad", tu_in(c, "f32[2,4,2,2]", NULL), END);
    tu_ints(a, "input_size", 2, 7, 5);
    tu_expect_type(a, "f32[2,4,7,5]");
    Op *b = tu_op(c, "adaptive_avg_pool2d_grad", tu_in(c, "f32[2,4,2,2]", NULL), END);
    tu_ints(b, "input_size", 1, 7);
    tu_expect_error(b, "input_size must have 2 entries", END);
}

static void case_conv2d_grad_input(TestCtx *c) {
    /* forward: x [2,8,10,10], w [4,2,3,3], groups 4, dilation 2 -> [2,4,6,6] */
    Op *a = tu_op(c, "conv2d_grad_input", tu_in(c, "f32[2,4,6,6]", NULL), tu_in(c, "f32[4,2,3,3]", NULL), END);
    op_set_int(a, "groups", 4);
    tu_ints(a, "dilation", 2, 2, 2);
    tu_ints(a, "input_size", 2, 10, 10);
    tu_expect_type(a, "f32[2,8,10,10]");
    /* stride 2 maps both 7 and 8 to 4 outputs (pad 1, k 3): input_size says which */
    Op *s = tu_op(c, "conv2d_grad_input", tu_in(c, "f32[1,1,4,4]", NULL), tu_in(c, "f32[1,1,3,3]", NULL), END);
    tu_ints(s, "stride", 2, 2, 2);
    tu_ints(s, "padding", 2, 1, 1);
    tu_ints(s, "input_size", 2, 7, 8);
    tu_expect_type(s, "f32[1,1,7,8]");
    Op *b = tu_op(c, "conv2d_grad_input", tu_in(c, "f32[2,4,5,6]", NULL), tu_in(c, "f32[4,2,3,3]", NULL), END);
    tu_ints(b, "input_size", 2, 8, 8);
    tu_expect_error(b, "dy f32[2,4,5,6] must be the forward result f32[2,4,6,6]", END);
}

static void case_conv2d_grad_weight(TestCtx *c) {
    Op *a = tu_op(c, "conv2d_grad_weight", tu_in(c, "f32[2,16,64,64]", NULL), tu_in(c, "f32[2,3,128,128]", NULL), END);
    tu_ints(a, "stride", 2, 2, 2);
    tu_ints(a, "padding", 2, 3, 3);
    tu_ints(a, "kernel", 2, 7, 7);
    tu_expect_type(a, "f32[16,3,7,7]");
    Op *g = tu_op(c, "conv2d_grad_weight", tu_in(c, "f32[1,4,6,6]", NULL), tu_in(c, "f32[1,6,6,6]", NULL), END);
    op_set_int(g, "groups", 4);
    tu_ints(g, "kernel", 2, 1, 1);
    tu_expect_error(g, "groups=4 must divide", "f32[1,6,6,6]", END);
}

static void case_cross_entropy_grad(TestCtx *c) {
    tu_expect_type(tu_op(c, "cross_entropy_grad", tu_in(c, "f32[]", NULL), tu_in(c, "f32[6,10]", NULL),
                         tu_in(c, "i32[6]", NULL), END),
                   "f32[6,10]");
    tu_expect_error(tu_op(c, "cross_entropy_grad", tu_in(c, "f32[6]", NULL), tu_in(c, "f32[6,10]", NULL),
                          tu_in(c, "i32[6]", NULL), END),
                    "dy must be f32[]", END);
    tu_expect_error(tu_op(c, "cross_entropy_grad", tu_in(c, "f32[]", NULL), tu_in(c, "f32[6,10]", NULL),
                          tu_in(c, "i32[5]", NULL), END),
                    "target i32[5] must be i32[6]", END);
}

static void case_update_slice(TestCtx *c) {
    Op *a = tu_op(c, "update_slice", tu_in(c, "f32[2,4,15,16]", NULL), tu_in(c, "f32[2,4,1,16]", NULL),
                  tu_in(c, "i32[]", NULL), END);
    op_set_int(a, "axis", 2);
    tu_expect_type(a, "f32[2,4,15,16]");
    Op *b = tu_op(c, "update_slice", tu_in(c, "f32[2,4,15,16]", NULL), tu_in(c, "f32[2,4,1,8]", NULL),
                  tu_in(c, "i32[]", NULL), END);
    op_set_int(b, "axis", 2);
    tu_expect_error(b, "update f32[2,4,1,8] does not fit f32[2,4,15,16]", END);
    Op *d = tu_op(c, "update_slice", tu_in(c, "f32[3]", NULL), tu_in(c, "f32[4]", NULL),
                  tu_in(c, "i32[]", NULL), END);
    op_set_int(d, "axis", 0);
    tu_expect_error(d, "at most 3", END);
    Op *e = tu_op(c, "update_slice", tu_in(c, "f32[3]", NULL), tu_in(c, "f32[1]", NULL),
                  tu_in(c, "i32[1]", NULL), END);
    op_set_int(e, "axis", -1);
    tu_expect_error(e, "pos must be i32[], got i32[1]", END);
    Op *g = tu_op(c, "update_slice", tu_in(c, "f32[3]", NULL), tu_in(c, "f32[1]", NULL),
                  tu_in(c, "i32[]", NULL), END);
    op_set_int(g, "axis", 1);
    tu_expect_error(g, "axis 1 is out of range", END);
}

static void case_position_mask(TestCtx *c) {
    Op *a = tu_op(c, "position_mask", tu_in(c, "i32[]", NULL), END);
    op_set_int(a, "size", 15);
    tu_expect_type(a, "f32[15]");
    Op *b = tu_op(c, "position_mask", tu_in(c, "i32[]", NULL), END);
    op_set_int(b, "size", 0);
    tu_expect_error(b, "size must be > 0", END);
    Op *d = tu_op(c, "position_mask", tu_in(c, "f32[]", NULL), END);
    op_set_int(d, "size", 3);
    tu_expect_error(d, "pos must be i32[], got f32[]", END);
}

typedef void (*ShapeCase)(TestCtx *c);

static const ShapeCase CASES[OP_COUNT] = {
#define OP(ENUM, name, min_in, max_in, fusion, doc) [OP_##ENUM] = case_##name,
#include "ops.def"
#undef OP
};

/* Every op in the table has a case (the designated initializer above would not compile
 * without case_NAME, and this loop also runs each one). */
static void test_every_op_has_shape_cases(void **state) {
    (void)state;
    for (int k = 0; k < OP_COUNT; k++) {
        if (!CASES[k]) fail_msg("op %s has no shape-rule test case", OP_TABLE[k].name);
        TestCtx c;
        tu_open(&c);
        CASES[k](&c);
        tu_close(&c);
    }
}

/* Rules must reject operand counts the table forbids rather than read past inputs. */
static void test_operand_count_and_unknown_shapes(void **state) {
    (void)state;
    TestCtx c;
    tu_open(&c);
    Value *x = tu_in(&c, "f32[2]", NULL);
    tu_expect_error(tu_op(&c, "add", x, END), "expects 2 operands, got 1", END);
    tu_expect_error(tu_op(&c, "linear", x, END), "expects 2 to 3 operands, got 1", END);
    Value *u = func_add_input(c.f, "u", DT_F32, shape_unknown());
    tu_expect_error(tu_op(&c, "relu", u, END), "%u has no inferred shape", END);
    tu_close(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_op_has_shape_cases),
        cmocka_unit_test(test_operand_count_and_unknown_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
