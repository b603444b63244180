/* build.h — appending ops to a function as straight-line code: the one IR builder, used by
 * the gradient rules (ir/grad_rules.c) and the training program (passes/train_program.c).
 *
 * Every op built gets the builder's location, and its result the name given to the call or,
 * given NULL, the builder's default name (NULL: the function numbers it). Each op's type is
 * inferred as it is built. A failure there is kept (the first one: `failed`, the op kind and
 * op_infer's message) and the op's value is still returned, so callers build freely and check
 * `failed` once at the end; a failure is a bug in the caller. A NULL operand gives NULL,
 * without building anything, so a chain over a missing value stays NULL.
 */
#ifndef CAPC_IR_BUILD_H
#define CAPC_IR_BUILD_H

#include <stdbool.h>

#include "ir.h"

typedef struct IrBuilder {
    Function *f;
    SrcLoc loc;       /* given to every op built */
    char name[256];   /* result name when a call gives none; "": the function's numbering */
    bool failed;      /* a type could not be inferred (or the caller set it) */
    int err_kind;     /* the first failure: the op kind ... */
    char err[512];    /* ... and why */
} IrBuilder;

/* A builder appending to f at loc, naming results `name` (copied; NULL: none) unless told
 * otherwise. */
IrBuilder irb_begin(Function *f, SrcLoc loc, const char *name);

/* An op over n operands, to set attributes on and then pass to irb_finish; NULL if an operand
 * is NULL. */
Op *irb_start(IrBuilder *b, int kind, Value *const *ins, int n, const char *name);
/* Infers op's type and returns its value (NULL for a NULL op). */
Value *irb_finish(IrBuilder *b, Op *op);

Value *irb_unary(IrBuilder *b, int kind, Value *x, const char *name);
Value *irb_binary(IrBuilder *b, int kind, Value *x, Value *y, const char *name);
/* x * factor (op scale). */
Value *irb_scale(IrBuilder *b, Value *x, double factor, const char *name);
/* A tensor of shape s filled with value (op full, f32). */
Value *irb_full(IrBuilder *b, const Shape *s, double value, const char *name);
/* An f32 scalar. */
Value *irb_scalar(IrBuilder *b, double value, const char *name);
/* An op of x with a "shape" attribute (reshape, broadcast, reduce_to_shape). */
Value *irb_shape_op(IrBuilder *b, int kind, Value *x, const Shape *s, const char *name);
/* sum or mean of x over axes (normalized). */
Value *irb_reduce(IrBuilder *b, int kind, Value *x, const int64_t *axes, int n, bool keepdim,
                  const char *name);
/* a @ b, either transposed (its last two axes). */
Value *irb_matmul(IrBuilder *b, Value *x, Value *y, bool transpose_x, bool transpose_y,
                  const char *name);
/* x itself when it already has shape s, else irb_shape_op. */
Value *irb_to_shape(IrBuilder *b, int kind, Value *x, const Shape *s, const char *name);
/* Reads module param `param` as value `name` (op param). */
Value *irb_param(IrBuilder *b, const char *param, const char *name);

#endif
