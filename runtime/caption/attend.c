/* attend.c — the `attend` entry on captions (attend.h): input rows <start> w0 .. w(n-2)
 * <pad>..., the last decoder layer's cross-attention [B, h, T-1, G*G] averaged over h into one
 * map per word, and attend's logits checked against the words. */
#include "attend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cap_internal.h"
#include "sampling.h" /* cap_argmax */

struct CapAttender {
    CapSession *s;
    int B, S, T1, V, heads, cells, grid;
    int32_t start_id, pad_id;
    float *images; /* B x 3 x S x S */
    int32_t *tokens; /* B x T1 */
    float *logits; /* B x T1 x V */
    float *probs;  /* B x heads x T1 x cells */
};

static CapStatus bad(const CapAttender *a, const char *what, char *err, size_t err_size) {
    return cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                    "%s has an attend entry that `cap attend` cannot use: %s "
                    "(docs/training.md, \"Attention maps\")", cap_model_path(a->s->m), what);
}

static int find_io(const CapTensorInfo *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return i;
    return -1;
}

/* The four tensors of the entry, in its order: inputs image, tokens; outputs logits,
 * cross_attn. */
static CapStatus check_entry(CapAttender *a, const CapEntry *e, char *err, size_t err_size) {
    if (e->n_inputs != 2 || e->n_outputs != 2 || find_io(e->inputs, 2, "image") != 0 ||
        find_io(e->inputs, 2, "tokens") != 1 || find_io(e->outputs, 2, "logits") != 0 ||
        find_io(e->outputs, 2, "cross_attn") != 1)
        return bad(a, "it must take image and tokens and return logits and cross_attn", err,
                   err_size);
    const CapTensorInfo *im = &e->inputs[0], *tk = &e->inputs[1];
    const CapTensorInfo *lg = &e->outputs[0], *pr = &e->outputs[1];
    if (im->rank != 4 || im->dims[1] != 3 || im->dims[2] != im->dims[3] ||
        im->dtype != CAP_DT_F32)
        return bad(a, "image must be f32[B,3,S,S]", err, err_size);
    a->B = (int)im->dims[0];
    a->S = (int)im->dims[2];
    if (tk->rank != 2 || tk->dims[0] != a->B || tk->dtype != CAP_DT_I32)
        return bad(a, "tokens must be i32[B,T-1]", err, err_size);
    a->T1 = (int)tk->dims[1];
    if (lg->rank != 3 || lg->dims[0] != a->B || lg->dims[1] != a->T1 || lg->dtype != CAP_DT_F32)
        return bad(a, "logits must be f32[B,T-1,V]", err, err_size);
    a->V = (int)lg->dims[2];
    if (pr->rank != 4 || pr->dims[0] != a->B || pr->dims[2] != a->T1 || pr->dtype != CAP_DT_F32)
        return bad(a, "cross_attn must be f32[B,heads,T-1,G*G]", err, err_size);
    a->heads = (int)pr->dims[1];
    a->cells = (int)pr->dims[3];
    a->grid = (int)lround(sqrt((double)a->cells));
    if (a->grid * a->grid != a->cells)
        return bad(a, "cross_attn's last axis is not a square grid of image cells", err,
                   err_size);
    return CAP_OK;
}

CapStatus cap_attender_new(CapSession *s, CapAttender **out, char *err, size_t err_size) {
    *out = NULL;
    const CapArtifact *art = cap_model_artifact(s->m);
    int ei = cap_model_find_entry(s->m, "attend");
    if (ei < 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                        "%s has no attend entry (it was compiled by a capc older than `cap "
                        "attend`, or from a model file without one): recompile it with `capc "
                        "MODEL.json%s%s -o cap.so` from models/captioner*.json "
                        "(docs/training.md, \"Attention maps\")",
                        cap_model_path(s->m), art->compile_flags && *art->compile_flags ? " " : "",
                        art->compile_flags ? art->compile_flags : "");
    CapAttender *a = calloc(1, sizeof *a);
    if (!a) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    a->s = s;
    a->start_id = art->start_id;
    a->pad_id = art->pad_id;
    CapStatus st = check_entry(a, &art->entries[ei], err, err_size);
    if (!st) {
        size_t bt = (size_t)a->B * (size_t)a->T1;
        a->images = malloc((size_t)a->B * 3 * (size_t)a->S * (size_t)a->S * sizeof *a->images);
        a->tokens = malloc(bt * sizeof *a->tokens);
        a->logits = malloc(bt * (size_t)a->V * sizeof *a->logits);
        a->probs = malloc(bt * (size_t)a->heads * (size_t)a->cells * sizeof *a->probs);
        if (!a->images || !a->tokens || !a->logits || !a->probs)
            st = cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    }
    if (st) {
        cap_attender_free(a);
        return st;
    }
    *out = a;
    return CAP_OK;
}

void cap_attender_free(CapAttender *a) {
    if (!a) return;
    free(a->images);
    free(a->tokens);
    free(a->logits);
    free(a->probs);
    free(a);
}

int cap_attender_image_size(const CapAttender *a) { return a->S; }
int cap_attender_grid(const CapAttender *a) { return a->grid; }
int cap_attender_max_words(const CapAttender *a) { return a->T1; }

/* Row b of the batch: image k and its input tokens <start> w0 .. w(len-2), then <pad>. */
static void fill_row(CapAttender *a, int b, const float *image, const int32_t *words, int len) {
    size_t one = 3 * (size_t)a->S * (size_t)a->S;
    memcpy(a->images + (size_t)b * one, image, one * sizeof *image);
    int32_t *row = a->tokens + (size_t)b * (size_t)a->T1;
    row[0] = a->start_id;
    for (int t = 1; t < a->T1; t++) row[t] = t < len ? words[t - 1] : a->pad_id;
}

/* Row b's maps (head average) into maps[t * cells], and its disagreements with the words. */
static int take_row(const CapAttender *a, int b, const int32_t *words, int len, float *maps) {
    int wrong = 0;
    for (int t = 0; t < len; t++) {
        float *m = maps + (size_t)t * (size_t)a->cells;
        for (int c = 0; c < a->cells; c++) m[c] = 0;
        for (int h = 0; h < a->heads; h++) {
            size_t row = ((size_t)b * (size_t)a->heads + (size_t)h) * (size_t)a->T1 + (size_t)t;
            const float *p = a->probs + row * (size_t)a->cells;
            for (int c = 0; c < a->cells; c++) m[c] += p[c] / (float)a->heads;
        }
        const float *lg = a->logits + ((size_t)b * (size_t)a->T1 + (size_t)t) * (size_t)a->V;
        wrong += cap_argmax(lg, a->V) != words[t];
    }
    return wrong;
}

CapStatus cap_attend(CapAttender *a, const float *images, int n, const int32_t *tokens,
                     int stride, const int *lens, float *maps, int *disagree, char *err,
                     size_t err_size) {
    if (n < 1) return cap_fail(err, err_size, CAP_E_ARG, "no images");
    for (int k = 0; k < n; k++)
        if (lens[k] < 0 || lens[k] > a->T1)
            return cap_fail(err, err_size, CAP_E_ARG, "caption %d has %d words; attend takes at "
                            "most %d", k, lens[k], a->T1);
    size_t one = 3 * (size_t)a->S * (size_t)a->S, per_image = (size_t)a->T1 * (size_t)a->cells;
    int wrong = 0;
    for (int k0 = 0; k0 < n; k0 += a->B) {
        int m = n - k0 < a->B ? n - k0 : a->B;
        for (int b = 0; b < a->B; b++) {
            int k = k0 + (b < m ? b : m - 1);
            fill_row(a, b, images + (size_t)k * one, tokens + (size_t)k * (size_t)stride, lens[k]);
        }
        const void *in[2] = {a->images, a->tokens};
        void *out[2] = {a->logits, a->probs};
        CapStatus st = cap_session_run(a->s, "attend", in, out, err, err_size);
        if (st) return st;
        for (int b = 0; b < m; b++) {
            int k = k0 + b;
            wrong += take_row(a, b, tokens + (size_t)k * (size_t)stride, lens[k],
                              maps + (size_t)k * per_image);
        }
    }
    if (disagree) *disagree = wrong;
    return CAP_OK;
}
