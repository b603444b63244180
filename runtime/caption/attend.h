/* attend.h — where a captioner looked: the `attend` entry of a captioner cap.so
 * (docs/training.md, "Attention maps") run on images and captions, giving for each word the
 * last decoder layer's cross-attention over the G x G image grid, averaged over the heads.
 *
 * A caption's word t (0-based) was chosen by the decoder step that read <start> and words
 * 0..t-1, so its map is row t of attend's probabilities for the input row <start>, word 0,
 * ..., <pad>...; attend's logits row t are that step's logits, so for a greedy caption their
 * argmax is word t again (counted in *disagree: 0 unless float32 near-ties differ between
 * attend and decode_step's kernels).
 *
 * Batching: attend runs B images (the compiled batch) per call; a last partial batch repeats
 * its last image and caption. Ownership: a CapAttender borrows the session (which must outlive
 * it) and owns its buffers.
 */
#ifndef CAP_ATTEND_H
#define CAP_ATTEND_H

#include <stdint.h>

#include "cap.h"

typedef struct CapAttender CapAttender;

/* Checks that the session's model has an `attend` entry with inputs image f32[B,3,S,S] and
 * tokens i32[B,T-1], outputs logits f32[B,T-1,V] and cross_attn f32[B,h,T-1,G*G]. A cap.so
 * without one (compiled before the entry existed) is CAP_E_UNSUPPORTED with how to
 * recompile. */
CapStatus cap_attender_new(CapSession *s, CapAttender **out, char *err, size_t err_size);
void cap_attender_free(CapAttender *a);

int cap_attender_image_size(const CapAttender *a); /* S */
int cap_attender_grid(const CapAttender *a);       /* G */
int cap_attender_max_words(const CapAttender *a);  /* T - 1 */

/* The maps of n captions (n >= 1). images: n x 3 x S x S, preprocessed; tokens: row k at
 * tokens + k * stride holds caption k's lens[k] word ids (no <start> or <end>), lens[k] <=
 * T - 1. maps: room for n x (T-1) x G*G floats; row t of image k (at maps + (k * (T-1) + t) *
 * G*G) receives word t's map for t < lens[k] (the rest is left as it was); each sums to 1.
 * *disagree (may be NULL) receives the number of words that are not the argmax of attend's
 * logits at their step. */
CapStatus cap_attend(CapAttender *a, const float *images, int n, const int32_t *tokens,
                     int stride, const int *lens, float *maps, int *disagree, char *err,
                     size_t err_size);

#endif
