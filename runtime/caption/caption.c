/* caption.c — the captioning loop over encode / decode_step (caption.h).
 *
 * Wiring, by name (docs/training.md, "Sampling"): decode_step's `token` and `pos` are set
 * here; a decode_step input named like an encode output (cross_k, cross_v) is that output,
 * unchanged for the whole caption; a decode_step input named like a decode_step output
 * (self_k, self_v, key_mask) is a cache: zeros at pos 0, then the previous step's output. The
 * caches ping-pong between two buffers, so an entry never reads and writes one buffer. Rows
 * of a tensor are along axis 1 for rank-5 (layer-stacked) tensors, else axis 0.
 */
#include "caption.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cap_internal.h"

#define MAX_IO 16

typedef struct Tensor {
    const CapTensorInfo *info;
    float *buf[2]; /* caches: [cur, next]; others: buf[0] only */
} Tensor;

struct CapCaptioner {
    CapSession *s;
    const CapEntry *enc, *dec;
    int B, S, T1, V;
    int32_t start_id, end_id;
    void *enc_out[MAX_IO];      /* encode outputs (host) */
    int dec_src[MAX_IO];        /* decode input i: -1 token, -2 pos, -3 cache, else enc output */
    int dec_cache_out[MAX_IO];  /* decode input i (cache): its decode output index */
    Tensor cache[MAX_IO];       /* per decode input that is a cache */
    float *beam_cross[MAX_IO];  /* per decode input fed from encode: rows of one image */
    int logits_out;
    int32_t *token;
    int32_t pos;
    float *images;              /* B x 3 x S x S */
    float *logits;              /* B x V (decode_step's output) */
    float *row;                 /* V: a row's logits, filtered in place by the sampler */
};

/* ---- setup ------------------------------------------------------------------------------- */

static int find_io(const CapTensorInfo *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return i;
    return -1;
}

static int row_axis(const CapTensorInfo *t) { return t->rank == 5 ? 1 : 0; }

static CapStatus bad(const CapCaptioner *c, const char *what, char *err, size_t err_size) {
    return cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                    "%s cannot caption: %s (docs/training.md, \"Sampling\")",
                    cap_model_path(c->s->m), what);
}

static CapStatus check_entries(CapCaptioner *c, char *err, size_t err_size) {
    const CapArtifact *a = cap_model_artifact(c->s->m);
    int ei = cap_model_find_entry(c->s->m, "encode"), di = cap_model_find_entry(c->s->m, "decode_step");
    if (ei < 0 || di < 0) return bad(c, "no 'encode' and 'decode_step' entry points", err, err_size);
    c->enc = &a->entries[ei];
    c->dec = &a->entries[di];
    const CapTensorInfo *im = &c->enc->inputs[0];
    if (c->enc->n_inputs != 1 || strcmp(im->name, "image") || im->rank != 4 || im->dims[1] != 3 ||
        im->dims[2] != im->dims[3])
        return bad(c, "encode must take one input 'image' f32[B,3,S,S]", err, err_size);
    if (c->enc->n_outputs > MAX_IO || c->dec->n_inputs > MAX_IO || c->dec->n_outputs > MAX_IO)
        return bad(c, "too many encode / decode_step inputs or outputs", err, err_size);
    c->B = (int)im->dims[0];
    c->S = (int)im->dims[2];
    c->logits_out = find_io(c->dec->outputs, c->dec->n_outputs, "logits");
    const CapTensorInfo *lg = c->logits_out >= 0 ? &c->dec->outputs[c->logits_out] : NULL;
    if (!lg || lg->rank != 2 || lg->dims[0] != c->B || lg->dtype != CAP_DT_F32)
        return bad(c, "decode_step must output 'logits' f32[B,V]", err, err_size);
    c->V = (int)lg->dims[1];
    c->start_id = a->start_id;
    c->end_id = a->end_id;
    return CAP_OK;
}

/* Where each decode_step input comes from. */
static CapStatus wire_decode(CapCaptioner *c, char *err, size_t err_size) {
    c->T1 = 0;
    for (int i = 0; i < c->dec->n_inputs; i++) {
        const CapTensorInfo *t = &c->dec->inputs[i];
        int o = find_io(c->dec->outputs, c->dec->n_outputs, t->name);
        int e = find_io(c->enc->outputs, c->enc->n_outputs, t->name);
        c->dec_cache_out[i] = -1;
        if (strcmp(t->name, "token") == 0) {
            if (t->rank != 1 || t->dims[0] != c->B || t->dtype != CAP_DT_I32)
                return bad(c, "decode_step's 'token' must be i32[B]", err, err_size);
            c->dec_src[i] = -1;
        } else if (strcmp(t->name, "pos") == 0) {
            if (t->numel != 1 || t->dtype != CAP_DT_I32)
                return bad(c, "decode_step's 'pos' must be i32[]", err, err_size);
            c->dec_src[i] = -2;
        } else if (o >= 0) {
            if (cap_tensor_bytes(&c->dec->outputs[o]) != cap_tensor_bytes(t) ||
                t->dims[row_axis(t)] != c->B || t->dtype != CAP_DT_F32)
                return bad(c, "a decode_step cache output differs from its input", err, err_size);
            c->dec_src[i] = -3;
            c->dec_cache_out[i] = o;
            if (t->rank == 2) c->T1 = (int)t->dims[1];
        } else if (e >= 0) {
            if (cap_tensor_bytes(&c->enc->outputs[e]) != cap_tensor_bytes(t) ||
                t->dims[row_axis(t)] != c->B)
                return bad(c, "a decode_step input differs from the encode output of its name",
                           err, err_size);
            c->dec_src[i] = e;
        } else {
            return bad(c, "a decode_step input is neither token, pos, a cache nor an encode "
                       "output", err, err_size);
        }
    }
    if (c->T1 <= 0) return bad(c, "decode_step has no key_mask cache f32[B,T-1]", err, err_size);
    for (int o = 0; o < c->dec->n_outputs; o++) {
        int fed = o == c->logits_out || (c->dec->output_state && c->dec->output_state[o] >= 0);
        for (int i = 0; i < c->dec->n_inputs; i++) fed |= c->dec_cache_out[i] == o;
        if (!fed) return bad(c, "a decode_step output is neither logits nor a cache", err, err_size);
    }
    return CAP_OK;
}

static CapStatus alloc_buffers(CapCaptioner *c, char *err, size_t err_size) {
    int ok = 1;
    for (int i = 0; i < c->enc->n_outputs; i++)
        ok &= !!(c->enc_out[i] = calloc(1, cap_tensor_bytes(&c->enc->outputs[i]) + 4));
    for (int i = 0; i < c->dec->n_inputs; i++) {
        size_t n = cap_tensor_bytes(&c->dec->inputs[i]) + 4;
        if (c->dec_src[i] == -3) {
            c->cache[i].info = &c->dec->inputs[i];
            ok &= !!(c->cache[i].buf[0] = calloc(1, n));
            ok &= !!(c->cache[i].buf[1] = calloc(1, n));
        } else if (c->dec_src[i] >= 0) {
            ok &= !!(c->beam_cross[i] = calloc(1, n));
        }
    }
    c->token = calloc((size_t)c->B, sizeof *c->token);
    c->images = calloc((size_t)c->B * 3 * (size_t)c->S * (size_t)c->S, sizeof *c->images);
    c->logits = calloc((size_t)c->B * (size_t)c->V, sizeof *c->logits);
    c->row = calloc((size_t)c->V, sizeof *c->row);
    ok &= c->token && c->images && c->logits && c->row;
    return ok ? CAP_OK : cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
}

CapStatus cap_captioner_new(CapSession *s, CapCaptioner **out, char *err, size_t err_size) {
    *out = NULL;
    CapCaptioner *c = calloc(1, sizeof *c);
    if (!c) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    c->s = s;
    CapStatus st = check_entries(c, err, err_size);
    if (!st) st = wire_decode(c, err, err_size);
    if (!st) st = alloc_buffers(c, err, err_size);
    if (st) {
        cap_captioner_free(c);
        return st;
    }
    *out = c;
    return CAP_OK;
}

void cap_captioner_free(CapCaptioner *c) {
    if (!c) return;
    for (int i = 0; i < MAX_IO; i++) {
        free(c->enc_out[i]);
        free(c->cache[i].buf[0]);
        free(c->cache[i].buf[1]);
        free(c->beam_cross[i]);
    }
    free(c->token);
    free(c->images);
    free(c->logits);
    free(c->row);
    free(c);
}

int cap_captioner_batch(const CapCaptioner *c) { return c->B; }
int cap_captioner_image_size(const CapCaptioner *c) { return c->S; }
int cap_captioner_max_tokens(const CapCaptioner *c) { return c->T1; }
int cap_captioner_vocab(const CapCaptioner *c) { return c->V; }

/* ---- running the entries ------------------------------------------------------------------ */

static CapStatus run_encode(CapCaptioner *c, char *err, size_t err_size) {
    const void *in[1] = {c->images};
    return cap_session_run(c->s, "encode", in, c->enc_out, err, err_size);
}

static void reset_caches(CapCaptioner *c) {
    for (int i = 0; i < c->dec->n_inputs; i++)
        if (c->cache[i].info) memset(c->cache[i].buf[0], 0, cap_tensor_bytes(c->cache[i].info));
}

/* One decode_step at c->pos on c->token; caches advance (cur <- the step's output). */
static CapStatus run_decode(CapCaptioner *c, int beam, char *err, size_t err_size) {
    const void *in[MAX_IO];
    void *out[MAX_IO] = {0};
    for (int i = 0; i < c->dec->n_inputs; i++) {
        int src = c->dec_src[i];
        in[i] = src == -1 ? (const void *)c->token
                : src == -2 ? (const void *)&c->pos
                : src == -3 ? (const void *)c->cache[i].buf[0]
                : beam ? (const void *)c->beam_cross[i] : (const void *)c->enc_out[src];
        if (src == -3) out[c->dec_cache_out[i]] = c->cache[i].buf[1];
    }
    out[c->logits_out] = c->logits;
    CapStatus st = cap_session_run(c->s, "decode_step", in, out, err, err_size);
    for (int i = 0; !st && i < c->dec->n_inputs; i++) {
        if (!c->cache[i].info) continue;
        float *t = c->cache[i].buf[0];
        c->cache[i].buf[0] = c->cache[i].buf[1];
        c->cache[i].buf[1] = t;
    }
    return st;
}

/* dst row r = src row rows[r] for r < n, along t's row axis (B rows). */
static void gather_rows(const CapTensorInfo *t, int B, float *dst, const float *src,
                        const int32_t *rows, int n) {
    int axis = row_axis(t);
    size_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) outer *= (size_t)t->dims[d];
    for (int d = axis + 1; d < t->rank; d++) inner *= (size_t)t->dims[d];
    for (size_t o = 0; o < outer; o++)
        for (int r = 0; r < n; r++)
            memcpy(dst + (o * (size_t)B + (size_t)r) * inner,
                   src + (o * (size_t)B + (size_t)rows[r]) * inner, inner * sizeof *dst);
}

/* Copies images into the B rows, repeating the last one. */
static void fill_images(CapCaptioner *c, const float *images, int n) {
    size_t one = 3 * (size_t)c->S * (size_t)c->S;
    for (int b = 0; b < c->B; b++)
        memcpy(c->images + (size_t)b * one, images + (size_t)(b < n ? b : n - 1) * one,
               one * sizeof *c->images);
}

/* ---- greedy and sampling ------------------------------------------------------------------ */

static CapStatus pick_tokens(CapCaptioner *c, int n, const CapCaptionOptions *o, CapRng *rng,
                             int *done, int32_t *tokens, int *lens, char *err, size_t err_size) {
    for (int b = 0; b < c->B; b++) {
        if (b >= n || done[b]) {
            c->token[b] = c->end_id; /* never <pad>: a row of only masked keys is NaN */
            continue;
        }
        memcpy(c->row, c->logits + (size_t)b * (size_t)c->V, (size_t)c->V * sizeof *c->row);
        int tok = -1;
        CapStatus st = cap_sample_next(c->row, c->V, &o->sample, &rng[b], &tok, err, err_size);
        if (st) return st;
        if (tok < 0) tok = c->end_id; /* nothing left to sample (all -inf/NaN) */
        c->token[b] = tok;
        if (tok == c->end_id) done[b] = 1;
        else tokens[(size_t)b * (size_t)c->T1 + (size_t)lens[b]++] = tok;
    }
    return CAP_OK;
}

static CapStatus caption_chunk(CapCaptioner *c, const float *images, int n,
                               const CapCaptionOptions *o, const uint32_t *streams,
                               int max_tokens, int32_t *tokens, int *lens, char *err,
                               size_t err_size) {
    fill_images(c, images, n);
    CapStatus st = run_encode(c, err, err_size);
    if (st) return st;
    reset_caches(c);
    CapRng rng[c->B];
    int done[c->B];
    for (int b = 0; b < c->B; b++) {
        c->token[b] = c->start_id;
        done[b] = 0;
        if (b < n) lens[b] = 0;
        cap_rng_init(&rng[b], o->seed, b < n ? streams[b] : 0);
    }
    for (int pos = 0; pos < max_tokens; pos++) {
        c->pos = pos;
        if ((st = run_decode(c, 0, err, err_size))) return st;
        if ((st = pick_tokens(c, n, o, rng, done, tokens, lens, err, err_size)))
            return st;
        int left = 0;
        for (int b = 0; b < n; b++) left += !done[b];
        if (!left) break;
    }
    return CAP_OK;
}

/* ---- beam search ----------------------------------------------------------------------------- */

typedef struct BeamCtx {
    CapCaptioner *c;
} BeamCtx;

static CapStatus beam_step(void *ctx, int step, int n_beams, const int32_t *last_tokens,
                           const int32_t *parents, float *logits, char *err, size_t err_size) {
    CapCaptioner *c = ((BeamCtx *)ctx)->c;
    if (n_beams > c->B)
        return cap_fail(err, err_size, CAP_E_ARG, "%d beams but the batch has %d rows", n_beams,
                        c->B);
    if (step == 0) {
        reset_caches(c);
    } else {
        for (int i = 0; i < c->dec->n_inputs; i++) {
            Tensor *t = &c->cache[i];
            if (!t->info) continue;
            gather_rows(t->info, c->B, t->buf[1], t->buf[0], parents, n_beams);
            float *tmp = t->buf[0];
            t->buf[0] = t->buf[1];
            t->buf[1] = tmp;
        }
    }
    for (int b = 0; b < c->B; b++) c->token[b] = b < n_beams ? last_tokens[b] : c->start_id;
    c->pos = step;
    CapStatus st = run_decode(c, 1, err, err_size);
    if (!st) memcpy(logits, c->logits, (size_t)n_beams * (size_t)c->V * sizeof *logits);
    return st;
}

/* Image k of the encoded chunk into every row of the decode inputs fed from encode. */
static void beam_cross_rows(CapCaptioner *c, int k) {
    int32_t rows[c->B];
    for (int b = 0; b < c->B; b++) rows[b] = k;
    for (int i = 0; i < c->dec->n_inputs; i++)
        if (c->dec_src[i] >= 0)
            gather_rows(&c->dec->inputs[i], c->B, c->beam_cross[i], c->enc_out[c->dec_src[i]],
                        rows, c->B);
}

static CapStatus beam_chunk(CapCaptioner *c, const float *images, int n,
                            const CapCaptionOptions *o, int max_tokens, int32_t *tokens,
                            int *lens, char *err, size_t err_size) {
    fill_images(c, images, n);
    CapStatus st = run_encode(c, err, err_size);
    CapBeamOptions bo = {.beam_size = o->beam, .max_len = max_tokens, .start_id = c->start_id,
                         .end_id = c->end_id, .length_alpha = o->length_alpha};
    BeamCtx ctx = {c};
    for (int k = 0; !st && k < n; k++) {
        beam_cross_rows(c, k);
        st = cap_beam_search(beam_step, &ctx, c->V, &bo, tokens + (size_t)k * (size_t)c->T1,
                             &lens[k], NULL, err, err_size);
    }
    return st;
}

/* ---- the entry point ------------------------------------------------------------------------ */

CapStatus cap_caption_images(CapCaptioner *c, const float *images, int n,
                             const CapCaptionOptions *o, const uint32_t *streams,
                             int32_t *tokens, int *lens, char *err, size_t err_size) {
    if (o->max_tokens > c->T1)
        return cap_fail(err, err_size, CAP_E_ARG,
                        "--max-len %d is more than this cap.so can generate: it was compiled "
                        "for captions of max_len %d, %d tokens after <start> (recompile with a "
                        "larger -D max_len)", o->max_tokens, c->T1 + 1, c->T1);
    int max_tokens = o->max_tokens > 0 ? o->max_tokens : c->T1;
    if (n < 1) return cap_fail(err, err_size, CAP_E_ARG, "no images to caption");
    if (o->beam > c->B) {
        const CapArtifact *a = cap_model_artifact(c->s->m);
        return cap_fail(err, err_size, CAP_E_ARG,
                        "--beam %d needs a cap.so compiled with batch >= %d (beams are rows of "
                        "the batch; %s has batch=%d): recompile with `capc MODEL.json -D "
                        "batch=%d -o cap.so` (compiled with: %s)", o->beam, o->beam,
                        cap_model_path(c->s->m), c->B, o->beam,
                        a->compile_flags && *a->compile_flags ? a->compile_flags : "no -D");
    }
    size_t one = 3 * (size_t)c->S * (size_t)c->S;
    CapStatus st = CAP_OK;
    for (int k0 = 0; !st && k0 < n; k0 += c->B) {
        int m = n - k0 < c->B ? n - k0 : c->B;
        uint32_t str[c->B];
        for (int b = 0; b < m; b++) str[b] = streams ? streams[k0 + b] : (uint32_t)(k0 + b);
        int32_t *tok = tokens + (size_t)k0 * (size_t)c->T1;
        st = o->beam >= 1 ? beam_chunk(c, images + (size_t)k0 * one, m, o, max_tokens, tok,
                                      lens + k0, err, err_size)
                         : caption_chunk(c, images + (size_t)k0 * one, m, o, str, max_tokens,
                                         tok, lens + k0, err, err_size);
    }
    return st;
}
