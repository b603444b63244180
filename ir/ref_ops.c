/* ref_ops.c — every op's float64 reference evaluator (ref_NAME, declared in op_impl.h).
 *
 * These are the oracle for every generated kernel, so they are written to be obviously
 * right: plain loops over row-major indices, no blocking, no clever identities. Semantics
 * follow docs/ir.md and PyTorch. Shapes and attributes were validated by the shape rules;
 * only data-dependent problems (ids out of range, casts out of range) are reported here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfunc.h"
#include "op_impl.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static int64_t numel(const RefTensor *t) { return shape_numel(&t->shape); }

/* Product of dims [from, to). */
static int64_t dims_product(const Shape *s, int from, int to) {
    int64_t p = 1;
    for (int d = from; d < to; d++) p *= s->dims[d];
    return p;
}

/* Splits a row-major flat index into per-axis indices. */
static void unravel(const Shape *s, int64_t flat, int64_t *idx) {
    for (int d = s->rank - 1; d >= 0; d--) {
        idx[d] = flat % s->dims[d];
        flat /= s->dims[d];
    }
}

static int64_t ravel(const Shape *s, const int64_t *idx) {
    int64_t flat = 0;
    for (int d = 0; d < s->rank; d++) flat = flat * s->dims[d] + idx[d];
    return flat;
}

/* Flat index into `in` of the element that numpy broadcasting reads for output element
 * `flat` of shape `out`: axes align on the right, size-1 axes of `in` are read at 0. */
static int64_t broadcast_source(const Shape *out, int64_t flat, const Shape *in) {
    int64_t oidx[IR_MAX_RANK], iidx[IR_MAX_RANK];
    unravel(out, flat, oidx);
    int off = out->rank - in->rank;
    for (int d = 0; d < in->rank; d++) iidx[d] = in->dims[d] == 1 ? 0 : oidx[d + off];
    return ravel(in, iidx);
}

/* Reads the normalized axis attribute `name` against rank. */
static int axis_of(const Op *op, const char *name, int rank) {
    return axis_normalize(op_int(op, name), rank);
}

/* ---- sources ---------------------------------------------------------------------------- */

int ref_param(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
              size_t err_size) {
    /* Parameter values live outside the IR: ref_run reads them through its lookup. */
    return op_fail(op, err, err_size,
                   "parameter \"%s\" is supplied by ref_run's lookup, not evaluated",
                   op_string(op, "name"));
}

int ref_full(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
             size_t err_size) {
    double v = op_float(op, "value");
    for (int64_t i = 0; i < numel(out); i++) out->data[i] = v;
    return 0;
}

int ref_sinusoid_table(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                       size_t err_size) {
    int64_t len = out->shape.dims[0], dim = out->shape.dims[1];
    for (int64_t p = 0; p < len; p++) {
        for (int64_t j = 0; j < dim; j++) {
            int64_t two_i = j - j % 2; /* the even index 2i shared by a sin/cos pair */
            double freq = exp(-log(10000.0) * (double)two_i / (double)dim);
            double angle = (double)p * freq;
            out->data[p * dim + j] = j % 2 == 0 ? sin(angle) : cos(angle);
        }
    }
    return 0;
}

int ref_causal_mask(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                    size_t err_size) {
    int64_t n = out->shape.dims[0];
    for (int64_t q = 0; q < n; q++)
        for (int64_t k = 0; k < n; k++) out->data[q * n + k] = k <= q ? 0.0 : -INFINITY;
    return 0;
}

/* ---- elementwise ------------------------------------------------------------------------ */

#define REF_UNARY(name, expr)                                                              \
    int ref_##name(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,   \
                   size_t err_size) {                                                      \
        for (int64_t i = 0; i < numel(out); i++) {                                         \
            double x = ins[0]->data[i];                                                    \
            out->data[i] = (expr);                                                         \
        }                                                                                  \
        return 0;                                                                          \
    }
REF_UNARY(relu, x < 0 ? 0.0 : x) /* NaN stays NaN, as torch.relu */
REF_UNARY(neg, -x)
REF_UNARY(exp, exp(x))
REF_UNARY(log, log(x))
REF_UNARY(sqrt, sqrt(x))
REF_UNARY(rsqrt, 1.0 / sqrt(x))
REF_UNARY(tanh, tanh(x))
REF_UNARY(scale, x *op_float(op, "factor"))
REF_UNARY(cos, cos(x))
REF_UNARY(floor, floor(x))

int ref_cast(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
             size_t err_size) {
    for (int64_t i = 0; i < numel(out); i++) {
        double x = ins[0]->data[i];
        if (out->dtype == DT_I32) {
            /* toward zero, like C's float -> int conversion; NaN, infinities and values outside
             * i32 become INT32_MIN, which is what PyTorch's CPU cast gives (x86 cvttss2si) */
            double t = trunc(x);
            x = t >= -2147483648.0 && t <= 2147483647.0 ? t : -2147483648.0;
        }
        out->data[i] = x;
    }
    return 0;
}

int ref_dropout(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                size_t err_size) {
    double p = op_float(op, "p");
    uint32_t stream = (uint32_t)op_int(op, "stream");
    /* rng holds i32 values; the generator sees their 32-bit patterns. */
    uint32_t seed = (uint32_t)(int32_t)ins[1]->data[0];
    uint32_t step = (uint32_t)(int32_t)ins[1]->data[1];
    double keep_scale = 1.0 / (1.0 - p);
    for (int64_t i = 0; i < numel(out); i++) {
        bool keep = dropout_keep(seed, step, stream, (uint64_t)i, p);
        /* x times 0 or the keep scale, as PyTorch multiplies by its mask: a dropped NaN stays NaN */
        out->data[i] = ins[0]->data[i] * (keep ? keep_scale : 0.0);
    }
    return 0;
}

int ref_padding_mask(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                     size_t err_size) {
    double pad = (double)op_int(op, "pad");
    for (int64_t i = 0; i < numel(out); i++)
        out->data[i] = ins[0]->data[i] == pad ? -INFINITY : 0.0;
    return 0;
}

#define REF_BINARY(name, expr)                                                             \
    int ref_##name(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,   \
                   size_t err_size) {                                                      \
        for (int64_t i = 0; i < numel(out); i++) {                                         \
            double a = ins[0]->data[broadcast_source(&out->shape, i, &ins[0]->shape)];     \
            double b = ins[1]->data[broadcast_source(&out->shape, i, &ins[1]->shape)];     \
            out->data[i] = (expr);                                                         \
        }                                                                                  \
        return 0;                                                                          \
    }
REF_BINARY(add, a + b)
REF_BINARY(sub, a - b)
REF_BINARY(mul, a *b)
REF_BINARY(div, a / b)
/* NaN propagates from either side, as torch.minimum/maximum do. */
REF_BINARY(minimum, (isnan(a) || isnan(b)) ? NAN : (a < b ? a : b))
REF_BINARY(maximum, (isnan(a) || isnan(b)) ? NAN : (a > b ? a : b))

int ref_where(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
              size_t err_size) {
    for (int64_t i = 0; i < numel(out); i++) {
        double c = ins[0]->data[broadcast_source(&out->shape, i, &ins[0]->shape)];
        int side = c != 0 ? 1 : 2;
        out->data[i] = ins[side]->data[broadcast_source(&out->shape, i, &ins[side]->shape)];
    }
    return 0;
}
REF_BINARY(equal, a == b ? 1.0 : 0.0)

/* The C function's expression tree in float64, once per element: the tensor operands bind to
 * the first parameters, the scalar arguments (args) to the rest. */
int ref_call(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
             size_t err_size) {
    const CFunc *fn = module_find_cfunc(op->fn->module, op_string(op, "fn"));
    int n_args = 0;
    const double *scalars = op_floats(op, "args", &n_args);
    if (!fn || fn->n_params != op->n_inputs + n_args || fn->n_params > 64)
        return op_fail(op, err, err_size, "no C function '%s' of %d parameters",
                       op_string(op, "fn"), op->n_inputs + n_args);
    double *vals = malloc(sizeof *vals * (size_t)fn->n_nodes);
    if (!vals) return op_fail(op, err, err_size, "out of memory");
    double args[64];
    for (int k = 0; k < n_args; k++) args[op->n_inputs + k] = scalars[k];
    for (int64_t i = 0; i < numel(out); i++) {
        for (int k = 0; k < op->n_inputs; k++)
            args[k] = ins[k]->data[broadcast_source(&out->shape, i, &ins[k]->shape)];
        out->data[i] = cfunc_eval(fn->nodes, fn->n_nodes, args, vals);
    }
    free(vals);
    return 0;
}

/* ---- layout ----------------------------------------------------------------------------- */

int ref_broadcast(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                  size_t err_size) {
    for (int64_t i = 0; i < numel(out); i++)
        out->data[i] = ins[0]->data[broadcast_source(&out->shape, i, &ins[0]->shape)];
    return 0;
}

int ref_reshape(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                size_t err_size) {
    for (int64_t i = 0; i < numel(out); i++) out->data[i] = ins[0]->data[i];
    return 0;
}

int ref_transpose(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                  size_t err_size) {
    int n = 0;
    const int64_t *perm = op_ints(op, "perm", &n);
    int rank = ins[0]->shape.rank;
    int64_t oidx[IR_MAX_RANK], iidx[IR_MAX_RANK];
    for (int64_t i = 0; i < numel(out); i++) {
        unravel(&out->shape, i, oidx);
        /* out axis d is in axis perm[d] */
        for (int d = 0; d < rank; d++) iidx[axis_normalize(perm[d], rank)] = oidx[d];
        out->data[i] = ins[0]->data[ravel(&ins[0]->shape, iidx)];
    }
    return 0;
}

int ref_slice(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
              size_t err_size) {
    int axis = axis_of(op, "axis", ins[0]->shape.rank);
    int64_t start = op_int(op, "start"), step = op_int(op, "step");
    int64_t idx[IR_MAX_RANK];
    for (int64_t i = 0; i < numel(out); i++) {
        unravel(&out->shape, i, idx);
        idx[axis] = start + idx[axis] * step;
        out->data[i] = ins[0]->data[ravel(&ins[0]->shape, idx)];
    }
    return 0;
}

int ref_concat(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
               size_t err_size) {
    int axis = axis_of(op, "axis", out->shape.rank);
    int64_t idx[IR_MAX_RANK];
    for (int64_t i = 0; i < numel(out); i++) {
        unravel(&out->shape, i, idx);
        /* Find the operand that holds this position along the axis. */
        int k = 0;
        while (idx[axis] >= ins[k]->shape.dims[axis]) idx[axis] -= ins[k++]->shape.dims[axis];
        out->data[i] = ins[k]->data[ravel(&ins[k]->shape, idx)];
    }
    return 0;
}

/* Checks an id tensor against [0, num); names the op and the offending id. */
static int check_ids(const Op *op, const RefTensor *ids, int64_t num, char *err,
                     size_t err_size) {
    for (int64_t i = 0; i < numel(ids); i++) {
        double id = ids->data[i];
        if (!(id >= 0 && id < (double)num))
            return op_fail(op, err, err_size, "id %g at position %lld is out of range [0, %lld)",
                           id, (long long)i, (long long)num);
    }
    return 0;
}

int ref_embedding(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                  size_t err_size) {
    const RefTensor *w = ins[0], *ids = ins[1];
    int64_t num = w->shape.dims[0], dim = w->shape.dims[1];
    if (check_ids(op, ids, num, err, err_size)) return -1;
    for (int64_t i = 0; i < numel(ids); i++) {
        int64_t row = (int64_t)ids->data[i];
        for (int64_t j = 0; j < dim; j++) out->data[i * dim + j] = w->data[row * dim + j];
    }
    return 0;
}

/* ---- reductions and normalizations ------------------------------------------------------ */

typedef enum { RED_SUM, RED_MEAN, RED_MAX } Reduction;

static int reduce(const Op *op, const RefTensor *x, RefTensor *out, Reduction how) {
    int n = 0;
    const int64_t *axes = op_ints(op, "axes", &n);
    int rank = x->shape.rank;
    bool reduced[IR_MAX_RANK] = {false};
    for (int i = 0; i < n; i++) reduced[axis_normalize(axes[i], rank)] = true;
    /* The output viewed with the input's rank (reduced axes of size 1) has the same flat
     * layout whether or not keepdim is set. */
    Shape kept = x->shape;
    int64_t count = 1;
    for (int d = 0; d < rank; d++)
        if (reduced[d]) count *= kept.dims[d], kept.dims[d] = 1;
    for (int64_t o = 0; o < numel(out); o++) out->data[o] = how == RED_MAX ? -INFINITY : 0.0;
    int64_t idx[IR_MAX_RANK];
    for (int64_t i = 0; i < numel(x); i++) {
        unravel(&x->shape, i, idx);
        for (int d = 0; d < rank; d++)
            if (reduced[d]) idx[d] = 0;
        int64_t o = ravel(&kept, idx);
        double v = x->data[i];
        if (how == RED_MAX)
            out->data[o] = (v > out->data[o] || isnan(v)) ? v : out->data[o];
        else
            out->data[o] += v;
    }
    if (how == RED_MEAN)
        for (int64_t o = 0; o < numel(out); o++) out->data[o] /= (double)count;
    return 0;
}

int ref_sum(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
            size_t err_size) {
    return reduce(op, ins[0], out, RED_SUM);
}
int ref_mean(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
             size_t err_size) {
    return reduce(op, ins[0], out, RED_MEAN);
}
int ref_max(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
            size_t err_size) {
    return reduce(op, ins[0], out, RED_MAX);
}

int ref_reduce_to_shape(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                        size_t err_size) {
    const RefTensor *x = ins[0];
    for (int64_t o = 0; o < numel(out); o++) out->data[o] = 0.0;
    /* Each input element came from the output element that broadcasting would have read. */
    for (int64_t i = 0; i < numel(x); i++)
        out->data[broadcast_source(&x->shape, i, &out->shape)] += x->data[i];
    return 0;
}

int ref_softmax(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                size_t err_size) {
    const Shape *s = &ins[0]->shape;
    int axis = axis_of(op, "axis", s->rank);
    int64_t outer = dims_product(s, 0, axis), n = s->dims[axis];
    int64_t inner = dims_product(s, axis + 1, s->rank);
    const double *x = ins[0]->data;
    for (int64_t a = 0; a < outer; a++) {
        for (int64_t c = 0; c < inner; c++) {
            int64_t base = a * n * inner + c;
            double mx = -INFINITY, sum = 0.0;
            for (int64_t j = 0; j < n; j++) mx = fmax(mx, x[base + j * inner]);
            for (int64_t j = 0; j < n; j++) sum += exp(x[base + j * inner] - mx);
            for (int64_t j = 0; j < n; j++)
                out->data[base + j * inner] = exp(x[base + j * inner] - mx) / sum;
        }
    }
    return 0;
}

int ref_layer_norm(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                   size_t err_size) {
    const RefTensor *x = ins[0];
    const double *w = ins[1]->data, *b = ins[2]->data;
    double eps = op_float(op, "eps");
    int64_t d = x->shape.dims[x->shape.rank - 1], rows = numel(x) / d;
    for (int64_t r = 0; r < rows; r++) {
        const double *row = x->data + r * d;
        double mean = 0.0, var = 0.0;
        for (int64_t j = 0; j < d; j++) mean += row[j];
        mean /= (double)d;
        for (int64_t j = 0; j < d; j++) var += (row[j] - mean) * (row[j] - mean);
        var /= (double)d; /* biased, as in PyTorch */
        double inv = 1.0 / sqrt(var + eps);
        for (int64_t j = 0; j < d; j++) out->data[r * d + j] = (row[j] - mean) * inv * w[j] + b[j];
    }
    return 0;
}

int ref_batch_norm(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                   size_t err_size) {
    const RefTensor *x = ins[0];
    const double *w = ins[1]->data, *b = ins[2]->data;
    const double *rmean = ins[3]->data, *rvar = ins[4]->data;
    bool training = op_bool(op, "training");
    double eps = op_float(op, "eps");
    int64_t n = x->shape.dims[0], c = x->shape.dims[1];
    int64_t inner = dims_product(&x->shape, 2, x->shape.rank);
    for (int64_t ch = 0; ch < c; ch++) {
        double mean = rmean[ch], var = rvar[ch];
        if (training) {
            int64_t count = n * inner;
            mean = 0.0;
            var = 0.0;
            for (int64_t i = 0; i < n; i++)
                for (int64_t k = 0; k < inner; k++) mean += x->data[(i * c + ch) * inner + k];
            mean /= (double)count;
            for (int64_t i = 0; i < n; i++)
                for (int64_t k = 0; k < inner; k++) {
                    double dv = x->data[(i * c + ch) * inner + k] - mean;
                    var += dv * dv;
                }
            var /= (double)count; /* biased: what PyTorch normalizes with */
        }
        double inv = 1.0 / sqrt(var + eps);
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < inner; k++) {
                int64_t at = (i * c + ch) * inner + k;
                out->data[at] = (x->data[at] - mean) * inv * w[ch] + b[ch];
            }
    }
    return 0;
}

int ref_cross_entropy(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                      size_t err_size) {
    const RefTensor *logits = ins[0], *target = ins[1];
    int64_t n = logits->shape.dims[0], v = logits->shape.dims[1];
    double ignore = (double)op_int(op, "ignore_index"), total = 0.0;
    int64_t count = 0;
    for (int64_t r = 0; r < n; r++) {
        double t = target->data[r];
        if (t == ignore) continue;
        if (!(t >= 0 && t < (double)v))
            return op_fail(op, err, err_size, "target id %g at row %lld is out of range [0, %lld)",
                        t, (long long)r, (long long)v);
        const double *row = logits->data + r * v;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j < v; j++) mx = fmax(mx, row[j]);
        for (int64_t j = 0; j < v; j++) sum += exp(row[j] - mx);
        total += mx + log(sum) - row[(int64_t)t]; /* -log_softmax at the target */
        count++;
    }
    out->data[0] = count ? total / (double)count : NAN; /* NaN when all ignored, as PyTorch */
    return 0;
}

int ref_max_pool2d(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                   size_t err_size) {
    int n_k = 0, n_s = 0, n_p = 0;
    const int64_t *k = op_ints(op, "kernel", &n_k), *st = op_ints(op, "stride", &n_s);
    const int64_t *pad = op_ints(op, "padding", &n_p);
    const Shape *is = &ins[0]->shape;
    int64_t h = is->dims[2], w = is->dims[3];
    int64_t ho = out->shape.dims[2], wo = out->shape.dims[3];
    int64_t planes = is->dims[0] * is->dims[1];
    for (int64_t pl = 0; pl < planes; pl++) {
        const double *x = ins[0]->data + pl * h * w;
        for (int64_t oy = 0; oy < ho; oy++)
            for (int64_t ox = 0; ox < wo; ox++) {
                double m = -INFINITY; /* padding counts as -inf: it never wins */
                for (int64_t ky = 0; ky < k[0]; ky++)
                    for (int64_t kx = 0; kx < k[1]; kx++) {
                        int64_t y = oy * st[0] - pad[0] + ky, xx = ox * st[1] - pad[1] + kx;
                        if (y < 0 || y >= h || xx < 0 || xx >= w) continue;
                        double v = x[y * w + xx];
                        if (v > m || isnan(v)) m = v;
                    }
                out->data[(pl * ho + oy) * wo + ox] = m;
            }
    }
    return 0;
}

int ref_adaptive_avg_pool2d(const Op *op, const RefTensor *const *ins, RefTensor *out,
                            char *err, size_t err_size) {
    const Shape *is = &ins[0]->shape;
    int64_t h = is->dims[2], w = is->dims[3];
    int64_t ho = out->shape.dims[2], wo = out->shape.dims[3];
    int64_t planes = is->dims[0] * is->dims[1];
    for (int64_t pl = 0; pl < planes; pl++) {
        const double *x = ins[0]->data + pl * h * w;
        for (int64_t oy = 0; oy < ho; oy++) {
            /* PyTorch's bins: start = floor(i*in/out), end = ceil((i+1)*in/out). */
            int64_t y0 = oy * h / ho, y1 = ((oy + 1) * h + ho - 1) / ho;
            for (int64_t ox = 0; ox < wo; ox++) {
                int64_t x0 = ox * w / wo, x1 = ((ox + 1) * w + wo - 1) / wo;
                double sum = 0.0;
                for (int64_t y = y0; y < y1; y++)
                    for (int64_t xx = x0; xx < x1; xx++) sum += x[y * w + xx];
                out->data[(pl * ho + oy) * wo + ox] = sum / (double)((y1 - y0) * (x1 - x0));
            }
        }
    }
    return 0;
}

/* ---- contractions ----------------------------------------------------------------------- */

int ref_matmul(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
               size_t err_size) {
    const RefTensor *a = ins[0], *b = ins[1];
    bool ta = op_bool(op, "transpose_a"), tb = op_bool(op, "transpose_b");
    int ra = a->shape.rank, rb = b->shape.rank, ro = out->shape.rank;
    int64_t m = out->shape.dims[ro - 2], n = out->shape.dims[ro - 1];
    int64_t k = a->shape.dims[ra - (ta ? 2 : 1)];
    /* Batch axes alone, to find which a and b matrices each output matrix uses. */
    Shape bo = shape_make(ro - 2, out->shape.dims), ba = shape_make(ra - 2, a->shape.dims);
    Shape bb = shape_make(rb - 2, b->shape.dims);
    int64_t a_rows = a->shape.dims[ra - 2], a_cols = a->shape.dims[ra - 1];
    int64_t b_rows = b->shape.dims[rb - 2], b_cols = b->shape.dims[rb - 1];
    for (int64_t batch = 0; batch < shape_numel(&bo); batch++) {
        const double *am = a->data + broadcast_source(&bo, batch, &ba) * a_rows * a_cols;
        const double *bm = b->data + broadcast_source(&bo, batch, &bb) * b_rows * b_cols;
        double *om = out->data + batch * m * n;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = 0.0;
                for (int64_t p = 0; p < k; p++) {
                    double av = ta ? am[p * a_cols + i] : am[i * a_cols + p];
                    double bv = tb ? bm[j * b_cols + p] : bm[p * b_cols + j];
                    acc += av * bv;
                }
                om[i * n + j] = acc;
            }
    }
    return 0;
}

int ref_linear(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
               size_t err_size) {
    const RefTensor *x = ins[0], *w = ins[1];
    const double *bias = op->n_inputs == 3 ? ins[2]->data : NULL;
    int64_t n = w->shape.dims[0], k = w->shape.dims[1], rows = numel(x) / k;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n; j++) {
            double acc = bias ? bias[j] : 0.0;
            for (int64_t p = 0; p < k; p++) acc += x->data[r * k + p] * w->data[j * k + p];
            out->data[r * n + j] = acc;
        }
    return 0;
}

int ref_conv2d(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
               size_t err_size) {
    int nn = 0;
    const int64_t *st = op_ints(op, "stride", &nn), *pad = op_ints(op, "padding", &nn);
    const int64_t *dil = op_ints(op, "dilation", &nn);
    int64_t groups = op_int(op, "groups");
    const RefTensor *x = ins[0], *w = ins[1];
    const double *bias = op->n_inputs == 3 ? ins[2]->data : NULL;
    int64_t n = x->shape.dims[0], c = x->shape.dims[1], h = x->shape.dims[2],
            wd = x->shape.dims[3];
    int64_t o = w->shape.dims[0], cg = w->shape.dims[1], kh = w->shape.dims[2],
            kw = w->shape.dims[3];
    int64_t ho = out->shape.dims[2], wo = out->shape.dims[3], og = o / groups;
    for (int64_t b = 0; b < n; b++)
        for (int64_t oc = 0; oc < o; oc++) {
            int64_t g = oc / og; /* this output channel reads input channels of group g */
            for (int64_t oy = 0; oy < ho; oy++)
                for (int64_t ox = 0; ox < wo; ox++) {
                    double acc = bias ? bias[oc] : 0.0;
                    for (int64_t ic = 0; ic < cg; ic++)
                        for (int64_t ky = 0; ky < kh; ky++)
                            for (int64_t kx = 0; kx < kw; kx++) {
                                int64_t y = oy * st[0] - pad[0] + ky * dil[0];
                                int64_t xx = ox * st[1] - pad[1] + kx * dil[1];
                                /* padding is zeros that multiply the weight, as in
                                 * im2col: a non-finite weight reaches the border too */
                                bool inside = y >= 0 && y < h && xx >= 0 && xx < wd;
                                int64_t cin = g * cg + ic;
                                double xv = inside ? x->data[((b * c + cin) * h + y) * wd + xx] : 0.0;
                                acc += xv * w->data[((oc * cg + ic) * kh + ky) * kw + kx];
                            }
                    out->data[((b * o + oc) * ho + oy) * wo + ox] = acc;
                }
        }
    return 0;
}

/* ---- decoding with a cache -------------------------------------------------------------- */

int ref_update_slice(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                     size_t err_size) {
    const RefTensor *x = ins[0], *u = ins[1];
    int axis = axis_of(op, "axis", x->shape.rank);
    int64_t size = x->shape.dims[axis], n = u->shape.dims[axis];
    double pos = ins[2]->data[0];
    if (!(pos >= 0 && pos <= (double)(size - n)))
        return op_fail(op, err, err_size,
                       "pos %g is out of range: %lld rows at pos must fit in %lld", pos,
                       (long long)n, (long long)size);
    memcpy(out->data, x->data, (size_t)numel(x) * sizeof *out->data);
    int64_t idx[IR_MAX_RANK];
    for (int64_t i = 0; i < numel(u); i++) {
        unravel(&u->shape, i, idx);
        idx[axis] += (int64_t)pos;
        out->data[ravel(&x->shape, idx)] = u->data[i];
    }
    return 0;
}

int ref_position_mask(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                      size_t err_size) {
    /* Any pos is valid: below 0 masks everything, at or past size-1 nothing. */
    double pos = ins[0]->data[0];
    for (int64_t j = 0; j < numel(out); j++) out->data[j] = (double)j <= pos ? 0.0 : -INFINITY;
    return 0;
}

/* ---- autodiff helpers ------------------------------------------------------------------- */

int ref_scatter_add(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                    size_t err_size) {
    const RefTensor *g = ins[0], *ids = ins[1];
    int64_t num = out->shape.dims[0], dim = out->shape.dims[1];
    if (check_ids(op, ids, num, err, err_size)) return -1;
    for (int64_t o = 0; o < numel(out); o++) out->data[o] = 0.0;
    for (int64_t i = 0; i < numel(ids); i++) {
        int64_t row = (int64_t)ids->data[i];
        for (int64_t j = 0; j < dim; j++) out->data[row * dim + j] += g->data[i * dim + j];
    }
    return 0;
}

int ref_relu_grad(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                  size_t err_size) {
    for (int64_t i = 0; i < numel(out); i++)
        out->data[i] = ins[1]->data[i] <= 0 ? 0.0 : ins[0]->data[i]; /* y NaN passes dy, as PyTorch's threshold_backward */
    return 0;
}

int ref_slice_grad(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                   size_t err_size) {
    const RefTensor *dy = ins[0];
    int axis = axis_of(op, "axis", dy->shape.rank);
    int64_t start = op_int(op, "start"), step = op_int(op, "step");
    int64_t idx[IR_MAX_RANK];
    for (int64_t o = 0; o < numel(out); o++) out->data[o] = 0.0;
    for (int64_t i = 0; i < numel(dy); i++) {
        unravel(&dy->shape, i, idx);
        idx[axis] = start + idx[axis] * step;
        out->data[ravel(&out->shape, idx)] = dy->data[i];
    }
    return 0;
}

/* Flat index (within one plane) of the first maximum of window (oy, ox), as ref_max_pool2d
 * picks it; a NaN wins and the last NaN of the window is taken, as PyTorch's CPU kernel does; -1 if the window holds no input element (it never
 * does: padding is at most half the kernel). */
static int64_t window_argmax(const double *x, int64_t h, int64_t w, const int64_t *k,
                             const int64_t *st, const int64_t *pad, int64_t oy, int64_t ox) {
    double m = -INFINITY;
    int64_t at = -1;
    for (int64_t ky = 0; ky < k[0]; ky++)
        for (int64_t kx = 0; kx < k[1]; kx++) {
            int64_t y = oy * st[0] - pad[0] + ky, xx = ox * st[1] - pad[1] + kx;
            if (y < 0 || y >= h || xx < 0 || xx >= w) continue;
            double v = x[y * w + xx];
            if (at < 0 || v > m || isnan(v)) m = v, at = y * w + xx;
        }
    return at;
}

int ref_max_pool2d_grad(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,
                        size_t err_size) {
    int n_k = 0, n_s = 0, n_p = 0;
    const int64_t *k = op_ints(op, "kernel", &n_k), *st = op_ints(op, "stride", &n_s);
    const int64_t *pad = op_ints(op, "padding", &n_p);
    const RefTensor *dy = ins[0], *x = ins[1];
    int64_t h = x->shape.dims[2], w = x->shape.dims[3];
    int64_t ho = dy->shape.dims[2], wo = dy->shape.dims[3];
    int64_t planes = x->shape.dims[0] * x->shape.dims[1];
    for (int64_t o = 0; o < numel(out); o++) out->data[o] = 0.0;
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t oy = 0; oy < ho; oy++)
            for (int64_t ox = 0; ox < wo; ox++) {
                int64_t at = window_argmax(x->data + pl * h * w, h, w, k, st, pad, oy, ox);
                if (at >= 0) out->data[pl * h * w + at] += dy->data[(pl * ho + oy) * wo + ox];
            }
    return 0;
}

int ref_adaptive_avg_pool2d_grad(const Op *op, const RefTensor *const *ins, RefTensor *out,
                                 char *err, size_t err_size) {
    const RefTensor *dy = ins[0];
    int64_t h = out->shape.dims[2], w = out->shape.dims[3];
    int64_t ho = dy->shape.dims[2], wo = dy->shape.dims[3];
    int64_t planes = dy->shape.dims[0] * dy->shape.dims[1];
    for (int64_t o = 0; o < numel(out); o++) out->data[o] = 0.0;
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t oy = 0; oy < ho; oy++) {
            int64_t y0 = oy * h / ho, y1 = ((oy + 1) * h + ho - 1) / ho; /* as the forward */
            for (int64_t ox = 0; ox < wo; ox++) {
                int64_t x0 = ox * w / wo, x1 = ((ox + 1) * w + wo - 1) / wo;
                double share = dy->data[(pl * ho + oy) * wo + ox] / (double)((y1 - y0) * (x1 - x0));
                for (int64_t y = y0; y < y1; y++)
                    for (int64_t xx = x0; xx < x1; xx++) out->data[(pl * h + y) * w + xx] += share;
            }
        }
    return 0;
}

/* The geometry shared by conv2d's two backward evaluators. */
typedef struct ConvGeom {
    int64_t n, c, h, w;     /* input */
    int64_t o, cg, kh, kw;  /* weight */
    int64_t ho, wo, groups; /* output */
    const int64_t *st, *pad, *dil;
} ConvGeom;

static ConvGeom conv_geom(const Op *op, const Shape *x, const Shape *w, const Shape *y) {
    int nn = 0;
    ConvGeom g = {x->dims[0], x->dims[1], x->dims[2], x->dims[3],
                  w->dims[0], w->dims[1], w->dims[2], w->dims[3],
                  y->dims[2], y->dims[3], op_int(op, "groups"),
                  op_ints(op, "stride", &nn), op_ints(op, "padding", &nn),
                  op_ints(op, "dilation", &nn)};
    return g;
}

typedef enum { CONV_GRAD_INPUT, CONV_GRAD_WEIGHT } ConvGrad;

/* Walks every multiply-add term x[xi] * w[wi] -> y[yi] of the forward conv2d (the same loops
 * as ref_conv2d) and accumulates dy[yi] times the other factor into the wanted gradient. */
static void conv_backward(const ConvGeom *g, ConvGrad which, const double *dy,
                          const double *other, double *out) {
    int64_t og = g->o / g->groups;
    for (int64_t b = 0; b < g->n; b++)
        for (int64_t oc = 0; oc < g->o; oc++)
            for (int64_t oy = 0; oy < g->ho; oy++)
                for (int64_t ox = 0; ox < g->wo; ox++) {
                    int64_t yi = ((b * g->o + oc) * g->ho + oy) * g->wo + ox;
                    for (int64_t ic = 0; ic < g->cg; ic++)
                        for (int64_t ky = 0; ky < g->kh; ky++)
                            for (int64_t kx = 0; kx < g->kw; kx++) {
                                int64_t y = oy * g->st[0] - g->pad[0] + ky * g->dil[0];
                                int64_t xx = ox * g->st[1] - g->pad[1] + kx * g->dil[1];
                                bool inside = y >= 0 && y < g->h && xx >= 0 && xx < g->w;
                                int64_t cin = oc / og * g->cg + ic;
                                int64_t xi = ((b * g->c + cin) * g->h + y) * g->w + xx;
                                int64_t wi = ((oc * g->cg + ic) * g->kh + ky) * g->kw + kx;
                                /* a padded tap's term lands on no input; for the weight it
                                 * is dy * 0, which keeps a non-finite dy (as im2col does) */
                                if (which == CONV_GRAD_WEIGHT)
                                    out[wi] += dy[yi] * (inside ? other[xi] : 0.0);
                                else if (inside)
                                    out[xi] += dy[yi] * other[wi];
                            }
                }
}

int ref_conv2d_grad_input(const Op *op, const RefTensor *const *ins, RefTensor *out,
                          char *err, size_t err_size) {
    const RefTensor *dy = ins[0], *w = ins[1];
    ConvGeom g = conv_geom(op, &out->shape, &w->shape, &dy->shape);
    for (int64_t i = 0; i < numel(out); i++) out->data[i] = 0.0;
    conv_backward(&g, CONV_GRAD_INPUT, dy->data, w->data, out->data);
    return 0;
}

int ref_conv2d_grad_weight(const Op *op, const RefTensor *const *ins, RefTensor *out,
                           char *err, size_t err_size) {
    const RefTensor *dy = ins[0], *x = ins[1];
    ConvGeom g = conv_geom(op, &x->shape, &out->shape, &dy->shape);
    for (int64_t i = 0; i < numel(out); i++) out->data[i] = 0.0;
    conv_backward(&g, CONV_GRAD_WEIGHT, dy->data, x->data, out->data);
    return 0;
}

int ref_cross_entropy_grad(const Op *op, const RefTensor *const *ins, RefTensor *out,
                           char *err, size_t err_size) {
    const RefTensor *logits = ins[1], *target = ins[2];
    int64_t n = logits->shape.dims[0], v = logits->shape.dims[1];
    double ignore = (double)op_int(op, "ignore_index");
    int64_t count = 0;
    for (int64_t r = 0; r < n; r++) count += target->data[r] != ignore;
    /* d(mean loss)/d(logits[r]) = (softmax(row) - onehot(target)) / count; with no counted
     * rows the loss is NaN and so is its gradient, as in PyTorch. */
    double scale = count ? ins[0]->data[0] / (double)count : NAN;
    for (int64_t r = 0; r < n; r++) {
        double t = target->data[r];
        double *g = out->data + r * v;
        const double *row = logits->data + r * v;
        bool ignored = t == ignore;
        if (!ignored && !(t >= 0 && t < (double)v))
            return op_fail(op, err, err_size, "target id %g at row %lld is out of range [0, %lld)",
                        t, (long long)r, (long long)v);
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j < v; j++) mx = fmax(mx, row[j]);
        for (int64_t j = 0; j < v; j++) sum += exp(row[j] - mx);
        /* an ignored row is softmax * 0, as PyTorch computes it: 0, or NaN where the row's
         * softmax is NaN */
        for (int64_t j = 0; j < v; j++)
            g[j] = ignored ? exp(row[j] - mx) / sum * 0.0
                           : (exp(row[j] - mx) / sum - (j == (int64_t)t ? 1.0 : 0.0)) * scale;
    }
    return 0;
}
