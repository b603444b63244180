/* passes.h — the IR passes, the schedule and the memory plan. Each pass lives in its own file
 * whose top comment says what it does and what it keeps true; pipeline.c (pipeline.h) runs
 * them in order, then code generation. */
#ifndef CAPC_PASSES_H
#define CAPC_PASSES_H

#include "ir.h"

/* The fusion rules (passes/fuse.c), each of which can be switched off. */
typedef enum {
    FUSE_RULE_ELEMENTWISE,     /* chains of elementwise, broadcast and layout ops */
    FUSE_RULE_REDUCTION,       /* reductions with their prologue and epilogue */
    FUSE_RULE_CONTRACTION,     /* contractions with their epilogue (conv_bn_relu, ...) */
    FUSE_RULE_ATTENTION,       /* the attention pattern, forward and backward */
    FUSE_RULE_MULTI_REDUCTION, /* all whole-tensor sums and scalar arithmetic as one kernel */
    FUSE_RULE_MULTI_TENSOR,    /* all state updates (the optimizer) as one kernel */
    FUSE_RULE_COUNT
} FuseRule;

/* What the passes are asked to do (the zeroed struct: the defaults). */
typedef struct PassOptions {
    bool no_fuse;      /* every op its own kernel */
    unsigned fuse_off; /* bit r set: rule r off */
} PassOptions;

/* "elementwise", "reduction", ... (the names --fuse takes); NULL past the last. */
const char *fuse_rule_name(FuseRule r);
bool fuse_enabled(const PassOptions *opts, FuseRule r);

/* A pass transforms m in place. Returns 0, or -1 with d filled (d->loc set when the problem
 * is in the user's model file). opts may be NULL (the defaults). */
typedef int (*PassFn)(Module *m, const PassOptions *opts, Diag *d);

typedef struct Pass {
    const char *name; /* used in dump file names: 01-shapes.ir */
    PassFn run;
} Pass;

/* Shape inference: fills every value's dtype and shape from the op table's shape rules,
 * reporting the first mismatch at the op's model-file location. Then verifies the module
 * with shapes required. */
int pass_infer_shapes(Module *m, const PassOptions *opts, Diag *d);

/* Reverse-mode autodiff (passes/autodiff.c). Appends to f the backward program of the scalar
 * value loss w.r.t. every trainable weight that f reads through `param` ops, using each op's
 * gradient rule from the op table. Ops that do not lie on a path from a trainable weight to
 * loss get no backward ops (a frozen prefix of the network is pruned entirely); tied weights
 * (several `param` ops of one name) get the sum of their contributions.
 * On success *param_grads is a malloc'd array of m->n_params entries (caller frees): the
 * gradient value for module param i, or NULL when it has none. Returns 0, or -1 with d. */
int autodiff_append(Function *f, Value *loss, Value ***param_grads, Diag *d);

/* The training program (passes/train_program.c): from `forward`, builds the entry points
 * train_step and eval_loss described in docs/training.md. Other functions (the model file's
 * entries, such as encode and decode_step) are left as they are. */
int pass_build_training_program(Module *m, const PassOptions *opts, Diag *d);

/* The feature cache's entry points (passes/feature_cache.c): when train_step starts with a
 * frozen, deterministic prefix over its image (a convolution at least), adds features(image)
 * -> the prefix's results and train_step_cached, which starts from them. */
int pass_feature_cache(Module *m, const PassOptions *opts, Diag *d);

/* BatchNorm folding (passes/fold_bn.c): a conv2d feeding only a frozen eval-mode batch_norm
 * becomes one conv2d on derived state that the new entry point `fold` computes. Off with the
 * contraction fusion rule. */
int pass_fold_bn(Module *m, const PassOptions *opts, Diag *d);

/* Fusion (passes/fuse.c, docs/fusion.md): groups every function's ops into fused groups, each
 * one kernel, and orders the ops so that each group is contiguous. With opts->no_fuse (or
 * every rule off) it only removes any groups. */
int pass_fuse(Module *m, const PassOptions *opts, Diag *d);

/* The schedule (passes/schedule.c): what runs as one kernel. A step is a fused group or one
 * op outside any group that needs a kernel (all but `param` and views), in op order. */
typedef struct Step {
    int first_op, n_ops;  /* f->ops[first_op .. first_op + n_ops) */
    int group;            /* index in f->groups, or -1 for a lone op */
    const Value **writes; /* values it stores: read after it or returned (roots, not views) */
    int n_writes;
    const Value **reads;  /* values it uses that it does not define */
    int n_reads;
    bool *read_aligned;   /* per read: each work item reads it only at its own flat index,
                             before it stores (schedule.c), so a write of its size may take
                             over its bytes */
} Step;

typedef struct Schedule {
    const Function *f;
    Step *steps;
    int n_steps;
    int *step_of_op; /* per op index: its step, or -1 (a param, or a view outside a group) */
    bool *returned;  /* per value id: the function returns it */
    /* Scratch that code generation hangs on the schedule (codegen/eval.c: the evaluator's
     * per-value arrays, reused by every kernel of the function); freed by schedule_free. */
    void *scratch;
    void (*scratch_free)(void *scratch);
} Schedule;

/* Builds f's schedule (caller frees with schedule_free, also after a failure). Returns 0, or
 * -1 with d filled (out of memory). */
int schedule_build(const Function *f, Schedule *s, Diag *d);
void schedule_free(Schedule *s);
/* How many kernels f would run with no fused group: its ops that need a kernel and whose
 * result something reads. */
int schedule_count_unfused(const Function *f);

/* Memory planning (passes/memplan.c): liveness over each entry point's op order, values
 * packed into one arena by lifetime. Results per function, for dumps and `capc --check`. */
typedef struct MemPlan {
    const char *function;
    int64_t peak_bytes;  /* arena size */
    int64_t naive_bytes; /* sum of every intermediate's size */
    int n_values;
    int64_t *offsets;    /* per value id: byte offset in the arena, -1 if not in the arena */
    /* Per value id, for values in the arena (else -1): the times (the first op index of
     * the step) where the value is defined and last read, [start, end] inclusive; end = n_ops
     * for function outputs. */
    int *starts, *ends;
    /* Per value id: the value whose bytes this value reuses, or -1. Set for views (reshape
     * shares its operand's bytes) and in-place results (a step's write over an aligned read
     * whose last reader it is). The plan checker accepts shared bytes only along
     * these. */
    int *alias_of;
} MemPlan;

#define MEMPLAN_ALIGN 64 /* every arena offset is a multiple of this */

/* Plans f's memory into plan (caller frees with memplan_free, also after a failure). Function
 * inputs and `param` results are caller/state memory, not arena; a value returned as "@X" is
 * written straight into state X when nothing reads the old X afterwards. Returns 0, or -1
 * with d filled (an unknown size is an internal error). */
int memplan_function(const Function *f, MemPlan *plan, Diag *d);
/* The same for a schedule already built (memplan_function builds f's own). */
int memplan_schedule(const Schedule *s, MemPlan *plan, Diag *d);
void memplan_free(MemPlan *plan);
/* Checks plan against f with its own liveness: aligned offsets inside the arena, aliases only
 * where the op allows one, and no two values live at the same time sharing bytes except
 * along declared view/in-place aliases. Returns 0, or -1 with a message in err. */
int memplan_check(const Function *f, const MemPlan *plan, char *err, size_t err_size);
int memplan_check_schedule(const Schedule *s, const MemPlan *plan, char *err,
                           size_t err_size);
/* Writes the plan as text: peak, naive, ratio, then one line per value (name, bytes, offset,
 * [start,end]). */
void memplan_print(FILE *out, const Function *f, const MemPlan *plan);


#endif
