/* lower_conv.c — conv2d and its two gradients.
 *
 * C form: per image and group, im2col into a scratch matrix col [Cg*kh*kw, Ho*Wo] (zero
 * where the window hangs over the padding; the executing thread's workspace, no allocation
 * per call), then one sgemm:
 *   conv2d              y[b, g]  = W_g [og, K] @ col [K, P]           (bias prefilled, beta 1)
 *   conv2d_grad_weight  dW_g    += dy[b, g] [og, P] @ col^T [P, K]   (dW zeroed first)
 *   conv2d_grad_input   col      = W_g^T [K, og] @ dy[b, g] [og, P], then col2im: each
 *                       channel plane of dx adds up the col rows that read it
 * Why this way, measured on the tiny captioner's step (docs/benchmarks.md):
 *   - im2col walks rows (ic, ky, kx) and output pixels with loop counters: the first form
 *     recovered all six coordinates of every element with divisions and was 30% of the step.
 *   - Images are the work items (conv2d, grad_input, at least two images): one parallel region
 *     per convolution instead of two per image, and each thread's products are plain
 *     single-threaded sgemms. grad_weight sums over the images, so there the images run one
 *     after the other and the rows of col and the product (cap_sgemm) are split instead.
 *   - A 1x1 convolution with stride 1 and no padding (ResNet's bottlenecks) is a plain
 *     product over the input: no im2col, no scratch.
 * CUDA form (separate description: one launch, no scratch): direct loops, one work item per
 * output element, the whole reduction in its loop. Tiled tensor-core kernels come later.
 *
 * In a fused group (lower_contract.c) the result goes to the staging buffer b->out and the
 * epilogue follows: on C one more pass over the result, on CUDA in place of the final store. */
#include "lower.h"

typedef struct Conv {
    int64_t n, c, h, w;     /* input */
    int64_t o, cg, kh, kw;  /* weight */
    int64_t ho, wo, groups, og, k, p;
    const int64_t *st, *pad, *dil;
} Conv;

static void finish_element(KernelDesc *kd, const OpBufs *bf, Epilogue *ep, const KExpr *flat,
                           const KExpr *v);

static Conv conv_of(const Op *op, const Shape *x, const Shape *w, const Shape *y) {
    int nn = 0;
    Conv g = {x->dims[0], x->dims[1], x->dims[2], x->dims[3], w->dims[0], w->dims[1], w->dims[2],
              w->dims[3], y->dims[2], y->dims[3], op_int(op, "groups"), 0, 0, 0,
              op_ints(op, "stride", &nn), op_ints(op, "padding", &nn), op_ints(op, "dilation", &nn)};
    g.og = g.o / g.groups;
    g.k = g.cg * g.kh * g.kw;
    g.p = g.ho * g.wo;
    return g;
}

/* The geometry of op whatever its kind: which operand is x, w, dy. */
static Conv conv_geom(const Op *op) {
    const Shape *r = &op->result->shape, *a = &op->inputs[0]->shape, *b = &op->inputs[1]->shape;
    switch (op->kind) {
    case OP_CONV2D: return conv_of(op, a, b, r);
    case OP_CONV2D_GRAD_INPUT: return conv_of(op, r, b, a);
    default: return conv_of(op, b, r, a); /* grad_weight: dy, x -> dW */
    }
}

static const KExpr *i64(KernelDesc *kd, int64_t v) { return ke_int(kd, v); }

/* 0 <= v < n */
static const KExpr *in_range(KernelDesc *kd, const KExpr *v, int64_t n) {
    return ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, v, i64(kd, 0)), ke_bin(kd, KB_LT, v, i64(kd, n)));
}

/* Input coordinate read by output coordinate o at kernel tap t along axis a. */
static const KExpr *tap(KernelDesc *kd, const Conv *g, int a, const KExpr *o, const KExpr *t) {
    return KADD(kd, KSUB(kd, KMUL(kd, o, i64(kd, g->st[a])), i64(kd, g->pad[a])),
                KMUL(kd, t, i64(kd, g->dil[a])));
}

/* Opens four blocks: for oy < Ho { y = tap; if y inside { for ox < Wo { x = tap; if x
 * inside {. The pixels of tap (ky, kx) that land inside the input; close with four ks_end. */
static void open_tap_pixels(KernelDesc *kd, const Conv *g, int oy, int ox, const KExpr *ky,
                            const KExpr *kx, const KExpr **y, const KExpr **x) {
    ks_for_n(kd, oy, g->ho);
    *y = kd_let(kd, "y", tap(kd, g, 0, ke_var(kd, oy), ky));
    ks_if(kd, in_range(kd, *y, g->h));
    ks_for_n(kd, ox, g->wo);
    *x = kd_let(kd, "x", tap(kd, g, 1, ke_var(kd, ox), kx));
    ks_if(kd, in_range(kd, *x, g->w));
}

/* flat index of x[b, ch, y, xx] */
static const KExpr *x_at(KernelDesc *kd, const Conv *g, const KExpr *b, const KExpr *ch,
                         const KExpr *y, const KExpr *xx) {
    return KADD(kd, KMUL(kd, KADD(kd, KMUL(kd, KADD(kd, KMUL(kd, b, i64(kd, g->c)), ch), i64(kd, g->h)), y),
                         i64(kd, g->w)), xx);
}

/* A 1x1 convolution with stride 1 and no padding reads its input as it is: col is x itself
 * ([Cg, H*W] of the image's group), so it needs no im2col and no scratch. */
static bool pointwise(const Conv *g) {
    return g->kh == 1 && g->kw == 1 && g->st[0] == 1 && g->st[1] == 1 && g->pad[0] == 0 &&
           g->pad[1] == 0;
}

/* Images run in parallel (one work item each, with its own scratch) when there are at least
 * two; a single image parallelizes inside: its im2col rows and its products. */
static bool image_parallel(const Conv *g) { return g->n >= 2; }

/* flat offset of [b, gr*cg, 0, 0] in the input [N, C, H, W] */
static const KExpr *x_group(KernelDesc *kd, const Conv *g, const KExpr *b, const KExpr *gr) {
    return KMUL(kd, KADD(kd, KMUL(kd, b, i64(kd, g->c)), KMUL(kd, gr, i64(kd, g->cg))),
                i64(kd, g->h * g->w));
}

/* The loop over rows of col [K, P] (row = (ic, ky, kx)): a parfor or a plain loop. Sets the
 * row's coordinates, computed once per row; the columns come from loop counters, so no
 * element needs a division. */
typedef struct ColRow {
    const KExpr *row, *ic, *ky, *kx;
} ColRow;

static ColRow open_rows(KernelDesc *kd, const Conv *g, int64_t n_rows, bool parallel) {
    int r = kd_var(kd, "row", KT_I64);
    if (parallel) ks_parfor(kd, r, n_rows);
    else ks_for_n(kd, r, n_rows);
    ColRow cr = {ke_var(kd, r), NULL, NULL, NULL};
    cr.ic = kd_let(kd, "ic", KDIV(kd, cr.row, i64(kd, g->kh * g->kw)));
    cr.ky = kd_let(kd, "ky", KMOD(kd, KDIV(kd, cr.row, i64(kd, g->kw)), i64(kd, g->kh)));
    cr.kx = kd_let(kd, "kx", KMOD(kd, cr.row, i64(kd, g->kw)));
    return cr;
}

/* col [K, P] = the windows of image b, group gr of xbuf (zero over the padding). */
static void im2col(KernelDesc *kd, const Conv *g, int xbuf, int col, const KExpr *b,
                   const KExpr *gr, bool parallel) {
    int oy = kd_var(kd, "oy", KT_I64), ox = kd_var(kd, "ox", KT_I64);
    ColRow cr = open_rows(kd, g, g->k, parallel);
    const KExpr *ch = kd_let(kd, "ch", KADD(kd, KMUL(kd, gr, i64(kd, g->cg)), cr.ic));
    ks_for_n(kd, oy, g->ho);
    const KExpr *y = kd_let(kd, "y", tap(kd, g, 0, ke_var(kd, oy), cr.ky));
    const KExpr *at = kd_let(kd, "at", KADD(kd, KMUL(kd, cr.row, i64(kd, g->p)),
                                            KMUL(kd, ke_var(kd, oy), i64(kd, g->wo))));
    ks_for_n(kd, ox, g->wo);
    const KExpr *x = kd_let(kd, "x", tap(kd, g, 1, ke_var(kd, ox), cr.kx));
    const KExpr *ok = ke_bin(kd, KB_AND, in_range(kd, y, g->h), in_range(kd, x, g->w));
    ks_store(kd, col, KADD(kd, at, ke_var(kd, ox)),
             ke_select(kd, ok, ke_load(kd, xbuf, x_at(kd, g, b, ch, y, x)), ke_f32(kd, 0)));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
}

static KGemm gemm_of(KernelDesc *kd, int64_t m, int64_t n, int64_t k, bool accumulate) {
    KGemm gm = {0};
    gm.batch_var = kd_var(kd, "bt", KT_I64);
    gm.batch = 1;
    gm.m = m;
    gm.n = n;
    gm.k = k;
    gm.alpha = 1.0f;
    gm.accumulate = accumulate;
    gm.bias_buf = -1;
    return gm;
}

static KMat mat(int buf, const KExpr *offset, int64_t ld, bool trans) {
    KMat m = {buf, offset, ld, trans};
    return m;
}

/* Opens the loop over images (a parfor when image_parallel, else a plain loop) and returns
 * its variable. */
static const KExpr *open_images(KernelDesc *kd, const Conv *g) {
    int bv = kd_var(kd, "b", KT_I64);
    if (image_parallel(g)) ks_parfor(kd, bv, g->n);
    else ks_for_n(kd, bv, g->n);
    return ke_var(kd, bv);
}

static const KExpr *open_groups(KernelDesc *kd, const Conv *g) {
    int gv = kd_var(kd, "g", KT_I64);
    ks_for_n(kd, gv, g->groups);
    return ke_var(kd, gv);
}

/* flat offset of [b, gr*og, 0, 0] in a [N, O, Ho, Wo] tensor */
static const KExpr *dy_group(KernelDesc *kd, const Conv *g, const KExpr *b, const KExpr *gr) {
    return KMUL(kd, KADD(kd, KMUL(kd, b, i64(kd, g->o)), KMUL(kd, gr, i64(kd, g->og))), i64(kd, g->p));
}

/* Inside image b's work item, after its products: each element of the image's output
 * [O, P] gets the bias and the epilogue while it is still in cache (no division: channel and
 * pixel are loop counters). */
static void image_epilogue(KernelDesc *kd, const Op *op, const Conv *g, const OpBufs *bf,
                           Epilogue *ep, const KExpr *b) {
    int oc = kd_var(kd, "oc", KT_I64), px = kd_var(kd, "px", KT_I64);
    ks_for_n(kd, oc, g->o);
    const KExpr *row = kd_let(kd, "at", KMUL(kd, KADD(kd, KMUL(kd, b, i64(kd, g->o)), ke_var(kd, oc)),
                                             i64(kd, g->p)));
    const KExpr *bias = op->n_inputs == 3 ? kd_let(kd, "bias", ke_load(kd, bf->in[2], ke_var(kd, oc))) : NULL;
    ks_for_n(kd, px, g->p);
    const KExpr *flat = kd_let(kd, "e", KADD(kd, row, ke_var(kd, px)));
    const KExpr *v = ke_load(kd, bf->out, flat);
    finish_element(kd, bf, ep, flat, bias != NULL ? KADD(kd, v, bias) : v);
    ks_end(kd);
    ks_end(kd);
}

/* y[b, g] [og, P] = W_g [og, K] @ col [K, P], plus the bias and the epilogue: per image when
 * the images are the work items (returns true: the epilogue is done), else the bias prefilled
 * and the epilogue left to one more pass. */
static bool conv2d_c(KernelDesc *kd, const Op *op, const Conv *g, const OpBufs *bf, Epilogue *ep) {
    bool bias = op->n_inputs == 3, per_image = image_parallel(g);
    if (bias && !per_image) {
        int e = kd_var(kd, "e", KT_I64);
        ks_parfor(kd, e, numel_of(op->result));
        const KExpr *oc = KMOD(kd, KDIV(kd, ke_var(kd, e), i64(kd, g->p)), i64(kd, g->o));
        ks_store(kd, bf->out, ke_var(kd, e), ke_load(kd, bf->in[2], oc));
        ks_end(kd);
    }
    const KExpr *b = open_images(kd, g);
    int col = pointwise(g) ? -1 : kd_scratch(kd, KT_F32, g->k * g->p);
    const KExpr *gr = open_groups(kd, g);
    if (col >= 0) im2col(kd, g, bf->in[0], col, b, gr, !image_parallel(g));
    KGemm gm = gemm_of(kd, g->og, g->p, g->k, bias && !per_image);
    gm.a = mat(bf->in[1], KMUL(kd, gr, i64(kd, g->og * g->k)), g->k, false);
    gm.b = col >= 0 ? mat(col, i64(kd, 0), g->p, false) : mat(bf->in[0], x_group(kd, g, b, gr), g->p, false);
    gm.c = mat(bf->out, dy_group(kd, g, b, gr), g->p, false);
    ks_gemm(kd, &gm);
    ks_end(kd);
    if (per_image && (bias || ep != NULL)) image_epilogue(kd, op, g, bf, ep, b);
    ks_end(kd);
    return per_image;
}

/* dW_g [og, K] = sum over images of dy[b, g] [og, P] @ col^T [P, K]: the images one after
 * the other (they all add into dW), each im2col and product parallel inside. */
static void grad_weight_c(KernelDesc *kd, const Conv *g, int64_t total, const OpBufs *bf) {
    int col = pointwise(g) ? -1 : kd_scratch(kd, KT_F32, g->k * g->p);
    int e = kd_var(kd, "e", KT_I64), bv = kd_var(kd, "b", KT_I64);
    ks_parfor(kd, e, total);
    ks_store(kd, bf->out, ke_var(kd, e), ke_f32(kd, 0));
    ks_end(kd);
    ks_for_n(kd, bv, g->n);
    const KExpr *b = ke_var(kd, bv), *gr = open_groups(kd, g);
    if (col >= 0) im2col(kd, g, bf->in[1], col, b, gr, true);
    KGemm gm = gemm_of(kd, g->og, g->k, g->p, true);
    gm.a = mat(bf->in[0], dy_group(kd, g, b, gr), g->p, false);
    gm.b = col >= 0 ? mat(col, i64(kd, 0), g->p, true) : mat(bf->in[1], x_group(kd, g, b, gr), g->p, true);
    gm.c = mat(bf->out, KMUL(kd, gr, i64(kd, g->og * g->k)), g->k, false);
    ks_gemm(kd, &gm);
    ks_end(kd);
    ks_end(kd);
}

/* col2im: dx[b, group gr] = the sum of the col [K, P] entries that read each element, added
 * row by row (ic, ky, kx) into the zeroed channel planes: for one element the terms come in
 * (ky, kx) order, as a gather over its taps would add them. One work item per channel when
 * parallel (a channel's rows touch only its plane). */
static void col2im(KernelDesc *kd, const Conv *g, int col, const OpBufs *bf, const KExpr *b,
                   const KExpr *gr, bool parallel) {
    int icv = kd_var(kd, "ic", KT_I64), e = kd_var(kd, "e", KT_I64), t = kd_var(kd, "t", KT_I64),
        oy = kd_var(kd, "oy", KT_I64), ox = kd_var(kd, "ox", KT_I64);
    if (parallel) ks_parfor(kd, icv, g->cg);
    else ks_for_n(kd, icv, g->cg);
    const KExpr *ic = ke_var(kd, icv);
    const KExpr *plane = kd_let(kd, "plane", x_at(kd, g, b, KADD(kd, KMUL(kd, gr, i64(kd, g->cg)), ic),
                                                  i64(kd, 0), i64(kd, 0)));
    ks_for_n(kd, e, g->h * g->w);
    ks_store(kd, bf->out, KADD(kd, plane, ke_var(kd, e)), ke_f32(kd, 0));
    ks_end(kd);
    ks_for_n(kd, t, g->kh * g->kw);
    const KExpr *ky = kd_let(kd, "ky", KDIV(kd, ke_var(kd, t), i64(kd, g->kw)));
    const KExpr *kx = kd_let(kd, "kx", KMOD(kd, ke_var(kd, t), i64(kd, g->kw)));
    const KExpr *row = kd_let(kd, "row", KADD(kd, KMUL(kd, ic, i64(kd, g->kh * g->kw)), ke_var(kd, t)));
    const KExpr *y, *x;
    open_tap_pixels(kd, g, oy, ox, ky, kx, &y, &x);
    const KExpr *dst = KADD(kd, plane, KADD(kd, KMUL(kd, y, i64(kd, g->w)), x));
    const KExpr *src = KADD(kd, KMUL(kd, row, i64(kd, g->p)),
                            KADD(kd, KMUL(kd, ke_var(kd, oy), i64(kd, g->wo)), ke_var(kd, ox)));
    ks_store(kd, bf->out, dst, KADD(kd, ke_load(kd, bf->out, dst), ke_load(kd, col, src)));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
}

/* dx[b, g]: col [K, P] = W_g^T [K, og] @ dy[b, g] [og, P], then col2im (a 1x1 convolution
 * writes the product straight into dx). */
static void grad_input_c(KernelDesc *kd, const Conv *g, const OpBufs *bf) {
    const KExpr *b = open_images(kd, g);
    int col = pointwise(g) ? -1 : kd_scratch(kd, KT_F32, g->k * g->p);
    const KExpr *gr = open_groups(kd, g);
    KGemm gm = gemm_of(kd, g->k, g->p, g->og, false);
    gm.a = mat(bf->in[1], KMUL(kd, gr, i64(kd, g->og * g->k)), g->k, true);
    gm.b = mat(bf->in[0], dy_group(kd, g, b, gr), g->p, false);
    gm.c = col >= 0 ? mat(col, i64(kd, 0), g->p, false) : mat(bf->out, x_group(kd, g, b, gr), g->p, false);
    ks_gemm(kd, &gm);
    if (col >= 0) col2im(kd, g, col, bf, b, gr, !image_parallel(g));
    ks_end(kd);
    ks_end(kd);
}

/* ---- CUDA: direct loops ----------------------------------------------------------------- */

/* The output coordinate that reads input coordinate v at tap t along axis a, if any:
 * o = (v + pad - t*dil) / stride when that divides exactly and lands inside [0, size). */
static const KExpr *source_ok(KernelDesc *kd, const Conv *g, int a, const KExpr *num, int64_t size) {
    const KExpr *q = KDIV(kd, num, i64(kd, g->st[a]));
    return ke_bin(kd, KB_AND, ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, num, i64(kd, 0)),
                                     ke_bin(kd, KB_EQ, KMOD(kd, num, i64(kd, g->st[a])), i64(kd, 0))),
                  ke_bin(kd, KB_LT, q, i64(kd, size)));
}

static const KExpr *tap_source(KernelDesc *kd, const Conv *g, int a, const KExpr *v, const KExpr *t) {
    return KSUB(kd, KADD(kd, v, i64(kd, g->pad[a])), KMUL(kd, t, i64(kd, g->dil[a])));
}

/* flat index of w[oc, ic, ky, kx] */
static const KExpr *w_at(KernelDesc *kd, const Conv *g, const KExpr *oc, const KExpr *ic,
                         const KExpr *ky, const KExpr *kx) {
    return KADD(kd, KMUL(kd, KADD(kd, KMUL(kd, KADD(kd, KMUL(kd, oc, i64(kd, g->cg)), ic), i64(kd, g->kh)), ky),
                         i64(kd, g->kw)), kx);
}

static const KExpr *y_at(KernelDesc *kd, const Conv *g, const KExpr *b, const KExpr *oc,
                         const KExpr *oy, const KExpr *ox) {
    return KADD(kd, KMUL(kd, KADD(kd, KMUL(kd, KADD(kd, KMUL(kd, b, i64(kd, g->o)), oc), i64(kd, g->ho)), oy),
                         i64(kd, g->wo)), ox);
}

static void conv2d_direct(KernelDesc *kd, const Op *op, const Conv *g, const OpBufs *bf,
                          Epilogue *ep) {
    int e = kd_var(kd, "e", KT_I64), ic = kd_var(kd, "ic", KT_I64), ky = kd_var(kd, "ky", KT_I64),
        kx = kd_var(kd, "kx", KT_I64), acc = kd_var(kd, "acc", KT_F32);
    ks_parfor(kd, e, numel_of(op->result));
    const KExpr *ev = ke_var(kd, e);
    const KExpr *b = kd_let(kd, "b", KDIV(kd, ev, i64(kd, g->o * g->p)));
    const KExpr *oc = kd_let(kd, "oc", KMOD(kd, KDIV(kd, ev, i64(kd, g->p)), i64(kd, g->o)));
    const KExpr *oy = kd_let(kd, "oy", KMOD(kd, KDIV(kd, ev, i64(kd, g->wo)), i64(kd, g->ho)));
    const KExpr *ox = kd_let(kd, "ox", KMOD(kd, ev, i64(kd, g->wo)));
    const KExpr *c0 = kd_let(kd, "c0", KMUL(kd, KDIV(kd, oc, i64(kd, g->og)), i64(kd, g->cg)));
    ks_decl(kd, acc, op->n_inputs == 3 ? ke_load(kd, bf->in[2], oc) : ke_f32(kd, 0));
    ks_for_n(kd, ic, g->cg);
    ks_for_n(kd, ky, g->kh);
    const KExpr *y = kd_let(kd, "y", tap(kd, g, 0, oy, ke_var(kd, ky)));
    ks_for_n(kd, kx, g->kw);
    const KExpr *x = kd_let(kd, "x", tap(kd, g, 1, ox, ke_var(kd, kx)));
    /* a padded tap multiplies 0 into the weight, as the C target's im2col does, so a
     * non-finite weight reaches the border on both targets */
    const KExpr *inside = ke_bin(kd, KB_AND, in_range(kd, y, g->h), in_range(kd, x, g->w));
    const KExpr *xv = kd_let(kd, "xv", ke_select(kd, inside, ke_load(kd, bf->in[0], x_at(kd, g, b, KADD(kd, c0, ke_var(kd, ic)), y, x)),
                                                 ke_f32(kd, 0)));
    const KExpr *wv = ke_load(kd, bf->in[1], w_at(kd, g, oc, ke_var(kd, ic), ke_var(kd, ky), ke_var(kd, kx)));
    ks_assign(kd, acc, KADD(kd, ke_var(kd, acc), KMUL(kd, xv, wv)));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    finish_element(kd, bf, ep, ev, ke_var(kd, acc));
    ks_end(kd);
}

static void grad_input_direct(KernelDesc *kd, const Op *op, const Conv *g, const OpBufs *bf,
                              Epilogue *ep) {
    int e = kd_var(kd, "e", KT_I64), j = kd_var(kd, "j", KT_I64), ky = kd_var(kd, "ky", KT_I64),
        kx = kd_var(kd, "kx", KT_I64), acc = kd_var(kd, "acc", KT_F32);
    ks_parfor(kd, e, numel_of(op->result));
    const KExpr *ev = ke_var(kd, e);
    const KExpr *b = kd_let(kd, "b", KDIV(kd, ev, i64(kd, g->c * g->h * g->w)));
    const KExpr *ch = kd_let(kd, "ch", KMOD(kd, KDIV(kd, ev, i64(kd, g->h * g->w)), i64(kd, g->c)));
    const KExpr *y = kd_let(kd, "y", KMOD(kd, KDIV(kd, ev, i64(kd, g->w)), i64(kd, g->h)));
    const KExpr *x = kd_let(kd, "x", KMOD(kd, ev, i64(kd, g->w)));
    const KExpr *ic = kd_let(kd, "ic", KMOD(kd, ch, i64(kd, g->cg)));
    const KExpr *o0 = kd_let(kd, "o0", KMUL(kd, KDIV(kd, ch, i64(kd, g->cg)), i64(kd, g->og)));
    ks_decl(kd, acc, ke_f32(kd, 0));
    ks_for_n(kd, ky, g->kh);
    const KExpr *ny = kd_let(kd, "ny", tap_source(kd, g, 0, y, ke_var(kd, ky)));
    ks_for_n(kd, kx, g->kw);
    const KExpr *nx = kd_let(kd, "nx", tap_source(kd, g, 1, x, ke_var(kd, kx)));
    ks_if(kd, ke_bin(kd, KB_AND, source_ok(kd, g, 0, ny, g->ho), source_ok(kd, g, 1, nx, g->wo)));
    const KExpr *oy = kd_let(kd, "oy", KDIV(kd, ny, i64(kd, g->st[0])));
    const KExpr *ox = kd_let(kd, "ox", KDIV(kd, nx, i64(kd, g->st[1])));
    ks_for_n(kd, j, g->og);
    const KExpr *oc = KADD(kd, o0, ke_var(kd, j));
    const KExpr *dy = ke_load(kd, bf->in[0], y_at(kd, g, b, oc, oy, ox));
    const KExpr *wv = ke_load(kd, bf->in[1], w_at(kd, g, oc, ic, ke_var(kd, ky), ke_var(kd, kx)));
    ks_assign(kd, acc, KADD(kd, ke_var(kd, acc), KMUL(kd, dy, wv)));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    finish_element(kd, bf, ep, ev, ke_var(kd, acc));
    ks_end(kd);
}

static void grad_weight_direct(KernelDesc *kd, const Op *op, const Conv *g, const OpBufs *bf,
                               Epilogue *ep) {
    int e = kd_var(kd, "e", KT_I64), b = kd_var(kd, "b", KT_I64), oy = kd_var(kd, "oy", KT_I64),
        ox = kd_var(kd, "ox", KT_I64), acc = kd_var(kd, "acc", KT_F32);
    ks_parfor(kd, e, numel_of(op->result));
    const KExpr *ev = ke_var(kd, e);
    const KExpr *oc = kd_let(kd, "oc", KDIV(kd, ev, i64(kd, g->k)));
    const KExpr *ic = kd_let(kd, "ic", KMOD(kd, KDIV(kd, ev, i64(kd, g->kh * g->kw)), i64(kd, g->cg)));
    const KExpr *ky = kd_let(kd, "ky", KMOD(kd, KDIV(kd, ev, i64(kd, g->kw)), i64(kd, g->kh)));
    const KExpr *kx = kd_let(kd, "kx", KMOD(kd, ev, i64(kd, g->kw)));
    const KExpr *ch = kd_let(kd, "ch", KADD(kd, KMUL(kd, KDIV(kd, oc, i64(kd, g->og)), i64(kd, g->cg)), ic));
    ks_decl(kd, acc, ke_f32(kd, 0));
    ks_for_n(kd, b, g->n);
    /* every output pixel, padded taps reading 0 (dy * 0 keeps a non-finite dy, as the C
     * target's im2col product does) */
    ks_for_n(kd, oy, g->ho);
    const KExpr *y = kd_let(kd, "y", tap(kd, g, 0, ke_var(kd, oy), ky));
    ks_for_n(kd, ox, g->wo);
    const KExpr *x = kd_let(kd, "x", tap(kd, g, 1, ke_var(kd, ox), kx));
    const KExpr *inside = ke_bin(kd, KB_AND, in_range(kd, y, g->h), in_range(kd, x, g->w));
    const KExpr *dy = ke_load(kd, bf->in[0], y_at(kd, g, ke_var(kd, b), oc, ke_var(kd, oy), ke_var(kd, ox)));
    const KExpr *xv = kd_let(kd, "xv", ke_select(kd, inside, ke_load(kd, bf->in[1], x_at(kd, g, ke_var(kd, b), ch, y, x)),
                                                 ke_f32(kd, 0)));
    ks_assign(kd, acc, KADD(kd, ke_var(kd, acc), KMUL(kd, dy, xv)));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    finish_element(kd, bf, ep, ev, ke_var(kd, acc));
    ks_end(kd);
}

/* The result at element flat: the epilogue's, or a plain store. */
static void finish_element(KernelDesc *kd, const OpBufs *bf, Epilogue *ep, const KExpr *flat,
                           const KExpr *v) {
    if (ep != NULL) ep->emit(ep, kd, flat, v);
    else ks_store(kd, bf->out, flat, v);
}

/* C form: the epilogue as one more pass over the staged result. */
static void epilogue_pass(KernelDesc *kd, const OpBufs *bf, Epilogue *ep, int64_t numel) {
    if (ep == NULL) return;
    int e = kd_var(kd, "e", KT_I64);
    ks_parfor(kd, e, numel);
    const KExpr *flat = ke_var(kd, e);
    ep->emit(ep, kd, flat, kd_let(kd, "ev", ke_load(kd, bf->out, flat)));
    ks_end(kd);
}

int lower_conv_op(KernelDesc *kd, KernelDesc **cuda, const Op *op, const OpBufs *b,
                  Epilogue *ep, char *err, size_t n) {
    Conv g = conv_geom(op);
    bool ep_done = false;
    KernelDesc *cu = lower_clone_args(kd);
    if (!cu) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    switch (op->kind) {
    case OP_CONV2D:
        if (conv2d_c(kd, op, &g, b, ep)) ep_done = true;
        conv2d_direct(cu, op, &g, b, ep);
        break;
    case OP_CONV2D_GRAD_INPUT: grad_input_c(kd, &g, b); grad_input_direct(cu, op, &g, b, ep); break;
    case OP_CONV2D_GRAD_WEIGHT:
        grad_weight_c(kd, &g, numel_of(op->result), b);
        grad_weight_direct(cu, op, &g, b, ep);
        break;
    default: kd_free(cu); snprintf(err, n, "not a convolution"); return -1;
    }
    if (!ep_done) epilogue_pass(kd, b, ep, numel_of(op->result));
    *cuda = cu;
    return 0;
}
