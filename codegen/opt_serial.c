/* opt_serial.c — parallel loops too small to be worth threads run on one.
 *
 * Needs: a lowered kernel description. Changes only the `serial` mark of parfors and gemm
 * statements (a gemm's bias fill and epilogue loops), which the C renderer reads (a plain loop
 * instead of `omp parallel for`); CUDA launches every parfor as a grid regardless. Keeps
 * true: the same work items run, in order.
 *
 * Starting and joining a team of OpenMP threads costs microseconds, more than a loop of a few
 * thousand simple operations takes on one core; fused groups over small tensors (a LayerNorm
 * over 240 rows of 64, the bias gradients, the scalar arithmetic of the optimizer) are such
 * loops. The work of a parfor is estimated as its items times the operations in one item
 * (nested loops multiplied out by their constant trip counts, a gemm as m*n*k); below
 * SERIAL_WORK it runs serially.
 */
#include "opt.h"

enum { SERIAL_WORK = 32768 };

static int64_t trip_count(const KStmt *s) {
    if (s->lo->kind == KE_CONST && s->hi->kind == KE_CONST && s->hi->i > s->lo->i)
        return s->hi->i - s->lo->i;
    return 64; /* a run-time bound: a guess */
}

static int64_t saturating_mul(int64_t a, int64_t b) {
    return a > 0 && b > INT64_MAX / a ? INT64_MAX : a * b;
}

/* Operations one pass over block does (at least 1 per statement). */
static int64_t work(const KStmt *s) {
    int64_t total = 0;
    for (; s != NULL; s = s->next) {
        int64_t w = 1;
        switch (s->kind) {
        case KS_PARFOR:
        case KS_FOR: w = saturating_mul(trip_count(s), work(s->body) + 1); break;
        case KS_IF: w = 1 + work(s->body) + work(s->else_body); break;
        case KS_GEMM:
            w = saturating_mul(saturating_mul(s->gemm->batch, s->gemm->m),
                               saturating_mul(s->gemm->n, s->gemm->k));
            break;
        default: break;
        }
        total = total > INT64_MAX - w ? INT64_MAX : total + w;
    }
    return total;
}

static void mark(KStmt *s) {
    for (; s != NULL; s = s->next) {
        if (s->kind == KS_PARFOR && work(s) < SERIAL_WORK) s->serial = true;
        if (s->kind == KS_GEMM) { /* its bias fill and epilogue loops; the product is cap_sgemm's */
            const KGemm *g = s->gemm;
            int64_t elems = saturating_mul(g->batch, saturating_mul(g->m, g->n));
            s->serial = saturating_mul(elems, work(g->epilogue) + 1) < SERIAL_WORK;
        }
        if (s->kind == KS_FOR) mark(s->body); /* parfors inside sequential loops (conv on C) */
    }
}

int opt_serial(KernelDesc *kd, Diag *d) {
    (void)d;
    mark(kd->body);
    return 0;
}
