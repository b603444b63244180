/* feature_cache.c — cuts train_step after its frozen, deterministic prefix, so that a training
 * run can compute that prefix once per image and reuse it in later epochs (docs/training.md,
 * "Feature cache").
 *
 * Needs: the training program (train_step), shapes known. Runs before BatchNorm folding and
 * fusion, which then treat the new entry points like any other.
 * Does: finds the prefix of train_step: the ops that depend on its `image` input and
 * otherwise only on constant state (ir.h: params nothing trains or updates, and what is
 * computed from them alone), through ops that compute each image's values from that image
 * alone (per_image below: convolutions, pools, eval-mode BatchNorm, elementwise ops whose
 * other operands are the same for every image). No dropout (it reads rng), no training-mode
 * BatchNorm (its statistics mix the batch), nothing trainable. The cut is the prefix values
 * that the rest of train_step reads or returns. When the prefix holds a convolution (anything
 * less is not worth a cache) and every cut value has the batch as its first axis, it adds
 *     features(image) -> one output per cut value, named as in train_step
 *     train_step_cached(<one input per cut value>, <train_step's other inputs>)
 *         -> train_step's outputs: train_step with the prefix replaced by its inputs
 * Keeps true: every existing function is unchanged; for any batch, train_step_cached(the
 * features of its images, the rest) runs the same ops on the same values as train_step, so
 * a run from cached features computes what a run without them does, bit for bit.
 */
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "ops.h"
#include "passes.h"

enum { OTHER = 0, PREFIX = 1, CONSTANT = 2 };

typedef struct Cut {
    Module *m;
    Function *ts;
    const Value *image;
    int64_t batch;
    unsigned char *cls; /* per value id of train_step: OTHER, PREFIX or CONSTANT */
    Value **map;        /* per value id: its copy in the function being built */
    const Value **cut;  /* the cut values, in train_step's order */
    int n_cut;
    Diag *d;
} Cut;

/* An operand that is the same for every image: constant, and not laid out per batch row. */
static bool shared_operand(const Cut *c, const Value *v, const Shape *result) {
    return c->cls[v->id] == CONSTANT &&
           (v->shape.rank < result->rank || v->shape.dims[0] == 1);
}

/* op computes each image's values from that image's values alone. */
static bool per_image(const Cut *c, const Op *op) {
    const Shape *r = &op->result->shape;
    if (r->rank < 1 || r->dims[0] != c->batch) return false;
    int n = 0;
    switch (op->kind) {
    case OP_CONV2D:
    case OP_MAX_POOL2D:
    case OP_ADAPTIVE_AVG_POOL2D:
    case OP_RESHAPE: break;
    case OP_BATCH_NORM:
        if (op_bool(op, "training")) return false;
        break;
    case OP_TRANSPOSE:
        if (op_ints(op, "perm", &n)[0] != 0) return false;
        break;
    default:
        if (op_fusion(op) != FUSE_ELEMENTWISE && op_fusion(op) != FUSE_BROADCAST) return false;
    }
    for (int i = 0; i < op->n_inputs; i++) {
        const Value *v = op->inputs[i];
        if (c->cls[v->id] == PREFIX) {
            if (v->shape.rank < 1 || v->shape.dims[0] != c->batch) return false;
        } else if (op->kind != OP_CONV2D && op->kind != OP_BATCH_NORM) {
            if (!shared_operand(c, v, r)) return false; /* elementwise: broadcast over images */
        } else if (c->cls[v->id] != CONSTANT) {
            return false; /* weights, statistics */
        }
    }
    return true;
}

/* Sorts every value of train_step into OTHER, PREFIX and CONSTANT. Returns whether the prefix
 * holds a convolution. */
static bool classify(Cut *c, const ConstantState *cs) {
    bool conv = false;
    c->cls[c->image->id] = PREFIX;
    for (int i = 0; i < c->ts->n_ops; i++) {
        const Op *op = c->ts->ops[i];
        int cls = CONSTANT;
        if (op->kind == OP_PARAM) {
            cls = constant_state_has(cs, value_param(c->m, op->result)) ? CONSTANT : OTHER;
        } else {
            bool any_prefix = false;
            for (int k = 0; k < op->n_inputs; k++) {
                int in = c->cls[op->inputs[k]->id];
                if (in == OTHER) cls = OTHER;
                any_prefix |= in == PREFIX;
            }
            if (cls != OTHER && any_prefix) cls = per_image(c, op) ? PREFIX : OTHER;
        }
        c->cls[op->result->id] = (unsigned char)cls;
        conv |= cls == PREFIX && op->kind == OP_CONV2D;
    }
    return conv;
}

/* The prefix values read by other ops or returned, in order. Returns 1, 0 when one is not per
 * batch (no cache), -1 when out of memory. */
static int find_cut(Cut *c) {
    const Function *f = c->ts;
    bool *cut = calloc((size_t)f->n_values + 1, sizeof *cut);
    if (cut == NULL) return -1;
    for (int i = 0; i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        if (c->cls[op->result->id] == PREFIX) continue;
        for (int k = 0; k < op->n_inputs; k++)
            cut[op->inputs[k]->id] |= c->cls[op->inputs[k]->id] == PREFIX;
    }
    for (int i = 0; i < f->n_outputs; i++) cut[f->outputs[i]->id] |= c->cls[f->outputs[i]->id] == PREFIX;
    bool ok = true;
    for (int v = 0; v < f->n_values; v++) {
        if (!cut[v]) continue;
        const Value *x = f->values[v];
        ok &= x->shape.rank >= 1 && x->shape.dims[0] == c->batch;
        c->cut[c->n_cut++] = x;
    }
    free(cut);
    return ok ? 1 : 0;
}

/* Appends to dst a copy of op reading the mapped inputs; NULL after a shape-rule error. */
static Value *copy_op(Cut *c, Function *dst, const Op *op) {
    Value *ins[16];
    IR_ASSERT(op->n_inputs <= 16);
    for (int k = 0; k < op->n_inputs; k++) {
        ins[k] = c->map[op->inputs[k]->id];
        IR_ASSERT(ins[k] != NULL);
    }
    Op *copy = func_add_op(dst, op->kind, ins, op->n_inputs, op->result->name, op->loc);
    memcpy(copy->attrs, op->attrs, sizeof(AttrValue) * (size_t)op_info(op->kind)->n_attrs);
    char err[256];
    if (op_infer(copy, err, sizeof err) != 0) {
        diag_msg(c->d, "internal error: copying %%%s: %s", op->result->name, err);
        return NULL;
    }
    return copy->result;
}

static Function *new_entry(Cut *c, const char *name) {
    Function *f = module_add_function(c->m, name);
    if (f == NULL)
        diag_msg(c->d, "the model already has an entry point named '%s' "
                 "(capc's feature cache needs the name)", name);
    memset(c->map, 0, sizeof *c->map * ((size_t)c->ts->n_values + 1));
    return f;
}

/* features(image): the prefix ops, with the constant ones they read, returning the cut. */
static int build_features(Cut *c) {
    Function *f = new_entry(c, "features");
    if (f == NULL) return -1;
    c->map[c->image->id] = func_add_input(f, c->image->name, c->image->dtype, c->image->shape);
    for (int i = 0; i < c->ts->n_ops; i++) {
        const Op *op = c->ts->ops[i];
        if (c->cls[op->result->id] == OTHER) continue;
        if ((c->map[op->result->id] = copy_op(c, f, op)) == NULL) return -1;
    }
    for (int i = 0; i < c->n_cut; i++) func_add_output(f, c->cut[i]->name, c->map[c->cut[i]->id]);
    func_remove_dead_ops(f); /* the constants only the rest of train_step reads */
    return 0;
}

/* train_step_cached: train_step's inputs with the image replaced by the cut, its other ops. */
static int build_cached_step(Cut *c) {
    Function *f = new_entry(c, "train_step_cached");
    if (f == NULL) return -1;
    for (int i = 0; i < c->ts->n_inputs; i++) {
        const Value *in = c->ts->inputs[i];
        if (in != c->image) {
            c->map[in->id] = func_add_input(f, in->name, in->dtype, in->shape);
            continue;
        }
        for (int k = 0; k < c->n_cut; k++)
            c->map[c->cut[k]->id] = func_add_input(f, c->cut[k]->name, c->cut[k]->dtype, c->cut[k]->shape);
    }
    for (int i = 0; i < c->ts->n_ops; i++) {
        const Op *op = c->ts->ops[i];
        if (c->cls[op->result->id] == PREFIX) continue;
        if ((c->map[op->result->id] = copy_op(c, f, op)) == NULL) return -1;
    }
    for (int i = 0; i < c->ts->n_outputs; i++)
        func_add_output(f, c->ts->output_names[i], c->map[c->ts->outputs[i]->id]);
    func_remove_dead_ops(f); /* the constants only the prefix read */
    return 0;
}

int pass_feature_cache(Module *m, const PassOptions *opts, Diag *d) {
    (void)opts;
    Function *ts = module_find_function(m, "train_step");
    const Value *image = ts ? func_find_value(ts, "image") : NULL;
    if (image == NULL || image->def != NULL || image->shape.rank < 1) return 0;
    Cut c = {m, ts, image, image->shape.dims[0], NULL, NULL, NULL, 0, d};
    size_t nv = (size_t)ts->n_values + 1;
    ConstantState *cs = module_constant_state_new(m);
    c.cls = calloc(nv, 1);
    c.map = calloc(nv, sizeof *c.map);
    c.cut = malloc(nv * sizeof *c.cut);
    int rc = 0;
    if (cs == NULL || c.cls == NULL || c.map == NULL || c.cut == NULL) {
        diag_msg(d, "out of memory");
        rc = -1;
    } else if (classify(&c, cs)) {
        int cut = find_cut(&c);
        if (cut < 0) {
            diag_msg(d, "out of memory");
            rc = -1;
        } else if (cut > 0 && c.n_cut > 0) {
            rc = build_features(&c);
            if (rc == 0) rc = build_cached_step(&c);
        }
    }
    constant_state_free(cs);
    free(c.cls);
    free(c.map);
    free(c.cut);
    return rc;
}
