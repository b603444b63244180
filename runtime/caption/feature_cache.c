/* feature_cache.c — see feature_cache.h. */
#define _GNU_SOURCE
#include "feature_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cap_internal.h"

#define FEATURES "features"
#define CACHED_STEP "train_step_cached"

struct FeatureCache {
    CapSession *s;
    const CapEntry *features, *step;
    int n;                 /* features' outputs */
    int *step_input;       /* per feature: its input index in train_step_cached */
    int64_t *image_bytes;  /* per feature: bytes of one image's */
    int64_t bytes;         /* per image, all features */
    int64_t batch;
    void **batch_buf;      /* per feature: the batch's, [B, ...] */
    int32_t n_images, n_slots, used;
    int32_t *slot;         /* per image index: its slot, or -1 */
    char *mem;             /* n_slots * bytes, or NULL when in the file */
    int fd;                /* the spill file (unlinked), or -1 */
    uint64_t state_writes; /* the session's count when the cache was filled */
    FeatureCacheStats stats;
};

const char *feature_cache_entry(void) { return CACHED_STEP; }

int feature_cache_supported(const CapModel *m) {
    return cap_model_find_entry(m, FEATURES) >= 0 && cap_model_find_entry(m, CACHED_STEP) >= 0;
}

static int64_t physical_memory(void) {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (int64_t)pages * size : (int64_t)1 << 32;
}

/* Matches every output of `features` with the train_step_cached input of its name. */
static CapStatus match_entries(FeatureCache *fc, char *err, size_t err_size) {
    const CapModel *m = cap_session_model(fc->s);
    fc->n = fc->features->n_outputs;
    fc->step_input = calloc((size_t)fc->n + 1, sizeof *fc->step_input);
    fc->image_bytes = calloc((size_t)fc->n + 1, sizeof *fc->image_bytes);
    fc->batch_buf = calloc((size_t)fc->n + 1, sizeof *fc->batch_buf);
    if (!fc->step_input || !fc->image_bytes || !fc->batch_buf)
        return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    fc->batch = fc->features->inputs[0].dims[0];
    for (int i = 0; i < fc->n; i++) {
        const CapTensorInfo *t = &fc->features->outputs[i];
        fc->step_input[i] = -1;
        for (int k = 0; k < fc->step->n_inputs; k++)
            if (strcmp(fc->step->inputs[k].name, t->name) == 0) fc->step_input[i] = k;
        if (fc->step_input[i] < 0 || t->rank < 1 || t->dims[0] != fc->batch)
            return cap_fail(err, err_size, CAP_E_FORMAT, "%s: invalid artifact: feature '%s' of "
                            "entry '" FEATURES "' is no input of '" CACHED_STEP "' per image",
                            cap_model_path(m), t->name);
        fc->image_bytes[i] = cap_tensor_bytes(t) / fc->batch;
        fc->bytes += fc->image_bytes[i];
        fc->batch_buf[i] = malloc((size_t)cap_tensor_bytes(t));
        if (!fc->batch_buf[i]) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    }
    return CAP_OK;
}

/* Memory when the cache takes at most a quarter of the machine's, else the spill file. */
static CapStatus open_store(FeatureCache *fc, const char *spill_path, char *err, size_t err_size) {
    int64_t total = (int64_t)fc->n_slots * fc->bytes;
    if (total <= physical_memory() / 4) {
        fc->mem = malloc((size_t)total + 1);
        if (fc->mem) return CAP_OK;
    }
    fc->fd = open(spill_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fc->fd < 0)
        return cap_fail(err, err_size, CAP_E_IO, "cannot create the feature cache '%s': %s "
                        "(train with --no-feature-cache to do without)", spill_path,
                        strerror(errno));
    unlink(spill_path); /* the open file lives until the run ends, and no longer */
    fc->stats.in_file = 1;
    return CAP_OK;
}

CapStatus feature_cache_open(CapSession *s, int32_t n_images, int32_t n_train,
                             const char *spill_path, FeatureCache **out, char *err,
                             size_t err_size) {
    *out = NULL;
    const CapModel *m = cap_session_model(s);
    const CapArtifact *a = cap_model_artifact(m);
    FeatureCache *fc = calloc(1, sizeof *fc);
    if (!fc) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    fc->s = s;
    fc->fd = -1;
    fc->features = &a->entries[cap_model_find_entry(m, FEATURES)];
    fc->step = &a->entries[cap_model_find_entry(m, CACHED_STEP)];
    fc->n_images = n_images;
    fc->n_slots = n_train;
    fc->slot = malloc(sizeof *fc->slot * ((size_t)n_images + 1));
    CapStatus st = fc->slot ? match_entries(fc, err, err_size)
                            : cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    if (!st) st = open_store(fc, spill_path, err, err_size);
    if (st) {
        feature_cache_close(fc);
        return st;
    }
    for (int32_t i = 0; i < n_images; i++) fc->slot[i] = -1;
    fc->state_writes = s->state_writes;
    fc->stats.bytes = fc->bytes;
    *out = fc;
    return CAP_OK;
}

/* The features in slot `slot`: stored from the batch's row b, or copied into that row. */
static CapStatus move_image(FeatureCache *fc, int32_t slot, int64_t b, int store, char *err,
                            size_t err_size) {
    int64_t at = (int64_t)slot * fc->bytes;
    for (int i = 0; i < fc->n; i++) {
        char *row = (char *)fc->batch_buf[i] + b * fc->image_bytes[i];
        size_t n = (size_t)fc->image_bytes[i];
        if (fc->mem) {
            if (store) memcpy(fc->mem + at, row, n);
            else memcpy(row, fc->mem + at, n);
        } else {
            ssize_t done = store ? pwrite(fc->fd, row, n, at) : pread(fc->fd, row, n, at);
            if (done != (ssize_t)n)
                return cap_fail(err, err_size, CAP_E_IO, "feature cache: cannot %s %zu bytes "
                                "at %lld: %s", store ? "write" : "read", n, (long long)at,
                                done < 0 ? strerror(errno) : "short transfer");
        }
        at += fc->image_bytes[i];
    }
    return CAP_OK;
}

CapStatus feature_cache_batch(FeatureCache *fc, const float *images, const int32_t *image_index,
                              const void **inputs, char *err, size_t err_size) {
    if (fc->s->state_writes != fc->state_writes) { /* new weights: nothing cached is valid */
        for (int32_t i = 0; i < fc->n_images; i++) fc->slot[i] = -1;
        fc->used = 0;
        fc->state_writes = fc->s->state_writes;
    }
    int hit = 1;
    for (int64_t b = 0; b < fc->batch; b++) {
        int32_t im = image_index[b];
        if (im < 0 || im >= fc->n_images)
            return cap_fail(err, err_size, CAP_E_ARG, "feature cache: image index %d out of "
                            "range", (int)im);
        hit &= fc->slot[im] >= 0;
    }
    CapStatus st = CAP_OK;
    if (hit) {
        for (int64_t b = 0; !st && b < fc->batch; b++)
            st = move_image(fc, fc->slot[image_index[b]], b, 0, err, err_size);
        fc->stats.hits++;
    } else {
        const void *in[1] = {images};
        st = cap_session_run(fc->s, FEATURES, in, fc->batch_buf, err, err_size);
        for (int64_t b = 0; !st && b < fc->batch; b++) {
            int32_t im = image_index[b];
            if (fc->slot[im] >= 0 || fc->used >= fc->n_slots) continue;
            fc->slot[im] = fc->used++;
            st = move_image(fc, fc->slot[im], b, 1, err, err_size);
        }
        fc->stats.misses++;
    }
    for (int i = 0; !st && i < fc->n; i++) inputs[fc->step_input[i]] = fc->batch_buf[i];
    return st;
}

void feature_cache_stats(const FeatureCache *fc, FeatureCacheStats *out) { *out = fc->stats; }

void feature_cache_close(FeatureCache *fc) {
    if (!fc) return;
    for (int i = 0; fc->batch_buf && i < fc->n; i++) free(fc->batch_buf[i]);
    free(fc->batch_buf);
    free(fc->step_input);
    free(fc->image_bytes);
    free(fc->slot);
    free(fc->mem);
    if (fc->fd >= 0) close(fc->fd);
    free(fc);
}
