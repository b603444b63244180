/* interp.c — the float64 reference interpreter: tensors of doubles, a name -> tensor store,
 * and ref_run, which walks a function's ops in program order and evaluates each with the op
 * table's reference evaluator (ref_ops.c). Deliberately simple: it is the oracle that every
 * generated kernel is compared against, so clarity beats speed everywhere here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interp.h"
#include "ops.h"

/* ---- tensors ---------------------------------------------------------------------------- */

int ref_tensor_init(RefTensor *t, DType dtype, Shape shape) {
    t->dtype = dtype;
    t->shape = shape;
    t->data = NULL;
    int64_t n = shape_numel(&shape);
    if (n < 0) return -1;
    /* calloc(0) may return NULL; always allocate at least one element so a valid tensor
     * always has data. */
    t->data = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    return t->data ? 0 : -1;
}

void ref_tensor_free(RefTensor *t) {
    if (!t) return;
    free(t->data);
    t->data = NULL;
}

int64_t ref_tensor_numel(const RefTensor *t) { return shape_numel(&t->shape); }

/* ---- store ------------------------------------------------------------------------------ */

void ref_store_init(RefStore *s) { memset(s, 0, sizeof *s); }

void ref_store_free(RefStore *s) {
    for (int i = 0; i < s->n; i++) {
        free(s->names[i]);
        ref_tensor_free(&s->tensors[i]);
    }
    free(s->names);
    free(s->tensors);
    memset(s, 0, sizeof *s);
}

static int store_index(const RefStore *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0) return i;
    return -1;
}

static int store_grow(RefStore *s) {
    if (s->n < s->cap) return 0;
    int cap = s->cap ? 2 * s->cap : 8;
    char **names = realloc(s->names, (size_t)cap * sizeof *names);
    if (!names) return -1;
    s->names = names;
    RefTensor *tensors = realloc(s->tensors, (size_t)cap * sizeof *tensors);
    if (!tensors) return -1;
    s->tensors = tensors;
    s->cap = cap;
    return 0;
}

int ref_store_put(RefStore *s, const char *name, RefTensor *t) {
    int i = store_index(s, name);
    if (i >= 0) {
        ref_tensor_free(&s->tensors[i]);
    } else {
        if (store_grow(s) != 0) return -1;
        char *copy = strdup(name);
        if (!copy) return -1;
        i = s->n++;
        s->names[i] = copy;
    }
    s->tensors[i] = *t;
    t->data = NULL; /* ownership moved into the store */
    return 0;
}

const RefTensor *ref_store_get(const RefStore *s, const char *name) {
    int i = store_index(s, name);
    return i >= 0 ? &s->tensors[i] : NULL;
}

RefTensor *ref_store_get_mut(RefStore *s, const char *name) {
    int i = store_index(s, name);
    return i >= 0 ? &s->tensors[i] : NULL;
}

const RefTensor *ref_store_lookup(void *ctx, const char *name) {
    return ref_store_get((const RefStore *)ctx, name);
}

/* ---- running a function ----------------------------------------------------------------- */

static int tensor_copy(RefTensor *dst, const RefTensor *src) {
    if (ref_tensor_init(dst, src->dtype, src->shape) != 0) return -1;
    int64_t n = ref_tensor_numel(src);
    if (n > 0) memcpy(dst->data, src->data, (size_t)n * sizeof(double));
    return 0;
}

/* Checks that a tensor handed to the interpreter has the type the IR says it has. */
static int check_type(const RefTensor *t, const Value *v, const char *what, char *err,
                      size_t err_size) {
    if (t->dtype == v->dtype && shape_equal(&t->shape, &v->shape) && t->data) return 0;
    char want[96], got[96];
    type_format(v->dtype, &v->shape, want, sizeof want);
    type_format(t->dtype, &t->shape, got, sizeof got);
    snprintf(err, err_size, "%s %%%s: expected %s, got %s%s", what, v->name, want, got,
             t->data ? "" : " with no data");
    return -1;
}

/* Evaluates one op into vals[op->result->id]. */
static int eval_op(const Op *op, RefTensor *vals, bool *have, RefParamLookup lookup, void *ctx,
                   char *err, size_t err_size) {
    const OpInfo *info = op_info(op->kind);
    const Value *res = op->result;
    if (!shape_known(&res->shape)) {
        snprintf(err, err_size, "%s %%%s: result shape not inferred", info->name, res->name);
        return -1;
    }
    if (op->kind == OP_PARAM) {
        /* Parameters come from the caller, not from an evaluator; except a hyperparameter,
         * whose value is part of the module (its init string): the caller's generic
         * "every param gets random values" fillers must not change a learning rate. */
        const char *pname = op_string(op, "name");
        const Param *par = op->fn && op->fn->module ? module_find_param(op->fn->module, pname) : NULL;
        double hv;
        if (par && par->kind == PARAM_HPARAM) {
            if (!param_hparam_value(par, &hv) || par->dtype != res->dtype || res->shape.rank != 0) {
                snprintf(err, err_size, "param %%%s: hparam \"%s\" has no value (init \"%s\")",
                         res->name, pname, par->init ? par->init : "");
                return -1;
            }
            if (ref_tensor_init(&vals[res->id], res->dtype, res->shape) != 0) return -1;
            vals[res->id].data[0] = hv;
            return 0;
        }
        const RefTensor *p = lookup ? lookup(ctx, pname) : NULL;
        if (!p) {
            snprintf(err, err_size, "param %%%s: no value given for parameter \"%s\"", res->name,
                     pname);
            return -1;
        }
        if (check_type(p, res, "param", err, err_size) != 0) return -1;
        return tensor_copy(&vals[res->id], p) == 0 ? 0 : -1;
    }
    enum { MAX_REF_INPUTS = 64 };
    const RefTensor *stack_ins[MAX_REF_INPUTS];
    const RefTensor **ins = stack_ins;
    if (op->n_inputs > MAX_REF_INPUTS) {
        ins = malloc((size_t)op->n_inputs * sizeof *ins);
        if (!ins) return -1;
    }
    int rc = 0;
    for (int i = 0; i < op->n_inputs; i++) {
        const Value *in = op->inputs[i];
        if (!have[in->id]) {
            snprintf(err, err_size, "%s %%%s: operand %%%s has no value (used before defined?)",
                     info->name, res->name, in->name);
            rc = -1;
            break;
        }
        ins[i] = &vals[in->id];
    }
    if (rc == 0 && ref_tensor_init(&vals[res->id], res->dtype, res->shape) != 0) {
        snprintf(err, err_size, "%s %%%s: out of memory", info->name, res->name);
        rc = -1;
    }
    if (rc == 0) {
        char msg[768] = "";
        rc = info->ref_eval(op, ins, &vals[res->id], msg, sizeof msg);
        if (rc != 0) {
            snprintf(err, err_size, "%%%s: %s", res->name, msg);
            ref_tensor_free(&vals[res->id]);
        }
    }
    if (ins != stack_ins) free(ins);
    return rc;
}

/* Marks the values still needed after op i: outputs always, others while a later op uses
 * them. Computed once as "last use" so intermediates are freed as soon as possible. */
static int *last_uses(const Function *f) {
    int *last = malloc((size_t)(f->n_values > 0 ? f->n_values : 1) * sizeof *last);
    if (!last) return NULL;
    for (int v = 0; v < f->n_values; v++) last[v] = -1;
    for (int i = 0; i < f->n_ops; i++)
        for (int j = 0; j < f->ops[i]->n_inputs; j++) last[f->ops[i]->inputs[j]->id] = i;
    for (int o = 0; o < f->n_outputs; o++) last[f->outputs[o]->id] = f->n_ops; /* keep */
    return last;
}

static void free_all(RefTensor *vals, int n) {
    for (int i = 0; i < n; i++) ref_tensor_free(&vals[i]);
    free(vals);
}

int ref_run(const Function *f, const RefTensor *inputs, RefParamLookup lookup, void *ctx,
            RefTensor *outputs, RefTensor **all_values, char *err, size_t err_size) {
    if (all_values) *all_values = NULL;
    RefTensor *vals = calloc((size_t)(f->n_values > 0 ? f->n_values : 1), sizeof *vals);
    bool *have = calloc((size_t)(f->n_values > 0 ? f->n_values : 1), sizeof *have);
    int *last = last_uses(f);
    int rc = (vals && have && last) ? 0 : -1;
    if (rc != 0) snprintf(err, err_size, "%s: out of memory", f->name);
    for (int i = 0; rc == 0 && i < f->n_inputs; i++) {
        const Value *v = f->inputs[i];
        rc = check_type(&inputs[i], v, "input", err, err_size);
        if (rc == 0) rc = tensor_copy(&vals[v->id], &inputs[i]);
        if (rc == 0) have[v->id] = true;
    }
    for (int i = 0; rc == 0 && i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        rc = eval_op(op, vals, have, lookup, ctx, err, err_size);
        if (rc != 0) break;
        have[op->result->id] = true;
        if (all_values) continue;
        /* Free operands whose last use was this op (and results nobody uses). */
        for (int j = 0; j < op->n_inputs; j++) {
            int id = op->inputs[j]->id;
            if (last[id] == i) {
                ref_tensor_free(&vals[id]);
                have[id] = false;
            }
        }
        if (last[op->result->id] < i) {
            ref_tensor_free(&vals[op->result->id]);
            have[op->result->id] = false;
        }
    }
    for (int o = 0; rc == 0 && o < f->n_outputs; o++) {
        rc = tensor_copy(&outputs[o], &vals[f->outputs[o]->id]);
        if (rc != 0) {
            snprintf(err, err_size, "%s: out of memory", f->name);
            for (int k = 0; k < o; k++) ref_tensor_free(&outputs[k]);
        }
    }
    if (rc == 0 && all_values) {
        *all_values = vals;
        vals = NULL;
    }
    if (vals) free_all(vals, f->n_values);
    free(have);
    free(last);
    return rc;
}
