/* metrics.c — corpus BLEU-1..4 and CIDEr-D as pycocoevalcap computes them, and the PTB-like
 * tokenizer. docs/metrics.md states the formulas; this file follows them step by step.
 *
 * Representation: words are interned to integer ids (a per-call hash table); an n-gram is up
 * to four ids plus its length; a "cooked" sentence is its distinct n-grams (n = 1..4) with
 * their counts, sorted, so that clipping, document frequencies and dot products are merges
 * and binary searches over sorted arrays. Everything is freed before returning.
 */
#include "metrics.h"
#include "cap_internal.h"
#include "strbuf.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NUMPY_E 2.718281828459045 /* np.e: CIDEr-D's penalty is np.e ** x, not exp(x) */

/* ---- words -> ids ---------------------------------------------------------------------- */

typedef struct Vocab {
    const char **word; /* borrowed pointers into the sentences */
    size_t *len;
    int32_t *slot;     /* hash slots: word id or -1 */
    size_t n, cap, n_slots;
} Vocab;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static void vocab_free(Vocab *v) {
    free(v->word);
    free(v->len);
    free(v->slot);
    memset(v, 0, sizeof *v);
}

static int vocab_rehash(Vocab *v, size_t n_slots) {
    int32_t *slot = malloc(n_slots * sizeof *slot);
    if (!slot) return -1;
    for (size_t i = 0; i < n_slots; i++) slot[i] = -1;
    for (size_t id = 0; id < v->n; id++) {
        size_t h = (size_t)hash_bytes(v->word[id], v->len[id]) & (n_slots - 1);
        while (slot[h] >= 0) h = (h + 1) & (n_slots - 1);
        slot[h] = (int32_t)id;
    }
    free(v->slot);
    v->slot = slot;
    v->n_slots = n_slots;
    return 0;
}

/* The id of word s[0..n), added if new; -1 when out of memory. */
static int32_t vocab_id(Vocab *v, const char *s, size_t n) {
    if (2 * (v->n + 1) > v->n_slots && vocab_rehash(v, v->n_slots ? 2 * v->n_slots : 64))
        return -1;
    size_t h = (size_t)hash_bytes(s, n) & (v->n_slots - 1);
    for (; v->slot[h] >= 0; h = (h + 1) & (v->n_slots - 1)) {
        int32_t id = v->slot[h];
        if (v->len[id] == n && memcmp(v->word[id], s, n) == 0) return id;
    }
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 64;
        const char **w = realloc(v->word, cap * sizeof *w);
        if (!w) return -1;
        v->word = w;
        size_t *l = realloc(v->len, cap * sizeof *l);
        if (!l) return -1;
        v->len = l;
        v->cap = cap;
    }
    v->word[v->n] = s;
    v->len[v->n] = n;
    v->slot[h] = (int32_t)v->n;
    return (int32_t)v->n++;
}

/* ---- cooked sentences ------------------------------------------------------------------ */

typedef struct Ngram {
    int32_t w[4];
    int32_t len; /* 1..4 */
} Ngram;

typedef struct NgramCount {
    Ngram g;
    double count;
} NgramCount;

typedef struct Cooked {
    NgramCount *ng; /* distinct n-grams, sorted by ngram_cmp */
    size_t n_ng;
    int n_words;
} Cooked;

static int ngram_cmp(const Ngram *a, const Ngram *b) {
    if (a->len != b->len) return a->len < b->len ? -1 : 1;
    for (int i = 0; i < a->len; i++)
        if (a->w[i] != b->w[i]) return a->w[i] < b->w[i] ? -1 : 1;
    return 0;
}

static int ngram_count_cmp(const void *x, const void *y) {
    return ngram_cmp(&((const NgramCount *)x)->g, &((const NgramCount *)y)->g);
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Sorts items and merges equal n-grams: counts summed (merge = 0) or maxed (merge = 1). */
static size_t sort_merge(NgramCount *items, size_t n, int merge_max) {
    if (n == 0) return 0;
    qsort(items, n, sizeof *items, ngram_count_cmp);
    size_t out = 0;
    for (size_t i = 1; i < n; i++) {
        if (ngram_cmp(&items[out].g, &items[i].g) == 0) {
            if (merge_max) items[out].count = fmax(items[out].count, items[i].count);
            else items[out].count += items[i].count;
        } else {
            items[++out] = items[i];
        }
    }
    return out + 1;
}

/* Splits s on whitespace and counts its n-grams of length 1..max_n. */
static int cook(const char *s, Vocab *v, int max_n, Cooked *out) {
    memset(out, 0, sizeof *out);
    size_t cap = 16, n_words = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return -1;
    for (const char *p = s; *p;) {
        while (*p && is_space(*p)) p++;
        if (!*p) break;
        const char *start = p;
        while (*p && !is_space(*p)) p++;
        if (n_words == cap) {
            int32_t *grown = realloc(ids, 2 * cap * sizeof *ids);
            if (!grown) goto fail;
            ids = grown;
            cap *= 2;
        }
        int32_t id = vocab_id(v, start, (size_t)(p - start));
        if (id < 0) goto fail;
        ids[n_words++] = id;
    }
    size_t total = 0;
    for (int k = 1; k <= max_n; k++) total += n_words >= (size_t)k ? n_words - (size_t)k + 1 : 0;
    out->ng = malloc((total ? total : 1) * sizeof *out->ng);
    if (!out->ng) goto fail;
    size_t m = 0;
    for (int k = 1; k <= max_n; k++)
        for (size_t i = 0; i + (size_t)k <= n_words; i++) {
            NgramCount *c = &out->ng[m++];
            memset(c, 0, sizeof *c);
            c->g.len = k;
            memcpy(c->g.w, ids + i, (size_t)k * sizeof *ids);
            c->count = 1;
        }
    out->n_ng = sort_merge(out->ng, m, 0);
    out->n_words = (int)n_words;
    free(ids);
    return 0;
fail:
    free(ids);
    return -1;
}

static void cooked_free(Cooked *c) {
    free(c->ng);
    c->ng = NULL;
}

/* The entry for g in sorted items[0..n), or NULL. */
static const NgramCount *find_ngram(const NgramCount *items, size_t n, const Ngram *g) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = ngram_cmp(&items[mid].g, g);
        if (c == 0) return &items[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static CapStatus check_items(const CapScoreItem *items, int n, char *err, size_t err_size) {
    if (!items || n < 1) return cap_fail(err, err_size, CAP_E_ARG, "no sentences to score");
    for (int i = 0; i < n; i++) {
        if (!items[i].candidate)
            return cap_fail(err, err_size, CAP_E_ARG, "item %d: no candidate sentence", i);
        if (items[i].n_refs < 1 || !items[i].refs)
            return cap_fail(err, err_size, CAP_E_ARG, "item %d: no reference sentences", i);
        for (int r = 0; r < items[i].n_refs; r++)
            if (!items[i].refs[r])
                return cap_fail(err, err_size, CAP_E_ARG, "item %d: reference %d is NULL", i, r);
    }
    return CAP_OK;
}

static CapStatus out_of_memory(char *err, size_t err_size) {
    return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory while scoring");
}

/* ---- BLEU -------------------------------------------------------------------------------- */

void cap_bleu_from_counts(const CapBleuCounts *c, double bleu[CAP_BLEU_N]) {
    double ratio = (c->testlen + CAP_BLEU_TINY) / (c->reflen + CAP_BLEU_SMALL);
    double prod = 1.0;
    for (int n = 1; n <= CAP_BLEU_N; n++) {
        prod *= (c->correct[n - 1] + CAP_BLEU_TINY) / (c->guess[n - 1] + CAP_BLEU_SMALL);
        bleu[n - 1] = pow(prod, 1.0 / n);
        if (ratio < 1) bleu[n - 1] *= exp(1 - 1 / ratio);
    }
}

/* The reference length closest to testlen; on a tie the shorter one. */
static int closest_reflen(const Cooked *refs, int n_refs, int testlen) {
    int best = refs[0].n_words;
    for (int r = 1; r < n_refs; r++) {
        int l = refs[r].n_words, d = abs(l - testlen), bd = abs(best - testlen);
        if (d < bd || (d == bd && l < best)) best = l;
    }
    return best;
}

/* Adds one image's counts: clipped matches against the max count over its references. */
static int bleu_add_item(const CapScoreItem *it, Vocab *v, CapBleuCounts *t) {
    Cooked test, *refs = calloc((size_t)it->n_refs, sizeof *refs);
    NgramCount *maxc = NULL;
    int rc = -1;
    if (!refs || cook(it->candidate, v, CAP_BLEU_N, &test)) {
        free(refs);
        return -1;
    }
    size_t total = 0;
    for (int r = 0; r < it->n_refs; r++) {
        if (cook(it->refs[r], v, CAP_BLEU_N, &refs[r])) goto done;
        total += refs[r].n_ng;
    }
    maxc = malloc((total ? total : 1) * sizeof *maxc);
    if (!maxc) goto done;
    size_t m = 0;
    for (int r = 0; r < it->n_refs; r++)
        for (size_t i = 0; i < refs[r].n_ng; i++) maxc[m++] = refs[r].ng[i];
    m = sort_merge(maxc, m, 1);
    t->testlen += test.n_words;
    t->reflen += closest_reflen(refs, it->n_refs, test.n_words);
    for (int k = 0; k < CAP_BLEU_N; k++) t->guess[k] += test.n_words > k ? test.n_words - k : 0;
    for (size_t i = 0; i < test.n_ng; i++) {
        const NgramCount *ref = find_ngram(maxc, m, &test.ng[i].g);
        if (ref) t->correct[test.ng[i].g.len - 1] += fmin(ref->count, test.ng[i].count);
    }
    rc = 0;
done:
    free(maxc);
    for (int r = 0; r < it->n_refs; r++) cooked_free(&refs[r]);
    free(refs);
    cooked_free(&test);
    return rc;
}

CapStatus cap_bleu(const CapScoreItem *items, int n, double bleu[CAP_BLEU_N],
                   CapBleuCounts *counts, char *err, size_t err_size) {
    CapStatus st = check_items(items, n, err, err_size);
    if (st) return st;
    CapBleuCounts t;
    memset(&t, 0, sizeof t);
    Vocab v = {0};
    for (int i = 0; i < n; i++)
        if (bleu_add_item(&items[i], &v, &t)) {
            vocab_free(&v);
            return out_of_memory(err, err_size);
        }
    vocab_free(&v);
    cap_bleu_from_counts(&t, bleu);
    if (counts) *counts = t;
    return CAP_OK;
}

/* ---- CIDEr-D ----------------------------------------------------------------------------- */

/* A sentence as tf-idf weights per n-gram (same order as its Cooked), with per-n norms and
 * pycocoevalcap's "length": the number of bigrams (its counts2vec adds term frequencies where
 * the n-gram index is 1), i.e. max(0, words - 1). */
typedef struct TfIdf {
    const Cooked *c;
    double *w;
    double norm[CAP_CIDER_N];
    double length;
} TfIdf;

typedef struct DocFreq {
    NgramCount *df; /* count = number of images whose references contain the n-gram */
    size_t n;
    double log_n_images;
} DocFreq;

static int tfidf_make(const Cooked *c, const DocFreq *d, TfIdf *out) {
    memset(out, 0, sizeof *out);
    out->c = c;
    out->w = malloc((c->n_ng ? c->n_ng : 1) * sizeof *out->w);
    if (!out->w) return -1;
    for (size_t i = 0; i < c->n_ng; i++) {
        const NgramCount *f = find_ngram(d->df, d->n, &c->ng[i].g);
        double df = log(fmax(1.0, f ? f->count : 0.0));
        int k = c->ng[i].g.len - 1;
        out->w[i] = c->ng[i].count * (d->log_n_images - df);
        out->norm[k] += out->w[i] * out->w[i];
        if (k == 1) out->length += c->ng[i].count;
    }
    for (int k = 0; k < CAP_CIDER_N; k++) out->norm[k] = sqrt(out->norm[k]);
    return 0;
}

/* Per-n clipped cosine similarity times the Gaussian length penalty, added to val. */
static void cider_sim_add(const TfIdf *h, const TfIdf *r, double val[CAP_CIDER_N]) {
    double s[CAP_CIDER_N] = {0};
    size_t i = 0, j = 0;
    while (i < h->c->n_ng && j < r->c->n_ng) {
        int c = ngram_cmp(&h->c->ng[i].g, &r->c->ng[j].g);
        if (c < 0) i++;
        else if (c > 0) j++;
        else {
            s[h->c->ng[i].g.len - 1] += fmin(h->w[i], r->w[j]) * r->w[j];
            i++, j++;
        }
    }
    double delta = h->length - r->length;
    double penalty = pow(NUMPY_E, -(delta * delta) / (2 * CAP_CIDER_SIGMA * CAP_CIDER_SIGMA));
    for (int k = 0; k < CAP_CIDER_N; k++) {
        if (h->norm[k] != 0 && r->norm[k] != 0) s[k] /= h->norm[k] * r->norm[k];
        val[k] += s[k] * penalty;
    }
}

/* Document frequencies: each image counts once for every n-gram of any of its references. */
static int doc_freq(Cooked *const *refs, const CapScoreItem *items, int n, DocFreq *d) {
    size_t total = 0;
    for (int i = 0; i < n; i++)
        for (int r = 0; r < items[i].n_refs; r++) total += refs[i][r].n_ng;
    d->df = malloc((total ? total : 1) * sizeof *d->df);
    if (!d->df) return -1;
    size_t m = 0;
    for (int i = 0; i < n; i++) {
        size_t start = m;
        for (int r = 0; r < items[i].n_refs; r++)
            for (size_t k = 0; k < refs[i][r].n_ng; k++) {
                d->df[m] = refs[i][r].ng[k];
                d->df[m++].count = 1;
            }
        m = start + sort_merge(d->df + start, m - start, 1); /* the image's n-gram set */
    }
    d->n = sort_merge(d->df, m, 0);
    d->log_n_images = log((double)n);
    return 0;
}

static int cider_image(const Cooked *test, const Cooked *refs, int n_refs, const DocFreq *d,
                       double *score) {
    TfIdf h;
    if (tfidf_make(test, d, &h)) return -1;
    double val[CAP_CIDER_N] = {0};
    for (int r = 0; r < n_refs; r++) {
        TfIdf rv;
        if (tfidf_make(&refs[r], d, &rv)) {
            free(h.w);
            return -1;
        }
        double one[CAP_CIDER_N] = {0};
        cider_sim_add(&h, &rv, one);
        for (int k = 0; k < CAP_CIDER_N; k++) val[k] += one[k];
        free(rv.w);
    }
    free(h.w);
    double mean = 0;
    for (int k = 0; k < CAP_CIDER_N; k++) mean += val[k];
    mean /= CAP_CIDER_N;
    *score = mean / n_refs * 10.0;
    return 0;
}

static void cider_free_all(Cooked *tests, Cooked **refs, const CapScoreItem *items, int n) {
    for (int i = 0; i < n; i++) {
        if (tests) cooked_free(&tests[i]);
        if (refs && refs[i]) {
            for (int r = 0; r < items[i].n_refs; r++) cooked_free(&refs[i][r]);
            free(refs[i]);
        }
    }
    free(tests);
    free(refs);
}

CapStatus cap_cider_d(const CapScoreItem *items, int n, double *mean, double *per_image,
                      char *err, size_t err_size) {
    CapStatus st = check_items(items, n, err, err_size);
    if (st) return st;
    Vocab v = {0};
    DocFreq d = {0};
    Cooked *tests = calloc((size_t)n, sizeof *tests);
    Cooked **refs = calloc((size_t)n, sizeof *refs);
    int bad = !tests || !refs;
    for (int i = 0; i < n && !bad; i++) {
        refs[i] = calloc((size_t)items[i].n_refs, sizeof **refs);
        bad = !refs[i] || cook(items[i].candidate, &v, CAP_CIDER_N, &tests[i]);
        for (int r = 0; r < items[i].n_refs && !bad; r++)
            bad = cook(items[i].refs[r], &v, CAP_CIDER_N, &refs[i][r]);
    }
    bad = bad || doc_freq(refs, items, n, &d);
    double sum = 0;
    for (int i = 0; i < n && !bad; i++) {
        double s = 0;
        bad = cider_image(&tests[i], refs[i], items[i].n_refs, &d, &s);
        if (per_image) per_image[i] = s;
        sum += s;
    }
    free(d.df);
    vocab_free(&v);
    cider_free_all(tests, refs, items, n);
    if (bad) return out_of_memory(err, err_size);
    *mean = sum / n;
    return CAP_OK;
}

/* ---- PTB-like tokenizer -------------------------------------------------------------------- */

/* Characters that always stand alone in PTB output and are all dropped afterwards:
 * brackets (-LRB- ...), double quotes and backquotes (`` ''), ? ! ; */
static int is_dropped_sep(char c) { return c && strchr("\"()[]{}?!;`", c) != NULL; }

/* Appends word w[0..n) to b, after a space unless it is the first. */
static void put_word(StrBuf *b, const char *w, size_t n) {
    if (n == 0) return;
    if (b->len) strbuf_putc(b, ' ');
    strbuf_append(b, w, n);
}

static int all_of(const char *s, size_t n, const char *set) {
    for (size_t i = 0; i < n; i++)
        if (!strchr(set, s[i])) return 0;
    return n > 0;
}

/* Emits word w[0..n) (lowercase, no separators) with clitics split and punctuation tokens
 * dropped. */
static void emit_word(StrBuf *b, const char *w, size_t n) {
    while (n && strchr("'.,:", w[0])) w++, n--;          /* leading quotes, commas */
    while (n && strchr("'.,:", w[n - 1])) n--;           /* trailing periods, commas, quotes */
    if (n == 0 || all_of(w, n, "-")) return;             /* "-", "--" */
    static const char *const clitics[] = {"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"};
    for (size_t i = 0; i < sizeof clitics / sizeof *clitics; i++) {
        size_t k = strlen(clitics[i]);
        if (n > k && memcmp(w + n - k, clitics[i], k) == 0) {
            put_word(b, w, n - k);
            put_word(b, w + n - k, k);
            return;
        }
    }
    put_word(b, w, n);
}

/* A ',' or ':' between two digits stays (1,000 and 10:30); elsewhere it separates. */
static int is_inner_sep(const char *s, size_t i, size_t n) {
    char c = s[i];
    if (c == ',' || c == ':')
        return !(i > 0 && i + 1 < n && isdigit((unsigned char)s[i - 1]) &&
                 isdigit((unsigned char)s[i + 1]));
    if (c == '.') return i + 1 < n && s[i + 1] == '.'; /* "..." inside a chunk */
    return is_dropped_sep(c);
}

char *cap_ptb_tokenize(const char *text) {
    size_t len = strlen(text);
    char *low = malloc(len + 1);
    StrBuf b = {0};
    if (!low) return NULL;
    for (size_t i = 0; i <= len; i++) low[i] = (char)tolower((unsigned char)text[i]);
    for (size_t i = 0; i < len;) {
        while (i < len && (is_space(low[i]) || is_inner_sep(low, i, len))) i++;
        size_t start = i;
        while (i < len && !is_space(low[i]) && !is_inner_sep(low, i, len)) i++;
        if (i > start) emit_word(&b, low + start, i - start);
    }
    free(low);
    return strbuf_take(&b);
}
