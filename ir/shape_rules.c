/* shape_rules.c — every op's shape rule (infer_NAME, declared in op_impl.h): from the operands'
 * dtypes and shapes and the op's attributes, the result's dtype and shape.
 *
 * These rules are where a user's mistakes in a model file surface, so each one validates
 * everything it relies on (dtypes, ranks, axes, sizes, attribute ranges) and reports problems
 * as "OPNAME: what is wrong", formatting both types with type_format when two disagree.
 * Conventions: arithmetic is f32 only; ids are i32; scalars are rank 0. */
#include <stdio.h>
#include <string.h>

#include "cfunc.h"
#include "op_impl.h"

/* ---- helpers ---------------------------------------------------------------------------- */

typedef struct TypeStr {
    char s[160];
} TypeStr;

/* "f32[16,64]" for a value, as a temporary that lives for the enclosing full expression. */
static TypeStr vtype(const Value *v) {
    TypeStr t;
    type_format(v->dtype, &v->shape, t.s, sizeof t.s);
    return t;
}

static TypeStr stype(DType dt, const Shape *s) {
    TypeStr t;
    type_format(dt, s, t.s, sizeof t.s);
    return t;
}

/* "[2,3]" for an int list attribute. */
static TypeStr ints_str(const int64_t *v, int n) {
    TypeStr t;
    size_t pos = 0;
    pos += (size_t)snprintf(t.s + pos, sizeof t.s - pos, "[");
    for (int i = 0; i < n && pos < sizeof t.s; i++)
        pos += (size_t)snprintf(t.s + pos, sizeof t.s - pos, "%s%lld", i ? "," : "",
                                (long long)v[i]);
    if (pos < sizeof t.s) snprintf(t.s + pos, sizeof t.s - pos, "]");
    return t;
}

static const char *nth(int i) {
    static const char *const names[] = {"first", "second", "third", "fourth", "fifth"};
    return i < 5 ? names[i] : "an";
}

/* Common checks for every rule: operand count within the table's range and every operand's
 * shape known. The verifier checks counts too, but rules must never index past inputs. */
static int check_operands(const Op *op, char *err, size_t err_size) {
    const OpInfo *info = op_info(op->kind);
    if (op->n_inputs < info->min_inputs ||
        (info->max_inputs >= 0 && op->n_inputs > info->max_inputs)) {
        if (info->max_inputs < 0)
            return op_fail(op, err, err_size, "expects at least %d operands, got %d",
                           info->min_inputs, op->n_inputs);
        if (info->min_inputs == info->max_inputs)
            return op_fail(op, err, err_size, "expects %d operand%s, got %d", info->min_inputs,
                           info->min_inputs == 1 ? "" : "s", op->n_inputs);
        return op_fail(op, err, err_size, "expects %d to %d operands, got %d", info->min_inputs,
                       info->max_inputs, op->n_inputs);
    }
    for (int i = 0; i < op->n_inputs; i++) {
        const Value *v = op->inputs[i];
        if (!shape_known(&v->shape))
            return op_fail(op, err, err_size, "%s operand %%%s has no inferred shape", nth(i),
                           v->name);
        if (shape_numel(&v->shape) < 0)
            return op_fail(op, err, err_size,
                           "%s operand %s is too large (more than 2^40 elements)", nth(i),
                           vtype(v).s);
    }
    return 0;
}

/* Operand i must have dtype dt. role names it in the message ("input", "weight", ...). */
static int need_dtype(const Op *op, int i, DType dt, const char *role, char *err,
                      size_t err_size) {
    const Value *v = op->inputs[i];
    if (v->dtype == dt) return 0;
    return op_fail(op, err, err_size, "%s must be %s, got %s", role, dtype_name(dt), vtype(v).s);
}

static int need_rank(const Op *op, int i, int rank, const char *role, const char *layout,
                     char *err, size_t err_size) {
    const Value *v = op->inputs[i];
    if (v->shape.rank == rank) return 0;
    return op_fail(op, err, err_size, "%s must have rank %d%s%s, got %s", role, rank,
                   layout ? " " : "", layout ? layout : "", vtype(v).s);
}

/* The result's element count must be representable (the "absurd size" check). */
static int finish(const Op *op, DType dt, const Shape *s, DType *out_dtype, Shape *out_shape,
                  char *err, size_t err_size) {
    if (shape_numel(s) < 0)
        return op_fail(op, err, err_size, "result %s is too large (more than 2^40 elements)",
                       stype(dt, s).s);
    *out_dtype = dt;
    *out_shape = *s;
    return 0;
}

/* Shape from an int-list attribute of sizes that must all be >= 1. */
static int shape_from_sizes(const Op *op, const char *attr, Shape *out, char *err,
                            size_t err_size) {
    int n = 0;
    const int64_t *dims = op_ints(op, attr, &n);
    if (n > IR_MAX_RANK)
        return op_fail(op, err, err_size, "%s %s has rank %d, more than the maximum %d", attr,
                       ints_str(dims, n).s, n, IR_MAX_RANK);
    for (int i = 0; i < n; i++)
        if (dims[i] <= 0)
            return op_fail(op, err, err_size, "%s %s: size %lld at position %d must be > 0", attr,
                           ints_str(dims, n).s, (long long)dims[i], i);
    *out = shape_make(n, dims);
    if (shape_numel(out) < 0)
        return op_fail(op, err, err_size, "%s %s is too large (more than 2^40 elements)", attr,
                       ints_str(dims, n).s);
    return 0;
}

/* A dtype-name attribute that must be f32 or i32 (the dtypes kernels support). */
static int dtype_attr(const Op *op, const char *attr, DType *dt, char *err, size_t err_size) {
    const char *name = op_string(op, attr);
    if (!name || !dtype_from_name(name, dt))
        return op_fail(op, err, err_size, "unknown dtype \"%s\"", name ? name : "");
    if (*dt != DT_F32 && *dt != DT_I32)
        return op_fail(op, err, err_size, "dtype %s is not supported (use f32 or i32)", name);
    return 0;
}

/* ---- sources ---------------------------------------------------------------------------- */

int infer_param(const Op *op, DType *out_dtype, Shape *out_shape, char *err, size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const char *name = op_string(op, "name");
    if (!name || !*name) return op_fail(op, err, err_size, "missing parameter name");
    const Param *p = op->fn ? module_find_param(op->fn->module, name) : NULL;
    if (!p) return op_fail(op, err, err_size, "unknown parameter \"%s\"", name);
    if (!shape_known(&p->shape))
        return op_fail(op, err, err_size, "parameter \"%s\" has no shape", name);
    return finish(op, p->dtype, &p->shape, out_dtype, out_shape, err, err_size);
}

int infer_full(const Op *op, DType *out_dtype, Shape *out_shape, char *err, size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    Shape s;
    DType dt;
    if (shape_from_sizes(op, "shape", &s, err, err_size)) return -1;
    if (dtype_attr(op, "dtype", &dt, err, err_size)) return -1;
    double v = op_float(op, "value");
    if (dt == DT_I32 && !(v == (double)(int64_t)v && v >= -2147483648.0 && v <= 2147483647.0))
        return op_fail(op, err, err_size, "value %g is not an i32", v);
    return finish(op, dt, &s, out_dtype, out_shape, err, err_size);
}

int infer_sinusoid_table(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                         size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    int64_t len = op_int(op, "length"), dim = op_int(op, "dim");
    if (len <= 0) return op_fail(op, err, err_size, "length must be > 0, got %lld", (long long)len);
    if (dim <= 0) return op_fail(op, err, err_size, "dim must be > 0, got %lld", (long long)dim);
    /* sin/cos pairs: like PyTorch's PositionalEncoding, an odd dim has no meaning. */
    if (dim % 2) return op_fail(op, err, err_size, "dim must be even, got %lld", (long long)dim);
    Shape s = shape_of(2, len, dim);
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

int infer_causal_mask(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                      size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    int64_t n = op_int(op, "size");
    if (n <= 0) return op_fail(op, err, err_size, "size must be > 0, got %lld", (long long)n);
    Shape s = shape_of(2, n, n);
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

/* ---- elementwise ------------------------------------------------------------------------ */

/* One f32 operand, result of the same type. */
static int unary_f32(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                     size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "input", err, err_size)) return -1;
    return finish(op, DT_F32, &op->inputs[0]->shape, out_dtype, out_shape, err, err_size);
}

#define UNARY_F32(name)                                                                    \
    int infer_##name(const Op *op, DType *out_dtype, Shape *out_shape, char *err,          \
                     size_t err_size) {                                                    \
        return unary_f32(op, out_dtype, out_shape, err, err_size);                         \
    }
UNARY_F32(relu)
UNARY_F32(neg)
UNARY_F32(exp)
UNARY_F32(log)
UNARY_F32(sqrt)
UNARY_F32(rsqrt)
UNARY_F32(tanh)
UNARY_F32(scale)
UNARY_F32(cos)
UNARY_F32(floor)

int infer_cast(const Op *op, DType *out_dtype, Shape *out_shape, char *err, size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    DType dt;
    if (dtype_attr(op, "dtype", &dt, err, err_size)) return -1;
    DType in = op->inputs[0]->dtype;
    if (in != DT_F32 && in != DT_I32)
        return op_fail(op, err, err_size, "input must be f32 or i32, got %s",
                       vtype(op->inputs[0]).s);
    return finish(op, dt, &op->inputs[0]->shape, out_dtype, out_shape, err, err_size);
}

int infer_dropout(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                  size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "input", err, err_size)) return -1;
    const Value *rng = op->inputs[1];
    Shape two = shape_of(1, (int64_t)2);
    if (rng->dtype != DT_I32 || !shape_equal(&rng->shape, &two))
        return op_fail(op, err, err_size, "rng must be i32[2] (seed, step), got %s", vtype(rng).s);
    double p = op_float(op, "p");
    if (!(p >= 0.0 && p < 1.0)) return op_fail(op, err, err_size, "p must be in [0, 1), got %g", p);
    int64_t stream = op_int(op, "stream");
    if (stream < 0 || stream > 0xffffffffLL)
        return op_fail(op, err, err_size, "stream must be in [0, 2^32), got %lld",
                    (long long)stream);
    return finish(op, DT_F32, &op->inputs[0]->shape, out_dtype, out_shape, err, err_size);
}

int infer_padding_mask(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                       size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_I32, "ids", err, err_size)) return -1;
    return finish(op, DT_F32, &op->inputs[0]->shape, out_dtype, out_shape, err, err_size);
}

static int binary_f32(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                      size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *a = op->inputs[0], *b = op->inputs[1];
    if (a->dtype != DT_F32 || b->dtype != DT_F32)
        return op_fail(op, err, err_size, "operands must be f32, got %s and %s", vtype(a).s,
                       vtype(b).s);
    Shape s;
    if (!shape_broadcast(&a->shape, &b->shape, &s))
        return op_fail(op, err, err_size, "cannot broadcast %s with %s", vtype(a).s, vtype(b).s);
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

#define BINARY_F32(name)                                                                   \
    int infer_##name(const Op *op, DType *out_dtype, Shape *out_shape, char *err,          \
                     size_t err_size) {                                                    \
        return binary_f32(op, out_dtype, out_shape, err, err_size);                        \
    }
BINARY_F32(add)
BINARY_F32(sub)
BINARY_F32(mul)
BINARY_F32(div)
BINARY_F32(minimum)
BINARY_F32(maximum)
BINARY_F32(equal)

int infer_where(const Op *op, DType *out_dtype, Shape *out_shape, char *err, size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *c = op->inputs[0], *a = op->inputs[1], *b = op->inputs[2];
    if (c->dtype != DT_F32 || a->dtype != DT_F32 || b->dtype != DT_F32)
        return op_fail(op, err, err_size, "operands must be f32, got %s, %s and %s", vtype(c).s,
                       vtype(a).s, vtype(b).s);
    Shape ab, s;
    if (!shape_broadcast(&a->shape, &b->shape, &ab) || !shape_broadcast(&c->shape, &ab, &s))
        return op_fail(op, err, err_size, "cannot broadcast %s, %s and %s", vtype(c).s,
                       vtype(a).s, vtype(b).s);
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

/* call: the module's C function fn; the operands bind to its first parameters, the scalar
 * arguments (args) to the rest; every operand f32; the result has the operands' common
 * broadcast shape. */
int infer_call(const Op *op, DType *out_dtype, Shape *out_shape, char *err, size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const char *name = op_string(op, "fn");
    const CFunc *fn = op->fn && op->fn->module ? module_find_cfunc(op->fn->module, name) : NULL;
    if (!fn) return op_fail(op, err, err_size, "no C function '%s' in the module", name ? name : "");
    int n_args = 0;
    op_floats(op, "args", &n_args);
    if (n_args == 0 && fn->n_params != op->n_inputs)
        return op_fail(op, err, err_size, "%s takes %d operand%s, got %d", fn->name, fn->n_params,
                       fn->n_params == 1 ? "" : "s", op->n_inputs);
    if (fn->n_params != op->n_inputs + n_args)
        return op_fail(op, err, err_size, "%s takes %d parameter%s, got %d operand%s and %d scalar "
                       "argument%s", fn->name, fn->n_params, fn->n_params == 1 ? "" : "s",
                       op->n_inputs, op->n_inputs == 1 ? "" : "s", n_args, n_args == 1 ? "" : "s");
    Shape s = op->inputs[0]->shape;
    for (int i = 0; i < op->n_inputs; i++) {
        const Value *v = op->inputs[i];
        if (v->dtype != DT_F32)
            return op_fail(op, err, err_size, "%s operand of %s must be f32, got %s", nth(i),
                           fn->name, vtype(v).s);
        if (!shape_broadcast(&s, &v->shape, &s))
            return op_fail(op, err, err_size, "cannot broadcast %s operand %s with %s", nth(i),
                           vtype(v).s, stype(DT_F32, &s).s);
    }
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

/* ---- layout ----------------------------------------------------------------------------- */

int infer_broadcast(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                    size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *x = op->inputs[0];
    Shape target, s;
    if (shape_from_sizes(op, "shape", &target, err, err_size)) return -1;
    if (!shape_broadcast(&x->shape, &target, &s) || !shape_equal(&s, &target))
        return op_fail(op, err, err_size, "cannot broadcast %s to %s", vtype(x).s,
                       stype(x->dtype, &target).s);
    return finish(op, x->dtype, &target, out_dtype, out_shape, err, err_size);
}

int infer_reshape(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                  size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *x = op->inputs[0];
    int n = 0;
    const int64_t *dims = op_ints(op, "shape", &n);
    if (n > IR_MAX_RANK)
        return op_fail(op, err, err_size, "shape %s has rank %d, more than the maximum %d",
                       ints_str(dims, n).s, n, IR_MAX_RANK);
    int infer_at = -1;
    int64_t known = 1;
    for (int i = 0; i < n; i++) {
        if (dims[i] == -1 && infer_at < 0) {
            infer_at = i;
        } else if (dims[i] == -1) {
            return op_fail(op, err, err_size, "shape %s has more than one -1",
                           ints_str(dims, n).s);
        } else if (dims[i] <= 0) {
            return op_fail(op, err, err_size, "shape %s: size %lld must be > 0 (or one -1)",
                           ints_str(dims, n).s, (long long)dims[i]);
        } else {
            if (known > IR_MAX_NUMEL / dims[i])
                return op_fail(op, err, err_size, "shape %s is too large", ints_str(dims, n).s);
            known *= dims[i];
        }
    }
    int64_t total = shape_numel(&x->shape);
    Shape s = shape_make(n, dims);
    if (infer_at >= 0) {
        if (total % known != 0)
            return op_fail(op, err, err_size, "cannot reshape %s (%lld elements) to %s",
                           vtype(x).s, (long long)total, ints_str(dims, n).s);
        s.dims[infer_at] = total / known;
    } else if (known != total) {
        return op_fail(op, err, err_size, "cannot reshape %s (%lld elements) to %s (%lld elements)",
                       vtype(x).s, (long long)total, stype(x->dtype, &s).s, (long long)known);
    }
    return finish(op, x->dtype, &s, out_dtype, out_shape, err, err_size);
}

/* Normalized permutation of an op's perm attribute; -1 with a message if it is not one. */
static int perm_attr(const Op *op, int rank, int *perm, char *err, size_t err_size) {
    int n = 0;
    const int64_t *p = op_ints(op, "perm", &n);
    if (n != rank)
        return op_fail(op, err, err_size, "perm %s has %d entries but the input %s has rank %d",
                       ints_str(p, n).s, n, vtype(op->inputs[0]).s, rank);
    bool seen[IR_MAX_RANK] = {false};
    for (int i = 0; i < n; i++) {
        int a = axis_normalize(p[i], rank);
        if (a < 0 || seen[a])
            return op_fail(op, err, err_size, "perm %s is not a permutation of the axes of %s",
                           ints_str(p, n).s, vtype(op->inputs[0]).s);
        seen[a] = true;
        perm[i] = a;
    }
    return 0;
}

int infer_transpose(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                    size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *x = op->inputs[0];
    int perm[IR_MAX_RANK];
    if (perm_attr(op, x->shape.rank, perm, err, err_size)) return -1;
    Shape s = x->shape;
    for (int i = 0; i < s.rank; i++) s.dims[i] = x->shape.dims[perm[i]];
    return finish(op, x->dtype, &s, out_dtype, out_shape, err, err_size);
}

/* An axis attribute normalized against rank; -1 with a message if out of range. */
static int axis_attr(const Op *op, const char *attr, const Value *x, int *axis, char *err,
                     size_t err_size) {
    int64_t raw = op_int(op, attr);
    int a = axis_normalize(raw, x->shape.rank);
    if (a < 0)
        return op_fail(op, err, err_size, "%s %lld is out of range for %s", attr, (long long)raw,
                       vtype(x).s);
    *axis = a;
    return 0;
}

int infer_slice(const Op *op, DType *out_dtype, Shape *out_shape, char *err, size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *x = op->inputs[0];
    int axis = 0; /* set by axis_attr on success */
    if (axis_attr(op, "axis", x, &axis, err, err_size)) return -1;
    int64_t start = op_int(op, "start"), end = op_int(op, "end"), step = op_int(op, "step");
    int64_t dim = x->shape.dims[axis];
    if (step < 1) return op_fail(op, err, err_size, "step must be >= 1, got %lld", (long long)step);
    if (!(0 <= start && start <= end && end <= dim))
        return op_fail(op, err, err_size,
                       "[%lld:%lld] along axis %d is out of bounds for %s (need 0 <= start <= "
                       "end <= %lld)",
                       (long long)start, (long long)end, axis, vtype(x).s, (long long)dim);
    Shape s = x->shape;
    /* ceil((end - start) / step), written so a huge step cannot overflow */
    s.dims[axis] = end == start ? 0 : (end - start - 1) / step + 1;
    return finish(op, x->dtype, &s, out_dtype, out_shape, err, err_size);
}

int infer_concat(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                 size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *x0 = op->inputs[0];
    int axis = 0; /* set by axis_attr on success */
    if (axis_attr(op, "axis", x0, &axis, err, err_size)) return -1;
    Shape s = x0->shape;
    for (int i = 1; i < op->n_inputs; i++) {
        const Value *xi = op->inputs[i];
        bool ok = xi->dtype == x0->dtype && xi->shape.rank == x0->shape.rank;
        for (int d = 0; ok && d < s.rank; d++)
            ok = d == axis || xi->shape.dims[d] == x0->shape.dims[d];
        if (!ok)
            return op_fail(op, err, err_size,
                           "operand %d %s does not match %s (all sizes but axis %d must agree)", i,
                           vtype(xi).s, vtype(x0).s, axis);
        s.dims[axis] += xi->shape.dims[axis];
    }
    return finish(op, x0->dtype, &s, out_dtype, out_shape, err, err_size);
}

/* Operands: weight [V, d] f32, ids [...] i32 -> [..., d]. */
int infer_embedding(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                    size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *w = op->inputs[0], *ids = op->inputs[1];
    if (need_dtype(op, 0, DT_F32, "weight", err, err_size)) return -1;
    if (need_rank(op, 0, 2, "weight", "[num, dim]", err, err_size)) return -1;
    if (need_dtype(op, 1, DT_I32, "ids", err, err_size)) return -1;
    if (ids->shape.rank + 1 > IR_MAX_RANK)
        return op_fail(op, err, err_size, "ids %s have too many axes", vtype(ids).s);
    Shape s = ids->shape;
    s.dims[s.rank++] = w->shape.dims[1];
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

/* ---- reductions and normalizations ------------------------------------------------------ */

/* Reduction axes: non-empty, in range, no repeats. reduced[a] set for each. */
static int axes_attr(const Op *op, const Value *x, bool *reduced, char *err, size_t err_size) {
    int n = 0;
    const int64_t *axes = op_ints(op, "axes", &n);
    if (n == 0) return op_fail(op, err, err_size, "axes must not be empty");
    for (int i = 0; i < IR_MAX_RANK; i++) reduced[i] = false;
    for (int i = 0; i < n; i++) {
        int a = axis_normalize(axes[i], x->shape.rank);
        if (a < 0)
            return op_fail(op, err, err_size, "axis %lld is out of range for %s",
                           (long long)axes[i], vtype(x).s);
        if (reduced[a])
            return op_fail(op, err, err_size, "axes %s name axis %d twice", ints_str(axes, n).s, a);
        reduced[a] = true;
    }
    return 0;
}

static int reduce_rule(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                       size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "input", err, err_size)) return -1;
    const Value *x = op->inputs[0];
    bool reduced[IR_MAX_RANK];
    if (axes_attr(op, x, reduced, err, err_size)) return -1;
    bool keep = op_bool(op, "keepdim");
    Shape s = {0, {0}};
    for (int d = 0; d < x->shape.rank; d++) {
        if (!reduced[d])
            s.dims[s.rank++] = x->shape.dims[d];
        else if (keep)
            s.dims[s.rank++] = 1;
    }
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

int infer_sum(const Op *op, DType *out_dtype, Shape *out_shape, char *err, size_t err_size) {
    return reduce_rule(op, out_dtype, out_shape, err, err_size);
}
int infer_mean(const Op *op, DType *out_dtype, Shape *out_shape, char *err, size_t err_size) {
    return reduce_rule(op, out_dtype, out_shape, err, err_size);
}
int infer_max(const Op *op, DType *out_dtype, Shape *out_shape, char *err, size_t err_size) {
    return reduce_rule(op, out_dtype, out_shape, err, err_size);
}

int infer_reduce_to_shape(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                          size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "input", err, err_size)) return -1;
    const Value *x = op->inputs[0];
    Shape target, b;
    if (shape_from_sizes(op, "shape", &target, err, err_size)) return -1;
    /* Valid iff target broadcasts up to x's shape: then summing undoes that broadcast. */
    if (!shape_broadcast(&target, &x->shape, &b) || !shape_equal(&b, &x->shape))
        return op_fail(op, err, err_size, "cannot reduce %s to %s (it does not broadcast back)",
                       vtype(x).s, stype(DT_F32, &target).s);
    return finish(op, DT_F32, &target, out_dtype, out_shape, err, err_size);
}

int infer_softmax(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                  size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "input", err, err_size)) return -1;
    int axis = 0; /* set by axis_attr on success */
    if (axis_attr(op, "axis", op->inputs[0], &axis, err, err_size)) return -1;
    return finish(op, DT_F32, &op->inputs[0]->shape, out_dtype, out_shape, err, err_size);
}

/* Operand i must be f32[n] (a per-feature or per-channel vector). */
static int need_vector(const Op *op, int i, int64_t n, const char *role, const char *what,
                       char *err, size_t err_size) {
    const Value *v = op->inputs[i];
    if (v->dtype == DT_F32 && v->shape.rank == 1 && v->shape.dims[0] == n) return 0;
    Shape want = shape_of(1, n);
    return op_fail(op, err, err_size, "%s must be %s to match the %s of input %s, got %s", role,
                   stype(DT_F32, &want).s, what, vtype(op->inputs[0]).s, vtype(v).s);
}

int infer_layer_norm(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                     size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "input", err, err_size)) return -1;
    const Value *x = op->inputs[0];
    if (x->shape.rank < 1)
        return op_fail(op, err, err_size, "input must have at least one axis, got %s", vtype(x).s);
    int64_t d = x->shape.dims[x->shape.rank - 1];
    if (need_vector(op, 1, d, "weight", "last axis", err, err_size)) return -1;
    if (need_vector(op, 2, d, "bias", "last axis", err, err_size)) return -1;
    double eps = op_float(op, "eps");
    if (!(eps >= 0)) return op_fail(op, err, err_size, "eps must be >= 0, got %g", eps);
    return finish(op, DT_F32, &x->shape, out_dtype, out_shape, err, err_size);
}

int infer_batch_norm(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                     size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "input", err, err_size)) return -1;
    const Value *x = op->inputs[0];
    if (x->shape.rank < 2)
        return op_fail(op, err, err_size, "input must be [N, C, ...] (rank >= 2), got %s",
                       vtype(x).s);
    int64_t c = x->shape.dims[1];
    static const char *const roles[] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 1; i < 5; i++)
        if (need_vector(op, i, c, roles[i - 1], "channels", err, err_size)) return -1;
    double eps = op_float(op, "eps"), momentum = op_float(op, "momentum");
    if (!(eps >= 0)) return op_fail(op, err, err_size, "eps must be >= 0, got %g", eps);
    if (!(momentum >= 0 && momentum <= 1))
        return op_fail(op, err, err_size, "momentum must be in [0, 1], got %g", momentum);
    return finish(op, DT_F32, &x->shape, out_dtype, out_shape, err, err_size);
}

int infer_cross_entropy(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                        size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *logits = op->inputs[0], *target = op->inputs[1];
    if (need_dtype(op, 0, DT_F32, "logits", err, err_size)) return -1;
    if (need_rank(op, 0, 2, "logits", "[N, V]", err, err_size)) return -1;
    if (need_dtype(op, 1, DT_I32, "target", err, err_size)) return -1;
    if (target->shape.rank != 1 || target->shape.dims[0] != logits->shape.dims[0])
        return op_fail(op, err, err_size,
                       "target %s must be i32[%lld], one id per row of logits %s", vtype(target).s,
                       (long long)logits->shape.dims[0], vtype(logits).s);
    Shape s = shape_scalar();
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

/* A two-element int-list attribute with every entry >= min. */
static int pair_attr(const Op *op, const char *attr, int64_t min, int64_t out[2], char *err,
                     size_t err_size) {
    int n = 0;
    const int64_t *v = op_ints(op, attr, &n);
    if (n != 2)
        return op_fail(op, err, err_size, "%s must have 2 entries (h, w), got %s", attr,
                       ints_str(v, n).s);
    for (int i = 0; i < 2; i++) {
        if (v[i] < min)
            return op_fail(op, err, err_size, "%s %s: entries must be >= %lld", attr,
                           ints_str(v, 2).s, (long long)min);
        /* Keeps the size arithmetic below far from overflow. */
        if (v[i] > ((int64_t)1 << 31))
            return op_fail(op, err, err_size, "%s %s is absurdly large", attr, ints_str(v, 2).s);
        out[i] = v[i];
    }
    return 0;
}

int infer_max_pool2d(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                     size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "input", err, err_size)) return -1;
    if (need_rank(op, 0, 4, "input", "[N, C, H, W]", err, err_size)) return -1;
    const Value *x = op->inputs[0];
    int64_t k[2], st[2], pad[2];
    if (pair_attr(op, "kernel", 1, k, err, err_size) ||
        pair_attr(op, "stride", 1, st, err, err_size) ||
        pair_attr(op, "padding", 0, pad, err, err_size))
        return -1;
    Shape s = x->shape;
    for (int i = 0; i < 2; i++) {
        /* As in PyTorch: a window must always overlap the input. */
        if (pad[i] * 2 > k[i])
            return op_fail(op, err, err_size, "padding %lld must be at most half the kernel %lld",
                           (long long)pad[i], (long long)k[i]);
        int64_t span = x->shape.dims[2 + i] + 2 * pad[i] - k[i];
        if (span < 0)
            return op_fail(op, err, err_size, "kernel %lldx%lld is larger than the padded input %s",
                           (long long)k[0], (long long)k[1], vtype(x).s);
        s.dims[2 + i] = span / st[i] + 1;
    }
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

int infer_adaptive_avg_pool2d(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                              size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "input", err, err_size)) return -1;
    if (need_rank(op, 0, 4, "input", "[N, C, H, W]", err, err_size)) return -1;
    int64_t o[2];
    if (pair_attr(op, "output", 1, o, err, err_size)) return -1;
    Shape s = op->inputs[0]->shape;
    s.dims[2] = o[0];
    s.dims[3] = o[1];
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

/* ---- contractions ----------------------------------------------------------------------- */

int infer_matmul(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                 size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *a = op->inputs[0], *b = op->inputs[1];
    if (a->dtype != DT_F32 || b->dtype != DT_F32)
        return op_fail(op, err, err_size, "operands must be f32, got %s and %s", vtype(a).s,
                       vtype(b).s);
    if (a->shape.rank < 2 || b->shape.rank < 2)
        return op_fail(op, err, err_size, "operands must have rank >= 2, got %s and %s",
                       vtype(a).s, vtype(b).s);
    int ra = a->shape.rank, rb = b->shape.rank;
    bool ta = op_bool(op, "transpose_a"), tb = op_bool(op, "transpose_b");
    int64_t m = a->shape.dims[ra - (ta ? 1 : 2)], ka = a->shape.dims[ra - (ta ? 2 : 1)];
    int64_t kb = b->shape.dims[rb - (tb ? 1 : 2)], n = b->shape.dims[rb - (tb ? 2 : 1)];
    if (ka != kb)
        return op_fail(op, err, err_size,
                       "inner sizes differ: %s%s has K=%lld but %s%s has K=%lld", vtype(a).s,
                       ta ? " (transposed)" : "", (long long)ka, vtype(b).s,
                       tb ? " (transposed)" : "", (long long)kb);
    Shape ba = shape_make(ra - 2, a->shape.dims), bb = shape_make(rb - 2, b->shape.dims), s;
    if (!shape_broadcast(&ba, &bb, &s))
        return op_fail(op, err, err_size, "cannot broadcast the batch axes of %s with %s",
                       vtype(a).s, vtype(b).s);
    s.dims[s.rank++] = m;
    s.dims[s.rank++] = n;
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

int infer_linear(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                 size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *x = op->inputs[0], *w = op->inputs[1];
    if (need_dtype(op, 0, DT_F32, "input", err, err_size)) return -1;
    if (x->shape.rank < 1)
        return op_fail(op, err, err_size, "input must have at least one axis, got %s", vtype(x).s);
    if (need_dtype(op, 1, DT_F32, "weight", err, err_size)) return -1;
    if (need_rank(op, 1, 2, "weight", "[out, in]", err, err_size)) return -1;
    int64_t k = x->shape.dims[x->shape.rank - 1];
    if (w->shape.dims[1] != k)
        return op_fail(op, err, err_size, "input %s has %lld features but weight %s expects %lld",
                       vtype(x).s, (long long)k, vtype(w).s, (long long)w->shape.dims[1]);
    int64_t n = w->shape.dims[0];
    if (op->n_inputs == 3) {
        const Value *bias = op->inputs[2];
        if (bias->dtype != DT_F32 || bias->shape.rank != 1 || bias->shape.dims[0] != n)
            return op_fail(op, err, err_size, "bias %s must be f32[%lld] to match weight %s",
                           vtype(bias).s, (long long)n, vtype(w).s);
    }
    Shape s = x->shape;
    s.dims[s.rank - 1] = n;
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

int infer_conv2d(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                 size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *x = op->inputs[0], *w = op->inputs[1];
    if (need_dtype(op, 0, DT_F32, "input", err, err_size)) return -1;
    if (need_rank(op, 0, 4, "input", "[N, C, H, W]", err, err_size)) return -1;
    if (need_dtype(op, 1, DT_F32, "weight", err, err_size)) return -1;
    if (need_rank(op, 1, 4, "weight", "[O, C/groups, kh, kw]", err, err_size)) return -1;
    int64_t st[2], pad[2], dil[2];
    if (pair_attr(op, "stride", 1, st, err, err_size) ||
        pair_attr(op, "padding", 0, pad, err, err_size) ||
        pair_attr(op, "dilation", 1, dil, err, err_size))
        return -1;
    int64_t g = op_int(op, "groups");
    int64_t c = x->shape.dims[1], o = w->shape.dims[0];
    if (g < 1) return op_fail(op, err, err_size, "groups must be >= 1, got %lld", (long long)g);
    if (c % g != 0 || o % g != 0)
        return op_fail(op, err, err_size,
                       "groups=%lld must divide the input channels of %s and the output channels "
                       "of weight %s",
                       (long long)g, vtype(x).s, vtype(w).s);
    if (w->shape.dims[1] != c / g)
        return op_fail(op, err, err_size,
                       "input %s has %lld channels but weight %s expects %lld (x groups=%lld)",
                       vtype(x).s, (long long)c, vtype(w).s, (long long)w->shape.dims[1],
                       (long long)g);
    if (op->n_inputs == 3) {
        const Value *bias = op->inputs[2];
        if (bias->dtype != DT_F32 || bias->shape.rank != 1 || bias->shape.dims[0] != o)
            return op_fail(op, err, err_size, "bias %s must be f32[%lld] to match weight %s",
                           vtype(bias).s, (long long)o, vtype(w).s);
    }
    Shape s = shape_of(4, x->shape.dims[0], o, (int64_t)0, (int64_t)0);
    for (int i = 0; i < 2; i++) {
        /* dilation <= 2^31 (pair_attr) times a kernel size <= 2^40 can overflow int64. */
        int64_t eff;
        if (__builtin_mul_overflow(dil[i], w->shape.dims[2 + i] - 1, &eff) ||
            eff >= IR_MAX_NUMEL)
            return op_fail(op, err, err_size, "kernel of weight %s with dilation %lld is absurdly "
                           "large", vtype(w).s, (long long)dil[i]);
        eff += 1;
        int64_t span = x->shape.dims[2 + i] + 2 * pad[i] - eff;
        if (span < 0)
            return op_fail(op, err, err_size,
                           "output size <= 0: kernel of weight %s (dilation %lld) is larger than "
                           "the padded input %s",
                           vtype(w).s, (long long)dil[i], vtype(x).s);
        s.dims[2 + i] = span / st[i] + 1;
    }
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

/* ---- decoding with a cache -------------------------------------------------------------- */

/* A runtime position: operand i must be an i32 scalar. */
static int need_position(const Op *op, int i, char *err, size_t err_size) {
    const Value *pos = op->inputs[i];
    if (pos->dtype == DT_I32 && pos->shape.rank == 0) return 0;
    return op_fail(op, err, err_size, "pos must be i32[], got %s", vtype(pos).s);
}

/* x [..., size, ...], update [..., n, ...] (same dtype, same sizes off the axis, n <= size),
 * pos i32[] -> x's type. */
int infer_update_slice(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                       size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *x = op->inputs[0], *u = op->inputs[1];
    int axis = 0; /* set by axis_attr on success */
    if (axis_attr(op, "axis", x, &axis, err, err_size)) return -1;
    bool ok = u->dtype == x->dtype && u->shape.rank == x->shape.rank &&
              u->shape.dims[axis] <= x->shape.dims[axis];
    for (int d = 0; ok && d < x->shape.rank; d++) ok = d == axis || u->shape.dims[d] == x->shape.dims[d];
    if (!ok)
        return op_fail(op, err, err_size,
                       "update %s does not fit %s (same dtype and sizes except axis %d, where it "
                       "may be at most %lld)",
                       vtype(u).s, vtype(x).s, axis, (long long)x->shape.dims[axis]);
    if (need_position(op, 2, err, err_size)) return -1;
    return finish(op, x->dtype, &x->shape, out_dtype, out_shape, err, err_size);
}

int infer_position_mask(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                        size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_position(op, 0, err, err_size)) return -1;
    int64_t n = op_int(op, "size");
    if (n <= 0) return op_fail(op, err, err_size, "size must be > 0, got %lld", (long long)n);
    Shape s = shape_of(1, n);
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

/* ---- autodiff helpers ------------------------------------------------------------------- */

/* Operands: grad [..., d] f32, ids [...] i32 -> f32[num, d]. */
int infer_scatter_add(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                      size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *g = op->inputs[0], *ids = op->inputs[1];
    if (need_dtype(op, 0, DT_F32, "grad", err, err_size)) return -1;
    if (need_dtype(op, 1, DT_I32, "ids", err, err_size)) return -1;
    bool ok = g->shape.rank == ids->shape.rank + 1;
    for (int d = 0; ok && d < ids->shape.rank; d++) ok = g->shape.dims[d] == ids->shape.dims[d];
    if (!ok)
        return op_fail(op, err, err_size, "grad %s must be the ids' shape %s plus one axis",
                       vtype(g).s, vtype(ids).s);
    int64_t num = op_int(op, "num");
    if (num <= 0) return op_fail(op, err, err_size, "num must be > 0, got %lld", (long long)num);
    Shape s = shape_of(2, num, g->shape.dims[g->shape.rank - 1]);
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

/* Operands dy and y (relu's result): the same f32 shape. */
int infer_relu_grad(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                    size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *dy = op->inputs[0], *y = op->inputs[1];
    if (dy->dtype != DT_F32 || y->dtype != DT_F32 || !shape_equal(&dy->shape, &y->shape))
        return op_fail(op, err, err_size, "dy %s and y %s must be f32 of the same shape",
                       vtype(dy).s, vtype(y).s);
    return finish(op, DT_F32, &y->shape, out_dtype, out_shape, err, err_size);
}

/* dy is what slice [start:end:step] of an axis of length size produced. */
int infer_slice_grad(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                     size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "dy", err, err_size)) return -1;
    const Value *dy = op->inputs[0];
    int axis = 0; /* set by axis_attr on success */
    if (axis_attr(op, "axis", dy, &axis, err, err_size)) return -1;
    int64_t start = op_int(op, "start"), end = op_int(op, "end"), step = op_int(op, "step");
    int64_t size = op_int(op, "size");
    if (step < 1) return op_fail(op, err, err_size, "step must be >= 1, got %lld", (long long)step);
    if (size < 1 || size > IR_MAX_NUMEL)
        return op_fail(op, err, err_size, "size must be > 0, got %lld", (long long)size);
    if (!(0 <= start && start <= end && end <= size))
        return op_fail(op, err, err_size, "[%lld:%lld] is out of bounds for size %lld",
                       (long long)start, (long long)end, (long long)size);
    int64_t count = end == start ? 0 : (end - start - 1) / step + 1;
    if (dy->shape.dims[axis] != count)
        return op_fail(op, err, err_size,
                       "dy %s must have %lld entries along axis %d for [%lld:%lld:%lld]",
                       vtype(dy).s, (long long)count, axis, (long long)start, (long long)end,
                       (long long)step);
    Shape s = dy->shape;
    s.dims[axis] = size;
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

/* dy must be max_pool2d's result for input x with the same attributes. */
int infer_max_pool2d_grad(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                          size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "dy", err, err_size)) return -1;
    if (need_dtype(op, 1, DT_F32, "x", err, err_size)) return -1;
    if (need_rank(op, 1, 4, "x", "[N, C, H, W]", err, err_size)) return -1;
    /* The forward rule validates the attributes and computes the pooled shape (the two
     * schemas list kernel, stride, padding in the same order, so attrs carry over). */
    Op fwd = *op;
    fwd.kind = OP_MAX_POOL2D;
    fwd.inputs = op->inputs + 1;
    fwd.n_inputs = 1;
    DType dt;
    Shape pooled;
    char msg[512];
    if (infer_max_pool2d(&fwd, &dt, &pooled, msg, sizeof msg))
        return op_fail(op, err, err_size, "as the forward %s", msg);
    if (!shape_equal(&pooled, &op->inputs[0]->shape))
        return op_fail(op, err, err_size, "dy %s must be the pooled shape %s of x %s",
                       vtype(op->inputs[0]).s, stype(DT_F32, &pooled).s, vtype(op->inputs[1]).s);
    return finish(op, DT_F32, &op->inputs[1]->shape, out_dtype, out_shape, err, err_size);
}

int infer_adaptive_avg_pool2d_grad(const Op *op, DType *out_dtype, Shape *out_shape,
                                   char *err, size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "dy", err, err_size)) return -1;
    if (need_rank(op, 0, 4, "dy", "[N, C, Ho, Wo]", err, err_size)) return -1;
    int64_t in[2];
    if (pair_attr(op, "input_size", 1, in, err, err_size)) return -1;
    Shape s = op->inputs[0]->shape;
    s.dims[2] = in[0];
    s.dims[3] = in[1];
    return finish(op, DT_F32, &s, out_dtype, out_shape, err, err_size);
}

/* Checks a conv2d backward op against the forward conv2d it undoes: x and w are the forward
 * operands' types (one of them rebuilt from attributes), dy must be the forward result. */
static int check_conv_backward(const Op *op, const Value *x, const Value *w, const Value *dy,
                               Shape *out, char *err, size_t err_size) {
    /* conv2d's schema is a prefix of both backward schemas, so attrs carry over. */
    Op fwd = *op;
    const Value *ins[2] = {x, w};
    fwd.kind = OP_CONV2D;
    fwd.inputs = (Value **)ins;
    fwd.n_inputs = 2;
    DType dt;
    Shape y;
    char msg[512];
    if (infer_conv2d(&fwd, &dt, &y, msg, sizeof msg))
        return op_fail(op, err, err_size, "as the forward %s", msg);
    if (!shape_equal(&y, &dy->shape))
        return op_fail(op, err, err_size, "dy %s must be the forward result %s of input %s and "
                       "weight %s", vtype(dy).s, stype(DT_F32, &y).s, vtype(x).s, vtype(w).s);
    *out = y;
    return 0;
}

/* A stand-in value of the given shape, for checking against a forward shape rule. */
static Value shaped(Shape s) {
    Value v;
    memset(&v, 0, sizeof v);
    v.name = "?";
    v.dtype = DT_F32;
    v.shape = s;
    return v;
}

int infer_conv2d_grad_input(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                            size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "dy", err, err_size)) return -1;
    if (need_rank(op, 0, 4, "dy", "[N, O, Ho, Wo]", err, err_size)) return -1;
    if (need_dtype(op, 1, DT_F32, "weight", err, err_size)) return -1;
    if (need_rank(op, 1, 4, "weight", "[O, C/groups, kh, kw]", err, err_size)) return -1;
    const Value *dy = op->inputs[0], *w = op->inputs[1];
    int64_t in[2];
    if (pair_attr(op, "input_size", 1, in, err, err_size)) return -1;
    int64_t g = op_int(op, "groups");
    if (g < 1 || g > ((int64_t)1 << 31))
        return op_fail(op, err, err_size, "groups must be >= 1, got %lld", (long long)g);
    int64_t channels;
    if (__builtin_mul_overflow(w->shape.dims[1], g, &channels) || channels > IR_MAX_NUMEL)
        return op_fail(op, err, err_size, "input channels %lld x groups=%lld is absurdly large",
                       (long long)w->shape.dims[1], (long long)g);
    Value x = shaped(shape_of(4, dy->shape.dims[0], channels, in[0], in[1]));
    Shape y;
    if (check_conv_backward(op, &x, w, dy, &y, err, err_size)) return -1;
    return finish(op, DT_F32, &x.shape, out_dtype, out_shape, err, err_size);
}

int infer_conv2d_grad_weight(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                             size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    if (need_dtype(op, 0, DT_F32, "dy", err, err_size)) return -1;
    if (need_rank(op, 0, 4, "dy", "[N, O, Ho, Wo]", err, err_size)) return -1;
    if (need_dtype(op, 1, DT_F32, "x", err, err_size)) return -1;
    if (need_rank(op, 1, 4, "x", "[N, C, H, W]", err, err_size)) return -1;
    const Value *dy = op->inputs[0], *x = op->inputs[1];
    int64_t k[2];
    if (pair_attr(op, "kernel", 1, k, err, err_size)) return -1;
    int64_t g = op_int(op, "groups");
    if (g < 1 || x->shape.dims[1] % g != 0)
        return op_fail(op, err, err_size, "groups=%lld must divide the channels of x %s",
                       (long long)g, vtype(x).s);
    Value w = shaped(shape_of(4, dy->shape.dims[1], x->shape.dims[1] / g, k[0], k[1]));
    Shape y;
    if (check_conv_backward(op, x, &w, dy, &y, err, err_size)) return -1;
    return finish(op, DT_F32, &w.shape, out_dtype, out_shape, err, err_size);
}

/* Operands dy f32[], logits f32[N,V], target i32[N]: as cross_entropy's, plus the scalar. */
int infer_cross_entropy_grad(const Op *op, DType *out_dtype, Shape *out_shape, char *err,
                             size_t err_size) {
    if (check_operands(op, err, err_size)) return -1;
    const Value *dy = op->inputs[0];
    if (dy->dtype != DT_F32 || dy->shape.rank != 0)
        return op_fail(op, err, err_size, "dy must be f32[] (the loss is a scalar), got %s",
                       vtype(dy).s);
    Op fwd = *op; /* same schema (ignore_index) as cross_entropy */
    fwd.kind = OP_CROSS_ENTROPY;
    fwd.inputs = op->inputs + 1;
    fwd.n_inputs = 2;
    DType dt;
    Shape loss;
    char msg[512];
    if (infer_cross_entropy(&fwd, &dt, &loss, msg, sizeof msg))
        return op_fail(op, err, err_size, "as the forward %s", msg);
    return finish(op, DT_F32, &op->inputs[1]->shape, out_dtype, out_shape, err, err_size);
}
