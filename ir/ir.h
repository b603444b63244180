/* ir.h — capc's graph IR: the one data structure every part of the compiler shares.
 *
 * A Module holds configuration variables, the parameter table (weights and buffers, with
 * PyTorch state_dict names) and functions (entry points). A Function is a list of ops in SSA
 * form: every op defines exactly one Value; a value is defined before it is used. Every value
 * carries a dtype and a static shape (rank -1 means "not inferred yet": the frontend leaves
 * shapes unknown and the shape pass fills them in).
 *
 * Ownership: a Module owns everything reachable from it (strings, values, ops, functions,
 * params) through its arena and the arrays it grows; module_free() releases all of it. Nothing
 * returned by the accessors below is to be freed by the caller.
 *
 * What each op means, its operands, attributes and shape rule live in ONE table (ops.def /
 * ops.c, declared in ops.h); nothing else lists ops.
 */
#ifndef CAPC_IR_H
#define CAPC_IR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- dtypes and shapes ---------------------------------------------------------------- */

typedef enum { DT_F32, DT_I32, DT_BF16, DT_F16, DT_COUNT } DType;

const char *dtype_name(DType dtype);                   /* "f32", "i32", "bf16", "f16" */
bool dtype_from_name(const char *name, DType *dtype);  /* false if unknown */
int dtype_size(DType dtype);                           /* bytes per element */
bool dtype_is_float(DType dtype);

#define IR_MAX_RANK 8
/* Largest element count any single tensor may have (2^40): bigger is an "absurd size". */
#define IR_MAX_NUMEL ((int64_t)1 << 40)

typedef struct Shape {
    int rank; /* -1: unknown (not inferred yet); 0: scalar */
    int64_t dims[IR_MAX_RANK];
} Shape;

Shape shape_unknown(void);
Shape shape_scalar(void);
Shape shape_make(int rank, const int64_t *dims);
Shape shape_of(int rank, ...); /* shape_of(2, (int64_t)16, (int64_t)64): variadic int64_t */
bool shape_known(const Shape *s);
bool shape_equal(const Shape *a, const Shape *b);
/* Element count; -1 if unknown, or if the count overflows IR_MAX_NUMEL. */
int64_t shape_numel(const Shape *s);
/* Writes "f32[16,3,7,7]" ("f32[]" for a scalar, "?" for an unknown shape). Returns buf. */
char *type_format(DType dtype, const Shape *s, char *buf, size_t size);

/* ---- source locations ----------------------------------------------------------------- */

/* Where a model-file construct came from, for `file:line:col: error:` messages. file NULL =
 * no location (ops created by passes inherit the location of the op they derive from). */
typedef struct SrcLoc {
    const char *file;
    int line, col; /* 1-based */
} SrcLoc;

extern const SrcLoc SRCLOC_NONE;

/* ---- attributes ----------------------------------------------------------------------- */

typedef enum { ATTR_INT, ATTR_FLOAT, ATTR_BOOL, ATTR_INTS, ATTR_STRING, ATTR_FLOATS } AttrKind;

typedef struct AttrValue {
    AttrKind kind;
    int64_t i;           /* ATTR_INT, ATTR_BOOL (0/1) */
    double f;            /* ATTR_FLOAT */
    const int64_t *ints; /* ATTR_INTS */
    int n_ints;
    const char *s;       /* ATTR_STRING */
    const double *floats; /* ATTR_FLOATS (a call's scalar arguments) */
    int n_floats;
} AttrValue;

/* ---- the IR proper -------------------------------------------------------------------- */

typedef struct Module Module;
typedef struct Function Function;
typedef struct Op Op;

typedef struct Value {
    int id;           /* index in fn->values, dense from 0 */
    const char *name; /* unique within its function; printed as %name */
    DType dtype;
    Shape shape;
    Op *def;          /* defining op; NULL for a function input */
    Function *fn;
} Value;

struct Op {
    int kind;         /* OpKind (ops.h) */
    int group;        /* index in fn->groups of the fused group it runs in; -1: none */
    Value **inputs;
    int n_inputs;
    Value *result;    /* every op defines exactly one value */
    AttrValue *attrs; /* op_info(kind)->n_attrs entries, in the table's schema order */
    SrcLoc loc;
    Function *fn;
};

/* Weights count as parameters; buffers (BN running statistics) do not. STATE is what the
 * training program adds: optimizer moments ("adam.m.<param>", "adam.v.<param>") and the step
 * counter ("step"); printed as `state @name : TYPE init="..."`. DERIVED is computed from other
 * state by the `fold` entry point (passes/fold_bn.c: a frozen BatchNorm folded into its
 * convolution), never trained, saved or loaded; printed as `derived @name : TYPE`.
 * HPARAM is a training hyperparameter the training program reads instead of baking it into
 * kernel source (the learning rates: "train.lr", ...): an f32 scalar whose value is its init
 * string "const(V)" (param_hparam_value), so `-D lr=...` changes the artifact's state table
 * and no kernel. Never trained, saved or loaded; the runtime fills it from the init string;
 * printed as `hparam @name : f32[] init="const(V)"`. */
typedef enum { PARAM_WEIGHT, PARAM_BUFFER, PARAM_STATE, PARAM_DERIVED, PARAM_HPARAM } ParamKind;

typedef struct Param {
    const char *name; /* PyTorch state_dict name, e.g. "backbone.layer1.0.conv1.weight" */
    DType dtype;
    Shape shape;
    ParamKind kind;   /* weights count as parameters; buffers (BN running stats) do not */
    bool trainable;   /* false for frozen weights; always false for buffers */
    const char *init; /* initializer spec, e.g. "kaiming_uniform", "zeros", "normal(0,0.02)" */
    SrcLoc loc;
} Param;

typedef struct ConfigVar {
    const char *name;
    double value;
    bool is_int;
} ConfigVar;

/* A fused group (passes/fuse.c, docs/fusion.md): ops that run as ONE kernel. Its ops are
 * the contiguous run f->ops[first_op .. first_op + n_ops), each with op->group set to the
 * group's index. The text form prints the run inside `fused.PATTERN { ... }`. Values a group
 * defines and nothing outside it reads never reach memory. */
typedef struct FusedGroup {
    const char *pattern; /* "conv_bn_relu", "attention", "elementwise", ... */
    int first_op, n_ops;
} FusedGroup;

struct Function {
    const char *name;
    Module *module;
    Value **inputs;
    int n_inputs;
    Op **ops; /* in program order */
    int n_ops, cap_ops;
    Value **outputs;
    /* An output named "@X" is the new value of module param/buffer/state X: the step updates
     * that state in place (the runtime and the memory planner alias the two). Other outputs
     * are plain results ("loss"). */
    const char **output_names;
    int n_outputs, cap_outputs;
    Value **values; /* all values (inputs and op results), by id */
    int n_values, cap_values;
    int cap_inputs;
    FusedGroup *groups; /* none until the fusion pass; see FusedGroup */
    int n_groups, cap_groups;
};

/* The model file's "train" section (docs/model-format.md, docs/training.md): loss output,
 * optimizer, clipping, LR schedule and per-prefix parameter groups, all values evaluated.
 * Printed as one `train ...` line plus a `train_group ...` line per group. */
typedef enum { LR_CONSTANT, LR_WARMUP_COSINE, LR_WARMUP_STEP, LR_SCHEDULE_COUNT } LrScheduleKind;
typedef enum { OPT_ADAM, OPT_ADAMW, OPT_COUNT } OptimizerKind;

typedef struct TrainGroup {
    const char *prefix; /* matches a parameter name at a '.' boundary or the whole name */
    double lr;          /* base learning rate of the group */
    double weight_decay;
} TrainGroup;

typedef struct TrainSpec {
    const char *loss; /* name of the forward output to minimize */
    OptimizerKind optimizer;
    double lr, beta1, beta2, eps, weight_decay;
    double clip_grad_norm; /* 0: no clipping */
    LrScheduleKind schedule;
    int64_t warmup, total, step_size; /* in optimizer steps */
    double min_lr, gamma;
    TrainGroup *groups; /* first matching group wins; the rest use lr/weight_decay above */
    int n_groups;
} TrainSpec;

const char *lr_schedule_name(LrScheduleKind k); /* "constant", "warmup_cosine", "warmup_step" */
bool lr_schedule_from_name(const char *name, LrScheduleKind *k);
const char *optimizer_name(OptimizerKind k); /* "adam", "adamw" */
bool optimizer_from_name(const char *name, OptimizerKind *k);
/* A zeroed TrainSpec allocated in m's arena with PyTorch's Adam defaults (lr 1e-3, betas
 * 0.9/0.999, eps 1e-8, no decay, no clipping, constant schedule); sets m->train. */
TrainSpec *module_new_train_spec(Module *m, const char *loss);
/* Appends a group (arena-allocated; prefix copied). */
TrainGroup *train_spec_add_group(Module *m, TrainSpec *t, const char *prefix, double lr,
                                 double weight_decay);
/* True when prefix names `name` itself or a parent of it at a '.' boundary. */
bool name_has_prefix(const char *name, const char *prefix);

struct Module {
    const char *name;
    struct Arena *arena;
    ConfigVar *config;
    int n_config, cap_config;
    Param **params; /* in declaration order */
    int n_params, cap_params;
    Function **funcs;
    int n_funcs, cap_funcs;
    TrainSpec *train; /* NULL when the model file has no "train" section */
    /* C scalar functions the `call` op applies (cfunc.h), in definition order. */
    struct CFunc **cfuncs;
    int n_cfuncs, cap_cfuncs;
    /* Every file the module was read from (model files, imports, C sources), as opened:
     * what an output must never overwrite. */
    const char **input_files;
    int n_input_files, cap_input_files;
};

/* ---- building ------------------------------------------------------------------------- */

Module *module_new(const char *name);
void module_free(Module *m);
/* Arena allocation owned by the module: zeroed memory, freed by module_free. */
void *module_alloc(Module *m, size_t size);
const char *module_strdup(Module *m, const char *s);

/* Records a file the module was read from (module->input_files). */
void module_add_input_file(Module *m, const char *path);

/* Sets (or overwrites) a config variable; kept in insertion order for printing. */
void module_set_config(Module *m, const char *name, double value, bool is_int);
const ConfigVar *module_find_config(const Module *m, const char *name);

/* Returns NULL if a parameter of that name exists already. */
Param *module_add_param(Module *m, const char *name, DType dtype, Shape shape, ParamKind kind,
                        bool trainable, const char *init, SrcLoc loc);
Param *module_find_param(const Module *m, const char *name);
/* A PARAM_HPARAM's value: its init string is "const(V)" with V a finite number (what
 * hparam_init_string writes). False for any other param or a malformed init. */
bool param_hparam_value(const Param *p, double *value);
/* Writes "const(V)" with V printed so that strtod gives back exactly `value`. */
void hparam_init_string(double value, char *buf, size_t size);
/* Its index in m->params, or -1. Both are hash lookups. */
int module_param_index(const Module *m, const char *name);

/* The module's constant state: params nothing trains (frozen weights, buffers) and that no
 * function of the module updates through an `@X` output. A computation from constant state
 * alone gives the same result every step, until the state is written from outside (loaded,
 * initialized), which the runtime sees. Built once (module_constant_state_new: NULL when out
 * of memory; the caller frees it), then queried with a hash-free binary search. */
typedef struct ConstantState ConstantState;
ConstantState *module_constant_state_new(const Module *m);
void constant_state_free(ConstantState *cs);
bool constant_state_has(const ConstantState *cs, const Param *p);
/* The param a `param` op's value reads, or NULL for any other value. */
const Param *value_param(const Module *m, const Value *v);

/* Returns NULL if a function of that name exists already. */
Function *module_add_function(Module *m, const char *name);
Function *module_find_function(const Module *m, const char *name);

/* name NULL or taken: a fresh name "t<N>" / "<name>.<N>" is chosen so names stay unique. */
Value *func_add_input(Function *f, const char *name, DType dtype, Shape shape);
/* Appends an op whose result has the given name (uniquified as above), dtype f32 and unknown
 * shape until shape inference; attributes start at the op table's defaults (required ones
 * zero/empty until set). n_inputs is checked against the table only by the verifier. */
Op *func_add_op(Function *f, int kind, Value *const *inputs, int n_inputs, const char *name,
                SrcLoc loc);
void func_add_output(Function *f, const char *name, Value *v);
/* Makes ops [first_op, first_op + n_ops) of f one fused group named pattern (copied); they
 * must not belong to a group yet. Returns the group's index. */
int func_add_group(Function *f, const char *pattern, int first_op, int n_ops);
/* Forgets every group (ops keep their order). */
void func_clear_groups(Function *f);
/* Puts the ops a pass appended (with func_add_op) behind the first n_before in place, in one
 * pass: for each i < n_before with start[i] >= 0, ops [start[i], end[i]) go right before op i,
 * in their order. Every appended op must be in one such range. f must have no groups. */
void func_place_appended(Function *f, int n_before, const int *start, const int *end);
/* Removes the ops whose result nothing uses (not an output, not read by a live op), and their
 * values; value ids are renumbered densely. f must have no groups. */
void func_remove_dead_ops(Function *f);
/* Runs the op table's shape rule on op and records the result's dtype and shape. Returns 0,
 * or -1 with the rule's message in err. Passes that build ops call this right away. */
int op_infer(Op *op, char *err, size_t err_size);
/* Copies function src (ops, attrs, names, locations, outputs) into a new function of the same
 * module named new_name. Returns NULL if the name is taken. */
Function *func_clone(Function *src, const char *new_name);
Value *func_find_value(const Function *f, const char *name);
/* Renames a value, keeping names unique (uniquifies if taken). */
void value_rename(Value *v, const char *name);

/* Attribute access by schema name. Setting an attribute the op's schema lacks, or with the
 * wrong kind, is a bug in the caller: it aborts with a message (ir_bug). Getters likewise. */
int op_attr_index(int kind, const char *attr_name); /* -1 if the op has no such attribute */
void op_set_int(Op *op, const char *name, int64_t v);
void op_set_bool(Op *op, const char *name, bool v);
void op_set_float(Op *op, const char *name, double v);
void op_set_ints(Op *op, const char *name, const int64_t *v, int n);
void op_set_floats(Op *op, const char *name, const double *v, int n);
void op_set_string(Op *op, const char *name, const char *s);
int64_t op_int(const Op *op, const char *name);
bool op_bool(const Op *op, const char *name);
double op_float(const Op *op, const char *name);
const int64_t *op_ints(const Op *op, const char *name, int *n);
const double *op_floats(const Op *op, const char *name, int *n);
const char *op_string(const Op *op, const char *name);

/* Internal-error tier: a violated invariant is a bug in capc, not bad input. Prints
 * "capc: internal error at FILE:LINE: MESSAGE (this is a bug in capc)" and aborts. */
/* Work units: the passes and code generation add the size of each per-function or per-kernel
 * table they build (hash indexes, evaluator scratch, row tables), so a test can check that
 * compiling a model of N layers does work proportional to N, not N^2, without timing anything
 * (tests/passes/test_compile_scale.c). A process-wide count; capc is single-threaded. */
void ir_work_add(int64_t units);
int64_t ir_work_total(void);

void ir_bug_at(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define ir_bug(...) ir_bug_at(__FILE__, __LINE__, __VA_ARGS__)
#define IR_ASSERT(cond)                                                                    \
    do {                                                                                   \
        if (!(cond)) ir_bug("assertion failed: %s", #cond);                               \
    } while (0)

/* ---- checking and text forms ---------------------------------------------------------- */

/* Error reporting for user-facing failures: a message buffer that callers print. */
typedef struct Diag {
    char msg[1024];
    SrcLoc loc; /* where, when known */
    /* A location in a file whose name nobody keeps (a C source the frontend read): the name
     * is copied here and loc.file is DIAG_FILE_IN_DIAG (ir/diag.h), so that a copied
     * Diag stays valid. Unused (and unset) otherwise. */
    char file[512];
} Diag;

/* Verifier: operand counts and attributes against the op table, dtypes and shapes against
 * the shape rules (when require_shapes, every value must have a known shape), SSA (defined
 * once, defined before use, in this function), params exist. Returns 0 or -1 with d filled. */
int ir_verify_module(const Module *m, bool require_shapes, Diag *d);
int ir_verify_function(const Function *f, bool require_shapes, Diag *d);

/* Text form (docs/ir.md): stable, one op per line with its type; print -> parse -> print is
 * the identity. The printer writes to a FILE* or returns a malloc'd string (caller frees). */
#include <stdio.h>
void ir_print_module(FILE *out, const Module *m);
char *ir_module_to_string(const Module *m);
/* Parses text; returns a new module (caller frees with module_free) or NULL with
 * d->msg = "LINE:COL: message" and d->loc filled (file = filename). */
Module *ir_parse(const char *text, const char *filename, Diag *d);

/* Graphviz DOT for a module (one cluster per function). */
void ir_print_dot(FILE *out, const Module *m);

/* Summary numbers used by `capc --check`. */
int64_t module_count_parameters(const Module *m, bool trainable_only); /* weights only */
int64_t module_count_buffer_elements(const Module *m);

#endif
