/* autodiff.c — reverse-mode automatic differentiation: appends the backward program of a
 * scalar loss to the function that computes it (autodiff_append, declared in passes.h).
 *
 * What it does:
 *  1. Marks the values that need a gradient: those reachable forward from a `param` op of a
 *     trainable weight (through float-valued ops that have a gradient rule) AND reachable
 *     backward from the loss. Everything else (a frozen prefix of the network, BN buffers,
 *     ids, masks, rng) gets no backward ops at all.
 *  2. Seeds d(loss)/d(loss) with full(1.0) of the loss's shape.
 *  3. Walks the forward ops in reverse; for each marked op it calls the op table's gradient
 *     rule with need[i] = "operand i is marked", and adds the returned gradient into the
 *     operand's running sum (an `add` per extra use, so a value read by several ops gets the
 *     sum of their contributions).
 *  4. Sums the gradients of all `param` ops that read the same weight (tied weights).
 *
 * What it keeps true:
 *  - The forward ops are untouched; backward ops only follow them, so SSA order holds.
 *  - Every backward op carries the SrcLoc of the forward op it differentiates (the rules
 *    give new ops op->loc; the sums made here do the same).
 *  - Readable names: the final gradient of forward value %x is %d.x when the pass made it
 *    (a gradient that is just another value, e.g. add's dy passed through, keeps its name);
 *    the per-weight total is %d.<param name>; the contributions of a tied weight's separate
 *    uses are %d.<use name>.part; partial sums are %d.<x>.sum.
 *  - Nothing is computed only for frozen weights or buffers; gradients have the dtype and
 *    shape of the value they belong to (checked after every rule).
 *  - Errors (no rule, a rule failing, a rule returning the wrong type) name the op and value
 *    and point at the op's model-file location.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "ops.h"
#include "passes.h"

typedef struct Autodiff {
    Function *f;
    Module *m;
    int n_fwd_ops;     /* forward ops: f->ops[0 .. n_fwd_ops) */
    int n_fwd_values;  /* values that existed before the pass */
    bool *marked;      /* per forward value id: needs a gradient */
    Value **grad;      /* per forward value id: running sum of its gradient */
    bool *named;       /* per value id (grows): a backward value this pass has named */
    int n_named;
    int *param_index;  /* per forward value id defined by `param`: module param index, or -1 */
    int *param_uses;   /* per module param: marked `param` ops that read it */
    Value **param_grad;
    Diag *d;
} Autodiff;

static int fail(Autodiff *ad, const Op *op, const char *fmt, const char *detail) {
    char msg[900];
    snprintf(msg, sizeof msg, fmt, detail);
    if (op)
        diag_set(ad->d, op->loc, "autodiff: %s %%%s: %s", op_info(op->kind)->name,
                 op->result->name, msg);
    else
        diag_set(ad->d, SRCLOC_NONE, "autodiff: %s", msg);
    return -1;
}

static bool is_trainable_read(const Autodiff *ad, const Op *op) {
    int p = ad->param_index[op->result->id];
    return p >= 0 && ad->m->params[p]->kind == PARAM_WEIGHT && ad->m->params[p]->trainable;
}

/* ---- 1. which values need a gradient ------------------------------------------------------- */

/* An op passes "depends on a trainable weight" on when it can be differentiated at all. */
static bool propagates(const Op *op) {
    return dtype_is_float(op->result->dtype) && op_info(op->kind)->grad_rule != grad_none;
}

static void mark(Autodiff *ad, const Value *loss) {
    int nv = ad->n_fwd_values;
    bool *fwd = calloc((size_t)nv, sizeof *fwd), *bwd = calloc((size_t)nv, sizeof *bwd);
    IR_ASSERT(fwd && bwd);
    for (int i = 0; i < ad->n_fwd_ops; i++) {
        const Op *op = ad->f->ops[i];
        bool from_weight = op->kind == OP_PARAM && is_trainable_read(ad, op);
        for (int j = 0; j < op->n_inputs && !from_weight; j++)
            from_weight = fwd[op->inputs[j]->id] && propagates(op);
        fwd[op->result->id] = from_weight;
    }
    bwd[loss->id] = true;
    for (int i = ad->n_fwd_ops - 1; i >= 0; i--) {
        const Op *op = ad->f->ops[i];
        if (!bwd[op->result->id]) continue;
        for (int j = 0; j < op->n_inputs; j++) bwd[op->inputs[j]->id] = true;
    }
    for (int v = 0; v < nv; v++) ad->marked[v] = fwd[v] && bwd[v];
    free(fwd);
    free(bwd);
}

/* ---- naming and summing ------------------------------------------------------------------------ */

static bool is_named(Autodiff *ad, const Value *g) {
    return g->id < ad->n_named && ad->named[g->id];
}

/* Gives a backward value made by this pass the name "d.<base><suffix>", once. */
static void name_grad(Autodiff *ad, Value *g, const char *base, const char *suffix) {
    if (g->id < ad->n_fwd_values || is_named(ad, g)) return;
    if (g->id >= ad->n_named) {
        int n = ad->f->n_values;
        bool *grown = realloc(ad->named, (size_t)n * sizeof *grown);
        IR_ASSERT(grown);
        memset(grown + ad->n_named, 0, (size_t)(n - ad->n_named) * sizeof *grown);
        ad->named = grown;
        ad->n_named = n;
    }
    size_t len = strlen(base) + strlen(suffix) + 3;
    char *name = malloc(len);
    IR_ASSERT(name);
    snprintf(name, len, "d.%s%s", base, suffix);
    value_rename(g, name);
    free(name);
    ad->named[g->id] = true;
}

/* *sum += g (an `add` at `at`'s location); the partial sum is named after `of`. */
static int accumulate(Autodiff *ad, Value **sum, Value *g, const char *of, const Op *at) {
    if (*sum == NULL) {
        *sum = g;
        return 0;
    }
    Value *ins[2] = {*sum, g};
    size_t len = strlen(of) + 8;
    char *name = malloc(len);
    IR_ASSERT(name);
    snprintf(name, len, "d.%s.sum", of);
    Op *add = func_add_op(ad->f, OP_ADD, ins, 2, name, at->loc);
    free(name);
    char err[512];
    if (op_infer(add, err, sizeof err) != 0) return fail(ad, at, "summing gradients: %s", err);
    *sum = add->result;
    return 0;
}

/* ---- 2./3. seed and reverse walk ---------------------------------------------------------------- */

static int seed(Autodiff *ad, Value *loss) {
    const Op *at = loss->def;
    Op *one = func_add_op(ad->f, OP_FULL, NULL, 0, "d.seed", at ? at->loc : SRCLOC_NONE);
    op_set_ints(one, "shape", loss->shape.dims, loss->shape.rank);
    op_set_float(one, "value", 1.0);
    op_set_string(one, "dtype", dtype_name(loss->dtype));
    char err[512];
    if (op_infer(one, err, sizeof err) != 0) return fail(ad, at, "seeding the loss: %s", err);
    ad->grad[loss->id] = one->result;
    return 0;
}

/* A rule's result for operand i must exist and have the operand's dtype and shape. */
static int check_rule_result(Autodiff *ad, const Op *op, int i, const Value *g) {
    const Value *x = op->inputs[i];
    char detail[400], want[96], got[96];
    if (g == NULL) {
        snprintf(detail, sizeof detail, "gradient rule gave no gradient for operand %d (%%%s)",
                 i, x->name);
        return fail(ad, op, "%s", detail);
    }
    if (g->dtype == x->dtype && shape_equal(&g->shape, &x->shape)) return 0;
    type_format(x->dtype, &x->shape, want, sizeof want);
    type_format(g->dtype, &g->shape, got, sizeof got);
    snprintf(detail, sizeof detail,
             "gradient rule gave %s for operand %d (%%%s), which is %s (bug in the rule)", got,
             i, x->name, want);
    return fail(ad, op, "%s", detail);
}

static int differentiate_op(Autodiff *ad, const Op *op) {
    enum { MAX_OPERANDS = 64 };
    bool need[MAX_OPERANDS] = {false};
    Value *grads[MAX_OPERANDS] = {NULL};
    bool any = false;
    if (op->n_inputs > MAX_OPERANDS) return fail(ad, op, "%s", "too many operands");
    for (int i = 0; i < op->n_inputs; i++) any |= need[i] = ad->marked[op->inputs[i]->id];
    if (!any) return 0;
    GradRule rule = op_info(op->kind)->grad_rule;
    if (rule == NULL) return fail(ad, op, "%s", "the op has no gradient rule");
    char err[768] = "";
    if (rule(ad->f, op, ad->grad[op->result->id], need, grads, err, sizeof err) != 0)
        return fail(ad, op, "gradient rule failed: %s", err);
    for (int i = 0; i < op->n_inputs; i++) {
        if (!need[i]) continue;
        if (check_rule_result(ad, op, i, grads[i]) != 0) return -1;
        const Value *x = op->inputs[i];
        if (accumulate(ad, &ad->grad[x->id], grads[i], x->name, op) != 0) return -1;
    }
    return 0;
}

/* A marked `param` op: its gradient is final; add it to the weight's total. */
static int collect_param(Autodiff *ad, const Op *op) {
    Value *v = op->result, *g = ad->grad[v->id];
    int p = ad->param_index[v->id];
    const char *pname = ad->m->params[p]->name;
    if (ad->param_uses[p] > 1) name_grad(ad, g, v->name, ".part");
    if (accumulate(ad, &ad->param_grad[p], g, pname, op) != 0) return -1;
    return 0;
}

static int reverse_walk(Autodiff *ad) {
    for (int i = ad->n_fwd_ops - 1; i >= 0; i--) {
        const Op *op = ad->f->ops[i];
        Value *v = op->result;
        if (!ad->marked[v->id] || ad->grad[v->id] == NULL) continue;
        if (op->kind == OP_PARAM) {
            if (collect_param(ad, op) != 0) return -1;
            continue;
        }
        name_grad(ad, ad->grad[v->id], v->name, ""); /* every use is behind us: final */
        if (differentiate_op(ad, op) != 0) return -1;
    }
    for (int p = 0; p < ad->m->n_params; p++)
        if (ad->param_grad[p]) name_grad(ad, ad->param_grad[p], ad->m->params[p]->name, "");
    return 0;
}

/* ---- entry point ----------------------------------------------------------------------------- */

static int check_loss(Autodiff *ad, const Value *loss) {
    char type[96];
    if (loss == NULL || loss->fn != ad->f)
        return fail(ad, NULL, "loss value is not in function @%s", ad->f->name);
    if (!dtype_is_float(loss->dtype) || loss->shape.rank != 0) {
        type_format(loss->dtype, &loss->shape, type, sizeof type);
        char detail[200];
        snprintf(detail, sizeof detail, "loss %%%s must be a float scalar, not %s", loss->name,
                 type);
        return fail(ad, loss->def, "%s", detail);
    }
    return 0;
}

static void index_params(Autodiff *ad) {
    for (int v = 0; v < ad->n_fwd_values; v++) ad->param_index[v] = -1;
    for (int i = 0; i < ad->n_fwd_ops; i++) {
        const Op *op = ad->f->ops[i];
        if (op->kind == OP_PARAM)
            ad->param_index[op->result->id] = module_param_index(ad->m, op_string(op, "name"));
    }
}

static void free_state(Autodiff *ad) {
    free(ad->marked);
    free(ad->grad);
    free(ad->named);
    free(ad->param_index);
    free(ad->param_uses);
}

int autodiff_append(Function *f, Value *loss, Value ***param_grads, Diag *d) {
    *param_grads = NULL;
    Autodiff ad = {.f = f, .m = f->module, .n_fwd_ops = f->n_ops, .n_fwd_values = f->n_values,
                   .d = d};
    size_t nv = (size_t)f->n_values + 1, np = (size_t)f->module->n_params + 1;
    ad.marked = calloc(nv, sizeof *ad.marked);
    ad.grad = calloc(nv, sizeof *ad.grad);
    ad.param_index = calloc(nv, sizeof *ad.param_index);
    ad.param_uses = calloc(np, sizeof *ad.param_uses);
    ad.param_grad = calloc(np, sizeof *ad.param_grad);
    IR_ASSERT(ad.marked && ad.grad && ad.param_index && ad.param_uses && ad.param_grad);

    int rc = check_loss(&ad, loss);
    if (rc == 0) {
        index_params(&ad);
        mark(&ad, loss);
        for (int i = 0; i < ad.n_fwd_ops; i++) {
            const Op *op = f->ops[i];
            if (op->kind == OP_PARAM && ad.marked[op->result->id])
                ad.param_uses[ad.param_index[op->result->id]]++;
        }
        if (ad.marked[loss->id]) rc = seed(&ad, loss);
        if (rc == 0 && ad.marked[loss->id]) rc = reverse_walk(&ad);
    }
    free_state(&ad);
    if (rc != 0) {
        free(ad.param_grad);
        return -1;
    }
    *param_grads = ad.param_grad;
    return 0;
}
