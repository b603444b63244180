/* batch.c — batch files: a safetensors file holding an entry's data inputs by name (`image`
 * F32 [B,3,H,W], `caption` I32 [B,T]; F64 / I64 converted), checked against the shapes the
 * entry was compiled for. Sizes are static in cap.so, so a mismatch is answered with what was
 * compiled and the -D that recompiles it for this data ("batch", "image", "max_len" from the
 * compiled config). The `rng` input is not data: it is (seed, step), set per run. Token ids
 * outside the compiled vocabulary are refused here, naming the file and the position (an id
 * past the embedding table would otherwise turn the loss into NaN).
 *
 * Ownership: a CapBatch owns host copies of its tensors; it borrows the model.
 */
#include "cap_internal.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "safetensors.h"

struct CapBatch {
    const CapModel *m;
    int entry;
    int n_inputs;
    void **data;   /* per entry input: host copy, NULL for rng */
    int rng_index; /* -1 if the entry has no rng input */
    int64_t batch_size;
};

/* The config variable behind dimension d of input `name` whose compiled size is `compiled`:
 * the conventional one if the config has it with that value, else the only config integer
 * with that value, else NULL. */
static const char *config_var_for(const CapModel *m, const char *name, int d, int64_t compiled) {
    const char *hint = NULL;
    if (d == 0) hint = "batch";
    else if (strcmp(name, "image") == 0 && d >= 2) hint = "image";
    else if (strcmp(name, "caption") == 0 && d == 1) hint = "max_len";
    int64_t v;
    if (hint && cap_model_config_int(m, hint, &v) == 0 && v == compiled) return hint;
    const char *found = NULL;
    int n_found = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, m->config) {
        if (cap_model_config_int(m, it->string, &v) == 0 && v == compiled) {
            found = it->string;
            n_found++;
        }
    }
    return n_found == 1 ? found : NULL;
}

static CapStatus shape_mismatch(const CapModel *m, const char *path, const StTensor *t,
                                const CapTensorInfo *info, char *err, size_t err_size) {
    char have[160], want[160], how[256] = "";
    cap_dims_str(t->rank, t->shape, have, sizeof have);
    cap_dims_str(info->rank, info->dims, want, sizeof want);
    const CapArtifact *a = cap_model_artifact(m);
    const char *flags = a->compile_flags && *a->compile_flags ? a->compile_flags : "no -D";
    if (t->rank == info->rank) {
        for (int d = 0; d < t->rank; d++) {
            if (t->shape[d] == info->dims[d]) continue;
            const char *var = config_var_for(m, info->name, d, info->dims[d]);
            if (var)
                snprintf(how, sizeof how, ": it was compiled with %s=%lld; recompile with "
                         "`capc MODEL.json -D %s=%lld -o cap.so` (compiled with: %s)",
                         var, (long long)info->dims[d], var, (long long)t->shape[d], flags);
            else
                snprintf(how, sizeof how, ": dimension %d was compiled as %lld; recompile "
                         "for %lld (compiled with: %s)", d, (long long)info->dims[d],
                         (long long)t->shape[d], flags);
            break;
        }
    }
    return cap_fail(err, err_size, CAP_E_MISMATCH,
                    "%s: '%s' has shape %s but %s was compiled for %s%s", path, info->name, have,
                    cap_model_path(m), want, how);
}

static CapStatus load_input(CapBatch *b, const StFile *f, int i, const CapTensorInfo *info,
                            char *err, size_t err_size) {
    const StTensor *t = st_find(f, info->name);
    char dims[160];
    if (!t)
        return cap_fail(err, err_size, CAP_E_MISMATCH,
                        "%s: missing tensor '%s' (the entry needs %s %s)", f->path, info->name,
                        info->dtype == CAP_DT_I32 ? "I32" : "F32",
                        cap_dims_str(info->rank, info->dims, dims, sizeof dims));
    int same = t->rank == info->rank;
    for (int d = 0; same && d < t->rank; d++) same = t->shape[d] == info->dims[d];
    if (!same) return shape_mismatch(b->m, f->path, t, info, err, err_size);
    b->data[i] = malloc(cap_tensor_bytes(info) + 1);
    if (!b->data[i]) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    return cap_st_convert(f, t, info, b->data[i], err, err_size);
}

CapStatus cap_batch_open(const CapModel *m, const char *entry, const char *path,
                         CapBatch **out, char *err, size_t err_size) {
    *out = NULL;
    int ei = cap_model_find_entry(m, entry);
    if (ei < 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED, "%s has no entry point '%s'",
                        cap_model_path(m), entry);
    const CapEntry *e = &cap_model_artifact(m)->entries[ei];
    StFile f;
    if (st_read_file(path, &f, err, err_size)) return CAP_E_IO;
    CapBatch *b = calloc(1, sizeof *b);
    CapStatus st = b ? CAP_OK : cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    if (!st) {
        *b = (CapBatch){.m = m, .entry = ei, .n_inputs = e->n_inputs, .rng_index = -1};
        b->data = calloc((size_t)e->n_inputs + 1, sizeof *b->data);
        if (!b->data) st = cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    }
    for (int i = 0; !st && i < e->n_inputs; i++) {
        const CapTensorInfo *info = &e->inputs[i];
        if (strcmp(info->name, "rng") == 0) {
            b->rng_index = i;
            continue;
        }
        st = load_input(b, &f, i, info, err, err_size);
        if (!st && b->batch_size == 0 && info->rank > 0) b->batch_size = info->dims[0];
    }
    st_free(&f);
    if (!st) st = cap_check_ids(m, e, (const void *const *)b->data, path, err, err_size);
    if (st) {
        cap_batch_free(b);
        return st;
    }
    *out = b;
    return CAP_OK;
}

void cap_batch_inputs(const CapBatch *b, const int32_t rng[2], const void **in) {
    for (int i = 0; i < b->n_inputs; i++) in[i] = i == b->rng_index ? (const void *)rng : b->data[i];
}

char *cap_index_str(const CapTensorInfo *t, int64_t flat, char *buf, size_t size) {
    int64_t idx[CAP_MAX_RANK];
    for (int d = t->rank - 1; d >= 0; d--) {
        idx[d] = t->dims[d] ? flat % t->dims[d] : 0;
        flat = t->dims[d] ? flat / t->dims[d] : 0;
    }
    return cap_dims_str(t->rank, idx, buf, size);
}

CapStatus cap_check_ids(const CapModel *m, const CapEntry *e, const void *const *in,
                        const char *where, char *err, size_t err_size) {
    int64_t vocab = 0;
    if (cap_model_config_int(m, "vocab", &vocab) != 0 || vocab <= 0) return CAP_OK;
    for (int i = 0; i < e->n_inputs; i++) {
        const CapTensorInfo *t = &e->inputs[i];
        if (t->dtype != CAP_DT_I32 || strcmp(t->name, "rng") == 0 || !in[i]) continue;
        const int32_t *ids = in[i];
        for (int64_t k = 0; k < t->numel; k++)
            if (ids[k] < 0 || ids[k] >= vocab) {
                char at[160];
                return cap_fail(err, err_size, CAP_E_FORMAT,
                                "%s: %s%s = %d is outside the vocabulary [0, %lld) of %s", where,
                                t->name, cap_index_str(t, k, at, sizeof at), ids[k],
                                (long long)vocab, cap_model_path(m));
            }
    }
    return CAP_OK;
}

void cap_batch_free(CapBatch *b) {
    if (!b) return;
    for (int i = 0; b->data && i < b->n_inputs; i++) free(b->data[i]);
    free(b->data);
    free(b);
}

int64_t cap_batch_size(const CapBatch *b) { return b->batch_size; }

CapStatus cap_session_run_batch(CapSession *s, const char *entry, const CapBatch *b,
                                uint32_t seed, uint32_t step, void *const *outputs, char *err,
                                size_t err_size) {
    const CapArtifact *a = cap_model_artifact(s->m);
    int ei = cap_model_find_entry(s->m, entry);
    if (ei < 0 || s->m != b->m || ei != b->entry)
        return cap_fail(err, err_size, CAP_E_ARG, "batch was opened for entry '%s', not '%s'",
                        b->m == s->m ? a->entries[b->entry].name : "(another model)", entry);
    int32_t rng[2] = {(int32_t)seed, (int32_t)step};
    const void **in = calloc((size_t)b->n_inputs + 1, sizeof *in);
    if (!in) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    for (int i = 0; i < b->n_inputs; i++) in[i] = i == b->rng_index ? rng : b->data[i];
    CapStatus st = cap_session_run(s, entry, in, outputs, err, err_size);
    free(in);
    return st;
}

CapStatus cap_session_loss(CapSession *s, const char *entry, const CapBatch *b, uint32_t seed,
                           uint32_t step, double *loss, char *err, size_t err_size) {
    int ei = cap_model_find_entry(s->m, entry);
    if (ei < 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED, "%s has no entry point '%s'",
                        cap_model_path(s->m), entry);
    const CapEntry *e = &cap_model_artifact(s->m)->entries[ei];
    void **outs = calloc((size_t)e->n_outputs + 1, sizeof *outs);
    CapStatus st = outs ? CAP_OK : cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    int li = -1;
    for (int i = 0; !st && i < e->n_outputs; i++) {
        if (strcmp(e->outputs[i].name, "loss") == 0) li = i;
        if (e->output_state && e->output_state[i] >= 0) continue;
        outs[i] = malloc(cap_tensor_bytes(&e->outputs[i]) + 1);
        if (!outs[i]) st = cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    }
    if (!st && (li < 0 || e->outputs[li].numel != 1 || e->outputs[li].dtype != CAP_DT_F32))
        st = cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                      "entry '%s' has no scalar f32 output named 'loss'", entry);
    if (!st) st = cap_session_run_batch(s, entry, b, seed, step, outs, err, err_size);
    if (!st) *loss = *(float *)outs[li];
    for (int i = 0; outs && i < e->n_outputs; i++) free(outs[i]);
    free(outs);
    return st;
}
