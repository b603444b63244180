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
 * Building style: an Emit carries the IR builder (ir/build.h: at the forward op's location,
 * every result named "<result>.bw"), the forward op and the first error; the builder's calls
 * return the new value (NULL for a NULL operand), so a rule reads as straight-line math and
 * checks for failure once at the end. Gradients are then named "<operand>.grad"
 * (uniquified by the function).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build.h"
#include "cfunc.h"
#include "op_impl.h"

/* ---- building helpers ------------------------------------------------------------------- */

typedef struct Emit {
    IrBuilder b;   /* at the forward op's location, results named "<result>.bw" */
    const Op *fwd;
    char *err;
    size_t err_size;
    bool failed;   /* err is written */
    int first_new; /* values with ids from here on were built by this rule */
} Emit;

static Emit emit_begin(Function *f, const Op *fwd, char *err, size_t err_size) {
    char name[256];
    snprintf(name, sizeof name, "%s.bw", fwd->result->name);
    Emit e = {irb_begin(f, fwd->loc, name), fwd, err, err_size, false, f->n_values};
    return e;
}

static void emit_vfail(Emit *e, const char *fmt, va_list ap) {
    int n = snprintf(e->err, e->err_size, "%s gradient: ", op_info(e->fwd->kind)->name);
    if (n < 0 || (size_t)n >= e->err_size) return;
    vsnprintf(e->err + n, e->err_size - (size_t)n, fmt, ap);
}

__attribute__((format(printf, 2, 3))) static void emit_fail_raw(Emit *e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emit_vfail(e, fmt, ap);
    va_end(ap);
}

/* Whether the rule has failed; a type the builder could not infer (a bug in a rule) is then
 * reported with the op's message, if nothing was reported before. */
static bool rule_failed(Emit *e) {
    if (!e->failed && e->b.failed) {
        e->failed = true;
        emit_fail_raw(e, "building %s: %s", op_info(e->b.err_kind)->name, e->b.err);
    }
    return e->failed;
}

/* Reports the rule's failure (the builder's, if it failed first). */
__attribute__((format(printf, 2, 3))) static void emit_fail(Emit *e, const char *fmt, ...) {
    if (rule_failed(e)) return;
    e->failed = true;
    va_list ap;
    va_start(ap, fmt);
    emit_vfail(e, fmt, ap);
    va_end(ap);
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
    if (!v || rule_failed(e)) return;
    IR_ASSERT(v->dtype == e->fwd->inputs[i]->dtype);
    IR_ASSERT(shape_equal(&v->shape, &e->fwd->inputs[i]->shape));
    grads[i] = v;
}

/* Final status of a rule; names the gradients for the dump. Values that are not new ops (dy
 * passed through, or an operand) keep their names. */
static int finish(Emit *e, const bool *need, Value **grads) {
    if (rule_failed(e)) return -1;
    for (int i = 0; i < e->fwd->n_inputs; i++) {
        if (!need[i]) continue;
        if (!grads[i]) {
            emit_fail(e, "no gradient built for operand %d", i);
            return -1;
        }
        if (grads[i]->fn == e->b.f && grads[i]->id >= e->first_new) {
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
        if (need[i]) set_grad(&e, grads, i, irb_full(&e.b, SHAPE(i), 0.0, NULL));
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

UNARY_RULE(relu, irb_binary(&e.b, OP_RELU_GRAD, dy, y, NULL))
UNARY_RULE(neg, irb_unary(&e.b, OP_NEG, dy, NULL))
UNARY_RULE(exp, irb_binary(&e.b, OP_MUL, dy, y, NULL))                              /* dy * e^x */
UNARY_RULE(log, irb_binary(&e.b, OP_DIV, dy, x, NULL))                              /* dy / x */
UNARY_RULE(sqrt, irb_scale(&e.b, irb_binary(&e.b, OP_DIV, dy, y, NULL), 0.5, NULL)) /* dy / 2y */
/* d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 * y / x */
UNARY_RULE(rsqrt,
           irb_scale(&e.b, irb_binary(&e.b, OP_MUL, dy, irb_binary(&e.b, OP_DIV, y, x, NULL), NULL),
                     -0.5, NULL))
/* dy * (1 - y^2), written dy - dy*y*y */
UNARY_RULE(tanh,
           irb_binary(&e.b, OP_SUB, dy,
                      irb_binary(&e.b, OP_MUL, irb_binary(&e.b, OP_MUL, dy, y, NULL), y, NULL),
                      NULL))
UNARY_RULE(scale, irb_scale(&e.b, dy, op_float(op, "factor"), NULL))
/* -sin(x) = cos(x + pi/2): no sin op is needed */
#define HALF_PI 1.5707963267948966
UNARY_RULE(cos,
           irb_binary(&e.b, OP_MUL, dy,
                      irb_unary(&e.b, OP_COS,
                                irb_binary(&e.b, OP_ADD, x, irb_scalar(&e.b, HALF_PI, NULL), NULL),
                                NULL),
                      NULL))

GRAD_RULE(floor) { return grad_zero(f, op, need, grads, err, err_size); }
GRAD_RULE(equal) { return grad_zero(f, op, need, grads, err, err_size); }

/* dy goes to the side that was chosen: da = where(cond, dy, 0), db = where(cond, 0, dy), each
 * summed back to its operand's shape; cond, a mask, gets zeros (as equal's operands do). */
GRAD_RULE(where) {
    Emit e = emit_begin(f, op, err, err_size);
    if (need[0]) set_grad(&e, grads, 0, irb_full(&e.b, SHAPE(0), 0.0, NULL));
    Value *zero = need[1] || need[2] ? irb_scalar(&e.b, 0.0, NULL) : NULL;
    for (int side = 1; side <= 2; side++) {
        if (!need[side]) continue;
        Value *ins[3] = {X(0), side == 1 ? dy : zero, side == 1 ? zero : dy};
        Value *g = irb_finish(&e.b, irb_start(&e.b, OP_WHERE, ins, 3, NULL));
        set_grad(&e, grads, side, irb_to_shape(&e.b, OP_REDUCE_TO_SHAPE, g, SHAPE(side), NULL));
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
        Op *d = irb_start(&e.b, OP_DROPOUT, (Value *[]){dy, X(1)}, 2, NULL);
        copy_attrs(d, op);
        set_grad(&e, grads, 0, irb_finish(&e.b, d));
    }
    return finish(&e, need, grads);
}

/* ---- elementwise, two operands (broadcasting) --------------------------------------------- */

/* Each operand's gradient is computed at the result's shape, then summed over the axes that
 * broadcasting added or stretched. */
static void binary_grads(Emit *e, const Op *op, const bool *need, Value **grads, Value *ga,
                         Value *gb) {
    if (need[0]) set_grad(e, grads, 0, irb_to_shape(&e->b, OP_REDUCE_TO_SHAPE, ga, SHAPE(0), NULL));
    if (need[1]) set_grad(e, grads, 1, irb_to_shape(&e->b, OP_REDUCE_TO_SHAPE, gb, SHAPE(1), NULL));
}

GRAD_RULE(add) {
    Emit e = emit_begin(f, op, err, err_size);
    binary_grads(&e, op, need, grads, dy, dy);
    return finish(&e, need, grads);
}

GRAD_RULE(sub) {
    Emit e = emit_begin(f, op, err, err_size);
    binary_grads(&e, op, need, grads, dy, need[1] ? irb_unary(&e.b, OP_NEG, dy, NULL) : NULL);
    return finish(&e, need, grads);
}

GRAD_RULE(mul) {
    Emit e = emit_begin(f, op, err, err_size);
    Value *ga = need[0] ? irb_binary(&e.b, OP_MUL, dy, X(1), NULL) : NULL;
    Value *gb = need[1] ? irb_binary(&e.b, OP_MUL, dy, X(0), NULL) : NULL;
    binary_grads(&e, op, need, grads, ga, gb);
    return finish(&e, need, grads);
}

/* y = a / b: da = dy / b, db = -dy * a / b^2 = -(dy * y) / b */
GRAD_RULE(div) {
    Emit e = emit_begin(f, op, err, err_size);
    Value *ga = need[0] ? irb_binary(&e.b, OP_DIV, dy, X(1), NULL) : NULL;
    Value *gb =
        need[1]
            ? irb_unary(&e.b, OP_NEG,
                        irb_binary(&e.b, OP_DIV, irb_binary(&e.b, OP_MUL, dy, Y, NULL), X(1), NULL),
                        NULL)
            : NULL;
    binary_grads(&e, op, need, grads, ga, gb);
    return finish(&e, need, grads);
}

/* minimum/maximum: dy goes to the operand that equals the result; on a tie each side gets
 * half, as in PyTorch: ga = dy * [a == y] / ([a == y] + [b == y]). */
static int select_grad(Function *f, const Op *op, Value *dy, const bool *need, Value **grads,
                       char *err, size_t err_size) {
    Emit e = emit_begin(f, op, err, err_size);
    Value *ma = irb_binary(&e.b, OP_EQUAL, X(0), Y, NULL),
          *mb = irb_binary(&e.b, OP_EQUAL, X(1), Y, NULL);
    Value *share = irb_binary(&e.b, OP_DIV, dy, irb_binary(&e.b, OP_ADD, ma, mb, NULL), NULL);
    Value *ga = need[0] ? irb_binary(&e.b, OP_MUL, share, ma, NULL) : NULL;
    Value *gb = need[1] ? irb_binary(&e.b, OP_MUL, share, mb, NULL) : NULL;
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
        Op *g = irb_start(&e.b, OP_CALL, ins, op->n_inputs + 1, NULL);
        if (g) op_set_string(g, "fn", fn->grads[i]);
        if (g) op_set_floats(g, "args", scalars, n_args);
        set_grad(&e, grads, i,
                 irb_to_shape(&e.b, OP_REDUCE_TO_SHAPE, irb_finish(&e.b, g), SHAPE(i), NULL));
    }
    free(ins);
    return finish(&e, need, grads);
}

/* ---- layout --------------------------------------------------------------------------------- */

UNARY_RULE(broadcast, irb_to_shape(&e.b, OP_REDUCE_TO_SHAPE, dy, SHAPE(0), NULL))
UNARY_RULE(reduce_to_shape, irb_to_shape(&e.b, OP_BROADCAST, dy, SHAPE(0), NULL))
UNARY_RULE(reshape, irb_to_shape(&e.b, OP_RESHAPE, dy, SHAPE(0), NULL))

GRAD_RULE(transpose) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    int n = 0, rank = X(0)->shape.rank;
    const int64_t *perm = op_ints(op, "perm", &n);
    int64_t inverse[IR_MAX_RANK];
    for (int d = 0; d < rank; d++) inverse[axis_normalize(perm[d], rank)] = d;
    Op *t = irb_start(&e.b, OP_TRANSPOSE, &dy, 1, NULL);
    if (t) op_set_ints(t, "perm", inverse, rank);
    set_grad(&e, grads, 0, irb_finish(&e.b, t));
    return finish(&e, need, grads);
}

GRAD_RULE(slice) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    int axis = axis_normalize(op_int(op, "axis"), X(0)->shape.rank);
    Op *s = irb_start(&e.b, OP_SLICE_GRAD, &dy, 1, NULL);
    copy_attrs(s, op);
    if (s) op_set_int(s, "axis", axis);
    if (s) op_set_int(s, "size", X(0)->shape.dims[axis]);
    set_grad(&e, grads, 0, irb_finish(&e.b, s));
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
            Op *s = irb_start(&e.b, OP_SLICE, &dy, 1, NULL);
            if (s) op_set_int(s, "axis", axis);
            if (s) op_set_int(s, "start", at);
            if (s) op_set_int(s, "end", at + len);
            set_grad(&e, grads, i, irb_finish(&e.b, s));
        }
        at += len;
    }
    return finish(&e, need, grads);
}

/* Rows of dy added into the rows of the weight they were read from (ids may repeat). */
GRAD_RULE(embedding) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    Op *s = irb_start(&e.b, OP_SCATTER_ADD, (Value *[]){dy, X(1)}, 2, NULL);
    if (s) op_set_int(s, "num", X(0)->shape.dims[0]);
    set_grad(&e, grads, 0, irb_finish(&e.b, s));
    return finish(&e, need, grads);
}

/* ---- reductions ------------------------------------------------------------------------------ */

/* dy viewed with x's rank (reduced axes of size 1), whether or not keepdim was set. */
static Value *dy_kept(Emit *e, const Op *op, Value *dy, const bool *reduced) {
    Shape kept = kept_shape(SHAPE(0), reduced);
    return irb_to_shape(&e->b, OP_RESHAPE, dy, &kept, NULL);
}

GRAD_RULE(sum) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    bool reduced[IR_MAX_RANK];
    reduced_axes(op, X(0)->shape.rank, reduced, SHAPE(0));
    set_grad(&e, grads, 0,
             irb_to_shape(&e.b, OP_BROADCAST, dy_kept(&e, op, dy, reduced), SHAPE(0), NULL));
    return finish(&e, need, grads);
}

GRAD_RULE(mean) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    bool reduced[IR_MAX_RANK];
    int64_t count = reduced_axes(op, X(0)->shape.rank, reduced, SHAPE(0));
    Value *share = irb_scale(&e.b, dy_kept(&e, op, dy, reduced), 1.0 / (double)count, NULL);
    set_grad(&e, grads, 0, irb_to_shape(&e.b, OP_BROADCAST, share, SHAPE(0), NULL));
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
    Value *mask =
        irb_binary(&e.b, OP_EQUAL, X(0), irb_to_shape(&e.b, OP_RESHAPE, Y, &kept, NULL), NULL);
    Value *ties = irb_reduce(&e.b, OP_SUM, mask, axes, n_axes, true, NULL);
    Value *share = irb_binary(&e.b, OP_DIV, dy_kept(&e, op, dy, reduced), ties, NULL);
    set_grad(&e, grads, 0, irb_binary(&e.b, OP_MUL, mask, share, NULL));
    return finish(&e, need, grads);
}

/* y * (dy - sum(dy * y)) along the axis */
GRAD_RULE(softmax) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    int64_t axis = axis_normalize(op_int(op, "axis"), Y->shape.rank);
    Value *dot =
        irb_reduce(&e.b, OP_SUM, irb_binary(&e.b, OP_MUL, dy, Y, NULL), &axis, 1, true, NULL);
    set_grad(&e, grads, 0,
             irb_binary(&e.b, OP_MUL, Y, irb_binary(&e.b, OP_SUB, dy, dot, NULL), NULL));
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
    Value *mu = irb_reduce(&e->b, OP_MEAN, x, nm->axes, nm->n_axes, true, NULL);
    Value *xc = irb_binary(&e->b, OP_SUB, x, mu, NULL);
    Value *var = irb_reduce(&e->b, OP_MEAN, irb_binary(&e->b, OP_MUL, xc, xc, NULL), nm->axes,
                            nm->n_axes, true, NULL);
    nm->inv = irb_unary(&e->b, OP_RSQRT,
                        irb_binary(&e->b, OP_ADD, var, irb_scalar(&e->b, eps, NULL), NULL), NULL);
    nm->xhat = irb_binary(&e->b, OP_MUL, xc, nm->inv, NULL);
}

/* Gradient w.r.t. x when the statistics depend on x (training):
 * g = dy * w; dx = inv * (g - mean(g) - xhat * mean(g * xhat)), means over the axes. */
static Value *norm_input_grad_batch(Emit *e, const Norm *nm, Value *dy) {
    Value *g = irb_binary(&e->b, OP_MUL, dy, nm->w, NULL);
    Value *g_mean = irb_reduce(&e->b, OP_MEAN, g, nm->axes, nm->n_axes, true, NULL);
    Value *gx_mean = irb_reduce(&e->b, OP_MEAN, irb_binary(&e->b, OP_MUL, g, nm->xhat, NULL),
                                nm->axes, nm->n_axes, true, NULL);
    Value *centered = irb_binary(&e->b, OP_SUB, irb_binary(&e->b, OP_SUB, g, g_mean, NULL),
                            irb_binary(&e->b, OP_MUL, nm->xhat, gx_mean, NULL), NULL);
    return irb_binary(&e->b, OP_MUL, centered, nm->inv, NULL);
}

/* x [..., d] over the last axis; weight and bias [d]. */
GRAD_RULE(layer_norm) {
    Emit e = emit_begin(f, op, err, err_size);
    int64_t last = X(0)->shape.rank - 1;
    Norm nm = {&last, 1, X(1), NULL, NULL};
    if (need[0] || need[1]) norm_batch_stats(&e, &nm, X(0), op_float(op, "eps"));
    if (need[0]) set_grad(&e, grads, 0, norm_input_grad_batch(&e, &nm, dy));
    if (need[1])
        set_grad(&e, grads, 1,
                 irb_to_shape(&e.b, OP_REDUCE_TO_SHAPE, irb_binary(&e.b, OP_MUL, dy, nm.xhat, NULL),
                              SHAPE(1), NULL));
    if (need[2]) set_grad(&e, grads, 2, irb_to_shape(&e.b, OP_REDUCE_TO_SHAPE, dy, SHAPE(2), NULL));
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
    if (need[0]) nm.w = irb_to_shape(&e.b, OP_RESHAPE, X(1), &chan, NULL);
    if (!need[0] && !need[1]) {
        /* only the bias: no statistics needed */
    } else if (op_bool(op, "training")) {
        norm_batch_stats(&e, &nm, X(0), eps);
    } else {
        Value *mean = irb_to_shape(&e.b, OP_RESHAPE, X(3), &chan, NULL),
              *var = irb_to_shape(&e.b, OP_RESHAPE, X(4), &chan, NULL);
        nm.inv = irb_unary(&e.b, OP_RSQRT,
                           irb_binary(&e.b, OP_ADD, var, irb_scalar(&e.b, eps, NULL), NULL), NULL);
        if (need[1])
            nm.xhat =
                irb_binary(&e.b, OP_MUL, irb_binary(&e.b, OP_SUB, X(0), mean, NULL), nm.inv, NULL);
    }
    if (need[0])
        set_grad(
            &e, grads, 0,
            op_bool(op, "training")
                ? norm_input_grad_batch(&e, &nm, dy)
                : irb_binary(&e.b, OP_MUL, irb_binary(&e.b, OP_MUL, dy, nm.w, NULL), nm.inv, NULL));
    if (need[1])
        set_grad(&e, grads, 1,
                 irb_reduce(&e.b, OP_SUM, irb_binary(&e.b, OP_MUL, dy, nm.xhat, NULL), axes, n_axes,
                            false, NULL));
    if (need[2]) set_grad(&e, grads, 2, irb_reduce(&e.b, OP_SUM, dy, axes, n_axes, false, NULL));
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
    Op *g = irb_start(&e.b, OP_CROSS_ENTROPY_GRAD, (Value *[]){dy, X(0), X(1)}, 3, NULL);
    copy_attrs(g, op);
    set_grad(&e, grads, 0, irb_finish(&e.b, g));
    return finish(&e, need, grads);
}

GRAD_RULE(max_pool2d) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    Op *g = irb_start(&e.b, OP_MAX_POOL2D_GRAD, (Value *[]){dy, X(0)}, 2, NULL);
    copy_attrs(g, op);
    set_grad(&e, grads, 0, irb_finish(&e.b, g));
    return finish(&e, need, grads);
}

GRAD_RULE(adaptive_avg_pool2d) {
    Emit e = emit_begin(f, op, err, err_size);
    if (!need[0]) return 0;
    Op *g = irb_start(&e.b, OP_ADAPTIVE_AVG_POOL2D_GRAD, &dy, 1, NULL);
    if (g) op_set_ints(g, "input_size", X(0)->shape.dims + 2, 2);
    set_grad(&e, grads, 0, irb_finish(&e.b, g));
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
        ga = ta ? irb_matmul(&e.b, b, dy, tb, true, NULL)   /* da = B dy^T */
                : irb_matmul(&e.b, dy, b, false, !tb, NULL); /* da = dy B^T */
    if (need[1])
        gb = tb ? irb_matmul(&e.b, dy, a, true, ta, NULL)   /* db = dy^T A */
                : irb_matmul(&e.b, a, dy, !ta, false, NULL); /* db = A^T dy */
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
    Value *dy2 = irb_to_shape(&e.b, OP_RESHAPE, dy, &yr, NULL);
    if (need[0])
        set_grad(&e, grads, 0,
                 irb_to_shape(&e.b, OP_RESHAPE, irb_matmul(&e.b, dy2, X(1), false, false, NULL),
                              SHAPE(0), NULL));
    if (need[1])
        set_grad(&e, grads, 1,
                 irb_matmul(&e.b, dy2, irb_to_shape(&e.b, OP_RESHAPE, X(0), &xr, NULL), true, false,
                            NULL));
    if (op->n_inputs == 3 && need[2]) {
        int64_t axis0 = 0;
        set_grad(&e, grads, 2, irb_reduce(&e.b, OP_SUM, dy2, &axis0, 1, false, NULL));
    }
    return finish(&e, need, grads);
}

GRAD_RULE(conv2d) {
    Emit e = emit_begin(f, op, err, err_size);
    if (need[0]) {
        Op *g = irb_start(&e.b, OP_CONV2D_GRAD_INPUT, (Value *[]){dy, X(1)}, 2, NULL);
        copy_attrs(g, op);
        if (g) op_set_ints(g, "input_size", X(0)->shape.dims + 2, 2);
        set_grad(&e, grads, 0, irb_finish(&e.b, g));
    }
    if (need[1]) {
        Op *g = irb_start(&e.b, OP_CONV2D_GRAD_WEIGHT, (Value *[]){dy, X(0)}, 2, NULL);
        copy_attrs(g, op);
        if (g) op_set_ints(g, "kernel", X(1)->shape.dims + 2, 2);
        set_grad(&e, grads, 1, irb_finish(&e.b, g));
    }
    if (op->n_inputs == 3 && need[2]) {
        static const int64_t axes[] = {0, 2, 3};
        set_grad(&e, grads, 2, irb_reduce(&e.b, OP_SUM, dy, axes, 3, false, NULL));
    }
    return finish(&e, need, grads);
}
