/* print.c — the IR text form (docs/ir.md): header, module line, config, the train section,
 * params, buffers and optimizer state, functions. Everything is printed in a fixed order with every attribute spelled out, so two
 * dumps diff line by line and parse.c reads the text back to the same module.
 */
#include <stdlib.h>

#include "cfunc.h"
#include "ops.h"

/* Attribute text of any size: short values use the stack, long lists and strings the heap. */
static void print_attr(FILE *out, const AttrValue *v) {
    char small[256];
    int n = attr_format(v, small, sizeof small);
    if (n < (int)sizeof small) {
        fputs(small, out);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) ir_bug("out of memory printing an attribute");
    attr_format(v, big, (size_t)n + 1);
    fputs(big, out);
    free(big);
}

static void print_string(FILE *out, const char *s) {
    AttrValue v = {.kind = ATTR_STRING, .s = s};
    print_attr(out, &v);
}

static void print_type(FILE *out, DType dtype, const Shape *s) {
    char buf[32 + IR_MAX_RANK * 24];
    fputs(type_format(dtype, s, buf, sizeof buf), out);
}

static void print_config(FILE *out, const ConfigVar *c) {
    fprintf(out, "config %s = ", c->name);
    if (c->is_int) {
        fprintf(out, "%lld\n", (long long)c->value);
        return;
    }
    AttrValue v = {.kind = ATTR_FLOAT, .f = c->value};
    print_attr(out, &v);
    fputc('\n', out);
}

static void print_float_field(FILE *out, const char *key, double value) {
    AttrValue v = {.kind = ATTR_FLOAT, .f = value};
    fprintf(out, " %s=", key);
    print_attr(out, &v);
}

/* `train k=v ...` then one `train_group ...` per group (docs/ir.md). */
static void print_train(FILE *out, const TrainSpec *t) {
    fputs("train loss=", out);
    print_string(out, t->loss);
    fputs(" optimizer=", out);
    print_string(out, optimizer_name(t->optimizer));
    print_float_field(out, "lr", t->lr);
    print_float_field(out, "beta1", t->beta1);
    print_float_field(out, "beta2", t->beta2);
    print_float_field(out, "eps", t->eps);
    print_float_field(out, "weight_decay", t->weight_decay);
    print_float_field(out, "clip_grad_norm", t->clip_grad_norm);
    fputs(" schedule=", out);
    print_string(out, lr_schedule_name(t->schedule));
    fprintf(out, " warmup=%lld total=%lld", (long long)t->warmup, (long long)t->total);
    print_float_field(out, "min_lr", t->min_lr);
    fprintf(out, " step_size=%lld", (long long)t->step_size);
    print_float_field(out, "gamma", t->gamma);
    fputc('\n', out);
    for (int i = 0; i < t->n_groups; i++) {
        fputs("train_group prefix=", out);
        print_string(out, t->groups[i].prefix);
        print_float_field(out, "lr", t->groups[i].lr);
        print_float_field(out, "weight_decay", t->groups[i].weight_decay);
        fputc('\n', out);
    }
}

static const char *param_keyword(ParamKind kind) {
    return kind == PARAM_BUFFER ? "buffer" : kind == PARAM_STATE ? "state"
         : kind == PARAM_DERIVED ? "derived" : kind == PARAM_HPARAM ? "hparam" : "param";
}

static void print_param(FILE *out, const Param *p) {
    fprintf(out, "%s @%s : ", param_keyword(p->kind), p->name);
    print_type(out, p->dtype, &p->shape);
    fputs(" init=", out);
    print_string(out, p->init ? p->init : "");
    if (p->kind == PARAM_WEIGHT && !p->trainable) fputs(" frozen", out);
    fputc('\n', out);
}

/* `cfunc @NAME(%a, ...) at "FILE":LINE:COL grads=[@G, -] {` then one node per line:
 * `%N = const VALUE`, `%N = arg(%PARAM)`, `%N = KIND(%I, ...)`, and `return %LAST`. */
static void print_cfunc(FILE *out, const CFunc *f) {
    fprintf(out, "cfunc @%s(", f->name);
    for (int i = 0; i < f->n_params; i++) fprintf(out, "%s%%%s", i ? ", " : "", f->params[i]);
    fputc(')', out);
    if (f->loc.file) {
        fputs(" at ", out);
        print_string(out, f->loc.file);
        fprintf(out, ":%d:%d", f->loc.line, f->loc.col);
    }
    bool any = false;
    for (int i = 0; i < f->n_params; i++) any |= f->grads[i] != NULL;
    if (any) {
        fputs(" grads=[", out);
        for (int i = 0; i < f->n_params; i++)
            fprintf(out, "%s%s%s", i ? ", " : "", f->grads[i] ? "@" : "-",
                    f->grads[i] ? f->grads[i] : "");
        fputc(']', out);
    }
    fputs(" {\n", out);
    for (int i = 0; i < f->n_nodes; i++) {
        const CfNode *n = &f->nodes[i];
        fprintf(out, "  %%%d = %s", i, cf_kind_name(n->kind));
        if (n->kind == CF_CONST) {
            AttrValue v = {.kind = ATTR_FLOAT, .f = n->value};
            fputc(' ', out);
            print_attr(out, &v);
        } else if (n->kind == CF_ARG) {
            fprintf(out, "(%%%s)", f->params[n->a]);
        } else {
            const int ops[3] = {n->a, n->b, n->c};
            fputc('(', out);
            for (int k = 0; k < cf_arity(n->kind); k++) fprintf(out, "%s%%%d", k ? ", " : "", ops[k]);
            fputc(')', out);
        }
        fputc('\n', out);
    }
    fprintf(out, "  return %%%d\n}\n", f->n_nodes - 1);
}

static void print_op(FILE *out, const Op *op) {
    const OpInfo *info = op_info(op->kind);
    fprintf(out, "%s%%%s = %s(", op->group >= 0 ? "    " : "  ", op->result->name, info->name);
    for (int i = 0; i < op->n_inputs; i++)
        fprintf(out, "%s%%%s", i ? ", " : "", op->inputs[i] ? op->inputs[i]->name : "<null>");
    fputc(')', out);
    if (info->n_attrs > 0) {
        fputs(" {", out);
        for (int i = 0; i < info->n_attrs; i++) {
            fprintf(out, "%s%s=", i ? ", " : "", info->attrs[i].name);
            print_attr(out, &op->attrs[i]);
        }
        fputc('}', out);
    }
    fputs(" : ", out);
    print_type(out, op->result->dtype, &op->result->shape);
    fputc('\n', out);
}

static void print_function(FILE *out, const Function *f) {
    fprintf(out, "func @%s(", f->name);
    for (int i = 0; i < f->n_inputs; i++) {
        const Value *v = f->inputs[i];
        fprintf(out, "%s%%%s : ", i ? ", " : "", v->name);
        print_type(out, v->dtype, &v->shape);
    }
    fputs(") {\n", out);
    /* A fused group's ops are contiguous: its block opens at its first op. */
    for (int i = 0; i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        if (op->group >= 0 && f->groups[op->group].first_op == i)
            fprintf(out, "  fused.%s {\n", f->groups[op->group].pattern);
        print_op(out, op);
        if (op->group >= 0 && (i + 1 == f->n_ops || f->ops[i + 1]->group != op->group))
            fputs("  }\n", out);
    }
    fputs("  return", out);
    for (int i = 0; i < f->n_outputs; i++)
        fprintf(out, "%s%s=%%%s", i ? ", " : " ", f->output_names[i],
                f->outputs[i] ? f->outputs[i]->name : "<null>");
    fputs("\n}\n", out);
}

void ir_print_module(FILE *out, const Module *m) {
    fputs("# capc IR\nmodule ", out);
    print_string(out, m->name);
    fputc('\n', out);
    if (m->n_config > 0) fputc('\n', out);
    for (int i = 0; i < m->n_config; i++) print_config(out, &m->config[i]);
    if (m->train) {
        if (m->n_config == 0) fputc('\n', out);
        print_train(out, m->train);
    }
    if (m->n_params > 0) fputc('\n', out);
    for (int i = 0; i < m->n_params; i++) print_param(out, m->params[i]);
    for (int i = 0; i < m->n_cfuncs; i++) {
        fputc('\n', out);
        print_cfunc(out, m->cfuncs[i]);
    }
    for (int i = 0; i < m->n_funcs; i++) {
        fputc('\n', out);
        print_function(out, m->funcs[i]);
    }
}

char *ir_module_to_string(const Module *m) {
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out) return NULL;
    ir_print_module(out, m);
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
