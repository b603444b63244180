/* shapes.c — shape inference: gives every op result its dtype and static shape.
 *
 * Requires: a module whose function inputs have known types (the frontend gives them) and
 * whose ops are in SSA program order (operands defined before use). Result shapes may be
 * unknown ('?') or already known.
 *
 * Does: for every function, for every op in program order, checks the operand count against
 * the op table, then asks the op's shape rule (ops.def -> shape_rules.c) for the result's
 * dtype and shape and stores them. Nothing here knows about individual ops: the table does.
 * A result that already had a known type must agree with the rule (a hand-edited dump that
 * contradicts the rules is reported rather than silently "fixed").
 *
 * Keeps true afterwards: every value has a known dtype and shape that agrees with the shape
 * rules, and the module verifies with shapes required (ir_verify_module(m, true)).
 *
 * Errors: the first problem is reported at the op's model-file location, with the rule's
 * message followed by the value it defines, e.g.
 *   "add: cannot broadcast f32[16,64] with f32[16,32] (in %fc1.out)".
 */
#include <stdio.h>
#include <string.h>

#include "diag.h"
#include "ops.h"
#include "passes.h"

/* Fills d with "<what> (in %<value>)" at the op's location. */
static int op_error(Diag *d, const Op *op, const char *what) {
    diag_set(d, op->loc, "%s (in %%%s)", what, op->result->name);
    return -1;
}

/* The table's operand limits, checked before the rule runs so that rules may index their
 * operands without checking how many there are. */
static int check_operand_count(const Op *op, Diag *d) {
    const OpInfo *info = op_info(op->kind);
    int n = op->n_inputs;
    if (n >= info->min_inputs && (info->max_inputs < 0 || n <= info->max_inputs)) return 0;

    char what[256];
    if (info->max_inputs < 0)
        snprintf(what, sizeof what, "%s: expected at least %d operand%s, got %d", info->name,
                 info->min_inputs, info->min_inputs == 1 ? "" : "s", n);
    else if (info->min_inputs == info->max_inputs)
        snprintf(what, sizeof what, "%s: expected %d operand%s, got %d", info->name,
                 info->min_inputs, info->min_inputs == 1 ? "" : "s", n);
    else
        snprintf(what, sizeof what, "%s: expected %d to %d operands, got %d", info->name,
                 info->min_inputs, info->max_inputs, n);
    return op_error(d, op, what);
}

/* Rules assume their operands' types are known. In program order they are, unless the IR
 * uses a value before defining it or an input came without a shape; say which. */
static int check_operands_known(const Op *op, Diag *d) {
    for (int i = 0; i < op->n_inputs; i++) {
        const Value *v = op->inputs[i];
        if (v == NULL) {
            char what[256];
            snprintf(what, sizeof what, "%s: operand %d is missing", op_info(op->kind)->name,
                     i + 1);
            return op_error(d, op, what);
        }
        if (!shape_known(&v->shape)) {
            char what[512];
            snprintf(what, sizeof what, "%s: the shape of operand %%%s is not known here",
                     op_info(op->kind)->name, v->name);
            return op_error(d, op, what);
        }
    }
    return 0;
}

/* A result typed before the pass ran must match what the rule computes. */
static int check_agrees(const Op *op, DType dtype, const Shape *shape, Diag *d) {
    const Value *r = op->result;
    if (!shape_known(&r->shape)) return 0;
    if (r->dtype == dtype && shape_equal(&r->shape, shape)) return 0;

    char had[128], rule[128], what[512];
    type_format(r->dtype, &r->shape, had, sizeof had);
    type_format(dtype, shape, rule, sizeof rule);
    snprintf(what, sizeof what, "%s: result is typed %s but the shape rule gives %s",
             op_info(op->kind)->name, had, rule);
    return op_error(d, op, what);
}

static int infer_op(Op *op, Diag *d) {
    const OpInfo *info = op_info(op->kind);
    if (check_operand_count(op, d) != 0) return -1;
    if (check_operands_known(op, d) != 0) return -1;
    if (info->infer_shape == NULL) ir_bug("op '%s' has no shape rule in the op table", info->name);

    DType dtype = DT_F32;
    Shape shape = shape_unknown();
    char err[512] = "";
    if (info->infer_shape(op, &dtype, &shape, err, sizeof err) != 0) {
        if (err[0] == '\0') snprintf(err, sizeof err, "%s: invalid operands", info->name);
        return op_error(d, op, err);
    }
    /* A rule that succeeds must produce a shape; anything else is a bug in the rule. */
    if (!shape_known(&shape)) ir_bug("shape rule of '%s' returned an unknown shape", info->name);
    if (check_agrees(op, dtype, &shape, d) != 0) return -1;

    op->result->dtype = dtype;
    op->result->shape = shape;
    return 0;
}

static int infer_function(Function *f, Diag *d) {
    for (int i = 0; i < f->n_inputs; i++) {
        const Value *in = f->inputs[i];
        if (!shape_known(&in->shape)) {
            diag_set(d, SRCLOC_NONE, "input %%%s of function @%s has no known shape",
                     in->name, f->name);
            return -1;
        }
    }
    for (int i = 0; i < f->n_ops; i++)
        if (infer_op(f->ops[i], d) != 0) return -1;
    return 0;
}

int pass_infer_shapes(Module *m, const PassOptions *opts, Diag *d) {
    (void)opts;
    for (int i = 0; i < m->n_funcs; i++)
        if (infer_function(m->funcs[i], d) != 0) return -1;
    return ir_verify_module(m, true, d);
}
