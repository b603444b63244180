/* build.c — the IR builder (build.h). */
#include "build.h"

#include <stdio.h>

#include "ops.h"

IrBuilder irb_begin(Function *f, SrcLoc loc, const char *name) {
    IrBuilder b = {f, loc, {0}, false, 0, {0}};
    if (name) snprintf(b.name, sizeof b.name, "%s", name);
    return b;
}

Op *irb_start(IrBuilder *b, int kind, Value *const *ins, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!ins[i]) return NULL;
    if (!name && b->name[0]) name = b->name;
    return func_add_op(b->f, kind, ins, n, name, b->loc);
}

Value *irb_finish(IrBuilder *b, Op *op) {
    if (!op) return NULL;
    char err[sizeof b->err];
    if (op_infer(op, err, sizeof err) != 0 && !b->failed) {
        b->failed = true;
        b->err_kind = op->kind;
        snprintf(b->err, sizeof b->err, "%s", err);
    }
    return op->result;
}

Value *irb_unary(IrBuilder *b, int kind, Value *x, const char *name) {
    return irb_finish(b, irb_start(b, kind, &x, 1, name));
}

Value *irb_binary(IrBuilder *b, int kind, Value *x, Value *y, const char *name) {
    Value *ins[2] = {x, y};
    return irb_finish(b, irb_start(b, kind, ins, 2, name));
}

Value *irb_scale(IrBuilder *b, Value *x, double factor, const char *name) {
    Op *op = irb_start(b, OP_SCALE, &x, 1, name);
    if (op) op_set_float(op, "factor", factor);
    return irb_finish(b, op);
}

Value *irb_full(IrBuilder *b, const Shape *s, double value, const char *name) {
    Op *op = irb_start(b, OP_FULL, NULL, 0, name);
    op_set_ints(op, "shape", s->dims, s->rank);
    op_set_float(op, "value", value);
    op_set_string(op, "dtype", "f32");
    return irb_finish(b, op);
}

Value *irb_scalar(IrBuilder *b, double value, const char *name) {
    Shape s = shape_scalar();
    return irb_full(b, &s, value, name);
}

Value *irb_shape_op(IrBuilder *b, int kind, Value *x, const Shape *s, const char *name) {
    Op *op = irb_start(b, kind, &x, 1, name);
    if (op) op_set_ints(op, "shape", s->dims, s->rank);
    return irb_finish(b, op);
}

Value *irb_to_shape(IrBuilder *b, int kind, Value *x, const Shape *s, const char *name) {
    if (x && shape_equal(&x->shape, s)) return x;
    return irb_shape_op(b, kind, x, s, name);
}

Value *irb_reduce(IrBuilder *b, int kind, Value *x, const int64_t *axes, int n, bool keepdim,
                  const char *name) {
    Op *op = irb_start(b, kind, &x, 1, name);
    if (op) op_set_ints(op, "axes", axes, n);
    if (op) op_set_bool(op, "keepdim", keepdim);
    return irb_finish(b, op);
}

Value *irb_matmul(IrBuilder *b, Value *x, Value *y, bool transpose_x, bool transpose_y,
                  const char *name) {
    Value *ins[2] = {x, y};
    Op *op = irb_start(b, OP_MATMUL, ins, 2, name);
    if (op) op_set_bool(op, "transpose_a", transpose_x);
    if (op) op_set_bool(op, "transpose_b", transpose_y);
    return irb_finish(b, op);
}

Value *irb_param(IrBuilder *b, const char *param, const char *name) {
    Op *op = irb_start(b, OP_PARAM, NULL, 0, name);
    op_set_string(op, "name", param);
    return irb_finish(b, op);
}
