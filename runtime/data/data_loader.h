/* data_loader.h — batches for training: background threads decode and preprocess images and
 * tokenize captions ahead of the training step.
 *
 * The stream: the images of one split, epoch after epoch; epoch e visits them in the order
 * of data_shuffle(seed, e) (Fisher-Yates, Philox-keyed, see data_rng.h). A position is
 * (epoch, index into that epoch's order); a batch takes the next `batch` images that decode,
 * crossing into the next epoch when one ends (nothing is dropped, every epoch shows every
 * image once). Each visit uses caption number data_rand64(seed, DATA_RNG_TAG, image, epoch, 2)
 * mod n_captions of the image, encoded with vocab_encode (<start> words <end>, padded with 0,
 * truncated to max_len keeping <end> last). A missing or corrupt image is skipped (reported
 * to the skip callback and counted), and the next one in the stream takes its place; the
 * position returned after a batch is where the next batch starts, so
 * loader_open(..., start = that position) continues with exactly the same batches. A split
 * in which a whole epoch's worth of images in a row fails to decode is an error.
 *
 * Ownership: the loader borrows the dataset and the vocabulary (they must outlive it);
 * loader_close joins the threads and frees everything else.
 */
#ifndef DATA_LOADER_H
#define DATA_LOADER_H

#include <stdint.h>

#include "data.h"
#include "vocab.h"

typedef struct DataPosition {
    int64_t epoch;
    int64_t index; /* 0 <= index < images in the split */
} DataPosition;

typedef struct DataLoader DataLoader;

/* Called from loader_next's thread for each skipped image, with "PATH: reason". */
typedef void (*LoaderSkipFn)(void *ctx, const char *message);

typedef struct LoaderStats {
    int64_t delivered; /* images put into batches */
    int64_t skipped;   /* images that failed to decode */
} LoaderStats;

/* batch >= 1, image_size >= 1, max_len >= 2, n_workers >= 0 (0: decode inside loader_next). */
CapStatus loader_open(const Dataset *ds, DataSplit split, int batch, int image_size,
                      int max_len, const Vocab *vocab, uint32_t seed, int n_workers,
                      DataPosition start, DataLoader **out, char *err, size_t err_size);

/* Sets the skip callback (NULL: only counted). Call before the first loader_next. */
void loader_on_skip(DataLoader *l, LoaderSkipFn fn, void *ctx);

/* Fills images (batch x 3 x image_size x image_size f32, normalized) and captions (batch x
 * max_len i32). image_index (batch entries, indices into ds->images) and position_out (where
 * the next batch starts) may be NULL. */
CapStatus loader_next(DataLoader *l, float *images, int32_t *captions, int32_t *image_index,
                      DataPosition *position_out, char *err, size_t err_size);

void loader_stats(const DataLoader *l, LoaderStats *out);
/* Images in the loader's split. */
int32_t loader_split_size(const DataLoader *l);
void loader_close(DataLoader *l);

/* The caption number (0..n_captions-1) that epoch `epoch` uses for image `image`. */
int32_t loader_caption_choice(uint32_t seed, int64_t epoch, int32_t image, int32_t n_captions);

#endif
