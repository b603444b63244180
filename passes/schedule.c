/* schedule.c — what runs as one kernel, in what order, reading and writing which values.
 *
 * Needs: a verified function (groups, if any, as the fusion pass leaves them).
 * Changes nothing in the IR. Memory planning and code generation both read the schedule, so
 * they agree on which values reach memory:
 *
 *   a step is a fused group, or one op outside any group that needs a kernel (every op but
 *   `param`, which reads state in place, and a view, which shares its operand's bytes);
 *   its writes are the values it defines that something after it reads (an op of another
 *   step, a view outside it, or the function's return); a view the step defines stands for
 *   its root, the value it shares bytes with, which is written instead (or nothing, when the
 *   root lies outside the step);
 *   its reads are the values its ops use that it does not define.
 *
 * Everything else a group defines lives and dies inside its kernel. A read is "aligned" when
 * each work item reads it only at its own flat index, before it stores anything: every op of
 * the step that uses it is elementwise with a result of its size, and the step reads it once
 * per work item (no contraction, which writes before its epilogue reads; in a step around
 * reductions, only a read of one value per row, since element values are recomputed in every
 * pass along the row). A write of the same size may then take over its bytes, when this step
 * is its last reader (memplan.c decides).
 */
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "ops.h"
#include "passes.h"

static int oom(Diag *d, const Function *f) {
    diag_set(d, SRCLOC_NONE, "schedule of @%s: out of memory", f->name);
    return -1;
}

void schedule_free(Schedule *s) {
    for (int i = 0; i < s->n_steps; i++) {
        free(s->steps[i].writes);
        free(s->steps[i].reads);
        free(s->steps[i].read_aligned);
    }
    free(s->steps);
    free(s->step_of_op);
    free(s->returned);
    if (s->scratch_free) s->scratch_free(s->scratch);
    memset(s, 0, sizeof *s);
}

/* Per value id, which step last listed it among its reads (and at which position) or its
 * writes: deduplicating through these keeps a step's cost its own size, where a scan of the
 * list so far made the program-wide multi-tensor step (thousands of reads) quadratic. */
typedef struct IoMarks {
    int *read_step, *read_pos, *write_step;
} IoMarks;

/* Appends v to the step's reads unless it is there already. */
static void add_read(Step *st, int step, IoMarks *mk, const Value *v) {
    if (mk->read_step[v->id] == step) return;
    mk->read_step[v->id] = step;
    mk->read_pos[v->id] = st->n_reads;
    st->reads[st->n_reads++] = v;
}

static void add_write(Step *st, int step, IoMarks *mk, const Value *v) {
    if (mk->write_step[v->id] == step) return;
    mk->write_step[v->id] = step;
    st->writes[st->n_writes++] = v;
}

/* Reads of what size can be aligned in st: all (-1), none (0), or only those of one value
 * per row of its reductions (the row count). */
static int64_t alignable_size(const Function *f, const Step *st) {
    int64_t rows = -1;
    for (int i = st->first_op; i < st->first_op + st->n_ops; i++) {
        const Op *op = f->ops[i];
        bool reduced[IR_MAX_RANK];
        if (op_fusion(op) == FUSE_CONTRACTION) return 0;
        if (!op_reduced_axes(op, reduced)) continue;
        int64_t n = 1, len = 1;
        for (int d = 0; d < op->inputs[0]->shape.rank; d++)
            *(reduced[d] ? &len : &n) *= op->inputs[0]->shape.dims[d];
        if (len <= 1 || (rows >= 0 && rows != n)) return 0;
        rows = n;
    }
    return rows;
}

/* The value that holds v's bytes: v itself, or the root of a view chain defined in step s. */
static const Value *stored_root(const Schedule *s, const int *def_op, const Value *v, int step) {
    while (v->def != NULL && op_is_view(v->def) && s->step_of_op[def_op[v->id]] == step)
        v = v->def->inputs[0];
    return v;
}

/* The read of st whose bytes v (a read, or a view in st of one) stands for; -1 if none. */
static int read_index(const Schedule *s, const int *def_op, const IoMarks *mk, int step,
                      const Value *v) {
    for (;;) {
        if (mk->read_step[v->id] == step) return mk->read_pos[v->id];
        if (v->def == NULL || !op_is_view(v->def) || s->step_of_op[def_op[v->id]] != step)
            return -1;
        v = v->def->inputs[0];
    }
}

/* read_aligned (see the top comment): cleared for a read that some op of the step uses in
 * any other way. */
static void mark_read_alignment(const Schedule *s, const int *def_op, const IoMarks *mk,
                                Step *st, int step) {
    const Function *f = s->f;
    int64_t size = alignable_size(f, st);
    for (int k = 0; k < st->n_reads; k++)
        st->read_aligned[k] = size < 0 || (size > 0 && shape_numel(&st->reads[k]->shape) == size);
    for (int i = st->first_op; i < st->first_op + st->n_ops; i++) {
        const Op *op = f->ops[i];
        if (op_is_view(op)) continue;
        int64_t n = shape_numel(&op->result->shape);
        bool elementwise = op_fusion(op) == FUSE_ELEMENTWISE;
        for (int j = 0; j < op->n_inputs; j++) {
            int k = read_index(s, def_op, mk, step, op->inputs[j]);
            if (k >= 0 && (!elementwise || shape_numel(&op->inputs[j]->shape) != n))
                st->read_aligned[k] = false;
        }
    }
}

/* Fills st's reads and writes. read_outside[v]: something outside v's step reads it. */
static int fill_io(Schedule *s, int step, const int *def_op, const bool *read_outside,
                   IoMarks *mk) {
    const Function *f = s->f;
    Step *st = &s->steps[step];
    int n_in = 0, n_def = st->n_ops;
    for (int i = st->first_op; i < st->first_op + st->n_ops; i++) n_in += f->ops[i]->n_inputs;
    ir_work_add((int64_t)n_in + n_def);
    st->reads = malloc(sizeof *st->reads * (size_t)(n_in + 1));
    st->writes = malloc(sizeof *st->writes * (size_t)(n_def + 1));
    if (st->reads == NULL || st->writes == NULL) return -1;
    for (int i = st->first_op; i < st->first_op + st->n_ops; i++) {
        const Op *op = f->ops[i];
        for (int k = 0; k < op->n_inputs; k++) {
            const Value *u = op->inputs[k];
            if (u->def == NULL || s->step_of_op[def_op[u->id]] != step)
                add_read(st, step, mk, u);
        }
        if (!read_outside[op->result->id]) continue;
        const Value *root = stored_root(s, def_op, op->result, step);
        if (root->def != NULL && s->step_of_op[def_op[root->id]] == step)
            add_write(st, step, mk, root);
    }
    st->read_aligned = malloc(sizeof *st->read_aligned * (size_t)(st->n_reads + 1));
    if (st->read_aligned == NULL) return -1;
    mark_read_alignment(s, def_op, mk, st, step);
    return 0;
}

/* Steps in op order: a group is one step, a lone op that needs a kernel another. */
static int make_steps(Schedule *s) {
    const Function *f = s->f;
    s->steps = calloc((size_t)f->n_ops + 1, sizeof *s->steps);
    if (s->steps == NULL) return -1;
    for (int i = 0; i < f->n_ops;) {
        const Op *op = f->ops[i];
        if (op->group >= 0) {
            const FusedGroup *g = &f->groups[op->group];
            s->steps[s->n_steps] = (Step){.first_op = i, .n_ops = g->n_ops, .group = op->group};
            for (int k = i; k < i + g->n_ops; k++) s->step_of_op[k] = s->n_steps;
            s->n_steps++;
            i += g->n_ops;
            continue;
        }
        if (op->kind != OP_PARAM && !op_is_view(op)) {
            s->steps[s->n_steps] = (Step){.first_op = i, .n_ops = 1, .group = -1};
            s->step_of_op[i] = s->n_steps++;
        }
        i++;
    }
    return 0;
}

int schedule_build(const Function *f, Schedule *s, Diag *d) {
    memset(s, 0, sizeof *s);
    s->f = f;
    size_t nv = (size_t)f->n_values + 1;
    s->step_of_op = malloc(sizeof *s->step_of_op * ((size_t)f->n_ops + 1));
    int *def_op = malloc(sizeof *def_op * nv);
    bool *read_outside = calloc(nv, sizeof *read_outside);
    s->returned = calloc(nv, sizeof *s->returned);
    IoMarks mk = {malloc(sizeof(int) * nv), malloc(sizeof(int) * nv), malloc(sizeof(int) * nv)};
    int rc = -1;
    if (s->step_of_op == NULL || def_op == NULL || read_outside == NULL || s->returned == NULL ||
        mk.read_step == NULL || mk.read_pos == NULL || mk.write_step == NULL)
        goto done;
    for (int v = 0; v < f->n_values; v++) mk.read_step[v] = mk.write_step[v] = -1;
    ir_work_add((int64_t)nv);
    for (int i = 0; i < f->n_ops; i++) s->step_of_op[i] = -1;
    if (make_steps(s) != 0) goto done;
    for (int i = 0; i < f->n_ops; i++) def_op[f->ops[i]->result->id] = i;
    for (int i = 0; i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        for (int k = 0; k < op->n_inputs; k++) {
            const Value *u = op->inputs[k];
            /* A reader in another step, or a lone view (no step: -1), whose bytes are its
             * operand's. */
            if (u->def != NULL && (s->step_of_op[i] < 0 || s->step_of_op[def_op[u->id]] !=
                                                               s->step_of_op[i]))
                read_outside[u->id] = true;
        }
    }
    for (int i = 0; i < f->n_outputs; i++)
        read_outside[f->outputs[i]->id] = s->returned[f->outputs[i]->id] = true;
    rc = 0;
    for (int st = 0; st < s->n_steps && rc == 0; st++) rc = fill_io(s, st, def_op, read_outside, &mk);
done:
    free(def_op);
    free(read_outside);
    free(mk.read_step), free(mk.read_pos), free(mk.write_step);
    if (rc != 0) {
        schedule_free(s);
        return oom(d, f);
    }
    return 0;
}

int schedule_count_unfused(const Function *f) {
    bool *read = calloc((size_t)f->n_values + 1, sizeof *read);
    if (read == NULL) return -1;
    for (int i = 0; i < f->n_ops; i++)
        for (int k = 0; k < f->ops[i]->n_inputs; k++) read[f->ops[i]->inputs[k]->id] = true;
    for (int i = 0; i < f->n_outputs; i++) read[f->outputs[i]->id] = true;
    int n = 0;
    for (int i = 0; i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        if (op->kind != OP_PARAM && !op_is_view(op) && read[op->result->id]) n++;
    }
    free(read);
    return n;
}
