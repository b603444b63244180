/* caption.h — captions from a captioner cap.so: `encode` once per batch of images, then
 * `decode_step` position by position, feeding its cache outputs (self_k, self_v, key_mask:
 * outputs named like inputs) back as the next step's inputs (docs/training.md, "Sampling").
 * The next token comes from runtime/caption/sampling.h: greedy, or temperature / top-k / top-p
 * sampling, or beam search.
 *
 * Batching: the compiled batch B is the number of rows of every encode / decode_step call.
 * Greedy and sampling caption up to B images per call (a last partial batch is padded by
 * repeating its last image; the padding rows' captions are dropped). Beam search captions one
 * image at a time with its beams in rows 0..N-1 (N <= B): the image's cross K/V row is copied
 * into every row, and between steps the cache rows are gathered by each beam's parent
 * (axis 1 of self_k / self_v, axis 0 of key_mask).
 *
 * Ownership: a CapCaptioner borrows the session (which must outlive it) and owns its buffers;
 * cap_captioner_free releases them.
 */
#ifndef CAP_CAPTION_H
#define CAP_CAPTION_H

#include <stdint.h>

#include "cap.h"
#include "sampling.h"

typedef struct CapCaptioner CapCaptioner;

/* Checks that the session's model has encode and decode_step with the expected inputs and
 * outputs (shapes consistent with each other) and allocates the buffers. */
CapStatus cap_captioner_new(CapSession *s, CapCaptioner **out, char *err, size_t err_size);
void cap_captioner_free(CapCaptioner *c);

int cap_captioner_batch(const CapCaptioner *c);      /* B */
int cap_captioner_image_size(const CapCaptioner *c); /* S: images are 3 x S x S f32 */
int cap_captioner_max_tokens(const CapCaptioner *c); /* T - 1: decode positions */
int cap_captioner_vocab(const CapCaptioner *c);      /* V */

typedef struct CapCaptionOptions {
    CapSampleOptions sample; /* greedy when sample.greedy or sample.temperature <= 0 */
    int beam;                /* >= 1: beam search with this many beams (<= B); 0: sample */
    double length_alpha;     /* beam: score / length^alpha */
    int max_tokens;          /* tokens generated at most, <end> included; <= 0: T - 1 */
    uint32_t seed;           /* sampling: stream of image k is streams[k] */
} CapCaptionOptions;

/* Captions n images (n >= 1; images: n x 3 x S x S, preprocessed). tokens receives
 * n rows of cap_captioner_max_tokens(c) ids (row k: image k's words, without <start>, <end>
 * and padding; the rest of the row unspecified), lens[k] their count. streams[k] (may be NULL: k) keys image k's sampling RNG, so a caption does not
 * depend on the batch it was in. */
CapStatus cap_caption_images(CapCaptioner *c, const float *images, int n,
                             const CapCaptionOptions *o, const uint32_t *streams,
                             int32_t *tokens, int *lens, char *err, size_t err_size);

/* ---- a dataset split: caption every image and score (caption_eval.c) --------------------- */

struct Dataset;
struct Vocab;

typedef struct CapEvalResult {
    int n;              /* images captioned */
    int64_t *image_ids; /* n dataset ids */
    int32_t *images;    /* n indices into the dataset's images */
    char **captions;    /* n captions as vocab_decode writes them */
    int skipped;        /* images that could not be read (reported to on_skip) */
    double bleu[4];     /* BLEU-1..4, PTB-tokenized candidates and references */
    double cider;       /* CIDEr-D */
} CapEvalResult;

/* Captions every image of `split` (int: a DataSplit) in file order, up to B per encode, image
 * k sampling with stream = its dataset index, and scores them against all the split's
 * captions with BLEU-1..4 and CIDEr-D (runtime/caption/metrics.h; both sides PTB-tokenized, as
 * `cap score` does). limit > 0 takes only the first limit images. */
CapStatus cap_eval_split(CapCaptioner *c, const struct Dataset *ds, int split,
                         const struct Vocab *v, const CapCaptionOptions *o, int limit,
                         void (*on_skip)(void *ctx, const char *message), void *skip_ctx,
                         CapEvalResult *res, char *err, size_t err_size);
void cap_eval_result_free(CapEvalResult *r);

#endif
