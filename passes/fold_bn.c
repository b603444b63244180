/* fold_bn.c — a frozen BatchNorm folds into the convolution before it.
 *
 * Needs: verified functions with shapes known (after the training pass, so that every entry
 * point is there). Runs before fusion.
 * Does: wherever conv2d(x, W [, c]) feeds only batch_norm(training=false) whose weight g, bias
 * b, running mean rm and variance rv are frozen, like W (and c): nothing the program trains
 * and no entry point writes (a BatchNorm that runs in training mode in train_step updates its
 * running statistics, so its eval-mode uses elsewhere are not folded), so their fold stays
 * valid for as long as the state does not change from outside, the pair
 * becomes one conv2d(x, W', b') with
 *
 *   s = g / sqrt(rv + eps),   W' = W * s (per output channel),   b' = (c - rm) * s + b
 *
 * W' and b' are new module state of kind DERIVED ("fold.<W's name>", "fold.<W's name minus
 * .weight>.bias"), computed by a new entry point `fold` from the state they come from; the
 * runtime runs it before any other entry whenever state was written from outside (loading,
 * initializing). The BatchNorm's per-element work (a division and a square root in double for
 * every element of the convolution's output) is then gone from every step: the convolution's
 * kernel adds b' (and applies the ReLU that follows) in its epilogue. BatchNorms that train
 * (layer4 and the neck of the captioner) are left alone: their statistics change every step.
 * Keeps true: every function computes the same values up to the rounding of the fold (the
 * tests compare the folded program with the unfolded one); every op left without a user (the
 * replaced pair among them) is removed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "ops.h"
#include "passes.h"

/* One fold made: what it was computed from (the params of W, c, g, b, rm, rv; eps) and the
 * derived state holding it. The same conv and BatchNorm in another entry point reuse it; the
 * same conv weight with another BatchNorm gets state of its own. */
typedef struct Made {
    const Param *from[6];
    double eps;
    char *w_name, *b_name;
} Made;

typedef struct Fold {
    Module *m;
    Function *fold; /* the entry point, made on the first fold */
    Diag *d;
    const ConstantState *constant; /* what no entry point trains or updates */
    Made *made;
    int n_made, cap_made;
} Fold;

/* State nothing trains and no entry point writes: its fold stays valid until the state is
 * written from outside (which the runtime watches). */
static bool frozen(const Fold *fo, const Value *v) {
    return constant_state_has(fo->constant, value_param(fo->m, v));
}

/* Per value id: how many ops read it (outputs count too). */
static int *count_uses(const Function *f) {
    int *n = calloc((size_t)f->n_values + 1, sizeof *n);
    if (n == NULL) return NULL;
    for (int i = 0; i < f->n_ops; i++)
        for (int k = 0; k < f->ops[i]->n_inputs; k++) n[f->ops[i]->inputs[k]->id]++;
    for (int i = 0; i < f->n_outputs; i++) n[f->outputs[i]->id]++;
    return n;
}

/* conv -> batch_norm with everything frozen (uses: per value id, of f as it came). */
static bool foldable(const Fold *fo, const Op *bn, const int *uses, int n_values) {
    if (bn->kind != OP_BATCH_NORM || op_bool(bn, "training")) return false;
    if (bn->result->id >= n_values || uses[bn->result->id] == 0) return false; /* unused */
    const Op *conv = bn->inputs[0]->def;
    if (conv == NULL || conv->kind != OP_CONV2D || uses[conv->result->id] != 1) return false;
    for (int i = 1; i < conv->n_inputs; i++)
        if (!frozen(fo, conv->inputs[i])) return false;
    for (int i = 1; i < 5; i++)
        if (!frozen(fo, bn->inputs[i])) return false;
    return true;
}

static Value *emit(Function *f, int kind, Value *const *ins, int n, const char *name,
                   const Op *like) {
    return func_add_op(f, kind, ins, n, name, like->loc)->result;
}

static Value *infer(Op *op, Diag *d) {
    char err[512];
    if (op_infer(op, err, sizeof err) != 0) {
        diag_internal(d, d->loc, "folding BatchNorm: %s", err);
        return NULL;
    }
    return op->result;
}

static Value *read_param(Function *f, const char *name, const Op *like, Diag *d) {
    Op *op = func_add_op(f, OP_PARAM, NULL, 0, name, like->loc);
    op_set_string(op, "name", name);
    return infer(op, d);
}

static Value *binary(Function *f, int kind, Value *a, Value *b, const Op *like, Diag *d) {
    Value *ins[2] = {a, b};
    return infer(emit(f, kind, ins, 2, NULL, like)->def, d);
}

/* Adds to `fold` the computation of W' and b' for this pair (names: *w_name, *b_name). */
static int add_fold(Fold *fo, const Op *conv, const Op *bn, const char *w_name,
                    const char *b_name) {
    Function *f = fo->fold;
    Diag *d = fo->d;
    const Module *m = fo->m;
    Value *w = read_param(f, value_param(m, conv->inputs[1])->name, conv, d);
    Value *g = read_param(f, value_param(m, bn->inputs[1])->name, bn, d);
    Value *b = read_param(f, value_param(m, bn->inputs[2])->name, bn, d);
    Value *rm = read_param(f, value_param(m, bn->inputs[3])->name, bn, d);
    Value *rv = read_param(f, value_param(m, bn->inputs[4])->name, bn, d);
    if (!w || !g || !b || !rm || !rv) return -1;
    Op *eps = func_add_op(f, OP_FULL, NULL, 0, NULL, bn->loc);
    op_set_ints(eps, "shape", NULL, 0);
    op_set_float(eps, "value", op_float(bn, "eps"));
    Value *e = infer(eps, d);
    Value *sd = e ? binary(f, OP_ADD, rv, e, bn, d) : NULL;
    Value *root = sd ? infer(emit(f, OP_SQRT, &sd, 1, NULL, bn)->def, d) : NULL;
    Value *s = root ? binary(f, OP_DIV, g, root, bn, d) : NULL; /* [O] */
    if (s == NULL) return -1;
    Op *col = func_add_op(f, OP_RESHAPE, &s, 1, NULL, bn->loc);
    int64_t dims[4] = {-1, 1, 1, 1};
    op_set_ints(col, "shape", dims, 4);
    Value *s4 = infer(col, d);
    Value *w2 = s4 ? binary(f, OP_MUL, w, s4, conv, d) : NULL;
    Value *shift;
    if (conv->n_inputs == 3) {
        Value *c = read_param(f, value_param(m, conv->inputs[2])->name, conv, d);
        shift = c ? binary(f, OP_SUB, c, rm, bn, d) : NULL;
    } else {
        shift = infer(emit(f, OP_NEG, &rm, 1, NULL, bn)->def, d);
    }
    Value *scaled = shift ? binary(f, OP_MUL, shift, s, bn, d) : NULL;
    Value *b2 = scaled ? binary(f, OP_ADD, scaled, b, bn, d) : NULL;
    if (w2 == NULL || b2 == NULL) return -1;
    char out[608]; /* "@" + a name of up to 600 */
    snprintf(out, sizeof out, "@%s", w_name);
    func_add_output(f, out, w2);
    snprintf(out, sizeof out, "@%s", b_name);
    func_add_output(f, out, b2);
    return 0;
}

/* The fold of the pair made earlier, or NULL. */
static const Made *find_made(const Fold *fo, const Param *const from[6], double eps) {
    for (int i = 0; i < fo->n_made; i++)
        if (memcmp(fo->made[i].from, from, sizeof fo->made[i].from) == 0 && fo->made[i].eps == eps)
            return &fo->made[i];
    return NULL;
}

static int remember(Fold *fo, const Param *const from[6], double eps, const char *w_name,
                    const char *b_name) {
    if (fo->n_made == fo->cap_made) {
        fo->cap_made = fo->cap_made ? 2 * fo->cap_made : 16;
        Made *grown = realloc(fo->made, sizeof *grown * (size_t)fo->cap_made);
        if (grown == NULL) return -1;
        fo->made = grown;
    }
    Made *m = &fo->made[fo->n_made];
    memcpy(m->from, from, sizeof m->from);
    m->eps = eps;
    m->w_name = strdup(w_name);
    m->b_name = strdup(b_name);
    if (m->w_name == NULL || m->b_name == NULL) {
        free(m->w_name), free(m->b_name);
        return -1;
    }
    fo->n_made++;
    return 0;
}

/* The derived state of the pair (made, with its part of `fold`, the first time). Named after
 * the conv weight ("fold.W", "fold.<W minus .weight>.bias"); a second BatchNorm after the
 * same weight gets ".2", ".3", ... */
static int derived_state(Fold *fo, const Op *conv, const Op *bn, char *w_name, char *b_name,
                         size_t size) {
    const Param *from[6] = {value_param(fo->m, conv->inputs[1]),
                            conv->n_inputs == 3 ? value_param(fo->m, conv->inputs[2]) : NULL};
    for (int i = 1; i < 5; i++) from[i + 1] = value_param(fo->m, bn->inputs[i]);
    double eps = op_float(bn, "eps");
    const Made *made = find_made(fo, from, eps);
    if (made != NULL) {
        snprintf(w_name, size, "%s", made->w_name);
        snprintf(b_name, size, "%s", made->b_name);
        return 0;
    }
    const char *wn = from[0]->name;
    size_t len = strlen(wn);
    bool dot_weight = len > 7 && strcmp(wn + len - 7, ".weight") == 0;
    for (int k = 1;; k++) {
        char suffix[16] = "";
        if (k > 1) snprintf(suffix, sizeof suffix, ".%d", k);
        snprintf(w_name, size, "fold.%s%s", wn, suffix);
        snprintf(b_name, size, "fold.%.*s.bias%s", (int)(dot_weight ? len - 7 : len), wn, suffix);
        if (!module_find_param(fo->m, w_name) && !module_find_param(fo->m, b_name)) break;
    }
    if (remember(fo, from, eps, w_name, b_name) != 0) {
        diag_msg(fo->d, "out of memory");
        return -1;
    }
    const Value *w = conv->inputs[1];
    Shape bias = shape_of(1, w->shape.dims[0]);
    module_add_param(fo->m, w_name, DT_F32, w->shape, PARAM_DERIVED, false, "", conv->loc);
    module_add_param(fo->m, b_name, DT_F32, bias, PARAM_DERIVED, false, "", bn->loc);
    if (fo->fold == NULL) {
        fo->fold = module_add_function(fo->m, "fold");
        if (fo->fold == NULL) {
            diag_msg(fo->d, "the model already has an entry point "
                     "named 'fold' (capc's BatchNorm folding needs the name)");
            return -1;
        }
    }
    return add_fold(fo, conv, bn, w_name, b_name);
}

/* Appends to f the conv2d(x, W', b') that replaces the pair (conv, bn); NULL after an error. */
static Value *fold_pair(Fold *fo, Function *f, const Op *bn) {
    const Op *conv = bn->inputs[0]->def;
    char w_name[600], b_name[600];
    if (derived_state(fo, conv, bn, w_name, b_name, sizeof w_name) != 0) return NULL;
    Value *w = read_param(f, w_name, conv, fo->d), *b = read_param(f, b_name, conv, fo->d);
    if (!w || !b) return NULL;
    Value *ins[3] = {conv->inputs[0], w, b};
    char name[600];
    snprintf(name, sizeof name, "%s.folded", conv->result->name);
    Op *folded = func_add_op(f, OP_CONV2D, ins, 3, name, conv->loc);
    memcpy(folded->attrs, conv->attrs, sizeof(AttrValue) * (size_t)op_info(OP_CONV2D)->n_attrs);
    return infer(folded, fo->d);
}

/* Folds every foldable pair of f. The new ops are appended while the pairs are found and put
 * in place (each run before the conv it replaces) at the end, and the BatchNorms' results are
 * replaced by the folded convs' in one pass over the ops: linear in the function's size. */
static int fold_function(Fold *fo, Function *f) {
    int n = f->n_ops, n_values = f->n_values, n_folded = 0, rc = -1;
    int *uses = count_uses(f), *op_at = malloc(sizeof(int) * ((size_t)n_values + 1));
    int *start = malloc(sizeof(int) * ((size_t)n + 1)), *end = malloc(sizeof(int) * ((size_t)n + 1));
    Value **replaced = calloc((size_t)n_values + 1, sizeof *replaced);
    if (!uses || !op_at || !start || !end || !replaced) {
        diag_msg(fo->d, "out of memory");
        goto out;
    }
    for (int k = 0; k < n; k++) op_at[f->ops[k]->result->id] = k, start[k] = end[k] = -1;
    for (int k = 0; k < n; k++) {
        const Op *bn = f->ops[k];
        if (!foldable(fo, bn, uses, n_values)) continue;
        int first = f->n_ops, at = op_at[bn->inputs[0]->id];
        Value *folded = fold_pair(fo, f, bn);
        if (folded == NULL) goto out;
        start[at] = first, end[at] = f->n_ops; /* a conv feeds one BatchNorm: one range each */
        replaced[bn->result->id] = folded;
        n_folded++;
    }
    if (n_folded > 0) {
        func_place_appended(f, n, start, end);
        for (int i = 0; i < f->n_ops; i++)
            for (int k = 0; k < f->ops[i]->n_inputs; k++) {
                const Value *v = f->ops[i]->inputs[k];
                if (v->id < n_values && replaced[v->id]) f->ops[i]->inputs[k] = replaced[v->id];
            }
        for (int i = 0; i < f->n_outputs; i++)
            if (f->outputs[i]->id < n_values && replaced[f->outputs[i]->id])
                f->outputs[i] = replaced[f->outputs[i]->id];
        func_remove_dead_ops(f);
    }
    rc = 0;
out:
    free(uses), free(op_at), free(start), free(end), free(replaced);
    return rc;
}

int pass_fold_bn(Module *m, const PassOptions *opts, Diag *d) {
    if (!fuse_enabled(opts, FUSE_RULE_CONTRACTION)) return 0; /* conv_bn_relu, folded */
    ConstantState *constant = module_constant_state_new(m);
    if (constant == NULL) {
        diag_msg(d, "out of memory");
        return -1;
    }
    Fold fo = {m, NULL, d, constant, NULL, 0, 0};
    int n_funcs = m->n_funcs, rc = 0; /* `fold` itself is added behind them */
    for (int i = 0; i < n_funcs && rc == 0; i++) rc = fold_function(&fo, m->funcs[i]);
    for (int i = 0; i < fo.n_made; i++) free(fo.made[i].w_name), free(fo.made[i].b_name);
    free(fo.made);
    constant_state_free(constant);
    return rc;
}
