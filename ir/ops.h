/* ops.h — the op table's types. The table itself is ops.def, expanded in ops.c.
 *
 * Every part of capc asks the table instead of listing ops: the verifier checks operand
 * counts and attributes against it, shape inference calls its shape rule, the reference
 * interpreter calls its evaluator, and later passes find their hooks (gradient rule, kernel
 * lowering) in the same entry.
 */
#ifndef CAPC_OPS_H
#define CAPC_OPS_H

#include "ir.h"

typedef enum {
#define OP(ENUM, name, min_in, max_in, fusion, doc) OP_##ENUM,
#include "ops.def"
#undef OP
    OP_COUNT
} OpKind;

typedef enum {
    FUSE_ELEMENTWISE, /* out[i] depends on in[i] of every operand (after broadcasting) */
    FUSE_BROADCAST,   /* out[i] reads an input element chosen by dropping broadcast axes */
    FUSE_INJECTIVE,   /* each output element reads one input element: reshape, gather... */
    FUSE_REDUCTION,   /* output elements combine many inputs along some axes */
    FUSE_CONTRACTION, /* matmul / conv: the GEMM-shaped ops, fusable epilogue */
    FUSE_OPAQUE,      /* anything fusion must leave alone */
} FusionKind;

const char *fusion_kind_name(FusionKind k);

/* One attribute in an op's schema. default_text is parsed with the IR text parser's attribute
 * syntax ("1", "1e-5", "true", "[1,1]", "\"f32\""); NULL means the attribute is required. */
typedef struct AttrSpec {
    const char *name;
    AttrKind kind;
    const char *default_text;
} AttrSpec;

/* Shape rule: from the op's operands (their dtype/shape are known) and attributes, compute the
 * result's dtype and shape. On a user-visible problem return -1 and write a message that
 * names the op and both shapes where two disagree, e.g.
 *   "add: cannot broadcast f32[16,64] with f32[16,32]". */
typedef int (*ShapeRule)(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                         size_t err_size);

/* Reference evaluator: float64, obviously right, no speed concerns. ins[i] matches
 * op->inputs[i]; out is allocated with the result's shape. Integer tensors hold their values
 * as exact doubles. Return -1 with a message for data-dependent errors (id out of range). */
/* Gradient rule (reverse mode): given forward op `op` in f and dy, the gradient of the loss
 * w.r.t. op's result, append to f the ops computing the gradient w.r.t. each operand i for
 * which need[i] is true, and store it in grads[i] (same dtype and shape as the operand).
 * Operands that are not differentiable (ids, rng, masks) are never needed. Rules append at the
 * end of f, use op_infer() on every op they create, and give new ops op->loc. Return 0, or
 * -1 with a message. Ops with no differentiable operand use grad_none (ir/grad_rules.c). */
typedef int (*GradRule)(Function *f, const Op *op, Value *dy, const bool *need, Value **grads,
                        char *err, size_t err_size);

/* The explicit "no gradient" rule: succeeds when no operand's gradient is needed, else fails
 * naming the op. Autodiff compares op_info(kind)->grad_rule with it. */
int grad_none(Function *f, const Op *op, Value *dy, const bool *need, Value **grads, char *err,
              size_t err_size);

struct RefTensor;
typedef int (*RefEval)(const Op *op, const struct RefTensor *const *ins, struct RefTensor *out,
                       char *err, size_t err_size);

typedef struct OpInfo {
    const char *name;
    int min_inputs, max_inputs; /* max -1: any number */
    FusionKind fusion;
    const AttrSpec *attrs;
    int n_attrs;
    ShapeRule infer_shape;
    RefEval ref_eval;
    /* Hooks later passes fill in (NULL until their issue lands). */
    GradRule grad_rule;
    void *lower_kernel;
    const char *doc;
} OpInfo;

extern const OpInfo OP_TABLE[OP_COUNT];

static inline const OpInfo *op_info(int kind) { return &OP_TABLE[kind]; }
/* -1 if no op has that name. */
int op_kind_from_name(const char *name);
/* True for ops whose result is a contiguous run of operand 0's bytes (a view: no kernel, no
 * copy). Tensors are contiguous row-major, so reshape qualifies, and a slice with step 1 whose
 * leading axes (before the sliced one) have size 1 (the q/k/v rows of an in_proj weight).
 * Memory planning and code generation both ask this, so they agree on which values share
 * storage. op_view_offset gives the view's first element within its operand (0 for reshape),
 * or -1 for an op that is no view. */
bool op_is_view(const Op *op);
int64_t op_view_offset(const Op *op);
/* The fusion kind of this op instance: the table's, except batch_norm in eval mode
 * (training=false), which normalizes each element with stored per-channel statistics and so
 * is elementwise (its per-channel operands are read at the element's channel). Fusion, memory
 * planning and code generation all ask this. */
FusionKind op_fusion(const Op *op);
/* For the reductions that combine operand 0 along a set of its axes, each output element or
 * row depending on one "row" of it (sum, mean, max, reduce_to_shape, softmax, layer_norm,
 * batch_norm in training mode): true, with reduced[d] set for the reduced axes of operand 0.
 * False for every other op, including the window and whole-tensor reductions (pools,
 * cross_entropy), which run as kernels of their own. */
bool op_reduced_axes(const Op *op, bool reduced[IR_MAX_RANK]);

/* Parses one attribute value in IR text syntax into v (strings/lists allocated in m).
 * Returns 0, or -1 with a message. Shared by the IR parser and the op-table defaults. */
int attr_parse(Module *m, AttrKind kind, const char *text, AttrValue *v, char *err,
               size_t err_size);
/* Writes an attribute value in IR text syntax; returns the number of chars (snprintf-like). */
int attr_format(const AttrValue *v, char *buf, size_t size);
const char *attr_kind_name(AttrKind k); /* "int", "float", "bool", "int list", "string" */

/* Normalizes a possibly negative axis against rank; -1 if out of range. */
int axis_normalize(int64_t axis, int rank);
/* numpy broadcast of two shapes; false if incompatible. */
bool shape_broadcast(const Shape *a, const Shape *b, Shape *out);

#endif
