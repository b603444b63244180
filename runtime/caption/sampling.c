/* sampling.c — next-token choice from logits (temperature, top-k, top-p, sampling, greedy)
 * and beam search with length normalization over a step callback. docs/sampling.md states
 * the definitions; sampling.h the contracts.
 *
 * Random numbers: draw d of stream (seed, stream) is Philox4x32-10 (the runtime's copy,
 * init.c) with key (seed, stream) and counter (d lo, d hi, 1, 0); the third word 1 keeps
 * these blocks apart from init's (which use 0), so a sample's draws depend on (seed, stream,
 * d) only, whatever else runs.
 */
#include "sampling.h"
#include "cap_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- random numbers ---------------------------------------------------------------------- */

void cap_rng_init(CapRng *r, uint32_t seed, uint32_t stream) {
    r->key[0] = seed;
    r->key[1] = stream;
    r->counter = 0;
}

double cap_rng_uniform(CapRng *r) {
    const uint32_t ctr[4] = {(uint32_t)r->counter, (uint32_t)(r->counter >> 32), 1, 0};
    uint32_t out[4];
    philox4x32_10(ctr, r->key, out);
    r->counter++;
    return ((double)(out[0] >> 5) * 67108864.0 + (double)(out[1] >> 6)) / 9007199254740992.0;
}

/* ---- filters ----------------------------------------------------------------------------- */

void cap_logits_temperature(float *logits, int V, float temperature) {
    for (int i = 0; i < V; i++) logits[i] /= temperature;
}

/* Largest value strictly below below (NaN skipped) and how often it occurs; 0 if none. */
static int next_below(const float *x, int V, float below, float *value, int *count) {
    int found = 0;
    for (int i = 0; i < V; i++) {
        if (!(x[i] < below)) continue; /* also skips NaN */
        if (!found || x[i] > *value) *value = x[i], *count = 1, found = 1;
        else if (x[i] == *value) (*count)++;
    }
    return found;
}

void cap_logits_top_k(float *logits, int V, int k) {
    if (k <= 0 || k >= V) return;
    float thr = INFINITY, v = 0;
    int kept = 0, c = 0;
    for (int i = 0; i < V; i++) /* +inf logits count first */
        if (logits[i] == INFINITY) kept++;
    while (kept < k && next_below(logits, V, thr, &v, &c)) thr = v, kept += c;
    for (int i = 0; i < V; i++)
        if (!(logits[i] >= thr)) logits[i] = -INFINITY;
}

typedef struct Ranked {
    float v;
    int i;
} Ranked;

/* Descending by value; NaN last; ties by lower index. */
static int ranked_cmp(const void *x, const void *y) {
    const Ranked *a = x, *b = y;
    int an = isnan(a->v), bn = isnan(b->v);
    if (an != bn) return an - bn;
    if (!an && a->v != b->v) return a->v > b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

CapStatus cap_logits_top_p(float *logits, int V, float p, char *err, size_t err_size) {
    if (!(p > 0)) return cap_fail(err, err_size, CAP_E_ARG, "top-p must be > 0, not %g", (double)p);
    if (p >= 1 || V < 1) return CAP_OK;
    Ranked *r = malloc((size_t)V * sizeof *r);
    if (!r) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory (top-p over %d)", V);
    for (int i = 0; i < V; i++) r[i] = (Ranked){logits[i], i};
    qsort(r, (size_t)V, sizeof *r, ranked_cmp);
    double m = r[0].v, total = 0;
    if (isinf(m) && m < 0) { /* nothing left to filter */
        free(r);
        return CAP_OK;
    }
    for (int j = 0; j < V; j++) total += isnan(r[j].v) ? 0 : exp((double)r[j].v - m);
    double cum = 0;
    int remove_next = 0; /* the unshifted mask of the previous position */
    for (int j = 0; j < V; j++) {
        if (remove_next) logits[r[j].i] = -INFINITY;
        cum += isnan(r[j].v) ? 0 : exp((double)r[j].v - m) / total;
        remove_next = cum > p;
    }
    free(r);
    return CAP_OK;
}

/* ---- choosing ---------------------------------------------------------------------------- */

int cap_argmax(const float *logits, int V) {
    int best = -1;
    for (int i = 0; i < V; i++)
        if (!isnan(logits[i]) && (best < 0 || logits[i] > logits[best])) best = i;
    return best;
}

int cap_sample_logits(const float *logits, int V, CapRng *rng) {
    int top = cap_argmax(logits, V);
    if (top < 0 || (isinf(logits[top]) && logits[top] < 0)) return -1;
    double m = logits[top], total = 0;
    if (isinf(m)) return top; /* +inf: all the mass */
    for (int i = 0; i < V; i++) total += isnan(logits[i]) ? 0 : exp((double)logits[i] - m);
    double u = cap_rng_uniform(rng) * total, cum = 0;
    int last = top;
    for (int i = 0; i < V; i++) {
        double w = isnan(logits[i]) ? 0 : exp((double)logits[i] - m);
        if (w <= 0) continue;
        cum += w;
        last = i;
        if (cum > u) return i;
    }
    return last; /* u rounded to the very top */
}

CapStatus cap_sample_next(float *logits, int V, const CapSampleOptions *o, CapRng *rng,
                          int *token, char *err, size_t err_size) {
    if (V < 1) return cap_fail(err, err_size, CAP_E_ARG, "no logits to sample from");
    if (o->greedy || !(o->temperature > 0)) {
        *token = cap_argmax(logits, V);
    } else {
        cap_logits_temperature(logits, V, o->temperature);
        cap_logits_top_k(logits, V, o->top_k);
        if (o->top_p > 0 && o->top_p < 1) {
            CapStatus st = cap_logits_top_p(logits, V, o->top_p, err, err_size);
            if (st) return st;
        }
        *token = cap_sample_logits(logits, V, rng);
    }
    if (*token < 0) return cap_fail(err, err_size, CAP_E_ARG, "every logit is -inf or NaN");
    return CAP_OK;
}

/* ---- beam search ------------------------------------------------------------------------- */

typedef struct Cand {
    double raw;
    int beam, token;
} Cand;

typedef struct Hyp {
    int32_t *tokens; /* max_len slots */
    int len;
    double raw, norm;
} Hyp;

typedef struct Beams {
    int B, max_len, V;
    Hyp *live, *next, *done;
    int n_live, n_next, n_done;
    int32_t *last, *parents;
    float *logits;
    Cand *top; /* the 2B best candidates of a step, best first */
    int n_top;
    int32_t *pool;
} Beams;

static void beams_free(Beams *b) {
    free(b->live);
    free(b->next);
    free(b->done);
    free(b->last);
    free(b->parents);
    free(b->logits);
    free(b->top);
    free(b->pool);
}

static int beams_alloc(Beams *b, int B, int max_len, int V) {
    memset(b, 0, sizeof *b);
    b->B = B, b->max_len = max_len, b->V = V;
    size_t n_done = (size_t)B * (size_t)(max_len + 1), n_hyp = 2 * (size_t)B + n_done;
    b->live = calloc((size_t)B, sizeof *b->live);
    b->next = calloc((size_t)B, sizeof *b->next);
    b->done = calloc(n_done, sizeof *b->done);
    b->last = calloc((size_t)B, sizeof *b->last);
    b->parents = calloc((size_t)B, sizeof *b->parents);
    b->logits = malloc((size_t)B * (size_t)V * sizeof *b->logits);
    b->top = malloc(2 * (size_t)B * sizeof *b->top);
    b->pool = calloc(n_hyp * (size_t)max_len, sizeof *b->pool);
    if (!b->live || !b->next || !b->done || !b->last || !b->parents || !b->logits || !b->top ||
        !b->pool)
        return -1;
    int32_t *p = b->pool;
    for (int i = 0; i < B; i++, p += max_len) b->live[i].tokens = p;
    for (int i = 0; i < B; i++, p += max_len) b->next[i].tokens = p;
    for (size_t i = 0; i < n_done; i++, p += max_len) b->done[i].tokens = p;
    return 0;
}

/* Inserts c into the sorted top list (kept to 2B); equal scores keep the earlier one first. */
static void top_insert(Beams *b, Cand c) {
    int cap = 2 * b->B;
    if (b->n_top == cap && !(c.raw > b->top[cap - 1].raw)) return;
    int j = b->n_top < cap ? b->n_top++ : cap - 1;
    while (j > 0 && c.raw > b->top[j - 1].raw) {
        b->top[j] = b->top[j - 1];
        j--;
    }
    b->top[j] = c;
}

/* log_softmax of each live beam's logits added to its score, the best 2B kept. */
static void collect_candidates(Beams *b) {
    b->n_top = 0;
    for (int i = 0; i < b->n_live; i++) {
        const float *l = b->logits + (size_t)i * b->V;
        int top = cap_argmax(l, b->V);
        if (top < 0 || isinf(l[top])) continue; /* no usable distribution */
        double m = l[top], s = 0;
        for (int v = 0; v < b->V; v++) s += isnan(l[v]) ? 0 : exp((double)l[v] - m);
        double lse = m + log(s);
        for (int v = 0; v < b->V; v++) {
            double raw = b->live[i].raw + ((double)l[v] - lse);
            if (!isnan(l[v]) && isfinite(raw)) top_insert(b, (Cand){raw, i, v});
        }
    }
}

/* Records h as finished; its score is normalized by length norm_len. */
static void finish(Beams *b, const Hyp *h, int norm_len, double alpha) {
    Hyp *d = &b->done[b->n_done++];
    memcpy(d->tokens, h->tokens, (size_t)h->len * sizeof *d->tokens);
    d->len = h->len;
    d->raw = h->raw;
    d->norm = h->raw / pow(norm_len > 0 ? norm_len : 1, alpha);
}

/* Turns the step's candidates into finished hypotheses and the next live beams. */
static void advance(Beams *b, const CapBeamOptions *o, int t) {
    b->n_next = 0;
    for (int r = 0; r < b->n_top; r++) {
        const Cand *c = &b->top[r];
        const Hyp *from = &b->live[c->beam];
        if (c->token == o->end_id) {
            if (r >= b->B) continue; /* an <end> ranked below the beam is dropped */
            Hyp h = {from->tokens, t, c->raw, 0}; /* <end> not stored, but counted */
            finish(b, &h, t + 1, o->length_alpha);
            continue;
        }
        if (b->n_next == b->B) continue;
        Hyp *n = &b->next[b->n_next];
        memcpy(n->tokens, from->tokens, (size_t)t * sizeof *n->tokens);
        n->tokens[t] = c->token;
        n->len = t + 1;
        n->raw = c->raw;
        b->parents[b->n_next] = c->beam;
        b->last[b->n_next++] = c->token;
    }
    Hyp *swap = b->live;
    b->live = b->next;
    b->next = swap;
    b->n_live = b->n_next;
}

CapStatus cap_beam_search(CapBeamStepFn step, void *ctx, int V, const CapBeamOptions *o,
                          int32_t *out, int *out_len, double *out_score, char *err,
                          size_t err_size) {
    if (o->beam_size < 1 || o->max_len < 1 || V < 1)
        return cap_fail(err, err_size, CAP_E_ARG, "beam search needs beam_size, max_len and V >= 1");
    Beams b;
    if (beams_alloc(&b, o->beam_size, o->max_len, V)) {
        beams_free(&b);
        return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory (beam search)");
    }
    b.n_live = 1;
    b.last[0] = o->start_id;
    b.parents[0] = -1;
    CapStatus st = CAP_OK;
    for (int t = 0; t < o->max_len && b.n_live > 0 && b.n_done < b.B; t++) {
        st = step(ctx, t, b.n_live, b.last, b.parents, b.logits, err, err_size);
        if (st) break;
        collect_candidates(&b);
        advance(&b, o, t);
        if (t == o->max_len - 1) /* out of room: live beams end here, unterminated */
            for (int i = 0; i < b.n_live; i++) finish(&b, &b.live[i], b.live[i].len, o->length_alpha);
    }
    if (!st && b.n_done == 0)
        st = cap_fail(err, err_size, CAP_E_ARG, "beam search found no hypothesis (all logits -inf)");
    if (!st) {
        int best = 0;
        for (int i = 1; i < b.n_done; i++)
            if (b.done[i].norm > b.done[best].norm) best = i;
        memcpy(out, b.done[best].tokens, (size_t)b.done[best].len * sizeof *out);
        *out_len = b.done[best].len;
        if (out_score) *out_score = b.done[best].norm;
    }
    beams_free(&b);
    return st;
}
