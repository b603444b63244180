/* train_data.c — cap_train over a dataset loader (train_data.h): the loader is the trainer's
 * batch source, and its position plus the vocabulary are the checkpoint's extra metadata.
 */
#include "train_data.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cap_internal.h"
#include "caption.h"

/* ---- compiled sizes ------------------------------------------------------------------------ */

static const CapTensorInfo *entry_input(const CapEntry *e, const char *name) {
    for (int i = 0; i < e->n_inputs; i++)
        if (strcmp(e->inputs[i].name, name) == 0) return &e->inputs[i];
    return NULL;
}

CapStatus cap_data_shape(const CapModel *m, const char *entry, CapDataShape *out, char *err,
                         size_t err_size) {
    int ei = cap_model_find_entry(m, entry);
    if (ei < 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED, "%s has no entry point '%s'",
                        cap_model_path(m), entry);
    const CapArtifact *a = cap_model_artifact(m);
    const CapEntry *e = &a->entries[ei];
    const CapTensorInfo *im = entry_input(e, "image"), *cap = entry_input(e, "caption");
    if (!im || im->rank != 4 || im->dims[1] != 3 || im->dims[2] != im->dims[3] ||
        im->dtype != CAP_DT_F32)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                        "%s: entry '%s' has no input 'image' f32[B,3,S,S]", cap_model_path(m),
                        entry);
    *out = (CapDataShape){.batch = (int)im->dims[0], .image = (int)im->dims[2],
                          .vocab = a->vocab_size};
    if (cap) {
        if (cap->rank != 2 || cap->dims[0] != im->dims[0] || cap->dtype != CAP_DT_I32)
            return cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                            "%s: entry '%s' has no input 'caption' i32[B,T]", cap_model_path(m),
                            entry);
        out->max_len = (int)cap->dims[1];
    } else {
        int64_t t = 0;
        if (cap_model_config_int(m, "max_len", &t) == 0) out->max_len = (int)t;
    }
    return CAP_OK;
}

CapStatus cap_check_vocab(const CapModel *m, const Vocab *v, const char *what, char *err,
                          size_t err_size) {
    const CapArtifact *a = cap_model_artifact(m);
    if (a->vocab_size <= 0 || a->vocab_size == v->size) return CAP_OK;
    const char *flags = a->compile_flags && *a->compile_flags ? a->compile_flags : "no -D";
    return cap_fail(err, err_size, CAP_E_MISMATCH,
                    "%s has %d tokens but %s was compiled for vocab=%" PRId64 ": recompile "
                    "with `capc MODEL.json -D vocab=%d -o cap.so` (compiled with: %s)",
                    what, (int)v->size, cap_model_path(m), a->vocab_size, (int)v->size, flags);
}

/* ---- checkpoint metadata ------------------------------------------------------------------- */

static CapStatus parse_i64(const char *path, const char *key, const char *s, int64_t *v,
                           char *err, size_t err_size) {
    char *end;
    errno = 0;
    long long x = s ? strtoll(s, &end, 10) : -1;
    if (!s || !*s || *end || errno || x < 0)
        return cap_fail(err, err_size, CAP_E_FORMAT,
                        "%s: checkpoint metadata '%s' is missing or not a number (was it "
                        "trained with --data?)", path, key);
    *v = (int64_t)x;
    return CAP_OK;
}

CapStatus cap_checkpoint_data(const char *path, DataPosition *pos, char **vocab_text,
                              char *err, size_t err_size) {
    char *epoch = NULL, *index = NULL;
    *vocab_text = NULL;
    CapStatus st = cap_file_metadata(path, "data_epoch", &epoch, err, err_size);
    if (!st) st = cap_file_metadata(path, "data_index", &index, err, err_size);
    if (!st) st = parse_i64(path, "data_epoch", epoch, &pos->epoch, err, err_size);
    if (!st) st = parse_i64(path, "data_index", index, &pos->index, err, err_size);
    if (!st) st = cap_file_metadata(path, "vocab", vocab_text, err, err_size);
    free(epoch);
    free(index);
    return st;
}

/* ---- the batch source ---------------------------------------------------------------------- */

typedef struct Source {
    DataLoader *l;
    float *images;
    int32_t *captions;
    int32_t *image_index;     /* the batch's images (indices into the dataset) */
    int image_in, caption_in; /* input indices of the entry the steps run (image: -1 cached) */
    FeatureCache *fc;         /* NULL: plain train_step */
    int64_t batch;            /* the compiled (per-rank) batch */
    int64_t shard;            /* data parallel: this rank's first sample in the global batch */
    int pad_id;               /* captions' padding token: not a loss term */
    DataPosition pos;         /* after the last batch handed out */
    char epoch[32], index[32];
    char *vocab_text;
    /* for evaluation */
    CapSession *s;
    const Dataset *ds;
    const Vocab *vocab;
    CapDataShape sh;
    uint32_t seed;
    int eval_images;
} Source;

static CapStatus source_next(void *ctx, const void **inputs, int64_t *samples, char *err,
                             size_t err_size) {
    Source *src = ctx;
    CapStatus st = loader_next(src->l, src->images, src->captions, src->image_index, &src->pos,
                               err, err_size);
    if (st) return st;
    if (src->fc)
        st = feature_cache_batch(src->fc, src->images, src->image_index, inputs, err, err_size);
    else
        inputs[src->image_in] = src->images + (size_t)src->shard * 3 * (size_t)src->sh.image * (size_t)src->sh.image;
    if (st) return st;
    inputs[src->caption_in] = src->captions + (size_t)src->shard * (size_t)src->sh.max_len;
    *samples = src->batch;
    return CAP_OK;
}

/* The loss of the shard handed out last is cross_entropy's mean over its target tokens
 * (caption[:, 1:]) that are not padding: their count is its weight in the global mean. */
static double source_loss_weight(void *ctx) {
    const Source *src = ctx;
    const int32_t *c = src->captions + (size_t)src->shard * (size_t)src->sh.max_len;
    int64_t n = 0;
    for (int64_t b = 0; b < src->batch; b++)
        for (int t = 1; t < src->sh.max_len; t++) n += c[b * src->sh.max_len + t] != src->pad_id;
    return (double)n;
}

static int source_meta(void *ctx, const char **keys, const char **values, int max) {
    Source *src = ctx;
    if (max < 3) return 0;
    snprintf(src->epoch, sizeof src->epoch, "%" PRId64, src->pos.epoch);
    snprintf(src->index, sizeof src->index, "%" PRId64, src->pos.index);
    keys[0] = "data_epoch", values[0] = src->epoch;
    keys[1] = "data_index", values[1] = src->index;
    keys[2] = "vocab", values[2] = src->vocab_text;
    return 3;
}

/* Every train_step input must be image, caption or rng; image and caption must be there.
 * (train_step_cached's feature inputs are the cache's to set.) */
static CapStatus source_inputs(const CapModel *m, Source *src, const char *entry, char *err,
                               size_t err_size) {
    int ei = cap_model_find_entry(m, entry);
    if (ei < 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED, "%s has no entry point '%s'",
                        cap_model_path(m), entry);
    const CapEntry *e = &cap_model_artifact(m)->entries[ei];
    src->image_in = src->caption_in = -1;
    for (int i = 0; i < e->n_inputs; i++) {
        const char *n = e->inputs[i].name;
        if (strcmp(n, "image") == 0) src->image_in = i;
        else if (strcmp(n, "caption") == 0) src->caption_in = i;
        else if (strcmp(n, "rng") != 0)
            return cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                            "%s: train_step input '%s' cannot come from a dataset (only image, "
                            "caption and rng)", cap_model_path(m), n);
    }
    if (src->image_in < 0 || src->caption_in < 0) /* source_next writes both */
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                        "%s: train_step has no input '%s' for the dataset's %s",
                        cap_model_path(m), src->image_in < 0 ? "image" : "caption",
                        src->image_in < 0 ? "images" : "captions");
    if (src->fc) { /* the cached step: its caption input (features: the cache's) */
        e = &cap_model_artifact(m)->entries[cap_model_find_entry(m, feature_cache_entry())];
        src->image_in = src->caption_in = -1;
        for (int i = 0; i < e->n_inputs; i++)
            if (strcmp(e->inputs[i].name, "caption") == 0) src->caption_in = i;
        if (src->caption_in < 0)
            return cap_fail(err, err_size, CAP_E_FORMAT, "%s: invalid artifact: '%s' has no "
                            "input 'caption'", cap_model_path(m), feature_cache_entry());
    }
    return CAP_OK;
}

/* The feature cache, when the model has one and the run wants it. */
static CapStatus open_cache(CapSession *s, const CapDataTrainOptions *o, Source *src, char *err,
                            size_t err_size) {
    /* data parallel runs train_grads, which has no cached-features twin */
    if (o->no_feature_cache || o->comm || !feature_cache_supported(cap_session_model(s)))
        return CAP_OK;
    char spill[4096];
    snprintf(spill, sizeof spill, "%s.features", o->out_path ? o->out_path : "cap");
    return feature_cache_open(s, o->ds->n_images, o->ds->n_per_split[DATA_TRAIN], spill,
                              &src->fc, err, err_size);
}

/* ---- evaluation during training (--eval-every) ------------------------------------------- */

enum { EVAL_LOSS_BATCHES = 8 };

/* eval_loss averaged over the val split's first batches (at most EVAL_LOSS_BATCHES, the same
 * ones every time: the loader starts at position 0 with the run's seed). The train batch's
 * buffers are reused: the step that used them has run. */
static CapStatus val_loss(Source *src, double *loss, char *err, size_t err_size) {
    const CapModel *m = cap_session_model(src->s);
    int ei = cap_model_find_entry(m, "eval_loss");
    if (ei < 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED, "%s has no entry point 'eval_loss'",
                        cap_model_path(m));
    const CapEntry *e = &cap_model_artifact(m)->entries[ei];
    const void **in = calloc((size_t)e->n_inputs + 1, sizeof *in);
    void **out = calloc((size_t)e->n_outputs + 1, sizeof *out);
    int32_t rng[2] = {(int32_t)src->seed, 0};
    int loss_at = -1;
    CapStatus st = in && out ? CAP_OK : cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    for (int i = 0; !st && i < e->n_inputs; i++) {
        const char *n = e->inputs[i].name;
        in[i] = strcmp(n, "image") == 0 ? (const void *)src->images
              : strcmp(n, "caption") == 0 ? (const void *)src->captions : (const void *)rng;
    }
    for (int i = 0; !st && i < e->n_outputs; i++) {
        if (strcmp(e->outputs[i].name, "loss") == 0) loss_at = i;
        if (!(out[i] = malloc(cap_tensor_bytes(&e->outputs[i]) + 1)))
            st = cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    }
    if (!st && loss_at < 0) st = cap_fail(err, err_size, CAP_E_UNSUPPORTED, "eval_loss has no output 'loss'");
    DataLoader *l = NULL;
    if (!st) st = loader_open(src->ds, DATA_VAL, src->sh.batch, src->sh.image, src->sh.max_len,
                              src->vocab, src->seed, 0, (DataPosition){0, 0}, &l, err, err_size);
    int64_t n = l ? loader_split_size(l) / src->sh.batch : 0;
    if (!st && n < 1)
        st = cap_fail(err, err_size, CAP_E_ARG, "--eval-every: the val split has fewer images "
                      "(%d) than a batch (%d)", (int)loader_split_size(l), src->sh.batch);
    if (n > EVAL_LOSS_BATCHES) n = EVAL_LOSS_BATCHES;
    double sum = 0;
    for (int64_t b = 0; !st && b < n; b++) {
        st = loader_next(l, src->images, src->captions, NULL, NULL, err, err_size);
        if (!st) st = cap_session_run(src->s, "eval_loss", in, out, err, err_size);
        if (!st) sum += *(const float *)out[loss_at];
    }
    if (!st) *loss = sum / (double)n;
    loader_close(l);
    for (int i = 0; out && i < e->n_outputs; i++) free(out[i]);
    free(out);
    free(in);
    return st;
}

static int source_evaluate(void *ctx, int64_t step, const char **keys, double *values, int max,
                           char *err, size_t err_size) {
    Source *src = ctx;
    (void)step;
    if (max < 3) return 0;
    double loss = 0;
    if (val_loss(src, &loss, err, err_size)) return -1;
    CapCaptioner *cap = NULL;
    CapEvalResult r;
    CapCaptionOptions greedy = {.sample = {.greedy = 1}};
    if (cap_captioner_new(src->s, &cap, err, err_size)) return -1;
    CapStatus st = cap_eval_split(cap, src->ds, DATA_VAL, src->vocab, &greedy, src->eval_images,
                                  NULL, NULL, &r, err, err_size);
    cap_captioner_free(cap);
    if (st) return -1;
    keys[0] = "val_loss", values[0] = loss;
    keys[1] = "val_bleu4", values[1] = r.bleu[3];
    keys[2] = "val_cider", values[2] = r.cider;
    cap_eval_result_free(&r);
    return 3;
}

static CapStatus source_open(CapSession *s, const CapDataTrainOptions *o,
                             const CapDataShape *sh, Source *src, char *err, size_t err_size) {
    memset(src, 0, sizeof *src);
    src->pos = o->start;
    src->s = s;
    src->ds = o->ds;
    src->vocab = o->vocab;
    src->sh = *sh;
    src->seed = o->seed;
    src->eval_images = o->eval_images > 0 ? o->eval_images : 100;
    /* Data parallel: every rank reads the whole global batch from the same shuffled stream
     * and trains on its share; skipped images thus shift every rank's share alike. (Each
     * rank decodes all of it: decoding only its own share is left to do.) */
    int ranks = o->comm ? o->comm->size : 1;
    int64_t global = (int64_t)sh->batch * ranks;
    src->batch = sh->batch;
    src->shard = o->comm ? (int64_t)o->comm->rank * sh->batch : 0;
    int64_t pad = 0;
    src->pad_id = cap_model_config_int(cap_session_model(s), "pad_id", &pad) == 0 ? (int)pad : 0;
    if (global > INT32_MAX)
        return cap_fail(err, err_size, CAP_E_ARG, "a global batch of %lld is too large",
                        (long long)global);
    CapStatus st = open_cache(s, o, src, err, err_size);
    if (!st) st = source_inputs(cap_session_model(s), src, o->comm ? "train_grads" : "train_step",
                                err, err_size);
    if (st) return st;
    src->images = malloc((size_t)global * 3 * (size_t)sh->image * (size_t)sh->image *
                         sizeof *src->images);
    src->captions = malloc((size_t)global * (size_t)sh->max_len * sizeof *src->captions);
    src->image_index = malloc((size_t)global * sizeof *src->image_index);
    src->vocab_text = vocab_to_string(o->vocab);
    if (!src->images || !src->captions || !src->image_index || !src->vocab_text)
        return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    st = loader_open(o->ds, DATA_TRAIN, (int)global, sh->image, sh->max_len, o->vocab, o->seed,
                     o->workers, o->start, &src->l, err, err_size);
    if (!st) loader_on_skip(src->l, o->on_skip, o->skip_ctx);
    return st;
}

static void source_close(Source *src) {
    loader_close(src->l);
    feature_cache_close(src->fc);
    free(src->images);
    free(src->captions);
    free(src->image_index);
    free(src->vocab_text);
}

/* ---- the run ----------------------------------------------------------------------------- */

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

CapStatus cap_train_data(CapSession *s, const CapDataTrainOptions *o, CapTrainMeta *meta,
                         CapDataTrainResult *res, char *err, size_t err_size) {
    const CapModel *m = cap_session_model(s);
    double t0 = seconds_now();
    memset(res, 0, sizeof *res);
    CapDataShape sh;
    CapStatus st = cap_data_shape(m, "train_step", &sh, err, err_size);
    if (!st) st = cap_check_vocab(m, o->vocab, "the vocabulary", err, err_size);
    if (st) return st;
    Source src;
    st = source_open(s, o, &sh, &src, err, err_size);
    CapTrainOptions to = {
        .steps = o->steps, .max_seconds = o->max_seconds, .seed = o->seed, .out_path = o->out_path,
        .save_every = o->save_every, .log_path = o->log_path, .print_every = o->print_every,
        .progress = o->progress, .next_batch = source_next, .checkpoint_meta = source_meta,
        .source = &src, .entry = src.fc ? feature_cache_entry() : NULL,
        .on_nonfinite = o->on_nonfinite, .eval_every = o->eval_every,
        .evaluate = o->eval_every > 0 ? source_evaluate : NULL,
        .comm = o->comm, .loss_weight = o->comm ? source_loss_weight : NULL,
    };
    if (!st) st = cap_train(s, &to, meta, err, err_size);
    if (src.l) {
        loader_stats(src.l, &res->loader);
        res->split_images = loader_split_size(src.l);
    }
    res->position = src.pos;
    if (src.fc) {
        res->feature_cache = 1;
        feature_cache_stats(src.fc, &res->cache);
    }
    source_close(&src);
    res->seconds = seconds_now() - t0;
    return st;
}
