/* feature_cache.h — the features of each training image, computed once per run (docs/training.md,
 * "Feature cache").
 *
 * capc gives a model whose train_step starts with a frozen, deterministic prefix two more
 * entry points (passes/feature_cache.c): `features` (images -> the prefix's results) and
 * `train_step_cached` (train_step from those results). The cache keeps each image's features,
 * in memory, or in a file next to the checkpoint when they would take more than a quarter of
 * the machine's memory, and hands train_step_cached its inputs: from the cache when every
 * image of a batch is in it, else computed by `features` for the whole batch (and kept).
 *
 * The features are valid for the state they were computed from: any write of state from
 * outside (cap_session_write_state, loading, init) empties the cache, so it never serves
 * stale features; the images are preprocessed the same way all run long (the model's size).
 * It lives as long as one training run.
 *
 * Ownership: the cache keeps the session pointer (the caller keeps the session alive) and
 * owns its memory and file; feature_cache_close frees them.
 */
#ifndef FEATURE_CACHE_H
#define FEATURE_CACHE_H

#include <stdint.h>

#include "cap.h"

typedef struct FeatureCache FeatureCache;

/* Whether m has the two entry points. */
int feature_cache_supported(const CapModel *m);

/* A cache for session s, whose model must have the two entry points (feature_cache_supported).
 * n_images: the size of the image index space (the dataset's image count); n_train: how many
 * distinct images the run draws from; spill_path: the file to use when memory is not enough
 * (it is created, and removed again at once: it never outlives the run). */
CapStatus feature_cache_open(CapSession *s, int32_t n_images, int32_t n_train,
                             const char *spill_path, FeatureCache **out, char *err,
                             size_t err_size);

/* The entry point a cached run's steps call: "train_step_cached". feature_cache_batch sets
 * its feature inputs; the others (caption, rng) are the caller's to set. */
const char *feature_cache_entry(void);

/* For a batch of images (the loader's, f32 [B,3,S,S]) and their image indices: points
 * inputs[i] of train_step_cached at the batch's features for every feature input i. */
CapStatus feature_cache_batch(FeatureCache *fc, const float *images, const int32_t *image_index,
                              const void **inputs, char *err, size_t err_size);

typedef struct FeatureCacheStats {
    int64_t hits, misses; /* batches served from the cache / computed */
    int64_t bytes;        /* per image */
    int in_file;          /* 1: spilled to a file */
} FeatureCacheStats;
void feature_cache_stats(const FeatureCache *fc, FeatureCacheStats *out);
void feature_cache_close(FeatureCache *fc);

#endif
