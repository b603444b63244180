/* caption_eval.c — cap_eval_split (caption.h): caption a dataset split with a CapCaptioner
 * and score it with BLEU-1..4 and CIDEr-D. Images are read and preprocessed in this thread
 * (a test split is small); one that cannot be read is skipped, reported and counted.
 */
#include "caption.h"

#include <stdlib.h>
#include <string.h>

#include "cap_internal.h"
#include "data.h"
#include "image.h"
#include "metrics.h"
#include "vocab.h"

void cap_eval_result_free(CapEvalResult *r) {
    if (!r) return;
    for (int i = 0; r->captions && i < r->n; i++) free(r->captions[i]);
    free(r->captions);
    free(r->image_ids);
    free(r->images);
    memset(r, 0, sizeof *r);
}

/* Decoded caption of tokens[0..len) (vocab_decode: words, punctuation attached). */
static char *decode(const Vocab *v, const int32_t *tokens, int len) {
    size_t need = vocab_decode(v, tokens, len, NULL, 0) + 1;
    char *s = malloc(need);
    if (s) vocab_decode(v, tokens, len, s, need);
    return s;
}

typedef struct Chunk {
    float *images;    /* B x 3 x S x S */
    int32_t *index;   /* B dataset indices */
    uint32_t *streams;
    int32_t *tokens;  /* B x T1 */
    int *lens;
} Chunk;

static void chunk_free(Chunk *k) {
    free(k->images);
    free(k->index);
    free(k->streams);
    free(k->tokens);
    free(k->lens);
}

static int chunk_alloc(Chunk *k, int B, int S, int T1) {
    k->images = malloc((size_t)B * 3 * (size_t)S * (size_t)S * sizeof *k->images);
    k->index = malloc((size_t)B * sizeof *k->index);
    k->streams = malloc((size_t)B * sizeof *k->streams);
    k->tokens = malloc((size_t)B * (size_t)T1 * sizeof *k->tokens);
    k->lens = malloc((size_t)B * sizeof *k->lens);
    return k->images && k->index && k->streams && k->tokens && k->lens;
}

/* Captions the m images of the chunk and appends them to res. */
static CapStatus caption_chunk(CapCaptioner *c, const Dataset *ds, const Vocab *v,
                               const CapCaptionOptions *o, Chunk *k, int m, CapEvalResult *res,
                               char *err, size_t err_size) {
    CapStatus st = cap_caption_images(c, k->images, m, o, k->streams, k->tokens, k->lens, err,
                                      err_size);
    int T1 = cap_captioner_max_tokens(c);
    for (int b = 0; !st && b < m; b++) {
        char *s = decode(v, k->tokens + (size_t)b * (size_t)T1, k->lens[b]);
        if (!s) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
        res->captions[res->n] = s;
        res->images[res->n] = k->index[b];
        res->image_ids[res->n++] = ds->images[k->index[b]].id;
    }
    return st;
}

static CapStatus caption_all(CapCaptioner *c, const Dataset *ds, const Vocab *v,
                             const CapCaptionOptions *o, const int32_t *idx, int n,
                             void (*on_skip)(void *, const char *), void *skip_ctx,
                             CapEvalResult *res, char *err, size_t err_size) {
    int B = cap_captioner_batch(c), S = cap_captioner_image_size(c);
    Chunk k = {0};
    CapStatus st = chunk_alloc(&k, B, S, cap_captioner_max_tokens(c))
                       ? CAP_OK : cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    size_t one = 3 * (size_t)S * (size_t)S;
    int m = 0;
    for (int i = 0; !st && i < n; i++) {
        char why[1024];
        const DataImage *im = &ds->images[idx[i]];
        if (image_load_preprocessed(im->path, S, k.images + (size_t)m * one, why, sizeof why)) {
            res->skipped++;
            if (on_skip) on_skip(skip_ctx, why);
            continue;
        }
        k.index[m] = idx[i];
        k.streams[m++] = (uint32_t)idx[i];
        if (m == B || i == n - 1) {
            st = caption_chunk(c, ds, v, o, &k, m, res, err, err_size);
            m = 0;
        }
    }
    if (!st && m > 0) st = caption_chunk(c, ds, v, o, &k, m, res, err, err_size);
    chunk_free(&k);
    return st;
}

/* PTB-tokenized candidates and references of res's images; scores into res. */
static CapStatus score(const Dataset *ds, CapEvalResult *res, char *err, size_t err_size) {
    CapScoreItem *items = calloc((size_t)res->n + 1, sizeof *items);
    char **cands = calloc((size_t)res->n + 1, sizeof *cands);
    char ***refs = calloc((size_t)res->n + 1, sizeof *refs);
    CapStatus st = items && cands && refs ? CAP_OK
                                          : cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    for (int i = 0; !st && i < res->n; i++) {
        const DataImage *im = &ds->images[res->images[i]];
        cands[i] = cap_ptb_tokenize(res->captions[i]);
        refs[i] = calloc((size_t)im->n_captions, sizeof *refs[i]);
        int ok = cands[i] && refs[i];
        for (int r = 0; ok && r < im->n_captions; r++)
            ok = !!(refs[i][r] = cap_ptb_tokenize(ds->captions[im->first_caption + r]));
        if (!ok) st = cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
        items[i] = (CapScoreItem){cands[i], (const char *const *)refs[i], im->n_captions};
    }
    if (!st) st = cap_bleu(items, res->n, res->bleu, NULL, err, err_size);
    if (!st) st = cap_cider_d(items, res->n, &res->cider, NULL, err, err_size);
    for (int i = 0; i < res->n; i++) {
        const DataImage *im = &ds->images[res->images[i]];
        for (int r = 0; refs && refs[i] && r < im->n_captions; r++) free(refs[i][r]);
        if (refs) free(refs[i]);
        if (cands) free(cands[i]);
    }
    free(items);
    free(cands);
    free(refs);
    return st;
}

CapStatus cap_eval_split(CapCaptioner *c, const Dataset *ds, int split, const Vocab *v,
                         const CapCaptionOptions *o, int limit,
                         void (*on_skip)(void *ctx, const char *message), void *skip_ctx,
                         CapEvalResult *res, char *err, size_t err_size) {
    memset(res, 0, sizeof *res);
    int32_t n = 0;
    int32_t *idx = data_split_images(ds, (DataSplit)split, &n);
    if (n < 0) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    if (n == 0)
        return cap_fail(err, err_size, CAP_E_ARG, "%s: the %s split has no images", ds->source,
                        split == DATA_TEST ? "test" : split == DATA_VAL ? "val" : "train");
    if (limit > 0 && limit < n) n = limit;
    res->image_ids = calloc((size_t)n, sizeof *res->image_ids);
    res->images = calloc((size_t)n, sizeof *res->images);
    res->captions = calloc((size_t)n, sizeof *res->captions);
    CapStatus st = res->image_ids && res->images && res->captions
                       ? CAP_OK : cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    if (!st) st = caption_all(c, ds, v, o, idx, n, on_skip, skip_ctx, res, err, err_size);
    if (!st && res->n == 0)
        st = cap_fail(err, err_size, CAP_E_IO, "%s: no image of the split could be read",
                      ds->source);
    if (!st) st = score(ds, res, err, err_size);
    free(idx);
    if (st) cap_eval_result_free(res);
    return st;
}
