/* lower.c — IR function -> KernelSet: one kernel per op (fusion will group ops later), none
 * for `param` (state read in place) and views (reshape: tensors are contiguous row-major, so
 * a reshape shares its operand's bytes). The dispatch table below has an entry for every op
 * of ops.def; an op added to the table without a lowering fails codegen (and the kernel
 * tests) with a message naming it.
 *
 * Each kernel is rendered to C and CUDA right away; KernelSource keeps both texts, the CUDA
 * launch geometry and the IR values of its arguments for the packager. */
#include <stdlib.h>
#include <string.h>

#include "codegen.h"
#include "lower.h"

/* ---- the dispatch table ----------------------------------------------------------------- */

static const LowerFn LOWER[OP_COUNT] = {
    [OP_FULL] = lower_source,
    [OP_SINUSOID_TABLE] = lower_source,
    [OP_CAUSAL_MASK] = lower_source,
    [OP_RELU] = lower_elementwise,
    [OP_NEG] = lower_elementwise,
    [OP_EXP] = lower_elementwise,
    [OP_LOG] = lower_elementwise,
    [OP_SQRT] = lower_elementwise,
    [OP_RSQRT] = lower_elementwise,
    [OP_TANH] = lower_elementwise,
    [OP_COS] = lower_elementwise,
    [OP_FLOOR] = lower_elementwise,
    [OP_SCALE] = lower_elementwise,
    [OP_CAST] = lower_elementwise,
    [OP_DROPOUT] = lower_elementwise,
    [OP_PADDING_MASK] = lower_elementwise,
    [OP_ADD] = lower_elementwise,
    [OP_SUB] = lower_elementwise,
    [OP_MUL] = lower_elementwise,
    [OP_DIV] = lower_elementwise,
    [OP_MINIMUM] = lower_elementwise,
    [OP_MAXIMUM] = lower_elementwise,
    [OP_EQUAL] = lower_elementwise,
    [OP_RELU_GRAD] = lower_elementwise,
    [OP_BROADCAST] = lower_layout,
    [OP_RESHAPE] = lower_layout, /* only when asked for a copy; normally a view */
    [OP_TRANSPOSE] = lower_layout,
    [OP_SLICE] = lower_layout,
    [OP_SLICE_GRAD] = lower_layout,
    [OP_CONCAT] = lower_layout,
    [OP_EMBEDDING] = lower_layout,
    [OP_SCATTER_ADD] = lower_layout,
    [OP_SUM] = lower_reduce,
    [OP_MEAN] = lower_reduce,
    [OP_MAX] = lower_reduce,
    [OP_REDUCE_TO_SHAPE] = lower_reduce,
    [OP_SOFTMAX] = lower_norm,
    [OP_LAYER_NORM] = lower_norm,
    [OP_BATCH_NORM] = lower_norm,
    [OP_CROSS_ENTROPY] = lower_norm,
    [OP_CROSS_ENTROPY_GRAD] = lower_norm,
    [OP_MAX_POOL2D] = lower_pool,
    [OP_ADAPTIVE_AVG_POOL2D] = lower_pool,
    [OP_MAX_POOL2D_GRAD] = lower_pool,
    [OP_ADAPTIVE_AVG_POOL2D_GRAD] = lower_pool,
    [OP_MATMUL] = lower_contract,
    [OP_LINEAR] = lower_contract,
    [OP_CONV2D] = lower_conv,
    [OP_CONV2D_GRAD_INPUT] = lower_conv,
    [OP_CONV2D_GRAD_WEIGHT] = lower_conv,
    [OP_UPDATE_SLICE] = lower_layout,
    [OP_POSITION_MASK] = lower_source,
};


/* ---- helpers shared by the lower_*.c files ---------------------------------------------- */

KType ktype_of(DType dt) { return dt == DT_I32 ? KT_I32 : KT_F32; }

int64_t numel_of(const Value *v) { return shape_numel(&v->shape); }

int64_t dims_product(const Shape *s, int from, int to) {
    int64_t p = 1;
    for (int d = from; d < to; d++) p *= s->dims[d];
    return p;
}

int64_t shape_stride(const Shape *s, int d) { return dims_product(s, d + 1, s->rank); }

void ix_unravel(KernelDesc *kd, const KExpr *flat, const Shape *s, const KExpr **idx) {
    for (int d = 0; d < s->rank; d++) {
        if (s->dims[d] == 1) {
            idx[d] = ke_int(kd, 0);
            continue;
        }
        const KExpr *q = KDIV(kd, flat, ke_int(kd, shape_stride(s, d)));
        /* The first non-trivial axis needs no modulo: flat < numel bounds the quotient. */
        bool outer = dims_product(s, 0, d) == 1;
        idx[d] = outer ? q : KMOD(kd, q, ke_int(kd, s->dims[d]));
    }
}

const KExpr *ix_ravel(KernelDesc *kd, const KExpr *const *idx, const Shape *s) {
    const KExpr *flat = ke_int(kd, 0);
    for (int d = 0; d < s->rank; d++)
        if (s->dims[d] != 1)
            flat = KADD(kd, flat, KMUL(kd, idx[d], ke_int(kd, shape_stride(s, d))));
    return flat;
}

const KExpr *ix_broadcast(KernelDesc *kd, const KExpr *const *out_idx, const Shape *out,
                          const Shape *in) {
    const KExpr *idx[IR_MAX_RANK];
    int off = out->rank - in->rank;
    for (int d = 0; d < in->rank; d++)
        idx[d] = in->dims[d] == 1 ? ke_int(kd, 0) : out_idx[d + off];
    return ix_ravel(kd, idx, in);
}

static void describe(const Value *v, char *buf, size_t size) {
    char type[128];
    type_format(v->dtype, &v->shape, type, sizeof type);
    snprintf(buf, size, "%%%s %s", v->name, type);
}

KernelDesc *lower_new_desc(const Op *op, const char *name) {
    KernelDesc *kd = kd_new(name);
    if (!kd) return NULL;
    char what[256], comment[256];
    snprintf(comment, sizeof comment, "%s %%%s", op_info(op->kind)->name, op->result->name);
    kd_set_comment(kd, comment);
    describe(op->result, what, sizeof what);
    kd_arg(kd, what, ktype_of(op->result->dtype), numel_of(op->result), true);
    for (int i = 0; i < op->n_inputs; i++) {
        describe(op->inputs[i], what, sizeof what);
        kd_arg(kd, what, ktype_of(op->inputs[i]->dtype), numel_of(op->inputs[i]), false);
    }
    return kd;
}

/* ---- the kernel set --------------------------------------------------------------------- */

static char *dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* "<function>_<op index>_<op name>", with anything but [A-Za-z0-9_] turned into '_'. */
static void kernel_name(const Function *f, int index, const Op *op, char *buf, size_t size) {
    snprintf(buf, size, "%s_%d_%s", f->name, index, op_info(op->kind)->name);
    for (char *p = buf; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            *p = '_';
    if (buf[0] >= '0' && buf[0] <= '9') buf[0] = '_';
}

static int grow(KernelSet *ks) {
    if (ks->n_kernels < ks->cap_kernels) return 0;
    int cap = ks->cap_kernels ? 2 * ks->cap_kernels : 16;
    KernelSource *k = realloc(ks->kernels, (size_t)cap * sizeof *k);
    if (!k) return -1;
    ks->kernels = k;
    ks->cap_kernels = cap;
    return 0;
}

static void source_free(KernelSource *k) {
    free(k->name);
    free((void *)k->arg_values);
    free(k->c_src);
    free(k->cuda_src);
    free(k->source_ops);
}

/* Renders kd (and cuda, or kd again) into ks's next KernelSource. */
static int add_kernel(KernelSet *ks, const Op *op, const KernelDesc *kd, const KernelDesc *cuda,
                      Diag *d) {
    if (grow(ks)) {
        snprintf(d->msg, sizeof d->msg, "out of memory");
        return -1;
    }
    KernelSource k = {0};
    k.name = dup(kd->name);
    k.n_args = op->n_inputs + 1;
    k.arg_values = malloc((size_t)k.n_args * sizeof *k.arg_values);
    k.source_ops = dup(kd->comment);
    k.c_src = kernel_render(kd, KTARGET_C, d);
    k.cuda_src = k.c_src ? kernel_render(cuda, KTARGET_CUDA, d) : NULL;
    if (!k.name || !k.arg_values || !k.source_ops || !k.c_src || !k.cuda_src) {
        if (!k.c_src || !k.cuda_src) {
            /* d holds the renderer's message */
        } else {
            snprintf(d->msg, sizeof d->msg, "out of memory");
        }
        source_free(&k);
        return -1;
    }
    k.arg_values[0] = op->result;
    for (int i = 0; i < op->n_inputs; i++) k.arg_values[i + 1] = op->inputs[i];
    kernel_cuda_launch(cuda, &k.cuda_grid, &k.cuda_block);
    k.cuda_shared_bytes = 0;
    ks->kernels[ks->n_kernels++] = k;
    return 0;
}

static int lower_op(const Function *f, int index, KernelSet *ks, Diag *d) {
    const Op *op = f->ops[index];
    LowerFn fn = op->kind >= 0 && op->kind < OP_COUNT ? LOWER[op->kind] : NULL;
    if (!fn) {
        snprintf(d->msg, sizeof d->msg, "%s %%%s: no kernel lowering for op %s (codegen/lower.c)",
                 op_info(op->kind)->name, op->result->name, op_info(op->kind)->name);
        d->loc = op->loc;
        return -1;
    }
    for (int i = 0; i < op->n_inputs; i++)
        if (!shape_known(&op->inputs[i]->shape) || !shape_known(&op->result->shape)) {
            snprintf(d->msg, sizeof d->msg, "%s %%%s: shapes must be inferred before codegen",
                     op_info(op->kind)->name, op->result->name);
            return -1;
        }
    char name[256];
    kernel_name(f, index, op, name, sizeof name);
    KernelDesc *kd = lower_new_desc(op, name), *cuda = NULL;
    if (!kd) {
        snprintf(d->msg, sizeof d->msg, "out of memory");
        return -1;
    }
    char err[512] = "";
    int rc = fn(op, kd, &cuda, err, sizeof err);
    if (rc) {
        snprintf(d->msg, sizeof d->msg, "%s %%%s: %s", op_info(op->kind)->name, op->result->name,
                 err);
        d->loc = op->loc;
    } else {
        rc = add_kernel(ks, op, kd, cuda ? cuda : kd, d);
    }
    kd_free(kd);
    kd_free(cuda);
    return rc;
}

int codegen_lower_function(const Function *f, KernelSet *ks, Diag *d) {
    memset(ks, 0, sizeof *ks);
    ks->n_ops = f->n_ops;
    ks->kernel_of_op = malloc(((size_t)f->n_ops + 1) * sizeof *ks->kernel_of_op);
    if (!ks->kernel_of_op) {
        snprintf(d->msg, sizeof d->msg, "out of memory");
        return -1;
    }
    for (int i = 0; i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        ks->kernel_of_op[i] = -1;
        if (op->kind == OP_PARAM || op_is_view(op)) continue;
        if (lower_op(f, i, ks, d)) {
            kernel_set_free(ks);
            return -1;
        }
        ks->kernel_of_op[i] = ks->n_kernels - 1;
    }
    return 0;
}

void kernel_set_free(KernelSet *ks) {
    if (!ks) return;
    for (int i = 0; i < ks->n_kernels; i++) source_free(&ks->kernels[i]);
    free(ks->kernels);
    free(ks->kernel_of_op);
    memset(ks, 0, sizeof *ks);
}
