/* train_data.h — training a captioner cap.so on a dataset (data.h) instead of batch files:
 * the loader (data_loader.h) decodes the train split ahead in worker threads with the sizes
 * the artifact was compiled for (train_step's `image` [B,3,S,S] and `caption` [B,T]), and
 * cap_train runs the steps. The data position (epoch, index) and the vocabulary travel in the
 * checkpoint's metadata (`data_epoch`, `data_index`, `vocab`), so a resumed run continues
 * at exactly the next batch: bit for bit the uninterrupted run on the cpu backend.
 *
 * Ownership: nothing here keeps what it is given; the caller owns the dataset, vocabulary and
 * session. Errors come back as a CapStatus with a one-line message.
 */
#ifndef TRAIN_DATA_H
#define TRAIN_DATA_H

#include <stdint.h>
#include <stdio.h>

#include "cap.h"
#include "data.h"
#include "data_loader.h"
#include "feature_cache.h"
#include "vocab.h"

/* The data sizes an entry was compiled for: batch B, square image side S, caption length T
 * (from the `image` / `caption` inputs of train_step, or `image` of encode when caption_entry
 * is NULL), and the vocabulary size. */
typedef struct CapDataShape {
    int batch, image, max_len;
    int64_t vocab;
} CapDataShape;

CapStatus cap_data_shape(const CapModel *m, const char *entry, CapDataShape *out, char *err,
                         size_t err_size);

/* A vocabulary whose size differs from the compiled vocab is an error that says the -D to
 * recompile with. `what` names the vocabulary in the message ("vocab.txt"). */
CapStatus cap_check_vocab(const CapModel *m, const Vocab *v, const char *what, char *err,
                          size_t err_size);

/* The dataset position and vocabulary text stored in a checkpoint by cap_train_data.
 * *vocab_text (malloc'ed, may be NULL when absent) is the caller's. */
CapStatus cap_checkpoint_data(const char *path, DataPosition *pos, char **vocab_text,
                              char *err, size_t err_size);

typedef struct CapDataTrainOptions {
    const Dataset *ds;
    const Vocab *vocab;
    int64_t steps;         /* total, counted from step 0 (a resume stops where a fresh run does) */
    double max_seconds;    /* > 0: also stop after this many seconds of training (CapTrainOptions) */
    uint32_t seed;         /* dropout streams and the loader's shuffle */
    int workers;           /* loader threads (0: decode in the training thread) */
    DataPosition start;    /* where the first batch starts: {0,0}, or the checkpoint's */
    const char *out_path;  /* checkpoint at the end (and every save_every steps) */
    int64_t save_every;
    const char *log_path;
    int64_t print_every;
    FILE *progress;
    LoaderSkipFn on_skip;  /* each skipped image ("PATH: reason"), may be NULL */
    void *skip_ctx;
    int no_feature_cache;  /* run train_step even when the model has a feature cache */
    CapNonFinite on_nonfinite; /* CapTrainOptions.on_nonfinite */
    int64_t eval_every;    /* > 0: every so many steps, validation loss (eval_loss over the
                              val split's first batches) and BLEU-4 / CIDEr-D of greedy
                              captions of its first eval_images images, logged */
    int eval_images;       /* 0: 100 */
    /* Non-NULL: data parallel (docs/distributed.md). The batch of a step is the global batch
     * of comm->size times the compiled one, from the loader's one shuffled stream; this
     * process trains on its rank's consecutive share of it (train_grads + apply_grads, no
     * feature cache). Only rank 0 should have out_path, log_path, progress, eval_every. */
    const CapComm *comm;
} CapDataTrainOptions;

typedef struct CapDataTrainResult {
    LoaderStats loader;    /* images delivered and skipped by this invocation */
    DataPosition position; /* where the next batch would start */
    int32_t split_images;  /* images in the train split */
    double seconds;
    int feature_cache;     /* 1: the steps ran train_step_cached (feature_cache.h) */
    FeatureCacheStats cache;
} CapDataTrainResult;

/* Runs train_step on batches of the train split from the session's state and *meta (zeroed
 * for a fresh run, filled by cap_load_checkpoint for a resume) until o->steps. When the model
 * has a feature cache (feature_cache.h) and o->no_feature_cache is 0, the steps run
 * train_step_cached from each image's cached features instead: the same results, bit for
 * bit. The cache spills to o->out_path + ".features" when memory is not enough. */
CapStatus cap_train_data(CapSession *s, const CapDataTrainOptions *o, CapTrainMeta *meta,
                         CapDataTrainResult *res, char *err, size_t err_size);

#endif
