/* checkpoint.c — state to and from safetensors files.
 *
 * Weights file: WEIGHT and BUFFER states under their state names (PyTorch's state_dict names),
 * F32 (I32 for integer state), metadata format = "capc-weights". Loading accepts PyTorch
 * exports: F64 tensors are rounded to f32 (and I64 to i32 when in range), `num_batches_tracked`
 * is ignored, and a tied layer's copy ("P.weight" when the model has "P.bias" but shares its
 * weight with another parameter, e.g. decoder.out.weight) must equal one of the model's
 * weights of that shape. Everything is checked before any state changes.
 *
 * Checkpoint file: every state (optimizer moments and step counter too) plus the training
 * position (step, seed, data_position, n_batches) in the metadata, format = "capc-checkpoint".
 * Both are written through st_write_file: temp file, fsync, rename.
 */
#include "cap_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <math.h>

#include <cjson/cJSON.h>

#include "safetensors.h"

/* ---- writing ------------------------------------------------------------------------------- */

static int is_weights_kind(int kind) { return kind == CAP_STATE_WEIGHT || kind == CAP_STATE_BUFFER; }

/* What a file carries: weights and buffers, plus the optimizer state in a checkpoint; never
 * derived state (recomputed from the rest). */
static int saved_kind(int kind, int all_states) {
    return is_weights_kind(kind) || (all_states && kind == CAP_STATE_OPTIM);
}

/* Writes the states for which pick(kind) holds. Host copies live only during the call. */
static CapStatus write_states(const CapSession *s, const char *path, int all_states,
                              const char *const *keys, const char *const *values, int n_meta,
                              char *err, size_t err_size) {
    const CapArtifact *a = cap_model_artifact(s->m);
    StWriteTensor *ts = calloc((size_t)a->n_state + 1, sizeof *ts);
    void **host = calloc((size_t)a->n_state + 1, sizeof *host);
    CapStatus st = ts && host ? CAP_OK : cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    int n = 0;
    for (int i = 0; i < a->n_state && !st; i++) {
        const CapStateInfo *si = &a->state[i];
        if (!saved_kind(si->kind, all_states)) continue;
        host[n] = malloc(cap_tensor_bytes(&si->t) + 1);
        if (!host[n]) {
            st = cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
            break;
        }
        st = cap_session_read_state(s, i, host[n], err, err_size);
        ts[n] = (StWriteTensor){si->t.name, si->t.dtype == CAP_DT_I32 ? ST_I32 : ST_F32,
                                si->t.rank, si->t.dims, host[n]};
        n++;
    }
    if (!st && st_write_file(path, ts, n, keys, values, n_meta, err, err_size))
        st = CAP_E_IO;
    for (int i = 0; host && i < n; i++) free(host[i]);
    free(host);
    free(ts);
    return st;
}

CapStatus cap_save_weights(const CapSession *s, const char *path, char *err, size_t err_size) {
    const char *keys[] = {"format", "model"};
    const char *values[] = {"capc-weights", cap_model_artifact(s->m)->model_name};
    return write_states(s, path, 0, keys, values, values[1] ? 2 : 1, err, err_size);
}

CapStatus cap_save_checkpoint(const CapSession *s, const char *path, const CapTrainMeta *meta,
                              char *err, size_t err_size) {
    return cap_save_checkpoint_extra(s, path, meta, NULL, NULL, 0, err, err_size);
}

#define CKPT_STD_META 7
#define CKPT_MAX_EXTRA 16

CapStatus cap_save_checkpoint_extra(const CapSession *s, const char *path,
                                    const CapTrainMeta *meta, const char *const *ekeys,
                                    const char *const *evalues, int n_extra, char *err,
                                    size_t err_size) {
    if (n_extra < 0 || n_extra > CKPT_MAX_EXTRA)
        return cap_fail(err, err_size, CAP_E_ARG, "too many checkpoint metadata pairs (%d)",
                        n_extra);
    const CapArtifact *a = cap_model_artifact(s->m);
    char step[32], seed[32], pos[32], nb[32];
    snprintf(step, sizeof step, "%" PRId64, meta->step);
    snprintf(seed, sizeof seed, "%" PRIu32, meta->seed);
    snprintf(pos, sizeof pos, "%" PRId64, meta->data_position);
    snprintf(nb, sizeof nb, "%" PRId64, meta->n_batches);
    const char *keys[CKPT_STD_META + CKPT_MAX_EXTRA] = {
        "format", "step", "seed", "data_position", "n_batches", "model", "config"};
    const char *values[CKPT_STD_META + CKPT_MAX_EXTRA] = {
        "capc-checkpoint", step, seed, pos, nb, a->model_name ? a->model_name : "",
        a->config_json ? a->config_json : "{}"};
    for (int i = 0; i < n_extra; i++) {
        keys[CKPT_STD_META + i] = ekeys[i];
        values[CKPT_STD_META + i] = evalues[i];
    }
    return write_states(s, path, 1, keys, values, CKPT_STD_META + n_extra, err, err_size);
}

CapStatus cap_file_metadata(const char *path, const char *key, char **value, char *err,
                            size_t err_size) {
    *value = NULL;
    StFile f;
    if (st_read_file(path, &f, err, err_size)) return CAP_E_IO;
    const char *v = st_metadata(&f, key);
    CapStatus st = CAP_OK;
    if (v && !(*value = strdup(v))) st = cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    st_free(&f);
    return st;
}

/* Appends "KEY: FILE -> MODEL" for a config value that differs. */
static void note_change(char *out, size_t size, size_t *used, const char *key, const cJSON *was,
                        const cJSON *now) {
    char *a = was ? cJSON_PrintUnformatted(was) : NULL, *b = now ? cJSON_PrintUnformatted(now) : NULL;
    if (*used < size)
        *used += (size_t)snprintf(out + *used, size - *used, "%s%s %s -> %s", *used ? ", " : "",
                                  key, a ? a : "(absent)", b ? b : "(absent)");
    free(a);
    free(b);
}

int cap_checkpoint_config_changes(const CapModel *m, const char *path, char *out, size_t size) {
    char *text = NULL, err[256];
    out[0] = '\0';
    if (cap_file_metadata(path, "config", &text, err, sizeof err) != CAP_OK || !text) return 0;
    cJSON *was = cJSON_Parse(text), *now = cJSON_Parse(cap_model_artifact(m)->config_json ? cap_model_artifact(m)->config_json : "{}");
    free(text);
    int n = 0;
    size_t used = 0;
    for (const cJSON *c = was ? was->child : NULL; c; c = c->next) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(now, c->string);
        if (!d || !cJSON_Compare(c, d, 1)) note_change(out, size, &used, c->string, c, d), n++;
    }
    for (const cJSON *d = now ? now->child : NULL; d; d = d->next)
        if (!cJSON_GetObjectItemCaseSensitive(was, d->string))
            note_change(out, size, &used, d->string, NULL, d), n++;
    cJSON_Delete(was);
    cJSON_Delete(now);
    return n;
}

/* ---- reading ------------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int same_shape(const StTensor *t, const CapTensorInfo *info) {
    if (t->rank != info->rank) return 0;
    for (int i = 0; i < t->rank; i++)
        if (t->shape[i] != info->dims[i]) return 0;
    return 1;
}

/* Converts file tensor t (checked against info) into dst (f32 or i32 host memory). */
CapStatus cap_st_convert(const StFile *f, const StTensor *t, const CapTensorInfo *info,
                         void *dst, char *err, size_t err_size) {
    char a[160], b[160];
    if (!same_shape(t, info))
        return cap_fail(err, err_size, CAP_E_MISMATCH,
                        "%s: tensor '%s' has shape %s in the file but the model expects %s",
                        f->path, info->name, cap_dims_str(t->rank, t->shape, a, sizeof a),
                        cap_dims_str(info->rank, info->dims, b, sizeof b));
    int is_int = info->dtype == CAP_DT_I32;
    StDType exact = is_int ? ST_I32 : ST_F32, wide = is_int ? ST_I64 : ST_F64;
    if (t->dtype != exact && t->dtype != wide)
        return cap_fail(err, err_size, CAP_E_MISMATCH,
                        "%s: tensor '%s' is %s in the file but the model expects %s (or %s)",
                        f->path, info->name, st_dtype_name(t->dtype), st_dtype_name(exact),
                        st_dtype_name(wide));
    if (t->dtype == exact) {
        memcpy(dst, t->data, t->nbytes); /* little-endian host */
        return CAP_OK;
    }
    double *tmp = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *tmp);
    if (!tmp) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    st_to_f64(t, tmp);
    for (int64_t i = 0; i < t->numel; i++) {
        if (!is_int) {
            ((float *)dst)[i] = (float)tmp[i];
        } else if (tmp[i] < INT32_MIN || tmp[i] > INT32_MAX) {
            free(tmp);
            return cap_fail(err, err_size, CAP_E_MISMATCH,
                            "%s: tensor '%s' element %" PRId64 " does not fit in i32", f->path,
                            info->name, i);
        } else {
            ((int32_t *)dst)[i] = (int32_t)tmp[i];
        }
    }
    free(tmp);
    return CAP_OK;
}

/* Host copies of the states that `want` selects, converted from file f; all or nothing. */
typedef struct Staged {
    int n_state;
    void **host; /* per state index; NULL where not loaded */
} Staged;

static void staged_free(Staged *sg) {
    for (int i = 0; sg->host && i < sg->n_state; i++) free(sg->host[i]);
    free(sg->host);
}

static CapStatus stage(const CapModel *m, const StFile *f, int all_states, Staged *sg, char *err,
                       size_t err_size) {
    const CapArtifact *a = cap_model_artifact(m);
    sg->n_state = a->n_state;
    sg->host = calloc((size_t)a->n_state + 1, sizeof *sg->host);
    if (!sg->host) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    for (int i = 0; i < a->n_state; i++) {
        const CapTensorInfo *info = &a->state[i].t;
        if (!saved_kind(a->state[i].kind, all_states)) continue;
        const StTensor *t = st_find(f, info->name);
        char dims[160];
        if (!t)
            return cap_fail(err, err_size, CAP_E_MISMATCH,
                            "%s: missing tensor '%s' (the model expects %s %s)", f->path,
                            info->name, info->dtype == CAP_DT_I32 ? "I32" : "F32",
                            cap_dims_str(info->rank, info->dims, dims, sizeof dims));
        sg->host[i] = malloc(cap_tensor_bytes(info) + 1);
        if (!sg->host[i]) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
        CapStatus st = cap_st_convert(f, t, info, sg->host[i], err, err_size);
        if (st) return st;
    }
    return CAP_OK;
}

/* A tied layer's copy: "P.weight" absent from the model while "P.bias" is present. It must
 * equal (after conversion) some weight of the model with its shape. */
static CapStatus check_tied(const CapModel *m, const StFile *f, const StTensor *t,
                            const Staged *sg, char *err, size_t err_size) {
    const CapArtifact *a = cap_model_artifact(m);
    size_t n = strlen(t->name) - strlen(".weight");
    char bias[512];
    snprintf(bias, sizeof bias, "%.*s.bias", (int)n, t->name);
    if (n + 6 >= sizeof bias || cap_model_find_state(m, bias) < 0)
        return cap_fail(err, err_size, CAP_E_MISMATCH,
                        "%s: unexpected tensor '%s' (the model has no state of that name)",
                        f->path, t->name);
    const char *differs = NULL;
    for (int i = 0; i < a->n_state; i++) {
        const CapStateInfo *si = &a->state[i];
        if (si->kind != CAP_STATE_WEIGHT || !sg->host[i] || si->t.dtype != CAP_DT_F32 ||
            !same_shape(t, &si->t))
            continue;
        float *tmp = malloc(cap_tensor_bytes(&si->t) + 1);
        if (!tmp) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
        CapStatus st = cap_st_convert(f, t, &si->t, tmp, err, err_size);
        int equal = !st && memcmp(tmp, sg->host[i], cap_tensor_bytes(&si->t)) == 0;
        free(tmp);
        if (st) return st;
        if (equal) return CAP_OK;
        differs = si->t.name;
    }
    char dims[160];
    return cap_fail(err, err_size, CAP_E_MISMATCH,
                    "%s: tensor '%s' is tied in this model (it has '%s' but shares its weight), "
                    "yet it equals no weight of shape %s%s%s%s",
                    f->path, t->name, bias, cap_dims_str(t->rank, t->shape, dims, sizeof dims),
                    differs ? " (" : "", differs ? differs : "", differs ? " differs)" : "");
}

/* Every file tensor that is not a loaded state must be explainable. */
static CapStatus check_extra(const CapModel *m, const StFile *f, const Staged *sg, char *err,
                             size_t err_size) {
    for (int k = 0; k < f->n; k++) {
        const StTensor *t = &f->tensors[k];
        int si = cap_model_find_state(m, t->name);
        if (si >= 0) continue; /* loaded, or an optimizer state of this model: skipped */
        if (ends_with(t->name, "num_batches_tracked")) continue;
        CapStatus st = ends_with(t->name, ".weight")
                           ? check_tied(m, f, t, sg, err, err_size)
                           : cap_fail(err, err_size, CAP_E_MISMATCH,
                                      "%s: unexpected tensor '%s' (the model has no state of "
                                      "that name)", f->path, t->name);
        if (st) return st;
    }
    return CAP_OK;
}

static CapStatus commit(CapSession *s, const Staged *sg, char *err, size_t err_size) {
    for (int i = 0; i < sg->n_state; i++) {
        if (!sg->host[i]) continue;
        CapStatus st = cap_session_write_state(s, i, sg->host[i], err, err_size);
        if (st) return st;
    }
    return CAP_OK;
}

CapStatus cap_load_weights(CapSession *s, const char *path, char *err, size_t err_size) {
    StFile f;
    if (st_read_file(path, &f, err, err_size)) return CAP_E_IO;
    Staged sg = {0};
    CapStatus st = stage(s->m, &f, 0, &sg, err, err_size);
    if (!st) st = check_extra(s->m, &f, &sg, err, err_size);
    if (!st) st = commit(s, &sg, err, err_size);
    staged_free(&sg);
    st_free(&f);
    return st;
}

/* ---- importing another layout (a pretrained backbone) ------------------------------------ */

void cap_import_report_free(CapImportReport *r) {
    for (int i = 0; i < r->n_random; i++) free(r->random[i]);
    for (int i = 0; i < r->n_unused; i++) free(r->unused[i]);
    free(r->random);
    free(r->unused);
    memset(r, 0, sizeof *r);
}

static int list_add(char ***list, int *n, const char *name) {
    char **grown = realloc(*list, ((size_t)*n + 1) * sizeof **list);
    if (!grown) return -1;
    *list = grown;
    return (grown[*n] = strdup(name)) ? (++*n, 0) : -1;
}

/* Stages every file tensor that maps onto a weight or buffer of the model (shapes checked),
 * noting the unused ones. */
static CapStatus stage_import(const CapModel *m, const StFile *f, const char *prefix,
                              Staged *sg, CapImportReport *r, char *err, size_t err_size) {
    const CapArtifact *a = cap_model_artifact(m);
    sg->n_state = a->n_state;
    sg->host = calloc((size_t)a->n_state + 1, sizeof *sg->host);
    if (!sg->host) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    for (int k = 0; k < f->n; k++) {
        const StTensor *t = &f->tensors[k];
        char name[1024];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        int i = cap_model_find_state(m, name);
        if (i < 0 || !is_weights_kind(a->state[i].kind)) {
            if (list_add(&r->unused, &r->n_unused, t->name))
                return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
            continue;
        }
        const CapTensorInfo *info = &a->state[i].t;
        char have[160], want[160];
        if (!same_shape(t, info))
            return cap_fail(err, err_size, CAP_E_MISMATCH,
                            "%s: tensor '%s' has shape %s, but the model's '%s' is %s", f->path,
                            t->name, cap_dims_str(t->rank, t->shape, have, sizeof have), name,
                            cap_dims_str(info->rank, info->dims, want, sizeof want));
        sg->host[i] = malloc(cap_tensor_bytes(info) + 1);
        if (!sg->host[i]) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
        CapStatus st = cap_st_convert(f, t, info, sg->host[i], err, err_size);
        if (st) return st;
        r->n_loaded++;
    }
    for (int i = 0; i < a->n_state; i++)
        if (is_weights_kind(a->state[i].kind) && !sg->host[i] &&
            list_add(&r->random, &r->n_random, a->state[i].t.name))
            return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    return CAP_OK;
}

CapStatus cap_import_weights(CapSession *s, const char *path, const char *prefix,
                             CapImportReport *report, char *err, size_t err_size) {
    memset(report, 0, sizeof *report);
    StFile f;
    if (st_read_file(path, &f, err, err_size)) return CAP_E_IO;
    Staged sg = {0};
    CapStatus st = stage_import(s->m, &f, prefix ? prefix : "", &sg, report, err, err_size);
    if (!st) st = commit(s, &sg, err, err_size);
    staged_free(&sg);
    st_free(&f);
    return st;
}

/* A non-negative integer at most max from the metadata. */
static CapStatus meta_int(const StFile *f, const char *key, int64_t max, int64_t *v, char *err,
                          size_t err_size) {
    const char *s = st_metadata(f, key);
    char *end = NULL;
    errno = 0;
    long long x = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || x < 0 || x > max)
        return cap_fail(err, err_size, CAP_E_FORMAT,
                        "%s: checkpoint metadata '%s' is missing or not a number in range",
                        f->path, key);
    *v = (int64_t)x;
    return CAP_OK;
}

static CapStatus read_meta(const CapModel *m, const StFile *f, CapTrainMeta *meta, char *err,
                           size_t err_size) {
    const char *fmt = st_metadata(f, "format");
    if (!fmt || strcmp(fmt, "capc-checkpoint") != 0)
        return cap_fail(err, err_size, CAP_E_FORMAT,
                        "%s: not a capc training checkpoint (metadata format is '%s'); to start "
                        "from weights only, use --weights", f->path, fmt ? fmt : "absent");
    const char *model = st_metadata(f, "model");
    const char *want = cap_model_artifact(m)->model_name;
    if (model && want && strcmp(model, want) != 0)
        return cap_fail(err, err_size, CAP_E_MISMATCH,
                        "%s: checkpoint of model '%s', but %s is '%s'", f->path, model,
                        cap_model_path(m), want);
    int64_t seed = 0;
    CapStatus st = meta_int(f, "step", INT64_MAX, &meta->step, err, err_size);
    if (!st) st = meta_int(f, "seed", UINT32_MAX, &seed, err, err_size);
    if (!st) st = meta_int(f, "data_position", INT64_MAX, &meta->data_position, err, err_size);
    if (!st) st = meta_int(f, "n_batches", INT64_MAX, &meta->n_batches, err, err_size);
    meta->seed = (uint32_t)seed;
    return st;
}

/* The `step` state (the optimizer's update count, f32[]) must say what the metadata says:
 * NaN, negative, fractional or different counts mean a damaged or hand-edited checkpoint,
 * and resuming would train into NaN (Adam's bias corrections divide by 1 - beta^step). */
static CapStatus check_step(const CapModel *m, const StFile *f, const Staged *sg,
                            int64_t meta_step, char *err, size_t err_size) {
    int i = cap_model_find_state(m, "step");
    if (i < 0 || !sg->host[i] || cap_model_artifact(m)->state[i].t.numel != 1) return CAP_OK;
    const CapTensorInfo *t = &cap_model_artifact(m)->state[i].t;
    double v = t->dtype == CAP_DT_I32 ? *(const int32_t *)sg->host[i] : *(const float *)sg->host[i];
    if (isfinite(v) && v >= 0 && v == floor(v) && v == (double)(float)meta_step) return CAP_OK;
    return cap_fail(err, err_size, CAP_E_FORMAT,
                    "%s: the 'step' tensor holds %g but the metadata says step %lld: the "
                    "checkpoint is damaged", f->path, v, (long long)meta_step);
}

CapStatus cap_load_checkpoint(CapSession *s, const char *path, CapTrainMeta *meta, char *err,
                              size_t err_size) {
    StFile f;
    if (st_read_file(path, &f, err, err_size)) return CAP_E_IO;
    Staged sg = {0};
    CapTrainMeta tmp = {0};
    CapStatus st = read_meta(s->m, &f, &tmp, err, err_size);
    if (!st) st = stage(s->m, &f, 1, &sg, err, err_size);
    /* the same checks as --weights: every tensor of the file is the model's */
    if (!st) st = check_extra(s->m, &f, &sg, err, err_size);
    if (!st) st = check_step(s->m, &f, &sg, tmp.step, err, err_size);
    if (!st) st = commit(s, &sg, err, err_size);
    if (!st && meta) *meta = tmp;
    staged_free(&sg);
    st_free(&f);
    return st;
}
