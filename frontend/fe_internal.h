/* fe_internal.h — what the frontend's files share (not part of the public frontend.h).
 *
 *   frontend.c    entry points and the top level: inputs, outputs, frozen, block table
 *   config.c      config variables (dependency order, cycles, -D), expression evaluation of
 *                 JSON nodes, name interpolation, shapes
 *   statements.c  statements: op, param, use, block call, scope, repeat, if
 *   op_attrs.c    op attributes from JSON against the op table's schema
 *   train.c       the "train" section: optimizer, clipping, LR schedule, groups
 *   entries.c     the "entries" section: more entry points (encode, decode_step) sharing
 *                 forward's parameters
 *   imports.c     the files of a model: "extends" (a short file naming a preset of another),
 *                 "import" (block libraries), the block table, "presets"
 *
 * Every function that can fail returns 0 or -1; on -1 the Diag in the Frontend is filled and
 * the caller just propagates the failure.
 */
#ifndef CAPC_FE_INTERNAL_H
#define CAPC_FE_INTERNAL_H

#include "diag.h"
#include "expr.h"
#include "frontend.h"
#include "json_loc.h"
#include "ops.h"

/* Upper bounds that turn an absurd model into an error instead of hours of work. */
#define FE_MAX_REPEAT 100000
#define FE_MAX_OPS 2000000

typedef enum { CFG_PENDING, CFG_EVALUATING, CFG_DONE } ConfigState;

typedef struct ConfigEntry {
    const cJSON *node; /* the member in "config" (key = name) */
    ConfigState state;
    bool overridden; /* set by -D: node's expression is not evaluated */
    ExprValue value;
} ConfigEntry;

/* A block call in progress, for recursion detection (a linked list up the C stack). */
typedef struct CallFrame {
    const char *block;
    const struct CallFrame *caller;
} CallFrame;

/* One JSON file of the model: the file named on the command line, the files it extends, the
 * block libraries they import. */
typedef struct FeFile {
    JsonDoc doc;
    char *text;                    /* owned; NULL for the first file (the caller's text) */
    char *path;                    /* as opened: the importing file's folder + the name */
    const char *ir_file;           /* path, owned by the module, for op/param SrcLocs */
    unsigned long long dev, ino;   /* identity: a file imported twice is read once */
    bool known;                    /* dev and ino are set (the file could be stat'ed) */
    bool loading;                  /* its imports are being read: meeting it again is a cycle */
    bool model_file;               /* of the extends chain (the model or a file extending it) */
    const struct FeFile *importer; /* the file that imported or extended it first */
} FeFile;

/* The block table: open addressing on the block name. */
typedef struct BlockSlot {
    const char *name; /* NULL: empty */
    const cJSON *def; /* the member of a "blocks" object (def->string == name) */
} BlockSlot;

typedef struct Frontend {
    FeFile **files; /* files[0]: the file named on the command line */
    int n_files, cap_files;
    const cJSON *root; /* the complete model: the last file of the "extends" chain */
    Module *m;
    Function *fn;
    Diag *d;
    ConfigEntry *config;
    int n_config;
    int *cfg_stack; /* config entries being evaluated, outermost first */
    int cfg_depth;
    BlockSlot *block_tab;
    size_t block_cap, n_blocks;
    const cJSON *frozen; /* "frozen" list or NULL */
    int64_t next_stream; /* dropout sites numbered in the order they are emitted */
    int64_t n_ops;
    bool in_entry; /* building an "entries" function: param statements bind forward's */
    struct CSources *csrc; /* the "functions" C sources (cfunc_clang.c); NULL without them */
} Frontend;

/* Variables visible to expressions besides config: block arguments and repeat variables. A
 * chain of frames on the C stack; a block body starts a fresh chain (it sees only its own
 * arguments, then config). */
typedef struct VarFrame {
    const char *name;
    ExprValue value;
    const struct VarFrame *parent;
} VarFrame;

/* Value names in scope: `out` bindings. A block body gets its own Env; scope/repeat/if bodies
 * share their surrounding one. */
typedef struct Binding {
    char *name;
    Value *value;
} Binding;

typedef struct Env {
    Binding *items;
    int n, cap;
} Env;

/* Where a statement runs. */
typedef struct Ctx {
    Frontend *fe;
    Env *env;
    const char *prefix; /* scope prefix for names, "" at the top */
    const VarFrame *vars;
    const CallFrame *calls;
} Ctx;

/* ---- errors and locations (frontend.c) ---- */
int fe_error(Frontend *fe, SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int fe_error_at(Frontend *fe, const cJSON *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int fe_error_key(Frontend *fe, const cJSON *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Fails on the first key of obj not in allowed (NULL-terminated): "unknown key 'k' in WHAT". */
int fe_check_keys(Frontend *fe, const cJSON *obj, const char *const *allowed, const char *what);
/* The member named key, or NULL; required: error at obj when missing. */
const cJSON *fe_member(Frontend *fe, const cJSON *obj, const char *key, bool required,
                       const char *what, int *rc);

/* Location of node for the IR: in the file that holds it, by the module-owned name. */
SrcLoc fe_ir_loc(const Frontend *fe, const cJSON *node);
/* The document a node belongs to (the first file's when none). */
const JsonDoc *fe_doc(const Frontend *fe, const cJSON *node);

/* ---- the files of a model (imports.c) ---- */
/* Reads the whole file at path into a malloc'd, NUL-terminated buffer; NULL with errno set. */
char *fe_read_text(const char *path, size_t *len);
/* name taken relative to the folder of the file `from` (an absolute name as it is). */
char *fe_relative_path(const char *from, const char *name);
/* The path of the file holding node. */
const char *fe_node_path(const Frontend *fe, const cJSON *node);
/* Adds files[0] from text in memory (not copied). */
int fe_add_first_file(Frontend *fe, const char *text, size_t len, const char *path);
/* Follows "extends" from files[0] to the complete model (fe->root); *layers gets the
 * extending files' roots, the one nearest fe->root first (n at most FE_MAX_EXTENDS). */
#define FE_MAX_EXTENDS 16
int fe_load_extends(Frontend *fe, const cJSON **layers, int *n_layers);
/* Gives every file read so far its module-owned name (fe->m must exist). */
void fe_name_files(Frontend *fe);
/* The model's "import" list then its "blocks" into the block table. */
int fe_load_blocks(Frontend *fe, const cJSON *model);
/* The definition of block name, or NULL. */
const cJSON *fe_find_block(const Frontend *fe, const char *name);
/* The preset to apply (NULL: none): -D preset=NAME, else the nearest "preset" key of the
 * extending files, else the model's own; unknown names list the known ones. *ov and *n_ov
 * lose a -D preset= (their array is then a malloc'd copy in *owned). */
int fe_choose_preset(Frontend *fe, const cJSON *const *layers, int n_layers,
                     const ConfigOverride **ov, int *n_ov, ConfigOverride **owned,
                     const cJSON **preset);
void fe_free_files(Frontend *fe);

/* The "inputs" / "outputs" objects of the top level or an entry, into fe->fn and c->env. */
int fe_load_inputs(const Ctx *c, const cJSON *inputs);
int fe_load_outputs(const Ctx *c, const cJSON *outputs);

/* ---- config and expressions (config.c) ---- */
/* The model's "config", then each of layers[0..n_layers) in order (objects whose members
 * replace variables of that name: a preset, the extending files' "config"), then -D. */
int fe_load_config(Frontend *fe, const cJSON *config, const cJSON *const *layers, int n_layers,
                   const ConfigOverride *ov, int n_ov);
/* Evaluates a JSON number, bool (0/1) or string expression. */
int fe_eval(const Ctx *c, const cJSON *node, const char *what, ExprValue *out);
/* Same, requiring an integer. */
int fe_eval_int(const Ctx *c, const cJSON *node, const char *what, int64_t *out);
/* A JSON string naming something, with `{expr}` replaced; returns malloc'd text or NULL. */
char *fe_name(const Ctx *c, const cJSON *node, const char *what);
/* A list of dims: every dim an integer > 0 (or -1 once when allow_infer), at most
 * IR_MAX_RANK of them, element count at most IR_MAX_NUMEL. */
int fe_shape(const Ctx *c, const cJSON *node, const char *what, bool allow_infer, Shape *out);
/* True for value/param/scope names the IR can print: [A-Za-z0-9_.]+ */
bool fe_valid_name(const char *s);
/* Why fe_valid_name refused s, for the message: the rule it broke. */
const char *fe_name_rule(const char *s);

/* ---- statements (statements.c) ---- */
int fe_run_body(const Ctx *c, const cJSON *body, const char *what);
Value *fe_env_find(const Env *env, const char *name);
int fe_env_bind(Env *env, const char *name, Value *v);
void fe_env_free(Env *env);
/* Validates the shape of a block definition (keys and their types), not its body. */
int fe_check_block_def(Frontend *fe, const cJSON *def);

/* ---- the "train" section (train.c) ---- */
/* Reads the top-level "train" object (NULL: absent) into m->train; runs after the outputs. */
int fe_load_train(const Ctx *c, const cJSON *train);

/* ---- the "entries" section (entries.c) ---- */
/* Builds one function per entry (NULL: absent); runs after forward is complete. */
int fe_load_entries(Frontend *fe, const cJSON *entries);
/* In an entry, a param statement for full_name: forward must have it with this dtype and
 * shape (errors at `at`). */
int fe_entry_param(const Ctx *c, const cJSON *at, const char *full_name, DType dtype,
                   const Shape *shape);

/* ---- C functions (cfunc_clang.c, docs/custom-ops.md) ---- */
typedef struct CSources CSources;
/* Parses the top-level "functions" list (NULL: absent) with libclang and translates every
 * function; errors at the C source's positions. */
int fe_load_functions(Frontend *fe, const cJSON *functions);
/* A `call` of C function name with n_operands tensor operands and the scalar arguments
 * args[0..n_args) (errors at `at`; the counts together must match the parameters): puts the
 * function and the gradients for its tensor operands into the module on first use, every
 * gradient checked by finite differences at these scalar values. */
int fe_use_function(Frontend *fe, const cJSON *at, const char *name, int n_operands,
                    const double *args, int n_args);
void fe_free_functions(CSources *cs);

/* ---- attributes (op_attrs.c) ---- */
/* Sets op's attributes from the "attrs" object (may be NULL); op_node locates "missing"
 * errors. */
int fe_set_attrs(const Ctx *c, Op *op, const cJSON *attrs, const cJSON *op_node);
/* A call statement's "args" (a JSON list of config expressions) -> the op's float list
 * attribute "args"; errors at the offending element. */
int fe_set_call_args(const Ctx *c, Op *op, const cJSON *args);

#endif
