/* grad_rules.c — every op's gradient rule (grad_NAME, declared in op_impl.h; GradRule in
 * ops.h): reverse mode, one op at a time.
 *
 * A rule appends to f the ops that compute, from dy (the loss's gradient w.r.t. the op's
 * result), the gradient w.r.t. each operand i with need[i] set, and stores it in grads[i]
 * with the operand's dtype and shape. Rules build from existing ops wherever the result reads
 * clearly in an IR dump (reduce_to_shape undoes broadcasting; reshape/transpose invert
 * themselves; matmul with transpose flags; layer_norm and batch_norm from mean/mul/sub);
 * where composition would be a pile of ops, a dedicated backward op does it (relu_grad,
 * slice_grad, conv2d_grad_input/_weight, max_pool2d_grad, adaptive_avg_pool2d_grad,
 * cross_entropy_grad). Backward ops and ops with no differentiable operand share grad_none
 * (ops.c maps them to it).
 *
 * Every gradient is checked against central finite differences in tests/ir/test_gradients.c.
 *
 * Building style: an Emit carries the function, the forward op (for locations and names)
 * and the first error; each emit_* helper returns the new value, or NULL once anything has
 * failed, and accepts NULL operands, so a rule reads as straight-line math and checks for
 * failure once at the end. Intermediate values are named "<result>.bw", gradients
 * "<operand>.grad" (uniquified by the builder).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfunc.h"
#include "op_impl.h"

/* ---- building helpers ------------------------------------------------------------------- */

typedef struct Emit {
    Function *f;
    const Op *fwd;
    char *err;
    size_t err_size;
    bool failed;
    int first_new;  /* values with ids from here on were built by this rule */
    char name[256]; /* "<result>.bw" */
} Emit;

static Emit emit_begin(Function *f, const Op *fwd, char *err, size_t err_size) {
    Emit e = {f, fwd, err, err_size, false, f->n_values, {0}};
    snprintf(e.name, sizeof e.name, "%s.bw", fwd->result->name);
    return e;
}

__attribute__((format(printf, 2, 3))) static void emit_fail(Emit *e, const char *fmt, ...) {
    if (e->failed) return;
    e->failed = true;
    int n = snprintf(e->err, e->err_size, "%s gradient: ", op_info(e->fwd->kind)->name);
    if (n < 0 || (size_t)n >= e->err_size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err + n, e->err_size - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Starts an op over n operands (NULL if any operand is NULL or an error happened before);
 * set its attributes, then pass it to done(). */
static Op *start(Emit *e, int kind, Value *const *ins, int n) {
    if (e->failed) return NULL;
    for (int i = 0; i < n; i++)
        if (!ins[i]) return NULL;
    return func_add_op(e->f, kind, ins, n, e->name, e->fwd->loc);
}

/* Infers the op's type; a failure here is a bug in a rule, reported with the op's message. */
static Value *done(Emit *e, Op *op) {
    if (!op) return NULL;
    char msg[512];
    if (op_infer(op, msg, sizeof msg) != 0) {
        emit_fail(e, "building %s: %s", op_info(op->kind)->name, msg);
        return NULL;
    }
    return op->result;
}

static Value *emit1(Emit *e, int kind, Value *x) {
    Value *ins[1] = {x};
    return done(e, start(e, kind, ins, 1));
}

static Value *emit2(Emit *e, int kind, Value *a, Value *b) {
    Value *ins[2] = {a, b};
    return done(e, start(e, kind, ins, 2));
}

static Value *emit_scale(Emit *e, Value *x, double factor) {
    Op *op = start(e, OP_SCALE, &x, 1);
    if (op) op_set_float(op, "factor", factor);
    return done(e, op);
}

static Value *emit_full(Emit *e, const Shape *s, double value) {
    Op *op = start(e, OP_FULL, NULL, 0);
    if (op) op_set_ints(op, "shape", s->dims, s->rank);
    if (op) op_set_float(op, "value", value);
    return done(e, op);
}

static Value *emit_scalar(Emit *e, double value) {
    Shape s = shape_scalar();
    return emit_full(e, &s, value);
}

static Value *emit_shape_op(Emit *e, int kind, Value *x, const Shape *s) {
    Op *op = start(e, kind, &x, 1);
    if (op) op_set_ints(op, "shape", s->dims, s->rank);
    return done(e, op);
}

static Value *emit_reshape(Emit *e, Value *x, const Shape *s) {
    if (x && shape_equal(&x->shape, s)) return x;
    return emit_shape_op(e, OP_RESHAPE, x, s);
}

static Value *emit_broadcast(Emit *e, Value *x, const Shape *s) {
    if (x && shape_equal(&x->shape, s)) return x;
    return emit_shape_op(e, OP_BROADCAST, x, s);
}

/* Sums x down to shape s: undoes the numpy broadcast that made x's shape from s. */
static Value *emit_reduce_to(Emit *e, Value *x, const Shape *s) {
    if (x && shape_equal(&x->shape, s)) return x;
    return emit_shape_op(e, OP_REDUCE_TO_SHAPE, x, s);
}

/* sum or mean over axes (given normalized). */
static Value *emit_reduce(Emit *e, int kind, Value *x, const int64_t *axes, int n, bool keepdim) {
    Op *op = start(e, kind, &x, 1);
    if (op) op_set_ints(op, "axes", axes, n);
    if (op) op_set_bool(op, "keepdim", keepdim);
    return done(e, op);
}

static Value *emit_matmul(Emit *e, Value *a, Value *b, bool ta, bool tb) {
    Op *op = start(e, OP_MATMUL, (Value *[]){a, b}, 2);
    if (op) op_set_bool(op, "transpose_a", ta);
    if (op) op_set_bool(op, "transpose_b", tb);
    return done(e, op);
}

/* Copies the forward op's attribute values into a backward op whose schema holds attributes
 * of the same names and kinds. */
static void copy_attrs(Op *dst, const Op *src) {
    const OpInfo *info = op_info(src->kind);
    for (int i = 0; dst && i < info->n_attrs; i++) {
        int at = op_attr_index(dst->kind, info->attrs[i].name);
        if (at >= 0) dst->attrs[at] = src->attrs[i];
    }
}

/* Stores v as the gradient of operand i (checked to match the operand's type). */
static void set_grad(Emit *e, Value **grads, int i, Value *v) {
    if (!v || e->failed) return;
    IR_ASSERT(v->dtype == e->fwd->inputs[i]->dtype);
    IR_ASSERT(shape_equal(&v->shape, &e->fwd->inputs[i]->shape));
    grads[i] = v;
}

/* Final status of a rule; names the gradients for the dump. Values that are not new ops (dy
 * passed through, or an operand) keep their names. */
static int finish(Emit *e, const bool *need, Value **grads) {
    if (e->failed) return -1;
    for (int i = 0; i < e->fwd->n_inputs; i++) {
        if (!need[i]) continue;
        if (!grads[i]) {
            emit_fail(e, "no gradient built for operand %d", i);
            return -1;
        }
        if (grads[i]->fn == e->f && grads[i]->id >= e->first_new) {
            char name[256];
            snprintf(name, sizeof name, "%s.grad", e->fwd->inputs[i]->name);
            value_rename(grads[i], name);
        }
    }
    return 0;
}

/* The shape x would have if the reduced axes were kept with size 1. */
static Shape kept_shape(const Shape *x, const bool *reduced) {
    Shape s = *x;
    for (int d = 0; d < s.rank; d++)
        if (reduced[d]) s.dims[d] = 1;
    return s;
}

/* The axes attribute of a reduction as flags over x's axes; returns the element count. */
static int64_t reduced_axes(const Op *op, int rank, bool *reduced, const Shape *x) {
    int n = 0;
    const int64_t *axes = op_ints(op, "axes", &n);
    for (int d = 0; d < rank; d++) reduced[d] = false;
    for (int i = 0; i < n; i++) reduced[axis_normalize(axes[i], rank)] = true;
    int64_t count = 1;
    for (int d = 0; d < rank; d++)
        if (reduced[d]) count *= x->dims[d];
    return count;
}

#define GRAD_RULE(name)                                                                    \
    int grad_##name(Function *f, const Op *op, Value *dy, const bool *need, Value **grads, \
                    char *err, size_t err_size)
#define X(i) (op->inputs[i])
#define Y (op->result)
#define SHAPE(i) (&op->inputs[i]->shape)

/* ---- no gradient -------------------------------------------------------------------------- */

int grad_none(Function *f, const Op *op, Value *dy, const bool *need, Value **grads, char *err,
              size_t err_size) {
    for (int i = 0; i < op->n_inputs; i++)
        if (need[i]) {
            snprintf(err, err_size, "%s: operand %d (%%%s) has no gradient", op_info(op->kind)->name,
                     i, op->inputs[i]->name);
            return -1;
        }
    return 0;
}

/* Piecewise-constant ops (floor, equal): the gradient is zero wherever it exists. */
static int grad_zero(Function *f, const Op *op, const bool *need, Value **grads, char *err,
                     size_t err_size) {
    Emit e = emit_begin(f, op, err, err_size);
    for (int i = 0; i < op->n_inputs; i++)
        if (need[i]) set_grad(&e, grads, i, emit_full(&e, SHAPE(i), 0.0));
    return finish(&e, need, grads);
}

/* ---- elementwise, one operand ------------------------------------------------------------- */

/* A unary rule: grads[0] = expr built in emitter e from dy, x = X(0) and y = Y. */
#define UNARY_RULE(name, expr)                                                             \
    GRAD_RULE(name) {                                                                      \
        Emit e = emit_begin(f, op, err, err_size);                                         \
        Value *x = X(0), *y = Y;                                                           \
        (void)x, (void)y;                                                                  \
        if (need[0]) set_grad(&e, grads, 0, (expr));                                       \
        return finish(&e, need, grads);                                                    \
    }

UNARY_RULE(relu, emit2(&e, OP_RELU_GRAD, dy, y))
UNARY_RULE(neg, emit1(&e, OP_NEG, dy))
UNARY_RULE(exp, emit2(&e, OP_MUL, dy, y))                                       /* dy * e^x */
UNARY_RULE(log, emit2(&e, OP_DIV, dy, x))                                       /* dy / x */
UNARY_RULE(sqrt, emit_scale(&e, emit2(&e, OP_DIV, dy, y), 0.5))                 /* dy / 2y */
/* d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 * y / x */
UNARY_RULE(rsqrt, emit_scale(&e, emit2(&e, OP_MUL, dy, emit2(&e, OP_DIV, y, x)), -0.5))
/* dy * (1 - y^2), written dy - dy*y*y */
UNARY_RULE(tanh, emit2(&e, OP_SUB, dy, emit2(&e, OP_MUL, emit2(&e, OP_MUL, dy, y), y)))
UNARY_RULE(scale, emit_scale(&e, dy, op_float(op, "factor")))
/* -sin(x) = cos(x + pi/2): no sin op is needed */
#define HALF_PI 1.5707963267948966
UNARY_RULE(cos, emit2(&e, OP_MUL, dy,
                      emit1(&e, OP_COS, emit2(&e, OP_ADD, x, emit_scalar(&e, HALF_PI)))))

GRAD_RULE(floor) { return grad_zero(f, op, need, grads, err, err_size); }
GRAD_RULE(equal) { return grad_zero(f, op, need, grads, err, err_size); }

/* dy goes to the side that was chosen: da = where(cond, dy, 0), db = where(cond, 0, dy), each
 * summed back to its operand's shape; cond, a mask, gets zeros (as equal's operands do). */
GRAD_RULE(where) {
    Emit e = emit_begin(f, op, err, err_size);
    if (need[0]) set_grad(&e, grads, 0, emit_full(&e, SHAPE(0), 0.0));
    Value *zero = need[1] || need[2] ? emit_scalar(&e, 0.0) : NULL;
    for (int side = 1; side <= 2; side++) {
        if (!need[side]) continue;
        Value *ins[3] = {X(0), side == 1 ? dy : zero, side == 1 ? zero : dy};
        Value *g = done(&e, start(&e, OP_WHERE, ins, 3));
        set_grad(&e, grads, side, emit_reduce_to(&e, g, SHAPE(side)));
    }
    return finish(&e, need, grads);
}

/* f32 -> f32 is the identity; through an integer the gradient does not exist. */
GRAD_RULE(cast) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    if (X(0)->dtype != DT_F32 || Y->dtype != DT_F32) {
        emit_fail(&e, "cast from %s to %s is not differentiable", dtype_name(X(0)->dtype),
                  dtype_name(Y->dtype));
        return -1;
    }
    set_grad(&e, grads, 0, dy);
    return finish(&e, need, grads);
}

/* The same mask and scale applied to dy: dropout is linear in x, and its mask is a pure
 * function of (rng, stream, element). */
GRAD_RULE(dropout) {
    Emit e = emit_begin(f, op, err, err_size);
    if (need[0]) {
        Op *d = start(&e, OP_DROPOUT, (Value *[]){dy, X(1)}, 2);
        copy_attrs(d, op);
        set_grad(&e, grads, 0, done(&e, d));
    }
    return finish(&e, need, grads);
}

/* ---- elementwise, two operands (broadcasting) --------------------------------------------- */

/* Each operand's gradient is computed at the result's shape, then summed over the axes that
 * broadcasting added or stretched. */
static void binary_grads(Emit *e, const Op *op, const bool *need, Value **grads, Value *ga,
                         Value *gb) {
    if (need[0]) set_grad(e, grads, 0, emit_reduce_to(e, ga, SHAPE(0)));
    if (need[1]) set_grad(e, grads, 1, emit_reduce_to(e, gb, SHAPE(1)));
}

GRAD_RULE(add) {
    Emit e = emit_begin(f, op, err, err_size);
    binary_grads(&e, op, need, grads, dy, dy);
    return finish(&e, need, grads);
}

GRAD_RULE(sub) {
    Emit e = emit_begin(f, op, err, err_size);
    binary_grads(&e, op, need, grads, dy, need[1] ? emit1(&e, OP_NEG, dy) : NULL);
    return finish(&e, need, grads);
}

GRAD_RULE(mul) {
    Emit e = emit_begin(f, op, err, err_size);
    Value *ga = need[0] ? emit2(&e, OP_MUL, dy, X(1)) : NULL;
    Value *gb = need[1] ? emit2(&e, OP_MUL, dy, X(0)) : NULL;
    binary_grads(&e, op, need, grads, ga, gb);
    return finish(&e, need, grads);
}

/* y = a / b: da = dy / b, db = -dy * a / b^2 = -(dy * y) / b */
GRAD_RULE(div) {
    Emit e = emit_begin(f, op, err, err_size);
    Value *ga = need[0] ? emit2(&e, OP_DIV, dy, X(1)) : NULL;
    Value *gb = need[1] ? emit1(&e, OP_NEG, emit2(&e, OP_DIV, emit2(&e, OP_MUL, dy, Y), X(1)))
                        : NULL;
    binary_grads(&e, op, need, grads, ga, gb);
    return finish(&e, need, grads);
}

/* minimum/maximum: dy goes to the operand that equals the result; on a tie each side gets
 * half, as in PyTorch: ga = dy * [a == y] / ([a == y] + [b == y]). */
static int select_grad(Function *f, const Op *op, Value *dy, const bool *need, Value **grads,
                       char *err, size_t err_size) {
    Emit e = emit_begin(f, op, err, err_size);
    Value *ma = emit2(&e, OP_EQUAL, X(0), Y), *mb = emit2(&e, OP_EQUAL, X(1), Y);
    Value *share = emit2(&e, OP_DIV, dy, emit2(&e, OP_ADD, ma, mb));
    Value *ga = need[0] ? emit2(&e, OP_MUL, share, ma) : NULL;
    Value *gb = need[1] ? emit2(&e, OP_MUL, share, mb) : NULL;
    binary_grads(&e, op, need, grads, ga, gb);
    return finish(&e, need, grads);
}

GRAD_RULE(minimum) { return select_grad(f, op, dy, need, grads, err, err_size); }
GRAD_RULE(maximum) { return select_grad(f, op, dy, need, grads, err, err_size); }

/* call: operand i's gradient is the module's gradient function grads[i] called on
 * (operands..., dy) with the same scalar arguments (its parameters are (tensor params..., dy,
 * scalar params...), cfunc.h), which gives dy * d fn / d operand i per element (derived from
 * the tree or written by the user, and checked against finite differences at these scalar
 * values when the function was read), summed back to the operand's shape. The scalars are
 * constants: they get no gradient. */
GRAD_RULE(call) {
    Emit e = emit_begin(f, op, err, err_size);
    const CFunc *fn = module_find_cfunc(f->module, op_string(op, "fn"));
    if (!fn) {
        emit_fail(&e, "no C function '%s'", op_string(op, "fn"));
        return -1;
    }
    int n_args = 0;
    const double *scalars = op_floats(op, "args", &n_args);
    Value **ins = malloc(sizeof *ins * (size_t)(op->n_inputs + 1));
    if (!ins) {
        emit_fail(&e, "out of memory");
        return -1;
    }
    for (int i = 0; i < op->n_inputs; i++) ins[i] = X(i);
    ins[op->n_inputs] = dy;
    for (int i = 0; i < op->n_inputs; i++) {
        if (!need[i]) continue;
        if (!fn->grads[i]) {
            emit_fail(&e, "%s has no gradient with respect to '%s'", fn->name, fn->params[i]);
            break;
        }
        Op *g = start(&e, OP_CALL, ins, op->n_inputs + 1);
        if (g) op_set_string(g, "fn", fn->grads[i]);
        if (g) op_set_floats(g, "args", scalars, n_args);
        set_grad(&e, grads, i, emit_reduce_to(&e, done(&e, g), SHAPE(i)));
    }
    free(ins);
    return finish(&e, need, grads);
}

/* ---- layout --------------------------------------------------------------------------------- */

UNARY_RULE(broadcast, emit_reduce_to(&e, dy, SHAPE(0)))
UNARY_RULE(reduce_to_shape, emit_broadcast(&e, dy, SHAPE(0)))
UNARY_RULE(reshape, emit_reshape(&e, dy, SHAPE(0)))

GRAD_RULE(transpose) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    int n = 0, rank = X(0)->shape.rank;
    const int64_t *perm = op_ints(op, "perm", &n);
    int64_t inverse[IR_MAX_RANK];
    for (int d = 0; d < rank; d++) inverse[axis_normalize(perm[d], rank)] = d;
    Op *t = start(&e, OP_TRANSPOSE, &dy, 1);
    if (t) op_set_ints(t, "perm", inverse, rank);
    set_grad(&e, grads, 0, done(&e, t));
    return finish(&e, need, grads);
}

GRAD_RULE(slice) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    int axis = axis_normalize(op_int(op, "axis"), X(0)->shape.rank);
    Op *s = start(&e, OP_SLICE_GRAD, &dy, 1);
    copy_attrs(s, op);
    if (s) op_set_int(s, "axis", axis);
    if (s) op_set_int(s, "size", X(0)->shape.dims[axis]);
    set_grad(&e, grads, 0, done(&e, s));
    return finish(&e, need, grads);
}

/* Each operand's gradient is its stretch of dy along the axis. */
GRAD_RULE(concat) {
    Emit e = emit_begin(f, op, err, err_size);
    int axis = axis_normalize(op_int(op, "axis"), Y->shape.rank);
    int64_t at = 0;
    for (int i = 0; i < op->n_inputs; i++) {
        int64_t len = X(i)->shape.dims[axis];
        if (need[i]) {
            Op *s = start(&e, OP_SLICE, &dy, 1);
            if (s) op_set_int(s, "axis", axis);
            if (s) op_set_int(s, "start", at);
            if (s) op_set_int(s, "end", at + len);
            set_grad(&e, grads, i, done(&e, s));
        }
        at += len;
    }
    return finish(&e, need, grads);
}

/* Rows of dy added into the rows of the weight they were read from (ids may repeat). */
GRAD_RULE(embedding) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    Op *s = start(&e, OP_SCATTER_ADD, (Value *[]){dy, X(1)}, 2);
    if (s) op_set_int(s, "num", X(0)->shape.dims[0]);
    set_grad(&e, grads, 0, done(&e, s));
    return finish(&e, need, grads);
}

/* ---- reductions ------------------------------------------------------------------------------ */

/* dy viewed with x's rank (reduced axes of size 1), whether or not keepdim was set. */
static Value *dy_kept(Emit *e, const Op *op, Value *dy, const bool *reduced) {
    Shape kept = kept_shape(SHAPE(0), reduced);
    return emit_reshape(e, dy, &kept);
}

GRAD_RULE(sum) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    bool reduced[IR_MAX_RANK];
    reduced_axes(op, X(0)->shape.rank, reduced, SHAPE(0));
    set_grad(&e, grads, 0, emit_broadcast(&e, dy_kept(&e, op, dy, reduced), SHAPE(0)));
    return finish(&e, need, grads);
}

GRAD_RULE(mean) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    bool reduced[IR_MAX_RANK];
    int64_t count = reduced_axes(op, X(0)->shape.rank, reduced, SHAPE(0));
    Value *share = emit_scale(&e, dy_kept(&e, op, dy, reduced), 1.0 / (double)count);
    set_grad(&e, grads, 0, emit_broadcast(&e, share, SHAPE(0)));
    return finish(&e, need, grads);
}

/* dy goes to the elements equal to the maximum, split evenly among ties (as torch.amax):
 * dx = [x == max] * dy / count of maxima. */
GRAD_RULE(max) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    int rank = X(0)->shape.rank;
    bool reduced[IR_MAX_RANK];
    reduced_axes(op, rank, reduced, SHAPE(0));
    int64_t axes[IR_MAX_RANK];
    int n_axes = 0;
    for (int d = 0; d < rank; d++)
        if (reduced[d]) axes[n_axes++] = d;
    Shape kept = kept_shape(SHAPE(0), reduced);
    Value *mask = emit2(&e, OP_EQUAL, X(0), emit_reshape(&e, Y, &kept));
    Value *ties = emit_reduce(&e, OP_SUM, mask, axes, n_axes, true);
    Value *share = emit2(&e, OP_DIV, dy_kept(&e, op, dy, reduced), ties);
    set_grad(&e, grads, 0, emit2(&e, OP_MUL, mask, share));
    return finish(&e, need, grads);
}

/* y * (dy - sum(dy * y)) along the axis */
GRAD_RULE(softmax) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    int64_t axis = axis_normalize(op_int(op, "axis"), Y->shape.rank);
    Value *dot = emit_reduce(&e, OP_SUM, emit2(&e, OP_MUL, dy, Y), &axis, 1, true);
    set_grad(&e, grads, 0, emit2(&e, OP_MUL, Y, emit2(&e, OP_SUB, dy, dot)));
    return finish(&e, need, grads);
}

/* ---- normalizations ------------------------------------------------------------------------- */

/* What layer_norm and batch_norm share: x normalized over `axes` (kept as size-1 axes in the
 * statistics), with the affine weight already reshaped to broadcast against x. */
typedef struct Norm {
    const int64_t *axes;
    int n_axes;
    Value *w;    /* weight, broadcastable to x */
    Value *inv;  /* 1 / sqrt(var + eps), broadcastable to x */
    Value *xhat; /* (x - mean) * inv, x's shape */
} Norm;

/* Batch statistics of x over nm->axes (biased variance), as the forward computes them. */
static void norm_batch_stats(Emit *e, Norm *nm, Value *x, double eps) {
    Value *mu = emit_reduce(e, OP_MEAN, x, nm->axes, nm->n_axes, true);
    Value *xc = emit2(e, OP_SUB, x, mu);
    Value *var = emit_reduce(e, OP_MEAN, emit2(e, OP_MUL, xc, xc), nm->axes, nm->n_axes, true);
    nm->inv = emit1(e, OP_RSQRT, emit2(e, OP_ADD, var, emit_scalar(e, eps)));
    nm->xhat = emit2(e, OP_MUL, xc, nm->inv);
}

/* Gradient w.r.t. x when the statistics depend on x (training):
 * g = dy * w; dx = inv * (g - mean(g) - xhat * mean(g * xhat)), means over the axes. */
static Value *norm_input_grad_batch(Emit *e, const Norm *nm, Value *dy) {
    Value *g = emit2(e, OP_MUL, dy, nm->w);
    Value *g_mean = emit_reduce(e, OP_MEAN, g, nm->axes, nm->n_axes, true);
    Value *gx_mean =
        emit_reduce(e, OP_MEAN, emit2(e, OP_MUL, g, nm->xhat), nm->axes, nm->n_axes, true);
    Value *centered = emit2(e, OP_SUB, emit2(e, OP_SUB, g, g_mean),
                            emit2(e, OP_MUL, nm->xhat, gx_mean));
    return emit2(e, OP_MUL, centered, nm->inv);
}

/* x [..., d] over the last axis; weight and bias [d]. */
GRAD_RULE(layer_norm) {
    Emit e = emit_begin(f, op, err, err_size);
    int64_t last = X(0)->shape.rank - 1;
    Norm nm = {&last, 1, X(1), NULL, NULL};
    if (need[0] || need[1]) norm_batch_stats(&e, &nm, X(0), op_float(op, "eps"));
    if (need[0]) set_grad(&e, grads, 0, norm_input_grad_batch(&e, &nm, dy));
    if (need[1]) set_grad(&e, grads, 1, emit_reduce_to(&e, emit2(&e, OP_MUL, dy, nm.xhat), SHAPE(1)));
    if (need[2]) set_grad(&e, grads, 2, emit_reduce_to(&e, dy, SHAPE(2)));
    return finish(&e, need, grads);
}

/* x [N, C, ...] per channel; weight, bias [C]; running statistics are constants (buffers).
 * Training normalizes with the batch's statistics, so the input gradient flows through them;
 * eval normalizes with the running ones: dx = dy * w * inv. */
GRAD_RULE(batch_norm) {
    Emit e = emit_begin(f, op, err, err_size);
    int rank = X(0)->shape.rank;
    int64_t axes[IR_MAX_RANK];
    int n_axes = 0;
    for (int d = 0; d < rank; d++)
        if (d != 1) axes[n_axes++] = d;
    /* [C] -> [1, C, 1, ...] so per-channel vectors broadcast against x */
    Shape chan = shape_of(2, (int64_t)1, X(0)->shape.dims[1]);
    for (int d = 2; d < rank; d++) chan.dims[chan.rank++] = 1;
    double eps = op_float(op, "eps");
    Norm nm = {axes, n_axes, NULL, NULL, NULL};
    if (need[0]) nm.w = emit_reshape(&e, X(1), &chan);
    if (!need[0] && !need[1]) {
        /* only the bias: no statistics needed */
    } else if (op_bool(op, "training")) {
        norm_batch_stats(&e, &nm, X(0), eps);
    } else {
        Value *mean = emit_reshape(&e, X(3), &chan), *var = emit_reshape(&e, X(4), &chan);
        nm.inv = emit1(&e, OP_RSQRT, emit2(&e, OP_ADD, var, emit_scalar(&e, eps)));
        if (need[1]) nm.xhat = emit2(&e, OP_MUL, emit2(&e, OP_SUB, X(0), mean), nm.inv);
    }
    if (need[0])
        set_grad(&e, grads, 0,
                 op_bool(op, "training") ? norm_input_grad_batch(&e, &nm, dy)
                                         : emit2(&e, OP_MUL, emit2(&e, OP_MUL, dy, nm.w), nm.inv));
    if (need[1])
        set_grad(&e, grads, 1, emit_reduce(&e, OP_SUM, emit2(&e, OP_MUL, dy, nm.xhat), axes, n_axes, false));
    if (need[2]) set_grad(&e, grads, 2, emit_reduce(&e, OP_SUM, dy, axes, n_axes, false));
    if (need[3] || need[4]) {
        emit_fail(&e, "running statistics are buffers, not differentiable");
        return -1;
    }
    return finish(&e, need, grads);
}

/* ---- losses and pools ------------------------------------------------------------------------- */

GRAD_RULE(cross_entropy) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    Op *g = start(&e, OP_CROSS_ENTROPY_GRAD, (Value *[]){dy, X(0), X(1)}, 3);
    copy_attrs(g, op);
    set_grad(&e, grads, 0, done(&e, g));
    return finish(&e, need, grads);
}

GRAD_RULE(max_pool2d) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    Op *g = start(&e, OP_MAX_POOL2D_GRAD, (Value *[]){dy, X(0)}, 2);
    copy_attrs(g, op);
    set_grad(&e, grads, 0, done(&e, g));
    return finish(&e, need, grads);
}

GRAD_RULE(adaptive_avg_pool2d) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    Op *g = start(&e, OP_ADAPTIVE_AVG_POOL2D_GRAD, &dy, 1);
    if (g) op_set_ints(g, "input_size", X(0)->shape.dims + 2, 2);
    set_grad(&e, grads, 0, done(&e, g));
    return finish(&e, need, grads);
}

/* ---- contractions ----------------------------------------------------------------------------- */

/* With A = op(a) [M,K] and B = op(b) [K,N] (op = optional transpose of the last two axes):
 * dA = dy B^T and dB = A^T dy, then transposed back when the operand was stored transposed.
 * Each case is one matmul with flags; batch axes that broadcast are summed away. */
GRAD_RULE(matmul) {
    Emit e = emit_begin(f, op, err, err_size);
    bool ta = op_bool(op, "transpose_a"), tb = op_bool(op, "transpose_b");
    Value *a = X(0), *b = X(1), *ga = NULL, *gb = NULL;
    if (need[0])
        ga = ta ? emit_matmul(&e, b, dy, tb, true)   /* da = B dy^T */
                : emit_matmul(&e, dy, b, false, !tb); /* da = dy B^T */
    if (need[1])
        gb = tb ? emit_matmul(&e, dy, a, true, ta)   /* db = dy^T A */
                : emit_matmul(&e, a, dy, !ta, false); /* db = A^T dy */
    binary_grads(&e, op, need, grads, ga, gb);
    return finish(&e, need, grads);
}

/* x [..., K] flattened to rows [R, K]; weight [N, K]; bias [N]:
 * dx = dy w, dw = dy^T x, db = column sums of dy. */
GRAD_RULE(linear) {
    Emit e = emit_begin(f, op, err, err_size);
    int64_t k = X(1)->shape.dims[1], n = X(1)->shape.dims[0];
    int64_t rows = shape_numel(SHAPE(0)) / k;
    Shape xr = shape_of(2, rows, k), yr = shape_of(2, rows, n);
    Value *dy2 = emit_reshape(&e, dy, &yr);
    if (need[0]) set_grad(&e, grads, 0, emit_reshape(&e, emit_matmul(&e, dy2, X(1), false, false), SHAPE(0)));
    if (need[1])
        set_grad(&e, grads, 1, emit_matmul(&e, dy2, emit_reshape(&e, X(0), &xr), true, false));
    if (op->n_inputs == 3 && need[2]) {
        int64_t axis0 = 0;
        set_grad(&e, grads, 2, emit_reduce(&e, OP_SUM, dy2, &axis0, 1, false));
    }
    return finish(&e, need, grads);
}

GRAD_RULE(conv2d) {
    Emit e = emit_begin(f, op, err, err_size);
    if (need[0]) {
        Op *g = start(&e, OP_CONV2D_GRAD_INPUT, (Value *[]){dy, X(1)}, 2);
        copy_attrs(g, op);
        if (g) op_set_ints(g, "input_size", X(0)->shape.dims + 2, 2);
        set_grad(&e, grads, 0, done(&e, g));
    }
    if (need[1]) {
        Op *g = start(&e, OP_CONV2D_GRAD_WEIGHT, (Value *[]){dy, X(0)}, 2);
        copy_attrs(g, op);
        if (g) op_set_ints(g, "kernel", X(1)->shape.dims + 2, 2);
        set_grad(&e, grads, 1, done(&e, g));
    }
    if (op->n_inputs == 3 && need[2]) {
        static const int64_t axes[] = {0, 2, 3};
        set_grad(&e, grads, 2, emit_reduce(&e, OP_SUM, dy, axes, 3, false));
    }
    return finish(&e, need, grads);
}
