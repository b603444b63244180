/* dot.c — Graphviz view of a module: one cluster per function, one node per value labeled
 * "name = op\ntype" (inputs: "name\ntype"), edges from each operand to the op's result.
 * Node ids are "f<function>_v<value id>", so names with dots never need quoting as ids.
 */
#include "ops.h"

/* Writes s inside a DOT double-quoted string. */
static void dot_escape(FILE *out, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', out);
        fputc(*s, out);
    }
}

static void dot_node(FILE *out, int fi, const Value *v) {
    char type[32 + IR_MAX_RANK * 24];
    type_format(v->dtype, &v->shape, type, sizeof type);
    fprintf(out, "    f%d_v%d [label=\"", fi, v->id);
    dot_escape(out, v->name);
    if (v->def) {
        fputs(" = ", out);
        dot_escape(out, op_info(v->def->kind)->name);
    }
    fputs("\\n", out);
    dot_escape(out, type);
    fprintf(out, "\"%s];\n", v->def ? "" : ", shape=box");
}

/* A fused group's results drawn inside a cluster of their own, labelled with the pattern. */
static void dot_group(FILE *out, int fi, const Function *f, int g) {
    const FusedGroup *grp = &f->groups[g];
    fprintf(out, "    subgraph cluster_%d_g%d {\n      label=\"fused.", fi, g);
    dot_escape(out, grp->pattern);
    fputs("\"; style=filled; color=lightgrey;\n", out);
    for (int i = grp->first_op; i < grp->first_op + grp->n_ops; i++)
        fprintf(out, "      f%d_v%d;\n", fi, f->ops[i]->result->id);
    fputs("    }\n", out);
}

static void dot_function(FILE *out, int fi, const Function *f) {
    fprintf(out, "  subgraph cluster_%d {\n    label=\"@", fi);
    dot_escape(out, f->name);
    fputs("\";\n", out);
    for (int i = 0; i < f->n_values; i++) dot_node(out, fi, f->values[i]);
    for (int g = 0; g < f->n_groups; g++) dot_group(out, fi, f, g);
    for (int i = 0; i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        for (int j = 0; j < op->n_inputs; j++)
            if (op->inputs[j] && op->inputs[j]->fn == f)
                fprintf(out, "    f%d_v%d -> f%d_v%d;\n", fi, op->inputs[j]->id, fi,
                        op->result->id);
    }
    for (int i = 0; i < f->n_outputs; i++) {
        fprintf(out, "    f%d_out%d [label=\"", fi, i);
        dot_escape(out, f->output_names[i]);
        fputs("\", shape=doubleoctagon];\n", out);
        if (f->outputs[i] && f->outputs[i]->fn == f)
            fprintf(out, "    f%d_v%d -> f%d_out%d;\n", fi, f->outputs[i]->id, fi, i);
    }
    fputs("  }\n", out);
}

void ir_print_dot(FILE *out, const Module *m) {
    fputs("digraph \"", out);
    dot_escape(out, m->name);
    fputs("\" {\n  node [shape=ellipse, fontname=\"monospace\"];\n", out);
    for (int i = 0; i < m->n_funcs; i++) dot_function(out, i, m->funcs[i]);
    fputs("}\n", out);
}
